/* Text helpers of the postgres sampler: statement text made into one clean
 * line for the query label, and the main table of a statement found with a
 * small tokenizer that knows PostgreSQL's quoting and comments. */
#include "postgres_sql.h"

#include "err.h"
#include "util.h"

#include <limits.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#define MAX_CTES 8       /* WITH names remembered per statement; more are not skipped */
#define MAX_NAME_PARTS 3 /* catalog.schema.table */

/* ---- characters and quoted spans, shared by both helpers ---- */

static bool ident_start(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

static bool ident_char(unsigned char c)
{
    return ident_start(c) || (c >= '0' && c <= '9') || c == '$';
}

/* Length of the valid UTF-8 character at p (1 to 4), 0 when invalid. */
static size_t utf8_len(const char *p, size_t avail)
{
    unsigned char c = (unsigned char)p[0];
    size_t n = c < 0x80                 ? 1
               : c >= 0xc2 && c <= 0xdf ? 2
               : c >= 0xe0 && c <= 0xef ? 3
               : c >= 0xf0 && c <= 0xf4 ? 4
                                        : 0;
    if (n == 0 || n > avail || (n > 1 && !st_utf8_valid(p, n))) {
        return 0;
    }
    return n;
}

/* Length of a dollar-quote tag ($$ or $tag$) at s[i], 0 when there is none.
 * A '$' inside an identifier (a$b) or before digits ($1) starts no tag. */
static size_t dollar_tag(const char *s, size_t len, size_t i)
{
    size_t j = i + 1;
    if (s[i] != '$' || (i > 0 && ident_char((unsigned char)s[i - 1]))) {
        return 0;
    }
    if (j < len && ident_start((unsigned char)s[j])) {
        while (j < len && ident_char((unsigned char)s[j]) && s[j] != '$') {
            j++;
        }
    }
    return j < len && s[j] == '$' ? j + 1 - i : 0;
}

/* Length of the quoted span ('string', "identifier", $tag$body$tag$) that
 * starts at s[i], 0 when none starts there. *closed tells whether it ends
 * before len; an unterminated span runs to the end. */
static size_t quoted_len(const char *s, size_t len, size_t i, bool *closed)
{
    char q = s[i];
    size_t tag = dollar_tag(s, len, i);
    /* E'...' strings take backslash escapes; E must not end an identifier. */
    bool esc = q == '\'' && i > 0 && (s[i - 1] == 'E' || s[i - 1] == 'e') &&
               (i < 2 || !ident_char((unsigned char)s[i - 2]));
    *closed = false;
    if (tag > 0) {
        for (size_t j = i + tag; j + tag <= len; j++) {
            if (memcmp(s + j, s + i, tag) == 0) {
                *closed = true;
                return j + tag - i;
            }
        }
        return len - i;
    }
    if (q != '\'' && q != '"') {
        return 0;
    }
    for (size_t j = i + 1; j < len; j++) {
        if (esc && s[j] == '\\') {
            j++;
        } else if (s[j] == q && j + 1 < len && s[j + 1] == q) {
            j++; /* a doubled quote stands for itself */
        } else if (s[j] == q) {
            *closed = true;
            return j + 1 - i;
        }
    }
    return len - i;
}

/* Length of the comment (-- to the end of the line, nested block) at s[i],
 * 0 when none starts there. */
static size_t comment_len(const char *s, size_t len, size_t i)
{
    size_t j = i + 2;
    int depth = 1;
    if (i + 1 >= len || !((s[i] == '-' && s[i + 1] == '-') || (s[i] == '/' && s[i + 1] == '*'))) {
        return 0;
    }
    if (s[i] == '-') {
        while (j < len && s[j] != '\n') {
            j++;
        }
        return j - i;
    }
    while (j < len && depth > 0) {
        if (j + 1 < len && s[j] == '/' && s[j + 1] == '*') {
            depth++;
            j++;
        } else if (j + 1 < len && s[j] == '*' && s[j + 1] == '/') {
            depth--;
            j++;
        }
        j++;
    }
    return j - i;
}

/* ---- normalizing ---- */

typedef struct writer {
    char *out;
    size_t room; /* bytes of text that fit, the NUL aside */
    size_t n;
    bool space; /* a space is due before the next character */
    bool full;
} writer;

static void put_space(writer *w)
{
    w->space = w->n > 0;
}

/* Appends one character p[0..n) (after a due space) unless it does not
 * fit; then nothing more is written, so a cut never splits a character. */
static void put_char(writer *w, const char *p, size_t n)
{
    size_t need = n + (w->space ? 1 : 0);
    if (w->full || w->n + need > w->room) {
        w->full = true;
        return;
    }
    if (w->space) {
        w->out[w->n++] = ' ';
        w->space = false;
    }
    memcpy(w->out + w->n, p, n);
    w->n += n;
}

/* Writes the character at in[i] and returns how many bytes it took. */
static size_t copy_char(writer *w, const char *in, size_t len, size_t i, bool quoted)
{
    unsigned char c = (unsigned char)in[i];
    size_t n;
    if (c <= ' ' || c == 0x7f) {
        /* White space and controls: collapsed outside quotes, one space inside. */
        if (quoted) {
            put_char(w, " ", 1);
        } else {
            put_space(w);
        }
        return 1;
    }
    n = utf8_len(in + i, len - i);
    if (n == 0) {
        put_char(w, "?", 1);
        return 1;
    }
    put_char(w, in + i, n);
    return n;
}

size_t st_pgsql_normalize(const char *in, size_t len, char *out, size_t cap)
{
    writer w = {out, cap > 0 ? cap - 1 : 0, 0, false, false};
    size_t i = 0;
    if (cap == 0) {
        return 0;
    }
    while (i < len && !w.full) {
        bool closed;
        size_t q = quoted_len(in, len, i, &closed);
        size_t c = q > 0 ? 0 : comment_len(in, len, i);
        if (q > 0) {
            for (size_t end = i + q; i < end && !w.full;) {
                i += copy_char(&w, in, end, i, true);
            }
        } else if (c > 0) {
            put_space(&w);
            i += c;
        } else {
            i += copy_char(&w, in, len, i, false);
        }
    }
    out[w.n] = '\0';
    return w.n;
}

/* ---- tokens ---- */

enum tok_kind { TOK_END, TOK_WORD, TOK_QUOTED, TOK_DOT, TOK_OPEN, TOK_CLOSE, TOK_COMMA, TOK_OTHER };

typedef struct tok {
    enum tok_kind kind;
    const char *p; /* a word, or the inside of a quoted identifier */
    size_t n;
} tok;

typedef struct scanner {
    const char *s;
    size_t len;
    size_t i;
} scanner;

static void skip_blank(scanner *sc)
{
    while (sc->i < sc->len) {
        size_t c = comment_len(sc->s, sc->len, sc->i);
        if (c > 0) {
            sc->i += c;
        } else if ((unsigned char)sc->s[sc->i] <= ' ') {
            sc->i++;
        } else {
            return;
        }
    }
}

/* The token after a quoted span or a word, number or parameter at sc->i. */
static tok span_tok(scanner *sc)
{
    const char *s = sc->s;
    size_t start = sc->i;
    bool closed;
    size_t q = quoted_len(s, sc->len, start, &closed);
    if (q > 0) {
        sc->i += q;
        if (!closed) {
            return (tok){TOK_END, NULL, 0}; /* unterminated: garbage from here on */
        }
        if (s[start] == '"') {
            return (tok){TOK_QUOTED, s + start + 1, q - 2};
        }
        return (tok){TOK_OTHER, s + start, q};
    }
    sc->i++;
    if (ident_start((unsigned char)s[start])) {
        while (sc->i < sc->len && ident_char((unsigned char)s[sc->i])) {
            sc->i++;
        }
        return (tok){TOK_WORD, s + start, sc->i - start};
    }
    /* Numbers (1.5e3) and parameters ($1) are one token, so '.' in them is
     * no name separator. */
    while (sc->i < sc->len && (ident_char((unsigned char)s[sc->i]) || s[sc->i] == '.')) {
        sc->i++;
    }
    return (tok){TOK_OTHER, s + start, sc->i - start};
}

static tok next_tok(scanner *sc)
{
    char c;
    skip_blank(sc);
    if (sc->i >= sc->len) {
        return (tok){TOK_END, NULL, 0};
    }
    c = sc->s[sc->i];
    if (c == '.' || c == '(' || c == ')' || c == ',') {
        sc->i++;
        return (tok){c == '.'   ? TOK_DOT
                     : c == '(' ? TOK_OPEN
                     : c == ')' ? TOK_CLOSE
                                : TOK_COMMA,
                     sc->s + sc->i - 1, 1};
    }
    if (c == '\'' || c == '"' || c == '$' || ident_start((unsigned char)c) ||
        (c >= '0' && c <= '9')) {
        return span_tok(sc);
    }
    sc->i++;
    return (tok){TOK_OTHER, sc->s + sc->i - 1, 1};
}

static tok peek_tok(const scanner *sc)
{
    scanner copy = *sc;
    return next_tok(&copy);
}

static bool word_is(tok t, const char *w)
{
    return t.kind == TOK_WORD && t.n == strlen(w) && strncasecmp(t.p, w, t.n) == 0;
}

static bool word_in(tok t, const char *const *words)
{
    for (size_t i = 0; words[i] != NULL; i++) {
        if (word_is(t, words[i])) {
            return true;
        }
    }
    return false;
}

/* Words that may follow FROM, UPDATE or INTO but name no table (FOR UPDATE
 * OF, ON CONFLICT DO UPDATE SET, INTO TEMP, COPY ... FROM STDIN). */
static const char *const not_a_table[] = {"select", "where",  "set",       "of",       "nowait",
                                          "skip",   "values", "default",   "on",       "stdin",
                                          "stdout", "temp",   "temporary", "unlogged", "table",
                                          "strict", "join",   "with",      "from",     NULL};

/* Clauses that end a FROM list. */
static const char *const from_list_end[] = {"where",  "group",     "having",    "window", "order",
                                            "limit",  "offset",    "fetch",     "for",    "union",
                                            "except", "intersect", "returning", "select", NULL};

/* ---- names ---- */

/* One identifier as PostgreSQL reads it: unquoted lower-cased, quoted kept
 * with "" undoubled. */
static int format_part(tok t, char *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < t.n; i++) {
        unsigned char c = (unsigned char)t.p[i];
        if (c < ' ' || c == 0x7f) {
            return ST_ENOENT;
        }
        if (t.kind == TOK_QUOTED && c == '"') {
            i++; /* the tokenizer only lets doubled quotes through */
        }
        if (n >= ST_PGSQL_MAX_IDENT || n + 1 >= cap) {
            return ST_ETOOBIG;
        }
        out[n++] = (char)(t.kind == TOK_WORD && c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
    }
    out[n] = '\0';
    return n > 0 && st_utf8_valid(out, n) ? ST_OK : ST_ENOENT;
}

/* "schema.table" from the last two parts, the public schema dropped. */
static int format_name(const tok *parts, size_t n, char *out, size_t cap)
{
    char schema[ST_PGSQL_MAX_IDENT + 1];
    char table[ST_PGSQL_MAX_IDENT + 1];
    size_t sl;
    size_t tl;
    int rv;
    if (n > 2) {
        parts += n - 2; /* a catalog (database) name says nothing here */
        n = 2;
    }
    if ((rv = format_part(parts[n - 1], table, sizeof(table))) != ST_OK) {
        return rv;
    }
    schema[0] = '\0';
    if (n == 2 && (rv = format_part(parts[0], schema, sizeof(schema))) != ST_OK) {
        return rv;
    }
    if (strcmp(schema, "public") == 0) {
        schema[0] = '\0';
    }
    sl = strlen(schema);
    tl = strlen(table);
    if (sl + tl + 2 > cap) {
        return ST_ETOOBIG;
    }
    if (sl > 0) {
        memcpy(out, schema, sl);
        out[sl++] = '.';
    }
    memcpy(out + sl, table, tl + 1);
    return ST_OK;
}

typedef struct ctes {
    char name[MAX_CTES][ST_PGSQL_MAX_IDENT + 1];
    size_t n;
} ctes;

static bool is_cte(const ctes *c, const char *name)
{
    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->name[i], name) == 0) {
            return true;
        }
    }
    return false;
}

/* True when the name just read is defined by WITH: name [(cols)] AS
 * [NOT] [MATERIALIZED] ( ... */
static bool defines_cte(scanner sc)
{
    tok t = next_tok(&sc);
    if (t.kind == TOK_OPEN) {
        while (t.kind != TOK_CLOSE && t.kind != TOK_END) {
            t = next_tok(&sc);
        }
        t = next_tok(&sc);
    }
    if (!word_is(t, "as")) {
        return false;
    }
    t = next_tok(&sc);
    if (word_is(t, "not")) {
        t = next_tok(&sc);
    }
    if (word_is(t, "materialized")) {
        t = next_tok(&sc);
    }
    return t.kind == TOK_OPEN;
}

static void remember_cte(ctes *c, tok t)
{
    if (c->n < MAX_CTES && format_part(t, c->name[c->n], sizeof(c->name[c->n])) == ST_OK) {
        c->n++;
    }
}

/* Reads [ONLY | LATERAL] name[.name[.name]] at the scanner into out. A
 * name followed by '(' after FROM is a function, not a table. */
static int read_relation(scanner *sc, bool from, char *out, size_t cap)
{
    tok parts[MAX_NAME_PARTS];
    size_t n = 0;
    tok t = next_tok(sc);
    if (word_is(t, "only") || word_is(t, "lateral")) {
        t = next_tok(sc);
    }
    for (;;) {
        if ((t.kind != TOK_WORD && t.kind != TOK_QUOTED) || word_in(t, not_a_table) ||
            n == MAX_NAME_PARTS) {
            return ST_ENOENT;
        }
        parts[n++] = t;
        if (peek_tok(sc).kind != TOK_DOT) {
            break;
        }
        next_tok(sc);
        t = next_tok(sc);
    }
    if (from && peek_tok(sc).kind == TOK_OPEN) {
        return ST_ENOENT;
    }
    return format_name(parts, n, out, cap);
}

/* Moves past the current FROM item to the next one (after ',' or JOIN);
 * false when the FROM list ends first. */
static bool next_from_item(scanner *sc)
{
    int depth = 0;
    for (tok t = next_tok(sc); t.kind != TOK_END; t = next_tok(sc)) {
        if (t.kind == TOK_OPEN) {
            depth++;
        } else if (t.kind == TOK_CLOSE) {
            if (depth-- == 0) {
                return false;
            }
        } else if (depth == 0 && (t.kind == TOK_COMMA || word_is(t, "join"))) {
            return true;
        } else if (depth == 0 && word_in(t, from_list_end)) {
            return false;
        }
    }
    return false;
}

/* The relation after the keyword kw; after FROM, WITH names are passed
 * over for the next item of the list. */
static int relation_after(scanner sc, tok kw, const ctes *c, char *out, size_t cap)
{
    bool from = word_is(kw, "from");
    for (;;) {
        int rv = read_relation(&sc, from, out, cap);
        if (rv != ST_OK || !from || !is_cte(c, out)) {
            return rv;
        }
        if (!next_from_item(&sc)) {
            return ST_ENOENT;
        }
    }
}

/* Statements whose FROM and INTO name tables; in utility statements they
 * name roles (REVOKE ... FROM PUBLIC) or cursors (FETCH ... FROM c). */
static const char *const table_statements[] = {"select", "insert", "update", "delete", "with",
                                               "merge",  "copy",   "values", NULL};

static bool reads_tables(scanner sc)
{
    tok t = next_tok(&sc);
    while (t.kind == TOK_OPEN) {
        t = next_tok(&sc);
    }
    return word_in(t, table_statements);
}

static bool names_relation(tok t, tok prev)
{
    /* "a IS DISTINCT FROM b" compares columns. */
    return (word_is(t, "from") && !word_is(prev, "distinct")) || word_is(t, "update") ||
           word_is(t, "into") || word_is(t, "copy");
}

int st_pgsql_main_table(const char *sql, char *out, size_t cap)
{
    scanner sc = {sql, sql != NULL ? strlen(sql) : 0, 0};
    ctes c = {.n = 0};
    char name[ST_PGSQL_TABLE_MAX];
    char best[ST_PGSQL_TABLE_MAX];
    int depth = 0;
    int best_depth = INT_MAX;
    int rv = ST_ENOENT;
    tok prev = {TOK_END, NULL, 0};
    if (!reads_tables(sc)) {
        return ST_ENOENT;
    }
    for (tok t = next_tok(&sc); t.kind != TOK_END; prev = t, t = next_tok(&sc)) {
        if (t.kind == TOK_OPEN || t.kind == TOK_CLOSE) {
            depth += t.kind == TOK_OPEN ? 1 : depth > 0 ? -1 : 0;
        } else if ((t.kind == TOK_WORD || t.kind == TOK_QUOTED) && defines_cte(sc)) {
            remember_cte(&c, t);
        } else if (depth < best_depth && names_relation(t, prev)) {
            /* The outermost query wins; within it, the first name. */
            int r = relation_after(sc, t, &c, name, sizeof(name));
            if (r != ST_ENOENT) {
                best_depth = depth; /* a name too long to report still wins */
                rv = r;
            }
            if (r == ST_OK) {
                memcpy(best, name, sizeof(best));
            }
        }
    }
    if (rv != ST_OK) {
        return rv;
    }
    if (strlen(best) >= cap) {
        return ST_ETOOBIG;
    }
    memcpy(out, best, strlen(best) + 1);
    return ST_OK;
}
