/* strata.v1.Frame: decoding, validation against the limits of DESIGN.md,
 * reading point values out of the columnar Series, and JSON for --once. */
#ifndef ST_FRAME_H
#define ST_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "envelope.h"
#include "proto/strata.pb-c.h"

#define ST_FRAME_MAX_SERIES 65536
#define ST_FRAME_MAX_LABELS 32
#define ST_FRAME_MAX_NAME 128      /* names, label keys, units, hosts */
#define ST_FRAME_MAX_VALUE 1024    /* label values and other strings */
#define ST_FRAME_MAX_POINTS 4096   /* points in one Series entry */
#define ST_FRAME_MAX_SCALE 18

typedef Strata__V1__Frame st_frame;

typedef struct st_frame_limits {
    int64_t now_ms;         /* the collector's wall clock */
    int64_t max_future_ms;  /* skew: points may start at most this far ahead */
    int64_t max_age_ms;     /* points may start at most this far back */
} st_frame_limits;

/* Unpacks a Frame. ST_EFRAME_DECODE when protobuf-c refuses the bytes. */
int st_frame_decode(const uint8_t *p, size_t n, st_frame **out);
void st_frame_free(st_frame *f);
/* Packs a Frame into out (reset first); ST_ETOOBIG over ST_ENV_MAX_PAYLOAD. */
int st_frame_encode(const st_frame *f, st_buf *out);

/* Checks every limit: agent id and seq equal to the envelope's (env may be
 * NULL to skip), series count, labels per series, name and value lengths,
 * UTF-8 without NUL in every string, finite numbers, timestamps within
 * limits, exactly one value column matching the kind, mins/maxs lengths,
 * sketches (st_sketch_proto_validate). Returns the first failure's code;
 * *detail (may be NULL) then names the series or field at fault, in a
 * static or thread-local buffer valid until the next call on this thread. */
int st_frame_validate(const st_frame *f, const st_envelope *env, const st_frame_limits *lim,
                      const char **detail);

/* How many points a Series entry holds. */
size_t st_series_npoints(const Strata__V1__Series *s);
/* The value of point i of a counter or gauge (ivalues decoded from deltas
 * and scale, or values). Callers iterating use st_series_values instead. */
double st_series_value(const Strata__V1__Series *s, size_t i);
/* Decodes all n points' values into out[n] in one pass. */
void st_series_values(const Strata__V1__Series *s, double *out);

/* The frame as JSON: agent, seq, series with labels and points
 * ({start_unix_ms, interval_ms, value | min/max | count/sum/min/max/p50/
 * p90/p95/p99}), action results. */
int st_frame_to_json(const st_frame *f, json_t **out);

#endif
