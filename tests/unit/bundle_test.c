/* Unit tests for the bundle sampler: a build directory written into a
 * temporary directory, gzip sizes checked against zlib run here, Vite
 * manifests, webpack stats and coverage exports with exact expected bytes,
 * malformed and oversize inputs, symbolic links, limits and the cache. */
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
#include "samplers/bundle.h"
#include "samplers/samplers.h"
#include "timeutil.h"
#include "util.h"
#include "tmpdir.h"

#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define INTERVAL 1000

typedef struct fixture {
    char root[256];
    char dist[300];
    st_sampler_env env;
    st_cfg_doc *doc;
    const st_sampler_def *def;
    void *ctx;
    st_fold *fold;
    Strata__V1__Frame *frame;
    int64_t t_ms;
} fixture;

/* ---- files ---- */

static void write_path(const char *path, const void *data, size_t len)
{
    char dir[1024];
    char *slash;
    int fd;
    snprintf(dir, sizeof(dir), "%s", path);
    slash = strrchr(dir, '/');
    *slash = '\0';
    assert_int_equal(st_mkdir_p(dir), ST_OK);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
}

/* Writes rel below the build directory. */
static void put_bytes(fixture *fx, const char *rel, const void *data, size_t len)
{
    char path[1024];
    assert_true(snprintf(path, sizeof(path), "%s/%s", fx->dist, rel) < (int)sizeof(path));
    write_path(path, data, len);
}

static void put(fixture *fx, const char *rel, const char *text)
{
    put_bytes(fx, rel, text, strlen(text));
}

/* Deterministic JS-looking text of n bytes (compresses, but not to nothing). */
static char *js_text(size_t n, uint32_t seed)
{
    static const char *const words[] = {
        "function", "return", "const", "let",    "this.state", "=>",   "{",     "}",     "(", ")",
        ";",        "props",  "value", "render", "0x1f",       "null", "async", "await", "\n"};
    char *p = malloc(n + 1);
    size_t k = 0;
    uint32_t x = seed * 2654435761u + 1;
    assert_non_null(p);
    while (k < n) {
        const char *w;
        x = x * 1664525u + 1013904223u;
        w = words[(x >> 16) % (sizeof(words) / sizeof(words[0]))];
        for (size_t i = 0; w[i] != '\0' && k < n; i++) {
            p[k++] = w[i];
        }
        if (k < n) {
            p[k++] = (x >> 8) % 3 == 0 ? (char)('a' + (x >> 4) % 26) : ' ';
        }
    }
    p[n] = '\0';
    return p;
}

/* The gzip size zlib gives for p[0..n): the reference for the sampler. */
static uint64_t gzip_size(const void *p, size_t n, int level)
{
    static unsigned char out[1 << 16];
    z_stream z;
    uint64_t total;
    int rc;
    memset(&z, 0, sizeof(z));
    assert_int_equal(deflateInit2(&z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
    z.next_in = (Bytef *)(uintptr_t)p;
    z.avail_in = (uInt)n;
    do {
        z.next_out = out;
        z.avail_out = sizeof(out);
        rc = deflate(&z, Z_FINISH);
    } while (rc == Z_OK);
    assert_int_equal(rc, Z_STREAM_END);
    total = z.total_out;
    deflateEnd(&z);
    return total;
}

/* ---- fixture ---- */

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    assert_non_null(st_test_mkdtemp(fx->root, sizeof(fx->root), "bundle"));
    snprintf(fx->dist, sizeof(fx->dist), "%s/dist", fx->root);
    assert_int_equal(st_mkdir_p(fx->dist), ST_OK);
    fx->env.proc_root = "/proc";
    fx->env.sys_root = "/sys";
    fx->env.data_dir = fx->root;
    fx->env.interval_ms = INTERVAL;
    fx->t_ms = 1000000;
    assert_int_equal(st_fold_new(&fx->fold), ST_OK);
    *state = fx;
    return 0;
}

static void free_frame(fixture *fx)
{
    if (fx->frame != NULL) {
        strata__v1__frame__free_unpacked(fx->frame, NULL);
        fx->frame = NULL;
    }
}

static void stop(fixture *fx)
{
    if (fx->def != NULL) {
        fx->def->fini(fx->ctx);
        fx->def = NULL;
    }
    st_cfg_doc_free(fx->doc);
    fx->doc = NULL;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    stop(fx);
    st_fold_free(fx->fold);
    free_frame(fx);
    st_test_rmtree(fx->root);
    free(fx);
    return 0;
}

/* Starts the sampler on the build directory with extra YAML lines (each
 * starting with two spaces, or NULL). */
static int start(fixture *fx, const char *extra, st_cfg_error *err)
{
    char yaml[4096];
    int rv;
    stop(fx);
    snprintf(yaml, sizeof(yaml), "dir: %s\n%s", fx->dist, extra != NULL ? extra : "");
    assert_int_equal(st_cfg_load_string("test.yaml", yaml, strlen(yaml), &fx->doc, err), ST_OK);
    fx->def = st_sampler_find("bundle");
    assert_non_null(fx->def);
    rv = fx->def->init(fx->doc, st_cfg_root(fx->doc), &fx->env, &fx->ctx, err);
    if (rv != ST_OK) {
        fx->def = NULL;
    }
    return rv;
}

static void start_ok(fixture *fx, const char *extra)
{
    st_cfg_error err = {""};
    int rv = start(fx, extra, &err);
    if (rv != ST_OK) {
        fail_msg("init: %s", err.msg);
    }
}

/* One run in a fresh interval, its samples taken into fx->frame. */
static int run(fixture *fx)
{
    st_emit *e;
    int rv;
    fx->t_ms += INTERVAL;
    e = st_fold_begin(fx->fold, fx->t_ms, INTERVAL);
    assert_non_null(e);
    rv = fx->def->sample(fx->ctx, e);
    free_frame(fx);
    fx->frame = malloc(sizeof(*fx->frame));
    assert_non_null(fx->frame);
    strata__v1__frame__init(fx->frame);
    assert_int_equal(st_fold_take(fx->fold, INT64_MAX, fx->frame), ST_OK);
    return rv;
}

static void run_ok(fixture *fx)
{
    assert_int_equal(run(fx), ST_OK);
}

/* run() that also tells how long the sampler itself took. */
static int64_t run_timed(fixture *fx)
{
    st_emit *e;
    int64_t t0;
    int64_t ns;
    fx->t_ms += INTERVAL;
    e = st_fold_begin(fx->fold, fx->t_ms, INTERVAL);
    assert_non_null(e);
    t0 = st_time_mono_ns();
    assert_int_equal(fx->def->sample(fx->ctx, e), ST_OK);
    ns = st_time_mono_ns() - t0;
    free_frame(fx);
    fx->frame = malloc(sizeof(*fx->frame));
    assert_non_null(fx->frame);
    strata__v1__frame__init(fx->frame);
    assert_int_equal(st_fold_take(fx->fold, INT64_MAX, fx->frame), ST_OK);
    return ns;
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

/* The series with this name whose labels include the given (k, v, ...,
 * NULL) pairs; NULL when none. Fails on two. */
static const Strata__V1__Series *vfind(fixture *fx, const char *name, va_list ap0)
{
    const Strata__V1__Series *hit = NULL;
    for (size_t i = 0; i < fx->frame->n_series; i++) {
        const Strata__V1__Series *s = fx->frame->series[i];
        bool ok = strcmp(s->name, name) == 0;
        va_list ap;
        va_copy(ap, ap0);
        for (const char *k = va_arg(ap, const char *); ok && k != NULL;
             k = va_arg(ap, const char *)) {
            const char *v = va_arg(ap, const char *);
            const char *have = label_of(s, k);
            ok = have != NULL && strcmp(have, v) == 0;
        }
        va_end(ap);
        if (ok) {
            assert_null(hit);
            hit = s;
        }
    }
    return hit;
}

static const Strata__V1__Series *find(fixture *fx, const char *name, ...)
{
    const Strata__V1__Series *s;
    va_list ap;
    va_start(ap, name);
    s = vfind(fx, name, ap);
    va_end(ap);
    return s;
}

/* The value of the one matching series, failing when there is none. */
static double value(fixture *fx, const char *name, ...)
{
    const Strata__V1__Series *s;
    va_list ap;
    va_start(ap, name);
    s = vfind(fx, name, ap);
    va_end(ap);
    if (s == NULL) {
        fail_msg("no series %s with those labels", name);
    }
    assert_int_equal(st_series_npoints(s), 1);
    assert_int_equal(s->layer, STRATA__V1__LAYER__FRONTEND);
    return st_series_value(s, 0);
}

static size_t count_named(fixture *fx, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < fx->frame->n_series; i++) {
        n += strcmp(fx->frame->series[i]->name, name) == 0;
    }
    return n;
}

static double gz(fixture *fx, const char *chunk)
{
    return value(fx, "frontend.bundle.gzip_bytes", "chunk", chunk, NULL);
}

static const char *entry_of(fixture *fx, const char *chunk)
{
    const Strata__V1__Series *s = find(fx, "frontend.bundle.gzip_bytes", "chunk", chunk, NULL);
    assert_non_null(s);
    return label_of(s, "entry");
}

static double errors_of(fixture *fx, const char *source)
{
    return value(fx, "frontend.bundle.errors", "source", source, NULL);
}

/* ---- gzip sizes and the entry heuristic ---- */

static void test_gzip_sizes(void **state)
{
    fixture *fx = *state;
    char *big = js_text(300000, 1); /* several 64 KiB reads: streaming */
    char *small = js_text(5000, 2);
    const char *css = "body{margin:0;color:#123456}.btn{padding:4px 8px;border:1px solid red}\n";
    uint64_t want_big = gzip_size(big, 300000, 9);
    uint64_t want_small = gzip_size(small, 5000, 9);
    uint64_t want_css = gzip_size(css, strlen(css), 9);
    put_bytes(fx, "index-abc123.js", big, 300000);
    put_bytes(fx, "assets/chunk-9f8e.mjs", small, 5000);
    put(fx, "assets/main.4d5e.css", css);
    put(fx, "assets/application.js", "let x = 1;\n");
    put(fx, "assets/chunk-9f8e.mjs.map", "{}");
    put(fx, "robots.txt", "User-agent: *\n");
    put(fx, "empty.js", "");
    start_ok(fx, "interval: 1s\n");
    run_ok(fx);

    assert_int_equal((uint64_t)gz(fx, "index-abc123.js"), want_big);
    assert_int_equal((uint64_t)gz(fx, "assets/chunk-9f8e.mjs"), want_small);
    assert_int_equal((uint64_t)gz(fx, "assets/main.4d5e.css"), want_css);
    assert_int_equal((uint64_t)gz(fx, "empty.js"), gzip_size("", 0, 9));
    assert_int_equal(count_named(fx, "frontend.bundle.gzip_bytes"), 5);
    assert_null(find(fx, "frontend.bundle.gzip_bytes", "chunk", "robots.txt", NULL));
    assert_null(find(fx, "frontend.bundle.gzip_bytes", "chunk", "assets/chunk-9f8e.mjs.map", NULL));
    assert_string_equal(
        label_of(find(fx, "frontend.bundle.gzip_bytes", "chunk", "assets/main.4d5e.css", NULL),
                 "type"),
        "css");
    assert_string_equal(
        label_of(find(fx, "frontend.bundle.gzip_bytes", "chunk", "index-abc123.js", NULL), "type"),
        "js");

    /* No manifest, no stats: index*, main*, app* are entries. */
    assert_string_equal(entry_of(fx, "index-abc123.js"), "true");
    assert_string_equal(entry_of(fx, "assets/main.4d5e.css"), "true");
    assert_string_equal(entry_of(fx, "assets/chunk-9f8e.mjs"), "false");
    assert_string_equal(entry_of(fx, "assets/application.js"), "false");

    assert_int_equal((uint64_t)value(fx, "frontend.bundle.total_gzip_bytes", NULL),
                     want_big + want_small + want_css + gzip_size("let x = 1;\n", 11, 9) +
                         gzip_size("", 0, 9));
    assert_int_equal((uint64_t)value(fx, "frontend.bundle.total_bytes", NULL),
                     300000 + 5000 + strlen(css) + 11);
    assert_int_equal((int)value(fx, "frontend.bundle.files", NULL), 5);
    assert_int_equal((int)errors_of(fx, "files"), 0);
    assert_null(find(fx, "frontend.bundle.unused_bytes", NULL));

    /* Another zlib level gives that level's sizes. */
    start_ok(fx, "interval: 1s\ngzip_level: 1\n");
    run_ok(fx);
    assert_int_equal((uint64_t)gz(fx, "index-abc123.js"), gzip_size(big, 300000, 1));
    assert_true(gzip_size(big, 300000, 1) != want_big);
    free(big);
    free(small);
}

/* ---- Vite manifest ---- */

static const char *vite_manifest =
    "{\n"
    "  \"src/main.ts\": {\"file\": \"assets/main-1a2b.js\", \"src\": \"src/main.ts\",\n"
    "    \"isEntry\": true, \"imports\": [\"_vendor-3c4d.js\"], \"css\": "
    "[\"assets/main-5e6f.css\"],\n"
    "    \"dynamicImports\": [\"src/lazy.ts\"]},\n"
    "  \"src/admin.ts\": {\"file\": \"assets/admin-7a8b.js\", \"isEntry\": true},\n"
    "  \"_vendor-3c4d.js\": {\"file\": \"assets/vendor-3c4d.js\", \"name\": \"vendor\"},\n"
    "  \"src/lazy.ts\": {\"file\": \"assets/lazy-9c0d.js\", \"isDynamicEntry\": true},\n"
    "  \"src/logo.svg\": {\"file\": \"assets/logo-1111.svg\"}\n"
    "}\n";

static void vite_files(fixture *fx)
{
    put(fx, "assets/main-1a2b.js", "import './vendor-3c4d.js'; console.log('main');\n");
    put(fx, "assets/admin-7a8b.js", "console.log('admin');\n");
    put(fx, "assets/vendor-3c4d.js", "export const v = 1;\n");
    put(fx, "assets/lazy-9c0d.js", "export default 2;\n");
    put(fx, "assets/main-5e6f.css", "body{color:red}\n");
    put(fx, "assets/index-0000.js", "console.log('not an entry by the manifest');\n");
}

static void test_vite_manifest(void **state)
{
    fixture *fx = *state;
    vite_files(fx);
    put(fx, ".vite/manifest.json", vite_manifest);
    start_ok(fx, "interval: 1s\n");
    run_ok(fx);
    assert_string_equal(entry_of(fx, "assets/main-1a2b.js"), "true");
    assert_string_equal(entry_of(fx, "assets/admin-7a8b.js"), "true");
    assert_string_equal(entry_of(fx, "assets/main-5e6f.css"), "true");
    assert_string_equal(entry_of(fx, "assets/vendor-3c4d.js"), "false");
    assert_string_equal(entry_of(fx, "assets/lazy-9c0d.js"), "false");
    assert_string_equal(entry_of(fx, "assets/index-0000.js"), "false"); /* no heuristic */
    assert_int_equal((int)errors_of(fx, "manifest"), 0);
    assert_int_equal((int)value(fx, "frontend.bundle.files", NULL), 6);

    /* A configured path is relative to dir. */
    start_ok(fx, "interval: 1s\nmanifest: .vite/manifest.json\n");
    run_ok(fx);
    assert_string_equal(entry_of(fx, "assets/admin-7a8b.js"), "true");
}

/* A manifest.json at the top that is a web app manifest is not an error:
 * the sampler falls back to names. */
static void test_pwa_manifest_ignored(void **state)
{
    fixture *fx = *state;
    put(fx, "manifest.json", "{\"name\": \"App\", \"icons\": [{\"src\": \"icon.png\"}]}");
    put(fx, "assets/index-1.js", "console.log(1);\n");
    start_ok(fx, "interval: 1s\n");
    run_ok(fx);
    assert_null(find(fx, "frontend.bundle.errors", "source", "manifest", NULL));
    assert_string_equal(entry_of(fx, "assets/index-1.js"), "true");
}

/* ---- webpack stats ---- */

static const char *webpack_stats =
    "{\"version\": \"5.90.0\", \"outputPath\": \"/app/dist\",\n"
    " \"entrypoints\": {\n"
    "   \"main\": {\"name\": \"main\", \"chunks\": [1], \"assets\": [{\"name\": \"js/main.js\", "
    "\"size\": 10}]},\n"
    "   \"admin\": {\"chunks\": [2], \"assets\": [\"js/admin.js\", \"css/admin.css\"]}},\n"
    " \"chunks\": [{\"id\": 1, \"files\": [\"js/main.js\"]}, {\"id\": 2}, {\"id\": 3}],\n"
    " \"modules\": [\n"
    "   {\"name\": \"./src/shared.js\", \"size\": 1000, \"chunks\": [1, 2]},\n"
    "   {\"name\": \"./node_modules/lib/index.js\", \"size\": 300, \"chunks\": [1, 2, 3]},\n"
    "   {\"name\": \"./src/only-main.js\", \"size\": 5000, \"chunks\": [1]},\n"
    "   {\"name\": \"./src/orphan.js\", \"size\": 70, \"chunks\": []},\n"
    "   {\"name\": \"./src/tiny.js\", \"size\": 7, \"chunks\": [2, 3]},\n"
    /* scope hoisting: util.js ships inside both concatenated entry modules */
    "   {\"name\": \"./src/main.js + 1 modules\", \"size\": 260, \"chunks\": [1], \"modules\": [\n"
    "     {\"name\": \"./src/main.js\", \"size\": 60, \"chunks\": []},\n"
    "     {\"name\": \"./src/util.js\", \"size\": 200, \"chunks\": []}]},\n"
    "   {\"name\": \"./src/admin.js + 1 modules\", \"size\": 250, \"chunks\": [2], \"modules\": [\n"
    "     {\"name\": \"./src/admin.js\", \"size\": 50, \"chunks\": [2]},\n"
    "     {\"name\": \"./src/util.js\", \"size\": 200, \"chunks\": []}]},\n"
    "   {\"name\": \"./src/util.js\", \"size\": 200, \"chunks\": []}\n"
    " ]}\n";

static void test_webpack_stats(void **state)
{
    fixture *fx = *state;
    put(fx, "static/js/main.js", "console.log('main');\n");
    put(fx, "static/js/admin.js", "console.log('admin');\n");
    put(fx, "static/css/admin.css", "a{b:c}\n");
    put(fx, "static/js/3.js", "console.log('three');\n");
    put(fx, "static/js/index.js", "console.log('index');\n");
    put_bytes(fx, "../stats.json", webpack_stats, strlen(webpack_stats));
    start_ok(fx, "interval: 1s\nwebpack_stats: ../stats.json\n");
    run_ok(fx);

    /* (2-1)*1000 + (3-1)*300 + (2-1)*7 + (2-1)*200 */
    assert_int_equal((uint64_t)value(fx, "frontend.bundle.duplicate_bytes", NULL), 1807);
    assert_int_equal((uint64_t)value(fx, "frontend.bundle.duplicate_module_bytes", "module",
                                     "./src/shared.js", NULL),
                     1000);
    assert_int_equal((uint64_t)value(fx, "frontend.bundle.duplicate_module_bytes", "module",
                                     "./node_modules/lib/index.js", NULL),
                     600);
    assert_int_equal((uint64_t)value(fx, "frontend.bundle.duplicate_module_bytes", "module",
                                     "./src/util.js", NULL),
                     200);
    assert_int_equal(count_named(fx, "frontend.bundle.duplicate_module_bytes"), 4);
    assert_null(
        find(fx, "frontend.bundle.duplicate_module_bytes", "module", "./src/only-main.js", NULL));
    assert_int_equal(count_named(fx, "frontend.bundle.chunk_duplicate_bytes"), 0);

    /* Asset names are relative to webpack's output path, a subdirectory. */
    assert_string_equal(entry_of(fx, "static/js/main.js"), "true");
    assert_string_equal(entry_of(fx, "static/js/admin.js"), "true");
    assert_string_equal(entry_of(fx, "static/css/admin.css"), "true");
    assert_string_equal(entry_of(fx, "static/js/3.js"), "false");
    assert_string_equal(entry_of(fx, "static/js/index.js"), "false");
    assert_int_equal((int)errors_of(fx, "webpack_stats"), 0);
}

/* Only the ST_BUNDLE_TOP largest duplicated modules get a series. */
static void test_webpack_top_modules(void **state)
{
    fixture *fx = *state;
    char *stats = malloc(1 << 16);
    size_t k = 0;
    uint64_t total = 0;
    assert_non_null(stats);
    k += (size_t)snprintf(stats + k, 1024, "{\"modules\": [");
    for (int i = 1; i <= 25; i++) {
        k += (size_t)snprintf(stats + k, 1024,
                              "%s{\"name\": \"m%02d\", \"size\": %d, \"chunks\": "
                              "[1, 2]}",
                              i > 1 ? "," : "", i, i * 10);
        total += (uint64_t)i * 10;
    }
    k += (size_t)snprintf(stats + k, 1024, "]}");
    put_bytes(fx, "stats.json", stats, k);
    put(fx, "a.js", "1");
    start_ok(fx, "interval: 1s\nwebpack_stats: stats.json\n");
    run_ok(fx);
    assert_int_equal((uint64_t)value(fx, "frontend.bundle.duplicate_bytes", NULL), total);
    assert_int_equal(count_named(fx, "frontend.bundle.duplicate_module_bytes"), ST_BUNDLE_TOP);
    assert_int_equal(
        (int)value(fx, "frontend.bundle.duplicate_module_bytes", "module", "m25", NULL), 250);
    assert_int_equal(
        (int)value(fx, "frontend.bundle.duplicate_module_bytes", "module", "m16", NULL), 160);
    assert_null(find(fx, "frontend.bundle.duplicate_module_bytes", "module", "m15", NULL));
    /* Stats without entrypoints: the name heuristic still decides entries. */
    assert_string_equal(entry_of(fx, "a.js"), "false");
    free(stats);
}

/* ---- duplicates without stats: content-defined blocks ---- */

static void test_block_duplicates(void **state)
{
    fixture *fx = *state;
    char *shared = js_text(16384, 7);
    char *u1 = js_text(3000, 8);
    char *u2 = js_text(5000, 9);
    char *u3 = js_text(4000, 10);
    size_t n1 = 3000 + 16384 + 3000;
    char *a = malloc(n1);
    char *b = malloc(5000 + 16384);
    char *twice = malloc(2 * 4000);
    double dup;
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(twice);
    memcpy(a, u1, 3000);
    memcpy(a + 3000, shared, 16384);
    memcpy(a + 3000 + 16384, u1, 3000); /* a repeat inside one file is not counted */
    memcpy(b, u2, 5000);
    memcpy(b + 5000, shared, 16384);
    memcpy(twice, u3, 4000);
    memcpy(twice + 4000, u3, 4000);
    put_bytes(fx, "a.js", a, n1);
    put_bytes(fx, "b.js", b, 5000 + 16384);
    put_bytes(fx, "c.js", twice, 8000);
    start_ok(fx, "interval: 1s\n");
    run_ok(fx);
    dup = value(fx, "frontend.bundle.duplicate_bytes", NULL);
    /* The shared 16 KiB, less at most the first and the last block of the run
     * (each at most ST_BUNDLE_BLOCK_MAX) that straddle its edges. */
    if (dup > 16384 || dup < 16384 - 2 * ST_BUNDLE_BLOCK_MAX) {
        fail_msg("duplicate bytes %.0f, want about 16384", dup);
    }
    /* b.js comes after a.js in path order: the copy is charged to it. */
    assert_true(value(fx, "frontend.bundle.chunk_duplicate_bytes", "chunk", "b.js", NULL) == dup);
    assert_null(find(fx, "frontend.bundle.chunk_duplicate_bytes", "chunk", "a.js", NULL));
    assert_null(find(fx, "frontend.bundle.chunk_duplicate_bytes", "chunk", "c.js", NULL));

    /* Two identical files: all of the second is a duplicate but a tail block
     * under ST_BUNDLE_BLOCK_MIN bytes. */
    stop(fx);
    st_test_rmtree(fx->dist);
    put_bytes(fx, "x.js", shared, 16384);
    put_bytes(fx, "y.js", shared, 16384);
    start_ok(fx, "interval: 1s\n");
    run_ok(fx);
    dup = value(fx, "frontend.bundle.duplicate_bytes", NULL);
    assert_true(dup <= 16384 && dup > 16384 - ST_BUNDLE_BLOCK_MIN);
    free(shared);
    free(u1);
    free(u2);
    free(u3);
    free(a);
    free(b);
    free(twice);
}

/* ---- coverage ---- */

static void test_coverage(void **state)
{
    fixture *fx = *state;
    char *a = js_text(1000, 3);
    char *b = js_text(500, 4);
    /* "ab" U+00E9 "cd" U+1F600 "ef": 12 bytes, 9 UTF-16 units. */
    const char *c = "ab\xc3\xa9"
                    "cd\xf0\x9f\x98\x80"
                    "ef";
    const char *cov =
        "[{\"url\": \"http://localhost:4173/assets/a.js?v=1#top\", \"ranges\": "
        "[{\"start\": 0, \"end\": 100}, {\"start\": 50, \"end\": 300}, {\"start\": 900, "
        "\"end\": 1200}]},\n"
        " {\"url\": \"http://localhost:4173/assets/a.js?v=2\", \"ranges\": [{\"start\": 250, "
        "\"end\": 400}]},\n"
        " {\"url\": \"https://cdn.example/app/assets/b.css\", \"ranges\": []},\n"
        " {\"url\": \"https://cdn.example/assets/c.js\", \"text\": "
        "\"ab\\u00e9cd\\ud83d\\ude00ef\", "
        "\"ranges\": [{\"start\": 2, \"end\": 5}, {\"start\": 7, \"end\": 9}]},\n"
        " {\"url\": \"http://localhost:4173/other.js\", \"ranges\": [{\"start\": 0, \"end\": "
        "10}]}]\n";
    put_bytes(fx, "assets/a.js", a, 1000);
    put_bytes(fx, "assets/b.css", b, 500);
    put(fx, "assets/c.js", c);
    put(fx, "assets/d.js", "not in the coverage export\n");
    put(fx, "coverage.json", cov);
    start_ok(fx, "interval: 1s\ncoverage: coverage.json\n");
    run_ok(fx);
    /* a.js: used [0,400) and [900,1000): 1000 - 500 */
    assert_int_equal(
        (int)value(fx, "frontend.bundle.chunk_unused_bytes", "chunk", "assets/a.js", NULL), 500);
    assert_int_equal(
        (int)value(fx, "frontend.bundle.chunk_unused_bytes", "chunk", "assets/b.css", NULL), 500);
    /* c.js: UTF-16 [2,5) is U+00E9 "cd", bytes [2,6); [7,9) is "ef", bytes [10,12) */
    assert_int_equal(
        (int)value(fx, "frontend.bundle.chunk_unused_bytes", "chunk", "assets/c.js", NULL), 6);
    assert_null(find(fx, "frontend.bundle.chunk_unused_bytes", "chunk", "assets/d.js", NULL));
    assert_int_equal((int)value(fx, "frontend.bundle.unused_bytes", NULL), 1006);
    assert_int_equal((int)errors_of(fx, "coverage"), 0);
    free(a);
    free(b);
}

/* ---- malformed and oversize inputs ---- */

static void test_malformed_inputs(void **state)
{
    fixture *fx = *state;
    char big[3000];
    char path[1024];
    const char *js = "console.log('still measured');\n";
    memset(big, ' ', sizeof(big));
    memcpy(big, "{\"modules\": []}", 15);
    put(fx, "main.js", js);
    put(fx, ".vite/manifest.json", "{\"src/main.ts\": {\"file\": \"main.js\", \"isEntry\": tru");
    put_bytes(fx, "stats.json", big, sizeof(big)); /* valid JSON, over max_json_size */
    put(fx, "coverage.json", "{\"url\": \"not an array\"}");
    start_ok(fx, "interval: 1s\nwebpack_stats: stats.json\ncoverage: coverage.json\n"
                 "max_json_size: 2KiB\n");
    run_ok(fx);
    assert_int_equal((uint64_t)gz(fx, "main.js"), gzip_size(js, strlen(js), 9));
    assert_int_equal((int)errors_of(fx, "manifest"), 1);
    assert_int_equal((int)errors_of(fx, "webpack_stats"), 1);
    assert_int_equal((int)errors_of(fx, "coverage"), 1);
    assert_int_equal((int)errors_of(fx, "files"), 0);
    assert_string_equal(entry_of(fx, "main.js"), "true"); /* by name, as nothing else says */
    assert_null(find(fx, "frontend.bundle.unused_bytes", NULL));
    assert_int_equal((int)value(fx, "frontend.bundle.duplicate_bytes", NULL), 0);

    /* Fixed files are read again on the next scan; bad ranges are errors. */
    put(fx, ".vite/manifest.json",
        "{\"src/main.ts\": {\"file\": \"main.js\", \"isEntry\": false}}");
    put(fx, "stats.json", "{\"modules\": [{\"name\": \"x\", \"size\": -5, \"chunks\": [1, 2]}]}");
    put(fx, "coverage.json", "[{\"url\": \"main.js\", \"ranges\": [{\"start\": 9, \"end\": 3}]}]");
    run_ok(fx);
    assert_int_equal((int)errors_of(fx, "manifest"), 0);
    assert_string_equal(entry_of(fx, "main.js"), "false");
    assert_int_equal((int)errors_of(fx, "webpack_stats"), 1);
    assert_int_equal((int)errors_of(fx, "coverage"), 1);

    /* A configured file that is missing is an error too, and so is a FIFO
     * (read, it would block the agent). */
    start_ok(fx, "interval: 1s\ncoverage: nowhere.json\n");
    run_ok(fx);
    assert_int_equal((int)errors_of(fx, "coverage"), 1);
    snprintf(path, sizeof(path), "%s/cov.fifo", fx->dist);
    assert_int_equal(mkfifo(path, 0600), 0);
    start_ok(fx, "interval: 1s\ncoverage: cov.fifo\n");
    run_ok(fx);
    assert_int_equal((int)errors_of(fx, "coverage"), 1);
    assert_non_null(find(fx, "frontend.bundle.gzip_bytes", "chunk", "main.js", NULL));
}

/* The JSON readers on their own: limits and shapes. */
static void test_json_readers(void **state)
{
    st_bundle_set set = {0};
    st_bundle_webpack w;
    st_bundle_coverage cov = {0};
    st_bundle_why why = {""};
    const char *m =
        "{\"a\": {\"file\": \"./x/a.js\", \"isEntry\": true, \"css\": [\"x/a.css\", 5]}}";
    const char *w0 = "{\"x\": 1}";
    const char *w1 = "{\"children\": [{\"modules\": [{\"identifier\": \"x\", \"size\": 4, "
                     "\"chunks\": [1, \"two\", 3, 1]}, {\"size\": 9, \"chunks\": [1, 2]}]}]}";
    const char *c0 = "[{\"url\": 1, \"ranges\": []}]";
    const char *c1 = "[{\"url\": \"/a.js\", \"ranges\": [{\"start\": 0, \"end\": 1099511627777}]}]";
    (void)state;
    memset(&w, 0, sizeof(w));
    assert_int_equal(st_bundle_manifest_parse(m, strlen(m), &set, &why), ST_OK);
    assert_int_equal(set.n, 2);
    assert_true(st_bundle_set_has(&set, "x/a.js"));
    assert_true(st_bundle_set_match(&set, "static/x/a.css"));
    assert_false(st_bundle_set_match(&set, "static/y/a.css"));
    assert_false(st_bundle_set_match(&set, "xx/a.js"));
    assert_int_equal(st_bundle_manifest_parse("[1]", 3, &set, &why), ST_EPARSE);
    assert_int_equal(st_bundle_manifest_parse("{}", 2, &set, &why), ST_EUNSUPPORTED);
    assert_int_equal(st_bundle_manifest_parse("{", 1, &set, &why), ST_EPARSE);
    assert_non_null(strstr(why.msg, "line 1"));
    st_bundle_set_clear(&set);

    assert_int_equal(st_bundle_webpack_parse(w0, strlen(w0), &w, &why), ST_EPARSE);
    assert_int_equal(st_bundle_webpack_parse(w1, strlen(w1), &w, &why), ST_OK);
    assert_int_equal(w.dup_bytes, 8);
    assert_string_equal(w.top[0].name, "x"); /* 3 distinct chunks; no key: not counted */
    st_bundle_webpack_clear(&w);

    assert_int_equal(st_bundle_coverage_parse(c0, strlen(c0), &cov, &why), ST_EPARSE);
    assert_int_equal(st_bundle_coverage_parse(c1, strlen(c1), &cov, &why), ST_EPARSE);
    assert_int_equal(st_bundle_coverage_parse("[]", 2, &cov, &why), ST_OK);
    assert_int_equal(cov.n, 0);
    st_bundle_coverage_clear(&cov);
}

/* ---- symbolic links ---- */

static void test_symlinks(void **state)
{
    fixture *fx = *state;
    char path[1024];
    char target[1024];
    const char *inside = "console.log('inside');\n";
    put(fx, "inside.js", inside);
    snprintf(path, sizeof(path), "%s/outside/secret.js", fx->root);
    write_path(path, "console.log('secret');\n", 23);
    snprintf(path, sizeof(path), "%s/link-in.js", fx->dist);
    assert_int_equal(symlink("inside.js", path), 0);
    snprintf(path, sizeof(path), "%s/link-out.js", fx->dist);
    snprintf(target, sizeof(target), "%s/outside/secret.js", fx->root);
    assert_int_equal(symlink(target, path), 0);
    snprintf(path, sizeof(path), "%s/link-rel.js", fx->dist);
    assert_int_equal(symlink("../outside/secret.js", path), 0);
    snprintf(path, sizeof(path), "%s/linkdir", fx->dist);
    assert_int_equal(symlink("../outside", path), 0);
    snprintf(path, sizeof(path), "%s/loop", fx->dist);
    assert_int_equal(symlink(".", path), 0);
    snprintf(path, sizeof(path), "%s/pipe.js", fx->dist);
    assert_int_equal(mkfifo(path, 0600), 0); /* not a regular file: never opened */
    start_ok(fx, "interval: 1s\n");
    run_ok(fx);
    assert_int_equal((int)value(fx, "frontend.bundle.files", NULL), 2);
    assert_int_equal((uint64_t)gz(fx, "inside.js"), gzip_size(inside, strlen(inside), 9));
    assert_int_equal((uint64_t)gz(fx, "link-in.js"), gzip_size(inside, strlen(inside), 9));
    assert_null(find(fx, "frontend.bundle.gzip_bytes", "chunk", "link-out.js", NULL));
    assert_null(find(fx, "frontend.bundle.gzip_bytes", "chunk", "link-rel.js", NULL));
    assert_null(find(fx, "frontend.bundle.gzip_bytes", "chunk", "linkdir/secret.js", NULL));
    assert_int_equal((int)errors_of(fx, "files"), 0);

    /* The build directory itself may be a link (releases/N behind current/). */
    snprintf(path, sizeof(path), "%s/current", fx->root);
    assert_int_equal(symlink("dist", path), 0);
    snprintf(fx->dist, sizeof(fx->dist), "%s/current", fx->root);
    start_ok(fx, "interval: 1s\n");
    run_ok(fx);
    assert_int_equal((int)value(fx, "frontend.bundle.files", NULL), 2);
}

/* ---- limits ---- */

static void test_limits(void **state)
{
    fixture *fx = *state;
    char *big = js_text(3000, 5);
    char rel[64];
    for (int i = 0; i < 5; i++) {
        snprintf(rel, sizeof(rel), "f%d.js", i);
        put(fx, rel, "x");
    }
    start_ok(fx, "interval: 1s\nmax_files: 3\n");
    run_ok(fx);
    assert_int_equal((int)value(fx, "frontend.bundle.files", NULL), 3);
    assert_int_equal((int)errors_of(fx, "files"), 1);
    assert_int_equal(count_named(fx, "frontend.bundle.gzip_bytes"), 3);

    put_bytes(fx, "big.js", big, 3000);
    put(fx, "a/b/deep.js", "x");
    put(fx, "a/shallow.js", "x");
    start_ok(fx, "interval: 1s\nmax_file_size: 2KiB\nmax_depth: 1\n");
    run_ok(fx);
    assert_null(find(fx, "frontend.bundle.gzip_bytes", "chunk", "big.js", NULL));
    assert_null(find(fx, "frontend.bundle.gzip_bytes", "chunk", "a/b/deep.js", NULL));
    assert_non_null(find(fx, "frontend.bundle.gzip_bytes", "chunk", "a/shallow.js", NULL));
    assert_int_equal((int)errors_of(fx, "files"), 2); /* big.js and a/b */
    assert_int_equal((int)value(fx, "frontend.bundle.files", NULL), 6);
    free(big);
}

static void test_missing_dir(void **state)
{
    fixture *fx = *state;
    st_test_rmtree(fx->dist);
    start_ok(fx, "interval: 1s\n");
    assert_int_equal(run(fx), ST_ENOENT);
    assert_int_equal(fx->frame->n_series, 0);
    put(fx, "index.js", "x");
    run_ok(fx);
    assert_int_equal((int)value(fx, "frontend.bundle.files", NULL), 1);
    st_test_rmtree(fx->dist);
    assert_int_equal(run(fx), ST_ENOENT);
    assert_int_equal(fx->frame->n_series, 0);
}

/* ---- the cache ---- */

static void test_cache(void **state)
{
    fixture *fx = *state;
    st_bundle_counters k;
    char rel[64];
    char *text = js_text(20000, 6);
    int64_t first;
    int64_t best = INT64_MAX;
    struct timespec ts[2] = {{0, UTIME_NOW}, {0, 0}};
    char path[1024];
    for (int i = 0; i < 200; i++) {
        snprintf(rel, sizeof(rel), "assets/chunk-%03d.js", i);
        put_bytes(fx, rel, text + i * 50, 5000);
    }
    start_ok(fx, "interval: 1s\n");
    first = run_timed(fx);
    st_bundle_counters_of(fx->ctx, &k);
    assert_int_equal(k.hashed, 200);
    assert_int_equal(k.hits, 0);
    for (int r = 0; r < 5; r++) {
        int64_t ns = run_timed(fx); /* not inside ST_MIN: it evaluates twice */
        best = ST_MIN(best, ns);
    }
    st_bundle_counters_of(fx->ctx, &k);
    assert_int_equal(k.hashed, 200);
    assert_int_equal(k.hits, 1000);
    assert_int_equal((int)value(fx, "frontend.bundle.files", NULL), 200);
    print_message("bundle: 200 files of 5000 B: first scan %lld us, rescan unchanged %lld us\n",
                  (long long)(first / 1000), (long long)(best / 1000));
    assert_true(best < 100 * 1000000LL); /* generous: sanitizer builds, busy CI */

    /* Same size, new content and mtime: read again, new value. */
    put_bytes(fx, "assets/chunk-007.js", text + 9000, 5000);
    snprintf(path, sizeof(path), "%s/assets/chunk-007.js", fx->dist);
    ts[1].tv_sec = 1700000000; /* an mtime that surely differs */
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
    run_ok(fx);
    st_bundle_counters_of(fx->ctx, &k);
    assert_int_equal(k.hashed, 201);
    assert_int_equal((uint64_t)gz(fx, "assets/chunk-007.js"), gzip_size(text + 9000, 5000, 9));

    /* A removed file drops out. */
    snprintf(path, sizeof(path), "%s/assets/chunk-100.js", fx->dist);
    assert_int_equal(unlink(path), 0);
    run_ok(fx);
    assert_int_equal((int)value(fx, "frontend.bundle.files", NULL), 199);
    assert_null(find(fx, "frontend.bundle.gzip_bytes", "chunk", "assets/chunk-100.js", NULL));
    st_bundle_counters_of(fx->ctx, &k);
    assert_int_equal(k.hashed, 201);
    free(text);
}

/* Without an explicit interval the directory is rescanned at most every
 * 60 s; the last results are emitted on every run in between. */
static void test_default_rescan(void **state)
{
    fixture *fx = *state;
    st_bundle_counters k;
    put(fx, "index.js", "console.log(1);\n");
    start_ok(fx, NULL);
    run_ok(fx);
    put(fx, "later.js", "console.log(2);\n");
    print_message("bundle: a run between rescans (emit only): %lld us\n",
                  (long long)(run_timed(fx) / 1000));
    st_bundle_counters_of(fx->ctx, &k);
    assert_int_equal(k.scans, 1);
    assert_int_equal((int)value(fx, "frontend.bundle.files", NULL), 1);
    assert_non_null(find(fx, "frontend.bundle.gzip_bytes", "chunk", "index.js", NULL));

    /* --once reads everything on every run. */
    fx->env.once = true;
    start_ok(fx, NULL);
    run_ok(fx);
    run_ok(fx);
    st_bundle_counters_of(fx->ctx, &k);
    assert_int_equal(k.scans, 2);
    assert_int_equal((int)value(fx, "frontend.bundle.files", NULL), 2);
}

/* A run stops reading after scan_budget; results appear only once a scan
 * completed, and every run makes progress. */
static void test_time_budget(void **state)
{
    fixture *fx = *state;
    st_bundle_counters k;
    char *text = js_text(400000, 11);
    char rel[64];
    int runs = 0;
    for (int i = 0; i < 8; i++) {
        snprintf(rel, sizeof(rel), "c%d.js", i);
        put_bytes(fx, rel, text + i, 300000);
    }
    start_ok(fx, "interval: 1s\nscan_budget: 1ms\n");
    run_ok(fx);
    st_bundle_counters_of(fx->ctx, &k);
    assert_true(k.hashed >= 1);
    if (k.hashed < 8) {
        assert_int_equal(fx->frame->n_series, 0);
    }
    do {
        run_ok(fx);
        st_bundle_counters_of(fx->ctx, &k);
        assert_true(++runs <= 8);
    } while (find(fx, "frontend.bundle.files", NULL) == NULL);
    assert_int_equal(k.hashed, 8);
    assert_int_equal((int)value(fx, "frontend.bundle.files", NULL), 8);
    assert_int_equal((uint64_t)gz(fx, "c3.js"), gzip_size(text + 3, 300000, 9));
    free(text);
}

/* ---- configuration ---- */

static void expect_config_error(fixture *fx, const char *extra, const char *want1,
                                const char *want2)
{
    st_cfg_error err = {""};
    assert_int_equal(start(fx, extra, &err), ST_ECONFIG);
    if (strstr(err.msg, want1) == NULL || (want2 != NULL && strstr(err.msg, want2) == NULL)) {
        fail_msg("error '%s' lacks '%s' / '%s'", err.msg, want1, want2 != NULL ? want2 : "");
    }
}

static void test_config(void **state)
{
    fixture *fx = *state;
    const st_sampler_def *d = st_sampler_find("bundle");
    st_cfg_error err = {""};
    void *ctx = NULL;
    assert_non_null(d);
    assert_ptr_equal(d->sample, st_sampler_bundle.sample);
    assert_int_equal(d->init(NULL, NULL, &fx->env, &ctx, &err), ST_ECONFIG);
    assert_non_null(strstr(err.msg, "'dir'"));
    expect_config_error(fx, "gzip_level: 10\n", "test.yaml:2", "'gzip_level'");
    expect_config_error(fx, "max_files: 0\n", "'max_files'", "out of range");
    expect_config_error(fx, "max_depth: 65\n", "'max_depth'", NULL);
    expect_config_error(fx, "coverag: x.json\n", "'coverag'", NULL);
    expect_config_error(fx, "manifest: ''\n", "'manifest'", NULL);
    expect_config_error(fx, "scan_budget: fast\n", "'scan_budget'", NULL);
    start_ok(fx, "interval: 5m\nmax_file_size: 1MiB\nmax_json_size: 1MiB\nmanifest: m.json\n"
                 "webpack_stats: /x/s.json\ncoverage: c.json\nscan_budget: 2s\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_gzip_sizes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vite_manifest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pwa_manifest_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_webpack_stats, setup, teardown),
        cmocka_unit_test_setup_teardown(test_webpack_top_modules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_block_duplicates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coverage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_inputs, setup, teardown),
        cmocka_unit_test(test_json_readers),
        cmocka_unit_test_setup_teardown(test_symlinks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_default_rescan, setup, teardown),
        cmocka_unit_test_setup_teardown(test_time_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
