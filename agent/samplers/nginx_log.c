/* The nginx sampler's parsers: access-log lines in the `strata` log_format,
 * route normalisation (configured routes, then :id collapsing, capped), the
 * per-run aggregate that turns lines into series, and stub_status pages.
 * The line path is the hot one (>= 500,000 lines/s): no allocation per line. */
#include "nginx_log.h"

#include "err.h"
#include "log.h"
#include "sketch.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

#define NUM_MAX_DIGITS 18  /* integer digits of a decimal; fits uint64_t */
#define FRAC_MAX_DIGITS 9  /* nginx writes 3 */
#define METHOD_MAX 32      /* longer request methods are malformed lines */
#define CACHE_TOKEN_MAX 16 /* longest $upstream_cache_status word */
#define TOKEN_MIN_LEN 20   /* shortest opaque token collapsed to :id */
#define HEX_MIN_LEN 8
#define SPARE_SKETCHES 1024 /* empty sketches kept for the next run */

typedef struct cursor {
    const char *p;
    const char *end;
} cursor;

static const char *const cache_names[ST_NGINX_CACHE_COUNT] = {
    "none", "hit", "miss", "bypass", "expired", "stale", "updating", "revalidated", "other",
};
static const char *const cache_tokens[ST_NGINX_CACHE_COUNT] = {
    "-", "HIT", "MISS", "BYPASS", "EXPIRED", "STALE", "UPDATING", "REVALIDATED", NULL,
};
static const char *const status_classes[6] = {"", "1xx", "2xx", "3xx", "4xx", "5xx"};
static const double pow10_neg[FRAC_MAX_DIGITS + 1] = {1,    1e-1, 1e-2, 1e-3, 1e-4,
                                                      1e-5, 1e-6, 1e-7, 1e-8, 1e-9};

const char *st_nginx_cache_name(enum st_nginx_cache c)
{
    return (unsigned)c < ST_NGINX_CACHE_COUNT ? cache_names[c] : "other";
}

/* ---- line parser ---- */

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* One or more spaces; false at the end of the line or on anything else. */
static bool separator(cursor *c)
{
    if (c->p >= c->end || *c->p != ' ') {
        return false;
    }
    while (c->p < c->end && *c->p == ' ') {
        c->p++;
    }
    return c->p < c->end;
}

/* A non-empty run of bytes up to the next space. */
static bool token(cursor *c, const char **s, size_t *n)
{
    const char *start = c->p;
    const char *sp = memchr(c->p, ' ', (size_t)(c->end - c->p));
    c->p = sp != NULL ? sp : c->end;
    *s = start;
    *n = (size_t)(c->p - start);
    return *n > 0;
}

/* "..." with backslash escaping the next byte; the slice excludes quotes. */
static bool quoted(cursor *c, const char **s, size_t *n)
{
    const char *q;
    if (c->p >= c->end || *c->p != '"') {
        return false;
    }
    q = c->p + 1;
    while (q < c->end && *q != '"') {
        q += *q == '\\' ? 2 : 1;
    }
    if (q >= c->end) {
        return false; /* unterminated, or a backslash escaped the closing quote */
    }
    *s = c->p + 1;
    *n = (size_t)(q - *s);
    c->p = q + 1;
    return true;
}

/* digits[.digits] as nginx writes $msec and $request_time. */
static bool decimal(const char *s, size_t n, double *out)
{
    uint64_t ip = 0, fp = 0;
    size_t i = 0, k = 0;
    for (; i < n && is_digit(s[i]); i++) {
        ip = ip * 10 + (uint64_t)(s[i] - '0');
    }
    if (i == 0 || i > NUM_MAX_DIGITS) {
        return false;
    }
    if (i < n) {
        if (s[i++] != '.' || i == n || n - i > FRAC_MAX_DIGITS) {
            return false;
        }
        for (; i < n; i++, k++) {
            if (!is_digit(s[i])) {
                return false;
            }
            fp = fp * 10 + (uint64_t)(s[i] - '0');
        }
    }
    *out = (double)ip + (double)fp * pow10_neg[k];
    return true;
}

static bool unsigned_dec(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > NUM_MAX_DIGITS) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(s[i])) {
            return false;
        }
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

static bool cache_status(const char *s, size_t n, enum st_nginx_cache *out)
{
    if (n > CACHE_TOKEN_MAX) {
        return false;
    }
    for (int i = 0; i < ST_NGINX_CACHE_OTHER; i++) {
        if (strlen(cache_tokens[i]) == n && memcmp(cache_tokens[i], s, n) == 0) {
            *out = (enum st_nginx_cache)i;
            return true;
        }
    }
    /* An undocumented word (a newer nginx) is kept as "other"; junk is not. */
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 'A' || s[i] > 'Z') {
            return false;
        }
    }
    *out = ST_NGINX_CACHE_OTHER;
    return true;
}

static bool status_code(const char *s, size_t n, int *out)
{
    int v;
    if (n != 3 || !is_digit(s[0]) || !is_digit(s[1]) || !is_digit(s[2])) {
        return false;
    }
    v = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
    if (v < 100 || v > 599) {
        return false;
    }
    *out = v;
    return true;
}

int st_nginx_line_parse(const char *p, size_t len, st_nginx_line *out)
{
    cursor c = {p, p + len};
    st_nginx_line l;
    const char *s;
    size_t n;
    if (len > ST_NGINX_LINE_MAX) {
        return ST_ETOOBIG;
    }
    if (len > 0 && p[len - 1] == '\r') {
        c.end--;
    }
    if (!token(&c, &s, &n) || !decimal(s, n, &l.msec) || !separator(&c) || !token(&c, &s, &n) ||
        !decimal(s, n, &l.request_time) || !separator(&c) || !token(&c, &s, &n) ||
        !status_code(s, n, &l.status) || !separator(&c) || !token(&c, &s, &n) ||
        !cache_status(s, n, &l.cache) || !separator(&c) || !token(&c, &s, &n) ||
        !unsigned_dec(s, n, &l.bytes) || !separator(&c)) {
        return ST_EPARSE;
    }
    if (!quoted(&c, &l.method, &l.method_len) || l.method_len > METHOD_MAX || !separator(&c) ||
        !quoted(&c, &l.uri, &l.uri_len)) {
        return ST_EPARSE;
    }
    /* Fields after the seventh are allowed (the format may grow at its end). */
    if (c.p < c.end && *c.p != ' ') {
        return ST_EPARSE;
    }
    *out = l;
    return ST_OK;
}

/* ---- routes ---- */

struct rule {
    char *pattern;
    size_t len;
    bool prefix;
    uint32_t id;
};

struct route_name {
    char *s;
    uint32_t len;
    uint32_t hash;
};

struct st_nginx_routes {
    struct rule rules[ST_NGINX_MAX_RULES];
    size_t nrules;
    bool collapse;
    size_t max_auto; /* automatic routes allowed */
    size_t nauto;
    struct route_name *names; /* by id; 0 is "other" */
    size_t nnames, capnames;
    uint32_t *tab; /* open addressing: id + 1, 0 empty */
    size_t tabmask;
};

static uint32_t fnv1a32(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    }
    return h;
}

/* The slot that holds s or the empty slot where it belongs. */
static uint32_t *route_slot(const st_nginx_routes *r, const char *s, size_t n, uint32_t h)
{
    for (size_t i = h & r->tabmask;; i = (i + 1) & r->tabmask) {
        uint32_t v = r->tab[i];
        if (v == 0) {
            return &r->tab[i];
        }
        const struct route_name *rn = &r->names[v - 1];
        if (rn->hash == h && rn->len == n && memcmp(rn->s, s, n) == 0) {
            return &r->tab[i];
        }
    }
}

/* Adds a name (the table never fills: it is sized for every allowed name). */
static int intern(st_nginx_routes *r, const char *s, size_t n, uint32_t *id)
{
    uint32_t h = fnv1a32(s, n);
    uint32_t *slot = route_slot(r, s, n, h);
    struct route_name *rn;
    if (*slot != 0) {
        *id = *slot - 1;
        return ST_OK;
    }
    if (r->nnames == r->capnames) {
        size_t cap = r->capnames * 2;
        struct route_name *nn = realloc(r->names, cap * sizeof(*nn));
        if (nn == NULL) {
            return ST_ENOMEM;
        }
        r->names = nn;
        r->capnames = cap;
    }
    rn = &r->names[r->nnames];
    if ((rn->s = malloc(n + 1)) == NULL) {
        return ST_ENOMEM;
    }
    memcpy(rn->s, s, n);
    rn->s[n] = '\0';
    rn->len = (uint32_t)n;
    rn->hash = h;
    *id = (uint32_t)r->nnames++;
    *slot = *id + 1;
    return ST_OK;
}

int st_nginx_routes_new(size_t max_routes, bool collapse_ids, st_nginx_routes **out)
{
    st_nginx_routes *r;
    size_t want = 2 * (max_routes + ST_NGINX_MAX_RULES + 1), size = 64;
    uint32_t other;
    if (max_routes == 0 || max_routes > ST_NGINX_MAX_ROUTES) {
        return ST_EINVAL;
    }
    while (size < want) {
        size *= 2;
    }
    if ((r = calloc(1, sizeof(*r))) == NULL) {
        return ST_ENOMEM;
    }
    r->collapse = collapse_ids;
    r->max_auto = max_routes;
    r->capnames = 16;
    r->tabmask = size - 1;
    if ((r->names = calloc(r->capnames, sizeof(*r->names))) == NULL ||
        (r->tab = calloc(size, sizeof(*r->tab))) == NULL ||
        intern(r, ST_NGINX_ROUTE_OTHER, strlen(ST_NGINX_ROUTE_OTHER), &other) != ST_OK) {
        st_nginx_routes_free(r);
        return ST_ENOMEM;
    }
    *out = r;
    return ST_OK;
}

void st_nginx_routes_free(st_nginx_routes *r)
{
    if (r == NULL) {
        return;
    }
    for (size_t i = 0; i < r->nrules; i++) {
        free(r->rules[i].pattern);
    }
    for (size_t i = 0; i < r->nnames; i++) {
        free(r->names[i].s);
    }
    free(r->names);
    free(r->tab);
    free(r);
}

int st_nginx_routes_add(st_nginx_routes *r, const char *pattern, bool prefix, const char *name)
{
    size_t plen = pattern != NULL ? strlen(pattern) : 0;
    size_t nlen = name != NULL ? strlen(name) : 0;
    struct rule *ru;
    int rv;
    if (plen == 0 || plen > ST_NGINX_PATTERN_MAX || pattern[0] != '/' || nlen == 0 ||
        nlen > ST_NGINX_ROUTE_MAX || !st_utf8_valid(name, nlen)) {
        return ST_EINVAL;
    }
    if (r->nrules >= ST_NGINX_MAX_RULES) {
        return ST_ETOOBIG;
    }
    ru = &r->rules[r->nrules];
    if ((rv = intern(r, name, nlen, &ru->id)) != ST_OK) {
        return rv;
    }
    if ((ru->pattern = malloc(plen + 1)) == NULL) {
        return ST_ENOMEM;
    }
    memcpy(ru->pattern, pattern, plen + 1);
    ru->len = plen;
    ru->prefix = prefix;
    r->nrules++;
    return ST_OK;
}

/* '*' (any run) and '?' (one byte) within one segment: greedy with
 * backtracking to the last star, linear in practice. */
static bool seg_glob(const char *p, size_t pn, const char *s, size_t sn)
{
    size_t pi = 0, si = 0, star = SIZE_MAX, mark = 0;
    while (si < sn) {
        if (pi < pn && (p[pi] == '?' || p[pi] == s[si])) {
            pi++;
            si++;
        } else if (pi < pn && p[pi] == '*') {
            star = pi++;
            mark = si;
        } else if (star != SIZE_MAX) {
            pi = star + 1;
            si = ++mark;
        } else {
            return false;
        }
    }
    while (pi < pn && p[pi] == '*') {
        pi++;
    }
    return pi == pn;
}

static size_t seg_end(const char *s, size_t n, size_t i)
{
    const char *sl = memchr(s + i, '/', n - i);
    return sl != NULL ? (size_t)(sl - s) : n;
}

/* Segment by segment; a last pattern segment "**" matches anything below. */
static bool glob_match(const char *p, size_t pn, const char *s, size_t sn)
{
    size_t pi = 0, si = 0;
    for (;;) {
        size_t pe = seg_end(p, pn, pi), se = seg_end(s, sn, si);
        if (pe == pn && pe - pi == 2 && p[pi] == '*' && p[pi + 1] == '*') {
            return true;
        }
        if (!seg_glob(p + pi, pe - pi, s + si, se - si)) {
            return false;
        }
        if (pe == pn || se == sn) {
            return pe == pn && se == sn;
        }
        pi = pe + 1;
        si = se + 1;
    }
}

static bool rule_match(const struct rule *ru, const char *s, size_t n)
{
    if (ru->prefix) {
        return n >= ru->len && memcmp(s, ru->pattern, ru->len) == 0;
    }
    return glob_match(ru->pattern, ru->len, s, n);
}

static bool is_hex(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool is_uuid(const char *s, size_t n)
{
    if (n != 36) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !is_hex(s[i])) {
            return false;
        }
    }
    return true;
}

/* Numeric, hex (>= 8 digits, at least one decimal digit so words like
 * "deadbeef" stay), UUID, or an opaque token: >= 20 bytes of [A-Za-z0-9_-]
 * with letters and either >= 20 % digits or mixed case and digits (slugs of
 * lower-case words stay). Segments over ST_NGINX_SEGMENT_MAX always are. */
static bool is_id(const char *s, size_t n)
{
    size_t digits = 0, hex = 0, lower = 0, upper = 0, tok = 0;
    if (n == 0) {
        return false;
    }
    if (n > ST_NGINX_SEGMENT_MAX || is_uuid(s, n)) {
        return true;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        digits += is_digit(c);
        hex += is_hex(c);
        lower += c >= 'a' && c <= 'z';
        upper += c >= 'A' && c <= 'Z';
        tok +=
            is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '_';
    }
    if (digits == n || (n >= HEX_MIN_LEN && hex == n && digits > 0)) {
        return true;
    }
    if (n < TOKEN_MIN_LEN || tok != n || lower + upper == 0) {
        return false;
    }
    return digits * 5 >= n || (lower > 0 && upper > 0 && digits > 0);
}

/* Control bytes or invalid UTF-8 (a log written with escape=none) must not
 * reach a label: the collector refuses frames that carry them. */
static bool seg_clean(const char *s, size_t n)
{
    bool high = false;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        if (c < 0x20 || c == 0x7f) {
            return false;
        }
        high |= c >= 0x80;
    }
    return !high || st_utf8_valid(s, n);
}

static size_t copy_out(char *out, size_t cap, const char *s, size_t n)
{
    n = ST_MIN(n, cap - 1);
    memcpy(out, s, n);
    out[n] = '\0';
    return n;
}

/* "/" + each segment (or ":id" / ":invalid"), cut at a segment boundary so
 * that "/..." still fits within ST_NGINX_ROUTE_MAX. */
static size_t collapse_path(bool collapse, const char *s, size_t n, char *out)
{
    static const char ellipsis[] = "/...";
    size_t o = 0, i = 1;
    for (;;) {
        size_t e = seg_end(s, n, i), sl = e - i;
        const char *rep = s + i;
        size_t limit = e == n ? ST_NGINX_ROUTE_MAX : ST_NGINX_ROUTE_MAX - (sizeof(ellipsis) - 1);
        if (!seg_clean(rep, sl)) {
            rep = ":invalid";
            sl = strlen(rep);
        } else if (collapse && is_id(rep, sl)) {
            rep = ST_NGINX_ROUTE_ID;
            sl = strlen(rep);
        }
        if (o + 1 + sl > limit) {
            memcpy(out + o, ellipsis, sizeof(ellipsis));
            return o + sizeof(ellipsis) - 1;
        }
        out[o++] = '/';
        memcpy(out + o, rep, sl);
        o += sl;
        if (e == n) {
            out[o] = '\0';
            return o;
        }
        i = e + 1;
    }
}

size_t st_nginx_route_normalise(const st_nginx_routes *r, const char *path, size_t len, char *out,
                                size_t cap)
{
    const char *q = memchr(path, '?', len);
    const char *h;
    if (cap <= ST_NGINX_ROUTE_MAX) {
        return copy_out(out, cap, "", 0);
    }
    len = q != NULL ? (size_t)(q - path) : len;
    h = memchr(path, '#', len);
    len = h != NULL ? (size_t)(h - path) : len;
    if (len == 0 || path[0] != '/') {
        return copy_out(out, cap, ST_NGINX_ROUTE_OTHER, strlen(ST_NGINX_ROUTE_OTHER));
    }
    for (size_t i = 0; i < r->nrules; i++) {
        if (rule_match(&r->rules[i], path, len)) {
            const struct route_name *rn = &r->names[r->rules[i].id];
            return copy_out(out, cap, rn->s, rn->len);
        }
    }
    return collapse_path(r->collapse, path, len, out);
}

uint32_t st_nginx_route_id(st_nginx_routes *r, const char *path, size_t len, bool *overflow)
{
    char buf[ST_NGINX_ROUTE_MAX + 1];
    size_t n = st_nginx_route_normalise(r, path, len, buf, sizeof(buf));
    uint32_t h = fnv1a32(buf, n);
    uint32_t *slot = route_slot(r, buf, n, h);
    uint32_t id = 0;
    if (*slot != 0) {
        return *slot - 1;
    }
    if (r->nauto >= r->max_auto || intern(r, buf, n, &id) != ST_OK) {
        if (overflow != NULL) {
            *overflow = true;
        }
        return 0;
    }
    r->nauto++;
    return id;
}

const char *st_nginx_route_name(const st_nginx_routes *r, uint32_t id)
{
    return id < r->nnames ? r->names[id].s : ST_NGINX_ROUTE_OTHER;
}

size_t st_nginx_routes_count(const st_nginx_routes *r)
{
    return r->nauto;
}

/* ---- aggregate ---- */

struct cell {
    uint32_t key; /* route id << 8 | status class << 4 | cache status */
    bool used;
    uint64_t count;
    uint64_t bytes;
    st_sketch *sk;
};

struct st_nginx_agg {
    st_nginx_routes *routes;
    struct cell *cells;
    size_t mask; /* capacity - 1 */
    size_t used;
    st_sketch *spare[SPARE_SKETCHES];
    size_t nspare;
    uint64_t cache[ST_NGINX_CACHE_COUNT];
    st_nginx_agg_totals run;   /* since the last emit */
    st_nginx_agg_totals total; /* since creation */
};

int st_nginx_agg_new(st_nginx_routes *routes, st_nginx_agg **out)
{
    st_nginx_agg *a = calloc(1, sizeof(*a));
    if (a == NULL || (a->cells = calloc(256, sizeof(*a->cells))) == NULL) {
        free(a);
        st_nginx_routes_free(routes);
        return ST_ENOMEM;
    }
    a->mask = 255;
    a->routes = routes;
    *out = a;
    return ST_OK;
}

void st_nginx_agg_free(st_nginx_agg *a)
{
    if (a == NULL) {
        return;
    }
    for (size_t i = 0; i <= a->mask; i++) {
        st_sketch_free(a->cells[i].sk);
    }
    for (size_t i = 0; i < a->nspare; i++) {
        st_sketch_free(a->spare[i]);
    }
    st_nginx_routes_free(a->routes);
    free(a->cells);
    free(a);
}

static size_t cell_hash(uint32_t key, size_t mask)
{
    return (size_t)((key * 2654435761u) ^ (key >> 13)) & mask;
}

static int grow_cells(st_nginx_agg *a)
{
    size_t ncap = (a->mask + 1) * 2;
    struct cell *nc = calloc(ncap, sizeof(*nc));
    if (nc == NULL) {
        return ST_ENOMEM;
    }
    for (size_t i = 0; i <= a->mask; i++) {
        if (a->cells[i].used) {
            size_t j = cell_hash(a->cells[i].key, ncap - 1);
            while (nc[j].used) {
                j = (j + 1) & (ncap - 1);
            }
            nc[j] = a->cells[i];
        }
    }
    free(a->cells);
    a->cells = nc;
    a->mask = ncap - 1;
    return ST_OK;
}

static struct cell *cell_get(st_nginx_agg *a, uint32_t key)
{
    size_t i;
    if ((a->used + 1) * 2 > a->mask + 1 && grow_cells(a) != ST_OK) {
        return NULL;
    }
    for (i = cell_hash(key, a->mask); a->cells[i].used; i = (i + 1) & a->mask) {
        if (a->cells[i].key == key) {
            return &a->cells[i];
        }
    }
    if (a->nspare > 0) {
        a->cells[i].sk = a->spare[--a->nspare];
    } else if (st_sketch_new(0, &a->cells[i].sk) != ST_OK) {
        return NULL;
    }
    a->cells[i].used = true;
    a->cells[i].key = key;
    a->used++;
    return &a->cells[i];
}

void st_nginx_agg_line(st_nginx_agg *a, const char *line, size_t len)
{
    st_nginx_line l;
    struct cell *c;
    bool overflow = false;
    uint32_t id;
    a->run.lines++;
    if (line == NULL || len > ST_NGINX_LINE_MAX) {
        a->run.too_long++;
        return;
    }
    if (st_nginx_line_parse(line, len, &l) != ST_OK) {
        a->run.malformed++;
        return;
    }
    id = st_nginx_route_id(a->routes, l.uri, l.uri_len, &overflow);
    c = cell_get(a, id << 8 | (uint32_t)(l.status / 100) << 4 | (uint32_t)l.cache);
    if (c == NULL || st_sketch_insert(c->sk, l.request_time) != ST_OK) {
        ST_WARN("nginx", "out of memory: a request of route %s was dropped",
                st_nginx_route_name(a->routes, id));
        return;
    }
    c->count++;
    c->bytes += l.bytes;
    a->cache[l.cache]++;
    a->run.requests++;
    a->run.overflow += overflow;
}

static int emit_cell(st_nginx_agg *a, st_emit *e, const struct cell *c)
{
    unsigned sc = (c->key >> 4) & 0xf;
    st_label lab[3] = {{"route", st_nginx_route_name(a->routes, c->key >> 8)},
                       {"status_class", status_classes[sc]},
                       {"cache_status", st_nginx_cache_name((enum st_nginx_cache)(c->key & 0xf))}};
    st_series_desc d = {"http.server.requests", lab, 2, ST_LAYER_INFRA, "", 0};
    int rv = st_emit_counter_add(e, &d, (double)c->count);
    if (rv == ST_OK && sc == 5) {
        d.name = "http.server.errors"; /* 5xx only: the error-rate target */
        rv = st_emit_counter_add(e, &d, (double)c->count);
    }
    if (rv == ST_OK) {
        d.name = "http.server.response.bytes";
        d.unit = "B";
        rv = st_emit_counter_add(e, &d, (double)c->bytes);
    }
    if (rv == ST_OK) {
        d = (st_series_desc){"http.server.duration", lab, 3, ST_LAYER_INFRA, "s", 0};
        rv = st_emit_sketch(e, &d, c->sk);
    }
    /* Cache lookups per route, so the worst routes can be named. */
    if (rv == ST_OK && (c->key & 0xf) != ST_NGINX_CACHE_NONE) {
        st_label cl[3] = {{"cache", "nginx"}, {"result", lab[2].value}, lab[0]};
        d = (st_series_desc){"cache.requests", cl, 3, ST_LAYER_INFRA, "", 0};
        rv = st_emit_counter_add(e, &d, (double)c->count);
    }
    return rv;
}

/* Empties every cell; sketches go back to the spare pool (or are freed). */
static void reset_cells(st_nginx_agg *a)
{
    for (size_t i = 0; i <= a->mask; i++) {
        struct cell *c = &a->cells[i];
        if (!c->used) {
            continue;
        }
        if (a->nspare < SPARE_SKETCHES) {
            st_sketch_reset(c->sk);
            a->spare[a->nspare++] = c->sk;
        } else {
            st_sketch_free(c->sk);
        }
        memset(c, 0, sizeof(*c));
    }
    a->used = 0;
}

static int emit_counter(st_emit *e, const char *name, const st_label *lab, size_t nlab, uint64_t v)
{
    st_series_desc d = {name, lab, nlab, ST_LAYER_INFRA, "", 0};
    return st_emit_counter_add(e, &d, (double)v);
}

static int emit_log_counters(st_nginx_agg *a, st_emit *e)
{
    st_label lab[1] = {{"reason", "format"}};
    int rv = ST_OK, r;
    r = emit_counter(e, "nginx.log.malformed", lab, 1, a->run.malformed);
    rv = rv != ST_OK ? rv : r;
    lab[0].value = "too_long";
    r = emit_counter(e, "nginx.log.malformed", lab, 1, a->run.too_long);
    rv = rv != ST_OK ? rv : r;
    r = emit_counter(e, "nginx.log.lines", NULL, 0, a->run.lines);
    rv = rv != ST_OK ? rv : r;
    r = emit_counter(e, "nginx.routes.overflow", NULL, 0, a->run.overflow);
    return rv != ST_OK ? rv : r;
}

static void add_totals(st_nginx_agg_totals *t, const st_nginx_agg_totals *run)
{
    t->lines += run->lines;
    t->requests += run->requests;
    t->malformed += run->malformed;
    t->too_long += run->too_long;
    t->overflow += run->overflow;
}

int st_nginx_agg_emit(st_nginx_agg *a, st_emit *e)
{
    int rv = ST_OK;
    for (size_t i = 0; i <= a->mask; i++) {
        if (a->cells[i].used && a->cells[i].count > 0) {
            int r = emit_cell(a, e, &a->cells[i]);
            rv = rv != ST_OK ? rv : r;
        }
    }
    {
        int r = emit_log_counters(a, e);
        rv = rv != ST_OK ? rv : r;
    }
    reset_cells(a);
    add_totals(&a->total, &a->run);
    memset(&a->run, 0, sizeof(a->run));
    memset(a->cache, 0, sizeof(a->cache));
    return rv;
}

void st_nginx_agg_totals_get(const st_nginx_agg *a, st_nginx_agg_totals *out)
{
    *out = a->total;
    add_totals(out, &a->run);
}

/* ---- stub_status ---- */

static void skip_ws(cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\r' || *c->p == '\n')) {
        c->p++;
    }
}

static bool literal(cursor *c, const char *lit)
{
    size_t n = strlen(lit);
    skip_ws(c);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, lit, n) != 0) {
        return false;
    }
    c->p += n;
    return true;
}

static bool number(cursor *c, uint64_t *out)
{
    const char *s;
    skip_ws(c);
    s = c->p;
    while (c->p < c->end && is_digit(*c->p)) {
        c->p++;
    }
    return unsigned_dec(s, (size_t)(c->p - s), out);
}

int st_nginx_status_parse(const char *p, size_t len, st_nginx_status *out)
{
    cursor c = {p, p + len};
    st_nginx_status s;
    if (len > ST_NGINX_STATUS_MAX) {
        return ST_ETOOBIG;
    }
    if (!literal(&c, "Active connections:") || !number(&c, &s.active) ||
        !literal(&c, "server accepts handled requests") || !number(&c, &s.accepts) ||
        !number(&c, &s.handled) || !number(&c, &s.requests) || !literal(&c, "Reading:") ||
        !number(&c, &s.reading) || !literal(&c, "Writing:") || !number(&c, &s.writing) ||
        !literal(&c, "Waiting:") || !number(&c, &s.waiting)) {
        return ST_EPARSE;
    }
    skip_ws(&c);
    if (c.p != c.end) {
        return ST_EPARSE;
    }
    *out = s;
    return ST_OK;
}
