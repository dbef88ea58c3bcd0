/* Helpers the samplers share for /proc and /sys files: bounded reads into
 * buffers the sampler owns (no allocation per run), checked paths, and
 * "Key: value" lookups. Declared in samplers.h. */
#include "samplers.h"

#include "err.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int errno_to_st(int e)
{
    switch (e) {
    case ENOENT:
    case ESRCH: /* the process exited between open and read */
    case ENOTDIR:
        return ST_ENOENT;
    case EACCES:
    case EPERM:
        return ST_EPERM;
    default:
        return ST_EIO;
    }
}

int st_procfs_read(const char *path, char *buf, size_t cap, size_t *len)
{
    size_t off = 0;
    int rv = ST_OK;
    int fd;
    if (cap < 2) {
        return ST_EINVAL;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return errno_to_st(errno);
    }
    for (;;) {
        ssize_t n = read(fd, buf + off, cap - 1 - off);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            rv = errno_to_st(errno);
            goto out;
        }
        if (n == 0) {
            break;
        }
        off += (size_t)n;
        if (off == cap - 1) {
            char probe;
            /* Full buffer: one more byte tells a file of exactly cap - 1
             * bytes from a longer one. */
            if (read(fd, &probe, 1) > 0) {
                rv = ST_ETOOBIG;
            }
            break;
        }
    }
out:
    close(fd);
    buf[off] = '\0';
    if (len != NULL) {
        *len = off;
    }
    return rv;
}

int st_procfs_path(char *out, size_t cap, const char *fmt, ...)
{
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(out, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap) {
        return ST_ETOOBIG;
    }
    return ST_OK;
}

int st_procfs_u64(const char **p, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;
    if (*s < '0' || *s > '9') {
        return ST_EPARSE;
    }
    while (*s >= '0' && *s <= '9') {
        uint64_t d = (uint64_t)(*s - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return ST_EPARSE;
        }
        v = v * 10 + d;
        s++;
    }
    *p = s;
    *out = v;
    return ST_OK;
}

/* The start of the line whose text begins with "key:", or NULL. */
static const char *find_key(const char *text, const char *key)
{
    size_t klen = strlen(key);
    const char *line = text;
    while (line != NULL && *line != '\0') {
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            return line + klen + 1;
        }
        line = strchr(line, '\n');
        if (line != NULL) {
            line++;
        }
    }
    return NULL;
}

int st_procfs_field_u64(const char *text, const char *key, uint64_t *out)
{
    const char *p = find_key(text, key);
    uint64_t v;
    if (p == NULL) {
        return ST_ENOENT;
    }
    while (*p == ' ' || *p == '\t') {
        p++;
    }
    if (st_procfs_u64(&p, &v) != ST_OK) {
        return ST_EPARSE;
    }
    if (strncmp(p, " kB", 3) == 0) {
        if (v > UINT64_MAX / 1024) {
            return ST_EPARSE;
        }
        v *= 1024;
    } else if (*p != '\n' && *p != '\0') {
        return ST_EPARSE;
    }
    *out = v;
    return ST_OK;
}
