/* nginx: connection and request totals from stub_status (fetched with
 * libcurl: timeouts, no redirects, reply capped) and per-route request
 * counts, latencies and cache results from the access log written with
 * `log_format strata` (see nginx_log.h), tailed across rotations. */
#include "samplers.h"

#include "err.h"
#include "log.h"
#include "nginx_log.h"
#include "timeutil.h"
#include "util.h"
#include "lazylib.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ST_NGINX_URL_MAX 2048
#define ST_NGINX_LOG_PATH_MAX 1024 /* leaves room for the directory scan's names */
#define ST_NGINX_CA_PATH_MAX 1024

typedef struct nginx_cfg {
    char *status_url;
    char *ca_file;
    char *access_log;
    bool from_beginning;
    const st_cfg_node *routes;
    uint64_t max_routes;
    bool collapse_ids;
    int64_t timeout_ms;
    int64_t connect_timeout_ms;
    uint64_t max_read;
    int64_t rotate_wait_ms;
} nginx_cfg;

typedef struct route_cfg {
    char *pattern;
    char *prefix;
    char *name;
} route_cfg;

typedef struct nginx_ctx {
    nginx_cfg cfg;
    bool curl_global; /* curl_global_init succeeded: cleanup owed */
    CURL *curl;
    char curl_err[CURL_ERROR_SIZE];
    char reply[ST_NGINX_STATUS_MAX];
    size_t reply_len;
    bool reply_over;
    st_nginx_tail *tail;
    st_nginx_agg *agg;
    char *data_dir; /* created before the first checkpoint */
    bool dir_ready;
} nginx_ctx;

static const st_cfg_map nginx_rows[] = {
    {ST_CFG_STR, "status_url", NULL, offsetof(nginx_cfg, status_url),
     "stub_status page, http:// or https:// (e.g. http://127.0.0.1:8080/nginx_status)", NULL, 0, 0},
    {ST_CFG_STR, "ca_file", NULL, offsetof(nginx_cfg, ca_file),
     "PEM bundle, absolute path: the only CAs trusted for an https status_url "
     "(default: the system's)",
     NULL, 0, 0},
    {ST_CFG_STR, "access_log", NULL, offsetof(nginx_cfg, access_log),
     "access log written with `log_format strata` (see the README)", NULL, 0, 0},
    {ST_CFG_BOOL, "from_beginning", "false", offsetof(nginx_cfg, from_beginning),
     "with no checkpoint, read the log from its start instead of its end", NULL, 0, 0},
    {ST_CFG_NODE, "routes", NULL, offsetof(nginx_cfg, routes),
     "list of {pattern: /api/users/*, name: /api/users/:id} or {prefix: /static/, name: ...}; "
     "first match wins",
     NULL, 0, 0},
    {ST_CFG_UINT, "max_routes", "200", offsetof(nginx_cfg, max_routes),
     "distinct automatic routes; more count as route=other", NULL, 1, ST_NGINX_MAX_ROUTES},
    {ST_CFG_BOOL, "collapse_ids", "true", offsetof(nginx_cfg, collapse_ids),
     "numeric, hex, UUID and token path segments become :id", NULL, 0, 0},
    {ST_CFG_DURATION, "timeout", "2s", offsetof(nginx_cfg, timeout_ms),
     "stub_status request timeout", NULL, 1, 60000},
    {ST_CFG_DURATION, "connect_timeout", "1s", offsetof(nginx_cfg, connect_timeout_ms),
     "stub_status connect timeout", NULL, 1, 60000},
    {ST_CFG_SIZE, "max_read", "64MiB", offsetof(nginx_cfg, max_read),
     "log bytes read per run at most; the rest is read next run", NULL, 65536,
     1024.0 * 1024 * 1024},
    {ST_CFG_DURATION, "rotate_wait", "10s", offsetof(nginx_cfg, rotate_wait_ms),
     "how long a renamed log is still read (until nginx reopens its logs)", NULL, 0, 3600000},
    {ST_CFG_IGNORE, "interval", NULL, 0, "run every (default: the agent's interval)", NULL, 0, 0},
    {0},
};

static const st_cfg_map route_rows[] = {
    {ST_CFG_STR, "pattern", NULL, offsetof(route_cfg, pattern),
     "glob: * and ? within a segment, a last /** for anything below", NULL, 0, 0},
    {ST_CFG_STR, "prefix", NULL, offsetof(route_cfg, prefix), "a plain path prefix", NULL, 0, 0},
    {ST_CFG_STR, "name", NULL, offsetof(route_cfg, name), "the route label", NULL, 0, 0},
    {0},
};

/* ---- stub_status ---- */

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    nginx_ctx *c = arg;
    size_t len = size * n;
    if (len > sizeof(c->reply) - c->reply_len) {
        c->reply_over = true;
        return 0; /* aborts the transfer */
    }
    memcpy(c->reply + c->reply_len, p, len);
    c->reply_len += len;
    return len;
}

static int fetch_status(nginx_ctx *c)
{
    long code = 0;
    CURLcode cr;
    c->reply_len = 0;
    c->reply_over = false;
    c->curl_err[0] = '\0';
    cr = curl_easy_perform(c->curl);
    if (c->reply_over || cr == CURLE_FILESIZE_EXCEEDED) {
        ST_WARN("nginx", "%s: reply over %d bytes", c->cfg.status_url, ST_NGINX_STATUS_MAX);
        return ST_ETOOBIG;
    }
    if (cr != CURLE_OK) {
        ST_WARN("nginx", "%s: %s", c->cfg.status_url,
                c->curl_err[0] != '\0' ? c->curl_err : curl_easy_strerror(cr));
        return cr == CURLE_OPERATION_TIMEDOUT ? ST_ETIMEOUT : ST_ENET;
    }
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &code);
    if (code != 200) {
        ST_WARN("nginx", "%s: HTTP status %ld", c->cfg.status_url, code);
        return ST_ENET;
    }
    return ST_OK;
}

static int emit_status(st_emit *e, const st_nginx_status *s)
{
    static const struct {
        const char *name;
        size_t off;
        bool total;
    } f[] = {
        {"nginx.connections.active", offsetof(st_nginx_status, active), false},
        {"nginx.connections.reading", offsetof(st_nginx_status, reading), false},
        {"nginx.connections.writing", offsetof(st_nginx_status, writing), false},
        {"nginx.connections.waiting", offsetof(st_nginx_status, waiting), false},
        {"nginx.connections.accepted", offsetof(st_nginx_status, accepts), true},
        {"nginx.connections.handled", offsetof(st_nginx_status, handled), true},
        {"nginx.requests", offsetof(st_nginx_status, requests), true},
    };
    int rv = ST_OK;
    for (size_t i = 0; i < ST_ARRAY_LEN(f); i++) {
        st_series_desc d = {f[i].name, NULL, 0, ST_LAYER_INFRA, "", 0};
        uint64_t v;
        int r;
        memcpy(&v, (const char *)s + f[i].off, sizeof(v));
        r = f[i].total ? st_emit_counter_total(e, &d, (double)v) : st_emit_gauge(e, &d, (double)v);
        rv = rv != ST_OK ? rv : r;
    }
    return rv;
}

static int sample_status(nginx_ctx *c, st_emit *e)
{
    st_series_desc bad = {"nginx.status.malformed", NULL, 0, ST_LAYER_INFRA, "", 0};
    st_nginx_status s;
    int rv = fetch_status(c);
    if (rv != ST_OK) {
        return rv;
    }
    if (st_nginx_status_parse(c->reply, c->reply_len, &s) != ST_OK) {
        /* Counted, not a failure: the server answered, just not as expected. */
        ST_WARN("nginx", "%s: not a stub_status page (%zu bytes)", c->cfg.status_url, c->reply_len);
        return st_emit_counter_add(e, &bad, 1);
    }
    if ((rv = st_emit_counter_add(e, &bad, 0)) != ST_OK) {
        return rv;
    }
    return emit_status(e, &s);
}

/* ---- access log ---- */

static void on_line(void *arg, const char *line, size_t len)
{
    st_nginx_agg_line(arg, line, len);
}

static int emit_tail_stats(st_emit *e, const st_nginx_tail_stats *ts)
{
    st_label lab = {"kind", "rename"};
    st_series_desc d = {"nginx.log.rotations", &lab, 1, ST_LAYER_INFRA, "", 0};
    int rv = st_emit_counter_add(e, &d, (double)ts->renamed);
    if (rv == ST_OK) {
        lab.value = "truncate";
        rv = st_emit_counter_add(e, &d, (double)ts->truncated);
    }
    if (rv == ST_OK) {
        d = (st_series_desc){"nginx.log.bytes", NULL, 0, ST_LAYER_INFRA, "B", 0};
        rv = st_emit_counter_add(e, &d, (double)ts->bytes);
    }
    return rv;
}

/* Lines read are emitted before the checkpoint moves past them, so a
 * restart starts where the emitted lines end. A checkpoint that cannot be
 * written is logged (by the tailer) but not a failure: the lines flow on,
 * only a restart would read them again. */
static int sample_log(nginx_ctx *c, st_emit *e)
{
    st_nginx_tail_stats ts;
    int rv = st_nginx_tail_read(c->tail, st_time_mono_ms(), on_line, c->agg);
    int r = st_nginx_agg_emit(c->agg, e);
    rv = rv != ST_OK ? rv : r;
    st_nginx_tail_stats_take(c->tail, &ts);
    r = emit_tail_stats(e, &ts);
    rv = rv != ST_OK ? rv : r;
    if (!c->dir_ready && c->data_dir != NULL) {
        c->dir_ready = st_mkdir_p(c->data_dir) == ST_OK;
    }
    st_nginx_tail_checkpoint(c->tail);
    return rv;
}

int st_nginx_sample(void *ctx, st_emit *e)
{
    nginx_ctx *c = ctx;
    int rv = ST_OK, r = ST_OK;
    /* The log first: a stub_status that is down must not hold lines back. */
    if (c->tail != NULL) {
        rv = sample_log(c, e);
    }
    if (c->curl != NULL) {
        r = sample_status(c, e);
    }
    return rv != ST_OK ? rv : r;
}

void st_nginx_fini(void *ctx)
{
    nginx_ctx *c = ctx;
    if (c == NULL) {
        return;
    }
    if (c->curl != NULL) {
        curl_easy_cleanup(c->curl);
    }
    if (c->curl_global) {
        curl_global_cleanup();
    }
    st_nginx_tail_free(c->tail);
    st_nginx_agg_free(c->agg);
    st_cfg_release(nginx_rows, &c->cfg);
    free(c->data_dir);
    free(c);
}

/* ---- configuration ---- */

static int init_curl(nginx_ctx *c)
{
    CURL *h;
    CURLcode cr = CURLE_OK;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        return ST_ENOMEM;
    }
    c->curl_global = true;
    if ((h = c->curl = curl_easy_init()) == NULL) {
        return ST_ENOMEM;
    }
    /* stub_status is a local page: no proxies from the environment, no
     * redirects, nothing but http(s), and a reply that fits the buffer. */
    if ((cr = curl_easy_setopt(h, CURLOPT_URL, c->cfg.status_url)) != CURLE_OK ||
        (cr = curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L)) != CURLE_OK ||
        (cr = curl_easy_setopt(h, CURLOPT_PROXY, "")) != CURLE_OK ||
        (cr = curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L)) != CURLE_OK ||
#if LIBCURL_VERSION_NUM >= 0x075500
        (cr = curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https")) != CURLE_OK ||
#else
        (cr = curl_easy_setopt(h, CURLOPT_PROTOCOLS, CURLPROTO_HTTP | CURLPROTO_HTTPS)) !=
            CURLE_OK ||
#endif
        (cr = curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)c->cfg.connect_timeout_ms)) !=
            CURLE_OK ||
        (cr = curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)c->cfg.timeout_ms)) != CURLE_OK ||
        (cr = curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)ST_NGINX_STATUS_MAX)) !=
            CURLE_OK ||
        (cr = curl_easy_setopt(h, CURLOPT_USERAGENT, "strata-agent/" ST_VERSION)) != CURLE_OK ||
        (cr = curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->curl_err)) != CURLE_OK ||
        (cr = curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body)) != CURLE_OK ||
        (cr = curl_easy_setopt(h, CURLOPT_WRITEDATA, c)) != CURLE_OK) {
        ST_ERROR("nginx", "libcurl setup: %s", curl_easy_strerror(cr));
        return ST_EINVAL;
    }
    /* A private CA replaces the system's trust store instead of adding to
     * it: no CA directory next to the bundle. Verification stays on. */
    if (c->cfg.ca_file != NULL &&
        ((cr = curl_easy_setopt(h, CURLOPT_CAINFO, c->cfg.ca_file)) != CURLE_OK ||
         (cr = curl_easy_setopt(h, CURLOPT_CAPATH, NULL)) != CURLE_OK)) {
        ST_ERROR("nginx", "libcurl setup (ca_file): %s", curl_easy_strerror(cr));
        return ST_EINVAL;
    }
    return ST_OK;
}

static int add_route(const st_cfg_doc *doc, const st_cfg_node *node, st_nginx_routes *routes,
                     st_cfg_error *err)
{
    route_cfg rc;
    const char *pat;
    int rv;
    memset(&rc, 0, sizeof(rc));
    if (st_cfg_node_type(node) != ST_CFG_NODE_MAP) {
        return st_cfg_fail(err, doc, node, "routes", "each route must be a mapping");
    }
    if ((rv = st_cfg_bind(doc, node, route_rows, &rc, err)) != ST_OK) {
        goto out;
    }
    pat = rc.pattern != NULL ? rc.pattern : rc.prefix;
    if ((rc.pattern == NULL) == (rc.prefix == NULL)) {
        rv = st_cfg_fail(err, doc, node, "pattern", "give exactly one of pattern and prefix");
    } else if (rc.name == NULL) {
        rv = st_cfg_fail(err, doc, node, "name", "required");
    } else if ((rv = st_nginx_routes_add(routes, pat, rc.prefix != NULL, rc.name)) == ST_EINVAL) {
        rv = st_cfg_fail(err, doc, st_cfg_get(node, rc.pattern != NULL ? "pattern" : "prefix"),
                         rc.pattern != NULL ? "pattern" : "prefix",
                         "'%.64s' must start with '/' and be at most %d bytes, with a name of 1 "
                         "to %d bytes",
                         pat, ST_NGINX_PATTERN_MAX, ST_NGINX_ROUTE_MAX);
    }
out:
    st_cfg_release(route_rows, &rc);
    return rv;
}

static int init_routes(const st_cfg_doc *doc, const st_cfg_node *cfg, nginx_ctx *c,
                       st_nginx_routes *routes, st_cfg_error *err)
{
    const st_cfg_node *list = c->cfg.routes;
    size_t n;
    int rv;
    if (list == NULL || st_cfg_is_null(list)) {
        return ST_OK;
    }
    n = st_cfg_seq_len(list);
    if (st_cfg_node_type(list) != ST_CFG_NODE_SEQ || n > ST_NGINX_MAX_RULES) {
        return st_cfg_fail(err, doc, st_cfg_get(cfg, "routes"), "routes",
                           "want a list of at most %d routes", ST_NGINX_MAX_RULES);
    }
    for (size_t i = 0; i < n; i++) {
        if ((rv = add_route(doc, st_cfg_seq_at(list, i), routes, err)) != ST_OK) {
            return rv;
        }
    }
    return ST_OK;
}

static int init_log(const st_cfg_doc *doc, const st_cfg_node *cfg, const st_sampler_env *env,
                    nginx_ctx *c, st_cfg_error *err)
{
    char ckpt[ST_PROCFS_PATH_MAX];
    char hash[17];
    st_nginx_routes *routes = NULL;
    st_nginx_tail_cfg tc = {c->cfg.access_log, NULL, c->cfg.from_beginning || env->once,
                            env->once ? 0 : c->cfg.max_read, c->cfg.rotate_wait_ms};
    int rv;
    if ((rv = st_nginx_routes_new(c->cfg.max_routes, c->cfg.collapse_ids, &routes)) != ST_OK) {
        return rv;
    }
    if ((rv = init_routes(doc, cfg, c, routes, err)) != ST_OK) {
        st_nginx_routes_free(routes);
        return rv;
    }
    if ((rv = st_nginx_agg_new(routes, &c->agg)) != ST_OK) {
        return rv; /* routes freed by st_nginx_agg_new */
    }
    /* --once reads the whole log and leaves no checkpoint behind. */
    if (!env->once && env->data_dir != NULL) {
        st_nginx_path_hash(c->cfg.access_log, hash);
        if (st_procfs_path(ckpt, sizeof(ckpt), "%s/nginx-%s.ckpt", env->data_dir, hash) != ST_OK) {
            return st_cfg_fail(err, doc, cfg, "access_log", "data_dir path too long");
        }
        tc.ckpt_path = ckpt;
        if ((c->data_dir = strdup(env->data_dir)) == NULL) {
            return ST_ENOMEM;
        }
    }
    return st_nginx_tail_new(&tc, &c->tail);
}

static int check_cfg(const st_cfg_doc *doc, const st_cfg_node *cfg, const nginx_cfg *nc,
                     st_cfg_error *err)
{
    const char *u = nc->status_url;
    const char *l = nc->access_log;
    if (u == NULL && l == NULL) {
        return st_cfg_fail(err, doc, cfg, "status_url", "give status_url, access_log or both");
    }
    if (u != NULL && (strlen(u) > ST_NGINX_URL_MAX ||
                      (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0))) {
        return st_cfg_fail(err, doc, st_cfg_get(cfg, "status_url"), "status_url",
                           "want an http:// or https:// URL of at most %d bytes", ST_NGINX_URL_MAX);
    }
    if (nc->ca_file != NULL && (u == NULL || strncmp(u, "https://", 8) != 0)) {
        return st_cfg_fail(err, doc, st_cfg_get(cfg, "ca_file"), "ca_file",
                           "only for an https:// status_url");
    }
    if (nc->ca_file != NULL &&
        (nc->ca_file[0] != '/' || strlen(nc->ca_file) > ST_NGINX_CA_PATH_MAX)) {
        return st_cfg_fail(err, doc, st_cfg_get(cfg, "ca_file"), "ca_file",
                           "want an absolute path of at most %d bytes", ST_NGINX_CA_PATH_MAX);
    }
    /* Caught here rather than as a TLS error on every run; a reload that
     * names a missing file keeps the running configuration. */
    if (nc->ca_file != NULL && access(nc->ca_file, R_OK) != 0) {
        return st_cfg_fail(err, doc, st_cfg_get(cfg, "ca_file"), "ca_file", "cannot read %s: %s",
                           nc->ca_file, strerror(errno));
    }
    if (l != NULL && (l[0] == '\0' || strlen(l) > ST_NGINX_LOG_PATH_MAX)) {
        return st_cfg_fail(err, doc, st_cfg_get(cfg, "access_log"), "access_log",
                           "want a path of 1 to %d bytes", ST_NGINX_LOG_PATH_MAX);
    }
    if (nc->connect_timeout_ms > nc->timeout_ms) {
        return st_cfg_fail(err, doc, st_cfg_get(cfg, "connect_timeout"), "connect_timeout",
                           "must not exceed timeout");
    }
    return ST_OK;
}

int st_nginx_init(const st_cfg_doc *doc, const st_cfg_node *cfg, const st_sampler_env *env,
                  void **ctx, st_cfg_error *err)
{
    nginx_ctx *c = calloc(1, sizeof(*c));
    char why[ST_LAZY_ERR_MAX];
    int rv;
    if (c == NULL) {
        return ST_ENOMEM;
    }
    if ((rv = st_cfg_bind(doc, cfg, nginx_rows, &c->cfg, err)) != ST_OK ||
        (rv = check_cfg(doc, cfg, &c->cfg, err)) != ST_OK) {
        goto out;
    }
    if (c->cfg.access_log != NULL && (rv = init_log(doc, cfg, env, c, err)) != ST_OK) {
        goto out;
    }
    if (c->cfg.status_url != NULL && st_curl_load(why, sizeof(why)) != ST_OK) {
        rv = st_cfg_fail(err, doc, st_cfg_get(cfg, "status_url"), "status_url", "%s", why);
        goto out;
    }
    if (c->cfg.status_url != NULL && (rv = init_curl(c)) != ST_OK) {
        goto out;
    }
    *ctx = c;
    c = NULL;
out:
    st_nginx_fini(c);
    return rv;
}

const st_sampler_def st_sampler_nginx = ST_SAMPLER_ROW(nginx);
