/* The store's compacted entries: a closed hour of one series' raw blocks,
 * or of its 10 s or 1 m rollup rows, column-encoded and compressed into one
 * LMDB value. Internal to collector/store*: readers decode them back into
 * the same protobuf-c structures fresh entries unpack into, with the same
 * points and rows, bit for bit.
 *
 * A value is: magic (1) | flags (1: bit 0 zstd) | extra (zigzag varint:
 * the end of the points of a raw entry, the span of a rollup entry) | body
 * length (varint) | body, compressed or not. Fresh entries are protobuf messages whose first
 * byte is a field tag of field 1..13, never a magic here. */
#ifndef ST_STORE_CODEC_H
#define ST_STORE_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "envelope.h"
#include "proto/strata.pb-c.h"

#define ST_CODEC_RAW 0xC5    /* compacted raw blocks */
#define ST_CODEC_ROLLUP 0xC6 /* compacted rollup rows */
#define ST_CODEC_MAX_BODY (32u << 20)
#define ST_CODEC_MAX_BLOCKS 65536      /* blocks given to one encode */
#define ST_CODEC_MAX_ROWS 4096         /* rows of one rollup entry */
#define ST_CODEC_MAX_VALUES (1u << 22) /* integers, doubles and sketches of one raw entry */
/* Sketches of one raw entry: 6 hours of a 250 ms distribution is 86,400;
 * a decoded sketch takes ~200 bytes before its buckets. */
#define ST_CODEC_MAX_SKETCHES (1u << 17)
#define ST_CODEC_ZSTD_LEVEL 9
#define ST_CODEC_ZSTD_FAST 3 /* for bodies over ST_CODEC_BIG_BODY */
#define ST_CODEC_BIG_BODY (256u << 10)

/* A decoded entry: runs of points (raw) or one rollup block, and the memory
 * they live in. */
typedef struct st_cdec {
    Strata__V1__Series **runs;
    size_t nruns;
    Strata__V1__RollupBlock *blk;
    struct st_cdec_chunk *mem;
} st_cdec;

bool st_codec_is_raw(const void *val, size_t len);
bool st_codec_is_rollup(const void *val, size_t len);

/* Encodes the data-only blocks of one series, in key order, into out
 * (reset first; its limit bounds the result). Back-to-back blocks of the
 * same shape become one run, so a regular hour is one start and interval.
 * z is the writer's zstd context. ST_EINVAL (too many blocks, a block the
 * store would not have accepted), ST_ETOOBIG, ST_ENOMEM. */
int st_codec_encode_raw(st_zctx *z, const Strata__V1__Series *const *blocks, size_t n, st_buf *out);
/* Decodes a compacted raw value: d->runs[0..nruns) in time order, each a
 * data-only Series of at most ST_FRAME_MAX_POINTS points. ST_ECORRUPT on
 * anything malformed (every length is checked against the body), ST_ENOMEM.
 * Release with st_cdec_clear. */
int st_codec_decode_raw(const void *val, size_t len, st_cdec *d);

/* The end (ms, exclusive) of the points of a compacted raw value, read from
 * its header without inflating it. ST_ECORRUPT. */
int st_codec_raw_end(const void *val, size_t len, int64_t *end);

/* The time a compacted rollup value covers (rows * bucket, ms), from its
 * header. ST_ECORRUPT. */
int st_codec_rollup_span(const void *val, size_t len, int64_t *span);

/* Encodes a rollup block; sum_count_only drops min, max, first and last
 * (counters: their rows are read for sum and count), which decode as NaN. */
int st_codec_encode_rollup(st_zctx *z, const Strata__V1__RollupBlock *b, bool sum_count_only,
                           st_buf *out);
/* Decodes a compacted rollup value into d->blk. ST_ECORRUPT, ST_ENOMEM. */
int st_codec_decode_rollup(const void *val, size_t len, st_cdec *d);

/* Frees what a decode made; d may be reused. NULL-safe. */
void st_cdec_clear(st_cdec *d);

#endif
