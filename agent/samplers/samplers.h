/* The samplers in agent/samplers/, one definition each (the rows of the
 * table in agent/sampler.c), and the small helpers they share for reading
 * /proc and /sys files: bounded reads into caller buffers, paths, fields. */
#ifndef ST_SAMPLERS_H
#define ST_SAMPLERS_H

#include <stddef.h>
#include <stdint.h>

#include "sampler.h"

#define ST_PROCFS_PATH_MAX 4096 /* longest path a sampler builds */

/* A sampler file <name>.c defines st_<name>_init, _sample and _fini and
 * exports st_sampler_<name> = ST_SAMPLER_ROW(<name>). The table in
 * sampler.c uses the same macro, because C cannot initialise an array
 * element from another const object (not a constant expression); one macro
 * keeps the row and the exported definition from drifting apart. */
#define ST_SAMPLER_ROW(n)                                 \
    {                                                     \
#n, st_##n##_init, st_##n##_sample, st_##n##_fini \
    }

#define ST_SAMPLER_DECLARE(n)                                                                   \
    int st_##n##_init(const st_cfg_doc *doc, const st_cfg_node *cfg, const st_sampler_env *env, \
                      void **ctx, st_cfg_error *err);                                           \
    int st_##n##_sample(void *ctx, st_emit *e);                                                 \
    void st_##n##_fini(void *ctx);                                                              \
    extern const st_sampler_def st_sampler_##n

/* host: CPU utilisation, host memory, the agent's own CPU and RSS. */
ST_SAMPLER_DECLARE(host);
/* proc: memory of chosen processes (by name, pidfile or cgroup). */
ST_SAMPLER_DECLARE(proc);
/* tcp: kernel TCP counters from net/snmp and net/netstat. */
ST_SAMPLER_DECLARE(tcp);
/* probe: concurrent TCP connect probes to configured targets. */
ST_SAMPLER_DECLARE(probe);
/* statsd: a UDP listener for StatsD/DogStatsD lines, aggregated per interval. */
ST_SAMPLER_DECLARE(statsd);
/* rum: an HTTP endpoint for browser beacons (web vitals, resource timing). */
ST_SAMPLER_DECLARE(rum);
/* bundle: gzip sizes, duplicate and unused bytes of a frontend build directory. */
ST_SAMPLER_DECLARE(bundle);
/* redis, memcached, varnish: cache hits, misses, evictions and memory from
 * INFO, `stats` and `varnishstat -j`. */
ST_SAMPLER_DECLARE(redis);
ST_SAMPLER_DECLARE(memcached);
ST_SAMPLER_DECLARE(varnish);
/* postgres: pg_stat_statements, pg_stat_user_tables, pg_stat_database. */
ST_SAMPLER_DECLARE(postgres);
/* nginx: stub_status and the access log (routes, latencies, cache results). */
ST_SAMPLER_DECLARE(nginx);

/* Reads path into buf[cap] (cap >= 2), NUL-terminated, *len (may be NULL)
 * set to the bytes read. A file of cap bytes or more is read up to cap - 1
 * bytes and ST_ETOOBIG comes back with that prefix in buf, so a caller that
 * needs only the head of a file (the first line of /proc/stat) may accept
 * it. ST_ENOENT when the file (or its process) is gone, ST_EPERM when not
 * readable, ST_EIO otherwise. Never allocates. */
int st_procfs_read(const char *path, char *buf, size_t cap, size_t *len);

/* snprintf into out[cap]; ST_ETOOBIG instead of truncating. */
int st_procfs_path(char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Finds the line "key:<spaces>value" in text (key at the start of a line)
 * and parses value as an unsigned decimal; a " kB" after it multiplies by
 * 1024 (as /proc/meminfo and status write). ST_ENOENT when no line has the
 * key, ST_EPARSE when its value is not a number or overflows. */
int st_procfs_field_u64(const char *text, const char *key, uint64_t *out);

/* Parses the decimal digits at *p (no sign), advancing *p past them.
 * ST_EPARSE when there is no digit or the number overflows uint64_t. */
int st_procfs_u64(const char **p, uint64_t *out);

#endif
