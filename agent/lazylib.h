/* libcurl and libpq, loaded on first use instead of at start.
 *
 * Debian's libcurl and libpq bring a tree of some thirty libraries
 * (OpenSSL, GnuTLS through LDAP and RTMP, Kerberos, SSH, HTTP/2, ...):
 * mapping and relocating them adds about 4 MB to the RSS of every agent,
 * 8 MB once libcurl has initialised OpenSSL, although only the nginx
 * sampler and nginx discovery use libcurl and only the postgres sampler and
 * action use libpq. So the agent does not link them: the first user calls
 * st_curl_load() or st_pq_load(), which dlopen the library once for the
 * process's lifetime and fill a table of its functions.
 *
 * A file that calls libcurl or libpq includes this header after
 * <curl/curl.h> / <libpq-fe.h> are pulled in here, and its calls go
 * through the table by the renaming macros at the end; the prototypes come
 * from the libraries' own headers (typeof), so the compiler checks every
 * call as before. */
#ifndef ST_LAZYLIB_H
#define ST_LAZYLIB_H

#include <stdbool.h>
#include <stddef.h>

/* The table's entries need real function declarations, not curl's
 * type-checking macros. */
#define CURL_DISABLE_TYPECHECK 1
#include <curl/curl.h>
#include <libpq-fe.h>

/* The runtime sonames of the libraries the development headers describe. */
#define ST_CURL_SONAME "libcurl.so.4"
#define ST_PQ_SONAME "libpq.so.5"
/* Room for a load error: the soname, dlerror's text, a prefix. */
#define ST_LAZY_ERR_MAX 320

#define ST_CURL_FUNCS(X)   \
    X(curl_global_init)    \
    X(curl_global_cleanup) \
    X(curl_easy_init)      \
    X(curl_easy_setopt)    \
    X(curl_easy_perform)   \
    X(curl_easy_getinfo)   \
    X(curl_easy_cleanup)   \
    X(curl_easy_strerror)

#define ST_PQ_FUNCS(X)      \
    X(PQconnectdbParams)    \
    X(PQconninfoParse)      \
    X(PQconninfoFree)       \
    X(PQstatus)             \
    X(PQerrorMessage)       \
    X(PQfinish)             \
    X(PQsocket)             \
    X(PQhost)               \
    X(PQport)               \
    X(PQdb)                 \
    X(PQserverVersion)      \
    X(PQsetNoticeProcessor) \
    X(PQsendQuery)          \
    X(PQsendQueryParams)    \
    X(PQconsumeInput)       \
    X(PQisBusy)             \
    X(PQgetResult)          \
    X(PQresultStatus)       \
    X(PQresultErrorMessage) \
    X(PQresultErrorField)   \
    X(PQcmdStatus)          \
    X(PQntuples)            \
    X(PQnfields)            \
    X(PQgetvalue)           \
    X(PQgetlength)          \
    X(PQgetisnull)          \
    X(PQclear)              \
    X(PQfreemem)            \
    X(PQgetCancel)          \
    X(PQcancel)             \
    X(PQfreeCancel)

#define ST_LAZY_MEMBER(f) __typeof__(f) *f;
struct st_curl_api {
    ST_CURL_FUNCS(ST_LAZY_MEMBER)
};
struct st_pq_api {
    ST_PQ_FUNCS(ST_LAZY_MEMBER)
};
#undef ST_LAZY_MEMBER

extern struct st_curl_api st_curl;
extern struct st_pq_api st_pq;

/* Of the results of one statement, keeps the first failed one, else the
 * last: *keep takes r or r is cleared. */
static inline void st_pq_keep_result(PGresult **keep, PGresult *r)
{
    ExecStatusType st = *keep != NULL ? st_pq.PQresultStatus(*keep) : PGRES_COMMAND_OK;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        st_pq.PQclear(*keep);
        *keep = r;
    } else {
        st_pq.PQclear(r);
    }
}

/* Loads the library once (thread-safe; later calls return the first
 * outcome). ST_OK, or ST_EUNSUPPORTED with why in err ("libpq.so.5: cannot open
 * shared object file ..."). st_curl_load also runs curl_global_init once,
 * under the once-guard. Other agent threads exist by then, but none calls
 * libcurl: every libcurl call is on the schedule's thread (and Debian's
 * libcurl 7.88 initialises thread-safely besides). */
int st_curl_load(char *err, size_t errlen);
int st_pq_load(char *err, size_t errlen);

/* Tells OpenSSL, before anything else initialises it, not to load the
 * error string tables of libcrypto and libssl, which curl_global_init and
 * libpq would otherwise have it build: some 0.7 MB of RSS once libcurl or
 * libpq is in, for text only an OpenSSL error would show. Once skipped,
 * OpenSSL ignores later requests. The price: such an error in a log line
 * shows its code without the text ("error:0A000086::..."); `openssl errstr
 * 0A000086` gives it. Certificate problems keep their text (libcurl takes it
 * from X509_verify_cert_error_string). The system's openssl.cnf is still
 * read. Call from main before any thread exists; the libssl part runs when
 * libcurl or libpq loads libssl. */
void st_openssl_lean_init(void);

/* Whether a connection to dsn (a conninfo string or URI, NULL for none)
 * should be opened with gssencmode=disable ahead of the dsn, so that the
 * dsn can still choose otherwise. libpq's default, prefer, looks for
 * Kerberos credentials before every connection, which initialises the
 * Kerberos libraries: about 0.7 MB of RSS, for an encryption that needs a
 * Kerberos setup few PostgreSQL servers have. So false only when the user
 * chose: gssencmode or a service (whose file may set it) in dsn, or
 * PGGSSENCMODE or PGSERVICE in the environment. Needs st_pq_load. */
bool st_pq_gssenc_off(const char *dsn);

/* Connects to dsn (NULL: libpq's defaults) as application app, with
 * gssencmode=disable ahead of it when st_pq_gssenc_off says so, the
 * connect timeout rounded up to whole seconds and UTF-8 as the client
 * encoding (after the dsn, so it always wins). NULL only when out of
 * memory; otherwise check PQstatus. Needs st_pq_load. */
PGconn *st_pq_connect(const char *dsn, int64_t connect_timeout_ms, const char *app);

#ifndef ST_LAZYLIB_IMPL
#define curl_global_init (st_curl.curl_global_init)
#define curl_global_cleanup (st_curl.curl_global_cleanup)
#define curl_easy_init (st_curl.curl_easy_init)
/* curl.h wraps these two in macros that only count the arguments. */
#undef curl_easy_setopt
#undef curl_easy_getinfo
#define curl_easy_setopt (st_curl.curl_easy_setopt)
#define curl_easy_perform (st_curl.curl_easy_perform)
#define curl_easy_getinfo (st_curl.curl_easy_getinfo)
#define curl_easy_cleanup (st_curl.curl_easy_cleanup)
#define curl_easy_strerror (st_curl.curl_easy_strerror)
#define PQconnectdbParams (st_pq.PQconnectdbParams)
#define PQconninfoParse (st_pq.PQconninfoParse)
#define PQconninfoFree (st_pq.PQconninfoFree)
#define PQstatus (st_pq.PQstatus)
#define PQerrorMessage (st_pq.PQerrorMessage)
#define PQfinish (st_pq.PQfinish)
#define PQsocket (st_pq.PQsocket)
#define PQhost (st_pq.PQhost)
#define PQport (st_pq.PQport)
#define PQdb (st_pq.PQdb)
#define PQserverVersion (st_pq.PQserverVersion)
#define PQsetNoticeProcessor (st_pq.PQsetNoticeProcessor)
#define PQsendQuery (st_pq.PQsendQuery)
#define PQsendQueryParams (st_pq.PQsendQueryParams)
#define PQconsumeInput (st_pq.PQconsumeInput)
#define PQisBusy (st_pq.PQisBusy)
#define PQgetResult (st_pq.PQgetResult)
#define PQresultStatus (st_pq.PQresultStatus)
#define PQresultErrorMessage (st_pq.PQresultErrorMessage)
#define PQresultErrorField (st_pq.PQresultErrorField)
#define PQcmdStatus (st_pq.PQcmdStatus)
#define PQntuples (st_pq.PQntuples)
#define PQnfields (st_pq.PQnfields)
#define PQgetvalue (st_pq.PQgetvalue)
#define PQgetlength (st_pq.PQgetlength)
#define PQgetisnull (st_pq.PQgetisnull)
#define PQclear (st_pq.PQclear)
#define PQfreemem (st_pq.PQfreemem)
#define PQgetCancel (st_pq.PQgetCancel)
#define PQcancel (st_pq.PQcancel)
#define PQfreeCancel (st_pq.PQfreeCancel)
#endif

#endif
