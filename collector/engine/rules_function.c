/* Function rules: slow functions (p95) explained by the statements their
 * host runs per call (N+1 -> BATCH_QUERIES, many rows -> PAGINATION,
 * repeated costly statements -> CACHING), large objects held in memory
 * (STREAMING_PROCESSING) and RSS that grows without plateau (leaks). */
#include "rules_checks.h"

#include "err.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FN_BY "function,host"
#define STMT_BY "queryid,query,table,database,host"
/* N+1: more statements per call than this, each cheaper than N1_MEAN_S. */
#define ST_N1_PER_CALL 10.0
#define ST_N1_MEAN_S 0.010
/* Repeated work: one statement more than once per call, each over this. */
#define ST_REPEAT_PER_CALL 1.0
#define ST_REPEAT_MEAN_S 0.010
/* Large results: rows per call, or response bytes (p95). */
#define ST_ROWS_PER_CALL 1000.0
#define ST_RESPONSE_BYTES (1024.0 * 1024)
#define ST_PAGE_SIZE 100
#define ST_CACHE_TTL_S 60
#define LEAK_POINTS 30
#define MS_PER_HOUR 3600000.0
#define SQL_MAX 2048
#define SNIPPET_MAX (2 * ST_RULES_LABEL_MAX + 512)

/* The window's function and statement data. */
typedef struct fnq {
    st_answer *p95;
    st_answer *count;
    st_answer *bytes;
    st_answer *calls;
    st_answer *time;
    st_answer *rows;
    json_t *host_stmts; /* host -> indices into calls, ascending */
    int64_t window;
    double min_samples;
    double calls_total; /* of every function */
} fnq;

/* A slow function and the statements of its host. */
typedef struct fnctx {
    const st_ans_row *item;
    const char *function;
    const char *host;
    double p95;
    double count;
    double share;
} fnctx;

/* The statement picked as the explanation, with per-call figures. */
typedef struct pick {
    const st_ans_row *item;
    double calls;
    double mean;
    double rows;
    double per_call;
    double rows_per_call;
} pick;

static void fnq_free(fnq *q)
{
    st_answer_unref(q->p95);
    st_answer_unref(q->count);
    st_answer_unref(q->bytes);
    st_answer_unref(q->calls);
    st_answer_unref(q->time);
    st_answer_unref(q->rows);
    json_decref(q->host_stmts);
    memset(q, 0, sizeof(*q));
}

/* Slow functions run on app hosts and statements on database hosts: a
 * function's statements are found through their host, not by reading
 * every statement of the fleet for every slow function. */
static int index_hosts(fnq *q)
{
    const st_answer *calls = q->calls;
    q->host_stmts = json_object();
    if (q->host_stmts == NULL) {
        fnq_free(q);
        return ST_ENOMEM;
    }
    for (size_t j = 0; j < calls->n; j++) {
        const char *h = st_ans_label(&calls->rows[j], "host");
        json_t *list = json_object_get(q->host_stmts, h);
        if (list == NULL && json_object_set_new(q->host_stmts, h, list = json_array()) != 0) {
            fnq_free(q);
            return ST_ENOMEM;
        }
        if (json_array_append_new(list, json_integer((json_int_t)j)) != 0) {
            fnq_free(q);
            return ST_ENOMEM;
        }
    }
    return ST_OK;
}

static int fnq_load(st_eng *e, fnq *q)
{
    int64_t w = st_eng_window(e);
    int rv;
    memset(q, 0, sizeof(*q));
    q->window = w;
    q->min_samples = st_eng_setting(e, "min_samples");
    if ((rv = st_rules_query(e, "app.function.duration", "p95", FN_BY, NULL, 0, w, 0, &q->p95)) ||
        (rv = st_rules_query(e, "app.function.duration", "count", FN_BY, NULL, 0, w, 0,
                             &q->count)) ||
        (rv = st_rules_query(e, "app.function.response_bytes", "p95", FN_BY, NULL, 0, w, 0,
                             &q->bytes)) ||
        (rv = st_rules_query(e, "db.statement.calls", "sum", STMT_BY, NULL, 0, w, 0, &q->calls)) ||
        (rv = st_rules_query(e, "db.statement.time", "sum", STMT_BY, NULL, 0, w, 0, &q->time)) ||
        (rv = st_rules_query(e, "db.statement.rows", "sum", STMT_BY, NULL, 0, w, 0, &q->rows))) {
        fnq_free(q);
        return rv;
    }
    q->calls_total = st_rules_total(q->count);
    return index_hosts(q);
}

/* The statements a function's host runs; NULL (size 0) when none. */
static const json_t *stmts_of(const fnq *q, const char *host)
{
    return json_object_get(q->host_stmts, host);
}

/* The i-th function when it is slow (p95 over thr with enough calls). */
static bool slow_function(const fnq *q, size_t i, double thr, fnctx *f)
{
    const st_ans_row *item = &q->p95->rows[i];
    double total = q->calls_total;
    memset(f, 0, sizeof(*f));
    f->item = item;
    f->function = st_ans_label(item, "function");
    f->host = st_ans_label(item, "host");
    f->p95 = st_ans_value(item);
    f->count = st_rules_lookup(q->count, item, FN_BY);
    f->share = total > 0 && isfinite(f->count) ? f->count / total : 0;
    return f->p95 > thr && f->count > 0 && !(f->count < q->min_samples);
}

static double num_or_zero(double v)
{
    return isfinite(v) ? v : 0;
}

/* Statement j of the window as seen per call of f; false when it runs on
 * another host. */
static bool stmt_per_call(const fnq *q, const fnctx *f, size_t j, pick *p)
{
    const st_ans_row *item = &q->calls->rows[j];
    double time;
    if (strcmp(st_ans_label(item, "host"), f->host) != 0) {
        return false;
    }
    p->item = item;
    p->calls = num_or_zero(st_ans_value(item));
    time = num_or_zero(st_rules_lookup(q->time, item, STMT_BY));
    p->rows = num_or_zero(st_rules_lookup(q->rows, item, STMT_BY));
    p->mean = p->calls > 0 ? time / p->calls : NAN;
    p->per_call = p->calls / f->count;
    p->rows_per_call = p->rows / f->count;
    return p->calls > 0;
}

static json_t *fn_values(const fnctx *f, const pick *p)
{
    json_t *v = json_object();
    st_rules_set_num(v, "p95_s", f->p95);
    st_rules_set_num(v, "function_calls", f->count);
    if (p != NULL && p->item != NULL) {
        json_object_set_new(v, "statement", json_string(st_ans_label(p->item, "query")));
        json_object_set_new(v, "queryid", json_string(st_ans_label(p->item, "queryid")));
        st_rules_set_num(v, "statement_calls", p->calls);
        st_rules_set_num(v, "statement_mean_s", p->mean);
        st_rules_set_num(v, "statements_per_call", p->per_call);
        st_rules_set_num(v, "rows_per_call", p->rows_per_call);
    }
    return v;
}

static void fn_candidate(st_eng *e, const st_rule *r, const fnq *q, const fnctx *f, json_t *values,
                         st_candidate *c)
{
    static const char *const series[] = {"app.function.duration", "db.statement.calls",
                                         "db.statement.time", "db.statement.rows"};
    double thr = st_eng_threshold(e, r);
    st_candidate_init(c);
    st_rules_entity(c, f->item, FN_BY);
    st_rules_verdict(c, r, f->p95, thr, false);
    c->traffic_share = f->share;
    st_rules_evidence(e, c, series, ST_ARRAY_LEN(series), values, thr, q->window,
                      json_pack("[s]", f->host));
}

/* Runs check on every slow function. */
typedef int (*fn_check)(st_eng *e, const st_rule *r, const fnq *q, const fnctx *f,
                        st_candidates *out);

static int each_slow_function(st_eng *e, const st_rule *r, fn_check check, st_candidates *out)
{
    fnq q;
    double thr = st_eng_threshold(e, r);
    int rv = fnq_load(e, &q);
    for (size_t i = 0; rv == ST_OK && i < q.p95->n; i++) {
        fnctx f;
        if (slow_function(&q, i, thr, &f)) {
            rv = check(e, r, &q, &f, out);
        }
    }
    fnq_free(&q);
    return rv;
}

/* ---- BATCH_QUERIES ---- */

static int n_plus_one(st_eng *e, const st_rule *r, const fnq *q, const fnctx *f, st_candidates *out)
{
    pick best = {0};
    char sql[SQL_MAX];
    const char *query;
    st_candidate c;
    const json_t *js = stmts_of(q, f->host);
    for (size_t k = 0; k < json_array_size(js); k++) {
        size_t j = (size_t)json_integer_value(json_array_get(js, k));
        pick p;
        if (stmt_per_call(q, f, j, &p) && p.per_call > ST_N1_PER_CALL && p.mean <= ST_N1_MEAN_S &&
            p.per_call > best.per_call) {
            best = p;
        }
    }
    if (best.item == NULL) {
        return ST_OK;
    }
    query = st_ans_label(best.item, "query");
    fn_candidate(e, r, q, f, fn_values(f, &best), &c);
    st_rules_summary(&c, "%s: p95 %.0f ms, %.1f statements per call (%.1f ms each): %.*s",
                     f->function, f->p95 * 1000, best.per_call, best.mean * 1000,
                     st_rules_cut(query, 100), query);
    c.implementation = json_pack(
        "{s:s,s:s,s:f,s:o,s:s}", "function", f->function, "statement", query, "statements_per_call",
        best.per_call, "sql",
        st_sql_batch_rewrite(query, sql, sizeof(sql)) == ST_OK ? json_string(sql) : json_null(),
        "change",
        "collect the keys the loop looks up and run the statement once per call with all of "
        "them (= ANY($1) with an array parameter), then map the rows back by key; a "
        "DataLoader-style batcher does this per request");
    return st_rules_add(out, &c);
}

int st_check_n_plus_one(st_eng *e, const st_rule *r, st_candidates *out)
{
    return each_slow_function(e, r, n_plus_one, out);
}

/* ---- PAGINATION ---- */

static int large_result(st_eng *e, const st_rule *r, const fnq *q, const fnctx *f,
                        st_candidates *out)
{
    pick best = {0};
    double rows = 0;
    double bytes = st_rules_lookup(q->bytes, f->item, FN_BY);
    char sql[SQL_MAX];
    st_candidate c;
    json_t *values;
    const json_t *js = stmts_of(q, f->host);
    for (size_t k = 0; k < json_array_size(js); k++) {
        size_t j = (size_t)json_integer_value(json_array_get(js, k));
        pick p;
        if (stmt_per_call(q, f, j, &p)) {
            rows += p.rows_per_call;
            best = p.rows_per_call > best.rows_per_call ? p : best;
        }
    }
    if (!(rows > ST_ROWS_PER_CALL) && !(bytes > ST_RESPONSE_BYTES)) {
        return ST_OK;
    }
    values = fn_values(f, best.item != NULL ? &best : NULL);
    st_rules_set_num(values, "rows_per_call_all_statements", rows);
    st_rules_set_num(values, "response_bytes_p95", bytes);
    fn_candidate(e, r, q, f, values, &c);
    st_rules_summary(&c, "%s: p95 %.0f ms reading %.0f rows per call, responses p95 %.0f KiB",
                     f->function, f->p95 * 1000, rows, num_or_zero(bytes) / 1024);
    sql[0] = '\0';
    if (best.item != NULL &&
        st_sql_keyset_rewrite(st_ans_label(best.item, "query"), sql, sizeof(sql)) != ST_OK) {
        sql[0] = '\0';
    }
    c.implementation = json_pack(
        "{s:s,s:o,s:o,s:i,s:s}", "function", f->function, "statement",
        best.item != NULL ? json_string(st_ans_label(best.item, "query")) : json_null(), "sql",
        sql[0] != '\0' ? json_string(sql) : json_null(), "page_size", ST_PAGE_SIZE, "api",
        "return one page per call: {items, next_cursor}; the client passes next_cursor back "
        "as the last key seen and the statement reads only the next page");
    return st_rules_add(out, &c);
}

int st_check_large_result(st_eng *e, const st_rule *r, st_candidates *out)
{
    return each_slow_function(e, r, large_result, out);
}

/* ---- CACHING ---- */

static json_t *cache_impl(const fnctx *f, const pick *p)
{
    char snippet[SNIPPET_MAX];
    const char *qid = st_ans_label(p->item, "queryid");
    snprintf(snippet, sizeof(snippet),
             "const key = `%s:q%s:${JSON.stringify(params)}`;\n"
             "let rows = await redis.get(key);\n"
             "if (rows === null) {\n"
             "  rows = JSON.stringify(await db.query(sql, params));\n"
             "  await redis.set(key, rows, 'EX', %d);\n"
             "}\n"
             "return JSON.parse(rows);",
             f->function, qid, ST_CACHE_TTL_S);
    return json_pack("{s:s,s:s,s:s,s:i,s:s++,s:s,s:s+}", "function", f->function, "statement",
                     st_ans_label(p->item, "query"), "pattern", "cache-aside", "ttl_s",
                     ST_CACHE_TTL_S, "key", f->function, ":q", qid, "snippet", snippet,
                     "invalidate", "delete the keys on writes to ", st_ans_label(p->item, "table"));
}

static int repeated_work(st_eng *e, const st_rule *r, const fnq *q, const fnctx *f,
                         st_candidates *out)
{
    pick best = {0};
    st_candidate c;
    const json_t *js = stmts_of(q, f->host);
    for (size_t k = 0; k < json_array_size(js); k++) {
        size_t j = (size_t)json_integer_value(json_array_get(js, k));
        pick p;
        if (stmt_per_call(q, f, j, &p) && p.per_call > ST_REPEAT_PER_CALL &&
            p.mean > ST_REPEAT_MEAN_S && p.per_call * p.mean > best.per_call * best.mean) {
            best = p;
        }
    }
    if (best.item == NULL) {
        return ST_OK;
    }
    fn_candidate(e, r, q, f, fn_values(f, &best), &c);
    st_rules_summary(&c,
                     "%s: p95 %.0f ms runs the same %.0f ms statement %.1f times per call: "
                     "%.*s",
                     f->function, f->p95 * 1000, best.mean * 1000, best.per_call,
                     st_rules_cut(st_ans_label(best.item, "query"), 100),
                     st_ans_label(best.item, "query"));
    c.implementation = cache_impl(f, &best);
    return st_rules_add(out, &c);
}

int st_check_repeated_work(st_eng *e, const st_rule *r, st_candidates *out)
{
    return each_slow_function(e, r, repeated_work, out);
}

/* ---- STREAMING_PROCESSING ---- */

int st_check_large_objects(st_eng *e, const st_rule *r, st_candidates *out)
{
    static const char *const series[] = {"app.memory.largest_object"};
    static const char *const by = "process,function,host";
    double thr = st_eng_threshold(e, r);
    int64_t w = st_eng_window(e);
    st_answer *ans = NULL;
    int rv = st_rules_query(e, "app.memory.largest_object", "max", by, NULL, 0, w, 0, &ans);
    for (size_t i = 0; rv == ST_OK && i < ans->n; i++) {
        const st_ans_row *item = &ans->rows[i];
        double v = st_ans_value(item);
        const char *where = st_ans_label(item, "function");
        st_candidate c;
        if (!(v > thr)) {
            continue;
        }
        where = where[0] != '\0' ? where : st_ans_label(item, "process");
        st_candidate_init(&c);
        st_rules_entity(&c, item, by);
        st_rules_verdict(&c, r, v, thr, false);
        c.traffic_share = 1.0 / (double)ans->n;
        st_rules_summary(&c, "%s holds a %.1f MiB object (over %.0f MiB)", where, v / 1048576.0,
                         thr / 1048576.0);
        st_rules_evidence(e, &c, series, 1, json_pack("{s:f}", "largest_object_bytes", v), thr, w,
                          json_pack("[s]", st_ans_label(item, "host")));
        c.implementation = json_pack(
            "{s:s,s:f,s:i,s:[s,s,s]}", "target", where, "largest_object_bytes", v, "chunk_bytes",
            1024 * 1024, "steps",
            "read the data in pages or with a cursor (DECLARE c CURSOR FOR ...; FETCH "
            "1000 FROM c) instead of one result",
            "transform and write each chunk as it arrives (Node: stream.pipeline(source, "
            "transform, destination); Python: generators) so at most one chunk is in memory",
            "send responses chunked (Transfer-Encoding: chunked, NDJSON) instead of one "
            "serialized document");
        rv = st_rules_add(out, &c);
    }
    st_answer_unref(ans);
    return rv;
}

/* ---- MEMORY_LEAK_FIX ---- */

static double slope_of(const double *t, const double *v, size_t n, double *r2)
{
    double mt = 0, mv = 0, sxy = 0, sxx = 0, syy = 0;
    for (size_t i = 0; i < n; i++) {
        mt += t[i] / (double)n;
        mv += v[i] / (double)n;
    }
    for (size_t i = 0; i < n; i++) {
        sxy += (t[i] - mt) * (v[i] - mv);
        sxx += (t[i] - mt) * (t[i] - mt);
        syy += (v[i] - mv) * (v[i] - mv);
    }
    if (r2 != NULL) {
        *r2 = sxx > 0 && syy > 0 ? sxy * sxy / (sxx * syy) : 0;
    }
    return sxx > 0 ? sxy / sxx : 0;
}

bool st_leak_detect(const double *t, const double *v, size_t n, st_leak_fit *out)
{
    size_t tail = n / 3;
    memset(out, 0, sizeof(*out));
    if (n < 2) {
        return false;
    }
    out->slope = slope_of(t, v, n, &out->r2);
    out->tail_slope = tail >= 3 ? slope_of(t + n - tail, v + n - tail, tail, NULL) : 0;
    out->last = v[n - 1];
    return n >= ST_LEAK_MIN_POINTS && out->slope > 0 && out->r2 > ST_LEAK_MIN_R2 &&
           out->tail_slope >= ST_LEAK_TAIL_SHARE * out->slope;
}

static json_t *leak_impl(const char *process, const char *host, const st_leak_fit *fit,
                         double eta_h, double peak)
{
    char mitigation[256];
    snprintf(mitigation, sizeof(mitigation),
             "until fixed, restart before the limit: systemd MemoryHigh=%.0fM MemoryMax=%.0fM "
             "Restart=always (or a Kubernetes memory limit of %.0fMi)",
             peak * 0.9 / 1048576.0, peak / 1048576.0, peak / 1048576.0);
    return json_pack("{s:s,s:s,s:f,s:o,s:[s+++,s,s],s:s}", "process", process, "host", host,
                     "slope_bytes_per_hour", fit->slope, "eta_hours", st_rules_num(eta_h), "steps",
                     "take two heap profiles 10 minutes apart and diff them: heaptrack "
                     "--pid $(pidof ",
                     process, ") (native), ",
                     "node --heapsnapshot-signal=SIGUSR2 (Node), jemalloc "
                     "MALLOC_CONF=prof:true,lg_prof_interval:30 + jeprof (C/C++/Rust)",
                     "look for caches, maps and listeners that only grow: bound them (LRU with "
                     "a size cap) or remove entries when the request or session ends",
                     "check the fix: the RSS slope of this finding must drop to ~0 B/h",
                     "mitigation", mitigation);
}

static int leak_candidate(st_eng *e, const st_rule *r, const st_ans_row *item,
                          const st_leak_fit *fit, size_t nhosts, st_candidates *out)
{
    static const char *const series[] = {"mem.rss"};
    const char *process = st_ans_label(item, "process");
    int64_t w = (int64_t)st_eng_setting(e, "leak_window_ms");
    double peak = st_eng_setting(e, "memory_peak_bytes");
    double thr = st_eng_threshold(e, r);
    double eta = fit->last >= peak ? 0 : (peak - fit->last) / fit->slope;
    st_candidate c;
    st_candidate_init(&c);
    st_rules_entity(&c, item, "process,host");
    st_rules_verdict(&c, r, fit->slope, thr, false);
    c.severity = eta < 1 ? ST_SEV_CRITICAL : (eta < 24 ? ST_SEV_HIGH : ST_SEV_MEDIUM);
    c.traffic_share = nhosts > 0 ? 1.0 / (double)nhosts : 1.0;
    st_rules_summary(&c,
                     "%s on %s: RSS grows %.1f MiB/h (R² %.2f), %.0f MiB now, %.1f h to %.0f MiB",
                     process, st_ans_label(item, "host"), fit->slope / 1048576.0, fit->r2,
                     fit->last / 1048576.0, eta, peak / 1048576.0);
    st_rules_evidence(e, &c, series, 1,
                      json_pack("{s:f,s:f,s:f,s:f,s:f,s:f}", "slope_bytes_per_hour", fit->slope,
                                "r2", fit->r2, "tail_slope_bytes_per_hour", fit->tail_slope,
                                "rss_bytes", fit->last, "memory_peak_bytes", peak, "eta_hours",
                                eta),
                      thr, w, json_pack("[s]", st_ans_label(item, "host")));
    c.implementation = leak_impl(process, st_ans_label(item, "host"), fit, eta, peak);
    return st_rules_add(out, &c);
}

/* The groups of the RSS answer as they are walked: the ones that leak,
 * and every host seen (a finding's share of the fleet). */
struct leak {
    json_t *labels;
    st_leak_fit fit;
};

struct leak_walk {
    double thr;
    double *hours; /* a group's times, in hours */
    size_t cap;
    json_t *hosts; /* host -> true */
    struct leak *v;
    size_t n;
    size_t capv;
};

static int leak_group(void *arg, json_t *labels, const int64_t *t, const double *v, size_t n)
{
    struct leak_walk *w = arg;
    const char *h = json_string_value(json_object_get(labels, "host"));
    st_leak_fit fit;
    if (h != NULL && h[0] != '\0' && json_object_get(w->hosts, h) == NULL &&
        json_object_set_new(w->hosts, h, json_true()) != 0) {
        return ST_ENOMEM;
    }
    n = ST_MIN(n, w->cap);
    for (size_t i = 0; i < n; i++) {
        w->hours[i] = (double)t[i] / MS_PER_HOUR;
    }
    if (!st_leak_detect(w->hours, v, n, &fit) || !(fit.slope > w->thr)) {
        return ST_OK;
    }
    if (w->n == w->capv) {
        size_t cap = w->capv ? 2 * w->capv : 16;
        struct leak *nv = realloc(w->v, cap * sizeof(*nv));
        if (nv == NULL) {
            return ST_ENOMEM;
        }
        w->v = nv;
        w->capv = cap;
    }
    w->v[w->n++] = (struct leak){json_incref(labels), fit};
    return ST_OK;
}

int st_check_memory_leak(st_eng *e, const st_rule *r, st_candidates *out)
{
    int64_t w = (int64_t)st_eng_setting(e, "leak_window_ms");
    /* About 30 points per window: a long window reads minutes, a short one
     * (tests, quick checks) seconds. */
    int64_t step = ST_MAX((w / LEAK_POINTS) / 1000 * 1000, 1000);
    struct leak_walk lw = {.thr = st_eng_threshold(e, r)};
    int rv;
    if (w < step * ST_LEAK_MIN_POINTS) {
        return ST_OK;
    }
    lw.cap = (size_t)ST_MIN(w / step + 2, 250002);
    lw.hours = malloc(lw.cap * sizeof(*lw.hours));
    lw.hosts = json_object();
    rv = lw.hours == NULL || lw.hosts == NULL ? ST_ENOMEM : ST_OK;
    /* Each group walked as it is folded: 3,000 processes × 30 points are
     * 0.5 M JSON values as an answer. Past the series limit, host by host. */
    if (rv == ST_OK) {
        rv = st_eng_query_steps_each(e, "mem.rss", "avg", "host,process", NULL, 0, w, step,
                                     leak_group, &lw);
    }
    if (rv == ST_ETOOBIG) {
        st_answer *ans = NULL;
        for (size_t i = 0; i < lw.n; i++) {
            json_decref(lw.v[i].labels);
        }
        lw.n = 0;
        json_object_clear(lw.hosts);
        rv = st_rules_query_per_host(e, "mem.rss", "avg", "host,process", NULL, 0, w, step, &ans);
        rv = rv == ST_OK ? st_eng_answer_each(ans, leak_group, &lw) : rv;
        st_answer_unref(ans);
    }
    for (size_t i = 0; i < lw.n; i++) {
        if (rv == ST_OK) {
            st_ans_row item = {.labels = lw.v[i].labels};
            rv = leak_candidate(e, r, &item, &lw.v[i].fit, json_object_size(lw.hosts), out);
        }
        json_decref(lw.v[i].labels);
    }
    json_decref(lw.hosts);
    free(lw.v);
    free(lw.hours);
    return rv;
}
