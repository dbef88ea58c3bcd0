/* Small shared helpers. */
#include "util.h"

#include "err.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

int st_parse_i64(const char *s, int64_t *out)
{
    char *end = NULL;
    long long v;
    if (s == NULL || *s == '\0') {
        return ST_EINVAL;
    }
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0') {
        return ST_EINVAL;
    }
    *out = (int64_t)v;
    return ST_OK;
}

int st_parse_u64(const char *s, uint64_t *out)
{
    char *end = NULL;
    unsigned long long v;
    if (s == NULL || *s < '0' || *s > '9') {
        return ST_EINVAL;
    }
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0') {
        return ST_EINVAL;
    }
    *out = (uint64_t)v;
    return ST_OK;
}

int st_parse_double(const char *s, double *out)
{
    char *end = NULL;
    double v;
    if (s == NULL || *s == '\0') {
        return ST_EINVAL;
    }
    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !isfinite(v)) {
        return ST_EINVAL;
    }
    *out = v;
    return ST_OK;
}

static const struct {
    const char *suffix;
    uint64_t mul;
} size_units[] = {
    {"", 1},
    {"B", 1},
    {"KiB", 1ULL << 10},
    {"MiB", 1ULL << 20},
    {"GiB", 1ULL << 30},
    {"TiB", 1ULL << 40},
    {"KB", 1000},
    {"MB", 1000000},
    {"GB", 1000000000ULL},
    {"K", 1ULL << 10},
    {"M", 1ULL << 20},
    {"G", 1ULL << 30},
};

int st_size_parse(const char *s, uint64_t *out)
{
    char *end = NULL;
    unsigned long long v;
    if (s == NULL || *s < '0' || *s > '9') {
        return ST_EINVAL;
    }
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0) {
        return ST_EINVAL;
    }
    while (*end == ' ') {
        end++;
    }
    for (size_t i = 0; i < ST_ARRAY_LEN(size_units); i++) {
        if (strcmp(end, size_units[i].suffix) == 0) {
            if (v > UINT64_MAX / size_units[i].mul) {
                return ST_EINVAL;
            }
            *out = (uint64_t)v * size_units[i].mul;
            return ST_OK;
        }
    }
    return ST_EINVAL;
}

bool st_utf8_valid(const char *p, size_t n)
{
    const unsigned char *s = (const unsigned char *)p;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t need;
        unsigned cp;
        if (c == 0) {
            return false;
        }
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i <= need) {
            return false;
        }
        for (size_t k = 1; k <= need; k++) {
            if ((s[i + k] & 0xC0) != 0x80) {
                return false;
            }
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((need == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (need == 3 && (cp < 0x10000 || cp > 0x10FFFF))) {
            return false;
        }
        i += need + 1;
    }
    return true;
}

void st_hex_encode(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

int st_hex_digit(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

int st_hex_decode(const char *s, uint8_t *out, size_t n)
{
    if (s == NULL || strlen(s) != 2 * n) {
        return ST_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        int hi = st_hex_digit(s[2 * i]);
        int lo = st_hex_digit(s[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            return ST_EINVAL;
        }
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return ST_OK;
}

int st_uuid_random(uint8_t out[16])
{
    if (getrandom(out, 16, 0) != 16) {
        return ST_EIO;
    }
    out[6] = (uint8_t)((out[6] & 0x0F) | 0x40);
    out[8] = (uint8_t)((out[8] & 0x3F) | 0x80);
    return ST_OK;
}

void st_uuid_format(const uint8_t id[16], char out[37])
{
    char hex[33];
    st_hex_encode(id, 16, hex);
    snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
}

int st_uuid_parse(const char *s, uint8_t out[16])
{
    char hex[33];
    size_t k = 0;
    if (s == NULL || strlen(s) != 36) {
        return ST_EINVAL;
    }
    for (size_t i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') {
                return ST_EINVAL;
            }
            continue;
        }
        hex[k++] = s[i];
    }
    hex[32] = '\0';
    return st_hex_decode(hex, out, 16);
}

int st_file_read(const char *path, size_t limit, char **out, size_t *out_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    char *p = NULL;
    size_t len = 0;
    size_t cap = 0;
    int rv = ST_OK;
    if (fd < 0) {
        return errno == ENOENT ? ST_ENOENT : ST_EIO;
    }
    for (;;) {
        ssize_t n;
        if (cap - len < 4096 + 1) {
            size_t ncap = cap == 0 ? 8192 : cap * 2;
            char *np;
            if (ncap > limit + 4096 + 1) {
                ncap = limit + 4096 + 1;
            }
            if (ncap <= cap) {
                rv = ST_ETOOBIG;
                goto out;
            }
            if ((np = realloc(p, ncap)) == NULL) {
                rv = ST_ENOMEM;
                goto out;
            }
            p = np;
            cap = ncap;
        }
        n = read(fd, p + len, cap - len - 1);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            rv = ST_EIO;
            goto out;
        }
        if (n == 0) {
            break;
        }
        len += (size_t)n;
        if (len > limit) {
            rv = ST_ETOOBIG;
            goto out;
        }
    }
    if (p == NULL && (p = malloc(1)) == NULL) {
        rv = ST_ENOMEM;
        goto out;
    }
    p[len] = '\0';
    *out = p;
    if (out_len != NULL) {
        *out_len = len;
    }
    p = NULL;
out:
    free(p);
    close(fd);
    return rv;
}

int st_fsync_dir_of(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    int fd;
    int rv = ST_OK;
    if (slash == NULL) {
        snprintf(dir, sizeof(dir), ".");
    } else if (slash == path) {
        snprintf(dir, sizeof(dir), "/");
    } else {
        if ((size_t)(slash - path) >= sizeof(dir)) {
            return ST_ETOOBIG;
        }
        memcpy(dir, path, (size_t)(slash - path));
        dir[slash - path] = '\0';
    }
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return ST_EIO;
    }
    if (fsync(fd) != 0) {
        rv = ST_EIO;
    }
    close(fd);
    return rv;
}

int st_file_write_atomic(const char *path, const void *data, size_t len)
{
    char tmp[4096];
    const uint8_t *p = data;
    size_t off = 0;
    int fd;
    int n = snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        return ST_ETOOBIG;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        return errno == ENOSPC ? ST_ENOSPC : ST_EIO;
    }
    while (off < len) {
        ssize_t w = write(fd, p + off, len - off);
        if (w < 0) {
            int e = errno;
            if (e == EINTR) {
                continue;
            }
            close(fd);
            unlink(tmp);
            return e == ENOSPC ? ST_ENOSPC : ST_EIO;
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return e == ENOSPC ? ST_ENOSPC : ST_EIO;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        unlink(tmp);
        return ST_EIO;
    }
    return st_fsync_dir_of(path);
}

int st_mkdir_p(const char *path)
{
    char p[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(p)) {
        return ST_EINVAL;
    }
    memcpy(p, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] == '/' || p[i] == '\0') {
            char c = p[i];
            p[i] = '\0';
            if (mkdir(p, 0700) != 0 && errno != EEXIST) {
                return ST_EIO;
            }
            p[i] = c;
        }
    }
    return ST_OK;
}

uint64_t st_fnv1a(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 1099511628211ULL;
    }
    return h;
}

bool st_url_plain_remote(const char *url)
{
    /* Every unencrypted network transport nng knows. */
    static const char *const plain[] = {"tcp://", "tcp4://", "tcp6://",
                                        "ws://",  "ws4://",  "ws6://"};
    static const char *const local[] = {"127.", "localhost:", "[::1]:"};
    const char *host = NULL;
    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]) && host == NULL; i++) {
        if (strncmp(url, plain[i], strlen(plain[i])) == 0) {
            host = url + strlen(plain[i]);
        }
    }
    if (host == NULL) {
        return false;
    }
    for (size_t i = 0; i < sizeof(local) / sizeof(local[0]); i++) {
        /* A dotted quad, not a host name that happens to start with 127. */
        if (strncmp(host, local[i], strlen(local[i])) == 0 &&
            (i != 0 || strspn(host, "0123456789.") > 4)) {
            return false;
        }
    }
    return true;
}
