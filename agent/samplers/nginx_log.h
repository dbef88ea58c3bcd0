/* The nginx sampler's text parsers and log tailer: the `strata` access-log
 * line format, the route normaliser with its cardinality cap, the per-run
 * aggregate that becomes http.server.* and cache.* series, stub_status
 * parsing, and a tailer that follows rename and copytruncate rotation and
 * checkpoints (inode, offset) so a restart neither skips nor repeats a line.
 *
 * The log format (one line per request; fields after the seventh are
 * ignored, so the format may grow at its end):
 *
 *   log_format strata '$msec $request_time $status $upstream_cache_status '
 *                     '$body_bytes_sent "$request_method" "$uri"';
 *
 * Quoted fields may hold spaces; nginx escapes '"', '\' and control bytes
 * inside them (\xHH), and a backslash escapes the next byte (escape=json). */
#ifndef ST_NGINX_LOG_H
#define ST_NGINX_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "emit.h"

#define ST_NGINX_LINE_MAX (16 * 1024) /* longer lines are counted and skipped */
#define ST_NGINX_ROUTE_MAX 256        /* longest route label, bytes */
#define ST_NGINX_SEGMENT_MAX 64       /* longer path segments collapse to :id */
#define ST_NGINX_PATTERN_MAX 512      /* longest configured pattern or prefix */
#define ST_NGINX_MAX_RULES 256        /* configured routes */
#define ST_NGINX_MAX_ROUTES 100000    /* upper bound of max_routes */
#define ST_NGINX_STATUS_MAX 4096      /* stub_status replies larger than this are refused */
#define ST_NGINX_ROUTE_OTHER "other"  /* over the cap, or not a path */
#define ST_NGINX_ROUTE_ID ":id"

/* ---- one access-log line ---- */

/* $upstream_cache_status; NONE is "-" (no cache involved), OTHER a value
 * this nginx version does not document. */
enum st_nginx_cache {
    ST_NGINX_CACHE_NONE = 0,
    ST_NGINX_CACHE_HIT,
    ST_NGINX_CACHE_MISS,
    ST_NGINX_CACHE_BYPASS,
    ST_NGINX_CACHE_EXPIRED,
    ST_NGINX_CACHE_STALE,
    ST_NGINX_CACHE_UPDATING,
    ST_NGINX_CACHE_REVALIDATED,
    ST_NGINX_CACHE_OTHER,
    ST_NGINX_CACHE_COUNT
};

/* A parsed line; method and uri point into the parsed text. */
typedef struct st_nginx_line {
    double msec;         /* $msec, seconds since the epoch */
    double request_time; /* seconds */
    int status;          /* 100..599 */
    enum st_nginx_cache cache;
    uint64_t bytes;
    const char *method;
    size_t method_len;
    const char *uri; /* without the quotes, escapes as written */
    size_t uri_len;
} st_nginx_line;

/* Parses one line (without its '\n'; a trailing '\r' is ignored).
 * ST_ETOOBIG when len > ST_NGINX_LINE_MAX, ST_EPARSE when it does not
 * follow the format. out is written only on success. */
int st_nginx_line_parse(const char *p, size_t len, st_nginx_line *out);

/* "hit", "miss", ... "none" for NONE, "other" for OTHER. */
const char *st_nginx_cache_name(enum st_nginx_cache c);

/* ---- routes ---- */

typedef struct st_nginx_routes st_nginx_routes;

/* A route table that names at most max_routes (1..ST_NGINX_MAX_ROUTES)
 * distinct automatic routes; the rest count as "other". collapse_ids turns
 * numeric, hex, UUID and opaque-token segments into ":id". ST_EINVAL,
 * ST_ENOMEM. */
int st_nginx_routes_new(size_t max_routes, bool collapse_ids, st_nginx_routes **out);
void st_nginx_routes_free(st_nginx_routes *r);

/* Adds a configured route, tried in the order added before the automatic
 * ones: a glob pattern ('*' and '?' within one path segment, a last segment
 * "**" for anything below) or, with prefix, a plain prefix of the path.
 * Configured names do not count against max_routes. ST_EINVAL when pattern
 * does not start with '/', or pattern or name is empty or too long
 * (ST_NGINX_PATTERN_MAX, ST_NGINX_ROUTE_MAX) or name is not UTF-8;
 * ST_ETOOBIG past ST_NGINX_MAX_RULES; ST_ENOMEM. */
int st_nginx_routes_add(st_nginx_routes *r, const char *pattern, bool prefix, const char *name);

/* The route of a path (query string and fragment are cut): the first
 * configured route that matches, else the path with collapsed segments,
 * truncated at a segment boundary to at most ST_NGINX_ROUTE_MAX bytes
 * (ending in "/..."), valid UTF-8. Writes a NUL-terminated route to out
 * (cap > ST_NGINX_ROUTE_MAX) and returns its length. A path that does not
 * start with '/' is "other". */
size_t st_nginx_route_normalise(const st_nginx_routes *r, const char *path, size_t len, char *out,
                                size_t cap);

/* Normalises a path and returns the id of its route, adding it while the
 * cap allows (past it: the id of "other", counted in *overflow when not
 * NULL). Never fails: allocation failures also land in "other". */
uint32_t st_nginx_route_id(st_nginx_routes *r, const char *path, size_t len, bool *overflow);
/* The route of an id from st_nginx_route_id; valid while r lives. */
const char *st_nginx_route_name(const st_nginx_routes *r, uint32_t id);
/* Distinct automatic routes named so far. */
size_t st_nginx_routes_count(const st_nginx_routes *r);

/* ---- the per-run aggregate ---- */

typedef struct st_nginx_agg st_nginx_agg;

/* Takes over routes (freed with the aggregate, also on error). */
int st_nginx_agg_new(st_nginx_routes *routes, st_nginx_agg **out);
void st_nginx_agg_free(st_nginx_agg *a);
/* Folds one line (without '\n'); line NULL reports an over-long line that
 * the tailer skipped. Malformed lines are counted, never fatal. */
void st_nginx_agg_line(st_nginx_agg *a, const char *line, size_t len);
/* Emits what was folded since the last emit and starts over:
 * http.server.requests / .errors (5xx) / .response.bytes {route,
 * status_class}, http.server.duration {route, status_class, cache_status},
 * cache.requests {cache=nginx, result}, nginx.log.lines,
 * nginx.log.malformed {reason=format|too_long}, nginx.routes.overflow.
 * The first emit error is returned; the aggregate starts over anyway. */
int st_nginx_agg_emit(st_nginx_agg *a, st_emit *e);

/* Totals since the aggregate was created (tests and benchmarks). */
typedef struct st_nginx_agg_totals {
    uint64_t lines;     /* every line, malformed ones included */
    uint64_t requests;  /* lines that parsed */
    uint64_t malformed; /* lines that did not parse */
    uint64_t too_long;  /* lines over ST_NGINX_LINE_MAX */
    uint64_t overflow;  /* requests counted as route "other" because of the cap */
} st_nginx_agg_totals;
void st_nginx_agg_totals_get(const st_nginx_agg *a, st_nginx_agg_totals *out);

/* ---- stub_status ---- */

typedef struct st_nginx_status {
    uint64_t active, accepts, handled, requests, reading, writing, waiting;
} st_nginx_status;

/* Parses a stub_status page. ST_ETOOBIG past ST_NGINX_STATUS_MAX bytes,
 * ST_EPARSE when it is not one; out written only on success. */
int st_nginx_status_parse(const char *p, size_t len, st_nginx_status *out);

/* ---- the tailer ---- */

#define ST_NGINX_TAIL_OLD_MAX 4          /* renamed files still drained at once */
#define ST_NGINX_TAIL_CHUNK (256 * 1024) /* bytes per read */
#define ST_NGINX_CKPT_MAX 4096           /* checkpoint files larger than this are corrupt */
#define ST_NGINX_DIR_SCAN_MAX 10000      /* entries searched for a rotated file */

typedef struct st_nginx_tail_cfg {
    const char *path;       /* the log as nginx names it */
    const char *ckpt_path;  /* NULL: no checkpoint (--once) */
    bool from_beginning;    /* without a checkpoint: read what is there (else start at its end) */
    uint64_t max_bytes;     /* per run; 0 = no limit */
    int64_t rotate_wait_ms; /* how long a renamed file is still read after rotation */
} st_nginx_tail_cfg;

typedef struct st_nginx_tail_stats {
    uint64_t bytes;     /* consumed */
    uint64_t renamed;   /* rotations by rename seen */
    uint64_t truncated; /* truncations (copytruncate) seen */
} st_nginx_tail_stats;

typedef struct st_nginx_tail st_nginx_tail;

/* Called once per complete line (without '\n'); line NULL for a line longer
 * than ST_NGINX_LINE_MAX that was skipped. */
typedef void (*st_nginx_line_fn)(void *arg, const char *line, size_t len);

/* Copies cfg and loads the checkpoint when there is one (a corrupt one is
 * logged and ignored). The log is opened on the first read. ST_ENOMEM. */
int st_nginx_tail_new(const st_nginx_tail_cfg *cfg, st_nginx_tail **out);
void st_nginx_tail_free(st_nginx_tail *t);

/* Reads the lines written since the last read (at most cfg.max_bytes):
 * first what is left in renamed files, then the current file; notices
 * truncation and rename. A partial last line stays for the next read.
 * ST_ENOENT while the log does not exist, ST_EPERM when it cannot be read,
 * ST_EIO; lines read before an error were passed to fn. */
int st_nginx_tail_read(st_nginx_tail *t, int64_t now_ms, st_nginx_line_fn fn, void *arg);
/* Writes the checkpoint atomically when it changed since the last write
 * (and when cfg.ckpt_path is set). ST_EIO. */
int st_nginx_tail_checkpoint(st_nginx_tail *t);
/* Counters since the last call, then zeroed. */
void st_nginx_tail_stats_take(st_nginx_tail *t, st_nginx_tail_stats *out);

/* FNV-1a 64 of a path, as 16 hex digits into out[17] (checkpoint names). */
void st_nginx_path_hash(const char *path, char out[17]);

#endif
