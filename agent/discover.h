/* Discovery of local servers for `discover: true`. Each service found comes
 * back as the sampler to run and its options as YAML text, which goes
 * through the sampler's own configuration parsing like any agent.yaml. */
#ifndef ST_DISCOVER_H
#define ST_DISCOVER_H

#include <stddef.h>

#define ST_DISCOVER_MAX 16

struct st_found {
    char sampler[32];
    char key[160];  /* identity: a service found twice is added once */
    char yaml[640]; /* the sampler's options */
};

/* Where to look; NULL lists take the usual places (st_discover_*). */
struct st_discover_lists {
    const char *const *nginx;   /* stub_status URLs */
    const char *const *varnish; /* instance directories; "" = the default */
    const char *const *redis;   /* host:port or socket paths */
    const char *const *memcached;
    const char *const *postgres; /* socket directories or host:port */
};

extern const char *const st_discover_nginx[];
extern const char *const st_discover_varnish[];
extern const char *const st_discover_redis[];
extern const char *const st_discover_memcached[];
extern const char *const st_discover_postgres[];

int st_discover(const struct st_discover_lists *l, struct st_found *out, size_t max, size_t *n);

#endif
