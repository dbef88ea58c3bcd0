/* Unit tests for the nginx sampler: the access-log line parser (good,
 * malformed, oversize, odd quoting), the route normaliser and its cap, the
 * aggregate folded into a real Frame, stub_status parsing, and the tailer on
 * temporary files: partial lines, rotation by rename and by copytruncate,
 * checkpoint and restart with exact line counts, the read budget. */
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
#include "samplers/nginx_log.h"
#include "samplers/samplers.h"
#include "util.h"
#include "tmpdir.h"

#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_LINES 4096

/* ---- helpers ---- */

static int parse(const char *s, st_nginx_line *l)
{
    return st_nginx_line_parse(s, strlen(s), l);
}

static char *route(const st_nginx_routes *r, const char *path)
{
    static char out[ST_NGINX_ROUTE_MAX + 1];
    st_nginx_route_normalise(r, path, strlen(path), out, sizeof(out));
    return out;
}

/* What the tailer passed on: lines "L<n>" are checked off one by one, so a
 * line seen twice or never is caught. */
typedef struct seen {
    unsigned count[MAX_LINES];
    size_t lines;
    size_t too_long;
    size_t other; /* lines that are not L<n> */
} seen;

static void on_line(void *arg, const char *line, size_t len)
{
    seen *s = arg;
    unsigned n = 0;
    if (line == NULL) {
        s->too_long++;
        return;
    }
    s->lines++;
    if (len < 2 || line[0] != 'L') {
        s->other++;
        return;
    }
    for (size_t i = 1; i < len; i++) {
        if (line[i] < '0' || line[i] > '9') {
            s->other++;
            return;
        }
        n = n * 10 + (unsigned)(line[i] - '0');
    }
    assert_true(n < MAX_LINES);
    s->count[n]++;
}

/* Every line in [from, to) seen exactly once, and nothing else. */
static void assert_once(const seen *s, unsigned from, unsigned to)
{
    for (unsigned i = 0; i < MAX_LINES; i++) {
        unsigned want = i >= from && i < to ? 1 : 0;
        if (s->count[i] != want) {
            fail_msg("line L%u seen %u times, want %u", i, s->count[i], want);
        }
    }
    assert_int_equal(s->other, 0);
}

typedef struct tmp {
    char dir[64];
    char log[128];
    char ckpt[128];
    int wfd; /* the "nginx" writer's fd on the log */
} tmp;

static int setup(void **state)
{
    tmp *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    assert_non_null(st_test_mkdtemp(t->dir, sizeof(t->dir), "nginx"));
    snprintf(t->log, sizeof(t->log), "%s/access.log", t->dir);
    snprintf(t->ckpt, sizeof(t->ckpt), "%s/nginx.ckpt", t->dir);
    t->wfd = -1;
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    tmp *t = *state;
    if (t->wfd >= 0) {
        close(t->wfd);
    }
    st_test_rmtree(t->dir);
    free(t);
    return 0;
}

/* Opens (creating) the log for appending, as nginx does. */
static void writer_open(tmp *t)
{
    if (t->wfd >= 0) {
        close(t->wfd);
    }
    t->wfd = open(t->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    assert_true(t->wfd >= 0);
}

static void put(int fd, const char *s)
{
    assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s));
}

/* Appends lines L<from> .. L<to - 1>. */
static void put_lines(int fd, unsigned from, unsigned to)
{
    char b[32];
    for (unsigned i = from; i < to; i++) {
        snprintf(b, sizeof(b), "L%u\n", i);
        put(fd, b);
    }
}

static st_nginx_tail *tail_new(tmp *t, bool ckpt, bool from_beginning, uint64_t max_bytes)
{
    st_nginx_tail_cfg cfg = {t->log, ckpt ? t->ckpt : NULL, from_beginning, max_bytes, 60000};
    st_nginx_tail *tl = NULL;
    assert_int_equal(st_nginx_tail_new(&cfg, &tl), ST_OK);
    return tl;
}

static void tail_run(st_nginx_tail *tl, seen *s, int64_t now)
{
    assert_int_equal(st_nginx_tail_read(tl, now, on_line, s), ST_OK);
    assert_int_equal(st_nginx_tail_checkpoint(tl), ST_OK);
}

/* ---- line parser ---- */

static void test_line_good(void **state)
{
    st_nginx_line l;
    (void)state;
    assert_int_equal(parse("1700000000.123 0.005 200 HIT 612 \"GET\" \"/api/users/42\"", &l),
                     ST_OK);
    assert_true(fabs(l.msec - 1700000000.123) < 1e-6);
    assert_true(fabs(l.request_time - 0.005) < 1e-12);
    assert_int_equal(l.status, 200);
    assert_int_equal(l.cache, ST_NGINX_CACHE_HIT);
    assert_int_equal(l.bytes, 612);
    assert_int_equal(l.method_len, 3);
    assert_memory_equal(l.method, "GET", 3);
    assert_int_equal(l.uri_len, 13);
    assert_memory_equal(l.uri, "/api/users/42", 13);

    assert_int_equal(parse("1 12 503 - 0 \"POST\" \"/a b\"", &l), ST_OK);
    assert_int_equal(l.cache, ST_NGINX_CACHE_NONE);
    assert_int_equal(l.status, 503);
    assert_true(l.request_time == 12.0);
    assert_memory_equal(l.uri, "/a b", 4);
    /* CRLF, extra fields, several spaces, undocumented cache words. */
    assert_int_equal(parse("1.5 0.1 404 MISS 1 \"GET\" \"/x\"\r", &l), ST_OK);
    assert_int_equal(parse("1.5 0.1 404 MISS 1 \"GET\" \"/x\" \"extra field\" 7", &l), ST_OK);
    assert_int_equal(parse("1.5  0.1 404   EXPIRED 1 \"GET\" \"/x\"", &l), ST_OK);
    assert_int_equal(l.cache, ST_NGINX_CACHE_EXPIRED);
    assert_int_equal(parse("1.5 0.1 200 SOMETHINGNEW 1 \"GET\" \"/x\"", &l), ST_OK);
    assert_int_equal(l.cache, ST_NGINX_CACHE_OTHER);
    assert_string_equal(st_nginx_cache_name(ST_NGINX_CACHE_REVALIDATED), "revalidated");
    assert_string_equal(st_nginx_cache_name(ST_NGINX_CACHE_NONE), "none");
}

static void test_line_quoting(void **state)
{
    st_nginx_line l;
    (void)state;
    /* escape=default writes \x22 for a quote; escape=json writes \". */
    assert_int_equal(parse("1 0.1 200 - 1 \"GET\" \"/a\\x22b\"", &l), ST_OK);
    assert_int_equal(l.uri_len, 7);
    assert_int_equal(parse("1 0.1 200 - 1 \"GET\" \"/a\\\"b c\"", &l), ST_OK);
    assert_int_equal(l.uri_len, 7);
    assert_memory_equal(l.uri, "/a\\\"b c", 7);
    assert_int_equal(parse("1 0.1 200 - 1 \"\" \"\"", &l), ST_OK);
    assert_int_equal(l.uri_len, 0);
    assert_int_equal(l.method_len, 0);
    /* An escaped closing quote leaves the field open. */
    assert_int_equal(parse("1 0.1 200 - 1 \"GET\" \"/a\\\"", &l), ST_EPARSE);
    assert_int_equal(parse("1 0.1 200 - 1 \"GET\" \"/a", &l), ST_EPARSE);
    assert_int_equal(parse("1 0.1 200 - 1 \"GET\" \"/a\"b", &l), ST_EPARSE);
    assert_int_equal(parse("1 0.1 200 - 1 GET \"/a\"", &l), ST_EPARSE);
    assert_int_equal(parse("1 0.1 200 - 1 \"GET\"\"/a\"", &l), ST_EPARSE);
    assert_int_equal(parse("1 0.1 200 - 1 \"GET\" /a", &l), ST_EPARSE);
}

static void test_line_malformed(void **state)
{
    static const char *const bad[] = {
        "",
        " ",
        "garbage",
        "1 0.1 200 - 1 \"GET\"",
        "1 0.1 200 - 1 \"GET\" ",
        "1 0.1 200 - \"GET\" \"/a\"",
        "x 0.1 200 - 1 \"GET\" \"/a\"",
        "1 0.1.2 200 - 1 \"GET\" \"/a\"",
        "1 .1 200 - 1 \"GET\" \"/a\"",
        "1 1. 200 - 1 \"GET\" \"/a\"",
        "1 -0.1 200 - 1 \"GET\" \"/a\"",
        "1 0.1234567890 200 - 1 \"GET\" \"/a\"",
        "1234567890123456789 0.1 200 - 1 \"GET\" \"/a\"",
        "1 0.1 099 - 1 \"GET\" \"/a\"",
        "1 0.1 600 - 1 \"GET\" \"/a\"",
        "1 0.1 20 - 1 \"GET\" \"/a\"",
        "1 0.1 2000 - 1 \"GET\" \"/a\"",
        "1 0.1 2x0 - 1 \"GET\" \"/a\"",
        "1 0.1 200 hit 1 \"GET\" \"/a\"",
        "1 0.1 200 HIT1 1 \"GET\" \"/a\"",
        "1 0.1 200 ABCDEFGHIJKLMNOPQ 1 \"GET\" \"/a\"",
        "1 0.1 200 -- 1 \"GET\" \"/a\"",
        "1 0.1 200 - -1 \"GET\" \"/a\"",
        "1 0.1 200 - 1234567890123456789 \"GET\" \"/a\"",
        "1 0.1 200 - 1 \"GETGETGETGETGETGETGETGETGETGETGET\" \"/a\"",
        "1\t0.1 200 - 1 \"GET\" \"/a\"",
        "127.0.0.1 - - [27/Nov/2026:06:00:00 +0000] \"GET / HTTP/1.1\" 200 612 \"-\" \"curl\"",
    };
    st_nginx_line l;
    (void)state;
    for (size_t i = 0; i < ST_ARRAY_LEN(bad); i++) {
        if (parse(bad[i], &l) != ST_EPARSE) {
            fail_msg("line %zu parsed: '%s'", i, bad[i]);
        }
    }
}

static void test_line_oversize(void **state)
{
    size_t n = ST_NGINX_LINE_MAX + 1;
    char *b = malloc(n + 1);
    const char *head = "1 0.1 200 - 1 \"GET\" \"/";
    st_nginx_line l;
    (void)state;
    assert_non_null(b);
    memset(b, 'a', n);
    memcpy(b, head, strlen(head));
    b[n - 1] = '"';
    b[n] = '\0';
    assert_int_equal(st_nginx_line_parse(b, n, &l), ST_ETOOBIG);
    /* Exactly at the limit is a line. */
    b[n - 2] = '"';
    assert_int_equal(st_nginx_line_parse(b, n - 1, &l), ST_OK);
    assert_int_equal(l.uri_len, n - 2 - strlen(head) + 1);
    free(b);
}

/* ---- routes ---- */

static void test_routes_rules(void **state)
{
    st_nginx_routes *r = NULL;
    (void)state;
    assert_int_equal(st_nginx_routes_new(200, true, &r), ST_OK);
    assert_int_equal(st_nginx_routes_add(r, "/api/users/*", false, "/api/users/:id"), ST_OK);
    assert_int_equal(st_nginx_routes_add(r, "/api/users/*/orders/**", false, "/api/orders"), ST_OK);
    assert_int_equal(st_nginx_routes_add(r, "/static/", true, "/static"), ST_OK);
    assert_int_equal(st_nginx_routes_add(r, "/img/?x*.png", false, "/img"), ST_OK);
    assert_int_equal(st_nginx_routes_add(r, "/api/**", false, "/api/other"), ST_OK);
    assert_int_equal(st_nginx_routes_add(r, "api", false, "x"), ST_EINVAL);
    assert_int_equal(st_nginx_routes_add(r, "/x", false, ""), ST_EINVAL);
    assert_int_equal(st_nginx_routes_add(r, "/x", false, "\xff"), ST_EINVAL);

    assert_string_equal(route(r, "/api/users/42"), "/api/users/:id");
    assert_string_equal(route(r, "/api/users/bob?x=1"), "/api/users/:id");
    assert_string_equal(route(r, "/api/users/"), "/api/users/:id");
    assert_string_equal(route(r, "/api/users/7/orders/1/items"), "/api/orders");
    assert_string_equal(route(r, "/api/users/7/orders/"), "/api/orders");
    assert_string_equal(route(r, "/api/users/7/profile"), "/api/other");
    assert_string_equal(route(r, "/static/js/app.js"), "/static");
    assert_string_equal(route(r, "/img/axyz.png"), "/img");
    assert_string_equal(route(r, "/img/x.png"), "/img/x.png"); /* '?' needs one byte */
    assert_string_equal(route(r, "/img/a/x.png"), "/img/a/x.png");
    assert_string_equal(route(r, "/api"), "/api"); /* ** wants something below */
    st_nginx_routes_free(r);
}

static void test_routes_collapse(void **state)
{
    st_nginx_routes *r = NULL;
    char long_path[1024];
    char *got;
    (void)state;
    assert_int_equal(st_nginx_routes_new(200, true, &r), ST_OK);
    assert_string_equal(route(r, "/"), "/");
    assert_string_equal(route(r, "/users/12345/posts/7"), "/users/:id/posts/:id");
    assert_string_equal(route(r, "/o/deadbeef01"), "/o/:id");
    assert_string_equal(route(r, "/o/deadbeef"), "/o/deadbeef"); /* no digit: a word */
    assert_string_equal(route(r, "/o/abc123"), "/o/abc123");     /* short hex */
    assert_string_equal(route(r, "/u/123e4567-e89b-12d3-a456-426614174000/x"), "/u/:id/x");
    assert_string_equal(route(r, "/t/eyJhbGciOiJIUzI1NiJ9abc"), "/t/:id");
    assert_string_equal(route(r, "/t/k3j4h5g6f7d8s9a0q1w2"), "/t/:id");
    assert_string_equal(route(r, "/blog/how-to-configure-nginx-2024"),
                        "/blog/how-to-configure-nginx-2024");
    assert_string_equal(route(r, "/v1/users/"), "/v1/users/");
    assert_string_equal(route(r, "/a//b"), "/a//b");
    assert_string_equal(route(r, "/search?q=1#frag"), "/search");
    assert_string_equal(route(r, "/page#top"), "/page");
    assert_string_equal(route(r, "-"), "other");
    assert_string_equal(route(r, ""), "other");
    assert_string_equal(route(r, "*"), "other");
    assert_string_equal(route(r, "http://example.com/"), "other");
    assert_string_equal(route(r, "/caf\xc3\xa9/1"), "/caf\xc3\xa9/:id");
    assert_string_equal(route(r, "/bad\xff/1"), "/:invalid/:id");
    assert_string_equal(route(r, "/ctl\x01/1"), "/:invalid/:id");
    /* A segment past ST_NGINX_SEGMENT_MAX is opaque, whatever it holds. */
    memset(long_path, 'a', 100);
    long_path[0] = '/';
    memcpy(long_path + 100, "/x", 3);
    assert_string_equal(route(r, long_path), "/:id/x");
    /* Many segments: cut at a segment boundary, marked, within the limit. */
    for (size_t i = 0; i < 100; i++) {
        memcpy(long_path + i * 10, "/segment-x", 10);
    }
    long_path[1000] = '\0';
    got = route(r, long_path);
    assert_true(strlen(got) <= ST_NGINX_ROUTE_MAX);
    assert_true(strlen(got) > ST_NGINX_ROUTE_MAX - 14);
    assert_string_equal(got + strlen(got) - 4, "/...");
    assert_memory_equal(got, "/segment-x/segment-x", 20);
    assert_true(st_utf8_valid(got, strlen(got)));
    st_nginx_routes_free(r);

    assert_int_equal(st_nginx_routes_new(200, false, &r), ST_OK);
    assert_string_equal(route(r, "/users/12345"), "/users/12345");
    st_nginx_routes_free(r);
    assert_int_equal(st_nginx_routes_new(0, true, &r), ST_EINVAL);
}

static void test_routes_cap(void **state)
{
    st_nginx_routes *r = NULL;
    bool over = false;
    uint32_t a, b, c, d, e;
    (void)state;
    assert_int_equal(st_nginx_routes_new(3, true, &r), ST_OK);
    assert_int_equal(st_nginx_routes_add(r, "/health", false, "/health"), ST_OK);
    a = st_nginx_route_id(r, "/a/1", 4, &over);
    b = st_nginx_route_id(r, "/b", 2, &over);
    c = st_nginx_route_id(r, "/c", 2, &over);
    assert_false(over);
    assert_int_equal(st_nginx_route_id(r, "/a/2", 4, &over), a); /* same route */
    assert_string_equal(st_nginx_route_name(r, a), "/a/:id");
    assert_int_equal(st_nginx_routes_count(r), 3);
    d = st_nginx_route_id(r, "/d", 2, &over);
    assert_true(over);
    assert_string_equal(st_nginx_route_name(r, d), "other");
    over = false;
    /* Configured routes and known ones still resolve past the cap. */
    e = st_nginx_route_id(r, "/health", 7, &over);
    assert_false(over);
    assert_string_equal(st_nginx_route_name(r, e), "/health");
    assert_int_equal(st_nginx_route_id(r, "/c", 2, &over), c);
    assert_false(over);
    assert_true(a != b && b != c && c != e);
    /* A path that is not a path is "other" without overflowing. */
    assert_int_equal(st_nginx_route_id(r, "-", 1, &over), d);
    assert_false(over);
    st_nginx_routes_free(r);
}

/* ---- aggregate into a real fold ---- */

typedef struct foldfx {
    st_fold *fold;
    Strata__V1__Frame frame;
} foldfx;

static const Strata__V1__Series *find_series(const Strata__V1__Frame *f, const char *name,
                                             const char *const *kv, size_t nkv)
{
    for (size_t i = 0; i < f->n_series; i++) {
        const Strata__V1__Series *s = f->series[i];
        size_t match = 0;
        if (strcmp(s->name, name) != 0 || s->n_labels != nkv / 2) {
            continue;
        }
        for (size_t k = 0; k < nkv; k += 2) {
            for (size_t j = 0; j < s->n_labels; j++) {
                match += strcmp(s->labels[j]->key, kv[k]) == 0 &&
                         strcmp(s->labels[j]->value, kv[k + 1]) == 0;
            }
        }
        if (match == nkv / 2) {
            return s;
        }
    }
    return NULL;
}

static double counter(const Strata__V1__Frame *f, const char *name, const char *const *kv,
                      size_t nkv)
{
    const Strata__V1__Series *s = find_series(f, name, kv, nkv);
    double sum = 0;
    if (s == NULL) {
        return -1;
    }
    for (size_t i = 0; i < st_series_npoints(s); i++) {
        sum += st_series_value(s, i);
    }
    return sum;
}

/* The sum over every series of name whose labels include all of kv. */
static double counter_sum(const Strata__V1__Frame *f, const char *name, const char *const *kv,
                          size_t nkv)
{
    double sum = 0;
    for (size_t i = 0; i < f->n_series; i++) {
        const Strata__V1__Series *s = f->series[i];
        size_t match = 0;
        if (strcmp(s->name, name) != 0) {
            continue;
        }
        for (size_t k = 0; k < nkv; k += 2) {
            for (size_t j = 0; j < s->n_labels; j++) {
                match += strcmp(s->labels[j]->key, kv[k]) == 0 &&
                         strcmp(s->labels[j]->value, kv[k + 1]) == 0;
            }
        }
        for (size_t p = 0; match == nkv / 2 && p < st_series_npoints(s); p++) {
            sum += st_series_value(s, p);
        }
    }
    return sum;
}

#define KV(...) \
    ((const char *const[]){__VA_ARGS__}), ST_ARRAY_LEN(((const char *const[]){__VA_ARGS__}))

static void test_agg_fold(void **state)
{
    st_nginx_routes *r = NULL;
    st_nginx_agg *a = NULL;
    st_nginx_agg_totals tot;
    st_fold *fold = NULL;
    Strata__V1__Frame f = STRATA__V1__FRAME__INIT;
    const Strata__V1__Series *s;
    char line[256];
    (void)state;
    assert_int_equal(st_nginx_routes_new(200, true, &r), ST_OK);
    assert_int_equal(st_nginx_agg_new(r, &a), ST_OK);
    assert_int_equal(st_fold_new(&fold), ST_OK);
    for (int i = 0; i < 10; i++) {
        snprintf(line, sizeof(line), "1700000000.%03d 0.%03d 200 %s 100 \"GET\" \"/item/%d\"", i,
                 i + 1, i < 8 ? "HIT" : "MISS", i);
        st_nginx_agg_line(a, line, strlen(line));
    }
    st_nginx_agg_line(a, "1 0.500 502 - 10 \"GET\" \"/api/x\"", 31);
    st_nginx_agg_line(a, "1 0.500 503 - 10 \"GET\" \"/api/x\"", 31);
    st_nginx_agg_line(a, "1 0.010 404 - 10 \"GET\" \"/api/x\"", 31);
    st_nginx_agg_line(a, "not a line", 10);
    st_nginx_agg_line(a, NULL, 20000);
    assert_int_equal(st_nginx_agg_emit(a, st_fold_begin(fold, 1000, 1000)), ST_OK);
    assert_int_equal(st_fold_take(fold, INT64_MAX, &f), ST_OK);

    assert_true(
        counter(&f, "http.server.requests", KV("route", "/item/:id", "status_class", "2xx")) == 10);
    assert_true(counter(&f, "http.server.requests", KV("route", "/api/x", "status_class", "5xx")) ==
                2);
    assert_true(counter(&f, "http.server.requests", KV("route", "/api/x", "status_class", "4xx")) ==
                1);
    assert_true(counter(&f, "http.server.errors", KV("route", "/api/x", "status_class", "5xx")) ==
                2);
    assert_null(
        find_series(&f, "http.server.errors", KV("route", "/api/x", "status_class", "4xx")));
    assert_null(
        find_series(&f, "http.server.errors", KV("route", "/item/:id", "status_class", "2xx")));
    assert_true(counter(&f, "http.server.response.bytes",
                        KV("route", "/item/:id", "status_class", "2xx")) == 1000);
    assert_true(counter_sum(&f, "cache.requests", KV("cache", "nginx", "result", "hit")) == 8);
    assert_true(counter_sum(&f, "cache.requests", KV("cache", "nginx", "result", "miss")) == 2);
    assert_true(counter_sum(&f, "cache.requests", KV("result", "none")) == 0);
    assert_true(counter(&f, "nginx.log.malformed", KV("reason", "format")) == 1);
    assert_true(counter(&f, "nginx.log.malformed", KV("reason", "too_long")) == 1);
    assert_true(counter(&f, "nginx.log.lines", NULL, 0) == 15);
    assert_true(counter(&f, "nginx.routes.overflow", NULL, 0) == 0);
    s = find_series(&f, "http.server.duration",
                    KV("route", "/item/:id", "status_class", "2xx", "cache_status", "hit"));
    assert_non_null(s);
    assert_int_equal(s->kind, STRATA__V1__KIND__DISTRIBUTION);
    assert_string_equal(s->unit, "s");
    assert_int_equal(s->layer, STRATA__V1__LAYER__INFRASTRUCTURE);
    assert_int_equal(s->n_sketches, 1);
    assert_int_equal(s->sketches[0]->count, 8);
    assert_true(fabs(s->sketches[0]->sum - 0.036) < 1e-9);
    assert_true(fabs(s->sketches[0]->max - 0.008) < 1e-9);
    s = find_series(&f, "http.server.duration",
                    KV("route", "/api/x", "status_class", "5xx", "cache_status", "none"));
    assert_non_null(s);
    assert_int_equal(s->sketches[0]->count, 2);
    st_nginx_agg_totals_get(a, &tot);
    assert_int_equal(tot.lines, 15);
    assert_int_equal(tot.requests, 13);
    assert_int_equal(tot.malformed, 1);
    assert_int_equal(tot.too_long, 1);
    for (size_t i = 0; i < f.n_series; i++) {
        strata__v1__series__free_unpacked(f.series[i], NULL);
    }
    free(f.series);
    st_nginx_agg_free(a);
    st_fold_free(fold);
}

/* ---- stub_status ---- */

static void test_status(void **state)
{
    static const char good[] = "Active connections: 291 \nserver accepts handled requests\n"
                               " 16630948 16630947 31070465 \n"
                               "Reading: 6 Writing: 179 Waiting: 106 \n";
    static const char *const bad[] = {
        "",
        "Active connections: x \n",
        "Active connections: 1 \nserver accepts handled requests\n 1 2 \n",
        "Active connections: 1 \nserver accepts handled requests\n 1 2 3 \nReading: 1 Writing: 2\n",
        "Active connections: 1 \nserver accepts handled requests\n 1 2 3 \nReading: 1 Writing: 2 "
        "Waiting: 3 \nmore",
        "Active connections: 99999999999999999999 \nserver accepts handled requests\n 1 2 3 \n"
        "Reading: 1 Writing: 2 Waiting: 3\n",
        "<html><body>404 Not Found</body></html>",
    };
    st_nginx_status s;
    char *big;
    (void)state;
    assert_int_equal(st_nginx_status_parse(good, strlen(good), &s), ST_OK);
    assert_int_equal(s.active, 291);
    assert_int_equal(s.accepts, 16630948);
    assert_int_equal(s.handled, 16630947);
    assert_int_equal(s.requests, 31070465);
    assert_int_equal(s.reading, 6);
    assert_int_equal(s.writing, 179);
    assert_int_equal(s.waiting, 106);
    for (size_t i = 0; i < ST_ARRAY_LEN(bad); i++) {
        if (st_nginx_status_parse(bad[i], strlen(bad[i]), &s) != ST_EPARSE) {
            fail_msg("status page %zu parsed", i);
        }
    }
    big = malloc(ST_NGINX_STATUS_MAX + 2);
    assert_non_null(big);
    memset(big, ' ', ST_NGINX_STATUS_MAX + 1);
    memcpy(big, good, strlen(good));
    assert_int_equal(st_nginx_status_parse(big, ST_NGINX_STATUS_MAX + 1, &s), ST_ETOOBIG);
    assert_int_equal(st_nginx_status_parse(big, ST_NGINX_STATUS_MAX, &s), ST_OK);
    free(big);
}

/* ---- tailer ---- */

static void test_tail_partial(void **state)
{
    tmp *t = *state;
    seen *s = calloc(1, sizeof(*s));
    st_nginx_tail *tl;
    assert_non_null(s);
    writer_open(t);
    put_lines(t->wfd, 0, 5);
    put(t->wfd, "L5"); /* nginx is mid-write */
    tl = tail_new(t, false, true, 0);
    tail_run(tl, s, 0);
    assert_once(s, 0, 5);
    tail_run(tl, s, 0);
    assert_once(s, 0, 5);
    put(t->wfd, "\nL6\n");
    tail_run(tl, s, 0);
    assert_once(s, 0, 7);
    st_nginx_tail_free(tl);
    free(s);
}

static void test_tail_start_at_end(void **state)
{
    tmp *t = *state;
    seen *s = calloc(1, sizeof(*s));
    st_nginx_tail *tl;
    assert_non_null(s);
    writer_open(t);
    put_lines(t->wfd, 0, 10);
    put(t->wfd, "L1"); /* the end is mid-line: its rest must not count as a line */
    tl = tail_new(t, true, false, 0);
    tail_run(tl, s, 0);
    assert_int_equal(s->lines, 0);
    put(t->wfd, "0\n");
    put_lines(t->wfd, 11, 14);
    tail_run(tl, s, 0);
    assert_once(s, 11, 14);
    st_nginx_tail_free(tl);
    free(s);
}

static void test_tail_missing(void **state)
{
    tmp *t = *state;
    seen *s = calloc(1, sizeof(*s));
    st_nginx_tail *tl;
    assert_non_null(s);
    tl = tail_new(t, true, false, 0);
    assert_int_equal(st_nginx_tail_read(tl, 0, on_line, s), ST_ENOENT);
    assert_int_equal(st_nginx_tail_checkpoint(tl), ST_OK);
    /* A log that appears later is new: all of it counts. */
    writer_open(t);
    put_lines(t->wfd, 0, 3);
    tail_run(tl, s, 0);
    assert_once(s, 0, 3);
    st_nginx_tail_free(tl);
    free(s);
}

static void test_tail_rename(void **state)
{
    tmp *t = *state;
    seen *s = calloc(1, sizeof(*s));
    st_nginx_tail *tl;
    st_nginx_tail_stats ts;
    char rotated[160];
    int oldfd;
    assert_non_null(s);
    snprintf(rotated, sizeof(rotated), "%s.1", t->log);
    writer_open(t);
    put_lines(t->wfd, 0, 10);
    tl = tail_new(t, true, false, 0);
    tail_run(tl, s, 0); /* starts at the end */
    put_lines(t->wfd, 10, 20);
    tail_run(tl, s, 0);
    assert_once(s, 10, 20);
    /* logrotate renames; nginx writes on to the old fd until it reopens. */
    assert_int_equal(rename(t->log, rotated), 0);
    put_lines(t->wfd, 20, 25);
    tail_run(tl, s, 1000); /* path missing: keep reading the old file */
    assert_once(s, 10, 25);
    put_lines(t->wfd, 25, 27);
    oldfd = dup(t->wfd);
    writer_open(t); /* reopen: a new file at the path */
    put_lines(t->wfd, 27, 35);
    put_lines(oldfd, 35, 37); /* a late write to the old file */
    tail_run(tl, s, 2000);
    put_lines(oldfd, 37, 40);
    put_lines(t->wfd, 40, 45);
    tail_run(tl, s, 3000);
    put_lines(oldfd, 45, 47); /* still within rotate_wait: still read */
    tail_run(tl, s, 4000);
    assert_once(s, 10, 47);
    st_nginx_tail_stats_take(tl, &ts);
    assert_int_equal(ts.renamed, 1);
    assert_int_equal(ts.truncated, 0);
    /* After rotate_wait the old file is closed; the new one goes on. */
    tail_run(tl, s, 100000);
    put_lines(t->wfd, 47, 52);
    tail_run(tl, s, 100001);
    assert_once(s, 10, 52);
    close(oldfd);
    st_nginx_tail_free(tl);
    free(s);
}

static void test_tail_copytruncate(void **state)
{
    tmp *t = *state;
    seen *s = calloc(1, sizeof(*s));
    st_nginx_tail *tl;
    st_nginx_tail_stats ts;
    assert_non_null(s);
    writer_open(t);
    put_lines(t->wfd, 0, 100);
    tl = tail_new(t, true, true, 0);
    tail_run(tl, s, 0);
    assert_once(s, 0, 100);
    /* copytruncate: copied elsewhere, then truncated; O_APPEND writes go on at 0. */
    assert_int_equal(ftruncate(t->wfd, 0), 0);
    put_lines(t->wfd, 100, 104);
    tail_run(tl, s, 0);
    assert_once(s, 0, 104);
    /* Truncated and written past the old offset before the next run: the
     * changed head tells it. */
    assert_int_equal(ftruncate(t->wfd, 0), 0);
    put_lines(t->wfd, 1000, 1010);
    tail_run(tl, s, 0);
    for (unsigned i = 1000; i < 1010; i++) {
        assert_int_equal(s->count[i], 1);
    }
    st_nginx_tail_stats_take(tl, &ts);
    assert_int_equal(ts.truncated, 2);
    assert_int_equal(ts.renamed, 0);
    assert_int_equal(s->lines, 114);
    st_nginx_tail_free(tl);
    free(s);
}

static void test_tail_restart(void **state)
{
    tmp *t = *state;
    seen *s = calloc(1, sizeof(*s));
    st_nginx_tail *tl;
    assert_non_null(s);
    writer_open(t);
    put_lines(t->wfd, 0, 300);
    put(t->wfd, "L30"); /* a partial line at the checkpoint */
    tl = tail_new(t, true, true, 0);
    tail_run(tl, s, 0);
    st_nginx_tail_free(tl); /* "restart" */
    put(t->wfd, "0\n");
    put_lines(t->wfd, 301, 500);
    tl = tail_new(t, true, false, 0);
    tail_run(tl, s, 0);
    assert_once(s, 0, 500);
    assert_int_equal(s->lines, 500);
    st_nginx_tail_free(tl);
    /* Restart with nothing new: nothing read. */
    tl = tail_new(t, true, false, 0);
    tail_run(tl, s, 0);
    assert_int_equal(s->lines, 500);
    st_nginx_tail_free(tl);
    free(s);
}

/* Rotated while the agent was down: the remembered file is found under its
 * new name and finished, then the new file is read from its start. */
static void test_tail_restart_rotated(void **state)
{
    tmp *t = *state;
    seen *s = calloc(1, sizeof(*s));
    st_nginx_tail *tl;
    char rotated[160];
    assert_non_null(s);
    snprintf(rotated, sizeof(rotated), "%s.1", t->log);
    writer_open(t);
    put_lines(t->wfd, 0, 50);
    tl = tail_new(t, true, true, 0);
    tail_run(tl, s, 0);
    st_nginx_tail_free(tl);
    put_lines(t->wfd, 50, 60);
    assert_int_equal(rename(t->log, rotated), 0);
    put_lines(t->wfd, 60, 65);
    writer_open(t);
    put_lines(t->wfd, 65, 80);
    tl = tail_new(t, true, false, 0);
    tail_run(tl, s, 0);
    assert_once(s, 0, 80);
    st_nginx_tail_free(tl);
    /* Truncated while down. */
    assert_int_equal(ftruncate(t->wfd, 0), 0);
    put_lines(t->wfd, 80, 85);
    tl = tail_new(t, true, false, 0);
    tail_run(tl, s, 0);
    assert_once(s, 0, 85);
    st_nginx_tail_free(tl);
    free(s);
}

static void test_tail_oversize(void **state)
{
    tmp *t = *state;
    seen *s = calloc(1, sizeof(*s));
    size_t big = 3 * ST_NGINX_TAIL_CHUNK; /* spans several reads */
    char *b = malloc(big);
    st_nginx_tail *tl;
    assert_non_null(s);
    assert_non_null(b);
    memset(b, 'x', big);
    writer_open(t);
    put_lines(t->wfd, 0, 3);
    assert_int_equal(write(t->wfd, b, ST_NGINX_LINE_MAX + 1), ST_NGINX_LINE_MAX + 1);
    put(t->wfd, "\n");
    put_lines(t->wfd, 3, 6);
    assert_int_equal(write(t->wfd, b, ST_NGINX_LINE_MAX), ST_NGINX_LINE_MAX); /* at the limit */
    put(t->wfd, "\n");
    put_lines(t->wfd, 6, 8);
    assert_int_equal(write(t->wfd, b, big), (ssize_t)big);
    tl = tail_new(t, true, true, 0);
    tail_run(tl, s, 0);      /* the huge line is still open: reported once, skipped */
    put_lines(t->wfd, 8, 9); /* ends the huge line: "...xL8" is skipped with it */
    put_lines(t->wfd, 9, 12);
    tail_run(tl, s, 0);
    assert_int_equal(s->too_long, 2);
    assert_int_equal(s->other, 1); /* the line of exactly ST_NGINX_LINE_MAX bytes */
    for (unsigned i = 0; i < 12; i++) {
        assert_int_equal(s->count[i], i == 8 ? 0 : 1);
    }
    st_nginx_tail_free(tl);
    free(b);
    free(s);
}

static void test_tail_budget(void **state)
{
    tmp *t = *state;
    seen *s = calloc(1, sizeof(*s));
    st_nginx_tail *tl;
    st_nginx_tail_stats ts;
    int runs = 0;
    char pad[200];
    assert_non_null(s);
    writer_open(t);
    memset(pad, 'p', sizeof(pad) - 2);
    pad[sizeof(pad) - 2] = '\n';
    pad[sizeof(pad) - 1] = '\0';
    /* ~800 KiB: four 256 KiB reads; a budget of one read per run. */
    for (unsigned i = 0; i < 4000; i++) {
        char b[16];
        snprintf(b, sizeof(b), "L%u\n", i % MAX_LINES);
        put(t->wfd, b);
        put(t->wfd, pad);
    }
    tl = tail_new(t, true, true, 1);
    while (s->count[3999] == 0) {
        tail_run(tl, s, 0);
        assert_true(++runs < 100);
    }
    assert_true(runs >= 4);
    st_nginx_tail_stats_take(tl, &ts);
    assert_int_equal(ts.bytes, (uint64_t)lseek(t->wfd, 0, SEEK_END));
    assert_int_equal(s->lines, 8000);
    assert_int_equal(s->other, 4000);
    for (unsigned i = 0; i < 4000; i++) {
        assert_int_equal(s->count[i], 1);
    }
    st_nginx_tail_free(tl);
    free(s);
}

static void test_tail_corrupt_ckpt(void **state)
{
    tmp *t = *state;
    seen *s = calloc(1, sizeof(*s));
    st_nginx_tail *tl;
    static const char *const bad[] = {
        "junk\n",
        "strata-nginx-tail 1\ncur 1 2\n",
        "strata-nginx-tail 1\ncur 1 2 3 4 5 6\n",
        "strata-nginx-tail 1\nnew 1 2 3 0 5 6\n",
        "strata-nginx-tail 1\ncur 1 2 3 0 5 6",
        "strata-nginx-tail 1\ncur 1 2 99999999999999999999999 0 5 6\n",
    };
    assert_non_null(s);
    writer_open(t);
    put_lines(t->wfd, 0, 10);
    for (size_t i = 0; i < ST_ARRAY_LEN(bad); i++) {
        assert_int_equal(st_file_write_atomic(t->ckpt, bad[i], strlen(bad[i])), ST_OK);
        memset(s, 0, sizeof(*s));
        tl = tail_new(t, true, false, 0); /* ignored: as without one, from the end */
        tail_run(tl, s, 0);
        assert_int_equal(s->lines, 0);
        st_nginx_tail_free(tl);
        /* and the rewritten checkpoint resumes exactly */
        put_lines(t->wfd, 10 + (unsigned)i, 11 + (unsigned)i);
        tl = tail_new(t, true, false, 0);
        tail_run(tl, s, 0);
        assert_int_equal(s->lines, 1);
        assert_int_equal(s->count[10 + i], 1);
        st_nginx_tail_free(tl);
    }
    free(s);
}

static void test_path_hash(void **state)
{
    char a[17], b[17];
    (void)state;
    st_nginx_path_hash("/var/log/nginx/access.log", a);
    st_nginx_path_hash("/var/log/nginx/access.log.1", b);
    assert_int_equal(strlen(a), 16);
    assert_string_not_equal(a, b);
    st_nginx_path_hash("/var/log/nginx/access.log", b);
    assert_string_equal(a, b);
}

/* ---- the sampler ---- */

static int sampler_init(tmp *t, const char *yaml, bool once, st_cfg_doc **doc, void **ctx,
                        st_cfg_error *err)
{
    const st_sampler_def *def = st_sampler_find("nginx");
    st_sampler_env env = {"/proc", "/sys", t->dir, 1000, once};
    int rv;
    assert_non_null(def);
    assert_int_equal(st_cfg_load_string("agent.yaml", yaml, strlen(yaml), doc, err), ST_OK);
    rv = def->init(*doc, st_cfg_root(*doc), &env, ctx, err);
    if (rv != ST_OK) {
        st_cfg_doc_free(*doc);
        *doc = NULL;
    }
    return rv;
}

static void expect_cfg_error(tmp *t, const char *yaml, const char *want)
{
    st_cfg_doc *doc = NULL;
    void *ctx = NULL;
    st_cfg_error err = {{0}};
    assert_int_equal(sampler_init(t, yaml, false, &doc, &ctx, &err), ST_ECONFIG);
    if (strstr(err.msg, want) == NULL) {
        fail_msg("error '%s' lacks '%s'", err.msg, want);
    }
}

static void test_sampler_config(void **state)
{
    tmp *t = *state;
    expect_cfg_error(t, "interval: 1s\n", "agent.yaml:1: key 'status_url'");
    expect_cfg_error(t, "access_log: /x\naccess_logg: /y\n", "agent.yaml:2: key 'access_logg'");
    expect_cfg_error(t, "status_url: ftp://x/\n", "agent.yaml:1: key 'status_url'");
    expect_cfg_error(t, "access_log: /x\nmax_routes: 0\n", "agent.yaml:2: key 'max_routes'");
    expect_cfg_error(t, "access_log: /x\nroutes:\n  - {pattern: /a, prefix: /b, name: a}\n",
                     "agent.yaml:3: key 'pattern'");
    expect_cfg_error(t, "access_log: /x\nroutes:\n  - {pattern: a, name: a}\n",
                     "agent.yaml:3: key 'pattern'");
    expect_cfg_error(t, "access_log: /x\nroutes:\n  - {prefix: /a}\n", "agent.yaml:3: key 'name'");
    expect_cfg_error(t, "access_log: /x\nroutes:\n  - {pattern: /a, name: a, nmae: b}\n",
                     "key 'nmae'");
    expect_cfg_error(t, "status_url: http://x/\ntimeout: 1s\nconnect_timeout: 2s\n",
                     "agent.yaml:3: key 'connect_timeout'");
}

static void test_sampler_run(void **state)
{
    tmp *t = *state;
    const st_sampler_def *def = st_sampler_find("nginx");
    st_cfg_doc *doc = NULL;
    void *ctx = NULL;
    st_cfg_error err = {{0}};
    st_fold *fold = NULL;
    Strata__V1__Frame f = STRATA__V1__FRAME__INIT;
    char yaml[512], hash[17], ckpt[256];
    struct stat st;
    writer_open(t);
    put(t->wfd, "1 0.010 200 HIT 5 \"GET\" \"/u/1\"\n1 0.020 200 MISS 5 \"GET\" \"/u/2\"\n");
    put(t->wfd, "junk\n");
    snprintf(yaml, sizeof(yaml),
             "interval: 5s\naccess_log: %s\nroutes:\n  - {prefix: /u/, name: /users}\n", t->log);
    assert_int_equal(sampler_init(t, yaml, true, &doc, &ctx, &err), ST_OK);
    assert_int_equal(st_fold_new(&fold), ST_OK);
    assert_int_equal(def->sample(ctx, st_fold_begin(fold, 1000, 1000)), ST_OK);
    put(t->wfd, "1 0.030 503 - 5 \"GET\" \"/u/3\"\n");
    assert_int_equal(def->sample(ctx, st_fold_begin(fold, 1500, 1000)), ST_OK);
    assert_int_equal(st_fold_take(fold, INT64_MAX, &f), ST_OK);
    assert_true(counter(&f, "http.server.requests", KV("route", "/users", "status_class", "2xx")) ==
                2);
    assert_true(counter(&f, "http.server.errors", KV("route", "/users", "status_class", "5xx")) ==
                1);
    assert_true(counter_sum(&f, "cache.requests", KV("cache", "nginx", "result", "hit")) == 1);
    assert_true(counter(&f, "nginx.log.malformed", KV("reason", "format")) == 1);
    assert_true(counter(&f, "nginx.log.lines", NULL, 0) == 4);
    def->fini(ctx);
    st_cfg_doc_free(doc);
    /* --once leaves no checkpoint behind; a daemon run does. */
    st_nginx_path_hash(t->log, hash);
    snprintf(ckpt, sizeof(ckpt), "%s/nginx-%s.ckpt", t->dir, hash);
    assert_int_not_equal(stat(ckpt, &st), 0);
    doc = NULL;
    assert_int_equal(sampler_init(t, yaml, false, &doc, &ctx, &err), ST_OK);
    assert_int_equal(def->sample(ctx, st_fold_begin(fold, 3000, 1000)), ST_OK);
    assert_int_equal(stat(ckpt, &st), 0);
    def->fini(ctx);
    st_cfg_doc_free(doc);
    for (size_t i = 0; i < f.n_series; i++) {
        strata__v1__series__free_unpacked(f.series[i], NULL);
    }
    free(f.series);
    st_fold_free(fold);
}

/* A stub_status that is not there is an error (the scheduler backs off),
 * the log is still read in the same run. */
static void test_sampler_status_down(void **state)
{
    tmp *t = *state;
    const st_sampler_def *def = st_sampler_find("nginx");
    st_cfg_doc *doc = NULL;
    void *ctx = NULL;
    st_cfg_error err = {{0}};
    st_fold *fold = NULL;
    Strata__V1__Frame f = STRATA__V1__FRAME__INIT;
    char yaml[512];
    int rv;
    writer_open(t);
    put(t->wfd, "1 0.010 200 HIT 5 \"GET\" \"/\"\n");
    /* Port 1 on loopback: refused at once. */
    snprintf(yaml, sizeof(yaml),
             "status_url: http://127.0.0.1:1/nginx_status\naccess_log: %s\ntimeout: 500ms\n"
             "connect_timeout: 200ms\n",
             t->log);
    assert_int_equal(sampler_init(t, yaml, true, &doc, &ctx, &err), ST_OK);
    assert_int_equal(st_fold_new(&fold), ST_OK);
    rv = def->sample(ctx, st_fold_begin(fold, 1000, 1000));
    assert_true(rv == ST_ENET || rv == ST_ETIMEOUT);
    assert_int_equal(st_fold_take(fold, INT64_MAX, &f), ST_OK);
    assert_true(counter(&f, "http.server.requests", KV("route", "/", "status_class", "2xx")) == 1);
    assert_null(find_series(&f, "nginx.connections.active", NULL, 0));
    def->fini(ctx);
    st_cfg_doc_free(doc);
    for (size_t i = 0; i < f.n_series; i++) {
        strata__v1__series__free_unpacked(f.series[i], NULL);
    }
    free(f.series);
    st_fold_free(fold);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line_good),
        cmocka_unit_test(test_line_quoting),
        cmocka_unit_test(test_line_malformed),
        cmocka_unit_test(test_line_oversize),
        cmocka_unit_test(test_routes_rules),
        cmocka_unit_test(test_routes_collapse),
        cmocka_unit_test(test_routes_cap),
        cmocka_unit_test(test_agg_fold),
        cmocka_unit_test(test_status),
        cmocka_unit_test_setup_teardown(test_tail_partial, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tail_start_at_end, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tail_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tail_rename, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tail_copytruncate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tail_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tail_restart_rotated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tail_oversize, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tail_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tail_corrupt_ckpt, setup, teardown),
        cmocka_unit_test(test_path_hash),
        cmocka_unit_test_setup_teardown(test_sampler_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sampler_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sampler_status_down, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
