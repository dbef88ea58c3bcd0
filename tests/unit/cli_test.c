/* Unit tests of the strata CLI: table layout, unit and time formatting,
 * truncation, query-string building, the renderers, and the libcurl client
 * (and the strata binary itself) against a tiny HTTP server on loopback. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "client.h"
#include "err.h"
#include "format.h"
#include "render.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* ---- helpers ---------------------------------------------------------- */

static const char *cstr(st_buf *b)
{
    const char *s = NULL;
    assert_int_equal(st_buf_cstr(b, &s), ST_OK);
    return s;
}

static void assert_value(double v, const char *unit, const char *want)
{
    char buf[ST_FMT_VALUE_LEN];
    st_fmt_value(v, unit, buf, sizeof(buf));
    if (strcmp(buf, want) != 0) {
        fail_msg("st_fmt_value(%g, %s) = \"%s\", want \"%s\"", v, unit ? unit : "NULL", buf, want);
    }
}

static void assert_truncate(const char *s, size_t max, const char *want)
{
    st_buf b;
    st_buf_init(&b, 1024);
    assert_int_equal(st_fmt_truncate(s, max, &b), ST_OK);
    assert_string_equal(cstr(&b), want);
    st_buf_free(&b);
}

static void assert_sanitize(const char *s, bool keep, const char *want)
{
    st_buf b;
    st_buf_init(&b, 1024);
    assert_int_equal(st_fmt_sanitize(s, keep, &b), ST_OK);
    assert_string_equal(cstr(&b), want);
    st_buf_free(&b);
}

static json_t *parse(const char *text)
{
    json_error_t err;
    json_t *j = json_loads(text, 0, &err);
    if (j == NULL) {
        fail_msg("bad test JSON: %s", err.text);
    }
    return j;
}

/* ---- format.c --------------------------------------------------------- */

static void test_table_alignment(void **state)
{
    static const char *const headers[] = {"NAME", "COUNT", "WHEN"};
    static const char *const r1[] = {"alpha", "5", "3s ago"};
    static const char *const r2[] = {"b", "12345", "10m ago"};
    st_table *t = st_table_new(3, headers);
    st_buf out;
    (void)state;

    assert_non_null(t);
    assert_int_equal(st_table_add_row(t, r1), ST_OK);
    assert_int_equal(st_table_add_row(t, r2), ST_OK);
    assert_int_equal(st_table_rows(t), 2);
    st_buf_init(&out, 4096);
    assert_int_equal(st_table_render(t, &out), ST_OK);
    /* Columns sized to content, numbers right-aligned, no trailing blanks. */
    assert_string_equal(cstr(&out), "NAME   COUNT  WHEN\n"
                                    "alpha      5  3s ago\n"
                                    "b      12345  10m ago\n");
    st_buf_free(&out);
    st_table_free(t);
}

static void test_table_numeric_detection(void **state)
{
    static const char *const headers[] = {"V", "UNIT", "VER", "X"};
    static const char *const r1[] = {"12.3 ms", "1.50 MiB", "0.1.0", "-"};
    static const char *const r2[] = {"850 µs", "-", "10.2.11", "7"};
    st_table *t = st_table_new(4, headers);
    st_buf out;
    (void)state;

    assert_int_equal(st_table_add_row(t, r1), ST_OK);
    assert_int_equal(st_table_add_row(t, r2), ST_OK);
    st_buf_init(&out, 4096);
    assert_int_equal(st_table_render(t, &out), ST_OK);
    /* Values with units and "-" placeholders stay right-aligned; a version
     * ("0.1.0") is text; "µs" counts as two columns, not three bytes. */
    assert_string_equal(cstr(&out), "      V      UNIT  VER      X\n"
                                    "12.3 ms  1.50 MiB  0.1.0    -\n"
                                    " 850 µs         -  10.2.11  7\n");
    st_buf_free(&out);
    st_table_free(t);
}

static void test_table_truncation_and_sanitizing(void **state)
{
    static const char *const headers[] = {"ID", "SUMMARY"};
    static const char *const r1[] = {"f1", "a very long summary that goes on"};
    static const char *const r2[] = {"f2\n", "bad\x1b[2Jterm"};
    st_table *t = st_table_new(2, headers);
    st_buf out;
    (void)state;

    st_table_max_width(t, 1, 10);
    st_table_align(t, 0, ST_ALIGN_RIGHT);
    assert_int_equal(st_table_add_row(t, r1), ST_OK);
    assert_int_equal(st_table_add_row(t, r2), ST_OK);
    st_buf_init(&out, 4096);
    assert_int_equal(st_table_render(t, &out), ST_OK);
    assert_string_equal(cstr(&out), " ID  SUMMARY\n"
                                    " f1  a very lo…\n"
                                    "f2   bad [2Jte…\n");
    st_buf_free(&out);
    st_table_free(t);
    assert_null(st_table_new(0, headers));
    st_table_free(NULL);
}

static void test_table_render_cap(void **state)
{
    static const char *const headers[] = {"A"};
    static const char *const r[] = {"0123456789"};
    st_table *t = st_table_new(1, headers);
    st_buf out;
    (void)state;

    assert_int_equal(st_table_add_row(t, r), ST_OK);
    st_buf_init(&out, 8);
    assert_int_equal(st_table_render(t, &out), ST_ETOOBIG);
    st_buf_free(&out);
    st_table_free(t);
}

static void test_fmt_seconds(void **state)
{
    (void)state;
    assert_value(0.0123, "s", "12.3 ms");
    assert_value(1.5, "s", "1.50 s");
    assert_value(0.00085, "s", "850 µs");
    assert_value(2e-9, "s", "2.00 ns");
    assert_value(0.9996, "s", "1.00 s"); /* rounds up into the next unit */
    assert_value(0.25, "s", "250 ms");
    assert_value(120.0, "s", "120 s");
    assert_value(0.0, "s", "0 s");
    assert_value(-0.25, "s", "-250 ms");
    assert_value(250.0, "ms", "250 ms");
    assert_value(1500.0, "ms", "1.50 s");
}

static void test_fmt_bytes(void **state)
{
    (void)state;
    assert_value(0.0, "B", "0 B");
    assert_value(512.0, "B", "512 B");
    assert_value(1536.0, "B", "1.50 KiB");
    assert_value(1023.6, "B", "1.00 KiB");
    assert_value(1572864.0, "B", "1.50 MiB");
    assert_value(100.0 * 1048576.0, "B", "100 MiB");
    assert_value(3.0 * 1073741824.0, "B", "3.00 GiB");
    assert_value(1.25 * 1099511627776.0, "B", "1.25 TiB");
    assert_value(250.0 * 1024.0, "bytes", "250 KiB");
}

static void test_fmt_ratio_and_plain(void **state)
{
    (void)state;
    assert_value(0.451, "ratio", "45.1 %");
    assert_value(1.0, "ratio", "100 %");
    assert_value(0.00123, "ratio", "0.123 %");
    assert_value(0.0, "ratio", "0 %");
    assert_value(45.1, "%", "45.1 %");
    assert_value(42.0, NULL, "42");
    assert_value(1234567.0, "", "1234567");
    assert_value(3.14159, NULL, "3.14");
    assert_value(0.5, "1", "0.500");
    assert_value(1234.56, NULL, "1235");
    assert_value(1500.0, "rps", "1500 rps");
    assert_value(NAN, "s", "NaN");
    assert_value(INFINITY, "B", "+Inf");
    assert_value(-INFINITY, NULL, "-Inf");
}

static void test_fmt_ago(void **state)
{
    const int64_t now = 1795759200000;
    char buf[ST_FMT_VALUE_LEN];
    (void)state;

    st_fmt_ago(now, now - 3000, buf, sizeof(buf));
    assert_string_equal(buf, "3s ago");
    st_fmt_ago(now, now - 500, buf, sizeof(buf));
    assert_string_equal(buf, "0s ago");
    st_fmt_ago(now, now - 59999, buf, sizeof(buf));
    assert_string_equal(buf, "59s ago");
    st_fmt_ago(now, now - 5 * 60000 - 1, buf, sizeof(buf));
    assert_string_equal(buf, "5m ago");
    st_fmt_ago(now, now - 2 * 3600000, buf, sizeof(buf));
    assert_string_equal(buf, "2h ago");
    st_fmt_ago(now, now - 3 * 86400000LL, buf, sizeof(buf));
    assert_string_equal(buf, "3d ago");
    st_fmt_ago(now, now + 3000, buf, sizeof(buf));
    assert_string_equal(buf, "in 3s");
    st_fmt_ago(now, 0, buf, sizeof(buf));
    assert_string_equal(buf, "never");
}

static void test_truncate_and_width(void **state)
{
    (void)state;
    assert_int_equal(st_fmt_width("µs"), 2);
    assert_int_equal(st_fmt_width(NULL), 0);
    assert_truncate("hello world", 5, "hell…");
    assert_truncate("abc", 3, "abc");
    assert_truncate("abcd", 3, "ab…");
    assert_truncate("héllo", 3, "hé…"); /* never splits the two bytes of é */
    assert_truncate("日本語テキスト", 4, "日本語…");
    assert_truncate("abc", 1, "…");
    assert_truncate("abc", 0, "");
    assert_truncate("", 0, "");
}

static void test_sanitize(void **state)
{
    (void)state;
    assert_sanitize("a\x1b[31mb", false, "a [31mb");
    assert_sanitize("x\xff y", false, "x? y");
    assert_sanitize("\xc2\x9b", false, " ");       /* C1 CSI */
    assert_sanitize("\xc0\xaf", false, "??");      /* overlong '/' */
    assert_sanitize("\xed\xa0\x80", false, "???"); /* surrogate */
    assert_sanitize("\xe2\x82", false, "??");      /* cut sequence */
    assert_sanitize("a\nb\tc", false, "a b c");
    assert_sanitize("a\nb\tc", true, "a\nb\tc");
    assert_sanitize("µ日\xf0\x9f\x98\x80", false, "µ日\xf0\x9f\x98\x80");
}

/* ---- client.c: URL building ------------------------------------------- */

static void test_query_path(void **state)
{
    st_query_params q = {.metric = "http.server.duration",
                         .agg = "p95",
                         .match = {"route=/api/v1 users", "status_class=5xx"},
                         .n_match = 2,
                         .by = "route,host",
                         .from = "-1h",
                         .step = "10s"};
    st_buf b;
    (void)state;

    st_buf_init(&b, ST_CLIENT_URL_MAX);
    assert_int_equal(st_client_query_path(&q, &b), ST_OK);
    assert_string_equal(cstr(&b), "/v1/query?metric=http.server.duration&agg=p95"
                                  "&match=route%3D%2Fapi%2Fv1%20users&match=status_class%3D5xx"
                                  "&by=route%2Chost&from=-1h&step=10s");
    st_buf_reset(&b);
    q = (st_query_params){.metric = "a&b=c", .from = "1795759200000", .to = "1795762800000"};
    assert_int_equal(st_client_query_path(&q, &b), ST_OK);
    assert_string_equal(cstr(&b), "/v1/query?metric=a%26b%3Dc&from=1795759200000&to=1795762800000");

    q = (st_query_params){.metric = ""};
    assert_int_equal(st_client_query_path(&q, &b), ST_EINVAL);
    q = (st_query_params){.metric = "m", .agg = "p77"};
    assert_int_equal(st_client_query_path(&q, &b), ST_EINVAL);
    q = (st_query_params){.metric = "m", .match = {"=v"}, .n_match = 1};
    assert_int_equal(st_client_query_path(&q, &b), ST_EINVAL);
    q = (st_query_params){.metric = "m", .match = {"novalue"}, .n_match = 1};
    assert_int_equal(st_client_query_path(&q, &b), ST_EINVAL);
    q = (st_query_params){.metric = "m", .n_match = ST_CLIENT_MAX_MATCH + 1};
    assert_int_equal(st_client_query_path(&q, &b), ST_EINVAL);
    st_buf_free(&b);

    assert_true(st_client_agg_valid("ratio"));
    assert_true(st_client_agg_valid("p99"));
    assert_false(st_client_agg_valid("P99"));
    assert_false(st_client_agg_valid(NULL));
}

static void assert_time(const char *arg, const char *want)
{
    char out[32];
    int rv = st_client_time_param(arg, 1795759200123, out, sizeof(out));
    if (want == NULL) {
        assert_int_equal(rv, ST_EINVAL);
        return;
    }
    assert_int_equal(rv, ST_OK);
    assert_string_equal(out, want);
}

static void test_time_param(void **state)
{
    (void)state;
    assert_time("1h", "-1h");
    assert_time("-30m", "-30m");
    assert_time("90m", "-90m");
    assert_time("90", "-90s");
    assert_time("7d", "-7d");
    assert_time("now", "1795759200123");
    assert_time("1795759200000", "1795759200000");
    assert_time("1795759200", "1795759200000"); /* seconds */
    assert_time("2026-11-27T06:00:00Z", "1795759200000");
    assert_time("2026-11-27T06:00:00.5Z", "1795759200500");
    assert_time("2026-11-27T06:00:00.123456Z", "1795759200123");
    assert_time("2026-11-27T06:00:00", NULL); /* no zone: ambiguous */
    assert_time("2026-11-27T06:00:00.Z", NULL);
    assert_time("0s", NULL);
    assert_time("-", NULL);
    assert_time("yesterday", NULL);
    assert_time("", NULL);
}

static void test_findings_paths(void **state)
{
    st_buf b;
    (void)state;

    st_buf_init(&b, ST_CLIENT_URL_MAX);
    assert_int_equal(st_client_findings_path("database", "open", 20, &b), ST_OK);
    assert_string_equal(cstr(&b), "/v1/findings?status=open&layer=database&limit=20");
    st_buf_reset(&b);
    assert_int_equal(st_client_findings_path(NULL, NULL, 0, &b), ST_OK);
    assert_string_equal(cstr(&b), "/v1/findings");
    st_buf_reset(&b);
    assert_int_equal(st_client_finding_path("f/1 x?", "ack", &b), ST_OK);
    assert_string_equal(cstr(&b), "/v1/findings/f%2F1%20x%3F/ack");
    st_buf_reset(&b);
    assert_int_equal(st_client_finding_path("42", NULL, &b), ST_OK);
    assert_string_equal(cstr(&b), "/v1/findings/42");
    assert_int_equal(st_client_finding_path("", "ack", &b), ST_EINVAL);
    assert_int_equal(st_client_finding_path("..", "ack", &b), ST_EINVAL);
    st_buf_free(&b);
}

/* ---- render.c --------------------------------------------------------- */

static void test_render_agents(void **state)
{
    const int64_t now = 1795759200000;
    json_t *doc = parse("{\"agents\": ["
                        "{\"id\": \"a1\", \"host\": \"web-1\", \"role\": \"EDGE\", "
                        "\"version\": \"0.1.0\", \"last_seen_unix_ms\": 1795759197000, "
                        "\"seq\": 100, \"frames\": 97},"
                        "{\"id\": \"a2\", \"host\": \"db-1\", \"role\": \"DB\", "
                        "\"version\": \"0.1.0\", \"last_seen_unix_ms\": 1795758900000, "
                        "\"seq\": 5, \"frames\": 5, \"spool_frames\": 2}]}");
    st_buf out;
    (void)state;

    st_buf_init(&out, 1 << 20);
    assert_int_equal(st_render_agents(doc, now, &out), ST_OK);
    assert_string_equal(cstr(&out),
                        "HOST   ROLE  VERSION  LAST SEEN  SEQ  FRAMES  LOST  SPOOL  ID\n"
                        "web-1  EDGE  0.1.0       3s ago  100      97     3      -  a1\n"
                        "db-1   DB    0.1.0       5m ago    5       5     0      2  a2\n");
    json_decref(doc);

    st_buf_reset(&out);
    doc = parse("{\"agents\": []}");
    assert_int_equal(st_render_agents(doc, now, &out), ST_OK);
    assert_string_equal(cstr(&out), "no agents have reported\n");
    json_decref(doc);
    doc = parse("{\"agents\": [1]}");
    assert_int_equal(st_render_agents(doc, now, &out), ST_EPARSE);
    json_decref(doc);
    doc = parse("{\"nope\": []}");
    assert_int_equal(st_render_agents(doc, now, &out), ST_EPARSE);
    json_decref(doc);
    st_buf_free(&out);
}

static void test_render_query(void **state)
{
    json_t *doc = parse("{\"metric\": \"http.server.duration\", \"unit\": \"s\", \"series\": ["
                        "{\"labels\": {\"route\": \"/api\", \"status_class\": \"2xx\"},"
                        " \"points\": [[1795759200000, 0.0123], [1795759210000, null],"
                        " [1795759220000, 1.5]]},"
                        "{\"labels\": {\"route\": \"/img\"}, \"unit\": \"B\","
                        " \"points\": [[1795759200000, 1572864]]}]}");
    st_buf out;
    (void)state;

    st_buf_init(&out, 1 << 20);
    assert_int_equal(st_render_query(doc, &out), ST_OK);
    assert_string_equal(cstr(&out), "http.server.duration{route=\"/api\", status_class=\"2xx\"}\n"
                                    "TIME                        VALUE\n"
                                    "2026-11-27T06:00:00.000Z  12.3 ms\n"
                                    "2026-11-27T06:00:10.000Z        -\n"
                                    "2026-11-27T06:00:20.000Z   1.50 s\n"
                                    "\n"
                                    "http.server.duration{route=\"/img\"}\n"
                                    "TIME                         VALUE\n"
                                    "2026-11-27T06:00:00.000Z  1.50 MiB\n");
    json_decref(doc);

    st_buf_reset(&out);
    doc = parse("{\"series\": [{\"labels\": {}, \"points\": [[1795759200000, 0.25]]}]}");
    assert_int_equal(st_render_query(doc, &out), ST_OK);
    assert_string_equal(cstr(&out), "(no labels)\n"
                                    "TIME                      VALUE\n"
                                    "2026-11-27T06:00:00.000Z  0.250\n");
    json_decref(doc);
    doc = parse("{\"series\": [{\"labels\": {}, \"points\": [[\"x\", 1]]}]}");
    assert_int_equal(st_render_query(doc, &out), ST_EPARSE);
    json_decref(doc);
    st_buf_free(&out);
}

static void test_render_status_and_findings(void **state)
{
    json_t *doc = parse("{\"status\": \"RUNNING\", \"iteration\": 3, \"max_iterations\": 10,"
                        " \"targets\": [{\"name\": \"p95\", \"target\": 0.5, \"value\": 0.612,"
                        " \"unit\": \"s\", \"met\": false},"
                        " {\"name\": \"error_rate\", \"target\": 0.01, \"value\": 0.002,"
                        " \"unit\": \"ratio\", \"met\": true}]}");
    st_buf out;
    (void)state;

    st_buf_init(&out, 1 << 20);
    assert_int_equal(st_render_status(doc, &out), ST_OK);
    assert_string_equal(cstr(&out), "status:     RUNNING\n"
                                    "iteration:  3 of 10\n"
                                    "\n"
                                    "TARGET        GOAL    VALUE  MET\n"
                                    "p95         500 ms   612 ms  no\n"
                                    "error_rate  1.00 %  0.200 %  yes\n");
    json_decref(doc);

    /* the end of the windows the engine judged */
    st_buf_reset(&out);
    doc = parse("{\"status\": \"OPTIMIZING\", \"iteration\": 1, \"max_iterations\": 10,"
                " \"windows_end_unix_ms\": 1800000060000, \"targets\": []}");
    assert_int_equal(st_render_status(doc, &out), ST_OK);
    assert_string_equal(cstr(&out), "status:     OPTIMIZING\n"
                                    "iteration:  1 of 10\n"
                                    "data to:    2027-01-15T08:01:00Z\n");
    json_decref(doc);

    st_buf_reset(&out);
    doc = parse("{\"findings\": [{\"id\": \"f-7\", \"priority\": 91.5, \"severity\": \"HIGH\","
                " \"layer\": \"infrastructure\", \"rule\": \"cdn_hit_rate\", \"status\": \"open\","
                " \"entity\": \"cdn\", \"summary\": \"CDN hit rate 0.71 below 0.9 across 40 "
                "edge hosts, origin p95 rose with it and keeps rising\"},"
                " {\"id\": 8, \"priority\": 7, \"severity\": \"LOW\", \"layer\": \"frontend\","
                " \"rule\": \"unused_bytes\", \"status\": \"open\", \"entity\": null,"
                " \"summary\": \"unused\"}]}");
    assert_int_equal(st_render_findings(doc, &out), ST_OK);
    assert_string_equal(
        cstr(&out),
        "ID   PRIO  SEVERITY  LAYER           RULE          STATUS  ENTITY  SUMMARY\n"
        "f-7  91.5  HIGH      infrastructure  cdn_hit_rate  open    cdn     CDN hit rate 0.71 "
        "below 0.9 across 40 edge hosts, origin p95 rose with it and k…\n"
        "8       7  LOW       frontend        unused_bytes  open    -       unused\n");
    json_decref(doc);
    st_buf_free(&out);
}

static void test_render_finding(void **state)
{
    json_t *doc = parse(
        "{\"id\": \"f-1\", \"rule\": \"db_seq_scan\", \"layer\": \"database\","
        " \"severity\": \"HIGH\", \"priority\": 80, \"status\": \"open\","
        " \"entity\": \"orders\", \"caused_by\": null,"
        " \"created_unix_ms\": 1795759140000,"
        " \"evidence\": {\"series\": \"db.statement.time\", \"value\": 0.612,"
        " \"threshold\": 0.2, \"unit\": \"s\", \"calls\": 1200},"
        " \"optimization\": {\"type\": \"ADD_INDEX\", \"implementation\":"
        " \"CREATE INDEX CONCURRENTLY ix\\n  ON orders (customer_id);\"},"
        " \"history\": [{\"at_unix_ms\": 1795759140000, \"status\": \"open\"},"
        " {\"at_unix_ms\": 1795759170000, \"status\": \"dispatched\", \"tags\": [\"a\", \"b\"]}],"
        " \"actions\": []}");
    st_buf out;
    (void)state;

    st_buf_init(&out, 1 << 20);
    assert_int_equal(st_render_finding(doc, 1795759200000, &out), ST_OK);
    assert_string_equal(cstr(&out), "id:              f-1\n"
                                    "rule:            db_seq_scan\n"
                                    "layer:           database\n"
                                    "severity:        HIGH\n"
                                    "priority:        80\n"
                                    "status:          open\n"
                                    "entity:          orders\n"
                                    "caused_by:       -\n"
                                    "created_unix_ms: 2026-11-27T05:59:00.000Z (1m ago)\n"
                                    "evidence:\n"
                                    "  series:    db.statement.time\n"
                                    "  value:     612 ms\n"
                                    "  threshold: 200 ms\n"
                                    "  unit:      s\n"
                                    "  calls:     1200\n"
                                    "optimization:\n"
                                    "  type:           ADD_INDEX\n"
                                    "  implementation: |\n"
                                    "    CREATE INDEX CONCURRENTLY ix\n"
                                    "      ON orders (customer_id);\n"
                                    "history:\n"
                                    "  - at_unix_ms: 2026-11-27T05:59:00.000Z (1m ago)\n"
                                    "    status:     open\n"
                                    "  - at_unix_ms: 2026-11-27T05:59:30.000Z (30s ago)\n"
                                    "    status:     dispatched\n"
                                    "    tags: a, b\n"
                                    "actions: []\n");
    json_decref(doc);
    st_buf_free(&out);
}

/* Odd documents: every renderer answers ST_OK or ST_EPARSE, never crashes. */
static void test_render_odd_documents(void **state)
{
    static const char *const docs[] = {
        "null",
        "[]",
        "{}",
        "{\"agents\": null}",
        "{\"series\": [null]}",
        "{\"findings\": [{\"id\": {\"x\": [1, {\"y\": null}]}, \"summary\": 5}]}",
        "{\"agents\": [{\"seq\": 9223372036854775807, \"frames\": -1,"
        " \"last_seen_unix_ms\": 1e300}]}",
        "{\"series\": [{\"labels\": [1], \"points\": [[1e300, 1], [1]]}]}",
        "{\"status\": [], \"targets\": [{\"target\": \"x\", \"unit\": 5}]}",
        "{\"a\": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],"
        " \"b\": {\"c\": {\"d\": {\"e\": {\"f\": {\"g\": {\"h\": {\"i\": {\"j\": {\"k\":"
        " {\"l\": {\"m\": {\"n\": {\"o\": 1}}}}}}}}}}}}}, \"x_unix_ms\": -5,"
        " \"s\": \"\\u001b[2J\\n\\n\"}",
    };
    st_buf out;
    (void)state;

    st_buf_init(&out, 1 << 20);
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        json_error_t err;
        json_t *doc = json_loads(docs[i], JSON_DECODE_ANY, &err);
        int rv[5];
        if (doc == NULL) {
            fail_msg("bad test JSON %zu: %s", i, err.text);
        }
        rv[0] = st_render_status(doc, &out);
        rv[1] = st_render_agents(doc, 0, &out);
        rv[2] = st_render_query(doc, &out);
        rv[3] = st_render_findings(doc, &out);
        rv[4] = st_render_finding(doc, 0, &out);
        for (size_t k = 0; k < 5; k++) {
            if (rv[k] != ST_OK && rv[k] != ST_EPARSE) {
                fail_msg("document %zu, renderer %zu: %d", i, k, rv[k]);
            }
        }
        json_decref(doc);
    }
    /* Nothing from the server reaches the terminal as an escape. */
    assert_null(memchr(out.data, 0x1b, out.len));
    st_buf_free(&out);
}

static void test_render_json(void **state)
{
    json_t *doc = parse("{\"a\": [1, 2]}");
    st_buf out;
    (void)state;

    st_buf_init(&out, 1 << 20);
    assert_int_equal(st_render_json(doc, &out), ST_OK);
    assert_string_equal(cstr(&out), "{\n  \"a\": [\n    1,\n    2\n  ]\n}\n");
    json_decref(doc);
    st_buf_free(&out);
}

/* ---- a tiny HTTP server on loopback ----------------------------------- */

struct route {
    const char *method;
    const char *target; /* path and query, exact */
    int status;         /* 0: never answer (a hung server) */
    const char *body;
    const char *content_length; /* override, to declare a huge body */
};

static const struct route routes[] = {
    {"GET", "/v1/agents", 200,
     "{\"agents\": [{\"id\": \"a1\", \"host\": \"web-1\", \"role\": \"EDGE\","
     " \"version\": \"0.1.0\", \"last_seen_unix_ms\": 1, \"seq\": 3, \"frames\": 3}]}",
     NULL},
    {"GET", "/v1/query?metric=nope", 400, "{\"error\": \"unknown metric 'nope'\"}", NULL},
    {"GET", "/v1/findings/f1", 404, "{\"error\": \"no finding f1\"}", NULL},
    {"POST", "/v1/findings/f2/ack", 200, "{\"id\": \"f2\", \"status\": \"dispatched\"}", NULL},
    {"GET", "/v1/status", 500, "proxy says\nno\x1b[0m", NULL},
    {"GET", "/v1/notjson", 200, "<html>hi</html>", NULL},
    {"GET", "/v1/huge", 200, "{}", "104857600"},
    {"GET", "/v1/hang", 0, NULL, NULL},
    {"GET", "/v1/findings?status=open&limit=5", 200, "{\"findings\": []}", NULL},
};

struct server {
    int fd;
    int port;
    pthread_t thread;
    atomic_bool stop;
    pthread_mutex_t mu;
    char last[8192]; /* the last request as received */
};

static const struct route *find_route(const char *method, const char *target)
{
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (strcmp(routes[i].method, method) == 0 && strcmp(routes[i].target, target) == 0) {
            return &routes[i];
        }
    }
    return NULL;
}

/* Reads one request (headers and a Content-Length body) into buf. */
static size_t read_request(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    while (len + 1 < cap) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ssize_t n;
        char *end;
        if (poll(&p, 1, 5000) <= 0 || (n = read(fd, buf + len, cap - 1 - len)) <= 0) {
            break;
        }
        len += (size_t)n;
        buf[len] = '\0';
        end = strstr(buf, "\r\n\r\n");
        if (end != NULL) {
            const char *cl = strcasestr(buf, "Content-Length:");
            size_t body = cl != NULL ? strtoul(cl + 15, NULL, 10) : 0;
            if (len >= (size_t)(end + 4 - buf) + body) {
                break;
            }
        }
    }
    buf[len] = '\0';
    return len;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) {
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

static void answer(struct server *s, int fd)
{
    char req[8192];
    char method[16] = "";
    char target[2048] = "";
    char head[512];
    const struct route *r;

    read_request(fd, req, sizeof(req));
    pthread_mutex_lock(&s->mu);
    snprintf(s->last, sizeof(s->last), "%s", req);
    pthread_mutex_unlock(&s->mu);
    sscanf(req, "%15s %2047s", method, target);
    r = find_route(method, target);
    if (r != NULL && r->status == 0) {
        char sink[256];
        struct pollfd p = {.fd = fd, .events = POLLIN};
        /* Hang until the client gives up and closes. */
        while (poll(&p, 1, 5000) > 0 && read(fd, sink, sizeof(sink)) > 0) {
        }
        return;
    }
    const char *body = r != NULL ? r->body : "{\"error\": \"no such route\"}";
    char length[32];
    snprintf(length, sizeof(length), "%zu", strlen(body));
    snprintf(head, sizeof(head),
             "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %s\r\n"
             "Connection: close\r\n\r\n",
             r != NULL ? r->status : 404,
             r != NULL && r->content_length != NULL ? r->content_length : length);
    write_all(fd, head, strlen(head));
    write_all(fd, body, strlen(body));
}

static void *serve(void *arg)
{
    struct server *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        int c;
        if (poll(&p, 1, 50) <= 0) {
            continue;
        }
        c = accept4(s->fd, NULL, NULL, SOCK_CLOEXEC);
        if (c >= 0) {
            answer(s, c);
            close(c);
        }
    }
    return NULL;
}

/* A listening socket on 127.0.0.1 and a free port the kernel picked. */
static int listen_loopback(int *port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t alen = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static int server_setup(void **state)
{
    struct server *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    s->fd = listen_loopback(&s->port);
    atomic_init(&s->stop, false);
    pthread_mutex_init(&s->mu, NULL);
    assert_int_equal(pthread_create(&s->thread, NULL, serve, s), 0);
    *state = s;
    return 0;
}

static int server_teardown(void **state)
{
    struct server *s = *state;
    atomic_store(&s->stop, true);
    pthread_join(s->thread, NULL);
    close(s->fd);
    pthread_mutex_destroy(&s->mu);
    free(s);
    return 0;
}

static void last_request(struct server *s, char *out, size_t len)
{
    pthread_mutex_lock(&s->mu);
    snprintf(out, len, "%s", s->last);
    pthread_mutex_unlock(&s->mu);
}

static st_client *open_client(struct server *s, const char *token, int64_t timeout_ms)
{
    char url[64];
    st_client *c = NULL;
    snprintf(url, sizeof(url), "127.0.0.1:%d/", s->port); /* no scheme, a trailing '/' */
    st_client_opts o = {.server = url, .token = token, .timeout_ms = timeout_ms};
    assert_int_equal(st_client_open(&o, &c), ST_OK);
    return c;
}

/* ---- client.c against the server -------------------------------------- */

static void test_client_get_ok(void **state)
{
    struct server *s = *state;
    st_client *c = open_client(s, "s3cret", 5000);
    st_response r;
    char req[8192];
    char want[64];

    snprintf(want, sizeof(want), "http://127.0.0.1:%d", s->port);
    assert_string_equal(st_client_server(c), want);
    assert_int_equal(st_client_get(c, "/v1/agents", &r), ST_OK);
    assert_int_equal(r.status, 200);
    assert_non_null(r.json);
    assert_string_equal(r.error, "");
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(r.json, "agents"), 0), "host")),
                        "web-1");
    last_request(s, req, sizeof(req));
    assert_non_null(strstr(req, "GET /v1/agents HTTP/1.1\r\n"));
    assert_non_null(strstr(req, "\r\nAuthorization: Bearer s3cret\r\n"));
    assert_non_null(strstr(req, "\r\nAccept: application/json\r\n"));
    st_response_free(&r);
    st_response_free(&r); /* twice is harmless */

    /* The same handle serves another request. */
    assert_int_equal(st_client_get(c, "/v1/findings?status=open&limit=5", &r), ST_OK);
    assert_int_equal(r.status, 200);
    st_response_free(&r);
    st_client_close(c);
}

static void test_client_http_errors(void **state)
{
    struct server *s = *state;
    st_client *c = open_client(s, NULL, 5000);
    st_response r;
    char req[8192];

    assert_int_equal(st_client_get(c, "/v1/query?metric=nope", &r), ST_OK);
    assert_int_equal(r.status, 400);
    assert_string_equal(r.error, "unknown metric 'nope'");
    last_request(s, req, sizeof(req));
    assert_null(strstr(req, "Authorization:")); /* no token, no header */
    st_response_free(&r);

    assert_int_equal(st_client_get(c, "/v1/findings/f1", &r), ST_OK);
    assert_int_equal(r.status, 404);
    assert_string_equal(r.error, "no finding f1");
    st_response_free(&r);

    /* A non-JSON error body (a proxy) is shown, made terminal-safe. */
    assert_int_equal(st_client_get(c, "/v1/status", &r), ST_OK);
    assert_int_equal(r.status, 500);
    assert_null(r.json);
    assert_string_equal(r.error, "proxy says no [0m");
    st_response_free(&r);

    /* A 2xx that is not JSON is an error of its own. */
    assert_int_equal(st_client_get(c, "/v1/notjson", &r), ST_EPARSE);
    assert_true(r.error[0] != '\0');
    st_response_free(&r);
    st_client_close(c);
}

static void test_client_post(void **state)
{
    struct server *s = *state;
    st_client *c = open_client(s, "tok", 5000);
    st_response r;
    char req[8192];

    assert_int_equal(st_client_post(c, "/v1/findings/f2/ack", NULL, &r), ST_OK);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "status")), "dispatched");
    last_request(s, req, sizeof(req));
    assert_non_null(strstr(req, "POST /v1/findings/f2/ack HTTP/1.1\r\n"));
    assert_non_null(strstr(req, "\r\nContent-Type: application/json\r\n"));
    assert_non_null(strstr(req, "\r\nAuthorization: Bearer tok\r\n"));
    assert_non_null(strstr(req, "\r\n\r\n{}"));
    st_response_free(&r);
    st_client_close(c);
}

static void test_client_limits(void **state)
{
    struct server *s = *state;
    st_client *c = open_client(s, NULL, 300);
    st_response r;

    /* A body declared past 64 MiB is refused before it is read. */
    assert_int_equal(st_client_get(c, "/v1/huge", &r), ST_ETOOBIG);
    st_response_free(&r);
    assert_int_equal(st_client_get(c, "/v1/hang", &r), ST_ETIMEOUT);
    assert_int_equal(r.status, 0);
    st_response_free(&r);
    assert_int_equal(st_client_get(c, "no-slash", &r), ST_EINVAL);
    st_client_close(c);
}

static void test_client_refused(void **state)
{
    int port;
    int fd = listen_loopback(&port);
    char url[64];
    st_client *c = NULL;
    st_response r;
    (void)state;

    close(fd); /* nobody listens there now */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    st_client_opts o = {.server = url, .timeout_ms = 2000};
    assert_int_equal(st_client_open(&o, &c), ST_OK);
    assert_int_equal(st_client_get(c, "/v1/status", &r), ST_ENET);
    assert_int_equal(r.status, 0);
    assert_null(r.json);
    assert_true(r.error[0] != '\0');
    st_response_free(&r);
    st_client_close(c);
}

static void test_client_open_checks(void **state)
{
    st_client *c = NULL;
    st_client_opts o = {.server = "ftp://host", .timeout_ms = 1000};
    (void)state;

    assert_int_equal(st_client_open(&o, &c), ST_EINVAL);
    o.server = "http://";
    assert_int_equal(st_client_open(&o, &c), ST_EINVAL);
    o.server = "http://h x";
    assert_int_equal(st_client_open(&o, &c), ST_EINVAL);
    o.server = "http://h";
    o.token = "a\r\nX-Evil: 1";
    assert_int_equal(st_client_open(&o, &c), ST_EINVAL);
    o.token = NULL;
    o.timeout_ms = 0;
    assert_int_equal(st_client_open(&o, &c), ST_EINVAL);
    assert_null(c);
    o.timeout_ms = 1000;
    o.server = NULL; /* the default */
    assert_int_equal(st_client_open(&o, &c), ST_OK);
    assert_string_equal(st_client_server(c), ST_CLIENT_DEFAULT_SERVER);
    st_client_close(c);
    st_client_close(NULL);
}

/* ---- the strata binary (built beside this test) ----------------------- */

struct run {
    int rc;
    char out[8192];
    char err[8192];
};

static void slurp(int fd, char *buf, size_t cap)
{
    ssize_t n = pread(fd, buf, cap - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
}

/* Runs strata with args; false when the binary is not built. */
static bool run_strata(struct run *r, const char *const *args)
{
    char path[4096];
    char *argv[32];
    const char *bin = getenv("ST_BIN");
    char out_name[] = "/tmp/strata-cli-out-XXXXXX";
    char err_name[] = "/tmp/strata-cli-err-XXXXXX";
    posix_spawn_file_actions_t fa;
    int out_fd = mkstemp(out_name);
    int err_fd = mkstemp(err_name);
    size_t n = 0;
    pid_t pid;
    int ws;

    snprintf(path, sizeof(path), "%s/collector/strata", bin != NULL ? bin : ".");
    assert_true(out_fd >= 0 && err_fd >= 0);
    unlink(out_name);
    unlink(err_name);
    if (access(path, X_OK) != 0) {
        close(out_fd);
        close(err_fd);
        return false;
    }
    argv[n++] = path;
    for (; args[n - 1] != NULL && n < 31; n++) {
        argv[n] = (char *)args[n - 1];
    }
    argv[n] = NULL;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
    posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
    assert_int_equal(posix_spawn(&pid, path, &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    r->rc = WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
    slurp(out_fd, r->out, sizeof(r->out));
    slurp(err_fd, r->err, sizeof(r->err));
    close(out_fd);
    close(err_fd);
    return true;
}

static void test_binary(void **state)
{
    struct server *s = *state;
    char url[64];
    struct run r;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d", s->port);
    if (!run_strata(&r, (const char *const[]){"--help", NULL})) {
        skip(); /* ST_BIN unset or strata not built */
    }
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "Usage: strata"));

    run_strata(&r, (const char *const[]){"--server", url, "agents", NULL});
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "HOST "));
    assert_non_null(strstr(r.out, "web-1"));

    run_strata(&r, (const char *const[]){"agents", "--server", url, "--json", NULL});
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "\"agents\": ["));

    run_strata(&r, (const char *const[]){"--server", url, "query", "nope", NULL});
    assert_int_equal(r.rc, 1);
    assert_non_null(strstr(r.err, "unknown metric 'nope'"));

    run_strata(&r, (const char *const[]){"--server", url, "ack", "f2", NULL});
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.out, "finding f2 acknowledged (now dispatched)\n");

    run_strata(&r, (const char *const[]){"--server", url, "findings", "--status", "open", "--limit",
                                         "5", NULL});
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.out, "no findings\n");

    run_strata(&r, (const char *const[]){"--server", url, "agents", "--bogus", NULL});
    assert_int_equal(r.rc, 2);
    run_strata(&r, (const char *const[]){"--server", url, "frobnicate", NULL});
    assert_int_equal(r.rc, 2);
    run_strata(&r, (const char *const[]){"query", "m", "--since", "1h", "--to", "now", NULL});
    assert_int_equal(r.rc, 2);
    run_strata(&r, (const char *const[]){"query", "m", "--since", "1h", "--from", "-2h", NULL});
    assert_int_equal(r.rc, 2);
    run_strata(&r, (const char *const[]){"query", "m", "--agg", "p77", NULL});
    assert_int_equal(r.rc, 2);
    assert_non_null(strstr(r.err, "--agg"));
    run_strata(&r, (const char *const[]){"status", "--version", NULL});
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "strata "));
    run_strata(&r, (const char *const[]){"query", "--help", NULL});
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "--match"));
}

static void test_binary_refused(void **state)
{
    int port;
    int fd = listen_loopback(&port);
    char url[64];
    struct run r;
    (void)state;

    close(fd);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    if (!run_strata(&r, (const char *const[]){"--server", url, "status", NULL})) {
        skip();
    }
    assert_int_equal(r.rc, 1);
    assert_non_null(strstr(r.err, "cannot connect"));
    assert_non_null(strstr(r.err, url)); /* names the server */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_alignment),
        cmocka_unit_test(test_table_numeric_detection),
        cmocka_unit_test(test_table_truncation_and_sanitizing),
        cmocka_unit_test(test_table_render_cap),
        cmocka_unit_test(test_fmt_seconds),
        cmocka_unit_test(test_fmt_bytes),
        cmocka_unit_test(test_fmt_ratio_and_plain),
        cmocka_unit_test(test_fmt_ago),
        cmocka_unit_test(test_truncate_and_width),
        cmocka_unit_test(test_sanitize),
        cmocka_unit_test(test_query_path),
        cmocka_unit_test(test_time_param),
        cmocka_unit_test(test_findings_paths),
        cmocka_unit_test(test_render_agents),
        cmocka_unit_test(test_render_query),
        cmocka_unit_test(test_render_status_and_findings),
        cmocka_unit_test(test_render_finding),
        cmocka_unit_test(test_render_odd_documents),
        cmocka_unit_test(test_render_json),
        cmocka_unit_test_setup_teardown(test_client_get_ok, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_client_http_errors, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_client_post, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_client_limits, server_setup, server_teardown),
        cmocka_unit_test(test_client_refused),
        cmocka_unit_test(test_client_open_checks),
        cmocka_unit_test_setup_teardown(test_binary, server_setup, server_teardown),
        cmocka_unit_test(test_binary_refused),
    };
    int rc;
    /* Loopback requests must not wander off to a proxy from the caller's
     * environment, and the binary must not pick up a real collector. */
    unsetenv("http_proxy");
    unsetenv("https_proxy");
    unsetenv("all_proxy");
    unsetenv("ALL_PROXY");
    unsetenv("STRATA_TOKEN");
    unsetenv("STRATA_SERVER");
    if (st_client_global_init() != ST_OK) {
        return 1;
    }
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    st_client_global_cleanup();
    return rc;
}
