/* The agent's config map. */
#include "settings.h"

#include "err.h"

#include <stddef.h>
#include <string.h>

#define F(field) offsetof(st_agent_settings, field)

static const st_cfg_map spool_rows[] = {
    {ST_CFG_SIZE, "max_bytes", "64MiB", F(spool_max_bytes),
     "disk the spool may use; the oldest frames are dropped (and counted) past it", NULL, 0, 0},
    {ST_CFG_STR, NULL, NULL, 0, NULL, NULL, 0, 0},
};

static const st_cfg_map sender_rows[] = {
    {ST_CFG_DURATION, "timeout", "5s", F(timeout_ms), "send to acknowledgement, per frame", NULL, 0,
     0},
    {ST_CFG_INT, "max_in_flight", "4", F(in_flight), "frames awaiting acknowledgement at once",
     NULL, 1, 16},
    {ST_CFG_DURATION, "backoff_min", "200ms", F(backoff_min_ms), "first retry delay", NULL, 0, 0},
    {ST_CFG_DURATION, "backoff_max", "30s", F(backoff_max_ms), "longest retry delay", NULL, 0, 0},
    {ST_CFG_INT, "zstd_level", "6", F(zstd_level), "compression level", NULL, 1, 19},
    {ST_CFG_STR, NULL, NULL, 0, NULL, NULL, 0, 0},
};

static const st_cfg_map tls_rows[] = {
    {ST_CFG_STR, "ca", NULL, F(tls_ca), "CA that the collector's certificate chains to", NULL, 0,
     0},
    {ST_CFG_STR, "cert", NULL, F(tls_cert), "this agent's certificate (PEM, may hold the key)",
     NULL, 0, 0},
    {ST_CFG_STR, "key", NULL, F(tls_key), "this agent's private key (PEM)", NULL, 0, 0},
    {ST_CFG_STR, "server_name", NULL, F(tls_server_name), "name expected in the collector's cert",
     NULL, 0, 0},
    {ST_CFG_STR, NULL, NULL, 0, NULL, NULL, 0, 0},
};

static const st_cfg_map discovery_rows[] = {
    {ST_CFG_STRLIST, "nginx", NULL, F(disc_nginx), "stub_status URLs to try", NULL, 0, 0},
    {ST_CFG_STRLIST, "varnish", NULL, F(disc_varnish), "varnish instance directories", NULL, 0, 0},
    {ST_CFG_STRLIST, "redis", NULL, F(disc_redis), "redis host:port or socket paths", NULL, 0, 0},
    {ST_CFG_STRLIST, "memcached", NULL, F(disc_memcached), "memcached host:port", NULL, 0, 0},
    {ST_CFG_STRLIST, "postgres", NULL, F(disc_postgres), "postgres socket dirs or host:port", NULL,
     0, 0},
    {ST_CFG_STR, NULL, NULL, 0, NULL, NULL, 0, 0},
};

const st_cfg_map st_agent_rows[] = {
    {ST_CFG_STR, "collector", "tcp://127.0.0.1:9740", F(collector),
     "collector ingest URL (tcp://, tls+tcp://, ipc://)", NULL, 0, 0},
    {ST_CFG_STR, "data_dir", "./var/agent", F(data_dir), "spool and checkpoints", NULL, 0, 0},
    {ST_CFG_DURATION, "interval", "1s", F(interval_ms), "default sampler interval", NULL, 0, 0},
    {ST_CFG_DURATION, "flush_interval", "15s", F(flush_ms),
     "how often folded points are shipped as one frame", NULL, 0, 0},
    {ST_CFG_STR, "host", NULL, F(host), "host name reported (default: the system's)", NULL, 0, 0},
    {ST_CFG_STR, "role", "app", F(role), "edge, cdn, app or db", NULL, 0, 0},
    {ST_CFG_NODE, "labels", NULL, F(labels), "labels added to every series (map)", NULL, 0, 0},
    {ST_CFG_STR, "proc_root", "/proc", F(proc_root), "where /proc is read from", NULL, 0, 0},
    {ST_CFG_STR, "sys_root", "/sys", F(sys_root), "where /sys is read from", NULL, 0, 0},
    {ST_CFG_STR, "log_level", "info", F(log_level), "debug, info, warn or error", NULL, 0, 0},
    {ST_CFG_STR, "key_file", NULL, F(key_file), "HMAC key (hex) that signs every frame", NULL, 0,
     0},
    {ST_CFG_BOOL, "insecure", "false", F(insecure),
     "allow plain tcp:// to a collector that is not on this host", NULL, 0, 0},
    {ST_CFG_SECTION, "spool", NULL, 0, "durable spool", spool_rows, 0, 0},
    {ST_CFG_SECTION, "sender", NULL, 0, "shipping to the collector", sender_rows, 0, 0},
    {ST_CFG_SECTION, "tls", NULL, 0, "mutual TLS for tls+tcp://", tls_rows, 0, 0},
    {ST_CFG_NODE, "samplers", NULL, F(samplers),
     "samplers to run: name -> options (default: host, tcp)", NULL, 0, 0},
    {ST_CFG_NODE, "actions", NULL, F(actions), "actions this agent allows (none by default)", NULL,
     0, 0},
    {ST_CFG_BOOL, "discover", "false", F(discover),
     "find local nginx, varnish, redis, memcached and postgres and sample them", NULL, 0, 0},
    {ST_CFG_DURATION, "discover_interval", "5m", F(discover_interval_ms),
     "how often discovery looks again", NULL, 0, 0},
    {ST_CFG_DURATION, "memory_trim", "10m", F(memory_trim_ms),
     "how often library pages used only once (start-up) are released; 0: never", NULL, 0, 0},
    {ST_CFG_SECTION, "discovery", NULL, 0, "where discovery looks (default: the usual places)",
     discovery_rows, 0, 0},
    {ST_CFG_STR, NULL, NULL, 0, NULL, NULL, 0, 0},
};

int st_agent_settings_load(const char *path, st_agent_settings *s, st_cfg_doc **doc,
                           st_cfg_error *err)
{
    int rv;
    memset(s, 0, sizeof(*s));
    *doc = NULL;
    if (path == NULL) {
        return st_cfg_defaults(st_agent_rows, s, err);
    }
    if ((rv = st_cfg_load_file(path, doc, err)) != ST_OK) {
        return rv;
    }
    return st_cfg_bind(*doc, st_cfg_root(*doc), st_agent_rows, s, err);
}

void st_agent_settings_release(st_agent_settings *s)
{
    st_cfg_release(st_agent_rows, s);
}
