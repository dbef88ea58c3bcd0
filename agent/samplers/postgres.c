/* postgres: one PostgreSQL server through libpq. Each run reads the top
 * statements of pg_stat_statements, pg_stat_user_tables of the connected
 * database and pg_stat_database, read-only and under a statement timeout. */
#include "samplers.h"

#include "postgres_sql.h"

#include "err.h"
#include "frame.h"
#include "log.h"
#include "timeutil.h"
#include "util.h"
#include "lazylib.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ST_PG_MAX_DSN 4096
#define ST_PG_MAX_STATEMENTS 10000
#define ST_PG_MAX_TABLES 100000
#define ST_PG_MAX_DATABASES 1024
#define ST_PG_MIN_QUERY_LEN 16
#define ST_PG_MAX_QUERY_LEN ST_FRAME_MAX_VALUE /* the query text is a label value */
/* Characters of statement text fetched once per statement: enough to reach
 * the FROM of an ORM's long column list. UTF-8 takes up to 4 bytes each. */
#define ST_PG_TEXT_CHARS 8192
#define ST_PG_TEXT_MAX (4 * ST_PG_TEXT_CHARS)
#define ST_PG_MAX_TIMEOUT_MS 60000
#define ST_PG_GRACE_MS 1000              /* client-side deadline past statement_timeout */
#define ST_PG_RECHECK_MS (5 * 60 * 1000) /* a missing pg_stat_statements is looked for again */
#define ST_PG_CACHE_FACTOR 4             /* statement labels kept per max_statements */
#define ST_PG_MAX_NUM 64                 /* longest number text accepted in a reply */
#define ST_PG_MAX_WHY 256                /* server messages kept for the log */

typedef struct pg_cfg {
    char *dsn;
    int64_t connect_timeout_ms;
    int64_t statement_timeout_ms;
    uint64_t max_statements;
    uint64_t query_max_len;
    uint64_t max_tables;
    char *databases;
    bool create_extension;
} pg_cfg;

/* The labels of one statement, kept across runs so its text is fetched
 * (and parsed) once, not every run. */
typedef struct pg_stmt {
    int64_t queryid;
    uint32_t dbid;
    char queryid_text[24];
    char *query;
    char table[ST_PGSQL_TABLE_MAX]; /* "" when the text names none */
    uint64_t seen;                  /* the run that last reported it */
} pg_stmt;

typedef struct pg_ctx {
    pg_cfg cfg;
    bool all_databases;
    PGconn *conn;
    int version;                           /* PQserverVersion */
    char database[ST_PGSQL_MAX_IDENT + 1]; /* the connected one */
    char why[ST_PG_MAX_WHY];               /* the server's last error */
    bool stmts_missing;
    bool missing_logged;
    int64_t missing_since_ms;
    pg_stmt *stmts; /* sorted by (queryid, dbid) */
    size_t nstmts;
    size_t capstmts;
    char *text; /* ST_PG_TEXT_MAX + 1 bytes for normalizing */
    uint64_t run;
} pg_ctx;

static const st_cfg_map pg_rows[] = {
    {ST_CFG_STR, "dsn", NULL, offsetof(pg_cfg, dsn),
     "libpq conninfo, e.g. \"host=127.0.0.1 port=5432 dbname=app user=strata\"", NULL, 0, 0},
    {ST_CFG_DURATION, "connect_timeout", "2s", offsetof(pg_cfg, connect_timeout_ms),
     "how long a connect may take (whole seconds; libpq waits at least 2s)", NULL, 0, 0},
    {ST_CFG_DURATION, "statement_timeout", "2s", offsetof(pg_cfg, statement_timeout_ms),
     "statement_timeout of the session; a reply later than this + 1s drops the connection", NULL, 0,
     0},
    {ST_CFG_UINT, "max_statements", "200", offsetof(pg_cfg, max_statements),
     "statements reported per run, the top ones by total time", NULL, 1, ST_PG_MAX_STATEMENTS},
    {ST_CFG_UINT, "query_max_len", "512", offsetof(pg_cfg, query_max_len),
     "bytes of statement text in the query label", NULL, ST_PG_MIN_QUERY_LEN, ST_PG_MAX_QUERY_LEN},
    {ST_CFG_UINT, "max_tables", "1000", offsetof(pg_cfg, max_tables),
     "tables reported per run, in name order", NULL, 1, ST_PG_MAX_TABLES},
    {ST_CFG_STR, "databases", "current", offsetof(pg_cfg, databases),
     "current (the dsn's database) or all: whose statements and pg_stat_database rows", NULL, 0, 0},
    {ST_CFG_BOOL, "create_extension", "false", offsetof(pg_cfg, create_extension),
     "run CREATE EXTENSION IF NOT EXISTS pg_stat_statements on connect", NULL, 0, 0},
    {ST_CFG_IGNORE, "interval", NULL, 0, "run every (default: the agent's interval)", NULL, 0, 0},
    {0},
};

/* Top statements by total time; texts are fetched separately, only for
 * statements not seen before (showtext := false spares the server reading
 * its text file every run). One row per (queryid, database): users and
 * nesting levels are summed, so a series has one total. */
static const char STMTS_SQL[] =
    "SELECT s.queryid, s.dbid, d.datname, sum(s.calls), sum(s.total_exec_time), sum(s.rows),"
    " sum(s.shared_blks_hit), sum(s.shared_blks_read)"
    " FROM pg_stat_statements(false) s JOIN pg_database d ON d.oid = s.dbid"
    " WHERE s.queryid IS NOT NULL AND ($2::bool OR d.datname = current_database())"
    " GROUP BY s.queryid, s.dbid, d.datname ORDER BY 5 DESC LIMIT $1";

/* Before PostgreSQL 13 the column was total_time. */
static const char STMTS_SQL_12[] =
    "SELECT s.queryid, s.dbid, d.datname, sum(s.calls), sum(s.total_time), sum(s.rows),"
    " sum(s.shared_blks_hit), sum(s.shared_blks_read)"
    " FROM pg_stat_statements(false) s JOIN pg_database d ON d.oid = s.dbid"
    " WHERE s.queryid IS NOT NULL AND ($2::bool OR d.datname = current_database())"
    " GROUP BY s.queryid, s.dbid, d.datname ORDER BY 5 DESC LIMIT $1";

static const char TEXTS_SQL[] =
    "SELECT DISTINCT ON (s.queryid, s.dbid) s.queryid, s.dbid, left(s.query, $3::int)"
    " FROM pg_stat_statements(true) s"
    " JOIN unnest($1::bigint[], $2::oid[]) AS k(q, d) ON s.queryid = k.q AND s.dbid = k.d";

/* PostgreSQL 16 tells when a table was last read; 15 does not, and then
 * only the scan counters show (by not moving) that a table is idle. */
static const char TABLES_SQL[] =
    "SELECT schemaname, relname, seq_scan, seq_tup_read, idx_scan, idx_tup_fetch, n_live_tup,"
    " NULL::float8 FROM pg_stat_user_tables ORDER BY schemaname, relname LIMIT $1";

static const char TABLES_SQL_16[] =
    "SELECT schemaname, relname, seq_scan, seq_tup_read, idx_scan, idx_tup_fetch, n_live_tup,"
    " extract(epoch FROM greatest(last_seq_scan, last_idx_scan))::float8"
    " FROM pg_stat_user_tables ORDER BY schemaname, relname LIMIT $1";

static const char DATABASES_SQL[] =
    "SELECT datname, numbackends, xact_commit, xact_rollback, blks_read, blks_hit, deadlocks"
    " FROM pg_stat_database"
    " WHERE datname IS NOT NULL AND ($1::bool OR datname = current_database())"
    " ORDER BY datname LIMIT $2";

enum col_kind { COL_TOTAL, COL_GAUGE };

/* How one reply column becomes a series. */
typedef struct pg_col {
    const char *series;
    enum col_kind kind;
    const char *unit;
    int scale;
    double mult;
} pg_col;

static const pg_col stmt_cols[] = {
    {"db.statement.calls", COL_TOTAL, "", 0, 1},
    {"db.statement.time", COL_TOTAL, "s", 6, 1e-3}, /* the server counts milliseconds */
    {"db.statement.rows", COL_TOTAL, "", 0, 1},
    {"db.statement.shared_blks_hit", COL_TOTAL, "", 0, 1},
    {"db.statement.shared_blks_read", COL_TOTAL, "", 0, 1},
};

static const pg_col table_cols[] = {
    {"db.table.seq_scan", COL_TOTAL, "", 0, 1}, {"db.table.seq_tup_read", COL_TOTAL, "", 0, 1},
    {"db.table.idx_scan", COL_TOTAL, "", 0, 1}, {"db.table.idx_tup_fetch", COL_TOTAL, "", 0, 1},
    {"db.table.live_tup", COL_GAUGE, "", 0, 1}, {"db.table.last_read_unix", COL_GAUGE, "s", 0, 1},
};

static const pg_col database_cols[] = {
    {"db.connections", COL_GAUGE, "", 0, 1},    {"db.xact.commit", COL_TOTAL, "", 0, 1},
    {"db.xact.rollback", COL_TOTAL, "", 0, 1},  {"db.cache.blks_read", COL_TOTAL, "", 0, 1},
    {"db.cache.blks_hit", COL_TOTAL, "", 0, 1}, {"db.deadlocks", COL_TOTAL, "", 0, 1},
};

/* ---- connection ---- */

static void close_conn(pg_ctx *c)
{
    if (c->conn != NULL) { /* NULL too when libpq never loaded */
        PQfinish(c->conn);
    }
    c->conn = NULL;
}

/* Keeps the first line of a libpq message for the log. */
static void keep_why(pg_ctx *c, const char *msg)
{
    size_t n = msg != NULL ? strcspn(msg, "\n") : 0;
    n = ST_MIN(n, sizeof(c->why) - 1);
    if (n > 0) {
        memcpy(c->why, msg, n);
    }
    c->why[n] = '\0';
}

/* Maps a failed result to an st_err; the caller logs c->why. */
static int map_error(pg_ctx *c, const PGresult *r)
{
    const char *state = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    keep_why(c, r != NULL ? PQresultErrorMessage(r) : PQerrorMessage(c->conn));
    if (PQstatus(c->conn) != CONNECTION_OK || state == NULL || strncmp(state, "08", 2) == 0) {
        return ST_ENET;
    }
    if (strcmp(state, "57014") == 0) {
        return ST_ETIMEOUT; /* statement_timeout */
    }
    /* undefined_function, undefined_table, object_not_in_prerequisite_state:
     * what a missing or not preloaded extension answers */
    if (strcmp(state, "42883") == 0 || strcmp(state, "42P01") == 0 || strcmp(state, "55000") == 0) {
        return ST_EUNSUPPORTED;
    }
    return strcmp(state, "42501") == 0 ? ST_EPERM : ST_EIO;
}

/* Waits until a result can be read without blocking. */
static int wait_result(pg_ctx *c, int64_t deadline_ms)
{
    while (PQisBusy(c->conn)) {
        struct pollfd p = {.fd = PQsocket(c->conn), .events = POLLIN};
        int64_t left = deadline_ms - st_time_mono_ms();
        int n;
        if (left <= 0) {
            return ST_ETIMEOUT;
        }
        n = poll(&p, 1, (int)left);
        if (n < 0 && errno != EINTR) {
            return ST_EIO;
        }
        if (n > 0 && PQconsumeInput(c->conn) == 0) {
            return ST_ENET;
        }
    }
    return ST_OK;
}

/* Reads every result of the statement sent; keeps the first failure or
 * else the last result. */
static int collect(pg_ctx *c, int64_t deadline_ms, PGresult **out)
{
    PGresult *keep = NULL;
    PGresult *r;
    int rv;
    while ((rv = wait_result(c, deadline_ms)) == ST_OK && (r = PQgetResult(c->conn)) != NULL) {
        st_pq_keep_result(&keep, r);
    }
    if (rv != ST_OK) {
        PQclear(keep);
        return rv;
    }
    *out = keep;
    return ST_OK;
}

/* Runs one statement (several when nparams < 0: the simple protocol) with
 * a client-side deadline, so a server that stops answering cannot hold the
 * agent. *out receives the rows (free with PQclear). On ST_ENET and
 * ST_ETIMEOUT the connection is closed (a statement may still be running);
 * the server's message is in c->why and logged (ST_EUNSUPPORTED, which
 * callers expect, only at debug level). */
static int pg_exec(pg_ctx *c, const char *sql, int nparams, const char *const *params,
                   PGresult **out)
{
    int64_t deadline = st_time_mono_ms() + c->cfg.statement_timeout_ms + ST_PG_GRACE_MS;
    PGresult *r = NULL;
    int sent;
    int rv;
    if (c->conn == NULL) {
        return ST_ENET;
    }
    sent = nparams < 0 ? PQsendQuery(c->conn, sql)
                       : PQsendQueryParams(c->conn, sql, nparams, NULL, params, NULL, NULL, 0);
    rv = sent == 0 ? ST_ENET : collect(c, deadline, &r);
    if (rv == ST_OK && r != NULL && PQresultStatus(r) != PGRES_TUPLES_OK &&
        PQresultStatus(r) != PGRES_COMMAND_OK) {
        rv = map_error(c, r);
    } else if (rv != ST_OK || r == NULL) {
        keep_why(c, rv == ST_ETIMEOUT ? "no reply in time" : PQerrorMessage(c->conn));
        rv = rv != ST_OK ? rv : ST_EIO;
    }
    if (rv != ST_OK) {
        PQclear(r);
        /* The caller of an expected ST_EUNSUPPORTED says what it means. */
        st_log(rv == ST_EUNSUPPORTED ? ST_LOG_DEBUG : ST_LOG_WARN, "postgres", "%s: %s",
               st_strerror(rv), c->why);
        if (rv == ST_ENET || rv == ST_ETIMEOUT) {
            close_conn(c);
        }
        return rv;
    }
    *out = r;
    return ST_OK;
}

static int exec_command(pg_ctx *c, const char *sql)
{
    PGresult *r = NULL;
    int rv = pg_exec(c, sql, -1, NULL, &r);
    PQclear(r);
    return rv;
}

/* Read-only session with a statement timeout; the extension first, when
 * asked, because read-only would refuse it. */
static int setup_session(pg_ctx *c)
{
    char sql[160];
    int rv;
    if (c->cfg.create_extension &&
        (rv = exec_command(c, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")) != ST_OK) {
        if (c->conn == NULL) {
            return rv;
        }
        ST_WARN("postgres", "CREATE EXTENSION pg_stat_statements failed: %s", c->why);
    }
    snprintf(sql, sizeof(sql),
             "SET statement_timeout = %" PRId64 "; SET default_transaction_read_only = on",
             c->cfg.statement_timeout_ms);
    return exec_command(c, sql);
}

static const char *or_none(const char *s)
{
    return s != NULL ? s : "(none)";
}

static int connect_server(pg_ctx *c)
{
    const char *db;
    int rv;
    /* UTF-8 whatever the dsn says: labels must be valid UTF-8 */
    if ((c->conn = st_pq_connect(c->cfg.dsn, c->cfg.connect_timeout_ms, "strata-agent")) == NULL) {
        return ST_ENOMEM;
    }
    if (PQstatus(c->conn) != CONNECTION_OK) {
        keep_why(c, PQerrorMessage(c->conn));
        ST_WARN("postgres", "cannot connect to %s port %s: %s", or_none(PQhost(c->conn)),
                or_none(PQport(c->conn)), c->why); /* never the dsn: it may hold a password */
        close_conn(c);
        return ST_ENET;
    }
    db = PQdb(c->conn);
    if (db == NULL || strlen(db) > ST_PGSQL_MAX_IDENT || !st_utf8_valid(db, strlen(db))) {
        ST_WARN("postgres", "the database name is not a label value (%d bytes at most, UTF-8)",
                ST_PGSQL_MAX_IDENT);
        close_conn(c);
        return ST_EINVAL;
    }
    memcpy(c->database, db, strlen(db) + 1);
    c->version = PQserverVersion(c->conn);
    if ((rv = setup_session(c)) != ST_OK) {
        close_conn(c);
        return rv;
    }
    c->stmts_missing = false; /* a new connection looks again */
    ST_INFO("postgres", "connected to %s port %s, database %s, server %d", or_none(PQhost(c->conn)),
            or_none(PQport(c->conn)), c->database, c->version);
    return ST_OK;
}

/* ---- reply values ---- */

/* A text value of at most max bytes of valid UTF-8 (a label), or NULL. */
static const char *get_text(const PGresult *r, int row, int col, size_t max)
{
    const char *v = PQgetvalue(r, row, col);
    size_t n = (size_t)PQgetlength(r, row, col);
    if (PQgetisnull(r, row, col) || n > max || !st_utf8_valid(v, n)) {
        return NULL;
    }
    return v;
}

/* A finite number; ST_ENOENT for NULL. */
static int get_num(const PGresult *r, int row, int col, double *out)
{
    if (PQgetisnull(r, row, col)) {
        return ST_ENOENT;
    }
    if (PQgetlength(r, row, col) > ST_PG_MAX_NUM) {
        return ST_EPARSE;
    }
    return st_parse_double(PQgetvalue(r, row, col), out) == ST_OK ? ST_OK : ST_EPARSE;
}

/* Emits the columns first.. of a row as described by cols; NULL columns
 * (idx_scan of a table without indexes) emit nothing. */
static int emit_cols(st_emit *e, const PGresult *r, int row, int first, const pg_col *cols,
                     size_t ncols, const st_label *lab, size_t nlab)
{
    int rv = ST_OK;
    for (size_t i = 0; i < ncols; i++) {
        st_series_desc d = {cols[i].series,    lab,          nlab,
                            ST_LAYER_DATABASE, cols[i].unit, cols[i].scale};
        double v;
        int r1 = get_num(r, row, first + (int)i, &v);
        if (r1 == ST_OK) {
            v *= cols[i].mult;
            r1 = cols[i].kind == COL_TOTAL ? st_emit_counter_total(e, &d, v)
                                           : st_emit_gauge(e, &d, v);
        }
        if (r1 != ST_OK && r1 != ST_ENOENT && rv == ST_OK) {
            rv = r1;
        }
    }
    return rv;
}

/* Checks the shape of a reply: the columns expected and at most max rows. */
static int reply_rows(const PGresult *r, int ncols, uint64_t max, int *nrows)
{
    int n = PQntuples(r);
    if (PQnfields(r) != ncols || n < 0 || (uint64_t)n > max) {
        ST_WARN("postgres", "unexpected reply: %d columns, %d rows", PQnfields(r), n);
        return ST_EPARSE;
    }
    *nrows = n;
    return ST_OK;
}

/* ---- pg_stat_database ---- */

static int sample_databases(pg_ctx *c, st_emit *e)
{
    char limit[24];
    const char *params[] = {c->all_databases ? "true" : "false", limit};
    PGresult *r = NULL;
    int rv;
    int n;
    snprintf(limit, sizeof(limit), "%d", ST_PG_MAX_DATABASES);
    if ((rv = pg_exec(c, DATABASES_SQL, 2, params, &r)) != ST_OK ||
        (rv = reply_rows(r, 7, ST_PG_MAX_DATABASES, &n)) != ST_OK) {
        goto out;
    }
    for (int i = 0; i < n; i++) {
        st_label lab[1] = {{"database", get_text(r, i, 0, ST_PGSQL_MAX_IDENT)}};
        int r1;
        if (lab[0].value == NULL) {
            continue;
        }
        r1 = emit_cols(e, r, i, 1, database_cols, ST_ARRAY_LEN(database_cols), lab, 1);
        rv = rv != ST_OK ? rv : r1;
    }
out:
    PQclear(r);
    return rv;
}

/* ---- pg_stat_user_tables ---- */

/* "relname" in the public schema, "schema.relname" elsewhere: the form
 * st_pgsql_main_table gives statements, so the two join. */
static bool table_label(const PGresult *r, int row, char *out, size_t cap)
{
    const char *schema = get_text(r, row, 0, ST_PGSQL_MAX_IDENT);
    const char *rel = get_text(r, row, 1, ST_PGSQL_MAX_IDENT);
    int n;
    if (schema == NULL || rel == NULL) {
        return false;
    }
    n = strcmp(schema, "public") == 0 ? snprintf(out, cap, "%s", rel)
                                      : snprintf(out, cap, "%s.%s", schema, rel);
    return n > 0 && (size_t)n < cap;
}

static int sample_tables(pg_ctx *c, st_emit *e)
{
    char limit[24];
    const char *params[] = {limit};
    PGresult *r = NULL;
    int rv;
    int n;
    snprintf(limit, sizeof(limit), "%" PRIu64, c->cfg.max_tables);
    if ((rv = pg_exec(c, c->version >= 160000 ? TABLES_SQL_16 : TABLES_SQL, 1, params, &r)) !=
            ST_OK ||
        (rv = reply_rows(r, 8, c->cfg.max_tables, &n)) != ST_OK) {
        goto out;
    }
    for (int i = 0; i < n; i++) {
        char table[ST_PGSQL_TABLE_MAX];
        st_label lab[2] = {{"table", table}, {"database", c->database}};
        int r1;
        if (!table_label(r, i, table, sizeof(table))) {
            continue;
        }
        r1 = emit_cols(e, r, i, 2, table_cols, ST_ARRAY_LEN(table_cols), lab, 2);
        rv = rv != ST_OK ? rv : r1;
    }
out:
    PQclear(r);
    return rv;
}

/* ---- statement labels ---- */

static int stmt_cmp(const void *a, const void *b)
{
    const pg_stmt *x = a;
    const pg_stmt *y = b;
    if (x->queryid != y->queryid) {
        return x->queryid < y->queryid ? -1 : 1;
    }
    return x->dbid < y->dbid ? -1 : x->dbid > y->dbid ? 1 : 0;
}

static int stmt_recent_first(const void *a, const void *b)
{
    const pg_stmt *x = a;
    const pg_stmt *y = b;
    return x->seen > y->seen ? -1 : x->seen < y->seen ? 1 : 0;
}

static pg_stmt *stmt_find(pg_ctx *c, int64_t queryid, uint32_t dbid)
{
    pg_stmt key = {.queryid = queryid, .dbid = dbid};
    if (c->nstmts == 0) {
        return NULL;
    }
    return bsearch(&key, c->stmts, c->nstmts, sizeof(*c->stmts), stmt_cmp);
}

/* The (queryid, dbid) of a reply row; false when malformed. */
static bool row_key(const PGresult *r, int row, int64_t *queryid, uint32_t *dbid)
{
    const char *q = get_text(r, row, 0, 20);
    const char *d = get_text(r, row, 1, 10);
    uint64_t oid;
    if (q == NULL || d == NULL || st_parse_i64(q, queryid) != ST_OK ||
        st_parse_u64(d, &oid) != ST_OK || oid > UINT32_MAX) {
        return false;
    }
    *dbid = (uint32_t)oid;
    return true;
}

/* Adds the labels of one statement from its text (unsorted: the caller
 * sorts once after adding). */
static int stmt_add(pg_ctx *c, int64_t queryid, uint32_t dbid, const char *text, size_t len)
{
    pg_stmt *s;
    if (c->nstmts == c->capstmts) {
        size_t cap = c->capstmts == 0 ? 64 : c->capstmts * 2;
        pg_stmt *v = realloc(c->stmts, cap * sizeof(*v));
        if (v == NULL) {
            return ST_ENOMEM;
        }
        c->stmts = v;
        c->capstmts = cap;
    }
    s = &c->stmts[c->nstmts];
    memset(s, 0, sizeof(*s));
    if ((s->query = malloc(c->cfg.query_max_len + 1)) == NULL) {
        return ST_ENOMEM;
    }
    s->queryid = queryid;
    s->dbid = dbid;
    s->seen = c->run;
    snprintf(s->queryid_text, sizeof(s->queryid_text), "%" PRId64, queryid);
    /* The table comes from all the text fetched, the label from its head. */
    st_pgsql_normalize(text, len, c->text, ST_PG_TEXT_MAX + 1);
    if (st_pgsql_main_table(c->text, s->table, sizeof(s->table)) != ST_OK) {
        s->table[0] = '\0';
    }
    st_pgsql_normalize(text, len, s->query, c->cfg.query_max_len + 1);
    c->nstmts++;
    return ST_OK;
}

/* Builds the arrays "{1,2}" of the keys of rows not in the cache. */
static size_t missing_keys(pg_ctx *c, const PGresult *r, int n, char *qids, char *dbids, size_t cap)
{
    size_t nq = 1;
    size_t nd = 1;
    size_t count = 0;
    qids[0] = '{';
    dbids[0] = '{';
    for (int i = 0; i < n; i++) {
        int64_t q;
        uint32_t d;
        if (!row_key(r, i, &q, &d) || stmt_find(c, q, d) != NULL) {
            continue;
        }
        /* cap holds 24 bytes per row, so these never truncate */
        nq += (size_t)snprintf(qids + nq, cap - nq, "%s%" PRId64, count > 0 ? "," : "", q);
        nd += (size_t)snprintf(dbids + nd, cap - nd, "%s%" PRIu32, count > 0 ? "," : "", d);
        count++;
    }
    snprintf(qids + nq, cap - nq, "}");
    snprintf(dbids + nd, cap - nd, "}");
    return count;
}

/* Adds every text of the reply; a NULL text (its file was rewritten) is
 * skipped and asked for again next run. */
static int add_texts(pg_ctx *c, const PGresult *r)
{
    int n;
    int rv = reply_rows(r, 3, c->cfg.max_statements, &n);
    for (int i = 0; rv == ST_OK && i < n; i++) {
        int64_t q;
        uint32_t d;
        size_t len = (size_t)PQgetlength(r, i, 2);
        if (!row_key(r, i, &q, &d) || PQgetisnull(r, i, 2) || stmt_find(c, q, d) != NULL) {
            continue;
        }
        if (len > ST_PG_TEXT_MAX) {
            len = ST_PG_TEXT_MAX; /* the normalizer repairs a cut character */
        }
        rv = stmt_add(c, q, d, PQgetvalue(r, i, 2), len);
    }
    qsort(c->stmts, c->nstmts, sizeof(*c->stmts), stmt_cmp);
    return rv;
}

/* Fetches the texts of the statements of reply r that have no labels yet. */
static int fetch_texts(pg_ctx *c, const PGresult *r, int n)
{
    size_t cap = (size_t)n * 24 + 4;
    char *qids = malloc(cap);
    char *dbids = malloc(cap);
    char chars[24];
    const char *params[] = {qids, dbids, chars};
    PGresult *t = NULL;
    int rv = ST_ENOMEM;
    if (qids == NULL || dbids == NULL) {
        goto out;
    }
    rv = ST_OK;
    snprintf(chars, sizeof(chars), "%d", ST_PG_TEXT_CHARS);
    if (missing_keys(c, r, n, qids, dbids, cap) == 0) {
        goto out;
    }
    if ((rv = pg_exec(c, TEXTS_SQL, 3, params, &t)) != ST_OK) {
        goto out;
    }
    rv = add_texts(c, t);
out:
    PQclear(t);
    free(dbids);
    free(qids);
    return rv;
}

/* Keeps the labels of the statements seen most recently when the cache
 * holds more than ST_PG_CACHE_FACTOR runs' worth. */
static void stmt_evict(pg_ctx *c)
{
    size_t keep = (size_t)c->cfg.max_statements * 2;
    if (c->nstmts <= (size_t)c->cfg.max_statements * ST_PG_CACHE_FACTOR) {
        return;
    }
    qsort(c->stmts, c->nstmts, sizeof(*c->stmts), stmt_recent_first);
    for (size_t i = keep; i < c->nstmts; i++) {
        free(c->stmts[i].query);
    }
    c->nstmts = keep;
    qsort(c->stmts, c->nstmts, sizeof(*c->stmts), stmt_cmp);
}

/* ---- pg_stat_statements ---- */

static int emit_statement(st_emit *e, const PGresult *r, int row, const pg_stmt *s)
{
    const char *db = get_text(r, row, 2, ST_PGSQL_MAX_IDENT);
    st_label lab[4] = {
        {"queryid", s->queryid_text}, {"query", s->query}, {"database", db}, {"table", s->table}};
    size_t nlab = s->table[0] != '\0' ? 4 : 3;
    st_series_desc mean = {"db.statement.mean_time", lab, nlab, ST_LAYER_DATABASE, "s", 6};
    double calls;
    double ms;
    int rv;
    if (db == NULL) {
        return ST_OK;
    }
    rv = emit_cols(e, r, row, 3, stmt_cols, ST_ARRAY_LEN(stmt_cols), lab, nlab);
    /* The mean since the statistics were reset, as the server has it. */
    if (rv == ST_OK && get_num(r, row, 3, &calls) == ST_OK && calls > 0 &&
        get_num(r, row, 4, &ms) == ST_OK) {
        rv = st_emit_gauge(e, &mean, ms / 1000 / calls);
    }
    return rv;
}

/* Logs once that statement statistics are skipped; looked for again after
 * ST_PG_RECHECK_MS and on every new connection. */
static void statements_missing(pg_ctx *c)
{
    c->stmts_missing = true;
    c->missing_since_ms = st_time_mono_ms();
    if (!c->missing_logged) {
        c->missing_logged = true;
        ST_WARN("postgres",
                "pg_stat_statements is not available (CREATE EXTENSION pg_stat_statements; needs "
                "shared_preload_libraries): statement statistics are skipped (server: %s)",
                c->why);
    }
}

static int sample_statements(pg_ctx *c, st_emit *e)
{
    char limit[24];
    const char *params[] = {limit, c->all_databases ? "true" : "false"};
    PGresult *r = NULL;
    int rv;
    int n;
    if (c->stmts_missing && st_time_mono_ms() - c->missing_since_ms < ST_PG_RECHECK_MS) {
        return ST_OK;
    }
    snprintf(limit, sizeof(limit), "%" PRIu64, c->cfg.max_statements);
    rv = pg_exec(c, c->version >= 130000 ? STMTS_SQL : STMTS_SQL_12, 2, params, &r);
    if (rv == ST_OK && c->missing_logged) {
        ST_INFO("postgres", "pg_stat_statements is available: statement statistics resume");
        c->missing_logged = false;
    }
    if (rv == ST_OK) {
        c->stmts_missing = false;
    }
    if (rv != ST_OK || (rv = reply_rows(r, 8, c->cfg.max_statements, &n)) != ST_OK ||
        (rv = fetch_texts(c, r, n)) != ST_OK) {
        goto out;
    }
    for (int i = 0; i < n; i++) {
        int64_t q;
        uint32_t d;
        pg_stmt *s = row_key(r, i, &q, &d) ? stmt_find(c, q, d) : NULL;
        int r1 = s != NULL ? emit_statement(e, r, i, s) : ST_OK;
        if (s != NULL) {
            s->seen = c->run;
        }
        rv = rv != ST_OK ? rv : r1;
    }
    stmt_evict(c);
out:
    PQclear(r);
    if (rv == ST_EUNSUPPORTED) {
        statements_missing(c);
        rv = ST_OK; /* the rest of the server is still worth sampling */
    }
    return rv;
}

/* ---- sampler ---- */

int st_postgres_sample(void *ctx, st_emit *e)
{
    pg_ctx *c = ctx;
    int rv;
    int r;
    c->run++;
    if (c->conn == NULL && (rv = connect_server(c)) != ST_OK) {
        return rv; /* the scheduler backs off; the next run connects again */
    }
    rv = sample_databases(c, e);
    if (rv != ST_ENET && rv != ST_ETIMEOUT) {
        r = sample_tables(c, e);
        rv = rv != ST_OK ? rv : r;
    }
    if (rv != ST_ENET && rv != ST_ETIMEOUT) {
        r = sample_statements(c, e);
        rv = rv != ST_OK ? rv : r;
    }
    return rv;
}

void st_postgres_fini(void *ctx)
{
    pg_ctx *c = ctx;
    if (c == NULL) {
        return;
    }
    close_conn(c);
    for (size_t i = 0; i < c->nstmts; i++) {
        free(c->stmts[i].query);
    }
    free(c->stmts);
    free(c->text);
    st_cfg_release(pg_rows, &c->cfg);
    free(c);
}

/* Checks what binding cannot: ranges of durations, the dsn's syntax and
 * the databases choice. */
static int check_cfg(const st_cfg_doc *doc, const st_cfg_node *cfg, pg_ctx *c, st_cfg_error *err)
{
    const pg_cfg *pc = &c->cfg;
    char *msg = NULL;
    PQconninfoOption *opts = NULL;
    char why[ST_LAZY_ERR_MAX];
    if (st_pq_load(why, sizeof(why)) != ST_OK) {
        return st_cfg_fail(err, doc, cfg, "postgres", "%s", why);
    }
    if (pc->connect_timeout_ms < 1000 || pc->connect_timeout_ms > ST_PG_MAX_TIMEOUT_MS) {
        return st_cfg_fail(err, doc, st_cfg_get(cfg, "connect_timeout"), "connect_timeout",
                           "must be between 1s and %ds", ST_PG_MAX_TIMEOUT_MS / 1000);
    }
    if (pc->statement_timeout_ms < 10 || pc->statement_timeout_ms > ST_PG_MAX_TIMEOUT_MS) {
        return st_cfg_fail(err, doc, st_cfg_get(cfg, "statement_timeout"), "statement_timeout",
                           "must be between 10ms and %ds", ST_PG_MAX_TIMEOUT_MS / 1000);
    }
    if (pc->databases == NULL ||
        (strcmp(pc->databases, "current") != 0 && strcmp(pc->databases, "all") != 0)) {
        return st_cfg_fail(err, doc, st_cfg_get(cfg, "databases"), "databases",
                           "want current or all");
    }
    if (pc->dsn != NULL && strlen(pc->dsn) > ST_PG_MAX_DSN) {
        return st_cfg_fail(err, doc, st_cfg_get(cfg, "dsn"), "dsn", "longer than %d bytes",
                           ST_PG_MAX_DSN);
    }
    if (pc->dsn != NULL && (opts = PQconninfoParse(pc->dsn, &msg)) == NULL) {
        keep_why(c, msg != NULL ? msg : "out of memory");
        PQfreemem(msg);
        return st_cfg_fail(err, doc, st_cfg_get(cfg, "dsn"), "dsn", "%s", c->why);
    }
    PQconninfoFree(opts); /* parsed only to report a bad dsn at start */
    c->all_databases = strcmp(pc->databases, "all") == 0;
    return ST_OK;
}

int st_postgres_init(const st_cfg_doc *doc, const st_cfg_node *cfg, const st_sampler_env *env,
                     void **ctx, st_cfg_error *err)
{
    pg_ctx *c = calloc(1, sizeof(*c));
    int rv;
    (void)env;
    if (c == NULL) {
        return ST_ENOMEM;
    }
    if ((rv = st_cfg_bind(doc, cfg, pg_rows, &c->cfg, err)) != ST_OK ||
        (rv = check_cfg(doc, cfg, c, err)) != ST_OK) {
        goto out;
    }
    if ((c->text = malloc(ST_PG_TEXT_MAX + 1)) == NULL) {
        rv = ST_ENOMEM;
        goto out;
    }
    /* No connection yet: a server that is down at start is a sampling
     * error to back off from, not a configuration error. */
    *ctx = c;
    c = NULL;
out:
    st_postgres_fini(c);
    return rv;
}

const st_sampler_def st_sampler_postgres = ST_SAMPLER_ROW(postgres);
