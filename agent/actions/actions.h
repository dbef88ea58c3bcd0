/* What the action types share with the runner (runner.h): one definition
 * per type, the outcome an action fills in, and the helpers every type uses
 * (parameters, errors, UTF-8-safe text). Each type lives in its own file:
 * postgres_create_index.c, redis_config_set.c, exec.c. */
#ifndef ST_ACTIONS_ACTIONS_H
#define ST_ACTIONS_ACTIONS_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "config.h"
#include "proto/strata.pb-c.h"

#define ST_ACTION_MAX_TEXT 1024         /* error and output of a result: the collector's limit */
#define ST_ACTION_MAX_ID 128            /* action ids longer than this are dropped */
#define ST_ACTION_MAX_PARAMS 16         /* parameters of one action */
#define ST_ACTION_MAX_PARAM 16384       /* bytes of one parameter value (the sql) */
#define ST_ACTION_MAX_ERROR 2048        /* raw error text before it is cut to ST_ACTION_MAX_TEXT */
#define ST_ACTION_MAX_OUTPUT (1u << 20) /* the most output any action may keep */

/* What an action reports. Types set status (STRATA__V1__ACTION_STATUS__*),
 * error and output; bytes need not be UTF-8: the runner cleans and cuts
 * them into the result. */
typedef struct st_action_out {
    int status;
    int exit_status;
    char error[ST_ACTION_MAX_ERROR];
    st_buf output; /* limit set by the runner (ST_ACTION_MAX_OUTPUT) */
} st_action_out;

/* One action type. init parses its block of `actions:`, a mapping or a
 * YAML null (no options given; still a node, for the line in errors that
 * name file, line and key); run executes one action on the runner thread and must
 * return soon after *stop becomes non-zero (the agent is stopping); fini
 * accepts NULL. */
typedef struct st_action_def {
    const char *type; /* "postgres.create_index" */
    int (*init)(const st_cfg_doc *doc, const st_cfg_node *cfg, void **ctx, st_cfg_error *err);
    void (*run)(void *ctx, const Strata__V1__Action *a, const atomic_int *stop, st_action_out *out);
    void (*fini)(void *ctx);
} st_action_def;

extern const st_action_def st_action_postgres_create_index;
extern const st_action_def st_action_redis_config_set;
extern const st_action_def st_action_exec;

/* Sets the status and formats the error (cut at ST_ACTION_MAX_ERROR). */
void st_action_fail(st_action_out *o, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The value of parameter key, or NULL when the action lacks it. */
const char *st_action_param(const Strata__V1__Action *a, const char *key);

/* Checks the parameters: every key in required present with a non-empty
 * value of at most ST_ACTION_MAX_PARAM bytes, no key twice, and (when
 * strict) no key outside required and optional (NULL-terminated lists).
 * On failure the outcome is ACTION_REFUSED with the reason and false comes
 * back. */
bool st_action_check_params(const Strata__V1__Action *a, const char *const *required,
                            const char *const *optional, bool strict, st_action_out *o);

/* Copies n bytes of p into out[cap] as valid UTF-8 without NUL: each byte
 * that does not start a well-formed sequence (and each NUL) becomes U+FFFD,
 * and the copy stops before a character that would not fit, so it is never
 * cut inside one. NUL-terminated; returns its length (< cap). cap >= 1. */
size_t st_action_text(const void *p, size_t n, char *out, size_t cap);

/* A result holding copies of the strings, each cleaned and cut by
 * st_action_text to ST_ACTION_MAX_TEXT bytes (error and output given as
 * bytes, the others as C strings; NULL reads as ""). NULL when out of
 * memory. */
Strata__V1__ActionResult *st_action_result_new(const char *id, const char *type,
                                               const char *finding_id, int status, int exit_status,
                                               uint32_t duration_ms, const void *error,
                                               size_t error_len, const void *output,
                                               size_t output_len);
Strata__V1__ActionResult *st_action_result_dup(const Strata__V1__ActionResult *r);
/* Frees a result from st_action_result_new or _dup; NULL-safe. */
void st_action_result_free(Strata__V1__ActionResult *r);
/* "ok", "failed", "refused", "timeout" (for logs and actions.done). */
const char *st_action_status_name(int status);
/* The status named so; 0 (unspecified) for any other text. */
int st_action_status_parse(const char *name);

/* ---- postgres.create_index: the statement validator ---- */

#define ST_INDEX_MAX_SQL 16384
#define ST_INDEX_MAX_NAME 512 /* the table as written (schema.table, quoted parts) */

/* What the validator learnt about an accepted statement. */
typedef struct st_index_stmt {
    char table[ST_INDEX_MAX_NAME]; /* as written, e.g. public."Orders" */
    char name[ST_INDEX_MAX_NAME];  /* the index name as written; "" when unnamed */
} st_index_stmt;

/* Accepts exactly one statement of the form
 *   CREATE INDEX CONCURRENTLY [IF NOT EXISTS] [name] ON [ONLY] table
 *     [USING method] ( key, ... ) [INCLUDE ( column, ... )] [WHERE predicate] [;]
 * (keywords in any case) and nothing else: no comments, no dollar quotes,
 * no escape strings or backslashes, no semicolon but one at the very end,
 * no statement keyword (DROP, ALTER, SELECT, ...) anywhere, balanced
 * parentheses, valid UTF-8, at most ST_INDEX_MAX_SQL bytes. ST_EINVAL with
 * the reason in why[cap] otherwise; *out (may be NULL) is filled on
 * success. */
int st_index_sql_check(const char *sql, st_index_stmt *out, char *why, size_t cap);

#endif
