/* engine_bench: one optimization-engine run over a fleet-sized store, and
 * what engine runs do to a concurrent writer's commits. It loads a store
 * in process (1,000 hosts x 200 catalog series with a day of history and
 * planted problems for the rules to find), times st_engine_run and counts
 * findings, then measures the commit latency of a writer thread applying
 * frames with and without engine runs going on. It prints figures; it
 * asserts nothing. See BENCHMARKS.md. */
#include "engine.h"
#include "err.h"
#include "frame.h"
#include "sketch.h"
#include "store.h"
#include "timeutil.h"
#include "util.h"
#include "bench_util.h"

#include <getopt.h>
#include <inttypes.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SEC_MS 1000LL
#define MIN_MS 60000LL
#define HOUR_MS 3600000LL
#define T_DATA_END 1800000000000LL /* the last point ends here (on an hour) */
#define NOW_OFFSET_MS 7300         /* the engine's clock: a wall-clock time past it */
#define MAX_SERIES 400
#define MAX_POINTS 60
#define MAX_LABELS 4
#define LEVELS 8
#define VARIANTS 8
#define MAX_RUNS 1000
#define MAX_LAT 200000
#define SLICE_MS 20
#define GRACE_MS 30000
#define MIB (1024.0 * 1024.0)

/* ---- the catalog ---- */

enum role { R_EDGE, R_CDN, R_APP, R_DB, NROLES };
#define B_EDGE (1 << R_EDGE)
#define B_CDN (1 << R_CDN)
#define B_APP (1 << R_APP)
#define B_DB (1 << R_DB)
#define B_WEB (B_EDGE | B_CDN | B_APP)
#define B_ALL (B_WEB | B_DB)

/* How a series' values are made. */
enum gen {
    G_LAT,
    G_FN_LAT,
    G_FN_BYTES,
    G_REQ,
    G_ERR,
    G_CACHE,
    G_EVICT,
    G_CMEM,
    G_RETRANS,
    G_OUTSEG,
    G_RESETS,
    G_TCP_SMALL,
    G_ESTAB,
    G_CPU,
    G_MEMAVAIL,
    G_MEMTOTAL,
    G_AGENT_CPU,
    G_AGENT_RSS,
    G_RSS,
    G_RSS_PEAK,
    G_ANON,
    G_LARGEST,
    G_RT_UPDATES,
    G_RT_BYTES,
    G_RT_SUBS,
    G_NGX,
    G_STMT_CALLS,
    G_STMT_TIME,
    G_STMT_ROWS,
    G_STMT_MEAN,
    G_SEQ,
    G_SEQ_TUP,
    G_IDX,
    G_IDX_TUP,
    G_LIVE,
    G_DBMISC,
    G_PAD
};

struct row {
    const char *name;
    int kind;
    int roles;
    enum gen gen;
    const char *k1;
    const char *const *v1; /* NULL with k1: the role's own list (caches, processes) */
    const char *k2;
    const char *const *v2;
    int scale;
    bool history; /* also in the day of 1-minute history */
};

static const char *const ROUTES[] = {"/",          "/api/cart", "/api/search",
                                     "/api/login", "/product",  "/api/orders",
                                     "/static",    "/ws",       NULL};
static const char *const CLASSES[] = {"2xx", "4xx", "5xx", NULL};
static const char *const CDN_RESULTS[] = {"hit", "miss", "pass", "hitmiss", NULL};
static const char *const API_RESULTS[] = {"hit", "miss", NULL};
static const char *const FUNCS[] = {"getCart",   "search", "login",  "checkout", "listItems",
                                    "addToCart", "render", "notify", NULL};
static const char *const CHANNELS[] = {"prices", "orders", "chat", "presence",
                                       "stock",  "alerts", NULL};
static const char *const TABLES[] = {"orders", "users", "products", "sessions",
                                     "events", "carts", NULL};
static const char *const DBMISC[] = {"db.cache.blks_hit",
                                     "db.cache.blks_read",
                                     "db.connections",
                                     "db.xact.commit",
                                     "db.xact.rollback",
                                     "db.deadlocks",
                                     NULL};
static const char *const NGX[] = {"active", "reading", "writing", "waiting", NULL};
static const char *const PROCS[NROLES][5] = {
    {"nginx", "varnishd", "haproxy", "sshd", NULL},
    {"nginx", "haproxy", "sshd", "node_exporter", NULL},
    {"node", "php-fpm", "nginx", "redis-server", NULL},
    {"postgres", "pgbouncer", "sshd", "node_exporter", NULL}};
static const char *const CACHE_OF[NROLES][2] = {
    {"varnish", NULL}, {"nginx", NULL}, {"redis", NULL}, {"postgres", NULL}};

/* Statements: queryid, query, table, database; q7f3 is slow and scans. */
static const char *const STMTS[][4] = {
    {"q1a2", "SELECT * FROM users WHERE id = $1", "users", "shop"},
    {"q7f3", "SELECT * FROM orders WHERE customer_id = $1 ORDER BY created_at DESC", "orders",
     "shop"},
    {"q9c0", "SELECT * FROM products WHERE sku = $1", "products", "shop"},
    {"q2be", "UPDATE sessions SET seen_at = now() WHERE token = $1", "sessions", "auth"},
    {"q44d", "INSERT INTO events (kind, payload) VALUES ($1, $2)", "events", "shop"},
    {"q5e1", "SELECT * FROM carts WHERE user_id = $1", "carts", "shop"},
    {"q81a", "SELECT count(*) FROM orders WHERE status = $1", "orders", "shop"},
    {"q0dd", "DELETE FROM sessions WHERE expires_at < now()", "sessions", "auth"},
    {"q3f9", "SELECT * FROM users WHERE email = $1", "users", "auth"},
    {"q6b2", "UPDATE carts SET total = $2 WHERE id = $1", "carts", "shop"},
};
#define NSTMTS ((int)ST_ARRAY_LEN(STMTS))

#define C_ STRATA__V1__KIND__COUNTER
#define G_ STRATA__V1__KIND__GAUGE
#define D_ STRATA__V1__KIND__DISTRIBUTION
#define STMT_ROW ((const char *const *)1) /* v1 marker: the STMTS table */
#define MISC_ROW ((const char *const *)2) /* name from DBMISC */

static const struct row CATALOG[] = {
    {"host.cpu.utilization", G_, B_ALL, G_CPU, NULL, NULL, NULL, NULL, 4, false},
    {"host.mem.available", G_, B_ALL, G_MEMAVAIL, NULL, NULL, NULL, NULL, 0, false},
    {"host.mem.total", G_, B_ALL, G_MEMTOTAL, NULL, NULL, NULL, NULL, 0, false},
    {"agent.cpu.seconds", C_, B_ALL, G_AGENT_CPU, NULL, NULL, NULL, NULL, 3, false},
    {"agent.rss", G_, B_ALL, G_AGENT_RSS, NULL, NULL, NULL, NULL, 0, false},
    {"tcp.retrans_segs", C_, B_ALL, G_RETRANS, NULL, NULL, NULL, NULL, 0, false},
    {"tcp.out_segs", C_, B_ALL, G_OUTSEG, NULL, NULL, NULL, NULL, 0, false},
    {"tcp.attempt_fails", C_, B_ALL, G_TCP_SMALL, NULL, NULL, NULL, NULL, 0, false},
    {"tcp.estab_resets", C_, B_ALL, G_RESETS, NULL, NULL, NULL, NULL, 0, false},
    {"tcp.active_opens", C_, B_ALL, G_TCP_SMALL, NULL, NULL, NULL, NULL, 0, false},
    {"tcp.curr_estab", G_, B_ALL, G_ESTAB, NULL, NULL, NULL, NULL, 0, false},
    {"tcp.listen_drops", C_, B_ALL, G_TCP_SMALL, NULL, NULL, NULL, NULL, 0, false},
    {"tcp.listen_overflows", C_, B_ALL, G_TCP_SMALL, NULL, NULL, NULL, NULL, 0, false},
    {"tcp.timeouts", C_, B_ALL, G_TCP_SMALL, NULL, NULL, NULL, NULL, 0, false},
    {"mem.rss", G_, B_ALL, G_RSS, "process", NULL, NULL, NULL, 0, false},
    {"mem.rss.peak", G_, B_ALL, G_RSS_PEAK, "process", NULL, NULL, NULL, 0, false},
    {"mem.anon", G_, B_ALL, G_ANON, "process", NULL, NULL, NULL, 0, false},
    {"http.server.duration", D_, B_WEB, G_LAT, "route", ROUTES, NULL, NULL, 0, false},
    {"http.server.requests", C_, B_WEB, G_REQ, "route", ROUTES, "status_class", CLASSES, 0, false},
    {"http.server.errors", C_, B_WEB, G_ERR, "route", ROUTES, NULL, NULL, 0, false},
    {"cache.requests", C_, B_EDGE | B_CDN, G_CACHE, "cache", NULL, "result", CDN_RESULTS, 0, false},
    {"cache.requests", C_, B_APP, G_CACHE, "cache", NULL, "result", API_RESULTS, 0, false},
    {"cache.evictions", C_, B_WEB, G_EVICT, "cache", NULL, NULL, NULL, 0, false},
    {"cache.memory.used", G_, B_WEB, G_CMEM, "cache", NULL, NULL, NULL, 0, false},
    {"nginx.connections", G_, B_EDGE | B_CDN, G_NGX, "state", NGX, NULL, NULL, 0, false},
    {"app.function.duration", D_, B_APP, G_FN_LAT, "function", FUNCS, NULL, NULL, 0, false},
    {"app.function.response_bytes", D_, B_APP, G_FN_BYTES, "function", FUNCS, NULL, NULL, 0, false},
    {"app.memory.largest_object", G_, B_APP, G_LARGEST, "process", NULL, NULL, NULL, 0, false},
    {"realtime.updates", C_, B_APP, G_RT_UPDATES, "channel", CHANNELS, NULL, NULL, 0, false},
    {"realtime.bytes", C_, B_APP, G_RT_BYTES, "channel", CHANNELS, NULL, NULL, 0, false},
    {"realtime.subscriptions", G_, B_APP, G_RT_SUBS, "channel", CHANNELS, NULL, NULL, 0, false},
    {"db.statement.calls", C_, B_DB, G_STMT_CALLS, "queryid", STMT_ROW, NULL, NULL, 0, false},
    {"db.statement.time", C_, B_DB, G_STMT_TIME, "queryid", STMT_ROW, NULL, NULL, 3, false},
    {"db.statement.rows", C_, B_DB, G_STMT_ROWS, "queryid", STMT_ROW, NULL, NULL, 0, false},
    {"db.statement.mean_time", G_, B_DB, G_STMT_MEAN, "queryid", STMT_ROW, NULL, NULL, 4, false},
    {"db.table.seq_scan", C_, B_DB, G_SEQ, "table", TABLES, "database", NULL, 0, true},
    {"db.table.seq_tup_read", C_, B_DB, G_SEQ_TUP, "table", TABLES, "database", NULL, 0, true},
    {"db.table.idx_scan", C_, B_DB, G_IDX, "table", TABLES, "database", NULL, 0, true},
    {"db.table.idx_tup_fetch", C_, B_DB, G_IDX_TUP, "table", TABLES, "database", NULL, 0, true},
    {"db.table.live_tup", G_, B_DB, G_LIVE, "table", TABLES, "database", NULL, 0, true},
    {"", C_, B_DB, G_DBMISC, NULL, MISC_ROW, NULL, NULL, 0, false},
};

/* ---- options ---- */

struct opts {
    int hosts;
    int series;
    int raw_minutes;   /* of 10 s points before the end */
    int points;        /* 10 s points per series per frame */
    int history_hours; /* the day: 1-minute points before the raw part */
    int batch;
    int runs;
    bool build_recent;    /* roll up the raw part too (slow; the engine reads raw) */
    bool reuse;           /* the store in dir was built by an earlier run (profiling) */
    bool stop_probe;      /* time how fast a run returns once a stop is requested */
    const char *dump;     /* after each run, its findings and status as a JSON line */
    bool no_breakdown;    /* skip the per-rule breakdown (profiling the runs alone) */
    bool no_feed;         /* the runs judge data already stored: none arrives meanwhile */
    double writer_s;      /* each writer phase */
    int writer_batch;     /* frames per commit */
    int writer_period_ms; /* between batches */
    const char *dir;
};

/* ---- values ---- */

static enum role role_of(int h)
{
    int k = h % 20;
    return k < 3 ? R_EDGE : (k < 4 ? R_CDN : (k < 17 ? R_APP : R_DB));
}

/* Planted problems, each on a few hosts. */
static bool leaks(int h)
{
    return role_of(h) == R_APP && h % 100 == 5;
}

static bool hot_cpu(int h)
{
    return h % 50 == 7;
}

static bool lossy(int h)
{
    return h % 50 == 11;
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb3fe1a85ec53ULL;
    return x ^ (x >> 33);
}

/* A deterministic jitter in [1 - j, 1 + j). */
static double jitter(uint64_t seed, double j)
{
    return 1.0 + j * ((double)(mix(seed) >> 11) / 4503599627370496.0 - 1.0);
}

static Strata__V1__Sketch sk_pool[LEVELS][VARIANTS];
static const double LEVEL_S[LEVELS] = {0.08, 0.8, 0.10, 0.16, 0.05, 0.9, 20000, 3.0e6};
enum { L_OK, L_SLOW, L_CART, L_CART_REG, L_FN, L_FN_SLOW, L_BYTES, L_BYTES_BIG };

static int pool_build(void)
{
    uint64_t r = 0x2545f4914f6cdd1dULL;
    for (int l = 0; l < LEVELS; l++) {
        for (int v = 0; v < VARIANTS; v++) {
            st_sketch *sk;
            int rv = st_sketch_new(0, &sk);
            for (int k = 0; rv == ST_OK && k < 50; k++) {
                double g;
                r = mix(r + 1);
                g = (double)(r >> 11) / 9007199254740992.0;
                rv = st_sketch_insert(sk, LEVEL_S[l] * exp(0.6 * (g - 0.5)) * (0.9 + 0.025 * v));
            }
            strata__v1__sketch__init(&sk_pool[l][v]);
            rv = rv == ST_OK ? st_sketch_to_proto(sk, &sk_pool[l][v]) : rv;
            st_sketch_free(sk);
            if (rv != ST_OK) {
                return rv;
            }
        }
    }
    return ST_OK;
}

/* The sketch of a distribution point. */
static Strata__V1__Sketch *dist_at(const struct row *r, int h, int a, int64_t t)
{
    bool recent = t >= T_DATA_END - 5 * MIN_MS;
    int l = L_OK;
    if (r->gen == G_LAT) {
        const char *route = ROUTES[a];
        if (role_of(h) == R_APP && strcmp(route, "/api/search") == 0) {
            l = L_SLOW;
        } else if (role_of(h) == R_APP && strcmp(route, "/api/cart") == 0) {
            l = recent ? L_CART_REG : L_CART;
        }
    } else if (r->gen == G_FN_LAT) {
        l = strcmp(FUNCS[a], "search") == 0 ? L_FN_SLOW : L_FN;
    } else {
        l = strcmp(FUNCS[a], "search") == 0 ? L_BYTES_BIG : L_BYTES;
    }
    return &sk_pool[l][mix((uint64_t)t / 10000 + (uint64_t)h * 131 + (uint64_t)a) % VARIANTS];
}

static double http_value(const struct row *r, int h, int a, int b, int64_t t, double secs)
{
    bool recent = t >= T_DATA_END - 5 * MIN_MS;
    double rps = 30.0 * jitter((uint64_t)h * 7919 + (uint64_t)a, 0.2);
    if (r->gen == G_REQ) {
        return rps * secs * (b == 0 ? 0.97 : (b == 1 ? 0.025 : 0.005));
    }
    /* errors: 1 %, 5 % on /api/login in the last five minutes */
    return rps * secs * (recent && strcmp(ROUTES[a], "/api/login") == 0 ? 0.05 : 0.01);
}

static double cache_value(enum role ro, int b, double secs)
{
    static const double cdn[] = {60, 37, 2, 1}; /* varnish: 0.6 hits */
    static const double edge[] = {95, 4, 1, 0}; /* nginx: fine */
    static const double api[] = {30, 70};       /* redis: 0.3 hits */
    const double *p = ro == R_EDGE ? cdn : (ro == R_CDN ? edge : api);
    return p[b] * secs;
}

static double stmt_value(const struct row *r, int a, double secs)
{
    bool slow = strcmp(STMTS[a][0], "q7f3") == 0;
    double calls = (slow ? 2.0 : 50.0) * secs;
    double mean = slow ? 0.45 : 0.004;
    switch (r->gen) {
    case G_STMT_CALLS:
        return calls;
    case G_STMT_TIME:
        return calls * mean;
    case G_STMT_ROWS:
        return calls * (slow ? 40 : 1);
    default:
        return mean;
    }
}

static double table_value(const struct row *r, int a, double secs)
{
    bool orders = a == 0;
    bool events = a == 4; /* written, never read */
    switch (r->gen) {
    case G_SEQ:
        return events ? 0 : (orders ? 4.0 : 0.01) * secs;
    case G_SEQ_TUP:
        return events ? 0 : (orders ? 4.0e5 : 100.0) * secs;
    case G_IDX:
        return events ? 0 : (orders ? 1.0 : 80.0) * secs;
    case G_IDX_TUP:
        return events ? 0 : (orders ? 10.0 : 90.0) * secs;
    default:
        return orders ? 4.0e6 : (events ? 5.0e7 : 2.0e5);
    }
}

static double proc_value(const struct row *r, int h, int a, int64_t t)
{
    double base = (120.0 + 40.0 * a) * MIB * jitter((uint64_t)h * 31 + (uint64_t)a, 0.1);
    if (leaks(h) && a == 0) {
        /* 64 MiB an hour, steadily, over the whole day */
        base += 64.0 * MIB * (double)(t - (T_DATA_END - 24 * HOUR_MS)) / (double)HOUR_MS;
    }
    if (r->gen == G_RSS_PEAK) {
        return base * 1.1;
    }
    if (r->gen == G_LARGEST) {
        return a == 1 ? 24.0 * MIB : 2.0 * MIB;
    }
    return r->gen == G_ANON ? base * 0.8 : base;
}

/* The value of a counter (over secs) or gauge at t. */
static double value_at(const struct row *r, int h, int a, int b, int64_t t, double secs)
{
    enum role ro = role_of(h);
    switch (r->gen) {
    case G_REQ:
    case G_ERR:
        return http_value(r, h, a, b, t, secs);
    case G_CACHE:
        return cache_value(ro, b, secs);
    case G_EVICT:
        return 2 * secs;
    case G_CMEM:
        return 2.0 * 1024 * MIB;
    case G_RETRANS:
        return (lossy(h) ? 600.0 : 8.0) * secs;
    case G_OUTSEG:
        return 8000.0 * secs;
    case G_RESETS:
        return (lossy(h) ? 5.0 : 0.1) * secs;
    case G_TCP_SMALL:
        return 0.5 * secs;
    case G_ESTAB:
        return 300 + h % 50;
    case G_CPU:
        return hot_cpu(h) ? 0.93 : 0.3 * jitter((uint64_t)h, 0.3);
    case G_MEMAVAIL:
        return 9.0 * 1024 * MIB;
    case G_MEMTOTAL:
        return 16.0 * 1024 * MIB;
    case G_AGENT_CPU:
        return 0.0005 * secs;
    case G_AGENT_RSS:
        return 6.0 * MIB;
    case G_RSS:
    case G_RSS_PEAK:
    case G_ANON:
    case G_LARGEST:
        return proc_value(r, h, a, t);
    case G_RT_UPDATES:
        return 40.0 * secs;
    case G_RT_BYTES:
        return 40.0 * 300 * secs;
    case G_RT_SUBS:
        return 20;
    case G_NGX:
        return 50 + a;
    case G_STMT_CALLS:
    case G_STMT_TIME:
    case G_STMT_ROWS:
    case G_STMT_MEAN:
        return stmt_value(r, a, secs);
    case G_DBMISC:
        return 100 * secs;
    case G_PAD:
        return 10 * secs;
    default:
        return table_value(r, a, secs);
    }
}

/* ---- frames ---- */

/* One role's frame, refilled for each host and time: the store copies
 * what it keeps, so hosts of a role share it. */
struct tmpl {
    enum role role;
    int n;
    int catalog_n; /* before padding */
    const struct row *row[MAX_SERIES];
    int a[MAX_SERIES];
    int b[MAX_SERIES];
    char pad[MAX_SERIES][16];
    Strata__V1__Series s[MAX_SERIES];
    Strata__V1__Series *sp[MAX_SERIES];
    Strata__V1__Label lab[MAX_SERIES][MAX_LABELS];
    Strata__V1__Label *lp[MAX_SERIES][MAX_LABELS];
    int64_t iv[MAX_SERIES][MAX_POINTS];
    Strata__V1__Sketch *sk[MAX_SERIES][MAX_POINTS];
    Strata__V1__Frame f;
    Strata__V1__Agent agent;
    uint8_t id[16];
    char host[32];
};

static const struct row PAD_ROW = {"app.events", C_,   B_ALL, G_PAD, "name",
                                   NULL,         NULL, NULL,  0,     false};

static void add_label(struct tmpl *tp, int i, const char *k, const char *v)
{
    Strata__V1__Series *s = &tp->s[i];
    Strata__V1__Label *l = &tp->lab[i][s->n_labels];
    strata__v1__label__init(l);
    l->key = (char *)k;
    l->value = (char *)v;
    tp->lp[i][s->n_labels] = l;
    s->n_labels++;
}

static void add_series(struct tmpl *tp, const struct row *r, int a, int b)
{
    int i = tp->n++;
    Strata__V1__Series *s = &tp->s[i];
    strata__v1__series__init(s);
    tp->row[i] = r;
    tp->a[i] = a;
    tp->b[i] = b;
    s->name = (char *)(r->v1 == MISC_ROW ? DBMISC[a] : r->name);
    s->unit = (char *)(r->kind == D_ ? "s" : "");
    s->kind = r->kind;
    s->scale = r->scale;
    s->labels = tp->lp[i];
    if (r->v1 == STMT_ROW) {
        add_label(tp, i, "queryid", STMTS[a][0]);
        add_label(tp, i, "query", STMTS[a][1]);
        add_label(tp, i, "table", STMTS[a][2]);
        add_label(tp, i, "database", STMTS[a][3]);
    } else if (r->gen == G_PAD) {
        snprintf(tp->pad[i], sizeof(tp->pad[i]), "e%d", a);
        add_label(tp, i, r->k1, tp->pad[i]);
    } else if (r->k1 != NULL) {
        const char *const *v1 = r->v1 != NULL                 ? r->v1
                                : strcmp(r->k1, "cache") == 0 ? CACHE_OF[tp->role]
                                                              : PROCS[tp->role];
        add_label(tp, i, r->k1, v1[a]);
    }
    if (r->k2 != NULL) {
        add_label(tp, i, r->k2, r->v2 != NULL ? r->v2[b] : (a % 2 ? "auth" : "shop"));
    }
    if (r->kind == D_) {
        s->sketches = tp->sk[i];
    } else {
        s->ivalues = tp->iv[i];
    }
    tp->sp[i] = s;
}

static int count(const char *const *v)
{
    int n = 0;
    while (v[n] != NULL) {
        n++;
    }
    return n;
}

/* How many values the row's first label takes for role ro. */
static int list_len(const struct row *r, enum role ro)
{
    if (r->v1 == STMT_ROW) {
        return NSTMTS;
    }
    if (r->v1 == MISC_ROW) {
        return count(DBMISC);
    }
    if (r->k1 == NULL) {
        return 1;
    }
    if (r->v1 == NULL) {
        return count(strcmp(r->k1, "cache") == 0 ? CACHE_OF[ro] : PROCS[ro]);
    }
    return count(r->v1);
}

/* The role's series (history: only the rows kept for the day), padded
 * with app.events counters to nseries. */
static void tmpl_init(struct tmpl *tp, enum role ro, int nseries, bool history)
{
    memset(tp, 0, sizeof(*tp));
    tp->role = ro;
    for (size_t k = 0; k < ST_ARRAY_LEN(CATALOG); k++) {
        const struct row *r = &CATALOG[k];
        int nb = r->v2 != NULL ? count(r->v2) : 1;
        if (!(r->roles & (1 << ro)) || (history && !r->history)) {
            continue;
        }
        for (int a = 0; a < list_len(r, ro) && tp->n < nseries; a++) {
            for (int b = 0; b < nb && tp->n < nseries; b++) {
                add_series(tp, r, a, b);
            }
        }
    }
    tp->catalog_n = tp->n;
    for (int a = 0; !history && tp->n < nseries; a++) {
        add_series(tp, &PAD_ROW, a, 0);
    }
    strata__v1__frame__init(&tp->f);
    strata__v1__agent__init(&tp->agent);
    tp->agent.host = tp->host;
    tp->agent.role = (Strata__V1__Role)(ro + 1); /* EDGE = 1 ... DB = 4 */
    tp->f.agent = &tp->agent;
    tp->f.agent_id.data = tp->id;
    tp->f.agent_id.len = 16;
    tp->f.series = tp->sp;
    tp->f.n_series = (size_t)tp->n;
}

/* Fills the frame of host h: npts points of interval ms from t. */
static uint64_t tmpl_fill(struct tmpl *tp, int h, uint64_t seq, int64_t t, int64_t interval,
                          int npts)
{
    double secs = (double)interval / 1000.0;
    snprintf(tp->host, sizeof(tp->host), "%s-%04d",
             tp->role == R_EDGE  ? "edge"
             : tp->role == R_CDN ? "cdn"
             : tp->role == R_APP ? "app"
                                 : "db",
             h);
    memset(tp->id, 0, 16);
    memcpy(tp->id, &h, sizeof(h));
    tp->id[15] = 0xe7;
    tp->f.seq = seq;
    tp->f.sent_unix_ms = t + interval * npts;
    for (int i = 0; i < tp->n; i++) {
        Strata__V1__Series *s = &tp->s[i];
        const struct row *r = tp->row[i];
        double mul = pow(10.0, s->scale);
        int64_t prev = 0;
        s->start_unix_ms = t;
        s->interval_ms = (uint32_t)interval;
        for (int p = 0; p < npts; p++) {
            int64_t pt = t + p * interval;
            if (r->kind == D_) {
                tp->sk[i][p] = dist_at(r, h, tp->a[i], pt);
            } else {
                int64_t v = llround(value_at(r, h, tp->a[i], tp->b[i], pt, secs) * mul);
                tp->iv[i][p] = v - prev; /* ivalues are deltas */
                prev = v;
            }
        }
        if (r->kind == D_) {
            s->n_sketches = (size_t)npts;
        } else {
            s->n_ivalues = (size_t)npts;
        }
    }
    return (uint64_t)tp->n * (uint64_t)npts;
}

/* ---- loading ---- */

struct load {
    st_store *st;
    st_store_txn *t;
    int inb;
    int batch;
    uint64_t samples;
    uint64_t frames;
    uint64_t *seq; /* per host */
};

static int load_apply(struct load *ld, struct tmpl *tp, int64_t now)
{
    bool dup = false;
    int rv;
    if (ld->t == NULL && (rv = st_store_begin(ld->st, &ld->t)) != ST_OK) {
        return rv;
    }
    rv = st_store_apply(ld->t, &tp->f, now, &dup);
    rv = rv == ST_OK && dup ? ST_EINVAL : rv;
    ld->frames++;
    if (rv == ST_OK && ++ld->inb >= ld->batch) {
        ld->inb = 0;
        rv = st_store_commit(ld->t);
        ld->t = NULL;
    }
    return rv;
}

static int load_flush(struct load *ld, int rv)
{
    if (ld->t != NULL) {
        rv = rv == ST_OK ? st_store_commit(ld->t) : (st_store_abort(ld->t), rv);
        ld->t = NULL;
    }
    ld->inb = 0;
    return rv;
}

/* Frames of npts points of interval from `from` to `to` for the hosts of
 * the roles in mask, with templates tps. */
static int load_span(struct load *ld, struct tmpl **tps, int hosts, int mask, int64_t from,
                     int64_t to, int64_t interval, int npts)
{
    int rv = ST_OK;
    for (int64_t t = from; t < to && rv == ST_OK; t += interval * npts) {
        int n = (int)ST_MIN((int64_t)npts, (to - t) / interval);
        for (int h = 0; h < hosts && rv == ST_OK; h++) {
            struct tmpl *tp = tps[role_of(h)];
            if (!(mask & (1 << role_of(h)))) {
                continue;
            }
            ld->samples += tmpl_fill(tp, h, ++ld->seq[h], t, interval, n);
            rv = load_apply(ld, tp, t + interval * n);
        }
    }
    return load_flush(ld, rv);
}

static int maintain_all(st_store *st, int64_t now, int *slices)
{
    bool more = true;
    int rv = ST_OK;
    while (more && rv == ST_OK) {
        rv = st_store_maintain(st, now, 1000, &more);
        (*slices)++;
    }
    return rv;
}

static int open_store(const struct opts *o, bool no_rollups, bool no_sync, st_store **st)
{
    struct st_store_opts so = {.dir = o->dir,
                               .map_size = 64ULL << 30,
                               .max_map_size = 1ULL << 40,
                               .no_sync = no_sync,
                               .no_rollups = no_rollups};
    return st_store_open(&so, st);
}

static double secs_since(int64_t t0)
{
    return (double)(st_time_mono_ns() - t0) / 1e9;
}

/* The history of the cold-table rows first (the rollup watermark starts
 * there), then the raw part with no rollups marked (see main). */
static int build_store(const struct opts *o, struct tmpl **full, struct tmpl **hist, uint64_t *seq)
{
    int64_t raw_start = T_DATA_END - (int64_t)o->raw_minutes * MIN_MS;
    int64_t hist_start = T_DATA_END - (int64_t)o->history_hours * HOUR_MS;
    struct load ld = {.batch = o->batch, .seq = seq};
    int slices = 0;
    int64_t t0 = st_time_mono_ns();
    int rv = open_store(o, false, true, &ld.st);
    if (rv == ST_OK && hist_start < raw_start) {
        rv = load_span(&ld, hist, o->hosts, B_DB, hist_start, raw_start, MIN_MS, 60);
        printf("  history: %" PRIu64 " frames, %" PRIu64 " samples (db.table.* of the db hosts, "
               "1-minute points, frames of an hour) in %.1f s\n",
               ld.frames, ld.samples, secs_since(t0));
        t0 = st_time_mono_ns();
        rv = rv == ST_OK ? maintain_all(ld.st, raw_start + GRACE_MS, &slices) : rv;
        printf("  history rolled up (1 m and 1 h) in %.1f s, %d slices\n", secs_since(t0), slices);
    }
    if (!o->build_recent) {
        st_store_close(ld.st);
        ld.st = NULL;
        rv = rv == ST_OK ? open_store(o, true, true, &ld.st) : rv;
    }
    ld.frames = ld.samples = 0;
    t0 = st_time_mono_ns();
    rv = rv == ST_OK
             ? load_span(&ld, full, o->hosts, B_ALL, raw_start, T_DATA_END, 10 * SEC_MS, o->points)
             : rv;
    printf("  raw: %" PRIu64 " frames, %" PRIu64 " samples (every series, 10 s points, %d per "
           "frame) in %.1f s\n",
           ld.frames, ld.samples, o->points, secs_since(t0));
    if (rv == ST_OK && o->build_recent) {
        t0 = st_time_mono_ns();
        slices = 0;
        rv = maintain_all(ld.st, T_DATA_END + GRACE_MS, &slices);
        printf("  raw part rolled up in %.1f s, %d slices\n", secs_since(t0), slices);
    }
    st_store_close(ld.st);
    return rv;
}

/* ---- engine runs ---- */

/* Sorts v[n] and gives its nearest-rank percentile p; NaN when empty. */
static double pct(double *v, int n, double p)
{
    if (n == 0) {
        return NAN;
    }
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return pct_sorted(v, n, p);
}

static void print_findings(st_engine *en)
{
    json_t *all = st_engine_findings(en, NULL, NULL, 0);
    json_t *by = json_object();
    json_t *st = st_engine_status(en);
    size_t i;
    json_t *f;
    const char *k;
    json_t *v;
    json_array_foreach(all, i, f)
    {
        const char *rule = json_string_value(json_object_get(f, "rule"));
        json_t *c = json_object_get(by, rule ? rule : "?");
        json_object_set_new(by, rule ? rule : "?",
                            json_integer(c != NULL ? json_integer_value(c) + 1 : 1));
    }
    printf("  findings: %zu (", json_array_size(all));
    json_object_foreach(by, k, v)
    {
        printf(" %s %lld", k, (long long)json_integer_value(v));
    }
    printf(" ); engine status %s\n", json_string_value(json_object_get(st, "status")));
    printf("RESULT engine_findings count=%zu\n", json_array_size(all));
    json_decref(st);
    json_decref(by);
    json_decref(all);
}

/* Every finding (in id order) and the status with its targets, to 17
 * digits and sorted keys: two builds' runs on copies of one store must
 * write the same lines. */
static void dump_run(st_engine *en, const char *path, int run)
{
    FILE *fp = fopen(path, "a");
    json_t *all = st_engine_findings(en, NULL, NULL, 0);
    json_t *line =
        json_pack("{s:i,s:o,s:o}", "run", run, "findings", all, "status", st_engine_status(en));
    char *text = line != NULL
                     ? json_dumps(line, JSON_SORT_KEYS | JSON_COMPACT | JSON_REAL_PRECISION(17))
                     : NULL;
    if (fp != NULL && text != NULL) {
        fprintf(fp, "%s\n", text);
    }
    if (fp != NULL) {
        fclose(fp);
    }
    free(text);
    json_decref(line);
}

static int by_seconds(const void *a, const void *b)
{
    const struct {
        const char *name;
        double s;
    } *x = a, *y = b;
    return x->s < y->s ? 1 : (x->s > y->s ? -1 : 0);
}

/* Where a run's wall time went, the largest first (the figures /metrics
 * gives as strata_engine_phase_seconds); which names the run. */
static void print_phases(const struct st_engine_stats *stats, const char *which)
{
    struct st_engine_stats es = *stats;
    struct {
        const char *name;
        double s;
    } ph[ST_ENGINE_PHASES_MAX];
    double sum = 0;
    for (size_t i = 0; i < es.nphase; i++) {
        ph[i].name = es.phase[i];
        ph[i].s = es.phase_seconds[i];
        sum += ph[i].s;
    }
    qsort(ph, es.nphase, sizeof(ph[0]), by_seconds);
    printf("  %s, %.1f ms wall (%.1f ms CPU), by phase:", which, es.last_seconds * 1e3,
           es.last_cpu_seconds * 1e3);
    for (size_t i = 0; i < es.nphase && ph[i].s >= 0.0005; i++) {
        printf(" %s %.1f", ph[i].name, ph[i].s * 1e3);
    }
    printf(" ms; the rest %.1f ms (findings upserted, answers kept or freed)\n",
           (es.last_seconds - sum) * 1e3);
    for (size_t i = 0; i < es.nphase; i++) {
        printf("RESULT engine_phase run=%s phase=%s ms=%.2f\n",
               strncmp(which, "the last", 8) == 0 ? "last" : "step_first", ph[i].name,
               ph[i].s * 1e3);
    }
}

/* What a run was: the first (a cold store), one within a step, a step's
 * first while the engine warms up (its second step: the kept windows are
 * filled from the whole window once), or a step's first once warm. */
enum run_kind { RUN_COLD, RUN_WITHIN, RUN_WARMUP, RUN_STEP };

/* The agents going on shipping while the runs go on: before each run,
 * every minute that has ended by the run's wall-clock time arrives, each
 * host's frame of it, through durable commits of writer_batch frames (the
 * store's tap hands each commit to the engine's kept windows). */
struct feeder {
    st_store *st;
    const struct opts *o;
    struct tmpl **full;
    uint64_t *seq;
    int64_t t; /* data time of the next minute */
    int minutes;
    double cpu_ms; /* the commits' CPU, the tap included */
};

static int feed_upto(struct feeder *f, int64_t wall)
{
    int64_t span = 10 * SEC_MS * f->o->points;
    int64_t c0 = cpu_ns();
    int rv = ST_OK;
    while (rv == ST_OK && f->t + span <= wall) {
        for (int h0 = 0; rv == ST_OK && h0 < f->o->hosts; h0 += f->o->writer_batch) {
            st_store_txn *t;
            if ((rv = st_store_begin(f->st, &t)) != ST_OK) {
                break;
            }
            for (int h = h0; rv == ST_OK && h < h0 + f->o->writer_batch && h < f->o->hosts; h++) {
                struct tmpl *tp = f->full[role_of(h)];
                bool dup = false;
                tmpl_fill(tp, h, ++f->seq[h], f->t, 10 * SEC_MS, f->o->points);
                rv = st_store_apply(t, &tp->f, f->t, &dup);
            }
            rv = rv == ST_OK ? st_store_commit(t) : (st_store_abort(t), rv);
        }
        f->t += span;
        f->minutes++;
    }
    f->cpu_ms += (double)(cpu_ns() - c0) / 1e6;
    return rv;
}

/* The median CPU of the runs of kind want. */
static double kind_median(const double *cpu, const enum run_kind *kind, int n, enum run_kind want,
                          int *count)
{
    double v[MAX_RUNS];
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (kind[i] == want) {
            v[k++] = cpu[i];
        }
    }
    *count = k;
    return pct(v, k, 0.5);
}

static int engine_runs(st_engine *en, const struct opts *o, int64_t now, struct feeder *fd)
{
    double wall[MAX_RUNS];
    double cpu[MAX_RUNS];
    bool first[MAX_RUNS]; /* the step's first run: its windows moved */
    enum run_kind kind[MAX_RUNS];
    struct st_engine_stats step_stats = {0};
    int64_t clock = INT64_MIN;
    int steps = 0;
    int n = o->runs;
    if (n < 1 || n > MAX_RUNS) {
        return ST_EINVAL;
    }
    for (int i = 0; i < n; i++) {
        int64_t t = now + (int64_t)i * 10 * SEC_MS;
        int64_t t0;
        int64_t c0;
        int rv = fd != NULL ? feed_upto(fd, t) : ST_OK;
        if (rv != ST_OK) {
            fprintf(stderr, "engine_bench: feeding: %s\n", st_strerror(rv));
            return rv;
        }
        t0 = st_time_mono_ns();
        c0 = cpu_ns();
        /* 1: the loop has work (findings to dispatch); not an error */
        rv = st_engine_run(en, t);
        cpu[i] = (double)(cpu_ns() - c0) / 1e6;
        wall[i] = (double)(st_time_mono_ns() - t0) / 1e6;
        if (rv < 0) {
            fprintf(stderr, "engine_bench: run %d: %s\n", i, st_strerror(rv));
            return rv;
        }
        first[i] = st_engine_clock(en, t) != clock;
        clock = st_engine_clock(en, t);
        steps += first[i];
        kind[i] =
            i == 0 ? RUN_COLD : (!first[i] ? RUN_WITHIN : (steps == 2 ? RUN_WARMUP : RUN_STEP));
        if (kind[i] == RUN_STEP) {
            st_engine_stats(en, &step_stats);
        }
        printf("  run %2d: %8.1f ms (CPU %8.1f ms)%s\n", i + 1, wall[i], cpu[i],
               kind[i] == RUN_COLD     ? "  the first: a cold store"
               : kind[i] == RUN_WARMUP ? "  the second step's first run: kept windows filled"
               : kind[i] == RUN_STEP   ? "  a step's first run: windows moved"
                                       : "");
        if (o->dump != NULL) {
            dump_run(en, o->dump, i + 1);
        }
    }
    {
        /* before pct sorts cpu[] in place */
        int ns = 0;
        int nw = 0;
        int nu = 0;
        double ms = kind_median(cpu, kind, n, RUN_STEP, &ns);
        double mw = kind_median(cpu, kind, n, RUN_WITHIN, &nw);
        double mu = kind_median(cpu, kind, n, RUN_WARMUP, &nu);
        printf("  a step's first run once warm, CPU median %.1f ms (%d runs); a run within a "
               "step, CPU median %.1f ms (%d runs); the second step's first run (warm-up) %.1f "
               "ms\n",
               ms, ns, mw, nw, mu);
        printf("RESULT engine_run_kind step_first_cpu_median_ms=%.2f step_first_runs=%d "
               "within_step_cpu_median_ms=%.2f within_step_runs=%d warmup_cpu_ms=%.2f\n",
               ms, ns, mw, nw, mu);
    }
    {
        double first_ms = wall[0];
        double med = pct(wall, n, 0.5);
        double max = wall[n - 1];
        double cmed = pct(cpu, n, 0.5);
        printf("  engine run over %d runs: median %.1f ms, max %.1f ms (first %.1f ms); CPU "
               "median %.1f ms\n",
               n, med, max, first_ms, cmed);
        printf("RESULT engine_run runs=%d median_ms=%.2f max_ms=%.2f first_ms=%.2f "
               "cpu_median_ms=%.2f\n",
               n, med, max, first_ms, cmed);
    }
    {
        /* What the engine keeps between runs (its rule context, kept
         * windows) and this process's other allocations: RSS would mostly
         * count the store's mapped pages. */
        struct mallinfo2 mi = mallinfo2();
        printf("  heap in use after the runs: %.1f MiB\n", (double)mi.uordblks / MIB);
        printf("RESULT engine_heap bytes=%zu\n", mi.uordblks);
    }
    {
        struct st_engine_stats es;
        st_engine_stats(en, &es);
        print_phases(&es, "the last run");
        if (step_stats.runs > 0 && kind[n - 1] != RUN_STEP) {
            print_phases(&step_stats, "the last step's first run");
        }
    }
    print_findings(en);
    return ST_OK;
}

/* Where a run's time goes: every rule's check on its own, through the
 * same rule context the engine uses (targets, regressions and keeping
 * findings are the rest of a run). */
static int rule_breakdown(st_store *st, int64_t now)
{
    st_eng *e;
    double total = 0;
    int rv = st_eng_new(st, now, &e);
    if (rv != ST_OK) {
        return rv;
    }
    printf("  per rule (check alone, candidates before dedup):\n");
    for (const st_rule *r = st_rules; r->id != NULL; r++) {
        st_candidates c = {0};
        int64_t t0 = st_time_mono_ns();
        int crv = r->check(e, r, &c);
        double ms = (double)(st_time_mono_ns() - t0) / 1e6;
        total += ms;
        printf("    %-32s %8.1f ms %5zu candidates%s%s\n", r->id, ms, c.n,
               crv != ST_OK ? "  FAILED: " : "", crv != ST_OK ? st_strerror(crv) : "");
        printf("RESULT engine_rule rule=%s ms=%.2f candidates=%zu rv=%d\n", r->id, ms, c.n, crv);
        st_candidates_free(&c);
    }
    printf("    %-32s %8.1f ms\n", "all rules", total);
    st_eng_free(e);
    return ST_OK;
}

/* ---- the concurrent writer ---- */

struct writer {
    st_store *st;
    const struct opts *o;
    struct tmpl *full[NROLES];
    uint64_t *seq;
    int64_t t; /* data time of the next frame */
    int host;  /* next host */
    _Atomic bool stop;
    double *lat;   /* commit latency of each batch, ms */
    double *wait;  /* of it, waiting for LMDB's writer lock in begin */
    double *slice; /* the maintain slice after it, ms */
    int n;
    int cap;
    uint64_t samples;
    int rv;
};

/* One batch: begin, apply, commit (its latency is measured), then a 20 ms
 * maintain slice as the collector's writer thread does. */
static int writer_batch(struct writer *w)
{
    st_store_txn *t;
    int64_t t0 = st_time_mono_ns();
    int rv = st_store_begin(w->st, &t);
    double wait = (double)(st_time_mono_ns() - t0) / 1e6;
    bool more;
    for (int k = 0; rv == ST_OK && k < w->o->writer_batch; k++) {
        int h = w->host;
        struct tmpl *tp = w->full[role_of(h)];
        bool dup = false;
        w->samples += tmpl_fill(tp, h, ++w->seq[h], w->t, 10 * SEC_MS, w->o->points);
        rv = st_store_apply(t, &tp->f, w->t, &dup);
        if (++w->host == w->o->hosts) {
            w->host = 0;
            w->t += 10 * SEC_MS * w->o->points;
        }
    }
    rv = rv == ST_OK ? st_store_commit(t) : (st_store_abort(t), rv);
    if (rv == ST_OK && w->n < w->cap) {
        w->lat[w->n] = (double)(st_time_mono_ns() - t0) / 1e6;
        w->wait[w->n] = wait;
        t0 = st_time_mono_ns();
        rv = st_store_maintain(w->st, w->t, SLICE_MS, &more);
        w->slice[w->n++] = (double)(st_time_mono_ns() - t0) / 1e6;
    }
    return rv;
}

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    int64_t next = st_time_mono_ns();
    while (!atomic_load(&w->stop) && w->rv == ST_OK) {
        int64_t wait;
        w->rv = writer_batch(w);
        next += (int64_t)w->o->writer_period_ms * 1000000LL;
        wait = next - st_time_mono_ns();
        if (wait > 0) {
            st_time_sleep_ms(wait / 1000000);
        } else {
            next = st_time_mono_ns();
        }
    }
    return NULL;
}

static void writer_report(const char *label, struct writer *w, double secs)
{
    double *lat = w->lat;
    double *sl = w->slice;
    int n = w->n;
    double p50 = pct(lat, n, 0.5);
    double p99 = pct(lat, n, 0.99);
    double max = n > 0 ? lat[n - 1] : NAN;
    double w99 = pct(w->wait, n, 0.99);
    double wmax = n > 0 ? w->wait[n - 1] : NAN;
    double s50 = pct(sl, n, 0.5); /* sorts sl: its max is read after */
    double smax = n > 0 ? sl[n - 1] : NAN;
    printf("  %-22s %4d commits of %d frames in %.0f s (%.0f samples/s): commit p50 %7.1f ms, "
           "p99 %7.1f ms, max %7.1f ms; maintain slice p50 %.1f ms, max %.1f ms\n",
           label, n, w->o->writer_batch, secs, (double)w->samples / secs, p50, p99, max, s50, smax);
    printf("  %-22s of the commit latency, waiting for the writer lock (the engine's own "
           "write transactions): p99 %.1f ms, max %.1f ms\n",
           "", w99, wmax);
    printf("RESULT writer phase=%s commits=%d p50_ms=%.2f p99_ms=%.2f max_ms=%.2f "
           "lock_wait_p99_ms=%.2f lock_wait_max_ms=%.2f\n",
           label[0] == 'a' ? "alone" : "with_engine", n, p50, p99, max, w99, wmax);
}

/* Runs the writer for writer_s seconds; with en, engine runs back to back
 * meanwhile (their times are reported too), the clock 10 s later each run
 * as in engine_runs, so that a step's first runs are among them. */
static int writer_phase(struct writer *w, st_engine *en, int64_t now, const char *label)
{
    pthread_t th;
    double eng[MAX_RUNS];
    int ne = 0;
    int64_t t0 = st_time_mono_ns();
    int rv = ST_OK;
    w->n = 0;
    w->samples = 0;
    atomic_store(&w->stop, false);
    if (pthread_create(&th, NULL, writer_main, w) != 0) {
        return ST_ENOMEM;
    }
    while (secs_since(t0) < w->o->writer_s) {
        if (en != NULL && ne < MAX_RUNS) {
            int64_t e0 = st_time_mono_ns();
            rv = ST_MIN(st_engine_run(en, now + (int64_t)ne * 10 * SEC_MS), ST_OK);
            eng[ne++] = (double)(st_time_mono_ns() - e0) / 1e6;
        } else {
            st_time_sleep_ms(50);
        }
    }
    atomic_store(&w->stop, true);
    pthread_join(th, NULL);
    writer_report(label, w, secs_since(t0));
    if (en != NULL) {
        double e50 = pct(eng, ne, 0.5); /* sorts eng: its max is read after */
        printf("  %-22s %d engine runs meanwhile: median %.1f ms, max %.1f ms\n", "", ne, e50,
               ne > 0 ? eng[ne - 1] : NAN);
    }
    return rv != ST_OK ? rv : w->rv;
}

static int bench_writer(const struct opts *o, st_store *st, st_engine *en, struct tmpl **full,
                        uint64_t *seq, int64_t now)
{
    struct writer w;
    int rv;
    memset(&w, 0, sizeof(w));
    w.st = st;
    w.o = o;
    memcpy(w.full, full, sizeof(w.full));
    w.seq = seq;
    w.t = T_DATA_END + HOUR_MS; /* past every engine window: findings stay the same */
    w.cap = (int)(o->writer_s * 1000 / (o->writer_period_ms > 0 ? o->writer_period_ms : 1)) + 1000;
    w.lat = calloc((size_t)w.cap, sizeof(double));
    w.slice = calloc((size_t)w.cap, sizeof(double));
    w.wait = calloc((size_t)w.cap, sizeof(double));
    if (w.lat == NULL || w.slice == NULL || w.wait == NULL) {
        free(w.lat);
        free(w.slice);
        free(w.wait);
        return ST_ENOMEM;
    }
    printf("== concurrent writer: %d frames (%d series x %d points) per durable commit every %d "
           "ms, then a %d ms maintain slice, as the collector's writer thread; %.0f s alone, "
           "then %.0f s with engine runs back to back\n",
           o->writer_batch, o->series, o->points, o->writer_period_ms, SLICE_MS, o->writer_s,
           o->writer_s);
    rv = writer_phase(&w, NULL, now, "alone");
    rv = rv == ST_OK ? writer_phase(&w, en, now, "with engine runs") : rv;
    free(w.lat);
    free(w.slice);
    free(w.wait);
    return rv;
}

/* ---- main ---- */

static int parse_args(int argc, char **argv, struct opts *o)
{
    static const struct option lo[] = {
        {"dir", 1, 0, 'd'},          {"hosts", 1, 0, 'h'},         {"series", 1, 0, 's'},
        {"raw-minutes", 1, 0, 'm'},  {"points", 1, 0, 'p'},        {"history-hours", 1, 0, 'H'},
        {"batch", 1, 0, 'b'},        {"runs", 1, 0, 'r'},          {"build-recent", 0, 0, 'R'},
        {"reuse", 0, 0, 'U'},        {"stop-probe", 0, 0, 'S'},    {"writer-seconds", 1, 0, 'w'},
        {"writer-batch", 1, 0, 'B'}, {"writer-period", 1, 0, 'P'}, {"dump", 1, 0, 'D'},
        {"no-breakdown", 0, 0, 'N'}, {"no-feed", 0, 0, 'F'},       {0, 0, 0, 0}};
    int c;
    int rv = ST_OK;
    while (rv == ST_OK && (c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'd':
            o->dir = optarg;
            break;
        case 'h':
            rv = int_arg(optarg, 20, 100000, &o->hosts);
            break;
        case 's':
            rv = int_arg(optarg, 120, MAX_SERIES, &o->series);
            break;
        case 'm':
            rv = int_arg(optarg, 10, 24 * 60, &o->raw_minutes);
            break;
        case 'p':
            rv = int_arg(optarg, 1, MAX_POINTS, &o->points);
            break;
        case 'H':
            rv = int_arg(optarg, 0, 24 * 30, &o->history_hours);
            break;
        case 'b':
            rv = int_arg(optarg, 1, 100000, &o->batch);
            break;
        case 'r':
            rv = int_arg(optarg, 1, MAX_RUNS, &o->runs);
            break;
        case 'R':
            o->build_recent = true;
            break;
        case 'U':
            o->reuse = true;
            break;
        case 'S':
            o->stop_probe = true;
            break;
        case 'D':
            o->dump = optarg;
            break;
        case 'N':
            o->no_breakdown = true;
            break;
        case 'F':
            o->no_feed = true;
            break;
        case 'w':
            rv = st_parse_double(optarg, &o->writer_s);
            break;
        case 'B':
            rv = int_arg(optarg, 1, 100000, &o->writer_batch);
            break;
        case 'P':
            rv = int_arg(optarg, 0, 60000, &o->writer_period_ms);
            break;
        default:
            rv = ST_EINVAL;
        }
    }
    return rv;
}

/* ---- stop latency ---- */

struct probe {
    st_engine *en;
    int64_t now;
    int rv;
};

static void *probe_main(void *arg)
{
    struct probe *p = arg;
    p->rv = st_engine_run(p->en, p->now);
    return NULL;
}

/* How soon a run returns once a stop is requested part-way through it (a
 * SIGTERM during a run: main requests the stop, then joins the engine
 * thread), at a few points in the run. A fresh engine each time: a stop
 * is for good. */
static int stop_latency(st_store *st, int64_t now)
{
    static const int delays_ms[] = {250, 1000, 2500, 4000};
    printf("== stop latency: a run started, a stop requested part-way, time until it returns\n");
    for (size_t i = 0; i < sizeof(delays_ms) / sizeof(delays_ms[0]); i++) {
        struct st_engine_opts eo = {.collector_name = "bench"};
        struct probe p = {NULL, now + (int64_t)i * 10 * SEC_MS, 0};
        st_cfg_error err;
        pthread_t th;
        int64_t t0;
        double ms;
        if (st_engine_new(st, &eo, NULL, NULL, NULL, &p.en, &err) != ST_OK ||
            pthread_create(&th, NULL, probe_main, &p) != 0) {
            st_engine_free(p.en);
            return ST_ENOMEM;
        }
        st_time_sleep_ms(delays_ms[i]);
        t0 = st_time_mono_ns();
        st_engine_request_stop(p.en);
        pthread_join(th, NULL);
        ms = (double)(st_time_mono_ns() - t0) / 1e6;
        printf("  stop %4d ms into a run: returned %7.1f ms later (%s)\n", delays_ms[i], ms,
               p.rv == ST_ECANCELED ? "abandoned" : "it had finished measuring");
        printf("RESULT engine_stop after_ms=%d return_ms=%.2f canceled=%d\n", delays_ms[i], ms,
               p.rv == ST_ECANCELED);
        st_engine_free(p.en);
    }
    return ST_OK;
}

static int run_engine(const struct opts *o, struct tmpl **full, uint64_t *seq)
{
    struct st_engine_opts eo;
    st_cfg_error err;
    st_engine *en = NULL;
    st_store *st = NULL;
    /* The runs end where the data does, whole minutes back from its end
     * (so a step's first runs fall where they would at the end): every
     * window they judge is full of data, as it is on a collector whose
     * agents keep shipping. Runs past the end judge windows that lack
     * their newest minutes, and a moved window then reads nothing new. */
    int64_t back = o->no_feed ? (int64_t)((o->runs - 1 + 5) / 6) * MIN_MS : 0;
    int64_t now = T_DATA_END + NOW_OFFSET_MS - back;
    struct feeder fd = {.o = o, .full = full, .seq = seq, .t = T_DATA_END};
    st_store_txn *t = NULL;
    int rv = open_store(o, false, false, &st);
    /* The store reads its rollup watermarks in its first write transaction
     * (a collector's writer commits within seconds of starting); until
     * then every query reads raw points. Runs without the writer phase
     * would otherwise never see the rollups. */
    if (rv == ST_OK && (rv = st_store_begin(st, &t)) == ST_OK) {
        st_store_abort(t);
    }
    memset(&eo, 0, sizeof(eo));
    eo.collector_name = "bench";
    if (rv == ST_OK && (rv = st_engine_new(st, &eo, NULL, NULL, NULL, &en, &err)) != ST_OK) {
        fprintf(stderr, "engine_bench: engine: %s\n", err.msg);
    }
    if (rv == ST_OK && o->no_feed) {
        printf("== engine runs from now = end of data - %lld s + %.1f s, +10 s per run (the engine "
               "thread's interval), durable store, every rule and target at its default; no "
               "data arrives meanwhile\n",
               (long long)(back / SEC_MS), NOW_OFFSET_MS / 1000.0);
        rv = engine_runs(en, o, now, NULL);
    } else if (rv == ST_OK) {
        struct st_engine_stats es;
        fd.st = st;
        printf("== engine runs from now = end of data + %.1f s, +10 s per run (the engine "
               "thread's interval), durable store, every rule and target at its default; before "
               "each run, every minute ended by then arrives (a frame per host, %d frames per "
               "durable commit)\n",
               NOW_OFFSET_MS / 1000.0, o->writer_batch);
        rv = engine_runs(en, o, now, &fd);
        st_engine_stats(en, &es);
        printf("  fed %d minutes meanwhile: %.1f ms CPU per minute of %d frames (commits, the "
               "tap's copies included)\n",
               fd.minutes, fd.minutes > 0 ? fd.cpu_ms / fd.minutes : NAN, o->hosts);
        printf("  the kept windows took %llu blocks from the commits; most bytes waiting for a "
               "run %.1f MiB; commits lost %llu times\n",
               (unsigned long long)es.feed_blocks, (double)es.feed_bytes_peak / MIB,
               (unsigned long long)es.feed_lost);
        printf("RESULT engine_feed minutes=%d ingest_cpu_ms_per_minute=%.2f blocks=%llu "
               "bytes_peak=%llu lost=%llu\n",
               fd.minutes, fd.minutes > 0 ? fd.cpu_ms / fd.minutes : NAN,
               (unsigned long long)es.feed_blocks, (unsigned long long)es.feed_bytes_peak,
               (unsigned long long)es.feed_lost);
    }
    if (rv == ST_OK && !o->no_breakdown) {
        rv = rule_breakdown(st, now + (int64_t)(o->runs - 1) * 10 * SEC_MS);
    }
    if (rv == ST_OK && o->stop_probe) {
        rv = stop_latency(st, now + (int64_t)o->runs * 10 * SEC_MS);
    }
    if (rv == ST_OK && o->writer_s > 0) {
        rv = bench_writer(o, st, en, full, seq, now + (int64_t)o->runs * 10 * SEC_MS);
    }
    st_engine_free(en);
    st_store_close(st);
    return rv;
}

int main(int argc, char **argv)
{
    struct opts o = {.hosts = 1000,
                     .series = 200,
                     .raw_minutes = 70,
                     .points = 6,
                     .history_hours = 24,
                     .batch = 200,
                     .runs = 28,
                     .writer_s = 15,
                     .writer_batch = 50,
                     .writer_period_ms = 500,
                     .dir = NULL};
    char tmp[] = "/tmp/engine_bench.XXXXXX";
    struct tmpl *full[NROLES];
    struct tmpl *hist[NROLES];
    uint64_t *seq;
    char cmd[4200];
    int rv = ST_OK;
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress as it comes, when piped */
    if (parse_args(argc, argv, &o) != ST_OK) {
        fprintf(stderr,
                "usage: engine_bench [--dir DIR] [--hosts 1000] [--series 200] [--raw-minutes "
                "70] [--points 6]\n  [--history-hours 24] [--batch 200] [--runs 28] "
                "[--build-recent] [--writer-seconds 15]\n  [--writer-batch 50] [--writer-period "
                "500] [--reuse] [--stop-probe] [--dump FILE]\n  [--no-breakdown] [--no-feed]\n");
        return 2;
    }
    if (o.dir == NULL && (o.dir = mkdtemp(tmp)) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    seq = calloc((size_t)o.hosts, sizeof(*seq));
    for (int r = 0; r < NROLES; r++) {
        full[r] = malloc(sizeof(struct tmpl));
        hist[r] = malloc(sizeof(struct tmpl));
        if (full[r] == NULL || hist[r] == NULL) {
            return 1;
        }
        tmpl_init(full[r], (enum role)r, o.series, false);
        tmpl_init(hist[r], (enum role)r, o.series, true);
    }
    if (seq == NULL || pool_build() != ST_OK) {
        return 1;
    }
    printf("== store: %d hosts (15 %% edge, 5 %% cdn, 65 %% app, 15 %% db) x %d series "
           "(edge %d, cdn %d, app %d, db %d catalog series, padded with app.events counters); "
           "the last %d min as 10 s points, %d per frame; before that, to %d h back, the "
           "db.table.* series as 1-minute points; no_sync while loading\n",
           o.hosts, o.series, full[R_EDGE]->catalog_n, full[R_CDN]->catalog_n,
           full[R_APP]->catalog_n, full[R_DB]->catalog_n, o.raw_minutes, o.points, o.history_hours);
    if (o.reuse) {
        /* past any seq the build used, so the writer's frames are new */
        for (int h = 0; h < o.hosts; h++) {
            seq[h] = 1000000;
        }
        printf("  reusing the store in %s (engine records of earlier runs included)\n", o.dir);
    } else {
        int64_t t0 = st_time_mono_ns();
        rv = build_store(&o, full, hist, seq);
        printf("  store built in %.1f s\n", secs_since(t0));
    }
    rv = rv == ST_OK ? run_engine(&o, full, seq) : rv;
    if (rv != ST_OK) {
        fprintf(stderr, "engine_bench: %s\n", st_strerror(rv));
    }
    if (snprintf(cmd, sizeof(cmd), "rm -rf '%s'", o.dir) < (int)sizeof(cmd) &&
        strcmp(o.dir, tmp) == 0) {
        (void)system(cmd);
    }
    for (int r = 0; r < NROLES; r++) {
        free(full[r]);
        free(hist[r]);
    }
    free(seq);
    return rv == ST_OK ? 0 : 1;
}
