/* RUM beacons: the JSON a page sends with navigator.sendBeacon (web-vitals
 * library style), checked whole and turned into entries, and the page
 * normaliser that keeps the page label's cardinality low. No state and no
 * I/O: the rum sampler (rum.c) owns the HTTP side and the aggregation. */
#ifndef ST_RUM_BEACON_H
#define ST_RUM_BEACON_H

#include <stdbool.h>
#include <stddef.h>

#define ST_RUM_MAX_ENTRIES 1000             /* entries in one beacon */
#define ST_RUM_MAX_PAGE_IN 2048             /* a page or URL as sent */
#define ST_RUM_MAX_PAGE 128                 /* a normalised page label */
#define ST_RUM_MAX_ID 128                   /* a metric id as sent */
#define ST_RUM_MAX_TIMING_MS 3600000.0      /* timings past an hour are refused */
#define ST_RUM_MAX_CLS 1000.0               /* layout shift scores are small */
#define ST_RUM_MAX_BYTES 9007199254740992.0 /* resource sizes: 2^53 */

enum st_rum_vital {
    ST_RUM_FCP,
    ST_RUM_LCP,
    ST_RUM_TTFB,
    ST_RUM_INP,
    ST_RUM_TTI,
    ST_RUM_CLS,
    ST_RUM_NVITALS
};

enum st_rum_kind { ST_RUM_VITAL, ST_RUM_RESOURCE };

/* Where a resource came from, as far as its timing tells. */
enum st_rum_cache {
    ST_RUM_MISS = 0, /* bytes were transferred */
    ST_RUM_HIT,      /* no transfer, a body: served from the browser cache */
    ST_RUM_OPAQUE,   /* every size 0: a cross-origin resource without
                        Timing-Allow-Origin (or an empty body) tells nothing */
};

typedef struct st_rum_entry {
    enum st_rum_kind kind;
    enum st_rum_vital vital;        /* vitals */
    double value;                   /* vitals: seconds, or the unitless CLS score */
    enum st_rum_cache cache;        /* resources */
    char page[ST_RUM_MAX_PAGE + 1]; /* normalised; "" for a resource without one */
} st_rum_entry;

/* "web.vitals.fcp" ... "web.vitals.cls". */
const char *st_rum_vital_series(enum st_rum_vital v);

/* Parses a whole beacon of len bytes: one object or an array of 1 to
 * ST_RUM_MAX_ENTRIES objects, each either a web vital {"name": "FCP" |
 * "LCP" | "TTFB" | "INP" | "TTI" | "CLS" (any case), "value": number (ms,
 * CLS unitless), "page": string, "id": string (optional)} or a resource
 * timing entry {"type": "resource", "name": url, "transferSize": number,
 * "encodedBodySize" and/or "decodedBodySize": numbers, "page" (optional)}.
 * All or nothing: *out (malloc'd, *n entries) only when every entry is
 * good. ST_EPARSE when the body is not JSON, ST_EINVAL when an entry is
 * wrong, ST_ETOOBIG for too many entries, each with err naming the entry
 * and field ("entry 2: 'value' must be a number of ms from 0 to 3600000");
 * ST_ENOMEM. */
int st_rum_beacon_parse(const char *body, size_t len, st_rum_entry **out, size_t *n, char *err,
                        size_t errlen);

/* Normalises a page of len bytes into out[cap] (cap > ST_RUM_MAX_PAGE):
 * the path of an absolute or scheme-relative URL, without ?query or
 * #fragment, repeated slashes and a trailing slash; a segment of digits, a
 * UUID or 16+ hex digits becomes ":id"; cut to ST_RUM_MAX_PAGE bytes on a
 * UTF-8 boundary; always starts with '/'. ST_EINVAL when the input is empty,
 * over ST_RUM_MAX_PAGE_IN, or holds control characters. */
int st_rum_page_normalize(const char *in, size_t len, char *out, size_t cap);

#endif
