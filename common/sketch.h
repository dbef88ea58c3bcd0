/* A mergeable quantile sketch with relative-error guarantees (DDSketch):
 * a value v > 0 lands in bucket ceil(log(v) / log(gamma)), gamma =
 * (1 + alpha) / (1 - alpha), and any quantile is returned within alpha
 * relative error of a true sample value. Two sketches with the same alpha
 * merge exactly by adding bucket counts, so fleet-wide quantiles are true
 * quantiles, never averages of percentiles.
 *
 * Buckets are dense and bounded by ST_SKETCH_MAX_BUCKETS per sign; when a
 * sketch would exceed it, the lowest buckets are collapsed into the lowest
 * kept one (accuracy is lost only for the smallest values, as in DDSketch's
 * collapsing store). Values with magnitude below ST_SKETCH_MIN_VALUE count
 * as zero. Not thread-safe: one owner at a time. */
#ifndef ST_SKETCH_H
#define ST_SKETCH_H

#include <stddef.h>
#include <stdint.h>

#include "proto/strata.pb-c.h"

#define ST_SKETCH_ALPHA 0.01
#define ST_SKETCH_MAX_BUCKETS 4096
#define ST_SKETCH_MIN_VALUE 1e-9

typedef struct st_sketch st_sketch;

/* New empty sketch with relative accuracy alpha in (0, 0.5); 0 selects
 * ST_SKETCH_ALPHA. Alpha below 1e-6 is refused too: the index of DBL_MAX
 * would no longer fit the wire's int32 offsets. ST_EINVAL, ST_ENOMEM. */
int st_sketch_new(double alpha, st_sketch **out);
void st_sketch_free(st_sketch *s);
/* Empties the sketch, keeping alpha and memory. */
void st_sketch_reset(st_sketch *s);

/* Adds v (n times; n = 0 does nothing). ST_EINVAL when v is not finite;
 * ST_ETOOBIG when the count would pass UINT64_MAX or the sum would become
 * infinite (the sketch must stay encodable); ST_ENOMEM. On error the sketch
 * is unchanged. */
int st_sketch_insert(st_sketch *s, double v);
int st_sketch_insert_n(st_sketch *s, double v, uint64_t n);
/* Adds every value of src into dst (src may be dst); the result equals one
 * sketch fed every value, collapsed buckets included. ST_EINVAL when alphas
 * differ, ST_ETOOBIG and ST_ENOMEM as for insert; dst is unchanged on error. */
int st_sketch_merge(st_sketch *dst, const st_sketch *src);

/* The q-quantile (0 <= q <= 1) within alpha relative error, clamped to
 * [min, max]: the value of rank floor(q * (count - 1)) as in DDSketch. q = 0
 * and q = 1 return min and max exactly. NAN when empty or q is outside
 * [0, 1]. Walks the buckets: O(ST_SKETCH_MAX_BUCKETS). */
double st_sketch_quantile(const st_sketch *s, double q);
/* min and max are NAN when the sketch is empty. */
uint64_t st_sketch_count(const st_sketch *s);
double st_sketch_sum(const st_sketch *s);
double st_sketch_min(const st_sketch *s);
double st_sketch_max(const st_sketch *s);
double st_sketch_alpha(const st_sketch *s);

/* Fills a protobuf message from the sketch, without leading or trailing
 * empty buckets (an empty sketch sends min = max = 0). The message's arrays
 * are malloc'd; release them with st_sketch_proto_clear, which is only for
 * messages filled here (free unpacked ones with protobuf-c). ST_ENOMEM. */
int st_sketch_to_proto(const st_sketch *s, Strata__V1__Sketch *out);
void st_sketch_proto_clear(Strata__V1__Sketch *m);
/* Checks a received message: alpha in (0, 0.5) (and not below 1e-6, as for
 * st_sketch_new), finite sum/min/max, min <= max when count > 0, at most
 * ST_SKETCH_MAX_BUCKETS per sign, every bucket's index within int32 and
 * within the indexes alpha gives ST_SKETCH_MIN_VALUE .. DBL_MAX, and count ==
 * zero_count + all bucket counts (no overflow). ST_EFRAME_SKETCH when any of
 * it fails. */
int st_sketch_proto_validate(const Strata__V1__Sketch *m);
/* Builds a sketch from a message, or merges one into dst (ST_EINVAL when
 * alphas differ; dst unchanged on any error). Both validate the message
 * first and return ST_EFRAME_SKETCH when it fails. */
int st_sketch_from_proto(const Strata__V1__Sketch *m, st_sketch **out);
int st_sketch_merge_proto(st_sketch *dst, const Strata__V1__Sketch *m);

#endif
