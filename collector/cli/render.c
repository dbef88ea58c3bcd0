/* Renders the collector's JSON answers as the CLI's human output. Shapes
 * follow DESIGN.md "HTTP API"; fields the design does not name are shown
 * too (tables skip them, the finding outline prints them), so a newer
 * collector never makes the CLI fail. */
#include "render.h"

#define ST_TOP_MAX_COLS 12

#include "err.h"
#include "format.h"
#include "timeutil.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Width of the key column in the "status:  ..." header lines. */
#define KEY_COL 12
/* Nesting shown as an outline; deeper values print as compact JSON. */
#define MAX_OUTLINE_DEPTH 12
#define ENTITY_COLS 40
#define SUMMARY_COLS 80

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s);
    size_t k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* A timestamp in unix ms from an integer or a real; false for anything
 * else or a real that does not fit (casting it would be undefined). */
static bool json_ms(const json_t *v, int64_t *out)
{
    double d;
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return true;
    }
    d = json_real_value(v);
    if (!json_is_real(v) || !(d > -9.2e18 && d < 9.2e18)) {
        return false;
    }
    *out = (int64_t)d;
    return true;
}

/* A malloc'd display text of v: strings as they are, numbers in unit (NULL:
 * plain), booleans yes/no, containers as compact JSON, missing/null "-".
 * NULL only when out of memory. */
static char *text_of(const json_t *v, const char *unit)
{
    char num[ST_FMT_VALUE_LEN];

    if (json_is_string(v)) {
        return strdup(json_string_value(v));
    }
    if (json_is_object(v) || json_is_array(v)) {
        return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    }
    if (json_is_integer(v) && unit == NULL) {
        snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    } else if (json_is_number(v)) {
        st_fmt_value(json_number_value(v), unit, num, sizeof(num));
    } else if (json_is_boolean(v)) {
        snprintf(num, sizeof(num), "%s", json_is_true(v) ? "yes" : "no");
    } else {
        snprintf(num, sizeof(num), "-");
    }
    return strdup(num);
}

/* Adds a row of malloc'd cells (a NULL one means a failed allocation) and
 * frees them. */
static int add_owned_row(st_table *t, char **cells, size_t n)
{
    int rv = ST_OK;
    for (size_t i = 0; i < n; i++) {
        if (cells[i] == NULL) {
            rv = ST_ENOMEM;
        }
    }
    if (rv == ST_OK) {
        rv = st_table_add_row(t, (const char *const *)cells);
    }
    for (size_t i = 0; i < n; i++) {
        free(cells[i]);
    }
    return rv;
}

/* Renders and frees t; rv carries the first error of filling it. */
static int finish_table(st_table *t, st_buf *out, int rv)
{
    if (t == NULL) {
        return rv != ST_OK ? rv : ST_ENOMEM;
    }
    if (rv == ST_OK) {
        rv = st_table_render(t, out);
    }
    st_table_free(t);
    return rv;
}

/* "key:" padded to KEY_COL, the sanitized value, a newline. */
static int append_kv(st_buf *out, const char *key, const char *value)
{
    int rv = st_buf_printf(out, "%-*s", KEY_COL, key);
    if (rv == ST_OK) {
        rv = st_fmt_sanitize(value, false, out);
    }
    return rv == ST_OK ? st_buf_append(out, "\n", 1) : rv;
}

/* One status target: NAME GOAL VALUE MET, goal and value in the target's
 * unit when it names one. */
static int status_target_row(st_table *t, const json_t *tg)
{
    const char *unit = json_string_value(json_object_get(tg, "unit"));
    char *cells[4];
    if (!json_is_object(tg)) {
        return ST_EPARSE;
    }
    cells[0] = text_of(json_object_get(tg, "name"), NULL);
    cells[1] = text_of(json_object_get(tg, "target"), unit);
    cells[2] = text_of(json_object_get(tg, "value"), unit);
    cells[3] = text_of(json_object_get(tg, "met"), NULL);
    return add_owned_row(t, cells, 4);
}

/* "YYYY-MM-DDTHH:MM:SSZ" of a time in ms, or false when it is none. */
static bool utc_text(const json_t *v, char *buf, size_t cap)
{
    struct tm tm;
    time_t t;
    if (!json_is_integer(v) || json_integer_value(v) <= 0 ||
        json_integer_value(v) / 1000 > (json_int_t)253402300799) { /* past year 9999 */
        return false;
    }
    t = (time_t)(json_integer_value(v) / 1000);
    return gmtime_r(&t, &tm) != NULL && strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) > 0;
}

static int status_header(const json_t *doc, st_buf *out)
{
    char *status = text_of(json_object_get(doc, "status"), NULL);
    char *iter = text_of(json_object_get(doc, "iteration"), NULL);
    char *max = text_of(json_object_get(doc, "max_iterations"), NULL);
    char line[128];
    int rv = ST_ENOMEM;

    if (status != NULL && iter != NULL && max != NULL) {
        snprintf(line, sizeof(line), "%.40s of %.40s", iter, max);
        rv = append_kv(out, "status:", status);
        if (rv == ST_OK) {
            rv = append_kv(out, "iteration:", line);
        }
        /* the engine judges settled data: say up to when */
        if (rv == ST_OK &&
            utc_text(json_object_get(doc, "windows_end_unix_ms"), line, sizeof(line))) {
            rv = append_kv(out, "data to:", line);
        }
    }
    free(status);
    free(iter);
    free(max);
    return rv;
}

int st_render_status(const json_t *doc, st_buf *out)
{
    static const char *const headers[] = {"TARGET", "GOAL", "VALUE", "MET"};
    const json_t *targets = json_object_get(doc, "targets");
    st_table *t;
    size_t i;
    json_t *tg;
    int rv;

    if (!json_is_object(doc) || (targets != NULL && !json_is_array(targets))) {
        return ST_EPARSE;
    }
    rv = status_header(doc, out);
    if (rv != ST_OK || json_array_size(targets) == 0) {
        return rv;
    }
    rv = st_buf_append_str(out, "\n");
    t = st_table_new(4, headers);
    json_array_foreach(targets, i, tg)
    {
        if (rv == ST_OK && t != NULL) {
            rv = status_target_row(t, tg);
        }
    }
    return finish_table(t, out, rv);
}

/* Optional agent fields, shown as columns when any agent has them. */
static const struct {
    const char *key;
    const char *header;
} agent_extra[] = {{"spool_frames", "SPOOL"}, {"spool_dropped", "DROPPED"}, {"samples", "SAMPLES"}};
#define N_EXTRA (sizeof(agent_extra) / sizeof(agent_extra[0]))
#define AGENT_MAX_COLS (8 + N_EXTRA)

static char *lost_text(const json_t *agent)
{
    const json_t *seq = json_object_get(agent, "seq");
    const json_t *frames = json_object_get(agent, "frames");
    json_int_t lost;
    char num[32];
    /* frames == seq when nothing was lost (DESIGN.md, /v1/agents). */
    if (!json_is_integer(seq) || !json_is_integer(frames) ||
        __builtin_sub_overflow(json_integer_value(seq), json_integer_value(frames), &lost)) {
        return strdup("-");
    }
    snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, lost);
    return strdup(num);
}

static char *ago_text(const json_t *v, int64_t now_ms)
{
    char buf[ST_FMT_VALUE_LEN];
    int64_t ms;
    if (!json_ms(v, &ms)) {
        return strdup("-");
    }
    st_fmt_ago(now_ms, ms, buf, sizeof(buf));
    return strdup(buf);
}

static int agent_row(st_table *t, const json_t *a, const bool *extra, int64_t now_ms)
{
    char *cells[AGENT_MAX_COLS];
    size_t n = 0;

    if (!json_is_object(a)) {
        return ST_EPARSE;
    }
    cells[n++] = text_of(json_object_get(a, "host"), NULL);
    cells[n++] = text_of(json_object_get(a, "role"), NULL);
    cells[n++] = text_of(json_object_get(a, "version"), NULL);
    cells[n++] = ago_text(json_object_get(a, "last_seen_unix_ms"), now_ms);
    cells[n++] = text_of(json_object_get(a, "seq"), NULL);
    cells[n++] = text_of(json_object_get(a, "frames"), NULL);
    cells[n++] = lost_text(a);
    for (size_t i = 0; i < N_EXTRA; i++) {
        if (extra[i]) {
            cells[n++] = text_of(json_object_get(a, agent_extra[i].key), NULL);
        }
    }
    cells[n++] = text_of(json_object_get(a, "id"), NULL);
    return add_owned_row(t, cells, n);
}

/* Which optional columns any agent fills; appends their headers. */
static size_t agent_columns(const json_t *agents, bool *extra, const char **headers, size_t n)
{
    size_t i;
    json_t *a;
    for (size_t k = 0; k < N_EXTRA; k++) {
        extra[k] = false;
        json_array_foreach(agents, i, a)
        {
            extra[k] = extra[k] || json_object_get(a, agent_extra[k].key) != NULL;
        }
        if (extra[k]) {
            headers[n++] = agent_extra[k].header;
        }
    }
    return n;
}

int st_render_agents(const json_t *doc, int64_t now_ms, st_buf *out)
{
    const char *headers[AGENT_MAX_COLS] = {"HOST", "ROLE",   "VERSION", "LAST SEEN",
                                           "SEQ",  "FRAMES", "LOST"};
    const json_t *agents = json_object_get(doc, "agents");
    bool extra[N_EXTRA];
    size_t ncols;
    size_t i;
    json_t *a;
    st_table *t;
    int rv = ST_OK;

    if (!json_is_array(agents)) {
        return ST_EPARSE;
    }
    if (json_array_size(agents) == 0) {
        return st_buf_append_str(out, "no agents have reported\n");
    }
    ncols = agent_columns(agents, extra, headers, 7);
    headers[ncols++] = "ID";
    t = st_table_new(ncols, headers);
    /* LAST SEEN holds "3s ago": right-aligned like the numbers around it. */
    st_table_align(t, 3, ST_ALIGN_RIGHT);
    json_array_foreach(agents, i, a)
    {
        if (rv == ST_OK && t != NULL) {
            rv = agent_row(t, a, extra, now_ms);
        }
    }
    return finish_table(t, out, rv);
}

static int label_pair(const char *key, const json_t *v, bool first, st_buf *out)
{
    char *text = text_of(v, NULL);
    int rv = text == NULL ? ST_ENOMEM : st_buf_append_str(out, first ? "" : ", ");
    if (rv == ST_OK) {
        rv = st_fmt_sanitize(key, false, out);
    }
    if (rv == ST_OK) {
        rv = st_buf_append_str(out, "=\"");
    }
    if (rv == ST_OK) {
        rv = st_fmt_sanitize(text, false, out);
    }
    if (rv == ST_OK) {
        rv = st_buf_append_str(out, "\"");
    }
    free(text);
    return rv;
}

/* metric{k="v", k2="v2"}; the metric alone, or "(no labels)". */
static int labels_line(const char *metric, const json_t *labels, st_buf *out)
{
    const char *key;
    json_t *v;
    bool first = true;
    int rv = st_fmt_sanitize(metric != NULL ? metric : "", false, out);

    if (rv != ST_OK) {
        return rv;
    }
    if (json_object_size(labels) == 0) {
        return st_buf_append_str(out, metric != NULL ? "\n" : "(no labels)\n");
    }
    rv = st_buf_append_str(out, "{");
    json_object_foreach((json_t *)labels, key, v)
    {
        if (rv == ST_OK) {
            rv = label_pair(key, v, first, out);
        }
        first = false;
    }
    return rv == ST_OK ? st_buf_append_str(out, "}\n") : rv;
}

static int point_row(st_table *t, const json_t *p, const char *unit)
{
    char when[32];
    char *cells[2];
    int64_t ms;

    if (json_array_size(p) < 2 || !json_ms(json_array_get(p, 0), &ms)) {
        return ST_EPARSE;
    }
    st_time_format_utc(ms, when, sizeof(when));
    cells[0] = strdup(when);
    cells[1] = text_of(json_array_get(p, 1), unit);
    return add_owned_row(t, cells, 2);
}

static int series_block(const json_t *s, const char *metric, const char *unit, st_buf *out)
{
    static const char *const headers[] = {"TIME", "VALUE"};
    const json_t *points = json_object_get(s, "points");
    const char *own_unit = json_string_value(json_object_get(s, "unit"));
    size_t i;
    json_t *p;
    st_table *t;
    int rv;

    if (!json_is_object(s) || !json_is_array(points)) {
        return ST_EPARSE;
    }
    rv = labels_line(metric, json_object_get(s, "labels"), out);
    if (rv != ST_OK || json_array_size(points) == 0) {
        return rv == ST_OK ? st_buf_append_str(out, "(no points)\n") : rv;
    }
    t = st_table_new(2, headers);
    /* Values keep their column right-aligned even when some are "-". */
    st_table_align(t, 1, ST_ALIGN_RIGHT);
    json_array_foreach(points, i, p)
    {
        if (rv == ST_OK && t != NULL) {
            rv = point_row(t, p, own_unit != NULL ? own_unit : unit);
        }
    }
    return finish_table(t, out, rv);
}

int st_render_query(const json_t *doc, st_buf *out)
{
    const json_t *series = json_object_get(doc, "series");
    const char *unit = json_string_value(json_object_get(doc, "unit"));
    const char *metric = json_string_value(json_object_get(doc, "metric"));
    size_t i;
    json_t *s;
    int rv = ST_OK;

    if (!json_is_array(series)) {
        return ST_EPARSE;
    }
    if (json_array_size(series) == 0) {
        return st_buf_append_str(out, "no series matched\n");
    }
    json_array_foreach(series, i, s)
    {
        if (rv == ST_OK && i > 0) {
            rv = st_buf_append_str(out, "\n");
        }
        if (rv == ST_OK) {
            rv = series_block(s, metric, unit, out);
        }
    }
    return rv;
}

/* One row of a top answer: rank, label values in key order, value. */
static int top_row(st_table *t, size_t rank, const json_t *s, const char *unit, size_t nkeys,
                   const char *const *keys)
{
    const char *cells[ST_TOP_MAX_COLS];
    char rk[24];
    char val[64];
    const json_t *labels = json_object_get(s, "labels");
    const json_t *v = json_object_get(s, "value");
    snprintf(rk, sizeof(rk), "%zu", rank);
    cells[0] = rk;
    for (size_t k = 0; k < nkeys; k++) {
        const char *lv = json_string_value(json_object_get(labels, keys[k]));
        cells[k + 1] = lv != NULL ? lv : "";
    }
    if (json_is_number(v)) {
        st_fmt_value(json_number_value(v), unit, val, sizeof(val));
    } else {
        snprintf(val, sizeof(val), "-");
    }
    cells[nkeys + 1] = val;
    return st_table_add_row(t, cells);
}

int st_render_top(const json_t *doc, st_buf *out)
{
    const json_t *series = json_object_get(doc, "series");
    const char *unit = json_string_value(json_object_get(doc, "unit"));
    const char *headers[ST_TOP_MAX_COLS];
    const char *keys[ST_TOP_MAX_COLS];
    const json_t *first;
    const char *key;
    json_t *val;
    size_t nkeys = 0;
    size_t i;
    json_t *s;
    st_table *t;
    int rv = ST_OK;
    if (!json_is_array(series)) {
        return ST_EPARSE;
    }
    if (json_array_size(series) == 0) {
        return st_buf_append_str(out, "no series matched\n");
    }
    first = json_object_get(json_array_get(series, 0), "labels");
    headers[0] = "RANK";
    json_object_foreach((json_t *)first, key, val)
    {
        if (nkeys + 2 < ST_TOP_MAX_COLS) {
            keys[nkeys] = key;
            headers[++nkeys] = key;
        }
    }
    headers[nkeys + 1] = "VALUE";
    if ((t = st_table_new(nkeys + 2, headers)) == NULL) {
        return ST_ENOMEM;
    }
    st_table_align(t, 0, ST_ALIGN_RIGHT);
    st_table_align(t, nkeys + 1, ST_ALIGN_RIGHT);
    json_array_foreach(series, i, s)
    {
        if (rv == ST_OK) {
            rv = top_row(t, i + 1, s, unit, nkeys, keys);
        }
    }
    rv = rv == ST_OK ? st_table_render(t, out) : rv;
    st_table_free(t);
    return rv;
}

static const char *const finding_keys[] = {"id",   "priority", "severity", "layer",
                                           "rule", "status",   "entity",   "summary"};
#define FINDING_COLS (sizeof(finding_keys) / sizeof(finding_keys[0]))

static int finding_row(st_table *t, const json_t *f)
{
    char *cells[FINDING_COLS];
    if (!json_is_object(f)) {
        return ST_EPARSE;
    }
    for (size_t i = 0; i < FINDING_COLS; i++) {
        cells[i] = text_of(json_object_get(f, finding_keys[i]), NULL);
    }
    return add_owned_row(t, cells, FINDING_COLS);
}

int st_render_findings(const json_t *doc, st_buf *out)
{
    /* ID leads so `strata finding ID` and `strata ack ID` can be typed from
     * the list. */
    static const char *const headers[FINDING_COLS] = {"ID",   "PRIO",   "SEVERITY", "LAYER",
                                                      "RULE", "STATUS", "ENTITY",   "SUMMARY"};
    const json_t *findings = json_object_get(doc, "findings");
    size_t i;
    json_t *f;
    st_table *t;
    int rv = ST_OK;

    if (!json_is_array(findings)) {
        return ST_EPARSE;
    }
    if (json_array_size(findings) == 0) {
        return st_buf_append_str(out, "no findings\n");
    }
    t = st_table_new(FINDING_COLS, headers);
    st_table_align(t, 1, ST_ALIGN_RIGHT);
    st_table_max_width(t, 6, ENTITY_COLS);
    st_table_max_width(t, 7, SUMMARY_COLS);
    json_array_foreach(findings, i, f)
    {
        if (rv == ST_OK && t != NULL) {
            rv = finding_row(t, f);
        }
    }
    return finish_table(t, out, rv);
}

/* The finding outline: a YAML-like tree of the whole document. */
struct outline {
    st_buf *out;
    int64_t now_ms;
    bool dash; /* the next line starts a list element: "- " */
};

static int outline_object(struct outline *o, const json_t *obj, int depth);

static int indent(struct outline *o, int depth)
{
    int rv = ST_OK;
    int spaces = o->dash ? 2 * (depth - 1) : 2 * depth;
    for (int i = 0; i < spaces && rv == ST_OK; i++) {
        rv = st_buf_append(o->out, " ", 1);
    }
    if (rv == ST_OK && o->dash) {
        rv = st_buf_append_str(o->out, "- ");
    }
    o->dash = false;
    return rv;
}

/* Numbers under these keys take the unit their object names. */
static bool takes_unit(const char *key)
{
    static const char *const keys[] = {"value",   "values",   "baseline", "threshold", "target",
                                       "current", "observed", "before",   "after"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (strcmp(key, keys[i]) == 0) {
            return true;
        }
    }
    return false;
}

static int scalar_text(struct outline *o, const char *key, const json_t *v, const char *unit)
{
    char *text;
    int rv;

    if (has_suffix(key, "_unix_ms") && json_is_integer(v)) {
        char when[32];
        char ago[ST_FMT_VALUE_LEN];
        st_time_format_utc(json_integer_value(v), when, sizeof(when));
        st_fmt_ago(o->now_ms, json_integer_value(v), ago, sizeof(ago));
        return st_buf_printf(o->out, "%s (%s)", when, ago);
    }
    text = text_of(v, takes_unit(key) ? unit : NULL);
    if (text == NULL) {
        return ST_ENOMEM;
    }
    rv = st_fmt_sanitize(text, false, o->out);
    free(text);
    return rv;
}

/* "a, b, c" for an array of scalars. */
static int inline_array(struct outline *o, const char *key, const json_t *arr, const char *unit)
{
    size_t i;
    json_t *v;
    int rv = ST_OK;
    json_array_foreach(arr, i, v)
    {
        if (rv == ST_OK && i > 0) {
            rv = st_buf_append_str(o->out, ", ");
        }
        if (rv == ST_OK) {
            rv = scalar_text(o, key, v, unit);
        }
    }
    return rv == ST_OK ? st_buf_append_str(o->out, "\n") : rv;
}

static bool all_scalars(const json_t *arr)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (json_is_object(v) || json_is_array(v)) {
            return false;
        }
    }
    return true;
}

/* A multi-line string (an implementation's SQL or script) as "|" and its
 * lines indented below, tabs kept. */
static int block_string(struct outline *o, const char *s, int depth)
{
    int rv = st_buf_append_str(o->out, "|\n");
    while (rv == ST_OK && *s != '\0') {
        size_t n = strcspn(s, "\n");
        char *line = strndup(s, n);
        rv = line == NULL ? ST_ENOMEM : indent(o, depth);
        if (rv == ST_OK) {
            rv = st_fmt_sanitize(line, true, o->out);
        }
        if (rv == ST_OK) {
            rv = st_buf_append_str(o->out, "\n");
        }
        free(line);
        s += n + (s[n] == '\n');
    }
    return rv;
}

/* Elements one per line after "- "; objects as nested outlines. */
static int outline_array(struct outline *o, const json_t *arr, int depth)
{
    size_t i;
    json_t *v;
    int rv = st_buf_append_str(o->out, "\n");
    json_array_foreach(arr, i, v)
    {
        if (rv != ST_OK) {
            break;
        }
        /* "- " sits one level in from the key, the element's lines two. */
        o->dash = true;
        if (json_is_object(v) && json_object_size(v) > 0) {
            rv = outline_object(o, v, depth + 2);
            continue;
        }
        rv = indent(o, depth + 2);
        if (rv == ST_OK) {
            rv = scalar_text(o, "", v, NULL);
        }
        if (rv == ST_OK) {
            rv = st_buf_append_str(o->out, "\n");
        }
    }
    return rv;
}

/* The value after "key:": nested lines for a non-empty container, a block
 * for a multi-line string, else on the same line after pad spaces. */
static int outline_value(struct outline *o, const char *key, const json_t *v, const char *unit,
                         int depth, int pad)
{
    bool deep = depth >= MAX_OUTLINE_DEPTH;
    bool empty = json_object_size(v) + json_array_size(v) == 0;
    const char *s = json_string_value(v);
    int rv;

    if (json_is_object(v) && !empty && !deep) {
        rv = st_buf_append_str(o->out, "\n");
        return rv == ST_OK ? outline_object(o, v, depth + 1) : rv;
    }
    if (json_is_array(v) && !empty && !deep && !all_scalars(v)) {
        return outline_array(o, v, depth);
    }
    rv = st_buf_printf(o->out, "%*s", pad, "");
    if (rv == ST_OK && s != NULL && strchr(s, '\n') != NULL) {
        return block_string(o, s, depth + 1);
    }
    if (rv == ST_OK && json_is_array(v) && !empty && !deep) {
        return inline_array(o, key, v, unit);
    }
    if (rv == ST_OK) {
        rv = scalar_text(o, key, v, unit);
    }
    return rv == ST_OK ? st_buf_append_str(o->out, "\n") : rv;
}

/* Scalars first, their values aligned after the longest key, then nested
 * members; the server's order is kept within each group. */
static int outline_object(struct outline *o, const json_t *obj, int depth)
{
    const char *unit = json_string_value(json_object_get(obj, "unit"));
    const char *key;
    json_t *v;
    size_t keyw = 0;
    int rv = ST_OK;

    json_object_foreach((json_t *)obj, key, v)
    {
        if (!json_is_object(v) && !json_is_array(v) && st_fmt_width(key) > keyw) {
            keyw = st_fmt_width(key);
        }
    }
    for (int pass = 0; pass < 2; pass++) {
        json_object_foreach((json_t *)obj, key, v)
        {
            bool nested = json_is_object(v) || json_is_array(v);
            int pad = nested ? 1 : 1 + (int)(keyw - st_fmt_width(key));
            if (rv != ST_OK || nested != (pass == 1)) {
                continue;
            }
            rv = indent(o, depth);
            if (rv == ST_OK) {
                rv = st_fmt_sanitize(key, false, o->out);
            }
            if (rv == ST_OK) {
                rv = st_buf_append_str(o->out, ":");
            }
            if (rv == ST_OK) {
                rv = outline_value(o, key, v, unit, depth, pad);
            }
        }
    }
    return rv;
}

int st_render_finding(const json_t *doc, int64_t now_ms, st_buf *out)
{
    struct outline o = {.out = out, .now_ms = now_ms, .dash = false};
    if (!json_is_object(doc)) {
        return ST_EPARSE;
    }
    return outline_object(&o, doc, 0);
}

int st_render_json(const json_t *doc, st_buf *out)
{
    char *text;
    int rv;
    if (doc == NULL) {
        return ST_EINVAL;
    }
    text = json_dumps(doc, JSON_INDENT(2) | JSON_ENCODE_ANY);
    if (text == NULL) {
        return ST_ENOMEM;
    }
    rv = st_buf_append_str(out, text);
    free(text);
    return rv == ST_OK ? st_buf_append_str(out, "\n") : rv;
}
