/* Internal to the store module (store.c, store_rollup.c): the state both
 * files share and the LMDB helpers. Nothing outside collector/store*
 * includes this. */
#ifndef ST_STORE_INTERNAL_H
#define ST_STORE_INTERNAL_H

#include <lmdb.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "envelope.h"
#include "store.h"
#include "store_codec.h"
#include "buf.h"

#define ST_POINT_KEY_LEN 16  /* series id u32 | start ms u64 | seq u32 */
#define ST_ROLLUP_KEY_LEN 13 /* res u8 | series id u32 | bucket start u64 */
#define ST_DIRTY_KEY_LEN 13  /* kind u8 | bucket start u64 | series id u32 */
/* Raw blocks are compacted an hour per entry, and closed 6 hours of those
 * merged into one (store_rollup.c). */
#define ST_COMPACT_MS 3600000LL
#define ST_COMPACT_MS_L1 (6 * ST_COMPACT_MS)

struct cache_ent {
    struct cache_ent *next;
    uint32_t id;
    uint32_t keylen;
    char key[];
};

/* Progress of the background rollup builder, kept in meta. */
struct st_rollup_state {
    int64_t wm_1m;   /* minutes before this are built (0: not started) */
    uint32_t cur_1m; /* within minute wm_1m, series below this are built */
    int64_t wm_1h;   /* hours before this are built */
    uint32_t cur_1h;
    uint32_t prune_sid;  /* retention pass position */
    uint8_t prune_phase; /* 0 raw points, 1..3 rollups of that resolution */
    int64_t prune_due;   /* next retention pass, wall ms */
    int64_t cmp_wm;      /* the hour watermark the compaction pass works to */
    uint32_t cmp_sid;    /* compaction pass position */
    uint8_t cmp_phase;   /* 0 raw, 1..3 rollups of that resolution, 4 done */
    bool loaded;
    /* Memory only (st_rollup_save leaves them out), but here so that an
     * aborted transaction puts them back with the rest: the lagged phases'
     * limit of the pass under way or last run (compact_limit; 0 after a
     * load), and of the pass before. */
    int64_t lag_lim;
    int64_t lag_prev;
};

/* What the retention and compaction passes would find, kept in memory so
 * that a pass with nothing due costs nothing instead of a walk over every
 * series (7-13 ms a slice at 100 k series). Per phase (0 raw, 1..3 rollups
 * of that resolution); bounds are conservative: every write lowers them,
 * a finished pass raises them to what it saw. INT64_MIN: unknown (a store
 * reopened with data), so the first pass runs as before. Writer only. */
struct st_maint_index {
    int64_t prune_at[4];  /* no entry ends before this */
    int64_t prune_acc[4]; /* the same, gathered by the pass under way */
    int64_t fresh_min[4]; /* no fresh (uncompacted) entry starts before this */
    int64_t fresh_acc[4];
    bool compacted[4]; /* compacted entries may exist (level 1 merges) */
    int64_t cmp_prev;  /* the limit of the compaction pass before the one under way */
};

/* Rows of closed minutes built off the writer thread (store_rollup.c): the
 * builder thread reads raw blocks in short read transactions, folds and
 * packs the rows of a run of series, and queues them; the writer puts them
 * inside its next transaction and moves the minute watermark. A block the
 * writer puts into a minute the builder has been let into (allow_to, moved
 * only between transactions) marks that series-minute dirty in the same
 * transaction, and the writer rebuilds it once the rows for it are in. */
struct st_built {
    struct st_built *next;
    uint64_t epoch;
    int64_t minute;
    uint32_t from; /* the first series looked at */
    uint32_t to;   /* series below this are built; UINT32_MAX: all */
    st_buf rows;   /* key (ST_ROLLUP_KEY_LEN) | u32 length | value, in key order */
    size_t nrows;
};

struct st_builder {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t work_cv;  /* the builder waits here for work or room */
    pthread_cond_t ready_cv; /* an idle maintain waits here for rows */
    bool inited;
    bool started;
    bool stop;
    uint64_t epoch;  /* bumped to restart the builder at (start_m, start_sid) */
    int64_t start_m; /* 0: nothing to build yet */
    uint32_t start_sid;
    int64_t build_to;    /* minutes before this have closed; set by the writer only */
    int64_t allow_to;    /* the builder reads minutes before this; set by the writer only */
    uint64_t epoch_seen; /* the epoch pos_m is in */
    struct st_built *head;
    struct st_built *tail;
    size_t nready;
    int64_t pos_m; /* the builder stands here: minute, series */
    uint32_t pos_sid;
    bool busy; /* a run is being built (by either thread) */
    /* Writer only. */
    bool synced;      /* the builder starts where the watermark stands */
    uint64_t batches; /* transactions committed outside maintain */
    uint64_t batches_seen;
    bool idle; /* the last maintain had nothing to do */
};

/* Kind and unit of series by id, for scans (store_meta.c). */
struct st_meta;
int st_meta_new(struct st_meta **out);
void st_meta_free(struct st_meta *m);
/* False when id's are not known yet: read its record and st_meta_note. */
bool st_meta_get(struct st_meta *m, uint32_t id, int *kind, const char **unit);
void st_meta_note(struct st_meta *m, uint32_t id, int kind, const char *unit);

struct st_store {
    MDB_env *env;
    MDB_dbi meta, agents, series, series_id, points, rollups, dirty, kv;
    pthread_rwlock_t resize; /* readers hold it shared; st_store_grow exclusive */
    uint64_t map_size;
    uint64_t max_map_size;
    char path[4096];
    struct st_store_retention ret;
    bool no_rollups;
    /* Writer-only state: the series dictionary cache and the next id. */
    struct cache_ent **cache;
    size_t cache_size;
    size_t cache_count;
    uint32_t next_id;
    bool next_id_loaded;
    struct st_rollup_state rs;
    struct st_maint_index mi;
    struct st_builder bld;
    st_zctx *z;            /* compaction's zstd context */
    struct st_meta *smeta; /* kinds and units of series, for scans; any thread */
    /* Watermarks readers may use (updated after commits). */
    _Atomic int64_t pub_wm_1m;
    _Atomic int64_t pub_wm_1h;
    struct st_changes *changes; /* what commits wrote (store_changes.c) */
    pthread_mutex_t tap_mu;     /* held around each call of the tap */
    st_store_tap_fn tap;
    void *tap_arg;
};

struct st_store_txn {
    st_store *st;
    MDB_txn *txn;
    char keybuf[ST_STORE_MAX_KEY + 1];
    bool rs_dirty;            /* rollup state changed in this txn */
    bool created;             /* a series was created (and cached) in this txn */
    bool maint;               /* st_store_maintain's own transaction */
    struct st_built *applied; /* built rows put in this txn, freed at commit */
    bool built_inline;        /* the writer built a run itself in this txn */
    struct st_rollup_state rs_saved;
    struct st_maint_index mi_saved; /* put back with rs when the txn aborts */
    struct st_change_set *changed;  /* metrics this txn wrote points of; NULL: none */
    st_tap_block *tapped;           /* its blocks, for the tap after the commit */
    size_t ntapped;
    size_t captapped;
    bool tapping;  /* a tap was set when it began: its blocks are kept */
    bool tap_lost; /* one could not be kept: the tap is told it lost them */
};

/* store_changes.c: per-commit change notes for st_store_generation and
 * st_store_changed_since. A set collects one transaction's metrics (the
 * writer's); publishing it after the commit starts a new generation. */
struct st_changes;
struct st_change_set;
int st_changes_new(struct st_changes **out);
void st_changes_free(struct st_changes *c);
/* Notes that metric got a point at t or later; allocates *set on first use.
 * Out of memory it marks the set as "everything changed". */
void st_change_set_note(struct st_change_set **set, const char *metric, int64_t t);
/* Notes that a series of metric was created. */
void st_change_set_note_series(struct st_change_set **set, const char *metric);
void st_change_set_free(struct st_change_set *s);
/* After a successful commit; a NULL set (no points) starts no generation. */
void st_changes_publish(struct st_changes *c, struct st_change_set *s);
uint64_t st_changes_generation(struct st_changes *c);
int64_t st_changes_since(struct st_changes *c, const char *metric, uint64_t gen);
bool st_changes_added_since(struct st_changes *c, const char *metric, uint64_t gen);

int st_store_map_mdb(int rc, const char *what);
uint64_t st_be64(const uint8_t *p);
uint32_t st_be32(const uint8_t *p);
void st_put_be64(uint8_t *p, uint64_t v);
void st_put_be32(uint8_t *p, uint32_t v);
int st_store_read_begin(st_store *st, MDB_txn **txn);
void st_store_read_end(st_store *st, MDB_txn *txn);
int64_t st_store_block_end(const Strata__V1__Series *b);
/* Positions cur on the first entry of series id that may hold points at or
 * after from_ms. cmp_to (>= 0): no compacted entry in cur's snapshot ends
 * after it (st_rollup_compacted_to); INT64_MAX when that is not known. */
int st_store_seek_blocks(MDB_cursor *cur, uint32_t id, int64_t from_ms, int64_t cmp_to, MDB_val *k,
                         MDB_val *v);

/* The blocks of one points entry: a fresh block unpacked, or the runs of a
 * compacted hour decoded. ST_ECORRUPT when it decodes as neither. */
struct st_blocks {
    Strata__V1__Series **list;
    size_t n;
    Strata__V1__Series *fresh;
    bool in_arena; /* fresh lives in a blockset's arena: nothing to free */
    st_cdec dec;
};
int st_blocks_open(const MDB_val *v, struct st_blocks *b);
void st_blocks_close(struct st_blocks *b);
/* The blocks of the entry at the cursor, in time order: a fresh block, or
 * a compacted entry together with every entry after it that starts before
 * it (or they) end: late blocks not compacted yet, an hour compacted again
 * inside merged 6 hours. The cursor is left on the last entry read.
 * ST_ECORRUPT (what did decode is in bs), ST_ENOMEM. */
/* Memory for the fresh blocks a blockset unpacks: protobuf-c allocates
 * each message, array and string of a block on its own and frees them one
 * by one, a tenth of a scan's time; a blockset's blocks come from chunks
 * it keeps, all dropped at once when it moves to the next entry. */
struct st_pb_chunk;
struct st_pb_arena {
    struct st_pb_chunk *chunks; /* the newest first */
    size_t used;                /* bytes of the newest chunk given out */
};
struct st_blockset {
    struct st_pb_arena arena;
    struct st_blocks *ents;
    size_t nents;
    size_t entcap;
    const Strata__V1__Series **list;
    size_t n;
    size_t listcap;
};
int st_blockset_read(MDB_cursor *cur, uint32_t id, MDB_val *k, MDB_val *v, struct st_blockset *bs);
void st_blockset_clear(struct st_blockset *bs);
void st_blockset_free(struct st_blockset *bs);
/* Sorts blocks by start, stably (ties keep their key order). */
void st_store_sort_blocks(const Strata__V1__Series **b, size_t n);
/* Where the points of an entry end (INT64_MIN when it does not decode). */
int64_t st_store_entry_end(const MDB_val *v);

Strata__V1__SeriesRecord *st_store_series_record(MDB_txn *txn, st_store *st, uint32_t id);

/* Rollup state in meta (store_rollup.c). */
int st_rollup_load(st_store_txn *t);
int st_rollup_save(st_store_txn *t);
/* Called by apply for every block written: starts the watermarks on the
 * first block, marks minutes already built as dirty (late data) and notes
 * the block for retention and compaction (st_rollup_note_entry). */
int st_rollup_note_block(st_store_txn *t, uint32_t id, const Strata__V1__Series *s);
/* Called for every entry written at time t in phase's database (0 points,
 * else the rollups of that resolution), fresh or compacted. */
void st_rollup_note_entry(st_store *st, int phase, int64_t t, bool fresh);
/* Starts and stops the builder thread (open, close). */
int st_rollup_builder_start(st_store *st);
void st_rollup_builder_stop(st_store *st);
/* Lets the builder go on (between transactions only). */
void st_rollup_builder_allow(st_store *st);
/* Puts the built rows that are ready into t and moves the watermark (the
 * writer calls it before each commit). */
int st_rollup_apply_built(st_store_txn *t);
/* After t commits (ok) or is aborted: frees the rows it put, or has the
 * builder build them again from the watermark that stands. */
void st_rollup_txn_done(st_store_txn *t, bool ok);
/* Where the compacted points entries of txn's snapshot end at the latest
 * (their units, not the blocks that run over): the hour watermark saved
 * in it. INT64_MAX when the state does not read. */
int64_t st_rollup_compacted_to(st_store *st, MDB_txn *txn);
/* Sets the maintenance index at open: empty databases hold nothing due. */
void st_rollup_index_init(st_store *st, bool empty);

#endif
