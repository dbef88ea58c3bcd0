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
#define ST_FRAME_MAX_NAME 128    /* names, label keys, units, hosts */
#define ST_FRAME_MAX_VALUE 1024  /* label values and other strings */
#define ST_FRAME_MAX_POINTS 4096 /* points in one Series entry */
#define ST_FRAME_MAX_SCALE 18
/* Unpacking may allocate at most FACTOR * payload bytes + SLACK. protobuf-c
 * turns 2 wire bytes (an empty Series) into ~200 bytes of structs; without
 * a cap a 16 MiB payload could claim gigabytes before validation runs. The
 * densest valid frames (65536 tiny series, 32 one-byte labels each) peak at
 * about 15x (malloc's usable sizes); a payload of empty Series would need
 * over 100x. */
#define ST_FRAME_DECODE_FACTOR 24
#define ST_FRAME_DECODE_SLACK (4u << 20)

typedef Strata__V1__Frame st_frame;

typedef struct st_frame_limits {
    int64_t now_ms;        /* the collector's wall clock */
    int64_t max_future_ms; /* skew: points may start at most this far ahead */
    int64_t max_age_ms;    /* points may start at most this far back */
} st_frame_limits;

/* Unpacks a Frame. ST_EFRAME_DECODE when protobuf-c refuses the bytes or
 * the decode budget above runs out. ST_EFRAME_UTF8 when a string field holds
 * a NUL byte: protobuf-c (1.4) copies such a string whole but C sees only
 * the part before the NUL, while other readers of the same bytes would see
 * all of it; only the wire bytes tell, so decode checks them and refuses. */
int st_frame_decode(const uint8_t *p, size_t n, st_frame **out);
/* Frees a frame from st_frame_decode, or one built with malloc'd parts
 * (strings left at protobuf_c_empty_string are not freed). NULL-safe. */
void st_frame_free(st_frame *f);
/* Packs a Frame into out (reset first); ST_ETOOBIG over ST_ENV_MAX_PAYLOAD. */
int st_frame_encode(const st_frame *f, st_buf *out);

/* Checks every limit: agent id (16 bytes) and seq equal to the envelope's
 * (env may be NULL to skip the comparison), series count, labels per series
 * (and no duplicate keys), name and value lengths, UTF-8 without NUL in
 * every string, finite numbers, timestamps within limits (lim may be NULL
 * to skip), exactly one value column matching the kind (distributions use
 * sketches, counters and gauges ivalues or values), mins/maxs on gauges
 * only, both or neither, one per point, min <= max, ivalues whose running
 * sum fits int64, sketches (st_sketch_proto_validate). Codes: ST_EFRAME_AGENT,
 * _SERIES, _LABELS, _NAME (empty or over 128: names, label keys, units,
 * agent host and version), _VALUE (over 1024: label values, boot_id, action
 * result strings), _UTF8, _NUMBER, _TIME, _POINTS, _SKETCH, and _DECODE for
 * enum values the schema does not know (role, layer, action status).
 * Returns the first failure's code; *detail (may be NULL) then names the
 * series (index and name) or field at fault, in a thread-local buffer valid
 * until the next call on this thread; NULL on success. */
int st_frame_validate(const st_frame *f, const st_envelope *env, const st_frame_limits *lim,
                      const char **detail);

/* How many points a Series entry holds. */
size_t st_series_npoints(const Strata__V1__Series *s);
/* The value of point i of a counter or gauge (ivalues decoded from deltas
 * and scale, or values). Callers iterating use st_series_values instead. */
double st_series_value(const Strata__V1__Series *s, size_t i);
/* Decodes all n points' values into out[n] in one pass. */
void st_series_values(const Strata__V1__Series *s, double *out);

/* The frame as JSON: agent_id (UUID text), seq, sent_unix_ms, agent {host,
 * role, labels{}, version, boot_id}, series [{name, labels{}, layer, unit,
 * kind, points: [{start_unix_ms, interval_ms, value (+ min, max on gauges
 * that carry them) | count, sum, min, max, p50, p90, p95, p99}]}],
 * action_results [{action_id, type, finding_id, status, exit_status,
 * duration_ms, error, output}]. Enum values are lower-case names; numbers
 * that are not finite, and quantiles of empty sketches, are null. Meant for
 * validated frames: ST_EINVAL on invalid UTF-8, ST_EFRAME_SKETCH on a bad
 * sketch, ST_ENOMEM. */
int st_frame_to_json(const st_frame *f, json_t **out);

#endif
