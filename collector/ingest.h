/* Ingest: an nng rep0 socket with many async contexts. Each context takes
 * one envelope, checks it (header, CRC, signature, duplicate) before any
 * decompression, then decompresses, decodes and validates the frame, hands
 * it to the writer and acknowledges only after the commit. Bad frames get a
 * REJECTED ack with the reason and are counted; every other agent keeps
 * flowing. The only module besides the agent's sender that touches nng
 * sockets. */
#ifndef ST_INGEST_H
#define ST_INGEST_H

#include <stdbool.h>
#include <stdint.h>

#include "metrics.h"
#include "proto/strata.pb-c.h"
#include "writer.h"

#define ST_INGEST_RECV_MAX (8u << 20) /* NNG_OPT_RECVMAXSZ: larger messages drop the pipe */

struct st_ingest_opts {
    const char *url;       /* tcp://, tls+tcp://, ipc:// */
    int contexts;          /* concurrent receives; 0: 64 */
    int64_t max_future_ms; /* clock skew allowed ahead; 0: 5 min */
    int64_t max_age_ms;    /* oldest point accepted; 0: 48 h */
    const char *tls_cert;  /* PEM with the collector's certificate and key */
    const char *tls_key;
    const char *tls_ca;    /* CA that agent certificates must chain to */
    const char *keys_file; /* agents' HMAC keys; with it every frame must be signed */
    bool insecure;         /* allow plain tcp:// on a non-loopback address */
    /* Adds what waits for an agent (actions) to its OK acks, and frees it
     * after the ack is packed. Optional. */
    void (*attach)(void *arg, const uint8_t agent_id[16], Strata__V1__Ack *ack);
    void (*release)(Strata__V1__Ack *ack);
    void *attach_arg;
};

typedef struct st_ingest st_ingest;

int st_ingest_start(const struct st_ingest_opts *opts, st_writer *w, st_metrics *m,
                    st_ingest **out);
/* Loads the keys file again (SIGHUP); the old keys stay in force when the
 * new file does not load. err says why. */
int st_ingest_reload_keys(st_ingest *in, const char *path, char *err, size_t errlen);

/* True once the listener is up. */
bool st_ingest_listening(st_ingest *in);
/* Stops taking new frames, lets frames already handed to the writer be
 * committed and acknowledged (up to a short deadline), then closes. The
 * writer must still be running when this is called. */
void st_ingest_stop(st_ingest *in);

#endif
