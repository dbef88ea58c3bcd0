/* Ingest contexts: one small state machine per nng context
 * (RECV -> check -> WAIT for the writer -> SEND ack -> RECV). */
#include "ingest.h"

#include "envelope.h"
#include "err.h"
#include "frame.h"
#include "keyring.h"
#include "log.h"
#include "timeutil.h"
#include "tls.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/supplemental/tls/tls.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_CONTEXTS 64
#define DEFAULT_FUTURE_MS (5 * 60 * 1000)
#define DEFAULT_AGE_MS (48LL * 3600 * 1000)
#define RETRY_AFTER_MS 1000
#define DRAIN_MS 5000
#define REASON_MAX 256

enum state { S_RECV, S_WAIT, S_SEND, S_IDLE };

struct ictx {
    st_ingest *in;
    nng_ctx ctx;
    nng_aio *aio;
    _Atomic int state;
    st_write_req req;
    st_frame *frame;
    st_buf raw; /* decompressed payload */
    st_zctx *z;
};

struct st_ingest {
    pthread_rwlock_t keys_lock; /* reload swaps keys under the write lock */
    st_keyring *keys;
    nng_socket sock;
    nng_listener listener;
    nng_tls_config *tls;
    st_writer *w;
    st_metrics *m;
    struct ictx *ctxs;
    int nctx;
    int64_t max_future_ms;
    int64_t max_age_ms;
    void (*attach)(void *arg, const uint8_t agent_id[16], Strata__V1__Ack *ack);
    void (*release)(Strata__V1__Ack *ack);
    void *attach_arg;
    _Atomic bool closing;
    bool listening;
};

static void send_ack_to(struct ictx *c, const uint8_t *agent, uint64_t seq,
                        Strata__V1__AckStatus status, const char *reason, uint32_t retry_after)
{
    Strata__V1__Ack ack = STRATA__V1__ACK__INIT;
    nng_msg *msg;
    size_t n;
    int rv;
    ack.seq = seq;
    ack.status = status;
    ack.reason = (char *)(reason != NULL ? reason : "");
    ack.retry_after_ms = retry_after;
    ack.codecs = ST_CODECS_ACCEPTED;
    if (agent != NULL && c->in->attach != NULL) {
        c->in->attach(c->in->attach_arg, agent, &ack);
    }
    n = strata__v1__ack__get_packed_size(&ack);
    rv = nng_msg_alloc(&msg, n);
    if (rv == 0) {
        strata__v1__ack__pack(&ack, nng_msg_body(msg));
    }
    if (agent != NULL && c->in->release != NULL) {
        c->in->release(&ack);
    }
    if (rv != 0) {
        /* Without memory the best answer is none: the agent times out and
         * resends. */
        atomic_store(&c->state, S_RECV);
        nng_ctx_recv(c->ctx, c->aio);
        return;
    }
    atomic_store(&c->state, S_SEND);
    nng_aio_set_msg(c->aio, msg);
    nng_ctx_send(c->ctx, c->aio);
}

static void send_ack(struct ictx *c, uint64_t seq, Strata__V1__AckStatus status, const char *reason,
                     uint32_t retry_after)
{
    send_ack_to(c, NULL, seq, status, reason, retry_after);
}

static void reject(struct ictx *c, uint64_t seq, int err, const char *detail)
{
    char reason[REASON_MAX];
    st_metrics_reject(c->in->m, err);
    snprintf(reason, sizeof(reason), "%s%s%s", st_strerror(err), detail ? ": " : "",
             detail ? detail : "");
    ST_DEBUG("ingest", "rejected seq %llu: %s", (unsigned long long)seq, reason);
    send_ack(c, seq, STRATA__V1__ACK_STATUS__REJECTED, reason, 0);
}

/* Called on the writer thread once the frame's batch is committed. */
static void write_done(st_write_req *r)
{
    struct ictx *c = (struct ictx *)((char *)r - offsetof(struct ictx, req));
    uint64_t seq = c->frame->seq;
    uint8_t agent[16];
    memcpy(agent, c->frame->agent_id.data, 16); /* validated: 16 bytes */
    st_frame_free(c->frame);
    c->frame = NULL;
    switch (r->result) {
    case ST_WRITE_APPLIED:
        send_ack_to(c, agent, seq, STRATA__V1__ACK_STATUS__OK, NULL, 0);
        break;
    case ST_WRITE_DUPLICATE:
        send_ack_to(c, agent, seq, STRATA__V1__ACK_STATUS__DUPLICATE, NULL, 0);
        break;
    case ST_WRITE_RETRY:
        send_ack(c, seq, STRATA__V1__ACK_STATUS__RETRY_LATER, "store unavailable", RETRY_AFTER_MS);
        break;
    default:
        reject(c, seq, ST_ESTORE, "the frame could not be stored");
        break;
    }
}

/* Checks and decodes one envelope; on success the frame is handed to the
 * writer and the ack comes later from write_done. */
static void handle(struct ictx *c, nng_msg *msg)
{
    st_ingest *in = c->in;
    const uint8_t *body = nng_msg_body(msg);
    size_t len = nng_msg_len(msg);
    st_envelope env;
    st_frame_limits lim;
    const char *detail = NULL;
    int rv;

    st_metric_add(&in->m->frames_received, 1);
    st_metric_add(&in->m->bytes_received, len);
    if ((rv = st_envelope_open(body, len, &env)) != ST_OK) {
        reject(c, 0, rv, NULL);
        return;
    }
    st_metric_add(&in->m->frames_codec[env.codec], 1); /* open checked < ST_CODEC_COUNT */
    /* Authentication before anything else is learned from the frame. */
    pthread_rwlock_rdlock(&in->keys_lock);
    rv = in->keys != NULL ? st_keyring_verify(in->keys, body, len, &env) : ST_OK;
    pthread_rwlock_unlock(&in->keys_lock);
    if (rv != ST_OK) {
        reject(c, env.seq, rv, NULL);
        return;
    }
    if (st_writer_seen(in->w, env.agent_id, env.seq)) {
        st_metric_add(&in->m->frames_duplicate, 1);
        send_ack(c, env.seq, STRATA__V1__ACK_STATUS__DUPLICATE, NULL, 0);
        return;
    }
    if ((rv = st_envelope_decompress(c->z, &env, &c->raw)) != ST_OK ||
        (rv = st_frame_decode(c->raw.data, c->raw.len, &c->frame)) != ST_OK) {
        reject(c, env.seq, rv, NULL);
        return;
    }
    lim.now_ms = st_time_wall_ms();
    lim.max_future_ms = in->max_future_ms;
    lim.max_age_ms = in->max_age_ms;
    if ((rv = st_frame_validate(c->frame, &env, &lim, &detail)) != ST_OK) {
        st_frame_free(c->frame);
        c->frame = NULL;
        reject(c, env.seq, rv, detail);
        return;
    }
    c->req.frame = c->frame;
    c->req.done = write_done;
    atomic_store(&c->state, S_WAIT);
    if ((rv = st_writer_submit(in->w, &c->req)) != ST_OK) {
        st_frame_free(c->frame);
        c->frame = NULL;
        st_metric_add(&in->m->frames_retry_later, 1);
        send_ack(c, env.seq, STRATA__V1__ACK_STATUS__RETRY_LATER, "collector busy", RETRY_AFTER_MS);
    }
}

static void ctx_cb(void *arg)
{
    struct ictx *c = arg;
    int rv = nng_aio_result(c->aio);
    switch (atomic_load(&c->state)) {
    case S_RECV:
        if (rv != 0) {
            if (rv == NNG_ECLOSED || atomic_load(&c->in->closing)) {
                atomic_store(&c->state, S_IDLE);
                return;
            }
            nng_ctx_recv(c->ctx, c->aio);
            return;
        }
        {
            nng_msg *msg = nng_aio_get_msg(c->aio);
            handle(c, msg);
            nng_msg_free(msg);
        }
        break;
    case S_SEND:
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(c->aio));
        }
        if (atomic_load(&c->in->closing)) {
            atomic_store(&c->state, S_IDLE);
            return;
        }
        atomic_store(&c->state, S_RECV);
        nng_ctx_recv(c->ctx, c->aio);
        break;
    default:
        break;
    }
}

static int map_nng(int rv, const char *what, const char *url)
{
    if (rv == 0) {
        return ST_OK;
    }
    ST_ERROR("ingest", "%s %s: %s", what, url, nng_strerror(rv));
    if (rv == NNG_ENOMEM) {
        return ST_ENOMEM;
    }
    if (rv == NNG_EADDRINUSE || rv == NNG_EADDRINVAL || rv == NNG_ENOTSUP) {
        return ST_EINVAL;
    }
    return ST_ENET;
}

static int setup_tls(st_ingest *in, const struct st_ingest_opts *o)
{
    int rv;
    if (o->tls_cert == NULL) {
        return ST_OK;
    }
    if ((rv = nng_tls_config_alloc(&in->tls, NNG_TLS_MODE_SERVER)) != 0 ||
        (rv = st_tls_own_cert(in->tls, o->tls_cert, o->tls_key)) != 0) {
        return map_nng(rv, "tls certificate", o->tls_cert);
    }
    if (o->tls_ca != NULL) {
        if ((rv = nng_tls_config_ca_file(in->tls, o->tls_ca)) != 0 ||
            (rv = nng_tls_config_auth_mode(in->tls, NNG_TLS_AUTH_MODE_REQUIRED)) != 0) {
            return map_nng(rv, "tls ca", o->tls_ca);
        }
    }
    return map_nng(nng_listener_set_ptr(in->listener, NNG_OPT_TLS_CONFIG, in->tls), "tls config",
                   o->url);
}

static int open_contexts(st_ingest *in)
{
    int rv;
    in->ctxs = calloc((size_t)in->nctx, sizeof(*in->ctxs));
    if (in->ctxs == NULL) {
        return ST_ENOMEM;
    }
    for (int i = 0; i < in->nctx; i++) {
        struct ictx *c = &in->ctxs[i];
        c->in = in;
        st_buf_init(&c->raw, ST_ENV_MAX_PAYLOAD);
        if ((rv = st_zctx_new(&c->z)) != ST_OK) {
            return rv;
        }
        if ((rv = nng_aio_alloc(&c->aio, ctx_cb, c)) != 0 ||
            (rv = nng_ctx_open(&c->ctx, in->sock)) != 0) {
            return map_nng(rv, "context", "");
        }
    }
    return ST_OK;
}

int st_ingest_reload_keys(st_ingest *in, const char *path, char *err, size_t errlen)
{
    st_keyring *kr = NULL;
    st_keyring *old;
    int rv;
    if (path != NULL && (rv = st_keyring_load(path, &kr, err, errlen)) != ST_OK) {
        return rv;
    }
    pthread_rwlock_wrlock(&in->keys_lock);
    old = in->keys;
    in->keys = kr;
    pthread_rwlock_unlock(&in->keys_lock);
    st_keyring_free(old);
    ST_INFO("ingest", "%zu agent keys loaded%s", kr ? st_keyring_size(kr) : 0,
            kr ? "; every frame must be signed" : "");
    return ST_OK;
}

int st_ingest_start(const struct st_ingest_opts *o, st_writer *w, st_metrics *m, st_ingest **out)
{
    st_ingest *in;
    char err[256];
    int rv;
    if (strncmp(o->url, "tls+", 4) == 0 && o->tls_cert == NULL) {
        ST_ERROR("ingest",
                 "%s: tls+tcp:// needs ingest.tls_cert (and tls_ca to require agent "
                 "certificates)",
                 o->url);
        return ST_ECONFIG;
    }
    if (st_url_plain_remote(o->url) && !o->insecure) {
        ST_ERROR("ingest",
                 "%s: plain tcp:// on a non-loopback address; use tls+tcp:// or set "
                 "ingest.insecure: true",
                 o->url);
        return ST_EPERM;
    }
    if ((in = calloc(1, sizeof(*in))) == NULL) {
        return ST_ENOMEM;
    }
    pthread_rwlock_init(&in->keys_lock, NULL);
    if (o->keys_file != NULL &&
        (rv = st_ingest_reload_keys(in, o->keys_file, err, sizeof(err))) != ST_OK) {
        ST_ERROR("ingest", "%s", err);
        pthread_rwlock_destroy(&in->keys_lock);
        free(in);
        return rv;
    }
    in->w = w;
    in->m = m;
    in->nctx = o->contexts > 0 ? o->contexts : DEFAULT_CONTEXTS;
    in->max_future_ms = o->max_future_ms > 0 ? o->max_future_ms : DEFAULT_FUTURE_MS;
    in->max_age_ms = o->max_age_ms > 0 ? o->max_age_ms : DEFAULT_AGE_MS;
    in->attach = o->attach;
    in->release = o->release;
    in->attach_arg = o->attach_arg;
    if ((rv = map_nng(nng_rep0_open(&in->sock), "rep0 open", o->url)) != ST_OK) {
        free(in);
        return rv;
    }
    /* nng 1.5 accepts messages of any size unless told otherwise. */
    nng_socket_set_size(in->sock, NNG_OPT_RECVMAXSZ, ST_INGEST_RECV_MAX);
    if ((rv = map_nng(nng_listener_create(&in->listener, in->sock, o->url), "listener", o->url)) !=
            ST_OK ||
        (rv = setup_tls(in, o)) != ST_OK || (rv = open_contexts(in)) != ST_OK ||
        (rv = map_nng(nng_listener_start(in->listener, 0), "listen", o->url)) != ST_OK) {
        st_ingest_stop(in);
        return rv;
    }
    in->listening = true;
    for (int i = 0; i < in->nctx; i++) {
        atomic_store(&in->ctxs[i].state, S_RECV);
        nng_ctx_recv(in->ctxs[i].ctx, in->ctxs[i].aio);
    }
    ST_INFO("ingest", "listening on %s with %d contexts", o->url, in->nctx);
    *out = in;
    return ST_OK;
}

bool st_ingest_listening(st_ingest *in)
{
    return in != NULL && in->listening && !atomic_load(&in->closing);
}

/* Waits until no context holds a frame inside the writer or an unsent ack. */
static void drain(st_ingest *in)
{
    int64_t deadline = st_time_mono_ms() + DRAIN_MS;
    while (st_time_mono_ms() < deadline) {
        int busy = 0;
        for (int i = 0; i < in->nctx; i++) {
            int s = atomic_load(&in->ctxs[i].state);
            busy += (s == S_WAIT || s == S_SEND);
        }
        if (busy == 0) {
            return;
        }
        st_time_sleep_ms(5);
    }
    ST_WARN("ingest", "stopping with acknowledgements still pending");
}

void st_ingest_stop(st_ingest *in)
{
    if (in == NULL) {
        return;
    }
    atomic_store(&in->closing, true);
    if (in->listening) {
        nng_listener_close(in->listener);
    }
    if (in->ctxs != NULL) {
        drain(in);
    }
    nng_close(in->sock);
    for (int i = 0; in->ctxs != NULL && i < in->nctx; i++) {
        struct ictx *c = &in->ctxs[i];
        if (c->aio != NULL) {
            nng_aio_stop(c->aio);
            nng_aio_free(c->aio);
        }
        st_frame_free(c->frame);
        st_buf_free(&c->raw);
        st_zctx_free(c->z);
    }
    free(in->ctxs);
    if (in->tls != NULL) {
        nng_tls_config_free(in->tls);
    }
    st_keyring_free(in->keys);
    pthread_rwlock_destroy(&in->keys_lock);
    free(in);
}
