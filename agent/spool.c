/* The agent's durable spool: append-only segment files of checksummed records, an in-memory
 * index of what is not yet acknowledged, and a small cursor file that keeps seq, the
 * acknowledged watermark and the dropped counter once segments are gone. See spool.h. */
#include "spool.h"

#include "err.h"
#include "log.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define MOD "spool"

/* A record: [len u32 LE][crc32c(seq, data) u32 LE][seq u64 LE][data]. */
#define ST_SPOOL_HDR 16u
#define ST_SPOOL_DEFAULT_MAX (64ull << 20)
#define ST_SPOOL_MIN_SEGMENT (64ull << 10)
#define ST_SPOOL_NAME_DIGITS 20
#define ST_SPOOL_NAME_LEN 25 /* 20 digits, ".seg", NUL */
#define ST_SPOOL_CURSOR_MAX 512
/* How much of a damaged segment's remainder is searched for surviving records. */
#define ST_SPOOL_RESYNC_MAX (64u << 20)

static const char cursor_name[] = "cursor";
static const char cursor_tmp[] = "cursor.tmp";
static const char id_name[] = "agent.id";

struct rec {
    uint64_t seq;
    uint64_t off;
    uint32_t len;
    bool acked;
};

struct seg {
    uint64_t first; /* from the file name; every record's seq is >= first */
    uint64_t bytes; /* valid bytes; anything past them was cut off on open */
    struct rec *recs;
    size_t nrec;
    size_t cap;
    size_t unacked;
    size_t hint;  /* recs[0..hint) are all acknowledged */
    bool doomed;  /* dropped: delete it even when it is the last segment */
    bool damaged; /* open found bytes past `bytes` that must be cut off */
};

/* What the cursor file holds. */
struct cursor {
    uint64_t acked_through; /* every seq <= it is acknowledged or dropped */
    uint64_t floor;         /* next_seq is never below it */
    uint64_t dropped;
};

struct st_spool {
    pthread_mutex_t mu;
    char *dir;
    int dirfd;
    int fd; /* the last segment, read-write; -1 until an append needs it */
    uint64_t max_bytes;
    uint64_t seg_bytes;
    bool no_fsync;
    uint8_t id[16];
    struct seg *segs; /* ordered by first; the last one takes appends */
    size_t nseg;
    size_t segcap;
    uint64_t next_seq;
    uint64_t dropped;
    uint64_t bytes;  /* sum of segs[].bytes */
    uint64_t frames; /* unacknowledged records */
    struct cursor saved;
    uint8_t *buf; /* record staging for appends and the scan on open */
    size_t bufcap;
    int fail_left; /* st_spool_fail_after countdown; 0: off */
    bool crashed;  /* the injected fault fired: touch the disk no more */
    bool ready;    /* open finished: close may save the cursor */
};

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) {
        v = v << 8 | p[i];
    }
    return v;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = v << 8 | p[i];
    }
    return v;
}

static int errno_to_st(int e)
{
    return e == ENOSPC || e == EDQUOT ? ST_ENOSPC : ST_EIO;
}

static void seg_name(uint64_t first, char name[ST_SPOOL_NAME_LEN])
{
    snprintf(name, ST_SPOOL_NAME_LEN, "%020" PRIu64 ".seg", first);
}

static struct seg *last_seg(st_spool *sp)
{
    return sp->nseg > 0 ? &sp->segs[sp->nseg - 1] : NULL;
}

static int grow_buf(st_spool *sp, size_t n)
{
    uint8_t *p;
    if (n <= sp->bufcap) {
        return ST_OK;
    }
    if ((p = realloc(sp->buf, n)) == NULL) {
        return ST_ENOMEM;
    }
    sp->buf = p;
    sp->bufcap = n;
    return ST_OK;
}

static int pwrite_all(int fd, const uint8_t *p, size_t n, uint64_t off)
{
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno_to_st(errno);
        }
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return ST_OK;
}

/* Reads exactly n bytes; ST_ECORRUPT when the file ends first. */
static int pread_all(int fd, uint8_t *p, size_t n, uint64_t off)
{
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            return ST_EIO;
        }
        if (r == 0) {
            return ST_ECORRUPT;
        }
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return ST_OK;
}

/* ---- File-system steps, each counted by the fault injector ---------------------------- */

/* The step has happened; when it was the last one st_spool_fail_after allows, the spool
 * behaves as if its process died right here. */
static int step_done(st_spool *sp)
{
    if (sp->fail_left > 0 && --sp->fail_left == 0) {
        sp->crashed = true;
        return ST_EIO;
    }
    return ST_OK;
}

static int fs_create(st_spool *sp, const char *name, int flags, int *fd)
{
    if (sp->crashed) {
        return ST_EIO;
    }
    *fd = openat(sp->dirfd, name, flags | O_CREAT | O_CLOEXEC, 0600);
    if (*fd < 0) {
        ST_ERROR(MOD, "create %s/%s: %s", sp->dir, name, strerror(errno));
        return errno_to_st(errno);
    }
    return step_done(sp);
}

/* A record write counts as two steps, its two halves, so that a test can die in the middle
 * of it and leave a torn record behind. Without a test it is one pwrite. */
static int fs_write(st_spool *sp, int fd, const uint8_t *p, size_t n, uint64_t off, bool tearable)
{
    size_t len = n;
    int rv;
    if (sp->crashed) {
        return ST_EIO;
    }
    if (tearable && sp->fail_left == 1) {
        len = n / 2;
    }
    if ((rv = pwrite_all(fd, p, len, off)) != ST_OK) {
        ST_ERROR(MOD, "write in %s: %s", sp->dir, strerror(errno));
        return rv;
    }
    if (tearable && (rv = step_done(sp)) != ST_OK) {
        return rv;
    }
    return step_done(sp);
}

static int fs_sync(st_spool *sp, int fd, bool data_only)
{
    int r;
    if (sp->crashed) {
        return ST_EIO;
    }
    if (sp->no_fsync) {
        return ST_OK;
    }
    r = data_only ? fdatasync(fd) : fsync(fd);
    if (r != 0) {
        ST_ERROR(MOD, "fsync in %s: %s", sp->dir, strerror(errno));
        return errno_to_st(errno);
    }
    return step_done(sp);
}

static int fs_dirsync(st_spool *sp)
{
    return fs_sync(sp, sp->dirfd, false);
}

static int fs_rename(st_spool *sp, const char *from, const char *to)
{
    if (sp->crashed) {
        return ST_EIO;
    }
    if (renameat(sp->dirfd, from, sp->dirfd, to) != 0) {
        ST_ERROR(MOD, "rename %s/%s: %s", sp->dir, from, strerror(errno));
        return ST_EIO;
    }
    return step_done(sp);
}

static int fs_unlink(st_spool *sp, const char *name)
{
    if (sp->crashed) {
        return ST_EIO;
    }
    if (unlinkat(sp->dirfd, name, 0) != 0 && errno != ENOENT) {
        ST_ERROR(MOD, "unlink %s/%s: %s", sp->dir, name, strerror(errno));
        return ST_EIO;
    }
    return step_done(sp);
}

static int fs_truncate(st_spool *sp, int fd, uint64_t len)
{
    if (sp->crashed) {
        return ST_EIO;
    }
    if (ftruncate(fd, (off_t)len) != 0) {
        ST_ERROR(MOD, "truncate in %s: %s", sp->dir, strerror(errno));
        return ST_EIO;
    }
    return step_done(sp);
}

/* ---- The cursor ------------------------------------------------------------------------ */

/* Our own atomic write (st_file_write_atomic has no fault steps): temporary file, fsync,
 * rename, fsync of the directory. */
static int cursor_write(st_spool *sp, const struct cursor *c)
{
    char text[ST_SPOOL_CURSOR_MAX];
    int fd = -1;
    int rv;
    int n = snprintf(text, sizeof(text),
                     "strata-spool-cursor 1\nacked_through %" PRIu64 "\nnext_seq %" PRIu64
                     "\ndropped %" PRIu64 "\n",
                     c->acked_through, c->floor, c->dropped);
    if (n < 0 || (size_t)n >= sizeof(text)) {
        return ST_EINVAL;
    }
    if ((rv = fs_create(sp, cursor_tmp, O_WRONLY | O_TRUNC, &fd)) != ST_OK) {
        goto out;
    }
    if ((rv = fs_write(sp, fd, (const uint8_t *)text, (size_t)n, 0, false)) != ST_OK ||
        (rv = fs_sync(sp, fd, false)) != ST_OK) {
        goto out;
    }
    close(fd);
    fd = -1;
    if ((rv = fs_rename(sp, cursor_tmp, cursor_name)) != ST_OK || (rv = fs_dirsync(sp)) != ST_OK) {
        goto out;
    }
    sp->saved = *c;
out:
    if (fd >= 0) {
        close(fd);
    }
    return rv;
}

/* One "key value" line of the cursor file into *out. */
static int cursor_field(const char *line, const char *key, uint64_t *out)
{
    char num[32];
    size_t klen = strlen(key);
    size_t vlen;
    if (strncmp(line, key, klen) != 0 || line[klen] != ' ') {
        return ST_ECORRUPT;
    }
    line += klen + 1;
    vlen = strcspn(line, "\n");
    if (vlen == 0 || vlen >= sizeof(num) || line[vlen] != '\n') {
        return ST_ECORRUPT;
    }
    memcpy(num, line, vlen);
    num[vlen] = '\0';
    return st_parse_u64(num, out) == ST_OK ? ST_OK : ST_ECORRUPT;
}

static int cursor_parse(const char *text, struct cursor *c)
{
    static const char magic[] = "strata-spool-cursor 1\n";
    const char *keys[] = {"acked_through", "next_seq", "dropped"};
    uint64_t *vals[] = {&c->acked_through, &c->floor, &c->dropped};
    const char *p = text;
    if (strncmp(p, magic, sizeof(magic) - 1) != 0) {
        return ST_ECORRUPT;
    }
    p += sizeof(magic) - 1;
    for (size_t i = 0; i < ST_ARRAY_LEN(keys); i++) {
        if (cursor_field(p, keys[i], vals[i]) != ST_OK) {
            return ST_ECORRUPT;
        }
        p = strchr(p, '\n') + 1;
    }
    return *p == '\0' ? ST_OK : ST_ECORRUPT;
}

static int cursor_load(st_spool *sp)
{
    char path[PATH_MAX];
    char *text = NULL;
    int rv;
    snprintf(path, sizeof(path), "%s/%s", sp->dir, cursor_name);
    /* A temporary cursor is a write that never got renamed: it never counted. */
    unlinkat(sp->dirfd, cursor_tmp, 0);
    rv = st_file_read(path, ST_SPOOL_CURSOR_MAX, &text, NULL);
    if (rv == ST_ENOENT) {
        return ST_OK;
    }
    if (rv == ST_OK && (rv = cursor_parse(text, &sp->saved)) != ST_OK) {
        /* Guessing would risk reusing seqs the collector already holds. */
        ST_ERROR(MOD, "%s is corrupt; refusing to guess seq", path);
    }
    free(text);
    sp->dropped = sp->saved.dropped;
    return rv;
}

/* ---- The index --------------------------------------------------------------------------- */

/* Index of the segment that would hold seq: the last one whose first <= seq, else 0. */
static size_t seg_for(const st_spool *sp, uint64_t seq)
{
    size_t lo = 0;
    size_t hi = sp->nseg;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (sp->segs[mid].first <= seq) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return lo;
}

/* Index of the first record with seq >= seq. */
static size_t rec_lower_bound(const struct seg *g, uint64_t seq)
{
    size_t lo = 0;
    size_t hi = g->nrec;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (g->recs[mid].seq < seq) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

/* The first unacknowledged record with seq >= from: false when there is none. */
static bool find_unacked(const st_spool *sp, uint64_t from, size_t *gi, size_t *ri)
{
    for (size_t i = seg_for(sp, from); i < sp->nseg; i++) {
        const struct seg *g = &sp->segs[i];
        size_t r;
        if (g->unacked == 0) {
            continue;
        }
        r = ST_MAX(rec_lower_bound(g, from), g->hint);
        for (; r < g->nrec; r++) {
            if (!g->recs[r].acked) {
                *gi = i;
                *ri = r;
                return true;
            }
        }
    }
    return false;
}

static void advance_hint(struct seg *g)
{
    while (g->hint < g->nrec && g->recs[g->hint].acked) {
        g->hint++;
    }
}

static void mark_acked(st_spool *sp, struct seg *g, size_t r)
{
    g->recs[r].acked = true;
    g->unacked--;
    sp->frames--;
    advance_hint(g);
}

static int reserve_rec(struct seg *g)
{
    size_t ncap;
    struct rec *p;
    if (g->nrec < g->cap) {
        return ST_OK;
    }
    ncap = g->cap == 0 ? 64 : g->cap * 2;
    if ((p = realloc(g->recs, ncap * sizeof(*p))) == NULL) {
        return ST_ENOMEM;
    }
    g->recs = p;
    g->cap = ncap;
    return ST_OK;
}

static int add_rec(struct seg *g, uint64_t seq, uint64_t off, uint32_t len, bool acked)
{
    int rv = reserve_rec(g);
    if (rv != ST_OK) {
        return rv;
    }
    g->recs[g->nrec++] = (struct rec){.seq = seq, .off = off, .len = len, .acked = acked};
    if (!acked) {
        g->unacked++;
    }
    return ST_OK;
}

static int reserve_segs(st_spool *sp, size_t n)
{
    struct seg *p;
    size_t ncap;
    if (sp->nseg + n <= sp->segcap) {
        return ST_OK;
    }
    ncap = ST_MAX(sp->segcap * 2, sp->nseg + n + 8);
    if ((p = realloc(sp->segs, ncap * sizeof(*p))) == NULL) {
        return ST_ENOMEM;
    }
    sp->segs = p;
    sp->segcap = ncap;
    return ST_OK;
}

/* Every seq at or below this is acknowledged or dropped: one below the oldest record still
 * waiting, or everything issued so far. */
static uint64_t acked_through(const st_spool *sp)
{
    uint64_t v = sp->next_seq - 1;
    size_t gi;
    size_t ri;
    if (find_unacked(sp, 0, &gi, &ri)) {
        v = sp->segs[gi].recs[ri].seq - 1;
    }
    return ST_MAX(v, sp->saved.acked_through);
}

static bool removable(const st_spool *sp, size_t i)
{
    const struct seg *g = &sp->segs[i];
    return g->unacked == 0 && (g->doomed || i + 1 < sp->nseg);
}

static uint64_t seg_last_seq(const struct seg *g)
{
    return g->nrec > 0 ? g->recs[g->nrec - 1].seq : g->first;
}

/* Drops segments[i] from memory after its file is gone. */
static void forget_seg(st_spool *sp, size_t i)
{
    struct seg *g = &sp->segs[i];
    if (i + 1 == sp->nseg && sp->fd >= 0) {
        close(sp->fd);
        sp->fd = -1;
    }
    sp->bytes -= g->bytes;
    sp->frames -= g->unacked;
    free(g->recs);
    memmove(g, g + 1, (sp->nseg - i - 1) * sizeof(*g));
    sp->nseg--;
}

/* Deletes every segment whose records are all acknowledged or dropped. The cursor goes to
 * disk first, so that seq, the watermark and the dropped counter outlive the files. */
static int collect(st_spool *sp)
{
    struct cursor c = {acked_through(sp), sp->next_seq, sp->dropped};
    uint64_t top = 0;
    bool any = false;
    int rv = ST_OK;
    for (size_t i = 0; i < sp->nseg; i++) {
        if (removable(sp, i)) {
            any = true;
            top = ST_MAX(top, seg_last_seq(&sp->segs[i]));
        }
    }
    if (!any) {
        return ST_OK;
    }
    if (sp->saved.floor <= top || sp->saved.dropped != c.dropped ||
        sp->saved.acked_through < c.acked_through) {
        if ((rv = cursor_write(sp, &c)) != ST_OK) {
            return rv;
        }
    }
    for (size_t i = 0; i < sp->nseg;) {
        char name[ST_SPOOL_NAME_LEN];
        if (!removable(sp, i)) {
            i++;
            continue;
        }
        seg_name(sp->segs[i].first, name);
        if ((rv = fs_unlink(sp, name)) != ST_OK) {
            break;
        }
        forget_seg(sp, i);
    }
    if (rv == ST_OK) {
        rv = fs_dirsync(sp);
    }
    return rv;
}

/* ---- Recovery ------------------------------------------------------------------------- */

/* Reads and checks the record at off; ST_ECORRUPT when it is torn or damaged. */
static int read_record(st_spool *sp, int fd, uint64_t off, uint64_t size, uint64_t *seq,
                       uint32_t *len)
{
    uint8_t hdr[ST_SPOOL_HDR];
    uint32_t n;
    int rv;
    if (size - off < ST_SPOOL_HDR) {
        return ST_ECORRUPT;
    }
    if ((rv = pread_all(fd, hdr, sizeof(hdr), off)) != ST_OK) {
        return rv;
    }
    n = get32(hdr);
    if (n > ST_SPOOL_MAX_RECORD || size - off - ST_SPOOL_HDR < n) {
        return ST_ECORRUPT;
    }
    if ((rv = grow_buf(sp, (size_t)n + 8)) != ST_OK) {
        return rv;
    }
    memcpy(sp->buf, hdr + 8, 8);
    if ((rv = pread_all(fd, sp->buf + 8, n, off + ST_SPOOL_HDR)) != ST_OK) {
        return rv;
    }
    if (st_crc32c(0, sp->buf, (size_t)n + 8) != get32(hdr + 4)) {
        return ST_ECORRUPT;
    }
    *seq = get64(hdr + 8);
    *len = n;
    return ST_OK;
}

/* The highest seq above prev among intact records anywhere in [from, size): tells a torn
 * tail (nothing after it) from damage in the middle, whose seqs must never be reused. */
static int resync_top(int fd, uint64_t from, uint64_t size, uint64_t prev, uint64_t *top)
{
    size_t n = (size_t)ST_MIN(size - from, (uint64_t)ST_SPOOL_RESYNC_MAX);
    uint8_t *b = malloc(n + 1);
    int rv;
    *top = 0;
    if (b == NULL) {
        return ST_ENOMEM;
    }
    if ((rv = pread_all(fd, b, n, from)) != ST_OK) {
        goto out;
    }
    for (size_t p = 0; n - p >= ST_SPOOL_HDR; p++) {
        uint32_t len = get32(b + p);
        uint64_t seq = get64(b + p + 8);
        if (len > ST_SPOOL_MAX_RECORD || n - p - ST_SPOOL_HDR < len || seq <= prev) {
            continue;
        }
        if (st_crc32c(0, b + p + 8, (size_t)len + 8) == get32(b + p + 4)) {
            *top = ST_MAX(*top, seq);
            p += ST_SPOOL_HDR + len - 1;
        }
    }
out:
    free(b);
    return rv;
}

/* A bad record at off in segs[i], after the good record prev. A torn tail of the last
 * segment is the normal trace of a crash mid-append: it is cut off and nothing is lost.
 * Anything else is damage: the frames that were there are counted as dropped and their seqs
 * are never used again. Either way the segment ends at off. */
static int damaged(st_spool *sp, size_t i, int fd, uint64_t off, uint64_t size, uint64_t prev,
                   uint64_t *floor)
{
    struct seg *g = &sp->segs[i];
    char name[ST_SPOOL_NAME_LEN];
    uint64_t end;
    uint64_t lo = ST_MAX(prev, sp->saved.acked_through);
    int rv;
    seg_name(g->first, name);
    g->damaged = true;
    if (i + 1 < sp->nseg) {
        end = sp->segs[i + 1].first - 1;
    } else if ((rv = resync_top(fd, off + 1, size, prev, &end)) != ST_OK) {
        return rv;
    }
    if (i + 1 == sp->nseg && end == 0) {
        ST_WARN(MOD, "%s/%s: cutting a torn record at offset %" PRIu64 " (%" PRIu64 " bytes)",
                sp->dir, name, off, size - off);
        return ST_OK;
    }
    if (end <= prev) {
        ST_ERROR(MOD, "%s/%s: damaged bytes at offset %" PRIu64 " cut off", sp->dir, name, off);
        return ST_OK;
    }
    ST_ERROR(MOD,
             "%s/%s: damaged record at offset %" PRIu64 "; frames %" PRIu64 "..%" PRIu64
             " are lost",
             sp->dir, name, off, prev + 1, end);
    if (end > lo) {
        sp->dropped += end - lo;
    }
    *floor = ST_MAX(*floor, end + 1);
    return ST_OK;
}

/* Indexes segs[i]; records at or below the cursor's watermark count as acknowledged. */
static int scan_seg(st_spool *sp, size_t i, uint64_t *floor)
{
    struct seg *g = &sp->segs[i];
    uint64_t limit = i + 1 < sp->nseg ? sp->segs[i + 1].first : UINT64_MAX;
    uint64_t prev = g->first - 1;
    uint64_t off = 0;
    char name[ST_SPOOL_NAME_LEN];
    struct stat st;
    int rv = ST_OK;
    int fd;
    seg_name(g->first, name);
    if ((fd = openat(sp->dirfd, name, O_RDONLY | O_CLOEXEC)) < 0 || fstat(fd, &st) != 0) {
        ST_ERROR(MOD, "open %s/%s: %s", sp->dir, name, strerror(errno));
        rv = ST_EIO;
        goto out;
    }
    while (off < (uint64_t)st.st_size) {
        uint64_t seq = 0;
        uint32_t len = 0;
        rv = read_record(sp, fd, off, (uint64_t)st.st_size, &seq, &len);
        if (rv == ST_OK && (seq <= prev || seq >= limit)) {
            rv = ST_ECORRUPT;
        }
        if (rv == ST_ECORRUPT) {
            rv = damaged(sp, i, fd, off, (uint64_t)st.st_size, prev, floor);
            break;
        }
        if (rv != ST_OK ||
            (rv = add_rec(g, seq, off, len, seq <= sp->saved.acked_through)) != ST_OK) {
            goto out;
        }
        prev = seq;
        off += ST_SPOOL_HDR + len;
    }
    g->bytes = off;
    sp->bytes += off;
    sp->frames += g->unacked;
    advance_hint(g);
out:
    if (fd >= 0) {
        close(fd);
    }
    return rv;
}

/* A segment's name: exactly 20 digits and ".seg"; its first seq must be at least 1. */
static bool parse_seg_name(const char *name, uint64_t *first)
{
    char digits[ST_SPOOL_NAME_DIGITS + 1];
    if (strlen(name) != ST_SPOOL_NAME_LEN - 1 || strcmp(name + ST_SPOOL_NAME_DIGITS, ".seg") != 0) {
        return false;
    }
    memcpy(digits, name, ST_SPOOL_NAME_DIGITS);
    digits[ST_SPOOL_NAME_DIGITS] = '\0';
    return st_parse_u64(digits, first) == ST_OK && *first > 0;
}

static int cmp_seg(const void *a, const void *b)
{
    const struct seg *x = a;
    const struct seg *y = b;
    return x->first < y->first ? -1 : x->first > y->first;
}

static int list_segs(st_spool *sp)
{
    DIR *d = opendir(sp->dir);
    struct dirent *e;
    int rv = ST_OK;
    if (d == NULL) {
        ST_ERROR(MOD, "opendir %s: %s", sp->dir, strerror(errno));
        return ST_EIO;
    }
    while ((e = readdir(d)) != NULL) {
        uint64_t first;
        if (!parse_seg_name(e->d_name, &first)) {
            continue;
        }
        if ((rv = reserve_segs(sp, 1)) != ST_OK) {
            break;
        }
        sp->segs[sp->nseg++] = (struct seg){.first = first};
    }
    closedir(d);
    if (sp->nseg > 1) {
        qsort(sp->segs, sp->nseg, sizeof(*sp->segs), cmp_seg);
    }
    return rv;
}

/* Cuts the damaged segments back to their last good record. */
static int cut_damaged(st_spool *sp)
{
    for (size_t i = 0; i < sp->nseg; i++) {
        struct seg *g = &sp->segs[i];
        char name[ST_SPOOL_NAME_LEN];
        int fd;
        int rv;
        if (!g->damaged) {
            continue;
        }
        seg_name(g->first, name);
        if ((fd = openat(sp->dirfd, name, O_WRONLY | O_CLOEXEC)) < 0) {
            ST_ERROR(MOD, "open %s/%s: %s", sp->dir, name, strerror(errno));
            return ST_EIO;
        }
        rv = fs_truncate(sp, fd, g->bytes);
        if (rv == ST_OK) {
            rv = fs_sync(sp, fd, false);
        }
        close(fd);
        if (rv != ST_OK) {
            return rv;
        }
        g->damaged = false;
    }
    return ST_OK;
}

/* Rebuilds the index from the segments, repairs what a crash or damage left behind, and
 * deletes segments that the cursor says are done with. */
static int recover(st_spool *sp)
{
    uint64_t floor = ST_MAX(sp->saved.floor, 1);
    uint64_t floor0 = floor;
    uint64_t dropped = sp->dropped;
    int rv;
    for (size_t i = 0; i < sp->nseg; i++) {
        if ((rv = scan_seg(sp, i, &floor)) != ST_OK) {
            return rv;
        }
    }
    sp->next_seq = ST_MAX(floor, sp->saved.acked_through + 1);
    for (size_t i = 0; i < sp->nseg; i++) {
        const struct seg *g = &sp->segs[i];
        /* An empty segment still names the seq its append was about to use. */
        sp->next_seq = ST_MAX(sp->next_seq, g->nrec > 0 ? g->recs[g->nrec - 1].seq + 1 : g->first);
    }
    if (sp->dropped != dropped || floor > floor0) {
        /* Before cutting: the lost seqs must never be handed out again. */
        struct cursor c = {acked_through(sp), sp->next_seq, sp->dropped};
        if ((rv = cursor_write(sp, &c)) != ST_OK) {
            return rv;
        }
    }
    if ((rv = cut_damaged(sp)) != ST_OK) {
        return rv;
    }
    return collect(sp);
}

static int load_agent_id(st_spool *sp)
{
    char path[PATH_MAX];
    char text[40];
    char *s = NULL;
    size_t len = 0;
    int rv;
    snprintf(path, sizeof(path), "%s/%s", sp->dir, id_name);
    rv = st_file_read(path, 64, &s, &len);
    if (rv == ST_OK) {
        while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == ' ')) {
            s[--len] = '\0';
        }
        if ((rv = st_uuid_parse(s, sp->id)) != ST_OK) {
            ST_ERROR(MOD, "%s does not hold a UUID", path);
            rv = ST_ECORRUPT;
        }
        free(s);
        return rv;
    }
    if (rv != ST_ENOENT || (rv = st_uuid_random(sp->id)) != ST_OK) {
        return rv;
    }
    st_uuid_format(sp->id, text);
    text[36] = '\n';
    if ((rv = st_file_write_atomic(path, text, 37)) != ST_OK) {
        ST_ERROR(MOD, "cannot write %s: %s", path, st_strerror(rv));
    }
    return rv;
}

static void apply_opts(st_spool *sp, const struct st_spool_opts *opts)
{
    sp->max_bytes = opts->max_bytes != 0 ? opts->max_bytes : ST_SPOOL_DEFAULT_MAX;
    sp->seg_bytes = opts->segment_bytes;
    if (sp->seg_bytes == 0) {
        sp->seg_bytes = ST_MAX(sp->max_bytes / 16, ST_SPOOL_MIN_SEGMENT);
    }
    sp->seg_bytes = ST_MIN(sp->seg_bytes, sp->max_bytes);
    sp->no_fsync = opts->no_fsync;
}

int st_spool_lock_dir(int dirfd, const char *dir, const char *mod)
{
    if (flock(dirfd, LOCK_EX | LOCK_NB) == 0) {
        return ST_OK;
    }
    if (errno == EWOULDBLOCK) {
        ST_ERROR(mod, "%s is in use by another strata-agent: one agent per data_dir", dir);
        return ST_EEXIST;
    }
    /* A file system without locks: go on as before, unguarded. */
    ST_WARN(mod, "%s: cannot lock (%s); make sure one agent uses it", dir, strerror(errno));
    return ST_OK;
}

int st_spool_open(const struct st_spool_opts *opts, st_spool **out)
{
    st_spool *sp;
    int rv;
    if (opts == NULL || opts->dir == NULL || opts->dir[0] == '\0' || out == NULL) {
        return ST_EINVAL;
    }
    if (strlen(opts->dir) > PATH_MAX - 64) {
        return ST_ETOOBIG;
    }
    if ((sp = calloc(1, sizeof(*sp))) == NULL) {
        return ST_ENOMEM;
    }
    pthread_mutex_init(&sp->mu, NULL);
    sp->dirfd = -1;
    sp->fd = -1;
    apply_opts(sp, opts);
    if ((sp->dir = strdup(opts->dir)) == NULL) {
        rv = ST_ENOMEM;
        goto out;
    }
    if ((rv = st_mkdir_p(sp->dir)) != ST_OK) {
        goto out;
    }
    if ((sp->dirfd = open(sp->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        ST_ERROR(MOD, "open %s: %s", sp->dir, strerror(errno));
        rv = ST_EIO;
        goto out;
    }
    /* One spool, one writer: a second agent on the same data_dir (a unit
     * and a hand-started agent, an overlapping restart) would append to
     * the same segment and hand out the same seqs. */
    if ((rv = st_spool_lock_dir(sp->dirfd, sp->dir, MOD)) != ST_OK) {
        goto out;
    }
    if ((rv = load_agent_id(sp)) != ST_OK || (rv = cursor_load(sp)) != ST_OK ||
        (rv = list_segs(sp)) != ST_OK || (rv = recover(sp)) != ST_OK) {
        goto out;
    }
    sp->ready = true;
    *out = sp;
    sp = NULL;
out:
    st_spool_close(sp);
    return rv;
}

void st_spool_close(st_spool *sp)
{
    if (sp == NULL) {
        return;
    }
    /* Every change is on disk when its call returns. Saving how far acks got only spares a
     * restart from resending the last segment; a crashed spool writes nothing at all. */
    if (sp->ready && !sp->crashed) {
        struct cursor c = {acked_through(sp), sp->next_seq, sp->dropped};
        if (c.acked_through > sp->saved.acked_through || c.dropped != sp->saved.dropped) {
            int rv = cursor_write(sp, &c);
            if (rv != ST_OK) {
                ST_WARN(MOD, "%s: cursor not saved on close: %s", sp->dir, st_strerror(rv));
            }
        }
    }
    for (size_t i = 0; i < sp->nseg; i++) {
        free(sp->segs[i].recs);
    }
    if (sp->fd >= 0) {
        close(sp->fd);
    }
    if (sp->dirfd >= 0) {
        close(sp->dirfd);
    }
    pthread_mutex_destroy(&sp->mu);
    free(sp->segs);
    free(sp->buf);
    free(sp->dir);
    free(sp);
}

void st_spool_agent_id(const st_spool *sp, uint8_t out[16])
{
    memcpy(out, sp->id, 16);
}

uint64_t st_spool_next_seq(st_spool *sp)
{
    uint64_t v;
    pthread_mutex_lock(&sp->mu);
    v = sp->next_seq;
    pthread_mutex_unlock(&sp->mu);
    return v;
}

/* ---- Append ------------------------------------------------------------------------------ */

/* Drops the oldest segments until need more bytes fit under max_bytes. */
static int make_room(st_spool *sp, uint64_t need)
{
    uint64_t freed = 0;
    uint64_t lost = 0;
    if (sp->bytes + need <= sp->max_bytes) {
        return ST_OK;
    }
    for (size_t i = 0; i < sp->nseg && sp->bytes - freed + need > sp->max_bytes; i++) {
        struct seg *g = &sp->segs[i];
        for (size_t r = g->hint; r < g->nrec; r++) {
            if (!g->recs[r].acked) {
                mark_acked(sp, g, r);
                lost++;
            }
        }
        g->doomed = true;
        freed += g->bytes;
    }
    sp->dropped += lost;
    if (lost > 0) {
        ST_WARN(MOD, "%s full: dropped the %" PRIu64 " oldest frames (%" PRIu64 " in all)", sp->dir,
                lost, sp->dropped);
    }
    return collect(sp);
}

/* Makes sure the last segment can take need more bytes: starts a new one, named by the seq
 * about to be written, when there is none, the last one was dropped, or it is full. */
static int prepare_active(st_spool *sp, uint64_t need)
{
    struct seg *g = last_seg(sp);
    char name[ST_SPOOL_NAME_LEN];
    int rv;
    if (g != NULL && g->nrec == 0 && g->first == sp->next_seq) {
        g->doomed = false; /* empty, and named for this very seq: reuse it */
    }
    if (g != NULL && !g->doomed && (g->bytes == 0 || g->bytes + need <= sp->seg_bytes)) {
        if (sp->fd >= 0) {
            return ST_OK;
        }
        seg_name(g->first, name);
        if ((sp->fd = openat(sp->dirfd, name, O_RDWR | O_CLOEXEC)) < 0) {
            ST_ERROR(MOD, "open %s/%s: %s", sp->dir, name, strerror(errno));
            return ST_EIO;
        }
        return ST_OK;
    }
    if ((rv = reserve_segs(sp, 1)) != ST_OK) {
        return rv;
    }
    if (sp->fd >= 0) {
        close(sp->fd);
        sp->fd = -1;
    }
    seg_name(sp->next_seq, name);
    if ((rv = fs_create(sp, name, O_RDWR | O_EXCL, &sp->fd)) != ST_OK) {
        return rv;
    }
    sp->segs[sp->nseg++] = (struct seg){.first = sp->next_seq};
    /* The new name must be durable before records in it are reported durable. */
    return fs_dirsync(sp);
}

static int write_record(st_spool *sp, uint64_t seq, const uint8_t *data, size_t len)
{
    struct seg *g = last_seg(sp);
    uint64_t off = g->bytes;
    size_t n = ST_SPOOL_HDR + len;
    int rv;
    if ((rv = grow_buf(sp, n)) != ST_OK) {
        return rv;
    }
    put32(sp->buf, (uint32_t)len);
    put64(sp->buf + 8, seq);
    if (len > 0) {
        memcpy(sp->buf + ST_SPOOL_HDR, data, len);
    }
    put32(sp->buf + 4, st_crc32c(0, sp->buf + 8, len + 8));
    /* Room in the index first: after the write nothing may fail but the disk. */
    if ((rv = reserve_rec(g)) != ST_OK) {
        return rv;
    }
    if ((rv = fs_write(sp, sp->fd, sp->buf, n, off, true)) != ST_OK ||
        (rv = fs_sync(sp, sp->fd, true)) != ST_OK) {
        /* Without the crash flag, take the partial record back; if that fails too, the next
         * append overwrites it in place and open cuts off whatever is left. */
        if (!sp->crashed && ftruncate(sp->fd, (off_t)off) != 0) {
            ST_WARN(MOD, "%s: cannot cut a failed append: %s", sp->dir, strerror(errno));
        }
        return rv;
    }
    add_rec(g, seq, off, (uint32_t)len, false); /* cannot fail: reserved */
    g->bytes += n;
    sp->bytes += n;
    sp->frames++;
    sp->next_seq++;
    return ST_OK;
}

int st_spool_append(st_spool *sp, uint64_t seq, const uint8_t *data, size_t len)
{
    uint64_t need = ST_SPOOL_HDR + (uint64_t)len;
    int rv;
    if (sp == NULL || (data == NULL && len > 0)) {
        return ST_EINVAL;
    }
    if (len > ST_SPOOL_MAX_RECORD || need > sp->max_bytes) {
        return ST_ETOOBIG;
    }
    pthread_mutex_lock(&sp->mu);
    if (sp->crashed) {
        rv = ST_EIO;
    } else if (seq != sp->next_seq) {
        rv = ST_EINVAL;
    } else if ((rv = make_room(sp, need)) == ST_OK && (rv = prepare_active(sp, need)) == ST_OK) {
        rv = write_record(sp, seq, data, len);
    }
    pthread_mutex_unlock(&sp->mu);
    return rv;
}

/* ---- Peek, ack, stats ------------------------------------------------------------------ */

/* Copies the payload of segs[gi].recs[ri] after checking it against its checksum. */
static int read_payload(st_spool *sp, size_t gi, size_t ri, uint8_t **out)
{
    const struct rec *r = &sp->segs[gi].recs[ri];
    char name[ST_SPOOL_NAME_LEN];
    uint8_t hdr[ST_SPOOL_HDR];
    uint8_t *p = NULL;
    bool own = gi + 1 != sp->nseg || sp->fd < 0;
    int fd = sp->fd;
    int rv;
    seg_name(sp->segs[gi].first, name);
    if (own && (fd = openat(sp->dirfd, name, O_RDONLY | O_CLOEXEC)) < 0) {
        ST_ERROR(MOD, "open %s/%s: %s", sp->dir, name, strerror(errno));
        return ST_EIO;
    }
    if ((p = malloc(r->len > 0 ? r->len : 1)) == NULL) {
        rv = ST_ENOMEM;
        goto out;
    }
    if ((rv = pread_all(fd, hdr, sizeof(hdr), r->off)) != ST_OK ||
        (rv = pread_all(fd, p, r->len, r->off + ST_SPOOL_HDR)) != ST_OK) {
        goto out;
    }
    if (get32(hdr) != r->len || get64(hdr + 8) != r->seq ||
        st_crc32c(st_crc32c(0, hdr + 8, 8), p, r->len) != get32(hdr + 4)) {
        rv = ST_ECORRUPT;
        goto out;
    }
    *out = p;
    p = NULL;
out:
    free(p);
    if (own) {
        close(fd);
    }
    return rv;
}

int st_spool_peek(st_spool *sp, uint64_t after, uint64_t *seq, uint8_t **data, size_t *len)
{
    size_t gi;
    size_t ri;
    uint8_t *p = NULL;
    int rv = ST_ENOENT;
    if (sp == NULL || seq == NULL || data == NULL || len == NULL) {
        return ST_EINVAL;
    }
    pthread_mutex_lock(&sp->mu);
    if (sp->crashed) {
        rv = ST_EIO;
        goto out;
    }
    while (after < UINT64_MAX && find_unacked(sp, after + 1, &gi, &ri)) {
        struct rec *r = &sp->segs[gi].recs[ri];
        if ((rv = read_payload(sp, gi, ri, &p)) != ST_ECORRUPT) {
            break;
        }
        /* Damaged on disk since open: sending it would be worse than losing it. */
        ST_ERROR(MOD, "%s: frame %" PRIu64 " is damaged on disk; dropping it", sp->dir, r->seq);
        mark_acked(sp, &sp->segs[gi], ri);
        sp->dropped++;
        after = r->seq;
        rv = ST_ENOENT;
    }
    if (rv == ST_OK) {
        const struct rec *r = &sp->segs[gi].recs[ri];
        *seq = r->seq;
        *len = r->len;
        *data = p;
    }
out:
    pthread_mutex_unlock(&sp->mu);
    return rv;
}

int st_spool_ack(st_spool *sp, uint64_t seq)
{
    struct seg *g;
    size_t r;
    int rv = ST_OK;
    if (sp == NULL) {
        return ST_EINVAL;
    }
    pthread_mutex_lock(&sp->mu);
    if (sp->crashed) {
        rv = ST_EIO;
        goto out;
    }
    if (sp->nseg == 0) {
        goto out;
    }
    g = &sp->segs[seg_for(sp, seq)];
    r = rec_lower_bound(g, seq);
    if (r < g->nrec && g->recs[r].seq == seq && !g->recs[r].acked) {
        mark_acked(sp, g, r);
    }
    /* Also retries a deletion that failed before. */
    rv = collect(sp);
out:
    pthread_mutex_unlock(&sp->mu);
    return rv;
}

void st_spool_stats(st_spool *sp, struct st_spool_stats *out)
{
    size_t gi;
    size_t ri;
    pthread_mutex_lock(&sp->mu);
    out->frames = sp->frames;
    out->bytes = sp->bytes;
    out->dropped = sp->dropped;
    out->first_seq = find_unacked(sp, 0, &gi, &ri) ? sp->segs[gi].recs[ri].seq : 0;
    out->next_seq = sp->next_seq;
    pthread_mutex_unlock(&sp->mu);
}

void st_spool_fail_after(st_spool *sp, int n)
{
    pthread_mutex_lock(&sp->mu);
    sp->fail_left = n > 0 ? n : 0;
    pthread_mutex_unlock(&sp->mu);
}
