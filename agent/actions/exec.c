/* exec: runs a script named in agent.yaml, never a shell and never anything
 * the action itself names: the configured path with the configured
 * arguments, the finding (JSON) on stdin, stdout and stderr captured
 * together up to max_output, a clean environment, its own process group so
 * that a timeout (SIGTERM, then SIGKILL) reaches its children too. */
#include "actions.h"

#include "err.h"
#include "log.h"
#include "timeutil.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define ST_EXEC_MAX_SCRIPTS 64
#define ST_EXEC_MAX_NAME 64
#define ST_EXEC_MAX_ARGS 32
#define ST_EXEC_MAX_STDIN (1u << 20) /* finding JSON handed to a script */
#define ST_EXEC_MAX_TIMEOUT_MS (60 * 60 * 1000)
#define ST_EXEC_KILL_GRACE_MS 2000 /* SIGTERM to SIGKILL */
#define ST_EXEC_LINGER_MS 500      /* output still read after the script exits */
#define ST_EXEC_TICK_MS 20         /* how often the script's exit is checked */
#define ST_EXEC_CHUNK 16384
#define ST_EXEC_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

typedef struct script_cfg {
    char *path;
    st_cfg_strlist args;
    int64_t timeout_ms;
    uint64_t max_output;
} script_cfg;

typedef struct script {
    char name[ST_EXEC_MAX_NAME + 1];
    script_cfg cfg;
} script;

typedef struct exec_cfg {
    const st_cfg_node *scripts;
} exec_cfg;

typedef struct exec_ctx {
    exec_cfg cfg;
    script *v;
    size_t n;
} exec_ctx;

static const st_cfg_map exec_rows[] = {
    {ST_CFG_NODE, "scripts", NULL, offsetof(exec_cfg, scripts),
     "scripts the collector may ask for by name: name -> {path, args, timeout, max_output}", NULL,
     0, 0},
    {0},
};

static const st_cfg_map script_rows[] = {
    {ST_CFG_STR, "path", NULL, offsetof(script_cfg, path), "absolute path of the executable", NULL,
     0, 0},
    {ST_CFG_STRLIST, "args", NULL, offsetof(script_cfg, args), "its arguments, as given", NULL, 0,
     0},
    {ST_CFG_DURATION, "timeout", "30s", offsetof(script_cfg, timeout_ms),
     "then SIGTERM, and SIGKILL 2s later", NULL, 0, 0},
    {ST_CFG_SIZE, "max_output", "64KiB", offsetof(script_cfg, max_output),
     "stdout and stderr kept; the rest is read and dropped", NULL, 0, 0},
    {0},
};

/* A run in progress. */
typedef struct run {
    const script *s;
    pid_t pid;
    int in;  /* the script's stdin, ours to write; -1 once closed */
    int out; /* its stdout and stderr, ours to read; -1 at end of file */
    const char *data;
    size_t len;
    size_t off;     /* of data written */
    uint64_t bytes; /* of output read, kept or not */
    int sig;        /* the last signal we sent, 0: none */
    int64_t kill_at;
    int wstatus;
    bool exited;
    int64_t exited_at;
} run;

/* ---- configuration ---- */

static bool good_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > ST_EXEC_MAX_NAME) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.')) {
            return false;
        }
    }
    return true;
}

static int check_script(const st_cfg_doc *doc, const st_cfg_node *node, const script *s,
                        st_cfg_error *err)
{
    const script_cfg *c = &s->cfg;
    struct stat st;
    if (c->path == NULL || c->path[0] != '/') {
        return st_cfg_fail(err, doc, st_cfg_get(node, "path") ? st_cfg_get(node, "path") : node,
                           "path", "script %s needs an absolute path", s->name);
    }
    if (stat(c->path, &st) != 0 || !S_ISREG(st.st_mode) || access(c->path, X_OK) != 0) {
        return st_cfg_fail(err, doc, st_cfg_get(node, "path"), "path",
                           "%s is not an executable file", c->path);
    }
    if (c->args.n > ST_EXEC_MAX_ARGS) {
        return st_cfg_fail(err, doc, st_cfg_get(node, "args"), "args", "more than %d arguments",
                           ST_EXEC_MAX_ARGS);
    }
    if (c->timeout_ms < 10 || c->timeout_ms > ST_EXEC_MAX_TIMEOUT_MS) {
        return st_cfg_fail(err, doc, st_cfg_get(node, "timeout"), "timeout",
                           "must be between 10ms and 1h");
    }
    if (c->max_output < 1 || c->max_output > ST_ACTION_MAX_OUTPUT) {
        return st_cfg_fail(err, doc, st_cfg_get(node, "max_output"), "max_output",
                           "must be between 1 byte and 1MiB");
    }
    return ST_OK;
}

static int add_script(exec_ctx *c, const st_cfg_doc *doc, const char *name, const st_cfg_node *node,
                      st_cfg_error *err)
{
    script *s = &c->v[c->n];
    int rv;
    if (!good_name(name)) {
        return st_cfg_fail(err, doc, node, name,
                           "script names are 1 to %d letters, digits, '-', '_' or '.'",
                           ST_EXEC_MAX_NAME);
    }
    if (st_cfg_node_type(node) != ST_CFG_NODE_MAP) {
        return st_cfg_fail(err, doc, node, name, "a mapping with at least path");
    }
    snprintf(s->name, sizeof(s->name), "%s", name);
    c->n++; /* counted before binding, so that fini releases what binding did */
    if ((rv = st_cfg_bind(doc, node, script_rows, &s->cfg, err)) != ST_OK) {
        return rv;
    }
    return check_script(doc, node, s, err);
}

static void exec_fini(void *ctx)
{
    exec_ctx *c = ctx;
    if (c == NULL) {
        return;
    }
    for (size_t i = 0; i < c->n; i++) {
        st_cfg_release(script_rows, &c->v[i].cfg);
    }
    free(c->v);
    st_cfg_release(exec_rows, &c->cfg);
    free(c);
}

static int parse_scripts(exec_ctx *c, const st_cfg_doc *doc, const st_cfg_node *cfg,
                         st_cfg_error *err)
{
    const st_cfg_node *m = c->cfg.scripts;
    size_t n = st_cfg_map_len(m);
    int rv;
    if (m == NULL || st_cfg_node_type(m) != ST_CFG_NODE_MAP || n == 0) {
        return st_cfg_fail(err, doc, m != NULL ? m : cfg, "scripts",
                           "a mapping of script names to {path, args, timeout, max_output}");
    }
    if (n > ST_EXEC_MAX_SCRIPTS) {
        return st_cfg_fail(err, doc, m, "scripts", "more than %d scripts", ST_EXEC_MAX_SCRIPTS);
    }
    if ((c->v = calloc(n, sizeof(*c->v))) == NULL) {
        return ST_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        if ((rv = add_script(c, doc, st_cfg_map_key(m, i), st_cfg_map_value(m, i), err)) != ST_OK) {
            return rv;
        }
    }
    return ST_OK;
}

static int exec_init(const st_cfg_doc *doc, const st_cfg_node *cfg, void **ctx, st_cfg_error *err)
{
    exec_ctx *c = calloc(1, sizeof(*c));
    int rv;
    if (c == NULL) {
        return ST_ENOMEM;
    }
    if ((rv = st_cfg_bind(doc, st_cfg_node_type(cfg) == ST_CFG_NODE_MAP ? cfg : NULL, exec_rows,
                          &c->cfg, err)) != ST_OK ||
        (rv = parse_scripts(c, doc, cfg, err)) != ST_OK) {
        exec_fini(c);
        return rv;
    }
    *ctx = c;
    return ST_OK;
}

/* ---- running a script ---- */

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

static int spawn_script(const script *s, const Strata__V1__Action *a, int in, int out, pid_t *pid)
{
    char *argv[ST_EXEC_MAX_ARGS + 2];
    char id[ST_ACTION_MAX_ID + 32];
    char finding[ST_ACTION_MAX_TEXT + 32];
    char name[ST_EXEC_MAX_NAME + 32];
    char *envp[] = {ST_EXEC_PATH, id, finding, name, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, dfl;
    int r;
    argv[0] = s->cfg.path;
    for (size_t i = 0; i < s->cfg.args.n; i++) {
        argv[i + 1] = s->cfg.args.v[i];
    }
    argv[s->cfg.args.n + 1] = NULL;
    snprintf(id, sizeof(id), "STRATA_ACTION_ID=%s", a->id);
    snprintf(finding, sizeof(finding), "STRATA_FINDING_ID=%.1024s", a->finding_id);
    snprintf(name, sizeof(name), "STRATA_SCRIPT=%s", s->name);
    sigemptyset(&none);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGPIPE); /* the agent ignores these; the script should not */
    sigaddset(&dfl, SIGHUP);
    if (posix_spawn_file_actions_init(&fa) != 0) {
        return ENOMEM;
    }
    if ((r = posix_spawnattr_init(&attr)) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        return r;
    }
    /* Only stdin, stdout and stderr: no descriptor of the agent (its
     * collector connection, spool, listeners) reaches the script. */
    if ((r = posix_spawn_file_actions_adddup2(&fa, in, 0)) == 0 &&
        (r = posix_spawn_file_actions_adddup2(&fa, out, 1)) == 0 &&
        (r = posix_spawn_file_actions_adddup2(&fa, out, 2)) == 0 &&
        (r = posix_spawn_file_actions_addclosefrom_np(&fa, 3)) == 0 &&
        (r = posix_spawnattr_setsigmask(&attr, &none)) == 0 &&
        (r = posix_spawnattr_setsigdefault(&attr, &dfl)) == 0 &&
        (r = posix_spawnattr_setpgroup(&attr, 0)) == 0 &&
        (r = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                                 POSIX_SPAWN_SETPGROUP)) == 0) {
        r = posix_spawn(pid, s->cfg.path, &fa, &attr, argv, envp);
    }
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    return r;
}

/* Feeds stdin as far as the pipe takes it; closes it when all is written
 * or the script stopped reading. */
static void feed(run *ru)
{
    while (ru->in >= 0 && ru->off < ru->len) {
        ssize_t n = write(ru->in, ru->data + ru->off, ru->len - ru->off);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno == EAGAIN) {
            return;
        }
        if (n < 0) { /* EPIPE: it exited or closed stdin; that is its business */
            break;
        }
        ru->off += (size_t)n;
    }
    close_fd(&ru->in);
}

/* Reads what is there (at most 64 chunks, so that a script that writes
 * without pause cannot hold us past its deadline): kept up to max_output,
 * the rest dropped. */
static void drain(run *ru, st_buf *keep)
{
    char chunk[ST_EXEC_CHUNK];
    for (int i = 0; i < 64; i++) {
        ssize_t n = read(ru->out, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno == EAGAIN) {
            return;
        }
        if (n <= 0) {
            close_fd(&ru->out);
            return;
        }
        if (ru->bytes < ru->s->cfg.max_output) {
            size_t take = (size_t)ST_MIN((uint64_t)n, ru->s->cfg.max_output - ru->bytes);
            st_buf_append(keep, chunk, take);
        }
        ru->bytes += (uint64_t)n;
    }
}

/* Sends SIGTERM at the deadline (or when the agent stops), SIGKILL a grace
 * period later; to the whole process group. */
static void enforce(run *ru, int64_t deadline, const atomic_int *stop, int64_t now)
{
    if (ru->exited) {
        return;
    }
    if (ru->sig == 0 && (now >= deadline || atomic_load(stop))) {
        ru->sig = SIGTERM;
        ru->kill_at = now + ST_EXEC_KILL_GRACE_MS;
        kill(-ru->pid, SIGTERM);
    } else if (ru->sig == SIGTERM && now >= ru->kill_at) {
        ru->sig = SIGKILL;
        kill(-ru->pid, SIGKILL);
    }
}

/* One turn of the loop: exit check, signals, then poll for up to a tick. */
static void step(run *ru, int64_t deadline, const atomic_int *stop, st_buf *keep)
{
    struct pollfd p[2] = {{.fd = ru->out, .events = POLLIN}, {.fd = ru->in, .events = POLLOUT}};
    int64_t now = st_time_mono_ms();
    if (!ru->exited && waitpid(ru->pid, &ru->wstatus, WNOHANG) == ru->pid) {
        ru->exited = true;
        ru->exited_at = now;
    }
    enforce(ru, deadline, stop, now);
    if (poll(p, 2, ST_EXEC_TICK_MS) <= 0) {
        return;
    }
    if (ru->out >= 0 && p[0].revents != 0) {
        drain(ru, keep);
    }
    if (ru->in >= 0 && p[1].revents != 0) {
        feed(ru);
    }
}

static void outcome(const run *ru, const atomic_int *stop, st_action_out *o)
{
    int ws = ru->wstatus;
    const char *name = ru->s->name;
    const char *sig = ru->sig == SIGKILL ? "SIGKILL" : "SIGTERM";
    o->exit_status = WIFEXITED(ws) ? WEXITSTATUS(ws) : WIFSIGNALED(ws) ? 128 + WTERMSIG(ws) : -1;
    if (ru->sig != 0 && atomic_load(stop)) {
        st_action_fail(o, STRATA__V1__ACTION_STATUS__ACTION_FAILED,
                       "the agent stopped while script %s ran; stopped it with %s", name, sig);
    } else if (ru->sig != 0) {
        st_action_fail(o, STRATA__V1__ACTION_STATUS__ACTION_TIMEOUT,
                       "script %s timed out after %lld ms; stopped it with %s", name,
                       (long long)ru->s->cfg.timeout_ms, sig);
    } else if (WIFEXITED(ws) && WEXITSTATUS(ws) == 0) {
        o->status = STRATA__V1__ACTION_STATUS__ACTION_OK;
    } else if (WIFEXITED(ws)) {
        st_action_fail(o, STRATA__V1__ACTION_STATUS__ACTION_FAILED,
                       "script %s exited with status %d", name, WEXITSTATUS(ws));
    } else {
        st_action_fail(o, STRATA__V1__ACTION_STATUS__ACTION_FAILED,
                       "script %s was killed by signal %d", name, o->exit_status - 128);
    }
    if (ru->bytes > ru->s->cfg.max_output) {
        ST_INFO("actions", "script %s wrote %llu bytes; kept the first %llu", name,
                (unsigned long long)ru->bytes, (unsigned long long)ru->s->cfg.max_output);
    }
}

static void run_script(const script *s, const Strata__V1__Action *a, const atomic_int *stop,
                       st_action_out *o)
{
    int in[2] = {-1, -1};
    int out[2] = {-1, -1};
    run ru = {.s = s, .pid = -1, .in = -1, .out = -1, .data = a->finding_json};
    int64_t deadline;
    int r;
    ru.len = strlen(a->finding_json);
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) {
        st_action_fail(o, STRATA__V1__ACTION_STATUS__ACTION_FAILED, "pipe: %s", strerror(errno));
        goto out;
    }
    r = spawn_script(s, a, in[0], out[1], &ru.pid);
    close_fd(&in[0]); /* the script's ends: its exit then ends our reads */
    close_fd(&out[1]);
    if (r != 0) {
        st_action_fail(o, STRATA__V1__ACTION_STATUS__ACTION_FAILED, "cannot run %s: %s",
                       s->cfg.path, strerror(r));
        goto out;
    }
    ru.in = in[1];
    ru.out = out[0];
    in[1] = out[0] = -1;
    fcntl(ru.in, F_SETFL, O_NONBLOCK);
    fcntl(ru.out, F_SETFL, O_NONBLOCK);
    deadline = st_time_mono_ms() + s->cfg.timeout_ms;
    feed(&ru);
    while (!ru.exited || (ru.out >= 0 && st_time_mono_ms() - ru.exited_at < ST_EXEC_LINGER_MS)) {
        step(&ru, deadline, stop, &o->output);
    }
    outcome(&ru, stop, o);
out:
    close_fd(&ru.in);
    close_fd(&ru.out);
    for (int i = 0; i < 2; i++) {
        close_fd(&in[i]);
        close_fd(&out[i]);
    }
}

static void exec_run(void *ctx, const Strata__V1__Action *a, const atomic_int *stop,
                     st_action_out *o)
{
    static const char *const required[] = {"script", NULL};
    const exec_ctx *c = ctx;
    const char *name;
    if (!st_action_check_params(a, required, NULL, true, o)) {
        return;
    }
    name = st_action_param(a, "script");
    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->v[i].name, name) == 0) {
            if (strlen(a->finding_json) > ST_EXEC_MAX_STDIN) {
                st_action_fail(o, STRATA__V1__ACTION_STATUS__ACTION_REFUSED,
                               "the finding is over %u bytes", ST_EXEC_MAX_STDIN);
                return;
            }
            run_script(&c->v[i], a, stop, o);
            return;
        }
    }
    st_action_fail(o, STRATA__V1__ACTION_STATUS__ACTION_REFUSED,
                   "script '%.64s' is not configured on this agent", name);
}

const st_action_def st_action_exec = {"exec", exec_init, exec_run, exec_fini};
