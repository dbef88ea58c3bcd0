/* The frame envelope of DESIGN.md "Wire": building it (compress, CRC32C,
 * HMAC-SHA256), and taking a received one apart in the order that keeps the
 * collector cheap to attack: header, CRC and HMAC first, zstd last. */
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_getFrameHeader, ZSTD_getCParams */
#include "envelope.h"

#include "err.h"
#include "log.h"
#include "wiredict.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <zstd.h>
#include <zstd_errors.h>

#define MOD "envelope"
#define MAX_WINDOW_LOG 23 /* 1 << 23 == ST_ENV_MAX_WINDOW */

_Static_assert((1u << MAX_WINDOW_LOG) == ST_ENV_MAX_WINDOW, "window log and limit agree");

struct st_zctx {
    ZSTD_CCtx *c; /* created on first encode */
    ZSTD_DCtx *d; /* created on first decompress */
};

int st_zctx_new(st_zctx **out)
{
    st_zctx *z;
    if (out == NULL) {
        return ST_EINVAL;
    }
    z = calloc(1, sizeof(*z));
    if (z == NULL) {
        return ST_ENOMEM;
    }
    *out = z;
    return ST_OK;
}

void st_zctx_release(st_zctx *z)
{
    if (z == NULL) {
        return;
    }
    ZSTD_freeCCtx(z->c);
    ZSTD_freeDCtx(z->d);
    z->c = NULL;
    z->d = NULL;
}

void st_zctx_free(st_zctx *z)
{
    st_zctx_release(z);
    free(z);
}

static void put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (24 - 8 * i));
    }
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (56 - 8 * i));
    }
}

static uint16_t get_be16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t get_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static uint64_t get_be64(const uint8_t *p)
{
    return ((uint64_t)get_be32(p) << 32) | get_be32(p + 4);
}

static int hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *p, size_t n,
                       uint8_t mac[ST_ENV_MAC_LEN])
{
    unsigned int mac_len = 0;
    if (HMAC(EVP_sha256(), key, (int)key_len, p, n, mac, &mac_len) == NULL ||
        mac_len != ST_ENV_MAC_LEN) {
        ST_ERROR(MOD, "HMAC-SHA256 failed");
        return ST_EINVAL;
    }
    return ST_OK;
}

/* Compresses frame into dst[0..cap) with the content size declared and the
 * window kept within what every collector accepts. *n is the size written. */
static int compress_payload(st_zctx *z, int codec, int level, const uint8_t *frame,
                            size_t frame_len, uint8_t *dst, size_t cap, size_t *n)
{
    size_t dict_len = 0;
    const uint8_t *dict = codec == ST_CODEC_ZSTD_DICT ? st_wiredict(&dict_len) : NULL;
    ZSTD_compressionParameters cp = ZSTD_getCParams(level, frame_len, dict_len);
    unsigned wlog = cp.windowLog < MAX_WINDOW_LOG ? cp.windowLog : MAX_WINDOW_LOG;
    size_t r;

    if (codec == ST_CODEC_ZSTD_DICT && dict == NULL) {
        return ST_ENOMEM;
    }
    if (z->c == NULL && (z->c = ZSTD_createCCtx()) == NULL) {
        return ST_ENOMEM;
    }
    ZSTD_CCtx_reset(z->c, ZSTD_reset_session_and_parameters);
    if (ZSTD_isError(ZSTD_CCtx_setParameter(z->c, ZSTD_c_compressionLevel, level)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(z->c, ZSTD_c_windowLog, (int)wlog)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(z->c, ZSTD_c_contentSizeFlag, 1)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(z->c, ZSTD_c_checksumFlag, 0)) ||
        (dict != NULL && ZSTD_isError(ZSTD_CCtx_refPrefix(z->c, dict, dict_len)))) {
        return ST_EZSTD;
    }
    r = ZSTD_compress2(z->c, dst, cap, frame, frame_len);
    if (ZSTD_isError(r)) {
        if (ZSTD_getErrorCode(r) == ZSTD_error_dstSize_tooSmall) {
            return ST_ETOOBIG;
        }
        ST_WARN(MOD, "zstd compression failed: %s", ZSTD_getErrorName(r));
        return ST_EZSTD;
    }
    *n = r;
    return ST_OK;
}

/* Writes the payload after the header: copied or compressed, never more than
 * the envelope limit (and out's own limit) leave room for. */
static int put_payload(st_zctx *z, int codec, int level, const uint8_t *frame, size_t frame_len,
                       size_t mac_len, st_buf *out)
{
    size_t room = ST_ENV_MAX_LEN - ST_ENV_HEADER_LEN - mac_len;
    size_t cap, n = 0;
    int rv;

    if (out->limit < ST_ENV_HEADER_LEN + mac_len) {
        return ST_ETOOBIG;
    }
    room = ST_MIN(room, out->limit - ST_ENV_HEADER_LEN - mac_len);
    if (codec == ST_CODEC_NONE) {
        if (frame_len > room) {
            return ST_ETOOBIG;
        }
        return st_buf_append(out, frame, frame_len);
    }
    cap = ST_MIN(ZSTD_compressBound(frame_len), room);
    if ((rv = st_buf_reserve(out, cap + mac_len)) != ST_OK) {
        return rv;
    }
    rv = compress_payload(z, codec, level, frame, frame_len, out->data + out->len, cap, &n);
    if (rv == ST_OK) {
        out->len += n;
    }
    return rv;
}

static int check_encode_args(st_zctx *z, const uint8_t *agent_id, uint64_t seq, int codec,
                             int level, const uint8_t *frame, size_t frame_len, const uint8_t *key,
                             size_t key_len, const st_buf *out)
{
    if (agent_id == NULL || out == NULL || seq == 0 || (frame == NULL && frame_len > 0)) {
        return ST_EINVAL;
    }
    if (codec < 0 || codec >= ST_CODEC_COUNT) {
        return ST_EINVAL;
    }
    if (codec != ST_CODEC_NONE && (z == NULL || level < 1 || level > 19)) {
        return ST_EINVAL;
    }
    if (key != NULL && (key_len == 0 || key_len > ST_ENV_KEY_MAX)) {
        return ST_EINVAL;
    }
    if (frame_len > ST_ENV_MAX_PAYLOAD) {
        return ST_ETOOBIG;
    }
    return ST_OK;
}

int st_envelope_encode(st_zctx *z, const uint8_t agent_id[16], uint64_t seq, int codec, int level,
                       const uint8_t *frame, size_t frame_len, const uint8_t *key, size_t key_len,
                       st_buf *out)
{
    size_t mac_len = key != NULL ? ST_ENV_MAC_LEN : 0;
    uint8_t *h;
    int rv;

    rv = check_encode_args(z, agent_id, seq, codec, level, frame, frame_len, key, key_len, out);
    if (rv != ST_OK) {
        return rv;
    }
    st_buf_reset(out);
    if ((rv = st_buf_reserve(out, ST_ENV_HEADER_LEN + mac_len)) != ST_OK) {
        return rv;
    }
    out->len = ST_ENV_HEADER_LEN;
    if ((rv = put_payload(z, codec, level, frame, frame_len, mac_len, out)) != ST_OK) {
        goto out;
    }
    h = out->data;
    memcpy(h, ST_ENV_MAGIC, 4);
    h[4] = ST_ENV_VERSION;
    h[5] = (uint8_t)codec;
    put_be16(h + 6, key != NULL ? ST_ENV_FLAG_SIGNED : 0);
    memcpy(h + 8, agent_id, 16);
    put_be64(h + 24, seq);
    put_be32(h + 32, (uint32_t)frame_len);
    put_be32(h + 36, st_crc32c(0, h + ST_ENV_HEADER_LEN, out->len - ST_ENV_HEADER_LEN));
    if (key != NULL) {
        uint8_t mac[ST_ENV_MAC_LEN];
        if ((rv = hmac_sha256(key, key_len, out->data, out->len, mac)) != ST_OK) {
            goto out;
        }
        rv = st_buf_append(out, mac, sizeof(mac));
    }
out:
    if (rv != ST_OK) {
        st_buf_reset(out);
    }
    return rv;
}

/* The fixed header checks, in the order of the contract (each failure has
 * its own code, so a peer's bug is easy to name from the collector's
 * counters). */
static int check_header(const uint8_t *buf, size_t len, st_envelope *e)
{
    if (len < ST_ENV_HEADER_LEN) {
        return ST_EENV_TRUNCATED;
    }
    if (memcmp(buf, ST_ENV_MAGIC, 4) != 0) {
        return ST_EENV_MAGIC;
    }
    e->version = buf[4];
    e->codec = buf[5];
    e->flags = get_be16(buf + 6);
    memcpy(e->agent_id, buf + 8, 16);
    e->seq = get_be64(buf + 24);
    e->raw_len = get_be32(buf + 32);
    e->crc = get_be32(buf + 36);
    if (e->version != ST_ENV_VERSION) {
        return ST_EENV_VERSION;
    }
    if (e->codec >= ST_CODEC_COUNT) {
        return ST_EENV_CODEC;
    }
    if ((e->flags & ~ST_ENV_FLAG_SIGNED) != 0) {
        return ST_EENV_FLAGS;
    }
    if (len > ST_ENV_MAX_LEN) {
        return ST_EENV_TOOBIG;
    }
    if (e->raw_len > ST_ENV_MAX_PAYLOAD) {
        return ST_EENV_LENGTH;
    }
    return ST_OK;
}

int st_envelope_open(const uint8_t *buf, size_t len, st_envelope *out)
{
    st_envelope e;
    size_t mac_len;
    int rv;

    if ((buf == NULL && len > 0) || out == NULL) {
        return ST_EINVAL;
    }
    memset(&e, 0, sizeof(e));
    if ((rv = check_header(buf, len, &e)) != ST_OK) {
        return rv;
    }
    mac_len = (e.flags & ST_ENV_FLAG_SIGNED) ? ST_ENV_MAC_LEN : 0;
    if (len < ST_ENV_HEADER_LEN + mac_len) {
        return ST_EENV_TRUNCATED;
    }
    if (e.seq == 0) {
        return ST_EENV_SEQ;
    }
    e.payload = buf + ST_ENV_HEADER_LEN;
    e.payload_len = len - ST_ENV_HEADER_LEN - mac_len;
    /* Uncompressed payloads carry their length twice; they must agree. */
    if (e.codec == ST_CODEC_NONE && e.raw_len != e.payload_len) {
        return ST_EZSTD_LENGTH;
    }
    if (st_crc32c(0, e.payload, e.payload_len) != e.crc) {
        return ST_EENV_CRC;
    }
    *out = e;
    return ST_OK;
}

int st_envelope_verify(const uint8_t *buf, size_t len, const st_envelope *env, const uint8_t *key,
                       size_t key_len)
{
    uint8_t mac[ST_ENV_MAC_LEN];
    size_t signed_len;
    int rv;

    if (buf == NULL || env == NULL || key == NULL || key_len == 0 || key_len > ST_ENV_KEY_MAX) {
        return ST_EINVAL;
    }
    if ((env->flags & ST_ENV_FLAG_SIGNED) == 0) {
        return ST_EENV_UNSIGNED;
    }
    /* env must describe this very buffer, or the trailer is somewhere else. */
    if (len < ST_ENV_HEADER_LEN + ST_ENV_MAC_LEN || env->payload != buf + ST_ENV_HEADER_LEN ||
        env->payload_len != len - ST_ENV_HEADER_LEN - ST_ENV_MAC_LEN) {
        return ST_EINVAL;
    }
    signed_len = len - ST_ENV_MAC_LEN;
    if ((rv = hmac_sha256(key, key_len, buf, signed_len, mac)) != ST_OK) {
        return rv;
    }
    if (CRYPTO_memcmp(mac, buf + signed_len, ST_ENV_MAC_LEN) != 0) {
        return ST_EENV_HMAC;
    }
    return ST_OK;
}

/* Everything zstd lets us learn before decoding: one frame, its declared
 * content size, its window. Refusing here bounds the work and memory. */
static int check_zstd_frame(const st_envelope *env)
{
    ZSTD_frameHeader fh;
    size_t r = ZSTD_findFrameCompressedSize(env->payload, env->payload_len);

    if (ZSTD_isError(r) || r != env->payload_len) {
        return ST_EZSTD_FRAMES;
    }
    if (ZSTD_getFrameHeader(&fh, env->payload, env->payload_len) != 0) {
        return ST_EZSTD_FRAMES;
    }
    /* A skippable frame carries no Frame, and with it the payload would
     * not be one zstd frame but zero. */
    if (fh.frameType != ZSTD_frame) {
        return ST_EZSTD_FRAMES;
    }
    if (fh.frameContentSize == ZSTD_CONTENTSIZE_UNKNOWN) {
        return ST_EZSTD_SIZE;
    }
    if (fh.windowSize > ST_ENV_MAX_WINDOW) {
        return ST_EZSTD_WINDOW;
    }
    if (fh.frameContentSize != env->raw_len) {
        return ST_EZSTD_LENGTH;
    }
    if (fh.dictID != 0) {
        return ST_EZSTD; /* codec 2's dictionary is raw content: it has no id */
    }
    return ST_OK;
}

static int decompress_zstd(st_zctx *z, const st_envelope *env, st_buf *out)
{
    size_t r;
    int rv;

    if ((rv = check_zstd_frame(env)) != ST_OK) {
        return rv;
    }
    if (z->d == NULL) {
        if ((z->d = ZSTD_createDCtx()) == NULL) {
            return ST_ENOMEM;
        }
        /* check_zstd_frame already bounds the window; this keeps any
         * streaming use of the same context within it too. */
        (void)ZSTD_DCtx_setParameter(z->d, ZSTD_d_windowLogMax, MAX_WINDOW_LOG);
    }
    if ((rv = st_buf_reserve(out, env->raw_len)) != ST_OK) {
        return rv;
    }
    if (env->codec == ST_CODEC_ZSTD_DICT) {
        size_t dict_len;
        const uint8_t *dict = st_wiredict(&dict_len);
        /* a prefix serves one frame; ZSTD_decompressDCtx uses it and drops it */
        if (dict == NULL) {
            return ST_ENOMEM;
        }
        if (ZSTD_isError(ZSTD_DCtx_refPrefix(z->d, dict, dict_len))) {
            return ST_EZSTD;
        }
    }
    r = ZSTD_decompressDCtx(z->d, out->data, env->raw_len, env->payload, env->payload_len);
    if (ZSTD_isError(r)) {
        ST_DEBUG(MOD, "zstd: %s", ZSTD_getErrorName(r));
        return ZSTD_getErrorCode(r) == ZSTD_error_dstSize_tooSmall ? ST_EZSTD_LENGTH : ST_EZSTD;
    }
    if (r != env->raw_len) {
        return ST_EZSTD_LENGTH;
    }
    out->len = r;
    return ST_OK;
}

int st_envelope_decompress(st_zctx *z, const st_envelope *env, st_buf *out)
{
    int rv;

    if (env == NULL || out == NULL || (env->payload == NULL && env->payload_len > 0)) {
        return ST_EINVAL;
    }
    st_buf_reset(out);
    if (env->raw_len > ST_ENV_MAX_PAYLOAD) {
        return ST_EENV_LENGTH;
    }
    if (env->codec == ST_CODEC_NONE) {
        if (env->raw_len != env->payload_len) {
            return ST_EZSTD_LENGTH;
        }
        return st_buf_append(out, env->payload, env->payload_len);
    }
    if (env->codec != ST_CODEC_ZSTD && env->codec != ST_CODEC_ZSTD_DICT) {
        return ST_EENV_CODEC;
    }
    if (z == NULL) {
        return ST_EINVAL;
    }
    rv = decompress_zstd(z, env, out);
    if (rv != ST_OK) {
        st_buf_reset(out);
    }
    return rv;
}

/* ---- store blocks ----
 * The collector's store compresses its compacted blocks with the same
 * library; the calls live here so zstd stays inside this module. */

int st_zctx_compress(st_zctx *z, int level, const uint8_t *src, size_t len, uint8_t *dst,
                     size_t cap, size_t *out_len)
{
    if (z == NULL || src == NULL || dst == NULL || out_len == NULL || level < 1 || level > 19) {
        return ST_EINVAL;
    }
    return compress_payload(z, ST_CODEC_ZSTD, level, src, len, dst, cap, out_len);
}

size_t st_zctx_bound(size_t len)
{
    return ZSTD_compressBound(len);
}

/* One decompression context per thread for callers without a zctx (store
 * readers on API, engine and builder threads): a store scan opens
 * thousands of compacted entries, and making a context for each (96 KB,
 * allocated and freed) was 2-3 % of an engine run. Freed when the thread
 * ends; NULL when out of memory, and the caller says so. */
static pthread_key_t dctx_key;
static pthread_once_t dctx_once = PTHREAD_ONCE_INIT;
static bool dctx_key_ok;

static void dctx_free(void *d)
{
    ZSTD_freeDCtx(d);
}

static void dctx_key_init(void)
{
    dctx_key_ok = pthread_key_create(&dctx_key, dctx_free) == 0;
}

static ZSTD_DCtx *thread_dctx(void)
{
    ZSTD_DCtx *d;
    pthread_once(&dctx_once, dctx_key_init);
    if (!dctx_key_ok) {
        return NULL;
    }
    if ((d = pthread_getspecific(dctx_key)) == NULL && (d = ZSTD_createDCtx()) != NULL &&
        pthread_setspecific(dctx_key, d) != 0) {
        ZSTD_freeDCtx(d);
        d = NULL;
    }
    return d;
}

int st_zctx_decompress(st_zctx *z, const uint8_t *src, size_t len, uint8_t *dst, size_t raw_len)
{
    ZSTD_DCtx *d;
    bool oneshot = false;
    size_t r;
    if (src == NULL || dst == NULL) {
        return ST_EINVAL;
    }
    /* Readers on any thread pass no context: their thread's own serves. */
    d = z != NULL ? z->d : thread_dctx();
    if (d == NULL) {
        if ((d = ZSTD_createDCtx()) == NULL) {
            return ST_ENOMEM;
        }
        if (z != NULL) {
            z->d = d;
        } else {
            oneshot = true;
        }
    }
    (void)ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, MAX_WINDOW_LOG);
    r = ZSTD_decompressDCtx(d, dst, raw_len, src, len);
    if (oneshot) {
        ZSTD_freeDCtx(d);
    }
    if (ZSTD_isError(r)) {
        ST_DEBUG(MOD, "zstd: %s", ZSTD_getErrorName(r));
        return ST_EZSTD;
    }
    return r == raw_len ? ST_OK : ST_EZSTD_LENGTH;
}
