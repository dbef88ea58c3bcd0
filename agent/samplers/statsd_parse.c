/* StatsD line parsing in place and per-interval aggregation in an
 * open-address table of precomputed hashes; see statsd_parse.h. Written for
 * the hot path: one pass over the line, no allocation per line. */
#include "statsd_parse.h"

#include "err.h"
#include "sketch.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define INIT_SLOTS 256               /* power of two; doubles while under half full */
#define INIT_ENTRIES 64              /* doubles up to max_series */
#define INIT_KEYS 4096               /* bytes of series keys; doubles */
#define INIT_SET 16                  /* slots of a set's member table; doubles */
#define MAX_SAMPLES_PER_LINE 1000000 /* round(1 / rate) for tiny rates */

static const char TRUE_TEXT[] = "true";

/* ---- numbers ---- */

static const double pow10_exact[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* Anything the fast path does not take: exponents, long mantissas. Only
 * decimal characters reach strtod, so "nan", "inf" and hex never parse. */
static int slow_number(const char *p, size_t n, double *out)
{
    char buf[ST_STATSD_MAX_NUMBER + 1];
    char *end;
    double v;
    bool digit = false;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        digit |= c >= '0' && c <= '9';
        if (!((c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-')) {
            return ST_EPARSE;
        }
    }
    if (!digit) {
        return ST_EPARSE;
    }
    memcpy(buf, p, n);
    buf[n] = '\0';
    v = strtod(buf, &end);
    if (end != buf + n || !isfinite(v)) {
        return ST_EPARSE;
    }
    *out = v;
    return ST_OK;
}

int st_statsd_number(const char *p, size_t n, double *out)
{
    const char *q = p;
    const char *end = p + n;
    uint64_t mant = 0;
    int digits = 0;
    int frac = 0;
    bool dot = false;
    if (n == 0 || n > ST_STATSD_MAX_NUMBER) {
        return ST_EPARSE;
    }
    if (*q == '+' || *q == '-') {
        q++;
    }
    /* Clinger's fast path: an integer mantissa below 2^53 divided by an
     * exact power of ten is correctly rounded by one IEEE division. */
    for (; q < end && mant < (1ULL << 53); q++) {
        if (*q >= '0' && *q <= '9') {
            mant = mant * 10 + (uint64_t)(*q - '0');
            digits++;
            frac += dot;
        } else if (*q == '.' && !dot) {
            dot = true;
        } else {
            break;
        }
    }
    if (q != end || digits == 0 || mant > (1ULL << 53) || frac > 22) {
        return slow_number(p, n, out);
    }
    *out = (double)mant / pow10_exact[frac];
    if (*p == '-') {
        *out = -*out;
    }
    return ST_OK;
}

/* ---- lines ---- */

static int refuse(const char **why, const char *text, int rv)
{
    if (why != NULL) {
        *why = text;
    }
    return rv;
}

static st_statsd_span span_of(const char *b, const char *e)
{
    return (st_statsd_span){b, (uint32_t)(e - b)};
}

/* Byte classes. Names and tag keys (CN): printable ASCII without space and
 * the separators | # , @ :, or UTF-8 (checked once per span: the collector
 * refuses a whole frame for one bad string). Tag values (CV) may also hold
 * spaces, #, @ and ':', but no control characters. */
#define CN 1
#define CV 2
static const uint8_t char_class[256] = {
    [' '] = CV,
    ['!' ... '"'] = CN | CV,
    ['#'] = CV,
    ['$' ... '+'] = CN | CV,
    [','] = CV,
    ['-' ... '9'] = CN | CV,
    [':'] = CV,
    [';' ... '?'] = CN | CV,
    ['@'] = CV,
    ['A' ... '{'] = CN | CV,
    ['|'] = CV,
    ['}' ... '~'] = CN | CV,
    [0x80 ... 0xff] = CN | CV,
};

/* Scans from s to the first a or b (or e), checking each byte against the
 * class; returns where it stopped. *ok is false when a byte is not of the
 * class or the span is not valid UTF-8. One pass, no library calls for the
 * short spans of a line. */
static const char *scan(const char *s, const char *e, char a, char b, uint8_t cls, bool *ok)
{
    const char *start = s;
    uint8_t acc = cls;
    uint8_t high = 0;
    for (; s < e && *s != a && *s != b; s++) {
        uint8_t c = (uint8_t)*s;
        acc &= char_class[c];
        high |= c;
    }
    *ok = acc == cls && ((high & 0x80) == 0 || st_utf8_valid(start, (size_t)(s - start)));
    return s;
}

static const char *find(const char *s, const char *e, char c)
{
    while (s < e && *s != c) {
        s++;
    }
    return s;
}

static int parse_type(const char *s, const char *e, st_statsd_line *out)
{
    size_t n = (size_t)(e - s);
    if (n == 1) {
        switch (*s) {
        case 'c':
            out->type = ST_STATSD_COUNTER;
            return ST_OK;
        case 'g':
            out->type = ST_STATSD_GAUGE;
            return ST_OK;
        case 'h':
        case 'd':
            out->type = ST_STATSD_HISTOGRAM;
            return ST_OK;
        case 's':
            out->type = ST_STATSD_SET;
            return ST_OK;
        default:
            return ST_EPARSE;
        }
    }
    if (n == 2 && s[0] == 'm' && s[1] == 's') {
        out->type = ST_STATSD_TIMER;
        return ST_OK;
    }
    return ST_EPARSE;
}

/* One tag of a #section at s: key[:value] up to ',' or e; returns where it
 * ended through *next. */
static int parse_tag(const char *s, const char *e, size_t max_tags, st_statsd_line *out,
                     const char **next, const char **why)
{
    bool ok;
    const char *ke = scan(s, e, ':', ',', CN, &ok);
    const char *ve;
    st_statsd_tag *t;
    if (ke == s || !ok || ke - s > ST_STATSD_MAX_TAG_KEY) {
        return refuse(why, "bad tag key", ke - s > ST_STATSD_MAX_TAG_KEY ? ST_ETOOBIG : ST_EPARSE);
    }
    if (out->ntags >= max_tags) {
        return refuse(why, "too many tags", ST_ETOOBIG);
    }
    t = &out->tags[out->ntags++];
    t->key = span_of(s, ke);
    if (ke == e || *ke == ',') {
        t->value = (st_statsd_span){TRUE_TEXT, sizeof(TRUE_TEXT) - 1};
        *next = ke;
        return ST_OK;
    }
    ve = scan(ke + 1, e, ',', ',', CV, &ok);
    if (ve - ke - 1 > ST_STATSD_MAX_TAG_VALUE) {
        return refuse(why, "tag value over 256 bytes", ST_ETOOBIG);
    }
    if (!ok) {
        return refuse(why, "bad tag value", ST_EPARSE);
    }
    t->value = span_of(ke + 1, ve);
    *next = ve;
    return ST_OK;
}

static int parse_tags(const char *s, const char *e, size_t max_tags, st_statsd_line *out,
                      const char **why)
{
    while (s < e) {
        const char *te = s;
        if (*s != ',') { /* "a,,b" and a trailing comma are harmless */
            int rv = parse_tag(s, e, max_tags, out, &te, why);
            if (rv != ST_OK) {
                return rv;
            }
        }
        if (te == e) {
            break;
        }
        s = te + 1;
    }
    return ST_OK;
}

static bool all_digits(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return false;
        }
    }
    return true;
}

/* A |section after the type: @rate, #tags, or a DogStatsD field we do not
 * use (container id, external data, cardinality, timestamp). */
static int parse_section(const char *s, const char *e, size_t max_tags, st_statsd_line *out,
                         const char **why)
{
    size_t n = (size_t)(e - s);
    if (n == 0) {
        return refuse(why, "empty field", ST_EPARSE);
    }
    if (*s == '@') {
        if (st_statsd_number(s + 1, n - 1, &out->rate) != ST_OK || !(out->rate > 0) ||
            out->rate > 1) {
            return refuse(why, "sample rate not in (0, 1]", ST_EPARSE);
        }
        return ST_OK;
    }
    if (*s == '#') {
        return parse_tags(s + 1, e, max_tags, out, why);
    }
    if ((n >= 2 && (s[0] == 'c' || s[0] == 'e') && s[1] == ':') ||
        (n >= 5 && memcmp(s, "card:", 5) == 0)) {
        return ST_OK;
    }
    if (*s == 'T' && n > 1 && all_digits(s + 1, n - 1)) {
        return ST_OK;
    }
    return refuse(why, "unknown field", ST_EPARSE);
}

/* The value text, once the type is known. */
static int parse_values(st_statsd_line *out, const char **why)
{
    const char *s = out->raw.p;
    const char *e = s + out->raw.len;
    out->nvalues = 0;
    if (out->raw.len == 0) {
        return refuse(why, "empty value", ST_EPARSE);
    }
    if (out->type == ST_STATSD_SET) {
        out->nvalues = 1;
        return ST_OK;
    }
    out->relative = out->type == ST_STATSD_GAUGE && (*s == '+' || *s == '-');
    for (;;) {
        const char *ve = find(s, e, ':');
        double v;
        if (st_statsd_number(s, (size_t)(ve - s), &v) != ST_OK) {
            return refuse(why, "bad number", ST_EPARSE);
        }
        if (out->type == ST_STATSD_COUNTER && v < 0) {
            return refuse(why, "negative counter", ST_EPARSE);
        }
        if (out->nvalues++ == 0) {
            out->value = v;
        }
        if (ve == e) {
            break;
        }
        s = ve + 1;
    }
    if (out->nvalues > 1 && out->type == ST_STATSD_GAUGE) {
        return refuse(why, "several values for a gauge", ST_EPARSE);
    }
    return ST_OK;
}

static int span_cmp(st_statsd_span a, st_statsd_span b)
{
    int c = memcmp(a.p, b.p, a.len < b.len ? a.len : b.len);
    return c != 0 ? c : (a.len > b.len) - (a.len < b.len);
}

/* Insertion sort (a handful of tags), then the key length the series will
 * take; a key given twice is refused (a series cannot hold it twice). */
static int sort_tags(st_statsd_line *out, const char **why)
{
    size_t keylen = out->name.len + 1;
    for (size_t i = 1; i < out->ntags; i++) {
        st_statsd_tag t = out->tags[i];
        size_t j = i;
        while (j > 0 && span_cmp(out->tags[j - 1].key, t.key) > 0) {
            out->tags[j] = out->tags[j - 1];
            j--;
        }
        out->tags[j] = t;
    }
    for (size_t i = 0; i < out->ntags; i++) {
        if (i > 0 && span_cmp(out->tags[i - 1].key, out->tags[i].key) == 0) {
            return refuse(why, "tag key given twice", ST_EPARSE);
        }
        keylen += (size_t)out->tags[i].key.len + out->tags[i].value.len + 2;
    }
    if (keylen > ST_STATSD_MAX_KEY) {
        return refuse(why, "name and tags too long", ST_ETOOBIG);
    }
    return ST_OK;
}

int st_statsd_parse(const char *p, size_t len, size_t max_tags, st_statsd_line *out,
                    const char **why)
{
    const char *end = p + len;
    const char *colon;
    const char *bar;
    const char *next;
    bool ok;
    int rv;
    if (len > ST_STATSD_MAX_LINE) {
        return refuse(why, "line over 8 KiB", ST_ETOOBIG);
    }
    if ((len >= 3 && memcmp(p, "_e{", 3) == 0) || (len >= 4 && memcmp(p, "_sc|", 4) == 0)) {
        return refuse(why, "event or service check", ST_EUNSUPPORTED);
    }
    if ((colon = scan(p, end, ':', ':', CN, &ok)) == end) {
        return refuse(why, "no ':' after the name", ST_EPARSE);
    }
    if (colon == p || !ok || colon - p > ST_STATSD_MAX_NAME) {
        return refuse(why, "bad name", colon - p > ST_STATSD_MAX_NAME ? ST_ETOOBIG : ST_EPARSE);
    }
    if ((bar = find(colon + 1, end, '|')) == end) {
        return refuse(why, "no type", ST_EPARSE);
    }
    out->name = span_of(p, colon);
    out->raw = span_of(colon + 1, bar);
    out->rate = 1;
    out->ntags = 0;
    out->relative = false;
    next = find(bar + 1, end, '|');
    if (parse_type(bar + 1, next, out) != ST_OK) {
        return refuse(why, "unknown type", ST_EPARSE);
    }
    max_tags = ST_MIN(max_tags, (size_t)ST_STATSD_MAX_TAGS);
    while (next < end) {
        const char *s = next + 1;
        next = find(s, end, '|');
        if ((rv = parse_section(s, next, max_tags, out, why)) != ST_OK) {
            return rv;
        }
    }
    if ((rv = parse_values(out, why)) != ST_OK) {
        return rv;
    }
    return sort_tags(out, why);
}

/* ---- aggregation ---- */

struct member_set {
    uint64_t *v; /* open addressing; 0 is empty */
    uint32_t cap;
    uint32_t n;
};

struct entry {
    uint64_t hash;
    uint32_t key; /* offset into keys */
    uint32_t keylen;
    uint32_t slot;
    uint32_t lines;
    uint8_t type;
    uint8_t ntags;
    union {
        double count;
        st_statsd_gauge gauge;
        st_sketch *sk;
        struct member_set *set;
    } u;
};

struct slot {
    uint64_t hash;
    uint32_t idx; /* entry + 1; 0 when empty */
};

struct st_statsd_agg {
    st_statsd_limits lim;
    struct slot *slots;
    size_t nslots; /* power of two */
    size_t max_slots;
    struct entry *ents;
    size_t n;
    size_t cap;
    char *keys;
    size_t keys_len;
    size_t keys_cap;
    st_sketch **pool; /* emptied sketches kept for new series */
    size_t npool;
    st_statsd_stats stats;
    char scratch[ST_STATSD_MAX_KEY];
};

static inline uint64_t rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

/* xxHash64-style rounds over 8-byte words and a murmur finaliser: fast for
 * 20-200 byte keys and well mixed in the low bits the table uses. */
static uint64_t hash_key(uint64_t seed, const char *p, size_t n)
{
    const uint64_t p1 = 0x9E3779B185EBCA87ULL;
    const uint64_t p2 = 0xC2B2AE3D27D4EB4FULL;
    uint64_t h = seed ^ ((uint64_t)n * p1);
    uint64_t v;
    for (; n >= 8; p += 8, n -= 8) {
        memcpy(&v, p, 8);
        h ^= rotl64(v * p2, 31) * p1;
        h = rotl64(h, 27) * p1 + 0x85EBCA77C2B2AE63ULL;
    }
    v = 0;
    memcpy(&v, p, n);
    h ^= rotl64(v * p2, 31) * p1;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 33);
}

static size_t pow2_at_least(size_t n)
{
    size_t p = 1;
    while (p < n) {
        p <<= 1;
    }
    return p;
}

int st_statsd_agg_new(const st_statsd_limits *lim, st_statsd_agg **out)
{
    st_statsd_agg *a;
    if (lim == NULL || lim->max_series == 0 || lim->max_series > ST_STATSD_MAX_SERIES ||
        lim->max_tags > ST_STATSD_MAX_TAGS || lim->max_set == 0 ||
        lim->max_set > ST_STATSD_MAX_SET_SIZE) {
        return ST_EINVAL;
    }
    if ((a = calloc(1, sizeof(*a))) == NULL) {
        return ST_ENOMEM;
    }
    a->lim = *lim;
    a->max_slots = pow2_at_least(2 * lim->max_series);
    a->nslots = ST_MIN((size_t)INIT_SLOTS, a->max_slots);
    a->cap = ST_MIN((size_t)INIT_ENTRIES, lim->max_series);
    a->keys_cap = INIT_KEYS;
    a->slots = calloc(a->nslots, sizeof(*a->slots));
    a->ents = calloc(a->cap, sizeof(*a->ents));
    a->keys = malloc(a->keys_cap);
    a->pool = calloc(lim->max_series, sizeof(*a->pool));
    if (a->slots == NULL || a->ents == NULL || a->keys == NULL || a->pool == NULL) {
        st_statsd_agg_free(a);
        return ST_ENOMEM;
    }
    *out = a;
    return ST_OK;
}

static void release_entry(st_statsd_agg *a, struct entry *e)
{
    if (e->type == ST_STATSD_TIMER || e->type == ST_STATSD_HISTOGRAM) {
        st_sketch_reset(e->u.sk);
        a->pool[a->npool++] = e->u.sk; /* the pool holds max_series */
    } else if (e->type == ST_STATSD_SET) {
        free(e->u.set->v);
        free(e->u.set);
    }
    e->type = 0;
}

void st_statsd_agg_free(st_statsd_agg *a)
{
    if (a == NULL) {
        return;
    }
    if (a->pool != NULL) {
        st_statsd_agg_reset(a);
        for (size_t i = 0; i < a->npool; i++) {
            st_sketch_free(a->pool[i]);
        }
    }
    free(a->pool);
    free(a->slots);
    free(a->ents);
    free(a->keys);
    free(a);
}

void st_statsd_agg_reset(st_statsd_agg *a)
{
    for (size_t i = 0; i < a->n; i++) {
        a->slots[a->ents[i].slot].idx = 0;
        release_entry(a, &a->ents[i]);
    }
    a->n = 0;
    a->keys_len = 0;
    memset(&a->stats, 0, sizeof(a->stats));
}

/* Doubles the slot table and places every entry again. */
static int grow_slots(st_statsd_agg *a)
{
    size_t ns = a->nslots * 2;
    struct slot *s = calloc(ns, sizeof(*s));
    if (s == NULL) {
        return ST_ENOMEM;
    }
    for (size_t i = 0; i < a->n; i++) {
        size_t j = a->ents[i].hash & (ns - 1);
        while (s[j].idx != 0) {
            j = (j + 1) & (ns - 1);
        }
        s[j] = (struct slot){a->ents[i].hash, (uint32_t)i + 1};
        a->ents[i].slot = (uint32_t)j;
    }
    free(a->slots);
    a->slots = s;
    a->nslots = ns;
    return ST_OK;
}

/* Room for one more entry and keylen more key bytes. */
static int reserve(st_statsd_agg *a, size_t keylen)
{
    if (a->n >= a->lim.max_series) {
        return ST_ETOOBIG;
    }
    if (a->n == a->cap) {
        size_t nc = ST_MIN(a->cap * 2, a->lim.max_series);
        struct entry *ne = realloc(a->ents, nc * sizeof(*ne));
        if (ne == NULL) {
            return ST_ENOMEM;
        }
        a->ents = ne;
        a->cap = nc;
    }
    while (a->keys_len + keylen > a->keys_cap) {
        char *nk = realloc(a->keys, a->keys_cap * 2);
        if (nk == NULL) {
            return ST_ENOMEM;
        }
        a->keys = nk;
        a->keys_cap *= 2;
    }
    if ((a->n + 1) * 2 > a->nslots && a->nslots < a->max_slots) {
        return grow_slots(a);
    }
    return ST_OK;
}

/* What a new series of this type needs before it is added. */
static int entry_init(st_statsd_agg *a, struct entry *e, int type)
{
    memset(&e->u, 0, sizeof(e->u));
    e->type = (uint8_t)type;
    e->lines = 0;
    if (type == ST_STATSD_TIMER || type == ST_STATSD_HISTOGRAM) {
        if (a->npool > 0) {
            e->u.sk = a->pool[--a->npool];
            return ST_OK;
        }
        return st_sketch_new(ST_SKETCH_ALPHA, &e->u.sk);
    }
    if (type == ST_STATSD_SET) {
        struct member_set *s = calloc(1, sizeof(*s));
        if (s == NULL || (s->v = calloc(INIT_SET, sizeof(*s->v))) == NULL) {
            free(s);
            return ST_ENOMEM;
        }
        s->cap = INIT_SET;
        e->u.set = s;
    }
    return ST_OK;
}

/* Finds the series of key/hash or adds it with the given type. */
static int find_or_add(st_statsd_agg *a, uint64_t h, const char *key, size_t keylen, int type,
                       size_t ntags, struct entry **out)
{
    size_t j = h & (a->nslots - 1);
    struct entry *e;
    int rv;
    for (; a->slots[j].idx != 0; j = (j + 1) & (a->nslots - 1)) {
        e = &a->ents[a->slots[j].idx - 1];
        if (a->slots[j].hash == h && e->keylen == keylen &&
            memcmp(a->keys + e->key, key, keylen) == 0) {
            *out = e;
            return ST_OK;
        }
    }
    if ((rv = reserve(a, keylen)) != ST_OK) {
        return rv;
    }
    e = &a->ents[a->n];
    if ((rv = entry_init(a, e, type)) != ST_OK) {
        return rv;
    }
    j = h & (a->nslots - 1); /* the table may have grown */
    while (a->slots[j].idx != 0) {
        j = (j + 1) & (a->nslots - 1);
    }
    memcpy(a->keys + a->keys_len, key, keylen);
    e->hash = h;
    e->key = (uint32_t)a->keys_len;
    e->keylen = (uint32_t)keylen;
    e->slot = (uint32_t)j;
    e->ntags = (uint8_t)ntags;
    a->slots[j] = (struct slot){h, (uint32_t)a->n + 1};
    a->keys_len += keylen;
    a->n++;
    *out = e;
    return ST_OK;
}

/* name\0k\0v\0... in the scratch buffer; the parser checked the length. */
static size_t build_key(st_statsd_agg *a, const st_statsd_line *l)
{
    char *p = a->scratch;
    memcpy(p, l->name.p, l->name.len);
    p += l->name.len;
    *p++ = '\0';
    for (size_t i = 0; i < l->ntags; i++) {
        memcpy(p, l->tags[i].key.p, l->tags[i].key.len);
        p += l->tags[i].key.len;
        *p++ = '\0';
        memcpy(p, l->tags[i].value.p, l->tags[i].value.len);
        p += l->tags[i].value.len;
        *p++ = '\0';
    }
    return (size_t)(p - a->scratch);
}

static void gauge_add(st_statsd_gauge *g, double v, bool relative)
{
    if (!relative || g->has_value) {
        double x = relative ? g->last + v : v;
        if (!g->has_value) {
            g->min = g->max = x;
            g->has_value = true;
        }
        g->last = x;
        g->min = fmin(g->min, x);
        g->max = fmax(g->max, x);
        return;
    }
    /* No absolute value yet: the offsets wait for the emitter's base. */
    g->pre_sum = g->has_pre ? g->pre_sum + v : v;
    g->pre_min = g->has_pre ? fmin(g->pre_min, g->pre_sum) : v;
    g->pre_max = g->has_pre ? fmax(g->pre_max, g->pre_sum) : v;
    g->has_pre = true;
}

/* The slot of member h, or of the empty slot where it would go. */
static uint32_t set_probe(const struct member_set *s, uint64_t h)
{
    uint32_t mask = s->cap - 1;
    uint32_t j = (uint32_t)h & mask;
    while (s->v[j] != 0 && s->v[j] != h) {
        j = (j + 1) & mask;
    }
    return j;
}

static int set_grow(struct member_set *s)
{
    struct member_set n = {calloc((size_t)s->cap * 2, sizeof(uint64_t)), s->cap * 2, s->n};
    if (n.v == NULL) {
        return ST_ENOMEM;
    }
    for (uint32_t i = 0; i < s->cap; i++) {
        if (s->v[i] != 0) {
            n.v[set_probe(&n, s->v[i])] = s->v[i];
        }
    }
    free(s->v);
    *s = n;
    return ST_OK;
}

/* Members are kept as 64-bit hashes: a collision among a million members
 * has a chance of about 1 in 3 * 10^7, far below what a set may be off. */
static int set_add(struct member_set *s, uint64_t h, size_t max)
{
    uint32_t j;
    int rv;
    h = h != 0 ? h : 1;
    j = set_probe(s, h);
    if (s->v[j] == h) {
        return ST_OK;
    }
    if (s->n >= max) {
        return ST_ETOOBIG;
    }
    if ((s->n + 1) * 2 > s->cap) {
        if ((rv = set_grow(s)) != ST_OK) {
            return rv;
        }
        j = set_probe(s, h);
    }
    s->v[j] = h;
    s->n++;
    return ST_OK;
}

/* Every value of a line into a sketch, each round(1 / rate) times. */
static int sketch_add(st_sketch *sk, const st_statsd_line *l)
{
    double unit = l->type == ST_STATSD_TIMER ? 1000.0 : 1.0; /* ms to seconds */
    double reps = nearbyint(1.0 / l->rate);
    uint64_t n =
        reps < 1 ? 1 : (reps > MAX_SAMPLES_PER_LINE ? MAX_SAMPLES_PER_LINE : (uint64_t)reps);
    const char *s = l->raw.p;
    const char *e = s + l->raw.len;
    double v = l->value;
    int rv = ST_OK;
    for (uint32_t i = 0; i < l->nvalues && rv == ST_OK; i++) {
        const char *c = memchr(s, ':', (size_t)(e - s));
        const char *ve = c != NULL ? c : e;
        if (i > 0 && st_statsd_number(s, (size_t)(ve - s), &v) != ST_OK) {
            return ST_EPARSE; /* the parser checked every value */
        }
        rv = st_sketch_insert_n(sk, v / unit, n);
        s = ve + 1;
    }
    return rv;
}

static double counter_sum(const st_statsd_line *l)
{
    const char *s = l->raw.p;
    const char *e = s + l->raw.len;
    double sum = 0;
    if (l->nvalues == 1) {
        return l->value / l->rate;
    }
    for (uint32_t i = 0; i < l->nvalues; i++) {
        const char *c = memchr(s, ':', (size_t)(e - s));
        const char *ve = c != NULL ? c : e;
        double v = 0;
        (void)st_statsd_number(s, (size_t)(ve - s), &v); /* checked by the parser */
        sum += v / l->rate;
        s = ve + 1;
    }
    return sum;
}

int st_statsd_agg_add(st_statsd_agg *a, const st_statsd_line *l)
{
    size_t keylen = build_key(a, l);
    uint64_t h = hash_key(a->lim.seed, a->scratch, keylen);
    struct entry *e;
    int rv = find_or_add(a, h, a->scratch, keylen, l->type, l->ntags, &e);
    if (rv != ST_OK) {
        return rv;
    }
    if (e->type != l->type) {
        return ST_EINVAL;
    }
    switch (l->type) {
    case ST_STATSD_COUNTER:
        e->u.count += counter_sum(l);
        break;
    case ST_STATSD_GAUGE:
        gauge_add(&e->u.gauge, l->value, l->relative);
        break;
    case ST_STATSD_SET:
        rv = set_add(e->u.set, hash_key(a->lim.seed, l->raw.p, l->raw.len), a->lim.max_set);
        break;
    default:
        rv = sketch_add(e->u.sk, l);
        break;
    }
    e->lines += rv == ST_OK;
    return rv;
}

static void one_line(st_statsd_agg *a, const char *p, const char *le)
{
    st_statsd_line line;
    int rv;
    if (le > p && le[-1] == '\r') {
        le--;
    }
    if (le == p) {
        return;
    }
    a->stats.received++;
    rv = st_statsd_parse(p, (size_t)(le - p), a->lim.max_tags, &line, NULL);
    if (rv == ST_OK) {
        rv = st_statsd_agg_add(a, &line);
        if (rv == ST_EINVAL || rv == ST_EPARSE) {
            a->stats.malformed++; /* another type in this interval */
        } else if (rv != ST_OK) {
            a->stats.dropped++;
        }
    } else if (rv == ST_EUNSUPPORTED) {
        a->stats.ignored++;
    } else {
        a->stats.malformed++;
    }
}

void st_statsd_agg_datagram(st_statsd_agg *a, const char *p, size_t n, bool truncated)
{
    const char *end = p + n;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL && truncated) {
            a->stats.received++;
            a->stats.malformed++;
            return;
        }
        one_line(a, p, nl != NULL ? nl : end);
        p = nl != NULL ? nl + 1 : end;
    }
}

void st_statsd_agg_stats(const st_statsd_agg *a, st_statsd_stats *out)
{
    *out = a->stats;
}

size_t st_statsd_agg_count(const st_statsd_agg *a)
{
    return a->n;
}

int st_statsd_agg_entry(const st_statsd_agg *a, size_t i, st_statsd_entry *out)
{
    const struct entry *e;
    const char *p;
    if (i >= a->n) {
        return ST_EINVAL;
    }
    e = &a->ents[i];
    p = a->keys + e->key;
    out->key = p;
    out->keylen = e->keylen;
    out->hash = e->hash;
    out->name = p;
    out->ntags = e->ntags;
    out->type = (enum st_statsd_type)e->type;
    out->lines = e->lines;
    p += strlen(p) + 1;
    for (size_t t = 0; t < e->ntags; t++) {
        out->tags[t].key = p;
        p += strlen(p) + 1;
        out->tags[t].value = p;
        p += strlen(p) + 1;
    }
    out->count = e->type == ST_STATSD_COUNTER ? e->u.count : 0;
    memset(&out->gauge, 0, sizeof(out->gauge));
    if (e->type == ST_STATSD_GAUGE) {
        out->gauge = e->u.gauge;
    }
    out->sketch = e->type == ST_STATSD_TIMER || e->type == ST_STATSD_HISTOGRAM ? e->u.sk : NULL;
    out->distinct = e->type == ST_STATSD_SET ? e->u.set->n : 0;
    return ST_OK;
}

int st_statsd_agg_put_gauge(st_statsd_agg *a, const st_statsd_entry *src, double value)
{
    struct entry *e;
    int rv;
    if (src->keylen > ST_STATSD_MAX_KEY) {
        return ST_EINVAL;
    }
    rv = find_or_add(a, src->hash, src->key, src->keylen, ST_STATSD_GAUGE, src->ntags, &e);
    if (rv != ST_OK) {
        return rv;
    }
    if (e->type != ST_STATSD_GAUGE) {
        return ST_EINVAL;
    }
    memset(&e->u.gauge, 0, sizeof(e->u.gauge));
    gauge_add(&e->u.gauge, value, false);
    return ST_OK;
}

int st_statsd_agg_get_gauge(const st_statsd_agg *a, const st_statsd_entry *src, double *value)
{
    size_t j = src->hash & (a->nslots - 1);
    for (; a->slots[j].idx != 0; j = (j + 1) & (a->nslots - 1)) {
        const struct entry *e = &a->ents[a->slots[j].idx - 1];
        if (a->slots[j].hash == src->hash && e->keylen == src->keylen &&
            memcmp(a->keys + e->key, src->key, src->keylen) == 0) {
            if (e->type != ST_STATSD_GAUGE || !e->u.gauge.has_value) {
                return ST_ENOENT;
            }
            *value = e->u.gauge.last;
            return ST_OK;
        }
    }
    return ST_ENOENT;
}

void st_statsd_gauge_resolve(const st_statsd_gauge *g, double base, double *last, double *min,
                             double *max)
{
    double lo = INFINITY;
    double hi = -INFINITY;
    double v = base;
    if (g->has_pre) {
        lo = base + g->pre_min;
        hi = base + g->pre_max;
        v = base + g->pre_sum;
    }
    if (g->has_value) {
        lo = fmin(lo, g->min);
        hi = fmax(hi, g->max);
        v = g->last;
    }
    if (!g->has_pre && !g->has_value) {
        lo = hi = base;
    }
    *last = v;
    *min = lo;
    *max = hi;
}
