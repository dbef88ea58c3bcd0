/* bundle_json: what the bundle sampler reads from JSON files a build or a
 * browser wrote: entry files from a Vite manifest or webpack stats,
 * duplicated modules from webpack stats, used byte ranges from a DevTools
 * coverage export. Every count is checked against a named limit. */
#include "bundle.h"

#include "err.h"
#include "util.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SET_MIN_CAP 64
#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull
#define MAX_MODULE_SIZE (1ull << 36) /* a module size past this is malformed */

static int why_fail(st_bundle_why *why, int rv, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int why_fail(st_bundle_why *why, int rv, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why->msg, sizeof(why->msg), fmt, ap);
    va_end(ap);
    return rv;
}

/* ---- string sets ---- */

static size_t set_index(const char *s, size_t cap)
{
    uint64_t h = FNV_OFFSET;
    for (; *s != '\0'; s++) {
        h = (h ^ (unsigned char)*s) * FNV_PRIME;
    }
    return (size_t)h & (cap - 1);
}

static void set_place(char **slot, size_t cap, char *s)
{
    size_t i = set_index(s, cap);
    while (slot[i] != NULL) {
        i = (i + 1) & (cap - 1);
    }
    slot[i] = s;
}

bool st_bundle_set_has(const st_bundle_set *s, const char *str)
{
    if (s->cap == 0) {
        return false;
    }
    for (size_t i = set_index(str, s->cap); s->slot[i] != NULL; i = (i + 1) & (s->cap - 1)) {
        if (strcmp(s->slot[i], str) == 0) {
            return true;
        }
    }
    return false;
}

int st_bundle_set_add(st_bundle_set *s, const char *str)
{
    char *copy;
    if (st_bundle_set_has(s, str)) {
        return ST_OK;
    }
    if (s->n >= ST_BUNDLE_MAX_NAMES) {
        return ST_ETOOBIG;
    }
    if ((s->n + 1) * 2 > s->cap) { /* at most half full */
        size_t ncap = s->cap == 0 ? SET_MIN_CAP : s->cap * 2;
        char **ns = calloc(ncap, sizeof(*ns));
        if (ns == NULL) {
            return ST_ENOMEM;
        }
        for (size_t i = 0; i < s->cap; i++) {
            if (s->slot[i] != NULL) {
                set_place(ns, ncap, s->slot[i]);
            }
        }
        free(s->slot);
        s->slot = ns;
        s->cap = ncap;
    }
    if ((copy = strdup(str)) == NULL) {
        return ST_ENOMEM;
    }
    set_place(s->slot, s->cap, copy);
    s->n++;
    return ST_OK;
}

void st_bundle_set_clear(st_bundle_set *s)
{
    for (size_t i = 0; i < s->cap; i++) {
        free(s->slot[i]);
    }
    free(s->slot);
    memset(s, 0, sizeof(*s));
}

bool st_bundle_set_match(const st_bundle_set *s, const char *rel)
{
    if (s->n == 0) {
        return false;
    }
    for (const char *p = rel; p != NULL; p = strchr(p, '/')) {
        p += *p == '/';
        if (st_bundle_set_has(s, p)) {
            return true;
        }
    }
    return false;
}

/* Bundlers name files relative to their output directory, some with "./". */
static int add_name(st_bundle_set *s, const char *name)
{
    while (name[0] == '.' && name[1] == '/') {
        name += 2;
    }
    while (name[0] == '/') {
        name++;
    }
    return name[0] == '\0' ? ST_OK : st_bundle_set_add(s, name);
}

static json_t *load(const char *text, size_t len, st_bundle_why *why)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    if (root == NULL) {
        why_fail(why, ST_EPARSE, "line %d: %s", jerr.line, jerr.text);
    }
    return root;
}

/* ---- Vite manifest ---- */

/* One manifest record: {file, isEntry, css: [...]}. Counts records with a
 * file in *nfiles. */
static int manifest_record(json_t *rec, st_bundle_set *entries, size_t *nfiles)
{
    json_t *file = json_object_get(rec, "file");
    json_t *css = json_object_get(rec, "css");
    size_t i;
    json_t *v;
    int rv;
    if (!json_is_string(file)) {
        return ST_OK; /* not a chunk record (a PWA manifest.json has none) */
    }
    (*nfiles)++;
    if (!json_is_true(json_object_get(rec, "isEntry"))) {
        return ST_OK;
    }
    if ((rv = add_name(entries, json_string_value(file))) != ST_OK) {
        return rv;
    }
    json_array_foreach(css, i, v)
    {
        if (json_is_string(v) && (rv = add_name(entries, json_string_value(v))) != ST_OK) {
            return rv;
        }
    }
    return ST_OK;
}

int st_bundle_manifest_parse(const char *text, size_t len, st_bundle_set *entries,
                             st_bundle_why *why)
{
    json_t *root = load(text, len, why);
    const char *key;
    json_t *rec;
    size_t nfiles = 0;
    int rv = ST_OK;
    st_bundle_set_clear(entries);
    if (root == NULL) {
        return ST_EPARSE;
    }
    if (!json_is_object(root)) {
        rv = why_fail(why, ST_EPARSE, "not a JSON object");
        goto out;
    }
    json_object_foreach(root, key, rec)
    {
        if (json_is_object(rec) && (rv = manifest_record(rec, entries, &nfiles)) != ST_OK) {
            why_fail(why, rv, "record '%s': more than %d entry files", key, ST_BUNDLE_MAX_NAMES);
            goto out;
        }
    }
    if (nfiles == 0) {
        rv = why_fail(why, ST_EUNSUPPORTED, "no record has a \"file\": not a Vite manifest");
    }
out:
    json_decref(root);
    return rv;
}

/* ---- webpack stats ---- */

/* A module of one compilation and the chunk ids it was found in, repeats
 * included until it is counted. */
typedef struct wp_module {
    const char *key;  /* identifier, else name; points into the JSON tree */
    const char *name; /* the label */
    uint64_t size;
    uint64_t *ids;
    size_t n, cap;
} wp_module;

typedef struct wp_map {
    wp_module **slot;
    size_t cap, n;
    size_t refs; /* chunk ids held by all modules */
} wp_map;

void st_bundle_webpack_clear(st_bundle_webpack *w)
{
    st_bundle_set_clear(&w->entries);
    memset(w, 0, sizeof(*w));
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = FNV_OFFSET;
    for (; *s != '\0'; s++) {
        h = (h ^ (unsigned char)*s) * FNV_PRIME;
    }
    return h;
}

static void wp_map_clear(wp_map *m)
{
    for (size_t i = 0; i < m->cap; i++) {
        if (m->slot[i] != NULL) {
            free(m->slot[i]->ids);
            free(m->slot[i]);
        }
    }
    free(m->slot);
    memset(m, 0, sizeof(*m));
}

static int wp_grow(wp_map *m)
{
    size_t ncap = m->cap == 0 ? SET_MIN_CAP : m->cap * 2;
    wp_module **ns = calloc(ncap, sizeof(*ns));
    if (ns == NULL) {
        return ST_ENOMEM;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (m->slot[i] != NULL) {
            size_t k = (size_t)hash_str(m->slot[i]->key) & (ncap - 1);
            while (ns[k] != NULL) {
                k = (k + 1) & (ncap - 1);
            }
            ns[k] = m->slot[i];
        }
    }
    free(m->slot);
    m->slot = ns;
    m->cap = ncap;
    return ST_OK;
}

/* The module with this key, added when new. */
static int wp_get(wp_map *m, const char *key, wp_module **out)
{
    size_t k;
    int rv;
    if ((m->n + 1) * 2 > m->cap && (rv = wp_grow(m)) != ST_OK) {
        return rv;
    }
    for (k = (size_t)hash_str(key) & (m->cap - 1); m->slot[k] != NULL; k = (k + 1) & (m->cap - 1)) {
        if (strcmp(m->slot[k]->key, key) == 0) {
            *out = m->slot[k];
            return ST_OK;
        }
    }
    if (m->n >= ST_BUNDLE_MAX_MODULES) {
        return ST_ETOOBIG;
    }
    if ((m->slot[k] = calloc(1, sizeof(**m->slot))) == NULL) {
        return ST_ENOMEM;
    }
    m->slot[k]->key = key;
    m->n++;
    *out = m->slot[k];
    return ST_OK;
}

/* Chunk ids are numbers, or strings with named chunk ids. */
static int add_chunks(wp_map *m, wp_module *mod, json_t *chunks)
{
    size_t n = json_array_size(chunks);
    if (n > ST_BUNDLE_MAX_MODULE_CHUNKS || n > ST_BUNDLE_MAX_CHUNK_REFS - m->refs) {
        return ST_ETOOBIG;
    }
    if (mod->n + n > mod->cap) {
        size_t ncap = ST_MAX(mod->n + n, mod->cap * 2);
        uint64_t *nv = realloc(mod->ids, ncap * sizeof(*nv));
        if (nv == NULL) {
            return ST_ENOMEM;
        }
        mod->ids = nv;
        mod->cap = ncap;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(chunks, i);
        if (!json_is_integer(v) && !json_is_string(v)) {
            return ST_EPARSE;
        }
        mod->ids[mod->n++] =
            json_is_integer(v) ? (uint64_t)json_integer_value(v) : hash_str(json_string_value(v));
    }
    m->refs += n;
    return ST_OK;
}

/* Records module jm as shipped in its own chunks and in outer's (the chunks
 * of the concatenated module that holds it; NULL at the top level). */
static int add_module(wp_map *map, json_t *jm, json_t *outer, size_t idx, st_bundle_why *why)
{
    json_t *id = json_object_get(jm, "identifier");
    json_t *name = json_object_get(jm, "name");
    json_t *size = json_object_get(jm, "size");
    const char *key = json_is_string(id) ? json_string_value(id) : json_string_value(name);
    double sz = json_number_value(size);
    wp_module *mod;
    int rv;
    if (!json_is_object(jm)) {
        return why_fail(why, ST_EPARSE, "modules[%zu]: not an object", idx);
    }
    if (key == NULL) {
        return ST_OK; /* nothing to know its copies by */
    }
    if (!json_is_number(size) || !isfinite(sz) || sz < 0 || sz > (double)MAX_MODULE_SIZE) {
        return why_fail(why, ST_EPARSE, "modules[%zu]: size is not a byte count", idx);
    }
    if ((rv = wp_get(map, key, &mod)) != ST_OK) {
        return why_fail(why, rv, "more than %d modules", ST_BUNDLE_MAX_MODULES);
    }
    mod->name = json_is_string(name) ? json_string_value(name) : key;
    mod->size = ST_MAX(mod->size, (uint64_t)sz);
    if ((rv = add_chunks(map, mod, json_object_get(jm, "chunks"))) != ST_OK ||
        (outer != NULL && (rv = add_chunks(map, mod, outer)) != ST_OK)) {
        return why_fail(why, rv, "modules[%zu]: bad chunks, or more than %d chunks or %u in all",
                        idx, ST_BUNDLE_MAX_MODULE_CHUNKS, ST_BUNDLE_MAX_CHUNK_REFS);
    }
    return ST_OK;
}

/* webpack 5 reports a concatenated module (scope hoisting) with its parts
 * in modules[] and no chunks of their own: the parts ship in its chunks. */
static int read_modules(wp_map *map, json_t *mods, st_bundle_why *why)
{
    size_t i;
    json_t *m;
    json_array_foreach(mods, i, m)
    {
        json_t *parts = json_object_get(m, "modules");
        size_t k;
        json_t *part;
        int rv;
        if (json_array_size(parts) == 0) {
            if ((rv = add_module(map, m, NULL, i, why)) != ST_OK) {
                return rv;
            }
            continue;
        }
        json_array_foreach(parts, k, part)
        {
            if ((rv = add_module(map, part, json_object_get(m, "chunks"), i, why)) != ST_OK) {
                return rv;
            }
        }
    }
    return ST_OK;
}

static int by_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Copies name cut to ST_BUNDLE_MAX_MODULE_LABEL bytes on a UTF-8 boundary. */
static void copy_label(char *dst, const char *src)
{
    size_t n = strlen(src);
    if (n > ST_BUNDLE_MAX_MODULE_LABEL) {
        n = ST_BUNDLE_MAX_MODULE_LABEL;
        while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80) {
            n--; /* do not split a multi-byte character */
        }
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Keeps w->top sorted: most bytes first, then by name. */
static void top_insert(st_bundle_webpack *w, const char *name, uint64_t bytes)
{
    st_bundle_dup_module m;
    size_t i;
    copy_label(m.name, name);
    m.bytes = bytes;
    for (i = w->ntop; i > 0; i--) {
        const st_bundle_dup_module *p = &w->top[i - 1];
        if (p->bytes > bytes || (p->bytes == bytes && strcmp(p->name, m.name) <= 0)) {
            break;
        }
    }
    if (i >= ST_BUNDLE_TOP) {
        return;
    }
    if (w->ntop < ST_BUNDLE_TOP) {
        w->ntop++;
    }
    memmove(&w->top[i + 1], &w->top[i], (w->ntop - 1 - i) * sizeof(m));
    w->top[i] = m;
}

/* A module shipped in k distinct chunks is shipped k - 1 times too often. */
static void count_dups(wp_map *map, st_bundle_webpack *w)
{
    for (size_t i = 0; i < map->cap; i++) {
        wp_module *mod = map->slot[i];
        size_t k = 0;
        uint64_t bytes;
        if (mod == NULL || mod->n < 2) {
            continue;
        }
        qsort(mod->ids, mod->n, sizeof(*mod->ids), by_u64);
        for (size_t j = 0; j < mod->n; j++) {
            k += j == 0 || mod->ids[j] != mod->ids[j - 1];
        }
        if (k < 2) {
            continue;
        }
        bytes = mod->size * (uint64_t)(k - 1); /* < 2^36 * 2^24: no overflow */
        w->dup_bytes = w->dup_bytes + bytes < w->dup_bytes ? UINT64_MAX : w->dup_bytes + bytes;
        top_insert(w, mod->name, bytes);
    }
}

/* Adds the names of one asset list: webpack 4 lists names, webpack 5
 * {name, size}. */
static int add_assets(json_t *assets, st_bundle_webpack *w, const char *ep, st_bundle_why *why)
{
    size_t i;
    json_t *a;
    json_array_foreach(assets, i, a)
    {
        json_t *name = json_is_object(a) ? json_object_get(a, "name") : a;
        int rv;
        if (json_is_string(name) &&
            (rv = add_name(&w->entries, json_string_value(name))) != ST_OK) {
            return why_fail(why, rv, "entrypoint '%s': more than %d assets", ep,
                            ST_BUNDLE_MAX_NAMES);
        }
    }
    return ST_OK;
}

/* Entry files: each entrypoint's assets and auxiliary assets (where webpack
 * 5 lists CSS emitted as an asset module). */
static int entrypoint_assets(json_t *eps, st_bundle_webpack *w, st_bundle_why *why)
{
    const char *key;
    json_t *ep;
    int rv;
    json_object_foreach(eps, key, ep)
    {
        if ((rv = add_assets(json_object_get(ep, "assets"), w, key, why)) != ST_OK ||
            (rv = add_assets(json_object_get(ep, "auxiliaryAssets"), w, key, why)) != ST_OK) {
            return rv;
        }
    }
    return ST_OK;
}

/* One compilation: the root object, or one of its children[] (several
 * configurations). Chunk ids are its own, so modules are counted per
 * compilation. */
static int compilation(json_t *c, st_bundle_webpack *w, bool *found, st_bundle_why *why)
{
    json_t *eps = json_object_get(c, "entrypoints");
    json_t *mods = json_object_get(c, "modules");
    wp_map map = {0};
    int rv = ST_OK;
    if (json_is_object(eps)) {
        *found = true;
        if ((rv = entrypoint_assets(eps, w, why)) != ST_OK) {
            return rv;
        }
    }
    if (!json_is_array(mods)) {
        return ST_OK;
    }
    *found = true;
    w->has_modules = true;
    if ((rv = read_modules(&map, mods, why)) == ST_OK) {
        count_dups(&map, w);
    }
    wp_map_clear(&map);
    return rv;
}

int st_bundle_webpack_parse(const char *text, size_t len, st_bundle_webpack *out,
                            st_bundle_why *why)
{
    json_t *root = load(text, len, why);
    json_t *children;
    bool found = false;
    size_t i;
    json_t *ch;
    int rv;
    st_bundle_webpack_clear(out);
    if (root == NULL) {
        return ST_EPARSE;
    }
    if (!json_is_object(root)) {
        rv = why_fail(why, ST_EPARSE, "not a JSON object");
        goto out;
    }
    if ((rv = compilation(root, out, &found, why)) != ST_OK) {
        goto out;
    }
    children = json_object_get(root, "children");
    json_array_foreach(children, i, ch)
    {
        if (json_is_object(ch) && (rv = compilation(ch, out, &found, why)) != ST_OK) {
            goto out;
        }
    }
    if (!found) {
        rv = why_fail(why, ST_EPARSE, "no entrypoints or modules: not webpack stats");
    }
out:
    json_decref(root);
    if (rv != ST_OK) {
        st_bundle_webpack_clear(out);
    }
    return rv;
}

/* ---- coverage ---- */

void st_bundle_coverage_clear(st_bundle_coverage *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->e[i].path);
        free(c->e[i].r);
    }
    free(c->e);
    memset(c, 0, sizeof(*c));
}

/* "https://cdn.example/static/a.js?v=2#x" -> "static/a.js". */
static char *url_path(const char *url)
{
    const char *p = strstr(url, "://");
    size_t n;
    char *out;
    if (p != NULL) {
        p = strchr(p + 3, '/');
        p = p != NULL ? p : "";
    } else {
        p = url;
    }
    while (*p == '/') {
        p++;
    }
    n = strcspn(p, "?#");
    if ((out = malloc(n + 1)) != NULL) {
        memcpy(out, p, n);
        out[n] = '\0';
    }
    return out;
}

static int by_start(const void *a, const void *b)
{
    const st_bundle_range *x = a;
    const st_bundle_range *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

/* Sorts and merges overlapping and touching ranges; returns the new count. */
static size_t merge_ranges(st_bundle_range *r, size_t n)
{
    size_t k = 0;
    if (n == 0) {
        return 0;
    }
    qsort(r, n, sizeof(*r), by_start);
    for (size_t i = 1; i < n; i++) {
        if (r[i].start <= r[k].end) {
            r[k].end = r[i].end > r[k].end ? r[i].end : r[k].end;
        } else {
            r[++k] = r[i];
        }
    }
    return k + 1;
}

/* Turns merged UTF-16 offsets into byte offsets of the UTF-8 text in one
 * pass (the endpoints of merged ranges ascend). Offsets past the text count
 * on as bytes. */
static void utf16_to_bytes(const char *t, size_t tlen, st_bundle_range *r, size_t nr)
{
    size_t b = 0;
    uint64_t u = 0;
    for (size_t i = 0; i < 2 * nr; i++) {
        uint64_t *off = i % 2 == 0 ? &r[i / 2].start : &r[i / 2].end;
        while (u < *off && b < tlen) {
            unsigned char ch = (unsigned char)t[b];
            size_t len = ch < 0x80 ? 1 : ch < 0xE0 ? 2 : ch < 0xF0 ? 3 : 4;
            u += len == 4 ? 2 : 1; /* past the BMP: a surrogate pair */
            b = b + len < tlen ? b + len : tlen;
        }
        *off = u >= *off ? b : b + (*off - u);
    }
}

static int read_range(json_t *jr, st_bundle_range *out)
{
    json_t *s = json_object_get(jr, "start");
    json_t *e = json_object_get(jr, "end");
    json_int_t a = json_integer_value(s);
    json_int_t b = json_integer_value(e);
    if (!json_is_integer(s) || !json_is_integer(e) || a < 0 || b < a ||
        (uint64_t)b > ST_BUNDLE_MAX_OFFSET) {
        return ST_EPARSE;
    }
    *out = (st_bundle_range){(uint64_t)a, (uint64_t)b};
    return ST_OK;
}

static int coverage_entry(json_t *item, size_t idx, st_bundle_cov_entry *e, size_t *total,
                          st_bundle_why *why)
{
    json_t *url = json_object_get(item, "url");
    json_t *ranges = json_object_get(item, "ranges");
    json_t *text = json_object_get(item, "text");
    size_t n = json_array_size(ranges);
    if (!json_is_string(url) || !json_is_array(ranges)) {
        return why_fail(why, ST_EPARSE, "[%zu]: want {url, ranges: [...]}", idx);
    }
    if (n > ST_BUNDLE_MAX_RANGES - *total) {
        return why_fail(why, ST_ETOOBIG, "more than %u ranges", ST_BUNDLE_MAX_RANGES);
    }
    *total += n;
    if ((e->path = url_path(json_string_value(url))) == NULL ||
        (e->r = calloc(n > 0 ? n : 1, sizeof(*e->r))) == NULL) {
        return why_fail(why, ST_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        if (read_range(json_array_get(ranges, i), &e->r[i]) != ST_OK) {
            return why_fail(why, ST_EPARSE, "[%zu].ranges[%zu]: want {start <= end}", idx, i);
        }
    }
    e->nr = merge_ranges(e->r, n);
    if (json_is_string(text)) {
        utf16_to_bytes(json_string_value(text), json_string_length(text), e->r, e->nr);
    }
    return ST_OK;
}

int st_bundle_coverage_parse(const char *text, size_t len, st_bundle_coverage *out,
                             st_bundle_why *why)
{
    json_t *root = load(text, len, why);
    size_t total = 0;
    size_t n;
    int rv = ST_OK;
    st_bundle_coverage_clear(out);
    if (root == NULL) {
        return ST_EPARSE;
    }
    n = json_array_size(root);
    if (!json_is_array(root)) {
        rv = why_fail(why, ST_EPARSE, "not a JSON array of {url, ranges}");
    } else if (n > ST_BUNDLE_MAX_COVERAGE) {
        rv = why_fail(why, ST_ETOOBIG, "more than %d entries", ST_BUNDLE_MAX_COVERAGE);
    } else if ((out->e = calloc(n > 0 ? n : 1, sizeof(*out->e))) == NULL) {
        rv = ST_ENOMEM;
    }
    for (size_t i = 0; rv == ST_OK && i < n; i++) {
        out->n = i + 1; /* counted first so clear() frees a half-read entry */
        rv = coverage_entry(json_array_get(root, i), i, &out->e[i], &total, why);
    }
    json_decref(root);
    if (rv != ST_OK) {
        st_bundle_coverage_clear(out);
    }
    return rv;
}
