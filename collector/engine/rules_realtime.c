/* Realtime rules: channels that push more updates per subscription than a
 * client can use (THROTTLE_UPDATES), channels that move too many bytes
 * (DATA_COMPRESSION), and connections that fail or drop, for realtime
 * channels and probed targets alike (CONNECTION_RESILIENCE). */
#include "rules_checks.h"

#include "err.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Retransmissions above this share of sent segments point at the path. */
#define ST_RETRANS_NOTE 0.01
#define BACKOFF_INITIAL_MS 500
#define BACKOFF_MAX_MS 30000

static const char *const backoff_code =
    "let attempt = 0;\n"
    "function connect() {\n"
    "  const ws = new WebSocket(url);\n"
    "  ws.onopen = () => { attempt = 0; };\n"
    "  ws.onclose = () => {\n"
    "    const cap = Math.min(30000, 500 * 2 ** attempt++);\n"
    "    setTimeout(connect, Math.random() * cap); // full jitter\n"
    "  };\n"
    "}\n"
    "connect();";

/* The sum per channel of a per-host gauge's latest values. */
static double channel_sum(const st_answer *ans, const char *channel)
{
    double sum = 0;
    for (size_t i = 0; ans != NULL && i < ans->n; i++) {
        const st_ans_row *item = &ans->rows[i];
        double v = st_ans_value(item);
        if (isfinite(v) && strcmp(st_ans_label(item, "channel"), channel) == 0) {
            sum += v;
        }
    }
    return sum;
}

/* ---- THROTTLE_UPDATES ---- */

static json_t *throttle_impl(const char *channel, double per_sub, double max_hz)
{
    int interval = (int)ceil(1000.0 / max_hz);
    char code[512];
    snprintf(code, sizeof(code),
             "const pending = new Map(); // subscription -> latest state\n"
             "function publish(sub, update) { pending.set(sub, update); }\n"
             "setInterval(() => {\n"
             "  for (const [sub, u] of pending) sub.send(u);\n"
             "  pending.clear();\n"
             "}, %d);",
             interval);
    return json_pack("{s:s,s:f,s:f,s:i,s:s,s:s}", "channel", channel,
                     "updates_per_s_per_subscription", per_sub, "max_hz", max_hz, "interval_ms",
                     interval, "change",
                     "coalesce updates per subscription: keep only the latest state and flush "
                     "on a fixed interval (the last state is always sent), or let clients pick "
                     "a lower rate when they subscribe",
                     "code", code);
}

int st_check_update_rate(st_eng *e, const st_rule *r, st_candidates *out)
{
    static const char *const series[] = {"realtime.updates", "realtime.subscriptions"};
    double thr = st_eng_threshold(e, r);
    int64_t w = st_eng_window(e);
    st_answer *rate = NULL;
    st_answer *subs = NULL;
    int rv = st_eng_query(e, "realtime.updates", "rate", "channel", NULL, 0, w, &rate);
    double total = st_rules_total(rate);
    if (rv == ST_OK) {
        rv = st_rules_last(e, "realtime.subscriptions", "channel,host", NULL, 0, w, &subs);
    }
    for (size_t i = 0; rv == ST_OK && i < rate->n; i++) {
        const st_ans_row *item = &rate->rows[i];
        const char *ch = st_ans_label(item, "channel");
        double ups = st_ans_value(item);
        double n = channel_sum(subs, ch);
        double per_sub = ups / fmax(n, 1);
        st_candidate c;
        if (!(per_sub > thr)) {
            continue;
        }
        st_candidate_init(&c);
        st_rules_entity(&c, item, "channel");
        st_rules_verdict(&c, r, per_sub, thr, false);
        c.traffic_share = total > 0 ? ups / total : 0;
        st_rules_summary(&c,
                         "channel %s: %.1f updates/s over %.0f subscriptions = %.1f/s each "
                         "(over %.0f/s)",
                         ch, ups, n, per_sub, thr);
        st_rules_evidence(e, &c, series, 2,
                          json_pack("{s:f,s:f,s:f}", "updates_per_s", ups, "subscriptions", n,
                                    "updates_per_s_per_subscription", per_sub),
                          thr, w, st_rules_hosts(subs, "host", "channel", ch));
        c.implementation = throttle_impl(ch, per_sub, thr);
        rv = st_rules_add(out, &c);
    }
    st_answer_unref(rate);
    st_answer_unref(subs);
    return rv;
}

/* ---- DATA_COMPRESSION ---- */

static json_t *compress_impl(const char *channel, double bps)
{
    return json_pack(
        "{s:s,s:f,s:{s:i,s:{s:i},s:b},s:s,s:s}", "channel", channel, "bytes_per_s", bps,
        "perMessageDeflate", "threshold", 1024, "zlibDeflateOptions", "level", 6,
        "serverNoContextTakeover", 0, "code",
        "new WebSocketServer({ server, perMessageDeflate: { threshold: 1024, "
        "zlibDeflateOptions: { level: 6 }, serverNoContextTakeover: false } });",
        "delta",
        "send JSON Patch (RFC 6902) diffs against the last state the client acknowledged "
        "instead of full snapshots; send a snapshot only on (re)connect");
}

int st_check_bandwidth(st_eng *e, const st_rule *r, st_candidates *out)
{
    static const char *const series[] = {"realtime.bytes", "realtime.updates"};
    double thr = st_eng_threshold(e, r);
    int64_t w = st_eng_window(e);
    st_answer *bytes = NULL;
    st_answer *ups = NULL;
    st_answer *hosts = NULL;
    int rv = st_eng_query(e, "realtime.bytes", "rate", "channel", NULL, 0, w, &bytes);
    double total = st_rules_total(bytes);
    if (rv == ST_OK) {
        rv = st_eng_query(e, "realtime.updates", "rate", "channel", NULL, 0, w, &ups);
    }
    if (rv == ST_OK) {
        rv = st_eng_query(e, "realtime.bytes", "rate", "channel,host", NULL, 0, w, &hosts);
    }
    for (size_t i = 0; rv == ST_OK && i < bytes->n; i++) {
        const st_ans_row *item = &bytes->rows[i];
        const char *ch = st_ans_label(item, "channel");
        double bps = st_ans_value(item);
        double u = st_rules_lookup(ups, item, "channel");
        st_candidate c;
        if (!(bps > thr)) {
            continue;
        }
        st_candidate_init(&c);
        st_rules_entity(&c, item, "channel");
        st_rules_verdict(&c, r, bps, thr, false);
        c.traffic_share = total > 0 ? bps / total : 0;
        st_rules_summary(&c, "channel %s sends %.2f MiB/s (over %.2f MiB/s)", ch, bps / 1048576.0,
                         thr / 1048576.0);
        st_rules_evidence(e, &c, series, 2,
                          json_pack("{s:f,s:o,s:o}", "bytes_per_s", bps, "updates_per_s",
                                    st_rules_num(u), "bytes_per_update",
                                    st_rules_num(u > 0 ? bps / u : NAN)),
                          thr, w, st_rules_hosts(hosts, "host", "channel", ch));
        c.implementation = compress_impl(ch, bps);
        rv = st_rules_add(out, &c);
    }
    st_answer_unref(bytes);
    st_answer_unref(ups);
    st_answer_unref(hosts);
    return rv;
}

/* ---- CONNECTION_RESILIENCE ---- */

/* A source of connection outcomes: result=ok counts as stable. */
typedef struct stab_src {
    const char *metric;
    const char *key; /* target, channel */
} stab_src;

/* The TCP counters of the hosts, for the evidence. */
typedef struct tcpq {
    st_answer *retrans;
    st_answer *outs;
    st_answer *resets;
} tcpq;

static int tcpq_load(st_eng *e, int64_t w, tcpq *t)
{
    int rv;
    memset(t, 0, sizeof(*t));
    if ((rv = st_eng_query(e, "tcp.retrans_segs", "sum", "host", NULL, 0, w, &t->retrans)) ||
        (rv = st_eng_query(e, "tcp.out_segs", "sum", "host", NULL, 0, w, &t->outs))) {
        return rv;
    }
    return st_eng_query(e, "tcp.estab_resets", "rate", "host", NULL, 0, w, &t->resets);
}

static void tcpq_free(tcpq *t)
{
    st_answer_unref(t->retrans);
    st_answer_unref(t->outs);
    st_answer_unref(t->resets);
}

/* [{host, retrans_ratio, estab_resets_per_s}] for the hosts of key=name;
 * *worst the highest retransmission ratio. */
static json_t *tcp_evidence(const tcpq *t, const st_answer *hosts, const char *key,
                            const char *name, double *worst)
{
    json_t *out = json_array();
    *worst = 0;
    for (size_t i = 0; hosts != NULL && i < hosts->n; i++) {
        const st_ans_row *item = &hosts->rows[i];
        double re;
        double os;
        if (strcmp(st_ans_label(item, key), name) != 0) {
            continue;
        }
        re = st_rules_lookup(t->retrans, item, "host");
        os = st_rules_lookup(t->outs, item, "host");
        re = os > 0 ? re / os : NAN;
        *worst = isfinite(re) ? fmax(*worst, re) : *worst;
        json_array_append_new(out,
                              json_pack("{s:s,s:o,s:o}", "host", st_ans_label(item, "host"),
                                        "retrans_ratio", st_rules_num(re), "estab_resets_per_s",
                                        st_rules_num(st_rules_lookup(t->resets, item, "host"))));
    }
    return out;
}

static json_t *resilience_impl(const stab_src *s, const char *name, double ratio, double worst)
{
    json_t *impl =
        json_pack("{s:s,s:f,s:{s:i,s:i,s:i,s:s},s:{s:i,s:i,s:i,s:i,s:i},s:{s:i,s:i},s:s,s:[s,s,s]}",
                  s->key, name, "stability", ratio, "reconnect", "initial_ms", BACKOFF_INITIAL_MS,
                  "max_ms", BACKOFF_MAX_MS, "multiplier", 2, "jitter", "full", "keepalive",
                  "ping_interval_s", 25, "pong_timeout_s", 10, "tcp_keepalive_time_s", 60,
                  "tcp_keepalive_intvl_s", 10, "tcp_keepalive_probes", 6, "timeouts", "connect_s",
                  5, "idle_s", 75, "code", backoff_code, "sysctl", "net.ipv4.tcp_keepalive_time=60",
                  "net.ipv4.tcp_keepalive_intvl=10", "net.ipv4.tcp_keepalive_probes=6");
    if (worst > ST_RETRANS_NOTE) {
        char note[160];
        snprintf(note, sizeof(note),
                 "TCP retransmits %.1f%% of segments on a host: check the path (MTU, NIC "
                 "errors, congestion); retries only hide it",
                 worst * 100);
        json_object_set_new(impl, "network", json_string(note));
    }
    return impl;
}

static int stab_candidate(st_eng *e, const st_rule *r, const stab_src *s, const st_ans_row *item,
                          double ratio, double n, double share, json_t *tcp, double worst,
                          st_candidates *out)
{
    const char *series[] = {s->metric, "tcp.retrans_segs", "tcp.out_segs", "tcp.estab_resets"};
    const char *name = st_ans_label(item, s->key);
    double thr = st_eng_threshold(e, r);
    json_t *hosts = json_array();
    st_candidate c;
    for (size_t i = 0; i < json_array_size(tcp); i++) {
        json_array_append(hosts, json_object_get(json_array_get(tcp, i), "host"));
    }
    st_candidate_init(&c);
    st_rules_entity(&c, item, s->key);
    st_rules_verdict(&c, r, ratio, thr, true);
    c.traffic_share = share;
    st_rules_summary(&c,
                     "%s %s: %.1f%% of %.0f connections ok (target %.0f%%), worst TCP "
                     "retransmission %.2f%%",
                     s->key, name, ratio * 100, n, thr * 100, worst * 100);
    st_rules_evidence(e, &c, series, ST_ARRAY_LEN(series),
                      json_pack("{s:f,s:f,s:o}", "stability", ratio, "connections", n, "tcp", tcp),
                      thr, st_eng_window(e), hosts);
    c.implementation = resilience_impl(s, name, ratio, worst);
    return st_rules_add(out, &c);
}

static int stability_of(st_eng *e, const st_rule *r, const stab_src *s, const tcpq *t,
                        st_candidates *out)
{
    static const char *const ok[] = {"result=ok"};
    char by[64];
    int64_t w = st_eng_window(e);
    double thr = st_eng_threshold(e, r);
    double min = st_eng_setting(e, "min_samples");
    st_answer *ratio = NULL, *sum = NULL, *hosts = NULL;
    int rv = st_eng_query(e, s->metric, "ratio", s->key, ok, 1, w, &ratio);
    snprintf(by, sizeof(by), "%s,host", s->key);
    rv = rv ? rv : st_eng_query(e, s->metric, "sum", s->key, NULL, 0, w, &sum);
    rv = rv ? rv : st_eng_query(e, s->metric, "sum", by, NULL, 0, w, &hosts);
    for (size_t i = 0; rv == ST_OK && i < sum->n; i++) {
        const st_ans_row *item = &sum->rows[i];
        double n = st_ans_value(item);
        double v = st_rules_lookup(ratio, item, s->key);
        double worst;
        v = isfinite(v) ? v : 0; /* no ok at all */
        if (n >= min && v < thr) {
            json_t *tcp = tcp_evidence(t, hosts, s->key, st_ans_label(item, s->key), &worst);
            rv = stab_candidate(e, r, s, item, v, n, n / st_rules_total(sum), tcp, worst, out);
        }
    }
    st_answer_unref(ratio);
    st_answer_unref(sum);
    st_answer_unref(hosts);
    return rv;
}

int st_check_stability(st_eng *e, const st_rule *r, st_candidates *out)
{
    static const stab_src probes = {"net.probe.connects", "target"};
    static const stab_src channels = {"realtime.connections", "channel"};
    tcpq t;
    int rv = tcpq_load(e, st_eng_window(e), &t);
    if (rv == ST_OK) {
        rv = stability_of(e, r, &probes, &t, out);
    }
    if (rv == ST_OK) {
        rv = stability_of(e, r, &channels, &t, out);
    }
    tcpq_free(&t);
    return rv;
}
