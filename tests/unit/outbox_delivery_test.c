/* The outbox against a real receiver: tests/integration/webhook_receiver.py
 * runs as a subprocess on a free loopback port, and st_outbox delivers to
 * it from a real store in a temporary directory. Covers a signed delivery,
 * retries after 500s, a receiver that is down, a stop between send and
 * acknowledgement, refusals (302, 404), max_age, Retry-After and the
 * /v1/deliveries handler. Polls with deadlines, never fixed sleeps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "buf.h"
#include "config.h"
#include "err.h"
#include "http.h"
#include "outbox.h"
#include "routes_outbox.h"
#include "store.h"
#include "timeutil.h"
#include "tmpdir.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define SECRET "s3cret"
#define DEADLINE_MS 15000
#define POLL_MS 20

static char tmpdir[64];
static char receiver_py[600];
static int store_seq;

/* ---- the receiver process ---- */

static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
    return st_buf_append(arg, p, size * n) == ST_OK ? size * n : 0;
}

/* GET /_stats, or NULL while the receiver does not answer. */
static json_t *receiver_stats(int port)
{
    char url[64];
    st_buf b;
    long code = 0;
    json_t *j = NULL;
    CURL *c = curl_easy_init();
    assert_non_null(c);
    st_buf_init(&b, 8u << 20);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/_stats", port);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 2000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    if (curl_easy_perform(c) == CURLE_OK &&
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK && code == 200) {
        j = json_loadb((const char *)b.data, b.len, 0, NULL);
    }
    curl_easy_cleanup(c);
    st_buf_free(&b);
    return j;
}

/* Starts the receiver with --port, --secret and the NULL-terminated extra
 * arguments; returns once it answers. */
static pid_t receiver_start(int port, const char *secret, const char *const *extra)
{
    const char *argv[24] = {"python3", receiver_py, "--port", NULL, "--secret", secret};
    char portbuf[16];
    char log[128];
    size_t n = 6;
    int64_t deadline = st_time_mono_ms() + DEADLINE_MS;
    pid_t pid;
    snprintf(portbuf, sizeof(portbuf), "%d", port);
    argv[3] = portbuf;
    for (; extra != NULL && *extra != NULL && n < 22; extra++) {
        argv[n++] = *extra;
    }
    argv[n] = NULL;
    snprintf(log, sizeof(log), "%s/receiver.log", tmpdir);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execvp("python3", (char *const *)argv);
        _exit(127);
    }
    for (;;) {
        json_t *s = receiver_stats(port);
        int status;
        if (s != NULL) {
            json_decref(s);
            return pid;
        }
        if (waitpid(pid, &status, WNOHANG) == pid) {
            fail_msg("the receiver exited (see %s)", log);
        }
        if (st_time_mono_ms() > deadline) {
            fail_msg("the receiver did not answer on port %d", port);
        }
        st_time_sleep_ms(POLL_MS);
    }
}

static void receiver_stop(pid_t pid)
{
    int64_t deadline = st_time_mono_ms() + 5000;
    int status;
    kill(pid, SIGTERM);
    while (waitpid(pid, &status, WNOHANG) != pid) {
        if (st_time_mono_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return;
        }
        st_time_sleep_ms(POLL_MS);
    }
}

static json_int_t key_count(const json_t *stats, const char *field, const char *key)
{
    return json_integer_value(json_object_get(json_object_get(stats, field), key));
}

/* ---- the outbox under test ---- */

static st_store *open_store(void)
{
    char dir[128];
    st_store *st = NULL;
    struct st_store_opts o = {.dir = dir, .no_sync = true, .map_size = 16u << 20};
    snprintf(dir, sizeof(dir), "%s/store%d", tmpdir, ++store_seq);
    assert_int_equal(st_store_open(&o, &st), ST_OK);
    return st;
}

/* One endpoint "hook" on the port (more YAML in extra). */
static void hook_config(int port, const char *extra, st_outbox_config *c)
{
    char yaml[1024];
    st_cfg_doc *doc = NULL;
    st_cfg_error err;
    snprintf(yaml, sizeof(yaml),
             "webhooks:\n"
             "  - name: hook\n"
             "    url: http://127.0.0.1:%d/hook\n"
             "    secret: " SECRET "\n"
             "    secrets_previous: [old-secret]\n"
             "    timeout: 5s\n"
             "    connect_timeout: 1s\n"
             "%s",
             port, extra ? extra : "");
    assert_int_equal(st_cfg_load_string("collector.yaml", yaml, strlen(yaml), &doc, &err), ST_OK);
    if (st_outbox_config_parse(doc, st_cfg_get(st_cfg_root(doc), "webhooks"), c, &err) != ST_OK) {
        fail_msg("%s", err.msg);
    }
    st_cfg_doc_free(doc);
}

/* An outbox with hook_config's endpoint, fast backoff. */
static st_outbox *outbox_open(st_store *st, int port, const char *extra)
{
    st_outbox_config c;
    struct st_outbox_opts o = {.backoff_base_ms = 100, .backoff_max_ms = 400};
    st_outbox *ob = NULL;
    hook_config(port, extra, &c);
    assert_int_equal(st_outbox_new(st, &c, &o, &ob), ST_OK);
    assert_int_equal(st_outbox_start(ob), ST_OK);
    return ob;
}

static json_t *finding(const char *id)
{
    return json_pack("{s:s,s:s,s:s,s:s,s:s,s:{s:s,s:{s:s}},s:I,s:s}", "id", id, "rule",
                     "db.seq_scan", "layer", "database", "severity", "HIGH", "status", "open",
                     "optimization", "type", "ADD_INDEX", "implementation", "sql",
                     "CREATE INDEX CONCURRENTLY ...", "updated_unix_ms",
                     (json_int_t)st_time_wall_ms(), "summary", "slow statement");
}

/* The delivery of finding_id (newest), or NULL. */
static json_t *delivery_of(st_store *st, const char *finding_id)
{
    json_t *arr = NULL;
    json_t *found = NULL;
    size_t i;
    json_t *d;
    assert_int_equal(st_outbox_list(st, NULL, 0, &arr), ST_OK);
    json_array_foreach(arr, i, d)
    {
        if (strcmp(json_string_value(json_object_get(d, "finding_id")), finding_id) == 0) {
            found = json_incref(d);
            break;
        }
    }
    json_decref(arr);
    return found;
}

static const char *str(const json_t *d, const char *k)
{
    const char *s = json_string_value(json_object_get(d, k));
    return s != NULL ? s : "";
}

static json_int_t num(const json_t *d, const char *k)
{
    return json_integer_value(json_object_get(d, k));
}

/* Polls until the delivery reaches status (fails on a different terminal
 * status or at the deadline). */
static json_t *wait_status(st_store *st, const char *finding_id, const char *status)
{
    int64_t deadline = st_time_mono_ms() + DEADLINE_MS;
    for (;;) {
        json_t *d = delivery_of(st, finding_id);
        if (d != NULL && strcmp(str(d, "status"), status) == 0) {
            return d;
        }
        if (d != NULL && strcmp(str(d, "status"), "pending") != 0) {
            fail_msg("delivery of %s is %s (%s), not %s", finding_id, str(d, "status"),
                     str(d, "last_error"), status);
        }
        if (st_time_mono_ms() > deadline) {
            fail_msg("delivery of %s: still not %s", finding_id, status);
        }
        json_decref(d);
        st_time_sleep_ms(POLL_MS);
    }
}

static void ikey_of(const json_t *f, char out[65])
{
    assert_int_equal(st_outbox_idempotency_key(f, "dispatched", out), ST_OK);
}

/* ---- tests ---- */

/* (1) One signed delivery, delivered once; after a restart it is never
 * sent again and a repeated dispatch is not queued again. */
static void test_delivered_signed(void **state)
{
    int port = free_port();
    pid_t rp = receiver_start(port, SECRET, NULL);
    st_store *st = open_store();
    st_outbox *ob = outbox_open(st, port, NULL);
    json_t *f = finding("d1");
    json_t *g = finding("d1b");
    json_t *d;
    json_t *s;
    const json_t *last;
    struct st_outbox_stats os;
    char k[65];
    (void)state;
    ikey_of(f, k);
    assert_int_equal(st_outbox_dispatch(ob, f), ST_OK);
    d = wait_status(st, "d1", "delivered");
    assert_int_equal(num(d, "attempts"), 1);
    assert_int_equal(num(d, "last_status"), 200);
    assert_string_equal(str(d, "idempotency_key"), k);
    assert_non_null(s = receiver_stats(port));
    assert_int_equal(num(s, "bad_signatures"), 0);
    assert_int_equal(num(s, "requests"), 1);
    assert_int_equal(key_count(s, "keys", k), 1);
    last = json_object_get(s, "last");
    assert_string_equal(str(last, "event_header"), "finding.dispatched");
    assert_string_equal(str(last, "event"), "finding.dispatched");
    assert_string_equal(str(last, "finding_status"), "dispatched");
    assert_string_equal(str(last, "content_type"), "application/json");
    assert_string_equal(str(last, "delivery"), str(d, "id"));
    assert_int_equal(strncmp(str(last, "user_agent"), "strata/", 7), 0);
    assert_int_equal(num(last, "v1_count"), 2); /* current and previous secret */
    assert_int_equal(st_outbox_stats(ob, &os), ST_OK);
    assert_int_equal(os.delivered, 1);
    assert_int_equal(os.attempts, 1);
    assert_int_equal(os.pending, 0);
    json_decref(s);
    json_decref(d);

    /* Restart: d1 is delivered, so only d1b goes out (after anything due
     * before it, so d1 would have been seen again by now). */
    st_outbox_free(ob);
    ob = outbox_open(st, port, NULL);
    assert_int_equal(st_outbox_dispatch(ob, f), ST_OK);
    assert_int_equal(st_outbox_dispatch(ob, g), ST_OK);
    json_decref(wait_status(st, "d1b", "delivered"));
    assert_non_null(s = receiver_stats(port));
    assert_int_equal(key_count(s, "keys", k), 1);
    assert_int_equal(num(s, "requests"), 2);
    json_decref(s);
    st_outbox_free(ob);
    st_store_close(st);
    receiver_stop(rp);
    json_decref(f);
    json_decref(g);
}

/* SIGHUP: new endpoints take over at once; what was delivered stays so. */
static void test_reconfigure(void **state)
{
    int pa = free_port();
    int pb = free_port();
    pid_t ra = receiver_start(pa, SECRET, NULL);
    pid_t rb = receiver_start(pb, SECRET, NULL);
    st_store *st = open_store();
    st_outbox *ob = outbox_open(st, pa, NULL);
    json_t *f = finding("r1");
    json_t *g = finding("r2");
    json_t *s;
    st_outbox_config c;
    (void)state;
    assert_int_equal(st_outbox_dispatch(ob, f), ST_OK);
    json_decref(wait_status(st, "r1", "delivered"));
    hook_config(pb, NULL, &c);
    assert_int_equal(st_outbox_reconfigure(ob, &c), ST_OK);
    assert_int_equal(c.n, 0); /* taken over */
    assert_int_equal(st_outbox_dispatch(ob, g), ST_OK);
    json_decref(wait_status(st, "r2", "delivered"));
    assert_non_null(s = receiver_stats(pa));
    assert_int_equal(num(s, "requests"), 1);
    json_decref(s);
    assert_non_null(s = receiver_stats(pb));
    assert_int_equal(num(s, "requests"), 1);
    assert_int_equal(num(s, "bad_signatures"), 0);
    json_decref(s);
    st_outbox_free(ob);
    st_store_close(st);
    receiver_stop(ra);
    receiver_stop(rb);
    json_decref(f);
    json_decref(g);
}

/* (2) 500, 500, 200: three attempts, processed once under one key. */
static void test_retry_after_500(void **state)
{
    int port = free_port();
    pid_t rp = receiver_start(port, SECRET, (const char *const[]){"--fail-first", "2", NULL});
    st_store *st = open_store();
    st_outbox *ob = outbox_open(st, port, NULL);
    json_t *f = finding("r1");
    json_t *d;
    json_t *s;
    char k[65];
    (void)state;
    ikey_of(f, k);
    assert_int_equal(st_outbox_dispatch(ob, f), ST_OK);
    d = wait_status(st, "r1", "delivered");
    assert_int_equal(num(d, "attempts"), 3);
    assert_non_null(s = receiver_stats(port));
    assert_int_equal(key_count(s, "keys", k), 3);
    assert_int_equal(key_count(s, "processed", k), 1);
    assert_int_equal(json_object_size(json_object_get(s, "processed")), 1);
    json_decref(s);
    json_decref(d);
    st_outbox_free(ob);
    st_store_close(st);
    receiver_stop(rp);
    json_decref(f);
}

/* (3) Nobody listens at first: retried until the receiver comes up. */
static void test_receiver_down(void **state)
{
    int port = free_port();
    st_store *st = open_store();
    st_outbox *ob = outbox_open(st, port, NULL);
    json_t *f = finding("u1");
    json_t *d = NULL;
    json_t *s;
    int64_t deadline = st_time_mono_ms() + DEADLINE_MS;
    pid_t rp;
    char k[65];
    (void)state;
    ikey_of(f, k);
    assert_int_equal(st_outbox_dispatch(ob, f), ST_OK);
    for (;;) {
        json_decref(d);
        d = delivery_of(st, "u1");
        if (d != NULL && num(d, "attempts") >= 2) {
            break;
        }
        assert_true(st_time_mono_ms() < deadline);
        st_time_sleep_ms(POLL_MS);
    }
    assert_string_equal(str(d, "status"), "pending");
    assert_true(json_is_null(json_object_get(d, "last_status")));
    assert_true(strlen(str(d, "last_error")) > 0); /* the connection error */
    json_decref(d);
    rp = receiver_start(port, SECRET, NULL);
    d = wait_status(st, "u1", "delivered");
    assert_true(num(d, "attempts") >= 3);
    assert_non_null(s = receiver_stats(port));
    assert_int_equal(key_count(s, "keys", k), 1);
    json_decref(s);
    json_decref(d);
    st_outbox_free(ob);
    st_store_close(st);
    receiver_stop(rp);
    json_decref(f);
}

/* (4) The collector goes away after the receiver got the request but
 * before its 2xx was recorded: the next outbox on the same store sends it
 * again under the same key, and the receiver processes it once. */
static void test_stop_before_ack(void **state)
{
    int port = free_port();
    pid_t rp = receiver_start(port, SECRET, (const char *const[]){"--delay-first", "30", NULL});
    st_store *st = open_store();
    st_outbox *ob = outbox_open(st, port, NULL); /* timeout 5s: stopped well before */
    json_t *f = finding("k1");
    json_t *d;
    json_t *s = NULL;
    int64_t deadline = st_time_mono_ms() + DEADLINE_MS;
    int64_t t0;
    char k[65];
    (void)state;
    ikey_of(f, k);
    assert_int_equal(st_outbox_dispatch(ob, f), ST_OK);
    while (s == NULL || key_count(s, "keys", k) < 1) {
        json_decref(s);
        assert_true(st_time_mono_ms() < deadline);
        st_time_sleep_ms(POLL_MS);
        s = receiver_stats(port);
    }
    json_decref(s);
    t0 = st_time_mono_ms();
    st_outbox_free(ob); /* in flight: abandoned, nothing recorded */
    assert_true(st_time_mono_ms() - t0 < 5000);
    assert_non_null(d = delivery_of(st, "k1"));
    assert_string_equal(str(d, "status"), "pending");
    assert_int_equal(num(d, "attempts"), 0);
    json_decref(d);

    ob = outbox_open(st, port, NULL);
    d = wait_status(st, "k1", "delivered");
    assert_int_equal(num(d, "attempts"), 1);
    assert_non_null(s = receiver_stats(port));
    assert_int_equal(key_count(s, "keys", k), 2);      /* sent twice */
    assert_int_equal(key_count(s, "processed", k), 1); /* processed once */
    json_decref(s);
    json_decref(d);
    st_outbox_free(ob);
    st_store_close(st);
    receiver_stop(rp);
    json_decref(f);
}

/* A refusal: failed at once, one request, no retry. */
static void refusal(const char *const *args, const char *finding_id, const char *why, long status)
{
    int port = free_port();
    pid_t rp = receiver_start(port, SECRET, args);
    st_store *st = open_store();
    st_outbox *ob = outbox_open(st, port, NULL);
    json_t *f = finding(finding_id);
    struct st_outbox_stats os;
    json_t *d;
    json_t *s;
    char k[65];
    ikey_of(f, k);
    assert_int_equal(st_outbox_dispatch(ob, f), ST_OK);
    d = wait_status(st, finding_id, "failed");
    assert_string_equal(str(d, "last_error"), why);
    assert_int_equal(num(d, "last_status"), status);
    assert_int_equal(num(d, "attempts"), 1);
    assert_int_equal(st_outbox_stats(ob, &os), ST_OK);
    assert_int_equal(os.failed, 1);
    assert_int_equal(os.pending, 0);
    assert_non_null(s = receiver_stats(port));
    assert_int_equal(key_count(s, "keys", k), 1);
    assert_int_equal(num(s, "requests"), 1); /* the Location was not followed */
    json_decref(s);
    json_decref(d);
    st_outbox_free(ob);
    st_store_close(st);
    receiver_stop(rp);
    json_decref(f);
}

/* (5) and (6) */
static void test_redirect_refused(void **state)
{
    (void)state;
    refusal((const char *const[]){"--redirect", NULL}, "x302", "redirect refused (HTTP 302)", 302);
}

static void test_404_not_retried(void **state)
{
    (void)state;
    refusal((const char *const[]){"--status", "404", NULL}, "x404", "HTTP 404", 404);
}

/* (7) A receiver that keeps failing: given up after max_age. */
static void test_max_age(void **state)
{
    int port = free_port();
    pid_t rp = receiver_start(port, SECRET, (const char *const[]){"--fail-first", "100000", NULL});
    st_store *st = open_store();
    st_outbox *ob = outbox_open(st, port, "    max_age: 1s\n");
    json_t *f = finding("m1");
    json_t *d;
    json_t *s;
    char k[65];
    (void)state;
    ikey_of(f, k);
    assert_int_equal(st_outbox_dispatch(ob, f), ST_OK);
    d = wait_status(st, "m1", "failed");
    if (strncmp(str(d, "last_error"), "gave up after 1s (", 18) != 0) {
        fail_msg("last_error: %s", str(d, "last_error"));
    }
    assert_non_null(strstr(str(d, "last_error"), "HTTP 500"));
    assert_true(num(d, "attempts") >= 2);
    assert_int_equal(num(d, "last_status"), 500);
    assert_non_null(s = receiver_stats(port));
    assert_int_equal(key_count(s, "keys", k), num(d, "attempts"));
    json_decref(s);
    json_decref(d);
    st_outbox_free(ob);
    st_store_close(st);
    receiver_stop(rp);
    json_decref(f);
}

/* 429 with Retry-After: 1 waits about a second, though backoff says 100 ms;
 * the receiver knows only the previous secret (a rotation in progress). */
static void test_retry_after_header(void **state)
{
    int port = free_port();
    pid_t rp = receiver_start(port, "old-secret",
                              (const char *const[]){"--fail-first", "1", "--fail-status", "429",
                                                    "--retry-after", "1", NULL});
    st_store *st = open_store();
    st_outbox *ob = outbox_open(st, port, NULL);
    json_t *f = finding("ra1");
    json_t *d;
    json_t *s;
    json_t *times;
    (void)state;
    assert_int_equal(st_outbox_dispatch(ob, f), ST_OK);
    d = wait_status(st, "ra1", "delivered");
    assert_int_equal(num(d, "attempts"), 2);
    assert_non_null(s = receiver_stats(port));
    assert_int_equal(num(s, "bad_signatures"), 0);
    times = json_object_get(s, "times");
    assert_int_equal(json_array_size(times), 2);
    assert_true(json_real_value(json_array_get(times, 1)) -
                    json_real_value(json_array_get(times, 0)) >=
                0.9);
    json_decref(s);
    json_decref(d);
    st_outbox_free(ob);
    st_store_close(st);
    receiver_stop(rp);
    json_decref(f);
}

/* Calls the handler as the API would. */
static json_t *route(st_store *st, const char *status, const char *limit, int *code)
{
    struct st_api_deps deps = {.store = st};
    st_req req = {.method = "GET", .path = "/v1/deliveries"};
    st_resp resp = {0};
    json_t *j;
    if (status != NULL) {
        req.params[req.nparams++] = (st_param){"status", (char *)status};
    }
    if (limit != NULL) {
        req.params[req.nparams++] = (st_param){"limit", (char *)limit};
    }
    st_buf_init(&resp.body, 1u << 20);
    assert_int_equal(st_route_deliveries(&deps, &req, &resp), ST_OK);
    *code = resp.status;
    j = json_loadb((const char *)resp.body.data, resp.body.len, 0, NULL);
    st_buf_free(&resp.body);
    assert_non_null(j);
    return j;
}

/* One failed delivery as the API shows it: no body. */
static void check_failed_shape(const json_t *d)
{
    assert_string_equal(str(d, "endpoint"), "gone");
    assert_string_equal(str(d, "status"), "failed");
    assert_string_equal(str(d, "finding_id"), "api1");
    assert_string_equal(str(d, "transition"), "dispatched");
    assert_string_equal(str(d, "last_error"), "HTTP 410");
    assert_int_equal(num(d, "last_status"), 410);
    assert_int_equal(strlen(str(d, "idempotency_key")), 64);
    assert_int_equal(strlen(str(d, "id")), 36);
    assert_true(num(d, "created_unix_ms") > 0);
    assert_null(json_object_get(d, "body"));
}

/* (8) GET /v1/deliveries: shape, status filter, newest first, limit. */
static void test_route_deliveries(void **state)
{
    int port = free_port();
    int bad_port = free_port();
    pid_t rp = receiver_start(port, SECRET, NULL);
    pid_t bp = receiver_start(bad_port, SECRET, (const char *const[]){"--status", "410", NULL});
    char extra[256];
    st_store *st = open_store();
    st_outbox *ob;
    json_t *f = finding("api1");
    json_t *j;
    json_t *arr;
    int code;
    (void)state;
    snprintf(extra, sizeof(extra),
             "  - name: gone\n    url: http://localhost:%d/hook\n    secret: " SECRET "\n",
             bad_port);
    ob = outbox_open(st, port, extra);
    assert_int_equal(st_outbox_dispatch(ob, f), ST_OK);
    json_decref(wait_status(st, "api1", "failed"));

    j = route(st, "failed", NULL, &code);
    assert_int_equal(code, 200);
    arr = json_object_get(j, "deliveries");
    assert_int_equal(json_array_size(arr), 1);
    check_failed_shape(json_array_get(arr, 0));
    json_decref(j);

    /* Both, newest first: "gone" was queued after "hook". */
    for (int64_t dl = st_time_mono_ms() + DEADLINE_MS;; st_time_sleep_ms(POLL_MS)) {
        j = route(st, "delivered", NULL, &code);
        if (json_array_size(json_object_get(j, "deliveries")) == 1) {
            json_decref(j);
            break;
        }
        json_decref(j);
        assert_true(st_time_mono_ms() < dl);
    }
    j = route(st, NULL, NULL, &code);
    arr = json_object_get(j, "deliveries");
    assert_int_equal(json_array_size(arr), 2);
    assert_string_equal(str(json_array_get(arr, 0), "endpoint"), "gone");
    assert_string_equal(str(json_array_get(arr, 1), "endpoint"), "hook");
    assert_true(num(json_array_get(arr, 0), "created_unix_ms") >
                num(json_array_get(arr, 1), "created_unix_ms"));
    json_decref(j);
    j = route(st, NULL, "1", &code);
    assert_int_equal(json_array_size(json_object_get(j, "deliveries")), 1);
    json_decref(j);
    j = route(st, "bogus", NULL, &code);
    assert_int_equal(code, 400);
    assert_non_null(json_object_get(j, "error"));
    json_decref(j);
    j = route(st, NULL, "0", &code);
    assert_int_equal(code, 400);
    json_decref(j);

    st_outbox_free(ob);
    st_store_close(st);
    receiver_stop(rp);
    receiver_stop(bp);
    json_decref(f);
}

/* ---- fixture ---- */

static int setup(void **state)
{
    const char *src = getenv("ST_SRC");
    (void)state;
    assert_non_null(st_test_mkdtemp(tmpdir, sizeof(tmpdir), "outbox-dl"));
    if (src != NULL) {
        snprintf(receiver_py, sizeof(receiver_py), "%s/tests/integration/webhook_receiver.py", src);
    } else {
        /* Run by hand: the receiver sits beside this file's directory. */
        const char *cut = strstr(__FILE__, "/tests/unit/");
        assert_non_null(cut);
        snprintf(receiver_py, sizeof(receiver_py), "%.*s/tests/integration/webhook_receiver.py",
                 (int)(cut - __FILE__), __FILE__);
    }
    assert_int_equal(access(receiver_py, R_OK), 0);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    curl_global_cleanup();
    if (getenv("ST_KEEP_TMP") != NULL) {
        return 0;
    }
    return st_test_rmtree(tmpdir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delivered_signed),   cmocka_unit_test(test_reconfigure),
        cmocka_unit_test(test_retry_after_500),    cmocka_unit_test(test_receiver_down),
        cmocka_unit_test(test_stop_before_ack),    cmocka_unit_test(test_redirect_refused),
        cmocka_unit_test(test_404_not_retried),    cmocka_unit_test(test_max_age),
        cmocka_unit_test(test_retry_after_header), cmocka_unit_test(test_route_deliveries),
    };
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, setup, teardown);
}
