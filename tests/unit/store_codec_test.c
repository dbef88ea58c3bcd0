/* The store's column codec: random raw blocks and rollup blocks survive
 * encode and decode bit for bit (edge values, negative deltas, irregular
 * timestamps, gaps, sketches), columns take their smallest mode, and
 * corrupt values are refused. A fresh entry's end read off its wire bytes
 * is the end of the block it unpacks into. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "err.h"
#include "frame.h"
#include "store_codec.h"
#include "store_internal.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXB 64
#define MAXP 200

static uint64_t rng = 0x243f6a8885a308d3ULL;

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static const double edge[] = {0.0,  1.0,     -1.0,    DBL_MAX, -DBL_MAX, DBL_MIN,
                              -0.0, 1e-300,  123.456, 0.1,     4.9e-324, 9007199254740993.0,
                              1e15, -2.5e-7, 65536.0, -3.0,    1.0 / 3.0};

static double rnd_double(void)
{
    switch (rnd() % 4) {
    case 0:
        return edge[rnd() % (sizeof(edge) / sizeof(edge[0]))];
    case 1:
        return (double)((int64_t)(rnd() % 2000) - 1000);
    case 2:
        return (double)(rnd() % 100000) / 10000.0;
    default: {
        double d;
        uint64_t u = rnd();
        memcpy(&d, &u, sizeof(d));
        return isfinite(d) ? d : 1.5;
    }
    }
}

static int64_t rnd_int(void)
{
    static const int64_t e[] = {0, 1, -1, INT64_MAX / 4, INT64_MIN / 4, 1000000007};
    return rnd() % 3 == 0 ? e[rnd() % 6] : (int64_t)(rnd() % 200) - 100;
}

static Strata__V1__Sketch *rnd_sketch(void)
{
    Strata__V1__Sketch *s = calloc(1, sizeof(*s));
    strata__v1__sketch__init(s);
    s->alpha = rnd() % 4 ? 0.01 : 0.02;
    s->count = rnd() % 1000;
    s->sum = rnd_double();
    s->min = rnd_double();
    s->max = rnd_double();
    s->zero_count = rnd() % 3;
    s->offset = (int32_t)(rnd() % 400) - 200;
    s->n_counts = rnd() % 12;
    s->counts = calloc(s->n_counts + 1, sizeof(uint64_t));
    for (size_t i = 0; i < s->n_counts; i++) {
        s->counts[i] = rnd() % 5 ? rnd() % 4 : rnd();
    }
    s->neg_offset = -(int32_t)(rnd() % 50);
    s->n_neg_counts = rnd() % 3;
    s->neg_counts = calloc(s->n_neg_counts + 1, sizeof(uint64_t));
    for (size_t i = 0; i < s->n_neg_counts; i++) {
        s->neg_counts[i] = rnd() % 7;
    }
    return s;
}

/* kind: 0 ivalues, 1 values (+ mins/maxs sometimes), 2 sketches. Blocks
 * are back to back, with a gap, overlapping, or irregular. */
static void make_blocks(Strata__V1__Series **b, size_t n, int kind)
{
    int64_t t = 1700000000000LL + (int64_t)(rnd() % 1000);
    uint32_t iv = rnd() % 3 ? 1000 : 250;
    int32_t scale = (int32_t)(rnd() % 5) - 1;
    for (size_t i = 0; i < n; i++) {
        Strata__V1__Series *s = calloc(1, sizeof(*s));
        size_t np = 1 + rnd() % (rnd() % 4 ? 12 : MAXP);
        strata__v1__series__init(s);
        if (rnd() % 5 == 0) {
            t += (int64_t)(rnd() % 100000); /* a gap */
        } else if (rnd() % 9 == 0) {
            t -= (int64_t)(rnd() % 5000); /* overlap or irregular */
        }
        if (rnd() % 11 == 0) {
            iv = 1 + rnd() % 5000;
        }
        if (rnd() % 13 == 0) {
            scale = (int32_t)(rnd() % 7) - 3;
        }
        s->start_unix_ms = t;
        s->interval_ms = iv;
        if (kind == 0) {
            s->scale = scale;
            s->n_ivalues = np;
            s->ivalues = calloc(np, sizeof(int64_t));
            for (size_t p = 0; p < np; p++) {
                s->ivalues[p] = rnd_int();
            }
        } else if (kind == 1) {
            bool mm = rnd() % 2;
            s->n_values = np;
            s->values = calloc(np, sizeof(double));
            s->mins = calloc(np, sizeof(double));
            s->maxs = calloc(np, sizeof(double));
            for (size_t p = 0; p < np; p++) {
                s->values[p] = rnd_double();
                s->mins[p] = rnd() % 2 ? s->values[p] : rnd_double();
                s->maxs[p] = rnd_double();
            }
            s->n_mins = mm ? np : 0;
            s->n_maxs = mm ? np : 0;
        } else {
            s->n_sketches = np;
            s->sketches = calloc(np, sizeof(*s->sketches));
            for (size_t p = 0; p < np; p++) {
                s->sketches[p] = rnd_sketch();
            }
        }
        b[i] = s;
        t += (int64_t)iv * (int64_t)np;
    }
}

static void free_blocks(Strata__V1__Series **b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < b[i]->n_sketches; k++) {
            free(b[i]->sketches[k]->counts);
            free(b[i]->sketches[k]->neg_counts);
            free(b[i]->sketches[k]);
        }
        free(b[i]->sketches);
        free(b[i]->ivalues);
        free(b[i]->values);
        free(b[i]->mins);
        free(b[i]->maxs);
        free(b[i]);
    }
}

static bool same_bits(double a, double b)
{
    return memcmp(&a, &b, sizeof(a)) == 0;
}

static void assert_same_sketch(const Strata__V1__Sketch *a, const Strata__V1__Sketch *b)
{
    assert_true(same_bits(a->alpha, b->alpha) && same_bits(a->sum, b->sum));
    assert_true(same_bits(a->min, b->min) && same_bits(a->max, b->max));
    assert_true(a->count == b->count && a->zero_count == b->zero_count);
    assert_true(a->offset == b->offset && a->neg_offset == b->neg_offset);
    assert_int_equal(a->n_counts, b->n_counts);
    assert_int_equal(a->n_neg_counts, b->n_neg_counts);
    assert_memory_equal(a->counts, b->counts, a->n_counts * sizeof(uint64_t));
    assert_memory_equal(a->neg_counts, b->neg_counts, a->n_neg_counts * sizeof(uint64_t));
}

/* One point flattened: time, value, min, max, sketch. */
struct pt {
    int64_t t;
    double v;
    double lo;
    double hi;
    const Strata__V1__Sketch *sk;
};

static size_t flatten(Strata__V1__Series *const *b, size_t n, struct pt *out)
{
    size_t k = 0;
    double vals[ST_FRAME_MAX_POINTS];
    for (size_t i = 0; i < n; i++) {
        size_t np = st_series_npoints(b[i]);
        assert_true(np <= ST_FRAME_MAX_POINTS);
        if (b[i]->n_sketches == 0) {
            st_series_values(b[i], vals);
        }
        for (size_t p = 0; p < np; p++) {
            struct pt *x = &out[k++];
            x->t = b[i]->start_unix_ms + (int64_t)p * b[i]->interval_ms;
            x->v = b[i]->n_sketches ? 0 : vals[p];
            x->lo = b[i]->n_mins ? b[i]->mins[p] : x->v;
            x->hi = b[i]->n_maxs ? b[i]->maxs[p] : x->v;
            x->sk = b[i]->n_sketches ? b[i]->sketches[p] : NULL;
        }
    }
    return k;
}

static void roundtrip_raw(int kind, size_t n)
{
    Strata__V1__Series *b[MAXB];
    static struct pt want[MAXB * MAXP];
    static struct pt got[MAXB * MAXP];
    st_zctx *z;
    st_buf out;
    st_cdec d;
    size_t nw;
    size_t ng;
    assert_int_equal(st_zctx_new(&z), ST_OK);
    st_buf_init(&out, 1u << 26);
    make_blocks(b, n, kind);
    assert_int_equal(st_codec_encode_raw(z, (const Strata__V1__Series *const *)b, n, &out), ST_OK);
    assert_true(st_codec_is_raw(out.data, out.len));
    assert_int_equal(st_codec_decode_raw(out.data, out.len, &d), ST_OK);
    assert_true(d.nruns >= 1 && d.nruns <= n);
    nw = flatten(b, n, want);
    ng = flatten(d.runs, d.nruns, got);
    assert_int_equal(nw, ng);
    for (size_t i = 0; i < nw; i++) {
        assert_true(want[i].t == got[i].t);
        assert_true(same_bits(want[i].v, got[i].v));
        assert_true(same_bits(want[i].lo, got[i].lo));
        assert_true(same_bits(want[i].hi, got[i].hi));
        if (want[i].sk != NULL) {
            assert_same_sketch(want[i].sk, got[i].sk);
        }
    }
    {
        int64_t end = 0;
        int64_t max_end = INT64_MIN;
        for (size_t i = 0; i < n; i++) {
            int64_t e =
                b[i]->start_unix_ms + (int64_t)b[i]->interval_ms * (int64_t)st_series_npoints(b[i]);
            max_end = e > max_end ? e : max_end;
        }
        assert_int_equal(st_codec_raw_end(out.data, out.len, &end), ST_OK);
        assert_true(end == max_end);
    }
    /* every truncation and a flipped byte are refused or decode cleanly */
    for (size_t cut = 0; cut < out.len; cut += 1 + out.len / 40) {
        st_cdec bad;
        if (st_codec_decode_raw(out.data, cut, &bad) == ST_OK) {
            st_cdec_clear(&bad);
        }
    }
    st_cdec_clear(&d);
    free_blocks(b, n);
    st_buf_free(&out);
    st_zctx_free(z);
}

static void test_raw_roundtrip(void **state)
{
    (void)state;
    for (int iter = 0; iter < 300; iter++) {
        roundtrip_raw(iter % 3, 1 + rnd() % MAXB);
    }
}

/* A regular hour of 10-point blocks becomes one run. */
static void test_regular_hour_is_one_run(void **state)
{
    Strata__V1__Series *b[360];
    st_zctx *z;
    st_buf out;
    st_cdec d;
    (void)state;
    for (int i = 0; i < 360; i++) {
        b[i] = calloc(1, sizeof(*b[i]));
        strata__v1__series__init(b[i]);
        b[i]->start_unix_ms = 1700000000000LL + i * 10000LL;
        b[i]->interval_ms = 1000;
        b[i]->n_ivalues = 10;
        b[i]->ivalues = calloc(10, sizeof(int64_t));
        for (int p = 0; p < 10; p++) {
            b[i]->ivalues[p] = (int64_t)(rnd() % 64) - (p ? 32 : 0);
        }
    }
    assert_int_equal(st_zctx_new(&z), ST_OK);
    st_buf_init(&out, 1u << 26);
    assert_int_equal(st_codec_encode_raw(z, (const Strata__V1__Series *const *)b, 360, &out),
                     ST_OK);
    assert_int_equal(st_codec_decode_raw(out.data, out.len, &d), ST_OK);
    assert_int_equal(d.nruns, 1);
    assert_int_equal(st_series_npoints(d.runs[0]), 3600);
    assert_true(out.len < 3600 * 2);
    st_cdec_clear(&d);
    free_blocks(b, 360);
    st_buf_free(&out);
    st_zctx_free(z);
}

static void roundtrip_rollup(bool sc)
{
    Strata__V1__RollupBlock b = STRATA__V1__ROLLUP_BLOCK__INIT;
    Strata__V1__RollupRow rows[360];
    Strata__V1__RollupRow *rp[360];
    size_t n = 1 + rnd() % 360;
    bool dist = rnd() % 3 == 0;
    st_zctx *z;
    st_buf out;
    st_cdec d;
    b.start_unix_ms = 1700000000000LL;
    b.bucket_ms = 10000;
    b.rows = rp;
    b.n_rows = n;
    for (size_t i = 0; i < n; i++) {
        strata__v1__rollup_row__init(&rows[i]);
        rp[i] = &rows[i];
        if (rnd() % 7 == 0) {
            continue; /* an empty bucket */
        }
        rows[i].count = 1 + rnd() % 100;
        rows[i].sum = rnd_double();
        rows[i].min = rnd_double();
        rows[i].max = rnd_double();
        rows[i].first = rnd_double();
        rows[i].last = rnd_double();
        if (dist) {
            rows[i].sketch = rnd_sketch();
        }
    }
    assert_int_equal(st_zctx_new(&z), ST_OK);
    st_buf_init(&out, 1u << 26);
    assert_int_equal(st_codec_encode_rollup(z, &b, sc, &out), ST_OK);
    assert_true(st_codec_is_rollup(out.data, out.len));
    assert_int_equal(st_codec_decode_rollup(out.data, out.len, &d), ST_OK);
    assert_true(d.blk->start_unix_ms == b.start_unix_ms && d.blk->bucket_ms == b.bucket_ms);
    assert_int_equal(d.blk->n_rows, n);
    for (size_t i = 0; i < n; i++) {
        const Strata__V1__RollupRow *g = d.blk->rows[i];
        assert_true(g->count == rows[i].count && same_bits(g->sum, rows[i].sum));
        if (rows[i].count > 0 && !sc) {
            assert_true(same_bits(g->min, rows[i].min) && same_bits(g->max, rows[i].max));
            assert_true(same_bits(g->first, rows[i].first) && same_bits(g->last, rows[i].last));
        } else if (rows[i].count > 0) {
            assert_true(isnan(g->min) && isnan(g->max) && isnan(g->first) && isnan(g->last));
        }
        assert_true((g->sketch == NULL) == (rows[i].sketch == NULL));
        if (g->sketch != NULL) {
            assert_same_sketch(g->sketch, rows[i].sketch);
            free(rows[i].sketch->counts);
            free(rows[i].sketch->neg_counts);
            free(rows[i].sketch);
        }
    }
    for (size_t cut = 0; cut < out.len; cut += 1 + out.len / 40) {
        st_cdec bad;
        if (st_codec_decode_rollup(out.data, cut, &bad) == ST_OK) {
            st_cdec_clear(&bad);
        }
    }
    st_cdec_clear(&d);
    st_buf_free(&out);
    st_zctx_free(z);
}

static void test_rollup_roundtrip(void **state)
{
    (void)state;
    for (int iter = 0; iter < 200; iter++) {
        roundtrip_rollup(iter % 4 == 0);
    }
}

/* One regular run of n one-point blocks with the values v; encodes it,
 * checks that it decodes to the same values and returns the bytes. */
static size_t encode_column(const int64_t *v, size_t n)
{
    Strata__V1__Series **b = calloc(n, sizeof(*b));
    st_zctx *z;
    st_buf out;
    st_cdec d;
    size_t len;
    assert_non_null(b);
    for (size_t i = 0; i < n; i++) {
        b[i] = calloc(1, sizeof(*b[i]));
        assert_non_null(b[i]);
        strata__v1__series__init(b[i]);
        b[i]->start_unix_ms = 1700000000000LL + (int64_t)i * 1000;
        b[i]->interval_ms = 1000;
        b[i]->n_ivalues = 1;
        b[i]->ivalues = calloc(1, sizeof(int64_t));
        assert_non_null(b[i]->ivalues);
        b[i]->ivalues[0] = v[i];
    }
    assert_int_equal(st_zctx_new(&z), ST_OK);
    st_buf_init(&out, 1u << 26);
    assert_int_equal(st_codec_encode_raw(z, (const Strata__V1__Series *const *)b, n, &out), ST_OK);
    assert_int_equal(st_codec_decode_raw(out.data, out.len, &d), ST_OK);
    assert_int_equal(d.nruns, 1);
    assert_int_equal(d.runs[0]->n_ivalues, n);
    for (size_t i = 0, acc = 0; i < n; i++) {
        acc += (uint64_t)d.runs[0]->ivalues[i]; /* deltas within the run */
        assert_true((int64_t)acc == v[i]);
    }
    len = out.len;
    st_cdec_clear(&d);
    free_blocks(b, n);
    free(b);
    st_buf_free(&out);
    st_zctx_free(z);
    return len;
}

/* Integer columns take the mode zstd stores smallest: noise in a band is
 * bit-packed (6 bits a value for 64 levels, where deltas as varints cost
 * 7 and more), multiples of a page are divided by it first, a constant
 * column costs nearly nothing, and the extremes of int64 survive at 64
 * bits a value. */
static void test_columns_pack(void **state)
{
    enum { N = 3600 };
    int64_t *v = malloc(N * sizeof(*v));
    size_t len;
    (void)state;
    assert_non_null(v);
    for (size_t i = 0; i < N; i++) {
        v[i] = 50 + (int64_t)(rnd() % 64); /* a counter's increments */
    }
    len = encode_column(v, N);
    assert_true(len < N * 6 / 8 + 150);
    for (size_t i = 0; i < N; i++) {
        v[i] = 2000 + (int64_t)(rnd() % 500); /* a gauge at 4 decimals */
    }
    len = encode_column(v, N);
    assert_true(len < N * 9 / 8 + 150);
    for (size_t i = 0; i < N; i++) {
        /* memory in pages: 9 bits of 21 after dividing by their divisor */
        v[i] = (INT64_C(1) << 34) + 4096 * (int64_t)(rnd() % 500);
    }
    len = encode_column(v, N);
    assert_true(len < N * 9 / 8 + 150);
    for (size_t i = 0; i < N; i++) {
        v[i] = -1000000 + 1024 * (int64_t)(rnd() % 8); /* varints of kB in bytes */
    }
    len = encode_column(v, N);
    assert_true(len < N * 3 / 8 + 150);
    for (size_t i = 0; i < N; i++) {
        v[i] = 0; /* fewer bytes than values: a reader must not refuse it */
    }
    len = encode_column(v, N);
    assert_true(len < 100);
    for (size_t i = 0; i < N; i++) {
        v[i] = i % 3 == 0 ? INT64_MIN : i % 3 == 1 ? INT64_MAX : (int64_t)rnd();
    }
    (void)encode_column(v, N);
    free(v);
}

/* Sums of decimals, rounded by their additions, are written as decimals
 * and the few units in the last place they are off: bit for bit, and in
 * a fraction of the XOR planes' bytes. Values near no decimal (-0.0,
 * NaN, infinities, subnormals) fall back to the planes. */
static void roundtrip_sums(bool odd, size_t *len)
{
    enum { N = 1440 };
    Strata__V1__RollupBlock b = STRATA__V1__ROLLUP_BLOCK__INIT;
    Strata__V1__RollupRow *rows = calloc(N, sizeof(*rows));
    Strata__V1__RollupRow **rp = calloc(N, sizeof(*rp));
    static const double odd_values[] = {-0.0, NAN, INFINITY, -INFINITY, 4.9e-324, 1e300};
    st_zctx *z;
    st_buf out;
    st_cdec d;
    assert_true(rows != NULL && rp != NULL);
    b.start_unix_ms = 1700000000000LL;
    b.bucket_ms = 60000;
    b.rows = rp;
    b.n_rows = N;
    for (size_t i = 0; i < N; i++) {
        strata__v1__rollup_row__init(&rows[i]);
        rp[i] = &rows[i];
        rows[i].count = 60;
        rows[i].min = INFINITY;
        rows[i].max = -INFINITY;
        for (int k = 0; k < 60; k++) {
            double x = (double)(2000 + (int64_t)(rnd() % 500)) / 1e4;
            rows[i].sum += x;
            rows[i].min = fmin(rows[i].min, x);
            rows[i].max = fmax(rows[i].max, x);
            rows[i].first = k == 0 ? x : rows[i].first;
            rows[i].last = x;
        }
    }
    if (odd) {
        for (size_t i = 0; i < sizeof(odd_values) / sizeof(odd_values[0]); i++) {
            rows[rnd() % N].sum = odd_values[i];
        }
    }
    assert_int_equal(st_zctx_new(&z), ST_OK);
    st_buf_init(&out, 1u << 26);
    assert_int_equal(st_codec_encode_rollup(z, &b, false, &out), ST_OK);
    assert_int_equal(st_codec_decode_rollup(out.data, out.len, &d), ST_OK);
    for (size_t i = 0; i < N; i++) {
        const Strata__V1__RollupRow *g = d.blk->rows[i];
        assert_true(g->count == 60 && same_bits(g->sum, rows[i].sum));
        assert_true(same_bits(g->min, rows[i].min) && same_bits(g->max, rows[i].max));
        assert_true(same_bits(g->first, rows[i].first) && same_bits(g->last, rows[i].last));
    }
    *len = out.len;
    st_cdec_clear(&d);
    st_buf_free(&out);
    st_zctx_free(z);
    free(rows);
    free(rp);
}

static void test_near_decimal_sums(void **state)
{
    size_t near;
    size_t planes;
    (void)state;
    roundtrip_sums(false, &near);
    roundtrip_sums(true, &planes);
    /* 1440 rows of about 50 bits (measured 6.3 bytes): the sums' 12 bits
     * of entropy (14 packed) and their 3 bits of ulps, min and max about
     * 5 each, first and last 9 each; the planes took 10.6 bytes a row */
    assert_true(near < 1440 * 13 / 2);
    assert_true(near + 1440 * 3 < planes);
}

static void test_corrupt_refused(void **state)
{
    static const uint8_t junk[][8] = {{ST_CODEC_RAW, 7, 0, 1, 0},
                                      {ST_CODEC_RAW, 0, 0, 0x7f, 0},
                                      {ST_CODEC_ROLLUP, 1, 0, 20, 1, 2, 3, 4},
                                      {ST_CODEC_RAW, 0, 0, 3, 0xff, 0xff, 0xff, 0xff}};
    st_cdec d;
    (void)state;
    for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
        assert_int_not_equal(st_codec_decode_raw(junk[i], sizeof(junk[i]), &d), ST_OK);
        assert_int_not_equal(st_codec_decode_rollup(junk[i], sizeof(junk[i]), &d), ST_OK);
    }
    /* hand-written (uncompressed) raw values of one run of two integers,
     * bit-packed at 8 bits: the good one decodes; a width of 0 or 65, or
     * fewer bytes than the width needs, is refused */
    {
        static const uint8_t body[] = {1, 0, 1, 0, 2, 0, 0, 0, 0, /* one run of two */
                                       3, 0, 8, 5, 7,             /* packed, min 0, width 8 */
                                       1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0};
        uint8_t v[64] = {ST_CODEC_RAW, 0, 0, sizeof(body)};
        memcpy(v + 4, body, sizeof(body));
        assert_int_equal(st_codec_decode_raw(v, 4 + sizeof(body), &d), ST_OK);
        assert_true(d.runs[0]->n_ivalues == 2 && d.runs[0]->ivalues[0] == 5 &&
                    d.runs[0]->ivalues[1] == 2);
        st_cdec_clear(&d);
        v[4 + 11] = 0;
        assert_int_equal(st_codec_decode_raw(v, 4 + sizeof(body), &d), ST_ECORRUPT);
        v[4 + 11] = 65;
        assert_int_equal(st_codec_decode_raw(v, 4 + sizeof(body), &d), ST_ECORRUPT);
        v[4 + 11] = 16; /* 4 bytes wanted, 2 there */
        assert_int_not_equal(st_codec_decode_raw(v, 4 + sizeof(body), &d), ST_OK);
    }
    /* the same two values in the varint modes entries written before
     * bit-packing use: absolute, delta, offset from the minimum */
    {
        static const uint8_t cols[][5] = {{0, 10, 14}, {1, 10, 4}, {2, 10, 0, 2}};
        static const size_t lens[] = {3, 3, 4};
        for (size_t m = 0; m < 3; m++) {
            static const uint8_t head[] = {1, 0, 1, 0, 2, 0, 0, 0, 0};
            static const uint8_t tail[] = {1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0};
            uint8_t v[64] = {ST_CODEC_RAW, 0, 0, (uint8_t)(sizeof(head) + lens[m] + sizeof(tail))};
            memcpy(v + 4, head, sizeof(head));
            memcpy(v + 4 + sizeof(head), cols[m], lens[m]);
            memcpy(v + 4 + sizeof(head) + lens[m], tail, sizeof(tail));
            assert_int_equal(st_codec_decode_raw(v, 4 + v[3], &d), ST_OK);
            assert_true(d.runs[0]->n_ivalues == 2 && d.runs[0]->ivalues[0] == 5 &&
                        d.runs[0]->ivalues[1] == 2);
            st_cdec_clear(&d);
        }
    }
    /* 64 values in eight bytes (width 1): fewer bytes than values is no
     * sign of corruption */
    {
        static const uint8_t body[] = {1, 0,    1,    0,    64,   0,    0,    0,    0,    3, 0,
                                       1, 0xaa, 0xaa, 0xaa, 0xaa, 0x55, 0x55, 0x55, 0x55, 1, 1,
                                       1, 1,    1,    1,    1,    0,    0,    0,    0,    0};
        uint8_t v[64] = {ST_CODEC_RAW, 0, 0, sizeof(body)};
        int64_t acc = 0;
        memcpy(v + 4, body, sizeof(body));
        assert_int_equal(st_codec_decode_raw(v, 4 + sizeof(body), &d), ST_OK);
        assert_int_equal(d.runs[0]->n_ivalues, 64);
        for (int i = 0; i < 64; i++) {
            acc += d.runs[0]->ivalues[i];
            assert_int_equal(acc, i < 32 ? i % 2 : (i + 1) % 2);
        }
        st_cdec_clear(&d);
    }
    assert_false(st_codec_is_raw("\x30\x01", 2));
    assert_false(st_codec_is_rollup("\x08\x01", 2));
}

/* ---- properties: adversarial columns round-trip, corrupt bodies are
 * refused or decode cleanly (run under ASan and UBSan) ---- */

static double bits_double(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof(d));
    return d;
}

static uint64_t double_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    return u;
}

/* A column of doubles of one of several shapes: decimals, decimals a few
 * ulps off (at and around the near-decimal limit), raw bits (NaN
 * payloads, infinities, subnormals, -0.0), sums of decimals, one odd
 * value among decimals. */
static void rnd_double_column(double *v, size_t n)
{
    static const double p10[] = {1,    10,   100,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8, 1e9,
                                 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18};
    int shape = (int)(rnd() % 6);
    int k = (int)(rnd() % 19);
    int64_t span = (int64_t)1 << (rnd() % 54);
    for (size_t i = 0; i < n; i++) {
        double x = (double)((int64_t)(rnd() % (uint64_t)span) - span / 2) / p10[k];
        switch (shape) {
        case 0:
            v[i] = x;
            break;
        case 1: { /* within and just past NEAR_ULPS (4096) of a decimal */
            int64_t d = (int64_t)(rnd() % 8200) - 4100;
            v[i] = bits_double(double_bits(x) + (uint64_t)d);
            break;
        }
        case 2:
            v[i] = bits_double(rnd());
            break;
        case 3: {
            static const uint64_t odd[] = {0x8000000000000000ull, 0x7ff0000000000000ull,
                                           0xfff0000000000000ull, 0x7ff8000000000001ull,
                                           0xfff4000000000123ull, 0x0000000000000001ull,
                                           0x800fffffffffffffull, 0x7fefffffffffffffull};
            v[i] = rnd() % 50 ? x : bits_double(odd[rnd() % 8]);
            break;
        }
        case 4:
            v[i] = (i > 0 && rnd() % 2 ? v[i - 1] : 0) + x;
            break;
        default:
            v[i] = i > 0 && rnd() % 4 ? v[i - 1] : x; /* runs of one value */
            break;
        }
    }
}

/* A column of integers: full range, extremes, multiples of a step around
 * a base that wraps, constants, small noise. */
static void rnd_int_column(int64_t *v, size_t n)
{
    int shape = (int)(rnd() % 6);
    uint64_t step = rnd() % 3 ? rnd() >> (rnd() % 64) : (uint64_t)1 << (rnd() % 64);
    uint64_t base = rnd();
    uint64_t levels = 1 + (rnd() >> (rnd() % 64));
    for (size_t i = 0; i < n; i++) {
        switch (shape) {
        case 0:
            v[i] = (int64_t)rnd();
            break;
        case 1: {
            static const int64_t e[] = {INT64_MIN,     INT64_MAX,    0, -1, 1,
                                        INT64_MIN + 1, INT64_MAX - 1};
            v[i] = e[rnd() % 7];
            break;
        }
        case 2:
            v[i] = (int64_t)(base + step * (rnd() % levels)); /* may wrap */
            break;
        case 3:
            v[i] = (int64_t)base;
            break;
        case 4:
            v[i] = (int64_t)(base + rnd() % levels);
            break;
        default:
            v[i] = i > 0 ? (int64_t)((uint64_t)v[i - 1] + rnd() % 8) : (int64_t)base;
            break;
        }
    }
}

/* The value with its body stored, not compressed: what a flipped byte
 * must reach to test the column decoders rather than zstd. */
static size_t uncompressed(const st_buf *enc, uint8_t *out, size_t cap)
{
    size_t p = 2;
    uint64_t blen = 0;
    while (enc->data[p] & 0x80) {
        p++;
    }
    p++;
    for (int shift = 0;; shift += 7) {
        blen |= (uint64_t)(enc->data[p] & 0x7f) << shift;
        if (!(enc->data[p++] & 0x80)) {
            break;
        }
    }
    assert_true(p + blen <= cap);
    memcpy(out, enc->data, p);
    out[1] = 0;
    if (enc->data[1] & 1) {
        assert_int_equal(st_zctx_decompress(NULL, enc->data + p, enc->len - p, out + p, blen),
                         ST_OK);
    } else {
        memcpy(out + p, enc->data + p, blen);
    }
    return p + blen;
}

static void mutate_and_decode(const uint8_t *val, size_t len, bool raw, int tries)
{
    uint8_t *m = malloc(len + 16);
    assert_non_null(m);
    for (int t = 0; t < tries; t++) {
        size_t ml = len;
        st_cdec d;
        int rv;
        memcpy(m, val, len);
        switch (rnd() % 4) {
        case 0: /* flip a few bytes of the body */
            for (int f = 0, nf = 1 + (int)(rnd() % 3); f < nf; f++) {
                m[4 + rnd() % (len - 4)] ^= (uint8_t)(1u << (rnd() % 8));
            }
            break;
        case 1:
            m[4 + rnd() % (len - 4)] = (uint8_t)rnd();
            break;
        case 2: { /* an extreme varint or byte somewhere */
            static const uint8_t e[] = {0x00, 0x01, 0x3f, 0x40, 0x41, 0x7f, 0x80, 0xff};
            m[4 + rnd() % (len - 4)] = e[rnd() % 8];
            break;
        }
        default:
            ml = 4 + rnd() % (len - 4); /* truncated: the length no longer matches */
            break;
        }
        rv = raw ? st_codec_decode_raw(m, ml, &d) : st_codec_decode_rollup(m, ml, &d);
        assert_true(rv == ST_OK || rv == ST_ECORRUPT);
        if (rv == ST_OK) {
            st_cdec_clear(&d);
        }
    }
    free(m);
}

/* Doubles through a rollup's five fields, integers through its counts. */
static void test_columns_property(void **state)
{
    enum { N = 4096 };
    Strata__V1__RollupRow *rows = calloc(N, sizeof(*rows));
    Strata__V1__RollupRow **rp = calloc(N, sizeof(*rp));
    double *col = malloc(N * sizeof(*col));
    int64_t *ic = malloc(N * sizeof(*ic));
    uint8_t *plain = malloc(ST_CODEC_MAX_BODY + 64);
    st_zctx *z;
    st_buf out;
    (void)state;
    assert_true(rows && rp && col && ic && plain);
    assert_int_equal(st_zctx_new(&z), ST_OK);
    st_buf_init(&out, 1u << 26);
    for (int iter = 0; iter < 400; iter++) {
        Strata__V1__RollupBlock b = STRATA__V1__ROLLUP_BLOCK__INIT;
        size_t n = rnd() % 3 ? 1 + rnd() % 64 : 1 + rnd() % N;
        st_cdec d;
        size_t pl;
        b.start_unix_ms = 1700000000000LL;
        b.bucket_ms = 10000;
        b.rows = rp;
        b.n_rows = n;
        rnd_int_column(ic, n);
        for (size_t i = 0; i < n; i++) {
            strata__v1__rollup_row__init(&rows[i]);
            rp[i] = &rows[i];
            rows[i].count = ic[i] != 0 ? (uint64_t)ic[i] : 1;
        }
        for (int f = 0; f < 5; f++) {
            rnd_double_column(col, n);
            for (size_t i = 0; i < n; i++) {
                double *field[] = {&rows[i].sum, &rows[i].min, &rows[i].max, &rows[i].first,
                                   &rows[i].last};
                *field[f] = col[i];
            }
        }
        assert_int_equal(st_codec_encode_rollup(z, &b, false, &out), ST_OK);
        assert_int_equal(st_codec_decode_rollup(out.data, out.len, &d), ST_OK);
        assert_int_equal(d.blk->n_rows, n);
        for (size_t i = 0; i < n; i++) {
            const Strata__V1__RollupRow *g = d.blk->rows[i];
            assert_true(g->count == rows[i].count);
            if (!same_bits(g->sum, rows[i].sum) || !same_bits(g->min, rows[i].min) ||
                !same_bits(g->max, rows[i].max) || !same_bits(g->first, rows[i].first) ||
                !same_bits(g->last, rows[i].last)) {
                fail_msg("iter %d row %zu: %a %a %a %a %a", iter, i, rows[i].sum, rows[i].min,
                         rows[i].max, rows[i].first, rows[i].last);
            }
        }
        st_cdec_clear(&d);
        pl = uncompressed(&out, plain, ST_CODEC_MAX_BODY + 64);
        assert_int_equal(st_codec_decode_rollup(plain, pl, &d), ST_OK);
        st_cdec_clear(&d);
        mutate_and_decode(plain, pl, false, 200);
    }
    st_buf_free(&out);
    st_zctx_free(z);
    free(rows);
    free(rp);
    free(col);
    free(ic);
    free(plain);
}

/* Integer columns through raw ivalues (absolute values, deltas within a
 * block), doubles through values, mins and maxs. */
static void test_raw_columns_property(void **state)
{
    enum { N = ST_FRAME_MAX_POINTS };
    Strata__V1__Series s[3];
    const Strata__V1__Series *bp[3];
    int64_t *v = malloc(N * sizeof(*v));
    int64_t *dl = malloc(N * sizeof(*dl));
    double *dv[3];
    uint8_t *plain = malloc(ST_CODEC_MAX_BODY + 64);
    st_zctx *z;
    st_buf out;
    (void)state;
    for (int c = 0; c < 3; c++) {
        dv[c] = malloc(N * sizeof(double));
        assert_non_null(dv[c]);
    }
    assert_true(v && dl && plain);
    assert_int_equal(st_zctx_new(&z), ST_OK);
    st_buf_init(&out, 1u << 26);
    for (int iter = 0; iter < 400; iter++) {
        size_t n = rnd() % 3 ? 1 + rnd() % 64 : 1 + rnd() % N;
        st_cdec d;
        size_t pl;
        rnd_int_column(v, n);
        for (size_t i = 0; i < n; i++) {
            dl[i] = i ? (int64_t)((uint64_t)v[i] - (uint64_t)v[i - 1]) : v[0];
        }
        for (int c = 0; c < 3; c++) {
            rnd_double_column(dv[c], n);
            strata__v1__series__init(&s[c]);
            bp[c] = &s[c];
        }
        s[0].start_unix_ms = 1700000000000LL;
        s[0].interval_ms = 1000;
        s[0].n_ivalues = n;
        s[0].ivalues = dl;
        s[1].start_unix_ms = s[0].start_unix_ms + 1000 * (int64_t)n + 5000;
        s[1].interval_ms = 1000;
        s[1].n_values = s[1].n_mins = s[1].n_maxs = n;
        s[1].values = dv[0];
        s[1].mins = dv[1];
        s[1].maxs = dv[2];
        assert_int_equal(st_codec_encode_raw(z, bp, 2, &out), ST_OK);
        assert_int_equal(st_codec_decode_raw(out.data, out.len, &d), ST_OK);
        assert_int_equal(d.nruns, 2);
        assert_int_equal(d.runs[0]->n_ivalues, n);
        assert_int_equal(d.runs[1]->n_values, n);
        for (size_t i = 0, acc = 0; i < n; i++) {
            acc += (uint64_t)d.runs[0]->ivalues[i];
            if ((int64_t)acc != v[i]) {
                fail_msg("iter %d value %zu: %lld, want %lld", iter, i, (long long)acc,
                         (long long)v[i]);
            }
            assert_true(same_bits(d.runs[1]->values[i], dv[0][i]));
            assert_true(same_bits(d.runs[1]->mins[i], dv[1][i]));
            assert_true(same_bits(d.runs[1]->maxs[i], dv[2][i]));
        }
        st_cdec_clear(&d);
        pl = uncompressed(&out, plain, ST_CODEC_MAX_BODY + 64);
        assert_int_equal(st_codec_decode_raw(plain, pl, &d), ST_OK);
        st_cdec_clear(&d);
        mutate_and_decode(plain, pl, true, 200);
    }
    st_buf_free(&out);
    st_zctx_free(z);
    free(v);
    free(dl);
    for (int c = 0; c < 3; c++) {
        free(dv[c]);
    }
    free(plain);
}

/* The end of a fresh entry (a packed Series) as the seek reads it, off its
 * wire bytes, against the end of the block protobuf-c unpacks: random
 * blocks of every column, with the fields a seek skips, then the same
 * bytes damaged (where protobuf-c still unpacks them, the two agree). */
static void test_fresh_entry_end(void **state)
{
    enum { N = 64 };
    int64_t iv[N];
    double dv[N];
    Strata__V1__Sketch sk[N];
    Strata__V1__Sketch *skp[N];
    uint64_t counts[3] = {1, 2, 3};
    Strata__V1__Label lab = STRATA__V1__LABEL__INIT;
    Strata__V1__Label *labp = &lab;
    uint8_t *buf = malloc(1u << 16);
    uint8_t *m = malloc(1u << 16);
    size_t agreed = 0;
    (void)state;
    assert_true(buf && m);
    lab.key = "host";
    lab.value = "db-1";
    for (int i = 0; i < N; i++) {
        strata__v1__sketch__init(&sk[i]);
        sk[i].alpha = 0.01;
        sk[i].count = 6;
        sk[i].n_counts = 3;
        sk[i].counts = counts;
        skp[i] = &sk[i];
    }
    for (int iter = 0; iter < 3000; iter++) {
        Strata__V1__Series s = STRATA__V1__SERIES__INIT;
        Strata__V1__Series *u;
        size_t n = rnd() % (N + 1);
        size_t len;
        MDB_val v;
        for (size_t i = 0; i < n; i++) {
            iv[i] = (int64_t)(rnd() % 2000001) - 1000000;
            dv[i] = rnd_double();
        }
        s.start_unix_ms = (int64_t)(rnd() % 4000000000000ULL) - 1000000000000LL;
        s.interval_ms = rnd() % 4 ? (uint32_t)(rnd() % 60001) : (uint32_t)rnd();
        if (rnd() % 2) { /* the fields fresh entries may carry and a seek skips */
            s.name = "http.server.duration";
            s.unit = "s";
            s.n_labels = 1;
            s.labels = &labp;
            s.scale = (int32_t)(rnd() % 7) - 3;
            s.kind = STRATA__V1__KIND__GAUGE;
        }
        switch (rnd() % 4) {
        case 0:
            s.n_ivalues = n;
            s.ivalues = iv;
            break;
        case 1:
            s.n_values = s.n_mins = s.n_maxs = n;
            s.values = s.mins = s.maxs = dv;
            break;
        case 2:
            s.n_sketches = n;
            s.sketches = skp;
            break;
        default: /* two columns: the integer one counts */
            s.n_ivalues = n;
            s.ivalues = iv;
            s.n_values = n / 2;
            s.values = dv;
            break;
        }
        len = strata__v1__series__pack(&s, buf);
        v = (MDB_val){len, buf};
        u = strata__v1__series__unpack(NULL, len, buf);
        assert_non_null(u);
        assert_int_equal(st_store_entry_end(&v), st_store_block_end(u));
        strata__v1__series__free_unpacked(u, NULL);
        for (int t = 0; len > 0 && t < 8; t++) {
            size_t ml = rnd() % 3 ? len : rnd() % len;
            int64_t end;
            memcpy(m, buf, len);
            m[rnd() % len] ^= (uint8_t)(1u << (rnd() % 8));
            v = (MDB_val){ml, m};
            end = st_store_entry_end(&v); /* never reads past ml (ASan) */
            if ((u = strata__v1__series__unpack(NULL, ml, m)) != NULL) {
                assert_int_equal(end, st_store_block_end(u));
                strata__v1__series__free_unpacked(u, NULL);
                agreed++;
            }
        }
    }
    assert_true(agreed > 1000); /* the damaged bytes tried that still unpack */
    free(buf);
    free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_raw_roundtrip),     cmocka_unit_test(test_regular_hour_is_one_run),
        cmocka_unit_test(test_rollup_roundtrip),  cmocka_unit_test(test_columns_pack),
        cmocka_unit_test(test_near_decimal_sums), cmocka_unit_test(test_corrupt_refused),
        cmocka_unit_test(test_columns_property),  cmocka_unit_test(test_raw_columns_property),
        cmocka_unit_test(test_fresh_entry_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
