/* Outbox without the network: signature format and value against OpenSSL,
 * secret rotation, filters, config refusals (https only), idempotency keys,
 * the backoff schedule, and durable enqueue/resume through a real store. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "config.h"
#include "err.h"
#include "outbox.h"
#include "store.h"
#include "util.h"
#include "tmpdir.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[64];

static int setup(void **state)
{
    (void)state;
    assert_non_null(st_test_mkdtemp(tmpdir, sizeof(tmpdir), "outbox"));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return st_test_rmtree(tmpdir);
}

/* HMAC-SHA256 hex straight from OpenSSL, independent of the outbox. */
static void want_hmac(const char *secret, const char *msg, char out[65])
{
    unsigned char mac[32];
    unsigned int len = 0;
    assert_non_null(HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)msg,
                         strlen(msg), mac, &len));
    assert_int_equal(len, 32);
    for (int i = 0; i < 32; i++) {
        snprintf(out + 2 * i, 3, "%02x", mac[i]);
    }
}

static void test_signature(void **state)
{
    const char *secrets[] = {"whsec-current"};
    const char *body = "{\"event\":\"finding.dispatched\",\"finding\":{\"id\":\"f1\"}}";
    char sig[ST_OUTBOX_SIG_MAX];
    char want[65];
    char expect[256];
    char msg[256];
    (void)state;
    assert_int_equal(st_outbox_sign(secrets, 1, 1700000000, body, strlen(body), sig, sizeof(sig)),
                     ST_OK);
    snprintf(msg, sizeof(msg), "1700000000.%s", body);
    want_hmac("whsec-current", msg, want);
    snprintf(expect, sizeof(expect), "t=1700000000,v1=%s", want);
    assert_string_equal(sig, expect);

    /* The timestamp is signed: another t, another MAC. */
    assert_int_equal(st_outbox_sign(secrets, 1, 1700000001, body, strlen(body), sig, sizeof(sig)),
                     ST_OK);
    assert_null(strstr(sig, want));
}

static void test_rotation(void **state)
{
    const char *secrets[] = {"new-secret", "old-secret"};
    const char *five[] = {"a", "b", "c", "d", "e"};
    const char *body = "{}";
    char sig[ST_OUTBOX_SIG_MAX];
    char a[65];
    char b[65];
    char expect[256];
    (void)state;
    assert_int_equal(st_outbox_sign(secrets, 2, 42, body, 2, sig, sizeof(sig)), ST_OK);
    want_hmac("new-secret", "42.{}", a);
    want_hmac("old-secret", "42.{}", b);
    snprintf(expect, sizeof(expect), "t=42,v1=%s,v1=%s", a, b);
    assert_string_equal(sig, expect);
    assert_int_equal(st_outbox_sign(secrets, 0, 42, body, 2, sig, sizeof(sig)), ST_EINVAL);
    assert_int_equal(st_outbox_sign(five, 5, 42, body, 2, sig, sizeof(sig)), ST_EINVAL);
    assert_int_equal(st_outbox_sign(secrets, 2, 42, body, 2, sig, 40), ST_EINVAL);
}

/* Parses `yaml` (a collector.yaml holding webhooks:). */
static int parse(const char *yaml, st_outbox_config *c, st_cfg_error *err)
{
    st_cfg_doc *doc = NULL;
    int rv = st_cfg_load_string("collector.yaml", yaml, strlen(yaml), &doc, err);
    if (rv == ST_OK) {
        rv = st_outbox_config_parse(doc, st_cfg_get(st_cfg_root(doc), "webhooks"), c, err);
    }
    st_cfg_doc_free(doc);
    return rv;
}

static json_t *finding(const char *id, const char *layer, const char *sev, const char *opt,
                       const char *status, int64_t updated)
{
    return json_pack("{s:s,s:s,s:s,s:s,s:s,s:{s:s,s:n},s:I,s:s}", "id", id, "rule", "db.seq_scan",
                     "layer", layer, "severity", sev, "status", status, "optimization", "type", opt,
                     "implementation", "updated_unix_ms", (json_int_t)updated, "summary",
                     "slow statement");
}

static void test_filter(void **state)
{
    st_outbox_config c;
    st_cfg_error err;
    json_t *f1 = finding("a", "database", "HIGH", "ADD_INDEX", "open", 1);
    json_t *f2 = finding("b", "database", "LOW", "ADD_INDEX", "open", 1);
    json_t *f3 = finding("c", "frontend", "CRITICAL", "ADD_INDEX", "open", 1);
    json_t *f4 = finding("d", "database", "CRITICAL", "ARCHIVE", "open", 1);
    (void)state;
    assert_int_equal(parse("webhooks:\n"
                           "  - name: db\n"
                           "    url: https://hooks.example.com/x\n"
                           "    secret: s\n"
                           "    filter:\n"
                           "      layers: [database]\n"
                           "      severities: [high, CRITICAL]\n"
                           "      optimizations: [add_index]\n"
                           "  - name: all\n"
                           "    url: https://hooks.example.com/y\n"
                           "    secret: s\n",
                           &c, &err),
                     ST_OK);
    assert_int_equal(c.n, 2);
    assert_true(st_outbox_filter_match(&c.endpoints[0], f1));
    assert_false(st_outbox_filter_match(&c.endpoints[0], f2)); /* severity */
    assert_false(st_outbox_filter_match(&c.endpoints[0], f3)); /* layer */
    assert_false(st_outbox_filter_match(&c.endpoints[0], f4)); /* optimization */
    assert_true(st_outbox_filter_match(&c.endpoints[1], f2));
    assert_true(st_outbox_filter_match(&c.endpoints[1], f4));
    /* Defaults: timeout 10s, connect 3s, max_age 24h, https only. */
    assert_int_equal(c.endpoints[1].timeout_ms, 10000);
    assert_int_equal(c.endpoints[1].connect_timeout_ms, 3000);
    assert_int_equal(c.endpoints[1].max_age_ms, 86400000);
    assert_false(c.endpoints[1].allow_http);
    st_outbox_config_release(&c);
    json_decref(f1);
    json_decref(f2);
    json_decref(f3);
    json_decref(f4);
}

/* yaml must fail with a message holding each of the NULL-terminated parts. */
static void refused(const char *yaml, const char *const *parts)
{
    st_outbox_config c;
    st_cfg_error err;
    assert_int_equal(parse(yaml, &c, &err), ST_ECONFIG);
    for (; *parts != NULL; parts++) {
        if (strstr(err.msg, *parts) == NULL) {
            fail_msg("'%s' lacks '%s'", err.msg, *parts);
        }
    }
    assert_int_equal(c.n, 0);
}

static void accepted(const char *url, const char *extra)
{
    char yaml[512];
    st_outbox_config c;
    st_cfg_error err;
    snprintf(yaml, sizeof(yaml), "webhooks:\n  - name: a\n    url: %s\n    secret: s\n%s", url,
             extra);
    if (parse(yaml, &c, &err) != ST_OK) {
        fail_msg("%s refused: %s", url, err.msg);
    }
    st_outbox_config_release(&c);
}

static void test_https_only(void **state)
{
    (void)state;
    refused("webhooks:\n"
            "  - name: a\n"
            "    url: https://ok.example.com/\n"
            "    secret: s\n"
            "  - name: b\n"
            "    url: http://hooks.example.com/strata\n"
            "    secret: s\n",
            (const char *const[]){"collector.yaml:6:", "key 'webhooks[1].url'", "plain http",
                                  "https", NULL});
    refused("webhooks:\n  - name: a\n    url: ftp://hooks.example.com/\n    secret: s\n",
            (const char *const[]){"webhooks[0].url", "refused", NULL});
    refused("webhooks:\n  - name: a\n    url: hooks.example.com\n    secret: s\n",
            (const char *const[]){"webhooks[0].url", "not a valid", NULL});
    refused("webhooks:\n  - name: a\n    url: http://10.0.0.1/\n    secret: s\n",
            (const char *const[]){"plain http", NULL});
    accepted("https://hooks.example.com/strata", "");
    accepted("http://127.0.0.1:8080/hook", "");
    accepted("http://127.8.9.10/hook", "");
    accepted("http://localhost:9/hook", "");
    accepted("http://[::1]:9/hook", "");
    accepted("http://hooks.internal/strata", "    allow_http: true\n");
}

static void test_config_errors(void **state)
{
    char path[128];
    char yaml[512];
    st_outbox_config c;
    st_cfg_error err;
    FILE *f;
    (void)state;
    refused("webhooks:\n  - name: a\n    url: https://x.example/\n",
            (const char *const[]){"collector.yaml:2:", "webhooks[0]", "secret", NULL});
    refused("webhooks:\n  - name: a\n    url: https://x.example/\n    secret: s\n"
            "    secret_file: /nonexistent\n",
            (const char *const[]){"not both", NULL});
    refused(
        "webhooks:\n  - name: a\n    url: https://x.example/\n    secret: s\n    urll: x\n",
        (const char *const[]){"collector.yaml:5:", "key 'webhooks[0].urll'", "unknown key", NULL});
    refused("webhooks:\n  - name: a\n    url: https://x.example/\n    secret: s\n"
            "  - name: a\n    url: https://y.example/\n    secret: s\n",
            (const char *const[]){"webhooks[1].name", "already", NULL});
    refused(
        "webhooks:\n  - name: a\n    url: https://x.example/\n    secret: s\n"
        "    filter:\n      layers: [network]\n",
        (const char *const[]){"collector.yaml:6:", "webhooks[0].filter.layers", "network", NULL});
    refused("webhooks:\n  - name: a\n    url: https://x.example/\n    secret: s\n"
            "    timeout: 1s\n    connect_timeout: 2s\n",
            (const char *const[]){"webhooks[0].connect_timeout", NULL});
    refused("webhooks:\n  - name: a\n    url: https://x.example/\n    secret: s\n"
            "    secrets_previous: [a, b, c, d]\n",
            (const char *const[]){"secrets_previous", "at most 3", NULL});
    refused("webhooks: {name: a}\n", (const char *const[]){"key 'webhooks'", "list", NULL});

    /* secret_file: read at load, trailing newline dropped. */
    snprintf(path, sizeof(path), "%s/secret", tmpdir);
    assert_non_null(f = fopen(path, "w"));
    fputs("from-a-file\n", f);
    fclose(f);
    snprintf(yaml, sizeof(yaml),
             "webhooks:\n  - name: a\n    url: https://x.example/\n    secret_file: %s\n", path);
    assert_int_equal(parse(yaml, &c, &err), ST_OK);
    assert_string_equal(c.endpoints[0].secret, "from-a-file");
    st_outbox_config_release(&c);
    assert_int_equal(parse("webhooks:\n", &c, &err), ST_OK);
    assert_int_equal(c.n, 0);
}

static void test_idempotency_key(void **state)
{
    json_t *f = finding("f00d", "database", "HIGH", "ADD_INDEX", "open", 1700000000123);
    json_t *g = finding("f00d", "database", "HIGH", "ADD_INDEX", "ineffective", 1700000999000);
    char k1[65];
    char k2[65];
    char k3[65];
    char k4[65];
    char want[65];
    unsigned char dig[32];
    const char *msg = "f00d\ndispatched\n1700000000123";
    (void)state;
    assert_int_equal(st_outbox_idempotency_key(f, "dispatched", k1), ST_OK);
    assert_int_equal(st_outbox_idempotency_key(f, "dispatched", k2), ST_OK);
    assert_string_equal(k1, k2);
    SHA256((const unsigned char *)msg, strlen(msg), dig);
    st_hex_encode(dig, 32, want);
    assert_string_equal(k1, want);
    /* Another transition, or the same one at another time: another key. */
    assert_int_equal(st_outbox_idempotency_key(f, "ineffective", k3), ST_OK);
    assert_string_not_equal(k1, k3);
    assert_int_equal(st_outbox_idempotency_key(g, "ineffective", k4), ST_OK);
    assert_string_not_equal(k3, k4);
    json_object_del(f, "id");
    assert_int_equal(st_outbox_idempotency_key(f, "dispatched", k1), ST_EINVAL);
    json_decref(f);
    json_decref(g);
}

static void test_backoff(void **state)
{
    (void)state;
    for (uint32_t n = 1; n <= 40; n++) {
        int64_t d = 1000;
        for (uint32_t i = 1; i < n && d < 300000; i++) {
            d *= 2;
        }
        d = d > 300000 ? 300000 : d;
        for (uint64_t r = 0; r < 2000; r += 7) {
            int64_t v = st_outbox_backoff_ms(0, 0, n, r * 0x9E3779B97F4A7C15ULL);
            if (v < d / 2 || v > d) {
                fail_msg("attempt %u: %lld outside [%lld, %lld]", n, (long long)v,
                         (long long)(d / 2), (long long)d);
            }
        }
    }
    /* The schedule: 1 s, 2 s, 4 s ... capped at 5 min (upper bounds). */
    assert_int_equal(st_outbox_backoff_ms(0, 0, 1, 500), 1000);
    assert_int_equal(st_outbox_backoff_ms(0, 0, 1, 0), 500);
    assert_int_equal(st_outbox_backoff_ms(0, 0, 3, 2000), 4000);
    assert_int_equal(st_outbox_backoff_ms(0, 0, 30, 150000), 300000);
    assert_int_equal(st_outbox_backoff_ms(100, 400, 10, 200), 400);
    /* Jitter spreads: not every draw is the same. */
    assert_true(st_outbox_backoff_ms(0, 0, 5, 1) != st_outbox_backoff_ms(0, 0, 5, 5000));
}

static st_store *open_store(const char *name)
{
    char dir[128];
    st_store *st = NULL;
    struct st_store_opts o = {.dir = dir, .no_sync = true, .map_size = 16u << 20};
    snprintf(dir, sizeof(dir), "%s/%s", tmpdir, name);
    assert_int_equal(st_store_open(&o, &st), ST_OK);
    return st;
}

static st_outbox *open_outbox(st_store *st)
{
    st_outbox_config c;
    st_cfg_error err;
    st_outbox *ob = NULL;
    assert_int_equal(parse("webhooks:\n"
                           "  - name: ops\n"
                           "    url: https://hooks.example.com/ops\n"
                           "    secret: s\n"
                           "    filter: {layers: [database]}\n"
                           "  - name: audit\n"
                           "    url: https://hooks.example.com/audit\n"
                           "    secret: s\n",
                           &c, &err),
                     ST_OK);
    assert_int_equal(st_outbox_new(st, &c, NULL, &ob), ST_OK);
    assert_int_equal(c.n, 0); /* taken over */
    return ob;
}

static const json_t *by_endpoint(const json_t *arr, const char *name)
{
    size_t i;
    const json_t *d;
    json_array_foreach(arr, i, d)
    {
        if (strcmp(json_string_value(json_object_get(d, "endpoint")), name) == 0) {
            return d;
        }
    }
    return NULL;
}

/* Keeps the body of the first delivery record (f1 to ops). */
static int first_body(void *arg, const char *key, const char *val, size_t len)
{
    char **out = arg;
    json_t *rec = json_loadb(val, len, 0, NULL);
    (void)key;
    assert_non_null(rec);
    if (*out == NULL) {
        *out = strdup(json_string_value(json_object_get(rec, "body")));
    }
    json_decref(rec);
    return 0;
}

static void check_body(const char *body)
{
    json_t *b = json_loads(body, 0, NULL);
    json_t *f;
    assert_non_null(b);
    assert_string_equal(json_string_value(json_object_get(b, "event")), "finding.dispatched");
    f = json_object_get(b, "finding");
    assert_string_equal(json_string_value(json_object_get(f, "id")), "f1");
    assert_string_equal(json_string_value(json_object_get(f, "status")), "dispatched");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(f, "optimization"), "type")),
        "ADD_INDEX");
    json_decref(b);
}

/* Enqueue writes before it returns; a restart resumes; a repeated dispatch
 * of the same (finding, transition) is not queued twice. No sender runs. */
static void test_enqueue_durable(void **state)
{
    st_store *st = open_store("durable");
    st_outbox *ob = open_outbox(st);
    json_t *f = finding("f1", "database", "HIGH", "ADD_INDEX", "open", 1000);
    json_t *g = finding("f2", "frontend", "LOW", "TREE_SHAKING", "ineffective", 2000);
    struct st_outbox_stats s;
    json_t *arr = NULL;
    char key[65];
    char *body = NULL;
    (void)state;
    assert_int_equal(st_outbox_dispatch(ob, f), ST_OK);
    assert_int_equal(st_outbox_dispatch(ob, f), ST_OK); /* again: deduplicated */
    assert_int_equal(st_outbox_dispatch(ob, g), ST_OK); /* frontend: audit only */
    assert_int_equal(st_outbox_stats(ob, &s), ST_OK);
    assert_int_equal(s.pending, 3);
    st_outbox_free(ob);

    ob = open_outbox(st); /* a restart */
    assert_int_equal(st_outbox_stats(ob, &s), ST_OK);
    assert_int_equal(s.pending, 3);
    assert_int_equal(s.attempts, 0);
    assert_int_equal(st_outbox_list(st, "pending", 0, &arr), ST_OK);
    assert_int_equal(json_array_size(arr), 3);
    /* Newest first: f2's delivery was created last. */
    assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 0), "finding_id")),
                        "f2");
    assert_int_equal(st_outbox_idempotency_key(f, "dispatched", key), ST_OK);
    assert_string_equal(
        json_string_value(json_object_get(by_endpoint(arr, "ops"), "idempotency_key")), key);
    assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 2), "transition")),
                        "dispatched");
    assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 0), "event")),
                        "finding.ineffective");
    assert_null(json_object_get(json_array_get(arr, 0), "body"));
    json_decref(arr);
    assert_int_equal(st_outbox_list(st, "delivered", 0, &arr), ST_OK);
    assert_int_equal(json_array_size(arr), 0);
    json_decref(arr);
    assert_int_equal(st_outbox_list(st, "bogus", 0, &arr), ST_EINVAL);

    /* The stored body: {event, finding} with the announced status. */
    assert_int_equal(st_store_kv_scan(st, "outbox/", first_body, &body), ST_OK);
    assert_non_null(body);
    check_body(body);
    free(body);
    st_outbox_free(ob);
    st_store_close(st);
    json_decref(f);
    json_decref(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signature),     cmocka_unit_test(test_rotation),
        cmocka_unit_test(test_filter),        cmocka_unit_test(test_https_only),
        cmocka_unit_test(test_config_errors), cmocka_unit_test(test_idempotency_key),
        cmocka_unit_test(test_backoff),       cmocka_unit_test(test_enqueue_durable),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
