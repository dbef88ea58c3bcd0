/* Unit tests for the rum sampler: the page normaliser, the beacon parser
 * (web vitals, resource timing, every kind of bad beacon, all or nothing),
 * and the sampler itself: nng's real HTTP server on loopback, beacons
 * posted with libcurl, CORS answers, and the emitted series in a real fold. */
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
#include "samplers/rum_beacon.h"
#include "samplers/samplers.h"
#include "sketch.h"
#include "util.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- pages ---- */

static void check_page(const char *in, const char *want)
{
    char out[ST_RUM_MAX_PAGE + 1];
    int rv = st_rum_page_normalize(in, strlen(in), out, sizeof(out));
    if (rv != ST_OK || strcmp(out, want) != 0) {
        fail_msg("'%s': got %d '%s', want '%s'", in, rv, rv == ST_OK ? out : "", want);
    }
}

static void test_page_normalize(void **state)
{
    char out[ST_RUM_MAX_PAGE + 1];
    char in[3000];
    (void)state;
    check_page("/p/123?x=1", "/p/:id");
    check_page("https://shop.example.com/products/42/reviews#top", "/products/:id/reviews");
    check_page("HTTPS://X.example/Y", "/Y");
    check_page("//cdn.example.com/a/b/", "/a/b");
    check_page("/users/550e8400-e29b-41d4-a716-446655440000/orders", "/users/:id/orders");
    check_page("/t/0123456789abcdef0123", "/t/:id");
    check_page("/deadbeef", "/deadbeef");
    check_page("/v2/items", "/v2/items");
    check_page("/", "/");
    check_page("?q=1", "/");
    check_page("#top", "/");
    check_page("https://x.example", "/");
    check_page("https://x.example?a=b", "/");
    check_page("a/b", "/a/b");
    check_page("///a//b//", "/a/b");
    check_page("/caf\xc3\xa9/menu", "/caf\xc3\xa9/menu");
    /* over ST_RUM_MAX_PAGE: cut, and never inside a UTF-8 sequence */
    memset(in, 'x', 300);
    in[0] = '/';
    in[300] = '\0';
    assert_int_equal(st_rum_page_normalize(in, 300, out, sizeof(out)), ST_OK);
    assert_int_equal(strlen(out), ST_RUM_MAX_PAGE);
    in[0] = '/';
    for (int i = 0; i < 100; i++) {
        memcpy(in + 1 + 2 * i, "\xc3\xa9", 2);
    }
    assert_int_equal(st_rum_page_normalize(in, 201, out, sizeof(out)), ST_OK);
    assert_int_equal(strlen(out), 127);
    assert_true(st_utf8_valid(out, strlen(out)));
    /* refused */
    assert_int_equal(st_rum_page_normalize("", 0, out, sizeof(out)), ST_EINVAL);
    assert_int_equal(st_rum_page_normalize("/a\x01", 3, out, sizeof(out)), ST_EINVAL);
    memset(in, 'b', sizeof(in));
    assert_int_equal(st_rum_page_normalize(in, ST_RUM_MAX_PAGE_IN + 1, out, sizeof(out)),
                     ST_EINVAL);
    assert_int_equal(st_rum_page_normalize(in, ST_RUM_MAX_PAGE_IN, out, sizeof(out)), ST_OK);
    assert_int_equal(st_rum_page_normalize("/", 1, out, ST_RUM_MAX_PAGE), ST_EINVAL);
}

/* ---- beacons ---- */

static int parse(const char *body, st_rum_entry **e, size_t *n, char *err)
{
    *e = NULL;
    *n = 0;
    err[0] = '\0';
    return st_rum_beacon_parse(body, strlen(body), e, n, err, 256);
}

static void test_beacon_good(void **state)
{
    st_rum_entry *e;
    size_t n;
    char err[256];
    (void)state;
    assert_int_equal(parse("{\"name\":\"LCP\",\"value\":1234,\"id\":\"v3-1\",\"page\":\"/p/9?x\","
                           "\"rating\":\"good\",\"delta\":1234,\"entries\":[]}",
                           &e, &n, err),
                     ST_OK);
    assert_int_equal(n, 1);
    assert_int_equal(e[0].kind, ST_RUM_VITAL);
    assert_int_equal(e[0].vital, ST_RUM_LCP);
    assert_true(e[0].value == 1.234);
    assert_string_equal(e[0].page, "/p/:id");
    free(e);
    assert_int_equal(
        parse("[{\"name\":\"fcp\",\"value\":0,\"page\":\"/\"},"
              "{\"name\":\"CLS\",\"value\":0.12,\"page\":\"/\"},"
              "{\"name\":\"TTFB\",\"value\":80.5,\"page\":\"/a\"},"
              "{\"name\":\"INP\",\"value\":200,\"page\":\"/a\"},"
              "{\"name\":\"TTI\",\"value\":3600000,\"page\":\"/a\"},"
              "{\"type\":\"resource\",\"name\":\"https://x/a.js\",\"transferSize\":0,"
              "\"encodedBodySize\":10},"
              "{\"type\":\"resource\",\"name\":\"https://x/b.js\",\"transferSize\":300,"
              "\"encodedBodySize\":10,\"page\":\"/a\"},"
              "{\"type\":\"resource\",\"name\":\"https://x/c.js\",\"transferSize\":0,"
              "\"decodedBodySize\":99},"
              "{\"type\":\"resource\",\"name\":\"https://y/opaque\",\"transferSize\":0,"
              "\"encodedBodySize\":0,\"decodedBodySize\":0}]",
              &e, &n, err),
        ST_OK);
    assert_int_equal(n, 9);
    assert_int_equal(e[0].vital, ST_RUM_FCP);
    assert_true(e[1].vital == ST_RUM_CLS && e[1].value == 0.12); /* unitless */
    assert_true(e[2].value == 0.0805);
    assert_true(e[4].value == 3600);
    assert_true(e[5].kind == ST_RUM_RESOURCE && e[5].cache == ST_RUM_HIT);
    assert_int_equal(e[6].cache, ST_RUM_MISS);
    assert_string_equal(e[6].page, "/a");
    assert_int_equal(e[7].cache, ST_RUM_HIT);
    /* all sizes 0 (cross-origin without Timing-Allow-Origin): neither */
    assert_int_equal(e[8].cache, ST_RUM_OPAQUE);
    free(e);
    assert_string_equal(st_rum_vital_series(ST_RUM_TTFB), "web.vitals.ttfb");
    assert_string_equal(st_rum_vital_series(ST_RUM_CLS), "web.vitals.cls");
}

static void test_beacon_bad(void **state)
{
    static const struct {
        const char *body;
        int rv;
        const char *msg;
    } bad[] = {
        {"{\"name\":\"LCP\"", ST_EPARSE, "bad JSON at line 1"},
        {"not json", ST_EPARSE, "bad JSON"},
        {"{\"name\":\"LCP\",\"name\":\"FCP\",\"value\":1,\"page\":\"/\"}", ST_EPARSE, "duplicate"},
        {"42", ST_EINVAL, "a beacon is a JSON object or an array of objects"},
        {"[]", ST_EINVAL, "1 to 1000 entries"},
        {"{\"value\":1,\"page\":\"/\"}", ST_EINVAL, "missing 'name'"},
        {"{\"name\":\"FID\",\"value\":1,\"page\":\"/\"}", ST_EINVAL, "'name' must be FCP"},
        {"{\"name\":7,\"value\":1,\"page\":\"/\"}", ST_EINVAL, "'name' must be FCP"},
        {"{\"name\":\"LCP\",\"page\":\"/\"}", ST_EINVAL, "missing 'value'"},
        {"{\"name\":\"LCP\",\"value\":\"1\",\"page\":\"/\"}", ST_EINVAL,
         "'value' must be a number"},
        {"{\"name\":\"LCP\",\"value\":-1,\"page\":\"/\"}", ST_EINVAL, "from 0 to 3600000 (ms)"},
        {"{\"name\":\"LCP\",\"value\":3600001,\"page\":\"/\"}", ST_EINVAL, "'value'"},
        {"{\"name\":\"CLS\",\"value\":1001,\"page\":\"/\"}", ST_EINVAL, "from 0 to 1000"},
        {"{\"name\":\"LCP\",\"value\":1}", ST_EINVAL, "missing 'page'"},
        {"{\"name\":\"LCP\",\"value\":1,\"page\":5}", ST_EINVAL, "'page' must be"},
        {"{\"name\":\"LCP\",\"value\":1,\"page\":\"\"}", ST_EINVAL, "'page' must be"},
        {"{\"name\":\"LCP\",\"value\":1,\"page\":\"/\",\"id\":3}", ST_EINVAL, "'id' must be"},
        {"[{\"name\":\"LCP\",\"value\":1,\"page\":\"/\"},7]", ST_EINVAL, "entry 1: not an object"},
        {"[{\"name\":\"LCP\",\"value\":1,\"page\":\"/\"},{\"type\":\"x\"}]", ST_EINVAL,
         "entry 1: 'type' must be \"resource\""},
        {"{\"type\":\"resource\",\"name\":\"u\"}", ST_EINVAL, "missing 'transferSize'"},
        {"{\"type\":\"resource\",\"transferSize\":1}", ST_EINVAL, "'name' must be the resource"},
        {"{\"type\":\"resource\",\"name\":\"u\",\"transferSize\":-5}", ST_EINVAL,
         "'transferSize' must be a byte count"},
        {"{\"type\":\"resource\",\"name\":\"u\",\"transferSize\":0,\"encodedBodySize\":\"x\"}",
         ST_EINVAL, "'encodedBodySize'"},
    };
    char body[40000];
    size_t off;
    st_rum_entry *e;
    size_t n;
    char err[256];
    (void)state;
    for (size_t i = 0; i < ST_ARRAY_LEN(bad); i++) {
        int rv = parse(bad[i].body, &e, &n, err);
        if (rv != bad[i].rv || strstr(err, bad[i].msg) == NULL) {
            fail_msg("%s: got %d '%s', want %d '%s'", bad[i].body, rv, err, bad[i].rv, bad[i].msg);
        }
        assert_null(e); /* all or nothing */
        assert_int_equal(n, 0);
    }
    /* 1000 entries pass, 1001 are too many */
    off = (size_t)snprintf(body, sizeof(body), "[");
    for (int i = 0; i < 1001; i++) {
        off += (size_t)snprintf(body + off, sizeof(body) - off,
                                "%s{\"name\":\"LCP\",\"value\":1,"
                                "\"page\":\"/\"}",
                                i ? "," : "");
        if (i == 999) {
            snprintf(body + off, sizeof(body) - off, "]");
            assert_int_equal(parse(body, &e, &n, err), ST_OK);
            assert_int_equal(n, 1000);
            free(e);
        }
    }
    snprintf(body + off, sizeof(body) - off, "]");
    assert_int_equal(parse(body, &e, &n, err), ST_ETOOBIG);
}

/* ---- the sampler over HTTP ---- */

typedef struct rfix {
    st_cfg_doc *doc;
    void *ctx;
    st_fold *fold;
    Strata__V1__Frame *frame;
    int port;
    char url[128];
} rfix;

typedef struct resp {
    long status;
    char headers[4096];
    size_t hlen;
    char body[4096];
    size_t blen;
} resp;

static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static int rum_init(rfix *f, const char *extra, st_cfg_error *err)
{
    st_sampler_env env = {"/proc", "/sys", "/tmp", 1000, false};
    char yaml[1024];
    memset(f, 0, sizeof(*f));
    f->port = free_port();
    snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%d/rum", f->port);
    snprintf(yaml, sizeof(yaml), "rum:\n  listen: 127.0.0.1:%d\n%s", f->port, extra);
    assert_int_equal(st_fold_new(&f->fold), ST_OK);
    assert_int_equal(st_cfg_load_string("agent.yaml", yaml, strlen(yaml), &f->doc, err), ST_OK);
    return st_rum_init(f->doc, st_cfg_get(st_cfg_root(f->doc), "rum"), &env, &f->ctx, err);
}

static void rum_done(rfix *f)
{
    st_rum_fini(f->ctx);
    st_cfg_doc_free(f->doc);
    st_fold_free(f->fold);
    st_frame_free(f->frame);
}

static void rum_run(rfix *f, int64_t t)
{
    assert_int_equal(st_rum_sample(f->ctx, st_fold_begin(f->fold, t, 1000)), ST_OK);
}

static void rum_take(rfix *f)
{
    st_frame_free(f->frame);
    f->frame = calloc(1, sizeof(*f->frame));
    assert_non_null(f->frame);
    strata__v1__frame__init(f->frame);
    assert_int_equal(st_fold_take(f->fold, INT64_MAX, f->frame), ST_OK);
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    resp *r = arg;
    size_t len = size * n;
    size_t take = ST_MIN(len, sizeof(r->body) - 1 - r->blen);
    memcpy(r->body + r->blen, p, take);
    r->blen += take;
    r->body[r->blen] = '\0';
    return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    resp *r = arg;
    size_t len = size * n;
    size_t take = ST_MIN(len, sizeof(r->headers) - 1 - r->hlen);
    memcpy(r->headers + r->hlen, p, take);
    r->hlen += take;
    r->headers[r->hlen] = '\0';
    return len;
}

/* One request; ctype and origin may be NULL; body NULL for no body. */
static resp request(const rfix *f, const char *method, const char *ctype, const char *origin,
                    const char *body, size_t len)
{
    resp r;
    char h1[256];
    char h2[256];
    struct curl_slist *hs = curl_slist_append(NULL, "Expect:");
    CURL *c = curl_easy_init();
    memset(&r, 0, sizeof(r));
    assert_non_null(c);
    /* no ctype: no Content-Type at all (curl would add a form type) */
    snprintf(h1, sizeof(h1), "Content-Type:%s%s", ctype != NULL ? " " : "",
             ctype != NULL ? ctype : "");
    hs = curl_slist_append(hs, h1);
    if (origin != NULL) {
        snprintf(h2, sizeof(h2), "Origin: %s", origin);
        hs = curl_slist_append(hs, h2);
        hs = curl_slist_append(hs, "Access-Control-Request-Method: POST");
    }
    curl_easy_setopt(c, CURLOPT_URL, f->url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
    if (body != NULL) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)len);
    }
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_easy_cleanup(c);
    curl_slist_free_all(hs);
    return r;
}

static resp post(const rfix *f, const char *ctype, const char *body)
{
    return request(f, "POST", ctype, NULL, body, strlen(body));
}

static const Strata__V1__Series *find_series(const rfix *f, const char *name, const char *lk,
                                             const char *lv)
{
    for (size_t i = 0; f->frame != NULL && i < f->frame->n_series; i++) {
        const Strata__V1__Series *s = f->frame->series[i];
        if (strcmp(s->name, name) != 0) {
            continue;
        }
        for (size_t j = 0; lk == NULL || j < s->n_labels; j++) {
            if (lk == NULL ||
                (strcmp(s->labels[j]->key, lk) == 0 && strcmp(s->labels[j]->value, lv) == 0)) {
                return s;
            }
        }
    }
    return NULL;
}

static double counter_sum(const rfix *f, const char *name, const char *lk, const char *lv)
{
    const Strata__V1__Series *s = find_series(f, name, lk, lv);
    double t = 0;
    if (s == NULL) {
        fail_msg("no series %s {%s=%s}", name, lk ? lk : "", lv ? lv : "");
    }
    for (size_t i = 0; i < st_series_npoints(s); i++) {
        t += st_series_value(s, i);
    }
    return t;
}

static uint64_t sketch_count(const rfix *f, const char *name, const char *page)
{
    const Strata__V1__Series *s = find_series(f, name, "page", page);
    uint64_t n = 0;
    if (s == NULL) {
        fail_msg("no series %s {page=%s}", name, page);
    }
    for (size_t i = 0; i < s->n_sketches; i++) {
        n += s->sketches[i]->count;
    }
    return n;
}

static void test_sampler_http(void **state)
{
    rfix f;
    st_cfg_error err;
    resp r;
    char *big;
    const Strata__V1__Series *s;
    st_sketch *sk = NULL;
    const char *fcp = "{\"name\":\"FCP\",\"value\":10,\"page\":\"/\"}";
    (void)state;
    assert_int_equal(rum_init(&f, "  allowed_origins: [https://shop.example.com]\n", &err), ST_OK);
    rum_run(&f, 1000); /* starts the server */

    r = post(&f, "application/json",
             "{\"name\":\"LCP\",\"value\":2500,\"id\":\"a\",\"page\":\"/p/1\"}");
    assert_int_equal(r.status, 204);
    r = post(&f, "text/plain;charset=UTF-8",
             "[{\"name\":\"LCP\",\"value\":1500,\"page\":\"/p/2?x\"},"
             "{\"name\":\"CLS\",\"value\":0.25,\"page\":\"/\"},"
             "{\"type\":\"resource\",\"name\":\"https://x/a.js\",\"transferSize\":0,"
             "\"encodedBodySize\":10},"
             "{\"type\":\"resource\",\"name\":\"https://x/b.js\",\"transferSize\":9,"
             "\"encodedBodySize\":10},"
             "{\"type\":\"resource\",\"name\":\"https://third.party/f.woff\","
             "\"transferSize\":0,\"encodedBodySize\":0,\"decodedBodySize\":0}]");
    assert_int_equal(r.status, 204);
    r = request(&f, "POST", NULL, "https://shop.example.com", fcp, strlen(fcp));
    assert_int_equal(r.status, 204);
    assert_non_null(strstr(r.headers, "Access-Control-Allow-Origin: https://shop.example.com"));

    /* rejected, each with its reason */
    r = post(&f, "application/json", "{\"name\":\"LCP\"");
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "{\"error\":\"bad JSON at line 1"));
    r = post(&f, "application/json", "{\"name\":\"LCP\",\"page\":\"/\"}");
    assert_int_equal(r.status, 400);
    assert_string_equal(r.body, "{\"error\":\"missing 'value'\"}");
    r = post(&f, "application/x-www-form-urlencoded", "a=b");
    assert_int_equal(r.status, 415);
    big = malloc(70000);
    assert_non_null(big);
    memset(big, ' ', 70000);
    r = request(&f, "POST", "application/json", NULL, big, 70000);
    free(big);
    assert_int_equal(r.status, 413);
    assert_non_null(strstr(r.body, "body over 65536 bytes"));
    r = request(&f, "POST", "application/json", "https://evil.example", "{}", 2);
    assert_int_equal(r.status, 403);
    assert_null(strstr(r.headers, "Access-Control-Allow-Origin"));
    r = request(&f, "GET", NULL, NULL, NULL, 0);
    assert_int_equal(r.status, 405);
    r = request(&f, "POST", "application/json", NULL, "", 0);
    assert_int_equal(r.status, 400);

    /* preflights: allowed origins only */
    r = request(&f, "OPTIONS", NULL, "https://shop.example.com", NULL, 0);
    assert_int_equal(r.status, 204);
    assert_non_null(strstr(r.headers, "Access-Control-Allow-Origin: https://shop.example.com"));
    assert_non_null(strstr(r.headers, "Access-Control-Allow-Methods: POST, OPTIONS"));
    assert_non_null(strstr(r.headers, "Access-Control-Allow-Headers: Content-Type"));
    r = request(&f, "OPTIONS", NULL, "https://evil.example", NULL, 0);
    assert_int_equal(r.status, 403);
    assert_null(strstr(r.headers, "Access-Control-Allow-Origin"));

    rum_run(&f, 2000);
    rum_take(&f);
    assert_int_equal(sketch_count(&f, "web.vitals.lcp", "/p/:id"), 2);
    s = find_series(&f, "web.vitals.lcp", "page", "/p/:id");
    assert_int_equal(s->layer, ST_LAYER_FRONTEND);
    assert_string_equal(s->unit, "s");
    assert_int_equal(st_sketch_from_proto(s->sketches[0], &sk), ST_OK);
    assert_true(st_sketch_min(sk) == 1.5 && st_sketch_max(sk) == 2.5);
    st_sketch_free(sk);
    s = find_series(&f, "web.vitals.cls", "page", "/");
    assert_non_null(s);
    assert_string_equal(s->unit, "");
    assert_int_equal(sketch_count(&f, "web.vitals.fcp", "/"), 1);
    assert_true(counter_sum(&f, "cache.requests", "result", "hit") == 1);
    assert_true(counter_sum(&f, "cache.requests", "result", "miss") == 1);
    /* the opaque third-party font is neither a hit nor a miss */
    assert_true(counter_sum(&f, "rum.resources.opaque", NULL, NULL) == 1);
    assert_int_equal(find_series(&f, "cache.requests", "cache", "browser")->layer, ST_LAYER_INFRA);
    assert_true(counter_sum(&f, "rum.beacons", NULL, NULL) == 3);
    assert_true(counter_sum(&f, "rum.rejected", "reason", "json") == 1);
    assert_true(counter_sum(&f, "rum.rejected", "reason", "invalid") == 1);
    assert_true(counter_sum(&f, "rum.rejected", "reason", "media_type") == 1);
    assert_true(counter_sum(&f, "rum.rejected", "reason", "too_large") == 1);
    assert_true(counter_sum(&f, "rum.rejected", "reason", "origin") == 1);
    assert_true(counter_sum(&f, "rum.rejected", "reason", "method") == 1);
    assert_true(counter_sum(&f, "rum.rejected", "reason", "empty") == 1);
    rum_done(&f);
}

/* Past max_pages, new pages are "other"; known ones keep their label. */
static void test_sampler_page_cap(void **state)
{
    rfix f;
    st_cfg_error err;
    char body[128];
    (void)state;
    assert_int_equal(rum_init(&f, "  max_pages: 2\n  path: /beacon\n", &err), ST_OK);
    snprintf(f.url, sizeof(f.url), "http://127.0.0.1:%d/beacon", f.port);
    rum_run(&f, 1000);
    for (int i = 0; i < 5; i++) {
        snprintf(body, sizeof(body), "{\"name\":\"TTFB\",\"value\":%d,\"page\":\"/p%d\"}", i, i);
        assert_int_equal(post(&f, "application/json", body).status, 204);
    }
    assert_int_equal(
        post(&f, "application/json", "{\"name\":\"TTFB\",\"value\":1,\"page\":\"/p0\"}").status,
        204);
    rum_run(&f, 2000);
    rum_take(&f);
    assert_int_equal(sketch_count(&f, "web.vitals.ttfb", "/p0"), 2);
    assert_int_equal(sketch_count(&f, "web.vitals.ttfb", "/p1"), 1);
    assert_int_equal(sketch_count(&f, "web.vitals.ttfb", "other"), 3);
    assert_null(find_series(&f, "web.vitals.ttfb", "page", "/p2"));
    rum_done(&f);
}

static void test_sampler_config_errors(void **state)
{
    static const struct {
        const char *extra;
        const char *want;
    } cases[] = {
        {"  path: rum\n", "key 'path'"},
        {"  path: /rum?x\n", "key 'path'"},
        {"  allowed_origins: [shop.example.com]\n", "key 'allowed_origins'"},
        {"  allowed_origins: ['https://a.example/x']\n", "key 'allowed_origins'"},
        {"  max_body: 10MiB\n", "key 'max_body'"},
        {"  max_pages: 0\n", "key 'max_pages'"},
        {"  colour: red\n", "key 'colour'"},
    };
    (void)state;
    for (size_t i = 0; i < ST_ARRAY_LEN(cases); i++) {
        rfix f;
        st_cfg_error err;
        memset(&err, 0, sizeof(err));
        assert_int_equal(rum_init(&f, cases[i].extra, &err), ST_ECONFIG);
        if (strstr(err.msg, cases[i].want) == NULL) {
            fail_msg("case %zu: '%s' lacks '%s'", i, err.msg, cases[i].want);
        }
        rum_done(&f);
    }
}

/* A busy port fails the run (backed off and retried by the scheduler). */
static void test_sampler_busy_port(void **state)
{
    rfix a;
    rfix b;
    st_cfg_error err;
    char yaml[128];
    st_sampler_env env = {"/proc", "/sys", "/tmp", 1000, false};
    (void)state;
    assert_int_equal(rum_init(&a, "", &err), ST_OK);
    rum_run(&a, 1000);
    /* a second, independent listener on the same port: a raw socket */
    {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sa.sin_port = htons((uint16_t)free_port());
        assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        assert_int_equal(listen(fd, 1), 0);
        memset(&b, 0, sizeof(b));
        assert_int_equal(st_fold_new(&b.fold), ST_OK);
        snprintf(yaml, sizeof(yaml), "rum:\n  listen: 127.0.0.1:%d\n", ntohs(sa.sin_port));
        assert_int_equal(st_cfg_load_string("a.yaml", yaml, strlen(yaml), &b.doc, &err), ST_OK);
        assert_int_equal(
            st_rum_init(b.doc, st_cfg_get(st_cfg_root(b.doc), "rum"), &env, &b.ctx, &err), ST_OK);
        assert_int_equal(st_rum_sample(b.ctx, st_fold_begin(b.fold, 1000, 1000)), ST_EEXIST);
        close(fd);
        assert_int_equal(st_rum_sample(b.ctx, st_fold_begin(b.fold, 2000, 1000)), ST_OK);
        rum_done(&b);
    }
    rum_done(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_page_normalize),    cmocka_unit_test(test_beacon_good),
        cmocka_unit_test(test_beacon_bad),        cmocka_unit_test(test_sampler_http),
        cmocka_unit_test(test_sampler_page_cap),  cmocka_unit_test(test_sampler_config_errors),
        cmocka_unit_test(test_sampler_busy_port),
    };
    int rv;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    rv = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rv;
}
