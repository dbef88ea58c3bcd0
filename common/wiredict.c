/* Dictionary 1 of envelope codec 2: see wiredict.h.
 *
 * It is the packed bytes of one Frame field 5 (a Series) per entry below,
 * with name, labels, layer, unit, kind and a 1 s interval, the order a
 * frame carries them in, so zstd finds whole runs of a series' identity in
 * it. zstd codes near matches more cheaply than far ones, so the series of
 * every agent (host, tcp, the agent's own) come last.
 *
 * FROZEN. Do not edit, reorder or extend this table: agents and collectors of
 * different versions must build the same bytes (wiredict_test pins them). A
 * better dictionary is dictionary 2 with a codec of its own. */
#include "wiredict.h"

#include <pthread.h>
#include <stdlib.h>

#include "proto/strata.pb-c.h"

#define L_DB STRATA__V1__LAYER__DATABASE
#define L_FN STRATA__V1__LAYER__FUNCTION
#define L_FE STRATA__V1__LAYER__FRONTEND
#define L_RT STRATA__V1__LAYER__REALTIME
#define L_IN STRATA__V1__LAYER__INFRASTRUCTURE
#define L_NO STRATA__V1__LAYER__LAYER_UNSPECIFIED
#define K_C STRATA__V1__KIND__COUNTER
#define K_G STRATA__V1__KIND__GAUGE
#define K_D STRATA__V1__KIND__DISTRIBUTION

#define DICT_MAX_LABELS 3

struct entry {
    const char *name;
    const char *unit;
    int kind;
    int layer;
    const char *labels[DICT_MAX_LABELS * 2]; /* key, value pairs; NULL ends */
};

static const struct entry entries[] = {
    {"frontend.bundle.files", "", K_G, L_FE, {NULL}},
    {"frontend.bundle.total_bytes", "B", K_G, L_FE, {NULL}},
    {"frontend.bundle.total_gzip_bytes", "B", K_G, L_FE, {NULL}},
    {"frontend.bundle.duplicate_bytes", "B", K_G, L_FE, {NULL}},
    {"frontend.bundle.unused_bytes", "B", K_G, L_FE, {NULL}},
    {"frontend.bundle.gzip_bytes", "B", K_G, L_FE, {"chunk", "assets/index.js", "entry", "true"}},
    {"frontend.component.render", "s", K_D, L_FE, {"component", "App"}},
    {"web.vitals.cls", "", K_D, L_FE, {"page", "/"}},
    {"web.vitals.inp", "s", K_D, L_FE, {"page", "/"}},
    {"web.vitals.ttfb", "s", K_D, L_FE, {"page", "/"}},
    {"web.vitals.fcp", "s", K_D, L_FE, {"page", "/"}},
    {"web.vitals.lcp", "s", K_D, L_FE, {"page", "/"}},
    {"rum.beacons", "", K_C, L_FE, {NULL}},
    {"cache.requests", "", K_C, L_FE, {"cache", "browser", "result", "hit"}},
    {"realtime.connections", "", K_G, L_RT, {"channel", "updates"}},
    {"realtime.bytes", "B", K_C, L_RT, {"channel", "updates"}},
    {"realtime.updates", "", K_C, L_RT, {"channel", "updates", "result", "ok"}},
    {"realtime.subscription.latency", "s", K_D, L_RT, {"channel", "updates"}},
    {"app.function.errors", "", K_C, L_FN, {"function", "getUser", "type", "query"}},
    {"app.function.duration", "s", K_D, L_FN, {"function", "getUser", "type", "query"}},
    {"statsd.received", "", K_C, L_IN, {NULL}},
    {"db.connections", "", K_G, L_DB, {"database", "app"}},
    {"db.xact.commit", "", K_C, L_DB, {"database", "app"}},
    {"db.cache.blks_read", "", K_C, L_DB, {"database", "app"}},
    {"db.cache.blks_hit", "", K_C, L_DB, {"database", "app"}},
    {"db.table.live_tup", "", K_G, L_DB, {"table", "public.orders"}},
    {"db.table.idx_scan", "", K_C, L_DB, {"table", "public.orders"}},
    {"db.table.seq_tup_read", "", K_C, L_DB, {"table", "public.orders"}},
    {"db.table.seq_scan", "", K_C, L_DB, {"table", "public.orders"}},
    {"db.statement.mean_time", "s", K_G, L_DB, {"queryid", "", "query", "SELECT", "table", ""}},
    {"db.statement.rows", "", K_C, L_DB, {"queryid", "", "query", "SELECT", "table", ""}},
    {"db.statement.time", "s", K_C, L_DB, {"queryid", "", "query", "SELECT", "table", ""}},
    {"db.statement.calls", "", K_C, L_DB, {"queryid", "", "query", "SELECT * FROM ", "table", ""}},
    {"net.probe.connect_time", "s", K_D, L_IN, {"target", ""}},
    {"net.probe.connects", "", K_C, L_IN, {"target", "", "result", "ok"}},
    {"mem.cgroup.current", "B", K_G, L_IN, {"cgroup", "/system.slice/"}},
    {"proc.count", "", K_G, L_IN, {"process", ""}},
    {"mem.anon", "B", K_G, L_IN, {"process", ""}},
    {"mem.rss.peak", "B", K_G, L_IN, {"process", ""}},
    {"mem.rss", "B", K_G, L_IN, {"process", ""}},
    {"memcached.connections.current", "", K_G, L_IN, {NULL}},
    {"redis.connections.rejected", "", K_C, L_IN, {NULL}},
    {"redis.clients.connected", "", K_G, L_IN, {NULL}},
    {"cache.memory.used", "B", K_G, L_IN, {"cache", "varnish"}},
    {"cache.evictions", "", K_C, L_IN, {"cache", "varnish"}},
    {"cache.requests", "", K_C, L_IN, {"cache", "memcached", "result", "miss"}},
    {"cache.requests", "", K_C, L_IN, {"cache", "redis", "result", "hit"}},
    {"cache.requests", "", K_C, L_IN, {"cache", "varnish", "result", "pass"}},
    {"nginx.connections.waiting", "", K_G, L_IN, {NULL}},
    {"nginx.connections.writing", "", K_G, L_IN, {NULL}},
    {"nginx.connections.reading", "", K_G, L_IN, {NULL}},
    {"nginx.connections.active", "", K_G, L_IN, {NULL}},
    {"nginx.connections.handled", "", K_C, L_IN, {NULL}},
    {"nginx.connections.accepted", "", K_C, L_IN, {NULL}},
    {"nginx.requests", "", K_C, L_IN, {NULL}},
    {"nginx.log.lines", "", K_C, L_IN, {NULL}},
    {"http.server.response.bytes", "B", K_C, L_IN, {"route", "/", "status_class", "2xx"}},
    {"http.server.errors", "", K_C, L_IN, {"route", "/", "status_class", "5xx"}},
    {"http.server.requests", "", K_C, L_IN, {"route", "/", "status_class", "2xx"}},
    {"cache.requests", "", K_C, L_IN, {"cache", "nginx", "result", "miss"}},
    {"http.server.duration",
     "s",
     K_D,
     L_IN,
     {"route", "/", "status_class", "2xx", "cache_status", "HIT"}},
    {"agent.series.dropped", "", K_C, L_IN, {NULL}},
    {"agent.frames.lost", "", K_C, L_IN, {NULL}},
    {"agent.frames.rejected", "", K_C, L_IN, {NULL}},
    {"agent.frames.sent", "", K_C, L_IN, {NULL}},
    {"agent.spool.bytes", "B", K_G, L_IN, {NULL}},
    {"agent.spool.dropped", "", K_G, L_IN, {NULL}},
    {"agent.spool.frames", "", K_G, L_IN, {NULL}},
    {"tcp.timeouts", "", K_C, L_IN, {NULL}},
    {"tcp.listen_overflows", "", K_C, L_IN, {NULL}},
    {"tcp.listen_drops", "", K_C, L_IN, {NULL}},
    {"tcp.curr_estab", "", K_G, L_IN, {NULL}},
    {"tcp.active_opens", "", K_C, L_IN, {NULL}},
    {"tcp.estab_resets", "", K_C, L_IN, {NULL}},
    {"tcp.attempt_fails", "", K_C, L_IN, {NULL}},
    {"tcp.out_segs", "", K_C, L_IN, {NULL}},
    {"tcp.retrans_segs", "", K_C, L_IN, {NULL}},
    {"agent.rss", "B", K_G, L_NO, {NULL}},
    {"agent.cpu.seconds", "s", K_C, L_NO, {NULL}},
    {"host.mem.total", "B", K_G, L_IN, {NULL}},
    {"host.mem.available", "B", K_G, L_IN, {NULL}},
    {"host.cpu.utilization", "ratio", K_G, L_IN, {NULL}},
};

#define NENTRIES (sizeof(entries) / sizeof(entries[0]))

static pthread_once_t once = PTHREAD_ONCE_INIT;
static uint8_t *dict;
static size_t dict_len;

/* Packs one entry as Frame field 5 into dst (NULL: only measures). */
static size_t put_entry(const struct entry *e, uint8_t *dst)
{
    Strata__V1__Series s = STRATA__V1__SERIES__INIT;
    Strata__V1__Label lab[DICT_MAX_LABELS], *lp[DICT_MAX_LABELS];
    uint8_t hdr[6];
    size_t n, h = 0;
    for (size_t i = 0; i < DICT_MAX_LABELS && e->labels[2 * i] != NULL; i++) {
        strata__v1__label__init(&lab[i]);
        lab[i].key = (char *)e->labels[2 * i];
        lab[i].value = (char *)e->labels[2 * i + 1];
        lp[i] = &lab[i];
        s.n_labels = i + 1;
    }
    s.name = (char *)e->name;
    s.labels = lp;
    s.layer = (Strata__V1__Layer)e->layer;
    s.unit = (char *)e->unit;
    s.kind = (Strata__V1__Kind)e->kind;
    s.interval_ms = 1000;
    n = strata__v1__series__get_packed_size(&s);
    hdr[h++] = (5 << 3) | 2; /* Frame.series, length-delimited */
    for (size_t v = n;; v >>= 7) {
        hdr[h++] = (uint8_t)(v >= 0x80 ? (v & 0x7f) | 0x80 : v);
        if (v < 0x80) {
            break;
        }
    }
    if (dst != NULL) {
        for (size_t i = 0; i < h; i++) {
            dst[i] = hdr[i];
        }
        strata__v1__series__pack(&s, dst + h);
    }
    return h + n;
}

static void build(void)
{
    size_t total = 0, off = 0;
    for (size_t i = 0; i < NENTRIES; i++) {
        total += put_entry(&entries[i], NULL);
    }
    if ((dict = malloc(total)) == NULL) {
        return;
    }
    for (size_t i = 0; i < NENTRIES; i++) {
        off += put_entry(&entries[i], dict + off);
    }
    dict_len = off;
}

const uint8_t *st_wiredict(size_t *len)
{
    pthread_once(&once, build);
    *len = dict_len;
    return dict;
}
