/* The checks behind the rule table (rules.c), one file per layer, and the
 * helpers they share: answer lookups, evidence, bounded text building, the
 * SQL reading of normalized statements and the memory-leak fit. Internal to
 * collector/engine: only rules.c and the tests include it. */
#ifndef ST_ENGINE_RULES_CHECKS_H
#define ST_ENGINE_RULES_CHECKS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rules.h"

/* ---- checks (one per rule row) ---- */

int st_check_seq_scan_index(st_eng *e, const st_rule *r, st_candidates *out);
int st_check_inefficient_query(st_eng *e, const st_rule *r, st_candidates *out);
int st_check_wide_join(st_eng *e, const st_rule *r, st_candidates *out);
int st_check_cold_table(st_eng *e, const st_rule *r, st_candidates *out);

int st_check_n_plus_one(st_eng *e, const st_rule *r, st_candidates *out);
int st_check_large_result(st_eng *e, const st_rule *r, st_candidates *out);
int st_check_repeated_work(st_eng *e, const st_rule *r, st_candidates *out);
int st_check_large_objects(st_eng *e, const st_rule *r, st_candidates *out);
int st_check_memory_leak(st_eng *e, const st_rule *r, st_candidates *out);

int st_check_bundle_size(st_eng *e, const st_rule *r, st_candidates *out);
int st_check_unused_code(st_eng *e, const st_rule *r, st_candidates *out);
int st_check_duplicate_code(st_eng *e, const st_rule *r, st_candidates *out);
int st_check_slow_component(st_eng *e, const st_rule *r, st_candidates *out);

int st_check_update_rate(st_eng *e, const st_rule *r, st_candidates *out);
int st_check_bandwidth(st_eng *e, const st_rule *r, st_candidates *out);
int st_check_stability(st_eng *e, const st_rule *r, st_candidates *out);

int st_check_browser_cache(st_eng *e, const st_rule *r, st_candidates *out);
int st_check_cdn_cache(st_eng *e, const st_rule *r, st_candidates *out);
int st_check_api_cache(st_eng *e, const st_rule *r, st_candidates *out);

/* ---- bounded text ---- */

/* Label values are at most this long (DESIGN.md wire limits). */
#define ST_RULES_LABEL_MAX 1024

/* A fixed buffer that never overflows: appends past cap are cut (never
 * inside a UTF-8 character) and remembered in over, so a caller can refuse
 * a truncated SQL statement. */
typedef struct st_rbuf {
    char *p;
    size_t cap;
    size_t len;
    bool over;
} st_rbuf;

void st_rbuf_init(st_rbuf *b, char *p, size_t cap);
void st_rbuf_add(st_rbuf *b, const char *s, size_t n);
void st_rbuf_puts(st_rbuf *b, const char *s);
void st_rbuf_addf(st_rbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* How many bytes of s (at most max) to print with "%.*s" without cutting a
 * UTF-8 character: JSON refuses strings that end in half a character. */
int st_rules_cut(const char *s, int max);
/* An SQL identifier, double-quoted unless it is a plain lower-case word;
 * "schema.table" is quoted part by part. */
void st_rbuf_ident(st_rbuf *b, const char *name);

/* ---- reading query answers ---- */

/* st_eng_query (step_ms 0) or st_eng_query_steps; when the answer would be
 * over the query engine's group limit (ST_ETOOBIG) and by holds "host", it
 * is assembled host by host instead, so a large fleet still gets an answer
 * as long as one host stays under the limit. */
int st_rules_query(st_eng *e, const char *metric, const char *agg, const char *by,
                   const char *const *match, size_t nmatch, int64_t window_ms, int64_t step_ms,
                   st_answer **out);
/* That answer host by host straight away, for a caller that already knows
 * the whole one is over the limit. */
int st_rules_query_per_host(st_eng *e, const char *metric, const char *agg, const char *by,
                            const char *const *match, size_t nmatch, int64_t window_ms,
                            int64_t step_ms, st_answer **out);

/* Rows are read with st_ans_label, st_ans_value and st_answer_find
 * (answer.h). */
/* st_ans_value of st_answer_find, NAN when absent. */
double st_rules_lookup(st_answer *ans, const st_ans_row *item, const char *keys);
/* The sum of the finite values of all rows. */
double st_rules_total(const st_answer *ans);
/* A gauge's latest value per group: average per minute over the window, the
 * last minute with data answers (st_ans_value of each row). */
int st_rules_last(st_eng *e, const char *metric, const char *by, const char *const *match,
                  size_t nmatch, int64_t window_ms, st_answer **out);

/* ---- building candidates ---- */

/* A JSON number, or null when v is not finite (jansson refuses NaN). */
json_t *st_rules_num(double v);
void st_rules_set_num(json_t *obj, const char *key, double v);
/* The rule threshold, or the named engine setting when the rule's own
 * threshold was not overridden (targets like bundle_main_bytes live there). */
double st_rules_threshold(st_eng *e, const st_rule *r, const char *setting);
/* Fills value/threshold/below and the severity: the rule's default, one
 * level up when far past the threshold (over 2x, or under half when lower
 * is worse). */
void st_rules_verdict(st_candidate *c, const st_rule *r, double value, double threshold,
                      bool below);
/* entity "k=v k=v" and labels from item's labels on keys (comma separated),
 * skipping empty values. */
void st_rules_entity(st_candidate *c, const st_ans_row *item, const char *keys);
/* st_candidates_add, refusing (ST_ENOMEM) a candidate whose JSON could not
 * be built: json_pack answers NULL on allocation failure. */
int st_rules_add(st_candidates *out, st_candidate *c);
/* The one-line summary (cut to ST_SUMMARY_MAX). */
void st_rules_summary(st_candidate *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* evidence = {series: [series...], values (stolen), threshold, window: {from,
 * to}, hosts (stolen; an empty array when NULL)}. */
void st_rules_evidence(st_eng *e, st_candidate *c, const char *const *series, size_t nseries,
                       json_t *values, double threshold, int64_t window_ms, json_t *hosts);
/* The distinct non-empty values of label key in ans, as a JSON array; only
 * of the items whose label fkey equals fval when fkey is not NULL. */
json_t *st_rules_hosts(const st_answer *ans, const char *key, const char *fkey, const char *fval);

/* ---- SQL of normalized statements (rules_sql.c) ---- */

#define ST_SQL_MAX_TEXT 4096   /* longer statements are read up to here */
#define ST_SQL_MAX_TOKENS 1024 /* and up to this many tokens */
#define ST_SQL_IDENT_MAX 64    /* PostgreSQL names are at most 63 bytes */
#define ST_SQL_MAX_COLUMNS 8
#define ST_SQL_MAX_TABLES 32

typedef struct st_sql_columns {
    char name[ST_SQL_MAX_COLUMNS][ST_SQL_IDENT_MAX];
    bool eq[ST_SQL_MAX_COLUMNS]; /* equality (=, IN, = ANY) or range */
    size_t n;
} st_sql_columns;

typedef struct st_sql_tables {
    char name[ST_SQL_MAX_TABLES][2 * ST_SQL_IDENT_MAX];
    size_t n;     /* distinct relations named in FROM and JOIN */
    size_t joins; /* JOIN keywords plus comma joins in FROM lists */
} st_sql_tables;

/* The columns of table that the top-level WHERE clause of sql filters on,
 * equality predicates first, then range predicates (< <= > >= BETWEEN,
 * LIKE 'prefix%'), each once, in order of appearance. AND adds columns, OR
 * keeps those every branch filters on, NOT drops them; qualified names
 * count when their qualifier is table or one of its aliases; casts and
 * CAST() are seen through; predicates comparing two columns, functions of
 * a column and negations are not indexable and skipped. table may be NULL
 * or "" for the first relation of FROM. Names come lower-cased unless they
 * were quoted. Never fails: an unreadable statement gives no columns. */
void st_sql_index_columns(const char *sql, const char *table, st_sql_columns *out);
/* Every relation the statement reads, and how many joins it makes. */
void st_sql_tables_of(const char *sql, st_sql_tables *out);
/* Flags of the top-level statement. */
bool st_sql_select_star(const char *sql);
bool st_sql_has_limit(const char *sql);
/* The plain columns of table in the top-level select list (none when it
 * holds "*" or expressions). */
void st_sql_select_columns(const char *sql, const char *table, st_sql_columns *out);
/* The statement with its first "column = $n" of the WHERE clause turned
 * into "column = ANY($n)" (one call for a whole array of keys). ST_ENOENT
 * when there is no such predicate, ST_ETOOBIG when out is too small. */
int st_sql_batch_rewrite(const char *sql, char *out, size_t cap);
/* The SELECT rewritten for keyset pagination: its WHERE (or a new one)
 * gains "key > $n+1", and it ends "ORDER BY key LIMIT $n+2", key being its
 * first ORDER BY column or "id". ST_ENOENT for statements that are not a
 * plain SELECT (GROUP BY, set operations, no FROM), ST_ETOOBIG. */
int st_sql_keyset_rewrite(const char *sql, char *out, size_t cap);
/* The statement before its top-level WHERE (and GROUP, ORDER, LIMIT...),
 * for a materialized view of its joins: ST_ENOENT unless it is a SELECT of
 * plain columns with distinct names and no $n before the WHERE. */
int st_sql_view_body(const char *sql, char *out, size_t cap);

/* ---- memory-leak fit (rules_function.c) ---- */

typedef struct st_leak_fit {
    double slope;      /* least-squares slope, value units per time unit */
    double r2;         /* coefficient of determination of the line */
    double tail_slope; /* slope over the last third of the points */
    double last;       /* the fitted value at the last point */
} st_leak_fit;

#define ST_LEAK_MIN_POINTS 10
#define ST_LEAK_MIN_R2 0.9
/* No plateau: the last third must still grow at this share of the slope. */
#define ST_LEAK_TAIL_SHARE 0.25

/* Fits v over t (n points); true when the points say "steady growth":
 * n >= ST_LEAK_MIN_POINTS, slope > 0, R^2 > ST_LEAK_MIN_R2 and the last
 * third grows at >= ST_LEAK_TAIL_SHARE of the slope. *out is always set
 * when n >= 2. */
bool st_leak_detect(const double *t, const double *v, size_t n, st_leak_fit *out);

#endif
