/* Loading libcurl and libpq on first use: see lazylib.h for why. */
#define ST_LAZYLIB_IMPL 1
#include "lazylib.h"

#include "err.h"
#include "memtrim.h"
#include "util.h"

#include <dlfcn.h>
#include <openssl/crypto.h>
#include <openssl/opensslv.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct st_curl_api st_curl;
struct st_pq_api st_pq;

/* The outcome of one library's load, kept for every later caller. */
struct lazy {
    pthread_once_t once;
    int rv;
    char err[256];
};

static struct lazy curl_lazy = {PTHREAD_ONCE_INIT, ST_OK, ""};
static struct lazy pq_lazy = {PTHREAD_ONCE_INIT, ST_OK, ""};

/* A function of a library and where its address goes. */
struct sym {
    const char *name;
    void **slot;
};

#define ST_LAZY_CURL_SYM(f) {#f, (void **)&st_curl.f},
#define ST_LAZY_PQ_SYM(f) {#f, (void **)&st_pq.f},
static const struct sym curl_syms[] = {ST_CURL_FUNCS(ST_LAZY_CURL_SYM)};
static const struct sym pq_syms[] = {ST_PQ_FUNCS(ST_LAZY_PQ_SYM)};

/* dlopen, then every symbol; on failure the error names the library and
 * the missing piece. The handle is never closed: the functions stay in
 * use until the process ends. */
static void open_lib(struct lazy *l, const char *soname, const struct sym *syms, size_t n)
{
    void *h = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        snprintf(l->err, sizeof(l->err), "%s", dlerror());
        l->rv = ST_EUNSUPPORTED;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if ((*syms[i].slot = dlsym(h, syms[i].name)) == NULL) {
            snprintf(l->err, sizeof(l->err), "%s has no %s", soname, syms[i].name);
            l->rv = ST_EUNSUPPORTED;
            return;
        }
    }
}

/* What st_openssl_lean_init skips (see lazylib.h). Only the error strings:
 * the legacy name tables of ciphers and digests (OPENSSL_INIT_NO_ADD_ALL_*)
 * would save 0.4 MB more, but X.509 verification looks a signature's digest
 * up there (without it every chain is "CA signature digest algorithm too
 * weak": nginx_tls_test), and legacy encrypted PEM keys their cipher. */
#define ST_OPENSSL_LEAN OPENSSL_INIT_NO_LOAD_CRYPTO_STRINGS
#define ST_SONAME_STR(v) #v
#define ST_SONAME_VER(v) ST_SONAME_STR(v)
#define ST_LIBSSL_SONAME "libssl.so." ST_SONAME_VER(OPENSSL_SHLIB_VERSION)

void st_openssl_lean_init(void)
{
    (void)OPENSSL_init_crypto(ST_OPENSSL_LEAN, NULL);
}

/* libssl came in with libcurl or libpq (the agent does not link it): the
 * same for its own error strings, before either library initialises it.
 * OPENSSL_init_ssl also loads the system configuration, as theirs would. A
 * libcurl built on another TLS library brings no libssl: nothing to do. */
static void lean_libssl(void)
{
    void *h = dlopen(ST_LIBSSL_SONAME, RTLD_NOW | RTLD_NOLOAD);
    int (*init_ssl)(uint64_t, const OPENSSL_INIT_SETTINGS *);
    if (h == NULL) {
        return;
    }
    *(void **)&init_ssl = dlsym(h, "OPENSSL_init_ssl");
    if (init_ssl != NULL) {
        (void)init_ssl(ST_OPENSSL_LEAN | OPENSSL_INIT_NO_LOAD_SSL_STRINGS, NULL);
    }
    dlclose(h); /* the reference NOLOAD took; libcurl or libpq keeps theirs */
}

static void load_curl(void)
{
    open_lib(&curl_lazy, ST_CURL_SONAME, curl_syms, ST_ARRAY_LEN(curl_syms));
    if (curl_lazy.rv == ST_OK) {
        lean_libssl();
    }
    if (curl_lazy.rv == ST_OK && st_curl.curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(curl_lazy.err, sizeof(curl_lazy.err), "curl_global_init failed");
        curl_lazy.rv = ST_EUNSUPPORTED;
    }
    (void)st_memtrim_auto();
}

static void load_pq(void)
{
    open_lib(&pq_lazy, ST_PQ_SONAME, pq_syms, ST_ARRAY_LEN(pq_syms));
    if (pq_lazy.rv == ST_OK) {
        lean_libssl();
    }
    (void)st_memtrim_auto();
}

static int outcome(const struct lazy *l, const char *what, char *err, size_t errlen)
{
    if (l->rv != ST_OK) {
        if (err != NULL && errlen > 0) {
            snprintf(err, errlen, "%s unavailable: %s", what, l->err);
        }
    }
    return l->rv;
}

int st_curl_load(char *err, size_t errlen)
{
    pthread_once(&curl_lazy.once, load_curl);
    return outcome(&curl_lazy, "libcurl", err, errlen);
}

int st_pq_load(char *err, size_t errlen)
{
    pthread_once(&pq_lazy.once, load_pq);
    return outcome(&pq_lazy, "libpq", err, errlen);
}

bool st_pq_gssenc_off(const char *dsn)
{
    PQconninfoOption *opts;
    bool off = true;
    if (getenv("PGGSSENCMODE") != NULL || getenv("PGSERVICE") != NULL) {
        return false;
    }
    if (dsn == NULL || (opts = st_pq.PQconninfoParse(dsn, NULL)) == NULL) {
        return true; /* an unparsable dsn fails to connect either way */
    }
    for (const PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (o->val != NULL &&
            (strcmp(o->keyword, "gssencmode") == 0 || strcmp(o->keyword, "service") == 0)) {
            off = false;
        }
    }
    st_pq.PQconninfoFree(opts);
    return off;
}

PGconn *st_pq_connect(const char *dsn, int64_t connect_timeout_ms, const char *app)
{
    char timeout[24];
    const char *keys[] = {
        "gssencmode", "dbname", "connect_timeout", "client_encoding", "fallback_application_name",
        NULL};
    const char *vals[] = {"disable", dsn != NULL ? dsn : "", timeout, "UTF8", app, NULL};
    size_t first = st_pq_gssenc_off(dsn) ? 0 : 1;
    snprintf(timeout, sizeof(timeout), "%lld", (long long)((connect_timeout_ms + 999) / 1000));
    /* dbname is expanded as a conninfo string: what it sets wins over the
     * gssencmode before it, the keys after it win over it. */
    return st_pq.PQconnectdbParams(keys + first, vals + first, 1);
}
