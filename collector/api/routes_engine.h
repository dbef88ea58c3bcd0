/* Handlers of the engine's routes (rows in routes.c). */
#ifndef ST_API_ROUTES_ENGINE_H
#define ST_API_ROUTES_ENGINE_H

#include "http.h"

int st_route_status(const struct st_api_deps *d, const st_req *req, st_resp *resp);
int st_route_findings(const struct st_api_deps *d, const st_req *req, st_resp *resp);
int st_route_finding(const struct st_api_deps *d, const st_req *req, st_resp *resp);
int st_route_finding_action(const struct st_api_deps *d, const st_req *req, st_resp *resp);
int st_route_actions(const struct st_api_deps *d, const st_req *req, st_resp *resp);
int st_route_pin(const struct st_api_deps *d, const st_req *req, st_resp *resp);

#endif
