/* Fleet families for /metrics: what an existing Prometheus would scrape
 * from a collector (agent health, cache hit ratios, latency percentiles).
 * Each aggregate is one row in the table below, answered by the same query
 * engine as /v1/query over a short recent window. */
#include "exposition.h"

#include "err.h"
#include "log.h"
#include "query.h"
#include "timeutil.h"
#include "util.h"

#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define FLEET_WINDOW "-5m"
/* The API's answer limits (2,000 series) are for JSON sent to people; a
 * row by host, or by host and process, outgrows them at a few thousand
 * hosts, and Prometheus would silently lose the rest. These bound what one
 * scrape may carry instead; past them the family is left out with a
 * comment saying why. */
#define FLEET_MAX_SERIES 100000
#define FLEET_MAX_POINTS 1000000

struct fleet_row {
    const char *name;
    const char *help;
    const char *metric;
    const char *agg;
    const char *by;
    const char *match; /* NULL or one matcher */
};

static const struct fleet_row fleet_rows[] = {
    {"strata_fleet_cache_hit_ratio", "Cache hit ratio over the last 5 minutes.", "cache.requests",
     "ratio", "cache", "result=hit"},
    {"strata_fleet_http_request_p95_seconds", "p95 request latency over the last 5 minutes.",
     "http.server.duration", "p95", "role", NULL},
    {"strata_fleet_http_requests_per_second", "Requests per second over the last 5 minutes.",
     "http.server.requests", "rate", "role", NULL},
    {"strata_fleet_http_errors_per_second", "Server errors per second over the last 5 minutes.",
     "http.server.errors", "rate", "role", NULL},
    {"strata_fleet_function_p95_seconds", "p95 function duration over the last 5 minutes.",
     "app.function.duration", "p95", "function", NULL},
    {"strata_fleet_db_statement_seconds_per_second",
     "Database statement time per second over the last 5 minutes.", "db.statement.time", "rate",
     "host", NULL},
    {"strata_fleet_mem_rss_max_bytes", "Largest RSS per process over the last 5 minutes.",
     "mem.rss", "max", "host,process", NULL},
    {"strata_fleet_cpu_utilization_ratio", "Average CPU utilization over the last 5 minutes.",
     "host.cpu.utilization", "avg", "host", NULL},
    {"strata_fleet_probe_connect_p95_seconds", "p95 probe connect time over the last 5 minutes.",
     "net.probe.connect_time", "p95", "target", NULL},
    {"strata_fleet_web_vitals_lcp_p95_seconds", "p95 Largest Contentful Paint, last 5 minutes.",
     "web.vitals.lcp", "p95", "page", NULL},
};

/* Label values escaped as the exposition format requires. */
static void put_label_value(st_buf *b, const char *v)
{
    for (; *v != '\0'; v++) {
        if (*v == '\\' || *v == '"') {
            st_buf_printf(b, "\\%c", *v);
        } else if (*v == '\n') {
            st_buf_append_str(b, "\\n");
        } else {
            st_buf_append(b, v, 1);
        }
    }
}

static void put_labels(st_buf *b, const json_t *labels)
{
    const char *k;
    json_t *v;
    bool first = true;
    if (json_object_size(labels) == 0) {
        return;
    }
    st_buf_append_str(b, "{");
    json_object_foreach((json_t *)labels, k, v)
    {
        st_buf_printf(b, "%s%s=\"", first ? "" : ",", k);
        put_label_value(b, json_string_value(v) ? json_string_value(v) : "");
        st_buf_append_str(b, "\"");
        first = false;
    }
    st_buf_append_str(b, "}");
}

static void expose_row(const struct st_api_deps *d, const struct fleet_row *r, st_buf *b)
{
    st_qparam p[5] = {{"metric", r->metric},
                      {"agg", r->agg},
                      {"by", r->by},
                      {"from", FLEET_WINDOW},
                      {"match", r->match}};
    st_query q;
    json_t *out = NULL;
    json_t *s;
    size_t i;
    char err[256];
    if (st_query_parse(p, r->match ? 5 : 4, st_time_wall_ms(), &q, err, sizeof(err)) != ST_OK) {
        return;
    }
    q.max_series = FLEET_MAX_SERIES;
    q.max_points = FLEET_MAX_POINTS;
    if (st_query_run(d->store, &q, &out, err, sizeof(err)) != ST_OK) {
        ST_WARN("api", "/metrics: %s left out: %s", r->name, err);
        st_buf_printf(b, "# %s left out: ", r->name);
        put_label_value(b, err);
        st_buf_append_str(b, "\n");
    } else {
        json_array_foreach(json_object_get(out, "series"), i, s)
        {
            const json_t *pts = json_object_get(s, "points");
            const json_t *last = json_array_get(pts, json_array_size(pts) - 1);
            double v = json_number_value(json_array_get(last, 1));
            if (last == NULL || !isfinite(v)) {
                continue;
            }
            st_buf_append_str(b, r->name);
            put_labels(b, json_object_get(s, "labels"));
            st_buf_printf(b, " %.17g\n", v);
        }
    }
    json_decref(out);
    st_query_release(&q);
}

struct agent_ctx {
    st_buf *b;
    int64_t now;
    int family;
};

static const char *role_of(const Strata__V1__AgentRecord *r)
{
    static const char *roles[] = {"", "edge", "cdn", "app", "db"};
    return r->agent != NULL && (size_t)r->agent->role < ST_ARRAY_LEN(roles) ? roles[r->agent->role]
                                                                            : "";
}

static int agent_line(void *arg, const st_agent_info *a)
{
    struct agent_ctx *c = arg;
    const Strata__V1__AgentRecord *r = a->rec;
    static const char *names[] = {"strata_agent_seconds_since_last_frame",
                                  "strata_agent_frames_applied_total", "strata_agent_spool_frames",
                                  "strata_agent_spool_dropped_frames_total"};
    double v = c->family == 0   ? (double)(c->now - r->last_seen_unix_ms) / 1000.0
               : c->family == 1 ? (double)r->frames
               : c->family == 2 ? (double)r->spool_frames
                                : (double)r->spool_dropped;
    st_buf_printf(c->b, "%s{agent=\"%s\",host=\"", names[c->family], a->id);
    put_label_value(c->b, r->agent && r->agent->host ? r->agent->host : "");
    st_buf_printf(c->b, "\",role=\"%s\"} %.17g\n", role_of(r), v);
    return ST_OK;
}

/* The fleet aggregates' text; at most ST_API_MAX_RESPONSE bytes like any
 * answer. */
struct st_expose_cache {
    pthread_mutex_t mu; /* held while computing: concurrent scrapes compute once */
    int64_t ttl_ms;
    int64_t at_ms; /* monotonic time the text was computed */
    bool valid;
    st_buf text;
};

int st_expose_cache_new(int64_t ttl_ms, st_expose_cache **out)
{
    st_expose_cache *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return ST_ENOMEM;
    }
    pthread_mutex_init(&c->mu, NULL);
    c->ttl_ms = ttl_ms;
    st_buf_init(&c->text, ST_API_MAX_RESPONSE);
    *out = c;
    return ST_OK;
}

void st_expose_cache_free(st_expose_cache *c)
{
    if (c == NULL) {
        return;
    }
    st_buf_free(&c->text);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static void expose_rows(const struct st_api_deps *d, st_buf *b)
{
    for (size_t i = 0; i < ST_ARRAY_LEN(fleet_rows); i++) {
        st_buf_printf(b, "# HELP %s %s\n# TYPE %s gauge\n", fleet_rows[i].name, fleet_rows[i].help,
                      fleet_rows[i].name);
        expose_row(d, &fleet_rows[i], b);
    }
}

static void expose_rows_cached(const struct st_api_deps *d, st_expose_cache *c, st_buf *b)
{
    pthread_mutex_lock(&c->mu);
    if (!c->valid || st_time_mono_ms() - c->at_ms >= c->ttl_ms) {
        st_buf_reset(&c->text);
        expose_rows(d, &c->text);
        /* Stamped when done, so that a slow computation is still reused
         * for the whole ttl. */
        c->at_ms = st_time_mono_ms();
        c->valid = true;
    }
    st_buf_append(b, c->text.data, c->text.len);
    pthread_mutex_unlock(&c->mu);
}

void st_expose_fleet(const struct st_api_deps *d, st_buf *b)
{
    static const char *help[][3] = {
        {"strata_agent_seconds_since_last_frame", "gauge", "Seconds since the agent's last frame."},
        {"strata_agent_frames_applied_total", "counter", "Frames applied from the agent."},
        {"strata_agent_spool_frames", "gauge", "Frames waiting in the agent's spool."},
        {"strata_agent_spool_dropped_frames_total", "counter",
         "Frames the agent dropped because its spool was full."},
    };
    struct agent_ctx c = {b, st_time_wall_ms(), 0};
    for (c.family = 0; c.family < 4; c.family++) {
        st_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", help[c.family][0], help[c.family][2],
                      help[c.family][0], help[c.family][1]);
        st_store_agents(d->store, agent_line, &c);
    }
    if (d->fleet_cache != NULL) {
        expose_rows_cached(d, d->fleet_cache, b);
    } else {
        expose_rows(d, b);
    }
}
