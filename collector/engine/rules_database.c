/* Database rules: slow statements on sequentially scanned tables
 * (ADD_INDEX), slow statements reading far more rows than they return
 * (OPTIMIZE_QUERY), wide joins on hot paths (DENORMALIZE) and tables
 * nobody reads (ARCHIVE), from pg_stat_statements and pg_stat_user_tables. */
#include "rules_checks.h"

#include "err.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define STMT_BY "queryid,query,table,database,host"
#define STMT_ENTITY "queryid,table,database,host"
#define TABLE_BY "table,database,host"
#define TABLE_ENTITY "table,database,host"
/* "Read by sequential scans": at least this share of the table's scans. */
#define ST_SEQ_SHARE_MIN 0.5
/* "Many rows read per row returned". */
#define ST_READS_PER_ROW_MAX 100.0
/* "A hot path": calls per second of the statement. */
#define ST_HOT_CALLS_PER_S 0.1
#define DAY_MS (86400LL * 1000)
#define MAX_COLD_DAYS 397 /* the range (up to 2 days more) stays under 400 days */
#define SQL_MAX 2048

/* The window's statement and table counters, summed per group. */
typedef struct dbq {
    st_answer *calls;
    st_answer *time;
    st_answer *rows;
    st_answer *seq;
    st_answer *seq_tup;
    st_answer *idx;
    st_answer *idx_tup;
    int64_t window;
    double secs;
} dbq;

/* One statement of the window with its table's counters. */
typedef struct stmt {
    const st_ans_row *item;
    const char *query;
    const char *table;
    double calls;
    double time;
    double rows;
    double mean;
    double seq;
    double seq_tup;
    double idx;
    double idx_tup;
    double seq_share;
} stmt;

static void dbq_free(dbq *q)
{
    st_answer_unref(q->calls);
    st_answer_unref(q->time);
    st_answer_unref(q->rows);
    st_answer_unref(q->seq);
    st_answer_unref(q->seq_tup);
    st_answer_unref(q->idx);
    st_answer_unref(q->idx_tup);
    memset(q, 0, sizeof(*q));
}

static int dbq_load(st_eng *e, dbq *q)
{
    int64_t w = st_eng_window(e);
    int rv;
    memset(q, 0, sizeof(*q));
    q->window = w;
    q->secs = (double)w / 1000.0;
    if ((rv = st_rules_query(e, "db.statement.calls", "sum", STMT_BY, NULL, 0, w, 0, &q->calls)) ||
        (rv = st_rules_query(e, "db.statement.time", "sum", STMT_BY, NULL, 0, w, 0, &q->time)) ||
        (rv = st_rules_query(e, "db.statement.rows", "sum", STMT_BY, NULL, 0, w, 0, &q->rows)) ||
        (rv = st_rules_query(e, "db.table.seq_scan", "sum", TABLE_BY, NULL, 0, w, 0, &q->seq)) ||
        (rv = st_rules_query(e, "db.table.seq_tup_read", "sum", TABLE_BY, NULL, 0, w, 0,
                             &q->seq_tup)) ||
        (rv = st_rules_query(e, "db.table.idx_scan", "sum", TABLE_BY, NULL, 0, w, 0, &q->idx)) ||
        (rv = st_rules_query(e, "db.table.idx_tup_fetch", "sum", TABLE_BY, NULL, 0, w, 0,
                             &q->idx_tup))) {
        dbq_free(q);
        return rv;
    }
    return ST_OK;
}

static double zero_nan(double v)
{
    return isfinite(v) ? v : 0;
}

static void stmt_fill(const dbq *q, const st_ans_row *item, stmt *s)
{
    memset(s, 0, sizeof(*s));
    s->item = item;
    s->query = st_ans_label(item, "query");
    s->table = st_ans_label(item, "table");
    s->calls = zero_nan(st_ans_value(item));
    s->time = zero_nan(st_rules_lookup(q->time, item, STMT_BY));
    s->rows = zero_nan(st_rules_lookup(q->rows, item, STMT_BY));
    s->mean = s->calls > 0 ? s->time / s->calls : NAN;
    s->seq = zero_nan(st_rules_lookup(q->seq, item, TABLE_BY));
    s->seq_tup = zero_nan(st_rules_lookup(q->seq_tup, item, TABLE_BY));
    s->idx = zero_nan(st_rules_lookup(q->idx, item, TABLE_BY));
    s->idx_tup = zero_nan(st_rules_lookup(q->idx_tup, item, TABLE_BY));
    s->seq_share = s->seq + s->idx > 0 ? s->seq / (s->seq + s->idx) : 0;
}

/* ADD_INDEX applies: the table is mostly scanned sequentially and the
 * statement filters on columns an index can serve. */
static bool index_applies(const stmt *s, st_sql_columns *cols)
{
    st_sql_index_columns(s->query, s->table, cols);
    return s->seq > 0 && s->seq_share >= ST_SEQ_SHARE_MIN && cols->n > 0;
}

static json_t *stmt_values(const dbq *q, const stmt *s)
{
    json_t *v = json_object();
    json_object_set_new(v, "statement", json_string(s->query));
    json_object_set_new(v, "queryid", json_string(st_ans_label(s->item, "queryid")));
    st_rules_set_num(v, "mean_time_s", s->mean);
    st_rules_set_num(v, "calls", s->calls);
    st_rules_set_num(v, "calls_per_s", s->calls / q->secs);
    st_rules_set_num(v, "rows", s->rows);
    st_rules_set_num(v, "seq_scan_per_s", s->seq / q->secs);
    st_rules_set_num(v, "seq_tup_read_per_s", s->seq_tup / q->secs);
    st_rules_set_num(v, "idx_scan_per_s", s->idx / q->secs);
    st_rules_set_num(v, "idx_tup_fetch_per_s", s->idx_tup / q->secs);
    st_rules_set_num(v, "seq_scan_share", s->seq_share);
    return v;
}

static void stmt_evidence(st_eng *e, const dbq *q, const stmt *s, st_candidate *c, double thr)
{
    static const char *const series[] = {
        "db.statement.calls",    "db.statement.time", "db.statement.rows",     "db.table.seq_scan",
        "db.table.seq_tup_read", "db.table.idx_scan", "db.table.idx_tup_fetch"};
    st_rules_evidence(e, c, series, ST_ARRAY_LEN(series), stmt_values(q, s), thr, q->window,
                      json_pack("[s]", st_ans_label(s->item, "host")));
}

static json_t *columns_json(const st_sql_columns *cols)
{
    json_t *a = json_array();
    for (size_t i = 0; i < cols->n; i++) {
        json_array_append_new(a, json_string(cols->name[i]));
    }
    return a;
}

/* "(a, b)" of columns, each quoted when it must be. */
static void columns_sql(st_rbuf *b, const st_sql_columns *cols)
{
    st_rbuf_puts(b, "(");
    for (size_t i = 0; i < cols->n; i++) {
        st_rbuf_puts(b, i > 0 ? ", " : "");
        st_rbuf_ident(b, cols->name[i]);
    }
    st_rbuf_puts(b, ")");
}

/* After a fix the statement is measured again by its own mean time over
 * the window (time / calls), whatever plan it runs with. */
static json_t *statement_measure(const stmt *s)
{
    char m1[160];
    char m2[160];
    char m3[160];
    snprintf(m1, sizeof(m1), "queryid=%s", st_ans_label(s->item, "queryid"));
    snprintf(m2, sizeof(m2), "host=%s", st_ans_label(s->item, "host"));
    snprintf(m3, sizeof(m3), "database=%s", st_ans_label(s->item, "database"));
    return json_pack("{s:s,s:s,s:{s:s,s:s},s:[s,s,s]}", "metric", "db.statement.time", "agg", "sum",
                     "per", "metric", "db.statement.calls", "agg", "sum", "match", m1, m2, m3);
}

static int add_index_candidate(st_eng *e, const st_rule *r, const dbq *q, const stmt *s,
                               const st_sql_columns *cols, st_candidates *out)
{
    st_candidate c;
    char sql[SQL_MAX];
    st_rbuf b;
    double thr = st_eng_threshold(e, r);
    double total = st_rules_total(q->calls);
    st_rbuf_init(&b, sql, sizeof(sql));
    st_rbuf_puts(&b, "CREATE INDEX CONCURRENTLY ON ");
    st_rbuf_ident(&b, s->table);
    st_rbuf_puts(&b, " ");
    columns_sql(&b, cols);
    st_rbuf_puts(&b, ";");
    if (b.over) {
        return ST_OK;
    }
    st_candidate_init(&c);
    st_rules_entity(&c, s->item, STMT_ENTITY);
    st_rules_verdict(&c, r, s->mean, thr, false);
    c.traffic_share = total > 0 ? s->calls / total : 0;
    st_rules_summary(&c,
                     "%s: statement mean %.0f ms over %.0f calls, %.0f%% of scans sequential; %s",
                     s->table, s->mean * 1000, s->calls, s->seq_share * 100, sql);
    stmt_evidence(e, q, s, &c, thr);
    c.implementation = json_pack("{s:s,s:s,s:o,s:s,s:s}", "sql", sql, "table", s->table, "columns",
                                 columns_json(cols), "statement", s->query, "database",
                                 st_ans_label(s->item, "database"));
    c.measure = statement_measure(s);
    return st_rules_add(out, &c);
}

int st_check_seq_scan_index(st_eng *e, const st_rule *r, st_candidates *out)
{
    dbq q;
    double thr = st_eng_threshold(e, r);
    int rv = dbq_load(e, &q);
    const st_answer *arr = q.calls;
    for (size_t i = 0; rv == ST_OK && i < arr->n; i++) {
        stmt s;
        st_sql_columns cols;
        stmt_fill(&q, &arr->rows[i], &s);
        if (s.calls > 0 && s.mean > thr && s.table[0] != '\0' && index_applies(&s, &cols)) {
            rv = add_index_candidate(e, r, &q, &s, &cols, out);
        }
    }
    dbq_free(&q);
    return rv;
}

/* ---- OPTIMIZE_QUERY ---- */

/* The covering index "CREATE INDEX ... (filters) INCLUDE (selected)" when
 * the statement names both; "" otherwise. */
static void covering_sql(const stmt *s, const st_sql_columns *where, char *sql, size_t cap)
{
    st_sql_columns sel;
    st_sql_columns inc = {0};
    st_rbuf b;
    st_sql_select_columns(s->query, s->table, &sel);
    for (size_t i = 0; i < sel.n; i++) {
        bool in_key = false;
        for (size_t k = 0; k < where->n; k++) {
            in_key |= strcmp(where->name[k], sel.name[i]) == 0;
        }
        if (!in_key) {
            memcpy(inc.name[inc.n++], sel.name[i], sizeof(sel.name[i]));
        }
    }
    st_rbuf_init(&b, sql, cap);
    if (where->n == 0 || sel.n == 0) {
        return;
    }
    st_rbuf_puts(&b, "CREATE INDEX CONCURRENTLY ON ");
    st_rbuf_ident(&b, s->table);
    st_rbuf_puts(&b, " ");
    columns_sql(&b, where);
    if (inc.n > 0) {
        st_rbuf_puts(&b, " INCLUDE ");
        columns_sql(&b, &inc);
    }
    st_rbuf_puts(&b, ";");
    if (b.over) {
        sql[0] = '\0';
    }
}

static json_t *optimize_impl(const stmt *s, const st_sql_columns *where, double per_row)
{
    json_t *changes = json_array();
    char cover[SQL_MAX];
    char keyset[SQL_MAX];
    bool limit = st_sql_has_limit(s->query);
    covering_sql(s, where, cover, sizeof(cover));
    if (st_sql_select_star(s->query)) {
        json_array_append_new(changes, json_string("select only the columns the caller reads "
                                                   "instead of *"));
    }
    if (!limit && st_sql_keyset_rewrite(s->query, keyset, sizeof(keyset)) == ST_OK) {
        json_array_append_new(changes, json_pack("s+",
                                                 "paginate with a key and a LIMIT so the "
                                                 "scan stops early: ",
                                                 keyset));
    } else {
        keyset[0] = '\0';
    }
    if (cover[0] != '\0') {
        json_array_append_new(changes, json_pack("s+",
                                                 "serve it from a covering index (an "
                                                 "index-only scan): ",
                                                 cover));
    }
    json_array_append_new(changes,
                          json_pack("s+", "check the plan: EXPLAIN (ANALYZE, BUFFERS) ", s->query));
    return json_pack("{s:s,s:s,s:f,s:o,s:o,s:o}", "statement", s->query, "table", s->table,
                     "rows_read_per_row", per_row, "changes", changes, "covering_index",
                     cover[0] ? json_string(cover) : json_null(), "rewrite",
                     keyset[0] ? json_string(keyset) : json_null());
}

static int optimize_candidate(st_eng *e, const st_rule *r, const dbq *q, const stmt *s,
                              const st_sql_columns *where, double per_row, st_candidates *out)
{
    st_candidate c;
    double thr = st_eng_threshold(e, r);
    double total = st_rules_total(q->calls);
    json_t *values = stmt_values(q, s);
    static const char *const series[] = {"db.statement.calls",     "db.statement.time",
                                         "db.statement.rows",      "db.table.idx_scan",
                                         "db.table.idx_tup_fetch", "db.table.seq_tup_read"};
    st_candidate_init(&c);
    st_rules_entity(&c, s->item, STMT_ENTITY);
    st_rules_verdict(&c, r, s->mean, thr, false);
    c.traffic_share = total > 0 ? s->calls / total : 0;
    st_rules_summary(
        &c, "%s: statement mean %.0f ms over %.0f calls reads %.0f rows per row returned: %.*s",
        s->table, s->mean * 1000, s->calls, per_row, st_rules_cut(s->query, 80), s->query);
    st_rules_set_num(values, "rows_read_per_row", per_row);
    st_rules_evidence(e, &c, series, ST_ARRAY_LEN(series), values, thr, q->window,
                      json_pack("[s]", st_ans_label(s->item, "host")));
    c.implementation = optimize_impl(s, where, per_row);
    return st_rules_add(out, &c);
}

int st_check_inefficient_query(st_eng *e, const st_rule *r, st_candidates *out)
{
    dbq q;
    double thr = st_eng_threshold(e, r);
    int rv = dbq_load(e, &q);
    const st_answer *arr = q.calls;
    for (size_t i = 0; rv == ST_OK && i < arr->n; i++) {
        stmt s;
        st_sql_columns cols;
        double per_row;
        stmt_fill(&q, &arr->rows[i], &s);
        if (!(s.calls > 0 && s.mean > thr && s.table[0] != '\0' && s.idx > 0)) {
            continue;
        }
        per_row = (s.idx_tup + s.seq_tup) / fmax(s.rows, 1);
        if (per_row > ST_READS_PER_ROW_MAX && !index_applies(&s, &cols)) {
            rv = optimize_candidate(e, r, &q, &s, &cols, per_row, out);
        }
    }
    dbq_free(&q);
    return rv;
}

/* ---- DENORMALIZE ---- */

static json_t *denorm_impl(const stmt *s, const st_sql_tables *t)
{
    char body[SQL_MAX];
    char view[SQL_MAX];
    char name[2 * ST_SQL_IDENT_MAX + 8];
    st_rbuf b;
    json_t *tables = json_array();
    for (size_t i = 0; i < t->n; i++) {
        json_array_append_new(tables, json_string(t->name[i]));
    }
    snprintf(name, sizeof(name), "%s_wide", t->n > 0 ? t->name[0] : "statement");
    st_rbuf_init(&b, view, sizeof(view));
    if (st_sql_view_body(s->query, body, sizeof(body)) == ST_OK) {
        st_rbuf_puts(&b, "CREATE MATERIALIZED VIEW ");
        st_rbuf_ident(&b, name);
        st_rbuf_addf(&b, " AS %s;", body);
    }
    return json_pack("{s:s,s:o,s:I,s:s,s:o,s:[s++,s++,s]}", "statement", s->query, "tables", tables,
                     "joins", (json_int_t)t->joins, "read_model", name, "sql",
                     view[0] != '\0' && !b.over ? json_string(view) : json_null(), "steps",
                     "build the read model ", name,
                     " holding the columns this statement reads, one row per row of the first "
                     "table",
                     "keep it fresh: REFRESH MATERIALIZED VIEW CONCURRENTLY ", name,
                     " on a schedule (needs a unique index), or triggers on the joined tables",
                     "point the statement at the read model, keeping its WHERE clause");
}

int st_check_wide_join(st_eng *e, const st_rule *r, st_candidates *out)
{
    dbq q;
    double thr = st_eng_threshold(e, r);
    int rv = dbq_load(e, &q);
    const st_answer *arr = q.calls;
    double total = st_rules_total(q.calls);
    for (size_t i = 0; rv == ST_OK && i < arr->n; i++) {
        static const char *const series[] = {"db.statement.calls", "db.statement.time"};
        stmt s;
        st_sql_tables t;
        st_candidate c;
        json_t *values;
        stmt_fill(&q, &arr->rows[i], &s);
        st_sql_tables_of(s.query, &t);
        if ((double)t.joins <= thr || s.calls / q.secs <= ST_HOT_CALLS_PER_S) {
            continue;
        }
        st_candidate_init(&c);
        st_rules_entity(&c, s.item, STMT_ENTITY);
        st_rules_verdict(&c, r, (double)t.joins, thr, false);
        c.traffic_share = total > 0 ? s.calls / total : 0;
        st_rules_summary(&c, "statement joins %zu times across %zu tables at %.2f calls/s: %.*s",
                         t.joins, t.n, s.calls / q.secs, st_rules_cut(s.query, 80), s.query);
        values = stmt_values(&q, &s);
        json_object_set_new(values, "joins", json_integer((json_int_t)t.joins));
        st_rules_evidence(e, &c, series, ST_ARRAY_LEN(series), values, thr, q.window,
                          json_pack("[s]", st_ans_label(s.item, "host")));
        c.implementation = denorm_impl(&s, &t);
        rv = st_rules_add(out, &c);
    }
    dbq_free(&q);
    return rv;
}

/* ---- ARCHIVE ---- */

/* Tables with rows, and how a cold one is known. */
typedef struct coldq {
    st_answer *live;      /* live_tup, max over the window */
    st_answer *last_read; /* last_read_unix (PostgreSQL 16+), max over the window */
    st_answer *seq;       /* per day over days + 1, for tables without last_read */
    st_answer *idx;
    st_answer *live_days;
    st_answer *seq_today;
    st_answer *idx_today;
    double days;
    int64_t span_ms;
} coldq;

static void coldq_free(coldq *q)
{
    st_answer_unref(q->live);
    st_answer_unref(q->last_read);
    st_answer_unref(q->seq);
    st_answer_unref(q->idx);
    st_answer_unref(q->live_days);
    st_answer_unref(q->seq_today);
    st_answer_unref(q->idx_today);
}

/* The daily counters of the closed days, up to today's start: the same
 * questions every step of a day, whose answers the engine keeps from step
 * to step while nothing is written into them (today's points are not). */
static int coldq_days(st_eng *e, coldq *q)
{
    int64_t now = st_eng_now(e);
    int64_t today = now - ((now % DAY_MS) + DAY_MS) % DAY_MS;
    int64_t span = q->span_ms - (now - today);
    int rv;
    if (q->seq != NULL) {
        return ST_OK;
    }
    st_eng_set_now(e, today);
    if ((rv = st_rules_query(e, "db.table.seq_scan", "sum", TABLE_BY, NULL, 0, span, DAY_MS,
                             &q->seq)) == ST_OK &&
        (rv = st_rules_query(e, "db.table.idx_scan", "sum", TABLE_BY, NULL, 0, span, DAY_MS,
                             &q->idx)) == ST_OK) {
        rv = st_rules_query(e, "db.table.live_tup", "max", TABLE_BY, NULL, 0, span, DAY_MS,
                            &q->live_days);
    }
    st_eng_set_now(e, now);
    return rv;
}

/* Today's scans, as of the clock, by table: asked once a run, when a
 * table was idle over the closed days. */
static int coldq_today(st_eng *e, coldq *q)
{
    int64_t now = st_eng_now(e);
    int64_t since = ((now % DAY_MS) + DAY_MS) % DAY_MS;
    int rv;
    if (q->seq_today != NULL || since == 0) {
        return ST_OK;
    }
    if ((rv = st_rules_query(e, "db.table.seq_scan", "sum", TABLE_BY, NULL, 0, since, 0,
                             &q->seq_today)) != ST_OK) {
        return rv;
    }
    return st_rules_query(e, "db.table.idx_scan", "sum", TABLE_BY, NULL, 0, since, 0,
                          &q->idx_today);
}

static double points_sum(const st_ans_row *item)
{
    double sum = 0;
    for (size_t i = 0; item != NULL && i < item->n; i++) {
        sum += zero_nan(item->v[i]);
    }
    return sum;
}

/* Days without a read from the daily counters: the table must have been
 * seen in the first day of the range (so the data covers more than the
 * threshold) and no scan of either kind counted since, over the closed
 * days nor today. NAN: unknown. */
static int days_from_counters(st_eng *e, coldq *q, const st_ans_row *item, double *days)
{
    const st_ans_row *lv = st_answer_find(q->live_days, item, TABLE_BY);
    int64_t from = q->live_days->from;
    const st_ans_row *seq = st_answer_find(q->seq, item, TABLE_BY);
    const st_ans_row *idx = st_answer_find(q->idx, item, TABLE_BY);
    double today = 0;
    int rv;
    *days = NAN;
    if (lv == NULL || lv->n == 0 || lv->t[0] != from || seq == NULL) {
        return ST_OK;
    }
    if (points_sum(seq) + points_sum(idx) > 0) {
        *days = 0;
        return ST_OK;
    }
    if ((rv = coldq_today(e, q)) != ST_OK) {
        return rv;
    }
    today = zero_nan(st_rules_lookup(q->seq_today, item, TABLE_BY)) +
            zero_nan(st_rules_lookup(q->idx_today, item, TABLE_BY));
    *days = today > 0 ? 0 : (double)(st_eng_now(e) - from) / (double)DAY_MS;
    return ST_OK;
}

static int cold_candidate(st_eng *e, const st_rule *r, const coldq *q, const st_ans_row *item,
                          double idle, const char *source, st_candidates *out)
{
    static const char *const series[] = {"db.table.last_read_unix", "db.table.seq_scan",
                                         "db.table.idx_scan", "db.table.live_tup"};
    const char *t = st_ans_label(item, "table");
    double live = st_ans_value(item);
    double total = st_rules_total(q->live);
    char sql[SQL_MAX];
    char arch[2 * ST_SQL_IDENT_MAX + 16];
    st_rbuf b;
    st_candidate c;
    if (snprintf(arch, sizeof(arch), "%s_archive", t) >= (int)sizeof(arch)) {
        return ST_OK; /* no PostgreSQL table has such a name */
    }
    st_rbuf_init(&b, sql, sizeof(sql));
    st_rbuf_puts(&b, "CREATE TABLE ");
    st_rbuf_ident(&b, arch);
    st_rbuf_puts(&b, " (LIKE ");
    st_rbuf_ident(&b, t);
    st_rbuf_puts(&b, " INCLUDING ALL);\nBEGIN;\nLOCK TABLE ");
    st_rbuf_ident(&b, t);
    st_rbuf_puts(&b, " IN EXCLUSIVE MODE;\nINSERT INTO ");
    st_rbuf_ident(&b, arch);
    st_rbuf_puts(&b, " SELECT * FROM ");
    st_rbuf_ident(&b, t);
    st_rbuf_puts(&b, ";\nTRUNCATE ");
    st_rbuf_ident(&b, t);
    st_rbuf_puts(&b, ";\nCOMMIT;");
    if (b.over) {
        return ST_OK;
    }
    st_candidate_init(&c);
    st_rules_entity(&c, item, TABLE_ENTITY);
    st_rules_verdict(&c, r, idle, q->days, false);
    c.traffic_share = total > 0 ? live / total : 0;
    st_rules_summary(&c, "%s: %.0f live rows not read for %.0f days (over %.0f)", t, live, idle,
                     q->days);
    st_rules_evidence(
        e, &c, series, ST_ARRAY_LEN(series),
        json_pack("{s:f,s:f,s:s}", "days_without_reads", idle, "live_tup", live, "source", source),
        q->days, q->span_ms, json_pack("[s]", st_ans_label(item, "host")));
    c.implementation = json_pack(
        "{s:s,s:s,s:s,s:s,s:f,s:[s,s++++++]}", "table", t, "archive_table", arch, "database",
        st_ans_label(item, "database"), "sql", sql, "days_without_reads", idle, "steps",
        "run sql in the table's database; TRUNCATE fails, leaving everything in place, while "
        "other tables still reference rows by foreign key",
        "keep a copy outside the database too: pg_dump --data-only --table=", t, " ",
        st_ans_label(item, "database"), " | zstd > ", t, ".sql.zst");
    return st_rules_add(out, &c);
}

/* One table: last_read_unix when the server reports it, else the counters. */
static int cold_one(st_eng *e, const st_rule *r, coldq *q, const st_ans_row *item,
                    st_candidates *out)
{
    double last = st_rules_lookup(q->last_read, item, TABLE_BY);
    double idle;
    int rv;
    if (!(st_ans_value(item) > 0)) {
        return ST_OK;
    }
    if (isfinite(last) && last > 0) {
        idle = ((double)st_eng_now(e) / 1000.0 - last) / 86400.0;
        return idle > q->days ? cold_candidate(e, r, q, item, idle, "last_read_unix", out) : ST_OK;
    }
    if ((rv = coldq_days(e, q)) != ST_OK) {
        return rv;
    }
    if ((rv = days_from_counters(e, q, item, &idle)) != ST_OK) {
        return rv;
    }
    return idle > q->days ? cold_candidate(e, r, q, item, idle, "scan counters", out) : ST_OK;
}

int st_check_cold_table(st_eng *e, const st_rule *r, st_candidates *out)
{
    coldq q;
    int64_t w = st_eng_window(e);
    int64_t now;
    int rv;
    memset(&q, 0, sizeof(q));
    q.days = st_rules_threshold(e, r, "cold_table_days");
    if (!(q.days > 0)) {
        return ST_OK;
    }
    q.days = fmin(q.days, MAX_COLD_DAYS);
    /* The range starts on a day boundary at least one day before the
     * threshold: its first daily bucket then lies wholly before it (data
     * there proves the coverage), and it is built from hourly rollups
     * alone, since raw points that old are gone. */
    now = st_eng_now(e);
    q.span_ms = now - ((now - (int64_t)ceil(q.days) * DAY_MS - DAY_MS) / DAY_MS) * DAY_MS;
    if ((rv = st_rules_query(e, "db.table.live_tup", "max", TABLE_BY, NULL, 0, w, 0, &q.live)) ==
        ST_OK) {
        rv = st_rules_query(e, "db.table.last_read_unix", "max", TABLE_BY, NULL, 0, w, 0,
                            &q.last_read);
    }
    for (size_t i = 0; rv == ST_OK && i < q.live->n; i++) {
        rv = cold_one(e, r, &q, &q.live->rows[i], out);
    }
    coldq_free(&q);
    return rv;
}
