/* The records of one engine run, held in memory until the run commits:
 * every finding as the run found it and changes it, and the baselines and
 * loop state it writes. A record is written once per run however often the
 * run changes it, a finding the run left as it was is not written at all,
 * and an abandoned run writes nothing.
 *
 * The findings a run committed whole are what the store holds, so the next
 * run starts from them instead of loading and parsing every finding again
 * (1,472 findings, 370,000 JSON values, 30 ms at 1,000 hosts). Anything
 * else that writes a finding (st_finding_save) drops them first. */
#include "engine_internal.h"

#include "err.h"
#include "log.h"
#include "util.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct st_run {
    json_t *findings; /* id -> finding: all of them, as the run changes them */
    json_t *loaded;   /* id -> the hash of its text in the store (finding_hash) */
    json_t *other;    /* store key -> record: baselines, loop state */
    uint64_t seen;    /* the hash of the seen record in the store; 0: unknown */
    bool committed;   /* every record written: findings and loaded are the store's */
};

static void run_free(struct st_run *run)
{
    if (run != NULL) {
        json_decref(run->findings);
        json_decref(run->loaded);
        json_decref(run->other);
        free(run);
    }
}

void st_run_forget(st_engine *en)
{
    run_free(en->kept);
    en->kept = NULL;
}

/* A hash of j as its compact text says it: the same keys in the same
 * order with the same values, bit for bit. Unchanged findings are known by
 * it: printing all 1,472 of them each run to compare texts was a quarter of
 * a run that writes nothing. A text read back from the store hashes as the
 * JSON it was printed from (jansson keeps key order, and prints doubles
 * that read back to the same bits). */
static uint64_t json_hash(const json_t *j, uint64_t h)
{
    uint8_t tag = (uint8_t)json_typeof(j);
    const char *k;
    const json_t *v;
    size_t i;
    h = st_fnv1a(h, &tag, 1);
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        json_object_foreach((json_t *)j, k, v)
        {
            h = st_fnv1a(h, k, strlen(k) + 1);
            h = json_hash(v, h);
        }
        return st_fnv1a(h, "}", 1);
    case JSON_ARRAY:
        json_array_foreach(j, i, v)
        {
            h = json_hash(v, h);
        }
        return st_fnv1a(h, "]", 1);
    case JSON_STRING: {
        size_t n = json_string_length(j);
        h = st_fnv1a(h, &n, sizeof(n));
        return st_fnv1a(h, json_string_value(j), n);
    }
    case JSON_INTEGER: {
        json_int_t x = json_integer_value(j);
        return st_fnv1a(h, &x, sizeof(x));
    }
    case JSON_REAL: {
        double x = json_real_value(j);
        return st_fnv1a(h, &x, sizeof(x));
    }
    default: /* true, false, null: the tag says it */
        return h;
    }
}

/* A finding's hash without the fields every run moves: the time it was
 * last seen and its evidence window. */
static uint64_t finding_hash(const json_t *f)
{
    uint64_t h = ST_FNV_SEED;
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)f, k, v)
    {
        if (strcmp(k, "last_seen_unix_ms") == 0) {
            continue;
        }
        h = st_fnv1a(h, k, strlen(k) + 1);
        if (strcmp(k, "evidence") == 0 && json_is_object(v)) {
            const char *ek;
            const json_t *ev;
            json_object_foreach((json_t *)v, ek, ev)
            {
                if (strcmp(ek, "window") != 0) {
                    h = st_fnv1a(h, ek, strlen(ek) + 1);
                    h = json_hash(ev, h);
                }
            }
            h = st_fnv1a(h, "}", 1);
        } else {
            h = json_hash(v, h);
        }
    }
    return h;
}

static json_int_t seen_of(const json_t *f)
{
    return json_integer_value(json_object_get(f, "last_seen_unix_ms"));
}

/* ---- the seen record ----
 * Every step moves every open finding's last-seen time and evidence
 * window, and nothing else of most of them; printing and writing 1,500
 * findings for that was a sixth of a step's first run at fleet size. A
 * finding's text is written when anything else changed; the moving fields
 * of every finding go into one record, ST_SEEN_KEY: {id: [last_seen,
 * window from, window to]}, written when it changed, which readers lay
 * over the texts (st_seen_patch; an entry older than the text is not). */

void st_seen_patch(json_t *f, const json_t *seen)
{
    const json_t *e = json_object_get(seen, json_string_value(json_object_get(f, "id")));
    json_t *w = json_object_get(json_object_get(f, "evidence"), "window");
    if (!json_is_array(e) || json_array_size(e) != 3 ||
        json_integer_value(json_array_get(e, 0)) < seen_of(f)) {
        return; /* none, or older than the text (a partial commit) */
    }
    json_object_set(f, "last_seen_unix_ms", json_array_get(e, 0));
    if (json_is_object(w)) {
        json_object_set(w, "from", json_array_get(e, 1));
        json_object_set(w, "to", json_array_get(e, 2));
    }
}

json_t *st_seen_load(st_engine *en)
{
    char *val = NULL;
    size_t len = 0;
    json_t *seen = NULL;
    if (st_store_kv_get(en->st, ST_SEEN_KEY, &val, &len) == ST_OK) {
        seen = json_loadb(val, len, 0, NULL);
        free(val);
    }
    return seen;
}

/* The seen record of every finding of the run, those whose texts are
 * current too: a reader reads the texts and the record in two
 * transactions, and one that read a text before the run rewrote it still
 * finds its moving fields (and a batch that failed to write a text leaves
 * the record right). */
static json_t *seen_record(const struct st_run *run)
{
    json_t *rec = json_object();
    const char *id;
    json_t *f;
    json_object_foreach(run->findings, id, f)
    {
        const json_t *w = json_object_get(json_object_get(f, "evidence"), "window");
        if (json_object_get(f, "last_seen_unix_ms") != NULL) {
            json_object_set_new(rec, id,
                                json_pack("[I,I,I]", seen_of(f),
                                          json_integer_value(json_object_get(w, "from")),
                                          json_integer_value(json_object_get(w, "to"))));
        }
    }
    return rec;
}

static int load_one(void *arg, const char *key, const char *val, size_t len)
{
    struct st_run *run = arg;
    const char *id = key + strlen(ST_FINDING_PREFIX);
    json_t *f = json_loadb(val, len, 0, NULL);
    if (f != NULL) {
        json_object_set_new(run->findings, id, f);
        json_object_set_new(run->loaded, id, json_integer((json_int_t)finding_hash(f)));
    }
    return 0;
}

int st_run_begin(st_engine *en)
{
    struct st_run *run = en->kept;
    json_t *seen;
    const char *id;
    json_t *f;
    int rv = ST_OK;
    en->kept = NULL;
    if (run != NULL) {
        run->committed = false;
        json_object_clear(run->other);
        en->run = run;
        return ST_OK;
    }
    if ((run = calloc(1, sizeof(*run))) == NULL) {
        return ST_ENOMEM;
    }
    run->findings = json_object();
    run->loaded = json_object();
    run->other = json_object();
    if (run->findings == NULL || run->loaded == NULL || run->other == NULL) {
        rv = ST_ENOMEM;
    } else {
        rv = st_store_kv_scan(en->st, ST_FINDING_PREFIX, load_one, run);
    }
    /* loaded holds what the texts say; the findings, what readers see */
    if (rv == ST_OK && (seen = st_seen_load(en)) != NULL) {
        json_object_foreach(run->findings, id, f)
        {
            st_seen_patch(f, seen);
        }
        run->seen = json_hash(seen, ST_FNV_SEED);
        json_decref(seen);
    }
    en->run = run;
    if (rv != ST_OK) {
        st_run_end(en);
    }
    return rv;
}

void st_run_end(st_engine *en)
{
    struct st_run *run = en->run;
    en->run = NULL;
    if (run != NULL && run->committed) {
        st_run_forget(en);
        en->kept = run;
    } else {
        run_free(run);
    }
}

json_t *st_run_finding(st_engine *en, const char *id)
{
    return json_object_get(en->run->findings, id);
}

int st_run_add_finding(st_engine *en, const char *id, json_t *f)
{
    return json_object_set(en->run->findings, id, f) == 0 ? ST_OK : ST_ENOMEM;
}

static int by_id(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

json_t *st_run_findings(st_engine *en)
{
    size_t n = json_object_size(en->run->findings);
    const char **ids = calloc(n + 1, sizeof(*ids));
    json_t *all = json_array();
    const char *id;
    json_t *f;
    size_t i = 0;
    if (ids == NULL || all == NULL) {
        free(ids);
        json_decref(all);
        return NULL;
    }
    json_object_foreach(en->run->findings, id, f)
    {
        ids[i++] = id;
    }
    /* Store order (the keys differ only in their ids), as a scan of the
     * store would give them: the ranking's ties depend on it. */
    qsort(ids, n, sizeof(*ids), by_id);
    for (i = 0; i < n; i++) {
        json_array_append(all, json_object_get(en->run->findings, ids[i]));
    }
    free(ids);
    return all;
}

json_t *st_run_get(st_engine *en, const char *key)
{
    json_t *r = json_object_get(en->run->other, key);
    char *val = NULL;
    size_t len = 0;
    if (r != NULL) {
        return json_incref(r);
    }
    if (st_store_kv_get(en->st, key, &val, &len) != ST_OK) {
        return NULL;
    }
    r = json_loadb(val, len, 0, NULL);
    free(val);
    return r;
}

int st_run_put(st_engine *en, const char *key, json_t *rec)
{
    return json_object_set(en->run->other, key, rec) == 0 ? ST_OK : ST_ENOMEM;
}

/* The records a run changed, written in batches of one transaction each. */
struct pending {
    st_store_kv *items;
    size_t n, cap;
    size_t bytes; /* of the batch not yet written */
    size_t from;  /* first item of that batch */
    int rv;
};

/* Writes items [from, n) as one batch. */
static void flush_batch(st_engine *en, struct pending *p)
{
    if (p->n > p->from) {
        int r = st_store_kv_write(en->st, p->items + p->from, p->n - p->from);
        p->rv = r != ST_OK ? r : p->rv;
    }
    p->from = p->n;
    p->bytes = 0;
}

/* Queues rec under key unless the store holds it (loaded[id]; loaded
 * NULL: always), and records what it will hold there: loaded is the
 * store's once the run commits whole, and is dropped with the run if not.
 * A finding whose only change is the moving fields is left to the seen
 * record. Takes the text and key it makes; freed after the batches are
 * written. */
static int queue_text(st_engine *en, struct pending *p, const char *key, json_t *loaded,
                      const char *id, const json_t *rec, size_t *written)
{
    const json_t *was = loaded != NULL ? json_object_get(loaded, id) : NULL;
    uint64_t h = loaded != NULL ? finding_hash(rec) : 0;
    char *text;
    char *k;
    size_t len;
    if (was != NULL && (uint64_t)json_integer_value(was) == h) {
        return ST_OK;
    }
    text = json_dumps(rec, JSON_COMPACT);
    k = strdup(key);
    if (text == NULL || k == NULL) {
        free(text);
        free(k);
        return ST_ENOMEM;
    }
    len = strlen(text);
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 256;
        st_store_kv *items = realloc(p->items, cap * sizeof(*items));
        if (items == NULL) {
            free(text);
            free(k);
            return ST_ENOMEM;
        }
        p->items = items;
        p->cap = cap;
    }
    if (loaded != NULL && json_object_set_new(loaded, id, json_integer((json_int_t)h)) != 0) {
        free(text);
        free(k);
        return ST_ENOMEM;
    }
    if (p->n - p->from == ST_STORE_KV_BATCH_MAX || p->bytes + len > ST_STORE_KV_BATCH_BYTES) {
        flush_batch(en, p);
    }
    p->items[p->n++] = (st_store_kv){k, text, len, false};
    p->bytes += len;
    (*written)++;
    return ST_OK;
}

/* Writes what the run changed, in as few transactions as the batch bounds
 * allow (one at any fleet size seen so far): one fsync per run rather than
 * one per record. A batch is written whole or not at all. */
int st_run_commit(st_engine *en)
{
    struct st_run *run = en->run;
    struct pending p = {0};
    const char *k;
    json_t *v;
    char key[ST_STORE_MAX_KEY + 1];
    size_t findings = 0;
    size_t others = 0;
    int rv = ST_OK;
    json_object_foreach(run->findings, k, v)
    {
        int r;
        snprintf(key, sizeof(key), ST_FINDING_PREFIX "%s", k);
        if ((r = queue_text(en, &p, key, run->loaded, k, v, &findings)) != ST_OK) {
            rv = r;
        }
    }
    {
        /* after the texts: the record names those left older */
        json_t *seen = seen_record(run);
        uint64_t h = seen != NULL ? json_hash(seen, ST_FNV_SEED) : 0;
        if (seen != NULL && h != run->seen) {
            json_object_set(run->other, ST_SEEN_KEY, seen);
            run->seen = h;
        }
        json_decref(seen);
    }
    json_object_foreach(run->other, k, v)
    {
        int r = queue_text(en, &p, k, NULL, NULL, v, &others);
        rv = r != ST_OK ? r : rv;
    }
    flush_batch(en, &p);
    rv = p.rv != ST_OK ? p.rv : rv;
    /* All written: loaded holds the store's texts' hashes, and the findings with
     * them are where the next run starts. */
    run->committed = rv == ST_OK;
    for (size_t i = 0; i < p.n; i++) {
        free((char *)p.items[i].key);
        free((void *)p.items[i].val);
    }
    free(p.items);
    en->run_writes = findings + others;
    en->run_finding_writes = findings;
    ST_DEBUG("engine", "run wrote %zu of %zu findings and %zu other records", findings,
             json_object_size(run->findings), others);
    if (rv != ST_OK) {
        ST_WARN("engine", "writing the run's records: %s", st_strerror(rv));
    }
    return rv;
}
