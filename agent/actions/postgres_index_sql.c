/* The strict validator of postgres.create_index: a small lexer that knows
 * where PostgreSQL's strings, quoted names and comments begin, and a parser
 * for the one statement shape we run. It refuses whatever could make the
 * server see more than that one statement (see actions.h). */
#include "actions.h"

#include "err.h"
#include "util.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

enum tok_kind { T_END, T_WORD, T_QIDENT, T_STRING, T_NUMBER, T_PUNCT, T_OP, T_SEMI };

typedef struct tok {
    enum tok_kind kind;
    const char *p;
    size_t n;
} tok;

typedef struct lexer {
    const char *s;
    size_t i;
    size_t n;
    tok t; /* the current token */
    char *why;
    size_t cap;
    bool failed;
} lexer;

/* Words that begin other statements or subqueries: never part of an index
 * key or predicate we would run (the single-statement grammar already
 * keeps them out; this is the second lock). A column with such a name can
 * be quoted, as the engine quotes reserved words. */
static const char *const banned[] = {
    "ALTER",    "ANALYZE", "BEGIN",   "CALL",   "CHECKPOINT", "CLUSTER", "COMMIT",
    "COPY",     "CREATE",  "DELETE",  "DO",     "DROP",       "EXECUTE", "GRANT",
    "INSERT",   "MERGE",   "REINDEX", "REVOKE", "ROLLBACK",   "SELECT",  "TABLE",
    "TRUNCATE", "UPDATE",  "VACUUM",  "VALUES", "WITH",
};

static const char *const methods[] = {"btree", "hash", "gist", "spgist", "gin", "brin"};

static bool fail(lexer *lx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static bool fail(lexer *lx, const char *fmt, ...)
{
    va_list ap;
    if (!lx->failed) {
        va_start(ap, fmt);
        vsnprintf(lx->why, lx->cap, fmt, ap);
        va_end(ap);
    }
    lx->failed = true;
    lx->t.kind = T_END;
    return false;
}

static bool is_ident_start(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

static bool is_ident_char(unsigned char c)
{
    return is_ident_start(c) || (c >= '0' && c <= '9');
}

static bool is_op_char(char c)
{
    return c != '\0' && strchr("+-*/<>=~!@#%^&|`?", c) != NULL;
}

/* A quoted string or name from s[i] (the quote) to its closing quote; a
 * doubled quote stands for one. Backslashes are refused in strings: with
 * standard_conforming_strings off the server would read them as escapes
 * and end the string elsewhere than we do. */
static bool lex_quoted(lexer *lx, char q)
{
    size_t j = lx->i + 1;
    if (lx->i > 0 && (is_ident_char((unsigned char)lx->s[lx->i - 1]) || lx->s[lx->i - 1] == '&')) {
        return fail(lx, "prefixed strings and names (E'', U&'', B'', X'') are not accepted");
    }
    for (;; j++) {
        if (j >= lx->n) {
            return fail(lx, "unterminated %s", q == '\'' ? "string" : "quoted name");
        }
        if (lx->s[j] == '\\' && q == '\'') {
            return fail(lx, "backslashes are not accepted in strings");
        }
        if (lx->s[j] == q && j + 1 < lx->n && lx->s[j + 1] == q) {
            j++;
        } else if (lx->s[j] == q) {
            break;
        }
    }
    if (q == '"' && j == lx->i + 1) {
        return fail(lx, "empty quoted name");
    }
    lx->t = (tok){q == '\'' ? T_STRING : T_QIDENT, lx->s + lx->i, j + 1 - lx->i};
    lx->i = j + 1;
    return true;
}

/* A run of operator characters; a comment may start inside one ("+--"). */
static bool lex_op(lexer *lx)
{
    size_t j = lx->i;
    while (j < lx->n && is_op_char(lx->s[j])) {
        if ((lx->s[j] == '-' && lx->s[j + 1] == '-') || (lx->s[j] == '/' && lx->s[j + 1] == '*')) {
            return fail(lx, "comments are not accepted");
        }
        j++;
    }
    lx->t = (tok){T_OP, lx->s + lx->i, j - lx->i};
    lx->i = j;
    return true;
}

static bool lex_run(lexer *lx, enum tok_kind kind)
{
    size_t j = lx->i + 1;
    while (j < lx->n &&
           (is_ident_char((unsigned char)lx->s[j]) || (kind == T_NUMBER && lx->s[j] == '.'))) {
        j++;
    }
    if (j < lx->n && lx->s[j] == '$') {
        return fail(lx, "'$' (dollar quotes, parameters) is not accepted");
    }
    lx->t = (tok){kind, lx->s + lx->i, j - lx->i};
    lx->i = j;
    return true;
}

/* Moves to the next token; false (with the reason) on anything refused. */
static bool next(lexer *lx)
{
    unsigned char c;
    while (lx->i < lx->n && strchr(" \t\n\r\f", lx->s[lx->i]) != NULL) {
        lx->i++;
    }
    if (lx->failed || lx->i >= lx->n) {
        lx->t = (tok){T_END, lx->s + lx->n, 0};
        return !lx->failed;
    }
    c = (unsigned char)lx->s[lx->i];
    if (c == '\'' || c == '"') {
        return lex_quoted(lx, (char)c);
    }
    if (is_ident_start(c)) {
        return lex_run(lx, T_WORD);
    }
    if ((c >= '0' && c <= '9') ||
        (c == '.' && lx->s[lx->i + 1] >= '0' && lx->s[lx->i + 1] <= '9')) {
        return lex_run(lx, T_NUMBER);
    }
    if (c == ';' || strchr("()[],.:", c) != NULL) {
        lx->t = (tok){c == ';' ? T_SEMI : T_PUNCT, lx->s + lx->i, 1};
        lx->i++;
        return true;
    }
    if (is_op_char((char)c)) {
        return lex_op(lx);
    }
    if (c == '$') {
        return fail(lx, "'$' (dollar quotes, parameters) is not accepted");
    }
    if (c == '\\') {
        return fail(lx, "backslashes are not accepted");
    }
    return fail(lx, "unexpected character 0x%02x at byte %zu", c, lx->i);
}

static bool is_word(const tok *t, const char *w)
{
    return t->kind == T_WORD && t->n == strlen(w) && strncasecmp(t->p, w, t->n) == 0;
}

static bool is_punct(const tok *t, char c)
{
    return t->kind == T_PUNCT && t->p[0] == c;
}

/* The current token for a message: at most 40 bytes, "end" at the end. */
static int shown_len(const tok *t)
{
    return (int)ST_MIN(t->n, 40);
}

static const char *shown(const tok *t)
{
    return t->kind == T_END ? "the end" : t->p;
}

static bool expect_word(lexer *lx, const char *w)
{
    if (!is_word(&lx->t, w)) {
        return fail(lx, "expected %s, found '%.*s'", w, shown_len(&lx->t), shown(&lx->t));
    }
    return next(lx);
}

static bool is_ident(const tok *t)
{
    return t->kind == T_WORD || t->kind == T_QIDENT;
}

static bool check_word(lexer *lx)
{
    for (size_t i = 0; lx->t.kind == T_WORD && i < ST_ARRAY_LEN(banned); i++) {
        if (is_word(&lx->t, banned[i])) {
            return fail(lx, "'%.*s' is not accepted in an index statement", shown_len(&lx->t),
                        lx->t.p);
        }
    }
    return true;
}

/* Copies the source text from p up to the current token into out[cap]. */
static bool keep_text(lexer *lx, const char *p, const char *end, char *out, size_t cap)
{
    size_t n = (size_t)(end - p);
    if (n >= cap) {
        return fail(lx, "name longer than %zu bytes", cap - 1);
    }
    memcpy(out, p, n);
    out[n] = '\0';
    return true;
}

static bool fail_at(lexer *lx, const char *what)
{
    if (lx->t.kind == T_SEMI) {
        return fail(lx, "a semicolon is only accepted at the very end (one statement)");
    }
    return fail(lx, "expected %s, found '%.*s'", what, shown_len(&lx->t), shown(&lx->t));
}

/* schema.table (up to three dotted parts), each part a name or a quoted
 * name; its text is kept as written for the INVALID-index check. */
static bool parse_table(lexer *lx, char *out, size_t cap)
{
    const char *start = lx->t.p;
    const char *end = start;
    for (int part = 0;; part++) {
        if (!is_ident(&lx->t) || !check_word(lx)) {
            return fail_at(lx, "a table name");
        }
        end = lx->t.p + lx->t.n;
        if (!next(lx)) {
            return false;
        }
        if (!is_punct(&lx->t, '.') || part == 2) {
            break;
        }
        if (!next(lx)) {
            return false;
        }
    }
    return keep_text(lx, start, end, out, cap);
}

/* One token of a key list or a predicate: nesting tracked in *depth (a
 * ')' that closes nothing is refused), no semicolon, no banned word. */
static bool body_token(lexer *lx, int *depth, const char *what)
{
    if (lx->t.kind == T_SEMI) {
        return fail(lx, "a semicolon is only accepted at the very end (one statement)");
    }
    if (lx->t.kind == T_END) {
        return fail(lx, "unbalanced parentheses in %s", what);
    }
    if (!check_word(lx)) {
        return false;
    }
    *depth += is_punct(&lx->t, '(') ? 1 : is_punct(&lx->t, ')') ? -1 : 0;
    if (*depth < 0) {
        return fail(lx, "unbalanced parentheses in %s", what);
    }
    if (*depth > 32) {
        return fail(lx, "%s nested more than 32 deep", what);
    }
    return next(lx);
}

/* "( ... )" with at least one token inside. */
static bool parse_keys(lexer *lx)
{
    int depth = 1;
    size_t inside = 0;
    if (!is_punct(&lx->t, '(')) {
        return fail_at(lx, "'(' and the index keys");
    }
    if (!next(lx)) {
        return false;
    }
    while (depth > 0) {
        if (!body_token(lx, &depth, "the index keys")) {
            return false;
        }
        inside++;
    }
    return inside > 1 ? true : fail(lx, "no index keys");
}

/* "( column, ... )": plain names only. */
static bool parse_include(lexer *lx)
{
    if (!is_punct(&lx->t, '(')) {
        return fail_at(lx, "'(' after INCLUDE");
    }
    if (!next(lx)) {
        return false;
    }
    for (;;) {
        if (!is_ident(&lx->t) || !check_word(lx)) {
            return fail_at(lx, "a column name in INCLUDE");
        }
        if (!next(lx)) {
            return false;
        }
        if (is_punct(&lx->t, ')')) {
            return next(lx);
        }
        if (!is_punct(&lx->t, ',')) {
            return fail_at(lx, "',' or ')' in INCLUDE");
        }
        if (!next(lx)) {
            return false;
        }
    }
}

/* The predicate: every token up to an optional final semicolon. */
static bool parse_where(lexer *lx)
{
    int depth = 0;
    size_t n = 0;
    while (lx->t.kind != T_END && !(lx->t.kind == T_SEMI && depth == 0)) {
        if (!body_token(lx, &depth, "WHERE")) {
            return false;
        }
        n++;
    }
    if (depth != 0) {
        return fail(lx, "unbalanced parentheses in WHERE");
    }
    return n > 0 ? true : fail(lx, "WHERE without a predicate");
}

/* CREATE INDEX CONCURRENTLY [IF NOT EXISTS] [name] ON */
static bool parse_head(lexer *lx, st_index_stmt *st)
{
    bool if_not_exists = false;
    if (!next(lx) || !expect_word(lx, "CREATE")) {
        return false;
    }
    if (is_word(&lx->t, "UNIQUE")) {
        return fail(lx, "only CREATE INDEX is accepted, not CREATE UNIQUE INDEX");
    }
    if (!expect_word(lx, "INDEX") || !expect_word(lx, "CONCURRENTLY")) {
        return false;
    }
    if (is_word(&lx->t, "IF")) {
        if (!next(lx) || !expect_word(lx, "NOT") || !expect_word(lx, "EXISTS")) {
            return false;
        }
        if_not_exists = true;
    }
    if (!is_word(&lx->t, "ON")) {
        if (!is_ident(&lx->t) || !check_word(lx) ||
            !keep_text(lx, lx->t.p, lx->t.p + lx->t.n, st->name, sizeof(st->name))) {
            return fail_at(lx, "an index name or ON");
        }
        if (!next(lx)) {
            return false;
        }
    } else if (if_not_exists) {
        return fail(lx, "IF NOT EXISTS needs an index name");
    }
    return expect_word(lx, "ON");
}

/* [ONLY] table [USING method] (keys) [INCLUDE (columns)] [WHERE predicate] [;] */
static bool parse_body(lexer *lx, st_index_stmt *st)
{
    bool method = false;
    if (is_word(&lx->t, "ONLY") && !next(lx)) {
        return false;
    }
    if (!parse_table(lx, st->table, sizeof(st->table))) {
        return false;
    }
    if (is_word(&lx->t, "USING")) {
        if (!next(lx)) {
            return false;
        }
        for (size_t i = 0; i < ST_ARRAY_LEN(methods); i++) {
            method |= is_word(&lx->t, methods[i]);
        }
        if (!method) {
            return fail_at(lx, "an index method (btree, hash, gist, spgist, gin, brin)");
        }
        if (!next(lx)) {
            return false;
        }
    }
    if (!parse_keys(lx)) {
        return false;
    }
    if (is_word(&lx->t, "INCLUDE") && (!next(lx) || !parse_include(lx))) {
        return false;
    }
    if (is_word(&lx->t, "WHERE") && (!next(lx) || !parse_where(lx))) {
        return false;
    }
    if (lx->t.kind == T_SEMI && !next(lx)) {
        return false;
    }
    if (lx->t.kind != T_END) {
        return fail(lx, "only one statement is accepted: unexpected '%.*s' at byte %zu",
                    shown_len(&lx->t), lx->t.p, (size_t)(lx->t.p - lx->s));
    }
    return true;
}

int st_index_sql_check(const char *sql, st_index_stmt *out, char *why, size_t cap)
{
    char scratch[8];
    lexer lx = {sql,
                0,
                0,
                {T_END, sql, 0},
                why != NULL ? why : scratch,
                why != NULL ? cap : sizeof(scratch),
                false};
    st_index_stmt st;
    memset(&st, 0, sizeof(st));
    if (sql == NULL || (lx.n = strlen(sql)) == 0) {
        fail(&lx, "empty statement");
    } else if (lx.n > ST_INDEX_MAX_SQL) {
        fail(&lx, "statement longer than %d bytes", ST_INDEX_MAX_SQL);
    } else if (!st_utf8_valid(sql, lx.n)) {
        fail(&lx, "statement is not valid UTF-8");
    } else if (parse_head(&lx, &st) && parse_body(&lx, &st)) {
        if (out != NULL) {
            *out = st;
        }
        return ST_OK;
    }
    return ST_EINVAL;
}
