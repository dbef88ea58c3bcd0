/* Unit tests for the statsd sampler: the line parser (every type, rates,
 * tags, DogStatsD extras, malformed lines of every kind next to good ones),
 * the aggregate (exact counter sums, gauge last/min/max with relative
 * updates, timer sketches, sets, caps), the merge property across agents,
 * and the whole sampler over a real UDP socket into a real fold. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "config.h"
#include "err.h"
#include "fold.h"
#include "frame.h"
#include "sampler.h"
#include "samplers/samplers.h"
#include "samplers/statsd.h"
#include "samplers/statsd_parse.h"
#include "sketch.h"
#include "timeutil.h"
#include "util.h"

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const st_statsd_limits LIM = {1000, 16, 100000, 7};

/* ---- helpers ---- */

static int parse(const char *text, st_statsd_line *l)
{
    return st_statsd_parse(text, strlen(text), 16, l, NULL);
}

static st_statsd_agg *agg_of(const char *datagram)
{
    st_statsd_agg *a = NULL;
    assert_int_equal(st_statsd_agg_new(&LIM, &a), ST_OK);
    if (datagram != NULL) {
        st_statsd_agg_datagram(a, datagram, strlen(datagram), false);
    }
    return a;
}

/* The entry named name whose tags are exactly "k=v,k=v" (sorted) or "". */
static bool find_entry(const st_statsd_agg *a, const char *name, const char *tags,
                       st_statsd_entry *out)
{
    for (size_t i = 0; i < st_statsd_agg_count(a); i++) {
        char buf[512] = "";
        size_t off = 0;
        assert_int_equal(st_statsd_agg_entry(a, i, out), ST_OK);
        for (size_t t = 0; t < out->ntags; t++) {
            off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s%s=%s", t ? "," : "",
                                    out->tags[t].key, out->tags[t].value);
        }
        if (strcmp(out->name, name) == 0 && strcmp(buf, tags) == 0) {
            return true;
        }
    }
    return false;
}

static st_statsd_stats stats_of(const st_statsd_agg *a)
{
    st_statsd_stats s;
    st_statsd_agg_stats(a, &s);
    return s;
}

static void assert_near_rel(double got, double want, double rel)
{
    if (!(fabs(got - want) <= rel * fabs(want))) {
        fail_msg("got %.9g, want %.9g within %.2g%%", got, want, rel * 100);
    }
}

/* ---- parser: each type ---- */

static void test_parse_types(void **state)
{
    st_statsd_line l;
    (void)state;
    assert_int_equal(parse("hits:3|c", &l), ST_OK);
    assert_int_equal(l.type, ST_STATSD_COUNTER);
    assert_true(l.value == 3 && l.rate == 1 && l.ntags == 0 && l.nvalues == 1);
    assert_int_equal(l.name.len, 4);
    assert_memory_equal(l.name.p, "hits", 4);

    assert_int_equal(parse("temp:-12.5|g", &l), ST_OK);
    assert_int_equal(l.type, ST_STATSD_GAUGE);
    assert_true(l.relative && l.value == -12.5);
    assert_int_equal(parse("temp:+4|g", &l), ST_OK);
    assert_true(l.relative && l.value == 4);
    assert_int_equal(parse("temp:4|g", &l), ST_OK);
    assert_false(l.relative);

    assert_int_equal(parse("t:250|ms", &l), ST_OK);
    assert_int_equal(l.type, ST_STATSD_TIMER);
    assert_int_equal(parse("h:0.25|h", &l), ST_OK);
    assert_int_equal(l.type, ST_STATSD_HISTOGRAM);
    assert_int_equal(parse("d:1:2:3|d", &l), ST_OK);
    assert_int_equal(l.type, ST_STATSD_HISTOGRAM);
    assert_int_equal(l.nvalues, 3);
    assert_int_equal(parse("users:alice@example|s", &l), ST_OK);
    assert_int_equal(l.type, ST_STATSD_SET);
    assert_int_equal(l.raw.len, 13);
}

static void test_parse_rate_and_tags(void **state)
{
    st_statsd_line l;
    (void)state;
    assert_int_equal(parse("c:1|c|@0.1|#zone:b,app:web,canary", &l), ST_OK);
    assert_true(l.rate == 0.1);
    assert_int_equal(l.ntags, 3);
    /* sorted by key; a tag without a value reads "true" */
    assert_memory_equal(l.tags[0].key.p, "app", 3);
    assert_memory_equal(l.tags[1].key.p, "canary", 6);
    assert_int_equal(l.tags[1].value.len, 4);
    assert_memory_equal(l.tags[1].value.p, "true", 4);
    assert_memory_equal(l.tags[2].key.p, "zone", 4);
    /* tags before the rate, values with ':' and spaces, empty tags skipped */
    assert_int_equal(parse("c:1|c|#url:http://x/y,,ab:c d,|@0.5", &l), ST_OK);
    assert_int_equal(l.ntags, 2);
    assert_true(l.rate == 0.5);
    assert_memory_equal(l.tags[1].value.p, "http://x/y", 10);
    /* DogStatsD container id, external data, cardinality and timestamp */
    assert_int_equal(parse("c:1|c|#a:b|c:83f1|e:it-false|card:low|T1700000000", &l), ST_OK);
    assert_int_equal(l.ntags, 1);
    /* UTF-8 names and tags are fine */
    assert_int_equal(parse("caf\xc3\xa9.visits:1|c|#city:K\xc3\xb6ln", &l), ST_OK);
    /* events and service checks carry no metric */
    assert_int_equal(parse("_e{5,4}:title|text", &l), ST_EUNSUPPORTED);
    assert_int_equal(parse("_sc|db|0", &l), ST_EUNSUPPORTED);
}

static void test_parse_numbers(void **state)
{
    double v;
    (void)state;
    assert_int_equal(st_statsd_number("0.1", 3, &v), ST_OK);
    assert_true(v == 0.1);
    assert_int_equal(st_statsd_number("-1e3", 4, &v), ST_OK);
    assert_true(v == -1000);
    assert_int_equal(st_statsd_number(".5", 2, &v), ST_OK);
    assert_true(v == 0.5);
    assert_int_equal(st_statsd_number("12345678901234567890", 20, &v), ST_OK);
    assert_true(v == 12345678901234567890.0);
    assert_int_equal(st_statsd_number("nan", 3, &v), ST_EPARSE);
    assert_int_equal(st_statsd_number("inf", 3, &v), ST_EPARSE);
    assert_int_equal(st_statsd_number("-Infinity", 9, &v), ST_EPARSE);
    assert_int_equal(st_statsd_number("0x10", 4, &v), ST_EPARSE);
    assert_int_equal(st_statsd_number("1e400", 5, &v), ST_EPARSE);
    assert_int_equal(st_statsd_number("1.2.3", 5, &v), ST_EPARSE);
    assert_int_equal(st_statsd_number("+", 1, &v), ST_EPARSE);
    assert_int_equal(st_statsd_number("", 0, &v), ST_EPARSE);
    /* The fast path agrees with strtod to the last bit. */
    srand(7);
    for (int i = 0; i < 100000; i++) {
        char buf[64];
        double want;
        int n = snprintf(buf, sizeof(buf), "%d.%0*d", rand() % 100000, 1 + rand() % 8,
                         rand() % 10000000);
        want = strtod(buf, NULL);
        assert_int_equal(st_statsd_number(buf, (size_t)n, &v), ST_OK);
        if (v != want) {
            fail_msg("%s: got %.17g, strtod %.17g", buf, v, want);
        }
    }
}

/* ---- parser: malformed lines ---- */

static void test_parse_malformed(void **state)
{
    static const struct {
        const char *line;
        int rv;
    } bad[] = {
        {"nocolon", ST_EPARSE},        {"a:1", ST_EPARSE},         /* missing type */
        {"a:1|", ST_EPARSE},           {"a:1|x", ST_EPARSE},       /* unknown type */
        {"a:1|mss", ST_EPARSE},        {"a:abc|c", ST_EPARSE},     /* bad number */
        {"a:1.2.3|c", ST_EPARSE},      {"a:|c", ST_EPARSE},        /* empty value */
        {"a:nan|g", ST_EPARSE},        {"a:NaN|ms", ST_EPARSE},    /* NaN */
        {"a:inf|ms", ST_EPARSE},       {"a:-inf|h", ST_EPARSE},    /* infinities */
        {"a:1e999|d", ST_EPARSE},      {":1|c", ST_EPARSE},        /* overflow, empty name */
        {"a b:1|c", ST_EPARSE},        {"a\tb:1|c", ST_EPARSE},    /* space, control */
        {"a\xff:1|c", ST_EPARSE},      {"a:-1|c", ST_EPARSE},      /* bad UTF-8, negative count */
        {"a:1|c|@0", ST_EPARSE},       {"a:1|c|@1.5", ST_EPARSE},  /* rates */
        {"a:1|c|@x", ST_EPARSE},       {"a:1|c||#a:b", ST_EPARSE}, /* empty field */
        {"a:1|c|#:v", ST_EPARSE},      {"a:1|c|#k:v,k:w", ST_EPARSE}, /* key twice */
        {"a:1|c|#k:v\x01", ST_EPARSE}, {"a:1|c|x:1", ST_EPARSE},      /* unknown field */
        {"a:1|c|Tabc", ST_EPARSE},     {"a:+1:2|g", ST_EPARSE},       /* multi-value gauge */
        {"a:1|c|#a b:c", ST_EPARSE},                                  /* space in a tag key */
        {"a:1:|ms", ST_EPARSE},        {"a|b:1|c", ST_EPARSE},
    };
    st_statsd_line l;
    char name[200];
    char line[9000];
    char tags[600];
    size_t off = 0;
    (void)state;
    for (size_t i = 0; i < ST_ARRAY_LEN(bad); i++) {
        const char *why = NULL;
        int rv = st_statsd_parse(bad[i].line, strlen(bad[i].line), 16, &l, &why);
        if (rv != bad[i].rv) {
            fail_msg("'%s': got %d, want %d", bad[i].line, rv, bad[i].rv);
        }
        assert_non_null(why);
    }
    /* a name of 128 bytes passes, 129 does not */
    memset(name, 'n', 128);
    snprintf(name + 128, sizeof(name) - 128, ":1|c");
    assert_int_equal(parse(name, &l), ST_OK);
    memset(name, 'n', 129);
    snprintf(name + 129, sizeof(name) - 129, ":1|c");
    assert_int_equal(parse(name, &l), ST_ETOOBIG);
    /* a line over 8 KiB */
    memset(line, 'x', sizeof(line));
    memcpy(line, "a:1|c|#k:", 9);
    assert_int_equal(st_statsd_parse(line, ST_STATSD_MAX_LINE + 1, 16, &l, NULL), ST_ETOOBIG);
    /* a tag value over 256 bytes */
    assert_int_equal(st_statsd_parse(line, 9 + 257, 16, &l, NULL), ST_ETOOBIG);
    assert_int_equal(st_statsd_parse(line, 9 + 256, 16, &l, NULL), ST_OK);
    /* 16 tags pass, 17 are too many */
    off = (size_t)snprintf(tags, sizeof(tags), "a:1|c|#");
    for (int i = 0; i < 17; i++) {
        off += (size_t)snprintf(tags + off, sizeof(tags) - off, "%st%02d:v", i ? "," : "", i);
        assert_int_equal(parse(tags, &l), i < 16 ? ST_OK : ST_ETOOBIG);
    }
    assert_int_equal(st_statsd_parse(tags, strlen(tags), 0, &l, NULL), ST_ETOOBIG);
}

/* ---- datagrams: bad lines next to good ones ---- */

static void test_datagram_mixed(void **state)
{
    const char *d = "good.c:1|c\n"
                    "bad line\n"
                    "good.c:2|c\r\n"
                    "\n"
                    "good.ms:100|ms|#f:x\n"
                    "nan:nan|g\n"
                    ":5|c\n"
                    "good.c:3|c|#too,many,tags,here,aa,bb,cc,dd,ee,ff,gg,hh,ii,jj,kk,ll,mm\n"
                    "_e{1,1}:a|b\n"
                    "good.c:4|c";
    st_statsd_agg *a = agg_of(d);
    st_statsd_entry e;
    st_statsd_stats s = stats_of(a);
    (void)state;
    assert_int_equal(s.received, 9);
    assert_int_equal(s.malformed, 4);
    assert_int_equal(s.ignored, 1);
    assert_int_equal(s.dropped, 0);
    assert_true(find_entry(a, "good.c", "", &e));
    assert_true(e.count == 7); /* 1 + 2 + 4 */
    assert_int_equal(e.lines, 3);
    assert_true(find_entry(a, "good.ms", "f=x", &e));
    assert_int_equal(st_sketch_count(e.sketch), 1);
    st_statsd_agg_free(a);
}

static void test_datagram_truncated(void **state)
{
    const char *d = "a:1|c\nb:2|c\nc:3|";
    st_statsd_agg *a = agg_of(NULL);
    st_statsd_stats s;
    st_statsd_entry e;
    (void)state;
    st_statsd_agg_datagram(a, d, strlen(d), true);
    s = stats_of(a);
    assert_int_equal(s.received, 3);
    assert_int_equal(s.malformed, 1);
    assert_true(find_entry(a, "b", "", &e) && e.count == 2);
    assert_false(find_entry(a, "c", "", &e));
    st_statsd_agg_free(a);
}

/* ---- aggregation ---- */

static void test_counter_sums(void **state)
{
    st_statsd_agg *a = agg_of(NULL);
    st_statsd_entry e;
    char line[128];
    (void)state;
    for (int i = 1; i <= 1000; i++) {
        int n = snprintf(line, sizeof(line), "req:%d|c|#route:/a,code:200", i);
        st_statsd_agg_datagram(a, line, (size_t)n, false);
        n = snprintf(line, sizeof(line), "req:%d|c|#code:200,route:/a|@0.1", i);
        st_statsd_agg_datagram(a, line, (size_t)n, false);
        n = snprintf(line, sizeof(line), "multi:%d:%d|c|@0.5", i, i);
        st_statsd_agg_datagram(a, line, (size_t)n, false);
    }
    /* tag order does not matter: one series */
    assert_int_equal(st_statsd_agg_count(a), 2);
    assert_true(find_entry(a, "req", "code=200,route=/a", &e));
    assert_true(e.count == 500500.0 + 5005000.0);
    assert_true(find_entry(a, "multi", "", &e));
    assert_true(e.count == 2 * 2 * 500500.0);
    st_statsd_agg_free(a);
}

static void test_gauges(void **state)
{
    st_statsd_agg *a = agg_of("g:5|g\ng:+3|g\ng:-10|g\ng:7|g\nrel:+5|g\nrel:-20|g\nrel:50|g\n"
                              "rel:+1|g\nonly:-2|g\nonly:+1|g");
    st_statsd_entry e;
    double last;
    double lo;
    double hi;
    (void)state;
    assert_true(find_entry(a, "g", "", &e));
    st_statsd_gauge_resolve(&e.gauge, 1234, &last, &lo, &hi);
    assert_true(last == 7 && lo == -2 && hi == 8);
    /* relative updates before the first absolute one start from the base */
    assert_true(find_entry(a, "rel", "", &e));
    st_statsd_gauge_resolve(&e.gauge, 100, &last, &lo, &hi);
    assert_true(last == 51 && lo == 50 && hi == 105);
    assert_true(find_entry(a, "only", "", &e));
    st_statsd_gauge_resolve(&e.gauge, 10, &last, &lo, &hi);
    assert_true(last == 9 && lo == 8 && hi == 9);
    st_statsd_gauge_resolve(&e.gauge, 0, &last, &lo, &hi);
    assert_true(last == -1 && lo == -2 && hi == -1);
    st_statsd_agg_free(a);
}

static void test_gauge_bases(void **state)
{
    st_statsd_agg *a = agg_of("conn:+1|g|#ch:a");
    st_statsd_agg *carry = agg_of(NULL);
    st_statsd_entry e;
    double v = 0;
    (void)state;
    assert_true(find_entry(a, "conn", "ch=a", &e));
    assert_int_equal(st_statsd_agg_get_gauge(carry, &e, &v), ST_ENOENT);
    assert_int_equal(st_statsd_agg_put_gauge(carry, &e, 41), ST_OK);
    assert_int_equal(st_statsd_agg_get_gauge(carry, &e, &v), ST_OK);
    assert_true(v == 41);
    assert_int_equal(st_statsd_agg_put_gauge(carry, &e, 42), ST_OK);
    assert_int_equal(st_statsd_agg_get_gauge(carry, &e, &v), ST_OK);
    assert_true(v == 42);
    assert_int_equal(st_statsd_agg_count(carry), 1);
    st_statsd_agg_free(a);
    st_statsd_agg_free(carry);
}

/* Values 1..n ms, shuffled, through the parser: count, min, max exact,
 * p50/p95/p99 within 1 % of the exact order statistic. */
static void check_timer(double rate, uint64_t reps)
{
    st_statsd_agg *a = agg_of(NULL);
    st_statsd_entry e;
    char line[128];
    int order[1000];
    (void)rate;
    for (int i = 0; i < 1000; i++) {
        order[i] = i + 1;
    }
    for (int i = 999; i > 0; i--) {
        int j = rand() % (i + 1);
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (int i = 0; i < 1000; i++) {
        int n = rate < 1 ? snprintf(line, sizeof(line), "t:%d|ms|@%g", order[i], rate)
                         : snprintf(line, sizeof(line), "t:%d|ms", order[i]);
        st_statsd_agg_datagram(a, line, (size_t)n, false);
    }
    assert_true(find_entry(a, "t", "", &e));
    assert_int_equal(st_sketch_count(e.sketch), 1000 * reps);
    assert_true(st_sketch_min(e.sketch) == 0.001);
    assert_true(st_sketch_max(e.sketch) == 1.0);
    assert_near_rel(st_sketch_sum(e.sketch), 500.5 * (double)reps, 1e-9);
    assert_near_rel(st_sketch_quantile(e.sketch, 0.5), 0.500, 0.01);
    assert_near_rel(st_sketch_quantile(e.sketch, 0.95), 0.950, 0.01);
    assert_near_rel(st_sketch_quantile(e.sketch, 0.99), 0.990, 0.01);
    st_statsd_agg_free(a);
}

static void test_timers(void **state)
{
    st_statsd_agg *a;
    st_statsd_entry e;
    (void)state;
    srand(11);
    check_timer(1, 1);
    check_timer(0.25, 4); /* round(1 / 0.25) observations per line */
    check_timer(0.3, 3);  /* round(3.33) */
    /* histograms and distributions are kept as sent (not / 1000) */
    a = agg_of("h:250|h\nh:750|h\nd:1:2:3|d|@0.5\n");
    assert_true(find_entry(a, "h", "", &e));
    assert_int_equal(e.type, ST_STATSD_HISTOGRAM);
    assert_true(st_sketch_min(e.sketch) == 250 && st_sketch_max(e.sketch) == 750);
    assert_true(find_entry(a, "d", "", &e));
    assert_int_equal(st_sketch_count(e.sketch), 6);
    assert_true(st_sketch_sum(e.sketch) == 12);
    st_statsd_agg_free(a);
}

static void test_sets(void **state)
{
    st_statsd_agg *a = agg_of(NULL);
    st_statsd_limits small = LIM;
    st_statsd_entry e;
    char line[64];
    (void)state;
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(line, sizeof(line), "users:u%d|s|#app:web", i % 777);
        st_statsd_agg_datagram(a, line, (size_t)n, false);
    }
    assert_true(find_entry(a, "users", "app=web", &e));
    assert_int_equal(e.distinct, 777);
    st_statsd_agg_free(a);
    /* past max_set, new members are dropped and counted */
    small.max_set = 10;
    assert_int_equal(st_statsd_agg_new(&small, &a), ST_OK);
    for (int i = 0; i < 15; i++) {
        int n = snprintf(line, sizeof(line), "s:%d|s\ns:0|s", i);
        st_statsd_agg_datagram(a, line, (size_t)n, false);
    }
    assert_true(find_entry(a, "s", "", &e));
    assert_int_equal(e.distinct, 10);
    assert_int_equal(stats_of(a).dropped, 5);
    assert_int_equal(stats_of(a).received, 30);
    st_statsd_agg_free(a);
}

static void test_series_cap_and_conflict(void **state)
{
    st_statsd_limits lim = LIM;
    st_statsd_agg *a = NULL;
    st_statsd_entry e;
    char line[64];
    (void)state;
    lim.max_series = 10;
    assert_int_equal(st_statsd_agg_new(&lim, &a), ST_OK);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 20; i++) {
            int n = snprintf(line, sizeof(line), "s%02d:1|c", i);
            st_statsd_agg_datagram(a, line, (size_t)n, false);
        }
        /* a series known in this interval still takes lines when full */
        assert_int_equal(st_statsd_agg_count(a), 10);
        assert_int_equal(stats_of(a).dropped, 10);
        assert_true(find_entry(a, "s00", "", &e) && e.count == 1);
        st_statsd_agg_datagram(a, "s00:1|g", 7, false);
        assert_int_equal(stats_of(a).malformed, 1); /* another type this interval */
        st_statsd_agg_reset(a);
        assert_int_equal(st_statsd_agg_count(a), 0);
        assert_int_equal(stats_of(a).received, 0);
    }
    st_statsd_agg_free(a);
    lim.max_series = 0;
    assert_int_equal(st_statsd_agg_new(&lim, &a), ST_EINVAL);
}

/* Many series through growth and resets keep exact results, and the
 * sketch pool hands back empty sketches. */
static void test_growth_and_reset(void **state)
{
    st_statsd_limits lim = LIM;
    st_statsd_agg *a = NULL;
    st_statsd_entry e;
    char line[96];
    (void)state;
    lim.max_series = 5000;
    assert_int_equal(st_statsd_agg_new(&lim, &a), ST_OK);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 4000; i++) {
            int n = snprintf(line, sizeof(line), "fn.duration:%d|ms|#function:f%d,type:query",
                             i % 100 + 1, i % 1000);
            st_statsd_agg_datagram(a, line, (size_t)n, false);
        }
        assert_int_equal(st_statsd_agg_count(a), 1000);
        for (int f = 0; f < 1000; f += 111) {
            snprintf(line, sizeof(line), "function=f%d,type=query", f);
            assert_true(find_entry(a, "fn.duration", line, &e));
            assert_int_equal(st_sketch_count(e.sketch), 4);
        }
        st_statsd_agg_reset(a);
    }
    st_statsd_agg_free(a);
}

/* Three agents' sketches merged as the collector merges them: the fleet
 * p95 is the p95 of all 3000 values within 1 %. */
static void test_fleet_merge(void **state)
{
    st_sketch *fleet = NULL;
    st_sketch *from_wire = NULL;
    char line[128];
    (void)state;
    assert_int_equal(st_sketch_new(0, &fleet), ST_OK);
    assert_int_equal(st_sketch_new(0, &from_wire), ST_OK);
    for (int agent = 0; agent < 3; agent++) {
        st_statsd_agg *a = agg_of(NULL);
        st_statsd_entry e;
        Strata__V1__Sketch m = STRATA__V1__SKETCH__INIT;
        for (int v = agent * 1000 + 1; v <= agent * 1000 + 1000; v++) {
            int n = snprintf(line, sizeof(line),
                             "app.function.duration:%d|ms|#function:checkout,type:mutation", v);
            st_statsd_agg_datagram(a, line, (size_t)n, false);
        }
        assert_true(find_entry(a, "app.function.duration", "function=checkout,type=mutation", &e));
        /* each agent on its own: p95 of its 1000 values */
        assert_near_rel(st_sketch_quantile(e.sketch, 0.95),
                        (agent * 1000 + 1 + floor(0.95 * 999)) / 1000.0, 0.01);
        assert_int_equal(st_sketch_merge(fleet, e.sketch), ST_OK);
        assert_int_equal(st_sketch_to_proto(e.sketch, &m), ST_OK);
        assert_int_equal(st_sketch_merge_proto(from_wire, &m), ST_OK);
        st_sketch_proto_clear(&m);
        st_statsd_agg_free(a);
    }
    /* exact p95 of 1..3000 ms: rank floor(0.95 * 2999) = 2849 -> 2850 ms */
    assert_int_equal(st_sketch_count(fleet), 3000);
    assert_near_rel(st_sketch_quantile(fleet, 0.95), 2.850, 0.01);
    assert_near_rel(st_sketch_quantile(fleet, 0.50), 1.500, 0.01);
    assert_near_rel(st_sketch_quantile(fleet, 0.99), 2.970, 0.01);
    assert_true(st_sketch_quantile(from_wire, 0.95) == st_sketch_quantile(fleet, 0.95));
    st_sketch_free(fleet);
    st_sketch_free(from_wire);
}

/* ---- the sampler: real socket, real fold ---- */

typedef struct sfix {
    st_cfg_doc *doc;
    void *ctx;
    st_fold *fold;
    Strata__V1__Frame *frame;
    int fd;
} sfix;

static int sampler_init(sfix *f, const char *yaml, st_cfg_error *err)
{
    st_sampler_env env = {"/proc", "/sys", "/tmp", 1000, false};
    int rv;
    memset(f, 0, sizeof(*f));
    f->fd = -1;
    assert_int_equal(st_fold_new(&f->fold), ST_OK);
    assert_int_equal(st_cfg_load_string("agent.yaml", yaml, strlen(yaml), &f->doc, err), ST_OK);
    rv = st_statsd_init(f->doc, st_cfg_get(st_cfg_root(f->doc), "statsd"), &env, &f->ctx, err);
    return rv;
}

static void sampler_done(sfix *f)
{
    st_statsd_fini(f->ctx);
    st_cfg_doc_free(f->doc);
    st_fold_free(f->fold);
    if (f->frame != NULL) {
        st_frame_free(f->frame);
    }
    if (f->fd >= 0) {
        close(f->fd);
    }
}

static void sampler_run(sfix *f, int64_t t_ms)
{
    assert_int_equal(st_statsd_sample(f->ctx, st_fold_begin(f->fold, t_ms, 1000)), ST_OK);
}

static void sampler_take(sfix *f)
{
    if (f->frame != NULL) {
        st_frame_free(f->frame);
    }
    f->frame = calloc(1, sizeof(*f->frame));
    assert_non_null(f->frame);
    strata__v1__frame__init(f->frame);
    assert_int_equal(st_fold_take(f->fold, INT64_MAX, f->frame), ST_OK);
}

static void send_text(sfix *f, const char *text)
{
    struct sockaddr_in to = {.sin_family = AF_INET};
    to.sin_port = htons((uint16_t)st_statsd_port(f->ctx));
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (f->fd < 0) {
        f->fd = socket(AF_INET, SOCK_DGRAM, 0);
        assert_true(f->fd >= 0);
    }
    assert_int_equal(sendto(f->fd, text, strlen(text), 0, (struct sockaddr *)&to, sizeof(to)),
                     (ssize_t)strlen(text));
}

static void wait_received(sfix *f, uint64_t n)
{
    int64_t deadline = st_time_mono_ms() + 5000;
    st_statsd_stats s;
    do {
        assert_int_equal(st_statsd_totals(f->ctx, &s), ST_OK);
        if (s.received >= n) {
            return;
        }
        st_time_sleep_ms(5);
    } while (st_time_mono_ms() < deadline);
    fail_msg("the listener counted %llu lines, want %llu", (unsigned long long)s.received,
             (unsigned long long)n);
}

static const Strata__V1__Series *series(const sfix *f, const char *name, const char *lk,
                                        const char *lv)
{
    for (size_t i = 0; i < f->frame->n_series; i++) {
        const Strata__V1__Series *s = f->frame->series[i];
        if (strcmp(s->name, name) != 0) {
            continue;
        }
        if (lk == NULL) {
            return s;
        }
        for (size_t j = 0; j < s->n_labels; j++) {
            if (strcmp(s->labels[j]->key, lk) == 0 && strcmp(s->labels[j]->value, lv) == 0) {
                return s;
            }
        }
    }
    fail_msg("no series %s {%s=%s} in the frame", name, lk ? lk : "", lv ? lv : "");
    return NULL;
}

static double sum_values(const Strata__V1__Series *s)
{
    double t = 0;
    for (size_t i = 0; i < st_series_npoints(s); i++) {
        t += st_series_value(s, i);
    }
    return t;
}

static void test_sampler_end_to_end(void **state)
{
    const char *yaml = "statsd:\n"
                       "  listen: 127.0.0.1:0\n"
                       "  interval: 1s\n"
                       "  mappings:\n"
                       "    shop.: function\n"
                       "    shop.ws.: realtime\n";
    sfix f;
    st_cfg_error err;
    const Strata__V1__Series *s;
    st_sketch *sk = NULL;
    (void)state;
    assert_int_equal(sampler_init(&f, yaml, &err), ST_OK);
    assert_int_equal(st_statsd_port(f.ctx), 0);
    sampler_run(&f, 1000); /* starts the listener */
    assert_true(st_statsd_port(f.ctx) > 0);
    send_text(&f, "app.function.duration:100|ms|#function:checkout,type:mutation\n"
                  "app.function.duration:300|ms|#type:mutation,function:checkout\n"
                  "app.function.errors:2|c|@0.5|#function:checkout,type:mutation\n"
                  "garbage\n"
                  "db.pool.in_use:7|g\n"
                  "shop.cart.items:3|c\n"
                  "shop.ws.connections:+4|g\n"
                  "plain.thing:1|c\n"
                  "web.vitals.lcp:2.5|h|#page:/\n"
                  "realtime.bytes:512|c|#channel:chat,result:ok\n"
                  "visitors:a|s\nvisitors:b|s\nvisitors:a|s");
    wait_received(&f, 13);
    sampler_run(&f, 2000);
    sampler_take(&f);

    s = series(&f, "app.function.duration", "function", "checkout");
    assert_int_equal(s->kind, STRATA__V1__KIND__DISTRIBUTION);
    assert_int_equal(s->layer, ST_LAYER_FUNCTION);
    assert_string_equal(s->unit, "s");
    assert_int_equal(s->n_sketches, 1);
    assert_int_equal(st_sketch_from_proto(s->sketches[0], &sk), ST_OK);
    assert_int_equal(st_sketch_count(sk), 2);
    assert_true(st_sketch_min(sk) == 0.1 && st_sketch_max(sk) == 0.3);
    st_sketch_free(sk);
    s = series(&f, "app.function.errors", "type", "mutation");
    assert_int_equal(s->kind, STRATA__V1__KIND__COUNTER);
    assert_true(sum_values(s) == 4);
    assert_int_equal(series(&f, "db.pool.in_use", NULL, NULL)->layer, ST_LAYER_DATABASE);
    assert_int_equal(series(&f, "shop.cart.items", NULL, NULL)->layer, ST_LAYER_FUNCTION);
    assert_int_equal(series(&f, "shop.ws.connections", NULL, NULL)->layer, ST_LAYER_REALTIME);
    assert_int_equal(series(&f, "plain.thing", NULL, NULL)->layer, ST_LAYER_INFRA);
    s = series(&f, "web.vitals.lcp", "page", "/");
    assert_int_equal(s->layer, ST_LAYER_FRONTEND);
    assert_string_equal(s->unit, "s");
    s = series(&f, "realtime.bytes", "channel", "chat");
    assert_int_equal(s->layer, ST_LAYER_REALTIME);
    assert_string_equal(s->unit, "B");
    assert_true(sum_values(s) == 512);
    s = series(&f, "visitors", NULL, NULL);
    assert_int_equal(s->kind, STRATA__V1__KIND__GAUGE);
    assert_true(st_series_value(s, 0) == 2);
    assert_true(sum_values(series(&f, "statsd.received", NULL, NULL)) == 13);
    assert_true(sum_values(series(&f, "statsd.malformed", NULL, NULL)) == 1);
    assert_true(sum_values(series(&f, "statsd.dropped", NULL, NULL)) == 0);
    sampler_done(&f);
}

/* A relative gauge continues from the last value of an earlier interval,
 * and the fold's point keeps its last, min and max. */
static void test_sampler_relative_gauge(void **state)
{
    sfix f;
    st_cfg_error err;
    const Strata__V1__Series *s;
    (void)state;
    assert_int_equal(sampler_init(&f, "statsd:\n  listen: 127.0.0.1:0\n", &err), ST_OK);
    sampler_run(&f, 1000);
    send_text(&f, "conn:10|g");
    wait_received(&f, 1);
    sampler_run(&f, 2000);
    send_text(&f, "conn:+5|g\nconn:-8|g\nconn:+1|g");
    wait_received(&f, 4);
    sampler_run(&f, 3000);
    send_text(&f, "conn:+2|g");
    wait_received(&f, 5);
    sampler_run(&f, 4000);
    sampler_take(&f);
    s = series(&f, "conn", NULL, NULL);
    assert_int_equal(st_series_npoints(s), 3);
    assert_true(st_series_value(s, 0) == 10);
    assert_true(st_series_value(s, 1) == 8); /* 10 + 5 - 8 + 1 */
    assert_int_equal(s->n_mins, 3);
    assert_true(s->mins[1] == 7 && s->maxs[1] == 15);
    assert_true(st_series_value(s, 2) == 10);
    sampler_done(&f);
}

static void test_sampler_config_errors(void **state)
{
    static const struct {
        const char *yaml;
        const char *want;
    } cases[] = {
        {"statsd:\n  listen: nowhere\n", "agent.yaml:2: key 'listen'"},
        {"statsd:\n  listen: '[::1'\n", "key 'listen'"},
        {"statsd:\n  listen: 127.0.0.1:70000\n", "key 'listen'"},
        {"statsd:\n  mappings:\n    shop.: kitchen\n", "agent.yaml:3: key 'shop.'"},
        {"statsd:\n  mappings: [a]\n", "key 'mappings'"},
        {"statsd:\n  max_series: 70000\n", "key 'max_series'"},
        {"statsd:\n  max_tags: 25\n", "key 'max_tags'"},
        {"statsd:\n  lissen: x\n", "key 'lissen'"},
    };
    (void)state;
    for (size_t i = 0; i < ST_ARRAY_LEN(cases); i++) {
        sfix f;
        st_cfg_error err;
        memset(&err, 0, sizeof(err));
        assert_int_equal(sampler_init(&f, cases[i].yaml, &err), ST_ECONFIG);
        if (strstr(err.msg, cases[i].want) == NULL) {
            fail_msg("config %zu: '%s' lacks '%s'", i, err.msg, cases[i].want);
        }
        f.ctx = NULL;
        sampler_done(&f);
    }
}

/* A busy port fails the run (the scheduler backs off and retries); IPv6
 * works where the host has it. */
static void test_sampler_busy_port_and_ipv6(void **state)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t alen = sizeof(a);
    int busy = socket(AF_INET, SOCK_DGRAM, 0);
    char yaml[128];
    sfix f;
    st_cfg_error err;
    (void)state;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(busy, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(busy, (struct sockaddr *)&a, &alen), 0);
    snprintf(yaml, sizeof(yaml), "statsd:\n  listen: 127.0.0.1:%d\n", ntohs(a.sin_port));
    assert_int_equal(sampler_init(&f, yaml, &err), ST_OK);
    assert_int_equal(st_statsd_sample(f.ctx, st_fold_begin(f.fold, 1000, 1000)), ST_EEXIST);
    close(busy);
    sampler_run(&f, 2000); /* the retry succeeds once the port is free */
    sampler_done(&f);

    assert_int_equal(sampler_init(&f, "statsd:\n  listen: '[::1]:0'\n", &err), ST_OK);
    if (st_statsd_sample(f.ctx, st_fold_begin(f.fold, 1000, 1000)) == ST_OK) {
        assert_true(st_statsd_port(f.ctx) > 0);
    } else {
        print_message("no IPv6 loopback here; skipped the [::1] listener\n");
    }
    sampler_done(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_types),
        cmocka_unit_test(test_parse_rate_and_tags),
        cmocka_unit_test(test_parse_numbers),
        cmocka_unit_test(test_parse_malformed),
        cmocka_unit_test(test_datagram_mixed),
        cmocka_unit_test(test_datagram_truncated),
        cmocka_unit_test(test_counter_sums),
        cmocka_unit_test(test_gauges),
        cmocka_unit_test(test_gauge_bases),
        cmocka_unit_test(test_timers),
        cmocka_unit_test(test_sets),
        cmocka_unit_test(test_series_cap_and_conflict),
        cmocka_unit_test(test_growth_and_reset),
        cmocka_unit_test(test_fleet_merge),
        cmocka_unit_test(test_sampler_end_to_end),
        cmocka_unit_test(test_sampler_relative_gauge),
        cmocka_unit_test(test_sampler_config_errors),
        cmocka_unit_test(test_sampler_busy_port_and_ipv6),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
