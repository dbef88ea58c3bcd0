/* The engine's feed (feed.h). The tap runs on the store's writer thread
 * right after each commit: it copies the blocks of the metrics the engine
 * keeps windows of (values, or sketches made from the frame's) into one
 * allocation per commit, and the engine takes them all at the start of a
 * run. The lock is held for the copy and for taking the list, never for
 * folding. */
#include "feed.h"

#include "err.h"
#include "frame.h"
#include "util.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* What a kept sketch is counted as against ST_FEED_MAX_BYTES: the
 * bytes of a sketch of a few dozen buckets. */
#define SKETCH_BYTES 512
#define MAX_METRICS 1024

struct staged {
    int metric;
    st_fed_block b;
};

struct batch {
    struct batch *next;
    uint64_t txn;
    size_t n;
    struct staged *blk;
};

struct st_feed {
    st_store *st;
    pthread_mutex_t mu;
    struct {
        char *name;
        uint64_t hash;
        int refs; /* subscriptions: none, not kept */
    } metrics[MAX_METRICS];
    int nmetrics;
    /* by series id: 1 + its metric's index, -1 none, 0 not looked up yet
     * (a series' name is hashed once, not on every commit) */
    int32_t *by_id;
    size_t nby_id;
    struct batch *head;
    struct batch *tail;
    size_t bytes;
    size_t max_bytes;
    bool lost;
    struct st_feed_stats stats;
};

static void batch_free(struct batch *bt)
{
    for (size_t i = 0; i < bt->n; i++) {
        const st_fed_block *b = &bt->blk[i].b;
        for (size_t k = 0; b->sk != NULL && k < b->n; k++) {
            st_sketch_free(b->sk[k]);
        }
    }
    free(bt);
}

/* Drops what waits: the windows must be read again. Locked. */
static void lose(st_feed *fd)
{
    while (fd->head != NULL) {
        struct batch *next = fd->head->next;
        batch_free(fd->head);
        fd->head = next;
    }
    fd->tail = NULL;
    fd->bytes = 0;
    fd->lost = true;
    fd->stats.lost++;
}

static int metric_of(const st_feed *fd, const char *name)
{
    uint64_t h = st_fnv1a(ST_FNV_SEED, name, strlen(name));
    for (int i = 0; i < fd->nmetrics; i++) {
        if (fd->metrics[i].hash == h && strcmp(fd->metrics[i].name, name) == 0) {
            return i;
        }
    }
    return -1;
}

/* The metric of a block, when kept (subscribed). */
static int kept_metric(const st_feed *fd, const char *name)
{
    int m = metric_of(fd, name);
    return m >= 0 && fd->metrics[m].refs > 0 ? m : -1;
}

/* The kept metric of block b (-1: none), by its series id when known. */
static int metric_of_block(st_feed *fd, const st_tap_block *b)
{
    int m;
    if (b->id >= fd->nby_id) {
        size_t n = fd->nby_id ? fd->nby_id : 4096;
        int32_t *nv;
        while (n <= b->id) {
            n *= 2;
        }
        if ((nv = realloc(fd->by_id, n * sizeof(*nv))) == NULL) {
            return kept_metric(fd, b->s->name); /* looked up each time */
        }
        memset(nv + fd->nby_id, 0, (n - fd->nby_id) * sizeof(*nv));
        fd->by_id = nv;
        fd->nby_id = n;
    }
    if (fd->by_id[b->id] != 0) {
        return fd->by_id[b->id] > 0 ? fd->by_id[b->id] - 1 : -1;
    }
    m = kept_metric(fd, b->s->name);
    fd->by_id[b->id] = m >= 0 ? m + 1 : -1;
    return m;
}

static bool is_dist(const Strata__V1__Series *s)
{
    return s->kind == STRATA__V1__KIND__DISTRIBUTION;
}

/* Copies block s (kept as metric m) into the batch's arena at *p. */
static void stage(struct staged *out, int m, uint32_t id, const Strata__V1__Series *s, char **p)
{
    size_t n = st_series_npoints(s);
    st_fed_block *b = &out->b;
    out->metric = m;
    memset(b, 0, sizeof(*b));
    b->id = id;
    b->kind = (int)s->kind;
    b->start_ms = s->start_unix_ms;
    b->interval_ms = s->interval_ms;
    b->n = n;
    if (is_dist(s)) {
        st_sketch **sk = (st_sketch **)(void *)*p;
        *p += n * sizeof(*sk);
        for (size_t i = 0; i < n; i++) {
            sk[i] = NULL;
            /* a sketch that does not convert (ingest validated it) is
             * left out; a scan would fail the question on it */
            if (i < s->n_sketches && st_sketch_from_proto(s->sketches[i], &sk[i]) != ST_OK) {
                sk[i] = NULL;
            }
        }
        b->sk = sk;
        return;
    }
    double *v = (double *)(void *)*p;
    double *lo = v + n;
    double *hi = lo + n;
    *p += 3 * n * sizeof(double);
    st_series_values(s, v);
    for (size_t i = 0; i < n; i++) {
        lo[i] = i < s->n_mins ? s->mins[i] : v[i];
        hi[i] = i < s->n_maxs ? s->maxs[i] : v[i];
    }
    b->v = v;
    b->lo = lo;
    b->hi = hi;
}

static void on_tap(void *arg, uint64_t txn, const st_tap_block *b, size_t n)
{
    st_feed *fd = arg;
    size_t nb = 0;
    size_t bytes = sizeof(struct batch);
    size_t est;
    struct batch *bt;
    char *p;
    pthread_mutex_lock(&fd->mu);
    /* once lost, nothing is kept until the engine has taken the loss: its
     * windows read the store again then */
    if (fd->nmetrics == 0 || fd->lost) {
        goto out;
    }
    if (txn == 0) {
        lose(fd);
        goto out;
    }
    est = 0;
    for (size_t i = 0; i < n; i++) {
        size_t np = st_series_npoints(b[i].s);
        if (metric_of_block(fd, &b[i]) < 0) {
            continue;
        }
        nb++;
        bytes += sizeof(struct staged) +
                 (is_dist(b[i].s) ? np * sizeof(st_sketch *) : 3 * np * sizeof(double));
        est += is_dist(b[i].s) ? np * SKETCH_BYTES : 0;
    }
    if (nb == 0) {
        goto out;
    }
    est += bytes;
    if (fd->bytes + est > fd->max_bytes || (bt = malloc(bytes)) == NULL) {
        lose(fd);
        goto out;
    }
    bt->next = NULL;
    bt->txn = txn;
    bt->n = 0;
    bt->blk = (struct staged *)(void *)(bt + 1);
    p = (char *)(bt->blk + nb);
    for (size_t i = 0; i < n; i++) {
        int m = metric_of_block(fd, &b[i]);
        if (m >= 0) {
            stage(&bt->blk[bt->n++], m, b[i].id, b[i].s, &p);
        }
    }
    if (fd->tail != NULL) {
        fd->tail->next = bt;
    } else {
        fd->head = bt;
    }
    fd->tail = bt;
    fd->bytes += est;
    fd->stats.blocks += nb;
    fd->stats.bytes_peak = ST_MAX(fd->stats.bytes_peak, fd->bytes);
out:
    pthread_mutex_unlock(&fd->mu);
}

int st_feed_new(st_store *st, st_feed **out)
{
    st_feed *fd = calloc(1, sizeof(*fd));
    int rv;
    if (fd == NULL) {
        return ST_ENOMEM;
    }
    fd->st = st;
    fd->max_bytes = ST_FEED_MAX_BYTES;
    pthread_mutex_init(&fd->mu, NULL);
    if ((rv = st_store_tap_set(st, on_tap, fd)) != ST_OK) {
        pthread_mutex_destroy(&fd->mu);
        free(fd);
        return rv;
    }
    *out = fd;
    return ST_OK;
}

void st_feed_set_max_bytes(st_feed *fd, size_t n)
{
    pthread_mutex_lock(&fd->mu);
    fd->max_bytes = n;
    pthread_mutex_unlock(&fd->mu);
}

void st_feed_free(st_feed *fd)
{
    if (fd == NULL) {
        return;
    }
    st_store_tap_clear(fd->st, fd);
    lose(fd);
    for (int i = 0; i < fd->nmetrics; i++) {
        free(fd->metrics[i].name);
    }
    free(fd->by_id);
    pthread_mutex_destroy(&fd->mu);
    free(fd);
}

int st_feed_subscribe(st_feed *fd, const char *metric, int *idx)
{
    int rv = ST_OK;
    pthread_mutex_lock(&fd->mu);
    if ((*idx = metric_of(fd, metric)) < 0) {
        if (fd->nmetrics == MAX_METRICS) {
            rv = ST_ETOOBIG;
        } else if ((fd->metrics[fd->nmetrics].name = strdup(metric)) == NULL) {
            rv = ST_ENOMEM;
        } else {
            fd->metrics[fd->nmetrics].hash = st_fnv1a(ST_FNV_SEED, metric, strlen(metric));
            fd->metrics[fd->nmetrics].refs = 0;
            *idx = fd->nmetrics++;
        }
    }
    if (rv == ST_OK && fd->metrics[*idx].refs++ == 0) {
        /* series looked up as not kept may be of it */
        for (size_t i = 0; i < fd->nby_id; i++) {
            fd->by_id[i] = fd->by_id[i] < 0 ? 0 : fd->by_id[i];
        }
    }
    pthread_mutex_unlock(&fd->mu);
    return rv;
}

void st_feed_unsubscribe(st_feed *fd, int idx)
{
    pthread_mutex_lock(&fd->mu);
    if (idx >= 0 && idx < fd->nmetrics && fd->metrics[idx].refs > 0 &&
        --fd->metrics[idx].refs == 0) {
        for (size_t i = 0; i < fd->nby_id; i++) {
            fd->by_id[i] = fd->by_id[i] == idx + 1 ? -1 : fd->by_id[i];
        }
    }
    pthread_mutex_unlock(&fd->mu);
}

int st_feed_drain(st_feed *fd, bool *lost, st_feed_block_fn fn, st_feed_commit_fn done, void *arg)
{
    struct batch *bt;
    int rv = ST_OK;
    pthread_mutex_lock(&fd->mu);
    bt = fd->head;
    fd->head = fd->tail = NULL;
    fd->bytes = 0;
    *lost = fd->lost;
    fd->lost = false;
    pthread_mutex_unlock(&fd->mu);
    while (bt != NULL) {
        struct batch *next = bt->next;
        for (size_t i = 0; rv == ST_OK && i < bt->n; i++) {
            rv = fn(arg, bt->blk[i].metric, bt->txn, &bt->blk[i].b);
        }
        if (rv == ST_OK) {
            done(arg, bt->txn);
        }
        batch_free(bt);
        bt = next;
    }
    return rv;
}

void st_feed_stats(st_feed *fd, struct st_feed_stats *out)
{
    pthread_mutex_lock(&fd->mu);
    *out = fd->stats;
    pthread_mutex_unlock(&fd->mu);
}
