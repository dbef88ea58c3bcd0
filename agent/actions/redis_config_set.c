/* redis.config_set: CONFIG SET of one parameter that agent.yaml allows, to a
 * value it allows (a list, or any), over TCP or a unix socket. hiredis
 * formats the commands and parses the replies; the socket is netio's, so
 * the whole action has one deadline. The value before is read first and
 * reported with the new one, so that an operator can set it back. */
#include "actions.h"

#include "err.h"
#include "log.h"
#include "samplers/netio.h"
#include "timeutil.h"
#include "util.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <unistd.h>

#define ST_RCS_MAX_HOST 255
#define ST_RCS_MAX_SECRET 1024
#define ST_RCS_MAX_PARAMS 64 /* parameters in allow */
#define ST_RCS_MAX_VALUES 64 /* values listed for one parameter */
#define ST_RCS_MAX_NAME 128
#define ST_RCS_MAX_VALUE 1024
#define ST_RCS_MAX_REPLY 65536
#define ST_RCS_MAX_TIMEOUT_MS 60000

typedef struct rcs_cfg {
    char *address;
    char *socket;
    char *username;
    char *password;
    int64_t timeout_ms;
    const st_cfg_node *allow;
} rcs_cfg;

typedef struct allowed {
    char *param;
    bool any;
    char **values;
    size_t n;
} allowed;

typedef struct rcs_ctx {
    rcs_cfg cfg;
    char host[ST_RCS_MAX_HOST + 1];
    char port[8];
    st_net_who who;
    allowed *allow;
    size_t nallow;
} rcs_ctx;

/* A connection for one action. */
typedef struct conn {
    int fd;
    redisReader *reader;
    const st_net_who *who;
    int64_t deadline;
} conn;

static const st_cfg_map rcs_rows[] = {
    {ST_CFG_STR, "address", "127.0.0.1:6379", offsetof(rcs_cfg, address),
     "host:port or [v6]:port of the server", NULL, 0, 0},
    {ST_CFG_STR, "socket", NULL, offsetof(rcs_cfg, socket), "unix socket path (instead of address)",
     NULL, 0, 0},
    {ST_CFG_STR, "username", NULL, offsetof(rcs_cfg, username), "ACL user (Redis 6+)", NULL, 0, 0},
    {ST_CFG_STR, "password", NULL, offsetof(rcs_cfg, password), "sent with AUTH", NULL, 0, 0},
    {ST_CFG_DURATION, "timeout", "5s", offsetof(rcs_cfg, timeout_ms),
     "connect, AUTH, CONFIG GET and CONFIG SET together", NULL, 0, 0},
    {ST_CFG_NODE, "allow", NULL, offsetof(rcs_cfg, allow),
     "parameter -> list of allowed values, or any", NULL, 0, 0},
    {0},
};

/* Parameters that make the server read or write files elsewhere: not
 * something a finding should ever change. */
static const char *const forbidden[] = {
    "dir",           "dbfilename",     "logfile",          "aclfile", "pidfile",
    "unixsocket",    "appendfilename", "appenddirname",    "include", "loadmodule",
    "tls-cert-file", "tls-key-file",   "tls-ca-cert-file",
};

/* ---- configuration ---- */

static void rcs_fini(void *ctx)
{
    rcs_ctx *c = ctx;
    if (c == NULL) {
        return;
    }
    for (size_t i = 0; i < c->nallow; i++) {
        for (size_t k = 0; k < c->allow[i].n; k++) {
            free(c->allow[i].values[k]);
        }
        free(c->allow[i].values);
        free(c->allow[i].param);
    }
    free(c->allow);
    st_cfg_release(rcs_rows, &c->cfg);
    free(c);
}

static bool good_param(const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-')) {
            return false;
        }
    }
    return n > 0 && n <= ST_RCS_MAX_NAME;
}

/* One entry of allow: "any" or a list of values. */
static int add_allowed(rcs_ctx *c, const st_cfg_doc *doc, const char *param, const st_cfg_node *v,
                       st_cfg_error *err)
{
    allowed *a = &c->allow[c->nallow];
    size_t n = st_cfg_seq_len(v);
    if (!good_param(param)) {
        return st_cfg_fail(err, doc, v, param,
                           "parameter names are lower-case letters, digits "
                           "and '-', at most %d",
                           ST_RCS_MAX_NAME);
    }
    for (size_t i = 0; i < ST_ARRAY_LEN(forbidden); i++) {
        if (strcmp(param, forbidden[i]) == 0) {
            return st_cfg_fail(err, doc, v, param,
                               "may not be allowed: it points the server at "
                               "files");
        }
    }
    if ((a->param = strdup(param)) == NULL) {
        return ST_ENOMEM;
    }
    c->nallow++;
    if (st_cfg_scalar(v) != NULL && strcmp(st_cfg_scalar(v), "any") == 0) {
        a->any = true;
        return ST_OK;
    }
    if (st_cfg_node_type(v) != ST_CFG_NODE_SEQ || n == 0 || n > ST_RCS_MAX_VALUES) {
        return st_cfg_fail(err, doc, v, param, "want any or a list of 1 to %d values",
                           ST_RCS_MAX_VALUES);
    }
    if ((a->values = calloc(n, sizeof(*a->values))) == NULL) {
        return ST_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const char *s = st_cfg_scalar(st_cfg_seq_at(v, i));
        if (s == NULL || strlen(s) > ST_RCS_MAX_VALUE) {
            return st_cfg_fail(err, doc, st_cfg_seq_at(v, i), param,
                               "values are scalars of at most %d bytes", ST_RCS_MAX_VALUE);
        }
        if ((a->values[a->n] = strdup(s)) == NULL) {
            return ST_ENOMEM;
        }
        a->n++;
    }
    return ST_OK;
}

static int parse_allow(rcs_ctx *c, const st_cfg_doc *doc, const st_cfg_node *cfg, st_cfg_error *err)
{
    const st_cfg_node *m = c->cfg.allow;
    size_t n = st_cfg_map_len(m);
    int rv;
    if (st_cfg_node_type(m) != ST_CFG_NODE_MAP || n == 0 || n > ST_RCS_MAX_PARAMS) {
        return st_cfg_fail(err, doc, m != NULL ? m : cfg, "allow",
                           "a mapping of 1 to %d parameters to a list of values or any",
                           ST_RCS_MAX_PARAMS);
    }
    if ((c->allow = calloc(n, sizeof(*c->allow))) == NULL) {
        return ST_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        if ((rv = add_allowed(c, doc, st_cfg_map_key(m, i), st_cfg_map_value(m, i), err)) !=
            ST_OK) {
            return rv;
        }
    }
    return ST_OK;
}

static int check_target(rcs_ctx *c, const st_cfg_doc *doc, const st_cfg_node *cfg,
                        st_cfg_error *err)
{
    const rcs_cfg *rc = &c->cfg;
    size_t path_max = sizeof(((struct sockaddr_un *)0)->sun_path) - 1;
    if (rc->timeout_ms <= 0 || rc->timeout_ms > ST_RCS_MAX_TIMEOUT_MS) {
        return st_cfg_fail(err, doc, st_cfg_get(cfg, "timeout"), "timeout",
                           "must be between 1ms and %ds", ST_RCS_MAX_TIMEOUT_MS / 1000);
    }
    if ((rc->password != NULL && strlen(rc->password) > ST_RCS_MAX_SECRET) ||
        (rc->username != NULL &&
         (rc->password == NULL || strlen(rc->username) > ST_RCS_MAX_SECRET))) {
        return st_cfg_fail(err, doc, cfg, rc->username != NULL ? "username" : "password",
                           "at most %d bytes; a username needs a password", ST_RCS_MAX_SECRET);
    }
    if (rc->socket != NULL) {
        if (st_cfg_get(cfg, "address") != NULL || rc->socket[0] == '\0' ||
            strlen(rc->socket) > path_max) {
            return st_cfg_fail(err, doc, st_cfg_get(cfg, "socket"), "socket",
                               "a unix socket path of 1 to %zu bytes, and no address", path_max);
        }
        c->who = (st_net_who){"actions", rc->socket};
        return ST_OK;
    }
    if (rc->address == NULL || st_net_split_address(rc->address, c->host, sizeof(c->host), c->port,
                                                    sizeof(c->port)) != ST_OK) {
        return st_cfg_fail(err, doc, st_cfg_get(cfg, "address"), "address",
                           "want host:port or [v6]:port, got '%s'",
                           rc->address != NULL ? rc->address : "");
    }
    c->who = (st_net_who){"actions", rc->address};
    return ST_OK;
}

static int rcs_init(const st_cfg_doc *doc, const st_cfg_node *cfg, void **ctx, st_cfg_error *err)
{
    rcs_ctx *c = calloc(1, sizeof(*c));
    const st_cfg_node *map = st_cfg_node_type(cfg) == ST_CFG_NODE_MAP ? cfg : NULL;
    int rv;
    if (c == NULL) {
        return ST_ENOMEM;
    }
    if ((rv = st_cfg_bind(doc, map, rcs_rows, &c->cfg, err)) != ST_OK ||
        (rv = check_target(c, doc, cfg, err)) != ST_OK ||
        (rv = parse_allow(c, doc, cfg, err)) != ST_OK) {
        rcs_fini(c);
        return rv;
    }
    *ctx = c;
    return ST_OK;
}

/* ---- the protocol ---- */

/* Feeds the reader until it holds one whole reply of at most
 * ST_RCS_MAX_REPLY bytes. */
static int read_reply(conn *k, redisReply **out)
{
    char chunk[4096];
    size_t fed = 0;
    for (;;) {
        void *reply = NULL;
        size_t n = 0;
        int rv;
        if (redisReaderGetReply(k->reader, &reply) != REDIS_OK) {
            return ST_EPARSE;
        }
        if (reply != NULL) {
            *out = reply;
            return ST_OK;
        }
        if ((rv = st_net_recv(k->fd, chunk, sizeof(chunk), k->who, k->deadline, &n)) != ST_OK) {
            return rv;
        }
        if (n > ST_RCS_MAX_REPLY - fed) {
            return ST_ETOOBIG;
        }
        fed += n;
        if (redisReaderFeed(k->reader, chunk, n) != REDIS_OK) {
            return ST_ENOMEM;
        }
    }
}

static int command(conn *k, int argc, const char **argv, redisReply **out)
{
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, NULL);
    int rv;
    if (len < 0) {
        return ST_ENOMEM;
    }
    rv = st_net_send_all(k->fd, cmd, (size_t)len, k->who, k->deadline);
    redisFreeCommand(cmd);
    return rv == ST_OK ? read_reply(k, out) : rv;
}

/* Runs a command; on anything but a reply of type want the outcome is
 * FAILED with redis's error (or ours) and false comes back. */
static bool ask(conn *k, int argc, const char **argv, int want, st_action_out *o, redisReply **out)
{
    redisReply *r = NULL;
    int rv = command(k, argc, argv, &r);
    const char *what = argc > 1 && strcmp(argv[0], "CONFIG") == 0 ? argv[1] : argv[0];
    if (rv != ST_OK) {
        st_action_fail(o,
                       rv == ST_ETIMEOUT ? STRATA__V1__ACTION_STATUS__ACTION_TIMEOUT
                                         : STRATA__V1__ACTION_STATUS__ACTION_FAILED,
                       "%s%s: %s", argc > 1 && what != argv[0] ? "CONFIG " : "", what,
                       st_strerror(rv));
        return false;
    }
    if (r->type != want) {
        st_action_fail(o, STRATA__V1__ACTION_STATUS__ACTION_FAILED, "%s%s: %.*s",
                       what != argv[0] ? "CONFIG " : "", what,
                       r->type == REDIS_REPLY_ERROR ? (int)r->len : 32,
                       r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply type");
        freeReplyObject(r);
        return false;
    }
    *out = r;
    return true;
}

/* ---- the action ---- */

static const allowed *find_allowed(const rcs_ctx *c, const char *param)
{
    for (size_t i = 0; i < c->nallow; i++) {
        if (strcasecmp(c->allow[i].param, param) == 0) {
            return &c->allow[i];
        }
    }
    return NULL;
}

/* Whether the action may set param to value; refused with the reason. */
static bool permitted(const rcs_ctx *c, const char *param, const char *value, st_action_out *o)
{
    const allowed *al = find_allowed(c, param);
    if (al == NULL) {
        st_action_fail(o, STRATA__V1__ACTION_STATUS__ACTION_REFUSED,
                       "parameter '%.128s' is not allowed by this agent's configuration", param);
        return false;
    }
    for (size_t i = 0; !al->any && i < al->n; i++) {
        if (strcmp(al->values[i], value) == 0) {
            return true;
        }
    }
    if (!al->any) {
        st_action_fail(o, STRATA__V1__ACTION_STATUS__ACTION_REFUSED,
                       "value '%.256s' for %s is not allowed by this agent's configuration", value,
                       al->param);
    }
    return al->any;
}

static bool authenticate(const rcs_ctx *c, conn *k, st_action_out *o)
{
    const char *argv[3] = {"AUTH", NULL, NULL};
    int argc = 1;
    redisReply *r = NULL;
    if (c->cfg.password == NULL) {
        return true;
    }
    if (c->cfg.username != NULL) {
        argv[argc++] = c->cfg.username;
    }
    argv[argc++] = c->cfg.password;
    if (!ask(k, argc, argv, REDIS_REPLY_STATUS, o, &r)) {
        return false;
    }
    freeReplyObject(r);
    return true;
}

/* CONFIG GET, then CONFIG SET; the output says what changed. */
static void set_param(conn *k, const char *param, const char *value, st_action_out *o)
{
    const char *get[3] = {"CONFIG", "GET", param};
    const char *set[4] = {"CONFIG", "SET", param, value};
    redisReply *r = NULL;
    char before[ST_RCS_MAX_VALUE + 1] = "";
    if (!ask(k, 3, get, REDIS_REPLY_ARRAY, o, &r)) {
        return;
    }
    if (r->elements == 2 && r->element[1]->type == REDIS_REPLY_STRING) {
        snprintf(before, sizeof(before), "%.*s", (int)ST_MIN(r->element[1]->len, ST_RCS_MAX_VALUE),
                 r->element[1]->str);
    } else if (r->elements == 0) {
        freeReplyObject(r);
        st_action_fail(o, STRATA__V1__ACTION_STATUS__ACTION_FAILED,
                       "the server has no parameter '%s'", param);
        return;
    }
    freeReplyObject(r);
    r = NULL;
    if (!ask(k, 4, set, REDIS_REPLY_STATUS, o, &r)) {
        return;
    }
    freeReplyObject(r);
    o->status = STRATA__V1__ACTION_STATUS__ACTION_OK;
    st_buf_printf(&o->output, "%s: %s -> %s", param, before, value);
}

static void rcs_run(void *ctx, const Strata__V1__Action *a, const atomic_int *stop,
                    st_action_out *o)
{
    static const char *const required[] = {"parameter", "value", NULL};
    const rcs_ctx *c = ctx;
    conn k = {-1, NULL, &c->who, st_time_mono_ms() + c->cfg.timeout_ms};
    const char *param;
    const char *value;
    int rv;
    (void)stop; /* the whole action is bounded by timeout (at most 60 s) */
    if (!st_action_check_params(a, required, NULL, true, o)) {
        return;
    }
    param = st_action_param(a, "parameter");
    value = st_action_param(a, "value");
    if (!permitted(c, param, value, o)) {
        return;
    }
    if ((k.reader = redisReaderCreate()) == NULL) {
        st_action_fail(o, STRATA__V1__ACTION_STATUS__ACTION_FAILED, "out of memory");
        return;
    }
    rv = st_net_connect(c->host, c->port, c->cfg.socket, &c->who, k.deadline, &k.fd);
    if (rv != ST_OK) {
        st_action_fail(o, STRATA__V1__ACTION_STATUS__ACTION_FAILED, "cannot connect to %s: %s",
                       c->who.name, st_strerror(rv));
    } else if (authenticate(c, &k, o)) {
        set_param(&k, param, value, o);
    }
    if (k.fd >= 0) {
        close(k.fd);
    }
    redisReaderFree(k.reader);
}

const st_action_def st_action_redis_config_set = {"redis.config_set", rcs_init, rcs_run, rcs_fini};
