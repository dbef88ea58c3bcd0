/* The frame envelope of DESIGN.md (big-endian):
 *   0 magic "STRA" | 4 version 1 | 5 codec (0 none, 1 zstd, 2 zstd with the
 *   wire dictionary of wiredict.h) | 6 flags (bit 0
 *   signed) | 8 agent id (16) | 24 seq (8) | 32 uncompressed length (4) |
 *   36 CRC32C of the payload as sent (4) | 40 payload | [end-32 HMAC-SHA256
 *   of every byte before it, when signed]
 * Dedup and authentication happen before anything is decompressed: open
 * parses and checks the header and CRC, verify checks the HMAC in constant
 * time, and only then does decompress touch zstd. This is the only module
 * that touches zstd. */
#ifndef ST_ENVELOPE_H
#define ST_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "util.h" /* st_crc32c */

#define ST_ENV_MAGIC "STRA"
#define ST_ENV_VERSION 1
#define ST_ENV_HEADER_LEN 40
#define ST_ENV_MAC_LEN 32
#define ST_ENV_MAX_LEN (4u << 20)      /* whole envelope */
#define ST_ENV_MAX_PAYLOAD (16u << 20) /* uncompressed */
#define ST_ENV_MAX_WINDOW (8u << 20)   /* zstd window */
#define ST_ENV_FLAG_SIGNED 0x0001u
#define ST_ENV_KEY_MAX 64

/* Codec 2 is sent only to a collector whose acks list it (Ack.codecs), so an
 * older collector keeps receiving codec 1. */
enum st_codec { ST_CODEC_NONE = 0, ST_CODEC_ZSTD = 1, ST_CODEC_ZSTD_DICT = 2, ST_CODEC_COUNT };
#define ST_CODECS_ACCEPTED ((1u << ST_CODEC_COUNT) - 1) /* every codec below the count */

typedef struct st_envelope {
    uint8_t version;
    uint8_t codec;
    uint16_t flags;
    uint8_t agent_id[16];
    uint64_t seq;
    uint32_t raw_len; /* declared uncompressed payload length */
    uint32_t crc;
    const uint8_t *payload; /* points into the buffer given to open */
    size_t payload_len;     /* as sent (compressed) */
} st_envelope;

/* Reusable zstd state; one per thread. */
typedef struct st_zctx st_zctx;
int st_zctx_new(st_zctx **out);
void st_zctx_free(st_zctx *z);
/* Frees the contexts' workspaces, which the next use creates again: for a
 * caller that compresses rarely (an agent, one frame per flush), so that
 * the compressor's tables (up to 0.5 MB at level 6, sized by the largest
 * frame) are not kept resident between frames. */
void st_zctx_release(st_zctx *z);

/* Builds an envelope around frame bytes into out (which is reset first).
 * codec ST_CODEC_ZSTD (and _ZSTD_DICT, with the wire dictionary) compresses at level (1..19) with
 * the content size declared and the window kept within ST_ENV_MAX_WINDOW. With key != NULL the
 * envelope is signed (key_len 1..ST_ENV_KEY_MAX). ST_ETOOBIG when the frame is over
 * ST_ENV_MAX_PAYLOAD or the result over ST_ENV_MAX_LEN (or out's limit); ST_EINVAL on seq 0, an
 * unknown codec or level, a bad key. */
int st_envelope_encode(st_zctx *z, const uint8_t agent_id[16], uint64_t seq, int codec, int level,
                       const uint8_t *frame, size_t frame_len, const uint8_t *key, size_t key_len,
                       st_buf *out);

/* Parses and checks the header, lengths and CRC (not the HMAC). out points
 * into buf. Errors, checked in this order: ST_EENV_TRUNCATED (under 40
 * bytes), _MAGIC, _VERSION, _CODEC, _FLAGS, _TOOBIG, _LENGTH (raw_len over
 * 16 MiB), _TRUNCATED (signed but no room for the MAC), _SEQ,
 * ST_EZSTD_LENGTH (codec none whose raw_len is not the payload length),
 * ST_EENV_CRC. */
int st_envelope_open(const uint8_t *buf, size_t len, st_envelope *out);
/* Checks the HMAC trailer in constant time. ST_EENV_UNSIGNED when the
 * envelope is not signed, ST_EENV_HMAC on mismatch, ST_EINVAL when env was
 * not opened from buf, len or when the key is empty or over ST_ENV_KEY_MAX. */
int st_envelope_verify(const uint8_t *buf, size_t len, const st_envelope *env, const uint8_t *key,
                       size_t key_len);
/* Decompresses (or copies, for codec none) the payload into out (reset
 * first; give it a limit of ST_ENV_MAX_PAYLOAD), checking from the frame
 * header before decoding: exactly one zstd frame (a skippable frame is not
 * one), declared content size, window <= 8 MiB, content size equal to
 * raw_len; then output equal to raw_len. Errors: ST_EZSTD_FRAMES, _SIZE,
 * _WINDOW, _LENGTH, ST_EZSTD (corrupt data or a dictionary), ST_ETOOBIG
 * when out's limit is smaller than raw_len. */
int st_envelope_decompress(st_zctx *z, const st_envelope *env, st_buf *out);

/* Store blocks (the collector's compacted LMDB entries), kept here so zstd
 * stays in this module. compress writes at most cap bytes into dst
 * (ST_ETOOBIG when they do not fit; st_zctx_bound(len) always does);
 * level 1..19. decompress needs z only for reuse (NULL: a one-shot
 * context, for reader threads) and fails unless the frame decodes to
 * exactly raw_len bytes (ST_EZSTD_LENGTH) or is corrupt (ST_EZSTD). The
 * window stays within ST_ENV_MAX_WINDOW both ways. */
int st_zctx_compress(st_zctx *z, int level, const uint8_t *src, size_t len, uint8_t *dst,
                     size_t cap, size_t *out_len);
size_t st_zctx_bound(size_t len);
int st_zctx_decompress(st_zctx *z, const uint8_t *src, size_t len, uint8_t *dst, size_t raw_len);

#endif
