/* The collector's own counters, shared by ingest, writer and API and
 * exposed on /metrics. Plain C11 atomics: updated on hot paths without
 * locks, read with relaxed loads for exposition. */
#ifndef ST_METRICS_H
#define ST_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "envelope.h" /* ST_CODEC_COUNT */
#include "err.h"

/* Commit latency histogram bucket upper bounds, in seconds. */
#define ST_COMMIT_BUCKETS 12
extern const double st_commit_bucket_le[ST_COMMIT_BUCKETS];

typedef struct st_metrics {
    _Atomic uint64_t frames_received;
    _Atomic uint64_t frames_applied;
    _Atomic uint64_t frames_duplicate;
    _Atomic uint64_t frames_retry_later;
    _Atomic uint64_t samples_applied;
    _Atomic uint64_t bytes_received;
    _Atomic uint64_t frames_codec[3];       /* opened envelopes by codec: none, zstd, zstd_dict */
    _Atomic uint64_t rejects[ST_ERR_COUNT]; /* by st_err index */
    _Atomic uint64_t commits;
    _Atomic uint64_t commit_failures;
    _Atomic uint64_t map_grows;
    _Atomic uint64_t commit_bucket[ST_COMMIT_BUCKETS + 1]; /* last: +Inf */
    _Atomic uint64_t commit_ns_sum;
    _Atomic uint64_t http_requests;
    _Atomic uint64_t http_errors;
    _Atomic uint64_t query_bucket[ST_COMMIT_BUCKETS + 1]; /* /v1/query latency, same bounds */
    _Atomic uint64_t query_ns_sum;
} st_metrics;

static inline void st_metric_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static inline uint64_t st_metric_get(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* Counts a rejected frame under its error code. */
void st_metrics_reject(st_metrics *m, int err);
/* Records one commit's latency. */
void st_metrics_commit(st_metrics *m, int64_t ns);
/* Records one query's latency. */
void st_metrics_query(st_metrics *m, int64_t ns);

#endif
