/* Counter helpers for st_metrics. */
#include "metrics.h"

const double st_commit_bucket_le[ST_COMMIT_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                       0.05,   0.1,   0.25,   0.5,   1.0,  2.5};

void st_metrics_reject(st_metrics *m, int err)
{
    int i = st_err_index(err);
    if (i < 0) {
        i = st_err_index(ST_EINVAL);
    }
    st_metric_add(&m->rejects[i], 1);
}

static int bucket_of(int64_t ns)
{
    double s = (double)ns / 1e9;
    int b = 0;
    while (b < ST_COMMIT_BUCKETS && s > st_commit_bucket_le[b]) {
        b++;
    }
    return b;
}

void st_metrics_query(st_metrics *m, int64_t ns)
{
    st_metric_add(&m->query_bucket[bucket_of(ns)], 1);
    st_metric_add(&m->query_ns_sum, (uint64_t)(ns > 0 ? ns : 0));
}

void st_metrics_commit(st_metrics *m, int64_t ns)
{
    st_metric_add(&m->commit_bucket[bucket_of(ns)], 1);
    st_metric_add(&m->commit_ns_sum, (uint64_t)(ns > 0 ? ns : 0));
    st_metric_add(&m->commits, 1);
}
