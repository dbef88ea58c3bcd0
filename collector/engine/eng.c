/* The context rules run in: queries through the query engine, thresholds
 * and settings with their defaults, and the candidate list. */
#include "rules.h"

#include "err.h"
#include "feed.h"
#include "frame.h"
#include "query.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_OVERRIDES 128
/* A question shared within a run is known by its parameters as text;
 * one with longer matchers than this is asked unshared. */
#define QUESTION_KEY_MAX 2048

/* Targets of DESIGN.md and the engine's windows, by name. */
static const struct {
    const char *name;
    double value;
} defaults[] = {
    {"response_p50_s", 0.2},
    {"response_p95_s", 0.5},
    {"response_p99_s", 1.0},
    {"throughput_rps", 1000},
    {"bundle_main_bytes", 250 * 1024},
    {"bundle_chunk_bytes", 100 * 1024},
    {"bundle_total_bytes", 1024 * 1024},
    {"memory_peak_bytes", 512.0 * 1024 * 1024},
    {"error_rate", 0.01},
    {"cpu_ratio", 0.70},
    {"fcp_s", 1.5},
    {"lcp_s", 2.5},
    {"tti_s", 3.0},
    {"connections", 10000},
    {"analysis_window_ms", 5 * 60 * 1000},
    {"leak_window_ms", 30 * 60 * 1000},
    {"baseline_window_ms", 60 * 60 * 1000},
    {"regression_p95_factor", 1.2},
    {"regression_error_factor", 2.0},
    {"min_samples", 50},
    {"cold_table_days", 90},
};

struct override {
    char name[96];
    double value;
};

/* A run's questions, kept while it shares them (st_eng_share_begin). */
struct shared_fold {
    char *key;   /* the question without its agg */
    char *range; /* its metric, range and step only */
    st_query_fold *fold;
    bool walked; /* read group by group (st_eng_query_steps_each), not as answers */
};

/* An answer kept for the run's later questions (and the next run's). */
struct kept_answer {
    char *key; /* the question with its agg */
    uint64_t hash;
    st_answer *a;
    bool asked; /* in the last run: one not asked in a run goes at its end */
};

/* A window question kept across runs (st_query_slide). */
struct kept_slide {
    char *key; /* the question without its agg and range */
    st_query_slide *slide;
    int metric;            /* its metric in the feed once it first read the store; -1: none */
    struct slide_sub *sub; /* the slide's subscribe argument (the array moves) */
};

struct slide_sub {
    struct st_eng *e;
    size_t i; /* the slide's index in e->slides */
    char name[ST_FRAME_MAX_NAME + 1];
};

struct st_eng {
    st_store *st;
    int64_t now;
    st_eng_cancel_fn cancel;
    void *cancel_arg;
    struct override ov[MAX_OVERRIDES];
    size_t nov;
    bool sharing;
    size_t max_series; /* 0: ENG_MAX_SERIES (tests lower it) */
    struct kept_answer *answers;
    size_t nanswers;
    size_t capanswers;
    struct shared_fold *folds;
    size_t nfolds;
    size_t capfolds;
    /* The answers and folds outlive their run: the next run at the same
     * clock asks the same questions over the same windows, and takes
     * those of the metrics no commit has written to before the clock
     * since kept_gen (st_eng_share_begin; 0, never a generation: none
     * kept). */
    int64_t kept_now;
    uint64_t kept_gen;
    uint64_t run_gen;          /* the store's generation as the run began */
    struct kept_slide *slides; /* across runs: a run reads what changed since the last */
    size_t nslides;
    size_t capslides;
    /* The commits' points for the slides (NULL: another reader has the
     * store's tap; the slides then read what changed) */
    st_feed *feed;
    bool feed_tried;
};

int st_eng_new(st_store *st, int64_t now_ms, st_eng **out)
{
    st_eng *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        return ST_ENOMEM;
    }
    e->st = st;
    e->now = now_ms;
    *out = e;
    return ST_OK;
}

/* Keeps the folds keep says to, in order, and frees the others (NULL:
 * frees all). */
static void sift_folds(st_eng *e, bool (*keep)(st_eng *e, const struct shared_fold *f))
{
    size_t n = 0;
    for (size_t i = 0; i < e->nfolds; i++) {
        if (keep != NULL && keep(e, &e->folds[i])) {
            e->folds[n++] = e->folds[i];
        } else {
            free(e->folds[i].key);
            free(e->folds[i].range);
            st_query_fold_free(e->folds[i].fold);
        }
    }
    e->nfolds = n;
}

/* Keeps the answers keep says to, in order, and frees the others (NULL:
 * frees all). */
static void sift_answers(st_eng *e, bool (*keep)(st_eng *e, const struct kept_answer *a))
{
    size_t n = 0;
    for (size_t i = 0; i < e->nanswers; i++) {
        if (keep != NULL && keep(e, &e->answers[i])) {
            e->answers[n++] = e->answers[i];
        } else {
            free(e->answers[i].key);
            st_answer_unref(e->answers[i].a);
        }
    }
    e->nanswers = n;
}

/* Forgets every answer and fold kept. */
static void drop_kept(st_eng *e)
{
    sift_folds(e, NULL);
    free(e->folds);
    sift_answers(e, NULL);
    free(e->answers);
    e->folds = NULL;
    e->nfolds = e->capfolds = 0;
    e->answers = NULL;
    e->nanswers = e->capanswers = 0;
    e->kept_gen = 0;
}

bool st_eng_feed_stats(st_eng *e, struct st_feed_stats *out)
{
    if (e->feed == NULL) {
        return false;
    }
    st_feed_stats(e->feed, out);
    return true;
}

void st_eng_free(st_eng *e)
{
    if (e == NULL) {
        return;
    }
    st_eng_share_end(e);
    drop_kept(e);
    st_feed_free(e->feed); /* no tap call is under way after it */
    for (size_t i = 0; i < e->nslides; i++) {
        free(e->slides[i].key);
        free(e->slides[i].sub);
        st_query_slide_free(e->slides[i].slide);
    }
    free(e->slides);
    free(e);
}

void st_eng_set_max_series(st_eng *e, size_t n)
{
    e->max_series = n;
    drop_kept(e);
}

/* The metric a question key names (its first parameter, "metric=..."). */
static bool key_metric(const char *key, char *out, size_t cap)
{
    const char *end = strchr(key, '\x1f');
    size_t n;
    if (strncmp(key, "metric=", 7) != 0 || end == NULL || (n = (size_t)(end - key - 7)) >= cap) {
        return false;
    }
    memcpy(out, key + 7, n);
    out[n] = '\0';
    return true;
}

/* The end of a question key's window (its "to"), or INT64_MAX. */
static int64_t key_to(const char *key)
{
    const char *p = strstr(key, "\x1fto=");
    long long v;
    return p != NULL && sscanf(p + 4, "%lld", &v) == 1 ? (int64_t)v : INT64_MAX;
}

/* Whether what was kept about the question key, of a window ending at
 * end, still holds: a commit since the kept run that wrote a point of its
 * metric starting before end changed it, as did one that added a series
 * of it (a group, even without points in the window); so does one the
 * store cannot account for. */
static bool holds_until(st_eng *e, const char *key, int64_t end)
{
    char metric[QUESTION_KEY_MAX];
    int64_t ch;
    if (!key_metric(key, metric, sizeof(metric))) {
        return false;
    }
    ch = st_store_changed_since(e->st, metric, e->kept_gen);
    return ch != INT64_MIN && ch >= end && !st_store_series_added_since(e->st, metric, e->kept_gen);
}

/* Within a step every window ends at the clock. */
static bool kept_holds(st_eng *e, const char *key)
{
    return holds_until(e, key, e->now);
}

/* Across steps: an answer of a window that ended before the last clock
 * (the closed days of the cold-table counters) is asked again the same,
 * and holds while nothing was written into it; one of a window that
 * moved with the clock is never asked again. */
static bool kept_across(st_eng *e, const struct kept_answer *a)
{
    int64_t to = key_to(a->key);
    return to < e->kept_now && holds_until(e, a->key, to);
}

static bool answer_holds(st_eng *e, const struct kept_answer *a)
{
    return kept_holds(e, a->key);
}

/* Answers a run did not ask for go at its end (kept across steps, but no
 * longer asked: yesterday's closed days). */
static bool answer_asked(st_eng *e, const struct kept_answer *a)
{
    (void)e;
    return a->asked;
}

static bool fold_holds(st_eng *e, const struct shared_fold *f)
{
    return kept_holds(e, f->key);
}

static bool fold_walked(st_eng *e, const struct shared_fold *f)
{
    (void)e;
    return f->walked;
}

/* Keeps what the last run found that this one would find again. */
static void sift_kept(st_eng *e)
{
    if (e->kept_gen == 0) {
        drop_kept(e);
        return;
    }
    if (e->kept_now != e->now) {
        sift_folds(e, NULL);
        sift_answers(e, kept_across);
    } else {
        sift_answers(e, answer_holds);
        sift_folds(e, fold_holds);
    }
    for (size_t i = 0; i < e->nanswers; i++) {
        e->answers[i].asked = false;
    }
}

/* A slide about to read the store for the first time: its metric's
 * blocks are kept from now on (slides that never fill, grouped too finely
 * to keep, cost the writer nothing). */
static int slide_subscribe(void *arg, bool on)
{
    struct slide_sub *sub = arg;
    struct kept_slide *ks = &sub->e->slides[sub->i];
    if (!on) {
        if (ks->metric >= 0) {
            st_feed_unsubscribe(sub->e->feed, ks->metric);
        }
        ks->metric = -1;
        return ST_OK;
    }
    return ks->metric >= 0 ? ST_OK : st_feed_subscribe(sub->e->feed, sub->name, &ks->metric);
}

static int feed_block(void *arg, int metric, uint64_t txn, const st_fed_block *b)
{
    st_eng *e = arg;
    for (size_t i = 0; i < e->nslides; i++) {
        if (e->slides[i].metric == metric) {
            /* out of memory the slide forgets its buckets itself */
            (void)st_query_slide_feed(e->slides[i].slide, txn, b);
        }
    }
    return ST_OK;
}

static void feed_commit(void *arg, uint64_t txn)
{
    st_eng *e = arg;
    for (size_t i = 0; i < e->nslides; i++) {
        if (e->slides[i].metric >= 0) {
            st_query_slide_fed_upto(e->slides[i].slide, txn);
        }
    }
}

/* Folds what commits wrote since the last run into the fed slides. The
 * tap is taken at the first run, when an engine reconfigured has let go
 * of it; without it the slides read what changed. */
static void feed_take(st_eng *e)
{
    bool lost = false;
    if (!e->feed_tried) {
        e->feed_tried = true;
        if (st_feed_new(e->st, &e->feed) != ST_OK) {
            e->feed = NULL;
        }
    }
    if (e->feed == NULL) {
        return;
    }
    if (st_feed_drain(e->feed, &lost, feed_block, feed_commit, e) != ST_OK || lost) {
        for (size_t i = 0; i < e->nslides; i++) {
            if (e->slides[i].metric >= 0) {
                st_query_slide_forget(e->slides[i].slide);
            }
        }
    }
}

void st_eng_share_begin(st_eng *e)
{
    /* taken before the first question, and before the feed: a commit
     * during the run counts as after it, which can only drop more next
     * time, and a commit it covers was handed to the feed before its
     * generation was published (st_store_commit), so the slides have it */
    e->run_gen = st_store_generation(e->st);
    feed_take(e);
    sift_kept(e);
    e->sharing = true;
}

void st_eng_share_end(st_eng *e)
{
    /* A fold asked for answers has given every one the run asked, and
     * those are kept; only the folds walked group by group must stay
     * (at fleet size the others' sketches take over 100 MiB). */
    sift_folds(e, fold_walked);
    if (e->sharing) {
        sift_answers(e, answer_asked);
        e->kept_now = e->now;
        e->kept_gen = e->run_gen;
    }
    e->sharing = false;
}

void st_eng_set_now(st_eng *e, int64_t now_ms)
{
    e->now = now_ms;
}

void st_eng_set_cancel(st_eng *e, st_eng_cancel_fn fn, void *arg)
{
    e->cancel = fn;
    e->cancel_arg = arg;
}

bool st_eng_cancelled(st_eng *e)
{
    return e->cancel != NULL && e->cancel(e->cancel_arg);
}

/* Keeps what was kept: a window is part of its questions' keys, and
 * thresholds and sample minimums are not in any question. */
int st_eng_set(st_eng *e, const char *name, double value)
{
    for (size_t i = 0; i < e->nov; i++) {
        if (strcmp(e->ov[i].name, name) == 0) {
            e->ov[i].value = value;
            return ST_OK;
        }
    }
    if (e->nov >= MAX_OVERRIDES || strlen(name) >= sizeof(e->ov[0].name)) {
        return ST_ETOOBIG;
    }
    snprintf(e->ov[e->nov].name, sizeof(e->ov[0].name), "%s", name);
    e->ov[e->nov++].value = value;
    return ST_OK;
}

static bool lookup(const st_eng *e, const char *name, double *out)
{
    for (size_t i = 0; i < e->nov; i++) {
        if (strcmp(e->ov[i].name, name) == 0) {
            *out = e->ov[i].value;
            return true;
        }
    }
    return false;
}

double st_eng_setting(st_eng *e, const char *name)
{
    double v;
    if (lookup(e, name, &v)) {
        return v;
    }
    for (size_t i = 0; i < ST_ARRAY_LEN(defaults); i++) {
        if (strcmp(defaults[i].name, name) == 0) {
            return defaults[i].value;
        }
    }
    return NAN;
}

double st_eng_threshold(st_eng *e, const st_rule *r)
{
    double v;
    return lookup(e, r->id, &v) ? v : r->threshold;
}

int64_t st_eng_now(st_eng *e)
{
    return e->now;
}

int64_t st_eng_window(st_eng *e)
{
    return (int64_t)st_eng_setting(e, "analysis_window_ms");
}

/* The engine's questions group the whole fleet by host (and by statement,
 * channel or route per host), far past what an API answer may carry; the
 * answers stay in memory, so these bound memory, not JSON size. */
#define ENG_MAX_SERIES 200000
#define ENG_MAX_POINTS 2000000

enum key_part {
    KEY_QUESTION, /* metric, by, step, range and matchers */
    KEY_RANGE,    /* metric, range and step */
    KEY_SLIDE,    /* metric, by, step and matchers: any window; and a ratio's agg */
};

/* A ratio's matchers on its `over` label pick the numerator, not the
 * series read: its slide is not the one of a sum with the same matchers. */
static bool key_skips(const char *k, const char *v, enum key_part part)
{
    return (strcmp(k, "agg") == 0 && (part != KEY_SLIDE || strcmp(v, "ratio") != 0)) ||
           (part == KEY_RANGE && (strcmp(k, "by") == 0 || strcmp(k, "match") == 0)) ||
           (part == KEY_SLIDE && (strcmp(k, "from") == 0 || strcmp(k, "to") == 0));
}

/* A question's part as text, each parameter ended by US (0x1f). False
 * when it does not fit (it is then asked unshared). */
static bool question_key(const st_qparam *p, size_t n, enum key_part part, char *out, size_t cap)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        size_t kl = strlen(p[i].key);
        size_t vl = strlen(p[i].value);
        if (key_skips(p[i].key, p[i].value, part)) {
            continue;
        }
        if (len + kl + vl + 3 > cap) {
            return false;
        }
        memcpy(out + len, p[i].key, kl);
        len += kl;
        out[len++] = '=';
        memcpy(out + len, p[i].value, vl);
        len += vl;
        out[len++] = '\x1f';
    }
    out[len] = '\0';
    return true;
}

static int keep_fold(st_eng *e, const char *key, const char *range, st_query_fold *f)
{
    char *k = strdup(key);
    char *rk = strdup(range);
    if (k == NULL || rk == NULL) {
        free(k);
        free(rk);
        return ST_ENOMEM;
    }
    if (e->nfolds == e->capfolds) {
        size_t cap = e->capfolds ? 2 * e->capfolds : 32;
        struct shared_fold *nf = realloc(e->folds, cap * sizeof(*nf));
        if (nf == NULL) {
            free(k);
            free(rk);
            return ST_ENOMEM;
        }
        e->folds = nf;
        e->capfolds = cap;
    }
    e->folds[e->nfolds].key = k;
    e->folds[e->nfolds].range = rk;
    e->folds[e->nfolds].walked = false;
    e->folds[e->nfolds++].fold = f;
    return ST_OK;
}

static uint64_t key_hash(const char *key)
{
    return st_fnv1a(ST_FNV_SEED, key, strlen(key));
}

/* The answer kept for akey, or NULL. The run asks about a hundred
 * questions, a few hundred times: a scan with the hash compared first. */
static st_answer *kept_answer(st_eng *e, const char *akey)
{
    uint64_t h = key_hash(akey);
    for (size_t i = 0; i < e->nanswers; i++) {
        if (e->answers[i].hash == h && strcmp(e->answers[i].key, akey) == 0) {
            e->answers[i].asked = true;
            return e->answers[i].a;
        }
    }
    return NULL;
}

/* Keeps a reference to ans under akey; without memory it is simply not
 * kept (asked again, it is folded again). */
static void keep_answer(st_eng *e, const char *akey, st_answer *ans)
{
    char *k;
    if (e->nanswers == e->capanswers) {
        size_t cap = e->capanswers ? 2 * e->capanswers : 64;
        struct kept_answer *na = realloc(e->answers, cap * sizeof(*na));
        if (na == NULL) {
            return;
        }
        e->answers = na;
        e->capanswers = cap;
    }
    if ((k = strdup(akey)) == NULL) {
        return;
    }
    e->answers[e->nanswers++] = (struct kept_answer){k, key_hash(akey), st_answer_ref(ans), true};
}

/* A fold of the same metric and range grouped by labels q matches on,
 * which merges its groups into q's answer exactly (the targets per role
 * and fleet-wide, from the regressions' groups by role and route). */
static st_query_fold *merging_fold(st_eng *e, const st_query *q, const char *range)
{
    if (q->nby > 0) {
        return NULL;
    }
    for (size_t i = 0; i < e->nfolds; i++) {
        if (strcmp(e->folds[i].range, range) == 0 &&
            st_query_fold_merges(e->folds[i].fold, q->agg, q->m, q->nm)) {
            return e->folds[i].fold;
        }
    }
    return NULL;
}

/* A shared question: the answer asked before, or one from the fold of
 * the same question with another agg, or from a fold whose groups merge
 * into it, or a new fold kept for the others. */
/* The slide of a window question (created on first use), or NULL. */
static st_query_slide *slide_for(st_eng *e, const char *skey)
{
    char metric[QUESTION_KEY_MAX];
    struct kept_slide *ks;
    for (size_t i = 0; i < e->nslides; i++) {
        if (strcmp(e->slides[i].key, skey) == 0) {
            return e->slides[i].slide;
        }
    }
    if (e->nslides == e->capslides) {
        size_t cap = e->capslides ? 2 * e->capslides : 16;
        ks = realloc(e->slides, cap * sizeof(*ks));
        if (ks == NULL) {
            return NULL;
        }
        e->slides = ks;
        e->capslides = cap;
    }
    ks = &e->slides[e->nslides];
    if ((ks->key = strdup(skey)) == NULL) {
        return NULL;
    }
    if (st_query_slide_new(&ks->slide) != ST_OK) {
        free(ks->key);
        return NULL;
    }
    ks->metric = -1;
    ks->sub = NULL;
    if (e->feed != NULL && key_metric(skey, metric, sizeof(metric)) &&
        strlen(metric) < sizeof(ks->sub->name) && (ks->sub = calloc(1, sizeof(*ks->sub))) != NULL) {
        ks->sub->e = e;
        ks->sub->i = e->nslides;
        memcpy(ks->sub->name, metric, strlen(metric) + 1);
        st_query_slide_set_fed(ks->slide, slide_subscribe, ks->sub);
    }
    return e->slides[e->nslides++].slide;
}

/* A new fold of q: from its kept window when it has one that answers it
 * exactly, else a scan of the whole range. */
static int fold_new(st_eng *e, const st_query *q, const char *skey, st_query_fold **out)
{
    char err[256];
    st_query_slide *s = st_query_slide_fits(q) ? slide_for(e, skey) : NULL;
    int rv;
    if (s != NULL && st_query_slide_fold(e->st, s, q, out) == ST_OK) {
        return ST_OK;
    }
    rv = st_query_fold_run(e->st, q, out, err, sizeof(err));
    if (rv == ST_OK && s != NULL) {
        st_query_slide_learn(s, *out);
    }
    return rv;
}

/* The run's fold of the question key that serves agg, or NULL. */
static st_query_fold *shared_fold(const st_eng *e, const char *key, enum st_agg agg)
{
    for (size_t i = 0; i < e->nfolds; i++) {
        if (strcmp(e->folds[i].key, key) == 0 && st_query_fold_serves(e->folds[i].fold, agg)) {
            return e->folds[i].fold;
        }
    }
    return NULL;
}

/* A new fold of q, kept for the run's later questions. */
static int new_shared_fold(st_eng *e, const st_query *q, const char *key, const char *range,
                           const char *skey, st_query_fold **out)
{
    int rv = fold_new(e, q, skey, out);
    if (rv == ST_OK && (rv = keep_fold(e, key, range, *out)) != ST_OK) {
        st_query_fold_free(*out);
        *out = NULL;
    }
    return rv;
}

static int run_shared(st_eng *e, const st_query *q, const char *key, const char *range,
                      const char *skey, st_answer **out)
{
    char akey[QUESTION_KEY_MAX + 16];
    st_query_fold *f = NULL;
    st_answer *ans;
    int rv;
    snprintf(akey, sizeof(akey), "%sagg=%s", key, st_agg_name(q->agg));
    if ((ans = kept_answer(e, akey)) != NULL) {
        *out = st_answer_ref(ans);
        return ST_OK;
    }
    f = shared_fold(e, key, q->agg);
    if (f == NULL && (f = merging_fold(e, q, range)) != NULL) {
        if ((rv = st_query_fold_merged_rows(f, q->agg, q->m, q->nm, &ans)) != ST_OK) {
            return rv;
        }
        keep_answer(e, akey, ans);
        *out = ans;
        return ST_OK;
    }
    if (f == NULL && (rv = new_shared_fold(e, q, key, range, skey, &f)) != ST_OK) {
        return rv;
    }
    if ((rv = st_query_fold_rows(f, q->agg, &ans)) != ST_OK) {
        return rv;
    }
    keep_answer(e, akey, ans);
    *out = ans;
    return ST_OK;
}

/* A question as the engine asks it: parameters, parsed query and the keys
 * it is shared under. */
struct asked {
    st_qparam p[8 + ST_QUERY_MAX_MATCHERS];
    size_t n;
    char from[32];
    char to[32];
    char key[QUESTION_KEY_MAX];
    char range[QUESTION_KEY_MAX];
    char skey[QUESTION_KEY_MAX];
    st_query q;
    bool shared; /* asked through the run's shared folds */
};

/* Parses a question over [now - window_ms, now); a->q is released by the
 * caller on success. */
static int ask(st_eng *e, struct asked *a, const char *metric, const char *agg, const char *by,
               const char *const *match, size_t nmatch, int64_t window_ms, const char *step)
{
    char err[256];
    int rv;
    a->n = 0;
    if (nmatch > ST_QUERY_MAX_MATCHERS) {
        return ST_EINVAL;
    }
    /* A query over the fleet takes up to seconds: a stopping collector
     * asks no more of them. */
    if (st_eng_cancelled(e)) {
        return ST_ECANCELED;
    }
    snprintf(a->from, sizeof(a->from), "%lld", (long long)(e->now - window_ms));
    snprintf(a->to, sizeof(a->to), "%lld", (long long)e->now);
    a->p[a->n++] = (st_qparam){"metric", metric};
    a->p[a->n++] = (st_qparam){"from", a->from};
    a->p[a->n++] = (st_qparam){"to", a->to};
    if (agg != NULL) {
        a->p[a->n++] = (st_qparam){"agg", agg};
    }
    if (by != NULL) {
        a->p[a->n++] = (st_qparam){"by", by};
    }
    if (step != NULL) {
        a->p[a->n++] = (st_qparam){"step", step};
    }
    for (size_t i = 0; i < nmatch; i++) {
        a->p[a->n++] = (st_qparam){"match", match[i]};
    }
    if ((rv = st_query_parse(a->p, a->n, e->now, &a->q, err, sizeof(err))) != ST_OK) {
        return rv;
    }
    a->q.max_series = e->max_series > 0 ? e->max_series : ENG_MAX_SERIES;
    a->q.max_points = ENG_MAX_POINTS;
    /* Only aggregated questions fold (st_query_run answers the others with
     * raw points); every engine question is one. */
    a->shared = e->sharing &&
                (a->q.agg != ST_AGG_DEFAULT || a->q.step_ms > 0 || a->q.nby > 0 || a->q.top > 0) &&
                question_key(a->p, a->n, KEY_QUESTION, a->key, sizeof(a->key)) &&
                question_key(a->p, a->n, KEY_RANGE, a->range, sizeof(a->range)) &&
                question_key(a->p, a->n, KEY_SLIDE, a->skey, sizeof(a->skey));
    return ST_OK;
}

/* An unshared question: its own scan, answered and dropped. */
static int run_alone(st_eng *e, const st_query *q, st_answer **out)
{
    char err[256];
    st_query_fold *f = NULL;
    int rv = st_query_fold_run(e->st, q, &f, err, sizeof(err));
    if (rv == ST_OK) {
        rv = st_query_fold_rows(f, q->agg, out);
    }
    st_query_fold_free(f);
    return rv;
}

static int run(st_eng *e, const char *metric, const char *agg, const char *by,
               const char *const *match, size_t nmatch, int64_t window_ms, const char *step,
               st_answer **out)
{
    struct asked a;
    int rv;
    *out = NULL;
    if ((rv = ask(e, &a, metric, agg, by, match, nmatch, window_ms, step)) != ST_OK) {
        return rv;
    }
    if (a.shared) {
        rv = run_shared(e, &a.q, a.key, a.range, a.skey, out);
    } else {
        rv = run_alone(e, &a.q, out);
    }
    st_query_release(&a.q);
    return rv;
}

int st_eng_answer_each(const st_answer *ans, st_query_group_fn fn, void *arg)
{
    int rv = ST_OK;
    for (size_t i = 0; ans != NULL && rv == ST_OK && i < ans->n; i++) {
        const st_ans_row *r = &ans->rows[i];
        rv = fn(arg, r->labels, r->t, r->v, r->n);
    }
    return rv;
}

int st_eng_query_steps_each(st_eng *e, const char *metric, const char *agg, const char *by,
                            const char *const *match, size_t nmatch, int64_t window_ms,
                            int64_t step_ms, st_query_group_fn fn, void *arg)
{
    char akey[QUESTION_KEY_MAX + 16];
    char step[32];
    char err[256];
    struct asked a;
    st_query_fold *f = NULL;
    bool own = false;
    const st_answer *ans;
    int rv;
    snprintf(step, sizeof(step), "%llds", (long long)(step_ms / 1000));
    if ((rv = ask(e, &a, metric, agg, by, match, nmatch, window_ms, step)) != ST_OK) {
        return rv;
    }
    if (a.shared) {
        /* The run's shared answer or fold when one is there; else a new
         * fold, kept for the others, as run_shared would keep it. */
        snprintf(akey, sizeof(akey), "%sagg=%s", a.key, st_agg_name(a.q.agg));
        if ((ans = kept_answer(e, akey)) != NULL) {
            rv = st_eng_answer_each(ans, fn, arg);
            st_query_release(&a.q);
            return rv;
        }
        if ((f = shared_fold(e, a.key, a.q.agg)) == NULL) {
            rv = new_shared_fold(e, &a.q, a.key, a.range, a.skey, &f);
        }
        for (size_t i = 0; rv == ST_OK && i < e->nfolds; i++) {
            e->folds[i].walked |= e->folds[i].fold == f;
        }
    } else {
        own = true;
        rv = st_query_fold_run(e->st, &a.q, &f, err, sizeof(err));
    }
    if (rv == ST_OK) {
        rv = st_query_fold_each(f, a.q.agg, fn, arg);
    }
    if (own) {
        st_query_fold_free(f);
    }
    st_query_release(&a.q);
    return rv;
}

int st_eng_query(st_eng *e, const char *metric, const char *agg, const char *by,
                 const char *const *match, size_t nmatch, int64_t window_ms, st_answer **out)
{
    return run(e, metric, agg, by, match, nmatch, window_ms, NULL, out);
}

int st_eng_query_steps(st_eng *e, const char *metric, const char *agg, const char *by,
                       const char *const *match, size_t nmatch, int64_t window_ms, int64_t step_ms,
                       st_answer **out)
{
    char step[32];
    snprintf(step, sizeof(step), "%llds", (long long)(step_ms / 1000));
    return run(e, metric, agg, by, match, nmatch, window_ms, step, out);
}

void st_candidate_init(st_candidate *c)
{
    memset(c, 0, sizeof(*c));
    c->labels = json_object();
    c->evidence = json_object();
    c->traffic_share = 1.0;
}

static void candidate_drop(st_candidate *c)
{
    json_decref(c->labels);
    json_decref(c->evidence);
    json_decref(c->implementation);
    json_decref(c->measure);
    c->labels = c->evidence = c->implementation = c->measure = NULL;
}

int st_candidates_add(st_candidates *out, st_candidate *c)
{
    if (out->n >= ST_MAX_CANDIDATES) {
        candidate_drop(c);
        return ST_ETOOBIG;
    }
    if (out->n == out->cap) {
        size_t ncap = out->cap ? out->cap * 2 : 16;
        st_candidate *nv = realloc(out->v, ncap * sizeof(*nv));
        if (nv == NULL) {
            candidate_drop(c);
            return ST_ENOMEM;
        }
        out->v = nv;
        out->cap = ncap;
    }
    out->v[out->n++] = *c;
    memset(c, 0, sizeof(*c));
    return ST_OK;
}

void st_candidates_free(st_candidates *c)
{
    for (size_t i = 0; i < c->n; i++) {
        json_decref(c->v[i].labels);
        json_decref(c->v[i].evidence);
        json_decref(c->v[i].implementation);
        json_decref(c->v[i].measure);
    }
    free(c->v);
    memset(c, 0, sizeof(*c));
}
