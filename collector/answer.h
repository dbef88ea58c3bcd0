/* An aggregated answer as arrays: the groups of one question in answer
 * order, each with its labels and its points. The engine's rules read
 * every group of tens of answers per run and look groups of one answer up
 * in another; as JSON ({"series": [{"labels", "points": [[t, v]]}]}) that
 * was over a million values built, walked and freed per engine step, a
 * quarter of a run. GET /v1/query still answers JSON (query.h).
 *
 * An answer is built (st_answer_add), then only read:
 * it is shared by reference (the engine keeps its answers across runs) and
 * used by one thread at a time. */
#ifndef ST_ANSWER_H
#define ST_ANSWER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One group: its labels (an object of strings) and its points in time
 * order, every value finite (a bucket without one is left out); t and v
 * are NULL when it has none. */
typedef struct st_ans_row {
    json_t *labels;
    size_t n;
    const int64_t *t;
    const double *v;
    size_t off; /* where its points start in the answer's arrays */
} st_ans_row;

struct st_ans_index;

typedef struct st_answer {
    size_t n; /* rows */
    st_ans_row *rows;
    int64_t from; /* the first bucket's start (the answer's "from") */
    /* private */
    size_t cap;
    int64_t *t;
    double *v;
    size_t np;
    size_t pcap;
    int refs;
    struct st_ans_index *idx; /* lookups by key list, built on first use */
} st_answer;

int st_answer_new(st_answer **out);
/* Appends a group: labels are referenced (json_incref), points copied. */
int st_answer_add(st_answer *a, json_t *labels, const int64_t *t, const double *v, size_t n);
/* Appends every group of b. */
int st_answer_append(st_answer *a, const st_answer *b);
st_answer *st_answer_ref(st_answer *a);
void st_answer_unref(st_answer *a); /* NULL-safe */

/* Whether a and b hold the same groups (labels) with the same points,
 * bit for bit, in the same order. */
bool st_answer_equal(const st_answer *a, const st_answer *b);

/* The rows as GET /v1/query writes its "series": [{"labels", "points":
 * [[t, v], ...]}] (new ref; NULL without memory). */
json_t *st_answer_json(const st_answer *a);

/* A label of a row; "" when absent or not a string. */
const char *st_ans_label(const st_ans_row *r, const char *key);
/* The row's last value (the one value of a question without step); NAN
 * when it has no point. */
double st_ans_value(const st_ans_row *r);
/* The first row of a whose labels equal item's on every key of the comma
 * separated list keys (a missing label equals ""); NULL when none. Past a
 * few rows, a hash index per key list is kept in a, so looking every row
 * of one answer up in another stays linear. */
const st_ans_row *st_answer_find(st_answer *a, const st_ans_row *item, const char *keys);

#endif
