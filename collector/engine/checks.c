/* Targets (validated fleet-wide and per role every run) and regressions
 * against stored baselines: p95 response time over 1.2 x its baseline is
 * HIGH, an error rate over 2 x its baseline is CRITICAL. Baselines roll
 * with time unless pinned before a change. */
#include "engine_internal.h"

#include "err.h"
#include "log.h"
#include "timeutil.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One target: a setting, the query that measures it, and its direction. */
struct target {
    const char *name;    /* collector.yaml targets: key */
    const char *setting; /* st_eng setting holding the threshold */
    const char *metric;
    const char *agg;
    const char *match;
    const char *reduce; /* "max" of the per-group values, or "one" (no grouping) */
    const char *by;
    bool at_least; /* throughput: higher is better */
    const char *unit;
    bool per_role;
};

static const struct target targets[] = {
    {"response_time_p50", "response_p50_s", "http.server.duration", "p50", NULL, "one", NULL, false,
     "s", true},
    {"response_time_p95", "response_p95_s", "http.server.duration", "p95", NULL, "one", NULL, false,
     "s", true},
    {"response_time_p99", "response_p99_s", "http.server.duration", "p99", NULL, "one", NULL, false,
     "s", true},
    {"throughput", "throughput_rps", "http.server.requests", "rate", NULL, "one", NULL, true, "1/s",
     true},
    {"error_rate", "error_rate", NULL, NULL, NULL, "one", NULL, false, "ratio", true},
    {"bundle_main", "bundle_main_bytes", "frontend.bundle.gzip_bytes", "max", "entry=true", "max",
     "chunk", false, "B", false},
    {"bundle_chunk", "bundle_chunk_bytes", "frontend.bundle.gzip_bytes", "max", "entry=false",
     "max", "chunk", false, "B", false},
    {"bundle_total", "bundle_total_bytes", "frontend.bundle.total_gzip_bytes", "max", NULL, "max",
     "host", false, "B", false},
    {"memory_peak", "memory_peak_bytes", "mem.rss.peak", "max", NULL, "max", "host,process", false,
     "B", false},
    {"cpu", "cpu_ratio", "host.cpu.utilization", "avg", NULL, "max", "host", false, "ratio", false},
    {"fcp", "fcp_s", "web.vitals.fcp", "p95", NULL, "one", NULL, false, "s", false},
    {"lcp", "lcp_s", "web.vitals.lcp", "p95", NULL, "one", NULL, false, "s", false},
    {"tti", "tti_s", "web.vitals.tti", "p95", NULL, "one", NULL, false, "s", false},
    {"connections", "connections", "tcp.curr_estab", "max", NULL, "max", "host", false, "", false},
};

static const char *const roles[] = {"edge", "cdn", "app", "db"};

/* The value of one target over the window (NAN: no data), optionally for
 * one role. */
static double measure(st_engine *en, const struct target *t, const char *role)
{
    const char *m[2];
    size_t nm = 0;
    st_answer *out = NULL;
    double v = NAN;
    char rm[32];
    if (t->match != NULL) {
        m[nm++] = t->match;
    }
    if (role != NULL) {
        snprintf(rm, sizeof(rm), "role=%s", role);
        m[nm++] = rm;
    }
    if (st_eng_query(en->eng, t->metric, t->agg, t->by, m, nm, st_eng_window(en->eng), &out) !=
        ST_OK) {
        return NAN;
    }
    for (size_t i = 0; i < out->n; i++) {
        double x = st_ans_value(&out->rows[i]);
        if (isfinite(x) && (isnan(v) || x > v)) {
            v = x;
        }
    }
    st_answer_unref(out);
    return v;
}

static double error_rate(st_engine *en, const char *role)
{
    struct target req = {NULL, NULL, "http.server.requests", "sum", NULL, "one", NULL, 0, "", 0};
    struct target err = {NULL, NULL, "http.server.errors", "sum", NULL, "one", NULL, 0, "", 0};
    double n = measure(en, &req, role);
    double e = measure(en, &err, role);
    if (!isfinite(n) || n <= 0) {
        return NAN;
    }
    return isfinite(e) ? e / n : 0;
}

static json_t *target_row(st_engine *en, const struct target *t, const char *role)
{
    double target = st_eng_setting(en->eng, t->setting);
    double v = strcmp(t->name, "error_rate") == 0 ? error_rate(en, role) : measure(en, t, role);
    bool met;
    char scope[32];
    if (isnan(target)) {
        return NULL;
    }
    /* No data means nothing to hold against the target. */
    met =
        isnan(v) || (t->at_least ? v >= target
                                 : (strcmp(t->name, "error_rate") == 0 ? v < target : v <= target));
    snprintf(scope, sizeof(scope), "%s%s", role ? "role=" : "fleet", role ? role : "");
    return json_pack("{s:s,s:s,s:f,s:o,s:b,s:s,s:s}", "name", t->name, "scope", scope, "target",
                     target, "value", isnan(v) ? json_null() : json_real(v), "met", met, "unit",
                     t->unit, "direction", t->at_least ? "at_least" : "at_most");
}

json_t *st_targets_validate(st_engine *en)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr != NULL && i < ST_ARRAY_LEN(targets); i++) {
        json_t *row = target_row(en, &targets[i], NULL);
        if (row != NULL) {
            json_array_append_new(arr, row);
        }
        for (size_t r = 0; targets[i].per_role && r < ST_ARRAY_LEN(roles); r++) {
            row = target_row(en, &targets[i], roles[r]);
            if (row != NULL && !json_is_null(json_object_get(row, "value"))) {
                json_array_append_new(arr, row);
            } else {
                json_decref(row);
            }
        }
    }
    return arr;
}

bool st_targets_all_met(const json_t *t)
{
    size_t i;
    json_t *row;
    json_array_foreach(t, i, row)
    {
        if (!json_is_true(json_object_get(row, "met"))) {
            return false;
        }
    }
    return true;
}

/* collector.yaml targets: {name: value} with the value in the target's
 * unit: durations ("200ms"), sizes ("250KiB"), percentages ("1%") or plain
 * numbers; "off" disables a target. */
static int parse_target_value(const struct target *t, const char *text, double *out)
{
    int64_t ms;
    uint64_t bytes;
    double d;
    size_t n = strlen(text);
    if (strcmp(t->unit, "s") == 0 && st_duration_parse(text, &ms) == ST_OK) {
        *out = (double)ms / 1000.0;
        return ST_OK;
    }
    if (strcmp(t->unit, "B") == 0 && st_size_parse(text, &bytes) == ST_OK) {
        *out = (double)bytes;
        return ST_OK;
    }
    if (n > 1 && text[n - 1] == '%') {
        char buf[64];
        snprintf(buf, sizeof(buf), "%.*s", (int)(n - 1), text);
        if (st_parse_double(buf, &d) == ST_OK) {
            *out = d / 100.0;
            return ST_OK;
        }
    }
    return st_parse_double(text, out);
}

int st_engine_apply_targets(st_engine *en, const st_cfg_doc *doc, const st_cfg_node *node,
                            st_cfg_error *err)
{
    if (node == NULL || st_cfg_is_null(node)) {
        return ST_OK;
    }
    if (st_cfg_node_type(node) != ST_CFG_NODE_MAP) {
        return st_cfg_fail(err, doc, node, "targets", "a mapping of target names to values");
    }
    for (size_t i = 0; i < st_cfg_map_len(node); i++) {
        const char *k = st_cfg_map_key(node, i);
        const char *v = st_cfg_scalar(st_cfg_map_value(node, i));
        const struct target *t = NULL;
        double d;
        for (size_t j = 0; j < ST_ARRAY_LEN(targets); j++) {
            t = strcmp(targets[j].name, k) == 0 ? &targets[j] : t;
        }
        if (t == NULL) {
            return st_cfg_fail(err, doc, st_cfg_map_value(node, i), k, "unknown target");
        }
        if (v != NULL && strcmp(v, "off") == 0) {
            d = NAN;
        } else if (v == NULL || parse_target_value(t, v, &d) != ST_OK || d < 0) {
            return st_cfg_fail(err, doc, st_cfg_map_value(node, i), k, "bad value '%s'",
                               v ? v : "");
        }
        st_eng_set(en->eng, t->setting, d);
    }
    return ST_OK;
}

/* ---- baselines and regressions ---- */

const st_rule st_regression_rules[] = {
    {"regression.latency", "function", ST_SEV_HIGH, "RESPONSE_TIME_REGRESSION", 1.2, "x",
     "p95 response time over 1.2 x its baseline", NULL},
    {"regression.errors", "function", ST_SEV_CRITICAL, "ERROR_RATE_REGRESSION", 2.0, "x",
     "error rate over 2 x its baseline", NULL},
    {NULL, NULL, 0, NULL, 0, NULL, NULL, NULL},
};

struct group_vals {
    char entity[ST_ENTITY_MAX];
    char role[32];
    char route[200];
    double cur;
    double cur_n;
    double base;
    double base_n;
};

/* Values per (role, route) of one query, by entity. */
static int per_group(st_engine *en, const char *metric, const char *agg, int64_t end,
                     int64_t window, st_answer **out)
{
    int64_t now = st_eng_now(en->eng);
    int rv;
    st_eng_set_now(en->eng, end);
    rv = st_eng_query(en->eng, metric, agg, "role,route", NULL, 0, window, out);
    st_eng_set_now(en->eng, now);
    return rv;
}

/* A few dozen groups (roles times routes): read in turn. */
static double lookup_group(const st_answer *ans, const char *role, const char *route)
{
    for (size_t i = 0; ans != NULL && i < ans->n; i++) {
        const json_t *l = ans->rows[i].labels;
        const char *r1 = json_string_value(json_object_get(l, "role"));
        const char *r2 = json_string_value(json_object_get(l, "route"));
        if (r1 != NULL && r2 != NULL && strcmp(r1, role) == 0 && strcmp(r2, route) == 0) {
            return st_ans_value(&ans->rows[i]);
        }
    }
    return NAN;
}

static void baseline_key(char *key, size_t n, const char *kind, const char *entity)
{
    snprintf(key, n, ST_BASELINE_PREFIX "%s/%s", kind, entity);
}

/* The stored baseline (pinned wins), or the rolling one just measured,
 * which is kept for the next run and for /v1/status (written when the run
 * commits). */
static void settle_baseline(st_engine *en, const char *kind, struct group_vals *g, int64_t now)
{
    char key[ST_ENTITY_MAX + 64];
    json_t *b;
    baseline_key(key, sizeof(key), kind, g->entity);
    b = st_run_get(en, key);
    if (b != NULL && json_is_true(json_object_get(b, "pinned"))) {
        g->base = json_number_value(json_object_get(b, "value"));
        g->base_n = json_number_value(json_object_get(b, "samples"));
        json_decref(b);
        return;
    }
    json_decref(b);
    if (isfinite(g->base) && isfinite(g->base_n)) {
        b = json_pack("{s:f,s:f,s:b,s:I}", "value", g->base, "samples", g->base_n, "pinned", 0,
                      "captured_unix_ms", (json_int_t)now);
        if (b != NULL) {
            st_run_put(en, key, b);
        }
        json_decref(b);
    }
}

static void add_regression(st_engine *en, const st_rule *r, const struct group_vals *g,
                           double factor, const char *metric, const char *what, st_candidates *out)
{
    st_candidate c;
    char m1[48];
    char m2[220];
    double thr = g->base * factor;
    st_candidate_init(&c);
    snprintf(c.entity, sizeof(c.entity), "%s", g->entity);
    json_object_set_new(c.labels, "role", json_string(g->role));
    json_object_set_new(c.labels, "route", json_string(g->route));
    c.severity = r->severity;
    c.value = g->cur;
    c.threshold = thr;
    c.traffic_share = 1.0;
    snprintf(c.summary, sizeof(c.summary),
             "%s on %s %s rose to %.4g from a baseline of %.4g (%.2fx)", what, g->role, g->route,
             g->cur, g->base, g->base > 0 ? g->cur / g->base : 0);
    json_object_set_new(c.evidence, "series", json_pack("[s]", metric));
    json_object_set_new(c.evidence, "values",
                        json_pack("{s:f,s:f,s:f,s:f}", "current", g->cur, "current_samples",
                                  g->cur_n, "baseline", g->base, "baseline_samples", g->base_n));
    json_object_set_new(c.evidence, "baseline", json_real(g->base));
    json_object_set_new(c.evidence, "threshold", json_real(thr));
    json_object_set_new(c.evidence, "window",
                        json_pack("{s:I,s:I}", "from",
                                  (json_int_t)(st_eng_now(en->eng) - st_eng_window(en->eng)), "to",
                                  (json_int_t)st_eng_now(en->eng)));
    c.implementation = json_pack("{s:s,s:s,s:s}", "action",
                                 "find the change that preceded the regression and roll it back or "
                                 "fix it; the linked cause, when present, names it",
                                 "role", g->role, "route", g->route);
    snprintf(m1, sizeof(m1), "role=%s", g->role);
    snprintf(m2, sizeof(m2), "route=%s", g->route);
    c.measure =
        json_pack("{s:s,s:s,s:[s,s]}", "metric", metric, "agg",
                  strcmp(metric, "http.server.duration") == 0 ? "p95" : "ratio", "match", m1, m2);
    st_candidates_add(out, &c);
}

/* A regression must hold in two runs in a row, over two different
 * windows, before it opens, so one noisy window does not flap. */
static bool confirmed(st_engine *en, json_t *now_pending, const char *rule, const char *entity)
{
    char id[17];
    st_finding_id(rule, entity, id);
    return st_seen_again(en, now_pending, id, json_integer_value(json_object_get(en->pending, id)));
}

/* The two regression checks differ only in what they measure: a value per
 * (role, route) and the sample count behind it, now and in the baseline
 * window. */
struct regression_kind {
    const st_rule *rule;
    const char *factor_setting;
    const char *baseline_name;
    const char *what;
    const char *value_metric; /* latency: the p95; errors: errors, divided by ... */
    const char *value_agg;
    const char *count_metric; /* ... the requests, which are also the sample count */
    const char *count_agg;
    bool ratio;
    double base_floor; /* a zero baseline still allows a little noise */
};

static const struct regression_kind kinds[] = {
    {&st_regression_rules[0], "regression_p95_factor", "latency", "p95 response time",
     "http.server.duration", "p95", "http.server.duration", "count", false, 0},
    {&st_regression_rules[1], "regression_error_factor", "errors", "error rate",
     "http.server.errors", "sum", "http.server.requests", "sum", true, 0.001},
};

static void value_of(const struct regression_kind *k, const st_answer *val, const st_answer *cnt,
                     const char *role, const char *route, double *v, double *n)
{
    double x = lookup_group(val, role, route);
    *n = lookup_group(cnt, role, route);
    if (!k->ratio) {
        *v = x;
        return;
    }
    *v = isfinite(*n) && *n > 0 ? (isfinite(x) ? x : 0) / *n : NAN;
}

static void check_group(st_engine *en, const struct regression_kind *k, json_t *pend,
                        struct group_vals *g, st_candidates *out)
{
    double factor = st_eng_setting(en->eng, k->factor_setting);
    double min_n = st_eng_setting(en->eng, "min_samples");
    settle_baseline(en, k->baseline_name, g, st_eng_now(en->eng));
    if (isfinite(g->base)) {
        g->base = fmax(g->base, k->base_floor);
    }
    if (g->cur_n >= min_n && g->base_n >= min_n && g->base > 0 && isfinite(g->cur) &&
        g->cur > g->base * factor && confirmed(en, pend, k->rule->id, g->entity)) {
        add_regression(en, k->rule, g, factor, k->value_metric, k->what, out);
    }
}

static int regressions(st_engine *en, const struct regression_kind *k, json_t *pend,
                       st_candidates *out)
{
    int64_t now = st_eng_now(en->eng);
    int64_t w = st_eng_window(en->eng);
    int64_t bw = (int64_t)st_eng_setting(en->eng, "baseline_window_ms");
    st_answer *v = NULL, *n = NULL, *bv = NULL, *bn = NULL;
    int rv = per_group(en, k->value_metric, k->value_agg, now, w, &v);
    rv = rv == ST_OK ? per_group(en, k->count_metric, k->count_agg, now, w, &n) : rv;
    rv = rv == ST_OK ? per_group(en, k->value_metric, k->value_agg, now - w, bw, &bv) : rv;
    rv = rv == ST_OK ? per_group(en, k->count_metric, k->count_agg, now - w, bw, &bn) : rv;
    for (size_t i = 0; rv == ST_OK && i < n->n; i++) {
        struct group_vals g;
        const json_t *l = n->rows[i].labels;
        memset(&g, 0, sizeof(g));
        snprintf(g.role, sizeof(g.role), "%s", json_string_value(json_object_get(l, "role")) ?: "");
        snprintf(g.route, sizeof(g.route), "%s",
                 json_string_value(json_object_get(l, "route")) ?: "");
        snprintf(g.entity, sizeof(g.entity), "role=%s route=%s", g.role, g.route);
        value_of(k, v, n, g.role, g.route, &g.cur, &g.cur_n);
        value_of(k, bv, bn, g.role, g.route, &g.base, &g.base_n);
        check_group(en, k, pend, &g, out);
    }
    st_answer_unref(v);
    st_answer_unref(n);
    st_answer_unref(bv);
    st_answer_unref(bn);
    return rv;
}

int st_regressions_check(st_engine *en, st_candidates *lat, st_candidates *errs)
{
    json_t *pend = json_object();
    int rv = regressions(en, &kinds[0], pend, lat);
    if (rv == ST_OK) {
        rv = regressions(en, &kinds[1], pend, errs);
    }
    if (rv == ST_ECANCELED) {
        /* An abandoned run saw nothing: what was pending stays pending. */
        json_decref(pend);
        return rv;
    }
    json_decref(en->pending);
    en->pending = pend;
    return rv;
}
