/* Internal to collector/engine: the engine object and the helpers its
 * files share (findings, targets, baselines, the loop). */
#ifndef ST_ENGINE_INTERNAL_H
#define ST_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "engine.h"
#include "feed.h"

#define ST_FINDING_PREFIX "finding/"
#define ST_BASELINE_PREFIX "baseline/"
#define ST_ENGINE_STATE_KEY "engine/state"
#define ST_HISTORY_MAX 64
/* The moving fields of the findings whose texts hold older ones
 * (records.c): readers lay it over the texts with st_seen_patch. */
#define ST_SEEN_KEY "engine/seen"

struct st_engine {
    st_store *st;
    st_eng *eng;
    struct st_feed_stats feed_prev; /* its feed's figures at the last run (stats_run_done) */
    struct st_engine_opts o;
    pthread_mutex_t mu; /* one run or callback at a time: findings are read-modify-write */
    /* What /v1/status reads besides the store — targets and the options —
     * so that it answers at once instead of waiting out a run under mu. */
    pthread_mutex_t snap_mu;
    pthread_t thread;
    bool started;
    atomic_bool stopping;
    bool finishing;      /* the run is past its measuring part (engine thread, under mu) */
    json_t *targets;     /* the last validation, for /v1/status (under snap_mu) */
    json_t *pending;     /* regression ids seen last run: they open on the second */
    struct st_run *run;  /* the records of the run under way (records.c); NULL between runs */
    struct st_run *kept; /* the last run's findings, committed whole: the next one's start */
    struct st_engine_stats stats;         /* under snap_mu */
    double phase_s[ST_ENGINE_PHASES_MAX]; /* the run under way (engine thread, under mu) */
    size_t run_writes;         /* records the last run wrote (for tests and benchmarks) */
    size_t run_finding_writes; /* of which findings */
    char name[128];
};

/* findings.c */
void st_finding_id(const char *rule, const char *entity, char out[17]);
/* The store's finding of an id (new ref), or NULL; for the API. */
json_t *st_finding_load(st_engine *en, const char *id);
/* Writes a finding to the store at once (callbacks, outside runs, under mu);
 * the next run loads the findings from the store again. */
int st_finding_save(st_engine *en, json_t *f);
void st_finding_transition(json_t *f, const char *status, int64_t now, const char *note);
bool st_finding_active(const json_t *f);
/* Creates or refreshes the finding of a candidate among the run's
 * records; returns it (new ref). */
json_t *st_finding_upsert(st_engine *en, const st_rule *r, const char *layer, const char *opt,
                          st_candidate *c, int64_t now);
/* All findings in the store (array, new ref); for the API. */
json_t *st_findings_all(st_engine *en);
/* Scores and links active findings, in place (the run writes them). */
void st_findings_rank(st_engine *en, json_t *all);
/* A condition that must hold over two different windows (the runs within
 * one step judge the same ones): records in into[key] the clock it was
 * first seen at (since, or this run's clock when since is 0) and says
 * whether this run's clock is another one (a clock set back counts). */
bool st_seen_again(st_engine *en, json_t *into, const char *key, json_int_t since);

/* records.c: a run's records, held until it commits. Only the run (under
 * mu) uses them; outside a run, and for the API, the store is the truth. */
struct st_run;
/* Loads every finding; the run reads and changes them in memory. */
int st_run_begin(st_engine *en);
/* Drops the run's records, written or not. */
void st_run_end(st_engine *en);
/* The finding of an id (borrowed), or NULL. */
json_t *st_run_finding(st_engine *en, const char *id);
/* Adds a new finding (a reference is taken). */
int st_run_add_finding(st_engine *en, const char *id, json_t *f);
/* All findings in store order (array of borrowed-then-held references). */
json_t *st_run_findings(st_engine *en);
/* Another record (baseline, loop state) as the run sees it, new ref or NULL. */
json_t *st_run_get(st_engine *en, const char *key);
/* Sets a record (a reference is taken); written at commit. */
int st_run_put(st_engine *en, const char *key, json_t *rec);
/* Writes the findings that changed and every other record put. */
int st_run_commit(st_engine *en);
/* Drops the findings kept from the last run: the store's are about to
 * change outside a run (under mu). */
void st_run_forget(st_engine *en);
/* The seen record (NULL: none) and laying it over a finding read from
 * the store. */
json_t *st_seen_load(st_engine *en);
void st_seen_patch(json_t *f, const json_t *seen);

/* checks.c */
/* Validates every target: array of {name, scope, target, value, met, unit}. */
json_t *st_targets_validate(st_engine *en);
bool st_targets_all_met(const json_t *targets);
/* Captures rolling baselines and runs the regression checks: latency
 * candidates into lat, error-rate candidates into errs. */
int st_regressions_check(st_engine *en, st_candidates *lat, st_candidates *errs);
extern const st_rule st_regression_rules[];
int st_engine_apply_targets(st_engine *en, const st_cfg_doc *doc, const st_cfg_node *targets,
                            st_cfg_error *err);

#endif
