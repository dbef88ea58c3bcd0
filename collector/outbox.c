/* The webhook outbox: collector.yaml `webhooks:` endpoints, durable
 * deliveries in the store's key-value space, and one sender thread that
 * POSTs them with libcurl, signed with HMAC-SHA256, retrying with backoff.
 * The store is the truth; the in-memory list only orders the pending. */
#include "outbox.h"

#include "err.h"
#include "log.h"
#include "timeutil.h"
#include "util.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MOD "outbox"

#define KEY_PREFIX "outbox/"
#define IDX_PREFIX "outbox-idx/"
#define KEY_MAX 64         /* "outbox/" + 16 digits + "/" + a UUID, with NUL */
#define FINDING_ID_MAX 128 /* bytes of a finding id in keys and bodies */
#define TRANSITION_MAX 32  /* bytes of a transition name */
#define ERROR_MAX 256      /* bytes of last_error */
#define PRUNE_EVERY_MS 3600000
#define PRUNE_BATCH 256
#define KEY_PATH 64 /* "webhooks[31].secrets_previous" */

#define DONE (-1) /* attempt(): the delivery left the pending state */

/* ==== configuration ==== */

#define F(field) offsetof(st_outbox_endpoint, field)

static const st_cfg_map filter_rows[] = {
    {ST_CFG_STRLIST, "layers", NULL, F(layers),
     "only these layers (database, function, frontend, realtime, infrastructure)", NULL, 0, 0},
    {ST_CFG_STRLIST, "severities", NULL, F(severities),
     "only these severities (LOW, MEDIUM, HIGH, CRITICAL)", NULL, 0, 0},
    {ST_CFG_STRLIST, "optimizations", NULL, F(optimizations),
     "only these optimization types (ADD_INDEX, CACHING, ...)", NULL, 0, 0},
    {ST_CFG_STR, NULL, NULL, 0, NULL, NULL, 0, 0},
};

const st_cfg_map st_outbox_endpoint_rows[] = {
    {ST_CFG_STR, "name", NULL, F(name), "endpoint name, unique (shown in deliveries)", NULL, 0, 0},
    {ST_CFG_STR, "url", NULL, F(url), "where deliveries are POSTed (https unless loopback)", NULL,
     0, 0},
    {ST_CFG_STR, "secret", NULL, F(secret), "HMAC-SHA256 signing secret", NULL, 0, 0},
    {ST_CFG_STR, "secret_file", NULL, F(secret_file), "file holding the signing secret", NULL, 0,
     0},
    {ST_CFG_STRLIST, "secrets_previous", NULL, F(secrets_previous),
     "older secrets also signed with while receivers rotate", NULL, 0, 0},
    {ST_CFG_STR, "ca_file", NULL, F(ca_file), "CA bundle for the endpoint's certificate", NULL, 0,
     0},
    {ST_CFG_SECTION, "filter", NULL, 0, "which findings this endpoint receives", filter_rows, 0, 0},
    {ST_CFG_DURATION, "timeout", "10s", F(timeout_ms), "whole request", NULL, 100, 600000},
    {ST_CFG_DURATION, "connect_timeout", "3s", F(connect_timeout_ms), "TCP and TLS connect", NULL,
     100, 300000},
    {ST_CFG_DURATION, "max_age", "24h", F(max_age_ms), "a delivery older than this fails", NULL,
     1000, 30 * 86400000.0},
    {ST_CFG_BOOL, "allow_http", "false", F(allow_http),
     "allow plain http to hosts that are not loopback", NULL, 0, 0},
    {ST_CFG_STR, NULL, NULL, 0, NULL, NULL, 0, 0},
};

static const char *const layer_names[] = {"database", "function", "frontend", "realtime",
                                          "infrastructure"};
static const char *const severity_names[] = {"LOW", "MEDIUM", "HIGH", "CRITICAL"};

/* An error about one field of endpoint `prefix`, at that field's line. */
__attribute__((format(printf, 6, 7))) static int
field_fail(st_cfg_error *err, const st_cfg_doc *doc, const st_cfg_node *map, const char *prefix,
           const char *field, const char *fmt, ...)
{
    const st_cfg_node *n = field != NULL ? st_cfg_get(map, field) : NULL;
    char key[KEY_PATH + 32];
    char why[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    if (field != NULL) {
        snprintf(key, sizeof(key), "%s.%s", prefix, field);
    } else {
        snprintf(key, sizeof(key), "%s", prefix);
    }
    return st_cfg_fail(err, doc, n != NULL ? n : map, key, "%s", why);
}

/* st_cfg_bind names keys relative to the endpoint ("key 'url'"); readers
 * need to know which endpoint, so "key 'webhooks[1].url'". */
static void prefix_key(st_cfg_error *err, const char *prefix)
{
    char old[sizeof(err->msg)];
    const char *at = strstr(err->msg, "key '");
    size_t off;
    if (at == NULL) {
        return;
    }
    memcpy(old, err->msg, sizeof(old));
    off = (size_t)(at - err->msg) + strlen("key '");
    snprintf(err->msg, sizeof(err->msg), "%.*s%s.%s", (int)off, old, prefix, old + off);
}

static bool name_ok(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n <= ST_OUTBOX_MAX_NAME &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == n;
}

static bool host_is_loopback(const char *host)
{
    char buf[64];
    unsigned char a[16];
    size_t n = strlen(host);
    if (strcasecmp(host, "localhost") == 0) {
        return true;
    }
    if (n >= 2 && n < sizeof(buf) && host[0] == '[' && host[n - 1] == ']') {
        snprintf(buf, sizeof(buf), "%.*s", (int)(n - 2), host + 1);
        return inet_pton(AF_INET6, buf, a) == 1 && IN6_IS_ADDR_LOOPBACK((struct in6_addr *)a);
    }
    return inet_pton(AF_INET, host, a) == 1 && a[0] == 127;
}

/* http(s) only; plain http only to loopback or with allow_http. */
static int check_url(const st_cfg_doc *doc, const st_cfg_node *map, const char *prefix,
                     const st_outbox_endpoint *ep, st_cfg_error *err)
{
    CURLU *u;
    char *scheme = NULL;
    char *host = NULL;
    int rv = ST_OK;
    if (ep->url == NULL || ep->url[0] == '\0') {
        return field_fail(err, doc, map, prefix, NULL, "url is required");
    }
    if (strlen(ep->url) > ST_OUTBOX_MAX_URL) {
        return field_fail(err, doc, map, prefix, "url", "longer than %d bytes", ST_OUTBOX_MAX_URL);
    }
    if ((u = curl_url()) == NULL) {
        return field_fail(err, doc, map, prefix, "url", "out of memory");
    }
    if (curl_url_set(u, CURLUPART_URL, ep->url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        rv = field_fail(err, doc, map, prefix, "url", "'%.200s' is not a valid http(s) URL",
                        ep->url);
    } else if (strcmp(scheme, "https") != 0 && strcmp(scheme, "http") != 0) {
        rv = field_fail(err, doc, map, prefix, "url", "scheme '%.16s' refused: use https", scheme);
    } else if (strcmp(scheme, "http") == 0 && !ep->allow_http && !host_is_loopback(host)) {
        rv = field_fail(err, doc, map, prefix, "url",
                        "plain http to '%.100s' refused: use https, or set allow_http: true "
                        "(loopback hosts are exempt)",
                        host);
    }
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return rv;
}

static int read_secret_file(const st_cfg_doc *doc, const st_cfg_node *map, const char *prefix,
                            st_outbox_endpoint *ep, st_cfg_error *err)
{
    char *buf = NULL;
    size_t len = 0;
    int rv = st_file_read(ep->secret_file, ST_OUTBOX_MAX_SECRET + 64, &buf, &len);
    if (rv != ST_OK) {
        return field_fail(err, doc, map, prefix, "secret_file", "cannot read '%.200s': %s",
                          ep->secret_file, st_strerror(rv));
    }
    while (len > 0 && strchr(" \t\r\n", buf[len - 1]) != NULL) {
        buf[--len] = '\0';
    }
    if (strlen(buf) != len) {
        free(buf);
        return field_fail(err, doc, map, prefix, "secret_file", "'%.200s' holds a NUL byte",
                          ep->secret_file);
    }
    ep->secret = buf;
    return ST_OK;
}

static int check_secrets(const st_cfg_doc *doc, const st_cfg_node *map, const char *prefix,
                         st_outbox_endpoint *ep, st_cfg_error *err)
{
    int rv;
    if (ep->secret != NULL && ep->secret_file != NULL) {
        return field_fail(err, doc, map, prefix, "secret_file",
                          "set secret or secret_file, not both");
    }
    if (ep->secret == NULL && ep->secret_file == NULL) {
        return field_fail(err, doc, map, prefix, NULL,
                          "a signing secret is required: set secret or secret_file");
    }
    if (ep->secret_file != NULL && (rv = read_secret_file(doc, map, prefix, ep, err)) != ST_OK) {
        return rv;
    }
    if (ep->secret[0] == '\0' || strlen(ep->secret) > ST_OUTBOX_MAX_SECRET) {
        return field_fail(err, doc, map, prefix, ep->secret_file ? "secret_file" : "secret",
                          "the secret must hold 1 to %d bytes", ST_OUTBOX_MAX_SECRET);
    }
    if (ep->secrets_previous.n > ST_OUTBOX_MAX_SECRETS - 1) {
        return field_fail(err, doc, map, prefix, "secrets_previous", "at most %d previous secrets",
                          ST_OUTBOX_MAX_SECRETS - 1);
    }
    for (size_t i = 0; i < ep->secrets_previous.n; i++) {
        size_t n = strlen(ep->secrets_previous.v[i]);
        if (n == 0 || n > ST_OUTBOX_MAX_SECRET) {
            return field_fail(err, doc, map, prefix, "secrets_previous",
                              "item %zu must hold 1 to %d bytes", i, ST_OUTBOX_MAX_SECRET);
        }
    }
    return ST_OK;
}

static bool one_of(const char *v, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcasecmp(v, names[i]) == 0) {
            return true;
        }
    }
    return false;
}

static int check_filter(const st_cfg_doc *doc, const st_cfg_node *map, const char *prefix,
                        const st_outbox_endpoint *ep, st_cfg_error *err)
{
    const st_cfg_node *filter = st_cfg_get(map, "filter");
    char fp[KEY_PATH + 16];
    snprintf(fp, sizeof(fp), "%s.filter", prefix);
    if (ep->layers.n > ST_OUTBOX_MAX_FILTER || ep->severities.n > ST_OUTBOX_MAX_FILTER ||
        ep->optimizations.n > ST_OUTBOX_MAX_FILTER) {
        return field_fail(err, doc, map, prefix, "filter", "at most %d items in a list",
                          ST_OUTBOX_MAX_FILTER);
    }
    for (size_t i = 0; i < ep->layers.n; i++) {
        if (!one_of(ep->layers.v[i], layer_names, ST_ARRAY_LEN(layer_names))) {
            return field_fail(err, doc, filter, fp, "layers", "unknown layer '%.64s'",
                              ep->layers.v[i]);
        }
    }
    for (size_t i = 0; i < ep->severities.n; i++) {
        if (!one_of(ep->severities.v[i], severity_names, ST_ARRAY_LEN(severity_names))) {
            return field_fail(err, doc, filter, fp, "severities",
                              "unknown severity '%.64s' (LOW, MEDIUM, HIGH, CRITICAL)",
                              ep->severities.v[i]);
        }
    }
    for (size_t i = 0; i < ep->optimizations.n; i++) {
        const char *o = ep->optimizations.v[i];
        size_t n = strlen(o);
        if (n == 0 || n > 64 ||
            strspn(o, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") != n) {
            return field_fail(err, doc, filter, fp, "optimizations",
                              "'%.64s' is not an optimization type", o);
        }
    }
    return ST_OK;
}

static int parse_endpoint(const st_cfg_doc *doc, const st_cfg_node *map, size_t i,
                          st_outbox_endpoint *ep, st_cfg_error *err)
{
    char prefix[KEY_PATH];
    int rv;
    snprintf(prefix, sizeof(prefix), "webhooks[%zu]", i);
    if (st_cfg_node_type(map) != ST_CFG_NODE_MAP) {
        return st_cfg_fail(err, doc, map, prefix, "expected a mapping {name, url, secret, ...}");
    }
    if ((rv = st_cfg_bind(doc, map, st_outbox_endpoint_rows, ep, err)) != ST_OK) {
        prefix_key(err, prefix);
        return rv;
    }
    if (ep->name == NULL) {
        return field_fail(err, doc, map, prefix, NULL, "name is required");
    }
    if (!name_ok(ep->name)) {
        return field_fail(err, doc, map, prefix, "name", "1 to %d characters of A-Z a-z 0-9 _ . -",
                          ST_OUTBOX_MAX_NAME);
    }
    if ((rv = check_url(doc, map, prefix, ep, err)) != ST_OK ||
        (rv = check_secrets(doc, map, prefix, ep, err)) != ST_OK ||
        (rv = check_filter(doc, map, prefix, ep, err)) != ST_OK) {
        return rv;
    }
    if (ep->connect_timeout_ms > ep->timeout_ms) {
        return field_fail(err, doc, map, prefix, "connect_timeout",
                          "longer than the whole request's timeout");
    }
    return ST_OK;
}

int st_outbox_config_parse(const st_cfg_doc *doc, const st_cfg_node *list, st_outbox_config *out,
                           st_cfg_error *err)
{
    st_outbox_config c = {NULL, 0};
    size_t n;
    int rv = ST_OK;
    memset(out, 0, sizeof(*out));
    if (list == NULL || (st_cfg_node_type(list) == ST_CFG_NODE_SCALAR && st_cfg_is_null(list))) {
        return ST_OK;
    }
    if (st_cfg_node_type(list) != ST_CFG_NODE_SEQ) {
        return st_cfg_fail(err, doc, list, "webhooks", "expected a list of endpoints");
    }
    if ((n = st_cfg_seq_len(list)) > ST_OUTBOX_MAX_ENDPOINTS) {
        return st_cfg_fail(err, doc, list, "webhooks", "at most %d endpoints",
                           ST_OUTBOX_MAX_ENDPOINTS);
    }
    if (n == 0) {
        return ST_OK;
    }
    if ((c.endpoints = calloc(n, sizeof(*c.endpoints))) == NULL) {
        st_cfg_fail(err, doc, list, "webhooks", "out of memory");
        return ST_ENOMEM;
    }
    for (size_t i = 0; i < n && rv == ST_OK; i++) {
        c.n = i + 1; /* released on error, also when half bound */
        rv = parse_endpoint(doc, st_cfg_seq_at(list, i), i, &c.endpoints[i], err);
        for (size_t j = 0; j < i && rv == ST_OK; j++) {
            if (strcmp(c.endpoints[j].name, c.endpoints[i].name) == 0) {
                char prefix[KEY_PATH];
                snprintf(prefix, sizeof(prefix), "webhooks[%zu]", i);
                rv =
                    field_fail(err, doc, st_cfg_seq_at(list, i), prefix, "name",
                               "'%s' is already the name of webhooks[%zu]", c.endpoints[i].name, j);
            }
        }
    }
    if (rv != ST_OK) {
        st_outbox_config_release(&c);
        return rv;
    }
    *out = c;
    return ST_OK;
}

void st_outbox_config_release(st_outbox_config *c)
{
    if (c == NULL) {
        return;
    }
    for (size_t i = 0; i < c->n; i++) {
        st_cfg_release(st_outbox_endpoint_rows, &c->endpoints[i]);
    }
    free(c->endpoints);
    c->endpoints = NULL;
    c->n = 0;
}

/* ==== filter, signature, keys, backoff ==== */

static bool passes(const st_cfg_strlist *l, const char *v)
{
    if (l->n == 0) {
        return true;
    }
    return v != NULL && one_of(v, (const char *const *)l->v, l->n);
}

bool st_outbox_filter_match(const st_outbox_endpoint *ep, const json_t *finding)
{
    const json_t *opt = json_object_get(finding, "optimization");
    return passes(&ep->layers, json_string_value(json_object_get(finding, "layer"))) &&
           passes(&ep->severities, json_string_value(json_object_get(finding, "severity"))) &&
           passes(&ep->optimizations, json_string_value(json_object_get(opt, "type")));
}

static int hmac_hex(const char *secret, const unsigned char *msg, size_t len, char out[65])
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    if (HMAC(EVP_sha256(), secret, (int)strlen(secret), msg, len, mac, &mac_len) == NULL ||
        mac_len != 32) {
        ST_ERROR(MOD, "HMAC-SHA256 failed");
        return ST_EINVAL;
    }
    st_hex_encode(mac, 32, out);
    return ST_OK;
}

int st_outbox_sign(const char *const *secrets, size_t nsecrets, int64_t t_unix_s, const char *body,
                   size_t len, char *out, size_t outlen)
{
    char t[24];
    int tlen = snprintf(t, sizeof(t), "%" PRId64, t_unix_s);
    unsigned char *msg;
    size_t off;
    int rv = ST_OK;
    if (nsecrets == 0 || nsecrets > ST_OUTBOX_MAX_SECRETS || len > ST_OUTBOX_MAX_BODY ||
        outlen < (size_t)tlen + 3 + nsecrets * 68) {
        return ST_EINVAL;
    }
    /* The signed message is "<t>.<body>": the timestamp is covered, so a
     * receiver can refuse old replays. */
    if ((msg = malloc((size_t)tlen + 1 + len)) == NULL) {
        return ST_ENOMEM;
    }
    memcpy(msg, t, (size_t)tlen);
    msg[tlen] = '.';
    memcpy(msg + tlen + 1, body, len);
    off = (size_t)snprintf(out, outlen, "t=%s", t);
    for (size_t i = 0; i < nsecrets && rv == ST_OK; i++) {
        char hex[65];
        if (secrets[i] == NULL || secrets[i][0] == '\0') {
            rv = ST_EINVAL;
        } else if ((rv = hmac_hex(secrets[i], msg, (size_t)tlen + 1 + len, hex)) == ST_OK) {
            off += (size_t)snprintf(out + off, outlen - off, ",v1=%s", hex);
        }
    }
    free(msg);
    return rv;
}

/* The time of the finding's last transition: updated_unix_ms, else the
 * newest history entry. */
static int64_t transition_ms(const json_t *finding)
{
    const json_t *u = json_object_get(finding, "updated_unix_ms");
    const json_t *h = json_object_get(finding, "history");
    if (json_is_integer(u)) {
        return (int64_t)json_integer_value(u);
    }
    if (json_array_size(h) > 0) {
        return (int64_t)json_integer_value(
            json_object_get(json_array_get(h, json_array_size(h) - 1), "unix_ms"));
    }
    return 0;
}

int st_outbox_idempotency_key(const json_t *finding, const char *transition, char out[65])
{
    const char *id = json_string_value(json_object_get(finding, "id"));
    char msg[FINDING_ID_MAX + TRANSITION_MAX + 32];
    unsigned char dig[SHA256_DIGEST_LENGTH];
    int n;
    if (id == NULL || id[0] == '\0' || strlen(id) > FINDING_ID_MAX || transition == NULL ||
        transition[0] == '\0' || strlen(transition) > TRANSITION_MAX) {
        return ST_EINVAL;
    }
    n = snprintf(msg, sizeof(msg), "%s\n%s\n%" PRId64, id, transition, transition_ms(finding));
    if (n < 0 || (size_t)n >= sizeof(msg)) {
        return ST_EINVAL;
    }
    SHA256((const unsigned char *)msg, (size_t)n, dig);
    st_hex_encode(dig, sizeof(dig), out);
    return ST_OK;
}

int64_t st_outbox_backoff_ms(int64_t base_ms, int64_t max_ms, uint32_t attempts, uint64_t rnd)
{
    int64_t d;
    int64_t half;
    base_ms = base_ms > 0 ? base_ms : ST_OUTBOX_BACKOFF_BASE_MS;
    max_ms = max_ms > 0 ? max_ms : ST_OUTBOX_BACKOFF_MAX_MS;
    max_ms = ST_MAX(max_ms, base_ms);
    d = base_ms;
    for (uint32_t i = 1; i < attempts && d < max_ms; i++) {
        d = d > max_ms / 2 ? max_ms : d * 2;
    }
    d = ST_MIN(d, max_ms);
    /* Equal jitter: at least half the delay, so a failing receiver is not
     * hammered, and spread so that many deliveries do not retry together. */
    half = d / 2;
    return half + (int64_t)(rnd % (uint64_t)(d - half + 1));
}

/* ==== the outbox ==== */

struct pending {
    char key[KEY_MAX];
    int64_t next_ms;
};

struct st_outbox {
    st_store *store;
    st_outbox_config cfg;
    /* cfg: written by st_outbox_reconfigure, read by enqueue and by the
     * sender thread for a whole attempt (it keeps a pointer to its endpoint). */
    pthread_rwlock_t cfg_lock;
    int64_t base_ms;
    int64_t max_ms;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* on CLOCK_MONOTONIC */
    pthread_t thread;
    bool running;
    bool stop;               /* under mu */
    atomic_bool abort;       /* read by curl's progress callback */
    struct pending *pending; /* under mu; the one in flight is taken out */
    size_t npending;
    size_t cap;
    bool inflight;
    uint64_t delivered; /* under mu */
    uint64_t failed;
    uint64_t attempts;
    uint64_t rng;
    int64_t last_created_ms; /* under mu: keys sort in creation order */
    int64_t next_prune_ms;   /* sender thread only */
    CURL *curl;              /* sender thread only */
    bool curl_global;        /* curl_global_init succeeded: cleanup owed */
};

static uint64_t rng_next(st_outbox *ob)
{
    uint64_t x = ob->rng; /* xorshift64*: jitter only, not secrets */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    ob->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static int pending_add(st_outbox *ob, const char *key, int64_t next_ms)
{
    if (strlen(key) >= KEY_MAX) {
        return ST_EINVAL;
    }
    if (ob->npending == ob->cap) {
        size_t cap = ob->cap ? ob->cap * 2 : 64;
        struct pending *p;
        if (ob->npending >= ST_OUTBOX_MAX_PENDING) {
            return ST_EAGAIN;
        }
        if ((p = realloc(ob->pending, cap * sizeof(*p))) == NULL) {
            return ST_ENOMEM;
        }
        ob->pending = p;
        ob->cap = cap;
    }
    snprintf(ob->pending[ob->npending].key, KEY_MAX, "%s", key);
    ob->pending[ob->npending].next_ms = next_ms;
    ob->npending++;
    return ST_OK;
}

/* The index of the pending delivery due first (ties: created first), or
 * SIZE_MAX. A linear scan: the list is short unless a receiver is down. */
static size_t pending_first(const st_outbox *ob)
{
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < ob->npending; i++) {
        const struct pending *p = &ob->pending[i];
        if (best == SIZE_MAX || p->next_ms < ob->pending[best].next_ms ||
            (p->next_ms == ob->pending[best].next_ms &&
             strcmp(p->key, ob->pending[best].key) < 0)) {
            best = i;
        }
    }
    return best;
}

static void pending_take(st_outbox *ob, size_t i, struct pending *out)
{
    *out = ob->pending[i];
    ob->pending[i] = ob->pending[--ob->npending];
}

/* ---- records ---- */

static int record_save(st_outbox *ob, const char *key, const json_t *rec)
{
    char *s = json_dumps(rec, JSON_COMPACT);
    int rv;
    if (s == NULL) {
        return ST_ENOMEM;
    }
    rv = st_store_kv_put(ob->store, key, s, strlen(s));
    free(s);
    if (rv != ST_OK) {
        ST_ERROR(MOD, "saving delivery %s: %s", key, st_strerror(rv));
    }
    return rv;
}

/* *out is NULL when the record is gone or unreadable (nothing to send). */
static int record_load(st_outbox *ob, const char *key, json_t **out)
{
    char *val = NULL;
    size_t len = 0;
    int rv = st_store_kv_get(ob->store, key, &val, &len);
    *out = NULL;
    if (rv == ST_ENOENT) {
        return ST_OK;
    }
    if (rv != ST_OK) {
        return rv;
    }
    if ((*out = json_loadb(val, len, 0, NULL)) == NULL || !json_is_object(*out)) {
        ST_ERROR(MOD, "delivery %s is not a JSON object; skipped", key);
        json_decref(*out);
        *out = NULL;
    }
    free(val);
    return ST_OK;
}

static int64_t rec_int(const json_t *rec, const char *k)
{
    return (int64_t)json_integer_value(json_object_get(rec, k));
}

static const char *rec_str(const json_t *rec, const char *k)
{
    const char *s = json_string_value(json_object_get(rec, k));
    return s != NULL ? s : "";
}

static int resume_each(void *arg, const char *key, const char *val, size_t len)
{
    st_outbox *ob = arg;
    json_t *rec = json_loadb(val, len, 0, NULL);
    ob->last_created_ms = ST_MAX(ob->last_created_ms, rec_int(rec, "created_unix_ms"));
    if (rec != NULL && strcmp(rec_str(rec, "status"), "pending") == 0) {
        int rv = pending_add(ob, key, rec_int(rec, "next_attempt_unix_ms"));
        if (rv != ST_OK) {
            ST_WARN(MOD, "delivery %s not resumed: %s", key, st_strerror(rv));
        }
    }
    json_decref(rec);
    return 0;
}

/* ---- enqueue ---- */

static bool transition_ok(const char *t)
{
    size_t n = t != NULL ? strlen(t) : 0;
    return n > 0 && n <= TRANSITION_MAX && strspn(t, "abcdefghijklmnopqrstuvwxyz_") == n;
}

/* {event, finding} with the finding's status set to the transition it
 * announces. */
static int make_body(const json_t *finding, const char *transition, char **out)
{
    char event[TRANSITION_MAX + 16];
    json_t *copy = json_deep_copy(finding);
    json_t *body;
    char *s;
    if (copy == NULL) {
        return ST_ENOMEM;
    }
    json_object_set_new(copy, "status", json_string(transition));
    snprintf(event, sizeof(event), "finding.%s", transition);
    if ((body = json_pack("{s:s,s:o}", "event", event, "finding", copy)) == NULL) {
        return ST_ENOMEM;
    }
    s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (s == NULL) {
        return ST_ENOMEM;
    }
    if (strlen(s) > ST_OUTBOX_MAX_BODY) {
        free(s);
        return ST_ETOOBIG;
    }
    *out = s;
    return ST_OK;
}

struct delivery_in {
    const char *finding_id;
    const char *transition;
    const char *ikey;
    const char *body;
};

static json_t *record_new(const st_outbox_endpoint *ep, const struct delivery_in *in,
                          const char *id, int64_t now)
{
    char event[TRANSITION_MAX + 16];
    snprintf(event, sizeof(event), "finding.%s", in->transition);
    return json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:I,s:i,s:I,s:n,s:s,s:n,s:n,s:n,s:s}", "id", id,
                     "endpoint", ep->name, "finding_id", in->finding_id, "transition",
                     in->transition, "event", event, "idempotency_key", in->ikey, "created_unix_ms",
                     (json_int_t)now, "attempts", 0, "next_attempt_unix_ms", (json_int_t)now,
                     "last_attempt_unix_ms", "status", "pending", "last_error", "last_status",
                     "delivered_unix_ms", "body", in->body);
}

static int enqueue_one(st_outbox *ob, const st_outbox_endpoint *ep, const struct delivery_in *in)
{
    char idx[ST_STORE_MAX_KEY + 1];
    char key[KEY_MAX];
    char id[37];
    uint8_t raw[16];
    char *old = NULL;
    int64_t now;
    json_t *rec;
    bool full;
    int rv;
    snprintf(idx, sizeof(idx), IDX_PREFIX "%s/%s", in->ikey, ep->name);
    if ((rv = st_store_kv_get(ob->store, idx, &old, NULL)) != ST_ENOENT) {
        free(old); /* queued before (an engine retry after a crash): once is enough */
        return rv;
    }
    pthread_mutex_lock(&ob->mu);
    full = ob->npending + ob->inflight >= ST_OUTBOX_MAX_PENDING;
    /* One millisecond apart at least, so "newest first" is well defined. */
    now = ST_MAX(st_time_wall_ms(), ob->last_created_ms + 1);
    ob->last_created_ms = now;
    pthread_mutex_unlock(&ob->mu);
    if (full) {
        return ST_EAGAIN;
    }
    if ((rv = st_uuid_random(raw)) != ST_OK) {
        return rv;
    }
    st_uuid_format(raw, id);
    snprintf(key, sizeof(key), KEY_PREFIX "%016" PRId64 "/%s", now, id);
    if ((rec = record_new(ep, in, id, now)) == NULL) {
        return ST_ENOMEM;
    }
    rv = record_save(ob, key, rec);
    json_decref(rec);
    if (rv != ST_OK) {
        return rv;
    }
    /* Stored: from here on it will be sent, whatever else fails. */
    if (st_store_kv_put(ob->store, idx, key, strlen(key)) != ST_OK) {
        ST_WARN(MOD, "delivery %s: index not saved (a retried dispatch may queue it twice)", id);
    }
    pthread_mutex_lock(&ob->mu);
    if ((rv = pending_add(ob, key, now)) != ST_OK) {
        ST_WARN(MOD, "delivery %s waits for the next start: %s", id, st_strerror(rv));
    }
    pthread_mutex_unlock(&ob->mu);
    return ST_OK;
}

int st_outbox_enqueue(st_outbox *ob, const json_t *finding, const char *transition)
{
    struct delivery_in in = {json_string_value(json_object_get(finding, "id")), transition, NULL,
                             NULL};
    char ikey[65];
    char *body = NULL;
    int rv;
    if (ob == NULL || !json_is_object(finding) || !transition_ok(transition)) {
        return ST_EINVAL;
    }
    if ((rv = st_outbox_idempotency_key(finding, transition, ikey)) != ST_OK ||
        !st_utf8_valid(in.finding_id, strlen(in.finding_id))) {
        return rv != ST_OK ? rv : ST_EINVAL;
    }
    in.ikey = ikey;
    pthread_rwlock_rdlock(&ob->cfg_lock);
    for (size_t i = 0; i < ob->cfg.n && rv == ST_OK; i++) {
        const st_outbox_endpoint *ep = &ob->cfg.endpoints[i];
        if (!st_outbox_filter_match(ep, finding)) {
            continue;
        }
        if (body == NULL && (rv = make_body(finding, transition, &body)) != ST_OK) {
            break;
        }
        in.body = body;
        rv = enqueue_one(ob, ep, &in);
    }
    pthread_rwlock_unlock(&ob->cfg_lock);
    free(body);
    pthread_mutex_lock(&ob->mu);
    pthread_cond_signal(&ob->cv);
    pthread_mutex_unlock(&ob->mu);
    return rv;
}

int st_outbox_dispatch(void *outbox, const json_t *finding)
{
    const char *s = json_string_value(json_object_get(finding, "status"));
    if (s == NULL) {
        return ST_EINVAL;
    }
    /* The engine hands a finding over before it moves it to dispatched. */
    return st_outbox_enqueue(outbox, finding, strcmp(s, "open") == 0 ? "dispatched" : s);
}

/* ---- one HTTP attempt ---- */

struct result {
    CURLcode code;
    long http;
    int64_t retry_after_ms;
    bool aborted; /* by st_outbox_stop: nothing is recorded */
    bool body_cut;
    size_t body_bytes;
};

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    struct result *r = arg;
    (void)p;
    r->body_bytes += size * n;
    if (r->body_bytes > ST_OUTBOX_MAX_RESPONSE) {
        r->body_cut = true;
        return 0; /* stop reading: the status line has been seen */
    }
    return size * n;
}

static int progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    st_outbox *ob = arg;
    (void)dt;
    (void)dn;
    (void)ut;
    (void)un;
    return atomic_load(&ob->abort) ? 1 : 0;
}

/* Appends "Name: value" after checking value holds no control bytes (a
 * record read back from the store must not smuggle headers). */
static int header_add(struct curl_slist **h, const char *name, const char *value)
{
    char line[ST_OUTBOX_SIG_MAX + 64];
    struct curl_slist *n;
    for (const char *p = value; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            return ST_EINVAL;
        }
    }
    /* "Name:" with nothing after the colon makes curl drop that header. */
    if ((size_t)snprintf(line, sizeof(line), value[0] ? "%s: %s" : "%s:%s", name, value) >=
        sizeof(line)) {
        return ST_ETOOBIG;
    }
    if ((n = curl_slist_append(*h, line)) == NULL) {
        return ST_ENOMEM;
    }
    *h = n;
    return ST_OK;
}

static int build_headers(const st_outbox_endpoint *ep, const json_t *rec, const char *body,
                         size_t len, struct curl_slist **out)
{
    const char *secrets[ST_OUTBOX_MAX_SECRETS];
    size_t ns = 0;
    char sig[ST_OUTBOX_SIG_MAX];
    struct curl_slist *h = NULL;
    int rv;
    secrets[ns++] = ep->secret;
    for (size_t i = 0; i < ep->secrets_previous.n && ns < ST_OUTBOX_MAX_SECRETS; i++) {
        secrets[ns++] = ep->secrets_previous.v[i];
    }
    if ((rv = st_outbox_sign(secrets, ns, st_time_wall_ms() / 1000, body, len, sig, sizeof(sig))) !=
            ST_OK ||
        (rv = header_add(&h, "Content-Type", "application/json")) != ST_OK ||
        (rv = header_add(&h, "Idempotency-Key", rec_str(rec, "idempotency_key"))) != ST_OK ||
        (rv = header_add(&h, "X-Strata-Event", rec_str(rec, "event"))) != ST_OK ||
        (rv = header_add(&h, "X-Strata-Delivery", rec_str(rec, "id"))) != ST_OK ||
        (rv = header_add(&h, "X-Strata-Signature", sig)) != ST_OK ||
        (rv = header_add(&h, "Expect", "")) != ST_OK) {
        curl_slist_free_all(h);
        return rv;
    }
    *out = h;
    return ST_OK;
}

static void set_options(st_outbox *ob, const st_outbox_endpoint *ep, const char *body, size_t len,
                        struct curl_slist *h, struct result *r)
{
    CURL *c = ob->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, ep->url);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "strata/" ST_VERSION);
    /* A redirect could carry a signed finding anywhere: never follow. */
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)ep->connect_timeout_ms);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)ep->timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, ob);
    if (ep->ca_file != NULL) {
        curl_easy_setopt(c, CURLOPT_CAINFO, ep->ca_file);
    }
}

static int send_once(st_outbox *ob, const st_outbox_endpoint *ep, const json_t *rec,
                     struct result *r)
{
    const json_t *b = json_object_get(rec, "body");
    const char *body = json_string_value(b);
    size_t len = json_string_length(b);
    struct curl_slist *h = NULL;
    curl_off_t ra = 0;
    int rv;
    memset(r, 0, sizeof(*r));
    if (body == NULL || len > ST_OUTBOX_MAX_BODY) {
        return ST_EINVAL;
    }
    if ((rv = build_headers(ep, rec, body, len, &h)) != ST_OK) {
        return rv;
    }
    set_options(ob, ep, body, len, h, r);
    r->code = curl_easy_perform(ob->curl);
    r->aborted = r->code == CURLE_ABORTED_BY_CALLBACK && atomic_load(&ob->abort);
    curl_easy_getinfo(ob->curl, CURLINFO_RESPONSE_CODE, &r->http);
    if (curl_easy_getinfo(ob->curl, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK && ra > 0) {
        r->retry_after_ms = ra > ST_OUTBOX_RETRY_AFTER_MAX_MS / 1000 ? ST_OUTBOX_RETRY_AFTER_MAX_MS
                                                                     : (int64_t)ra * 1000;
    }
    if (r->code == CURLE_WRITE_ERROR && r->body_cut) {
        r->code = CURLE_OK; /* an overlong answer still has its status */
    }
    curl_easy_setopt(ob->curl, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(h);
    return ST_OK;
}

/* ---- outcomes ---- */

static const st_outbox_endpoint *endpoint_find(const st_outbox *ob, const char *name)
{
    for (size_t i = 0; i < ob->cfg.n; i++) {
        if (strcmp(ob->cfg.endpoints[i].name, name) == 0) {
            return &ob->cfg.endpoints[i];
        }
    }
    return NULL;
}

static void count(st_outbox *ob, uint64_t *counter)
{
    pthread_mutex_lock(&ob->mu);
    (*counter)++;
    pthread_mutex_unlock(&ob->mu);
}

/* Ends a delivery as failed; DONE, or a retry time when the store refused
 * the write (the record still says pending). */
static int64_t finish_failed(st_outbox *ob, const char *key, json_t *rec, const char *why)
{
    int64_t now = st_time_wall_ms();
    json_object_set_new(rec, "status", json_string("failed"));
    json_object_set_new(rec, "last_error", json_string(why));
    if (record_save(ob, key, rec) != ST_OK) {
        return now + ob->base_ms;
    }
    ST_WARN(MOD, "delivery %s to %s failed: %s", rec_str(rec, "id"), rec_str(rec, "endpoint"), why);
    count(ob, &ob->failed);
    return DONE;
}

static int64_t give_up(st_outbox *ob, const char *key, json_t *rec, int64_t age)
{
    char dur[32];
    char why[ERROR_MAX + 64];
    st_duration_format(age >= 1000 ? age - age % 1000 : age, dur, sizeof(dur));
    snprintf(why, sizeof(why), "gave up after %s (%" PRId64 " attempts; last: %.200s)", dur,
             rec_int(rec, "attempts"),
             json_is_string(json_object_get(rec, "last_error")) ? rec_str(rec, "last_error")
                                                                : "none");
    return finish_failed(ob, key, rec, why);
}

static void describe(const struct result *r, char *buf, size_t len)
{
    if (r->code != CURLE_OK) {
        snprintf(buf, len, "%s", curl_easy_strerror(r->code));
    } else {
        snprintf(buf, len, "HTTP %ld", r->http);
    }
}

static int64_t schedule_retry(st_outbox *ob, const st_outbox_endpoint *ep, const char *key,
                              json_t *rec, const struct result *r, int64_t now)
{
    int64_t attempts = rec_int(rec, "attempts");
    int64_t delay;
    int64_t deadline = rec_int(rec, "created_unix_ms") + ep->max_age_ms + 1;
    int64_t next;
    pthread_mutex_lock(&ob->mu);
    delay = st_outbox_backoff_ms(ob->base_ms, ob->max_ms, (uint32_t)attempts, rng_next(ob));
    pthread_mutex_unlock(&ob->mu);
    if (r->retry_after_ms > 0 && (r->http == 429 || r->http == 503)) {
        delay = r->retry_after_ms;
    }
    /* Past max_age there is no point waiting: the next look gives up. */
    next = ST_MIN(now + delay, deadline);
    json_object_set_new(rec, "next_attempt_unix_ms", json_integer(next));
    if (record_save(ob, key, rec) != ST_OK) {
        return now + ob->base_ms;
    }
    ST_DEBUG(MOD, "delivery %s to %s: %s; retry in %" PRId64 " ms", rec_str(rec, "id"), ep->name,
             rec_str(rec, "last_error"), next - now);
    return next;
}

static int64_t record_result(st_outbox *ob, const st_outbox_endpoint *ep, const char *key,
                             json_t *rec, const struct result *r, int64_t now)
{
    char why[ERROR_MAX];
    long s = r->code == CURLE_OK ? r->http : 0;
    describe(r, why, sizeof(why));
    json_object_set_new(rec, "attempts", json_integer(rec_int(rec, "attempts") + 1));
    json_object_set_new(rec, "last_attempt_unix_ms", json_integer(now));
    json_object_set_new(rec, "last_status", s > 0 ? json_integer(s) : json_null());
    count(ob, &ob->attempts);
    if (s >= 200 && s < 300) {
        json_object_set_new(rec, "status", json_string("delivered"));
        json_object_set_new(rec, "last_error", json_null());
        json_object_set_new(rec, "delivered_unix_ms", json_integer(now));
        /* Delivered counts only once the store says so; if the write fails
         * the delivery is sent again (the receiver dedupes by key). */
        if (record_save(ob, key, rec) != ST_OK) {
            return now + ob->base_ms;
        }
        count(ob, &ob->delivered);
        return DONE;
    }
    if (s >= 300 && s < 400) {
        snprintf(why, sizeof(why), "redirect refused (HTTP %ld)", s);
        return finish_failed(ob, key, rec, why);
    }
    if (s >= 400 && s < 500 && s != 429) {
        return finish_failed(ob, key, rec, why);
    }
    json_object_set_new(rec, "last_error", json_string(why));
    return schedule_retry(ob, ep, key, rec, r, now);
}

/* One look at a due delivery: the time of its next attempt, DONE, or due
 * unchanged when stopped mid-request. */
static int64_t attempt(st_outbox *ob, const char *key, int64_t due)
{
    const st_outbox_endpoint *ep;
    struct result r;
    json_t *rec = NULL;
    int64_t now;
    int64_t next;
    int rv = record_load(ob, key, &rec);
    if (rv != ST_OK) {
        ST_WARN(MOD, "delivery %s: %s; retrying later", key, st_strerror(rv));
        return st_time_wall_ms() + ob->base_ms;
    }
    if (rec == NULL || strcmp(rec_str(rec, "status"), "pending") != 0) {
        json_decref(rec); /* gone, or already delivered/failed: never resent */
        return DONE;
    }
    now = st_time_wall_ms();
    pthread_rwlock_rdlock(&ob->cfg_lock);
    if ((ep = endpoint_find(ob, rec_str(rec, "endpoint"))) == NULL) {
        next = finish_failed(ob, key, rec, "endpoint no longer configured");
    } else if (now - rec_int(rec, "created_unix_ms") > ep->max_age_ms) {
        next = give_up(ob, key, rec, now - rec_int(rec, "created_unix_ms"));
    } else if ((rv = send_once(ob, ep, rec, &r)) != ST_OK) {
        char why[ERROR_MAX];
        snprintf(why, sizeof(why), "cannot build the request: %s", st_strerror(rv));
        next = finish_failed(ob, key, rec, why);
    } else if (r.aborted) {
        next = due;
    } else {
        next = record_result(ob, ep, key, rec, &r, st_time_wall_ms());
    }
    pthread_rwlock_unlock(&ob->cfg_lock);
    json_decref(rec);
    return next;
}

/* ---- pruning ---- */

struct prune_ctx {
    int64_t cutoff;
    char keys[PRUNE_BATCH][KEY_MAX];
    char idx[PRUNE_BATCH][ST_STORE_MAX_KEY + 1];
    size_t n;
};

static int prune_each(void *arg, const char *key, const char *val, size_t len)
{
    struct prune_ctx *c = arg;
    int64_t created = 0;
    char digits[17];
    json_t *rec;
    snprintf(digits, sizeof(digits), "%s", key + strlen(KEY_PREFIX));
    if (st_parse_i64(digits, &created) == ST_OK && created >= c->cutoff) {
        return 1; /* keys are in creation order: the rest is younger */
    }
    if (c->n == PRUNE_BATCH) {
        return 1;
    }
    if (strlen(key) >= KEY_MAX) {
        return 0; /* not a key this module wrote */
    }
    if ((rec = json_loadb(val, len, 0, NULL)) == NULL ||
        strcmp(rec_str(rec, "status"), "pending") != 0) {
        snprintf(c->keys[c->n], KEY_MAX, "%s", key);
        snprintf(c->idx[c->n], sizeof(c->idx[0]), IDX_PREFIX "%s/%s",
                 rec_str(rec, "idempotency_key"), rec_str(rec, "endpoint"));
        c->n++;
    }
    json_decref(rec);
    return 0;
}

/* Deletes delivered and failed records older than ST_OUTBOX_KEEP_MS. */
static void prune(st_outbox *ob, int64_t now)
{
    struct prune_ctx *c = malloc(sizeof(*c));
    size_t total = 0;
    int rounds = 0;
    if (c == NULL) {
        return;
    }
    do {
        c->cutoff = now - ST_OUTBOX_KEEP_MS;
        c->n = 0;
        if (st_store_kv_scan(ob->store, KEY_PREFIX, prune_each, c) != ST_OK) {
            break;
        }
        for (size_t i = 0; i < c->n; i++) {
            st_store_kv_del(ob->store, c->idx[i]);
            st_store_kv_del(ob->store, c->keys[i]);
        }
        total += c->n;
        /* Bounded, so a record that cannot be deleted does not spin us. */
    } while (c->n == PRUNE_BATCH && ++rounds < 64 && !atomic_load(&ob->abort));
    free(c);
    if (total > 0) {
        ST_INFO(MOD, "pruned %zu old deliveries", total);
    }
}

/* ---- the sender thread ---- */

static void wait_ms(st_outbox *ob, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ms = ST_MAX(ms, 1);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&ob->cv, &ob->mu, &ts);
}

/* Called and returns with mu held. */
static void send_due(st_outbox *ob, size_t i)
{
    struct pending p;
    int64_t next;
    int rv;
    pending_take(ob, i, &p);
    ob->inflight = true;
    pthread_mutex_unlock(&ob->mu);
    next = attempt(ob, p.key, p.next_ms);
    pthread_mutex_lock(&ob->mu);
    ob->inflight = false;
    if (next != DONE && (rv = pending_add(ob, p.key, next)) != ST_OK) {
        ST_WARN(MOD, "delivery %s waits for the next start: %s", p.key, st_strerror(rv));
    }
}

static void *sender_main(void *arg)
{
    st_outbox *ob = arg;
    pthread_mutex_lock(&ob->mu);
    while (!ob->stop) {
        int64_t now = st_time_wall_ms();
        size_t i;
        if (now >= ob->next_prune_ms) {
            pthread_mutex_unlock(&ob->mu);
            prune(ob, now);
            pthread_mutex_lock(&ob->mu);
            ob->next_prune_ms = now + PRUNE_EVERY_MS;
            continue;
        }
        i = pending_first(ob);
        if (i != SIZE_MAX && ob->pending[i].next_ms <= now) {
            send_due(ob, i);
            continue;
        }
        /* Woken early by an enqueue or by stop. */
        wait_ms(ob, ST_MIN(i == SIZE_MAX ? PRUNE_EVERY_MS : ob->pending[i].next_ms - now,
                           ob->next_prune_ms - now));
    }
    pthread_mutex_unlock(&ob->mu);
    return NULL;
}

/* ==== lifecycle ==== */

static int init_sync(st_outbox *ob)
{
    pthread_condattr_t ca;
    if (pthread_mutex_init(&ob->mu, NULL) != 0) {
        return ST_ENOMEM;
    }
    if (pthread_condattr_init(&ca) != 0) {
        pthread_mutex_destroy(&ob->mu);
        return ST_ENOMEM;
    }
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (pthread_cond_init(&ob->cv, &ca) != 0) {
        pthread_condattr_destroy(&ca);
        pthread_mutex_destroy(&ob->mu);
        return ST_ENOMEM;
    }
    pthread_condattr_destroy(&ca);
    return ST_OK;
}

int st_outbox_new(st_store *store, st_outbox_config *cfg, const struct st_outbox_opts *opts,
                  st_outbox **out)
{
    st_outbox *ob = calloc(1, sizeof(*ob));
    uint8_t seed[16];
    int rv;
    if (ob == NULL || store == NULL) {
        free(ob);
        st_outbox_config_release(cfg);
        return ob == NULL ? ST_ENOMEM : ST_EINVAL;
    }
    ob->store = store;
    ob->cfg = *cfg;
    memset(cfg, 0, sizeof(*cfg));
    pthread_rwlock_init(&ob->cfg_lock, NULL);
    ob->base_ms =
        opts && opts->backoff_base_ms > 0 ? opts->backoff_base_ms : ST_OUTBOX_BACKOFF_BASE_MS;
    ob->max_ms = opts && opts->backoff_max_ms > 0 ? opts->backoff_max_ms : ST_OUTBOX_BACKOFF_MAX_MS;
    atomic_init(&ob->abort, false);
    st_uuid_random(seed);
    memcpy(&ob->rng, seed, sizeof(ob->rng));
    ob->rng |= 1; /* xorshift must not start at 0 */
    if ((rv = init_sync(ob)) != ST_OK) {
        st_outbox_config_release(&ob->cfg);
        pthread_rwlock_destroy(&ob->cfg_lock);
        free(ob);
        return rv;
    }
    ob->curl_global = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
    if (!ob->curl_global || (ob->curl = curl_easy_init()) == NULL) {
        st_outbox_free(ob);
        return ST_ENOMEM;
    }
    /* A restart loses nothing: every pending delivery is picked up again. */
    if ((rv = st_store_kv_scan(store, KEY_PREFIX, resume_each, ob)) != ST_OK) {
        st_outbox_free(ob);
        return rv;
    }
    if (ob->npending > 0) {
        ST_INFO(MOD, "resuming %zu pending deliveries", ob->npending);
    }
    *out = ob;
    return ST_OK;
}

int st_outbox_start(st_outbox *ob)
{
    if (ob == NULL || ob->running) {
        return ob == NULL ? ST_EINVAL : ST_OK;
    }
    pthread_mutex_lock(&ob->mu);
    ob->stop = false;
    atomic_store(&ob->abort, false);
    pthread_mutex_unlock(&ob->mu);
    if (pthread_create(&ob->thread, NULL, sender_main, ob) != 0) {
        return ST_ENOMEM;
    }
    ob->running = true;
    return ST_OK;
}

void st_outbox_stop(st_outbox *ob)
{
    if (ob == NULL || !ob->running) {
        return;
    }
    pthread_mutex_lock(&ob->mu);
    ob->stop = true;
    atomic_store(&ob->abort, true); /* ends a request in flight within ~1 s */
    pthread_cond_broadcast(&ob->cv);
    pthread_mutex_unlock(&ob->mu);
    pthread_join(ob->thread, NULL);
    ob->running = false;
}

void st_outbox_free(st_outbox *ob)
{
    if (ob == NULL) {
        return;
    }
    st_outbox_stop(ob);
    curl_easy_cleanup(ob->curl);
    if (ob->curl_global) {
        curl_global_cleanup();
    }
    pthread_cond_destroy(&ob->cv);
    pthread_mutex_destroy(&ob->mu);
    free(ob->pending);
    st_outbox_config_release(&ob->cfg);
    pthread_rwlock_destroy(&ob->cfg_lock);
    free(ob);
}

int st_outbox_reconfigure(st_outbox *ob, st_outbox_config *cfg)
{
    st_outbox_config old;
    if (ob == NULL || cfg == NULL) {
        return ST_EINVAL;
    }
    /* Waits for an attempt in flight, which holds its endpoint. */
    pthread_rwlock_wrlock(&ob->cfg_lock);
    old = ob->cfg;
    ob->cfg = *cfg;
    pthread_rwlock_unlock(&ob->cfg_lock);
    memset(cfg, 0, sizeof(*cfg));
    st_outbox_config_release(&old);
    /* Pending deliveries are matched to endpoints by name at each attempt:
     * one to an endpoint that is gone fails ("no longer configured"). */
    pthread_mutex_lock(&ob->mu);
    pthread_cond_signal(&ob->cv);
    pthread_mutex_unlock(&ob->mu);
    return ST_OK;
}

int st_outbox_stats(st_outbox *ob, struct st_outbox_stats *out)
{
    if (ob == NULL || out == NULL) {
        return ST_EINVAL;
    }
    pthread_mutex_lock(&ob->mu);
    out->pending = ob->npending + ob->inflight;
    out->delivered = ob->delivered;
    out->failed = ob->failed;
    out->attempts = ob->attempts;
    pthread_mutex_unlock(&ob->mu);
    return ST_OK;
}

/* ==== listing ==== */

struct list_ctx {
    const char *status;
    json_t **ring; /* the newest `limit` matches, oldest overwritten */
    size_t limit;
    size_t n;
};

static int list_each(void *arg, const char *key, const char *val, size_t len)
{
    struct list_ctx *c = arg;
    json_t *rec = json_loadb(val, len, 0, NULL);
    (void)key;
    if (rec == NULL || (c->status != NULL && strcmp(rec_str(rec, "status"), c->status) != 0)) {
        json_decref(rec);
        return 0;
    }
    json_object_del(rec, "body"); /* up to ST_OUTBOX_MAX_BODY each: not for lists */
    json_decref(c->ring[c->n % c->limit]);
    c->ring[c->n % c->limit] = rec;
    c->n++;
    return 0;
}

int st_outbox_list(st_store *store, const char *status, size_t limit, json_t **out)
{
    struct list_ctx c = {status, NULL, limit, 0};
    json_t *arr = NULL;
    size_t have;
    int rv;
    if (store == NULL || (status != NULL && strcmp(status, "pending") != 0 &&
                          strcmp(status, "delivered") != 0 && strcmp(status, "failed") != 0)) {
        return ST_EINVAL;
    }
    if (c.limit == 0 || c.limit > ST_OUTBOX_MAX_LIST) {
        c.limit = ST_OUTBOX_MAX_LIST;
    }
    if ((c.ring = calloc(c.limit, sizeof(*c.ring))) == NULL) {
        return ST_ENOMEM;
    }
    rv = st_store_kv_scan(store, KEY_PREFIX, list_each, &c);
    have = ST_MIN(c.n, c.limit);
    if (rv == ST_OK && (arr = json_array()) == NULL) {
        rv = ST_ENOMEM;
    }
    for (size_t i = 0; i < have; i++) {
        json_t *rec = c.ring[(c.n - 1 - i) % c.limit]; /* newest first */
        if (rv == ST_OK && json_array_append(arr, rec) != 0) {
            rv = ST_ENOMEM;
        }
        json_decref(rec);
    }
    free(c.ring);
    if (rv != ST_OK) {
        json_decref(arr);
        return rv;
    }
    *out = arr;
    return ST_OK;
}
