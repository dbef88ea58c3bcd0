/* The action runner: configuration, the queue the sender thread fills, the
 * thread that runs one action at a time, and the results waiting for the
 * next frame (see runner.h). */
#include "runner.h"

#include "actions.h"
#include "done.h"
#include "err.h"
#include "log.h"
#include "timeutil.h"
#include "util.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOT_ALLOWED "action %s is not allowed by this agent's configuration"

static const st_action_def *const types[] = {
    &st_action_postgres_create_index,
    &st_action_redis_config_set,
    &st_action_exec,
};
#define NTYPES ST_ARRAY_LEN(types)

struct st_runner {
    void *ctx[NTYPES];
    bool configured[NTYPES];
    bool any;
    char *data_dir;
    char *done_path;
    st_done *done;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    Strata__V1__Action *queue[ST_RUNNER_QUEUE_MAX]; /* FIFO from qhead */
    size_t qhead;
    size_t qlen;
    char running[ST_ACTION_MAX_ID + 1]; /* "" when idle */
    Strata__V1__ActionResult *results[ST_RUNNER_RESULTS_MAX];
    size_t nresults;
    pthread_t thread;
    bool started;
    atomic_int stop;
};

/* ---- configuration ---- */

static int parse_types(st_runner *r, const st_cfg_doc *doc, const st_cfg_node *cfg,
                       st_cfg_error *err)
{
    for (size_t i = 0; i < st_cfg_map_len(cfg); i++) {
        const char *key = st_cfg_map_key(cfg, i);
        const st_cfg_node *opts = st_cfg_map_value(cfg, i);
        size_t t = 0;
        int rv;
        while (t < NTYPES && strcmp(types[t]->type, key) != 0) {
            t++;
        }
        if (t == NTYPES) {
            return st_cfg_fail(err, doc, opts, key,
                               "no such action (postgres.create_index, redis.config_set, exec)");
        }
        if (st_cfg_node_type(opts) != ST_CFG_NODE_MAP && !st_cfg_is_null(opts)) {
            return st_cfg_fail(err, doc, opts, key, "a mapping of options");
        }
        rv = types[t]->init(doc, opts, &r->ctx[t], err);
        if (rv != ST_OK) {
            return rv;
        }
        r->configured[t] = true;
        r->any = true;
    }
    return ST_OK;
}

int st_runner_new(const st_cfg_doc *doc, const st_cfg_node *cfg, const char *data_dir,
                  st_runner **out, st_cfg_error *err)
{
    st_runner *r = calloc(1, sizeof(*r));
    size_t plen = strlen(data_dir != NULL ? data_dir : ".") + sizeof("/actions.done");
    int rv;
    if (r == NULL) {
        return ST_ENOMEM;
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    if ((r->data_dir = strdup(data_dir != NULL ? data_dir : ".")) == NULL ||
        (r->done_path = malloc(plen)) == NULL) {
        st_runner_free(r);
        return ST_ENOMEM;
    }
    snprintf(r->done_path, plen, "%s/actions.done", data_dir != NULL ? data_dir : ".");
    if (cfg != NULL && !st_cfg_is_null(cfg) && st_cfg_node_type(cfg) != ST_CFG_NODE_MAP) {
        rv = st_cfg_fail(err, doc, cfg, "actions", "a mapping of action types to their options");
        st_runner_free(r);
        return rv;
    }
    if (cfg != NULL && st_cfg_node_type(cfg) == ST_CFG_NODE_MAP &&
        (rv = parse_types(r, doc, cfg, err)) != ST_OK) {
        st_runner_free(r);
        return rv;
    }
    *out = r;
    return ST_OK;
}

/* ---- results (mutex held) ---- */

static bool result_waiting(const st_runner *r, const char *id)
{
    for (size_t i = 0; i < r->nresults; i++) {
        if (strcmp(r->results[i]->action_id, id) == 0) {
            return true;
        }
    }
    return false;
}

/* Takes res over; when the list is full the oldest result gives way. */
static void push_result(st_runner *r, Strata__V1__ActionResult *res)
{
    if (res == NULL) {
        ST_ERROR("actions", "out of memory: a result is lost");
        return;
    }
    if (r->nresults == ST_RUNNER_RESULTS_MAX) {
        ST_WARN("actions", "%d results wait for a frame: dropping the result of %s",
                ST_RUNNER_RESULTS_MAX, r->results[0]->action_id);
        st_action_result_free(r->results[0]);
        memmove(r->results, r->results + 1, (r->nresults - 1) * sizeof(r->results[0]));
        r->nresults--;
    }
    r->results[r->nresults++] = res;
}

static void push_simple(st_runner *r, const Strata__V1__Action *a, int status, const char *error)
{
    push_result(r, st_action_result_new(a->id, a->type, a->finding_id, status, 0, 0, error,
                                        strlen(error), NULL, 0));
}

static void on_interrupted(void *arg, const Strata__V1__ActionResult *res)
{
    st_runner *r = arg;
    pthread_mutex_lock(&r->mu);
    push_result(r, st_action_result_dup(res));
    pthread_mutex_unlock(&r->mu);
}

size_t st_runner_take(st_runner *r, Strata__V1__Frame *f)
{
    size_t n;
    if (r == NULL) {
        return 0;
    }
    pthread_mutex_lock(&r->mu);
    n = ST_MIN(r->nresults, (size_t)ST_RUNNER_PER_FRAME);
    if (n > 0 && (f->action_results = calloc(n, sizeof(*f->action_results))) != NULL) {
        memcpy(f->action_results, r->results, n * sizeof(r->results[0]));
        memmove(r->results, r->results + n, (r->nresults - n) * sizeof(r->results[0]));
        r->nresults -= n;
        f->n_action_results = n;
    }
    pthread_mutex_unlock(&r->mu);
    return f->n_action_results;
}

void st_runner_settle(st_runner *r, Strata__V1__Frame *f, bool kept)
{
    size_t n = f->n_action_results;
    if (r != NULL && !kept && n > 0) {
        pthread_mutex_lock(&r->mu);
        /* Back in front, in order, as far as there is room. */
        n = ST_MIN(n, ST_RUNNER_RESULTS_MAX - r->nresults);
        memmove(r->results + n, r->results, r->nresults * sizeof(r->results[0]));
        memcpy(r->results, f->action_results, n * sizeof(r->results[0]));
        r->nresults += n;
        pthread_mutex_unlock(&r->mu);
        n = f->n_action_results - n; /* those that did not fit */
        memmove(f->action_results, f->action_results + (f->n_action_results - n),
                n * sizeof(f->action_results[0]));
    }
    for (size_t i = 0; i < n; i++) {
        st_action_result_free(f->action_results[i]);
    }
    free(f->action_results);
    f->action_results = NULL;
    f->n_action_results = 0;
}

/* ---- the queue ---- */

static int type_index(const char *type)
{
    for (size_t t = 0; type != NULL && t < NTYPES; t++) {
        if (strcmp(types[t]->type, type) == 0) {
            return (int)t;
        }
    }
    return -1;
}

static bool queued(const st_runner *r, const char *id)
{
    for (size_t i = 0; i < r->qlen; i++) {
        if (strcmp(r->queue[(r->qhead + i) % ST_RUNNER_QUEUE_MAX]->id, id) == 0) {
            return true;
        }
    }
    return strcmp(r->running, id) == 0;
}

/* A copy through the wire format: one allocation pattern, bounded by the
 * size of what arrived. */
static Strata__V1__Action *copy_action(const Strata__V1__Action *a)
{
    size_t n = strata__v1__action__get_packed_size(a);
    uint8_t *buf = malloc(n > 0 ? n : 1);
    Strata__V1__Action *c = NULL;
    if (buf != NULL) {
        strata__v1__action__pack(a, buf);
        c = strata__v1__action__unpack(NULL, n, buf);
    }
    free(buf);
    return c;
}

/* What to do with an action of a configured type (mutex held). */
static void admit(st_runner *r, const Strata__V1__Action *a)
{
    Strata__V1__ActionResult *prev = NULL;
    Strata__V1__Action *c;
    if (queued(r, a->id)) {
        return; /* the collector sent it again while it waits or runs */
    }
    if (r->done != NULL && st_done_lookup(r->done, a->id, &prev)) {
        /* Already run: its recorded result goes out again, once at a time. */
        if (prev != NULL && !result_waiting(r, a->id)) {
            ST_INFO("actions", "action %s ran before: reporting its result again", a->id);
            push_result(r, prev);
        } else {
            st_action_result_free(prev);
        }
        return;
    }
    if (r->qlen == ST_RUNNER_QUEUE_MAX || (c = copy_action(a)) == NULL) {
        ST_WARN("actions", "action %s (%s) not queued: %s", a->id, a->type,
                r->qlen == ST_RUNNER_QUEUE_MAX ? "the queue is full" : "out of memory");
        if (!result_waiting(r, a->id)) {
            push_simple(r, a, STRATA__V1__ACTION_STATUS__ACTION_FAILED,
                        "the agent's action queue is full; not run");
        }
        return;
    }
    r->queue[(r->qhead + r->qlen++) % ST_RUNNER_QUEUE_MAX] = c;
    pthread_cond_signal(&r->cv);
}

void st_runner_enqueue(void *arg, const Strata__V1__Action *a)
{
    st_runner *r = arg;
    size_t idlen = a->id != NULL ? strlen(a->id) : 0;
    int t = type_index(a->type);
    char error[160];
    /* Without a usable id no result could name the action. */
    if (idlen == 0 || idlen > ST_ACTION_MAX_ID || !st_utf8_valid(a->id, idlen)) {
        ST_WARN("actions", "dropped an action whose id is empty, over %d bytes or not UTF-8",
                ST_ACTION_MAX_ID);
        return;
    }
    pthread_mutex_lock(&r->mu);
    if (t < 0 || !r->configured[t]) {
        if (!result_waiting(r, a->id)) {
            snprintf(error, sizeof(error), NOT_ALLOWED, a->type != NULL ? a->type : "");
            ST_WARN("actions", "refused action %s: %s", a->id, error);
            push_simple(r, a, STRATA__V1__ACTION_STATUS__ACTION_REFUSED, error);
        }
    } else {
        admit(r, a);
    }
    pthread_mutex_unlock(&r->mu);
}

/* ---- the runner thread ---- */

static void log_result(const Strata__V1__ActionResult *res)
{
    st_log(res->status == STRATA__V1__ACTION_STATUS__ACTION_OK ? ST_LOG_INFO : ST_LOG_WARN,
           "actions", "action %s (%s, finding %s): %s in %u ms%s%.300s", res->action_id, res->type,
           res->finding_id, st_action_status_name((int)res->status), res->duration_ms,
           res->error[0] != '\0' ? ": " : "", res->error);
}

/* Runs one action: recorded as started (durably) first, so that a crash
 * in the middle can never lead to a second run. */
static Strata__V1__ActionResult *run_one(st_runner *r, const Strata__V1__Action *a)
{
    int t = type_index(a->type);
    int64_t t0 = st_time_mono_ms();
    st_action_out o;
    Strata__V1__ActionResult *res;
    int rv;
    memset(&o, 0, sizeof(o));
    st_buf_init(&o.output, ST_ACTION_MAX_OUTPUT);
    if ((rv = st_done_started(r->done, a)) != ST_OK) {
        st_action_fail(&o, STRATA__V1__ACTION_STATUS__ACTION_FAILED,
                       "cannot record the action in %s (%s); not run", r->done_path,
                       st_strerror(rv));
    } else {
        ST_INFO("actions", "action %s (%s, finding %s) starts", a->id, a->type, a->finding_id);
        o.status = STRATA__V1__ACTION_STATUS__ACTION_FAILED; /* unless the type says otherwise */
        types[t]->run(r->ctx[t], a, &r->stop, &o);
    }
    res = st_action_result_new(a->id, a->type, a->finding_id, o.status, o.exit_status,
                               (uint32_t)ST_MIN(st_time_mono_ms() - t0, (int64_t)UINT32_MAX),
                               o.error, strlen(o.error), o.output.data, o.output.len);
    st_buf_free(&o.output);
    if (res != NULL && rv == ST_OK && st_done_finished(r->done, res) != ST_OK) {
        ST_ERROR("actions", "the result of %s is not recorded in %s: a resend reports it failed",
                 a->id, r->done_path);
    }
    if (res != NULL) {
        log_result(res);
    }
    return res;
}

static void *runner_main(void *arg)
{
    st_runner *r = arg;
    sigset_t pipe;
    /* A script that exits without reading its stdin must not kill the
     * agent: writes to its pipe fail with EPIPE on this thread instead. */
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, NULL);
    pthread_mutex_lock(&r->mu);
    while (!atomic_load(&r->stop)) {
        Strata__V1__Action *a;
        Strata__V1__ActionResult *res;
        if (r->qlen == 0) {
            pthread_cond_wait(&r->cv, &r->mu);
            continue;
        }
        a = r->queue[r->qhead];
        r->qhead = (r->qhead + 1) % ST_RUNNER_QUEUE_MAX;
        r->qlen--;
        snprintf(r->running, sizeof(r->running), "%s", a->id);
        pthread_mutex_unlock(&r->mu);
        res = run_one(r, a);
        strata__v1__action__free_unpacked(a, NULL);
        pthread_mutex_lock(&r->mu);
        push_result(r, res);
        r->running[0] = '\0';
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

int st_runner_start(st_runner *r)
{
    int rv;
    if (r == NULL || !r->any || r->started) {
        return ST_OK;
    }
    if ((rv = st_mkdir_p(r->data_dir)) != ST_OK ||
        (rv = st_done_open(r->done_path, ST_RUNNER_DONE_MAX, on_interrupted, r, &r->done)) !=
            ST_OK) {
        ST_ERROR("actions", "cannot open %s: %s", r->done_path, st_strerror(rv));
        return rv;
    }
    if (pthread_create(&r->thread, NULL, runner_main, r) != 0) {
        return ST_ENOMEM;
    }
    r->started = true;
    return ST_OK;
}

void st_runner_free(st_runner *r)
{
    if (r == NULL) {
        return;
    }
    if (r->started) {
        pthread_mutex_lock(&r->mu);
        atomic_store(&r->stop, 1);
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->thread, NULL);
    }
    for (size_t i = 0; i < r->qlen; i++) {
        strata__v1__action__free_unpacked(r->queue[(r->qhead + i) % ST_RUNNER_QUEUE_MAX], NULL);
    }
    for (size_t i = 0; i < r->nresults; i++) {
        st_action_result_free(r->results[i]);
    }
    for (size_t t = 0; t < NTYPES; t++) {
        if (r->configured[t]) {
            types[t]->fini(r->ctx[t]);
        }
    }
    st_done_close(r->done);
    free(r->done_path);
    free(r->data_dir);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}
