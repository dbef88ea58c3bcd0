/* The collector's store: the only module that touches LMDB.
 *
 * Named databases in one environment (default flags, fsync on commit):
 *   meta       "version", "next_series_id", "rollup_state"
 *   agents     agent id (16 bytes) -> AgentRecord
 *   series     name \0 k \0 v \0 ... (labels sorted) -> series id (u32 BE)
 *   series_id  series id (u32 BE) -> SeriesRecord
 *   points     series id (u32 BE) | start ms (u64 BE) | seq low bits (u32 BE)
 *              -> fresh: a data-only Series message, the block of back-to-back
 *                 points one frame brought (seq low bits 0 is stored as 1);
 *              -> compacted (seq field 0, start on an hour): a closed hour of
 *                 the series' blocks, later 6 hours when they are small,
 *                 column-encoded and zstd-compressed (store_codec.h); its
 *                 header says where its points end
 *   rollups    res u8 | series id u32 | bucket start u64
 *              -> fresh: a RollupBlock (a minute of six 10 s rows, one 1 m row,
 *                 one 1 h row);
 *              -> compacted: the rows of an hour (10 s, 1 m) or a day (1 h),
 *                 later (when small enough to merge within a slice) of 6
 *                 hours (10 s), a day (1 m) or 30 days (1 h)
 *   dirty      kind u8 | bucket start u64 | series id u32 -> (late data)
 *   engine     text key -> the engine's records
 * Points live in per-series entries ordered by series then time, so a series
 * reads in time order with one cursor (the export path relies on that):
 * frames append fresh blocks (durable at commit, dedup by (agent, seq)), and
 * the background maintenance compacts each series' closed hours once their
 * rollups are built and ten minutes more have passed (the newest minutes
 * are read often), in bounded slices, one transaction replacing the fresh
 * entries with the compacted one. Readers decode both forms and hand back
 * the same points and rows; late blocks for a compacted hour are read with
 * it in time order until the next pass folds them in. 10 s rows are stored
 * for distributions only: a counter's or gauge's are folded from its raw
 * blocks when read. Retention drops a compacted entry once all of it is past
 * the cutoff.
 *
 * One writer: st_store_begin .. st_store_commit on the writer thread only.
 * A store with rollups runs one thread of its own (niced), which folds the
 * rows of closed minutes in short read transactions for the writer to put.
 * Readers may run on any thread (MDB_NOTLS); keep read transactions short.
 * When the map is full, the writer aborts, calls st_store_grow (which waits
 * for readers to leave) and retries. */
#ifndef ST_STORE_H
#define ST_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "frame.h"
#include "proto/strata.pb-c.h"

#define ST_STORE_MAX_KEY 511   /* LMDB's default maximum key size */
#define ST_STORE_MAX_LABELS 48 /* series labels plus the agent's */

typedef struct st_store st_store;
typedef struct st_store_txn st_store_txn;

/* How long each resolution is kept, to within one compacted entry (an
 * entry goes once all of it is past). The 10 s rollups share the raw
 * retention by default; a counter's or gauge's 10 s rows, folded from raw
 * blocks, last as long as those. */
struct st_store_retention {
    int64_t raw_ms;   /* 0: 2 days */
    int64_t r10s_ms;  /* 0: 2 days */
    int64_t r1m_ms;   /* 0: 30 days */
    int64_t r1h_ms;   /* 0: 400 days */
    int64_t grace_ms; /* a minute is rolled up this long after it ends; 0: 30 s */
};

enum st_res { ST_RES_RAW = 0, ST_RES_10S = 1, ST_RES_1M = 2, ST_RES_1H = 3 };

struct st_store_opts {
    const char *dir;
    uint64_t map_size;     /* initial map size; 0: 1 GiB */
    uint64_t max_map_size; /* growth stops here; 0: 1 TiB */
    bool no_sync;          /* benchmarks only: MDB_NOSYNC */
    bool no_rollups;       /* benchmarks only: no rollups, no late marks */
    struct st_store_retention retention;
};

int st_store_open(const struct st_store_opts *opts, st_store **out);
void st_store_close(st_store *st);

/* ---- writer ---- */

/* Starts the write transaction of a batch. */
int st_store_begin(st_store *st, st_store_txn **out);
/* Applies one validated frame inside the batch: dedup by (agent, seq)
 * against the agent's high-water mark and a 64-frame window below it, then
 * series and point blocks and the agent record. *duplicate tells whether
 * the frame was already applied (nothing written then). ST_EMAPFULL when
 * the map is full (abort, grow, retry), ST_ESTORE otherwise. */
int st_store_apply(st_store_txn *t, const st_frame *f, int64_t now_ms, bool *duplicate);
/* Commits durably. ST_ENOSPC when the disk is full (nothing committed),
 * ST_EMAPFULL, ST_ESTORE. The txn is gone after commit or abort. */
int st_store_commit(st_store_txn *t);
void st_store_abort(st_store_txn *t);
/* Doubles the map size (up to max_map_size) with no transaction open. */
int st_store_grow(st_store *st);
/* One bounded slice of background work in its own transaction: rebuilding
 * late-data rollups, putting the rows of closed minutes that the store's
 * builder thread made (st_store_commit puts them too, so while batches come
 * they ride along with those), building the next hour, pruning past
 * retention, compacting. A slice called with no batch committed since the
 * last one also builds minutes itself, and when it had nothing to do it
 * waits up to budget_ms for the builder thread rather than return at once.
 * Stops after about budget_ms; *more tells whether work is left. Writer
 * thread only. ST_EMAPFULL: grow and call again. */
int st_store_maintain(st_store *st, int64_t now_ms, int64_t budget_ms, bool *more);

/* ---- readers ---- */

typedef struct st_agent_info {
    char id[37];
    const Strata__V1__AgentRecord *rec;
} st_agent_info;

/* Calls fn for each agent record, in id order. */
int st_store_agents(st_store *st, int (*fn)(void *arg, const st_agent_info *a), void *arg);

/* A label matcher for queries. */
enum st_match_op { ST_MATCH_EQ, ST_MATCH_NE, ST_MATCH_RE, ST_MATCH_NRE };
typedef struct st_matcher {
    char key[129];
    char value[1025];
    enum st_match_op op;
    void *re; /* compiled regex_t for RE/NRE, owned by the caller */
} st_matcher;

/* One series during a scan: its record, then its blocks in time order. */
typedef struct st_scan_series {
    uint32_t id;
    /* Name, labels, kind and unit; valid during the callback only (its
     * strings may lie in the map). st_store_scan leaves layer 0. */
    const Strata__V1__SeriesRecord *rec;
} st_scan_series;

typedef struct st_scan_cb {
    /* Return 1 to read this series' blocks, 0 to skip, <0 to stop. */
    int (*series)(void *arg, const st_scan_series *s);
    /* A block overlapping [from, to); blk is a data-only Series. */
    int (*block)(void *arg, const st_scan_series *s, const Strata__V1__Series *blk);
    void *arg;
    /* For st_store_scan_rollups: a block of rollup rows. */
    int (*rollup)(void *arg, const st_scan_series *s, const Strata__V1__RollupBlock *blk);
} st_scan_cb;

/* Scans every series of metric whose labels satisfy all matchers, and
 * their blocks overlapping [from_ms, to_ms). */
int st_store_scan(st_store *st, const char *metric, const st_matcher *m, size_t nm, int64_t from_ms,
                  int64_t to_ms, const st_scan_cb *cb);
/* The same, telling its snapshot: the LMDB id of the last commit it saw
 * (st_store_tap_fn's txn ids compare with it). */
int st_store_scan_snap(st_store *st, const char *metric, const st_matcher *m, size_t nm,
                       int64_t from_ms, int64_t to_ms, const st_scan_cb *cb, uint64_t *snapshot);
/* The same over the rollups of one resolution: cb->rollup gets every
 * rollup block overlapping [from_ms, to_ms). */
int st_store_scan_rollups(st_store *st, const char *metric, const st_matcher *m, size_t nm,
                          enum st_res res, int64_t from_ms, int64_t to_ms, const st_scan_cb *cb);
/* Rollups of res are complete for every bucket before this time (0: none). */
int64_t st_store_rollup_watermark(st_store *st, enum st_res res);
/* The bucket width of a resolution in ms (0 for raw). */
int64_t st_res_ms(enum st_res res);

/* The kind (Strata__V1__Kind) of a metric's first series; ST_ENOENT when
 * the metric has no series. */
int st_store_metric_kind(st_store *st, const char *metric, int *kind);

/* What changed, for readers that keep folded answers across queries. The
 * generation starts from the wall clock when the store opens and counts up
 * with each commit that writes points; a reader takes it before reading,
 * and later asks
 * for the oldest point time written to a metric by commits after it:
 * INT64_MAX when nothing was, INT64_MIN when the store cannot tell
 * (0, a generation of an earlier opening, or it ran out of memory keeping
 * notes). Memory only, so a restart answers
 * "everything". Any thread. */
uint64_t st_store_generation(st_store *st);
int64_t st_store_changed_since(st_store *st, const char *metric, uint64_t gen);
/* Whether a commit after gen created a series of metric (true when the
 * store cannot tell, as above): an answer lists every matching series,
 * those without points in its range too. Any thread. */
bool st_store_series_added_since(st_store *st, const char *metric, uint64_t gen);

/* The tap: every block of points a commit wrote, handed over once the
 * commit is durable, for a reader that folds points as they arrive rather
 * than reads them back (the engine's kept windows). txn is the commit's
 * LMDB id: a scan whose snapshot (st_store_scan_snap) is txn or later saw
 * the blocks, an earlier one did not. Called on the writer thread after
 * each such commit, in commit order, before the commit's generation is
 * published (st_store_generation), with the frames' series (labels
 * without the agent's; use id); it holds up the writer, and must not call
 * into the store's writer. Aborted transactions are never handed over. When the
 * store could not keep a commit's blocks (out of memory), the tap gets txn
 * 0 and none: what it folded misses points. */
typedef struct st_tap_block {
    uint32_t id;
    const Strata__V1__Series *s;
} st_tap_block;
typedef void (*st_store_tap_fn)(void *arg, uint64_t txn, const st_tap_block *b, size_t n);
/* Sets the tap; ST_EEXIST when another one is set. Any thread: a call
 * under way finishes first. */
int st_store_tap_set(st_store *st, st_store_tap_fn fn, void *arg);
/* Removes the tap set with arg (none else); no call is under way after. */
void st_store_tap_clear(st_store *st, void *arg);

/* True when the labels of rec satisfy every matcher. */
bool st_store_labels_match(const Strata__V1__SeriesRecord *rec, const st_matcher *m, size_t nm);

/* ---- engine records ----
 * A small key-value space for the engine (findings, baselines, loop state,
 * outbox). Keys are text up to ST_STORE_MAX_KEY bytes; values are the
 * caller's bytes, up to ST_STORE_KV_BATCH_BYTES. Each call is its own short
 * transaction (put and del are batches of one) and may run on any thread;
 * LMDB serialises writers. */
int st_store_kv_put(st_store *st, const char *key, const void *val, size_t len);
/* Copies the value into a malloc'd buffer (NUL-terminated past len). */
int st_store_kv_get(st_store *st, const char *key, char **val, size_t *len);
int st_store_kv_del(st_store *st, const char *key);
/* One record of a batch: a put, or a delete when del is set. */
typedef struct st_store_kv {
    const char *key;
    const void *val;
    size_t len;
    bool del;
} st_store_kv;
/* Bounds of one batch: it is one write transaction, and the collector's
 * ingest writer waits for it like for any other writer. */
#define ST_STORE_KV_BATCH_MAX 4096
#define ST_STORE_KV_BATCH_BYTES (8u << 20)
/* Writes n records (n <= ST_STORE_KV_BATCH_MAX, values summing to at most
 * ST_STORE_KV_BATCH_BYTES) in one transaction: all of them or, on an
 * error, none. One fsync instead of n. */
int st_store_kv_write(st_store *st, const st_store_kv *items, size_t n);
/* Calls fn for every key starting with prefix, in key order; fn returning
 * non-zero stops the scan (a negative value is returned). */
int st_store_kv_scan(st_store *st, const char *prefix,
                     int (*fn)(void *arg, const char *key, const char *val, size_t len), void *arg);

struct st_store_stats {
    uint64_t map_size;
    uint64_t used_bytes; /* pages in use * page size */
    uint64_t live_bytes; /* pages the databases hold (used less free pages) */
    uint64_t file_bytes; /* size of data.mdb on disk */
    uint64_t series;
    uint64_t point_blocks;
    uint64_t agents;
    uint64_t rollup_entries;
    uint64_t dirty; /* late-data rebuilds waiting */
    int64_t wm_1m;
    int64_t wm_1h;
};
int st_store_stats(st_store *st, struct st_store_stats *out);

/* For benchmarks and diagnostics: calls fn for every stored entry of the
 * series of metric (raw blocks, then rollups by resolution), with whether
 * it is a compacted one, the time it covers [start_ms, end_ms), and its key
 * and value sizes. One read txn. */
typedef int (*st_entry_fn)(void *arg, enum st_res res, bool compacted, int64_t start_ms,
                           int64_t end_ms, size_t klen, size_t vlen);
int st_store_walk_entries(st_store *st, const char *metric, st_entry_fn fn, void *arg);

#endif
