/* Agent actions on the collector: queued per agent, attached to acks,
 * results recorded and handed to the engine by a small thread so that the
 * writer never waits on an engine run. */
#include "actions.h"

#include "engine.h"
#include "err.h"
#include "log.h"
#include "timeutil.h"
#include "util.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ACTION_PREFIX "action/"

struct pending {
    char id[33];
    uint8_t agent[16];
    char type[64];
    char finding[33];
    json_t *params; /* {k: v} strings */
    char *finding_json;
    int64_t sent_at; /* monotonic ms, 0: not sent yet */
};

struct st_actions {
    st_store *st;
    struct st_engine *en;
    pthread_mutex_t mu;
    struct pending p[ST_ACTIONS_MAX_PENDING];
    size_t n;
    pthread_t thread;
    pthread_cond_t cv;
    bool stopping;
    json_t *results; /* results waiting for the engine */
};

static int save(st_actions *a, json_t *rec)
{
    char key[64];
    char *text = json_dumps(rec, JSON_COMPACT);
    int rv;
    if (text == NULL) {
        return ST_ENOMEM;
    }
    snprintf(key, sizeof(key), ACTION_PREFIX "%s", json_string_value(json_object_get(rec, "id")));
    rv = st_store_kv_put(a->st, key, text, strlen(text));
    free(text);
    return rv;
}

static json_t *load(st_actions *a, const char *id)
{
    char key[64];
    char *val = NULL;
    size_t len = 0;
    json_t *rec;
    snprintf(key, sizeof(key), ACTION_PREFIX "%.32s", id);
    if (st_store_kv_get(a->st, key, &val, &len) != ST_OK) {
        return NULL;
    }
    rec = json_loadb(val, len, 0, NULL);
    free(val);
    return rec;
}

/* Adds a record to the in-memory queue (mutex held). */
static int enqueue(st_actions *a, const json_t *rec)
{
    struct pending *p;
    const char *fj = json_string_value(json_object_get(rec, "finding_json"));
    if (a->n >= ST_ACTIONS_MAX_PENDING) {
        return ST_EAGAIN;
    }
    p = &a->p[a->n];
    memset(p, 0, sizeof(*p));
    snprintf(p->id, sizeof(p->id), "%s", json_string_value(json_object_get(rec, "id")));
    snprintf(p->type, sizeof(p->type), "%s", json_string_value(json_object_get(rec, "type")));
    snprintf(p->finding, sizeof(p->finding), "%s",
             json_string_value(json_object_get(rec, "finding_id")));
    if (st_uuid_parse(json_string_value(json_object_get(rec, "agent_id")), p->agent) != ST_OK) {
        return ST_EINVAL;
    }
    p->params = json_incref(json_object_get(rec, "params"));
    p->finding_json = strdup(fj != NULL ? fj : "{}");
    a->n++;
    return ST_OK;
}

static int load_one(void *arg, const char *key, const char *val, size_t len)
{
    st_actions *a = arg;
    json_t *rec = json_loadb(val, len, 0, NULL);
    const char *state = json_string_value(json_object_get(rec, "state"));
    (void)key;
    if (state != NULL && strcmp(state, "pending") == 0) {
        enqueue(a, rec);
    }
    json_decref(rec);
    return 0;
}

/* ---- results go to the engine from this thread ---- */

static void record_result(st_actions *a, json_t *res)
{
    const char *id = json_string_value(json_object_get(res, "action_id"));
    const char *finding = json_string_value(json_object_get(res, "finding_id"));
    const char *status = json_string_value(json_object_get(res, "status"));
    json_t *rec = id != NULL ? load(a, id) : NULL;
    char note[1200];
    if (rec != NULL) {
        json_object_set_new(rec, "state", json_string("done"));
        json_object_set(rec, "result", res);
        json_object_set_new(rec, "finished_unix_ms", json_integer(st_time_wall_ms()));
        save(a, rec);
        json_decref(rec);
    }
    if (a->en == NULL || finding == NULL || status == NULL) {
        return;
    }
    snprintf(note, sizeof(note), "agent action %s: %s%s%s",
             json_string_value(json_object_get(res, "type")) ?: "", status,
             json_string_length(json_object_get(res, "error")) ? ": " : "",
             json_string_value(json_object_get(res, "error")) ?: "");
    st_engine_callback(a->en, finding, strcmp(status, "ok") == 0 ? "applied" : "note", note);
}

static void *results_main(void *arg)
{
    st_actions *a = arg;
    pthread_mutex_lock(&a->mu);
    while (!a->stopping || json_array_size(a->results) > 0) {
        json_t *res;
        if (json_array_size(a->results) == 0) {
            pthread_cond_wait(&a->cv, &a->mu);
            continue;
        }
        res = json_incref(json_array_get(a->results, 0));
        json_array_remove(a->results, 0);
        pthread_mutex_unlock(&a->mu);
        record_result(a, res);
        json_decref(res);
        pthread_mutex_lock(&a->mu);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

int st_actions_new(st_store *st, st_actions **out)
{
    st_actions *a = calloc(1, sizeof(*a));
    if (a == NULL || (a->results = json_array()) == NULL) {
        free(a);
        return ST_ENOMEM;
    }
    a->st = st;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    st_store_kv_scan(st, ACTION_PREFIX, load_one, a);
    if (pthread_create(&a->thread, NULL, results_main, a) != 0) {
        json_decref(a->results);
        free(a);
        return ST_ENOMEM;
    }
    *out = a;
    return ST_OK;
}

void st_actions_set_engine(st_actions *a, struct st_engine *en)
{
    a->en = en;
}

void st_actions_free(st_actions *a)
{
    if (a == NULL) {
        return;
    }
    pthread_mutex_lock(&a->mu);
    a->stopping = true;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    for (size_t i = 0; i < a->n; i++) {
        json_decref(a->p[i].params);
        free(a->p[i].finding_json);
    }
    json_decref(a->results);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    free(a);
}

/* ---- dispatch ---- */

struct host_find {
    const char *host;
    char id[37];
};

static int match_host(void *arg, const st_agent_info *ai)
{
    struct host_find *h = arg;
    const Strata__V1__Agent *ag = ai->rec->agent;
    if (ag != NULL && ag->host != NULL && strcmp(ag->host, h->host) == 0) {
        snprintf(h->id, sizeof(h->id), "%s", ai->id);
        return -1; /* found: stop */
    }
    return ST_OK;
}

/* The action that applies an optimization, and its parameters. */
static json_t *action_for(const json_t *f, const char **type)
{
    const json_t *opt = json_object_get(f, "optimization");
    const char *t = json_string_value(json_object_get(opt, "type"));
    const json_t *impl = json_object_get(opt, "implementation");
    const char *sql = json_string_value(json_object_get(impl, "sql"));
    if (t != NULL && strcmp(t, "ADD_INDEX") == 0 && sql != NULL) {
        *type = "postgres.create_index";
        return json_pack("{s:s,s:s?}", "sql", sql, "table",
                         json_string_value(json_object_get(impl, "table")));
    }
    return NULL;
}

static bool queued_for(st_actions *a, const char *finding, const char *type)
{
    for (size_t i = 0; i < a->n; i++) {
        if (strcmp(a->p[i].finding, finding) == 0 && strcmp(a->p[i].type, type) == 0) {
            return true;
        }
    }
    return false;
}

int st_actions_dispatch(void *arg, const json_t *f)
{
    st_actions *a = arg;
    const char *status = json_string_value(json_object_get(f, "status"));
    const char *fid = json_string_value(json_object_get(f, "id"));
    struct host_find hf = {json_string_value(json_object_get(json_object_get(f, "labels"), "host")),
                           ""};
    const char *type = NULL;
    json_t *params;
    json_t *rec;
    uint8_t rid[16];
    char id[33];
    bool dup;
    int rv;
    if (status == NULL || strcmp(status, "open") != 0 || fid == NULL || hf.host == NULL ||
        (params = action_for(f, &type)) == NULL) {
        return ST_ENOENT;
    }
    st_store_agents(a->st, match_host, &hf);
    if (hf.id[0] == '\0') {
        json_decref(params);
        return ST_ENOENT;
    }
    st_uuid_random(rid);
    st_hex_encode(rid, 16, id);
    rec = json_pack("{s:s,s:s,s:s,s:s,s:s,s:o,s:s,s:s,s:I}", "id", id, "agent_id", hf.id, "host",
                    hf.host, "type", type, "finding_id", fid, "params", params, "state", "pending",
                    "finding_json", "", "created_unix_ms", (json_int_t)st_time_wall_ms());
    if (rec == NULL) {
        return ST_ENOMEM;
    }
    {
        char *fj = json_dumps(f, JSON_COMPACT);
        json_object_set_new(rec, "finding_json", json_string(fj ? fj : "{}"));
        free(fj);
    }
    pthread_mutex_lock(&a->mu);
    dup = queued_for(a, fid, type);
    rv = dup ? ST_OK : enqueue(a, rec);
    pthread_mutex_unlock(&a->mu);
    if (rv == ST_OK && !dup) {
        rv = save(a, rec);
        ST_INFO("actions", "finding %s: %s queued for %s", fid, type, hf.host);
    }
    json_decref(rec);
    return rv;
}

/* ---- acks and results ---- */

static Strata__V1__Action *to_proto(const struct pending *p)
{
    Strata__V1__Action *m = calloc(1, sizeof(*m));
    const char *k;
    json_t *v;
    size_t n = 0;
    if (m == NULL) {
        return NULL;
    }
    strata__v1__action__init(m);
    m->id = strdup(p->id);
    m->type = strdup(p->type);
    m->finding_id = strdup(p->finding);
    m->finding_json = strdup(p->finding_json);
    m->params = calloc(json_object_size(p->params) + 1, sizeof(*m->params));
    json_object_foreach(p->params, k, v)
    {
        Strata__V1__Label *l = m->params != NULL ? malloc(sizeof(*l)) : NULL;
        if (l == NULL || json_string_value(v) == NULL) {
            free(l);
            continue;
        }
        strata__v1__label__init(l);
        l->key = strdup(k);
        l->value = strdup(json_string_value(v));
        m->params[n++] = l;
    }
    m->n_params = n;
    return m;
}

void st_actions_attach(void *arg, const uint8_t agent_id[16], Strata__V1__Ack *ack)
{
    st_actions *a = arg;
    int64_t now = st_time_mono_ms();
    Strata__V1__Action **v = NULL;
    size_t n = 0;
    pthread_mutex_lock(&a->mu);
    for (size_t i = 0; i < a->n && n < ST_ACTIONS_PER_ACK; i++) {
        struct pending *p = &a->p[i];
        if (memcmp(p->agent, agent_id, 16) != 0 ||
            (p->sent_at != 0 && now - p->sent_at < ST_ACTIONS_RESEND_MS)) {
            continue;
        }
        if (v == NULL && (v = calloc(ST_ACTIONS_PER_ACK, sizeof(*v))) == NULL) {
            break;
        }
        if ((v[n] = to_proto(p)) != NULL) {
            p->sent_at = now;
            n++;
        }
    }
    pthread_mutex_unlock(&a->mu);
    ack->actions = v;
    ack->n_actions = n;
}

void st_actions_ack_release(Strata__V1__Ack *ack)
{
    for (size_t i = 0; i < ack->n_actions; i++) {
        strata__v1__action__free_unpacked(ack->actions[i], NULL);
    }
    free(ack->actions);
    ack->actions = NULL;
    ack->n_actions = 0;
}

static const char *status_name(Strata__V1__ActionStatus s)
{
    switch (s) {
    case STRATA__V1__ACTION_STATUS__ACTION_OK:
        return "ok";
    case STRATA__V1__ACTION_STATUS__ACTION_REFUSED:
        return "refused";
    case STRATA__V1__ACTION_STATUS__ACTION_TIMEOUT:
        return "timeout";
    default:
        return "failed";
    }
}

/* Forgets the pending action id (mutex held). */
static void drop_pending(st_actions *a, const char *id)
{
    for (size_t i = 0; i < a->n; i++) {
        if (strcmp(a->p[i].id, id) == 0) {
            json_decref(a->p[i].params);
            free(a->p[i].finding_json);
            a->p[i] = a->p[--a->n];
            return;
        }
    }
}

void st_actions_results(void *arg, const st_frame *f)
{
    st_actions *a = arg;
    pthread_mutex_lock(&a->mu);
    for (size_t i = 0; i < f->n_action_results; i++) {
        const Strata__V1__ActionResult *r = f->action_results[i];
        json_t *res = json_pack("{s:s,s:s,s:s,s:s,s:i,s:I,s:s,s:s}", "action_id",
                                r->action_id ? r->action_id : "", "type", r->type ? r->type : "",
                                "finding_id", r->finding_id ? r->finding_id : "", "status",
                                status_name(r->status), "exit_status", r->exit_status,
                                "duration_ms", (json_int_t)r->duration_ms, "error",
                                r->error ? r->error : "", "output", r->output ? r->output : "");
        if (res != NULL) {
            drop_pending(a, r->action_id ? r->action_id : "");
            json_array_append_new(a->results, res);
        }
    }
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

struct list_ctx {
    json_t *arr;
    const char *finding;
};

static int list_one(void *arg, const char *key, const char *val, size_t len)
{
    struct list_ctx *c = arg;
    json_t *rec = json_loadb(val, len, 0, NULL);
    const char *fid = json_string_value(json_object_get(rec, "finding_id"));
    (void)key;
    if (rec != NULL && (c->finding == NULL || (fid != NULL && strcmp(fid, c->finding) == 0))) {
        json_object_del(rec, "finding_json");
        json_array_append_new(c->arr, rec);
    } else {
        json_decref(rec);
    }
    return 0;
}

static int newest_first(const void *x, const void *y)
{
    json_int_t a = json_integer_value(json_object_get(*(json_t *const *)x, "created_unix_ms"));
    json_int_t b = json_integer_value(json_object_get(*(json_t *const *)y, "created_unix_ms"));
    return a < b ? 1 : (a > b ? -1 : 0);
}

json_t *st_actions_list(st_actions *a, const char *finding_id)
{
    struct list_ctx c = {json_array(), finding_id};
    json_t *out = json_array();
    json_t **v;
    size_t n;
    if (c.arr == NULL || out == NULL) {
        json_decref(c.arr);
        json_decref(out);
        return NULL;
    }
    st_store_kv_scan(a->st, ACTION_PREFIX, list_one, &c);
    n = json_array_size(c.arr);
    if ((v = calloc(n + 1, sizeof(*v))) != NULL) {
        for (size_t i = 0; i < n; i++) {
            v[i] = json_array_get(c.arr, i);
        }
        qsort(v, n, sizeof(*v), newest_first);
        for (size_t i = 0; i < n; i++) {
            json_array_append(out, v[i]);
        }
        free(v);
    }
    json_decref(c.arr);
    return out;
}
