/* TLS set-up shared by the agent's sender and the collector's ingest. */
#include "tls.h"

#include "err.h"
#include "util.h"

#include <stdlib.h>

int st_tls_own_cert(nng_tls_config *cfg, const char *cert, const char *key)
{
    char *c = NULL;
    char *k = NULL;
    int rv;
    if (key == NULL) {
        return nng_tls_config_cert_key_file(cfg, cert, NULL);
    }
    /* nng takes a separate key only from memory. */
    if (st_file_read(cert, ST_TLS_PEM_MAX, &c, NULL) != ST_OK ||
        st_file_read(key, ST_TLS_PEM_MAX, &k, NULL) != ST_OK) {
        free(c);
        return NNG_ENOENT;
    }
    rv = nng_tls_config_own_cert(cfg, c, k, NULL);
    free(c);
    free(k);
    return rv;
}
