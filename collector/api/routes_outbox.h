/* Handler of the webhook outbox's route (a row in routes.c). */
#ifndef ST_API_ROUTES_OUTBOX_H
#define ST_API_ROUTES_OUTBOX_H

#include "http.h"

/* GET /v1/deliveries?status=&limit= -> {deliveries: [...]}, newest first.
 * Reads the store only, so it answers (with what is stored) also when no
 * webhook is configured. */
int st_route_deliveries(const struct st_api_deps *d, const st_req *req, st_resp *resp);
/* Its accepted query parameters, for the route row. */
extern const char *const st_route_deliveries_params[];

#endif
