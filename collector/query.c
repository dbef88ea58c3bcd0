/* Query parsing and execution. Raw answers return each stored point of
 * each matching series; distributions are summarised per point by agg. */
#include "query.h"

#include "err.h"
#include "frame.h"
#include "sketch.h"
#include "timeutil.h"
#include "util.h"

#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *agg_names[] = {"",    "p50", "p90",   "p95",  "p99",   "avg",  "min",
                                  "max", "sum", "count", "rate", "ratio", "delta"};

const char *st_agg_name(enum st_agg a)
{
    return (size_t)a < ST_ARRAY_LEN(agg_names) ? agg_names[a] : "";
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return ST_EINVAL;
}

static bool digits(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return false;
        }
    }
    return true;
}

/* What may follow the seconds of an RFC 3339 time: fractional seconds (to
 * ms) and "Z", "+hh:mm" or "-hh:mm" (or nothing: UTC). */
static int rfc3339_tail(const char *p, int64_t *ms, int64_t *off_min)
{
    int d = 0;
    *ms = 0;
    *off_min = 0;
    if (*p == '.') {
        for (p++; *p >= '0' && *p <= '9'; p++, d++) {
            *ms = d < 3 ? *ms * 10 + (*p - '0') : *ms;
        }
        for (; d < 3; d++) {
            *ms *= 10;
        }
    }
    if ((p[0] == '+' || p[0] == '-') && strlen(p) == 6 && p[3] == ':' && digits(p + 1, 2) &&
        digits(p + 4, 2)) {
        *off_min = ((p[1] - '0') * 10 + (p[2] - '0')) * 60 + (p[4] - '0') * 10 + (p[5] - '0');
        *off_min *= p[0] == '+' ? 1 : -1;
        return ST_OK;
    }
    if (p[0] == 'Z') {
        p++;
    }
    return *p == '\0' ? ST_OK : ST_EINVAL;
}

int st_query_time(const char *s, int64_t now_ms, int64_t *out)
{
    int64_t v;
    int64_t ms;
    int64_t off_min;
    struct tm tm;
    const char *end;
    if (strcmp(s, "now") == 0) {
        *out = now_ms;
        return ST_OK;
    }
    if (s[0] == '-' && st_duration_parse(s + 1, &v) == ST_OK) {
        *out = now_ms - v;
        return ST_OK;
    }
    if (st_parse_i64(s, &v) == ST_OK && v >= 0) {
        *out = v;
        return ST_OK;
    }
    memset(&tm, 0, sizeof(tm));
    end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (end != NULL && rfc3339_tail(end, &ms, &off_min) == ST_OK) {
        *out = (int64_t)timegm(&tm) * 1000 + ms - off_min * 60000;
        return ST_OK;
    }
    return ST_EINVAL;
}

static int parse_agg(const char *v, enum st_agg *out)
{
    for (size_t i = 1; i < ST_ARRAY_LEN(agg_names); i++) {
        if (strcmp(v, agg_names[i]) == 0) {
            *out = (enum st_agg)i;
            return ST_OK;
        }
    }
    return ST_EINVAL;
}

/* "k=v", "k!=v", "k=~re", "k!~re" */
static int parse_match(const char *s, st_matcher *m, char *err, size_t errlen)
{
    const char *op = strpbrk(s, "=!");
    size_t klen;
    const char *val;
    if (op == NULL || op == s) {
        return fail(err, errlen, "parameter 'match': '%.64s' is not label=value", s);
    }
    klen = (size_t)(op - s);
    if (op[0] == '=' && op[1] == '~') {
        m->op = ST_MATCH_RE;
        val = op + 2;
    } else if (op[0] == '=') {
        m->op = ST_MATCH_EQ;
        val = op + 1;
    } else if (op[0] == '!' && op[1] == '=') {
        m->op = ST_MATCH_NE;
        val = op + 2;
    } else if (op[0] == '!' && op[1] == '~') {
        m->op = ST_MATCH_NRE;
        val = op + 2;
    } else {
        return fail(err, errlen, "parameter 'match': bad operator in '%.64s'", s);
    }
    if (klen >= sizeof(m->key) || strlen(val) >= sizeof(m->value)) {
        return fail(err, errlen, "parameter 'match': label or value too long");
    }
    memcpy(m->key, s, klen);
    m->key[klen] = '\0';
    snprintf(m->value, sizeof(m->value), "%s", val);
    if (m->op == ST_MATCH_RE || m->op == ST_MATCH_NRE) {
        char anchored[1100];
        regex_t *re = malloc(sizeof(*re));
        snprintf(anchored, sizeof(anchored), "^(%s)$", val);
        if (re == NULL || regcomp(re, anchored, REG_EXTENDED | REG_NOSUB) != 0) {
            free(re);
            return fail(err, errlen, "parameter 'match': bad regular expression '%.64s'", val);
        }
        m->re = re;
    }
    return ST_OK;
}

static int parse_by(const char *v, st_query *q, char *err, size_t errlen)
{
    const char *p = v;
    while (*p != '\0') {
        size_t n = strcspn(p, ",");
        if (n == 0 || n >= sizeof(q->by[0]) || q->nby >= ST_QUERY_MAX_BY) {
            return fail(err, errlen, "parameter 'by': at most %d labels of at most 128 bytes",
                        ST_QUERY_MAX_BY);
        }
        memcpy(q->by[q->nby], p, n);
        q->by[q->nby++][n] = '\0';
        p += n + (p[n] == ',');
    }
    return ST_OK;
}

static int parse_one(const st_qparam *p, int64_t now_ms, st_query *q, char *err, size_t errlen)
{
    const char *k = p->key;
    const char *v = p->value;
    if (strcmp(k, "metric") == 0) {
        if (v[0] == '\0' || strlen(v) >= sizeof(q->metric)) {
            return fail(err, errlen, "parameter 'metric': empty or over 128 bytes");
        }
        snprintf(q->metric, sizeof(q->metric), "%s", v);
    } else if (strcmp(k, "agg") == 0) {
        if (parse_agg(v, &q->agg) != ST_OK) {
            return fail(err, errlen,
                        "parameter 'agg': unknown aggregation '%.32s' (p50 p90 p95 p99 avg min "
                        "max sum count rate ratio delta)",
                        v);
        }
    } else if (strcmp(k, "match") == 0) {
        if (q->nm >= ST_QUERY_MAX_MATCHERS) {
            return fail(err, errlen, "parameter 'match': at most %d", ST_QUERY_MAX_MATCHERS);
        }
        if (parse_match(v, &q->m[q->nm], err, errlen) != ST_OK) {
            return ST_EINVAL;
        }
        q->nm++;
    } else if (strcmp(k, "by") == 0) {
        return parse_by(v, q, err, errlen);
    } else if (strcmp(k, "from") == 0 || strcmp(k, "to") == 0) {
        int64_t *t = k[0] == 'f' ? &q->from_ms : &q->to_ms;
        if (st_query_time(v, now_ms, t) != ST_OK) {
            return fail(err, errlen, "parameter '%s': bad time '%.64s'", k, v);
        }
    } else if (strcmp(k, "step") == 0) {
        if (st_duration_parse(v, &q->step_ms) != ST_OK || q->step_ms < 1000) {
            return fail(err, errlen, "parameter 'step': bad duration '%.32s' (at least 1s)", v);
        }
    } else if (strcmp(k, "top") == 0) {
        int64_t n;
        if (st_parse_i64(v, &n) != ST_OK || n < 1 || n > ST_QUERY_MAX_TOP) {
            return fail(err, errlen, "parameter 'top': not a number from 1 to %d",
                        ST_QUERY_MAX_TOP);
        }
        q->top = (int)n;
    } else if (strcmp(k, "over") == 0) {
        if (v[0] == '\0' || strlen(v) >= sizeof(q->over)) {
            return fail(err, errlen, "parameter 'over': empty or over 128 bytes");
        }
        snprintf(q->over, sizeof(q->over), "%s", v);
    }
    return ST_OK;
}

int st_query_parse(const st_qparam *p, size_t n, int64_t now_ms, st_query *q, char *err,
                   size_t errlen)
{
    memset(q, 0, sizeof(*q));
    q->from_ms = now_ms - 3600 * 1000;
    q->to_ms = now_ms;
    for (size_t i = 0; i < n; i++) {
        if (parse_one(&p[i], now_ms, q, err, errlen) != ST_OK) {
            st_query_release(q);
            return ST_EINVAL;
        }
    }
    if (q->metric[0] == '\0') {
        st_query_release(q);
        return fail(err, errlen, "parameter 'metric': required");
    }
    if (q->to_ms <= q->from_ms) {
        st_query_release(q);
        return fail(err, errlen, "parameter 'from': must be before 'to'");
    }
    if (q->step_ms > 0 && (q->to_ms - q->from_ms) / q->step_ms > ST_QUERY_MAX_POINTS) {
        st_query_release(q);
        return fail(err, errlen, "parameter 'step': more than %d buckets in the range",
                    ST_QUERY_MAX_POINTS);
    }
    if (q->over[0] == '\0') {
        snprintf(q->over, sizeof(q->over), "result");
    }
    if (q->to_ms - q->from_ms > ST_QUERY_MAX_RANGE_MS) {
        st_query_release(q);
        return fail(err, errlen, "parameter 'from': range over the limit of 400 days");
    }
    return ST_OK;
}

void st_query_release(st_query *q)
{
    for (size_t i = 0; i < q->nm; i++) {
        if (q->m[i].re != NULL) {
            regfree(q->m[i].re);
            free(q->m[i].re);
            q->m[i].re = NULL;
        }
    }
    q->nm = 0;
}

/* ---- raw execution ---- */

struct raw_run {
    const st_query *q;
    json_t *series; /* array */
    json_t *cur;    /* points of the current series */
    size_t nseries;
    size_t npoints;
    int kind;
    const char *unit_seen;
    json_t *meta; /* the answer object */
    char *err;
    size_t errlen;
    double *vals;
    size_t valcap;
};

static double sketch_value(const Strata__V1__Sketch *m, enum st_agg agg)
{
    st_sketch *s = NULL;
    double v = NAN;
    if (st_sketch_from_proto(m, &s) != ST_OK) {
        return NAN;
    }
    switch (agg) {
    case ST_AGG_P50:
        v = st_sketch_quantile(s, 0.50);
        break;
    case ST_AGG_P90:
        v = st_sketch_quantile(s, 0.90);
        break;
    case ST_AGG_P99:
        v = st_sketch_quantile(s, 0.99);
        break;
    case ST_AGG_AVG:
        v = st_sketch_count(s) ? st_sketch_sum(s) / (double)st_sketch_count(s) : NAN;
        break;
    case ST_AGG_MIN:
        v = st_sketch_min(s);
        break;
    case ST_AGG_MAX:
        v = st_sketch_max(s);
        break;
    case ST_AGG_SUM:
        v = st_sketch_sum(s);
        break;
    case ST_AGG_COUNT:
        v = (double)st_sketch_count(s);
        break;
    default:
        v = st_sketch_quantile(s, 0.95);
        break;
    }
    st_sketch_free(s);
    return v;
}

static double point_value(const struct raw_run *r, const Strata__V1__Series *b, size_t i)
{
    if (r->kind == STRATA__V1__KIND__DISTRIBUTION) {
        return i < b->n_sketches ? sketch_value(b->sketches[i], r->q->agg) : NAN;
    }
    if (r->q->agg == ST_AGG_MIN && b->n_mins == st_series_npoints(b)) {
        return b->mins[i];
    }
    if (r->q->agg == ST_AGG_MAX && b->n_maxs == st_series_npoints(b)) {
        return b->maxs[i];
    }
    if (r->q->agg == ST_AGG_RATE && b->interval_ms > 0) {
        return r->vals[i] / ((double)b->interval_ms / 1000.0);
    }
    return r->vals[i];
}

static int raw_series(void *arg, const st_scan_series *s)
{
    struct raw_run *r = arg;
    json_t *labels = json_object();
    json_t *one;
    if (r->nseries >= ST_QUERY_MAX_SERIES) {
        fail(r->err, r->errlen, "the answer has more than %d series: narrow 'match'",
             ST_QUERY_MAX_SERIES);
        json_decref(labels);
        return ST_ETOOBIG;
    }
    for (size_t i = 0; labels != NULL && i < s->rec->n_labels; i++) {
        json_object_set_new(labels, s->rec->labels[i]->key, json_string(s->rec->labels[i]->value));
    }
    r->cur = json_array();
    one = json_pack("{s:o,s:o}", "labels", labels, "points", r->cur);
    if (one == NULL || json_array_append_new(r->series, one) != 0) {
        return ST_ENOMEM;
    }
    if (r->nseries++ == 0) {
        json_object_set_new(r->meta, "kind",
                            json_string(s->rec->kind == STRATA__V1__KIND__COUNTER ? "counter"
                                        : s->rec->kind == STRATA__V1__KIND__GAUGE
                                            ? "gauge"
                                            : "distribution"));
        json_object_set_new(r->meta, "unit", json_string(s->rec->unit));
    }
    r->kind = s->rec->kind;
    return 1;
}

static int raw_block(void *arg, const st_scan_series *s, const Strata__V1__Series *b)
{
    struct raw_run *r = arg;
    size_t n = st_series_npoints(b);
    (void)s;
    if (n > r->valcap) {
        double *nv = realloc(r->vals, n * sizeof(double));
        if (nv == NULL) {
            return ST_ENOMEM;
        }
        r->vals = nv;
        r->valcap = n;
    }
    if (r->kind != STRATA__V1__KIND__DISTRIBUTION) {
        st_series_values(b, r->vals);
    }
    for (size_t i = 0; i < n; i++) {
        int64_t t = b->start_unix_ms + (int64_t)i * b->interval_ms;
        double v;
        if (t < r->q->from_ms || t >= r->q->to_ms) {
            continue;
        }
        if (++r->npoints > ST_QUERY_MAX_POINTS) {
            fail(r->err, r->errlen,
                 "the answer has more than %d points: shorten the range or set 'step'",
                 ST_QUERY_MAX_POINTS);
            return ST_ETOOBIG;
        }
        v = point_value(r, b, i);
        json_array_append_new(r->cur, json_pack("[I,f]", (json_int_t)t, isfinite(v) ? v : 0.0));
    }
    return ST_OK;
}

static int run_raw(st_store *st, const st_query *q, json_t **out, char *err, size_t errlen)
{
    struct raw_run r;
    st_scan_cb cb = {raw_series, raw_block, &r, NULL};
    int rv;
    memset(&r, 0, sizeof(r));
    r.q = q;
    r.err = err;
    r.errlen = errlen;
    r.series = json_array();
    r.meta = json_pack("{s:s,s:s,s:I,s:I}", "metric", q->metric, "agg",
                       q->agg ? st_agg_name(q->agg) : "", "from", (json_int_t)q->from_ms, "to",
                       (json_int_t)q->to_ms);
    if (r.series == NULL || r.meta == NULL) {
        json_decref(r.series);
        json_decref(r.meta);
        return ST_ENOMEM;
    }
    json_object_set(r.meta, "series", r.series);
    json_object_set_new(r.meta, "resolution", json_string("raw"));
    rv = st_store_scan(st, q->metric, q->m, q->nm, q->from_ms, q->to_ms, &cb);
    json_decref(r.series);
    free(r.vals);
    if (rv != ST_OK) {
        if (rv != ST_ETOOBIG) {
            fail(err, errlen, "query failed: %s", st_strerror(rv));
        }
        json_decref(r.meta);
        return rv;
    }
    *out = r.meta;
    return ST_OK;
}

int st_query_run(st_store *st, const st_query *q, json_t **out, char *err, size_t errlen)
{
    if (q->agg != ST_AGG_DEFAULT || q->step_ms > 0 || q->nby > 0 || q->top > 0) {
        return st_query_run_agg(st, q, out, err, errlen);
    }
    return run_raw(st, q, out, err, errlen);
}
