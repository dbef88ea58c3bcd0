/* Prometheus text exposition of the fleet: per-agent health and a table of
 * fleet aggregates computed by the query engine over the last minutes. */
#ifndef ST_API_EXPOSITION_H
#define ST_API_EXPOSITION_H

#include "api.h"
#include "buf.h"

/* The fleet aggregates, kept for a while: each is a query over the whole
 * fleet (a second or more at thousands of agents) over a 5-minute window,
 * so an answer some seconds old says the same. Scrapes within ttl_ms of
 * the last computation reuse its text, and scrapes that come together
 * compute once (the others wait for it). Thread-safe. */
typedef struct st_expose_cache st_expose_cache;
int st_expose_cache_new(int64_t ttl_ms, st_expose_cache **out);
void st_expose_cache_free(st_expose_cache *c);

/* Appends the agent and fleet families to b; the fleet aggregates come
 * through d->fleet_cache when it is set. */
void st_expose_fleet(const struct st_api_deps *d, st_buf *b);

#endif
