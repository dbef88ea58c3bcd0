/* varnish: cache statistics from `varnishstat -j`, run without a shell
 * (posix_spawn) under a deadline and an output cap, and read with jansson.
 * Both JSON shapes are understood: counters at the top level (Varnish up
 * to 6.4) and under "counters" (6.5 and later). */
#include "samplers.h"

#include "buf.h"
#include "cache_parse.h"
#include "err.h"
#include "log.h"
#include "timeutil.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define ST_VARNISH_MAX_STDERR 512 /* the head of stderr, kept for the log */
#define ST_VARNISH_MAX_PATH 4096  /* varnishstat path, instance name or directory */
#define ST_VARNISH_MAX_TIMEOUT_MS 60000
#define ST_VARNISH_CHUNK 16384 /* bytes read from a pipe at a time */
#define ST_VARNISH_MAX_ARGV 24

extern char **environ;

typedef struct varnish_cfg {
    char *varnishstat;
    char *instance;
    int64_t timeout_ms;
} varnish_cfg;

typedef struct varnish_ctx {
    varnish_cfg cfg;
    char attach[32]; /* -t: how long varnishstat itself tries to attach */
    const char *argv[ST_VARNISH_MAX_ARGV];
    st_buf out; /* stdout, capped at ST_VARNISH_MAX_OUTPUT */
    char err[ST_VARNISH_MAX_STDERR];
    size_t errlen;
    char chunk[ST_VARNISH_CHUNK];
} varnish_ctx;

static const st_cfg_map varnish_rows[] = {
    {ST_CFG_STR, "varnishstat", "/usr/bin/varnishstat", offsetof(varnish_cfg, varnishstat),
     "absolute path of varnishstat", NULL, 0, 0},
    {ST_CFG_STR, "instance", NULL, offsetof(varnish_cfg, instance),
     "varnishd instance name or working directory (varnishstat -n)", NULL, 0, 0},
    {ST_CFG_DURATION, "timeout", "2s", offsetof(varnish_cfg, timeout_ms),
     "varnishstat is killed after this", NULL, 0, 0},
    {ST_CFG_IGNORE, "interval", NULL, 0, "run every (default: the agent's interval)", NULL, 0, 0},
    {0},
};

/* ---- JSON ---- */

static const st_label hit_labels[] = {{"cache", "varnish"}, {"result", "hit"}};
static const st_label miss_labels[] = {{"cache", "varnish"}, {"result", "miss"}};
static const st_label pass_labels[] = {{"cache", "varnish"}, {"result", "pass"}};
static const st_label hitmiss_labels[] = {{"cache", "varnish"}, {"result", "hitmiss"}};
static const st_label cache_labels[] = {{"cache", "varnish"}};

typedef struct counter_field {
    const char *key;
    st_series_desc desc;
} counter_field;

static const counter_field fields[] = {
    {"MAIN.cache_hit", {"cache.requests", hit_labels, 2, ST_LAYER_INFRA, "", 0}},
    {"MAIN.cache_miss", {"cache.requests", miss_labels, 2, ST_LAYER_INFRA, "", 0}},
    {"MAIN.cache_hitpass", {"cache.requests", pass_labels, 2, ST_LAYER_INFRA, "", 0}},
    {"MAIN.cache_hitmiss", {"cache.requests", hitmiss_labels, 2, ST_LAYER_INFRA, "", 0}},
    {"MAIN.n_lru_nuked", {"cache.evictions", cache_labels, 1, ST_LAYER_INFRA, "", 0}},
};

#define NFIELDS ST_ARRAY_LEN(fields)

static const st_series_desc memory_desc = {"cache.memory.used", cache_labels, 1,
                                           ST_LAYER_INFRA,      "B",          0};
static const st_series_desc malformed_desc = {"varnish.malformed", NULL, 0, ST_LAYER_INFRA, "", 0};

/* Storage bytes of every malloc (SMA) and file (SMF) stevedore, Transient
 * included: all of it is memory or page cache that varnishd holds. */
static const char *const storage_prefixes[] = {"SMA.", "SMF."};
static const char storage_suffix[] = ".g_bytes";

typedef struct var_stats {
    double v[NFIELDS];
    bool found[NFIELDS];
    double storage;
    bool have_storage;
    uint64_t malformed;
} var_stats;

static bool is_storage_key(const char *key)
{
    size_t n = strlen(key);
    size_t sl = sizeof(storage_suffix) - 1;
    for (size_t i = 0; i < ST_ARRAY_LEN(storage_prefixes); i++) {
        size_t pl = strlen(storage_prefixes[i]);
        /* A stevedore name between prefix and suffix, at least one byte. */
        if (n > pl + sl && memcmp(key, storage_prefixes[i], pl) == 0 &&
            memcmp(key + n - sl, storage_suffix, sl) == 0) {
            return true;
        }
    }
    return false;
}

/* The "value" of one counter object; false when it is not a finite
 * number >= 0. */
static bool counter_value(const json_t *counter, double *out)
{
    const json_t *v = json_is_object(counter) ? json_object_get(counter, "value") : NULL;
    double d;
    if (!json_is_number(v)) {
        return false;
    }
    d = json_number_value(v);
    if (!isfinite(d) || d < 0) {
        return false;
    }
    *out = d;
    return true;
}

/* Looks at one member of the counter set; members we do not need are not
 * examined, so a new Varnish with new shapes elsewhere still works. */
static void take_counter(var_stats *s, const char *key, const json_t *counter)
{
    double v;
    size_t i = 0;
    while (i < NFIELDS && strcmp(key, fields[i].key) != 0) {
        i++;
    }
    if (i == NFIELDS && !is_storage_key(key)) {
        return;
    }
    if (!counter_value(counter, &v)) {
        s->malformed++;
        return;
    }
    if (i < NFIELDS) {
        s->v[i] = v;
        s->found[i] = true;
        return;
    }
    s->storage += v;
    s->have_storage = true;
}

static int emit_stats(st_emit *e, const var_stats *s)
{
    size_t nfound = 0;
    int rv = ST_OK;
    for (size_t i = 0; i < NFIELDS && rv == ST_OK; i++) {
        if (s->found[i]) {
            nfound++;
            rv = st_emit_counter_total(e, &fields[i].desc, s->v[i]);
        }
    }
    if (rv == ST_OK && s->have_storage) {
        rv = st_emit_gauge(e, &memory_desc, s->storage);
    }
    /* Output without any MAIN counter counts as one malformed reply. */
    if (rv == ST_OK && (s->malformed > 0 || nfound == 0)) {
        rv = st_emit_counter_add(e, &malformed_desc, (double)(s->malformed + (nfound == 0)));
    }
    if (rv == ST_OK && nfound == 0) {
        rv = ST_EPARSE;
    }
    return rv;
}

int st_varnish_json_emit(st_emit *e, const char *text, size_t len)
{
    json_error_t jerr;
    json_t *root;
    const json_t *set;
    const char *key;
    json_t *counter;
    var_stats s;
    int rv;
    if (len > ST_VARNISH_MAX_OUTPUT) {
        return ST_ETOOBIG;
    }
    /* Integers as reals: a gauge that wrapped below zero prints as 2^64-1,
     * which jansson would otherwise refuse with the whole document. */
    root = json_loadb(text, len, JSON_DECODE_INT_AS_REAL, &jerr);
    if (!json_is_object(root)) {
        ST_WARN("varnish", "varnishstat output is not a JSON object: %s (line %d)",
                root == NULL ? jerr.text : "wrong type", jerr.line);
        json_decref(root);
        return st_emit_counter_add(e, &malformed_desc, 1) == ST_OK ? ST_EPARSE : ST_ENOMEM;
    }
    set = json_object_get(root, "counters");
    if (!json_is_object(set)) {
        set = root; /* the shape before Varnish 6.5 */
    }
    memset(&s, 0, sizeof(s));
    json_object_foreach((json_t *)set, key, counter)
    {
        take_counter(&s, key, counter);
    }
    rv = emit_stats(e, &s);
    json_decref(root);
    return rv;
}

/* ---- running varnishstat ---- */

static int spawn(varnish_ctx *c, int ofd, int efd, pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none;
    sigset_t dfl;
    int r;
    sigemptyset(&none);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGPIPE); /* the agent ignores it; the child should not */
    if (posix_spawn_file_actions_init(&fa) != 0) {
        return ST_ENOMEM;
    }
    if ((r = posix_spawnattr_init(&attr)) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        return ST_ENOMEM;
    }
    if ((r = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)) == 0 &&
        (r = posix_spawn_file_actions_adddup2(&fa, ofd, 1)) == 0 &&
        (r = posix_spawn_file_actions_adddup2(&fa, efd, 2)) == 0 &&
        (r = posix_spawnattr_setsigmask(&attr, &none)) == 0 &&
        (r = posix_spawnattr_setsigdefault(&attr, &dfl)) == 0 &&
        (r = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)) ==
            0) {
        r = posix_spawn(pid, c->cfg.varnishstat, &fa, &attr, (char *const *)c->argv, environ);
    }
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    if (r != 0) {
        ST_WARN("varnish", "cannot run %s: %s", c->cfg.varnishstat, strerror(r));
        return r == ENOENT ? ST_ENOENT : r == EACCES ? ST_EPERM : r == ENOMEM ? ST_ENOMEM : ST_EIO;
    }
    return ST_OK;
}

/* One read from a ready pipe: stdout (i 0) into c->out under its cap,
 * stderr (i 1) into c->err up to its size, the rest of stderr dropped. */
static int drain(varnish_ctx *c, int i, int fd, bool *eof)
{
    ssize_t n = read(fd, c->chunk, sizeof(c->chunk));
    if (n < 0) {
        return errno == EINTR || errno == EAGAIN ? ST_OK : ST_EIO;
    }
    *eof = n == 0;
    if (i == 0) {
        if (st_buf_append(&c->out, c->chunk, (size_t)n) != ST_OK) {
            ST_WARN("varnish", "varnishstat wrote over %u bytes", ST_VARNISH_MAX_OUTPUT);
            return ST_ETOOBIG;
        }
        return ST_OK;
    }
    if (c->errlen + 1 < sizeof(c->err)) {
        size_t take = ST_MIN((size_t)n, sizeof(c->err) - 1 - c->errlen);
        memcpy(c->err + c->errlen, c->chunk, take);
        c->errlen += take;
    }
    return ST_OK;
}

/* Reads both pipes until both reach end of file or the deadline passes. */
static int collect(varnish_ctx *c, int ofd, int efd, int64_t deadline_ms)
{
    struct pollfd p[2] = {{.fd = ofd, .events = POLLIN}, {.fd = efd, .events = POLLIN}};
    while (p[0].fd >= 0 || p[1].fd >= 0) {
        int64_t left = deadline_ms - st_time_mono_ms();
        int n;
        if (left <= 0) {
            ST_WARN("varnish", "%s did not finish within %lld ms", c->cfg.varnishstat,
                    (long long)c->cfg.timeout_ms);
            return ST_ETIMEOUT;
        }
        n = poll(p, 2, (int)left); /* poll skips the negative fd of a closed pipe */
        if (n < 0 && errno != EINTR) {
            return ST_EIO;
        }
        for (int i = 0; i < 2 && n > 0; i++) {
            bool eof = false;
            int rv;
            if (p[i].fd < 0 || p[i].revents == 0) {
                continue;
            }
            if ((rv = drain(c, i, p[i].fd, &eof)) != ST_OK) {
                return rv;
            }
            p[i].fd = eof ? -1 : p[i].fd;
        }
    }
    return ST_OK;
}

/* Waits for the child; one that outlives the deadline (or kill is set) is
 * killed first, so a child that closed its pipes but hangs cannot stall
 * the agent. */
static int reap(pid_t pid, bool kill_now, int64_t deadline_ms, int *status)
{
    for (;;) {
        pid_t r;
        if (kill_now || st_time_mono_ms() >= deadline_ms) {
            kill(pid, SIGKILL);
            kill_now = false;
            deadline_ms = INT64_MAX;
        }
        r = waitpid(pid, status, deadline_ms == INT64_MAX ? 0 : WNOHANG);
        if (r == pid) {
            return ST_OK;
        }
        if (r < 0 && errno != EINTR) {
            return ST_EIO;
        }
        if (r == 0) {
            st_time_sleep_ms(1);
        }
    }
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/* Runs varnishstat: stdout into c->out, the head of stderr into c->err. */
static int run(varnish_ctx *c, int *status)
{
    int64_t deadline_ms = st_time_mono_ms() + c->cfg.timeout_ms;
    int out[2] = {-1, -1};
    int errp[2] = {-1, -1};
    pid_t pid = -1;
    int rv;
    st_buf_reset(&c->out);
    c->errlen = 0;
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(errp, O_CLOEXEC) != 0) {
        ST_WARN("varnish", "pipe: %s", strerror(errno));
        rv = ST_EIO;
        goto out;
    }
    if ((rv = spawn(c, out[1], errp[1], &pid)) != ST_OK) {
        goto out;
    }
    close_fd(&out[1]); /* so that the child's exit ends the reads */
    close_fd(&errp[1]);
    rv = collect(c, out[0], errp[0], deadline_ms);
out:
    close_fd(&out[0]);
    close_fd(&out[1]);
    close_fd(&errp[0]);
    close_fd(&errp[1]);
    if (pid > 0 && reap(pid, rv != ST_OK, deadline_ms, status) != ST_OK && rv == ST_OK) {
        rv = ST_EIO;
    }
    return rv;
}

/* ---- the sampler ---- */

int st_varnish_sample(void *ctx, st_emit *e)
{
    varnish_ctx *c = ctx;
    int status = 0;
    int rv = run(c, &status);
    if (rv != ST_OK) {
        return rv;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        while (c->errlen > 0 && (c->err[c->errlen - 1] == '\n' || c->err[c->errlen - 1] == '\r')) {
            c->errlen--;
        }
        /* Its stderr says why ("Could not get hold of varnishd, is it
         * running?"); varnishd may be restarting, so the scheduler retries. */
        ST_WARN("varnish", "%s exited with status %d: %.*s", c->cfg.varnishstat,
                WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), (int)c->errlen,
                c->err);
        return ST_EIO;
    }
    return st_varnish_json_emit(e, (const char *)c->out.data, c->out.len);
}

void st_varnish_fini(void *ctx)
{
    varnish_ctx *c = ctx;
    if (c == NULL) {
        return;
    }
    st_buf_free(&c->out);
    st_cfg_release(varnish_rows, &c->cfg);
    free(c);
}

/* varnishstat -j -t <attach> [-n instance] -f <field>...: the filters
 * (-f works from 4.1 to 7.x) keep the output to the fields we read. */
static void build_argv(varnish_ctx *c)
{
    static const char *const filters[] = {
        "MAIN.cache_hit",   "MAIN.cache_miss", "MAIN.cache_hitpass", "MAIN.cache_hitmiss",
        "MAIN.n_lru_nuked", "SMA.*.g_bytes",   "SMF.*.g_bytes",
    };
    size_t n = 0;
    /* Half the timeout for attaching, so that a varnishd that is down is
     * reported by varnishstat itself rather than by our kill. */
    snprintf(c->attach, sizeof(c->attach), "%.3f", (double)c->cfg.timeout_ms / 2000.0);
    c->argv[n++] = c->cfg.varnishstat;
    c->argv[n++] = "-j";
    c->argv[n++] = "-t";
    c->argv[n++] = c->attach;
    if (c->cfg.instance != NULL) {
        c->argv[n++] = "-n";
        c->argv[n++] = c->cfg.instance;
    }
    for (size_t i = 0; i < ST_ARRAY_LEN(filters); i++) {
        c->argv[n++] = "-f";
        c->argv[n++] = filters[i];
    }
    c->argv[n] = NULL; /* 21 of ST_VARNISH_MAX_ARGV */
}

static int check_cfg(const varnish_cfg *vc, const st_cfg_doc *doc, const st_cfg_node *cfg,
                     st_cfg_error *err)
{
    if (vc->timeout_ms <= 0 || vc->timeout_ms > ST_VARNISH_MAX_TIMEOUT_MS) {
        return st_cfg_fail(err, doc, st_cfg_get(cfg, "timeout"), "timeout",
                           "must be between 1ms and %ds", ST_VARNISH_MAX_TIMEOUT_MS / 1000);
    }
    /* No shell and no PATH search: the binary is named exactly. */
    if (vc->varnishstat == NULL || vc->varnishstat[0] != '/' ||
        strlen(vc->varnishstat) > ST_VARNISH_MAX_PATH) {
        return st_cfg_fail(err, doc, st_cfg_get(cfg, "varnishstat"), "varnishstat",
                           "want an absolute path of at most %d bytes", ST_VARNISH_MAX_PATH);
    }
    if (vc->instance != NULL &&
        (vc->instance[0] == '\0' || strlen(vc->instance) > ST_VARNISH_MAX_PATH)) {
        return st_cfg_fail(err, doc, st_cfg_get(cfg, "instance"), "instance",
                           "want a name or directory of 1 to %d bytes", ST_VARNISH_MAX_PATH);
    }
    return ST_OK;
}

int st_varnish_init(const st_cfg_doc *doc, const st_cfg_node *cfg, const st_sampler_env *env,
                    void **ctx, st_cfg_error *err)
{
    varnish_ctx *c = calloc(1, sizeof(*c));
    int rv;
    (void)env;
    if (c == NULL) {
        return ST_ENOMEM;
    }
    st_buf_init(&c->out, ST_VARNISH_MAX_OUTPUT);
    if ((rv = st_cfg_bind(doc, cfg, varnish_rows, &c->cfg, err)) != ST_OK ||
        (rv = check_cfg(&c->cfg, doc, cfg, err)) != ST_OK) {
        st_varnish_fini(c);
        return rv;
    }
    /* A missing varnishstat is reported by each run, not here: varnish may
     * be installed after the agent starts. */
    build_argv(c);
    *ctx = c;
    return ST_OK;
}

const st_sampler_def st_sampler_varnish = ST_SAMPLER_ROW(varnish);
