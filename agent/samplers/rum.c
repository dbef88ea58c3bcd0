/* rum: an HTTP endpoint for browser beacons on nng's HTTP server. Each
 * beacon (rum_beacon.h) is checked whole on nng's thread and folded under a
 * mutex into the active one of two aggregates: per-page web-vital sketches
 * and browser cache hits and misses. sample() swaps the aggregates and
 * emits the one it took whole. CORS: preflights and posts are answered for
 * allowed origins only. */
#include "rum_beacon.h"
#include "samplers.h"

#include "err.h"
#include "log.h"
#include "sketch.h"
#include "util.h"

#include <jansson.h>
#include <nng/nng.h>
#include <nng/supplemental/http/http.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ST_RUM_MAX_ORIGINS 64
#define ST_RUM_MAX_ORIGIN 256 /* scheme://host:port */
#define ST_RUM_MAX_PATH 256
#define ST_RUM_MAX_LISTEN 300
#define ST_RUM_MAX_PAGES 10000
#define ST_RUM_BODY_MIN 1024
#define ST_RUM_BODY_MAX (1u << 20)
/* nng reads bodies up to this many times max_body so a larger one can be
 * answered 413 and counted; past it nng itself answers 400. */
#define ST_RUM_COLLECT_FACTOR 4

enum reason { R_ORIGIN, R_METHOD, R_MEDIA_TYPE, R_TOO_LARGE, R_EMPTY, R_JSON, R_INVALID, R_N };

static const char *const reason_names[R_N] = {"origin", "method", "media_type", "too_large",
                                              "empty",  "json",   "invalid"};

typedef struct rum_cfg {
    char *listen;
    char *path;
    st_cfg_strlist origins;
    uint64_t max_body;
    uint64_t max_pages;
} rum_cfg;

static const st_cfg_map rum_rows[] = {
    {ST_CFG_STR, "listen", "127.0.0.1:9742", offsetof(rum_cfg, listen),
     "HTTP address: host:port or [v6]:port", NULL, 0, 0},
    {ST_CFG_STR, "path", "/rum", offsetof(rum_cfg, path), "where beacons are posted", NULL, 0, 0},
    {ST_CFG_STRLIST, "allowed_origins", NULL, offsetof(rum_cfg, origins),
     "origins (https://shop.example.com) allowed to post; empty or \"*\": any", NULL, 0, 0},
    {ST_CFG_SIZE, "max_body", "64KiB", offsetof(rum_cfg, max_body),
     "largest beacon; a larger one is answered 413", NULL, ST_RUM_BODY_MIN, ST_RUM_BODY_MAX},
    {ST_CFG_UINT, "max_pages", "200", offsetof(rum_cfg, max_pages),
     "distinct page labels; later pages count as \"other\"", NULL, 1, ST_RUM_MAX_PAGES},
    {ST_CFG_IGNORE, "interval", NULL, 0, "run every (default: the agent's interval)", NULL, 0, 0},
    {0},
};

/* One interval of beacons. Sketches are indexed page * NVITALS + vital and
 * allocated on first use; they are kept (emptied) across swaps. */
typedef struct rum_agg {
    st_sketch **sk;
    uint64_t hit;
    uint64_t miss;
    uint64_t opaque;
    uint64_t beacons;
    uint64_t dropped; /* samples the aggregate could not take (out of memory) */
    uint64_t rejected[R_N];
} rum_agg;

/* What the HTTP handler and the sampler share. The handler's reference is
 * dropped by nng when it finalises the handler, after any callback still
 * running, so neither side frees it under the other. */
typedef struct rum_shared {
    atomic_int refs;
    pthread_mutex_t mu;
    size_t max_body;
    char **origins; /* NULL: any origin */
    size_t norigins;
    /* Under mu. Page names are written once, before npages counts them. */
    rum_agg agg[2];
    rum_agg *active;
    char (*pages)[ST_RUM_MAX_PAGE + 1]; /* max_pages + 1 ("other") */
    size_t npages;
    size_t max_pages;
    uint32_t *index; /* open addressing: page + 1, 0 empty */
    size_t nindex;
} rum_shared;

typedef struct rum_ctx {
    rum_cfg cfg;
    char url[ST_RUM_MAX_LISTEN + 16];
    rum_shared *sh;
    nng_http_server *srv;
    nng_http_handler *h;
    bool running;
    uint64_t fold_dropped; /* samples the fold refused, reported next run */
} rum_ctx;

/* ---- shared state ---- */

static void agg_fini(rum_agg *a, size_t nsk)
{
    for (size_t i = 0; a->sk != NULL && i < nsk; i++) {
        st_sketch_free(a->sk[i]);
    }
    free(a->sk);
}

static void shared_release(void *arg)
{
    rum_shared *sh = arg;
    if (sh == NULL || atomic_fetch_sub(&sh->refs, 1) != 1) {
        return;
    }
    for (int i = 0; i < 2; i++) {
        agg_fini(&sh->agg[i], (sh->max_pages + 1) * ST_RUM_NVITALS);
    }
    for (size_t i = 0; i < sh->norigins; i++) {
        free(sh->origins[i]);
    }
    free(sh->origins);
    free(sh->pages);
    free(sh->index);
    pthread_mutex_destroy(&sh->mu);
    free(sh);
}

static int shared_new(const rum_cfg *cfg, rum_shared **out)
{
    rum_shared *sh = calloc(1, sizeof(*sh));
    size_t nsk = ((size_t)cfg->max_pages + 1) * ST_RUM_NVITALS;
    if (sh == NULL) {
        return ST_ENOMEM;
    }
    atomic_init(&sh->refs, 1);
    pthread_mutex_init(&sh->mu, NULL);
    sh->max_body = (size_t)cfg->max_body;
    sh->max_pages = (size_t)cfg->max_pages;
    sh->nindex = 16;
    while (sh->nindex < 2 * (sh->max_pages + 1)) {
        sh->nindex *= 2;
    }
    sh->pages = calloc(sh->max_pages + 1, sizeof(*sh->pages));
    sh->index = calloc(sh->nindex, sizeof(*sh->index));
    sh->agg[0].sk = calloc(nsk, sizeof(st_sketch *));
    sh->agg[1].sk = calloc(nsk, sizeof(st_sketch *));
    sh->active = &sh->agg[0];
    if (sh->pages == NULL || sh->index == NULL || sh->agg[0].sk == NULL || sh->agg[1].sk == NULL) {
        shared_release(sh);
        return ST_ENOMEM;
    }
    /* The last page slot is "other", for pages past the cap. */
    snprintf(sh->pages[sh->max_pages], sizeof(sh->pages[0]), "other");
    *out = sh;
    return ST_OK;
}

static uint64_t hash_page(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s != '\0'; s++) {
        h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    }
    return h;
}

/* The page's slot; new pages get one until max_pages, then "other".
 * Pages are kept for the agent's life so their label set stays stable.
 * Under mu. */
static size_t page_slot(rum_shared *sh, const char *page)
{
    size_t j = hash_page(page) & (sh->nindex - 1);
    for (; sh->index[j] != 0; j = (j + 1) & (sh->nindex - 1)) {
        if (strcmp(sh->pages[sh->index[j] - 1], page) == 0) {
            return sh->index[j] - 1;
        }
    }
    if (sh->npages >= sh->max_pages || strcmp(page, "other") == 0) {
        return sh->max_pages;
    }
    snprintf(sh->pages[sh->npages], sizeof(sh->pages[0]), "%s", page);
    sh->index[j] = (uint32_t)(++sh->npages);
    return sh->npages - 1;
}

/* Folds a checked beacon into the active aggregate. Under mu. */
static void fold_beacon(rum_shared *sh, const st_rum_entry *e, size_t n)
{
    rum_agg *a = sh->active;
    for (size_t i = 0; i < n; i++) {
        st_sketch **sk;
        if (e[i].kind == ST_RUM_RESOURCE) {
            a->hit += e[i].cache == ST_RUM_HIT;
            a->miss += e[i].cache == ST_RUM_MISS;
            a->opaque += e[i].cache == ST_RUM_OPAQUE;
            continue;
        }
        sk = &a->sk[page_slot(sh, e[i].page) * ST_RUM_NVITALS + e[i].vital];
        if ((*sk == NULL && st_sketch_new(ST_SKETCH_ALPHA, sk) != ST_OK) ||
            st_sketch_insert(*sk, e[i].value) != ST_OK) {
            a->dropped++;
        }
    }
    a->beacons++;
}

static void count_rejected(rum_shared *sh, enum reason r)
{
    pthread_mutex_lock(&sh->mu);
    sh->active->rejected[r]++;
    pthread_mutex_unlock(&sh->mu);
}

/* ---- HTTP ---- */

/* An origin is echoed back only when allowed; one longer than any origin
 * we could allow is not. */
static bool origin_allowed(const rum_shared *sh, const char *origin)
{
    if (origin == NULL) {
        return true;
    }
    if (strlen(origin) > ST_RUM_MAX_ORIGIN) {
        return false;
    }
    if (sh->origins == NULL) {
        return true;
    }
    for (size_t i = 0; i < sh->norigins; i++) {
        if (strcasecmp(origin, sh->origins[i]) == 0) {
            return true;
        }
    }
    return false;
}

/* sendBeacon posts text/plain (a string) or the Blob's type; both carry
 * JSON here. Parameters (;charset=...) do not matter. */
static bool media_type_ok(const char *ct)
{
    size_t n;
    if (ct == NULL) {
        return true;
    }
    n = strcspn(ct, "; \t");
    return (n == 16 && strncasecmp(ct, "application/json", n) == 0) ||
           (n == 10 && strncasecmp(ct, "text/plain", n) == 0);
}

typedef struct reply {
    uint16_t status;
    const char *origin; /* echoed in Access-Control-Allow-Origin when set */
    bool preflight;
    char error[256];
} reply;

static int set_error_body(nng_http_res *res, const char *error)
{
    json_t *j = json_pack("{s:s}", "error", error);
    char *text = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
    int rv = NNG_ENOMEM;
    if (text != NULL &&
        (rv = nng_http_res_set_header(res, "Content-Type", "application/json")) == 0) {
        rv = nng_http_res_copy_data(res, text, strlen(text));
    }
    free(text);
    json_decref(j);
    return rv;
}

static void respond(nng_aio *aio, const reply *r)
{
    nng_http_res *res = NULL;
    int rv = nng_http_res_alloc(&res);
    if (rv == 0) {
        rv = nng_http_res_set_status(res, r->status);
    }
    /* nng 1.5 has no reason phrase for these two. */
    if (rv == 0 && r->status == NNG_HTTP_STATUS_PAYLOAD_TOO_LARGE) {
        rv = nng_http_res_set_reason(res, "Payload Too Large");
    } else if (rv == 0 && r->status == NNG_HTTP_STATUS_UNSUPPORTED_MEDIA_TYPE) {
        rv = nng_http_res_set_reason(res, "Unsupported Media Type");
    }
    if (rv == 0 && r->origin != NULL) {
        rv = nng_http_res_set_header(res, "Access-Control-Allow-Origin", r->origin);
        rv = rv != 0 ? rv : nng_http_res_set_header(res, "Vary", "Origin");
    }
    if (rv == 0 && r->preflight && r->origin != NULL) {
        rv = nng_http_res_set_header(res, "Access-Control-Allow-Methods", "POST, OPTIONS");
        rv = rv != 0 ? rv
                     : nng_http_res_set_header(res, "Access-Control-Allow-Headers", "Content-Type");
        rv = rv != 0 ? rv : nng_http_res_set_header(res, "Access-Control-Max-Age", "86400");
    }
    if (rv == 0 && r->status == NNG_HTTP_STATUS_METHOD_NOT_ALLOWED) {
        rv = nng_http_res_set_header(res, "Allow", "POST, OPTIONS");
    }
    if (rv == 0 && r->error[0] != '\0') {
        rv = set_error_body(res, r->error);
    }
    if (rv != 0) {
        if (res != NULL) {
            nng_http_res_free(res);
        }
        nng_aio_finish(aio, rv); /* nng closes the connection */
        return;
    }
    nng_aio_set_output(aio, 0, res);
    nng_aio_finish(aio, 0);
}

/* Checks and folds one POST; fills r and says which reason to count. */
static int handle_post(rum_shared *sh, nng_http_req *req, reply *r, enum reason *why)
{
    void *body = NULL;
    size_t len = 0;
    st_rum_entry *ents = NULL;
    size_t n = 0;
    int rv;
    if (!media_type_ok(nng_http_req_get_header(req, "Content-Type"))) {
        *why = R_MEDIA_TYPE;
        r->status = NNG_HTTP_STATUS_UNSUPPORTED_MEDIA_TYPE;
        snprintf(r->error, sizeof(r->error), "Content-Type must be application/json or text/plain");
        return ST_EINVAL;
    }
    nng_http_req_get_data(req, &body, &len);
    if (len > sh->max_body) {
        *why = R_TOO_LARGE;
        r->status = NNG_HTTP_STATUS_PAYLOAD_TOO_LARGE;
        snprintf(r->error, sizeof(r->error), "body over %zu bytes", sh->max_body);
        return ST_ETOOBIG;
    }
    if (len == 0) {
        *why = R_EMPTY;
        r->status = NNG_HTTP_STATUS_BAD_REQUEST;
        snprintf(r->error, sizeof(r->error), "empty body: want a JSON beacon");
        return ST_EINVAL;
    }
    rv = st_rum_beacon_parse(body, len, &ents, &n, r->error, sizeof(r->error));
    if (rv != ST_OK) {
        *why = rv == ST_EPARSE ? R_JSON : R_INVALID;
        r->status =
            rv == ST_ENOMEM ? NNG_HTTP_STATUS_INTERNAL_SERVER_ERROR : NNG_HTTP_STATUS_BAD_REQUEST;
        return rv;
    }
    pthread_mutex_lock(&sh->mu);
    fold_beacon(sh, ents, n);
    pthread_mutex_unlock(&sh->mu);
    free(ents);
    r->status = NNG_HTTP_STATUS_NO_CONTENT;
    return ST_OK;
}

/* nng's handler: runs on nng's threads, several at once. */
static void on_request(nng_aio *aio)
{
    nng_http_req *req = nng_aio_get_input(aio, 0);
    rum_shared *sh = nng_http_handler_get_data(nng_aio_get_input(aio, 1));
    const char *method = nng_http_req_get_method(req);
    const char *origin = nng_http_req_get_header(req, "Origin");
    bool allowed = origin_allowed(sh, origin);
    reply r = {NNG_HTTP_STATUS_NO_CONTENT, allowed ? origin : NULL, false, ""};
    enum reason why = R_INVALID;
    if (strcmp(method, "OPTIONS") == 0) {
        r.preflight = true;
        if (!allowed) {
            r.status = NNG_HTTP_STATUS_FORBIDDEN;
            snprintf(r.error, sizeof(r.error), "origin not allowed");
        }
        respond(aio, &r);
        return;
    }
    if (strcmp(method, "POST") != 0) {
        why = R_METHOD;
        r.status = NNG_HTTP_STATUS_METHOD_NOT_ALLOWED;
        snprintf(r.error, sizeof(r.error), "beacons are POSTed");
    } else if (!allowed) {
        why = R_ORIGIN;
        r.status = NNG_HTTP_STATUS_FORBIDDEN;
        snprintf(r.error, sizeof(r.error), "origin not allowed");
    } else if (handle_post(sh, req, &r, &why) == ST_OK) {
        respond(aio, &r);
        return;
    }
    count_rejected(sh, why);
    respond(aio, &r);
}

static int nng_to_st(int nrv)
{
    switch (nrv) {
    case NNG_ENOMEM:
        return ST_ENOMEM;
    case NNG_EADDRINUSE:
        return ST_EEXIST;
    case NNG_EPERM:
        return ST_EPERM;
    case NNG_EADDRINVAL:
    case NNG_EINVAL:
        return ST_EINVAL;
    default:
        return ST_ENET;
    }
}

/* Takes the server down: no new callbacks; the handler's reference on the
 * shared state goes when nng finalises the handler. */
static void stop_server(rum_ctx *c)
{
    if (c->srv == NULL) {
        return;
    }
    nng_http_server_stop(c->srv);
    if (c->h != NULL && nng_http_server_del_handler(c->srv, c->h) == 0) {
        nng_http_handler_free(c->h);
    }
    nng_http_server_release(c->srv);
    c->srv = NULL;
    c->h = NULL;
    c->running = false;
}

/* Starts the server on the first sample(): a busy port is retried with the
 * sampler's backoff, and --check-config does not need the port. */
static int start(rum_ctx *c)
{
    nng_url *url = NULL;
    nng_http_handler *h = NULL;
    int nrv;
    if ((nrv = nng_url_parse(&url, c->url)) != 0 ||
        (nrv = nng_http_server_hold(&c->srv, url)) != 0 ||
        (nrv = nng_http_handler_alloc(&h, c->cfg.path, on_request)) != 0 ||
        (nrv = nng_http_handler_set_method(h, NULL)) != 0 ||
        (nrv = nng_http_handler_collect_body(h, true, c->cfg.max_body * ST_RUM_COLLECT_FACTOR)) !=
            0) {
        goto out;
    }
    atomic_fetch_add(&c->sh->refs, 1); /* dropped by nng through shared_release */
    if ((nrv = nng_http_handler_set_data(h, c->sh, shared_release)) != 0) {
        atomic_fetch_sub(&c->sh->refs, 1);
        goto out;
    }
    if ((nrv = nng_http_server_add_handler(c->srv, h)) != 0) {
        goto out;
    }
    c->h = h; /* the server holds it now; stop_server takes it back */
    h = NULL;
    if ((nrv = nng_http_server_start(c->srv)) != 0) {
        goto out;
    }
    c->running = true;
    ST_INFO("rum", "listening on %s%s", c->url, c->cfg.path);
out:
    nng_url_free(url);
    if (nrv != 0) {
        ST_ERROR("rum", "cannot listen on %s%s: %s", c->url, c->cfg.path, nng_strerror(nrv));
        if (h != NULL) {
            nng_http_handler_free(h);
        }
        stop_server(c);
    }
    return nrv == 0 ? ST_OK : nng_to_st(nrv);
}

/* ---- emitting ---- */

static int emit_vitals(rum_ctx *c, st_emit *e, rum_agg *a, size_t npages)
{
    int rv = ST_OK;
    for (size_t p = 0; p <= c->sh->max_pages; p++) {
        st_label lab = {"page", c->sh->pages[p]};
        if (p >= npages && p != c->sh->max_pages) {
            continue;
        }
        for (int v = 0; v < ST_RUM_NVITALS; v++) {
            st_sketch *sk = a->sk[p * ST_RUM_NVITALS + (size_t)v];
            st_series_desc d = {st_rum_vital_series((enum st_rum_vital)v),
                                &lab,
                                1,
                                ST_LAYER_FRONTEND,
                                v == ST_RUM_CLS ? "" : "s",
                                0};
            int r;
            if (sk == NULL || st_sketch_count(sk) == 0) {
                continue;
            }
            if ((r = st_emit_sketch(e, &d, sk)) != ST_OK) {
                c->fold_dropped += st_sketch_count(sk);
                rv = rv == ST_OK ? r : rv;
            }
            st_sketch_reset(sk);
        }
    }
    return rv;
}

static int emit_counter(rum_ctx *c, st_emit *e, const char *name, const st_label *lab, size_t nl,
                        uint64_t v, st_layer layer)
{
    st_series_desc d = {name, lab, nl, layer, "", 0};
    int rv = st_emit_counter_add(e, &d, (double)v);
    if (rv != ST_OK) {
        c->fold_dropped += v;
    }
    return rv;
}

static int emit_counts(rum_ctx *c, st_emit *e, rum_agg *a)
{
    st_label hit[2] = {{"cache", "browser"}, {"result", "hit"}};
    st_label miss[2] = {{"cache", "browser"}, {"result", "miss"}};
    uint64_t dropped = a->dropped + c->fold_dropped;
    int rv = ST_OK;
    int r;
    c->fold_dropped = 0;
    if (a->hit > 0 && (r = emit_counter(c, e, "cache.requests", hit, 2, a->hit, ST_LAYER_INFRA))) {
        rv = r;
    }
    if (a->miss > 0 &&
        (r = emit_counter(c, e, "cache.requests", miss, 2, a->miss, ST_LAYER_INFRA))) {
        rv = r;
    }
    for (int i = 0; i < R_N; i++) {
        st_label lab = {"reason", reason_names[i]};
        if (a->rejected[i] > 0 &&
            (r = emit_counter(c, e, "rum.rejected", &lab, 1, a->rejected[i], ST_LAYER_INFRA))) {
            rv = r;
        }
    }
    if (a->opaque > 0 &&
        (r = emit_counter(c, e, "rum.resources.opaque", NULL, 0, a->opaque, ST_LAYER_INFRA))) {
        rv = r;
    }
    if ((r = emit_counter(c, e, "rum.beacons", NULL, 0, a->beacons, ST_LAYER_INFRA)) != ST_OK ||
        (r = emit_counter(c, e, "rum.dropped", NULL, 0, dropped, ST_LAYER_INFRA)) != ST_OK) {
        rv = r;
    }
    a->hit = a->miss = a->opaque = a->beacons = a->dropped = 0;
    memset(a->rejected, 0, sizeof(a->rejected));
    return rv;
}

int st_rum_sample(void *ctx, st_emit *e)
{
    rum_ctx *c = ctx;
    rum_agg *a;
    size_t npages;
    int rv;
    int r;
    if (!c->running && (rv = start(c)) != ST_OK) {
        return rv;
    }
    pthread_mutex_lock(&c->sh->mu);
    a = c->sh->active;
    c->sh->active = a == &c->sh->agg[0] ? &c->sh->agg[1] : &c->sh->agg[0];
    npages = c->sh->npages;
    pthread_mutex_unlock(&c->sh->mu);
    /* Everything taken is emitted; what the fold refuses is counted. */
    rv = emit_vitals(c, e, a, npages);
    r = emit_counts(c, e, a);
    return rv != ST_OK ? rv : r;
}

/* ---- configuration and life cycle ---- */

void st_rum_fini(void *ctx)
{
    rum_ctx *c = ctx;
    if (c == NULL) {
        return;
    }
    stop_server(c);
    shared_release(c->sh);
    st_cfg_release(rum_rows, &c->cfg);
    free(c);
}

/* "*" or scheme://host[:port] as browsers send it: no path, no slash. */
static bool origin_ok(const char *o)
{
    const char *host;
    size_t n = strlen(o);
    if (strcmp(o, "*") == 0) {
        return true;
    }
    if (n > ST_RUM_MAX_ORIGIN ||
        (strncmp(o, "http://", 7) != 0 && strncmp(o, "https://", 8) != 0)) {
        return false;
    }
    host = strstr(o, "://") + 3;
    return host[0] != '\0' && strpbrk(host, "/?# \t") == NULL;
}

static int init_origins(rum_ctx *c, const st_cfg_doc *doc, const st_cfg_node *cfg,
                        st_cfg_error *err)
{
    const st_cfg_strlist *l = &c->cfg.origins;
    if (l->n > ST_RUM_MAX_ORIGINS) {
        return st_cfg_fail(err, doc, st_cfg_get(cfg, "allowed_origins"), "allowed_origins",
                           "at most %d origins", ST_RUM_MAX_ORIGINS);
    }
    for (size_t i = 0; i < l->n; i++) {
        if (!origin_ok(l->v[i])) {
            return st_cfg_fail(err, doc, st_cfg_get(cfg, "allowed_origins"), "allowed_origins",
                               "'%s' is not \"*\" or an origin like https://shop.example.com",
                               l->v[i]);
        }
        if (strcmp(l->v[i], "*") == 0) {
            return ST_OK; /* any origin: sh->origins stays NULL */
        }
    }
    /* The shared state keeps its own copies: nng's threads may read them
     * after the sampler's configuration is gone. */
    if (l->n > 0 && (c->sh->origins = calloc(l->n, sizeof(char *))) == NULL) {
        return ST_ENOMEM;
    }
    for (size_t i = 0; i < l->n; i++) {
        if ((c->sh->origins[i] = strdup(l->v[i])) == NULL) {
            return ST_ENOMEM;
        }
        c->sh->norigins++;
    }
    return ST_OK;
}

/* host:port or [v6]:port with a port from 1 to 65535. */
static bool listen_ok(const char *l)
{
    const char *colon = strrchr(l, ':');
    const char *close = strrchr(l, ']');
    uint64_t port;
    if (colon == NULL || colon == l || strlen(l) > ST_RUM_MAX_LISTEN ||
        st_parse_u64(colon + 1, &port) != ST_OK || port == 0 || port > 65535) {
        return false;
    }
    if (l[0] == '[') {
        return close != NULL && close + 1 == colon && close > l + 1;
    }
    return close == NULL && memchr(l, ':', (size_t)(colon - l)) == NULL;
}

static int check_listen_path(rum_ctx *c, const st_cfg_doc *doc, const st_cfg_node *cfg,
                             st_cfg_error *err)
{
    const char *l = c->cfg.listen != NULL ? c->cfg.listen : "";
    const char *p = c->cfg.path != NULL ? c->cfg.path : "";
    nng_url *u = NULL;
    bool ok = listen_ok(l);
    if (ok) {
        snprintf(c->url, sizeof(c->url), "http://%s", l);
        ok = nng_url_parse(&u, c->url) == 0;
        nng_url_free(u);
    }
    if (!ok) {
        return st_cfg_fail(err, doc, st_cfg_get(cfg, "listen"), "listen",
                           "want host:port or [v6]:port, got '%s'", l);
    }
    if (p[0] != '/' || strlen(p) > ST_RUM_MAX_PATH || strpbrk(p, "?# \t\r\n") != NULL) {
        return st_cfg_fail(err, doc, st_cfg_get(cfg, "path"), "path",
                           "want an absolute path like /rum (at most %d bytes), got '%s'",
                           ST_RUM_MAX_PATH, p);
    }
    return ST_OK;
}

int st_rum_init(const st_cfg_doc *doc, const st_cfg_node *cfg, const st_sampler_env *env,
                void **ctx, st_cfg_error *err)
{
    rum_ctx *c = calloc(1, sizeof(*c));
    int rv;
    (void)env;
    if (c == NULL) {
        return ST_ENOMEM;
    }
    if ((rv = st_cfg_bind(doc, cfg, rum_rows, &c->cfg, err)) != ST_OK ||
        (rv = check_listen_path(c, doc, cfg, err)) != ST_OK ||
        (rv = shared_new(&c->cfg, &c->sh)) != ST_OK ||
        (rv = init_origins(c, doc, cfg, err)) != ST_OK) {
        goto out;
    }
    *ctx = c;
    c = NULL;
out:
    st_rum_fini(c);
    return rv;
}

const st_sampler_def st_sampler_rum = ST_SAMPLER_ROW(rum);
