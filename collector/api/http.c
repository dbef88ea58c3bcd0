/* nng HTTP server adapter: one catch-all handler routes every request
 * through the table in routes.c, so unknown paths and methods get JSON
 * errors too, and route code never touches nng. */
#include "http.h"
#include "exposition.h"

#include "err.h"
#include "log.h"
#include "util.h"

#include <arpa/inet.h>
#include <nng/nng.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <nng/supplemental/http/http.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct st_api {
    nng_http_server *srv;
    nng_http_handler *h;
    struct st_api_deps deps;
    int port;
    /* Requests inside handler_cb. nng 1.5's server stop closes the
     * connections but does not wait for a handler already running (a
     * /metrics computation takes seconds at fleet size), so st_api_stop
     * waits for them before freeing what they use. */
    pthread_mutex_t mu;
    pthread_cond_t idle;
    int inflight;
    bool stopping;
};

/* Percent-decodes s[0..n) ('+' is a space) into a new string; NULL on a
 * bad escape or when memory runs out. */
static char *decode(const char *s, size_t n)
{
    char *out = malloc(n + 1);
    size_t k = 0;
    if (out == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            out[k++] = s[i] == '+' ? ' ' : s[i];
            continue;
        }
        if (n - i < 3 || st_hex_digit(s[i + 1]) < 0 || st_hex_digit(s[i + 2]) < 0) {
            free(out);
            return NULL;
        }
        out[k++] = (char)(st_hex_digit(s[i + 1]) << 4 | st_hex_digit(s[i + 2]));
        i += 2;
    }
    out[k] = '\0';
    return out;
}

void st_params_free(st_req *req)
{
    for (size_t i = 0; i < req->nparams; i++) {
        free(req->params[i].key);
        free(req->params[i].value);
    }
    req->nparams = 0;
}

static int add_param(st_req *req, const char *s, size_t n, char *err, size_t errlen)
{
    const char *eq = memchr(s, '=', n);
    size_t klen = eq != NULL ? (size_t)(eq - s) : n;
    st_param *p;
    if (req->nparams >= ST_API_MAX_PARAMS) {
        snprintf(err, errlen, "more than %d query parameters", ST_API_MAX_PARAMS);
        return ST_ETOOBIG;
    }
    p = &req->params[req->nparams];
    p->key = decode(s, klen);
    p->value = eq != NULL ? decode(eq + 1, n - klen - 1) : strdup("");
    req->nparams++;
    if (p->key == NULL || p->value == NULL) {
        snprintf(err, errlen, "query parameter '%.*s': bad percent-encoding", (int)ST_MIN(klen, 64),
                 s);
        return ST_EINVAL;
    }
    if (!st_utf8_valid(p->key, strlen(p->key)) || !st_utf8_valid(p->value, strlen(p->value))) {
        snprintf(err, errlen, "query parameter '%.*s': not valid UTF-8", (int)ST_MIN(klen, 64), s);
        return ST_EINVAL;
    }
    return ST_OK;
}

int st_params_parse(const char *qs, st_req *req, char *err, size_t errlen)
{
    size_t len = strlen(qs);
    const char *p = qs;
    if (len > ST_API_MAX_QUERY) {
        snprintf(err, errlen, "query string over %d bytes", ST_API_MAX_QUERY);
        return ST_ETOOBIG;
    }
    while (*p != '\0') {
        const char *amp = strchr(p, '&');
        size_t n = amp != NULL ? (size_t)(amp - p) : strlen(p);
        int rv;
        if (n > 0 && (rv = add_param(req, p, n, err, errlen)) != ST_OK) {
            return rv;
        }
        p += n + (amp != NULL);
    }
    return ST_OK;
}

const char *st_param_get(const st_req *req, const char *key)
{
    for (size_t i = 0; i < req->nparams; i++) {
        if (strcmp(req->params[i].key, key) == 0) {
            return req->params[i].value;
        }
    }
    return NULL;
}

int st_resp_error(st_resp *resp, int status, const char *fmt, ...)
{
    char msg[512];
    json_t *o;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    st_buf_reset(&resp->body);
    resp->status = status;
    resp->content_type = "application/json";
    o = json_pack("{s:s}", "error", msg);
    if (o != NULL) {
        char *s = json_dumps(o, JSON_COMPACT);
        if (s != NULL) {
            st_buf_append_str(&resp->body, s);
            free(s);
        }
        json_decref(o);
    }
    return ST_OK;
}

int st_resp_json(st_resp *resp, json_t *obj)
{
    char *s;
    int rv;
    if (obj == NULL) {
        return st_resp_error(resp, 500, "out of memory");
    }
    s = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (s == NULL) {
        return st_resp_error(resp, 500, "out of memory");
    }
    resp->status = 200;
    resp->content_type = "application/json";
    st_buf_reset(&resp->body);
    rv = st_buf_append_str(&resp->body, s);
    free(s);
    if (rv != ST_OK) {
        return st_resp_error(resp, 500, "answer over %u bytes", ST_API_MAX_RESPONSE);
    }
    return ST_OK;
}

static bool path_matches(const st_route *r, const char *path)
{
    size_t n = strlen(r->path);
    if (!r->tree) {
        return strcmp(path, r->path) == 0;
    }
    return strncmp(path, r->path, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* Rejects query parameters the route does not know, naming the first. */
static bool params_known(const st_route *r, const st_req *req, st_resp *resp)
{
    for (size_t i = 0; i < req->nparams; i++) {
        bool known = false;
        for (size_t k = 0; r->params != NULL && r->params[k] != NULL; k++) {
            known = known || strcmp(r->params[k], req->params[i].key) == 0;
        }
        if (!known) {
            st_resp_error(resp, 400, "unknown query parameter '%.64s'", req->params[i].key);
            return false;
        }
    }
    return true;
}

/* Bearer tokens: reads need one when tokens are configured, writes always
 * do. Tokens are compared as SHA-256 digests in constant time. */
static bool authorized(const struct st_api_deps *d, const st_route *r, const st_req *req,
                       st_resp *resp)
{
    unsigned char dig[32];
    const char *tok;
    const st_api_token *hit = NULL;
    if (r->scope == ST_SCOPE_NONE || (r->scope == ST_SCOPE_READ && d->ntokens == 0)) {
        return true;
    }
    if (d->ntokens == 0) {
        st_resp_error(resp, 401, "writes need a bearer token: configure api.tokens");
        return false;
    }
    tok = req->authorization;
    if (tok == NULL || strncasecmp(tok, "Bearer ", 7) != 0 || strlen(tok + 7) > 512) {
        st_resp_error(resp, 401, "missing bearer token");
        return false;
    }
    SHA256((const unsigned char *)tok + 7, strlen(tok + 7), dig);
    for (size_t i = 0; i < d->ntokens; i++) {
        /* Every token is compared, so timing does not tell which matched. */
        if (CRYPTO_memcmp(dig, d->tokens[i].sha256, 32) == 0) {
            hit = &d->tokens[i];
        }
    }
    if (hit == NULL) {
        st_resp_error(resp, 401, "unknown bearer token");
        return false;
    }
    if ((r->scope == ST_SCOPE_WRITE && !hit->write) || (r->scope == ST_SCOPE_READ && !hit->read)) {
        st_resp_error(resp, 403, "token '%s' lacks the %s scope", hit->name,
                      r->scope == ST_SCOPE_WRITE ? "write" : "read");
        return false;
    }
    return true;
}

static void dispatch(const struct st_api_deps *d, st_req *req, st_resp *resp)
{
    bool path_seen = false;
    for (const st_route *r = st_routes; r->path != NULL; r++) {
        size_t n = strlen(resp->allow);
        if (!path_matches(r, req->path)) {
            continue;
        }
        path_seen = true;
        if (strstr(resp->allow, r->method) == NULL) {
            snprintf(resp->allow + n, sizeof(resp->allow) - n, "%s%s", n ? ", " : "", r->method);
        }
        if (strcmp(r->method, req->method) != 0 &&
            !(strcmp(req->method, "HEAD") == 0 && strcmp(r->method, "GET") == 0)) {
            continue;
        }
        if (authorized(d, r, req, resp) && params_known(r, req, resp)) {
            r->fn(d, req, resp);
        }
        return;
    }
    if (path_seen) {
        st_resp_error(resp, 405, "method %s not allowed on %s", req->method, req->path);
    } else {
        st_resp_error(resp, 404, "no such path: %.200s", req->path);
    }
}

/* Fills req from the nng request: path, query parameters, body, auth. */
static int read_request(nng_http_req *hr, st_req *req, st_resp *resp)
{
    const char *uri = nng_http_req_get_uri(hr);
    const char *q = strchr(uri, '?');
    size_t plen = q != NULL ? (size_t)(q - uri) : strlen(uri);
    char err[256];
    void *body;
    size_t blen;
    req->method = nng_http_req_get_method(hr);
    if (plen >= sizeof(req->path)) {
        st_resp_error(resp, 414, "path over %zu bytes", sizeof(req->path) - 1);
        return ST_EINVAL;
    }
    memcpy(req->path, uri, plen);
    req->path[plen] = '\0';
    if (q != NULL && st_params_parse(q + 1, req, err, sizeof(err)) != ST_OK) {
        st_resp_error(resp, 400, "%s", err);
        return ST_EINVAL;
    }
    nng_http_req_get_data(hr, &body, &blen);
    req->body = body;
    req->body_len = blen;
    req->authorization = nng_http_req_get_header(hr, "Authorization");
    req->if_none_match = nng_http_req_get_header(hr, "If-None-Match");
    return ST_OK;
}

static void handler_cb(nng_aio *aio)
{
    nng_http_req *hr = nng_aio_get_input(aio, 0);
    nng_http_handler *h = nng_aio_get_input(aio, 1);
    st_api *api = nng_http_handler_get_data(h);
    nng_http_res *res = NULL;
    st_req req;
    st_resp resp = {.status = 200, .content_type = "application/json"};
    pthread_mutex_lock(&api->mu);
    if (api->stopping) {
        pthread_mutex_unlock(&api->mu);
        nng_aio_finish(aio, NNG_ECLOSED);
        return;
    }
    api->inflight++;
    pthread_mutex_unlock(&api->mu);
    memset(&req, 0, sizeof(req));
    st_buf_init(&resp.body, ST_API_MAX_RESPONSE);
    st_metric_add(&api->deps.metrics->http_requests, 1);
    if (read_request(hr, &req, &resp) == ST_OK) {
        dispatch(&api->deps, &req, &resp);
    }
    if (resp.status >= 400) {
        st_metric_add(&api->deps.metrics->http_errors, 1);
    }
    if (nng_http_res_alloc(&res) != 0 || nng_http_res_set_status(res, (uint16_t)resp.status) != 0 ||
        nng_http_res_set_header(res, "Content-Type", resp.content_type) != 0 ||
        nng_http_res_set_header(res, "Cache-Control",
                                resp.cache_control != NULL ? resp.cache_control : "no-store") !=
            0 ||
        (resp.etag != NULL && nng_http_res_set_header(res, "ETag", resp.etag) != 0) ||
        (resp.status == 405 && nng_http_res_set_header(res, "Allow", resp.allow) != 0) ||
        (resp.body.len > 0 && nng_http_res_copy_data(res, resp.body.data, resp.body.len) != 0)) {
        nng_http_res_free(res);
        res = NULL;
    }
    st_params_free(&req);
    st_buf_free(&resp.body);
    if (res == NULL) {
        nng_aio_finish(aio, NNG_ENOMEM);
    } else {
        nng_aio_set_output(aio, 0, res);
        nng_aio_finish(aio, 0);
    }
    pthread_mutex_lock(&api->mu);
    if (--api->inflight == 0) {
        pthread_cond_broadcast(&api->idle);
    }
    pthread_mutex_unlock(&api->mu);
}

static int map_nng(int rv, const char *what, const char *addr)
{
    if (rv == 0) {
        return ST_OK;
    }
    ST_ERROR("api", "%s %s: %s", what, addr, nng_strerror(rv));
    return rv == NNG_ENOMEM ? ST_ENOMEM : ST_ENET;
}

int st_api_start(const struct st_api_opts *opts, const struct st_api_deps *deps, st_api **out)
{
    char url[300];
    nng_url *u = NULL;
    nng_sockaddr sa;
    st_api *api;
    int rv;
    const char *addr = opts->addr != NULL ? opts->addr : "127.0.0.1:9741";
    if (strlen(addr) > 256 || (api = calloc(1, sizeof(*api))) == NULL) {
        return ST_EINVAL;
    }
    api->deps = *deps;
    pthread_mutex_init(&api->mu, NULL);
    pthread_cond_init(&api->idle, NULL);
    if (opts->metrics_cache_ms > 0 &&
        (rv = st_expose_cache_new(opts->metrics_cache_ms, &api->deps.fleet_cache)) != ST_OK) {
        goto fail;
    }
    snprintf(url, sizeof(url), "http://%s", addr);
    if ((rv = map_nng(nng_url_parse(&u, url), "parse", addr)) != ST_OK ||
        (rv = map_nng(nng_http_server_hold(&api->srv, u), "server", addr)) != ST_OK ||
        (rv = map_nng(nng_http_handler_alloc(&api->h, "/", handler_cb), "handler", addr)) !=
            ST_OK) {
        goto fail;
    }
    nng_http_handler_set_method(api->h, NULL);
    nng_http_handler_set_tree(api->h);
    nng_http_handler_collect_body(api->h, true, ST_API_MAX_BODY);
    nng_http_handler_set_data(api->h, api, NULL);
    if ((rv = map_nng(nng_http_server_add_handler(api->srv, api->h), "add handler", addr)) !=
        ST_OK) {
        nng_http_handler_free(api->h);
        goto fail;
    }
    if ((rv = map_nng(nng_http_server_start(api->srv), "listen", addr)) != ST_OK) {
        goto fail;
    }
    if (nng_http_server_get_addr(api->srv, &sa) == 0 && sa.s_family == NNG_AF_INET) {
        api->port = ntohs(sa.s_in.sa_port);
    }
    nng_url_free(u);
    ST_INFO("api", "HTTP API on http://%s", addr);
    *out = api;
    return ST_OK;
fail:
    nng_url_free(u);
    if (api->srv != NULL) {
        nng_http_server_release(api->srv);
    }
    st_expose_cache_free(api->deps.fleet_cache);
    pthread_cond_destroy(&api->idle);
    pthread_mutex_destroy(&api->mu);
    free(api);
    return rv;
}

int st_api_port(st_api *api)
{
    return api->port;
}

void st_api_stop(st_api *api)
{
    if (api == NULL) {
        return;
    }
    pthread_mutex_lock(&api->mu);
    api->stopping = true;
    pthread_mutex_unlock(&api->mu);
    nng_http_server_stop(api->srv);
    pthread_mutex_lock(&api->mu);
    while (api->inflight > 0) {
        pthread_cond_wait(&api->idle, &api->mu);
    }
    pthread_mutex_unlock(&api->mu);
    nng_http_server_release(api->srv);
    st_expose_cache_free(api->deps.fleet_cache);
    pthread_cond_destroy(&api->idle);
    pthread_mutex_destroy(&api->mu);
    free(api);
}

int st_api_tokens_parse(const st_cfg_doc *doc, const st_cfg_node *list, st_api_token *out,
                        size_t *n, st_cfg_error *err)
{
    *n = 0;
    if (list == NULL || st_cfg_is_null(list)) {
        return ST_OK;
    }
    if (st_cfg_node_type(list) != ST_CFG_NODE_SEQ || st_cfg_seq_len(list) > ST_API_MAX_TOKENS) {
        return st_cfg_fail(err, doc, list, "api.tokens", "a list of at most %d tokens",
                           ST_API_MAX_TOKENS);
    }
    for (size_t i = 0; i < st_cfg_seq_len(list); i++) {
        const st_cfg_node *t = st_cfg_seq_at(list, i);
        const char *name = st_cfg_scalar(st_cfg_get(t, "name"));
        const char *hex = st_cfg_scalar(st_cfg_get(t, "sha256"));
        const st_cfg_node *sc = st_cfg_get(t, "scopes");
        st_api_token *tk = &out[*n];
        memset(tk, 0, sizeof(*tk));
        if (st_cfg_node_type(t) != ST_CFG_NODE_MAP || hex == NULL ||
            st_hex_decode(hex, tk->sha256, 32) != ST_OK) {
            return st_cfg_fail(err, doc, t, "api.tokens.sha256",
                               "each token needs sha256: the hex SHA-256 of the token");
        }
        snprintf(tk->name, sizeof(tk->name), "%s", name ? name : "token");
        for (size_t k = 0; k < st_cfg_seq_len(sc); k++) {
            const char *v = st_cfg_scalar(st_cfg_seq_at(sc, k));
            if (v != NULL && strcmp(v, "read") == 0) {
                tk->read = true;
            } else if (v != NULL && strcmp(v, "write") == 0) {
                tk->write = true;
            } else {
                return st_cfg_fail(err, doc, st_cfg_seq_at(sc, k), "api.tokens.scopes",
                                   "scopes are read and write");
            }
        }
        if (sc == NULL) {
            tk->read = true; /* a token without scopes may read */
        }
        (*n)++;
    }
    return ST_OK;
}
