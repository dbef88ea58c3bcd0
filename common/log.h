/* Logging with levels and rate limiting. Library code logs through st_log
 * and never prints on its own. Each (module, level) pair may emit at most
 * ST_LOG_BURST lines per second; the rest are counted and summarised once
 * the next line gets through ("... 37 lines suppressed"). Thread-safe. */
#ifndef ST_LOG_H
#define ST_LOG_H

#include <stdarg.h>
#include <stdint.h>

enum st_log_level { ST_LOG_DEBUG = 0, ST_LOG_INFO, ST_LOG_WARN, ST_LOG_ERROR };

#define ST_LOG_BURST 20

/* Minimum level that is written; ST_LOG_INFO unless changed. */
void st_log_set_level(enum st_log_level level);
/* Parses "debug", "info", "warn", "error" into *out; ST_EINVAL otherwise. */
int st_log_parse_level(const char *s, enum st_log_level *out);
/* Writes to stderr by default; a test may send lines to a file instead. */
void st_log_set_fd(int fd);
/* Total lines dropped by the rate limiter since start. */
uint64_t st_log_suppressed(void);

void st_log(enum st_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void st_vlog(enum st_log_level level, const char *module, const char *fmt, va_list ap);

#define ST_DEBUG(mod, ...) st_log(ST_LOG_DEBUG, mod, __VA_ARGS__)
#define ST_INFO(mod, ...) st_log(ST_LOG_INFO, mod, __VA_ARGS__)
#define ST_WARN(mod, ...) st_log(ST_LOG_WARN, mod, __VA_ARGS__)
#define ST_ERROR(mod, ...) st_log(ST_LOG_ERROR, mod, __VA_ARGS__)

#endif
