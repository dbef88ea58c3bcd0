/* memcached: cache statistics from memcached's text protocol `stats`
 * command over TCP or a unix socket. The reply ("STAT name value" lines up
 * to "END") is read into a fixed buffer under one deadline per run; the
 * connection is kept between runs and made again after any error. */
#include "samplers.h"

#include "err.h"
#include "log.h"
#include "timeutil.h"
#include "util.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define ST_MEMCACHED_MAX_REPLY 65536 /* `stats` is ~1.5 KiB; far larger is not stats */
#define ST_MEMCACHED_MAX_LINE 1024   /* "STAT name value"; longer is malformed */
#define ST_MEMCACHED_MAX_HOST 255    /* DNS names are at most 253 bytes */
#define ST_MEMCACHED_MAX_TIMEOUT_MS 60000

/* Declared here rather than in a header: the sampler and its unit tests
 * (tests/unit/cache_samplers_test.c) are its only users. Parses a `stats`
 * reply of len bytes (lines up to END) and emits its series; ST_ETOOBIG
 * past ST_MEMCACHED_MAX_REPLY, ST_EPARSE when END is missing, the server
 * answered an error, or no known field is in it. */
int st_memcached_stats_emit(st_emit *e, const char *text, size_t len);

typedef struct memcached_cfg {
    char *address;
    char *socket;
    int64_t timeout_ms;
} memcached_cfg;

typedef struct memcached_ctx {
    memcached_cfg cfg;
    char host[ST_MEMCACHED_MAX_HOST + 1];
    char port[8];
    const char *name; /* address or socket, for logs */
    int fd;           /* -1 while disconnected */
    char buf[ST_MEMCACHED_MAX_REPLY + 1];
} memcached_ctx;

static const st_cfg_map memcached_rows[] = {
    {ST_CFG_STR, "address", "127.0.0.1:11211", offsetof(memcached_cfg, address),
     "host:port or [v6]:port of the server", NULL, 0, 0},
    {ST_CFG_STR, "socket", NULL, offsetof(memcached_cfg, socket),
     "unix socket path (instead of address)", NULL, 0, 0},
    {ST_CFG_DURATION, "timeout", "1s", offsetof(memcached_cfg, timeout_ms),
     "connect and stats together", NULL, 0, 0},
    {ST_CFG_IGNORE, "interval", NULL, 0, "run every (default: the agent's interval)", NULL, 0, 0},
    {0},
};

/* ---- stats ---- */

static const st_label hit_labels[] = {{"cache", "memcached"}, {"result", "hit"}};
static const st_label miss_labels[] = {{"cache", "memcached"}, {"result", "miss"}};
static const st_label cache_labels[] = {{"cache", "memcached"}};

typedef struct stat_field {
    const char *key;
    st_series_desc desc;
    bool gauge;
} stat_field;

static const stat_field fields[] = {
    {"get_hits", {"cache.requests", hit_labels, 2, ST_LAYER_INFRA, "", 0}, false},
    {"get_misses", {"cache.requests", miss_labels, 2, ST_LAYER_INFRA, "", 0}, false},
    {"evictions", {"cache.evictions", cache_labels, 1, ST_LAYER_INFRA, "", 0}, false},
    {"bytes", {"cache.memory.used", cache_labels, 1, ST_LAYER_INFRA, "B", 0}, true},
    {"curr_connections", {"memcached.connections.current", NULL, 0, ST_LAYER_INFRA, "", 0}, true},
};

#define NFIELDS ST_ARRAY_LEN(fields)

static const st_series_desc malformed_desc = {"memcached.malformed", NULL, 0,
                                              ST_LAYER_INFRA,        "",   0};

typedef struct mc_stats {
    uint64_t v[NFIELDS];
    bool found[NFIELDS];
    uint64_t malformed;
    bool end; /* END seen */
} mc_stats;

static bool has_prefix(const char *p, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    return n >= l && memcmp(p, lit, l) == 0;
}

/* One line without its newline: "STAT name value" or "END". Unknown names
 * are fine (versions differ); a known name without a number is malformed. */
static void parse_line(mc_stats *s, const char *p, size_t n)
{
    const char *name = p + 5;
    const char *sp;
    if (n > 0 && p[n - 1] == '\r') {
        n--;
    }
    if (n == 3 && memcmp(p, "END", 3) == 0) {
        s->end = true;
        return;
    }
    sp = n <= ST_MEMCACHED_MAX_LINE && has_prefix(p, n, "STAT ")
             ? memchr(name, ' ', (size_t)(p + n - name))
             : NULL;
    if (sp == NULL || sp == name) {
        s->malformed++;
        return;
    }
    for (size_t i = 0; i < NFIELDS; i++) {
        size_t klen = strlen(fields[i].key);
        const char *v = sp + 1;
        if (klen != (size_t)(sp - name) || memcmp(name, fields[i].key, klen) != 0) {
            continue;
        }
        if (st_procfs_u64(&v, &s->v[i]) != ST_OK || v != p + n) {
            s->malformed++;
            return;
        }
        s->found[i] = true;
        return;
    }
}

static int emit_stats(st_emit *e, const mc_stats *s)
{
    size_t nfound = 0;
    int rv = ST_OK;
    for (size_t i = 0; i < NFIELDS && rv == ST_OK; i++) {
        if (!s->found[i]) {
            continue;
        }
        nfound++;
        rv = fields[i].gauge ? st_emit_gauge(e, &fields[i].desc, (double)s->v[i])
                             : st_emit_counter_total(e, &fields[i].desc, (double)s->v[i]);
    }
    /* A reply without any field we know counts as one malformed reply. */
    if (rv == ST_OK && (s->malformed > 0 || nfound == 0)) {
        rv = st_emit_counter_add(e, &malformed_desc, (double)(s->malformed + (nfound == 0)));
    }
    if (rv == ST_OK && nfound == 0) {
        rv = ST_EPARSE;
    }
    return rv;
}

int st_memcached_stats_emit(st_emit *e, const char *text, size_t len)
{
    const char *p = text;
    const char *end = text + len;
    mc_stats s;
    if (len > ST_MEMCACHED_MAX_REPLY) {
        return ST_ETOOBIG;
    }
    memset(&s, 0, sizeof(s));
    while (p < end && !s.end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl != NULL ? nl : end;
        parse_line(&s, p, (size_t)(eol - p));
        p = nl != NULL ? nl + 1 : end;
    }
    if (!s.end || p != end) {
        return ST_EPARSE; /* cut short, an error reply, or bytes after END */
    }
    return emit_stats(e, &s);
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

static int connect_one(memcached_ctx *c, const struct sockaddr *sa, socklen_t salen,
                       int64_t deadline_ms)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    int rv = ST_ENET;
    if (fd < 0) {
        ST_WARN("memcached", "%s: socket: %s", c->name, strerror(errno));
        return ST_ENET;
    }
    if (connect(fd, sa, salen) != 0) {
        if (errno != EINPROGRESS) {
            soerr = errno;
        } else if ((rv = wait_fd(fd, POLLOUT, deadline_ms)) != ST_OK) {
            ST_WARN("memcached", "%s: connect: timed out", c->name);
            goto out;
        } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0) {
            soerr = errno;
        }
        if (soerr != 0) {
            ST_WARN("memcached", "%s: connect: %s", c->name, strerror(soerr));
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

static int connect_tcp(memcached_ctx *c, int64_t deadline_ms)
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
        ST_WARN("memcached", "%s: cannot resolve: %s", c->name, gai_strerror(r));
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

static int connect_unix(memcached_ctx *c, int64_t deadline_ms)
{
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, c->cfg.socket, strlen(c->cfg.socket) + 1); /* length checked at init */
    return connect_one(c, (const struct sockaddr *)&sun, sizeof(sun), deadline_ms);
}

static int send_all(memcached_ctx *c, const char *p, size_t n, int64_t deadline_ms)
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
            ST_WARN("memcached", "%s: send: %s", c->name, strerror(errno));
            return ST_ENET;
        }
        if ((rv = wait_fd(c->fd, POLLOUT, deadline_ms)) != ST_OK) {
            return rv;
        }
    }
    return ST_OK;
}

/* True once buf[0..len) ends with a whole last line that ends a reply:
 * END, or one of the error lines that replace it. */
static bool reply_complete(const char *buf, size_t len)
{
    const char *last;
    if (len == 0 || buf[len - 1] != '\n') {
        return false;
    }
    last = buf + len - 1;
    while (last > buf && last[-1] != '\n') {
        last--;
    }
    len = (size_t)(buf + len - last);
    return has_prefix(last, len, "END\r\n") || has_prefix(last, len, "END\n") ||
           has_prefix(last, len, "ERROR") || has_prefix(last, len, "CLIENT_ERROR") ||
           has_prefix(last, len, "SERVER_ERROR");
}

/* Reads a whole reply into c->buf (NUL-terminated), at most
 * ST_MEMCACHED_MAX_REPLY bytes. */
static int read_reply(memcached_ctx *c, int64_t deadline_ms, size_t *len)
{
    size_t off = 0;
    while (!reply_complete(c->buf, off)) {
        ssize_t r;
        int rv;
        if (off == ST_MEMCACHED_MAX_REPLY) {
            ST_WARN("memcached", "%s: reply over %d bytes", c->name, ST_MEMCACHED_MAX_REPLY);
            return ST_ETOOBIG;
        }
        r = recv(c->fd, c->buf + off, ST_MEMCACHED_MAX_REPLY - off, 0);
        if (r > 0) {
            off += (size_t)r;
            continue;
        }
        if (r == 0) {
            ST_WARN("memcached", "%s: server closed the connection", c->name);
            return ST_ECLOSED;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            ST_WARN("memcached", "%s: recv: %s", c->name, strerror(errno));
            return ST_ENET;
        }
        if ((rv = wait_fd(c->fd, POLLIN, deadline_ms)) != ST_OK) {
            return rv;
        }
    }
    c->buf[off] = '\0';
    *len = off;
    return ST_OK;
}

/* ---- the sampler ---- */

static void disconnect(memcached_ctx *c)
{
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
}

int st_memcached_sample(void *ctx, st_emit *e)
{
    static const char cmd[] = "stats\r\n";
    memcached_ctx *c = ctx;
    int64_t deadline_ms = st_time_mono_ms() + c->cfg.timeout_ms;
    size_t len = 0;
    int rv = ST_OK;
    if (c->fd < 0) {
        rv = c->cfg.socket != NULL ? connect_unix(c, deadline_ms) : connect_tcp(c, deadline_ms);
    }
    if (rv == ST_OK && (rv = send_all(c, cmd, sizeof(cmd) - 1, deadline_ms)) == ST_OK) {
        rv = read_reply(c, deadline_ms, &len);
    }
    if (rv == ST_OK && (rv = st_memcached_stats_emit(e, c->buf, len)) == ST_EPARSE) {
        ST_WARN("memcached", "%s: unreadable stats reply: %.100s", c->name, c->buf);
    }
    /* After any failure the next run starts on a fresh connection, so a
     * half-read reply never lands in front of the next one. */
    if (rv != ST_OK) {
        disconnect(c);
    }
    return rv;
}

void st_memcached_fini(void *ctx)
{
    memcached_ctx *c = ctx;
    if (c == NULL) {
        return;
    }
    disconnect(c);
    st_cfg_release(memcached_rows, &c->cfg);
    free(c);
}

/* Splits "host:port" or "[v6]:port" into c->host and c->port. */
static int split_address(memcached_ctx *c, const char *a)
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

static int check_cfg(memcached_ctx *c, const st_cfg_doc *doc, const st_cfg_node *cfg,
                     st_cfg_error *err)
{
    const memcached_cfg *mc = &c->cfg;
    size_t path_max = sizeof(((struct sockaddr_un *)0)->sun_path) - 1;
    if (mc->timeout_ms <= 0 || mc->timeout_ms > ST_MEMCACHED_MAX_TIMEOUT_MS) {
        return st_cfg_fail(err, doc, st_cfg_get(cfg, "timeout"), "timeout",
                           "must be between 1ms and %ds", ST_MEMCACHED_MAX_TIMEOUT_MS / 1000);
    }
    if (mc->socket == NULL) {
        if (mc->address == NULL || split_address(c, mc->address) != ST_OK) {
            return st_cfg_fail(err, doc, st_cfg_get(cfg, "address"), "address",
                               "want host:port or [v6]:port, got '%s'",
                               mc->address != NULL ? mc->address : "");
        }
        c->name = mc->address;
        return ST_OK;
    }
    if (st_cfg_get(cfg, "address") != NULL) {
        return st_cfg_fail(err, doc, st_cfg_get(cfg, "socket"), "socket",
                           "give address or socket, not both");
    }
    if (mc->socket[0] == '\0' || strlen(mc->socket) > path_max) {
        return st_cfg_fail(err, doc, st_cfg_get(cfg, "socket"), "socket",
                           "want a unix socket path of 1 to %zu bytes", path_max);
    }
    c->name = mc->socket;
    return ST_OK;
}

int st_memcached_init(const st_cfg_doc *doc, const st_cfg_node *cfg, const st_sampler_env *env,
                      void **ctx, st_cfg_error *err)
{
    memcached_ctx *c = calloc(1, sizeof(*c));
    int rv;
    (void)env;
    if (c == NULL) {
        return ST_ENOMEM;
    }
    c->fd = -1;
    if ((rv = st_cfg_bind(doc, cfg, memcached_rows, &c->cfg, err)) != ST_OK ||
        (rv = check_cfg(c, doc, cfg, err)) != ST_OK) {
        st_memcached_fini(c);
        return rv;
    }
    /* Connecting waits for the first run: a server that is down must not
     * keep the agent from starting. */
    *ctx = c;
    return ST_OK;
}

const st_sampler_def st_sampler_memcached = ST_SAMPLER_ROW(memcached);
