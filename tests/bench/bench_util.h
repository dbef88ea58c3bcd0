/* Helpers every benchmark program needs: argument parsing, percentiles of
 * samples, and this thread's CPU time (which tells a slow run from a
 * descheduled one on a shared machine). Header-only: the benchmarks are
 * one .c file each. */
#ifndef ST_BENCH_UTIL_H
#define ST_BENCH_UTIL_H

#include "err.h"
#include "util.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

/* An integer option in [lo, hi]. */
static inline int int_arg(const char *s, int lo, int hi, int *out)
{
    int64_t v;
    if (st_parse_i64(s, &v) != ST_OK || v < lo || v > hi) {
        return ST_EINVAL;
    }
    *out = (int)v;
    return ST_OK;
}

static inline int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return x < y ? -1 : (x > y ? 1 : 0);
}

/* Nearest-rank percentile of sorted v[n] (n > 0). */
static inline double pct_sorted(const double *v, int n, double p)
{
    int k = (int)ceil(p * n) - 1;
    return v[k < 0 ? 0 : (k >= n ? n - 1 : k)];
}

/* Sorts v[n] and gives its median (n > 0). */
static inline double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static inline int64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

#endif
