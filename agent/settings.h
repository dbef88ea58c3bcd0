/* agent.yaml: the agent's settings, defaults and config map. Command-line
 * flags override the file. */
#ifndef ST_AGENT_SETTINGS_H
#define ST_AGENT_SETTINGS_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

typedef struct st_agent_settings {
    char *collector;
    char *data_dir;
    int64_t interval_ms; /* default sampler interval */
    int64_t flush_ms;    /* one frame per flush interval */
    char *host;
    char *role;
    const st_cfg_node *labels;
    char *proc_root;
    char *sys_root;
    char *log_level;
    uint64_t spool_max_bytes;
    int64_t timeout_ms;
    int64_t in_flight;
    int64_t backoff_min_ms;
    int64_t backoff_max_ms;
    int64_t zstd_level;
    char *tls_ca;
    char *tls_cert;
    char *tls_key;
    char *tls_server_name;
    char *key_file;
    bool insecure;
    const st_cfg_node *samplers;
    const st_cfg_node *actions;
    bool discover;
    int64_t discover_interval_ms;
    st_cfg_strlist disc_nginx;
    st_cfg_strlist disc_varnish;
    st_cfg_strlist disc_redis;
    st_cfg_strlist disc_memcached;
    st_cfg_strlist disc_postgres;
    int64_t memory_trim_ms; /* 0: never (memtrim.h) */
    bool once;              /* set by main for --once, not a configuration key */
} st_agent_settings;

extern const st_cfg_map st_agent_rows[];

/* Loads path (NULL: defaults) into s; *doc keeps NODE fields alive. */
int st_agent_settings_load(const char *path, st_agent_settings *s, st_cfg_doc **doc,
                           st_cfg_error *err);
void st_agent_settings_release(st_agent_settings *s);

#endif
