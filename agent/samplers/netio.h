/* Blocking-style socket I/O on non-blocking sockets, each call bounded by a
 * monotonic deadline (st_time_mono_ms), for the samplers that talk to a
 * server (redis, memcached), the connect probe and discovery. One deadline
 * can span connect, send and receive, so a run costs at most one timeout.
 *
 * Every call borrows its arguments and keeps none. Out-parameters are last
 * and written only on success. Failures are logged as "<name>: <what>: <why>"
 * under who->module, as each caller logged them before; who may be NULL to
 * log nothing (discovery, where most candidates are expected to fail). */
#ifndef ST_NETIO_H
#define ST_NETIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The caller in log lines. Both strings must outlive the call; module is
 * kept by the rate limiter (log.h), so it must be a string literal. */
typedef struct st_net_who {
    const char *module; /* "redis" */
    const char *name;   /* the server as configured: its address or socket */
} st_net_who;

/* Splits "host:port", "1.2.3.4:port" or "[v6]:port" (brackets dropped) into
 * host (hcap bytes) and port (pcap bytes), both NUL-terminated. The port
 * must be 1 to 65535 in decimal. ST_EINVAL when a is none of these forms,
 * the host is empty, IPv6 lacks brackets, or a part does not fit. */
int st_net_split_address(const char *a, char *host, size_t hcap, char *port, size_t pcap);

/* Waits until fd is ready for events (POLLIN, POLLOUT) or deadline_ms
 * passes, restarting after signals. ST_OK also for errors and hang-ups on
 * fd: they surface in the next send, recv or st_net_connect_result.
 * ST_ETIMEOUT past the deadline; ST_EIO when poll fails. Never logs. */
int st_net_wait(int fd, short events, int64_t deadline_ms);

/* A new non-blocking, close-on-exec stream socket of family into *fd; the
 * caller closes it. ST_ENET (logged) when none can be made. */
int st_net_socket(int family, const st_net_who *who, int *fd);

/* Starts connecting fd (from st_net_socket) to sa. ST_OK when connected at
 * once (loopback may); ST_EAGAIN while in progress: wait for POLLOUT, then
 * read the outcome with st_net_connect_result; ST_ENET (logged) when
 * refused at once. fd stays the caller's in every case. Pass who NULL to
 * keep refusals out of the log where they are the expected answer. */
int st_net_connect_start(int fd, const struct sockaddr *sa, socklen_t salen, const st_net_who *who);

/* The outcome of a connect that poll reported ready: ST_OK, or ST_ENET
 * (logged with the socket's error). */
int st_net_connect_result(int fd, const st_net_who *who);

/* Connects a new socket to sa before deadline_ms: st_net_socket,
 * st_net_connect_start, st_net_wait and st_net_connect_result together.
 * *fd is the caller's to close. ST_ENET (logged) when refused or no socket
 * can be made; ST_ETIMEOUT (logged as "connect: timed out") past the
 * deadline; ST_EIO when poll fails (logged the same). */
int st_net_connect_addr(const struct sockaddr *sa, socklen_t salen, const st_net_who *who,
                        int64_t deadline_ms, int *fd);

/* Connects to the unix socket unix_path when it is not NULL (host and port
 * are then ignored), else to host:port (a numeric port), trying each
 * address getaddrinfo returns in its order (RFC 6724) under the one
 * deadline until one connects. Errors as st_net_connect_addr gives them for
 * the last address tried; also ST_ENET (logged) when host does not resolve
 * and ST_EINVAL (logged) when unix_path does not fit a sockaddr_un. */
int st_net_connect(const char *host, const char *port, const char *unix_path, const st_net_who *who,
                   int64_t deadline_ms, int *fd);

/* Sends all n bytes at p before deadline_ms; MSG_NOSIGNAL, so a peer that
 * hung up is ST_ENET rather than SIGPIPE. ST_ENET (logged) on a send
 * error; ST_ETIMEOUT or ST_EIO (not logged) from waiting. A timeout may
 * leave part of p sent: the caller drops the connection. */
int st_net_send_all(int fd, const void *p, size_t n, const st_net_who *who, int64_t deadline_ms);

/* Receives what has arrived, waiting for it until deadline_ms: at least one
 * and at most cap (> 0) bytes into buf, their count in *got. ST_ECLOSED
 * (logged) when the peer hung up; ST_ENET (logged) on a recv error;
 * ST_ETIMEOUT or ST_EIO (not logged) from waiting. */
int st_net_recv(int fd, void *buf, size_t cap, const st_net_who *who, int64_t deadline_ms,
                size_t *got);

#endif
