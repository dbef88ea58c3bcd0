/* The sampler interface. A sampler is one file in agent/samplers/ and one
 * row in the table in sampler.c. Each instance keeps its state in its own
 * ctx. The scheduler calls sample() every interval; a sampler that fails is
 * backed off (doubling up to 5 minutes) and retried, never fatal. */
#ifndef ST_SAMPLER_H
#define ST_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "emit.h"

/* What every sampler may read about its agent. */
typedef struct st_sampler_env {
    const char *proc_root; /* "/proc" unless configured (tests use fixtures) */
    const char *sys_root;  /* "/sys" unless configured */
    const char *data_dir;  /* agent data directory, for checkpoints */
    int64_t interval_ms;   /* this sampler's interval */
    bool once;             /* --once: read sources whole, persist no checkpoint */
} st_sampler_env;

typedef struct st_sampler_def {
    const char *name; /* key under samplers: in agent.yaml */
    /* Parses cfg (the sampler's mapping, NULL when given no options) and
     * allocates ctx. Errors name the file, line and key through err. */
    int (*init)(const st_cfg_doc *doc, const st_cfg_node *cfg, const st_sampler_env *env,
                void **ctx, st_cfg_error *err);
    /* One run: read the source, emit samples. An error is logged by the
     * scheduler and backed off. */
    int (*sample)(void *ctx, st_emit *e);
    void (*fini)(void *ctx);
} st_sampler_def;

/* The sampler table, terminated by a row with name NULL. */
extern const st_sampler_def st_samplers[];
const st_sampler_def *st_sampler_find(const char *name);

#endif
