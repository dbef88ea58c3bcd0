/* The route table of the HTTP API and its handlers: one row a route. */
#include "http.h"

#include "exposition.h"
#include "outbox.h"
#include "routes_engine.h"
#include "routes_outbox.h"
#include "web.h"

#include "engine.h"
#include "err.h"
#include "query.h"
#include "timeutil.h"
#include "util.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static const char *const no_params[] = {NULL};
static const char *const query_params[] = {"metric", "agg",  "match", "by",   "from",
                                           "to",     "step", "top",   "over", NULL};

static int get_healthz(const struct st_api_deps *d, const st_req *req, st_resp *resp)
{
    (void)d;
    (void)req;
    return st_resp_json(resp, json_pack("{s:s}", "status", "ok"));
}

static int get_readyz(const struct st_api_deps *d, const st_req *req, st_resp *resp)
{
    (void)req;
    if (d->store == NULL || !st_ingest_listening(d->ingest)) {
        return st_resp_error(resp, 503, "not ready: %s",
                             d->store == NULL ? "store closed" : "ingest not listening");
    }
    return st_resp_json(resp, json_pack("{s:s}", "status", "ready"));
}

static json_t *agent_json(const st_agent_info *a, int64_t now)
{
    const Strata__V1__AgentRecord *r = a->rec;
    const Strata__V1__Agent *ag = r->agent;
    json_t *labels = json_object();
    static const char *roles[] = {"", "edge", "cdn", "app", "db"};
    const char *role = "";
    if (ag != NULL && (size_t)ag->role < ST_ARRAY_LEN(roles)) {
        role = roles[ag->role];
    }
    for (size_t i = 0; ag != NULL && labels != NULL && i < ag->n_labels; i++) {
        json_object_set_new(labels, ag->labels[i]->key, json_string(ag->labels[i]->value));
    }
    return json_pack("{s:s,s:s,s:s,s:s,s:s,s:o,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f}", "id", a->id,
                     "host", ag && ag->host ? ag->host : "", "role", role, "version",
                     ag && ag->version ? ag->version : "", "boot_id",
                     ag && ag->boot_id ? ag->boot_id : "", "labels", labels, "first_seen_unix_ms",
                     (json_int_t)r->first_seen_unix_ms, "last_seen_unix_ms",
                     (json_int_t)r->last_seen_unix_ms, "seq", (json_int_t)r->seq, "frames",
                     (json_int_t)r->frames, "samples", (json_int_t)r->samples, "spool_frames",
                     (json_int_t)r->spool_frames, "spool_dropped", (json_int_t)r->spool_dropped,
                     "seconds_since_last_frame", (double)(now - r->last_seen_unix_ms) / 1000.0);
}

struct agents_ctx {
    json_t *arr;
    int64_t now;
};

static int agents_each(void *arg, const st_agent_info *a)
{
    struct agents_ctx *c = arg;
    return json_array_append_new(c->arr, agent_json(a, c->now)) == 0 ? ST_OK : ST_ENOMEM;
}

static int get_agents(const struct st_api_deps *d, const st_req *req, st_resp *resp)
{
    struct agents_ctx c = {json_array(), st_time_wall_ms()};
    int rv;
    (void)req;
    if (c.arr == NULL) {
        return st_resp_error(resp, 500, "out of memory");
    }
    if ((rv = st_store_agents(d->store, agents_each, &c)) != ST_OK) {
        json_decref(c.arr);
        return st_resp_error(resp, 500, "store: %s", st_strerror(rv));
    }
    return st_resp_json(resp, json_pack("{s:o}", "agents", c.arr));
}

static int get_query(const struct st_api_deps *d, const st_req *req, st_resp *resp)
{
    st_qparam p[ST_API_MAX_PARAMS];
    st_query q;
    json_t *out = NULL;
    char err[300];
    int64_t t0;
    int rv;
    for (size_t i = 0; i < req->nparams; i++) {
        p[i].key = req->params[i].key;
        p[i].value = req->params[i].value;
    }
    if (st_query_parse(p, req->nparams, st_time_wall_ms(), &q, err, sizeof(err)) != ST_OK) {
        return st_resp_error(resp, 400, "%s", err);
    }
    t0 = st_time_mono_ns();
    rv = st_query_run(d->store, &q, &out, err, sizeof(err));
    st_metrics_query(d->metrics, st_time_mono_ns() - t0);
    st_query_release(&q);
    if (rv != ST_OK) {
        return st_resp_error(resp, rv == ST_ETOOBIG ? 400 : 500, "%s", err);
    }
    return st_resp_json(resp, out);
}

/* ---- /metrics ---- */

static void counter(st_buf *b, const char *name, const char *help, uint64_t v)
{
    st_buf_printf(b, "# HELP %s %s\n# TYPE %s counter\n%s %" PRIu64 "\n", name, help, name, name,
                  v);
}

static void gauge(st_buf *b, const char *name, const char *help, double v)
{
    st_buf_printf(b, "# HELP %s %s\n# TYPE %s gauge\n%s %.17g\n", name, help, name, name, v);
}

static void metrics_rejects(st_buf *b, st_metrics *m)
{
    st_buf_printf(b, "# HELP strata_ingest_frames_rejected_total Frames refused, by reason.\n"
                     "# TYPE strata_ingest_frames_rejected_total counter\n");
    for (int i = 0; i < ST_ERR_COUNT; i++) {
        uint64_t v = st_metric_get(&m->rejects[i]);
        if (v > 0) {
            int code = i + ST_ERR_FIRST_ + 1;
            st_buf_printf(b, "strata_ingest_frames_rejected_total{reason=\"%s\"} %" PRIu64 "\n",
                          st_errname(code), v);
        }
    }
}

/* A histogram from its bounds (seconds), n + 1 bucket counts (last:
 * +Inf) and the sum of what it counted. */
static void histogram(st_buf *b, const char *name, const char *help, const double *le, int n,
                      const uint64_t *counts, double sum)
{
    uint64_t cum = 0;
    st_buf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (int i = 0; i <= n; i++) {
        cum += counts[i];
        if (i < n) {
            st_buf_printf(b, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, le[i], cum);
        } else {
            st_buf_printf(b, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, cum);
        }
    }
    st_buf_printf(b, "%s_sum %.9f\n%s_count %" PRIu64 "\n", name, sum, name, cum);
}

/* A latency histogram of st_metrics (the commit bounds, nanosecond sum). */
static void latency_histogram(st_buf *b, const char *name, const char *help,
                              _Atomic uint64_t *buckets, _Atomic uint64_t *ns_sum)
{
    uint64_t counts[ST_COMMIT_BUCKETS + 1];
    for (int i = 0; i <= ST_COMMIT_BUCKETS; i++) {
        counts[i] = st_metric_get(&buckets[i]);
    }
    histogram(b, name, help, st_commit_bucket_le, ST_COMMIT_BUCKETS, counts,
              (double)st_metric_get(ns_sum) / 1e9);
}

/* The engine's runs: how many, how long, and where the last one went, so
 * that a run creeping toward its interval shows before it stalls findings. */
static void metrics_engine(st_buf *b, st_engine *en)
{
    struct st_engine_stats es;
    st_engine_stats(en, &es);
    counter(b, "strata_engine_runs_total", "Engine runs completed.", es.runs);
    counter(b, "strata_engine_runs_abandoned_total", "Engine runs cut short by a stop.",
            es.abandoned);
    histogram(b, "strata_engine_run_seconds", "Wall time of completed engine runs.",
              st_engine_run_bucket_le, ST_ENGINE_RUN_BUCKETS, es.bucket, es.seconds_sum);
    gauge(b, "strata_engine_last_run_cpu_seconds", "CPU time of the last completed engine run.",
          es.last_cpu_seconds);
    /* runs within a step reuse its first run's answers: the two costs differ */
    counter(b, "strata_engine_step_runs_total",
            "Completed engine runs whose windows had moved (a step's first run).", es.steps);
    counter(b, "strata_engine_feed_blocks_total",
            "Blocks of points the engine's kept windows took from commits.", es.feed_blocks);
    counter(b, "strata_engine_feed_lost_total",
            "Times the engine's kept windows lost commits and read the store again.", es.feed_lost);
    gauge(b, "strata_engine_feed_bytes_peak",
          "The most bytes of commits' points that waited for an engine run.",
          (double)es.feed_bytes_peak);
    gauge(b, "strata_engine_windows_end_seconds",
          "Unix time where the windows of the last completed engine run end.",
          (double)es.windows_end_ms / 1000.0);
    st_buf_printf(b, "# HELP strata_engine_phase_seconds Wall time of each rule and phase of the "
                     "last completed engine run.\n"
                     "# TYPE strata_engine_phase_seconds gauge\n");
    for (size_t i = 0; i < es.nphase; i++) {
        st_buf_printf(b, "strata_engine_phase_seconds{phase=\"%s\"} %.9f\n", es.phase[i],
                      es.phase_seconds[i]);
    }
}

static int get_metrics(const struct st_api_deps *d, const st_req *req, st_resp *resp)
{
    st_metrics *m = d->metrics;
    struct st_store_stats ss;
    st_buf *b = &resp->body;
    (void)req;
    counter(b, "strata_ingest_frames_received_total", "Envelopes received.",
            st_metric_get(&m->frames_received));
    counter(b, "strata_ingest_frames_applied_total", "Frames committed to the store.",
            st_metric_get(&m->frames_applied));
    counter(b, "strata_ingest_frames_duplicate_total", "Frames acknowledged as duplicates.",
            st_metric_get(&m->frames_duplicate));
    counter(b, "strata_ingest_frames_retry_later_total", "Frames answered RETRY_LATER.",
            st_metric_get(&m->frames_retry_later));
    counter(b, "strata_ingest_samples_total", "Samples committed to the store.",
            st_metric_get(&m->samples_applied));
    counter(b, "strata_ingest_bytes_total", "Envelope bytes received.",
            st_metric_get(&m->bytes_received));
    metrics_rejects(b, m);
    /* which agents still send codec 1 shows here as a rate that is not 0 */
    st_buf_printf(b, "# HELP strata_ingest_frames_codec_total Envelopes opened, by codec.\n"
                     "# TYPE strata_ingest_frames_codec_total counter\n");
    for (int i = 0; i < ST_CODEC_COUNT; i++) {
        static const char *const names[ST_CODEC_COUNT] = {"none", "zstd", "zstd_dict"};
        st_buf_printf(b, "strata_ingest_frames_codec_total{codec=\"%s\"} %" PRIu64 "\n", names[i],
                      st_metric_get(&m->frames_codec[i]));
    }
    latency_histogram(b, "strata_store_commit_seconds", "Latency of group commits.",
                      m->commit_bucket, &m->commit_ns_sum);
    latency_histogram(b, "strata_query_seconds", "Latency of /v1/query answers.", m->query_bucket,
                      &m->query_ns_sum);
    counter(b, "strata_store_commit_failures_total", "Batches that could not be committed.",
            st_metric_get(&m->commit_failures));
    counter(b, "strata_store_map_grows_total", "Times the LMDB map was grown.",
            st_metric_get(&m->map_grows));
    if (st_store_stats(d->store, &ss) == ST_OK) {
        gauge(b, "strata_store_file_bytes", "Bytes of the store file on disk.",
              (double)ss.file_bytes);
        gauge(b, "strata_store_used_bytes", "Bytes of store pages in use.", (double)ss.used_bytes);
        gauge(b, "strata_store_map_bytes", "LMDB map size.", (double)ss.map_size);
        gauge(b, "strata_store_series", "Series in the dictionary.", (double)ss.series);
        gauge(b, "strata_store_point_blocks", "Point blocks stored.", (double)ss.point_blocks);
        gauge(b, "strata_agents", "Agents known to the store.", (double)ss.agents);
        gauge(b, "strata_store_rollup_entries", "Rollup entries stored.",
              (double)ss.rollup_entries);
        gauge(b, "strata_store_rollup_dirty", "Late-data rollup rebuilds waiting.",
              (double)ss.dirty);
        gauge(b, "strata_store_rollup_lag_seconds", "How far the minute rollups trail now.",
              ss.wm_1m > 0 ? (double)(st_time_wall_ms() - ss.wm_1m) / 1000.0 : 0);
    }
    if (d->outbox != NULL) {
        struct st_outbox_stats os;
        if (st_outbox_stats(d->outbox, &os) == ST_OK) {
            gauge(b, "strata_webhook_deliveries_pending", "Webhook deliveries waiting to be sent.",
                  (double)os.pending);
            counter(b, "strata_webhook_deliveries_delivered_total",
                    "Webhook deliveries acknowledged with a 2xx.", os.delivered);
            counter(b, "strata_webhook_deliveries_failed_total",
                    "Webhook deliveries given up (refused, redirected, past max_age).", os.failed);
            counter(b, "strata_webhook_attempts_total", "Webhook HTTP attempts.", os.attempts);
        }
    }
    if (d->engine != NULL) {
        metrics_engine(b, d->engine);
    }
    gauge(b, "strata_writer_backlog_frames", "Frames waiting for the writer.",
          (double)st_writer_backlog(d->writer));
    counter(b, "strata_http_requests_total", "HTTP requests served.",
            st_metric_get(&m->http_requests));
    gauge(b, "strata_uptime_seconds", "Seconds since the collector started.",
          (double)(st_time_wall_ms() - d->started_ms) / 1000.0);
    st_expose_fleet(d, b);
    resp->status = 200;
    resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
    return ST_OK;
}

static const char *const findings_params[] = {"status", "layer", "limit", NULL};
static const char *const actions_params[] = {"finding", NULL};

const st_route st_routes[] = {
    {"GET", "/healthz", false, ST_SCOPE_NONE, get_healthz, no_params},
    {"GET", "/readyz", false, ST_SCOPE_NONE, get_readyz, no_params},
    {"GET", "/metrics", false, ST_SCOPE_READ, get_metrics, no_params},
    {"GET", "/v1/agents", false, ST_SCOPE_READ, get_agents, no_params},
    {"GET", "/v1/query", false, ST_SCOPE_READ, get_query, query_params},
    {"GET", "/v1/status", false, ST_SCOPE_READ, st_route_status, no_params},
    {"GET", "/v1/findings", false, ST_SCOPE_READ, st_route_findings, findings_params},
    {"GET", "/v1/findings", true, ST_SCOPE_READ, st_route_finding, no_params},
    {"POST", "/v1/findings", true, ST_SCOPE_WRITE, st_route_finding_action, no_params},
    {"POST", "/v1/baselines/pin", false, ST_SCOPE_WRITE, st_route_pin, no_params},
    {"GET", "/v1/actions", false, ST_SCOPE_READ, st_route_actions, actions_params},
    {"GET", "/v1/deliveries", false, ST_SCOPE_READ, st_route_deliveries,
     st_route_deliveries_params},
    {"GET", "/", false, ST_SCOPE_NONE, st_route_index, no_params},
    {"GET", "/assets", true, ST_SCOPE_NONE, st_route_asset, no_params},
    {NULL, NULL, false, ST_SCOPE_NONE, NULL, NULL},
};
