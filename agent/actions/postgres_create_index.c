/* postgres.create_index: one CREATE INDEX CONCURRENTLY statement that the
 * validator (postgres_index_sql.c) accepted, on a connection of its own
 * with lock_timeout and statement_timeout set first. Each SET is its own
 * simple query: CONCURRENTLY cannot run inside a transaction block, which
 * several statements in one query string would form. A failed concurrent
 * build leaves an INVALID index behind; the error says so. */
#include "actions.h"

#include "err.h"
#include "log.h"
#include "timeutil.h"
#include "util.h"
#include "lazylib.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ST_PGA_MAX_DSN 4096
#define ST_PGA_MAX_TIMEOUT_MS (24LL * 60 * 60 * 1000)
#define ST_PGA_GRACE_MS 30000  /* past statement_timeout before we give up on the server */
#define ST_PGA_CANCEL_MS 5000  /* for the server to answer a cancel */
#define ST_PGA_TICK_MS 100     /* how often a wait looks at the stop flag */
#define ST_PGA_MAX_INVALID 512 /* bytes of INVALID index names kept */

typedef struct pga_cfg {
    char *dsn;
    int64_t connect_timeout_ms;
    int64_t lock_timeout_ms;
    int64_t statement_timeout_ms;
} pga_cfg;

typedef struct pga_ctx {
    pga_cfg cfg;
} pga_ctx;

/* One session: the connection and what a wait must watch. */
typedef struct session {
    PGconn *conn;
    const atomic_int *stop;
    int64_t deadline; /* monotonic ms: then the statement is cancelled */
    bool cancelled;
    bool timed_out; /* our deadline, not the server's statement_timeout */
} session;

static const st_cfg_map pga_rows[] = {
    {ST_CFG_STR, "dsn", NULL, offsetof(pga_cfg, dsn),
     "libpq connection string (a role that may create indexes on the tables)", NULL, 0, 0},
    {ST_CFG_DURATION, "connect_timeout", "5s", offsetof(pga_cfg, connect_timeout_ms), "connecting",
     NULL, 0, 0},
    {ST_CFG_DURATION, "lock_timeout", "5s", offsetof(pga_cfg, lock_timeout_ms),
     "SET lock_timeout before the statement", NULL, 0, 0},
    {ST_CFG_DURATION, "statement_timeout", "10m", offsetof(pga_cfg, statement_timeout_ms),
     "SET statement_timeout before the statement", NULL, 0, 0},
    {0},
};

/* ---- configuration ---- */

static void pga_fini(void *ctx)
{
    pga_ctx *c = ctx;
    if (c == NULL) {
        return;
    }
    st_cfg_release(pga_rows, &c->cfg);
    free(c);
}

static int range(const st_cfg_doc *doc, const st_cfg_node *cfg, const char *key, int64_t v,
                 int64_t lo, int64_t hi, const char *text, st_cfg_error *err)
{
    if (v < lo || v > hi) {
        return st_cfg_fail(err, doc, st_cfg_get(cfg, key) ? st_cfg_get(cfg, key) : cfg, key,
                           "must be between %s", text);
    }
    return ST_OK;
}

static int check_cfg(const st_cfg_doc *doc, const st_cfg_node *cfg, const pga_cfg *pc,
                     st_cfg_error *err)
{
    char *msg = NULL;
    PQconninfoOption *opts = NULL;
    char why[ST_LAZY_ERR_MAX];
    int rv;
    if (st_pq_load(why, sizeof(why)) != ST_OK) {
        return st_cfg_fail(err, doc, cfg, "postgres.create_index", "%s", why);
    }
    if ((rv = range(doc, cfg, "connect_timeout", pc->connect_timeout_ms, 1000, 60000, "1s and 60s",
                    err)) != ST_OK ||
        (rv = range(doc, cfg, "lock_timeout", pc->lock_timeout_ms, 1, 3600000, "1ms and 1h",
                    err)) != ST_OK ||
        (rv = range(doc, cfg, "statement_timeout", pc->statement_timeout_ms, 1000,
                    ST_PGA_MAX_TIMEOUT_MS, "1s and 24h", err)) != ST_OK) {
        return rv;
    }
    if (pc->dsn != NULL && strlen(pc->dsn) > ST_PGA_MAX_DSN) {
        return st_cfg_fail(err, doc, st_cfg_get(cfg, "dsn"), "dsn", "longer than %d bytes",
                           ST_PGA_MAX_DSN);
    }
    if (pc->dsn != NULL && (opts = PQconninfoParse(pc->dsn, &msg)) == NULL) {
        rv = st_cfg_fail(err, doc, st_cfg_get(cfg, "dsn"), "dsn", "%.*s",
                         (int)strcspn(msg != NULL ? msg : "out of memory", "\n"),
                         msg != NULL ? msg : "out of memory");
        PQfreemem(msg);
        return rv;
    }
    PQconninfoFree(opts); /* parsed only to report a bad dsn at start */
    return ST_OK;
}

static int pga_init(const st_cfg_doc *doc, const st_cfg_node *cfg, void **ctx, st_cfg_error *err)
{
    pga_ctx *c = calloc(1, sizeof(*c));
    const st_cfg_node *map = st_cfg_node_type(cfg) == ST_CFG_NODE_MAP ? cfg : NULL;
    int rv;
    if (c == NULL) {
        return ST_ENOMEM;
    }
    if ((rv = st_cfg_bind(doc, map, pga_rows, &c->cfg, err)) != ST_OK ||
        (rv = check_cfg(doc, cfg, &c->cfg, err)) != ST_OK) {
        pga_fini(c);
        return rv;
    }
    *ctx = c;
    return ST_OK;
}

/* ---- talking to the server ---- */

static void cancel(session *s)
{
    char why[256];
    PGcancel *pc = PQgetCancel(s->conn);
    if (pc != NULL && PQcancel(pc, why, sizeof(why)) == 0) {
        ST_WARN("actions", "postgres: cancel failed: %s", why);
    }
    PQfreeCancel(pc);
    s->cancelled = true;
}

/* Waits until a result can be read, watching the stop flag and our
 * deadline: on either the statement is cancelled, and a server that does
 * not answer the cancel either is given up (ST_ETIMEOUT). */
static int wait_ready(session *s)
{
    int64_t hard = INT64_MAX;
    while (PQisBusy(s->conn)) {
        struct pollfd p = {.fd = PQsocket(s->conn), .events = POLLIN};
        int64_t now = st_time_mono_ms();
        if (!s->cancelled && (atomic_load(s->stop) || now >= s->deadline)) {
            s->timed_out = !atomic_load(s->stop);
            cancel(s);
            hard = now + ST_PGA_CANCEL_MS;
        }
        if (now >= hard) {
            return ST_ETIMEOUT;
        }
        if (poll(&p, 1, ST_PGA_TICK_MS) < 0 && errno != EINTR) {
            return ST_EIO;
        }
        if (PQconsumeInput(s->conn) == 0) {
            return ST_ENET;
        }
    }
    return ST_OK;
}

/* Sends one query (params NULL: the simple protocol) and reads all its
 * results: *out is the first failed one, else the last. ST_ENET when the
 * connection is lost, ST_ETIMEOUT when the server stopped answering. */
static int call(session *s, const char *sql, const char *param, PGresult **out)
{
    PGresult *keep = NULL;
    PGresult *r;
    int sent = param == NULL ? PQsendQuery(s->conn, sql)
                             : PQsendQueryParams(s->conn, sql, 1, NULL, &param, NULL, NULL, 0);
    int rv = sent ? ST_OK : ST_ENET;
    while (rv == ST_OK && (rv = wait_ready(s)) == ST_OK && (r = PQgetResult(s->conn)) != NULL) {
        st_pq_keep_result(&keep, r);
    }
    if (rv != ST_OK || keep == NULL) {
        PQclear(keep);
        return rv != ST_OK ? rv : ST_ENET;
    }
    *out = keep;
    return ST_OK;
}

static bool failed(const PGresult *r)
{
    return PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK;
}

/* "message (DETAIL: ...) [SQLSTATE]" of a failed result, one line each. */
static void describe(const PGresult *r, char *out, size_t cap)
{
    const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    const char *detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    msg = msg != NULL ? msg : PQresultErrorMessage(r);
    snprintf(out, cap, "%.*s%s%.*s%s [SQLSTATE %s]", (int)strcspn(msg, "\n"), msg,
             detail != NULL ? " (DETAIL: " : "", detail != NULL ? (int)strcspn(detail, "\n") : 0,
             detail != NULL ? detail : "", detail != NULL ? ")" : "",
             state != NULL ? state : "none");
}

static bool sqlstate_is(const PGresult *r, const char *state)
{
    const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    return s != NULL && strcmp(s, state) == 0;
}

/* A command whose failure ends the action (the SETs). */
static bool command(session *s, const char *sql, st_action_out *o)
{
    PGresult *r = NULL;
    char why[ST_ACTION_MAX_ERROR - 64];
    int rv = call(s, sql, NULL, &r);
    if (rv == ST_OK && !failed(r)) {
        PQclear(r);
        return true;
    }
    if (rv == ST_OK) {
        describe(r, why, sizeof(why));
    } else {
        snprintf(why, sizeof(why), "%s", rv == ST_ENET ? PQerrorMessage(s->conn) : st_strerror(rv));
    }
    st_action_fail(o, STRATA__V1__ACTION_STATUS__ACTION_FAILED, "%s: %.*s", sql,
                   (int)strcspn(why, "\n"), why);
    PQclear(r);
    return false;
}

/* The INVALID indexes of the table, one name a line ("" when none); false
 * when the query fails (no such table yet: then there is nothing to
 * compare either). */
static bool invalid_indexes(session *s, const char *table, char *out, size_t cap)
{
    static const char sql[] = "SELECT indexrelid::regclass::text FROM pg_index "
                              "WHERE indrelid = $1::regclass AND NOT indisvalid ORDER BY 1";
    PGresult *r = NULL;
    size_t len = 0;
    bool ok = call(s, sql, table, &r) == ST_OK && !failed(r);
    out[0] = '\0';
    for (int i = 0; ok && i < PQntuples(r); i++) {
        int n = snprintf(out + len, cap - len, "%s\n", PQgetvalue(r, i, 0));
        if (n < 0 || (size_t)n >= cap - len) {
            break; /* the names that fit */
        }
        len += (size_t)n;
    }
    PQclear(r);
    return ok;
}

/* ---- the action ---- */

/* Server notices ("relation ... already exists, skipping") go to the
 * output. */
static void keep_notice(void *arg, const char *msg)
{
    st_action_out *o = arg;
    st_buf_append_str(&o->output, msg);
}

static const char *or_none(const char *s)
{
    return s != NULL ? s : "(none)";
}

static bool open_session(const pga_ctx *c, session *s, st_action_out *o)
{
    s->conn = st_pq_connect(c->cfg.dsn, c->cfg.connect_timeout_ms, "strata-agent-actions");
    if (s->conn == NULL) {
        st_action_fail(o, STRATA__V1__ACTION_STATUS__ACTION_FAILED, "out of memory");
        return false;
    }
    if (PQstatus(s->conn) != CONNECTION_OK) {
        const char *m = PQerrorMessage(s->conn);
        /* never the dsn: it may hold a password */
        st_action_fail(o, STRATA__V1__ACTION_STATUS__ACTION_FAILED,
                       "cannot connect to PostgreSQL at %s port %s: %.*s", or_none(PQhost(s->conn)),
                       or_none(PQport(s->conn)), (int)strcspn(m, "\n"), m);
        return false;
    }
    PQsetNoticeProcessor(s->conn, keep_notice, o);
    return true;
}

/* Names in after that are not in before (lines), into out. */
static void new_names(const char *before, const char *after, char *out, size_t cap)
{
    size_t len = 0;
    out[0] = '\0';
    for (const char *p = after; *p != '\0';) {
        size_t n = strcspn(p, "\n");
        bool seen = false;
        for (const char *q = before; *q != '\0' && !seen;) {
            size_t m = strcspn(q, "\n");
            seen = m == n && memcmp(p, q, n) == 0;
            q += m + (q[m] != '\0');
        }
        if (!seen && len + n + 3 < cap) {
            len += (size_t)snprintf(out + len, cap - len, "%s%.*s", len > 0 ? ", " : "", (int)n, p);
        }
        p += n + (p[n] != '\0');
    }
}

static void report_failure(session *s, const PGresult *r, const st_index_stmt *st,
                           const char *before, st_action_out *o)
{
    char why[1024];
    char after[ST_PGA_MAX_INVALID];
    char left[ST_PGA_MAX_INVALID];
    int status = STRATA__V1__ACTION_STATUS__ACTION_FAILED;
    describe(r, why, sizeof(why));
    if (sqlstate_is(r, "57014") && !atomic_load(s->stop)) {
        status = STRATA__V1__ACTION_STATUS__ACTION_TIMEOUT; /* statement_timeout or ours */
    }
    left[0] = '\0';
    if (before != NULL && PQstatus(s->conn) == CONNECTION_OK) {
        s->deadline = st_time_mono_ms() + ST_PGA_CANCEL_MS;
        s->cancelled = false;
        if (invalid_indexes(s, st->table, after, sizeof(after))) {
            new_names(before, after, left, sizeof(left));
        }
    }
    st_action_fail(
        o, status, "%s%s%s%s%s", atomic_load(s->stop) ? "the agent stopped: " : "", why,
        left[0] != '\0' ? "; the failed CONCURRENTLY build left INVALID index " : "", left,
        left[0] != '\0' ? " (drop it with DROP INDEX CONCURRENTLY before retrying)" : "");
}

static void pga_run(void *ctx, const Strata__V1__Action *a, const atomic_int *stop,
                    st_action_out *o)
{
    static const char *const required[] = {"sql", NULL};
    const pga_ctx *c = ctx;
    session s = {NULL, stop, 0, false, false};
    st_index_stmt st;
    char why[256];
    char sql[64];
    char before[ST_PGA_MAX_INVALID];
    bool have_before;
    PGresult *r = NULL;
    int rv;
    /* Other parameters (table, columns) are there for the record: only the
     * validated sql decides what runs. */
    if (!st_action_check_params(a, required, NULL, false, o)) {
        return;
    }
    if (st_index_sql_check(st_action_param(a, "sql"), &st, why, sizeof(why)) != ST_OK) {
        st_action_fail(o, STRATA__V1__ACTION_STATUS__ACTION_REFUSED,
                       "not a single CREATE INDEX CONCURRENTLY statement: %s", why);
        return;
    }
    if (!open_session(c, &s, o)) {
        goto out;
    }
    s.deadline = st_time_mono_ms() + ST_PGA_CANCEL_MS;
    snprintf(sql, sizeof(sql), "SET lock_timeout = %" PRId64, c->cfg.lock_timeout_ms);
    if (!command(&s, sql, o)) {
        goto out;
    }
    snprintf(sql, sizeof(sql), "SET statement_timeout = %" PRId64, c->cfg.statement_timeout_ms);
    if (!command(&s, sql, o)) {
        goto out;
    }
    have_before = invalid_indexes(&s, st.table, before, sizeof(before));
    s.deadline = st_time_mono_ms() + c->cfg.statement_timeout_ms + ST_PGA_GRACE_MS;
    if ((rv = call(&s, st_action_param(a, "sql"), NULL, &r)) != ST_OK) {
        st_action_fail(o,
                       rv == ST_ETIMEOUT ? STRATA__V1__ACTION_STATUS__ACTION_TIMEOUT
                                         : STRATA__V1__ACTION_STATUS__ACTION_FAILED,
                       "%s", rv == ST_ENET ? PQerrorMessage(s.conn) : "PostgreSQL did not answer");
    } else if (failed(r)) {
        report_failure(&s, r, &st, have_before ? before : NULL, o);
    } else {
        o->status = STRATA__V1__ACTION_STATUS__ACTION_OK;
        st_buf_append_str(&o->output, PQcmdStatus(r));
    }
out:
    PQclear(r);
    PQfinish(s.conn);
}

const st_action_def st_action_postgres_create_index = {"postgres.create_index", pga_init, pga_run,
                                                       pga_fini};
