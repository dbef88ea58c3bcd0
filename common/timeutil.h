/* Monotonic and wall clocks in milliseconds, durations and timestamps. */
#ifndef ST_TIMEUTIL_H
#define ST_TIMEUTIL_H

#include <stddef.h>
#include <stdint.h>

/* Monotonic milliseconds since an arbitrary point; never goes back. */
int64_t st_time_mono_ms(void);
/* Monotonic nanoseconds (for measurements). */
int64_t st_time_mono_ns(void);
/* Wall clock, milliseconds since the Unix epoch. */
int64_t st_time_wall_ms(void);
/* Sleeps for ms milliseconds, restarting after signals. */
void st_time_sleep_ms(int64_t ms);
/* "2026-11-27T06:00:00.123Z" into buf (at least 25 bytes). */
void st_time_format_utc(int64_t unix_ms, char *buf, size_t len);
/* Parses a duration like "250ms", "1.5s", "5m", "2h", "7d" (a bare number
 * is seconds) into milliseconds, rounded. ST_EINVAL on anything else, on
 * a negative value or on overflow. */
int st_duration_parse(const char *s, int64_t *out_ms);
/* Formats milliseconds as the shortest exact duration ("1500ms", "2m"). */
void st_duration_format(int64_t ms, char *buf, size_t len);

#endif
