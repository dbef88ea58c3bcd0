/* Folding samples per interval. The fold keeps one state per series (name
 * and labels): the open point of the current interval and the points closed
 * since the last take. Samplers write through an st_emit obtained from
 * st_fold_begin; st_fold_take moves every closed point into Series entries
 * of a Frame. Not thread-safe: the scheduler thread owns the fold (StatsD
 * and RUM listeners hand their samples to the scheduler). */
#ifndef ST_FOLD_H
#define ST_FOLD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "emit.h"
#include "proto/strata.pb-c.h"

#define ST_FOLD_MAX_SERIES 65536 /* series beyond this are dropped and counted */

typedef struct st_fold st_fold;

int st_fold_new(st_fold **out);
void st_fold_free(st_fold *f);

/* An emitter for one sampler run at now_ms: its samples land in the point
 * [floor(now_ms / interval_ms) * interval_ms, + interval_ms). The emitter
 * lives until the next st_fold_begin. */
st_emit *st_fold_begin(st_fold *f, int64_t now_ms, int64_t interval_ms);

/* The same with an explicit point [start_ms, start_ms + interval_ms). */
st_emit *st_fold_begin_at(st_fold *f, int64_t start_ms, int64_t interval_ms, int64_t now_ms);
/* With on, the first total a counter reports counts from zero instead of
 * only setting the base (--once: totals since the source started). */
void st_fold_totals_from_zero(st_fold *f, bool on);

/* Closes every open point whose interval ended at or before now_ms (all of
 * them when now_ms is INT64_MAX) and moves all closed points into newly
 * allocated Series appended to frame->series (free with st_frame_free).
 * Series that received nothing for a while are forgotten. */
int st_fold_take(st_fold *f, int64_t now_ms, Strata__V1__Frame *frame);

/* Samples refused because ST_FOLD_MAX_SERIES was reached, ever. */
uint64_t st_fold_dropped(const st_fold *f);
size_t st_fold_series_count(const st_fold *f);

#endif
