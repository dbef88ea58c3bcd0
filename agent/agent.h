/* The agent: samplers on a schedule, folded per interval, one frame per
 * flush interval encoded into an envelope, durably spooled, then shipped by
 * the sender. A failing sampler is backed off and retried; it never stops
 * the agent. */
#ifndef ST_AGENT_H
#define ST_AGENT_H

#include <stdatomic.h>
#include <stdint.h>

#include "config.h"
#include "settings.h"

#define ST_AGENT_MAX_SAMPLERS 64
#define ST_SAMPLER_MAX_BACKOFF_MS (5 * 60 * 1000)

typedef struct st_agent st_agent;

/* Builds the agent from settings: identity, samplers (each parses its own
 * options; errors name file, line and key). Nothing is started. */
int st_agent_new(const st_agent_settings *s, const st_cfg_doc *doc, st_agent **out,
                 st_cfg_error *err);
/* Opens the spool, starts the sender and runs the schedule until *stop
 * becomes non-zero; then flushes the open points into a last frame and
 * gives the sender a moment to drain. Between runs the agent sleeps until
 * the next sampler or flush is due; whoever sets *stop writes a byte to
 * wake_fd (the read end is passed here) to end that sleep. With wake_fd -1
 * the agent looks at *stop every TICK_MAX_MS instead. */
int st_agent_run(st_agent *a, atomic_int *stop, int wake_fd);
/* Samples twice wait_ms apart (counters from totals count from zero) and
 * returns the frame as JSON text (malloc'd). No spool, no network. */
int st_agent_once(st_agent *a, int64_t wait_ms, char **out);
void st_agent_free(st_agent *a);

#endif
