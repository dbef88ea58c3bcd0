/* Column codec of the store's compacted entries (see store_codec.h).
 * Integers are zigzag varints (absolute, delta or offset from the minimum)
 * or bit-packed offsets, whichever zstd is estimated to store smallest;
 * doubles that are decimals (or nearly: sums of them) are written as
 * integers, others XORed with the previous one and written byte plane by
 * byte plane, so that zstd sees the long runs of equal sign, exponent and
 * high mantissa bytes that real series have. */
#include "store_codec.h"

#include "err.h"
#include "frame.h"
#include "sketch.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_MIN (64u << 10)
#define F_ZSTD 0x01
#define R_SUMCOUNT 0x01 /* rollup entry: sum and count only */
#define ROW_VALUES 0x01
#define ROW_SKETCH 0x02
#define NFIELDS 5                    /* sum, min, max, first, last */
#define EXACT_INT 9007199254740992.0 /* 2^53 */
#define MAX_DECIMALS 18
#define DMODE_XOR 0     /* doubles: XOR with the previous, in byte planes */
#define DMODE_DECIMAL 1 /* + k: exactly i / 10^k */
#define DMODE_NEAR 0x40 /* + k: i / 10^k and a few units in the last place */

/* ---- memory of a decoded entry ---- */

struct st_cdec_chunk {
    struct st_cdec_chunk *next;
    size_t used;
    size_t cap;
    _Alignas(16) uint8_t data[];
};

static void *arena_alloc(st_cdec *d, size_t n)
{
    struct st_cdec_chunk *c = d->mem;
    n = (n + 15) & ~(size_t)15;
    if (c == NULL || c->cap - c->used < n) {
        size_t cap = n > CHUNK_MIN ? n : CHUNK_MIN;
        if ((c = malloc(sizeof(*c) + cap)) == NULL) {
            return NULL;
        }
        c->next = d->mem;
        c->used = 0;
        c->cap = cap;
        d->mem = c;
    }
    c->used += n;
    return memset(c->data + c->used - n, 0, n);
}

void st_cdec_clear(st_cdec *d)
{
    if (d == NULL) {
        return;
    }
    while (d->mem != NULL) {
        struct st_cdec_chunk *n = d->mem->next;
        free(d->mem);
        d->mem = n;
    }
    memset(d, 0, sizeof(*d));
}

/* ---- writing ---- */

struct wr {
    st_buf *b;
    int rv;
};

static uint64_t zz(int64_t v)
{
    return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

static int64_t unzz(uint64_t u)
{
    return (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
}

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static void put_u8(struct wr *w, uint8_t v)
{
    if (w->rv == ST_OK) {
        w->rv = st_buf_append(w->b, &v, 1);
    }
}

static void put_v(struct wr *w, uint64_t v)
{
    uint8_t tmp[10];
    size_t n = 0;
    while (v >= 0x80) {
        tmp[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    tmp[n++] = (uint8_t)v;
    if (w->rv == ST_OK) {
        w->rv = st_buf_append(w->b, tmp, n);
    }
}

static uint64_t dbits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    return u;
}

static double bitsd(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof(d));
    return d;
}

/* words[0..n) byte plane by byte plane, most significant plane first. */
static void put_planes(struct wr *w, const uint64_t *words, size_t n)
{
    for (int plane = 7; plane >= 0 && w->rv == ST_OK; plane--) {
        if ((w->rv = st_buf_reserve(w->b, n)) != ST_OK) {
            return;
        }
        for (size_t i = 0; i < n; i++) {
            w->b->data[w->b->len + i] = (uint8_t)(words[i] >> (plane * 8));
        }
        w->b->len += n;
    }
}

/* ---- integer columns ----
 *
 * A column is written in whichever mode zstd will store smallest: 0
 * absolute, 1 delta from the previous, 2 offset from the column's minimum
 * (all zigzag varints), or 3 the offsets bit-packed at the width of the
 * largest; 4 and 5 are 2 and 3 with the offsets divided by their greatest
 * common divisor. The choice is by estimate: a varint column costs about the
 * order-0 entropy of its bytes (zstd's literals are Huffman-coded), a
 * packed one exactly its bits (white noise in a band, which byte-aligned
 * varints cannot get under 8 bits a byte's worth of it). Choosing by
 * varint length instead picked deltas for counters' noisy increments: a
 * bit more per value than their offsets. */

#define IMODE_ABS 0
#define IMODE_DELTA 1
#define IMODE_OFFSET 2
#define IMODE_PACKED 3
/* The offsets of modes 2 and 3 divided by their greatest common divisor:
 * byte counts that move in pages (memory in 4096s, kB times 1024) have
 * their low bits always zero. */
#define IMODE_OFFSET_STEP 4
#define IMODE_PACKED_STEP 5

struct ichoice {
    int mode;
    int width;     /* bits of a packed value */
    int64_t min;   /* of the column */
    uint64_t step; /* the offsets' divisor (1 but in the _STEP modes) */
    double cost;   /* estimated bytes after zstd */
};

static bool imode_offset(int mode)
{
    return mode == IMODE_OFFSET || mode == IMODE_OFFSET_STEP;
}

static bool imode_packed(int mode)
{
    return mode == IMODE_PACKED || mode == IMODE_PACKED_STEP;
}

static uint64_t imode_value(int mode, int64_t v, uint64_t prev, int64_t min, uint64_t step)
{
    return mode == IMODE_ABS     ? zz(v)
           : mode == IMODE_DELTA ? zz((int64_t)((uint64_t)v - prev))
                                 : ((uint64_t)v - (uint64_t)min) / step;
}

static uint64_t gcd(uint64_t a, uint64_t b)
{
    while (b != 0) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

static int bit_width(uint64_t v)
{
    int b = 0;
    while (v != 0) {
        b++;
        v >>= 1;
    }
    return b;
}

/* Bits the order-0 entropy of a byte histogram gives its n bytes. */
static double entropy_bits(const uint32_t hist[256], uint64_t n)
{
    double bits = 0;
    for (int i = 0; i < 256; i++) {
        if (hist[i] != 0) {
            bits -= (double)hist[i] * log2((double)hist[i] / (double)n);
        }
    }
    return bits;
}

/* The estimated bytes of v in a varint mode. */
static double varint_cost(int mode, const int64_t *v, size_t n, int64_t min, uint64_t step)
{
    uint32_t hist[256] = {0};
    uint64_t nbytes = 0;
    uint64_t prev = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t u = imode_value(mode, v[i], prev, min, step);
        prev = (uint64_t)v[i];
        while (u >= 0x80) {
            hist[(uint8_t)(u | 0x80)]++;
            nbytes++;
            u >>= 7;
        }
        hist[u]++;
        nbytes++;
    }
    /* zstd's Huffman-coded literals came out 2-7 % over the entropy, plus
     * their table, on noise of 8 to 500 levels (measured with zstd -9) */
    return entropy_bits(hist, nbytes) / 8 * 1.05 + 32 +
           (imode_offset(mode) ? (double)(varint_len(zz(min)) + varint_len(step)) : 0);
}

static struct ichoice choose_ints(const int64_t *v, size_t n)
{
    struct ichoice c = {IMODE_ABS, 0, n > 0 ? v[0] : 0, 1, 0};
    uint64_t span = 0;
    uint64_t g = 0;
    for (size_t i = 0; i < n; i++) {
        c.min = v[i] < c.min ? v[i] : c.min;
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t off = (uint64_t)v[i] - (uint64_t)c.min;
        span = off > span ? off : span;
        g = gcd(off, g);
    }
    /* at least a bit a value, so that a reader can bound a column's
     * length by its bytes */
    c.width = ST_MAX(1, bit_width(span));
    c.mode = IMODE_PACKED;
    c.cost = ((double)n * c.width + 7) / 8 + (double)varint_len(zz(c.min)) + 1;
    if (g > 1) {
        int width = ST_MAX(1, bit_width(span / g));
        double cost =
            ((double)n * width + 7) / 8 + (double)(varint_len(zz(c.min)) + varint_len(g)) + 1;
        if (cost < c.cost) {
            c = (struct ichoice){IMODE_PACKED_STEP, width, c.min, g, cost};
        }
    }
    for (int mode = IMODE_ABS; mode <= IMODE_OFFSET_STEP; mode++) {
        double cost;
        if (mode == IMODE_PACKED || (mode == IMODE_OFFSET_STEP && g <= 1)) {
            continue;
        }
        cost = varint_cost(mode, v, n, c.min, mode == IMODE_OFFSET_STEP ? g : 1);
        if (cost < c.cost) {
            c.mode = mode;
            c.step = mode == IMODE_OFFSET_STEP ? g : 1;
            c.cost = cost;
        }
    }
    return c;
}

/* n values of width bits each, least significant bit first. */
static void put_packed(struct wr *w, const int64_t *v, size_t n, int64_t min, uint64_t step,
                       int width)
{
    size_t nbytes = (n * (size_t)width + 7) / 8;
    uint8_t *p;
    size_t bit = 0;
    if (w->rv != ST_OK || (w->rv = st_buf_reserve(w->b, nbytes)) != ST_OK) {
        return;
    }
    p = w->b->data + w->b->len;
    memset(p, 0, nbytes);
    for (size_t i = 0; i < n; i++) {
        uint64_t u = ((uint64_t)v[i] - (uint64_t)min) / step;
        for (int done = 0; done < width;) {
            int at = (int)(bit & 7);
            int take = ST_MIN(8 - at, width - done);
            p[bit >> 3] |= (uint8_t)(((u >> done) & ((1u << take) - 1)) << at);
            done += take;
            bit += (size_t)take;
        }
    }
    w->b->len += nbytes;
}

/* A column of integers in the mode c chose for it. */
static void put_ints_as(struct wr *w, const int64_t *v, size_t n, struct ichoice c)
{
    uint64_t prev = 0;
    put_u8(w, (uint8_t)c.mode);
    if (imode_offset(c.mode) || imode_packed(c.mode)) {
        put_v(w, zz(c.min));
    }
    if (c.mode == IMODE_OFFSET_STEP || c.mode == IMODE_PACKED_STEP) {
        put_v(w, c.step);
    }
    if (imode_packed(c.mode)) {
        put_u8(w, (uint8_t)c.width);
        put_packed(w, v, n, c.min, c.step, c.width);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        put_v(w, imode_value(c.mode, v[i], prev, c.min, c.step));
        prev = (uint64_t)v[i];
    }
}

static void put_ints(struct wr *w, const int64_t *v, size_t n)
{
    put_ints_as(w, v, n, choose_ints(v, n));
}

/* The exact powers of ten a double holds (as frame.c's unscale uses). */
static const double p10[MAX_DECIMALS + 1] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,
                                             1e7,  1e8,  1e9,  1e10, 1e11, 1e12, 1e13,
                                             1e14, 1e15, 1e16, 1e17, 1e18};

/* True when v is i / 10^k for an integer i a double holds exactly, bit for
 * bit (what a gauge's scaled integers decode to). */
static bool decimal_at(double v, int k, int64_t *i)
{
    double x = v * p10[k];
    if (!(fabs(x) < EXACT_INT) || (v == 0 && signbit(v))) {
        return false;
    }
    *i = llround(x);
    return (double)*i / p10[k] == v;
}

/* The fewest decimals k that give every value back exactly, or -1. */
static int column_decimals(const double *v, size_t n)
{
    for (int k = 0; k <= MAX_DECIMALS; k++) {
        size_t i = 0;
        int64_t x;
        while (i < n && decimal_at(v[i], k, &x)) {
            i++;
        }
        if (i == n) {
            return k;
        }
    }
    return -1;
}

/* Doubles a compacted entry holds as written are i / 10^k but for a few
 * units in the last place: sums of decimal gauges, whose additions round.
 * Far from such a decimal, the XOR planes do better. */
#define NEAR_ULPS 4096

/* The fewest decimals k at which every value is within NEAR_ULPS of
 * i / 10^k (written as the integers i and the differences of the bits), or
 * -1. */
static int near_decimals(const double *v, size_t n, int64_t *iv, int64_t *dv)
{
    for (int k = 0; k <= MAX_DECIMALS; k++) {
        size_t i = 0;
        for (; i < n; i++) {
            double x = v[i] * p10[k];
            if (!(fabs(x) < EXACT_INT)) {
                break;
            }
            iv[i] = llround(x);
            dv[i] = (int64_t)(dbits(v[i]) - dbits((double)iv[i] / p10[k]));
            if (dv[i] < -NEAR_ULPS || dv[i] > NEAR_ULPS) {
                break;
            }
        }
        if (i == n) {
            return k;
        }
    }
    return -1;
}

/* Bytes zstd is estimated to need for the XOR planes of words. */
static double planes_cost(const uint64_t *words, size_t n)
{
    double bits = 0;
    for (int plane = 0; plane < 8; plane++) {
        uint32_t hist[256] = {0};
        for (size_t i = 0; i < n; i++) {
            hist[(uint8_t)(words[i] >> (plane * 8))]++;
        }
        bits += entropy_bits(hist, n);
    }
    return bits / 8;
}

/* A column of doubles: mode DMODE_DECIMAL + k when every one is i / 10^k
 * exactly (written as the integers i), DMODE_NEAR + k when each is within
 * a few units in the last place of one (the integers, then the
 * differences of the bits) and that is estimated smaller, else DMODE_XOR,
 * XOR with the previous in byte planes. All give back the same bits. */
static int put_doubles(struct wr *w, const double *v, size_t n)
{
    int k = n > 0 ? column_decimals(v, n) : 0;
    uint64_t *words = NULL;
    int64_t *iv = NULL;
    int64_t *dv = NULL;
    struct ichoice ci = {0};
    struct ichoice cd = {0};
    if (k >= 0 || n == 0) {
        put_u8(w, (uint8_t)(DMODE_DECIMAL + k));
        if (n > 0) {
            if ((iv = malloc(n * sizeof(*iv))) == NULL) {
                return ST_ENOMEM;
            }
            for (size_t i = 0; i < n; i++) {
                (void)decimal_at(v[i], k, &iv[i]);
            }
            put_ints(w, iv, n);
            free(iv);
        }
        return w->rv;
    }
    words = malloc(n * sizeof(*words));
    iv = malloc(n * sizeof(*iv));
    dv = malloc(n * sizeof(*dv));
    if (words == NULL || iv == NULL || dv == NULL) {
        free(words);
        free(iv);
        free(dv);
        return ST_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        words[i] = dbits(v[i]) ^ (i > 0 ? dbits(v[i - 1]) : 0);
    }
    if ((k = near_decimals(v, n, iv, dv)) >= 0) {
        ci = choose_ints(iv, n);
        cd = choose_ints(dv, n);
    }
    if (k >= 0 && ci.cost + cd.cost < planes_cost(words, n)) {
        put_u8(w, (uint8_t)(DMODE_NEAR + k));
        put_ints_as(w, iv, n, ci);
        put_ints_as(w, dv, n, cd);
    } else {
        put_u8(w, DMODE_XOR);
        put_planes(w, words, n);
    }
    free(words);
    free(iv);
    free(dv);
    return w->rv;
}

/* The count of the previous sketch p in the bucket at absolute index at
 * (0 outside its buckets): a series' sketches are alike from one point or
 * row to the next, so their differences are small. */
static uint64_t prev_count(const Strata__V1__Sketch *p, bool neg, int64_t at)
{
    int64_t off = p == NULL ? 0 : neg ? p->neg_offset : p->offset;
    size_t n = p == NULL ? 0 : neg ? p->n_neg_counts : p->n_counts;
    if (p == NULL || at < off || at - off >= (int64_t)n) {
        return 0;
    }
    return (neg ? p->neg_counts : p->counts)[at - off];
}

/* The bucket counts, mode 0 as they are or 1 as differences from the
 * previous sketch's count in the same bucket, whichever is shorter. */
static int put_buckets(struct wr *w, const Strata__V1__Sketch *const *sk, size_t n)
{
    size_t len[2] = {0, 0};
    int mode;
    for (size_t i = 0; i < n; i++) {
        for (int neg = 0; neg < 2; neg++) {
            size_t nc = neg ? sk[i]->n_neg_counts : sk[i]->n_counts;
            const uint64_t *c = neg ? sk[i]->neg_counts : sk[i]->counts;
            int64_t off = neg ? sk[i]->neg_offset : sk[i]->offset;
            for (size_t k = 0; k < nc; k++) {
                uint64_t p = prev_count(i ? sk[i - 1] : NULL, neg, off + (int64_t)k);
                len[0] += varint_len(c[k]);
                len[1] += varint_len(zz((int64_t)(c[k] - p)));
            }
        }
    }
    mode = len[1] < len[0];
    put_u8(w, (uint8_t)mode);
    for (size_t i = 0; i < n && w->rv == ST_OK; i++) {
        for (int neg = 0; neg < 2; neg++) {
            size_t nc = neg ? sk[i]->n_neg_counts : sk[i]->n_counts;
            const uint64_t *c = neg ? sk[i]->neg_counts : sk[i]->counts;
            int64_t off = neg ? sk[i]->neg_offset : sk[i]->offset;
            put_v(w, nc);
            for (size_t k = 0; k < nc; k++) {
                uint64_t p = mode ? prev_count(i ? sk[i - 1] : NULL, neg, off + (int64_t)k) : 0;
                put_v(w, mode ? zz((int64_t)(c[k] - p)) : c[k]);
            }
        }
    }
    return w->rv;
}

/* Sketches: the scalar fields as columns, then each one's buckets. */
static int put_sketches(struct wr *w, const Strata__V1__Sketch *const *sk, size_t n)
{
    double *d = malloc((n ? n : 1) * sizeof(*d));
    int64_t *iv = malloc((n ? n : 1) * sizeof(*iv));
    int rv = d != NULL && iv != NULL ? ST_OK : ST_ENOMEM;
    for (int f = 0; f < 4 && rv == ST_OK; f++) {
        for (size_t i = 0; i < n; i++) {
            d[i] = f == 0 ? sk[i]->alpha : f == 1 ? sk[i]->sum : f == 2 ? sk[i]->min : sk[i]->max;
        }
        rv = put_doubles(w, d, n);
    }
    for (int f = 0; f < 4 && rv == ST_OK; f++) {
        for (size_t i = 0; i < n; i++) {
            iv[i] = f == 0   ? (int64_t)sk[i]->count
                    : f == 1 ? (int64_t)sk[i]->zero_count
                    : f == 2 ? sk[i]->offset
                             : sk[i]->neg_offset;
        }
        put_ints(w, iv, n);
        rv = w->rv;
    }
    rv = rv == ST_OK ? put_buckets(w, sk, n) : rv;
    free(d);
    free(iv);
    return rv;
}

/* magic | flags | extra | body length | body (zstd when that is smaller);
 * extra is what readers need without inflating the body. */
static int seal(st_zctx *z, uint8_t magic, int64_t extra, const st_buf *body, st_buf *out)
{
    struct wr w = {out, ST_OK};
    size_t bound = st_zctx_bound(body->len);
    size_t hdr;
    size_t clen = 0;
    int rv;
    if (body->len > ST_CODEC_MAX_BODY) {
        return ST_ETOOBIG;
    }
    st_buf_reset(out);
    put_u8(&w, magic);
    put_u8(&w, F_ZSTD);
    put_v(&w, zz(extra));
    put_v(&w, body->len);
    if (w.rv != ST_OK || (rv = st_buf_reserve(out, bound)) != ST_OK) {
        return w.rv != ST_OK ? w.rv : rv;
    }
    hdr = out->len;
    /* big bodies (an hour of a busy distribution) at a faster level: the
     * same size within a few percent, a third less time in the slice */
    rv = st_zctx_compress(z,
                          body->len > ST_CODEC_BIG_BODY ? ST_CODEC_ZSTD_FAST : ST_CODEC_ZSTD_LEVEL,
                          body->data, body->len, out->data + hdr, bound, &clen);
    if (rv != ST_OK) {
        return rv;
    }
    if (clen >= body->len) {
        out->data[1] = 0; /* stored: zstd did not help */
        memcpy(out->data + hdr, body->data, body->len);
        clen = body->len;
    }
    out->len = hdr + clen;
    return ST_OK;
}

/* ---- raw blocks ---- */

enum col { COL_IV, COL_VAL, COL_SK };

struct run {
    int64_t start;
    uint32_t interval;
    int32_t scale;
    size_t first; /* blocks[first .. first + nblk) */
    size_t nblk;
    size_t n_iv, n_val, n_min, n_max, n_sk;
};

static bool simple_block(const Strata__V1__Series *b)
{
    size_t n = st_series_npoints(b);
    int cols = (b->n_ivalues > 0) + (b->n_values > 0) + (b->n_sketches > 0);
    return cols == 1 && (b->n_mins == 0 || b->n_mins == n) && (b->n_maxs == 0 || b->n_maxs == n);
}

/* True when b continues run r point for point with the same columns. */
static bool extends(const struct run *r, const Strata__V1__Series *const *blocks,
                    const Strata__V1__Series *b)
{
    const Strata__V1__Series *a = blocks[r->first];
    size_t n = st_series_npoints(b);
    size_t rn = r->n_iv + r->n_val + r->n_sk;
    return simple_block(a) && simple_block(b) && b->interval_ms == r->interval &&
           b->start_unix_ms == r->start + (int64_t)r->interval * (int64_t)rn &&
           (a->n_ivalues > 0) == (b->n_ivalues > 0) && (a->n_values > 0) == (b->n_values > 0) &&
           (a->n_sketches > 0) == (b->n_sketches > 0) && (a->n_mins > 0) == (b->n_mins > 0) &&
           (a->n_maxs > 0) == (b->n_maxs > 0) && (b->n_ivalues == 0 || b->scale == r->scale) &&
           rn + n <= ST_FRAME_MAX_POINTS;
}

static size_t make_runs(const Strata__V1__Series *const *blocks, size_t n, struct run *runs)
{
    size_t nr = 0;
    for (size_t i = 0; i < n; i++) {
        const Strata__V1__Series *b = blocks[i];
        struct run *r = nr > 0 ? &runs[nr - 1] : NULL;
        if (r == NULL || !extends(r, blocks, b)) {
            r = &runs[nr++];
            memset(r, 0, sizeof(*r));
            r->start = b->start_unix_ms;
            r->interval = b->interval_ms;
            r->scale = b->scale;
            r->first = i;
        }
        r->nblk++;
        r->n_iv += b->n_ivalues;
        r->n_val += b->n_values;
        r->n_min += b->n_mins;
        r->n_max += b->n_maxs;
        r->n_sk += b->n_sketches;
    }
    return nr;
}

struct totals {
    size_t iv, val, min, max, sk;
};

static int put_raw_columns(struct wr *w, const Strata__V1__Series *const *blocks, size_t n,
                           const struct totals *t)
{
    size_t nd = t->val + t->min + t->max;
    int64_t *iv = malloc((t->iv ? t->iv : 1) * sizeof(*iv));
    double *d = malloc((nd ? nd : 1) * sizeof(*d));
    const Strata__V1__Sketch **sk = malloc((t->sk ? t->sk : 1) * sizeof(*sk));
    size_t ki = 0;
    size_t kd = 0;
    size_t ks = 0;
    int rv = iv != NULL && d != NULL && sk != NULL ? ST_OK : ST_ENOMEM;
    for (size_t i = 0; i < n && rv == ST_OK; i++) {
        uint64_t acc = 0; /* the absolute value: ivalues are deltas within a block */
        for (size_t k = 0; k < blocks[i]->n_ivalues; k++) {
            acc += (uint64_t)blocks[i]->ivalues[k];
            iv[ki++] = (int64_t)acc;
        }
        for (size_t k = 0; k < blocks[i]->n_sketches; k++) {
            sk[ks++] = blocks[i]->sketches[k];
        }
    }
    /* values, then mins, then maxs: each its own column */
    for (int c = 0; c < 3 && rv == ST_OK; c++) {
        for (size_t i = 0; i < n; i++) {
            const Strata__V1__Series *b = blocks[i];
            size_t m = c == 0 ? b->n_values : c == 1 ? b->n_mins : b->n_maxs;
            const double *src = c == 0 ? b->values : c == 1 ? b->mins : b->maxs;
            if (m > 0) {
                memcpy(d + kd, src, m * sizeof(double));
                kd += m;
            }
        }
    }
    if (rv == ST_OK) {
        put_ints(w, iv, ki);
        rv = w->rv;
    }
    rv = rv == ST_OK ? put_doubles(w, d, t->val) : rv;
    rv = rv == ST_OK ? put_doubles(w, d + t->val, t->min) : rv;
    rv = rv == ST_OK ? put_doubles(w, d + t->val + t->min, t->max) : rv;
    rv = rv == ST_OK ? put_sketches(w, sk, ks) : rv;
    free(iv);
    free(d);
    free(sk);
    return rv;
}

int st_codec_encode_raw(st_zctx *z, const Strata__V1__Series *const *blocks, size_t n, st_buf *out)
{
    struct run *runs;
    struct totals t = {0};
    st_buf body;
    struct wr w;
    int64_t prev = 0;
    int64_t end = INT64_MIN;
    size_t nr;
    int rv;
    if (n == 0 || n > ST_CODEC_MAX_BLOCKS) {
        return ST_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (blocks[i]->interval_ms == 0 || st_series_npoints(blocks[i]) > ST_FRAME_MAX_POINTS) {
            return ST_EINVAL;
        }
    }
    if ((runs = malloc(n * sizeof(*runs))) == NULL) {
        return ST_ENOMEM;
    }
    st_buf_init(&body, ST_CODEC_MAX_BODY);
    w = (struct wr){&body, ST_OK};
    nr = make_runs(blocks, n, runs);
    put_v(&w, nr);
    for (size_t i = 0; i < nr; i++) {
        const struct run *r = &runs[i];
        put_v(&w, zz((int64_t)((uint64_t)r->start - (uint64_t)prev)));
        put_v(&w, r->interval);
        put_v(&w, zz(r->scale));
        put_v(&w, r->n_iv);
        put_v(&w, r->n_val);
        put_v(&w, r->n_min);
        put_v(&w, r->n_max);
        put_v(&w, r->n_sk);
        prev = r->start;
        end =
            ST_MAX(end, r->start + (int64_t)r->interval * (int64_t)(r->n_iv + r->n_val + r->n_sk));
        t.iv += r->n_iv;
        t.val += r->n_val;
        t.min += r->n_min;
        t.max += r->n_max;
        t.sk += r->n_sk;
    }
    if (t.iv + t.val + t.min + t.max + t.sk > ST_CODEC_MAX_VALUES || t.sk > ST_CODEC_MAX_SKETCHES) {
        w.rv = ST_ETOOBIG;
    }
    rv = w.rv == ST_OK ? put_raw_columns(&w, blocks, n, &t) : w.rv;
    free(runs);
    rv = rv == ST_OK ? seal(z, ST_CODEC_RAW, end, &body, out) : rv;
    st_buf_free(&body);
    return rv;
}

/* ---- reading ---- */

struct rd {
    const uint8_t *p;
    const uint8_t *end;
    bool bad;
};

static uint64_t get_v(struct rd *r)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        uint8_t c;
        if (r->p >= r->end) {
            r->bad = true;
            return 0;
        }
        c = *r->p++;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            return v;
        }
    }
    r->bad = true;
    return 0;
}

static uint8_t get_u8(struct rd *r)
{
    if (r->p >= r->end) {
        r->bad = true;
        return 0;
    }
    return *r->p++;
}

/* Reads a column of integers (see put_ints) one by one. */
struct icol {
    struct rd *r;
    uint8_t mode;
    uint8_t width;
    uint64_t prev;
    uint64_t min;
    uint64_t step;
    const uint8_t *bits; /* packed modes: the packed values */
    size_t bit;
};

static void icol_open(struct rd *r, struct icol *c, size_t n)
{
    memset(c, 0, sizeof(*c));
    c->r = r;
    c->mode = get_u8(r);
    c->step = 1;
    if (c->mode > IMODE_PACKED_STEP) {
        r->bad = true;
        return;
    }
    if (imode_offset(c->mode) || imode_packed(c->mode)) {
        c->min = (uint64_t)unzz(get_v(r));
    }
    if (c->mode == IMODE_OFFSET_STEP || c->mode == IMODE_PACKED_STEP) {
        c->step = get_v(r);
        r->bad = r->bad || c->step == 0;
    }
    if (imode_packed(c->mode)) {
        size_t nbytes;
        c->width = get_u8(r);
        if (c->width == 0 || c->width > 64 || n > SIZE_MAX / 64) {
            r->bad = true;
            return;
        }
        nbytes = (n * c->width + 7) / 8;
        if (r->bad || (size_t)(r->end - r->p) < nbytes) {
            r->bad = true;
            return;
        }
        c->bits = r->p;
        r->p += nbytes;
    }
}

static int64_t icol_next(struct icol *c)
{
    uint64_t u = 0;
    int64_t v;
    if (imode_packed(c->mode)) {
        for (int done = 0; done < c->width;) {
            int at = (int)(c->bit & 7);
            int take = ST_MIN(8 - at, c->width - done);
            u |= (uint64_t)((c->bits[c->bit >> 3] >> at) & ((1u << take) - 1)) << done;
            done += take;
            c->bit += (size_t)take;
        }
        return (int64_t)(c->min + u * c->step);
    }
    u = get_v(c->r);
    v = c->mode == IMODE_ABS     ? unzz(u)
        : c->mode == IMODE_DELTA ? (int64_t)(c->prev + (uint64_t)unzz(u))
                                 : (int64_t)(c->min + u * c->step);
    c->prev = (uint64_t)v;
    return v;
}

static void get_ints(struct rd *r, int64_t *v, size_t n)
{
    struct icol c;
    icol_open(r, &c, n);
    for (size_t i = 0; i < n && !r->bad; i++) {
        v[i] = icol_next(&c);
    }
}

static void get_doubles(struct rd *r, double *v, size_t n)
{
    uint8_t mode = get_u8(r);
    bool near = mode >= DMODE_NEAR && mode <= DMODE_NEAR + MAX_DECIMALS;
    struct icol c;
    if (r->bad || (mode > DMODE_DECIMAL + MAX_DECIMALS && !near)) {
        r->bad = true;
        return;
    }
    if (n == 0) {
        return;
    }
    if (mode != DMODE_XOR) {
        /* i / 10^k, decoded one by one as frame.c's unscale does */
        int k = near ? mode - DMODE_NEAR : mode - DMODE_DECIMAL;
        icol_open(r, &c, n);
        for (size_t i = 0; i < n && !r->bad; i++) {
            v[i] = (double)icol_next(&c) / p10[k];
        }
        if (near) {
            icol_open(r, &c, n);
            for (size_t i = 0; i < n && !r->bad; i++) {
                v[i] = bitsd(dbits(v[i]) + (uint64_t)icol_next(&c));
            }
        }
        return;
    }
    if ((size_t)(r->end - r->p) / 8 < n) {
        r->bad = true;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t u = 0;
        for (int plane = 0; plane < 8; plane++) {
            u = u << 8 | r->p[(size_t)plane * n + i];
        }
        v[i] = bitsd(u ^ (i > 0 ? dbits(v[i - 1]) : 0));
    }
    r->p += 8 * n;
}

/* Opens a value: checks magic and lengths and inflates the body into d's
 * memory; *body points at it. */
static int open_value(const void *val, size_t len, uint8_t magic, st_cdec *d, struct rd *body)
{
    struct rd r = {val, (const uint8_t *)val + len, false};
    uint8_t flags;
    uint64_t blen;
    uint8_t *p;
    if (len < 3 || get_u8(&r) != magic) {
        return ST_ECORRUPT;
    }
    flags = get_u8(&r);
    (void)get_v(&r); /* extra */
    blen = get_v(&r);
    if (r.bad || (flags & ~F_ZSTD) != 0 || blen > ST_CODEC_MAX_BODY) {
        return ST_ECORRUPT;
    }
    if (!(flags & F_ZSTD)) {
        if ((uint64_t)(r.end - r.p) != blen) {
            return ST_ECORRUPT;
        }
        *body = (struct rd){r.p, r.end, false};
        return ST_OK;
    }
    if ((p = arena_alloc(d, blen ? blen : 1)) == NULL) {
        return ST_ENOMEM;
    }
    if (st_zctx_decompress(NULL, r.p, (size_t)(r.end - r.p), p, blen) != ST_OK) {
        return ST_ECORRUPT;
    }
    *body = (struct rd){p, p + blen, false};
    return ST_OK;
}

/* Bytes left in r can hold at least n items of min_bytes each. */
static bool fits(const struct rd *r, uint64_t n, size_t min_bytes)
{
    return n <= (uint64_t)(r->end - r->p) / min_bytes;
}

static int get_sketches(struct rd *r, st_cdec *d, Strata__V1__Sketch **out, size_t n)
{
    uint8_t mode;
    double *dv = arena_alloc(d, 4 * n * sizeof(double) + 8);
    int64_t *iv = arena_alloc(d, 4 * n * sizeof(int64_t) + 8);
    Strata__V1__Sketch *sk = arena_alloc(d, n * sizeof(*sk) + 8);
    if (dv == NULL || iv == NULL || sk == NULL) {
        return ST_ENOMEM;
    }
    for (int f = 0; f < 4; f++) {
        get_doubles(r, dv + (size_t)f * n, n);
    }
    for (int f = 0; f < 4; f++) {
        get_ints(r, iv + (size_t)f * n, n);
    }
    mode = get_u8(r);
    r->bad = r->bad || mode > 1;
    for (size_t i = 0; i < n && !r->bad; i++) {
        Strata__V1__Sketch *s = &sk[i];
        strata__v1__sketch__init(s);
        s->alpha = dv[i];
        s->sum = dv[n + i];
        s->min = dv[2 * n + i];
        s->max = dv[3 * n + i];
        s->count = (uint64_t)iv[i];
        s->zero_count = (uint64_t)iv[n + i];
        s->offset = (int32_t)iv[2 * n + i];
        s->neg_offset = (int32_t)iv[3 * n + i];
        for (int neg = 0; neg < 2 && !r->bad; neg++) {
            uint64_t nc = get_v(r);
            uint64_t *c;
            if (nc > ST_SKETCH_MAX_BUCKETS || !fits(r, nc, 1)) {
                r->bad = true;
                break;
            }
            if ((c = arena_alloc(d, nc * sizeof(uint64_t) + 8)) == NULL) {
                return ST_ENOMEM;
            }
            for (uint64_t k = 0; k < nc; k++) {
                int64_t at = (neg ? s->neg_offset : s->offset) + (int64_t)k;
                uint64_t u = get_v(r);
                c[k] = mode ? prev_count(i ? out[i - 1] : NULL, neg, at) + (uint64_t)unzz(u) : u;
            }
            if (neg) {
                s->neg_counts = c;
                s->n_neg_counts = nc;
            } else {
                s->counts = c;
                s->n_counts = nc;
            }
        }
        out[i] = s;
    }
    return r->bad ? ST_ECORRUPT : ST_OK;
}

/* Reads the run headers into fresh Series and sizes their columns. */
static int get_runs(struct rd *r, st_cdec *d, struct totals *t)
{
    uint64_t nr = get_v(r);
    int64_t prev = 0;
    if (r->bad || nr == 0 || !fits(r, nr, 8)) {
        return ST_ECORRUPT;
    }
    d->runs = arena_alloc(d, nr * sizeof(*d->runs));
    if (d->runs == NULL) {
        return ST_ENOMEM;
    }
    for (uint64_t i = 0; i < nr && !r->bad; i++) {
        Strata__V1__Series *s = arena_alloc(d, sizeof(*s));
        uint64_t c[5];
        if (s == NULL) {
            return ST_ENOMEM;
        }
        strata__v1__series__init(s);
        s->start_unix_ms = prev = (int64_t)((uint64_t)prev + (uint64_t)unzz(get_v(r)));
        s->interval_ms = (uint32_t)get_v(r);
        s->scale = (int32_t)unzz(get_v(r));
        for (int k = 0; k < 5; k++) {
            c[k] = get_v(r);
            r->bad = r->bad || c[k] > ST_FRAME_MAX_POINTS;
        }
        s->n_ivalues = c[0];
        s->n_values = c[1];
        s->n_mins = c[2];
        s->n_maxs = c[3];
        s->n_sketches = c[4];
        t->iv += c[0];
        t->val += c[1];
        t->min += c[2];
        t->max += c[3];
        t->sk += c[4];
        d->runs[i] = s;
    }
    d->nruns = nr;
    return r->bad ? ST_ECORRUPT : ST_OK;
}

/* Hands the decoded columns out to the runs; ivalues become deltas again. */
static void deal_columns(st_cdec *d, int64_t *iv, double *dv, const struct totals *t,
                         Strata__V1__Sketch **sk)
{
    double *mins = dv + t->val;
    double *maxs = mins + t->min;
    for (size_t i = 0; i < d->nruns; i++) {
        Strata__V1__Series *s = d->runs[i];
        s->ivalues = iv;
        for (size_t k = s->n_ivalues; k-- > 1;) {
            iv[k] = (int64_t)((uint64_t)iv[k] - (uint64_t)iv[k - 1]);
        }
        iv += s->n_ivalues;
        s->values = dv;
        dv += s->n_values;
        s->mins = mins;
        mins += s->n_mins;
        s->maxs = maxs;
        maxs += s->n_maxs;
        s->sketches = sk;
        sk += s->n_sketches;
    }
}

int st_codec_decode_raw(const void *val, size_t len, st_cdec *d)
{
    struct rd r;
    struct totals t = {0};
    int64_t *iv;
    double *dv;
    Strata__V1__Sketch **sk;
    int rv;
    memset(d, 0, sizeof(*d));
    if ((rv = open_value(val, len, ST_CODEC_RAW, d, &r)) != ST_OK ||
        (rv = get_runs(&r, d, &t)) != ST_OK) {
        goto fail;
    }
    /* every value takes a bit at least (a packed integer, a double written
     * as one) */
    if (t.iv + t.val + t.min + t.max + t.sk > ST_CODEC_MAX_VALUES || t.sk > ST_CODEC_MAX_SKETCHES ||
        !fits(&r, (t.iv + t.val + t.min + t.max + t.sk + 7) / 8, 1)) {
        rv = ST_ECORRUPT;
        goto fail;
    }
    iv = arena_alloc(d, t.iv * sizeof(*iv) + 8);
    dv = arena_alloc(d, (t.val + t.min + t.max) * sizeof(*dv) + 8);
    sk = arena_alloc(d, t.sk * sizeof(*sk) + 8);
    if (iv == NULL || dv == NULL || sk == NULL) {
        rv = ST_ENOMEM;
        goto fail;
    }
    get_ints(&r, iv, t.iv);
    get_doubles(&r, dv, t.val);
    get_doubles(&r, dv + t.val, t.min);
    get_doubles(&r, dv + t.val + t.min, t.max);
    if (r.bad || (rv = get_sketches(&r, d, sk, t.sk)) != ST_OK || r.p != r.end) {
        rv = rv != ST_OK ? rv : ST_ECORRUPT;
        goto fail;
    }
    deal_columns(d, iv, dv, &t, sk);
    return ST_OK;
fail:
    st_cdec_clear(d);
    return rv;
}

/* ---- rollups ---- */

static double row_field(const Strata__V1__RollupRow *r, int f)
{
    switch (f) {
    case 0:
        return r->sum;
    case 1:
        return r->min;
    case 2:
        return r->max;
    case 3:
        return r->first;
    default:
        return r->last;
    }
}

static void set_row_field(Strata__V1__RollupRow *r, int f, double v)
{
    switch (f) {
    case 0:
        r->sum = v;
        break;
    case 1:
        r->min = v;
        break;
    case 2:
        r->max = v;
        break;
    case 3:
        r->first = v;
        break;
    default:
        r->last = v;
        break;
    }
}

static int put_rollup_columns(struct wr *w, const Strata__V1__RollupBlock *b, bool sc)
{
    size_t n = b->n_rows;
    double *d = malloc((n ? n : 1) * sizeof(*d));
    int64_t *iv = malloc((n ? n : 1) * sizeof(*iv));
    const Strata__V1__Sketch **sk = malloc((n ? n : 1) * sizeof(*sk));
    size_t nv = 0;
    size_t ns = 0;
    int rv = d != NULL && iv != NULL && sk != NULL ? ST_OK : ST_ENOMEM;
    for (size_t i = 0; i < n && rv == ST_OK; i++) {
        const Strata__V1__RollupRow *r = b->rows[i];
        put_u8(w, (uint8_t)((r->count > 0 ? ROW_VALUES : 0) | (r->sketch ? ROW_SKETCH : 0)));
        if (r->count > 0) {
            iv[nv++] = (int64_t)r->count;
        }
        if (r->sketch != NULL) {
            sk[ns++] = r->sketch;
        }
    }
    if (rv == ST_OK) {
        put_ints(w, iv, nv);
        rv = w->rv;
    }
    for (int f = 0; f < (sc ? 1 : NFIELDS) && rv == ST_OK; f++) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (b->rows[i]->count > 0) {
                d[k++] = row_field(b->rows[i], f);
            }
        }
        rv = put_doubles(w, d, k);
    }
    rv = rv == ST_OK ? put_sketches(w, sk, ns) : rv;
    free(d);
    free(iv);
    free(sk);
    return rv;
}

int st_codec_encode_rollup(st_zctx *z, const Strata__V1__RollupBlock *b, bool sum_count_only,
                           st_buf *out)
{
    st_buf body;
    struct wr w;
    int rv;
    if (b->n_rows == 0 || b->n_rows > ST_CODEC_MAX_ROWS) {
        return ST_EINVAL;
    }
    st_buf_init(&body, ST_CODEC_MAX_BODY);
    w = (struct wr){&body, ST_OK};
    put_u8(&w, sum_count_only ? R_SUMCOUNT : 0);
    put_v(&w, zz(b->start_unix_ms));
    put_v(&w, b->bucket_ms);
    put_v(&w, b->n_rows);
    rv = w.rv == ST_OK ? put_rollup_columns(&w, b, sum_count_only) : w.rv;
    rv = rv == ST_OK ? seal(z, ST_CODEC_ROLLUP, (int64_t)b->n_rows * b->bucket_ms, &body, out) : rv;
    st_buf_free(&body);
    return rv;
}

static int get_rollup_columns(struct rd *r, st_cdec *d, Strata__V1__RollupRow *rows, size_t n,
                              bool sc)
{
    uint8_t *flags = arena_alloc(d, n);
    double *dv = arena_alloc(d, n * sizeof(double));
    int64_t *iv = arena_alloc(d, n * sizeof(int64_t));
    Strata__V1__Sketch **sk = arena_alloc(d, n * sizeof(*sk));
    size_t nv = 0;
    size_t ns = 0;
    if (flags == NULL || dv == NULL || iv == NULL || sk == NULL) {
        return ST_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        flags[i] = get_u8(r);
        r->bad = r->bad || (flags[i] & ~(ROW_VALUES | ROW_SKETCH)) != 0;
        nv += (flags[i] & ROW_VALUES) != 0;
        ns += (flags[i] & ROW_SKETCH) != 0;
    }
    get_ints(r, iv, nv);
    for (size_t i = 0, k = 0; i < n && !r->bad; i++) {
        strata__v1__rollup_row__init(&rows[i]);
        if (flags[i] & ROW_VALUES) {
            rows[i].count = (uint64_t)iv[k++];
            for (int f = sc ? 1 : NFIELDS; f < NFIELDS; f++) {
                set_row_field(&rows[i], f, NAN);
            }
        }
    }
    for (int f = 0; f < (sc ? 1 : NFIELDS) && !r->bad; f++) {
        get_doubles(r, dv, nv);
        for (size_t i = 0, k = 0; i < n && !r->bad; i++) {
            if (flags[i] & ROW_VALUES) {
                set_row_field(&rows[i], f, dv[k++]);
            }
        }
    }
    if (r->bad) {
        return ST_ECORRUPT;
    }
    if (get_sketches(r, d, sk, ns) != ST_OK) {
        return ST_ECORRUPT;
    }
    for (size_t i = 0, k = 0; i < n; i++) {
        if (flags[i] & ROW_SKETCH) {
            rows[i].sketch = sk[k++];
        }
    }
    return ST_OK;
}

int st_codec_decode_rollup(const void *val, size_t len, st_cdec *d)
{
    struct rd r;
    Strata__V1__RollupBlock *b;
    Strata__V1__RollupRow *rows;
    uint8_t hflags;
    uint64_t n;
    int rv;
    memset(d, 0, sizeof(*d));
    if ((rv = open_value(val, len, ST_CODEC_ROLLUP, d, &r)) != ST_OK) {
        goto fail;
    }
    hflags = get_u8(&r);
    if ((b = arena_alloc(d, sizeof(*b))) == NULL) {
        rv = ST_ENOMEM;
        goto fail;
    }
    strata__v1__rollup_block__init(b);
    b->start_unix_ms = unzz(get_v(&r));
    b->bucket_ms = (uint32_t)get_v(&r);
    n = get_v(&r);
    if (r.bad || (hflags & ~R_SUMCOUNT) != 0 || n == 0 || n > ST_CODEC_MAX_ROWS ||
        !fits(&r, n, 1)) {
        rv = ST_ECORRUPT;
        goto fail;
    }
    rows = arena_alloc(d, n * sizeof(*rows));
    b->rows = arena_alloc(d, n * sizeof(*b->rows));
    if (rows == NULL || b->rows == NULL) {
        rv = ST_ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        b->rows[i] = &rows[i];
    }
    b->n_rows = n;
    if ((rv = get_rollup_columns(&r, d, rows, n, hflags & R_SUMCOUNT)) != ST_OK) {
        goto fail;
    }
    if (r.p != r.end) {
        rv = ST_ECORRUPT;
        goto fail;
    }
    d->blk = b;
    return ST_OK;
fail:
    st_cdec_clear(d);
    return rv;
}

static int header_extra(const void *val, size_t len, uint8_t magic, int64_t *extra)
{
    struct rd r = {val, (const uint8_t *)val + len, false};
    int64_t e;
    if (get_u8(&r) != magic) {
        return ST_ECORRUPT;
    }
    (void)get_u8(&r);
    e = unzz(get_v(&r));
    if (r.bad) {
        return ST_ECORRUPT;
    }
    *extra = e;
    return ST_OK;
}

int st_codec_raw_end(const void *val, size_t len, int64_t *end)
{
    return header_extra(val, len, ST_CODEC_RAW, end);
}

int st_codec_rollup_span(const void *val, size_t len, int64_t *span)
{
    return header_extra(val, len, ST_CODEC_ROLLUP, span);
}

bool st_codec_is_raw(const void *val, size_t len)
{
    return len > 0 && *(const uint8_t *)val == ST_CODEC_RAW;
}

bool st_codec_is_rollup(const void *val, size_t len)
{
    return len > 0 && *(const uint8_t *)val == ST_CODEC_ROLLUP;
}
