/* The optimization loop and its campaign state machine (DESIGN.md):
 * baseline -> analyse the five layers -> validate targets -> stop at
 * PERFORMANCE_OPTIMIZED when all targets are met with no regressions and
 * nothing left open, otherwise dispatch optimizations and validate applied
 * fixes (resolved | ineffective); MAX_ITERATIONS_REACHED after the
 * configured number of iterations with work. */
#include "engine_internal.h"

#include "err.h"
#include "log.h"
#include "query.h"
#include "timeutil.h"
#include "util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static json_t *load_state(st_engine *en)
{
    char *val = NULL;
    size_t len = 0;
    json_t *s = NULL;
    int max_iterations;
    pthread_mutex_lock(&en->snap_mu);
    max_iterations = en->o.max_iterations;
    pthread_mutex_unlock(&en->snap_mu);
    if (st_store_kv_get(en->st, ST_ENGINE_STATE_KEY, &val, &len) == ST_OK) {
        s = json_loadb(val, len, 0, NULL);
        free(val);
    }
    if (s == NULL) {
        s = json_pack("{s:i,s:s,s:i,s:i,s:[]}", "campaign", 1, "status", "OPTIMIZING", "iteration",
                      0, "max_iterations", max_iterations, "history");
    }
    json_object_set_new(s, "max_iterations", json_integer(max_iterations));
    return s;
}

static void set_status(json_t *state, const char *status, int64_t now, const char *note)
{
    const char *old = json_string_value(json_object_get(state, "status"));
    json_t *h = json_object_get(state, "history");
    if (old != NULL && strcmp(old, status) == 0) {
        return;
    }
    json_array_append_new(h, json_pack("{s:I,s:s?,s:s,s:s,s:O}", "unix_ms", (json_int_t)now, "from",
                                       old, "to", status, "note", note, "iteration",
                                       json_object_get(state, "iteration")));
    while (json_array_size(h) > ST_HISTORY_MAX) {
        json_array_remove(h, 0);
    }
    json_object_set_new(state, "status", json_string(status));
    ST_INFO("engine", "campaign %lld: %s (%s)",
            (long long)json_integer_value(json_object_get(state, "campaign")), status, note);
}

/* ---- run statistics ---- */

const double st_engine_run_bucket_le[ST_ENGINE_RUN_BUCKETS] = {0.01, 0.025, 0.05, 0.1, 0.2, 0.5,
                                                               1,    2,     5,    10,  30};

/* The phases after the rules' checks, in a run's order. */
static const char *const tail_phases[] = {"regressions", "targets", "decide", "commit"};

static size_t rule_count(void)
{
    size_t n = 0;
    while (st_rules[n].id != NULL) {
        n++;
    }
    return n;
}

/* A phase's index: rule i, or the ith of tail_phases after the rules;
 * past ST_ENGINE_PHASES_MAX nothing is kept. */
static size_t phase_of_tail(size_t i)
{
    return rule_count() + i;
}

static void phase_add(st_engine *en, size_t phase, int64_t t0_ns)
{
    if (phase < ST_ENGINE_PHASES_MAX) {
        en->phase_s[phase] += (double)(st_time_mono_ns() - t0_ns) / 1e9;
    }
}

static double thread_cpu_s(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) {
        return 0;
    }
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A completed run's figures become the snapshot /metrics reads. */
static void stats_run_done(st_engine *en, double wall_s, double cpu_s)
{
    struct st_engine_stats *st = &en->stats;
    int64_t clock = st_eng_now(en->eng);
    struct st_feed_stats fs = {0};
    size_t b = 0;
    bool fed = st_eng_feed_stats(en->eng, &fs);
    while (b < ST_ENGINE_RUN_BUCKETS && wall_s > st_engine_run_bucket_le[b]) {
        b++;
    }
    pthread_mutex_lock(&en->snap_mu);
    st->runs++;
    st->bucket[b]++;
    st->seconds_sum += wall_s;
    st->last_seconds = wall_s;
    st->last_cpu_seconds = cpu_s;
    st->steps += clock != st->windows_end_ms;
    st->windows_end_ms = clock;
    if (fed) {
        /* a reconfigured engine's feed counts from zero again */
        bool fresh = fs.blocks < en->feed_prev.blocks || fs.lost < en->feed_prev.lost;
        st->feed_blocks += fs.blocks - (fresh ? 0 : en->feed_prev.blocks);
        st->feed_lost += fs.lost - (fresh ? 0 : en->feed_prev.lost);
        st->feed_bytes_peak = ST_MAX(st->feed_bytes_peak, fs.bytes_peak);
        en->feed_prev = fs;
    }
    st->nphase = ST_MIN(phase_of_tail(ST_ARRAY_LEN(tail_phases)), (size_t)ST_ENGINE_PHASES_MAX);
    for (size_t i = 0, r = rule_count(); i < st->nphase; i++) {
        st->phase[i] = i < r ? st_rules[i].id : tail_phases[i - r];
        st->phase_seconds[i] = en->phase_s[i];
    }
    pthread_mutex_unlock(&en->snap_mu);
}

void st_engine_stats(st_engine *en, struct st_engine_stats *out)
{
    pthread_mutex_lock(&en->snap_mu);
    *out = en->stats;
    pthread_mutex_unlock(&en->snap_mu);
}

/* ---- analysis ---- */

static void upsert_all(st_engine *en, const st_rule *r, st_candidates *c, int64_t now)
{
    for (size_t i = 0; i < c->n; i++) {
        /* Kept among the run's records, written when the run commits. */
        json_decref(st_finding_upsert(en, r, r->layer, r->optimization, &c->v[i], now));
    }
}

/* Runs every rule and the regression checks, keeping what they find
 * among the run's records. ST_ECANCELED when the collector is stopping:
 * the rule under way is cut short (it saw only part of its data) and the
 * run is abandoned, its records unwritten. */
static int analyse(st_engine *en, int64_t now)
{
    st_candidates lat = {0};
    st_candidates errs = {0};
    int64_t t0;
    int rv;
    for (const st_rule *r = st_rules; r->id != NULL; r++) {
        st_candidates c = {0};
        if (st_eng_cancelled(en->eng)) {
            return ST_ECANCELED;
        }
        t0 = st_time_mono_ns();
        rv = r->check(en->eng, r, &c);
        phase_add(en, (size_t)(r - st_rules), t0);
        if (st_eng_cancelled(en->eng)) {
            st_candidates_free(&c);
            return ST_ECANCELED;
        }
        if (rv != ST_OK) {
            ST_WARN("engine", "rule %s: %s", r->id, st_strerror(rv));
        }
        upsert_all(en, r, &c, now);
        st_candidates_free(&c);
    }
    t0 = st_time_mono_ns();
    rv = st_regressions_check(en, &lat, &errs);
    phase_add(en, phase_of_tail(0), t0);
    if (rv == ST_OK) {
        upsert_all(en, &st_regression_rules[0], &lat, now);
        upsert_all(en, &st_regression_rules[1], &errs, now);
    }
    st_candidates_free(&lat);
    st_candidates_free(&errs);
    return rv == ST_ECANCELED ? rv : ST_OK;
}

/* Open findings that were not seen again for a while have cleared. */
static void expire(st_engine *en, json_t *all, int64_t now)
{
    int64_t stale = 3 * st_eng_window(en->eng);
    int64_t clock = st_eng_now(en->eng); /* what last_seen is on */
    size_t i;
    json_t *f;
    json_array_foreach(all, i, f)
    {
        const char *s = json_string_value(json_object_get(f, "status"));
        int64_t seen = json_integer_value(json_object_get(f, "last_seen_unix_ms"));
        if (s != NULL && (strcmp(s, "open") == 0 || strcmp(s, "dispatched") == 0) &&
            clock - seen > stale) {
            st_finding_transition(f, "resolved", now, "the condition cleared without a fix");
        }
    }
}

/* ---- validation of applied fixes ---- */

/* The entity's value now: the finding's own measure when it has one,
 * else its rule run again with the threshold lifted so that it reports
 * every entity. NAN when the entity has no data any more. */
/* One value of a measure: {metric, agg} over the window, series filtered
 * by the match list; NAN without data. */
static double measure_one(st_engine *en, const json_t *m, const json_t *matches)
{
    const char *match[ST_QUERY_MAX_MATCHERS];
    size_t n = 0;
    size_t i;
    json_t *x;
    st_answer *out = NULL;
    double v = NAN;
    json_array_foreach(matches, i, x)
    {
        if (n < ST_QUERY_MAX_MATCHERS && json_string_value(x) != NULL) {
            match[n++] = json_string_value(x);
        }
    }
    if (st_eng_query(en->eng, json_string_value(json_object_get(m, "metric")),
                     json_string_value(json_object_get(m, "agg")), NULL, match, n,
                     st_eng_window(en->eng), &out) == ST_OK) {
        v = out->n > 0 ? st_ans_value(&out->rows[0]) : NAN;
    }
    st_answer_unref(out);
    return v;
}

/* The value rule r finds for entity now; NaN when it finds none. */
static double entity_value(st_engine *en, const st_rule *r, const char *entity)
{
    st_candidates c = {0};
    double v = NAN;
    if (r->check(en->eng, r, &c) == ST_OK) {
        for (size_t i = 0; i < c.n; i++) {
            if (strcmp(c.v[i].entity, entity) == 0) {
                v = c.v[i].value;
            }
        }
    }
    st_candidates_free(&c);
    return v;
}

static double measure_again(st_engine *en, const json_t *f)
{
    const json_t *m = json_object_get(f, "measure");
    const char *rule = json_string_value(json_object_get(f, "rule"));
    const char *entity = json_string_value(json_object_get(f, "entity"));
    const st_rule *r = rule != NULL ? st_rule_find(rule) : NULL;
    double v;
    double saved;
    if (m != NULL) {
        const json_t *per = json_object_get(m, "per");
        v = measure_one(en, m, json_object_get(m, "match"));
        /* A ratio: statement time per call, errors per request. */
        return per != NULL ? v / measure_one(en, per, json_object_get(m, "match")) : v;
    }
    if (r == NULL || entity == NULL) {
        return NAN;
    }
    saved = st_eng_threshold(en->eng, r);
    st_eng_set(en->eng, r->id, json_is_true(json_object_get(f, "below")) ? 1e300 : 0);
    v = entity_value(en, r, entity);
    st_eng_set(en->eng, r->id, saved); /* the configured threshold, not the default */
    /* A rule whose threshold also bounds what it reads (the cold-table
     * rule's days: 0 turns it off) measures nothing with it lifted; past
     * its own threshold the entity is still a candidate, and its value
     * still counts. */
    return isnan(v) ? entity_value(en, r, entity) : v;
}

static void verdict(st_engine *en, json_t *f, int64_t now)
{
    double before = json_number_value(json_object_get(f, "detected_value"));
    double thr = json_number_value(json_object_get(f, "threshold"));
    bool below = json_is_true(json_object_get(f, "below"));
    double after = measure_again(en, f);
    double m = en->o.improvement_margin;
    bool improved;
    const char *why;
    if (isnan(after)) {
        improved = true;
        why = "the condition no longer shows in the data";
    } else if (below) {
        improved = after >= before * (1 + m) || after >= thr;
        why = improved ? "improved past the margin" : "not improved past the margin";
    } else {
        improved = after <= before * (1 - m) || after <= thr;
        why = improved ? "improved past the margin" : "not improved past the margin";
    }
    json_object_set_new(
        f, "validation",
        json_pack("{s:f,s:o,s:f,s:f,s:s,s:s,s:I,s:O}", "before", before, "after",
                  isnan(after) ? json_null() : json_real(after), "threshold", thr, "margin", m,
                  "verdict", improved ? "resolved" : "ineffective", "reason", why,
                  "measured_unix_ms", (json_int_t)now, "started_unix_ms",
                  json_object_get(json_object_get(f, "validation"), "started_unix_ms")));
    st_finding_transition(f, improved ? "resolved" : "ineffective", now, why);
    if (!improved && en->o.dispatch != NULL) {
        /* Automation hears about fixes that did not help, to roll back. */
        en->o.dispatch(en->o.dispatch_arg, f);
    }
}

/* applied -> validating -> resolved | ineffective. Returns how many
 * findings moved. The verdict waits until the windows (which end at the
 * run's clock, behind now) have moved validation_ms past the start, so
 * that with validation_ms no shorter than the analysis window they hold
 * only data from after the fix. */
static int validate(st_engine *en, json_t *all, int64_t now)
{
    int64_t clock = st_eng_now(en->eng);
    size_t i;
    json_t *f;
    int moved = 0;
    json_array_foreach(all, i, f)
    {
        const char *s = json_string_value(json_object_get(f, "status"));
        if (s == NULL) {
            continue;
        }
        if (strcmp(s, "applied") == 0) {
            json_object_set_new(f, "validation",
                                json_pack("{s:I,s:O}", "started_unix_ms", (json_int_t)now, "before",
                                          json_object_get(f, "detected_value")));
            st_finding_transition(f, "validating", now, "measuring the fix against the baseline");
            moved++;
        } else if (strcmp(s, "validating") == 0 &&
                   clock - json_integer_value(json_object_get(json_object_get(f, "validation"),
                                                              "started_unix_ms")) >=
                       en->o.validation_ms) {
            verdict(en, f, now);
            moved++;
        }
    }
    return moved;
}

static int dispatch(st_engine *en, json_t *all, int64_t now)
{
    size_t i;
    json_t *f;
    int n = 0;
    json_array_foreach(all, i, f)
    {
        const char *s = json_string_value(json_object_get(f, "status"));
        int rv = ST_OK;
        if (s == NULL || strcmp(s, "open") != 0) {
            continue;
        }
        if (en->o.dispatch != NULL) {
            rv = en->o.dispatch(en->o.dispatch_arg, f);
        }
        /* ST_ENOENT: no automation takes this kind of finding. */
        if (rv == ST_OK || rv == ST_ENOENT) {
            st_finding_transition(f, "dispatched", now,
                                  en->o.dispatch != NULL && rv == ST_OK
                                      ? "handed to automation"
                                      : "no automation takes it; awaiting an SRE");
            n++;
        }
    }
    return n;
}

static int count_status(const json_t *all, const char *status, const char *rule_prefix)
{
    size_t i;
    json_t *f;
    int n = 0;
    json_array_foreach(all, i, f)
    {
        const char *s = json_string_value(json_object_get(f, "status"));
        const char *r = json_string_value(json_object_get(f, "rule"));
        if (s != NULL && (status == NULL ? st_finding_active(f) : strcmp(s, status) == 0) &&
            (rule_prefix == NULL ||
             (r != NULL && strncmp(r, rule_prefix, strlen(rule_prefix)) == 0))) {
            n++;
        }
    }
    return n;
}

/* ---- the campaign ---- */

/* Decides the loop status after analysis; returns true when this run had
 * work (an iteration). */
static bool step(st_engine *en, json_t *state, json_t *all, int64_t now)
{
    bool met = st_targets_all_met(en->targets);
    int regressions = count_status(all, NULL, "regression.");
    int active = count_status(all, NULL, NULL);
    const char *status = json_string_value(json_object_get(state, "status"));
    int64_t it = json_integer_value(json_object_get(state, "iteration"));
    int work;
    if (met && regressions == 0 && active == 0) {
        json_object_del(state, "missed_since_unix_ms");
        json_object_del(state, "missed_runs"); /* what an older version kept */
        set_status(state, "PERFORMANCE_OPTIMIZED", now,
                   "all targets met, no regressions, nothing left open");
        return false;
    }
    if (status != NULL && strcmp(status, "MAX_ITERATIONS_REACHED") == 0) {
        /* Out of iterations: fixes already applied are still judged, but
         * nothing new is dispatched until the targets are met again or an
         * SRE steps in. */
        return validate(en, all, now) > 0;
    }
    if (status != NULL && strcmp(status, "PERFORMANCE_OPTIMIZED") == 0 && active == 0 &&
        regressions == 0) {
        /* A target that dips once on noisy data does not start a campaign;
         * one missed in two runs in a row over different windows (or any
         * finding) does. */
        if (!st_seen_again(en, state, "missed_since_unix_ms",
                           json_integer_value(json_object_get(state, "missed_since_unix_ms")))) {
            return false;
        }
    }
    json_object_del(state, "missed_since_unix_ms");
    json_object_del(state, "missed_runs"); /* what an older version kept */
    if (status != NULL && strcmp(status, "PERFORMANCE_OPTIMIZED") == 0) {
        json_object_set_new(
            state, "campaign",
            json_integer(json_integer_value(json_object_get(state, "campaign")) + 1));
        json_object_set_new(state, "iteration", json_integer(0));
        it = 0;
        set_status(state, "OPTIMIZING", now, "targets missed or findings open");
    }
    if (it >= en->o.max_iterations) {
        validate(en, all, now);
        set_status(state, "MAX_ITERATIONS_REACHED", now,
                   "the optimizations did not bring every target within reach");
        return false;
    }
    work = dispatch(en, all, now) + validate(en, all, now);
    if (work == 0) {
        return false;
    }
    json_object_set_new(state, "iteration", json_integer(it + 1));
    if (it + 1 >= en->o.max_iterations) {
        set_status(state, "MAX_ITERATIONS_REACHED", now,
                   "the optimizations did not bring every target within reach");
    }
    return true;
}

/* The measuring part of a run: analysis and the targets. It is most of a
 * run's time and may be abandoned; *targets is set only on success. */
static int measure_run(st_engine *en, int64_t now, json_t **targets)
{
    json_t *t;
    int64_t t0;
    int rv = analyse(en, now);
    if (rv != ST_OK) {
        return rv;
    }
    t0 = st_time_mono_ns();
    t = st_targets_validate(en);
    phase_add(en, phase_of_tail(1), t0);
    if (st_eng_cancelled(en->eng)) {
        json_decref(t); /* some targets were never measured */
        return ST_ECANCELED;
    }
    *targets = t;
    return ST_OK;
}

/* What a run decides once it has measured: expiry, the campaign step and
 * the ranking, on the run's records. Returns whether it had work. */
static bool decide(st_engine *en, int64_t now)
{
    json_t *state = load_state(en);
    json_t *all = st_run_findings(en);
    bool work;
    expire(en, all, now);
    work = step(en, state, all, now);
    st_findings_rank(en, all);
    json_object_set_new(state, "updated_unix_ms", json_integer(now));
    /* what the run judged: windows ending here (st_engine_clock) */
    json_object_set_new(state, "windows_end_unix_ms", json_integer(st_eng_now(en->eng)));
    json_object_set_new(state, "last_run_had_work", json_boolean(work));
    st_run_put(en, ST_ENGINE_STATE_KEY, state);
    json_decref(state);
    json_decref(all);
    return work;
}

bool st_seen_again(st_engine *en, json_t *into, const char *key, json_int_t since)
{
    int64_t clock = st_eng_now(en->eng);
    json_object_set_new(into, key, json_integer(since > 0 ? since : clock));
    return since > 0 && since != clock;
}

/* engine.step, or by default the longest whole-second divisor of a
 * minute up to a fifth of the window: windows then end on minutes (or on
 * parts of one), where rollups and the step questions' buckets align. */
static int64_t step_of(const st_engine *en)
{
    static const int64_t divisors[] = {60, 30, 20, 15, 12, 10, 6, 5, 4, 3, 2, 1};
    int64_t want = (int64_t)st_eng_window(en->eng) / 5;
    if (en->o.step_ms > 0) {
        return en->o.step_ms;
    }
    for (size_t i = 0; i < ST_ARRAY_LEN(divisors); i++) {
        if (divisors[i] * 1000 <= want) {
            return divisors[i] * 1000;
        }
    }
    return 1000;
}

/* The clock a run's windows end at: now less the settle, down to a
 * multiple of the step. Frames of the last seconds are still on their
 * way (agents ship every few seconds, drain spools after an outage), so
 * a window ending at now would judge a partial last bucket; and runs
 * within one step ask the same questions over the same windows, which
 * the rule context then answers from the first run's answers (eng.c). */
int64_t st_engine_clock(const st_engine *en, int64_t now)
{
    int64_t step = step_of(en);
    int64_t t = now - (en->o.settle_ms > 0 ? en->o.settle_ms : step / 2);
    return t - ((t % step) + step) % step;
}

int st_engine_run(st_engine *en, int64_t now)
{
    json_t *targets = NULL;
    bool work = false;
    int64_t t0 = st_time_mono_ns();
    double cpu0 = thread_cpu_s();
    int64_t tp;
    int rv;
    pthread_mutex_lock(&en->mu);
    memset(en->phase_s, 0, sizeof(en->phase_s));
    st_eng_set_now(en->eng, st_engine_clock(en, now));
    /* The rules, targets and regressions ask some questions several
     * times, and some of one metric and window with several aggs. */
    st_eng_share_begin(en->eng);
    if ((rv = st_run_begin(en)) == ST_OK && (rv = measure_run(en, now, &targets)) == ST_OK) {
        /* From here the run decides and records; it is short and finishes
         * even when a stop comes, so that no verdict rests on a query cut
         * off. */
        en->finishing = true;
        pthread_mutex_lock(&en->snap_mu);
        json_decref(en->targets);
        en->targets = targets;
        pthread_mutex_unlock(&en->snap_mu);
        tp = st_time_mono_ns();
        work = decide(en, now);
        phase_add(en, phase_of_tail(2), tp);
        tp = st_time_mono_ns();
        st_run_commit(en);
        phase_add(en, phase_of_tail(3), tp);
        en->finishing = false;
    }
    st_eng_share_end(en->eng);
    st_run_end(en); /* an abandoned run's records are dropped unwritten */
    if (rv == ST_OK) {
        stats_run_done(en, (double)(st_time_mono_ns() - t0) / 1e9, thread_cpu_s() - cpu0);
    } else if (rv == ST_ECANCELED) {
        pthread_mutex_lock(&en->snap_mu);
        en->stats.abandoned++;
        pthread_mutex_unlock(&en->snap_mu);
    }
    pthread_mutex_unlock(&en->mu);
    if (rv != ST_OK) {
        st_log(rv == ST_ECANCELED ? ST_LOG_INFO : ST_LOG_WARN, "engine", "run abandoned: %s",
               st_strerror(rv));
        return rv;
    }
    return work ? 1 : ST_OK;
}

/* The rule context's cancel question: asked before every query. */
static bool run_cancelled(void *arg)
{
    st_engine *en = arg;
    return atomic_load(&en->stopping) && !en->finishing;
}

/* The engine's runs at fleet size take seconds of CPU; on a small
 * collector they must not take it from ingest and the API. Linux applies
 * a nice value to the calling thread alone. */
#define ENGINE_NICE 10

static void *engine_main(void *arg)
{
    st_engine *en = arg;
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), ENGINE_NICE) != 0) {
        ST_DEBUG("engine", "cannot lower the engine thread's priority: %s", strerror(errno));
    }
    while (!atomic_load(&en->stopping)) {
        int rv = st_engine_run(en, st_time_wall_ms());
        int64_t wait = rv == 1 ? en->o.pause_ms : en->o.interval_ms;
        for (int64_t t = 0; t < wait && !atomic_load(&en->stopping); t += 100) {
            st_time_sleep_ms(100);
        }
    }
    return NULL;
}

/* engine: {interval, pause, max_iterations, validation_window, margin,
 * window, baseline_window, min_samples} and rules: {rule_id: threshold}. */
static int apply_rules(st_engine *en, const st_cfg_doc *doc, const st_cfg_node *node,
                       st_cfg_error *err)
{
    if (node == NULL || st_cfg_is_null(node)) {
        return ST_OK;
    }
    if (st_cfg_node_type(node) != ST_CFG_NODE_MAP) {
        return st_cfg_fail(err, doc, node, "rules", "a mapping of rule ids to thresholds");
    }
    for (size_t i = 0; i < st_cfg_map_len(node); i++) {
        const char *k = st_cfg_map_key(node, i);
        const char *v = st_cfg_scalar(st_cfg_map_value(node, i));
        double d;
        if (st_rule_find(k) == NULL) {
            return st_cfg_fail(err, doc, st_cfg_map_value(node, i), k, "unknown rule");
        }
        if (v == NULL || st_parse_double(v, &d) != ST_OK) {
            return st_cfg_fail(err, doc, st_cfg_map_value(node, i), k,
                               "threshold '%s' is not a number", v ? v : "");
        }
        st_eng_set(en->eng, k, d);
    }
    return ST_OK;
}

/* A rule context with the settings of opts, targets and rules applied. */
static int build_eng(st_engine *en, const struct st_engine_opts *opts, const st_cfg_doc *doc,
                     const st_cfg_node *targets, const st_cfg_node *rules, st_eng **out,
                     st_cfg_error *err)
{
    st_eng *old = en->eng;
    int rv = st_eng_new(en->st, st_time_wall_ms(), &en->eng);
    if (rv == ST_OK) {
        st_eng_set_cancel(en->eng, run_cancelled, en);
        if (opts->window_ms > 0) {
            st_eng_set(en->eng, "analysis_window_ms", (double)opts->window_ms);
        }
        if (opts->baseline_window_ms > 0) {
            st_eng_set(en->eng, "baseline_window_ms", (double)opts->baseline_window_ms);
        }
        if (opts->min_samples > 0) {
            st_eng_set(en->eng, "min_samples", (double)opts->min_samples);
        }
        if (opts->leak_window_ms > 0) {
            st_eng_set(en->eng, "leak_window_ms", (double)opts->leak_window_ms);
        }
        if ((rv = st_engine_apply_targets(en, doc, targets, err)) == ST_OK) {
            rv = apply_rules(en, doc, rules, err);
        }
    }
    *out = en->eng;
    en->eng = old;
    if (rv != ST_OK) {
        st_eng_free(*out);
        *out = NULL;
    }
    return rv;
}

int st_engine_new(st_store *st, const struct st_engine_opts *opts, const st_cfg_doc *doc,
                  const st_cfg_node *targets, const st_cfg_node *rules, st_engine **out,
                  st_cfg_error *err)
{
    st_engine *en = calloc(1, sizeof(*en));
    st_eng *fresh = NULL;
    int rv;
    if (en == NULL) {
        return ST_ENOMEM;
    }
    en->st = st;
    en->o = *opts;
    en->o.interval_ms = opts->interval_ms > 0 ? opts->interval_ms : 10000;
    en->o.pause_ms = opts->pause_ms > 0 ? opts->pause_ms : 2000;
    en->o.max_iterations =
        opts->max_iterations > 0 ? opts->max_iterations : ST_ENGINE_MAX_ITERATIONS;
    en->o.validation_ms = opts->validation_ms > 0 ? opts->validation_ms : 5 * 60 * 1000;
    en->o.improvement_margin = opts->improvement_margin > 0 ? opts->improvement_margin : 0.2;
    snprintf(en->name, sizeof(en->name), "%s", opts->collector_name ? opts->collector_name : "");
    pthread_mutex_init(&en->mu, NULL);
    pthread_mutex_init(&en->snap_mu, NULL);
    en->pending = json_object();
    if ((rv = build_eng(en, opts, doc, targets, rules, &fresh, err)) != ST_OK) {
        st_engine_free(en);
        return rv;
    }
    en->eng = fresh;
    *out = en;
    return ST_OK;
}

int st_engine_reconfigure(st_engine *en, const struct st_engine_opts *opts, const st_cfg_doc *doc,
                          const st_cfg_node *targets, const st_cfg_node *rules, st_cfg_error *err)
{
    st_eng *fresh = NULL;
    int rv;
    pthread_mutex_lock(&en->mu);
    if ((rv = build_eng(en, opts, doc, targets, rules, &fresh, err)) == ST_OK) {
        st_eng_free(en->eng);
        en->eng = fresh;
        pthread_mutex_lock(&en->snap_mu);
        en->o.max_iterations =
            opts->max_iterations > 0 ? opts->max_iterations : en->o.max_iterations;
        en->o.validation_ms = opts->validation_ms > 0 ? opts->validation_ms : en->o.validation_ms;
        en->o.improvement_margin =
            opts->improvement_margin > 0 ? opts->improvement_margin : en->o.improvement_margin;
        en->o.step_ms = opts->step_ms;
        en->o.settle_ms = opts->settle_ms;
        pthread_mutex_unlock(&en->snap_mu);
    }
    pthread_mutex_unlock(&en->mu);
    return rv;
}

st_eng *st_engine_eng(st_engine *en)
{
    return en->eng;
}

int st_engine_start(st_engine *en)
{
    if (pthread_create(&en->thread, NULL, engine_main, en) != 0) {
        return ST_ENOMEM;
    }
    en->started = true;
    return ST_OK;
}

void st_engine_request_stop(st_engine *en)
{
    if (en != NULL) {
        atomic_store(&en->stopping, true);
    }
}

void st_engine_stop(st_engine *en)
{
    if (en == NULL || !en->started) {
        return;
    }
    atomic_store(&en->stopping, true);
    pthread_join(en->thread, NULL);
    en->started = false;
}

void st_engine_free(st_engine *en)
{
    if (en == NULL) {
        return;
    }
    st_engine_stop(en);
    st_eng_free(en->eng);
    st_run_forget(en);
    json_decref(en->targets);
    json_decref(en->pending);
    pthread_mutex_destroy(&en->mu);
    pthread_mutex_destroy(&en->snap_mu);
    free(en);
}

/* ---- API ---- */

/* Reads only the committed store and the snapshot under snap_mu, never
 * en->mu: a run at fleet size holds that for seconds. */
json_t *st_engine_status(st_engine *en)
{
    json_t *state;
    json_t *all;
    json_t *targets;
    state = load_state(en);
    all = st_findings_all(en);
    pthread_mutex_lock(&en->snap_mu);
    targets = json_incref(en->targets);
    pthread_mutex_unlock(&en->snap_mu);
    json_object_set_new(state, "targets", targets != NULL ? targets : json_array());
    json_object_set_new(state, "findings",
                        json_pack("{s:i,s:i,s:i,s:i,s:i,s:i}", "active",
                                  count_status(all, NULL, NULL), "open",
                                  count_status(all, "open", NULL), "dispatched",
                                  count_status(all, "dispatched", NULL), "validating",
                                  count_status(all, "validating", NULL), "resolved",
                                  count_status(all, "resolved", NULL), "ineffective",
                                  count_status(all, "ineffective", NULL)));
    json_object_set_new(state, "collector", json_string(en->name));
    json_decref(all);
    return state;
}

static int by_priority(const void *a, const void *b)
{
    double x = json_number_value(json_object_get(*(json_t *const *)a, "priority"));
    double y = json_number_value(json_object_get(*(json_t *const *)b, "priority"));
    return x < y ? 1 : (x > y ? -1 : 0);
}

json_t *st_engine_findings(st_engine *en, const char *status, const char *layer, size_t limit)
{
    json_t *all = st_findings_all(en);
    json_t *out = json_array();
    json_t **v = calloc(json_array_size(all) + 1, sizeof(*v));
    size_t n = 0;
    size_t i;
    json_t *f;
    if (v == NULL || out == NULL) {
        free(v);
        json_decref(all);
        json_decref(out);
        return NULL;
    }
    json_array_foreach(all, i, f)
    {
        const char *s = json_string_value(json_object_get(f, "status"));
        const char *l = json_string_value(json_object_get(f, "layer"));
        if ((status == NULL || (s && strcmp(s, status) == 0)) &&
            (layer == NULL || (l && strcmp(l, layer) == 0))) {
            v[n++] = f;
        }
    }
    qsort(v, n, sizeof(*v), by_priority);
    for (i = 0; i < n && (limit == 0 || i < limit); i++) {
        json_object_del(v[i], "history");
        json_array_append(out, v[i]);
    }
    free(v);
    json_decref(all);
    return out;
}

json_t *st_engine_finding(st_engine *en, const char *id)
{
    return st_finding_load(en, id);
}

int st_engine_callback(st_engine *en, const char *id, const char *action, const char *note)
{
    json_t *f;
    const char *s;
    int64_t now = st_time_wall_ms();
    int rv = ST_OK;
    pthread_mutex_lock(&en->mu);
    if ((f = st_finding_load(en, id)) == NULL) {
        pthread_mutex_unlock(&en->mu);
        return ST_ENOENT;
    }
    s = json_string_value(json_object_get(f, "status"));
    if (strcmp(action, "ack") == 0) {
        json_object_set_new(f, "acknowledged_unix_ms", json_integer(now));
        json_array_append_new(json_object_get(f, "history"),
                              json_pack("{s:I,s:s,s:s?}", "unix_ms", (json_int_t)now, "event",
                                        "acknowledged", "note", note));
    } else if (strcmp(action, "note") == 0) {
        json_array_append_new(
            json_object_get(f, "history"),
            json_pack("{s:I,s:s,s:s?}", "unix_ms", (json_int_t)now, "event", "note", "note", note));
    } else if (strcmp(action, "applied") == 0 && s != NULL &&
               (strcmp(s, "open") == 0 || strcmp(s, "dispatched") == 0)) {
        st_finding_transition(f, "applied", now, note ? note : "fix applied");
    } else if (strcmp(action, "dismiss") == 0 && s != NULL && strcmp(s, "dismissed") != 0) {
        st_finding_transition(f, "dismissed", now, note ? note : "dismissed");
    } else {
        rv = ST_EINVAL;
    }
    if (rv == ST_OK) {
        rv = st_finding_save(en, f);
    }
    json_decref(f);
    pthread_mutex_unlock(&en->mu);
    return rv;
}

struct pin_ctx {
    st_engine *en;
    size_t n;
    int64_t now;
};

static int pin_one(void *arg, const char *key, const char *val, size_t len)
{
    struct pin_ctx *c = arg;
    json_t *b = json_loadb(val, len, 0, NULL);
    char *text;
    if (b == NULL) {
        return 0;
    }
    json_object_set_new(b, "pinned", json_true());
    json_object_set_new(b, "pinned_unix_ms", json_integer(c->now));
    if ((text = json_dumps(b, JSON_COMPACT)) != NULL &&
        st_store_kv_put(c->en->st, key, text, strlen(text)) == ST_OK) {
        c->n++;
    }
    free(text);
    json_decref(b);
    return 0;
}

int st_engine_pin_baselines(st_engine *en, int64_t now, size_t *pinned)
{
    struct pin_ctx c = {en, 0, now};
    int rv;
    pthread_mutex_lock(&en->mu);
    rv = st_store_kv_scan(en->st, ST_BASELINE_PREFIX, pin_one, &c);
    pthread_mutex_unlock(&en->mu);
    *pinned = c.n;
    return rv;
}
