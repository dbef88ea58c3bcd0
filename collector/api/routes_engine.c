/* Routes of the optimization loop: status, findings, SRE and automation
 * callbacks, baseline pinning. */
#include "routes_engine.h"

#include "actions.h"
#include "engine.h"
#include "err.h"
#include "timeutil.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

#define ID_MAX 32

static bool engine_ready(const struct st_api_deps *d, st_resp *resp)
{
    if (d->engine == NULL) {
        st_resp_error(resp, 503, "the engine is not running");
        return false;
    }
    return true;
}

int st_route_status(const struct st_api_deps *d, const st_req *req, st_resp *resp)
{
    (void)req;
    if (!engine_ready(d, resp)) {
        return ST_OK;
    }
    return st_resp_json(resp, st_engine_status(d->engine));
}

static bool one_of(const char *v, const char *const *list)
{
    for (; *list != NULL; list++) {
        if (strcmp(v, *list) == 0) {
            return true;
        }
    }
    return false;
}

int st_route_findings(const struct st_api_deps *d, const st_req *req, st_resp *resp)
{
    static const char *const states[] = {"open",     "dispatched",  "applied",   "validating",
                                         "resolved", "ineffective", "dismissed", NULL};
    static const char *const layers[] = {"database", "function",       "frontend",
                                         "realtime", "infrastructure", NULL};
    const char *status = st_param_get(req, "status");
    const char *layer = st_param_get(req, "layer");
    const char *limit = st_param_get(req, "limit");
    uint64_t n = 0;
    json_t *arr;
    if (!engine_ready(d, resp)) {
        return ST_OK;
    }
    if (status != NULL && !one_of(status, states)) {
        return st_resp_error(resp, 400, "parameter 'status': unknown status '%.32s'", status);
    }
    if (layer != NULL && !one_of(layer, layers)) {
        return st_resp_error(resp, 400, "parameter 'layer': unknown layer '%.32s'", layer);
    }
    if (limit != NULL && (st_parse_u64(limit, &n) != ST_OK || n > 10000)) {
        return st_resp_error(resp, 400, "parameter 'limit': a number up to 10000");
    }
    if ((arr = st_engine_findings(d->engine, status, layer, (size_t)n)) == NULL) {
        return st_resp_error(resp, 500, "out of memory");
    }
    return st_resp_json(resp, json_pack("{s:o}", "findings", arr));
}

/* /v1/findings/{id} and /v1/findings/{id}/{action}: splits the path. */
static bool split(const char *path, char *id, char *action)
{
    const char *p = path + strlen("/v1/findings/");
    size_t n = strcspn(p, "/");
    if (n == 0 || n > ID_MAX) {
        return false;
    }
    memcpy(id, p, n);
    id[n] = '\0';
    p += n;
    action[0] = '\0';
    if (*p == '/') {
        snprintf(action, 16, "%.15s", p + 1);
    }
    return true;
}

int st_route_finding(const struct st_api_deps *d, const st_req *req, st_resp *resp)
{
    char id[ID_MAX + 1];
    char action[16];
    json_t *f;
    if (!engine_ready(d, resp)) {
        return ST_OK;
    }
    if (!split(req->path, id, action) || action[0] != '\0') {
        return st_resp_error(resp, 404, "no such path: %.200s", req->path);
    }
    if ((f = st_engine_finding(d->engine, id)) == NULL) {
        return st_resp_error(resp, 404, "no finding '%s'", id);
    }
    if (d->actions != NULL) {
        json_object_set_new(f, "actions", st_actions_list(d->actions, id));
    }
    return st_resp_json(resp, f);
}

int st_route_finding_action(const struct st_api_deps *d, const st_req *req, st_resp *resp)
{
    char id[ID_MAX + 1];
    char action[16];
    char note[256] = "";
    json_t *body = NULL;
    int rv;
    if (!engine_ready(d, resp)) {
        return ST_OK;
    }
    if (!split(req->path, id, action) ||
        (strcmp(action, "ack") != 0 && strcmp(action, "applied") != 0 &&
         strcmp(action, "dismiss") != 0)) {
        return st_resp_error(resp, 404, "no such path: %.200s (ack, applied or dismiss)",
                             req->path);
    }
    if (req->body_len > 0) {
        json_error_t je;
        if ((body = json_loadb(req->body, req->body_len, 0, &je)) == NULL) {
            return st_resp_error(resp, 400, "body: not JSON (%s)", je.text);
        }
        if (json_string_value(json_object_get(body, "note")) != NULL) {
            snprintf(note, sizeof(note), "%s", json_string_value(json_object_get(body, "note")));
        }
        json_decref(body);
    }
    rv = st_engine_callback(d->engine, id, action, note[0] ? note : NULL);
    if (rv == ST_ENOENT) {
        return st_resp_error(resp, 404, "no finding '%s'", id);
    }
    if (rv == ST_EINVAL) {
        return st_resp_error(resp, 409, "'%s' is not allowed in the finding's state", action);
    }
    if (rv != ST_OK) {
        return st_resp_error(resp, 500, "%s", st_strerror(rv));
    }
    return st_resp_json(resp, st_engine_finding(d->engine, id));
}

int st_route_pin(const struct st_api_deps *d, const st_req *req, st_resp *resp)
{
    size_t n = 0;
    int rv;
    (void)req;
    if (!engine_ready(d, resp)) {
        return ST_OK;
    }
    if ((rv = st_engine_pin_baselines(d->engine, st_time_wall_ms(), &n)) != ST_OK) {
        return st_resp_error(resp, 500, "%s", st_strerror(rv));
    }
    return st_resp_json(resp, json_pack("{s:I}", "pinned", (json_int_t)n));
}

int st_route_actions(const struct st_api_deps *d, const st_req *req, st_resp *resp)
{
    const char *finding = st_param_get(req, "finding");
    json_t *arr;
    if (d->actions == NULL) {
        return st_resp_error(resp, 503, "agent actions are not running");
    }
    if (finding != NULL && strlen(finding) > ID_MAX) {
        return st_resp_error(resp, 400, "parameter 'finding': over %d bytes", ID_MAX);
    }
    if ((arr = st_actions_list(d->actions, finding)) == NULL) {
        return st_resp_error(resp, 500, "out of memory");
    }
    return st_resp_json(resp, json_pack("{s:o}", "actions", arr));
}
