/* strata-collector: ingest -> writer -> LMDB store, the HTTP API and the
 * engine. main owns the process: flags, configuration, signals, shutdown. */
#include "actions.h"
#include "api.h"
#include "engine.h"
#include "outbox.h"
#include "err.h"
#include "ingest.h"
#include "log.h"
#include "settings.h"
#include "store.h"
#include "timeutil.h"
#include "writer.h"

#include <getopt.h>
#include <nng/nng.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage_line(const char *line)
{
    printf("%s\n", line);
}

static void usage(void)
{
    printf("usage: strata-collector [--config FILE] [flags]\n\n"
           "  --config FILE        collector.yaml (defaults apply without it)\n"
           "  --ingest URL         where agents send frames (ingest.url)\n"
           "  --http ADDR:PORT     HTTP API and /metrics (http.addr)\n"
           "  --data-dir DIR       store directory (data_dir)\n"
           "  --log-level LEVEL    debug, info, warn, error\n"
           "  --check-config       validate the configuration and exit\n"
           "  --version, --help\n\n"
           "configuration keys:\n");
    st_cfg_usage(st_collector_rows, NULL, usage_line);
}

struct flag_override {
    const char *key;
    const char *value;
};

/* Parses flags; overrides are applied after the file is loaded. Returns 0 to
 * run, 1 to exit successfully, 2 on a usage error. */
static int parse_flags(int argc, char **argv, const char **config, struct flag_override *ov,
                       size_t *nov, int *check)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"ingest", required_argument, NULL, 'i'},
                                         {"http", required_argument, NULL, 'h'},
                                         {"data-dir", required_argument, NULL, 'd'},
                                         {"log-level", required_argument, NULL, 'l'},
                                         {"check-config", no_argument, NULL, 'k'},
                                         {"version", no_argument, NULL, 'v'},
                                         {"help", no_argument, NULL, 'H'},
                                         {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            *config = optarg;
            break;
        case 'i':
            ov[(*nov)++] = (struct flag_override){"ingest.url", optarg};
            break;
        case 'h':
            ov[(*nov)++] = (struct flag_override){"http.addr", optarg};
            break;
        case 'd':
            ov[(*nov)++] = (struct flag_override){"data_dir", optarg};
            break;
        case 'l':
            ov[(*nov)++] = (struct flag_override){"log_level", optarg};
            break;
        case 'k':
            *check = 1;
            break;
        case 'v':
            printf("strata-collector %s\n", ST_VERSION);
            return 1;
        case 'H':
            usage();
            return 1;
        default:
            fprintf(stderr, "strata-collector: see --help\n");
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "strata-collector: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    return 0;
}

struct collector {
    st_collector_settings s;
    st_actions *actions;
    st_engine *engine;
    st_outbox_config webhooks; /* handed to the outbox, which zeroes it */
    atomic_size_t nwebhooks;   /* read by the engine thread, set on SIGHUP */
    st_outbox *outbox;
    st_api_token tokens[ST_API_MAX_TOKENS];
    size_t ntokens;
    st_cfg_doc *doc;
    st_metrics metrics;
    st_store *store;
    st_writer *writer;
    st_ingest *ingest;
    st_api *api;
};

/* Findings go to agents that can apply them (actions) and to webhooks; a
 * finding nothing takes is left to an SRE. */
static int dispatch_all(void *arg, const json_t *f)
{
    struct collector *c = arg;
    int a = st_actions_dispatch(c->actions, f);
    int w = atomic_load(&c->nwebhooks) > 0 ? st_outbox_dispatch(c->outbox, f) : ST_ENOENT;
    if (a == ST_OK || w == ST_OK) {
        return ST_OK;
    }
    return a != ST_ENOENT ? a : w;
}

static void engine_opts(const st_collector_settings *s, struct st_engine_opts *eo)
{
    memset(eo, 0, sizeof(*eo));
    eo->max_iterations = (int)s->engine_max_iterations;
    eo->validation_ms = s->engine_validation_ms;
    eo->improvement_margin = s->engine_margin;
    eo->window_ms = s->engine_window_ms;
    eo->baseline_window_ms = s->engine_baseline_ms;
    eo->min_samples = s->engine_min_samples;
    eo->leak_window_ms = s->engine_leak_window_ms;
    eo->step_ms = s->engine_step_ms;
    eo->settle_ms = s->engine_settle_ms;
}

static int start_engine(struct collector *c)
{
    struct st_engine_opts eo;
    st_cfg_error err;
    char host[128];
    int rv;
    if (!c->s.engine_enabled) {
        return ST_OK;
    }
    if (gethostname(host, sizeof(host) - 1) != 0) {
        snprintf(host, sizeof(host), "collector");
    }
    engine_opts(&c->s, &eo);
    eo.interval_ms = c->s.engine_interval_ms;
    eo.pause_ms = c->s.engine_pause_ms;
    eo.collector_name = c->s.name != NULL ? c->s.name : host;
    eo.dispatch = dispatch_all;
    eo.dispatch_arg = c;
    if ((rv = st_engine_new(c->store, &eo, c->doc, c->s.targets, c->s.rules, &c->engine, &err)) !=
        ST_OK) {
        ST_ERROR("main", "%s", err.msg);
        return rv;
    }
    st_actions_set_engine(c->actions, c->engine);
    return st_engine_start(c->engine);
}

static int start(struct collector *c)
{
    struct st_store_opts so = {
        c->s.data_dir,
        c->s.map_size,
        c->s.max_map_size,
        false,
        !c->s.rollups,
        {c->s.ret_raw_ms, c->s.ret_10s_ms, c->s.ret_1m_ms, c->s.ret_1h_ms, c->s.rollup_grace_ms}};
    struct st_writer_opts wo = {(size_t)c->s.max_batch, 0, st_actions_results, NULL};
    struct st_ingest_opts io = {.url = c->s.ingest_url,
                                .contexts = (int)c->s.ingest_contexts,
                                .max_future_ms = c->s.max_skew_ms,
                                .max_age_ms = c->s.max_age_ms,
                                .tls_cert = c->s.tls_cert,
                                .tls_key = c->s.tls_key,
                                .tls_ca = c->s.tls_ca,
                                .keys_file = c->s.keys_file,
                                .insecure = c->s.insecure,
                                .attach = st_actions_attach,
                                .release = st_actions_ack_release};
    struct st_api_opts ao = {c->s.http_addr, c->s.metrics_cache_ms};
    struct st_api_deps deps;
    int rv;
    if ((rv = st_store_open(&so, &c->store)) != ST_OK) {
        ST_ERROR("main", "cannot open the store in %s: %s", c->s.data_dir, st_strerror(rv));
        return rv;
    }
    if ((rv = st_actions_new(c->store, &c->actions)) != ST_OK) {
        return rv;
    }
    wo.results_arg = c->actions;
    io.attach_arg = c->actions;
    if ((rv = st_writer_start(c->store, &wo, &c->metrics, &c->writer)) != ST_OK ||
        (rv = st_ingest_start(&io, c->writer, &c->metrics, &c->ingest)) != ST_OK) {
        ST_ERROR("main", "cannot start ingest on %s: %s", c->s.ingest_url, st_strerror(rv));
        return rv;
    }
    /* The outbox runs even without endpoints, so deliveries left over from
     * an earlier configuration are settled rather than kept pending. */
    atomic_store(&c->nwebhooks, c->webhooks.n);
    if ((rv = st_outbox_new(c->store, &c->webhooks, NULL, &c->outbox)) != ST_OK ||
        (rv = st_outbox_start(c->outbox)) != ST_OK) {
        ST_ERROR("main", "cannot start the webhook outbox: %s", st_strerror(rv));
        return rv;
    }
    if ((rv = start_engine(c)) != ST_OK) {
        return rv;
    }
    deps = (struct st_api_deps){.engine = c->engine,
                                .tokens = c->tokens,
                                .ntokens = c->ntokens,
                                .store = c->store,
                                .metrics = &c->metrics,
                                .ingest = c->ingest,
                                .writer = c->writer,
                                .started_ms = st_time_wall_ms(),
                                .outbox = c->outbox,
                                .actions = c->actions};
    if ((rv = st_api_start(&ao, &deps, &c->api)) != ST_OK) {
        ST_ERROR("main", "cannot start the HTTP API on %s: %s", c->s.http_addr, st_strerror(rv));
        return rv;
    }
    return ST_OK;
}

/* Stops in dependency order: no new HTTP requests and no engine runs, then
 * ingest lets the writer commit and acknowledge what it accepted, action
 * results still reach the (stopped) engine, and the store closes last. */
static void stop(struct collector *c)
{
    /* An engine run at fleet size takes seconds; it abandons its analysis
     * at the next query while the API stops, and is then joined. */
    st_engine_request_stop(c->engine);
    st_api_stop(c->api);
    st_engine_stop(c->engine);
    st_ingest_stop(c->ingest);
    st_writer_stop(c->writer);
    st_actions_free(c->actions);
    st_engine_free(c->engine);
    st_outbox_free(c->outbox);
    st_store_close(c->store);
}

static int load(struct collector *c, const char *config, const struct flag_override *ov, size_t nov)
{
    st_cfg_error err;
    enum st_log_level lv;
    if (st_collector_settings_load(config, &c->s, &c->doc, &err) != ST_OK) {
        fprintf(stderr, "strata-collector: %s\n", err.msg);
        return ST_ECONFIG;
    }
    if (st_outbox_config_parse(c->doc, c->s.webhooks, &c->webhooks, &err) != ST_OK ||
        st_api_tokens_parse(c->doc, c->s.tokens, c->tokens, &c->ntokens, &err) != ST_OK) {
        fprintf(stderr, "strata-collector: %s\n", err.msg);
        return ST_ECONFIG;
    }
    for (size_t i = 0; i < nov; i++) {
        if (st_cfg_set(st_collector_rows, &c->s, ov[i].key, ov[i].value, &err) != ST_OK) {
            fprintf(stderr, "strata-collector: %s\n", err.msg);
            return ST_ECONFIG;
        }
    }
    if (st_log_parse_level(c->s.log_level, &lv) != ST_OK) {
        fprintf(stderr, "strata-collector: log_level '%s' is not debug, info, warn or error\n",
                c->s.log_level);
        return ST_ECONFIG;
    }
    st_log_set_level(lv);
    if (c->s.max_age_ms > c->s.ret_raw_ms) {
        /* A frame older than the raw data kept could not be rolled up
         * exactly: its minute's other points are gone. */
        ST_INFO("main", "ingest.max_age lowered to retention.raw (%lld s)",
                (long long)(c->s.ret_raw_ms / 1000));
        c->s.max_age_ms = c->s.ret_raw_ms;
    }
    return ST_OK;
}

/* SIGHUP: the agents' keys, webhooks, targets, rule thresholds and engine
 * windows take effect at once; a file that does not load changes nothing. Ingest
 * keeps running throughout, so no frame is lost or applied twice. */
static void reload(struct collector *c, const char *config)
{
    st_collector_settings s;
    st_cfg_doc *doc = NULL;
    st_cfg_error err;
    char kerr[300];
    struct st_engine_opts eo;
    st_outbox_config hooks = {0};
    if (config == NULL) {
        ST_INFO("main", "SIGHUP: no configuration file to reload");
        return;
    }
    if (st_collector_settings_load(config, &s, &doc, &err) != ST_OK) {
        ST_ERROR("main", "SIGHUP: %s; keeping the running configuration", err.msg);
        st_collector_settings_release(&s);
        st_cfg_doc_free(doc);
        return;
    }
    engine_opts(&s, &eo);
    if (st_outbox_config_parse(doc, s.webhooks, &hooks, &err) != ST_OK) {
        ST_ERROR("main", "SIGHUP: %s; keeping the running webhooks", err.msg);
    } else {
        size_t n = hooks.n;
        if (st_outbox_reconfigure(c->outbox, &hooks) == ST_OK) {
            atomic_store(&c->nwebhooks, n);
            ST_INFO("main", "SIGHUP: webhooks: %zu endpoint%s", n, n == 1 ? "" : "s");
        }
    }
    st_outbox_config_release(&hooks); /* what was not taken over */
    if (st_ingest_reload_keys(c->ingest, s.keys_file, kerr, sizeof(kerr)) != ST_OK) {
        ST_ERROR("main", "SIGHUP: %s; keeping the running keys", kerr);
    }
    if (c->engine != NULL &&
        st_engine_reconfigure(c->engine, &eo, doc, s.targets, s.rules, &err) != ST_OK) {
        ST_ERROR("main", "SIGHUP: %s; keeping the running targets and rules", err.msg);
    }
    ST_INFO("main",
            "SIGHUP: configuration reloaded from %s (listen addresses, tokens and the "
            "store change at restart)",
            config);
    st_collector_settings_release(&s);
    st_cfg_doc_free(doc);
}

int main(int argc, char **argv)
{
    struct collector c;
    struct flag_override ov[16];
    size_t nov = 0;
    const char *config = NULL;
    int check = 0;
    int sig = 0;
    sigset_t set;
    int rv = parse_flags(argc, argv, &config, ov, &nov, &check);
    if (rv != 0) {
        return rv == 1 ? 0 : 2;
    }
    memset(&c, 0, sizeof(c));
    if (load(&c, config, ov, nov) != ST_OK) {
        return 1;
    }
    if (check) {
        /* Targets and rule thresholds are checked as the engine would. */
        st_cfg_error err;
        st_engine *en = NULL;
        struct st_engine_opts eo;
        memset(&eo, 0, sizeof(eo));
        if (st_engine_new(NULL, &eo, c.doc, c.s.targets, c.s.rules, &en, &err) != ST_OK) {
            fprintf(stderr, "strata-collector: %s\n", err.msg);
            return 1;
        }
        st_engine_free(en);
        printf("configuration OK\n");
        return 0;
    }
    /* Signals are taken synchronously by main; every other thread blocks them. */
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (start(&c) != ST_OK) {
        stop(&c);
        return 1;
    }
    ST_INFO("main", "strata-collector %s: ingest %s, API http://%s, store %s", ST_VERSION,
            c.s.ingest_url, c.s.http_addr, c.s.data_dir);
    while (sigwait(&set, &sig) == 0 && sig == SIGHUP) {
        reload(&c, config);
    }
    ST_INFO("main", "signal %d: stopping", sig);
    stop(&c);
    st_outbox_config_release(&c.webhooks);
    st_collector_settings_release(&c.s);
    st_cfg_doc_free(c.doc);
    ST_INFO("main", "stopped");
    return 0;
}
