/* Group-commit writer thread. See writer.h. */
#include "writer.h"

#include "err.h"
#include "log.h"
#include "timeutil.h"
#include "util.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SEEN_BUCKETS 4096
#define SEEN_WINDOW 64
#define RETRY_PAUSE_MS 200
#define MAINT_SLICE_MS 20 /* longest background transaction */
#define MAINT_IDLE_MS 250 /* background work at least this often */

struct seen {
    struct seen *next;
    uint8_t id[16];
    uint64_t seq;
    uint64_t mask;
};

struct st_writer {
    st_store *st;
    st_metrics *m;
    size_t max_batch;
    size_t max_queue;
    void (*on_results)(void *arg, const st_frame *f);
    void *results_arg;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    st_write_req *head;
    st_write_req *tail;
    size_t queued;
    bool stopping;
    bool started;
    pthread_mutex_t seen_mu;
    struct seen *seen[SEEN_BUCKETS];
};

static size_t seen_bucket(const uint8_t id[16])
{
    return st_fnv1a(ST_FNV_SEED, id, 16) & (SEEN_BUCKETS - 1);
}

bool st_writer_seen(st_writer *w, const uint8_t agent_id[16], uint64_t seq)
{
    bool dup = false;
    pthread_mutex_lock(&w->seen_mu);
    for (struct seen *s = w->seen[seen_bucket(agent_id)]; s != NULL; s = s->next) {
        if (memcmp(s->id, agent_id, 16) == 0) {
            if (seq == s->seq || (seq < s->seq && s->seq - seq > SEEN_WINDOW)) {
                dup = true;
            } else if (seq < s->seq) {
                dup = (s->mask >> (s->seq - seq - 1)) & 1;
            }
            break;
        }
    }
    pthread_mutex_unlock(&w->seen_mu);
    return dup;
}

/* Mirrors the store's dedup window for a committed frame. */
static void seen_note(st_writer *w, const uint8_t id[16], uint64_t seq)
{
    size_t b = seen_bucket(id);
    struct seen *s;
    pthread_mutex_lock(&w->seen_mu);
    for (s = w->seen[b]; s != NULL && memcmp(s->id, id, 16) != 0; s = s->next) {
    }
    if (s == NULL && (s = calloc(1, sizeof(*s))) != NULL) {
        memcpy(s->id, id, 16);
        s->next = w->seen[b];
        w->seen[b] = s;
    }
    if (s != NULL) {
        if (seq > s->seq) {
            uint64_t shift = seq - s->seq;
            uint64_t mask = shift >= SEEN_WINDOW ? 0 : s->mask << shift;
            if (s->seq != 0 && shift <= SEEN_WINDOW) {
                mask |= 1ULL << (shift - 1);
            }
            s->mask = mask;
            s->seq = seq;
        } else if (seq < s->seq && s->seq - seq <= SEEN_WINDOW) {
            s->mask |= 1ULL << (s->seq - seq - 1);
        }
    }
    pthread_mutex_unlock(&w->seen_mu);
}

int st_writer_submit(st_writer *w, st_write_req *r)
{
    int rv = ST_OK;
    pthread_mutex_lock(&w->mu);
    if (w->stopping) {
        rv = ST_ECLOSED;
    } else if (w->queued >= w->max_queue) {
        rv = ST_EAGAIN;
    } else {
        r->next = NULL;
        if (w->tail != NULL) {
            w->tail->next = r;
        } else {
            w->head = r;
        }
        w->tail = r;
        w->queued++;
        pthread_cond_signal(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    return rv;
}

size_t st_writer_backlog(st_writer *w)
{
    size_t n;
    pthread_mutex_lock(&w->mu);
    n = w->queued;
    pthread_mutex_unlock(&w->mu);
    return n;
}

/* Takes up to max_batch requests off the queue, waiting at most wait_ms;
 * NULL when there is nothing (then *stop says whether to end). */
static st_write_req *take_batch(st_writer *w, int64_t wait_ms, bool *stop)
{
    st_write_req *first;
    st_write_req *last;
    size_t n = 1;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += wait_ms / 1000;
    ts.tv_nsec += (wait_ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&w->mu);
    while (w->head == NULL && !w->stopping && wait_ms > 0) {
        if (pthread_cond_timedwait(&w->cv, &w->mu, &ts) != 0) {
            break;
        }
    }
    *stop = w->stopping && w->head == NULL;
    first = w->head;
    if (first != NULL) {
        for (last = first; last->next != NULL && n < w->max_batch; last = last->next) {
            n++;
        }
        w->head = last->next;
        if (w->head == NULL) {
            w->tail = NULL;
        }
        last->next = NULL;
        w->queued -= n;
    }
    pthread_mutex_unlock(&w->mu);
    return first;
}

/* One attempt at committing the batch. Returns ST_OK, ST_EMAPFULL (grow and
 * retry), ST_ENOSPC / ST_ESTORE (answer retry), or ST_EAGAIN when one frame
 * failed on its own (it is marked and the batch is tried again). */
static int try_commit(st_writer *w, st_write_req *batch)
{
    st_store_txn *t;
    int64_t now = st_time_wall_ms();
    int rv = st_store_begin(w->st, &t);
    if (rv != ST_OK) {
        return rv;
    }
    for (st_write_req *r = batch; r != NULL; r = r->next) {
        bool dup = false;
        if (r->result == ST_WRITE_FAILED) {
            continue;
        }
        rv = st_store_apply(t, r->frame, now, &dup);
        if (rv == ST_EMAPFULL || rv == ST_ENOSPC) {
            st_store_abort(t);
            return rv;
        }
        if (rv != ST_OK) {
            ST_ERROR("writer", "frame seq %llu cannot be stored: %s",
                     (unsigned long long)r->frame->seq, st_strerror(rv));
            r->result = ST_WRITE_FAILED;
            st_store_abort(t);
            return ST_EAGAIN;
        }
        r->result = dup ? ST_WRITE_DUPLICATE : ST_WRITE_APPLIED;
    }
    return st_store_commit(t);
}

static void finish_batch(st_writer *w, st_write_req *batch, int rv)
{
    st_write_req *r = batch;
    while (r != NULL) {
        st_write_req *next = r->next;
        if (rv != ST_OK && r->result != ST_WRITE_FAILED) {
            r->result = ST_WRITE_RETRY;
        }
        if (r->result == ST_WRITE_APPLIED) {
            uint64_t samples = 0;
            for (size_t i = 0; i < r->frame->n_series; i++) {
                samples += st_series_npoints(r->frame->series[i]);
            }
            seen_note(w, r->frame->agent_id.data, r->frame->seq);
            if (r->frame->n_action_results > 0 && w->on_results != NULL) {
                w->on_results(w->results_arg, r->frame);
            }
            st_metric_add(&w->m->frames_applied, 1);
            st_metric_add(&w->m->samples_applied, samples);
        } else if (r->result == ST_WRITE_DUPLICATE) {
            st_metric_add(&w->m->frames_duplicate, 1);
        } else if (r->result == ST_WRITE_RETRY) {
            st_metric_add(&w->m->frames_retry_later, 1);
        }
        r->done(r);
        r = next;
    }
}

static int commit_batch(st_writer *w, st_write_req *batch)
{
    for (;;) {
        int64_t t0 = st_time_mono_ns();
        int rv;
        for (st_write_req *r = batch; r != NULL; r = r->next) {
            if (r->result != ST_WRITE_FAILED) {
                r->result = ST_WRITE_APPLIED;
            }
        }
        rv = try_commit(w, batch);
        if (rv == ST_OK) {
            st_metrics_commit(w->m, st_time_mono_ns() - t0);
            return ST_OK;
        }
        if (rv == ST_EAGAIN) {
            continue;
        }
        if (rv == ST_EMAPFULL) {
            st_metric_add(&w->m->map_grows, 1);
            if ((rv = st_store_grow(w->st)) == ST_OK) {
                continue;
            }
        }
        st_metric_add(&w->m->commit_failures, 1);
        ST_WARN("writer", "batch not committed (%s); agents will retry", st_strerror(rv));
        return rv;
    }
}

/* One slice of rollup and retention work, between batches. */
static bool maintain(st_writer *w)
{
    bool more = false;
    int rv = st_store_maintain(w->st, st_time_wall_ms(), MAINT_SLICE_MS, &more);
    if (rv == ST_EMAPFULL && st_store_grow(w->st) == ST_OK) {
        st_metric_add(&w->m->map_grows, 1);
        return true;
    }
    if (rv != ST_OK) {
        ST_WARN("writer", "rollup and retention work failed: %s", st_strerror(rv));
        return false;
    }
    return more;
}

static void *writer_main(void *arg)
{
    st_writer *w = arg;
    bool more = true;
    int64_t next_maint = 0;
    for (;;) {
        bool stop = false;
        st_write_req *batch = take_batch(w, more ? 0 : MAINT_IDLE_MS, &stop);
        if (batch != NULL) {
            int rv = commit_batch(w, batch);
            finish_batch(w, batch, rv);
            if (rv != ST_OK) {
                /* A full disk does not empty itself in a microsecond. */
                st_time_sleep_ms(RETRY_PAUSE_MS);
            }
        } else if (stop) {
            break;
        }
        if (more || st_time_mono_ms() >= next_maint) {
            more = maintain(w);
            next_maint = st_time_mono_ms() + MAINT_IDLE_MS;
        }
    }
    return NULL;
}

int st_writer_start(st_store *st, const struct st_writer_opts *opts, st_metrics *m, st_writer **out)
{
    st_writer *w = calloc(1, sizeof(*w));
    pthread_condattr_t ca;
    if (w == NULL) {
        return ST_ENOMEM;
    }
    w->st = st;
    w->m = m;
    w->max_batch = (opts != NULL && opts->max_batch) ? opts->max_batch : 2048;
    w->max_queue = (opts != NULL && opts->max_queue) ? opts->max_queue : 8192;
    w->on_results = opts != NULL ? opts->on_results : NULL;
    w->results_arg = opts != NULL ? opts->results_arg : NULL;
    pthread_mutex_init(&w->mu, NULL);
    pthread_mutex_init(&w->seen_mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        st_writer_stop(w);
        return ST_ENOMEM;
    }
    w->started = true;
    *out = w;
    return ST_OK;
}

void st_writer_stop(st_writer *w)
{
    if (w == NULL) {
        return;
    }
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    if (w->started) {
        pthread_join(w->thread, NULL);
    }
    for (size_t b = 0; b < SEEN_BUCKETS; b++) {
        struct seen *s = w->seen[b];
        while (s != NULL) {
            struct seen *n = s->next;
            free(s);
            s = n;
        }
    }
    pthread_mutex_destroy(&w->mu);
    pthread_mutex_destroy(&w->seen_mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}
