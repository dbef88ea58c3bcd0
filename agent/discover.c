/* Discovery (`discover: true`): finds the servers of a web stack on their
 * usual sockets and ports — nginx, varnish, redis, memcached, postgres —
 * and describes each as the options its sampler would be configured with.
 * Probes are cheap and bounded: one short connect (and one small request)
 * per candidate address. */
#include "discover.h"

#include "err.h"
#include "log.h"
#include "samplers/netio.h"
#include "samplers/nginx_log.h"
#include "timeutil.h"
#include "util.h"
#include "lazylib.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define PROBE_TIMEOUT_MS 300
#define REPLY_MAX 512
#define STATUS_MAX 4096
#define LOG_TAIL 8192
#define PROC_SCAN_MAX 65536

const char *const st_discover_redis[] = {"127.0.0.1:6379", "/run/redis/redis-server.sock",
                                         "/var/run/redis/redis.sock", NULL};
const char *const st_discover_memcached[] = {"127.0.0.1:11211", NULL};
const char *const st_discover_postgres[] = {"/var/run/postgresql", "127.0.0.1:5432", NULL};
const char *const st_discover_nginx[] = {
    "http://127.0.0.1/nginx_status",     "http://127.0.0.1/stub_status",
    "http://127.0.0.1/basic_status",     "http://127.0.0.1:8080/nginx_status",
    "http://127.0.0.1:8080/stub_status", NULL};
const char *const st_discover_varnish[] = {"", NULL}; /* "" is the default instance */

/* A connected non-blocking socket to a.b.c.d:port or a unix path; -1 if not.
 * netio gets no who: most candidates are expected not to answer, which is
 * not worth a log line. */
static int dial(const char *addr)
{
    int64_t deadline_ms = st_time_mono_ms() + PROBE_TIMEOUT_MS;
    struct sockaddr_in in;
    char host[64];
    const char *colon = strrchr(addr, ':');
    int64_t port;
    int fd = -1;
    if (addr[0] == '/') {
        return st_net_connect(NULL, NULL, addr, NULL, deadline_ms, &fd) == ST_OK ? fd : -1;
    }
    if (colon == NULL || (size_t)(colon - addr) >= sizeof(host) ||
        st_parse_i64(colon + 1, &port) != ST_OK || port <= 0 || port > 65535) {
        return -1;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    memset(&in, 0, sizeof(in));
    in.sin_family = AF_INET;
    in.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &in.sin_addr) != 1) {
        return -1;
    }
    if (st_net_connect_addr((const struct sockaddr *)&in, sizeof(in), NULL, deadline_ms, &fd) !=
        ST_OK) {
        return -1;
    }
    return fd;
}

/* Sends req and returns whether the reply starts with want. Each wait gets
 * PROBE_TIMEOUT_MS of its own; want is a few bytes, so the waits are few. */
static bool ask(const char *addr, const char *req, const char *want)
{
    char buf[REPLY_MAX];
    size_t got = 0;
    size_t n = 0;
    int fd = dial(addr);
    bool ok = false;
    if (fd < 0) {
        return false;
    }
    if (st_net_send_all(fd, req, strlen(req), NULL, st_time_mono_ms() + PROBE_TIMEOUT_MS) ==
        ST_OK) {
        while (got < strlen(want) &&
               st_net_recv(fd, buf + got, sizeof(buf) - 1 - got, NULL,
                           st_time_mono_ms() + PROBE_TIMEOUT_MS, &n) == ST_OK) {
            got += n;
        }
        ok = got >= strlen(want) && memcmp(buf, want, strlen(want)) == 0;
    }
    close(fd);
    return ok;
}

static int add(struct st_found *out, size_t max, size_t *n, const char *sampler, const char *key,
               const char *yaml)
{
    if (*n >= max) {
        return ST_ETOOBIG;
    }
    snprintf(out[*n].sampler, sizeof(out[*n].sampler), "%s", sampler);
    snprintf(out[*n].key, sizeof(out[*n].key), "%s:%s", sampler, key);
    snprintf(out[*n].yaml, sizeof(out[*n].yaml), "%s", yaml);
    (*n)++;
    return ST_OK;
}

static const char *addr_key(const char *a)
{
    return a[0] == '/' ? "socket" : "address";
}

static void find_redis(const char *const *c, struct st_found *out, size_t max, size_t *n)
{
    char yaml[300];
    for (; *c != NULL; c++) {
        if (ask(*c, "PING\r\n", "+PONG")) {
            snprintf(yaml, sizeof(yaml), "%s: \"%s\"\n", addr_key(*c), *c);
            add(out, max, n, "redis", *c, yaml);
            return;
        }
    }
}

static void find_memcached(const char *const *c, struct st_found *out, size_t max, size_t *n)
{
    char yaml[300];
    for (; *c != NULL; c++) {
        if (ask(*c, "version\r\n", "VERSION ")) {
            snprintf(yaml, sizeof(yaml), "%s: \"%s\"\n", addr_key(*c), *c);
            add(out, max, n, "memcached", *c, yaml);
            return;
        }
    }
}

/* A socket directory with .s.PGSQL.5432, or host:port that accepts. */
static void find_postgres(const char *const *c, struct st_found *out, size_t max, size_t *n)
{
    char yaml[400];
    for (; *c != NULL; c++) {
        char path[300];
        struct stat sb;
        int fd;
        if ((*c)[0] == '/') {
            snprintf(path, sizeof(path), "%s/.s.PGSQL.5432", *c);
            if (stat(path, &sb) != 0 || !S_ISSOCK(sb.st_mode)) {
                continue;
            }
            snprintf(yaml, sizeof(yaml), "dsn: \"host=%s dbname=postgres\"\n", *c);
        } else {
            const char *colon = strrchr(*c, ':');
            if (colon == NULL || (fd = dial(*c)) < 0) {
                continue;
            }
            close(fd);
            snprintf(yaml, sizeof(yaml), "dsn: \"host=%.*s port=%s dbname=postgres\"\n",
                     (int)(colon - *c), *c, colon + 1);
        }
        add(out, max, n, "postgres", *c, yaml);
        return;
    }
}

struct body {
    char buf[STATUS_MAX];
    size_t len;
};

static size_t on_body(char *p, size_t sz, size_t nm, void *arg)
{
    struct body *b = arg;
    size_t n = sz * nm;
    if (n > sizeof(b->buf) - 1 - b->len) {
        return 0; /* too big for a status page */
    }
    memcpy(b->buf + b->len, p, n);
    b->len += n;
    return n;
}

static bool is_stub_status(const char *url)
{
    static atomic_bool said; /* the missing library, once per process */
    char why[ST_LAZY_ERR_MAX];
    CURL *h;
    struct body b = {{0}, 0};
    long code = 0;
    bool ok = false;
    /* Only reached when something answers on an nginx port: an agent with
     * no nginx never loads libcurl. */
    if (st_curl_load(why, sizeof(why)) != ST_OK) {
        if (!atomic_exchange(&said, true)) {
            ST_WARN("agent", "discovery: cannot ask %s for nginx stub_status: %s", url, why);
        }
        return false;
    }
    if ((h = curl_easy_init()) == NULL) {
        return false;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)PROBE_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    if (curl_easy_perform(h) == CURLE_OK &&
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK && code == 200) {
        st_nginx_status st;
        ok = st_nginx_status_parse(b.buf, b.len, &st) == ST_OK;
    }
    curl_easy_cleanup(h);
    return ok;
}

/* True when the last complete line of the log is in Strata's format, so
 * tailing it will not count every line as malformed. */
static bool log_in_our_format(const char *path)
{
    char buf[LOG_TAIL + 1];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    off_t size;
    ssize_t got;
    char *end;
    char *start;
    st_nginx_line line;
    if (fd < 0) {
        return false;
    }
    size = lseek(fd, 0, SEEK_END);
    got = size > 0 ? pread(fd, buf, LOG_TAIL, size > LOG_TAIL ? size - LOG_TAIL : 0) : 0;
    close(fd);
    if (got <= 1) {
        return false;
    }
    buf[got] = '\0';
    if ((end = strrchr(buf, '\n')) == NULL) {
        return false;
    }
    *end = '\0';
    start = strrchr(buf, '\n');
    start = start != NULL ? start + 1 : buf;
    return st_nginx_line_parse(start, (size_t)(end - start), &line) == ST_OK;
}

static void find_nginx(const char *const *c, struct st_found *out, size_t max, size_t *n)
{
    static const char *logs[] = {"/var/log/nginx/access.log", NULL};
    char yaml[600];
    for (; *c != NULL; c++) {
        size_t k;
        if (!is_stub_status(*c)) {
            continue;
        }
        k = (size_t)snprintf(yaml, sizeof(yaml), "status_url: \"%s\"\n", *c);
        for (size_t i = 0; logs[i] != NULL && k < sizeof(yaml); i++) {
            if (log_in_our_format(logs[i])) {
                snprintf(yaml + k, sizeof(yaml) - k, "access_log: \"%s\"\n", logs[i]);
                break;
            }
        }
        add(out, max, n, "nginx", *c, yaml);
        return;
    }
}

/* varnishd keeps its shared memory under /var/lib/varnish/<instance>. */
static void find_varnish(const char *const *c, struct st_found *out, size_t max, size_t *n)
{
    struct stat sb;
    char yaml[300];
    if (stat("/usr/bin/varnishstat", &sb) != 0) {
        return;
    }
    for (; *c != NULL; c++) {
        if ((*c)[0] == '\0') {
            DIR *d = opendir("/var/lib/varnish");
            struct dirent *de;
            bool any = false;
            while (d != NULL && (de = readdir(d)) != NULL && !any) {
                any = de->d_name[0] != '.';
            }
            if (d != NULL) {
                closedir(d);
            }
            if (!any) {
                continue;
            }
            snprintf(yaml, sizeof(yaml), "timeout: 2s\n");
        } else if (stat(*c, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            continue;
        } else {
            snprintf(yaml, sizeof(yaml), "instance: \"%s\"\n", *c);
        }
        add(out, max, n, "varnish", (*c)[0] ? *c : "default", yaml);
        return;
    }
}

int st_discover(const struct st_discover_lists *l, struct st_found *out, size_t max, size_t *n)
{
    *n = 0;
    find_nginx(l->nginx ? l->nginx : st_discover_nginx, out, max, n);
    find_varnish(l->varnish ? l->varnish : st_discover_varnish, out, max, n);
    find_redis(l->redis ? l->redis : st_discover_redis, out, max, n);
    find_memcached(l->memcached ? l->memcached : st_discover_memcached, out, max, n);
    find_postgres(l->postgres ? l->postgres : st_discover_postgres, out, max, n);
    return ST_OK;
}
