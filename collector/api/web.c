/* Serves the embedded dashboard: index.html at "/" and the bundles under
 * /assets/ from the generated table, so the collector needs no files and no
 * network for its dashboard. */
#include "web.h"

#include "err.h"

#include <string.h>

const st_web_asset *st_web_find(const char *path)
{
    if (path == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < st_web_nassets; i++) {
        if (strcmp(st_web_assets[i].path, path) == 0) {
            return &st_web_assets[i];
        }
    }
    return NULL;
}

const char *st_web_cache_control(const st_web_asset *a)
{
    return a != NULL && a->immutable ? "public, max-age=31536000, immutable" : "no-cache";
}

static int serve(const st_web_asset *a, const st_req *req, st_resp *resp)
{
    const char *inm = req->if_none_match;
    resp->cache_control = st_web_cache_control(a);
    resp->etag = a->etag;
    st_buf_reset(&resp->body);
    if (inm != NULL && (strstr(inm, a->etag) != NULL || strcmp(inm, "*") == 0)) {
        resp->status = 304; /* the browser's copy is current */
        resp->content_type = a->content_type;
        return ST_OK;
    }
    if (st_buf_append(&resp->body, a->data, a->len) != ST_OK) {
        return st_resp_error(resp, 500, "out of memory");
    }
    resp->status = 200;
    resp->content_type = a->content_type;
    return ST_OK;
}

int st_route_index(const struct st_api_deps *d, const st_req *req, st_resp *resp)
{
    const st_web_asset *a = st_web_find("/");
    (void)d;
    if (a == NULL) {
        return st_resp_error(resp, 404, "this collector was built without its dashboard");
    }
    return serve(a, req, resp);
}

int st_route_asset(const struct st_api_deps *d, const st_req *req, st_resp *resp)
{
    const st_web_asset *a = NULL;
    (void)d;
    if (strncmp(req->path, "/assets/", 8) == 0) {
        a = st_web_find(req->path);
    }
    if (a == NULL) {
        return st_resp_error(resp, 404, "no such asset: %.200s", req->path);
    }
    return serve(a, req, resp);
}
