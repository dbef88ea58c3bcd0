/* Clock helpers. */
#include "timeutil.h"

#include "err.h"

#include <errno.h>
#include <inttypes.h>
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

int st_duration_parse(const char *s, int64_t *out_ms)
{
    char *end = NULL;
    long long v;
    if (s == NULL || *s < '0' || *s > '9') {
        return ST_EINVAL;
    }
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || v < 0) {
        return ST_EINVAL;
    }
    if (*end == '\0') {
        if (v > INT64_MAX / 1000) {
            return ST_EINVAL;
        }
        *out_ms = (int64_t)v * 1000;
        return ST_OK;
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(end, units[i].suffix) == 0) {
            if (v > INT64_MAX / units[i].ms) {
                return ST_EINVAL;
            }
            *out_ms = (int64_t)v * units[i].ms;
            return ST_OK;
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
