/* The collector's HTTP API on nng's HTTP server: JSON routes, /metrics and
 * health. Each route is one row in the table in routes.c. Handlers run on
 * nng's threads and use short LMDB read transactions. */
#ifndef ST_API_H
#define ST_API_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "ingest.h"
#include "metrics.h"
#include "store.h"
#include "writer.h"

#define ST_API_MAX_QUERY 4096 /* bytes of a request's query string */
#define ST_API_MAX_PARAMS 64
#define ST_API_MAX_BODY (1u << 20)
#define ST_API_MAX_RESPONSE (64u << 20)

struct st_engine;
struct st_expose_cache;

#define ST_API_MAX_TOKENS 64

/* A bearer token, kept only as its SHA-256. */
typedef struct st_api_token {
    char name[64];
    unsigned char sha256[32];
    bool read;
    bool write;
} st_api_token;

struct st_api_deps {
    struct st_engine *engine;
    const st_api_token *tokens; /* none: reads are open, writes refused */
    size_t ntokens;
    st_store *store;
    st_metrics *metrics;
    st_ingest *ingest;
    st_writer *writer;
    int64_t started_ms;
    struct st_outbox *outbox;
    struct st_actions *actions;
    struct st_expose_cache *fleet_cache; /* set by st_api_start; NULL: none */
};

struct st_api_opts {
    const char *addr; /* host:port, default 127.0.0.1:9741 */
    /* How long /metrics reuses its fleet aggregates (http.metrics_cache);
     * 0: they are computed on every scrape. */
    int64_t metrics_cache_ms;
};

typedef struct st_api st_api;

/* Parses collector.yaml api.tokens: a list of {name, sha256 (hex of the
 * token's SHA-256), scopes: [read, write]}. Errors name file, line, key. */
int st_api_tokens_parse(const st_cfg_doc *doc, const st_cfg_node *list, st_api_token *out,
                        size_t *n, st_cfg_error *err);

int st_api_start(const struct st_api_opts *opts, const struct st_api_deps *deps, st_api **out);
void st_api_stop(st_api *api);
/* The port actually bound (useful with port 0). */
int st_api_port(st_api *api);

#endif
