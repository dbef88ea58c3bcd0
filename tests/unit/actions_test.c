/* Tests of the agent's opt-in actions: the CREATE INDEX validator on
 * accepted and refused statements, UTF-8-safe cutting of result text, the
 * configuration errors, and the runner with real processes: exec scripts
 * in a temporary directory (stdin, exit status, timeouts, the output cap),
 * refusals, and one run per action id, also across a runner restart on the
 * same data_dir. Servers (PostgreSQL, redis) are exercised by
 * tests/integration/actions_test.sh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "actions/actions.h"
#include "actions/runner.h"
#include "config.h"
#include "err.h"
#include "log.h"
#include "timeutil.h"
#include "util.h"
#include "tmpdir.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define OK STRATA__V1__ACTION_STATUS__ACTION_OK
#define FAILED STRATA__V1__ACTION_STATUS__ACTION_FAILED
#define REFUSED STRATA__V1__ACTION_STATUS__ACTION_REFUSED
#define TIMEOUT STRATA__V1__ACTION_STATUS__ACTION_TIMEOUT

/* ---- the CREATE INDEX validator ---- */

static void accepts(const char *sql, const char *table, const char *name)
{
    st_index_stmt st;
    char why[256] = "";
    int rv = st_index_sql_check(sql, &st, why, sizeof(why));
    if (rv != ST_OK) {
        fail_msg("refused: %s\n  because: %s", sql, why);
    }
    if (table != NULL) {
        assert_string_equal(st.table, table);
    }
    if (name != NULL) {
        assert_string_equal(st.name, name);
    }
}

static void refuses(const char *sql, const char *because)
{
    char why[256] = "";
    if (st_index_sql_check(sql, NULL, why, sizeof(why)) != ST_EINVAL) {
        fail_msg("accepted: %s", sql);
    }
    assert_true(why[0] != '\0');
    if (because != NULL && strstr(why, because) == NULL) {
        fail_msg("%s\n  refused because '%s', expected '%s'", sql, why, because);
    }
}

static void test_validator_accepts(void **state)
{
    (void)state;
    accepts("CREATE INDEX CONCURRENTLY ON orders (customer_id);", "orders", "");
    accepts("CREATE INDEX CONCURRENTLY ON orders (customer_id)", "orders", "");
    accepts("create index concurrently on orders (customer_id, created_at);", "orders", "");
    accepts("CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_cust_idx ON orders (customer_id);",
            "orders", "orders_cust_idx");
    accepts("CREATE INDEX CONCURRENTLY ix ON public.orders USING btree (customer_id DESC NULLS "
            "LAST);",
            "public.orders", "ix");
    accepts("CREATE INDEX CONCURRENTLY ON orders (customer_id) INCLUDE (id, total);", "orders", "");
    accepts("CREATE INDEX CONCURRENTLY ON orders (customer_id) WHERE status = 'open';", "orders",
            "");
    accepts("CREATE INDEX CONCURRENTLY ON ONLY \"Orders\" (\"Customer Id\");", "\"Orders\"", "");
    accepts("CREATE INDEX CONCURRENTLY ON orders (lower(email));", NULL, NULL);
    /* a semicolon and a doubled quote inside a string are data */
    accepts("CREATE INDEX CONCURRENTLY ON orders USING gin (tags) "
            "WHERE (deleted_at IS NULL AND note <> 'it''s; ok');",
            NULL, NULL);
    accepts("  CREATE\n INDEX\tCONCURRENTLY ON orders (a) ;  \n", "orders", "");
    accepts("CREATE INDEX CONCURRENTLY \"we\"\"ird\" ON s.\"T\" ((a + b) * 2);", "s.\"T\"",
            "\"we\"\"ird\"");
    accepts("CREATE INDEX CONCURRENTLY ON orders (created_at) WHERE created_at > "
            "'2024-01-01'::date;",
            NULL, NULL);
    accepts("CREATE INDEX CONCURRENTLY ON db.s.t (a text_pattern_ops, b COLLATE \"C\");", "db.s.t",
            "");
    accepts("CREATE INDEX CONCURRENTLY ON \"commandes\" (\"clé\") WHERE \"état\" = 'reçu';", NULL,
            NULL);
}

static void test_validator_refuses(void **state)
{
    char big[ST_INDEX_MAX_SQL + 64];
    (void)state;
    refuses("CREATE INDEX CONCURRENTLY ON t (a); DROP TABLE t", "only one statement");
    refuses("CREATE INDEX CONCURRENTLY ON t (a); DROP TABLE t;", "only one statement");
    refuses("CREATE INDEX CONCURRENTLY ON t (a);;", "only one statement");
    refuses("CREATE INDEX CONCURRENTLY ON t (a)\n; SELECT pg_sleep(10)", "only one statement");
    refuses("BEGIN; CREATE INDEX CONCURRENTLY ON t (a); COMMIT;", "expected CREATE");
    refuses("CREATE INDEX ON t (a);", "CONCURRENTLY");
    refuses("DROP TABLE t;", "expected CREATE");
    refuses("ALTER TABLE t ADD COLUMN x int;", "expected CREATE");
    refuses("CREATE TABLE t (a int);", "expected INDEX");
    refuses("CREATE UNIQUE INDEX CONCURRENTLY ON t (a);", "UNIQUE");
    refuses("CREATE INDEX CONCURRENTLY ON t (a) -- why not", "comment");
    refuses("CREATE INDEX CONCURRENTLY ON t (a); -- trailing comment", "comment");
    refuses("CREATE INDEX CONCURRENTLY ON t (a) /* c */;", "comment");
    refuses("CREATE INDEX CONCURRENTLY ON t (a) WHERE b = 1 +--1", "comment");
    refuses("CREATE INDEX CONCURRENTLY ON t (a) WHERE b = $$x$$;", "$");
    refuses("CREATE INDEX CONCURRENTLY ON t (a) WHERE b = $tag$x$tag$;", "$");
    refuses("CREATE INDEX CONCURRENTLY ON t (a) WHERE b = $1;", "$");
    refuses("CREATE INDEX CONCURRENTLY ON t (a$b);", "$");
    refuses("CREATE INDEX CONCURRENTLY ON t (a) WHERE b = E'\\'; DROP TABLE t; --';", "prefixed");
    refuses("CREATE INDEX CONCURRENTLY ON t (a) WHERE b = 'x\\';", "backslash");
    refuses("CREATE INDEX CONCURRENTLY ON t (a) WHERE b = U&'x';", "prefixed");
    refuses("CREATE INDEX CONCURRENTLY ON t (a) WHERE a IN (SELECT 1);", "SELECT");
    refuses("CREATE INDEX CONCURRENTLY ON t ((a)) WHERE a = (DELETE FROM t RETURNING 1);",
            "DELETE");
    refuses("CREATE INDEX CONCURRENTLY ON t (a) WITH (fillfactor = 70);", "WITH");
    refuses("CREATE INDEX CONCURRENTLY ON t (a) TABLESPACE fast;", "only one statement");
    refuses("CREATE INDEX CONCURRENTLY ON t ();", "no index keys");
    refuses("CREATE INDEX CONCURRENTLY ON t (a", "unbalanced");
    refuses("CREATE INDEX CONCURRENTLY ON t (a)) WHERE (b", "only one statement");
    refuses("CREATE INDEX CONCURRENTLY ON t (a) WHERE (b = 1", "unbalanced");
    refuses("CREATE INDEX CONCURRENTLY ON t (a) WHERE b = 1)", "unbalanced");
    refuses("CREATE INDEX CONCURRENTLY IF NOT EXISTS ON t (a);", "needs an index name");
    refuses("CREATE INDEX CONCURRENTLY ON t USING evil (a);", "index method");
    refuses("CREATE INDEX CONCURRENTLY ix ON t (a) INCLUDE (lower(b));", "INCLUDE");
    refuses("CREATE INDEX CONCURRENTLY ON t (a) WHERE;", "WHERE without");
    refuses("CREATE INDEX CONCURRENTLY ON t (a) WHERE b = 'unterminated;", "unterminated");
    refuses("CREATE INDEX CONCURRENTLY ON t (\xff);", "UTF-8");
    refuses("CREATE INDEX CONCURRENTLY ON t (a)\x01", "unexpected character");
    refuses("", "empty");
    refuses("CREATE INDEX CONCURRENTLY ON \"\" (a);", "empty quoted");
    memset(big, ' ', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    memcpy(big, "CREATE INDEX CONCURRENTLY ON t (a)", 34);
    refuses(big, "longer than");
}

/* ---- UTF-8-safe text ---- */

static void test_text_is_cut_on_character_boundaries(void **state)
{
    char in[2100];
    char out[ST_ACTION_MAX_TEXT + 1];
    size_t n;
    (void)state;
    /* 1 + 2k bytes: the last 'é' that would cross 1024 bytes is left out whole */
    in[0] = 'a';
    for (size_t i = 1; i + 1 < 2001; i += 2) {
        in[i] = (char)0xC3;
        in[i + 1] = (char)0xA9;
    }
    n = st_action_text(in, 2001, out, sizeof(out));
    assert_int_equal(n, 1023);
    assert_true(st_utf8_valid(out, n));
    /* a 4-byte character at the limit */
    memset(in, 'x', 1022);
    memcpy(in + 1022, "\xF0\x9F\x98\x80", 4);
    n = st_action_text(in, 1026, out, sizeof(out));
    assert_int_equal(n, 1022);
    /* invalid bytes, NUL, a surrogate, an overlong and a cut sequence become U+FFFD */
    n = st_action_text("a\xff"
                       "b\0c\xED\xA0\x80"
                       "d\xC0\xAF"
                       "e\xE2\x82",
                       14, out, sizeof(out));
    assert_true(st_utf8_valid(out, n));
    assert_non_null(strstr(out, "a\xEF\xBF\xBD"
                                "b\xEF\xBF\xBD"
                                "c"));
    assert_non_null(strstr(out, "d\xEF\xBF\xBD\xEF\xBF\xBD"
                                "e\xEF\xBF\xBD\xEF\xBF\xBD"));
    assert_null(memchr(out, '\0', n));
    /* a tiny buffer */
    assert_int_equal(st_action_text("\xC3\xA9", 2, out, 2), 0);
    assert_string_equal(out, "");
}

/* ---- fixture: a runner on a temporary data_dir ---- */

typedef struct fx {
    char dir[64];
    char yaml[8192];
    st_cfg_doc *doc;
    st_runner *r;
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_non_null(st_test_mkdtemp(f->dir, sizeof(f->dir), "actions"));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    st_runner_free(f->r);
    st_cfg_doc_free(f->doc);
    st_test_rmtree(f->dir);
    free(f);
    return 0;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_int_equal(fputs(text, fp) >= 0, 1);
    assert_int_equal(fclose(fp), 0);
    assert_int_equal(chmod(path, mode), 0);
}

/* A script in the temporary directory; its path in out. */
static void script(fx *f, const char *name, const char *body, char *out, size_t cap)
{
    char text[4096];
    snprintf(out, cap, "%s/%s.sh", f->dir, name);
    snprintf(text, sizeof(text), "#!/bin/sh\n%s\n", body);
    write_file(out, text, 0755);
}

/* Parses `actions:` from yaml (the block under it) into a runner. */
static int load(fx *f, const char *actions_yaml, st_cfg_error *err)
{
    int rv;
    snprintf(f->yaml, sizeof(f->yaml), "actions:\n%s", actions_yaml);
    st_cfg_doc_free(f->doc);
    f->doc = NULL;
    assert_int_equal(st_cfg_load_string("agent.yaml", f->yaml, strlen(f->yaml), &f->doc, err),
                     ST_OK);
    rv = st_runner_new(f->doc, st_cfg_get(st_cfg_root(f->doc), "actions"), f->dir, &f->r, err);
    return rv;
}

static void start(fx *f, const char *actions_yaml)
{
    st_cfg_error err;
    if (load(f, actions_yaml, &err) != ST_OK) {
        fail_msg("config: %s", err.msg);
    }
    assert_int_equal(st_runner_start(f->r), ST_OK);
}

static void restart(fx *f)
{
    char yaml[8192];
    snprintf(yaml, sizeof(yaml), "%s", f->yaml + strlen("actions:\n"));
    st_runner_free(f->r);
    f->r = NULL;
    start(f, yaml);
}

/* An action with up to two parameters. */
typedef struct act {
    Strata__V1__Action a;
    Strata__V1__Label l[2];
    Strata__V1__Label *lp[2];
} act;

static void make(act *x, const char *id, const char *type, const char *k1, const char *v1,
                 const char *k2, const char *v2)
{
    strata__v1__action__init(&x->a);
    x->a.id = (char *)id;
    x->a.type = (char *)type;
    x->a.finding_id = (char *)"finding-1";
    x->a.finding_json = (char *)"{\"id\":\"finding-1\",\"rule\":\"cdn\"}";
    for (int i = 0; i < 2; i++) {
        strata__v1__label__init(&x->l[i]);
        x->lp[i] = &x->l[i];
    }
    x->l[0].key = (char *)k1;
    x->l[0].value = (char *)v1;
    x->l[1].key = (char *)k2;
    x->l[1].value = (char *)v2;
    x->a.params = x->lp;
    x->a.n_params = k1 == NULL ? 0 : k2 == NULL ? 1 : 2;
}

static void send(fx *f, const char *id, const char *type, const char *k1, const char *v1,
                 const char *k2, const char *v2)
{
    act x;
    make(&x, id, type, k1, v1, k2, v2);
    st_runner_enqueue(f->r, &x.a);
}

/* Results collected from frames. */
typedef struct got {
    Strata__V1__ActionResult *r[64];
    size_t n;
} got;

static void got_free(got *g)
{
    for (size_t i = 0; i < g->n; i++) {
        st_action_result_free(g->r[i]);
    }
    g->n = 0;
}

/* Takes results as the scheduler would until n arrived or ms passed. */
static void collect(fx *f, got *g, size_t n, int64_t ms)
{
    int64_t deadline = st_time_mono_ms() + ms;
    while (g->n < n && st_time_mono_ms() < deadline) {
        Strata__V1__Frame fr = STRATA__V1__FRAME__INIT;
        st_runner_take(f->r, &fr);
        for (size_t i = 0; i < fr.n_action_results && g->n < ST_ARRAY_LEN(g->r); i++) {
            g->r[g->n++] = st_action_result_dup(fr.action_results[i]);
        }
        st_runner_settle(f->r, &fr, true);
        if (g->n < n) {
            st_time_sleep_ms(10);
        }
    }
}

static const Strata__V1__ActionResult *one(fx *f, got *g, int64_t ms)
{
    collect(f, g, 1, ms);
    assert_int_equal(g->n, 1);
    assert_true(st_utf8_valid(g->r[0]->error, strlen(g->r[0]->error)));
    assert_true(st_utf8_valid(g->r[0]->output, strlen(g->r[0]->output)));
    assert_true(strlen(g->r[0]->error) <= ST_ACTION_MAX_TEXT);
    assert_true(strlen(g->r[0]->output) <= ST_ACTION_MAX_TEXT);
    return g->r[0];
}

static size_t lines_of(const char *path)
{
    char *text = NULL;
    size_t n = 0;
    if (st_file_read(path, 64u << 20, &text, NULL) != ST_OK) {
        return 0;
    }
    for (const char *p = text; *p != '\0'; p++) {
        n += *p == '\n';
    }
    free(text);
    return n;
}

/* ---- exec ---- */

static void test_exec_stdin_output_and_exit_status(void **state)
{
    fx *f = *state;
    char path[128], yaml[1024], in[128], *text = NULL;
    got g = {0};
    const Strata__V1__ActionResult *r;
    snprintf(in, sizeof(in), "%s/stdin.txt", f->dir);
    script(f, "report",
           "cat > \"$1\"\necho \"id=$STRATA_ACTION_ID finding=$STRATA_FINDING_ID arg2=$2\"\n"
           "echo oops >&2\nexit 3",
           path, sizeof(path));
    snprintf(yaml, sizeof(yaml),
             "  exec:\n    scripts:\n      report: {path: %s, args: [%s, \"two words\"]}\n", path,
             in);
    start(f, yaml);
    send(f, "a1", "exec", "script", "report", NULL, NULL);
    r = one(f, &g, 10000);
    assert_string_equal(r->action_id, "a1");
    assert_string_equal(r->type, "exec");
    assert_string_equal(r->finding_id, "finding-1");
    assert_int_equal(r->status, FAILED);
    assert_int_equal(r->exit_status, 3);
    assert_string_equal(r->error, "script report exited with status 3");
    assert_string_equal(r->output, "id=a1 finding=finding-1 arg2=two words\noops\n");
    /* the finding arrived on stdin, whole */
    assert_int_equal(st_file_read(in, 4096, &text, NULL), ST_OK);
    assert_string_equal(text, "{\"id\":\"finding-1\",\"rule\":\"cdn\"}");
    free(text);
    got_free(&g);
}

static void test_exec_ok_and_no_shell(void **state)
{
    fx *f = *state;
    char path[128], yaml[1024], marker[128];
    got g = {0};
    const Strata__V1__ActionResult *r;
    /* the argument holds shell syntax: without a shell it is one plain word */
    snprintf(marker, sizeof(marker), "%s/pwned", f->dir);
    script(f, "echo", "printf '%s|' \"$@\"", path, sizeof(path));
    snprintf(yaml, sizeof(yaml),
             "  exec:\n    scripts:\n      echo: {path: %s, args: [\"$(touch %s)\", '*']}\n", path,
             marker);
    start(f, yaml);
    send(f, "a2", "exec", "script", "echo", NULL, NULL);
    r = one(f, &g, 10000);
    assert_int_equal(r->status, OK);
    assert_int_equal(r->exit_status, 0);
    assert_string_equal(r->error, "");
    assert_non_null(strstr(r->output, "$(touch "));
    assert_non_null(strstr(r->output, "|*|"));
    assert_int_not_equal(access(marker, F_OK), 0);
    assert_true(r->duration_ms < 10000);
    got_free(&g);
}

/* A descriptor the agent holds without close-on-exec (as a library may
 * leave one) does not reach the script; neither does its environment. */
static void test_exec_gets_nothing_else(void **state)
{
    fx *f = *state;
    char path[128], yaml[1024];
    got g = {0};
    int fd = open("/dev/null", O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(dup2(fd, 50), 50);
    close(fd);
    setenv("STRATA_TEST_SECRET", "hunter2", 1);
    script(f, "env", "[ -e /proc/$$/fd/50 ] && echo fd50\nenv | sort", path, sizeof(path));
    snprintf(yaml, sizeof(yaml), "  exec:\n    scripts:\n      env: {path: %s}\n", path);
    start(f, yaml);
    send(f, "e1", "exec", "script", "env", NULL, NULL);
    assert_int_equal(one(f, &g, 10000)->status, OK);
    assert_null(strstr(g.r[0]->output, "fd50"));
    assert_null(strstr(g.r[0]->output, "hunter2"));
    assert_non_null(strstr(g.r[0]->output, "STRATA_ACTION_ID=e1\n"));
    assert_non_null(strstr(g.r[0]->output, "STRATA_FINDING_ID=finding-1\n"));
    assert_non_null(strstr(g.r[0]->output, "STRATA_SCRIPT=env\n"));
    assert_non_null(strstr(g.r[0]->output, "PATH=/usr/local/sbin:"));
    got_free(&g);
    close(50);
    unsetenv("STRATA_TEST_SECRET");
}

static void test_exec_timeout_kills(void **state)
{
    fx *f = *state;
    char slow[128], stubborn[128], yaml[1024];
    got g = {0};
    const Strata__V1__ActionResult *r;
    int64_t t0;
    script(f, "slow", "echo started\nsleep 30\necho never", slow, sizeof(slow));
    /* ignores SIGTERM (and so does its sleep): SIGKILL 2 s later */
    script(f, "stubborn", "trap '' TERM\nsleep 30", stubborn, sizeof(stubborn));
    snprintf(yaml, sizeof(yaml),
             "  exec:\n    scripts:\n      slow: {path: %s, timeout: 300ms}\n"
             "      stubborn: {path: %s, timeout: 200ms}\n",
             slow, stubborn);
    start(f, yaml);
    t0 = st_time_mono_ms();
    send(f, "t1", "exec", "script", "slow", NULL, NULL);
    r = one(f, &g, 10000);
    assert_int_equal(r->status, TIMEOUT);
    assert_int_equal(r->exit_status, 128 + 15);
    assert_string_equal(r->error, "script slow timed out after 300 ms; stopped it with SIGTERM");
    assert_string_equal(r->output, "started\n");
    assert_true(st_time_mono_ms() - t0 < 3000); /* its sleep died too: no 30 s wait */
    assert_true(r->duration_ms >= 300);
    got_free(&g);
    t0 = st_time_mono_ms();
    send(f, "t2", "exec", "script", "stubborn", NULL, NULL);
    r = one(f, &g, 10000);
    assert_int_equal(r->status, TIMEOUT);
    assert_int_equal(r->exit_status, 128 + 9);
    assert_non_null(strstr(r->error, "SIGKILL"));
    assert_true(st_time_mono_ms() - t0 >= 2000);
    assert_true(st_time_mono_ms() - t0 < 6000);
    got_free(&g);
}

static void test_exec_output_cap(void **state)
{
    fx *f = *state;
    char big[128], utf[128], yaml[1024];
    got g = {0};
    const Strata__V1__ActionResult *r;
    /* 1 MB of output: kept up to max_output, the rest drained (it exits 0) */
    script(f, "big", "head -c 1000000 /dev/zero | tr '\\000' a\necho tail >&2", big, sizeof(big));
    /* 1 + 2 * 700 bytes of UTF-8: the result keeps 1023, never half an 'é' */
    script(f, "utf",
           "printf a\ni=0\nwhile [ $i -lt 700 ]; do printf '\\303\\251'; i=$((i+1)); done", utf,
           sizeof(utf));
    snprintf(yaml, sizeof(yaml),
             "  exec:\n    scripts:\n      big: {path: %s, max_output: 100}\n"
             "      utf: {path: %s}\n",
             big, utf);
    start(f, yaml);
    send(f, "o1", "exec", "script", "big", NULL, NULL);
    r = one(f, &g, 20000);
    assert_int_equal(r->status, OK);
    assert_int_equal(strlen(r->output), 100);
    assert_int_equal(strspn(r->output, "a"), 100);
    got_free(&g);
    send(f, "o2", "exec", "script", "utf", NULL, NULL);
    r = one(f, &g, 20000);
    assert_int_equal(r->status, OK);
    assert_int_equal(strlen(r->output), 1023);
    assert_int_equal(r->output[0], 'a');
    assert_memory_equal(r->output + 1021, "\xC3\xA9", 2);
    got_free(&g);
}

static void test_exec_refusals(void **state)
{
    fx *f = *state;
    char path[128], yaml[1024], marker[128];
    got g = {0};
    const Strata__V1__ActionResult *r;
    snprintf(marker, sizeof(marker), "%s/ran", f->dir);
    script(f, "mark", "touch \"$1\"", path, sizeof(path));
    snprintf(yaml, sizeof(yaml), "  exec:\n    scripts:\n      mark: {path: %s, args: [%s]}\n",
             path, marker);
    start(f, yaml);
    send(f, "r1", "exec", "script", "rm-rf", NULL, NULL);
    r = one(f, &g, 10000);
    assert_int_equal(r->status, REFUSED);
    assert_string_equal(r->error, "script 'rm-rf' is not configured on this agent");
    got_free(&g);
    send(f, "r2", "exec", "script", "mark", "args", "--force");
    r = one(f, &g, 10000);
    assert_int_equal(r->status, REFUSED);
    assert_string_equal(r->error, "parameter 'args' is not accepted");
    got_free(&g);
    send(f, "r3", "exec", NULL, NULL, NULL, NULL);
    r = one(f, &g, 10000);
    assert_int_equal(r->status, REFUSED);
    assert_string_equal(r->error, "parameter 'script' is missing");
    got_free(&g);
    /* a path is not a script name */
    send(f, "r4", "exec", "script", path, NULL, NULL);
    r = one(f, &g, 10000);
    assert_int_equal(r->status, REFUSED);
    got_free(&g);
    assert_int_not_equal(access(marker, F_OK), 0);
}

/* ---- types not configured ---- */

static void test_type_not_configured_is_refused(void **state)
{
    fx *f = *state;
    char path[128], yaml[1024];
    got g = {0};
    script(f, "noop", "true", path, sizeof(path));
    snprintf(yaml, sizeof(yaml), "  exec:\n    scripts:\n      noop: {path: %s}\n", path);
    start(f, yaml);
    send(f, "n1", "postgres.create_index", "sql", "CREATE INDEX CONCURRENTLY ON t (a);", NULL,
         NULL);
    send(f, "n2", "redis.config_set", "parameter", "maxmemory", "value", "1gb");
    send(f, "n3", "shell", "command", "rm -rf /", NULL, NULL);
    collect(f, &g, 3, 5000);
    assert_int_equal(g.n, 3);
    assert_string_equal(g.r[0]->action_id, "n1");
    assert_int_equal(g.r[0]->status, REFUSED);
    assert_string_equal(
        g.r[0]->error, "action postgres.create_index is not allowed by this agent's configuration");
    assert_string_equal(g.r[1]->error,
                        "action redis.config_set is not allowed by this agent's configuration");
    assert_string_equal(g.r[2]->error, "action shell is not allowed by this agent's configuration");
    assert_string_equal(g.r[2]->type, "shell");
    got_free(&g);
}

static void test_nothing_configured_refuses_everything(void **state)
{
    fx *f = *state;
    got g = {0};
    st_cfg_error err;
    char path[128];
    assert_int_equal(load(f, "  {}\n", &err), ST_OK);
    assert_int_equal(st_runner_start(f->r), ST_OK);
    script(f, "x", "true", path, sizeof(path));
    send(f, "e1", "exec", "script", "x", NULL, NULL);
    assert_int_equal(one(f, &g, 5000)->status, REFUSED);
    got_free(&g);
    /* no thread, no file: nothing was configured */
    snprintf(path, sizeof(path), "%s/actions.done", f->dir);
    assert_int_not_equal(access(path, F_OK), 0);
}

static void test_server_actions_refuse_before_connecting(void **state)
{
    fx *f = *state;
    got g = {0};
    const Strata__V1__ActionResult *r;
    /* no server listens on these: a refusal must not even try */
    start(f, "  postgres.create_index: {dsn: \"host=127.0.0.1 port=1 connect_timeout=1\"}\n"
             "  redis.config_set:\n    address: 127.0.0.1:1\n"
             "    allow: {maxmemory-policy: [allkeys-lru, allkeys-lfu], maxmemory: any}\n");
    send(f, "p1", "postgres.create_index", "sql",
         "CREATE INDEX CONCURRENTLY ON t (a); DROP TABLE t", "table", "t");
    r = one(f, &g, 5000);
    assert_int_equal(r->status, REFUSED);
    assert_string_equal(r->error, "not a single CREATE INDEX CONCURRENTLY statement: only one "
                                  "statement is accepted: unexpected 'DROP' at byte 36");
    got_free(&g);
    send(f, "p2", "redis.config_set", "parameter", "appendonly", "value", "no");
    r = one(f, &g, 5000);
    assert_int_equal(r->status, REFUSED);
    assert_string_equal(r->error,
                        "parameter 'appendonly' is not allowed by this agent's configuration");
    got_free(&g);
    send(f, "p3", "redis.config_set", "parameter", "maxmemory-policy", "value", "noeviction");
    r = one(f, &g, 5000);
    assert_int_equal(r->status, REFUSED);
    assert_string_equal(r->error, "value 'noeviction' for maxmemory-policy is not allowed by this "
                                  "agent's configuration");
    got_free(&g);
    /* allowed, but nothing listens: FAILED, with the address */
    send(f, "p4", "redis.config_set", "parameter", "maxmemory", "value", "100mb");
    r = one(f, &g, 10000);
    assert_int_equal(r->status, FAILED);
    assert_non_null(strstr(r->error, "cannot connect to 127.0.0.1:1"));
    got_free(&g);
    send(f, "p5", "postgres.create_index", "sql", "CREATE INDEX CONCURRENTLY ON t (a);", NULL,
         NULL);
    r = one(f, &g, 10000);
    assert_int_equal(r->status, FAILED);
    assert_non_null(strstr(r->error, "cannot connect to PostgreSQL at 127.0.0.1 port 1"));
    got_free(&g);
}

/* ---- one run per id ---- */

static void test_duplicate_id_runs_once(void **state)
{
    fx *f = *state;
    char path[128], yaml[1024], count[128], done[128], *text = NULL;
    got g = {0};
    const Strata__V1__ActionResult *r;
    snprintf(count, sizeof(count), "%s/count", f->dir);
    snprintf(done, sizeof(done), "%s/actions.done", f->dir);
    script(f, "count", "echo x >> \"$1\"\nsleep 0.3\necho ran", path, sizeof(path));
    snprintf(yaml, sizeof(yaml), "  exec:\n    scripts:\n      count: {path: %s, args: [%s]}\n",
             path, count);
    start(f, yaml);
    /* sent again while it waits and while it runs, as a collector resending */
    send(f, "d1", "exec", "script", "count", NULL, NULL);
    send(f, "d1", "exec", "script", "count", NULL, NULL);
    st_time_sleep_ms(100);
    send(f, "d1", "exec", "script", "count", NULL, NULL);
    collect(f, &g, 2, 3000);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.r[0]->status, OK);
    assert_string_equal(g.r[0]->output, "ran\n");
    got_free(&g);
    /* after it ran: the recorded result again, not a second run */
    send(f, "d1", "exec", "script", "count", NULL, NULL);
    r = one(f, &g, 3000);
    assert_int_equal(r->status, OK);
    assert_string_equal(r->output, "ran\n");
    got_free(&g);
    /* a new runner on the same data_dir (an agent restart) */
    restart(f);
    send(f, "d1", "exec", "script", "count", NULL, NULL);
    r = one(f, &g, 3000);
    assert_string_equal(r->action_id, "d1");
    assert_int_equal(r->status, OK);
    assert_string_equal(r->output, "ran\n");
    assert_string_equal(r->finding_id, "finding-1");
    got_free(&g);
    st_time_sleep_ms(400);
    assert_int_equal(st_file_read(count, 4096, &text, NULL), ST_OK);
    assert_string_equal(text, "x\n");
    free(text);
    assert_int_equal(lines_of(done), 1); /* rewritten at start: one line per id */
}

static void test_interrupted_action_is_not_run_again(void **state)
{
    fx *f = *state;
    char path[128], yaml[1024], done[128], marker[128];
    got g = {0};
    const Strata__V1__ActionResult *r;
    snprintf(done, sizeof(done), "%s/actions.done", f->dir);
    snprintf(marker, sizeof(marker), "%s/ran", f->dir);
    /* the agent died while i1 ran: only its start is on disk (and a torn line) */
    write_file(done,
               "{\"id\":\"i1\",\"type\":\"exec\",\"finding_id\":\"f9\",\"started_unix_ms\":1}\n"
               "{\"id\":\"i0\",\"type\":\"exec\",\"finding_id\":\"f8\",\"status\":\"ok\","
               "\"exit_status\":0,\"duration_ms\":5,\"error\":\"\",\"output\":\"fine\"}\n"
               "{\"id\":\"torn",
               0600);
    script(f, "mark", "touch \"$1\"", path, sizeof(path));
    snprintf(yaml, sizeof(yaml), "  exec:\n    scripts:\n      mark: {path: %s, args: [%s]}\n",
             path, marker);
    start(f, yaml);
    /* reported at once, before any resend */
    r = one(f, &g, 3000);
    assert_string_equal(r->action_id, "i1");
    assert_string_equal(r->finding_id, "f9");
    assert_int_equal(r->status, FAILED);
    assert_string_equal(r->error, "the agent stopped while this action ran; it is not run again");
    got_free(&g);
    send(f, "i1", "exec", "script", "mark", NULL, NULL);
    send(f, "i0", "exec", "script", "mark", NULL, NULL);
    collect(f, &g, 2, 3000);
    assert_int_equal(g.n, 2);
    assert_int_equal(g.r[0]->status, FAILED);
    assert_int_equal(g.r[1]->status, OK);
    assert_string_equal(g.r[1]->output, "fine");
    assert_int_equal(g.r[1]->duration_ms, 5);
    got_free(&g);
    assert_int_not_equal(access(marker, F_OK), 0);
    assert_int_equal(lines_of(done), 2);
}

/* actions.done keeps the last ST_RUNNER_DONE_MAX ids. */
static void test_done_is_bounded(void **state)
{
    fx *f = *state;
    char done[128], id[32];
    got g = {0};
    const size_t total = ST_RUNNER_DONE_MAX + 5;
    char *text = NULL;
    snprintf(done, sizeof(done), "%s/actions.done", f->dir);
    /* refused by the validator: recorded like any run, and quick */
    start(f, "  postgres.create_index: {dsn: \"host=127.0.0.1 port=1\"}\n");
    for (size_t i = 0; i < total; i++) {
        snprintf(id, sizeof(id), "b%zu", i);
        send(f, id, "postgres.create_index", "sql", "DROP TABLE t", NULL, NULL);
        if (i % 32 == 31 || i + 1 == total) {
            collect(f, &g, i % 32 + 1, 10000);
            assert_int_equal(g.n, i % 32 + 1);
            got_free(&g);
        }
    }
    assert_int_equal(lines_of(done), 2 * total);
    restart(f);
    assert_int_equal(lines_of(done), ST_RUNNER_DONE_MAX);
    assert_int_equal(st_file_read(done, 64u << 20, &text, NULL), ST_OK);
    assert_null(strstr(text, "\"id\":\"b4\""));
    assert_non_null(strstr(text, "\"id\":\"b5\""));
    assert_non_null(strstr(text, "\"id\":\"b1004\""));
    free(text);
}

static void test_results_wait_when_a_frame_is_not_spooled(void **state)
{
    fx *f = *state;
    Strata__V1__Frame fr = STRATA__V1__FRAME__INIT;
    got g = {0};
    assert_int_equal(load(f, "  {}\n", &(st_cfg_error){{0}}), ST_OK);
    send(f, "w1", "exec", NULL, NULL, NULL, NULL);
    send(f, "w2", "exec", NULL, NULL, NULL, NULL);
    assert_int_equal(st_runner_take(f->r, &fr), 2);
    st_runner_settle(f->r, &fr, false); /* the spool refused the frame */
    assert_null(fr.action_results);
    assert_int_equal(fr.n_action_results, 0);
    collect(f, &g, 2, 1000);
    assert_int_equal(g.n, 2);
    assert_string_equal(g.r[0]->action_id, "w1");
    assert_string_equal(g.r[1]->action_id, "w2");
    got_free(&g);
    /* an id that is empty or too long cannot be reported: dropped */
    send(f, "", "exec", NULL, NULL, NULL, NULL);
    collect(f, &g, 1, 100);
    assert_int_equal(g.n, 0);
    st_runner_settle(NULL, &fr, true);
}

/* ---- configuration errors name file, line and key ---- */

static void config_fails(fx *f, const char *yaml, const char *msg)
{
    st_cfg_error err;
    memset(&err, 0, sizeof(err));
    assert_int_equal(load(f, yaml, &err), ST_ECONFIG);
    if (strstr(err.msg, msg) == NULL) {
        fail_msg("error '%s', expected '%s'", err.msg, msg);
    }
    assert_null(f->r);
}

static void test_config_errors(void **state)
{
    fx *f = *state;
    char path[128], yaml[1024];
    script(f, "ok", "true", path, sizeof(path));
    config_fails(f, "  shell: {}\n", "agent.yaml:2: key 'shell': no such action");
    config_fails(f, "  postgres.create_index: {dsn: x, lock_timout: 5s}\n",
                 "agent.yaml:2: key 'lock_timout': unknown key");
    config_fails(f, "  postgres.create_index:\n    statement_timeout: 100ms\n",
                 "agent.yaml:3: key 'statement_timeout': must be between 1s and 24h");
    config_fails(f, "  redis.config_set:\n    address: 127.0.0.1:6379\n", "key 'allow': a mapping");
    config_fails(f, "  redis.config_set:\n    allow:\n      maxmemory: some\n",
                 "agent.yaml:4: key 'maxmemory': want any or a list");
    config_fails(f, "  redis.config_set:\n    allow:\n      dir: any\n",
                 "agent.yaml:4: key 'dir': may not be allowed");
    config_fails(f, "  exec:\n    scripts:\n      x: {path: relative.sh}\n",
                 "agent.yaml:4: key 'path': script x needs an absolute path");
    config_fails(f, "  exec:\n    scripts:\n      x: {path: /nonexistent/script}\n",
                 "is not an executable file");
    snprintf(yaml, sizeof(yaml), "  exec:\n    scripts:\n      'a b': {path: %s}\n", path);
    config_fails(f, yaml, "key 'a b': script names are");
    snprintf(yaml, sizeof(yaml), "  exec:\n    scripts:\n      x: {path: %s, shell: true}\n", path);
    config_fails(f, yaml, "agent.yaml:4: key 'shell': unknown key");
    snprintf(yaml, sizeof(yaml), "  exec:\n    scripts:\n      x: {path: %s, max_output: 2MiB}\n",
             path);
    config_fails(f, yaml, "key 'max_output': must be between");
    config_fails(f, "  - exec\n", "key 'actions': a mapping");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validator_accepts),
        cmocka_unit_test(test_validator_refuses),
        cmocka_unit_test(test_text_is_cut_on_character_boundaries),
        cmocka_unit_test_setup_teardown(test_exec_stdin_output_and_exit_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_ok_and_no_shell, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_gets_nothing_else, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_timeout_kills, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_output_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_type_not_configured_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nothing_configured_refuses_everything, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_server_actions_refuse_before_connecting, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_id_runs_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interrupted_action_is_not_run_again, setup, teardown),
        cmocka_unit_test_setup_teardown(test_done_is_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_results_wait_when_a_frame_is_not_spooled, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_config_errors, setup, teardown),
    };
    st_log_set_level(ST_LOG_WARN); /* one line per action at info is a lot here */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
