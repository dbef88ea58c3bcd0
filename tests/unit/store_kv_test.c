/* The engine's key-value records: a batch is one transaction, all or
 * nothing, within its named bounds, and it survives reopening the store. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "err.h"
#include "store.h"
#include "tmpdir.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char dir[64];

static int setup(void **state)
{
    (void)state;
    return st_test_mkdtemp(dir, sizeof(dir), "kv") != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return st_test_rmtree(dir);
}

static st_store *open_store(void)
{
    struct st_store_opts o = {.dir = dir};
    st_store *st = NULL;
    assert_int_equal(st_store_open(&o, &st), ST_OK);
    return st;
}

/* The value under key as a string, or NULL. */
static char *get(st_store *st, const char *key)
{
    char *v = NULL;
    size_t n = 0;
    return st_store_kv_get(st, key, &v, &n) == ST_OK ? v : NULL;
}

static void expect(st_store *st, const char *key, const char *want)
{
    char *v = get(st, key);
    if (want == NULL) {
        assert_null(v);
    } else {
        assert_non_null(v);
        assert_string_equal(v, want);
    }
    free(v);
}

static void test_batch_puts_and_deletes_in_one_go(void **state)
{
    st_store *st = open_store();
    (void)state;
    assert_int_equal(st_store_kv_put(st, "f:old", "x", 1), ST_OK);
    st_store_kv items[] = {
        {"f:a", "alpha", 5, false}, {"f:b", "beta", 4, false}, {"f:old", NULL, 0, true},
        {"f:never", NULL, 0, true}, /* deleting what is not there is fine */
        {"f:a", "again", 5, false}, /* later items win */
    };
    assert_int_equal(st_store_kv_write(st, items, 5), ST_OK);
    st_store_close(st);
    st = open_store();
    expect(st, "f:a", "again");
    expect(st, "f:b", "beta");
    expect(st, "f:old", NULL);
    st_store_close(st);
}

static void test_bad_batches_write_nothing(void **state)
{
    st_store *st = open_store();
    char longkey[ST_STORE_MAX_KEY + 2];
    st_store_kv *many = calloc(ST_STORE_KV_BATCH_MAX + 1, sizeof(*many));
    char *big = malloc(ST_STORE_KV_BATCH_BYTES / 2 + 1);
    (void)state;
    assert_non_null(many);
    assert_non_null(big);
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    st_store_kv bad_key[] = {{"f:first", "1", 1, false}, {longkey, "2", 1, false}};
    assert_int_equal(st_store_kv_write(st, bad_key, 2), ST_EINVAL);
    st_store_kv empty_key[] = {{"f:first", "1", 1, false}, {"", "2", 1, false}};
    assert_int_equal(st_store_kv_write(st, empty_key, 2), ST_EINVAL);
    expect(st, "f:first", NULL);

    for (size_t i = 0; i <= ST_STORE_KV_BATCH_MAX; i++) {
        many[i] = (st_store_kv){"f:many", "v", 1, false};
    }
    assert_int_equal(st_store_kv_write(st, many, ST_STORE_KV_BATCH_MAX + 1), ST_ETOOBIG);
    assert_int_equal(st_store_kv_write(st, many, ST_STORE_KV_BATCH_MAX), ST_OK);
    expect(st, "f:many", "v");

    memset(big, 'b', ST_STORE_KV_BATCH_BYTES / 2 + 1);
    st_store_kv too_big[] = {{"f:b1", big, ST_STORE_KV_BATCH_BYTES / 2 + 1, false},
                             {"f:b2", big, ST_STORE_KV_BATCH_BYTES / 2, false}};
    assert_int_equal(st_store_kv_write(st, too_big, 2), ST_ETOOBIG);
    expect(st, "f:b1", NULL);
    free(big);
    free(many);
    st_store_close(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_batch_puts_and_deletes_in_one_go, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_batches_write_nothing, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
