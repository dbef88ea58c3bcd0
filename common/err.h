/* One error space for all of Strata. Codes from other libraries are mapped
 * at their wrapper (the original is logged there). ST_OK is 0, every error
 * is negative, and st_strerror names each one. */
#ifndef ST_ERR_H
#define ST_ERR_H

/* X(NAME, name, text). Keep envelope and frame rejections distinct: the collector
 * counts rejections by this code and reports the text as the reason. */
#define ST_ERRNO_MAP(X)                                                                 \
    X(NOMEM, nomem, "out of memory")                                                    \
    X(INVAL, inval, "invalid argument")                                                 \
    X(IO, io, "input/output error")                                                     \
    X(NOENT, noent, "not found")                                                        \
    X(EXIST, exist, "already exists")                                                   \
    X(TOOBIG, toobig, "too large")                                                      \
    X(TIMEOUT, timeout, "timed out")                                                    \
    X(AGAIN, again, "try again later")                                                  \
    X(CLOSED, closed, "closed")                                                         \
    X(CANCELED, canceled, "cancelled")                                                  \
    X(NOSPC, nospc, "no space left")                                                    \
    X(CORRUPT, corrupt, "corrupt data")                                                 \
    X(CONFIG, config, "configuration error")                                            \
    X(PARSE, parse, "parse error")                                                      \
    X(PERM, perm, "not permitted")                                                      \
    X(UNSUPPORTED, unsupported, "not supported")                                        \
    X(NET, net, "network error")                                                        \
    X(STORE, store, "store error")                                                      \
    X(MAPFULL, mapfull, "store map full")                                               \
    X(ENV_TRUNCATED, env_truncated, "envelope truncated")                               \
    X(ENV_MAGIC, env_magic, "bad envelope magic")                                       \
    X(ENV_VERSION, env_version, "unsupported envelope version")                         \
    X(ENV_CODEC, env_codec, "unknown envelope codec")                                   \
    X(ENV_FLAGS, env_flags, "unknown envelope flags")                                   \
    X(ENV_TOOBIG, env_toobig, "envelope over 4 MiB")                                    \
    X(ENV_CRC, env_crc, "payload CRC32C mismatch")                                      \
    X(ENV_UNSIGNED, env_unsigned, "frame not signed but a key is required")             \
    X(ENV_HMAC, env_hmac, "HMAC-SHA256 mismatch")                                       \
    X(ENV_UNKNOWN_AGENT, env_unknown_agent, "no key for this agent")                    \
    X(ENV_SEQ, env_seq, "seq must be > 0")                                              \
    X(ENV_LENGTH, env_length, "declared length over 16 MiB")                            \
    X(ZSTD_FRAMES, zstd_frames, "payload is not exactly one zstd frame")                \
    X(ZSTD_SIZE, zstd_size, "zstd frame does not declare its content size")             \
    X(ZSTD_WINDOW, zstd_window, "zstd window over 8 MiB")                               \
    X(ZSTD_LENGTH, zstd_length, "decompressed length differs from the declared length") \
    X(ZSTD, zstd, "zstd decompression failed")                                          \
    X(FRAME_DECODE, frame_decode, "payload is not a valid strata.v1.Frame")             \
    X(FRAME_AGENT, frame_agent, "frame names another agent or seq than its envelope")   \
    X(FRAME_SERIES, frame_series, "more than 65536 series in a frame")                  \
    X(FRAME_LABELS, frame_labels, "more than 32 labels on a series")                    \
    X(FRAME_NAME, frame_name, "name over 128 bytes or empty")                           \
    X(FRAME_VALUE, frame_value, "label value over 1024 bytes")                          \
    X(FRAME_UTF8, frame_utf8, "string is not valid UTF-8 or holds NUL")                 \
    X(FRAME_NUMBER, frame_number, "number is not finite")                               \
    X(FRAME_TIME, frame_time, "timestamp outside the allowed skew")                     \
    X(FRAME_POINTS, frame_points, "series points are malformed")                        \
    X(FRAME_SKETCH, frame_sketch, "sketch is malformed")

typedef enum st_err {
    ST_OK = 0,
#define ST_ERR_ENUM_(name, id, text) ST_E##name,
    ST_ERR_FIRST_ = -1000,
    ST_ERRNO_MAP(ST_ERR_ENUM_)
#undef ST_ERR_ENUM_
        ST_ERR_LAST_
} st_err;

/* A short, static, human text for an error code; never NULL. */
const char *st_strerror(int err);
/* A stable identifier (for metric labels): "env_crc", "ok", ... never NULL. */
const char *st_errname(int err);
/* How many error codes exist (for tables indexed by code). */
#define ST_ERR_COUNT (ST_ERR_LAST_ - ST_ERR_FIRST_ - 1)
/* Index 0..ST_ERR_COUNT-1 of a negative code; -1 when not an st_err. */
int st_err_index(int err);

#endif
