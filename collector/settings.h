/* collector.yaml: the collector's settings, their defaults and the config
 * map that binds them. Command-line flags override the file. */
#ifndef ST_COLLECTOR_SETTINGS_H
#define ST_COLLECTOR_SETTINGS_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

typedef struct st_collector_settings {
    char *data_dir;
    char *log_level;
    char *ingest_url;
    int64_t ingest_contexts;
    int64_t max_skew_ms;
    int64_t max_age_ms;
    char *tls_cert;
    char *tls_key;
    char *tls_ca;
    char *keys_file;
    bool insecure;
    char *http_addr;
    int64_t metrics_cache_ms;
    uint64_t map_size;
    uint64_t max_map_size;
    int64_t max_batch;
    bool rollups;
    int64_t rollup_grace_ms;
    int64_t ret_raw_ms;
    int64_t ret_10s_ms;
    int64_t ret_1m_ms;
    int64_t ret_1h_ms;
    const st_cfg_node *targets;  /* parsed by the engine */
    const st_cfg_node *rules;    /* rule id -> threshold, parsed by the engine */
    const st_cfg_node *tokens;   /* api.tokens, parsed by the API */
    const st_cfg_node *webhooks; /* parsed by the outbox */
    char *name;                  /* this collector's name in findings */
    int64_t engine_interval_ms;
    int64_t engine_pause_ms;
    int64_t engine_max_iterations;
    int64_t engine_validation_ms;
    double engine_margin;
    int64_t engine_window_ms;
    int64_t engine_baseline_ms;
    int64_t engine_min_samples;
    int64_t engine_leak_window_ms;
    int64_t engine_step_ms;
    int64_t engine_settle_ms;
    bool engine_enabled;
} st_collector_settings;

extern const st_cfg_map st_collector_rows[];

/* Loads path (NULL: defaults only) into s. The doc stays alive in *doc for
 * NODE fields; free it after the settings. */
int st_collector_settings_load(const char *path, st_collector_settings *s, st_cfg_doc **doc,
                               st_cfg_error *err);
void st_collector_settings_release(st_collector_settings *s);

#endif
