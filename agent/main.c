/* strata-agent: flags, configuration, signals; the agent does the rest. */
#include "agent.h"
#include "err.h"
#include "lazylib.h"
#include "log.h"
#include "settings.h"
#include "spool.h"
#include "timeutil.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Set by the signal handler; main's own state. */
static atomic_int stop_flag;

static atomic_int reload_flag;
static atomic_int term_flag;
/* Self-pipe: the handler may run on any thread, so it wakes the schedule's
 * sleep by a write, which is async-signal-safe. Both ends non-blocking. */
static int wake_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
    int saved = errno;
    atomic_store(sig == SIGHUP ? &reload_flag : &term_flag, 1);
    atomic_store(&stop_flag, 1);
    if (wake_pipe[1] >= 0 && write(wake_pipe[1], "x", 1) < 0) {
        /* full: a wake-up is already pending */
    }
    errno = saved;
}

/* The data_dir this process holds, and its locked descriptor. */
static int held_fd = -1;
static char held_dir[4096];

/* One agent per data_dir for as long as the process runs, reloads
 * included. The spool locks its own directory as well, but it is closed
 * for a moment while SIGHUP swaps configurations, and a second agent
 * started right then would take it and the reloading one would stop. So
 * the running agent also holds its data_dir, from before its spool opens,
 * and moves the hold only when a reload names another data_dir (the new
 * one is taken before the old one goes). */
static int hold_data_dir(const char *dir)
{
    int fd;
    if (held_fd >= 0 && strcmp(dir, held_dir) == 0) {
        return ST_OK;
    }
    if (strlen(dir) >= sizeof(held_dir)) {
        ST_ERROR("main", "data_dir is over %zu bytes", sizeof(held_dir) - 1);
        return ST_ETOOBIG;
    }
    if (st_mkdir_p(dir) != ST_OK || (fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        ST_ERROR("main", "data_dir %s: %s", dir, strerror(errno));
        return ST_EIO;
    }
    if (st_spool_lock_dir(fd, dir, "main") != ST_OK) {
        close(fd);
        return ST_EEXIST;
    }
    if (held_fd >= 0) {
        close(held_fd);
    }
    held_fd = fd;
    snprintf(held_dir, sizeof(held_dir), "%s", dir);
    return ST_OK;
}

static void usage_line(const char *line)
{
    printf("%s\n", line);
}

static void usage(void)
{
    printf("usage: strata-agent [--config FILE] [flags]\n\n"
           "  --config FILE        agent.yaml (defaults apply without it)\n"
           "  --collector URL      collector ingest URL (collector)\n"
           "  --data-dir DIR       spool and checkpoints (data_dir)\n"
           "  --interval DURATION  default sampler interval (interval)\n"
           "  --log-level LEVEL    debug, info, warn, error\n"
           "  --once               sample twice, print one frame as JSON and exit\n"
           "  --once-wait DURATION pause between the two samples of --once (default 1s)\n"
           "  --check-config       validate the configuration and exit\n"
           "  --version, --help\n\n"
           "configuration keys:\n");
    st_cfg_usage(st_agent_rows, NULL, usage_line);
}

struct opts {
    const char *config;
    const char *set[16][2];
    size_t nset;
    int once;
    int check;
    int64_t once_wait_ms;
};

static int parse_flags(int argc, char **argv, struct opts *o)
{
    static const struct option lo[] = {{"config", required_argument, NULL, 'c'},
                                       {"collector", required_argument, NULL, 'C'},
                                       {"data-dir", required_argument, NULL, 'd'},
                                       {"interval", required_argument, NULL, 'i'},
                                       {"log-level", required_argument, NULL, 'l'},
                                       {"once", no_argument, NULL, 'o'},
                                       {"once-wait", required_argument, NULL, 'w'},
                                       {"check-config", no_argument, NULL, 'k'},
                                       {"version", no_argument, NULL, 'v'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    static const char *keys[] = {
        ['C'] = "collector", ['d'] = "data_dir", ['i'] = "interval", ['l'] = "log_level"};
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'c':
            o->config = optarg;
            break;
        case 'C':
        case 'd':
        case 'i':
        case 'l':
            o->set[o->nset][0] = keys[c];
            o->set[o->nset++][1] = optarg;
            break;
        case 'o':
            o->once = 1;
            break;
        case 'w':
            if (st_duration_parse(optarg, &o->once_wait_ms) != ST_OK) {
                fprintf(stderr, "strata-agent: flag '--once-wait': bad duration '%s'\n", optarg);
                return 2;
            }
            break;
        case 'k':
            o->check = 1;
            break;
        case 'v':
            printf("strata-agent %s\n", ST_VERSION);
            return 1;
        case 'h':
            usage();
            return 1;
        default:
            fprintf(stderr, "strata-agent: see --help\n");
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "strata-agent: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    return 0;
}

static int load(const struct opts *o, st_agent_settings *s, st_cfg_doc **doc, st_agent **agent)
{
    st_cfg_error err;
    enum st_log_level lv;
    if (st_agent_settings_load(o->config, s, doc, &err) != ST_OK) {
        fprintf(stderr, "strata-agent: %s\n", err.msg);
        return ST_ECONFIG;
    }
    for (size_t i = 0; i < o->nset; i++) {
        if (st_cfg_set(st_agent_rows, s, o->set[i][0], o->set[i][1], &err) != ST_OK) {
            fprintf(stderr, "strata-agent: %s\n", err.msg);
            return ST_ECONFIG;
        }
    }
    if (st_log_parse_level(s->log_level, &lv) != ST_OK) {
        fprintf(stderr, "strata-agent: log_level '%s' is not debug, info, warn or error\n",
                s->log_level);
        return ST_ECONFIG;
    }
    if (s->interval_ms < 10 || s->flush_ms < 100) {
        fprintf(stderr, "strata-agent: interval must be >= 10ms and flush_interval >= 100ms\n");
        return ST_ECONFIG;
    }
    st_log_set_level(lv);
    if (st_url_plain_remote(s->collector) && !s->insecure) {
        fprintf(stderr,
                "strata-agent: collector %s: plain tcp:// to another host sends frames "
                "unencrypted; use tls+tcp:// or set insecure: true\n",
                s->collector);
        return ST_ECONFIG;
    }
    s->once = o->once != 0;
    if (st_agent_new(s, *doc, agent, &err) != ST_OK) {
        fprintf(stderr, "strata-agent: %s\n", err.msg);
        return ST_ECONFIG;
    }
    return ST_OK;
}

static int run_once(st_agent *agent, int64_t wait_ms)
{
    char *json = NULL;
    int rv = st_agent_once(agent, wait_ms, &json);
    if (rv != ST_OK) {
        fprintf(stderr, "strata-agent: --once: %s\n", st_strerror(rv));
        return 1;
    }
    printf("%s\n", json);
    free(json);
    return 0;
}

/* Runs until SIGTERM or SIGINT. SIGHUP stops the agent the way SIGTERM
 * does (the frame being built goes to the spool, which keeps seq and
 * everything unacknowledged), then starts it again from the file: every
 * setting, samplers included, changes. A file that does not load leaves
 * the running configuration in place. */
static int run(const struct opts *o, st_agent_settings *s, st_cfg_doc **doc, st_agent **agent)
{
    for (;;) {
        st_agent_settings ns;
        st_cfg_doc *ndoc = NULL;
        st_agent *na = NULL;
        st_cfg_error err;
        if (st_agent_run(*agent, &stop_flag, wake_pipe[0]) != ST_OK) {
            return 1;
        }
        if (atomic_load(&term_flag) || !atomic_exchange(&reload_flag, 0)) {
            return 0;
        }
        atomic_store(&stop_flag, 0);
        st_agent_free(*agent); /* its spool lock and sockets, before the new one takes them */
        *agent = NULL;
        if (load(o, &ns, &ndoc, &na) == ST_OK && hold_data_dir(ns.data_dir) == ST_OK) {
            ST_INFO("main", "SIGHUP: configuration reloaded from %s",
                    o->config ? o->config : "the flags");
            st_agent_settings_release(s);
            st_cfg_doc_free(*doc);
            *s = ns;
            *doc = ndoc;
            *agent = na;
        } else {
            ST_ERROR("main", "SIGHUP: the configuration does not load; keeping the running one");
            st_agent_free(na);
            st_agent_settings_release(&ns);
            st_cfg_doc_free(ndoc);
            if (st_agent_new(s, *doc, agent, &err) != ST_OK) {
                ST_ERROR("main", "cannot start again: %s", err.msg);
                return 1;
            }
        }
        if (atomic_load(&term_flag)) {
            return 0;
        }
    }
}

/* glibc's allocator is tuned for throughput: its mmap threshold rises to
 * the largest block freed (up to 32 MB) and the heap is trimmed only past
 * twice that, so buffers that come and go (a bundle scan's deflate
 * state, a varnishstat reply, a frame being built) stay resident for
 * good. An agent allocates little and rarely: blocks of 64 KiB and more
 * get their own mapping, returned on free, and free memory at the heap's
 * top goes back past 128 KiB; one arena serves every thread (they
 * allocate rarely; each arena of its own keeps its own free pages). A
 * malloc setting in GLIBC_TUNABLES wins. */
static void lean_malloc(void)
{
    const char *t = getenv("GLIBC_TUNABLES");
    if (t != NULL && strstr(t, "glibc.malloc.") != NULL) {
        return;
    }
    (void)mallopt(M_MMAP_THRESHOLD, 64 * 1024);
    (void)mallopt(M_TRIM_THRESHOLD, 128 * 1024);
    (void)mallopt(M_ARENA_MAX, 1);
}

int main(int argc, char **argv)
{
    struct opts o = {.once_wait_ms = 1000};
    st_agent_settings s;
    st_cfg_doc *doc = NULL;
    st_agent *agent = NULL;
    struct sigaction sa;
    int rv;
    /* GnuTLS comes with libpq (through libldap) and with libcurl (through
     * librtmp) and initialises itself when loaded: its random generator,
     * p11-kit and the system trust modules, 0.8 MB of RSS, for TLS neither
     * library does through it unless an LDAP service lookup or an rtmp://
     * URL asks, and those call gnutls_global_init themselves. Set before
     * any thread exists (setenv is not thread-safe); a value the user set
     * stays. Children inherit it: the exec action's get a clean
     * environment, and varnishstat does not use GnuTLS. */
    setenv("GNUTLS_NO_IMPLICIT_INIT", "1", 0);
    lean_malloc();
    st_openssl_lean_init();
    rv = parse_flags(argc, argv, &o);
    if (rv != 0) {
        return rv == 1 ? 0 : 2;
    }
    if (load(&o, &s, &doc, &agent) != ST_OK) {
        rv = 1;
    } else if (o.check) {
        printf("configuration OK\n");
    } else if (o.once) {
        rv = run_once(agent, o.once_wait_ms);
    } else if (hold_data_dir(s.data_dir) != ST_OK) {
        rv = 1;
    } else {
        if (pipe2(wake_pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
            ST_WARN("main", "no wake pipe (%s): the schedule polls for signals", strerror(errno));
            wake_pipe[0] = wake_pipe[1] = -1;
        }
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal;
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL); /* systemctl reload */
        signal(SIGPIPE, SIG_IGN);
        rv = run(&o, &s, &doc, &agent);
    }
    st_agent_free(agent);
    st_agent_settings_release(&s);
    st_cfg_doc_free(doc);
    return rv;
}
