/* DDSketch with two collapsing dense stores (positive values and the
 * magnitudes of negative ones) and its protobuf encoding. The index and the
 * bucket-value formulas are DDSketch's; sketch.h holds the contract. */
#include "sketch.h"

#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "util.h"

/* Below this alpha the index of DBL_MAX (log(DBL_MAX) / log(gamma)) no
 * longer fits comfortably in the int32 offsets of the wire format. */
#define MIN_ALPHA 1e-6
/* First allocation of a store, doubled on demand up to the bucket limit:
 * most series see a narrow range of values and should stay small. */
#define INIT_CAP 128
#define MAX_BUCKETS ((int64_t)ST_SKETCH_MAX_BUCKETS)

/* Dense counts of keys [off, off + cap); lo and hi are the lowest and
 * highest non-empty keys, lo > hi when the store is empty. Because cap never
 * exceeds the bucket limit, any key inside the window can be counted without
 * a collapse, which keeps the insert fast path to one compare. */
struct store {
    uint64_t *bins;
    int64_t off;
    int64_t cap;
    int64_t lo;
    int64_t hi;
};

/* Counts of consecutive keys lo..hi, read-only; empty when lo > hi. */
struct span {
    const uint64_t *bins;
    int64_t lo;
    int64_t hi;
};

/* What a store must become to take a span: cover [lo, hi] with keys below lo
 * collapsed into lo. Prepared (and allocated) before anything changes so a
 * merge either happens completely or not at all. */
struct plan {
    bool active;
    bool move;
    int64_t lo;
    int64_t hi;
    int64_t off;
    int64_t cap;
    uint64_t *bins; /* new array when the window grows, else NULL */
};

struct st_sketch {
    double alpha;
    double log_gamma;
    double inv_log_gamma;
    double value_scale; /* 2 / (gamma + 1): bucket k reports gamma^k * value_scale */
    uint64_t count;
    uint64_t zero_count;
    double sum;
    double min;
    double max;
    struct store pos;
    struct store neg;
};

/* A sketch's scalars and buckets, from either a sketch or a message. */
struct source {
    uint64_t count;
    uint64_t zero_count;
    double sum;
    double min;
    double max;
    struct span pos;
    struct span neg;
};

static bool alpha_ok(double alpha)
{
    return alpha >= MIN_ALPHA && alpha < 0.5; /* false for NaN */
}

/* log(gamma) through log1p: gamma - 1 = 2 alpha / (1 - alpha) is small, and
 * every party must derive the same value from the same alpha. */
static double log_gamma_of(double alpha)
{
    return log1p(2.0 * alpha / (1.0 - alpha));
}

/* ceil(log(mag) / log(gamma)) for mag >= ST_SKETCH_MIN_VALUE. The result
 * stays within +-4e8 for alpha >= MIN_ALPHA, so the cast is defined; the
 * integer compare replaces a call to ceil(). */
static inline int64_t key_of(double inv_log_gamma, double mag)
{
    double x = log(mag) * inv_log_gamma;
    int64_t k = (int64_t)x;
    return k + (x > (double)k);
}

/* ---- dense collapsing store --------------------------------------------- */

static void store_clear(struct store *st)
{
    if (st->bins && st->lo <= st->hi) {
        memset(st->bins + (st->lo - st->off), 0, (size_t)(st->hi - st->lo + 1) * sizeof(uint64_t));
    }
    st->lo = INT64_MAX;
    st->hi = INT64_MIN;
}

static void store_put(struct store *st, int64_t key, uint64_t n)
{
    st->bins[key - st->off] += n;
    st->lo = ST_MIN(st->lo, key);
    st->hi = ST_MAX(st->hi, key);
}

/* The range a store must cover after taking keys lo..hi: when it would hold
 * more than the bucket limit, the lowest keys give way. */
static void store_target(const struct store *st, int64_t lo, int64_t hi, int64_t *tlo, int64_t *thi)
{
    *thi = ST_MAX(st->hi, hi);
    *tlo = ST_MIN(st->lo, lo);
    if (*thi - *tlo + 1 > MAX_BUCKETS) {
        *tlo = *thi - MAX_BUCKETS + 1;
    }
}

static int store_plan(const struct store *st, int64_t lo, int64_t hi, struct plan *p)
{
    int64_t span = hi - lo + 1;
    int64_t cap = st->cap ? st->cap : INIT_CAP;

    memset(p, 0, sizeof(*p));
    p->active = true;
    p->lo = lo;
    p->hi = hi;
    if (st->cap && lo >= st->off && hi < st->off + st->cap) {
        return ST_OK;
    }
    while (cap < span) {
        cap *= 2;
    }
    cap = ST_MIN(cap, MAX_BUCKETS);
    p->move = true;
    p->cap = cap;
    /* Centred so the window has room to grow both ways before moving again. */
    p->off = lo - (cap - span) / 2;
    if (cap != st->cap) {
        p->bins = calloc((size_t)cap, sizeof(uint64_t));
        if (!p->bins) {
            return ST_ENOMEM;
        }
    }
    return ST_OK;
}

/* Empties the keys below lo and returns their total; afterwards the store's
 * non-empty keys (if any) start at lo, where the caller puts the total. */
static uint64_t store_take_below(struct store *st, int64_t lo)
{
    uint64_t total = 0;
    int64_t end;

    if (st->lo > st->hi || st->lo >= lo) {
        return 0;
    }
    end = ST_MIN(st->hi, lo - 1);
    for (int64_t k = st->lo; k <= end; k++) {
        total += st->bins[k - st->off];
        st->bins[k - st->off] = 0;
    }
    if (st->hi < lo) {
        st->lo = INT64_MAX;
        st->hi = INT64_MIN;
    } else {
        st->lo = lo;
    }
    return total;
}

/* Moves the live keys into the planned window, in place when the capacity
 * stays the same. */
static void store_move(struct store *st, const struct plan *p)
{
    uint64_t *dst = p->bins ? p->bins : st->bins;
    size_t live = st->lo <= st->hi ? (size_t)(st->hi - st->lo + 1) : 0;
    size_t from = live ? (size_t)(st->lo - st->off) : 0;
    size_t to = live ? (size_t)(st->lo - p->off) : 0;

    if (live) {
        memmove(dst + to, st->bins + from, live * sizeof(uint64_t));
    }
    if (p->bins) {
        free(st->bins);
    } else {
        /* Clear what the overlapping move left behind outside the live keys. */
        memset(dst, 0, to * sizeof(uint64_t));
        memset(dst + to + live, 0, ((size_t)p->cap - to - live) * sizeof(uint64_t));
    }
    st->bins = dst;
    st->off = p->off;
    st->cap = p->cap;
}

static void store_apply(struct store *st, const struct plan *p)
{
    uint64_t folded;

    if (!p->active) {
        return;
    }
    folded = store_take_below(st, p->lo);
    if (p->move) {
        store_move(st, p);
    }
    if (folded) {
        store_put(st, p->lo, folded);
    }
}

static int store_add_slow(struct store *st, int64_t key, uint64_t n)
{
    struct plan p;
    int64_t lo;
    int64_t hi;
    int rc;

    store_target(st, key, key, &lo, &hi);
    rc = store_plan(st, lo, hi, &p);
    if (rc != ST_OK) {
        return rc;
    }
    store_apply(st, &p);
    store_put(st, ST_MAX(key, lo), n);
    return ST_OK;
}

static inline int store_add(struct store *st, int64_t key, uint64_t n)
{
    /* One unsigned compare tests off <= key < off + cap. */
    uint64_t i = (uint64_t)(key - st->off);

    if (i < (uint64_t)st->cap) {
        st->bins[i] += n;
        st->lo = ST_MIN(st->lo, key);
        st->hi = ST_MAX(st->hi, key);
        return ST_OK;
    }
    return store_add_slow(st, key, n);
}

static int plan_span(const struct store *st, const struct span *sp, struct plan *p)
{
    int64_t lo;
    int64_t hi;

    if (sp->lo > sp->hi) {
        memset(p, 0, sizeof(*p));
        return ST_OK;
    }
    store_target(st, sp->lo, sp->hi, &lo, &hi);
    return store_plan(st, lo, hi, p);
}

/* Adds a span into a store prepared by its plan. Keys below the plan's lo
 * collapse into it, the same place a single insert would have put them, so
 * a merge equals inserting every value into one sketch. */
static void add_span(struct store *st, const struct plan *p, const struct span *sp)
{
    store_apply(st, p);
    for (int64_t k = sp->lo; k <= sp->hi; k++) {
        uint64_t n = sp->bins[k - sp->lo];
        if (n) {
            store_put(st, ST_MAX(k, p->lo), n);
        }
    }
}

static struct span store_span(const struct store *st)
{
    struct span sp = {NULL, st->lo, st->hi};

    if (st->lo <= st->hi) {
        sp.bins = st->bins + (st->lo - st->off);
    }
    return sp;
}

/* ---- sketch ------------------------------------------------------------- */

int st_sketch_new(double alpha, st_sketch **out)
{
    st_sketch *s;

    if (!out) {
        return ST_EINVAL;
    }
    if (alpha == 0) {
        alpha = ST_SKETCH_ALPHA;
    }
    if (!alpha_ok(alpha)) {
        return ST_EINVAL;
    }
    s = calloc(1, sizeof(*s));
    if (!s) {
        return ST_ENOMEM;
    }
    s->alpha = alpha;
    s->log_gamma = log_gamma_of(alpha);
    s->inv_log_gamma = 1.0 / s->log_gamma;
    s->value_scale = 2.0 / (exp(s->log_gamma) + 1.0);
    st_sketch_reset(s);
    *out = s;
    return ST_OK;
}

void st_sketch_free(st_sketch *s)
{
    if (!s) {
        return;
    }
    free(s->pos.bins);
    free(s->neg.bins);
    free(s);
}

void st_sketch_reset(st_sketch *s)
{
    if (!s) {
        return;
    }
    store_clear(&s->pos);
    store_clear(&s->neg);
    s->count = 0;
    s->zero_count = 0;
    s->sum = 0;
    s->min = INFINITY;
    s->max = -INFINITY;
}

int st_sketch_insert(st_sketch *s, double v)
{
    return st_sketch_insert_n(s, v, 1);
}

int st_sketch_insert_n(st_sketch *s, double v, uint64_t n)
{
    double sum;
    int rc = ST_OK;

    if (!s || !isfinite(v)) {
        return ST_EINVAL;
    }
    if (n == 0) {
        return ST_OK;
    }
    /* Refused rather than wrapped or made infinite: the sketch must always
     * encode to a message that st_sketch_proto_validate accepts. */
    sum = s->sum + v * (double)n;
    if (n > UINT64_MAX - s->count || !isfinite(sum)) {
        return ST_ETOOBIG;
    }
    if (v >= ST_SKETCH_MIN_VALUE) {
        rc = store_add(&s->pos, key_of(s->inv_log_gamma, v), n);
    } else if (v <= -ST_SKETCH_MIN_VALUE) {
        rc = store_add(&s->neg, key_of(s->inv_log_gamma, -v), n);
    } else {
        s->zero_count += n;
    }
    if (rc != ST_OK) {
        return rc;
    }
    s->count += n;
    s->sum = sum;
    s->min = ST_MIN(s->min, v);
    s->max = ST_MAX(s->max, v);
    return ST_OK;
}

static int merge_source(st_sketch *dst, const struct source *src)
{
    struct plan pp;
    struct plan np;
    double sum = dst->sum + src->sum;
    int rc;

    if (src->count == 0) {
        return ST_OK;
    }
    if (src->count > UINT64_MAX - dst->count || !isfinite(sum)) {
        return ST_ETOOBIG;
    }
    rc = plan_span(&dst->pos, &src->pos, &pp);
    if (rc != ST_OK) {
        return rc;
    }
    rc = plan_span(&dst->neg, &src->neg, &np);
    if (rc != ST_OK) {
        free(pp.bins);
        return rc;
    }
    /* Nothing can fail from here on. */
    add_span(&dst->pos, &pp, &src->pos);
    add_span(&dst->neg, &np, &src->neg);
    dst->count += src->count;
    dst->zero_count += src->zero_count;
    dst->sum = sum;
    dst->min = ST_MIN(dst->min, src->min);
    dst->max = ST_MAX(dst->max, src->max);
    return ST_OK;
}

int st_sketch_merge(st_sketch *dst, const st_sketch *src)
{
    struct source in;

    if (!dst || !src || dst->alpha != src->alpha) {
        return ST_EINVAL;
    }
    /* Merging a sketch into itself is safe: the stores' ranges do not change,
     * so nothing moves, and each bucket is read before it is written. */
    in.count = src->count;
    in.zero_count = src->zero_count;
    in.sum = src->sum;
    in.min = src->min;
    in.max = src->max;
    in.pos = store_span(&src->pos);
    in.neg = store_span(&src->neg);
    return merge_source(dst, &in);
}

/* ---- quantiles ---------------------------------------------------------- */

static double bucket_value(const st_sketch *s, int64_t key)
{
    return exp((double)key * s->log_gamma) * s->value_scale;
}

/* Walks a store in ascending (or descending) key order, adding to *seen,
 * and reports the first key whose running count passes rank. */
static bool store_find(const struct store *st, bool descending, double rank, uint64_t *seen,
                       int64_t *key)
{
    int64_t n = st->lo <= st->hi ? st->hi - st->lo + 1 : 0;

    for (int64_t i = 0; i < n; i++) {
        int64_t k = descending ? st->hi - i : st->lo + i;
        *seen += st->bins[k - st->off];
        if ((double)*seen > rank) {
            *key = k;
            return true;
        }
    }
    return false;
}

static double clamp(const st_sketch *s, double v)
{
    return ST_MIN(ST_MAX(v, s->min), s->max);
}

double st_sketch_quantile(const st_sketch *s, double q)
{
    uint64_t seen = 0;
    double rank;
    int64_t key;

    if (!s || s->count == 0 || !(q >= 0 && q <= 1)) {
        return NAN;
    }
    if (q == 0) {
        return s->min;
    }
    if (q == 1) {
        return s->max;
    }
    /* DDSketch's rank: the value of the floor(q (count - 1))-th smallest. */
    rank = q * (double)(s->count - 1);
    if (store_find(&s->neg, true, rank, &seen, &key)) {
        return clamp(s, -bucket_value(s, key));
    }
    seen += s->zero_count;
    if ((double)seen > rank) {
        return clamp(s, 0.0);
    }
    if (store_find(&s->pos, false, rank, &seen, &key)) {
        return clamp(s, bucket_value(s, key));
    }
    return s->max; /* unreachable while count equals the buckets' total */
}

uint64_t st_sketch_count(const st_sketch *s)
{
    return s ? s->count : 0;
}

double st_sketch_sum(const st_sketch *s)
{
    return s ? s->sum : NAN;
}

double st_sketch_min(const st_sketch *s)
{
    return s && s->count ? s->min : NAN;
}

double st_sketch_max(const st_sketch *s)
{
    return s && s->count ? s->max : NAN;
}

double st_sketch_alpha(const st_sketch *s)
{
    return s ? s->alpha : NAN;
}

/* ---- protobuf ----------------------------------------------------------- */

/* Copies the non-empty keys only: leading and trailing empty buckets never
 * travel. */
static int store_export(const struct store *st, int32_t *offset, uint64_t **counts, size_t *n)
{
    size_t len;

    *offset = 0;
    *counts = NULL;
    *n = 0;
    if (st->lo > st->hi) {
        return ST_OK;
    }
    len = (size_t)(st->hi - st->lo + 1);
    *counts = malloc(len * sizeof(uint64_t));
    if (!*counts) {
        return ST_ENOMEM;
    }
    memcpy(*counts, st->bins + (st->lo - st->off), len * sizeof(uint64_t));
    *offset = (int32_t)st->lo;
    *n = len;
    return ST_OK;
}

int st_sketch_to_proto(const st_sketch *s, Strata__V1__Sketch *out)
{
    Strata__V1__Sketch m;
    int rc;

    if (!s || !out) {
        return ST_EINVAL;
    }
    strata__v1__sketch__init(&m);
    m.alpha = s->alpha;
    m.count = s->count;
    m.sum = s->sum;
    /* An empty sketch's min and max are infinite inside; send finite zeros. */
    m.min = s->count ? s->min : 0;
    m.max = s->count ? s->max : 0;
    m.zero_count = s->zero_count;
    rc = store_export(&s->pos, &m.offset, &m.counts, &m.n_counts);
    if (rc != ST_OK) {
        return rc;
    }
    rc = store_export(&s->neg, &m.neg_offset, &m.neg_counts, &m.n_neg_counts);
    if (rc != ST_OK) {
        free(m.counts);
        return rc;
    }
    *out = m;
    return ST_OK;
}

void st_sketch_proto_clear(Strata__V1__Sketch *m)
{
    if (!m) {
        return;
    }
    free(m->counts);
    free(m->neg_counts);
    strata__v1__sketch__init(m);
}

/* Checks one sign's buckets against the keys alpha can produce and adds
 * their counts to *total, refusing to wrap. */
static bool counts_ok(int32_t offset, const uint64_t *counts, size_t n, int64_t key_lo,
                      int64_t key_hi, uint64_t *total)
{
    if (n == 0) {
        return true;
    }
    if (!counts || n > (size_t)MAX_BUCKETS) {
        return false;
    }
    /* Both bounds in int64: offset + n - 1 cannot overflow there. */
    if ((int64_t)offset + (int64_t)n - 1 > INT32_MAX) {
        return false;
    }
    if (offset < key_lo || (int64_t)offset + (int64_t)n - 1 > key_hi) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (counts[i] > UINT64_MAX - *total) {
            return false;
        }
        *total += counts[i];
    }
    return true;
}

int st_sketch_proto_validate(const Strata__V1__Sketch *m)
{
    double inv_log_gamma;
    int64_t key_lo;
    int64_t key_hi;
    uint64_t total;

    if (!m || !alpha_ok(m->alpha)) {
        return ST_EFRAME_SKETCH;
    }
    if (!isfinite(m->sum) || !isfinite(m->min) || !isfinite(m->max)) {
        return ST_EFRAME_SKETCH;
    }
    if (m->count > 0 && m->min > m->max) {
        return ST_EFRAME_SKETCH;
    }
    inv_log_gamma = 1.0 / log_gamma_of(m->alpha);
    key_lo = key_of(inv_log_gamma, ST_SKETCH_MIN_VALUE);
    key_hi = key_of(inv_log_gamma, DBL_MAX);
    total = m->zero_count;
    if (!counts_ok(m->offset, m->counts, m->n_counts, key_lo, key_hi, &total) ||
        !counts_ok(m->neg_offset, m->neg_counts, m->n_neg_counts, key_lo, key_hi, &total)) {
        return ST_EFRAME_SKETCH;
    }
    return total == m->count ? ST_OK : ST_EFRAME_SKETCH;
}

/* The non-empty part of a message's buckets (other encoders may send
 * leading or trailing zeros). */
static struct span message_span(int32_t offset, const uint64_t *counts, size_t n)
{
    struct span sp = {NULL, INT64_MAX, INT64_MIN};
    size_t first = 0;
    size_t last = n;

    while (first < n && counts[first] == 0) {
        first++;
    }
    while (last > first && counts[last - 1] == 0) {
        last--;
    }
    if (first < last) {
        sp.bins = counts + first;
        sp.lo = (int64_t)offset + (int64_t)first;
        sp.hi = (int64_t)offset + (int64_t)last - 1;
    }
    return sp;
}

int st_sketch_merge_proto(st_sketch *dst, const Strata__V1__Sketch *m)
{
    struct source in;
    int rc;

    if (!dst) {
        return ST_EINVAL;
    }
    rc = st_sketch_proto_validate(m);
    if (rc != ST_OK) {
        return rc;
    }
    if (m->alpha != dst->alpha) {
        return ST_EINVAL;
    }
    in.count = m->count;
    in.zero_count = m->zero_count;
    in.sum = m->sum;
    in.min = m->min;
    in.max = m->max;
    in.pos = message_span(m->offset, m->counts, m->n_counts);
    in.neg = message_span(m->neg_offset, m->neg_counts, m->n_neg_counts);
    return merge_source(dst, &in);
}

int st_sketch_from_proto(const Strata__V1__Sketch *m, st_sketch **out)
{
    st_sketch *s = NULL;
    int rc;

    if (!out) {
        return ST_EINVAL;
    }
    rc = st_sketch_proto_validate(m);
    if (rc != ST_OK) {
        return rc;
    }
    rc = st_sketch_new(m->alpha, &s);
    if (rc != ST_OK) {
        return rc;
    }
    rc = st_sketch_merge_proto(s, m);
    if (rc != ST_OK) {
        st_sketch_free(s);
        return rc;
    }
    *out = s;
    return ST_OK;
}
