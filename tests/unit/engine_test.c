/* The engine: regressions against pinned baselines (1.2x p95 -> HIGH, 2x
 * errors -> CRITICAL), no flapping on noisy healthy data, cause-before-
 * symptom ranking, the campaign state machine and its survival across a
 * restart. Data goes through the real store and query engine. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "engine.h"
#include "engine_internal.h" /* run_writes */
#include "err.h"
#include "frame.h"
#include "sketch.h"
#include "store.h"
#include "util.h"
#include "tmpdir.h"
#include "testframe.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIN 60000LL
#define T0 1800000000000LL /* aligned to the hour */

static char dir[64];
static st_store *st;
static uint64_t seqs[8];

static int setup(void **state)
{
    struct st_store_opts o = {.dir = dir, .no_sync = true};
    (void)state;
    assert_non_null(st_test_mkdtemp(dir, sizeof(dir), "engine"));
    memset(seqs, 0, sizeof(seqs));
    return st_store_open(&o, &st);
}

static int teardown(void **state)
{
    (void)state;
    st_store_close(st);
    return st_test_rmtree(dir);
}

static Strata__V1__Series *series(const char *name, int kind, int64_t start, const char *k1,
                                  const char *v1, const char *k2, const char *v2)
{
    Strata__V1__Series *s = calloc(1, sizeof(*s));
    strata__v1__series__init(s);
    s->name = strdup(name);
    s->unit = strdup("");
    s->kind = kind;
    s->start_unix_ms = start;
    s->interval_ms = 60000;
    s->labels = calloc(2, sizeof(*s->labels));
    if (k1 != NULL) {
        s->labels[s->n_labels++] = st_test_label_new(k1, v1);
    }
    if (k2 != NULL) {
        s->labels[s->n_labels++] = st_test_label_new(k2, v2);
    }
    return s;
}

static void set_counter(Strata__V1__Series *s, int64_t v)
{
    s->ivalues = malloc(sizeof(int64_t));
    s->ivalues[0] = v;
    s->n_ivalues = 1;
}

/* n latencies spread around base seconds (deterministic). */
static void set_latency(Strata__V1__Series *s, double base, int n)
{
    st_sketch *sk;
    Strata__V1__Sketch *m = malloc(sizeof(*m));
    assert_int_equal(st_sketch_new(0, &sk), ST_OK);
    for (int i = 0; i < n; i++) {
        st_sketch_insert(sk, base * (0.5 + (double)i / n));
    }
    strata__v1__sketch__init(m);
    assert_int_equal(st_sketch_to_proto(sk, m), ST_OK);
    st_sketch_free(sk);
    s->sketches = malloc(sizeof(*s->sketches));
    s->sketches[0] = m;
    s->n_sketches = 1;
}

/* One frame from host h (role) for the minute starting at t. */
static void apply(int h, const char *host, Strata__V1__Role role, Strata__V1__Series **ss, size_t n)
{
    uint8_t id[16] = {(uint8_t)(h + 1)};
    st_frame *f = st_test_frame_new(id, ++seqs[h], host, role, n);
    st_store_txn *t;
    bool dup;
    if (n > 0) {
        memcpy(f->series, ss, n * sizeof(*ss));
    }
    f->n_series = n;
    assert_int_equal(st_store_begin(st, &t), ST_OK);
    assert_int_equal(st_store_apply(t, f, T0, &dup), ST_OK);
    assert_int_equal(st_store_commit(t), ST_OK);
    st_frame_free(f);
}

/* A minute of app traffic on route /api: latency around lat seconds,
 * requests and errors. */
static void app_minute(int64_t t, double lat, int requests, int errors)
{
    Strata__V1__Series *ss[3];
    ss[0] = series("http.server.duration", STRATA__V1__KIND__DISTRIBUTION, t, "route", "/api", NULL,
                   NULL);
    set_latency(ss[0], lat, requests);
    ss[1] =
        series("http.server.requests", STRATA__V1__KIND__COUNTER, t, "route", "/api", NULL, NULL);
    set_counter(ss[1], requests);
    ss[2] = series("http.server.errors", STRATA__V1__KIND__COUNTER, t, "route", "/api", NULL, NULL);
    set_counter(ss[2], errors);
    apply(0, "app1", STRATA__V1__ROLE__APP, ss, 3);
}

/* A minute of the edge cache in front of it. */
static void edge_minute(int64_t t, int hits, int misses)
{
    Strata__V1__Series *ss[2];
    ss[0] =
        series("cache.requests", STRATA__V1__KIND__COUNTER, t, "cache", "varnish", "result", "hit");
    set_counter(ss[0], hits);
    ss[1] = series("cache.requests", STRATA__V1__KIND__COUNTER, t, "cache", "varnish", "result",
                   "miss");
    set_counter(ss[1], misses);
    apply(1, "edge1", STRATA__V1__ROLE__EDGE, ss, 2);
}

static st_engine *engine(int max_iterations)
{
    struct st_engine_opts o;
    st_engine *en;
    st_cfg_error err;
    memset(&o, 0, sizeof(o));
    o.max_iterations = max_iterations;
    o.validation_ms = 60000;
    assert_int_equal(st_engine_new(st, &o, NULL, NULL, NULL, &en, &err), ST_OK);
    /* The fixture runs at most a few hundred requests a minute. */
    st_eng_set(st_engine_eng(en), "throughput_rps", 0);
    st_eng_set(st_engine_eng(en), "min_samples", 100);
    return en;
}

static json_t *find_rule(st_engine *en, const char *rule)
{
    json_t *all = st_engine_findings(en, NULL, NULL, 0);
    json_t *hit = NULL;
    size_t i;
    json_t *f;
    json_array_foreach(all, i, f)
    {
        if (hit == NULL && strcmp(json_string_value(json_object_get(f, "rule")), rule) == 0) {
            hit = json_incref(f);
        }
    }
    json_decref(all);
    return hit;
}

static void history(int64_t from, int64_t to, double lat, int req, int err)
{
    for (int64_t t = from; t < to; t += MIN) {
        app_minute(t, lat, req, err);
    }
}

static const char *status_of(st_engine *en)
{
    static char buf[64];
    json_t *s = st_engine_status(en);
    snprintf(buf, sizeof(buf), "%s", json_string_value(json_object_get(s, "status")));
    json_decref(s);
    return buf;
}

/* Windows end at now less the settle, down to a multiple of the step:
 * by default a fifth of the window (at most a minute) and half of it. */
static void test_clock(void **state)
{
    struct st_engine_opts o;
    st_engine *en;
    st_cfg_error err;
    (void)state;
    memset(&o, 0, sizeof(o));
    assert_int_equal(st_engine_new(st, &o, NULL, NULL, NULL, &en, &err), ST_OK);
    assert_int_equal(st_engine_clock(en, T0 + 29999), T0 - MIN);
    assert_int_equal(st_engine_clock(en, T0 + 30000), T0);
    assert_int_equal(st_engine_clock(en, T0 + 89999), T0);
    st_engine_free(en);

    o.window_ms = 30000; /* step 6 s, settle 3 s */
    assert_int_equal(st_engine_new(st, &o, NULL, NULL, NULL, &en, &err), ST_OK);
    assert_int_equal(st_engine_clock(en, T0 + 2999), T0 - 6000);
    assert_int_equal(st_engine_clock(en, T0 + 3000), T0);
    assert_int_equal(st_engine_clock(en, T0 + 8999), T0);
    st_engine_free(en);

    o.window_ms = 2 * MIN; /* a fifth is 24 s: step 20 s, a divisor of a minute */
    assert_int_equal(st_engine_new(st, &o, NULL, NULL, NULL, &en, &err), ST_OK);
    assert_int_equal(st_engine_clock(en, T0 + 9999), T0 - 20000);
    assert_int_equal(st_engine_clock(en, T0 + 10000), T0);
    st_engine_free(en);

    o.step_ms = 10000;
    o.settle_ms = 1;
    assert_int_equal(st_engine_new(st, &o, NULL, NULL, NULL, &en, &err), ST_OK);
    assert_int_equal(st_engine_clock(en, T0 + 10000), T0);
    assert_int_equal(st_engine_clock(en, T0 + 10001), T0 + 10000);
    st_engine_free(en);
}

/* The fleet-wide response_time_p95 the last run measured. */
static double measured_p95(st_engine *en)
{
    json_t *s = st_engine_status(en);
    size_t i;
    json_t *t;
    double v = NAN;
    json_array_foreach(json_object_get(s, "targets"), i, t)
    {
        if (strcmp(json_string_value(json_object_get(t, "name")), "response_time_p95") == 0 &&
            strcmp(json_string_value(json_object_get(t, "scope")), "fleet") == 0) {
            v = json_number_value(json_object_get(t, "value"));
        }
    }
    json_decref(s);
    return v;
}

/* Runs within one step take the answers of the first, but a frame that
 * lands late inside the window is in the next run's figures, and a frame
 * past the window's end is not. */
static void test_runs_within_a_step_see_late_frames(void **state)
{
    st_engine *en;
    (void)state;
    history(T0 - 70 * MIN, T0 - 2 * MIN, 0.05, 300, 0);
    en = engine(10);
    st_engine_run(en, T0); /* windows end at T0 - 1 min */
    assert_true(measured_p95(en) < 0.1);
    {
        struct st_engine_stats es;
        st_engine_stats(en, &es);
        assert_int_equal(es.steps, 1);
        assert_int_equal(es.windows_end_ms, T0 - MIN);
    }
    {
        json_t *s = st_engine_status(en);
        assert_int_equal(json_integer_value(json_object_get(s, "windows_end_unix_ms")), T0 - MIN);
        json_decref(s);
    }
    app_minute(T0 - MIN, 3.0, 300, 0); /* past the window's end */
    st_engine_run(en, T0 + 1000);
    assert_true(measured_p95(en) < 0.1);
    app_minute(T0 - 2 * MIN, 3.0, 300, 0); /* late, inside it */
    st_engine_run(en, T0 + 2000);
    assert_true(measured_p95(en) > 1.0);
    st_engine_run(en, T0 + MIN);
    {
        struct st_engine_stats es;
        st_engine_stats(en, &es);
        assert_int_equal(es.runs, 4);
        assert_int_equal(es.steps, 2); /* the first, and the one at T0 + 1 min */
    }
    st_engine_free(en);
}

static void test_latency_regression_against_pinned_baseline(void **state)
{
    st_engine *en;
    json_t *f;
    size_t pinned = 0;
    (void)state;
    history(T0 - 70 * MIN, T0 - 5 * MIN, 0.100, 200, 0);
    en = engine(10);
    /* First run captures the rolling baseline, which is then pinned. */
    st_engine_run(en, T0 - 5 * MIN);
    assert_int_equal(st_engine_pin_baselines(en, T0, &pinned), ST_OK);
    assert_true(pinned >= 1);
    history(T0 - 5 * MIN, T0, 0.130, 200, 0); /* p95 up 30 % */
    st_engine_run(en, T0);
    assert_null(find_rule(en, "regression.latency")); /* confirmed on the next run */
    st_engine_run(en, T0 + 1000);
    /* ... over other windows: a run within the same step judged the same */
    assert_null(find_rule(en, "regression.latency"));
    st_engine_run(en, T0 + MIN);
    f = find_rule(en, "regression.latency");
    assert_non_null(f);
    assert_string_equal(json_string_value(json_object_get(f, "severity")), "HIGH");
    assert_true(
        fabs(json_number_value(json_object_get(json_object_get(f, "evidence"), "baseline")) -
             0.1 * 1.45) < 0.1 * 1.45 * 0.03);
    json_decref(f);
    st_engine_free(en);
}

static void test_error_regression_is_critical(void **state)
{
    st_engine *en;
    json_t *f;
    (void)state;
    history(T0 - 65 * MIN, T0 - 5 * MIN, 0.1, 400, 4); /* 1 % */
    history(T0 - 5 * MIN, T0, 0.1, 400, 14);           /* 3.5 % */
    en = engine(10);
    st_engine_run(en, T0);
    st_engine_run(en, T0 + MIN); /* the next step's windows confirm it */
    f = find_rule(en, "regression.errors");
    assert_non_null(f);
    assert_string_equal(json_string_value(json_object_get(f, "severity")), "CRITICAL");
    json_decref(f);
    st_engine_free(en);
}

static void test_noisy_healthy_data_does_not_flap(void **state)
{
    st_engine *en;
    (void)state;
    for (int64_t t = T0 - 90 * MIN; t < T0 + 30 * MIN; t += MIN) {
        /* +-12 % latency noise, errors between 0.3 and 0.7 %: healthy */
        double noise = ((t / MIN) % 3 == 0) ? 1.12 : ((t / MIN) % 3 == 1 ? 0.9 : 1.0);
        app_minute(t, 0.1 * noise, 300, 1 + (int)((t / MIN) % 2));
    }
    en = engine(10);
    for (int64_t now = T0; now < T0 + 30 * MIN; now += 2 * MIN) {
        st_engine_run(en, now);
        assert_null(find_rule(en, "regression.latency"));
        assert_null(find_rule(en, "regression.errors"));
        assert_string_equal(status_of(en), "PERFORMANCE_OPTIMIZED");
    }
    st_engine_free(en);
}

static void test_cache_cause_ranks_above_latency_symptom(void **state)
{
    st_engine *en;
    json_t *cache;
    json_t *lat;
    json_t *all;
    (void)state;
    history(T0 - 70 * MIN, T0 - 5 * MIN, 0.100, 300, 0);
    for (int64_t t = T0 - 70 * MIN; t < T0 - 5 * MIN; t += MIN) {
        edge_minute(t, 950, 50);
    }
    /* The edge cache starts missing; the origin behind it slows down. */
    history(T0 - 5 * MIN, T0, 0.200, 300, 0);
    for (int64_t t = T0 - 5 * MIN; t < T0; t += MIN) {
        edge_minute(t, 300, 700);
    }
    en = engine(10);
    st_engine_run(en, T0);
    st_engine_run(en, T0 + MIN);
    cache = find_rule(en, "infrastructure.cdn_cache");
    lat = find_rule(en, "regression.latency");
    assert_non_null(cache);
    assert_non_null(lat);
    assert_string_equal(json_string_value(json_object_get(lat, "caused_by")),
                        json_string_value(json_object_get(cache, "id")));
    assert_true(json_number_value(json_object_get(cache, "priority")) >
                json_number_value(json_object_get(lat, "priority")));
    all = st_engine_findings(en, NULL, NULL, 0);
    /* Highest priority first: the cause leads the list. */
    assert_string_equal(json_string_value(json_object_get(json_array_get(all, 0), "id")),
                        json_string_value(json_object_get(cache, "id")));
    json_decref(all);
    json_decref(cache);
    json_decref(lat);
    st_engine_free(en);
}

static void test_loop_reaches_performance_optimized(void **state)
{
    st_engine *en;
    json_t *s;
    (void)state;
    history(T0 - 70 * MIN, T0, 0.05, 300, 0);
    en = engine(10);
    st_engine_run(en, T0);
    assert_string_equal(status_of(en), "PERFORMANCE_OPTIMIZED");
    s = st_engine_status(en);
    assert_true(json_array_size(json_object_get(s, "targets")) > 0);
    json_decref(s);
    st_engine_free(en);
}

/* /v1/status answers while a run holds the engine (en->mu is the run's):
 * it would wait for the whole run, seconds at fleet size, or here forever
 * since the test's thread holds the lock itself. */
static void test_status_does_not_wait_for_a_run(void **state)
{
    st_engine *en;
    json_t *s;
    (void)state;
    history(T0 - 70 * MIN, T0, 0.05, 300, 0);
    en = engine(10);
    st_engine_run(en, T0);
    pthread_mutex_lock(&en->mu);
    s = st_engine_status(en);
    pthread_mutex_unlock(&en->mu);
    assert_string_equal(json_string_value(json_object_get(s, "status")), "PERFORMANCE_OPTIMIZED");
    assert_true(json_array_size(json_object_get(s, "targets")) > 0);
    json_decref(s);
    st_engine_free(en);
}

static void test_loop_stops_when_fixes_never_help(void **state)
{
    st_engine *en;
    json_t *f;
    char id[32];
    int64_t now = T0;
    (void)state;
    history(T0 - 70 * MIN, T0 + 60 * MIN, 0.05, 300, 0);
    for (int64_t t = T0 - 70 * MIN; t < T0 + 60 * MIN; t += MIN) {
        edge_minute(t, 300, 700); /* a cache that no fix improves */
    }
    en = engine(3);
    for (int i = 0; i < 12 && strcmp(status_of(en), "MAX_ITERATIONS_REACHED") != 0; i++) {
        st_engine_run(en, now);
        f = find_rule(en, "infrastructure.cdn_cache");
        assert_non_null(f);
        snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(f, "id")));
        if (strcmp(json_string_value(json_object_get(f, "status")), "dispatched") == 0) {
            assert_int_equal(st_engine_callback(en, id, "applied", "ttl raised"), ST_OK);
        }
        json_decref(f);
        now += 2 * MIN;
    }
    assert_string_equal(status_of(en), "MAX_ITERATIONS_REACHED");
    f = st_engine_finding(en, id);
    assert_non_null(json_object_get(f, "validation"));
    json_decref(f);
    st_engine_free(en);

    /* The state and the findings survive a restart of the collector. */
    st_store_close(st);
    {
        struct st_store_opts o = {.dir = dir, .no_sync = true};
        assert_int_equal(st_store_open(&o, &st), ST_OK);
    }
    en = engine(3);
    assert_string_equal(status_of(en), "MAX_ITERATIONS_REACHED");
    f = st_engine_finding(en, id);
    assert_non_null(f);
    assert_true(json_array_size(json_object_get(f, "history")) >= 4);
    json_decref(f);
    st_engine_free(en);
}

static const char *finding_status(st_engine *en, const char *id)
{
    static char buf[32];
    json_t *f = st_engine_finding(en, id);
    snprintf(buf, sizeof(buf), "%s", json_string_value(json_object_get(f, "status")));
    json_decref(f);
    return buf;
}

/* Runs the engine at at, takes the finding of rule into id (it must be
 * dispatched) and reports its fix applied. */
static void apply_fix(st_engine *en, int64_t at, const char *rule, const char *note, char *id,
                      size_t cap)
{
    json_t *f;
    st_engine_run(en, at);
    f = find_rule(en, rule);
    assert_non_null(f);
    snprintf(id, cap, "%s", json_string_value(json_object_get(f, "id")));
    json_decref(f);
    assert_string_equal(finding_status(en, id), "dispatched");
    assert_int_equal(st_engine_callback(en, id, "applied", note), ST_OK);
}

/* A fix is judged once the windows, which end behind the run's time,
 * have moved validation_window past the start of its validation: with a
 * 1 min validation, not at start + 70 s (windows end at start + 0 s), but
 * at start + 90 s (windows end at start + 60 s). */
static void test_verdict_waits_for_windows_past_the_fix(void **state)
{
    st_engine *en;
    char id[32];
    (void)state;
    history(T0 - 70 * MIN, T0 + 10 * MIN, 0.05, 300, 0);
    for (int64_t t = T0 - 70 * MIN; t < T0 + 10 * MIN; t += MIN) {
        edge_minute(t, 300, 700);
    }
    en = engine(10);
    apply_fix(en, T0 - 2 * MIN, "infrastructure.cdn_cache", "ttl raised", id, sizeof(id));
    st_engine_run(en, T0);
    assert_string_equal(finding_status(en, id), "validating");
    st_engine_run(en, T0 + 70 * 1000);
    assert_string_equal(finding_status(en, id), "validating");
    st_engine_run(en, T0 + 90 * 1000);
    assert_string_equal(finding_status(en, id), "ineffective");
    st_engine_free(en);
}

/* A target missed in one window does not start a campaign, however many
 * runs of one step judge that window; missed again over the next step's
 * windows, it does. */
static void test_target_missed_in_one_window_starts_no_campaign(void **state)
{
    st_engine *en;
    (void)state;
    history(T0 - 70 * MIN, T0 + 10 * MIN, 0.05, 300, 0);
    app_minute(T0 - 2 * MIN, 5.0, 300, 0); /* one bad minute, another frame of it */
    en = engine(10);
    st_engine_run(en, T0 - 2 * MIN + 30000); /* windows [T0-7m, T0-2m): healthy */
    assert_string_equal(status_of(en), "PERFORMANCE_OPTIMIZED");
    st_engine_run(en, T0 + 30000); /* [T0-5m, T0): p95 past the target */
    assert_true(measured_p95(en) > 0.5);
    assert_string_equal(status_of(en), "PERFORMANCE_OPTIMIZED");
    st_engine_run(en, T0 + 40000); /* the same windows again */
    assert_string_equal(status_of(en), "PERFORMANCE_OPTIMIZED");
    st_engine_run(en, T0 + 90000); /* [T0-4m, T0+1m): missed again */
    assert_true(measured_p95(en) > 0.5);
    assert_string_equal(status_of(en), "OPTIMIZING");
    st_engine_free(en);
}

static void set_gauge(Strata__V1__Series *s, double v)
{
    s->values = malloc(sizeof(double));
    s->values[0] = v;
    s->n_values = 1;
}

/* A minute of a database table not read for idle_days (pg_stat's
 * last read, as the postgres sampler reports it). */
static void table_minute(int64_t t, double idle_days)
{
    Strata__V1__Series *ss[2];
    ss[0] = series("db.table.live_tup", STRATA__V1__KIND__GAUGE, t, "table", "audit_log",
                   "database", "shop");
    set_gauge(ss[0], 5000);
    ss[1] = series("db.table.last_read_unix", STRATA__V1__KIND__GAUGE, t, "table", "audit_log",
                   "database", "shop");
    set_gauge(ss[1], (double)T0 / 1000 - idle_days * 86400);
    apply(2, "db1", STRATA__V1__ROLE__DB, ss, 2);
}

/* The verdict on a fix measures its finding's entity again with the
 * rule's threshold lifted; the cold-table rule's threshold is also its
 * span of days, so without it the rule measured nothing, and every
 * archive counted as done. A table still cold is judged ineffective. */
static void test_verdict_on_a_cold_table_still_cold(void **state)
{
    st_engine *en;
    json_t *f;
    char id[32];
    (void)state;
    for (int64_t t = T0 - 10 * MIN; t < T0 + 10 * MIN; t += MIN) {
        table_minute(t, 120);
    }
    en = engine(10);
    apply_fix(en, T0, "database.cold_table", "archived", id, sizeof(id));
    st_engine_run(en, T0 + 1000);
    assert_string_equal(finding_status(en, id), "validating");
    st_engine_run(en, T0 + 3 * MIN);
    assert_string_equal(finding_status(en, id), "ineffective");
    f = st_engine_finding(en, id);
    assert_true(json_number_value(json_object_get(json_object_get(f, "validation"), "after")) >
                119);
    json_decref(f);
    st_engine_free(en);
}

static void test_callbacks_refuse_bad_transitions(void **state)
{
    st_engine *en;
    (void)state;
    en = engine(3);
    assert_int_equal(st_engine_callback(en, "0000000000000000", "applied", NULL), ST_ENOENT);
    st_engine_free(en);
}

/* Cancels every query once the rule context has been asked `after` times. */
struct cancel_after {
    int asked;
    int after;
};

static bool cancel_after(void *arg)
{
    struct cancel_after *c = arg;
    return ++c->asked > c->after;
}

static void cdn_problem(void)
{
    history(T0 - 70 * MIN, T0, 0.100, 300, 0);
    for (int64_t t = T0 - 70 * MIN; t < T0; t += MIN) {
        edge_minute(t, 300, 700);
    }
}

static int count_one(void *arg, const char *key, const char *val, size_t len)
{
    (void)key;
    (void)val;
    (void)len;
    (*(int *)arg)++;
    return 0;
}

/* How many engine records (findings, baselines, state) the store holds. */
static int records(void)
{
    int n = 0;
    assert_int_equal(st_store_kv_scan(st, "", count_one, &n), ST_OK);
    return n;
}

static void test_stop_abandons_the_run(void **state)
{
    struct cancel_after cut = {0, 5};
    struct cancel_after whole = {0, 1 << 30};
    struct st_engine_stats es;
    uint64_t nb = 0;
    size_t nrules = 0;
    double phases = 0;
    st_engine *en;
    char *val = NULL;
    size_t len;
    json_t *s;
    json_t *f;
    (void)state;
    cdn_problem();
    en = engine(10);
    /* The stop comes during the first rules: the run stops asking at once
     * and leaves no findings, baselines, loop state or targets behind. */
    st_eng_set_cancel(st_engine_eng(en), cancel_after, &cut);
    assert_int_equal(st_engine_run(en, T0), ST_ECANCELED);
    assert_true(cut.asked <= cut.after + 3);
    st_engine_stats(en, &es);
    assert_int_equal(es.abandoned, 1);
    assert_int_equal(es.runs, 0);
    assert_int_equal(es.nphase, 0); /* no completed run to show */
    assert_int_equal(records(), 0); /* an abandoned run writes nothing */
    assert_int_equal(st_store_kv_get(st, "engine/state", &val, &len), ST_ENOENT);
    s = st_engine_status(en);
    assert_int_equal(json_array_size(json_object_get(s, "targets")), 0);
    json_decref(s);
    /* A whole run asks far more and finds the problem. */
    st_eng_set_cancel(st_engine_eng(en), cancel_after, &whole);
    assert_true(st_engine_run(en, T0) >= 0);
    assert_true(whole.asked > 4 * cut.asked);
    /* /metrics' figures: one run, in one bucket, every rule then the
     * four phases after them, none longer than the run. */
    st_engine_stats(en, &es);
    assert_int_equal(es.runs, 1);
    assert_int_equal(es.abandoned, 1);
    for (size_t i = 0; i <= ST_ENGINE_RUN_BUCKETS; i++) {
        nb += es.bucket[i];
    }
    assert_int_equal(nb, 1);
    assert_true(es.last_seconds > 0 && es.last_cpu_seconds > 0);
    assert_true(es.seconds_sum == es.last_seconds);
    for (const st_rule *r = st_rules; r->id != NULL; r++) {
        assert_string_equal(es.phase[r - st_rules], r->id);
        nrules++;
    }
    assert_int_equal(es.nphase, nrules + 4);
    assert_string_equal(es.phase[nrules], "regressions");
    assert_string_equal(es.phase[nrules + 3], "commit");
    for (size_t i = 0; i < es.nphase; i++) {
        assert_true(es.phase_seconds[i] >= 0);
        phases += es.phase_seconds[i];
    }
    assert_true(phases > 0 && phases <= es.last_seconds);
    assert_int_equal(st_store_kv_get(st, "engine/state", &val, &len), ST_OK);
    free(val);
    f = find_rule(en, "infrastructure.cdn_cache");
    assert_non_null(f);
    json_decref(f);
    st_engine_free(en);
}

static void test_runs_write_each_record_once_and_only_changes(void **state)
{
    st_engine *en;
    json_t *f;
    (void)state;
    cdn_problem();
    en = engine(10);
    /* Each record once, though a run upserts, expires and ranks them. */
    assert_true(st_engine_run(en, T0) >= 0);
    assert_true(en->run_writes > 1);
    assert_int_equal(en->run_writes, (size_t)records());
    /* No data any more: the finding clears, then stays as it is. */
    assert_true(st_engine_run(en, T0 + 20 * MIN) >= 0);
    f = find_rule(en, "infrastructure.cdn_cache");
    assert_string_equal(json_string_value(json_object_get(f, "status")), "resolved");
    json_decref(f);
    assert_true(st_engine_run(en, T0 + 21 * MIN) >= 0);
    assert_int_equal(en->run_finding_writes, 0);
    assert_true(en->run_writes >= 1); /* the loop state, rolling baselines */
    f = find_rule(en, "infrastructure.cdn_cache");
    assert_string_equal(json_string_value(json_object_get(f, "status")), "resolved");
    json_decref(f);
    st_engine_free(en);
    /* A new engine reads the findings' texts back: unchanged, they are
     * known as such (their hash is the one of the JSON they were printed
     * from) and not written again; a changed one is. */
    en = engine(10);
    assert_true(st_engine_run(en, T0 + 21 * MIN) >= 0);
    assert_int_equal(en->run_finding_writes, 0);
    for (int64_t t = T0 + 30 * MIN; t < T0 + 40 * MIN; t += MIN) {
        edge_minute(t, 300, 700); /* the edge misses again */
    }
    assert_true(st_engine_run(en, T0 + 40 * MIN) >= 0);
    assert_true(en->run_finding_writes >= 1);
    f = find_rule(en, "infrastructure.cdn_cache");
    assert_string_not_equal(json_string_value(json_object_get(f, "status")), "resolved");
    json_decref(f);
    st_engine_free(en);
}

/* A finding seen again, unchanged but for when (its last-seen time and
 * evidence window move every step), keeps its text in the store: the
 * seen record carries the moving fields, readers see them laid over, and
 * an engine started again reads them so. */
static json_int_t stored_seen(const json_t *f)
{
    char key[256];
    char *val = NULL;
    size_t len = 0;
    json_t *text;
    json_int_t v;
    snprintf(key, sizeof(key), "finding/%s", json_string_value(json_object_get(f, "id")));
    assert_int_equal(st_store_kv_get(st, key, &val, &len), ST_OK);
    text = json_loadb(val, len, 0, NULL);
    assert_non_null(text);
    v = json_integer_value(json_object_get(text, "last_seen_unix_ms"));
    json_decref(text);
    free(val);
    return v;
}

static void test_a_finding_seen_again_keeps_its_text(void **state)
{
    st_engine *en;
    json_t *f;
    json_t *w;
    int64_t clock;
    (void)state;
    history(T0 - 70 * MIN, T0 + 20 * MIN, 0.100, 300, 0);
    for (int64_t t = T0 - 70 * MIN; t < T0 + 20 * MIN; t += MIN) {
        edge_minute(t, 300, 700); /* the same every minute: the same figures */
    }
    en = engine(10);
    assert_true(st_engine_run(en, T0) >= 0);
    assert_true(en->run_finding_writes >= 1);
    assert_true(st_engine_run(en, T0 + 3 * MIN) >= 0);
    clock = st_engine_clock(en, T0 + 3 * MIN);
    assert_int_equal(en->run_finding_writes, 0);
    f = find_rule(en, "infrastructure.cdn_cache");
    assert_non_null(f);
    w = json_object_get(json_object_get(f, "evidence"), "window");
    assert_int_equal(json_integer_value(json_object_get(f, "last_seen_unix_ms")), clock);
    assert_int_equal(json_integer_value(json_object_get(w, "to")), clock);
    assert_int_equal(json_integer_value(json_object_get(w, "from")), clock - 5 * MIN);
    assert_true(stored_seen(f) < clock); /* the text is a step older */
    json_decref(f);
    st_engine_free(en);
    /* started again: the findings read back with the record laid over */
    en = engine(10);
    assert_true(st_engine_run(en, T0 + 3 * MIN) >= 0);
    assert_int_equal(en->run_finding_writes, 0);
    f = find_rule(en, "infrastructure.cdn_cache");
    assert_int_equal(json_integer_value(json_object_get(f, "last_seen_unix_ms")), clock);
    json_decref(f);
    st_engine_free(en);
}

static void test_stop_requested_before_a_run(void **state)
{
    st_engine *en;
    (void)state;
    cdn_problem();
    en = engine(10);
    st_engine_request_stop(en);
    assert_int_equal(st_engine_run(en, T0), ST_ECANCELED);
    assert_null(find_rule(en, "infrastructure.cdn_cache"));
    st_engine_free(en);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_clock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runs_within_a_step_see_late_frames, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verdict_waits_for_windows_past_the_fix, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_target_missed_in_one_window_starts_no_campaign, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_verdict_on_a_cold_table_still_cold, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_finding_seen_again_keeps_its_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_latency_regression_against_pinned_baseline, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_error_regression_is_critical, setup, teardown),
        cmocka_unit_test_setup_teardown(test_noisy_healthy_data_does_not_flap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_cause_ranks_above_latency_symptom, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_loop_reaches_performance_optimized, setup, teardown),
        cmocka_unit_test_setup_teardown(test_loop_stops_when_fixes_never_help, setup, teardown),
        cmocka_unit_test_setup_teardown(test_callbacks_refuse_bad_transitions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_abandons_the_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_does_not_wait_for_a_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_requested_before_a_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runs_write_each_record_once_and_only_changes, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
