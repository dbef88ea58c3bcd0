/* Socket calls under a deadline, shared by the samplers that talk to servers
 * and by discovery, so that connect, send and receive are written (and
 * their errors mapped and logged) in one place. See netio.h. */
#include "netio.h"

#include "err.h"
#include "log.h"
#include "timeutil.h"
#include "util.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

/* Logs "<name>: <what>: <why>" (or "<name>: <what>") unless who is NULL. */
static void warn(const st_net_who *who, const char *what, const char *why)
{
    if (who == NULL) {
        return;
    }
    if (why == NULL) {
        ST_WARN(who->module, "%s: %s", who->name, what);
    } else {
        ST_WARN(who->module, "%s: %s: %s", who->name, what, why);
    }
}

int st_net_split_address(const char *a, char *host, size_t hcap, char *port, size_t pcap)
{
    const char *colon;
    const char *h = a;
    size_t hlen;
    uint64_t pnum;
    if (a[0] == '[') {
        const char *close = strchr(a, ']');
        if (close == NULL || close[1] != ':') {
            return ST_EINVAL;
        }
        h = a + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(a, ':');
        if (colon == NULL || memchr(a, ':', (size_t)(colon - a)) != NULL) {
            return ST_EINVAL; /* no port, or IPv6 without brackets */
        }
        hlen = (size_t)(colon - a);
    }
    if (hlen == 0 || hlen >= hcap || strlen(colon + 1) >= pcap) {
        return ST_EINVAL;
    }
    /* st_parse_u64 also refuses an empty port. */
    if (st_parse_u64(colon + 1, &pnum) != ST_OK || pnum == 0 || pnum > 65535) {
        return ST_EINVAL;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    memcpy(port, colon + 1, strlen(colon + 1) + 1);
    return ST_OK;
}

int st_net_wait(int fd, short events, int64_t deadline_ms)
{
    for (;;) {
        int64_t left = deadline_ms - st_time_mono_ms();
        struct pollfd p = {.fd = fd, .events = events};
        int n;
        if (left <= 0) {
            return ST_ETIMEOUT;
        }
        n = poll(&p, 1, (int)left);
        if (n > 0) {
            return ST_OK; /* errors and hang-ups surface in the next call */
        }
        if (n == 0) {
            return ST_ETIMEOUT;
        }
        if (errno != EINTR) {
            return ST_EIO;
        }
    }
}

int st_net_socket(int family, const st_net_who *who, int *fd)
{
    int s = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0) {
        warn(who, "socket", strerror(errno));
        return ST_ENET;
    }
    *fd = s;
    return ST_OK;
}

int st_net_connect_start(int fd, const struct sockaddr *sa, socklen_t salen, const st_net_who *who)
{
    if (connect(fd, sa, salen) == 0) {
        return ST_OK;
    }
    if (errno == EINPROGRESS) {
        return ST_EAGAIN;
    }
    warn(who, "connect", strerror(errno));
    return ST_ENET;
}

int st_net_connect_result(int fd, const st_net_who *who)
{
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0) {
        soerr = errno;
    }
    if (soerr != 0) {
        warn(who, "connect", strerror(soerr));
        return ST_ENET;
    }
    return ST_OK;
}

int st_net_connect_addr(const struct sockaddr *sa, socklen_t salen, const st_net_who *who,
                        int64_t deadline_ms, int *fd)
{
    int s = -1;
    int rv = st_net_socket(sa->sa_family, who, &s);
    if (rv != ST_OK) {
        return rv;
    }
    rv = st_net_connect_start(s, sa, salen, who);
    if (rv == ST_EAGAIN) {
        if ((rv = st_net_wait(s, POLLOUT, deadline_ms)) != ST_OK) {
            warn(who, "connect", "timed out");
        } else {
            rv = st_net_connect_result(s, who);
        }
    }
    if (rv != ST_OK) {
        close(s);
        return rv;
    }
    *fd = s;
    return ST_OK;
}

static int connect_tcp(const char *host, const char *port, const st_net_who *who,
                       int64_t deadline_ms, int *fd)
{
    struct addrinfo hints;
    struct addrinfo *res = NULL;
    int s = -1;
    int rv = ST_ENET;
    int r;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    if ((r = getaddrinfo(host, port, &hints, &res)) != 0) {
        warn(who, "cannot resolve", gai_strerror(r));
        return ST_ENET;
    }
    /* The next address is worth a try after a refusal, not after the
     * deadline: that is the whole run's. */
    for (const struct addrinfo *a = res; a != NULL && s < 0 && rv != ST_ETIMEOUT; a = a->ai_next) {
        rv = st_net_connect_addr(a->ai_addr, a->ai_addrlen, who, deadline_ms, &s);
    }
    freeaddrinfo(res);
    if (rv == ST_OK) {
        *fd = s;
    }
    return rv;
}

static int connect_unix(const char *path, const st_net_who *who, int64_t deadline_ms, int *fd)
{
    struct sockaddr_un sun;
    size_t len = strlen(path);
    if (len >= sizeof(sun.sun_path)) {
        warn(who, "connect", "socket path too long");
        return ST_EINVAL;
    }
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, path, len + 1);
    return st_net_connect_addr((const struct sockaddr *)&sun, sizeof(sun), who, deadline_ms, fd);
}

int st_net_connect(const char *host, const char *port, const char *unix_path, const st_net_who *who,
                   int64_t deadline_ms, int *fd)
{
    if (unix_path != NULL) {
        return connect_unix(unix_path, who, deadline_ms, fd);
    }
    return connect_tcp(host, port, who, deadline_ms, fd);
}

int st_net_send_all(int fd, const void *p, size_t n, const st_net_who *who, int64_t deadline_ms)
{
    const char *b = p;
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        int rv;
        if (w > 0) {
            b += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            warn(who, "send", strerror(errno));
            return ST_ENET;
        }
        if ((rv = st_net_wait(fd, POLLOUT, deadline_ms)) != ST_OK) {
            return rv;
        }
    }
    return ST_OK;
}

int st_net_recv(int fd, void *buf, size_t cap, const st_net_who *who, int64_t deadline_ms,
                size_t *got)
{
    for (;;) {
        ssize_t r = recv(fd, buf, cap, 0);
        int rv;
        if (r > 0) {
            *got = (size_t)r;
            return ST_OK;
        }
        if (r == 0) {
            warn(who, "server closed the connection", NULL);
            return ST_ECLOSED;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            warn(who, "recv", strerror(errno));
            return ST_ENET;
        }
        if ((rv = st_net_wait(fd, POLLIN, deadline_ms)) != ST_OK) {
            return rv;
        }
    }
}
