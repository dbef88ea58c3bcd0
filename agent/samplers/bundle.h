/* bundle: the internals the frontend bundle sampler (bundle.c) shares with
 * its helpers: the per-file cache with gzip sizes and content-defined blocks
 * (bundle_scan.c) and the readers of Vite manifests, webpack stats and
 * DevTools coverage exports (bundle_json.c). Not used outside the sampler. */
#ifndef ST_BUNDLE_H
#define ST_BUNDLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ST_BUNDLE_MAX_LABEL 512             /* a chunk path or module name as a label value */
#define ST_BUNDLE_MAX_MODULE_LABEL 200      /* module names are cut (on a UTF-8 boundary) */
#define ST_BUNDLE_MAX_NAMES 100000          /* entry file names from one manifest or stats file */
#define ST_BUNDLE_MAX_MODULES 1000000       /* distinct webpack modules in one compilation */
#define ST_BUNDLE_MAX_MODULE_CHUNKS 100000  /* chunk ids listed by one webpack module */
#define ST_BUNDLE_MAX_CHUNK_REFS (1u << 24) /* chunk ids listed by all modules */
#define ST_BUNDLE_MAX_COVERAGE 100000       /* entries in one coverage export */
#define ST_BUNDLE_MAX_RANGES (1u << 22)     /* ranges in one coverage export, all entries */
#define ST_BUNDLE_MAX_OFFSET (1ull << 40)   /* a coverage offset past this is malformed */
#define ST_BUNDLE_MAX_BLOCKS (1u << 19) /* blocks kept for all files (8 MiB, ~160 MiB of text) */
#define ST_BUNDLE_TOP 10                /* per-module and per-chunk duplicate series */

/* Content-defined blocks: a gear hash over the bytes cuts a block where its
 * top 8 bits are zero, but never before ST_BUNDLE_BLOCK_MIN bytes and always
 * at ST_BUNDLE_BLOCK_MAX, so blocks average about 320 bytes and an identical
 * byte run in two files is cut the same way once both have seen 64 bytes of
 * it. A file's tail block is kept when it reaches the minimum. */
#define ST_BUNDLE_BLOCK_MIN 64
#define ST_BUNDLE_BLOCK_MAX 2048

/* ---- string sets (bundle_json.c) ---- */

/* A set of strings, owned copies; open addressing. */
typedef struct st_bundle_set {
    char **slot;
    size_t cap; /* a power of two, or 0 */
    size_t n;
} st_bundle_set;

/* Adds a copy of s; adding a present string is a no-op. ST_ENOMEM,
 * ST_ETOOBIG past ST_BUNDLE_MAX_NAMES. */
int st_bundle_set_add(st_bundle_set *s, const char *str);
bool st_bundle_set_has(const st_bundle_set *s, const char *str);
void st_bundle_set_clear(st_bundle_set *s);

/* True when rel, or one of its suffixes that starts after a '/', is in s:
 * "static/js/main.js" matches an asset named "js/main.js" when the build
 * directory is a parent of the bundler's output directory. */
bool st_bundle_set_match(const st_bundle_set *s, const char *rel);

/* ---- JSON inputs (bundle_json.c) ---- */

/* Why a JSON input could not be used, for the log. */
typedef struct st_bundle_why {
    char msg[160];
} st_bundle_why;

/* Vite's manifest.json: the files of records marked isEntry and the CSS
 * those records list (it loads with the entry). With why filled: ST_EPARSE
 * for malformed JSON, ST_EUNSUPPORTED for JSON that is no Vite manifest (no
 * record has a "file": a PWA manifest.json), ST_ETOOBIG past
 * ST_BUNDLE_MAX_NAMES. entries is cleared first. */
int st_bundle_manifest_parse(const char *text, size_t len, st_bundle_set *entries,
                             st_bundle_why *why);

typedef struct st_bundle_dup_module {
    char name[ST_BUNDLE_MAX_MODULE_LABEL + 1];
    uint64_t bytes; /* (chunks - 1) * size */
} st_bundle_dup_module;

typedef struct st_bundle_webpack {
    st_bundle_set entries; /* asset names of every entrypoint */
    bool has_modules;      /* a top-level modules[] was present */
    uint64_t dup_bytes;
    st_bundle_dup_module top[ST_BUNDLE_TOP]; /* largest first */
    size_t ntop;
} st_bundle_webpack;

/* webpack's stats.json (webpack 4 and 5): entrypoints[*].assets and
 * .auxiliaryAssets (names or {name}), and modules[] {identifier, name, size,
 * chunks[]} including the parts of concatenated modules (modules[].modules[],
 * which ship in their parent's chunks). A module found in k distinct chunks
 * adds (k - 1) * size. children[] compilations are read too, each on its
 * own. ST_EPARSE / ST_ETOOBIG with why filled. out is reset first. */
int st_bundle_webpack_parse(const char *text, size_t len, st_bundle_webpack *out,
                            st_bundle_why *why);
void st_bundle_webpack_clear(st_bundle_webpack *w);

/* A used byte range [start, end) of a file. */
typedef struct st_bundle_range {
    uint64_t start, end;
} st_bundle_range;

typedef struct st_bundle_cov_entry {
    char *path;         /* the URL's path, without scheme, host, query and fragment */
    st_bundle_range *r; /* sorted and merged, in bytes */
    size_t nr;
} st_bundle_cov_entry;

typedef struct st_bundle_coverage {
    st_bundle_cov_entry *e;
    size_t n;
} st_bundle_coverage;

/* A Chrome DevTools (or Puppeteer) coverage export: an array of {url,
 * ranges: [{start, end}], text?}. Offsets count UTF-16 code units of the
 * text; when text is present they are turned into UTF-8 byte offsets,
 * otherwise they are taken as bytes (the same for ASCII, as minified output
 * is). ST_EPARSE / ST_ETOOBIG with why filled. out is reset first. */
int st_bundle_coverage_parse(const char *text, size_t len, st_bundle_coverage *out,
                             st_bundle_why *why);
void st_bundle_coverage_clear(st_bundle_coverage *c);

/* ---- the file cache and the scan (bundle_scan.c) ---- */

typedef struct st_bundle_block {
    uint64_t hash; /* FNV-1a of the block's bytes */
    uint32_t len;
} st_bundle_block;

typedef struct st_bundle_file {
    char *rel; /* path relative to the build directory: the chunk label */
    bool css;  /* .css, else .js/.mjs/.cjs */
    bool done; /* gzip size known; false while waiting for a later run */
    /* What the cache entry was computed from: a change of any recomputes. */
    uint64_t dev, ino, size;
    int64_t mtime_ns;
    uint64_t bytes;          /* bytes read */
    uint64_t gzip_bytes;     /* deflate with a gzip wrapper (zlib), header and trailer included */
    st_bundle_block *blocks; /* NULL when the block budget ran out */
    size_t nblocks;
    uint32_t seen; /* the scan generation that last found it */
    size_t index;  /* scratch for the sampler: position in its snapshot */
    struct st_bundle_file *next;
} st_bundle_file;

typedef struct st_bundle_limits {
    uint64_t max_files;
    uint64_t max_file_size;
    int max_depth; /* directory levels below the build directory */
    int gzip_level;
} st_bundle_limits;

typedef struct st_bundle_scan_stats {
    uint64_t files;   /* .js/.mjs/.cjs/.css files in the cache after the scan */
    uint64_t hashed;  /* files read and compressed by this scan */
    uint64_t hits;    /* files unchanged since the last scan */
    uint64_t removed; /* cache entries whose file is gone */
    uint64_t pending; /* files left for the next run (time budget) */
    uint64_t skipped; /* files not counted: too big, unreadable, bad name, too deep */
    uint64_t links;   /* symbolic links not followed (target outside or a directory) */
    bool truncated;   /* max_files reached: the rest of the tree was not walked */
} st_bundle_scan_stats;

typedef struct st_bundle_cache st_bundle_cache;

int st_bundle_cache_new(st_bundle_cache **out);
void st_bundle_cache_free(st_bundle_cache *c);

/* Walks dir (its own path may be a symbolic link; below it links are
 * followed only to regular files inside it, never to directories) and
 * brings the cache up to date: unchanged files (device, inode, size, mtime)
 * are not read again, changed and new ones are compressed as a stream with
 * bounded memory, vanished ones are dropped. Once deadline_ns (monotonic;
 * 0 for none) has passed, files that need reading are left pending, so one
 * run's work stays bounded. ST_ENOENT / ST_EPERM / ST_EIO when dir itself
 * cannot be read. */
int st_bundle_scan(st_bundle_cache *c, const char *dir, const st_bundle_limits *lim,
                   int64_t deadline_ns, st_bundle_scan_stats *st);

/* The cached file with this relative path, or NULL. */
st_bundle_file *st_bundle_cache_get(const st_bundle_cache *c, const char *rel);

/* Every cached file sorted by path into a malloc'd array (free it, not the
 * files; they live until the next scan). ST_ENOMEM. */
int st_bundle_cache_list(const st_bundle_cache *c, st_bundle_file ***out, size_t *n);

/* Counters since the cache was made, for tests and debugging. */
typedef struct st_bundle_counters {
    uint64_t scans;
    uint64_t hashed;
    uint64_t hits;
} st_bundle_counters;

void st_bundle_cache_counters(const st_bundle_cache *c, st_bundle_counters *out);

/* The counters of a bundle sampler instance (its ctx from st_bundle_init). */
void st_bundle_counters_of(const void *ctx, st_bundle_counters *out);

#endif
