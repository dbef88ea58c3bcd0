/* What a scan needs of a series besides its labels: its kind and unit,
 * kept by series id once read (store_internal.h, st_meta_*).
 *
 * A scan walks a metric's entries in the series dictionary, whose keys
 * hold each series' name and labels; for the rest it read the series'
 * record (a B-tree descent and a protobuf unpack per series and scan: 7 %
 * of an engine step at 1,000 hosts). Records never change once written,
 * so kind and unit, read once, hold for good.
 *
 * Any thread: entries are published with release stores after the unit
 * they name, pages are installed by compare-and-swap, and units are added
 * under a mutex, never removed. */
#include "store_internal.h"

#include "err.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define PAGE_BITS 16
#define PAGE_SIZE (1u << PAGE_BITS) /* entries a page holds */
#define NPAGES (1u << (32 - PAGE_BITS))
#define UNITS_MAX 255 /* distinct units kept; a series with another reads its record */
#define UNIT_LEN_MAX 64

/* An entry: 0 unknown, else kind << 8 | (unit index + 1). */
struct st_meta {
    _Atomic(_Atomic uint16_t *) page[NPAGES];
    pthread_mutex_t mu; /* adding a unit */
    char *units[UNITS_MAX];
    _Atomic size_t nunits; /* units[0..nunits) are set for good */
};

int st_meta_new(struct st_meta **out)
{
    struct st_meta *m = calloc(1, sizeof(*m));
    if (m == NULL) {
        return ST_ENOMEM;
    }
    pthread_mutex_init(&m->mu, NULL);
    *out = m;
    return ST_OK;
}

void st_meta_free(struct st_meta *m)
{
    if (m == NULL) {
        return;
    }
    for (size_t i = 0; i < NPAGES; i++) {
        free((void *)atomic_load(&m->page[i]));
    }
    for (size_t i = 0; i < atomic_load(&m->nunits); i++) {
        free(m->units[i]);
    }
    pthread_mutex_destroy(&m->mu);
    free(m);
}

bool st_meta_get(struct st_meta *m, uint32_t id, int *kind, const char **unit)
{
    _Atomic uint16_t *p = atomic_load_explicit(&m->page[id >> PAGE_BITS], memory_order_acquire);
    uint16_t e;
    if (p == NULL) {
        return false;
    }
    e = atomic_load_explicit(&p[id & (PAGE_SIZE - 1)], memory_order_acquire);
    if (e == 0) {
        return false;
    }
    *kind = e >> 8;
    *unit = m->units[(e & 0xff) - 1];
    return true;
}

/* The index of unit among units[from, n); -1 when absent. */
static int unit_find(const struct st_meta *m, const char *unit, size_t from, size_t n)
{
    for (size_t i = from; i < n; i++) {
        if (strcmp(m->units[i], unit) == 0) {
            return (int)i;
        }
    }
    return -1;
}

/* The index of unit among the kept ones, added when new; -1 when there is
 * no room (or it is too long to be a unit worth keeping). Units come from
 * agents: once the table is full, a series with a new one costs a search
 * without the lock each time it is scanned, no more. */
static int unit_index(struct st_meta *m, const char *unit)
{
    size_t n = atomic_load_explicit(&m->nunits, memory_order_acquire);
    int idx;
    if (strlen(unit) > UNIT_LEN_MAX) {
        return -1;
    }
    if ((idx = unit_find(m, unit, 0, n)) >= 0 || n == UNITS_MAX) {
        return idx;
    }
    pthread_mutex_lock(&m->mu);
    idx = unit_find(m, unit, n, atomic_load(&m->nunits));
    n = atomic_load(&m->nunits);
    if (idx < 0 && n < UNITS_MAX && (m->units[n] = strdup(unit)) != NULL) {
        idx = (int)n;
        atomic_store_explicit(&m->nunits, n + 1, memory_order_release);
    }
    pthread_mutex_unlock(&m->mu);
    return idx;
}

void st_meta_note(struct st_meta *m, uint32_t id, int kind, const char *unit)
{
    _Atomic(_Atomic uint16_t *) *slot = &m->page[id >> PAGE_BITS];
    _Atomic uint16_t *p = atomic_load_explicit(slot, memory_order_acquire);
    int u;
    if (kind < 0 || kind > 0xff || (u = unit_index(m, unit != NULL ? unit : "")) < 0) {
        return;
    }
    if (p == NULL) {
        _Atomic uint16_t *np = calloc(PAGE_SIZE, sizeof(*np));
        _Atomic uint16_t *expected = NULL;
        if (np == NULL) {
            return;
        }
        if (atomic_compare_exchange_strong(slot, &expected, np)) {
            p = np;
        } else {
            free((void *)np);
            p = expected;
        }
    }
    atomic_store_explicit(&p[id & (PAGE_SIZE - 1)], (uint16_t)(kind << 8 | (u + 1)),
                          memory_order_release);
}
