/* Aggregated queries: series grouped by the `by` labels, points folded
 * into step buckets exactly (counters summed, gauges sum/min/max/first/
 * last, distributions as merged sketches, so a p95 is the p95 of every
 * sample in the bucket), then one value per bucket by `agg`. */
#include "query.h"

#include "err.h"
#include "frame.h"
#include "log.h"
#include "sketch.h"
#include "util.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GROUP_KEY_MAX 2048

struct acc {
    double sum;
    double min;
    double max;
    double first;
    double last;
    double num; /* ratio numerator; sum is the denominator */
    int64_t first_t;
    int64_t last_t;
    uint64_t count;
    st_sketch *sk;
    double dsum;
};

struct fl {
    int64_t ft, lt;
    double f, l;
};

struct sstate {
    uint32_t id;
    struct group *g;
    struct fl *b;
    struct fl total;
};

struct group {
    char *key;
    size_t keylen;
    size_t seq; /* creation order: the order a scan first met the group */
    json_t *labels;
    struct acc *b;
    struct acc total;
};

/* What a sliding window's scan saw per bucket (st_query_slide). */
struct bstat {
    int64_t tmin; /* the points' times: whether a window edge inside the */
    int64_t tmax; /* bucket takes all of them, none, or must read them */
    double abs;   /* counters and gauges: sum of |value|, and whether one */
    bool inexact; /* was not an integer (sums then depend on their order) */
};

struct agg_run {
    const st_query *q;
    struct bstat *bs; /* per bucket, or NULL */
    enum st_agg agg;  /* the answer's: a kept fold answers several (st_query_fold) */
    st_matcher scan_m[ST_QUERY_MAX_MATCHERS];
    size_t n_scan;
    st_matcher num_m[ST_QUERY_MAX_MATCHERS];
    size_t n_num;
    int64_t from;
    int64_t step;
    size_t nb;
    /* Groups by key, open addressing over tabsize slots in pages that
     * are allocated when a group lands in them: the engine's limits make
     * tabsize 512 k for one question, which mostly holds a few groups. The
     * slot order is the answer's order. */
    struct group ***tab;
    /* A slide's answer: its groups, keys and buckets in one allocation
     * (thousands of groups an answer, every step) */
    char *arena;
    size_t arena_used;
    uint64_t
        *occ; /* a bit per slot in use: walking 512 k slots per answer cost more than folding */
    size_t tabsize;
    size_t page; /* slots per page */
    size_t ng;
    size_t max_series; /* the query's limits, defaults filled in */
    size_t max_points;
    struct group *cur;
    struct sstate *ss; /* in first-seen order: the delta sums depend on it */
    size_t nss;
    size_t sscap;
    size_t *ss_idx; /* open addressing by series id: 1 + index into ss, 0 empty */
    size_t ss_tabsize;
    struct sstate *cur_ss;
    bool cur_num;
    int kind;
    bool want_sketch;
    /* Every value (or rollup sum) added was an integer and their absolute
     * sum stays below 2^53: any order of adding them gives the same sums,
     * so groups merged later equal groups folded at once. */
    bool exact_sums;
    double abs_sum;
    int64_t lo; /* the part of the range the current scan fills */
    int64_t hi;
    /* A fed slide's scans: each series met and its group, and the oldest
     * point past the range (st_query_slide_feed). */
    bool track;
    struct idg {
        uint32_t id;
        bool num; /* a ratio's numerator series */
        struct group *g;
    } * idg;
    size_t nidg;
    size_t capidg;
    int64_t beyond;
    const char *res_used;
    json_t *meta;
    double *vals;
    size_t valcap;
    char *err;
    size_t errlen;
};

static int fail(struct agg_run *r, int rv, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define TAB_PAGE 256

/* The group in slot i, or NULL. */
static struct group *tab_get(const struct agg_run *r, size_t i)
{
    struct group **pg = r->tab[i / r->page];
    return pg != NULL ? pg[i % r->page] : NULL;
}

static int tab_put(struct agg_run *r, size_t i, struct group *g)
{
    struct group ***pg = &r->tab[i / r->page];
    if (*pg == NULL && (*pg = calloc(r->page, sizeof(**pg))) == NULL) {
        return ST_ENOMEM;
    }
    (*pg)[i % r->page] = g;
    r->occ[i / 64] |= 1ULL << (i % 64);
    return ST_OK;
}

/* The first group in a slot at or after *i (NULL: none), in slot order;
 * *i is left past it. */
static struct group *tab_next(const struct agg_run *r, size_t *i)
{
    size_t nw = r->tabsize / 64;
    size_t w = *i / 64;
    uint64_t bits;
    if (r->occ == NULL || *i >= r->tabsize) {
        return NULL;
    }
    bits = r->occ[w] & (~0ULL << (*i % 64));
    while (bits == 0) {
        if (++w >= nw) {
            *i = r->tabsize;
            return NULL;
        }
        bits = r->occ[w];
    }
    *i = w * 64 + (size_t)__builtin_ctzll(bits) + 1;
    return tab_get(r, *i - 1);
}

static int fail(struct agg_run *r, int rv, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err, r->errlen, fmt, ap);
    va_end(ap);
    return rv;
}

static bool is_quantile(enum st_agg a)
{
    return a == ST_AGG_P50 || a == ST_AGG_P90 || a == ST_AGG_P95 || a == ST_AGG_P99;
}

static void acc_init(struct acc *a)
{
    memset(a, 0, sizeof(*a));
    a->min = INFINITY;
    a->max = -INFINITY;
    a->first_t = INT64_MAX;
    a->last_t = INT64_MIN;
}

/* A point's value into a (sketch aside); num takes it when counted. */
static void acc_point(struct acc *a, int64_t t, double v, double lo, double hi, bool num)
{
    a->sum += v;
    a->num += num ? v : 0;
    a->count++;
    a->min = fmin(a->min, lo);
    a->max = fmax(a->max, hi);
    if (t < a->first_t) {
        a->first_t = t;
        a->first = v;
    }
    if (t >= a->last_t) {
        a->last_t = t;
        a->last = v;
    }
}

static int acc_value(struct agg_run *r, struct acc *a, int64_t t, double v, double lo, double hi)
{
    int rv;
    acc_point(a, t, v, lo, hi, r->cur_num);
    if (!r->want_sketch) {
        return ST_OK;
    }
    if (a->sk == NULL && (rv = st_sketch_new(ST_SKETCH_ALPHA, &a->sk)) != ST_OK) {
        return rv;
    }
    return st_sketch_insert(a->sk, v);
}

static void fl_init(struct fl *x)
{
    x->ft = INT64_MAX;
    x->lt = INT64_MIN;
}

static void fl_add(struct fl *x, int64_t ft, double f, int64_t lt, double l)
{
    if (ft < x->ft) {
        x->ft = ft;
        x->f = f;
    }
    if (lt >= x->lt) {
        x->lt = lt;
        x->l = l;
    }
}

static int acc_sketch(struct acc *a, const Strata__V1__Sketch *m)
{
    int rv;
    if (a->sk == NULL && (rv = st_sketch_new(m->alpha, &a->sk)) != ST_OK) {
        return rv;
    }
    return st_sketch_merge_proto(a->sk, m);
}

static double quantile_of(enum st_agg a)
{
    switch (a) {
    case ST_AGG_P50:
        return 0.50;
    case ST_AGG_P90:
        return 0.90;
    case ST_AGG_P99:
        return 0.99;
    default:
        return 0.95;
    }
}

/* The answer for one bucket; NAN when the bucket has nothing to say. */
static double acc_result(const struct agg_run *r, const struct acc *a, int64_t span_ms)
{
    enum st_agg agg = r->agg;
    bool dist = r->kind == STRATA__V1__KIND__DISTRIBUTION;
    double secs = (double)span_ms / 1000.0;
    if (agg == ST_AGG_DEFAULT) {
        agg = dist ? ST_AGG_P95 : (r->kind == STRATA__V1__KIND__COUNTER ? ST_AGG_SUM : ST_AGG_AVG);
    }
    if (dist) {
        uint64_t n = a->sk != NULL ? st_sketch_count(a->sk) : 0;
        if (n == 0) {
            return NAN;
        }
        switch (agg) {
        case ST_AGG_AVG:
            return st_sketch_sum(a->sk) / (double)n;
        case ST_AGG_MIN:
            return st_sketch_min(a->sk);
        case ST_AGG_MAX:
            return st_sketch_max(a->sk);
        case ST_AGG_SUM:
            return st_sketch_sum(a->sk);
        case ST_AGG_COUNT:
            return (double)n;
        case ST_AGG_RATE:
            return (double)n / secs;
        default:
            return st_sketch_quantile(a->sk, quantile_of(agg));
        }
    }
    if (a->count == 0) {
        return NAN;
    }
    switch (agg) {
    case ST_AGG_AVG:
        return a->sum / (double)a->count;
    case ST_AGG_MIN:
        return a->min;
    case ST_AGG_MAX:
        return a->max;
    case ST_AGG_SUM:
        return a->sum;
    case ST_AGG_COUNT:
        return (double)a->count;
    case ST_AGG_RATE:
        return a->sum / secs;
    case ST_AGG_RATIO:
        return a->sum > 0 ? a->num / a->sum : NAN;
    case ST_AGG_DELTA:
        return a->dsum;
    default:
        return a->sk != NULL ? st_sketch_quantile(a->sk, quantile_of(agg)) : NAN;
    }
}

static uint64_t hash_bytes(const char *p, size_t n)
{
    return st_fnv1a(ST_FNV_SEED, p, n);
}

static const char *rec_label(const Strata__V1__SeriesRecord *rec, const char *key)
{
    for (size_t i = 0; i < rec->n_labels; i++) {
        if (strcmp(rec->labels[i]->key, key) == 0) {
            return rec->labels[i]->value;
        }
    }
    return "";
}

static struct group *group_new(struct agg_run *r, const Strata__V1__SeriesRecord *rec,
                               const char *key, size_t keylen)
{
    struct group *g = calloc(1, sizeof(*g));
    if (g == NULL || (g->key = malloc(keylen)) == NULL ||
        (g->b = malloc(r->nb * sizeof(*g->b))) == NULL || (g->labels = json_object()) == NULL) {
        if (g != NULL) {
            free(g->key);
            free(g->b);
            free(g);
        }
        return NULL;
    }
    memcpy(g->key, key, keylen);
    g->keylen = keylen;
    g->seq = r->ng;
    for (size_t i = 0; i < r->nb; i++) {
        acc_init(&g->b[i]);
    }
    acc_init(&g->total);
    for (size_t i = 0; i < r->q->nby; i++) {
        json_object_set_new(g->labels, r->q->by[i], json_string(rec_label(rec, r->q->by[i])));
    }
    return g;
}

static void group_free(const struct agg_run *r, struct group *g)
{
    for (size_t k = 0; g->b != NULL && k < r->nb; k++) {
        st_sketch_free(g->b[k].sk);
    }
    st_sketch_free(g->total.sk);
    json_decref(g->labels);
    if (r->arena != NULL) {
        return; /* freed with the arena */
    }
    free(g->b);
    free(g->key);
    free(g);
}

/* Finds or creates the group of a series (open addressing, power of two). */
static int find_group(struct agg_run *r, const Strata__V1__SeriesRecord *rec, struct group **out)
{
    char key[GROUP_KEY_MAX];
    size_t len = 0;
    size_t i;
    struct group *g;
    for (size_t k = 0; k < r->q->nby; k++) {
        const char *v = rec_label(rec, r->q->by[k]);
        size_t vl = strlen(v);
        if (len + vl + 1 > sizeof(key)) {
            return fail(r, ST_ETOOBIG, "parameter 'by': label values too long");
        }
        memcpy(key + len, v, vl + 1);
        len += vl + 1;
    }
    for (i = hash_bytes(key, len) & (r->tabsize - 1); (g = tab_get(r, i)) != NULL;
         i = (i + 1) & (r->tabsize - 1)) {
        if (g->keylen == len && memcmp(g->key, key, len) == 0) {
            *out = g;
            return ST_OK;
        }
    }
    if (r->ng >= r->max_series || (r->ng + 1) * r->nb > r->max_points) {
        return fail(r, ST_ETOOBIG,
                    "the answer has more than %zu series or %zu points: narrow 'match', "
                    "'by' or the range, or widen 'step'",
                    r->max_series, r->max_points);
    }
    if ((g = group_new(r, rec, key, len)) == NULL) {
        return ST_ENOMEM;
    }
    if (tab_put(r, i, g) != ST_OK) {
        group_free(r, g);
        return ST_ENOMEM;
    }
    r->ng++;
    *out = g;
    return ST_OK;
}

static const char *kind_name(int kind)
{
    return kind == STRATA__V1__KIND__COUNTER ? "counter"
           : kind == STRATA__V1__KIND__GAUGE ? "gauge"
                                             : "distribution";
}

static size_t id_slot(const struct agg_run *r, uint32_t id)
{
    /* Fibonacci hashing: series ids are dense, so their low bits alone
     * would cluster. */
    return (size_t)(((uint64_t)id * 0x9E3779B97F4A7C15ull) >> 32) & (r->ss_tabsize - 1);
}

/* Doubles the series index (kept at most half full) and re-inserts. */
static int ss_index_grow(struct agg_run *r)
{
    size_t n = r->ss_tabsize ? 2 * r->ss_tabsize : 1024;
    size_t *t = calloc(n, sizeof(*t));
    if (t == NULL) {
        return ST_ENOMEM;
    }
    free(r->ss_idx);
    r->ss_idx = t;
    r->ss_tabsize = n;
    for (size_t i = 0; i < r->nss; i++) {
        size_t k = id_slot(r, r->ss[i].id);
        while (t[k] != 0) {
            k = (k + 1) & (n - 1);
        }
        t[k] = i + 1;
    }
    return ST_OK;
}

static int sstate_new(struct agg_run *r, uint32_t id, size_t slot, struct sstate **out)
{
    struct sstate *n;
    struct fl *b = malloc(r->nb * sizeof(*b));
    if (b == NULL) {
        return ST_ENOMEM;
    }
    if (r->nss == r->sscap) {
        size_t cap = r->sscap ? 2 * r->sscap : 64;
        if ((n = realloc(r->ss, cap * sizeof(*n))) == NULL) {
            free(b);
            return ST_ENOMEM;
        }
        r->ss = n;
        r->sscap = cap;
    }
    n = &r->ss[r->nss];
    n->id = id;
    n->g = r->cur;
    n->b = b;
    for (size_t k = 0; k < r->nb; k++) {
        fl_init(&n->b[k]);
    }
    fl_init(&n->total);
    r->ss_idx[slot] = ++r->nss;
    *out = n;
    return ST_OK;
}

/* The state of a series, found by id (a series is met again in each part
 * of a split scan: raw head, rollups, raw tail) or created. */
static int sstate_get(struct agg_run *r, uint32_t id, struct sstate **out)
{
    size_t k;
    int rv;
    if (2 * (r->nss + 1) > r->ss_tabsize && (rv = ss_index_grow(r)) != ST_OK) {
        return rv;
    }
    for (k = id_slot(r, id); r->ss_idx[k] != 0; k = (k + 1) & (r->ss_tabsize - 1)) {
        if (r->ss[r->ss_idx[k] - 1].id == id) {
            *out = &r->ss[r->ss_idx[k] - 1];
            return ST_OK;
        }
    }
    return sstate_new(r, id, k, out);
}

static int on_series(void *arg, const st_scan_series *s)
{
    struct agg_run *r = arg;
    int rv;
    if (json_object_get(r->meta, "unit") == NULL) {
        json_object_set_new(r->meta, "unit", json_string(s->rec->unit));
    }
    if (r->kind != (int)s->rec->kind) {
        return ST_OK; /* a metric name reused with another kind: skip it */
    }
    if ((rv = find_group(r, s->rec, &r->cur)) != ST_OK) {
        return rv;
    }
    r->cur_num = r->q->agg != ST_AGG_RATIO || st_store_labels_match(s->rec, r->num_m, r->n_num);
    if (r->track) {
        if (r->nidg == r->capidg) {
            size_t cap = r->capidg ? 2 * r->capidg : 256;
            struct idg *n = realloc(r->idg, cap * sizeof(*n));
            if (n == NULL) {
                return ST_ENOMEM;
            }
            r->idg = n;
            r->capidg = cap;
        }
        r->idg[r->nidg++] = (struct idg){s->id, r->cur_num, r->cur};
    }
    /* A slide's scans keep no per-series state: it only serves the
     * deltas, which slides do not answer. */
    if (r->bs == NULL && (rv = sstate_get(r, s->id, &r->cur_ss)) != ST_OK) {
        return rv;
    }
    return 1;
}

#define EXACT_SUM_MAX 9007199254740992.0 /* 2^53 */

static void note_sum(struct agg_run *r, double v)
{
    r->abs_sum += fabs(v);
    if (v != nearbyint(v) || !(r->abs_sum < EXACT_SUM_MAX)) {
        r->exact_sums = false;
    }
}

static void bstat_add(struct bstat *s, int64_t t, double v, bool dist)
{
    s->tmin = ST_MIN(s->tmin, t);
    s->tmax = ST_MAX(s->tmax, t);
    if (!dist) {
        s->abs += fabs(v);
        s->inexact = s->inexact || v != nearbyint(v);
    }
}

static int add_point(struct agg_run *r, const Strata__V1__Series *b, size_t i, int64_t t)
{
    struct acc *a = &r->cur->b[(t - r->from) / r->step];
    if (r->bs != NULL) {
        bool dist = r->kind == STRATA__V1__KIND__DISTRIBUTION;
        bstat_add(&r->bs[(t - r->from) / r->step], t, dist ? 0 : r->vals[i], dist);
    }
    if (r->cur_ss != NULL) {
        fl_add(&r->cur_ss->b[(t - r->from) / r->step], t, r->vals[i], t, r->vals[i]);
        fl_add(&r->cur_ss->total, t, r->vals[i], t, r->vals[i]);
    }
    double v = r->vals[i];
    double lo = b->n_mins > i ? b->mins[i] : v;
    double hi = b->n_maxs > i ? b->maxs[i] : v;
    int rv;
    if (r->kind == STRATA__V1__KIND__DISTRIBUTION) {
        if (i >= b->n_sketches) {
            return ST_OK;
        }
        rv = acc_sketch(a, b->sketches[i]);
        return rv == ST_OK && r->q->top > 0 ? acc_sketch(&r->cur->total, b->sketches[i]) : rv;
    }
    note_sum(r, v);
    rv = acc_value(r, a, t, v, lo, hi);
    return rv == ST_OK && r->q->top > 0 ? acc_value(r, &r->cur->total, t, v, lo, hi) : rv;
}

static int on_block(void *arg, const st_scan_series *s, const Strata__V1__Series *b)
{
    struct agg_run *r = arg;
    size_t n = st_series_npoints(b);
    int64_t end = r->from + (int64_t)r->nb * r->step;
    int rv;
    (void)s;
    if (n > r->valcap) {
        double *nv = realloc(r->vals, n * sizeof(double));
        if (nv == NULL) {
            return ST_ENOMEM;
        }
        r->vals = nv;
        r->valcap = n;
    }
    if (r->kind != STRATA__V1__KIND__DISTRIBUTION) {
        st_series_values(b, r->vals);
    }
    for (size_t i = 0; i < n; i++) {
        int64_t t = b->start_unix_ms + (int64_t)i * b->interval_ms;
        if (r->track && t >= end) {
            r->beyond = ST_MIN(r->beyond, t);
        }
        if (t < r->from || t >= end || t < r->lo || t >= r->hi) {
            continue;
        }
        if ((rv = add_point(r, b, i, t)) != ST_OK) {
            return rv;
        }
    }
    return ST_OK;
}

/* Folds a stored rollup row that starts at t and spans span ms. */
static int acc_row(struct agg_run *r, struct acc *a, const Strata__V1__RollupRow *row, int64_t t,
                   int64_t span)
{
    if (row->sketch != NULL) {
        int rv = acc_sketch(a, row->sketch);
        if (rv != ST_OK) {
            return rv;
        }
    }
    if (row->count == 0) {
        return ST_OK;
    }
    if (a != &r->cur->total) {
        note_sum(r, row->sum);
    }
    a->sum += row->sum;
    a->num += r->cur_num ? row->sum : 0;
    a->count += row->count;
    a->min = fmin(a->min, row->min);
    a->max = fmax(a->max, row->max);
    if (t < a->first_t) {
        a->first_t = t;
        a->first = row->first;
    }
    if (t + span - 1 >= a->last_t) {
        a->last_t = t + span - 1;
        a->last = row->last;
    }
    return ST_OK;
}

static int on_rollup(void *arg, const st_scan_series *s, const Strata__V1__RollupBlock *b)
{
    struct agg_run *r = arg;
    int rv = ST_OK;
    (void)s;
    for (size_t i = 0; i < b->n_rows && rv == ST_OK; i++) {
        int64_t t = b->start_unix_ms + (int64_t)i * b->bucket_ms;
        if (t < r->lo || t >= r->hi) {
            continue;
        }
        if (b->rows[i]->count > 0) {
            fl_add(&r->cur_ss->b[(t - r->from) / r->step], t, b->rows[i]->first,
                   t + b->bucket_ms - 1, b->rows[i]->last);
            fl_add(&r->cur_ss->total, t, b->rows[i]->first, t + b->bucket_ms - 1, b->rows[i]->last);
        }
        rv = acc_row(r, &r->cur->b[(t - r->from) / r->step], b->rows[i], t, b->bucket_ms);
        if (rv == ST_OK && r->q->top > 0) {
            rv = acc_row(r, &r->cur->total, b->rows[i], t, b->bucket_ms);
        }
    }
    return rv;
}

static json_t *group_json(const struct agg_run *r, struct group *g)
{
    json_t *pts = json_array();
    for (size_t k = 0; pts != NULL && k < r->nb; k++) {
        int64_t t = r->from + (int64_t)k * r->step;
        double v = acc_result(r, &g->b[k], r->step);
        if (isfinite(v)) {
            json_array_append_new(pts, json_pack("[I,f]", (json_int_t)t, v));
        }
    }
    json_incref(g->labels);
    return json_pack("{s:o,s:o}", "labels", g->labels, "points", pts);
}

struct ranked {
    struct group *g;
    double v;
};

static int rank_cmp(const void *a, const void *b)
{
    const struct ranked *x = a;
    const struct ranked *y = b;
    if (isnan(x->v) != isnan(y->v)) {
        return isnan(x->v) ? 1 : -1;
    }
    return x->v < y->v ? 1 : (x->v > y->v ? -1 : 0);
}

/* Groups in answer order: all of them, or the top N by their value over
 * the whole range. */
static int emit(struct agg_run *r, json_t *arr)
{
    struct ranked *rk = calloc(r->ng + 1, sizeof(*rk));
    size_t n = 0;
    if (rk == NULL) {
        return ST_ENOMEM;
    }
    size_t slot = 0;
    struct group *g;
    while ((g = tab_next(r, &slot)) != NULL) {
        rk[n].g = g;
        rk[n].v = r->q->top > 0 ? acc_result(r, &g->total, r->q->to_ms - r->q->from_ms) : 0;
        n++;
    }
    if (r->q->top > 0) {
        qsort(rk, n, sizeof(*rk), rank_cmp);
        n = ST_MIN(n, (size_t)r->q->top);
    }
    for (size_t i = 0; i < n; i++) {
        json_t *o = group_json(r, rk[i].g);
        if (r->q->top > 0 && o != NULL) {
            json_object_set_new(o, "value", isfinite(rk[i].v) ? json_real(rk[i].v) : json_null());
        }
        json_array_append_new(arr, o);
    }
    free(rk);
    return ST_OK;
}

static void free_groups(struct agg_run *r)
{
    size_t slot = 0;
    struct group *g;
    while ((g = tab_next(r, &slot)) != NULL) {
        group_free(r, g);
    }
    for (size_t p = 0; r->tab != NULL && p < r->tabsize / r->page; p++) {
        free(r->tab[p]);
    }
    free(r->tab);
    free(r->arena);
    free(r->occ);
    free(r->vals);
    for (size_t i = 0; i < r->nss; i++) {
        free(r->ss[i].b);
    }
    free(r->ss);
    free(r->ss_idx);
}

/* Splits the matchers: for ratio, those on the `over` label only decide
 * the numerator; every other matcher selects the series scanned. */
static void split_matchers(struct agg_run *r)
{
    for (size_t i = 0; i < r->q->nm; i++) {
        if (r->q->agg == ST_AGG_RATIO && strcmp(r->q->m[i].key, r->q->over) == 0) {
            r->num_m[r->n_num++] = r->q->m[i];
        } else {
            r->scan_m[r->n_scan++] = r->q->m[i];
        }
    }
}

static int setup(struct agg_run *r, const st_query *q)
{
    size_t want = 64;
    size_t groups;
    r->q = q;
    r->agg = q->agg;
    r->step = q->step_ms > 0 ? q->step_ms : q->to_ms - q->from_ms;
    /* Buckets are aligned to the step so they match stored rollups. */
    r->from = q->step_ms > 0 ? q->from_ms - q->from_ms % q->step_ms : q->from_ms;
    r->nb = (size_t)((q->to_ms - r->from + r->step - 1) / r->step);
    r->want_sketch = is_quantile(q->agg);
    r->exact_sums = true;
    r->max_series = q->max_series > 0 ? q->max_series : ST_QUERY_MAX_SERIES;
    r->max_points = q->max_points > 0 ? q->max_points : ST_QUERY_MAX_POINTS;
    groups = r->max_points / (r->nb ? r->nb : 1) + 1;
    groups = groups < r->max_series ? groups : r->max_series;
    /* Open addressing: the table stays at most half full at the limit. */
    while (want < 2 * groups + 1) {
        want *= 2;
    }
    r->tabsize = want;
    r->page = ST_MIN(want, (size_t)TAB_PAGE);
    r->tab = calloc(r->tabsize / r->page, sizeof(*r->tab));
    r->occ = calloc(r->tabsize / 64, sizeof(*r->occ)); /* tabsize is 64 or more */
    r->meta = json_pack("{s:s,s:s,s:I,s:I,s:I}", "metric", q->metric, "agg",
                        q->agg ? st_agg_name(q->agg) : "", "from", (json_int_t)r->from, "to",
                        (json_int_t)q->to_ms, "step", (json_int_t)r->step);
    split_matchers(r);
    return r->tab != NULL && r->occ != NULL && r->meta != NULL ? ST_OK : ST_ENOMEM;
}

static int64_t ceil_to(int64_t t, int64_t unit)
{
    return ((t + unit - 1) / unit) * unit;
}

/* Relative read costs, measured with tests/bench/query_bench: a raw block
 * (about 10 s of points) and a rollup row cost about the same to decode. */
#define RAW_BLOCK_MS 10000

/* One bucket, often over an unaligned range (a window ending "now"):
 * rollups can answer its whole built middle, raw points the head and the
 * tail. Picks the resolution that reads the fewest blocks and rows. */
static enum st_res pick_res_window(st_store *st, const struct agg_run *r)
{
    static const enum st_res order[] = {ST_RES_1H, ST_RES_1M, ST_RES_10S};
    int64_t span = r->q->to_ms - r->q->from_ms;
    enum st_res best = ST_RES_RAW;
    int64_t best_cost = span / RAW_BLOCK_MS + 1;
    for (size_t i = 0; i < ST_ARRAY_LEN(order); i++) {
        int64_t ms = st_res_ms(order[i]);
        int64_t a = ceil_to(r->q->from_ms, ms);
        int64_t b = ST_MIN(st_store_rollup_watermark(st, order[i]), r->q->to_ms - r->q->to_ms % ms);
        int64_t cost;
        if (a >= b) {
            continue;
        }
        cost = (b - a) / ms + (span - (b - a)) / RAW_BLOCK_MS + 1;
        if (cost < best_cost) {
            best = order[i];
            best_cost = cost;
        }
    }
    return best;
}

/* Whether only raw points answer agg of a metric of kind: quantiles of
 * counters and gauges need every value, and a counter's compacted rollups
 * keep its sums and counts only (store_rollup.c's sum_count_only), not
 * the min, max, first and last that min, max and delta read. */
static bool needs_raw(int kind, enum st_agg agg)
{
    if (kind == STRATA__V1__KIND__DISTRIBUTION) {
        return false;
    }
    return is_quantile(agg) || (kind == STRATA__V1__KIND__COUNTER &&
                                (agg == ST_AGG_MIN || agg == ST_AGG_MAX || agg == ST_AGG_DELTA));
}

/* The coarsest stored resolution whose buckets tile the step exactly, or
 * raw when rollups cannot answer the agg. */
static enum st_res pick_res(st_store *st, const struct agg_run *r)
{
    static const enum st_res order[] = {ST_RES_1H, ST_RES_1M, ST_RES_10S};
    if (needs_raw(r->kind, r->agg)) {
        return ST_RES_RAW;
    }
    if (r->q->step_ms == 0) {
        return pick_res_window(st, r);
    }
    for (size_t i = 0; i < ST_ARRAY_LEN(order); i++) {
        int64_t ms = st_res_ms(order[i]);
        if (r->step % ms == 0 && r->from % ms == 0) {
            return order[i];
        }
    }
    return ST_RES_RAW;
}

static int scan_raw(st_store *st, struct agg_run *r, const st_scan_cb *cb, int64_t lo, int64_t hi)
{
    if (lo >= hi) {
        return ST_OK;
    }
    r->lo = lo;
    r->hi = hi;
    return st_store_scan(st, r->q->metric, r->scan_m, r->n_scan, lo, hi, cb);
}

/* Rollups answer the built, aligned middle of the range; raw points the
 * unaligned head and the tail the builder has not reached yet. */
static int scan_all(st_store *st, struct agg_run *r, const st_scan_cb *cb)
{
    static const char *names[] = {"raw", "10s", "1m", "1h"};
    enum st_res res;
    int kind = 0;
    if (st_store_metric_kind(st, r->q->metric, &kind) != ST_OK) {
        r->res_used = "raw";
        return ST_OK; /* no such metric: an empty answer */
    }
    r->kind = kind;
    json_object_set_new(r->meta, "kind", json_string(kind_name(kind)));
    res = pick_res(st, r);
    int64_t ms = st_res_ms(res);
    int64_t a = res == ST_RES_RAW ? r->q->to_ms : ceil_to(r->q->from_ms, ms);
    int64_t b = res == ST_RES_RAW ? r->q->to_ms : st_store_rollup_watermark(st, res);
    int rv;
    b = ST_MIN(b, r->q->to_ms - r->q->to_ms % (ms ? ms : 1));
    if (res == ST_RES_RAW || a >= b) {
        r->res_used = "raw";
        return scan_raw(st, r, cb, r->q->from_ms, r->q->to_ms);
    }
    r->res_used = names[res];
    if ((rv = scan_raw(st, r, cb, r->q->from_ms, a)) != ST_OK) {
        return rv;
    }
    r->lo = a;
    r->hi = b;
    if ((rv = st_store_scan_rollups(st, r->q->metric, r->scan_m, r->n_scan, res, a, b, cb)) !=
        ST_OK) {
        return rv;
    }
    return scan_raw(st, r, cb, b, r->q->to_ms);
}

/* Scans and folds q: once it returns ST_OK, every group's buckets are
 * final and r->meta holds all of the answer but its series. */
static int fold_scan(st_store *st, struct agg_run *r, const st_query *q)
{
    st_scan_cb cb = {on_series, on_block, r, on_rollup};
    int rv;
    if ((rv = setup(r, q)) == ST_OK) {
        rv = scan_all(st, r, &cb);
        json_object_set_new(r->meta, "resolution", json_string(r->res_used));
    }
    for (size_t i = 0; rv == ST_OK && i < r->nss; i++) {
        for (size_t k = 0; k < r->nb; k++) {
            if (r->ss[i].b[k].lt != INT64_MIN) {
                r->ss[i].g->b[k].dsum += r->ss[i].b[k].l - r->ss[i].b[k].f;
            }
        }
        if (r->ss[i].total.lt != INT64_MIN) {
            r->ss[i].g->total.dsum += r->ss[i].total.l - r->ss[i].total.f;
        }
    }
    return rv;
}

int st_query_run_agg(st_store *st, const st_query *q, json_t **out, char *err, size_t errlen)
{
    struct agg_run r;
    json_t *arr = NULL;
    int rv;
    memset(&r, 0, sizeof(r));
    r.err = err;
    r.errlen = errlen;
    rv = fold_scan(st, &r, q);
    if (rv == ST_OK && (arr = json_array()) != NULL) {
        rv = emit(&r, arr);
        json_object_set_new(r.meta, "series", arr);
    }
    free_groups(&r);
    if (rv != ST_OK) {
        if (rv != ST_ETOOBIG) {
            fail(&r, rv, "query failed: %s", st_strerror(rv));
        }
        json_decref(r.meta);
        return rv;
    }
    *out = r.meta;
    return ST_OK;
}

/* ---- kept folds ---- */

struct st_query_fold {
    st_query q; /* a copy: answers read its by labels, range and top */
    struct agg_run r;
    bool slid; /* merged from a sliding window's buckets: exact aggs only */
};

static bool slide_agg_ok(int kind, enum st_agg agg, bool exact_sums);

int st_query_fold_run(st_store *st, const st_query *q, st_query_fold **out, char *err,
                      size_t errlen)
{
    st_query_fold *f = calloc(1, sizeof(*f));
    int rv;
    if (f == NULL) {
        return ST_ENOMEM;
    }
    f->q = *q;
    f->r.err = err;
    f->r.errlen = errlen;
    rv = fold_scan(st, &f->r, &f->q);
    /* The regexes are the caller's, and only the scan needed them. */
    for (size_t i = 0; i < ST_QUERY_MAX_MATCHERS; i++) {
        f->q.m[i].re = NULL;
        f->r.scan_m[i].re = NULL;
        f->r.num_m[i].re = NULL;
    }
    f->r.err = NULL;
    f->r.errlen = 0;
    /* The per-series states only fed the deltas, which are folded now. */
    for (size_t i = 0; i < f->r.nss; i++) {
        free(f->r.ss[i].b);
    }
    free(f->r.ss);
    free(f->r.ss_idx);
    f->r.ss = NULL;
    f->r.ss_idx = NULL;
    f->r.nss = f->r.sscap = f->r.ss_tabsize = 0;
    if (rv != ST_OK) {
        if (rv != ST_ETOOBIG) {
            snprintf(err, errlen, "query failed: %s", st_strerror(rv));
        }
        st_query_fold_free(f);
        return rv;
    }
    *out = f;
    return ST_OK;
}

bool st_query_fold_serves(const st_query_fold *f, enum st_agg agg)
{
    enum st_agg own = f->q.agg;
    if (agg == own) {
        return true;
    }
    /* Ratio splits the matchers, top ranks by the agg, a metric that is
     * not stored has no kind to tell what its buckets hold, and without
     * agg, by or step st_query_run answers raw points. */
    if (agg == ST_AGG_RATIO || own == ST_AGG_RATIO || f->q.top > 0 || f->r.res_used == NULL ||
        json_object_get(f->r.meta, "kind") == NULL ||
        (agg == ST_AGG_DEFAULT && f->q.nby == 0 && f->q.step_ms == 0)) {
        return false;
    }
    if (f->slid && !slide_agg_ok(f->r.kind, agg, f->r.exact_sums)) {
        return false;
    }
    if (f->r.kind == STRATA__V1__KIND__DISTRIBUTION) {
        return true; /* merged sketches, whatever the agg */
    }
    /* One read raw points, the other's own query would read rollups. */
    if (needs_raw(f->r.kind, agg) != needs_raw(f->r.kind, own)) {
        return false;
    }
    /* Quantiles of counters and gauges need sketches of every value. */
    return !is_quantile(agg) && !is_quantile(own);
}

/* A group's points with agg's values, as emit writes them (non-finite
 * values left out), into t and v (r->nb long); their count. */
static size_t group_points(const struct agg_run *r, const struct group *g, int64_t *t, double *v)
{
    size_t n = 0;
    for (size_t k = 0; k < r->nb; k++) {
        double x = acc_result(r, &g->b[k], r->step);
        if (isfinite(x)) {
            t[n] = r->from + (int64_t)k * r->step;
            v[n++] = x;
        }
    }
    return n;
}

int st_query_fold_each(st_query_fold *f, enum st_agg agg, st_query_group_fn fn, void *arg)
{
    struct agg_run *r = &f->r;
    int64_t *t;
    double *v;
    size_t slot = 0;
    struct group *g;
    int rv = ST_OK;
    if (!st_query_fold_serves(f, agg) || f->q.top > 0) {
        return ST_EINVAL;
    }
    t = malloc((r->nb + 1) * sizeof(*t));
    v = malloc((r->nb + 1) * sizeof(*v));
    if (t == NULL || v == NULL) {
        free(t);
        free(v);
        return ST_ENOMEM;
    }
    r->agg = agg;
    /* emit's order: the table's, as group_json would write them */
    while (rv == ST_OK && (g = tab_next(r, &slot)) != NULL) {
        rv = fn(arg, g->labels, t, v, group_points(r, g, t, v));
    }
    free(t);
    free(v);
    return rv;
}

static int add_row(void *arg, json_t *labels, const int64_t *t, const double *v, size_t n)
{
    return st_answer_add(arg, labels, t, v, n);
}

int st_query_fold_rows(st_query_fold *f, enum st_agg agg, st_answer **out)
{
    st_answer *a = NULL;
    int rv = st_answer_new(&a);
    if (rv == ST_OK) {
        a->from = f->r.from;
        rv = st_query_fold_each(f, agg, add_row, a);
    }
    if (rv != ST_OK) {
        st_answer_unref(a);
        return rv;
    }
    *out = a;
    return ST_OK;
}

/* Aggs whose value of merged groups equals the value of the groups
 * folded at once: quantiles, counts and extremes of merged sketches (a
 * sketch's sum depends on the order of adding), and of counters and
 * gauges every agg but quantiles, when their sums are exact. */
static bool merge_exact(const st_query_fold *f, enum st_agg agg)
{
    if (f->r.kind == STRATA__V1__KIND__DISTRIBUTION) {
        return is_quantile(agg) || agg == ST_AGG_COUNT || agg == ST_AGG_MIN || agg == ST_AGG_MAX ||
               agg == ST_AGG_RATE;
    }
    return f->r.exact_sums && (agg == ST_AGG_SUM || agg == ST_AGG_AVG || agg == ST_AGG_COUNT ||
                               agg == ST_AGG_MIN || agg == ST_AGG_MAX || agg == ST_AGG_RATE);
}

static bool by_label(const st_query *q, const char *key)
{
    for (size_t i = 0; i < q->nby; i++) {
        if (strcmp(q->by[i], key) == 0) {
            return true;
        }
    }
    return false;
}

bool st_query_fold_merges(const st_query_fold *f, enum st_agg agg, const st_matcher *m, size_t nm)
{
    /* The fold must have read every series: matchers of its own would
     * leave some out. */
    if (!st_query_fold_serves(f, agg) || f->q.nm > 0 || !merge_exact(f, agg)) {
        return false;
    }
    for (size_t i = 0; i < nm; i++) {
        if (m[i].op != ST_MATCH_EQ || m[i].value[0] == '\0' || !by_label(&f->q, m[i].key)) {
            return false;
        }
    }
    return true;
}

static bool group_selected(const struct group *g, const st_matcher *m, size_t nm)
{
    for (size_t i = 0; i < nm; i++) {
        const char *v = json_string_value(json_object_get(g->labels, m[i].key));
        if (v == NULL || strcmp(v, m[i].value) != 0) {
            return false;
        }
    }
    return true;
}

static int acc_merge(struct acc *dst, const struct acc *src)
{
    int rv;
    dst->sum += src->sum;
    dst->num += src->num;
    dst->count += src->count;
    dst->dsum += src->dsum;
    dst->min = fmin(dst->min, src->min);
    dst->max = fmax(dst->max, src->max);
    if (src->first_t < dst->first_t) {
        dst->first_t = src->first_t;
        dst->first = src->first;
    }
    if (src->last_t >= dst->last_t) {
        dst->last_t = src->last_t;
        dst->last = src->last;
    }
    if (src->sk == NULL) {
        return ST_OK;
    }
    if (dst->sk == NULL && (rv = st_sketch_new(st_sketch_alpha(src->sk), &dst->sk)) != ST_OK) {
        return rv;
    }
    return st_sketch_merge(dst->sk, src->sk);
}

/* The selected groups merged into one (labels {}); *found false when none
 * was selected. */
static int merge_groups(struct agg_run *r, const st_matcher *m, size_t nm, struct group *out,
                        bool *found)
{
    int rv = ST_OK;
    *found = false;
    for (size_t k = 0; k < r->nb; k++) {
        acc_init(&out->b[k]);
    }
    size_t i = 0;
    const struct group *g;
    while (rv == ST_OK && (g = tab_next(r, &i)) != NULL) {
        if (!group_selected(g, m, nm)) {
            continue;
        }
        *found = true;
        for (size_t k = 0; rv == ST_OK && k < r->nb; k++) {
            rv = acc_merge(&out->b[k], &g->b[k]);
        }
    }
    return rv;
}

int st_query_fold_merged_rows(st_query_fold *f, enum st_agg agg, const st_matcher *m, size_t nm,
                              st_answer **out)
{
    struct group g;
    st_answer *a = NULL;
    int64_t *t = NULL;
    double *v = NULL;
    bool found = false;
    int rv;
    if (!st_query_fold_merges(f, agg, m, nm)) {
        return ST_EINVAL;
    }
    memset(&g, 0, sizeof(g));
    if ((g.b = calloc(f->r.nb ? f->r.nb : 1, sizeof(*g.b))) == NULL ||
        (g.labels = json_object()) == NULL || (t = malloc((f->r.nb + 1) * sizeof(*t))) == NULL ||
        (v = malloc((f->r.nb + 1) * sizeof(*v))) == NULL) {
        rv = ST_ENOMEM;
        goto out;
    }
    f->r.agg = agg;
    rv = merge_groups(&f->r, m, nm, &g, &found);
    rv = rv == ST_OK ? st_answer_new(&a) : rv;
    if (rv == ST_OK) {
        a->from = f->r.from;
    }
    if (rv == ST_OK && found) {
        rv = st_answer_add(a, g.labels, t, v, group_points(&f->r, &g, t, v));
    }
    if (rv == ST_OK) {
        *out = a;
        a = NULL;
    }
out:
    for (size_t k = 0; g.b != NULL && k < f->r.nb; k++) {
        st_sketch_free(g.b[k].sk);
    }
    st_answer_unref(a);
    free(g.b);
    free(t);
    free(v);
    json_decref(g.labels);
    return rv;
}

void st_query_fold_free(st_query_fold *f)
{
    if (f == NULL) {
        return;
    }
    free_groups(&f->r);
    json_decref(f->r.meta);
    free(f);
}

/* ---- sliding windows ----
 * A question asked every run over a window that moves with the clock
 * (the engine's baselines and current windows) keeps its points folded in
 * SLIDE_MS buckets between runs: a run reads only what the store says
 * changed since the last one (new points at the edge, late points in
 * buckets already folded) and merges the buckets its window covers.
 * Only aggs whose merged value equals the value folded at once qualify
 * (slide_agg_ok), so an answer is the one a full scan gives. */

#define SLIDE_MS 10000LL
#define SLIDE_MAX_SPAN_MS (3 * 3600000LL) /* longer windows are asked whole */
#define SLIDE_SLACK 8                     /* buckets allocated past the need */
/* Buckets times groups a slide may keep (each bucket of a distribution
 * holds a sketch): questions grouped finer are asked whole. A short
 * window of many groups (5 minutes by host) costs about as much to merge
 * from buckets as to scan; at 1,000 hosts, 100,000 cells kept 87 MiB and
 * ran slower than this bound, which keeps 18 MiB, mostly the one-hour
 * baselines by role and route. */
#define SLIDE_MAX_CELLS 20000
/* A fed slide reads nothing when its window moves, so one of many groups
 * (5 minutes by host) pays: kept in minutes, 5,200 function-host sketches
 * over its window and what arrives ahead of it are about 120,000 cells. */
#define SLIDE_FED_MAX_CELLS 400000
#define FED_BUCKET_MS 60000LL
/* How far past the window a fill reads, and past its buckets a commit's
 * point may extend them: points further ahead (agents' clocks off) are
 * only noted (far_t), and the slide reads the store again once a window
 * reaches them. */
#define FED_AHEAD_MS (5 * 60000LL)
/* A window ending this far before the newest asked means the clock went
 * back. */
#define FED_CLOCK_BACK_MS (6 * 3600000LL)
/* Kept behind the reach of the windows asked: a window asked before a
 * newer one in the same step reaches back a step further than it counted
 * (the reach counts from the newest end asked, kept across resets). */
#define FED_MARGIN_MS (2 * 60000LL)

struct slide_group {
    char *key;
    size_t keylen;
    json_t *labels;
    size_t seq; /* where the latest scan first met it: the full scan's order */
    struct acc *b;
};

struct st_query_slide {
    int kind;
    json_t *unit;
    int64_t base; /* slot 0's start; buckets [lo, hi) are folded */
    size_t cap;
    int64_t lo;
    int64_t hi;
    int64_t span; /* the widest reach back asked, from hi (fed: from end): older buckets go */
    struct bstat *bs;
    struct slide_group **g;
    size_t ng;
    size_t gcap;
    size_t *gidx; /* open addressing by key: 1 + index into g */
    size_t gtab;
    uint64_t gen; /* the store generation the buckets are valid as of; 0: none */
    bool sized;   /* st_query_slide_learn told how many groups there are */
    bool too_big; /* grouped too finely to keep: asked whole */
    int64_t bw;   /* bucket width */
    /* Fed (st_query_slide_feed): the buckets hold every point of its
     * series that commits up to txn wrote in [lo, hi) (0: not filled),
     * and those commits wrote none at or past hi but far_t's. */
    bool fed;
    st_query_slide_subscribe_fn subscribe;
    void *subscribe_arg;
    uint64_t txn;
    int64_t far_t;              /* the oldest point not kept past hi; INT64_MAX: none */
    int64_t end;                /* the newest window's end bucket's end (not reset) */
    unsigned fills;             /* reads of the store (st_query_slide_fills) */
    struct slide_group **order; /* the groups by seq, while ordered */
    bool ordered;
    struct sid {
        uint32_t id;
        uint32_t g; /* 1 + index into g; 0: empty slot */
        bool num;   /* a ratio's numerator series */
    } * ids;        /* the series met, by id (open addressing) */
    size_t nids;
    size_t idtab;
};

/* The cells (groups times buckets) a slide of span keeps per group. */
static size_t slide_cells(const st_query_slide *c, int64_t span)
{
    return (size_t)((span + (c->fed ? FED_AHEAD_MS + FED_MARGIN_MS : 0)) / c->bw + SLIDE_SLACK);
}

static size_t slide_max_cells(const st_query_slide *c)
{
    return c->fed ? SLIDE_FED_MAX_CELLS : SLIDE_MAX_CELLS;
}

static bool slide_agg_ok(int kind, enum st_agg agg, bool exact_sums)
{
    if (kind == STRATA__V1__KIND__DISTRIBUTION) {
        return is_quantile(agg) || agg == ST_AGG_COUNT || agg == ST_AGG_MIN || agg == ST_AGG_MAX ||
               agg == ST_AGG_RATE;
    }
    if (agg == ST_AGG_COUNT || agg == ST_AGG_MIN || agg == ST_AGG_MAX) {
        return true;
    }
    /* a ratio's numerator and denominator are sums: exact in any order */
    return exact_sums &&
           (agg == ST_AGG_SUM || agg == ST_AGG_AVG || agg == ST_AGG_RATE || agg == ST_AGG_RATIO);
}

int st_query_slide_new(st_query_slide **out)
{
    st_query_slide *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return ST_ENOMEM;
    }
    c->bw = SLIDE_MS;
    c->far_t = INT64_MAX;
    *out = c;
    return ST_OK;
}

static int64_t slide_floor(const st_query_slide *c, int64_t t)
{
    return t - (((t % c->bw) + c->bw) % c->bw);
}

static size_t slot_of(const st_query_slide *c, int64_t t)
{
    return (size_t)((t - c->base) / c->bw);
}

static void bstat_init(struct bstat *s)
{
    memset(s, 0, sizeof(*s));
    s->tmin = INT64_MAX;
    s->tmax = INT64_MIN;
}

/* Empties the folded buckets of [from, to). */
static void slide_drop(st_query_slide *c, int64_t from, int64_t to)
{
    from = ST_MAX(from, c->lo);
    to = ST_MIN(to, c->hi);
    for (int64_t t = from; t < to; t += c->bw) {
        size_t k = slot_of(c, t);
        for (size_t i = 0; i < c->ng; i++) {
            st_sketch_free(c->g[i]->b[k].sk);
            acc_init(&c->g[i]->b[k]);
        }
        bstat_init(&c->bs[k]);
    }
}

static void slide_reset(st_query_slide *c)
{
    slide_drop(c, c->lo, c->hi);
    c->lo = c->hi = 0;
    c->gen = 0;
    c->txn = 0;
    c->far_t = INT64_MAX;
    c->nids = 0;
    if (c->ids != NULL) {
        memset(c->ids, 0, c->idtab * sizeof(*c->ids));
    }
}

static struct acc *accs_new(size_t n)
{
    struct acc *a = malloc(n * sizeof(*a));
    for (size_t i = 0; a != NULL && i < n; i++) {
        acc_init(&a[i]);
    }
    return a;
}

/* Makes room for the buckets of [lo, hi), keeping the folded ones. */
static int slide_reserve(st_query_slide *c, int64_t lo, int64_t hi)
{
    int64_t nlo = c->lo < c->hi ? ST_MIN(lo, c->lo) : lo;
    int64_t nhi = c->lo < c->hi ? ST_MAX(hi, c->hi) : hi;
    size_t cap = (size_t)((nhi - nlo) / c->bw) + SLIDE_SLACK;
    struct bstat *bs;
    if (c->bs != NULL && nlo >= c->base && nhi <= c->base + (int64_t)c->cap * c->bw) {
        return ST_OK;
    }
    if ((bs = malloc(cap * sizeof(*bs))) == NULL) {
        return ST_ENOMEM;
    }
    for (size_t k = 0; k < cap; k++) {
        bstat_init(&bs[k]);
    }
    for (size_t i = 0; i < c->ng; i++) {
        struct acc *b = accs_new(cap);
        if (b == NULL) {
            free(bs);
            return ST_ENOMEM; /* the groups moved so far are whole: reset by the caller */
        }
        for (int64_t t = c->lo; t < c->hi; t += c->bw) {
            b[(t - nlo) / c->bw] = c->g[i]->b[slot_of(c, t)];
        }
        free(c->g[i]->b);
        c->g[i]->b = b;
    }
    for (int64_t t = c->lo; t < c->hi; t += c->bw) {
        bs[(t - nlo) / c->bw] = c->bs[slot_of(c, t)];
    }
    free(c->bs);
    c->bs = bs;
    c->base = nlo;
    c->cap = cap;
    return ST_OK;
}

static size_t gslot(const st_query_slide *c, const char *key, size_t len)
{
    size_t k = hash_bytes(key, len) & (c->gtab - 1);
    for (; c->gidx[k] != 0; k = (k + 1) & (c->gtab - 1)) {
        const struct slide_group *g = c->g[c->gidx[k] - 1];
        if (g->keylen == len && memcmp(g->key, key, len) == 0) {
            break;
        }
    }
    return k;
}

static int gindex_grow(st_query_slide *c)
{
    size_t n = c->gtab ? 2 * c->gtab : 64;
    size_t *t = calloc(n, sizeof(*t));
    if (t == NULL) {
        return ST_ENOMEM;
    }
    free(c->gidx);
    c->gidx = t;
    c->gtab = n;
    for (size_t i = 0; i < c->ng; i++) {
        c->gidx[gslot(c, c->g[i]->key, c->g[i]->keylen)] = i + 1;
    }
    return ST_OK;
}

/* The kept group of a scanned one, created when new. */
static int slide_group_of(st_query_slide *c, const struct group *g, struct slide_group **out)
{
    struct slide_group *n;
    size_t k;
    if ((2 * (c->ng + 1) > c->gtab && gindex_grow(c) != ST_OK) ||
        (c->ng == c->gcap && c->gcap > SIZE_MAX / 4)) {
        return ST_ENOMEM;
    }
    k = gslot(c, g->key, g->keylen);
    if (c->gidx[k] != 0) {
        *out = c->g[c->gidx[k] - 1];
        return ST_OK;
    }
    if (c->ng == c->gcap) {
        size_t cap = c->gcap ? 2 * c->gcap : 64;
        struct slide_group **ng = realloc(c->g, cap * sizeof(*ng));
        if (ng == NULL) {
            return ST_ENOMEM;
        }
        c->g = ng;
        c->gcap = cap;
    }
    if ((n = calloc(1, sizeof(*n))) == NULL || (n->key = malloc(g->keylen)) == NULL ||
        (n->b = accs_new(c->cap ? c->cap : 1)) == NULL) {
        if (n != NULL) {
            free(n->key);
        }
        free(n);
        return ST_ENOMEM;
    }
    memcpy(n->key, g->key, g->keylen);
    n->keylen = g->keylen;
    n->labels = json_incref(g->labels);
    c->g[c->ng++] = n;
    c->ordered = false;
    c->gidx[k] = c->ng;
    *out = n;
    return ST_OK;
}

/* ---- fed slides: the series met, by id ---- */

static size_t sid_slot(const st_query_slide *c, uint32_t id)
{
    return (size_t)(((uint64_t)id * 0x9E3779B97F4A7C15ull) >> 32) & (c->idtab - 1);
}

static int sid_grow(st_query_slide *c)
{
    size_t n = c->idtab ? 2 * c->idtab : 1024;
    struct sid *old = c->ids;
    size_t oldn = c->idtab;
    if ((c->ids = calloc(n, sizeof(*c->ids))) == NULL) {
        c->ids = old;
        return ST_ENOMEM;
    }
    c->idtab = n;
    for (size_t i = 0; i < oldn; i++) {
        if (old[i].g != 0) {
            size_t k = sid_slot(c, old[i].id);
            while (c->ids[k].g != 0) {
                k = (k + 1) & (n - 1);
            }
            c->ids[k] = old[i];
        }
    }
    free(old);
    return ST_OK;
}

/* The group of series id, or NULL when the slide's scans never met it
 * (not one of its series: another kind, or matchers it fails). */
static struct slide_group *sid_group(const st_query_slide *c, uint32_t id, bool *num)
{
    if (c->idtab == 0) {
        return NULL;
    }
    for (size_t k = sid_slot(c, id); c->ids[k].g != 0; k = (k + 1) & (c->idtab - 1)) {
        if (c->ids[k].id == id) {
            *num = c->ids[k].num;
            return c->g[c->ids[k].g - 1];
        }
    }
    return NULL;
}

static int sid_put(st_query_slide *c, uint32_t id, size_t gi, bool num)
{
    size_t k;
    int rv;
    if (2 * (c->nids + 1) > c->idtab && (rv = sid_grow(c)) != ST_OK) {
        return rv;
    }
    for (k = sid_slot(c, id); c->ids[k].g != 0; k = (k + 1) & (c->idtab - 1)) {
        if (c->ids[k].id == id) {
            c->ids[k].g = (uint32_t)gi + 1;
            c->ids[k].num = num;
            return ST_OK;
        }
    }
    c->ids[k] = (struct sid){id, (uint32_t)gi + 1, num};
    c->nids++;
    return ST_OK;
}

/* One scan of the points of [lo_t, hi_t) into a run bucketed like the
 * kept buckets; qq holds the run's question. With snap (a fed slide's
 * fill), the scan tells its snapshot, the series it met and the oldest
 * point past hi_t: blocks past it are read too, and they are few (the
 * newest minutes). */
static int slide_scan(st_store *st, const st_query_slide *c, const st_query *q, int64_t lo_t,
                      int64_t hi_t, struct agg_run *r, st_query *qq, uint64_t *snap)
{
    st_scan_cb cb = {on_series, on_block, r, on_rollup};
    int rv;
    *qq = *q;
    qq->from_ms = slide_floor(c, lo_t);
    qq->to_ms = hi_t;
    qq->step_ms = c->bw;
    memset(r, 0, sizeof(*r));
    if ((rv = setup(r, qq)) != ST_OK) {
        return rv;
    }
    r->kind = c->kind;
    if ((r->bs = malloc(r->nb * sizeof(*r->bs))) == NULL) {
        return ST_ENOMEM;
    }
    for (size_t k = 0; k < r->nb; k++) {
        bstat_init(&r->bs[k]);
    }
    if (snap == NULL) {
        return scan_raw(st, r, &cb, lo_t, hi_t);
    }
    r->track = true;
    r->beyond = INT64_MAX;
    r->lo = lo_t;
    r->hi = hi_t;
    return st_store_scan_snap(st, q->metric, r->scan_m, r->n_scan, lo_t, INT64_MAX, &cb, snap);
}

static void run_free(struct agg_run *r)
{
    free_groups(r);
    free(r->bs);
    free(r->idg);
    json_decref(r->meta);
    memset(r, 0, sizeof(*r));
}

/* Takes a scan's groups (their order too) and moves its buckets of
 * [lo, hi), which must be empty in the cache, into the cache; the run
 * keeps the rest. */
static int slide_absorb(st_query_slide *c, struct agg_run *r, int64_t lo, int64_t hi)
{
    int rv;
    if (c->unit == NULL && json_object_get(r->meta, "unit") != NULL) {
        c->unit = json_incref(json_object_get(r->meta, "unit"));
    }
    size_t i = 0;
    struct group *g;
    while ((g = tab_next(r, &i)) != NULL) {
        struct slide_group *cg;
        if ((rv = slide_group_of(c, g, &cg)) != ST_OK) {
            return rv;
        }
        cg->seq = g->seq;
        c->ordered = false;
        for (size_t k = 0; k < r->nb; k++) {
            int64_t t = r->from + (int64_t)k * c->bw;
            if (t >= lo && t < hi) {
                cg->b[slot_of(c, t)] = g->b[k];
                acc_init(&g->b[k]);
            }
        }
    }
    for (size_t k = 0; k < r->nb; k++) {
        int64_t t = r->from + (int64_t)k * c->bw;
        if (t >= lo && t < hi) {
            c->bs[slot_of(c, t)] = r->bs[k];
        }
    }
    for (size_t j = 0; j < r->nidg; j++) {
        size_t k = gslot(c, r->idg[j].g->key, r->idg[j].g->keylen);
        if (c->gidx[k] != 0 &&
            (rv = sid_put(c, r->idg[j].id, c->gidx[k] - 1, r->idg[j].num)) != ST_OK) {
            return rv;
        }
    }
    return ST_OK;
}

/* Reads [lo_t, hi_t) and keeps its whole buckets below keep_hi (none when
 * keep_hi <= lo_t); the run, with what is left (a partial bucket), goes
 * to *x. */
static int slide_read(st_store *st, st_query_slide *c, const st_query *q, int64_t lo_t,
                      int64_t hi_t, int64_t keep_hi, struct agg_run *x, st_query *xq,
                      uint64_t *snap)
{
    int64_t keep_lo = slide_floor(c, lo_t);
    int rv = slide_scan(st, c, q, lo_t, hi_t, x, xq, snap);
    if (rv == ST_OK && keep_lo < keep_hi) {
        rv = slide_reserve(c, keep_lo, keep_hi);
    }
    /* Even with nothing to keep: a scan meets every series, so it finds
     * new groups and tells their order. */
    return rv == ST_OK ? slide_absorb(c, x, keep_lo, keep_hi) : rv;
}

/* Step questions qualify when their steps are whole buckets (the
 * engine's leak and per-minute windows; st_query_slide_fold checks the
 * slide's own width). */
static bool slide_fits(const st_query *q)
{
    int64_t span = q->to_ms - q->from_ms;
    return q->step_ms % SLIDE_MS == 0 && q->top == 0 && q->agg != ST_AGG_DEFAULT &&
           q->agg != ST_AGG_DELTA && span >= 2 * SLIDE_MS && span <= SLIDE_MAX_SPAN_MS &&
           q->from_ms > 0;
}

/* Forgets what changed since the buckets were read. A series added
 * since is a group of the full answer even when none of its points falls
 * in the window; a scan of the new range meets every series and finds it,
 * but with no new range to read (asked again up to the same time) the
 * slide starts over. */
static void slide_invalidate(st_store *st, st_query_slide *c, const st_query *q)
{
    const char *metric = q->metric;
    int64_t ch;
    if (c->gen == 0 || (q->to_ms <= c->hi && st_store_series_added_since(st, metric, c->gen))) {
        slide_reset(c);
        return;
    }
    ch = st_store_changed_since(st, metric, c->gen);
    if (ch == INT64_MIN || ch <= c->lo) {
        slide_reset(c);
    } else if (ch < c->hi) {
        slide_drop(c, slide_floor(c, ch), c->hi);
        c->hi = slide_floor(c, ch);
    }
}

/* n bytes of the answer's arena, aligned for a double. */
static void *arena_take(struct agg_run *r, size_t n)
{
    void *p = r->arena + r->arena_used;
    r->arena_used += (n + 7) & ~(size_t)7;
    return p;
}

/* Room for the groups of a slide's answer, sized before any is put. */
static int arena_reserve(struct agg_run *r, const st_query_slide *c)
{
    size_t n = c->ng * (((sizeof(struct group) + 7) & ~(size_t)7) + r->nb * sizeof(struct acc));
    for (size_t i = 0; i < c->ng; i++) {
        n += (c->g[i]->keylen + 7) & ~(size_t)7;
    }
    r->arena_used = 0;
    return (r->arena = malloc(n + 8)) != NULL ? ST_OK : ST_ENOMEM;
}

/* Puts a kept group into an answer's table the way find_group would. */
static int insert_group(struct agg_run *r, const struct slide_group *cg, struct group **out)
{
    struct group *g;
    size_t i = hash_bytes(cg->key, cg->keylen) & (r->tabsize - 1);
    while (tab_get(r, i) != NULL) {
        i = (i + 1) & (r->tabsize - 1);
    }
    g = arena_take(r, sizeof(*g));
    memset(g, 0, sizeof(*g));
    g->key = arena_take(r, cg->keylen);
    g->b = arena_take(r, r->nb * sizeof(*g->b));
    for (size_t k = 0; k < r->nb; k++) {
        acc_init(&g->b[k]);
    }
    g->labels = json_incref(cg->labels);
    if (tab_put(r, i, g) != ST_OK) {
        json_decref(g->labels);
        return ST_ENOMEM;
    }
    memcpy(g->key, cg->key, cg->keylen);
    g->keylen = cg->keylen;
    g->seq = r->ng++;
    acc_init(&g->total);
    *out = g;
    return ST_OK;
}

/* The answer's bucket of the points at t (a step question's, or its one). */
static size_t step_of_t(const struct agg_run *r, int64_t t)
{
    return r->q->step_ms > 0 && t >= r->from ? (size_t)((t - r->from) / r->step) : 0;
}

static struct group *group_by_key(const struct agg_run *r, const char *key, size_t len)
{
    const struct group *g;
    for (size_t i = hash_bytes(key, len) & (r->tabsize - 1); (g = tab_get(r, i)) != NULL;
         i = (i + 1) & (r->tabsize - 1)) {
        if (g->keylen == len && memcmp(g->key, key, len) == 0) {
            return (struct group *)g;
        }
    }
    return NULL;
}

static int seq_cmp(const void *a, const void *b)
{
    const struct slide_group *x = *(const struct slide_group *const *)a;
    const struct slide_group *y = *(const struct slide_group *const *)b;
    return x->seq < y->seq ? -1 : (x->seq > y->seq ? 1 : 0);
}

/* Merges the kept buckets of [a, b) and the partial buckets the runs in
 * x read into one answer per group, in the full scan's group order. */
static int slide_merge(st_query_slide *c, struct agg_run *r, int64_t a, int64_t b,
                       struct agg_run *x, size_t nx)
{
    struct slide_group **order;
    double abs = 0;
    int rv = ST_OK;
    if (!c->ordered) {
        /* the full scan's group order, sorted again only when a scan told
         * it anew */
        free(c->order);
        if ((c->order = malloc((c->ng + 1) * sizeof(*c->order))) == NULL) {
            return ST_ENOMEM;
        }
        if (c->ng > 0) {
            memcpy(c->order, c->g, c->ng * sizeof(*c->order));
            qsort(c->order, c->ng, sizeof(*c->order), seq_cmp);
        }
        c->ordered = true;
    }
    order = c->order;
    if ((rv = arena_reserve(r, c)) != ST_OK) {
        return rv;
    }
    for (int64_t t = a; t < b; t += c->bw) {
        abs += c->bs[slot_of(c, t)].abs;
        r->exact_sums = r->exact_sums && !c->bs[slot_of(c, t)].inexact;
    }
    for (size_t i = 0; rv == ST_OK && i < c->ng; i++) {
        struct group *g;
        if ((rv = insert_group(r, order[i], &g)) != ST_OK) {
            break;
        }
        for (int64_t t = a; rv == ST_OK && t < b; t += c->bw) {
            rv = acc_merge(&g->b[step_of_t(r, t)], &order[i]->b[slot_of(c, t)]);
        }
    }
    for (size_t j = 0; rv == ST_OK && j < nx; j++) {
        abs += x[j].abs_sum;
        r->exact_sums = r->exact_sums && x[j].exact_sums;
        size_t i = 0;
        const struct group *xg;
        while (rv == ST_OK && (xg = tab_next(&x[j], &i)) != NULL) {
            struct group *g = group_by_key(r, xg->key, xg->keylen);
            for (size_t k = 0; g != NULL && rv == ST_OK && k < x[j].nb; k++) {
                rv = acc_merge(&g->b[step_of_t(r, x[j].from + (int64_t)k * x[j].step)], &xg->b[k]);
            }
        }
    }
    r->exact_sums = r->exact_sums && abs < EXACT_SUM_MAX;
    return rv;
}

/* The answer of q from the kept buckets of [a, b) and the runs in x. */
static int slide_answer(st_query_slide *c, const st_query *q, int64_t a, int64_t b,
                        struct agg_run *x, size_t nx, st_query_fold **out)
{
    st_query_fold *f = calloc(1, sizeof(*f));
    int rv;
    if (f == NULL) {
        return ST_ENOMEM;
    }
    f->q = *q;
    f->slid = true;
    if ((rv = setup(&f->r, &f->q)) != ST_OK) {
        st_query_fold_free(f);
        return rv;
    }
    f->r.kind = c->kind;
    f->r.res_used = "raw";
    json_object_set_new(f->r.meta, "kind", json_string(kind_name(c->kind)));
    if (c->unit != NULL) {
        json_object_set(f->r.meta, "unit", c->unit);
    }
    json_object_set_new(f->r.meta, "resolution", json_string("raw"));
    /* The full scan's limits: past them it fails, and so must the answer. */
    if (c->ng > f->r.max_series || c->ng * f->r.nb > f->r.max_points) {
        rv = ST_EUNSUPPORTED;
    }
    rv = rv == ST_OK ? slide_merge(c, &f->r, a, b, x, nx) : rv;
    if (rv == ST_OK && !slide_agg_ok(c->kind, q->agg, f->r.exact_sums)) {
        rv = ST_EUNSUPPORTED;
    }
    for (size_t i = 0; i < ST_QUERY_MAX_MATCHERS; i++) {
        f->q.m[i].re = NULL;
        f->r.scan_m[i].re = NULL;
        f->r.num_m[i].re = NULL;
    }
    if (rv != ST_OK) {
        st_query_fold_free(f);
        return rv;
    }
    *out = f;
    return ST_OK;
}

/* The window's partial last bucket [B, to): whole when all its points
 * are before the edge (*b moves past it), else read unless none is. */
static int edge_end(st_store *st, st_query_slide *c, const st_query *q, struct agg_run *x,
                    st_query *xq, size_t *nx, int64_t B, int64_t *b)
{
    const struct bstat *s = &c->bs[slot_of(c, B)];
    int rv = ST_OK;
    if (s->tmax < q->to_ms) {
        *b = B + c->bw; /* every point of it is before the edge */
    } else if (s->tmin < q->to_ms) {
        rv = slide_read(st, c, q, B, q->to_ms, B, &x[*nx], &xq[*nx], NULL);
        (*nx)++;
    }
    return rv;
}

/* The window's partial first bucket [from, A + bw): whole when all its
 * points are in the window, else read unless none is (*a after it). */
static int edge_start(st_store *st, st_query_slide *c, const st_query *q, struct agg_run *x,
                      st_query *xq, size_t *nx, int64_t A, int64_t *a)
{
    const struct bstat *s = &c->bs[slot_of(c, A)];
    int rv = ST_OK;
    *a = s->tmin >= q->from_ms ? A : A + c->bw;
    if (s->tmin < q->from_ms && s->tmax >= q->from_ms) {
        rv = slide_read(st, c, q, q->from_ms, A + c->bw, A, &x[*nx], &xq[*nx], NULL);
        (*nx)++;
    }
    return rv;
}

/* Reads what the kept buckets lack for [from, to): older buckets, newer
 * ones with the partial last bucket, and the partial edge buckets whose
 * points straddle the window's edge. Sets [*a, *b), the whole buckets the
 * answer takes from the cache. */
static int slide_fill(st_store *st, st_query_slide *c, const st_query *q, struct agg_run *x,
                      st_query *xq, size_t *nx, int64_t *a, int64_t *b)
{
    int64_t from = q->from_ms;
    int64_t to = q->to_ms;
    int64_t A = slide_floor(c, from);
    int64_t B = slide_floor(c, to);
    int rv = ST_OK;
    if (c->lo == c->hi || A > c->hi || B < c->lo) {
        slide_reset(c);
        c->lo = c->hi = A;
    }
    if (A < c->lo) {
        rv = slide_read(st, c, q, A, c->lo, c->lo, &x[*nx], &xq[*nx], NULL);
        run_free(&x[*nx]); /* it read whole buckets only */
        c->lo = rv == ST_OK ? A : c->lo;
    }
    *b = B;
    if (rv == ST_OK && B >= c->hi) {
        rv = slide_read(st, c, q, c->hi, to, B, &x[*nx], &xq[*nx], NULL);
        (*nx)++;
        c->hi = rv == ST_OK ? B : c->hi;
    } else if (rv == ST_OK && to > B) {
        rv = edge_end(st, c, q, x, xq, nx, B, b);
    }
    *a = A;
    if (rv == ST_OK && from > A) {
        rv = edge_start(st, c, q, x, xq, nx, A, a);
    }
    return rv;
}

/* Fills a fed slide with every point of [lo_t, hi_t): its buckets then
 * hold what the scan's snapshot holds, and the series it met are known by
 * id. Points at or past hi_t are only noted (far_t). */
static int fed_read(st_store *st, st_query_slide *c, const st_query *q, int64_t lo_t, int64_t hi_t)
{
    struct agg_run r;
    st_query qq;
    uint64_t snap = 0;
    int rv = slide_read(st, c, q, lo_t, hi_t, hi_t, &r, &qq, &snap);
    if (rv == ST_OK) {
        c->lo = lo_t;
        c->hi = hi_t;
        c->txn = snap;
        c->far_t = r.beyond;
    }
    run_free(&r);
    return rv;
}

void st_query_slide_set_fed(st_query_slide *c, st_query_slide_subscribe_fn subscribe, void *arg)
{
    c->fed = true;
    c->subscribe = subscribe;
    c->subscribe_arg = arg;
}

int st_query_slide_feed(st_query_slide *c, uint64_t txn, const st_fed_block *b)
{
    bool dist = c->kind == STRATA__V1__KIND__DISTRIBUTION;
    bool num = true;
    struct slide_group *g;
    int rv;
    if (!c->fed || c->txn == 0 || txn <= c->txn || b->kind != c->kind ||
        (g = sid_group(c, b->id, &num)) == NULL) {
        return ST_OK;
    }
    for (size_t i = 0; i < b->n; i++) {
        int64_t t = b->start_ms + (int64_t)i * b->interval_ms;
        size_t k;
        if (t < c->lo) {
            continue; /* older than any window kept */
        }
        if (t >= c->hi + FED_AHEAD_MS) {
            /* far ahead (a clock off): not kept; the slide reads the
             * store again once a window reaches it */
            c->far_t = ST_MIN(c->far_t, t);
            continue;
        }
        if (t >= c->hi) {
            int64_t nhi = slide_floor(c, t) + c->bw;
            if ((rv = slide_reserve(c, c->lo, nhi)) != ST_OK) {
                slide_reset(c);
                return rv;
            }
            c->hi = nhi;
        }
        k = slot_of(c, t);
        bstat_add(&c->bs[k], t, dist ? 0 : b->v[i], dist);
        if (!dist) {
            acc_point(&g->b[k], t, b->v[i], b->lo != NULL ? b->lo[i] : b->v[i],
                      b->hi != NULL ? b->hi[i] : b->v[i], num);
            continue;
        }
        if (b->sk == NULL || b->sk[i] == NULL) {
            continue;
        }
        if ((g->b[k].sk == NULL &&
             (rv = st_sketch_new(st_sketch_alpha(b->sk[i]), &g->b[k].sk)) != ST_OK) ||
            (rv = st_sketch_merge(g->b[k].sk, b->sk[i])) != ST_OK) {
            slide_reset(c);
            return rv;
        }
    }
    return ST_OK;
}

void st_query_slide_fed_upto(st_query_slide *c, uint64_t txn)
{
    if (c->fed && c->txn != 0 && txn > c->txn) {
        c->txn = txn;
    }
}

unsigned st_query_slide_fills(const st_query_slide *c)
{
    return c->fills;
}

void st_query_slide_forget(st_query_slide *c)
{
    slide_reset(c);
}

/* A fed slide's buckets for [from, to): filled from the store when it has
 * none, or the window went back past them, or reaches a point noted past
 * them; else kept as the commits fed them, with new empty buckets as the
 * window moves on. */
static int fed_fill(st_store *st, st_query_slide *c, const st_query *q, struct agg_run *x,
                    st_query *xq, size_t *nx, int64_t *a, int64_t *b)
{
    int64_t from = q->from_ms;
    int64_t to = q->to_ms;
    int64_t A = slide_floor(c, from);
    int64_t B = slide_floor(c, to);
    int rv = ST_OK;
    if (c->txn != 0 && (A < c->lo || A >= c->hi || B + c->bw > c->far_t ||
                        st_store_series_added_since(st, q->metric, c->gen))) {
        slide_reset(c); /* back past its buckets, or wholly past them (a pause) */
    }
    if (c->end - (B + c->bw) > FED_CLOCK_BACK_MS) {
        c->end = c->span = 0; /* the clock went back: the reach counts anew */
    }
    c->end = ST_MAX(c->end, B + c->bw);
    if (c->txn == 0) {
        slide_reset(c);
        /* before the read: every commit it does not see is fed */
        if (c->subscribe != NULL && c->subscribe(c->subscribe_arg, true) != 0) {
            return ST_EUNSUPPORTED;
        }
        c->gen = st_store_generation(st);
        /* ahead of the newest window asked, not this one's: a baseline
         * asked first ends minutes before the current window, whose
         * newest points would otherwise lie past what was read */
        c->fills++;
        if ((rv = fed_read(st, c, q, A, c->end + FED_AHEAD_MS)) != ST_OK) {
            return rv;
        }
    }
    if (B + c->bw > c->hi) {
        /* nothing fed reaches past hi: the buckets up to the edge are empty */
        if ((rv = slide_reserve(c, c->lo, B + c->bw)) != ST_OK) {
            return rv;
        }
        c->hi = B + c->bw;
    }
    *a = A;
    *b = B;
    if (to > B) {
        rv = edge_end(st, c, q, x, xq, nx, B, b);
    }
    if (rv == ST_OK && from > A) {
        rv = edge_start(st, c, q, x, xq, nx, A, a);
    }
    return rv;
}

void st_query_slide_learn(st_query_slide *c, const st_query_fold *f)
{
    int64_t span = f->q.to_ms - f->q.from_ms;
    /* The first buckets a slide reads are its window's; later askings
     * over longer windows are checked again (st_query_slide_fold). */
    c->sized = true;
    /* The engine's windows end on minutes: a fed slide keeps minutes,
     * six times fewer buckets to keep and merge. */
    if (c->fed && c->lo == c->hi && f->q.from_ms % FED_BUCKET_MS == 0 &&
        f->q.to_ms % FED_BUCKET_MS == 0 && f->q.step_ms % FED_BUCKET_MS == 0 &&
        span >= 2 * FED_BUCKET_MS) {
        c->bw = FED_BUCKET_MS;
    }
    c->too_big = f->r.ng * slide_cells(c, span) > slide_max_cells(c);
    if (c->fed && f->q.to_ms > 0) {
        c->end = ST_MAX(c->end, slide_floor(c, f->q.to_ms) + c->bw);
    }
}

static void slide_release(st_query_slide *c);

bool st_query_slide_fits(const st_query *q)
{
    return slide_fits(q);
}

int st_query_slide_fold(st_store *st, st_query_slide *c, const st_query *q, st_query_fold **out)
{
    struct agg_run x[3];
    st_query *xq;
    size_t nx = 0;
    int64_t a = 0;
    int64_t b = 0;
    uint64_t gen;
    int kind = 0;
    int rv;
    if (!c->sized || c->too_big || !slide_fits(q) ||
        st_store_metric_kind(st, q->metric, &kind) != ST_OK || !slide_agg_ok(kind, q->agg, true)) {
        return ST_EUNSUPPORTED;
    }
    if (q->step_ms % c->bw != 0) {
        return ST_EUNSUPPORTED; /* steps the slide's buckets do not tile */
    }
    if ((xq = malloc(3 * sizeof(*xq))) == NULL) {
        return ST_ENOMEM;
    }
    memset(x, 0, sizeof(x));
    /* Taken before reading: what commits after it write is asked next time. */
    gen = st_store_generation(st);
    if (kind != c->kind) {
        slide_reset(c);
        c->kind = kind;
    }
    if (c->fed) {
        rv = fed_fill(st, c, q, x, xq, &nx, &a, &b);
    } else {
        slide_invalidate(st, c, q);
        rv = slide_fill(st, c, q, x, xq, &nx, &a, &b);
    }
    if (rv == ST_OK && c->ng * c->cap > slide_max_cells(c)) {
        /* asked whole from now on: what it holds goes (at 6,000 hosts the
         * by-host windows held hundreds of MiB after they filled), and a
         * fed one is fed no more */
        c->too_big = true;
        rv = ST_EUNSUPPORTED;
        slide_release(c);
        if (c->subscribe != NULL) {
            c->subscribe(c->subscribe_arg, false);
        }
    }
    if (rv == ST_OK) {
        /* What no window asked reaches back to goes. A fed slide's buckets
         * reach past its windows' end, so the reach counts from the newest
         * window's end; a window asked before the newer one in the same
         * step (a baseline before the current window) reaches a step
         * further back than it counted: a margin keeps it from reading
         * all again. */
        int64_t end = c->hi;
        int64_t margin = 0;
        if (c->fed) {
            c->end = ST_MAX(c->end, slide_floor(c, q->to_ms) + c->bw);
            end = c->end;
            margin = FED_MARGIN_MS;
        }
        c->span = ST_MAX(c->span, end - slide_floor(c, q->from_ms));
        if (end - c->span - margin > c->lo) {
            slide_drop(c, c->lo, end - c->span - margin);
            c->lo = end - c->span - margin;
        }
        c->gen = gen;
        rv = slide_answer(c, q, a, b, x, nx, out);
    }
    if (rv != ST_OK && rv != ST_EUNSUPPORTED) {
        slide_reset(c); /* a scan or a move failed part-way */
    }
    for (size_t i = 0; i < ST_ARRAY_LEN(x); i++) {
        run_free(&x[i]);
    }
    free(xq);
    return rv;
}

/* Frees what a slide holds (it keeps its settings). */
static void slide_release(st_query_slide *c)
{
    slide_reset(c);
    for (size_t i = 0; i < c->ng; i++) {
        free(c->g[i]->key);
        free(c->g[i]->b);
        json_decref(c->g[i]->labels);
        free(c->g[i]);
    }
    free(c->g);
    free(c->gidx);
    free(c->order);
    free(c->ids);
    free(c->bs);
    json_decref(c->unit);
    c->g = NULL;
    c->ng = c->gcap = 0;
    c->gidx = NULL;
    c->gtab = 0;
    c->order = NULL;
    c->ordered = false;
    c->ids = NULL;
    c->idtab = c->nids = 0;
    c->bs = NULL;
    c->cap = 0;
    c->unit = NULL;
}

void st_query_slide_free(st_query_slide *c)
{
    if (c == NULL) {
        return;
    }
    slide_release(c);
    free(c);
}
