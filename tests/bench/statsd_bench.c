/* statsd_bench: lines per second of the statsd sampler's hot path. First
 * parse + aggregate on one core over pre-built datagrams of realistic mixed
 * lines (timers, counters with rates, relative gauges, histograms, sets,
 * 1-4 tags each), then the same lines through the real sampler: a UDP
 * socket on loopback, recvmmsg batches, the listener thread. It prints
 * figures and asserts nothing (benchmarks are not tests).
 *
 *   statsd_bench [--lines N] [--seconds S] [--udp-seconds S] [--udp-rate LINES_PER_S]
 *                [--series N]
 * --udp-rate 0 sends as fast as the sender can (the kernel then drops what
 * the socket buffer cannot hold); the default paces it at 1 M lines/s. */
#include "err.h"
#include "fold.h"
#include "sampler.h"
#include "samplers/samplers.h"
#include "samplers/statsd.h"
#include "samplers/statsd_parse.h"
#include "timeutil.h"
#include "util.h"
#include "bench_util.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DGRAM_MAX 1432 /* what DogStatsD clients send over UDP */
#define LINE_MAX_LEN 256
#define SEND_BATCH 64

struct opts {
    uint64_t lines; /* distinct pre-built lines */
    double seconds; /* parse + aggregate run */
    double udp_seconds;
    double udp_rate; /* lines/s the sender keeps to; 0: as fast as it can */
    uint64_t series; /* distinct functions/channels/components, roughly */
};

struct dgram {
    char *p;
    size_t len;
    size_t lines;
};

struct corpus {
    struct dgram *d;
    size_t n;
    size_t lines;
    size_t bytes;
};

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* One line in the mix of an app host: mostly function timers and counters. */
static int make_line(char *buf, size_t cap, uint64_t series)
{
    static const char *types[] = {"query", "mutation", "action"};
    static const char *results[] = {"ok", "error", "timeout"};
    uint64_t k = rnd() % series;
    switch (rnd() % 10) {
    case 0:
    case 1:
    case 2:
        return snprintf(buf, cap, "app.function.duration:%.3f|ms|#function:fn%llu,type:%s",
                        (double)(rnd() % 500000) / 1000.0, (unsigned long long)k, types[k % 3]);
    case 3:
        return snprintf(buf, cap, "app.function.errors:1|c|#function:fn%llu,type:%s",
                        (unsigned long long)k, types[k % 3]);
    case 4:
        return snprintf(buf, cap, "realtime.updates:%llu|c|@0.5|#channel:ch%llu,result:%s",
                        (unsigned long long)(rnd() % 10 + 1), (unsigned long long)(k % 50),
                        results[k % 3]);
    case 5:
        return snprintf(buf, cap, "realtime.connections:%c1|g|#channel:ch%llu",
                        rnd() % 2 ? '+' : '-', (unsigned long long)(k % 50));
    case 6:
        return snprintf(buf, cap, "frontend.component.render:%.4f|h|#component:C%llu",
                        (double)(rnd() % 40000) / 1e6, (unsigned long long)(k % 200));
    case 7:
        return snprintf(buf, cap, "users.online:u%llu|s", (unsigned long long)(rnd() % 100000));
    case 8:
        return snprintf(buf, cap,
                        "http.server.duration:%llu|ms|@0.1|#route:/api/v1/items/fn%llu,"
                        "status_class:2xx,cache_status:miss",
                        (unsigned long long)(rnd() % 2000), (unsigned long long)(k % 100));
    default:
        return snprintf(buf, cap, "db.pool.in_use:%llu|g|#pool:p%llu",
                        (unsigned long long)(rnd() % 64), (unsigned long long)(k % 8));
    }
}

/* Lines packed into datagrams of at most DGRAM_MAX bytes, \n separated. */
static int build_corpus(const struct opts *o, struct corpus *c)
{
    char line[LINE_MAX_LEN];
    size_t cap = (size_t)(o->lines / 4 + 16);
    struct dgram cur = {NULL, 0, 0};
    memset(c, 0, sizeof(*c));
    if ((c->d = calloc(cap, sizeof(*c->d))) == NULL) {
        return ST_ENOMEM;
    }
    for (uint64_t i = 0; i < o->lines; i++) {
        int n = make_line(line, sizeof(line), o->series);
        if (n <= 0 || (size_t)n >= sizeof(line)) {
            continue;
        }
        if (cur.p != NULL && cur.len + 1 + (size_t)n > DGRAM_MAX) {
            c->d[c->n++] = cur;
            cur = (struct dgram){NULL, 0, 0};
        }
        if (cur.p == NULL && (cur.p = malloc(DGRAM_MAX)) == NULL) {
            return ST_ENOMEM;
        }
        if (cur.len > 0) {
            cur.p[cur.len++] = '\n';
        }
        memcpy(cur.p + cur.len, line, (size_t)n);
        cur.len += (size_t)n;
        cur.lines++;
        c->lines++;
        c->bytes += (size_t)n + 1;
        if (c->n + 1 >= cap) {
            break;
        }
    }
    if (cur.p != NULL) {
        c->d[c->n++] = cur;
    }
    return ST_OK;
}

static void free_corpus(struct corpus *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->d[i].p);
    }
    free(c->d);
}

/* Parse only: the parser's share of the hot path. */
static void bench_parse(const struct corpus *c, double seconds)
{
    st_statsd_line l;
    uint64_t lines = 0;
    uint64_t bad = 0;
    int64_t t0 = st_time_mono_ns();
    int64_t c0 = cpu_ns();
    int64_t t1;
    double cpu;
    do {
        for (size_t i = 0; i < c->n; i++) {
            const char *p = c->d[i].p;
            const char *end = p + c->d[i].len;
            while (p < end) {
                const char *nl = memchr(p, '\n', (size_t)(end - p));
                const char *le = nl != NULL ? nl : end;
                bad += st_statsd_parse(p, (size_t)(le - p), 16, &l, NULL) != ST_OK;
                lines++;
                p = le + 1;
            }
        }
        t1 = st_time_mono_ns();
    } while ((double)(t1 - t0) / 1e9 < seconds);
    cpu = (double)(cpu_ns() - c0);
    printf("parse only:            %.2f M lines/s per CPU second (%.0f ns CPU/line; wall %.2f M "
           "lines/s; %llu lines, %llu refused)\n",
           (double)lines / (cpu / 1e9) / 1e6, cpu / (double)lines,
           (double)lines / ((double)(t1 - t0) / 1e9) / 1e6, (unsigned long long)lines,
           (unsigned long long)bad);
}

/* Parse + aggregate, with a reset every "interval" of 1 M lines as the
 * sampler would swap buffers. */
static void bench_aggregate(const struct corpus *c, double seconds)
{
    st_statsd_limits lim = {65536, 16, 1000000, 42};
    st_statsd_agg *a = NULL;
    st_statsd_stats s;
    uint64_t lines = 0;
    uint64_t bad = 0;
    uint64_t since_reset = 0;
    size_t series = 0;
    int64_t t0;
    int64_t t1;
    int64_t c0;
    double cpu;
    if (st_statsd_agg_new(&lim, &a) != ST_OK) {
        fprintf(stderr, "statsd_bench: out of memory\n");
        exit(1);
    }
    t0 = st_time_mono_ns();
    c0 = cpu_ns();
    do {
        for (size_t i = 0; i < c->n; i++) {
            st_statsd_agg_datagram(a, c->d[i].p, c->d[i].len, false);
            since_reset += c->d[i].lines;
        }
        if (since_reset >= 1000000) {
            st_statsd_agg_stats(a, &s);
            lines += s.received;
            bad += s.malformed + s.dropped;
            series = st_statsd_agg_count(a);
            st_statsd_agg_reset(a);
            since_reset = 0;
        }
        t1 = st_time_mono_ns();
    } while ((double)(t1 - t0) / 1e9 < seconds);
    st_statsd_agg_stats(a, &s);
    lines += s.received;
    bad += s.malformed + s.dropped;
    series = series ? series : st_statsd_agg_count(a);
    cpu = (double)(cpu_ns() - c0);
    printf("parse + aggregate:     %.2f M lines/s per CPU second (%.0f ns CPU/line; wall %.2f M "
           "lines/s; %llu lines, %zu series per interval, %llu refused)   [target >= 1 M "
           "lines/s on one core]\n",
           (double)lines / (cpu / 1e9) / 1e6, cpu / (double)lines,
           (double)lines / ((double)(t1 - t0) / 1e9) / 1e6, (unsigned long long)lines, series,
           (unsigned long long)bad);
    printf("RESULT statsd_agg lines_per_cpu_s=%.0f ns_cpu_per_line=%.1f wall_lines_per_s=%.0f\n",
           (double)lines / (cpu / 1e9), cpu / (double)lines,
           (double)lines / ((double)(t1 - t0) / 1e9));
    st_statsd_agg_free(a);
}

/* ---- through the real socket ---- */

struct sender {
    const struct corpus *c;
    double rate;
    int port;
    atomic_bool stop;
    uint64_t sent_lines;
    uint64_t sent_dgrams;
};

static void *send_main(void *arg)
{
    struct sender *s = arg;
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->port)};
    struct mmsghdr m[SEND_BATCH];
    struct iovec iov[SEND_BATCH];
    size_t next = 0;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&to, sizeof(to)) != 0) {
        return NULL;
    }
    int64_t t0 = st_time_mono_ns();
    while (!atomic_load(&s->stop)) {
        int n;
        /* Paced: never ahead of rate * elapsed. */
        if (s->rate > 0 &&
            (double)s->sent_lines > s->rate * (double)(st_time_mono_ns() - t0) / 1e9) {
            usleep(100);
            continue;
        }
        memset(m, 0, sizeof(m));
        for (int i = 0; i < SEND_BATCH; i++) {
            const struct dgram *d = &s->c->d[(next + (size_t)i) % s->c->n];
            iov[i] = (struct iovec){d->p, d->len};
            m[i].msg_hdr.msg_iov = &iov[i];
            m[i].msg_hdr.msg_iovlen = 1;
        }
        n = sendmmsg(fd, m, SEND_BATCH, 0);
        for (int i = 0; i < n; i++) {
            s->sent_lines += s->c->d[(next + (size_t)i) % s->c->n].lines;
        }
        s->sent_dgrams += n > 0 ? (uint64_t)n : 0;
        next += n > 0 ? (size_t)n : 0;
    }
    close(fd);
    return NULL;
}

/* CPU seconds of this process's thread named name (utime + stime). */
static double thread_cpu_s(const char *name)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *de;
    double s = 0;
    while (d != NULL && (de = readdir(d)) != NULL) {
        char path[300];
        char buf[1024];
        FILE *f;
        const char *p;
        unsigned long ut = 0;
        unsigned long st = 0;
        snprintf(path, sizeof(path), "/proc/self/task/%s/stat", de->d_name);
        if (de->d_name[0] == '.' || (f = fopen(path, "r")) == NULL) {
            continue;
        }
        if (fgets(buf, sizeof(buf), f) != NULL && strstr(buf, name) != NULL &&
            (p = strrchr(buf, ')')) != NULL &&
            sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2) {
            s += (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
        }
        fclose(f);
    }
    if (d != NULL) {
        closedir(d);
    }
    return s;
}

static int sampler_start(st_cfg_doc **doc, void **ctx, st_fold *fold)
{
    static const char yaml[] = "listen: 127.0.0.1:0\nrcvbuf: 32MiB\nbatch: 64\nmax_series: 65536\n";
    st_sampler_env env = {"/proc", "/sys", "/tmp", 1000, false};
    st_cfg_error err;
    int rv;
    if ((rv = st_cfg_load_string("bench", yaml, sizeof(yaml) - 1, doc, &err)) != ST_OK ||
        (rv = st_statsd_init(*doc, st_cfg_root(*doc), &env, ctx, &err)) != ST_OK) {
        fprintf(stderr, "statsd_bench: %s\n", err.msg);
        return rv;
    }
    return st_statsd_sample(*ctx, st_fold_begin(fold, st_time_wall_ms(), 1000));
}

static void bench_udp(const struct corpus *c, double seconds, double rate)
{
    st_cfg_doc *doc = NULL;
    void *ctx = NULL;
    st_fold *fold = NULL;
    st_statsd_stats t0;
    st_statsd_stats t1;
    struct sender s = {c, rate, 0, false, 0, 0};
    pthread_t thr;
    int64_t start;
    int64_t end;
    double cpu0;
    double cpu;
    if (st_fold_new(&fold) != ST_OK || sampler_start(&doc, &ctx, fold) != ST_OK) {
        return;
    }
    s.port = st_statsd_port(ctx);
    st_statsd_totals(ctx, &t0);
    cpu0 = thread_cpu_s("st-statsd");
    start = st_time_mono_ns();
    pthread_create(&thr, NULL, send_main, &s);
    /* The scheduler's part runs meanwhile: one swap + emit per second. */
    while ((double)(st_time_mono_ns() - start) / 1e9 < seconds) {
        st_time_sleep_ms(1000);
        st_statsd_sample(ctx, st_fold_begin(fold, st_time_wall_ms(), 1000));
    }
    atomic_store(&s.stop, true);
    pthread_join(thr, NULL);
    st_time_sleep_ms(200); /* let the listener read what is queued */
    end = st_time_mono_ns();
    st_statsd_totals(ctx, &t1);
    cpu = thread_cpu_s("st-statsd") - cpu0;
    printf("through UDP (loopback, sender %s): %.2f M lines/s received and aggregated by the "
           "listener thread (sender %.2f M lines/s, %.2f%% of sent lines received; the rest the "
           "kernel dropped with the socket buffer full)\n",
           rate > 0 ? "paced" : "unpaced",
           (double)(t1.received - t0.received) / ((double)(end - start) / 1e9) / 1e6,
           (double)s.sent_lines / ((double)(end - start) / 1e9) / 1e6,
           s.sent_lines ? 100.0 * (double)(t1.received - t0.received) / (double)s.sent_lines : 0);
    printf("listener thread:       %.0f%% of one core busy, %.2f M lines per CPU second "
           "(recvmmsg + parse + aggregate)\n",
           100 * cpu / ((double)(end - start) / 1e9),
           cpu > 0 ? (double)(t1.received - t0.received) / cpu / 1e6 : 0);
    printf("RESULT statsd_udp lines_per_s=%.0f sent_lines_per_s=%.0f listener_cpu_pct=%.0f\n",
           (double)(t1.received - t0.received) / ((double)(end - start) / 1e9),
           (double)s.sent_lines / ((double)(end - start) / 1e9),
           100 * cpu / ((double)(end - start) / 1e9));
    st_statsd_fini(ctx);
    st_cfg_doc_free(doc);
    st_fold_free(fold);
}

static void parse_opts(int argc, char **argv, struct opts *o)
{
    static const struct option lo[] = {
        {"lines", required_argument, NULL, 'l'},       {"seconds", required_argument, NULL, 's'},
        {"udp-seconds", required_argument, NULL, 'u'}, {"series", required_argument, NULL, 'n'},
        {"udp-rate", required_argument, NULL, 'r'},    {NULL, 0, NULL, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        double v = 0;
        if (optarg == NULL || st_parse_double(optarg, &v) != ST_OK || v < 0) {
            fprintf(stderr, "usage: statsd_bench [--lines N] [--seconds S] [--udp-seconds S] "
                            "[--udp-rate N] [--series N]\n");
            exit(2);
        }
        switch (ch) {
        case 'l':
            o->lines = (uint64_t)v;
            break;
        case 's':
            o->seconds = v;
            break;
        case 'u':
            o->udp_seconds = v;
            break;
        case 'r':
            o->udp_rate = v;
            break;
        default:
            o->series = v >= 1 ? (uint64_t)v : 1;
            break;
        }
    }
}

int main(int argc, char **argv)
{
    struct opts o = {200000, 3.0, 3.0, 1e6, 1000};
    struct corpus c;
    parse_opts(argc, argv, &o);
    if (build_corpus(&o, &c) != ST_OK) {
        fprintf(stderr, "statsd_bench: out of memory\n");
        return 1;
    }
    printf("== statsd: %zu lines in %zu datagrams (%.1f lines and %.0f bytes per datagram, "
           "%.0f bytes per line), ~%llu series keys\n",
           c.lines, c.n, (double)c.lines / (double)c.n, (double)c.bytes / (double)c.n,
           (double)c.bytes / (double)c.lines, (unsigned long long)o.series);
    bench_parse(&c, o.seconds);
    bench_aggregate(&c, o.seconds);
    if (o.udp_seconds > 0) {
        bench_udp(&c, o.udp_seconds, o.udp_rate);
    }
    free_corpus(&c);
    return 0;
}
