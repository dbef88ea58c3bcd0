/* Capped growing buffer. */
#include "buf.h"

#include "err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void st_buf_init(st_buf *b, size_t limit)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->limit = limit;
}

void st_buf_free(st_buf *b)
{
    if (b == NULL) {
        return;
    }
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void st_buf_reset(st_buf *b)
{
    b->len = 0;
}

int st_buf_reserve(st_buf *b, size_t n)
{
    size_t want;
    uint8_t *p;
    if (n > b->limit || b->len > b->limit - n) {
        return ST_ETOOBIG;
    }
    want = b->len + n;
    if (want <= b->cap) {
        return ST_OK;
    }
    if (b->cap > 0 && want < b->cap * 2) {
        want = b->cap * 2;
    }
    if (want < 64) {
        want = 64;
    }
    /* One spare byte above the limit keeps st_buf_cstr always possible. */
    if (want > b->limit + 1) {
        want = b->limit + 1;
    }
    p = realloc(b->data, want);
    if (p == NULL) {
        return ST_ENOMEM;
    }
    b->data = p;
    b->cap = want;
    return ST_OK;
}

int st_buf_append(st_buf *b, const void *p, size_t n)
{
    int rv;
    if (n == 0) {
        return ST_OK;
    }
    if ((rv = st_buf_reserve(b, n)) != ST_OK) {
        return rv;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return ST_OK;
}

int st_buf_append_str(st_buf *b, const char *s)
{
    return st_buf_append(b, s, strlen(s));
}

int st_buf_printf(st_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    int rv;
    char small[256];

    va_start(ap, fmt);
    n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) {
        return ST_EINVAL;
    }
    if ((size_t)n < sizeof(small)) {
        return st_buf_append(b, small, (size_t)n);
    }
    if ((rv = st_buf_reserve(b, (size_t)n + 1)) != ST_OK) {
        return rv;
    }
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return ST_OK;
}

int st_buf_cstr(st_buf *b, const char **out)
{
    if (b->cap <= b->len) {
        uint8_t *p = realloc(b->data, b->len + 1);
        if (p == NULL) {
            return ST_ENOMEM;
        }
        b->data = p;
        b->cap = b->len + 1;
    }
    b->data[b->len] = '\0';
    *out = (const char *)b->data;
    return ST_OK;
}

uint8_t *st_buf_steal(st_buf *b, size_t *len)
{
    uint8_t *p = b->data;
    if (len != NULL) {
        *len = b->len;
    }
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}
