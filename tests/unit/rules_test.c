/* The rule table and every rule's check over a real store fed synthetic
 * frames: data just past a threshold fires with the expected entity,
 * evidence and implementation, data just under stays quiet. Plus the SQL
 * reader (WHERE columns, joins, rewrites) and the leak detector. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "err.h"
#include "frame.h"
#include "rules.h"
#include "rules_checks.h"
#include "sketch.h"
#include "store.h"
#include "util.h"
#include "tmpdir.h"
#include "testframe.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DAY (86400LL * 1000)
#define D0 1700006400000LL            /* a day boundary */
#define NOW (D0 + 12LL * 3600 * 1000) /* noon */
#define MID (NOW - 150 * 1000)        /* inside the 5 minute window */
#define KIB 1024.0
#define MIB (1024.0 * 1024.0)

#define L(...) ((const char *[]){__VA_ARGS__, NULL})

typedef struct fx {
    st_store *st;
    char dir[64];
    uint64_t seq;
    st_frame *f;
} fx;

/* ---- frames ---- */

static int setup(void **state)
{
    fx *x = calloc(1, sizeof(*x));
    struct st_store_opts o = {0};
    assert_non_null(x);
    assert_non_null(st_test_mkdtemp(x->dir, sizeof(x->dir), "rules"));
    o.dir = x->dir;
    o.no_sync = true;
    assert_int_equal(st_store_open(&o, &x->st), ST_OK);
    *state = x;
    return 0;
}

static int teardown(void **state)
{
    fx *x = *state;
    int rv;
    st_frame_free(x->f);
    st_store_close(x->st);
    rv = st_test_rmtree(x->dir);
    free(x);
    return rv;
}

static st_frame *frame_new(void)
{
    static const uint8_t id[16] = {7};
    return st_test_frame_new(id, 0, "h0", STRATA__V1__ROLE__APP, 0);
}

static Strata__V1__Series *series_add(fx *x, const char *name, Strata__V1__Kind kind,
                                      const char *const *labels)
{
    Strata__V1__Series *s = calloc(1, sizeof(*s));
    size_t n = 0;
    strata__v1__series__init(s);
    if (x->f == NULL) {
        x->f = frame_new();
    }
    while (labels != NULL && labels[n] != NULL) {
        n++;
    }
    s->name = strdup(name);
    s->unit = strdup("");
    s->kind = kind;
    s->labels = calloc(n / 2 + 1, sizeof(*s->labels));
    for (size_t i = 0; i + 1 < n; i += 2) {
        s->labels[s->n_labels++] = st_test_label_new(labels[i], labels[i + 1]);
    }
    x->f->series = realloc(x->f->series, (x->f->n_series + 1) * sizeof(*x->f->series));
    x->f->series[x->f->n_series++] = s;
    return s;
}

static void values(fx *x, const char *name, Strata__V1__Kind kind, const char *const *labels,
                   int64_t start, uint32_t interval, const double *v, size_t n)
{
    Strata__V1__Series *s = series_add(x, name, kind, labels);
    s->start_unix_ms = start;
    s->interval_ms = interval;
    s->values = malloc(n * sizeof(double));
    memcpy(s->values, v, n * sizeof(double));
    s->n_values = n;
}

/* A counter increase of total inside the window. */
static void counter(fx *x, const char *name, const char *const *labels, double total)
{
    values(x, name, STRATA__V1__KIND__COUNTER, labels, MID, 10000, &total, 1);
}

/* A gauge's value 30 s ago. */
static void gauge(fx *x, const char *name, const char *const *labels, double v)
{
    values(x, name, STRATA__V1__KIND__GAUGE, labels, NOW - 30000, 10000, &v, 1);
}

/* A distribution of n1 samples of v1 and n2 of v2 inside the window. */
static void dist(fx *x, const char *name, const char *const *labels, double v1, uint64_t n1,
                 double v2, uint64_t n2)
{
    Strata__V1__Series *s = series_add(x, name, STRATA__V1__KIND__DISTRIBUTION, labels);
    st_sketch *sk;
    assert_int_equal(st_sketch_new(0, &sk), ST_OK);
    assert_int_equal(st_sketch_insert_n(sk, v1, n1), ST_OK);
    assert_int_equal(st_sketch_insert_n(sk, v2, n2), ST_OK);
    s->start_unix_ms = MID;
    s->interval_ms = 10000;
    s->sketches = calloc(1, sizeof(*s->sketches));
    s->sketches[0] = malloc(sizeof(**s->sketches));
    strata__v1__sketch__init(s->sketches[0]);
    assert_int_equal(st_sketch_to_proto(sk, s->sketches[0]), ST_OK);
    s->n_sketches = 1;
    st_sketch_free(sk);
}

static void flush(fx *x)
{
    st_store_txn *t;
    bool dup;
    if (x->f == NULL) {
        return;
    }
    x->f->seq = ++x->seq;
    assert_int_equal(st_store_begin(x->st, &t), ST_OK);
    assert_int_equal(st_store_apply(t, x->f, NOW, &dup), ST_OK);
    assert_int_equal(st_store_commit(t), ST_OK);
    assert_false(dup);
    st_frame_free(x->f);
    x->f = NULL;
}

/* ---- running rules ---- */

static st_candidates run_with(fx *x, const char *id, const char *setting, double value)
{
    st_candidates c = {0};
    st_eng *e;
    const st_rule *r = st_rule_find(id);
    assert_non_null(r);
    flush(x);
    assert_int_equal(st_eng_new(x->st, NOW, &e), ST_OK);
    if (setting != NULL) {
        assert_int_equal(st_eng_set(e, setting, value), ST_OK);
    }
    assert_int_equal(r->check(e, r, &c), ST_OK);
    st_eng_free(e);
    return c;
}

static st_candidates run(fx *x, const char *id)
{
    return run_with(x, id, NULL, 0);
}

static const st_candidate *find(const st_candidates *c, const char *entity)
{
    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->v[i].entity, entity) == 0) {
            return &c->v[i];
        }
    }
    fail_msg("no candidate for '%s' among %zu", entity, c->n);
    return NULL;
}

/* A member of nested objects by "a.b.c"; array items by number. */
static const json_t *at(const json_t *o, const char *path)
{
    char key[128];
    while (o != NULL && *path != '\0') {
        size_t n = strcspn(path, ".");
        assert_true(n < sizeof(key));
        memcpy(key, path, n);
        key[n] = '\0';
        o = json_is_array(o) ? json_array_get(o, (size_t)strtoul(key, NULL, 10))
                             : json_object_get(o, key);
        path += n + (path[n] == '.');
    }
    if (o == NULL) {
        fail_msg("no '%s'", path);
    }
    return o;
}

static double num(const json_t *o, const char *path)
{
    const json_t *v = at(o, path);
    assert_true(json_is_number(v));
    return json_number_value(v);
}

static const char *str(const json_t *o, const char *path)
{
    const json_t *v = at(o, path);
    assert_true(json_is_string(v));
    return json_string_value(v);
}

static void near(double got, double want, double rel)
{
    if (!(fabs(got - want) <= rel * fabs(want) + 1e-12)) {
        fail_msg("got %.9g, want %.9g (within %g)", got, want, rel);
    }
}

/* The evidence every candidate carries. */
static void check_evidence(const st_candidate *c, const char *series, double threshold,
                           const char *host)
{
    bool has = false;
    const json_t *s = at(c->evidence, "series");
    for (size_t i = 0; i < json_array_size(s); i++) {
        has |= strcmp(json_string_value(json_array_get(s, i)), series) == 0;
    }
    assert_true(has);
    near(num(c->evidence, "threshold"), threshold, 1e-12);
    near(c->threshold, threshold, 1e-12);
    assert_true(num(c->evidence, "window.to") == (double)NOW);
    assert_true(num(c->evidence, "window.from") < (double)NOW);
    assert_true(json_is_object(at(c->evidence, "values")));
    if (host != NULL) {
        assert_string_equal(str(c->evidence, "hosts.0"), host);
    }
    assert_true(c->summary[0] != '\0');
    assert_true(c->traffic_share >= 0 && c->traffic_share <= 1);
    assert_non_null(c->implementation);
}

/* ---- the table ---- */

static void test_table(void **state)
{
    static const char *const want[][2] = {
        {"database.seq_scan_index", "ADD_INDEX"},
        {"database.inefficient_query", "OPTIMIZE_QUERY"},
        {"database.wide_join", "DENORMALIZE"},
        {"database.cold_table", "ARCHIVE"},
        {"function.n_plus_one", "BATCH_QUERIES"},
        {"function.large_result", "PAGINATION"},
        {"function.repeated_work", "CACHING"},
        {"function.large_objects", "STREAMING_PROCESSING"},
        {"function.memory_leak", "MEMORY_LEAK_FIX"},
        {"frontend.bundle_size", "CODE_SPLITTING"},
        {"frontend.unused_code", "TREE_SHAKING"},
        {"frontend.duplicate_code", "DEDUPLICATION"},
        {"frontend.slow_component", "COMPONENT_OPTIMIZATION"},
        {"realtime.update_rate", "THROTTLE_UPDATES"},
        {"realtime.bandwidth", "DATA_COMPRESSION"},
        {"realtime.stability", "CONNECTION_RESILIENCE"},
        {"infrastructure.browser_cache", "BROWSER_CACHING"},
        {"infrastructure.cdn_cache", "CDN_OPTIMIZATION"},
        {"infrastructure.api_cache", "API_CACHING"},
    };
    size_t n = 0;
    (void)state;
    for (const st_rule *r = st_rules; r->id != NULL; r++) {
        n++;
        assert_non_null(r->check);
        assert_non_null(r->description);
        assert_non_null(r->unit);
        assert_true(strncmp(r->id, r->layer, strlen(r->layer)) == 0);
    }
    assert_int_equal(n, ST_ARRAY_LEN(want));
    for (size_t i = 0; i < ST_ARRAY_LEN(want); i++) {
        const st_rule *r = st_rule_find(want[i][0]);
        assert_non_null(r);
        assert_string_equal(r->optimization, want[i][1]);
    }
    assert_null(st_rule_find("database.nope"));
    assert_null(st_rule_find(NULL));
    near(st_rule_find("database.seq_scan_index")->threshold, 0.2, 0);
    near(st_rule_find("function.large_objects")->threshold, 10 * MIB, 0);
    near(st_rule_find("frontend.slow_component")->threshold, 0.016, 0);
    near(st_rule_find("realtime.bandwidth")->threshold, MIB, 0);
}

/* ---- SQL ---- */

static void expect_cols(const char *sql, const char *table, const char *want)
{
    st_sql_columns c;
    char got[512];
    st_rbuf b;
    st_sql_index_columns(sql, table, &c);
    st_rbuf_init(&b, got, sizeof(got));
    for (size_t i = 0; i < c.n; i++) {
        st_rbuf_addf(&b, "%s%s%s", i ? "," : "", c.name[i], c.eq[i] ? "" : "~");
    }
    if (strcmp(got, want) != 0) {
        fail_msg("%s\n  got  '%s'\n  want '%s'", sql, got, want);
    }
}

static void test_sql_where_columns(void **state)
{
    (void)state;
    /* "~" marks a range column; equality columns come first. */
    expect_cols("SELECT * FROM orders WHERE customer_id = $1 AND created_at > $2", "orders",
                "customer_id,created_at~");
    expect_cols("SELECT * FROM orders WHERE created_at >= $1 AND customer_id = $2", "orders",
                "customer_id,created_at~");
    expect_cols("SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id WHERE "
                "c.email = $1 AND o.status = $2 AND o.created_at BETWEEN $3 AND $4",
                "orders", "status,created_at~");
    expect_cols("SELECT * FROM orders WHERE (status = $1 OR status = $2) AND total::numeric > $3",
                "orders", "status,total~");
    expect_cols("SELECT * FROM orders WHERE status = $1 OR customer_id = $2", "orders", "");
    expect_cols("SELECT * FROM t WHERE ((a = $1 AND b = $2) OR (a = $3 AND c = $4))", "t", "a");
    expect_cols("SELECT * FROM t WHERE (a = $1 AND b > $2) OR (a > $3)", "t", "a~");
    expect_cols("SELECT * FROM \"Orders\" WHERE \"CustomerId\" = $1 AND lower(email) = $2",
                "Orders", "CustomerId");
    expect_cols("SELECT * FROM users WHERE name LIKE 'ab%' AND email LIKE '%x' AND tag LIKE $1 "
                "AND id IN ($2, $3)",
                "users", "id,name~");
    expect_cols("SELECT * FROM users WHERE NOT active = $1 AND id <> $2 AND x NOT IN ($3) AND "
                "a NOT BETWEEN $4 AND $5 AND b = $6",
                "users", "b");
    expect_cols("SELECT * FROM users u WHERE $1 = u.id AND CAST(u.created AS date) >= $2", "users",
                "id,created~");
    expect_cols("SELECT * FROM public.users WHERE public.users.id = ANY($1) AND created_at > "
                "now() - interval '1 day'",
                "users", "id,created_at~");
    expect_cols("UPDATE accounts SET balance = balance + $1 WHERE id = $2", "accounts", "id");
    expect_cols("DELETE FROM sessions WHERE expires_at < $1::timestamp with time zone", "sessions",
                "expires_at~");
    expect_cols("SELECT * FROM t WHERE a = $1 GROUP BY b ORDER BY c LIMIT $2", "t", "a");
    expect_cols("SELECT * FROM t WHERE (a, b) = ($1, $2) AND c = $3", "t", "c");
    expect_cols("SELECT * FROM t WHERE a = (SELECT max(a) FROM t2 WHERE t2.x = $1) AND t.b = "
                "t2.c",
                "t", "a");
    expect_cols("SELECT * FROM orders o, items i WHERE o.id = i.order_id AND i.sku = $1 AND "
                "o.day = $2",
                "items", "sku");
    expect_cols("SELECT * FROM orders WHERE customer_id = $1 -- a comment\n AND /* x */ "
                "created_at > $2",
                "orders", "customer_id,created_at~");
    expect_cols("WITH x AS (SELECT * FROM y WHERE q = $1) SELECT * FROM orders WHERE "
                "customer_id = $2",
                "orders", "customer_id");
    expect_cols("SELECT * FROM orders WHERE a = 'it''s' AND b = E'x\\'y' AND c = $$p$$", "orders",
                "a,b,c");
    expect_cols("SELECT * FROM orders WHERE a=-1 AND b>=$2 AND c IS NULL", "orders", "a,b~");
    expect_cols("SELECT * FROM orders WHERE x.a = $1 AND b = $1", NULL, "b");
    expect_cols("SELECT * FROM orders WHERE a::int = $1 AND \"B\"::text = $2", "orders", "a,B");
    expect_cols("select * from ORDERS where CUSTOMER_ID = $1 and orders.Total > $2 ORDER BY "
                "created_at DESC LIMIT $3",
                "orders", "customer_id,total~");
    expect_cols("SELECT * FROM orders WHERE status IN ($1, $2) AND (customer_id = $3) AND NOT "
                "(a = $4)",
                "orders", "status,customer_id");
    expect_cols(
        "SELECT * FROM orders WHERE created_at > now() - $1::interval AND a = ANY($2::int[])",
        "orders", "a,created_at~");
    expect_cols("SELECT * FROM orders WHERE coalesce(a, 0) = $1 AND date_trunc('day', b) = $2",
                "orders", "");
    expect_cols("SELECT * FROM orders JOIN customers USING (customer_id) WHERE customers.region = "
                "$1 AND orders.total > $2",
                "orders", "total~");
    expect_cols("SELECT * FROM orders WHERE id BETWEEN SYMMETRIC $1 AND $2 AND x = $3", "orders",
                "x,id~");
    expect_cols("SELECT * FROM orders WHERE a = $1 AND (b = $2 OR b IS NULL) AND a = $3", "orders",
                "a");
    expect_cols("SELECT * FROM orders WHERE (a = $1) = true AND c = $2", "orders", "c");
    expect_cols("SELECT * FROM orders WHERE CASE WHEN a = $1 THEN b ELSE c END = $2 AND d = $3",
                "orders", "d");
    expect_cols("SELECT * FROM orders WHERE EXISTS (SELECT 1 FROM items i WHERE i.oid = "
                "orders.id) AND e > $1",
                "orders", "e~");
    /* Nothing to read: no WHERE, a cut statement, garbage, NULL. */
    expect_cols("SELECT * FROM orders", "orders", "");
    expect_cols("SELECT * FROM orders WHERE (((((", "orders", "");
    expect_cols("SELECT * FROM orders WHERE status = $1 AND", "orders", "status");
    expect_cols(")))) WHERE = = AND OR NOT (", "orders", "");
    expect_cols(NULL, NULL, "");
}

static void test_sql_long_and_deep(void **state)
{
    char *big = malloc(20000);
    st_rbuf b;
    st_sql_columns c;
    st_sql_tables t;
    (void)state;
    /* Deep nesting is bounded, a long text is read up to its cap. */
    st_rbuf_init(&b, big, 20000);
    st_rbuf_puts(&b, "SELECT * FROM t WHERE ");
    for (int i = 0; i < 3000; i++) {
        st_rbuf_puts(&b, "(");
    }
    st_rbuf_puts(&b, "a = $1");
    for (int i = 0; i < 3000; i++) {
        st_rbuf_puts(&b, ")");
    }
    st_sql_index_columns(big, "t", &c);
    assert_true(c.n <= ST_SQL_MAX_COLUMNS);
    st_rbuf_init(&b, big, 20000);
    st_rbuf_puts(&b, "SELECT * FROM t WHERE a = $1");
    for (int i = 0; i < 2000; i++) {
        st_rbuf_addf(&b, " AND c%d = $%d", i, i + 2);
    }
    st_sql_index_columns(big, "t", &c);
    assert_int_equal(c.n, ST_SQL_MAX_COLUMNS);
    assert_string_equal(c.name[0], "a");
    st_sql_tables_of(big, &t);
    assert_int_equal(t.n, 1);
    assert_int_equal(st_sql_batch_rewrite(big, big + 10000, 100), ST_ENOENT); /* cut */
    free(big);
}

static void test_sql_tables_and_rewrites(void **state)
{
    st_sql_tables t;
    char out[512];
    (void)state;
    st_sql_tables_of("SELECT * FROM a JOIN b ON a.x = b.x LEFT JOIN c ON c.y = b.y, d JOIN "
                     "(SELECT * FROM e JOIN f ON e.i = f.i) s ON s.i = d.i WHERE extract(year "
                     "FROM a.t) = $1 AND a.k IS DISTINCT FROM b.k",
                     &t);
    assert_int_equal(t.joins, 5);
    assert_int_equal(t.n, 6);
    assert_string_equal(t.name[0], "a");
    assert_string_equal(t.name[5], "f");
    st_sql_tables_of("SELECT * FROM public.users u, sales.orders o", &t);
    assert_int_equal(t.joins, 1);
    assert_string_equal(t.name[0], "users");
    assert_string_equal(t.name[1], "sales.orders");

    assert_int_equal(st_sql_batch_rewrite("SELECT * FROM users WHERE id = $1", out, sizeof(out)),
                     ST_OK);
    assert_string_equal(out, "SELECT * FROM users WHERE id = ANY($1)");
    assert_int_equal(st_sql_batch_rewrite("SELECT * FROM users WHERE id > $1", out, sizeof(out)),
                     ST_ENOENT);
    assert_int_equal(st_sql_batch_rewrite("SELECT * FROM users WHERE id = $1", out, 10),
                     ST_ETOOBIG);

    assert_int_equal(
        st_sql_keyset_rewrite("SELECT * FROM orders WHERE customer_id = $1", out, sizeof(out)),
        ST_OK);
    assert_string_equal(out, "SELECT * FROM orders WHERE customer_id = $1 AND id > $2 ORDER BY id "
                             "LIMIT $3");
    assert_int_equal(st_sql_keyset_rewrite("SELECT id, total FROM orders WHERE a = $1 OR b = $2 "
                                           "ORDER BY created_at DESC LIMIT $3;",
                                           out, sizeof(out)),
                     ST_OK);
    assert_string_equal(out, "SELECT id, total FROM orders WHERE (a = $1 OR b = $2) AND "
                             "created_at < $3 ORDER BY created_at DESC LIMIT $4");
    assert_int_equal(st_sql_keyset_rewrite("SELECT * FROM orders o JOIN items i ON i.oid = o.id",
                                           out, sizeof(out)),
                     ST_OK);
    assert_string_equal(out, "SELECT * FROM orders o JOIN items i ON i.oid = o.id WHERE o.id > "
                             "$1 ORDER BY o.id LIMIT $2");
    assert_int_equal(
        st_sql_keyset_rewrite("SELECT count(*) FROM orders GROUP BY x", out, sizeof(out)),
        ST_ENOENT);
    assert_int_equal(st_sql_keyset_rewrite("SELECT * FROM t ORDER BY a, b", out, sizeof(out)),
                     ST_ENOENT);
}

static void test_sql_view_and_select(void **state)
{
    st_sql_columns c;
    char out[512];
    (void)state;
    assert_int_equal(st_sql_view_body("SELECT o.id, c.name FROM orders o JOIN customers c ON "
                                      "c.id = o.cid WHERE o.id = $1",
                                      out, sizeof(out)),
                     ST_OK);
    assert_string_equal(out, "SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.cid");
    assert_int_equal(st_sql_view_body("SELECT o.id, c.id FROM orders o JOIN customers c ON c.id "
                                      "= o.cid",
                                      out, sizeof(out)),
                     ST_ENOENT);
    assert_int_equal(
        st_sql_view_body("SELECT * FROM orders o JOIN c ON c.id = o.cid", out, sizeof(out)),
        ST_ENOENT);

    assert_true(st_sql_select_star("SELECT * FROM x"));
    assert_true(st_sql_select_star("SELECT DISTINCT t.* FROM x t"));
    assert_false(st_sql_select_star("SELECT a * b FROM x"));
    assert_true(st_sql_has_limit("SELECT a FROM x LIMIT 1"));
    assert_false(st_sql_has_limit("SELECT (SELECT a FROM y LIMIT 1) FROM x"));
    st_sql_select_columns("SELECT o.id, o.total AS t, status FROM orders o", "orders", &c);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.name[1], "total");
    st_sql_select_columns("SELECT id, sum(x) FROM orders", "orders", &c);
    assert_int_equal(c.n, 0);
}

static void test_text_helpers(void **state)
{
    char buf[8];
    char big[64];
    st_rbuf b;
    (void)state;
    /* A cut never leaves half a UTF-8 character. */
    st_rbuf_init(&b, buf, sizeof(buf));
    st_rbuf_puts(&b, "abcde\xc3\xa9\xc3\xa9"); /* the first é fits, the second not */
    assert_true(b.over);
    assert_string_equal(buf, "abcde\xc3\xa9");
    st_rbuf_init(&b, buf, sizeof(buf));
    st_rbuf_puts(&b, "abcdef\xc3\xa9");
    assert_true(b.over);
    assert_string_equal(buf, "abcdef");
    st_rbuf_init(&b, buf, sizeof(buf));
    st_rbuf_addf(&b, "%s", "abcde\xe2\x82\xac");
    assert_true(b.over);
    assert_string_equal(buf, "abcde");
    assert_int_equal(st_rules_cut("ab\xc3\xa9", 3), 2);
    assert_int_equal(st_rules_cut("ab\xc3\xa9", 4), 4);
    assert_int_equal(st_rules_cut("ab", 80), 2);
    /* Identifiers are quoted only when they must be. */
    st_rbuf_init(&b, big, sizeof(big));
    st_rbuf_ident(&b, "orders");
    st_rbuf_puts(&b, " ");
    st_rbuf_ident(&b, "sales.Orders");
    st_rbuf_puts(&b, " ");
    st_rbuf_ident(&b, "order");
    st_rbuf_puts(&b, " ");
    st_rbuf_ident(&b, "a\"b");
    st_rbuf_puts(&b, " ");
    st_rbuf_ident(&b, "2fa");
    assert_string_equal(big, "orders sales.\"Orders\" \"order\" \"a\"\"b\" \"2fa\"");
    assert_false(b.over);
}

/* ---- leak detector ---- */

static void test_leak_detector(void **state)
{
    double t[60];
    double v[60];
    st_leak_fit fit;
    unsigned seed = 12345;
    (void)state;
    for (int i = 0; i < 30; i++) {
        t[i] = i / 60.0;                                  /* hours */
        v[i] = 100 * MIB + i * MIB + (i % 3) * 0.1 * MIB; /* 60 MiB/h with jitter */
    }
    assert_true(st_leak_detect(t, v, 30, &fit));
    near(fit.slope, 60 * MIB, 0.02);
    assert_true(fit.r2 > 0.99);
    /* Too few points. */
    assert_false(st_leak_detect(t, v, ST_LEAK_MIN_POINTS - 1, &fit));
    /* Sawtooth: grows and is collected, three times. */
    for (int i = 0; i < 30; i++) {
        v[i] = 100 * MIB + (i % 10) * MIB;
    }
    assert_false(st_leak_detect(t, v, 30, &fit));
    /* Plateau: grows for 20 minutes, then flat. */
    for (int i = 0; i < 30; i++) {
        v[i] = 100 * MIB + (i < 20 ? i : 20) * MIB;
    }
    assert_false(st_leak_detect(t, v, 30, &fit));
    assert_true(fit.slope > 0);
    assert_true(fit.tail_slope < ST_LEAK_TAIL_SHARE * fit.slope);
    /* Noise around a level. */
    for (int i = 0; i < 30; i++) {
        seed = seed * 1103515245u + 12345u;
        v[i] = 100 * MIB + (double)((seed >> 16) % 1000) * 1000;
    }
    assert_false(st_leak_detect(t, v, 30, &fit));
    /* Flat and falling. */
    for (int i = 0; i < 30; i++) {
        v[i] = 100 * MIB;
    }
    assert_false(st_leak_detect(t, v, 30, &fit));
    for (int i = 0; i < 30; i++) {
        v[i] = 100 * MIB - i * MIB;
    }
    assert_false(st_leak_detect(t, v, 30, &fit));
}

/* ---- database ---- */

#define Q_ORDERS "SELECT * FROM orders WHERE customer_id = $1 AND created_at > $2"
#define Q_USERS "SELECT * FROM users WHERE email = $1"
#define Q_ITEMS "SELECT * FROM items WHERE sku = $1"

static void stmt(fx *x, const char *qid, const char *query, const char *table, const char *host,
                 double calls, double time, double rows)
{
    const char *const *l =
        L("queryid", qid, "query", query, "table", table, "database", "shop", "host", host);
    counter(x, "db.statement.calls", l, calls);
    counter(x, "db.statement.time", l, time);
    counter(x, "db.statement.rows", l, rows);
}

static void table_stats(fx *x, const char *table, double seq, double seq_tup, double idx,
                        double idx_tup)
{
    const char *const *l = L("table", table, "database", "shop", "host", "db1");
    counter(x, "db.table.seq_scan", l, seq);
    counter(x, "db.table.seq_tup_read", l, seq_tup);
    counter(x, "db.table.idx_scan", l, idx);
    counter(x, "db.table.idx_tup_fetch", l, idx_tup);
}

static void test_seq_scan_index(void **state)
{
    fx *x = *state;
    st_candidates c;
    const st_candidate *k;
    stmt(x, "1", Q_ORDERS, "orders", "db1", 1000, 201, 5000); /* 201 ms: past */
    stmt(x, "2", Q_USERS, "users", "db1", 1000, 199, 1000);   /* 199 ms: under */
    stmt(x, "3", Q_ITEMS, "items", "db1", 1000, 500, 1000);   /* slow, but indexed */
    table_stats(x, "orders", 300, 3e6, 100, 100);
    table_stats(x, "users", 300, 3e6, 0, 0);
    table_stats(x, "items", 10, 1000, 90, 90);
    c = run(x, "database.seq_scan_index");
    assert_int_equal(c.n, 1);
    k = find(&c, "queryid=1 table=orders database=shop host=db1");
    assert_string_equal(str(k->implementation, "sql"),
                        "CREATE INDEX CONCURRENTLY ON orders (customer_id, created_at);");
    assert_string_equal(str(k->implementation, "table"), "orders");
    assert_string_equal(str(k->implementation, "columns.0"), "customer_id");
    assert_string_equal(str(k->implementation, "columns.1"), "created_at");
    assert_string_equal(str(k->implementation, "statement"), Q_ORDERS);
    near(k->value, 0.201, 1e-12);
    assert_false(k->below);
    assert_int_equal(k->severity, ST_SEV_HIGH);
    near(k->traffic_share, 1.0 / 3, 1e-12);
    check_evidence(k, "db.table.seq_scan", 0.2, "db1");
    assert_string_equal(str(k->evidence, "values.statement"), Q_ORDERS);
    near(num(k->evidence, "values.mean_time_s"), 0.201, 1e-12);
    near(num(k->evidence, "values.calls"), 1000, 0);
    near(num(k->evidence, "values.seq_scan_per_s"), 1.0, 1e-12);
    near(num(k->evidence, "values.seq_tup_read_per_s"), 10000, 1e-12);
    near(num(k->evidence, "values.idx_scan_per_s"), 100.0 / 300, 1e-12);
    near(num(k->evidence, "values.seq_scan_share"), 0.75, 1e-12);
    assert_string_equal(str(k->labels, "table"), "orders");
    st_candidates_free(&c);
    /* A configured threshold moves the line. */
    c = run_with(x, "database.seq_scan_index", "database.seq_scan_index", 0.1);
    assert_int_equal(c.n, 2);
    st_candidates_free(&c);
}

/* More statements than one answer may hold: read host by host. */
static void test_many_statements(void **state)
{
    fx *x = *state;
    st_candidates c;
    char qid[32];
    char q[64];
    for (int i = 0; i < 2100; i++) {
        snprintf(qid, sizeof(qid), "%d", 100 + i);
        snprintf(q, sizeof(q), "SELECT * FROM t%d WHERE id = $1", i);
        stmt(x, qid, q, "t", i % 2 ? "db1" : "db2", 10, 0.01, 10);
        if (i % 500 == 0) {
            flush(x);
        }
    }
    stmt(x, "1", Q_ORDERS, "orders", "db1", 1000, 300, 5000);
    table_stats(x, "orders", 300, 3e6, 0, 0);
    c = run(x, "database.seq_scan_index");
    assert_int_equal(c.n, 1);
    find(&c, "queryid=1 table=orders database=shop host=db1");
    near(c.v[0].traffic_share, 1000.0 / 22000, 1e-12);
    st_candidates_free(&c);
}

static void test_inefficient_query(void **state)
{
    fx *x = *state;
    st_candidates c;
    const st_candidate *k;
    stmt(x, "1", "SELECT id, total FROM orders WHERE customer_id = $1", "orders", "db1", 100, 30,
         100);
    stmt(x, "2", Q_ITEMS, "items", "db1", 100, 30, 100);
    /* Index scans both; orders reads 100.01 rows per row returned, items 100. */
    table_stats(x, "orders", 0, 0, 100, 10001);
    table_stats(x, "items", 0, 0, 100, 10000);
    c = run(x, "database.inefficient_query");
    assert_int_equal(c.n, 1);
    k = find(&c, "queryid=1 table=orders database=shop host=db1");
    near(k->value, 0.3, 1e-12);
    near(num(k->evidence, "values.rows_read_per_row"), 100.01, 1e-12);
    near(num(k->evidence, "values.idx_scan_per_s"), 100.0 / 300, 1e-12);
    near(num(k->evidence, "values.rows"), 100, 0);
    check_evidence(k, "db.table.idx_tup_fetch", 0.2, "db1");
    assert_string_equal(str(k->implementation, "covering_index"),
                        "CREATE INDEX CONCURRENTLY ON orders (customer_id) INCLUDE (id, total);");
    assert_string_equal(str(k->implementation, "rewrite"),
                        "SELECT id, total FROM orders WHERE customer_id = $1 AND id > $2 ORDER "
                        "BY id LIMIT $3");
    assert_true(json_array_size(at(k->implementation, "changes")) >= 3);
    st_candidates_free(&c);
}

#define Q_WIDE6                                                                                  \
    "SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id JOIN addresses a ON "    \
    "a.id = c.address_id JOIN items i ON i.order_id = o.id JOIN products p ON p.id = "           \
    "i.product_id JOIN categories g ON g.id = p.category_id JOIN brands b ON b.id = p.brand_id " \
    "WHERE o.id = $1"
#define Q_WIDE5                                                                               \
    "SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id JOIN addresses a ON " \
    "a.id = c.address_id JOIN items i ON i.order_id = o.id JOIN products p ON p.id = "        \
    "i.product_id JOIN categories g ON g.id = p.category_id WHERE o.id = $1"

static void test_wide_join(void **state)
{
    fx *x = *state;
    st_candidates c;
    const st_candidate *k;
    stmt(x, "6", Q_WIDE6, "orders", "db1", 31, 0.31, 31); /* 0.103 calls/s: hot */
    stmt(x, "5", Q_WIDE5, "orders", "db1", 1000, 1, 1000);
    stmt(x, "7", Q_WIDE6 " AND o.x = $2", "orders", "db2", 30, 0.3, 30); /* 0.1/s: not hot */
    c = run(x, "database.wide_join");
    assert_int_equal(c.n, 1);
    k = find(&c, "queryid=6 table=orders database=shop host=db1");
    near(k->value, 6, 0);
    check_evidence(k, "db.statement.calls", 5, "db1");
    near(num(k->evidence, "values.joins"), 6, 0);
    near(num(k->evidence, "values.calls"), 31, 0);
    assert_int_equal(json_array_size(at(k->implementation, "tables")), 7);
    assert_string_equal(str(k->implementation, "tables.0"), "orders");
    assert_string_equal(str(k->implementation, "tables.6"), "brands");
    assert_string_equal(str(k->implementation, "read_model"), "orders_wide");
    {
        static const char prefix[] =
            "CREATE MATERIALIZED VIEW orders_wide AS SELECT o.id FROM orders o JOIN";
        assert_true(strncmp(str(k->implementation, "sql"), prefix, strlen(prefix)) == 0);
    }
    assert_null(strstr(str(k->implementation, "sql"), "WHERE"));
    st_candidates_free(&c);
}

static void test_cold_table_last_read(void **state)
{
    fx *x = *state;
    st_candidates c;
    const st_candidate *k;
    double now_s = (double)NOW / 1000;
    gauge(x, "db.table.live_tup", L("table", "audit_log", "database", "shop", "host", "db1"), 5000);
    gauge(x, "db.table.last_read_unix", L("table", "audit_log", "database", "shop", "host", "db1"),
          now_s - 90.5 * 86400);
    gauge(x, "db.table.live_tup", L("table", "orders", "database", "shop", "host", "db1"), 15000);
    gauge(x, "db.table.last_read_unix", L("table", "orders", "database", "shop", "host", "db1"),
          now_s - 89.5 * 86400);
    gauge(x, "db.table.live_tup", L("table", "empty", "database", "shop", "host", "db1"), 0);
    gauge(x, "db.table.last_read_unix", L("table", "empty", "database", "shop", "host", "db1"),
          now_s - 300 * 86400);
    c = run(x, "database.cold_table");
    assert_int_equal(c.n, 1);
    k = find(&c, "table=audit_log database=shop host=db1");
    near(k->value, 90.5, 1e-9);
    near(k->traffic_share, 0.25, 1e-12);
    check_evidence(k, "db.table.last_read_unix", 90, "db1");
    near(num(k->evidence, "values.live_tup"), 5000, 0);
    assert_string_equal(str(k->evidence, "values.source"), "last_read_unix");
    assert_string_equal(str(k->implementation, "sql"),
                        "CREATE TABLE audit_log_archive (LIKE audit_log INCLUDING ALL);\n"
                        "BEGIN;\n"
                        "LOCK TABLE audit_log IN EXCLUSIVE MODE;\n"
                        "INSERT INTO audit_log_archive SELECT * FROM audit_log;\n"
                        "TRUNCATE audit_log;\n"
                        "COMMIT;");
    assert_string_equal(str(k->implementation, "database"), "shop");
    st_candidates_free(&c);
    /* The engine setting moves the line too. */
    c = run_with(x, "database.cold_table", "cold_table_days", 89);
    assert_int_equal(c.n, 2);
    st_candidates_free(&c);
}

/* Daily points of a table's counters and rows from `days` days back. */
static void daily_table(fx *x, const char *table, int days, int read_day)
{
    const char *const *l = L("table", table, "database", "shop", "host", "db1");
    double zeros[100] = {0};
    double live[100];
    double reads[100] = {0};
    int64_t start = NOW - days * DAY + 3600 * 1000;
    for (int i = 0; i < days; i++) {
        live[i] = 100;
    }
    if (read_day >= 0) {
        reads[days - read_day] = 1;
    }
    values(x, "db.table.seq_scan", STRATA__V1__KIND__COUNTER, l, start, DAY, zeros, (size_t)days);
    values(x, "db.table.idx_scan", STRATA__V1__KIND__COUNTER, l, start, DAY, reads, (size_t)days);
    values(x, "db.table.live_tup", STRATA__V1__KIND__GAUGE, l, start, DAY, live, (size_t)days);
}

static void test_cold_table_counters(void **state)
{
    fx *x = *state;
    st_candidates c;
    const st_candidate *k;
    daily_table(x, "old_events", 92, -1); /* never read, seen for 92 days */
    daily_table(x, "recent", 92, 10);     /* read 10 days ago */
    daily_table(x, "young", 30, -1);      /* seen for 30 days only */
    daily_table(x, "read_today", 92, -1); /* not read over the closed days... */
    flush(x);
    /* ...but today (the closed days' answers are kept from step to step,
     * today's scans asked apart) */
    counter(x, "db.table.idx_scan", L("table", "read_today", "database", "shop", "host", "db1"), 3);
    gauge(x, "db.table.live_tup", L("table", "read_today", "database", "shop", "host", "db1"), 100);
    gauge(x, "db.table.live_tup", L("table", "old_events", "database", "shop", "host", "db1"), 100);
    gauge(x, "db.table.live_tup", L("table", "recent", "database", "shop", "host", "db1"), 100);
    gauge(x, "db.table.live_tup", L("table", "young", "database", "shop", "host", "db1"), 100);
    c = run(x, "database.cold_table");
    assert_int_equal(c.n, 1);
    k = find(&c, "table=old_events database=shop host=db1");
    assert_true(k->value > 90 && k->value <= 92);
    assert_string_equal(str(k->evidence, "values.source"), "scan counters");
    check_evidence(k, "db.table.seq_scan", 90, "db1");
    assert_true(strstr(str(k->implementation, "sql"), "TRUNCATE old_events;") != NULL);
    st_candidates_free(&c);
}

/* ---- function ---- */

static void function(fx *x, const char *name, const char *host, double p95, uint64_t n)
{
    /* n - 6 fast calls and 6 at p95: the 95th percentile is p95. */
    dist(x, "app.function.duration", L("function", name, "type", "query", "host", host), 0.01,
         n - 6, p95, 6);
}

static void test_n_plus_one(void **state)
{
    fx *x = *state;
    st_candidates c;
    const st_candidate *k;
    function(x, "getOrders", "app1", 0.51, 100);
    stmt(x, "11", "SELECT * FROM items WHERE order_id = $1", "items", "app1", 1100, 2.2, 1100);
    function(x, "getUsers", "app2", 0.51, 100); /* 10 statements per call: not past */
    stmt(x, "12", "SELECT * FROM users WHERE id = $1", "users", "app2", 1000, 2, 1000);
    function(x, "fast", "app3", 0.49, 100); /* p95 under */
    stmt(x, "13", "SELECT * FROM carts WHERE id = $1", "carts", "app3", 5000, 5, 5000);
    function(x, "rare", "app4", 0.9, 40); /* too few calls to judge */
    stmt(x, "14", "SELECT * FROM tags WHERE id = $1", "tags", "app4", 5000, 5, 5000);
    c = run(x, "function.n_plus_one");
    assert_int_equal(c.n, 1);
    k = find(&c, "function=getOrders host=app1");
    near(k->value, 0.51, 0.01);
    near(num(k->evidence, "values.p95_s"), 0.51, 0.01);
    near(num(k->evidence, "values.function_calls"), 100, 0);
    near(num(k->evidence, "values.statement_calls"), 1100, 0);
    near(num(k->evidence, "values.statements_per_call"), 11, 1e-12);
    near(num(k->evidence, "values.statement_mean_s"), 0.002, 1e-9);
    check_evidence(k, "app.function.duration", 0.5, "app1");
    assert_string_equal(str(k->implementation, "statement"),
                        "SELECT * FROM items WHERE order_id = $1");
    assert_string_equal(str(k->implementation, "sql"),
                        "SELECT * FROM items WHERE order_id = ANY($1)");
    near(k->traffic_share, 100.0 / 340, 1e-12);
    st_candidates_free(&c);
}

static void test_large_result(void **state)
{
    fx *x = *state;
    st_candidates c;
    const st_candidate *k;
    function(x, "listAll", "app1", 0.6, 100);
    stmt(x, "21", "SELECT * FROM orders WHERE customer_id = $1", "orders", "app1", 100, 10,
         100100); /* 1001 rows per call */
    function(x, "listSome", "app2", 0.6, 100);
    stmt(x, "22", "SELECT * FROM orders WHERE shop_id = $1", "orders", "app2", 100, 10, 100000);
    function(x, "export", "app3", 0.6, 100);
    dist(x, "app.function.response_bytes", L("function", "export", "host", "app3"), 1000, 90,
         2 * MIB, 10);
    c = run(x, "function.large_result");
    assert_int_equal(c.n, 2);
    k = find(&c, "function=listAll host=app1");
    near(num(k->evidence, "values.rows_per_call"), 1001, 1e-12);
    check_evidence(k, "db.statement.rows", 0.5, "app1");
    assert_string_equal(str(k->implementation, "sql"),
                        "SELECT * FROM orders WHERE customer_id = $1 AND id > $2 ORDER BY id "
                        "LIMIT $3");
    near(num(k->implementation, "page_size"), 100, 0);
    k = find(&c, "function=export host=app3");
    near(num(k->evidence, "values.response_bytes_p95"), 2 * MIB, 0.01);
    assert_true(json_is_null(at(k->implementation, "statement")));
    st_candidates_free(&c);
}

static void test_repeated_work(void **state)
{
    fx *x = *state;
    st_candidates c;
    const st_candidate *k;
    function(x, "getConfig", "app1", 0.6, 100);
    stmt(x, "31", "SELECT value FROM settings WHERE key = $1", "settings", "app1", 200, 4, 200);
    function(x, "getPrefs", "app2", 0.6, 100); /* once per call */
    stmt(x, "32", "SELECT value FROM prefs WHERE key = $1", "prefs", "app2", 100, 2, 100);
    function(x, "getCheap", "app3", 0.6, 100); /* repeated but 5 ms each */
    stmt(x, "33", "SELECT value FROM flags WHERE key = $1", "flags", "app3", 300, 1.5, 300);
    c = run(x, "function.repeated_work");
    assert_int_equal(c.n, 1);
    k = find(&c, "function=getConfig host=app1");
    near(num(k->evidence, "values.statements_per_call"), 2, 1e-12);
    near(num(k->evidence, "values.statement_mean_s"), 0.02, 1e-9);
    check_evidence(k, "db.statement.calls", 0.5, "app1");
    assert_string_equal(str(k->implementation, "pattern"), "cache-aside");
    near(num(k->implementation, "ttl_s"), 60, 0);
    assert_string_equal(str(k->implementation, "key"), "getConfig:q31");
    assert_string_equal(str(k->implementation, "invalidate"),
                        "delete the keys on writes to settings");
    assert_non_null(strstr(str(k->implementation, "snippet"), "'EX', 60"));
    st_candidates_free(&c);
}

static void test_large_objects(void **state)
{
    fx *x = *state;
    st_candidates c;
    const st_candidate *k;
    gauge(x, "app.memory.largest_object", L("process", "worker", "host", "app1"), 10 * MIB + 1);
    gauge(x, "app.memory.largest_object", L("process", "api", "host", "app2"), 10 * MIB);
    c = run(x, "function.large_objects");
    assert_int_equal(c.n, 1);
    k = find(&c, "process=worker host=app1");
    near(num(k->evidence, "values.largest_object_bytes"), 10 * MIB + 1, 0);
    check_evidence(k, "app.memory.largest_object", 10 * MIB, "app1");
    assert_string_equal(str(k->implementation, "target"), "worker");
    assert_true(json_array_size(at(k->implementation, "steps")) == 3);
    st_candidates_free(&c);
}

/* 30 one-minute RSS points of process on app1, from f(i). */
static void rss(fx *x, const char *process, double (*f)(int))
{
    double v[30];
    for (int i = 0; i < 30; i++) {
        v[i] = f(i);
    }
    values(x, "mem.rss", STRATA__V1__KIND__GAUGE, L("process", process, "host", "app1"),
           NOW - 30 * 60000 + 30000, 60000, v, 30);
}

static double rss_leak(int i)
{
    return 100 * MIB + i * MIB; /* 60 MiB/h */
}

static double rss_slow(int i)
{
    return 100 * MIB + i * (1.05 * MIB / 60); /* 1.05 MiB/h: past 1 MiB/h */
}

static double rss_tiny(int i)
{
    return 100 * MIB + i * (0.95 * MIB / 60); /* under */
}

static double rss_saw(int i)
{
    return 100 * MIB + (i % 10) * 5 * MIB;
}

static double rss_plateau(int i)
{
    return 100 * MIB + (i < 20 ? i : 20) * MIB;
}

static void test_memory_leak(void **state)
{
    fx *x = *state;
    st_candidates c;
    const st_candidate *k;
    rss(x, "api", rss_leak);
    rss(x, "slow", rss_slow);
    rss(x, "tiny", rss_tiny);
    rss(x, "saw", rss_saw);
    rss(x, "plateau", rss_plateau);
    c = run(x, "function.memory_leak");
    assert_int_equal(c.n, 2);
    k = find(&c, "process=api host=app1");
    near(k->value, 60 * MIB, 1e-9);
    near(num(k->evidence, "values.slope_bytes_per_hour"), 60 * MIB, 1e-9);
    near(num(k->evidence, "values.r2"), 1, 1e-9);
    near(num(k->evidence, "values.rss_bytes"), 129 * MIB, 0);
    near(num(k->evidence, "values.eta_hours"), (512.0 - 129) / 60, 1e-9);
    near(num(k->implementation, "eta_hours"), (512.0 - 129) / 60, 1e-9);
    assert_int_equal(k->severity, ST_SEV_HIGH);
    check_evidence(k, "mem.rss", MIB, "app1");
    assert_string_equal(str(k->implementation, "process"), "api");
    assert_non_null(strstr(str(k->implementation, "steps.0"), "heaptrack --pid $(pidof api)"));
    assert_non_null(strstr(str(k->implementation, "mitigation"), "MemoryMax=512M"));
    k = find(&c, "process=slow host=app1");
    near(k->value, 1.05 * MIB, 1e-9);
    st_candidates_free(&c);
}

/* The same leaks alone, in a run that shares its questions (the groups are
 * walked off the shared fold, or off the answer another rule had built),
 * and past the series limit (host by host, through the JSON answers); the
 * share of the fleet counts both hosts. */
static void test_memory_leak_shared_and_host_by_host(void **state)
{
    fx *x = *state;
    const st_rule *r = st_rule_find("function.memory_leak");
    double v[30];
    rss(x, "api", rss_leak);
    rss(x, "slow", rss_slow);
    rss(x, "tiny", rss_tiny);
    rss(x, "saw", rss_saw);
    rss(x, "plateau", rss_plateau);
    for (int i = 0; i < 30; i++) {
        v[i] = rss_leak(i);
    }
    values(x, "mem.rss", STRATA__V1__KIND__GAUGE, L("process", "api", "host", "app2"),
           NOW - 30 * 60000 + 30000, 60000, v, 30);
    flush(x);
    for (int mode = 0; mode < 4; mode++) {
        st_candidates c = {0};
        const st_candidate *k;
        st_eng *e;
        assert_int_equal(st_eng_new(x->st, NOW, &e), ST_OK);
        if (mode >= 1) {
            st_eng_share_begin(e);
        }
        if (mode == 2) {
            st_eng_set_max_series(e, 5); /* 6 series; app1 has 5 */
        }
        if (mode == 3) { /* the rule's own question (30 min in 60 s steps), asked before */
            st_answer *pre = NULL;
            assert_int_equal(st_eng_query_steps(e, "mem.rss", "avg", "host,process", NULL, 0,
                                                30 * 60000, 60000, &pre),
                             ST_OK);
            assert_int_equal(pre->n, 6);
            st_answer_unref(pre);
        }
        assert_int_equal(r->check(e, r, &c), ST_OK);
        assert_int_equal(c.n, 3);
        k = find(&c, "process=api host=app2");
        near(k->value, 60 * MIB, 1e-9);
        near(k->traffic_share, 0.5, 1e-12);
        k = find(&c, "process=api host=app1");
        near(num(k->evidence, "values.rss_bytes"), 129 * MIB, 0);
        k = find(&c, "process=slow host=app1");
        near(k->value, 1.05 * MIB, 1e-9);
        st_candidates_free(&c);
        st_eng_free(e);
    }
}

/* ---- frontend ---- */

static void chunk(fx *x, const char *name, const char *entry, const char *host, double bytes)
{
    gauge(x, "frontend.bundle.gzip_bytes",
          L("chunk", name, "entry", entry, "type", "js", "host", host), bytes);
}

static void test_bundle_size(void **state)
{
    fx *x = *state;
    st_candidates c;
    const st_candidate *k;
    chunk(x, "main.js", "true", "build1", 250 * KIB + 1);
    chunk(x, "vendor.js", "false", "build1", 100 * KIB + 1);
    chunk(x, "page.js", "false", "build1", 100 * KIB);
    chunk(x, "admin.js", "true", "build1", 250 * KIB);
    chunk(x, "a.js", "false", "build2", 90 * KIB);
    gauge(x, "frontend.bundle.total_gzip_bytes", L("host", "build2"), MIB + 1);
    c = run(x, "frontend.bundle_size");
    assert_int_equal(c.n, 3);
    k = find(&c, "chunk=main.js host=build1");
    near(k->value, 250 * KIB + 1, 0);
    check_evidence(k, "frontend.bundle.gzip_bytes", 250 * KIB, "build1");
    near(num(k->evidence, "values.gzip_bytes"), 250 * KIB + 1, 0);
    assert_true(json_is_true(at(k->evidence, "values.entry")));
    assert_non_null(strstr(str(k->implementation, "code"), "import('./routes/Settings')"));
    near(num(k->implementation, "webpack.optimization.splitChunks.maxSize"), 100 * KIB, 0);
    near(k->traffic_share, (250 * KIB + 1) / (700 * KIB + 2), 1e-12);
    k = find(&c, "chunk=vendor.js host=build1");
    near(k->threshold, 100 * KIB, 0);
    st_candidates_free(&c);
    /* Limits come from the targets: a larger chunk limit spares vendor.js. */
    c = run_with(x, "frontend.bundle_size", "bundle_chunk_bytes", 200 * KIB);
    assert_int_equal(c.n, 2);
    st_candidates_free(&c);
    c = run(x, "frontend.bundle_size");
    k = find(&c, "bundle=total host=build2");
    near(k->value, MIB + 1, 0);
    near(k->threshold, MIB, 0);
    assert_string_equal(str(k->implementation, "largest_chunks.0.chunk"), "a.js");
    st_candidates_free(&c);
}

static void test_unused_code(void **state)
{
    fx *x = *state;
    st_candidates c;
    const st_candidate *k;
    gauge(x, "frontend.bundle.unused_bytes", L("host", "build1"), 1);
    gauge(x, "frontend.bundle.chunk_unused_bytes", L("chunk", "main.js", "host", "build1"), 1);
    gauge(x, "frontend.bundle.unused_bytes", L("host", "build2"), 0);
    c = run(x, "frontend.unused_code");
    assert_int_equal(c.n, 1);
    k = find(&c, "host=build1");
    near(num(k->evidence, "values.bytes"), 1, 0);
    check_evidence(k, "frontend.bundle.unused_bytes", 0, "build1");
    assert_string_equal(str(k->implementation, "chunks.0.chunk"), "main.js");
    assert_string_equal(str(k->implementation, "package_json.sideEffects.0"), "*.css");
    assert_true(json_is_true(at(k->implementation, "webpack.optimization.usedExports")));
    st_candidates_free(&c);
}

static void test_duplicate_code(void **state)
{
    fx *x = *state;
    st_candidates c;
    const st_candidate *k;
    gauge(x, "frontend.bundle.duplicate_bytes", L("host", "build1"), 2048);
    gauge(x, "frontend.bundle.duplicate_module_bytes",
          L("module", "./node_modules/lodash/lodash.js", "host", "build1"), 2048);
    gauge(x, "frontend.bundle.duplicate_module_bytes",
          L("module", "node_modules/a/node_modules/@scope/pkg/index.js", "host", "build1"), 1024);
    gauge(x, "frontend.bundle.duplicate_module_bytes",
          L("module", "./src/utils/format.js", "host", "build1"), 512);
    gauge(x, "frontend.bundle.duplicate_bytes", L("host", "build2"), 0);
    c = run(x, "frontend.duplicate_code");
    assert_int_equal(c.n, 1);
    k = find(&c, "host=build1");
    near(num(k->evidence, "values.bytes"), 2048, 0);
    check_evidence(k, "frontend.bundle.duplicate_bytes", 0, "build1");
    assert_string_equal(str(k->implementation, "vite.resolve.dedupe.0"), "lodash");
    assert_string_equal(str(k->implementation, "vite.resolve.dedupe.1"), "@scope/pkg");
    /* The application's own module is named, but no package to dedupe. */
    assert_int_equal(json_array_size(at(k->implementation, "vite.resolve.dedupe")), 2);
    assert_string_equal(str(k->implementation, "modules.2.module"), "./src/utils/format.js");
    assert_non_null(strstr(str(k->implementation, "webpack_alias"),
                           "'lodash': path.resolve('./node_modules/lodash')"));
    near(num(k->implementation, "webpack.optimization.splitChunks.cacheGroups.shared.minChunks"), 2,
         0);
    st_candidates_free(&c);
}

static void test_slow_component(void **state)
{
    fx *x = *state;
    st_candidates c;
    const st_candidate *k;
    dist(x, "frontend.component.render", L("component", "OrderTable", "host", "h1"), 0.002, 94,
         0.0165, 6);
    dist(x, "frontend.component.render", L("component", "Row", "host", "h1"), 0.002, 94, 0.0155, 6);
    c = run(x, "frontend.slow_component");
    assert_int_equal(c.n, 1);
    k = find(&c, "component=OrderTable");
    near(k->value, 0.0165, 0.01);
    near(num(k->evidence, "values.render_p95_s"), 0.0165, 0.01);
    near(num(k->evidence, "values.renders"), 100, 0);
    check_evidence(k, "frontend.component.render", 0.016, NULL);
    assert_string_equal(str(k->implementation, "code"), "export default React.memo(OrderTable);");
    near(k->traffic_share, 0.5, 1e-12);
    st_candidates_free(&c);
}

/* ---- realtime ---- */

static void test_update_rate(void **state)
{
    fx *x = *state;
    st_candidates c;
    const st_candidate *k;
    counter(x, "realtime.updates", L("channel", "prices", "host", "rt1"), 3030); /* 10.1/s */
    gauge(x, "realtime.subscriptions", L("channel", "prices", "host", "rt1"), 1);
    counter(x, "realtime.updates", L("channel", "chat", "host", "rt1"), 30000);
    gauge(x, "realtime.subscriptions", L("channel", "chat", "host", "rt1"), 5);
    gauge(x, "realtime.subscriptions", L("channel", "chat", "host", "rt2"), 5); /* 10/s each */
    c = run(x, "realtime.update_rate");
    assert_int_equal(c.n, 1);
    k = find(&c, "channel=prices");
    near(k->value, 10.1, 1e-12);
    near(num(k->evidence, "values.updates_per_s"), 10.1, 1e-12);
    near(num(k->evidence, "values.subscriptions"), 1, 0);
    check_evidence(k, "realtime.updates", 10, "rt1");
    near(num(k->implementation, "interval_ms"), 100, 0);
    assert_non_null(strstr(str(k->implementation, "code"), "}, 100);"));
    st_candidates_free(&c);
}

static void test_bandwidth(void **state)
{
    fx *x = *state;
    st_candidates c;
    const st_candidate *k;
    counter(x, "realtime.bytes", L("channel", "video", "host", "rt1"), (MIB + 1) * 300);
    counter(x, "realtime.updates", L("channel", "video", "host", "rt1"), 3000);
    counter(x, "realtime.bytes", L("channel", "text", "host", "rt1"), MIB * 300);
    c = run(x, "realtime.bandwidth");
    assert_int_equal(c.n, 1);
    k = find(&c, "channel=video");
    near(k->value, MIB + 1, 1e-12);
    near(num(k->evidence, "values.bytes_per_s"), MIB + 1, 1e-12);
    near(num(k->evidence, "values.bytes_per_update"), (MIB + 1) / 10, 1e-12);
    check_evidence(k, "realtime.bytes", MIB, "rt1");
    near(num(k->implementation, "perMessageDeflate.threshold"), 1024, 0);
    assert_non_null(strstr(str(k->implementation, "delta"), "RFC 6902"));
    st_candidates_free(&c);
}

/* A fleet past the API's answer limit (ST_QUERY_MAX_SERIES groups): the
 * engine's own questions still get whole answers, so the rule fires rather
 * than failing with "too large". */
static void test_bandwidth_at_fleet_size(void **state)
{
    fx *x = *state;
    st_candidates c;
    const st_candidate *k;
    char host[16];
    char ch[16];
    for (int h = 0; h < 300; h++) {
        snprintf(host, sizeof(host), "rt%d", h);
        for (int i = 0; i < 10; i++) {
            snprintf(ch, sizeof(ch), "c%d", i);
            counter(x, "realtime.bytes", L("channel", ch, "host", host), i == 3 ? 2 * MIB : 1000);
        }
        if (h % 50 == 49) {
            flush(x);
        }
    }
    c = run(x, "realtime.bandwidth");
    assert_int_equal(c.n, 1);
    k = find(&c, "channel=c3");
    near(k->value, 2 * MIB, 1e-6); /* 300 hosts x 2 MiB over the 300 s window */
    st_candidates_free(&c);
}

/* st_answer_find over a large answer (the hash index) agrees with a
 * linear search: found, absent, duplicates (the first wins) and values too
 * long to index. */
static void test_find_indexed(void **state)
{
    st_answer *ans = NULL;
    char longv[2000];
    char h[16];
    int64_t t = 0;
    (void)state;
    assert_int_equal(st_answer_new(&ans), ST_OK);
    memset(longv, 'x', sizeof(longv) - 1);
    longv[sizeof(longv) - 1] = '\0';
    for (int i = 0; i < 200; i++) {
        double v = i;
        json_t *l;
        snprintf(h, sizeof(h), "h%d", i % 100); /* each host twice: first wins */
        l = json_pack("{s:s,s:s}", "host", h, "fn", i < 100 ? "a" : "b");
        assert_int_equal(st_answer_add(ans, l, &t, &v, 1), ST_OK);
        json_decref(l);
    }
    {
        double v = 999;
        json_t *l = json_pack("{s:s,s:s}", "host", longv, "fn", "a");
        assert_int_equal(st_answer_add(ans, l, &t, &v, 1), ST_OK);
        json_decref(l);
    }
    for (int round = 0; round < 2; round++) { /* building the index, then using it */
        st_ans_row q = {.labels = json_pack("{s:s,s:s}", "host", "h42", "fn", "b")};
        st_ans_row absent = {.labels = json_pack("{s:s,s:s}", "host", "h420", "fn", "a")};
        st_ans_row lq = {.labels = json_pack("{s:s,s:s}", "host", longv, "fn", "a")};
        st_ans_row nofn = {.labels = json_pack("{s:s}", "host", "h42")};
        near(st_ans_value(st_answer_find(ans, &q, "host,fn")), 142, 0);
        near(st_ans_value(st_answer_find(ans, &q, "host")), 42, 0);
        assert_null(st_answer_find(ans, &absent, "host,fn"));
        near(st_ans_value(st_answer_find(ans, &lq, "host")), 999, 0);
        /* a missing label equals "": no row lacks fn */
        assert_null(st_answer_find(ans, &nofn, "host,fn"));
        near(st_rules_lookup(ans, &q, "fn,host"), 142, 0);
        json_decref(q.labels);
        json_decref(absent.labels);
        json_decref(lq.labels);
        json_decref(nofn.labels);
    }
    st_answer_unref(ans);
}

static void test_stability(void **state)
{
    fx *x = *state;
    st_candidates c;
    const st_candidate *k;
    counter(x, "net.probe.connects", L("target", "db", "result", "ok", "host", "h1"), 94);
    counter(x, "net.probe.connects", L("target", "db", "result", "fail", "host", "h1"), 6);
    counter(x, "net.probe.connects", L("target", "cache", "result", "ok", "host", "h1"), 95);
    counter(x, "net.probe.connects", L("target", "cache", "result", "fail", "host", "h1"), 5);
    counter(x, "net.probe.connects", L("target", "few", "result", "fail", "host", "h1"), 10);
    counter(x, "realtime.connections", L("channel", "prices", "result", "ok", "host", "rt1"), 940);
    counter(x, "realtime.connections", L("channel", "prices", "result", "closed", "host", "rt1"),
            60);
    counter(x, "tcp.retrans_segs", L("host", "h1"), 50);
    counter(x, "tcp.out_segs", L("host", "h1"), 1000);
    counter(x, "tcp.estab_resets", L("host", "h1"), 30);
    c = run(x, "realtime.stability");
    assert_int_equal(c.n, 2);
    k = find(&c, "target=db");
    near(k->value, 0.94, 1e-12);
    assert_true(k->below);
    assert_int_equal(k->severity, ST_SEV_HIGH);
    near(num(k->evidence, "values.connections"), 100, 0);
    near(num(k->evidence, "values.tcp.0.retrans_ratio"), 0.05, 1e-12);
    near(num(k->evidence, "values.tcp.0.estab_resets_per_s"), 0.1, 1e-12);
    check_evidence(k, "net.probe.connects", 0.95, "h1");
    near(num(k->implementation, "reconnect.max_ms"), 30000, 0);
    assert_string_equal(str(k->implementation, "reconnect.jitter"), "full");
    assert_non_null(strstr(str(k->implementation, "network"), "5.0%"));
    near(k->traffic_share, 100.0 / 210, 1e-12);
    k = find(&c, "channel=prices");
    near(k->value, 0.94, 1e-12);
    check_evidence(k, "realtime.connections", 0.95, "rt1");
    st_candidates_free(&c);
}

/* ---- infrastructure ---- */

static void cache(fx *x, const char *type, const char *route, const char *host, double hit,
                  double miss)
{
    const char *const *lh = route != NULL
                                ? L("cache", type, "result", "hit", "route", route, "host", host)
                                : L("cache", type, "result", "hit", "host", host);
    const char *const *lm = route != NULL
                                ? L("cache", type, "result", "miss", "route", route, "host", host)
                                : L("cache", type, "result", "miss", "host", host);
    counter(x, "cache.requests", lh, hit);
    counter(x, "cache.requests", lm, miss);
}

static void test_browser_cache(void **state)
{
    fx *x = *state;
    st_candidates c;
    const st_candidate *k;
    cache(x, "browser", "/a", "rum1", 40, 10); /* 0.80 */
    cache(x, "browser", "/b", "rum1", 39, 11); /* 0.78: the worst route */
    c = run(x, "infrastructure.browser_cache");
    assert_int_equal(c.n, 1);
    k = find(&c, "cache=browser");
    near(k->value, 0.79, 1e-12);
    assert_true(k->below);
    assert_int_equal(k->severity, ST_SEV_MEDIUM);
    near(num(k->evidence, "values.hit_ratio"), 0.79, 1e-12);
    near(num(k->evidence, "values.requests"), 100, 0);
    check_evidence(k, "cache.requests", 0.8, "rum1");
    assert_string_equal(str(k->implementation, "routes.0.route"), "/b");
    near(num(k->implementation, "routes.0.hit_ratio"), 0.78, 1e-12);
    near(num(k->implementation, "routes.0.traffic_share"), 0.5, 1e-12);
    assert_string_equal(str(k->implementation, "routes.1.route"), "/a");
    assert_non_null(strstr(str(k->implementation, "config"),
                           "Cache-Control: public, max-age=31536000, immutable"));
    assert_non_null(strstr(k->summary, "/b (78% hit, 50% of traffic)"));
    st_candidates_free(&c);
    /* At the threshold it stays quiet. */
    c = run_with(x, "infrastructure.browser_cache", "infrastructure.browser_cache", 0.79);
    assert_int_equal(c.n, 0);
    st_candidates_free(&c);
}

static void test_cdn_cache(void **state)
{
    fx *x = *state;
    st_candidates c;
    const st_candidate *k;
    cache(x, "varnish", NULL, "edge1", 89, 11); /* 0.89: past */
    cache(x, "nginx", NULL, "edge2", 90, 10);   /* 0.90: at */
    cache(x, "cdn", NULL, "edge3", 40, 60);     /* 0.40: far below */
    cache(x, "redis", NULL, "app1", 0, 100);    /* not a CDN */
    c = run(x, "infrastructure.cdn_cache");
    assert_int_equal(c.n, 2);
    k = find(&c, "cache=varnish");
    near(k->value, 0.89, 1e-12);
    assert_int_equal(k->severity, ST_SEV_MEDIUM);
    check_evidence(k, "cache.requests", 0.9, "edge1");
    assert_non_null(strstr(str(k->implementation, "config"), "set beresp.ttl = 10m;"));
    assert_non_null(strstr(str(k->implementation, "config"), "sub vcl_backend_response"));
    near(k->traffic_share, 100.0 / 300, 1e-12);
    k = find(&c, "cache=cdn");
    assert_int_equal(k->severity, ST_SEV_HIGH);
    st_candidates_free(&c);
    /* nginx gets its proxy_cache settings. */
    c = run_with(x, "infrastructure.cdn_cache", "infrastructure.cdn_cache", 0.95);
    k = find(&c, "cache=nginx");
    assert_string_equal(str(k->implementation, "config"),
                        "proxy_cache_valid 200 301 10m;\n"
                        "proxy_cache_key $scheme$host$uri$is_args$args;\n"
                        "proxy_ignore_headers Set-Cookie;");
    st_candidates_free(&c);
}

static void test_api_cache(void **state)
{
    fx *x = *state;
    st_candidates c;
    const st_candidate *k;
    cache(x, "redis", NULL, "app1", 49, 51);
    cache(x, "memcached", NULL, "app2", 50, 50);
    counter(x, "cache.evictions", L("cache", "redis", "host", "app1"), 30);
    gauge(x, "cache.memory.used", L("cache", "redis", "host", "app1"), 100 * MIB);
    c = run(x, "infrastructure.api_cache");
    assert_int_equal(c.n, 1);
    k = find(&c, "cache=redis");
    near(k->value, 0.49, 1e-12);
    near(num(k->evidence, "values.evictions_per_s"), 0.1, 1e-12);
    near(num(k->evidence, "values.memory_used_bytes"), 100 * MIB, 0);
    check_evidence(k, "cache.requests", 0.5, "app1");
    assert_string_equal(str(k->implementation, "pattern"), "cache-aside");
    near(num(k->implementation, "ttl_s"), 300, 0);
    assert_non_null(strstr(str(k->implementation, "config"), "'EX', 300"));
    assert_non_null(strstr(str(k->implementation, "memory"), "CONFIG SET maxmemory 209715200"));
    st_candidates_free(&c);
}

/* While a run shares its questions, one asked again, with another agg, or
 * without by after a fold by role answers as it would alone, as of the
 * first asking; once sharing ends, questions read the store again. */
static void test_shared_answers(void **state)
{
    fx *x = *state;
    const char *edge[] = {"role=edge"};
    const char *m = "http.server.requests";
    const char *d = "http.server.duration";
    int64_t w = 5 * 60 * 1000;
    st_answer *alone[4];
    st_answer *shared[4];
    st_answer *again;
    st_eng *e;
    counter(x, m, L("role", "edge", "route", "/a", "host", "e1"), 100);
    counter(x, m, L("role", "app", "route", "/b", "host", "a1"), 50);
    dist(x, d, L("role", "edge", "route", "/a", "host", "e1"), 0.1, 90, 0.9, 10);
    dist(x, d, L("role", "app", "route", "/b", "host", "a1"), 0.2, 50, 2.0, 50);
    flush(x);
    assert_int_equal(st_eng_new(x->st, NOW, &e), ST_OK);
    assert_int_equal(st_eng_query(e, m, "sum", "role,route", NULL, 0, w, &alone[0]), ST_OK);
    assert_int_equal(st_eng_query(e, m, "rate", NULL, edge, 1, w, &alone[1]), ST_OK);
    assert_int_equal(st_eng_query(e, d, "p99", "role,route", NULL, 0, w, &alone[2]), ST_OK);
    assert_int_equal(st_eng_query(e, d, "p50", NULL, NULL, 0, w, &alone[3]), ST_OK);
    st_eng_share_begin(e);
    assert_int_equal(st_eng_query(e, m, "sum", "role,route", NULL, 0, w, &shared[0]), ST_OK);
    assert_int_equal(st_eng_query(e, m, "rate", NULL, edge, 1, w, &shared[1]), ST_OK);
    assert_int_equal(st_eng_query(e, d, "count", "role,route", NULL, 0, w, &again), ST_OK);
    st_answer_unref(again);
    assert_int_equal(st_eng_query(e, d, "p99", "role,route", NULL, 0, w, &shared[2]), ST_OK);
    assert_int_equal(st_eng_query(e, d, "p50", NULL, NULL, 0, w, &shared[3]), ST_OK);
    for (int i = 0; i < 4; i++) {
        assert_true(st_answer_equal(alone[i], shared[i]));
    }
    counter(x, m, L("role", "edge", "route", "/a", "host", "e2"), 7);
    flush(x);
    assert_int_equal(st_eng_query(e, m, "sum", "role,route", NULL, 0, w, &again), ST_OK);
    assert_ptr_equal(again, shared[0]); /* the kept answer */
    st_answer_unref(again);
    st_eng_share_end(e);
    assert_int_equal(st_eng_query(e, m, "sum", "role,route", NULL, 0, w, &again), ST_OK);
    assert_false(st_answer_equal(again, alone[0]));
    st_answer_unref(again);
    for (int i = 0; i < 4; i++) {
        st_answer_unref(alone[i]);
        st_answer_unref(shared[i]);
    }
    st_eng_free(e);
}

/* From step to step: the answer of a window that ended before the clock
 * is kept while nothing is written into it, and asked again once a late
 * point lands in it; one of the window ending at the clock is not kept. */
static void test_closed_window_kept_across_steps(void **state)
{
    fx *x = *state;
    const char *m = "http.server.requests";
    const char *const *l = L("role", "edge", "route", "/a", "host", "e1");
    int64_t w = 5 * 60 * 1000;
    int64_t now = NOW;
    st_answer *closed[3];
    st_answer *open[2];
    st_eng *e;
    counter(x, m, l, 100); /* at MID: inside the closed window and the first open ones */
    flush(x);
    assert_int_equal(st_eng_new(x->st, now, &e), ST_OK);
    for (int step = 0; step < 3; step++) {
        st_eng_set_now(e, now + (step + 1) * 60000);
        st_eng_share_begin(e);
        /* the closed window: [NOW - w, NOW), asked as the cold-table rule does */
        st_eng_set_now(e, now);
        assert_int_equal(st_eng_query(e, m, "sum", "role,route", NULL, 0, w, &closed[step]), ST_OK);
        st_eng_set_now(e, now + (step + 1) * 60000);
        if (step < 2) {
            assert_int_equal(st_eng_query(e, m, "sum", "role,route", NULL, 0, w, &open[step]),
                             ST_OK);
        }
        st_eng_share_end(e);
        if (step == 1) {
            /* late: a point inside the closed window, another host */
            counter(x, m, L("role", "edge", "route", "/a", "host", "e9"), 5);
            flush(x);
        }
    }
    assert_ptr_equal(closed[1], closed[0]); /* kept across the step */
    assert_ptr_not_equal(open[1], open[0]);
    assert_ptr_not_equal(closed[2], closed[1]); /* written into: asked again */
    near(st_ans_value(&closed[0]->rows[0]), 100, 0);
    near(st_ans_value(&closed[2]->rows[0]), 105, 0);
    for (int i = 0; i < 3; i++) {
        st_answer_unref(closed[i]);
    }
    st_answer_unref(open[0]);
    st_answer_unref(open[1]);
    st_eng_free(e);
}

/* A question too large for one answer is asked host by host; within a run
 * those parts are answers other rules share, and the merged answer must
 * leave them as they were: asking twice gives the same fleet, and a
 * host's own question still gives that host only. */
static void test_per_host_fallback_keeps_shared_parts(void **state)
{
    fx *x = *state;
    const char *m = "http.server.requests";
    const char *h1[] = {"host=h1"};
    const char *hosts[] = {"h1", "h2", "h3"};
    int64_t w = 5 * 60 * 1000;
    st_answer *first;
    st_answer *second;
    st_answer *own;
    st_eng *e;
    for (int i = 0; i < 3; i++) {
        counter(x, m, L("role", "edge", "route", "/a", "host", hosts[i]), 10 + i);
        counter(x, m, L("role", "edge", "route", "/b", "host", hosts[i]), 20 + i);
    }
    flush(x);
    assert_int_equal(st_eng_new(x->st, NOW, &e), ST_OK);
    /* by host and route: 6 series, too many; the host list (3) fits */
    st_eng_set_max_series(e, 4);
    st_eng_share_begin(e);
    assert_int_equal(st_rules_query(e, m, "sum", "host,route", NULL, 0, w, 0, &first), ST_OK);
    assert_int_equal(first->n, 6);
    assert_int_equal(st_rules_query(e, m, "sum", "host,route", NULL, 0, w, 0, &second), ST_OK);
    assert_int_equal(second->n, 6);
    assert_true(st_answer_equal(first, second));
    assert_int_equal(st_rules_query(e, m, "sum", "host,route", h1, 1, w, 0, &own), ST_OK);
    assert_int_equal(own->n, 2);
    for (size_t i = 0; i < 2; i++) {
        assert_string_equal(st_ans_label(&own->rows[i], "host"), "h1");
    }
    st_answer_unref(first);
    st_answer_unref(second);
    st_answer_unref(own);
    st_eng_share_end(e);
    st_eng_free(e);
}

/* The sum of a walked answer's values (st_eng_query_steps_each). */
static int sum_values(void *arg, json_t *labels, const int64_t *t, const double *v, size_t n)
{
    double *sum = arg;
    (void)labels;
    (void)t;
    for (size_t i = 0; i < n; i++) {
        *sum += v[i];
    }
    return ST_OK;
}

static double walked_sum(st_eng *e, const char *m)
{
    double sum = 0;
    assert_int_equal(
        st_eng_query_steps_each(e, m, "sum", "host", NULL, 0, 5 * 60000, 60000, sum_values, &sum),
        ST_OK);
    return sum;
}

/* The next run at the same clock takes the last run's answers, unless a
 * commit since wrote a point of their metric before the clock; a run at
 * another clock asks again. */
static void test_answers_kept_for_the_next_run_at_one_clock(void **state)
{
    fx *x = *state;
    const char *m = "http.server.requests";
    const char *const *a = L("role", "edge", "route", "/a", "host", "e1");
    int64_t w = 5 * 60 * 1000;
    double late = 7;
    double after = 1000;
    st_answer *first;
    st_answer *again;
    st_eng *e;
    counter(x, m, a, 100);
    flush(x);
    assert_int_equal(st_eng_new(x->st, NOW, &e), ST_OK);
    st_eng_share_begin(e);
    assert_int_equal(st_eng_query(e, m, "sum", "role,route", NULL, 0, w, &first), ST_OK);
    near(walked_sum(e, m), 100, 0);
    st_eng_share_end(e);

    /* the same clock, nothing written: the same answer */
    st_eng_share_begin(e);
    assert_int_equal(st_eng_query(e, m, "sum", "role,route", NULL, 0, w, &again), ST_OK);
    assert_ptr_equal(again, first);
    st_answer_unref(again);
    st_eng_share_end(e);

    /* a point at the clock or later is outside every window: still kept */
    values(x, m, STRATA__V1__KIND__COUNTER, a, NOW, 10000, &after, 1);
    flush(x);
    st_eng_share_begin(e);
    assert_int_equal(st_eng_query(e, m, "sum", "role,route", NULL, 0, w, &again), ST_OK);
    assert_ptr_equal(again, first);
    st_answer_unref(again);
    near(walked_sum(e, m), 100, 0);
    st_eng_share_end(e);

    /* a late point inside the window: asked again, answers and walks */
    values(x, m, STRATA__V1__KIND__COUNTER, a, MID + 10000, 10000, &late, 1);
    flush(x);
    st_eng_share_begin(e);
    assert_int_equal(st_eng_query(e, m, "sum", "role,route", NULL, 0, w, &again), ST_OK);
    assert_ptr_not_equal(again, first);
    near(st_ans_value(&again->rows[0]), 107, 0);
    near(walked_sum(e, m), 107, 0);
    st_answer_unref(again);
    st_eng_share_end(e);

    /* a later clock: its window takes the point at NOW */
    st_eng_set_now(e, NOW + 60000);
    st_eng_share_begin(e);
    assert_int_equal(st_eng_query(e, m, "sum", "role,route", NULL, 0, w, &again), ST_OK);
    near(st_ans_value(&again->rows[0]), 1107, 0);
    near(walked_sum(e, m), 1107, 0);
    st_answer_unref(again);
    st_eng_share_end(e);

    /* a threshold changed (the engine's validation does so during a run):
     * no question changes, the answer is kept */
    st_answer_unref(first);
    st_eng_share_begin(e);
    assert_int_equal(st_eng_query(e, m, "sum", "role,route", NULL, 0, w, &first), ST_OK);
    st_eng_share_end(e);
    assert_int_equal(st_eng_set(e, "infrastructure.cdn_cache", 0.5), ST_OK);
    st_eng_share_begin(e);
    assert_int_equal(st_eng_query(e, m, "sum", "role,route", NULL, 0, w, &again), ST_OK);
    assert_ptr_equal(again, first);
    st_answer_unref(again);
    st_eng_share_end(e);

    /* the series limit changed: nothing kept is taken */
    st_eng_set_max_series(e, 1000);
    st_eng_share_begin(e);
    assert_int_equal(st_eng_query(e, m, "sum", "role,route", NULL, 0, w, &again), ST_OK);
    assert_ptr_not_equal(again, first);
    st_answer_unref(again);
    st_eng_share_end(e);
    st_answer_unref(first);
    st_eng_free(e);
}

/* A series added since, even with its first point past the clock, is a
 * group of a fresh answer (without points): a kept answer is not taken. */
static void test_kept_answer_dropped_for_a_new_series(void **state)
{
    fx *x = *state;
    const char *m = "http.server.requests";
    int64_t w = 5 * 60 * 1000;
    double after = 5;
    st_answer *kept;
    st_answer *again;
    st_answer *fresh;
    st_eng *e;
    counter(x, m, L("role", "edge", "route", "/a", "host", "e1"), 100);
    flush(x);
    assert_int_equal(st_eng_new(x->st, NOW, &e), ST_OK);
    st_eng_share_begin(e);
    assert_int_equal(st_eng_query(e, m, "sum", "host", NULL, 0, w, &kept), ST_OK);
    st_eng_share_end(e);
    values(x, m, STRATA__V1__KIND__COUNTER, L("role", "edge", "route", "/a", "host", "e2"), NOW,
           10000, &after, 1);
    flush(x);
    st_eng_share_begin(e);
    assert_int_equal(st_eng_query(e, m, "sum", "host", NULL, 0, w, &again), ST_OK);
    st_eng_share_end(e);
    assert_ptr_not_equal(again, kept);
    assert_int_equal(st_eng_query(e, m, "sum", "host", NULL, 0, w, &fresh), ST_OK);
    /* the same groups with the same points */
    assert_true(st_answer_equal(again, fresh));
    assert_int_equal(again->n, 2);
    st_answer_unref(kept);
    st_answer_unref(again);
    st_answer_unref(fresh);
    st_eng_free(e);
}

/* Every check on an empty store finds nothing and fails nothing. */
static void test_empty_store(void **state)
{
    fx *x = *state;
    for (const st_rule *r = st_rules; r->id != NULL; r++) {
        st_candidates c = run(x, r->id);
        assert_int_equal(c.n, 0);
        st_candidates_free(&c);
    }
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_sql_where_columns),
        cmocka_unit_test(test_sql_long_and_deep),
        cmocka_unit_test(test_sql_tables_and_rewrites),
        cmocka_unit_test(test_sql_view_and_select),
        cmocka_unit_test(test_text_helpers),
        cmocka_unit_test(test_leak_detector),
        T(test_answers_kept_for_the_next_run_at_one_clock),
        T(test_kept_answer_dropped_for_a_new_series),
        T(test_seq_scan_index),
        T(test_many_statements),
        T(test_inefficient_query),
        T(test_wide_join),
        T(test_cold_table_last_read),
        T(test_cold_table_counters),
        T(test_n_plus_one),
        T(test_large_result),
        T(test_repeated_work),
        T(test_large_objects),
        T(test_memory_leak),
        T(test_memory_leak_shared_and_host_by_host),
        T(test_bundle_size),
        T(test_unused_code),
        T(test_duplicate_code),
        T(test_slow_component),
        T(test_update_rate),
        T(test_bandwidth),
        T(test_bandwidth_at_fleet_size),
        T(test_find_indexed),
        T(test_stability),
        T(test_browser_cache),
        T(test_cdn_cache),
        T(test_api_cache),
        T(test_shared_answers),
        T(test_closed_window_kept_across_steps),
        T(test_per_host_fallback_keeps_shared_parts),
        T(test_empty_store),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
