/* Store: apply, dedup window, series identity, block scans in time order,
 * map growth with a tiny map, stats. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "err.h"
#include "frame.h"
#include "store.h"
#include "store_internal.h" /* the compaction pass's position */
#include "util.h"
#include "tmpdir.h"

#include <signal.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[64];
static Strata__V1__Agent agent_info = STRATA__V1__AGENT__INIT;
static uint8_t agent_a[16] = {1, 2, 3};
static uint8_t agent_b[16] = {9, 9, 9};

static int setup(void **state)
{
    (void)state;
    assert_non_null(st_test_mkdtemp(tmpdir, sizeof(tmpdir), "store"));
    agent_info.host = "h1";
    agent_info.role = STRATA__V1__ROLE__EDGE;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return st_test_rmtree(tmpdir);
}

/* A frame with nseries gauges "m.<i>" {k=<i>} holding npoints values
 * base+i+p, starting at start. */
static st_frame *make_frame(const uint8_t id[16], uint64_t seq, int nseries, int npoints,
                            int64_t start, int64_t base)
{
    st_frame *f = calloc(1, sizeof(*f));
    strata__v1__frame__init(f);
    f->agent_id.data = malloc(16);
    memcpy(f->agent_id.data, id, 16);
    f->agent_id.len = 16;
    f->seq = seq;
    f->agent = malloc(sizeof(*f->agent));
    *f->agent = agent_info;
    f->agent->host = strdup(agent_info.host);
    f->series = calloc((size_t)nseries, sizeof(*f->series));
    f->n_series = (size_t)nseries;
    for (int i = 0; i < nseries; i++) {
        Strata__V1__Series *s = calloc(1, sizeof(*s));
        char name[32];
        strata__v1__series__init(s);
        snprintf(name, sizeof(name), "m.%d", i);
        s->name = strdup(name);
        s->unit = strdup("B");
        s->kind = STRATA__V1__KIND__GAUGE;
        s->labels = calloc(1, sizeof(*s->labels));
        s->labels[0] = calloc(1, sizeof(**s->labels));
        strata__v1__label__init(s->labels[0]);
        s->labels[0]->key = strdup("k");
        snprintf(name, sizeof(name), "%d", i);
        s->labels[0]->value = strdup(name);
        s->n_labels = 1;
        s->start_unix_ms = start;
        s->interval_ms = 1000;
        s->ivalues = calloc((size_t)npoints, sizeof(int64_t));
        s->n_ivalues = (size_t)npoints;
        for (int p = 0; p < npoints; p++) {
            s->ivalues[p] = p == 0 ? base + i : 1; /* deltas: base+i, +1, +1 ... */
        }
        f->series[i] = s;
    }
    return f;
}

static int apply_one(st_store *st, st_frame *f, bool *dup)
{
    st_store_txn *t;
    int rv = st_store_begin(st, &t);
    assert_int_equal(rv, ST_OK);
    rv = st_store_apply(t, f, 1000, dup);
    if (rv != ST_OK) {
        st_store_abort(t);
        return rv;
    }
    return st_store_commit(t);
}

struct agent_seen {
    uint64_t seq, frames, samples;
    int count;
};

static int agent_cb(void *arg, const st_agent_info *a)
{
    struct agent_seen *s = arg;
    if (a->rec->agent_id.len == 16 && memcmp(a->rec->agent_id.data, agent_a, 16) == 0) {
        s->seq = a->rec->seq;
        s->frames = a->rec->frames;
        s->samples = a->rec->samples;
    }
    s->count++;
    return ST_OK;
}

/* ---- the tap ---- */

struct tapped {
    int calls;
    uint64_t txn;
    size_t blocks;
    uint64_t points;
};

static void tap_fn(void *arg, uint64_t txn, const st_tap_block *b, size_t n)
{
    struct tapped *x = arg;
    x->calls++;
    x->txn = txn;
    x->blocks += n;
    for (size_t i = 0; i < n; i++) {
        assert_true(b[i].s->name[0] == 'm');
        x->points += st_series_npoints(b[i].s);
    }
}

static int snap_series(void *arg, const st_scan_series *s)
{
    (void)arg;
    (void)s;
    return 0;
}

/* The tap gets each commit's blocks once, with the id a scan's snapshot
 * compares with; an aborted transaction's never; a duplicate frame's
 * never; a second tap is refused; one begun before the tap was set says it
 * lost them. */
static void test_tap_hands_over_commits(void **state)
{
    struct st_store_opts o = {.dir = tmpdir, .no_sync = true};
    st_scan_cb cb = {snap_series, NULL, NULL, NULL};
    struct tapped x = {0};
    struct tapped y = {0};
    st_store *st;
    st_store_txn *t;
    st_frame *f;
    uint64_t snap = 0;
    bool dup = true;
    (void)state;
    assert_int_equal(st_store_open(&o, &st), ST_OK);
    /* begun before the tap: the commit is "lost" to it (txn 0) */
    assert_int_equal(st_store_begin(st, &t), ST_OK);
    assert_int_equal(st_store_tap_set(st, tap_fn, &x), ST_OK);
    assert_int_equal(st_store_tap_set(st, tap_fn, &y), ST_EEXIST);
    f = make_frame(agent_a, 1, 3, 4, 1000, 10);
    assert_int_equal(st_store_apply(t, f, 1000, &dup), ST_OK);
    assert_int_equal(st_store_commit(t), ST_OK);
    st_frame_free(f);
    assert_int_equal(x.calls, 1);
    assert_int_equal(x.txn, 0);
    assert_int_equal(x.blocks, 0);
    /* aborted: nothing */
    assert_int_equal(st_store_begin(st, &t), ST_OK);
    f = make_frame(agent_a, 2, 3, 4, 5000, 10);
    assert_int_equal(st_store_apply(t, f, 1000, &dup), ST_OK);
    st_store_abort(t);
    st_frame_free(f);
    assert_int_equal(x.calls, 1);
    /* committed: three blocks of four points, the commit a scan after sees */
    f = make_frame(agent_a, 2, 3, 4, 5000, 10);
    assert_int_equal(apply_one(st, f, &dup), ST_OK);
    st_frame_free(f);
    assert_int_equal(x.calls, 2);
    assert_int_equal(x.blocks, 3);
    assert_int_equal(x.points, 12);
    assert_int_equal(st_store_scan_snap(st, "m.0", NULL, 0, 0, INT64_MAX, &cb, &snap), ST_OK);
    assert_true(x.txn > 0);
    assert_int_equal(snap, x.txn);
    /* a duplicate writes nothing and hands nothing over */
    f = make_frame(agent_a, 2, 3, 4, 5000, 10);
    assert_int_equal(apply_one(st, f, &dup), ST_OK);
    assert_true(dup);
    st_frame_free(f);
    assert_int_equal(x.calls, 2);
    /* cleared by another's arg: still set; by its own: gone */
    st_store_tap_clear(st, &y);
    f = make_frame(agent_a, 3, 1, 2, 9000, 10);
    assert_int_equal(apply_one(st, f, &dup), ST_OK);
    st_frame_free(f);
    assert_int_equal(x.calls, 3);
    assert_true(x.txn > snap);
    st_store_tap_clear(st, &x);
    f = make_frame(agent_a, 4, 1, 2, 11000, 10);
    assert_int_equal(apply_one(st, f, &dup), ST_OK);
    st_frame_free(f);
    assert_int_equal(x.calls, 3);
    st_store_close(st);
}

static void test_dedup_window(void **state)
{
    struct st_store_opts o = {.dir = tmpdir, .no_sync = true};
    st_store *st;
    bool dup;
    uint64_t order[] = {3, 1, 2, 2, 5, 4, 5, 1, 70, 6, 7, 6, 5};
    bool want_dup[] = {false, false, false, true,  false, false, true,
                       true,  false, false, false, true,  true};
    struct agent_seen seen = {0};
    (void)state;
    assert_int_equal(st_store_open(&o, &st), ST_OK);
    for (size_t i = 0; i < ST_ARRAY_LEN(order); i++) {
        st_frame *f = make_frame(agent_a, order[i], 2, 1, 1000 + (int64_t)order[i] * 1000, 10);
        assert_int_equal(apply_one(st, f, &dup), ST_OK);
        /* 6 is 64 below 70, the edge of the window: still new. 5 is past
         * the window and counts as applied (the sender never goes that far
         * ahead of an unacknowledged frame). */
        assert_int_equal(dup, want_dup[i]);
        st_frame_free(f);
    }
    assert_int_equal(st_store_agents(st, agent_cb, &seen), ST_OK);
    assert_int_equal(seen.count, 1);
    assert_int_equal(seen.seq, 70);
    assert_int_equal(seen.frames, 8); /* 1 2 3 4 5 70 6 7 */
    assert_int_equal(seen.samples, 16);
    st_store_close(st);

    /* The window survives a reopen. */
    assert_int_equal(st_store_open(&o, &st), ST_OK);
    {
        st_frame *f = make_frame(agent_a, 7, 2, 1, 9000, 10);
        assert_int_equal(apply_one(st, f, &dup), ST_OK);
        assert_true(dup);
        st_frame_free(f);
        f = make_frame(agent_a, 8, 2, 1, 9000, 10);
        assert_int_equal(apply_one(st, f, &dup), ST_OK);
        assert_false(dup);
        st_frame_free(f);
    }
    st_store_close(st);
}

struct info_seen {
    char version[32], boot_id[32];
};

static int info_cb(void *arg, const st_agent_info *a)
{
    struct info_seen *s = arg;
    const Strata__V1__Agent *ag = a->rec->agent;
    snprintf(s->version, sizeof(s->version), "%s", ag && ag->version ? ag->version : "(none)");
    snprintf(s->boot_id, sizeof(s->boot_id), "%s", ag && ag->boot_id ? ag->boot_id : "(none)");
    return ST_OK;
}

/* Agents send version and boot_id in one frame of several: a frame without
 * them keeps the stored ones; a frame with new ones replaces them. */
static void test_agent_info_kept(void **state)
{
    struct st_store_opts o = {.dir = tmpdir, .no_sync = true};
    static const char *ver[] = {"1.2.3", "", "", "1.2.4"};
    static const char *boot[] = {"boot-1", "", "", "boot-2"};
    static const char *want_ver[] = {"1.2.3", "1.2.3", "1.2.3", "1.2.4"};
    static const char *want_boot[] = {"boot-1", "boot-1", "boot-1", "boot-2"};
    st_store *st;
    bool dup;
    (void)state;
    assert_int_equal(st_store_open(&o, &st), ST_OK);
    for (int i = 0; i < 4; i++) {
        st_frame *f = make_frame(agent_a, (uint64_t)i + 1, 1, 1, 1000 + i * 1000, 10);
        struct info_seen seen;
        f->agent->version = strdup(ver[i]);
        f->agent->boot_id = strdup(boot[i]);
        assert_int_equal(apply_one(st, f, &dup), ST_OK);
        st_frame_free(f);
        if (i == 2) { /* and across a reopen */
            st_store_close(st);
            assert_int_equal(st_store_open(&o, &st), ST_OK);
        }
        assert_int_equal(st_store_agents(st, info_cb, &seen), ST_OK);
        assert_string_equal(seen.version, want_ver[i]);
        assert_string_equal(seen.boot_id, want_boot[i]);
    }
    st_store_close(st);
}

struct scan_state {
    int series;
    int blocks;
    int64_t last_start;
    bool ordered;
    double sum;
};

static int scan_series(void *arg, const st_scan_series *s)
{
    struct scan_state *ss = arg;
    bool has_host = false;
    for (size_t i = 0; i < s->rec->n_labels; i++) {
        has_host |= strcmp(s->rec->labels[i]->key, "host") == 0 &&
                    strcmp(s->rec->labels[i]->value, "h1") == 0;
    }
    assert_true(has_host);
    ss->series++;
    ss->last_start = INT64_MIN;
    return 1;
}

static int scan_block(void *arg, const st_scan_series *s, const Strata__V1__Series *b)
{
    struct scan_state *ss = arg;
    double v[64];
    size_t n = st_series_npoints(b);
    (void)s;
    assert_true(n <= 64);
    st_series_values(b, v);
    for (size_t i = 0; i < n; i++) {
        ss->sum += v[i];
    }
    ss->ordered &= b->start_unix_ms > ss->last_start;
    ss->last_start = b->start_unix_ms;
    ss->blocks++;
    return ST_OK;
}

static void test_scan_order_and_match(void **state)
{
    struct st_store_opts o = {.dir = tmpdir, .no_sync = true};
    st_store *st;
    bool dup;
    struct scan_state ss = {0, 0, 0, true, 0};
    st_scan_cb cb = {scan_series, scan_block, &ss, NULL};
    st_matcher m = {.key = "k", .value = "1", .op = ST_MATCH_EQ};
    (void)state;
    assert_int_equal(st_store_open(&o, &st), ST_OK);
    /* Out of order arrival: seq 3 (latest time) first. */
    for (int seq = 3; seq >= 1; seq--) {
        st_frame *f = make_frame(agent_b, (uint64_t)seq, 3, 4, 100000 + seq * 4000, 100);
        assert_int_equal(apply_one(st, f, &dup), ST_OK);
        assert_false(dup);
        st_frame_free(f);
    }
    /* m.1{k=1}: 3 blocks of 4 points 101..104 each. */
    assert_int_equal(st_store_scan(st, "m.1", &m, 1, 0, INT64_MAX, &cb), ST_OK);
    assert_int_equal(ss.series, 1);
    assert_int_equal(ss.blocks, 3);
    assert_true(ss.ordered);
    assert_true(ss.sum == 3 * (101 + 102 + 103 + 104));
    /* A range that starts inside the middle block still finds it. */
    memset(&ss, 0, sizeof(ss));
    ss.ordered = true;
    assert_int_equal(
        st_store_scan(st, "m.1", &m, 1, 100000 + 2 * 4000 + 2500, 100000 + 2 * 4000 + 3000, &cb),
        ST_OK);
    assert_int_equal(ss.blocks, 1);
    /* No match: nothing. */
    memset(&ss, 0, sizeof(ss));
    m.op = ST_MATCH_NE;
    assert_int_equal(st_store_scan(st, "m.1", &m, 1, 0, INT64_MAX, &cb), ST_OK);
    assert_int_equal(ss.series, 0);
    st_store_close(st);
}

static void test_map_full_grows(void **state)
{
    char dir[128];
    struct st_store_opts o = {
        .dir = dir, .map_size = 64 * 1024, .max_map_size = 64 << 20, .no_sync = true};
    st_store *st;
    struct st_store_stats stats;
    int grows = 0;
    (void)state;
    snprintf(dir, sizeof(dir), "%s/small", tmpdir);
    assert_int_equal(st_store_open(&o, &st), ST_OK);
    for (uint64_t seq = 1; seq <= 200; seq++) {
        st_frame *f = make_frame(agent_a, seq, 50, 8, 1000000 + (int64_t)seq * 8000, 7);
        bool dup;
        int rv;
        while ((rv = apply_one(st, f, &dup)) == ST_EMAPFULL) {
            assert_int_equal(st_store_grow(st), ST_OK);
            grows++;
        }
        assert_int_equal(rv, ST_OK);
        assert_false(dup);
        st_frame_free(f);
    }
    assert_true(grows > 0);
    assert_int_equal(st_store_stats(st, &stats), ST_OK);
    assert_int_equal(stats.series, 50);
    assert_int_equal(stats.point_blocks, 200 * 50);
    assert_true(stats.map_size > 64 * 1024);
    st_store_close(st);
    /* The grown map is kept on reopen and all data is there. */
    o.map_size = 64 * 1024;
    assert_int_equal(st_store_open(&o, &st), ST_OK);
    assert_int_equal(st_store_stats(st, &stats), ST_OK);
    assert_int_equal(stats.point_blocks, 200 * 50);
    st_store_close(st);
}

static void test_series_key_too_long_skipped(void **state)
{
    struct st_store_opts o = {.dir = tmpdir, .no_sync = true};
    st_store *st;
    bool dup;
    st_frame *f = make_frame(agent_b, 50, 2, 1, 5000, 1);
    char *big = malloc(600);
    (void)state;
    memset(big, 'x', 599);
    big[599] = '\0';
    free(f->series[0]->labels[0]->value);
    f->series[0]->labels[0]->value = big;
    assert_int_equal(st_store_open(&o, &st), ST_OK);
    assert_int_equal(apply_one(st, f, &dup), ST_OK);
    st_frame_free(f);
    st_store_close(st);
}

/* ---- compaction ---- */

#define HOUR_MS 3600000LL
#define CT0 1699999200000LL /* on an hour */

struct pts {
    int64_t from;
    int64_t to;
    size_t n;
    int64_t t[120000];
    double v[120000];
};

static int pts_series(void *arg, const st_scan_series *s)
{
    (void)arg;
    (void)s;
    return 1;
}

static int pts_block(void *arg, const st_scan_series *s, const Strata__V1__Series *b)
{
    struct pts *p = arg;
    size_t n = st_series_npoints(b);
    (void)s;
    /* a block overlaps the range; its points outside it are the caller's
     * to skip (a compacted hour is one block) */
    for (size_t i = 0; i < n && p->n < 120000; i++) {
        int64_t t = b->start_unix_ms + (int64_t)i * b->interval_ms;
        if (t >= p->from && t < p->to) {
            p->t[p->n] = t;
            p->v[p->n++] = st_series_value(b, i);
        }
    }
    return ST_OK;
}

static void scan_points(st_store *st, const char *metric, int64_t from, int64_t to, struct pts *p)
{
    st_scan_cb cb = {pts_series, pts_block, p, NULL};
    p->n = 0;
    p->from = from;
    p->to = to;
    assert_int_equal(st_store_scan(st, metric, NULL, 0, from, to, &cb), ST_OK);
}

struct rsum {
    double sum;
    uint64_t count;
};

static int rsum_rollup(void *arg, const st_scan_series *s, const Strata__V1__RollupBlock *b)
{
    struct rsum *r = arg;
    (void)s;
    for (size_t i = 0; i < b->n_rows; i++) {
        r->sum += b->rows[i]->sum;
        r->count += b->rows[i]->count;
    }
    return ST_OK;
}

/* Rows of a callback over a range: only those inside it count. */
struct rsum_in {
    struct rsum r;
    int64_t from;
    int64_t to;
};

static int rsum_in_rollup(void *arg, const st_scan_series *s, const Strata__V1__RollupBlock *b)
{
    struct rsum_in *r = arg;
    (void)s;
    for (size_t i = 0; i < b->n_rows; i++) {
        int64_t t = b->start_unix_ms + (int64_t)i * b->bucket_ms;
        if (t >= r->from && t < r->to) {
            r->r.sum += b->rows[i]->sum;
            r->r.count += b->rows[i]->count;
        }
    }
    return ST_OK;
}

static void maintain_all(st_store *st, int64_t now)
{
    bool more = true;
    for (int i = 0; more && i < 100000; i++) {
        assert_int_equal(st_store_maintain(st, now, 1, &more), ST_OK);
    }
    assert_false(more);
}

/* Retention passes that found nothing due are skipped on bounds the
 * writes keep: a pass that pruned part of the raw blocks, then blocks
 * written after it, then a pass once everything is past retention: no raw
 * block may be left, and the 1 m rows (kept 30 days) must all be. */
static void test_retention_bounds_follow_writes(void **state)
{
    struct st_store_opts o = {.dir = tmpdir, .no_sync = true, .retention = {.raw_ms = HOUR_MS}};
    struct st_store_stats stats;
    struct rsum r = {0, 0};
    st_scan_cb cb = {pts_series, pts_block, &r, rsum_rollup};
    st_store *st;
    uint64_t seq = 1;
    bool dup;
    (void)state;
    assert_int_equal(st_store_open(&o, &st), ST_OK);
    for (int64_t t = CT0; t < CT0 + 90 * 60000LL; t += 10000) {
        st_frame *f = make_frame(agent_a, seq++, 3, 10, t, 1);
        assert_int_equal(apply_one(st, f, &dup), ST_OK);
        st_frame_free(f);
    }
    maintain_all(st, CT0 + 95 * 60000LL); /* prunes what ended before CT0 + 35 min */
    assert_int_equal(st_store_stats(st, &stats), ST_OK);
    assert_true(stats.point_blocks > 0);
    for (int64_t t = CT0 + 100 * 60000LL; t < CT0 + 110 * 60000LL; t += 10000) {
        st_frame *f = make_frame(agent_a, seq++, 3, 10, t, 1);
        assert_int_equal(apply_one(st, f, &dup), ST_OK);
        st_frame_free(f);
    }
    /* the first pass stops where the minutes were built when it ran; the
     * next, a minute later, finds the rest */
    maintain_all(st, CT0 + 5 * HOUR_MS);
    maintain_all(st, CT0 + 5 * HOUR_MS + 61000);
    assert_int_equal(st_store_stats(st, &stats), ST_OK);
    assert_int_equal(stats.point_blocks, 0);
    assert_int_equal(st_store_scan_rollups(st, "m.0", NULL, 0, ST_RES_1M, 0, INT64_MAX, &cb),
                     ST_OK);
    assert_int_equal(r.count, 100 * 60); /* 90 + 10 minutes of 1 s points */
    st_store_close(st);
}

/* ---- the builder thread and late frames ---- */

#define RACE_SERIES 200
#define RACE_MINUTES 70

/* The 1 m rows and the 1 h row of m.<i> against its raw points: every
 * closed minute and hour of [CT0, CT0 + RACE_MINUTES min). */
static void check_rows_exact(st_store *st, int i)
{
    static struct pts p;
    char name[16];
    snprintf(name, sizeof(name), "m.%d", i);
    for (int k = 0; k <= RACE_MINUTES; k++) {
        bool hour = k == RACE_MINUTES;
        int64_t from = CT0 + (hour ? 0 : k * 60000LL);
        int64_t to = hour ? CT0 + HOUR_MS : from + 60000;
        struct rsum_in r = {{0, 0}, from, to};
        st_scan_cb cb = {pts_series, pts_block, &r, rsum_in_rollup};
        double want = 0;
        scan_points(st, name, from, to, &p);
        for (size_t j = 0; j < p.n; j++) {
            want += p.v[j];
        }
        assert_int_equal(
            st_store_scan_rollups(st, name, NULL, 0, hour ? ST_RES_1H : ST_RES_1M, from, to, &cb),
            ST_OK);
        if (r.r.count != p.n || r.r.sum != want) {
            print_message("m.%d %s %d: rows %llu points (sum %.0f), raw %zu (sum %.0f)\n", i,
                          hour ? "hour" : "minute", k, (unsigned long long)r.r.count, r.r.sum, p.n,
                          want);
        }
        assert_int_equal(r.r.count, p.n);
        assert_true(r.r.sum == want);
    }
}

/* The store built to now: no late mark left, every closed minute and the
 * hour built, the rows exact. */
static void check_built(st_store *st, int64_t now)
{
    struct st_store_stats stats;
    maintain_all(st, now);
    assert_int_equal(st_store_stats(st, &stats), ST_OK);
    assert_int_equal(stats.dirty, 0);
    assert_true(stats.wm_1m == now - 60000); /* every closed minute */
    assert_true(stats.wm_1h == CT0 + HOUR_MS);
    for (int i = 0; i < RACE_SERIES; i += 19) {
        check_rows_exact(st, i);
    }
}

/* One slice, then 1-3 late frames of every series: at the minute where the
 * watermark stands (which the thread is likely reading, given a moment to
 * start) or just ahead, so a block the thread's rows miss is never masked
 * by a rebuild that later frames into a built minute would cause; or
 * anywhere. */
static st_store *race_round(st_store *st, int64_t now, uint64_t *seq, bool frontier)
{
    struct st_store_stats stats;
    int64_t m;
    int n = 1 + rand() % 3;
    bool more;
    bool dup;
    assert_int_equal(st_store_maintain(st, now, 1, &more), ST_OK);
    usleep((useconds_t)(rand() % 1500));
    assert_int_equal(st_store_stats(st, &stats), ST_OK);
    m = frontier ? (stats.wm_1m ? stats.wm_1m : CT0) + (rand() % 4 / 2 * (rand() % 2 + 1)) * 60000LL
                 : CT0 + (rand() % RACE_MINUTES) * 60000LL;
    for (int j = 0; j < n && m < CT0 + RACE_MINUTES * 60000LL; j++) {
        /* 5 points at a second inside the minute, past its end at times */
        st_frame *f = make_frame(agent_b, (*seq)++, RACE_SERIES, 5, m + (rand() % 58) * 1000LL,
                                 100 + rand() % 50);
        assert_int_equal(apply_one(st, f, &dup), ST_OK);
        assert_false(dup);
        st_frame_free(f);
    }
    return st;
}

/* Late frames into closed minutes while the builder thread works on them
 * (being read, queued, not reached yet), the store closed with rows queued
 * and reopened; then late frames anywhere (built minutes): every 1 m and
 * 1 h row still equals its raw points. The interleaving differs from run
 * to run; the result may not. */
static void test_late_frames_race_builder(void **state)
{
    struct st_store_opts o = {.dir = tmpdir, .no_sync = true};
    int64_t now = CT0 + (RACE_MINUTES + 5) * 60000LL;
    st_store *st;
    uint64_t seq_a = 1;
    uint64_t seq_b = 1;
    bool dup;
    (void)state;
    assert_int_equal(st_store_open(&o, &st), ST_OK);
    for (int64_t t = CT0; t < CT0 + RACE_MINUTES * 60000LL; t += 10000) {
        st_frame *f = make_frame(agent_a, seq_a++, RACE_SERIES, 10, t, (t / 10000) % 17);
        assert_int_equal(apply_one(st, f, &dup), ST_OK);
        st_frame_free(f);
    }
    srand(4242);
    for (int i = 0; i < 150; i++) {
        st = race_round(st, now, &seq_b, true);
        if (i == 10) {
            st_store_close(st);
            assert_int_equal(st_store_open(&o, &st), ST_OK);
        }
    }
    check_built(st, now);
    for (int i = 0; i < 100; i++) {
        st = race_round(st, now, &seq_b, false);
    }
    check_built(st, now);
    st_store_close(st);
}

/* Entries of one resolution that overlap [from, to), fresh and compacted. */
struct entry_count {
    enum st_res res;
    int64_t from;
    int64_t to;
    int fresh;
    int compacted;
};

static int count_entries(void *arg, enum st_res res, bool compacted, int64_t start_ms,
                         int64_t end_ms, size_t klen, size_t vlen)
{
    struct entry_count *c = arg;
    (void)klen;
    (void)vlen;
    if (res == c->res && start_ms < c->to && end_ms > c->from) {
        *(compacted ? &c->compacted : &c->fresh) += 1;
    }
    return 0;
}

/* Whether the hour's 1 m rows of m.1 are all compacted. */
static bool hour_rows_compacted(st_store *st, int64_t hour)
{
    struct entry_count c = {ST_RES_1M, hour, hour + HOUR_MS, 0, 0};
    assert_int_equal(st_store_walk_entries(st, "m.1", count_entries, &c), ST_OK);
    assert_true(c.fresh + c.compacted > 0);
    return c.fresh == 0;
}

/* Three hours of 10-point frames (one late frame in the first hour after
 * it was compacted): the raw points and the rollups read the same before
 * and after compaction, and the hour's blocks became one entry. */
static void test_compaction_keeps_points(void **state)
{
    struct st_store_opts o = {.dir = tmpdir, .no_sync = true};
    static struct pts before;
    static struct pts after;
    struct st_store_stats stats;
    st_store *st;
    bool dup;
    uint64_t seq = 1;
    (void)state;
    assert_int_equal(st_store_open(&o, &st), ST_OK);
    for (int64_t t = CT0; t < CT0 + 3 * HOUR_MS; t += 10000) {
        st_frame *f;
        if (t == CT0 + 600000) {
            continue; /* arrives late, below */
        }
        f = make_frame(agent_a, seq++, 2, 10, t, (t / 1000) % 97 - 40);
        assert_int_equal(apply_one(st, f, &dup), ST_OK);
        st_frame_free(f);
    }
    scan_points(st, "m.1", 0, INT64_MAX, &before);
    assert_int_equal(before.n, 3 * 3600 - 10);
    maintain_all(st, CT0 + 3 * HOUR_MS + 60000);
    assert_int_equal(st_store_stats(st, &stats), ST_OK);
    /* the last closed hour keeps its fresh blocks for ten minutes more (a
     * read of its newest minutes does not inflate the whole hour); the two
     * before close a 6-hour unit (CT0 is 4 h into one) and merge */
    assert_int_equal(stats.point_blocks, 2 * 1 + 2 * 360);
    /* its rollup rows too; the hour before is compacted */
    assert_false(hour_rows_compacted(st, CT0 + 2 * HOUR_MS));
    assert_true(hour_rows_compacted(st, CT0 + HOUR_MS));
    maintain_all(st, CT0 + 3 * HOUR_MS + 60000 + 9 * 60000);
    assert_int_equal(st_store_stats(st, &stats), ST_OK);
    assert_int_equal(stats.point_blocks, 2 * 1 + 2 * 360);
    assert_false(hour_rows_compacted(st, CT0 + 2 * HOUR_MS));
    /* past the ten minutes: three closed hours, one entry per series and
     * hour but the merged two */
    maintain_all(st, CT0 + 3 * HOUR_MS + 60000 + 11 * 60000);
    assert_int_equal(st_store_stats(st, &stats), ST_OK);
    assert_int_equal(stats.point_blocks, 2 * 2);
    assert_true(hour_rows_compacted(st, CT0 + 2 * HOUR_MS));
    scan_points(st, "m.1", 0, INT64_MAX, &after);
    assert_int_equal(after.n, before.n);
    assert_memory_equal(after.t, before.t, before.n * sizeof(int64_t));
    assert_memory_equal(after.v, before.v, before.n * sizeof(double));
    /* a range inside a compacted hour */
    scan_points(st, "m.1", CT0 + 1234567, CT0 + 1300000, &after);
    assert_int_equal(after.n, 65);
    assert_true(after.t[0] == CT0 + 1235000);
    /* the late frame lands in the compacted hour, and is folded in */
    {
        st_frame *f = make_frame(agent_a, seq++, 2, 10, CT0 + 600000, 5);
        /* a compacted entry may cover more than the range: count inside */
        struct rsum_in rs1m = {{0, 0}, CT0, CT0 + HOUR_MS};
        struct rsum_in rs10 = {{0, 0}, CT0, CT0 + HOUR_MS};
        st_scan_cb cb = {pts_series, pts_block, NULL, rsum_in_rollup};
        double want = 0;
        assert_int_equal(apply_one(st, f, &dup), ST_OK);
        st_frame_free(f);
        maintain_all(st, CT0 + 4 * HOUR_MS + 60000);
        scan_points(st, "m.1", CT0, CT0 + HOUR_MS, &after);
        assert_int_equal(after.n, 3600);
        for (size_t i = 0; i < after.n; i++) {
            assert_true(i == 0 || after.t[i] > after.t[i - 1]);
            want += after.v[i];
        }
        cb.arg = &rs1m;
        assert_int_equal(
            st_store_scan_rollups(st, "m.1", NULL, 0, ST_RES_1M, CT0, CT0 + HOUR_MS, &cb), ST_OK);
        cb.arg = &rs10;
        assert_int_equal(
            st_store_scan_rollups(st, "m.1", NULL, 0, ST_RES_10S, CT0, CT0 + HOUR_MS, &cb), ST_OK);
        assert_true(rs1m.r.count == 3600 && rs10.r.count == 3600);
        assert_true(rs1m.r.sum == want && rs10.r.sum == want);
    }
    st_store_close(st);
    /* and after a reopen */
    assert_int_equal(st_store_open(&o, &st), ST_OK);
    scan_points(st, "m.1", CT0 + HOUR_MS, CT0 + 2 * HOUR_MS, &after);
    assert_int_equal(after.n, 3600);
    st_store_close(st);
}

/* Every 1 h row of [from, to): its count and sum, and whether a min or
 * max came out infinite. */
struct hour_rows {
    struct rsum_in in;
    int infinite;
};

static int hour_rows_rollup(void *arg, const st_scan_series *s, const Strata__V1__RollupBlock *b)
{
    struct hour_rows *h = arg;
    for (size_t i = 0; i < b->n_rows; i++) {
        int64_t t = b->start_unix_ms + (int64_t)i * b->bucket_ms;
        if (t >= h->in.from && t < h->in.to && b->rows[i]->count > 0) {
            h->infinite += isinf(b->rows[i]->min) || isinf(b->rows[i]->max);
        }
    }
    return rsum_in_rollup(&h->in, s, b);
}

/* A late frame in a compacted hour of a counter rebuilds its 1 h row from
 * 1 m rows that keep sums and counts only: the sums add up, and the min
 * and max it cannot know stay unknown (NaN), not infinite, in the fresh
 * 1 h row of a day not yet compacted. */
/* Hours at the start of a day: the day of 1 h rows stays open (fresh) */
#define B0 (CT0 + 2 * HOUR_MS)

static void test_counter_hour_rebuilt_from_sums(void **state)
{
    struct st_store_opts o = {.dir = tmpdir, .no_sync = true};
    struct hour_rows h = {{{0, 0}, B0, B0 + HOUR_MS}, 0};
    st_scan_cb cb = {pts_series, pts_block, &h, hour_rows_rollup};
    static struct pts p;
    double want = 0;
    st_store *st;
    bool dup;
    uint64_t seq = 1;
    (void)state;
    assert_int_equal(st_store_open(&o, &st), ST_OK);
    for (int64_t t = B0; t < B0 + 2 * HOUR_MS; t += 10000) {
        st_frame *f;
        if (t == B0 + 600000) {
            continue; /* arrives late, below */
        }
        f = make_frame(agent_a, seq++, 1, 10, t, (t / 1000) % 97);
        f->series[0]->kind = STRATA__V1__KIND__COUNTER;
        assert_int_equal(apply_one(st, f, &dup), ST_OK);
        st_frame_free(f);
    }
    maintain_all(st, B0 + 2 * HOUR_MS + 60000);
    {
        st_frame *f = make_frame(agent_a, seq++, 1, 10, B0 + 600000, 5);
        f->series[0]->kind = STRATA__V1__KIND__COUNTER;
        assert_int_equal(apply_one(st, f, &dup), ST_OK);
        st_frame_free(f);
    }
    maintain_all(st, B0 + 3 * HOUR_MS + 60000);
    scan_points(st, "m.0", B0, B0 + HOUR_MS, &p);
    assert_int_equal(p.n, 3600);
    for (size_t i = 0; i < p.n; i++) {
        want += p.v[i];
    }
    assert_int_equal(st_store_scan_rollups(st, "m.0", NULL, 0, ST_RES_1H, B0, B0 + HOUR_MS, &cb),
                     ST_OK);
    assert_true(h.in.r.count == 3600 && h.in.r.sum == want);
    assert_int_equal(h.infinite, 0);
    st_store_close(st);
}

/* The sum and count of every point of m.<i>, i < nseries. */
static void points_total(st_store *st, int nseries, double *sum, size_t *n)
{
    static struct pts p;
    *sum = 0;
    *n = 0;
    for (int i = 0; i < nseries; i++) {
        char name[16];
        snprintf(name, sizeof(name), "m.%d", i);
        scan_points(st, name, 0, INT64_MAX, &p);
        for (size_t k = 0; k < p.n; k++) {
            *sum += p.v[k];
        }
        *n += p.n;
    }
}

/* A child process compacts four hours of 30 series in 1 ms slices and is
 * killed with SIGKILL at random moments, again and again: after each kill
 * the reopened store holds every point, and once a child finishes, every
 * hour is compacted and the rollups add up to the points. */
static void test_kill_during_compaction(void **state)
{
    struct st_store_opts o = {.dir = tmpdir, .no_sync = true};
    struct st_store_stats stats;
    st_store *st;
    double want_sum;
    size_t want_n;
    uint64_t seq = 1;
    int kills = 0;
    int partial = 0;
    bool done = false;
    (void)state;
    assert_int_equal(st_store_open(&o, &st), ST_OK);
    for (int64_t t = CT0; t < CT0 + 4 * HOUR_MS; t += 10000) {
        st_frame *f = make_frame(agent_a, seq++, 30, 10, t, (t / 7000) % 101 - 50);
        bool dup;
        assert_int_equal(apply_one(st, f, &dup), ST_OK);
        st_frame_free(f);
    }
    points_total(st, 30, &want_sum, &want_n);
    assert_int_equal(want_n, 30 * 4 * 3600);
    st_store_close(st);
    o.no_sync = false; /* the child commits as the collector does */
    srand(12345);
    for (int round = 0; round < 400 && !done; round++) {
        pid_t pid = fork();
        int status = 0;
        double sum;
        size_t n;
        assert_true(pid >= 0);
        if (pid == 0) {
            bool more = true;
            if (st_store_open(&o, &st) != ST_OK) {
                _exit(2);
            }
            while (more) {
                if (st_store_maintain(st, CT0 + 5 * HOUR_MS, 1, &more) != ST_OK) {
                    _exit(3);
                }
            }
            st_store_close(st);
            _exit(0);
        }
        usleep((useconds_t)(1000 + rand() % 8000));
        if (kill(pid, SIGKILL) == 0) {
            kills++;
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (WIFEXITED(status)) {
            assert_int_equal(WEXITSTATUS(status), 0);
            done = true;
        }
        assert_int_equal(st_store_open(&o, &st), ST_OK);
        points_total(st, 30, &sum, &n);
        assert_int_equal(n, want_n);
        assert_true(sum == want_sum);
        assert_int_equal(st_store_stats(st, &stats), ST_OK);
        /* killed with some hours compacted and others not */
        partial += stats.point_blocks > 30 * 4 && stats.point_blocks < 30 * 4 * 360;
        st_store_close(st);
    }
    print_message("%d kills before a child finished, %d mid-compaction\n", kills, partial);
    assert_true(done);
    assert_true(partial > 1);
    assert_int_equal(st_store_open(&o, &st), ST_OK);
    assert_int_equal(st_store_stats(st, &stats), ST_OK);
    /* four hours, the first two merged (their 6-hour unit closed) */
    assert_int_equal(stats.point_blocks, 30 * 3);
    {
        struct rsum r = {0, 0};
        st_scan_cb cb = {pts_series, pts_block, &r, rsum_rollup};
        for (int i = 0; i < 30; i++) {
            char name[16];
            snprintf(name, sizeof(name), "m.%d", i);
            assert_int_equal(st_store_scan_rollups(st, name, NULL, 0, ST_RES_1M, 0, INT64_MAX, &cb),
                             ST_OK);
        }
        assert_true(r.count == want_n && r.sum == want_sum);
    }
    st_store_close(st);
}

/* What a scan's series callback was given, in order: kind, unit and the
 * labels as "k=v,k=v". */
struct seen_series {
    int n;
    int kind[400];
    char unit[400][80];
    char labels[400][200];
};

static int seen_series_fn(void *arg, const st_scan_series *s)
{
    struct seen_series *x = arg;
    size_t len = 0;
    if (x->n >= 400) {
        return 0;
    }
    x->kind[x->n] = (int)s->rec->kind;
    snprintf(x->unit[x->n], sizeof(x->unit[0]), "%s", s->rec->unit);
    x->labels[x->n][0] = '\0';
    for (size_t i = 0; i < s->rec->n_labels && len < sizeof(x->labels[0]); i++) {
        len += (size_t)snprintf(x->labels[x->n] + len, sizeof(x->labels[0]) - len, "%s=%s,",
                                s->rec->labels[i]->key, s->rec->labels[i]->value);
    }
    x->n++;
    return 0;
}

static void scan_seen(st_store *st, const char *metric, struct seen_series *x)
{
    st_scan_cb cb = {seen_series_fn, pts_block, x, NULL};
    memset(x, 0, sizeof(*x));
    assert_int_equal(st_store_scan(st, metric, NULL, 0, 0, INT64_MAX, &cb), ST_OK);
}

/* A scan reads a series' labels off its dictionary key and its kind and
 * unit from what earlier scans kept: the second scan of a metric gives
 * every series as the first (records read), a metric name reused with
 * another kind keeps each series' own, and past the units kept a series
 * still gets its own (its record is read every time). */
static void test_scan_series_as_recorded(void **state)
{
    struct st_store_opts o = {.dir = tmpdir, .no_sync = true};
    static struct seen_series first;
    static struct seen_series again;
    st_store *st;
    uint64_t seq = 1;
    bool dup;
    (void)state;
    assert_int_equal(st_store_open(&o, &st), ST_OK);
    for (int i = 0; i < 300; i++) { /* 300 units: more than are kept */
        st_frame *f = make_frame(agent_a, seq++, 1, 1, CT0 + i * 1000, i);
        char v[32];
        free(f->series[0]->unit);
        snprintf(v, sizeof(v), "u%d", i);
        f->series[0]->unit = strdup(v);
        free(f->series[0]->labels[0]->value);
        snprintf(v, sizeof(v), "s%03d", i);
        f->series[0]->labels[0]->value = strdup(v);
        f->series[0]->kind = i % 3 == 0 ? STRATA__V1__KIND__COUNTER : STRATA__V1__KIND__GAUGE;
        assert_int_equal(apply_one(st, f, &dup), ST_OK);
        st_frame_free(f);
    }
    scan_seen(st, "m.0", &first);
    assert_int_equal(first.n, 300);
    for (int round = 0; round < 2; round++) {
        scan_seen(st, "m.0", &again);
        assert_int_equal(again.n, first.n);
        for (int i = 0; i < first.n; i++) {
            assert_int_equal(again.kind[i], first.kind[i]);
            assert_string_equal(again.unit[i], first.unit[i]);
            assert_string_equal(again.labels[i], first.labels[i]);
        }
    }
    /* in dictionary order: the labels sort the series */
    assert_string_equal(first.labels[7], "host=h1,k=s007,role=edge,");
    assert_string_equal(first.unit[7], "u7");
    assert_int_equal(first.kind[7], STRATA__V1__KIND__GAUGE);
    assert_int_equal(first.kind[9], STRATA__V1__KIND__COUNTER);
    st_store_close(st);
}

/* A compaction pass cut short by a restart, resumed after the lagged
 * limit crossed an hour: the series done before the restart used a limit
 * that left the last closed hour fresh (its ten minutes had not passed),
 * and another pass must follow to compact theirs without waiting for the
 * next hour. Late frames in the first, compacted hour give the pass work
 * on every series, so that the restart comes part-way through them. */
static void test_compaction_resumed_after_a_restart(void **state)
{
    enum { N = 200 }; /* a 1 ms slice recompacts far fewer hours than this */
    struct st_store_opts o = {.dir = tmpdir, .no_sync = true};
    struct st_store_stats stats;
    st_store *st;
    uint64_t seq = 1;
    bool more = true;
    bool dup;
    (void)state;
    assert_int_equal(st_store_open(&o, &st), ST_OK);
    for (int64_t t = CT0; t < CT0 + 2 * HOUR_MS; t += 10000) {
        st_frame *f = make_frame(agent_a, seq++, N, 10, t, (t / 7000) % 101 - 50);
        assert_int_equal(apply_one(st, f, &dup), ST_OK);
        st_frame_free(f);
    }
    /* the first hour compacted, its ten minutes past */
    maintain_all(st, CT0 + HOUR_MS + 12 * 60000);
    {
        st_frame *f = make_frame(agent_a, seq++, N, 1, CT0 + 600000, 7);
        assert_int_equal(apply_one(st, f, &dup), ST_OK);
        st_frame_free(f);
    }
    /* a minute past the second hour, in 1 ms slices: its hour watermark
     * starts a pass that folds the late points in and leaves the second
     * hour fresh; stopped part-way through the raw points */
    while (more && !(st->rs.cmp_wm == CT0 + 2 * HOUR_MS && st->rs.cmp_phase == ST_RES_RAW &&
                     st->rs.cmp_sid > 0)) {
        assert_int_equal(st_store_maintain(st, CT0 + 2 * HOUR_MS + 60000, 1, &more), ST_OK);
    }
    assert_true(more);
    st_store_close(st);
    /* twelve minutes past it, after a restart: every series compacted, the
     * two hours merged (their 6-hour unit closed; CT0 is 4 h into one) */
    assert_int_equal(st_store_open(&o, &st), ST_OK);
    maintain_all(st, CT0 + 2 * HOUR_MS + 12 * 60000);
    assert_int_equal(st_store_stats(st, &stats), ST_OK);
    assert_int_equal(stats.point_blocks, N);
    st_store_close(st);
}

/* Sum and count of the rows of res over [from, to) of m.<i>. */
static struct rsum rollup_total(st_store *st, int i, enum st_res res, int64_t from, int64_t to)
{
    struct rsum r = {0, 0};
    st_scan_cb cb = {pts_series, pts_block, &r, rsum_rollup};
    char name[16];
    snprintf(name, sizeof(name), "m.%d", i);
    assert_int_equal(st_store_scan_rollups(st, name, NULL, 0, res, from, to, &cb), ST_OK);
    return r;
}

/* 30 hours of one series: closed hours of 10 s rows merge into 6-hour
 * entries and of 1 m rows into a day; any range of 1 m and 1 h rows adds
 * up to its points, a late frame in the merged day included. */
static void test_compaction_levels(void **state)
{
    struct st_store_opts o = {.dir = tmpdir, .no_sync = true};
    static struct pts p;
    st_store *st;
    uint64_t seq = 1;
    int64_t late = CT0 + 5 * HOUR_MS + 120000;
    int64_t end = CT0 + 30 * HOUR_MS;
    bool dup;
    (void)state;
    assert_int_equal(st_store_open(&o, &st), ST_OK);
    for (int64_t t = CT0; t < end; t += 10000) {
        st_frame *f;
        if (t == late) {
            continue;
        }
        f = make_frame(agent_a, seq++, 1, 10, t, (t / 3000) % 89 - 30);
        assert_int_equal(apply_one(st, f, &dup), ST_OK);
        st_frame_free(f);
    }
    maintain_all(st, end + 120000);
    {
        st_frame *f = make_frame(agent_a, seq++, 1, 10, late, 17);
        assert_int_equal(apply_one(st, f, &dup), ST_OK);
        st_frame_free(f);
    }
    maintain_all(st, end + 2 * HOUR_MS);
    for (int k = 0; k < 12; k++) {
        int64_t from = CT0 + (int64_t)(k * 7919) % (29 * HOUR_MS) / 60000 * 60000;
        int64_t to = from + (1 + k) * 2 * HOUR_MS;
        struct rsum_in r1m = {{0, 0}, from, to};
        st_scan_cb cb = {pts_series, pts_block, &r1m, rsum_in_rollup};
        double want = 0;
        to = to > end ? end : to;
        r1m.to = to;
        scan_points(st, "m.0", from, to, &p);
        for (size_t i = 0; i < p.n; i++) {
            want += p.v[i];
        }
        assert_int_equal(st_store_scan_rollups(st, "m.0", NULL, 0, ST_RES_1M, from, to, &cb),
                         ST_OK);
        assert_true(r1m.r.count == p.n && r1m.r.sum == want);
    }
    {
        struct rsum r1h = rollup_total(st, 0, ST_RES_1H, 0, INT64_MAX);
        struct rsum r10 = rollup_total(st, 0, ST_RES_10S, 0, INT64_MAX);
        double want = 0;
        scan_points(st, "m.0", 0, INT64_MAX, &p);
        for (size_t i = 0; i < p.n; i++) {
            want += p.v[i];
        }
        assert_int_equal(p.n, 30 * 3600);
        assert_true(r1h.count == p.n && r1h.sum == want);
        assert_true(r10.count == p.n && r10.sum == want);
    }
    st_store_close(st);
}

/* Points of [from, to) as (time, value) pairs sorted, for comparing reads
 * that start in different places (block order may differ between them). */
static int cmp_pt(const void *a, const void *b)
{
    const double *x = a;
    const double *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : x[1] < y[1] ? -1 : x[1] > y[1];
}

static size_t sorted_pts(const struct pts *p, int64_t from, int64_t to, double (*out)[2])
{
    size_t n = 0;
    for (size_t i = 0; i < p->n; i++) {
        if (p->t[i] >= from && p->t[i] < to) {
            out[n][0] = (double)p->t[i];
            out[n++][1] = p->v[i];
        }
    }
    qsort(out, n, sizeof(*out), cmp_pt);
    return n;
}

/* Every window read from a seek equals the whole series read from its
 * start, cut to the window: the seek must find compacted entries (and the
 * late blocks after them) below the hour watermark, and may skip looking
 * for them above it. */
static void check_windows(st_store *st, int64_t lo, int64_t hi)
{
    static struct pts all;
    static struct pts win;
    static double want[12000][2];
    static double got[12000][2];
    scan_points(st, "m.0", 0, INT64_MAX, &all);
    for (int64_t from = lo; from < hi; from += 7 * 60000 + 1000) {
        int64_t offs[3] = {0, HOUR_MS - from % HOUR_MS - 1000, HOUR_MS - from % HOUR_MS};
        for (int j = 0; j < 3; j++) {
            int64_t f = from + offs[j];
            int64_t to = f + 20 * 60000;
            size_t nw = sorted_pts(&all, f, to, want);
            size_t ng;
            scan_points(st, "m.0", f, to, &win);
            ng = sorted_pts(&win, f, to, got);
            assert_int_equal(ng, nw);
            assert_memory_equal(got, want, nw * sizeof(*want));
        }
    }
}

static void put_frame(st_store *st, uint64_t *seq, int npoints, int64_t t)
{
    bool dup;
    st_frame *f = make_frame(agent_a, (*seq)++, 1, npoints, t, (t / 1000) % 89 - 30);
    assert_int_equal(apply_one(st, f, &dup), ST_OK);
    st_frame_free(f);
}

/* 13 hours of one series (compacted hours, merged 6 hours, blocks that
 * run over an hour's end), then late frames in compacted hours that stay
 * fresh until the next pass: windows read the same points wherever they
 * start, before and after that pass, and after a reopen. */
static void test_seek_across_compaction(void **state)
{
    struct st_store_opts o = {.dir = tmpdir, .no_sync = true};
    /* late blocks 20 minutes into each hour after the last merged 6 hours
     * (the hour watermark's last compacted hour among them), and others */
    static const int64_t late[] = {
        2 * HOUR_MS + 300000,      2 * HOUR_MS - 5000,        7 * HOUR_MS + 1800000,
        11 * HOUR_MS + 59 * 60000, 8 * HOUR_MS + 20 * 60000,  9 * HOUR_MS + 20 * 60000,
        10 * HOUR_MS + 20 * 60000, 11 * HOUR_MS + 20 * 60000, 12 * HOUR_MS + 20 * 60000};
    int64_t end = CT0 + 13 * HOUR_MS + 1800000; /* the last half hour stays fresh */
    uint64_t seq = 1;
    st_store *st;
    (void)state;
    assert_int_equal(st_store_open(&o, &st), ST_OK);
    for (int64_t t = CT0; t < end; t += 10000) {
        /* the last frame of each hour runs 50 s into the next */
        put_frame(st, &seq, t % HOUR_MS == HOUR_MS - 10000 ? 60 : 10, t);
    }
    maintain_all(st, end + 120000);
    for (size_t i = 0; i < sizeof(late) / sizeof(late[0]); i++) {
        put_frame(st, &seq, 90, CT0 + late[i]);
    }
    check_windows(st, CT0 - HOUR_MS, end + HOUR_MS);
    maintain_all(st, end + 2 * HOUR_MS);
    check_windows(st, CT0 - HOUR_MS, end + HOUR_MS);
    st_store_close(st);
    assert_int_equal(st_store_open(&o, &st), ST_OK);
    put_frame(st, &seq, 90, CT0 + 3 * HOUR_MS + 120000);
    check_windows(st, CT0 - HOUR_MS, end + HOUR_MS);
    st_store_close(st);
}

static int count_month_entries(void *arg, enum st_res res, bool compacted, int64_t start_ms,
                               int64_t end_ms, size_t klen, size_t vlen)
{
    (void)klen;
    (void)vlen;
    *(int *)arg += res == ST_RES_1H && compacted && end_ms - start_ms == 30 * 24 * HOUR_MS;
    return ST_OK;
}

/* 62 days of one point every 10 minutes: 1 h rows merge into 30-day
 * entries; any range of 1 h rows still adds up to its points. */
static void test_compaction_long_levels(void **state)
{
    /* raw kept for the whole test, to compare with */
    struct st_store_opts o = {
        .dir = tmpdir, .no_sync = true, .retention = {.raw_ms = 100 * 24 * HOUR_MS}};
    static struct pts p;
    int64_t end = CT0 + 62 * 24 * HOUR_MS;
    st_store *st;
    uint64_t seq = 1;
    bool dup;
    (void)state;
    assert_int_equal(st_store_open(&o, &st), ST_OK);
    for (int64_t t = CT0; t < end; t += 600000) {
        st_frame *f = make_frame(agent_a, seq++, 1, 1, t, (t / 600000) % 13);
        f->series[0]->interval_ms = 600000;
        assert_int_equal(apply_one(st, f, &dup), ST_OK);
        st_frame_free(f);
    }
    maintain_all(st, end + 2 * HOUR_MS);
    {
        int merged = 0;
        assert_int_equal(st_store_walk_entries(st, "m.0", count_month_entries, &merged), ST_OK);
        assert_true(merged >= 1);
    }
    for (int k = 0; k < 8; k++) {
        int64_t from = CT0 + (int64_t)k * 7 * 24 * HOUR_MS + k * HOUR_MS;
        int64_t to = from + (int64_t)(k + 1) * 5 * 24 * HOUR_MS;
        struct rsum_in r1h = {{0, 0}, from, to};
        st_scan_cb cb = {pts_series, pts_block, &r1h, rsum_in_rollup};
        double want = 0;
        scan_points(st, "m.0", from, to, &p);
        for (size_t i = 0; i < p.n; i++) {
            want += p.v[i];
        }
        assert_int_equal(st_store_scan_rollups(st, "m.0", NULL, 0, ST_RES_1H, from, to, &cb),
                         ST_OK);
        assert_true(r1h.r.count == p.n && r1h.r.sum == want);
    }
    st_store_close(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_dedup_window, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_info_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scan_order_and_match, setup, teardown),
        cmocka_unit_test_setup_teardown(test_map_full_grows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_series_key_too_long_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compaction_keeps_points, setup, teardown),
        cmocka_unit_test_setup_teardown(test_counter_hour_rebuilt_from_sums, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_during_compaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compaction_resumed_after_a_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scan_series_as_recorded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compaction_levels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compaction_long_levels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seek_across_compaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention_bounds_follow_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_late_frames_race_builder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tap_hands_over_commits, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
