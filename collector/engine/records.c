/* The records of one engine run, held in memory until the run commits:
 * every finding as the run found it and changes it, and the baselines and
 * loop state it writes. A record is written once per run however often the
 * run changes it, a finding the run left as it was is not written at all,
 * and an abandoned run writes nothing. */
#include "engine_internal.h"

#include "err.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

struct st_run {
    json_t *findings; /* id -> finding: all of them, as the run changes them */
    json_t *loaded;   /* id -> the finding's text as loaded, to skip unchanged ones */
    json_t *other;    /* store key -> record: baselines, loop state */
};

static int load_one(void *arg, const char *key, const char *val, size_t len)
{
    struct st_run *run = arg;
    const char *id = key + strlen(ST_FINDING_PREFIX);
    json_t *f = json_loadb(val, len, 0, NULL);
    if (f != NULL) {
        json_object_set_new(run->findings, id, f);
        json_object_set_new(run->loaded, id, json_stringn_nocheck(val, len));
    }
    return 0;
}

int st_run_begin(st_engine *en)
{
    struct st_run *run = calloc(1, sizeof(*run));
    int rv;
    if (run == NULL) {
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
    en->run = run;
    if (rv != ST_OK) {
        st_run_end(en);
    }
    return rv;
}

void st_run_end(st_engine *en)
{
    struct st_run *run = en->run;
    if (run == NULL) {
        return;
    }
    json_decref(run->findings);
    json_decref(run->loaded);
    json_decref(run->other);
    free(run);
    en->run = NULL;
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

static int put_text(st_engine *en, const char *key, const json_t *rec, const json_t *loaded,
                    size_t *written)
{
    char *text = json_dumps(rec, JSON_COMPACT);
    size_t len;
    int rv = ST_OK;
    if (text == NULL) {
        return ST_ENOMEM;
    }
    len = strlen(text);
    if (loaded == NULL || json_string_length(loaded) != len ||
        memcmp(json_string_value(loaded), text, len) != 0) {
        rv = st_store_kv_put(en->st, key, text, len);
        (*written)++;
    }
    free(text);
    return rv;
}

/* Writes what the run changed. Each record is whole; the store writes
 * each in its own transaction (st_store has no multi-record write yet),
 * so a crash part-way leaves some records of this run and the rest of
 * the last one, as before batching. */
int st_run_commit(st_engine *en)
{
    struct st_run *run = en->run;
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
        if ((r = put_text(en, key, v, json_object_get(run->loaded, k), &findings)) != ST_OK) {
            rv = r;
        }
    }
    json_object_foreach(run->other, k, v)
    {
        int r = put_text(en, k, v, NULL, &others);
        rv = r != ST_OK ? r : rv;
    }
    en->run_writes = findings + others;
    en->run_finding_writes = findings;
    ST_DEBUG("engine", "run wrote %zu of %zu findings and %zu other records", findings,
             json_object_size(run->findings), others);
    if (rv != ST_OK) {
        ST_WARN("engine", "writing the run's records: %s", st_strerror(rv));
    }
    return rv;
}
