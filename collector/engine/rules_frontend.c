/* Frontend rules from the build-directory scan and RUM/StatsD timings:
 * oversized bundles (CODE_SPLITTING), unused and duplicate bytes
 * (TREE_SHAKING, DEDUPLICATION) and slow component renders. */
#include "rules_checks.h"

#include "err.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOP_N 5
#define KIB 1024.0

/* ---- shared ---- */

typedef struct ranked {
    const st_ans_row *item;
    double v;
} ranked;

static int by_value_desc(const void *a, const void *b)
{
    const ranked *x = a;
    const ranked *y = b;
    return x->v < y->v ? 1 : (x->v > y->v ? -1 : 0);
}

static bool host_is(const st_ans_row *item, const char *host)
{
    return host == NULL || strcmp(st_ans_label(item, "host"), host) == 0;
}

/* The top n items of ans (of host, when given) by value as
 * [{key: label, bytes: v}], largest first. */
static json_t *top_items(const st_answer *ans, const char *key, const char *host, size_t n)
{
    size_t cnt = ans != NULL ? ans->n : 0;
    ranked *rk = calloc(cnt + 1, sizeof(*rk));
    size_t k = 0;
    json_t *out = json_array();
    if (rk == NULL) {
        return out;
    }
    for (size_t i = 0; i < cnt; i++) {
        const st_ans_row *item = &ans->rows[i];
        double v = st_ans_value(item);
        if (isfinite(v) && v > 0 && host_is(item, host)) {
            rk[k++] = (ranked){item, v};
        }
    }
    qsort(rk, k, sizeof(*rk), by_value_desc);
    for (size_t i = 0; i < k && i < n; i++) {
        json_array_append_new(
            out, json_pack("{s:s,s:f}", key, st_ans_label(rk[i].item, key), "bytes", rk[i].v));
    }
    free(rk);
    return out;
}

/* "a.js (120 KiB), b.js (80 KiB)" of a top_items list. */
static void names_of(const json_t *top, const char *key, char *buf, size_t cap)
{
    st_rbuf b;
    st_rbuf_init(&b, buf, cap);
    for (size_t i = 0; i < json_array_size(top); i++) {
        const json_t *o = json_array_get(top, i);
        st_rbuf_addf(&b, "%s%s (%.0f KiB)", i ? ", " : "",
                     json_string_value(json_object_get(o, key)),
                     json_number_value(json_object_get(o, "bytes")) / KIB);
    }
}

/* The sum of the values of host's items. */
static double host_sum(const st_answer *ans, const char *host)
{
    double sum = 0;
    for (size_t i = 0; ans != NULL && i < ans->n; i++) {
        double v = st_ans_value(&ans->rows[i]);
        sum += isfinite(v) && host_is(&ans->rows[i], host) ? v : 0;
    }
    return sum;
}

/* ---- CODE_SPLITTING ---- */

static json_t *split_impl(const char *chunk, bool entry, double bytes, double limit,
                          double chunk_limit)
{
    json_t *webpack =
        json_pack("{s:{s:{s:s,s:f,s:{s:{s:s,s:s,s:i}}}}}", "optimization", "splitChunks", "chunks",
                  "all", "maxSize", chunk_limit, "cacheGroups", "vendor", "test",
                  "[\\\\/]node_modules[\\\\/]", "name", "vendor", "priority", -10);
    return json_pack(
        "{s:s,s:f,s:f,s:s,s:s,s:o,s:s}", "chunk", chunk, "gzip_bytes", bytes, "limit_bytes", limit,
        "change",
        entry ? "move routes and heavy dependencies out of the entry: load them on demand "
                "with dynamic import() so the first page ships only what it renders"
              : "split the chunk: its lazily loaded parts become their own chunks",
        "code",
        "const Settings = React.lazy(() => import('./routes/Settings'));\n"
        "// or, outside React: const { render } = await import('./heavy-module.js');",
        "webpack", webpack, "vite",
        "build: { rollupOptions: { output: { manualChunks(id) { "
        "if (id.includes('node_modules')) return 'vendor'; } } } }");
}

static int chunk_candidate(st_eng *e, const st_rule *r, const st_ans_row *item, double bytes,
                           double limit, double chunk_limit, double total, st_candidates *out)
{
    static const char *const series[] = {"frontend.bundle.gzip_bytes"};
    const char *chunk = st_ans_label(item, "chunk");
    bool entry = strcmp(st_ans_label(item, "entry"), "true") == 0;
    int64_t w = st_eng_window(e);
    st_candidate c;
    st_candidate_init(&c);
    st_rules_entity(&c, item, "chunk,host");
    st_rules_verdict(&c, r, bytes, limit, false);
    c.traffic_share = total > 0 ? fmin(bytes / total, 1.0) : 1.0;
    st_rules_summary(&c, "%s chunk %s is %.0f KiB gzipped (limit %.0f KiB)",
                     entry ? "entry" : "lazy", chunk, bytes / KIB, limit / KIB);
    st_rules_evidence(e, &c, series, 1,
                      json_pack("{s:s,s:b,s:f,s:f}", "chunk", chunk, "entry", entry, "gzip_bytes",
                                bytes, "total_gzip_bytes", total),
                      limit, w, json_pack("[s]", st_ans_label(item, "host")));
    c.implementation = split_impl(chunk, entry, bytes, limit, chunk_limit);
    return st_rules_add(out, &c);
}

static int total_candidate(st_eng *e, const st_rule *r, const char *host, double total,
                           double limit, double chunk_limit, const st_answer *chunks,
                           st_candidates *out)
{
    static const char *const series[] = {"frontend.bundle.total_gzip_bytes",
                                         "frontend.bundle.gzip_bytes"};
    json_t *top = top_items(chunks, "chunk", host, TOP_N);
    char names[ST_SUMMARY_MAX];
    st_candidate c;
    json_t *impl;
    names_of(top, "chunk", names, sizeof(names));
    st_candidate_init(&c);
    snprintf(c.entity, sizeof(c.entity), "bundle=total host=%s", host);
    json_object_set_new(c.labels, "bundle", json_string("total"));
    json_object_set_new(c.labels, "host", json_string(host));
    st_rules_verdict(&c, r, total, limit, false);
    st_rules_summary(&c, "bundle total %.0f KiB gzipped (limit %.0f KiB); largest: %s", total / KIB,
                     limit / KIB, names);
    st_rules_evidence(e, &c, series, 2,
                      json_pack("{s:f,s:O}", "total_gzip_bytes", total, "largest_chunks", top),
                      limit, st_eng_window(e), json_pack("[s]", host));
    impl = split_impl("(all)", true, total, limit, chunk_limit);
    json_object_set_new(impl, "largest_chunks", top);
    c.implementation = impl;
    return st_rules_add(out, &c);
}

/* Totals per host: the scanner's own total, else the sum of its chunks. */
static int totals_check(st_eng *e, const st_rule *r, const st_answer *chunks, double chunk_limit,
                        st_candidates *out)
{
    double limit = st_eng_setting(e, "bundle_total_bytes");
    json_t *hosts = st_rules_hosts(chunks, "host", NULL, NULL);
    st_answer *tot = NULL;
    int rv = st_rules_last(e, "frontend.bundle.total_gzip_bytes", "host", NULL, 0, st_eng_window(e),
                           &tot);
    for (size_t i = 0; rv == ST_OK && i < json_array_size(hosts); i++) {
        const char *h = json_string_value(json_array_get(hosts, i));
        st_ans_row key = {.labels = json_pack("{s:s}", "host", h)};
        double total = st_rules_lookup(tot, &key, "host");
        json_decref(key.labels);
        total = isfinite(total) ? total : host_sum(chunks, h);
        if (total > limit) {
            rv = total_candidate(e, r, h, total, limit, chunk_limit, chunks, out);
        }
    }
    st_answer_unref(tot);
    json_decref(hosts);
    return rv;
}

int st_check_bundle_size(st_eng *e, const st_rule *r, st_candidates *out)
{
    double main_limit = st_rules_threshold(e, r, "bundle_main_bytes");
    double chunk_limit = st_eng_setting(e, "bundle_chunk_bytes");
    st_answer *chunks = NULL;
    int rv = st_rules_last(e, "frontend.bundle.gzip_bytes", "chunk,entry,host", NULL, 0,
                           st_eng_window(e), &chunks);
    for (size_t i = 0; rv == ST_OK && i < chunks->n; i++) {
        const st_ans_row *item = &chunks->rows[i];
        bool entry = strcmp(st_ans_label(item, "entry"), "true") == 0;
        double limit = entry ? main_limit : chunk_limit;
        double bytes = st_ans_value(item);
        if (bytes > limit) {
            rv = chunk_candidate(e, r, item, bytes, limit, chunk_limit,
                                 host_sum(chunks, st_ans_label(item, "host")), out);
        }
    }
    if (rv == ST_OK) {
        rv = totals_check(e, r, chunks, chunk_limit, out);
    }
    st_answer_unref(chunks);
    return rv;
}

/* ---- TREE_SHAKING, DEDUPLICATION ---- */

/* What a waste rule reads: the total per host and its breakdowns. */
typedef struct waste {
    const char *metric;  /* bytes per host */
    const char *chunks;  /* bytes per chunk and host */
    const char *modules; /* bytes per module and host, or NULL */
    const char *what;    /* "unused", "duplicate" */
    json_t *(*impl)(double bytes, json_t *chunks, json_t *modules);
} waste;

/* "lodash" of ".../node_modules/lodash/debounce.js", "@scope/pkg" of a
 * scoped path; false (and the path itself) for the application's own
 * modules, which only a shared chunk deduplicates. */
static bool package_of(const char *path, char *out, size_t cap)
{
    const char *p = path;
    const char *nm;
    size_t n;
    while ((nm = strstr(p, "node_modules/")) != NULL) {
        p = nm + strlen("node_modules/");
    }
    if (p == path) {
        snprintf(out, cap, "%.*s", st_rules_cut(path, (int)cap - 1), path);
        return false;
    }
    n = strcspn(p, "/");
    if (p[0] == '@' && p[n] == '/') {
        n += 1 + strcspn(p + n + 1, "/");
    }
    snprintf(out, cap, "%.*s", (int)ST_MIN(n, cap - 1), p);
    return n > 0 && n < cap;
}

static json_t *unused_impl(double bytes, json_t *chunks, json_t *modules)
{
    json_decref(modules); /* tree shaking works per chunk */
    return json_pack(
        "{s:f,s:o,s:{s:[s,s]},s:{s:s,s:{s:b,s:b,s:b}},s:s,s:s}", "unused_bytes", bytes, "chunks",
        chunks, "package_json", "sideEffects", "*.css", "*.scss", "webpack", "mode", "production",
        "optimization", "usedExports", 1, "sideEffects", 1, "innerGraph", 1, "imports",
        "import { debounce } from 'lodash-es'; // named ESM imports, not import _ from 'lodash'",
        "change",
        "mark the package side-effect free (package.json sideEffects, CSS kept), use named "
        "imports of ES modules, and drop the code the coverage shows unused in these chunks");
}

static json_t *dedupe_impl(double bytes, json_t *chunks, json_t *modules)
{
    json_t *pkgs = json_array();
    char alias[TOP_N * (2 * ST_RULES_LABEL_MAX + 64)];
    st_rbuf b;
    st_rbuf_init(&b, alias, sizeof(alias));
    st_rbuf_puts(&b, "resolve: { alias: {");
    for (size_t i = 0; i < json_array_size(modules); i++) {
        json_t *m = json_array_get(modules, i);
        char pkg[ST_RULES_LABEL_MAX + 1];
        if (!package_of(json_string_value(json_object_get(m, "module")), pkg, sizeof(pkg))) {
            continue;
        }
        json_object_set_new(m, "package", json_string(pkg));
        json_array_append_new(pkgs, json_string(pkg));
        st_rbuf_addf(&b, "%s '%s': path.resolve('./node_modules/%s')",
                     json_array_size(pkgs) > 1 ? "," : "", pkg, pkg);
    }
    st_rbuf_puts(&b, " } }");
    return json_pack("{s:f,s:o,s:o,s:{s:{s:o}},s:s,s:{s:{s:{s:s,s:{s:{s:i,s:b,s:i}}}}},s:s}",
                     "duplicate_bytes", bytes, "chunks", chunks, "modules", modules, "vite",
                     "resolve", "dedupe", pkgs, "webpack_alias", alias, "webpack", "optimization",
                     "splitChunks", "chunks", "all", "cacheGroups", "shared", "minChunks", 2,
                     "reuseExistingChunk", 1, "priority", -5, "npm",
                     "npm dedupe && npm ls --all | grep deduped");
}

static int waste_candidate(st_eng *e, const st_rule *r, const waste *w, const char *host,
                           double bytes, const st_answer *chunks, const st_answer *modules,
                           st_candidates *out)
{
    const char *series[] = {w->metric, w->chunks, w->modules};
    double thr = st_eng_threshold(e, r);
    json_t *top_chunks = top_items(chunks, "chunk", host, TOP_N);
    json_t *top_mods = top_items(modules, "module", host, TOP_N);
    char names[ST_SUMMARY_MAX];
    st_candidate c;
    names_of(json_array_size(top_mods) ? top_mods : top_chunks,
             json_array_size(top_mods) ? "module" : "chunk", names, sizeof(names));
    st_candidate_init(&c);
    snprintf(c.entity, sizeof(c.entity), "host=%s", host);
    json_object_set_new(c.labels, "host", json_string(host));
    st_rules_verdict(&c, r, bytes, thr, false);
    st_rules_summary(&c, "bundles on %s ship %.0f KiB of %s code%s%s", host, bytes / KIB, w->what,
                     names[0] ? ": " : "", names);
    st_rules_evidence(
        e, &c, series, w->modules != NULL ? 3 : 2,
        json_pack("{s:f,s:O,s:O}", "bytes", bytes, "chunks", top_chunks, "modules", top_mods), thr,
        st_eng_window(e), json_pack("[s]", host));
    c.implementation = w->impl(bytes, top_chunks, top_mods);
    return st_rules_add(out, &c);
}

static int waste_check(st_eng *e, const st_rule *r, const waste *w, st_candidates *out)
{
    int64_t win = st_eng_window(e);
    double thr = st_eng_threshold(e, r);
    st_answer *tot = NULL;
    st_answer *chunks = NULL;
    st_answer *mods = NULL;
    int rv = st_rules_last(e, w->metric, "host", NULL, 0, win, &tot);
    if (rv == ST_OK) {
        rv = st_rules_last(e, w->chunks, "chunk,host", NULL, 0, win, &chunks);
    }
    if (rv == ST_OK && w->modules != NULL) {
        rv = st_rules_last(e, w->modules, "module,host", NULL, 0, win, &mods);
    }
    for (size_t i = 0; rv == ST_OK && i < tot->n; i++) {
        const st_ans_row *item = &tot->rows[i];
        double bytes = st_ans_value(item);
        if (bytes > thr) {
            rv = waste_candidate(e, r, w, st_ans_label(item, "host"), bytes, chunks, mods, out);
        }
    }
    st_answer_unref(tot);
    st_answer_unref(chunks);
    st_answer_unref(mods);
    return rv;
}

int st_check_unused_code(st_eng *e, const st_rule *r, st_candidates *out)
{
    static const waste w = {"frontend.bundle.unused_bytes", "frontend.bundle.chunk_unused_bytes",
                            NULL, "unused", unused_impl};
    return waste_check(e, r, &w, out);
}

int st_check_duplicate_code(st_eng *e, const st_rule *r, st_candidates *out)
{
    static const waste w = {"frontend.bundle.duplicate_bytes",
                            "frontend.bundle.chunk_duplicate_bytes",
                            "frontend.bundle.duplicate_module_bytes", "duplicate", dedupe_impl};
    return waste_check(e, r, &w, out);
}

/* ---- COMPONENT_OPTIMIZATION ---- */

static json_t *component_impl(const char *name, double p95)
{
    char memo[ST_RULES_LABEL_MAX + 64];
    char prof[ST_RULES_LABEL_MAX + 128];
    snprintf(memo, sizeof(memo), "export default React.memo(%s);", name);
    snprintf(prof, sizeof(prof),
             "<Profiler id=\"%s\" onRender={(id, phase, ms) => ms > 16 && console.warn(id, "
             "phase, ms)}>",
             name);
    return json_pack("{s:s,s:f,s:s,s:[s+,s,s,s]}", "component", name, "render_p95_ms", p95 * 1000,
                     "code", memo, "changes", memo, " so it re-renders only when its props change",
                     "memoize derived data and handlers: const rows = useMemo(() => "
                     "sortRows(items), [items]); const onPick = useCallback(pick, []);",
                     "virtualize long lists: <FixedSizeList height={600} itemCount={rows.length} "
                     "itemSize={32}> (react-window) renders only the visible rows",
                     prof);
}

int st_check_slow_component(st_eng *e, const st_rule *r, st_candidates *out)
{
    static const char *const series[] = {"frontend.component.render"};
    double thr = st_eng_threshold(e, r);
    double min = st_eng_setting(e, "min_samples");
    int64_t w = st_eng_window(e);
    st_answer *p95 = NULL;
    st_answer *cnt = NULL;
    int rv = st_eng_query(e, "frontend.component.render", "p95", "component", NULL, 0, w, &p95);
    double total;
    if (rv == ST_OK) {
        rv = st_eng_query(e, "frontend.component.render", "count", "component", NULL, 0, w, &cnt);
    }
    total = st_rules_total(cnt);
    for (size_t i = 0; rv == ST_OK && i < p95->n; i++) {
        const st_ans_row *item = &p95->rows[i];
        const char *name = st_ans_label(item, "component");
        double v = st_ans_value(item);
        double n = st_rules_lookup(cnt, item, "component");
        st_candidate c;
        if (!(v > thr) || !(n >= min)) {
            continue;
        }
        st_candidate_init(&c);
        st_rules_entity(&c, item, "component");
        st_rules_verdict(&c, r, v, thr, false);
        c.traffic_share = total > 0 ? n / total : 0;
        st_rules_summary(&c,
                         "component %s renders in %.1f ms at p95 (budget %.0f ms) over %.0f "
                         "renders",
                         name, v * 1000, thr * 1000, n);
        st_rules_evidence(e, &c, series, 1, json_pack("{s:f,s:f}", "render_p95_s", v, "renders", n),
                          thr, w, NULL);
        c.implementation = component_impl(name, v);
        rv = st_rules_add(out, &c);
    }
    st_answer_unref(p95);
    st_answer_unref(cnt);
    return rv;
}
