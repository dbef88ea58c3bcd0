/* Unit tests for the agent's samplers (host, proc, tcp, probe) and the
 * sampler table: fixture /proc and /sys trees written into a temporary
 * directory, samples folded into a Frame and checked series by series, real
 * sockets on loopback for the probe, and plausibility on the live system. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "config.h"
#include "err.h"
#include "fold.h"
#include "frame.h"
#include "sampler.h"
#include "samplers/samplers.h"
#include "sketch.h"
#include "timeutil.h"
#include "util.h"
#include "tmpdir.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define INTERVAL 1000

/* ---- fixtures ---- */

typedef struct fixture {
    char root[256];
    char proc[300];
    char sys[300];
    st_sampler_env env;
    st_cfg_doc *doc;
    const st_sampler_def *def;
    void *ctx;
    st_fold *fold;
    Strata__V1__Frame *frame;
} fixture;

static void write_file(fixture *fx, const char *rel, const char *data, size_t len)
{
    char path[1024];
    char *slash;
    int fd;
    assert_true(snprintf(path, sizeof(path), "%s/%s", fx->root, rel) < (int)sizeof(path));
    slash = strrchr(path, '/');
    *slash = '\0';
    assert_int_equal(st_mkdir_p(path), ST_OK);
    *slash = '/';
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static void put(fixture *fx, const char *rel, const char *text)
{
    write_file(fx, rel, text, strlen(text));
}

static void unlink_rel(fixture *fx, const char *rel)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", fx->root, rel);
    assert_int_equal(unlink(path), 0);
}

static void rm_rel_tree(fixture *fx, const char *rel)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", fx->root, rel);
    assert_int_equal(st_test_rmtree(path), 0);
}

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    assert_non_null(st_test_mkdtemp(fx->root, sizeof(fx->root), "samplers"));
    snprintf(fx->proc, sizeof(fx->proc), "%s/proc", fx->root);
    snprintf(fx->sys, sizeof(fx->sys), "%s/sys", fx->root);
    assert_int_equal(st_mkdir_p(fx->proc), ST_OK);
    assert_int_equal(st_mkdir_p(fx->sys), ST_OK);
    fx->env.proc_root = fx->proc;
    fx->env.sys_root = fx->sys;
    fx->env.data_dir = fx->root;
    fx->env.interval_ms = INTERVAL;
    assert_int_equal(st_fold_new(&fx->fold), ST_OK);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    if (fx->def != NULL) {
        fx->def->fini(fx->ctx);
    }
    st_cfg_doc_free(fx->doc);
    st_fold_free(fx->fold);
    if (fx->frame != NULL) {
        strata__v1__frame__free_unpacked(fx->frame, NULL); /* fold allocates with malloc */
    }
    st_test_rmtree(fx->root);
    free(fx);
    return 0;
}

/* Parses yaml (NULL: no options) and runs the sampler's init. */
static int start(fixture *fx, const char *name, const char *yaml, st_cfg_error *err)
{
    const st_cfg_node *cfg = NULL;
    fx->def = st_sampler_find(name);
    assert_non_null(fx->def);
    if (yaml != NULL) {
        assert_int_equal(st_cfg_load_string("test.yaml", yaml, strlen(yaml), &fx->doc, err), ST_OK);
        cfg = st_cfg_root(fx->doc);
    }
    fx->ctx = NULL;
    {
        int rv = fx->def->init(fx->doc, cfg, &fx->env, &fx->ctx, err);
        if (rv != ST_OK) {
            fx->def = NULL; /* nothing to fini */
        }
        return rv;
    }
}

/* One run whose samples land in the interval that holds t_ms. */
static int run_at(fixture *fx, int64_t t_ms)
{
    st_emit *e = st_fold_begin(fx->fold, t_ms, INTERVAL);
    assert_non_null(e);
    return fx->def->sample(fx->ctx, e);
}

static void take(fixture *fx)
{
    fx->frame = malloc(sizeof(*fx->frame));
    assert_non_null(fx->frame);
    strata__v1__frame__init(fx->frame);
    assert_int_equal(st_fold_take(fx->fold, INT64_MAX, fx->frame), ST_OK);
}

static const char *label_of(const Strata__V1__Series *s, const char *key)
{
    for (size_t i = 0; i < s->n_labels; i++) {
        if (strcmp(s->labels[i]->key, key) == 0) {
            return s->labels[i]->value;
        }
    }
    return NULL;
}

/* The one Series entry with this name and exactly these labels (k, v, ...,
 * NULL), or NULL when none. Fails on two entries. */
static const Strata__V1__Series *find(fixture *fx, const char *name, ...)
{
    const Strata__V1__Series *hit = NULL;
    for (size_t i = 0; i < fx->frame->n_series; i++) {
        const Strata__V1__Series *s = fx->frame->series[i];
        size_t n = 0;
        bool ok = strcmp(s->name, name) == 0;
        va_list ap;
        va_start(ap, name);
        for (const char *k = va_arg(ap, const char *); ok && k != NULL;
             k = va_arg(ap, const char *)) {
            const char *v = va_arg(ap, const char *);
            const char *have = label_of(s, k);
            ok = have != NULL && strcmp(have, v) == 0;
            n++;
        }
        va_end(ap);
        if (ok && n == s->n_labels) {
            assert_null(hit);
            hit = s;
        }
    }
    return hit;
}

static size_t count_named(fixture *fx, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < fx->frame->n_series; i++) {
        n += strcmp(fx->frame->series[i]->name, name) == 0;
    }
    return n;
}

static void assert_points(const Strata__V1__Series *s, size_t n, const double *want)
{
    assert_non_null(s);
    assert_int_equal(st_series_npoints(s), n);
    for (size_t i = 0; i < n; i++) {
        double v = st_series_value(s, i);
        if (fabs(v - want[i]) > 1e-9 * fmax(1.0, fabs(want[i]))) {
            fail_msg("%s point %zu: %.10g, want %.10g", s->name, i, v, want[i]);
        }
    }
}

#define POINTS(s, ...)                                               \
    do {                                                             \
        const double want_[] = {__VA_ARGS__};                        \
        assert_points((s), sizeof(want_) / sizeof(want_[0]), want_); \
    } while (0)

/* ---- sampler table ---- */

static void test_table(void **state)
{
    (void)state;
    assert_ptr_equal(st_sampler_find("host"), &st_samplers[0]);
    assert_non_null(st_sampler_find("proc"));
    assert_non_null(st_sampler_find("tcp"));
    assert_non_null(st_sampler_find("probe"));
    assert_null(st_sampler_find("nope"));
    assert_null(st_sampler_find(NULL));
    assert_string_equal(st_sampler_tcp.name, "tcp");
    assert_ptr_equal(st_sampler_find("probe")->sample, st_sampler_probe.sample);
    for (const st_sampler_def *d = st_samplers; d->name != NULL; d++) {
        assert_non_null(d->init);
        assert_non_null(d->sample);
        assert_non_null(d->fini);
    }
}

/* ---- host ---- */

static void host_files(fixture *fx, const char *cpu, unsigned avail_kb, unsigned utime,
                       unsigned stime)
{
    char buf[1024];
    snprintf(buf, sizeof(buf), "%s\ncpu0 1 2 3 4 5 6 7 8 9 10\nintr 12345 0 0\nctxt 99\n", cpu);
    put(fx, "proc/stat", buf);
    snprintf(buf, sizeof(buf),
             "MemTotal:       16000 kB\nMemFree:         1000 kB\nMemAvailable:   %u kB\n"
             "Buffers:          100 kB\n",
             avail_kb);
    put(fx, "proc/meminfo", buf);
    /* A command name with spaces and ')' as the kernel writes it. */
    snprintf(buf, sizeof(buf),
             "4242 (strata (a) b) S 1 4242 4242 0 -1 4194560 100 0 0 0 %u %u 0 0 20 0 3 0 "
             "1000 200000000 1250 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n",
             utime, stime);
    put(fx, "proc/self/stat", buf);
    put(fx, "proc/self/status",
        "Name:\tstrata-agent\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t  300000 kB\n"
        "VmHWM:\t    6000 kB\nVmRSS:\t    5000 kB\nRssAnon:\t    3000 kB\n");
}

static void test_host_fixture(void **state)
{
    fixture *fx = *state;
    st_cfg_error err;
    double tck = (double)sysconf(_SC_CLK_TCK);
    /* busy = user+nice+system+irq+softirq+steal; guest (9th, 10th) is
     * already inside user and must not count twice. */
    host_files(fx, "cpu  100 0 100 800 0 0 0 0 50 0", 8000, 200, 100);
    assert_int_equal(start(fx, "host", NULL, &err), ST_OK);
    assert_int_equal(run_at(fx, 1000), ST_OK);
    host_files(fx, "cpu  150 0 140 880 20 5 5 0 70 0", 7000, 300, 150);
    assert_int_equal(run_at(fx, 2000), ST_OK);
    take(fx);

    /* busy 200 -> 300, total 1000 -> 1200 (iowait 20 counts as idle). */
    const Strata__V1__Series *s = find(fx, "host.cpu.utilization", NULL);
    POINTS(s, 0.5);
    assert_int_equal(s->start_unix_ms, 2000);
    assert_int_equal(s->kind, STRATA__V1__KIND__GAUGE);
    assert_int_equal(s->layer, STRATA__V1__LAYER__INFRASTRUCTURE);
    assert_string_equal(s->unit, "ratio");
    assert_int_equal(s->scale, 4);

    s = find(fx, "host.mem.available", NULL);
    POINTS(s, 8000.0 * 1024, 7000.0 * 1024);
    assert_int_equal(s->start_unix_ms, 1000);
    assert_string_equal(s->unit, "B");
    POINTS(find(fx, "host.mem.total", NULL), 16000.0 * 1024, 16000.0 * 1024);

    /* utime+stime 300 -> 450 ticks: the first total only sets the base. */
    s = find(fx, "agent.cpu.seconds", NULL);
    POINTS(s, 150.0 / tck);
    assert_int_equal(s->kind, STRATA__V1__KIND__COUNTER);
    assert_string_equal(s->unit, "s");
    POINTS(find(fx, "agent.rss", NULL), 5000.0 * 1024, 5000.0 * 1024);
    assert_int_equal(fx->frame->n_series, 5);
}

static void test_host_malformed(void **state)
{
    fixture *fx = *state;
    st_cfg_error err;
    host_files(fx, "cpu  100 0 100 800", 8000, 1, 1);
    assert_int_equal(start(fx, "host", NULL, &err), ST_OK);
    assert_int_equal(run_at(fx, 1000), ST_OK);

    put(fx, "proc/stat", "cpu  12 x 4\n");
    assert_int_equal(run_at(fx, 2000), ST_EPARSE);
    put(fx, "proc/stat", "");
    assert_int_equal(run_at(fx, 3000), ST_EPARSE);
    host_files(fx, "cpu  100 0 100 800", 8000, 1, 1);
    put(fx, "proc/meminfo", "MemTotal: 99999999999999999999999 kB\nMemAvailable: 1 kB\n");
    assert_int_equal(run_at(fx, 4000), ST_EPARSE);
    host_files(fx, "cpu  100 0 100 800", 8000, 1, 1);
    put(fx, "proc/self/stat", "4242 (no closing paren S 1 2 3\n");
    assert_int_equal(run_at(fx, 5000), ST_EPARSE);
    unlink_rel(fx, "proc/meminfo");
    assert_int_equal(run_at(fx, 6000), ST_ENOENT);
    host_files(fx, "cpu  100 0 100 800", 8000, 1, 1);
    /* A huge stat: only its head is needed. */
    {
        size_t n = 64 * 1024;
        char *big = malloc(n);
        assert_non_null(big);
        memset(big, 'x', n);
        memcpy(big, "cpu  200 0 200 900\n", 19);
        big[n - 1] = '\n';
        write_file(fx, "proc/stat", big, n);
        free(big);
    }
    assert_int_equal(run_at(fx, 7000), ST_OK);
    take(fx);
    /* 200 / 300 at scale 4. */
    POINTS(find(fx, "host.cpu.utilization", NULL), 0.6667);
}

/* ---- tcp ---- */

/* Columns deliberately out of the kernel's order: they are found by name. */
static void tcp_files(fixture *fx, unsigned retrans, unsigned out, unsigned estab, unsigned drops)
{
    char buf[2048];
    snprintf(buf, sizeof(buf),
             "Ip: Forwarding DefaultTTL InReceives\nIp: 2 64 938\n"
             "Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails "
             "EstabResets CurrEstab InSegs RetransSegs OutSegs InErrs OutRsts\n"
             "Tcp: 1 200 120000 -1 %u 2 %u 4 %u 911 %u %u 0 2\n"
             "Udp: InDatagrams NoPorts\nUdp: 26 0\n",
             10 + retrans, 3 + retrans, estab, retrans, out);
    put(fx, "proc/net/snmp", buf);
    snprintf(buf, sizeof(buf),
             "TcpExt: SyncookiesSent TCPTimeouts ListenOverflows ListenDrops TCPAutoCorking\n"
             "TcpExt: 0 %u %u %u 17\n"
             "IpExt: InNoRoutes InTruncatedPkts\nIpExt: 0 0\n",
             7 * drops, drops / 2, drops);
    put(fx, "proc/net/netstat", buf);
}

static void test_tcp_fixture(void **state)
{
    fixture *fx = *state;
    st_cfg_error err;
    tcp_files(fx, 100, 5000, 12, 10);
    assert_int_equal(start(fx, "tcp", NULL, &err), ST_OK);
    assert_int_equal(run_at(fx, 1000), ST_OK);
    tcp_files(fx, 130, 5600, 9, 14);
    assert_int_equal(run_at(fx, 2000), ST_OK);
    take(fx);

    const Strata__V1__Series *s = find(fx, "tcp.retrans_segs", NULL);
    POINTS(s, 30);
    assert_int_equal(s->kind, STRATA__V1__KIND__COUNTER);
    assert_int_equal(s->layer, STRATA__V1__LAYER__INFRASTRUCTURE);
    assert_int_equal(s->start_unix_ms, 2000);
    POINTS(find(fx, "tcp.out_segs", NULL), 600);
    POINTS(find(fx, "tcp.attempt_fails", NULL), 30);
    POINTS(find(fx, "tcp.active_opens", NULL), 30);
    POINTS(find(fx, "tcp.estab_resets", NULL), 0);
    s = find(fx, "tcp.curr_estab", NULL);
    POINTS(s, 12, 9);
    assert_int_equal(s->kind, STRATA__V1__KIND__GAUGE);
    POINTS(find(fx, "tcp.listen_drops", NULL), 4);
    POINTS(find(fx, "tcp.listen_overflows", NULL), 2);
    POINTS(find(fx, "tcp.timeouts", NULL), 28);
    assert_int_equal(fx->frame->n_series, 9);
}

static void test_tcp_malformed(void **state)
{
    fixture *fx = *state;
    st_cfg_error err;
    char *long_line;
    tcp_files(fx, 1, 1, 1, 1);
    assert_int_equal(start(fx, "tcp", NULL, &err), ST_OK);
    assert_int_equal(run_at(fx, 1000), ST_OK);

    /* More names than values. */
    put(fx, "proc/net/snmp", "Tcp: RetransSegs OutSegs\nTcp: 5\n");
    assert_int_equal(run_at(fx, 2000), ST_EPARSE);
    /* A header without its value line. */
    put(fx, "proc/net/snmp", "Tcp: RetransSegs OutSegs\nUdp: 5 6\n");
    assert_int_equal(run_at(fx, 3000), ST_EPARSE);
    /* Not a number where a counter stands. */
    put(fx, "proc/net/snmp", "Tcp: RetransSegs OutSegs\nTcp: 5 -6\n");
    assert_int_equal(run_at(fx, 4000), ST_EPARSE);
    /* No Tcp section at all. */
    put(fx, "proc/net/snmp", "Udp: InDatagrams\nUdp: 5\n");
    assert_int_equal(run_at(fx, 5000), ST_EPARSE);
    /* A header line over the limit, with its value line. */
    long_line = malloc(40000);
    assert_non_null(long_line);
    memset(long_line, 'A', 40000);
    memcpy(long_line, "Tcp: ", 5);
    memcpy(long_line + 40000 - 9, "\nTcp: 1\n", 9);
    write_file(fx, "proc/net/snmp", long_line, 40000);
    assert_int_equal(run_at(fx, 6000), ST_EPARSE);
    /* A file over the limit. */
    long_line = realloc(long_line, 100000);
    assert_non_null(long_line);
    memset(long_line, '\n', 100000);
    write_file(fx, "proc/net/snmp", long_line, 100000);
    assert_int_equal(run_at(fx, 7000), ST_ETOOBIG);
    free(long_line);
    /* netstat broken, snmp fine: snmp series still come, the error too. */
    tcp_files(fx, 2, 2, 2, 2);
    put(fx, "proc/net/netstat", "TcpExt: ListenDrops\n");
    assert_int_equal(run_at(fx, 8000), ST_EPARSE);
    unlink_rel(fx, "proc/net/netstat");
    assert_int_equal(run_at(fx, 9000), ST_ENOENT);
    take(fx);
    /* Broken snmp runs emit none of its series (not even the columns read
     * before the fault); the netstat ones go on. */
    assert_int_equal(count_named(fx, "tcp.curr_estab"), 2);
    assert_int_equal(count_named(fx, "tcp.retrans_segs"), 1); /* the 9000 run's delta */
    POINTS(find(fx, "tcp.listen_drops", NULL), 0, 0, 0, 0, 0, 0);
}

/* ---- proc ---- */

static void pid_files(fixture *fx, int pid, const char *comm, const char *argv0, unsigned rss,
                      unsigned hwm, unsigned anon, int smaps_anon)
{
    char rel[128];
    char buf[1024];
    size_t n;
    snprintf(rel, sizeof(rel), "proc/%d/comm", pid);
    snprintf(buf, sizeof(buf), "%s\n", comm);
    put(fx, rel, buf);
    snprintf(rel, sizeof(rel), "proc/%d/cmdline", pid);
    n = (size_t)snprintf(buf, sizeof(buf), "%s%c--flag%c", argv0, 0, 0);
    write_file(fx, rel, buf, n);
    snprintf(rel, sizeof(rel), "proc/%d/status", pid);
    snprintf(buf, sizeof(buf),
             "Name:\t%s\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t%d\nGroups:\t4 24 27\n"
             "VmPeak:\t  900000 kB\nVmSize:\t  800000 kB\nVmHWM:\t%8u kB\nVmRSS:\t%8u kB\n"
             "RssAnon:\t%8u kB\nRssFile:\t     100 kB\nThreads:\t1\n",
             comm, pid, hwm, rss, anon);
    put(fx, rel, buf);
    if (smaps_anon >= 0) {
        snprintf(rel, sizeof(rel), "proc/%d/smaps_rollup", pid);
        snprintf(buf, sizeof(buf),
                 "55d0c0000000-7ffc00000000 ---p 00000000 00:00 0  [rollup]\n"
                 "Rss:               %u kB\nPss:               %u kB\nAnonymous:      %u kB\n"
                 "Swap:                  0 kB\n",
                 rss, rss, (unsigned)smaps_anon);
        put(fx, rel, buf);
    }
}

static char *proc_config(fixture *fx)
{
    char *yaml = malloc(1024);
    assert_non_null(yaml);
    snprintf(yaml, 1024,
             "exact_anon: true\n"
             "match:\n"
             "  - name: nginx\n"
             "  - name: my-long-daemon-name\n"
             "    label: daemon\n"
             "  - pidfile: %s/run/postgres.pid\n"
             "  - cgroup: /system.slice/redis.service/\n"
             "    label: redis\n"
             "  - name: absent\n",
             fx->root);
    return yaml;
}

static void test_proc_fixture(void **state)
{
    fixture *fx = *state;
    st_cfg_error err;
    char *yaml = proc_config(fx);
    const double kb = 1024;
    pid_files(fx, 100, "nginx", "/usr/sbin/nginx", 1000, 1500, 400, 500);
    pid_files(fx, 101, "nginx", "nginx: worker process", 2000, 2500, 800, -1);
    /* comm is cut at 15 bytes: this one is found by argv[0]'s basename. */
    pid_files(fx, 200, "my-long-daemon-", "/opt/bin/my-long-daemon-name", 3000, 3100, 300, 310);
    pid_files(fx, 300, "bash", "/bin/bash", 9000, 9000, 9000, 9000);
    pid_files(fx, 400, "postgres", "/usr/lib/postgresql/bin/postgres", 4000, 4400, 40, 44);
    pid_files(fx, 500, "redis-server", "/usr/bin/redis-server", 5000, 5500, 50, 55);
    put(fx, "run/postgres.pid", "400\n");
    put(fx, "sys/fs/cgroup/system.slice/redis.service/memory.current", "123456\n");
    put(fx, "sys/fs/cgroup/system.slice/redis.service/cgroup.procs", "500\n");
    put(fx, "proc/self", "not a pid: skipped by the scan\n");
    assert_int_equal(start(fx, "proc", yaml, &err), ST_OK);
    free(yaml);
    assert_int_equal(run_at(fx, 1000), ST_OK);

    /* Run 2: numbers change, and a third nginx starts. The name cache is
     * younger than 10 s, so it is not seen yet. */
    pid_files(fx, 100, "nginx", "/usr/sbin/nginx", 1100, 1500, 400, 600);
    pid_files(fx, 102, "nginx", "/usr/sbin/nginx", 7000, 7000, 70, 77);
    put(fx, "sys/fs/cgroup/system.slice/redis.service/memory.current", "200000\n");
    assert_int_equal(run_at(fx, 2000), ST_OK);

    /* Run 3: a cached nginx exits, which forces a rescan that finds 102;
     * the pidfile goes stale (its process gone). */
    rm_rel_tree(fx, "proc/101");
    rm_rel_tree(fx, "proc/400");
    assert_int_equal(run_at(fx, 3000), ST_OK);
    take(fx);

    const Strata__V1__Series *s = find(fx, "proc.count", "process", "nginx", NULL);
    POINTS(s, 2, 2, 2);
    s = find(fx, "mem.rss", "process", "nginx", NULL);
    POINTS(s, 3000 * kb, 3100 * kb, 8100 * kb);
    assert_int_equal(s->kind, STRATA__V1__KIND__GAUGE);
    assert_string_equal(s->unit, "B");
    assert_int_equal(s->start_unix_ms, 1000);
    POINTS(find(fx, "mem.rss.peak", "process", "nginx", NULL), 4000 * kb, 4000 * kb, 8500 * kb);
    /* smaps_rollup's Anonymous where readable, RssAnon for 101 without it. */
    POINTS(find(fx, "mem.anon", "process", "nginx", NULL), 1300 * kb, 1400 * kb, 677 * kb);

    POINTS(find(fx, "proc.count", "process", "daemon", NULL), 1, 1, 1);
    POINTS(find(fx, "mem.rss", "process", "daemon", NULL), 3000 * kb, 3000 * kb, 3000 * kb);
    POINTS(find(fx, "mem.anon", "process", "daemon", NULL), 310 * kb, 310 * kb, 310 * kb);

    POINTS(find(fx, "proc.count", "process", "postgres", NULL), 1, 1, 0);
    POINTS(find(fx, "mem.rss", "process", "postgres", NULL), 4000 * kb, 4000 * kb);
    POINTS(find(fx, "mem.rss.peak", "process", "postgres", NULL), 4400 * kb, 4400 * kb);

    s = find(fx, "mem.cgroup.current", "cgroup", "system.slice/redis.service", NULL);
    POINTS(s, 123456, 200000, 200000);
    assert_string_equal(s->unit, "B");
    POINTS(find(fx, "proc.count", "process", "redis", NULL), 1, 1, 1);
    POINTS(find(fx, "mem.rss", "process", "redis", NULL), 5000 * kb, 5000 * kb, 5000 * kb);

    /* A name nothing matches: a count of 0 and no memory series. */
    POINTS(find(fx, "proc.count", "process", "absent", NULL), 0, 0, 0);
    assert_null(find(fx, "mem.rss", "process", "absent", NULL));
    assert_int_equal(count_named(fx, "mem.rss"), 4);
    assert_int_equal(count_named(fx, "mem.cgroup.current"), 1);
}

/* By default mem.anon is RssAnon from status: smaps_rollup is not read
 * even where it exists (its page-table walk is the sampler's main cost). */
static void test_proc_status_anon(void **state)
{
    fixture *fx = *state;
    st_cfg_error err;
    pid_files(fx, 100, "nginx", "/usr/sbin/nginx", 1000, 1500, 400, 500);
    assert_int_equal(start(fx, "proc", "match:\n  - name: nginx\n", &err), ST_OK);
    assert_int_equal(run_at(fx, 1000), ST_OK);
    take(fx);
    POINTS(find(fx, "mem.anon", "process", "nginx", NULL), 400 * 1024.0);
}

static void test_proc_pid_reuse(void **state)
{
    fixture *fx = *state;
    st_cfg_error err;
    pid_files(fx, 100, "nginx", "/usr/sbin/nginx", 1000, 1000, 10, -1);
    assert_int_equal(start(fx, "proc", "match:\n  - name: nginx\n", &err), ST_OK);
    assert_int_equal(run_at(fx, 1000), ST_OK);
    /* The pid now belongs to another program: not counted as nginx. */
    pid_files(fx, 100, "bash", "/bin/bash", 2000, 2000, 20, -1);
    assert_int_equal(run_at(fx, 2000), ST_OK);
    take(fx);
    POINTS(find(fx, "proc.count", "process", "nginx", NULL), 1, 0);
    POINTS(find(fx, "mem.rss", "process", "nginx", NULL), 1000 * 1024.0);
}

static void test_proc_malformed(void **state)
{
    fixture *fx = *state;
    st_cfg_error err;
    char yaml[512];
    snprintf(yaml, sizeof(yaml), "match:\n  - name: nginx\n  - pidfile: %s/x.pid\n", fx->root);
    pid_files(fx, 100, "nginx", "/usr/sbin/nginx", 1000, 1000, 10, -1);
    put(fx, "x.pid", "100\n");
    assert_int_equal(start(fx, "proc", yaml, &err), ST_OK);
    assert_int_equal(run_at(fx, 1000), ST_OK);
    put(fx, "proc/100/status", "Name:\tnginx\nVmRSS:\t lots kB\n");
    assert_int_equal(run_at(fx, 2000), ST_EPARSE);
    pid_files(fx, 100, "nginx", "/usr/sbin/nginx", 1000, 1000, 10, -1);
    put(fx, "x.pid", "12abc\n");
    assert_int_equal(run_at(fx, 3000), ST_EPARSE);
    put(fx, "x.pid", "99999999999999999999999999999999999999999999999999999999999999999999\n");
    assert_int_equal(run_at(fx, 4000), ST_EPARSE);
    put(fx, "x.pid", "");
    assert_int_equal(run_at(fx, 5000), ST_EPARSE);
    take(fx);
    /* A failed entry emits nothing that run (no made-up zero count); one
     * bad entry does not hide the others. */
    assert_int_equal(count_named(fx, "proc.count"), 3);
    for (size_t i = 0; i < fx->frame->n_series; i++) {
        const Strata__V1__Series *s = fx->frame->series[i];
        const char *who = label_of(s, "process");
        size_t n = st_series_npoints(s);
        if (strcmp(s->name, "proc.count") != 0) {
            continue;
        }
        if (strcmp(who, "x") == 0) {
            assert_int_equal(s->start_unix_ms, 1000);
            POINTS(s, 1);
        } else if (s->start_unix_ms == 1000) {
            POINTS(s, 1);
        } else {
            assert_int_equal(s->start_unix_ms, 3000);
            assert_int_equal(n, 3);
        }
    }
}

static void test_proc_cgroup_malformed(void **state)
{
    fixture *fx = *state;
    st_cfg_error err;
    assert_int_equal(start(fx, "proc", "match:\n  - cgroup: a/b\n", &err), ST_OK);
    /* No such group yet: nothing to report, not an error. */
    assert_int_equal(run_at(fx, 1000), ST_OK);
    put(fx, "sys/fs/cgroup/a/b/memory.current", "max\n");
    put(fx, "sys/fs/cgroup/a/b/cgroup.procs", "");
    assert_int_equal(run_at(fx, 2000), ST_EPARSE);
    put(fx, "sys/fs/cgroup/a/b/memory.current", "77\n");
    put(fx, "sys/fs/cgroup/a/b/cgroup.procs", "12\nxyz\n");
    assert_int_equal(run_at(fx, 3000), ST_EPARSE);
    put(fx, "sys/fs/cgroup/a/b/cgroup.procs", "12\n13\n"); /* members gone: skipped */
    assert_int_equal(run_at(fx, 4000), ST_OK);
    take(fx);
    POINTS(find(fx, "mem.cgroup.current", "cgroup", "a/b", NULL), 77);
    assert_int_equal(find(fx, "mem.cgroup.current", "cgroup", "a/b", NULL)->start_unix_ms, 4000);
}

/* ---- probe ---- */

static int listener(int family, uint16_t *port, int backlog)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    memset(&ss, 0, sizeof(ss));
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof(*a);
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        len = sizeof(*a);
    }
    if (bind(fd, (struct sockaddr *)&ss, len) != 0 || (backlog >= 0 && listen(fd, backlog) != 0) ||
        getsockname(fd, (struct sockaddr *)&ss, &len) != 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                    : ((struct sockaddr_in6 *)&ss)->sin6_port);
    return fd;
}

/* The family of the first address "localhost" resolves to (the one the
 * probe connects to), AF_UNSPEC when it does not resolve. */
static int localhost_family(void)
{
    struct addrinfo hints;
    struct addrinfo *res = NULL;
    int family;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo("localhost", "1", &hints, &res) != 0) {
        return AF_UNSPEC;
    }
    family = res->ai_family;
    freeaddrinfo(res);
    return family;
}

static const Strata__V1__Sketch *one_sketch(const Strata__V1__Series *s)
{
    assert_non_null(s);
    assert_int_equal(s->kind, STRATA__V1__KIND__DISTRIBUTION);
    assert_int_equal(s->n_sketches, 1);
    return s->sketches[0];
}

static void test_probe_ok_and_fail(void **state)
{
    fixture *fx = *state;
    st_cfg_error err;
    char yaml[512];
    uint16_t up;
    uint16_t down;
    uint16_t up6 = 0;
    int lfd = listener(AF_INET, &up, 16);
    int cfd = listener(AF_INET, &down, -1); /* bound, never listening: refused */
    int l6 = listener(AF_INET6, &up6, 16);
    uint16_t named = 0;
    int lnamed = listener(localhost_family(), &named, 16);
    assert_true(lfd >= 0 && cfd >= 0);
    snprintf(yaml, sizeof(yaml),
             "targets:\n"
             "  - {name: up, address: '127.0.0.1:%u'}\n"
             "  - {name: down, address: '127.0.0.1:%u'}\n"
             "  - {name: up6, address: '[::1]:%u'}\n"
             "  - {name: named, address: 'localhost:%u'}\n"
             "timeout: 2s\n",
             up, down, l6 >= 0 ? up6 : down, lnamed >= 0 ? named : down);
    assert_int_equal(start(fx, "probe", yaml, &err), ST_OK);
    assert_int_equal(run_at(fx, 1000), ST_OK);
    assert_int_equal(run_at(fx, 1500), ST_OK);
    take(fx);

    const Strata__V1__Series *s =
        find(fx, "net.probe.connects", "target", "up", "result", "ok", NULL);
    POINTS(s, 2);
    assert_int_equal(s->kind, STRATA__V1__KIND__COUNTER);
    assert_int_equal(s->layer, STRATA__V1__LAYER__INFRASTRUCTURE);
    assert_null(find(fx, "net.probe.connects", "target", "up", "result", "fail", NULL));
    POINTS(find(fx, "net.probe.connects", "target", "down", "result", "fail", NULL), 2);
    assert_null(find(fx, "net.probe.connects", "target", "down", "result", "ok", NULL));

    s = find(fx, "net.probe.connect_time", "target", "up", NULL);
    assert_string_equal(s->unit, "s");
    const Strata__V1__Sketch *sk = one_sketch(s);
    assert_int_equal(sk->count, 2);
    assert_true(sk->min > 0 && sk->max < 2.0);
    assert_null(find(fx, "net.probe.connect_time", "target", "down", NULL));
    if (l6 >= 0) {
        POINTS(find(fx, "net.probe.connects", "target", "up6", "result", "ok", NULL), 2);
        assert_int_equal(
            one_sketch(find(fx, "net.probe.connect_time", "target", "up6", NULL))->count, 2);
        close(l6);
    }
    if (lnamed >= 0) {
        POINTS(find(fx, "net.probe.connects", "target", "named", "result", "ok", NULL), 2);
        close(lnamed);
    }
    close(lfd);
    close(cfd);
}

/* Connects that never complete: a listener with backlog 0 whose accept
 * queue is already full drops further SYNs. Three such targets must cost
 * one timeout, not three. */
static void test_probe_concurrent_timeouts(void **state)
{
    fixture *fx = *state;
    st_cfg_error err;
    char yaml[512];
    uint16_t port;
    int lfd = listener(AF_INET, &port, 0);
    int fill[2];
    int64_t t0;
    int64_t took;
    struct sockaddr_in a;
    assert_true(lfd >= 0);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    for (int i = 0; i < 2; i++) {
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        assert_true(fill[i] >= 0);
        (void)connect(fill[i], (struct sockaddr *)&a, sizeof(a));
    }
    snprintf(yaml, sizeof(yaml),
             "targets:\n"
             "  - {name: a, address: '127.0.0.1:%u'}\n"
             "  - {name: b, address: '127.0.0.1:%u'}\n"
             "  - {name: c, address: '127.0.0.1:%u'}\n"
             "timeout: 300ms\n",
             port, port, port);
    assert_int_equal(start(fx, "probe", yaml, &err), ST_OK);
    t0 = st_time_mono_ms();
    assert_int_equal(run_at(fx, 1000), ST_OK);
    took = st_time_mono_ms() - t0;
    take(fx);
    assert_true(took >= 290);
    assert_true(took < 800);
    POINTS(find(fx, "net.probe.connects", "target", "a", "result", "fail", NULL), 1);
    POINTS(find(fx, "net.probe.connects", "target", "b", "result", "fail", NULL), 1);
    POINTS(find(fx, "net.probe.connects", "target", "c", "result", "fail", NULL), 1);
    close(fill[0]);
    close(fill[1]);
    close(lfd);
}

/* ---- configuration errors ---- */

static void expect_config_error(const char *sampler, const char *yaml, const char *want1,
                                const char *want2)
{
    fixture fx;
    st_cfg_error err;
    memset(&fx, 0, sizeof(fx));
    fx.env.proc_root = "/proc";
    fx.env.sys_root = "/sys";
    fx.env.interval_ms = INTERVAL;
    memset(&err, 0, sizeof(err));
    assert_int_equal(start(&fx, sampler, yaml, &err), ST_ECONFIG);
    assert_null(fx.ctx);
    if (getenv("ST_TEST_VERBOSE") != NULL) {
        print_message("%s\n", err.msg);
    }
    if (strstr(err.msg, want1) == NULL || strstr(err.msg, want2) == NULL) {
        fail_msg("error '%s' should name '%s' and '%s'", err.msg, want1, want2);
    }
    st_cfg_doc_free(fx.doc);
}

static void test_config_errors(void **state)
{
    (void)state;
    expect_config_error("host", "interval: 1s\ncolour: red\n", "test.yaml:1:", "interval");
    expect_config_error("tcp", "\nsnmp: x\n", "test.yaml:2:", "'snmp'");
    expect_config_error("proc", "match:\n  - name: nginx\n    colour: red\n",
                        "test.yaml:3:", "colour");
    expect_config_error("proc", "match:\n  - name: a\n    pidfile: /run/a.pid\n",
                        "test.yaml:2:", "exactly one of");
    expect_config_error("proc", "match:\n  - name: a\n  - name: a\n", "test.yaml:3:", "label");
    expect_config_error("proc", "match:\n  - cgroup: a/../../etc\n", "test.yaml:2:", "cgroup");
    expect_config_error("proc", "match: []\n", "test.yaml:1:", "match");
    expect_config_error("proc", "rescan: 10ms\nmatch:\n  - name: a\n", "test.yaml:1:", "rescan");
    expect_config_error("proc", "match:\n  - nginx\n", "test.yaml:2:", "mapping");
    expect_config_error("probe", "targets:\n  - name: x\n    address: '[::1:80'\n",
                        "test.yaml:3:", "address");
    expect_config_error("probe", "targets:\n  - name: x\n    address: 'example.com'\n",
                        "test.yaml:3:", "address");
    expect_config_error("probe", "targets:\n  - name: x\n    address: 'h:70000'\n",
                        "test.yaml:3:", "address");
    expect_config_error("probe", "targets:\n  - name: x\n    address: '::1:80'\n",
                        "test.yaml:3:", "address");
    expect_config_error("probe", "targets:\n  - name: x\n    address: '[nothost]:80'\n",
                        "test.yaml:3:", "IPv6");
    expect_config_error("probe",
                        "targets:\n  - {name: x, address: 'a:1'}\n  - {name: x, address: 'b:1'}\n",
                        "test.yaml:3:", "twice");
    expect_config_error("probe", "targets:\n  - {name: x, address: 'a:1', port: 3}\n",
                        "test.yaml:2:", "port");
    expect_config_error("probe", "timeout: 0s\ntargets:\n  - {name: x, address: 'a:1'}\n",
                        "test.yaml:1:", "timeout");
    expect_config_error("probe", "timeout: 1s\n", "test.yaml", "targets");
}

/* ---- the live system ---- */

static void test_live_host_tcp_proc(void **state)
{
    fixture *fx = *state;
    st_cfg_error err;
    const st_sampler_def *defs[3];
    void *ctx[3];
    char comm[64];
    char yaml[128];
    st_cfg_doc *doc;
    const Strata__V1__Series *s;
    volatile uint64_t spin = 0;
    fx->env.proc_root = "/proc";
    fx->env.sys_root = "/sys";
    /* This very process, found by its name (whatever the binary is called). */
    assert_int_equal(st_procfs_read("/proc/self/comm", comm, sizeof(comm), NULL), ST_OK);
    comm[strcspn(comm, "\n")] = '\0';
    snprintf(yaml, sizeof(yaml), "match:\n  - name: '%s'\n    label: me\n", comm);
    defs[0] = st_sampler_find("host");
    defs[1] = st_sampler_find("tcp");
    defs[2] = st_sampler_find("proc");
    assert_int_equal(st_cfg_load_string("live.yaml", yaml, strlen(yaml), &doc, &err), ST_OK);
    assert_int_equal(defs[0]->init(NULL, NULL, &fx->env, &ctx[0], &err), ST_OK);
    assert_int_equal(defs[1]->init(NULL, NULL, &fx->env, &ctx[1], &err), ST_OK);
    assert_int_equal(defs[2]->init(doc, st_cfg_root(doc), &fx->env, &ctx[2], &err), ST_OK);
    for (int run = 0; run < 2; run++) {
        st_emit *e = st_fold_begin(fx->fold, 1000 + run * INTERVAL, INTERVAL);
        for (int i = 0; i < 3; i++) {
            assert_int_equal(defs[i]->sample(ctx[i], e), ST_OK);
        }
        /* Burn CPU until the jiffy counters move (a deadline, not a sleep). */
        for (int64_t until = st_time_mono_ms() + 50; st_time_mono_ms() < until;) {
            spin++;
        }
    }
    for (int i = 0; i < 3; i++) {
        defs[i]->fini(ctx[i]);
    }
    st_cfg_doc_free(doc);
    take(fx);

    s = find(fx, "host.cpu.utilization", NULL);
    assert_non_null(s);
    assert_true(st_series_value(s, 0) > 0 && st_series_value(s, 0) <= 1.0);
    s = find(fx, "host.mem.total", NULL);
    assert_non_null(s);
    double total = st_series_value(s, 1);
    double avail = st_series_value(find(fx, "host.mem.available", NULL), 1);
    assert_true(total > 64e6 && avail > 0 && avail <= total);
    double rss = st_series_value(find(fx, "agent.rss", NULL), 1);
    assert_true(rss > 1e5 && rss < total);
    assert_true(st_series_value(find(fx, "agent.cpu.seconds", NULL), 0) >= 0.0);

    assert_int_equal(st_series_npoints(find(fx, "tcp.curr_estab", NULL)), 2);
    assert_true(st_series_value(find(fx, "tcp.curr_estab", NULL), 0) >= 0);
    assert_int_equal(st_series_npoints(find(fx, "tcp.out_segs", NULL)), 1);
    assert_true(st_series_value(find(fx, "tcp.retrans_segs", NULL), 0) >= 0);
    assert_non_null(find(fx, "tcp.listen_drops", NULL));
    assert_non_null(find(fx, "tcp.timeouts", NULL));

    s = find(fx, "proc.count", "process", "me", NULL);
    assert_true(st_series_value(s, 0) >= 1);
    s = find(fx, "mem.rss", "process", "me", NULL);
    assert_true(st_series_value(s, 1) > 1e5);
    /* Peak RSS is at least the current RSS for one process; with others of
     * the same name the sums keep that order too. */
    assert_true(st_series_value(find(fx, "mem.rss.peak", "process", "me", NULL), 1) >=
                st_series_value(s, 1));
    assert_true(st_series_value(find(fx, "mem.anon", "process", "me", NULL), 1) > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test_setup_teardown(test_host_fixture, setup, teardown),
        cmocka_unit_test_setup_teardown(test_host_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tcp_fixture, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tcp_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proc_fixture, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proc_status_anon, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proc_pid_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proc_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proc_cgroup_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_probe_ok_and_fail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_probe_concurrent_timeouts, setup, teardown),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test_setup_teardown(test_live_host_tcp_proc, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
