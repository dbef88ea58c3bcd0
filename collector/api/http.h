/* Internal to the API: the request/response shapes handlers see, so route
 * code never touches nng, and the helpers to parse query strings and write
 * JSON answers. */
#ifndef ST_API_HTTP_H
#define ST_API_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "api.h"
#include "buf.h"

typedef struct st_param {
    char *key;
    char *value;
} st_param;

typedef struct st_req {
    const char *method;
    char path[512];
    st_param params[ST_API_MAX_PARAMS];
    size_t nparams;
    const char *body;
    size_t body_len;
    const char *authorization;
    const char *if_none_match; /* for conditional GETs of cacheable answers */
} st_req;

typedef struct st_resp {
    int status;
    const char *content_type;
    const char *cache_control; /* NULL: no-store */
    const char *etag;          /* NULL: none */
    char allow[32];            /* Allow header of a 405 */
    st_buf body;
} st_resp;

typedef int (*st_route_fn)(const struct st_api_deps *d, const st_req *req, st_resp *resp);

enum st_scope { ST_SCOPE_NONE = 0, ST_SCOPE_READ, ST_SCOPE_WRITE };

typedef struct st_route {
    const char *method;
    const char *path;
    bool tree;           /* matches path and everything below it */
    enum st_scope scope; /* the token scope it needs */
    st_route_fn fn;
    const char *const *params; /* accepted query parameters, NULL-terminated */
} st_route;

extern const st_route st_routes[];

/* Splits and percent-decodes "a=b&c=d" (no leading '?') into req->params.
 * Errors (message in err): too long, too many, bad escapes, not UTF-8. */
int st_params_parse(const char *qs, st_req *req, char *err, size_t errlen);
void st_params_free(st_req *req);
/* The first value of key, or NULL. */
const char *st_param_get(const st_req *req, const char *key);

/* {"error": msg} with status. Always returns ST_OK so handlers can
 * `return st_resp_error(...)`. */
int st_resp_error(st_resp *resp, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Serialises obj (stealing the reference) as the 200 answer. */
int st_resp_json(st_resp *resp, json_t *obj);

#endif
