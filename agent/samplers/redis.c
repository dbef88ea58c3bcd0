/* redis: cache statistics from a Redis server's INFO reply, over TCP or a
 * unix socket. hiredis encodes the commands and parses the replies; the
 * socket is ours so that every run has one deadline and a capped reply. */
#include "samplers.h"

#include "err.h"
#include "log.h"
#include "timeutil.h"
#include "util.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define ST_REDIS_MAX_REPLY (1u << 20) /* INFO is ~6 KiB; a bigger reply is not INFO */
#define ST_REDIS_MAX_LINE 4096        /* an INFO line longer than this is malformed */
#define ST_REDIS_MAX_HOST 255         /* DNS names are at most 253 bytes */
#define ST_REDIS_MAX_SECRET 1024      /* user name or password */
#define ST_REDIS_MAX_TIMEOUT_MS 60000
#define ST_REDIS_CHUNK 16384 /* bytes read per recv */

/* Declared here rather than in a header: the sampler and its unit tests
 * (tests/unit/cache_samplers_test.c) are its only users. Parses an INFO
 * reply of len bytes and emits its series; ST_ETOOBIG past
 * ST_REDIS_MAX_REPLY, ST_EPARSE when no known field is in it. */
int st_redis_info_emit(st_emit *e, const char *text, size_t len);

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
    const char *name; /* address or socket, for logs */
    int fd;           /* -1 while disconnected */
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

/* ---- socket with a deadline ---- */

/* Waits until fd is ready for events or the monotonic deadline passes. */
static int wait_fd(int fd, short events, int64_t deadline_ms)
{
    for (;;) {
        int64_t left = deadline_ms - st_time_mono_ms();
        struct pollfd p = {.fd = fd, .events = events};
        int n;
        if (left <= 0) {
            return ST_ETIMEOUT;
        }
        n = poll(&p, 1, (int)left);
        if (n > 0) {
            return ST_OK; /* errors and hang-ups surface in the next call */
        }
        if (n == 0) {
            return ST_ETIMEOUT;
        }
        if (errno != EINTR) {
            return ST_EIO;
        }
    }
}

static int connect_one(redis_ctx *c, const struct sockaddr *sa, socklen_t salen,
                       int64_t deadline_ms)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    int rv = ST_ENET;
    if (fd < 0) {
        ST_WARN("redis", "%s: socket: %s", c->name, strerror(errno));
        return ST_ENET;
    }
    if (connect(fd, sa, salen) != 0) {
        if (errno != EINPROGRESS) {
            soerr = errno;
        } else if ((rv = wait_fd(fd, POLLOUT, deadline_ms)) != ST_OK) {
            ST_WARN("redis", "%s: connect: timed out", c->name);
            goto out;
        } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0) {
            soerr = errno;
        }
        if (soerr != 0) {
            ST_WARN("redis", "%s: connect: %s", c->name, strerror(soerr));
            rv = ST_ENET;
            goto out;
        }
    }
    c->fd = fd;
    fd = -1;
    rv = ST_OK;
out:
    if (fd >= 0) {
        close(fd);
    }
    return rv;
}

static int connect_tcp(redis_ctx *c, int64_t deadline_ms)
{
    struct addrinfo hints;
    struct addrinfo *res = NULL;
    int rv = ST_ENET;
    int r;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    if ((r = getaddrinfo(c->host, c->port, &hints, &res)) != 0) {
        ST_WARN("redis", "%s: cannot resolve: %s", c->name, gai_strerror(r));
        return ST_ENET;
    }
    /* In the order getaddrinfo ranks them (RFC 6724), under one deadline. */
    for (const struct addrinfo *a = res; a != NULL && c->fd < 0 && rv != ST_ETIMEOUT;
         a = a->ai_next) {
        rv = connect_one(c, a->ai_addr, a->ai_addrlen, deadline_ms);
    }
    freeaddrinfo(res);
    return rv;
}

static int connect_unix(redis_ctx *c, int64_t deadline_ms)
{
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, c->cfg.socket, strlen(c->cfg.socket) + 1); /* length checked at init */
    return connect_one(c, (const struct sockaddr *)&sun, sizeof(sun), deadline_ms);
}

static int send_all(redis_ctx *c, const char *p, size_t n, int64_t deadline_ms)
{
    while (n > 0) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        int rv;
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            ST_WARN("redis", "%s: send: %s", c->name, strerror(errno));
            return ST_ENET;
        }
        if ((rv = wait_fd(c->fd, POLLOUT, deadline_ms)) != ST_OK) {
            return rv;
        }
    }
    return ST_OK;
}

/* Reads one chunk into c->chunk; ST_ECLOSED when the server hung up. */
static int recv_chunk(redis_ctx *c, int64_t deadline_ms, size_t *got)
{
    for (;;) {
        ssize_t r = recv(c->fd, c->chunk, sizeof(c->chunk), 0);
        int rv;
        if (r > 0) {
            *got = (size_t)r;
            return ST_OK;
        }
        if (r == 0) {
            ST_WARN("redis", "%s: server closed the connection", c->name);
            return ST_ECLOSED;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            ST_WARN("redis", "%s: recv: %s", c->name, strerror(errno));
            return ST_ENET;
        }
        if ((rv = wait_fd(c->fd, POLLIN, deadline_ms)) != ST_OK) {
            return rv;
        }
    }
}

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
            ST_WARN("redis", "%s: protocol error: %s", c->name, c->reader->errstr);
            return ST_EPARSE;
        }
        if (reply != NULL) {
            *out = reply;
            return ST_OK;
        }
        if ((rv = recv_chunk(c, deadline_ms, &n)) != ST_OK) {
            return rv;
        }
        if (n > ST_REDIS_MAX_REPLY - fed) {
            ST_WARN("redis", "%s: reply over %u bytes", c->name, ST_REDIS_MAX_REPLY);
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
    rv = send_all(c, cmd, (size_t)len, deadline_ms);
    redisFreeCommand(cmd);
    return rv == ST_OK ? read_reply(c, deadline_ms, out) : rv;
}

/* An error reply, logged with the server's text (bounded) and mapped. */
static int reply_error(const redis_ctx *c, const char *what, const redisReply *r)
{
    if (r->type != REDIS_REPLY_ERROR) {
        ST_WARN("redis", "%s: %s: unexpected reply type %d", c->name, what, r->type);
        return ST_EPARSE;
    }
    ST_WARN("redis", "%s: %s: %.200s", c->name, what, r->str);
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
    rv = c->cfg.socket != NULL ? connect_unix(c, deadline_ms) : connect_tcp(c, deadline_ms);
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
        ST_WARN("redis", "%s: INFO holds none of the fields we read", c->name);
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

/* Splits "host:port" or "[v6]:port" into c->host and c->port. */
static int split_address(redis_ctx *c, const char *a)
{
    const char *h = a;
    const char *colon;
    size_t hlen;
    uint64_t pnum;
    if (a[0] == '[') {
        const char *close = strchr(a, ']');
        if (close == NULL || close[1] != ':') {
            return ST_EINVAL;
        }
        h = a + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(a, ':');
        if (colon == NULL || memchr(a, ':', (size_t)(colon - a)) != NULL) {
            return ST_EINVAL; /* no port, or IPv6 without brackets */
        }
        hlen = (size_t)(colon - a);
    }
    if (hlen == 0 || hlen >= sizeof(c->host) || strlen(colon + 1) >= sizeof(c->port) ||
        st_parse_u64(colon + 1, &pnum) != ST_OK || pnum == 0 || pnum > 65535) {
        return ST_EINVAL;
    }
    memcpy(c->host, h, hlen);
    c->host[hlen] = '\0';
    memcpy(c->port, colon + 1, strlen(colon + 1) + 1);
    return ST_OK;
}

static int check_target(redis_ctx *c, const st_cfg_doc *doc, const st_cfg_node *cfg,
                        st_cfg_error *err)
{
    const redis_cfg *rc = &c->cfg;
    size_t path_max = sizeof(((struct sockaddr_un *)0)->sun_path) - 1;
    if (rc->socket == NULL) {
        if (rc->address == NULL || split_address(c, rc->address) != ST_OK) {
            return st_cfg_fail(err, doc, st_cfg_get(cfg, "address"), "address",
                               "want host:port or [v6]:port, got '%s'",
                               rc->address != NULL ? rc->address : "");
        }
        c->name = rc->address;
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
    c->name = rc->socket;
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
