/* TLS set-up shared by the agent's sender and the collector's ingest. */
#ifndef ST_TLS_H
#define ST_TLS_H

#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>

/* A PEM file read for TLS (certificate, key, CA bundle) is at most this. */
#define ST_TLS_PEM_MAX (1u << 20)

/* Sets cfg's own certificate and key, from one PEM file holding both
 * (key NULL) or from two. Returns an nng error. */
int st_tls_own_cert(nng_tls_config *cfg, const char *cert, const char *key);

#endif
