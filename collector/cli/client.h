/* HTTP client for the collector's API (DESIGN.md "HTTP API"), built on
 * libcurl: GET and POST that return the HTTP status and the parsed JSON
 * body, with the body capped, plus builders for the query strings. */
#ifndef ST_CLI_CLIENT_H
#define ST_CLI_CLIENT_H

#include "buf.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ST_CLIENT_DEFAULT_SERVER "http://127.0.0.1:9741"
/* A response body larger than this is refused (ST_ETOOBIG). */
#define ST_CLIENT_BODY_MAX ((size_t)64 << 20)
/* Longest URL we build (query flags come from the command line). */
#define ST_CLIENT_URL_MAX ((size_t)64 << 10)
/* --match flags per query; a series has at most 32 labels. */
#define ST_CLIENT_MAX_MATCH 32
/* Room for st_response.error: 200 columns of UTF-8 and a NUL. */
#define ST_CLIENT_ERROR_LEN 1024

typedef struct st_client st_client;

typedef struct st_client_opts {
    const char *server; /* base URL; "host:port" means http://host:port */
    const char *token;  /* sent as "Authorization: Bearer"; NULL or "" for none */
    int64_t timeout_ms; /* whole request, connect included; > 0 */
} st_client_opts;

typedef struct st_response {
    long status;  /* HTTP status; 0 when no response arrived */
    json_t *json; /* parsed body (a reference the response owns) or NULL */
    /* Why the request failed: the server's {"error": "..."} text, the start
     * of a non-JSON error body, or libcurl's description of a transport
     * failure. Terminal-safe (control characters removed); "" on success. */
    char error[ST_CLIENT_ERROR_LEN];
} st_response;

/* libcurl's process-wide setup; call once from main before any thread
 * starts (libcurl requires that), and the cleanup once at the end. */
int st_client_global_init(void);
void st_client_global_cleanup(void);

/* Opens a client. The server URL is normalized (scheme added, trailing '/'
 * removed); only http and https are allowed. ST_EINVAL for a bad URL, a
 * token holding control characters (header injection) or a timeout <= 0;
 * ST_ENOMEM. *out is written only on success. */
int st_client_open(const st_client_opts *opts, st_client **out);
/* NULL-safe. */
void st_client_close(st_client *c);
/* The normalized base URL, for messages. */
const char *st_client_server(const st_client *c);

/* GET server+path (path starts with '/', query already escaped). Returns
 * ST_OK when an HTTP response arrived, whatever its status; the caller
 * checks out->status. A 2xx body must be JSON (else ST_EPARSE). Transport
 * failures: ST_ENET (connection refused, unreachable, name not resolved,
 * TLS), ST_ETIMEOUT, ST_ETOOBIG (body over ST_CLIENT_BODY_MAX), ST_EINVAL
 * (URL). out->error says why. Free out with st_response_free either way. */
int st_client_get(st_client *c, const char *path, st_response *out);
/* POST body (NULL sends "{}") as application/json; as st_client_get. */
int st_client_post(st_client *c, const char *path, const json_t *body, st_response *out);
/* Releases the JSON; NULL-safe; the response may be reused. */
void st_response_free(st_response *r);

/* Parameters of GET /v1/query. Strings are taken as they are and escaped
 * by the builder; NULL leaves a parameter out. */
typedef struct st_query_params {
    const char *metric;                     /* required */
    const char *agg;                        /* one of st_client_agg_valid */
    const char *match[ST_CLIENT_MAX_MATCH]; /* "label=value", one match= each */
    size_t n_match;
    const char *by;   /* "label,label" */
    const char *from; /* from st_client_time_param */
    const char *to;
    const char *step; /* a duration, "10s" */
    const char *top;  /* "10": only the worst N groups */
} st_query_params;

/* True for the aggregations the API names: p50 p90 p95 p99 avg min max sum
 * count rate ratio. */
bool st_client_agg_valid(const char *agg);

/* A time flag as the API wants it: "1h" or "-1h" -> "-1h" (relative, with
 * since or from/to alike), digits -> unix ms as given, "now" -> now_ms,
 * "2026-11-27T06:00:00Z" or with ".123Z" -> unix ms. ST_EINVAL otherwise
 * (also when it does not fit len). */
int st_client_time_param(const char *arg, int64_t now_ms, char *out, size_t len);

/* Appends "/v1/query?metric=...&..." with every value URL-escaped.
 * ST_EINVAL for a missing metric, an unknown agg, a match without a label
 * name and '=', or too many matches. */
int st_client_query_path(const st_query_params *q, st_buf *out);
/* Appends "/v1/findings" with the filters given (NULL or limit 0: none). */
int st_client_findings_path(const char *layer, const char *status, int64_t limit, st_buf *out);
/* Appends "/v1/findings/ID" or, with an action ("ack", "dismiss",
 * "applied"), "/v1/findings/ID/ACTION"; the id is escaped as one path
 * segment. ST_EINVAL for an empty id. */
int st_client_finding_path(const char *id, const char *action, st_buf *out);

#endif
