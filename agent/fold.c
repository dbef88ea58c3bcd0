/* Folds samples per interval into per-series points and turns closed points
 * into columnar Series of a Frame (see proto/strata.proto): counters become
 * deltas, gauges last/min/max, distributions sketches. */
#include "fold.h"

#include "err.h"
#include "log.h"
#include "sketch.h"
#include "util.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX 4096 /* name + labels of one series, encoded */
#define IDLE_FORGET_MS (15 * 60 * 1000)
#define MAX_CLOSED 4096 /* closed points kept per series between takes */

struct point {
    int64_t start;
    int64_t interval;
    double value; /* gauge last, counter sum */
    double min;
    double max;
    st_sketch *sk; /* distributions */
};

struct series {
    struct series *next; /* hash chain */
    char *key;           /* name\0k\0v\0... used for identity */
    size_t keylen;
    char *name;
    char *unit;
    char **lkeys;
    char **lvals;
    size_t nlabels;
    int kind; /* Strata__V1__Kind */
    st_layer layer;
    int scale;
    bool has_prev; /* counter_total base */
    double prev_total;
    bool open;
    struct point cur;
    struct point *closed;
    size_t nclosed;
    size_t capclosed;
    int64_t touched_ms;
};

struct st_emit {
    st_fold *f;
    int64_t start;
    int64_t interval;
    int64_t now;
};

struct st_fold {
    struct series **tab;
    size_t tabsize; /* power of two */
    size_t count;
    uint64_t dropped;
    bool totals_from_zero;
    st_emit em;
    char keybuf[KEY_MAX];
};

int st_fold_new(st_fold **out)
{
    st_fold *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        return ST_ENOMEM;
    }
    f->tabsize = 256;
    f->tab = calloc(f->tabsize, sizeof(*f->tab));
    if (f->tab == NULL) {
        free(f);
        return ST_ENOMEM;
    }
    f->em.f = f;
    *out = f;
    return ST_OK;
}

static void series_free(struct series *s)
{
    if (s == NULL) {
        return;
    }
    for (size_t i = 0; i < s->nlabels; i++) {
        free(s->lkeys[i]);
        free(s->lvals[i]);
    }
    for (size_t i = 0; i < s->nclosed; i++) {
        st_sketch_free(s->closed[i].sk);
    }
    st_sketch_free(s->cur.sk);
    free(s->closed);
    free(s->lkeys);
    free(s->lvals);
    free(s->key);
    free(s->name);
    free(s->unit);
    free(s);
}

void st_fold_free(st_fold *f)
{
    if (f == NULL) {
        return;
    }
    for (size_t i = 0; i < f->tabsize; i++) {
        struct series *s = f->tab[i];
        while (s != NULL) {
            struct series *n = s->next;
            series_free(s);
            s = n;
        }
    }
    free(f->tab);
    free(f);
}

uint64_t st_fold_dropped(const st_fold *f)
{
    return f->dropped;
}

size_t st_fold_series_count(const st_fold *f)
{
    return f->count;
}

st_emit *st_fold_begin(st_fold *f, int64_t now_ms, int64_t interval_ms)
{
    if (interval_ms <= 0) {
        interval_ms = 1000;
    }
    f->em.now = now_ms;
    f->em.interval = interval_ms;
    f->em.start = now_ms - (now_ms % interval_ms);
    return &f->em;
}

st_emit *st_fold_begin_at(st_fold *f, int64_t start_ms, int64_t interval_ms, int64_t now_ms)
{
    f->em.now = now_ms;
    f->em.interval = interval_ms > 0 ? interval_ms : 1000;
    f->em.start = start_ms;
    return &f->em;
}

void st_fold_totals_from_zero(st_fold *f, bool on)
{
    f->totals_from_zero = on;
}

static int label_cmp(const void *a, const void *b)
{
    const st_label *x = a;
    const st_label *y = b;
    return strcmp(x->key, y->key);
}

/* Encodes name and labels (sorted by key) as name\0k\0v\0... into buf. */
static int build_key(const st_series_desc *d, char *buf, size_t cap, size_t *len)
{
    st_label sorted[64];
    size_t n = 0;
    size_t nl = d->nlabels;
    if (d->name == NULL || nl > ST_ARRAY_LEN(sorted)) {
        return ST_EINVAL;
    }
    if (nl > 0) {
        memcpy(sorted, d->labels, nl * sizeof(*sorted));
        qsort(sorted, nl, sizeof(*sorted), label_cmp);
    }
    for (size_t i = 0; i <= 2 * nl; i++) {
        const char *s = i == 0 ? d->name : ((i & 1) ? sorted[i / 2].key : sorted[i / 2 - 1].value);
        size_t l = strlen(s);
        if (n + l + 1 > cap) {
            return ST_ETOOBIG;
        }
        memcpy(buf + n, s, l + 1);
        n += l + 1;
    }
    *len = n;
    return ST_OK;
}

static uint64_t hash_bytes(const char *p, size_t n)
{
    return st_fnv1a(ST_FNV_SEED, p, n);
}

static int grow(st_fold *f)
{
    size_t nsize = f->tabsize * 2;
    struct series **nt = calloc(nsize, sizeof(*nt));
    if (nt == NULL) {
        return ST_ENOMEM;
    }
    for (size_t i = 0; i < f->tabsize; i++) {
        struct series *s = f->tab[i];
        while (s != NULL) {
            struct series *n = s->next;
            size_t b = hash_bytes(s->key, s->keylen) & (nsize - 1);
            s->next = nt[b];
            nt[b] = s;
            s = n;
        }
    }
    free(f->tab);
    f->tab = nt;
    f->tabsize = nsize;
    return ST_OK;
}

static char *dupstr(const char *s)
{
    return strdup(s != NULL ? s : "");
}

static struct series *series_new(const st_series_desc *d, int kind, const char *key, size_t keylen)
{
    struct series *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return NULL;
    }
    s->key = malloc(keylen);
    s->name = dupstr(d->name);
    s->unit = dupstr(d->unit);
    s->lkeys = calloc(d->nlabels + 1, sizeof(char *));
    s->lvals = calloc(d->nlabels + 1, sizeof(char *));
    if (s->key == NULL || s->name == NULL || s->unit == NULL || s->lkeys == NULL ||
        s->lvals == NULL) {
        series_free(s);
        return NULL;
    }
    memcpy(s->key, key, keylen);
    s->keylen = keylen;
    for (size_t i = 0; i < d->nlabels; i++) {
        s->lkeys[i] = dupstr(d->labels[i].key);
        s->lvals[i] = dupstr(d->labels[i].value);
        s->nlabels++;
        if (s->lkeys[i] == NULL || s->lvals[i] == NULL) {
            series_free(s);
            return NULL;
        }
    }
    s->kind = kind;
    s->layer = d->layer;
    s->scale = (d->scale >= 0 && d->scale <= 18) ? d->scale : 0;
    return s;
}

/* Finds or creates the series; ST_EINVAL when the name is reused with
 * another kind, ST_ETOOBIG when the fold is full (counted). */
static int lookup(st_fold *f, const st_series_desc *d, int kind, struct series **out)
{
    size_t keylen;
    size_t b;
    struct series *s;
    int rv = build_key(d, f->keybuf, sizeof(f->keybuf), &keylen);
    if (rv != ST_OK) {
        return rv;
    }
    b = hash_bytes(f->keybuf, keylen) & (f->tabsize - 1);
    for (s = f->tab[b]; s != NULL; s = s->next) {
        if (s->keylen == keylen && memcmp(s->key, f->keybuf, keylen) == 0) {
            if (s->kind != kind) {
                ST_WARN("fold", "series %s emitted as two kinds", d->name);
                return ST_EINVAL;
            }
            *out = s;
            return ST_OK;
        }
    }
    if (f->count >= ST_FOLD_MAX_SERIES) {
        f->dropped++;
        return ST_ETOOBIG;
    }
    if ((s = series_new(d, kind, f->keybuf, keylen)) == NULL) {
        return ST_ENOMEM;
    }
    s->next = f->tab[b];
    f->tab[b] = s;
    f->count++;
    if (f->count > f->tabsize && grow(f) != ST_OK) {
        ST_WARN("fold", "could not grow the series table");
    }
    *out = s;
    return ST_OK;
}

/* Moves the open point to the closed list. */
static void close_point(struct series *s)
{
    if (!s->open) {
        return;
    }
    s->open = false;
    if (s->nclosed == s->capclosed) {
        size_t ncap = s->capclosed == 0 ? 16 : s->capclosed * 2;
        struct point *np;
        if (ncap > MAX_CLOSED || (np = realloc(s->closed, ncap * sizeof(*np))) == NULL) {
            /* Nothing took the points for a long time: keep the newest. */
            st_sketch_free(s->closed[0].sk);
            memmove(s->closed, s->closed + 1, (s->nclosed - 1) * sizeof(*s->closed));
            s->nclosed--;
        } else {
            s->closed = np;
            s->capclosed = ncap;
        }
    }
    s->closed[s->nclosed++] = s->cur;
    s->cur.sk = NULL;
}

/* Makes the series' open point the emitter's interval, closing an older
 * one. A sample for an interval older than the open point is folded into
 * the open point (clocks only move forward for one sampler). */
static int open_point(struct series *s, const st_emit *e)
{
    if (s->open && s->cur.start == e->start && s->cur.interval == e->interval) {
        return ST_OK;
    }
    if (s->open && e->start < s->cur.start) {
        return ST_OK;
    }
    close_point(s);
    memset(&s->cur, 0, sizeof(s->cur));
    s->cur.start = e->start;
    s->cur.interval = e->interval;
    s->cur.min = INFINITY;
    s->cur.max = -INFINITY;
    if (s->kind == STRATA__V1__KIND__DISTRIBUTION) {
        int rv = st_sketch_new(ST_SKETCH_ALPHA, &s->cur.sk);
        if (rv != ST_OK) {
            return rv;
        }
    }
    s->open = true;
    return ST_OK;
}

static int prepare(st_emit *e, const st_series_desc *d, int kind, struct series **out)
{
    struct series *s;
    int rv = lookup(e->f, d, kind, &s);
    if (rv != ST_OK) {
        return rv;
    }
    s->touched_ms = e->now;
    *out = s;
    return ST_OK;
}

int st_emit_gauge(st_emit *e, const st_series_desc *d, double v)
{
    struct series *s;
    int rv;
    if (!isfinite(v)) {
        return ST_EINVAL;
    }
    if ((rv = prepare(e, d, STRATA__V1__KIND__GAUGE, &s)) != ST_OK ||
        (rv = open_point(s, e)) != ST_OK) {
        return rv;
    }
    s->cur.value = v;
    s->cur.min = fmin(s->cur.min, v);
    s->cur.max = fmax(s->cur.max, v);
    return ST_OK;
}

int st_emit_counter_add(st_emit *e, const st_series_desc *d, double delta)
{
    struct series *s;
    int rv;
    if (!isfinite(delta) || delta < 0) {
        return ST_EINVAL;
    }
    if ((rv = prepare(e, d, STRATA__V1__KIND__COUNTER, &s)) != ST_OK ||
        (rv = open_point(s, e)) != ST_OK) {
        return rv;
    }
    s->cur.value += delta;
    return ST_OK;
}

int st_emit_counter_total(st_emit *e, const st_series_desc *d, double total)
{
    struct series *s;
    double delta;
    int rv;
    if (!isfinite(total) || total < 0) {
        return ST_EINVAL;
    }
    if ((rv = prepare(e, d, STRATA__V1__KIND__COUNTER, &s)) != ST_OK) {
        return rv;
    }
    if (!s->has_prev) {
        s->has_prev = true;
        s->prev_total = e->f->totals_from_zero ? 0 : total;
        if (!e->f->totals_from_zero) {
            return ST_OK;
        }
    }
    /* A total below the previous one means the source restarted from 0. */
    delta = total >= s->prev_total ? total - s->prev_total : total;
    s->prev_total = total;
    if ((rv = open_point(s, e)) != ST_OK) {
        return rv;
    }
    s->cur.value += delta;
    return ST_OK;
}

int st_emit_observe(st_emit *e, const st_series_desc *d, double v, uint64_t n)
{
    struct series *s;
    int rv;
    if (!isfinite(v)) {
        return ST_EINVAL;
    }
    if ((rv = prepare(e, d, STRATA__V1__KIND__DISTRIBUTION, &s)) != ST_OK ||
        (rv = open_point(s, e)) != ST_OK) {
        return rv;
    }
    return st_sketch_insert_n(s->cur.sk, v, n);
}

int st_emit_sketch(st_emit *e, const st_series_desc *d, const st_sketch *sk)
{
    struct series *s;
    int rv;
    if ((rv = prepare(e, d, STRATA__V1__KIND__DISTRIBUTION, &s)) != ST_OK ||
        (rv = open_point(s, e)) != ST_OK) {
        return rv;
    }
    return st_sketch_merge(s->cur.sk, sk);
}

/* ---- turning closed points into Series ---- */

static const double pow10tab[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8, 1e9,
                                  1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18};

/* True when every value of the run can travel as an integer at the
 * series' scale. A positive scale quantises by design (the sampler chose
 * its precision); scale 0 only takes values that are already integral. */
static bool integral_run(const struct series *s, const struct point *p, size_t n)
{
    double mul = pow10tab[s->scale];
    for (size_t i = 0; i < n; i++) {
        double x = p[i].value * mul;
        if (fabs(x) > 9007199254740992.0) {
            return false;
        }
        if (s->scale == 0 && x != floor(x)) {
            return false;
        }
    }
    return true;
}

static Strata__V1__Label **labels_dup(const struct series *s)
{
    Strata__V1__Label **v = calloc(s->nlabels + 1, sizeof(*v));
    if (v == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < s->nlabels; i++) {
        v[i] = malloc(sizeof(**v));
        if (v[i] == NULL) {
            goto fail;
        }
        strata__v1__label__init(v[i]);
        v[i]->key = strdup(s->lkeys[i]);
        v[i]->value = strdup(s->lvals[i]);
        if (v[i]->key == NULL || v[i]->value == NULL) {
            goto fail;
        }
    }
    return v;
fail:
    for (size_t i = 0; i < s->nlabels && v[i] != NULL; i++) {
        free(v[i]->key);
        free(v[i]->value);
        free(v[i]);
    }
    free(v);
    return NULL;
}

static int fill_values(const struct series *s, const struct point *p, size_t n,
                       Strata__V1__Series *out)
{
    bool minmax = false;
    if (s->kind == STRATA__V1__KIND__DISTRIBUTION) {
        out->sketches = calloc(n, sizeof(*out->sketches));
        if (out->sketches == NULL) {
            return ST_ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
            Strata__V1__Sketch *m = malloc(sizeof(*m));
            int rv;
            if (m == NULL) {
                return ST_ENOMEM;
            }
            strata__v1__sketch__init(m);
            out->sketches[out->n_sketches++] = m;
            if ((rv = st_sketch_to_proto(p[i].sk, m)) != ST_OK) {
                return rv;
            }
        }
        return ST_OK;
    }
    if (integral_run(s, p, n)) {
        double mul = pow10tab[s->scale];
        int64_t prev = 0;
        out->ivalues = malloc(n * sizeof(*out->ivalues));
        if (out->ivalues == NULL) {
            return ST_ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
            int64_t x = (int64_t)llround(p[i].value * mul);
            out->ivalues[i] = x - prev;
            prev = x;
        }
        out->n_ivalues = n;
        out->scale = s->scale;
    } else {
        out->values = malloc(n * sizeof(*out->values));
        if (out->values == NULL) {
            return ST_ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
            out->values[i] = p[i].value;
        }
        out->n_values = n;
    }
    for (size_t i = 0; s->kind == STRATA__V1__KIND__GAUGE && i < n; i++) {
        minmax = minmax || p[i].min != p[i].value || p[i].max != p[i].value;
    }
    if (minmax) {
        out->mins = malloc(n * sizeof(double));
        out->maxs = malloc(n * sizeof(double));
        if (out->mins == NULL || out->maxs == NULL) {
            return ST_ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
            out->mins[i] = p[i].min;
            out->maxs[i] = p[i].max;
        }
        out->n_mins = out->n_maxs = n;
    }
    return ST_OK;
}

static int append_series(Strata__V1__Frame *frame, Strata__V1__Series *sr)
{
    Strata__V1__Series **v = realloc(frame->series, (frame->n_series + 1) * sizeof(*v));
    if (v == NULL) {
        return ST_ENOMEM;
    }
    frame->series = v;
    frame->series[frame->n_series++] = sr;
    return ST_OK;
}

/* One Series entry for the run p[0..n) of back-to-back points. */
static int emit_run(const struct series *s, const struct point *p, size_t n,
                    Strata__V1__Frame *frame)
{
    Strata__V1__Series *sr = malloc(sizeof(*sr));
    int rv;
    if (sr == NULL) {
        return ST_ENOMEM;
    }
    strata__v1__series__init(sr);
    if ((rv = append_series(frame, sr)) != ST_OK) {
        free(sr);
        return rv;
    }
    sr->name = strdup(s->name);
    sr->unit = strdup(s->unit);
    sr->labels = labels_dup(s);
    if (sr->name == NULL || sr->unit == NULL || sr->labels == NULL) {
        return ST_ENOMEM;
    }
    sr->n_labels = s->nlabels;
    sr->layer = (Strata__V1__Layer)s->layer;
    sr->kind = (Strata__V1__Kind)s->kind;
    sr->start_unix_ms = p[0].start;
    sr->interval_ms = (uint32_t)p[0].interval;
    return fill_values(s, p, n, sr);
}

static int take_series(struct series *s, Strata__V1__Frame *frame)
{
    size_t i = 0;
    int rv = ST_OK;
    while (i < s->nclosed && rv == ST_OK) {
        size_t j = i + 1;
        while (j < s->nclosed && j - i < 4096 && s->closed[j].interval == s->closed[i].interval &&
               s->closed[j].start == s->closed[j - 1].start + s->closed[j - 1].interval) {
            j++;
        }
        rv = emit_run(s, s->closed + i, j - i, frame);
        i = j;
    }
    for (i = 0; i < s->nclosed; i++) {
        st_sketch_free(s->closed[i].sk);
    }
    s->nclosed = 0;
    return rv;
}

int st_fold_take(st_fold *f, int64_t now_ms, Strata__V1__Frame *frame)
{
    int rv = ST_OK;
    for (size_t b = 0; b < f->tabsize; b++) {
        struct series **pp = &f->tab[b];
        while (*pp != NULL) {
            struct series *s = *pp;
            if (s->open && s->cur.start + s->cur.interval <= now_ms) {
                close_point(s);
            }
            if (s->nclosed > 0 && rv == ST_OK) {
                rv = take_series(s, frame);
            }
            if (!s->open && s->nclosed == 0 && now_ms != INT64_MAX &&
                now_ms - s->touched_ms > IDLE_FORGET_MS) {
                *pp = s->next;
                series_free(s);
                f->count--;
                continue;
            }
            pp = &s->next;
        }
    }
    return rv;
}
