/* Text formatting for the strata CLI: aligned tables, values in their unit,
 * relative times and truncation. Everything writes into a capped st_buf and
 * never prints; main decides where the text goes. */
#ifndef ST_CLI_FORMAT_H
#define ST_CLI_FORMAT_H

#include "buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Room for any text st_fmt_value or st_fmt_ago produce. */
#define ST_FMT_VALUE_LEN 64

/* Formats value in its catalog unit with three significant digits:
 * "s" -> "850 µs", "12.3 ms", "1.50 s"; "ms" likewise; "B" -> "512 B",
 * "1.50 MiB"; "ratio" -> "45.1 %"; "%" -> "45.1 %"; NULL or "" -> a bare
 * number (integers in full); any other unit is appended after a space.
 * NaN prints as "NaN", infinities as "+Inf"/"-Inf". Always NUL-terminates. */
void st_fmt_value(double value, const char *unit, char *buf, size_t len);

/* then_ms relative to now_ms: "0s ago", "3s ago", "5m ago", "2h ago",
 * "4d ago"; a time in the future (clock skew) is "in 3s"; then_ms <= 0 is
 * "never". Always NUL-terminates. */
void st_fmt_ago(int64_t now_ms, int64_t then_ms, char *buf, size_t len);

/* Display width of UTF-8 text in terminal columns: one per code point
 * (no East Asian wide characters in what the collector sends). */
size_t st_fmt_width(const char *s);

/* Appends s to out, cut to at most max_cols columns; a cut string ends in
 * "…" and never splits a UTF-8 sequence. ST_ETOOBIG/ST_ENOMEM from out. */
int st_fmt_truncate(const char *s, size_t max_cols, st_buf *out);

/* Appends s to out made safe for a terminal: control characters (C0, DEL,
 * C1; newline and tab too unless keep_newlines) become a space and invalid
 * UTF-8 becomes '?', so server data can neither break a table's alignment
 * nor send escape sequences. */
int st_fmt_sanitize(const char *s, bool keep_newlines, st_buf *out);

enum st_align { ST_ALIGN_AUTO = 0, ST_ALIGN_LEFT, ST_ALIGN_RIGHT };

/* A table of text cells whose columns are sized to their content. AUTO
 * columns are right-aligned when every non-empty cell is a number
 * (optionally followed by a unit: "12.3 ms"), left-aligned otherwise. */
typedef struct st_table st_table;

/* A table with ncols columns and these headers (copied). NULL on no memory
 * or ncols == 0. */
st_table *st_table_new(size_t ncols, const char *const *headers);
/* NULL-safe. */
void st_table_free(st_table *t);
/* Overrides the alignment of column col. */
void st_table_align(st_table *t, size_t col, enum st_align align);
/* Cuts cells of column col to max_cols columns with "…" (0: no limit). */
void st_table_max_width(st_table *t, size_t col, size_t max_cols);
/* Adds a row of ncols cells (copied, sanitized); a NULL cell is empty.
 * ST_ENOMEM, ST_ETOOBIG past ST_TABLE_MAX_ROWS. */
int st_table_add_row(st_table *t, const char *const *cells);
/* Rows added so far. */
size_t st_table_rows(const st_table *t);
/* Appends the header and the rows, two spaces between columns and no
 * trailing blanks, each line ending in '\n'. */
int st_table_render(const st_table *t, st_buf *out);

#define ST_TABLE_MAX_ROWS 1000000

#endif
