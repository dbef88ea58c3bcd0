/* The collector's config map. */
#include "settings.h"

#include "err.h"

#include <stddef.h>
#include <string.h>

#define F(field) offsetof(st_collector_settings, field)

static const st_cfg_map ingest_rows[] = {
    {ST_CFG_STR, "url", "tcp://127.0.0.1:9740", F(ingest_url),
     "where agents send frames (tcp://, tls+tcp://, ipc://)", NULL, 0, 0},
    {ST_CFG_INT, "contexts", "64", F(ingest_contexts), "frames received concurrently", NULL, 1,
     4096},
    {ST_CFG_DURATION, "max_skew", "5m", F(max_skew_ms), "how far ahead of our clock a point may be",
     NULL, 0, 0},
    {ST_CFG_DURATION, "max_age", "48h", F(max_age_ms), "oldest point accepted", NULL, 0, 0},
    {ST_CFG_STR, "tls_cert", NULL, F(tls_cert), "PEM certificate and key for tls+tcp://", NULL, 0,
     0},
    {ST_CFG_STR, "tls_key", NULL, F(tls_key), "PEM private key when not in tls_cert", NULL, 0, 0},
    {ST_CFG_STR, "tls_ca", NULL, F(tls_ca), "CA that agent certificates must chain to", NULL, 0, 0},
    {ST_CFG_STR, "keys_file", NULL, F(keys_file),
     "agents' HMAC keys (agent UUID HEX / group NAME HEX); every frame must then be signed", NULL,
     0, 0},
    {ST_CFG_BOOL, "insecure", "false", F(insecure), "allow plain tcp:// on a non-loopback address",
     NULL, 0, 0},
    {ST_CFG_STR, NULL, NULL, 0, NULL, NULL, 0, 0},
};

static const st_cfg_map http_rows[] = {
    {ST_CFG_STR, "addr", "127.0.0.1:9741", F(http_addr), "HTTP API, /metrics and dashboard", NULL,
     0, 0},
    {ST_CFG_DURATION, "metrics_cache", "10s", F(metrics_cache_ms),
     "how long /metrics reuses its fleet aggregates (0: computed on every scrape)", NULL, 0, 0},
    {ST_CFG_STR, NULL, NULL, 0, NULL, NULL, 0, 0},
};

static const st_cfg_map store_rows[] = {
    {ST_CFG_SIZE, "map_size", "1GiB", F(map_size), "initial LMDB map size (grows by doubling)",
     NULL, 0, 0},
    {ST_CFG_SIZE, "max_map_size", "1TiB", F(max_map_size), "largest map size", NULL, 0, 0},
    {ST_CFG_INT, "max_batch", "2048", F(max_batch), "frames per group commit", NULL, 1, 100000},
    {ST_CFG_BOOL, "rollups", "true", F(rollups), "build 10s, 1m and 1h rollups", NULL, 0, 0},
    {ST_CFG_DURATION, "rollup_grace", "30s", F(rollup_grace_ms),
     "a minute is rolled up this long after it ends (later data is rebuilt)", NULL, 0, 0},
    {ST_CFG_STR, NULL, NULL, 0, NULL, NULL, 0, 0},
};

static const st_cfg_map retention_rows[] = {
    {ST_CFG_DURATION, "raw", "2d", F(ret_raw_ms), "raw points", NULL, 0, 0},
    {ST_CFG_DURATION, "10s", "2d", F(ret_10s_ms), "10 s rollups", NULL, 0, 0},
    {ST_CFG_DURATION, "1m", "30d", F(ret_1m_ms), "1 min rollups", NULL, 0, 0},
    {ST_CFG_DURATION, "1h", "400d", F(ret_1h_ms), "1 h rollups", NULL, 0, 0},
    {ST_CFG_STR, NULL, NULL, 0, NULL, NULL, 0, 0},
};

static const st_cfg_map engine_rows[] = {
    {ST_CFG_BOOL, "enabled", "true", F(engine_enabled), "run the optimization loop", NULL, 0, 0},
    {ST_CFG_DURATION, "interval", "10s", F(engine_interval_ms), "between runs when idle", NULL, 0,
     0},
    {ST_CFG_DURATION, "pause", "2s", F(engine_pause_ms), "between loop iterations with work", NULL,
     0, 0},
    {ST_CFG_INT, "max_iterations", "10", F(engine_max_iterations), "iterations per campaign", NULL,
     1, 1000},
    {ST_CFG_DURATION, "validation_window", "5m", F(engine_validation_ms),
     "how long an applied fix is measured before the verdict", NULL, 0, 0},
    {ST_CFG_DOUBLE, "improvement_margin", "0.2", F(engine_margin),
     "relative improvement a fix must show", NULL, 0.01, 10},
    {ST_CFG_DURATION, "window", "5m", F(engine_window_ms), "analysis window", NULL, 0, 0},
    {ST_CFG_DURATION, "baseline_window", "1h", F(engine_baseline_ms),
     "rolling baseline length (before the analysis window)", NULL, 0, 0},
    {ST_CFG_DURATION, "leak_window", "30m", F(engine_leak_window_ms),
     "RSS history the memory-leak rule fits a line to", NULL, 0, 0},
    {ST_CFG_INT, "min_samples", "50", F(engine_min_samples),
     "samples a window needs before regressions are judged", NULL, 1, 1000000},
    {ST_CFG_DURATION, "step", "0s", F(engine_step_ms),
     "windows end on multiples of this; runs within one step reuse its answers (0s: the "
     "longest divisor of 1m up to a fifth of the window)",
     NULL, 0, 3600000},
    {ST_CFG_DURATION, "settle", "0s", F(engine_settle_ms),
     "how long a step's end waits for late frames before windows take it in (0s: half the "
     "step; 1ms: almost none)",
     NULL, 0, 3600000},
    {ST_CFG_STR, NULL, NULL, 0, NULL, NULL, 0, 0},
};

static const st_cfg_map api_rows[] = {
    {ST_CFG_NODE, "tokens", NULL, F(tokens),
     "bearer tokens: [{name, sha256, scopes: [read, write]}]", NULL, 0, 0},
    {ST_CFG_STR, NULL, NULL, 0, NULL, NULL, 0, 0},
};

const st_cfg_map st_collector_rows[] = {
    {ST_CFG_STR, "name", NULL, F(name), "this collector's name (default: the host name)", NULL, 0,
     0},
    {ST_CFG_STR, "data_dir", "./var/collector", F(data_dir), "where the LMDB store lives", NULL, 0,
     0},
    {ST_CFG_STR, "log_level", "info", F(log_level), "debug, info, warn or error", NULL, 0, 0},
    {ST_CFG_SECTION, "ingest", NULL, 0, "agent connections", ingest_rows, 0, 0},
    {ST_CFG_SECTION, "http", NULL, 0, "HTTP server", http_rows, 0, 0},
    {ST_CFG_SECTION, "store", NULL, 0, "LMDB store", store_rows, 0, 0},
    {ST_CFG_SECTION, "retention", NULL, 0, "how long each resolution is kept", retention_rows, 0,
     0},
    {ST_CFG_NODE, "targets", NULL, F(targets), "performance targets (see README)", NULL, 0, 0},
    {ST_CFG_SECTION, "engine", NULL, 0, "optimization loop", engine_rows, 0, 0},
    {ST_CFG_NODE, "rules", NULL, F(rules), "rule thresholds: {rule id: value}", NULL, 0, 0},
    {ST_CFG_SECTION, "api", NULL, 0, "HTTP API access", api_rows, 0, 0},
    {ST_CFG_NODE, "webhooks", NULL, F(webhooks),
     "signed webhook endpoints: [{name, url, secret|secret_file, filter, ...}]", NULL, 0, 0},
    {ST_CFG_STR, NULL, NULL, 0, NULL, NULL, 0, 0},
};

int st_collector_settings_load(const char *path, st_collector_settings *s, st_cfg_doc **doc,
                               st_cfg_error *err)
{
    int rv;
    memset(s, 0, sizeof(*s));
    *doc = NULL;
    if (path == NULL) {
        return st_cfg_defaults(st_collector_rows, s, err);
    }
    if ((rv = st_cfg_load_file(path, doc, err)) != ST_OK) {
        return rv;
    }
    return st_cfg_bind(*doc, st_cfg_root(*doc), st_collector_rows, s, err);
}

void st_collector_settings_release(st_collector_settings *s)
{
    st_cfg_release(st_collector_rows, s);
}
