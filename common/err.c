/* Strings for the error codes, generated from the same X-macro as the enum. */
#include "err.h"

#include <stddef.h>

static const struct {
    const char *id;
    const char *text;
} errtab[] = {
#define ST_ERR_ROW_(name, id, text) {#id, text},
    ST_ERRNO_MAP(ST_ERR_ROW_)
#undef ST_ERR_ROW_
};

int st_err_index(int err)
{
    int i = err - ST_ERR_FIRST_ - 1;
    if (err >= 0 || i < 0 || i >= ST_ERR_COUNT) {
        return -1;
    }
    return i;
}

const char *st_strerror(int err)
{
    int i;
    if (err == ST_OK) {
        return "ok";
    }
    i = st_err_index(err);
    return i < 0 ? "unknown error" : errtab[i].text;
}

const char *st_errname(int err)
{
    int i;
    if (err == ST_OK) {
        return "ok";
    }
    i = st_err_index(err);
    return i < 0 ? "unknown" : errtab[i].id;
}
