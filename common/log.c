/* Rate-limited logging: a small table of (module, level) buckets guarded by
 * one mutex. Logging is rare enough that one lock is cheaper than cleverness. */
#include "log.h"

#include "err.h"
#include "timeutil.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BUCKETS 64

struct bucket {
    const char *module; /* compared by content; callers pass literals */
    int level;
    int64_t window_ms;
    unsigned used;
    unsigned dropped;
};

/* The logger is a documented process-wide singleton (STYLE.md rule 7). */
static struct {
    pthread_mutex_t mu;
    int level;
    int fd;
    uint64_t suppressed;
    struct bucket b[BUCKETS];
} lg = {PTHREAD_MUTEX_INITIALIZER, ST_LOG_INFO, 2, 0, {{0}}};

static const char *lvname[] = {"debug", "info", "warn", "error"};

void st_log_set_level(enum st_log_level level)
{
    pthread_mutex_lock(&lg.mu);
    lg.level = (int)level;
    pthread_mutex_unlock(&lg.mu);
}

void st_log_set_fd(int fd)
{
    pthread_mutex_lock(&lg.mu);
    lg.fd = fd;
    pthread_mutex_unlock(&lg.mu);
}

int st_log_parse_level(const char *s, enum st_log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (s != NULL && strcmp(s, lvname[i]) == 0) {
            *out = (enum st_log_level)i;
            return ST_OK;
        }
    }
    if (s != NULL && strcmp(s, "warning") == 0) {
        *out = ST_LOG_WARN;
        return ST_OK;
    }
    return ST_EINVAL;
}

uint64_t st_log_suppressed(void)
{
    uint64_t n;
    pthread_mutex_lock(&lg.mu);
    n = lg.suppressed;
    pthread_mutex_unlock(&lg.mu);
    return n;
}

/* Returns the bucket for (module, level), reusing the oldest on overflow. */
static struct bucket *find_bucket(const char *module, int level)
{
    struct bucket *oldest = &lg.b[0];
    for (int i = 0; i < BUCKETS; i++) {
        struct bucket *b = &lg.b[i];
        if (b->module == NULL) {
            b->module = module;
            b->level = level;
            return b;
        }
        if (b->level == level && strcmp(b->module, module) == 0) {
            return b;
        }
        if (b->window_ms < oldest->window_ms) {
            oldest = b;
        }
    }
    memset(oldest, 0, sizeof(*oldest));
    oldest->module = module;
    oldest->level = level;
    return oldest;
}

void st_vlog(enum st_log_level level, const char *module, const char *fmt, va_list ap)
{
    char line[1024];
    char stamp[32];
    size_t n = 0;
    unsigned dropped = 0;
    int64_t now = st_time_mono_ms();
    struct bucket *b;
    int fd;

    if (module == NULL) {
        module = "-";
    }
    pthread_mutex_lock(&lg.mu);
    if ((int)level < lg.level) {
        pthread_mutex_unlock(&lg.mu);
        return;
    }
    b = find_bucket(module, (int)level);
    if (now - b->window_ms >= 1000) {
        dropped = b->dropped;
        b->window_ms = now;
        b->used = 0;
        b->dropped = 0;
    }
    if (b->used >= ST_LOG_BURST) {
        b->dropped++;
        lg.suppressed++;
        pthread_mutex_unlock(&lg.mu);
        return;
    }
    b->used++;
    fd = lg.fd;
    pthread_mutex_unlock(&lg.mu);

    st_time_format_utc(st_time_wall_ms(), stamp, sizeof(stamp));
    n = (size_t)snprintf(line, sizeof(line), "%s %-5s %s: ", stamp, lvname[level], module);
    if (n < sizeof(line)) {
        int k = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
        n = (k < 0) ? n : n + (size_t)k;
    }
    if (n >= sizeof(line) - 48) {
        n = sizeof(line) - 48;
    }
    if (dropped > 0) {
        int k = snprintf(line + n, sizeof(line) - n, " (%u lines suppressed)", dropped);
        n += (k > 0) ? (size_t)k : 0;
    }
    line[n++] = '\n';
    (void)!write(fd, line, n);
}

void st_log(enum st_log_level level, const char *module, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    st_vlog(level, module, fmt, ap);
    va_end(ap);
}
