/* The webhook outbox: findings handed to automation become deliveries that
 * are written to the store before anything is sent, then POSTed, signed, by
 * one sender thread with retries and backoff until a 2xx, a refusal or
 * max_age. A restart resumes every pending delivery from the store.
 *
 * At-least-once, not exactly-once: a crash (or st_outbox_stop) after the
 * receiver answered 2xx but before "delivered" reached the store sends the
 * delivery again after the restart, with the same Idempotency-Key header.
 * Receivers dedupe on that key (one key per finding and transition). */
#ifndef ST_OUTBOX_H
#define ST_OUTBOX_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "store.h"

#define ST_OUTBOX_MAX_ENDPOINTS 32
#define ST_OUTBOX_MAX_NAME 64              /* endpoint name bytes */
#define ST_OUTBOX_MAX_URL 2048             /* endpoint URL bytes */
#define ST_OUTBOX_MAX_SECRET 1024          /* bytes of one secret (inline or file) */
#define ST_OUTBOX_MAX_SECRETS 4            /* the current secret and up to 3 previous */
#define ST_OUTBOX_MAX_FILTER 64            /* items in one filter list */
#define ST_OUTBOX_MAX_BODY (256u << 10)    /* a delivery's JSON body */
#define ST_OUTBOX_MAX_RESPONSE (64u << 10) /* response bytes read (and discarded) */
#define ST_OUTBOX_MAX_PENDING 100000       /* pending deliveries; more: ST_EAGAIN */
#define ST_OUTBOX_MAX_LIST 1000            /* deliveries one listing returns */
#define ST_OUTBOX_SIG_MAX 512              /* X-Strata-Signature value with NUL */
#define ST_OUTBOX_KEEP_MS (7 * 86400000LL) /* delivered/failed records kept */
#define ST_OUTBOX_BACKOFF_BASE_MS 1000
#define ST_OUTBOX_BACKOFF_MAX_MS 300000
#define ST_OUTBOX_RETRY_AFTER_MAX_MS 3600000 /* a longer Retry-After is cut here */

/* One collector.yaml `webhooks:` entry. */
typedef struct st_outbox_endpoint {
    char *name;
    char *url;
    char *secret;                    /* after parsing: the current secret (read from secret_file) */
    char *secret_file;               /* a file holding the secret (trailing whitespace dropped) */
    st_cfg_strlist secrets_previous; /* still signed with during a rotation */
    char *ca_file;                   /* extra CA bundle for https */
    st_cfg_strlist layers;           /* filter; empty: every value */
    st_cfg_strlist severities;
    st_cfg_strlist optimizations;
    int64_t timeout_ms;         /* whole request */
    int64_t connect_timeout_ms; /* TCP and TLS connect */
    int64_t max_age_ms;         /* a delivery older than this fails */
    bool allow_http;            /* plain http to a non-loopback host */
} st_outbox_endpoint;

typedef struct st_outbox_config {
    st_outbox_endpoint *endpoints;
    size_t n;
} st_outbox_config;

/* The rows of one endpoint (for --help and docs). */
extern const st_cfg_map st_outbox_endpoint_rows[];

/* Parses collector.yaml `webhooks:` (a list of endpoints; NULL or empty:
 * none) into out: names unique, URLs http(s) only and https unless the host
 * is loopback (127.0.0.0/8, ::1, localhost) or allow_http is set, exactly
 * one of secret and secret_file (the file is read here), filter values
 * known. Errors name file, line and key ("webhooks[1].url"): ST_ECONFIG,
 * ST_ENOMEM. On error out holds nothing to release. */
int st_outbox_config_parse(const st_cfg_doc *doc, const st_cfg_node *list, st_outbox_config *out,
                           st_cfg_error *err);
void st_outbox_config_release(st_outbox_config *c);

/* True when the finding passes the endpoint's filter (layer, severity and
 * optimization type; case-insensitive; an empty list passes everything). */
bool st_outbox_filter_match(const st_outbox_endpoint *ep, const json_t *finding);

/* "t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>", one v1= per secret in
 * the order given, into out (ST_OUTBOX_SIG_MAX bytes). ST_EINVAL for no
 * secret or more than ST_OUTBOX_MAX_SECRETS. */
int st_outbox_sign(const char *const *secrets, size_t nsecrets, int64_t t_unix_s, const char *body,
                   size_t len, char *out, size_t outlen);

/* Lower-case hex SHA-256 of "<finding id>\n<transition>\n<unix ms>" where
 * unix ms is the finding's updated_unix_ms (the time of its last
 * transition): stable for one (finding, transition), different across
 * transitions. ST_EINVAL when the finding has no id. */
int st_outbox_idempotency_key(const json_t *finding, const char *transition, char out[65]);

/* The delay before retry number `attempts` (1 = after the first failure):
 * d = min(max_ms, base_ms * 2^(attempts-1)), then a jitter draws from
 * [d/2, d] using rnd. 0 for base or max picks the defaults. */
int64_t st_outbox_backoff_ms(int64_t base_ms, int64_t max_ms, uint32_t attempts, uint64_t rnd);

typedef struct st_outbox st_outbox;

struct st_outbox_opts {
    int64_t backoff_base_ms; /* 0: ST_OUTBOX_BACKOFF_BASE_MS */
    int64_t backoff_max_ms;  /* 0: ST_OUTBOX_BACKOFF_MAX_MS */
};

/* Opens the outbox on the store (borrowed; it must outlive the outbox) and
 * loads every pending delivery from it. cfg is taken over (its contents move
 * into the outbox and *cfg is zeroed), also on error. opts may be NULL.
 * ST_ENOMEM, ST_ESTORE. */
int st_outbox_new(st_store *store, st_outbox_config *cfg, const struct st_outbox_opts *opts,
                  st_outbox **out);
/* Starts the sender thread. */
int st_outbox_start(st_outbox *ob);
/* Ends the sender thread: a request in flight is abandoned (its delivery
 * stays pending and is sent again by the next start). Idempotent. */
void st_outbox_stop(st_outbox *ob);
/* Stops if needed and frees. NULL-safe. */
void st_outbox_free(st_outbox *ob);
/* Replaces the endpoints (SIGHUP) and takes cfg over, as st_outbox_new
 * does; findings enqueued from now on go to the new ones. */
int st_outbox_reconfigure(st_outbox *ob, st_outbox_config *cfg);

/* Creates one delivery per endpoint whose filter matches, each written to
 * the store ("outbox/<created ms, 16 digits>/<delivery id>") before this
 * returns, and wakes the sender. A (finding, transition, endpoint) already
 * queued is not queued again. Any thread; does no network I/O. ST_OK also
 * when no endpoint matches. ST_EINVAL (no id, bad transition), ST_ETOOBIG
 * (body over ST_OUTBOX_MAX_BODY), ST_EAGAIN (ST_OUTBOX_MAX_PENDING reached),
 * ST_ENOMEM, store errors. */
int st_outbox_enqueue(st_outbox *ob, const json_t *finding, const char *transition);

/* An st_dispatch_fn for the engine: enqueues with transition = the
 * finding's status, except that "open" (the engine calls before it moves
 * the finding) becomes "dispatched", also in the body's copy of the
 * finding. ST_OK once stored. */
int st_outbox_dispatch(void *outbox, const json_t *finding);

/* For /metrics. pending is a gauge; the rest count since st_outbox_new. */
struct st_outbox_stats {
    uint64_t pending;
    uint64_t delivered;
    uint64_t failed;
    uint64_t attempts;
};
int st_outbox_stats(st_outbox *ob, struct st_outbox_stats *out);

/* Deliveries in the store, newest first, without their bodies: status NULL
 * for all, else "pending", "delivered" or "failed"; limit 0 or over
 * ST_OUTBOX_MAX_LIST means ST_OUTBOX_MAX_LIST. Reads the store only, so the
 * API needs no outbox. ST_EINVAL (unknown status), ST_ENOMEM, store errors. */
int st_outbox_list(st_store *store, const char *status, size_t limit, json_t **out);

#endif
