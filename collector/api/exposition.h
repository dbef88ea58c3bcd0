/* Prometheus text exposition of the fleet: per-agent health and a table of
 * fleet aggregates computed by the query engine over the last minutes. */
#ifndef ST_API_EXPOSITION_H
#define ST_API_EXPOSITION_H

#include "api.h"
#include "buf.h"

/* Appends the agent and fleet families to b. */
void st_expose_fleet(const struct st_api_deps *d, st_buf *b);

#endif
