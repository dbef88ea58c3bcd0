/* The cache samplers' reply parsers (redis INFO, memcached `stats`,
 * `varnishstat -j`), apart from their I/O so the unit tests
 * (tests/unit/cache_samplers_test.c) can feed them text directly. Each
 * borrows text for the call only and emits into e. */
#ifndef ST_CACHE_PARSE_H
#define ST_CACHE_PARSE_H

#include <stddef.h>

#include "emit.h"

#define ST_REDIS_MAX_REPLY (1u << 20)    /* INFO is ~6 KiB; a bigger reply is not INFO */
#define ST_MEMCACHED_MAX_REPLY 65536     /* `stats` is ~1.5 KiB; far larger is not stats */
#define ST_VARNISH_MAX_OUTPUT (4u << 20) /* filtered output is ~2 KiB, unfiltered ~50 KiB */

/* Parses an INFO reply of len bytes and emits its series. ST_ETOOBIG past
 * ST_REDIS_MAX_REPLY, ST_EPARSE when no known field is in it. */
int st_redis_info_emit(st_emit *e, const char *text, size_t len);

/* Parses a `stats` reply of len bytes (lines up to END) and emits its
 * series. ST_ETOOBIG past ST_MEMCACHED_MAX_REPLY, ST_EPARSE when END is
 * missing, the server answered an error, or no known field is in it. */
int st_memcached_stats_emit(st_emit *e, const char *text, size_t len);

/* Parses the JSON of `varnishstat -j` (len bytes) and emits its series.
 * ST_ETOOBIG past ST_VARNISH_MAX_OUTPUT, ST_EPARSE when it is not JSON or
 * holds none of the MAIN counters. */
int st_varnish_json_emit(st_emit *e, const char *text, size_t len);

#endif
