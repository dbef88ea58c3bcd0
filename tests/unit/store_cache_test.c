/* The writer's series cache survives transactions that created no series
 * (maintenance aborts one whenever a slice had nothing to do) and is
 * forgotten when an aborted transaction had created some. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "err.h"
#include "frame.h"
#include "store.h"
#include "store_internal.h"
#include "timeutil.h"
#include "tmpdir.h"
#include "testframe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char dir[64];

static int setup(void **state)
{
    (void)state;
    return st_test_mkdtemp(dir, sizeof(dir), "cache") != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return st_test_rmtree(dir);
}

/* Frame seq of one agent with one gauge per name, one point each. */
static st_frame *frame(uint64_t seq, const char *const *names, size_t n)
{
    static const uint8_t id[16] = {7};
    int64_t now = st_time_wall_ms();
    st_frame *f = st_test_frame_new(id, seq, "h", STRATA__V1__ROLE__ROLE_UNSPECIFIED, n);
    f->n_series = n;
    for (size_t i = 0; i < n; i++) {
        Strata__V1__Series *s = calloc(1, sizeof(*s));
        strata__v1__series__init(s);
        s->name = strdup(names[i]);
        s->unit = strdup("");
        s->kind = STRATA__V1__KIND__GAUGE;
        s->start_unix_ms = now - now % 1000 - 1000;
        s->interval_ms = 1000;
        s->ivalues = malloc(sizeof(int64_t));
        s->ivalues[0] = 42;
        s->n_ivalues = 1;
        f->series[i] = s;
    }
    return f;
}

static void apply(st_store_txn *t, st_frame *f)
{
    bool dup;
    assert_int_equal(st_store_apply(t, f, st_time_wall_ms(), &dup), ST_OK);
    assert_false(dup);
    st_frame_free(f);
}

static void test_abort_keeps_the_cache_unless_it_created_series(void **state)
{
    struct st_store_opts o = {.dir = dir, .no_sync = true, .no_rollups = true};
    static const char *const two[] = {"m.a", "m.b"};
    static const char *const three[] = {"m.a", "m.b", "m.c"};
    st_store *st;
    st_store_txn *t;
    size_t cached;
    (void)state;
    assert_int_equal(st_store_open(&o, &st), ST_OK);
    assert_int_equal(st_store_begin(st, &t), ST_OK);
    apply(t, frame(1, two, 2));
    assert_int_equal(st_store_commit(t), ST_OK);
    cached = st->cache_count;
    assert_true(cached >= 2);

    /* Nothing created: an aborted transaction leaves the cache. */
    assert_int_equal(st_store_begin(st, &t), ST_OK);
    st_store_abort(t);
    assert_int_equal(st->cache_count, cached);
    assert_int_equal(st_store_begin(st, &t), ST_OK);
    apply(t, frame(2, two, 2)); /* known series only */
    st_store_abort(t);
    assert_int_equal(st->cache_count, cached);

    /* m.c created, then aborted: its id must not survive in the cache. */
    assert_int_equal(st_store_begin(st, &t), ST_OK);
    apply(t, frame(2, three, 3));
    st_store_abort(t);
    assert_int_equal(st->cache_count, 0);

    /* And applying it again creates it for real. */
    assert_int_equal(st_store_begin(st, &t), ST_OK);
    apply(t, frame(2, three, 3));
    assert_int_equal(st_store_commit(t), ST_OK);
    assert_true(st->cache_count >= 3);
    st_store_close(st);
}

/* The rollup watermarks are known as soon as the store opens, before any
 * write: readers choose rollups by them. */
static void test_watermarks_load_at_open(void **state)
{
    struct st_store_opts o = {.dir = dir, .no_sync = true};
    static const char *const one[] = {"m.a"};
    struct st_store_stats before;
    struct st_store_stats after;
    st_store *st;
    st_store_txn *t;
    bool more = true;
    (void)state;
    assert_int_equal(st_store_open(&o, &st), ST_OK);
    assert_int_equal(st_store_begin(st, &t), ST_OK);
    apply(t, frame(1, one, 1));
    assert_int_equal(st_store_commit(t), ST_OK);
    /* Ten minutes on, the minute of that point is closed and rolled up. */
    for (int i = 0; i < 100 && more; i++) {
        assert_int_equal(st_store_maintain(st, st_time_wall_ms() + 600000, 1000, &more), ST_OK);
    }
    assert_int_equal(st_store_stats(st, &before), ST_OK);
    assert_true(before.wm_1m > 0);
    st_store_close(st);
    assert_int_equal(st_store_open(&o, &st), ST_OK);
    assert_int_equal(st_store_stats(st, &after), ST_OK);
    assert_int_equal(after.wm_1m, before.wm_1m);
    assert_int_equal(after.wm_1h, before.wm_1h);
    st_store_close(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_abort_keeps_the_cache_unless_it_created_series, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_watermarks_load_at_open, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
