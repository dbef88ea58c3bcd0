/* Answers as arrays (answer.h): rows, points and the lookup index. */
#include "answer.h"

#include "err.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Below this many rows a lookup reads them in turn: building an index
 * costs more than the few comparisons. */
#define INDEX_MIN_ROWS 32
#define KEYS_MAX 16 /* labels of a key list; longer lists search linearly */
#define KEY_LEN 128 /* a label name; a longer one matches nothing */

/* One key list's index: open addressing over row numbers + 1. */
struct ans_keys_index {
    char keys[KEYS_MAX * KEY_LEN];
    char names[KEYS_MAX][KEY_LEN];
    size_t nnames;
    uint32_t *slot;
    uint64_t *hash; /* each row's hash on the keys: probes compare it first */
    size_t size;    /* a power of two, at least twice the rows */
};

struct st_ans_index {
    struct ans_keys_index *v;
    size_t n;
};

int st_answer_new(st_answer **out)
{
    st_answer *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        return ST_ENOMEM;
    }
    a->refs = 1;
    *out = a;
    return ST_OK;
}

static int reserve_points(st_answer *a, size_t n)
{
    size_t cap;
    int64_t *t;
    double *v;
    if (a->np + n <= a->pcap) {
        return ST_OK;
    }
    cap = ST_MAX(a->pcap * 2, a->np + n);
    cap = ST_MAX(cap, 64);
    if ((t = realloc(a->t, cap * sizeof(*t))) == NULL) {
        return ST_ENOMEM;
    }
    a->t = t;
    if ((v = realloc(a->v, cap * sizeof(*v))) == NULL) {
        return ST_ENOMEM;
    }
    a->v = v;
    a->pcap = cap;
    for (size_t i = 0; i < a->n; i++) { /* the rows' points moved */
        a->rows[i].t = a->t + a->rows[i].off;
        a->rows[i].v = a->v + a->rows[i].off;
    }
    return ST_OK;
}

int st_answer_add(st_answer *a, json_t *labels, const int64_t *t, const double *v, size_t n)
{
    st_ans_row *r;
    int rv;
    if (a->n == a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 16;
        st_ans_row *nr = realloc(a->rows, cap * sizeof(*nr));
        if (nr == NULL) {
            return ST_ENOMEM;
        }
        a->rows = nr;
        a->cap = cap;
    }
    if ((rv = reserve_points(a, n)) != ST_OK) {
        return rv;
    }
    r = &a->rows[a->n++];
    memset(r, 0, sizeof(*r));
    r->labels = json_incref(labels);
    r->n = n;
    r->off = a->np;
    r->t = n > 0 ? a->t + r->off : NULL;
    r->v = n > 0 ? a->v + r->off : NULL;
    if (n > 0) {
        memcpy(a->t + a->np, t, n * sizeof(*t));
        memcpy(a->v + a->np, v, n * sizeof(*v));
    }
    a->np += n;
    return ST_OK;
}

int st_answer_append(st_answer *a, const st_answer *b)
{
    int rv = ST_OK;
    for (size_t i = 0; rv == ST_OK && i < b->n; i++) {
        const st_ans_row *r = &b->rows[i];
        rv = st_answer_add(a, r->labels, r->t, r->v, r->n);
    }
    return rv;
}

st_answer *st_answer_ref(st_answer *a)
{
    if (a != NULL) {
        a->refs++;
    }
    return a;
}

static void index_free(struct st_ans_index *x)
{
    if (x == NULL) {
        return;
    }
    for (size_t i = 0; i < x->n; i++) {
        free(x->v[i].slot);
        free(x->v[i].hash);
    }
    free(x->v);
    free(x);
}

void st_answer_unref(st_answer *a)
{
    if (a == NULL || --a->refs > 0) {
        return;
    }
    for (size_t i = 0; i < a->n; i++) {
        json_decref(a->rows[i].labels);
    }
    free(a->rows);
    free(a->t);
    free(a->v);
    index_free(a->idx);
    free(a);
}

bool st_answer_equal(const st_answer *a, const st_answer *b)
{
    if (a->n != b->n || a->from != b->from) {
        return false;
    }
    for (size_t i = 0; i < a->n; i++) {
        const st_ans_row *x = &a->rows[i];
        const st_ans_row *y = &b->rows[i];
        if (x->n != y->n || !json_equal(x->labels, y->labels) ||
            (x->n > 0 && (memcmp(x->t, y->t, x->n * sizeof(*x->t)) != 0 ||
                          memcmp(x->v, y->v, x->n * sizeof(*x->v)) != 0))) {
            return false;
        }
    }
    return true;
}

json_t *st_answer_json(const st_answer *a)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr != NULL && i < a->n; i++) {
        const st_ans_row *r = &a->rows[i];
        json_t *pts = json_array();
        json_t *item;
        for (size_t k = 0; pts != NULL && k < r->n; k++) {
            json_array_append_new(pts, json_pack("[I,f]", (json_int_t)r->t[k], r->v[k]));
        }
        item = pts != NULL ? json_pack("{s:O,s:o}", "labels", r->labels, "points", pts) : NULL;
        if (item == NULL || json_array_append_new(arr, item) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

const char *st_ans_label(const st_ans_row *r, const char *key)
{
    const char *v = json_string_value(json_object_get(r->labels, key));
    return v != NULL ? v : "";
}

double st_ans_value(const st_ans_row *r)
{
    return r->n > 0 ? r->v[r->n - 1] : NAN;
}

/* Splits keys at commas into names; false when a name or the list is too
 * long to index. */
static bool split_keys(const char *keys, char names[][KEY_LEN], size_t *n)
{
    const char *p = keys;
    *n = 0;
    while (*p != '\0') {
        size_t len = strcspn(p, ",");
        if (*n == KEYS_MAX || len >= KEY_LEN) {
            return false;
        }
        memcpy(names[*n], p, len);
        names[(*n)++][len] = '\0';
        p += len + (p[len] == ',');
    }
    return true;
}

/* The row's values on the keys (into vals) and their hash. */
static uint64_t hash_on(const st_ans_row *r, char names[][KEY_LEN], size_t n, const char **vals)
{
    uint64_t h = ST_FNV_SEED;
    for (size_t i = 0; i < n; i++) {
        const char *v = st_ans_label(r, names[i]);
        h = st_fnv1a(h, v, strlen(v) + 1); /* the NUL keeps "a","bc" from "ab","c" */
        vals[i] = v;
    }
    return h;
}

/* Whether row r has the values vals on the keys. */
static bool has_values(const st_ans_row *r, char names[][KEY_LEN], size_t n, const char **vals)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(st_ans_label(r, names[i]), vals[i]) != 0) {
            return false;
        }
    }
    return true;
}

/* The index of a's rows on keys, built when first asked; NULL when it
 * cannot be (memory, a key list too long): search linearly. */
static struct ans_keys_index *index_on(st_answer *a, const char *keys)
{
    struct ans_keys_index *k;
    struct ans_keys_index *nv;
    size_t size = 64;
    if (strlen(keys) >= sizeof(k->keys)) {
        return NULL;
    }
    if (a->idx == NULL && (a->idx = calloc(1, sizeof(*a->idx))) == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < a->idx->n; i++) {
        if (strcmp(a->idx->v[i].keys, keys) == 0) {
            return &a->idx->v[i];
        }
    }
    if ((nv = realloc(a->idx->v, (a->idx->n + 1) * sizeof(*nv))) == NULL) {
        return NULL;
    }
    a->idx->v = nv;
    k = &nv[a->idx->n];
    memset(k, 0, sizeof(*k));
    if (!split_keys(keys, k->names, &k->nnames)) {
        return NULL;
    }
    while (size < 2 * a->n) {
        size *= 2;
    }
    if ((k->slot = calloc(size, sizeof(*k->slot))) == NULL ||
        (k->hash = malloc(a->n * sizeof(*k->hash))) == NULL) {
        free(k->slot);
        return NULL;
    }
    memcpy(k->keys, keys, strlen(keys) + 1); /* fits: checked on entry */
    k->size = size;
    for (size_t i = 0; i < a->n; i++) {
        const char *vals[KEYS_MAX];
        uint64_t h = hash_on(&a->rows[i], k->names, k->nnames, vals);
        size_t s = h & (size - 1);
        bool dup = false;
        k->hash[i] = h;
        for (; k->slot[s] != 0; s = (s + 1) & (size - 1)) {
            if (k->hash[k->slot[s] - 1] == h &&
                has_values(&a->rows[k->slot[s] - 1], k->names, k->nnames, vals)) {
                dup = true; /* the first of equals is the one found */
                break;
            }
        }
        if (!dup) {
            k->slot[s] = (uint32_t)(i + 1);
        }
    }
    a->idx->n++;
    return k;
}

/* Whether x and y agree on every key of the comma-separated list. */
static bool same_keys(const st_ans_row *x, const st_ans_row *y, const char *keys)
{
    const char *p = keys;
    while (*p != '\0') {
        char key[KEY_LEN];
        size_t n = strcspn(p, ",");
        if (n >= sizeof(key)) {
            return false;
        }
        memcpy(key, p, n);
        key[n] = '\0';
        if (strcmp(st_ans_label(x, key), st_ans_label(y, key)) != 0) {
            return false;
        }
        p += n + (p[n] == ',');
    }
    return true;
}

const st_ans_row *st_answer_find(st_answer *a, const st_ans_row *item, const char *keys)
{
    struct ans_keys_index *k;
    if (a == NULL) {
        return NULL;
    }
    if (a->n >= INDEX_MIN_ROWS && a->n < UINT32_MAX && (k = index_on(a, keys)) != NULL) {
        const char *vals[KEYS_MAX];
        uint64_t h = hash_on(item, k->names, k->nnames, vals);
        for (size_t s = h & (k->size - 1); k->slot[s] != 0; s = (s + 1) & (k->size - 1)) {
            const st_ans_row *r = &a->rows[k->slot[s] - 1];
            /* rows of one fold share their labels: the same object is equal */
            if (k->hash[k->slot[s] - 1] == h &&
                (r->labels == item->labels || has_values(r, k->names, k->nnames, vals))) {
                return r;
            }
        }
        return NULL;
    }
    for (size_t i = 0; i < a->n; i++) {
        if (same_keys(&a->rows[i], item, keys)) {
            return &a->rows[i];
        }
    }
    return NULL;
}
