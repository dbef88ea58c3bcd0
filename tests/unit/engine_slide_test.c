/* Sliding windows (st_query_slide) against full recomputation: a fleet
 * ships 10 s points at odd offsets, the clock moves 10 s per run, late
 * frames land in minutes already folded, a new series appears in the
 * past, and the store is closed and reopened under the slides; every
 * answer must equal st_query_fold_run's exactly (same groups, order and
 * values). Also the store's change notes (st_store_changed_since). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "err.h"
#include "feed.h"
#include "frame.h"
#include "query.h"
#include "sketch.h"
#include "store.h"
#include "tmpdir.h"
#include "testframe.h"

#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NHOST 6
#define NROUTE 4 /* the last route appears late, in the past */
#define PTS 6    /* 10 s points per frame: a minute */
#define SEC 1000LL
#define MIN 60000LL
#define T0 1712340000000LL /* the first frame starts here, on a minute */
#define NCHUNK 100         /* minutes of data in all */
#define FIRST_NOW (T0 + 80 * MIN)
#define RUNS 36

enum { M_LAT, M_REQ, M_MEM, M_TEMP, NMETRIC };

static const struct {
    const char *name;
    int kind;
} metrics[NMETRIC] = {
    {"w.latency", STRATA__V1__KIND__DISTRIBUTION},
    {"w.requests", STRATA__V1__KIND__COUNTER},
    {"w.mem", STRATA__V1__KIND__GAUGE},
    {"w.temp", STRATA__V1__KIND__GAUGE}, /* not integers: sums depend on their order */
};

static const char *routes[NROUTE] = {"a", "b", "c", "d"};
static bool applied[NHOST][NCHUNK];
static uint64_t next_seq[NHOST];
static char tmpdir[64];

/* Point p of chunk c of a host's series: a value from a formula, so a
 * frame can be built at any time. */
static double value(int m, int h, int r, int c, int p)
{
    unsigned x = (unsigned)m * 7919u + (unsigned)h * 104729u + (unsigned)r * 1299709u +
                 (unsigned)c * 15485863u + (unsigned)p * 32452843u;
    x ^= x >> 13;
    x *= 0x5bd1e995u;
    x ^= x >> 15;
    if (m == M_TEMP) {
        return 20.0 + (double)(x % 1000) / 7.0;
    }
    return (double)(x % (m == M_REQ ? 500 : 100000));
}

static void fill_sketches(Strata__V1__Series *out, int h, int r, int c)
{
    out->n_sketches = PTS;
    out->sketches = calloc(PTS, sizeof(*out->sketches));
    assert_non_null(out->sketches);
    for (int p = 0; p < PTS; p++) {
        st_sketch *sk = NULL;
        Strata__V1__Sketch *m = malloc(sizeof(*m));
        assert_non_null(m);
        strata__v1__sketch__init(m);
        assert_int_equal(st_sketch_new(ST_SKETCH_ALPHA, &sk), ST_OK);
        for (int k = 0; k < 1 + (int)value(M_REQ, h, r, c, p) % 5; k++) {
            double v = 0.001 * (1 + value(M_LAT, h, r, c, p * 8 + k) / 100.0);
            assert_int_equal(st_sketch_insert(sk, v), ST_OK);
        }
        assert_int_equal(st_sketch_to_proto(sk, m), ST_OK);
        st_sketch_free(sk);
        out->sketches[p] = m;
    }
}

/* Points sit at odd offsets within their 10 s buckets, host by host, so
 * window edges fall between the points of one bucket. */
static Strata__V1__Series *mk_series(int m, int h, int r, int c)
{
    Strata__V1__Series *s = malloc(sizeof(*s));
    assert_non_null(s);
    strata__v1__series__init(s);
    s->name = strdup(metrics[m].name);
    s->unit = strdup(m == M_LAT ? "s" : "1");
    s->kind = (Strata__V1__Kind)metrics[m].kind;
    s->labels = calloc(1, sizeof(*s->labels));
    assert_non_null(s->labels);
    s->labels[s->n_labels++] = st_test_label_new("route", routes[r]);
    s->start_unix_ms = T0 + (int64_t)c * MIN + (int64_t)h * 1700;
    s->interval_ms = 10000;
    if (m == M_LAT) {
        fill_sketches(s, h, r, c);
        return s;
    }
    s->n_values = PTS;
    s->values = malloc(PTS * sizeof(double));
    assert_non_null(s->values);
    for (int p = 0; p < PTS; p++) {
        s->values[p] = value(m, h, r, c, p);
    }
    return s;
}

static bool has_route(int h, int r, int c)
{
    /* route d: host 1 only, from chunk 40, sent late (see the runs) */
    return r < NROUTE - 1 || (h == 1 && c >= 40);
}

static st_frame *mk_frame(int h, int c, bool only_late_route)
{
    uint8_t id[16] = {0x5d, [15] = (uint8_t)(h + 1)};
    char host[16]; /* "h" and any int: the compiler checks */
    const char *detail = NULL;
    st_frame *f;
    snprintf(host, sizeof(host), "h%d", h);
    f = st_test_frame_new(id, ++next_seq[h], host,
                          h < NHOST / 2 ? STRATA__V1__ROLE__EDGE : STRATA__V1__ROLE__APP,
                          NMETRIC * NROUTE);
    for (int m = 0; m < NMETRIC; m++) {
        for (int r = 0; r < NROUTE; r++) {
            bool late_route = r == NROUTE - 1;
            if (has_route(h, r, c) && late_route == only_late_route) {
                f->series[f->n_series++] = mk_series(m, h, r, c);
            }
        }
    }
    assert_int_equal(st_frame_validate(f, NULL, NULL, &detail), ST_OK);
    return f;
}

static void apply(st_store *st, int h, int c, bool only_late_route)
{
    st_store_txn *t = NULL;
    st_frame *f = mk_frame(h, c, only_late_route);
    bool dup = true;
    assert_int_equal(st_store_begin(st, &t), ST_OK);
    assert_int_equal(st_store_apply(t, f, FIRST_NOW, &dup), ST_OK);
    assert_false(dup);
    assert_int_equal(st_store_commit(t), ST_OK);
    st_frame_free(f);
    if (!only_late_route) {
        applied[h][c] = true;
    }
}

/* Frames held back at first and sent during the runs, into minutes the
 * slides have folded by then. */
static bool held_back(int h, int c)
{
    return (h == 2 && c >= 52 && c < 56) || (h == 4 && c == 74) || (h == 0 && c == 78);
}

static st_store *open_store(void)
{
    struct st_store_opts o = {.dir = tmpdir, .no_sync = true};
    st_store *st = NULL;
    assert_int_equal(st_store_open(&o, &st), ST_OK);
    return st;
}

/* ---- the questions ---- */

struct question {
    int metric;
    const char *agg;
    const char *by;
    const char *match; /* or NULL */
    int64_t window;
    int64_t end_back; /* the window ends this long before now */
    bool exact;       /* the slide must answer it */
    const char *step; /* or NULL */
};

static const struct question questions[] = {
    {M_LAT, "p95", "role,route", NULL, 60 * MIN, 5 * MIN, true, NULL},
    {M_LAT, "count", "role,route", NULL, 60 * MIN, 5 * MIN, true, NULL},
    {M_LAT, "p95", "role,route", NULL, 5 * MIN, 0, true, NULL},
    {M_LAT, "max", "host", "role=edge", 5 * MIN, 0, true, NULL},
    {M_LAT, "rate", "route", NULL, 17 * MIN + 3100, 0, true, NULL},
    {M_REQ, "sum", "role,route", NULL, 60 * MIN, 5 * MIN, true, NULL},
    {M_REQ, "sum", "role,route", NULL, 5 * MIN, 0, true, NULL},
    {M_REQ, "rate", "route", NULL, 5 * MIN, 0, true, NULL},
    {M_REQ, "count", "host", "route=b", 5 * MIN, 0, true, NULL},
    {M_MEM, "avg", "host", NULL, 30 * MIN, 0, true, NULL},
    {M_MEM, "min", "host,route", NULL, 5 * MIN, 0, true, NULL},
    {M_TEMP, "avg", "host", NULL, 5 * MIN, 0, false, NULL},
    {M_TEMP, "max", "host", NULL, 5 * MIN, 0, true, NULL},
    /* the leak rule's steps, and a counter's per minute */
    {M_MEM, "avg", "host,route", NULL, 30 * MIN, 0, true, "60s"},
    {M_REQ, "sum", "route", NULL, 5 * MIN, 0, true, "60s"},
    {M_LAT, "p95", "host", NULL, 10 * MIN, 0, true, "120s"},
    /* a ratio: route b's share of the requests (over=route), and a sum
     * with the same matcher, which reads only route b's series */
    {M_REQ, "ratio", "role", "route=b", 5 * MIN, 0, true, NULL},
    {M_REQ, "sum", "role", "route=b", 5 * MIN, 0, true, NULL},
};
#define NQ (sizeof(questions) / sizeof(questions[0]))

static void parse(const struct question *qs, int64_t now, st_query *q)
{
    char from[32];
    char to[32];
    char err[256];
    st_qparam p[8];
    size_t n = 0;
    snprintf(from, sizeof(from), "%lld", (long long)(now - qs->end_back - qs->window));
    snprintf(to, sizeof(to), "%lld", (long long)(now - qs->end_back));
    p[n++] = (st_qparam){"metric", metrics[qs->metric].name};
    p[n++] = (st_qparam){"agg", qs->agg};
    p[n++] = (st_qparam){"by", qs->by};
    p[n++] = (st_qparam){"from", from};
    p[n++] = (st_qparam){"to", to};
    if (qs->match != NULL) {
        p[n++] = (st_qparam){"match", qs->match};
    }
    if (qs->step != NULL) {
        p[n++] = (st_qparam){"step", qs->step};
    }
    if (strcmp(qs->agg, "ratio") == 0) {
        p[n++] = (st_qparam){"over", "route"};
    }
    assert_int_equal(st_query_parse(p, n, now, q, err, sizeof(err)), ST_OK);
    q->max_series = 100000;
    q->max_points = 1000000;
}

static void expect_equal(const st_answer *full, const st_answer *slid, const struct question *qs,
                         int run)
{
    if (!st_answer_equal(full, slid)) {
        json_t *ja = st_answer_json(full);
        json_t *jb = st_answer_json(slid);
        char *a = json_dumps(ja, JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
        char *b = json_dumps(jb, JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
        json_decref(ja);
        json_decref(jb);
        print_error("run %d, %s %s by %s:\n full  %s\n slide %s\n", run, metrics[qs->metric].name,
                    qs->agg, qs->by, a, b);
        free(a);
        free(b);
        fail();
    }
}

/* One question at one time, both ways; the slide, once sized, must
 * answer every exact question itself. */
static void ask(st_store *st, st_query_slide *sl, const struct question *qs, int64_t now, int run)
{
    st_query q;
    st_query_fold *full = NULL;
    st_query_fold *slid = NULL;
    st_answer *a = NULL;
    st_answer *b = NULL;
    char err[256];
    enum st_agg agg;
    parse(qs, now, &q);
    agg = q.agg;
    assert_int_equal(st_query_fold_run(st, &q, &full, err, sizeof(err)), ST_OK);
    if (run == 0) {
        /* a new slide answers once a full answer sized it */
        if (st_query_slide_fold(st, sl, &q, &slid) == ST_EUNSUPPORTED) {
            st_query_slide_learn(sl, full);
        }
    } else {
        int rv = st_query_slide_fold(st, sl, &q, &slid);
        assert_int_equal(rv, qs->exact ? ST_OK : ST_EUNSUPPORTED);
    }
    st_query_release(&q);
    if (slid != NULL) {
        assert_int_equal(st_query_fold_rows(full, agg, &a), ST_OK);
        assert_int_equal(st_query_fold_rows(slid, agg, &b), ST_OK);
        expect_equal(a, b, qs, run);
        st_answer_unref(a);
        st_answer_unref(b);
        /* what the targets take from the groups by role and route */
        if (strcmp(qs->by, "role,route") == 0) {
            st_matcher m = {.key = "role", .value = "edge", .op = ST_MATCH_EQ};
            assert_int_equal(st_query_fold_merges(full, agg, &m, 1),
                             st_query_fold_merges(slid, agg, &m, 1));
            if (st_query_fold_merges(full, agg, &m, 1)) {
                assert_int_equal(st_query_fold_merged_rows(full, agg, &m, 1, &a), ST_OK);
                assert_int_equal(st_query_fold_merged_rows(slid, agg, &m, 1, &b), ST_OK);
                expect_equal(a, b, qs, run);
                st_answer_unref(a);
                st_answer_unref(b);
            }
        }
    }
    st_query_fold_free(full);
    st_query_fold_free(slid);
}

static void load(st_store *st, int upto)
{
    for (int c = 0; c < upto; c++) {
        for (int h = 0; h < NHOST; h++) {
            if (!applied[h][c] && !held_back(h, c)) {
                apply(st, h, c, false);
            }
        }
    }
}

/* Between runs: the next minute when the clock reaches it, late frames
 * at a few runs, and a close and reopen of the store at one. */
static st_store *between_runs(st_store *st, int run, int64_t now)
{
    load(st, (int)((now - T0) / MIN) + 1);
    if (run == 5) {
        for (int c = 52; c < 56; c++) {
            apply(st, 2, c, false); /* 25 minutes late: inside the folded baseline */
        }
    } else if (run == 11) {
        apply(st, 4, 74, false); /* inside the current window's folded buckets */
        apply(st, 0, 78, false);
    } else if (run == 17) {
        st_store_close(st);
        st = open_store();
        /* after the reopen: a series the slides never met, in the past */
        for (int c = 40; c < 70; c++) {
            apply(st, 1, c, true);
        }
    } else if (run == 23) {
        st_store_close(st);
        st = open_store(); /* nothing written: the slides cannot tell, so they read again */
    }
    return st;
}

/* Questions of one metric, by and matchers share a slide, as the
 * engine's do: the first of them. */
static size_t slide_of(size_t i)
{
    for (size_t j = 0; j < i; j++) {
        const struct question *a = &questions[i];
        const struct question *b = &questions[j];
        bool same_step =
            a->step == b->step || (a->step && b->step && strcmp(a->step, b->step) == 0);
        /* a ratio's slide is its own (eng.c keys it so) */
        bool same_kind = (strcmp(a->agg, "ratio") == 0) == (strcmp(b->agg, "ratio") == 0);
        if (a->metric == b->metric && same_kind && strcmp(a->by, b->by) == 0 && same_step &&
            (a->match == b->match || (a->match && b->match && strcmp(a->match, b->match) == 0))) {
            return j;
        }
    }
    return i;
}

/* ---- fed slides: the commits' points from the store's tap ---- */

struct fed {
    st_feed *fd;
    st_query_slide **sl;
    int metric[NQ]; /* each slide's metric in the feed */
    int blocks;     /* blocks the slides were handed */
    size_t max;     /* the feed's bound (0: its default) */
    int losses;     /* drains that said commits were lost */
};

static int fed_block(void *arg, int metric, uint64_t txn, const st_fed_block *b)
{
    struct fed *f = arg;
    for (size_t i = 0; i < NQ; i++) {
        if (f->sl[i] != NULL && f->metric[i] == metric) {
            assert_int_equal(st_query_slide_feed(f->sl[i], txn, b), ST_OK);
            f->blocks++;
        }
    }
    return ST_OK;
}

static void fed_commit(void *arg, uint64_t txn)
{
    struct fed *f = arg;
    for (size_t i = 0; i < NQ; i++) {
        if (f->sl[i] != NULL) {
            st_query_slide_fed_upto(f->sl[i], txn);
        }
    }
}

/* The engine's part: the feed's blocks into the slides before a run; a
 * loss makes them read the store again. */
static void fed_take(struct fed *f)
{
    bool lost = true;
    assert_int_equal(st_feed_drain(f->fd, &lost, fed_block, fed_commit, f), ST_OK);
    if (lost) {
        assert_true(f->max > 0); /* only a bounded feed loses */
        f->losses++;
        for (size_t i = 0; i < NQ; i++) {
            if (f->sl[i] != NULL) {
                st_query_slide_forget(f->sl[i]);
            }
        }
    }
}

static void fed_attach(struct fed *f, st_store *st)
{
    assert_int_equal(st_feed_new(st, &f->fd), ST_OK);
    if (f->max > 0) {
        st_feed_set_max_bytes(f->fd, f->max);
    }
    for (size_t i = 0; i < NQ; i++) {
        if (f->sl[i] != NULL) {
            assert_int_equal(
                st_feed_subscribe(f->fd, metrics[questions[i].metric].name, &f->metric[i]), ST_OK);
        }
    }
}

/* The runs, the slides plain or fed. Fed, the store's reopenings come
 * with a new feed, and the slides forget what they hold, as the engine
 * would. minutes: the clock moves a minute a run, on minutes (the
 * engine's steps), and the slides keep minutes. */
static void run_slides(bool fed, bool minutes, size_t max)
{
    st_query_slide *sl[NQ] = {NULL};
    struct fed f = {.sl = sl, .max = max};
    st_store *st = open_store();
    for (size_t i = 0; i < NQ; i++) {
        if (slide_of(i) == i) {
            assert_int_equal(st_query_slide_new(&sl[i]), ST_OK);
            if (fed) {
                st_query_slide_set_fed(sl[i], NULL, NULL);
            }
        }
    }
    if (fed) {
        fed_attach(&f, st);
    }
    load(st, 80);
    for (int run = 0; run < RUNS; run++) {
        /* the clock: 10 s a run, at an offset that splits buckets; or a
         * minute a run, on minutes (only the first 15 minutes are late) */
        int64_t now = minutes ? FIRST_NOW + (int64_t)(run / 2) * MIN
                              : FIRST_NOW + (int64_t)run * 10 * SEC + 4321 + (run % 3) * 700;
        bool reopens = run == 17 || run == 23;
        if (fed && reopens) {
            st_feed_free(f.fd);
        }
        st = between_runs(st, run, now);
        if (fed && reopens) {
            for (size_t i = 0; i < NQ; i++) {
                if (sl[i] != NULL) {
                    st_query_slide_forget(sl[i]);
                }
            }
            fed_attach(&f, st);
        }
        if (fed) {
            fed_take(&f);
        }
        if (fed && run == 29) {
            /* the slides read again, and the next minute's frames arrive
             * early, before that read: it sees them, and the next run's
             * feed hands them over again, to be left out */
            for (size_t i = 0; i < NQ; i++) {
                if (sl[i] != NULL) {
                    st_query_slide_forget(sl[i]);
                }
            }
            load(st, (int)((now - T0) / MIN) + 2);
        }
        for (size_t i = 0; i < NQ; i++) {
            ask(st, sl[slide_of(i)], &questions[i], now, run);
        }
    }
    if (fed) {
        /* the hour-long baseline, asked before the current window of the
         * same slide, read the store only when it had to: first, at the
         * two reopenings, the late series and the forced read at run 29 */
        assert_true(max > 0 || st_query_slide_fills(sl[0]) <= 5);
        /* the runs after the first took the minutes as they came */
        assert_true(f.blocks > 0);
        /* a feed bounded below a minute's frames lost some */
        assert_true(max == 0 ? f.losses == 0 : f.losses > 0);
        st_feed_free(f.fd);
    }
    for (size_t i = 0; i < NQ; i++) {
        st_query_slide_free(sl[i]);
    }
    st_store_close(st);
}

static void slides_match_full_scans(void **state)
{
    (void)state;
    run_slides(false, false, 0);
}

static void fed_slides_match_full_scans(void **state)
{
    (void)state;
    run_slides(true, false, 0);
}

static void fed_slides_in_minutes_match_full_scans(void **state)
{
    (void)state;
    run_slides(true, true, 0);
}

/* Bounded below what a run's commits bring, the feed loses them, says
 * so, and the slides read the store again: the answers stay exact. */
static void fed_slides_read_again_after_a_loss(void **state)
{
    (void)state;
    run_slides(true, true, 24 * 1024);
}

/* Asked again at the same time after a series was added whose points all
 * come after the window: the slide reads nothing new, yet the full answer
 * has the series' group (without points), and so must the slide's. */
static void slide_meets_a_series_added_past_its_window(void **state)
{
    const struct question qs = {M_REQ, "sum", "host,route", NULL, 5 * MIN, 0, true, NULL};
    st_query_slide *sl = NULL;
    st_store *st = open_store();
    int64_t now = FIRST_NOW;
    (void)state;
    assert_int_equal(st_query_slide_new(&sl), ST_OK);
    load(st, 80);
    ask(st, sl, &qs, now, 0); /* sizes it */
    ask(st, sl, &qs, now, 1);
    ask(st, sl, &qs, now, 2);
    apply(st, 1, 85, true); /* route d of host 1, new, five minutes on */
    ask(st, sl, &qs, now, 3);
    st_query_slide_free(sl);
    st_store_close(st);
}

/* A frame from an agent whose clock runs 13 minutes ahead, committed
 * after a fed slide's read: past what the slide keeps ahead of its
 * window, it is only noted, and the slide reads the store again once a
 * window reaches it. */
static void fed_slide_meets_a_point_from_far_ahead(void **state)
{
    const struct question qs = {M_REQ, "sum", "host", NULL, 5 * MIN, 0, true, NULL};
    st_query_slide *sl[NQ] = {NULL};
    struct fed f = {.sl = sl};
    st_store *st = open_store();
    (void)state;
    assert_int_equal(st_query_slide_new(&sl[0]), ST_OK);
    st_query_slide_set_fed(sl[0], NULL, NULL);
    assert_int_equal(st_feed_new(st, &f.fd), ST_OK);
    assert_int_equal(st_feed_subscribe(f.fd, metrics[M_REQ].name, &f.metric[0]), ST_OK);
    load(st, 80);
    ask(st, sl[0], &qs, FIRST_NOW, 0); /* sizes it */
    ask(st, sl[0], &qs, FIRST_NOW, 1); /* reads the store */
    apply(st, 2, 93, false);
    for (int m = 81; m <= 96; m++) {
        load(st, m);
        fed_take(&f);
        ask(st, sl[0], &qs, T0 + (int64_t)m * MIN, m);
    }
    st_feed_free(f.fd);
    st_query_slide_free(sl[0]);
    st_store_close(st);
}

/* A gauge's series sent again as a distribution (the store keys series by
 * name and labels, not kind): a fed slide of the gauge is not fed the
 * block, whose values it does not have. */
static void fed_slide_skips_a_block_of_another_kind(void **state)
{
    const struct question qs = {M_MEM, "max", "host", NULL, 5 * MIN, 0, true, NULL};
    st_query_slide *sl[NQ] = {NULL};
    struct fed f = {.sl = sl};
    st_store *st = open_store();
    st_store_txn *t = NULL;
    uint8_t id[16] = {0x5d, [15] = 1};
    st_frame *fr;
    st_query q;
    st_query_fold *out = NULL;
    bool dup = true;
    int rv;
    (void)state;
    assert_int_equal(st_query_slide_new(&sl[0]), ST_OK);
    st_query_slide_set_fed(sl[0], NULL, NULL);
    assert_int_equal(st_feed_new(st, &f.fd), ST_OK);
    assert_int_equal(st_feed_subscribe(f.fd, metrics[M_MEM].name, &f.metric[0]), ST_OK);
    load(st, 80);
    ask(st, sl[0], &qs, FIRST_NOW, 0);
    ask(st, sl[0], &qs, FIRST_NOW, 1);
    /* host 0's w.mem {route=a}, its gauge series, as a distribution */
    fr = st_test_frame_new(id, ++next_seq[0], "h0", STRATA__V1__ROLE__EDGE, 1);
    fr->series[fr->n_series] = mk_series(M_LAT, 0, 0, 80);
    free(fr->series[fr->n_series]->name);
    fr->series[fr->n_series]->name = strdup(metrics[M_MEM].name);
    fr->n_series++;
    assert_int_equal(st_store_begin(st, &t), ST_OK);
    assert_int_equal(st_store_apply(t, fr, FIRST_NOW, &dup), ST_OK);
    assert_int_equal(st_store_commit(t), ST_OK);
    st_frame_free(fr);
    fed_take(&f); /* crashed: the block's values are NULL */
    parse(&qs, FIRST_NOW + MIN, &q);
    rv = st_query_slide_fold(st, sl[0], &q, &out);
    assert_true(rv == ST_OK || rv == ST_EUNSUPPORTED);
    st_query_fold_free(out);
    st_query_release(&q);
    st_feed_free(f.fd);
    st_query_slide_free(sl[0]);
    st_store_close(st);
}

static int count_block(void *arg, int metric, uint64_t txn, const st_fed_block *b)
{
    (void)metric;
    (void)txn;
    (void)b;
    (*(int *)arg)++;
    return ST_OK;
}

static void no_commit(void *arg, uint64_t txn)
{
    (void)arg;
    (void)txn;
}

/* The feed keeps the blocks of subscribed metrics only: none before the
 * first subscription, a metric's after it, and none again once its last
 * subscription is dropped (a slide grouped too finely to keep). */
static void feed_keeps_subscribed_metrics_only(void **state)
{
    st_store *st = open_store();
    st_feed *fd = NULL;
    st_feed *other = NULL;
    bool lost = true;
    int n = 0;
    int a = -1;
    int b = -1;
    (void)state;
    assert_int_equal(st_feed_new(st, &fd), ST_OK);
    assert_int_equal(st_feed_new(st, &other), ST_EEXIST); /* one tap a store */
    apply(st, 0, 0, false);
    assert_int_equal(st_feed_drain(fd, &lost, count_block, no_commit, &n), ST_OK);
    assert_false(lost);
    assert_int_equal(n, 0);
    assert_int_equal(st_feed_subscribe(fd, metrics[M_REQ].name, &a), ST_OK);
    assert_int_equal(st_feed_subscribe(fd, metrics[M_REQ].name, &b), ST_OK);
    assert_int_equal(a, b);
    apply(st, 0, 1, false);
    assert_int_equal(st_feed_drain(fd, &lost, count_block, no_commit, &n), ST_OK);
    assert_int_equal(n, NROUTE - 1); /* host 0's routes a, b, c */
    st_feed_unsubscribe(fd, a);
    apply(st, 0, 2, false);
    n = 0;
    assert_int_equal(st_feed_drain(fd, &lost, count_block, no_commit, &n), ST_OK);
    assert_int_equal(n, NROUTE - 1); /* one subscription left */
    st_feed_unsubscribe(fd, a);
    apply(st, 0, 3, false);
    n = 0;
    assert_int_equal(st_feed_drain(fd, &lost, count_block, no_commit, &n), ST_OK);
    assert_int_equal(n, 0);
    st_feed_free(fd);
    st_store_close(st);
}

/* ---- the store's change notes ---- */

static void changes_since_a_generation(void **state)
{
    st_store *st = open_store();
    uint64_t g0 = st_store_generation(st);
    uint64_t g1;
    st_store_txn *t = NULL;
    (void)state;
    assert_true(g0 > 0);
    assert_int_equal(st_store_changed_since(st, "w.mem", 0), INT64_MIN);
    assert_int_equal(st_store_changed_since(st, "w.mem", g0), INT64_MAX);
    assert_true(st_store_series_added_since(st, "w.mem", 0));
    assert_false(st_store_series_added_since(st, "w.mem", g0));
    /* a commit without points starts no generation */
    assert_int_equal(st_store_begin(st, &t), ST_OK);
    assert_int_equal(st_store_commit(t), ST_OK);
    assert_int_equal(st_store_generation(st), g0);
    apply(st, 3, 10, false);
    g1 = st_store_generation(st);
    assert_true(g1 == g0 + 1);
    /* the host's series were new then, and are not after */
    assert_true(st_store_series_added_since(st, "w.mem", g0));
    assert_false(st_store_series_added_since(st, "w.mem", g1));
    assert_false(st_store_series_added_since(st, "w.other", g0));
    assert_int_equal(st_store_changed_since(st, "w.mem", g0), T0 + 10 * MIN + 3 * 1700);
    assert_int_equal(st_store_changed_since(st, "w.mem", g1), INT64_MAX);
    assert_int_equal(st_store_changed_since(st, "w.other", g0), INT64_MAX);
    /* later commits: newer points, then an older one; each answer is the
     * oldest written after the generation asked about */
    for (int c = 11; c < 40; c++) {
        apply(st, 3, c, false);
    }
    apply(st, 3, 5, false);
    assert_false(st_store_series_added_since(st, "w.mem", g1));
    assert_int_equal(st_store_changed_since(st, "w.mem", g0), T0 + 5 * MIN + 3 * 1700);
    assert_int_equal(st_store_changed_since(st, "w.mem", g1), T0 + 5 * MIN + 3 * 1700);
    assert_int_equal(st_store_changed_since(st, "w.mem", st_store_generation(st) - 1),
                     T0 + 5 * MIN + 3 * 1700);
    assert_true(st_store_changed_since(st, "w.mem", g1 + 3) <= T0 + 5 * MIN + 3 * 1700);
    g1 = st_store_generation(st);
    st_store_close(st);
    /* reopened: generations of the earlier opening tell nothing */
    st = open_store();
    assert_true(st_store_generation(st) > g1);
    assert_int_equal(st_store_changed_since(st, "w.mem", g1), INT64_MIN);
    st_store_close(st);
}

static int setup(void **state)
{
    (void)state;
    assert_non_null(st_test_mkdtemp(tmpdir, sizeof(tmpdir), "slide"));
    memset(applied, 0, sizeof(applied));
    memset(next_seq, 0, sizeof(next_seq));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return st_test_rmtree(tmpdir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(changes_since_a_generation, setup, teardown),
        cmocka_unit_test_setup_teardown(slides_match_full_scans, setup, teardown),
        cmocka_unit_test_setup_teardown(fed_slides_match_full_scans, setup, teardown),
        cmocka_unit_test_setup_teardown(fed_slides_in_minutes_match_full_scans, setup, teardown),
        cmocka_unit_test_setup_teardown(fed_slides_read_again_after_a_loss, setup, teardown),
        cmocka_unit_test_setup_teardown(fed_slide_meets_a_point_from_far_ahead, setup, teardown),
        cmocka_unit_test_setup_teardown(feed_keeps_subscribed_metrics_only, setup, teardown),
        cmocka_unit_test_setup_teardown(fed_slide_skips_a_block_of_another_kind, setup, teardown),
        cmocka_unit_test_setup_teardown(slide_meets_a_series_added_past_its_window, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
