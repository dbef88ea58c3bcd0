/* Reads normalized SQL statements (pg_stat_statements text, constants as
 * $n) just enough for the database and function rules: the columns a WHERE
 * clause filters on, the relations and joins, and two rewrites. A bounded
 * tokenizer and a small recursive reader; never allocates. */
#include "rules_checks.h"

#include "err.h"
#include "util.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 32 /* parentheses and boolean nesting the reader follows */
#define MAX_SET 16   /* columns one boolean term may name */

enum tk {
    T_IDENT,
    T_QIDENT,
    T_STRING,
    T_NUMBER,
    T_PARAM,
    T_OP,
    T_LPAREN,
    T_RPAREN,
    T_LBRACK,
    T_RBRACK,
    T_COMMA,
    T_DOT,
    T_CAST,
    T_SEMI,
};

typedef struct tok {
    uint8_t k;
    uint16_t off;
    uint16_t len;
} tok;

typedef struct sqlx {
    const char *s;
    size_t n;
    tok t[ST_SQL_MAX_TOKENS];
    size_t nt;
    bool broken; /* cut text: unterminated quote or unbalanced parentheses */
    bool cut;    /* longer than ST_SQL_MAX_TEXT or ST_SQL_MAX_TOKENS */
} sqlx;

/* ---- tokenizer ---- */

static bool ident_start(unsigned char c)
{
    return isalpha(c) || c == '_' || c >= 0x80;
}

static bool ident_char(unsigned char c)
{
    return isalnum(c) || c == '_' || c == '$' || c >= 0x80;
}

static bool op_char(char c)
{
    return c != '\0' && strchr("+-*/<>=~!@#%^&|`?", c) != NULL;
}

static bool comment_at(const char *s, size_t n, size_t i)
{
    return i + 1 < n && ((s[i] == '-' && s[i + 1] == '-') || (s[i] == '/' && s[i + 1] == '*'));
}

static size_t skip_space(sqlx *x, size_t i)
{
    const char *s = x->s;
    for (;;) {
        while (i < x->n && isspace((unsigned char)s[i])) {
            i++;
        }
        if (!comment_at(s, x->n, i)) {
            return i;
        }
        if (s[i] == '-') {
            while (i < x->n && s[i] != '\n') {
                i++;
            }
            continue;
        }
        for (i += 2; i + 1 < x->n && !(s[i] == '*' && s[i + 1] == '/'); i++) {
        }
        x->broken |= i + 1 >= x->n;
        i = i + 1 < x->n ? i + 2 : x->n;
    }
}

/* A quoted run from the opening quote at i; q doubled stays inside. */
static size_t quoted(sqlx *x, size_t i, char q, bool backslash)
{
    for (i++; i < x->n; i++) {
        if (backslash && x->s[i] == '\\') {
            i++;
        } else if (x->s[i] == q && i + 1 < x->n && x->s[i + 1] == q) {
            i++;
        } else if (x->s[i] == q) {
            return i + 1;
        }
    }
    x->broken = true;
    return x->n;
}

/* $1 (a parameter), $tag$...$tag$ (a string) or a lone '$'. */
static size_t dollar(sqlx *x, size_t i, uint8_t *kind)
{
    size_t j = i + 1;
    if (j < x->n && isdigit((unsigned char)x->s[j])) {
        while (j < x->n && isdigit((unsigned char)x->s[j])) {
            j++;
        }
        *kind = T_PARAM;
        return j;
    }
    while (j < x->n && x->s[j] != '$' && ident_char((unsigned char)x->s[j])) {
        j++;
    }
    if (j >= x->n || x->s[j] != '$') {
        *kind = T_OP;
        return i + 1;
    }
    *kind = T_STRING;
    for (size_t k = j + 1; k + (j - i) < x->n; k++) {
        if (memcmp(x->s + k, x->s + i, j - i + 1) == 0) {
            return k + (j - i) + 1;
        }
    }
    x->broken = true;
    return x->n;
}

/* PostgreSQL's operator rule: a multi-character operator may not end in +
 * or - unless it holds one of ~!@#%^&|`? (so "=-1" is "=" then "-1"). */
static size_t op_end(const sqlx *x, size_t i)
{
    size_t j = i;
    bool special = false;
    while (j < x->n && op_char(x->s[j]) && (j == i || !comment_at(x->s, x->n, j))) {
        special |= strchr("~!@#%^&|`?", x->s[j]) != NULL;
        j++;
    }
    while (!special && j - i > 1 && (x->s[j - 1] == '+' || x->s[j - 1] == '-')) {
        j--;
    }
    return j;
}

static size_t number_end(const sqlx *x, size_t i)
{
    while (i < x->n && (isdigit((unsigned char)x->s[i]) || x->s[i] == '.')) {
        i++;
    }
    if (i < x->n && (x->s[i] == 'e' || x->s[i] == 'E')) {
        i += i + 1 < x->n && (x->s[i + 1] == '+' || x->s[i + 1] == '-') ? 2 : 1;
        while (i < x->n && isdigit((unsigned char)x->s[i])) {
            i++;
        }
    }
    return i;
}

static size_t punct(const sqlx *x, size_t i, uint8_t *kind)
{
    static const char chars[] = "()[],;.";
    static const uint8_t kinds[] = {T_LPAREN, T_RPAREN, T_LBRACK, T_RBRACK, T_COMMA, T_SEMI, T_DOT};
    const char *p = strchr(chars, x->s[i]);
    if (p != NULL) {
        *kind = kinds[p - chars];
        return i + 1;
    }
    if (x->s[i] == ':' && i + 1 < x->n && x->s[i + 1] == ':') {
        *kind = T_CAST;
        return i + 2;
    }
    *kind = T_OP;
    return op_char(x->s[i]) ? op_end(x, i) : i + 1;
}

/* One token from i (not white space); returns its end. */
static size_t lex_one(sqlx *x, size_t i, uint8_t *kind)
{
    unsigned char c = (unsigned char)x->s[i];
    bool estr = (c == 'e' || c == 'E') && i + 1 < x->n && x->s[i + 1] == '\'';
    if (estr || c == '\'') {
        *kind = T_STRING;
        return quoted(x, i + estr, '\'', estr);
    }
    if (c == '"') {
        *kind = T_QIDENT;
        return quoted(x, i, '"', false);
    }
    if (ident_start(c)) {
        size_t j = i;
        while (j < x->n && ident_char((unsigned char)x->s[j])) {
            j++;
        }
        *kind = T_IDENT;
        return j;
    }
    if (isdigit(c) || (c == '.' && i + 1 < x->n && isdigit((unsigned char)x->s[i + 1]))) {
        *kind = T_NUMBER;
        return number_end(x, i);
    }
    if (c == '$') {
        return dollar(x, i, kind);
    }
    return punct(x, i, kind);
}

static void lex(sqlx *x, const char *sql)
{
    size_t i = 0;
    int depth = 0;
    x->broken = false;
    x->s = sql != NULL ? sql : "";
    x->n = strnlen(x->s, ST_SQL_MAX_TEXT + 1);
    x->cut = x->n > ST_SQL_MAX_TEXT;
    x->n = ST_MIN(x->n, ST_SQL_MAX_TEXT);
    x->nt = 0;
    while ((i = skip_space(x, i)) < x->n) {
        uint8_t kind;
        size_t end = lex_one(x, i, &kind);
        if (x->nt >= ST_SQL_MAX_TOKENS) {
            x->cut = true;
            break;
        }
        x->t[x->nt++] = (tok){kind, (uint16_t)i, (uint16_t)(end - i)};
        depth += kind == T_LPAREN ? 1 : (kind == T_RPAREN ? -1 : 0);
        x->broken |= depth < 0;
        i = end;
    }
    x->broken |= depth != 0;
}

/* ---- token tests ---- */

static bool is_kind(const sqlx *x, size_t i, int k)
{
    return i < x->nt && x->t[i].k == k;
}

static bool is_kw(const sqlx *x, size_t i, const char *kw)
{
    size_t n = strlen(kw);
    return is_kind(x, i, T_IDENT) && x->t[i].len == n &&
           strncasecmp(x->s + x->t[i].off, kw, n) == 0;
}

static bool is_any_kw(const sqlx *x, size_t i, const char *const *kws)
{
    for (size_t k = 0; kws[k] != NULL; k++) {
        if (is_kw(x, i, kws[k])) {
            return true;
        }
    }
    return false;
}

static bool is_op(const sqlx *x, size_t i, const char *op)
{
    size_t n = strlen(op);
    return is_kind(x, i, T_OP) && x->t[i].len == n && memcmp(x->s + x->t[i].off, op, n) == 0;
}

static bool is_name(const sqlx *x, size_t i)
{
    return is_kind(x, i, T_IDENT) || is_kind(x, i, T_QIDENT);
}

/* The index after the group opened at i ('(' or '['); nt when unclosed. */
static size_t skip_group(const sqlx *x, size_t i)
{
    int depth = 0;
    for (; i < x->nt; i++) {
        uint8_t k = x->t[i].k;
        depth += (k == T_LPAREN || k == T_LBRACK) ? 1 : 0;
        depth -= (k == T_RPAREN || k == T_RBRACK) ? 1 : 0;
        if (depth <= 0) {
            return i + 1;
        }
    }
    return x->nt;
}

/* A name as PostgreSQL sees it: unquoted lower-cased, quotes removed.
 * false when it does not fit. */
static bool tok_name(const sqlx *x, size_t i, char *out, size_t cap)
{
    const char *p = x->s + x->t[i].off;
    size_t n = x->t[i].len;
    size_t k = 0;
    bool q = x->t[i].k == T_QIDENT;
    if (q) {
        p++;
        n = n >= 2 && p[n - 2] == '"' ? n - 2 : n - 1;
    }
    for (size_t j = 0; j < n; j++) {
        if (k + 1 >= cap) {
            return false;
        }
        out[k++] = q ? p[j] : (char)tolower((unsigned char)p[j]);
        j += q && p[j] == '"' && j + 1 < n && p[j + 1] == '"';
    }
    out[k] = '\0';
    return k > 0;
}

static bool name_eq(const sqlx *x, size_t i, const char *name)
{
    char buf[ST_SQL_IDENT_MAX];
    return tok_name(x, i, buf, sizeof(buf)) && strcmp(buf, name) == 0;
}

static bool same_name(const sqlx *x, size_t a, size_t b)
{
    char buf[ST_SQL_IDENT_MAX];
    return tok_name(x, a, buf, sizeof(buf)) && name_eq(x, b, buf);
}

/* ---- relations ---- */

typedef struct rel {
    int name;   /* token of the table name (last part); -1: subquery or function */
    int schema; /* token of its schema, -1 */
    int alias;  /* token of its alias, -1 */
} rel;

typedef struct rels {
    rel r[ST_SQL_MAX_TABLES];
    size_t n;
    size_t joins;
} rels;

static const char *const clause_end[] = {
    "where",  "group",     "order",  "limit", "having", "union", "intersect", "except",
    "window", "returning", "offset", "fetch", "for",    "set",   "values",    NULL};
static const char *const alias_stop[] = {
    "where",   "join",      "inner",       "left",   "right",   "full",      "cross",
    "natural", "on",        "using",       "group",  "order",   "limit",     "having",
    "union",   "intersect", "except",      "window", "set",     "returning", "offset",
    "fetch",   "for",       "tablesample", "outer",  "lateral", "values",    NULL};

/* A relation after FROM, JOIN, UPDATE or a FROM-list comma at i. A
 * subquery is left to the caller to descend into. */
static size_t rel_at(const sqlx *x, size_t i, rels *rs)
{
    rel r = {-1, -1, -1};
    while (is_kw(x, i, "only") || is_kw(x, i, "lateral")) {
        i++;
    }
    if (is_name(x, i) && !is_any_kw(x, i, alias_stop)) {
        r.name = (int)i++;
        while (is_kind(x, i, T_DOT) && is_name(x, i + 1)) {
            r.schema = r.name;
            r.name = (int)(i + 1);
            i += 2;
        }
        if (is_kind(x, i, T_LPAREN)) { /* a function in FROM */
            i = skip_group(x, i);
            r.name = r.schema = -1;
        }
        i += is_kw(x, i, "as");
        if (is_name(x, i) && !is_any_kw(x, i, alias_stop)) {
            r.alias = (int)i++;
        }
    }
    if (rs->n < ST_SQL_MAX_TABLES) {
        rs->r[rs->n++] = r;
    }
    return i;
}

/* Whether a FROM at i starts a relation list: not "IS DISTINCT FROM" and
 * not the FROM of EXTRACT(x FROM y) and friends (those sit in groups that
 * are no subquery, which the caller tracks). */
static bool from_here(const sqlx *x, size_t i)
{
    return is_kw(x, i, "from") && !(i > 0 && is_kw(x, i - 1, "distinct"));
}

static bool update_here(const sqlx *x, size_t i)
{
    return is_kw(x, i, "update") && !(i > 0 && (is_kw(x, i - 1, "for") || is_kw(x, i - 1, "do") ||
                                                is_kw(x, i - 1, "key") || is_kw(x, i - 1, "no")));
}

/* Every relation at every depth; joins are JOIN keywords and commas of a
 * FROM list. */
static void scan_rels(const sqlx *x, rels *rs)
{
    bool in_from[MAX_DEPTH] = {false};
    bool sub[MAX_DEPTH] = {true};
    int d = 0;
    memset(rs, 0, sizeof(*rs));
    for (size_t i = 0; i < x->nt; i++) {
        size_t next = i;
        if (is_kind(x, i, T_LPAREN) || is_kind(x, i, T_RPAREN)) {
            d += is_kind(x, i, T_LPAREN) ? 1 : (d > 0 ? -1 : 0);
            if (is_kind(x, i, T_LPAREN) && d < MAX_DEPTH) {
                in_from[d] = false;
                sub[d] = is_kw(x, i + 1, "select") || is_kw(x, i + 1, "with");
            }
            continue;
        }
        if (d >= MAX_DEPTH || !sub[d]) {
            continue;
        }
        if (from_here(x, i) || update_here(x, i)) {
            in_from[d] = is_kw(x, i, "from");
            next = rel_at(x, i + 1, rs);
        } else if (is_kw(x, i, "join") || (is_kind(x, i, T_COMMA) && in_from[d])) {
            rs->joins++;
            next = rel_at(x, i + 1, rs);
        } else if (is_any_kw(x, i, clause_end)) {
            in_from[d] = false;
        }
        i = next > i ? next - 1 : i;
    }
}

static bool rel_name(const sqlx *x, const rel *r, char *out, size_t cap)
{
    char a[ST_SQL_IDENT_MAX];
    char b[ST_SQL_IDENT_MAX];
    if (r->name < 0 || !tok_name(x, (size_t)r->name, b, sizeof(b))) {
        return false;
    }
    if (r->schema >= 0 && tok_name(x, (size_t)r->schema, a, sizeof(a)) && strcmp(a, "public")) {
        return snprintf(out, cap, "%s.%s", a, b) < (int)cap;
    }
    return snprintf(out, cap, "%s", b) < (int)cap;
}

/* 1 when the qualifier token q names target (as table or alias), -1 when
 * it names another relation, 0 when unknown. */
static int qual_is(const sqlx *x, const rels *rs, size_t q, const char *target)
{
    for (size_t k = 0; k < rs->n; k++) {
        const rel *r = &rs->r[k];
        bool hit = (r->alias >= 0 && same_name(x, (size_t)r->alias, q)) ||
                   (r->alias < 0 && r->name >= 0 && same_name(x, (size_t)r->name, q));
        if (hit) {
            return r->name >= 0 && name_eq(x, (size_t)r->name, target) ? 1 : -1;
        }
    }
    return 0;
}

/* The last part of a "schema.table" label, or the first relation's name. */
static bool target_of(const sqlx *x, const rels *rs, const char *table, char *out, size_t cap)
{
    if (table != NULL && table[0] != '\0') {
        const char *dot = strrchr(table, '.');
        return snprintf(out, cap, "%s", dot != NULL ? dot + 1 : table) < (int)cap;
    }
    for (size_t k = 0; k < rs->n; k++) {
        if (rs->r[k].name >= 0) {
            return tok_name(x, (size_t)rs->r[k].name, out, cap);
        }
    }
    return false;
}

void st_sql_tables_of(const char *sql, st_sql_tables *out)
{
    sqlx x;
    rels rs;
    memset(out, 0, sizeof(*out));
    lex(&x, sql);
    scan_rels(&x, &rs);
    out->joins = rs.joins;
    for (size_t k = 0; k < rs.n; k++) {
        char name[sizeof(out->name[0])];
        bool seen = !rel_name(&x, &rs.r[k], name, sizeof(name));
        for (size_t j = 0; !seen && j < out->n; j++) {
            seen = strcmp(out->name[j], name) == 0;
        }
        if (!seen && out->n < ST_SQL_MAX_TABLES) {
            memcpy(out->name[out->n++], name, sizeof(name));
        }
    }
}

/* ---- the top-level clauses ---- */

static const char *const where_end[] = {"group",     "order", "limit", "offset",    "having",
                                        "returning", "for",   "union", "intersect", "except",
                                        "window",    "fetch", NULL};

/* The body [from, to) of the top-level WHERE. */
static bool where_span(const sqlx *x, size_t *from, size_t *to)
{
    int d = 0;
    bool in = false;
    for (size_t i = 0; i < x->nt; i++) {
        d += is_kind(x, i, T_LPAREN) ? 1 : (is_kind(x, i, T_RPAREN) ? -1 : 0);
        if (d < 0 || (d == 0 && in && (is_kind(x, i, T_SEMI) || is_any_kw(x, i, where_end)))) {
            *to = i;
            return in;
        }
        if (d == 0 && !in && is_kw(x, i, "where")) {
            in = true;
            *from = i + 1;
        }
    }
    *to = x->nt;
    return in;
}

/* The first top-level token of one of kws, nt when none. */
static size_t find_top(const sqlx *x, size_t from, const char *const *kws)
{
    int d = 0;
    for (size_t i = from; i < x->nt; i++) {
        d += is_kind(x, i, T_LPAREN) ? 1 : (is_kind(x, i, T_RPAREN) ? -1 : 0);
        if (d == 0 && is_any_kw(x, i, kws)) {
            return i;
        }
    }
    return x->nt;
}

bool st_sql_has_limit(const char *sql)
{
    static const char *const kws[] = {"limit", "fetch", NULL};
    sqlx x;
    lex(&x, sql);
    return find_top(&x, 0, kws) < x.nt;
}

bool st_sql_select_star(const char *sql)
{
    static const char *const sel[] = {"select", NULL};
    static const char *const from[] = {"from", NULL};
    sqlx x;
    size_t s;
    size_t f;
    lex(&x, sql);
    s = find_top(&x, 0, sel);
    f = find_top(&x, s, from);
    for (size_t i = s + 1; i < f && i < x.nt; i++) {
        bool after_item = is_kw(&x, i - 1, "select") || is_kw(&x, i - 1, "distinct") ||
                          is_kind(&x, i - 1, T_COMMA) || is_kind(&x, i - 1, T_DOT);
        if (is_op(&x, i, "*") && after_item) {
            return true;
        }
    }
    return false;
}

/* ---- WHERE predicates ---- */

typedef struct colref {
    uint16_t tok;
    bool eq;
} colref;

typedef struct cset {
    colref c[MAX_SET];
    size_t n;
} cset;

enum okind { O_OTHER, O_VALUE, O_COL };

typedef struct operand {
    enum okind kind;
    int tok;  /* the column name */
    int qual; /* its qualifier, -1 */
} operand;

enum opk { OP_NONE, OP_EQ, OP_RANGE, OP_IN, OP_BETWEEN, OP_NBETWEEN, OP_LIKE };

typedef struct wp {
    const sqlx *x;
    const rels *rs;
    size_t i;
    size_t end;
    int level;
    char target[ST_SQL_IDENT_MAX];
} wp;

static void cset_add(const sqlx *x, cset *s, size_t t, bool eq)
{
    for (size_t k = 0; k < s->n; k++) {
        if (same_name(x, s->c[k].tok, t)) {
            s->c[k].eq |= eq;
            return;
        }
    }
    if (s->n < MAX_SET) {
        s->c[s->n++] = (colref){(uint16_t)t, eq};
    }
}

static void cset_union(const sqlx *x, cset *a, const cset *b)
{
    for (size_t k = 0; k < b->n; k++) {
        cset_add(x, a, b->c[k].tok, b->c[k].eq);
    }
}

/* OR: only a column every branch filters on narrows the rows. */
static void cset_intersect(const sqlx *x, cset *a, const cset *b)
{
    size_t n = 0;
    for (size_t k = 0; k < a->n; k++) {
        for (size_t j = 0; j < b->n; j++) {
            if (same_name(x, a->c[k].tok, b->c[j].tok)) {
                a->c[n] = a->c[k];
                a->c[n++].eq = a->c[k].eq && b->c[j].eq;
                break;
            }
        }
    }
    a->n = n;
}

static const char *const value_words[] = {
    "null",         "true",      "false",          "current_date", "current_timestamp",
    "current_time", "localtime", "localtimestamp", "current_user", "session_user",
    "default",      NULL};
static const char *const typed_words[] = {"interval", "date",   "timestamp", "timestamptz",
                                          "time",     "timetz", NULL};
static const char *const op_words[] = {"and",   "or",   "not",     "in",     "between", "like",
                                       "ilike", "is",   "similar", "isnull", "notnull", "escape",
                                       "then",  "else", "end",     "when",   NULL};
static const char *const type_words[] = {"with",    "without",   "time", "zone",
                                         "varying", "precision", NULL};

static void operand_at(wp *p, operand *o);

static void skip_type(wp *p)
{
    const sqlx *x = p->x;
    p->i++; /* :: */
    if (is_name(x, p->i)) {
        p->i++;
    }
    while (is_kind(x, p->i, T_DOT) && is_name(x, p->i + 1)) {
        p->i += 2;
    }
    while (is_any_kw(x, p->i, type_words)) {
        p->i++;
    }
    while (is_kind(x, p->i, T_LPAREN) || is_kind(x, p->i, T_LBRACK)) {
        p->i = skip_group(x, p->i);
    }
}

/* CAST(column AS type) is the column. */
static void cast_call(wp *p, operand *o)
{
    size_t close = skip_group(p->x, p->i + 1);
    wp in = *p;
    in.i = p->i + 2;
    in.end = close > 0 ? close - 1 : close;
    in.level++;
    operand_at(&in, o);
    if (!is_kw(p->x, in.i, "as")) {
        o->kind = O_OTHER;
    }
    p->i = close;
}

static void column_at(wp *p, operand *o)
{
    const sqlx *x = p->x;
    o->kind = O_COL;
    o->tok = (int)p->i++;
    while (is_kind(x, p->i, T_DOT) && is_name(x, p->i + 1)) {
        o->qual = o->tok;
        o->tok = (int)(p->i + 1);
        p->i += 2;
    }
    if (is_kind(x, p->i, T_DOT) || is_kind(x, p->i, T_LPAREN)) {
        /* t.* or schema.function(...) */
        o->kind = is_kind(x, p->i, T_LPAREN) ? O_VALUE : O_OTHER;
        p->i = is_kind(x, p->i, T_LPAREN) ? skip_group(x, p->i) : p->i + 2;
    }
}

/* Names that start a value rather than a column. */
static bool word_value(wp *p, operand *o)
{
    const sqlx *x = p->x;
    size_t i = p->i;
    if (is_any_kw(x, i, value_words)) {
        p->i++;
    } else if (is_any_kw(x, i, typed_words) && is_kind(x, i + 1, T_STRING)) {
        p->i += 2;
    } else if (is_kw(x, i, "array") && is_kind(x, i + 1, T_LBRACK)) {
        p->i = skip_group(x, i + 1);
    } else if (is_kw(x, i, "case")) {
        static const char *const end[] = {"end", NULL};
        p->i = ST_MIN(find_top(x, i, end) + 1, x->nt);
        o->kind = O_OTHER;
        return true;
    } else if (is_kind(x, i + 1, T_LPAREN) && !is_kw(x, i, "cast") && !is_kw(x, i, "exists")) {
        p->i = skip_group(x, i + 1); /* f(...), ANY(...): a value for an index */
    } else {
        return false;
    }
    o->kind = O_VALUE;
    return true;
}

static void primary(wp *p, operand *o)
{
    const sqlx *x = p->x;
    o->kind = O_OTHER;
    o->tok = o->qual = -1;
    while (is_op(x, p->i, "-") || is_op(x, p->i, "+")) {
        p->i++;
    }
    if (p->i >= p->end || is_any_kw(x, p->i, op_words)) {
        return;
    }
    switch (x->t[p->i].k) {
    case T_PARAM:
    case T_STRING:
    case T_NUMBER:
        o->kind = O_VALUE;
        p->i++;
        return;
    case T_LPAREN:
        o->kind = is_kw(x, p->i + 1, "select") ? O_VALUE : O_OTHER;
        p->i = skip_group(x, p->i);
        return;
    case T_IDENT:
        if (is_kw(x, p->i, "cast") && is_kind(x, p->i + 1, T_LPAREN)) {
            cast_call(p, o);
            return;
        }
        if (is_kw(x, p->i, "exists") || word_value(p, o)) {
            p->i = is_kw(x, p->i, "exists") ? skip_group(x, p->i + 1) : p->i;
            return;
        }
        column_at(p, o);
        return;
    case T_QIDENT:
        column_at(p, o);
        return;
    default:
        p->i++;
        return;
    }
}

static bool arith_op(const sqlx *x, size_t i)
{
    static const char *const ops[] = {"+", "-", "*", "/", "%", "||"};
    for (size_t k = 0; k < ST_ARRAY_LEN(ops); k++) {
        if (is_op(x, i, ops[k])) {
            return true;
        }
    }
    return false;
}

/* An operand with its casts, COLLATE, subscripts and arithmetic. */
static void operand_at(wp *p, operand *o)
{
    const sqlx *x = p->x;
    if (p->level >= MAX_DEPTH) {
        o->kind = O_OTHER;
        p->i = p->end;
        return;
    }
    primary(p, o);
    while (p->i < p->end) {
        operand r;
        if (is_kind(x, p->i, T_CAST)) {
            skip_type(p);
        } else if (is_kw(x, p->i, "collate")) {
            p->i += 2;
        } else if (is_kind(x, p->i, T_LBRACK)) {
            p->i = skip_group(x, p->i);
            o->kind = O_OTHER;
        } else if (arith_op(x, p->i)) {
            p->i++;
            primary(p, &r);
            o->kind = o->kind == O_VALUE && r.kind == O_VALUE ? O_VALUE : O_OTHER;
        } else {
            return;
        }
    }
}

static enum opk read_op(wp *p)
{
    const sqlx *x = p->x;
    size_t i = p->i;
    if (is_op(x, i, "=") || is_op(x, i, "==")) {
        p->i++;
        return OP_EQ;
    }
    if (is_op(x, i, "<") || is_op(x, i, "<=") || is_op(x, i, ">") || is_op(x, i, ">=")) {
        p->i++;
        return OP_RANGE;
    }
    if (is_kw(x, i, "in") || is_kw(x, i, "between") || is_kw(x, i, "like")) {
        p->i += 1 + is_kw(x, i + 1, "symmetric");
        return is_kw(x, i, "in") ? OP_IN : (is_kw(x, i, "like") ? OP_LIKE : OP_BETWEEN);
    }
    if (is_kw(x, i, "not")) {
        p->i += 2;
        return is_kw(x, i + 1, "between") ? OP_NBETWEEN : OP_NONE;
    }
    if (is_kind(x, i, T_OP)) {
        p->i++;
    }
    return OP_NONE;
}

/* To the end of the predicate: the next AND/OR of this level (BETWEEN's
 * own AND aside) or the closing parenthesis. */
static void skip_rest(wp *p, bool between)
{
    const sqlx *x = p->x;
    while (p->i < p->end && !is_kind(x, p->i, T_RPAREN)) {
        if (is_kind(x, p->i, T_LPAREN) || is_kind(x, p->i, T_LBRACK)) {
            p->i = skip_group(x, p->i);
            continue;
        }
        if ((is_kw(x, p->i, "and") && !between) || is_kw(x, p->i, "or")) {
            return;
        }
        between = is_kw(x, p->i, "and") ? false : (between || is_kw(x, p->i, "between"));
        p->i++;
    }
}

static bool ours(const wp *p, const operand *o)
{
    return o->kind == O_COL &&
           (o->qual < 0 || qual_is(p->x, p->rs, (size_t)o->qual, p->target) > 0);
}

/* LIKE 'abc%' can use a btree; '%abc' and a $n pattern cannot be known to. */
static bool like_prefix(const sqlx *x, size_t i)
{
    const char *s;
    if (!is_kind(x, i, T_STRING) || x->t[i].len < 3) {
        return false;
    }
    s = x->s + x->t[i].off;
    s += (*s == 'e' || *s == 'E') ? 2 : 1;
    return *s != '%' && *s != '_' && *s != '\'';
}

static void predicate(wp *p, cset *out)
{
    operand l;
    operand r;
    operand r2;
    enum opk op;
    operand_at(p, &l);
    op = read_op(p);
    if (op == OP_IN) {
        p->i = is_kind(p->x, p->i, T_LPAREN) ? skip_group(p->x, p->i) : p->i;
        if (ours(p, &l)) {
            cset_add(p->x, out, (size_t)l.tok, true);
        }
    } else if (op == OP_LIKE) {
        if (ours(p, &l) && like_prefix(p->x, p->i)) {
            cset_add(p->x, out, (size_t)l.tok, false);
        }
    } else if (op == OP_BETWEEN) {
        operand_at(p, &r);
        p->i += is_kw(p->x, p->i, "and");
        operand_at(p, &r2);
        if (ours(p, &l) && r.kind == O_VALUE && r2.kind == O_VALUE) {
            cset_add(p->x, out, (size_t)l.tok, false);
        }
    } else if (op == OP_EQ || op == OP_RANGE) {
        operand_at(p, &r);
        if (r.kind == O_VALUE && ours(p, &l)) {
            cset_add(p->x, out, (size_t)l.tok, op == OP_EQ);
        } else if (l.kind == O_VALUE && ours(p, &r)) {
            cset_add(p->x, out, (size_t)r.tok, op == OP_EQ);
        }
    }
    skip_rest(p, op == OP_NBETWEEN);
}

static bool boundary(const wp *p, size_t i)
{
    return i >= p->end || is_kw(p->x, i, "and") || is_kw(p->x, i, "or") ||
           is_kind(p->x, i, T_RPAREN);
}

static void parse_or(wp *p, cset *out);

static void parse_factor(wp *p, cset *out)
{
    const sqlx *x = p->x;
    size_t start = p->i;
    out->n = 0;
    if (p->i >= p->end || p->level >= MAX_DEPTH) {
        p->i = p->end;
        return;
    }
    if (is_kw(x, p->i, "not")) { /* negations do not narrow through an index */
        cset dead;
        p->i++;
        p->level++;
        parse_factor(p, &dead);
        p->level--;
        return;
    }
    if (is_kind(x, p->i, T_LPAREN) && !is_kw(x, p->i + 1, "select")) {
        size_t close = skip_group(x, p->i);
        if (close <= p->end && boundary(p, close)) {
            wp in = *p;
            in.i = p->i + 1;
            in.end = close - 1;
            in.level++;
            parse_or(&in, out);
            p->i = close;
            return;
        }
    }
    predicate(p, out);
    if (p->i == start) {
        p->i++;
    }
}

static void parse_and(wp *p, cset *out)
{
    cset b;
    parse_factor(p, out);
    while (p->i < p->end && is_kw(p->x, p->i, "and")) {
        p->i++;
        parse_factor(p, &b);
        cset_union(p->x, out, &b);
    }
}

static void parse_or(wp *p, cset *out)
{
    cset b;
    parse_and(p, out);
    while (p->i < p->end && is_kw(p->x, p->i, "or")) {
        p->i++;
        parse_and(p, &b);
        cset_intersect(p->x, out, &b);
    }
}

static void emit_columns(const sqlx *x, const cset *s, st_sql_columns *out)
{
    for (int pass = 0; pass < 2; pass++) {
        for (size_t k = 0; k < s->n && out->n < ST_SQL_MAX_COLUMNS; k++) {
            if (s->c[k].eq != (pass == 0)) {
                continue;
            }
            if (tok_name(x, s->c[k].tok, out->name[out->n], sizeof(out->name[0]))) {
                out->eq[out->n++] = s->c[k].eq;
            }
        }
    }
}

void st_sql_index_columns(const char *sql, const char *table, st_sql_columns *out)
{
    sqlx x;
    rels rs;
    wp p;
    cset s;
    size_t from;
    size_t to;
    memset(out, 0, sizeof(*out));
    memset(&p, 0, sizeof(p));
    lex(&x, sql);
    scan_rels(&x, &rs);
    if (!where_span(&x, &from, &to) || !target_of(&x, &rs, table, p.target, sizeof(p.target))) {
        return;
    }
    p.x = &x;
    p.rs = &rs;
    p.i = from;
    p.end = to;
    parse_or(&p, &s);
    emit_columns(&x, &s, out);
}

/* ---- select list and rewrites ---- */

static const char *const select_kw[] = {"select", NULL};
static const char *const from_kw[] = {"from", NULL};

/* One plain select item "[q.]name [[AS] alias]" ending at a comma or f;
 * returns the index after it, or 0 when the item is anything else. */
static size_t select_item(const sqlx *x, size_t i, size_t f, size_t *col, int *qual, int *alias)
{
    if (!is_name(x, i) || is_any_kw(x, i, op_words)) {
        return 0;
    }
    *qual = *alias = -1;
    *col = i++;
    if (is_kind(x, i, T_DOT) && is_name(x, i + 1)) {
        *qual = (int)*col;
        *col = i + 1;
        i += 2;
    }
    i += is_kw(x, i, "as");
    if (i < f && is_name(x, i)) {
        *alias = (int)i++;
    }
    if (i < f && !is_kind(x, i, T_COMMA)) {
        return 0;
    }
    return i + 1;
}

void st_sql_select_columns(const char *sql, const char *table, st_sql_columns *out)
{
    sqlx x;
    rels rs;
    char target[ST_SQL_IDENT_MAX];
    size_t s;
    size_t f;
    size_t i;
    memset(out, 0, sizeof(*out));
    lex(&x, sql);
    scan_rels(&x, &rs);
    s = find_top(&x, 0, select_kw);
    f = find_top(&x, s, from_kw);
    if (f >= x.nt || !target_of(&x, &rs, table, target, sizeof(target))) {
        return;
    }
    for (i = s + 1 + is_kw(&x, s + 1, "distinct"); i < f;) {
        size_t col;
        int qual;
        int alias;
        size_t next = select_item(&x, i, f, &col, &qual, &alias);
        bool dup = false;
        if (next == 0) {
            out->n = 0;
            return;
        }
        i = next;
        if (qual >= 0 && qual_is(&x, &rs, (size_t)qual, target) <= 0) {
            continue;
        }
        for (size_t k = 0; k < out->n; k++) {
            dup |= name_eq(&x, col, out->name[k]);
        }
        if (!dup && out->n < ST_SQL_MAX_COLUMNS &&
            tok_name(&x, col, out->name[out->n], sizeof(out->name[0]))) {
            out->eq[out->n++] = false;
        }
    }
}

int st_sql_batch_rewrite(const char *sql, char *out, size_t cap)
{
    sqlx x;
    size_t from;
    size_t to;
    int d = 0;
    lex(&x, sql);
    if (x.cut || x.broken || !where_span(&x, &from, &to)) {
        return ST_ENOENT;
    }
    for (size_t i = from; i + 1 < to; i++) {
        st_rbuf b;
        size_t pend;
        d += is_kind(&x, i, T_LPAREN) ? 1 : (is_kind(&x, i, T_RPAREN) ? -1 : 0);
        if (d != 0 || i == from || !is_op(&x, i, "=") || !is_name(&x, i - 1) ||
            is_any_kw(&x, i - 1, op_words) || !is_kind(&x, i + 1, T_PARAM) ||
            is_kind(&x, i + 2, T_CAST)) {
            continue;
        }
        pend = (size_t)x.t[i + 1].off + x.t[i + 1].len;
        st_rbuf_init(&b, out, cap);
        st_rbuf_add(&b, x.s, x.t[i + 1].off);
        st_rbuf_puts(&b, "ANY(");
        st_rbuf_add(&b, x.s + x.t[i + 1].off, x.t[i + 1].len);
        st_rbuf_puts(&b, ")");
        st_rbuf_add(&b, x.s + pend, x.n - pend);
        return b.over ? ST_ETOOBIG : ST_OK;
    }
    return ST_ENOENT;
}

/* The highest $n among the first upto tokens. */
static int max_param(const sqlx *x, size_t upto)
{
    int m = 0;
    for (size_t i = 0; i < upto && i < x->nt; i++) {
        int v = 0;
        if (x->t[i].k != T_PARAM || x->t[i].len > 6) {
            continue;
        }
        for (size_t k = 1; k < x->t[i].len; k++) {
            v = v * 10 + (x->s[x->t[i].off + k] - '0');
        }
        m = ST_MAX(m, v);
    }
    return m;
}

static const char *const tail_kw[] = {"order", "limit", "offset", "fetch", "for", NULL};

/* The keyset key: the only ORDER BY item when it is a plain column (with
 * its direction), else "id" (qualified when the statement joins). */
static bool keyset_key(const sqlx *x, const rels *rs, size_t cut, st_rbuf *key, bool *desc)
{
    size_t i = cut + 1;
    size_t ks;
    *desc = false;
    if (!is_kw(x, cut, "order")) {
        const rel *r = &rs->r[0];
        int q = r->alias >= 0 ? r->alias : r->name;
        if (rs->n > 1 && q >= 0) {
            st_rbuf_add(key, x->s + x->t[q].off, x->t[q].len);
            st_rbuf_puts(key, ".");
        }
        st_rbuf_puts(key, "id");
        return true;
    }
    if (!is_kw(x, i++, "by") || !is_name(x, i)) {
        return false;
    }
    ks = i++;
    while (is_kind(x, i, T_DOT) && is_name(x, i + 1)) {
        i += 2;
    }
    st_rbuf_add(key, x->s + x->t[ks].off,
                (size_t)(x->t[i - 1].off + x->t[i - 1].len - x->t[ks].off));
    *desc = is_kw(x, i, "desc");
    i += is_kw(x, i, "desc") || is_kw(x, i, "asc");
    return i >= x->nt || is_kind(x, i, T_SEMI) ||
           (is_any_kw(x, i, tail_kw) && !is_kw(x, i, "order"));
}

/* The end of the text before the tail clauses, without trailing blanks. */
static size_t text_end(const sqlx *x, size_t cut)
{
    size_t e = cut < x->nt ? x->t[cut].off : x->n;
    while (e > 0 && (isspace((unsigned char)x->s[e - 1]) || x->s[e - 1] == ';')) {
        e--;
    }
    return e;
}

static bool top_or(const sqlx *x, size_t from, size_t to)
{
    int d = 0;
    for (size_t i = from; i < to; i++) {
        d += is_kind(x, i, T_LPAREN) ? 1 : (is_kind(x, i, T_RPAREN) ? -1 : 0);
        if (d == 0 && is_kw(x, i, "or")) {
            return true;
        }
    }
    return false;
}

int st_sql_keyset_rewrite(const char *sql, char *out, size_t cap)
{
    static const char *const not_plain[] = {"group",     "having", "union", "except",
                                            "intersect", "window", NULL};
    sqlx x;
    rels rs;
    char kbuf[2 * ST_SQL_IDENT_MAX + 8];
    st_rbuf key;
    st_rbuf b;
    size_t wf, wt, cut, end;
    bool desc;
    int n;
    lex(&x, sql);
    if (x.cut || x.broken || !is_kw(&x, 0, "select") || find_top(&x, 0, from_kw) >= x.nt ||
        find_top(&x, 0, not_plain) < x.nt) {
        return ST_ENOENT;
    }
    scan_rels(&x, &rs);
    cut = find_top(&x, 0, tail_kw);
    st_rbuf_init(&key, kbuf, sizeof(kbuf));
    if (rs.n == 0 || !keyset_key(&x, &rs, cut, &key, &desc) || key.over) {
        return ST_ENOENT;
    }
    n = max_param(&x, cut); /* a dropped LIMIT $n must not leave a gap */
    end = text_end(&x, cut);
    st_rbuf_init(&b, out, cap);
    if (where_span(&x, &wf, &wt) && top_or(&x, wf, wt)) {
        st_rbuf_add(&b, x.s, x.t[wf].off);
        st_rbuf_addf(&b, "(%.*s) AND ", (int)(end - x.t[wf].off), x.s + x.t[wf].off);
    } else {
        st_rbuf_add(&b, x.s, end);
        st_rbuf_puts(&b, where_span(&x, &wf, &wt) ? " AND " : " WHERE ");
    }
    st_rbuf_addf(&b, "%s %s $%d ORDER BY %s%s LIMIT $%d", kbuf, desc ? "<" : ">", n + 1, kbuf,
                 desc ? " DESC" : "", n + 2);
    return b.over ? ST_ETOOBIG : ST_OK;
}

/* Whether the select list between s and f is plain items whose output
 * names are distinct (a view needs unique column names). */
static bool view_columns_ok(const sqlx *x, size_t s, size_t f)
{
    size_t names[ST_SQL_MAX_TOKENS / 2];
    size_t n = 0;
    for (size_t i = s + 1 + is_kw(x, s + 1, "distinct"); i < f;) {
        size_t col;
        int qual;
        int alias;
        size_t next = select_item(x, i, f, &col, &qual, &alias);
        size_t out = alias >= 0 ? (size_t)alias : col;
        if (next == 0 || n >= ST_ARRAY_LEN(names)) {
            return false;
        }
        for (size_t k = 0; k < n; k++) {
            if (same_name(x, names[k], out)) {
                return false;
            }
        }
        names[n++] = out;
        i = next;
    }
    return n > 0;
}

int st_sql_view_body(const char *sql, char *out, size_t cap)
{
    static const char *const stop[] = {"where",  "group",  "order",  "limit", "offset",
                                       "fetch",  "for",    "having", "union", "intersect",
                                       "except", "window", NULL};
    sqlx x;
    st_rbuf b;
    size_t f;
    size_t cut;
    lex(&x, sql);
    if (x.cut || x.broken || !is_kw(&x, 0, "select")) {
        return ST_ENOENT;
    }
    f = find_top(&x, 0, from_kw);
    cut = find_top(&x, 0, stop);
    if (f >= x.nt || !view_columns_ok(&x, 0, f)) {
        return ST_ENOENT;
    }
    for (size_t i = 0; i < cut; i++) {
        if (x.t[i].k == T_PARAM) {
            return ST_ENOENT; /* a view cannot hold a parameter */
        }
    }
    st_rbuf_init(&b, out, cap);
    st_rbuf_add(&b, x.s, text_end(&x, cut));
    return b.over ? ST_ETOOBIG : ST_OK;
}
