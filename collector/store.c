/* LMDB store: agents, the series dictionary and per-series point blocks.
 * See store.h for the layout. LMDB return codes are mapped to st_err here
 * and logged with their original text. */
#include "store.h"
#include "store_codec.h"
#include "store_internal.h"

#include "err.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <stdatomic.h>
#include <lmdb.h>
#include <pthread.h>
#include <regex.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define DEFAULT_MAP (1ULL << 30)
#define DEFAULT_MAX_MAP (1ULL << 40)
#define DEDUP_WINDOW 64
#define CACHE_INIT 4096

int st_store_map_mdb(int rc, const char *what)
{
    if (rc == MDB_SUCCESS) {
        return ST_OK;
    }
    if (rc == MDB_MAP_FULL || rc == MDB_TXN_FULL) {
        return ST_EMAPFULL;
    }
    if (rc == MDB_NOTFOUND) {
        return ST_ENOENT;
    }
    if (rc == ENOSPC || rc == EDQUOT) {
        ST_WARN("store", "%s: %s", what, mdb_strerror(rc));
        return ST_ENOSPC;
    }
    ST_ERROR("store", "%s: %s", what, mdb_strerror(rc));
    return ST_ESTORE;
}

uint64_t st_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = v << 8 | p[i];
    }
    return v;
}

uint32_t st_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void st_put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

void st_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static int open_dbs(st_store *st)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    if (rc != MDB_SUCCESS) {
        return st_store_map_mdb(rc, "begin");
    }
    if ((rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &st->meta)) != 0 ||
        (rc = mdb_dbi_open(txn, "agents", MDB_CREATE, &st->agents)) != 0 ||
        (rc = mdb_dbi_open(txn, "series", MDB_CREATE, &st->series)) != 0 ||
        (rc = mdb_dbi_open(txn, "series_id", MDB_CREATE, &st->series_id)) != 0 ||
        (rc = mdb_dbi_open(txn, "points", MDB_CREATE, &st->points)) != 0 ||
        (rc = mdb_dbi_open(txn, "rollups", MDB_CREATE, &st->rollups)) != 0 ||
        (rc = mdb_dbi_open(txn, "dirty", MDB_CREATE, &st->dirty)) != 0 ||
        (rc = mdb_dbi_open(txn, "engine", MDB_CREATE, &st->kv)) != 0) {
        mdb_txn_abort(txn);
        return st_store_map_mdb(rc, "dbi_open");
    }
    return st_store_map_mdb(mdb_txn_commit(txn), "commit dbi");
}

/* A store with no points and no rollups has no retention or compaction
 * due until something is written; one with data gets a first full pass. */
static int index_init(st_store *st)
{
    MDB_txn *txn;
    MDB_stat ps;
    MDB_stat rs;
    int rv = st_store_read_begin(st, &txn);
    if (rv != ST_OK) {
        return rv;
    }
    st_rollup_index_init(st, mdb_stat(txn, st->points, &ps) == 0 &&
                                 mdb_stat(txn, st->rollups, &rs) == 0 && ps.ms_entries == 0 &&
                                 rs.ms_entries == 0);
    st_store_read_end(st, txn);
    return ST_OK;
}

int st_store_open(const struct st_store_opts *opts, st_store **out)
{
    st_store *st;
    int rc;
    int rv;
    if (opts == NULL || opts->dir == NULL || strlen(opts->dir) >= sizeof(st->path) - 16) {
        return ST_EINVAL;
    }
    if ((rv = st_mkdir_p(opts->dir)) != ST_OK) {
        ST_ERROR("store", "cannot create %s", opts->dir);
        return rv;
    }
    if ((st = calloc(1, sizeof(*st))) == NULL) {
        return ST_ENOMEM;
    }
    pthread_rwlock_init(&st->resize, NULL);
    pthread_mutex_init(&st->tap_mu, NULL);
    snprintf(st->path, sizeof(st->path), "%s", opts->dir);
    st->map_size = opts->map_size ? opts->map_size : DEFAULT_MAP;
    st->max_map_size = opts->max_map_size ? opts->max_map_size : DEFAULT_MAX_MAP;
    st->no_rollups = opts->no_rollups;
    st->ret = opts->retention;
    st->ret.raw_ms = st->ret.raw_ms ? st->ret.raw_ms : 2 * 86400000LL;
    st->ret.r10s_ms = st->ret.r10s_ms ? st->ret.r10s_ms : 2 * 86400000LL;
    st->ret.r1m_ms = st->ret.r1m_ms ? st->ret.r1m_ms : 30 * 86400000LL;
    st->ret.r1h_ms = st->ret.r1h_ms ? st->ret.r1h_ms : 400 * 86400000LL;
    st->ret.grace_ms = st->ret.grace_ms ? st->ret.grace_ms : 30000;
    st->cache_size = CACHE_INIT;
    st->cache = calloc(st->cache_size, sizeof(*st->cache));
    if (st->cache == NULL || st_zctx_new(&st->z) != ST_OK ||
        st_changes_new(&st->changes) != ST_OK || st_meta_new(&st->smeta) != ST_OK) {
        rv = ST_ENOMEM;
        goto fail;
    }
    if ((rc = mdb_env_create(&st->env)) != 0) {
        rv = st_store_map_mdb(rc, "env_create");
        goto fail;
    }
    mdb_env_set_maxdbs(st->env, 8);
    mdb_env_set_mapsize(st->env, st->map_size);
    rc = mdb_env_open(st->env, opts->dir, MDB_NOTLS | (opts->no_sync ? MDB_NOSYNC : 0), 0600);
    if (rc != 0) {
        rv = st_store_map_mdb(rc, "env_open");
        goto fail;
    }
    {
        /* A map file larger than asked (after an earlier grow) is kept. */
        MDB_envinfo info;
        mdb_env_info(st->env, &info);
        st->map_size = info.me_mapsize;
    }
    if ((rv = open_dbs(st)) != ST_OK || (rv = index_init(st)) != ST_OK) {
        goto fail;
    }
    {
        /* Readers pick rollups by the watermarks, which a write
         * transaction loads: load them now, or a restarted collector
         * answers every query from raw points until ingest resumes. */
        st_store_txn *t;
        if ((rv = st_store_begin(st, &t)) != ST_OK) {
            goto fail;
        }
        st_store_abort(t);
    }
    if (!st->no_rollups && (rv = st_rollup_builder_start(st)) != ST_OK) {
        goto fail;
    }
    *out = st;
    return ST_OK;
fail:
    st_store_close(st);
    return rv;
}

static void cache_clear(st_store *st)
{
    for (size_t i = 0; i < st->cache_size; i++) {
        struct cache_ent *e = st->cache[i];
        while (e != NULL) {
            struct cache_ent *n = e->next;
            free(e);
            e = n;
        }
        st->cache[i] = NULL;
    }
    st->cache_count = 0;
    st->next_id_loaded = false;
}

void st_store_close(st_store *st)
{
    if (st == NULL) {
        return;
    }
    st_rollup_builder_stop(st);
    if (st->cache != NULL) {
        cache_clear(st);
        free(st->cache);
    }
    if (st->env != NULL) {
        mdb_env_close(st->env);
    }
    st_zctx_free(st->z);
    st_changes_free(st->changes);
    st_meta_free(st->smeta);
    pthread_rwlock_destroy(&st->resize);
    pthread_mutex_destroy(&st->tap_mu);
    free(st);
}

int st_store_grow(st_store *st)
{
    uint64_t from;
    uint64_t want;
    int rc;
    /* LMDB requires that no transaction is active in this process; the
     * lock also orders growers: the writer and the engine's record writes
     * may both find the map full, and map_size is read and set under it. */
    pthread_rwlock_wrlock(&st->resize);
    from = st->map_size;
    if (from >= st->max_map_size) {
        pthread_rwlock_unlock(&st->resize);
        ST_ERROR("store", "map is full at its maximum size %llu", (unsigned long long)from);
        return ST_ENOSPC;
    }
    want = from * 2 > st->max_map_size ? st->max_map_size : from * 2;
    rc = mdb_env_set_mapsize(st->env, want);
    if (rc == 0) {
        st->map_size = want;
    }
    pthread_rwlock_unlock(&st->resize);
    if (rc != 0) {
        return st_store_map_mdb(rc, "set_mapsize");
    }
    ST_INFO("store", "map grown from %llu to %llu bytes", (unsigned long long)from,
            (unsigned long long)want);
    return ST_OK;
}

/* ---- writer ---- */

int st_store_begin(st_store *st, st_store_txn **out)
{
    st_store_txn *t = calloc(1, sizeof(*t));
    int rc;
    if (t == NULL) {
        return ST_ENOMEM;
    }
    t->st = st;
    /* The write txn also holds the resize lock shared so a grow cannot
     * happen under it; only the writer grows, so this never blocks. */
    pthread_rwlock_rdlock(&st->resize);
    rc = mdb_txn_begin(st->env, NULL, 0, &t->txn);
    if (rc != 0) {
        pthread_rwlock_unlock(&st->resize);
        free(t);
        return st_store_map_mdb(rc, "txn_begin");
    }
    if (!st->rs.loaded && (rc = st_rollup_load(t)) != ST_OK) {
        mdb_txn_abort(t->txn);
        pthread_rwlock_unlock(&st->resize);
        free(t);
        return rc;
    }
    t->rs_saved = st->rs;
    t->mi_saved = st->mi;
    pthread_mutex_lock(&st->tap_mu);
    t->tapping = st->tap != NULL;
    pthread_mutex_unlock(&st->tap_mu);
    *out = t;
    return ST_OK;
}

static void txn_release(st_store_txn *t)
{
    st_change_set_free(t->changed);
    free(t->tapped);
    pthread_rwlock_unlock(&t->st->resize);
    /* no transaction of the writer's is open: the builder may go on */
    st_rollup_builder_allow(t->st);
    free(t);
}

void st_store_abort(st_store_txn *t)
{
    if (t == NULL) {
        return;
    }
    mdb_txn_abort(t->txn);
    st_rollup_txn_done(t, false);
    /* Series created inside the aborted txn are gone: forget the cache.
     * Only then: maintenance aborts its transaction whenever a slice had
     * nothing to do, and rebuilding a cache of a million series from LMDB
     * each time was 13 % of the collector's CPU under ingest. */
    if (t->created) {
        cache_clear(t->st);
    }
    t->st->rs = t->rs_saved;
    /* A pass's bounds on what is left to compact or prune were raised
     * for work the abort undid. */
    t->st->mi = t->mi_saved;
    txn_release(t);
}

int st_store_tap_set(st_store *st, st_store_tap_fn fn, void *arg)
{
    int rv = ST_EEXIST;
    pthread_mutex_lock(&st->tap_mu);
    if (st->tap == NULL) {
        st->tap = fn;
        st->tap_arg = arg;
        rv = ST_OK;
    }
    pthread_mutex_unlock(&st->tap_mu);
    return rv;
}

void st_store_tap_clear(st_store *st, void *arg)
{
    pthread_mutex_lock(&st->tap_mu);
    if (st->tap != NULL && st->tap_arg == arg) {
        st->tap = NULL;
        st->tap_arg = NULL;
    }
    pthread_mutex_unlock(&st->tap_mu);
}

/* Keeps a block for the tap; out of memory the commit tells the tap it
 * lost one (an empty hand-over with txn 0). */
static void tap_note(st_store_txn *t, uint32_t id, const Strata__V1__Series *s)
{
    if (!t->tapping || t->tap_lost) {
        return;
    }
    if (t->ntapped == t->captapped) {
        size_t cap = t->captapped ? 2 * t->captapped : 1024;
        st_tap_block *nb = realloc(t->tapped, cap * sizeof(*nb));
        if (nb == NULL) {
            t->tap_lost = true;
            return;
        }
        t->tapped = nb;
        t->captapped = cap;
    }
    t->tapped[t->ntapped++] = (st_tap_block){id, s};
}

int st_store_commit(st_store_txn *t)
{
    st_store *st = t->st;
    /* the id this commit will have; readers see it once it is committed */
    uint64_t txn_id = (uint64_t)mdb_txn_id(t->txn);
    /* rows the builder thread made ride along with the batch: no
     * transaction (and no fsync) of their own */
    int rv = st_rollup_apply_built(t);
    if (rv == ST_OK && t->rs_dirty) {
        rv = st_rollup_save(t);
    }
    if (rv != ST_OK) {
        st_store_abort(t);
        return rv;
    }
    if (!t->maint) {
        st->bld.batches++;
    }
    rv = st_store_map_mdb(mdb_txn_commit(t->txn), "commit");
    st_rollup_txn_done(t, rv == ST_OK);
    if (rv != ST_OK) {
        cache_clear(st);
        st->rs = t->rs_saved;
        st->mi = t->mi_saved;
    } else {
        atomic_store(&st->pub_wm_1m, st->rs.wm_1m);
        atomic_store(&st->pub_wm_1h, st->rs.wm_1h);
        /* The tap first: a reader that took the generation and then what
         * the tap handed over has every block of the commits it covers. A
         * transaction begun before the tap was set kept no blocks: the tap
         * is told it lost them. */
        if (t->changed != NULL) {
            bool lost = t->tap_lost || !t->tapping;
            pthread_mutex_lock(&st->tap_mu);
            if (st->tap != NULL) {
                st->tap(st->tap_arg, lost ? 0 : txn_id, t->tapped, lost ? 0 : t->ntapped);
            }
            pthread_mutex_unlock(&st->tap_mu);
        }
        /* After the commit: a reader that saw this generation sees its points. */
        st_changes_publish(st->changes, t->changed);
    }
    txn_release(t);
    return rv;
}

static uint64_t hash_bytes(const char *p, size_t n)
{
    return st_fnv1a(ST_FNV_SEED, p, n);
}

static struct cache_ent *cache_find(st_store *st, const char *key, size_t len)
{
    struct cache_ent *e = st->cache[hash_bytes(key, len) & (st->cache_size - 1)];
    for (; e != NULL; e = e->next) {
        if (e->keylen == len && memcmp(e->key, key, len) == 0) {
            return e;
        }
    }
    return NULL;
}

static void cache_grow(st_store *st)
{
    size_t nsize = st->cache_size * 2;
    struct cache_ent **nt = calloc(nsize, sizeof(*nt));
    if (nt == NULL) {
        return; /* chains get longer; still correct */
    }
    for (size_t i = 0; i < st->cache_size; i++) {
        struct cache_ent *e = st->cache[i];
        while (e != NULL) {
            struct cache_ent *n = e->next;
            size_t b = hash_bytes(e->key, e->keylen) & (nsize - 1);
            e->next = nt[b];
            nt[b] = e;
            e = n;
        }
    }
    free(st->cache);
    st->cache = nt;
    st->cache_size = nsize;
}

static void cache_put(st_store *st, const char *key, size_t len, uint32_t id)
{
    struct cache_ent *e = malloc(sizeof(*e) + len);
    size_t b;
    if (e == NULL) {
        return; /* the next lookup reads LMDB instead */
    }
    e->id = id;
    e->keylen = (uint32_t)len;
    memcpy(e->key, key, len);
    b = hash_bytes(key, len) & (st->cache_size - 1);
    e->next = st->cache[b];
    st->cache[b] = e;
    if (++st->cache_count > st->cache_size) {
        cache_grow(st);
    }
}

/* ---- series identity ---- */

typedef struct kv {
    const char *k;
    const char *v;
} kv;

static const char *role_name(Strata__V1__Role r)
{
    switch (r) {
    case STRATA__V1__ROLE__EDGE:
        return "edge";
    case STRATA__V1__ROLE__CDN:
        return "cdn";
    case STRATA__V1__ROLE__APP:
        return "app";
    case STRATA__V1__ROLE__DB:
        return "db";
    default:
        return NULL;
    }
}

static void sort_kv(kv *a, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        kv x = a[i];
        size_t j = i;
        while (j > 0 && strcmp(a[j - 1].k, x.k) > 0) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = x;
    }
}

static bool has_key(const kv *a, size_t n, const char *k)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(a[i].k, k) == 0) {
            return true;
        }
    }
    return false;
}

/* The series' labels plus its agent's (host, role, configured labels);
 * a label the series sets itself wins over the agent's. */
static int merged_labels(const Strata__V1__Series *s, const Strata__V1__Agent *a, kv *out,
                         size_t *n)
{
    size_t k = 0;
    const char *role;
    for (size_t i = 0; i < s->n_labels; i++) {
        out[k++] = (kv){s->labels[i]->key, s->labels[i]->value};
    }
    if (a != NULL) {
        if (a->host != NULL && a->host[0] != '\0' && !has_key(out, k, "host")) {
            out[k++] = (kv){"host", a->host};
        }
        if ((role = role_name(a->role)) != NULL && !has_key(out, k, "role")) {
            out[k++] = (kv){"role", role};
        }
        for (size_t i = 0; i < a->n_labels && k < ST_STORE_MAX_LABELS; i++) {
            if (!has_key(out, k, a->labels[i]->key)) {
                out[k++] = (kv){a->labels[i]->key, a->labels[i]->value};
            }
        }
    }
    sort_kv(out, k);
    *n = k;
    return ST_OK;
}

/* name \0 k \0 v \0 ... ; ST_ETOOBIG past LMDB's key limit. */
static int encode_key(const char *name, const kv *l, size_t n, char *buf, size_t *len)
{
    size_t off = 0;
    for (size_t i = 0; i <= 2 * n; i++) {
        const char *s = i == 0 ? name : ((i & 1) ? l[i / 2].k : l[i / 2 - 1].v);
        size_t sl = strlen(s);
        if (off + sl + 1 > ST_STORE_MAX_KEY) {
            return ST_ETOOBIG;
        }
        memcpy(buf + off, s, sl + 1);
        off += sl + 1;
    }
    *len = off;
    return ST_OK;
}

static int load_next_id(st_store_txn *t)
{
    MDB_val k = {14, "next_series_id"};
    MDB_val v;
    int rc;
    if (t->st->next_id_loaded) {
        return ST_OK;
    }
    rc = mdb_get(t->txn, t->st->meta, &k, &v);
    if (rc == MDB_NOTFOUND) {
        t->st->next_id = 1;
    } else if (rc != 0 || v.mv_size != 4) {
        return st_store_map_mdb(rc ? rc : MDB_CORRUPTED, "next_series_id");
    } else {
        t->st->next_id = st_be32(v.mv_data);
    }
    t->st->next_id_loaded = true;
    return ST_OK;
}

static int put_series_record(st_store_txn *t, uint32_t id, const Strata__V1__Series *s, const kv *l,
                             size_t n)
{
    Strata__V1__SeriesRecord rec = STRATA__V1__SERIES_RECORD__INIT;
    Strata__V1__Label lab[ST_STORE_MAX_LABELS];
    Strata__V1__Label *labp[ST_STORE_MAX_LABELS];
    uint8_t idk[4];
    MDB_val k = {4, idk};
    MDB_val v;
    int rc;
    for (size_t i = 0; i < n; i++) {
        strata__v1__label__init(&lab[i]);
        lab[i].key = (char *)l[i].k;
        lab[i].value = (char *)l[i].v;
        labp[i] = &lab[i];
    }
    rec.id = id;
    rec.name = s->name;
    rec.labels = labp;
    rec.n_labels = n;
    rec.layer = s->layer;
    rec.unit = s->unit;
    rec.kind = s->kind;
    st_put_be32(idk, id);
    v.mv_size = strata__v1__series_record__get_packed_size(&rec);
    if ((rc = mdb_put(t->txn, t->st->series_id, &k, &v, MDB_RESERVE)) != 0) {
        return st_store_map_mdb(rc, "put series_id");
    }
    strata__v1__series_record__pack(&rec, v.mv_data);
    return ST_OK;
}

/* Finds or creates the id of a series (name + merged labels). */
static int resolve_series(st_store_txn *t, const Strata__V1__Series *s, const Strata__V1__Agent *a,
                          uint32_t *id)
{
    kv l[ST_STORE_MAX_LABELS];
    size_t n;
    size_t len;
    struct cache_ent *e;
    MDB_val k;
    MDB_val v;
    uint8_t idb[4];
    int rc;
    int rv;
    if (s->n_labels > ST_FRAME_MAX_LABELS) {
        return ST_EINVAL;
    }
    merged_labels(s, a, l, &n);
    if ((rv = encode_key(s->name, l, n, t->keybuf, &len)) != ST_OK) {
        return rv;
    }
    if ((e = cache_find(t->st, t->keybuf, len)) != NULL) {
        *id = e->id;
        return ST_OK;
    }
    k = (MDB_val){len, t->keybuf};
    rc = mdb_get(t->txn, t->st->series, &k, &v);
    if (rc == 0 && v.mv_size == 4) {
        *id = st_be32(v.mv_data);
        cache_put(t->st, t->keybuf, len, *id);
        return ST_OK;
    }
    if (rc != MDB_NOTFOUND) {
        return st_store_map_mdb(rc ? rc : MDB_CORRUPTED, "get series");
    }
    if ((rv = load_next_id(t)) != ST_OK) {
        return rv;
    }
    *id = t->st->next_id;
    st_put_be32(idb, *id + 1);
    v = (MDB_val){4, idb};
    if ((rc = mdb_put(t->txn, t->st->meta, &(MDB_val){14, "next_series_id"}, &v, 0)) != 0) {
        return st_store_map_mdb(rc, "put next_series_id");
    }
    st_put_be32(idb, *id);
    if ((rc = mdb_put(t->txn, t->st->series, &k, &v, 0)) != 0) {
        return st_store_map_mdb(rc, "put series");
    }
    if ((rv = put_series_record(t, *id, s, l, n)) != ST_OK) {
        return rv;
    }
    t->st->next_id++;
    t->created = true;
    st_change_set_note_series(&t->changed, s->name);
    cache_put(t->st, t->keybuf, len, *id);
    return ST_OK;
}

/* Writes the data columns of s as one block under (id, start, seq). */
static int put_block(st_store_txn *t, uint32_t id, const Strata__V1__Series *s, uint64_t seq)
{
    Strata__V1__Series blk = *s;
    uint8_t key[ST_POINT_KEY_LEN];
    MDB_val k = {ST_POINT_KEY_LEN, key};
    MDB_val v;
    int rc;
    /* Identity lives in the series dictionary; the block keeps only data. */
    blk.name = (char *)protobuf_c_empty_string;
    blk.unit = (char *)protobuf_c_empty_string;
    blk.n_labels = 0;
    blk.labels = NULL;
    blk.layer = 0;
    blk.kind = 0;
    st_put_be32(key, id);
    st_put_be64(key + 4, (uint64_t)s->start_unix_ms);
    /* seq field 0 is the compacted entry of an hour (store.h) */
    st_put_be32(key + 12, (uint32_t)seq != 0 ? (uint32_t)seq : 1);
    v.mv_size = strata__v1__series__get_packed_size(&blk);
    if ((rc = mdb_put(t->txn, t->st->points, &k, &v, MDB_RESERVE)) != 0) {
        return st_store_map_mdb(rc, "put points");
    }
    strata__v1__series__pack(&blk, v.mv_data);
    st_change_set_note(&t->changed, s->name, s->start_unix_ms);
    tap_note(t, id, s);
    return t->st->no_rollups ? ST_OK : st_rollup_note_block(t, id, s);
}

/* ---- agents and dedup ---- */

/* Decides whether seq is new for rec and, if so, records it in the window.
 * Bit i of seen_mask says seq (rec->seq - 1 - i) was applied. Agents keep
 * fewer than DEDUP_WINDOW frames in flight, so a seq older than the window
 * was applied (or dropped by the agent) long ago. */
static bool dedup_accept(Strata__V1__AgentRecord *rec, uint64_t seq)
{
    if (rec->seq == 0 || seq > rec->seq) {
        uint64_t shift = rec->seq == 0 ? DEDUP_WINDOW : seq - rec->seq;
        uint64_t mask = shift >= DEDUP_WINDOW ? 0 : rec->seen_mask << shift;
        if (rec->seq != 0 && shift - 1 < DEDUP_WINDOW) {
            mask |= 1ULL << (shift - 1);
        }
        rec->seen_mask = mask;
        rec->seq = seq;
        return true;
    }
    if (seq == rec->seq || rec->seq - seq > DEDUP_WINDOW) {
        return false;
    }
    if (rec->seen_mask & (1ULL << (rec->seq - seq - 1))) {
        return false;
    }
    rec->seen_mask |= 1ULL << (rec->seq - seq - 1);
    return true;
}

static int get_agent(st_store_txn *t, const uint8_t id[16], Strata__V1__AgentRecord **out)
{
    MDB_val k = {16, (void *)id};
    MDB_val v;
    int rc = mdb_get(t->txn, t->st->agents, &k, &v);
    if (rc == MDB_NOTFOUND) {
        *out = NULL;
        return ST_OK;
    }
    if (rc != 0) {
        return st_store_map_mdb(rc, "get agent");
    }
    *out = strata__v1__agent_record__unpack(NULL, v.mv_size, v.mv_data);
    if (*out == NULL) {
        ST_ERROR("store", "agent record does not decode");
        return ST_ECORRUPT;
    }
    return ST_OK;
}

static int put_agent(st_store_txn *t, const Strata__V1__AgentRecord *rec)
{
    MDB_val k = {16, rec->agent_id.data};
    MDB_val v;
    int rc;
    v.mv_size = strata__v1__agent_record__get_packed_size(rec);
    if ((rc = mdb_put(t->txn, t->st->agents, &k, &v, MDB_RESERVE)) != 0) {
        return st_store_map_mdb(rc, "put agent");
    }
    strata__v1__agent_record__pack(rec, v.mv_data);
    return ST_OK;
}

/* The agent reports its spool as series; the registry keeps the latest. */
static void note_agent_series(Strata__V1__AgentRecord *rec, const Strata__V1__Series *s)
{
    size_t n = st_series_npoints(s);
    if (n == 0 || s->n_labels != 0) {
        return;
    }
    if (strcmp(s->name, "agent.spool.frames") == 0) {
        rec->spool_frames = (uint64_t)st_series_value(s, n - 1);
    } else if (strcmp(s->name, "agent.spool.dropped") == 0) {
        rec->spool_dropped = (uint64_t)st_series_value(s, n - 1);
    }
}

static int apply_series(st_store_txn *t, const st_frame *f, Strata__V1__AgentRecord *rec)
{
    for (size_t i = 0; i < f->n_series; i++) {
        const Strata__V1__Series *s = f->series[i];
        uint32_t id;
        int rv = resolve_series(t, s, f->agent, &id);
        if (rv == ST_ETOOBIG) {
            ST_WARN("store", "series %s: name and labels exceed %d bytes; skipped", s->name,
                    ST_STORE_MAX_KEY);
            continue;
        }
        if (rv != ST_OK || (rv = put_block(t, id, s, f->seq)) != ST_OK) {
            return rv;
        }
        rec->samples += st_series_npoints(s);
        note_agent_series(rec, s);
    }
    return ST_OK;
}

int st_store_apply(st_store_txn *t, const st_frame *f, int64_t now_ms, bool *duplicate)
{
    Strata__V1__AgentRecord *old = NULL;
    Strata__V1__AgentRecord rec = STRATA__V1__AGENT_RECORD__INIT;
    Strata__V1__Agent merged;
    int rv;
    if (f->agent_id.len != 16 || f->seq == 0) {
        return ST_EINVAL;
    }
    if ((rv = get_agent(t, f->agent_id.data, &old)) != ST_OK) {
        return rv;
    }
    if (old != NULL) {
        rec = *old;
    } else {
        rec.agent_id = f->agent_id;
        rec.first_seen_unix_ms = now_ms;
    }
    if (!dedup_accept(&rec, f->seq)) {
        *duplicate = true;
        rv = ST_OK;
        goto out;
    }
    *duplicate = false;
    if ((rv = apply_series(t, f, &rec)) != ST_OK) {
        goto out;
    }
    if (f->agent != NULL) {
        merged = *f->agent;
        /* Agents send version and boot_id in one frame of several: an
         * empty one means "unchanged", not "unknown". */
        if (old != NULL && old->agent != NULL && merged.boot_id[0] == '\0' &&
            merged.version[0] == '\0') {
            merged.boot_id = old->agent->boot_id;
            merged.version = old->agent->version;
        }
        rec.agent = &merged;
    }
    rec.frames++;
    rec.last_seen_unix_ms = now_ms;
    rv = put_agent(t, &rec);
out:
    strata__v1__agent_record__free_unpacked(old, NULL);
    return rv;
}

/* ---- readers ---- */

int st_store_read_begin(st_store *st, MDB_txn **txn)
{
    int rc;
    pthread_rwlock_rdlock(&st->resize);
    rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, txn);
    if (rc != 0) {
        pthread_rwlock_unlock(&st->resize);
        return st_store_map_mdb(rc, "read txn");
    }
    return ST_OK;
}

void st_store_read_end(st_store *st, MDB_txn *txn)
{
    mdb_txn_abort(txn);
    pthread_rwlock_unlock(&st->resize);
}

int st_store_agents(st_store *st, int (*fn)(void *arg, const st_agent_info *a), void *arg)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k;
    MDB_val v;
    int rv = st_store_read_begin(st, &txn);
    int rc;
    if (rv != ST_OK) {
        return rv;
    }
    if ((rc = mdb_cursor_open(txn, st->agents, &cur)) != 0) {
        st_store_read_end(st, txn);
        return st_store_map_mdb(rc, "cursor agents");
    }
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && rv >= 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        st_agent_info info;
        Strata__V1__AgentRecord *rec = strata__v1__agent_record__unpack(NULL, v.mv_size, v.mv_data);
        if (rec == NULL || k.mv_size != 16) {
            strata__v1__agent_record__free_unpacked(rec, NULL);
            continue;
        }
        st_uuid_format(k.mv_data, info.id);
        info.rec = rec;
        rv = fn(arg, &info);
        strata__v1__agent_record__free_unpacked(rec, NULL);
    }
    mdb_cursor_close(cur);
    st_store_read_end(st, txn);
    return rv < 0 ? rv : ST_OK;
}

static const char *label_value(const Strata__V1__SeriesRecord *rec, const char *key)
{
    for (size_t i = 0; i < rec->n_labels; i++) {
        if (strcmp(rec->labels[i]->key, key) == 0) {
            return rec->labels[i]->value;
        }
    }
    return "";
}

bool st_store_labels_match(const Strata__V1__SeriesRecord *rec, const st_matcher *m, size_t nm)
{
    for (size_t i = 0; i < nm; i++) {
        const char *v = label_value(rec, m[i].key);
        bool hit;
        switch (m[i].op) {
        case ST_MATCH_EQ:
        case ST_MATCH_NE:
            hit = strcmp(v, m[i].value) == 0;
            break;
        default:
            hit = m[i].re != NULL && regexec(m[i].re, v, 0, NULL, 0) == 0;
            break;
        }
        if (hit != (m[i].op == ST_MATCH_EQ || m[i].op == ST_MATCH_RE)) {
            return false;
        }
    }
    return true;
}

int64_t st_store_block_end(const Strata__V1__Series *b)
{
    return b->start_unix_ms + (int64_t)b->interval_ms * (int64_t)st_series_npoints(b);
}

/* ---- the blockset's arena ---- */

#define PB_CHUNK (64 * 1024) /* a few fresh blocks' worth; larger blocks get their own */
#define PB_ALIGN 16          /* malloc's alignment here: what protobuf-c's structs may need */

struct st_pb_chunk {
    struct st_pb_chunk *next;
    size_t cap;
    max_align_t data[];
};

static void *pb_arena_alloc(void *ad, size_t size)
{
    struct st_pb_arena *a = ad;
    struct st_pb_chunk *c = a->chunks;
    void *p;
    if (size > SIZE_MAX / 2) {
        return NULL;
    }
    size = (size + PB_ALIGN - 1) & ~(size_t)(PB_ALIGN - 1);
    if (c == NULL || c->cap - a->used < size) {
        size_t cap = ST_MAX(size, (size_t)PB_CHUNK);
        if ((c = malloc(sizeof(*c) + cap)) == NULL) {
            return NULL;
        }
        c->cap = cap;
        c->next = a->chunks;
        a->chunks = c;
        a->used = 0;
    }
    p = (unsigned char *)c->data + a->used;
    a->used += size;
    return p;
}

/* Single pieces are never given back; pb_arena_reset drops them all. */
static void pb_arena_free(void *ad, void *p)
{
    (void)ad;
    (void)p;
}

/* Keeps the newest chunk for the next entry's blocks; frees the rest
 * (or every chunk, with keep false). */
static void pb_arena_reset(struct st_pb_arena *a, bool keep)
{
    struct st_pb_chunk *c = a->chunks, *next;
    if (c != NULL && keep) {
        next = c->next;
        c->next = NULL;
        c = next;
    } else {
        a->chunks = NULL;
    }
    while (c != NULL) {
        next = c->next;
        free(c);
        c = next;
    }
    a->used = 0;
}

/* Opens the blocks of one entry; with an arena, a fresh block's memory
 * comes from it and st_blocks_close leaves it there. */
static int blocks_open_in(const MDB_val *v, struct st_blocks *b, struct st_pb_arena *a)
{
    ProtobufCAllocator al = {pb_arena_alloc, pb_arena_free, a};
    memset(b, 0, sizeof(*b));
    if (st_codec_is_raw(v->mv_data, v->mv_size)) {
        int rv = st_codec_decode_raw(v->mv_data, v->mv_size, &b->dec);
        b->list = b->dec.runs;
        b->n = b->dec.nruns;
        return rv;
    }
    b->fresh = strata__v1__series__unpack(a != NULL ? &al : NULL, v->mv_size, v->mv_data);
    if (b->fresh == NULL) {
        return ST_ECORRUPT;
    }
    b->in_arena = a != NULL;
    b->list = &b->fresh;
    b->n = 1;
    return ST_OK;
}

int st_blocks_open(const MDB_val *v, struct st_blocks *b)
{
    return blocks_open_in(v, b, NULL);
}

void st_blocks_close(struct st_blocks *b)
{
    if (!b->in_arena) {
        strata__v1__series__free_unpacked(b->fresh, NULL);
    }
    b->in_arena = false;
    st_cdec_clear(&b->dec);
    b->fresh = NULL;
    b->list = NULL;
    b->n = 0;
}

/* A varint at *p (at most 10 bytes, before end); false when cut short. */
static bool wire_varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t c = *(*p)++;
        x |= (uint64_t)(c & 0x7f) << shift;
        if ((c & 0x80) == 0) {
            *out = x;
            return true;
        }
    }
    return false;
}

/* The varints in [p, end), every one of them whole. */
static bool wire_count_varints(const uint8_t *p, const uint8_t *end, size_t *n)
{
    uint64_t x;
    while (p < end) {
        if (!wire_varint(&p, end, &x)) {
            return false;
        }
        (*n)++;
    }
    return true;
}

/* Whether wire type wt is one protobuf-c accepts for field of Series
 * (strata.proto): varints, fixed 64-bit doubles packed or not, the
 * length-delimited strings and messages; unknown fields any. */
static bool series_wire_ok(uint64_t field, unsigned wt)
{
    switch (field) {
    case 1:
    case 2:
    case 4:
    case 13: /* name, labels, unit, sketches */
        return wt == 2;
    case 3:
    case 5:
    case 6:
    case 7:
    case 9: /* layer, kind, start, interval, scale */
        return wt == 0;
    case 8: /* ivalues, packed or not */
        return wt == 0 || wt == 2;
    case 10:
    case 11:
    case 12: /* values, mins, maxs */
        return wt == 1 || wt == 2;
    default:
        return true;
    }
}

/* Field 6 and 7 and the point counts of a fresh entry's Series, read off
 * its wire bytes. A seek asks for the end of every entry it steps over and
 * the blockset of every entry it reads, and unpacking a whole block (its
 * sketches too) for two numbers was most of a short window's scan. False
 * on anything it does not read (groups, a cut field, a known field of the
 * wrong wire type): the caller unpacks. Strings and embedded messages are
 * not looked into: a block whose sketch is malformed gets an end here and
 * is refused when read (st_blockset_read skips it with a warning). */
static bool fresh_end(const uint8_t *p, size_t len, int64_t *out)
{
    const uint8_t *end = p + len;
    uint64_t start = 0;
    uint64_t interval = 0;
    size_t ni = 0;
    size_t nv = 0;
    size_t ns = 0;
    while (p < end) {
        uint64_t tag;
        uint64_t x;
        if (!wire_varint(&p, end, &tag) || (tag >> 3) == 0 ||
            !series_wire_ok(tag >> 3, (unsigned)(tag & 7))) {
            return false;
        }
        switch (tag & 7) {
        case 0: /* varint */
            if (!wire_varint(&p, end, &x)) {
                return false;
            }
            start = (tag >> 3) == 6 ? x : start;
            interval = (tag >> 3) == 7 ? (uint32_t)x : interval;
            ni += (tag >> 3) == 8;
            break;
        case 1: /* 64-bit */
            if ((size_t)(end - p) < 8) {
                return false;
            }
            p += 8;
            nv += (tag >> 3) == 10;
            break;
        case 2: /* length-delimited: a packed column, a sketch, a string */
            if (!wire_varint(&p, end, &x) || x > (uint64_t)(end - p)) {
                return false;
            }
            if ((tag >> 3) == 8 && !wire_count_varints(p, p + x, &ni)) {
                return false;
            }
            if ((tag >> 3) == 10) {
                if (x % 8 != 0) {
                    return false;
                }
                nv += x / 8;
            }
            ns += (tag >> 3) == 13;
            p += x;
            break;
        case 5: /* 32-bit */
            if ((size_t)(end - p) < 4) {
                return false;
            }
            p += 4;
            break;
        default:
            return false;
        }
    }
    /* st_store_block_end's count: the column that holds the points */
    *out = (int64_t)start + (int64_t)interval * (int64_t)(ni > 0 ? ni : (nv > 0 ? nv : ns));
    return true;
}

int64_t st_store_entry_end(const MDB_val *v)
{
    int64_t end = INT64_MIN;
    if (st_codec_is_raw(v->mv_data, v->mv_size)) {
        return st_codec_raw_end(v->mv_data, v->mv_size, &end) == ST_OK ? end : INT64_MIN;
    }
    if (fresh_end(v->mv_data, v->mv_size, &end)) {
        return end;
    }
    Strata__V1__Series *b = strata__v1__series__unpack(NULL, v->mv_size, v->mv_data);
    if (b != NULL) {
        end = st_store_block_end(b);
    }
    strata__v1__series__free_unpacked(b, NULL);
    return end;
}

static int64_t floor_ms(int64_t t, int64_t unit)
{
    return t - ((t % unit) + unit) % unit;
}

/* Late blocks for a compacted hour sit after its entry and may not reach
 * back to it: when a compacted entry that may hold from (the one of from's
 * hour or 6 hours, or of the unit before, whose last block may run over)
 * reaches past from and comes before the position found (rc, k), start at
 * the earliest such instead. Candidates whose first hour ends after cmp_to
 * cannot be compacted entries of this snapshot and are not looked up; the
 * others are looked up without moving cur, which then stays where rc left
 * it unless one is taken (no second seek back to the position found). */
static int seek_compacted(MDB_cursor *cur, uint32_t id, int64_t from_ms, int64_t cmp_to, MDB_val *k,
                          MDB_val *v, int rc)
{
    static const int64_t units[2] = {ST_COMPACT_MS_L1, ST_COMPACT_MS};
    MDB_txn *txn = mdb_cursor_txn(cur);
    MDB_dbi dbi = mdb_cursor_dbi(cur);
    int64_t cand[4];
    bool at_id = rc == 0 && k->mv_size == ST_POINT_KEY_LEN && st_be32(k->mv_data) == id;
    for (int i = 0; i < 2; i++) {
        cand[2 * i] = floor_ms(from_ms, units[i]) - units[i];
        cand[2 * i + 1] = floor_ms(from_ms, units[i]);
    }
    /* earliest first: the one to start at is the earliest that reaches */
    for (int i = 1; i < 4; i++) {
        for (int j = i; j > 0 && cand[j - 1] > cand[j]; j--) {
            int64_t x = cand[j];
            cand[j] = cand[j - 1];
            cand[j - 1] = x;
        }
    }
    for (int i = 0; i < 4; i++) {
        uint8_t key[ST_POINT_KEY_LEN] = {0};
        MDB_val ck = {ST_POINT_KEY_LEN, key};
        MDB_val cv;
        if (cand[i] < 0 || (i > 0 && cand[i] == cand[i - 1]) || cand[i] > cmp_to - ST_COMPACT_MS) {
            continue;
        }
        st_put_be32(key, id);
        st_put_be64(key + 4, (uint64_t)cand[i]);
        if (mdb_get(txn, dbi, &ck, &cv) == 0 && st_codec_is_raw(cv.mv_data, cv.mv_size) &&
            st_store_entry_end(&cv) > from_ms &&
            (!at_id || memcmp(key, k->mv_data, ST_POINT_KEY_LEN) < 0)) {
            *k = ck;
            return mdb_cursor_get(cur, k, v, MDB_SET_KEY);
        }
    }
    return rc;
}

/* Positions cur on the first block of series id that may overlap from_ms:
 * seek to (id, from) and step back over entries that still reach past it
 * (a compacted hour says where it ends in its header). */
int st_store_seek_blocks(MDB_cursor *cur, uint32_t id, int64_t from_ms, int64_t cmp_to, MDB_val *k,
                         MDB_val *v)
{
    uint8_t key[ST_POINT_KEY_LEN] = {0};
    int rc;
    st_put_be32(key, id);
    st_put_be64(key + 4, (uint64_t)(from_ms > 0 ? from_ms : 0));
    *k = (MDB_val){ST_POINT_KEY_LEN, key};
    rc = mdb_cursor_get(cur, k, v, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND) {
        rc = mdb_cursor_get(cur, k, v, MDB_LAST);
        if (rc != 0) {
            return rc;
        }
        if (st_be32(k->mv_data) != id) {
            return MDB_NOTFOUND;
        }
    }
    for (int steps = 0; rc == 0 && steps < 64; steps++) {
        if (mdb_cursor_get(cur, k, v, MDB_PREV) != 0) {
            rc = mdb_cursor_get(cur, k, v, MDB_FIRST);
            return seek_compacted(cur, id, from_ms, cmp_to, k, v, rc);
        }
        if (k->mv_size != ST_POINT_KEY_LEN || st_be32(k->mv_data) != id) {
            break;
        }
        if (st_store_entry_end(v) <= from_ms) {
            break;
        }
    }
    rc = mdb_cursor_get(cur, k, v, MDB_NEXT);
    return seek_compacted(cur, id, from_ms, cmp_to, k, v, rc);
}

void st_blockset_clear(struct st_blockset *bs)
{
    for (size_t i = 0; i < bs->nents; i++) {
        st_blocks_close(&bs->ents[i]);
    }
    pb_arena_reset(&bs->arena, true);
    bs->nents = 0;
    bs->n = 0;
}

void st_blockset_free(struct st_blockset *bs)
{
    st_blockset_clear(bs);
    pb_arena_reset(&bs->arena, false);
    free(bs->ents);
    free(bs->list);
    memset(bs, 0, sizeof(*bs));
}

static int blockset_add(struct st_blockset *bs, const MDB_val *v)
{
    struct st_blocks *b;
    if (bs->nents == bs->entcap) {
        size_t ncap = bs->entcap ? bs->entcap * 2 : 8;
        struct st_blocks *ne = realloc(bs->ents, ncap * sizeof(*ne));
        if (ne == NULL) {
            return ST_ENOMEM;
        }
        bs->ents = ne;
        bs->entcap = ncap;
    }
    b = &bs->ents[bs->nents];
    if (blocks_open_in(v, b, &bs->arena) != ST_OK) {
        return ST_ECORRUPT;
    }
    bs->nents++;
    if (bs->n + b->n > bs->listcap) {
        size_t ncap = (bs->n + b->n) * 2;
        const Strata__V1__Series **nl = realloc(bs->list, ncap * sizeof(*nl));
        if (nl == NULL) {
            return ST_ENOMEM;
        }
        bs->list = nl;
        bs->listcap = ncap;
    }
    for (size_t i = 0; i < b->n; i++) {
        bs->list[bs->n++] = b->list[i];
    }
    return ST_OK;
}

/* Stable by start: the order of the keys the blocks had while fresh. */
void st_store_sort_blocks(const Strata__V1__Series **b, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        const Strata__V1__Series *x = b[i];
        size_t j = i;
        while (j > 0 && b[j - 1]->start_unix_ms > x->start_unix_ms) {
            b[j] = b[j - 1];
            j--;
        }
        b[j] = x;
    }
}

int st_blockset_read(MDB_cursor *cur, uint32_t id, MDB_val *k, MDB_val *v, struct st_blockset *bs)
{
    int64_t end;
    int rv;
    st_blockset_clear(bs);
    if ((rv = blockset_add(bs, v)) != ST_OK || !st_codec_is_raw(v->mv_data, v->mv_size)) {
        return rv;
    }
    /* what starts before it ends sorts into it: late blocks of a compacted
     * hour not yet folded in, and an hour compacted again after its 6 hours
     * were merged (a merge too large to redo waits) */
    end = st_store_entry_end(v);
    while (mdb_cursor_get(cur, k, v, MDB_NEXT) == 0) {
        if (k->mv_size != ST_POINT_KEY_LEN || st_be32(k->mv_data) != id ||
            (int64_t)st_be64((uint8_t *)k->mv_data + 4) >= end) {
            mdb_cursor_get(cur, k, v, MDB_PREV);
            break;
        }
        if (st_codec_is_raw(v->mv_data, v->mv_size)) {
            end = ST_MAX(end, st_store_entry_end(v));
        }
        if ((rv = blockset_add(bs, v)) != ST_OK) {
            return rv;
        }
    }
    st_store_sort_blocks(bs->list, bs->n);
    return ST_OK;
}

/* bs: the scan's, kept from series to series (its arena's chunk with it:
 * a chunk of its own per series was a malloc and free of 64 KiB each). */
static int scan_blocks(MDB_cursor *cur, const st_scan_series *ss, int64_t from_ms, int64_t to_ms,
                       int64_t cmp_to, const st_scan_cb *cb, struct st_blockset *bs)
{
    MDB_val k;
    MDB_val v;
    int rv = ST_OK;
    int rc = st_store_seek_blocks(cur, ss->id, from_ms, cmp_to, &k, &v);
    for (; rc == 0 && rv >= 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        int r;
        if (k.mv_size != ST_POINT_KEY_LEN || st_be32(k.mv_data) != ss->id) {
            break;
        }
        if ((int64_t)st_be64((uint8_t *)k.mv_data + 4) >= to_ms) {
            break;
        }
        if ((r = st_blockset_read(cur, ss->id, &k, &v, bs)) != ST_OK) {
            if (r == ST_ENOMEM) {
                rv = r;
                break;
            }
            ST_WARN("store", "series %u: a block does not decode; skipped", ss->id);
        }
        for (size_t i = 0; i < bs->n && rv >= 0; i++) {
            const Strata__V1__Series *b = bs->list[i];
            if (st_store_block_end(b) > from_ms && b->start_unix_ms < to_ms) {
                rv = cb->block(cb->arg, ss, b);
            }
        }
    }
    st_blockset_clear(bs);
    return rv;
}

/* The record of series id, its memory from a (NULL: malloc). */
static Strata__V1__SeriesRecord *series_record_in(MDB_txn *txn, st_store *st, uint32_t id,
                                                  struct st_pb_arena *a)
{
    ProtobufCAllocator al = {pb_arena_alloc, pb_arena_free, a};
    uint8_t idk[4];
    MDB_val k = {4, idk};
    MDB_val v;
    st_put_be32(idk, id);
    if (mdb_get(txn, st->series_id, &k, &v) != 0) {
        return NULL;
    }
    return strata__v1__series_record__unpack(a != NULL ? &al : NULL, v.mv_size, v.mv_data);
}

Strata__V1__SeriesRecord *st_store_series_record(MDB_txn *txn, st_store *st, uint32_t id)
{
    return series_record_in(txn, st, id, NULL);
}

/* The record of a series as its dictionary key k (name and labels, each
 * ended by NUL, as encode_key writes them) and the kept kind and unit say
 * it, in a's memory; labels point into k. NULL when the kind and unit are
 * not kept yet, or the key does not read as name and pairs. */
static Strata__V1__SeriesRecord *series_record_view(st_store *st, const MDB_val *k, uint32_t id,
                                                    struct st_pb_arena *a)
{
    const char *p = k->mv_data;
    const char *end = p + k->mv_size;
    const char *unit;
    Strata__V1__SeriesRecord *rec;
    size_t n = 0;
    int kind;
    if (k->mv_size == 0 || end[-1] != '\0' || !st_meta_get(st->smeta, id, &kind, &unit)) {
        return NULL;
    }
    for (const char *q = p; q < end; q += strlen(q) + 1) {
        n++;
    }
    if (n % 2 != 1 || (n - 1) / 2 > ST_STORE_MAX_LABELS ||
        (rec = pb_arena_alloc(a, sizeof(*rec))) == NULL) {
        return NULL;
    }
    strata__v1__series_record__init(rec);
    rec->id = id;
    rec->name = (char *)p;
    rec->unit = (char *)unit;
    rec->kind = (Strata__V1__Kind)kind;
    rec->n_labels = (n - 1) / 2;
    if (rec->n_labels > 0 &&
        (rec->labels = pb_arena_alloc(a, rec->n_labels * sizeof(*rec->labels))) == NULL) {
        return NULL;
    }
    p += strlen(p) + 1;
    for (size_t i = 0; i < rec->n_labels; i++) {
        Strata__V1__Label *l = pb_arena_alloc(a, sizeof(*l));
        if (l == NULL) {
            return NULL;
        }
        strata__v1__label__init(l);
        l->key = (char *)p;
        p += strlen(p) + 1;
        l->value = (char *)p;
        p += strlen(p) + 1;
        rec->labels[i] = l;
    }
    return rec;
}

static int scan_series(st_store *st, MDB_txn *txn, const char *metric, const st_matcher *m,
                       size_t nm, int64_t from_ms, int64_t to_ms, const st_scan_cb *cb)
{
    size_t mlen = strlen(metric) + 1; /* the name and its NUL */
    MDB_cursor *sc = NULL;
    MDB_cursor *pc = NULL;
    MDB_val k = {mlen, (void *)metric};
    MDB_val v;
    int64_t cmp_to = st_rollup_compacted_to(st, txn);
    struct st_blockset bs = {0};
    /* each series' record is unpacked into it, and dropped with it at the
     * next (protobuf-c allocates every label and string on its own) */
    struct st_pb_arena recs = {0};
    int rv = ST_OK;
    int rc;
    if ((rc = mdb_cursor_open(txn, st->series, &sc)) != 0 ||
        (rc = mdb_cursor_open(txn, st->points, &pc)) != 0) {
        rv = st_store_map_mdb(rc, "cursor");
        goto out;
    }
    for (rc = mdb_cursor_get(sc, &k, &v, MDB_SET_RANGE); rc == 0 && rv >= 0;
         rc = mdb_cursor_get(sc, &k, &v, MDB_NEXT)) {
        st_scan_series ss;
        Strata__V1__SeriesRecord *rec;
        if (k.mv_size < mlen || memcmp(k.mv_data, metric, mlen) != 0) {
            break;
        }
        ss.id = v.mv_size == 4 ? st_be32(v.mv_data) : 0;
        pb_arena_reset(&recs, true);
        if ((rec = series_record_view(st, &k, ss.id, &recs)) == NULL) {
            if ((rec = series_record_in(txn, st, ss.id, &recs)) == NULL) {
                continue;
            }
            st_meta_note(st->smeta, ss.id, (int)rec->kind, rec->unit);
        }
        ss.rec = rec;
        if (st_store_labels_match(rec, m, nm) && (rv = cb->series(cb->arg, &ss)) == 1) {
            rv = scan_blocks(pc, &ss, from_ms, to_ms, cmp_to, cb, &bs);
        }
    }
out:
    st_blockset_free(&bs);
    pb_arena_reset(&recs, false);
    mdb_cursor_close(pc);
    mdb_cursor_close(sc);
    return rv < 0 ? rv : ST_OK;
}

int st_store_scan(st_store *st, const char *metric, const st_matcher *m, size_t nm, int64_t from_ms,
                  int64_t to_ms, const st_scan_cb *cb)
{
    return st_store_scan_snap(st, metric, m, nm, from_ms, to_ms, cb, NULL);
}

int st_store_scan_snap(st_store *st, const char *metric, const st_matcher *m, size_t nm,
                       int64_t from_ms, int64_t to_ms, const st_scan_cb *cb, uint64_t *snapshot)
{
    MDB_txn *txn;
    int rv;
    if (metric == NULL || metric[0] == '\0' || strlen(metric) > ST_FRAME_MAX_NAME) {
        return ST_EINVAL;
    }
    if ((rv = st_store_read_begin(st, &txn)) != ST_OK) {
        return rv;
    }
    if (snapshot != NULL) {
        *snapshot = (uint64_t)mdb_txn_id(txn);
    }
    rv = scan_series(st, txn, metric, m, nm, from_ms, to_ms, cb);
    st_store_read_end(st, txn);
    return rv;
}

uint64_t st_store_generation(st_store *st)
{
    return st_changes_generation(st->changes);
}

int64_t st_store_changed_since(st_store *st, const char *metric, uint64_t gen)
{
    return st_changes_since(st->changes, metric, gen);
}

bool st_store_series_added_since(st_store *st, const char *metric, uint64_t gen)
{
    return st_changes_added_since(st->changes, metric, gen);
}

int st_store_stats(st_store *st, struct st_store_stats *out)
{
    MDB_envinfo info;
    MDB_stat ms;
    MDB_txn *txn;
    struct stat sb;
    char path[4200];
    int rv;
    memset(out, 0, sizeof(*out));
    snprintf(path, sizeof(path), "%s/data.mdb", st->path);
    if (stat(path, &sb) == 0) {
        out->file_bytes = (uint64_t)sb.st_blocks * 512;
    }
    if ((rv = st_store_read_begin(st, &txn)) != ST_OK) {
        return rv;
    }
    /* Inside the read transaction, which keeps the map from being resized
     * under mdb_env_info (a crash seen while the map grew). */
    mdb_env_info(st->env, &info);
    mdb_env_stat(st->env, &ms);
    out->map_size = info.me_mapsize;
    out->used_bytes = (uint64_t)(info.me_last_pgno + 1) * ms.ms_psize;
    {
        MDB_dbi all[] = {1 /* the main database: names */,
                         st->meta,
                         st->agents,
                         st->series,
                         st->series_id,
                         st->points,
                         st->rollups,
                         st->dirty,
                         st->kv};
        for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
            if (mdb_stat(txn, all[i], &ms) == 0) {
                out->live_bytes +=
                    (uint64_t)(ms.ms_branch_pages + ms.ms_leaf_pages + ms.ms_overflow_pages) *
                    ms.ms_psize;
            }
        }
    }
    if (mdb_stat(txn, st->series_id, &ms) == 0) {
        out->series = ms.ms_entries;
    }
    if (mdb_stat(txn, st->points, &ms) == 0) {
        out->point_blocks = ms.ms_entries;
    }
    if (mdb_stat(txn, st->agents, &ms) == 0) {
        out->agents = ms.ms_entries;
    }
    if (mdb_stat(txn, st->rollups, &ms) == 0) {
        out->rollup_entries = ms.ms_entries;
    }
    if (mdb_stat(txn, st->dirty, &ms) == 0) {
        out->dirty = ms.ms_entries;
    }
    out->wm_1m = atomic_load(&st->pub_wm_1m);
    out->wm_1h = atomic_load(&st->pub_wm_1h);
    st_store_read_end(st, txn);
    return ST_OK;
}

int st_store_metric_kind(st_store *st, const char *metric, int *kind)
{
    size_t mlen = strlen(metric) + 1;
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k = {mlen, (void *)metric};
    MDB_val v;
    int rv = st_store_read_begin(st, &txn);
    if (rv != ST_OK) {
        return rv;
    }
    rv = ST_ENOENT;
    if (mdb_cursor_open(txn, st->series, &cur) == 0) {
        if (mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE) == 0 && k.mv_size >= mlen &&
            memcmp(k.mv_data, metric, mlen) == 0 && v.mv_size == 4) {
            Strata__V1__SeriesRecord *rec = st_store_series_record(txn, st, st_be32(v.mv_data));
            if (rec != NULL) {
                *kind = rec->kind;
                rv = ST_OK;
            }
            strata__v1__series_record__free_unpacked(rec, NULL);
        }
        mdb_cursor_close(cur);
    }
    st_store_read_end(st, txn);
    return rv;
}

/* ---- engine records ---- */

int st_store_kv_write(st_store *st, const st_store_kv *items, size_t n)
{
    MDB_txn *txn = NULL;
    size_t bytes = 0;
    int rc = 0;
    if (n > ST_STORE_KV_BATCH_MAX) {
        return ST_ETOOBIG;
    }
    for (size_t i = 0; i < n; i++) {
        const char *key = items[i].key;
        if (key == NULL || key[0] == '\0' || strlen(key) > ST_STORE_MAX_KEY) {
            return ST_EINVAL;
        }
        bytes += items[i].del ? 0 : items[i].len;
    }
    if (bytes > ST_STORE_KV_BATCH_BYTES) {
        return ST_ETOOBIG;
    }
    for (int attempt = 0; attempt < 8; attempt++) {
        pthread_rwlock_rdlock(&st->resize);
        txn = NULL;
        rc = mdb_txn_begin(st->env, NULL, 0, &txn);
        for (size_t i = 0; rc == 0 && i < n; i++) {
            MDB_val k = {strlen(items[i].key), (void *)items[i].key};
            MDB_val v = {items[i].len, (void *)items[i].val};
            rc = items[i].del ? mdb_del(txn, st->kv, &k, NULL) : mdb_put(txn, st->kv, &k, &v, 0);
            rc = rc == MDB_NOTFOUND && items[i].del ? 0 : rc;
        }
        if (rc == 0) {
            rc = mdb_txn_commit(txn);
        } else if (txn != NULL) {
            mdb_txn_abort(txn);
        }
        pthread_rwlock_unlock(&st->resize);
        if (rc != MDB_MAP_FULL) {
            break;
        }
        /* The map is full: grow it, as the writer would, and write the
         * whole batch again. */
        if (st_store_grow(st) != ST_OK) {
            break;
        }
    }
    return st_store_map_mdb(rc, "engine records");
}

int st_store_kv_put(st_store *st, const char *key, const void *val, size_t len)
{
    return st_store_kv_write(st, &(st_store_kv){key, val, len, false}, 1);
}

int st_store_kv_del(st_store *st, const char *key)
{
    return st_store_kv_write(st, &(st_store_kv){key, NULL, 0, true}, 1);
}

int st_store_kv_get(st_store *st, const char *key, char **val, size_t *len)
{
    MDB_txn *txn;
    MDB_val k = {strlen(key), (void *)key};
    MDB_val v;
    int rv;
    int rc;
    if (key[0] == '\0' || k.mv_size > ST_STORE_MAX_KEY) {
        return ST_EINVAL;
    }
    if ((rv = st_store_read_begin(st, &txn)) != ST_OK) {
        return rv;
    }
    rc = mdb_get(txn, st->kv, &k, &v);
    if (rc == 0) {
        char *p = malloc(v.mv_size + 1);
        if (p == NULL) {
            rv = ST_ENOMEM;
        } else {
            memcpy(p, v.mv_data, v.mv_size);
            p[v.mv_size] = '\0';
            *val = p;
            if (len != NULL) {
                *len = v.mv_size;
            }
        }
    } else {
        rv = rc == MDB_NOTFOUND ? ST_ENOENT : st_store_map_mdb(rc, "get engine record");
    }
    st_store_read_end(st, txn);
    return rv;
}

int st_store_kv_scan(st_store *st, const char *prefix,
                     int (*fn)(void *arg, const char *key, const char *val, size_t len), void *arg)
{
    size_t plen = strlen(prefix);
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k = {plen, (void *)prefix};
    MDB_val v;
    char key[ST_STORE_MAX_KEY + 1];
    int rv = st_store_read_begin(st, &txn);
    int rc;
    if (rv != ST_OK) {
        return rv;
    }
    if ((rc = mdb_cursor_open(txn, st->kv, &cur)) != 0) {
        st_store_read_end(st, txn);
        return st_store_map_mdb(rc, "cursor engine");
    }
    for (rc = plen ? mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE)
                   : mdb_cursor_get(cur, &k, &v, MDB_FIRST);
         rc == 0 && rv == ST_OK; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0 ||
            k.mv_size > ST_STORE_MAX_KEY) {
            break;
        }
        memcpy(key, k.mv_data, k.mv_size);
        key[k.mv_size] = '\0';
        if (fn(arg, key, v.mv_data, v.mv_size) != 0) {
            rv = -1;
        }
    }
    mdb_cursor_close(cur);
    st_store_read_end(st, txn);
    return rv < 0 ? ST_OK : rv;
}
