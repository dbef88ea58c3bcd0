/* The analyzers: one table of rules per layer (database, function,
 * frontend, realtime, infrastructure), each rule one row: id, layer,
 * severity, optimization type, default threshold, and a check that turns
 * the aggregated data into candidate findings with evidence and a concrete
 * implementation payload. Rules read data only through st_eng_query (the
 * same engine as GET /v1/query) and never touch the store directly. */
#ifndef ST_ENGINE_RULES_H
#define ST_ENGINE_RULES_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "query.h"
#include "store.h"

enum st_severity { ST_SEV_LOW = 1, ST_SEV_MEDIUM, ST_SEV_HIGH, ST_SEV_CRITICAL };

#define ST_ENTITY_MAX 256
#define ST_SUMMARY_MAX 512
#define ST_MAX_CANDIDATES 4096

/* What a rule found for one entity. The engine deduplicates by (rule,
 * entity), keeps history, ranks and links findings. */
typedef struct st_candidate {
    char entity[ST_ENTITY_MAX]; /* stable identity: "table=orders", "route=/api/cart host=e1" */
    json_t *labels;             /* the entity as labels: {"table": "orders", "host": "db1"} */
    enum st_severity severity;
    double value;         /* measured */
    double threshold;     /* the threshold it crossed */
    bool below;           /* true when lower is worse (hit ratios, stability) */
    double traffic_share; /* 0..1: share of traffic or hosts touched */
    char summary[ST_SUMMARY_MAX];
    json_t *evidence;       /* {series, values, baseline, threshold, window, hosts} */
    json_t *implementation; /* the concrete change, usable as is */
    /* Optional: how to measure the entity again after a fix, for the
     * validation verdict: {"metric", "agg", "match": ["k=v", ...]}. Without
     * it the engine re-runs the rule with its threshold lifted. */
    json_t *measure;
} st_candidate;

typedef struct st_candidates {
    st_candidate *v;
    size_t n;
    size_t cap;
} st_candidates;

/* The context rules run in: the store, the clock, the analysis window and
 * configured thresholds. Opaque to rules. */
typedef struct st_eng st_eng;

struct st_rule;
typedef int (*st_rule_check)(st_eng *e, const struct st_rule *r, st_candidates *out);

typedef struct st_rule {
    const char *id;            /* "database.seq_scan_index" */
    const char *layer;         /* database function frontend realtime infrastructure */
    enum st_severity severity; /* default severity of its findings */
    const char *optimization;  /* ADD_INDEX, OPTIMIZE_QUERY, ... (DESIGN.md) */
    double threshold;          /* default, overridable in collector.yaml rules: {id: value} */
    const char *unit;          /* of the threshold: "s", "B", "ratio", "1/s", "" */
    const char *description;
    st_rule_check check;
} st_rule;

/* All rules, terminated by a row with id NULL. */
extern const st_rule st_rules[];
const st_rule *st_rule_find(const char *id);

/* ---- what rules may call ---- */

/* Runs a query over [now - window_ms, now) with one value per group (no
 * step): returns the groups of the /v1/query answer as arrays (answer.h:
 * rows with labels and points; st_ans_value is a row's one value). by and
 * match may be NULL; match holds nmatch "k=v" / "k!=v" / "k=~re" strings.
 * The caller drops *out (st_answer_unref).
 * ST_ENOENT (with *out an empty answer) never: a metric without data
 * simply has no series. ST_ECANCELED (no answer) once the run is being
 * abandoned (st_eng_set_cancel); rules pass it on. */
int st_eng_query(st_eng *e, const char *metric, const char *agg, const char *by,
                 const char *const *match, size_t nmatch, int64_t window_ms, st_answer **out);
/* The same with a step: series of points over the window. */
int st_eng_query_steps(st_eng *e, const char *metric, const char *agg, const char *by,
                       const char *const *match, size_t nmatch, int64_t window_ms, int64_t step_ms,
                       st_answer **out);
/* st_eng_query_steps's answer group by group, without building it (see
 * st_query_fold_each): for rules that read thousands of groups of tens of
 * points each. It shares the run's folds and answers of the same question
 * (not the merging of another grouping's groups that st_eng_query does
 * for questions without by). Errors as st_eng_query; ST_ETOOBIG past the
 * series limit. */
int st_eng_query_steps_each(st_eng *e, const char *metric, const char *agg, const char *by,
                            const char *const *match, size_t nmatch, int64_t window_ms,
                            int64_t step_ms, st_query_group_fn fn, void *arg);
/* An answer already built (st_eng_query_steps), walked the same way. */
int st_eng_answer_each(const st_answer *ans, st_query_group_fn fn, void *arg);
/* The effective threshold of a rule (configuration or default). */
double st_eng_threshold(st_eng *e, const st_rule *r);
/* A named engine setting (targets and windows), e.g. "memory_peak_bytes". */
double st_eng_setting(st_eng *e, const char *name);
int64_t st_eng_now(st_eng *e);
int64_t st_eng_window(st_eng *e); /* the analysis window in ms (default 5 min) */

/* Takes ownership of c's JSON; ST_ETOOBIG past ST_MAX_CANDIDATES. */
int st_candidates_add(st_candidates *out, st_candidate *c);
void st_candidates_free(st_candidates *c);
/* Starts a candidate: zeroed, labels/evidence objects created. */
void st_candidate_init(st_candidate *c);

/* For tests and benchmarks: a rule context over a store at a fixed time
 * with the default settings. Free with st_eng_free. */
int st_eng_new(st_store *st, int64_t now_ms, st_eng **out);
struct st_feed_stats;
/* The feed's figures (feed.h); false when the engine has none (another
 * reader holds the store's tap). */
bool st_eng_feed_stats(st_eng *e, struct st_feed_stats *out);
void st_eng_free(st_eng *e);
/* Overrides a rule threshold (by rule id) or a setting by name. */
int st_eng_set(st_eng *e, const char *name, double value);
/* Moves the context's clock (the engine does this every run). */
void st_eng_set_now(st_eng *e, int64_t now_ms);
/* Lets a long run be abandoned (a stopping collector): fn is asked before
 * every query, and once it returns true queries fail with ST_ECANCELED
 * and st_eng_cancelled says so. NULL fn: never cancelled. */
typedef bool (*st_eng_cancel_fn)(void *arg);
void st_eng_set_cancel(st_eng *e, st_eng_cancel_fn fn, void *arg);
bool st_eng_cancelled(st_eng *e);
/* Between these, the context answers a question asked again from the
 * answer it gave (one engine run asks some several times, from several
 * rules), and a question with another agg from the same scan when its
 * folded buckets hold that agg: one scan per metric, window and grouping.
 * Answers then show the store as of the first asking, which within a run
 * is what the run should judge. Outside, every question reads the store.
 * Answers are shared: callers must not change them (the lookup index
 * st_answer_find keeps in an answer is the same for everyone).
 * The answers (and the folds walked group by group) outlive the run: the
 * next st_eng_share_begin at the same clock keeps those of the metrics no
 * commit since wrote a point before the clock to, so runs within one
 * engine step read the store only for what changed. At another clock only
 * the answers of windows that ended before the last one are kept, while
 * no point was written into them (the cold-table rule's closed days); an
 * answer a run did not ask for goes at its end. st_eng_set_max_series
 * drops them all. Slides are fed the commits' points (feed.h) when the
 * store's tap is free: the first run takes it. */
void st_eng_share_begin(st_eng *e);
/* Lowers the series limit of the engine's answers (tests: the per-host
 * fallback of a question too large for one answer). 0 restores it. */
void st_eng_set_max_series(st_eng *e, size_t n);
/* Ends the run's sharing (safe to call when not sharing); outside it,
 * every question reads the store. */
void st_eng_share_end(st_eng *e);

#endif
