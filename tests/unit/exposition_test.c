/* The fleet families of /metrics: the aggregates come from the query
 * engine, and with a cache they are computed at most once per its ttl
 * (scrapes in between get the same text, even when new data arrived). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "exposition.h"

#include "buf.h"
#include "err.h"
#include "frame.h"
#include "store.h"
#include "timeutil.h"
#include "tmpdir.h"
#include "testframe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIN 60000LL

static char dir[64];
static st_store *st;

static int setup(void **state)
{
    struct st_store_opts o = {.dir = dir, .no_sync = true};
    (void)state;
    assert_non_null(st_test_mkdtemp(dir, sizeof(dir), "expose"));
    return st_store_open(&o, &st);
}

static int teardown(void **state)
{
    (void)state;
    st_store_close(st);
    return st_test_rmtree(dir);
}

/* One frame from agent a: a minute of the counter ending before now. */
static void counter(int a, const char *name, int64_t n)
{
    int64_t now = st_time_wall_ms();
    uint8_t id[16] = {(uint8_t)((a + 1) & 0xff), (uint8_t)((a + 1) >> 8)};
    Strata__V1__Series *s = calloc(1, sizeof(*s));
    st_store_txn *t;
    st_frame *f;
    char host[16];
    bool dup;
    snprintf(host, sizeof(host), "app%d", a);
    f = st_test_frame_new(id, 1, host, STRATA__V1__ROLE__APP, 1);
    strata__v1__series__init(s);
    s->name = strdup(name);
    s->unit = strdup("");
    s->kind = STRATA__V1__KIND__COUNTER;
    s->start_unix_ms = now - now % MIN - 2 * MIN;
    s->interval_ms = MIN;
    s->ivalues = malloc(sizeof(int64_t));
    s->ivalues[0] = n;
    s->n_ivalues = 1;
    f->series[0] = s;
    f->n_series = 1;
    assert_int_equal(st_store_begin(st, &t), ST_OK);
    assert_int_equal(st_store_apply(t, f, now, &dup), ST_OK);
    assert_int_equal(st_store_commit(t), ST_OK);
    st_frame_free(f);
}

static void requests(int a, int64_t n)
{
    counter(a, "http.server.requests", n);
}

/* The requests-per-second line of the app role; -1 when absent. */
static double app_rate(const struct st_api_deps *d)
{
    st_buf b;
    const char *text;
    const char *line;
    double v = -1;
    st_buf_init(&b, 1u << 20);
    st_expose_fleet(d, &b);
    assert_int_equal(st_buf_cstr(&b, &text), ST_OK);
    line = strstr(text, "strata_fleet_http_requests_per_second{role=\"app\"} ");
    if (line != NULL) {
        v = strtod(strchr(line, ' ') + 1, NULL);
    }
    st_buf_free(&b);
    return v;
}

static void test_aggregates_without_a_cache_follow_the_data(void **state)
{
    struct st_api_deps d = {.store = st};
    (void)state;
    requests(0, 600);
    assert_float_equal(app_rate(&d), 2.0, 1e-9); /* 600 over the 5-minute window */
    requests(1, 300);
    assert_float_equal(app_rate(&d), 3.0, 1e-9);
}

static void test_cache_reuses_the_aggregates_for_its_ttl(void **state)
{
    struct st_api_deps d = {.store = st};
    struct st_api_deps uncached = {.store = st};
    (void)state;
    assert_int_equal(st_expose_cache_new(3600 * 1000, &d.fleet_cache), ST_OK);
    requests(0, 600);
    assert_float_equal(app_rate(&d), 2.0, 1e-9);
    requests(1, 300);
    assert_float_equal(app_rate(&d), 2.0, 1e-9); /* within the ttl: computed once */
    assert_float_equal(app_rate(&uncached), 3.0, 1e-9);
    st_expose_cache_free(d.fleet_cache);
    /* A short ttl: the first scrape past it computes again. */
    assert_int_equal(st_expose_cache_new(200, &d.fleet_cache), ST_OK);
    assert_float_equal(app_rate(&d), 3.0, 1e-9);
    requests(2, 300);
    st_time_sleep_ms(250);
    assert_float_equal(app_rate(&d), 4.0, 1e-9);
    st_expose_cache_free(d.fleet_cache);
}

/* A family by host has a row per host past the API's 2,000-series answer
 * limit: none is dropped from a scrape. */
static void test_rows_by_host_past_the_api_limit(void **state)
{
    struct st_api_deps d = {.store = st};
    enum { HOSTS = 2500 };
    st_buf b;
    const char *text;
    const char *p;
    int rows = 0;
    (void)state;
    for (int a = 0; a < HOSTS; a++) {
        counter(a, "db.statement.time", 60);
    }
    st_buf_init(&b, 16u << 20);
    st_expose_fleet(&d, &b);
    assert_int_equal(st_buf_cstr(&b, &text), ST_OK);
    for (p = text; (p = strstr(p, "\nstrata_fleet_db_statement_seconds_per_second{")) != NULL;
         p++) {
        rows++;
    }
    assert_int_equal(rows, HOSTS);
    assert_null(strstr(text, "left out"));
    st_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_aggregates_without_a_cache_follow_the_data, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cache_reuses_the_aggregates_for_its_ttl, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_rows_by_host_past_the_api_limit, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
