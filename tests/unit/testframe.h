/* Frames built by hand for unit tests: the envelope of one agent's frame
 * (its 16-byte id, seq, host and role) with room for series, and labels;
 * every piece is malloc'd, so st_frame_free frees them as it frees a
 * decoded frame. */
#ifndef ST_TEST_FRAME_H
#define ST_TEST_FRAME_H

#include "frame.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

/* id: the agent's 16 bytes; cap: series the frame has room for (n_series
 * is 0). Fails the test when out of memory. */
static inline st_frame *st_test_frame_new(const uint8_t id[16], uint64_t seq, const char *host,
                                          Strata__V1__Role role, size_t cap)
{
    st_frame *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    strata__v1__frame__init(f);
    f->agent_id.data = malloc(16);
    assert_non_null(f->agent_id.data);
    memcpy(f->agent_id.data, id, 16);
    f->agent_id.len = 16;
    f->seq = seq;
    f->agent = malloc(sizeof(*f->agent));
    assert_non_null(f->agent);
    strata__v1__agent__init(f->agent);
    f->agent->host = strdup(host);
    assert_non_null(f->agent->host);
    f->agent->role = role;
    if (cap > 0) {
        f->series = calloc(cap, sizeof(*f->series));
        assert_non_null(f->series);
    }
    return f;
}

/* A label k=v for a series built by hand. */
static inline Strata__V1__Label *st_test_label_new(const char *k, const char *v)
{
    Strata__V1__Label *l = malloc(sizeof(*l));
    assert_non_null(l);
    strata__v1__label__init(l);
    l->key = strdup(k);
    l->value = strdup(v);
    assert_true(l->key != NULL && l->value != NULL);
    return l;
}

#endif
