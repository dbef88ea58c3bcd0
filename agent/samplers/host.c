/* host: CPU utilisation from <proc_root>/stat, available and total memory
 * from <proc_root>/meminfo, and the agent's own CPU time and RSS from
 * <proc_root>/self. No options. */
#include "samplers.h"

#include "err.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ST_HOST_STAT_HEAD 4096 /* only the aggregate "cpu" line of stat is read */
#define ST_HOST_MAX_FILE 16384 /* meminfo, self/stat, self/status: all far smaller */
#define ST_HOST_CPU_FIELDS 8   /* user nice system idle iowait irq softirq steal */

typedef struct host_ctx {
    char stat_path[ST_PROCFS_PATH_MAX];
    char meminfo_path[ST_PROCFS_PATH_MAX];
    char self_stat_path[ST_PROCFS_PATH_MAX];
    char self_status_path[ST_PROCFS_PATH_MAX];
    double clk_tck;
    bool have_base;
    uint64_t prev_busy;
    uint64_t prev_total;
    char buf[ST_HOST_MAX_FILE];
} host_ctx;

static const st_cfg_map host_rows[] = {{0}};

static const st_series_desc cpu_util = {"host.cpu.utilization", NULL,    0,
                                        ST_LAYER_INFRA,         "ratio", 4};
static const st_series_desc mem_avail = {"host.mem.available", NULL, 0, ST_LAYER_INFRA, "B", 0};
static const st_series_desc mem_total = {"host.mem.total", NULL, 0, ST_LAYER_INFRA, "B", 0};
/* The agent's own series belong to no analysis area. CLK_TCK is 100 on
 * Linux; scale 3 keeps any tick rate up to 1000 exact. */
static const st_series_desc agent_cpu = {"agent.cpu.seconds", NULL, 0, ST_LAYER_NONE, "s", 3};
static const st_series_desc agent_rss = {"agent.rss", NULL, 0, ST_LAYER_NONE, "B", 0};

static void keep_first(int *rv, int r)
{
    if (*rv == ST_OK && r != ST_OK) {
        *rv = r;
    }
}

/* busy and total jiffies of the aggregate line "cpu  u n s idle iow irq
 * sirq steal guest guest_nice". guest time is already inside user and
 * nice, so only the first eight fields are summed. */
static int parse_cpu_line(const char *text, uint64_t *busy, uint64_t *total)
{
    const char *p = text;
    uint64_t f[ST_HOST_CPU_FIELDS] = {0};
    uint64_t sum = 0;
    size_t n = 0;
    if (strncmp(p, "cpu ", 4) != 0) {
        return ST_EPARSE;
    }
    p += 3;
    while (n < ST_HOST_CPU_FIELDS && *p == ' ') {
        while (*p == ' ') {
            p++;
        }
        if (st_procfs_u64(&p, &f[n]) != ST_OK) {
            return ST_EPARSE;
        }
        if (f[n] > UINT64_MAX / 16) { /* keeps the sum below from overflowing */
            return ST_EPARSE;
        }
        sum += f[n];
        n++;
    }
    if (n < 4) { /* user nice system idle exist on every kernel */
        return ST_EPARSE;
    }
    *total = sum;
    *busy = sum - f[3] - f[4];
    return ST_OK;
}

static int sample_cpu(host_ctx *c, st_emit *e)
{
    uint64_t busy;
    uint64_t total;
    int rv = st_procfs_read(c->stat_path, c->buf, ST_HOST_STAT_HEAD, NULL);
    if (rv != ST_OK && rv != ST_ETOOBIG) { /* the head is all we need */
        return rv;
    }
    if ((rv = parse_cpu_line(c->buf, &busy, &total)) != ST_OK) {
        return rv;
    }
    /* The first run, and a counter that went back (a fixture rewritten,
     * a restored snapshot), only set the base. */
    if (c->have_base && total > c->prev_total && busy >= c->prev_busy) {
        double u = (double)(busy - c->prev_busy) / (double)(total - c->prev_total);
        rv = st_emit_gauge(e, &cpu_util, u > 1.0 ? 1.0 : u);
    }
    if (total != c->prev_total || !c->have_base) {
        c->prev_busy = busy;
        c->prev_total = total;
        c->have_base = true;
    }
    return rv;
}

static int sample_mem(host_ctx *c, st_emit *e)
{
    uint64_t avail;
    uint64_t total;
    int rv = st_procfs_read(c->meminfo_path, c->buf, sizeof(c->buf), NULL);
    if (rv != ST_OK) {
        return rv;
    }
    if (st_procfs_field_u64(c->buf, "MemTotal", &total) != ST_OK ||
        st_procfs_field_u64(c->buf, "MemAvailable", &avail) != ST_OK) {
        return ST_EPARSE;
    }
    rv = st_emit_gauge(e, &mem_total, (double)total);
    keep_first(&rv, st_emit_gauge(e, &mem_avail, (double)avail));
    return rv;
}

/* utime and stime (fields 14 and 15 of proc(5)); the fields are counted
 * from the last ')' because the command name may hold spaces and ')'. */
static int parse_self_stat(const char *text, uint64_t *ticks)
{
    const char *p = strrchr(text, ')');
    uint64_t utime;
    uint64_t stime;
    if (p == NULL) {
        return ST_EPARSE;
    }
    p++;
    /* After ')' come fields 3 (state) to 13; skip those eleven. */
    for (int field = 3; field <= 13; field++) {
        if (*p != ' ') {
            return ST_EPARSE;
        }
        p = strpbrk(p + 1, " \n");
        if (p == NULL) {
            return ST_EPARSE;
        }
    }
    p++;
    if (st_procfs_u64(&p, &utime) != ST_OK || *p++ != ' ' || st_procfs_u64(&p, &stime) != ST_OK) {
        return ST_EPARSE;
    }
    if (utime > UINT64_MAX / 2 || stime > UINT64_MAX / 2) {
        return ST_EPARSE;
    }
    *ticks = utime + stime;
    return ST_OK;
}

static int sample_self(host_ctx *c, st_emit *e)
{
    uint64_t ticks;
    uint64_t rss;
    int rv = st_procfs_read(c->self_stat_path, c->buf, sizeof(c->buf), NULL);
    if (rv != ST_OK) {
        return rv;
    }
    if ((rv = parse_self_stat(c->buf, &ticks)) != ST_OK) {
        return rv;
    }
    rv = st_emit_counter_total(e, &agent_cpu, (double)ticks / c->clk_tck);
    keep_first(&rv, st_procfs_read(c->self_status_path, c->buf, sizeof(c->buf), NULL));
    if (rv != ST_OK) {
        return rv;
    }
    if (st_procfs_field_u64(c->buf, "VmRSS", &rss) != ST_OK) {
        return ST_EPARSE;
    }
    return st_emit_gauge(e, &agent_rss, (double)rss);
}

int st_host_sample(void *ctx, st_emit *e)
{
    host_ctx *c = ctx;
    int rv = ST_OK;
    /* Each part runs even when another failed: a broken meminfo should
     * not hide CPU. The first error is reported for the backoff. */
    keep_first(&rv, sample_cpu(c, e));
    keep_first(&rv, sample_mem(c, e));
    keep_first(&rv, sample_self(c, e));
    return rv;
}

/* The agent's own numbers come from <proc_root>/self rather than a fixed
 * /proc/self: procfs resolves "self" to the reader in the pid namespace of
 * that mount, so a host /proc mounted into a container still names the
 * agent, and test fixtures can supply exact values. */
int st_host_init(const st_cfg_doc *doc, const st_cfg_node *cfg, const st_sampler_env *env,
                 void **ctx, st_cfg_error *err)
{
    host_ctx *c;
    char none; /* host has no options; binding still refuses unknown keys */
    long tck = sysconf(_SC_CLK_TCK);
    int rv = st_cfg_bind(doc, cfg, host_rows, &none, err);
    if (rv != ST_OK) {
        return rv;
    }
    if ((c = calloc(1, sizeof(*c))) == NULL) {
        return ST_ENOMEM;
    }
    c->clk_tck = tck > 0 ? (double)tck : 100.0;
    if (st_procfs_path(c->stat_path, sizeof(c->stat_path), "%s/stat", env->proc_root) ||
        st_procfs_path(c->meminfo_path, sizeof(c->meminfo_path), "%s/meminfo", env->proc_root) ||
        st_procfs_path(c->self_stat_path, sizeof(c->self_stat_path), "%s/self/stat",
                       env->proc_root) ||
        st_procfs_path(c->self_status_path, sizeof(c->self_status_path), "%s/self/status",
                       env->proc_root)) {
        free(c);
        return st_cfg_fail(err, doc, cfg, "proc_root", "path too long");
    }
    *ctx = c;
    return ST_OK;
}

void st_host_fini(void *ctx)
{
    free(ctx);
}

const st_sampler_def st_sampler_host = ST_SAMPLER_ROW(host);
