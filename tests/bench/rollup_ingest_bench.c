/* rollup_ingest_bench: what the rollup builder costs ingest. In one process,
 * the same frames are applied into two stores, one with rollups (a 20 ms
 * st_store_maintain slice after every batch, as the collector's writer
 * thread does) and one with no_rollups, alternating which goes first; with
 * durable commits and then with no_sync. It prints samples/s and their
 * ratio; it asserts nothing. See BENCHMARKS.md. */
#include "err.h"
#include "frame.h"
#include "sketch.h"
#include "store.h"
#include "timeutil.h"
#include "util.h"
#include "bench_util.h"

#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define T0 1800000000000LL /* on an hour */
#define INTERVAL_MS 1000
#define MAX_SERIES 1000
#define MAX_POINTS 60
#define MAX_RUNS 15
#define SLICE_MS 20 /* the writer thread's MAINT_SLICE_MS */
#define POOL 16
#define MAX_LABELS 2
#define GRACE_MS 30000 /* the store's default grace */

/* ---- the series every agent sends ---- */

struct row {
    const char *name;
    int kind;
    const char *k1;
    const char *const *v1;
    const char *k2;
    const char *const *v2;
};

static const char *const ROUTES[] = {"/",          "/api/cart", "/api/search",
                                     "/api/login", "/product",  "/api/orders",
                                     "/static",    "/ws",       NULL};
static const char *const CLASSES[] = {"2xx", "4xx", "5xx", NULL};
static const char *const CACHES[] = {"nginx", "redis", "varnish", NULL};
static const char *const RESULTS[] = {"hit", "miss", "pass", "stale", "expired", NULL};
static const char *const PROCS[] = {"nginx",     "postgres", "redis",   "node", "varnish",
                                    "memcached", "php-fpm",  "haproxy", NULL};
static const char *const QUERIES[] = {"q1a2", "q7f3", "q9c0", "q2be", "q44d", "q5e1",
                                      "q81a", "q0dd", "q3f9", "q6b2", NULL};
static const char *const TABLES[] = {"orders", "users", "products", "sessions",
                                     "events", "carts", NULL};
static const char *const NONE[] = {"", NULL};

#define C_ STRATA__V1__KIND__COUNTER
#define G_ STRATA__V1__KIND__GAUGE
#define D_ STRATA__V1__KIND__DISTRIBUTION

/* The collector's series mix: a few distributions, counters, gauges. Rows
 * expand over their label values; the last row pads to --series. */
static const struct row CATALOG[] = {
    {"http.server.duration", D_, "route", ROUTES, NULL, NULL},
    {"http.server.requests", C_, "route", ROUTES, "status_class", CLASSES},
    {"http.server.errors", C_, "route", ROUTES, NULL, NULL},
    {"cache.requests", C_, "cache", CACHES, "result", RESULTS},
    {"tcp.retrans_segs", C_, NULL, NONE, NULL, NULL},
    {"tcp.out_segs", C_, NULL, NONE, NULL, NULL},
    {"tcp.estab_resets", C_, NULL, NONE, NULL, NULL},
    {"tcp.active_opens", C_, NULL, NONE, NULL, NULL},
    {"tcp.curr_estab", G_, NULL, NONE, NULL, NULL},
    {"host.cpu.utilization", G_, NULL, NONE, NULL, NULL},
    {"host.mem.available", G_, NULL, NONE, NULL, NULL},
    {"mem.rss", G_, "process", PROCS, NULL, NULL},
    {"mem.rss.peak", G_, "process", PROCS, NULL, NULL},
    {"db.statement.calls", C_, "queryid", QUERIES, NULL, NULL},
    {"db.statement.time", C_, "queryid", QUERIES, NULL, NULL},
    {"db.statement.rows", C_, "queryid", QUERIES, NULL, NULL},
    {"db.table.seq_scan", C_, "table", TABLES, NULL, NULL},
    {"db.table.idx_scan", C_, "table", TABLES, NULL, NULL},
    {"db.table.live_tup", G_, "table", TABLES, NULL, NULL},
    {"app.events", C_, "name", NULL, NULL, NULL},
};

struct opts {
    int agents;
    int series;
    int points;
    int rounds; /* frames per agent */
    int batch;  /* frames per transaction */
    int runs;
    bool durable;
    bool nosync;
    const char *dir;
};

/* The frames: every agent sends the same series (its host makes them its
 * own), so one Series array serves all; a round moves its start time. */
struct fleet {
    Strata__V1__Series *s;
    Strata__V1__Series **sp;
    Strata__V1__Label *labels;
    Strata__V1__Label **lptr;
    char (*values)[24];
    int64_t *iv;
    Strata__V1__Sketch pool[POOL];
    Strata__V1__Sketch **sk;
    Strata__V1__Frame *f;
    Strata__V1__Agent *a;
    uint8_t (*id)[16];
    char (*host)[32];
    int n;
    int agents;
    int points;
};

static int pool_build(Strata__V1__Sketch *pool)
{
    uint64_t r = 88172645463325252ULL;
    for (int i = 0; i < POOL; i++) {
        st_sketch *sk;
        int rv = st_sketch_new(0, &sk);
        for (int k = 0; rv == ST_OK && k < 50; k++) {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            rv = st_sketch_insert(sk, 0.02 + 0.2 * (double)(r >> 11) / 9007199254740992.0);
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

static size_t count_of(const char *const *v)
{
    size_t n = 0;
    while (v != NULL && v[n] != NULL) {
        n++;
    }
    return n;
}

/* Series i of the mix: its row and label values. */
static void series_at(struct fleet *fl, int i, const struct row *r, size_t a, size_t b)
{
    Strata__V1__Series *s = &fl->s[i];
    Strata__V1__Label *l = &fl->labels[i * MAX_LABELS];
    Strata__V1__Label **lp = &fl->lptr[i * MAX_LABELS];
    strata__v1__series__init(s);
    s->name = (char *)r->name;
    s->unit = (char *)"";
    s->kind = r->kind;
    s->interval_ms = INTERVAL_MS;
    lp[0] = &l[0];
    lp[1] = &l[1];
    s->labels = r->k1 != NULL ? lp : NULL;
    if (r->k1 != NULL) {
        strata__v1__label__init(&l[0]);
        l[0].key = (char *)r->k1;
        if (r->v1 != NULL) {
            l[0].value = (char *)r->v1[a];
        } else {
            snprintf(fl->values[i], sizeof(fl->values[i]), "e%zu", a);
            l[0].value = fl->values[i];
        }
        s->n_labels = 1;
    }
    if (r->k2 != NULL) {
        strata__v1__label__init(&l[1]);
        l[1].key = (char *)r->k2;
        l[1].value = (char *)r->v2[b];
        s->n_labels = 2;
    }
    if (r->kind == D_) {
        s->sketches = &fl->sk[(size_t)i * (size_t)fl->points];
        s->n_sketches = (size_t)fl->points;
        for (int p = 0; p < fl->points; p++) {
            s->sketches[p] = &fl->pool[(i + p) % POOL];
        }
    } else {
        s->ivalues = &fl->iv[(size_t)i * (size_t)fl->points];
        s->n_ivalues = (size_t)fl->points;
        for (int p = 0; p < fl->points; p++) {
            s->ivalues[p] = p == 0 ? 1000 + i * 37 : (p * 7 + i) % 13 - 6;
        }
    }
    fl->sp[i] = s;
}

static int fleet_series(struct fleet *fl)
{
    int i = 0;
    for (size_t r = 0; r < ST_ARRAY_LEN(CATALOG) && i < fl->n; r++) {
        const struct row *row = &CATALOG[r];
        size_t na = row->v1 != NULL ? count_of(row->v1) : (size_t)fl->n;
        size_t nb = row->k2 != NULL ? count_of(row->v2) : 1;
        for (size_t a = 0; a < na && i < fl->n; a++) {
            for (size_t b = 0; b < nb && i < fl->n; b++) {
                series_at(fl, i++, row, a, b);
            }
        }
    }
    return i == fl->n ? ST_OK : ST_EINVAL;
}

static int fleet_new(const struct opts *o, struct fleet *fl)
{
    size_t ns = (size_t)o->series;
    size_t na = (size_t)o->agents;
    memset(fl, 0, sizeof(*fl));
    fl->n = o->series;
    fl->agents = o->agents;
    fl->points = o->points;
    fl->s = calloc(ns, sizeof(*fl->s));
    fl->sp = calloc(ns, sizeof(*fl->sp));
    fl->labels = calloc(ns * MAX_LABELS, sizeof(*fl->labels));
    fl->lptr = calloc(ns * MAX_LABELS, sizeof(*fl->lptr));
    fl->values = calloc(ns, sizeof(*fl->values));
    fl->iv = calloc(ns * (size_t)o->points, sizeof(*fl->iv));
    fl->sk = calloc(ns * (size_t)o->points, sizeof(*fl->sk));
    fl->f = calloc(na, sizeof(*fl->f));
    fl->a = calloc(na, sizeof(*fl->a));
    fl->id = calloc(na, sizeof(*fl->id));
    fl->host = calloc(na, sizeof(*fl->host));
    if (fl->s == NULL || fl->sp == NULL || fl->labels == NULL || fl->lptr == NULL ||
        fl->values == NULL || fl->iv == NULL || fl->sk == NULL || fl->f == NULL || fl->a == NULL ||
        fl->id == NULL || fl->host == NULL || pool_build(fl->pool) != ST_OK) {
        return ST_ENOMEM;
    }
    if (fleet_series(fl) != ST_OK) {
        return ST_EINVAL;
    }
    for (size_t a = 0; a < na; a++) {
        strata__v1__frame__init(&fl->f[a]);
        strata__v1__agent__init(&fl->a[a]);
        snprintf(fl->host[a], sizeof(fl->host[a]), "host-%05zu", a);
        memcpy(fl->id[a], &a, sizeof(a));
        fl->id[a][15] = 0xa7;
        fl->a[a].host = fl->host[a];
        fl->a[a].role = STRATA__V1__ROLE__APP;
        fl->f[a].agent = &fl->a[a];
        fl->f[a].agent_id.data = fl->id[a];
        fl->f[a].agent_id.len = 16;
        fl->f[a].series = fl->sp;
        fl->f[a].n_series = ns;
    }
    return ST_OK;
}

static void fleet_free(struct fleet *fl)
{
    for (int i = 0; i < POOL; i++) {
        if (fl->pool[i].counts != NULL || fl->pool[i].neg_counts != NULL) {
            st_sketch_proto_clear(&fl->pool[i]);
        }
    }
    free(fl->s);
    free(fl->sp);
    free(fl->labels);
    free(fl->lptr);
    free(fl->values);
    free(fl->iv);
    free(fl->sk);
    free(fl->f);
    free(fl->a);
    free(fl->id);
    free(fl->host);
}

/* Moves the shared series to round r. */
static void fleet_round(struct fleet *fl, int r)
{
    int64_t start = T0 + (int64_t)r * fl->points * INTERVAL_MS;
    for (int i = 0; i < fl->n; i++) {
        fl->s[i].start_unix_ms = start;
    }
    for (int a = 0; a < fl->agents; a++) {
        fl->f[a].seq = (uint64_t)r + 1;
        fl->f[a].sent_unix_ms = start + fl->points * INTERVAL_MS;
    }
}

/* ---- one run into one store ---- */

struct result {
    double ingest_s; /* apply + commit + the interleaved slices */
    double cpu_s;    /* of it, this thread's CPU time */
    double other_s;  /* CPU time of the store's other threads meanwhile */
    double drain_s;  /* the builder's remaining work after the last frame */
    double maint_s;  /* of ingest_s, in maintain slices */
    int slices;
    int64_t lag_ms; /* end of data - minute watermark when the last frame is in */
    uint64_t samples;
};

static int commit_batch(st_store_txn **t)
{
    int rv = st_store_commit(*t);
    *t = NULL;
    return rv;
}

/* One slice after a batch, as the writer does; time spent is counted. */
static int slice(st_store *st, int64_t now, struct result *res)
{
    bool more = false;
    int64_t t0 = st_time_mono_ns();
    int rv = st_store_maintain(st, now, SLICE_MS, &more);
    res->maint_s += (double)(st_time_mono_ns() - t0) / 1e9;
    res->slices++;
    return rv;
}

static int ingest(st_store *st, struct fleet *fl, const struct opts *o, bool rollups,
                  struct result *res)
{
    st_store_txn *t = NULL;
    int inb = 0;
    int rv = ST_OK;
    int64_t now = T0;
    for (int r = 0; r < o->rounds && rv == ST_OK; r++) {
        fleet_round(fl, r);
        now = T0 + (int64_t)(r + 1) * fl->points * INTERVAL_MS;
        for (int a = 0; a < fl->agents && rv == ST_OK; a++) {
            bool dup = false;
            if (t == NULL && (rv = st_store_begin(st, &t)) != ST_OK) {
                break;
            }
            rv = st_store_apply(t, &fl->f[a], now, &dup);
            rv = rv == ST_OK && dup ? ST_EINVAL : rv;
            res->samples += (uint64_t)fl->n * (uint64_t)fl->points;
            if (rv == ST_OK && ++inb >= o->batch) {
                inb = 0;
                rv = commit_batch(&t);
                rv = rv == ST_OK && rollups ? slice(st, now, res) : rv;
            }
        }
    }
    if (t != NULL) {
        rv = rv == ST_OK ? commit_batch(&t) : (st_store_abort(t), rv);
        rv = rv == ST_OK && rollups ? slice(st, now, res) : rv;
    }
    return rv;
}

/* CPU time of the whole process: the store's builder thread included. */
static int64_t process_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int rm_rf(const char *dir)
{
    char cmd[4200];
    if (snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir) >= (int)sizeof(cmd)) {
        return ST_EINVAL;
    }
    return system(cmd) == 0 ? ST_OK : ST_EIO;
}

static int one_run(const struct opts *o, struct fleet *fl, bool rollups, bool nosync,
                   struct result *res)
{
    char dir[4200];
    struct st_store_opts so = {.dir = dir,
                               .map_size = 32ULL << 30,
                               .max_map_size = 1ULL << 40,
                               .no_sync = nosync,
                               .no_rollups = !rollups};
    st_store *st = NULL;
    struct st_store_stats stats;
    int64_t end = T0 + (int64_t)o->rounds * o->points * INTERVAL_MS;
    int64_t t0;
    int64_t c0;
    int64_t p0;
    bool more = true;
    int rv;
    memset(res, 0, sizeof(*res));
    snprintf(dir, sizeof(dir), "%s/%s", o->dir, rollups ? "rollups" : "norollups");
    rm_rf(dir);
    if ((rv = st_store_open(&so, &st)) != ST_OK) {
        return rv;
    }
    t0 = st_time_mono_ns();
    c0 = cpu_ns();
    p0 = process_cpu_ns();
    rv = ingest(st, fl, o, rollups, res);
    res->ingest_s = (double)(st_time_mono_ns() - t0) / 1e9;
    res->cpu_s = (double)(cpu_ns() - c0) / 1e9;
    res->other_s = (double)(process_cpu_ns() - p0) / 1e9 - res->cpu_s;
    if (rv == ST_OK && rollups && st_store_stats(st, &stats) == ST_OK) {
        res->lag_ms = end - stats.wm_1m;
    }
    /* Every minute of the data closed: what the builder still owes. */
    t0 = st_time_mono_ns();
    while (rv == ST_OK && rollups && more) {
        rv = st_store_maintain(st, end + 60000 + GRACE_MS, SLICE_MS, &more);
    }
    res->drain_s = (double)(st_time_mono_ns() - t0) / 1e9;
    st_store_close(st);
    rm_rf(dir);
    return rv;
}

/* ---- report ---- */

static int bench_mode(const struct opts *o, struct fleet *fl, bool nosync)
{
    double on[MAX_RUNS];
    double on_all[MAX_RUNS];
    double off[MAX_RUNS];
    double ratio[MAX_RUNS];
    double ratio_all[MAX_RUNS];
    double ratio_cpu[MAX_RUNS];
    int rv = ST_OK;
    printf("== %s commits (%s)\n", nosync ? "no_sync" : "durable",
           nosync ? "MDB_NOSYNC: no fsync" : "fsync on every commit, maintain slices included");
    for (int i = 0; i < o->runs && rv == ST_OK; i++) {
        struct result rr[2];
        bool first_rollups = i % 2 == 0;
        for (int k = 0; k < 2 && rv == ST_OK; k++) {
            bool rollups = (k == 0) == first_rollups;
            rv = one_run(o, fl, rollups, nosync, &rr[rollups ? 0 : 1]);
        }
        if (rv != ST_OK) {
            break;
        }
        on[i] = (double)rr[0].samples / rr[0].ingest_s;
        on_all[i] = (double)rr[0].samples / (rr[0].ingest_s + rr[0].drain_s);
        off[i] = (double)rr[1].samples / rr[1].ingest_s;
        ratio[i] = on[i] / off[i];
        ratio_all[i] = on_all[i] / off[i];
        ratio_cpu[i] = rr[1].cpu_s / rr[0].cpu_s;
        printf("  run %d: ingest thread CPU %.2f s without rollups, %.2f s with (ratio %.3f); "
               "other threads meanwhile %.2f s with rollups\n",
               i + 1, rr[1].cpu_s, rr[0].cpu_s, ratio_cpu[i], rr[0].other_s);
        printf("  run %d (%s first): no_rollups %.0f samples/s (%.2f s); rollups %.0f samples/s "
               "(%.2f s, of it %.2f s in %d slices; builder %.0f s of data behind at the last "
               "frame, drained in %.2f s more: %.0f samples/s with it); ratio %.3f, with the "
               "drain %.3f\n",
               i + 1, first_rollups ? "rollups" : "no_rollups", off[i], rr[1].ingest_s, on[i],
               rr[0].ingest_s, rr[0].maint_s, rr[0].slices, (double)rr[0].lag_ms / 1000.0,
               rr[0].drain_s, on_all[i], ratio[i], ratio_all[i]);
    }
    if (rv == ST_OK) {
        double mr = median(ratio, o->runs);
        double mra = median(ratio_all, o->runs);
        printf("  median of %d: no_rollups %.0f samples/s, rollups %.0f samples/s (%.0f with the "
               "drain); rollups/no_rollups %.3f (%.1f %% slower), with the drain %.3f (%.1f %% "
               "slower)\n",
               o->runs, median(off, o->runs), median(on, o->runs), median(on_all, o->runs), mr,
               100 * (1 - mr), mra, 100 * (1 - mra));
        printf("  median ingest thread CPU ratio (no_rollups / rollups) %.3f\n",
               median(ratio_cpu, o->runs));
        printf("RESULT rollup_ingest mode=%s norollups_sps=%.0f rollups_sps=%.0f "
               "rollups_drained_sps=%.0f ratio=%.4f ratio_drained=%.4f ratio_cpu=%.4f\n",
               nosync ? "nosync" : "durable", median(off, o->runs), median(on, o->runs),
               median(on_all, o->runs), mr, mra, median(ratio_cpu, o->runs));
    }
    return rv;
}

/* ---- main ---- */

static int parse_args(int argc, char **argv, struct opts *o)
{
    static const struct option lo[] = {
        {"dir", 1, 0, 'd'},    {"agents", 1, 0, 'a'}, {"series", 1, 0, 's'},
        {"points", 1, 0, 'p'}, {"rounds", 1, 0, 'r'}, {"batch", 1, 0, 'b'},
        {"runs", 1, 0, 'n'},   {"modes", 1, 0, 'm'},  {0, 0, 0, 0}};
    int c;
    int rv = ST_OK;
    while (rv == ST_OK && (c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'd':
            o->dir = optarg;
            break;
        case 'a':
            rv = int_arg(optarg, 1, 100000, &o->agents);
            break;
        case 's':
            rv = int_arg(optarg, 1, MAX_SERIES, &o->series);
            break;
        case 'p':
            rv = int_arg(optarg, 1, MAX_POINTS, &o->points);
            break;
        case 'r':
            rv = int_arg(optarg, 1, 100000, &o->rounds);
            break;
        case 'b':
            rv = int_arg(optarg, 1, 100000, &o->batch);
            break;
        case 'n':
            rv = int_arg(optarg, 1, MAX_RUNS, &o->runs);
            break;
        case 'm':
            o->durable = strstr(optarg, "durable") != NULL;
            o->nosync = strstr(optarg, "nosync") != NULL;
            break;
        default:
            rv = ST_EINVAL;
        }
    }
    return rv;
}

int main(int argc, char **argv)
{
    struct opts o = {.agents = 500,
                     .series = 200,
                     .points = 10,
                     .rounds = 12,
                     .batch = 250,
                     .runs = 3,
                     .durable = true,
                     .nosync = true,
                     .dir = NULL};
    char tmp[] = "/tmp/rollup_ingest_bench.XXXXXX";
    struct fleet fl;
    int rv;
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress as it comes, when piped */
    if (parse_args(argc, argv, &o) != ST_OK) {
        fprintf(stderr, "usage: rollup_ingest_bench [--dir DIR] [--agents 500] [--series 200] "
                        "[--points 10] [--rounds 12] [--batch 250] [--runs 3] "
                        "[--modes durable,nosync]\n");
        return 2;
    }
    if (o.dir == NULL && (o.dir = mkdtemp(tmp)) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    if ((rv = fleet_new(&o, &fl)) != ST_OK) {
        fprintf(stderr, "rollup_ingest_bench: frames: %s\n", st_strerror(rv));
        return 1;
    }
    printf("== rollup cost on ingest: %d agents x %d series x %d points of %d ms per frame "
           "(%d samples), %d frames per agent (%d s of data, %" PRIu64 " samples per store), %d "
           "frames per transaction; frames pre-built (a round only moves their start time); "
           "fresh stores, the order alternates between runs; with rollups one %d ms "
           "st_store_maintain slice follows every commit, as in the collector's writer thread\n",
           o.agents, o.series, o.points, INTERVAL_MS, o.series * o.points, o.rounds,
           o.rounds * o.points * INTERVAL_MS / 1000,
           (uint64_t)o.agents * (uint64_t)o.rounds * (uint64_t)o.series * (uint64_t)o.points,
           o.batch, SLICE_MS);
    rv = o.durable ? bench_mode(&o, &fl, false) : ST_OK;
    rv = rv == ST_OK && o.nosync ? bench_mode(&o, &fl, true) : rv;
    printf("[target: ingest with rollups within 10 %% of ingest without them (ratio >= 0.90)]\n");
    fleet_free(&fl);
    if (strcmp(o.dir, tmp) == 0) {
        rmdir(tmp);
    }
    if (rv != ST_OK) {
        fprintf(stderr, "rollup_ingest_bench: %s\n", st_strerror(rv));
        return 1;
    }
    return 0;
}
