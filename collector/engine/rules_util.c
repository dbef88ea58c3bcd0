/* Helpers the rule checks share: bounded text, lookups in query answers,
 * and the parts every candidate has (verdict, entity, evidence). */
#include "rules_checks.h"

#include "err.h"
#include "util.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define LAST_STEP_MS 60000
#define KEY_MAX 128
#define MATCH_MAX 15 /* the query engine takes 16 matchers; one is the host */
#define HOST_MATCH_MAX 1100

/* ---- bounded text ---- */

/* The length of s[0..len) without a UTF-8 sequence cut at its end. */
static size_t utf8_trim(const char *s, size_t len)
{
    size_t i = len;
    size_t cont = 0;
    size_t need;
    unsigned char lead;
    while (i > 0 && cont < 3 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) {
        i--;
        cont++;
    }
    if (i == 0) {
        return len;
    }
    lead = (unsigned char)s[i - 1];
    need = lead >= 0xF0 ? 4 : (lead >= 0xE0 ? 3 : (lead >= 0xC0 ? 2 : 1));
    return need > 1 && cont + 1 < need ? i - 1 : len;
}

int st_rules_cut(const char *s, int max)
{
    size_t n = strnlen(s, max > 0 ? (size_t)max : 0);
    return (int)(n == (size_t)max ? utf8_trim(s, n) : n);
}

void st_rbuf_init(st_rbuf *b, char *p, size_t cap)
{
    b->p = p;
    b->cap = cap;
    b->len = 0;
    b->over = cap == 0;
    if (cap > 0) {
        p[0] = '\0';
    }
}

void st_rbuf_add(st_rbuf *b, const char *s, size_t n)
{
    size_t room;
    if (b->cap == 0) {
        return;
    }
    room = b->cap - 1 - b->len;
    if (n > room) {
        n = utf8_trim(s, room);
        b->over = true;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void st_rbuf_puts(st_rbuf *b, const char *s)
{
    st_rbuf_add(b, s, strlen(s));
}

void st_rbuf_addf(st_rbuf *b, const char *fmt, ...)
{
    va_list ap;
    size_t room;
    int n;
    if (b->cap == 0) {
        return;
    }
    room = b->cap - b->len;
    va_start(ap, fmt);
    n = vsnprintf(b->p + b->len, room, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->over = true;
        b->p[b->len] = '\0';
        return;
    }
    if ((size_t)n >= room) {
        b->over = true;
        b->len = utf8_trim(b->p, b->cap - 1);
        b->p[b->len] = '\0';
        return;
    }
    b->len += (size_t)n;
}

/* Words that must be quoted to be used as names. */
static bool reserved(const char *s, size_t n)
{
    static const char *words[] = {
        "all",    "and",     "any",   "array",    "as",     "asc",   "case",   "check",  "column",
        "create", "default", "desc",  "distinct", "do",     "else",  "end",    "except", "false",
        "for",    "from",    "grant", "group",    "having", "in",    "into",   "limit",  "not",
        "null",   "offset",  "on",    "only",     "or",     "order", "select", "table",  "then",
        "to",     "true",    "union", "user",     "using",  "when",  "where",  "with"};
    for (size_t i = 0; i < ST_ARRAY_LEN(words); i++) {
        if (strlen(words[i]) == n && memcmp(words[i], s, n) == 0) {
            return true;
        }
    }
    return false;
}

static void ident_part(st_rbuf *b, const char *s, size_t n)
{
    bool plain = n > 0 && (islower((unsigned char)s[0]) || s[0] == '_') && !reserved(s, n);
    for (size_t i = 0; plain && i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        plain = islower(ch) || isdigit(ch) || ch == '_' || ch == '$';
    }
    if (plain) {
        st_rbuf_add(b, s, n);
        return;
    }
    st_rbuf_add(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        st_rbuf_add(b, s[i] == '"' ? "\"\"" : s + i, s[i] == '"' ? 2 : 1);
    }
    st_rbuf_add(b, "\"", 1);
}

void st_rbuf_ident(st_rbuf *b, const char *name)
{
    const char *dot = strchr(name, '.');
    if (dot != NULL && dot != name && dot[1] != '\0') {
        ident_part(b, name, (size_t)(dot - name));
        st_rbuf_add(b, ".", 1);
        ident_part(b, dot + 1, strlen(dot + 1));
        return;
    }
    ident_part(b, name, strlen(name));
}

/* ---- reading answers ---- */

double st_rules_lookup(st_answer *ans, const st_ans_row *item, const char *keys)
{
    const st_ans_row *x = st_answer_find(ans, item, keys);
    return x != NULL ? st_ans_value(x) : NAN;
}

double st_rules_total(const st_answer *ans)
{
    double sum = 0;
    for (size_t i = 0; ans != NULL && i < ans->n; i++) {
        double v = st_ans_value(&ans->rows[i]);
        sum += isfinite(v) ? v : 0;
    }
    return sum;
}

static int query_one(st_eng *e, const char *metric, const char *agg, const char *by,
                     const char *const *match, size_t nmatch, int64_t window_ms, int64_t step_ms,
                     st_answer **out)
{
    if (step_ms > 0) {
        return st_eng_query_steps(e, metric, agg, by, match, nmatch, window_ms, step_ms, out);
    }
    return st_eng_query(e, metric, agg, by, match, nmatch, window_ms, out);
}

static bool has_host(const char *by)
{
    const char *p = by;
    while (p != NULL && *p != '\0') {
        size_t n = strcspn(p, ",");
        if (n == 4 && strncmp(p, "host", 4) == 0) {
            return true;
        }
        p += n + (p[n] == ',');
    }
    return false;
}

/* The answer of one query per host, their series concatenated. */
int st_rules_query_per_host(st_eng *e, const char *metric, const char *agg, const char *by,
                            const char *const *match, size_t nmatch, int64_t window_ms,
                            int64_t step_ms, st_answer **out)
{
    const char *m[MATCH_MAX + 1];
    char hm[HOST_MATCH_MAX];
    st_answer *hosts = NULL;
    st_answer *all = NULL;
    int rv = st_eng_query(e, metric, "count", "host", match, nmatch, window_ms, &hosts);
    *out = NULL;
    for (size_t i = 0; i < nmatch; i++) {
        m[i] = match[i];
    }
    m[nmatch] = hm;
    /* A new answer: the parts are answers shared with other rules, so
     * none may be changed, and a part's lookup index would not cover the
     * other hosts' series. */
    rv = rv == ST_OK ? st_answer_new(&all) : rv;
    for (size_t i = 0; rv == ST_OK && i < hosts->n; i++) {
        st_answer *part = NULL;
        if (snprintf(hm, sizeof(hm), "host=%s", st_ans_label(&hosts->rows[i], "host")) >=
            (int)sizeof(hm)) {
            continue;
        }
        rv = query_one(e, metric, agg, by, m, nmatch + 1, window_ms, step_ms, &part);
        if (rv == ST_OK) {
            all->from = all->n == 0 ? part->from : all->from;
            rv = st_answer_append(all, part);
        }
        st_answer_unref(part);
    }
    st_answer_unref(hosts);
    if (rv != ST_OK) {
        st_answer_unref(all);
        return rv;
    }
    *out = all;
    return ST_OK;
}

int st_rules_query(st_eng *e, const char *metric, const char *agg, const char *by,
                   const char *const *match, size_t nmatch, int64_t window_ms, int64_t step_ms,
                   st_answer **out)
{
    int rv = query_one(e, metric, agg, by, match, nmatch, window_ms, step_ms, out);
    if (rv != ST_ETOOBIG || !has_host(by) || nmatch > MATCH_MAX) {
        return rv;
    }
    st_answer_unref(*out);
    *out = NULL;
    return st_rules_query_per_host(e, metric, agg, by, match, nmatch, window_ms, step_ms, out);
}

int st_rules_add(st_candidates *out, st_candidate *c)
{
    int rv;
    if (c->labels == NULL || c->evidence == NULL || c->implementation == NULL) {
        json_decref(c->labels);
        json_decref(c->evidence);
        json_decref(c->implementation);
        memset(c, 0, sizeof(*c));
        return ST_ENOMEM;
    }
    rv = st_candidates_add(out, c);
    if (rv == ST_ENOMEM) { /* not taken over (ST_ETOOBIG frees them itself) */
        json_decref(c->labels);
        json_decref(c->evidence);
        json_decref(c->implementation);
        memset(c, 0, sizeof(*c));
    }
    return rv;
}

int st_rules_last(st_eng *e, const char *metric, const char *by, const char *const *match,
                  size_t nmatch, int64_t window_ms, st_answer **out)
{
    int64_t step = window_ms < LAST_STEP_MS ? 1000 : LAST_STEP_MS;
    return st_eng_query_steps(e, metric, "avg", by, match, nmatch, window_ms, step, out);
}

/* ---- candidates ---- */

json_t *st_rules_num(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

void st_rules_set_num(json_t *obj, const char *key, double v)
{
    json_object_set_new(obj, key, st_rules_num(v));
}

double st_rules_threshold(st_eng *e, const st_rule *r, const char *setting)
{
    double t = st_eng_threshold(e, r);
    double s;
    if (t != r->threshold || setting == NULL) {
        return t;
    }
    s = st_eng_setting(e, setting);
    return isfinite(s) ? s : t;
}

void st_rules_verdict(st_candidate *c, const st_rule *r, double value, double threshold, bool below)
{
    bool far = below ? value < threshold / 2 : (threshold > 0 && value > 2 * threshold);
    c->value = value;
    c->threshold = threshold;
    c->below = below;
    c->severity = r->severity;
    if (far && c->severity < ST_SEV_CRITICAL) {
        c->severity = (enum st_severity)(c->severity + 1);
    }
}

void st_rules_entity(st_candidate *c, const st_ans_row *item, const char *keys)
{
    st_rbuf b;
    const char *p = keys;
    st_rbuf_init(&b, c->entity, sizeof(c->entity));
    while (*p != '\0') {
        char key[KEY_MAX];
        size_t n = strcspn(p, ",");
        const char *v;
        if (n < sizeof(key)) {
            memcpy(key, p, n);
            key[n] = '\0';
            v = st_ans_label(item, key);
            if (v[0] != '\0') {
                st_rbuf_addf(&b, "%s%s=%s", b.len > 0 ? " " : "", key, v);
                json_object_set_new(c->labels, key, json_string(v));
            }
        }
        p += n + (p[n] == ',');
    }
}

void st_rules_summary(st_candidate *c, const char *fmt, ...)
{
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(c->summary, sizeof(c->summary), fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof(c->summary)) {
        c->summary[utf8_trim(c->summary, sizeof(c->summary) - 1)] = '\0';
    }
}

void st_rules_evidence(st_eng *e, st_candidate *c, const char *const *series, size_t nseries,
                       json_t *values, double threshold, int64_t window_ms, json_t *hosts)
{
    json_t *names = json_array();
    int64_t now = st_eng_now(e);
    for (size_t i = 0; i < nseries; i++) {
        json_array_append_new(names, json_string(series[i]));
    }
    json_object_set_new(c->evidence, "series", names);
    json_object_set_new(c->evidence, "values", values != NULL ? values : json_object());
    json_object_set_new(c->evidence, "threshold", st_rules_num(threshold));
    json_object_set_new(
        c->evidence, "window",
        json_pack("{s:I,s:I}", "from", (json_int_t)(now - window_ms), "to", (json_int_t)now));
    json_object_set_new(c->evidence, "hosts", hosts != NULL ? hosts : json_array());
}

json_t *st_rules_hosts(const st_answer *ans, const char *key, const char *fkey, const char *fval)
{
    json_t *out = json_array();
    json_t *seen = json_object(); /* a set: 650 hosts' series by process were 2 M compares */
    for (size_t i = 0; ans != NULL && out != NULL && seen != NULL && i < ans->n; i++) {
        const st_ans_row *item = &ans->rows[i];
        const char *h = st_ans_label(item, key);
        if (h[0] == '\0' || (fkey != NULL && strcmp(st_ans_label(item, fkey), fval) != 0) ||
            json_object_get(seen, h) != NULL) {
            continue;
        }
        json_object_set_new(seen, h, json_true());
        json_array_append_new(out, json_string(h));
    }
    json_decref(seen);
    return out;
}
