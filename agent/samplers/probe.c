/* probe: active TCP connect probes. Each run starts a non-blocking connect
 * to every target and then polls them all together, so N slow targets cost
 * one timeout, not N. Emits net.probe.connects {target, result} and
 * net.probe.connect_time {target} (seconds, successful connects only). */
#include "samplers.h"

#include "err.h"
#include "log.h"
#include "netio.h"
#include "timeutil.h"
#include "util.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ST_PROBE_MAX_TARGETS 256
#define ST_PROBE_MAX_NAME 128                      /* a target name becomes a label value */
#define ST_PROBE_MAX_LABEL (ST_PROBE_MAX_NAME + 8) /* "target <name>" */
#define ST_PROBE_MAX_HOST 255                      /* DNS names are at most 253 bytes */
#define ST_PROBE_MAX_TIMEOUT_MS 60000
#define ST_PROBE_RESOLVE_MS 60000 /* how long a resolved hostname is reused */

enum probe_state { PROBE_PENDING, PROBE_OK, PROBE_FAIL };

typedef struct probe_target_cfg {
    char *name;
    char *address;
} probe_target_cfg;

typedef struct probe_target {
    probe_target_cfg cfg;
    char label[ST_PROBE_MAX_LABEL]; /* "target <name>", how log lines name it */
    st_net_who who;
    char host[ST_PROBE_MAX_HOST + 1];
    char port[8];
    bool numeric; /* an IP literal: resolved once at init */
    bool resolved;
    int64_t resolved_ms;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int fd; /* per run */
    int64_t start_ns;
    enum probe_state state;
    double seconds;
} probe_target;

typedef struct probe_ctx {
    probe_target *t;
    size_t n;
    int64_t timeout_ms;
    struct pollfd *pfd; /* n entries, rebuilt while waiting */
    size_t *pidx;       /* pfd[i] belongs to t[pidx[i]] */
} probe_ctx;

typedef struct probe_cfg {
    const st_cfg_node *targets;
    int64_t timeout_ms;
} probe_cfg;

static const st_cfg_map probe_rows[] = {
    {ST_CFG_NODE, "targets", NULL, offsetof(probe_cfg, targets),
     "list of {name, address: host:port | [v6]:port}", NULL, 0, 0},
    {ST_CFG_DURATION, "timeout", "1s", offsetof(probe_cfg, timeout_ms),
     "how long one run waits for all connects", NULL, 0, 0},
    {0},
};

static const st_cfg_map target_rows[] = {
    {ST_CFG_STR, "name", NULL, offsetof(probe_target_cfg, name), "label value of the target", NULL,
     0, 0},
    {ST_CFG_STR, "address", NULL, offsetof(probe_target_cfg, address),
     "host:port, a.b.c.d:port or [v6]:port", NULL, 0, 0},
    {0},
};

/* Resolves t->host into t->addr; flags adds AI_NUMERICHOST for literals.
 * getaddrinfo orders the answers (RFC 6724), so the first is the one a
 * client would try first. */
static int resolve(probe_target *t, int flags)
{
    struct addrinfo hints;
    struct addrinfo *res = NULL;
    int r;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = flags | AI_NUMERICSERV;
    r = getaddrinfo(t->host, t->port, &hints, &res);
    if (r != 0) {
        if ((flags & AI_NUMERICHOST) == 0) {
            ST_WARN("probe", "target %s: cannot resolve %s: %s", t->cfg.name, t->host,
                    gai_strerror(r));
        }
        return ST_ENOENT;
    }
    if (res->ai_addrlen > sizeof(t->addr)) {
        freeaddrinfo(res);
        return ST_EINVAL;
    }
    memcpy(&t->addr, res->ai_addr, res->ai_addrlen);
    t->addrlen = res->ai_addrlen;
    t->resolved = true;
    freeaddrinfo(res);
    return ST_OK;
}

/* Hostnames are looked up again every ST_PROBE_RESOLVE_MS; when a lookup
 * fails, the last good address is kept (DNS trouble is not the target's). */
static void refresh_address(probe_target *t, int64_t now_ms)
{
    if (t->numeric || (t->resolved && now_ms - t->resolved_ms < ST_PROBE_RESOLVE_MS)) {
        return;
    }
    if (resolve(t, 0) == ST_OK) {
        t->resolved_ms = now_ms;
    }
}

static void finish(probe_target *t, enum probe_state state, int64_t now_ns)
{
    t->state = state;
    t->seconds = (double)(now_ns - t->start_ns) / 1e9;
    if (t->fd >= 0) {
        close(t->fd);
        t->fd = -1;
    }
}

/* Refused connects pass no who to netio: a refusal is what the probe
 * counts, not news for the log. */
static void start_connect(probe_target *t)
{
    int rv;
    t->fd = -1;
    t->state = PROBE_FAIL;
    if (!t->resolved || st_net_socket(t->addr.ss_family, &t->who, &t->fd) != ST_OK) {
        return;
    }
    t->start_ns = st_time_mono_ns();
    t->state = PROBE_PENDING;
    rv = st_net_connect_start(t->fd, (const struct sockaddr *)&t->addr, t->addrlen, NULL);
    if (rv != ST_EAGAIN) {
        /* loopback may connect at once */
        finish(t, rv == ST_OK ? PROBE_OK : PROBE_FAIL, st_time_mono_ns());
    }
}

/* The outcome of a connect that poll reported. */
static void complete(probe_target *t, int64_t now_ns)
{
    finish(t, st_net_connect_result(t->fd, NULL) == ST_OK ? PROBE_OK : PROBE_FAIL, now_ns);
}

/* Polls every pending connect until all are done or deadline_ns passes. */
static int wait_all(probe_ctx *c, int64_t deadline_ns)
{
    for (;;) {
        size_t np = 0;
        int64_t now = st_time_mono_ns();
        int n;
        for (size_t i = 0; i < c->n; i++) {
            if (c->t[i].state == PROBE_PENDING) {
                c->pfd[np] = (struct pollfd){.fd = c->t[i].fd, .events = POLLOUT};
                c->pidx[np++] = i;
            }
        }
        if (np == 0 || now >= deadline_ns) {
            return ST_OK;
        }
        n = poll(c->pfd, (nfds_t)np, (int)((deadline_ns - now + 999999) / 1000000));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return ST_EIO;
        }
        now = st_time_mono_ns();
        for (size_t k = 0; k < np; k++) {
            if (c->pfd[k].revents != 0) {
                complete(&c->t[c->pidx[k]], now);
            }
        }
    }
}

static int emit_target(st_emit *e, const probe_target *t)
{
    bool ok = t->state == PROBE_OK;
    st_label lab[2] = {{"target", t->cfg.name}, {"result", ok ? "ok" : "fail"}};
    st_series_desc connects = {"net.probe.connects", lab, 2, ST_LAYER_INFRA, "", 0};
    st_series_desc conn_time = {"net.probe.connect_time", lab, 1, ST_LAYER_INFRA, "s", 0};
    int rv = st_emit_counter_add(e, &connects, 1);
    if (rv == ST_OK && ok) {
        rv = st_emit_observe(e, &conn_time, t->seconds, 1);
    }
    return rv;
}

int st_probe_sample(void *ctx, st_emit *e)
{
    probe_ctx *c = ctx;
    int64_t start = st_time_mono_ns();
    int rv;
    for (size_t i = 0; i < c->n; i++) {
        refresh_address(&c->t[i], start / 1000000);
        start_connect(&c->t[i]);
    }
    /* The deadline counts from the first connect: one timeout per run. */
    rv = wait_all(c, start + c->timeout_ms * 1000000);
    for (size_t i = 0; i < c->n; i++) {
        int r;
        if (c->t[i].state == PROBE_PENDING) {
            finish(&c->t[i], PROBE_FAIL, st_time_mono_ns());
        }
        r = emit_target(e, &c->t[i]);
        if (rv == ST_OK) {
            rv = r;
        }
    }
    return rv;
}

void st_probe_fini(void *ctx)
{
    probe_ctx *c = ctx;
    if (c == NULL) {
        return;
    }
    for (size_t i = 0; i < c->n; i++) {
        st_cfg_release(target_rows, &c->t[i].cfg);
    }
    free(c->t);
    free(c->pfd);
    free(c->pidx);
    free(c);
}

static int init_target(const st_cfg_doc *doc, const st_cfg_node *node, probe_ctx *c,
                       st_cfg_error *err)
{
    probe_target *t = &c->t[c->n++]; /* counted first so fini releases it */
    const char *addr;
    int rv;
    if (st_cfg_node_type(node) != ST_CFG_NODE_MAP) {
        return st_cfg_fail(err, doc, node, "targets", "each target must be a mapping");
    }
    if ((rv = st_cfg_bind(doc, node, target_rows, &t->cfg, err)) != ST_OK) {
        return rv;
    }
    t->fd = -1;
    if (t->cfg.name == NULL || t->cfg.name[0] == '\0' || strlen(t->cfg.name) > ST_PROBE_MAX_NAME) {
        return st_cfg_fail(err, doc, node, "name", "required, 1 to %d bytes", ST_PROBE_MAX_NAME);
    }
    for (size_t i = 0; i + 1 < c->n; i++) {
        if (strcmp(c->t[i].cfg.name, t->cfg.name) == 0) {
            return st_cfg_fail(err, doc, st_cfg_get(node, "name"), "name",
                               "target '%s' named twice", t->cfg.name);
        }
    }
    snprintf(t->label, sizeof(t->label), "target %s", t->cfg.name);
    t->who = (st_net_who){"probe", t->label};
    addr = t->cfg.address;
    if (addr == NULL ||
        st_net_split_address(addr, t->host, sizeof(t->host), t->port, sizeof(t->port)) != ST_OK) {
        return st_cfg_fail(err, doc, addr != NULL ? st_cfg_get(node, "address") : node, "address",
                           "want host:port, a.b.c.d:port or [v6]:port, got '%s'",
                           addr != NULL ? addr : "");
    }
    t->numeric = resolve(t, AI_NUMERICHOST) == ST_OK;
    if (!t->numeric && addr[0] == '[') {
        return st_cfg_fail(err, doc, st_cfg_get(node, "address"), "address",
                           "'%s' is not an IPv6 address", addr);
    }
    return ST_OK;
}

int st_probe_init(const st_cfg_doc *doc, const st_cfg_node *cfg, const st_sampler_env *env,
                  void **ctx, st_cfg_error *err)
{
    probe_cfg pc;
    probe_ctx *c = NULL;
    size_t n;
    int rv;
    (void)env;
    memset(&pc, 0, sizeof(pc));
    if ((rv = st_cfg_bind(doc, cfg, probe_rows, &pc, err)) != ST_OK) {
        return rv;
    }
    if (pc.timeout_ms <= 0 || pc.timeout_ms > ST_PROBE_MAX_TIMEOUT_MS) {
        return st_cfg_fail(err, doc, st_cfg_get(cfg, "timeout"), "timeout",
                           "must be between 1ms and %ds", ST_PROBE_MAX_TIMEOUT_MS / 1000);
    }
    n = pc.targets != NULL ? st_cfg_seq_len(pc.targets) : 0;
    if (pc.targets == NULL || st_cfg_node_type(pc.targets) != ST_CFG_NODE_SEQ || n == 0 ||
        n > ST_PROBE_MAX_TARGETS) {
        return st_cfg_fail(err, doc, pc.targets != NULL ? pc.targets : cfg, "targets",
                           "want a list of 1 to %d targets", ST_PROBE_MAX_TARGETS);
    }
    if ((c = calloc(1, sizeof(*c))) == NULL || (c->t = calloc(n, sizeof(*c->t))) == NULL ||
        (c->pfd = calloc(n, sizeof(*c->pfd))) == NULL ||
        (c->pidx = calloc(n, sizeof(*c->pidx))) == NULL) {
        rv = ST_ENOMEM;
        goto out;
    }
    c->timeout_ms = pc.timeout_ms;
    for (size_t i = 0; i < n; i++) {
        if ((rv = init_target(doc, st_cfg_seq_at(pc.targets, i), c, err)) != ST_OK) {
            goto out;
        }
    }
    *ctx = c;
    c = NULL;
out:
    st_probe_fini(c);
    return rv;
}

const st_sampler_def st_sampler_probe = ST_SAMPLER_ROW(probe);
