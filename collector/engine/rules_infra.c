/* Infrastructure rules: cache hit ratios per cache type (browser; CDN and
 * edge caches; API caches) below their thresholds, with the routes that
 * miss most and the configuration to change for that kind of cache. */
#include "rules_checks.h"

#include "err.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOP_ROUTES 5
#define API_TTL_S 300
#define MATCH_MAX (ST_RULES_LABEL_MAX + 16)

/* Configuration to change, per cache software. */
static const struct {
    const char *cache;
    const char *config;
} configs[] = {
    {"nginx", "proxy_cache_valid 200 301 10m;\n"
              "proxy_cache_key $scheme$host$uri$is_args$args;\n"
              "proxy_ignore_headers Set-Cookie;"},
    {"varnish", "sub vcl_backend_response {\n"
                "    if (beresp.status == 200 || beresp.status == 301) {\n"
                "        set beresp.ttl = 10m;\n"
                "        set beresp.grace = 1h;\n"
                "    }\n"
                "}"},
    {"cdn", "Cache-Control: public, max-age=60, s-maxage=600, stale-while-revalidate=60\n"
            "# nginx at the origin: add_header Cache-Control \"public, max-age=60, "
            "s-maxage=600, stale-while-revalidate=60\" always;"},
    {"browser", "# fingerprinted assets (app.3f9a1c.js):\n"
                "Cache-Control: public, max-age=31536000, immutable\n"
                "# HTML and API reads: revalidate cheaply\n"
                "Cache-Control: public, max-age=300\n"
                "ETag: on\n"
                "# nginx:\n"
                "location ~* \\.(js|css|png|jpg|svg|woff2)$ { add_header Cache-Control "
                "\"public, max-age=31536000, immutable\"; }"},
    {"redis", "const v = await redis.get(key);\n"
              "if (v !== null) return JSON.parse(v);\n"
              "const fresh = await load(params);\n"
              "await redis.set(key, JSON.stringify(fresh), 'EX', 300);\n"
              "return fresh;"},
    {"memcached", "v = mc.get(key)\n"
                  "if v is None:\n"
                  "    v = load(params)\n"
                  "    mc.set(key, v, time=300)\n"
                  "return v"},
    {"api", "Cache-Control: private, max-age=300\n"
            "# server side, cache-aside: GET key; on a miss load, SET key value EX 300"},
};

/* One cache group of a rule: matched by a regular expression on cache. */
typedef struct group {
    const char *match; /* cache=~... */
    const char *what;  /* "browser", "CDN/edge", "API" */
} group;

typedef struct route {
    const st_ans_row *item;
    double ratio;
    double requests;
} route;

static int route_cmp(const void *a, const void *b)
{
    const route *x = a;
    const route *y = b;
    if (x->ratio != y->ratio) {
        return x->ratio < y->ratio ? -1 : 1;
    }
    return x->requests > y->requests ? -1 : (x->requests < y->requests ? 1 : 0);
}

static const char *config_for(const char *cache)
{
    for (size_t i = 0; i < ST_ARRAY_LEN(configs); i++) {
        if (strcmp(configs[i].cache, cache) == 0) {
            return configs[i].config;
        }
    }
    return configs[ST_ARRAY_LEN(configs) - 1].config;
}

/* The routes of one cache with the lowest hit ratios, as
 * [{route, hit_ratio, requests, traffic_share}]. */
static int worst_routes(st_eng *e, const char *cache, double total, json_t **out)
{
    char m[MATCH_MAX];
    const char *match[2] = {m, "result=hit"};
    st_answer *ratio = NULL;
    st_answer *sum = NULL;
    route *rt = NULL;
    size_t n = 0;
    int64_t w = st_eng_window(e);
    int rv;
    snprintf(m, sizeof(m), "cache=%s", cache);
    *out = json_array();
    rv = st_eng_query(e, "cache.requests", "ratio", "route", match, 2, w, &ratio);
    rv = rv ? rv : st_eng_query(e, "cache.requests", "sum", "route", match, 1, w, &sum);
    if (rv == ST_OK && (rt = calloc(sum->n + 1, sizeof(*rt))) == NULL) {
        rv = ST_ENOMEM;
    }
    for (size_t i = 0; rv == ST_OK && i < sum->n; i++) {
        const st_ans_row *item = &sum->rows[i];
        double v = st_rules_lookup(ratio, item, "route");
        if (st_ans_label(item, "route")[0] != '\0') {
            rt[n++] = (route){item, isfinite(v) ? v : 0, st_ans_value(item)};
        }
    }
    if (n > 1) {
        qsort(rt, n, sizeof(*rt), route_cmp);
    }
    for (size_t i = 0; i < n && i < TOP_ROUTES; i++) {
        json_array_append_new(
            *out, json_pack("{s:s,s:f,s:f,s:f}", "route", st_ans_label(rt[i].item, "route"),
                            "hit_ratio", rt[i].ratio, "requests", rt[i].requests, "traffic_share",
                            total > 0 ? rt[i].requests / total : 0));
    }
    free(rt);
    st_answer_unref(ratio);
    st_answer_unref(sum);
    return rv;
}

static void routes_text(const json_t *routes, char *buf, size_t cap)
{
    st_rbuf b;
    st_rbuf_init(&b, buf, cap);
    for (size_t i = 0; i < json_array_size(routes); i++) {
        const json_t *o = json_array_get(routes, i);
        st_rbuf_addf(&b, "%s%s (%.0f%% hit, %.0f%% of traffic)",
                     i ? ", " : "; worst routes: ", json_string_value(json_object_get(o, "route")),
                     json_number_value(json_object_get(o, "hit_ratio")) * 100,
                     json_number_value(json_object_get(o, "traffic_share")) * 100);
    }
}

static json_t *cache_impl(const st_rule *r, const char *cache, json_t *routes, double evict,
                          double used)
{
    json_t *impl =
        json_pack("{s:s,s:s,s:O}", "cache", cache, "config", config_for(cache), "routes", routes);
    if (strcmp(r->optimization, "API_CACHING") == 0) {
        json_object_set_new(impl, "pattern", json_string("cache-aside"));
        json_object_set_new(impl, "ttl_s", json_integer(API_TTL_S));
    }
    if (evict > 0 && used > 0 && strcmp(cache, "redis") == 0) {
        char cmd[160];
        snprintf(cmd, sizeof(cmd),
                 "redis-cli CONFIG SET maxmemory %.0f && redis-cli CONFIG SET maxmemory-policy "
                 "allkeys-lru",
                 used * 2);
        json_object_set_new(impl, "memory", json_string(cmd));
    } else if (evict > 0 && used > 0 && strcmp(cache, "memcached") == 0) {
        char cmd[96];
        snprintf(cmd, sizeof(cmd), "memcached -m %.0f (twice the memory it uses now)",
                 ceil(used * 2 / 1048576.0));
        json_object_set_new(impl, "memory", json_string(cmd));
    }
    return impl;
}

/* The window's numbers per cache of the group. */
typedef struct cacheq {
    st_answer *ratio;
    st_answer *sum;
    st_answer *hosts;
    st_answer *evict;
    st_answer *used;
    double total;
    double min;
    int64_t window;
} cacheq;

static int cache_candidate(st_eng *e, const st_rule *r, const group *g, const cacheq *q,
                           const st_ans_row *item, double ratio, st_candidates *out)
{
    static const char *const series[] = {"cache.requests", "cache.evictions", "cache.memory.used"};
    const char *cache = st_ans_label(item, "cache");
    double n = st_ans_value(item);
    double thr = st_eng_threshold(e, r);
    double evict = st_rules_lookup(q->evict, item, "cache");
    double used = st_rules_lookup(q->used, item, "cache");
    char text[ST_SUMMARY_MAX];
    json_t *routes = NULL;
    st_candidate c;
    int rv = worst_routes(e, cache, n, &routes);
    if (rv != ST_OK) {
        json_decref(routes);
        return rv;
    }
    routes_text(routes, text, sizeof(text));
    st_candidate_init(&c);
    st_rules_entity(&c, item, "cache");
    st_rules_verdict(&c, r, ratio, thr, true);
    c.traffic_share = q->total > 0 ? n / q->total : 0;
    st_rules_summary(&c, "%s cache %s: hit ratio %.1f%% over %.0f requests (target %.0f%%)%s",
                     g->what, cache, ratio * 100, n, thr * 100, text);
    st_rules_evidence(e, &c, series, ST_ARRAY_LEN(series),
                      json_pack("{s:f,s:f,s:o,s:o,s:O}", "hit_ratio", ratio, "requests", n,
                                "evictions_per_s", st_rules_num(evict), "memory_used_bytes",
                                st_rules_num(used), "routes", routes),
                      thr, q->window, st_rules_hosts(q->hosts, "host", "cache", cache));
    c.implementation = cache_impl(r, cache, routes, evict, used);
    json_decref(routes);
    return st_rules_add(out, &c);
}

static void cacheq_free(cacheq *q)
{
    st_answer_unref(q->ratio);
    st_answer_unref(q->sum);
    st_answer_unref(q->hosts);
    st_answer_unref(q->evict);
    st_answer_unref(q->used);
}

static int cache_rule(st_eng *e, const st_rule *r, const group *g, st_candidates *out)
{
    const char *match[2] = {g->match, "result=hit"};
    double thr = st_eng_threshold(e, r);
    cacheq q;
    int rv;
    memset(&q, 0, sizeof(q));
    q.window = st_eng_window(e);
    q.min = st_eng_setting(e, "min_samples");
    rv = st_eng_query(e, "cache.requests", "ratio", "cache", match, 2, q.window, &q.ratio);
    rv = rv ? rv : st_eng_query(e, "cache.requests", "sum", "cache", match, 1, q.window, &q.sum);
    rv = rv ? rv
            : st_eng_query(e, "cache.requests", "sum", "cache,host", match, 1, q.window, &q.hosts);
    rv =
        rv ? rv : st_eng_query(e, "cache.evictions", "rate", "cache", match, 1, q.window, &q.evict);
    rv = rv ? rv : st_rules_last(e, "cache.memory.used", "cache", match, 1, q.window, &q.used);
    q.total = st_rules_total(q.sum);
    for (size_t i = 0; rv == ST_OK && i < q.sum->n; i++) {
        const st_ans_row *item = &q.sum->rows[i];
        double v = st_rules_lookup(q.ratio, item, "cache");
        v = isfinite(v) ? v : 0;
        if (st_ans_value(item) >= q.min && v < thr) {
            rv = cache_candidate(e, r, g, &q, item, v, out);
        }
    }
    cacheq_free(&q);
    return rv;
}

int st_check_browser_cache(st_eng *e, const st_rule *r, st_candidates *out)
{
    static const group g = {"cache=browser", "browser"};
    return cache_rule(e, r, &g, out);
}

int st_check_cdn_cache(st_eng *e, const st_rule *r, st_candidates *out)
{
    static const group g = {"cache=~varnish|nginx|cdn", "CDN/edge"};
    return cache_rule(e, r, &g, out);
}

int st_check_api_cache(st_eng *e, const st_rule *r, st_candidates *out)
{
    static const group g = {"cache=~redis|memcached|api", "API"};
    return cache_rule(e, r, &g, out);
}
