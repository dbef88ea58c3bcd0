/* The access-log tailer of the nginx sampler: reads the lines written since
 * the last run with pread from a remembered offset (a partial last line is
 * simply read again next time), follows rotation by rename (the old file is
 * drained through its fd while nginx may still write to it) and by
 * copytruncate, and checkpoints (device, inode, offset, head CRC) per file. */
#include "nginx_log.h"

#include "err.h"
#include "log.h"
#include "samplers.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FP_MAX 1024 /* head bytes whose CRC tells a reused inode or a rewritten file */
#define CKPT_HEADER "strata-nginx-tail 1"
#define CKPT_LINE_MAX 160

/* One open log file. off is the first byte not yet passed on as a line. */
struct tfile {
    int fd;
    uint64_t dev, ino;
    uint64_t off;
    bool skipping; /* inside an over-long line, or started mid-line: skip to '\n' */
    uint32_t fp_len, fp_crc;
    int64_t until_ms; /* renamed files: closed once drained after this */
};

/* A file as the checkpoint remembers it. */
struct ckpt_entry {
    bool cur;
    uint64_t dev, ino, off;
    bool skipping;
    uint32_t fp_len, fp_crc;
};

struct st_nginx_tail {
    char *path;
    char *dir;
    char *ckpt_path;
    bool from_beginning;
    uint64_t max_bytes;
    int64_t rotate_wait_ms;
    struct tfile cur;
    struct tfile old[ST_NGINX_TAIL_OLD_MAX]; /* oldest first */
    size_t nold;
    bool opened; /* the first open was attempted and settled */
    struct ckpt_entry ck[ST_NGINX_TAIL_OLD_MAX + 1];
    size_t nck;
    char *buf; /* ST_NGINX_TAIL_CHUNK */
    char last_ckpt[ST_NGINX_CKPT_MAX];
    size_t last_ckpt_len;
    st_nginx_tail_stats stats;
};

static int from_errno(int e)
{
    switch (e) {
    case ENOENT:
    case ENOTDIR:
        return ST_ENOENT;
    case EACCES:
    case EPERM:
        return ST_EPERM;
    case ENOMEM:
        return ST_ENOMEM;
    default:
        return ST_EIO;
    }
}

static void tfile_reset(struct tfile *f)
{
    memset(f, 0, sizeof(*f));
    f->fd = -1;
}

static void tfile_close(struct tfile *f)
{
    if (f->fd >= 0) {
        close(f->fd);
    }
    tfile_reset(f);
}

static int open_file(const char *path, struct tfile *f)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int rv = from_errno(errno);
        if (rv != ST_ENOENT) {
            ST_WARN("nginx", "cannot open %s: %s", path, strerror(errno));
        }
        return rv;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ST_WARN("nginx", "%s is not a regular file", path);
        close(fd);
        return ST_EINVAL;
    }
    tfile_reset(f);
    f->fd = fd;
    f->dev = (uint64_t)st.st_dev;
    f->ino = (uint64_t)st.st_ino;
    return ST_OK;
}

/* ---- head fingerprint ---- */

static bool head_crc(int fd, uint32_t len, uint32_t *crc)
{
    char b[FP_MAX];
    ssize_t n;
    if (len > FP_MAX) {
        return false;
    }
    n = pread(fd, b, len, 0);
    if (n != (ssize_t)len) {
        return false;
    }
    *crc = st_crc32c(0, b, len);
    return true;
}

/* True when the file still starts as it did (a file shorter than its head
 * was truncated). */
static bool head_same(const struct tfile *f)
{
    uint32_t crc;
    return f->fp_len == 0 || (head_crc(f->fd, f->fp_len, &crc) && crc == f->fp_crc);
}

static void head_update(struct tfile *f)
{
    uint32_t len = (uint32_t)ST_MIN(f->off, (uint64_t)FP_MAX);
    uint32_t crc;
    if (len > f->fp_len && head_crc(f->fd, len, &crc)) {
        f->fp_len = len;
        f->fp_crc = crc;
    }
}

/* ---- reading lines ---- */

/* Passes the complete lines of buf[0..n) on; returns the bytes consumed. A
 * rest longer than ST_NGINX_LINE_MAX without '\n' is reported and skipped. */
static size_t scan(struct tfile *f, const char *buf, size_t n, st_nginx_line_fn fn, void *arg)
{
    size_t pos = 0;
    const char *nl;
    if (f->skipping) {
        if ((nl = memchr(buf, '\n', n)) == NULL) {
            return n;
        }
        pos = (size_t)(nl - buf) + 1;
        f->skipping = false;
    }
    while ((nl = memchr(buf + pos, '\n', n - pos)) != NULL) {
        size_t len = (size_t)(nl - (buf + pos));
        fn(arg, len > ST_NGINX_LINE_MAX ? NULL : buf + pos, len);
        pos += len + 1;
    }
    if (n - pos > ST_NGINX_LINE_MAX) {
        fn(arg, NULL, n - pos);
        f->skipping = true;
        return n;
    }
    return pos;
}

/* Reads f from its offset until EOF (*eof) or the budget is spent. */
static int drain(st_nginx_tail *t, struct tfile *f, uint64_t *budget, st_nginx_line_fn fn,
                 void *arg, bool *eof)
{
    *eof = false;
    while (*budget > 0) {
        ssize_t n = pread(f->fd, t->buf, ST_NGINX_TAIL_CHUNK, (off_t)f->off);
        size_t used;
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            ST_WARN("nginx", "reading %s: %s", t->path, strerror(errno));
            return ST_EIO;
        }
        used = n > 0 ? scan(f, t->buf, (size_t)n, fn, arg) : 0;
        f->off += used;
        t->stats.bytes += used;
        *budget -= ST_MIN(*budget, (uint64_t)used);
        if ((size_t)n < ST_NGINX_TAIL_CHUNK) {
            *eof = true; /* a short read is the end; a partial line waits */
            break;
        }
    }
    head_update(f);
    return ST_OK;
}

/* ---- rotation ---- */

/* Keeps cur readable (nginx writes to it until it reopens its logs). */
static void retire(st_nginx_tail *t, int64_t now_ms)
{
    if (t->nold == ST_NGINX_TAIL_OLD_MAX) {
        ST_WARN("nginx", "%s: more than %d rotations pending; the oldest file is closed", t->path,
                ST_NGINX_TAIL_OLD_MAX);
        tfile_close(&t->old[0]);
        memmove(&t->old[0], &t->old[1], (t->nold - 1) * sizeof(t->old[0]));
        t->nold--;
    }
    t->cur.until_ms = now_ms + t->rotate_wait_ms;
    t->old[t->nold++] = t->cur;
    tfile_reset(&t->cur);
}

static int drain_old(st_nginx_tail *t, int64_t now_ms, uint64_t *budget, st_nginx_line_fn fn,
                     void *arg)
{
    size_t i = 0;
    while (i < t->nold && *budget != 0) {
        bool eof;
        int rv = drain(t, &t->old[i], budget, fn, arg, &eof);
        if (rv != ST_OK) {
            return rv;
        }
        if (!eof || now_ms < t->old[i].until_ms) {
            i++;
            continue;
        }
        tfile_close(&t->old[i]);
        memmove(&t->old[i], &t->old[i + 1], (t->nold - i - 1) * sizeof(t->old[0]));
        t->nold--;
    }
    return ST_OK;
}

/* copytruncate: the file shrank below our offset, or its head changed. */
static void check_truncated(st_nginx_tail *t)
{
    struct stat st;
    if (fstat(t->cur.fd, &st) != 0) {
        return;
    }
    if ((uint64_t)st.st_size >= t->cur.off && head_same(&t->cur)) {
        return;
    }
    ST_INFO("nginx", "%s was truncated; reading it from the start", t->path);
    t->cur.off = 0;
    t->cur.skipping = false;
    t->cur.fp_len = 0;
    t->stats.truncated++;
}

/* After cur was read to its end: has the path been given to a new file? */
static int check_renamed(st_nginx_tail *t, int64_t now_ms, bool *renamed)
{
    struct stat st;
    struct tfile nf;
    int rv;
    *renamed = false;
    if (stat(t->path, &st) != 0) {
        /* Renamed away and not yet reopened by nginx: keep reading cur. */
        return errno == ENOENT ? ST_OK : from_errno(errno);
    }
    if ((uint64_t)st.st_dev == t->cur.dev && (uint64_t)st.st_ino == t->cur.ino) {
        return ST_OK;
    }
    if ((rv = open_file(t->path, &nf)) != ST_OK) {
        return rv == ST_ENOENT ? ST_OK : rv;
    }
    ST_INFO("nginx", "%s was rotated; finishing the old file, reading the new one", t->path);
    retire(t, now_ms);
    t->cur = nf;
    t->stats.renamed++;
    *renamed = true;
    return ST_OK;
}

/* ---- starting: checkpoint or not ---- */

/* Positions a file at a remembered offset when it is the file remembered:
 * same size or longer and the same head. */
static bool resume_at(struct tfile *f, const struct ckpt_entry *e)
{
    struct stat st;
    if (fstat(f->fd, &st) != 0 || (uint64_t)st.st_size < e->off) {
        return false;
    }
    f->fp_len = e->fp_len;
    f->fp_crc = e->fp_crc;
    if (!head_same(f)) {
        f->fp_len = 0;
        return false;
    }
    f->off = e->off;
    f->skipping = e->skipping;
    return true;
}

/* Looks for a remembered file that was renamed while we were away (the
 * usual access.log.1 in the same directory) and queues it for draining. */
static void find_renamed(st_nginx_tail *t, const struct ckpt_entry *e, int64_t now_ms)
{
    DIR *d = opendir(t->dir);
    struct dirent *de;
    size_t seen = 0;
    if (d == NULL) {
        return;
    }
    while ((de = readdir(d)) != NULL && seen++ < ST_NGINX_DIR_SCAN_MAX) {
        char p[ST_PROCFS_PATH_MAX];
        struct tfile f;
        if ((uint64_t)de->d_ino != e->ino || t->nold >= ST_NGINX_TAIL_OLD_MAX ||
            st_procfs_path(p, sizeof(p), "%s/%s", t->dir, de->d_name) != ST_OK ||
            open_file(p, &f) != ST_OK) {
            continue;
        }
        if (f.dev == e->dev && resume_at(&f, e)) {
            ST_INFO("nginx", "%s: finishing %s, rotated while the agent was away", t->path, p);
            f.until_ms = now_ms + t->rotate_wait_ms; /* nginx may not have reopened yet */
            t->old[t->nold++] = f;
            break;
        }
        tfile_close(&f);
    }
    closedir(d);
}

/* Where to start in the file now at the path when there is no checkpoint:
 * at its end, skipping to the next line when the end is mid-line. */
static void start_at_end(struct tfile *f)
{
    struct stat st;
    char last;
    if (fstat(f->fd, &st) != 0 || st.st_size == 0) {
        return;
    }
    f->off = (uint64_t)st.st_size;
    f->skipping = pread(f->fd, &last, 1, st.st_size - 1) == 1 && last != '\n';
}

/* A file at the path that the checkpoint does not name is new since the
 * last run: it is read from its start. */
static void resume(st_nginx_tail *t, int64_t now_ms)
{
    for (size_t i = 0; i < t->nck; i++) {
        const struct ckpt_entry *e = &t->ck[i];
        if (t->cur.fd < 0 || e->dev != t->cur.dev || e->ino != t->cur.ino) {
            find_renamed(t, e, now_ms);
        } else if (!resume_at(&t->cur, e)) {
            ST_INFO("nginx", "%s was truncated while the agent was away", t->path);
            t->stats.truncated++;
        }
    }
}

static int open_cur(st_nginx_tail *t, int64_t now_ms)
{
    int rv = open_file(t->path, &t->cur);
    if (rv != ST_OK && rv != ST_ENOENT) {
        return rv;
    }
    if (!t->opened) {
        t->opened = true;
        /* A log missing now is read from its start once it appears. */
        if (t->nck > 0) {
            resume(t, now_ms);
        } else if (rv == ST_OK && !t->from_beginning) {
            start_at_end(&t->cur);
        }
    }
    return rv;
}

/* ---- public ---- */

int st_nginx_tail_read(st_nginx_tail *t, int64_t now_ms, st_nginx_line_fn fn, void *arg)
{
    uint64_t budget = t->max_bytes > 0 ? t->max_bytes : UINT64_MAX;
    bool eof, renamed;
    int rv = ST_OK;
    if (t->cur.fd < 0 && (rv = open_cur(t, now_ms)) != ST_OK && rv != ST_ENOENT) {
        return rv;
    }
    if ((rv = drain_old(t, now_ms, &budget, fn, arg)) != ST_OK) {
        return rv;
    }
    if (t->cur.fd < 0) {
        return t->nold > 0 ? ST_OK : ST_ENOENT;
    }
    check_truncated(t);
    if ((rv = drain(t, &t->cur, &budget, fn, arg, &eof)) != ST_OK || !eof) {
        return rv;
    }
    if ((rv = check_renamed(t, now_ms, &renamed)) != ST_OK || !renamed) {
        return rv;
    }
    return drain(t, &t->cur, &budget, fn, arg, &eof);
}

static int ckpt_line(char *buf, size_t cap, size_t *len, const char *tag, const struct tfile *f)
{
    int n = snprintf(buf + *len, cap - *len, "%s %llu %llu %llu %d %u %u\n", tag,
                     (unsigned long long)f->dev, (unsigned long long)f->ino,
                     (unsigned long long)f->off, f->skipping ? 1 : 0, f->fp_len, f->fp_crc);
    if (n < 0 || (size_t)n >= cap - *len) {
        return ST_ETOOBIG;
    }
    *len += (size_t)n;
    return ST_OK;
}

int st_nginx_tail_checkpoint(st_nginx_tail *t)
{
    char text[ST_NGINX_CKPT_MAX];
    size_t len = 0;
    int rv = ST_OK;
    if (t->ckpt_path == NULL || !t->opened) {
        return ST_OK; /* never opened: keep what the last run remembered */
    }
    len = (size_t)snprintf(text, sizeof(text), "%s\n", CKPT_HEADER);
    for (size_t i = 0; i < t->nold && rv == ST_OK; i++) {
        rv = ckpt_line(text, sizeof(text), &len, "old", &t->old[i]);
    }
    if (rv == ST_OK && t->cur.fd >= 0) {
        rv = ckpt_line(text, sizeof(text), &len, "cur", &t->cur);
    }
    if (rv != ST_OK || (len == t->last_ckpt_len && memcmp(text, t->last_ckpt, len) == 0)) {
        return rv;
    }
    if ((rv = st_file_write_atomic(t->ckpt_path, text, len)) != ST_OK) {
        ST_WARN("nginx", "cannot write checkpoint %s: %s", t->ckpt_path, st_strerror(rv));
        return rv;
    }
    memcpy(t->last_ckpt, text, len);
    t->last_ckpt_len = len;
    return ST_OK;
}

/* "<tag> dev ino off skip fp_len fp_crc" */
static int parse_ckpt_line(const char *p, struct ckpt_entry *e)
{
    uint64_t v[6];
    if (strncmp(p, "cur ", 4) != 0 && strncmp(p, "old ", 4) != 0) {
        return ST_EPARSE;
    }
    e->cur = p[0] == 'c';
    p += 4;
    for (int i = 0; i < 6; i++) {
        if ((i > 0 && *p++ != ' ') || st_procfs_u64(&p, &v[i]) != ST_OK) {
            return ST_EPARSE;
        }
    }
    if (*p != '\n' || v[3] > 1 || v[4] > FP_MAX || v[5] > UINT32_MAX) {
        return ST_EPARSE;
    }
    e->dev = v[0];
    e->ino = v[1];
    e->off = v[2];
    e->skipping = v[3] == 1;
    e->fp_len = (uint32_t)v[4];
    e->fp_crc = (uint32_t)v[5];
    return ST_OK;
}

static int load_ckpt(st_nginx_tail *t)
{
    char *text = NULL;
    size_t len = 0;
    const char *p;
    int rv = st_file_read(t->ckpt_path, ST_NGINX_CKPT_MAX, &text, &len);
    if (rv != ST_OK) {
        return rv;
    }
    p = text;
    if (strncmp(p, CKPT_HEADER "\n", sizeof(CKPT_HEADER)) != 0) {
        rv = ST_ECORRUPT;
        goto out;
    }
    p += sizeof(CKPT_HEADER);
    while (*p != '\0') {
        const char *nl = strchr(p, '\n');
        if (nl == NULL || nl - p > CKPT_LINE_MAX || t->nck >= ST_NGINX_TAIL_OLD_MAX + 1 ||
            parse_ckpt_line(p, &t->ck[t->nck]) != ST_OK) {
            rv = ST_ECORRUPT;
            goto out;
        }
        t->nck++;
        p = nl + 1;
    }
out:
    if (rv != ST_OK) {
        t->nck = 0;
    }
    free(text);
    return rv;
}

int st_nginx_tail_new(const st_nginx_tail_cfg *cfg, st_nginx_tail **out)
{
    st_nginx_tail *t = calloc(1, sizeof(*t));
    char *slash;
    int rv;
    if (t == NULL) {
        return ST_ENOMEM;
    }
    tfile_reset(&t->cur);
    t->from_beginning = cfg->from_beginning;
    t->max_bytes = cfg->max_bytes;
    t->rotate_wait_ms = cfg->rotate_wait_ms;
    if ((t->path = strdup(cfg->path)) == NULL || (t->dir = strdup(cfg->path)) == NULL ||
        (cfg->ckpt_path != NULL && (t->ckpt_path = strdup(cfg->ckpt_path)) == NULL) ||
        (t->buf = malloc(ST_NGINX_TAIL_CHUNK)) == NULL) {
        st_nginx_tail_free(t);
        return ST_ENOMEM;
    }
    slash = strrchr(t->dir, '/');
    if (slash == NULL) {
        memcpy(t->dir, ".", 2); /* the path holds at least one byte */
    } else {
        slash[slash == t->dir ? 1 : 0] = '\0';
    }
    if (t->ckpt_path != NULL && (rv = load_ckpt(t)) != ST_OK && rv != ST_ENOENT) {
        ST_WARN("nginx", "ignoring checkpoint %s: %s", t->ckpt_path, st_strerror(rv));
    }
    *out = t;
    return ST_OK;
}

void st_nginx_tail_free(st_nginx_tail *t)
{
    if (t == NULL) {
        return;
    }
    tfile_close(&t->cur);
    for (size_t i = 0; i < t->nold; i++) {
        tfile_close(&t->old[i]);
    }
    free(t->path);
    free(t->dir);
    free(t->ckpt_path);
    free(t->buf);
    free(t);
}

void st_nginx_tail_stats_take(st_nginx_tail *t, st_nginx_tail_stats *out)
{
    *out = t->stats;
    memset(&t->stats, 0, sizeof(t->stats));
}

void st_nginx_path_hash(const char *path, char out[17])
{
    uint64_t h = 14695981039346656037ull;
    uint8_t b[8];
    for (const char *p = path; *p != '\0'; p++) {
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    }
    for (int i = 0; i < 8; i++) {
        b[i] = (uint8_t)(h >> (56 - 8 * i));
    }
    st_hex_encode(b, 8, out);
}
