/* The sender: ships spooled envelopes to the collector over nng req0
 * (tcp://, tls+tcp://, ipc://) with several frames in flight, and removes a
 * frame from the spool only after an OK or DUPLICATE ack. On a timeout or a
 * connection error it backs off exponentially with jitter and resends from
 * the oldest unacknowledged frame (the collector deduplicates); RETRY_LATER
 * waits at least retry_after_ms. Never more than ST_SENDER_MAX_AHEAD frames
 * past the oldest unacknowledged one are sent, which keeps every frame
 * within the collector's 64-frame dedup window. The only agent module that
 * touches nng. */
#ifndef ST_SENDER_H
#define ST_SENDER_H

#include <stdint.h>

#include "proto/strata.pb-c.h"
#include "spool.h"

#define ST_SENDER_MAX_INFLIGHT 16
#define ST_SENDER_MAX_AHEAD 32

struct st_sender_opts {
    const char *url;
    int max_in_flight;      /* 1..ST_SENDER_MAX_INFLIGHT; 0: 4 */
    int64_t timeout_ms;     /* per request, send to ack; 0: 5 s */
    int64_t backoff_min_ms; /* 0: 200 ms */
    int64_t backoff_max_ms; /* 0: 30 s */
    const char *tls_ca;     /* verify the collector against this CA */
    const char *tls_cert;   /* client certificate (PEM, may hold the key) */
    const char *tls_key;
    const char *tls_server_name;
};

struct st_sender_stats {
    uint64_t sent;       /* requests sent, resends included */
    uint64_t acked;      /* OK */
    uint64_t duplicates; /* DUPLICATE */
    uint64_t rejected;   /* REJECTED (dropped from the spool, reason logged) */
    uint64_t retry_later;
    uint64_t failures; /* timeouts and transport errors */
    uint32_t codecs;   /* envelope codecs the last ack listed (Ack.codecs); 0 before one */
};

typedef struct st_sender st_sender;

/* Actions that ride on acks are handed to this callback (sender thread). */
typedef void (*st_action_fn)(void *arg, const Strata__V1__Action *a);

int st_sender_start(const struct st_sender_opts *opts, st_spool *spool, st_action_fn on_action,
                    void *arg, st_sender **out);
/* Wakes the sender after an append. */
void st_sender_kick(st_sender *s);
void st_sender_stats(st_sender *s, struct st_sender_stats *out);
/* Waits up to timeout_ms for the spool to drain, then stops. */
void st_sender_stop(st_sender *s, int64_t timeout_ms);

#endif
