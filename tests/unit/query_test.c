/* Query property tests: a seeded fleet of six agents ships three hours of
 * counters, gauges and distributions in shuffled and late frames; every
 * random query (agg x by x step x range x matchers, raw, ratio, top) must
 * equal a brute-force answer computed from all samples kept in the test,
 * through the rollup builder, late-data rebuilds, reopens and retention. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "err.h"
#include "frame.h"
#include "query.h"
#include "sketch.h"
#include "store.h"
#include "tmpdir.h"
#include "testframe.h"

#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NHOST 6
#define NROUTE 3
#define NRESULT 2
#define NPTS 10800 /* three hours of 1 s points */
#define CHUNK 10   /* points per series in one frame */
#define NCHUNK (NPTS / CHUNK)
#define MAXDV 4 /* values per distribution point, at most */
#define SEC 1000LL
#define MINUTE 60000LL
#define HOUR 3600000LL
#define GRACE 30000LL /* the store's default rollup grace */
/* 2024-04-05T19:34:38Z: the data ends here, aligned to no hour, minute or
 * 10 s, so frames straddle every rollup boundary. */
#define T0 1712345678000LL
#define TSTART (T0 - NPTS * SEC)
#define NGID 28 /* (host + 1) * 4 + (route + 1) */
#define MAX_REPORTED 4
#define REL_EPS 1e-9
#define Q_TOL (ST_SKETCH_ALPHA + 1e-9)

enum { M_REQ, M_MEM, M_TEMP, M_LAT, NMETRIC };

static const struct {
    const char *name;
    int kind;
    const char *unit;
} metrics[NMETRIC] = {
    {"q.requests", STRATA__V1__KIND__COUNTER, "req"},
    {"q.mem", STRATA__V1__KIND__GAUGE, "B"},
    {"q.temp", STRATA__V1__KIND__GAUGE, "C"},
    {"q.latency", STRATA__V1__KIND__DISTRIBUTION, "s"},
};

static const char *host_names[NHOST] = {"h0", "h1", "h2", "h3", "h4", "h5"};
static const char *route_names[NROUTE] = {"a", "b", "c"};
static const char *result_names[NRESULT] = {"hit", "miss"};

/* One series of the oracle: every sample ever generated for it. */
struct oseries {
    int metric;
    int host;
    int route;  /* -1: no route label */
    int result; /* -1: no result label */
    bool minmax;
    double *v; /* counters and gauges: the value of each point */
    double *lo;
    double *hi;
    double *dv;  /* distributions: MAXDV values per point */
    uint8_t *dn; /* how many of them */
};

#define MAXSER (NHOST * 16)
static struct oseries ser[MAXSER];
static int nser;
static bool applied[NHOST][NCHUNK];
static uint64_t seq_of[NHOST][NCHUNK];
static uint64_t next_seq[NHOST];
static uint64_t rng_state;
static char tmpdir[64];
static int failures;

/* ---- seeded randomness -------------------------------------------------- */

static uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

static int64_t rnd_below(int64_t n)
{
    return n <= 1 ? 0 : (int64_t)(rnd() % (uint64_t)n);
}

static double rnd_unit(void)
{
    return (double)(rnd() >> 11) / 9007199254740992.0;
}

static int64_t floor_to(int64_t t, int64_t unit)
{
    return t - ((t % unit) + unit) % unit;
}

static int64_t ceil_to(int64_t t, int64_t unit)
{
    return floor_to(t + unit - 1, unit);
}

/* ---- the oracle ---------------------------------------------------------- */

static const char *role_of(int host)
{
    return host < NHOST / 2 ? "edge" : "app";
}

/* The value of a label as the store sees it ("" when absent). */
static const char *label_of(const struct oseries *s, const char *key)
{
    if (strcmp(key, "host") == 0) {
        return host_names[s->host];
    }
    if (strcmp(key, "role") == 0) {
        return role_of(s->host);
    }
    if (strcmp(key, "route") == 0) {
        return s->route >= 0 ? route_names[s->route] : "";
    }
    if (strcmp(key, "result") == 0) {
        return s->result >= 0 ? result_names[s->result] : "";
    }
    return "";
}

static struct oseries *add_series(int metric, int host, int route, int result)
{
    struct oseries *s = &ser[nser++];
    memset(s, 0, sizeof(*s));
    s->metric = metric;
    s->host = host;
    s->route = route;
    s->result = result;
    if (metrics[metric].kind == STRATA__V1__KIND__DISTRIBUTION) {
        s->dv = calloc((size_t)NPTS * MAXDV, sizeof(double));
        s->dn = calloc(NPTS, 1);
        assert_non_null(s->dv);
        assert_non_null(s->dn);
    } else {
        s->v = calloc(NPTS, sizeof(double));
        assert_non_null(s->v);
    }
    return s;
}

static void gen_counter(struct oseries *s)
{
    int64_t base = 5 + rnd_below(40);
    for (int i = 0; i < NPTS; i++) {
        s->v[i] = rnd_below(10) == 0 ? 0 : (double)rnd_below(base + 1);
    }
}

/* Non-integer gauge values, some negative (route c), with per-point
 * min/max columns on route a. */
static void gen_mem(struct oseries *s)
{
    double center = s->route == 2 ? -20.0 : 300.0 + 100.0 * s->host;
    s->minmax = s->route == 0;
    if (s->minmax) {
        s->lo = calloc(NPTS, sizeof(double));
        s->hi = calloc(NPTS, sizeof(double));
        assert_non_null(s->lo);
        assert_non_null(s->hi);
    }
    for (int i = 0; i < NPTS; i++) {
        s->v[i] = center + (rnd_unit() - 0.5) * 200.0 + 0.001 * (i % 7);
        if (s->minmax) {
            s->lo[i] = s->v[i] - rnd_unit() * 5.0;
            s->hi[i] = s->v[i] + rnd_unit() * 5.0;
        }
    }
}

/* A random walk in hundredths, shipped as scaled integers. */
static void gen_temp(struct oseries *s)
{
    int64_t m = 4000 + 100 * s->host;
    for (int i = 0; i < NPTS; i++) {
        m += rnd_below(21) - 10;
        s->v[i] = (double)m / 100.0;
    }
}

/* Zero to four log-uniform latencies per point (none 10 % of the time). */
static void gen_latency(struct oseries *s)
{
    for (int i = 0; i < NPTS; i++) {
        int n = rnd_below(10) == 0 ? 0 : 1 + (int)rnd_below(MAXDV);
        s->dn[i] = (uint8_t)n;
        for (int k = 0; k < n; k++) {
            s->dv[(size_t)i * MAXDV + (size_t)k] = exp(log(0.0005) + rnd_unit() * log(10000.0));
        }
    }
}

static void gen_data(void)
{
    rng_state = 0x5eed5eed12345ULL;
    nser = 0;
    for (int h = 0; h < NHOST; h++) {
        for (int r = 0; r < NROUTE; r++) {
            for (int x = 0; x < NRESULT; x++) {
                gen_counter(add_series(M_REQ, h, r, x));
            }
            gen_mem(add_series(M_MEM, h, r, -1));
            gen_latency(add_series(M_LAT, h, r, -1));
        }
        gen_temp(add_series(M_TEMP, h, -1, -1));
    }
}

static void free_data(void)
{
    for (int i = 0; i < nser; i++) {
        free(ser[i].v);
        free(ser[i].lo);
        free(ser[i].hi);
        free(ser[i].dv);
        free(ser[i].dn);
    }
    nser = 0;
}

static void reset_applied(void)
{
    memset(applied, 0, sizeof(applied));
    memset(seq_of, 0, sizeof(seq_of));
    memset(next_seq, 0, sizeof(next_seq));
}

/* ---- frames -------------------------------------------------------------- */

static void fill_ivalues(Strata__V1__Series *out, const double *v, int scale)
{
    double mul = scale == 2 ? 100.0 : 1.0;
    int64_t prev = 0;
    out->scale = scale;
    out->n_ivalues = CHUNK;
    out->ivalues = calloc(CHUNK, sizeof(int64_t));
    assert_non_null(out->ivalues);
    for (int p = 0; p < CHUNK; p++) {
        int64_t m = llround(v[p] * mul);
        out->ivalues[p] = m - prev; /* deltas, the first from 0 */
        prev = m;
    }
}

static void fill_doubles(Strata__V1__Series *out, const struct oseries *s, int i0)
{
    out->n_values = CHUNK;
    out->values = malloc(CHUNK * sizeof(double));
    assert_non_null(out->values);
    memcpy(out->values, s->v + i0, CHUNK * sizeof(double));
    if (s->minmax) {
        out->n_mins = out->n_maxs = CHUNK;
        out->mins = malloc(CHUNK * sizeof(double));
        out->maxs = malloc(CHUNK * sizeof(double));
        assert_non_null(out->mins);
        assert_non_null(out->maxs);
        memcpy(out->mins, s->lo + i0, CHUNK * sizeof(double));
        memcpy(out->maxs, s->hi + i0, CHUNK * sizeof(double));
    }
}

static void fill_sketches(Strata__V1__Series *out, const struct oseries *s, int i0)
{
    out->n_sketches = CHUNK;
    out->sketches = calloc(CHUNK, sizeof(*out->sketches));
    assert_non_null(out->sketches);
    for (int p = 0; p < CHUNK; p++) {
        st_sketch *sk = NULL;
        Strata__V1__Sketch *m = malloc(sizeof(*m));
        size_t i = (size_t)(i0 + p);
        assert_non_null(m);
        strata__v1__sketch__init(m);
        assert_int_equal(st_sketch_new(ST_SKETCH_ALPHA, &sk), ST_OK);
        for (int k = 0; k < s->dn[i]; k++) {
            assert_int_equal(st_sketch_insert(sk, s->dv[i * MAXDV + (size_t)k]), ST_OK);
        }
        assert_int_equal(st_sketch_to_proto(sk, m), ST_OK);
        st_sketch_free(sk);
        out->sketches[p] = m;
    }
}

static Strata__V1__Series *mk_series(const struct oseries *s, int chunk)
{
    Strata__V1__Series *out = malloc(sizeof(*out));
    int i0 = chunk * CHUNK;
    assert_non_null(out);
    strata__v1__series__init(out);
    out->name = strdup(metrics[s->metric].name);
    out->unit = strdup(metrics[s->metric].unit);
    out->kind = (Strata__V1__Kind)metrics[s->metric].kind;
    out->labels = calloc(2, sizeof(*out->labels));
    assert_non_null(out->labels);
    if (s->route >= 0) {
        out->labels[out->n_labels++] = st_test_label_new("route", route_names[s->route]);
    }
    if (s->result >= 0) {
        out->labels[out->n_labels++] = st_test_label_new("result", result_names[s->result]);
    }
    out->start_unix_ms = TSTART + (int64_t)i0 * SEC;
    out->interval_ms = 1000;
    if (s->metric == M_REQ) {
        fill_ivalues(out, s->v + i0, 0);
    } else if (s->metric == M_TEMP) {
        fill_ivalues(out, s->v + i0, 2);
    } else if (s->metric == M_MEM) {
        fill_doubles(out, s, i0);
    } else {
        fill_sketches(out, s, i0);
    }
    return out;
}

/* The frame of one agent for one 10 s chunk: every series of the host. */
static st_frame *mk_frame(int host, int chunk, uint64_t seq)
{
    uint8_t id[16] = {0xa5, [15] = (uint8_t)(host + 1)};
    const char *detail = NULL;
    st_frame *f =
        st_test_frame_new(id, seq, host_names[host],
                          host < NHOST / 2 ? STRATA__V1__ROLE__EDGE : STRATA__V1__ROLE__APP, 16);
    for (int i = 0; i < nser; i++) {
        if (ser[i].host == host) {
            f->series[f->n_series++] = mk_series(&ser[i], chunk);
        }
    }
    if (st_frame_validate(f, NULL, NULL, &detail) != ST_OK) {
        fail_msg("test frame host %d chunk %d does not validate: %s", host, chunk,
                 detail ? detail : "?");
    }
    return f;
}

/* A frame to apply: host and chunk packed in one int. */
#define PAIR(h, c) ((h)*NCHUNK + (c))
#define PAIR_HOST(p) ((p) / NCHUNK)
#define PAIR_CHUNK(p) ((p) % NCHUNK)

static void shuffle(int *a, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)rnd_below((int64_t)i);
        int x = a[i - 1];
        a[i - 1] = a[j];
        a[j] = x;
    }
}

/* Applies frames in the given order, 50 to a transaction; seqs rise per
 * agent in arrival order, so every frame is new to the store. */
static void apply_pairs(st_store *st, const int *pairs, size_t n)
{
    for (size_t i = 0; i < n;) {
        st_store_txn *t = NULL;
        size_t end = i + 50 < n ? i + 50 : n;
        assert_int_equal(st_store_begin(st, &t), ST_OK);
        for (; i < end; i++) {
            int h = PAIR_HOST(pairs[i]);
            int c = PAIR_CHUNK(pairs[i]);
            uint64_t seq = ++next_seq[h];
            st_frame *f = mk_frame(h, c, seq);
            bool dup = true;
            assert_false(applied[h][c]);
            assert_int_equal(st_store_apply(t, f, T0, &dup), ST_OK);
            assert_false(dup);
            applied[h][c] = true;
            seq_of[h][c] = seq;
            st_frame_free(f);
        }
        assert_int_equal(st_store_commit(t), ST_OK);
    }
}

/* Frames sent again (same agent, same seq): acknowledged as duplicates,
 * nothing counted twice. */
static void apply_duplicates(st_store *st, int count)
{
    st_store_txn *t = NULL;
    int done = 0;
    assert_int_equal(st_store_begin(st, &t), ST_OK);
    while (done < count) {
        int h = (int)rnd_below(NHOST);
        int c = (int)rnd_below(NCHUNK);
        st_frame *f;
        bool dup = false;
        if (!applied[h][c]) {
            continue;
        }
        f = mk_frame(h, c, seq_of[h][c]);
        assert_int_equal(st_store_apply(t, f, T0, &dup), ST_OK);
        assert_true(dup);
        st_frame_free(f);
        done++;
    }
    assert_int_equal(st_store_commit(t), ST_OK);
}

/* Runs the background builder with wall time now until it has no work. */
static void maintain_all(st_store *st, int64_t now)
{
    bool more = true;
    for (int i = 0; more; i++) {
        assert_true(i < 100000);
        assert_int_equal(st_store_maintain(st, now, 1000, &more), ST_OK);
    }
}

/* Where the minute builder must stand after maintain_all(now): every
 * minute that closed (end + grace <= now) is built. */
static int64_t expected_wm_1m(int64_t now)
{
    return floor_to(now - MINUTE - GRACE, MINUTE) + MINUTE;
}

static void assert_built_to(st_store *st, int64_t now)
{
    struct st_store_stats ss;
    assert_int_equal(st_store_stats(st, &ss), ST_OK);
    assert_int_equal(ss.dirty, 0);
    assert_int_equal(ss.wm_1m, expected_wm_1m(now));
    assert_int_equal(ss.wm_1h, floor_to(expected_wm_1m(now), HOUR));
    assert_int_equal(st_store_rollup_watermark(st, ST_RES_1M), expected_wm_1m(now));
    assert_int_equal(st_store_rollup_watermark(st, ST_RES_1H), floor_to(expected_wm_1m(now), HOUR));
}

static st_store *open_store(const char *dir, const struct st_store_retention *ret)
{
    struct st_store_opts o = {.dir = dir, .no_sync = true};
    st_store *st = NULL;
    if (ret != NULL) {
        o.retention = *ret;
    }
    assert_int_equal(st_store_open(&o, &st), ST_OK);
    return st;
}

/* ---- queries -------------------------------------------------------------- */

/* A matcher with the set of label values it accepts (or rejects). */
struct mspec {
    const char *text;
    const char *key;
    const char *set[4];
    bool negate;
};

static const struct mspec mspecs[] = {
    {"route=a", "route", {"a"}, false},
    {"route!=b", "route", {"b"}, true},
    {"route=~a|b", "route", {"a", "b"}, false},
    {"route!~c", "route", {"c"}, true},
    {"route=~", "route", {""}, false}, /* only series without a route */
    {"host=~h[0-2]", "host", {"h0", "h1", "h2"}, false},
    {"host=h4", "host", {"h4"}, false},
    {"host!~h1|h5", "host", {"h1", "h5"}, true},
    {"role=edge", "role", {"edge"}, false},
    {"role!=edge", "role", {"edge"}, true},
    {"result=~hi.*", "result", {"hit"}, false},
    {"result!=hit", "result", {"hit"}, true},
};
#define NMSPEC (sizeof(mspecs) / sizeof(mspecs[0]))
#define M_RESULT_HIT 10

static bool mspec_match(const struct mspec *m, const struct oseries *s)
{
    const char *v = label_of(s, m->key);
    bool in = false;
    for (int i = 0; i < 4 && m->set[i] != NULL; i++) {
        in = in || strcmp(v, m->set[i]) == 0;
    }
    return in != m->negate;
}

enum { BY_HOST = 1, BY_ROUTE = 2 };

struct qspec {
    int metric;
    enum st_agg agg;
    int nm;
    int m[3];
    int by;
    int64_t step; /* 0: none */
    int64_t from;
    int64_t to;
    int top;
    bool raw; /* no agg, step, by or top */
};

static const char *step_text(int64_t step)
{
    switch (step) {
    case 7 * SEC:
        return "7s";
    case 10 * SEC:
        return "10s";
    case MINUTE:
        return "1m";
    case 5 * MINUTE:
        return "5m";
    case HOUR:
        return "1h";
    default:
        return "?";
    }
}

static void describe(const struct qspec *q, char *buf, size_t len)
{
    int n = snprintf(buf, len,
                     "metric=%s agg=%s by=%s%s step=%s from=%lld (T0%+lld s) to=%lld "
                     "(T0%+lld s) top=%d",
                     metrics[q->metric].name, q->raw ? "(raw)" : st_agg_name(q->agg),
                     (q->by & BY_HOST) ? "host," : "", (q->by & BY_ROUTE) ? "route" : "",
                     q->step ? step_text(q->step) : "-", (long long)q->from,
                     (long long)((q->from - T0) / SEC), (long long)q->to,
                     (long long)((q->to - T0) / SEC), q->top);
    for (int i = 0; i < q->nm && n > 0 && (size_t)n < len; i++) {
        n += snprintf(buf + n, len - (size_t)n, " match=%s", mspecs[q->m[i]].text);
    }
}

enum category {
    C_RES,
    C_RAWRES,
    C_META,
    C_DELTA,
    C_VALUE,
    C_QUANTILE,
    C_POINTS,
    C_TOP,
    C_RAW,
    NCAT
};
static const char *cat_names[NCAT] = {"resolution",
                                      "resolution of raw answers",
                                      "metric/kind/unit",
                                      "delta of several series",
                                      "value",
                                      "quantile",
                                      "points",
                                      "top",
                                      "raw"};
static int cat_count[NCAT];

static void report(enum category c, const struct qspec *q, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Counts a mismatch and prints the first few of each category, so one run
 * shows every kind of disagreement instead of stopping at the first. */
static void report(enum category c, const struct qspec *q, const char *fmt, ...)
{
    char what[400];
    char desc[400];
    va_list ap;
    failures++;
    if (++cat_count[c] > MAX_REPORTED) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    describe(q, desc, sizeof(desc));
    print_message("MISMATCH (%s) [%s]: %s\n", cat_names[c], desc, what);
}

/* Fails the test when anything disagreed, with the count per category. */
static void assert_no_failures(void)
{
    char sum[400];
    int n = 0;
    sum[0] = '\0';
    for (int c = 0; c < NCAT; c++) {
        if (cat_count[c] > 0 && n >= 0 && (size_t)n < sizeof(sum)) {
            n += snprintf(sum + n, sizeof(sum) - (size_t)n, " %s: %d", cat_names[c], cat_count[c]);
        }
    }
    if (failures > 0) {
        fail_msg("%d answers disagree with brute force (at most %d printed per category):%s",
                 failures, MAX_REPORTED, sum);
    }
}

static void parse_query(const struct qspec *q, st_query *pq)
{
    st_qparam p[16];
    char from[32], to[32], by[32], top[16];
    size_t n = 0;
    char err[300];
    snprintf(from, sizeof(from), "%lld", (long long)q->from);
    snprintf(to, sizeof(to), "%lld", (long long)q->to);
    snprintf(by, sizeof(by), "%s%s%s", (q->by & BY_HOST) ? "host" : "",
             q->by == (BY_HOST | BY_ROUTE) ? "," : "", (q->by & BY_ROUTE) ? "route" : "");
    snprintf(top, sizeof(top), "%d", q->top);
    p[n++] = (st_qparam){"metric", metrics[q->metric].name};
    p[n++] = (st_qparam){"from", from};
    p[n++] = (st_qparam){"to", to};
    if (!q->raw && q->agg != ST_AGG_DEFAULT) {
        p[n++] = (st_qparam){"agg", st_agg_name(q->agg)};
    }
    if (q->by != 0) {
        p[n++] = (st_qparam){"by", by};
    }
    if (q->step != 0) {
        p[n++] = (st_qparam){"step", step_text(q->step)};
    }
    if (q->top > 0) {
        p[n++] = (st_qparam){"top", top};
    }
    for (int i = 0; i < q->nm; i++) {
        p[n++] = (st_qparam){"match", mspecs[q->m[i]].text};
    }
    assert_int_equal(st_query_parse(p, n, T0, pq, err, sizeof(err)), ST_OK);
}

static json_t *run_query(st_store *st, const struct qspec *q)
{
    st_query pq;
    json_t *out = NULL;
    char err[300];
    parse_query(q, &pq);
    if (st_query_run(st, &pq, &out, err, sizeof(err)) != ST_OK) {
        char desc[400];
        describe(q, desc, sizeof(desc));
        st_query_release(&pq);
        fail_msg("query failed: %s [%s]", err, desc);
    }
    st_query_release(&pq);
    return out;
}

/* Whether a fold's answer as arrays is the query's JSON answer: the same
 * series (labels and points, bit for bit) from the same first bucket. */
static bool rows_are(const st_answer *rows, const json_t *want)
{
    json_t *got = st_answer_json(rows);
    bool same = got != NULL && json_equal(got, json_object_get(want, "series")) &&
                rows->from == json_integer_value(json_object_get(want, "from"));
    json_decref(got);
    return same;
}

/* The fold's groups merged answer as the question asked without by, for
 * the whole fleet and for one value of its first by label. */
static void check_merged(st_store *st, st_query_fold *f, const st_query *pq, const struct qspec *q)
{
    st_answer *own = NULL;
    char err[300];
    const char *v;
    assert_int_equal(st_query_fold_rows(f, pq->agg, &own), ST_OK);
    v = own->n > 0 ? json_string_value(json_object_get(own->rows[0].labels, pq->by[0])) : NULL;
    for (int a = ST_AGG_DEFAULT; a <= ST_AGG_DELTA; a++) {
        for (size_t nm = 0; nm <= (v != NULL && v[0] != '\0' ? 1u : 0u); nm++) {
            st_query fq = *pq;
            json_t *want = NULL;
            st_answer *got = NULL;
            fq.nby = 0;
            fq.agg = (enum st_agg)a;
            fq.nm = nm;
            if (nm == 1) {
                memset(&fq.m[0], 0, sizeof(fq.m[0]));
                snprintf(fq.m[0].key, sizeof(fq.m[0].key), "%s", pq->by[0]);
                snprintf(fq.m[0].value, sizeof(fq.m[0].value), "%s", v);
                fq.m[0].op = ST_MATCH_EQ;
            }
            if (!st_query_fold_merges(f, fq.agg, fq.m, fq.nm)) {
                continue;
            }
            assert_int_equal(st_query_run(st, &fq, &want, err, sizeof(err)), ST_OK);
            assert_int_equal(st_query_fold_merged_rows(f, fq.agg, fq.m, fq.nm, &got), ST_OK);
            if (!rows_are(got, want)) {
                report(C_POINTS, q, "the fold's groups merged with agg %s (%zu matchers) differ",
                       st_agg_name(fq.agg), nm);
            }
            json_decref(want);
            st_answer_unref(got);
        }
    }
    st_answer_unref(own);
}

/* A kept fold answers every agg it serves exactly as its own query would
 * (the engine shares one scan between aggs this way). Every agg costs a
 * query: one query in FOLD_EVERY is checked so. */
#define FOLD_EVERY 4
static int fold_turn;

static void check_fold(st_store *st, const struct qspec *q)
{
    st_query pq;
    st_query_fold *f = NULL;
    char err[300];
    if (fold_turn++ % FOLD_EVERY != 0) {
        return;
    }
    parse_query(q, &pq);
    if (pq.top > 0) { /* a fold's answer as arrays is of every group, never ranked */
        st_query_release(&pq);
        return;
    }
    assert_int_equal(st_query_fold_run(st, &pq, &f, err, sizeof(err)), ST_OK);
    assert_true(st_query_fold_serves(f, pq.agg));
    for (int a = ST_AGG_DEFAULT; a <= ST_AGG_DELTA; a++) {
        json_t *want = NULL;
        st_answer *got = NULL;
        if (!st_query_fold_serves(f, (enum st_agg)a)) {
            continue;
        }
        pq.agg = (enum st_agg)a;
        assert_int_equal(st_query_run(st, &pq, &want, err, sizeof(err)), ST_OK);
        assert_int_equal(st_query_fold_rows(f, (enum st_agg)a, &got), ST_OK);
        if (!rows_are(got, want)) {
            report(C_POINTS, q, "the fold's answer with agg %s differs from the query's",
                   st_agg_name((enum st_agg)a));
        }
        json_decref(want);
        st_answer_unref(got);
    }
    if (pq.nm == 0 && pq.nby > 0 && pq.top == 0) {
        check_merged(st, f, &pq, q);
    }
    st_query_fold_free(f);
    st_query_release(&pq);
}

/* ---- brute force -------------------------------------------------------- */

/* One (group, bucket) of the brute-force answer. */
struct bacc {
    double sum;
    double num;
    double sumabs;
    double min;
    double max;
    double delta; /* the sum over series of (last - first) */
    uint64_t n;
};

struct qval {
    size_t slot;
    double v;
};

struct brute {
    int64_t rfrom;
    int64_t step; /* the bucket width: step, or the whole range */
    size_t nb;
    bool exists[NGID];
    int nseries[NGID];
    struct bacc *acc; /* [NGID * (nb + 1)]: buckets, then the whole range */
    struct qval *qv;  /* values of every slot, for quantiles */
    size_t nqv;
    size_t qcap;
    size_t *qbeg; /* per slot: range in qv once sorted */
    size_t *qend;
};

static bool is_quantile(enum st_agg a)
{
    return a == ST_AGG_P50 || a == ST_AGG_P90 || a == ST_AGG_P95 || a == ST_AGG_P99;
}

static double quantile_of(enum st_agg a)
{
    return a == ST_AGG_P50 ? 0.5 : a == ST_AGG_P90 ? 0.9 : a == ST_AGG_P99 ? 0.99 : 0.95;
}

static enum st_agg effective_agg(const struct qspec *q)
{
    if (q->agg != ST_AGG_DEFAULT) {
        return q->agg;
    }
    switch (metrics[q->metric].kind) {
    case STRATA__V1__KIND__COUNTER:
        return ST_AGG_SUM;
    case STRATA__V1__KIND__GAUGE:
        return ST_AGG_AVG;
    default:
        return ST_AGG_P95;
    }
}

static int gid_of(const struct qspec *q, const struct oseries *s)
{
    int h = (q->by & BY_HOST) ? s->host : -1;
    int r = (q->by & BY_ROUTE) ? s->route : -1;
    return (h + 1) * 4 + (r + 1);
}

static void push_value(struct brute *b, size_t slot, double v)
{
    if (b->nqv == b->qcap) {
        b->qcap = b->qcap ? 2 * b->qcap : 4096;
        b->qv = realloc(b->qv, b->qcap * sizeof(*b->qv));
        assert_non_null(b->qv);
    }
    b->qv[b->nqv++] = (struct qval){slot, v};
}

static void bacc_add(struct bacc *a, double v, double lo, double hi, bool num)
{
    a->sum += v;
    a->num += num ? v : 0;
    a->sumabs += fabs(v);
    a->min = fmin(a->min, lo);
    a->max = fmax(a->max, hi);
    a->n++;
}

/* Per series and slot, the first and last value seen, for delta. */
struct span {
    bool seen;
    double first;
    double last;
};

static void span_close(struct span *sp, struct bacc *a)
{
    if (sp->seen) {
        a->delta += sp->last - sp->first;
        sp->seen = false;
    }
}

static void span_add(struct span *sp, double v)
{
    if (!sp->seen) {
        sp->first = v;
        sp->seen = true;
    }
    sp->last = v;
}

/* Folds one point (index i) of series s into bucket slot k and the whole
 * range slot. */
static void fold_point(struct brute *b, const struct qspec *q, const struct oseries *s, int i,
                       size_t slot, size_t tslot, bool num)
{
    bool want_q = is_quantile(effective_agg(q));
    if (s->dv != NULL) {
        for (int k = 0; k < s->dn[i]; k++) {
            double x = s->dv[(size_t)i * MAXDV + (size_t)k];
            bacc_add(&b->acc[slot], x, x, x, num);
            bacc_add(&b->acc[tslot], x, x, x, num);
            if (want_q) {
                push_value(b, slot, x);
                push_value(b, tslot, x);
            }
        }
        return;
    }
    double lo = s->minmax ? s->lo[i] : s->v[i];
    double hi = s->minmax ? s->hi[i] : s->v[i];
    bacc_add(&b->acc[slot], s->v[i], lo, hi, num);
    bacc_add(&b->acc[tslot], s->v[i], lo, hi, num);
    if (want_q) {
        push_value(b, slot, s->v[i]);
        push_value(b, tslot, s->v[i]);
    }
}

static void fold_series(struct brute *b, const struct qspec *q, const struct oseries *s, bool num)
{
    int g = gid_of(q, s);
    size_t cur = SIZE_MAX;
    struct span sp = {0}, tsp = {0};
    size_t tslot = (size_t)g * (b->nb + 1) + b->nb;
    for (int i = 0; i < NPTS; i++) {
        int64_t t = TSTART + (int64_t)i * SEC;
        size_t slot;
        if (t < q->from || t >= q->to || !applied[s->host][i / CHUNK]) {
            continue;
        }
        slot = (size_t)g * (b->nb + 1) + (size_t)((t - b->rfrom) / b->step);
        if (slot != cur) {
            if (cur != SIZE_MAX) {
                span_close(&sp, &b->acc[cur]);
            }
            cur = slot;
        }
        fold_point(b, q, s, i, slot, tslot, num);
        if (s->v != NULL) {
            span_add(&sp, s->v[i]);
            span_add(&tsp, s->v[i]);
        }
    }
    if (cur != SIZE_MAX) {
        span_close(&sp, &b->acc[cur]);
    }
    span_close(&tsp, &b->acc[tslot]);
}

static int qval_cmp(const void *x, const void *y)
{
    const struct qval *a = x;
    const struct qval *b = y;
    if (a->slot != b->slot) {
        return a->slot < b->slot ? -1 : 1;
    }
    return a->v < b->v ? -1 : (a->v > b->v ? 1 : 0);
}

static void brute_run(const struct qspec *q, struct brute *b)
{
    size_t nslot;
    memset(b, 0, sizeof(*b));
    b->step = q->step > 0 ? q->step : q->to - q->from;
    b->rfrom = q->step > 0 ? floor_to(q->from, q->step) : q->from;
    b->nb = (size_t)((q->to - b->rfrom + b->step - 1) / b->step);
    nslot = NGID * (b->nb + 1);
    b->acc = calloc(nslot, sizeof(*b->acc));
    b->qbeg = calloc(nslot, sizeof(size_t));
    b->qend = calloc(nslot, sizeof(size_t));
    assert_non_null(b->acc);
    assert_non_null(b->qbeg);
    assert_non_null(b->qend);
    for (size_t i = 0; i < nslot; i++) {
        b->acc[i].min = INFINITY;
        b->acc[i].max = -INFINITY;
    }
    for (int i = 0; i < nser; i++) {
        const struct oseries *s = &ser[i];
        bool scan = s->metric == q->metric;
        bool num = true;
        for (int k = 0; k < q->nm && scan; k++) {
            const struct mspec *m = &mspecs[q->m[k]];
            if (q->agg == ST_AGG_RATIO && strcmp(m->key, "result") == 0) {
                num = num && mspec_match(m, s);
            } else {
                scan = mspec_match(m, s);
            }
        }
        if (scan) {
            b->exists[gid_of(q, s)] = true;
            b->nseries[gid_of(q, s)]++;
            fold_series(b, q, s, num);
        }
    }
    if (b->nqv > 0) {
        qsort(b->qv, b->nqv, sizeof(*b->qv), qval_cmp);
    }
    for (size_t i = 0; i < b->nqv; i++) {
        if (i == 0 || b->qv[i - 1].slot != b->qv[i].slot) {
            b->qbeg[b->qv[i].slot] = i;
        }
        b->qend[b->qv[i].slot] = i + 1;
    }
}

static void brute_free(struct brute *b)
{
    free(b->acc);
    free(b->qv);
    free(b->qbeg);
    free(b->qend);
}

/* The expected answer of one slot. Returns false when the slot has no
 * value (the store leaves such a bucket out); *scale is the magnitude that
 * rounding errors are relative to. Quantiles are checked separately. */
static bool slot_value(const struct qspec *q, const struct bacc *a, int64_t span_ms, double *want,
                       double *scale)
{
    enum st_agg agg = effective_agg(q);
    double secs = (double)span_ms / 1000.0;
    if (a->n == 0) {
        return false;
    }
    *scale = fabs(a->sum);
    switch (agg) {
    case ST_AGG_AVG:
        *want = a->sum / (double)a->n;
        *scale = a->sumabs / (double)a->n;
        return true;
    case ST_AGG_MIN:
        *want = a->min;
        *scale = fabs(a->min);
        return true;
    case ST_AGG_MAX:
        *want = a->max;
        *scale = fabs(a->max);
        return true;
    case ST_AGG_SUM:
        *want = a->sum;
        *scale = a->sumabs;
        return true;
    case ST_AGG_COUNT:
        *want = (double)a->n;
        return true;
    case ST_AGG_RATE:
        /* Counters and gauges: sum per second; distributions: events per
         * second. */
        *want = metrics[q->metric].kind == STRATA__V1__KIND__DISTRIBUTION ? (double)a->n / secs
                                                                          : a->sum / secs;
        *scale =
            metrics[q->metric].kind == STRATA__V1__KIND__DISTRIBUTION ? *want : a->sumabs / secs;
        return true;
    case ST_AGG_RATIO:
        if (!(a->sum > 0)) {
            return false;
        }
        *want = a->num / a->sum;
        *scale = 1;
        return true;
    case ST_AGG_DELTA:
        *want = a->delta;
        *scale = a->sumabs / (double)a->n;
        return true;
    default:
        *want = NAN;
        return true;
    }
}

static bool close_enough(double got, double want, double scale)
{
    double tol = REL_EPS * fmax(fmax(fabs(want), scale), 1e-12);
    return fabs(got - want) <= tol;
}

/* A quantile from a DDSketch (1 % relative accuracy, rank floor(q (n-1)))
 * must be within alpha of the exact value at that rank or the next. */
static bool quantile_ok(const double *sorted, size_t n, double qq, double got, double *exact)
{
    double rank = qq * (double)(n - 1);
    size_t lo = (size_t)floor(rank);
    size_t hi = (size_t)ceil(rank);
    if (hi >= n) {
        hi = n - 1;
    }
    *exact = sorted[lo];
    for (size_t r = lo; r <= hi; r++) {
        if (fabs(got - sorted[r]) <= Q_TOL * fabs(sorted[r]) + 1e-12) {
            return true;
        }
    }
    return false;
}

static void qv_values(const struct brute *b, size_t slot, double **out, size_t *n)
{
    size_t beg = b->qbeg[slot];
    size_t end = b->qend[slot];
    double *v = malloc((end - beg + 1) * sizeof(double));
    assert_non_null(v);
    for (size_t i = beg; i < end; i++) {
        v[i - beg] = b->qv[i].v;
    }
    *out = v;
    *n = end - beg;
}

/* Checks one value the store returned for a slot; false on a mismatch
 * (detail in why). */
static bool check_slot(const struct qspec *q, const struct brute *b, size_t slot, int64_t span,
                       double got, char *why, size_t whylen)
{
    const struct bacc *a = &b->acc[slot];
    double want = NAN;
    double scale = 0;
    if (!slot_value(q, a, span, &want, &scale)) {
        snprintf(why, whylen, "got %.17g for a slot without data (n=%llu sum=%g)", got,
                 (unsigned long long)a->n, a->sum);
        return false;
    }
    if (is_quantile(effective_agg(q))) {
        double *v;
        size_t n;
        double exact;
        bool ok;
        qv_values(b, slot, &v, &n);
        ok = n > 0 && quantile_ok(v, n, quantile_of(effective_agg(q)), got, &exact);
        if (!ok) {
            snprintf(why, whylen, "quantile %.17g, exact %.17g over %zu values", got,
                     n > 0 ? exact : NAN, n);
        }
        free(v);
        return ok;
    }
    if (!close_enough(got, want, scale)) {
        snprintf(why, whylen, "got %.17g, want %.17g (n=%llu)", got, want,
                 (unsigned long long)a->n);
        return false;
    }
    return true;
}

/* ---- comparing answers ---------------------------------------------------- */

static int name_index(const char *const *names, int n, const char *v)
{
    for (int i = 0; i < n; i++) {
        if (strcmp(names[i], v) == 0) {
            return i;
        }
    }
    return -1;
}

/* The group id of an answer series from its labels; -2 when they do not
 * fit the query's `by`. */
static int answer_gid(const struct qspec *q, json_t *labels)
{
    int h = -1;
    int r = -1;
    size_t want = (size_t)(((q->by & BY_HOST) != 0) + ((q->by & BY_ROUTE) != 0));
    if (!json_is_object(labels) || json_object_size(labels) != want) {
        return -2;
    }
    if (q->by & BY_HOST) {
        const char *v = json_string_value(json_object_get(labels, "host"));
        if (v == NULL || (h = name_index(host_names, NHOST, v)) < 0) {
            return -2;
        }
    }
    if (q->by & BY_ROUTE) {
        const char *v = json_string_value(json_object_get(labels, "route"));
        if (v == NULL) {
            return -2;
        }
        r = v[0] == '\0' ? -1 : name_index(route_names, NROUTE, v);
        if (v[0] != '\0' && r < 0) {
            return -2;
        }
    }
    return (h + 1) * 4 + (r + 1);
}

/* Deltas of groups of several series get their own category. */
static enum category agg_category(const struct qspec *q, const struct brute *b, int g)
{
    enum st_agg a = effective_agg(q);
    if (a == ST_AGG_DELTA && b->nseries[g] > 1) {
        return C_DELTA;
    }
    return is_quantile(a) ? C_QUANTILE : C_VALUE;
}

/* The points of one group: exactly the buckets with data, in order. */
static void check_points(const struct qspec *q, const struct brute *b, int g, json_t *pts)
{
    size_t j = 0;
    char why[300];
    for (size_t k = 0; k < b->nb; k++) {
        size_t slot = (size_t)g * (b->nb + 1) + k;
        double want;
        double scale;
        int64_t t = b->rfrom + (int64_t)k * b->step;
        json_t *p;
        if (!slot_value(q, &b->acc[slot], b->step, &want, &scale)) {
            continue;
        }
        p = json_array_get(pts, j++);
        if (p == NULL) {
            report(C_POINTS, q, "group %d: bucket %lld missing (want %.17g, n=%llu)", g,
                   (long long)t, want, (unsigned long long)b->acc[slot].n);
            return;
        }
        if (json_integer_value(json_array_get(p, 0)) != t) {
            report(C_POINTS, q, "group %d: point %zu at %lld, want bucket %lld", g, j - 1,
                   (long long)json_integer_value(json_array_get(p, 0)), (long long)t);
            return;
        }
        if (!check_slot(q, b, slot, b->step, json_number_value(json_array_get(p, 1)), why,
                        sizeof(why))) {
            report(agg_category(q, b, g), q, "group %d bucket %lld: %s", g, (long long)t, why);
        }
    }
    if (j != json_array_size(pts)) {
        report(C_POINTS, q, "group %d: %zu points, want %zu", g, json_array_size(pts), j);
    }
}

static double total_value(const struct qspec *q, const struct brute *b, int g)
{
    size_t slot = (size_t)g * (b->nb + 1) + b->nb;
    double want = NAN;
    double scale;
    if (!slot_value(q, &b->acc[slot], q->to - q->from, &want, &scale)) {
        return NAN;
    }
    if (is_quantile(effective_agg(q))) {
        double *v;
        size_t n;
        double exact = NAN;
        qv_values(b, slot, &v, &n);
        if (n > 0) {
            quantile_ok(v, n, quantile_of(effective_agg(q)), 0, &exact);
        }
        free(v);
        return exact;
    }
    return want;
}

/* top=N: N groups (or all), none of those left out ranks above one kept,
 * and "value" is the group's value over the whole range. */
static void check_top(const struct qspec *q, const struct brute *b, json_t *series,
                      const bool *seen)
{
    double lowest_kept = INFINITY;
    size_t nexist = 0;
    char why[300];
    for (int g = 0; g < NGID; g++) {
        nexist += b->exists[g];
    }
    if (json_array_size(series) != (nexist < (size_t)q->top ? nexist : (size_t)q->top)) {
        report(C_TOP, q, "top: %zu groups, want %zu", json_array_size(series),
               nexist < (size_t)q->top ? nexist : (size_t)q->top);
    }
    for (size_t i = 0; i < json_array_size(series); i++) {
        json_t *s = json_array_get(series, i);
        int g = answer_gid(q, json_object_get(s, "labels"));
        json_t *jv = json_object_get(s, "value");
        size_t slot;
        if (g < 0) {
            continue;
        }
        slot = (size_t)g * (b->nb + 1) + b->nb;
        if (json_is_number(jv) &&
            !check_slot(q, b, slot, q->to - q->from, json_number_value(jv), why, sizeof(why))) {
            report(C_TOP, q, "top: value of group %d: %s", g, why);
        }
        lowest_kept =
            fmin(lowest_kept, isnan(total_value(q, b, g)) ? -INFINITY : total_value(q, b, g));
    }
    for (int g = 0; g < NGID; g++) {
        double v = total_value(q, b, g);
        double slack = is_quantile(effective_agg(q)) ? 2.5 * Q_TOL * fabs(v) : 1e-9 * fabs(v);
        if (b->exists[g] && !seen[g] && !isnan(v) && v > lowest_kept + slack) {
            report(C_TOP, q, "top: group %d (value %.17g) left out, but a kept group has %.17g", g,
                   v, lowest_kept);
        }
    }
}

static const char *res_name(int64_t ms)
{
    return ms == HOUR ? "1h" : ms == MINUTE ? "1m" : ms == 10 * SEC ? "10s" : "raw";
}

/* The resolution the store should answer from, rollups built to wm_1m. */
static const char *expected_res(const struct qspec *q, const struct brute *b, int64_t wm_1m)
{
    static const int64_t order[] = {HOUR, MINUTE, 10 * SEC};
    enum st_agg agg = effective_agg(q);
    int kind = metrics[q->metric].kind;
    /* quantiles of counters and gauges need every value; a counter's
     * compacted rollups keep sums and counts only */
    if (kind != STRATA__V1__KIND__DISTRIBUTION &&
        (is_quantile(agg) || (kind == STRATA__V1__KIND__COUNTER &&
                              (agg == ST_AGG_MIN || agg == ST_AGG_MAX || agg == ST_AGG_DELTA)))) {
        return "raw";
    }
    if (q->step == 0) {
        /* One bucket: the resolution with the fewest rows plus raw blocks
         * (about one per 10 s) over the range; raw when none covers any. */
        const char *best = "raw";
        int64_t best_cost = (q->to - q->from) / (10 * SEC) + 1;
        for (size_t i = 0; i < 3; i++) {
            int64_t ms = order[i];
            int64_t wm = ms == HOUR ? floor_to(wm_1m, HOUR) : wm_1m;
            int64_t a = ceil_to(q->from, ms);
            int64_t e = floor_to(q->to, ms) < wm ? floor_to(q->to, ms) : wm;
            int64_t cost = (e - a) / ms + (q->to - q->from - (e - a)) / (10 * SEC) + 1;
            if (a < e && cost < best_cost) {
                best = res_name(ms);
                best_cost = cost;
            }
        }
        return best;
    }
    for (size_t i = 0; i < 3; i++) {
        int64_t ms = order[i];
        int64_t wm = ms == HOUR ? floor_to(wm_1m, HOUR) : wm_1m;
        if (b->step % ms == 0 && b->rfrom % ms == 0) {
            int64_t a = ceil_to(q->from, ms);
            int64_t e = floor_to(q->to, ms) < wm ? floor_to(q->to, ms) : wm;
            return a < e ? res_name(ms) : "raw";
        }
    }
    return "raw";
}

static void check_meta(const struct qspec *q, json_t *ans)
{
    const char *kinds[] = {"", "counter", "gauge", "distribution"};
    const char *kind = json_string_value(json_object_get(ans, "kind"));
    const char *unit = json_string_value(json_object_get(ans, "unit"));
    const char *metric = json_string_value(json_object_get(ans, "metric"));
    if (metric == NULL || strcmp(metric, metrics[q->metric].name) != 0) {
        report(C_META, q, "metric %s", metric ? metric : "(none)");
    }
    if (kind == NULL || strcmp(kind, kinds[metrics[q->metric].kind]) != 0) {
        report(C_META, q, "kind %s", kind ? kind : "(none)");
    }
    /* The unit comes from the series; an answer without any may lack it. */
    if (json_array_size(json_object_get(ans, "series")) > 0 &&
        (unit == NULL || strcmp(unit, metrics[q->metric].unit) != 0)) {
        report(C_META, q, "unit %s", unit ? unit : "(none)");
    }
}

/* wm_1m: where the builder stands (0: check no resolution). */
static void check_agg(st_store *st, const struct qspec *q, int64_t wm_1m)
{
    json_t *ans = run_query(st, q);
    json_t *series = json_object_get(ans, "series");
    struct brute b;
    bool seen[NGID] = {false};
    const char *res = json_string_value(json_object_get(ans, "resolution"));
    brute_run(q, &b);
    check_meta(q, ans);
    check_fold(st, q);
    if (wm_1m != 0 && (res == NULL || strcmp(res, expected_res(q, &b, wm_1m)) != 0)) {
        report(C_RES, q, "resolution %s, want %s", res ? res : "(none)",
               expected_res(q, &b, wm_1m));
    }
    for (size_t i = 0; i < json_array_size(series); i++) {
        json_t *s = json_array_get(series, i);
        int g = answer_gid(q, json_object_get(s, "labels"));
        if (g < 0 || !b.exists[g] || seen[g]) {
            report(C_POINTS, q, "answer series %zu: unexpected or repeated group %d", i, g);
            continue;
        }
        seen[g] = true;
        check_points(q, &b, g, json_object_get(s, "points"));
    }
    if (q->top > 0) {
        check_top(q, &b, series, seen);
    } else {
        for (int g = 0; g < NGID; g++) {
            json_t *none = json_array();
            if (b.exists[g] && !seen[g]) {
                /* A group may be left out only when it has no point. */
                check_points(q, &b, g, none);
            }
            json_decref(none);
        }
    }
    brute_free(&b);
    json_decref(ans);
}

static int answer_series(const struct qspec *q, json_t *labels)
{
    for (int i = 0; i < nser; i++) {
        const struct oseries *s = &ser[i];
        const char *keys[] = {"host", "role", "route", "result"};
        size_t nl = 0;
        bool same = s->metric == q->metric;
        for (int k = 0; k < 4 && same; k++) {
            const char *want = label_of(s, keys[k]);
            const char *got = json_string_value(json_object_get(labels, keys[k]));
            nl += want[0] != '\0';
            same = want[0] == '\0' ? got == NULL : (got != NULL && strcmp(got, want) == 0);
        }
        if (same && json_object_size(labels) == nl) {
            return i;
        }
    }
    return -1;
}

static bool series_selected(const struct qspec *q, const struct oseries *s)
{
    bool ok = s->metric == q->metric;
    for (int k = 0; k < q->nm && ok; k++) {
        ok = mspec_match(&mspecs[q->m[k]], s);
    }
    return ok;
}

/* A raw point of series s at index i: exact for counters and gauges, the
 * p95 of the point's own values for distributions. */
static bool raw_point_ok(const struct oseries *s, int i, double got, char *why, size_t len)
{
    if (s->dv != NULL) {
        double v[MAXDV];
        double exact;
        int n = s->dn[i];
        memcpy(v, s->dv + (size_t)i * MAXDV, (size_t)n * sizeof(double));
        for (int a = 1; a < n; a++) {
            for (int c = a; c > 0 && v[c - 1] > v[c]; c--) {
                double x = v[c];
                v[c] = v[c - 1];
                v[c - 1] = x;
            }
        }
        /* An empty sketch has no p95; the store writes 0 for it. */
        if (n == 0 || quantile_ok(v, (size_t)n, 0.95, got, &exact)) {
            return true;
        }
        snprintf(why, len, "p95 %.17g, exact %.17g of %d values", got, exact, n);
        return false;
    }
    if (got != s->v[i]) {
        snprintf(why, len, "got %.17g, want %.17g", got, s->v[i]);
        return false;
    }
    return true;
}

static void check_raw_series(const struct qspec *q, const struct oseries *s, json_t *pts)
{
    size_t j = 0;
    char why[300];
    for (int i = 0; i < NPTS; i++) {
        int64_t t = TSTART + (int64_t)i * SEC;
        json_t *p;
        if (t < q->from || t >= q->to || !applied[s->host][i / CHUNK]) {
            continue;
        }
        p = json_array_get(pts, j++);
        if (p == NULL || json_integer_value(json_array_get(p, 0)) != t) {
            report(C_RAW, q, "raw %s/%s/%s: point %zu missing or at the wrong time (want %lld)",
                   host_names[s->host], label_of(s, "route"), label_of(s, "result"), j - 1,
                   (long long)t);
            return;
        }
        if (!raw_point_ok(s, i, json_number_value(json_array_get(p, 1)), why, sizeof(why))) {
            report(C_RAW, q, "raw %s/%s/%s at %lld: %s", host_names[s->host], label_of(s, "route"),
                   label_of(s, "result"), (long long)t, why);
        }
    }
    if (j != json_array_size(pts)) {
        report(C_RAW, q, "raw %s/%s/%s: %zu points, want %zu", host_names[s->host],
               label_of(s, "route"), label_of(s, "result"), json_array_size(pts), j);
    }
}

/* Without agg, step, by or top: every stored point of every matching
 * series, with all its labels. */
static void check_raw(st_store *st, const struct qspec *q)
{
    json_t *ans = run_query(st, q);
    json_t *series = json_object_get(ans, "series");
    bool seen[MAXSER] = {false};
    const char *res = json_string_value(json_object_get(ans, "resolution"));
    if (json_array_size(series) > 0) {
        check_meta(q, ans);
    }
    if (res == NULL || strcmp(res, "raw") != 0) {
        report(C_RAWRES, q, "raw answer: resolution %s, want raw", res ? res : "(none)");
    }
    for (size_t i = 0; i < json_array_size(series); i++) {
        json_t *s = json_array_get(series, i);
        int k = answer_series(q, json_object_get(s, "labels"));
        if (k < 0 || seen[k] || !series_selected(q, &ser[k])) {
            report(C_RAW, q, "raw answer series %zu: unexpected labels", i);
            continue;
        }
        seen[k] = true;
        check_raw_series(q, &ser[k], json_object_get(s, "points"));
    }
    for (int k = 0; k < nser; k++) {
        if (!seen[k] && series_selected(q, &ser[k])) {
            json_t *none = json_array();
            check_raw_series(q, &ser[k], none);
            json_decref(none);
        }
    }
    json_decref(ans);
}

/* ---- random queries ------------------------------------------------------- */

static const int64_t steps[] = {0, 7 * SEC, 10 * SEC, MINUTE, 5 * MINUTE, HOUR};

static enum st_agg random_agg(int metric)
{
    static const enum st_agg all[] = {ST_AGG_DEFAULT, ST_AGG_P50,   ST_AGG_P90,  ST_AGG_P95,
                                      ST_AGG_P99,     ST_AGG_AVG,   ST_AGG_MIN,  ST_AGG_MAX,
                                      ST_AGG_SUM,     ST_AGG_COUNT, ST_AGG_RATE, ST_AGG_DELTA};
    enum st_agg a;
    do {
        a = all[rnd_below(sizeof(all) / sizeof(all[0]))];
    } while (a == ST_AGG_DELTA && metrics[metric].kind == STRATA__V1__KIND__DISTRIBUTION);
    return a;
}

/* A range for a step: aligned to it (or for no step, to a minute or an
 * hour), or anywhere to the millisecond. */
static void random_range(struct qspec *q, bool aligned)
{
    int64_t lo = TSTART - 10 * MINUTE;
    int64_t hi = T0 + 10 * MINUTE;
    int64_t x = lo + rnd_below(hi - lo);
    if (q->step > 0 && aligned) {
        int64_t nb = 1 + rnd_below((hi - lo) / q->step);
        q->from = floor_to(x, q->step);
        q->to = q->from + nb * q->step;
    } else if (aligned) {
        int64_t unit = rnd_below(2) ? HOUR : MINUTE;
        q->from = floor_to(x, unit);
        q->to = q->from + unit * (1 + rnd_below((hi - q->from) / unit + 1));
    } else {
        q->from = x;
        q->to = x + 1 + rnd_below(hi - x + HOUR);
    }
}

static void random_matchers(struct qspec *q, int max)
{
    q->nm = (int)rnd_below(max + 1);
    for (int i = 0; i < q->nm; i++) {
        q->m[i] = (int)rnd_below(NMSPEC);
    }
}

static void random_agg_query(struct qspec *q)
{
    memset(q, 0, sizeof(*q));
    q->metric = (int)rnd_below(NMETRIC);
    q->agg = random_agg(q->metric);
    q->by = (int)rnd_below(4);
    q->step = steps[rnd_below(sizeof(steps) / sizeof(steps[0]))];
    if (q->agg == ST_AGG_DEFAULT && q->step == 0 && q->by == 0) {
        q->step = MINUTE; /* otherwise it is a raw query */
    }
    random_range(q, rnd_below(3) != 0);
    random_matchers(q, 2);
}

static void random_raw_query(struct qspec *q)
{
    memset(q, 0, sizeof(*q));
    q->raw = true;
    q->metric = (int)rnd_below(NMETRIC);
    q->from = TSTART - 2 * MINUTE + rnd_below(NPTS * SEC + 4 * MINUTE);
    q->to = q->from + 1 + rnd_below(15 * MINUTE);
    random_matchers(q, 2);
}

/* ratio over result=hit: the hit share of the requests. */
static void random_ratio_query(struct qspec *q)
{
    random_agg_query(q);
    q->metric = M_REQ;
    q->agg = ST_AGG_RATIO;
    random_matchers(q, 1);
    q->m[q->nm++] = M_RESULT_HIT;
}

static void random_top_query(struct qspec *q)
{
    static const enum st_agg aggs[] = {ST_AGG_SUM, ST_AGG_MAX, ST_AGG_AVG, ST_AGG_P95,
                                       ST_AGG_DEFAULT};
    random_agg_query(q);
    q->agg = aggs[rnd_below(sizeof(aggs) / sizeof(aggs[0]))];
    q->by = rnd_below(2) ? BY_HOST : BY_HOST | BY_ROUTE;
    q->top = 3;
}

static void run_random_queries(st_store *st, int n, int64_t wm_1m)
{
    for (int i = 0; i < n; i++) {
        struct qspec q;
        int kind = (int)rnd_below(20);
        if (kind < 13) {
            random_agg_query(&q);
        } else if (kind < 16) {
            random_raw_query(&q);
            check_raw(st, &q);
            continue;
        } else if (kind < 18) {
            random_ratio_query(&q);
        } else {
            random_top_query(&q);
        }
        check_agg(st, &q, wm_1m);
    }
}

/* Fixed queries whose resolution is known: rollups where they tile the
 * step over a built, aligned range; raw otherwise. */
static void check_resolutions(st_store *st)
{
    struct {
        int metric;
        enum st_agg agg;
        int64_t step;
        int64_t from;
        int64_t to;
        const char *res;
    } cases[] = {
        {M_REQ, ST_AGG_SUM, HOUR, floor_to(TSTART, HOUR) + HOUR, floor_to(T0, HOUR), "1h"},
        {M_LAT, ST_AGG_P99, HOUR, floor_to(TSTART, HOUR), floor_to(T0, HOUR) + HOUR, "1h"},
        {M_MEM, ST_AGG_MAX, MINUTE, TSTART - TSTART % MINUTE, T0, "1m"},
        {M_MEM, ST_AGG_AVG, 5 * MINUTE, floor_to(TSTART, 5 * MINUTE), T0, "1m"},
        {M_TEMP, ST_AGG_MIN, 10 * SEC, floor_to(T0 - HOUR, 10 * SEC), T0, "10s"},
        {M_REQ, ST_AGG_RATE, 7 * SEC, TSTART, T0, "raw"},
        {M_REQ, ST_AGG_P95, HOUR, floor_to(TSTART, HOUR), floor_to(T0, HOUR), "raw"},
        {M_MEM, ST_AGG_P50, MINUTE, floor_to(TSTART, MINUTE), T0, "raw"},
        {M_REQ, ST_AGG_COUNT, 0, floor_to(TSTART, HOUR) + HOUR, floor_to(TSTART, HOUR) + 3 * HOUR,
         "1h"},
        {M_REQ, ST_AGG_SUM, HOUR, floor_to(TSTART, HOUR) + 20 * MINUTE,
         floor_to(TSTART, HOUR) + 100 * MINUTE, "raw"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct qspec q = {.metric = cases[i].metric,
                          .agg = cases[i].agg,
                          .step = cases[i].step,
                          .from = cases[i].from,
                          .to = cases[i].to};
        json_t *ans = run_query(st, &q);
        const char *res = json_string_value(json_object_get(ans, "resolution"));
        if (res == NULL || strcmp(res, cases[i].res) != 0) {
            report(C_RES, &q, "resolution %s, want %s", res ? res : "(none)", cases[i].res);
        }
        json_decref(ans);
        check_agg(st, &q, 0);
    }
}

/* ---- fixtures --------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    gen_data();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free_data();
    return 0;
}

static int setup(void **state)
{
    (void)state;
    if (st_test_mkdtemp(tmpdir, sizeof(tmpdir), "query") == NULL) {
        return -1;
    }
    reset_applied();
    failures = 0;
    memset(cat_count, 0, sizeof(cat_count));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return st_test_rmtree(tmpdir);
}

/* Every frame, shuffled, split in three: early (applied before the
 * builder runs), on time (some land in minutes already built) and a burst
 * of late frames applied after the builder passed all of them. */
struct plan {
    int *pairs;
    size_t n_early;
    size_t n_ontime;
    size_t n_late;
};

static void make_plan(struct plan *p, bool first_is_oldest)
{
    size_t n = (size_t)NHOST * NCHUNK;
    p->pairs = malloc(n * sizeof(int));
    assert_non_null(p->pairs);
    for (size_t i = 0; i < n; i++) {
        p->pairs[i] = (int)i;
    }
    shuffle(p->pairs, n);
    if (first_is_oldest) {
        for (size_t i = 0; i < n; i++) {
            if (p->pairs[i] == PAIR(0, 0)) {
                p->pairs[i] = p->pairs[0];
                p->pairs[0] = PAIR(0, 0);
            }
        }
    }
    p->n_late = n / 20;
    p->n_early = (n - p->n_late) * 6 / 10;
    p->n_ontime = n - p->n_late - p->n_early;
}

/* ---- tests ---------------------------------------------------------------- */

/* Shuffled frames, a query batch while the builder is half way (rollups
 * then a raw tail), on-time frames into built minutes, the builder run to
 * the end, a burst of late frames, duplicates, then every kind of query. */
static void test_rollups_equal_brute_force(void **state)
{
    struct plan p;
    st_store *st = open_store(tmpdir, NULL);
    int64_t now_a = T0 - 90 * MINUTE;
    int64_t now_b = T0 + HOUR;
    (void)state;
    make_plan(&p, true);
    apply_pairs(st, p.pairs, p.n_early);
    maintain_all(st, now_a);
    assert_built_to(st, now_a);
    run_random_queries(st, 150, expected_wm_1m(now_a));

    apply_pairs(st, p.pairs + p.n_early, p.n_ontime);
    maintain_all(st, now_b);
    assert_built_to(st, now_b);
    apply_pairs(st, p.pairs + p.n_early + p.n_ontime, p.n_late);
    {
        struct st_store_stats ss;
        assert_int_equal(st_store_stats(st, &ss), ST_OK);
        assert_true(ss.dirty > 0); /* the late frames marked built minutes */
    }
    apply_duplicates(st, 40);
    maintain_all(st, now_b);
    assert_built_to(st, now_b);

    check_resolutions(st);
    run_random_queries(st, 500, expected_wm_1m(now_b));
    free(p.pairs);
    st_store_close(st);
    assert_no_failures();
}

/* The builder stopped after a few small slices, the store closed and
 * reopened (twice, with frames in between): the rollups still end exact. */
static void test_reopen_mid_build(void **state)
{
    struct plan p;
    st_store *st = open_store(tmpdir, NULL);
    int64_t now = T0 + HOUR;
    bool more = false;
    struct st_store_stats ss;
    (void)state;
    make_plan(&p, false); /* the first block lands mid-range */
    apply_pairs(st, p.pairs, p.n_early + p.n_ontime / 2);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(st_store_maintain(st, now, 1, &more), ST_OK);
    }
    assert_true(more);
    assert_int_equal(st_store_stats(st, &ss), ST_OK);
    assert_true(ss.wm_1m < expected_wm_1m(now));
    st_store_close(st);

    st = open_store(tmpdir, NULL);
    apply_pairs(st, p.pairs + p.n_early + p.n_ontime / 2, p.n_ontime - p.n_ontime / 2);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(st_store_maintain(st, now, 1, &more), ST_OK);
    }
    assert_true(more);
    st_store_close(st);

    st = open_store(tmpdir, NULL);
    maintain_all(st, now);
    apply_pairs(st, p.pairs + p.n_early + p.n_ontime, p.n_late);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(st_store_maintain(st, now, 1, &more), ST_OK);
    }
    st_store_close(st);

    st = open_store(tmpdir, NULL);
    maintain_all(st, now);
    assert_built_to(st, now);
    check_resolutions(st);
    run_random_queries(st, 250, expected_wm_1m(now));
    free(p.pairs);
    st_store_close(st);
    assert_no_failures();
}

/* An aligned query whose step one resolution tiles. */
static void aligned_query(struct qspec *q, int64_t step, int64_t lo, int64_t hi)
{
    static const enum st_agg aggs[] = {ST_AGG_SUM,   ST_AGG_AVG,  ST_AGG_MIN,    ST_AGG_MAX,
                                       ST_AGG_COUNT, ST_AGG_RATE, ST_AGG_DEFAULT};
    memset(q, 0, sizeof(*q));
    q->metric = (int)rnd_below(NMETRIC);
    q->agg = aggs[rnd_below(sizeof(aggs) / sizeof(aggs[0]))];
    if (q->metric == M_LAT && rnd_below(2)) {
        q->agg = (enum st_agg)(ST_AGG_P50 + (int)rnd_below(4));
    }
    if (q->metric == M_REQ && (q->agg == ST_AGG_MIN || q->agg == ST_AGG_MAX)) {
        /* a counter's min and max go with its raw points
         * (check_pruned_empty); its rollups answer the rest */
        q->agg = ST_AGG_SUM;
    }
    q->by = (int)rnd_below(4);
    q->step = step;
    q->from = floor_to(lo + rnd_below(hi - lo), step);
    q->to = q->from + step * (1 + rnd_below((hi - q->from) / step));
    if (q->to > hi) {
        q->to = q->from + step;
    }
    random_matchers(q, 1);
}

static int64_t count_points(json_t *ans)
{
    json_t *series = json_object_get(ans, "series");
    int64_t n = 0;
    for (size_t i = 0; i < json_array_size(series); i++) {
        n += (int64_t)json_array_size(json_object_get(json_array_get(series, i), "points"));
    }
    return n;
}

/* Raw and 10 s queries over the pruned part find nothing, nor does a
 * counter's min or max (its rollups keep sums and counts). */
static void check_pruned_empty(st_store *st, int64_t cutoff)
{
    /* Compacted hours are dropped whole, once all of them is past the
     * cutoff: what is gone is what lies before the cutoff's hour. */
    cutoff = floor_to(cutoff, HOUR);
    for (int i = 0; i < 20; i++) {
        struct qspec q = {.raw = true, .metric = i % NMETRIC};
        json_t *ans;
        q.from = TSTART - MINUTE + rnd_below(cutoff - TSTART - 20 * MINUTE);
        q.to = q.from + 1 + rnd_below(60 * MINUTE);
        if (q.to > cutoff - 10 * SEC) {
            q.to = cutoff - 10 * SEC;
        }
        ans = run_query(st, &q);
        if (count_points(ans) != 0) {
            report(C_RAW, &q, "raw query over pruned data: %lld points, want none",
                   (long long)count_points(ans));
        }
        json_decref(ans);
        q.raw = false;
        q.agg = ST_AGG_COUNT;
        q.step = 10 * SEC;
        q.from = floor_to(q.from, 10 * SEC);
        q.to = floor_to(cutoff - 10 * SEC - 2 * MINUTE, 10 * SEC);
        ans = run_query(st, &q);
        if (count_points(ans) != 0) {
            report(C_RAW, &q, "10s query over pruned data: %lld points, want none",
                   (long long)count_points(ans));
        }
        json_decref(ans);
        /* A counter's rollups keep its sums and counts, not its min and
         * max: those are gone with the raw points, even on whole hours. */
        q.metric = M_REQ;
        q.agg = i % 2 ? ST_AGG_MAX : ST_AGG_MIN;
        q.step = HOUR;
        q.from = floor_to(TSTART, HOUR);
        q.to = cutoff;
        ans = run_query(st, &q);
        if (q.to > q.from && count_points(ans) != 0) {
            report(C_RAW, &q, "counter %s over pruned raw data: %lld points, want none",
                   st_agg_name(q.agg), (long long)count_points(ans));
        }
        json_decref(ans);
    }
}

/* Raw data younger than the retention is all still there, the frame that
 * straddles the cutoff included: exactly the compacted hours (each holds
 * the blocks that start in it) that end after it. */
static void check_young_raw_kept(st_store *st, int64_t cutoff, uint64_t point_blocks)
{
    int64_t kept = 0;
    int64_t hour_end = INT64_MIN;
    int64_t hour = INT64_MIN;
    for (int i = 0; i < 8; i++) {
        struct qspec q = {.raw = true, .metric = i % NMETRIC, .from = cutoff};
        q.to = cutoff + (i + 1) * 2 * MINUTE;
        check_raw(st, &q);
    }
    for (int c = 0; c <= NCHUNK; c++) {
        int64_t start = TSTART + c * CHUNK * SEC;
        if (c == NCHUNK || floor_to(start, HOUR) != hour) {
            kept += hour != INT64_MIN && hour_end > cutoff ? nser : 0;
            hour = floor_to(start, HOUR);
        }
        hour_end = start + CHUNK * SEC;
    }
    if ((int64_t)point_blocks != kept) {
        struct qspec q = {.raw = true, .from = cutoff, .to = T0};
        report(C_RAW, &q,
               "point blocks after pruning: %llu, want %lld (those ending after the cutoff)",
               (unsigned long long)point_blocks, (long long)kept);
    }
}

/* Raw and 10 s data past their retention are pruned; 1 m and 1 h rollups
 * still answer aligned queries over that time exactly. */
static void test_retention(void **state)
{
    struct plan p;
    struct st_store_retention ret = {.raw_ms = 90 * MINUTE,
                                     .r10s_ms = 90 * MINUTE,
                                     .r1m_ms = 400LL * 86400 * 1000,
                                     .r1h_ms = 400LL * 86400 * 1000};
    st_store *st = open_store(tmpdir, NULL);
    struct st_store_stats before;
    struct st_store_stats after;
    /* The raw cutoff falls 5 s into a frame: TSTART + 2 h + 5 s. */
    int64_t now = T0 + 30 * MINUTE + 5 * SEC;
    int64_t cutoff = now - ret.raw_ms;
    (void)state;
    make_plan(&p, false);
    apply_pairs(st, p.pairs, (size_t)NHOST * NCHUNK);
    maintain_all(st, T0 + HOUR);
    assert_int_equal(st_store_stats(st, &before), ST_OK);
    st_store_close(st);

    st = open_store(tmpdir, &ret);
    maintain_all(st, now);
    assert_int_equal(st_store_stats(st, &after), ST_OK);
    assert_true(after.point_blocks < before.point_blocks);
    assert_true(after.rollup_entries < before.rollup_entries);
    /* Aligned 1m, 5m and 1h queries anywhere, the pruned part included. */
    for (int i = 0; i < 120; i++) {
        struct qspec q;
        int64_t step = i % 3 == 0 ? HOUR : i % 3 == 1 ? MINUTE : 5 * MINUTE;
        aligned_query(&q, step, TSTART - 5 * MINUTE, cutoff);
        check_agg(st, &q, expected_wm_1m(T0 + HOUR));
    }
    check_pruned_empty(st, cutoff);
    check_young_raw_kept(st, cutoff, after.point_blocks);
    free(p.pairs);
    st_store_close(st);
    assert_no_failures();
}

/* ---- blocks longer than a minute ----------------------------------------- */

/* A frame of one gauge of npoints 1 s points, each 1.0. */
static st_frame *mk_gauge_frame(uint64_t seq, const char *name, int64_t start, int npoints)
{
    st_frame *f = calloc(1, sizeof(*f));
    Strata__V1__Series *s = malloc(sizeof(*s));
    assert_non_null(f);
    assert_non_null(s);
    strata__v1__frame__init(f);
    f->agent_id.data = calloc(1, 16);
    assert_non_null(f->agent_id.data);
    f->agent_id.data[0] = 0x10;
    f->agent_id.len = 16;
    f->seq = seq;
    f->agent = malloc(sizeof(*f->agent));
    assert_non_null(f->agent);
    strata__v1__agent__init(f->agent);
    f->agent->host = strdup("long");
    f->agent->role = STRATA__V1__ROLE__APP;
    strata__v1__series__init(s);
    s->name = strdup(name);
    s->unit = strdup("1");
    s->kind = STRATA__V1__KIND__GAUGE;
    s->start_unix_ms = start;
    s->interval_ms = 1000;
    s->n_values = (size_t)npoints;
    s->values = malloc((size_t)npoints * sizeof(double));
    assert_non_null(s->values);
    for (int i = 0; i < npoints; i++) {
        s->values[i] = 1.0;
    }
    f->series = calloc(1, sizeof(*f->series));
    assert_non_null(f->series);
    f->series[0] = s;
    f->n_series = 1;
    return f;
}

static void apply_frame(st_store *st, st_frame *f)
{
    st_store_txn *t = NULL;
    bool dup = true;
    assert_int_equal(st_store_begin(st, &t), ST_OK);
    assert_int_equal(st_store_apply(t, f, T0, &dup), ST_OK);
    assert_false(dup);
    assert_int_equal(st_store_commit(t), ST_OK);
    st_frame_free(f);
}

/* count per minute of metric over [from, from + n min), step 1m. */
static json_t *count_per_minute(st_store *st, const char *metric, int64_t from, int n)
{
    char f[32], t[32], err[300];
    st_qparam p[] = {{"metric", metric}, {"agg", "count"}, {"step", "1m"}, {"from", f}, {"to", t}};
    st_query q;
    json_t *out = NULL;
    snprintf(f, sizeof(f), "%lld", (long long)from);
    snprintf(t, sizeof(t), "%lld", (long long)(from + n * MINUTE));
    assert_int_equal(st_query_parse(p, 5, T0, &q, err, sizeof(err)), ST_OK);
    assert_int_equal(st_query_run(st, &q, &out, err, sizeof(err)), ST_OK);
    st_query_release(&q);
    return out;
}

/* An agent that flushes every 150 s ships blocks that span three minutes;
 * each block arrives when it ends and the builder keeps up with the wall
 * clock. Every minute's count must still come out of the 1 m rollups. */
static void test_blocks_longer_than_a_minute(void **state)
{
    const int64_t m0 = floor_to(T0, HOUR) + 5 * SEC;
    const int nblocks = 8;
    const int blen = 150;
    st_store *st = open_store(tmpdir, NULL);
    uint64_t seq = 0;
    int nmin = nblocks * blen / 60 + 1;
    json_t *ans;
    json_t *pts;
    (void)state;
    for (int64_t t = m0; t <= m0 + nblocks * blen * SEC; t += 10 * SEC) {
        /* A well-behaved neighbour ships 10 s frames all along. */
        if (t > m0) {
            apply_frame(st, mk_gauge_frame(++seq, "q.short", t - 10 * SEC, 10));
        }
        if (t > m0 && (t - m0) % (blen * SEC) == 0) {
            apply_frame(st, mk_gauge_frame(++seq, "q.long", t - blen * SEC, blen));
        }
        maintain_all(st, t);
    }
    maintain_all(st, m0 + 2 * HOUR);
    for (int k = 0; k < 2; k++) {
        const char *metric = k == 0 ? "q.short" : "q.long";
        ans = count_per_minute(st, metric, m0 - 5 * SEC, nmin);
        pts = json_object_get(json_array_get(json_object_get(ans, "series"), 0), "points");
        assert_string_equal(json_string_value(json_object_get(ans, "resolution")), "1m");
        for (int i = 0; i < nmin; i++) {
            int64_t bstart = m0 - 5 * SEC + i * MINUTE;
            int64_t lo = bstart > m0 ? bstart : m0;
            int64_t hi = bstart + MINUTE < m0 + nblocks * blen * SEC ? bstart + MINUTE
                                                                     : m0 + nblocks * blen * SEC;
            json_t *p = NULL;
            for (size_t j = 0; j < json_array_size(pts); j++) {
                if (json_integer_value(json_array_get(json_array_get(pts, j), 0)) == bstart) {
                    p = json_array_get(pts, j);
                }
            }
            if (p == NULL || json_number_value(json_array_get(p, 1)) != (double)((hi - lo) / SEC)) {
                print_message("%s: minute %d (%lld): got %s%.0f, want %lld\n", metric, i,
                              (long long)bstart, p == NULL ? "no point " : "",
                              p == NULL ? 0.0 : json_number_value(json_array_get(p, 1)),
                              (long long)((hi - lo) / SEC));
                failures++;
            }
        }
        json_decref(ans);
    }
    st_store_close(st);
    if (failures > 0) {
        fail_msg("%d minutes of 1 m rollups disagree with the points stored", failures);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rollups_equal_brute_force, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_mid_build, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention, setup, teardown),
        cmocka_unit_test_setup_teardown(test_blocks_longer_than_a_minute, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
