/* Loading libcurl and libpq on first use: see lazylib.h for why. */
#define ST_LAZYLIB_IMPL 1
#include "lazylib.h"

#include "err.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>

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

/* dlopen, then every symbol; on failure the error names the library and
 * the missing piece. The handle is never closed: the functions stay in
 * use until the process ends. */
static void *open_lib(struct lazy *l, const char *soname)
{
    void *h = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        snprintf(l->err, sizeof(l->err), "%s", dlerror());
        l->rv = ST_EUNSUPPORTED;
    }
    return h;
}

static bool find_sym(struct lazy *l, void *h, const char *soname, const char *name, void **slot)
{
    if (l->rv != ST_OK) {
        return false;
    }
    if ((*slot = dlsym(h, name)) == NULL) {
        snprintf(l->err, sizeof(l->err), "%s has no %s", soname, name);
        l->rv = ST_EUNSUPPORTED;
        return false;
    }
    return true;
}

static void load_curl(void)
{
    void *h = open_lib(&curl_lazy, ST_CURL_SONAME);
    if (h == NULL) {
        return;
    }
#define ST_LAZY_SYM(f) find_sym(&curl_lazy, h, ST_CURL_SONAME, #f, (void **)&st_curl.f);
    ST_CURL_FUNCS(ST_LAZY_SYM)
#undef ST_LAZY_SYM
    if (curl_lazy.rv == ST_OK && st_curl.curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(curl_lazy.err, sizeof(curl_lazy.err), "curl_global_init failed");
        curl_lazy.rv = ST_EUNSUPPORTED;
    }
}

static void load_pq(void)
{
    void *h = open_lib(&pq_lazy, ST_PQ_SONAME);
    if (h == NULL) {
        return;
    }
#define ST_LAZY_SYM(f) find_sym(&pq_lazy, h, ST_PQ_SONAME, #f, (void **)&st_pq.f);
    ST_PQ_FUNCS(ST_LAZY_SYM)
#undef ST_LAZY_SYM
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
