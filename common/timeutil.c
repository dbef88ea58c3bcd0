/* Clock helpers. */
#include "timeutil.h"

#include "err.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t st_time_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t st_time_mono_ms(void)
{
    return st_time_mono_ns() / 1000000;
}

int64_t st_time_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void st_time_sleep_ms(int64_t ms)
{
    struct timespec ts;
    if (ms <= 0) {
        return;
    }
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void st_time_format_utc(int64_t unix_ms, char *buf, size_t len)
{
    time_t sec = (time_t)(unix_ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(unix_ms % 1000));
}

static const struct {
    const char *suffix;
    int64_t ms;
} units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};

/* A number of unit_ms, which may have a fraction ("1.5s"): the result is
 * rounded to whole milliseconds. */
static int scaled(const char *num, size_t n, int64_t unit_ms, int64_t *out_ms)
{
    char buf[32];
    char *end = NULL;
    double v;
    if (n == 0 || n >= sizeof(buf)) {
        return ST_EINVAL;
    }
    memcpy(buf, num, n);
    buf[n] = '\0';
    errno = 0;
    v = strtod(buf, &end);
    if (errno != 0 || *end != '\0' || !(v >= 0) || v * (double)unit_ms > 9.2e18) {
        return ST_EINVAL;
    }
    *out_ms = (int64_t)llround(v * (double)unit_ms);
    return ST_OK;
}

int st_duration_parse(const char *s, int64_t *out_ms)
{
    size_t n;
    if (s == NULL || *s < '0' || *s > '9') {
        return ST_EINVAL;
    }
    n = strspn(s, "0123456789.");
    if (s[n] == '\0') {
        return scaled(s, n, 1000, out_ms); /* a bare number is seconds */
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(s + n, units[i].suffix) == 0) {
            return scaled(s, n, units[i].ms, out_ms);
        }
    }
    return ST_EINVAL;
}

void st_duration_format(int64_t ms, char *buf, size_t len)
{
    for (int i = (int)(sizeof(units) / sizeof(units[0])) - 1; i > 0; i--) {
        if (ms != 0 && ms % units[i].ms == 0) {
            snprintf(buf, len, "%" PRId64 "%s", ms / units[i].ms, units[i].suffix);
            return;
        }
    }
    snprintf(buf, len, "%" PRId64 "ms", ms);
}
