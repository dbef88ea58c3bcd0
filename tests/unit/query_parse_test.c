/* st_query_parse: every bad parameter is ST_EINVAL with a message naming
 * it; good ones fill the query (times relative, absolute, RFC 3339, now;
 * matchers with their operators, anchored regular expressions). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "err.h"
#include "query.h"
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOW 1712345678000LL /* 2024-04-05T19:34:38Z */
#define SEC 1000LL
#define MINUTE 60000LL
#define HOUR 3600000LL
#define DAY 86400000LL
#define MAXP 24

struct pcase {
    const char *what;
    const char *param; /* the parameter the message must name */
    st_qparam p[MAXP];
};

static size_t count_params(const st_qparam *p)
{
    size_t n = 0;
    while (n < MAXP && p[n].key != NULL) {
        n++;
    }
    return n;
}

/* Parses p; expects ST_EINVAL and a message that names 'param'. */
static void expect_error(const struct pcase *c)
{
    st_query q;
    char err[300];
    char quoted[160];
    int rv;
    memset(err, 0, sizeof(err));
    rv = st_query_parse(c->p, count_params(c->p), NOW, &q, err, sizeof(err));
    snprintf(quoted, sizeof(quoted), "'%s'", c->param);
    if (rv != ST_EINVAL || strstr(err, quoted) == NULL) {
        fail_msg("%s: got %d (%s) \"%s\", want ST_EINVAL naming %s", c->what, rv, st_strerror(rv),
                 err, quoted);
    }
}

static void expect_ok(const st_qparam *p, st_query *q)
{
    char err[300] = "";
    int rv = st_query_parse(p, count_params(p), NOW, q, err, sizeof(err));
    if (rv != ST_OK) {
        fail_msg("parse failed: %d \"%s\"", rv, err);
    }
}

static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* ---- errors --------------------------------------------------------------- */

static void test_missing_or_bad_metric(void **state)
{
    char *long_name = repeat('m', 129);
    struct pcase cases[] = {
        {"no parameters at all", "metric", {{NULL, NULL}}},
        {"no metric", "metric", {{"agg", "max"}, {"from", "-1h"}}},
        {"empty metric", "metric", {{"metric", ""}}},
        {"metric over 128 bytes", "metric", {{"metric", long_name}}},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        expect_error(&cases[i]);
    }
    free(long_name);
}

static void test_bad_agg(void **state)
{
    struct pcase cases[] = {
        {"unknown agg", "agg", {{"metric", "m"}, {"agg", "median"}}},
        {"empty agg", "agg", {{"metric", "m"}, {"agg", ""}}},
        {"agg in capitals", "agg", {{"metric", "m"}, {"agg", "P95"}}},
        {"agg with a suffix", "agg", {{"metric", "m"}, {"agg", "p95x"}}},
        /* A regex compiled before the error is released (ASan checks). */
        {"unknown agg after a regex",
         "agg",
         {{"metric", "m"}, {"match", "route=~a|b"}, {"agg", "p42"}}},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        expect_error(&cases[i]);
    }
}

static void test_bad_match(void **state)
{
    char *long_value = repeat('v', 1100);
    char *long_key = repeat('k', 200);
    char big_value[1200];
    char big_key[260];
    struct pcase cases[] = {
        {"unbalanced parenthesis", "match", {{"metric", "m"}, {"match", "route=~(a"}}},
        {"unclosed bracket", "match", {{"metric", "m"}, {"match", "route=~[a-"}}},
        {"negated bad regex", "match", {{"metric", "m"}, {"match", "route!~a{2,1}"}}},
        {"no operator", "match", {{"metric", "m"}, {"match", "route"}}},
        {"only a tilde", "match", {{"metric", "m"}, {"match", "route~a"}}},
        {"bang without = or ~", "match", {{"metric", "m"}, {"match", "route!a"}}},
        {"empty label name", "match", {{"metric", "m"}, {"match", "=a"}}},
        {"empty matcher", "match", {{"metric", "m"}, {"match", ""}}},
        {"value over 1024 bytes", "match", {{"metric", "m"}, {"match", big_value}}},
        {"label over 128 bytes", "match", {{"metric", "m"}, {"match", big_key}}},
        {"bad regex after a good one",
         "match",
         {{"metric", "m"}, {"match", "host=~h.*"}, {"match", "route=~*"}}},
    };
    struct pcase too_many = {"17 matchers", "match", {{"metric", "m"}}};
    (void)state;
    snprintf(big_value, sizeof(big_value), "route=%s", long_value);
    snprintf(big_key, sizeof(big_key), "%s=a", long_key);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        expect_error(&cases[i]);
    }
    for (int i = 1; i <= ST_QUERY_MAX_MATCHERS + 1; i++) {
        too_many.p[i] = (st_qparam){"match", i % 2 ? "host=~h[0-9]" : "route!=z"};
    }
    expect_error(&too_many);
    free(long_value);
    free(long_key);
}

static void test_bad_range(void **state)
{
    struct pcase cases[] = {
        {"from after to", "from", {{"metric", "m"}, {"from", "2000"}, {"to", "1000"}}},
        {"from equal to to", "from", {{"metric", "m"}, {"from", "5000"}, {"to", "5000"}}},
        {"relative, inverted", "from", {{"metric", "m"}, {"from", "-1h"}, {"to", "-2h"}}},
        {"RFC 3339, inverted",
         "from",
         {{"metric", "m"}, {"from", "2024-04-05T12:00:00Z"}, {"to", "2024-04-05T11:00:00Z"}}},
        {"from now, to by default now", "from", {{"metric", "m"}, {"from", "now"}}},
        {"range of 401 days", "from", {{"metric", "m"}, {"from", "-401d"}}},
        {"range since 1970", "from", {{"metric", "m"}, {"from", "0"}}},
        {"absolute range of 400 days and 1 ms",
         "from",
         {{"metric", "m"}, {"from", "1000"}, {"to", "34560001001"}}},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        expect_error(&cases[i]);
    }
}

static void test_bad_step(void **state)
{
    struct pcase cases[] = {
        {"step below 1 s", "step", {{"metric", "m"}, {"step", "500ms"}}},
        {"step 0", "step", {{"metric", "m"}, {"step", "0"}}},
        {"step 0s", "step", {{"metric", "m"}, {"step", "0s"}}},
        {"negative step", "step", {{"metric", "m"}, {"step", "-1m"}}},
        {"step without a number", "step", {{"metric", "m"}, {"step", "m"}}},
        {"unknown unit", "step", {{"metric", "m"}, {"step", "1x"}}},
        {"fractional step under a second", "step", {{"metric", "m"}, {"step", "0.5s"}}},
        {"empty step", "step", {{"metric", "m"}, {"step", ""}}},
        {"too many buckets: 3 days at 1 s",
         "step",
         {{"metric", "m"}, {"from", "-3d"}, {"step", "1s"}}},
        {"too many buckets: 400 days at 1 min",
         "step",
         {{"metric", "m"}, {"from", "-400d"}, {"step", "1m"}}},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        expect_error(&cases[i]);
    }
}

static void test_bad_top_by_over(void **state)
{
    char *long_label = repeat('l', 129);
    struct pcase cases[] = {
        {"top 0", "top", {{"metric", "m"}, {"top", "0"}}},
        {"negative top", "top", {{"metric", "m"}, {"top", "-3"}}},
        {"top not a number", "top", {{"metric", "m"}, {"top", "abc"}}},
        {"top with a suffix", "top", {{"metric", "m"}, {"top", "3x"}}},
        {"fractional top", "top", {{"metric", "m"}, {"top", "3.5"}}},
        {"empty top", "top", {{"metric", "m"}, {"top", ""}}},
        {"top over the limit", "top", {{"metric", "m"}, {"top", "1001"}}},
        {"top overflowing int64", "top", {{"metric", "m"}, {"top", "99999999999999999999"}}},
        {"by with an empty label", "by", {{"metric", "m"}, {"by", "host,,route"}}},
        {"by starting with a comma", "by", {{"metric", "m"}, {"by", ",host"}}},
        {"by with 9 labels", "by", {{"metric", "m"}, {"by", "a,b,c,d,e,f,g,h,i"}}},
        {"by label over 128 bytes", "by", {{"metric", "m"}, {"by", long_label}}},
        {"empty over", "over", {{"metric", "m"}, {"agg", "ratio"}, {"over", ""}}},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        expect_error(&cases[i]);
    }
    free(long_label);
}

static void test_bad_times(void **state)
{
    static const char *bad[] = {
        "yesterday",
        "12abc",
        "-5x",
        "-h",
        "--1h",
        "+1h",
        "1e3",
        "",
        " ",
        "now()",
        "NOW",
        "2024-13-01T00:00:00Z",
        "2024-04-05T19:34:38ZZ",
        "2024-04-05T25:00:00Z",
        "2024-04-05 19:34:38Z",
        "2024-04-05T19:34:38Q",
        "2024-04-05",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        for (int k = 0; k < 2; k++) {
            struct pcase c = {bad[i], k == 0 ? "from" : "to", {{"metric", "m"}}};
            int64_t t = 0;
            c.p[1] = (st_qparam){k == 0 ? "from" : "to", bad[i]};
            expect_error(&c);
            if (st_query_time(bad[i], NOW, &t) != ST_EINVAL) {
                fail_msg("st_query_time(\"%s\") accepted it as %lld", bad[i], (long long)t);
            }
        }
    }
}

/* The message is cut to the buffer and always terminated. */
static void test_small_error_buffer(void **state)
{
    st_query q;
    char err[12];
    st_qparam p[] = {{"metric", "m"}, {"agg", "no-such-aggregation-at-all"}};
    (void)state;
    memset(err, 'x', sizeof(err));
    assert_int_equal(st_query_parse(p, 2, NOW, &q, err, sizeof(err)), ST_EINVAL);
    assert_true(memchr(err, '\0', sizeof(err)) != NULL);
    assert_int_equal(strncmp(err, "parameter", 9), 0);
}

/* ---- good parameters ------------------------------------------------------ */

static void test_times(void **state)
{
    static const struct {
        const char *s;
        int64_t want;
    } ok[] = {
        {"now", NOW},
        {"-1h", NOW - HOUR},
        {"-90m", NOW - 90 * MINUTE},
        {"-30s", NOW - 30 * SEC},
        {"-500ms", NOW - 500},
        {"-2d", NOW - 2 * DAY},
        {"-5", NOW - 5 * SEC}, /* a bare relative number is seconds */
        {"0", 0},
        {"1712345678000", 1712345678000LL},
        {"1712345678123", 1712345678123LL},
        {"2024-04-05T19:34:38Z", 1712345678000LL},
        {"2024-02-29T00:00:00Z", 1709164800000LL},
        {"1970-01-01T00:00:00Z", 0},
        {"2038-01-19T03:14:08Z", 2147483648000LL},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        int64_t t = -1;
        if (st_query_time(ok[i].s, NOW, &t) != ST_OK || t != ok[i].want) {
            fail_msg("st_query_time(\"%s\"): %lld, want %lld", ok[i].s, (long long)t,
                     (long long)ok[i].want);
        }
    }
}

/* RFC 3339 also allows a numeric offset and fractional seconds. */
static void test_rfc3339_offsets_and_fractions(void **state)
{
    static const struct {
        const char *s;
        int64_t want;
    } ok[] = {
        {"2024-04-05T21:34:38+02:00", 1712345678000LL},
        {"2024-04-05T14:34:38-05:00", 1712345678000LL},
        {"2024-04-05T19:34:38+00:00", 1712345678000LL},
        {"2024-04-05T19:34:38.250Z", 1712345678250LL},
        {"2024-04-05T19:34:38.5Z", 1712345678500LL},
        {"2024-04-05T21:34:38.001+02:00", 1712345678001LL},
    };
    int bad = 0;
    (void)state;
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        int64_t t = -1;
        int rv = st_query_time(ok[i].s, NOW, &t);
        if (rv != ST_OK || t != ok[i].want) {
            print_message("st_query_time(\"%s\"): rv %d, %lld, want %lld\n", ok[i].s, rv,
                          (long long)t, (long long)ok[i].want);
            bad++;
        }
    }
    if (bad > 0) {
        fail_msg("%d RFC 3339 times with offsets or fractions parse wrong", bad);
    }
}

static void test_defaults_and_range(void **state)
{
    st_query q;
    st_qparam p1[] = {{"metric", "http.server.duration"}, {NULL, NULL}};
    st_qparam p2[] = {{"metric", "m"}, {"from", "-2h"}, {"to", "now"}, {NULL, NULL}};
    st_qparam p3[] = {{"metric", "m"},
                      {"from", "2024-04-05T17:00:00Z"},
                      {"to", "1712345678000"},
                      {"step", "5m"},
                      {NULL, NULL}};
    /* Exactly at the limits: 400 days, 250000 buckets. */
    st_qparam p4[] = {{"metric", "m"}, {"from", "-400d"}, {NULL, NULL}};
    st_qparam p5[] = {{"metric", "m"}, {"from", "-250000s"}, {"step", "1s"}, {NULL, NULL}};
    (void)state;
    expect_ok(p1, &q);
    assert_string_equal(q.metric, "http.server.duration");
    assert_int_equal(q.agg, ST_AGG_DEFAULT);
    assert_int_equal(q.from_ms, NOW - HOUR);
    assert_int_equal(q.to_ms, NOW);
    assert_int_equal(q.step_ms, 0);
    assert_int_equal(q.top, 0);
    assert_int_equal(q.nm, 0);
    assert_int_equal(q.nby, 0);
    assert_string_equal(q.over, "result");
    st_query_release(&q);
    expect_ok(p2, &q);
    assert_int_equal(q.from_ms, NOW - 2 * HOUR);
    assert_int_equal(q.to_ms, NOW);
    st_query_release(&q);
    expect_ok(p3, &q);
    assert_int_equal(q.from_ms, 1712336400000LL);
    assert_int_equal(q.to_ms, NOW);
    assert_int_equal(q.step_ms, 5 * MINUTE);
    st_query_release(&q);
    expect_ok(p4, &q);
    assert_int_equal(q.to_ms - q.from_ms, ST_QUERY_MAX_RANGE_MS);
    st_query_release(&q);
    expect_ok(p5, &q);
    assert_int_equal((q.to_ms - q.from_ms) / q.step_ms, ST_QUERY_MAX_POINTS);
    st_query_release(&q);
}

static void test_every_agg(void **state)
{
    static const char *names[] = {"p50", "p90", "p95",   "p99",  "avg",   "min",
                                  "max", "sum", "count", "rate", "ratio", "delta"};
    static const enum st_agg want[] = {ST_AGG_P50,   ST_AGG_P90,  ST_AGG_P95,   ST_AGG_P99,
                                       ST_AGG_AVG,   ST_AGG_MIN,  ST_AGG_MAX,   ST_AGG_SUM,
                                       ST_AGG_COUNT, ST_AGG_RATE, ST_AGG_RATIO, ST_AGG_DELTA};
    (void)state;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        st_query q;
        st_qparam p[] = {{"metric", "m"}, {"agg", names[i]}, {NULL, NULL}};
        expect_ok(p, &q);
        assert_int_equal(q.agg, want[i]);
        assert_string_equal(st_agg_name(q.agg), names[i]);
        st_query_release(&q);
    }
}

/* A series record with the given labels, for st_store_labels_match. */
struct rec {
    Strata__V1__SeriesRecord r;
    Strata__V1__Label l[4];
    Strata__V1__Label *lp[4];
};

static void make_rec(struct rec *x, const char *route, const char *host)
{
    strata__v1__series_record__init(&x->r);
    for (int i = 0; i < 2; i++) {
        strata__v1__label__init(&x->l[i]);
        x->lp[i] = &x->l[i];
    }
    x->l[0].key = (char *)"host";
    x->l[0].value = (char *)host;
    x->l[1].key = (char *)"route";
    x->l[1].value = (char *)route;
    x->r.labels = x->lp;
    x->r.n_labels = route != NULL ? 2 : 1;
}

static bool matches(const char *matcher, const char *route, const char *host)
{
    st_query q;
    struct rec x;
    bool hit;
    st_qparam p[] = {{"metric", "m"}, {"match", matcher}, {NULL, NULL}};
    expect_ok(p, &q);
    make_rec(&x, route, host);
    hit = st_store_labels_match(&x.r, q.m, q.nm);
    st_query_release(&q);
    return hit;
}

static void test_matchers(void **state)
{
    st_query q;
    st_qparam p[] = {{"metric", "m"},           {"match", "route=a"},  {"match", "route!=b"},
                     {"match", "host=~h[0-2]"}, {"match", "host!~h9"}, {"match", "k=a=b"},
                     {"match", "k2=~"},         {"by", "host,route"},  {"top", "1000"},
                     {"over", "status"},        {NULL, NULL}};
    (void)state;
    expect_ok(p, &q);
    assert_int_equal(q.nm, 6);
    assert_string_equal(q.m[0].key, "route");
    assert_string_equal(q.m[0].value, "a");
    assert_int_equal(q.m[0].op, ST_MATCH_EQ);
    assert_int_equal(q.m[1].op, ST_MATCH_NE);
    assert_string_equal(q.m[1].value, "b");
    assert_int_equal(q.m[2].op, ST_MATCH_RE);
    assert_non_null(q.m[2].re);
    assert_string_equal(q.m[2].value, "h[0-2]");
    assert_int_equal(q.m[3].op, ST_MATCH_NRE);
    assert_non_null(q.m[3].re);
    assert_string_equal(q.m[4].key, "k");
    assert_string_equal(q.m[4].value, "a=b"); /* the first '=' splits */
    assert_int_equal(q.m[5].op, ST_MATCH_RE);
    assert_string_equal(q.m[5].value, "");
    assert_int_equal(q.nby, 2);
    assert_string_equal(q.by[0], "host");
    assert_string_equal(q.by[1], "route");
    assert_int_equal(q.top, 1000);
    assert_string_equal(q.over, "status");
    st_query_release(&q);
    assert_int_equal(q.nm, 0);

    /* Regular expressions match the whole value. */
    assert_true(matches("route=~a", "a", "h1"));
    assert_false(matches("route=~a", "ab", "h1"));
    assert_false(matches("route=~a", "ba", "h1"));
    assert_true(matches("route=~a|b", "b", "h1"));
    assert_false(matches("route=~a|b", "ab", "h1"));
    assert_true(matches("route!~a|b", "c", "h1"));
    assert_false(matches("route!~a.*", "abc", "h1"));
    /* A missing label is the empty string. */
    assert_true(matches("route=", NULL, "h1"));
    assert_true(matches("route=~", NULL, "h1"));
    assert_false(matches("route=~", "a", "h1"));
    assert_true(matches("route!=a", NULL, "h1"));
    assert_false(matches("route=a", NULL, "h1"));
    assert_true(matches("host=~h[0-2]", "a", "h2"));
    assert_false(matches("host=~h[0-2]", "a", "h3"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_or_bad_metric),
        cmocka_unit_test(test_bad_agg),
        cmocka_unit_test(test_bad_match),
        cmocka_unit_test(test_bad_range),
        cmocka_unit_test(test_bad_step),
        cmocka_unit_test(test_bad_top_by_over),
        cmocka_unit_test(test_bad_times),
        cmocka_unit_test(test_small_error_buffer),
        cmocka_unit_test(test_times),
        cmocka_unit_test(test_rfc3339_offsets_and_fractions),
        cmocka_unit_test(test_defaults_and_range),
        cmocka_unit_test(test_every_agg),
        cmocka_unit_test(test_matchers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
