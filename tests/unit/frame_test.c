/* Frame decoding, validation (one test per limit and code), the columnar
 * point values, and the JSON form. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "err.h"
#include "frame.h"
#include "testframe.h"
#include "sketch.h"

#define NOW 1767225600000LL /* 2026-01-01T00:00:00Z */
#define NSERIES 4
#define MAXLABELS 40

static const uint8_t agent_id[16] = {0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0x46, 0xa7,
                                     0x88, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf};
static const st_frame_limits lim = {NOW, 60000, 3600000};

/* A valid frame built from plain structs, one of each kind of series. */
struct fb {
    st_frame f;
    Strata__V1__Agent agent;
    Strata__V1__Label alabel;
    Strata__V1__Label *alabel_p[1];
    Strata__V1__Series s[NSERIES];
    Strata__V1__Series *s_p[NSERIES];
    Strata__V1__Label l[NSERIES][MAXLABELS];
    Strata__V1__Label *l_p[NSERIES][MAXLABELS];
    int64_t iv0[3];
    double v1[2], mins1[2], maxs1[2];
    Strata__V1__Sketch sk[2];
    Strata__V1__Sketch *sk_p[2];
    int64_t iv3[2];
    Strata__V1__ActionResult ar;
    Strata__V1__ActionResult *ar_p[1];
    st_envelope env;
    st_buf buf;
};

static void label(struct fb *b, size_t s, size_t i, const char *k, const char *v)
{
    strata__v1__label__init(&b->l[s][i]);
    b->l[s][i].key = (char *)k;
    b->l[s][i].value = (char *)v;
    b->l_p[s][i] = &b->l[s][i];
    b->s[s].labels = b->l_p[s];
    b->s[s].n_labels = i + 1;
}

static void series(struct fb *b, size_t i, const char *name, Strata__V1__Kind kind,
                   Strata__V1__Layer layer, const char *unit)
{
    Strata__V1__Series *s = &b->s[i];
    strata__v1__series__init(s);
    s->name = (char *)name;
    s->kind = kind;
    s->layer = layer;
    s->unit = (char *)unit;
    s->start_unix_ms = NOW - 3000;
    s->interval_ms = 1000;
    b->s_p[i] = s;
}

static void sketch(Strata__V1__Sketch *m, double lo, int n)
{
    st_sketch *sk = NULL;
    assert_int_equal(st_sketch_new(0, &sk), ST_OK);
    for (int i = 1; i <= n; i++) {
        assert_int_equal(st_sketch_insert(sk, lo * i), ST_OK);
    }
    assert_int_equal(st_sketch_to_proto(sk, m), ST_OK);
    st_sketch_free(sk);
}

static void build_agent(struct fb *b)
{
    strata__v1__agent__init(&b->agent);
    b->agent.host = "edge-1";
    b->agent.role = STRATA__V1__ROLE__EDGE;
    b->agent.version = "0.1.0";
    b->agent.boot_id = "5b0c1c2e-8d5e-4f31-9a0e-2f4c6c8e9d10";
    strata__v1__label__init(&b->alabel);
    b->alabel.key = "region";
    b->alabel.value = "eu-west";
    b->alabel_p[0] = &b->alabel;
    b->agent.labels = b->alabel_p;
    b->agent.n_labels = 1;
}

static void build_series(struct fb *b)
{
    series(b, 0, "http.server.requests", STRATA__V1__KIND__COUNTER,
           STRATA__V1__LAYER__INFRASTRUCTURE, "");
    label(b, 0, 0, "route", "/api");
    label(b, 0, 1, "status_class", "2xx");
    b->iv0[0] = 5, b->iv0[1] = 2, b->iv0[2] = -1; /* 5, 7, 6 */
    b->s[0].ivalues = b->iv0;
    b->s[0].n_ivalues = 3;

    series(b, 1, "mem.rss", STRATA__V1__KIND__GAUGE, STRATA__V1__LAYER__FUNCTION, "B");
    label(b, 1, 0, "process", "nginx");
    b->v1[0] = 1.5e6, b->v1[1] = 2e6;
    b->mins1[0] = 1e6, b->mins1[1] = 1.5e6;
    b->maxs1[0] = 2e6, b->maxs1[1] = 2.5e6;
    b->s[1].values = b->v1, b->s[1].n_values = 2;
    b->s[1].mins = b->mins1, b->s[1].n_mins = 2;
    b->s[1].maxs = b->maxs1, b->s[1].n_maxs = 2;
    b->s[1].start_unix_ms = NOW - 2000;

    series(b, 2, "http.server.duration", STRATA__V1__KIND__DISTRIBUTION,
           STRATA__V1__LAYER__INFRASTRUCTURE, "s");
    label(b, 2, 0, "route", "/api");
    sketch(&b->sk[0], 0.001, 1000); /* 1 ms .. 1 s */
    sketch(&b->sk[1], 0.01, 10);
    b->sk_p[0] = &b->sk[0], b->sk_p[1] = &b->sk[1];
    b->s[2].sketches = b->sk_p, b->s[2].n_sketches = 2;
    b->s[2].start_unix_ms = NOW - 2000;

    series(b, 3, "host.cpu.utilization", STRATA__V1__KIND__GAUGE, STRATA__V1__LAYER__INFRASTRUCTURE,
           "ratio");
    b->iv3[0] = 250, b->iv3[1] = 10; /* 0.250, 0.260 */
    b->s[3].ivalues = b->iv3, b->s[3].n_ivalues = 2;
    b->s[3].scale = 3;
    b->s[3].start_unix_ms = NOW - 2000;
}

static int setup(void **state)
{
    struct fb *b = calloc(1, sizeof(*b));
    assert_non_null(b);
    strata__v1__frame__init(&b->f);
    b->f.agent_id.data = (uint8_t *)agent_id;
    b->f.agent_id.len = 16;
    b->f.seq = 42;
    b->f.sent_unix_ms = NOW;
    build_agent(b);
    b->f.agent = &b->agent;
    build_series(b);
    b->f.series = b->s_p;
    b->f.n_series = NSERIES;
    strata__v1__action_result__init(&b->ar);
    b->ar.action_id = "act-1";
    b->ar.status = STRATA__V1__ACTION_STATUS__ACTION_OK;
    b->ar.exit_status = 0;
    b->ar.duration_ms = 12;
    b->ar.type = "exec";
    b->ar.finding_id = "f-7";
    b->ar.output = "done";
    b->ar_p[0] = &b->ar;
    b->f.action_results = b->ar_p;
    b->f.n_action_results = 1;
    memcpy(b->env.agent_id, agent_id, 16);
    b->env.seq = 42;
    st_buf_init(&b->buf, ST_ENV_MAX_PAYLOAD);
    *state = b;
    return 0;
}

static int teardown(void **state)
{
    struct fb *b = *state;
    st_sketch_proto_clear(&b->sk[0]);
    st_sketch_proto_clear(&b->sk[1]);
    st_buf_free(&b->buf);
    free(b);
    return 0;
}

static const char *last_detail;

static int validate(struct fb *b)
{
    return st_frame_validate(&b->f, &b->env, &lim, &last_detail);
}

static void expect(struct fb *b, int code, const char *in_detail)
{
    assert_int_equal(validate(b), code);
    assert_non_null(last_detail);
    if (strstr(last_detail, in_detail) == NULL) {
        fail_msg("detail \"%s\" lacks \"%s\"", last_detail, in_detail);
    }
}

static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* ---- valid frames, encode and decode ---------------------------------- */

static void test_valid(void **state)
{
    struct fb *b = *state;
    assert_int_equal(validate(b), ST_OK);
    assert_null(last_detail);
    assert_int_equal(st_frame_validate(&b->f, NULL, NULL, NULL), ST_OK);
}

static void test_round_trip(void **state)
{
    struct fb *b = *state;
    st_frame *d = NULL;

    assert_int_equal(st_frame_encode(&b->f, &b->buf), ST_OK);
    assert_true(b->buf.len > 100);
    assert_int_equal(st_frame_decode(b->buf.data, b->buf.len, &d), ST_OK);
    assert_int_equal(st_frame_validate(d, &b->env, &lim, NULL), ST_OK);
    assert_int_equal(d->seq, 42);
    assert_memory_equal(d->agent_id.data, agent_id, 16);
    assert_string_equal(d->agent->host, "edge-1");
    assert_int_equal(d->n_series, NSERIES);
    assert_string_equal(d->series[0]->name, "http.server.requests");
    assert_string_equal(d->series[0]->labels[1]->value, "2xx");
    assert_int_equal(d->series[0]->n_ivalues, 3);
    assert_int_equal(d->series[0]->ivalues[2], -1);
    assert_int_equal(d->series[2]->n_sketches, 2);
    assert_int_equal(d->series[2]->sketches[0]->count, 1000);
    assert_string_equal(d->action_results[0]->output, "done");
    st_frame_free(d);
    st_frame_free(NULL);
}

/* Full path: frame -> envelope (zstd, signed) -> collector side. */
static void test_through_envelope(void **state)
{
    struct fb *b = *state;
    const uint8_t key[] = "k3y";
    st_zctx *z = NULL;
    st_buf env, raw;
    st_envelope e;
    st_frame *d = NULL;

    st_buf_init(&env, ST_ENV_MAX_LEN);
    st_buf_init(&raw, ST_ENV_MAX_PAYLOAD);
    assert_int_equal(st_zctx_new(&z), ST_OK);
    assert_int_equal(st_frame_encode(&b->f, &b->buf), ST_OK);
    assert_int_equal(st_envelope_encode(z, agent_id, 42, ST_CODEC_ZSTD, 3, b->buf.data, b->buf.len,
                                        key, 3, &env),
                     ST_OK);
    assert_int_equal(st_envelope_open(env.data, env.len, &e), ST_OK);
    assert_int_equal(st_envelope_verify(env.data, env.len, &e, key, 3), ST_OK);
    assert_int_equal(st_envelope_decompress(z, &e, &raw), ST_OK);
    assert_int_equal(st_frame_decode(raw.data, raw.len, &d), ST_OK);
    assert_int_equal(st_frame_validate(d, &e, &lim, NULL), ST_OK);
    e.seq = 43; /* a frame replayed inside another envelope */
    assert_int_equal(st_frame_validate(d, &e, &lim, NULL), ST_EFRAME_AGENT);
    st_frame_free(d);
    st_zctx_free(z);
    st_buf_free(&env);
    st_buf_free(&raw);
}

static void test_decode_garbage(void **state)
{
    const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff};
    const uint8_t wrong_type[] = {0x0a, 0x05, 'a'}; /* length past the end */
    st_frame *d = NULL;
    (void)state;
    assert_int_equal(st_frame_decode(junk, sizeof(junk), &d), ST_EFRAME_DECODE);
    assert_int_equal(st_frame_decode(wrong_type, sizeof(wrong_type), &d), ST_EFRAME_DECODE);
    assert_null(d);
    /* An empty payload is an empty (and then invalid) frame. */
    assert_int_equal(st_frame_decode(junk, 0, &d), ST_OK);
    assert_int_equal(st_frame_validate(d, NULL, NULL, NULL), ST_EFRAME_AGENT);
    st_frame_free(d);
}

/* Replaces the first occurrence of needle in the packed frame. */
static void patch(st_buf *b, const char *needle, const char *with, size_t n)
{
    for (size_t i = 0; i + n <= b->len; i++) {
        if (memcmp(b->data + i, needle, n) == 0) {
            memcpy(b->data + i, with, n);
            return;
        }
    }
    fail_msg("\"%s\" not in the packed frame", needle);
}

/* protobuf-c copies "http\0server..." whole but C sees "http": decode
 * refuses it rather than let a C reader and a raw-bytes reader disagree. */
static void test_decode_embedded_nul(void **state)
{
    struct fb *b = *state;
    const char *cases[][2] = {
        {"http.server.requests", "http\0server.requests"},
        {"eu-west", "eu\0west"},
        {"edge-1", "edge-\0"},
        {"done", "do\0e"},
    };
    st_frame *d = NULL;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(st_frame_encode(&b->f, &b->buf), ST_OK);
        patch(&b->buf, cases[i][0], cases[i][1], strlen(cases[i][0]));
        assert_int_equal(st_frame_decode(b->buf.data, b->buf.len, &d), ST_EFRAME_UTF8);
    }
}

/* NUL is fine where it is not a string: in the bytes of agent_id, and in
 * an unknown field (protobuf-c keeps those as opaque bytes). */
static void test_decode_nul_outside_strings(void **state)
{
    struct fb *b = *state;
    const uint8_t id[16] = {0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 0};
    const uint8_t unknown[] = {0xa2, 0x06, 0x03, 'a', 0x00, 'b'}; /* field 100, "a\0b" */
    st_frame *d = NULL;

    b->f.agent_id.data = (uint8_t *)id;
    assert_int_equal(st_frame_encode(&b->f, &b->buf), ST_OK);
    assert_int_equal(st_buf_append(&b->buf, unknown, sizeof(unknown)), ST_OK);
    assert_int_equal(st_frame_decode(b->buf.data, b->buf.len, &d), ST_OK);
    assert_memory_equal(d->agent_id.data, id, 16);
    assert_int_equal(d->base.n_unknown_fields, 1);
    st_frame_free(d);
}

/* st_frame_free also releases frames assembled from malloc'd parts, as the
 * agent's fold builds them; ASan checks that every block goes back. */
static void test_free_built_frame(void **state)
{
    st_frame *f = st_test_frame_new(agent_id, 1, "web-1", STRATA__V1__ROLE__APP, 1);
    Strata__V1__Series *s = malloc(sizeof(*s));
    Strata__V1__Label *l = malloc(sizeof(*l));
    (void)state;
    assert_non_null(s);
    assert_non_null(l);
    strata__v1__series__init(s);
    strata__v1__label__init(l);
    s->name = strdup("mem.rss");
    l->key = strdup("process");
    s->labels = malloc(sizeof(*s->labels));
    s->labels[0] = l;
    s->n_labels = 1;
    s->values = calloc(2, sizeof(double));
    s->n_values = 2;
    f->series[0] = s;
    f->n_series = 1;
    st_frame_free(f); /* unit and label value stay protobuf_c_empty_string */
}

/* Invalid UTF-8 passes protobuf-c (1.4 does not check) and fails validate. */
static void test_decode_bad_utf8(void **state)
{
    struct fb *b = *state;
    st_frame *d = NULL;
    assert_int_equal(st_frame_encode(&b->f, &b->buf), ST_OK);
    patch(&b->buf, "nginx", "ng\xffnx", 5);
    assert_int_equal(st_frame_decode(b->buf.data, b->buf.len, &d), ST_OK);
    assert_int_equal(st_frame_validate(d, NULL, &lim, &last_detail), ST_EFRAME_UTF8);
    assert_non_null(strstr(last_detail, "series 1 \"mem.rss\""));
    st_frame_free(d);
}

/* Two wire bytes per empty Series become ~200 bytes of structs: the decode
 * budget refuses such a payload instead of allocating gigabytes. */
static void test_decode_budget(void **state)
{
    size_t n = 4u << 20;
    uint8_t *p = malloc(n);
    st_frame *d = NULL;
    (void)state;
    assert_non_null(p);
    for (size_t i = 0; i < n; i += 2) {
        p[i] = 0x2a; /* field 5 (series), length-delimited */
        p[i + 1] = 0x00;
    }
    assert_int_equal(st_frame_decode(p, n, &d), ST_EFRAME_DECODE);
    /* The same shape, small, is fine. */
    assert_int_equal(st_frame_decode(p, 2000, &d), ST_OK);
    assert_int_equal(d->n_series, 1000);
    st_frame_free(d);
    free(p);
}

/* The densest valid frame (65536 tiny series with 32 one-byte label keys
 * each, about 11 MiB) fits the budget. */
static void test_decode_budget_dense_valid(void **state)
{
    static const char keys[] = "abcdefghijklmnopqrstuvwxyzABCDEF";
    static char key_str[32][2];
    size_t n = ST_FRAME_MAX_SERIES;
    Strata__V1__Series *s = calloc(n, sizeof(*s));
    Strata__V1__Series **sp = calloc(n, sizeof(*sp));
    Strata__V1__Label l[32], *lp[32];
    int64_t one = 1;
    struct fb *b = *state;
    st_frame *d = NULL;
    st_buf big;

    assert_non_null(s);
    assert_non_null(sp);
    for (int k = 0; k < 32; k++) {
        key_str[k][0] = keys[k];
        strata__v1__label__init(&l[k]);
        l[k].key = key_str[k];
        lp[k] = &l[k];
    }
    for (size_t i = 0; i < n; i++) {
        strata__v1__series__init(&s[i]);
        s[i].name = "a";
        s[i].kind = STRATA__V1__KIND__COUNTER;
        s[i].start_unix_ms = NOW;
        s[i].interval_ms = 1;
        s[i].ivalues = &one;
        s[i].n_ivalues = 1;
        s[i].labels = lp;
        s[i].n_labels = 32;
        sp[i] = &s[i];
    }
    b->f.series = sp;
    b->f.n_series = n;
    b->f.n_action_results = 0;
    st_buf_init(&big, ST_ENV_MAX_PAYLOAD);
    assert_int_equal(st_frame_encode(&b->f, &big), ST_OK);
    assert_true(big.len > (10u << 20));
    assert_int_equal(st_frame_decode(big.data, big.len, &d), ST_OK);
    assert_int_equal(st_frame_validate(d, &b->env, &lim, NULL), ST_OK);
    st_frame_free(d);
    st_buf_free(&big);
    free(sp);
    free(s);
}

static void test_encode_toobig(void **state)
{
    struct fb *b = *state;
    st_buf small;
    st_buf_init(&small, 10);
    assert_int_equal(st_frame_encode(&b->f, &small), ST_ETOOBIG);
    st_buf_free(&small);
}

/* ---- identity ---------------------------------------------------------- */

static void test_agent_mismatch(void **state)
{
    struct fb *b = *state;
    b->env.agent_id[15] ^= 1;
    expect(b, ST_EFRAME_AGENT, "agent_id");
    b->env.agent_id[15] ^= 1;
    b->env.seq = 41;
    expect(b, ST_EFRAME_AGENT, "seq 42");
    b->env.seq = 42;
    b->f.agent_id.len = 15;
    expect(b, ST_EFRAME_AGENT, "15 bytes");
    assert_int_equal(st_frame_validate(&b->f, NULL, &lim, NULL), ST_EFRAME_AGENT);
}

/* ---- counts and lengths ----------------------------------------------- */

static void test_too_many_series(void **state)
{
    struct fb *b = *state;
    Strata__V1__Series **sp = calloc(ST_FRAME_MAX_SERIES + 1, sizeof(*sp));
    assert_non_null(sp);
    for (size_t i = 0; i <= ST_FRAME_MAX_SERIES; i++) {
        sp[i] = &b->s[i % NSERIES];
    }
    b->f.series = sp;
    b->f.n_series = ST_FRAME_MAX_SERIES;
    assert_int_equal(validate(b), ST_OK);
    b->f.n_series = ST_FRAME_MAX_SERIES + 1;
    expect(b, ST_EFRAME_SERIES, "65537 series");
    free(sp);
}

static void test_too_many_labels(void **state)
{
    struct fb *b = *state;
    static char keys[MAXLABELS][8];
    for (size_t i = 0; i < ST_FRAME_MAX_LABELS; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k%zu", i);
        label(b, 3, i, keys[i], "v");
    }
    assert_int_equal(validate(b), ST_OK);
    label(b, 3, ST_FRAME_MAX_LABELS, "k32", "v");
    expect(b, ST_EFRAME_LABELS, "series 3 \"host.cpu.utilization\"");
}

static void test_duplicate_label(void **state)
{
    struct fb *b = *state;
    label(b, 0, 2, "route", "/other");
    expect(b, ST_EFRAME_LABELS, "labels[2] duplicate key");
}

static void test_name_lengths(void **state)
{
    struct fb *b = *state;
    char *n128 = repeat('n', 128), *n129 = repeat('n', 129);

    b->s[2].name = n128;
    assert_int_equal(validate(b), ST_OK);
    b->s[2].name = n129;
    expect(b, ST_EFRAME_NAME, "series 2 \"nnnn");
    b->s[2].name = "";
    expect(b, ST_EFRAME_NAME, "series 2 \"\": name");
    b->s[2].name = "ok";
    b->l[0][1].key = n129;
    expect(b, ST_EFRAME_NAME, "labels[1] key");
    b->l[0][1].key = "";
    expect(b, ST_EFRAME_NAME, "labels[1] key");
    b->l[0][1].key = "status_class";
    b->s[1].unit = n129;
    expect(b, ST_EFRAME_NAME, "unit");
    b->s[1].unit = "B";
    b->agent.host = "";
    expect(b, ST_EFRAME_NAME, "agent.host");
    b->agent.host = n129;
    expect(b, ST_EFRAME_NAME, "agent.host");
    b->agent.host = "h";
    b->agent.version = n129;
    expect(b, ST_EFRAME_NAME, "agent.version");
    b->agent.version = "1";
    b->f.agent = NULL;
    expect(b, ST_EFRAME_NAME, "agent missing");
    free(n128);
    free(n129);
}

static void test_value_lengths(void **state)
{
    struct fb *b = *state;
    char *v1024 = repeat('v', 1024), *v1025 = repeat('v', 1025);

    b->l[1][0].value = v1024;
    assert_int_equal(validate(b), ST_OK);
    b->l[1][0].value = v1025;
    expect(b, ST_EFRAME_VALUE, "series 1 \"mem.rss\": labels[0] value");
    b->l[1][0].value = "";
    assert_int_equal(validate(b), ST_OK);
    b->agent.boot_id = v1025;
    expect(b, ST_EFRAME_VALUE, "agent.boot_id");
    b->agent.boot_id = "";
    b->alabel.value = v1025;
    expect(b, ST_EFRAME_VALUE, "agent.labels[0] value");
    b->alabel.value = "x";
    b->ar.output = v1025;
    expect(b, ST_EFRAME_VALUE, "action_results[0].output");
    b->ar.output = v1024;
    b->ar.action_id = "";
    expect(b, ST_EFRAME_NAME, "action_results[0].action_id");
    free(v1024);
    free(v1025);
}

/* ---- UTF-8 ------------------------------------------------------------- */

static void test_bad_utf8(void **state)
{
    struct fb *b = *state;
    b->s[0].name = "http.\xff";
    expect(b, ST_EFRAME_UTF8, "series 0 \"http.?\": name");
    b->s[0].name = "ok";
    b->l[0][0].key = "r\xc0\xaf"; /* overlong '/' */
    expect(b, ST_EFRAME_UTF8, "labels[0] key");
    b->l[0][0].key = "route";
    b->l[0][0].value = "\xed\xa0\x80"; /* a surrogate */
    expect(b, ST_EFRAME_UTF8, "labels[0] value");
    b->l[0][0].value = "caf\xc3\xa9"; /* valid: café */
    assert_int_equal(validate(b), ST_OK);
    b->agent.host = "h\xe2\x82";
    expect(b, ST_EFRAME_UTF8, "agent.host");
    b->agent.host = "h";
    b->ar.error = "\x80";
    expect(b, ST_EFRAME_UTF8, "action_results[0].error");
}

/* The detail names the series without echoing what failed verbatim. */
static void test_detail_sanitised(void **state)
{
    struct fb *b = *state;
    char *long_name = repeat('x', 100);
    b->s[1].name = "evil\n\"name\x1b";
    b->s[1].interval_ms = 0;
    expect(b, ST_EFRAME_POINTS, "series 1 \"evil??name?\"");
    b->s[1].name = long_name;
    validate(b);
    assert_true(strlen(last_detail) < 200);
    free(long_name);
}

/* ---- numbers and times ------------------------------------------------- */

static void test_non_finite(void **state)
{
    struct fb *b = *state;
    b->v1[1] = NAN;
    expect(b, ST_EFRAME_NUMBER, "values[1]");
    b->v1[1] = INFINITY;
    expect(b, ST_EFRAME_NUMBER, "values[1]");
    b->v1[1] = 2e6;
    b->mins1[0] = -INFINITY;
    expect(b, ST_EFRAME_NUMBER, "mins/maxs[0]");
    b->mins1[0] = 1e6;
    b->maxs1[1] = NAN;
    expect(b, ST_EFRAME_NUMBER, "mins/maxs[1]");
    b->maxs1[1] = 2.5e6;
    b->sk[1].sum = NAN;
    expect(b, ST_EFRAME_NUMBER, "series 2 \"http.server.duration\": sketches[1]");
    b->sk[1].sum = 0.55;
    b->sk[0].max = INFINITY;
    expect(b, ST_EFRAME_NUMBER, "sketches[0]");
}

static void test_time_skew(void **state)
{
    struct fb *b = *state;
    b->s[0].start_unix_ms = NOW - 3600000; /* exactly max_age ago */
    assert_int_equal(validate(b), ST_OK);
    b->s[0].start_unix_ms = NOW - 3600001;
    expect(b, ST_EFRAME_TIME, "series 0");
    /* The last of 3 points starts at start + 2 s. */
    b->s[0].start_unix_ms = NOW + 60000 - 2000;
    assert_int_equal(validate(b), ST_OK);
    b->s[0].start_unix_ms = NOW + 60000 - 1999;
    expect(b, ST_EFRAME_TIME, "series 0");
    b->s[0].start_unix_ms = INT64_MAX;
    expect(b, ST_EFRAME_TIME, "series 0");
    b->s[0].start_unix_ms = INT64_MIN;
    expect(b, ST_EFRAME_TIME, "series 0");
    b->s[0].start_unix_ms = NOW;
    b->s[0].interval_ms = UINT32_MAX;
    expect(b, ST_EFRAME_TIME, "series 0");
    /* No limits, no time check. */
    assert_int_equal(st_frame_validate(&b->f, &b->env, NULL, NULL), ST_OK);
}

/* ---- columns ----------------------------------------------------------- */

static void test_columns(void **state)
{
    struct fb *b = *state;
    double v[3] = {1, 2, 3};

    b->s[0].values = v, b->s[0].n_values = 3; /* ivalues and values */
    expect(b, ST_EFRAME_POINTS, "2 of ivalues, values, sketches");
    b->s[0].n_values = 0, b->s[0].n_ivalues = 0; /* neither */
    expect(b, ST_EFRAME_POINTS, "0 of ivalues");
    b->s[0].n_ivalues = 3;
    b->s[0].sketches = b->sk_p, b->s[0].n_sketches = 1; /* counter with sketches */
    expect(b, ST_EFRAME_POINTS, "2 of");
    b->s[0].n_ivalues = 0;
    expect(b, ST_EFRAME_POINTS, "only they, use sketches");
    b->s[0].n_sketches = 0, b->s[0].n_ivalues = 3;
    assert_int_equal(validate(b), ST_OK);
    b->s[2].n_sketches = 0, b->s[2].values = v, b->s[2].n_values = 2; /* distribution */
    expect(b, ST_EFRAME_POINTS, "series 2");
}

static void test_min_max_columns(void **state)
{
    struct fb *b = *state;
    b->s[1].n_mins = 1;
    expect(b, ST_EFRAME_POINTS, "1 mins and 2 maxs for 2 points");
    b->s[1].n_maxs = 1;
    expect(b, ST_EFRAME_POINTS, "1 mins and 1 maxs for 2 points");
    b->s[1].n_mins = 2, b->s[1].n_maxs = 0;
    expect(b, ST_EFRAME_POINTS, "2 mins and 0 maxs");
    b->s[1].n_mins = 0;
    assert_int_equal(validate(b), ST_OK); /* neither is fine */
    b->s[1].n_mins = 2, b->s[1].n_maxs = 2;
    b->mins1[1] = 3e6;
    expect(b, ST_EFRAME_POINTS, "mins[1] > maxs[1]");
    b->mins1[1] = 1.5e6;
    b->s[0].mins = b->mins1, b->s[0].maxs = b->maxs1; /* on a counter */
    b->s[0].n_mins = b->s[0].n_maxs = 2;
    expect(b, ST_EFRAME_POINTS, "not a gauge");
}

static void test_point_limits(void **state)
{
    struct fb *b = *state;
    int64_t *iv = calloc(ST_FRAME_MAX_POINTS + 1, sizeof(*iv));
    assert_non_null(iv);

    b->s[0].interval_ms = 0;
    expect(b, ST_EFRAME_POINTS, "interval_ms is 0");
    b->s[0].interval_ms = 1;
    b->s[3].scale = ST_FRAME_MAX_SCALE + 1;
    expect(b, ST_EFRAME_POINTS, "scale 19");
    b->s[3].scale = -ST_FRAME_MAX_SCALE - 1;
    expect(b, ST_EFRAME_POINTS, "scale -19");
    b->s[3].scale = -ST_FRAME_MAX_SCALE;
    assert_int_equal(validate(b), ST_OK);
    b->s[0].ivalues = iv, b->s[0].n_ivalues = ST_FRAME_MAX_POINTS;
    b->s[0].start_unix_ms = NOW - 10000;
    assert_int_equal(validate(b), ST_OK);
    b->s[0].n_ivalues = ST_FRAME_MAX_POINTS + 1;
    expect(b, ST_EFRAME_POINTS, "4097 points");
    b->s[0].n_ivalues = 3;
    iv[0] = INT64_MAX, iv[1] = 1;
    expect(b, ST_EFRAME_POINTS, "ivalues overflow at 1");
    iv[0] = INT64_MIN, iv[1] = -1;
    expect(b, ST_EFRAME_POINTS, "ivalues overflow at 1");
    iv[0] = INT64_MAX, iv[1] = INT64_MIN, iv[2] = 0; /* sums back in range */
    assert_int_equal(validate(b), ST_OK);
    free(iv);
}

static void test_kind_layer_role(void **state)
{
    struct fb *b = *state;
    b->s[0].kind = STRATA__V1__KIND__KIND_UNSPECIFIED;
    expect(b, ST_EFRAME_POINTS, "kind 0 unknown");
    b->s[0].kind = (Strata__V1__Kind)7;
    expect(b, ST_EFRAME_POINTS, "kind 7 unknown");
    b->s[0].kind = STRATA__V1__KIND__COUNTER;
    b->s[0].layer = (Strata__V1__Layer)9;
    expect(b, ST_EFRAME_DECODE, "layer 9 unknown");
    b->s[0].layer = STRATA__V1__LAYER__LAYER_UNSPECIFIED;
    assert_int_equal(validate(b), ST_OK);
    b->agent.role = (Strata__V1__Role)-1;
    expect(b, ST_EFRAME_DECODE, "agent.role -1");
    b->agent.role = STRATA__V1__ROLE__DB;
    b->ar.status = (Strata__V1__ActionStatus)5;
    expect(b, ST_EFRAME_DECODE, "action_results[0].status 5");
}

static void test_bad_sketch(void **state)
{
    struct fb *b = *state;
    b->sk[0].count += 1; /* no longer the sum of the buckets */
    expect(b, ST_EFRAME_SKETCH, "series 2 \"http.server.duration\": sketches[0] malformed");
    b->sk[0].count -= 1;
    b->sk[1].alpha = 0.7;
    expect(b, ST_EFRAME_SKETCH, "sketches[1]");
}

/* ---- values ------------------------------------------------------------ */

static void test_series_values(void **state)
{
    struct fb *b = *state;
    Strata__V1__Series *s = &b->s[3];
    int64_t iv[4] = {123456789, -23456789, 0, 1};
    double out[4];

    s->ivalues = iv, s->n_ivalues = 4, s->scale = 9;
    assert_int_equal(st_series_npoints(s), 4);
    st_series_values(s, out);
    assert_true(out[0] == 0.123456789); /* exact: one correctly rounded division */
    assert_true(out[1] == 0.1);
    assert_true(out[2] == 0.1);
    assert_true(out[3] == 0.100000001);
    for (size_t i = 0; i < 4; i++) {
        assert_true(st_series_value(s, i) == out[i]);
    }
    assert_true(isnan(st_series_value(s, 4)));

    s->scale = -3; /* thousands */
    iv[0] = 3, iv[1] = 4;
    s->n_ivalues = 2;
    st_series_values(s, out);
    assert_true(out[0] == 3000.0 && out[1] == 7000.0);

    s->scale = 0; /* counter deltas: 5, 7, 6 */
    st_series_values(&b->s[0], out);
    assert_true(out[0] == 5 && out[1] == 7 && out[2] == 6);

    st_series_values(&b->s[1], out); /* the values column as is */
    assert_true(out[0] == 1.5e6 && out[1] == 2e6);
    assert_int_equal(st_series_npoints(&b->s[2]), 2);
    assert_true(isnan(st_series_value(&b->s[2], 0))); /* distributions have no value */

    s->scale = 18;
    iv[0] = 1, iv[1] = 0;
    st_series_values(s, out);
    assert_true(out[0] == 1e-18);
}

/* ---- JSON -------------------------------------------------------------- */

static json_t *get(json_t *o, const char *path)
{
    char key[64];
    const char *dot;
    while ((dot = strchr(path, '.')) != NULL) {
        snprintf(key, sizeof(key), "%.*s", (int)(dot - path), path);
        o = json_is_array(o) ? json_array_get(o, (size_t)strtoul(key, NULL, 10))
                             : json_object_get(o, key);
        assert_non_null(o);
        path = dot + 1;
    }
    o = json_is_array(o) ? json_array_get(o, (size_t)strtoul(path, NULL, 10))
                         : json_object_get(o, path);
    if (o == NULL) {
        fail_msg("no %s", path);
    }
    return o;
}

static void str_is(json_t *o, const char *path, const char *want)
{
    assert_string_equal(json_string_value(get(o, path)), want);
}

static void int_is(json_t *o, const char *path, long long want)
{
    json_t *v = get(o, path);
    assert_true(json_is_integer(v));
    assert_int_equal(json_integer_value(v), want);
}

static void real_near(json_t *o, const char *path, double want, double rel)
{
    double v = json_number_value(get(o, path));
    if (fabs(v - want) > rel * fabs(want)) {
        fail_msg("%s: %g, want %g", path, v, want);
    }
}

static void test_json_top(void **state)
{
    struct fb *b = *state;
    json_t *j = NULL;

    assert_int_equal(st_frame_to_json(&b->f, &j), ST_OK);
    str_is(j, "agent_id", "a0a1a2a3-a4a5-46a7-88a9-aaabacadaeaf");
    int_is(j, "seq", 42);
    int_is(j, "sent_unix_ms", NOW);
    str_is(j, "agent.host", "edge-1");
    str_is(j, "agent.role", "edge");
    str_is(j, "agent.labels.region", "eu-west");
    str_is(j, "agent.version", "0.1.0");
    str_is(j, "agent.boot_id", "5b0c1c2e-8d5e-4f31-9a0e-2f4c6c8e9d10");
    assert_int_equal(json_array_size(get(j, "series")), NSERIES);
    assert_int_equal(json_array_size(get(j, "action_results")), 1);
    str_is(j, "action_results.0.action_id", "act-1");
    str_is(j, "action_results.0.type", "exec");
    str_is(j, "action_results.0.finding_id", "f-7");
    str_is(j, "action_results.0.status", "ok");
    int_is(j, "action_results.0.exit_status", 0);
    int_is(j, "action_results.0.duration_ms", 12);
    str_is(j, "action_results.0.error", "");
    str_is(j, "action_results.0.output", "done");
    json_decref(j);
}

static void test_json_counter_gauge(void **state)
{
    struct fb *b = *state;
    json_t *j = NULL;

    assert_int_equal(st_frame_to_json(&b->f, &j), ST_OK);
    str_is(j, "series.0.name", "http.server.requests");
    str_is(j, "series.0.labels.route", "/api");
    str_is(j, "series.0.labels.status_class", "2xx");
    str_is(j, "series.0.layer", "infrastructure");
    str_is(j, "series.0.unit", "");
    str_is(j, "series.0.kind", "counter");
    assert_int_equal(json_array_size(get(j, "series.0.points")), 3);
    int_is(j, "series.0.points.0.start_unix_ms", NOW - 3000);
    int_is(j, "series.0.points.2.start_unix_ms", NOW - 1000);
    int_is(j, "series.0.points.1.interval_ms", 1000);
    int_is(j, "series.0.points.0.value", 5);
    int_is(j, "series.0.points.1.value", 7);
    int_is(j, "series.0.points.2.value", 6);
    assert_null(json_object_get(get(j, "series.0.points.0"), "min"));

    str_is(j, "series.1.kind", "gauge");
    str_is(j, "series.1.layer", "function");
    str_is(j, "series.1.unit", "B");
    real_near(j, "series.1.points.1.value", 2e6, 0);
    real_near(j, "series.1.points.1.min", 1.5e6, 0);
    real_near(j, "series.1.points.1.max", 2.5e6, 0);

    assert_true(json_is_real(get(j, "series.3.points.0.value")));
    real_near(j, "series.3.points.0.value", 0.25, 0);
    real_near(j, "series.3.points.1.value", 0.26, 0);
    json_decref(j);
}

static void test_json_distribution(void **state)
{
    struct fb *b = *state;
    json_t *j = NULL, *p;

    assert_int_equal(st_frame_to_json(&b->f, &j), ST_OK);
    str_is(j, "series.2.kind", "distribution");
    str_is(j, "series.2.unit", "s");
    p = get(j, "series.2.points.0");
    assert_null(json_object_get(p, "value"));
    int_is(p, "start_unix_ms", NOW - 2000);
    int_is(p, "interval_ms", 1000);
    int_is(p, "count", 1000);
    real_near(p, "sum", 500.5, 1e-9); /* 0.001 * (1 + ... + 1000) */
    real_near(p, "min", 0.001, 0.01);
    real_near(p, "max", 1.0, 0.01);
    real_near(p, "p50", 0.5, 0.02);
    real_near(p, "p90", 0.9, 0.02);
    real_near(p, "p95", 0.95, 0.02);
    real_near(p, "p99", 0.99, 0.02);
    int_is(j, "series.2.points.1.count", 10);
    /* Of ten values the p99 is the 9th or 10th, by the sketch's rank rule. */
    assert_true(json_real_value(get(j, "series.2.points.1.p99")) > 0.09 * 0.98);
    assert_true(json_real_value(get(j, "series.2.points.1.p99")) < 0.1 * 1.02);
    json_decref(j);
}

static void test_json_edge_cases(void **state)
{
    struct fb *b = *state;
    Strata__V1__Sketch empty;
    Strata__V1__Sketch *ep = &empty;
    json_t *j = NULL;

    sketch(&empty, 1, 0);
    b->s[2].sketches = &ep, b->s[2].n_sketches = 1;
    b->v1[0] = NAN;
    b->f.seq = UINT64_MAX;
    b->agent.role = (Strata__V1__Role)17;
    assert_int_equal(st_frame_to_json(&b->f, &j), ST_OK);
    int_is(j, "series.2.points.0.count", 0);
    assert_true(json_is_null(get(j, "series.2.points.0.p50")));
    assert_true(json_is_null(get(j, "series.2.points.0.min")));
    assert_true(json_is_null(get(j, "series.1.points.0.value")));
    str_is(j, "seq", "18446744073709551615");
    str_is(j, "agent.role", "unknown");
    json_decref(j);
    j = NULL;
    b->s[0].name = "bad\xff";
    assert_int_equal(st_frame_to_json(&b->f, &j), ST_EINVAL);
    assert_null(j);
    st_sketch_proto_clear(&empty);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_valid),
        T(test_round_trip),
        T(test_through_envelope),
        T(test_decode_garbage),
        T(test_decode_embedded_nul),
        T(test_decode_nul_outside_strings),
        T(test_free_built_frame),
        T(test_decode_bad_utf8),
        T(test_decode_budget),
        T(test_decode_budget_dense_valid),
        T(test_encode_toobig),
        T(test_agent_mismatch),
        T(test_too_many_series),
        T(test_too_many_labels),
        T(test_duplicate_label),
        T(test_name_lengths),
        T(test_value_lengths),
        T(test_bad_utf8),
        T(test_detail_sanitised),
        T(test_non_finite),
        T(test_time_skew),
        T(test_columns),
        T(test_min_max_columns),
        T(test_point_limits),
        T(test_kind_layer_role),
        T(test_bad_sketch),
        T(test_series_values),
        T(test_json_top),
        T(test_json_counter_gauge),
        T(test_json_distribution),
        T(test_json_edge_cases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
