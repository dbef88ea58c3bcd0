/* statsd: a UDP listener for StatsD and DogStatsD lines. A thread reads
 * datagrams in recvmmsg batches and aggregates them (statsd_parse.h) into
 * the active one of two buffers under a mutex; sample() swaps the buffers
 * and emits the one it took whole: counters, gauges (last/min/max),
 * sketches and set sizes, each series on its catalog layer. */
#include "statsd.h"

#include "samplers.h"

#include "err.h"
#include "log.h"
#include "sketch.h"
#include "timeutil.h"
#include "util.h"

#include <errno.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define ST_STATSD_MAX_MAPPINGS 256
#define ST_STATSD_MAX_ADDR 300         /* listen: host:port */
#define ST_STATSD_GAUGE_TTL_MS 3600000 /* a gauge base unused this long is forgotten */

typedef struct statsd_cfg {
    char *listen;
    uint64_t rcvbuf;
    uint64_t batch;
    uint64_t max_datagram;
    uint64_t max_series;
    uint64_t max_tags;
    uint64_t max_set;
    const st_cfg_node *mappings;
} statsd_cfg;

static const st_cfg_map statsd_rows[] = {
    {ST_CFG_STR, "listen", "127.0.0.1:8125", offsetof(statsd_cfg, listen),
     "UDP address: host:port, a.b.c.d:port or [v6]:port", NULL, 0, 0},
    {ST_CFG_SIZE, "rcvbuf", "8MiB", offsetof(statsd_cfg, rcvbuf),
     "socket receive buffer (the kernel caps it at net.core.rmem_max)", NULL, 4096, 1 << 30},
    {ST_CFG_UINT, "batch", "32", offsetof(statsd_cfg, batch), "datagrams read per recvmmsg call",
     NULL, 1, 1024},
    {ST_CFG_SIZE, "max_datagram", "64KiB", offsetof(statsd_cfg, max_datagram),
     "longest datagram read whole; the cut line of a longer one counts as malformed", NULL, 512,
     65536},
    {ST_CFG_UINT, "max_series", "10000", offsetof(statsd_cfg, max_series),
     "series per interval; lines for more count as statsd.dropped", NULL, 1, ST_STATSD_MAX_SERIES},
    {ST_CFG_UINT, "max_tags", "16", offsetof(statsd_cfg, max_tags),
     "tags per line; a line with more is malformed", NULL, 0, ST_STATSD_MAX_TAGS},
    {ST_CFG_UINT, "max_set_size", "100000", offsetof(statsd_cfg, max_set),
     "distinct members per set per interval", NULL, 1, ST_STATSD_MAX_SET_SIZE},
    {ST_CFG_NODE, "mappings", NULL, offsetof(statsd_cfg, mappings),
     "name prefix -> layer (database, function, frontend, realtime, infrastructure)", NULL, 0, 0},
    {ST_CFG_IGNORE, "interval", NULL, 0, "run every (default: the agent's interval)", NULL, 0, 0},
    {0},
};

struct mapping {
    char *prefix;
    size_t len;
    st_layer layer;
};

/* Applied after the configured mappings: the catalog's prefixes. */
static const struct mapping default_mappings[] = {
    {"web.vitals.", 11, ST_LAYER_FRONTEND}, {"realtime.", 9, ST_LAYER_REALTIME},
    {"frontend.", 9, ST_LAYER_FRONTEND},    {"app.", 4, ST_LAYER_FUNCTION},
    {"db.", 3, ST_LAYER_DATABASE},
};

/* Catalog series whose unit StatsD cannot carry: |h and |d values of these
 * are seconds, and realtime.bytes counts bytes. |ms is always seconds. */
static const struct {
    const char *name;
    const char *unit;
} catalog_units[] = {
    {"app.function.duration", "s"},
    {"realtime.subscription.latency", "s"},
    {"frontend.component.render", "s"},
    {"http.server.duration", "s"},
    {"realtime.bytes", "B"},
    {"web.vitals.fcp", "s"},
    {"web.vitals.lcp", "s"},
    {"web.vitals.ttfb", "s"},
    {"web.vitals.inp", "s"},
    {"web.vitals.tti", "s"},
};

typedef struct statsd_ctx {
    statsd_cfg cfg;
    struct mapping map[ST_STATSD_MAX_MAPPINGS];
    size_t nmap;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int fd;
    int wake;
    int port;
    bool running;
    pthread_t thread;
    atomic_bool stop;
    pthread_mutex_t mu;
    /* Under mu: the listener's buffer and what it counted. */
    st_statsd_agg *active;
    uint64_t kernel_drops;
    st_statsd_stats totals; /* of every buffer taken so far */
    /* The scheduler's. */
    st_statsd_agg *taken;
    st_statsd_agg *carry[2]; /* gauge bases: this and the previous generation */
    int64_t carry_rotated_ms;
    uint64_t kernel_drops_emitted;
    /* The listener's receive buffers. */
    struct mmsghdr *msgs;
    struct iovec *iov;
    char *bufs;
    char *ctrl;
    size_t ctrl_len;
} statsd_ctx;

/* ---- configuration ---- */

static int parse_layer(const char *s, st_layer *out)
{
    static const struct {
        const char *name;
        st_layer layer;
    } names[] = {{"database", ST_LAYER_DATABASE},
                 {"function", ST_LAYER_FUNCTION},
                 {"frontend", ST_LAYER_FRONTEND},
                 {"realtime", ST_LAYER_REALTIME},
                 {"infrastructure", ST_LAYER_INFRA}};
    for (size_t i = 0; s != NULL && i < ST_ARRAY_LEN(names); i++) {
        if (strcmp(s, names[i].name) == 0) {
            *out = names[i].layer;
            return ST_OK;
        }
    }
    return ST_EINVAL;
}

static int mapping_cmp(const void *a, const void *b)
{
    const struct mapping *x = a;
    const struct mapping *y = b;
    return (x->len < y->len) - (x->len > y->len); /* longest first */
}

static int init_mappings(statsd_ctx *c, const st_cfg_doc *doc, st_cfg_error *err)
{
    const st_cfg_node *m = c->cfg.mappings;
    size_t n = st_cfg_map_len(m);
    if (m == NULL || st_cfg_is_null(m)) {
        return ST_OK;
    }
    if (st_cfg_node_type(m) != ST_CFG_NODE_MAP || n > ST_STATSD_MAX_MAPPINGS) {
        return st_cfg_fail(err, doc, m, "mappings", "a mapping of at most %d prefix: layer pairs",
                           ST_STATSD_MAX_MAPPINGS);
    }
    for (size_t i = 0; i < n; i++) {
        const char *prefix = st_cfg_map_key(m, i);
        const st_cfg_node *v = st_cfg_map_value(m, i);
        struct mapping *mp = &c->map[c->nmap];
        if (prefix[0] == '\0' || strlen(prefix) > ST_STATSD_MAX_NAME) {
            return st_cfg_fail(err, doc, v, prefix, "a prefix is 1 to %d bytes",
                               ST_STATSD_MAX_NAME);
        }
        if (parse_layer(st_cfg_scalar(v), &mp->layer) != ST_OK) {
            return st_cfg_fail(err, doc, v, prefix,
                               "layer must be database, function, frontend, realtime or "
                               "infrastructure");
        }
        if ((mp->prefix = strdup(prefix)) == NULL) {
            return ST_ENOMEM;
        }
        mp->len = strlen(prefix);
        c->nmap++;
    }
    qsort(c->map, c->nmap, sizeof(c->map[0]), mapping_cmp);
    return ST_OK;
}

/* host:port, a.b.c.d:port, [v6]:port or :port (every address). */
static int resolve_listen(statsd_ctx *c, const char *a)
{
    char host[ST_STATSD_MAX_ADDR];
    const char *colon = strrchr(a, ':');
    const char *h = a;
    size_t hlen;
    struct addrinfo hints;
    struct addrinfo *res = NULL;
    uint64_t port;
    if (colon == NULL || strlen(a) >= sizeof(host) || st_parse_u64(colon + 1, &port) != ST_OK ||
        port > 65535) {
        return ST_EINVAL;
    }
    hlen = (size_t)(colon - a);
    if (a[0] == '[') {
        if (hlen < 2 || a[hlen - 1] != ']') {
            return ST_EINVAL;
        }
        h = a + 1;
        hlen -= 2;
    } else if (memchr(a, ':', hlen) != NULL) {
        return ST_EINVAL; /* IPv6 without brackets */
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    if (getaddrinfo(hlen > 0 ? host : NULL, colon + 1, &hints, &res) != 0) {
        return ST_ENOENT;
    }
    if (res->ai_addrlen <= sizeof(c->addr)) {
        memcpy(&c->addr, res->ai_addr, res->ai_addrlen);
        c->addrlen = res->ai_addrlen;
    }
    freeaddrinfo(res);
    return c->addrlen > 0 ? ST_OK : ST_EINVAL;
}

/* ---- the listener thread ---- */

/* The kernel's count of datagrams it dropped for want of buffer space
 * (SO_RXQ_OVFL), carried by every message read. */
static void note_kernel_drops(statsd_ctx *c, struct msghdr *h)
{
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(h); cm != NULL; cm = CMSG_NXTHDR(h, cm)) {
        uint32_t n;
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SO_RXQ_OVFL &&
            cm->cmsg_len >= CMSG_LEN(sizeof(n))) {
            memcpy(&n, CMSG_DATA(cm), sizeof(n));
            c->kernel_drops = ST_MAX(c->kernel_drops, (uint64_t)n);
        }
    }
}

/* Reads what is queued, batch by batch, and aggregates each batch under
 * the lock: the lock is held for one batch (microseconds), never across a
 * wait. */
static void drain(statsd_ctx *c)
{
    unsigned batch = (unsigned)c->cfg.batch;
    while (!atomic_load(&c->stop)) {
        int n;
        for (unsigned i = 0; i < batch; i++) {
            c->msgs[i].msg_hdr.msg_controllen = c->ctrl_len;
            c->msgs[i].msg_hdr.msg_flags = 0;
            c->msgs[i].msg_len = 0;
        }
        n = recvmmsg(c->fd, c->msgs, batch, MSG_DONTWAIT, NULL);
        if (n <= 0) {
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                ST_WARN("statsd", "recvmmsg: %s", strerror(errno));
            }
            return;
        }
        pthread_mutex_lock(&c->mu);
        for (int i = 0; i < n; i++) {
            const struct msghdr *h = &c->msgs[i].msg_hdr;
            st_statsd_agg_datagram(c->active, h->msg_iov->iov_base, c->msgs[i].msg_len,
                                   (h->msg_flags & MSG_TRUNC) != 0);
            note_kernel_drops(c, &c->msgs[i].msg_hdr);
        }
        pthread_mutex_unlock(&c->mu);
        if ((unsigned)n < batch) {
            return; /* the queue is empty */
        }
    }
}

static void *listen_main(void *arg)
{
    statsd_ctx *c = arg;
    struct pollfd pfd[2] = {{c->fd, POLLIN, 0}, {c->wake, POLLIN, 0}};
    while (!atomic_load(&c->stop)) {
        int n = poll(pfd, 2, -1);
        if (n < 0 && errno != EINTR) {
            ST_ERROR("statsd", "poll: %s; retrying", strerror(errno));
            st_time_sleep_ms(100);
            continue;
        }
        if (n > 0 && (pfd[0].revents & (POLLIN | POLLERR)) != 0) {
            drain(c);
        }
    }
    return NULL;
}

static int alloc_buffers(statsd_ctx *c)
{
    size_t batch = (size_t)c->cfg.batch;
    size_t dsize = (size_t)c->cfg.max_datagram;
    c->ctrl_len = CMSG_SPACE(sizeof(uint32_t));
    c->msgs = calloc(batch, sizeof(*c->msgs));
    c->iov = calloc(batch, sizeof(*c->iov));
    c->bufs = malloc(batch * dsize);
    c->ctrl = calloc(batch, c->ctrl_len);
    if (c->msgs == NULL || c->iov == NULL || c->bufs == NULL || c->ctrl == NULL) {
        return ST_ENOMEM;
    }
    for (size_t i = 0; i < batch; i++) {
        c->iov[i] = (struct iovec){c->bufs + i * dsize, dsize};
        c->msgs[i].msg_hdr.msg_iov = &c->iov[i];
        c->msgs[i].msg_hdr.msg_iovlen = 1;
        c->msgs[i].msg_hdr.msg_control = c->ctrl + i * c->ctrl_len;
    }
    return ST_OK;
}

/* SO_RCVBUFFORCE passes net.core.rmem_max when we may (CAP_NET_ADMIN). */
static void set_rcvbuf(statsd_ctx *c)
{
    int want = (int)c->cfg.rcvbuf;
    int got = 0;
    socklen_t len = sizeof(got);
    int on = 1;
    if (setsockopt(c->fd, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof(want)) != 0) {
        (void)setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof(want));
    }
    /* Linux reports twice what it books for the payload. */
    if (getsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &got, &len) == 0 && got / 2 < want) {
        ST_WARN("statsd",
                "receive buffer is %d bytes, not the %d asked for: raise "
                "net.core.rmem_max",
                got / 2, want);
    }
    if (setsockopt(c->fd, SOL_SOCKET, SO_RXQ_OVFL, &on, sizeof(on)) != 0) {
        ST_DEBUG("statsd", "SO_RXQ_OVFL: %s", strerror(errno));
    }
}

static int bind_socket(statsd_ctx *c)
{
    struct sockaddr_storage bound;
    socklen_t blen = sizeof(bound);
    int fd = socket(c->addr.ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        ST_ERROR("statsd", "socket: %s", strerror(errno));
        return ST_ENET;
    }
    c->fd = fd;
    set_rcvbuf(c);
    if (bind(fd, (const struct sockaddr *)&c->addr, c->addrlen) != 0) {
        int e = errno;
        ST_ERROR("statsd", "cannot listen on udp %s: %s", c->cfg.listen, strerror(e));
        close(fd);
        c->fd = -1;
        return e == EADDRINUSE ? ST_EEXIST : (e == EACCES ? ST_EPERM : ST_ENET);
    }
    if (getsockname(fd, (struct sockaddr *)&bound, &blen) == 0) {
        c->port =
            ntohs(bound.ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)&bound)->sin6_port
                                              : ((const struct sockaddr_in *)&bound)->sin_port);
    }
    return ST_OK;
}

/* Binds and starts the listener; the first sample() does it, so a port
 * that is busy is retried with the sampler's backoff, and --check-config
 * does not need the port. */
static int start(statsd_ctx *c)
{
    sigset_t all;
    sigset_t old;
    int rv;
    if ((rv = bind_socket(c)) != ST_OK) {
        return rv;
    }
    if (c->wake < 0 && (c->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        rv = ST_EIO;
        goto out;
    }
    /* Signals belong to the main thread. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    rv = pthread_create(&c->thread, NULL, listen_main, c);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rv == 0) {
        pthread_setname_np(c->thread, "st-statsd"); /* for top -H and the benchmark */
    }
    if (rv != 0) {
        rv = ST_ENOMEM;
        goto out;
    }
    c->running = true;
    ST_INFO("statsd", "listening on udp %s (port %d)", c->cfg.listen, c->port);
    return ST_OK;
out:
    close(c->fd);
    c->fd = -1;
    return rv;
}

/* ---- emitting ---- */

static st_layer layer_of(const statsd_ctx *c, const char *name)
{
    for (size_t i = 0; i < c->nmap; i++) {
        if (strncmp(name, c->map[i].prefix, c->map[i].len) == 0) {
            return c->map[i].layer;
        }
    }
    for (size_t i = 0; i < ST_ARRAY_LEN(default_mappings); i++) {
        if (strncmp(name, default_mappings[i].prefix, default_mappings[i].len) == 0) {
            return default_mappings[i].layer;
        }
    }
    return ST_LAYER_INFRA;
}

static const char *unit_of(const st_statsd_entry *en)
{
    if (en->type == ST_STATSD_TIMER) {
        return "s";
    }
    if (en->type == ST_STATSD_GAUGE || en->type == ST_STATSD_SET) {
        return "";
    }
    for (size_t i = 0; i < ST_ARRAY_LEN(catalog_units); i++) {
        if (strcmp(en->name, catalog_units[i].name) == 0) {
            return catalog_units[i].unit;
        }
    }
    return "";
}

/* Forgets gauge bases unused for two generations. */
static void carry_rotate(statsd_ctx *c, int64_t now)
{
    st_statsd_agg *t = c->carry[1];
    st_statsd_agg_reset(t);
    c->carry[1] = c->carry[0];
    c->carry[0] = t;
    c->carry_rotated_ms = now;
}

/* The gauge's min, max and last go to the fold in that order, so the fold's
 * point keeps all three; the last value becomes the next interval's base. */
static int emit_gauge(statsd_ctx *c, st_emit *e, const st_series_desc *d, const st_statsd_entry *en)
{
    double base = 0;
    double last;
    double lo;
    double hi;
    int rv;
    if (st_statsd_agg_get_gauge(c->carry[0], en, &base) != ST_OK) {
        (void)st_statsd_agg_get_gauge(c->carry[1], en, &base);
    }
    st_statsd_gauge_resolve(&en->gauge, base, &last, &lo, &hi);
    if ((lo != last && (rv = st_emit_gauge(e, d, lo)) != ST_OK) ||
        (hi != last && (rv = st_emit_gauge(e, d, hi)) != ST_OK) ||
        (rv = st_emit_gauge(e, d, last)) != ST_OK) {
        return rv;
    }
    if (st_statsd_agg_put_gauge(c->carry[0], en, last) == ST_ETOOBIG) {
        carry_rotate(c, st_time_mono_ms());
        (void)st_statsd_agg_put_gauge(c->carry[0], en, last);
    }
    return ST_OK;
}

static int emit_entry(statsd_ctx *c, st_emit *e, const st_statsd_entry *en)
{
    st_series_desc d = {en->name, en->tags, en->ntags, layer_of(c, en->name), unit_of(en), 0};
    switch (en->type) {
    case ST_STATSD_COUNTER:
        return st_emit_counter_add(e, &d, en->count);
    case ST_STATSD_GAUGE:
        return emit_gauge(c, e, &d, en);
    case ST_STATSD_SET:
        return st_emit_gauge(e, &d, (double)en->distinct);
    default:
        return st_emit_sketch(e, &d, en->sketch);
    }
}

static int emit_self(st_emit *e, const st_statsd_stats *s, uint64_t kernel)
{
    const struct {
        const char *name;
        uint64_t v;
    } rows[] = {{"statsd.received", s->received},
                {"statsd.malformed", s->malformed},
                {"statsd.dropped", s->dropped},
                {"statsd.ignored", s->ignored},
                {"statsd.udp.dropped", kernel}};
    int rv = ST_OK;
    for (size_t i = 0; i < ST_ARRAY_LEN(rows); i++) {
        st_series_desc d = {rows[i].name, NULL, 0, ST_LAYER_INFRA, "", 0};
        int r = st_emit_counter_add(e, &d, (double)rows[i].v);
        rv = rv == ST_OK ? r : rv;
    }
    return rv;
}

int st_statsd_sample(void *ctx, st_emit *e)
{
    statsd_ctx *c = ctx;
    st_statsd_agg *t;
    st_statsd_stats s;
    uint64_t kernel;
    size_t n;
    int rv;
    if (!c->running && (rv = start(c)) != ST_OK) {
        return rv;
    }
    pthread_mutex_lock(&c->mu);
    t = c->active;
    c->active = c->taken;
    c->taken = t;
    kernel = c->kernel_drops;
    pthread_mutex_unlock(&c->mu);

    /* Everything taken is emitted; what the fold refuses is counted. */
    st_statsd_agg_stats(t, &s);
    n = st_statsd_agg_count(t);
    for (size_t i = 0; i < n; i++) {
        st_statsd_entry en;
        if (st_statsd_agg_entry(t, i, &en) == ST_OK && emit_entry(c, e, &en) != ST_OK) {
            s.dropped += en.lines;
        }
    }
    if (st_time_mono_ms() - c->carry_rotated_ms > ST_STATSD_GAUGE_TTL_MS) {
        carry_rotate(c, st_time_mono_ms());
    }
    rv = emit_self(e, &s, kernel - c->kernel_drops_emitted);
    c->kernel_drops_emitted = kernel;
    st_statsd_agg_reset(t);
    pthread_mutex_lock(&c->mu);
    c->totals.received += s.received;
    c->totals.malformed += s.malformed;
    c->totals.dropped += s.dropped;
    c->totals.ignored += s.ignored;
    pthread_mutex_unlock(&c->mu);
    return rv;
}

int st_statsd_totals(void *ctx, st_statsd_stats *out)
{
    statsd_ctx *c = ctx;
    st_statsd_stats a;
    if (c == NULL || out == NULL) {
        return ST_EINVAL;
    }
    pthread_mutex_lock(&c->mu);
    st_statsd_agg_stats(c->active, &a);
    out->received = c->totals.received + a.received;
    out->malformed = c->totals.malformed + a.malformed;
    out->dropped = c->totals.dropped + a.dropped;
    out->ignored = c->totals.ignored + a.ignored;
    pthread_mutex_unlock(&c->mu);
    return ST_OK;
}

int st_statsd_port(void *ctx)
{
    const statsd_ctx *c = ctx;
    return c != NULL && c->running ? c->port : 0;
}

/* ---- life cycle ---- */

void st_statsd_fini(void *ctx)
{
    statsd_ctx *c = ctx;
    if (c == NULL) {
        return;
    }
    if (c->running) {
        uint64_t one = 1;
        atomic_store(&c->stop, true);
        if (write(c->wake, &one, sizeof(one)) != sizeof(one)) {
            ST_WARN("statsd", "cannot wake the listener: %s", strerror(errno));
        }
        pthread_join(c->thread, NULL);
    }
    if (c->fd >= 0) {
        close(c->fd);
    }
    if (c->wake >= 0) {
        close(c->wake);
    }
    for (size_t i = 0; i < c->nmap; i++) {
        free(c->map[i].prefix);
    }
    st_statsd_agg_free(c->active);
    st_statsd_agg_free(c->taken);
    st_statsd_agg_free(c->carry[0]);
    st_statsd_agg_free(c->carry[1]);
    free(c->msgs);
    free(c->iov);
    free(c->bufs);
    free(c->ctrl);
    pthread_mutex_destroy(&c->mu);
    st_cfg_release(statsd_rows, &c->cfg);
    free(c);
}

static int new_aggs(statsd_ctx *c)
{
    st_statsd_limits lim = {(size_t)c->cfg.max_series, (size_t)c->cfg.max_tags,
                            (size_t)c->cfg.max_set, 0};
    uint8_t seed[16];
    int rv;
    /* A random seed keeps crafted names from colliding in the table. */
    if (st_uuid_random(seed) == ST_OK) {
        memcpy(&lim.seed, seed, sizeof(lim.seed));
    }
    if ((rv = st_statsd_agg_new(&lim, &c->active)) != ST_OK ||
        (rv = st_statsd_agg_new(&lim, &c->taken)) != ST_OK ||
        (rv = st_statsd_agg_new(&lim, &c->carry[0])) != ST_OK ||
        (rv = st_statsd_agg_new(&lim, &c->carry[1])) != ST_OK) {
        return rv;
    }
    return alloc_buffers(c);
}

int st_statsd_init(const st_cfg_doc *doc, const st_cfg_node *cfg, const st_sampler_env *env,
                   void **ctx, st_cfg_error *err)
{
    statsd_ctx *c = calloc(1, sizeof(*c));
    int rv;
    (void)env;
    if (c == NULL) {
        return ST_ENOMEM;
    }
    c->fd = -1;
    c->wake = -1;
    pthread_mutex_init(&c->mu, NULL);
    atomic_init(&c->stop, false);
    if ((rv = st_cfg_bind(doc, cfg, statsd_rows, &c->cfg, err)) != ST_OK ||
        (rv = init_mappings(c, doc, err)) != ST_OK) {
        goto out;
    }
    if (c->cfg.listen == NULL || resolve_listen(c, c->cfg.listen) != ST_OK) {
        rv = st_cfg_fail(err, doc, st_cfg_get(cfg, "listen"), "listen",
                         "want host:port, a.b.c.d:port or [v6]:port, got '%s'",
                         c->cfg.listen != NULL ? c->cfg.listen : "");
        goto out;
    }
    if ((rv = new_aggs(c)) != ST_OK) {
        goto out;
    }
    c->carry_rotated_ms = st_time_mono_ms();
    *ctx = c;
    c = NULL;
out:
    st_statsd_fini(c);
    return rv;
}

const st_sampler_def st_sampler_statsd = ST_SAMPLER_ROW(statsd);
