/* RUM beacon parsing with jansson and page normalisation; see rum_beacon.h.
 * A beacon is checked whole before anything of it is used, so a 400 means
 * none of it was counted and a 204 means all of it was. */
#include "rum_beacon.h"

#include "err.h"
#include "util.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const vital_names[ST_RUM_NVITALS] = {"FCP", "LCP", "TTFB", "INP", "TTI", "CLS"};
static const char *const vital_series[ST_RUM_NVITALS] = {"web.vitals.fcp",  "web.vitals.lcp",
                                                         "web.vitals.ttfb", "web.vitals.inp",
                                                         "web.vitals.tti",  "web.vitals.cls"};

const char *st_rum_vital_series(enum st_rum_vital v)
{
    return (unsigned)v < ST_RUM_NVITALS ? vital_series[v] : "";
}

/* ---- pages ---- */

static bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Digits, a UUID, or 16+ hex digits: an identifier, not a page. */
static bool is_id(const char *s, size_t n)
{
    size_t digits = 0;
    size_t hex = 0;
    bool uuid = n == 36;
    for (size_t i = 0; i < n; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        digits += s[i] >= '0' && s[i] <= '9';
        hex += is_hex(s[i]);
        uuid = uuid && (dash ? s[i] == '-' : is_hex(s[i]));
    }
    return uuid || digits == n || (n >= 16 && hex == n);
}

/* Past "scheme://host" or "//host" to the path, if the text has them. */
static const char *skip_origin(const char *p, const char *end)
{
    const char *q = p;
    if (end - p >= 2 && p[0] == '/' && p[1] == '/') {
        q = p + 2;
    } else {
        while (q < end &&
               ((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') ||
                (q > p && ((*q >= '0' && *q <= '9') || *q == '+' || *q == '-' || *q == '.')))) {
            q++;
        }
        if (q == p || end - q < 3 || memcmp(q, "://", 3) != 0) {
            return p;
        }
        q += 3;
    }
    while (q < end && *q != '/' && *q != '?' && *q != '#') {
        q++;
    }
    return q;
}

/* Appends n bytes, or as many as fit under ST_RUM_MAX_PAGE without
 * splitting a UTF-8 sequence; false once the page is full. */
static bool append(char *out, size_t *o, const char *s, size_t n)
{
    size_t room = ST_RUM_MAX_PAGE - *o;
    bool fits = n <= room;
    if (!fits) {
        n = room;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) {
            n--;
        }
    }
    memcpy(out + *o, s, n);
    *o += n;
    return fits;
}

int st_rum_page_normalize(const char *in, size_t len, char *out, size_t cap)
{
    const char *end = in + len;
    const char *p;
    size_t o = 1;
    if (len == 0 || len > ST_RUM_MAX_PAGE_IN || cap <= ST_RUM_MAX_PAGE) {
        return ST_EINVAL;
    }
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)in[i] < 0x20 || in[i] == 0x7f) {
            return ST_EINVAL;
        }
    }
    p = skip_origin(in, end);
    for (const char *q = p; q < end; q++) {
        if (*q == '?' || *q == '#') {
            end = q;
            break;
        }
    }
    out[0] = '/';
    while (p < end) {
        const char *seg;
        while (p < end && *p == '/') {
            p++;
        }
        seg = p;
        while (p < end && *p != '/') {
            p++;
        }
        if (p == seg) {
            break;
        }
        if ((o > 1 && !append(out, &o, "/", 1)) ||
            !append(out, &o, is_id(seg, (size_t)(p - seg)) ? ":id" : seg,
                    is_id(seg, (size_t)(p - seg)) ? 3 : (size_t)(p - seg))) {
            break;
        }
    }
    out[o] = '\0';
    return ST_OK;
}

/* ---- beacons ---- */

/* Formats the error into err (may be NULL) and returns rv. */
static int entry_fail(char *err, size_t errlen, long idx, int rv, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int entry_fail(char *err, size_t errlen, long idx, int rv, const char *fmt, ...)
{
    va_list ap;
    int n = 0;
    if (err == NULL || errlen == 0) {
        return rv;
    }
    if (idx >= 0) {
        n = snprintf(err, errlen, "entry %ld: ", idx);
    }
    if (n >= 0 && (size_t)n < errlen) {
        va_start(ap, fmt);
        vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return rv;
}

/* A number field in [0, max]; missing is ST_ENOENT. */
static int number_field(const json_t *o, const char *key, double max, double *out)
{
    const json_t *v = json_object_get(o, key);
    double x;
    if (v == NULL) {
        return ST_ENOENT;
    }
    if (!json_is_number(v)) {
        return ST_EINVAL;
    }
    x = json_number_value(v);
    if (!(x >= 0 && x <= max)) {
        return ST_EINVAL;
    }
    *out = x;
    return ST_OK;
}

/* A string field of 1..max bytes; missing is ST_ENOENT. */
static int string_field(const json_t *o, const char *key, size_t max, const char **out, size_t *len)
{
    const json_t *v = json_object_get(o, key);
    if (v == NULL) {
        return ST_ENOENT;
    }
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > max) {
        return ST_EINVAL;
    }
    *out = json_string_value(v);
    *len = json_string_length(v);
    return ST_OK;
}

static int page_field(const json_t *o, bool required, char *page, char *err, size_t errlen,
                      long idx)
{
    const char *s = NULL;
    size_t n = 0;
    int rv = string_field(o, "page", ST_RUM_MAX_PAGE_IN, &s, &n);
    if (rv == ST_ENOENT && !required) {
        page[0] = '\0';
        return ST_OK;
    }
    if (rv == ST_ENOENT) {
        return entry_fail(err, errlen, idx, ST_EINVAL, "missing 'page'");
    }
    if (rv != ST_OK || st_rum_page_normalize(s, n, page, ST_RUM_MAX_PAGE + 1) != ST_OK) {
        return entry_fail(err, errlen, idx, ST_EINVAL,
                          "'page' must be a path or URL of 1 to %d bytes without control "
                          "characters",
                          ST_RUM_MAX_PAGE_IN);
    }
    return ST_OK;
}

static int parse_vital(const json_t *o, st_rum_entry *e, char *err, size_t errlen, long idx)
{
    const char *name = NULL;
    const char *id = NULL;
    size_t n = 0;
    int rv = string_field(o, "name", 8, &name, &n);
    double max;
    e->kind = ST_RUM_VITAL;
    e->vital = ST_RUM_NVITALS;
    for (int v = 0; rv == ST_OK && v < ST_RUM_NVITALS; v++) {
        if (strcasecmp(name, vital_names[v]) == 0) {
            e->vital = (enum st_rum_vital)v;
        }
    }
    if (rv == ST_ENOENT) {
        return entry_fail(err, errlen, idx, ST_EINVAL, "missing 'name'");
    }
    if (e->vital == ST_RUM_NVITALS) {
        return entry_fail(err, errlen, idx, ST_EINVAL,
                          "'name' must be FCP, LCP, TTFB, INP, TTI or CLS");
    }
    max = e->vital == ST_RUM_CLS ? ST_RUM_MAX_CLS : ST_RUM_MAX_TIMING_MS;
    if ((rv = number_field(o, "value", max, &e->value)) == ST_ENOENT) {
        return entry_fail(err, errlen, idx, ST_EINVAL, "missing 'value'");
    }
    if (rv != ST_OK) {
        return entry_fail(err, errlen, idx, ST_EINVAL, "'value' must be a number from 0 to %.0f%s",
                          max, e->vital == ST_RUM_CLS ? "" : " (ms)");
    }
    if (string_field(o, "id", ST_RUM_MAX_ID, &id, &n) == ST_EINVAL) {
        return entry_fail(err, errlen, idx, ST_EINVAL, "'id' must be a string of 1 to %d bytes",
                          ST_RUM_MAX_ID);
    }
    if (e->vital != ST_RUM_CLS) {
        e->value /= 1000.0; /* ms to seconds, the catalog's unit */
    }
    return page_field(o, true, e->page, err, errlen, idx);
}

/* Resource timing: a response served from the browser cache has no
 * transfer but a body; a transfer went to the network. A cross-origin
 * resource without Timing-Allow-Origin reports every size as 0, hit or
 * not: counting those as misses would drag the hit ratio of any site with
 * third-party assets under the BROWSER_CACHING threshold. */
static int parse_resource(const json_t *o, st_rum_entry *e, char *err, size_t errlen, long idx)
{
    const char *url = NULL;
    size_t n = 0;
    double transfer = 0;
    double encoded = 0;
    double decoded = 0;
    int rv;
    e->kind = ST_RUM_RESOURCE;
    if (string_field(o, "name", ST_RUM_MAX_PAGE_IN, &url, &n) != ST_OK) {
        return entry_fail(err, errlen, idx, ST_EINVAL,
                          "'name' must be the resource URL (1 to %d bytes)", ST_RUM_MAX_PAGE_IN);
    }
    if ((rv = number_field(o, "transferSize", ST_RUM_MAX_BYTES, &transfer)) != ST_OK) {
        return entry_fail(err, errlen, idx, ST_EINVAL,
                          rv == ST_ENOENT ? "missing 'transferSize'"
                                          : "'transferSize' must be a byte count");
    }
    if (number_field(o, "encodedBodySize", ST_RUM_MAX_BYTES, &encoded) == ST_EINVAL ||
        number_field(o, "decodedBodySize", ST_RUM_MAX_BYTES, &decoded) == ST_EINVAL) {
        return entry_fail(err, errlen, idx, ST_EINVAL,
                          "'encodedBodySize' and 'decodedBodySize' must be byte counts");
    }
    e->cache = transfer > 0                   ? ST_RUM_MISS
               : (encoded > 0 || decoded > 0) ? ST_RUM_HIT
                                              : ST_RUM_OPAQUE;
    return page_field(o, false, e->page, err, errlen, idx);
}

static int parse_entry(const json_t *o, st_rum_entry *e, char *err, size_t errlen, long idx)
{
    const json_t *type;
    if (!json_is_object(o)) {
        return entry_fail(err, errlen, idx, ST_EINVAL,
                          idx < 0 ? "a beacon is a JSON object or an array of objects"
                                  : "not an object");
    }
    type = json_object_get(o, "type");
    if (type == NULL) {
        return parse_vital(o, e, err, errlen, idx);
    }
    if (json_is_string(type) && strcmp(json_string_value(type), "resource") == 0) {
        return parse_resource(o, e, err, errlen, idx);
    }
    return entry_fail(err, errlen, idx, ST_EINVAL,
                      "'type' must be \"resource\" (web vitals have no type)");
}

int st_rum_beacon_parse(const char *body, size_t len, st_rum_entry **out, size_t *n, char *err,
                        size_t errlen)
{
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    st_rum_entry *ents = NULL;
    bool array = json_is_array(root);
    size_t count = array ? json_array_size(root) : 1;
    int rv = ST_OK;
    if (root == NULL) {
        return entry_fail(err, errlen, -1, ST_EPARSE, "bad JSON at line %d column %d: %s", je.line,
                          je.column, je.text);
    }
    if (count == 0 || count > ST_RUM_MAX_ENTRIES) {
        rv = entry_fail(err, errlen, -1, count == 0 ? ST_EINVAL : ST_ETOOBIG,
                        "a beacon holds 1 to %d entries, not %zu", ST_RUM_MAX_ENTRIES, count);
        goto out;
    }
    if ((ents = calloc(count, sizeof(*ents))) == NULL) {
        rv = ST_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < count && rv == ST_OK; i++) {
        rv = parse_entry(array ? json_array_get(root, i) : root, &ents[i], err, errlen,
                         array ? (long)i : -1);
    }
    if (rv == ST_OK) {
        *out = ents;
        *n = count;
        ents = NULL;
    }
out:
    free(ents);
    json_decref(root);
    return rv;
}
