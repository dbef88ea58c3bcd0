/* bundle_scan: the bundle sampler's directory walk and per-file cache. A file
 * is read again only when its device, inode, size or mtime changed; reading
 * streams it through zlib's deflate (gzip wrapper) and the content-defined
 * block cutter in 64 KiB pieces, so memory stays bounded for any file size. */
#include "bundle.h"

#include "err.h"
#include "log.h"
#include "timeutil.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define READ_CHUNK (64 * 1024)
#define MIN_SLOTS 256
#define GEAR_MASK 0xFF00000000000000ull /* top 8 bits: one cut in 256 after the minimum */
#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull
#define GEAR_SEED 0x5354524154414755ull /* fixed, so blocks are cut the same on every host */
#define ZLIB_WINDOW_GZIP (15 + 16)      /* 32 KiB window, gzip header and trailer */
#define ZLIB_MEM_LEVEL 8                /* zlib's default, as gzip -9 in nginx and python */

enum file_kind { KIND_NONE, KIND_JS, KIND_CSS };

struct st_bundle_cache {
    st_bundle_file **slot;
    size_t cap; /* a power of two */
    size_t n;
    uint32_t gen;
    size_t nblocks; /* blocks held by all files, at most ST_BUNDLE_MAX_BLOCKS */
    bool blocks_full_logged;
    z_stream z;
    bool z_ready;
    int z_level;
    uint64_t gear[256];
    st_bundle_counters counters;
    /* Held during a scan only (the walker's buffers), as is the deflate
     * state (z_ready): a scan runs once a minute or less, and 0.4 MB kept
     * resident in between would be most of what the sampler costs. */
    unsigned char *in;  /* READ_CHUNK */
    unsigned char *out; /* READ_CHUNK */
};

typedef struct walker {
    st_bundle_cache *c;
    const st_bundle_limits *lim;
    int64_t deadline_ns;
    st_bundle_scan_stats *st;
    char root[PATH_MAX]; /* the build directory, resolved */
    size_t rootlen;
    char rel[ST_BUNDLE_MAX_LABEL + 1];
    bool stop;
    unsigned char in[READ_CHUNK];
    unsigned char out[READ_CHUNK];
} walker;

/* The block cutter's state across the reads of one file. */
typedef struct cutter {
    const uint64_t *gear;
    uint64_t h, fnv;
    uint32_t len;
    st_bundle_block *v;
    size_t n, cap, budget;
    bool over; /* the budget ran out: no blocks for this file */
} cutter;

/* ---- the hash table ---- */

static uint64_t hash_str(const char *s)
{
    uint64_t h = FNV_OFFSET;
    for (; *s != '\0'; s++) {
        h = (h ^ (unsigned char)*s) * FNV_PRIME;
    }
    return h;
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int st_bundle_cache_new(st_bundle_cache **out)
{
    st_bundle_cache *c = calloc(1, sizeof(*c));
    uint64_t seed = GEAR_SEED;
    if (c == NULL || (c->slot = calloc(MIN_SLOTS, sizeof(*c->slot))) == NULL) {
        free(c);
        return ST_ENOMEM;
    }
    c->cap = MIN_SLOTS;
    for (size_t i = 0; i < 256; i++) {
        c->gear[i] = splitmix64(&seed);
    }
    *out = c;
    return ST_OK;
}

static void file_free(st_bundle_cache *c, st_bundle_file *f)
{
    c->nblocks -= f->nblocks;
    free(f->blocks);
    free(f->rel);
    free(f);
}

static void scan_release(st_bundle_cache *c)
{
    if (c->z_ready) {
        deflateEnd(&c->z);
        c->z_ready = false;
    }
    c->in = NULL;
    c->out = NULL;
}

void st_bundle_cache_free(st_bundle_cache *c)
{
    if (c == NULL) {
        return;
    }
    for (size_t i = 0; i < c->cap; i++) {
        while (c->slot[i] != NULL) {
            st_bundle_file *f = c->slot[i];
            c->slot[i] = f->next;
            file_free(c, f);
        }
    }
    scan_release(c);
    free(c->slot);
    free(c);
}

st_bundle_file *st_bundle_cache_get(const st_bundle_cache *c, const char *rel)
{
    st_bundle_file *f = c->slot[hash_str(rel) & (c->cap - 1)];
    while (f != NULL && strcmp(f->rel, rel) != 0) {
        f = f->next;
    }
    return f;
}

/* Doubles the table when it holds as many files as slots. */
static void grow(st_bundle_cache *c)
{
    size_t ncap = c->cap * 2;
    st_bundle_file **ns;
    if (c->n < c->cap || (ns = calloc(ncap, sizeof(*ns))) == NULL) {
        return; /* a full table still works, only slower */
    }
    for (size_t i = 0; i < c->cap; i++) {
        while (c->slot[i] != NULL) {
            st_bundle_file *f = c->slot[i];
            size_t k = hash_str(f->rel) & (ncap - 1);
            c->slot[i] = f->next;
            f->next = ns[k];
            ns[k] = f;
        }
    }
    free(c->slot);
    c->slot = ns;
    c->cap = ncap;
}

static st_bundle_file *insert(st_bundle_cache *c, const char *rel, bool css)
{
    st_bundle_file *f = calloc(1, sizeof(*f));
    size_t k;
    if (f == NULL || (f->rel = strdup(rel)) == NULL) {
        free(f);
        return NULL;
    }
    f->css = css;
    grow(c);
    k = hash_str(rel) & (c->cap - 1);
    f->next = c->slot[k];
    c->slot[k] = f;
    c->n++;
    return f;
}

/* Drops every file the scan of generation gen did not find. */
static uint64_t sweep(st_bundle_cache *c, uint32_t gen)
{
    uint64_t removed = 0;
    for (size_t i = 0; i < c->cap; i++) {
        st_bundle_file **pp = &c->slot[i];
        while (*pp != NULL) {
            st_bundle_file *f = *pp;
            if (f->seen == gen) {
                pp = &f->next;
                continue;
            }
            *pp = f->next;
            file_free(c, f);
            c->n--;
            removed++;
        }
    }
    return removed;
}

static int by_rel(const void *a, const void *b)
{
    return strcmp((*(st_bundle_file *const *)a)->rel, (*(st_bundle_file *const *)b)->rel);
}

int st_bundle_cache_list(const st_bundle_cache *c, st_bundle_file ***out, size_t *n)
{
    st_bundle_file **v = calloc(c->n > 0 ? c->n : 1, sizeof(*v));
    size_t k = 0;
    if (v == NULL) {
        return ST_ENOMEM;
    }
    for (size_t i = 0; i < c->cap; i++) {
        for (st_bundle_file *f = c->slot[i]; f != NULL; f = f->next) {
            v[k++] = f;
        }
    }
    qsort(v, k, sizeof(*v), by_rel);
    *out = v;
    *n = k;
    return ST_OK;
}

void st_bundle_cache_counters(const st_bundle_cache *c, st_bundle_counters *out)
{
    *out = c->counters;
}

/* ---- reading one file ---- */

static int cut_push(cutter *k)
{
    if (k->over) {
        return ST_OK;
    }
    if (k->n == k->cap) {
        size_t ncap = k->cap == 0 ? 64 : k->cap * 2;
        st_bundle_block *nv;
        if (k->n >= k->budget) {
            k->over = true; /* the dedup estimate loses this file, the gzip size does not */
            free(k->v);
            k->v = NULL;
            k->n = k->cap = 0;
            return ST_OK;
        }
        if (ncap > k->budget) {
            ncap = k->budget;
        }
        if ((nv = realloc(k->v, ncap * sizeof(*nv))) == NULL) {
            return ST_ENOMEM;
        }
        k->v = nv;
        k->cap = ncap;
    }
    k->v[k->n++] = (st_bundle_block){k->fnv, k->len};
    k->fnv = FNV_OFFSET;
    k->len = 0;
    return ST_OK;
}

/* After ST_BUNDLE_BLOCK_MIN bytes the 64-bit gear hash depends only on the
 * last 64 bytes (each byte shifts one bit out), so a cut depends on content,
 * not on where the block started. */
static int cut_feed(cutter *k, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        k->h = (k->h << 1) + k->gear[p[i]];
        k->fnv = (k->fnv ^ p[i]) * FNV_PRIME;
        k->len++;
        if (k->len >= ST_BUNDLE_BLOCK_MIN &&
            ((k->h & GEAR_MASK) == 0 || k->len >= ST_BUNDLE_BLOCK_MAX)) {
            if (cut_push(k) != ST_OK) {
                return ST_ENOMEM;
            }
        }
    }
    return ST_OK;
}

static int deflate_feed(st_bundle_cache *c, size_t n, int flush)
{
    c->z.next_in = c->in;
    c->z.avail_in = (uInt)n;
    do {
        c->z.next_out = c->out;
        c->z.avail_out = READ_CHUNK;
        if (deflate(&c->z, flush) == Z_STREAM_ERROR) {
            return ST_EIO;
        }
    } while (c->z.avail_out == 0);
    return ST_OK;
}

static int deflate_start(st_bundle_cache *c, int level)
{
    if (c->z_ready && c->z_level == level) {
        return deflateReset(&c->z) == Z_OK ? ST_OK : ST_EIO;
    }
    if (c->z_ready) {
        deflateEnd(&c->z);
        c->z_ready = false;
    }
    memset(&c->z, 0, sizeof(c->z));
    if (deflateInit2(&c->z, level, Z_DEFLATED, ZLIB_WINDOW_GZIP, ZLIB_MEM_LEVEL,
                     Z_DEFAULT_STRATEGY) != Z_OK) {
        return ST_ENOMEM;
    }
    c->z_ready = true;
    c->z_level = level;
    return ST_OK;
}

/* Reads fd to its end: gzip size and blocks into f. ST_ETOOBIG when it
 * holds more than limit bytes (it grew after the stat). */
static int measure(st_bundle_cache *c, int fd, const st_bundle_limits *lim, st_bundle_file *f)
{
    cutter k = {c->gear, 0, FNV_OFFSET, 0, NULL, 0, 0, ST_BUNDLE_MAX_BLOCKS - c->nblocks, false};
    uint64_t total = 0;
    int rv;
    if ((rv = deflate_start(c, lim->gzip_level)) != ST_OK) {
        return rv;
    }
    for (;;) {
        ssize_t n = read(fd, c->in, READ_CHUNK);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            rv = n < 0 ? ST_EIO : ST_OK;
            break;
        }
        total += (uint64_t)n;
        if (total > lim->max_file_size) {
            rv = ST_ETOOBIG;
            break;
        }
        if ((rv = cut_feed(&k, c->in, (size_t)n)) != ST_OK ||
            (rv = deflate_feed(c, (size_t)n, Z_NO_FLUSH)) != ST_OK) {
            break;
        }
    }
    if (rv == ST_OK && k.len >= ST_BUNDLE_BLOCK_MIN) {
        rv = cut_push(&k);
    }
    if (rv == ST_OK) {
        rv = deflate_feed(c, 0, Z_FINISH);
    }
    if (rv != ST_OK) {
        free(k.v);
        return rv;
    }
    if (k.over && !c->blocks_full_logged) {
        ST_WARN("bundle", "more than %u blocks: duplicate bytes leave out %s and later files",
                ST_BUNDLE_MAX_BLOCKS, f->rel);
        c->blocks_full_logged = true;
    }
    c->nblocks -= f->nblocks;
    free(f->blocks);
    f->blocks = k.over ? NULL : k.v;
    f->nblocks = k.over ? 0 : k.n;
    c->nblocks += f->nblocks;
    f->bytes = total;
    f->gzip_bytes = c->z.total_out;
    return ST_OK;
}

/* Opens name (at dfd) without following a link, checks it is still the file
 * that was stat'ed, and measures it. */
static int read_file(walker *w, int dfd, const char *name, const struct stat *sb, st_bundle_file *f)
{
    struct stat now;
    int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    int rv;
    if (fd < 0) {
        return errno == ENOENT ? ST_ENOENT : errno == EACCES ? ST_EPERM : ST_EIO;
    }
    if (fstat(fd, &now) != 0 || !S_ISREG(now.st_mode) || now.st_ino != sb->st_ino ||
        now.st_dev != sb->st_dev) {
        close(fd);
        return ST_ENOENT; /* replaced between the stat and the open */
    }
    rv = measure(w->c, fd, w->lim, f);
    close(fd);
    if (rv != ST_OK) {
        return rv;
    }
    f->dev = (uint64_t)now.st_dev;
    f->ino = (uint64_t)now.st_ino;
    f->size = (uint64_t)now.st_size;
    f->mtime_ns = (int64_t)now.st_mtim.tv_sec * 1000000000 + now.st_mtim.tv_nsec;
    if (f->bytes != f->size) {
        f->mtime_ns = -1; /* written while we read: read it again next time */
    }
    f->done = true;
    return ST_OK;
}

/* ---- the walk ---- */

static enum file_kind kind_of(const char *name)
{
    size_t n = strlen(name);
    const char *dot = strrchr(name, '.');
    if (dot == NULL || dot == name || n > NAME_MAX) {
        return KIND_NONE;
    }
    if (strcmp(dot, ".js") == 0 || strcmp(dot, ".mjs") == 0 || strcmp(dot, ".cjs") == 0) {
        return KIND_JS;
    }
    return strcmp(dot, ".css") == 0 ? KIND_CSS : KIND_NONE;
}

static bool same_file(const st_bundle_file *f, const struct stat *sb)
{
    return f->dev == (uint64_t)sb->st_dev && f->ino == (uint64_t)sb->st_ino &&
           f->size == (uint64_t)sb->st_size &&
           f->mtime_ns == (int64_t)sb->st_mtim.tv_sec * 1000000000 + sb->st_mtim.tv_nsec;
}

/* The time budget is checked only after one file was read in this scan, so
 * every run makes progress. */
static bool out_of_time(const walker *w)
{
    return w->deadline_ns != 0 && w->st->hashed > 0 && st_time_mono_ns() >= w->deadline_ns;
}

static void visit_file(walker *w, int dfd, const char *name, const struct stat *sb, bool css)
{
    st_bundle_cache *c = w->c;
    st_bundle_file *f = st_bundle_cache_get(c, w->rel);
    int rv;
    if (w->st->files >= w->lim->max_files) {
        ST_WARN("bundle", "more than %llu files: the rest are not counted (max_files)",
                (unsigned long long)w->lim->max_files);
        w->st->truncated = true;
        w->stop = true;
        return;
    }
    if (f != NULL && f->done && same_file(f, sb)) {
        f->seen = c->gen;
        w->st->files++;
        w->st->hits++;
        return;
    }
    if ((uint64_t)sb->st_size > w->lim->max_file_size) {
        ST_WARN("bundle", "%s: %lld bytes, over max_file_size: not counted", w->rel,
                (long long)sb->st_size);
        w->st->skipped++;
        return;
    }
    if (f == NULL && (f = insert(c, w->rel, css)) == NULL) {
        w->st->skipped++;
        return;
    }
    f->seen = c->gen;
    w->st->files++;
    if (out_of_time(w)) {
        f->done = false;
        w->st->pending++;
        return;
    }
    if ((rv = read_file(w, dfd, name, sb, f)) != ST_OK) {
        ST_WARN("bundle", "%s: %s: not counted", w->rel, st_strerror(rv));
        f->seen = c->gen - 1; /* swept after the walk */
        w->st->files--;
        w->st->skipped++;
        return;
    }
    w->st->hashed++;
}

static bool inside(const walker *w, const char *real)
{
    if (w->rootlen == 1) {
        return real[0] == '/'; /* the build directory is "/" */
    }
    return strncmp(real, w->root, w->rootlen) == 0 && real[w->rootlen] == '/';
}

/* A link counts as the file it names when that is a regular file inside the
 * build directory; links to directories are never entered (no loops, no
 * file counted twice through two paths into one tree). */
static void follow_link(walker *w, bool css)
{
    char abs[PATH_MAX];
    char *real = NULL;
    struct stat sb;
    int n = snprintf(abs, sizeof(abs), "%s/%s", w->root, w->rel);
    if (n < 0 || (size_t)n >= sizeof(abs) || (real = realpath(abs, NULL)) == NULL ||
        !inside(w, real) || stat(real, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        ST_DEBUG("bundle", "%s: a link to outside the build directory: not followed", w->rel);
        w->st->links++;
        free(real);
        return;
    }
    visit_file(w, AT_FDCWD, real, &sb, css);
    free(real);
}

static void walk_dir(walker *w, int dfd, size_t rlen, int depth);

static void descend(walker *w, int dfd, const char *name, size_t rlen, int depth)
{
    int sub;
    if (depth >= w->lim->max_depth) {
        ST_WARN("bundle", "%s: deeper than max_depth %d: not scanned", w->rel, w->lim->max_depth);
        w->st->skipped++;
        return;
    }
    sub = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sub < 0) {
        ST_WARN("bundle", "%s: %s: not scanned", w->rel, strerror(errno));
        w->st->skipped++;
        return;
    }
    walk_dir(w, sub, rlen, depth + 1);
}

/* One directory entry; w->rel holds the directory's path (rlen bytes). */
static void visit_entry(walker *w, int dfd, const struct dirent *de, size_t rlen, int depth)
{
    const char *name = de->d_name;
    enum file_kind kind = kind_of(name);
    size_t nlen = strlen(name);
    size_t at = rlen > 0 ? rlen + 1 : 0;
    struct stat sb;
    if (kind == KIND_NONE && de->d_type != DT_DIR && de->d_type != DT_UNKNOWN) {
        return; /* not a bundle file: no stat needed */
    }
    if (at + nlen > ST_BUNDLE_MAX_LABEL || !st_utf8_valid(name, nlen)) {
        ST_WARN("bundle", "a name under '%s' is too long or not UTF-8: not counted", w->rel);
        w->st->skipped++;
        return;
    }
    if (rlen > 0) {
        w->rel[rlen] = '/';
    }
    memcpy(w->rel + at, name, nlen + 1);
    if (fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0) {
        if (S_ISDIR(sb.st_mode)) {
            descend(w, dfd, name, at + nlen, depth);
        } else if (S_ISREG(sb.st_mode) && kind != KIND_NONE) {
            visit_file(w, dfd, name, &sb, kind == KIND_CSS);
        } else if (S_ISLNK(sb.st_mode) && kind != KIND_NONE) {
            follow_link(w, kind == KIND_CSS);
        }
    }
    w->rel[rlen] = '\0';
}

/* Walks the directory open at dfd (taken over and closed). */
static void walk_dir(walker *w, int dfd, size_t rlen, int depth)
{
    DIR *d = fdopendir(dfd);
    struct dirent *de;
    if (d == NULL) {
        close(dfd);
        w->st->skipped++;
        return;
    }
    while (!w->stop && (de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
            visit_entry(w, dirfd(d), de, rlen, depth);
        }
    }
    closedir(d);
}

int st_bundle_scan(st_bundle_cache *c, const char *dir, const st_bundle_limits *lim,
                   int64_t deadline_ns, st_bundle_scan_stats *st)
{
    walker *w = calloc(1, sizeof(*w));
    int dfd;
    int rv = ST_OK;
    memset(st, 0, sizeof(*st));
    if (w == NULL) {
        return ST_ENOMEM;
    }
    w->c = c;
    w->lim = lim;
    w->deadline_ns = deadline_ns;
    w->st = st;
    if (realpath(dir, w->root) == NULL) {
        rv = errno == ENOENT || errno == ENOTDIR ? ST_ENOENT : errno == EACCES ? ST_EPERM : ST_EIO;
        goto out;
    }
    w->rootlen = strlen(w->root);
    if ((dfd = open(w->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        rv = errno == ENOENT ? ST_ENOENT : errno == EACCES ? ST_EPERM : ST_EIO;
        goto out;
    }
    c->in = w->in;
    c->out = w->out;
    c->gen++;
    walk_dir(w, dfd, 0, 0);
    st->removed = sweep(c, c->gen);
    c->counters.scans++;
    c->counters.hashed += st->hashed;
    c->counters.hits += st->hits;
out:
    scan_release(c);
    free(w);
    return rv;
}
