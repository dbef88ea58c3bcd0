/* Unit tests for the cache samplers (redis, memcached, varnish): their reply
 * parsers on good, malformed, incomplete and oversize input, folded into a
 * Frame and checked series by series; then each sampler whole, against
 * small scripted servers on loopback and scripts standing in for
 * varnishstat (reconnects, timeouts, output caps, errors, config errors). */
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
#include "samplers/samplers.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* The parsers and their limits, by the short names the tests use. */
#include "samplers/cache_parse.h"
#include "tmpdir.h"

#define REDIS_MAX_REPLY ST_REDIS_MAX_REPLY
#define MEMCACHED_MAX_REPLY ST_MEMCACHED_MAX_REPLY
#define VARNISH_MAX_OUTPUT ST_VARNISH_MAX_OUTPUT

#define INTERVAL 1000

/* ---- fold fixture ---- */

typedef struct fixture {
    char dir[64];
    st_fold *fold;
    Strata__V1__Frame *frame;
    st_cfg_doc *doc;
    const st_sampler_def *def;
    void *ctx;
    int64_t t_ms;
} fixture;

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    assert_non_null(st_test_mkdtemp(fx->dir, sizeof(fx->dir), "cache"));
    assert_int_equal(st_fold_new(&fx->fold), ST_OK);
    /* As --once does: a first total counts from zero, so it shows as-is. */
    st_fold_totals_from_zero(fx->fold, true);
    fx->t_ms = 1000000;
    *state = fx;
    return 0;
}

static void free_frame(fixture *fx)
{
    if (fx->frame != NULL) {
        strata__v1__frame__free_unpacked(fx->frame, NULL); /* the fold allocates with malloc */
        fx->frame = NULL;
    }
}

static int teardown(void **state)
{
    fixture *fx = *state;
    if (fx->def != NULL) {
        fx->def->fini(fx->ctx);
    }
    st_cfg_doc_free(fx->doc);
    free_frame(fx);
    st_fold_free(fx->fold);
    st_test_rmtree(fx->dir);
    free(fx);
    return 0;
}

static st_emit *begin(fixture *fx)
{
    st_emit *e = st_fold_begin(fx->fold, fx->t_ms, INTERVAL);
    assert_non_null(e);
    return e;
}

/* Moves everything folded so far into fx->frame. */
static void take(fixture *fx)
{
    free_frame(fx);
    fx->frame = malloc(sizeof(*fx->frame));
    assert_non_null(fx->frame);
    strata__v1__frame__init(fx->frame);
    assert_int_equal(st_fold_take(fx->fold, INT64_MAX, fx->frame), ST_OK);
}

static const char *label_of(const Strata__V1__Series *s, const char *key)
{
    for (size_t i = 0; i < s->n_labels; i++) {
        if (strcmp(s->labels[i]->key, key) == 0) {
            return s->labels[i]->value;
        }
    }
    return NULL;
}

/* The first Series with this name and exactly these labels (k, v, ...,
 * NULL); the fold writes one entry per run of back-to-back points, so a
 * series with a gap has several (total() adds them up). */
static const Strata__V1__Series *find(fixture *fx, const char *name, ...)
{
    const Strata__V1__Series *hit = NULL;
    for (size_t i = 0; i < fx->frame->n_series; i++) {
        const Strata__V1__Series *s = fx->frame->series[i];
        size_t n = 0;
        bool ok = strcmp(s->name, name) == 0;
        va_list ap;
        va_start(ap, name);
        for (const char *k = va_arg(ap, const char *); ok && k != NULL;
             k = va_arg(ap, const char *)) {
            const char *v = va_arg(ap, const char *);
            const char *have = label_of(s, k);
            ok = have != NULL && strcmp(have, v) == 0;
            n++;
        }
        va_end(ap);
        if (ok && n == s->n_labels && hit == NULL) {
            hit = s;
        }
    }
    return hit;
}

static bool same_labels(const Strata__V1__Series *a, const Strata__V1__Series *b)
{
    if (a->n_labels != b->n_labels) {
        return false;
    }
    for (size_t i = 0; i < a->n_labels; i++) {
        const char *v = label_of(b, a->labels[i]->key);
        if (v == NULL || strcmp(v, a->labels[i]->value) != 0) {
            return false;
        }
    }
    return true;
}

/* The sum of every point of the series that ref names, over all its
 * entries in the frame; for a gauge, its last value. */
static double total(fixture *fx, const Strata__V1__Series *ref)
{
    double sum = 0;
    for (size_t k = 0; k < fx->frame->n_series; k++) {
        const Strata__V1__Series *s = fx->frame->series[k];
        if (strcmp(s->name, ref->name) != 0 || !same_labels(s, ref)) {
            continue;
        }
        for (size_t i = 0; i < st_series_npoints(s); i++) {
            double v = st_series_value(s, i);
            sum = s->kind == STRATA__V1__KIND__GAUGE ? v : sum + v;
        }
    }
    return sum;
}

static void expect(fixture *fx, const Strata__V1__Series *s, Strata__V1__Kind kind,
                   const char *unit, double want)
{
    double got;
    if (s == NULL) {
        fail_msg("series missing (want %.17g)", want);
    }
    got = total(fx, s);
    assert_int_equal(s->kind, kind);
    assert_int_equal(s->layer, STRATA__V1__LAYER__INFRASTRUCTURE);
    assert_string_equal(s->unit, unit);
    if (fabs(got - want) > 1e-9 * fmax(1.0, fabs(want))) {
        fail_msg("%s: %.17g, want %.17g", s->name, got, want);
    }
}

#define COUNTER STRATA__V1__KIND__COUNTER
#define GAUGE STRATA__V1__KIND__GAUGE

/* ---- redis INFO ---- */

/* A Redis 7.0 INFO reply, shortened, with its CRLF line ends. */
static const char redis_info[] =
    "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\nos:Linux 6.1.0 x86_64\r\n"
    "executable:/usr/bin/redis-server\r\n\r\n"
    "# Clients\r\nconnected_clients:3\r\ncluster_connections:0\r\nmaxclients:10000\r\n\r\n"
    "# Memory\r\nused_memory:916968\r\nused_memory_human:895.48K\r\n"
    "mem_fragmentation_ratio:12.51\r\n\r\n"
    "# Stats\r\ntotal_connections_received:7\r\nrejected_connections:2\r\nexpired_keys:0\r\n"
    "evicted_keys:41\r\nkeyspace_hits:30\r\nkeyspace_misses:12\r\n\r\n"
    "# Keyspace\r\ndb0:keys=10,expires=0,avg_ttl=0\r\n";

static void test_redis_info_good(void **state)
{
    fixture *fx = *state;
    assert_int_equal(st_redis_info_emit(begin(fx), redis_info, strlen(redis_info)), ST_OK);
    take(fx);
    expect(fx, find(fx, "cache.requests", "cache", "redis", "result", "hit", NULL), COUNTER, "",
           30);
    expect(fx, find(fx, "cache.requests", "cache", "redis", "result", "miss", NULL), COUNTER, "",
           12);
    expect(fx, find(fx, "cache.evictions", "cache", "redis", NULL), COUNTER, "", 41);
    expect(fx, find(fx, "cache.memory.used", "cache", "redis", NULL), GAUGE, "B", 916968);
    expect(fx, find(fx, "redis.clients.connected", NULL), GAUGE, "", 3);
    expect(fx, find(fx, "redis.connections.rejected", NULL), COUNTER, "", 2);
    assert_null(find(fx, "redis.malformed", NULL));
    assert_int_equal(fx->frame->n_series, 6);
}

/* Totals become deltas from the second run on; a total that went down (a
 * restarted server) counts from zero. */
static void test_redis_info_deltas(void **state)
{
    fixture *fx = *state;
    static const char a[] = "keyspace_hits:100\nkeyspace_misses:10\n";
    static const char b[] = "keyspace_hits:130\nkeyspace_misses:4\n";
    assert_int_equal(st_redis_info_emit(begin(fx), a, strlen(a)), ST_OK);
    fx->t_ms += INTERVAL;
    assert_int_equal(st_redis_info_emit(begin(fx), b, strlen(b)), ST_OK);
    take(fx);
    expect(fx, find(fx, "cache.requests", "cache", "redis", "result", "hit", NULL), COUNTER, "",
           130);
    expect(fx, find(fx, "cache.requests", "cache", "redis", "result", "miss", NULL), COUNTER, "",
           14);
}

static void test_redis_info_malformed(void **state)
{
    fixture *fx = *state;
    char text[8192];
    char longline[5000];
    int n;
    memset(longline, 'x', sizeof(longline) - 1);
    longline[sizeof(longline) - 1] = '\0';
    n = snprintf(text, sizeof(text),
                 "# Stats\r\n"
                 "garbage without a colon\r\n"                      /* 1 */
                 ":value without a key\r\n"                         /* 2 */
                 "keyspace_hits:12x\r\n"                            /* 3: trailing junk */
                 "used_memory:-5\r\n"                               /* 4: negative */
                 "evicted_keys:\r\n"                                /* 5: empty */
                 "connected_clients: 4\r\n"                         /* 6: space */
                 "rejected_connections:99999999999999999999999\r\n" /* 7: overflow */
                 "%s:1\r\n"                                         /* 8: overlong line */
                 "keyspace_misses:7\r\n"
                 "some_new_field:whatever\r\n", /* unknown: fine */
                 longline);
    assert_true(n > 0 && (size_t)n < sizeof(text));
    assert_int_equal(st_redis_info_emit(begin(fx), text, (size_t)n), ST_OK);
    take(fx);
    expect(fx, find(fx, "redis.malformed", NULL), COUNTER, "", 8);
    expect(fx, find(fx, "cache.requests", "cache", "redis", "result", "miss", NULL), COUNTER, "",
           7);
    assert_null(find(fx, "cache.requests", "cache", "redis", "result", "hit", NULL));
    assert_null(find(fx, "cache.memory.used", "cache", "redis", NULL));
    assert_null(find(fx, "redis.clients.connected", NULL));
    assert_int_equal(fx->frame->n_series, 2);
}

/* A NUL inside the reply ends nothing: lengths, not C strings, rule. */
static void test_redis_info_nul(void **state)
{
    fixture *fx = *state;
    static const char text[] = "keyspace_hits:5\r\nun\0known:1\r\nused_memory:12\0 34\r\n"
                               "keyspace_misses:6\r\n";
    assert_int_equal(st_redis_info_emit(begin(fx), text, sizeof(text) - 1), ST_OK);
    take(fx);
    expect(fx, find(fx, "cache.requests", "cache", "redis", "result", "hit", NULL), COUNTER, "", 5);
    expect(fx, find(fx, "cache.requests", "cache", "redis", "result", "miss", NULL), COUNTER, "",
           6);
    expect(fx, find(fx, "redis.malformed", NULL), COUNTER, "", 1);
}

static void test_redis_info_missing(void **state)
{
    fixture *fx = *state;
    static const char some[] = "# Memory\nused_memory:1024\n"; /* LF only, last line unended */
    static const char none[] = "# Server\r\nredis_version:7.0.15\r\n";
    assert_int_equal(st_redis_info_emit(begin(fx), some, strlen(some)), ST_OK);
    take(fx);
    assert_int_equal(fx->frame->n_series, 1);
    expect(fx, find(fx, "cache.memory.used", "cache", "redis", NULL), GAUGE, "B", 1024);

    /* Nothing we know: an error, and one malformed reply. */
    assert_int_equal(st_redis_info_emit(begin(fx), none, strlen(none)), ST_EPARSE);
    assert_int_equal(st_redis_info_emit(begin(fx), "", 0), ST_EPARSE);
    take(fx);
    expect(fx, find(fx, "redis.malformed", NULL), COUNTER, "", 2);
    assert_int_equal(fx->frame->n_series, 1);
}

static void test_redis_info_oversize(void **state)
{
    fixture *fx = *state;
    char *big = malloc(REDIS_MAX_REPLY + 1);
    static const char head[] = "keyspace_hits:1\r\n";
    assert_non_null(big);
    memset(big, '\n', REDIS_MAX_REPLY + 1);
    memcpy(big, head, sizeof(head) - 1);
    assert_int_equal(st_redis_info_emit(begin(fx), big, REDIS_MAX_REPLY + 1), ST_ETOOBIG);
    /* At the limit it is read (blank lines are no error). */
    assert_int_equal(st_redis_info_emit(begin(fx), big, REDIS_MAX_REPLY), ST_OK);
    take(fx);
    expect(fx, find(fx, "cache.requests", "cache", "redis", "result", "hit", NULL), COUNTER, "", 1);
    assert_int_equal(fx->frame->n_series, 1);
    free(big);
}

/* ---- memcached stats ---- */

static const char mc_stats[] = "STAT pid 4242\r\nSTAT uptime 10\r\nSTAT version 1.6.18\r\n"
                               "STAT libevent 2.1.12-stable\r\nSTAT curr_connections 2\r\n"
                               "STAT total_connections 5\r\nSTAT cmd_get 42\r\n"
                               "STAT get_hits 30\r\nSTAT get_misses 12\r\n"
                               "STAT get_expired 0\r\nSTAT bytes 1234\r\n"
                               "STAT slab_reassign_evictions_nomem 0\r\n"
                               "STAT evictions 3\r\nSTAT reclaimed 0\r\nEND\r\n";

static void test_memcached_stats_good(void **state)
{
    fixture *fx = *state;
    assert_int_equal(st_memcached_stats_emit(begin(fx), mc_stats, strlen(mc_stats)), ST_OK);
    take(fx);
    expect(fx, find(fx, "cache.requests", "cache", "memcached", "result", "hit", NULL), COUNTER, "",
           30);
    expect(fx, find(fx, "cache.requests", "cache", "memcached", "result", "miss", NULL), COUNTER,
           "", 12);
    expect(fx, find(fx, "cache.evictions", "cache", "memcached", NULL), COUNTER, "", 3);
    expect(fx, find(fx, "cache.memory.used", "cache", "memcached", NULL), GAUGE, "B", 1234);
    expect(fx, find(fx, "memcached.connections.current", NULL), GAUGE, "", 2);
    assert_null(find(fx, "memcached.malformed", NULL));
    assert_int_equal(fx->frame->n_series, 5);
}

static void test_memcached_stats_malformed(void **state)
{
    fixture *fx = *state;
    char text[8192];
    char longname[1100];
    int n;
    memset(longname, 'n', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    n = snprintf(text, sizeof(text),
                 "STAT get_hits 9\r\n"
                 "STAT\r\n"                     /* 1 */
                 "STAT get_misses\r\n"          /* 2: no value */
                 "STATS bytes 5\r\n"            /* 3 */
                 "hello\r\n"                    /* 4 */
                 "STAT bytes 5kB\r\n"           /* 5 */
                 "STAT evictions -1\r\n"        /* 6 */
                 "STAT  curr_connections 1\r\n" /* 7: empty name */
                 "STAT %s 1\r\n"                /* 8: overlong */
                 "STAT rusage_user 0.5\r\n"     /* unknown: fine */
                 "END\r\n",
                 longname);
    assert_true(n > 0 && (size_t)n < sizeof(text));
    assert_int_equal(st_memcached_stats_emit(begin(fx), text, (size_t)n), ST_OK);
    take(fx);
    expect(fx, find(fx, "memcached.malformed", NULL), COUNTER, "", 8);
    expect(fx, find(fx, "cache.requests", "cache", "memcached", "result", "hit", NULL), COUNTER, "",
           9);
    assert_int_equal(fx->frame->n_series, 2);
}

static void test_memcached_stats_incomplete(void **state)
{
    fixture *fx = *state;
    static const char cut[] = "STAT get_hits 9\r\nSTAT get_misses 1\r\n";
    static const char after[] = "STAT get_hits 9\r\nEND\r\nSTAT get_misses 1\r\n";
    static const char error[] = "ERROR\r\n";
    static const char server_error[] = "SERVER_ERROR out of memory\r\n";
    static const char nothing[] = "STAT pid 1\r\nEND\r\n";
    assert_int_equal(st_memcached_stats_emit(begin(fx), cut, strlen(cut)), ST_EPARSE);
    assert_int_equal(st_memcached_stats_emit(begin(fx), after, strlen(after)), ST_EPARSE);
    assert_int_equal(st_memcached_stats_emit(begin(fx), error, strlen(error)), ST_EPARSE);
    assert_int_equal(st_memcached_stats_emit(begin(fx), server_error, strlen(server_error)),
                     ST_EPARSE);
    assert_int_equal(st_memcached_stats_emit(begin(fx), "", 0), ST_EPARSE);
    take(fx);
    assert_int_equal(fx->frame->n_series, 0); /* a broken reply emits nothing */
    /* Complete, but none of our fields: one malformed reply. */
    assert_int_equal(st_memcached_stats_emit(begin(fx), nothing, strlen(nothing)), ST_EPARSE);
    assert_int_equal(st_memcached_stats_emit(begin(fx), "END\n", 4), ST_EPARSE);
    take(fx);
    expect(fx, find(fx, "memcached.malformed", NULL), COUNTER, "", 2);
    assert_int_equal(fx->frame->n_series, 1);
}

static void test_memcached_stats_oversize(void **state)
{
    fixture *fx = *state;
    char *big = malloc(MEMCACHED_MAX_REPLY + 1);
    static const char head[] = "STAT bytes 77\r\n";
    size_t off = sizeof(head) - 1;
    assert_non_null(big);
    memcpy(big, head, off);
    /* Padding with unknown stats up to exactly the limit, then END. */
    while (off + 40 < MEMCACHED_MAX_REPLY) {
        memcpy(big + off, "STAT pad 0\r\n", 12);
        off += 12;
    }
    memset(big + off, '\n', MEMCACHED_MAX_REPLY - 5 - off);
    memcpy(big + MEMCACHED_MAX_REPLY - 5, "END\r\n", 5);
    big[MEMCACHED_MAX_REPLY] = '\n';
    assert_int_equal(st_memcached_stats_emit(begin(fx), big, MEMCACHED_MAX_REPLY + 1), ST_ETOOBIG);
    take(fx);
    assert_int_equal(fx->frame->n_series, 0);
    assert_int_equal(st_memcached_stats_emit(begin(fx), big, MEMCACHED_MAX_REPLY), ST_OK);
    take(fx);
    expect(fx, find(fx, "cache.memory.used", "cache", "memcached", NULL), GAUGE, "B", 77);
    /* The blank padding lines are malformed lines, counted, not fatal. */
    assert_non_null(find(fx, "memcached.malformed", NULL));
    free(big);
}

/* ---- varnishstat JSON ---- */

#define VCOUNTER(name, v) \
    "\"" name "\": {\"description\": \"d\", \"flag\": \"c\", \"value\": " v "}"

/* Varnish 6.5 and later: counters under "counters". */
static const char varnish7[] =
    "{\"version\": 1, \"timestamp\": \"2024-01-01T00:00:00\", \"counters\": {"          //
    VCOUNTER("MAIN.cache_hit", "30") "," VCOUNTER("MAIN.cache_miss", "10") ","          //
    VCOUNTER("MAIN.cache_hitpass", "2") "," VCOUNTER("MAIN.cache_hitmiss", "1") ","     //
    VCOUNTER("MAIN.n_lru_nuked", "4") "," VCOUNTER("MAIN.cache_hit_grace", "99") ","    //
    VCOUNTER("SMA.s0.g_bytes", "6000") "," VCOUNTER("SMA.Transient.g_bytes", "100") "," //
    VCOUNTER("SMA.s0.g_space", "777") "," VCOUNTER("SMF.disk.g_bytes", "5") "}}";

/* Varnish up to 6.4: counters beside the timestamp at the top level. */
static const char varnish6[] = "{\"timestamp\": \"2019-01-01T00:00:00\","    //
    VCOUNTER("MAIN.cache_hit", "7") "," VCOUNTER("MAIN.cache_miss", "3") "," //
    VCOUNTER("MAIN.n_lru_nuked", "0") "," VCOUNTER("SMF.s0.g_bytes", "4096") "}";

static void test_varnish_json_shapes(void **state)
{
    fixture *fx = *state;
    assert_int_equal(st_varnish_json_emit(begin(fx), varnish7, strlen(varnish7)), ST_OK);
    take(fx);
    expect(fx, find(fx, "cache.requests", "cache", "varnish", "result", "hit", NULL), COUNTER, "",
           30);
    expect(fx, find(fx, "cache.requests", "cache", "varnish", "result", "miss", NULL), COUNTER, "",
           10);
    expect(fx, find(fx, "cache.requests", "cache", "varnish", "result", "pass", NULL), COUNTER, "",
           2);
    expect(fx, find(fx, "cache.requests", "cache", "varnish", "result", "hitmiss", NULL), COUNTER,
           "", 1);
    expect(fx, find(fx, "cache.evictions", "cache", "varnish", NULL), COUNTER, "", 4);
    expect(fx, find(fx, "cache.memory.used", "cache", "varnish", NULL), GAUGE, "B", 6105);
    assert_int_equal(fx->frame->n_series, 6);

    st_fold_free(fx->fold); /* a fresh fold: the old shape on its own */
    assert_int_equal(st_fold_new(&fx->fold), ST_OK);
    st_fold_totals_from_zero(fx->fold, true);
    assert_int_equal(st_varnish_json_emit(begin(fx), varnish6, strlen(varnish6)), ST_OK);
    take(fx);
    expect(fx, find(fx, "cache.requests", "cache", "varnish", "result", "hit", NULL), COUNTER, "",
           7);
    expect(fx, find(fx, "cache.requests", "cache", "varnish", "result", "miss", NULL), COUNTER, "",
           3);
    expect(fx, find(fx, "cache.evictions", "cache", "varnish", NULL), COUNTER, "", 0);
    expect(fx, find(fx, "cache.memory.used", "cache", "varnish", NULL), GAUGE, "B", 4096);
    assert_null(find(fx, "cache.requests", "cache", "varnish", "result", "pass", NULL));
    assert_int_equal(fx->frame->n_series, 4);
}

static void test_varnish_json_malformed(void **state)
{
    fixture *fx = *state;
    /* clang-format off */
    static const char text[] =
        "{\"counters\": {"
        "\"MAIN.cache_hit\": {\"value\": 5},"
        "\"MAIN.cache_miss\": {\"value\": \"12\"},"                /* 1: a string */
        "\"MAIN.cache_hitpass\": {\"description\": \"no value\"}," /* 2 */
        "\"MAIN.cache_hitmiss\": 3,"                               /* 3: no object */
        "\"MAIN.n_lru_nuked\": {\"value\": -1},"                   /* 4: negative */
        "\"SMA.s0.g_bytes\": {\"value\": null},"                   /* 5 */
        "\"SMA..g_bytes\": {\"value\": 1},"                        /* no stevedore: skipped */
        "\"SMA.s1.g_bytes\": {\"value\": 18446744073709551615},"   /* wrapped: kept */
        "\"VBE.boot.default.happy\": \"anything goes here\"}}";     /* not ours: skipped */
    /* clang-format on */
    assert_int_equal(st_varnish_json_emit(begin(fx), text, strlen(text)), ST_OK);
    take(fx);
    expect(fx, find(fx, "varnish.malformed", NULL), COUNTER, "", 5);
    expect(fx, find(fx, "cache.requests", "cache", "varnish", "result", "hit", NULL), COUNTER, "",
           5);
    expect(fx, find(fx, "cache.memory.used", "cache", "varnish", NULL), GAUGE, "B",
           18446744073709551615.0);
    assert_int_equal(fx->frame->n_series, 3);
}

static void test_varnish_json_broken(void **state)
{
    fixture *fx = *state;
    static const char *const bad[] = {
        "",                                                           /* empty */
        "{\"counters\": {",                                           /* cut short */
        "[1, 2, 3]",                                                  /* not an object */
        "Could not get hold of varnishd",                             /* not JSON */
        "{\"counters\": {}}",                                         /* no counters */
        "{\"timestamp\": \"x\", \"SMA.s0.g_bytes\": {\"value\": 1}}", /* no MAIN counter */
    };
    for (size_t i = 0; i < ST_ARRAY_LEN(bad); i++) {
        if (st_varnish_json_emit(begin(fx), bad[i], strlen(bad[i])) != ST_EPARSE) {
            fail_msg("input %zu: want ST_EPARSE", i);
        }
    }
    take(fx);
    expect(fx, find(fx, "varnish.malformed", NULL), COUNTER, "", 6);
    /* Storage alone is still reported. */
    expect(fx, find(fx, "cache.memory.used", "cache", "varnish", NULL), GAUGE, "B", 1);
    assert_int_equal(fx->frame->n_series, 2);
}

static void test_varnish_json_oversize(void **state)
{
    fixture *fx = *state;
    size_t n = VARNISH_MAX_OUTPUT + 1;
    char *big = malloc(n);
    size_t head = strlen(varnish6);
    assert_non_null(big);
    memcpy(big, varnish6, head);
    memset(big + head, ' ', n - head); /* JSON allows trailing white space */
    assert_int_equal(st_varnish_json_emit(begin(fx), big, n), ST_ETOOBIG);
    assert_int_equal(st_varnish_json_emit(begin(fx), big, n - 1), ST_OK);
    take(fx);
    expect(fx, find(fx, "cache.requests", "cache", "varnish", "result", "hit", NULL), COUNTER, "",
           7);
    free(big);
}

/* ---- samplers against scripted servers ---- */

#define FAKE_MAX_REPLIES 8

/* A server on loopback (TCP, or a unix socket when path is set) that
 * answers the n-th request it receives on any connection with replies[n]
 * (NULL: close the connection instead), in pieces of `piece` bytes. One
 * recv is one request: the samplers send each command in one piece and
 * wait for its reply. */
typedef struct fake {
    int lfd;
    int port;
    char path[108];
    const char *replies[FAKE_MAX_REPLIES];
    size_t reply_len[FAKE_MAX_REPLIES]; /* 0: strlen */
    size_t nreplies;
    size_t piece;
    bool hang; /* read requests, never answer */
    size_t requests;
    size_t accepted;
    char got[4096]; /* the requests, concatenated (truncated) */
    size_t gotlen;
    pthread_t th;
} fake;

static bool send_reply(int fd, const char *p, size_t n, size_t piece)
{
    while (n > 0) {
        size_t k = piece > 0 ? ST_MIN(piece, n) : n;
        ssize_t w = send(fd, p, k, MSG_NOSIGNAL);
        if (w <= 0) {
            return false;
        }
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static void serve_conn(fake *f, int fd)
{
    char buf[4096];
    for (;;) {
        ssize_t r = recv(fd, buf, sizeof(buf), 0);
        size_t i;
        if (r <= 0) {
            return;
        }
        i = __atomic_fetch_add(&f->requests, 1, __ATOMIC_SEQ_CST);
        if (f->gotlen + (size_t)r < sizeof(f->got)) {
            memcpy(f->got + f->gotlen, buf, (size_t)r);
            f->gotlen += (size_t)r;
        }
        if (f->hang) {
            continue;
        }
        if (i >= f->nreplies || f->replies[i] == NULL) {
            return;
        }
        if (!send_reply(fd, f->replies[i],
                        f->reply_len[i] > 0 ? f->reply_len[i] : strlen(f->replies[i]), f->piece)) {
            return;
        }
    }
}

static void *fake_main(void *arg)
{
    fake *f = arg;
    for (;;) {
        int fd = accept(f->lfd, NULL, NULL);
        if (fd < 0) {
            return NULL; /* shut down */
        }
        __atomic_fetch_add(&f->accepted, 1, __ATOMIC_SEQ_CST);
        serve_conn(f, fd);
        close(fd);
    }
}

static void fake_start(fake *f)
{
    if (f->path[0] != '\0') {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        memcpy(sun.sun_path, f->path, strlen(f->path) + 1);
        f->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
        assert_true(f->lfd >= 0);
        assert_int_equal(bind(f->lfd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    } else {
        struct sockaddr_in sin = {.sin_family = AF_INET};
        socklen_t len = sizeof(sin);
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        f->lfd = socket(AF_INET, SOCK_STREAM, 0);
        assert_true(f->lfd >= 0);
        assert_int_equal(bind(f->lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
        assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&sin, &len), 0);
        f->port = ntohs(sin.sin_port);
    }
    assert_int_equal(listen(f->lfd, 8), 0);
    assert_int_equal(pthread_create(&f->th, NULL, fake_main, f), 0);
}

/* Call after the sampler's fini closed its connection. */
static void fake_stop(fake *f)
{
    shutdown(f->lfd, SHUT_RDWR); /* wakes accept */
    pthread_join(f->th, NULL);
    close(f->lfd);
}

/* A port that refuses connections: bound, never listening. */
static int closed_port(int *fd)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof(sin);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    *fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(*fd >= 0);
    assert_int_equal(bind(*fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(getsockname(*fd, (struct sockaddr *)&sin, &len), 0);
    return ntohs(sin.sin_port);
}

/* Loads yaml and runs the sampler's init; the error text lands in err. */
static int start(fixture *fx, const char *name, const char *yaml, st_cfg_error *err)
{
    st_sampler_env env = {"/proc", "/sys", fx->dir, INTERVAL, false};
    int rv;
    fx->def = st_sampler_find(name);
    assert_non_null(fx->def);
    st_cfg_doc_free(fx->doc);
    fx->doc = NULL;
    assert_int_equal(st_cfg_load_string("test.yaml", yaml, strlen(yaml), &fx->doc, err), ST_OK);
    fx->ctx = NULL;
    rv = fx->def->init(fx->doc, st_cfg_root(fx->doc), &env, &fx->ctx, err);
    if (rv != ST_OK) {
        fx->def = NULL;
    }
    return rv;
}

static void stop(fixture *fx)
{
    if (fx->def != NULL) {
        fx->def->fini(fx->ctx);
        fx->def = NULL;
    }
}

static int run(fixture *fx)
{
    fx->t_ms += INTERVAL;
    return fx->def->sample(fx->ctx, begin(fx));
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* RESP bulk string of text into out. */
static void bulk(char *out, size_t cap, const char *text)
{
    int n = snprintf(out, cap, "$%zu\r\n%s\r\n", strlen(text), text);
    assert_true(n > 0 && (size_t)n < cap);
}

static void test_redis_sampler(void **state)
{
    fixture *fx = *state;
    fake f = {0};
    char reply[2048];
    char yaml[256];
    st_cfg_error err;
    bulk(reply, sizeof(reply), redis_info);
    f.replies[0] = reply; /* first connection: one INFO, then closed */
    f.replies[1] = NULL;
    f.replies[2] = reply; /* second connection, after the reconnect */
    f.nreplies = 3;
    f.piece = 7; /* the reply arrives in many small reads */
    fake_start(&f);
    snprintf(yaml, sizeof(yaml), "address: 127.0.0.1:%d\ntimeout: 2s\ninterval: 5s\n", f.port);
    assert_int_equal(start(fx, "redis", yaml, &err), ST_OK);
    assert_int_equal(run(fx), ST_OK);
    assert_int_not_equal(run(fx), ST_OK); /* the server hung up: an error, no crash */
    assert_int_equal(run(fx), ST_OK);     /* and the next run reconnects */
    stop(fx);
    fake_stop(&f);
    assert_int_equal(f.accepted, 2);
    assert_int_equal(f.requests, 3);
    assert_memory_equal(f.got, "*1\r\n$4\r\nINFO\r\n", 14);
    take(fx);
    /* 30 from zero, then the same total again: no increase. */
    expect(fx, find(fx, "cache.requests", "cache", "redis", "result", "hit", NULL), COUNTER, "",
           30);
    expect(fx, find(fx, "cache.memory.used", "cache", "redis", NULL), GAUGE, "B", 916968);
}

static void test_redis_sampler_auth(void **state)
{
    fixture *fx = *state;
    fake f = {0};
    char reply[2048];
    char yaml[256];
    st_cfg_error err;
    static const char auth[] = "*3\r\n$4\r\nAUTH\r\n$3\r\nbob\r\n$6\r\nsecret\r\n";
    bulk(reply, sizeof(reply), redis_info);
    f.replies[0] = "+OK\r\n";
    f.replies[1] = reply;
    f.replies[2] = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";
    f.replies[3] = "-NOAUTH Authentication required.\r\n";
    f.nreplies = 4;
    fake_start(&f);
    snprintf(yaml, sizeof(yaml),
             "address: 127.0.0.1:%d\nusername: bob\npassword: secret\ntimeout: 2s\n", f.port);
    assert_int_equal(start(fx, "redis", yaml, &err), ST_OK);
    assert_int_equal(run(fx), ST_OK);
    assert_true(f.gotlen > sizeof(auth) - 1);
    assert_memory_equal(f.got, auth, sizeof(auth) - 1);
    /* The same connection; its INFO gets an auth error: reconnect, whose
     * AUTH is refused. */
    assert_int_equal(run(fx), ST_EPERM);
    assert_int_equal(run(fx), ST_EPERM);
    stop(fx);
    fake_stop(&f);
    assert_int_equal(f.accepted, 2);
}

static void test_redis_sampler_limits(void **state)
{
    fixture *fx = *state;
    fake f = {0};
    char yaml[256];
    st_cfg_error err;
    size_t n = REDIS_MAX_REPLY + 65536;
    char *huge = malloc(n);
    int64_t t0;
    int lfd;
    assert_non_null(huge);
    /* A bulk string past the cap, announced honestly: refused while it
     * streams in, not after. */
    snprintf(huge, 32, "$%zu\r\n", n);
    memset(huge + strlen(huge), 'a', n - strlen(huge));
    f.replies[0] = huge;
    f.reply_len[0] = n;
    f.replies[1] = "not RESP at all\r\n";
    f.replies[2] = ":42\r\n"; /* an integer where INFO text belongs */
    f.nreplies = 3;
    fake_start(&f);
    snprintf(yaml, sizeof(yaml), "address: 127.0.0.1:%d\ntimeout: 2s\n", f.port);
    assert_int_equal(start(fx, "redis", yaml, &err), ST_OK);
    assert_int_equal(run(fx), ST_ETOOBIG);
    assert_int_equal(run(fx), ST_EPARSE);
    assert_int_equal(run(fx), ST_EPARSE);
    stop(fx);
    fake_stop(&f);
    free(huge);

    /* A server that never answers costs one timeout. */
    memset(&f, 0, sizeof(f));
    f.hang = true;
    fake_start(&f);
    snprintf(yaml, sizeof(yaml), "address: 127.0.0.1:%d\ntimeout: 200ms\n", f.port);
    assert_int_equal(start(fx, "redis", yaml, &err), ST_OK);
    t0 = now_ms();
    assert_int_equal(run(fx), ST_ETIMEOUT);
    assert_true(now_ms() - t0 >= 190 && now_ms() - t0 < 1500);
    stop(fx);
    fake_stop(&f);

    /* A server that is down is an error for this run only. */
    snprintf(yaml, sizeof(yaml), "address: 127.0.0.1:%d\n", closed_port(&lfd));
    assert_int_equal(start(fx, "redis", yaml, &err), ST_OK);
    assert_int_equal(run(fx), ST_ENET);
    assert_int_equal(run(fx), ST_ENET);
    stop(fx);
    close(lfd);
}

static void test_memcached_sampler(void **state)
{
    fixture *fx = *state;
    fake f = {0};
    char yaml[256];
    st_cfg_error err;
    snprintf(f.path, sizeof(f.path), "%s/mc.sock", fx->dir);
    f.replies[0] = mc_stats;
    f.replies[1] = "ERROR\r\n";
    f.replies[2] = mc_stats;
    f.replies[3] = NULL;
    f.replies[4] = "STAT get_hits 99\r\nEND\r\n";
    f.nreplies = 5;
    f.piece = 5;
    fake_start(&f);
    snprintf(yaml, sizeof(yaml), "socket: %s\ntimeout: 2s\n", f.path);
    assert_int_equal(start(fx, "memcached", yaml, &err), ST_OK);
    assert_int_equal(run(fx), ST_OK);
    assert_int_equal(run(fx), ST_EPARSE); /* ERROR: dropped connection */
    assert_int_equal(run(fx), ST_OK);
    assert_int_not_equal(run(fx), ST_OK); /* hung up */
    assert_int_equal(run(fx), ST_OK);
    stop(fx);
    fake_stop(&f);
    assert_int_equal(f.accepted, 3);
    assert_memory_equal(f.got, "stats\r\n", 7);
    take(fx);
    expect(fx, find(fx, "cache.requests", "cache", "memcached", "result", "hit", NULL), COUNTER, "",
           99);
    expect(fx, find(fx, "cache.requests", "cache", "memcached", "result", "miss", NULL), COUNTER,
           "", 12);
}

static void test_memcached_sampler_limits(void **state)
{
    fixture *fx = *state;
    fake f = {0};
    char yaml[256];
    st_cfg_error err;
    size_t n = 4 * MEMCACHED_MAX_REPLY;
    char *endless = malloc(n);
    int64_t t0;
    assert_non_null(endless);
    for (size_t i = 0; i + 12 <= n; i += 12) {
        memcpy(endless + i, "STAT pad 0\r\n", 12);
    }
    f.replies[0] = endless;
    f.reply_len[0] = n - n % 12;
    f.nreplies = 1;
    fake_start(&f);
    snprintf(yaml, sizeof(yaml), "address: 127.0.0.1:%d\n", f.port);
    assert_int_equal(start(fx, "memcached", yaml, &err), ST_OK);
    assert_int_equal(run(fx), ST_ETOOBIG);
    stop(fx);
    fake_stop(&f);
    free(endless);

    memset(&f, 0, sizeof(f));
    f.hang = true;
    fake_start(&f);
    snprintf(yaml, sizeof(yaml), "address: \"[::ffff:127.0.0.1]:%d\"\ntimeout: 150ms\n", f.port);
    assert_int_equal(start(fx, "memcached", yaml, &err), ST_OK);
    t0 = now_ms();
    assert_int_equal(run(fx), ST_ETIMEOUT);
    assert_true(now_ms() - t0 < 1500);
    stop(fx);
    fake_stop(&f);
}

/* Writes an executable /bin/sh script standing in for varnishstat. */
static void script(fixture *fx, const char *name, const char *body, char *path, size_t cap)
{
    FILE *fp;
    snprintf(path, cap, "%s/%s", fx->dir, name);
    fp = fopen(path, "w");
    assert_non_null(fp);
    fprintf(fp, "#!/bin/sh\n%s\n", body);
    fclose(fp);
    assert_int_equal(chmod(path, 0700), 0);
}

static void test_varnish_sampler(void **state)
{
    fixture *fx = *state;
    char json[512];
    char body[1024];
    char path[256];
    char yaml[512];
    char args[512];
    st_cfg_error err;
    FILE *fp;
    size_t n;
    snprintf(json, sizeof(json), "%s/stats.json", fx->dir);
    fp = fopen(json, "w");
    assert_non_null(fp);
    fputs(varnish7, fp);
    fclose(fp);
    /* Records its arguments, then prints the fixture. */
    snprintf(body, sizeof(body), "echo \"$@\" > %s/args\ncat %s", fx->dir, json);
    script(fx, "vstat", body, path, sizeof(path));
    snprintf(yaml, sizeof(yaml), "varnishstat: %s\ninstance: /var/lib/varnish/edge 1\n", path);
    assert_int_equal(start(fx, "varnish", yaml, &err), ST_OK);
    assert_int_equal(run(fx), ST_OK);
    stop(fx);
    take(fx);
    expect(fx, find(fx, "cache.requests", "cache", "varnish", "result", "hit", NULL), COUNTER, "",
           30);
    expect(fx, find(fx, "cache.memory.used", "cache", "varnish", NULL), GAUGE, "B", 6105);
    /* No shell between us: the instance with its space is one argument. */
    snprintf(json, sizeof(json), "%s/args", fx->dir);
    fp = fopen(json, "r");
    assert_non_null(fp);
    n = fread(args, 1, sizeof(args) - 1, fp);
    fclose(fp);
    args[n] = '\0';
    assert_non_null(strstr(args, "-j -t 1.000 -n /var/lib/varnish/edge 1 -f MAIN.cache_hit"));
    assert_non_null(strstr(args, "-f SMA.*.g_bytes -f SMF.*.g_bytes\n"));
}

static void test_varnish_sampler_failures(void **state)
{
    fixture *fx = *state;
    char path[256];
    char yaml[512];
    st_cfg_error err;
    int64_t t0;

    script(fx, "down", "echo 'Could not get hold of varnishd, is it running?' >&2\nexit 1", path,
           sizeof(path));
    snprintf(yaml, sizeof(yaml), "varnishstat: %s\n", path);
    assert_int_equal(start(fx, "varnish", yaml, &err), ST_OK);
    assert_int_equal(run(fx), ST_EIO);
    stop(fx);

    /* Endless output: killed at the cap. */
    script(fx, "endless", "exec yes '{\"counters\": {}}'", path, sizeof(path));
    snprintf(yaml, sizeof(yaml), "varnishstat: %s\ntimeout: 10s\n", path);
    assert_int_equal(start(fx, "varnish", yaml, &err), ST_OK);
    assert_int_equal(run(fx), ST_ETOOBIG);
    stop(fx);

    /* Hangs: killed at the timeout, even with its pipes closed. */
    script(fx, "hang", "exec sleep 30", path, sizeof(path));
    snprintf(yaml, sizeof(yaml), "varnishstat: %s\ntimeout: 200ms\n", path);
    assert_int_equal(start(fx, "varnish", yaml, &err), ST_OK);
    t0 = now_ms();
    assert_int_equal(run(fx), ST_ETIMEOUT);
    assert_true(now_ms() - t0 < 2000);
    stop(fx);
    script(fx, "hang2", "exec sleep 30 >&- 2>&-", path, sizeof(path));
    snprintf(yaml, sizeof(yaml), "varnishstat: %s\ntimeout: 200ms\n", path);
    assert_int_equal(start(fx, "varnish", yaml, &err), ST_OK);
    t0 = now_ms();
    assert_int_not_equal(run(fx), ST_OK);
    assert_true(now_ms() - t0 < 2000);
    stop(fx);

    /* Not JSON; not there at all. */
    script(fx, "text", "echo 'MAIN.cache_hit 5'", path, sizeof(path));
    snprintf(yaml, sizeof(yaml), "varnishstat: %s\n", path);
    assert_int_equal(start(fx, "varnish", yaml, &err), ST_OK);
    assert_int_equal(run(fx), ST_EPARSE);
    stop(fx);
    snprintf(yaml, sizeof(yaml), "varnishstat: %s/missing\n", fx->dir);
    assert_int_equal(start(fx, "varnish", yaml, &err), ST_OK);
    assert_int_equal(run(fx), ST_ENOENT);
    stop(fx);
}

/* ---- configuration ---- */

static void expect_config_error(fixture *fx, const char *sampler, const char *yaml,
                                const char *want)
{
    st_cfg_error err;
    memset(&err, 0, sizeof(err));
    assert_int_equal(start(fx, sampler, yaml, &err), ST_ECONFIG);
    if (strstr(err.msg, want) == NULL) {
        fail_msg("%s: '%s' does not contain '%s'", sampler, err.msg, want);
    }
}

static void test_config(void **state)
{
    fixture *fx = *state;
    st_cfg_error err;
    expect_config_error(fx, "redis", "address: localhost\n", "test.yaml:1: key 'address'");
    expect_config_error(fx, "redis", "address: \"::1:6379\"\n", "key 'address'");
    expect_config_error(fx, "redis", "address: h:0\n", "key 'address'");
    expect_config_error(fx, "redis", "address: h:1\nsocket: /tmp/r.sock\n",
                        "test.yaml:2: key 'socket': give address or socket, not both");
    expect_config_error(fx, "redis", "username: bob\n", "key 'username'");
    expect_config_error(fx, "redis", "timeout: 0s\n", "key 'timeout'");
    expect_config_error(fx, "redis", "\nadress: h:1\n", "test.yaml:2: key 'adress'");
    expect_config_error(fx, "memcached",
                        "socket: /tmp/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock\n",
                        "test.yaml:1: key 'socket'");
    expect_config_error(fx, "memcached", "address: \"[::1]6379\"\n", "key 'address'");
    expect_config_error(fx, "memcached", "timeout: 2m\n", "key 'timeout'");
    expect_config_error(fx, "varnish", "varnishstat: varnishstat\n",
                        "test.yaml:1: key 'varnishstat': want an absolute path");
    expect_config_error(fx, "varnish", "instance: \"\"\n", "key 'instance'");
    expect_config_error(fx, "varnish", "n: edge\n", "key 'n'");
    /* Defaults and the shared interval key are accepted. */
    assert_int_equal(start(fx, "redis", "interval: 10s\n", &err), ST_OK);
    stop(fx);
    assert_int_equal(start(fx, "memcached", "interval: 10s\naddress: \"[::1]:11211\"\n", &err),
                     ST_OK);
    stop(fx);
    assert_int_equal(start(fx, "varnish", "interval: 10s\ninstance: edge\n", &err), ST_OK);
    stop(fx);
    assert_int_equal(start(fx, "redis", "socket: /run/redis/redis.sock\npassword: p\n", &err),
                     ST_OK);
    stop(fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_redis_info_good, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_info_deltas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_info_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_info_nul, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_info_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_info_oversize, setup, teardown),
        cmocka_unit_test_setup_teardown(test_memcached_stats_good, setup, teardown),
        cmocka_unit_test_setup_teardown(test_memcached_stats_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_memcached_stats_incomplete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_memcached_stats_oversize, setup, teardown),
        cmocka_unit_test_setup_teardown(test_varnish_json_shapes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_varnish_json_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_varnish_json_broken, setup, teardown),
        cmocka_unit_test_setup_teardown(test_varnish_json_oversize, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_sampler, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_sampler_auth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_sampler_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_memcached_sampler, setup, teardown),
        cmocka_unit_test_setup_teardown(test_memcached_sampler_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_varnish_sampler, setup, teardown),
        cmocka_unit_test_setup_teardown(test_varnish_sampler_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
