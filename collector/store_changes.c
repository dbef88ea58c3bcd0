/* What the writer's commits changed, for readers that keep folded answers
 * across queries (the engine's sliding windows and kept answers): a
 * generation counted per commit that wrote points and, per metric, the
 * oldest point time written since a generation and whether a series was
 * added since. Kept in memory only: after a restart every question about
 * earlier generations answers "everything". */
#include "store_internal.h"

#include "err.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Entries per metric; past this the two oldest merge, which only makes
 * answers about old generations more conservative. */
#define STACK_MAX 16
#define SET_INIT 256

/* Oldest point time per metric of one transaction (open addressing). */
struct st_change_set {
    struct set_ent {
        char *name;
        int64_t min_t; /* INT64_MAX: a series added, no point yet */
        bool added;
    } * ents;
    size_t cap;
    size_t n;
    bool overflow; /* a name could not be kept: count everything as changed */
};

/* A metric's commits as (generation, oldest time) with both increasing:
 * an entry whose time is not below a later one's says nothing the later
 * one does not, so the oldest time written after generation g is the
 * time of the first entry past g. */
struct metric_log {
    char *name;
    size_t n;
    uint64_t gen[STACK_MAX];
    int64_t min_t[STACK_MAX];
    uint64_t added_gen; /* the last commit that added a series of it; 0: none */
};

struct st_changes {
    pthread_mutex_t mu;
    uint64_t gen;   /* the last commit's */
    uint64_t floor; /* questions about generations below this answer "everything" */
    struct metric_log *logs;
    size_t cap;
    size_t n;
};

int st_changes_new(struct st_changes **out)
{
    struct st_changes *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return ST_ENOMEM;
    }
    pthread_mutex_init(&c->mu, NULL);
    /* The first generation is the store as opened. It starts from the
     * wall clock in microseconds (commits take longer than that) so that
     * no generation of an earlier opening, whose changes are not known
     * here, is taken for one of this one: questions about it get
     * "everything". 0 is never one. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    c->gen = (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000 + 1;
    c->floor = c->gen;
    *out = c;
    return ST_OK;
}

void st_changes_free(struct st_changes *c)
{
    if (c == NULL) {
        return;
    }
    for (size_t i = 0; i < c->cap; i++) {
        free(c->logs[i].name);
    }
    free(c->logs);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* The set of a transaction that could not have one: publishing it counts
 * everything as changed (never freed, never written). */
static struct st_change_set set_lost = {.overflow = true};

void st_change_set_free(struct st_change_set *s)
{
    if (s == NULL || s == &set_lost) {
        return;
    }
    for (size_t i = 0; i < s->cap; i++) {
        free(s->ents[i].name);
    }
    free(s->ents);
    free(s);
}

static uint64_t name_hash(const char *name)
{
    return st_fnv1a(ST_FNV_SEED, name, strlen(name));
}

static int set_grow(struct st_change_set *s)
{
    size_t cap = s->cap ? 2 * s->cap : SET_INIT;
    struct set_ent *e = calloc(cap, sizeof(*e));
    if (e == NULL) {
        return ST_ENOMEM;
    }
    for (size_t i = 0; i < s->cap; i++) {
        size_t k;
        if (s->ents[i].name == NULL) {
            continue;
        }
        for (k = name_hash(s->ents[i].name) & (cap - 1); e[k].name != NULL; k = (k + 1) & (cap - 1))
            ;
        e[k] = s->ents[i];
    }
    free(s->ents);
    s->ents = e;
    s->cap = cap;
    return ST_OK;
}

/* The set's entry of metric (made on first use), or NULL when the set
 * cannot keep it (then marked: everything changed). */
static struct set_ent *set_entry(struct st_change_set **sp, const char *metric)
{
    struct st_change_set *s = *sp;
    size_t k;
    if (s == NULL && (s = *sp = calloc(1, sizeof(*s))) == NULL) {
        *sp = &set_lost; /* the commit then counts everything as changed (st_changes_publish) */
        return NULL;
    }
    if (s->overflow) {
        return NULL;
    }
    if (2 * (s->n + 1) > s->cap && set_grow(s) != ST_OK) {
        s->overflow = true;
        return NULL;
    }
    for (k = name_hash(metric) & (s->cap - 1); s->ents[k].name != NULL;
         k = (k + 1) & (s->cap - 1)) {
        if (strcmp(s->ents[k].name, metric) == 0) {
            return &s->ents[k];
        }
    }
    if ((s->ents[k].name = strdup(metric)) == NULL) {
        s->overflow = true;
        return NULL;
    }
    s->ents[k].min_t = INT64_MAX;
    s->ents[k].added = false;
    s->n++;
    return &s->ents[k];
}

void st_change_set_note(struct st_change_set **sp, const char *metric, int64_t t)
{
    struct set_ent *e = set_entry(sp, metric);
    if (e != NULL) {
        e->min_t = ST_MIN(e->min_t, t);
    }
}

void st_change_set_note_series(struct st_change_set **sp, const char *metric)
{
    struct set_ent *e = set_entry(sp, metric);
    if (e != NULL) {
        e->added = true;
    }
}

static struct metric_log *log_slot(struct metric_log *logs, size_t cap, const char *name)
{
    size_t k;
    for (k = name_hash(name) & (cap - 1); logs[k].name != NULL; k = (k + 1) & (cap - 1)) {
        if (strcmp(logs[k].name, name) == 0) {
            break;
        }
    }
    return &logs[k];
}

static int logs_grow(struct st_changes *c)
{
    size_t cap = c->cap ? 2 * c->cap : SET_INIT;
    struct metric_log *l = calloc(cap, sizeof(*l));
    if (l == NULL) {
        return ST_ENOMEM;
    }
    for (size_t i = 0; i < c->cap; i++) {
        if (c->logs[i].name != NULL) {
            *log_slot(l, cap, c->logs[i].name) = c->logs[i];
        }
    }
    free(c->logs);
    c->logs = l;
    c->cap = cap;
    return ST_OK;
}

static void log_push(struct metric_log *m, uint64_t gen, int64_t t)
{
    while (m->n > 0 && m->min_t[m->n - 1] >= t) {
        m->n--; /* dominated: the new entry is newer and at least as old in time */
    }
    if (m->n == STACK_MAX) {
        /* The two oldest become one: the newer generation with the older
         * time, which overstates what changed after the older one. */
        m->gen[0] = m->gen[1];
        memmove(&m->gen[1], &m->gen[2], (STACK_MAX - 2) * sizeof(m->gen[0]));
        memmove(&m->min_t[1], &m->min_t[2], (STACK_MAX - 2) * sizeof(m->min_t[0]));
        m->n--;
    }
    m->gen[m->n] = gen;
    m->min_t[m->n++] = t;
}

static bool publish_one(struct st_changes *c, const char *name, uint64_t gen, int64_t t, bool added)
{
    struct metric_log *m;
    if (2 * (c->n + 1) > c->cap && logs_grow(c) != ST_OK) {
        return false;
    }
    m = log_slot(c->logs, c->cap, name);
    if (m->name == NULL) {
        if ((m->name = strdup(name)) == NULL) {
            return false;
        }
        c->n++;
    }
    if (t != INT64_MAX) {
        log_push(m, gen, t);
    }
    if (added) {
        m->added_gen = gen;
    }
    return true;
}

void st_changes_publish(struct st_changes *c, struct st_change_set *s)
{
    bool ok;
    if (c == NULL || s == NULL) {
        return; /* nothing written: no new generation */
    }
    pthread_mutex_lock(&c->mu);
    c->gen++;
    ok = !s->overflow;
    for (size_t i = 0; ok && i < s->cap; i++) {
        if (s->ents[i].name != NULL) {
            ok = publish_one(c, s->ents[i].name, c->gen, s->ents[i].min_t, s->ents[i].added);
        }
    }
    if (!ok) {
        c->floor = c->gen + 1; /* out of memory: every earlier question gets "everything" */
    }
    pthread_mutex_unlock(&c->mu);
}

uint64_t st_changes_generation(struct st_changes *c)
{
    uint64_t g;
    pthread_mutex_lock(&c->mu);
    g = c->gen;
    pthread_mutex_unlock(&c->mu);
    return g;
}

int64_t st_changes_since(struct st_changes *c, const char *metric, uint64_t gen)
{
    int64_t t = INT64_MAX;
    pthread_mutex_lock(&c->mu);
    if (gen < c->floor) {
        t = INT64_MIN;
    } else if (c->cap > 0) {
        const struct metric_log *m = log_slot(c->logs, c->cap, metric);
        for (size_t i = 0; m->name != NULL && i < m->n; i++) {
            if (m->gen[i] > gen) {
                t = m->min_t[i];
                break;
            }
        }
    }
    pthread_mutex_unlock(&c->mu);
    return t;
}

bool st_changes_added_since(struct st_changes *c, const char *metric, uint64_t gen)
{
    bool added = true;
    pthread_mutex_lock(&c->mu);
    if (gen >= c->floor) {
        added = c->cap > 0 && log_slot(c->logs, c->cap, metric)->added_gen > gen;
    }
    pthread_mutex_unlock(&c->mu);
    return added;
}
