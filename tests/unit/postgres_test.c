/* Unit tests of the postgres sampler's text helpers (statement text made one
 * clean line, cut on UTF-8 boundaries; the main table of a statement) and of
 * its configuration and behaviour when no server answers. The integration
 * test (tests/integration/postgres_test.sh) runs it against a real server. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "config.h"
#include "err.h"
#include "fold.h"
#include "lazylib.h"
#include "sampler.h"
#include "samplers/postgres_sql.h"
#include "samplers/samplers.h"
#include "util.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- normalizing ---- */

/* Normalizes text (of length len) into a buffer of cap bytes. */
static const char *norm_n(const char *text, size_t len, size_t cap)
{
    static char out[4096];
    size_t n;
    assert_true(cap <= sizeof(out));
    memset(out, 'X', sizeof(out));
    n = st_pgsql_normalize(text, len, out, cap);
    assert_true(cap == 0 || n < cap);
    if (cap > 0) {
        assert_int_equal(strlen(out), n);
        assert_true(st_utf8_valid(out, n));
    }
    return out;
}

static const char *norm(const char *text)
{
    return norm_n(text, strlen(text), 4096);
}

static void test_normalize_whitespace(void **state)
{
    (void)state;
    assert_string_equal(norm("SELECT  *\n\tFROM   orders\r\nWHERE id = $1  "),
                        "SELECT * FROM orders WHERE id = $1");
    assert_string_equal(norm("\n\n   SELECT 1"), "SELECT 1");
    assert_string_equal(norm(""), "");
    assert_string_equal(norm(" \t\n "), "");
    /* Control characters and NUL bytes count as white space. */
    assert_string_equal(norm("SELECT\x01\x7f 1"), "SELECT 1");
    assert_string_equal(norm_n("SELECT\0 1", 9, 64), "SELECT 1");
}

static void test_normalize_comments(void **state)
{
    (void)state;
    assert_string_equal(norm("-- who calls this\nSELECT 1 /* a /* nested */ comment */ + 2"),
                        "SELECT 1 + 2");
    assert_string_equal(norm("SELECT a--trailing"), "SELECT a");
    assert_string_equal(norm("SELECT a/*unterminated"), "SELECT a");
    assert_string_equal(norm("SELECT 4 - -2"), "SELECT 4 - -2");
}

static void test_normalize_quotes(void **state)
{
    (void)state;
    /* Quoted text is kept as written: white space and comment markers too. */
    assert_string_equal(norm("SELECT 'a  b', \"x  y\"  FROM t"), "SELECT 'a  b', \"x  y\" FROM t");
    assert_string_equal(norm("SELECT '--no', $$ /* body */ $$, $f$ a  b $f$ FROM t"),
                        "SELECT '--no', $$ /* body */ $$, $f$ a  b $f$ FROM t");
    assert_string_equal(norm("SELECT 'it''s  x'"), "SELECT 'it''s  x'");
    assert_string_equal(norm("SELECT E'it\\'s  -- x'  FROM t"), "SELECT E'it\\'s  -- x' FROM t");
    /* A newline inside a string becomes one space, not collapsed. */
    assert_string_equal(norm("SELECT 'a\n\nb'"), "SELECT 'a  b'");
    /* Parameters and identifiers with '$' are no dollar quotes. */
    assert_string_equal(norm("SELECT a$b,  $1,   $2"), "SELECT a$b, $1, $2");
    /* An unterminated quote runs to the end. */
    assert_string_equal(norm("SELECT 'abc  def"), "SELECT 'abc  def");
}

static void test_normalize_utf8(void **state)
{
    (void)state;
    assert_string_equal(norm("SELECT 'caf\xc3\xa9'  FROM t"), "SELECT 'caf\xc3\xa9' FROM t");
    /* Invalid bytes, overlongs, surrogates and cut characters become '?'. */
    assert_string_equal(norm("SELECT '\xff' \xc3"), "SELECT '?' ?");
    assert_string_equal(norm("a\xc0\xaf b"), "a?? b");
    assert_string_equal(norm("a\xed\xa0\x80"), "a???");
    assert_string_equal(norm("a\xf0\x9f\x98"), "a???");
}

static void test_normalize_truncate(void **state)
{
    (void)state;
    /* "SELECT 'é'" is 11 bytes; é is 2. */
    assert_string_equal(norm_n("SELECT 'é'", 11, 12), "SELECT 'é'");
    assert_string_equal(norm_n("SELECT 'é'", 11, 11), "SELECT 'é");
    assert_string_equal(norm_n("SELECT 'é'", 11, 10), "SELECT '");
    assert_string_equal(norm_n("SELECT 'é'", 11, 9), "SELECT '");
    /* A 4-byte character is never split. */
    assert_string_equal(norm_n("ab\xf0\x9f\x98\x80", 6, 7), "ab\xf0\x9f\x98\x80");
    assert_string_equal(norm_n("ab\xf0\x9f\x98\x80", 6, 6), "ab");
    assert_string_equal(norm_n("ab\xf0\x9f\x98\x80", 6, 4), "ab");
    /* A cut leaves no trailing space. */
    assert_string_equal(norm_n("SELECT a FROM t", 15, 10), "SELECT a");
    assert_string_equal(norm_n("SELECT a FROM t", 15, 1), "");
    /* cap 0 writes nothing. */
    {
        char out[4] = "abc";
        assert_int_equal(st_pgsql_normalize("SELECT", 6, out, 0), 0);
        assert_string_equal(out, "abc");
    }
}

static void test_normalize_random(void **state)
{
    uint32_t x = 12345;
    char in[256];
    char once[300];
    (void)state;
    /* Whatever comes in, the result is valid UTF-8 within cap, and
     * normalizing it again changes nothing. */
    for (int round = 0; round < 5000; round++) {
        size_t len = (size_t)(round % 200);
        size_t cap = (size_t)(round % 97) + 1;
        for (size_t i = 0; i < len; i++) {
            x = x * 1103515245u + 12345u;
            in[i] = (char)(round % 3 == 0 ? "ab $'\"-/*\n\xc3\xa9\xff"[(x >> 16) % 13]
                                          : (char)(x >> 16));
        }
        st_pgsql_normalize(in, len, once, cap);
        assert_true(strlen(once) < cap);
        assert_true(st_utf8_valid(once, strlen(once)));
        if (round % 3 == 0 && strchr(once, '\'') == NULL && strchr(once, '"') == NULL &&
            strchr(once, '$') == NULL) {
            assert_string_equal(norm(once), once);
        }
    }
}

/* ---- the main table ---- */

/* The main table of sql, or "ENOENT" / "ETOOBIG". */
static const char *table_of(const char *sql)
{
    static char out[ST_PGSQL_TABLE_MAX];
    int rv;
    memset(out, 'X', sizeof(out));
    rv = st_pgsql_main_table(sql, out, sizeof(out));
    if (rv == ST_ENOENT) {
        return "ENOENT";
    }
    if (rv == ST_ETOOBIG) {
        return "ETOOBIG";
    }
    assert_int_equal(rv, ST_OK);
    return out;
}

static void test_table_simple(void **state)
{
    (void)state;
    assert_string_equal(table_of("SELECT * FROM orders WHERE customer_id = $1"), "orders");
    assert_string_equal(table_of("select id from Orders where x = $1"), "orders");
    assert_string_equal(table_of("UPDATE public.users SET name = $1 WHERE id = $2"), "users");
    assert_string_equal(table_of("UPDATE ONLY Billing.Invoices SET paid = $1"), "billing.invoices");
    assert_string_equal(table_of("INSERT INTO t (a, b) VALUES ($1, $2)"), "t");
    assert_string_equal(table_of("INSERT INTO app.events SELECT * FROM staging"), "app.events");
    assert_string_equal(table_of("DELETE FROM sessions WHERE expires < now()"), "sessions");
    assert_string_equal(table_of("SELECT * FROM ONLY parent"), "parent");
    assert_string_equal(table_of("SELECT * FROM app . orders"), "app.orders");
    assert_string_equal(table_of("SELECT * FROM shop.sales.orders"), "sales.orders");
    assert_string_equal(table_of("COPY orders FROM STDIN"), "orders");
    assert_string_equal(table_of("MERGE INTO stock s USING deliveries d ON s.id = d.id WHEN "
                                 "MATCHED THEN UPDATE SET qty = s.qty + d.qty"),
                        "stock");
    assert_string_equal(table_of("SELECT * FROM Bestellungen_\xc3\x84"), "bestellungen_\xc3\x84");
}

static void test_table_joins(void **state)
{
    (void)state;
    assert_string_equal(
        table_of("SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id"), "orders");
    assert_string_equal(table_of("SELECT * FROM a, b WHERE a.id = b.id"), "a");
    assert_string_equal(
        table_of("SELECT * FROM orders o LEFT JOIN LATERAL (SELECT * FROM items i) x ON true"),
        "orders");
}

static void test_table_subqueries(void **state)
{
    (void)state;
    /* FROM (subquery): the table inside. */
    assert_string_equal(
        table_of("SELECT count(*) FROM (SELECT * FROM line_items WHERE qty > $1) s"), "line_items");
    /* A subquery before the outer FROM does not win over it. */
    assert_string_equal(table_of("SELECT (SELECT max(id) FROM audit), name FROM users"), "users");
    assert_string_equal(table_of("SELECT * FROM orders WHERE id IN (SELECT order_id FROM refunds)"),
                        "orders");
    assert_string_equal(
        table_of("UPDATE accounts SET balance = (SELECT sum(x) FROM ledger) WHERE id = $1"),
        "accounts");
    assert_string_equal(table_of("(SELECT id FROM a) UNION (SELECT id FROM b)"), "a");
    assert_string_equal(table_of("COPY (SELECT * FROM exports) TO STDOUT"), "exports");
    /* WITH names are no tables. */
    assert_string_equal(table_of("WITH x AS (SELECT * FROM t) SELECT * FROM x"), "t");
    assert_string_equal(table_of("WITH recent AS MATERIALIZED (SELECT * FROM orders WHERE ts > $1) "
                                 "SELECT * FROM recent JOIN customers USING (id)"),
                        "customers");
    assert_string_equal(table_of("WITH a(n) AS (SELECT 1), b AS (SELECT 2) SELECT * FROM a, b, "
                                 "real_table"),
                        "real_table");
    /* Not the FROM of EXTRACT, IS DISTINCT FROM, FOR UPDATE or ON CONFLICT. */
    assert_string_equal(table_of("SELECT extract(epoch from ts) FROM events"), "events");
    assert_string_equal(table_of("SELECT * FROM t WHERE a IS DISTINCT FROM b"), "t");
    assert_string_equal(table_of("SELECT * FROM jobs FOR UPDATE OF jobs SKIP LOCKED"), "jobs");
    assert_string_equal(
        table_of("INSERT INTO kv VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = excluded.v"),
        "kv");
}

static void test_table_quoted(void **state)
{
    (void)state;
    assert_string_equal(table_of("SELECT * FROM \"Order Items\" WHERE \"Qty\" > $1"),
                        "Order Items");
    assert_string_equal(table_of("SELECT * FROM \"public\".\"Orders\""), "Orders");
    assert_string_equal(table_of("SELECT * FROM PUBLIC.orders"), "orders");
    assert_string_equal(table_of("SELECT * FROM \"Public\".orders"), "Public.orders");
    assert_string_equal(table_of("SELECT * FROM \"my\"\"table\""), "my\"table");
    assert_string_equal(table_of("SELECT * FROM sales.\"Q1\""), "sales.Q1");
    /* Quotes, strings and comments hide keywords. */
    assert_string_equal(table_of("SELECT 'x FROM y' FROM z"), "z");
    assert_string_equal(table_of("SELECT \"from\" FROM z"), "z");
    assert_string_equal(table_of("/* FROM x */ SELECT * FROM y -- FROM w"), "y");
    assert_string_equal(table_of("SELECT * FROM t WHERE a = E'\\' FROM x'"), "t");
    assert_string_equal(table_of("SELECT $$ FROM x $$ FROM y"), "y");
}

static void test_table_none(void **state)
{
    char long_name[128];
    char sql[160];
    char small[4];
    (void)state;
    assert_string_equal(table_of("SELECT 1"), "ENOENT");
    assert_string_equal(table_of("SELECT now()"), "ENOENT");
    assert_string_equal(table_of("SELECT * FROM generate_series($1, $2)"), "ENOENT");
    assert_string_equal(table_of("SELECT a IS DISTINCT FROM b"), "ENOENT");
    assert_string_equal(table_of("SELECT * FROM 'orders'"), "ENOENT");
    assert_string_equal(table_of("REVOKE ALL ON FUNCTION f() FROM PUBLIC"), "ENOENT");
    assert_string_equal(table_of("FETCH 10 FROM cur"), "ENOENT");
    assert_string_equal(table_of("BEGIN"), "ENOENT");
    assert_string_equal(table_of(""), "ENOENT");
    assert_int_equal(st_pgsql_main_table(NULL, small, sizeof(small)), ST_ENOENT);
    /* Garbage. */
    assert_string_equal(table_of("FROM"), "ENOENT");
    assert_string_equal(table_of("SELECT FROM FROM FROM"), "ENOENT");
    assert_string_equal(table_of("SELECT * FROM \"unterminated"), "ENOENT");
    assert_string_equal(table_of("SELECT * FROM ((("), "ENOENT");
    assert_string_equal(table_of("SELECT ))) FROM ."), "ENOENT");
    assert_string_equal(table_of("SELECT * FROM a.b.c.d"), "ENOENT");
    assert_string_equal(table_of("SELECT * FROM \"\""), "ENOENT");
    assert_string_equal(table_of("\xff\xfe FROM x"), "ENOENT");
    /* Identifiers past PostgreSQL's 63 bytes, and a buffer too small. */
    memset(long_name, 'a', 63);
    long_name[63] = '\0';
    snprintf(sql, sizeof(sql), "SELECT * FROM %s", long_name);
    assert_string_equal(table_of(sql), long_name);
    snprintf(sql, sizeof(sql), "SELECT * FROM %sa", long_name);
    assert_string_equal(table_of(sql), "ETOOBIG");
    assert_int_equal(st_pgsql_main_table("SELECT * FROM orders", small, sizeof(small)), ST_ETOOBIG);
    assert_int_equal(st_pgsql_main_table("SELECT * FROM abc", small, sizeof(small)), ST_OK);
    assert_string_equal(small, "abc");
}

/* The normalized text feeds the table parser in the sampler. */
static void test_normalized_then_table(void **state)
{
    const char *raw = "-- report\nSELECT *\n  FROM   \"Sales\".Orders o\n WHERE o.id = $1";
    char out[256];
    char table[ST_PGSQL_TABLE_MAX];
    (void)state;
    st_pgsql_normalize(raw, strlen(raw), out, sizeof(out));
    assert_string_equal(out, "SELECT * FROM \"Sales\".Orders o WHERE o.id = $1");
    assert_int_equal(st_pgsql_main_table(out, table, sizeof(table)), ST_OK);
    assert_string_equal(table, "Sales.orders");
}

/* ---- the sampler without a server ---- */

static int init_yaml(const char *yaml, st_cfg_doc **doc, void **ctx, st_cfg_error *err)
{
    const st_sampler_def *def = st_sampler_find("postgres");
    st_sampler_env env = {"/proc", "/sys", "/tmp", 1000, true};
    assert_non_null(def);
    assert_int_equal(st_cfg_load_string("agent.yaml", yaml, strlen(yaml), doc, err), ST_OK);
    return def->init(*doc, st_cfg_root(*doc), &env, ctx, err);
}

static void expect_config_error(const char *yaml, const char *want)
{
    st_cfg_doc *doc = NULL;
    st_cfg_error err;
    void *ctx = NULL;
    memset(&err, 0, sizeof(err));
    assert_int_equal(init_yaml(yaml, &doc, &ctx, &err), ST_ECONFIG);
    assert_null(ctx);
    if (strstr(err.msg, want) == NULL) {
        fail_msg("error '%s' does not contain '%s'", err.msg, want);
    }
    st_cfg_doc_free(doc);
}

static void test_config(void **state)
{
    st_cfg_doc *doc = NULL;
    st_cfg_error err;
    void *ctx = NULL;
    (void)state;
    assert_int_equal(init_yaml("dsn: \"host=127.0.0.1 dbname=app\"\ninterval: 5s\n"
                               "max_statements: 50\nquery_max_len: 1024\ndatabases: all\n"
                               "create_extension: true\nconnect_timeout: 3s\n",
                               &doc, &ctx, &err),
                     ST_OK);
    st_sampler_find("postgres")->fini(ctx);
    st_cfg_doc_free(doc);
    expect_config_error("dsn: x\nmax_statment: 5\n", "agent.yaml:2: key 'max_statment'");
    expect_config_error("query_max_len: 2000\n", "agent.yaml:1: key 'query_max_len'");
    expect_config_error("max_statements: 0\n", "key 'max_statements'");
    expect_config_error("databases: some\n", "agent.yaml:1: key 'databases': want current or all");
    expect_config_error("connect_timeout: 500ms\n", "key 'connect_timeout'");
    expect_config_error("\ndsn: \"host=x port\"\n", "agent.yaml:2: key 'dsn'");
}

/* A port nobody listens on: bound, never listened to. */
static int closed_port(int *fd)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    *fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(*fd >= 0);
    assert_int_equal(bind(*fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(*fd, (struct sockaddr *)&a, &len), 0);
    return ntohs(a.sin_port);
}

static void test_server_down(void **state)
{
    st_cfg_doc *doc = NULL;
    st_cfg_error err;
    void *ctx = NULL;
    st_fold *fold = NULL;
    char yaml[128];
    int fd;
    (void)state;
    snprintf(yaml, sizeof(yaml), "dsn: \"host=127.0.0.1 port=%d dbname=x user=x\"\n",
             closed_port(&fd));
    /* No connection at init: a server that is down is no configuration error. */
    assert_int_equal(init_yaml(yaml, &doc, &ctx, &err), ST_OK);
    assert_int_equal(st_fold_new(&fold), ST_OK);
    /* Every run fails (the scheduler backs off) and tries again. */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(st_postgres_sample(ctx, st_fold_begin(fold, 1000, 1000)), ST_ENET);
    }
    assert_int_equal(st_fold_series_count(fold), 0);
    st_postgres_fini(ctx);
    st_postgres_fini(NULL);
    st_fold_free(fold);
    st_cfg_doc_free(doc);
    close(fd);
}

/* gssencmode=disable goes ahead of the dsn unless the user chose a mode
 * (in the dsn, the environment, or a service file). */
static void test_gssenc_default(void **state)
{
    (void)state;
    assert_int_equal(st_pq_load(NULL, 0), ST_OK);
    unsetenv("PGGSSENCMODE");
    unsetenv("PGSERVICE");
    assert_true(st_pq_gssenc_off(NULL));
    assert_true(st_pq_gssenc_off("host=127.0.0.1 dbname=postgres sslmode=require"));
    assert_true(st_pq_gssenc_off("postgresql://u@db.example/app"));
    assert_true(st_pq_gssenc_off("not a conninfo"));
    assert_false(st_pq_gssenc_off("host=db gssencmode=prefer"));
    assert_false(st_pq_gssenc_off("postgresql://u@db.example/app?gssencmode=require"));
    assert_false(st_pq_gssenc_off("service=reporting"));
    setenv("PGGSSENCMODE", "prefer", 1);
    assert_false(st_pq_gssenc_off("host=db"));
    unsetenv("PGGSSENCMODE");
    setenv("PGSERVICE", "reporting", 1);
    assert_false(st_pq_gssenc_off("host=db"));
    unsetenv("PGSERVICE");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalize_whitespace),
        cmocka_unit_test(test_normalize_comments),
        cmocka_unit_test(test_normalize_quotes),
        cmocka_unit_test(test_normalize_utf8),
        cmocka_unit_test(test_normalize_truncate),
        cmocka_unit_test(test_normalize_random),
        cmocka_unit_test(test_table_simple),
        cmocka_unit_test(test_table_joins),
        cmocka_unit_test(test_table_subqueries),
        cmocka_unit_test(test_table_quoted),
        cmocka_unit_test(test_table_none),
        cmocka_unit_test(test_normalized_then_table),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_server_down),
        cmocka_unit_test(test_gssenc_default),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
