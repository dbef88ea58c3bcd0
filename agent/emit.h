/* What samplers write into. The agent folds every sample per interval into
 * series state (counters as deltas, gauges as last/min/max, distributions
 * as sketches) and turns the folded points into Series of a Frame.
 * Samplers never build protobuf themselves. */
#ifndef ST_EMIT_H
#define ST_EMIT_H

#include <stddef.h>
#include <stdint.h>

#include "proto/strata.pb-c.h"

typedef struct st_sketch st_sketch;

typedef struct st_label {
    const char *key;
    const char *value;
} st_label;

typedef enum st_layer {
    ST_LAYER_NONE = STRATA__V1__LAYER__LAYER_UNSPECIFIED,
    ST_LAYER_DATABASE = STRATA__V1__LAYER__DATABASE,
    ST_LAYER_FUNCTION = STRATA__V1__LAYER__FUNCTION,
    ST_LAYER_FRONTEND = STRATA__V1__LAYER__FRONTEND,
    ST_LAYER_REALTIME = STRATA__V1__LAYER__REALTIME,
    ST_LAYER_INFRA = STRATA__V1__LAYER__INFRASTRUCTURE,
} st_layer;

/* Identity and metadata of a series as a sampler names it. scale is the
 * decimal exponent for integral encoding (value * 10^scale is kept as an
 * integer): 0 for byte and count series, 4 for ratios. */
typedef struct st_series_desc {
    const char *name;
    const st_label *labels;
    size_t nlabels;
    st_layer layer;
    const char *unit; /* "B", "s", "ratio", "" */
    int scale;
} st_series_desc;

typedef struct st_emit st_emit;

/* A gauge sample: the point keeps the last value and min/max. */
int st_emit_gauge(st_emit *e, const st_series_desc *d, double v);
/* A counter from a monotonic total (as /proc and servers report): the emit
 * layer keeps the previous total per series and records the increase; the
 * first total only sets the base; a total below the previous (a restart)
 * counts from zero. */
int st_emit_counter_total(st_emit *e, const st_series_desc *d, double total);
/* A counter increase observed directly (log lines, StatsD). */
int st_emit_counter_add(st_emit *e, const st_series_desc *d, double delta);
/* One observation (n times) into the series' sketch for this interval. */
int st_emit_observe(st_emit *e, const st_series_desc *d, double v, uint64_t n);
/* Merges a whole sketch into the series' sketch for this interval. */
int st_emit_sketch(st_emit *e, const st_series_desc *d, const st_sketch *s);

#endif
