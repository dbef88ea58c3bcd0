/* A growing byte buffer with a hard cap, after curl's dynbuf: every buffer
 * that grows from outside input says up front how big it may ever get. */
#ifndef ST_BUF_H
#define ST_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef struct st_buf {
    uint8_t *data;
    size_t len;
    size_t cap;   /* allocated */
    size_t limit; /* never grows past this; ST_ETOOBIG instead */
} st_buf;

/* Starts an empty buffer that may grow to limit bytes. No allocation. */
void st_buf_init(st_buf *b, size_t limit);
/* Frees the memory; the buffer may be reused after st_buf_init. NULL-safe. */
void st_buf_free(st_buf *b);
/* Empties the buffer, keeping its memory. */
void st_buf_reset(st_buf *b);
/* Makes room for n more bytes. ST_ETOOBIG past the limit, ST_ENOMEM. */
int st_buf_reserve(st_buf *b, size_t n);
int st_buf_append(st_buf *b, const void *p, size_t n);
int st_buf_append_str(st_buf *b, const char *s);
int st_buf_printf(st_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Keeps the buffer NUL-terminated past len (not counted) for string use. */
int st_buf_cstr(st_buf *b, const char **out);
/* Hands the memory to the caller (who frees it) and empties the buffer. */
uint8_t *st_buf_steal(st_buf *b, size_t *len);

#endif
