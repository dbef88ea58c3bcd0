/* Envelope codec: the byte layout of DESIGN.md "Wire", round trips for both
 * codecs signed and unsigned, and one test per rejection reason. */
#define ZSTD_STATIC_LINKING_ONLY
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <zstd.h>

#include "envelope.h"
#include "err.h"
#include "wiredict.h"

/* Dictionary 1 (wiredict.c), pinned. */
#define WIREDICT_1_LEN 3547
#define WIREDICT_1_CRC 0x8e9aa79cu

static const uint8_t agent[16] = {0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
                                  0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f};
static const uint8_t key[] = "agent-key-0123456789abcdef";
#define KEY_LEN (sizeof(key) - 1)

struct fixture {
    st_zctx *z;
    st_buf env;
    st_buf out;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_int_equal(st_zctx_new(&f->z), ST_OK);
    st_buf_init(&f->env, ST_ENV_MAX_LEN);
    st_buf_init(&f->out, ST_ENV_MAX_PAYLOAD);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    st_zctx_free(f->z);
    st_buf_free(&f->env);
    st_buf_free(&f->out);
    free(f);
    return 0;
}

/* A compressible but not trivial payload. */
static uint8_t *make_payload(size_t n)
{
    uint8_t *p = malloc(n > 0 ? n : 1);
    uint32_t x = 12345;
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (uint8_t)("strata-frame"[i % 12] ^ (i % 16 == 0 ? (x >> 24) & 0x03 : 0));
    }
    return p;
}

static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Builds an unsigned zstd envelope around an arbitrary (possibly hostile)
 * payload, with a correct CRC, so that only decompress can object. */
static void raw_envelope(st_buf *b, const uint8_t *payload, size_t n, uint32_t raw_len)
{
    uint8_t h[ST_ENV_HEADER_LEN] = {'S', 'T', 'R', 'A', 1, ST_CODEC_ZSTD, 0, 0};
    memcpy(h + 8, agent, 16);
    h[31] = 7; /* seq 7 */
    put_be32(h + 32, raw_len);
    put_be32(h + 36, st_crc32c(0, payload, n));
    st_buf_reset(b);
    assert_int_equal(st_buf_append(b, h, sizeof(h)), ST_OK);
    assert_int_equal(st_buf_append(b, payload, n), ST_OK);
}

/* Recomputes the CRC after a test edits the payload in place. */
static void fix_crc(st_buf *b, size_t mac_len)
{
    size_t n = b->len - ST_ENV_HEADER_LEN - mac_len;
    put_be32(b->data + 36, st_crc32c(0, b->data + ST_ENV_HEADER_LEN, n));
}

static int open_and_decompress(struct fixture *f)
{
    st_envelope e;
    int rv = st_envelope_open(f->env.data, f->env.len, &e);
    if (rv != ST_OK) {
        return rv;
    }
    return st_envelope_decompress(f->z, &e, &f->out);
}

static void round_trip(struct fixture *f, int codec, const uint8_t *k, size_t klen, size_t n)
{
    uint8_t *p = make_payload(n);
    st_envelope e;

    assert_int_equal(st_envelope_encode(f->z, agent, 42, codec, 3, p, n, k, klen, &f->env), ST_OK);
    assert_int_equal(st_envelope_open(f->env.data, f->env.len, &e), ST_OK);
    assert_int_equal(e.version, 1);
    assert_int_equal(e.codec, codec);
    assert_int_equal(e.flags, k != NULL ? ST_ENV_FLAG_SIGNED : 0);
    assert_memory_equal(e.agent_id, agent, 16);
    assert_int_equal(e.seq, 42);
    assert_int_equal(e.raw_len, n);
    assert_ptr_equal(e.payload, f->env.data + ST_ENV_HEADER_LEN);
    assert_int_equal(e.payload_len, f->env.len - ST_ENV_HEADER_LEN - (k ? ST_ENV_MAC_LEN : 0));
    if (k != NULL) {
        assert_int_equal(st_envelope_verify(f->env.data, f->env.len, &e, k, klen), ST_OK);
    } else {
        assert_int_equal(st_envelope_verify(f->env.data, f->env.len, &e, key, KEY_LEN),
                         ST_EENV_UNSIGNED);
    }
    assert_int_equal(st_envelope_decompress(f->z, &e, &f->out), ST_OK);
    assert_int_equal(f->out.len, n);
    if (n > 0) {
        assert_memory_equal(f->out.data, p, n);
    }
    free(p);
}

static void test_round_trip_none_unsigned(void **state)
{
    round_trip(*state, ST_CODEC_NONE, NULL, 0, 1000);
    round_trip(*state, ST_CODEC_NONE, NULL, 0, 0);
}

static void test_round_trip_none_signed(void **state)
{
    round_trip(*state, ST_CODEC_NONE, key, KEY_LEN, 1000);
}

static void test_round_trip_zstd_unsigned(void **state)
{
    round_trip(*state, ST_CODEC_ZSTD, NULL, 0, 100000);
    round_trip(*state, ST_CODEC_ZSTD, NULL, 0, 0);
    round_trip(*state, ST_CODEC_ZSTD, NULL, 0, 1);
}

static void test_round_trip_zstd_signed(void **state)
{
    uint8_t long_key[ST_ENV_KEY_MAX];
    memset(long_key, 0xa5, sizeof(long_key));
    round_trip(*state, ST_CODEC_ZSTD, key, KEY_LEN, 100000);
    round_trip(*state, ST_CODEC_ZSTD, long_key, sizeof(long_key), 5000);
}

static void test_round_trip_dict(void **state)
{
    round_trip(*state, ST_CODEC_ZSTD_DICT, NULL, 0, 100000);
    round_trip(*state, ST_CODEC_ZSTD_DICT, NULL, 0, 0);
    round_trip(*state, ST_CODEC_ZSTD_DICT, NULL, 0, 1);
    round_trip(*state, ST_CODEC_ZSTD_DICT, key, KEY_LEN, 5000);
}

/* The bytes of dictionary 1 never change: agents and collectors of other
 * versions build them from their own copy of the table. If this fails, the
 * table in wiredict.c was edited; restore it and add a new codec instead. */
static void test_wiredict_frozen(void **state)
{
    size_t n;
    const uint8_t *d = st_wiredict(&n);
    (void)state;
    assert_non_null(d);
    assert_int_equal(n, WIREDICT_1_LEN);
    assert_int_equal(st_crc32c(0, d, n), WIREDICT_1_CRC);
    assert_ptr_equal(st_wiredict(&n), d); /* built once */
}

/* A frame's names compress against the dictionary: the host samplers' frame
 * (the common small agent) shrinks, and a codec 2 payload relabelled codec 1
 * does not decode (it refers to bytes before its start). */
static void test_dict_frame(void **state)
{
    static const char *const names[] = {
        "host.cpu.utilization", "host.mem.available", "host.mem.total", "agent.rss",
        "tcp.retrans_segs",     "tcp.out_segs",       "tcp.curr_estab", "tcp.estab_resets"};
    struct fixture *f = *state;
    uint8_t frame[1024];
    size_t n = 0, plain;
    st_envelope e;

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        size_t l = strlen(names[i]);
        frame[n++] = 0x2a;
        frame[n++] = (uint8_t)(l + 2 + 8);
        frame[n++] = 0x0a;
        frame[n++] = (uint8_t)l;
        memcpy(frame + n, names[i], l);
        n += l;
        for (int j = 0; j < 8; j++) {
            frame[n++] = (uint8_t)(i * 37 + j * 11);
        }
    }
    assert_int_equal(
        st_envelope_encode(f->z, agent, 7, ST_CODEC_ZSTD, 3, frame, n, NULL, 0, &f->env), ST_OK);
    plain = f->env.len;
    assert_int_equal(
        st_envelope_encode(f->z, agent, 7, ST_CODEC_ZSTD_DICT, 3, frame, n, NULL, 0, &f->env),
        ST_OK);
    assert_true(f->env.len < plain * 3 / 4);
    assert_int_equal(st_envelope_open(f->env.data, f->env.len, &e), ST_OK);
    assert_int_equal(e.codec, ST_CODEC_ZSTD_DICT);
    assert_int_equal(st_envelope_decompress(f->z, &e, &f->out), ST_OK);
    assert_int_equal(f->out.len, n);
    assert_memory_equal(f->out.data, frame, n);
    /* the same context decodes codec 1 next: the prefix served one frame */
    f->env.data[5] = ST_CODEC_ZSTD; /* the CRC covers the payload only */
    assert_int_equal(st_envelope_open(f->env.data, f->env.len, &e), ST_OK);
    assert_int_equal(st_envelope_decompress(f->z, &e, &f->out), ST_EZSTD);
}

/* A payload near the 16 MiB limit: the encoder must keep the window within
 * 8 MiB even though the content is larger, and the collector accept it. */
static void test_round_trip_large(void **state)
{
    struct fixture *f = *state;
    size_t n = ST_ENV_MAX_PAYLOAD;
    ZSTD_frameHeader fh;
    st_envelope e;
    uint8_t *p = make_payload(n);

    assert_int_equal(
        st_envelope_encode(f->z, agent, 1, ST_CODEC_ZSTD, 1, p, n, key, KEY_LEN, &f->env), ST_OK);
    assert_int_equal(st_envelope_open(f->env.data, f->env.len, &e), ST_OK);
    assert_int_equal(ZSTD_getFrameHeader(&fh, e.payload, e.payload_len), 0);
    assert_true(fh.windowSize <= ST_ENV_MAX_WINDOW);
    assert_int_equal(fh.frameContentSize, n);
    assert_int_equal(fh.checksumFlag, 0);
    assert_int_equal(st_envelope_decompress(f->z, &e, &f->out), ST_OK);
    assert_int_equal(f->out.len, n);
    assert_memory_equal(f->out.data, p, n);
    free(p);
}

/* The exact bytes of DESIGN.md's table, checked independently of the
 * decoder: big-endian fields at fixed offsets, CRC32C of the payload as
 * sent, HMAC-SHA256 of everything before the trailer. */
static void test_layout(void **state)
{
    struct fixture *f = *state;
    const uint8_t payload[] = "123456789";
    uint8_t mac[32];
    unsigned mac_len = 0;
    st_buf *b = &f->env;

    assert_int_equal(st_envelope_encode(f->z, agent, 0x0102030405060708ull, ST_CODEC_NONE, 0,
                                        payload, 9, key, KEY_LEN, b),
                     ST_OK);
    assert_int_equal(b->len, 40 + 9 + 32);
    assert_memory_equal(b->data, "STRA", 4);
    assert_int_equal(b->data[4], 1);
    assert_int_equal(b->data[5], 0);
    assert_int_equal(b->data[6], 0);
    assert_int_equal(b->data[7], 1);
    assert_memory_equal(b->data + 8, agent, 16);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(b->data[24 + i], i + 1);
    }
    assert_int_equal(be32(b->data + 32), 9);
    assert_int_equal(be32(b->data + 36), 0xE3069283u); /* CRC32C("123456789") */
    assert_memory_equal(b->data + 40, payload, 9);
    assert_non_null(HMAC(EVP_sha256(), key, KEY_LEN, b->data, 49, mac, &mac_len));
    assert_int_equal(mac_len, 32);
    assert_memory_equal(b->data + 49, mac, 32);
}

static void test_encode_args(void **state)
{
    struct fixture *f = *state;
    uint8_t big_key[ST_ENV_KEY_MAX + 1] = {0};
    const uint8_t p[4] = {1, 2, 3, 4};
    st_buf small;

    assert_int_equal(st_envelope_encode(f->z, agent, 0, ST_CODEC_NONE, 0, p, 4, NULL, 0, &f->env),
                     ST_EINVAL);
    assert_int_equal(st_envelope_encode(f->z, agent, 1, 3, 3, p, 4, NULL, 0, &f->env), ST_EINVAL);
    assert_int_equal(
        st_envelope_encode(f->z, agent, 1, ST_CODEC_ZSTD_DICT, 0, p, 4, NULL, 0, &f->env),
        ST_EINVAL);
    assert_int_equal(st_envelope_encode(f->z, agent, 1, ST_CODEC_ZSTD, 0, p, 4, NULL, 0, &f->env),
                     ST_EINVAL);
    assert_int_equal(st_envelope_encode(f->z, agent, 1, ST_CODEC_ZSTD, 20, p, 4, NULL, 0, &f->env),
                     ST_EINVAL);
    assert_int_equal(st_envelope_encode(f->z, agent, 1, ST_CODEC_NONE, 0, p, 4, big_key,
                                        sizeof(big_key), &f->env),
                     ST_EINVAL);
    assert_int_equal(st_envelope_encode(f->z, agent, 1, ST_CODEC_NONE, 0, p, 4, key, 0, &f->env),
                     ST_EINVAL);
    /* out's own cap is honoured too. */
    st_buf_init(&small, 43);
    assert_int_equal(st_envelope_encode(f->z, agent, 1, ST_CODEC_NONE, 0, p, 4, NULL, 0, &small),
                     ST_ETOOBIG);
    assert_int_equal(small.len, 0);
    st_buf_free(&small);
}

/* Incompressible data over 4 MiB cannot fit the envelope; over 16 MiB it
 * is refused before any work. */
static void test_encode_toobig(void **state)
{
    struct fixture *f = *state;
    size_t n = ST_ENV_MAX_LEN;
    uint8_t *p = malloc(ST_ENV_MAX_PAYLOAD + 1);
    uint64_t x = 88172645463325252ull;
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        p[i] = (uint8_t)x;
    }
    assert_int_equal(st_envelope_encode(f->z, agent, 1, ST_CODEC_ZSTD, 1, p, n, NULL, 0, &f->env),
                     ST_ETOOBIG);
    assert_int_equal(f->env.len, 0);
    assert_int_equal(st_envelope_encode(f->z, agent, 1, ST_CODEC_NONE, 0, p, n, NULL, 0, &f->env),
                     ST_ETOOBIG);
    assert_int_equal(
        st_envelope_encode(f->z, agent, 1, ST_CODEC_NONE, 0, p, n - 40, NULL, 0, &f->env), ST_OK);
    assert_int_equal(f->env.len, ST_ENV_MAX_LEN);
    assert_int_equal(st_envelope_encode(f->z, agent, 1, ST_CODEC_ZSTD, 1, p, ST_ENV_MAX_PAYLOAD + 1,
                                        NULL, 0, &f->env),
                     ST_ETOOBIG);
    free(p);
}

static void encode_small(struct fixture *f, int codec, const uint8_t *k, size_t klen)
{
    uint8_t *p = make_payload(300);
    assert_int_equal(st_envelope_encode(f->z, agent, 9, codec, 3, p, 300, k, klen, &f->env), ST_OK);
    free(p);
}

static int open_env(struct fixture *f)
{
    st_envelope e;
    return st_envelope_open(f->env.data, f->env.len, &e);
}

static void test_bad_magic(void **state)
{
    struct fixture *f = *state;
    encode_small(f, ST_CODEC_ZSTD, NULL, 0);
    f->env.data[3] = 'B';
    assert_int_equal(open_env(f), ST_EENV_MAGIC);
}

static void test_bad_version(void **state)
{
    struct fixture *f = *state;
    encode_small(f, ST_CODEC_ZSTD, NULL, 0);
    f->env.data[4] = 2;
    assert_int_equal(open_env(f), ST_EENV_VERSION);
    f->env.data[4] = 0;
    assert_int_equal(open_env(f), ST_EENV_VERSION);
}

static void test_bad_codec(void **state)
{
    struct fixture *f = *state;
    encode_small(f, ST_CODEC_ZSTD, NULL, 0);
    f->env.data[5] = 3;
    assert_int_equal(open_env(f), ST_EENV_CODEC);
    f->env.data[5] = 0xff;
    assert_int_equal(open_env(f), ST_EENV_CODEC);
}

static void test_bad_flags(void **state)
{
    struct fixture *f = *state;
    encode_small(f, ST_CODEC_ZSTD, NULL, 0);
    f->env.data[7] = 0x02;
    assert_int_equal(open_env(f), ST_EENV_FLAGS);
    f->env.data[7] = 0x01;
    f->env.data[6] = 0x80;
    assert_int_equal(open_env(f), ST_EENV_FLAGS);
}

static void test_bad_crc(void **state)
{
    struct fixture *f = *state;
    encode_small(f, ST_CODEC_ZSTD, NULL, 0);
    f->env.data[ST_ENV_HEADER_LEN + 5] ^= 0x01;
    assert_int_equal(open_env(f), ST_EENV_CRC);
    f->env.data[ST_ENV_HEADER_LEN + 5] ^= 0x01;
    assert_int_equal(open_env(f), ST_OK);
    f->env.data[39] ^= 0x80;
    assert_int_equal(open_env(f), ST_EENV_CRC);
    /* In a signed envelope the CRC is checked (cheaply) before the HMAC. */
    encode_small(f, ST_CODEC_NONE, key, KEY_LEN);
    f->env.data[f->env.len - ST_ENV_MAC_LEN - 1] ^= 0x10;
    assert_int_equal(open_env(f), ST_EENV_CRC);
}

static void test_hmac_wrong_key(void **state)
{
    struct fixture *f = *state;
    const uint8_t other[] = "agent-key-0123456789abcdeF";
    st_envelope e;
    encode_small(f, ST_CODEC_ZSTD, key, KEY_LEN);
    assert_int_equal(st_envelope_open(f->env.data, f->env.len, &e), ST_OK);
    assert_int_equal(st_envelope_verify(f->env.data, f->env.len, &e, other, sizeof(other) - 1),
                     ST_EENV_HMAC);
    assert_int_equal(st_envelope_verify(f->env.data, f->env.len, &e, key, KEY_LEN - 1),
                     ST_EENV_HMAC);
    assert_int_equal(st_envelope_verify(f->env.data, f->env.len, &e, key, KEY_LEN), ST_OK);
}

/* A flipped byte in the agent id, the seq or the payload (with the CRC
 * recomputed, as an attacker would) passes open but fails the HMAC. */
static void test_hmac_flipped_byte(void **state)
{
    struct fixture *f = *state;
    encode_small(f, ST_CODEC_ZSTD, key, KEY_LEN);
    const size_t last = f->env.len - ST_ENV_MAC_LEN - 1;
    const size_t where[] = {8, 23, 24, 31, 40, 41, last};
    st_envelope e;

    for (size_t i = 0; i < sizeof(where) / sizeof(where[0]); i++) {
        encode_small(f, ST_CODEC_ZSTD, key, KEY_LEN);
        f->env.data[where[i]] ^= 0x04;
        fix_crc(&f->env, ST_ENV_MAC_LEN);
        assert_int_equal(st_envelope_open(f->env.data, f->env.len, &e), ST_OK);
        assert_int_equal(st_envelope_verify(f->env.data, f->env.len, &e, key, KEY_LEN),
                         ST_EENV_HMAC);
    }
    encode_small(f, ST_CODEC_ZSTD, key, KEY_LEN);
    f->env.data[f->env.len - 1] ^= 0x01; /* in the MAC itself */
    assert_int_equal(st_envelope_open(f->env.data, f->env.len, &e), ST_OK);
    assert_int_equal(st_envelope_verify(f->env.data, f->env.len, &e, key, KEY_LEN), ST_EENV_HMAC);
}

static void test_unsigned_when_key_required(void **state)
{
    struct fixture *f = *state;
    st_envelope e;
    encode_small(f, ST_CODEC_ZSTD, NULL, 0);
    assert_int_equal(st_envelope_open(f->env.data, f->env.len, &e), ST_OK);
    assert_int_equal(st_envelope_verify(f->env.data, f->env.len, &e, key, KEY_LEN),
                     ST_EENV_UNSIGNED);
    /* Clearing the flag of a signed envelope leaves the MAC as payload
     * bytes: the CRC no longer matches. */
    encode_small(f, ST_CODEC_ZSTD, key, KEY_LEN);
    f->env.data[7] = 0;
    assert_int_equal(st_envelope_open(f->env.data, f->env.len, &e), ST_EENV_CRC);
}

static void test_verify_args(void **state)
{
    struct fixture *f = *state;
    st_envelope e;
    encode_small(f, ST_CODEC_ZSTD, key, KEY_LEN);
    assert_int_equal(st_envelope_open(f->env.data, f->env.len, &e), ST_OK);
    assert_int_equal(st_envelope_verify(f->env.data, f->env.len, &e, NULL, 0), ST_EINVAL);
    assert_int_equal(st_envelope_verify(f->env.data, f->env.len - 1, &e, key, KEY_LEN), ST_EINVAL);
}

static void test_truncated(void **state)
{
    struct fixture *f = *state;
    const size_t lens[] = {0, 1, 4, 8, 24, 39};
    uint8_t empty = 0;
    st_envelope e;

    encode_small(f, ST_CODEC_ZSTD, NULL, 0);
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        assert_int_equal(st_envelope_open(f->env.data, lens[i], &e), ST_EENV_TRUNCATED);
    }
    assert_int_equal(st_envelope_open(&empty, 0, &e), ST_EENV_TRUNCATED);
    /* Cut inside the payload: the CRC catches it. */
    assert_int_equal(st_envelope_open(f->env.data, f->env.len - 1, &e), ST_EENV_CRC);
    /* Signed but too short to hold a MAC. */
    assert_int_equal(
        st_envelope_encode(f->z, agent, 9, ST_CODEC_NONE, 0, NULL, 0, key, KEY_LEN, &f->env),
        ST_OK);
    assert_int_equal(f->env.len, 72);
    assert_int_equal(st_envelope_open(f->env.data, 72, &e), ST_OK);
    for (size_t n = 40; n < 72; n += 7) {
        assert_int_equal(st_envelope_open(f->env.data, n, &e), ST_EENV_TRUNCATED);
    }
    assert_int_equal(st_envelope_open(f->env.data, 71, &e), ST_EENV_TRUNCATED);
}

static void test_seq_zero(void **state)
{
    struct fixture *f = *state;
    encode_small(f, ST_CODEC_ZSTD, NULL, 0);
    memset(f->env.data + 24, 0, 8);
    assert_int_equal(open_env(f), ST_EENV_SEQ);
}

static void test_oversize_envelope(void **state)
{
    struct fixture *f = *state;
    st_buf big;
    st_envelope e;

    encode_small(f, ST_CODEC_ZSTD, NULL, 0);
    st_buf_init(&big, ST_ENV_MAX_LEN + 1);
    assert_int_equal(st_buf_append(&big, f->env.data, f->env.len), ST_OK);
    assert_int_equal(st_buf_reserve(&big, ST_ENV_MAX_LEN + 1 - big.len), ST_OK);
    memset(big.data + big.len, 0, ST_ENV_MAX_LEN + 1 - big.len);
    big.len = ST_ENV_MAX_LEN + 1;
    assert_int_equal(st_envelope_open(big.data, big.len, &e), ST_EENV_TOOBIG);
    st_buf_free(&big);
}

static void test_raw_len_over_limit(void **state)
{
    struct fixture *f = *state;
    encode_small(f, ST_CODEC_ZSTD, NULL, 0);
    put_be32(f->env.data + 32, ST_ENV_MAX_PAYLOAD + 1);
    assert_int_equal(open_env(f), ST_EENV_LENGTH);
    put_be32(f->env.data + 32, UINT32_MAX);
    assert_int_equal(open_env(f), ST_EENV_LENGTH);
}

static void test_declared_length_mismatch(void **state)
{
    struct fixture *f = *state;
    uint8_t *p = make_payload(1000);
    uint8_t c[2000];
    size_t n = ZSTD_compress(c, sizeof(c), p, 1000, 3);
    assert_false(ZSTD_isError(n));

    raw_envelope(&f->env, c, n, 1000);
    assert_int_equal(open_and_decompress(f), ST_OK);
    raw_envelope(&f->env, c, n, 1001);
    assert_int_equal(open_and_decompress(f), ST_EZSTD_LENGTH);
    raw_envelope(&f->env, c, n, 999);
    assert_int_equal(open_and_decompress(f), ST_EZSTD_LENGTH);
    assert_int_equal(f->out.len, 0);
    /* Codec none carries the length twice; open wants them equal. */
    encode_small(f, ST_CODEC_NONE, NULL, 0);
    put_be32(f->env.data + 32, 299);
    assert_int_equal(open_env(f), ST_EZSTD_LENGTH);
    free(p);
}

static void test_two_frames(void **state)
{
    struct fixture *f = *state;
    uint8_t *p = make_payload(1000);
    uint8_t c[4000];
    size_t a = ZSTD_compress(c, sizeof(c), p, 500, 3);
    size_t b = ZSTD_compress(c + a, sizeof(c) - a, p + 500, 500, 3);
    assert_false(ZSTD_isError(a) || ZSTD_isError(b));

    /* Plain ZSTD_decompress would happily join them into 1000 bytes. */
    raw_envelope(&f->env, c, a + b, 1000);
    assert_int_equal(open_and_decompress(f), ST_EZSTD_FRAMES);
    raw_envelope(&f->env, c, a + b, 500);
    assert_int_equal(open_and_decompress(f), ST_EZSTD_FRAMES);
    /* Trailing junk after one frame, and a frame cut short. */
    raw_envelope(&f->env, c, a + 1, 500);
    assert_int_equal(open_and_decompress(f), ST_EZSTD_FRAMES);
    raw_envelope(&f->env, c, a - 1, 500);
    assert_int_equal(open_and_decompress(f), ST_EZSTD_FRAMES);
    /* Not zstd at all, and empty. */
    raw_envelope(&f->env, p, 100, 100);
    assert_int_equal(open_and_decompress(f), ST_EZSTD_FRAMES);
    raw_envelope(&f->env, p, 0, 0);
    assert_int_equal(open_and_decompress(f), ST_EZSTD_FRAMES);
    free(p);
}

static size_t skippable(uint8_t *out, const uint8_t *content, uint32_t n)
{
    const uint8_t magic[4] = {0x50, 0x2a, 0x4d, 0x18}; /* 0x184D2A50, little-endian */
    memcpy(out, magic, 4);
    for (int i = 0; i < 4; i++) {
        out[4 + i] = (uint8_t)(n >> (8 * i));
    }
    memcpy(out + 8, content, n);
    return 8 + n;
}

static void test_skippable_frame(void **state)
{
    struct fixture *f = *state;
    uint8_t *p = make_payload(300);
    uint8_t c[1000];
    size_t n = skippable(c, p, 300), z;

    raw_envelope(&f->env, c, n, 300);
    assert_int_equal(open_and_decompress(f), ST_EZSTD_FRAMES);
    raw_envelope(&f->env, c, n, 0);
    assert_int_equal(open_and_decompress(f), ST_EZSTD_FRAMES);
    /* A real frame followed, or preceded, by a skippable one. */
    z = ZSTD_compress(c, sizeof(c), p, 300, 3);
    assert_false(ZSTD_isError(z));
    n = z + skippable(c + z, p, 16);
    raw_envelope(&f->env, c, n, 300);
    assert_int_equal(open_and_decompress(f), ST_EZSTD_FRAMES);
    n = skippable(c, p, 16);
    z = ZSTD_compress(c + n, sizeof(c) - n, p, 300, 3);
    raw_envelope(&f->env, c, n + z, 300);
    assert_int_equal(open_and_decompress(f), ST_EZSTD_FRAMES);
    free(p);
}

static void test_no_content_size(void **state)
{
    struct fixture *f = *state;
    uint8_t *p = make_payload(5000);
    uint8_t c[8000];
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    ZSTD_outBuffer ob = {c, sizeof(c), 0};
    ZSTD_inBuffer ib = {p, 5000, 0};
    unsigned long long cs;

    assert_non_null(cc);
    ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 0);
    assert_int_equal(ZSTD_compressStream2(cc, &ob, &ib, ZSTD_e_end), 0);
    cs = ZSTD_getFrameContentSize(c, ob.pos);
    assert_true(cs == ZSTD_CONTENTSIZE_UNKNOWN);
    raw_envelope(&f->env, c, ob.pos, 5000);
    assert_int_equal(open_and_decompress(f), ST_EZSTD_SIZE);
    ZSTD_freeCCtx(cc);
    free(p);
}

/* Rewrites a small single-segment frame into one that declares a window of
 * 2^(10 + exp) * (1 + mant / 8) bytes: the frame stays decodable, so only
 * the window check can refuse it. */
static size_t with_window(const uint8_t *src, size_t n, unsigned exp, unsigned mant, uint8_t *out)
{
    ZSTD_frameHeader fh;
    uint32_t cs;
    assert_int_equal(ZSTD_getFrameHeader(&fh, src, n), 0);
    cs = (uint32_t)fh.frameContentSize;
    memcpy(out, src, 4);
    out[4] = 0x80; /* 4-byte content size, no single segment, no checksum, no dict */
    out[5] = (uint8_t)(exp << 3 | mant);
    for (int i = 0; i < 4; i++) {
        out[6 + i] = (uint8_t)(cs >> (8 * i));
    }
    memcpy(out + 10, src + fh.headerSize, n - fh.headerSize);
    return 10 + n - fh.headerSize;
}

static void test_window_over_limit(void **state)
{
    struct fixture *f = *state;
    uint8_t *p = make_payload(3000);
    uint8_t c[4000], w[4100], back[3000];
    size_t n = ZSTD_compress(c, sizeof(c), p, 3000, 3), m;
    ZSTD_frameHeader fh;

    assert_false(ZSTD_isError(n));
    /* Exactly 8 MiB is allowed. */
    m = with_window(c, n, 13, 0, w);
    assert_int_equal(ZSTD_getFrameHeader(&fh, w, m), 0);
    assert_int_equal(fh.windowSize, ST_ENV_MAX_WINDOW);
    raw_envelope(&f->env, w, m, 3000);
    assert_int_equal(open_and_decompress(f), ST_OK);
    assert_memory_equal(f->out.data, p, 3000);
    /* 9 MiB and 16 MiB are not, though plain zstd decodes them. */
    m = with_window(c, n, 13, 1, w);
    assert_int_equal(ZSTD_getFrameHeader(&fh, w, m), 0);
    assert_int_equal(fh.windowSize, 9u << 20);
    assert_int_equal(ZSTD_decompress(back, sizeof(back), w, m), 3000);
    raw_envelope(&f->env, w, m, 3000);
    assert_int_equal(open_and_decompress(f), ST_EZSTD_WINDOW);
    m = with_window(c, n, 14, 0, w);
    raw_envelope(&f->env, w, m, 3000);
    assert_int_equal(open_and_decompress(f), ST_EZSTD_WINDOW);
    free(p);
}

/* A real frame made by zstd itself with a 16 MiB window. */
static void test_window_real_frame(void **state)
{
    struct fixture *f = *state;
    size_t n = 12u << 20, cap = ZSTD_compressBound(n);
    uint8_t *p = make_payload(n), *c = malloc(cap);
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    ZSTD_frameHeader fh;
    size_t cn;

    assert_non_null(c);
    assert_non_null(cc);
    ZSTD_CCtx_setParameter(cc, ZSTD_c_windowLog, 24);
    ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, 1);
    cn = ZSTD_compress2(cc, c, cap, p, n);
    assert_false(ZSTD_isError(cn));
    assert_int_equal(ZSTD_getFrameHeader(&fh, c, cn), 0);
    assert_true(fh.windowSize > ST_ENV_MAX_WINDOW);
    assert_true(cn + ST_ENV_HEADER_LEN <= ST_ENV_MAX_LEN);
    raw_envelope(&f->env, c, cn, (uint32_t)n);
    assert_int_equal(open_and_decompress(f), ST_EZSTD_WINDOW);
    ZSTD_freeCCtx(cc);
    free(c);
    free(p);
}

static void test_out_limit(void **state)
{
    struct fixture *f = *state;
    st_buf small;
    st_envelope e;

    encode_small(f, ST_CODEC_ZSTD, NULL, 0);
    assert_int_equal(st_envelope_open(f->env.data, f->env.len, &e), ST_OK);
    st_buf_init(&small, 299);
    assert_int_equal(st_envelope_decompress(f->z, &e, &small), ST_ETOOBIG);
    st_buf_free(&small);
}

/* Reusing one zctx over many envelopes, interleaving both directions. */
static void test_reuse(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < 50; i++) {
        round_trip(f, i % 2 ? ST_CODEC_ZSTD : ST_CODEC_NONE, i % 3 ? key : NULL,
                   i % 3 ? KEY_LEN : 0, (size_t)(i * 97));
    }
}

/* Releasing a zctx's workspaces between envelopes (the agent does after
 * every frame) leaves it usable: the next use builds them again, in both
 * directions and with the dictionary codec, and a release of a zctx that
 * never compressed, or twice, is harmless. */
static void test_release(void **state)
{
    struct fixture *f = *state;
    st_zctx_release(f->z);
    for (int i = 0; i < 6; i++) {
        round_trip(f, i % 2 ? ST_CODEC_ZSTD_DICT : ST_CODEC_ZSTD, i % 3 ? key : NULL,
                   i % 3 ? KEY_LEN : 0, (size_t)(1000 + i * 20000));
        st_zctx_release(f->z);
        st_zctx_release(f->z);
    }
    st_zctx_release(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip_none_unsigned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trip_none_signed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trip_zstd_unsigned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trip_zstd_signed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trip_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_layout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_encode_args, setup, teardown),
        cmocka_unit_test_setup_teardown(test_encode_toobig, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_magic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_codec, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trip_dict, setup, teardown),
        cmocka_unit_test(test_wiredict_frozen),
        cmocka_unit_test_setup_teardown(test_dict_frame, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_flags, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_crc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hmac_wrong_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hmac_flipped_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unsigned_when_key_required, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_args, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seq_zero, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversize_envelope, setup, teardown),
        cmocka_unit_test_setup_teardown(test_raw_len_over_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_declared_length_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_frames, setup, teardown),
        cmocka_unit_test_setup_teardown(test_skippable_frame, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_content_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_window_over_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_window_real_frame, setup, teardown),
        cmocka_unit_test_setup_teardown(test_out_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
