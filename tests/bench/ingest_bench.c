/* ingest_bench: a load generator for strata-collector. It simulates N agents,
 * each with a realistic mix of series, encodes their frames exactly as the
 * agent does (Frame -> st_frame_encode -> zstd envelope) and sends them over
 * nng req0 to a real collector; or, with --bytes, only measures wire bytes
 * per sample. It prints figures; it asserts nothing (benchmarks are not
 * tests). See tests/bench/run.sh and BENCHMARKS.md. */
#include "buf.h"
#include "envelope.h"
#include "err.h"
#include "frame.h"
#include "timeutil.h"
#include "util.h"

#include <dirent.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/http/http.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define INTERVAL_MS 1000
#define MAX_POINTS 600
#define MAX_LABELS 3
#define MAX_TASKS 512
#define MAX_BUCKETS 16
#define METRICS_MAX (256u << 20)
#define DRAIN_MS 15000
#define PAGE 4096
#define SCHED_MS 5
#define METRICS_TIMEOUT_MS 120000

/* ---- options ---- */

struct opts {
    const char *url;
    const char *metrics_url;
    int collector_pid;
    uint64_t agents;
    uint64_t series;
    uint64_t points;
    uint64_t inflight;
    uint64_t sockets; /* 0: one per agent */
    double warmup_s;
    double duration_s;
    double max_rate; /* --pace max: samples/s the pre-encoded frames must last for */
    int level;
    int codec; /* envelope codec: 2 (the wire dictionary), as agents send to this collector */
    bool live;
    bool pace_max; /* send as fast as acks come back, timestamps a day back */
    bool progress;
    const char *bytes_list; /* --bytes P,P,...: wire bytes only, no network */
    const char *dump_dir;   /* --dump DIR: with --bytes, also write the raw frames */
    uint64_t seed;
};

/* ---- the series catalog ---- */

enum dyn { D_REQ, D_ERR, D_SEG, D_BYTES, D_MEM, D_HOSTMEM, D_CONN, D_STATIC, D_RATIO };

struct cat_row {
    const char *name;
    int kind; /* Strata__V1__Kind */
    int scale;
    const char *unit;
    int layer;
    enum dyn dyn;
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
static const char *const QUERIES[] = {"q1a2", "q7f3", "q9c0", "q2be", "q44d", "q5e1",
                                      "q81a", "q0dd", "q3f9", "q6b2", NULL};
static const char *const TABLES[] = {"orders", "users", "products", "sessions",
                                     "events", "carts", NULL};
static const char *const DATABASES[] = {"shop", "auth", NULL};
static const char *const FUNCS[] = {"getCart",   "search", "login",  "checkout", "listItems",
                                    "addToCart", "render", "notify", NULL};
static const char *const CHANNELS[] = {"prices", "orders", "chat", "presence",
                                       "stock",  "alerts", NULL};
static const char *const PROCS[] = {"nginx",     "postgres", "redis",   "node", "varnish",
                                    "memcached", "php-fpm",  "haproxy", NULL};
static const char *const CGROUPS[] = {
    "system.slice/nginx.service", "system.slice/postgresql.service", "system.slice/redis.service",
    "system.slice/node.service", NULL};
static const char *const CHUNKS[] = {"main",   "vendor", "cart",    "search", "admin",
                                     "charts", "editor", "runtime", NULL};
static const char *const TARGETS[] = {"db", "cache", "api", NULL};
static const char *const TYPES[] = {"query", NULL};

#define C_ STRATA__V1__KIND__COUNTER
#define G_ STRATA__V1__KIND__GAUGE
#define L_DB STRATA__V1__LAYER__DATABASE
#define L_FN STRATA__V1__LAYER__FUNCTION
#define L_FE STRATA__V1__LAYER__FRONTEND
#define L_RT STRATA__V1__LAYER__REALTIME
#define L_IN STRATA__V1__LAYER__INFRASTRUCTURE
#define L_NO STRATA__V1__LAYER__LAYER_UNSPECIFIED

/* Counters first, then integer gauges, then ratio gauges (scale 4). */
static const struct cat_row CATALOG[] = {
    {"http.server.requests", C_, 0, "", L_IN, D_REQ, "route", ROUTES, "status_class", CLASSES},
    {"http.server.errors", C_, 0, "", L_IN, D_ERR, "route", ROUTES, NULL, NULL},
    {"cache.requests", C_, 0, "", L_IN, D_REQ, "cache", CACHES, "result", RESULTS},
    {"cache.evictions", C_, 0, "", L_IN, D_ERR, "cache", CACHES, NULL, NULL},
    {"tcp.retrans_segs", C_, 0, "", L_IN, D_SEG, NULL, NULL, NULL, NULL},
    {"tcp.out_segs", C_, 0, "", L_IN, D_SEG, NULL, NULL, NULL, NULL},
    {"tcp.attempt_fails", C_, 0, "", L_IN, D_ERR, NULL, NULL, NULL, NULL},
    {"tcp.estab_resets", C_, 0, "", L_IN, D_ERR, NULL, NULL, NULL, NULL},
    {"tcp.active_opens", C_, 0, "", L_IN, D_REQ, NULL, NULL, NULL, NULL},
    {"tcp.listen_drops", C_, 0, "", L_IN, D_ERR, NULL, NULL, NULL, NULL},
    {"tcp.listen_overflows", C_, 0, "", L_IN, D_ERR, NULL, NULL, NULL, NULL},
    {"tcp.timeouts", C_, 0, "", L_IN, D_ERR, NULL, NULL, NULL, NULL},
    {"db.statement.calls", C_, 0, "", L_DB, D_REQ, "queryid", QUERIES, NULL, NULL},
    {"db.statement.rows", C_, 0, "", L_DB, D_SEG, "queryid", QUERIES, NULL, NULL},
    {"db.table.seq_scan", C_, 0, "", L_DB, D_ERR, "table", TABLES, NULL, NULL},
    {"db.table.idx_scan", C_, 0, "", L_DB, D_REQ, "table", TABLES, NULL, NULL},
    {"db.cache.blks_hit", C_, 0, "", L_DB, D_SEG, "database", DATABASES, NULL, NULL},
    {"db.cache.blks_read", C_, 0, "", L_DB, D_REQ, "database", DATABASES, NULL, NULL},
    {"app.function.errors", C_, 0, "", L_FN, D_ERR, "function", FUNCS, "type", TYPES},
    {"realtime.updates", C_, 0, "", L_RT, D_REQ, "channel", CHANNELS, NULL, NULL},
    {"realtime.bytes", C_, 0, "B", L_RT, D_BYTES, "channel", CHANNELS, NULL, NULL},
    {"net.probe.connects", C_, 0, "", L_IN, D_REQ, "target", TARGETS, NULL, NULL},
    {"agent.frames.sent", C_, 0, "", L_NO, D_ERR, NULL, NULL, NULL, NULL},
    {"agent.frames.rejected", C_, 0, "", L_NO, D_ERR, NULL, NULL, NULL, NULL},
    {"mem.rss", G_, 0, "B", L_FN, D_MEM, "process", PROCS, NULL, NULL},
    {"mem.rss.peak", G_, 0, "B", L_FN, D_STATIC, "process", PROCS, NULL, NULL},
    {"mem.anon", G_, 0, "B", L_FN, D_MEM, "process", PROCS, NULL, NULL},
    {"proc.count", G_, 0, "", L_FN, D_STATIC, "process", PROCS, NULL, NULL},
    {"mem.cgroup.current", G_, 0, "B", L_IN, D_MEM, "cgroup", CGROUPS, NULL, NULL},
    {"host.mem.available", G_, 0, "B", L_IN, D_HOSTMEM, NULL, NULL, NULL, NULL},
    {"host.mem.total", G_, 0, "B", L_IN, D_STATIC, NULL, NULL, NULL, NULL},
    {"tcp.curr_estab", G_, 0, "", L_IN, D_CONN, NULL, NULL, NULL, NULL},
    {"realtime.connections", G_, 0, "", L_RT, D_CONN, "channel", CHANNELS, NULL, NULL},
    {"cache.memory.used", G_, 0, "B", L_IN, D_MEM, "cache", CACHES, NULL, NULL},
    {"db.table.live_tup", G_, 0, "", L_DB, D_CONN, "table", TABLES, NULL, NULL},
    {"frontend.bundle.gzip_bytes", G_, 0, "B", L_FE, D_STATIC, "chunk", CHUNKS, NULL, NULL},
    {"agent.spool.frames", G_, 0, "", L_NO, D_STATIC, NULL, NULL, NULL, NULL},
    {"agent.spool.bytes", G_, 0, "B", L_NO, D_STATIC, NULL, NULL, NULL, NULL},
    {"agent.rss", G_, 0, "B", L_NO, D_MEM, NULL, NULL, NULL, NULL},
    {"host.cpu.utilization", G_, 4, "ratio", L_IN, D_RATIO, NULL, NULL, NULL, NULL},
    {"cache.hit_ratio", G_, 4, "ratio", L_IN, D_RATIO, "cache", CACHES, NULL, NULL},
    {"proc.cpu.utilization", G_, 4, "ratio", L_FN, D_RATIO, "process", PROCS, NULL, NULL},
};

/* One series of the mix, shared by every simulated agent (labels are
 * read-only while packing). */
struct series_def {
    const struct cat_row *row;
    Strata__V1__Label lab[MAX_LABELS];
    Strata__V1__Label *labp[MAX_LABELS];
    size_t nlab;
    char inst[24];
};

/* A simulated series' state: counters draw a delta per point, gauges walk. */
struct series_state {
    double rate;
    int64_t value;
    int64_t step;
    uint32_t change_pct;
};

struct bench;
struct slot;

/* What a simulated agent keeps between frames. Its frames are built in a
 * per-thread builder (below), so that thousands of agents stay small. */
struct sim_agent {
    uint8_t id[16];
    uint64_t rng;
    uint64_t encoded; /* frames built so far (their seq is 1..encoded) */
    struct series_state *st;
    Strata__V1__Agent info;
    Strata__V1__Label dc;
    Strata__V1__Label *dcp;
    char host[32];
    char boot[37];
    int64_t phase_ms; /* when in each flush period this agent flushes */
    /* sending; next_send, slot busy flags and encoding under mu */
    pthread_mutex_t mu;
    uint64_t next_send;       /* seq of the next frame to send */
    _Atomic int64_t next_due; /* monotonic ns when next_send is due; INT64_MAX: none */
    _Atomic int idle;         /* slots free */
    _Atomic uint64_t acked;   /* OK or DUPLICATE */
    bool exhausted;
    uint8_t **env; /* pre-encoded envelopes, env[seq - 1] */
    uint32_t *env_len;
    uint64_t nenv;
    nng_socket *sock;
    struct slot *slots; /* inflight of them */
};

/* Series structs and value columns for building one frame at a time. */
struct builder {
    Strata__V1__Series *ser;
    Strata__V1__Series **serp;
    int64_t *ivals;
};

enum slot_state { SL_SEND, SL_RECV };

struct slot {
    struct bench *b;
    struct sim_agent *a;
    nng_ctx ctx;
    nng_aio *aio;
    nng_msg *msg; /* prepared under the agent's lock, sent outside it */
    uint64_t seq;
    size_t len;
    bool busy;
    enum slot_state state;
};

struct counters {
    _Atomic uint64_t ok, dup, rejected, retry, errors, bytes_ok, exhausted;
};

struct bench {
    struct opts o;
    struct series_def *defs;
    struct sim_agent *agents;
    nng_socket *socks;
    size_t nsocks;
    struct slot *slots;
    size_t nslots;
    uint64_t samples_per_frame;
    int64_t period_ms; /* flush period: points * interval */
    int64_t t0_ms;     /* data time of the start of every agent's frame 1, before its phase */
    int64_t start_ns;  /* monotonic time sending began */
    _Atomic bool stopping;
    _Atomic int64_t busy; /* slots with a request out */
    struct counters c;
    _Atomic int first_reject_logged;
};

/* ---- random numbers (splitmix64) ---- */

static uint64_t rnd(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double unif(uint64_t *s) /* [0, 1) */
{
    return (double)(rnd(s) >> 11) * (1.0 / 9007199254740992.0);
}

static double logunif(uint64_t *s, double lo, double hi)
{
    return exp(log(lo) + unif(s) * (log(hi) - log(lo)));
}

static double gauss(uint64_t *s) /* roughly N(0, 1): Irwin-Hall of 4 */
{
    return (unif(s) + unif(s) + unif(s) + unif(s) - 2.0) * 1.7320508;
}

static int64_t irange(uint64_t *s, int64_t lo, int64_t hi) /* [lo, hi] */
{
    return lo + (int64_t)(rnd(s) % (uint64_t)(hi - lo + 1));
}

/* ---- building the mix ---- */

static size_t list_len(const char *const *v)
{
    size_t n = 0;
    while (v != NULL && v[n] != NULL) {
        n++;
    }
    return n;
}

static size_t row_variants(const struct cat_row *r)
{
    size_t a = r->k1 ? list_len(r->v1) : 1;
    size_t b = r->k2 ? list_len(r->v2) : 1;
    return a * b;
}

/* Rows [from, to) of the catalog whose scale and kind fit the pool. */
static bool in_pool(const struct cat_row *r, int pool)
{
    if (pool == 0) {
        return r->kind == C_;
    }
    return r->kind == G_ && (pool == 1 ? r->scale == 0 : r->scale == 4);
}

/* The i-th series of a pool (cycling with an "instance" label when the
 * pool has fewer distinct series than asked for). */
static void pool_pick(int pool, size_t i, struct series_def *d)
{
    size_t total = 0;
    size_t k;
    for (size_t l = 0; l < MAX_LABELS; l++) {
        strata__v1__label__init(&d->lab[l]);
        d->labp[l] = &d->lab[l];
    }
    for (size_t r = 0; r < ST_ARRAY_LEN(CATALOG); r++) {
        if (in_pool(&CATALOG[r], pool)) {
            total += row_variants(&CATALOG[r]);
        }
    }
    k = i % total;
    for (size_t r = 0; r < ST_ARRAY_LEN(CATALOG); r++) {
        const struct cat_row *row = &CATALOG[r];
        size_t nv = row_variants(row);
        if (!in_pool(row, pool)) {
            continue;
        }
        if (k >= nv) {
            k -= nv;
            continue;
        }
        d->row = row;
        if (row->k1 != NULL) {
            size_t n2 = row->k2 ? list_len(row->v2) : 1;
            d->lab[d->nlab].key = (char *)row->k1;
            d->lab[d->nlab++].value = (char *)row->v1[k / n2];
            if (row->k2 != NULL) {
                d->lab[d->nlab].key = (char *)row->k2;
                d->lab[d->nlab++].value = (char *)row->v2[k % n2];
            }
        }
        break;
    }
    if (i >= total) {
        snprintf(d->inst, sizeof(d->inst), "%zu", i / total);
        d->lab[d->nlab].key = (char *)"instance";
        d->lab[d->nlab++].value = d->inst;
    }
}

/* ~60 % counters, ~35 % integer gauges, ~5 % ratio gauges. */
static struct series_def *build_defs(size_t n)
{
    struct series_def *d = calloc(n, sizeof(*d));
    size_t nratio = (n * 5 + 50) / 100;
    size_t ncounter = (n * 60 + 50) / 100;
    size_t ngauge = n - nratio - ncounter;
    size_t at = 0;
    if (d == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < ncounter; i++) {
        pool_pick(0, i, &d[at++]);
    }
    for (size_t i = 0; i < ngauge; i++) {
        pool_pick(1, i, &d[at++]);
    }
    for (size_t i = 0; i < nratio; i++) {
        pool_pick(2, i, &d[at++]);
    }
    return d;
}

static void state_init(struct series_state *s, enum dyn dyn, uint64_t *r)
{
    memset(s, 0, sizeof(*s));
    switch (dyn) {
    case D_REQ:
        s->rate = logunif(r, 2, 2000);
        break;
    case D_ERR:
        s->rate = unif(r) * 0.3;
        break;
    case D_SEG:
        s->rate = logunif(r, 50, 20000);
        break;
    case D_BYTES:
        s->rate = logunif(r, 1e3, 5e6);
        break;
    case D_MEM:
        s->value = (int64_t)logunif(r, 16e6, 4e9) / PAGE * PAGE;
        s->step = PAGE;
        s->change_pct = 30;
        break;
    case D_HOSTMEM:
        s->value = (int64_t)logunif(r, 2e9, 30e9) / PAGE * PAGE;
        s->step = 64 * PAGE;
        s->change_pct = 90;
        break;
    case D_CONN:
        s->value = (int64_t)logunif(r, 5, 5000);
        s->step = 3;
        s->change_pct = 50;
        break;
    case D_STATIC:
        s->value = (int64_t)logunif(r, 1, 2e8);
        s->step = 1;
        s->change_pct = 1;
        break;
    case D_RATIO:
        s->value = irange(r, 500, 9500);
        s->step = 60;
        s->change_pct = 100;
        break;
    }
}

/* The value of the next point: a counter's increase over the interval or
 * a gauge's (scaled) value. */
static int64_t state_next(struct series_state *s, enum dyn dyn, uint64_t *r)
{
    if (dyn == D_ERR) {
        return unif(r) < s->rate ? 1 : 0;
    }
    if (dyn == D_REQ || dyn == D_SEG || dyn == D_BYTES) {
        double x = s->rate + sqrt(s->rate) * gauss(r) * (dyn == D_BYTES ? 30.0 : 1.0);
        return x < 0 ? 0 : (int64_t)llround(x);
    }
    if ((uint32_t)(rnd(r) % 100) < s->change_pct) {
        int64_t d = irange(r, -s->step, s->step);
        if (dyn == D_MEM || dyn == D_HOSTMEM) {
            /* Memory moves in pages, a few to a few dozen at a time. */
            d = (rnd(r) & 1 ? 1 : -1) * irange(r, 1, 16) * s->step;
        }
        s->value += d;
        if (s->value < 0) {
            s->value = -s->value;
        }
        if (dyn == D_RATIO && s->value > 10000) {
            s->value = 20000 - s->value;
        }
    }
    return s->value;
}

static int builder_init(const struct bench *b, struct builder *bl)
{
    size_t n = (size_t)b->o.series;
    size_t p = (size_t)b->o.points;
    bl->ser = calloc(n, sizeof(*bl->ser));
    bl->serp = calloc(n, sizeof(*bl->serp));
    bl->ivals = calloc(n * p, sizeof(*bl->ivals));
    if (bl->ser == NULL || bl->serp == NULL || bl->ivals == NULL) {
        return ST_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const struct series_def *d = &b->defs[i];
        Strata__V1__Series *s = &bl->ser[i];
        strata__v1__series__init(s);
        s->name = (char *)d->row->name;
        s->labels = (Strata__V1__Label **)d->labp;
        s->n_labels = d->nlab;
        s->layer = (Strata__V1__Layer)d->row->layer;
        s->unit = (char *)d->row->unit;
        s->kind = (Strata__V1__Kind)d->row->kind;
        s->interval_ms = INTERVAL_MS;
        s->scale = d->row->scale;
        s->ivalues = bl->ivals + i * p;
        s->n_ivalues = p;
        bl->serp[i] = s;
    }
    return ST_OK;
}

static void builder_free(struct builder *bl)
{
    free(bl->ser);
    free(bl->serp);
    free(bl->ivals);
    memset(bl, 0, sizeof(*bl));
}

static int agent_init(struct bench *b, struct sim_agent *a, size_t idx)
{
    static const int roles[] = {STRATA__V1__ROLE__EDGE, STRATA__V1__ROLE__CDN,
                                STRATA__V1__ROLE__APP, STRATA__V1__ROLE__DB};
    a->rng = b->o.seed * 1000003ULL + idx;
    for (int i = 0; i < 2; i++) {
        uint64_t x = rnd(&a->rng);
        memcpy(a->id + 8 * i, &x, 8);
    }
    a->id[6] = (uint8_t)((a->id[6] & 0x0f) | 0x40);
    a->id[8] = (uint8_t)((a->id[8] & 0x3f) | 0x80);
    if ((a->st = calloc((size_t)b->o.series, sizeof(*a->st))) == NULL) {
        return ST_ENOMEM;
    }
    for (size_t i = 0; i < (size_t)b->o.series; i++) {
        state_init(&a->st[i], b->defs[i].row->dyn, &a->rng);
    }
    a->phase_ms = (int64_t)(rnd(&a->rng) % (uint64_t)b->period_ms);
    snprintf(a->host, sizeof(a->host), "bench-%05zu", idx);
    st_uuid_format(a->id, a->boot); /* any stable text will do */
    strata__v1__agent__init(&a->info);
    strata__v1__label__init(&a->dc);
    a->dc.key = (char *)"dc";
    a->dc.value = (char *)"fra1";
    a->dcp = &a->dc;
    a->info.host = a->host;
    a->info.role = (Strata__V1__Role)roles[idx % 4];
    a->info.labels = &a->dcp;
    a->info.n_labels = 1;
    a->info.version = (char *)ST_VERSION;
    a->info.boot_id = a->boot;
    a->next_send = 1;
    return pthread_mutex_init(&a->mu, NULL) == 0 ? ST_OK : ST_ENOMEM;
}

/* Data time of the start of frame seq of agent a. */
static int64_t frame_start_ms(const struct bench *b, const struct sim_agent *a, uint64_t seq)
{
    return b->t0_ms + a->phase_ms / INTERVAL_MS * INTERVAL_MS + (int64_t)(seq - 1) * b->period_ms;
}

/* Fills the next frame's points into bl (as the fold does: each column
 * holds the difference from the previous value, the first from 0). */
static void agent_step(struct bench *b, struct builder *bl, struct sim_agent *a)
{
    size_t p = (size_t)b->o.points;
    int64_t start = frame_start_ms(b, a, a->encoded + 1);
    for (size_t i = 0; i < (size_t)b->o.series; i++) {
        int64_t prev = 0;
        int64_t *col = bl->ser[i].ivalues;
        for (size_t j = 0; j < p; j++) {
            int64_t x = state_next(&a->st[i], b->defs[i].row->dyn, &a->rng);
            col[j] = x - prev;
            prev = x;
        }
        bl->ser[i].start_unix_ms = start;
    }
    a->encoded++;
}

/* Encodes the agent's next frame into env (per-thread buffers). */
static int agent_encode(struct bench *b, struct builder *bl, struct sim_agent *a, st_zctx *z,
                        st_buf *raw, st_buf *env)
{
    Strata__V1__Frame f = STRATA__V1__FRAME__INIT;
    int rv;
    agent_step(b, bl, a);
    f.agent_id.data = a->id;
    f.agent_id.len = 16;
    f.seq = a->encoded;
    f.sent_unix_ms = frame_start_ms(b, a, a->encoded) + b->period_ms;
    f.agent = &a->info;
    f.series = bl->serp;
    f.n_series = (size_t)b->o.series;
    if ((rv = st_frame_encode(&f, raw)) != ST_OK) {
        return rv;
    }
    return st_envelope_encode(z, a->id, f.seq, b->o.codec, b->o.level, raw->data, raw->len, NULL, 0,
                              env);
}

/* ---- /proc and /metrics readings ---- */

static int read_small(const char *path, char *buf, size_t cap)
{
    FILE *fp = fopen(path, "r");
    size_t n;
    if (fp == NULL) {
        return ST_ENOENT;
    }
    n = fread(buf, 1, cap - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    return ST_OK;
}

/* utime + stime (fields 14 and 15 of /proc/PID/stat), in clock ticks. */
static uint64_t stat_ticks(const char *path, char *comm, size_t commcap)
{
    char buf[1024];
    char *p;
    char *q;
    uint64_t ut = 0;
    uint64_t stt = 0;
    if (read_small(path, buf, sizeof(buf)) != ST_OK || (p = strrchr(buf, ')')) == NULL) {
        return 0;
    }
    if (comm != NULL && (q = strchr(buf, '(')) != NULL) {
        size_t len = (size_t)(p - q - 1);
        len = len < commcap - 1 ? len : commcap - 1;
        memcpy(comm, q + 1, len);
        comm[len] = '\0';
    }
    p += 2;
    for (int field = 3; field < 14 && p != NULL; field++) {
        p = strchr(p, ' ');
        p = p ? p + 1 : NULL;
    }
    if (p == NULL || sscanf(p, "%" SCNu64 " %" SCNu64, &ut, &stt) != 2) {
        return 0;
    }
    return ut + stt;
}

static long status_kb(int pid, const char *key)
{
    char path[64];
    char buf[4096];
    const char *p;
    long v = -1;
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    if (read_small(path, buf, sizeof(buf)) != ST_OK || (p = strstr(buf, key)) == NULL) {
        return -1;
    }
    p += strlen(key);
    while (*p == ' ' || *p == '\t' || *p == ':') {
        p++;
    }
    if (sscanf(p, "%ld", &v) != 1) {
        return -1;
    }
    return v;
}

static uint64_t io_write_bytes(int pid)
{
    char path[64];
    char buf[1024];
    const char *p;
    uint64_t v = 0;
    snprintf(path, sizeof(path), "/proc/%d/io", pid);
    if (read_small(path, buf, sizeof(buf)) != ST_OK ||
        (p = strstr(buf, "\nwrite_bytes:")) == NULL || sscanf(p + 13, "%" SCNu64, &v) != 1) {
        return 0;
    }
    return v;
}

struct task_cpu {
    int tid;
    uint64_t ticks;
    char comm[32];
};

struct metrics {
    bool ok;
    int64_t ns;     /* monotonic time the answer arrived */
    double fetch_s; /* how long /metrics took to answer */
    size_t body;    /* bytes of the answer */
    double samples, frames, bytes, received, commit_count, commit_sum;
    double bucket[MAX_BUCKETS];
    char le[MAX_BUCKETS][16];
    size_t nbucket;
};

struct snap {
    int64_t ns;
    uint64_t ok, dup, rejected, retry, errors, bytes_ok;
    double gen_cpu_s;
    uint64_t col_ticks;
    uint64_t col_write_bytes; /* /proc/PID/io write_bytes: what reached the block layer */
    struct task_cpu tasks[MAX_TASKS];
    size_t ntasks;
    struct metrics m;
    uint64_t backlog; /* frames due and not yet acknowledged */
};

static void read_tasks(int pid, struct snap *s)
{
    char path[64];
    DIR *d;
    struct dirent *de;
    s->ntasks = 0;
    snprintf(path, sizeof(path), "/proc/%d/task", pid);
    if ((d = opendir(path)) == NULL) {
        return;
    }
    while (s->ntasks < MAX_TASKS && (de = readdir(d)) != NULL) {
        struct task_cpu *t = &s->tasks[s->ntasks];
        int64_t tid;
        char statp[96];
        if (st_parse_i64(de->d_name, &tid) != ST_OK) {
            continue;
        }
        t->tid = (int)tid;
        snprintf(statp, sizeof(statp), "/proc/%d/task/%d/stat", pid, t->tid);
        t->ticks = stat_ticks(statp, t->comm, sizeof(t->comm));
        s->ntasks++;
    }
    closedir(d);
}

static int http_get(const char *url, st_buf *out)
{
    nng_url *u = NULL;
    nng_http_client *c = NULL;
    nng_http_req *req = NULL;
    nng_http_res *res = NULL;
    nng_aio *aio = NULL;
    void *data;
    size_t len;
    int rv;
    st_buf_reset(out);
    if ((rv = nng_url_parse(&u, url)) != 0 || (rv = nng_http_client_alloc(&c, u)) != 0 ||
        (rv = nng_http_req_alloc(&req, u)) != 0 || (rv = nng_http_res_alloc(&res)) != 0 ||
        (rv = nng_aio_alloc(&aio, NULL, NULL)) != 0) {
        goto out;
    }
    nng_aio_set_timeout(aio, METRICS_TIMEOUT_MS);
    nng_http_client_transact(c, req, res, aio);
    nng_aio_wait(aio);
    if ((rv = nng_aio_result(aio)) != 0) {
        goto out;
    }
    if (nng_http_res_get_status(res) != 200) {
        rv = NNG_EINVAL;
        goto out;
    }
    nng_http_res_get_data(res, &data, &len);
    rv = st_buf_append(out, data, len) == ST_OK ? 0 : NNG_ENOMEM;
out:
    nng_aio_free(aio);
    nng_http_res_free(res);
    nng_http_req_free(req);
    nng_http_client_free(c);
    nng_url_free(u);
    return rv;
}

static void metric_line(struct metrics *m, const char *line)
{
    const char *sp = strrchr(line, ' ');
    double v;
    char num[64];
    size_t n;
    if (line[0] == '#' || sp == NULL) {
        return;
    }
    n = strlen(sp + 1);
    if (n == 0 || n >= sizeof(num)) {
        return;
    }
    memcpy(num, sp + 1, n + 1);
    if (st_parse_double(num, &v) != ST_OK) {
        return;
    }
#define IS(name) (strncmp(line, name " ", strlen(name) + 1) == 0)
    if (IS("strata_ingest_samples_total")) {
        m->samples = v;
    } else if (IS("strata_ingest_frames_applied_total")) {
        m->frames = v;
    } else if (IS("strata_ingest_bytes_total")) {
        m->bytes = v;
    } else if (IS("strata_ingest_frames_received_total")) {
        m->received = v;
    } else if (IS("strata_store_commit_seconds_count")) {
        m->commit_count = v;
    } else if (IS("strata_store_commit_seconds_sum")) {
        m->commit_sum = v;
    } else if (strncmp(line, "strata_store_commit_seconds_bucket{le=\"", 39) == 0 &&
               m->nbucket < MAX_BUCKETS) {
        const char *le = line + 39;
        size_t len = strcspn(le, "\"");
        len = len < sizeof(m->le[0]) - 1 ? len : sizeof(m->le[0]) - 1;
        memcpy(m->le[m->nbucket], le, len);
        m->le[m->nbucket][len] = '\0';
        m->bucket[m->nbucket++] = v;
    }
#undef IS
}

static void read_metrics(const char *url, struct metrics *m)
{
    st_buf b;
    const char *text;
    int rv;
    memset(m, 0, sizeof(*m));
    if (url == NULL) {
        return;
    }
    st_buf_init(&b, METRICS_MAX);
    if ((rv = http_get(url, &b)) != 0) {
        fprintf(stderr, "ingest_bench: GET %s: %s\n", url,
                rv == NNG_EINVAL ? "HTTP status not 200" : nng_strerror(rv));
    }
    m->body = b.len;
    if (rv == 0 && st_buf_cstr(&b, &text) == ST_OK) {
        char line[512];
        while (*text != '\0') {
            size_t n = strcspn(text, "\n");
            if (n < sizeof(line)) {
                memcpy(line, text, n);
                line[n] = '\0';
                metric_line(m, line);
            }
            text += n + (text[n] == '\n');
        }
        m->ok = true;
    }
    st_buf_free(&b);
}

static double cpu_seconds_self(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static uint64_t backlog(const struct bench *b, int64_t now);

/* Reads /metrics into m, stamping when the answer came and how long it
 * took. */
static void fetch_metrics(const struct bench *b, struct metrics *m)
{
    int64_t t0 = st_time_mono_ns();
    read_metrics(b->o.metrics_url, m);
    m->ns = st_time_mono_ns();
    m->fetch_s = (double)(m->ns - t0) / 1e9;
}

/* Counters, /proc, and (with_metrics) /metrics. /metrics is not read at
 * the start of the window: at fleet size the collector may take many
 * seconds (and a core) to answer it, which would disturb what is measured;
 * it is read before the first frame instead (run_load). */
static void take_snap(struct bench *b, struct snap *s, bool with_metrics)
{
    s->ns = st_time_mono_ns();
    s->ok = atomic_load(&b->c.ok);
    s->dup = atomic_load(&b->c.dup);
    s->rejected = atomic_load(&b->c.rejected);
    s->retry = atomic_load(&b->c.retry);
    s->errors = atomic_load(&b->c.errors);
    s->bytes_ok = atomic_load(&b->c.bytes_ok);
    s->gen_cpu_s = cpu_seconds_self();
    s->col_ticks = 0;
    s->ntasks = 0;
    if (b->o.collector_pid > 0) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/stat", b->o.collector_pid);
        s->col_ticks = stat_ticks(path, NULL, 0);
        s->col_write_bytes = io_write_bytes(b->o.collector_pid);
        read_tasks(b->o.collector_pid, s);
    }
    if (with_metrics) {
        fetch_metrics(b, &s->m);
    }
    s->backlog = b->o.pace_max ? 0 : backlog(b, s->ns);
}

/* ---- sending ---- */

/* Monotonic time at which frame seq of agent a is due: when its last
 * point closes (frame 1 at start + phase). --pace max: always. */
static int64_t frame_due_ns(const struct bench *b, const struct sim_agent *a, uint64_t seq)
{
    if (b->o.pace_max) {
        return 0;
    }
    return b->start_ns + (a->phase_ms + (int64_t)(seq - 1) * b->period_ms) * 1000000;
}

static void set_next_due(struct bench *b, struct sim_agent *a)
{
    bool more = b->o.live || a->next_send <= a->nenv;
    atomic_store(&a->next_due, more ? frame_due_ns(b, a, a->next_send) : INT64_MAX);
}

/* Per-thread encoding state for --live (nng calls back on its own
 * threads). */
static _Thread_local struct builder tl_bl;
static _Thread_local st_zctx *tl_z;
static _Thread_local st_buf tl_raw;
static _Thread_local st_buf tl_env;
static _Thread_local bool tl_init;

/* The envelope of frame seq as a message: copied from the pre-encoded
 * ones, or (--live) encoded now, which needs seq == a->encoded + 1. */
static int make_msg(struct bench *b, struct sim_agent *a, uint64_t seq, nng_msg **out, size_t *len)
{
    const uint8_t *data;
    int rv;
    if (!b->o.live) {
        data = a->env[seq - 1];
        *len = a->env_len[seq - 1];
    } else {
        if (!tl_init) {
            st_buf_init(&tl_raw, ST_ENV_MAX_PAYLOAD);
            st_buf_init(&tl_env, ST_ENV_MAX_LEN);
            if ((rv = st_zctx_new(&tl_z)) != ST_OK || (rv = builder_init(b, &tl_bl)) != ST_OK) {
                return rv;
            }
            tl_init = true;
        }
        if ((rv = agent_encode(b, &tl_bl, a, tl_z, &tl_raw, &tl_env)) != ST_OK) {
            return rv;
        }
        data = tl_env.data;
        *len = tl_env.len;
    }
    if (nng_msg_alloc(out, *len) != 0) {
        return ST_ENOMEM;
    }
    memcpy(nng_msg_body(*out), data, *len);
    return ST_OK;
}

/* With a->mu held: when the agent's next frame is due by now, prepares it
 * in sl (which must be free) and returns true. */
static bool take_due(struct bench *b, struct sim_agent *a, struct slot *sl, int64_t now)
{
    uint64_t seq = a->next_send;
    if (!b->o.live && seq > a->nenv) {
        if (!a->exhausted) {
            a->exhausted = true;
            atomic_fetch_add(&b->c.exhausted, 1);
        }
        return false;
    }
    if (atomic_load(&b->stopping) || frame_due_ns(b, a, seq) > now) {
        return false;
    }
    if (make_msg(b, a, seq, &sl->msg, &sl->len) != ST_OK) {
        atomic_fetch_add(&b->c.errors, 1);
        return false;
    }
    a->next_send++;
    set_next_due(b, a);
    sl->seq = seq;
    return true;
}

static void slot_send(struct slot *sl)
{
    sl->state = SL_SEND;
    nng_aio_set_msg(sl->aio, sl->msg);
    sl->msg = NULL;
    nng_ctx_send(sl->ctx, sl->aio);
}

/* Frees the slot, or hands it the agent's next frame when one is due. */
static void slot_next(struct slot *sl)
{
    struct sim_agent *a = sl->a;
    struct bench *b = sl->b;
    bool go;
    pthread_mutex_lock(&a->mu);
    go = take_due(b, a, sl, st_time_mono_ns());
    if (!go) {
        sl->busy = false;
        atomic_fetch_add(&a->idle, 1);
        atomic_fetch_sub(&b->busy, 1);
    }
    pthread_mutex_unlock(&a->mu);
    if (go) {
        slot_send(sl);
    }
}

/* The scheduler's part: fills the agent's free slots with due frames. */
static void agent_kick(struct bench *b, struct sim_agent *a, int64_t now)
{
    if (atomic_load(&a->idle) == 0 || atomic_load(&a->next_due) > now) {
        return;
    }
    for (;;) {
        struct slot *sl = NULL;
        pthread_mutex_lock(&a->mu);
        for (size_t k = 0; k < (size_t)b->o.inflight && sl == NULL; k++) {
            sl = a->slots[k].busy ? NULL : &a->slots[k];
        }
        if (sl != NULL && take_due(b, a, sl, now)) {
            sl->busy = true;
            atomic_fetch_sub(&a->idle, 1);
            atomic_fetch_add(&b->busy, 1);
        } else {
            sl = NULL;
        }
        pthread_mutex_unlock(&a->mu);
        if (sl == NULL) {
            return;
        }
        slot_send(sl);
    }
}

/* Counts one ack; true when the same frame must be sent again. */
static bool on_ack(struct slot *sl, nng_msg *m)
{
    struct bench *b = sl->b;
    Strata__V1__Ack *ack = strata__v1__ack__unpack(NULL, nng_msg_len(m), nng_msg_body(m));
    bool resend = false;
    if (ack == NULL || ack->seq != sl->seq) {
        atomic_fetch_add(&b->c.errors, 1);
    } else if (ack->status == STRATA__V1__ACK_STATUS__OK) {
        atomic_fetch_add(&b->c.ok, 1);
        atomic_fetch_add(&b->c.bytes_ok, sl->len);
        atomic_fetch_add(&sl->a->acked, 1);
    } else if (ack->status == STRATA__V1__ACK_STATUS__DUPLICATE) {
        atomic_fetch_add(&b->c.dup, 1);
        atomic_fetch_add(&sl->a->acked, 1);
    } else if (ack->status == STRATA__V1__ACK_STATUS__RETRY_LATER) {
        atomic_fetch_add(&b->c.retry, 1);
        resend = !b->o.live; /* a live frame is not kept */
    } else {
        atomic_fetch_add(&b->c.rejected, 1);
        if (atomic_fetch_add(&b->first_reject_logged, 1) == 0) {
            fprintf(stderr, "ingest_bench: seq %" PRIu64 " rejected: %s\n", sl->seq,
                    ack->reason ? ack->reason : "");
        }
    }
    strata__v1__ack__free_unpacked(ack, NULL);
    return resend;
}

static void slot_cb(void *arg)
{
    struct slot *sl = arg;
    int rv = nng_aio_result(sl->aio);
    nng_msg *m;
    if (sl->state == SL_SEND && rv == 0) {
        sl->state = SL_RECV;
        nng_ctx_recv(sl->ctx, sl->aio);
        return;
    }
    if (rv != 0) {
        if (sl->state == SL_SEND) {
            nng_msg_free(nng_aio_get_msg(sl->aio));
        }
        if (rv != NNG_ECLOSED) {
            atomic_fetch_add(&sl->b->c.errors, 1);
        }
        slot_next(sl); /* that frame is lost to the benchmark */
        return;
    }
    m = nng_aio_get_msg(sl->aio);
    if (on_ack(sl, m) && make_msg(sl->b, sl->a, sl->seq, &sl->msg, &sl->len) == ST_OK) {
        nng_msg_free(m);
        slot_send(sl);
        return;
    }
    nng_msg_free(m);
    slot_next(sl);
}

/* One socket per agent by default, as a fleet has. The first dial waits
 * (a wrong URL shows at once); the rest connect in the background and
 * requests wait for them. */
static int open_sockets(struct bench *b)
{
    int rv;
    b->nsocks = b->o.sockets == 0 ? (size_t)b->o.agents : (size_t)b->o.sockets;
    b->socks = calloc(b->nsocks, sizeof(*b->socks));
    if (b->socks == NULL) {
        return NNG_ENOMEM;
    }
    for (size_t i = 0; i < b->nsocks; i++) {
        if ((rv = nng_req0_open(&b->socks[i])) != 0 ||
            (rv = nng_socket_set_ms(b->socks[i], NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE)) !=
                0 ||
            (rv = nng_socket_set_size(b->socks[i], NNG_OPT_RECVMAXSZ, 1u << 20)) != 0 ||
            (rv = nng_dial(b->socks[i], b->o.url, NULL, i == 0 ? 0 : NNG_FLAG_NONBLOCK)) != 0) {
            fprintf(stderr, "ingest_bench: socket %zu to %s: %s\n", i, b->o.url, nng_strerror(rv));
            return rv;
        }
    }
    for (size_t i = 0; i < (size_t)b->o.agents; i++) {
        b->agents[i].sock = &b->socks[i % b->nsocks];
    }
    return 0;
}

static int open_slots(struct bench *b)
{
    int rv;
    b->nslots = (size_t)(b->o.agents * b->o.inflight);
    b->slots = calloc(b->nslots, sizeof(*b->slots));
    if (b->slots == NULL) {
        return NNG_ENOMEM;
    }
    for (size_t i = 0; i < (size_t)b->o.agents; i++) {
        struct sim_agent *a = &b->agents[i];
        a->slots = &b->slots[i * b->o.inflight];
        atomic_store(&a->idle, (int)b->o.inflight);
        for (size_t k = 0; k < (size_t)b->o.inflight; k++) {
            struct slot *sl = &a->slots[k];
            sl->b = b;
            sl->a = a;
            if ((rv = nng_ctx_open(&sl->ctx, *a->sock)) != 0 ||
                (rv = nng_aio_alloc(&sl->aio, slot_cb, sl)) != 0) {
                return rv;
            }
        }
    }
    return 0;
}

/* Frames due by now and not yet acknowledged, over all agents. */
static uint64_t backlog(const struct bench *b, int64_t now)
{
    uint64_t n = 0;
    for (size_t i = 0; i < (size_t)b->o.agents; i++) {
        const struct sim_agent *a = &b->agents[i];
        int64_t since = now - b->start_ns - a->phase_ms * 1000000;
        uint64_t due = since < 0 ? 0 : (uint64_t)(since / (b->period_ms * 1000000)) + 1;
        uint64_t acked = atomic_load(&a->acked);
        due = b->o.live || due < a->nenv ? due : a->nenv;
        n += due > acked ? due - acked : 0;
    }
    return n;
}

/* ---- pre-encoding ---- */

struct enc_job {
    struct bench *b;
    size_t from, to; /* agents */
    uint64_t per;    /* frames per agent */
    uint64_t raw, wire;
    int rv;
    pthread_t thread;
};

/* --dump: the uncompressed Frame as DIR/P-AGENT-SEQ.pb, for offline
 * compression experiments (dictionaries, other codecs). */
static void dump_raw(const struct bench *b, const struct sim_agent *a, const st_buf *raw)
{
    char path[4096];
    FILE *fp;
    if (b->o.dump_dir == NULL) {
        return;
    }
    snprintf(path, sizeof(path), "%s/p%" PRIu64 "-%s-%06" PRIu64 ".pb", b->o.dump_dir, b->o.points,
             a->host, a->encoded);
    if ((fp = fopen(path, "wb")) != NULL) {
        fwrite(raw->data, 1, raw->len, fp);
        fclose(fp);
    }
}

static int encode_agent(struct enc_job *j, struct builder *bl, struct sim_agent *a, st_zctx *z,
                        st_buf *raw, st_buf *env)
{
    int rv;
    a->env = calloc(j->per, sizeof(*a->env));
    a->env_len = calloc(j->per, sizeof(*a->env_len));
    if (a->env == NULL || a->env_len == NULL) {
        return ST_ENOMEM;
    }
    for (uint64_t k = 0; k < j->per; k++) {
        if ((rv = agent_encode(j->b, bl, a, z, raw, env)) != ST_OK) {
            return rv;
        }
        j->raw += raw->len;
        j->wire += env->len;
        dump_raw(j->b, a, raw);
        a->env_len[k] = (uint32_t)env->len;
        a->env[k] = st_buf_steal(env, &env->len);
        a->nenv = k + 1;
    }
    return ST_OK;
}

static void *encode_main(void *arg)
{
    struct enc_job *j = arg;
    struct builder bl = {0};
    st_zctx *z = NULL;
    st_buf raw;
    st_buf env;
    st_buf_init(&raw, ST_ENV_MAX_PAYLOAD);
    st_buf_init(&env, ST_ENV_MAX_LEN);
    if ((j->rv = st_zctx_new(&z)) == ST_OK) {
        j->rv = builder_init(j->b, &bl);
    }
    for (size_t i = j->from; i < j->to && j->rv == ST_OK; i++) {
        j->rv = encode_agent(j, &bl, &j->b->agents[i], z, &raw, &env);
    }
    builder_free(&bl);
    st_buf_free(&raw);
    st_buf_free(&env);
    st_zctx_free(z);
    return NULL;
}

/* Frames per agent that last the run: one per period at real-time pace,
 * or enough for max_rate with --pace max. */
static uint64_t frames_needed(const struct bench *b)
{
    double secs = b->o.warmup_s + b->o.duration_s;
    double need = b->o.pace_max
                      ? b->o.max_rate * secs / (double)(b->samples_per_frame * b->o.agents)
                      : secs * 1000.0 / (double)b->period_ms;
    uint64_t per = (uint64_t)ceil(need) + b->o.inflight + 1;
    uint64_t span_cap = (uint64_t)(20LL * 3600 * 1000 / b->period_ms);
    if (per > span_cap) {
        fprintf(stderr,
                "ingest_bench: %" PRIu64 " frames per agent would span more than 20 h; "
                "capped at %" PRIu64 "\n",
                per, span_cap);
        per = span_cap;
    }
    return per;
}

/* Encodes the frames of every agent on one thread per core (the machine
 * is otherwise idle then). */
static int preencode(struct bench *b, uint64_t per, double *enc_cpu_s, uint64_t *raw_total,
                     uint64_t *env_total)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    struct enc_job jobs[16];
    size_t nj = (size_t)(ncpu < 1 ? 1 : ncpu > 16 ? 16 : ncpu);
    double c0 = cpu_seconds_self();
    int rv = ST_OK;
    nj = nj > (size_t)b->o.agents ? (size_t)b->o.agents : nj;
    for (size_t t = 0; t < nj; t++) {
        jobs[t] = (struct enc_job){
            b, (size_t)b->o.agents * t / nj, (size_t)b->o.agents * (t + 1) / nj, per, 0, 0, ST_OK,
            0};
        if (pthread_create(&jobs[t].thread, NULL, encode_main, &jobs[t]) != 0) {
            return ST_ENOMEM;
        }
    }
    for (size_t t = 0; t < nj; t++) {
        pthread_join(jobs[t].thread, NULL);
        *raw_total += jobs[t].raw;
        *env_total += jobs[t].wire;
        rv = rv != ST_OK ? rv : jobs[t].rv;
    }
    *enc_cpu_s = cpu_seconds_self() - c0;
    return rv;
}

/* Forgets an agent's frames so that --bytes can start it again. */
static void agent_reset(struct sim_agent *a)
{
    for (uint64_t k = 0; k < a->nenv; k++) {
        free(a->env[k]);
    }
    free(a->env);
    free(a->env_len);
    free(a->st);
    pthread_mutex_destroy(&a->mu);
    memset(a, 0, sizeof(*a));
}

/* ---- reporting ---- */

static double delta_pct(const struct metrics *m0, const struct metrics *m1, double q,
                        const char **le)
{
    double total = m1->commit_count - m0->commit_count;
    *le = "n/a";
    if (total <= 0 || m0->nbucket != m1->nbucket) {
        return 0;
    }
    for (size_t i = 0; i < m1->nbucket; i++) {
        double cum = m1->bucket[i] - m0->bucket[i];
        if (cum >= q * total) {
            *le = m1->le[i];
            return cum / total;
        }
    }
    return 0;
}

static void report_tasks(const struct snap *s0, const struct snap *s1, double secs, long hz)
{
    struct task_cpu top[8];
    size_t ntop = 0;
    memset(top, 0, sizeof(top));
    for (size_t i = 0; i < s1->ntasks; i++) {
        struct task_cpu t = s1->tasks[i];
        for (size_t j = 0; j < s0->ntasks; j++) {
            if (s0->tasks[j].tid == t.tid) {
                t.ticks -= s0->tasks[j].ticks;
                break;
            }
        }
        for (size_t j = 0; j < ST_ARRAY_LEN(top); j++) {
            if (j >= ntop || t.ticks > top[j].ticks) {
                memmove(top + j + 1, top + j, (ST_ARRAY_LEN(top) - j - 1) * sizeof(top[0]));
                top[j] = t;
                ntop = ntop < ST_ARRAY_LEN(top) ? ntop + 1 : ntop;
                break;
            }
        }
    }
    printf("collector threads (busiest, %% of one core):");
    for (size_t j = 0; j < ntop && top[j].ticks > 0; j++) {
        printf(" %s/%d=%.1f%%", top[j].comm, top[j].tid,
               100.0 * (double)top[j].ticks / (double)hz / secs);
    }
    printf("\n");
}

/* The collector's own counters from before the first frame (m0) to the
 * window's end: a cross-check of the acks, and the commit histogram. */
struct mstats {
    bool ok;
    double secs, samples, frames, commits, mean_ms;
    const char *p50, *p99;
};

static struct mstats collector_stats(const struct metrics *m0, const struct metrics *m1)
{
    struct mstats r = {m0->ok && m1->ok, 0, -1, -1, -1, 0, "n/a", "n/a"};
    if (!r.ok) {
        return r;
    }
    r.secs = (double)(m1->ns - m0->ns) / 1e9;
    r.samples = m1->samples - m0->samples;
    r.frames = m1->frames - m0->frames;
    r.commits = m1->commit_count - m0->commit_count;
    r.mean_ms = r.commits > 0 ? 1000.0 * (m1->commit_sum - m0->commit_sum) / r.commits : 0;
    delta_pct(m0, m1, 0.50, &r.p50);
    delta_pct(m0, m1, 0.99, &r.p99);
    return r;
}

static void report_collector(const struct bench *b, const struct metrics *m0, const struct snap *s1,
                             const struct mstats *ms)
{
    if (!ms->ok) {
        printf("collector /metrics did not answer (%d s timeout) %s\n", METRICS_TIMEOUT_MS / 1000,
               m0->ok ? "at the window's end" : "before the first frame");
        return;
    }
    printf("/metrics answered in %.2f s before the first frame, in %.2f s at the window's end "
           "(%zu bytes)\n",
           m0->fetch_s, s1->m.fetch_s, s1->m.body);
    printf("collector since the first frame (%.0f s): strata_ingest_samples_total %.0f (acked: "
           "%.0f), %.0f commits (%.1f/s, %.1f frames/commit), commit mean %.2f ms, p50 <= %s s, "
           "p99 <= %s s\n",
           ms->secs, ms->samples, (double)s1->ok * (double)b->samples_per_frame, ms->commits,
           ms->commits / ms->secs, ms->commits > 0 ? ms->frames / ms->commits : 0, ms->mean_ms,
           ms->p50, ms->p99);
}

static void report(struct bench *b, const struct metrics *m0, const struct snap *s0,
                   const struct snap *s1)
{
    double secs = (double)(s1->ns - s0->ns) / 1e9;
    double frames = (double)(s1->ok - s0->ok);
    double samples = frames * (double)b->samples_per_frame;
    long hz = sysconf(_SC_CLK_TCK);
    double col_cpu = (double)(s1->col_ticks - s0->col_ticks) / (double)hz;
    double gen_cpu = s1->gen_cpu_s - s0->gen_cpu_s;
    double disk = (double)(s1->col_write_bytes - s0->col_write_bytes);
    struct mstats ms = collector_stats(m0, &s1->m);
    int pid = b->o.collector_pid;
    long rss = pid > 0 ? status_kb(pid, "VmRSS") : -1;
    long hwm = pid > 0 ? status_kb(pid, "VmHWM") : -1;
    long anon = pid > 0 ? status_kb(pid, "RssAnon") : -1;
    long file = pid > 0 ? status_kb(pid, "RssFile") : -1;
    double offered = b->o.pace_max ? 0
                                   : (double)(b->samples_per_frame * b->o.agents) * 1000.0 /
                                         (double)b->period_ms;
    printf("window %.1f s: %.0f frames OK, %.0f frames/s, %.0f samples/s (acks)\n", secs, frames,
           frames / secs, samples / secs);
    if (!b->o.pace_max) {
        printf("offered %.0f samples/s; frames due and not acknowledged: %" PRIu64
               " at the window's start, %" PRIu64 " at its end%s\n",
               offered, s0->backlog, s1->backlog,
               s1->backlog > s0->backlog + b->o.agents / 2 ? " (falling behind)" : "");
    }
    report_collector(b, m0, s1, &ms);
    printf("collector CPU %.1f%% of one core, RSS %ld kB (anon %ld, file %ld: the LMDB map), HWM "
           "%ld kB; generator CPU %.1f%%\n",
           100.0 * col_cpu / secs, rss, anon, file, hwm, 100.0 * gen_cpu / secs);
    printf("collector disk writes %.1f MB/s, %.1f bytes written per sample acked\n",
           disk / secs / 1e6, samples > 0 ? disk / samples : 0);
    printf("dup %" PRIu64 " rejected %" PRIu64 " retry_later %" PRIu64 " errors %" PRIu64
           " agents-out-of-frames %" PRIu64 "\n",
           s1->dup - s0->dup, s1->rejected - s0->rejected, s1->retry - s0->retry,
           s1->errors - s0->errors, (uint64_t)atomic_load(&b->c.exhausted));
    if (pid > 0) {
        report_tasks(s0, s1, secs, hz);
    }
    printf("RESULT agents=%" PRIu64 " series=%" PRIu64 " points=%" PRIu64 " mode=%s pace=%s "
           "secs=%.2f offered_samples_per_s=%.0f samples_per_s=%.0f frames_per_s=%.1f "
           "backlog_start=%" PRIu64 " backlog_end=%" PRIu64 " collector_cpu_pct=%.1f "
           "gen_cpu_pct=%.1f collector_rss_kb=%ld collector_anon_kb=%ld collector_hwm_kb=%ld "
           "disk_write_mb_per_s=%.1f disk_bytes_per_sample=%.1f wire_bytes_per_sample=%.3f "
           "run_commits_per_s=%.2f run_frames_per_commit=%.1f commit_mean_ms=%.3f "
           "commit_p50_le=%s commit_p99_le=%s metrics_samples=%.0f acked_samples=%.0f "
           "metrics_fetch_s=%.2f rejected=%" PRIu64 " errors=%" PRIu64 " exhausted=%" PRIu64 "\n",
           b->o.agents, b->o.series, b->o.points, b->o.live ? "live" : "pre",
           b->o.pace_max ? "max" : "realtime", secs, offered, samples / secs, frames / secs,
           s0->backlog, s1->backlog, 100.0 * col_cpu / secs, 100.0 * gen_cpu / secs, rss, anon, hwm,
           disk / secs / 1e6, samples > 0 ? disk / samples : 0,
           samples > 0 ? (double)(s1->bytes_ok - s0->bytes_ok) / samples : 0,
           ms.ok ? ms.commits / ms.secs : -1, ms.commits > 0 ? ms.frames / ms.commits : 0,
           ms.mean_ms, ms.p50, ms.p99, ms.samples, (double)s1->ok * (double)b->samples_per_frame,
           ms.ok ? s1->m.fetch_s : -1, s1->rejected - s0->rejected, s1->errors - s0->errors,
           (uint64_t)atomic_load(&b->c.exhausted));
}

/* ---- modes ---- */

static void progress(struct bench *b, int64_t now, int64_t *last_ns, uint64_t *last_ok)
{
    uint64_t ok = atomic_load(&b->c.ok);
    if (!b->o.progress || now - *last_ns < 1000000000) {
        return;
    }
    fprintf(stderr, "  %.0f frames/s acked, %" PRId64 " requests out, backlog %" PRIu64 "\n",
            (double)(ok - *last_ok) * 1e9 / (double)(now - *last_ns),
            (int64_t)atomic_load(&b->busy), b->o.pace_max ? 0 : backlog(b, now));
    *last_ns = now;
    *last_ok = ok;
}

/* The scheduler: every few milliseconds, hands due frames to free slots
 * (acks hand the next due frame to their own slot directly). */
static void drive(struct bench *b, struct snap *s0, struct snap *s1)
{
    int64_t warm_at = b->start_ns + (int64_t)(b->o.warmup_s * 1e9);
    int64_t end_at = warm_at + (int64_t)(b->o.duration_s * 1e9);
    int64_t last_ns = b->start_ns;
    uint64_t last_ok = 0;
    bool warm = false;
    for (;;) {
        int64_t now = st_time_mono_ns();
        for (size_t i = 0; i < (size_t)b->o.agents; i++) {
            agent_kick(b, &b->agents[i], now);
        }
        if (!warm && now >= warm_at) {
            take_snap(b, s0, false);
            warm = true;
        }
        if (now >= end_at) {
            take_snap(b, s1, true);
            return;
        }
        progress(b, now, &last_ns, &last_ok);
        st_time_sleep_ms(SCHED_MS);
    }
}

static int run_load(struct bench *b)
{
    static struct snap s0;
    static struct snap s1;
    static struct metrics m0;
    int rv;
    fetch_metrics(b, &m0); /* before thousands of connections are dialled */
    if ((rv = open_sockets(b)) != 0 || (rv = open_slots(b)) != 0) {
        fprintf(stderr, "ingest_bench: nng: %s\n", nng_strerror(rv));
        return 1;
    }
    b->start_ns = st_time_mono_ns();
    for (size_t i = 0; i < (size_t)b->o.agents; i++) {
        set_next_due(b, &b->agents[i]);
    }
    drive(b, &s0, &s1);
    atomic_store(&b->stopping, true);
    report(b, &m0, &s0, &s1);
    fflush(stdout);
    for (int64_t dl = st_time_mono_ms() + DRAIN_MS;
         atomic_load(&b->busy) > 0 && st_time_mono_ms() < dl;) {
        st_time_sleep_ms(20);
    }
    for (size_t i = 0; i < b->nsocks; i++) {
        nng_close(b->socks[i]);
    }
    for (size_t i = 0; i < b->nslots; i++) {
        nng_aio_free(b->slots[i].aio);
    }
    return 0;
}

/* Wire bytes per sample at several points per frame, no network. */
static int run_bytes(struct bench *b)
{
    const char *t = b->o.bytes_list;
    printf("%-8s %-10s %-12s %-12s %-14s %-14s\n", "points", "samples", "proto_B", "wire_B",
           "proto_B/sample", "wire_B/sample");
    while (*t != '\0') {
        char item[32];
        size_t n = strcspn(t, ",");
        uint64_t p;
        uint64_t raw = 0;
        uint64_t wire = 0;
        double cpu;
        double frames;
        snprintf(item, sizeof(item), "%.*s", (int)n, t);
        t += n + (t[n] == ',');
        if (st_parse_u64(item, &p) != ST_OK || p == 0 || p > MAX_POINTS) {
            fprintf(stderr, "ingest_bench: bad points %s\n", item);
            return 1;
        }
        b->o.points = p;
        b->samples_per_frame = b->o.series * p;
        b->period_ms = (int64_t)p * INTERVAL_MS;
        for (size_t i = 0; i < (size_t)b->o.agents; i++) {
            agent_reset(&b->agents[i]);
            if (agent_init(b, &b->agents[i], i) != ST_OK) {
                return 1;
            }
        }
        /* Ten minutes of each agent's data, whatever P is. */
        if (preencode(b, 600 / p + 1, &cpu, &raw, &wire) != ST_OK) {
            return 1;
        }
        frames = 0;
        for (size_t i = 0; i < (size_t)b->o.agents; i++) {
            frames += (double)b->agents[i].nenv;
        }
        printf("%-8" PRIu64 " %-10" PRIu64 " %-12.0f %-12.0f %-14.3f %-14.3f\n", p,
               b->samples_per_frame, (double)raw / frames, (double)wire / frames,
               (double)raw / frames / (double)b->samples_per_frame,
               (double)wire / frames / (double)b->samples_per_frame);
        printf("RESULT bytes points=%" PRIu64 " samples_per_frame=%" PRIu64
               " proto_bytes_per_frame=%.0f wire_bytes_per_frame=%.0f "
               "wire_bytes_per_sample=%.3f encode_us_per_frame=%.1f\n",
               p, b->samples_per_frame, (double)raw / frames, (double)wire / frames,
               (double)wire / frames / (double)b->samples_per_frame, cpu * 1e6 / frames);
    }
    return 0;
}

/* ---- main ---- */

static void usage(void)
{
    fprintf(stderr,
            "usage: ingest_bench [options]\n"
            "  --url URL            collector ingest URL (tcp://127.0.0.1:9740)\n"
            "  --metrics URL        collector /metrics URL, read before the first frame and at the "
            "end\n"
            "  --collector-pid PID  read the collector's CPU and RSS from /proc\n"
            "  --agents N           simulated agents (200)\n"
            "  --series N           series per agent (200)\n"
            "  --points P           points per series per frame (10)\n"
            "  --inflight K         requests in flight per agent (2)\n"
            "  --sockets S          req0 sockets shared by the agents (0: one per agent)\n"
            "  --warmup S           seconds before the measured window (5)\n"
            "  --duration S         seconds measured (20)\n"
            "  --pace realtime|max  realtime (default): each agent sends one frame per flush\n"
            "                       period, at a random phase, with wall-clock data times (the\n"
            "                       offered load is agents x series samples/s); max: every\n"
            "                       agent sends as fast as acks return, data a day back\n"
            "  --max-rate R         --pace max: samples/s the pre-encoded frames must last for\n"
            "  --live               encode frames while sending instead of before\n"
            "  --level L            zstd level (6, as the agent)\n"
            "  --codec C            envelope codec: 1 zstd, 2 zstd with the wire dictionary (2)\n"
            "  --bytes P,P,...      only print wire bytes per sample at these points per frame\n"
            "  --dump DIR           with --bytes, also write every raw (uncompressed) frame there\n"
            "  --seed N             random seed (1)\n"
            "  --progress           print the acked rate every second (stderr)\n");
}

static int parse_u64_opt(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    uint64_t v;
    if (st_parse_u64(s, &v) != ST_OK || v < lo || v > hi) {
        return ST_EINVAL;
    }
    *out = v;
    return ST_OK;
}

static const struct option LONG_OPTS[] = {
    {"url", 1, NULL, 'u'},      {"metrics", 1, NULL, 'm'},  {"collector-pid", 1, NULL, 'p'},
    {"agents", 1, NULL, 'a'},   {"series", 1, NULL, 's'},   {"points", 1, NULL, 'P'},
    {"inflight", 1, NULL, 'k'}, {"sockets", 1, NULL, 'S'},  {"warmup", 1, NULL, 'w'},
    {"duration", 1, NULL, 'd'}, {"max-rate", 1, NULL, 'r'}, {"live", 0, NULL, 'L'},
    {"level", 1, NULL, 'l'},    {"bytes", 1, NULL, 'b'},    {"seed", 1, NULL, 'e'},
    {"progress", 0, NULL, 'g'}, {"pace", 1, NULL, 'c'},     {"dump", 1, NULL, 'D'},
    {"codec", 1, NULL, 'C'},    {"help", 0, NULL, 'h'},     {NULL, 0, NULL, 0}};

/* Applies option c with its argument to o. */
static int apply_opt(struct opts *o, int c, const char *arg)
{
    int rv = ST_OK;
    uint64_t v = 0;
    switch (c) {
    case 'u':
        o->url = arg;
        break;
    case 'm':
        o->metrics_url = arg;
        break;
    case 'p':
        rv = parse_u64_opt(arg, 1, 1u << 22, &v);
        o->collector_pid = (int)v;
        break;
    case 'a':
        rv = parse_u64_opt(arg, 1, 100000, &o->agents);
        break;
    case 's':
        rv = parse_u64_opt(arg, 1, ST_FRAME_MAX_SERIES, &o->series);
        break;
    case 'P':
        rv = parse_u64_opt(arg, 1, MAX_POINTS, &o->points);
        break;
    case 'k':
        rv = parse_u64_opt(arg, 1, 32, &o->inflight);
        break;
    case 'S':
        rv = parse_u64_opt(arg, 0, 100000, &o->sockets);
        break;
    case 'w':
        rv = st_parse_double(arg, &o->warmup_s);
        break;
    case 'd':
        rv = st_parse_double(arg, &o->duration_s);
        break;
    case 'r':
        rv = st_parse_double(arg, &o->max_rate);
        break;
    case 'g':
        o->progress = true;
        break;
    case 'c':
        o->pace_max = strcmp(arg, "max") == 0;
        rv = o->pace_max || strcmp(arg, "realtime") == 0 ? ST_OK : ST_EINVAL;
        break;
    case 'L':
        o->live = true;
        break;
    case 'l':
        rv = parse_u64_opt(arg, 1, 19, &v);
        o->level = (int)v;
        break;
    case 'C':
        rv = parse_u64_opt(arg, ST_CODEC_ZSTD, ST_CODEC_ZSTD_DICT, &v);
        o->codec = (int)v;
        break;
    case 'b':
        o->bytes_list = arg;
        break;
    case 'D':
        o->dump_dir = arg;
        break;
    case 'e':
        rv = parse_u64_opt(arg, 0, UINT32_MAX, &o->seed);
        break;
    default:
        rv = ST_EINVAL;
        break;
    }
    return rv;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
    int c;
    int rv = ST_OK;
    while (rv == ST_OK && (c = getopt_long(argc, argv, "", LONG_OPTS, NULL)) != -1) {
        rv = apply_opt(o, c, optarg);
    }
    if (rv != ST_OK || optind != argc || o->warmup_s < 0 || o->duration_s <= 0 ||
        o->max_rate <= 0) {
        usage();
        return ST_EINVAL;
    }
    return ST_OK;
}

/* What this run will do, on stdout. */
static void print_plan(const struct bench *b)
{
    printf("ingest_bench: %" PRIu64 " agents x %" PRIu64 " series x %" PRIu64 " points = %" PRIu64
           " samples/frame, %" PRIu64 " in flight per agent, %s, %s\n",
           b->o.agents, b->o.series, b->o.points, b->samples_per_frame, b->o.inflight,
           b->o.live ? "encoding live" : "pre-encoded frames",
           b->o.pace_max ? "as fast as acks return (data a day back)"
                         : "one frame per agent per flush period (data at wall-clock time)");
    if (!b->o.pace_max) {
        printf("offered load: %.0f samples/s, %.1f frames/s\n",
               (double)(b->samples_per_frame * b->o.agents) * 1000.0 / (double)b->period_ms,
               (double)b->o.agents * 1000.0 / (double)b->period_ms);
    }
}

/* Encodes every frame of the run before the timed phase and says what
 * that cost. */
static int prepare_frames(struct bench *b)
{
    double enc_cpu = 0;
    uint64_t raw = 0;
    uint64_t wire = 0;
    uint64_t frames = 0;
    int64_t t = st_time_mono_ns();
    if (preencode(b, frames_needed(b), &enc_cpu, &raw, &wire) != ST_OK) {
        fprintf(stderr, "ingest_bench: encoding failed\n");
        return ST_ENOMEM;
    }
    for (size_t i = 0; i < (size_t)b->o.agents; i++) {
        frames += b->agents[i].nenv;
    }
    printf("pre-encoded %" PRIu64 " frames in %.1f s (%.1f us CPU per frame, %.0f wire "
           "bytes/frame, %.3f bytes/sample)\n",
           frames, (double)(st_time_mono_ns() - t) / 1e9, enc_cpu * 1e6 / (double)frames,
           (double)wire / (double)frames,
           (double)wire / (double)frames / (double)b->samples_per_frame);
    fflush(stdout);
    return ST_OK;
}

int main(int argc, char **argv)
{
    static struct bench b;
    b.o = (struct opts){.url = "tcp://127.0.0.1:9740",
                        .agents = 200,
                        .series = 200,
                        .points = 10,
                        .inflight = 2,
                        .warmup_s = 5,
                        .duration_s = 20,
                        .max_rate = 2.5e6,
                        .level = 6,
                        .codec = ST_CODEC_ZSTD_DICT,
                        .seed = 1};
    if (parse_opts(argc, argv, &b.o) != ST_OK) {
        return 2;
    }
    b.samples_per_frame = b.o.series * b.o.points;
    b.period_ms = (int64_t)b.o.points * INTERVAL_MS;
    if (b.o.pace_max) {
        /* A day back leaves room for fast-forwarded agents inside max_age
         * (48 h) and never runs into max_skew (5 min ahead). */
        b.t0_ms = (st_time_wall_ms() - 24LL * 3600 * 1000) / b.period_ms * b.period_ms;
    } else {
        /* Frame 1 of every agent ends about now (plus its phase): from
         * then on the data time follows the wall clock, as a fleet's does. */
        b.t0_ms = st_time_wall_ms() / INTERVAL_MS * INTERVAL_MS - b.period_ms;
    }
    b.defs = build_defs((size_t)b.o.series);
    b.agents = calloc((size_t)b.o.agents, sizeof(*b.agents));
    if (b.defs == NULL || b.agents == NULL) {
        return 1;
    }
    for (size_t i = 0; i < (size_t)b.o.agents; i++) {
        if (agent_init(&b, &b.agents[i], i) != ST_OK) {
            return 1;
        }
    }
    if (b.o.bytes_list != NULL) {
        return run_bytes(&b);
    }
    print_plan(&b);
    if (!b.o.live && prepare_frames(&b) != ST_OK) {
        return 1;
    }
    return run_load(&b);
}
