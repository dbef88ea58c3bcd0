/* Sender thread and its nng req0 contexts. See sender.h. */
#include "sender.h"

#include "err.h"
#include "log.h"
#include "timeutil.h"
#include "tls.h"
#include "util.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define ACK_MAX (1u << 20)
/* Every event the sender waits for (a frame spooled, a request done, stop)
 * signals its condition variable, and back-off and the stop deadline are
 * timed waits, so this is only a bound for the unforeseen: waking 4 times
 * a second for nothing cost a host-only agent 17 % of its CPU. */
#define IDLE_WAIT_MS 5000
#define SILENCE_WARN_MS 30000 /* no ack for this long: say so, again every period */

enum slot_state { SLOT_IDLE, SLOT_SENDING, SLOT_RECVING, SLOT_DONE };

struct slot {
    st_sender *s;
    nng_ctx ctx;
    nng_aio *aio;
    enum slot_state state;
    uint64_t seq;
    int err; /* nng error, 0 when ack is set */
    Strata__V1__Ack *ack;
};

struct st_sender {
    struct st_sender_opts o;
    st_spool *spool;
    st_action_fn on_action;
    void *arg;
    nng_socket sock;
    nng_dialer dialer;
    nng_tls_config *tls;
    struct slot slots[ST_SENDER_MAX_INFLIGHT];
    int nslots;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
    int64_t stop_deadline;
    uint64_t cursor;   /* highest seq handed to a slot since the last restart */
    bool restart;      /* resend from the oldest unacked once slots are idle */
    int64_t resume_at; /* monotonic ms; no sends before */
    int64_t backoff_ms;
    int64_t silent_since; /* first failure since the last ack (mono ms) */
    int64_t warned_at;
    struct st_sender_stats st;
};

static void slot_cb(void *arg)
{
    struct slot *sl = arg;
    st_sender *s = sl->s;
    int rv = nng_aio_result(sl->aio);
    if (sl->state == SLOT_SENDING && rv == 0) {
        sl->state = SLOT_RECVING;
        nng_ctx_recv(sl->ctx, sl->aio);
        return;
    }
    if (sl->state == SLOT_SENDING) {
        nng_msg_free(nng_aio_get_msg(sl->aio)); /* not consumed on failure */
    } else if (rv == 0) {
        nng_msg *m = nng_aio_get_msg(sl->aio);
        sl->ack = strata__v1__ack__unpack(NULL, nng_msg_len(m), nng_msg_body(m));
        nng_msg_free(m);
        if (sl->ack == NULL) {
            rv = NNG_EPROTO;
        }
    }
    pthread_mutex_lock(&s->mu);
    sl->err = rv;
    sl->state = SLOT_DONE;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static int64_t jitter(int64_t ms)
{
    uint32_t r = 0;
    (void)!getrandom(&r, sizeof(r), GRND_NONBLOCK);
    /* 50 % .. 150 % spreads a fleet's retries after a collector restart. */
    return ms / 2 + (int64_t)(r % (uint32_t)(ms + 1));
}

static void backoff(st_sender *s, int64_t at_least_ms)
{
    s->backoff_ms = s->backoff_ms == 0 ? s->o.backoff_min_ms : s->backoff_ms * 2;
    if (s->backoff_ms > s->o.backoff_max_ms) {
        s->backoff_ms = s->o.backoff_max_ms;
    }
    s->resume_at = st_time_mono_ms() + ST_MAX(jitter(s->backoff_ms), at_least_ms);
    s->restart = true;
}

/* Applies one finished request (mutex held). */
static void complete(st_sender *s, struct slot *sl)
{
    Strata__V1__Ack *a = sl->ack;
    if (sl->err != 0 || a == NULL || a->seq != sl->seq) {
        int64_t now = st_time_mono_ms();
        s->st.failures++;
        ST_DEBUG("sender", "seq %llu: %s", (unsigned long long)sl->seq,
                 sl->err ? nng_strerror(sl->err) : "ack for another seq");
        /* A refused TLS handshake or a dead collector only shows as
         * silence: say so, without flooding the log. */
        if (s->silent_since == 0) {
            s->silent_since = now;
            s->warned_at = now;
        } else if (now - s->warned_at >= SILENCE_WARN_MS) {
            ST_WARN("sender", "no acknowledgement from %s for %llds (%s); frames stay spooled",
                    s->o.url, (long long)((now - s->silent_since) / 1000),
                    sl->err ? nng_strerror(sl->err) : "bad ack");
            s->warned_at = now;
        }
        backoff(s, 0);
    } else if (a->status == STRATA__V1__ACK_STATUS__RETRY_LATER) {
        s->st.codecs = a->codecs;
        s->st.retry_later++;
        backoff(s, a->retry_after_ms);
    } else {
        if (a->status == STRATA__V1__ACK_STATUS__OK) {
            s->st.acked++;
        } else if (a->status == STRATA__V1__ACK_STATUS__DUPLICATE) {
            s->st.duplicates++;
        } else {
            /* A rejected frame will never be accepted: resending it would
             * block everything behind it. */
            s->st.rejected++;
            ST_WARN("sender", "collector rejected seq %llu: %s", (unsigned long long)sl->seq,
                    a->reason != NULL ? a->reason : "");
        }
        st_spool_ack(s->spool, sl->seq);
        s->st.codecs = a->codecs;
        s->backoff_ms = 0;
        s->silent_since = 0;
        for (size_t i = 0; s->on_action != NULL && i < a->n_actions; i++) {
            s->on_action(s->arg, a->actions[i]);
        }
    }
    strata__v1__ack__free_unpacked(a, NULL);
    sl->ack = NULL;
    sl->state = SLOT_IDLE;
}

/* Hands the next spooled frame to an idle slot (mutex held). Returns false
 * when there is nothing to send now. */
static bool send_next(st_sender *s, struct slot *sl)
{
    struct st_spool_stats ss;
    uint64_t seq;
    uint8_t *data;
    size_t len;
    nng_msg *msg;
    st_spool_stats(s->spool, &ss);
    if (st_spool_peek(s->spool, s->cursor, &seq, &data, &len) != ST_OK) {
        return false;
    }
    if (ss.first_seq != 0 && seq >= ss.first_seq + ST_SENDER_MAX_AHEAD) {
        free(data);
        return false;
    }
    if (nng_msg_alloc(&msg, len) != 0) {
        free(data);
        return false;
    }
    memcpy(nng_msg_body(msg), data, len);
    free(data);
    s->cursor = seq;
    sl->seq = seq;
    sl->state = SLOT_SENDING;
    s->st.sent++;
    nng_aio_set_msg(sl->aio, msg);
    nng_ctx_send(sl->ctx, sl->aio);
    return true;
}

static int busy_slots(const st_sender *s)
{
    int n = 0;
    for (int i = 0; i < s->nslots; i++) {
        n += s->slots[i].state != SLOT_IDLE;
    }
    return n;
}

static bool should_exit(st_sender *s)
{
    struct st_spool_stats ss;
    if (!s->stopping) {
        return false;
    }
    st_spool_stats(s->spool, &ss);
    return busy_slots(s) == 0 && (ss.frames == 0 || st_time_mono_ms() >= s->stop_deadline);
}

static void *sender_main(void *arg)
{
    st_sender *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!should_exit(s)) {
        int64_t now = st_time_mono_ms();
        int64_t wait = IDLE_WAIT_MS;
        struct timespec ts;
        for (int i = 0; i < s->nslots; i++) {
            if (s->slots[i].state == SLOT_DONE) {
                complete(s, &s->slots[i]);
            }
        }
        if (s->restart && busy_slots(s) == 0) {
            s->cursor = 0; /* resend from the oldest unacknowledged frame */
            s->restart = false;
        }
        if (!s->restart && now >= s->resume_at && !(s->stopping && now >= s->stop_deadline)) {
            for (int i = 0; i < s->nslots; i++) {
                if (s->slots[i].state == SLOT_IDLE && !send_next(s, &s->slots[i])) {
                    break;
                }
            }
        } else if (now < s->resume_at) {
            wait = ST_MIN(wait, s->resume_at - now);
        }
        if (s->stopping) {
            if (should_exit(s)) {
                break; /* the last ack just came in: do not wait for a signal */
            }
            wait = ST_MIN(wait, ST_MAX(1, s->stop_deadline - now));
        }
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += wait / 1000;
        ts.tv_nsec += (wait % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static int map_nng(int rv, const char *what, const char *arg)
{
    if (rv == 0) {
        return ST_OK;
    }
    ST_ERROR("sender", "%s %s: %s", what, arg != NULL ? arg : "", nng_strerror(rv));
    return rv == NNG_ENOMEM ? ST_ENOMEM : (rv == NNG_EADDRINVAL ? ST_EINVAL : ST_ENET);
}

static int setup_tls(st_sender *s)
{
    const struct st_sender_opts *o = &s->o;
    int rv;
    if (strncmp(o->url, "tls+", 4) != 0) {
        return ST_OK;
    }
    if ((rv = nng_tls_config_alloc(&s->tls, NNG_TLS_MODE_CLIENT)) != 0) {
        return map_nng(rv, "tls", o->url);
    }
    if (o->tls_ca != NULL && (rv = nng_tls_config_ca_file(s->tls, o->tls_ca)) != 0) {
        return map_nng(rv, "tls ca", o->tls_ca);
    }
    if (o->tls_cert != NULL && (rv = st_tls_own_cert(s->tls, o->tls_cert, o->tls_key)) != 0) {
        return map_nng(rv, "tls cert", o->tls_cert);
    }
    if (o->tls_server_name != NULL &&
        (rv = nng_tls_config_server_name(s->tls, o->tls_server_name)) != 0) {
        return map_nng(rv, "tls server name", o->tls_server_name);
    }
    rv = nng_tls_config_auth_mode(s->tls, o->tls_ca != NULL ? NNG_TLS_AUTH_MODE_REQUIRED
                                                            : NNG_TLS_AUTH_MODE_NONE);
    if (rv == 0) {
        rv = nng_dialer_set_ptr(s->dialer, NNG_OPT_TLS_CONFIG, s->tls);
    }
    return map_nng(rv, "tls config", o->url);
}

static int open_socket(st_sender *s)
{
    int rv;
    if ((rv = nng_req0_open(&s->sock)) != 0) {
        return map_nng(rv, "req0", s->o.url);
    }
    /* Our own timeouts decide when to resend; nng's timer would resend
     * behind our back. */
    nng_socket_set_ms(s->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    nng_socket_set_ms(s->sock, NNG_OPT_RECONNMINT, 100);
    nng_socket_set_ms(s->sock, NNG_OPT_RECONNMAXT, 5000);
    nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ, ACK_MAX);
    if ((rv = nng_dialer_create(&s->dialer, s->sock, s->o.url)) != 0) {
        return map_nng(rv, "dialer", s->o.url);
    }
    if ((rv = setup_tls(s)) != ST_OK) {
        return rv;
    }
    for (int i = 0; i < s->nslots; i++) {
        struct slot *sl = &s->slots[i];
        sl->s = s;
        if ((rv = nng_ctx_open(&sl->ctx, s->sock)) != 0 ||
            (rv = nng_aio_alloc(&sl->aio, slot_cb, sl)) != 0) {
            return map_nng(rv, "context", s->o.url);
        }
        nng_aio_set_timeout(sl->aio, (nng_duration)s->o.timeout_ms);
    }
    /* Non-blocking: a collector that is down now is dialled again in the
     * background while frames wait in the spool. */
    return map_nng(nng_dialer_start(s->dialer, NNG_FLAG_NONBLOCK), "dial", s->o.url);
}

static void teardown(st_sender *s)
{
    nng_close(s->sock);
    for (int i = 0; i < s->nslots; i++) {
        if (s->slots[i].aio != NULL) {
            nng_aio_stop(s->slots[i].aio);
            nng_aio_free(s->slots[i].aio);
        }
        strata__v1__ack__free_unpacked(s->slots[i].ack, NULL);
    }
    if (s->tls != NULL) {
        nng_tls_config_free(s->tls);
    }
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

int st_sender_start(const struct st_sender_opts *opts, st_spool *spool, st_action_fn on_action,
                    void *arg, st_sender **out)
{
    st_sender *s = calloc(1, sizeof(*s));
    pthread_condattr_t ca;
    int rv;
    if (s == NULL) {
        return ST_ENOMEM;
    }
    s->o = *opts;
    s->nslots = opts->max_in_flight > 0 ? opts->max_in_flight : 4;
    s->nslots = ST_MIN(s->nslots, ST_SENDER_MAX_INFLIGHT);
    s->o.timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 5000;
    s->o.backoff_min_ms = opts->backoff_min_ms > 0 ? opts->backoff_min_ms : 200;
    s->o.backoff_max_ms = opts->backoff_max_ms > 0 ? opts->backoff_max_ms : 30000;
    s->spool = spool;
    s->on_action = on_action;
    s->arg = arg;
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    if ((rv = open_socket(s)) != ST_OK) {
        teardown(s);
        return rv;
    }
    if (pthread_create(&s->thread, NULL, sender_main, s) != 0) {
        teardown(s);
        return ST_ENOMEM;
    }
    s->started = true;
    *out = s;
    return ST_OK;
}

void st_sender_kick(st_sender *s)
{
    pthread_mutex_lock(&s->mu);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void st_sender_stats(st_sender *s, struct st_sender_stats *out)
{
    pthread_mutex_lock(&s->mu);
    *out = s->st;
    pthread_mutex_unlock(&s->mu);
}

void st_sender_stop(st_sender *s, int64_t timeout_ms)
{
    if (s == NULL) {
        return;
    }
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    s->stop_deadline = st_time_mono_ms() + timeout_ms;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->started) {
        /* Requests still in flight at the deadline complete with an error
         * once the socket closes; close first so the thread can finish. */
        int64_t hard = s->stop_deadline + 2 * s->o.timeout_ms;
        while (st_time_mono_ms() < hard) {
            bool done;
            pthread_mutex_lock(&s->mu);
            done = should_exit(s);
            pthread_mutex_unlock(&s->mu);
            if (done) {
                break;
            }
            st_time_sleep_ms(10);
        }
        nng_close(s->sock);
        pthread_join(s->thread, NULL);
    }
    teardown(s);
}
