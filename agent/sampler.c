/* The sampler table: one row per file in agent/samplers/. Adding a sampler
 * is writing its file, declaring it in samplers/samplers.h and adding its
 * row here. */
#include "sampler.h"

#include "samplers/samplers.h"

#include <string.h>

const st_sampler_def st_samplers[] = {
    ST_SAMPLER_ROW(host),     ST_SAMPLER_ROW(proc),      ST_SAMPLER_ROW(tcp),
    ST_SAMPLER_ROW(probe),    ST_SAMPLER_ROW(statsd),    ST_SAMPLER_ROW(rum),
    ST_SAMPLER_ROW(redis),    ST_SAMPLER_ROW(memcached), ST_SAMPLER_ROW(varnish),
    ST_SAMPLER_ROW(postgres), ST_SAMPLER_ROW(nginx),     ST_SAMPLER_ROW(bundle),
    {NULL, NULL, NULL, NULL},
};

const st_sampler_def *st_sampler_find(const char *name)
{
    if (name == NULL) {
        return NULL;
    }
    for (const st_sampler_def *d = st_samplers; d->name != NULL; d++) {
        if (strcmp(d->name, name) == 0) {
            return d;
        }
    }
    return NULL;
}
