/* proc: memory of chosen processes, found by name (comm or the basename of
 * argv[0]), by pidfile, or as the members of a cgroup v2 group; several pids
 * under one entry are summed. Name matches are cached and /proc is scanned
 * again at most every `rescan` (10 s) or when a cached pid is gone. */
#include "samplers.h"

#include "err.h"
#include "log.h"
#include "timeutil.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define ST_PROC_MAX_ENTRIES 256
#define ST_PROC_MAX_SCAN 65536   /* /proc entries looked at in one rescan */
#define ST_PROC_MAX_PIDS 4096    /* pids summed under one entry */
#define ST_PROC_MAX_STATUS 16384 /* status prefix read; a long Groups: line comes first */
#define ST_PROC_MAX_NAME 255
#define ST_PROC_MAX_LABEL 256
#define ST_PROC_MAX_CGROUP 512                   /* a cgroup path below fs/cgroup */
#define ST_PROC_MAX_PROCS (ST_PROC_MAX_PIDS * 8) /* cgroup.procs read: 4096 pids of 7 digits */
#define ST_PROC_PID_MAX 4194304                  /* the kernel's PID_MAX_LIMIT */
#define ST_PROC_MIN_RESCAN_MS 1000

enum match_kind { MATCH_NAME, MATCH_PIDFILE, MATCH_CGROUP };

typedef struct proc_entry_cfg {
    char *name;
    char *pidfile;
    char *cgroup;
    char *label;
} proc_entry_cfg;

typedef struct cached_pid {
    int pid;
    char name[64]; /* status Name: at first read, to notice a reused pid */
} cached_pid;

typedef struct mem_sum {
    uint64_t rss;
    uint64_t hwm;
    uint64_t anon;
    size_t count;
} mem_sum;

typedef struct proc_entry {
    proc_entry_cfg cfg;
    enum match_kind kind;
    char label[ST_PROC_MAX_LABEL + 1];
    char cgroup[ST_PROC_MAX_CGROUP + 1]; /* without leading or trailing '/' */
    cached_pid *pids;
    size_t npids;
    size_t cap;
    mem_sum sum;
    bool failed; /* this run's numbers are incomplete: emit none of them */
    bool cg_present;
    uint64_t cg_current;
} proc_entry;

typedef struct proc_ctx {
    char *proc_root;
    char *cgroup_root;
    proc_entry *e;
    size_t n;
    bool has_names;
    bool scanned;
    int64_t rescan_ms;
    bool exact_anon;
    int64_t last_scan_ms;
    char *procs; /* ST_PROC_MAX_PROCS bytes when a cgroup entry exists */
    char path[ST_PROCFS_PATH_MAX];
    char buf[ST_PROC_MAX_STATUS];
} proc_ctx;

typedef struct proc_cfg {
    const st_cfg_node *match;
    int64_t rescan_ms;
    bool exact_anon;
} proc_cfg;

static const st_cfg_map proc_rows[] = {
    {ST_CFG_NODE, "match", NULL, offsetof(proc_cfg, match),
     "list of {name | pidfile | cgroup, label}", NULL, 0, 0},
    {ST_CFG_DURATION, "rescan", "10s", offsetof(proc_cfg, rescan_ms),
     "how often /proc is scanned again for names", NULL, 0, 0},
    {ST_CFG_BOOL, "exact_anon", "false", offsetof(proc_cfg, exact_anon),
     "mem.anon from smaps_rollup (exact; the kernel walks the page tables every run)", NULL, 0, 0},
    {ST_CFG_IGNORE, "interval", NULL, 0, "run every (default: the agent's interval)", NULL, 0, 0},
    {0},
};

static const st_cfg_map entry_rows[] = {
    {ST_CFG_STR, "name", NULL, offsetof(proc_entry_cfg, name),
     "comm or argv[0] basename of the processes", NULL, 0, 0},
    {ST_CFG_STR, "pidfile", NULL, offsetof(proc_entry_cfg, pidfile), "file holding the pid", NULL,
     0, 0},
    {ST_CFG_STR, "cgroup", NULL, offsetof(proc_entry_cfg, cgroup),
     "cgroup v2 path below <sys_root>/fs/cgroup", NULL, 0, 0},
    {ST_CFG_STR, "label", NULL, offsetof(proc_entry_cfg, label),
     "value of the process label (default: the name)", NULL, 0, 0},
    {0},
};

static void keep_first(int *rv, int r)
{
    if (*rv == ST_OK && r != ST_OK) {
        *rv = r;
    }
}

/* A whole decimal pid in 1..ST_PROC_PID_MAX, or 0. */
static int parse_pid(const char *s, size_t n)
{
    uint64_t v = 0;
    if (n == 0 || n > 7) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    return v >= 1 && v <= ST_PROC_PID_MAX ? (int)v : 0;
}

static int add_pid(proc_entry *e, int pid)
{
    if (e->npids == e->cap) {
        size_t ncap = e->cap == 0 ? 8 : e->cap * 2;
        cached_pid *np;
        if (e->cap >= ST_PROC_MAX_PIDS) {
            return ST_ETOOBIG;
        }
        if ((np = realloc(e->pids, ST_MIN(ncap, ST_PROC_MAX_PIDS) * sizeof(*np))) == NULL) {
            return ST_ENOMEM;
        }
        e->pids = np;
        e->cap = ST_MIN(ncap, ST_PROC_MAX_PIDS);
    }
    e->pids[e->npids].pid = pid;
    e->pids[e->npids].name[0] = '\0';
    e->npids++;
    return ST_OK;
}

/* ---- reading one process ---- */

/* Copies the value of status' "Name:" line into out[cap]. */
static void status_name(const char *status, char *out, size_t cap)
{
    const char *p = strncmp(status, "Name:", 5) == 0 ? status + 5 : NULL;
    size_t n;
    out[0] = '\0';
    if (p == NULL) {
        return;
    }
    p += strspn(p, " \t");
    n = strcspn(p, "\n");
    n = ST_MIN(n, cap - 1);
    memcpy(out, p, n);
    out[n] = '\0';
}

/* A field of status, 0 when absent from a complete file (kernel threads
 * have no Vm lines) and an error when absent from a truncated one. */
static int status_field(const char *status, bool truncated, const char *key, uint64_t *out)
{
    int rv = st_procfs_field_u64(status, key, out);
    if (rv == ST_ENOENT && !truncated) {
        *out = 0;
        return ST_OK;
    }
    return rv == ST_OK ? ST_OK : ST_EPARSE;
}

/* Adds one process' memory to sum. With p->name set, a process whose name
 * changed counts as gone (its pid was reused). ST_ENOENT when gone. */
static int read_pid(proc_ctx *c, cached_pid *p, bool check_name, mem_sum *sum)
{
    uint64_t rss;
    uint64_t hwm;
    uint64_t anon;
    uint64_t smaps_anon;
    char name[sizeof(p->name)];
    int rv = st_procfs_path(c->path, sizeof(c->path), "%s/%d/status", c->proc_root, p->pid);
    bool truncated;
    if (rv == ST_OK) {
        rv = st_procfs_read(c->path, c->buf, sizeof(c->buf), NULL);
    }
    truncated = rv == ST_ETOOBIG;
    if (rv != ST_OK && !truncated) {
        return rv;
    }
    status_name(c->buf, name, sizeof(name));
    if (check_name && p->name[0] != '\0' && strcmp(name, p->name) != 0) {
        return ST_ENOENT;
    }
    memcpy(p->name, name, sizeof(name));
    if (status_field(c->buf, truncated, "VmRSS", &rss) != ST_OK ||
        status_field(c->buf, truncated, "VmHWM", &hwm) != ST_OK ||
        status_field(c->buf, truncated, "RssAnon", &anon) != ST_OK) {
        return ST_EPARSE;
    }
    /* RssAnon is the kernel's running count, off by at most a per-CPU
     * batch of pages: plenty for a leak's slope, and free to read. Asked
     * for, smaps_rollup's Anonymous is exact, but reading it walks the
     * process's page tables (72 % of an agent's CPU watching a 21 MB
     * process); it needs ptrace read access, so RssAnon stays the fallback
     * for processes the agent may not inspect. */
    if (c->exact_anon &&
        st_procfs_path(c->path, sizeof(c->path), "%s/%d/smaps_rollup", c->proc_root, p->pid) ==
            ST_OK &&
        st_procfs_read(c->path, c->buf, sizeof(c->buf), NULL) == ST_OK &&
        st_procfs_field_u64(c->buf, "Anonymous", &smaps_anon) == ST_OK) {
        anon = smaps_anon;
    }
    sum->rss += rss;
    sum->hwm += hwm;
    sum->anon += anon;
    sum->count++;
    return ST_OK;
}

/* ---- finding processes by name ---- */

/* The process' comm (without its newline) into out[cap]. */
static int read_comm(proc_ctx *c, int pid, char *out, size_t cap)
{
    int rv = st_procfs_path(c->path, sizeof(c->path), "%s/%d/comm", c->proc_root, pid);
    if (rv == ST_OK) {
        rv = st_procfs_read(c->path, out, cap, NULL);
    }
    if (rv != ST_OK && rv != ST_ETOOBIG) {
        return rv;
    }
    out[strcspn(out, "\n")] = '\0';
    return ST_OK;
}

/* The basename of argv[0] into out[cap] ("" for kernel threads). comm is
 * cut at 15 bytes and may be renamed, so names also match on this. */
static void read_argv0_base(proc_ctx *c, int pid, char *out, size_t cap)
{
    const char *slash;
    size_t n;
    int rv = st_procfs_path(c->path, sizeof(c->path), "%s/%d/cmdline", c->proc_root, pid);
    out[0] = '\0';
    if (rv == ST_OK) {
        rv = st_procfs_read(c->path, c->buf, sizeof(c->buf), NULL);
    }
    if (rv != ST_OK && rv != ST_ETOOBIG) {
        return;
    }
    /* argv[0] ends at the first NUL, which st_procfs_read leaves in place. */
    slash = strrchr(c->buf, '/');
    slash = slash != NULL ? slash + 1 : c->buf;
    n = strlen(slash);
    if (n < cap) {
        memcpy(out, slash, n + 1);
    }
}

static void match_pid(proc_ctx *c, int pid)
{
    char comm[64];
    char base[ST_PROC_MAX_NAME + 1];
    bool have_base = false;
    if (read_comm(c, pid, comm, sizeof(comm)) != ST_OK) {
        return; /* gone since readdir */
    }
    for (size_t i = 0; i < c->n; i++) {
        proc_entry *e = &c->e[i];
        if (e->kind != MATCH_NAME) {
            continue;
        }
        if (strcmp(comm, e->cfg.name) != 0) {
            if (!have_base) {
                read_argv0_base(c, pid, base, sizeof(base));
                have_base = true;
            }
            if (strcmp(base, e->cfg.name) != 0) {
                continue;
            }
        }
        if (add_pid(e, pid) == ST_ETOOBIG) {
            ST_WARN("proc", "more than %d processes named %s; the rest are not summed",
                    ST_PROC_MAX_PIDS, e->cfg.name);
        }
    }
}

static int rescan(proc_ctx *c, int64_t now_ms)
{
    DIR *d = opendir(c->proc_root);
    struct dirent *de;
    size_t scanned = 0;
    if (d == NULL) {
        return errno == ENOENT ? ST_ENOENT : ST_EIO;
    }
    for (size_t i = 0; i < c->n; i++) {
        c->e[i].npids = c->e[i].kind == MATCH_NAME ? 0 : c->e[i].npids;
    }
    while (scanned < ST_PROC_MAX_SCAN && (de = readdir(d)) != NULL) {
        int pid = parse_pid(de->d_name, strlen(de->d_name));
        if (pid == 0) {
            continue;
        }
        scanned++;
        match_pid(c, pid);
    }
    if (scanned == ST_PROC_MAX_SCAN) {
        ST_WARN("proc", "scan of %s stopped after %d processes", c->proc_root, ST_PROC_MAX_SCAN);
    }
    closedir(d);
    c->scanned = true;
    c->last_scan_ms = now_ms;
    return ST_OK;
}

/* ---- one entry per kind ---- */

static int collect_name(proc_ctx *c, proc_entry *e, bool *vanished)
{
    int rv = ST_OK;
    memset(&e->sum, 0, sizeof(e->sum));
    for (size_t i = 0; i < e->npids; i++) {
        int r = read_pid(c, &e->pids[i], true, &e->sum);
        if (r == ST_ENOENT) {
            *vanished = true;
            continue;
        }
        keep_first(&rv, r);
    }
    return rv;
}

static int collect_pidfile(proc_ctx *c, proc_entry *e)
{
    size_t len;
    cached_pid p = {0, ""};
    int rv = st_procfs_read(e->cfg.pidfile, c->buf, 64, &len);
    memset(&e->sum, 0, sizeof(e->sum));
    if (rv == ST_ENOENT) {
        return ST_OK; /* not running: proc.count says 0 */
    }
    if (rv != ST_OK) {
        return rv == ST_ETOOBIG ? ST_EPARSE : rv;
    }
    while (len > 0 && (c->buf[len - 1] == '\n' || c->buf[len - 1] == ' ')) {
        len--;
    }
    if ((p.pid = parse_pid(c->buf, len)) == 0) {
        ST_WARN("proc", "pidfile %s does not hold a pid", e->cfg.pidfile);
        return ST_EPARSE;
    }
    rv = read_pid(c, &p, false, &e->sum);
    return rv == ST_ENOENT ? ST_OK : rv; /* a stale pidfile */
}

/* The pids listed in cgroup.procs (one per line), at most ST_PROC_MAX_PIDS. */
static int read_cgroup_procs(proc_ctx *c, proc_entry *e)
{
    size_t len;
    const char *p;
    int rv =
        st_procfs_path(c->path, sizeof(c->path), "%s/%s/cgroup.procs", c->cgroup_root, e->cgroup);
    if (rv == ST_OK) {
        rv = st_procfs_read(c->path, c->procs, ST_PROC_MAX_PROCS, &len);
    }
    if (rv == ST_ETOOBIG) {
        const char *last = strrchr(c->procs, '\n');
        ST_WARN("proc", "cgroup %s: only the first %d pids are summed", e->cgroup,
                ST_PROC_MAX_PIDS);
        len = last != NULL ? (size_t)(last + 1 - c->procs) : 0; /* drop a cut line */
    } else if (rv != ST_OK) {
        return rv;
    }
    e->npids = 0;
    for (p = c->procs; p < c->procs + len && e->npids < ST_PROC_MAX_PIDS;) {
        size_t n = strcspn(p, "\n");
        int pid = parse_pid(p, n);
        if (pid == 0 || add_pid(e, pid) != ST_OK) {
            return pid == 0 ? ST_EPARSE : ST_ENOMEM;
        }
        p += n + 1;
    }
    return ST_OK;
}

static int collect_cgroup(proc_ctx *c, proc_entry *e)
{
    const char *p = c->buf;
    int rv =
        st_procfs_path(c->path, sizeof(c->path), "%s/%s/memory.current", c->cgroup_root, e->cgroup);
    memset(&e->sum, 0, sizeof(e->sum));
    e->cg_present = false;
    if (rv == ST_OK) {
        rv = st_procfs_read(c->path, c->buf, 64, NULL);
    }
    if (rv == ST_ENOENT) {
        return ST_OK; /* no such group (yet), or no memory controller in it */
    }
    if (rv != ST_OK || st_procfs_u64(&p, &e->cg_current) != ST_OK || (*p != '\n' && *p)) {
        return rv != ST_OK && rv != ST_ETOOBIG ? rv : ST_EPARSE;
    }
    e->cg_present = true;
    if ((rv = read_cgroup_procs(c, e)) != ST_OK) {
        return rv;
    }
    for (size_t i = 0; i < e->npids; i++) {
        int r = read_pid(c, &e->pids[i], false, &e->sum);
        if (r != ST_ENOENT) {
            keep_first(&rv, r);
        }
    }
    return rv;
}

static int emit_entry(st_emit *em, const proc_entry *e)
{
    st_label plab = {"process", e->label};
    st_label clab = {"cgroup", e->cgroup};
    st_series_desc d = {"proc.count", &plab, 1, ST_LAYER_INFRA, "", 0};
    int rv = ST_OK;
    if (e->kind == MATCH_CGROUP && e->cg_present) {
        st_series_desc cg = {"mem.cgroup.current", &clab, 1, ST_LAYER_INFRA, "B", 0};
        keep_first(&rv, st_emit_gauge(em, &cg, (double)e->cg_current));
    }
    keep_first(&rv, st_emit_gauge(em, &d, (double)e->sum.count));
    if (e->sum.count == 0) {
        return rv; /* no process: a zero RSS would read as a real value */
    }
    d.unit = "B";
    d.name = "mem.rss";
    keep_first(&rv, st_emit_gauge(em, &d, (double)e->sum.rss));
    d.name = "mem.rss.peak"; /* the sum of each process' own peak */
    keep_first(&rv, st_emit_gauge(em, &d, (double)e->sum.hwm));
    d.name = "mem.anon";
    keep_first(&rv, st_emit_gauge(em, &d, (double)e->sum.anon));
    return rv;
}

static int collect_all(proc_ctx *c, bool *vanished)
{
    int rv = ST_OK;
    for (size_t i = 0; i < c->n; i++) {
        proc_entry *e = &c->e[i];
        int r;
        if (e->kind == MATCH_NAME) {
            r = collect_name(c, e, vanished);
        } else if (e->kind == MATCH_PIDFILE) {
            r = collect_pidfile(c, e);
        } else {
            r = collect_cgroup(c, e);
        }
        e->failed = r != ST_OK;
        keep_first(&rv, r);
    }
    return rv;
}

int st_proc_sample(void *ctx, st_emit *em)
{
    proc_ctx *c = ctx;
    int64_t now = st_time_mono_ms();
    bool vanished = false;
    int rv = ST_OK;
    if (c->has_names && (!c->scanned || now - c->last_scan_ms >= c->rescan_ms)) {
        if ((rv = rescan(c, now)) != ST_OK) {
            return rv;
        }
    }
    rv = collect_all(c, &vanished);
    if (vanished) {
        /* A cached pid is gone: the name may live on under a new pid. */
        bool again = false;
        int r = rescan(c, now);
        for (size_t i = 0; i < c->n && r == ST_OK; i++) {
            if (c->e[i].kind == MATCH_NAME) {
                r = collect_name(c, &c->e[i], &again);
                c->e[i].failed = r != ST_OK;
            }
        }
        keep_first(&rv, r);
    }
    for (size_t i = 0; i < c->n; i++) {
        if (!c->e[i].failed) {
            keep_first(&rv, emit_entry(em, &c->e[i]));
        }
    }
    return rv;
}

/* ---- configuration ---- */

void st_proc_fini(void *ctx)
{
    proc_ctx *c = ctx;
    if (c == NULL) {
        return;
    }
    for (size_t i = 0; i < c->n; i++) {
        st_cfg_release(entry_rows, &c->e[i].cfg);
        free(c->e[i].pids);
    }
    free(c->e);
    free(c->procs);
    free(c->proc_root);
    free(c->cgroup_root);
    free(c);
}

/* "/system.slice/x.service/" -> "system.slice/x.service"; refuses "..". */
static int normalize_cgroup(const char *in, char *out, size_t cap)
{
    size_t n;
    in += strspn(in, "/");
    n = strlen(in);
    while (n > 0 && in[n - 1] == '/') {
        n--;
    }
    if (n == 0 || n >= cap) {
        return ST_EINVAL;
    }
    memcpy(out, in, n);
    out[n] = '\0';
    for (const char *p = out; p != NULL; p = strchr(p, '/')) {
        p += *p == '/';
        if (strncmp(p, "..", 2) == 0 && (p[2] == '/' || p[2] == '\0')) {
            return ST_EINVAL;
        }
    }
    return ST_OK;
}

/* The default label: the name, the cgroup path, or the pidfile's basename
 * without ".pid" (/run/nginx.pid -> nginx). */
static const char *default_label(const proc_entry *e, char *tmp, size_t cap)
{
    const char *base;
    size_t n;
    if (e->kind == MATCH_NAME) {
        return e->cfg.name;
    }
    if (e->kind == MATCH_CGROUP) {
        return e->cgroup;
    }
    base = strrchr(e->cfg.pidfile, '/');
    base = base != NULL ? base + 1 : e->cfg.pidfile;
    n = strlen(base);
    if (n > 4 && strcmp(base + n - 4, ".pid") == 0) {
        n -= 4;
    }
    n = ST_MIN(n, cap - 1);
    memcpy(tmp, base, n);
    tmp[n] = '\0';
    return tmp;
}

/* Kind, cgroup path and label of a bound entry. */
static int check_entry(const st_cfg_doc *doc, const st_cfg_node *node, proc_entry *e,
                       st_cfg_error *err)
{
    char tmp[ST_PROC_MAX_LABEL + 1];
    const char *label;
    int kinds = (e->cfg.name != NULL) + (e->cfg.pidfile != NULL) + (e->cfg.cgroup != NULL);
    if (kinds != 1) {
        return st_cfg_fail(err, doc, node, "match",
                           "each entry needs exactly one of name, pidfile, cgroup");
    }
    e->kind = e->cfg.name != NULL      ? MATCH_NAME
              : e->cfg.pidfile != NULL ? MATCH_PIDFILE
                                       : MATCH_CGROUP;
    if (e->kind == MATCH_NAME &&
        (e->cfg.name[0] == '\0' || strlen(e->cfg.name) > ST_PROC_MAX_NAME)) {
        return st_cfg_fail(err, doc, st_cfg_get(node, "name"), "name", "1 to %d bytes",
                           ST_PROC_MAX_NAME);
    }
    if (e->kind == MATCH_PIDFILE && e->cfg.pidfile[0] == '\0') {
        return st_cfg_fail(err, doc, st_cfg_get(node, "pidfile"), "pidfile", "empty path");
    }
    if (e->kind == MATCH_CGROUP &&
        normalize_cgroup(e->cfg.cgroup, e->cgroup, sizeof(e->cgroup)) != ST_OK) {
        return st_cfg_fail(err, doc, st_cfg_get(node, "cgroup"), "cgroup",
                           "want a path below fs/cgroup of at most %d bytes, without '..'",
                           ST_PROC_MAX_CGROUP);
    }
    label = e->cfg.label != NULL ? e->cfg.label : default_label(e, tmp, sizeof(tmp));
    if (label[0] == '\0' || strlen(label) > ST_PROC_MAX_LABEL) {
        return st_cfg_fail(err, doc, e->cfg.label != NULL ? st_cfg_get(node, "label") : node,
                           "label", "1 to %d bytes", ST_PROC_MAX_LABEL);
    }
    memcpy(e->label, label, strlen(label) + 1);
    return ST_OK;
}

static int init_entry(const st_cfg_doc *doc, const st_cfg_node *node, proc_ctx *c,
                      st_cfg_error *err)
{
    proc_entry *e = &c->e[c->n++]; /* counted first so fini releases it */
    int rv;
    if (st_cfg_node_type(node) != ST_CFG_NODE_MAP) {
        return st_cfg_fail(err, doc, node, "match", "each entry must be a mapping");
    }
    if ((rv = st_cfg_bind(doc, node, entry_rows, &e->cfg, err)) != ST_OK ||
        (rv = check_entry(doc, node, e, err)) != ST_OK) {
        return rv;
    }
    for (size_t i = 0; i + 1 < c->n; i++) {
        const proc_entry *o = &c->e[i];
        if (strcmp(o->label, e->label) == 0) {
            return st_cfg_fail(err, doc, node, "label", "'%s' names two entries; give one a label",
                               e->label);
        }
        if (e->kind == MATCH_CGROUP && o->kind == MATCH_CGROUP &&
            strcmp(o->cgroup, e->cgroup) == 0) {
            return st_cfg_fail(err, doc, node, "cgroup", "'%s' listed twice", e->cgroup);
        }
    }
    c->has_names = c->has_names || e->kind == MATCH_NAME;
    if (e->kind == MATCH_CGROUP && c->procs == NULL &&
        (c->procs = malloc(ST_PROC_MAX_PROCS)) == NULL) {
        return ST_ENOMEM;
    }
    return ST_OK;
}

static int init_roots(proc_ctx *c, const st_sampler_env *env)
{
    size_t n = strlen(env->sys_root) + sizeof("/fs/cgroup");
    if (strlen(env->proc_root) + 32 >= ST_PROCFS_PATH_MAX || n >= ST_PROCFS_PATH_MAX) {
        return ST_ETOOBIG;
    }
    if ((c->proc_root = strdup(env->proc_root)) == NULL || (c->cgroup_root = malloc(n)) == NULL) {
        return ST_ENOMEM;
    }
    return st_procfs_path(c->cgroup_root, n, "%s/fs/cgroup", env->sys_root);
}

int st_proc_init(const st_cfg_doc *doc, const st_cfg_node *cfg, const st_sampler_env *env,
                 void **ctx, st_cfg_error *err)
{
    proc_cfg pc;
    proc_ctx *c = NULL;
    size_t n;
    int rv;
    memset(&pc, 0, sizeof(pc));
    if ((rv = st_cfg_bind(doc, cfg, proc_rows, &pc, err)) != ST_OK) {
        return rv;
    }
    if (pc.rescan_ms < ST_PROC_MIN_RESCAN_MS) {
        return st_cfg_fail(err, doc, st_cfg_get(cfg, "rescan"), "rescan", "at least 1s");
    }
    n = pc.match != NULL ? st_cfg_seq_len(pc.match) : 0;
    if (pc.match == NULL || st_cfg_node_type(pc.match) != ST_CFG_NODE_SEQ || n == 0 ||
        n > ST_PROC_MAX_ENTRIES) {
        return st_cfg_fail(err, doc, pc.match != NULL ? pc.match : cfg, "match",
                           "want a list of 1 to %d entries", ST_PROC_MAX_ENTRIES);
    }
    if ((c = calloc(1, sizeof(*c))) == NULL || (c->e = calloc(n, sizeof(*c->e))) == NULL) {
        rv = ST_ENOMEM;
        goto out;
    }
    c->rescan_ms = pc.rescan_ms;
    c->exact_anon = pc.exact_anon;
    if ((rv = init_roots(c, env)) != ST_OK) {
        rv = rv == ST_ETOOBIG ? st_cfg_fail(err, doc, cfg, "proc_root", "path too long") : rv;
        goto out;
    }
    for (size_t i = 0; i < n && rv == ST_OK; i++) {
        rv = init_entry(doc, st_cfg_seq_at(pc.match, i), c, err);
    }
    if (rv == ST_OK) {
        *ctx = c;
        c = NULL;
    }
out:
    st_proc_fini(c);
    return rv;
}

const st_sampler_def st_sampler_proc = ST_SAMPLER_ROW(proc);
