/* libcurl client for the collector's HTTP API: one easy handle per client,
 * a capped response body parsed with jansson, and the query-string builders
 * that escape every value taken from the command line. */
#include "client.h"

#include "err.h"
#include "format.h"
#include "log.h"
#include "timeutil.h"
#include "util.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

struct st_client {
    CURL *curl;
    char *server;
    char *auth_header; /* "Authorization: Bearer ..." or NULL */
    int64_t timeout_ms;
};

/* Where libcurl writes the body; rv remembers why we stopped it. */
struct sink {
    st_buf body;
    int rv;
};

int st_client_global_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? ST_OK : ST_ENOMEM;
}

void st_client_global_cleanup(void)
{
    curl_global_cleanup();
}

static bool has_control(const char *s)
{
    for (; *s != '\0'; s++) {
        if ((unsigned char)*s < 0x20 || *s == 0x7f) {
            return true;
        }
    }
    return false;
}

/* "host:port" -> "http://host:port"; drops trailing slashes; refuses
 * schemes other than http(s) so a typo cannot read file:// or the like. */
static int normalize_server(const char *in, char **out)
{
    st_buf b;
    const char *s;
    int rv;

    if (in == NULL || in[0] == '\0' || has_control(in) || strchr(in, ' ') != NULL) {
        return ST_EINVAL;
    }
    if (strstr(in, "://") != NULL && strncasecmp(in, "http://", 7) != 0 &&
        strncasecmp(in, "https://", 8) != 0) {
        return ST_EINVAL;
    }
    st_buf_init(&b, ST_CLIENT_URL_MAX);
    rv = strstr(in, "://") == NULL ? st_buf_append_str(&b, "http://") : ST_OK;
    if (rv == ST_OK) {
        rv = st_buf_append_str(&b, in);
    }
    while (rv == ST_OK && b.len > 0 && b.data[b.len - 1] == '/') {
        b.len--;
    }
    if (rv == ST_OK) {
        rv = st_buf_cstr(&b, &s);
    }
    if (rv == ST_OK && (strstr(s, "://") == NULL || strstr(s, "://")[3] == '\0')) {
        rv = ST_EINVAL; /* a scheme and no host ("http://" lost its slashes above) */
    }
    if (rv != ST_OK) {
        st_buf_free(&b);
        return rv;
    }
    *out = (char *)st_buf_steal(&b, NULL);
    return ST_OK;
}

static int make_auth_header(const char *token, char **out)
{
    st_buf b;
    const char *s;
    int rv;

    *out = NULL;
    if (token == NULL || token[0] == '\0') {
        return ST_OK;
    }
    if (has_control(token)) {
        return ST_EINVAL;
    }
    st_buf_init(&b, ST_CLIENT_URL_MAX);
    rv = st_buf_printf(&b, "Authorization: Bearer %s", token);
    if (rv == ST_OK) {
        rv = st_buf_cstr(&b, &s);
    }
    if (rv != ST_OK) {
        st_buf_free(&b);
        return rv;
    }
    *out = (char *)st_buf_steal(&b, NULL);
    return ST_OK;
}

int st_client_open(const st_client_opts *opts, st_client **out)
{
    st_client *c;
    int rv;

    if (opts == NULL || out == NULL || opts->timeout_ms <= 0) {
        return ST_EINVAL;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return ST_ENOMEM;
    }
    c->timeout_ms = opts->timeout_ms;
    rv = normalize_server(opts->server != NULL ? opts->server : ST_CLIENT_DEFAULT_SERVER,
                          &c->server);
    if (rv == ST_OK) {
        rv = make_auth_header(opts->token, &c->auth_header);
    }
    if (rv == ST_OK && (c->curl = curl_easy_init()) == NULL) {
        rv = ST_ENOMEM;
    }
    if (rv != ST_OK) {
        st_client_close(c);
        return rv;
    }
    *out = c;
    return ST_OK;
}

void st_client_close(st_client *c)
{
    if (c == NULL) {
        return;
    }
    if (c->curl != NULL) {
        curl_easy_cleanup(c->curl);
    }
    free(c->server);
    if (c->auth_header != NULL) {
        /* The token should not outlive the client in freed memory. */
        explicit_bzero(c->auth_header, strlen(c->auth_header));
        free(c->auth_header);
    }
    free(c);
}

const char *st_client_server(const st_client *c)
{
    return c != NULL ? c->server : "";
}

void st_response_free(st_response *r)
{
    if (r == NULL) {
        return;
    }
    json_decref(r->json);
    r->json = NULL;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct sink *s = ud;
    size_t len = size * n;
    if ((s->rv = st_buf_append(&s->body, p, len)) != ST_OK) {
        return 0; /* makes libcurl stop with CURLE_WRITE_ERROR */
    }
    return len;
}

/* Copies text into out->error, terminal-safe and cut to 200 columns. */
static void set_error(st_response *out, const char *text)
{
    st_buf clean;
    st_buf cut;
    const char *s = "";

    st_buf_init(&clean, ST_CLIENT_BODY_MAX);
    st_buf_init(&cut, ST_CLIENT_ERROR_LEN - 1);
    if (st_fmt_sanitize(text, false, &clean) == ST_OK && st_buf_cstr(&clean, &s) == ST_OK &&
        st_fmt_truncate(s, 200, &cut) == ST_OK && st_buf_cstr(&cut, &s) == ST_OK) {
        snprintf(out->error, sizeof(out->error), "%s", s);
    } else {
        snprintf(out->error, sizeof(out->error), "(unprintable error text)");
    }
    st_buf_free(&clean);
    st_buf_free(&cut);
}

static int map_curl_error(CURLcode cc, const struct sink *sink, const char *detail,
                          st_response *out)
{
    ST_DEBUG("cli", "libcurl error %d: %s", (int)cc, detail);
    set_error(out, detail[0] != '\0' ? detail : curl_easy_strerror(cc));
    switch (cc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return ST_ENET;
    case CURLE_OPERATION_TIMEDOUT:
        return ST_ETIMEOUT;
    case CURLE_FILESIZE_EXCEEDED:
        set_error(out, "response body over 64 MiB");
        return ST_ETOOBIG;
    case CURLE_WRITE_ERROR:
        if (sink->rv == ST_ETOOBIG) {
            set_error(out, "response body over 64 MiB");
        }
        return sink->rv != ST_OK ? sink->rv : ST_EIO;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return ST_EINVAL;
    default:
        return ST_ENET;
    }
}

/* Parses the body: a 2xx must be JSON; an error status explains itself
 * with {"error": "..."} or, from a proxy, with whatever text it sent. */
static int parse_body(st_buf *body, st_response *out)
{
    const char *text;
    json_error_t jerr;
    bool ok = out->status >= 200 && out->status < 300;

    if (st_buf_cstr(body, &text) != ST_OK) {
        return ST_ENOMEM;
    }
    out->json = body->len > 0 ? json_loadb(text, body->len, 0, &jerr) : NULL;
    if (ok) {
        if (out->json == NULL) {
            set_error(out, body->len > 0 ? jerr.text : "empty response body");
            return ST_EPARSE;
        }
        return ST_OK;
    }
    const char *msg = json_string_value(json_object_get(out->json, "error"));
    if (msg != NULL) {
        set_error(out, msg);
    } else if (body->len > 0) {
        set_error(out, text);
    } else {
        char s[64];
        snprintf(s, sizeof(s), "HTTP status %ld", out->status);
        set_error(out, s);
    }
    return ST_OK;
}

static void set_options(st_client *c, const char *url, struct curl_slist *headers,
                        struct sink *sink, char *errbuf)
{
    CURL *h = c->curl;
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, sink);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)c->timeout_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "strata/" ST_VERSION);
    /* The cap is enforced while writing; this refuses a declared-too-big
     * body before any of it arrives. */
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)ST_CLIENT_BODY_MAX);
    /* No redirects: following one would hand the bearer token elsewhere. */
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
}

/* Appends one header; on failure frees the whole list (libcurl keeps it). */
static int add_header(struct curl_slist **l, const char *h)
{
    struct curl_slist *n = curl_slist_append(*l, h);
    if (n == NULL) {
        curl_slist_free_all(*l);
        *l = NULL;
        return ST_ENOMEM;
    }
    *l = n;
    return ST_OK;
}

static int build_headers(const st_client *c, bool post, struct curl_slist **out)
{
    struct curl_slist *l = NULL;
    int rv = add_header(&l, "Accept: application/json");
    if (rv == ST_OK && post) {
        rv = add_header(&l, "Content-Type: application/json");
    }
    if (rv == ST_OK && c->auth_header != NULL) {
        rv = add_header(&l, c->auth_header);
    }
    *out = l;
    return rv;
}

static int perform(st_client *c, const char *path, const char *post_body, st_response *out)
{
    st_buf url;
    struct sink sink = {.rv = ST_OK};
    struct curl_slist *headers = NULL;
    char errbuf[CURL_ERROR_SIZE] = "";
    const char *u;
    CURLcode cc;
    int rv;

    st_buf_init(&url, ST_CLIENT_URL_MAX);
    st_buf_init(&sink.body, ST_CLIENT_BODY_MAX);
    rv = st_buf_printf(&url, "%s%s", c->server, path);
    if (rv == ST_OK) {
        rv = st_buf_cstr(&url, &u);
    }
    if (rv == ST_OK) {
        rv = build_headers(c, post_body != NULL, &headers);
    }
    if (rv != ST_OK) {
        set_error(out, st_strerror(rv));
        goto out;
    }
    set_options(c, u, headers, &sink, errbuf);
    if (post_body != NULL) {
        curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, post_body);
        curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(post_body));
    }
    cc = curl_easy_perform(c->curl);
    if (cc != CURLE_OK) {
        rv = map_curl_error(cc, &sink, errbuf, out);
        goto out;
    }
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &out->status);
    rv = parse_body(&sink.body, out);
out:
    curl_slist_free_all(headers);
    st_buf_free(&sink.body);
    st_buf_free(&url);
    return rv;
}

static int check_request(st_client *c, const char *path, st_response *out)
{
    if (out == NULL) {
        return ST_EINVAL;
    }
    memset(out, 0, sizeof(*out));
    if (c == NULL || path == NULL || path[0] != '/') {
        set_error(out, "bad request path");
        return ST_EINVAL;
    }
    return ST_OK;
}

int st_client_get(st_client *c, const char *path, st_response *out)
{
    int rv = check_request(c, path, out);
    return rv != ST_OK ? rv : perform(c, path, NULL, out);
}

int st_client_post(st_client *c, const char *path, const json_t *body, st_response *out)
{
    char *text;
    int rv = check_request(c, path, out);
    if (rv != ST_OK) {
        return rv;
    }
    text = body != NULL ? json_dumps(body, JSON_COMPACT) : strdup("{}");
    if (text == NULL) {
        set_error(out, "cannot encode the request body");
        return ST_ENOMEM;
    }
    rv = perform(c, path, text, out);
    free(text);
    return rv;
}

bool st_client_agg_valid(const char *agg)
{
    static const char *const aggs[] = {"p50", "p90", "p95",   "p99",  "avg",   "min",
                                       "max", "sum", "count", "rate", "ratio", "delta"};
    for (size_t i = 0; agg != NULL && i < sizeof(aggs) / sizeof(aggs[0]); i++) {
        if (strcmp(agg, aggs[i]) == 0) {
            return true;
        }
    }
    return false;
}

/* "2026-11-27T06:00:00Z" or "...:00.123Z" (UTC only) into unix ms. */
static int parse_rfc3339(const char *s, int64_t *out_ms)
{
    struct tm tm;
    const char *p;
    int64_t ms = 0;
    time_t sec;

    memset(&tm, 0, sizeof(tm));
    p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (p == NULL) {
        return ST_EINVAL;
    }
    if (*p == '.') {
        int digits = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, digits++) {
            if (digits < 3) {
                ms = ms * 10 + (*p - '0');
            }
        }
        for (; digits > 0 && digits < 3; digits++) {
            ms *= 10;
        }
        if (digits == 0) {
            return ST_EINVAL;
        }
    }
    if (strcmp(p, "Z") != 0 || (sec = timegm(&tm)) == (time_t)-1) {
        return ST_EINVAL;
    }
    *out_ms = (int64_t)sec * 1000 + ms;
    return ST_OK;
}

static bool all_digits(const char *s)
{
    if (*s == '\0') {
        return false;
    }
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9') {
            return false;
        }
    }
    return true;
}

int st_client_time_param(const char *arg, int64_t now_ms, char *out, size_t len)
{
    int64_t v;
    char dur[32];
    int n;

    if (arg == NULL || out == NULL || len == 0) {
        return ST_EINVAL;
    }
    if (strcmp(arg, "now") == 0) {
        n = snprintf(out, len, "%" PRId64, now_ms);
    } else if (all_digits(arg) && strlen(arg) >= 10) {
        /* Ten or more digits is a timestamp ("90" is a duration, below):
         * seconds up to 11 digits (year 5138), milliseconds past that. */
        if (st_parse_i64(arg, &v) != ST_OK || (v < 100000000000 && v > INT64_MAX / 1000)) {
            return ST_EINVAL;
        }
        n = snprintf(out, len, "%" PRId64, v < 100000000000 ? v * 1000 : v);
    } else if (st_duration_parse(arg[0] == '-' ? arg + 1 : arg, &v) == ST_OK) {
        if (v == 0) {
            return ST_EINVAL;
        }
        st_duration_format(v, dur, sizeof(dur));
        n = snprintf(out, len, "-%s", dur);
    } else if (parse_rfc3339(arg, &v) == ST_OK) {
        n = snprintf(out, len, "%" PRId64, v);
    } else {
        return ST_EINVAL;
    }
    return n > 0 && (size_t)n < len ? ST_OK : ST_EINVAL;
}

/* Appends "&key=value" (or "?key=value" first) with value URL-escaped. */
static int append_param(st_buf *b, const char *key, const char *value, bool *first)
{
    char *esc;
    int rv;

    if (value == NULL) {
        return ST_OK;
    }
    esc = curl_easy_escape(NULL, value, (int)strnlen(value, ST_CLIENT_URL_MAX));
    if (esc == NULL) {
        return ST_ENOMEM;
    }
    rv = st_buf_printf(b, "%c%s=%s", *first ? '?' : '&', key, esc);
    curl_free(esc);
    *first = false;
    return rv;
}

static bool match_valid(const char *m)
{
    const char *eq = m != NULL ? strchr(m, '=') : NULL;
    return eq != NULL && eq != m;
}

int st_client_query_path(const st_query_params *q, st_buf *out)
{
    bool first = true;
    int rv;

    if (q == NULL || out == NULL || q->metric == NULL || q->metric[0] == '\0' ||
        q->n_match > ST_CLIENT_MAX_MATCH || (q->agg != NULL && !st_client_agg_valid(q->agg))) {
        return ST_EINVAL;
    }
    for (size_t i = 0; i < q->n_match; i++) {
        if (!match_valid(q->match[i])) {
            return ST_EINVAL;
        }
    }
    rv = st_buf_append_str(out, "/v1/query");
    if (rv == ST_OK) {
        rv = append_param(out, "metric", q->metric, &first);
    }
    if (rv == ST_OK) {
        rv = append_param(out, "agg", q->agg, &first);
    }
    for (size_t i = 0; i < q->n_match && rv == ST_OK; i++) {
        rv = append_param(out, "match", q->match[i], &first);
    }
    if (rv == ST_OK) {
        rv = append_param(out, "by", q->by, &first);
    }
    if (rv == ST_OK) {
        rv = append_param(out, "from", q->from, &first);
    }
    if (rv == ST_OK) {
        rv = append_param(out, "to", q->to, &first);
    }
    if (rv == ST_OK) {
        rv = append_param(out, "step", q->step, &first);
    }
    if (rv == ST_OK) {
        rv = append_param(out, "top", q->top, &first);
    }
    return rv;
}

int st_client_findings_path(const char *layer, const char *status, int64_t limit, st_buf *out)
{
    bool first = true;
    char num[32];
    int rv;

    if (out == NULL || limit < 0) {
        return ST_EINVAL;
    }
    snprintf(num, sizeof(num), "%" PRId64, limit);
    rv = st_buf_append_str(out, "/v1/findings");
    if (rv == ST_OK) {
        rv = append_param(out, "status", status, &first);
    }
    if (rv == ST_OK) {
        rv = append_param(out, "layer", layer, &first);
    }
    if (rv == ST_OK && limit > 0) {
        rv = append_param(out, "limit", num, &first);
    }
    return rv;
}

int st_client_finding_path(const char *id, const char *action, st_buf *out)
{
    char *esc;
    int rv;

    /* "." and ".." would be folded away by URL normalization. */
    if (id == NULL || id[0] == '\0' || strcmp(id, ".") == 0 || strcmp(id, "..") == 0 ||
        out == NULL) {
        return ST_EINVAL;
    }
    /* Escaping keeps "/" and "?" in an id from changing the route. */
    esc = curl_easy_escape(NULL, id, (int)strnlen(id, ST_CLIENT_URL_MAX));
    if (esc == NULL) {
        return ST_ENOMEM;
    }
    rv = st_buf_printf(out, "/v1/findings/%s%s%s", esc, action != NULL ? "/" : "",
                       action != NULL ? action : "");
    curl_free(esc);
    return rv;
}
