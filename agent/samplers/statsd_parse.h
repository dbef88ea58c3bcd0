/* StatsD and DogStatsD lines: parsing in place and aggregation per series
 * (name + sorted tags) for one interval. The statsd sampler's listener
 * thread feeds datagrams into an st_statsd_agg; the scheduler swaps two of
 * them and emits the one it took.
 *
 * The hot path never allocates per line: a line is parsed into spans of the
 * datagram, its series key (name\0k\0v\0..., the fold's encoding) is built
 * in a scratch buffer and hashed once, and the aggregate is an open-address
 * table of precomputed hashes over arrays it keeps across resets. Memory is
 * taken only when a series is new in its interval, amortised. Not
 * thread-safe: one owner at a time. */
#ifndef ST_STATSD_PARSE_H
#define ST_STATSD_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "emit.h"

#define ST_STATSD_MAX_LINE 8192     /* longer lines are malformed */
#define ST_STATSD_MAX_NAME 128      /* metric names (the collector's limit) */
#define ST_STATSD_MAX_TAG_KEY 128   /* label keys (the collector's limit) */
#define ST_STATSD_MAX_TAG_VALUE 256 /* label values (DogStatsD keeps tags under 200) */
/* Hard cap of max_tags: host, role and agent labels must still fit the
 * collector's 32 labels per series. */
#define ST_STATSD_MAX_TAGS 24
#define ST_STATSD_MAX_KEY 4000         /* encoded series key; the fold takes 4096 */
#define ST_STATSD_MAX_NUMBER 64        /* characters of one number */
#define ST_STATSD_MAX_SERIES 65536     /* hard cap of max_series: the fold's own */
#define ST_STATSD_MAX_SET_SIZE 1000000 /* hard cap of distinct members per set */

/* Kinds of lines; ms and h/d are kept apart because |ms values are scaled
 * to seconds and |h/|d values are not. */
enum st_statsd_type {
    ST_STATSD_COUNTER = 1, /* |c */
    ST_STATSD_GAUGE,       /* |g, +N / -N relative */
    ST_STATSD_TIMER,       /* |ms, sketched in seconds */
    ST_STATSD_HISTOGRAM,   /* |h and |d, sketched as sent */
    ST_STATSD_SET,         /* |s, distinct members per interval */
};

/* A piece of the datagram; never NUL-terminated. */
typedef struct st_statsd_span {
    const char *p;
    uint32_t len;
} st_statsd_span;

typedef struct st_statsd_tag {
    st_statsd_span key;
    st_statsd_span value; /* "true" for a tag without a value */
} st_statsd_tag;

/* One parsed line. Spans point into the caller's buffer. */
typedef struct st_statsd_line {
    st_statsd_span name;
    st_statsd_span raw; /* the value text: a set member, or v[:v...] */
    double value;       /* the first value; sign included */
    uint32_t nvalues;   /* DogStatsD 1.1 packs several: name:1:2:3|d */
    bool relative;      /* a gauge written with a leading + or - */
    enum st_statsd_type type;
    double rate; /* (0, 1]; 1 when absent */
    size_t ntags;
    st_statsd_tag tags[ST_STATSD_MAX_TAGS]; /* sorted by key, keys distinct */
} st_statsd_line;

/* Parses one line (without its newline) of len bytes at p, allowing at most
 * max_tags tags (<= ST_STATSD_MAX_TAGS). Accepts name:value|type with
 * optional |@rate, |#tag[:value],... and DogStatsD's |c:container, |e:...,
 * |card:... and |T<unix> fields (ignored). Names are 1..128 bytes without
 * control characters, spaces, '|', '#', ',' or '@', and valid UTF-8; tag
 * keys likewise (1..128); tag values up to 256 bytes. Values are decimal
 * (no NaN, infinities or hex); counters are not negative; rates are in
 * (0, 1]. ST_OK; ST_EPARSE for a malformed line; ST_ETOOBIG for a line,
 * name, tag or key over its limit or too many tags; ST_EUNSUPPORTED for
 * DogStatsD events (_e{) and service checks (_sc|), which carry no metric.
 * *why (may be NULL) names the problem in static text. Never allocates. */
int st_statsd_parse(const char *p, size_t len, size_t max_tags, st_statsd_line *out,
                    const char **why);

/* Parses the decimal number of n bytes at p (no sign handling beyond a
 * leading + or -, no NaN or infinities, at most ST_STATSD_MAX_NUMBER
 * characters). Exact for up to 15 significant digits without strtod. */
int st_statsd_number(const char *p, size_t n, double *out);

typedef struct st_statsd_limits {
    size_t max_series; /* series per interval, 1..ST_STATSD_MAX_SERIES */
    size_t max_tags;   /* tags per line, 0..ST_STATSD_MAX_TAGS */
    size_t max_set;    /* distinct members per set per interval */
    uint64_t seed;     /* hash seed; aggregates that share entries share it */
} st_statsd_limits;

/* Lines as counted by an aggregate since its last reset. */
typedef struct st_statsd_stats {
    uint64_t received;  /* non-empty lines */
    uint64_t malformed; /* refused by the parser, or a type conflict */
    uint64_t dropped;   /* well-formed, but past max_series or max_set */
    uint64_t ignored;   /* DogStatsD events and service checks */
} st_statsd_stats;

/* A gauge's interval. Relative updates before the first absolute value of
 * the interval are kept as offsets from a base only the emitter knows (the
 * last value of an earlier interval): pre_* are the running sum of those
 * offsets and its extremes. */
typedef struct st_statsd_gauge {
    bool has_value; /* an absolute value arrived */
    double last, min, max;
    bool has_pre; /* relative updates came before it */
    double pre_sum, pre_min, pre_max;
} st_statsd_gauge;

/* A read-only view of one series of an aggregate, valid until the next
 * add or reset. */
typedef struct st_statsd_entry {
    const char *key; /* name\0k\0v\0... */
    size_t keylen;
    uint64_t hash;
    const char *name;
    st_label tags[ST_STATSD_MAX_TAGS];
    size_t ntags;
    enum st_statsd_type type;
    uint64_t lines;                 /* lines that went into it */
    double count;                   /* counters: sum of value / rate */
    st_statsd_gauge gauge;          /* gauges */
    const struct st_sketch *sketch; /* timers (seconds), histograms (as sent) */
    uint64_t distinct;              /* sets */
} st_statsd_entry;

typedef struct st_statsd_agg st_statsd_agg;

/* ST_EINVAL when a limit is out of range; ST_ENOMEM. */
int st_statsd_agg_new(const st_statsd_limits *lim, st_statsd_agg **out);
void st_statsd_agg_free(st_statsd_agg *a);
/* Empties the aggregate (and its stats), keeping its memory. */
void st_statsd_agg_reset(st_statsd_agg *a);

/* Adds one parsed line: counters sum value / rate, gauges keep last/min/max
 * (relative ones add), timers and histograms put every value into the
 * series' sketch round(1 / rate) times (timers in seconds: ms / 1000), sets
 * count distinct members. ST_ETOOBIG when the series would be past
 * max_series or a set past max_set; ST_EINVAL when the series has another
 * type in this interval; ST_ENOMEM. Does not touch the stats. */
int st_statsd_agg_add(st_statsd_agg *a, const st_statsd_line *l);

/* Every line of a datagram of n bytes: lines end at \n (a \r before it is
 * dropped), empty lines are skipped, each other line counts as received and,
 * when refused, as malformed, dropped or ignored; good lines count however
 * many bad ones surround them. truncated: the receive buffer cut the
 * datagram, so its last line (after the last \n) is incomplete and counts
 * as malformed. Never fails. */
void st_statsd_agg_datagram(st_statsd_agg *a, const char *p, size_t n, bool truncated);

void st_statsd_agg_stats(const st_statsd_agg *a, st_statsd_stats *out);
/* Series in the aggregate; entries are numbered 0..count-1. */
size_t st_statsd_agg_count(const st_statsd_agg *a);
/* Fills *out with entry i (< count). ST_EINVAL when out of range. */
int st_statsd_agg_entry(const st_statsd_agg *a, size_t i, st_statsd_entry *out);

/* Gauge bases kept across intervals (for relative updates), keyed by the
 * entry's key and hash: put records the gauge's final value, get finds it.
 * put: ST_ETOOBIG when the aggregate is full, ST_EINVAL when the key is not
 * a gauge here. get: ST_ENOENT when unknown. */
int st_statsd_agg_put_gauge(st_statsd_agg *a, const st_statsd_entry *e, double value);
int st_statsd_agg_get_gauge(const st_statsd_agg *a, const st_statsd_entry *e, double *value);

/* The gauge's interval as last, min and max, given the base its relative
 * updates start from (0 when none is known). */
void st_statsd_gauge_resolve(const st_statsd_gauge *g, double base, double *last, double *min,
                             double *max);

#endif
