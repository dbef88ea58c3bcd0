/* redis: cache statistics from a Redis server's INFO reply, over TCP or a
 * unix socket. hiredis encodes the commands and parses the replies; the
 * socket is ours so that every run has one deadline and a capped reply. */
#include "samplers.h"

#include "cache_parse.h"
#include "err.h"
#include "log.h"
#include "netio.h"
#include "timeutil.h"
#include "util.h"

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#define ST_REDIS_MAX_LINE 4096   /* an INFO line longer than this is malformed */
#define ST_REDIS_MAX_HOST 255    /* DNS names are at most 253 bytes */
#define ST_REDIS_MAX_SECRET 1024 /* user name or password */
#define ST_REDIS_MAX_TIMEOUT_MS 60000
#define ST_REDIS_CHUNK 16384 /* bytes read per recv */

typedef struct redis_cfg {
    char *address;
    char *socket;
    char *username;
    char *password;
    int64_t timeout_ms;
} redis_cfg;

typedef struct redis_ctx {
    redis_cfg cfg;
    char host[ST_REDIS_MAX_HOST + 1];
    char port[8];
    st_net_who who; /* "redis" and the address or socket, for logs */
    int fd;         /* -1 while disconnected */
    redisReader *reader;
    char chunk[ST_REDIS_CHUNK];
} redis_ctx;

static const st_cfg_map redis_rows[] = {
    {ST_CFG_STR, "address", "127.0.0.1:6379", offsetof(redis_cfg, address),
     "host:port or [v6]:port of the server", NULL, 0, 0},
    {ST_CFG_STR, "socket", NULL, offsetof(redis_cfg, socket),
     "unix socket path (instead of address)", NULL, 0, 0},
    {ST_CFG_STR, "username", NULL, offsetof(redis_cfg, username), "ACL user (Redis 6+)", NULL, 0,
     0},
    {ST_CFG_STR, "password", NULL, offsetof(redis_cfg, password), "sent with AUTH", NULL, 0, 0},
    {ST_CFG_DURATION, "timeout", "1s", offsetof(redis_cfg, timeout_ms),
     "connect, AUTH and INFO together", NULL, 0, 0},
    {ST_CFG_IGNORE, "interval", NULL, 0, "run every (default: the agent's interval)", NULL, 0, 0},
    {0},
};

/* ---- INFO ---- */

static const st_label hit_labels[] = {{"cache", "redis"}, {"result", "hit"}};
static const st_label miss_labels[] = {{"cache", "redis"}, {"result", "miss"}};
static const st_label cache_labels[] = {{"cache", "redis"}};

typedef struct info_field {
    const char *key;
    st_series_desc desc;
    bool gauge;
} info_field;

static const info_field fields[] = {
    {"keyspace_hits", {"cache.requests", hit_labels, 2, ST_LAYER_INFRA, "", 0}, false},
    {"keyspace_misses", {"cache.requests", miss_labels, 2, ST_LAYER_INFRA, "", 0}, false},
    {"evicted_keys", {"cache.evictions", cache_labels, 1, ST_LAYER_INFRA, "", 0}, false},
    {"used_memory", {"cache.memory.used", cache_labels, 1, ST_LAYER_INFRA, "B", 0}, true},
    {"connected_clients", {"redis.clients.connected", NULL, 0, ST_LAYER_INFRA, "", 0}, true},
    {"rejected_connections", {"redis.connections.rejected", NULL, 0, ST_LAYER_INFRA, "", 0}, false},
};

#define NFIELDS ST_ARRAY_LEN(fields)

static const st_series_desc malformed_desc = {"redis.malformed", NULL, 0, ST_LAYER_INFRA, "", 0};

typedef struct redis_info {
    uint64_t v[NFIELDS];
    bool found[NFIELDS];
    uint64_t malformed;
} redis_info;

/* One INFO line without its newline: "key:value", "# Section" or empty.
 * Unknown keys are fine (every release adds some); a known key whose value
 * is not a number is malformed. */
static void parse_line(redis_info *info, const char *p, size_t n)
{
    const char *colon;
    if (n > 0 && p[n - 1] == '\r') {
        n--;
    }
    if (n == 0 || p[0] == '#') {
        return;
    }
    colon = n <= ST_REDIS_MAX_LINE ? memchr(p, ':', n) : NULL;
    if (colon == NULL || colon == p) {
        info->malformed++;
        return;
    }
    for (size_t i = 0; i < NFIELDS; i++) {
        size_t klen = strlen(fields[i].key);
        const char *v = colon + 1;
        if (klen != (size_t)(colon - p) || memcmp(p, fields[i].key, klen) != 0) {
            continue;
        }
        if (st_procfs_u64(&v, &info->v[i]) != ST_OK || v != p + n) {
            info->malformed++;
            return;
        }
        info->found[i] = true;
        return;
    }
}

static int emit_info(st_emit *e, const redis_info *info)
{
    size_t nfound = 0;
    int rv = ST_OK;
    for (size_t i = 0; i < NFIELDS && rv == ST_OK; i++) {
        if (!info->found[i]) {
            continue;
        }
        nfound++;
        rv = fields[i].gauge ? st_emit_gauge(e, &fields[i].desc, (double)info->v[i])
                             : st_emit_counter_total(e, &fields[i].desc, (double)info->v[i]);
    }
    /* A reply without any field we know counts as one malformed reply. */
    if (rv == ST_OK && (info->malformed > 0 || nfound == 0)) {
        rv = st_emit_counter_add(e, &malformed_desc, (double)(info->malformed + (nfound == 0)));
    }
    if (rv == ST_OK && nfound == 0) {
        rv = ST_EPARSE;
    }
    return rv;
}

int st_redis_info_emit(st_emit *e, const char *text, size_t len)
{
    const char *p = text;
    const char *end = text + len;
    redis_info info;
    if (len > ST_REDIS_MAX_REPLY) {
        return ST_ETOOBIG;
    }
    memset(&info, 0, sizeof(info));
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl != NULL ? nl : end;
        parse_line(&info, p, (size_t)(eol - p));
        p = nl != NULL ? nl + 1 : end;
    }
    return emit_info(e, &info);
}

/* ---- commands ---- */

/* Feeds the reader until it holds one whole reply, at most
 * ST_REDIS_MAX_REPLY bytes of it. */
static int read_reply(redis_ctx *c, int64_t deadline_ms, redisReply **out)
{
    size_t fed = 0;
    for (;;) {
        void *reply = NULL;
        size_t n = 0;
        int rv;
        if (redisReaderGetReply(c->reader, &reply) != REDIS_OK) {
            ST_WARN("redis", "%s: protocol error: %s", c->who.name, c->reader->errstr);
            return ST_EPARSE;
        }
        if (reply != NULL) {
            *out = reply;
            return ST_OK;
        }
        rv = st_net_recv(c->fd, c->chunk, sizeof(c->chunk), &c->who, deadline_ms, &n);
        if (rv != ST_OK) {
            return rv;
        }
        if (n > ST_REDIS_MAX_REPLY - fed) {
            ST_WARN("redis", "%s: reply over %u bytes", c->who.name, ST_REDIS_MAX_REPLY);
            return ST_ETOOBIG;
        }
        fed += n;
        if (redisReaderFeed(c->reader, c->chunk, n) != REDIS_OK) {
            return ST_ENOMEM;
        }
    }
}

static int command(redis_ctx *c, int argc, const char **argv, int64_t deadline_ms, redisReply **out)
{
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, NULL);
    int rv;
    if (len < 0) {
        return ST_ENOMEM;
    }
    rv = st_net_send_all(c->fd, cmd, (size_t)len, &c->who, deadline_ms);
    redisFreeCommand(cmd);
    return rv == ST_OK ? read_reply(c, deadline_ms, out) : rv;
}

/* An error reply, logged with the server's text (bounded) and mapped. */
static int reply_error(const redis_ctx *c, const char *what, const redisReply *r)
{
    if (r->type != REDIS_REPLY_ERROR) {
        ST_WARN("redis", "%s: %s: unexpected reply type %d", c->who.name, what, r->type);
        return ST_EPARSE;
    }
    ST_WARN("redis", "%s: %s: %.200s", c->who.name, what, r->str);
    if (strncmp(r->str, "NOAUTH", 6) == 0 || strncmp(r->str, "WRONGPASS", 9) == 0 ||
        strncmp(r->str, "NOPERM", 6) == 0 || strstr(r->str, "password") != NULL) {
        return ST_EPERM;
    }
    return ST_EIO;
}

/* ---- the sampler ---- */

static void disconnect(redis_ctx *c)
{
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    if (c->reader != NULL) {
        redisReaderFree(c->reader); /* a reader that saw an error cannot be reused */
        c->reader = NULL;
    }
}

static int authenticate(redis_ctx *c, int64_t deadline_ms)
{
    const char *argv[3] = {"AUTH", NULL, NULL};
    int argc = 1;
    redisReply *r = NULL;
    int rv;
    if (c->cfg.password == NULL) {
        return ST_OK;
    }
    if (c->cfg.username != NULL) {
        argv[argc++] = c->cfg.username;
    }
    argv[argc++] = c->cfg.password;
    if ((rv = command(c, argc, argv, deadline_ms, &r)) != ST_OK) {
        return rv;
    }
    if (r->type != REDIS_REPLY_STATUS) {
        rv = reply_error(c, "AUTH", r);
    }
    freeReplyObject(r);
    return rv;
}

static int reconnect(redis_ctx *c, int64_t deadline_ms)
{
    int rv;
    if ((c->reader = redisReaderCreate()) == NULL) {
        return ST_ENOMEM;
    }
    rv = st_net_connect(c->host, c->port, c->cfg.socket, &c->who, deadline_ms, &c->fd);
    if (rv == ST_OK) {
        rv = authenticate(c, deadline_ms);
    }
    return rv;
}

int st_redis_sample(void *ctx, st_emit *e)
{
    redis_ctx *c = ctx;
    int64_t deadline_ms = st_time_mono_ms() + c->cfg.timeout_ms;
    const char *argv[1] = {"INFO"};
    redisReply *r = NULL;
    int rv = ST_OK;
    if (c->fd < 0 && (rv = reconnect(c, deadline_ms)) != ST_OK) {
        goto out;
    }
    if ((rv = command(c, 1, argv, deadline_ms, &r)) != ST_OK) {
        goto out;
    }
    if (r->type != REDIS_REPLY_STRING) {
        rv = reply_error(c, "INFO", r);
        goto out;
    }
    if ((rv = st_redis_info_emit(e, r->str, r->len)) == ST_EPARSE) {
        ST_WARN("redis", "%s: INFO holds none of the fields we read", c->who.name);
    }
out:
    if (r != NULL) {
        freeReplyObject(r);
    }
    /* After any failure the next run starts on a fresh connection. */
    if (rv != ST_OK) {
        disconnect(c);
    }
    return rv;
}

void st_redis_fini(void *ctx)
{
    redis_ctx *c = ctx;
    if (c == NULL) {
        return;
    }
    disconnect(c);
    st_cfg_release(redis_rows, &c->cfg);
    free(c);
}

static int check_target(redis_ctx *c, const st_cfg_doc *doc, const st_cfg_node *cfg,
                        st_cfg_error *err)
{
    const redis_cfg *rc = &c->cfg;
    size_t path_max = sizeof(((struct sockaddr_un *)0)->sun_path) - 1;
    if (rc->socket == NULL) {
        if (rc->address == NULL || st_net_split_address(rc->address, c->host, sizeof(c->host),
                                                        c->port, sizeof(c->port)) != ST_OK) {
            return st_cfg_fail(err, doc, st_cfg_get(cfg, "address"), "address",
                               "want host:port or [v6]:port, got '%s'",
                               rc->address != NULL ? rc->address : "");
        }
        c->who = (st_net_who){"redis", rc->address};
        return ST_OK;
    }
    if (st_cfg_get(cfg, "address") != NULL) {
        return st_cfg_fail(err, doc, st_cfg_get(cfg, "socket"), "socket",
                           "give address or socket, not both");
    }
    if (rc->socket[0] == '\0' || strlen(rc->socket) > path_max) {
        return st_cfg_fail(err, doc, st_cfg_get(cfg, "socket"), "socket",
                           "want a unix socket path of 1 to %zu bytes", path_max);
    }
    c->who = (st_net_who){"redis", rc->socket};
    return ST_OK;
}

static int check_cfg(redis_ctx *c, const st_cfg_doc *doc, const st_cfg_node *cfg, st_cfg_error *err)
{
    const redis_cfg *rc = &c->cfg;
    int rv;
    if (rc->timeout_ms <= 0 || rc->timeout_ms > ST_REDIS_MAX_TIMEOUT_MS) {
        return st_cfg_fail(err, doc, st_cfg_get(cfg, "timeout"), "timeout",
                           "must be between 1ms and %ds", ST_REDIS_MAX_TIMEOUT_MS / 1000);
    }
    if ((rv = check_target(c, doc, cfg, err)) != ST_OK) {
        return rv;
    }
    if (rc->password != NULL && strlen(rc->password) > ST_REDIS_MAX_SECRET) {
        return st_cfg_fail(err, doc, st_cfg_get(cfg, "password"), "password",
                           "longer than %d bytes", ST_REDIS_MAX_SECRET);
    }
    if (rc->username != NULL &&
        (rc->password == NULL || strlen(rc->username) > ST_REDIS_MAX_SECRET)) {
        return st_cfg_fail(err, doc, st_cfg_get(cfg, "username"), "username",
                           "needs a password and at most %d bytes", ST_REDIS_MAX_SECRET);
    }
    return ST_OK;
}

int st_redis_init(const st_cfg_doc *doc, const st_cfg_node *cfg, const st_sampler_env *env,
                  void **ctx, st_cfg_error *err)
{
    redis_ctx *c = calloc(1, sizeof(*c));
    int rv;
    (void)env;
    if (c == NULL) {
        return ST_ENOMEM;
    }
    c->fd = -1;
    if ((rv = st_cfg_bind(doc, cfg, redis_rows, &c->cfg, err)) != ST_OK ||
        (rv = check_cfg(c, doc, cfg, err)) != ST_OK) {
        st_redis_fini(c);
        return rv;
    }
    /* Connecting waits for the first run: a server that is down must not
     * keep the agent from starting. */
    *ctx = c;
    return ST_OK;
}

const st_sampler_def st_sampler_redis = ST_SAMPLER_ROW(redis);
