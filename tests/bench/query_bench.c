/* query_bench: query latency over a fleet-sized store, and the store's bytes
 * per sample. It loads a store in process (frames applied as the writer
 * does, no network), builds the rollups, times GET /v1/query's engine
 * (st_query_parse + st_query_run) and measures what each resolution costs
 * on disk. It prints figures; it asserts nothing. See BENCHMARKS.md.
 *
 * Stores are opened with no_sync (MDB_NOSYNC) to load fast: durability does
 * not change what a query reads or how many bytes a sample takes. */
#include "envelope.h"
#include "err.h"
#include "frame.h"
#include "query.h"
#include "sketch.h"
#include "spool.h"
#include "store.h"
#include "timeutil.h"
#include "util.h"
#include "bench_store.h"
#include "bench_util.h"

#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define T0 1800000000000LL /* 2027-01-15T08:00:00Z, on an hour */
#define NSER 3
#define POOL 64
#define LAT_PER_POINT 50
#define MAX_FRAME_POINTS 360
#define MAX_RUNS 100000
#define MAX_SHAPES 8

/* ---- options ---- */

struct shape {
    int64_t interval_ms; /* between points */
    int points;          /* points per series per frame */
};

struct opts {
    int hosts;
    int minutes; /* of data, from T0 */
    struct shape shape;
    int batch; /* frames per transaction */
    int runs;
    double budget_s; /* per query case */
    const char *dir;
    int size_hosts;   /* the shape sweep's fleet */
    int size_minutes; /* of data in the shape sweep's stores (0: minutes) */
    struct shape shapes[MAX_SHAPES];
    int nshapes;
    bool compare_main; /* the fleet store too is compared with a no_rollups one */
    int steady_days;   /* of the measured steady state's store (0: none) */
    int steady_hosts;
    struct shape steady_shape;
    int64_t build_every_ms; /* the builder runs every so much of the data's time (0: at the end) */
    const char *spool_out;  /* write the steady fleet's frames here (an agent's spool) instead */
    int spool_minutes;
};

/* ---- frames ---- */

/* One host's frame, reused for every flush: the store copies what it keeps. */
struct host {
    Strata__V1__Frame f;
    Strata__V1__Agent agent;
    Strata__V1__Series s[NSER];
    Strata__V1__Series *sp[NSER];
    Strata__V1__Label route;
    Strata__V1__Label *lp[1];
    uint8_t id[16];
    char name[32];
    int64_t iv[2][MAX_FRAME_POINTS];
    Strata__V1__Sketch *sk[MAX_FRAME_POINTS];
};

static Strata__V1__Sketch pool[POOL];

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static double rng_unit(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) / 9007199254740992.0;
}

/* POOL sketches of LAT_PER_POINT latencies each, log-normal around 30..130
 * ms: what one 10 s point of a busy route holds. Hosts share them. */
static int pool_build(void)
{
    uint64_t r = 0x9e3779b97f4a7c15ULL;
    for (int i = 0; i < POOL; i++) {
        st_sketch *sk;
        double base = 0.03 + 0.1 * (double)i / POOL;
        int rv = st_sketch_new(0, &sk);
        for (int k = 0; rv == ST_OK && k < LAT_PER_POINT; k++) {
            double g = rng_unit(&r) + rng_unit(&r) + rng_unit(&r) - 1.5;
            rv = st_sketch_insert(sk, base * exp(0.8 * g));
        }
        strata__v1__sketch__init(&pool[i]);
        rv = rv == ST_OK ? st_sketch_to_proto(sk, &pool[i]) : rv;
        st_sketch_free(sk);
        if (rv != ST_OK) {
            return rv;
        }
    }
    return ST_OK;
}

static void host_init(struct host *h, int idx)
{
    static const char *const names[NSER] = {"http.server.duration", "http.server.requests",
                                            "host.cpu.utilization"};
    static const int kinds[NSER] = {STRATA__V1__KIND__DISTRIBUTION, STRATA__V1__KIND__COUNTER,
                                    STRATA__V1__KIND__GAUGE};
    static const char *const units[NSER] = {"s", "", "1"};
    memset(h, 0, sizeof(*h));
    strata__v1__frame__init(&h->f);
    strata__v1__agent__init(&h->agent);
    strata__v1__label__init(&h->route);
    snprintf(h->name, sizeof(h->name), "app-%04d", idx);
    memcpy(h->id, &idx, sizeof(idx));
    h->id[15] = 0x5a;
    h->agent.host = h->name;
    h->agent.role = STRATA__V1__ROLE__APP;
    h->route.key = "route";
    h->route.value = "/api";
    h->lp[0] = &h->route;
    h->f.agent_id.data = h->id;
    h->f.agent_id.len = 16;
    h->f.agent = &h->agent;
    h->f.series = h->sp;
    h->f.n_series = NSER;
    for (int i = 0; i < NSER; i++) {
        Strata__V1__Series *s = &h->s[i];
        strata__v1__series__init(s);
        s->name = (char *)names[i];
        s->unit = (char *)units[i];
        s->kind = kinds[i];
        s->layer = STRATA__V1__LAYER__INFRASTRUCTURE;
        if (i < 2) {
            s->labels = h->lp;
            s->n_labels = 1;
        }
        h->sp[i] = s;
    }
    h->s[0].sketches = h->sk;
    h->s[1].ivalues = h->iv[0];
    h->s[2].ivalues = h->iv[1];
    h->s[2].scale = 4;
}

/* Fills the host's frame for the points from t; returns the samples. */
static uint64_t host_fill(struct host *h, int idx, const struct shape *sh, int64_t t)
{
    uint64_t r = (uint64_t)(t / sh->interval_ms) * 2654435761ULL + (uint64_t)idx * 40503ULL + 1;
    int64_t prev_req = 0;
    int64_t prev_cpu = 0;
    h->f.seq++;
    h->f.sent_unix_ms = t + sh->interval_ms * sh->points;
    for (int i = 0; i < NSER; i++) {
        h->s[i].start_unix_ms = t;
        h->s[i].interval_ms = (uint32_t)sh->interval_ms;
    }
    h->s[0].n_sketches = (size_t)sh->points;
    h->s[1].n_ivalues = (size_t)sh->points;
    h->s[2].n_ivalues = (size_t)sh->points;
    for (int p = 0; p < sh->points; p++) {
        int64_t req = (int64_t)(sh->interval_ms / 20) + (int64_t)(rng_next(&r) % 64);
        int64_t cpu = 2000 + (int64_t)(idx % 40) * 100 + (int64_t)(rng_next(&r) % 500);
        h->sk[p] = &pool[(rng_next(&r) >> 7) % POOL];
        h->iv[0][p] = req - prev_req; /* ivalues are deltas */
        h->iv[1][p] = cpu - prev_cpu;
        prev_req = req;
        prev_cpu = cpu;
    }
    return (uint64_t)NSER * (uint64_t)sh->points;
}

/* ---- loading ---- */

struct loaded {
    st_store *st;
    uint64_t samples;
    uint64_t frames;
    double load_s;
    double build_s;
    int slices;
    int64_t now;
    int64_t end;
    struct st_store_stats stats;
};

static int apply_frame(st_store_txn *t, const st_frame *f, int64_t now)
{
    bool dup = false;
    int rv = st_store_apply(t, f, now, &dup);
    return rv == ST_OK && dup ? ST_EINVAL : rv;
}

static int load_fleet(st_store *st, const struct opts *o, const struct shape *sh, int hosts,
                      struct loaded *ld)
{
    struct host *hs = calloc((size_t)hosts, sizeof(*hs));
    st_store_txn *t = NULL;
    int64_t step = sh->interval_ms * sh->points;
    int64_t next_build = T0 + o->build_every_ms;
    int inb = 0;
    int rv = hs != NULL ? ST_OK : ST_ENOMEM;
    for (int h = 0; h < hosts && rv == ST_OK; h++) {
        host_init(&hs[h], h);
    }
    ld->end = T0 + (int64_t)o->minutes * MIN_MS;
    for (int64_t ts = T0; ts < ld->end && rv == ST_OK; ts += step) {
        if (o->build_every_ms > 0 && ts >= next_build) {
            /* as on a live collector: the builder, retention and
             * compaction keep up with the data */
            if (t != NULL) {
                rv = st_store_commit(t);
                t = NULL;
                inb = 0;
            }
            ld->now = ts;
            rv = rv == ST_OK ? build_to(st, ld->now, &ld->slices) : rv;
            next_build += o->build_every_ms;
        }
        for (int h = 0; h < hosts && rv == ST_OK; h++) {
            ld->samples += host_fill(&hs[h], h, sh, ts);
            if (t == NULL && (rv = st_store_begin(st, &t)) != ST_OK) {
                break;
            }
            rv = apply_frame(t, &hs[h].f, ts + step);
            ld->frames++;
            if (rv == ST_OK && ++inb >= o->batch) {
                rv = st_store_commit(t);
                t = NULL;
                inb = 0;
            }
        }
    }
    if (t != NULL) {
        rv = rv == ST_OK ? st_store_commit(t) : (st_store_abort(t), rv);
    }
    free(hs);
    return rv;
}

static int open_load(const struct opts *o, const struct shape *sh, int hosts, bool no_rollups,
                     const char *dir, struct loaded *ld)
{
    struct st_store_opts so = {.dir = dir,
                               .map_size = 64ULL << 30,
                               .max_map_size = 1ULL << 40,
                               .no_sync = true,
                               .no_rollups = no_rollups};
    int64_t t0;
    int rv;
    memset(ld, 0, sizeof(*ld));
    if ((rv = st_store_open(&so, &ld->st)) != ST_OK) {
        return rv;
    }
    t0 = st_time_mono_ns();
    rv = load_fleet(ld->st, o, sh, hosts, ld);
    ld->load_s = (double)(st_time_mono_ns() - t0) / 1e9;
    /* A little past the last point: the last minutes are still open, as
     * they would be on a live collector. */
    ld->now = ld->end + 5123;
    t0 = st_time_mono_ns();
    rv = rv == ST_OK ? build_to(ld->st, ld->now, &ld->slices) : rv;
    ld->build_s = (double)(st_time_mono_ns() - t0) / 1e9;
    return rv == ST_OK ? st_store_stats(ld->st, &ld->stats) : rv;
}

/* ---- bytes per resolution ---- */

static const char *const metric_names[NSER] = {"http.server.duration", "http.server.requests",
                                               "host.cpu.utilization"};

/* Each metric is one kind: metric i counts under kind i of sizes. */
static int measure_sizes(st_store *st, const struct loaded *ld, struct sizes *z)
{
    int rv = ST_OK;
    sizes_init(z, T0, ld->end, &ld->stats);
    for (z->cur = 0; z->cur < NSER && rv == ST_OK; z->cur++) {
        rv = st_store_walk_entries(st, metric_names[z->cur], size_entry, z);
    }
    return rv;
}

/* ---- queries ---- */

struct qcase {
    const char *name;
    const char *by;
    const char *step;
    int64_t from;
    int64_t to;
};

static int run_query(st_store *st, const struct qcase *c, int64_t now, char *res, size_t reslen,
                     size_t *groups)
{
    st_qparam p[6];
    char from[32];
    char to[32];
    size_t n = 0;
    st_query q;
    json_t *out = NULL;
    char err[256];
    int rv;
    snprintf(from, sizeof(from), "%" PRId64, c->from);
    snprintf(to, sizeof(to), "%" PRId64, c->to);
    p[n++] = (st_qparam){"metric", "http.server.duration"};
    p[n++] = (st_qparam){"agg", "p95"};
    p[n++] = (st_qparam){"from", from};
    p[n++] = (st_qparam){"to", to};
    if (c->by != NULL) {
        p[n++] = (st_qparam){"by", c->by};
    }
    if (c->step != NULL) {
        p[n++] = (st_qparam){"step", c->step};
    }
    if ((rv = st_query_parse(p, n, now, &q, err, sizeof(err))) != ST_OK) {
        fprintf(stderr, "query_bench: %s: %s\n", c->name, err);
        return rv;
    }
    rv = st_query_run(st, &q, &out, err, sizeof(err));
    st_query_release(&q);
    if (rv != ST_OK) {
        fprintf(stderr, "query_bench: %s: %s\n", c->name, err);
        return rv;
    }
    if (res != NULL) {
        snprintf(res, reslen, "%s", json_string_value(json_object_get(out, "resolution")));
        *groups = json_array_size(json_object_get(out, "series"));
    }
    json_decref(out);
    return ST_OK;
}

static int time_case(st_store *st, const struct opts *o, const struct qcase *c, int64_t now)
{
    double *ms = calloc((size_t)o->runs, sizeof(double));
    double *cpu = calloc((size_t)o->runs, sizeof(double));
    char res[16] = "";
    size_t groups = 0;
    int n = 0;
    int64_t start = st_time_mono_ns();
    int rv =
        ms != NULL && cpu != NULL ? run_query(st, c, now, res, sizeof(res), &groups) : ST_ENOMEM;
    while (rv == ST_OK && n < o->runs &&
           (n < 10 || (double)(st_time_mono_ns() - start) / 1e9 < o->budget_s)) {
        int64_t t0 = st_time_mono_ns();
        int64_t c0 = cpu_ns();
        rv = run_query(st, c, now, NULL, 0, NULL);
        cpu[n] = (double)(cpu_ns() - c0) / 1e6;
        ms[n++] = (double)(st_time_mono_ns() - t0) / 1e6;
    }
    if (rv == ST_OK) {
        qsort(ms, (size_t)n, sizeof(double), cmp_double);
        qsort(cpu, (size_t)n, sizeof(double), cmp_double);
        printf("  %-37s %-3s %4zu series %4d runs: p50 %8.2f ms  p99 %8.2f ms  max %8.2f ms  "
               "(CPU p50 %7.2f, p99 %7.2f ms)\n",
               c->name, res, groups, n, pct_sorted(ms, n, 0.5), pct_sorted(ms, n, 0.99), ms[n - 1],
               pct_sorted(cpu, n, 0.5), pct_sorted(cpu, n, 0.99));
        printf("RESULT query case=\"%s\" resolution=%s series=%zu runs=%d p50_ms=%.3f "
               "p99_ms=%.3f max_ms=%.3f cpu_p50_ms=%.3f cpu_p99_ms=%.3f\n",
               c->name, res, groups, n, pct_sorted(ms, n, 0.5), pct_sorted(ms, n, 0.99), ms[n - 1],
               pct_sorted(cpu, n, 0.5), pct_sorted(cpu, n, 0.99));
    }
    free(ms);
    free(cpu);
    return rv;
}

static int bench_queries(const struct opts *o, const struct loaded *ld)
{
    int64_t hour_end = ld->end - ld->end % HOUR_MS;
    int64_t live = ld->end - 22877; /* a wall-clock "now": no boundary */
    int64_t live_min = live - live % MIN_MS;
    struct qcase cases[] = {
        {"fleet p95, last full hour", NULL, NULL, hour_end - HOUR_MS, hour_end},
        {"by=host p95, last full hour", "host", NULL, hour_end - HOUR_MS, hour_end},
        {"by=host p95 step=1m, last full hour", "host", "1m", hour_end - HOUR_MS, hour_end},
        {"fleet p95, last 60 min (to=minute)", NULL, NULL, live_min - HOUR_MS, live_min},
        {"by=host p95, last 60 min (to=minute)", "host", NULL, live_min - HOUR_MS, live_min},
        {"fleet p95, last 60 min (to=now ms)", NULL, NULL, live - HOUR_MS, live},
        {"by=host p95, last 60 min (to=now ms)", "host", NULL, live - HOUR_MS, live},
    };
    int rv = ST_OK;
    printf("== query latency: metric=http.server.duration agg=p95 over %d hosts (parse + run + "
           "free of the JSON answer; serialising it is not included); up to %d runs or %.0f s "
           "per case\n",
           o->hosts, o->runs, o->budget_s);
    for (size_t i = 0; i < ST_ARRAY_LEN(cases) && rv == ST_OK; i++) {
        rv = time_case(ld->st, o, &cases[i], live);
    }
    printf("[target: p99 <= 20 ms for the 1 h p95 of one metric across 1,000 hosts]\n\n");
    return rv;
}

/* ---- reporting store size ---- */

static void print_load(const char *what, const struct loaded *ld)
{
    printf("  %s: %" PRIu64 " frames, %" PRIu64 " samples loaded in %.1f s (%.0f samples/s); "
           "builder %.1f s in %d slices; %" PRIu64 " series, %" PRIu64 " point blocks, %" PRIu64
           " rollup entries; used %.1f MiB, file %.1f MiB\n",
           what, ld->frames, ld->samples, ld->load_s, (double)ld->samples / ld->load_s, ld->build_s,
           ld->slices, ld->stats.series, ld->stats.point_blocks, ld->stats.rollup_entries,
           (double)ld->stats.used_bytes / 1048576.0, (double)ld->stats.file_bytes / 1048576.0);
}

/* The projection's RESULT line for one kind. */
static void print_steady(const char *label, const char *kind, const struct shape *sh,
                         const double day[4][2], double f_raw, double f_roll)
{
    struct steady p;
    project(kind, 2.0 * (double)DAY_MS / (double)sh->interval_ms, day, f_raw, f_roll, &p);
    printf("RESULT steady label=%s kind=%s interval_ms=%" PRId64 " points_per_frame=%d "
           "bytes_per_sample=%.3f raw_part=%.3f rollup_part=%.3f kib_per_series=%.1f\n",
           label, kind, sh->interval_ms, sh->points, p.total / p.held, p.part[0] / p.held,
           (p.total - p.part[0]) / p.held, p.total / 1024);
}

/* Sizes are the pages the databases hold (live bytes): the pages the
 * compaction freed are reused by later writes, so the file's high-water
 * mark after loading everything fresh is not the steady state. */
static void report_sizes(const char *label, const struct shape *sh, const struct loaded *with,
                         const struct loaded *without, const struct sizes *z, int hosts)
{
    double live = (double)with->stats.live_bytes;
    double f_all = lmdb_factor(z, with->stats.live_bytes);
    double f_raw = f_all;
    double f_roll = f_all;
    double n = (double)with->samples;
    printf("  %s: %.0f samples of %" PRId64 " ms, %d per frame: with rollups live %.2f B/sample "
           "(used %.2f, file %.2f)",
           label, n, sh->interval_ms, sh->points, live / n, (double)with->stats.used_bytes / n,
           (double)with->stats.file_bytes / n);
    if (without != NULL) {
        printf("; no_rollups live %.2f B/sample (used %.2f, file %.2f)",
               (double)without->stats.live_bytes / n, (double)without->stats.used_bytes / n,
               (double)without->stats.file_bytes / n);
    }
    printf("\n");
    report_entries(z);
    printf("    LMDB overhead over the entry bytes (live bytes / entry bytes): x%.2f\n", f_all);
    printf("RESULT store label=%s samples=%.0f live_per_sample=%.3f used_per_sample=%.3f "
           "file_per_sample=%.3f",
           label, n, live / n, (double)with->stats.used_bytes / n,
           (double)with->stats.file_bytes / n);
    if (without != NULL) {
        printf(" norollup_live_per_sample=%.3f norollup_used_per_sample=%.3f",
               (double)without->stats.live_bytes / n, (double)without->stats.used_bytes / n);
    }
    printf("\n    steady state with the default retention, per series (B/d compacted|fresh):\n");
    {
        /* "all" is the mean series: every kind has as many series and
         * samples, and a kind may lack a resolution (no stored 10 s rows
         * for counters and gauges) */
        double mean[4][2] = {{0}};
        for (int m = 0; m < NSER; m++) {
            double day[4][2];
            for (int r = 0; r < 4; r++) {
                per_day(z, m, r, (double)hosts, day[r]);
                mean[r][0] += day[r][0] / NSER;
                mean[r][1] += day[r][1] / NSER;
            }
            print_steady(label, kind_names[m], sh, day, f_raw, f_roll);
        }
        print_steady(label, kind_names[NSER], sh, mean, f_raw, f_roll);
    }
}

/* ---- main ---- */

/* Loads a fleet into a store with rollups (and one without when asked),
 * reports its bytes; *keep gets the rollups store when not NULL. */
static int size_run(const struct opts *o, const char *label, const struct shape *sh, int hosts,
                    bool cmp, struct loaded *keep)
{
    char d1[4096];
    char d2[4096];
    struct loaded with;
    struct loaded without;
    struct sizes z;
    int rv;
    snprintf(d1, sizeof(d1), "%s/%s-rollups", o->dir, label);
    snprintf(d2, sizeof(d2), "%s/%s-norollups", o->dir, label);
    rm_rf(d1);
    rm_rf(d2);
    memset(&without, 0, sizeof(without));
    if ((rv = open_load(o, sh, hosts, false, d1, &with)) != ST_OK) {
        fprintf(stderr, "query_bench: loading %s: %s\n", d1, st_strerror(rv));
        return rv;
    }
    print_load("with rollups", &with);
    if (cmp && (rv = open_load(o, sh, hosts, true, d2, &without)) != ST_OK) {
        fprintf(stderr, "query_bench: loading %s: %s\n", d2, st_strerror(rv));
        st_store_close(with.st);
        return rv;
    }
    if (cmp) {
        print_load("no_rollups  ", &without);
    }
    rv = measure_sizes(with.st, &with, &z);
    if (rv == ST_OK) {
        report_sizes(label, sh, &with, cmp ? &without : NULL, &z, hosts);
    }
    st_store_close(without.st);
    rm_rf(d2);
    if (keep != NULL && rv == ST_OK) {
        *keep = with;
        return ST_OK;
    }
    st_store_close(with.st);
    rm_rf(d1);
    return rv;
}

static int parse_shape(const char *s, struct shape *out)
{
    /* "10000x1": interval ms x points per frame */
    char buf[64];
    char *x;
    int64_t iv;
    int64_t pts;
    snprintf(buf, sizeof(buf), "%s", s);
    if ((x = strchr(buf, 'x')) == NULL) {
        return ST_EINVAL;
    }
    *x = '\0';
    if (st_parse_i64(buf, &iv) != ST_OK || st_parse_i64(x + 1, &pts) != ST_OK || iv < 1000 ||
        iv > 60000 || pts < 1 || pts > MAX_FRAME_POINTS) {
        return ST_EINVAL;
    }
    out->interval_ms = iv;
    out->points = (int)pts;
    return ST_OK;
}

static int parse_shapes(const char *list, struct opts *o)
{
    const char *p = list;
    o->nshapes = 0;
    while (*p != '\0') {
        size_t n = strcspn(p, ",");
        char one[64];
        if (n >= sizeof(one) || o->nshapes >= MAX_SHAPES) {
            return ST_EINVAL;
        }
        memcpy(one, p, n);
        one[n] = '\0';
        if (parse_shape(one, &o->shapes[o->nshapes++]) != ST_OK) {
            return ST_EINVAL;
        }
        p += n + (p[n] == ',');
    }
    return ST_OK;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: query_bench [--dir DIR] [--hosts 1000] [--minutes 130] [--shape 10000x1]\n"
            "                   [--batch 200] [--runs 200] [--budget 20] [--compare-main]\n"
            "                   [--size-hosts 50] [--size-shapes 10000x1,10000x6,1000x10]\n"
            "                   [--size-minutes 1080] [--steady-days 31] [--steady-hosts 4]\n"
            "                   [--steady-shape 1000x10] [--spool-out DIR [--spool-minutes 90]]\n"
            "  shape: point interval in ms x points per series per frame\n");
}

static int parse_args(int argc, char **argv, struct opts *o)
{
    static const struct option lo[] = {{"dir", 1, 0, 'd'},
                                       {"hosts", 1, 0, 'h'},
                                       {"minutes", 1, 0, 'm'},
                                       {"shape", 1, 0, 's'},
                                       {"batch", 1, 0, 'b'},
                                       {"runs", 1, 0, 'r'},
                                       {"budget", 1, 0, 'B'},
                                       {"size-hosts", 1, 0, 'H'},
                                       {"size-shapes", 1, 0, 'S'},
                                       {"size-minutes", 1, 0, 'M'},
                                       {"compare-main", 0, 0, 'n'},
                                       {"steady-days", 1, 0, 'D'},
                                       {"steady-hosts", 1, 0, 'T'},
                                       {"steady-shape", 1, 0, 'P'},
                                       {"spool-out", 1, 0, 'O'},
                                       {"spool-minutes", 1, 0, 'N'},
                                       {0, 0, 0, 0}};
    int c;
    int rv = ST_OK;
    while (rv == ST_OK && (c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'd':
            o->dir = optarg;
            break;
        case 'h':
            rv = int_arg(optarg, 1, 100000, &o->hosts);
            break;
        case 'm':
            rv = int_arg(optarg, 62, 60 * 24 * 3, &o->minutes);
            break;
        case 's':
            rv = parse_shape(optarg, &o->shape);
            break;
        case 'b':
            rv = int_arg(optarg, 1, 100000, &o->batch);
            break;
        case 'r':
            rv = int_arg(optarg, 10, MAX_RUNS, &o->runs);
            break;
        case 'B':
            rv = st_parse_double(optarg, &o->budget_s);
            break;
        case 'H':
            rv = int_arg(optarg, 0, 100000, &o->size_hosts);
            break;
        case 'S':
            rv = parse_shapes(optarg, o);
            break;
        case 'M':
            rv = int_arg(optarg, 62, 60 * 24 * 3, &o->size_minutes);
            break;
        case 'n':
            o->compare_main = true;
            break;
        case 'D':
            rv = int_arg(optarg, 0, 60, &o->steady_days);
            break;
        case 'T':
            rv = int_arg(optarg, 1, 1000, &o->steady_hosts);
            break;
        case 'P':
            rv = parse_shape(optarg, &o->steady_shape);
            break;
        case 'O':
            o->spool_out = optarg;
            break;
        case 'N':
            rv = int_arg(optarg, 1, 60 * 24 * 3, &o->spool_minutes);
            break;
        default:
            rv = ST_EINVAL;
        }
    }
    return rv;
}

/* ---- steady state, measured ---- */

/* A small fleet loaded for o->steady_days with the builder, retention and
 * compaction running every data hour, as on a live collector: the store
 * then holds what it holds at steady state (raw and 10 s rows for their 2
 * days, 1 m rows for their 30, day and 30-day merges done), but for the 1 h
 * rows of the days before the data began, which are added at the rate of
 * the compacted 1 h entries it holds. */
static int steady_run(const struct opts *o, const struct shape *sh)
{
    static const char *const names[4] = {"raw", "10s", "1m", "1h"};
    struct opts so = *o;
    struct loaded ld;
    struct sizes z;
    char dir[4096];
    double entries = 0;
    double f;
    int rv;
    so.minutes = o->steady_days * 1440;
    so.build_every_ms = HOUR_MS;
    snprintf(dir, sizeof(dir), "%s/steady-%" PRId64 "x%d", o->dir, sh->interval_ms, sh->points);
    rm_rf(dir);
    if ((rv = open_load(&so, sh, o->steady_hosts, false, dir, &ld)) != ST_OK) {
        fprintf(stderr, "query_bench: loading %s: %s\n", dir, st_strerror(rv));
        return rv;
    }
    print_load("steady", &ld);
    if ((rv = measure_sizes(ld.st, &ld, &z)) != ST_OK) {
        st_store_close(ld.st);
        return rv;
    }
    for (int r = 0; r < 4; r++) {
        entries += (double)all_payload(&z, NSER, r);
    }
    f = (double)ld.stats.live_bytes / entries;
    printf("  %d days of %" PRId64 " ms points, %d per frame, %d hosts: live %.1f MiB, LMDB "
           "overhead x%.2f over the entries; per series, KiB held (1h: held + the rest of 400 "
           "days at its compacted rate):\n",
           o->steady_days, sh->interval_ms, sh->points, o->steady_hosts,
           (double)ld.stats.live_bytes / 1048576.0, f);
    report_entries(&z);
    for (int m = 0; m <= NSER; m++) {
        /* "all" is the mean series */
        double series = m == NSER ? (double)o->steady_hosts * NSER : (double)o->steady_hosts;
        double held = 2.0 * (double)DAY_MS / (double)sh->interval_ms;
        double part[4];
        double total = 0;
        double c1h = z.covered[m][ST_RES_1H][1] / series;
        double days1h = (z.covered[m][ST_RES_1H][0] + z.covered[m][ST_RES_1H][1]) / series / DAY_MS;
        double rate1h = c1h > 0 ? (double)z.payload[m][ST_RES_1H][1] / series / c1h * DAY_MS : 0;
        for (int r = 0; r < 4; r++) {
            part[r] = (double)all_payload(&z, m, r) / series * f;
        }
        part[ST_RES_1H] += rate1h * (400 - days1h) * f;
        printf("    %-12s", kind_names[m]);
        for (int r = 0; r < 4; r++) {
            printf(" %s %7.1f", names[r], part[r] / 1024);
            total += part[r];
        }
        printf(" (1h held %.1f days, %.0f B/day compacted) = %7.1f KiB / %.0f samples = %.2f "
               "B/sample (raw %.2f + rollups %.2f)\n",
               days1h, rate1h, total / 1024, held, total / held, part[0] / held,
               (total - part[0]) / held);
        printf("RESULT steady_measured kind=%s interval_ms=%" PRId64 " points_per_frame=%d "
               "days=%d bytes_per_sample=%.3f raw_part=%.3f rollup_part=%.3f\n",
               kind_names[m], sh->interval_ms, sh->points, o->steady_days, total / held,
               part[0] / held, (total - part[0]) / held);
    }
    st_store_close(ld.st);
    rm_rf(dir);
    return ST_OK;
}

/* ---- the steady fleet's frames as a recording ----
 * The steady store's hosts, shape and data, spool_minutes of them, written
 * as a recording store_real_bench reads (one spool, each frame under its
 * host's agent id): its steady state from merged entries can then be set
 * against the one measured here over 31 days. */
static int write_spool(const struct opts *o, const struct shape *sh)
{
    struct st_spool_opts so = {.max_bytes = 1ULL << 34, .no_fsync = true};
    struct host *hs = calloc((size_t)o->steady_hosts, sizeof(*hs));
    int64_t step = sh->interval_ms * sh->points;
    int64_t end = T0 + (int64_t)o->spool_minutes * MIN_MS;
    char dir[4096];
    st_spool *sp = NULL;
    st_zctx *z = NULL;
    st_buf enc;
    st_buf env;
    uint64_t frames = 0;
    int rv = hs != NULL ? ST_OK : ST_ENOMEM;
    st_buf_init(&enc, ST_ENV_MAX_PAYLOAD);
    st_buf_init(&env, ST_ENV_MAX_LEN);
    snprintf(dir, sizeof(dir), "%s/spool", o->spool_out);
    so.dir = dir;
    if (rv == ST_OK && ((rv = rm_rf(o->spool_out)) != ST_OK || (rv = st_zctx_new(&z)) != ST_OK ||
                        (rv = st_spool_open(&so, &sp)) != ST_OK)) {
        fprintf(stderr, "query_bench: spool %s: %s\n", dir, st_strerror(rv));
    }
    for (int h = 0; h < o->steady_hosts && rv == ST_OK; h++) {
        host_init(&hs[h], h);
    }
    for (int64_t ts = T0; ts < end && rv == ST_OK; ts += step) {
        for (int h = 0; h < o->steady_hosts && rv == ST_OK; h++) {
            uint64_t seq = st_spool_next_seq(sp);
            (void)host_fill(&hs[h], h, sh, ts);
            hs[h].f.seq = seq;
            hs[h].f.sent_unix_ms = ts + step;
            if ((rv = st_frame_encode(&hs[h].f, &enc)) == ST_OK &&
                (rv = st_envelope_encode(z, hs[h].id, seq, ST_CODEC_ZSTD, 3, enc.data, enc.len,
                                         NULL, 0, &env)) == ST_OK) {
                rv = st_spool_append(sp, seq, env.data, env.len);
                frames++;
            }
        }
    }
    if (rv == ST_OK) {
        printf("  %" PRIu64 " frames of %d hosts, %d min of %" PRId64 " ms points, %d per frame, "
               "written to %s\n",
               frames, o->steady_hosts, o->spool_minutes, sh->interval_ms, sh->points, dir);
    } else {
        fprintf(stderr, "query_bench: writing frames to %s: %s\n", dir, st_strerror(rv));
    }
    st_spool_close(sp);
    st_zctx_free(z);
    st_buf_free(&enc);
    st_buf_free(&env);
    free(hs);
    return rv;
}

int main(int argc, char **argv)
{
    struct opts o = {.hosts = 1000,
                     .minutes = 130,
                     .shape = {10000, 1},
                     .batch = 200,
                     .runs = 200,
                     .budget_s = 8,
                     .dir = NULL,
                     .size_hosts = 50,
                     .compare_main = false,
                     .steady_days = 31,
                     .steady_hosts = 4,
                     .steady_shape = {1000, 10},
                     .spool_minutes = 90};
    char tmp[] = "/tmp/query_bench.XXXXXX";
    struct loaded main_store;
    int rv;
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress as it comes, when piped */
    if (parse_shapes("10000x1,10000x6,1000x10", &o) != ST_OK ||
        parse_args(argc, argv, &o) != ST_OK) {
        usage();
        return 2;
    }
    if (o.dir == NULL && (o.dir = mkdtemp(tmp)) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    if ((rv = pool_build()) != ST_OK) {
        fprintf(stderr, "query_bench: sketches: %s\n", st_strerror(rv));
        return 1;
    }
    if (o.spool_out != NULL) {
        return write_spool(&o, &o.steady_shape) == ST_OK ? 0 : 1;
    }
    printf("== store: %d hosts x %d series (http.server.duration{route} distribution of %d "
           "latencies per point, http.server.requests{route} counter, host.cpu.utilization "
           "gauge), %d min of %" PRId64 " ms points, %d per frame, %d frames per transaction, "
           "no_sync; builder run to completion at the end\n",
           o.hosts, NSER, LAT_PER_POINT, o.minutes, o.shape.interval_ms, o.shape.points, o.batch);
    if ((rv = size_run(&o, "fleet", &o.shape, o.hosts, o.compare_main, &main_store)) != ST_OK) {
        return 1;
    }
    printf("\n");
    rv = bench_queries(&o, &main_store);
    st_store_close(main_store.st);
    {
        char d[4200];
        snprintf(d, sizeof(d), "%s/fleet-rollups", o.dir);
        rm_rf(d);
    }
    if (rv == ST_OK && o.size_hosts > 0 && o.nshapes > 0) {
        /* long enough for closed hours and a closed day of 1 h rows to be
         * compacted, as they are at steady state */
        struct opts so = o;
        so.minutes = o.size_minutes > 0 ? o.size_minutes : o.minutes;
        printf("== store bytes by point shape: %d hosts x %d series, %d min each\n", o.size_hosts,
               NSER, so.minutes);
        for (int i = 0; i < o.nshapes && rv == ST_OK; i++) {
            char label[32];
            snprintf(label, sizeof(label), "shape%" PRId64 "x%d", o.shapes[i].interval_ms,
                     o.shapes[i].points);
            rv = size_run(&so, label, &o.shapes[i], o.size_hosts, true, NULL);
        }
        printf("[target: <= 2 bytes per sample at steady state]\n");
    }
    if (rv == ST_OK && o.steady_days > 0) {
        printf("\n== store bytes at steady state, measured: %d hosts x %d series, %d days, the "
               "builder every data hour\n",
               o.steady_hosts, NSER, o.steady_days);
        rv = steady_run(&o, &o.steady_shape);
        printf("[target: <= 2 bytes per sample at steady state]\n");
    }
    if (strcmp(o.dir, tmp) == 0) {
        rmdir(tmp);
    }
    return rv == ST_OK ? 0 : 1;
}
