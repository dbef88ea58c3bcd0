/* Tests of the agent's durable spool: append/peek/ack, reopen, bounds, damaged files, and a
 * simulated process death after every single file-system step of an append and of an ack,
 * each followed by a reopen that must keep every promise the spool made. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "err.h"
#include "log.h"
#include "spool.h"
#include "util.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAYLOAD 100        /* every test frame is this long... */
#define REC (PAYLOAD + 16) /* ...and takes this many bytes on disk */
#define MAXSEQ 2048

/* What the test did, to judge what the spool shows after a crash. */
struct model {
    uint8_t *data[MAXSEQ]; /* the latest attempt to append each seq */
    bool ok[MAXSEQ];       /* that attempt returned ST_OK */
    bool acked[MAXSEQ];    /* st_spool_ack was called (whatever it returned) */
    uint64_t max_ok;
    uint64_t next_seq;     /* the highest next_seq seen */
    uint64_t dropped;      /* the highest dropped counter seen */
    uint64_t dropped_base; /* dropped before the frames that may be missing */
};

struct ctx {
    char dir[64];
    struct st_spool_opts opts;
    st_spool *sp;
    struct model m;
    unsigned salt; /* changes with every attempt so stale bytes cannot pass as fresh */
};

static void fill(uint8_t *p, uint64_t seq, unsigned salt)
{
    for (size_t i = 0; i < PAYLOAD; i++) {
        p[i] = (uint8_t)(seq * 131 + i * 7 + salt * 29);
    }
}

static void rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    if (d == NULL) {
        return;
    }
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            unlinkat(dirfd(d), e->d_name, 0);
        }
    }
    closedir(d);
    rmdir(dir);
}

static void ctx_open(struct ctx *c)
{
    assert_int_equal(st_spool_open(&c->opts, &c->sp), ST_OK);
}

static struct ctx *ctx_new(uint64_t max_bytes, uint64_t seg_bytes)
{
    struct ctx *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    snprintf(c->dir, sizeof(c->dir), "/tmp/spool_test.XXXXXX");
    assert_non_null(mkdtemp(c->dir));
    c->opts.dir = c->dir;
    c->opts.max_bytes = max_bytes;
    c->opts.segment_bytes = seg_bytes;
    ctx_open(c);
    return c;
}

static void ctx_reopen(struct ctx *c)
{
    st_spool_close(c->sp);
    c->sp = NULL;
    ctx_open(c);
}

static void ctx_free(struct ctx *c)
{
    st_spool_close(c->sp);
    rm_rf(c->dir);
    for (size_t i = 0; i < MAXSEQ; i++) {
        free(c->m.data[i]);
    }
    free(c);
}

/* Appends the next frame and records the attempt. */
static int ctx_append(struct ctx *c)
{
    uint64_t seq = st_spool_next_seq(c->sp);
    int rv;
    assert_true(seq > 0 && seq < MAXSEQ);
    if (c->m.data[seq] == NULL) {
        c->m.data[seq] = malloc(PAYLOAD);
        assert_non_null(c->m.data[seq]);
    }
    fill(c->m.data[seq], seq, ++c->salt);
    rv = st_spool_append(c->sp, seq, c->m.data[seq], PAYLOAD);
    c->m.ok[seq] = rv == ST_OK;
    if (rv == ST_OK) {
        c->m.max_ok = ST_MAX(c->m.max_ok, seq);
    }
    return rv;
}

static void append_n(struct ctx *c, int n)
{
    for (int i = 0; i < n; i++) {
        assert_int_equal(ctx_append(c), ST_OK);
    }
}

static int ctx_ack(struct ctx *c, uint64_t seq)
{
    c->m.acked[seq] = true;
    return st_spool_ack(c->sp, seq);
}

/* Every frame peek can see, in order, each checked against what was appended for its seq.
 * Fills present[] and returns how many there are. */
static size_t check_peek(struct ctx *c, bool *present)
{
    uint64_t after = 0;
    size_t n = 0;
    memset(present, 0, MAXSEQ * sizeof(*present));
    for (;;) {
        uint64_t seq = 0;
        uint8_t *data = NULL;
        size_t len = 0;
        int rv = st_spool_peek(c->sp, after, &seq, &data, &len);
        if (rv == ST_ENOENT) {
            break;
        }
        assert_int_equal(rv, ST_OK);
        assert_true(seq > after && seq < MAXSEQ);
        assert_non_null(c->m.data[seq]);
        assert_int_equal(len, PAYLOAD);
        assert_memory_equal(data, c->m.data[seq], PAYLOAD);
        free(data);
        present[seq] = true;
        after = seq;
        n++;
    }
    return n;
}

/* The promises that survive a crash: nothing appended is lost unless acknowledged or counted
 * as dropped (and then only the oldest), nothing is corrupt, seqs never go back, counters
 * never decrease, and the spool stays within its bounds. exact: every frame counted as
 * dropped is gone (holds while the spool's acks and the test's agree, i.e. before any
 * reopen forgot an ack). */
static void check_invariants(struct ctx *c, bool exact)
{
    static bool present[MAXSEQ];
    struct st_spool_stats st;
    uint64_t missing = 0;
    uint64_t max_missing = 0;
    uint64_t min_present = UINT64_MAX;
    size_t n = check_peek(c, present);
    st_spool_stats(c->sp, &st);
    assert_int_equal(st.frames, n);
    assert_true(st.next_seq > c->m.max_ok);
    assert_true(st.next_seq >= c->m.next_seq);
    assert_true(st.dropped >= c->m.dropped);
    assert_true(st.bytes <= c->opts.max_bytes || c->opts.max_bytes == 0);
    for (uint64_t s = 1; s < MAXSEQ; s++) {
        if (!c->m.ok[s] || c->m.acked[s]) {
            continue;
        }
        if (present[s]) {
            min_present = ST_MIN(min_present, s);
        } else {
            missing++;
            max_missing = s;
        }
    }
    assert_true(missing <= st.dropped - c->m.dropped_base);
    assert_true(!exact || missing == st.dropped - c->m.dropped_base);
    assert_true(missing == 0 || max_missing < min_present);
    c->m.next_seq = st.next_seq;
    c->m.dropped = st.dropped;
}

/* After recovery the spool must simply work: append, see everything, acknowledge it all. */
static void check_works(struct ctx *c)
{
    static bool present[MAXSEQ];
    struct st_spool_stats st;
    uint64_t seq = st_spool_next_seq(c->sp);
    assert_int_equal(ctx_append(c), ST_OK);
    check_peek(c, present);
    assert_true(present[seq]);
    for (uint64_t s = 1; s < MAXSEQ; s++) {
        if (present[s]) {
            assert_int_equal(ctx_ack(c, s), ST_OK);
        }
    }
    st_spool_stats(c->sp, &st);
    assert_int_equal(st.frames, 0);
    assert_int_equal(st.first_seq, 0);
    ctx_reopen(c);
    assert_true(st_spool_next_seq(c->sp) > seq);
}

static size_t count_segments(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t n = 0;
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        n += len == 24 && strcmp(e->d_name + 20, ".seg") == 0;
    }
    closedir(d);
    return n;
}

static void seg_path(const struct ctx *c, uint64_t first, char *out, size_t n)
{
    snprintf(out, n, "%s/%020" PRIu64 ".seg", c->dir, first);
}

static uint64_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (uint64_t)st.st_size;
}

/* Flips one byte of a file in place. */
static void damage(const char *path, uint64_t off)
{
    int fd = open(path, O_RDWR);
    uint8_t b;
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
    b ^= 0x5A;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
    close(fd);
}

/* ---- Basics ------------------------------------------------------------------------------- */

static void test_in_order(void **state)
{
    struct ctx *c = ctx_new(0, 0);
    struct st_spool_stats st;
    uint64_t seq;
    uint8_t *data;
    size_t len;
    (void)state;
    assert_int_equal(st_spool_next_seq(c->sp), 1);
    assert_int_equal(st_spool_peek(c->sp, 0, &seq, &data, &len), ST_ENOENT);
    append_n(c, 5);
    st_spool_stats(c->sp, &st);
    assert_int_equal(st.frames, 5);
    assert_int_equal(st.bytes, 5 * REC);
    assert_int_equal(st.first_seq, 1);
    assert_int_equal(st.next_seq, 6);
    for (uint64_t s = 1; s <= 5; s++) {
        assert_int_equal(st_spool_peek(c->sp, 0, &seq, &data, &len), ST_OK);
        assert_int_equal(seq, s);
        assert_memory_equal(data, c->m.data[s], PAYLOAD);
        free(data);
        assert_int_equal(ctx_ack(c, s), ST_OK);
    }
    assert_int_equal(st_spool_peek(c->sp, 0, &seq, &data, &len), ST_ENOENT);
    st_spool_stats(c->sp, &st);
    assert_int_equal(st.frames, 0);
    assert_int_equal(st.first_seq, 0);
    /* Wrong seqs and unknown acks. */
    assert_int_equal(st_spool_append(c->sp, 5, c->m.data[1], PAYLOAD), ST_EINVAL);
    assert_int_equal(st_spool_append(c->sp, 7, c->m.data[1], PAYLOAD), ST_EINVAL);
    assert_int_equal(st_spool_ack(c->sp, 3), ST_OK);
    assert_int_equal(st_spool_ack(c->sp, 999), ST_OK);
    /* A clean close keeps the acks: nothing is sent twice after a restart. */
    ctx_reopen(c);
    st_spool_stats(c->sp, &st);
    assert_int_equal(st.frames, 0);
    assert_int_equal(st.next_seq, 6);
    ctx_free(c);
}

static void test_out_of_order(void **state)
{
    struct ctx *c = ctx_new(0, 4 * REC);
    struct st_spool_stats st;
    uint64_t seq;
    uint8_t *data;
    size_t len;
    (void)state;
    append_n(c, 10); /* segments 1-4, 5-8, 9-10 */
    assert_int_equal(count_segments(c->dir), 3);
    /* Several frames in flight: peek walks past the ones already sent. */
    assert_int_equal(st_spool_peek(c->sp, 3, &seq, &data, &len), ST_OK);
    assert_int_equal(seq, 4);
    free(data);
    for (uint64_t s = 8; s >= 5; s--) {
        assert_int_equal(ctx_ack(c, s), ST_OK);
    }
    /* The middle segment went as soon as its last frame was acknowledged. */
    assert_int_equal(count_segments(c->dir), 2);
    assert_int_equal(ctx_ack(c, 2), ST_OK);
    assert_int_equal(st_spool_peek(c->sp, 1, &seq, &data, &len), ST_OK);
    assert_int_equal(seq, 3);
    free(data);
    assert_int_equal(st_spool_peek(c->sp, 4, &seq, &data, &len), ST_OK);
    assert_int_equal(seq, 9);
    assert_memory_equal(data, c->m.data[9], PAYLOAD);
    free(data);
    st_spool_stats(c->sp, &st);
    assert_int_equal(st.frames, 5);
    assert_int_equal(st.first_seq, 1);
    /* Acknowledged frames stay acknowledged across a reopen while their segment is gone. */
    ctx_reopen(c);
    st_spool_stats(c->sp, &st);
    assert_int_equal(st.frames, 6); /* 1-4 come back whole: frame 2's ack was not kept */
    assert_int_equal(st.next_seq, 11);
    assert_int_equal(st_spool_peek(c->sp, 4, &seq, &data, &len), ST_OK);
    assert_int_equal(seq, 9);
    free(data);
    for (uint64_t s = 1; s <= 4; s++) {
        assert_int_equal(ctx_ack(c, s), ST_OK);
    }
    assert_int_equal(count_segments(c->dir), 1);
    ctx_reopen(c);
    st_spool_stats(c->sp, &st);
    assert_int_equal(st.frames, 2);
    assert_int_equal(st.first_seq, 9);
    ctx_free(c);
}

static void test_reopen_keeps_id_and_seq(void **state)
{
    struct ctx *c = ctx_new(0, 2 * REC);
    struct st_spool_stats st;
    uint8_t id[16];
    uint8_t id2[16];
    char text[37];
    char path[128];
    char *file = NULL;
    size_t len = 0;
    (void)state;
    st_spool_agent_id(c->sp, id);
    assert_int_equal(id[6] >> 4, 4); /* a version-4 UUID */
    snprintf(path, sizeof(path), "%s/agent.id", c->dir);
    assert_int_equal(st_file_read(path, 64, &file, &len), ST_OK);
    st_uuid_format(id, text);
    assert_true(len >= 36);
    assert_memory_equal(file, text, 36);
    free(file);
    append_n(c, 7);
    for (uint64_t s = 1; s <= 7; s++) {
        assert_int_equal(ctx_ack(c, s), ST_OK);
    }
    ctx_reopen(c);
    st_spool_agent_id(c->sp, id2);
    assert_memory_equal(id, id2, 16);
    assert_int_equal(st_spool_next_seq(c->sp), 8);
    st_spool_stats(c->sp, &st);
    assert_int_equal(st.frames, 0); /* frame 7's segment outlived its ack, but close kept it */
    append_n(c, 1);                 /* 7-8 */
    assert_int_equal(ctx_ack(c, 8), ST_OK);
    append_n(c, 1); /* rolls to 9; 7-8 goes on the next ack */
    assert_int_equal(ctx_ack(c, 9), ST_OK);
    assert_int_equal(count_segments(c->dir), 1);
    ctx_reopen(c);
    assert_int_equal(st_spool_next_seq(c->sp), 10);
    for (uint64_t s = 10; s < 20; s++) {
        assert_int_equal(ctx_append(c), ST_OK);
        assert_int_equal(ctx_ack(c, s), ST_OK);
    }
    ctx_reopen(c);
    assert_int_equal(st_spool_next_seq(c->sp), 20);
    st_spool_agent_id(c->sp, id2);
    assert_memory_equal(id, id2, 16);
    ctx_free(c);
}

/* A second agent on the same spool is refused while the first has it
 * open; once it closes (or dies: the kernel drops the lock) the spool
 * opens again, with the same id and seq. */
static void test_one_writer(void **state)
{
    struct ctx *c = ctx_new(0, 0);
    st_spool *other = NULL;
    uint8_t id[16];
    uint8_t id2[16];
    (void)state;
    append_n(c, 3);
    st_spool_agent_id(c->sp, id);
    assert_int_equal(st_spool_open(&c->opts, &other), ST_EEXIST);
    assert_null(other);
    assert_int_equal(st_spool_next_seq(c->sp), 4); /* the first one is untouched */
    assert_int_equal(ctx_append(c), ST_OK);
    ctx_reopen(c);
    st_spool_agent_id(c->sp, id2);
    assert_memory_equal(id, id2, 16);
    assert_int_equal(st_spool_next_seq(c->sp), 5);
    ctx_free(c);
}

/* ---- Bounds ------------------------------------------------------------------------------- */

static void test_bounded(void **state)
{
    struct ctx *c = ctx_new(8 * REC, 2 * REC);
    struct st_spool_stats st;
    static bool present[MAXSEQ];
    uint8_t *big;
    (void)state;
    append_n(c, 8);
    assert_int_equal(ctx_ack(c, 3), ST_OK); /* acknowledged frames are not counted as dropped */
    append_n(c, 12);                        /* 9..20: drops 1-2, 3-4, ..., 11-12 */
    st_spool_stats(c->sp, &st);
    assert_int_equal(st.dropped, 11);
    assert_int_equal(st.frames, 8);
    assert_int_equal(st.first_seq, 13);
    assert_int_equal(st.next_seq, 21);
    assert_true(st.bytes <= 8 * REC);
    assert_int_equal(check_peek(c, present), 8);
    for (uint64_t s = 13; s <= 20; s++) {
        assert_true(present[s]);
    }
    ctx_reopen(c);
    st_spool_stats(c->sp, &st);
    assert_int_equal(st.dropped, 11);
    assert_int_equal(st.frames, 8);
    /* A frame that can never fit. */
    big = calloc(1, 8 * REC);
    assert_non_null(big);
    assert_int_equal(st_spool_append(c->sp, 21, big, 8 * REC), ST_ETOOBIG);
    assert_int_equal(st_spool_append(c->sp, 21, big, 8 * REC - 16), ST_OK);
    free(big);
    /* It fit only by dropping everything else, the active segment included. */
    st_spool_stats(c->sp, &st);
    assert_int_equal(st.dropped, 19);
    assert_int_equal(st.frames, 1);
    assert_int_equal(st.first_seq, 21);
    assert_int_equal(st.bytes, 8 * REC);
    ctx_free(c);
}

static void test_record_limit(void **state)
{
    struct ctx *c = ctx_new(0, 0);
    uint8_t *big = calloc(1, ST_SPOOL_MAX_RECORD + 1);
    uint64_t seq;
    uint8_t *data;
    size_t len;
    (void)state;
    assert_non_null(big);
    assert_int_equal(st_spool_append(c->sp, 1, big, ST_SPOOL_MAX_RECORD + 1), ST_ETOOBIG);
    big[ST_SPOOL_MAX_RECORD - 1] = 7;
    assert_int_equal(st_spool_append(c->sp, 1, big, ST_SPOOL_MAX_RECORD), ST_OK);
    ctx_reopen(c);
    assert_int_equal(st_spool_peek(c->sp, 0, &seq, &data, &len), ST_OK);
    assert_int_equal(len, ST_SPOOL_MAX_RECORD);
    assert_memory_equal(data, big, ST_SPOOL_MAX_RECORD);
    free(data);
    free(big);
    ctx_free(c);
}

/* ---- Damaged files --------------------------------------------------------------------- */

static void test_torn_tail(void **state)
{
    struct ctx *c = ctx_new(0, 0);
    static bool present[MAXSEQ];
    uint8_t garbage[300];
    char path[128];
    int fd;
    (void)state;
    append_n(c, 5);
    st_spool_close(c->sp);
    c->sp = NULL;
    /* A header that promises more than is there, then noise. */
    memset(garbage, 0xA7, sizeof(garbage));
    garbage[0] = 0xE8; /* 1000 */
    garbage[1] = 3;
    garbage[2] = garbage[3] = 0;
    seg_path(c, 1, path, sizeof(path));
    fd = open(path, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, garbage, sizeof(garbage)), (ssize_t)sizeof(garbage));
    close(fd);
    ctx_open(c);
    assert_int_equal(file_size(path), 5 * REC);
    assert_int_equal(check_peek(c, present), 5);
    assert_int_equal(st_spool_next_seq(c->sp), 6);
    append_n(c, 1);
    ctx_reopen(c);
    assert_int_equal(check_peek(c, present), 6);
    check_invariants(c, false);
    ctx_free(c);
}

/* The fault injector's torn write: the process dies with half a record on disk. */
static void test_torn_append(void **state)
{
    struct ctx *c = ctx_new(0, 0);
    static bool present[MAXSEQ];
    char path[128];
    (void)state;
    append_n(c, 3);
    st_spool_fail_after(c->sp, 1);
    assert_int_equal(ctx_append(c), ST_EIO);
    seg_path(c, 1, path, sizeof(path));
    assert_int_equal(file_size(path), 3 * REC + REC / 2);
    ctx_reopen(c);
    assert_int_equal(file_size(path), 3 * REC);
    assert_int_equal(check_peek(c, present), 3);
    assert_int_equal(st_spool_next_seq(c->sp), 4);
    check_works(c);
    ctx_free(c);
}

/* A crash right after a new segment was created leaves it empty; its name still holds the
 * seq that append was about to use. */
static void test_empty_segment(void **state)
{
    struct ctx *c = ctx_new(0, 0);
    char path[128];
    int fd;
    (void)state;
    st_spool_close(c->sp);
    c->sp = NULL;
    seg_path(c, 9, path, sizeof(path));
    fd = open(path, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    close(fd);
    ctx_open(c);
    assert_int_equal(st_spool_next_seq(c->sp), 9);
    append_n(c, 2);
    assert_int_equal(count_segments(c->dir), 1);
    ctx_reopen(c);
    assert_int_equal(st_spool_next_seq(c->sp), 11);
    check_works(c);
    ctx_free(c);
}

static void test_damage_mid_segment(void **state)
{
    struct ctx *c = ctx_new(0, 4 * REC);
    struct st_spool_stats st;
    static bool present[MAXSEQ];
    char path[128];
    (void)state;
    append_n(c, 12); /* 1-4, 5-8, 9-12 */
    st_spool_close(c->sp);
    c->sp = NULL;
    seg_path(c, 1, path, sizeof(path));
    damage(path, REC + 16 + 5); /* frame 2's payload */
    ctx_open(c);
    assert_int_equal(check_peek(c, present), 9);
    assert_true(present[1] && !present[2] && !present[3] && !present[4] && present[5]);
    st_spool_stats(c->sp, &st);
    assert_int_equal(st.dropped, 3);
    assert_int_equal(st.next_seq, 13);
    assert_int_equal(file_size(path), REC);
    /* Counted once, not on every open. */
    ctx_reopen(c);
    st_spool_stats(c->sp, &st);
    assert_int_equal(st.dropped, 3);
    assert_int_equal(st.frames, 9);
    check_works(c);
    ctx_free(c);
}

/* Damage in the middle of the last segment: the frames after it must not have their seqs
 * handed out again (the collector would take new frames for duplicates). */
static void test_damage_last_segment(void **state)
{
    struct ctx *c = ctx_new(0, 0);
    struct st_spool_stats st;
    static bool present[MAXSEQ];
    char path[128];
    (void)state;
    append_n(c, 6);
    st_spool_close(c->sp);
    c->sp = NULL;
    seg_path(c, 1, path, sizeof(path));
    damage(path, 3 * REC + 8); /* frame 4's seq */
    ctx_open(c);
    assert_int_equal(check_peek(c, present), 3);
    st_spool_stats(c->sp, &st);
    assert_int_equal(st.next_seq, 7);
    assert_int_equal(st.dropped, 3);
    assert_int_equal(file_size(path), 3 * REC);
    ctx_reopen(c);
    st_spool_stats(c->sp, &st);
    assert_int_equal(st.next_seq, 7);
    assert_int_equal(st.dropped, 3);
    check_works(c);
    ctx_free(c);
}

static void test_damage_while_open(void **state)
{
    struct ctx *c = ctx_new(0, 0);
    struct st_spool_stats st;
    uint64_t seq;
    uint8_t *data;
    size_t len;
    char path[128];
    (void)state;
    append_n(c, 3);
    seg_path(c, 1, path, sizeof(path));
    damage(path, REC + 16 + 50);
    assert_int_equal(st_spool_peek(c->sp, 0, &seq, &data, &len), ST_OK);
    assert_int_equal(seq, 1);
    free(data);
    assert_int_equal(st_spool_peek(c->sp, 1, &seq, &data, &len), ST_OK);
    assert_int_equal(seq, 3);
    assert_memory_equal(data, c->m.data[3], PAYLOAD);
    free(data);
    st_spool_stats(c->sp, &st);
    assert_int_equal(st.dropped, 1);
    assert_int_equal(st.frames, 2);
    ctx_free(c);
}

static void test_corrupt_cursor(void **state)
{
    struct ctx *c = ctx_new(0, 0);
    char path[128];
    st_spool *sp = NULL;
    (void)state;
    append_n(c, 1);
    st_spool_close(c->sp);
    c->sp = NULL;
    snprintf(path, sizeof(path), "%s/cursor", c->dir);
    assert_int_equal(st_file_write_atomic(path, "strata-spool-cursor 1\nacked_through x\n", 38),
                     ST_OK);
    assert_int_equal(st_spool_open(&c->opts, &sp), ST_ECORRUPT);
    assert_null(sp);
    unlink(path);
    ctx_open(c);
    ctx_free(c);
}

/* ---- Crashes after every step --------------------------------------------------------------- */

struct scenario {
    const char *name;
    uint64_t max_bytes;
    uint64_t seg_bytes;
    void (*setup)(struct ctx *c);
    int (*op)(struct ctx *c);
    int steps; /* file-system steps the operation takes */
};

static void setup_2(struct ctx *c)
{
    append_n(c, 2);
}

static void setup_4(struct ctx *c)
{
    append_n(c, 4);
    assert_int_equal(ctx_ack(c, 2), ST_OK);
}

static void setup_none(struct ctx *c)
{
    (void)c;
}

static void setup_drop(struct ctx *c)
{
    append_n(c, 8);
    assert_int_equal(ctx_ack(c, 1), ST_OK);
    assert_int_equal(ctx_ack(c, 6), ST_OK);
}

static void setup_ack_first(struct ctx *c)
{
    append_n(c, 6);
    for (uint64_t s = 1; s <= 3; s++) {
        assert_int_equal(ctx_ack(c, s), ST_OK);
    }
}

static void setup_ack_middle(struct ctx *c)
{
    append_n(c, 10);
    for (uint64_t s = 5; s <= 7; s++) {
        assert_int_equal(ctx_ack(c, s), ST_OK);
    }
}

static int op_append(struct ctx *c)
{
    return ctx_append(c);
}

static int op_ack_4(struct ctx *c)
{
    return ctx_ack(c, 4);
}

static int op_ack_8(struct ctx *c)
{
    return ctx_ack(c, 8);
}

/* Steps: the record write (two halves) and its fdatasync = 3; a new segment adds its create
 * and a directory fsync = 2; a cursor write is create, write, fsync, rename, directory fsync
 * = 5; deleting segments adds one unlink each and a directory fsync. */
static const struct scenario scenarios[] = {
    {"append", 0, 4 * REC, setup_2, op_append, 3},
    {"append that rolls", 0, 4 * REC, setup_4, op_append, 5},
    {"first append", 0, 4 * REC, setup_none, op_append, 5},
    {"append that drops", 8 * REC, 4 * REC, setup_drop, op_append, 5 + 1 + 1 + 2 + 3},
    {"append that drops the active", 4 * REC, 4 * REC, setup_4, op_append, 5 + 1 + 1 + 2 + 3},
    {"ack that deletes the oldest", 0, 4 * REC, setup_ack_first, op_ack_4, 5 + 1 + 1},
    {"ack that deletes a middle", 0, 4 * REC, setup_ack_middle, op_ack_8, 5 + 1 + 1},
};

/* Runs sc with a crash after step k; returns false once k is past the operation's steps. */
static bool crash_at(const struct scenario *sc, int k)
{
    struct ctx *c = ctx_new(sc->max_bytes, sc->seg_bytes);
    struct st_spool_stats st;
    bool crashed;
    int rv;
    sc->setup(c);
    check_invariants(c, true);
    st_spool_stats(c->sp, &st);
    c->m.dropped_base = st.dropped;
    st_spool_fail_after(c->sp, k);
    rv = sc->op(c);
    crashed = rv != ST_OK;
    if (crashed) {
        assert_int_equal(rv, ST_EIO);
        /* A dead process does nothing more. */
        assert_int_equal(st_spool_append(c->sp, st_spool_next_seq(c->sp), (const uint8_t *)"x", 1),
                         ST_EIO);
        assert_int_equal(st_spool_ack(c->sp, 1), ST_EIO);
    }
    ctx_reopen(c);
    check_invariants(c, true);
    check_works(c);
    check_invariants(c, false);
    ctx_free(c);
    return crashed;
}

static void test_crash_every_step(void **state)
{
    (void)state;
    for (size_t i = 0; i < ST_ARRAY_LEN(scenarios); i++) {
        int k = 1;
        while (crash_at(&scenarios[i], k)) {
            k++;
        }
        print_message("%s: %d steps\n", scenarios[i].name, k - 1);
        assert_int_equal(k - 1, scenarios[i].steps);
    }
}

/* Random appends, acks and drops with a crash at a random step now and then, and a reopen
 * after each: the invariants must hold through any sequence of deaths. */
static void test_crash_random(void **state)
{
    struct ctx *c = ctx_new(12 * REC, 3 * REC);
    uint64_t acked_upto = 0;
    unsigned seed = 12345;
    (void)state;
    for (int round = 0; round < 150 && st_spool_next_seq(c->sp) < MAXSEQ - 20; round++) {
        int ops = (int)(rand_r(&seed) % 6);
        int rv = ST_OK;
        if (rand_r(&seed) % 3 == 0) {
            st_spool_fail_after(c->sp, 1 + (int)(rand_r(&seed) % 14));
        }
        for (int i = 0; i < ops && rv == ST_OK; i++) {
            if (rand_r(&seed) % 3 != 0) {
                rv = ctx_append(c);
                continue;
            }
            /* Acknowledge a few, sometimes out of order. */
            uint64_t next = st_spool_next_seq(c->sp);
            uint64_t s = acked_upto + 1 + rand_r(&seed) % 4;
            if (s < next) {
                rv = ctx_ack(c, s);
                if (s == acked_upto + 1) {
                    acked_upto = s;
                }
            }
        }
        st_spool_fail_after(c->sp, 0);
        ctx_reopen(c);
        check_invariants(c, false);
    }
    check_works(c);
    ctx_free(c);
}

/* ---- Threads ------------------------------------------------------------------------------- */

#define THREAD_FRAMES 400

static void *appender(void *arg)
{
    struct ctx *c = arg;
    uint8_t buf[PAYLOAD];
    for (uint64_t s = 1; s <= THREAD_FRAMES; s++) {
        fill(buf, s, 0);
        if (st_spool_append(c->sp, s, buf, sizeof(buf)) != ST_OK) {
            return (void *)1;
        }
    }
    return NULL;
}

static void test_threads(void **state)
{
    struct ctx *c = ctx_new(0, 16 * REC);
    struct st_spool_stats st;
    pthread_t t;
    uint64_t acked = 0;
    uint64_t after = 0;
    void *res = NULL;
    (void)state;
    assert_int_equal(pthread_create(&t, NULL, appender, c), 0);
    while (acked < THREAD_FRAMES) {
        uint64_t seq;
        uint8_t *data;
        uint8_t want[PAYLOAD];
        size_t len;
        int rv = st_spool_peek(c->sp, after, &seq, &data, &len);
        if (rv == ST_ENOENT) {
            sched_yield(); /* the appender is behind; poll again */
            continue;
        }
        assert_int_equal(rv, ST_OK);
        assert_int_equal(seq, after + 1);
        fill(want, seq, 0);
        assert_int_equal(len, PAYLOAD);
        assert_memory_equal(data, want, PAYLOAD);
        free(data);
        after = seq;
        /* Two in flight: acknowledge the older one, out of order now and then. */
        if (seq % 2 == 0) {
            assert_int_equal(st_spool_ack(c->sp, seq), ST_OK);
            assert_int_equal(st_spool_ack(c->sp, seq - 1), ST_OK);
            acked += 2;
        }
    }
    assert_int_equal(pthread_join(t, &res), 0);
    assert_null(res);
    st_spool_stats(c->sp, &st);
    assert_int_equal(st.frames, 0);
    assert_int_equal(st.next_seq, THREAD_FRAMES + 1);
    assert_true(count_segments(c->dir) <= 1);
    ctx_reopen(c);
    assert_int_equal(st_spool_next_seq(c->sp), THREAD_FRAMES + 1);
    ctx_free(c);
}

static int quiet(void **state)
{
    int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    (void)state;
    if (fd >= 0 && getenv("ST_TEST_LOG") == NULL) {
        st_log_set_fd(fd);
    }
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_in_order),
        cmocka_unit_test(test_out_of_order),
        cmocka_unit_test(test_reopen_keeps_id_and_seq),
        cmocka_unit_test(test_one_writer),
        cmocka_unit_test(test_bounded),
        cmocka_unit_test(test_record_limit),
        cmocka_unit_test(test_torn_tail),
        cmocka_unit_test(test_torn_append),
        cmocka_unit_test(test_empty_segment),
        cmocka_unit_test(test_damage_mid_segment),
        cmocka_unit_test(test_damage_last_segment),
        cmocka_unit_test(test_damage_while_open),
        cmocka_unit_test(test_corrupt_cursor),
        cmocka_unit_test(test_crash_every_step),
        cmocka_unit_test(test_crash_random),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, quiet, NULL);
}
