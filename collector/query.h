/* Queries over the store: parameter parsing with errors that name the
 * parameter, and execution into the JSON answer of GET /v1/query. */
#ifndef ST_QUERY_H
#define ST_QUERY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "answer.h"
#include "sketch.h"
#include "store.h"

#define ST_QUERY_MAX_MATCHERS 16
#define ST_QUERY_MAX_BY 8
#define ST_QUERY_MAX_SERIES 2000
#define ST_QUERY_MAX_POINTS 250000
#define ST_QUERY_MAX_RANGE_MS (400LL * 86400 * 1000)
#define ST_QUERY_MAX_TOP 1000

enum st_agg {
    ST_AGG_DEFAULT = 0, /* counters: delta, gauges: value, distributions: p95 */
    ST_AGG_P50,
    ST_AGG_P90,
    ST_AGG_P95,
    ST_AGG_P99,
    ST_AGG_AVG,
    ST_AGG_MIN,
    ST_AGG_MAX,
    ST_AGG_SUM,
    ST_AGG_COUNT,
    ST_AGG_RATE,
    ST_AGG_RATIO,
    ST_AGG_DELTA, /* last - first: how much a gauge grew */
};

typedef struct st_query {
    char metric[129];
    enum st_agg agg;
    st_matcher m[ST_QUERY_MAX_MATCHERS];
    size_t nm;
    char by[ST_QUERY_MAX_BY][129];
    size_t nby;
    int64_t from_ms;
    int64_t to_ms;
    int64_t step_ms;
    int top;        /* > 0: only the N groups with the highest value */
    char over[129]; /* ratio: the label whose matchers only the numerator keeps */
    /* Answer limits; 0 means ST_QUERY_MAX_SERIES / ST_QUERY_MAX_POINTS. The
     * engine raises them: its questions are fleet-wide by host, and a
     * request from outside must stay small enough to ship as JSON. */
    size_t max_series;
    size_t max_points;
} st_query;

/* One query parameter as received. */
typedef struct st_qparam {
    const char *key;
    const char *value;
} st_qparam;

/* Parses metric, agg, match (repeatable: k=v, k!=v, k=~re, k!~re), by,
 * from, to (unix ms, RFC 3339, "now" or relative like -1h), step, top, over.
 * On error err names the parameter. Release with st_query_release. */
int st_query_parse(const st_qparam *p, size_t n, int64_t now_ms, st_query *q, char *err,
                   size_t errlen);
void st_query_release(st_query *q);
/* Parses a time as accepted by from/to. */
int st_query_time(const char *s, int64_t now_ms, int64_t *out);
const char *st_agg_name(enum st_agg a);

/* Runs q: {"metric", "kind", "unit", "series": [{"labels": {}, "points":
 * [[unix_ms, value], ...]}]}. Without agg, step and by, every stored point
 * of every matching series comes back (raw); otherwise series are grouped
 * by the `by` labels and each step bucket aggregated exactly (sketches
 * merged for quantiles). ST_ETOOBIG with err naming the limit. */
int st_query_run(st_store *st, const st_query *q, json_t **out, char *err, size_t errlen);
/* The aggregated path of st_query_run (query_agg.c). */
int st_query_run_agg(st_store *st, const st_query *q, json_t **out, char *err, size_t errlen);

/* An aggregated query's scan, folded and kept: the answer of q, and of q
 * with another agg when the same folded buckets hold it (a distribution's
 * merged sketches give every agg but ratio; a counter's or gauge's sums,
 * counts and extremes give every agg but quantiles and ratio). The engine
 * asks several aggs of one metric and window per run: one scan answers
 * them all, exactly as separate queries would. The fold copies what it
 * needs of q; q may be released at once. Errors as st_query_run_agg. */
typedef struct st_query_fold st_query_fold;
int st_query_fold_run(st_store *st, const st_query *q, st_query_fold **out, char *err,
                      size_t errlen);
/* Whether the fold can answer agg. */
bool st_query_fold_serves(const st_query_fold *f, enum st_agg agg);
/* Whether the fold can tell, exactly, the answer of its question asked
 * without by and with the equality matchers m (label=value on labels of
 * its by): its own question read every series (no matchers), and agg's
 * value of groups merged equals their value folded at once (quantiles,
 * counts and extremes of sketches; counters' and gauges' sums when every
 * value was an integer). */
bool st_query_fold_merges(const st_query_fold *f, enum st_agg agg, const st_matcher *m, size_t nm);
/* The answer of the fold's query with agg, as arrays (answer.h): the
 * groups of st_query_run_agg's answer in its order with the same points.
 * ST_EINVAL when the fold does not serve agg or ranks its groups (top),
 * ST_ENOMEM. */
int st_query_fold_rows(st_query_fold *f, enum st_agg agg, st_answer **out);
/* The merged answer st_query_fold_merges tells of, as arrays: one group
 * with labels {} merging the groups m selects, or none when it selects
 * none. ST_EINVAL when the fold does not merge so, ST_ENOMEM. */
int st_query_fold_merged_rows(st_query_fold *f, enum st_agg agg, const st_matcher *m, size_t nm,
                              st_answer **out);
/* The answer of st_query_fold_rows, group by group in its order, without
 * building it: fn gets each group's labels (borrowed) and its points (times
 * in ms and values; non-finite values left out, as the answer leaves them).
 * For callers that only read an answer of many points (thousands of groups
 * × tens of steps are a million JSON values). fn's non-zero return stops
 * the walk and is returned; ST_EINVAL when the fold does not serve agg or
 * ranks its groups (top). */
typedef int (*st_query_group_fn)(void *arg, json_t *labels, const int64_t *t, const double *v,
                                 size_t n);
int st_query_fold_each(st_query_fold *f, enum st_agg agg, st_query_group_fn fn, void *arg);
void st_query_fold_free(st_query_fold *f);

/* A question asked again and again over a window that moves with the
 * clock, its points kept folded in 10 s buckets between askings: each
 * asking reads only what the store says changed since the last one
 * (st_store_changed_since) and the partial buckets at the window's edges
 * (a fed slide, below, reads nothing: the commits are handed to it).
 * One slide serves one metric, matchers, by and step (steps of whole
 * buckets), with any range and agg the caller asks of it. The answer is the fold st_query_fold_run
 * gives (same groups, order and values), serving only the aggs whose merged value is exact:
 * ST_EUNSUPPORTED when this question or its data does not qualify (ask st_query_fold_run instead),
 * ST_ENOMEM. q's regexes are used during the call only. Not thread-safe: one caller at a time.
 * Retention pruning is no change the store reports: windows stay within
 * 3 h, far inside the raw retention (2 days by default). */
typedef struct st_query_slide st_query_slide;
int st_query_slide_new(st_query_slide **out);
/* Sizes a new slide by a full answer of its question (a fold of
 * st_query_fold_run): until then it answers ST_EUNSUPPORTED, and a
 * question with too many groups to keep in buckets stays so. */
void st_query_slide_learn(st_query_slide *c, const st_query_fold *f);
/* Whether a slide could answer q at all (its range, step and agg). */
bool st_query_slide_fits(const st_query *q);
int st_query_slide_fold(st_store *st, st_query_slide *c, const st_query *q, st_query_fold **out);
void st_query_slide_free(st_query_slide *c);

/* A fed slide (st_query_slide_set_fed, before its first use) reads the
 * store once, when first asked, and from then on takes the points of
 * every later commit from st_query_slide_feed, as the store's tap hands
 * them over (st_store_tap_set): moving its window reads nothing. Its
 * buckets reach past the window for the points that arrive early, and it
 * reads the store again when the window goes back past them, when a
 * series of its metric is added, or after st_query_slide_forget. Windows
 * on whole minutes are kept in minutes. */
typedef struct st_fed_block {
    uint32_t id; /* the series */
    int kind;    /* the frame's (Strata__V1__Kind): a block of another kind than
                    the series' record is not fed (a full scan reads it as
                    neither) */
    int64_t start_ms;
    int64_t interval_ms;
    size_t n;
    const double *v;      /* n values (not read for distributions) */
    const double *lo;     /* n minimums, or NULL: the values */
    const double *hi;     /* n maximums, or NULL: the values */
    st_sketch *const *sk; /* distributions: n sketches (NULL: none), or NULL */
} st_fed_block;
/* subscribe(arg, true) is called before the slide's first read of the
 * store (and each read after a reset): from then on the blocks of its
 * metric must be fed to it; non-zero leaves the slide unfilled (asked
 * whole). subscribe(arg, false) when it turns out grouped too finely to
 * keep: it is fed no more. */
typedef int (*st_query_slide_subscribe_fn)(void *arg, bool on);
void st_query_slide_set_fed(st_query_slide *c, st_query_slide_subscribe_fn subscribe, void *arg);
/* Folds a block that commit txn wrote, unless the slide's fill saw that
 * commit or its series is not one of the slide's. After the last block of
 * a commit, st_query_slide_fed_upto(c, txn). ST_ENOMEM forgets the buckets. */
int st_query_slide_feed(st_query_slide *c, uint64_t txn, const st_fed_block *b);
void st_query_slide_fed_upto(st_query_slide *c, uint64_t txn);
/* Forgets the buckets (the tap lost commits): read again when asked. */
void st_query_slide_forget(st_query_slide *c);
/* How many times a fed slide read its window from the store (tests). */
unsigned st_query_slide_fills(const st_query_slide *c);

#endif
