/* Small helpers shared by agent and collector: checked number parsing,
 * UTF-8 validation, hex, UUIDs, files. */
#ifndef ST_UTIL_H
#define ST_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ST_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define ST_MIN(a, b) ((a) < (b) ? (a) : (b))
#define ST_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Whole-string decimal parses; ST_EINVAL on junk, sign errors or overflow. */
int st_parse_i64(const char *s, int64_t *out);
int st_parse_u64(const char *s, uint64_t *out);
int st_parse_double(const char *s, double *out);
/* Sizes like "64MiB", "512KiB", "1GiB", "100MB", "4096" into bytes. */
int st_size_parse(const char *s, uint64_t *out);

/* True when p[0..n) is valid UTF-8 (no overlongs, no surrogates) and holds
 * no NUL byte. */
bool st_utf8_valid(const char *p, size_t n);

/* Lower-case hex of n bytes into out (2n+1 bytes). */
void st_hex_encode(const uint8_t *p, size_t n, char *out);
/* The value of one hex digit (either case), -1 when c is not one. */
int st_hex_digit(char c);
/* Decodes exactly 2n hex digits into n bytes. ST_EINVAL otherwise. */
int st_hex_decode(const char *s, uint8_t *out, size_t n);

/* A random version-4 UUID from the kernel's CSPRNG. */
int st_uuid_random(uint8_t out[16]);
/* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (37 bytes with NUL). */
void st_uuid_format(const uint8_t id[16], char out[37]);
int st_uuid_parse(const char *s, uint8_t out[16]);

/* Reads a whole file of at most limit bytes into a NUL-terminated malloc'd
 * buffer. ST_ENOENT, ST_ETOOBIG, ST_EIO. */
int st_file_read(const char *path, size_t limit, char **out, size_t *out_len);
/* Writes data to path atomically: a temporary file, fsync, rename, fsync of
 * the directory. */
int st_file_write_atomic(const char *path, const void *data, size_t len);
/* mkdir -p with mode 0700 for new directories. */
int st_mkdir_p(const char *path);
/* fsync of the directory that holds path (after a rename or unlink). */
int st_fsync_dir_of(const char *path);

/* True for a plain tcp:// URL whose host is not a loopback address: frames
 * would cross a network unencrypted. */
bool st_url_plain_remote(const char *url);

/* FNV-1a over n bytes, continuing from h (ST_FNV_SEED to start): the hash
 * of the in-memory tables (series, groups, agents). Not for anything an
 * attacker chooses to collide with at scale; tables also cap their sizes. */
#define ST_FNV_SEED 1469598103934665603ULL
uint64_t st_fnv1a(uint64_t h, const void *p, size_t n);

/* CRC32C (Castagnoli), continuing from crc (0 to start); SSE4.2 when the
 * CPU has it. */
uint32_t st_crc32c(uint32_t crc, const void *p, size_t n);

#endif
