/* Micro-benchmark of the nginx access-log path: generates realistic lines
 * in the `strata` log_format into a temporary file, then measures lines/s
 * of (1) the line parser alone, (2) the tailer + parser + route normaliser
 * + aggregate, emitted into a real fold once per 100,000 lines as the
 * sampler would once per run. With a stub_status URL it also measures one
 * whole sampler run (stub_status over HTTP + an idle log) against that
 * server. Usage: nginx_log_bench [lines (2,000,000)] [status_url]. */
#include "config.h"
#include "err.h"
#include "fold.h"
#include "sampler.h"
#include "samplers/nginx_log.h"
#include "timeutil.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_LINES 2000000
#define EMIT_EVERY 100000 /* lines per "run" */
#define SAMPLER_RUNS 1000

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}

/* One request line: a mix of API, static, search and opaque-token paths,
 * mostly 2xx, some 3xx/4xx/5xx, cache results as a CDN edge sees them. */
static int make_line(char *b, size_t cap, double t)
{
    static const char *const cache[] = {"HIT", "HIT", "HIT", "MISS", "-", "EXPIRED", "BYPASS"};
    static const char *const methods[] = {"GET", "GET", "GET", "POST", "PUT"};
    static const int status[] = {200, 200, 200, 200, 200, 204, 301, 304, 404, 500, 502};
    char path[160];
    uint32_t r = rnd();
    switch (r % 6) {
    case 0:
        snprintf(path, sizeof(path), "/api/users/%u", rnd() % 100000);
        break;
    case 1:
        snprintf(path, sizeof(path), "/api/orders/%08x-%04x-%04x-%04x-%08x%04x/items", rnd(),
                 rnd() & 0xffff, rnd() & 0xffff, rnd() & 0xffff, rnd(), rnd() & 0xffff);
        break;
    case 2:
        snprintf(path, sizeof(path), "/static/js/chunk-%u.%08x.js", rnd() % 40, rnd());
        break;
    case 3:
        snprintf(path, sizeof(path), "/search?q=term%u&page=%u", rnd() % 1000, rnd() % 10);
        break;
    case 4:
        snprintf(path, sizeof(path), "/blog/how-to-tune-nginx-part-%u", rnd() % 30);
        break;
    default:
        snprintf(path, sizeof(path), "/health");
        break;
    }
    return snprintf(b, cap, "%.3f %.3f %d %s %u \"%s\" \"%s\"\n", t, (double)(rnd() % 2000) / 1000,
                    status[rnd() % ST_ARRAY_LEN(status)], cache[rnd() % ST_ARRAY_LEN(cache)],
                    rnd() % 50000, methods[rnd() % ST_ARRAY_LEN(methods)], path);
}

static int generate(const char *path, size_t n, size_t *bytes)
{
    FILE *f = fopen(path, "w");
    char line[512];
    if (f == NULL) {
        return ST_EIO;
    }
    *bytes = 0;
    for (size_t i = 0; i < n; i++) {
        int len = make_line(line, sizeof(line), 1700000000.0 + (double)i / 1000);
        fwrite(line, 1, (size_t)len, f);
        *bytes += (size_t)len;
    }
    return fclose(f) == 0 ? ST_OK : ST_EIO;
}

typedef struct run_state {
    st_nginx_agg *agg;
    st_fold *fold;
    size_t since_emit;
    int64_t t_ms;
} run_state;

static void on_line(void *arg, const char *line, size_t len)
{
    run_state *rs = arg;
    st_nginx_agg_line(rs->agg, line, len);
    if (++rs->since_emit == EMIT_EVERY) {
        st_nginx_agg_emit(rs->agg, st_fold_begin(rs->fold, rs->t_ms, 1000));
        rs->since_emit = 0;
        rs->t_ms += 1000;
    }
}

static void clear_frame(Strata__V1__Frame *f)
{
    for (size_t i = 0; i < f->n_series; i++) {
        strata__v1__series__free_unpacked(f->series[i], NULL);
    }
    free(f->series);
    f->series = NULL;
    f->n_series = 0;
}

/* The parser alone over the file's lines, already in memory. */
static double bench_parse(const char *path, size_t *nlines)
{
    char *text = NULL;
    size_t len = 0, n = 0, ok = 0;
    st_nginx_line l;
    int64_t t0;
    if (st_file_read(path, (size_t)1 << 31, &text, &len) != ST_OK) {
        return 0;
    }
    t0 = st_time_mono_ns();
    for (const char *p = text, *end = text + len; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL) {
            break;
        }
        ok += st_nginx_line_parse(p, (size_t)(nl - p), &l) == ST_OK;
        n++;
        p = nl + 1;
    }
    *nlines = ok == n ? n : 0;
    free(text);
    return (double)(st_time_mono_ns() - t0) / 1e9;
}

/* Mean cost of one sampler run: stub_status fetched from url, the log idle. */
static int bench_sampler(const char *url, const char *log, const char *dir)
{
    const st_sampler_def *def = st_sampler_find("nginx");
    st_sampler_env env = {"/proc", "/sys", dir, 1000, false};
    st_cfg_doc *doc = NULL;
    st_cfg_error err = {{0}};
    st_fold *fold = NULL;
    void *ctx = NULL;
    char yaml[1024];
    int64_t t0, worst = 0;
    int rv;
    snprintf(yaml, sizeof(yaml), "status_url: %s\naccess_log: %s\nfrom_beginning: true\n", url,
             log);
    if ((rv = st_cfg_load_string("bench.yaml", yaml, strlen(yaml), &doc, &err)) != ST_OK ||
        (rv = def->init(doc, st_cfg_root(doc), &env, &ctx, &err)) != ST_OK ||
        (rv = st_fold_new(&fold)) != ST_OK) {
        fprintf(stderr, "sampler: %s %s\n", st_strerror(rv), err.msg);
        goto out;
    }
    /* The first run reads the whole log; the measured ones find it idle. */
    if ((rv = def->sample(ctx, st_fold_begin(fold, 0, 1000))) != ST_OK) {
        fprintf(stderr, "sampler run: %s\n", st_strerror(rv));
        goto out;
    }
    t0 = st_time_mono_ns();
    for (int i = 0; i < SAMPLER_RUNS && rv == ST_OK; i++) {
        int64_t t1 = st_time_mono_ns();
        rv = def->sample(ctx, st_fold_begin(fold, (int64_t)(i + 1) * 1000, 1000));
        worst = ST_MAX(worst, st_time_mono_ns() - t1);
    }
    if (rv == ST_OK) {
        printf("  sampler run (stub_status %s + idle log): %.0f us mean, %.0f us worst of %d\n",
               url, (double)(st_time_mono_ns() - t0) / 1e3 / SAMPLER_RUNS, (double)worst / 1e3,
               SAMPLER_RUNS);
    }
out:
    if (ctx != NULL) {
        def->fini(ctx);
    }
    st_fold_free(fold);
    st_cfg_doc_free(doc);
    return rv;
}

/* Tailer + parser + routes + aggregate, emitted into a fold per "run". */
static int bench_fold(const char *path, size_t n, size_t bytes)
{
    st_nginx_routes *routes = NULL;
    st_nginx_tail *tail = NULL;
    st_nginx_tail_cfg cfg = {path, NULL, true, 0, 0};
    st_nginx_agg_totals tot;
    run_state rs = {NULL, NULL, 0, 1000};
    Strata__V1__Frame frame = STRATA__V1__FRAME__INIT;
    int64_t t0;
    double secs;
    int rv;
    /* The aggregate owns routes from here on, also on error. */
    if ((rv = st_nginx_routes_new(200, true, &routes)) != ST_OK ||
        (rv = st_nginx_agg_new(routes, &rs.agg)) != ST_OK ||
        (rv = st_nginx_routes_add(routes, "/static/**", false, "/static")) != ST_OK ||
        (rv = st_fold_new(&rs.fold)) != ST_OK || (rv = st_nginx_tail_new(&cfg, &tail)) != ST_OK) {
        goto out;
    }
    t0 = st_time_mono_ns();
    if ((rv = st_nginx_tail_read(tail, 0, on_line, &rs)) != ST_OK ||
        (rv = st_nginx_agg_emit(rs.agg, st_fold_begin(rs.fold, rs.t_ms, 1000))) != ST_OK ||
        (rv = st_fold_take(rs.fold, INT64_MAX, &frame)) != ST_OK) {
        goto out;
    }
    secs = (double)(st_time_mono_ns() - t0) / 1e9;
    st_nginx_agg_totals_get(rs.agg, &tot);
    printf("  tail+parse+routes+fold:     %10.0f lines/s  (%.0f MiB/s, %.0f ns/line), %zu series\n",
           (double)n / secs, (double)bytes / 1048576 / secs, secs * 1e9 / (double)n,
           frame.n_series);
    printf("  requests %llu, malformed %llu, too long %llu, route overflow %llu\n",
           (unsigned long long)tot.requests, (unsigned long long)tot.malformed,
           (unsigned long long)tot.too_long, (unsigned long long)tot.overflow);
    rv = tot.requests == n ? ST_OK : ST_EPARSE;
out:
    clear_frame(&frame);
    st_nginx_tail_free(tail);
    st_nginx_agg_free(rs.agg);
    st_fold_free(rs.fold);
    return rv;
}

int main(int argc, char **argv)
{
    char dir[] = "/tmp/strata-nginx-bench-XXXXXX";
    char path[128], ckpt[160], hash[17];
    size_t n = DEFAULT_LINES, bytes = 0, parsed = 0;
    uint64_t v;
    double secs;
    int rv = 1;
    if (argc > 1 && (st_parse_u64(argv[1], &v) != ST_OK || v == 0 || v > 100000000)) {
        fprintf(stderr, "usage: %s [lines (1..100000000)] [stub_status URL]\n", argv[0]);
        return 2;
    }
    n = argc > 1 ? (size_t)v : n;
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(path, sizeof(path), "%s/access.log", dir);
    if (generate(path, n, &bytes) != ST_OK) {
        fprintf(stderr, "cannot write %s\n", path);
        goto out;
    }
    printf("nginx_log_bench: %zu lines, %.1f MiB\n", n, (double)bytes / 1048576);
    secs = bench_parse(path, &parsed);
    if (parsed != n) {
        fprintf(stderr, "parser refused generated lines\n");
        goto out;
    }
    printf("  parse only:                 %10.0f lines/s  (%.0f ns/line)\n", (double)n / secs,
           secs * 1e9 / (double)n);
    if (bench_fold(path, n, bytes) != ST_OK) {
        fprintf(stderr, "tail/fold failed\n");
        goto out;
    }
    rv = argc > 2 && bench_sampler(argv[2], path, dir) != ST_OK ? 1 : 0;
out:
    unlink(path);
    st_nginx_path_hash(path, hash);
    snprintf(ckpt, sizeof(ckpt), "%s/nginx-%s.ckpt", dir, hash);
    unlink(ckpt);
    rmdir(dir);
    return rv;
}
