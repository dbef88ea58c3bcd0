/* The optimization loop: every run captures baselines, runs the five
 * layers' analyzers and the regression checks, keeps findings (deduplicated
 * per rule and entity, with history), ranks and links them across layers,
 * validates the targets, dispatches optimizations and validates applied
 * fixes against their baseline. Campaign state and findings live in the
 * store, so they survive restarts. */
#ifndef ST_ENGINE_H
#define ST_ENGINE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "rules.h"
#include "store.h"

#define ST_ENGINE_MAX_ITERATIONS 10

typedef struct st_engine st_engine;

/* Dispatches one finding (JSON, borrowed) to automation. Returns ST_OK when
 * handed over, ST_ENOENT when no automation takes it (both: the finding
 * becomes `dispatched`), another error to try again next run. */
typedef int (*st_dispatch_fn)(void *arg, const json_t *finding);

struct st_engine_opts {
    int64_t interval_ms;       /* between runs when idle; 0: 10 s */
    int64_t pause_ms;          /* between loop iterations with work; 0: 2 s */
    int max_iterations;        /* per campaign; 0: 10 */
    int64_t validation_ms;     /* how long an applied fix is measured; 0: 5 min */
    double improvement_margin; /* relative improvement that counts; 0: 0.2 */
    st_dispatch_fn dispatch;   /* NULL: findings are marked dispatched locally */
    void *dispatch_arg;
    const char *collector_name; /* named in every finding */
    int64_t window_ms;          /* analysis window; 0: 5 min */
    int64_t baseline_window_ms; /* rolling baseline; 0: 1 h */
    int64_t min_samples;        /* before regressions are judged; 0: 50 */
    int64_t leak_window_ms;     /* RSS history the leak rule fits; 0: 30 min */
    int64_t step_ms;            /* windows end on its multiples; 0: <= window / 5, divides 1 min */
    int64_t settle_ms;          /* a step's end waits this for late frames; 0: step / 2 */
};

/* Builds the engine; targets/engine/rules settings come from the
 * collector.yaml nodes (may be NULL) and are validated here, errors naming
 * file, line and key. */
int st_engine_new(st_store *st, const struct st_engine_opts *opts, const st_cfg_doc *doc,
                  const st_cfg_node *targets, const st_cfg_node *rules, st_engine **out,
                  st_cfg_error *err);
int st_engine_start(st_engine *en);
/* Applies new targets, rule thresholds and windows (SIGHUP) between runs;
 * on an error the old settings stay. */
int st_engine_reconfigure(st_engine *en, const struct st_engine_opts *opts, const st_cfg_doc *doc,
                          const st_cfg_node *targets, const st_cfg_node *rules, st_cfg_error *err);
/* The rule context, for settings (windows, sample minimums) and tests. */
st_eng *st_engine_eng(st_engine *en);
/* Asks a run under way to stop at its next query or rule and returns at
 * once; runs from then on return ST_ECANCELED. The stop of a collector
 * calls it first so the engine winds down while the rest stops. */
void st_engine_request_stop(st_engine *en);
/* Requests the stop and waits for the engine thread to end. */
void st_engine_stop(st_engine *en);
void st_engine_free(st_engine *en);

/* One engine run at now_ms (the thread calls this; tests call it directly).
 * A run keeps its findings, baselines and loop state in memory and writes
 * those that changed at its end. Returns 1 when the run had work, ST_OK
 * when not, and ST_ECANCELED when a stop was requested during its
 * analysis: the run is abandoned then and writes nothing (the targets of
 * /v1/status stay those of the last run). Once the run has measured, it
 * finishes (its decisions take little time). */
int st_engine_run(st_engine *en, int64_t now_ms);
/* Where the windows of a run at now_ms end (engine.step, engine.settle). */
int64_t st_engine_clock(const st_engine *en, int64_t now_ms);

/* ---- API ---- */

/* What the runs cost, for /metrics: counts, a histogram of run wall time,
 * and where the last completed run spent its time (each rule's check, then
 * the regressions, the targets, deciding and the commit). */
#define ST_ENGINE_RUN_BUCKETS 11
#define ST_ENGINE_PHASES_MAX 48
extern const double st_engine_run_bucket_le[ST_ENGINE_RUN_BUCKETS];
struct st_engine_stats {
    uint64_t runs;                              /* completed (measured, decided and committed) */
    uint64_t abandoned;                         /* cut short by a stop */
    uint64_t bucket[ST_ENGINE_RUN_BUCKETS + 1]; /* completed runs by wall time; last: +Inf */
    double seconds_sum;
    double last_seconds;     /* wall */
    double last_cpu_seconds; /* the engine thread's CPU */
    uint64_t steps;          /* completed runs whose windows had moved (a step's first) */
    int64_t windows_end_ms;  /* the last completed run's clock (st_engine_clock); 0: none */
    /* The commits' points the kept windows took (feed.h): blocks, times
     * commits were lost (the windows then read the store again), and the
     * most bytes that waited between two runs. */
    uint64_t feed_blocks;
    uint64_t feed_lost;
    uint64_t feed_bytes_peak;
    size_t nphase;
    const char *phase[ST_ENGINE_PHASES_MAX]; /* static names */
    double phase_seconds[ST_ENGINE_PHASES_MAX];
};
/* A snapshot; never waits for a run. */
void st_engine_stats(st_engine *en, struct st_engine_stats *out);

/* {status, iteration, max_iterations, campaign, targets: [...], counts}. */
json_t *st_engine_status(st_engine *en);
/* Findings filtered by status/layer (NULL: all), highest priority first. */
json_t *st_engine_findings(st_engine *en, const char *status, const char *layer, size_t limit);
/* One finding with its history; NULL when unknown. */
json_t *st_engine_finding(st_engine *en, const char *id);
/* SRE and automation callbacks: "ack", "applied", "dismiss", and "note"
 * (a history entry, for agent action results). ST_ENOENT for
 * an unknown id, ST_EINVAL for a transition the state does not allow. */
int st_engine_callback(st_engine *en, const char *id, const char *action, const char *note);
/* Pins the current rolling baselines (before a change). Returns how many. */
int st_engine_pin_baselines(st_engine *en, int64_t now_ms, size_t *pinned);

#endif
