/* strata.v1.Frame: unpacking under a memory budget, validation against the
 * limits of DESIGN.md "Wire", decoding the columnar point values, and the
 * JSON form printed by `strata-agent --once`. */
#include "frame.h"

#include "err.h"
#include "log.h"
#include "sketch.h"
#include "util.h"

#include <malloc.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOD "frame"
#define DETAIL_MAX 256
#define DETAIL_NAME_MAX 64

/* ---- Decoding ---------------------------------------------------------- */

/* protobuf-c allocates through this during unpack; blocks are plain malloc
 * ones (st_frame_free and frames built by hand share one free), and their
 * usable sizes are counted against a budget while unpack runs. */
typedef struct budget {
    size_t used;
    size_t limit;
} budget;

static void *budget_alloc(void *data, size_t size)
{
    budget *b = data;
    void *p = malloc(size > 0 ? size : 1);
    size_t u;
    if (p == NULL) {
        return NULL;
    }
    u = malloc_usable_size(p);
    if (u > b->limit || b->used > b->limit - u) {
        free(p);
        return NULL; /* protobuf-c turns this into a failed unpack */
    }
    b->used += u;
    return p;
}

static void budget_free(void *data, void *p)
{
    budget *b = data;
    if (p != NULL) {
        b->used -= malloc_usable_size(p);
        free(p);
    }
}

static bool read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (unsigned shift = 0; *p < end && shift < 64; shift += 7) {
        uint8_t c = *(*p)++;
        *v |= (uint64_t)(c & 0x7f) << shift;
        if ((c & 0x80) == 0) {
            return true;
        }
    }
    return false;
}

/* protobuf-c (1.4) copies a string field's wire bytes whole and adds a NUL,
 * without looking for NUL inside: "ab\0cd" reaches every C reader as "ab",
 * while other protobuf readers of the same bytes see all five. The unpacked
 * message has lost the lengths, so this walks the wire bytes (already
 * accepted by protobuf-c) with the descriptors and looks into every string
 * field, including those of nested messages. Frame has no recursive
 * messages, so the depth is that of the schema. */
static bool wire_strings_whole(const ProtobufCMessageDescriptor *d, const uint8_t *p,
                               const uint8_t *end)
{
    uint64_t key, v;
    while (p < end) {
        const ProtobufCFieldDescriptor *f;
        if (!read_varint(&p, end, &key) || (key >> 3) > UINT32_MAX) {
            return false;
        }
        switch (key & 7) {
        case 0:
            if (!read_varint(&p, end, &v)) {
                return false;
            }
            continue;
        case 1:
        case 5: {
            size_t n = (key & 7) == 1 ? 8 : 4;
            if ((size_t)(end - p) < n) {
                return false;
            }
            p += n;
            continue;
        }
        case 2:
            break;
        default:
            return false;
        }
        if (!read_varint(&p, end, &v) || v > (uint64_t)(end - p)) {
            return false;
        }
        f = protobuf_c_message_descriptor_get_field(d, (unsigned)(key >> 3));
        if (f != NULL && f->type == PROTOBUF_C_TYPE_STRING && memchr(p, 0, v) != NULL) {
            return false;
        }
        if (f != NULL && f->type == PROTOBUF_C_TYPE_MESSAGE &&
            !wire_strings_whole(f->descriptor, p, p + v)) {
            return false;
        }
        p += v;
    }
    return true;
}

int st_frame_decode(const uint8_t *p, size_t n, st_frame **out)
{
    budget b;
    ProtobufCAllocator a = {budget_alloc, budget_free, &b};
    st_frame *f;

    if ((p == NULL && n > 0) || out == NULL) {
        return ST_EINVAL;
    }
    if (n > ST_ENV_MAX_PAYLOAD) {
        return ST_EFRAME_DECODE;
    }
    b.used = 0;
    b.limit = ST_FRAME_DECODE_FACTOR * n + ST_FRAME_DECODE_SLACK;
    f = strata__v1__frame__unpack(&a, n, p);
    if (f == NULL) {
        ST_DEBUG(MOD, "unpack of %zu bytes failed (budget %zu bytes)", n, b.limit);
        return ST_EFRAME_DECODE;
    }
    if (!wire_strings_whole(&strata__v1__frame__descriptor, p, p + n)) {
        st_frame_free(f);
        return ST_EFRAME_UTF8;
    }
    *out = f;
    return ST_OK;
}

void st_frame_free(st_frame *f)
{
    if (f == NULL) {
        return;
    }
    strata__v1__frame__free_unpacked(f, NULL); /* plain free, as budget_alloc used malloc */
}

int st_frame_encode(const st_frame *f, st_buf *out)
{
    size_t n;
    int rv;

    if (f == NULL || out == NULL) {
        return ST_EINVAL;
    }
    st_buf_reset(out);
    n = strata__v1__frame__get_packed_size(f);
    if (n > ST_ENV_MAX_PAYLOAD) {
        return ST_ETOOBIG;
    }
    if ((rv = st_buf_reserve(out, n)) != ST_OK) {
        return rv;
    }
    out->len = strata__v1__frame__pack(f, out->data);
    return ST_OK;
}

/* ---- Validation -------------------------------------------------------- */

/* The detail of the last failure on this thread (frame.h). */
static _Thread_local char detail_buf[DETAIL_MAX];

/* A series name fit for a log line: at most DETAIL_NAME_MAX bytes, anything
 * but printable ASCII replaced, since the name is what failed to validate. */
static const char *printable(const char *s, char out[DETAIL_NAME_MAX + 1])
{
    size_t i = 0;
    for (; s != NULL && s[i] != '\0' && i < DETAIL_NAME_MAX; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') ? '?' : (char)c;
    }
    out[i] = '\0';
    return out;
}

static int fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail_buf, sizeof(detail_buf), fmt, ap);
    va_end(ap);
    return code;
}

/* Series failures name the series by index and (printable) name. */
static int fail_series(int code, size_t i, const Strata__V1__Series *s, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail_series(int code, size_t i, const Strata__V1__Series *s, const char *fmt, ...)
{
    char name[DETAIL_NAME_MAX + 1];
    char what[DETAIL_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return fail(code, "series %zu \"%s\": %s", i, printable(s->name, name), what);
}

/* Length (NAME for name-class limits, VALUE otherwise), emptiness and
 * UTF-8 of one string. */
static int check_string(const char *s, size_t max, bool required)
{
    size_t n = s != NULL ? strnlen(s, max + 1) : 0;
    if (n == 0 && required) {
        return ST_EFRAME_NAME;
    }
    if (n > max) {
        return max <= ST_FRAME_MAX_NAME ? ST_EFRAME_NAME : ST_EFRAME_VALUE;
    }
    return st_utf8_valid(s, n) ? ST_OK : ST_EFRAME_UTF8;
}

/* Checks a label list; on failure *bad is the label at fault and *what
 * names the part. Duplicate keys would make two series one. */
static int check_labels(Strata__V1__Label *const *l, size_t n, size_t *bad, const char **what)
{
    int rv;
    if (n > ST_FRAME_MAX_LABELS) {
        *bad = n;
        *what = "labels";
        return ST_EFRAME_LABELS;
    }
    for (size_t i = 0; i < n; i++) {
        *bad = i;
        *what = "key";
        if ((rv = check_string(l[i]->key, ST_FRAME_MAX_NAME, true)) != ST_OK) {
            return rv;
        }
        *what = "value";
        if ((rv = check_string(l[i]->value, ST_FRAME_MAX_VALUE, false)) != ST_OK) {
            return rv;
        }
        *what = "duplicate key";
        for (size_t k = 0; k < i; k++) {
            if (strcmp(l[k]->key, l[i]->key) == 0) {
                return ST_EFRAME_LABELS;
            }
        }
    }
    return ST_OK;
}

static int check_identity(const st_frame *f, const st_envelope *env)
{
    if (f->agent_id.len != 16 || f->agent_id.data == NULL) {
        return fail(ST_EFRAME_AGENT, "agent_id is %zu bytes, not 16", f->agent_id.len);
    }
    if (env == NULL) {
        return ST_OK;
    }
    if (memcmp(f->agent_id.data, env->agent_id, 16) != 0) {
        return fail(ST_EFRAME_AGENT, "agent_id differs from the envelope's");
    }
    if (f->seq != env->seq) {
        return fail(ST_EFRAME_AGENT, "seq %llu differs from the envelope's %llu",
                    (unsigned long long)f->seq, (unsigned long long)env->seq);
    }
    return ST_OK;
}

static int check_agent(const Strata__V1__Agent *a)
{
    const char *what = NULL;
    size_t bad = 0;
    int rv;

    if (a == NULL) {
        return fail(ST_EFRAME_NAME, "agent missing");
    }
    if ((rv = check_string(a->host, ST_FRAME_MAX_NAME, true)) != ST_OK) {
        return fail(rv, "agent.host");
    }
    if ((unsigned)a->role > STRATA__V1__ROLE__DB) {
        return fail(ST_EFRAME_DECODE, "agent.role %d unknown", (int)a->role);
    }
    if ((rv = check_string(a->version, ST_FRAME_MAX_NAME, false)) != ST_OK) {
        return fail(rv, "agent.version");
    }
    if ((rv = check_string(a->boot_id, ST_FRAME_MAX_VALUE, false)) != ST_OK) {
        return fail(rv, "agent.boot_id");
    }
    if ((rv = check_labels(a->labels, a->n_labels, &bad, &what)) != ST_OK) {
        return fail(rv, "agent.labels[%zu] %s", bad, what);
    }
    return ST_OK;
}

static int check_action_result(const Strata__V1__ActionResult *r, size_t i)
{
    const char *const s[] = {r->action_id, r->type, r->finding_id, r->error, r->output};
    const char *const names[] = {"action_id", "type", "finding_id", "error", "output"};
    int rv;

    if ((unsigned)r->status > STRATA__V1__ACTION_STATUS__ACTION_TIMEOUT) {
        return fail(ST_EFRAME_DECODE, "action_results[%zu].status %d unknown", i, (int)r->status);
    }
    for (size_t k = 0; k < ST_ARRAY_LEN(s); k++) {
        if ((rv = check_string(s[k], ST_FRAME_MAX_VALUE, k == 0)) != ST_OK) {
            return fail(rv, "action_results[%zu].%s", i, names[k]);
        }
    }
    return ST_OK;
}

size_t st_series_npoints(const Strata__V1__Series *s)
{
    if (s->n_ivalues > 0) {
        return s->n_ivalues;
    }
    return s->n_values > 0 ? s->n_values : s->n_sketches;
}

/* The column layout: one value column that fits the kind, paired min/max
 * columns on gauges only, bounded point count and scale. */
static int check_columns(const Strata__V1__Series *s, size_t i)
{
    size_t n = st_series_npoints(s);
    int cols = (s->n_ivalues > 0) + (s->n_values > 0) + (s->n_sketches > 0);
    bool dist = s->kind == STRATA__V1__KIND__DISTRIBUTION;

    if ((int)s->kind < STRATA__V1__KIND__COUNTER || (int)s->kind > STRATA__V1__KIND__DISTRIBUTION) {
        return fail_series(ST_EFRAME_POINTS, i, s, "kind %d unknown", (int)s->kind);
    }
    if (cols != 1) {
        return fail_series(ST_EFRAME_POINTS, i, s,
                           "%d of ivalues, values, sketches hold points, not exactly 1", cols);
    }
    if (dist != (s->n_sketches > 0)) {
        return fail_series(ST_EFRAME_POINTS, i, s, "distributions, and only they, use sketches");
    }
    if (n > ST_FRAME_MAX_POINTS) {
        return fail_series(ST_EFRAME_POINTS, i, s, "%zu points, over %d", n, ST_FRAME_MAX_POINTS);
    }
    if (s->interval_ms == 0) {
        return fail_series(ST_EFRAME_POINTS, i, s, "interval_ms is 0");
    }
    if (s->scale < -ST_FRAME_MAX_SCALE || s->scale > ST_FRAME_MAX_SCALE) {
        return fail_series(ST_EFRAME_POINTS, i, s, "scale %d out of range", (int)s->scale);
    }
    if ((s->n_mins > 0 || s->n_maxs > 0) && s->kind != STRATA__V1__KIND__GAUGE) {
        return fail_series(ST_EFRAME_POINTS, i, s, "mins/maxs on a series that is not a gauge");
    }
    if (s->n_mins != s->n_maxs || (s->n_mins > 0 && s->n_mins != n)) {
        return fail_series(ST_EFRAME_POINTS, i, s, "%zu mins and %zu maxs for %zu points",
                           s->n_mins, s->n_maxs, n);
    }
    return ST_OK;
}

static int check_numbers(const Strata__V1__Series *s, size_t i)
{
    int64_t sum = 0;
    for (size_t k = 0; k < s->n_values; k++) {
        if (!isfinite(s->values[k])) {
            return fail_series(ST_EFRAME_NUMBER, i, s, "values[%zu] not finite", k);
        }
    }
    for (size_t k = 0; k < s->n_mins; k++) {
        if (!isfinite(s->mins[k]) || !isfinite(s->maxs[k])) {
            return fail_series(ST_EFRAME_NUMBER, i, s, "mins/maxs[%zu] not finite", k);
        }
        if (s->mins[k] > s->maxs[k]) {
            return fail_series(ST_EFRAME_POINTS, i, s, "mins[%zu] > maxs[%zu]", k, k);
        }
    }
    /* Deltas must add up without overflow, so every decoded value exists. */
    for (size_t k = 0; k < s->n_ivalues; k++) {
        if (__builtin_add_overflow(sum, s->ivalues[k], &sum)) {
            return fail_series(ST_EFRAME_POINTS, i, s, "ivalues overflow at %zu", k);
        }
    }
    for (size_t k = 0; k < s->n_sketches; k++) {
        const Strata__V1__Sketch *m = s->sketches[k];
        if (!isfinite(m->alpha) || !isfinite(m->sum) || !isfinite(m->min) || !isfinite(m->max)) {
            return fail_series(ST_EFRAME_NUMBER, i, s, "sketches[%zu] not finite", k);
        }
        if (st_sketch_proto_validate(m) != ST_OK) {
            return fail_series(ST_EFRAME_SKETCH, i, s, "sketches[%zu] malformed", k);
        }
    }
    return ST_OK;
}

static int64_t add_sat(int64_t a, int64_t b)
{
    int64_t r;
    if (__builtin_add_overflow(a, b, &r)) {
        return b > 0 ? INT64_MAX : INT64_MIN;
    }
    return r;
}

/* Every point must start within [now - max_age, now + max_future]; the
 * points are back to back, so the first and the last decide. */
static int check_times(const Strata__V1__Series *s, size_t i, const st_frame_limits *lim)
{
    int64_t lo = add_sat(lim->now_ms, lim->max_age_ms > 0 ? -lim->max_age_ms : 0);
    int64_t hi = add_sat(lim->now_ms, lim->max_future_ms > 0 ? lim->max_future_ms : 0);
    int64_t span = (int64_t)(st_series_npoints(s) - 1) * s->interval_ms; /* < 2^44 */
    int64_t last = add_sat(s->start_unix_ms, span);

    if (s->start_unix_ms < lo || s->start_unix_ms > hi || last > hi) {
        return fail_series(ST_EFRAME_TIME, i, s, "points start %lld..%lld, allowed %lld..%lld",
                           (long long)s->start_unix_ms, (long long)last, (long long)lo,
                           (long long)hi);
    }
    return ST_OK;
}

static int check_series(const Strata__V1__Series *s, size_t i, const st_frame_limits *lim)
{
    const char *what = NULL;
    size_t bad = 0;
    int rv;

    if ((rv = check_string(s->name, ST_FRAME_MAX_NAME, true)) != ST_OK) {
        return fail_series(rv, i, s, "name");
    }
    if ((rv = check_labels(s->labels, s->n_labels, &bad, &what)) != ST_OK) {
        return fail_series(rv, i, s, "labels[%zu] %s", bad, what);
    }
    if ((unsigned)s->layer > STRATA__V1__LAYER__INFRASTRUCTURE) {
        return fail_series(ST_EFRAME_DECODE, i, s, "layer %d unknown", (int)s->layer);
    }
    if ((rv = check_string(s->unit, ST_FRAME_MAX_NAME, false)) != ST_OK) {
        return fail_series(rv, i, s, "unit");
    }
    if ((rv = check_columns(s, i)) != ST_OK || (rv = check_numbers(s, i)) != ST_OK) {
        return rv;
    }
    if (lim != NULL && (rv = check_times(s, i, lim)) != ST_OK) {
        return rv;
    }
    return ST_OK;
}

int st_frame_validate(const st_frame *f, const st_envelope *env, const st_frame_limits *lim,
                      const char **detail)
{
    int rv;

    detail_buf[0] = '\0';
    if (detail != NULL) {
        *detail = NULL;
    }
    if (f == NULL) {
        return ST_EINVAL;
    }
    if ((rv = check_identity(f, env)) != ST_OK || (rv = check_agent(f->agent)) != ST_OK) {
        goto out;
    }
    if (f->n_series > ST_FRAME_MAX_SERIES) {
        rv = fail(ST_EFRAME_SERIES, "%zu series, over %d", f->n_series, ST_FRAME_MAX_SERIES);
        goto out;
    }
    for (size_t i = 0; i < f->n_series; i++) {
        if ((rv = check_series(f->series[i], i, lim)) != ST_OK) {
            goto out;
        }
    }
    for (size_t i = 0; i < f->n_action_results; i++) {
        if ((rv = check_action_result(f->action_results[i], i)) != ST_OK) {
            goto out;
        }
    }
out:
    if (rv != ST_OK && detail != NULL) {
        *detail = detail_buf;
    }
    return rv;
}

/* ---- Point values ------------------------------------------------------ */

/* Exact powers of ten: dividing by an exact 10^s rounds once, where
 * multiplying by an inexact 10^-s would round twice. */
static const double pow10_tab[ST_FRAME_MAX_SCALE + 1] = {
    1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,
    1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18,
};

static double unscale(int64_t v, int32_t scale)
{
    if (scale < -ST_FRAME_MAX_SCALE || scale > ST_FRAME_MAX_SCALE) {
        return NAN;
    }
    return scale >= 0 ? (double)v / pow10_tab[scale] : (double)v * pow10_tab[-scale];
}

double st_series_value(const Strata__V1__Series *s, size_t i)
{
    uint64_t sum = 0; /* unsigned: an unvalidated series may overflow */
    if (i >= st_series_npoints(s)) {
        return NAN;
    }
    if (s->n_ivalues > 0) {
        for (size_t k = 0; k <= i; k++) {
            sum += (uint64_t)s->ivalues[k];
        }
        return unscale((int64_t)sum, s->scale);
    }
    return s->n_values > 0 ? s->values[i] : NAN;
}

void st_series_values(const Strata__V1__Series *s, double *out)
{
    size_t n = st_series_npoints(s);
    uint64_t sum = 0;
    for (size_t k = 0; k < n; k++) {
        if (s->n_ivalues > 0) {
            sum += (uint64_t)s->ivalues[k];
            out[k] = unscale((int64_t)sum, s->scale);
        } else {
            out[k] = s->n_values > 0 ? s->values[k] : NAN;
        }
    }
}

/* ---- JSON -------------------------------------------------------------- */

static const char *const role_names[] = {"unspecified", "edge", "cdn", "app", "db"};
static const char *const layer_names[] = {"unspecified", "database", "function",
                                          "frontend",    "realtime", "infrastructure"};
static const char *const kind_names[] = {"unspecified", "counter", "gauge", "distribution"};
static const char *const status_names[] = {"unspecified", "ok", "failed", "refused", "timeout"};

static const char *enum_name(const char *const *names, size_t n, int v)
{
    return v >= 0 && (size_t)v < n ? names[v] : "unknown";
}

#define ENUM_NAME(tab, v) enum_name(tab, ST_ARRAY_LEN(tab), (int)(v))

/* NULL (and so a failed set) on invalid UTF-8. */
static json_t *jstr(const char *s)
{
    return json_string(s != NULL ? s : "");
}

/* Non-finite numbers have no JSON form; they show as null. */
static json_t *jreal(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

static json_t *jlabels(Strata__V1__Label *const *l, size_t n)
{
    json_t *o = json_object();
    for (size_t i = 0; o != NULL && i < n; i++) {
        if (l[i]->key == NULL || json_object_set_new(o, l[i]->key, jstr(l[i]->value)) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

/* json_object_set_new takes the value even on failure, so a chain of sets
 * needs only one check at the end. */
static int jset(json_t *o, const char *key, json_t *v)
{
    return json_object_set_new(o, key, v) != 0;
}

static json_t *jagent(const Strata__V1__Agent *a)
{
    json_t *o;
    int bad = 0;
    if (a == NULL) {
        return json_null();
    }
    if ((o = json_object()) == NULL) {
        return NULL;
    }
    bad |= jset(o, "host", jstr(a->host));
    bad |= jset(o, "role", json_string(ENUM_NAME(role_names, a->role)));
    bad |= jset(o, "labels", jlabels(a->labels, a->n_labels));
    bad |= jset(o, "version", jstr(a->version));
    bad |= jset(o, "boot_id", jstr(a->boot_id));
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* count, sum, min, max and quantiles of one point's sketch. */
static int jsketch(json_t *o, const Strata__V1__Sketch *m)
{
    static const struct {
        const char *key;
        double q;
    } qs[] = {{"p50", 0.50}, {"p90", 0.90}, {"p95", 0.95}, {"p99", 0.99}};
    st_sketch *sk = NULL;
    int bad = 0, rv;

    if ((rv = st_sketch_proto_validate(m)) != ST_OK || (rv = st_sketch_from_proto(m, &sk)) != 0) {
        return rv;
    }
    bad |= jset(o, "count", json_integer((json_int_t)st_sketch_count(sk)));
    bad |= jset(o, "sum", jreal(st_sketch_sum(sk)));
    bad |= jset(o, "min", st_sketch_count(sk) > 0 ? jreal(st_sketch_min(sk)) : json_null());
    bad |= jset(o, "max", st_sketch_count(sk) > 0 ? jreal(st_sketch_max(sk)) : json_null());
    for (size_t k = 0; k < ST_ARRAY_LEN(qs); k++) {
        bad |= jset(o, qs[k].key, jreal(st_sketch_quantile(sk, qs[k].q)));
    }
    st_sketch_free(sk);
    return bad ? ST_ENOMEM : ST_OK;
}

/* One point: its interval, then a value (min/max), or a sketch summary. */
static int jpoint(const Strata__V1__Series *s, size_t k, double v, int64_t isum, json_t *arr)
{
    json_t *o = json_object();
    int64_t start = (int64_t)((uint64_t)s->start_unix_ms + (uint64_t)k * s->interval_ms);
    int bad = 0, rv = ST_OK;

    if (o == NULL || json_array_append_new(arr, o) != 0) {
        return ST_ENOMEM;
    }
    bad |= jset(o, "start_unix_ms", json_integer(start));
    bad |= jset(o, "interval_ms", json_integer(s->interval_ms));
    if (s->n_sketches > 0) {
        rv = jsketch(o, s->sketches[k]);
    } else if (s->n_ivalues > 0 && s->scale == 0) {
        /* Integers stay integers: exact, and what a counter reader expects. */
        bad |= jset(o, "value", json_integer(isum));
    } else {
        bad |= jset(o, "value", jreal(v));
    }
    if (s->n_mins == st_series_npoints(s) && s->n_maxs == s->n_mins && s->n_sketches == 0) {
        bad |= jset(o, "min", jreal(s->mins[k]));
        bad |= jset(o, "max", jreal(s->maxs[k]));
    }
    return rv != ST_OK ? rv : bad ? ST_ENOMEM : ST_OK;
}

static int jpoints(const Strata__V1__Series *s, json_t *arr)
{
    size_t n = st_series_npoints(s);
    double *vals = NULL;
    uint64_t isum = 0; /* the exact integer behind an unscaled ivalue */
    int rv = ST_OK;

    if (n > ST_FRAME_MAX_POINTS) {
        return ST_EFRAME_POINTS;
    }
    if (n > 0 && (vals = malloc(n * sizeof(*vals))) == NULL) {
        return ST_ENOMEM;
    }
    if (n > 0) {
        st_series_values(s, vals);
    }
    for (size_t k = 0; k < n && rv == ST_OK; k++) {
        isum += k < s->n_ivalues ? (uint64_t)s->ivalues[k] : 0;
        rv = jpoint(s, k, vals[k], (int64_t)isum, arr);
    }
    free(vals);
    return rv;
}

static int jseries(const Strata__V1__Series *s, json_t *arr)
{
    json_t *o = json_object();
    json_t *pts = json_array();
    int bad = 0, rv;

    rv = (o == NULL || pts == NULL) ? ST_ENOMEM : jpoints(s, pts);
    if (rv != ST_OK) {
        json_decref(o);
        json_decref(pts);
        return rv;
    }
    bad |= jset(o, "name", jstr(s->name));
    bad |= jset(o, "labels", jlabels(s->labels, s->n_labels));
    bad |= jset(o, "layer", json_string(ENUM_NAME(layer_names, s->layer)));
    bad |= jset(o, "unit", jstr(s->unit));
    bad |= jset(o, "kind", json_string(ENUM_NAME(kind_names, s->kind)));
    bad |= jset(o, "points", pts);
    if (bad) {
        json_decref(o); /* invalid UTF-8, most likely */
        return ST_EINVAL;
    }
    return json_array_append_new(arr, o) == 0 ? ST_OK : ST_ENOMEM;
}

static json_t *jaction(const Strata__V1__ActionResult *r)
{
    json_t *o = json_object();
    int bad = 0;
    if (o == NULL) {
        return NULL;
    }
    bad |= jset(o, "action_id", jstr(r->action_id));
    bad |= jset(o, "type", jstr(r->type));
    bad |= jset(o, "finding_id", jstr(r->finding_id));
    bad |= jset(o, "status", json_string(ENUM_NAME(status_names, r->status)));
    bad |= jset(o, "exit_status", json_integer(r->exit_status));
    bad |= jset(o, "duration_ms", json_integer(r->duration_ms));
    bad |= jset(o, "error", jstr(r->error));
    bad |= jset(o, "output", jstr(r->output));
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* agent_id as a UUID string when it has the right length, hex otherwise. */
static json_t *jagent_id(const ProtobufCBinaryData *id)
{
    char buf[2 * 16 + 1];
    if (id->len == 16) {
        char uuid[37];
        st_uuid_format(id->data, uuid);
        return json_string(uuid);
    }
    if (id->len > 16) {
        return json_null();
    }
    st_hex_encode(id->data, id->len, buf);
    return json_string(buf);
}

/* seq is a uint64; JSON integers here are int64, so huge ones go as text. */
static json_t *jseq(uint64_t seq)
{
    char buf[24];
    if (seq <= INT64_MAX) {
        return json_integer((json_int_t)seq);
    }
    snprintf(buf, sizeof(buf), "%llu", (unsigned long long)seq);
    return json_string(buf);
}

static int jframe_lists(const st_frame *f, json_t *series, json_t *actions)
{
    int rv;
    for (size_t i = 0; i < f->n_series; i++) {
        if ((rv = jseries(f->series[i], series)) != ST_OK) {
            return rv;
        }
    }
    for (size_t i = 0; i < f->n_action_results; i++) {
        if (json_array_append_new(actions, jaction(f->action_results[i])) != 0) {
            return ST_EINVAL;
        }
    }
    return ST_OK;
}

int st_frame_to_json(const st_frame *f, json_t **out)
{
    json_t *o = NULL, *series = json_array(), *actions = json_array();
    int bad = 0, rv = ST_ENOMEM;

    if (f == NULL || out == NULL) {
        rv = ST_EINVAL;
        goto out;
    }
    if (series == NULL || actions == NULL || (o = json_object()) == NULL) {
        goto out;
    }
    bad |= jset(o, "agent_id", jagent_id(&f->agent_id));
    bad |= jset(o, "seq", jseq(f->seq));
    bad |= jset(o, "sent_unix_ms", json_integer(f->sent_unix_ms));
    bad |= jset(o, "agent", jagent(f->agent));
    if (bad) {
        rv = ST_EINVAL;
        goto out;
    }
    if ((rv = jframe_lists(f, series, actions)) != ST_OK) {
        goto out;
    }
    if (jset(o, "series", series) | jset(o, "action_results", actions)) {
        series = actions = NULL; /* taken by jset either way */
        rv = ST_ENOMEM;
        goto out;
    }
    *out = o;
    return ST_OK;
out:
    json_decref(actions);
    json_decref(series);
    json_decref(o);
    return rv;
}
