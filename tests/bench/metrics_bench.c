/* metrics_bench: the cost of the fleet aggregates of GET /metrics over a
 * fleet-sized store. It loads a store in process (agents x a catalog-like
 * set of series over the last minutes, frames applied as the writer does),
 * then times st_expose_fleet, the part of /metrics that queries the
 * fleet, a few times in a row. It prints figures; it asserts nothing.
 *
 *   metrics_bench [--agents N] [--routes R] [--minutes M] [--runs K] [--dir DIR]
 *                 [--dump FILE]   (the fleet aggregate lines of the last run)
 *                 [--cache-ms MS] (through the /metrics cache, as the API does) */
#include "exposition.h"

#include "buf.h"
#include "err.h"
#include "frame.h"
#include "sketch.h"
#include "store.h"
#include "timeutil.h"
#include "util.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MIN_MS 60000LL
#define PROCESSES 3
#define FUNCTIONS 5
#define MAX_SERIES_PER_AGENT 512
#define OUT_LIMIT (256u << 20)

struct opts {
    int agents;
    int routes;
    int minutes;
    int runs;
    int cache_ms;
    const char *dir;
    const char *dump;
};

static Strata__V1__Label *label(const char *k, const char *v)
{
    Strata__V1__Label *l = malloc(sizeof(*l));
    strata__v1__label__init(l);
    l->key = strdup(k);
    l->value = strdup(v);
    return l;
}

static Strata__V1__Series *series(const char *name, int kind, int64_t t, const char *k1,
                                  const char *v1, const char *k2, const char *v2)
{
    Strata__V1__Series *s = calloc(1, sizeof(*s));
    strata__v1__series__init(s);
    s->name = strdup(name);
    s->unit = strdup("");
    s->kind = kind;
    s->start_unix_ms = t;
    s->interval_ms = MIN_MS;
    s->labels = calloc(2, sizeof(*s->labels));
    if (k1 != NULL) {
        s->labels[s->n_labels++] = label(k1, v1);
    }
    if (k2 != NULL) {
        s->labels[s->n_labels++] = label(k2, v2);
    }
    return s;
}

static void set_int(Strata__V1__Series *s, int64_t v)
{
    s->ivalues = malloc(sizeof(int64_t));
    s->ivalues[0] = v;
    s->n_ivalues = 1;
}

static void set_double(Strata__V1__Series *s, double v)
{
    s->values = malloc(sizeof(double));
    s->values[0] = v;
    s->n_values = 1;
}

static void set_sketch(Strata__V1__Series *s, const st_sketch *sk)
{
    Strata__V1__Sketch *m = malloc(sizeof(*m));
    strata__v1__sketch__init(m);
    st_sketch_to_proto(sk, m);
    s->sketches = malloc(sizeof(*s->sketches));
    s->sketches[0] = m;
    s->n_sketches = 1;
}

/* The series of one agent for the minute at t. */
static size_t agent_series(const struct opts *o, int a, int64_t t, const st_sketch *sk,
                           Strata__V1__Series **ss)
{
    size_t n = 0;
    char v[64];
    for (int r = 0; r < o->routes; r++) {
        snprintf(v, sizeof(v), "/api/r%d", r);
        ss[n] = series("http.server.duration", STRATA__V1__KIND__DISTRIBUTION, t, "route", v,
                       "status_class", "2xx");
        set_sketch(ss[n++], sk);
        ss[n] = series("http.server.requests", STRATA__V1__KIND__COUNTER, t, "route", v,
                       "status_class", "2xx");
        set_int(ss[n++], 100 + a % 7);
        ss[n] = series("http.server.errors", STRATA__V1__KIND__COUNTER, t, "route", v,
                       "status_class", "5xx");
        set_int(ss[n++], a % 3);
    }
    ss[n] =
        series("cache.requests", STRATA__V1__KIND__COUNTER, t, "cache", "varnish", "result", "hit");
    set_int(ss[n++], 900);
    ss[n] = series("cache.requests", STRATA__V1__KIND__COUNTER, t, "cache", "varnish", "result",
                   "miss");
    set_int(ss[n++], 100 + a % 11);
    for (int p = 0; p < PROCESSES; p++) {
        snprintf(v, sizeof(v), "proc%d", p);
        ss[n] = series("mem.rss", STRATA__V1__KIND__GAUGE, t, "process", v, NULL, NULL);
        set_double(ss[n++], 1e8 + a * 1000.0 + p);
    }
    for (int f = 0; f < FUNCTIONS; f++) {
        snprintf(v, sizeof(v), "fn%d", f);
        ss[n] = series("app.function.duration", STRATA__V1__KIND__DISTRIBUTION, t, "function", v,
                       NULL, NULL);
        set_sketch(ss[n++], sk);
    }
    ss[n] = series("host.cpu.utilization", STRATA__V1__KIND__GAUGE, t, NULL, NULL, NULL, NULL);
    set_double(ss[n++], 0.3 + (a % 10) / 100.0);
    return n;
}

static int apply_agent(st_store_txn *txn, const struct opts *o, int a, uint64_t seq, int64_t t,
                       const st_sketch *sk, int64_t now)
{
    static const Strata__V1__Role roles[] = {STRATA__V1__ROLE__EDGE, STRATA__V1__ROLE__CDN,
                                             STRATA__V1__ROLE__APP, STRATA__V1__ROLE__DB};
    Strata__V1__Series *ss[MAX_SERIES_PER_AGENT];
    st_frame *f = calloc(1, sizeof(*f));
    char host[32];
    bool dup;
    int rv;
    strata__v1__frame__init(f);
    f->agent_id.data = calloc(1, 16);
    memcpy(f->agent_id.data, &a, sizeof(a));
    f->agent_id.data[15] = 1;
    f->agent_id.len = 16;
    f->seq = seq;
    f->agent = malloc(sizeof(*f->agent));
    strata__v1__agent__init(f->agent);
    snprintf(host, sizeof(host), "host%05d", a);
    f->agent->host = strdup(host);
    f->agent->role = roles[a % 4];
    f->n_series = agent_series(o, a, t, sk, ss);
    f->series = calloc(f->n_series, sizeof(*f->series));
    memcpy(f->series, ss, f->n_series * sizeof(*ss));
    rv = st_store_apply(txn, f, now, &dup);
    st_frame_free(f);
    return rv;
}

static int load(st_store *st, const struct opts *o, int64_t now, const st_sketch *sk)
{
    int64_t first = now - now % MIN_MS - (int64_t)o->minutes * MIN_MS;
    int rv = ST_OK;
    for (int m = 0; m < o->minutes && rv == ST_OK; m++) {
        st_store_txn *txn;
        if ((rv = st_store_begin(st, &txn)) != ST_OK) {
            break;
        }
        for (int a = 0; a < o->agents && rv == ST_OK; a++) {
            rv = apply_agent(txn, o, a, (uint64_t)m + 1, first + m * MIN_MS, sk, now);
        }
        rv = rv == ST_OK ? st_store_commit(txn) : (st_store_abort(txn), rv);
        if (rv == ST_EMAPFULL) {
            rv = st_store_grow(st);
            m--;
        }
    }
    return rv;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
    static const struct option lo[] = {
        {"agents", 1, 0, 'a'}, {"routes", 1, 0, 'r'}, {"minutes", 1, 0, 'm'},  {"runs", 1, 0, 'k'},
        {"dir", 1, 0, 'd'},    {"dump", 1, 0, 'o'},   {"cache-ms", 1, 0, 'c'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        int64_t v = 0;
        if (c == 'd' || c == 'o') {
            *(c == 'd' ? &o->dir : &o->dump) = optarg;
            continue;
        }
        if (c == '?' || st_parse_i64(optarg, &v) != ST_OK || v < 1 || v > 1000000) {
            fprintf(stderr, "usage: metrics_bench [--agents N] [--routes R] [--minutes M] "
                            "[--runs K] [--dir DIR] [--dump FILE] [--cache-ms MS]\n");
            return ST_EINVAL;
        }
        *(c == 'a'   ? &o->agents
          : c == 'r' ? &o->routes
          : c == 'm' ? &o->minutes
          : c == 'c' ? &o->cache_ms
                     : &o->runs) = (int)v;
    }
    return ST_OK;
}

/* The lines of the fleet aggregates (the agent lines hold ages that move
 * with the clock), to compare the answers of two builds. */
static void dump_fleet(const char *path, st_buf *b)
{
    const char *text;
    FILE *f = fopen(path, "w");
    if (f == NULL || st_buf_cstr(b, &text) != ST_OK) {
        if (f != NULL) {
            fclose(f);
        }
        return;
    }
    for (const char *p = text; *p != '\0';) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) + 1 : strlen(p);
        if (strncmp(p, "strata_fleet_", 13) == 0) {
            fwrite(p, 1, n, f);
        }
        p += n;
    }
    fclose(f);
}

int main(int argc, char **argv)
{
    struct opts o = {.agents = 1000, .routes = 10, .minutes = 5, .runs = 3, .dir = NULL};
    char dir[256];
    st_store *st = NULL;
    st_sketch *sk = NULL;
    struct st_api_deps d;
    int64_t now = st_time_wall_ms();
    int64_t t0;
    int rv;
    if (parse_args(argc, argv, &o) != ST_OK) {
        return 2;
    }
    snprintf(dir, sizeof(dir), "%s/metrics-bench-XXXXXX", o.dir ? o.dir : "/tmp");
    if (mkdtemp(dir) == NULL || st_sketch_new(0, &sk) != ST_OK) {
        return 1;
    }
    for (int i = 1; i <= 200; i++) {
        st_sketch_insert(sk, 0.001 * i);
    }
    {
        struct st_store_opts so = {.dir = dir, .no_sync = true, .map_size = 1ull << 32};
        rv = st_store_open(&so, &st);
    }
    t0 = st_time_mono_ns();
    rv = rv == ST_OK ? load(st, &o, now, sk) : rv;
    printf("loaded %d agents x %d minutes (%d routes) in %.1f s: %s\n", o.agents, o.minutes,
           o.routes, (double)(st_time_mono_ns() - t0) / 1e9, st_strerror(rv));
    memset(&d, 0, sizeof(d));
    d.store = st;
    if (rv == ST_OK && o.cache_ms > 0) {
        rv = st_expose_cache_new(o.cache_ms, &d.fleet_cache);
    }
    for (int k = 0; rv == ST_OK && k < o.runs; k++) {
        st_buf b;
        st_buf_init(&b, OUT_LIMIT);
        t0 = st_time_mono_ns();
        st_expose_fleet(&d, &b);
        printf("st_expose_fleet run %d: %.3f s, %zu bytes\n", k + 1,
               (double)(st_time_mono_ns() - t0) / 1e9, b.len);
        if (o.dump != NULL && k == o.runs - 1) {
            dump_fleet(o.dump, &b);
        }
        st_buf_free(&b);
    }
    st_expose_cache_free(d.fleet_cache);
    st_store_close(st);
    st_sketch_free(sk);
    {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        rv = system(cmd) == 0 && rv == ST_OK ? 0 : 1;
    }
    return rv;
}
