/* The statsd sampler's view for tests and benchmarks: how many lines it
 * has counted and which port it listens on. The sampler itself is declared
 * in samplers.h (ST_SAMPLER_DECLARE(statsd)). */
#ifndef ST_STATSD_H
#define ST_STATSD_H

#include "statsd_parse.h"

/* Lines counted since the sampler started: those already emitted plus those
 * waiting in the listener's buffer. Thread-safe. ST_EINVAL for NULL. */
int st_statsd_totals(void *ctx, st_statsd_stats *out);

/* The UDP port the listener is bound to; 0 before the first sample()
 * started it (listen: 127.0.0.1:0 picks a free port). */
int st_statsd_port(void *ctx);

#endif
