/* Rollups and retention, built in the background in small transactions.
 *
 * Minutes are built in order behind a watermark once they are closed (end
 * + grace): for every series with raw blocks in the minute, one 1 m row
 * (and six 10 s rows for a distribution). A builder thread folds them in
 * read transactions and the writer puts them inside its own transactions,
 * moving the watermark with them (see "the builder thread"). Hours are
 * built from the 1 m rows once the minute watermark passes them. A raw
 * block that lands in a minute already built, or one the builder thread
 * may have read (a late frame, an agent draining its spool), marks
 * (minute, series) dirty in the same transaction, and the writer
 * recomputes that minute (and its hour) from raw data once the minute is
 * built: rollups are recomputed, never patched, so they stay exact across
 * restarts, out-of-order and late frames.
 *
 * Keys: rollups (res u8 | series u32 | bucket start u64), dirty (kind u8 |
 * bucket start u64 | series u32). */
#include "err.h"
#include "frame.h"
#include "log.h"
#include "sketch.h"
#include "store_internal.h"
#include "timeutil.h"
#include "util.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define MINUTE 60000LL
#define HOUR 3600000LL
#define TEN_S 10000LL
#define DAY 86400000LL
#define ROWS_10S 6
#define MAX_ITEMS_PER_TXN 20000
#define PRUNE_EVERY_MS 60000
#define MAX_DIRTY_MINUTES 64
#define STATE_KEY "rollup_state"
#define STATE_LEN 48
#define STATE_LEN_V1 40 /* before compaction */

enum { DIRTY_MINUTE = 'm', DIRTY_HOUR = 'h' };

int64_t st_res_ms(enum st_res res)
{
    switch (res) {
    case ST_RES_10S:
        return TEN_S;
    case ST_RES_1M:
        return MINUTE;
    case ST_RES_1H:
        return HOUR;
    default:
        return 0;
    }
}

/* How much time one fresh entry of a resolution covers. */
static int64_t entry_span(enum st_res res)
{
    return res == ST_RES_1H ? HOUR : MINUTE;
}

/* How much time one compacted entry covers. Level 0: an hour of raw
 * blocks and of 10 s and 1 m rows, a day of 1 h rows. Level 1, once that
 * closed too: 6 hours of raw blocks and of 10 s rows, a day of 1 m rows,
 * 30 days of 1 h rows in one entry, so that zstd, LMDB's entry overhead and
 * its whole overflow pages amortise over more (a raw query decodes whole
 * entries: 6 hours, not more). 0: none. */
static int64_t level_unit(int res, int level)
{
    static const int64_t units[4][2] = {
        {ST_COMPACT_MS, ST_COMPACT_MS_L1}, {HOUR, 6 * HOUR}, {HOUR, DAY}, {DAY, 30 * DAY}};
    return res >= 0 && res <= ST_RES_1H && level >= 0 && level <= 1 ? units[res][level] : 0;
}

/* The most time one entry of res may cover. */
static int64_t max_unit(int res)
{
    return level_unit(res, 1) != 0 ? level_unit(res, 1) : level_unit(res, 0);
}

/* The time a rollup entry covers: its header says for a compacted one. */
static int64_t rollup_span(int res, const MDB_val *v)
{
    int64_t span = 0;
    if (st_codec_is_rollup(v->mv_data, v->mv_size)) {
        return st_codec_rollup_span(v->mv_data, v->mv_size, &span) == ST_OK ? span : 0;
    }
    return entry_span((enum st_res)res);
}

static int64_t floor_to(int64_t t, int64_t unit)
{
    return t - ((t % unit) + unit) % unit;
}

/* ---- state ---- */

int st_rollup_load(st_store_txn *t)
{
    struct st_rollup_state *rs = &t->st->rs;
    MDB_val k = {sizeof(STATE_KEY) - 1, STATE_KEY};
    MDB_val v;
    int rc = mdb_get(t->txn, t->st->meta, &k, &v);
    memset(rs, 0, sizeof(*rs));
    if (rc == 0 && (v.mv_size == STATE_LEN || v.mv_size == STATE_LEN_V1)) {
        const uint8_t *p = v.mv_data;
        rs->wm_1m = (int64_t)st_be64(p);
        rs->cur_1m = st_be32(p + 8);
        rs->wm_1h = (int64_t)st_be64(p + 12);
        rs->cur_1h = st_be32(p + 20);
        /* a pass resumed half way would leave the retention bound of the
         * series before it unknown: start it again (st_maint_index) */
        rs->prune_sid = 0;
        if (v.mv_size == STATE_LEN) {
            rs->cmp_wm = (int64_t)st_be64(p + 28);
            rs->cmp_sid = st_be32(p + 36);
            rs->cmp_phase = p[40];
        }
    } else if (rc != MDB_NOTFOUND && rc != 0) {
        return st_store_map_mdb(rc, "get rollup state");
    }
    rs->loaded = true;
    atomic_store(&t->st->pub_wm_1m, rs->wm_1m);
    atomic_store(&t->st->pub_wm_1h, rs->wm_1h);
    return ST_OK;
}

/* Compaction works only below the hour watermark it reads (do_compact),
 * which only moves up, and saves it in the transaction that compacts: a
 * snapshot's saved watermark bounds the units of every compacted entry in
 * it, whatever the writer has done since. No state saved: nothing was
 * ever built, so nothing compacted. */
int64_t st_rollup_compacted_to(st_store *st, MDB_txn *txn)
{
    MDB_val k = {sizeof(STATE_KEY) - 1, STATE_KEY};
    MDB_val v;
    int64_t wm;
    int rc = mdb_get(txn, st->meta, &k, &v);
    if (rc == MDB_NOTFOUND) {
        return 0;
    }
    if (rc != 0 || (v.mv_size != STATE_LEN && v.mv_size != STATE_LEN_V1)) {
        return INT64_MAX;
    }
    wm = (int64_t)st_be64((const uint8_t *)v.mv_data + 12);
    return wm >= 0 ? wm : INT64_MAX;
}

int st_rollup_save(st_store_txn *t)
{
    const struct st_rollup_state *rs = &t->st->rs;
    uint8_t p[STATE_LEN] = {0};
    MDB_val k = {sizeof(STATE_KEY) - 1, STATE_KEY};
    MDB_val v = {STATE_LEN, p};
    st_put_be64(p, (uint64_t)rs->wm_1m);
    st_put_be32(p + 8, rs->cur_1m);
    st_put_be64(p + 12, (uint64_t)rs->wm_1h);
    st_put_be32(p + 20, rs->cur_1h);
    st_put_be32(p + 24, rs->prune_sid);
    st_put_be64(p + 28, (uint64_t)rs->cmp_wm);
    st_put_be32(p + 36, rs->cmp_sid);
    p[40] = rs->cmp_phase;
    return st_store_map_mdb(mdb_put(t->txn, t->st->meta, &k, &v, 0), "put rollup state");
}

static int put_dirty(st_store_txn *t, uint8_t kind, int64_t bucket, uint32_t id)
{
    uint8_t key[ST_DIRTY_KEY_LEN];
    MDB_val k = {ST_DIRTY_KEY_LEN, key};
    MDB_val v = {0, ""};
    key[0] = kind;
    st_put_be64(key + 1, (uint64_t)bucket);
    st_put_be32(key + 9, id);
    return st_store_map_mdb(mdb_put(t->txn, t->st->dirty, &k, &v, 0), "put dirty");
}

void st_rollup_index_init(st_store *st, bool empty)
{
    struct st_maint_index *mi = &st->mi;
    for (int p = 0; p <= ST_RES_1H; p++) {
        mi->prune_at[p] = empty ? INT64_MAX : INT64_MIN;
        mi->prune_acc[p] = INT64_MAX;
        mi->fresh_min[p] = empty ? INT64_MAX : INT64_MIN;
        mi->fresh_acc[p] = INT64_MAX;
        mi->compacted[p] = !empty;
    }
}

void st_rollup_note_entry(st_store *st, int phase, int64_t t, bool fresh)
{
    struct st_maint_index *mi = &st->mi;
    if (phase < 0 || phase > ST_RES_1H) {
        return;
    }
    mi->prune_at[phase] = ST_MIN(mi->prune_at[phase], t);
    mi->prune_acc[phase] = ST_MIN(mi->prune_acc[phase], t);
    if (fresh) {
        mi->fresh_min[phase] = ST_MIN(mi->fresh_min[phase], t);
        mi->fresh_acc[phase] = ST_MIN(mi->fresh_acc[phase], t);
    } else {
        mi->compacted[phase] = true;
    }
}

/* True when minute m of series id is already rolled up. */
static bool minute_built(const struct st_rollup_state *rs, int64_t m, uint32_t id)
{
    return m < rs->wm_1m || (m == rs->wm_1m && id < rs->cur_1m);
}

static bool hour_built(const struct st_rollup_state *rs, int64_t h, uint32_t id)
{
    return h < rs->wm_1h || (h == rs->wm_1h && id < rs->cur_1h);
}

int st_rollup_note_block(st_store_txn *t, uint32_t id, const Strata__V1__Series *s)
{
    struct st_rollup_state *rs = &t->st->rs;
    int64_t end;
    int64_t m;
    int rv = ST_OK;
    st_rollup_note_entry(t->st, ST_RES_RAW, s->start_unix_ms, true);
    /* the usual block, past every minute built or let to the builder:
     * nothing to mark (and no division, at a million blocks a minute) */
    if (rs->wm_1m != 0 && s->start_unix_ms >= ST_MAX(rs->wm_1m + MINUTE, t->st->bld.allow_to)) {
        return ST_OK;
    }
    end = st_store_block_end(s);
    m = floor_to(s->start_unix_ms, MINUTE);
    if (rs->wm_1m == 0) {
        /* The first block ever starts the watermarks. */
        rs->wm_1m = m;
        rs->wm_1h = floor_to(m, HOUR);
        t->rs_dirty = true;
        return ST_OK;
    }
    for (int n = 0; m < end && n < MAX_DIRTY_MINUTES && rv == ST_OK; m += MINUTE, n++) {
        /* built, or one the builder thread may have read already, in a
         * snapshot without this block */
        if (minute_built(rs, m, id) || m < t->st->bld.allow_to) {
            rv = put_dirty(t, DIRTY_MINUTE, m, id);
        }
    }
    return rv;
}

/* ---- row accumulation ---- */

struct racc {
    double sum;
    double min;
    double max;
    double first;
    double last;
    uint64_t count;
    int64_t first_t; /* first and last go by time, not by the order blocks */
    int64_t last_t;  /* are read in (a compacted hour, then late blocks) */
    st_sketch *sk;
};

static void racc_init(struct racc *a)
{
    memset(a, 0, sizeof(*a));
    a->min = INFINITY;
    a->max = -INFINITY;
}

static void racc_value(struct racc *a, int64_t ts, double v, double lo, double hi)
{
    if (a->count == 0 || ts < a->first_t) {
        a->first = v;
        a->first_t = ts;
    }
    if (a->count == 0 || ts >= a->last_t) {
        a->last = v;
        a->last_t = ts;
    }
    a->sum += v;
    a->min = fmin(a->min, lo);
    a->max = fmax(a->max, hi);
    a->count++;
}

static int racc_sketch(struct racc *a, const Strata__V1__Sketch *m)
{
    int rv;
    if (a->sk == NULL && (rv = st_sketch_new(m->alpha, &a->sk)) != ST_OK) {
        return rv;
    }
    return st_sketch_merge_proto(a->sk, m);
}

/* Merges a stored row; rows must come in time order for first/last. */
static int racc_row(struct racc *a, const Strata__V1__RollupRow *r)
{
    if (r->sketch != NULL) {
        int rv = racc_sketch(a, r->sketch);
        if (rv != ST_OK) {
            return rv;
        }
    }
    if (r->count == 0) {
        return ST_OK;
    }
    if (a->count == 0) {
        a->first = r->first;
    }
    a->last = r->last;
    a->sum += r->sum;
    a->min = fmin(a->min, r->min);
    a->max = fmax(a->max, r->max);
    a->count += r->count;
    return ST_OK;
}

static bool racc_empty(const struct racc *a)
{
    return a->count == 0 && (a->sk == NULL || st_sketch_count(a->sk) == 0);
}

static int racc_to_row(const struct racc *a, Strata__V1__RollupRow *row, Strata__V1__Sketch *sk)
{
    strata__v1__rollup_row__init(row);
    if (a->count > 0) {
        /* rows of a counter compacted to sum and count have no min or max
         * (NaN, which fmin and fmax skip): NaN stays NaN, not +-inf */
        bool extremes = a->min <= a->max;
        row->sum = a->sum;
        row->min = extremes ? a->min : NAN;
        row->max = extremes ? a->max : NAN;
        row->first = a->first;
        row->last = a->last;
        row->count = a->count;
    }
    if (a->sk != NULL) {
        strata__v1__sketch__init(sk);
        row->sketch = sk;
        return st_sketch_to_proto(a->sk, sk);
    }
    return ST_OK;
}

/* A rollup entry as a block: a fresh one unpacked, a compacted one decoded. */
struct rblock {
    Strata__V1__RollupBlock *fresh;
    st_cdec dec;
    const Strata__V1__RollupBlock *b;
};

static int rblock_open(const MDB_val *v, struct rblock *r)
{
    memset(r, 0, sizeof(*r));
    if (st_codec_is_rollup(v->mv_data, v->mv_size)) {
        int rv = st_codec_decode_rollup(v->mv_data, v->mv_size, &r->dec);
        r->b = r->dec.blk;
        return rv;
    }
    r->fresh = strata__v1__rollup_block__unpack(NULL, v->mv_size, v->mv_data);
    r->b = r->fresh;
    return r->fresh != NULL ? ST_OK : ST_ECORRUPT;
}

static void rblock_close(struct rblock *r)
{
    strata__v1__rollup_block__free_unpacked(r->fresh, NULL);
    st_cdec_clear(&r->dec);
    r->fresh = NULL;
    r->b = NULL;
}

static void rollup_key(uint8_t *key, int res, uint32_t id, int64_t start)
{
    key[0] = (uint8_t)res;
    st_put_be32(key + 1, id);
    st_put_be64(key + 5, (uint64_t)start);
}

/* Whether the compacted rollups of series id keep sum and count only: a
 * counter's do ("counters summed"); its min, max, first and last were
 * most of its bytes, and the query engine reads those from raw points
 * (query_agg.c's needs_raw). */
static bool sum_count_only(st_store_txn *t, uint32_t id)
{
    Strata__V1__SeriesRecord *rec = st_store_series_record(t->txn, t->st, id);
    bool sc = rec != NULL && rec->kind == STRATA__V1__KIND__COUNTER;
    strata__v1__series_record__free_unpacked(rec, NULL);
    return sc;
}

/* Writes blk over the rows it covers in the compacted entry at key (a late
 * minute rebuilt after its hour was compacted). */
static int merge_compacted(st_store_txn *t, const uint8_t *key, const MDB_val *old,
                           const Strata__V1__RollupBlock *blk)
{
    struct rblock rb;
    Strata__V1__RollupBlock merged = STRATA__V1__ROLLUP_BLOCK__INIT;
    Strata__V1__RollupRow **rows = NULL;
    st_buf out;
    MDB_val k = {ST_ROLLUP_KEY_LEN, (void *)key};
    MDB_val v;
    int rv = rblock_open(old, &rb);
    st_buf_init(&out, 2 * ST_CODEC_MAX_BODY);
    if (rv == ST_OK && (rows = malloc(rb.b->n_rows * sizeof(*rows))) == NULL) {
        rv = ST_ENOMEM;
    }
    if (rv == ST_OK) {
        merged = *rb.b;
        memcpy(rows, rb.b->rows, rb.b->n_rows * sizeof(*rows));
        for (size_t i = 0; i < blk->n_rows; i++) {
            int64_t at = blk->start_unix_ms + (int64_t)i * blk->bucket_ms - rb.b->start_unix_ms;
            if (rb.b->bucket_ms == blk->bucket_ms && at >= 0 &&
                at / blk->bucket_ms < (int64_t)rb.b->n_rows) {
                rows[at / blk->bucket_ms] = blk->rows[i];
            }
        }
        merged.rows = rows;
        rv = st_codec_encode_rollup(t->st->z, &merged, sum_count_only(t, st_be32(key + 1)), &out);
    }
    if (rv == ST_OK) {
        v = (MDB_val){out.len, out.data};
        rv = st_store_map_mdb(mdb_put(t->txn, t->st->rollups, &k, &v, 0), "put rollup");
    }
    free(rows);
    rblock_close(&rb);
    st_buf_free(&out);
    return rv;
}

/* Puts a fresh rollup entry, or merges it into the compacted entry that
 * already covers its buckets. */
static int put_rollup(st_store_txn *t, enum st_res res, uint32_t id,
                      const Strata__V1__RollupBlock *blk)
{
    uint8_t key[ST_ROLLUP_KEY_LEN];
    MDB_val k = {ST_ROLLUP_KEY_LEN, key};
    MDB_val v;
    int rc;
    for (int level = 1; level >= 0; level--) {
        int64_t unit = level_unit(res, level);
        int64_t base = unit ? floor_to(blk->start_unix_ms, unit) : 0;
        if (unit == 0) {
            continue;
        }
        rollup_key(key, res, id, base);
        rc = mdb_get(t->txn, t->st->rollups, &k, &v);
        if (rc == 0 && st_codec_is_rollup(v.mv_data, v.mv_size) &&
            base + rollup_span(res, &v) > blk->start_unix_ms) {
            return merge_compacted(t, key, &v, blk);
        }
        if (rc != 0 && rc != MDB_NOTFOUND) {
            return st_store_map_mdb(rc, "get rollup");
        }
    }
    rollup_key(key, res, id, blk->start_unix_ms);
    v.mv_size = strata__v1__rollup_block__get_packed_size(blk);
    rc = mdb_put(t->txn, t->st->rollups, &k, &v, MDB_RESERVE);
    if (rc == 0) {
        strata__v1__rollup_block__pack(blk, v.mv_data);
        st_rollup_note_entry(t->st, res, blk->start_unix_ms, true);
    }
    return st_store_map_mdb(rc, "put rollup");
}

/* Where a block of rows goes: put into the write transaction, or packed
 * into the builder thread's rows for the writer to put. */
typedef int (*rows_sink)(void *arg, enum st_res res, uint32_t id,
                         const Strata__V1__RollupBlock *blk);

static int sink_txn(void *arg, enum st_res res, uint32_t id, const Strata__V1__RollupBlock *blk)
{
    return put_rollup(arg, res, id, blk);
}

/* Hands rows[0..n) as one RollupBlock under (res, id, start) to sink. */
static int emit_rows(rows_sink sink, void *arg, enum st_res res, uint32_t id, int64_t start,
                     const struct racc *acc, size_t n)
{
    Strata__V1__RollupBlock blk = STRATA__V1__ROLLUP_BLOCK__INIT;
    Strata__V1__RollupRow rows[ROWS_10S];
    Strata__V1__RollupRow *rowp[ROWS_10S];
    Strata__V1__Sketch sks[ROWS_10S];
    int rv = ST_OK;
    size_t made = 0;
    for (; made < n && rv == ST_OK; made++) {
        memset(&sks[made], 0, sizeof(sks[made]));
        rv = racc_to_row(&acc[made], &rows[made], &sks[made]);
        rowp[made] = &rows[made];
    }
    if (rv == ST_OK) {
        blk.start_unix_ms = start;
        blk.bucket_ms = (uint32_t)st_res_ms(res);
        blk.rows = rowp;
        blk.n_rows = n;
        rv = sink(arg, res, id, &blk);
    }
    for (size_t i = 0; i < made; i++) {
        if (rows[i].sketch != NULL) {
            st_sketch_proto_clear(&sks[i]);
        }
    }
    return rv;
}

/* Writes rows[0..n) as one RollupBlock under (res, id, start). */
static int put_rows(st_store_txn *t, enum st_res res, uint32_t id, int64_t start,
                    const struct racc *acc, size_t n)
{
    return emit_rows(sink_txn, t, res, id, start, acc, n);
}

/* ---- building ---- */

static void free_accs(struct racc *a, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        st_sketch_free(a[i].sk);
        a[i].sk = NULL;
    }
}

/* Folds the points of block b inside [m, m + 1 min) into the minute row
 * and, for distributions, the six 10 s rows: a counter's or gauge's 10 s
 * rows are folded from raw blocks when read (fold_10s), which costs about
 * what reading stored rows does, while merging sketches does not. */
static int fold_block(const Strata__V1__Series *b, int64_t m, struct racc *r10, struct racc *r1m)
{
    size_t n = st_series_npoints(b);
    double vals[ST_FRAME_MAX_POINTS];
    bool dist = b->n_sketches > 0;
    int rv = ST_OK;
    if (n > ST_FRAME_MAX_POINTS) {
        return ST_ECORRUPT;
    }
    if (!dist) {
        st_series_values(b, vals);
    }
    for (size_t i = 0; i < n && rv == ST_OK; i++) {
        int64_t ts = b->start_unix_ms + (int64_t)i * b->interval_ms;
        struct racc *a;
        if (ts < m || ts >= m + MINUTE) {
            continue;
        }
        a = &r10[(ts - m) / TEN_S];
        if (dist) {
            rv = racc_sketch(a, b->sketches[i]);
            rv = rv == ST_OK ? racc_sketch(r1m, b->sketches[i]) : rv;
        } else {
            double lo = b->n_mins > i ? b->mins[i] : vals[i];
            double hi = b->n_maxs > i ? b->maxs[i] : vals[i];
            racc_value(r1m, ts, vals[i], lo, hi);
        }
    }
    return rv;
}

/* Folds the raw blocks of series id in minute m into its rows and hands
 * them to sink (the 10 s rows of a distribution, the 1 m row). Nothing
 * goes to sink when the minute holds no point. pc reads the points of a
 * write or a read transaction. */
static int fold_minute(MDB_cursor *pc, int64_t m, uint32_t id, struct st_blockset *bs,
                       rows_sink sink, void *arg)
{
    struct racc r10[ROWS_10S];
    struct racc r1m;
    MDB_val k;
    MDB_val v;
    int rv = ST_OK;
    int rc;
    for (int i = 0; i < ROWS_10S; i++) {
        racc_init(&r10[i]);
    }
    racc_init(&r1m);
    for (rc = st_store_seek_blocks(pc, id, m, INT64_MAX, &k, &v); rc == 0 && rv == ST_OK;
         rc = mdb_cursor_get(pc, &k, &v, MDB_NEXT)) {
        if (k.mv_size != ST_POINT_KEY_LEN || st_be32(k.mv_data) != id ||
            (int64_t)st_be64((uint8_t *)k.mv_data + 4) >= m + MINUTE) {
            break;
        }
        if ((rv = st_blockset_read(pc, id, &k, &v, bs)) == ST_ECORRUPT) {
            rv = ST_OK; /* what decodes is folded */
        }
        for (size_t i = 0; i < bs->n && rv == ST_OK; i++) {
            rv = fold_block(bs->list[i], m, r10, &r1m);
        }
    }
    st_blockset_clear(bs);
    if (rv == ST_OK && r1m.sk != NULL) {
        rv = emit_rows(sink, arg, ST_RES_10S, id, m, r10, ROWS_10S);
    }
    if (rv == ST_OK && !racc_empty(&r1m)) {
        rv = emit_rows(sink, arg, ST_RES_1M, id, m, &r1m, 1);
    }
    free_accs(r10, ROWS_10S);
    free_accs(&r1m, 1);
    return rv;
}

/* Recomputes the 10 s and 1 m rollups of series id for minute m from raw
 * blocks, in the write transaction (late data). */
static int build_minute(st_store_txn *t, MDB_cursor *pc, int64_t m, uint32_t id)
{
    struct st_blockset bs = {0};
    int rv = fold_minute(pc, m, id, &bs, sink_txn, t);
    st_blockset_free(&bs);
    return rv;
}

/* Recomputes the 1 h rollup of series id for hour h from its 1 m rows. */
static int build_hour(st_store_txn *t, MDB_cursor *rc_cur, int64_t h, uint32_t id)
{
    uint8_t key[ST_ROLLUP_KEY_LEN];
    MDB_val k = {ST_ROLLUP_KEY_LEN, key};
    MDB_val v;
    struct racc acc;
    int rv = ST_OK;
    int rc;
    racc_init(&acc);
    /* the hour's rows may sit in a compacted entry that starts before it */
    rollup_key(key, ST_RES_1M, id, floor_to(h, max_unit(ST_RES_1M)));
    for (rc = mdb_cursor_get(rc_cur, &k, &v, MDB_SET_RANGE); rc == 0 && rv == ST_OK;
         rc = mdb_cursor_get(rc_cur, &k, &v, MDB_NEXT)) {
        const uint8_t *p = k.mv_data;
        int64_t start = k.mv_size == ST_ROLLUP_KEY_LEN ? (int64_t)st_be64(p + 5) : 0;
        struct rblock rb;
        if (k.mv_size != ST_ROLLUP_KEY_LEN || p[0] != ST_RES_1M || st_be32(p + 1) != id ||
            start >= h + HOUR) {
            break;
        }
        if (start + rollup_span(ST_RES_1M, &v) <= h || rblock_open(&v, &rb) != ST_OK) {
            continue;
        }
        for (size_t i = 0; i < rb.b->n_rows && rv == ST_OK; i++) {
            int64_t at = rb.b->start_unix_ms + (int64_t)i * rb.b->bucket_ms;
            if (at >= h && at < h + HOUR) {
                rv = racc_row(&acc, rb.b->rows[i]);
            }
        }
        rblock_close(&rb);
    }
    if (rv == ST_OK && !racc_empty(&acc)) {
        rv = put_rows(t, ST_RES_1H, id, h, &acc, 1);
    }
    free_accs(&acc, 1);
    return rv;
}

struct work {
    st_store_txn *t;
    MDB_cursor *pc; /* points */
    MDB_cursor *rc; /* rollups */
    MDB_cursor *dc; /* dirty */
    int64_t now;
    int64_t deadline_ns;
    int items;
};

static bool out_of_budget(const struct work *w)
{
    return w->items >= MAX_ITEMS_PER_TXN || st_time_mono_ns() >= w->deadline_ns;
}

/* Rebuilds late-data minutes and hours. */
static int do_dirty(struct work *w)
{
    struct st_rollup_state *rs = &w->t->st->rs;
    MDB_val k;
    MDB_val v;
    int rv = ST_OK;
    while (rv == ST_OK && !out_of_budget(w) && mdb_cursor_get(w->dc, &k, &v, MDB_FIRST) == 0) {
        const uint8_t *p = k.mv_data;
        int64_t b = k.mv_size == ST_DIRTY_KEY_LEN ? (int64_t)st_be64(p + 1) : 0;
        uint32_t id = k.mv_size == ST_DIRTY_KEY_LEN ? st_be32(p + 9) : 0;
        uint8_t kind = k.mv_size == ST_DIRTY_KEY_LEN ? p[0] : 0;
        /* A closed minute the builder thread has not handed over yet: its
         * rows, when they come, may miss the late block, so the rebuild
         * waits for them. Minute marks sort last ('h' < 'm'), in the order
         * the builder goes: the rest waits too. */
        if (kind == DIRTY_MINUTE && !minute_built(rs, b, id)) {
            break;
        }
        if (kind == DIRTY_MINUTE) {
            rv = build_minute(w->t, w->pc, b, id);
            if (rv == ST_OK && hour_built(rs, floor_to(b, HOUR), id)) {
                rv = put_dirty(w->t, DIRTY_HOUR, floor_to(b, HOUR), id);
            }
        } else if (kind == DIRTY_HOUR) {
            rv = build_hour(w->t, w->rc, b, id);
        }
        if (rv == ST_OK) {
            /* The puts above moved the cursor: find the entry again. */
            uint8_t key[ST_DIRTY_KEY_LEN];
            MDB_val dk = {ST_DIRTY_KEY_LEN, key};
            key[0] = kind;
            st_put_be64(key + 1, (uint64_t)b);
            st_put_be32(key + 9, id);
            int rc = mdb_del(w->t->txn, w->t->st->dirty, &dk, NULL);
            rv = rc == MDB_NOTFOUND ? ST_OK : st_store_map_mdb(rc, "del dirty");
            if (k.mv_size != ST_DIRTY_KEY_LEN) {
                rv = st_store_map_mdb(mdb_cursor_del(w->dc, 0), "del bad dirty");
            }
        }
        w->items++;
    }
    return rv;
}

/* Next series with raw blocks at or after (from_id, t0); false at the end. */
static bool next_series(MDB_cursor *cur, uint8_t dbres, uint32_t from_id, int64_t t0, uint32_t *id)
{
    uint8_t key[ST_POINT_KEY_LEN] = {0};
    MDB_val k;
    MDB_val v;
    if (dbres == 0) {
        st_put_be32(key, from_id);
        st_put_be64(key + 4, (uint64_t)(t0 > 0 ? t0 : 0));
        k = (MDB_val){ST_POINT_KEY_LEN, key};
        if (mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE) != 0 || k.mv_size != ST_POINT_KEY_LEN) {
            return false;
        }
        *id = st_be32(k.mv_data);
        return true;
    }
    key[0] = dbres;
    st_put_be32(key + 1, from_id);
    st_put_be64(key + 5, (uint64_t)(t0 > 0 ? t0 : 0));
    k = (MDB_val){ST_ROLLUP_KEY_LEN, key};
    if (mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE) != 0 || k.mv_size != ST_ROLLUP_KEY_LEN ||
        ((uint8_t *)k.mv_data)[0] != dbres) {
        return false;
    }
    *id = st_be32((uint8_t *)k.mv_data + 1);
    return true;
}

/* Builds the hour at the hour watermark once its minutes are built. */
static int do_hours(struct work *w, bool *more)
{
    struct st_rollup_state *rs = &w->t->st->rs;
    int rv = ST_OK;
    while (rv == ST_OK && rs->wm_1h != 0 && rs->wm_1h + HOUR <= rs->wm_1m) {
        uint32_t id;
        if (out_of_budget(w)) {
            *more = true;
            return ST_OK;
        }
        if (rs->cur_1h == UINT32_MAX || !next_series(w->rc, ST_RES_1M, rs->cur_1h, 0, &id)) {
            rs->wm_1h += HOUR;
            rs->cur_1h = 0;
        } else {
            rv = build_hour(w->t, w->rc, rs->wm_1h, id);
            rs->cur_1h = id == UINT32_MAX ? UINT32_MAX : id + 1;
        }
        w->t->rs_dirty = true;
        w->items++;
    }
    return rv;
}

/* ---- retention ---- */

/* Entries that end before this are past retention. Raw blocks stay until
 * their minutes are rolled up and 1 m rows until their hours are: a
 * backlog older than the retention still reaches the coarser rollups. */
static int64_t cutoff_of(const st_store *st, int phase, int64_t now)
{
    switch (phase) {
    case ST_RES_10S:
        return now - st->ret.r10s_ms;
    case ST_RES_1M:
        return ST_MIN(now - st->ret.r1m_ms, st->rs.wm_1h);
    case ST_RES_1H:
        return now - st->ret.r1h_ms;
    default:
        return ST_MIN(now - st->ret.raw_ms, st->rs.wm_1m);
    }
}

/* The key time and span of the entry at k, v if it is one of series id in
 * phase's database. */
static bool entry_of(int phase, uint32_t id, const MDB_val *k, const MDB_val *v, int64_t *t,
                     int64_t *span)
{
    const uint8_t *p = k->mv_data;
    bool same = phase == 0
                    ? (k->mv_size == ST_POINT_KEY_LEN && st_be32(p) == id)
                    : (k->mv_size == ST_ROLLUP_KEY_LEN && p[0] == phase && st_be32(p + 1) == id);
    if (!same) {
        return false;
    }
    *t = phase == 0 ? (int64_t)st_be64(p + 4) : (int64_t)st_be64(p + 5);
    if (phase == 0) {
        int64_t end = st_store_entry_end(v);
        *span = end > *t ? end - *t : 0;
    } else {
        *span = rollup_span(phase, v);
    }
    return true;
}

/* Deletes the entries of one series older than cutoff; the cursor stands
 * on its first entry. Counts what was deleted in *deleted and lowers *next
 * to the earliest time a remaining entry can be past retention: the first
 * one's end, or the start of the second (entries are in start order). */
static int prune_series(MDB_cursor *cur, int phase, uint32_t id, int64_t cutoff, int *deleted,
                        int64_t *next)
{
    MDB_val k;
    MDB_val v;
    int64_t t;
    int64_t span;
    int rc = mdb_cursor_get(cur, &k, &v, MDB_GET_CURRENT);
    while (rc == 0) {
        if (!entry_of(phase, id, &k, &v, &t, &span)) {
            return ST_OK;
        }
        /* An entry is dropped once all it covers is past the cutoff. */
        if (t + span > cutoff) {
            *next = ST_MIN(*next, t + span);
            if (mdb_cursor_get(cur, &k, &v, MDB_NEXT) == 0 &&
                entry_of(phase, id, &k, &v, &t, &span)) {
                *next = ST_MIN(*next, t);
            }
            return ST_OK;
        }
        if ((rc = mdb_cursor_del(cur, 0)) != 0) {
            return st_store_map_mdb(rc, "prune");
        }
        (*deleted)++;
        rc = mdb_cursor_get(cur, &k, &v, MDB_GET_CURRENT);
    }
    return ST_OK;
}

/* Whether phase holds an entry that may be past retention now. */
static bool prune_due(const st_store *st, int phase, int64_t now)
{
    return st->mi.prune_at[phase] <= cutoff_of(st, phase, now);
}

/* Starts phase of the retention pass, or skips it when nothing in it can be
 * past retention. False when it was skipped. */
static bool prune_phase_start(struct work *w, int phase)
{
    st_store *st = w->t->st;
    if (!prune_due(st, phase, w->now)) {
        return false;
    }
    st->mi.prune_acc[phase] = INT64_MAX;
    return true;
}

static int do_prune(struct work *w, bool *more)
{
    st_store *st = w->t->st;
    struct st_rollup_state *rs = &st->rs;
    int rv = ST_OK;
    if (w->now < rs->prune_due) {
        return ST_OK;
    }
    while (rv == ST_OK && rs->prune_phase <= ST_RES_1H) {
        MDB_cursor *cur = rs->prune_phase == 0 ? w->pc : w->rc;
        uint32_t id;
        int deleted = 0;
        if (out_of_budget(w)) {
            *more = true;
            return ST_OK;
        }
        if (rs->prune_sid == 0 && !prune_phase_start(w, rs->prune_phase)) {
            rs->prune_phase++;
            continue;
        }
        if (rs->prune_sid == UINT32_MAX ||
            !next_series(cur, rs->prune_phase, rs->prune_sid, 0, &id)) {
            /* the pass saw every series: what it found is the bound */
            st->mi.prune_at[rs->prune_phase] = st->mi.prune_acc[rs->prune_phase];
            rs->prune_phase++;
            rs->prune_sid = 0;
            continue;
        }
        rv = prune_series(cur, rs->prune_phase, id, cutoff_of(st, rs->prune_phase, w->now),
                          &deleted, &st->mi.prune_acc[rs->prune_phase]);
        rs->prune_sid = id == UINT32_MAX ? UINT32_MAX : id + 1;
        w->items += 1 + deleted;
        w->t->rs_dirty = true;
    }
    rs->prune_phase = 0;
    rs->prune_sid = 0;
    rs->prune_due = w->now + PRUNE_EVERY_MS;
    return rv;
}

/* ---- compaction ----
 * Once an hour's rollups are built (the hour watermark passed it), each
 * series' raw blocks of that hour become one compacted entry under (id,
 * hour, seq 0), and its 10 s and 1 m rollup entries one per resolution
 * under the hour (1 h rows: one per day). One transaction deletes the
 * fresh entries and writes the compacted one, so a crash leaves either.
 * Late data for a compacted hour stays fresh until the next pass folds it
 * in; late rollup rows are merged into the compacted entry at once. */

#define LOOKBACK_MS DAY /* later data than this behind the watermark stays fresh */
/* Level 1 merges only groups up to these stored sizes: 64 KiB of raw
 * entries take about 18 ms to merge, 170 KiB of rollup rows about 9 ms. */
#define ST_MERGE_MAX_RAW (64u << 10)
#define ST_MERGE_MAX_ROLLUP (256u << 10)

struct group {
    uint8_t (*keys)[ST_POINT_KEY_LEN];
    size_t n;
    size_t cap;
    bool fresh; /* holds an entry not yet compacted */
    bool too_big;
    size_t bytes; /* the values' stored sizes */
};

static int group_add(struct group *g, const MDB_val *k)
{
    if (g->n == g->cap) {
        size_t ncap = g->cap ? g->cap * 2 : 64;
        void *nk;
        if (ncap > ST_CODEC_MAX_BLOCKS) {
            g->too_big = true;
            return ST_OK;
        }
        if ((nk = realloc(g->keys, ncap * sizeof(*g->keys))) == NULL) {
            return ST_ENOMEM;
        }
        g->keys = nk;
        g->cap = ncap;
    }
    memcpy(g->keys[g->n++], k->mv_data, k->mv_size);
    return ST_OK;
}

/* Deletes the group's entries and puts val under key. */
static int replace_group(struct work *w, MDB_dbi dbi, const struct group *g, size_t klen,
                         const uint8_t *key, const st_buf *val)
{
    MDB_val v = {val->len, val->data};
    MDB_val k = {klen, (void *)key};
    for (size_t i = 0; i < g->n; i++) {
        MDB_val dk = {klen, g->keys[i]};
        int rc = mdb_del(w->t->txn, dbi, &dk, NULL);
        if (rc != 0 && rc != MDB_NOTFOUND) {
            return st_store_map_mdb(rc, "del compacted");
        }
    }
    if (klen == ST_POINT_KEY_LEN) {
        st_rollup_note_entry(w->t->st, ST_RES_RAW, (int64_t)st_be64(key + 4), false);
    } else {
        st_rollup_note_entry(w->t->st, key[0], (int64_t)st_be64(key + 5), false);
    }
    return st_store_map_mdb(mdb_put(w->t->txn, dbi, &k, &v, 0), "put compacted");
}

static int compact_raw(struct work *w, uint32_t id, int64_t base, const struct group *g)
{
    struct st_blocks *bl = calloc(g->n, sizeof(*bl));
    const Strata__V1__Series **list = NULL;
    size_t nl = 0;
    size_t cap = 0;
    uint8_t key[ST_POINT_KEY_LEN] = {0};
    st_buf out;
    int rv = bl != NULL ? ST_OK : ST_ENOMEM;
    st_buf_init(&out, 2 * ST_CODEC_MAX_BODY);
    for (size_t i = 0; i < g->n && rv == ST_OK; i++) {
        MDB_val k = {ST_POINT_KEY_LEN, g->keys[i]};
        MDB_val v;
        int rc = mdb_get(w->t->txn, w->t->st->points, &k, &v);
        if (rc != 0 || st_blocks_open(&v, &bl[i]) != ST_OK) {
            rv = rc != 0 ? st_store_map_mdb(rc, "get block") : ST_ECORRUPT;
            break;
        }
        if (nl + bl[i].n > cap) {
            size_t ncap = (nl + bl[i].n) * 2;
            const Strata__V1__Series **nlist = realloc(list, ncap * sizeof(*list));
            if (nlist == NULL) {
                rv = ST_ENOMEM;
                break;
            }
            list = nlist;
            cap = ncap;
        }
        for (size_t j = 0; j < bl[i].n; j++) {
            list[nl++] = bl[i].list[j];
        }
    }
    if (rv == ST_OK && nl > ST_CODEC_MAX_BLOCKS) {
        rv = ST_ETOOBIG;
    }
    if (rv == ST_OK) {
        st_store_sort_blocks(list, nl);
        rv = st_codec_encode_raw(w->t->st->z, list, nl, &out);
    }
    if (rv == ST_OK) {
        st_put_be32(key, id);
        st_put_be64(key + 4, (uint64_t)base);
        rv = replace_group(w, w->t->st->points, g, ST_POINT_KEY_LEN, key, &out);
    }
    for (size_t i = 0; bl != NULL && i < g->n; i++) {
        st_blocks_close(&bl[i]);
    }
    free(bl);
    free(list);
    st_buf_free(&out);
    return rv;
}

static int compact_rollup(struct work *w, int res, uint32_t id, int64_t base, int64_t unit,
                          const struct group *g, bool sc)
{
    int64_t bucket = st_res_ms((enum st_res)res);
    size_t nrows = (size_t)(unit / bucket);
    struct rblock *rb = calloc(g->n, sizeof(*rb));
    Strata__V1__RollupRow **rows = calloc(nrows, sizeof(*rows));
    Strata__V1__RollupRow empty = STRATA__V1__ROLLUP_ROW__INIT;
    Strata__V1__RollupBlock blk = STRATA__V1__ROLLUP_BLOCK__INIT;
    uint8_t key[ST_ROLLUP_KEY_LEN];
    st_buf out;
    int rv = rb != NULL && rows != NULL ? ST_OK : ST_ENOMEM;
    st_buf_init(&out, 2 * ST_CODEC_MAX_BODY);
    for (size_t i = 0; rows != NULL && i < nrows; i++) {
        rows[i] = &empty;
    }
    for (size_t i = 0; i < g->n && rv == ST_OK; i++) {
        MDB_val k = {ST_ROLLUP_KEY_LEN, g->keys[i]};
        MDB_val v;
        int rc = mdb_get(w->t->txn, w->t->st->rollups, &k, &v);
        if (rc != 0 || rblock_open(&v, &rb[i]) != ST_OK) {
            rv = rc != 0 ? st_store_map_mdb(rc, "get rollup") : ST_ECORRUPT;
            break;
        }
        for (size_t j = 0; j < rb[i].b->n_rows; j++) {
            int64_t at = rb[i].b->start_unix_ms + (int64_t)j * rb[i].b->bucket_ms - base;
            if (rb[i].b->bucket_ms == bucket && at >= 0 && at / bucket < (int64_t)nrows) {
                rows[at / bucket] = rb[i].b->rows[j];
            }
        }
    }
    if (rv == ST_OK) {
        blk.start_unix_ms = base;
        blk.bucket_ms = (uint32_t)bucket;
        blk.rows = rows;
        blk.n_rows = nrows;
        rv = st_codec_encode_rollup(w->t->st->z, &blk, sc, &out);
    }
    if (rv == ST_OK) {
        rollup_key(key, res, id, base);
        rv = replace_group(w, w->t->st->rollups, g, ST_ROLLUP_KEY_LEN, key, &out);
    }
    for (size_t i = 0; rb != NULL && i < g->n; i++) {
        rblock_close(&rb[i]);
    }
    free(rb);
    free(rows);
    st_buf_free(&out);
    return rv;
}

/* The key of phase's entry of series id at time t, and what a key holds. */
static size_t phase_key(int phase, uint32_t id, int64_t t, uint8_t *key)
{
    if (phase == 0) {
        memset(key, 0, ST_POINT_KEY_LEN);
        st_put_be32(key, id);
        st_put_be64(key + 4, (uint64_t)(t > 0 ? t : 0));
        return ST_POINT_KEY_LEN;
    }
    rollup_key(key, phase, id, t > 0 ? t : 0);
    return ST_ROLLUP_KEY_LEN;
}

static bool key_of(int phase, uint32_t id, const MDB_val *k, int64_t *t)
{
    const uint8_t *p = k->mv_data;
    if (phase == 0) {
        *t = k->mv_size == ST_POINT_KEY_LEN ? (int64_t)st_be64(p + 4) : 0;
        return k->mv_size == ST_POINT_KEY_LEN && st_be32(p) == id;
    }
    *t = k->mv_size == ST_ROLLUP_KEY_LEN ? (int64_t)st_be64(p + 5) : 0;
    return k->mv_size == ST_ROLLUP_KEY_LEN && p[0] == phase && st_be32(p + 1) == id;
}

/* Collects the entries of the first unit at or after *at that closed before
 * limit; false when there is none. */
static int collect_group(struct work *w, int phase, int64_t unit, uint32_t id, int64_t limit,
                         int64_t *at, struct group *g, bool *found)
{
    MDB_cursor *cur = phase == 0 ? w->pc : w->rc;
    uint8_t key[ST_POINT_KEY_LEN];
    MDB_val k = {phase_key(phase, id, *at, key), key};
    MDB_val v;
    int64_t t;
    int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    int rv = ST_OK;
    *found = false;
    g->n = 0;
    g->fresh = false;
    g->too_big = false;
    g->bytes = 0;
    if (rc != 0 || !key_of(phase, id, &k, &t) || floor_to(t, unit) + unit > limit) {
        return ST_OK;
    }
    *at = floor_to(t, unit);
    *found = true;
    for (; rc == 0 && rv == ST_OK; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (!key_of(phase, id, &k, &t) || floor_to(t, unit) != *at) {
            break;
        }
        g->fresh = g->fresh || !(phase == 0 ? st_codec_is_raw(v.mv_data, v.mv_size)
                                            : st_codec_is_rollup(v.mv_data, v.mv_size));
        rv = group_add(g, &k);
        g->bytes += v.mv_size;
        w->items++;
    }
    return rv;
}

/* Compacts every closed unit of one level of series id in phase's
 * database: fresh entries into level 0 units, then those into level 1. */
static int compact_level(struct work *w, int phase, int level, uint32_t id, int64_t limit, bool sc,
                         struct group *g)
{
    int64_t unit = level_unit(phase, level);
    int64_t at = floor_to(limit - ST_MAX(LOOKBACK_MS, unit), unit);
    bool found = true;
    int rv = ST_OK;
    while (rv == ST_OK && found && !out_of_budget(w)) {
        rv = collect_group(w, phase, unit, id, limit, &at, g, &found);
        /* merging entries that are large already saves little (their
         * pages are nearly full) and would cost a slice more than its
         * budget: they stay as they are */
        bool merge = level > 0 && g->n > 1 &&
                     g->bytes <= (phase == 0 ? ST_MERGE_MAX_RAW : ST_MERGE_MAX_ROLLUP);
        if (rv == ST_OK && found && (g->fresh || merge) && !g->too_big) {
            rv = phase == 0 ? compact_raw(w, id, at, g)
                            : compact_rollup(w, phase, id, at, unit, g, sc);
            if (rv == ST_ETOOBIG || rv == ST_ECORRUPT) {
                ST_WARN("store", "series %u: entries at %lld stay uncompacted: %s", id,
                        (long long)at, st_strerror(rv));
                rv = ST_OK;
            }
        }
        at += unit;
    }
    return rv;
}

static int compact_series(struct work *w, int phase, uint32_t id, int64_t limit)
{
    struct group g = {0};
    bool sc = phase != 0 && sum_count_only(w->t, id);
    int rv = ST_OK;
    for (int level = 0; level <= 1 && rv == ST_OK && !out_of_budget(w); level++) {
        if (level_unit(phase, level) != 0) {
            rv = compact_level(w, phase, level, id, limit, sc, &g);
        }
    }
    free(g.keys);
    return rv;
}

/* A closed hour of raw points, 10 s rows or 1 m rows stays in its fresh
 * entries this long past the minute watermark before it is compacted.
 * Reading a minute out of a compacted hour inflates the whole hour (zstd,
 * every column), and the engine reads the newest minutes of every series
 * each step: its 5-minute windows and the edge of its one-hour baselines
 * lie within the last 7 minutes. Compacted as soon as the hour watermark
 * passed, the closed hour was read so in the first minutes of each hour
 * (at 1,000 hosts a step's first run took 0.96 s instead of 0.69 s). Ten
 * minutes more of fresh entries cost a sixth of an hour's on disk. */
#define RECENT_LAG_MS (10 * MINUTE)

/* Whether phase compacts hours (raw points, 10 s and 1 m rows), which
 * wait RECENT_LAG_MS; 1 h rows compact by the day. */
static bool lagged(int phase)
{
    return phase <= ST_RES_1M;
}

/* The limit below which a compaction pass compacts phase: the hour
 * watermark, and for hours RECENT_LAG_MS behind the minute one. */
static int64_t compact_limit(const st_store *st, int phase)
{
    const struct st_rollup_state *rs = &st->rs;
    return lagged(phase) ? ST_MIN(rs->wm_1h, rs->wm_1m - RECENT_LAG_MS) : rs->wm_1h;
}

/* Whether phase may hold work for a compaction pass to limit: a fresh
 * entry in a unit that closed, or a level 1 unit that closed since the last
 * pass (prev) while compacted entries may exist. */
static bool compact_due(const st_store *st, int phase, int64_t prev, int64_t limit)
{
    const struct st_maint_index *mi = &st->mi;
    int64_t u0 = level_unit(phase, 0);
    int64_t u1 = level_unit(phase, 1);
    if (mi->fresh_min[phase] != INT64_MAX &&
        (mi->fresh_min[phase] == INT64_MIN || floor_to(mi->fresh_min[phase], u0) + u0 <= limit)) {
        return true;
    }
    return u1 != 0 && mi->compacted[phase] && floor_to(limit, u1) != floor_to(prev, u1);
}

/* Starts phase of the compaction pass, or skips it when compact_due says
 * there is nothing in it. False when it was skipped. */
static bool compact_phase_start(struct work *w, int phase, int64_t prev)
{
    st_store *st = w->t->st;
    int64_t limit = lagged(phase) ? st->rs.lag_lim : st->rs.wm_1h;
    if (!compact_due(st, phase, lagged(phase) ? st->rs.lag_prev : prev, limit)) {
        return false;
    }
    st->mi.fresh_acc[phase] = INT64_MAX;
    return true;
}

/* The pass compacted every fresh entry of the units that closed before the
 * limit it started with: what is fresh now is newer, or was written since. */
static void compact_phase_end(st_store *st, int phase, int64_t limit)
{
    struct st_maint_index *mi = &st->mi;
    mi->fresh_min[phase] = ST_MIN(mi->fresh_acc[phase], floor_to(limit, level_unit(phase, 0)));
}

/* One pass over every series each time the hour watermark moves, and
 * each time the lagged limit passes an hour's end, phases with nothing
 * due skipped. */
static int do_compact(struct work *w, bool *more)
{
    struct st_rollup_state *rs = &w->t->st->rs;
    struct st_maint_index *mi = &w->t->st->mi;
    int64_t raw = compact_limit(w->t->st, 0);
    int rv = ST_OK;
    if (rs->wm_1h == 0 || (rs->cmp_phase > ST_RES_1H && rs->cmp_wm == rs->wm_1h &&
                           floor_to(raw, HOUR) == floor_to(rs->lag_lim, HOUR))) {
        return ST_OK;
    }
    if (rs->cmp_phase > ST_RES_1H || rs->cmp_wm == 0) {
        /* cmp_wm keeps the last pass's limit until each phase has started */
        mi->cmp_prev = rs->cmp_wm;
        rs->lag_prev = rs->lag_lim;
        rs->lag_lim = raw;
        rs->cmp_wm = rs->wm_1h;
        rs->cmp_phase = 0;
        rs->cmp_sid = 0;
        w->items++; /* commit the pass even when every phase is skipped */
    } else if (rs->lag_lim == 0) {
        /* A pass resumed after a restart: what it did before used a limit
         * not kept, maybe an hour lower. Just below the current one, so
         * that another pass follows it (*more) and compacts every series
         * to the current limit. */
        rs->lag_lim = floor_to(raw, HOUR) - 1;
        w->items++; /* committed even if the pass has nothing left: else
                     * the abort puts the limit back and this repeats */
    }
    while (rv == ST_OK && rs->cmp_phase <= ST_RES_1H) {
        MDB_cursor *cur = rs->cmp_phase == 0 ? w->pc : w->rc;
        /* the hour watermark may move during a pass: later series get
         * more; lagged phases keep the pass's limit (compact_phase_end) */
        int64_t limit = lagged(rs->cmp_phase) ? rs->lag_lim : rs->wm_1h;
        uint32_t id;
        if (out_of_budget(w)) {
            *more = true;
            return ST_OK;
        }
        if (rs->cmp_sid == 0 && !compact_phase_start(w, rs->cmp_phase, w->t->st->mi.cmp_prev)) {
            rs->cmp_phase++;
            w->t->rs_dirty = true;
            continue;
        }
        if (rs->cmp_sid == UINT32_MAX || !next_series(cur, rs->cmp_phase, rs->cmp_sid, 0, &id)) {
            compact_phase_end(w->t->st, rs->cmp_phase,
                              lagged(rs->cmp_phase) ? rs->lag_lim : rs->cmp_wm);
            rs->cmp_phase++;
            rs->cmp_sid = 0;
            w->t->rs_dirty = true;
            continue;
        }
        rv = compact_series(w, rs->cmp_phase, id, limit);
        if (rv == ST_OK && !out_of_budget(w)) {
            rs->cmp_sid = id == UINT32_MAX ? UINT32_MAX : id + 1;
        }
        w->items++;
        w->t->rs_dirty = true;
    }
    if (rs->cmp_wm != rs->wm_1h ||
        floor_to(compact_limit(w->t->st, 0), HOUR) != floor_to(rs->lag_lim, HOUR)) {
        *more = true; /* the next pass is due */
    }
    return rv;
}

static int open_cursors(struct work *w)
{
    st_store *st = w->t->st;
    int rc;
    if ((rc = mdb_cursor_open(w->t->txn, st->points, &w->pc)) != 0 ||
        (rc = mdb_cursor_open(w->t->txn, st->rollups, &w->rc)) != 0 ||
        (rc = mdb_cursor_open(w->t->txn, st->dirty, &w->dc)) != 0) {
        return st_store_map_mdb(rc, "cursor");
    }
    return ST_OK;
}

static void close_cursors(struct work *w)
{
    mdb_cursor_close(w->pc);
    mdb_cursor_close(w->rc);
    mdb_cursor_close(w->dc);
}

/* ---- the builder thread ----
 * Folding a series-minute costs about what ingesting it does (6 us at
 * 100 k series), so on the writer thread it took a fifth of ingest. The
 * builder thread does it on another core, from read transactions over runs
 * of series; the writer only puts the packed rows (st_rollup_apply_built)
 * and moves the watermark in the same transaction, so a crash loses the
 * rows and the watermark together and the builder starts again where the
 * watermark stands. Rows go in as fresh entries: a minute at the watermark
 * is never inside a compacted one (compaction stays behind the hour
 * watermark, which stays behind the minute one). */

#define RUN_SERIES 2048      /* a run reads at most this many series */
#define RUN_NS 10000000LL    /* or for this long: a short read transaction */
#define RUN_BYTES (4u << 20) /* or packs this many bytes of rows */
#define RUN_MAX_BYTES (64u << 20)
#define MAX_READY 32     /* runs waiting for the writer */
#define APPLY_ROWS 16384 /* rows one transaction takes from the queue */
#define AHEAD_MINUTES 15 /* how far the builder may go past where it stands */
#define BUILDER_RETRY_MS 1000
#define BUILDER_NICE 10

static int sink_buf(void *arg, enum st_res res, uint32_t id, const Strata__V1__RollupBlock *blk)
{
    struct st_built *c = arg;
    st_buf *b = &c->rows;
    size_t len = strata__v1__rollup_block__get_packed_size(blk);
    uint8_t *p;
    int rv = len > UINT32_MAX ? ST_ETOOBIG : st_buf_reserve(b, ST_ROLLUP_KEY_LEN + 4 + len);
    if (rv != ST_OK) {
        return rv;
    }
    p = b->data + b->len;
    rollup_key(p, res, id, blk->start_unix_ms);
    st_put_be32(p + ST_ROLLUP_KEY_LEN, (uint32_t)len);
    strata__v1__rollup_block__pack(blk, p + ST_ROLLUP_KEY_LEN + 4);
    b->len += ST_ROLLUP_KEY_LEN + 4 + len;
    c->nrows++;
    return ST_OK;
}

static void built_free(struct st_built *c)
{
    while (c != NULL) {
        struct st_built *n = c->next;
        st_buf_free(&c->rows);
        free(c);
        c = n;
    }
}

/* Builds minute m from series sid on, in one read transaction, until a
 * run's bounds or the last series. */
static int build_run(st_store *st, int64_t m, uint32_t sid, struct st_built **out)
{
    struct st_blockset bs = {0};
    struct st_built *c = calloc(1, sizeof(*c));
    MDB_txn *txn = NULL;
    MDB_cursor *pc = NULL;
    int64_t deadline = st_time_mono_ns() + RUN_NS;
    int rv = c != NULL ? st_store_read_begin(st, &txn) : ST_ENOMEM;
    int rc;
    if (rv == ST_OK && (rc = mdb_cursor_open(txn, st->points, &pc)) != 0) {
        rv = st_store_map_mdb(rc, "cursor");
    }
    if (rv == ST_OK) {
        st_buf_init(&c->rows, RUN_MAX_BYTES);
        c->minute = m;
        c->from = sid;
    }
    for (int n = 0; rv == ST_OK; n++) {
        uint32_t id;
        if (sid == UINT32_MAX || !next_series(pc, 0, sid, 0, &id)) {
            c->to = UINT32_MAX;
            break;
        }
        /* at least one series a run, or a busy machine may stall it */
        if (n > 0 &&
            (n >= RUN_SERIES || c->rows.len >= RUN_BYTES || st_time_mono_ns() >= deadline)) {
            c->to = sid;
            break;
        }
        rv = fold_minute(pc, m, id, &bs, sink_buf, c);
        sid = id == UINT32_MAX ? UINT32_MAX : id + 1;
    }
    st_blockset_free(&bs);
    mdb_cursor_close(pc);
    if (txn != NULL) {
        st_store_read_end(st, txn);
    }
    if (rv != ST_OK) {
        built_free(c);
        return rv;
    }
    *out = c;
    return ST_OK;
}

/* Whether the builder has minutes to build or rows to hand over; mu held. */
static bool builder_pending(const struct st_builder *b)
{
    int64_t at = b->epoch_seen == b->epoch ? b->pos_m : b->start_m;
    return b->nready > 0 || (b->start_m != 0 && at < b->build_to);
}

/* Moves the builder to where the writer last said to start, once per
 * epoch; mu held. */
static void builder_adopt(struct st_builder *b)
{
    if (b->epoch_seen != b->epoch) {
        b->epoch_seen = b->epoch;
        b->pos_m = b->start_m;
        b->pos_sid = b->start_sid;
    }
}

static void *builder_main(void *arg)
{
    st_store *st = arg;
    struct st_builder *b = &st->bld;
    /* Background work: when the cores are busy, ingest goes first. A minute
     * of 100 k series costs the builder about 0.6 s of CPU, 1 % of a core
     * at the pace data comes in, and an idle writer builds too (see
     * build_inline). Linux sets niceness per thread. */
    if (setpriority(PRIO_PROCESS, (id_t)gettid(), BUILDER_NICE) != 0) {
        ST_INFO("store", "rollup builder: niceness not set; it runs as ingest does");
    }
    pthread_mutex_lock(&b->mu);
    while (!b->stop) {
        struct st_built *c = NULL;
        uint64_t epoch;
        int64_t m;
        uint32_t sid;
        int rv;
        builder_adopt(b);
        if (b->pos_m == 0 || b->pos_m >= b->allow_to || b->nready >= MAX_READY || b->busy) {
            pthread_cond_wait(&b->work_cv, &b->mu);
            continue;
        }
        epoch = b->epoch;
        m = b->pos_m;
        sid = b->pos_sid;
        b->busy = true;
        pthread_mutex_unlock(&b->mu);
        rv = build_run(st, m, sid, &c);
        pthread_mutex_lock(&b->mu);
        b->busy = false;
        pthread_cond_broadcast(&b->ready_cv);
        if (rv != ST_OK) {
            struct timespec ts;
            ST_WARN("store", "rollup builder: minute %lld: %s; retrying", (long long)m,
                    st_strerror(rv));
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += BUILDER_RETRY_MS / 1000;
            pthread_cond_timedwait(&b->work_cv, &b->mu, &ts);
            continue;
        }
        if (epoch != b->epoch || m != b->pos_m || sid != b->pos_sid) {
            built_free(c); /* started again meanwhile */
            continue;
        }
        c->epoch = epoch;
        if (b->tail != NULL) {
            b->tail->next = c;
        } else {
            b->head = c;
        }
        b->tail = c;
        b->nready++;
        b->pos_m = c->to == UINT32_MAX ? m + MINUTE : m;
        b->pos_sid = c->to == UINT32_MAX ? 0 : c->to;
        pthread_cond_broadcast(&b->ready_cv);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

int st_rollup_builder_start(st_store *st)
{
    struct st_builder *b = &st->bld;
    pthread_condattr_t ca;
    pthread_mutex_init(&b->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->work_cv, &ca);
    pthread_cond_init(&b->ready_cv, &ca);
    pthread_condattr_destroy(&ca);
    b->inited = true;
    if (pthread_create(&b->thread, NULL, builder_main, st) != 0) {
        return ST_ENOMEM;
    }
    b->started = true;
    return ST_OK;
}

void st_rollup_builder_stop(st_store *st)
{
    struct st_builder *b = &st->bld;
    if (!b->inited) {
        return;
    }
    pthread_mutex_lock(&b->mu);
    b->stop = true;
    pthread_cond_broadcast(&b->work_cv);
    pthread_mutex_unlock(&b->mu);
    if (b->started) {
        pthread_join(b->thread, NULL);
    }
    built_free(b->head);
    b->head = b->tail = NULL;
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->work_cv);
    pthread_cond_destroy(&b->ready_cv);
    b->inited = false;
    b->started = false;
}

/* Drops what the builder made and has it start again where the watermark
 * stands (the next st_rollup_sync); mu held. */
static void builder_reset(st_store *st)
{
    struct st_builder *b = &st->bld;
    b->epoch++;
    b->start_m = 0;
    b->synced = false;
    built_free(b->head);
    b->head = b->tail = NULL;
    b->nready = 0;
    pthread_cond_broadcast(&b->work_cv);
}

/* Lets the builder read a few minutes past where it stands, up to the ones
 * that closed. Only between transactions that write blocks: a block put
 * into a minute before allow_to marks it dirty, and no block written in an
 * open transaction can be in a minute the builder is let into later. mu
 * held. */
static void builder_allow(st_store *st)
{
    struct st_builder *b = &st->bld;
    int64_t from = b->epoch_seen == b->epoch ? b->pos_m : b->start_m;
    int64_t to = ST_MIN(b->build_to, from + AHEAD_MINUTES * MINUTE);
    if (b->start_m != 0 && to > b->allow_to) {
        b->allow_to = to;
        pthread_cond_broadcast(&b->work_cv);
    }
}

void st_rollup_builder_allow(st_store *st)
{
    struct st_builder *b = &st->bld;
    if (b->started) {
        pthread_mutex_lock(&b->mu);
        builder_allow(st);
        pthread_mutex_unlock(&b->mu);
    }
}

/* Tells the builder which minutes have closed, and where to start. */
static void builder_sync(st_store *st, int64_t now)
{
    struct st_builder *b = &st->bld;
    int64_t to = floor_to(now - st->ret.grace_ms, MINUTE);
    if (!b->started) {
        return;
    }
    pthread_mutex_lock(&b->mu);
    if (to > b->build_to) {
        b->build_to = to;
        pthread_cond_broadcast(&b->work_cv);
    }
    if (!b->synced && st->rs.wm_1m != 0) {
        b->epoch++;
        b->start_m = st->rs.wm_1m;
        b->start_sid = st->rs.cur_1m;
        b->synced = true;
        pthread_cond_broadcast(&b->work_cv);
    }
    builder_allow(st);
    pthread_mutex_unlock(&b->mu);
}

/* Takes the runs that continue the watermark off the queue. */
static struct st_built *take_built(st_store *st)
{
    struct st_builder *b = &st->bld;
    struct st_rollup_state *rs = &st->rs;
    struct st_built *list = NULL;
    struct st_built **tail = &list;
    int64_t m = rs->wm_1m;
    uint32_t sid = rs->cur_1m;
    size_t rows = 0;
    pthread_mutex_lock(&b->mu);
    while (b->head != NULL && rows < APPLY_ROWS) {
        struct st_built *c = b->head;
        if (c->epoch == b->epoch && (c->minute != m || c->from != sid)) {
            /* not where the watermark stands: cannot happen but by a bug;
             * build again rather than leave a gap */
            ST_WARN("store", "rollup builder: run at %lld/%u, watermark at %lld/%u; rebuilding",
                    (long long)c->minute, c->from, (long long)m, sid);
            builder_reset(st);
            break;
        }
        b->head = c->next;
        b->tail = b->head != NULL ? b->tail : NULL;
        b->nready--;
        c->next = NULL;
        if (c->epoch != b->epoch) {
            built_free(c);
            continue;
        }
        *tail = c;
        tail = &c->next;
        rows += c->nrows;
        m = c->to == UINT32_MAX ? m + MINUTE : m;
        sid = c->to == UINT32_MAX ? 0 : c->to;
    }
    pthread_cond_broadcast(&b->work_cv); /* room for more */
    pthread_mutex_unlock(&b->mu);
    return list;
}

/* Puts the rows of one run and moves the watermark past it. */
static int put_built(st_store_txn *t, const struct st_built *c)
{
    struct st_rollup_state *rs = &t->st->rs;
    size_t off = 0;
    while (off + ST_ROLLUP_KEY_LEN + 4 <= c->rows.len) {
        const uint8_t *p = c->rows.data + off;
        MDB_val k = {ST_ROLLUP_KEY_LEN, (void *)p};
        MDB_val v = {st_be32(p + ST_ROLLUP_KEY_LEN), NULL};
        int rc = mdb_put(t->txn, t->st->rollups, &k, &v, MDB_RESERVE);
        if (rc != 0) {
            return st_store_map_mdb(rc, "put rollup");
        }
        memcpy(v.mv_data, p + ST_ROLLUP_KEY_LEN + 4, v.mv_size);
        st_rollup_note_entry(t->st, p[0], c->minute, true);
        off += ST_ROLLUP_KEY_LEN + 4 + v.mv_size;
    }
    if (c->to == UINT32_MAX) {
        rs->wm_1m += MINUTE;
        rs->cur_1m = 0;
    } else {
        rs->cur_1m = c->to;
    }
    t->rs_dirty = true;
    return ST_OK;
}

int st_rollup_apply_built(st_store_txn *t)
{
    struct st_built *list;
    struct st_built **tail = &t->applied;
    int rv = ST_OK;
    if (!t->st->bld.started || (list = take_built(t->st)) == NULL) {
        return ST_OK;
    }
    while (*tail != NULL) {
        tail = &(*tail)->next;
    }
    *tail = list; /* freed with the txn whatever happens below */
    for (const struct st_built *c = list; c != NULL && rv == ST_OK; c = c->next) {
        rv = put_built(t, c);
    }
    return rv;
}

void st_rollup_txn_done(st_store_txn *t, bool ok)
{
    struct st_builder *b = &t->st->bld;
    if (t->applied == NULL && !t->built_inline) {
        return;
    }
    built_free(t->applied);
    t->applied = NULL;
    if (!ok) {
        /* the rows are gone with the txn, the watermark is back */
        pthread_mutex_lock(&b->mu);
        builder_reset(t->st);
        pthread_mutex_unlock(&b->mu);
    }
}

/* Back-to-back slices with no batch between them mean the writer has
 * nothing else to do: wait up to budget_ms for the builder's rows instead
 * of spinning. A slice after a batch never waits, so ingest does not.
 * True when a batch was committed since the last slice. */
static bool builder_wait(st_store *st, int64_t budget_ms)
{
    struct st_builder *b = &st->bld;
    bool after_batch = b->batches != b->batches_seen;
    struct timespec ts;
    b->batches_seen = b->batches;
    if (!b->started || after_batch || !b->idle) {
        return after_batch;
    }
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += budget_ms / 1000;
    ts.tv_nsec += (budget_ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&b->mu);
    builder_allow(st); /* no transaction is open here */
    /* the thread is on a run: wait for it (else the slice builds itself) */
    while (!b->stop && b->nready == 0 && b->busy) {
        if (pthread_cond_timedwait(&b->ready_cv, &b->mu, &ts) != 0) {
            break;
        }
    }
    pthread_mutex_unlock(&b->mu);
    return after_batch;
}

/* Whether the slice puts the builder's rows in its own transaction. While
 * batches come, they ride along with the next one instead (one fsync fewer
 * a slice), unless half the queue waits. */
static bool slice_applies(st_store *st, bool after_batch)
{
    struct st_builder *b = &st->bld;
    bool backlog;
    if (!after_batch) {
        return true;
    }
    pthread_mutex_lock(&b->mu);
    backlog = b->nready >= MAX_READY / 2;
    pthread_mutex_unlock(&b->mu);
    return backlog;
}

static bool builder_more(st_store *st)
{
    struct st_builder *b = &st->bld;
    bool more;
    if (!b->started) {
        return false;
    }
    pthread_mutex_lock(&b->mu);
    more = builder_pending(b);
    pthread_mutex_unlock(&b->mu);
    return more;
}

/* One run of minute m from series sid on, built by the writer in its own
 * transaction; *to as in st_built. */
static int inline_run(struct work *w, int64_t m, uint32_t sid, uint32_t *to)
{
    int rv = ST_OK;
    for (int n = 0; rv == ST_OK; n++) {
        uint32_t id;
        if (sid == UINT32_MAX || !next_series(w->pc, 0, sid, 0, &id)) {
            *to = UINT32_MAX;
            break;
        }
        if (n > 0 && (n >= RUN_SERIES || out_of_budget(w))) {
            *to = sid;
            break;
        }
        rv = build_minute(w->t, w->pc, m, id);
        sid = id == UINT32_MAX ? UINT32_MAX : id + 1;
        w->items++;
    }
    return rv;
}

/* A slice with no batch since the last one has the writer to itself: it
 * builds minutes as the builder thread would, runs the thread is not on,
 * so the rollups keep up even while the thread is starved of CPU (it runs
 * niced), and a store opened for maintenance alone progresses at once. */
static int build_inline(struct work *w)
{
    st_store *st = w->t->st;
    struct st_builder *b = &st->bld;
    struct st_rollup_state *rs = &st->rs;
    int rv = ST_OK;
    while (rv == ST_OK && !out_of_budget(w)) {
        int64_t m = rs->wm_1m;
        uint32_t to = 0;
        pthread_mutex_lock(&b->mu);
        builder_adopt(b);
        /* only where the watermark and the thread both stand, nothing queued */
        if (b->busy || b->nready > 0 || !b->synced || m == 0 || m >= b->build_to || b->pos_m != m ||
            b->pos_sid != rs->cur_1m) {
            pthread_mutex_unlock(&b->mu);
            break;
        }
        b->busy = true;
        pthread_mutex_unlock(&b->mu);
        w->t->built_inline = true; /* an abort now has the thread start again */
        rv = inline_run(w, m, rs->cur_1m, &to);
        if (rv == ST_OK) {
            rs->wm_1m = to == UINT32_MAX ? m + MINUTE : m;
            rs->cur_1m = to == UINT32_MAX ? 0 : to;
            w->t->rs_dirty = true;
        }
        pthread_mutex_lock(&b->mu);
        b->busy = false;
        if (rv == ST_OK) {
            b->pos_m = rs->wm_1m;
            b->pos_sid = rs->cur_1m;
        }
        pthread_cond_broadcast(&b->work_cv);
        pthread_mutex_unlock(&b->mu);
    }
    return rv;
}

int st_store_maintain(st_store *st, int64_t now_ms, int64_t budget_ms, bool *more)
{
    struct work w;
    bool after_batch;
    int rv;
    *more = false;
    if (st->no_rollups) {
        return ST_OK;
    }
    after_batch = builder_wait(st, budget_ms);
    memset(&w, 0, sizeof(w));
    if ((rv = st_store_begin(st, &w.t)) != ST_OK) {
        return rv;
    }
    w.t->maint = true;
    w.now = now_ms;
    w.deadline_ns = st_time_mono_ns() + budget_ms * 1000000;
    builder_sync(st, now_ms);
    if ((rv = open_cursors(&w)) == ST_OK &&
        (!slice_applies(st, after_batch) || (rv = st_rollup_apply_built(w.t)) == ST_OK) &&
        (rv = do_dirty(&w)) == ST_OK && (after_batch || (rv = build_inline(&w)) == ST_OK) &&
        (rv = do_hours(&w, more)) == ST_OK && (rv = do_prune(&w, more)) == ST_OK) {
        rv = do_compact(&w, more);
    }
    w.items += w.t->applied != NULL;
    if (rv == ST_OK && mdb_cursor_get(w.dc, &(MDB_val){0}, &(MDB_val){0}, MDB_FIRST) == 0) {
        *more = true;
    }
    *more = *more || builder_more(st);
    close_cursors(&w);
    st->bld.idle = w.items == 0;
    if (rv != ST_OK || w.items == 0) {
        st_store_abort(w.t);
        return rv;
    }
    return st_store_commit(w.t);
}

/* ---- reading ---- */

/* Folds the values of block b inside [lo, lo + n * 10 s) into rows[n], as
 * fold_block would into a minute's 10 s rows. */
static void fold_10s_block(const Strata__V1__Series *b, int64_t lo, size_t n, struct racc *rows)
{
    size_t np = st_series_npoints(b);
    double vals[ST_FRAME_MAX_POINTS];
    if (np > ST_FRAME_MAX_POINTS || b->n_sketches > 0) {
        return;
    }
    st_series_values(b, vals);
    for (size_t i = 0; i < np; i++) {
        int64_t ts = b->start_unix_ms + (int64_t)i * b->interval_ms;
        if (ts >= lo && ts < lo + (int64_t)n * TEN_S) {
            double mn = b->n_mins > i ? b->mins[i] : vals[i];
            double mx = b->n_maxs > i ? b->maxs[i] : vals[i];
            racc_value(&rows[(ts - lo) / TEN_S], ts, vals[i], mn, mx);
        }
    }
}

/* Moves *lo up to the 10 s bucket of the first point of series id at or
 * after it; false when there is none. */
static bool points_from(MDB_cursor *pc, uint32_t id, int64_t *lo, int64_t cmp_to)
{
    MDB_val k;
    MDB_val v;
    int rc = st_store_seek_blocks(pc, id, *lo, cmp_to, &k, &v);
    for (; rc == 0; rc = mdb_cursor_get(pc, &k, &v, MDB_NEXT)) {
        int64_t start;
        if (k.mv_size != ST_POINT_KEY_LEN || st_be32(k.mv_data) != id) {
            return false;
        }
        start = (int64_t)st_be64((uint8_t *)k.mv_data + 4);
        if (start >= *lo || st_store_entry_end(&v) > *lo) {
            *lo = ST_MAX(*lo, floor_to(start, TEN_S));
            return true;
        }
    }
    return false;
}

/* Hands cb the 10 s rows of [lo, lo + n * 10 s) (n <= one hour). */
static int emit_10s(const st_scan_series *ss, int64_t lo, const struct racc *acc, size_t n,
                    const st_scan_cb *cb)
{
    Strata__V1__RollupBlock blk = STRATA__V1__ROLLUP_BLOCK__INIT;
    Strata__V1__RollupRow rows[HOUR / TEN_S];
    Strata__V1__RollupRow *rowp[HOUR / TEN_S];
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        (void)racc_to_row(&acc[i], &rows[i], NULL); /* values only: no sketch */
        rowp[i] = &rows[i];
        any = any || acc[i].count > 0;
    }
    if (!any) {
        return ST_OK;
    }
    blk.start_unix_ms = lo;
    blk.bucket_ms = (uint32_t)TEN_S;
    blk.rows = rowp;
    blk.n_rows = n;
    return cb->rollup(cb->arg, ss, &blk);
}

/* The 10 s rows of a counter or gauge over [from, to), folded from its raw
 * blocks an hour at a time: the same points in the same order the builder
 * would fold, so the same rows. */
static int fold_10s(MDB_cursor *pc, const st_scan_series *ss, int64_t from, int64_t to,
                    int64_t cmp_to, const st_scan_cb *cb)
{
    struct st_blockset bs = {0};
    struct racc acc[HOUR / TEN_S];
    int rv = ST_OK;
    int64_t lo = floor_to(from, TEN_S);
    MDB_val k;
    MDB_val v;
    int rc;
    if (!points_from(pc, ss->id, &lo, cmp_to)) {
        return ST_OK;
    }
    while (lo < to && rv >= 0) {
        int64_t hi = ST_MIN(floor_to(lo, HOUR) + HOUR, to);
        size_t n = (size_t)((hi - lo + TEN_S - 1) / TEN_S);
        for (size_t i = 0; i < n; i++) {
            racc_init(&acc[i]);
        }
        for (rc = st_store_seek_blocks(pc, ss->id, lo, cmp_to, &k, &v); rc == 0 && rv >= 0;
             rc = mdb_cursor_get(pc, &k, &v, MDB_NEXT)) {
            if (k.mv_size != ST_POINT_KEY_LEN || st_be32(k.mv_data) != ss->id ||
                (int64_t)st_be64((uint8_t *)k.mv_data + 4) >= lo + (int64_t)n * TEN_S) {
                break;
            }
            if ((rv = st_blockset_read(pc, ss->id, &k, &v, &bs)) == ST_ECORRUPT) {
                rv = ST_OK; /* what decodes is folded */
            }
            for (size_t i = 0; i < bs.n && rv >= 0; i++) {
                fold_10s_block(bs.list[i], lo, n, acc);
            }
        }
        rv = rv >= 0 ? emit_10s(ss, lo, acc, n, cb) : rv;
        /* on to the next hour that has points: skip the empty ones */
        lo += (int64_t)n * TEN_S;
        if (!points_from(pc, ss->id, &lo, cmp_to)) {
            break;
        }
    }
    st_blockset_free(&bs);
    return rv;
}

int64_t st_store_rollup_watermark(st_store *st, enum st_res res)
{
    if (res == ST_RES_1H) {
        return atomic_load(&st->pub_wm_1h);
    }
    return res == ST_RES_RAW ? 0 : atomic_load(&st->pub_wm_1m);
}

static int scan_rollup_series(MDB_cursor *cur, const st_scan_series *ss, enum st_res res,
                              int64_t from_ms, int64_t to_ms, const st_scan_cb *cb)
{
    uint8_t key[ST_ROLLUP_KEY_LEN];
    MDB_val k = {ST_ROLLUP_KEY_LEN, key};
    MDB_val v;
    int64_t seek = floor_to(from_ms, max_unit(res));
    int rv = ST_OK;
    int rc;
    key[0] = (uint8_t)res;
    st_put_be32(key + 1, ss->id);
    st_put_be64(key + 5, (uint64_t)(seek > 0 ? seek : 0));
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0 && rv >= 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        const uint8_t *p = k.mv_data;
        struct rblock rb;
        if (k.mv_size != ST_ROLLUP_KEY_LEN || p[0] != res || st_be32(p + 1) != ss->id ||
            (int64_t)st_be64(p + 5) >= to_ms) {
            break;
        }
        /* the seek went back to a compacted entry's start: skip what ends
         * before from_ms without decoding it */
        if ((int64_t)st_be64(p + 5) + rollup_span(res, &v) <= from_ms) {
            continue;
        }
        if (rblock_open(&v, &rb) != ST_OK) {
            continue;
        }
        rv = cb->rollup(cb->arg, ss, rb.b);
        rblock_close(&rb);
    }
    return rv;
}

int st_store_scan_rollups(st_store *st, const char *metric, const st_matcher *m, size_t nm,
                          enum st_res res, int64_t from_ms, int64_t to_ms, const st_scan_cb *cb)
{
    MDB_txn *txn;
    MDB_cursor *sc = NULL;
    MDB_cursor *rc = NULL;
    MDB_cursor *pc = NULL;
    size_t mlen = strlen(metric) + 1;
    MDB_val k = {mlen, (void *)metric};
    MDB_val v;
    int64_t cmp_to;
    int rv;
    int c;
    if (res == ST_RES_RAW || mlen > ST_FRAME_MAX_NAME + 1 || cb->rollup == NULL) {
        return ST_EINVAL;
    }
    if ((rv = st_store_read_begin(st, &txn)) != ST_OK) {
        return rv;
    }
    cmp_to = st_rollup_compacted_to(st, txn);
    if ((c = mdb_cursor_open(txn, st->series, &sc)) != 0 ||
        (c = mdb_cursor_open(txn, st->rollups, &rc)) != 0 ||
        (c = mdb_cursor_open(txn, st->points, &pc)) != 0) {
        rv = st_store_map_mdb(c, "cursor");
    }
    for (c = rv == ST_OK ? mdb_cursor_get(sc, &k, &v, MDB_SET_RANGE) : MDB_NOTFOUND;
         c == 0 && rv >= 0; c = mdb_cursor_get(sc, &k, &v, MDB_NEXT)) {
        st_scan_series ss;
        Strata__V1__SeriesRecord *rec;
        if (k.mv_size < mlen || memcmp(k.mv_data, metric, mlen) != 0) {
            break;
        }
        ss.id = v.mv_size == 4 ? st_be32(v.mv_data) : 0;
        if ((rec = st_store_series_record(txn, st, ss.id)) == NULL) {
            continue;
        }
        ss.rec = rec;
        if (st_store_labels_match(rec, m, nm) && (rv = cb->series(cb->arg, &ss)) == 1) {
            rv = res == ST_RES_10S && rec->kind != STRATA__V1__KIND__DISTRIBUTION
                     ? fold_10s(pc, &ss, from_ms, to_ms, cmp_to, cb)
                     : scan_rollup_series(rc, &ss, res, from_ms, to_ms, cb);
        }
        strata__v1__series_record__free_unpacked(rec, NULL);
    }
    mdb_cursor_close(pc);
    mdb_cursor_close(rc);
    mdb_cursor_close(sc);
    st_store_read_end(st, txn);
    return rv < 0 ? rv : ST_OK;
}

/* ---- sizes ---- */

static int walk_series(MDB_cursor *pc, MDB_cursor *rc, uint32_t id, st_entry_fn fn, void *arg)
{
    uint8_t key[ST_POINT_KEY_LEN] = {0};
    MDB_val k = {ST_POINT_KEY_LEN, key};
    MDB_val v;
    int rv = ST_OK;
    int c;
    st_put_be32(key, id);
    for (c = mdb_cursor_get(pc, &k, &v, MDB_SET_RANGE); c == 0 && rv == ST_OK;
         c = mdb_cursor_get(pc, &k, &v, MDB_NEXT)) {
        if (k.mv_size != ST_POINT_KEY_LEN || st_be32(k.mv_data) != id) {
            break;
        }
        rv = fn(arg, ST_RES_RAW, st_codec_is_raw(v.mv_data, v.mv_size),
                (int64_t)st_be64((uint8_t *)k.mv_data + 4), st_store_entry_end(&v), k.mv_size,
                v.mv_size);
    }
    for (int res = ST_RES_10S; res <= ST_RES_1H && rv == ST_OK; res++) {
        rollup_key(key, res, id, 0);
        k = (MDB_val){ST_ROLLUP_KEY_LEN, key};
        for (c = mdb_cursor_get(rc, &k, &v, MDB_SET_RANGE); c == 0 && rv == ST_OK;
             c = mdb_cursor_get(rc, &k, &v, MDB_NEXT)) {
            const uint8_t *p = k.mv_data;
            if (k.mv_size != ST_ROLLUP_KEY_LEN || p[0] != res || st_be32(p + 1) != id) {
                break;
            }
            int64_t start = (int64_t)st_be64(p + 5);
            rv = fn(arg, (enum st_res)res, st_codec_is_rollup(v.mv_data, v.mv_size), start,
                    start + rollup_span(res, &v), k.mv_size, v.mv_size);
        }
    }
    return rv;
}

int st_store_walk_entries(st_store *st, const char *metric, st_entry_fn fn, void *arg)
{
    MDB_txn *txn;
    MDB_cursor *sc = NULL;
    MDB_cursor *pc = NULL;
    MDB_cursor *rc = NULL;
    size_t mlen = strlen(metric) + 1;
    MDB_val k = {mlen, (void *)metric};
    MDB_val v;
    int rv;
    int c;
    if (mlen > ST_FRAME_MAX_NAME + 1) {
        return ST_EINVAL;
    }
    if ((rv = st_store_read_begin(st, &txn)) != ST_OK) {
        return rv;
    }
    if ((c = mdb_cursor_open(txn, st->series, &sc)) != 0 ||
        (c = mdb_cursor_open(txn, st->points, &pc)) != 0 ||
        (c = mdb_cursor_open(txn, st->rollups, &rc)) != 0) {
        rv = st_store_map_mdb(c, "cursor");
    }
    for (c = rv == ST_OK ? mdb_cursor_get(sc, &k, &v, MDB_SET_RANGE) : MDB_NOTFOUND;
         c == 0 && rv == ST_OK; c = mdb_cursor_get(sc, &k, &v, MDB_NEXT)) {
        if (k.mv_size < mlen || memcmp(k.mv_data, metric, mlen) != 0) {
            break;
        }
        if (v.mv_size == 4) {
            rv = walk_series(pc, rc, st_be32(v.mv_data), fn, arg);
        }
    }
    mdb_cursor_close(rc);
    mdb_cursor_close(pc);
    mdb_cursor_close(sc);
    st_store_read_end(st, txn);
    return rv;
}
