/* Text helpers of the postgres sampler, kept apart so unit tests reach them
 * without a server: statement text made into one clean label value, and the
 * main table a statement reads or writes, found by a small tokenizer. */
#ifndef ST_POSTGRES_SQL_H
#define ST_POSTGRES_SQL_H

#include <stddef.h>

#define ST_PGSQL_MAX_IDENT 63 /* PostgreSQL's NAMEDATALEN - 1 */
/* "schema.table" of two identifiers, NUL included. */
#define ST_PGSQL_TABLE_MAX (2 * ST_PGSQL_MAX_IDENT + 2)

/* Copies the statement text in[0..len) into out[cap] (cap >= 1, always
 * NUL-terminated) as one line: comments removed, every run of white space
 * outside quotes made one space, leading and trailing space dropped, control
 * characters made spaces, invalid UTF-8 bytes made '?'. The result is cut to
 * at most cap - 1 bytes, never inside a UTF-8 character. Returns the length
 * of out. Quoted strings, identifiers and dollar-quoted bodies are kept as
 * written (their control characters aside). Never allocates. */
size_t st_pgsql_normalize(const char *in, size_t len, char *out, size_t cap);

/* The main table of a statement: the first relation named after FROM,
 * UPDATE, INTO or COPY, preferring the outermost query (FROM (subquery)
 * looks inside; a WITH name is passed over for the next item of the FROM
 * list). Only statements that read or write tables count (SELECT, INSERT,
 * UPDATE, DELETE, WITH, MERGE, COPY, VALUES): in GRANT, REVOKE and other
 * utility statements FROM names roles or cursors. Unquoted names are
 * lower-cased, quoted ones kept as written; "schema.table" when a schema
 * is given, except that the public schema is dropped ("public.users" ->
 * "users") so the name matches the table label of the db.table.* series.
 * out[cap] receives it (ST_PGSQL_TABLE_MAX is enough). ST_ENOENT when the
 * text names no table (SELECT 1, a function in FROM, garbage), ST_ETOOBIG
 * when a name is longer than ST_PGSQL_MAX_IDENT bytes or does not fit in
 * cap. Never allocates. */
int st_pgsql_main_table(const char *sql, char *out, size_t cap);

#endif
