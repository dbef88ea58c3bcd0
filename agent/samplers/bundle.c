/* bundle: a frontend build directory (dist/). Reports each .js/.mjs/.cjs/.css
 * file's gzip size and whether it is an entry, bytes duplicated across
 * chunks and bytes a coverage export shows unused. Per-file results are
 * cached by (device, inode, size, mtime): an unchanged rescan is one stat per
 * file, and the whole result is reused when nothing changed. */
#include "samplers.h"

#include "bundle.h"
#include "err.h"
#include "log.h"
#include "timeutil.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define ST_BUNDLE_DEFAULT_RESCAN_MS 60000 /* without an explicit interval */
#define ST_BUNDLE_MAX_FILES_LIMIT 1000000
#define ST_BUNDLE_MAX_FILE_SIZE_LIMIT (1ull << 30)
#define ST_BUNDLE_MAX_JSON_LIMIT (256ull << 20)
#define ST_BUNDLE_MAX_DEPTH_LIMIT 64
#define ST_BUNDLE_MAX_BUDGET_MS 600000
#define ST_BUNDLE_MAX_PATH (ST_PROCFS_PATH_MAX - 64) /* configured paths, room for a suffix */

enum input_src { IN_MANIFEST, IN_WEBPACK, IN_COVERAGE, IN_COUNT };
enum input_state { INPUT_NONE, INPUT_OK, INPUT_ERROR };

static const char *const input_key[IN_COUNT] = {"manifest", "webpack_stats", "coverage"};

typedef struct bundle_cfg {
    char *dir;
    char *input[IN_COUNT];
    uint64_t max_files;
    uint64_t max_file_size;
    uint64_t max_json_size;
    int64_t max_depth;
    int64_t gzip_level;
    int64_t scan_budget_ms;
} bundle_cfg;

/* One JSON input and the file it was last read from. */
typedef struct input {
    char path[ST_PROCFS_PATH_MAX];
    uint64_t dev, ino, size;
    int64_t mtime_ns;
    bool known; /* path and stat above were read */
    enum input_state state;
} input;

typedef struct snap_file {
    char *rel;
    uint64_t gzip_bytes;
    uint64_t bytes;
    uint64_t dup_bytes; /* blocks also found in a chunk earlier in path order */
    int64_t unused;     /* -1: not in the coverage export */
    bool entry, css;
} snap_file;

/* What one complete scan found: emitted on every run until the next one. */
typedef struct snapshot {
    bool valid;
    snap_file *f;
    size_t n;
    uint64_t total_gzip, total_bytes, dup_bytes, unused_bytes;
    bool has_unused;
    size_t top_chunk[ST_BUNDLE_TOP]; /* indexes into f by dup_bytes, without stats */
    size_t ntop_chunk;
    uint64_t err_files;
    enum input_state state[IN_COUNT];
} snapshot;

typedef struct bundle_ctx {
    bundle_cfg cfg;
    st_bundle_limits lim;
    bool explicit_interval;
    bool once;
    bool scanned;
    bool incomplete; /* the last scan left files for the next run */
    int64_t last_scan_ms;
    st_bundle_cache *cache;
    input in[IN_COUNT];
    st_bundle_set manifest;
    st_bundle_webpack webpack;
    st_bundle_coverage coverage;
    snapshot snap;
} bundle_ctx;

static const st_cfg_map bundle_rows[] = {
    {ST_CFG_STR, "dir", NULL, offsetof(bundle_cfg, dir),
     "build output directory to scan (required), e.g. /srv/app/dist", NULL, 0, 0},
    {ST_CFG_IGNORE, "interval", NULL, 0,
     "run every (default: the agent's interval); set it (e.g. 60s): unset, the directory is "
     "rescanned at most every 60s",
     NULL, 0, 0},
    {ST_CFG_STR, "manifest", NULL, offsetof(bundle_cfg, input[IN_MANIFEST]),
     "Vite manifest.json (default: <dir>/.vite/manifest.json or <dir>/manifest.json)", NULL, 0, 0},
    {ST_CFG_STR, "webpack_stats", NULL, offsetof(bundle_cfg, input[IN_WEBPACK]),
     "webpack stats.json: entrypoints and modules shared by chunks", NULL, 0, 0},
    {ST_CFG_STR, "coverage", NULL, offsetof(bundle_cfg, input[IN_COVERAGE]),
     "Chrome DevTools coverage export (JSON) for unused bytes", NULL, 0, 0},
    {ST_CFG_UINT, "max_files", "10000", offsetof(bundle_cfg, max_files),
     "files counted at most; the rest of the tree is not walked", NULL, 1,
     ST_BUNDLE_MAX_FILES_LIMIT},
    {ST_CFG_SIZE, "max_file_size", "64MiB", offsetof(bundle_cfg, max_file_size),
     "larger files are not read (counted in errors)", NULL, 1,
     (double)ST_BUNDLE_MAX_FILE_SIZE_LIMIT},
    {ST_CFG_SIZE, "max_json_size", "32MiB", offsetof(bundle_cfg, max_json_size),
     "larger manifest, stats or coverage files are refused", NULL, 2,
     (double)ST_BUNDLE_MAX_JSON_LIMIT},
    {ST_CFG_INT, "max_depth", "16", offsetof(bundle_cfg, max_depth),
     "directory levels below dir that are scanned", NULL, 0, ST_BUNDLE_MAX_DEPTH_LIMIT},
    {ST_CFG_INT, "gzip_level", "9", offsetof(bundle_cfg, gzip_level),
     "zlib level of the gzip sizes", NULL, 1, 9},
    {ST_CFG_DURATION, "scan_budget", "500ms", offsetof(bundle_cfg, scan_budget_ms),
     "time one run may spend compressing changed files; the rest wait (not with --once)", NULL, 1,
     ST_BUNDLE_MAX_BUDGET_MS},
    {0},
};

/* ---- snapshots ---- */

static void snapshot_clear(snapshot *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->f[i].rel);
    }
    free(s->f);
    memset(s, 0, sizeof(*s));
}

/* Without a manifest or stats: files named index*, main* or app* (Vite's
 * assets/index-<hash>.js, create-react-app's static/js/main.<hash>.js). */
static bool entry_by_name(const char *rel)
{
    static const char *const stems[] = {"index", "main", "app"};
    const char *base = strrchr(rel, '/');
    base = base != NULL ? base + 1 : rel;
    for (size_t i = 0; i < ST_ARRAY_LEN(stems); i++) {
        size_t n = strlen(stems[i]);
        if (strncmp(base, stems[i], n) == 0 && strchr(".-_", base[n]) != NULL && base[n] != '\0') {
            return true;
        }
    }
    return false;
}

static void mark_entries(const bundle_ctx *c, snapshot *s)
{
    bool by_manifest = c->in[IN_MANIFEST].state == INPUT_OK;
    bool by_stats = c->in[IN_WEBPACK].state == INPUT_OK && c->webpack.entries.n > 0;
    for (size_t i = 0; i < s->n; i++) {
        const char *rel = s->f[i].rel;
        if (by_manifest || by_stats) {
            s->f[i].entry = (by_manifest && st_bundle_set_match(&c->manifest, rel)) ||
                            (by_stats && st_bundle_set_match(&c->webpack.entries, rel));
        } else {
            s->f[i].entry = entry_by_name(rel);
        }
    }
}

typedef struct block_slot {
    uint64_t hash;
    uint32_t len;  /* 0: empty */
    uint32_t last; /* the file that last counted it */
} block_slot;

/* Content-defined blocks seen in more than one file: every file after the
 * first that holds a block adds its length once (repeats inside one file
 * are not duplicates across chunks). Files are visited in path order. */
static int dup_by_blocks(snapshot *s, st_bundle_file **v)
{
    size_t total = 0;
    size_t cap = 64;
    block_slot *t;
    for (size_t i = 0; i < s->n; i++) {
        total += v[i]->nblocks;
    }
    while (cap < total * 2) {
        cap *= 2;
    }
    if ((t = calloc(cap, sizeof(*t))) == NULL) {
        return ST_ENOMEM;
    }
    for (size_t i = 0; i < s->n; i++) {
        for (size_t b = 0; b < v[i]->nblocks; b++) {
            const st_bundle_block *blk = &v[i]->blocks[b];
            size_t k = (size_t)blk->hash & (cap - 1);
            while (t[k].len != 0 && (t[k].hash != blk->hash || t[k].len != blk->len)) {
                k = (k + 1) & (cap - 1);
            }
            if (t[k].len == 0) {
                t[k] = (block_slot){blk->hash, blk->len, (uint32_t)i};
            } else if (t[k].last != (uint32_t)i) {
                t[k].last = (uint32_t)i;
                s->f[i].dup_bytes += blk->len;
                s->dup_bytes += blk->len;
            }
        }
    }
    free(t);
    return ST_OK;
}

/* The ST_BUNDLE_TOP chunks with the most duplicate bytes, most first. */
static void top_chunks(snapshot *s)
{
    s->ntop_chunk = 0;
    for (size_t i = 0; i < s->n; i++) {
        size_t k = s->ntop_chunk;
        if (s->f[i].dup_bytes == 0) {
            continue;
        }
        while (k > 0 && s->f[s->top_chunk[k - 1]].dup_bytes < s->f[i].dup_bytes) {
            k--;
        }
        if (k >= ST_BUNDLE_TOP) {
            continue;
        }
        if (s->ntop_chunk < ST_BUNDLE_TOP) {
            s->ntop_chunk++;
        }
        memmove(&s->top_chunk[k + 1], &s->top_chunk[k],
                (s->ntop_chunk - 1 - k) * sizeof(s->top_chunk[0]));
        s->top_chunk[k] = i;
    }
}

typedef struct used_range {
    size_t file;
    uint64_t start, end;
} used_range;

static int by_file_start(const void *a, const void *b)
{
    const used_range *x = a;
    const used_range *y = b;
    if (x->file != y->file) {
        return x->file < y->file ? -1 : 1;
    }
    return x->start < y->start ? -1 : x->start > y->start;
}

/* The file a coverage URL path names: the longest suffix of the path (at a
 * '/') that is a file's path relative to dir. */
static st_bundle_file *match_file(const bundle_ctx *c, const char *path)
{
    for (const char *p = path; p != NULL; p = strchr(p, '/')) {
        st_bundle_file *f;
        p += *p == '/';
        if (*p != '\0' && (f = st_bundle_cache_get(c->cache, p)) != NULL) {
            return f;
        }
    }
    return NULL;
}

/* Subtracts the used ranges (sorted by file, then start) from each file's
 * size; several URLs of one file (query strings) are merged. */
static void subtract_used(snapshot *s, used_range *u, size_t nu)
{
    qsort(u, nu, sizeof(*u), by_file_start);
    for (size_t i = 0; i < nu;) {
        snap_file *f = &s->f[u[i].file];
        uint64_t covered = 0;
        uint64_t reach = 0; /* end of what is counted so far */
        size_t j = i;
        for (; j < nu && u[j].file == u[i].file; j++) {
            uint64_t a = ST_MAX(u[j].start, reach);
            uint64_t b = ST_MIN(u[j].end, f->bytes);
            if (b > a) {
                covered += b - a;
                reach = b;
            }
        }
        f->unused = (int64_t)(f->bytes - covered);
        i = j;
    }
    for (size_t i = 0; i < s->n; i++) {
        if (s->f[i].unused >= 0) {
            s->has_unused = true;
            s->unused_bytes += (uint64_t)s->f[i].unused;
        }
    }
}

static int unused_by_coverage(const bundle_ctx *c, snapshot *s)
{
    const st_bundle_coverage *cov = &c->coverage;
    size_t total = 0;
    size_t nu = 0;
    used_range *u;
    for (size_t i = 0; i < cov->n; i++) {
        total += cov->e[i].nr; /* bounded by ST_BUNDLE_MAX_RANGES when read */
    }
    if ((u = calloc(total > 0 ? total : 1, sizeof(*u))) == NULL) {
        return ST_ENOMEM;
    }
    for (size_t i = 0; i < cov->n; i++) {
        st_bundle_file *f = match_file(c, cov->e[i].path);
        if (f == NULL) {
            continue;
        }
        s->f[f->index].unused = (int64_t)s->f[f->index].bytes; /* covered below */
        for (size_t r = 0; r < cov->e[i].nr; r++) {
            u[nu++] = (used_range){f->index, cov->e[i].r[r].start, cov->e[i].r[r].end};
        }
    }
    subtract_used(s, u, nu);
    free(u);
    if (!s->has_unused && cov->n > 0) {
        ST_WARN("bundle", "coverage: no URL matches a file under %s", c->cfg.dir);
    }
    return ST_OK;
}

/* Builds the snapshot from the cache and the inputs read. */
static int build_snapshot(bundle_ctx *c, const st_bundle_scan_stats *st)
{
    snapshot s = {.valid = true, .err_files = st->skipped + (st->truncated ? 1 : 0)};
    st_bundle_file **v = NULL;
    int rv;
    if ((rv = st_bundle_cache_list(c->cache, &v, &s.n)) != ST_OK ||
        (s.f = calloc(s.n > 0 ? s.n : 1, sizeof(*s.f))) == NULL) {
        rv = ST_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < s.n; i++) {
        v[i]->index = i;
        s.f[i] = (snap_file){NULL, v[i]->gzip_bytes, v[i]->bytes, 0, -1, false, v[i]->css};
        if ((s.f[i].rel = strdup(v[i]->rel)) == NULL) {
            rv = ST_ENOMEM;
            goto out;
        }
        s.total_gzip += v[i]->gzip_bytes;
        s.total_bytes += v[i]->bytes;
    }
    mark_entries(c, &s);
    if (c->in[IN_WEBPACK].state == INPUT_OK && c->webpack.has_modules) {
        s.dup_bytes = c->webpack.dup_bytes;
    } else if ((rv = dup_by_blocks(&s, v)) != ST_OK) {
        goto out;
    }
    top_chunks(&s);
    if (c->in[IN_COVERAGE].state == INPUT_OK && (rv = unused_by_coverage(c, &s)) != ST_OK) {
        goto out;
    }
    for (int i = 0; i < IN_COUNT; i++) {
        s.state[i] = c->in[i].state;
    }
    snapshot_clear(&c->snap);
    c->snap = s;
    memset(&s, 0, sizeof(s));
out:
    snapshot_clear(&s);
    free(v);
    return rv;
}

/* ---- JSON inputs ---- */

static void input_forget(bundle_ctx *c, int i)
{
    input *in = &c->in[i];
    memset(in, 0, sizeof(*in));
    if (i == IN_MANIFEST) {
        st_bundle_set_clear(&c->manifest);
    } else if (i == IN_WEBPACK) {
        st_bundle_webpack_clear(&c->webpack);
    } else {
        st_bundle_coverage_clear(&c->coverage);
    }
}

/* The path input i is read from: as configured (relative to dir), or for
 * the manifest the first of Vite's places that exists. False when there is
 * none to read. */
static bool input_path(const bundle_ctx *c, int i, char *out, size_t cap)
{
    static const char *const vite[] = {".vite/manifest.json", "manifest.json"};
    const char *conf = c->cfg.input[i];
    struct stat sb;
    if (conf != NULL) {
        int n = conf[0] == '/' ? snprintf(out, cap, "%s", conf)
                               : snprintf(out, cap, "%s/%s", c->cfg.dir, conf);
        return n > 0 && (size_t)n < cap; /* lengths were checked at init */
    }
    for (size_t k = 0; i == IN_MANIFEST && k < ST_ARRAY_LEN(vite); k++) {
        int n = snprintf(out, cap, "%s/%s", c->cfg.dir, vite[k]);
        if (n > 0 && (size_t)n < cap && stat(out, &sb) == 0) {
            return true;
        }
    }
    return false;
}

static int parse_input(bundle_ctx *c, int i, const char *text, size_t len, st_bundle_why *why)
{
    if (i == IN_MANIFEST) {
        return st_bundle_manifest_parse(text, len, &c->manifest, why);
    }
    if (i == IN_WEBPACK) {
        return st_bundle_webpack_parse(text, len, &c->webpack, why);
    }
    return st_bundle_coverage_parse(text, len, &c->coverage, why);
}

/* Reads a JSON input whole, within max_json_size; why says what failed. */
static int read_input(const bundle_ctx *c, const char *path, const struct stat *sb, char **text,
                      size_t *len, st_bundle_why *why)
{
    int rv;
    if (!S_ISREG(sb->st_mode)) {
        snprintf(why->msg, sizeof(why->msg), "not a regular file"); /* a FIFO would block */
        return ST_EINVAL;
    }
    rv = (uint64_t)sb->st_size > c->cfg.max_json_size
             ? ST_ETOOBIG
             : st_file_read(path, c->cfg.max_json_size, text, len);
    if (rv == ST_ETOOBIG) {
        snprintf(why->msg, sizeof(why->msg), "over max_json_size (%llu bytes)",
                 (unsigned long long)c->cfg.max_json_size);
    } else if (rv != ST_OK) {
        snprintf(why->msg, sizeof(why->msg), "%s", st_strerror(rv));
    }
    return rv;
}

/* Reads and parses input i from path (stat'ed as sb) into its state. */
static void load_input(bundle_ctx *c, int i, const char *path, const struct stat *sb)
{
    input *in = &c->in[i];
    st_bundle_why why = {""};
    char *text = NULL;
    size_t len = 0;
    int rv = read_input(c, path, sb, &text, &len, &why);
    if (rv == ST_OK) {
        rv = parse_input(c, i, text, len, &why);
    }
    free(text);
    snprintf(in->path, sizeof(in->path), "%s", path);
    in->dev = (uint64_t)sb->st_dev;
    in->ino = (uint64_t)sb->st_ino;
    in->size = (uint64_t)sb->st_size;
    in->mtime_ns = (int64_t)sb->st_mtim.tv_sec * 1000000000 + sb->st_mtim.tv_nsec;
    in->known = true;
    in->state = rv == ST_OK ? INPUT_OK : INPUT_ERROR;
    if (rv == ST_EUNSUPPORTED && c->cfg.input[i] == NULL) {
        in->state = INPUT_NONE; /* a default manifest.json that is a web app manifest */
    } else if (rv != ST_OK) {
        ST_WARN("bundle", "%s %s: %s: not used", input_key[i], path, why.msg);
    }
}

/* Brings input i up to date; true when what it says changed. */
static bool refresh_input(bundle_ctx *c, int i)
{
    input *in = &c->in[i];
    enum input_state was = in->state;
    char path[ST_PROCFS_PATH_MAX];
    struct stat sb;
    if (!input_path(c, i, path, sizeof(path))) {
        input_forget(c, i);
        return was != INPUT_NONE;
    }
    if (stat(path, &sb) != 0) {
        if (was != INPUT_ERROR && c->cfg.input[i] != NULL) {
            ST_WARN("bundle", "%s %s: cannot be read: not used", input_key[i], path);
        }
        input_forget(c, i);
        in->state = c->cfg.input[i] != NULL ? INPUT_ERROR : INPUT_NONE;
        return in->state != was;
    }
    if (in->known && strcmp(path, in->path) == 0 && in->dev == (uint64_t)sb.st_dev &&
        in->ino == (uint64_t)sb.st_ino && in->size == (uint64_t)sb.st_size &&
        in->mtime_ns == (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec) {
        return false;
    }
    load_input(c, i, path, &sb);
    return true;
}

/* ---- runs ---- */

static int gauge(st_emit *e, const char *name, const st_label *l, size_t nl, const char *unit,
                 double v, int rv)
{
    st_series_desc d = {name, l, nl, ST_LAYER_FRONTEND, unit, 0};
    int r = st_emit_gauge(e, &d, v);
    /* A full fold counts what it drops (agent.series.dropped): not our failure. */
    return rv != ST_OK || r == ST_ETOOBIG ? rv : r;
}

static int emit_dups(const bundle_ctx *c, st_emit *e, int rv)
{
    const snapshot *s = &c->snap;
    rv = gauge(e, "frontend.bundle.duplicate_bytes", NULL, 0, "B", (double)s->dup_bytes, rv);
    if (s->state[IN_WEBPACK] == INPUT_OK && c->webpack.has_modules) {
        for (size_t i = 0; i < c->webpack.ntop; i++) {
            st_label l[1] = {{"module", c->webpack.top[i].name}};
            rv = gauge(e, "frontend.bundle.duplicate_module_bytes", l, 1, "B",
                       (double)c->webpack.top[i].bytes, rv);
        }
        return rv;
    }
    for (size_t i = 0; i < s->ntop_chunk; i++) {
        const snap_file *f = &s->f[s->top_chunk[i]];
        st_label l[1] = {{"chunk", f->rel}};
        rv = gauge(e, "frontend.bundle.chunk_duplicate_bytes", l, 1, "B", (double)f->dup_bytes, rv);
    }
    return rv;
}

static int emit_errors(const bundle_ctx *c, st_emit *e, int rv)
{
    const snapshot *s = &c->snap;
    st_label l[1] = {{"source", "files"}};
    rv = gauge(e, "frontend.bundle.errors", l, 1, "", (double)s->err_files, rv);
    for (int i = 0; i < IN_COUNT; i++) {
        if (s->state[i] != INPUT_NONE || c->cfg.input[i] != NULL) {
            l[0].value = input_key[i];
            rv = gauge(e, "frontend.bundle.errors", l, 1, "",
                       s->state[i] == INPUT_ERROR ? 1.0 : 0.0, rv);
        }
    }
    return rv;
}

static int emit_snapshot(const bundle_ctx *c, st_emit *e)
{
    const snapshot *s = &c->snap;
    int rv = ST_OK;
    rv = gauge(e, "frontend.bundle.total_gzip_bytes", NULL, 0, "B", (double)s->total_gzip, rv);
    rv = gauge(e, "frontend.bundle.total_bytes", NULL, 0, "B", (double)s->total_bytes, rv);
    rv = gauge(e, "frontend.bundle.files", NULL, 0, "", (double)s->n, rv);
    rv = emit_dups(c, e, rv);
    if (s->has_unused) {
        rv = gauge(e, "frontend.bundle.unused_bytes", NULL, 0, "B", (double)s->unused_bytes, rv);
    }
    rv = emit_errors(c, e, rv);
    for (size_t i = 0; i < s->n; i++) {
        const snap_file *f = &s->f[i];
        st_label l[3] = {{"chunk", f->rel},
                         {"entry", f->entry ? "true" : "false"},
                         {"type", f->css ? "css" : "js"}};
        rv = gauge(e, "frontend.bundle.gzip_bytes", l, 3, "B", (double)f->gzip_bytes, rv);
        if (f->unused >= 0) {
            rv = gauge(e, "frontend.bundle.chunk_unused_bytes", l, 1, "B", (double)f->unused, rv);
        }
    }
    return rv;
}

/* Scans the directory and the inputs; rebuilds the snapshot when anything
 * changed. A scan cut short by the time budget keeps the last snapshot. */
static int rescan(bundle_ctx *c, int64_t now_ms)
{
    st_bundle_scan_stats st;
    int64_t deadline = c->once ? 0 : st_time_mono_ns() + c->cfg.scan_budget_ms * 1000000;
    bool changed;
    int rv = st_bundle_scan(c->cache, c->cfg.dir, &c->lim, deadline, &st);
    if (rv != ST_OK) {
        snapshot_clear(&c->snap); /* a directory that is gone has nothing to report */
        return rv;
    }
    c->scanned = true;
    c->last_scan_ms = now_ms;
    c->incomplete = st.pending > 0;
    if (c->incomplete) {
        ST_DEBUG("bundle", "%s: %llu files left for the next run", c->cfg.dir,
                 (unsigned long long)st.pending);
        return ST_OK;
    }
    changed = !c->snap.valid || st.hashed > 0 || st.removed > 0 ||
              c->snap.err_files != st.skipped + (st.truncated ? 1 : 0);
    for (int i = 0; i < IN_COUNT; i++) {
        changed = refresh_input(c, i) || changed;
    }
    return changed ? build_snapshot(c, &st) : ST_OK;
}

int st_bundle_sample(void *ctx, st_emit *e)
{
    bundle_ctx *c = ctx;
    int64_t now = st_time_mono_ms();
    bool due = !c->scanned || c->incomplete || c->explicit_interval || c->once ||
               now - c->last_scan_ms >= ST_BUNDLE_DEFAULT_RESCAN_MS;
    int rv;
    if (due && (rv = rescan(c, now)) != ST_OK) {
        return rv;
    }
    return c->snap.valid ? emit_snapshot(c, e) : ST_OK;
}

void st_bundle_fini(void *ctx)
{
    bundle_ctx *c = ctx;
    if (c == NULL) {
        return;
    }
    snapshot_clear(&c->snap);
    st_bundle_set_clear(&c->manifest);
    st_bundle_webpack_clear(&c->webpack);
    st_bundle_coverage_clear(&c->coverage);
    st_bundle_cache_free(c->cache);
    st_cfg_release(bundle_rows, &c->cfg);
    free(c);
}

void st_bundle_counters_of(const void *ctx, st_bundle_counters *out)
{
    st_bundle_cache_counters(((const bundle_ctx *)ctx)->cache, out);
}

static int check_paths(const st_cfg_doc *doc, const st_cfg_node *cfg, const bundle_cfg *bc,
                       st_cfg_error *err)
{
    if (bc->dir == NULL || bc->dir[0] == '\0' || strlen(bc->dir) > ST_BUNDLE_MAX_PATH / 2) {
        return st_cfg_fail(err, doc, cfg != NULL ? st_cfg_get(cfg, "dir") : NULL, "dir",
                           "required: the build output directory (e.g. dist/), at most %d bytes",
                           ST_BUNDLE_MAX_PATH / 2);
    }
    for (int i = 0; i < IN_COUNT; i++) {
        const char *p = bc->input[i];
        if (p != NULL && (p[0] == '\0' || strlen(p) > ST_BUNDLE_MAX_PATH / 2)) {
            return st_cfg_fail(err, doc, st_cfg_get(cfg, input_key[i]), input_key[i],
                               "want a path of 1 to %d bytes", ST_BUNDLE_MAX_PATH / 2);
        }
    }
    return ST_OK;
}

int st_bundle_init(const st_cfg_doc *doc, const st_cfg_node *cfg, const st_sampler_env *env,
                   void **ctx, st_cfg_error *err)
{
    bundle_ctx *c = calloc(1, sizeof(*c));
    int rv;
    if (c == NULL) {
        return ST_ENOMEM;
    }
    if ((rv = st_cfg_bind(doc, cfg, bundle_rows, &c->cfg, err)) != ST_OK ||
        (rv = check_paths(doc, cfg, &c->cfg, err)) != ST_OK ||
        (rv = st_bundle_cache_new(&c->cache)) != ST_OK) {
        goto out;
    }
    c->lim = (st_bundle_limits){c->cfg.max_files, c->cfg.max_file_size, (int)c->cfg.max_depth,
                                (int)c->cfg.gzip_level};
    c->explicit_interval = cfg != NULL && st_cfg_get(cfg, "interval") != NULL;
    c->once = env->once;
    *ctx = c;
    c = NULL;
out:
    st_bundle_fini(c);
    return rv;
}

const st_sampler_def st_sampler_bundle = ST_SAMPLER_ROW(bundle);
