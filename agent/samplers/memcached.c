/* memcached: cache statistics from memcached's text protocol `stats`
 * command over TCP or a unix socket. The reply ("STAT name value" lines up
 * to "END") is read into a fixed buffer under one deadline per run; the
 * connection is kept between runs and made again after any error. */
#include "samplers.h"

#include "cache_parse.h"
#include "err.h"
#include "log.h"
#include "netio.h"
#include "timeutil.h"
#include "util.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#define ST_MEMCACHED_MAX_LINE 1024 /* "STAT name value"; longer is malformed */
#define ST_MEMCACHED_MAX_HOST 255  /* DNS names are at most 253 bytes */
#define ST_MEMCACHED_MAX_TIMEOUT_MS 60000

typedef struct memcached_cfg {
    char *address;
    char *socket;
    int64_t timeout_ms;
} memcached_cfg;

typedef struct memcached_ctx {
    memcached_cfg cfg;
    char host[ST_MEMCACHED_MAX_HOST + 1];
    char port[8];
    st_net_who who; /* "memcached" and the address or socket, for logs */
    int fd;         /* -1 while disconnected */
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

/* ---- the reply ---- */

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
        size_t n = 0;
        int rv;
        if (off == ST_MEMCACHED_MAX_REPLY) {
            ST_WARN("memcached", "%s: reply over %d bytes", c->who.name, ST_MEMCACHED_MAX_REPLY);
            return ST_ETOOBIG;
        }
        rv = st_net_recv(c->fd, c->buf + off, ST_MEMCACHED_MAX_REPLY - off, &c->who, deadline_ms,
                         &n);
        if (rv != ST_OK) {
            return rv;
        }
        off += n;
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
        rv = st_net_connect(c->host, c->port, c->cfg.socket, &c->who, deadline_ms, &c->fd);
    }
    if (rv == ST_OK &&
        (rv = st_net_send_all(c->fd, cmd, sizeof(cmd) - 1, &c->who, deadline_ms)) == ST_OK) {
        rv = read_reply(c, deadline_ms, &len);
    }
    if (rv == ST_OK && (rv = st_memcached_stats_emit(e, c->buf, len)) == ST_EPARSE) {
        ST_WARN("memcached", "%s: unreadable stats reply: %.100s", c->who.name, c->buf);
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
        if (mc->address == NULL || st_net_split_address(mc->address, c->host, sizeof(c->host),
                                                        c->port, sizeof(c->port)) != ST_OK) {
            return st_cfg_fail(err, doc, st_cfg_get(cfg, "address"), "address",
                               "want host:port or [v6]:port, got '%s'",
                               mc->address != NULL ? mc->address : "");
        }
        c->who = (st_net_who){"memcached", mc->address};
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
    c->who = (st_net_who){"memcached", mc->socket};
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
