/* Unit tests for common/sketch: quantile accuracy against exact quantiles
 * of seeded data sets, exact merges, the protobuf round trip, every
 * rejection of st_sketch_proto_validate, and the collapsing store. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "sketch.h"

#define N_VALUES 100000
/* Relative accuracy promised by the default alpha, plus room for rounding
 * in log() and exp() far below anything a caller could notice. */
#define TOLERANCE (ST_SKETCH_ALPHA + 1e-12)

static const double checked_q[] = {0.001, 0.01, 0.05, 0.11, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999};
static const double grid_q[] = {0,    0.001, 0.01, 0.05, 0.1,   0.12,   0.25, 0.5,
                                0.75, 0.9,   0.95, 0.99, 0.999, 0.9999, 1};

/* ---- seeded data -------------------------------------------------------- */

struct rng {
    uint64_t s;
};

/* xorshift64*: fast, good enough for test data, same on every platform. */
static uint64_t rng_next(struct rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1DULL;
}

/* Uniform in [0, 1). */
static double rng_unit(struct rng *r)
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

static double rng_normal(struct rng *r)
{
    double u1 = 1.0 - rng_unit(r); /* (0, 1]: log() stays finite */
    double u2 = rng_unit(r);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

enum dist { UNIFORM, EXPONENTIAL, LOGNORMAL, BIMODAL, LOG_UNIFORM_WIDE };

static double draw(struct rng *r, enum dist d)
{
    switch (d) {
    case UNIFORM:
        return 1000.0 * rng_unit(r);
    case EXPONENTIAL:
        return -log(1.0 - rng_unit(r)) * 0.2;
    case LOGNORMAL:
        return exp(log(0.05) + 1.5 * rng_normal(r));
    case BIMODAL:
        /* Cache hits around 10 ms and misses around 2 s. */
        if (rng_unit(r) < 0.7) {
            return exp(log(0.01) + 0.3 * rng_normal(r));
        }
        return exp(log(2.0) + 0.2 * rng_normal(r));
    case LOG_UNIFORM_WIDE:
        /* 1e-9 .. 1e40: about 5,600 buckets at alpha 0.01, past the limit. */
        return pow(10.0, -9.0 + 49.0 * rng_unit(r));
    }
    return 0;
}

/* N_VALUES values of d; with mixed set, 3 % are zeros and 10 % negated. */
static double *make_data(enum dist d, uint64_t seed, bool mixed)
{
    struct rng r = {seed};
    double *v = malloc(N_VALUES * sizeof(*v));

    assert_non_null(v);
    for (size_t i = 0; i < N_VALUES; i++) {
        double u = rng_unit(&r);
        double x = draw(&r, d);
        if (mixed && u < 0.03) {
            x = 0.0;
        } else if (mixed && u < 0.13) {
            x = -x;
        }
        v[i] = x;
    }
    return v;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The exact quantile under the sketch's rank definition. */
static double exact_quantile(const double *sorted, size_t n, double q)
{
    return sorted[(size_t)floor(q * (double)(n - 1))];
}

static st_sketch *sketch_of(const double *v, size_t n, double alpha)
{
    st_sketch *s = NULL;

    assert_int_equal(st_sketch_new(alpha, &s), ST_OK);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(st_sketch_insert(s, v[i]), ST_OK);
    }
    return s;
}

static void assert_within(double est, double exact, double tol, double q)
{
    if (exact == 0 ? est != 0 : !(fabs(est - exact) <= tol * fabs(exact))) {
        fail_msg("q=%g: sketch %.17g, exact %.17g", q, est, exact);
    }
}

static void check_accuracy(enum dist d, uint64_t seed)
{
    double *v = make_data(d, seed, true);
    st_sketch *s = sketch_of(v, N_VALUES, 0);

    qsort(v, N_VALUES, sizeof(*v), cmp_double);
    for (size_t i = 0; i < sizeof(checked_q) / sizeof(checked_q[0]); i++) {
        double q = checked_q[i];
        assert_within(st_sketch_quantile(s, q), exact_quantile(v, N_VALUES, q), TOLERANCE, q);
    }
    /* The ends are the exact extremes, not bucket values. */
    assert_true(st_sketch_quantile(s, 0) == v[0]);
    assert_true(st_sketch_quantile(s, 1) == v[N_VALUES - 1]);
    assert_true(st_sketch_min(s) == v[0]);
    assert_true(st_sketch_max(s) == v[N_VALUES - 1]);
    assert_int_equal(st_sketch_count(s), N_VALUES);
    st_sketch_free(s);
    free(v);
}

/* Same buckets, scalars and quantiles; the sum may differ by rounding
 * because it was added up in a different order. */
static void assert_same_sketch(const st_sketch *a, const st_sketch *b)
{
    Strata__V1__Sketch ma;
    Strata__V1__Sketch mb;

    assert_int_equal(st_sketch_to_proto(a, &ma), ST_OK);
    assert_int_equal(st_sketch_to_proto(b, &mb), ST_OK);
    assert_true(ma.alpha == mb.alpha);
    assert_int_equal(ma.count, mb.count);
    assert_int_equal(ma.zero_count, mb.zero_count);
    assert_true(ma.min == mb.min);
    assert_true(ma.max == mb.max);
    assert_true(fabs(ma.sum - mb.sum) <= 1e-9 * fabs(ma.sum) + 1e-300);
    assert_int_equal(ma.offset, mb.offset);
    assert_int_equal(ma.n_counts, mb.n_counts);
    assert_memory_equal(ma.counts, mb.counts, ma.n_counts * sizeof(uint64_t));
    assert_int_equal(ma.neg_offset, mb.neg_offset);
    assert_int_equal(ma.n_neg_counts, mb.n_neg_counts);
    assert_memory_equal(ma.neg_counts, mb.neg_counts, ma.n_neg_counts * sizeof(uint64_t));
    for (size_t i = 0; i < sizeof(grid_q) / sizeof(grid_q[0]); i++) {
        double qa = st_sketch_quantile(a, grid_q[i]);
        double qb = st_sketch_quantile(b, grid_q[i]);
        assert_true(qa == qb || (isnan(qa) && isnan(qb)));
    }
    st_sketch_proto_clear(&ma);
    st_sketch_proto_clear(&mb);
}

/* ---- accuracy ----------------------------------------------------------- */

static void test_uniform(void **state)
{
    (void)state;
    check_accuracy(UNIFORM, 0x9E3779B97F4A7C15ULL);
}

static void test_exponential(void **state)
{
    (void)state;
    check_accuracy(EXPONENTIAL, 0xD1B54A32D192ED03ULL);
}

static void test_lognormal(void **state)
{
    (void)state;
    check_accuracy(LOGNORMAL, 0x8CB92BA72F3D8DD7ULL);
}

static void test_bimodal(void **state)
{
    (void)state;
    check_accuracy(BIMODAL, 0xA0761D6478BD642FULL);
}

/* rank = q (count - 1), the floor(rank)-th smallest value, also when
 * rank lands exactly on a bucket boundary. */
static void test_rank_definition(void **state)
{
    static const double v[] = {-4, -2, 0, 1, 2, 3, 5, 8, 13};
    static const double q[] = {0.125, 0.25, 0.3, 0.375, 0.5, 0.625, 0.75, 0.875, 0.9};
    size_t n = sizeof(v) / sizeof(v[0]);
    st_sketch *s = sketch_of(v, n, 0);

    (void)state;
    for (size_t i = 0; i < sizeof(q) / sizeof(q[0]); i++) {
        assert_within(st_sketch_quantile(s, q[i]), exact_quantile(v, n, q[i]), TOLERANCE, q[i]);
    }
    st_sketch_free(s);
}

static void test_empty(void **state)
{
    st_sketch *s = NULL;

    (void)state;
    assert_int_equal(st_sketch_new(0, &s), ST_OK);
    assert_true(st_sketch_alpha(s) == ST_SKETCH_ALPHA);
    assert_int_equal(st_sketch_count(s), 0);
    assert_true(isnan(st_sketch_quantile(s, 0)));
    assert_true(isnan(st_sketch_quantile(s, 0.5)));
    assert_true(isnan(st_sketch_quantile(s, 1)));
    assert_true(isnan(st_sketch_min(s)));
    assert_true(isnan(st_sketch_max(s)));
    assert_true(st_sketch_sum(s) == 0);
    st_sketch_free(s);
    st_sketch_free(NULL);
}

static void test_bad_args(void **state)
{
    st_sketch *s = NULL;

    (void)state;
    assert_int_equal(st_sketch_new(-0.01, &s), ST_EINVAL);
    assert_int_equal(st_sketch_new(0.5, &s), ST_EINVAL);
    assert_int_equal(st_sketch_new(NAN, &s), ST_EINVAL);
    /* So small that log(DBL_MAX) / log(gamma) would not fit in int32. */
    assert_int_equal(st_sketch_new(1e-9, &s), ST_EINVAL);
    assert_null(s);
    assert_int_equal(st_sketch_new(0.05, &s), ST_OK);
    assert_int_equal(st_sketch_insert(s, 1.0), ST_OK);
    assert_true(isnan(st_sketch_quantile(s, -0.1)));
    assert_true(isnan(st_sketch_quantile(s, 1.1)));
    assert_true(isnan(st_sketch_quantile(s, NAN)));
    st_sketch_free(s);
}

static void test_non_finite_insert(void **state)
{
    st_sketch *s = NULL;

    (void)state;
    assert_int_equal(st_sketch_new(0, &s), ST_OK);
    assert_int_equal(st_sketch_insert(s, NAN), ST_EINVAL);
    assert_int_equal(st_sketch_insert(s, INFINITY), ST_EINVAL);
    assert_int_equal(st_sketch_insert(s, -INFINITY), ST_EINVAL);
    assert_int_equal(st_sketch_insert_n(s, NAN, 3), ST_EINVAL);
    assert_int_equal(st_sketch_count(s), 0);
    assert_true(isnan(st_sketch_quantile(s, 0.5)));
    st_sketch_free(s);
}

static void test_zeros_and_tiny(void **state)
{
    st_sketch *s = NULL;

    (void)state;
    assert_int_equal(st_sketch_new(0, &s), ST_OK);
    /* Magnitudes below ST_SKETCH_MIN_VALUE count as zero. */
    assert_int_equal(st_sketch_insert(s, 0.0), ST_OK);
    assert_int_equal(st_sketch_insert(s, -0.0), ST_OK);
    assert_int_equal(st_sketch_insert(s, 1e-12), ST_OK);
    assert_int_equal(st_sketch_insert(s, -1e-12), ST_OK);
    assert_true(st_sketch_quantile(s, 0.5) == 0);
    assert_true(st_sketch_min(s) == -1e-12);
    assert_true(st_sketch_max(s) == 1e-12);
    st_sketch_free(s);

    /* Only tiny positives: the zero bucket's 0 is clamped up to the min. */
    assert_int_equal(st_sketch_new(0, &s), ST_OK);
    assert_int_equal(st_sketch_insert_n(s, 1e-11, 10), ST_OK);
    assert_true(st_sketch_quantile(s, 0.5) == 1e-11);
    st_sketch_free(s);
}

static void test_insert_n_and_reset(void **state)
{
    static const double v[] = {-3.5, 0, 0.001, 0.25, 7, 7, 120};
    st_sketch *a = NULL;
    st_sketch *b = NULL;

    (void)state;
    assert_int_equal(st_sketch_new(0, &a), ST_OK);
    assert_int_equal(st_sketch_new(0, &b), ST_OK);
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        for (int k = 0; k < 5; k++) {
            assert_int_equal(st_sketch_insert(a, v[i]), ST_OK);
        }
        assert_int_equal(st_sketch_insert_n(b, v[i], 5), ST_OK);
        assert_int_equal(st_sketch_insert_n(b, v[i], 0), ST_OK);
    }
    assert_same_sketch(a, b);
    assert_true(st_sketch_sum(b) == 5 * (-3.5 + 0.001 + 0.25 + 7 + 7 + 120));

    st_sketch_reset(a);
    assert_int_equal(st_sketch_count(a), 0);
    assert_true(isnan(st_sketch_quantile(a, 0.5)));
    assert_true(st_sketch_alpha(a) == ST_SKETCH_ALPHA);
    assert_int_equal(st_sketch_insert(a, 42.0), ST_OK);
    assert_true(st_sketch_quantile(a, 0.5) == 42.0);
    assert_int_equal(st_sketch_count(a), 1);
    st_sketch_free(a);
    st_sketch_free(b);
}

static void test_overflow_refused(void **state)
{
    st_sketch *a = NULL;
    st_sketch *b = NULL;

    (void)state;
    assert_int_equal(st_sketch_new(0, &a), ST_OK);
    assert_int_equal(st_sketch_new(0, &b), ST_OK);
    assert_int_equal(st_sketch_insert_n(a, 1.0, UINT64_MAX), ST_OK);
    assert_int_equal(st_sketch_insert(a, 2.0), ST_ETOOBIG);
    assert_int_equal(st_sketch_count(a), UINT64_MAX);
    assert_true(st_sketch_max(a) == 1.0);
    assert_int_equal(st_sketch_insert(b, 3.0), ST_OK);
    assert_int_equal(st_sketch_merge(a, b), ST_ETOOBIG);
    assert_int_equal(st_sketch_count(a), UINT64_MAX);
    assert_true(st_sketch_max(a) == 1.0);

    /* A sum that would become infinite could never be sent. */
    st_sketch_reset(b);
    assert_int_equal(st_sketch_insert(b, DBL_MAX), ST_OK);
    assert_int_equal(st_sketch_insert(b, DBL_MAX), ST_ETOOBIG);
    assert_int_equal(st_sketch_count(b), 1);
    assert_true(isfinite(st_sketch_sum(b)));
    st_sketch_free(a);
    st_sketch_free(b);
}

/* ---- merge -------------------------------------------------------------- */

/* Builds the sketch of all values and the merge of uneven parts. */
static void check_merge_equals_whole(const double *v, size_t n)
{
    static const size_t cut[] = {0, 7000, 30000, 71000, 71001, N_VALUES};
    st_sketch *whole = sketch_of(v, n, 0);
    st_sketch *merged = NULL;

    assert_int_equal(st_sketch_new(0, &merged), ST_OK);
    for (size_t i = 0; i + 1 < sizeof(cut) / sizeof(cut[0]); i++) {
        st_sketch *part = sketch_of(v + cut[i], cut[i + 1] - cut[i], 0);
        assert_int_equal(st_sketch_merge(merged, part), ST_OK);
        st_sketch_free(part);
    }
    assert_same_sketch(whole, merged);
    assert_int_equal(st_sketch_count(merged), n);
    st_sketch_free(whole);
    st_sketch_free(merged);
}

static void test_merge_equals_whole(void **state)
{
    double *v = make_data(LOGNORMAL, 42, true);

    (void)state;
    check_merge_equals_whole(v, N_VALUES);
    free(v);
    v = make_data(BIMODAL, 43, true);
    check_merge_equals_whole(v, N_VALUES);
    free(v);
}

static void test_merge_collapsed_equals_whole(void **state)
{
    double *v = make_data(LOG_UNIFORM_WIDE, 44, true);

    (void)state;
    check_merge_equals_whole(v, N_VALUES);
    free(v);
}

/* Parts that hold disjoint ranges, merged lowest first (the target's own
 * low buckets collapse) and highest first (the incoming low buckets must
 * collapse on the way in). */
static void test_merge_disjoint_ranges(void **state)
{
    static const size_t cut[] = {0, 20000, 45000, 80000, N_VALUES};
    double *v = make_data(LOG_UNIFORM_WIDE, 51, true);
    st_sketch *whole = sketch_of(v, N_VALUES, 0);
    st_sketch *up = NULL;
    st_sketch *down = NULL;
    size_t parts = sizeof(cut) / sizeof(cut[0]) - 1;

    (void)state;
    qsort(v, N_VALUES, sizeof(*v), cmp_double);
    assert_int_equal(st_sketch_new(0, &up), ST_OK);
    assert_int_equal(st_sketch_new(0, &down), ST_OK);
    for (size_t i = 0; i < parts; i++) {
        size_t j = parts - 1 - i;
        st_sketch *lo = sketch_of(v + cut[i], cut[i + 1] - cut[i], 0);
        st_sketch *hi = sketch_of(v + cut[j], cut[j + 1] - cut[j], 0);
        assert_int_equal(st_sketch_merge(up, lo), ST_OK);
        assert_int_equal(st_sketch_merge(down, hi), ST_OK);
        st_sketch_free(lo);
        st_sketch_free(hi);
    }
    assert_same_sketch(whole, up);
    assert_same_sketch(whole, down);
    st_sketch_free(whole);
    st_sketch_free(up);
    st_sketch_free(down);
    free(v);
}

static void test_merge_self(void **state)
{
    double *v = make_data(EXPONENTIAL, 45, true);
    st_sketch *s = sketch_of(v, N_VALUES, 0);
    st_sketch *twice = sketch_of(v, N_VALUES, 0);

    (void)state;
    for (size_t i = 0; i < N_VALUES; i++) {
        assert_int_equal(st_sketch_insert(twice, v[i]), ST_OK);
    }
    assert_int_equal(st_sketch_merge(s, s), ST_OK);
    assert_same_sketch(s, twice);
    st_sketch_free(s);
    st_sketch_free(twice);
    free(v);
}

static void test_merge_alpha_mismatch(void **state)
{
    st_sketch *a = NULL;
    st_sketch *b = NULL;
    Strata__V1__Sketch m;

    (void)state;
    assert_int_equal(st_sketch_new(0.01, &a), ST_OK);
    assert_int_equal(st_sketch_new(0.02, &b), ST_OK);
    assert_int_equal(st_sketch_insert(a, 1.0), ST_OK);
    assert_int_equal(st_sketch_insert(b, 2.0), ST_OK);
    assert_int_equal(st_sketch_merge(a, b), ST_EINVAL);
    assert_int_equal(st_sketch_to_proto(b, &m), ST_OK);
    assert_int_equal(st_sketch_merge_proto(a, &m), ST_EINVAL);
    assert_int_equal(st_sketch_count(a), 1);
    assert_true(st_sketch_max(a) == 1.0);
    st_sketch_proto_clear(&m);
    st_sketch_free(a);
    st_sketch_free(b);
}

static void test_merge_empty(void **state)
{
    st_sketch *a = NULL;
    st_sketch *e = NULL;

    (void)state;
    assert_int_equal(st_sketch_new(0, &a), ST_OK);
    assert_int_equal(st_sketch_new(0, &e), ST_OK);
    assert_int_equal(st_sketch_insert(a, 5.0), ST_OK);
    assert_int_equal(st_sketch_merge(a, e), ST_OK);
    assert_int_equal(st_sketch_count(a), 1);
    assert_true(st_sketch_min(a) == 5.0);
    assert_int_equal(st_sketch_merge(e, a), ST_OK);
    assert_same_sketch(a, e);
    st_sketch_free(a);
    st_sketch_free(e);
}

/* ---- collapsing --------------------------------------------------------- */

static void test_collapse_keeps_high_quantiles(void **state)
{
    double *v = make_data(LOG_UNIFORM_WIDE, 46, false);
    st_sketch *s = sketch_of(v, N_VALUES, 0);
    Strata__V1__Sketch m;

    (void)state;
    assert_int_equal(st_sketch_to_proto(s, &m), ST_OK);
    assert_int_equal(m.n_counts, ST_SKETCH_MAX_BUCKETS);
    assert_int_equal(m.count, N_VALUES);
    assert_int_equal(st_sketch_proto_validate(&m), ST_OK);
    st_sketch_proto_clear(&m);

    qsort(v, N_VALUES, sizeof(*v), cmp_double);
    for (size_t i = 5; i < sizeof(checked_q) / sizeof(checked_q[0]); i++) {
        double q = checked_q[i];
        assert_within(st_sketch_quantile(s, q), exact_quantile(v, N_VALUES, q), TOLERANCE, q);
    }
    /* The lowest ~27 % of the values went into the lowest kept bucket, so
     * p10 reads far too high: proof that the collapse happened. */
    assert_true(st_sketch_quantile(s, 0.1) > 100 * exact_quantile(v, N_VALUES, 0.1));
    assert_true(st_sketch_quantile(s, 0) == v[0]);
    assert_true(st_sketch_quantile(s, 1) == v[N_VALUES - 1]);
    st_sketch_free(s);
    free(v);
}

static void test_collapse_order_independent(void **state)
{
    double *v = make_data(LOG_UNIFORM_WIDE, 47, true);
    st_sketch *shuffled = sketch_of(v, N_VALUES, 0);
    st_sketch *descending = NULL;
    st_sketch *ascending = NULL;

    (void)state;
    qsort(v, N_VALUES, sizeof(*v), cmp_double);
    ascending = sketch_of(v, N_VALUES, 0);
    assert_int_equal(st_sketch_new(0, &descending), ST_OK);
    for (size_t i = N_VALUES; i-- > 0;) {
        assert_int_equal(st_sketch_insert(descending, v[i]), ST_OK);
    }
    assert_same_sketch(shuffled, ascending);
    assert_same_sketch(shuffled, descending);
    st_sketch_free(shuffled);
    st_sketch_free(ascending);
    st_sketch_free(descending);
    free(v);
}

/* ---- protobuf ----------------------------------------------------------- */

static void test_proto_round_trip(void **state)
{
    double *v = make_data(BIMODAL, 48, true);
    st_sketch *s = sketch_of(v, N_VALUES, 0);
    st_sketch *back = NULL;
    Strata__V1__Sketch m;
    Strata__V1__Sketch *wire;
    uint8_t *buf;
    size_t len;

    (void)state;
    assert_int_equal(st_sketch_to_proto(s, &m), ST_OK);
    /* Encoded without leading or trailing empty buckets. */
    assert_true(m.n_counts > 0 && m.counts[0] != 0 && m.counts[m.n_counts - 1] != 0);
    assert_true(m.n_neg_counts > 0 && m.neg_counts[0] != 0 &&
                m.neg_counts[m.n_neg_counts - 1] != 0);
    assert_int_equal(st_sketch_proto_validate(&m), ST_OK);

    len = strata__v1__sketch__get_packed_size(&m);
    buf = malloc(len);
    assert_non_null(buf);
    assert_int_equal(strata__v1__sketch__pack(&m, buf), len);
    wire = strata__v1__sketch__unpack(NULL, len, buf);
    assert_non_null(wire);
    assert_int_equal(st_sketch_from_proto(wire, &back), ST_OK);
    assert_same_sketch(s, back);
    assert_true(st_sketch_sum(s) == st_sketch_sum(back));

    strata__v1__sketch__free_unpacked(wire, NULL);
    free(buf);
    st_sketch_proto_clear(&m);
    assert_null(m.counts);
    st_sketch_proto_clear(NULL);
    st_sketch_free(s);
    st_sketch_free(back);
    free(v);
}

static void test_proto_empty(void **state)
{
    st_sketch *s = NULL;
    st_sketch *back = NULL;
    Strata__V1__Sketch m;

    (void)state;
    assert_int_equal(st_sketch_new(0, &s), ST_OK);
    assert_int_equal(st_sketch_to_proto(s, &m), ST_OK);
    assert_int_equal(m.n_counts, 0);
    assert_int_equal(m.n_neg_counts, 0);
    assert_int_equal(st_sketch_proto_validate(&m), ST_OK);
    assert_int_equal(st_sketch_from_proto(&m, &back), ST_OK);
    assert_int_equal(st_sketch_count(back), 0);
    assert_true(isnan(st_sketch_quantile(back, 0.5)));
    /* min > max only matters when there are values. */
    m.min = 5;
    m.max = 1;
    assert_int_equal(st_sketch_proto_validate(&m), ST_OK);
    st_sketch_proto_clear(&m);
    st_sketch_free(s);
    st_sketch_free(back);
}

/* Another encoder may pad with empty buckets; the result is the same. */
static void test_proto_padded(void **state)
{
    double *v = make_data(LOGNORMAL, 49, true);
    st_sketch *s = sketch_of(v, N_VALUES, 0);
    st_sketch *back = NULL;
    Strata__V1__Sketch m;
    uint64_t *trimmed;
    size_t n;

    (void)state;
    assert_int_equal(st_sketch_to_proto(s, &m), ST_OK);
    trimmed = m.counts;
    n = m.n_counts;
    m.counts = calloc(n + 8, sizeof(uint64_t));
    assert_non_null(m.counts);
    memcpy(m.counts + 3, trimmed, n * sizeof(uint64_t));
    m.n_counts = n + 8;
    m.offset -= 3;
    free(trimmed);
    assert_int_equal(st_sketch_proto_validate(&m), ST_OK);
    assert_int_equal(st_sketch_from_proto(&m, &back), ST_OK);
    assert_same_sketch(s, back);
    st_sketch_proto_clear(&m);
    st_sketch_free(s);
    st_sketch_free(back);
    free(v);
}

/* Empty buckets that pad a message up to the bucket limit must not count
 * as range: merged into a sketch of lower values they would otherwise push
 * its lowest buckets into a collapse. */
static void test_proto_padding_no_collapse(void **state)
{
    double *v = make_data(LOG_UNIFORM_WIDE, 52, false);
    double *hi = malloc(N_VALUES * sizeof(*hi));
    double *lo = malloc(N_VALUES * sizeof(*lo));
    size_t n_hi = 0;
    size_t n_lo = 0;
    st_sketch *whole = NULL;
    st_sketch *merged = NULL;
    Strata__V1__Sketch m;
    uint64_t *padded = calloc(ST_SKETCH_MAX_BUCKETS, sizeof(uint64_t));

    (void)state;
    assert_non_null(hi);
    assert_non_null(lo);
    assert_non_null(padded);
    /* 1e-9 .. 1e25 takes about 3,900 buckets: no collapse on its own. */
    for (size_t i = 0; i < N_VALUES; i++) {
        if (v[i] >= 1.0 && v[i] < 1e25) {
            hi[n_hi++] = v[i];
        } else if (v[i] < 1.0) {
            lo[n_lo++] = v[i];
        }
    }
    whole = sketch_of(hi, n_hi, 0);
    for (size_t i = 0; i < n_lo; i++) {
        assert_int_equal(st_sketch_insert(whole, lo[i]), ST_OK);
    }
    merged = sketch_of(hi, n_hi, 0);
    assert_int_equal(st_sketch_to_proto(merged, &m), ST_OK);
    assert_true(m.n_counts < ST_SKETCH_MAX_BUCKETS - 100);
    memcpy(padded + 2, m.counts, m.n_counts * sizeof(uint64_t));
    free(m.counts);
    m.counts = padded;
    m.n_counts = ST_SKETCH_MAX_BUCKETS;
    m.offset -= 2;
    st_sketch_reset(merged);
    for (size_t i = 0; i < n_lo; i++) {
        assert_int_equal(st_sketch_insert(merged, lo[i]), ST_OK);
    }
    assert_int_equal(st_sketch_merge_proto(merged, &m), ST_OK);
    assert_same_sketch(whole, merged);
    st_sketch_proto_clear(&m);
    st_sketch_free(whole);
    st_sketch_free(merged);
    free(hi);
    free(lo);
    free(v);
}

/* ---- validation --------------------------------------------------------- */

/* A small valid message with positive, negative and zero values. */
static void valid_message(Strata__V1__Sketch *m)
{
    static const double v[] = {-20, -0.5, 0, 0, 0.003, 1, 1, 2, 900};
    st_sketch *s = sketch_of(v, sizeof(v) / sizeof(v[0]), 0);

    assert_int_equal(st_sketch_to_proto(s, m), ST_OK);
    assert_int_equal(st_sketch_proto_validate(m), ST_OK);
    st_sketch_free(s);
}

/* The message is refused by validate, from_proto and merge_proto, and the
 * merge target is left as it was. */
static void assert_rejected(const Strata__V1__Sketch *m)
{
    st_sketch *out = NULL;
    st_sketch *dst = NULL;

    assert_int_equal(st_sketch_proto_validate(m), ST_EFRAME_SKETCH);
    assert_int_equal(st_sketch_from_proto(m, &out), ST_EFRAME_SKETCH);
    assert_null(out);
    assert_int_equal(st_sketch_new(0, &dst), ST_OK);
    assert_int_equal(st_sketch_insert(dst, 3.0), ST_OK);
    assert_int_equal(st_sketch_merge_proto(dst, m), ST_EFRAME_SKETCH);
    assert_int_equal(st_sketch_count(dst), 1);
    assert_true(st_sketch_quantile(dst, 0.5) == 3.0);
    st_sketch_free(dst);
}

static void test_reject_alpha(void **state)
{
    static const double bad[] = {0, 0.5, 0.7, -0.01, 1e-9};
    Strata__V1__Sketch m;
    double alpha;

    (void)state;
    valid_message(&m);
    alpha = m.alpha;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        m.alpha = bad[i];
        assert_rejected(&m);
    }
    m.alpha = NAN;
    assert_rejected(&m);
    m.alpha = alpha;
    assert_int_equal(st_sketch_proto_validate(&m), ST_OK);
    st_sketch_proto_clear(&m);
}

static void test_reject_non_finite(void **state)
{
    Strata__V1__Sketch m;
    Strata__V1__Sketch bad;

    (void)state;
    valid_message(&m);
    bad = m;
    bad.sum = INFINITY;
    assert_rejected(&bad);
    bad = m;
    bad.sum = NAN;
    assert_rejected(&bad);
    bad = m;
    bad.min = -INFINITY;
    assert_rejected(&bad);
    bad = m;
    bad.min = NAN;
    assert_rejected(&bad);
    bad = m;
    bad.max = INFINITY;
    assert_rejected(&bad);
    bad = m;
    bad.max = NAN;
    assert_rejected(&bad);
    st_sketch_proto_clear(&m);
}

static void test_reject_min_above_max(void **state)
{
    Strata__V1__Sketch m;
    Strata__V1__Sketch bad;

    (void)state;
    valid_message(&m);
    bad = m;
    bad.min = m.max;
    bad.max = m.min;
    assert_rejected(&bad);
    st_sketch_proto_clear(&m);
}

static void test_reject_count_mismatch(void **state)
{
    Strata__V1__Sketch m;
    Strata__V1__Sketch bad;

    (void)state;
    valid_message(&m);
    bad = m;
    bad.count = m.count + 1;
    assert_rejected(&bad);
    bad.count = m.count - 1;
    assert_rejected(&bad);
    bad = m;
    bad.zero_count = m.zero_count + 1;
    assert_rejected(&bad);
    st_sketch_proto_clear(&m);
}

static void test_reject_count_overflow(void **state)
{
    uint64_t wraps[] = {UINT64_MAX, 2};
    uint64_t one[] = {1};
    Strata__V1__Sketch m = STRATA__V1__SKETCH__INIT;

    (void)state;
    m.alpha = ST_SKETCH_ALPHA;
    m.min = 1;
    m.max = 1.1;
    /* UINT64_MAX + 2 wraps to 1, which would equal count. */
    m.counts = wraps;
    m.n_counts = 2;
    m.count = 1;
    assert_rejected(&m);
    /* The wrap can also come from zero_count. */
    m.counts = one;
    m.n_counts = 1;
    m.zero_count = UINT64_MAX;
    m.count = 0;
    assert_rejected(&m);
    m.zero_count = UINT64_MAX - 1;
    m.count = UINT64_MAX;
    assert_int_equal(st_sketch_proto_validate(&m), ST_OK);
}

static void test_reject_too_many_buckets(void **state)
{
    size_t n = ST_SKETCH_MAX_BUCKETS + 1;
    uint64_t *counts = malloc(n * sizeof(*counts));
    Strata__V1__Sketch m = STRATA__V1__SKETCH__INIT;

    (void)state;
    assert_non_null(counts);
    for (size_t i = 0; i < n; i++) {
        counts[i] = 1;
    }
    m.alpha = ST_SKETCH_ALPHA;
    m.min = 0.001;
    m.max = 1e30;
    m.offset = -300;
    m.counts = counts;
    m.n_counts = n;
    m.count = n;
    assert_rejected(&m);
    /* Exactly the limit is fine. */
    m.n_counts = n - 1;
    m.count = n - 1;
    assert_int_equal(st_sketch_proto_validate(&m), ST_OK);

    /* Same for the negative side. */
    m.counts = NULL;
    m.n_counts = 0;
    m.neg_offset = -300;
    m.neg_counts = counts;
    m.n_neg_counts = n;
    m.count = n;
    m.min = -1e30;
    m.max = -0.001;
    assert_rejected(&m);
    m.n_neg_counts = n - 1;
    m.count = n - 1;
    assert_int_equal(st_sketch_proto_validate(&m), ST_OK);
    free(counts);
}

/* The offset of a sketch holding only v, on the side of v's sign. */
static int32_t offset_of(double v)
{
    st_sketch *s = sketch_of(&v, 1, 0);
    Strata__V1__Sketch m;
    int32_t off;

    assert_int_equal(st_sketch_to_proto(s, &m), ST_OK);
    off = v > 0 ? m.offset : m.neg_offset;
    st_sketch_proto_clear(&m);
    st_sketch_free(s);
    return off;
}

static void test_reject_offsets(void **state)
{
    uint64_t counts[4] = {1, 1, 1, 1};
    int32_t lowest = offset_of(ST_SKETCH_MIN_VALUE);
    int32_t highest = offset_of(DBL_MAX);
    Strata__V1__Sketch m = STRATA__V1__SKETCH__INIT;

    (void)state;
    assert_int_equal(offset_of(-DBL_MAX), highest);
    m.alpha = ST_SKETCH_ALPHA;
    m.min = 1;
    m.max = 2;
    m.count = 4;
    m.counts = counts;
    m.n_counts = 4;

    /* The whole indexable range is accepted, one more bucket either way is not. */
    m.offset = lowest;
    assert_int_equal(st_sketch_proto_validate(&m), ST_OK);
    m.offset = lowest - 1;
    assert_rejected(&m);
    m.offset = highest - 3;
    assert_int_equal(st_sketch_proto_validate(&m), ST_OK);
    m.offset = highest - 2;
    assert_rejected(&m);
    /* offset + length past INT32_MAX. */
    m.offset = INT32_MAX - 1;
    assert_rejected(&m);
    m.offset = INT32_MIN;
    assert_rejected(&m);

    m.counts = NULL;
    m.n_counts = 0;
    m.neg_counts = counts;
    m.n_neg_counts = 4;
    m.min = -2;
    m.max = -1;
    m.neg_offset = lowest;
    assert_int_equal(st_sketch_proto_validate(&m), ST_OK);
    m.neg_offset = lowest - 1;
    assert_rejected(&m);
    m.neg_offset = INT32_MAX - 2;
    assert_rejected(&m);
}

static void test_merge_proto_matches_merge(void **state)
{
    double *v = make_data(UNIFORM, 50, true);
    st_sketch *a = sketch_of(v, N_VALUES / 2, 0);
    st_sketch *b = sketch_of(v + N_VALUES / 2, N_VALUES / 2, 0);
    st_sketch *c = sketch_of(v, N_VALUES / 2, 0);
    Strata__V1__Sketch m;

    (void)state;
    assert_int_equal(st_sketch_merge(a, b), ST_OK);
    assert_int_equal(st_sketch_to_proto(b, &m), ST_OK);
    assert_int_equal(st_sketch_merge_proto(c, &m), ST_OK);
    assert_same_sketch(a, c);
    st_sketch_proto_clear(&m);
    st_sketch_free(a);
    st_sketch_free(b);
    st_sketch_free(c);
    free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uniform),
        cmocka_unit_test(test_exponential),
        cmocka_unit_test(test_lognormal),
        cmocka_unit_test(test_bimodal),
        cmocka_unit_test(test_rank_definition),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_non_finite_insert),
        cmocka_unit_test(test_zeros_and_tiny),
        cmocka_unit_test(test_insert_n_and_reset),
        cmocka_unit_test(test_overflow_refused),
        cmocka_unit_test(test_merge_equals_whole),
        cmocka_unit_test(test_merge_collapsed_equals_whole),
        cmocka_unit_test(test_merge_disjoint_ranges),
        cmocka_unit_test(test_merge_self),
        cmocka_unit_test(test_merge_alpha_mismatch),
        cmocka_unit_test(test_merge_empty),
        cmocka_unit_test(test_merge_proto_matches_merge),
        cmocka_unit_test(test_collapse_keeps_high_quantiles),
        cmocka_unit_test(test_collapse_order_independent),
        cmocka_unit_test(test_proto_round_trip),
        cmocka_unit_test(test_proto_empty),
        cmocka_unit_test(test_proto_padded),
        cmocka_unit_test(test_proto_padding_no_collapse),
        cmocka_unit_test(test_reject_alpha),
        cmocka_unit_test(test_reject_non_finite),
        cmocka_unit_test(test_reject_min_above_max),
        cmocka_unit_test(test_reject_count_mismatch),
        cmocka_unit_test(test_reject_count_overflow),
        cmocka_unit_test(test_reject_too_many_buckets),
        cmocka_unit_test(test_reject_offsets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
