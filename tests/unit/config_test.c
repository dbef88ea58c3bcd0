/* Unit tests for common/config: the YAML tree with line numbers, binding
 * rows onto a struct, and error messages that name file, line and key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "config.h"
#include "err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct tls_cfg {
    char *cert;
    bool verify;
};

struct test_cfg {
    char *name;
    int64_t workers;
    uint64_t max_conn;
    double ratio;
    bool verbose;
    int64_t interval_ms;
    uint64_t spool_max;
    st_cfg_strlist tags;
    const st_cfg_node *samplers;
    char *comment;
    char *listen;
    int64_t flush_ms;
    bool statsd_enabled;
    st_cfg_strlist prefixes;
    struct tls_cfg tls;
};

static const st_cfg_map tls_rows[] = {
    {ST_CFG_STR, "cert", NULL, offsetof(struct test_cfg, tls.cert), "certificate file", NULL, 0, 0},
    {ST_CFG_BOOL, "verify", "true", offsetof(struct test_cfg, tls.verify), "verify peers", NULL, 0,
     0},
    {0, NULL, NULL, 0, NULL, NULL, 0, 0},
};

static const st_cfg_map statsd_rows[] = {
    {ST_CFG_STR, "listen", "127.0.0.1:8125", offsetof(struct test_cfg, listen), "UDP address", NULL,
     0, 0},
    {ST_CFG_DURATION, "flush", "10s", offsetof(struct test_cfg, flush_ms), "flush interval", NULL,
     1000, 300000},
    {ST_CFG_BOOL, "enabled", "yes", offsetof(struct test_cfg, statsd_enabled), "run it", NULL, 0,
     0},
    {ST_CFG_STRLIST, "prefixes", "app,web", offsetof(struct test_cfg, prefixes), "prefixes", NULL,
     0, 0},
    {ST_CFG_SECTION, "tls", NULL, 0, "TLS settings", tls_rows, 0, 0},
    {0, NULL, NULL, 0, NULL, NULL, 0, 0},
};

static const st_cfg_map rows[] = {
    {ST_CFG_STR, "name", "strata", offsetof(struct test_cfg, name), "instance name", NULL, 0, 0},
    {ST_CFG_INT, "workers", "4", offsetof(struct test_cfg, workers), "worker threads", NULL, 1, 64},
    {ST_CFG_UINT, "max_conn", "1000", offsetof(struct test_cfg, max_conn), "connections", NULL, 0,
     0},
    {ST_CFG_DOUBLE, "ratio", "0.5", offsetof(struct test_cfg, ratio), "a ratio", NULL, 0, 1},
    {ST_CFG_BOOL, "verbose", NULL, offsetof(struct test_cfg, verbose), "chatty", NULL, 0, 0},
    {ST_CFG_DURATION, "interval", "1s", offsetof(struct test_cfg, interval_ms), "sampling interval",
     NULL, 0, 0},
    {ST_CFG_SIZE, "spool_max", "64MiB", offsetof(struct test_cfg, spool_max), "spool cap", NULL, 0,
     0},
    {ST_CFG_STRLIST, "tags", NULL, offsetof(struct test_cfg, tags), "labels", NULL, 0, 0},
    {ST_CFG_NODE, "samplers", NULL, offsetof(struct test_cfg, samplers), "sampler table", NULL, 0,
     0},
    {ST_CFG_STR, "comment", NULL, offsetof(struct test_cfg, comment), "free text", NULL, 0, 0},
    {ST_CFG_SECTION, "statsd", NULL, 0, "StatsD listener", statsd_rows, 0, 0},
    {0, NULL, NULL, 0, NULL, NULL, 0, 0},
};

/* Loads text as "agent.yaml" and binds it; returns the bind or load code. */
static int load_bind(const char *text, st_cfg_doc **doc, struct test_cfg *cfg, st_cfg_error *err)
{
    int rv;
    memset(cfg, 0, sizeof(*cfg));
    *doc = NULL;
    rv = st_cfg_load_string("agent.yaml", text, strlen(text), doc, err);
    if (rv != ST_OK) {
        return rv;
    }
    return st_cfg_bind(*doc, st_cfg_root(*doc), rows, cfg, err);
}

/* Expects text to fail (at load or bind) with exactly msg. */
static void expect_error(const char *text, int code, const char *msg)
{
    st_cfg_doc *doc = NULL;
    struct test_cfg cfg;
    st_cfg_error err = {{0}};
    int rv = load_bind(text, &doc, &cfg, &err);
    assert_int_equal(rv, code);
    assert_string_equal(err.msg, msg);
    st_cfg_release(rows, &cfg);
    st_cfg_doc_free(doc);
}

static const char full_yaml[] = "# a full agent configuration\n"
                                "name: edge-1\n"
                                "workers: 8\n"
                                "max_conn: 20000\n"
                                "ratio: 0.25\n"
                                "verbose: on\n"
                                "interval: 250ms\n"
                                "spool_max: 512KiB\n"
                                "tags:\n"
                                "  - eu\n"
                                "  - \"edge, fast\"\n"
                                "samplers:\n"
                                "  - type: procfs\n"
                                "    root: /proc\n"
                                "comment:\n"
                                "statsd:\n"
                                "  listen: 0.0.0.0:9125\n"
                                "  flush: 5m\n"
                                "  enabled: False\n"
                                "  prefixes: solo\n"
                                "  tls:\n"
                                "    cert: /etc/strata/cert.pem\n"
                                "    verify: no\n";

static void test_full_file(void **state)
{
    st_cfg_doc *doc = NULL;
    struct test_cfg cfg;
    st_cfg_error err = {{0}};
    const st_cfg_node *s0;
    (void)state;
    assert_int_equal(load_bind(full_yaml, &doc, &cfg, &err), ST_OK);
    assert_string_equal(cfg.name, "edge-1");
    assert_int_equal(cfg.workers, 8);
    assert_int_equal(cfg.max_conn, 20000);
    assert_true(cfg.ratio == 0.25);
    assert_true(cfg.verbose);
    assert_int_equal(cfg.interval_ms, 250);
    assert_int_equal(cfg.spool_max, 512 * 1024);
    assert_int_equal(cfg.tags.n, 2);
    assert_string_equal(cfg.tags.v[0], "eu");
    assert_string_equal(cfg.tags.v[1], "edge, fast");
    assert_null(cfg.comment);
    assert_string_equal(cfg.listen, "0.0.0.0:9125");
    assert_int_equal(cfg.flush_ms, 300000);
    assert_false(cfg.statsd_enabled);
    assert_int_equal(cfg.prefixes.n, 1);
    assert_string_equal(cfg.prefixes.v[0], "solo");
    assert_string_equal(cfg.tls.cert, "/etc/strata/cert.pem");
    assert_false(cfg.tls.verify);

    /* The NODE field points into the tree, with lines. */
    assert_non_null(cfg.samplers);
    assert_int_equal(st_cfg_node_type(cfg.samplers), ST_CFG_NODE_SEQ);
    assert_int_equal(st_cfg_seq_len(cfg.samplers), 1);
    s0 = st_cfg_seq_at(cfg.samplers, 0);
    assert_int_equal(st_cfg_node_type(s0), ST_CFG_NODE_MAP);
    assert_int_equal(st_cfg_node_line(s0), 13);
    assert_int_equal(st_cfg_map_len(s0), 2);
    assert_string_equal(st_cfg_map_key(s0, 1), "root");
    assert_string_equal(st_cfg_scalar(st_cfg_map_value(s0, 1)), "/proc");
    assert_int_equal(st_cfg_node_line(st_cfg_get(s0, "root")), 14);
    assert_string_equal(st_cfg_scalar(st_cfg_get(s0, "type")), "procfs");
    assert_null(st_cfg_get(s0, "nope"));
    assert_null(st_cfg_seq_at(cfg.samplers, 1));
    assert_true(st_cfg_is_null(st_cfg_get(st_cfg_root(doc), "comment")));
    assert_false(st_cfg_is_null(st_cfg_get(st_cfg_root(doc), "name")));
    assert_string_equal(st_cfg_doc_name(doc), "agent.yaml");

    /* A ST_CFG_NODE owner reports its own errors at the key's line. */
    assert_int_equal(
        st_cfg_fail(&err, doc, st_cfg_get(s0, "root"), "samplers[0].root", "bad root '%s'", "x"),
        ST_ECONFIG);
    assert_string_equal(err.msg, "agent.yaml:14: key 'samplers[0].root': bad root 'x'");

    st_cfg_release(rows, &cfg);
    assert_null(cfg.name);
    assert_null(cfg.tags.v);
    assert_int_equal(cfg.tags.n, 0);
    assert_null(cfg.tls.cert);
    st_cfg_release(rows, &cfg); /* twice is fine */
    st_cfg_doc_free(doc);
}

static void check_defaults(const struct test_cfg *cfg)
{
    assert_string_equal(cfg->name, "strata");
    assert_int_equal(cfg->workers, 4);
    assert_int_equal(cfg->max_conn, 1000);
    assert_true(cfg->ratio == 0.5);
    assert_false(cfg->verbose);
    assert_int_equal(cfg->interval_ms, 1000);
    assert_int_equal(cfg->spool_max, 64u << 20);
    assert_int_equal(cfg->tags.n, 0);
    assert_null(cfg->samplers);
    assert_null(cfg->comment);
    assert_string_equal(cfg->listen, "127.0.0.1:8125");
    assert_int_equal(cfg->flush_ms, 10000);
    assert_true(cfg->statsd_enabled);
    assert_int_equal(cfg->prefixes.n, 2);
    assert_string_equal(cfg->prefixes.v[0], "app");
    assert_string_equal(cfg->prefixes.v[1], "web");
    assert_null(cfg->tls.cert);
    assert_true(cfg->tls.verify);
}

static void test_defaults_and_empty(void **state)
{
    static const char *const empties[] = {"", "# only a comment\n\n", "---\n", "~\n"};
    (void)state;
    for (size_t i = 0; i < sizeof(empties) / sizeof(empties[0]); i++) {
        st_cfg_doc *doc = NULL;
        struct test_cfg cfg;
        st_cfg_error err = {{0}};
        assert_int_equal(load_bind(empties[i], &doc, &cfg, &err), ST_OK);
        assert_null(st_cfg_root(doc));
        check_defaults(&cfg);
        st_cfg_release(rows, &cfg);
        st_cfg_doc_free(doc);
    }
}

static void test_partial_file_keeps_defaults(void **state)
{
    st_cfg_doc *doc = NULL;
    struct test_cfg cfg;
    st_cfg_error err = {{0}};
    (void)state;
    assert_int_equal(
        load_bind("workers: 2\nstatsd:\n  flush: 2s\ntags: single\n", &doc, &cfg, &err), ST_OK);
    assert_int_equal(cfg.workers, 2);
    assert_int_equal(cfg.flush_ms, 2000);
    assert_string_equal(cfg.listen, "127.0.0.1:8125");
    assert_string_equal(cfg.name, "strata");
    assert_int_equal(cfg.tags.n, 1);
    assert_string_equal(cfg.tags.v[0], "single");
    st_cfg_release(rows, &cfg);
    st_cfg_doc_free(doc);

    /* A quoted empty string is a value; a bare null clears the default. */
    assert_int_equal(load_bind("name: \"\"\nstatsd:\n  listen:\ntags:\n", &doc, &cfg, &err), ST_OK);
    assert_string_equal(cfg.name, "");
    assert_null(cfg.listen);
    assert_int_equal(cfg.tags.n, 0);
    assert_true(cfg.tls.verify); /* untouched section keeps defaults */
    st_cfg_release(rows, &cfg);
    st_cfg_doc_free(doc);

    /* Defaults only (map NULL), released without ever being bound. */
    memset(&cfg, 0, sizeof(cfg));
    assert_int_equal(st_cfg_bind(NULL, NULL, rows, &cfg, &err), ST_OK);
    check_defaults(&cfg);
    st_cfg_release(rows, &cfg);
    st_cfg_release(rows, &cfg);
}

static void test_unknown_key(void **state)
{
    (void)state;
    expect_error("name: a\nworkers: 2\n\nintervall: 5s\n", ST_ECONFIG,
                 "agent.yaml:4: key 'intervall': unknown key (did you mean 'interval'?)");
    expect_error("name: a\nzzzzzz: 1\n", ST_ECONFIG, "agent.yaml:2: key 'zzzzzz': unknown key");
    expect_error("statsd:\n  listen: x\n  flsh: 1s\n", ST_ECONFIG,
                 "agent.yaml:3: key 'statsd.flsh': unknown key (did you mean 'flush'?)");
}

static void test_bad_values(void **state)
{
    (void)state;
    expect_error("name: a\ninterval: fast\n", ST_ECONFIG,
                 "agent.yaml:2: key 'interval': bad duration 'fast' (use e.g. 250ms, 10s, 5m, "
                 "2h, 7d)");
    expect_error("verbose: maybe\n", ST_ECONFIG,
                 "agent.yaml:1: key 'verbose': bad bool 'maybe' (use true/false, yes/no, on/off)");
    expect_error("\n\nworkers: 65\n", ST_ECONFIG,
                 "agent.yaml:3: key 'workers': value '65' out of range [1, 64]");
    expect_error("workers: 0\n", ST_ECONFIG,
                 "agent.yaml:1: key 'workers': value '0' out of range [1, 64]");
    expect_error("workers: four\n", ST_ECONFIG, "agent.yaml:1: key 'workers': bad integer 'four'");
    expect_error("max_conn: -1\n", ST_ECONFIG,
                 "agent.yaml:1: key 'max_conn': bad unsigned integer '-1'");
    expect_error("ratio: 1.5\n", ST_ECONFIG,
                 "agent.yaml:1: key 'ratio': value '1.5' out of range [0, 1]");
    expect_error("ratio: lots\n", ST_ECONFIG, "agent.yaml:1: key 'ratio': bad number 'lots'");
    expect_error("spool_max: 12 parsecs\n", ST_ECONFIG,
                 "agent.yaml:1: key 'spool_max': bad size '12 parsecs' (use e.g. 4096, 512KiB, "
                 "64MiB)");
    expect_error("workers:\n", ST_ECONFIG,
                 "agent.yaml:1: key 'workers': empty value, expected an integer");
    expect_error("workers: \"\"\n", ST_ECONFIG, "agent.yaml:1: key 'workers': bad integer ''");
    expect_error("verbose: ~\n", ST_ECONFIG,
                 "agent.yaml:1: key 'verbose': empty value, expected true or false");
}

static void test_wrong_node_type(void **state)
{
    (void)state;
    expect_error("name: a\ninterval:\n  every: 5s\n", ST_ECONFIG,
                 "agent.yaml:2: key 'interval': expected a duration, got a mapping");
    expect_error("name: [a, b]\n", ST_ECONFIG,
                 "agent.yaml:1: key 'name': expected a string, got a sequence");
    expect_error("statsd: on\n", ST_ECONFIG,
                 "agent.yaml:1: key 'statsd': expected a mapping, got a scalar");
    expect_error("tags: {a: b}\n", ST_ECONFIG,
                 "agent.yaml:1: key 'tags': expected a list of strings, got a mapping");
    expect_error("tags:\n  - a\n  - [b]\n", ST_ECONFIG,
                 "agent.yaml:3: key 'tags[1]': expected a string, got sequence");
    expect_error("- a\n- b\n", ST_ECONFIG, "agent.yaml:1: the top level must be a mapping of keys");
}

static void test_nested_section_errors(void **state)
{
    (void)state;
    expect_error("name: a\nstatsd:\n  listen: x\n  flush: 10m\n", ST_ECONFIG,
                 "agent.yaml:4: key 'statsd.flush': value '10m' out of range [1s, 5m]");
    expect_error("statsd:\n  tls:\n    verify: perhaps\n", ST_ECONFIG,
                 "agent.yaml:3: key 'statsd.tls.verify': bad bool 'perhaps' (use true/false, "
                 "yes/no, on/off)");
    expect_error("statsd:\n  tls:\n    cert: a\n    key: b\n", ST_ECONFIG,
                 "agent.yaml:4: key 'statsd.tls.key': unknown key");
}

static void test_yaml_refusals(void **state)
{
    (void)state;
    expect_error("name: a\nworkers: 2\nname: b\n", ST_ECONFIG,
                 "agent.yaml:3: key 'name': duplicate key (first at line 1)");
    expect_error("statsd:\n  listen: a\n  flush: 1s\n  listen: b\n", ST_ECONFIG,
                 "agent.yaml:4: key 'statsd.listen': duplicate key (first at line 2)");
    expect_error("name: &n edge\ncomment: *n\n", ST_ECONFIG,
                 "agent.yaml:1: key 'name': anchors (&n) are not supported");
    expect_error("name: a\ncomment: *n\n", ST_ECONFIG,
                 "agent.yaml:2: key 'comment': aliases (*n) are not supported");
    expect_error("workers: !!int 3\n", ST_ECONFIG,
                 "agent.yaml:1: key 'workers': tags (tag:yaml.org,2002:int) are not supported");
    expect_error("? [a, b]\n: c\n", ST_ECONFIG, "agent.yaml:1: mapping keys must be scalars");
    expect_error("name: a\n---\nname: b\n", ST_ECONFIG,
                 "agent.yaml:2: only one YAML document is allowed in a configuration file");
    expect_error("comment: \"a\\0b\"\n", ST_ECONFIG,
                 "agent.yaml:1: key 'comment': value holds a NUL byte");
}

static void test_syntax_error(void **state)
{
    (void)state;
    expect_error("name: a\nworkers: 2\n  ratio: 0.5\n", ST_ECONFIG,
                 "agent.yaml:3: syntax error: mapping values are not allowed in this context");
    expect_error("name: a\ntags: [a, b\nworkers: 2\n", ST_ECONFIG,
                 "agent.yaml:3: syntax error: did not find expected ',' or ']' (while parsing a "
                 "flow sequence at line 2)");
    expect_error("name: a\ncomment: \"\x01\"\n", ST_ECONFIG,
                 "agent.yaml:2: syntax error: control characters are not allowed");
}

static void test_limits(void **state)
{
    size_t n = ST_CFG_MAX_SCALAR + 1;
    char *text = malloc(n + 32);
    char *deep = malloc(4 * 40 + 16);
    size_t off = 0;
    (void)state;
    assert_non_null(text);
    assert_non_null(deep);
    memcpy(text, "\ncomment: ", 10);
    memset(text + 10, 'x', n);
    memcpy(text + 10 + n, "\n", 2);
    expect_error(text, ST_ECONFIG, "agent.yaml:2: key 'comment': value is longer than 4096 bytes");
    free(text);

    /* 40 nested flow mappings: the 33rd level is refused. */
    for (int i = 0; i < 40; i++) {
        memcpy(deep + off, "a: {", 4);
        off += 4;
    }
    memcpy(deep + off, "}", 2);
    {
        st_cfg_doc *doc = NULL;
        st_cfg_error err = {{0}};
        assert_int_equal(st_cfg_load_string("deep.yaml", deep, strlen(deep), &doc, &err),
                         ST_ECONFIG);
        assert_non_null(strstr(err.msg, "deep.yaml:1: key 'a.a.a."));
        assert_non_null(strstr(err.msg, "': nesting is deeper than 32 levels"));
        assert_null(doc);
    }
    free(deep);
}

static char *write_temp(const char *text, size_t len)
{
    char *path = strdup("/tmp/strata-config-test-XXXXXX");
    int fd;
    assert_non_null(path);
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    return path;
}

static void test_load_file(void **state)
{
    st_cfg_doc *doc = NULL;
    st_cfg_error err = {{0}};
    struct test_cfg cfg;
    char expect[600];
    char *big;
    char *path;
    (void)state;

    path = write_temp(full_yaml, strlen(full_yaml));
    assert_int_equal(st_cfg_load_file(path, &doc, &err), ST_OK);
    memset(&cfg, 0, sizeof(cfg));
    assert_int_equal(st_cfg_bind(doc, st_cfg_root(doc), rows, &cfg, &err), ST_OK);
    assert_string_equal(cfg.tls.cert, "/etc/strata/cert.pem");
    st_cfg_release(rows, &cfg);
    st_cfg_doc_free(doc);
    unlink(path);
    free(path);

    /* An error names the path it was loaded from. */
    path = write_temp("workers: 2\nverbose: sure\n", strlen("workers: 2\nverbose: sure\n"));
    assert_int_equal(st_cfg_load_file(path, &doc, &err), ST_OK);
    memset(&cfg, 0, sizeof(cfg));
    assert_int_equal(st_cfg_bind(doc, st_cfg_root(doc), rows, &cfg, &err), ST_ECONFIG);
    snprintf(expect, sizeof(expect),
             "%s:2: key 'verbose': bad bool 'sure' (use true/false, yes/no, on/off)", path);
    assert_string_equal(err.msg, expect);
    st_cfg_release(rows, &cfg);
    st_cfg_doc_free(doc);
    unlink(path);
    free(path);

    /* Over ST_CFG_MAX_FILE: refused before parsing. */
    big = malloc(ST_CFG_MAX_FILE + 2);
    assert_non_null(big);
    memset(big, '#', ST_CFG_MAX_FILE + 1);
    path = write_temp(big, ST_CFG_MAX_FILE + 1);
    doc = NULL;
    assert_int_equal(st_cfg_load_file(path, &doc, &err), ST_ETOOBIG);
    assert_null(doc);
    snprintf(expect, sizeof(expect), "%s: file is larger than 1048576 bytes", path);
    assert_string_equal(err.msg, expect);
    assert_int_equal(st_cfg_load_string("big.yaml", big, ST_CFG_MAX_FILE + 1, &doc, &err),
                     ST_ETOOBIG);
    assert_string_equal(err.msg, "big.yaml: file is larger than 1048576 bytes");
    unlink(path);
    free(path);
    free(big);

    assert_int_equal(st_cfg_load_file("/nonexistent/strata.yaml", &doc, &err), ST_ENOENT);
    assert_string_equal(err.msg, "/nonexistent/strata.yaml: no such file");
}

static void test_set(void **state)
{
    struct test_cfg cfg;
    st_cfg_error err = {{0}};
    (void)state;
    memset(&cfg, 0, sizeof(cfg));
    assert_int_equal(st_cfg_defaults(rows, &cfg, &err), ST_OK);

    assert_int_equal(st_cfg_set(rows, &cfg, "interval", "5m", &err), ST_OK);
    assert_int_equal(cfg.interval_ms, 300000);
    assert_int_equal(st_cfg_set(rows, &cfg, "name", "flag-name", &err), ST_OK);
    assert_string_equal(cfg.name, "flag-name");
    assert_int_equal(st_cfg_set(rows, &cfg, "max-conn", "7", &err), ST_OK);
    assert_int_equal(cfg.max_conn, 7);
    assert_int_equal(st_cfg_set(rows, &cfg, "statsd.listen", "[::1]:8125", &err), ST_OK);
    assert_string_equal(cfg.listen, "[::1]:8125");
    assert_int_equal(st_cfg_set(rows, &cfg, "statsd.tls.cert", "c.pem", &err), ST_OK);
    assert_string_equal(cfg.tls.cert, "c.pem");
    assert_int_equal(st_cfg_set(rows, &cfg, "tags", "a, b,,c,", &err), ST_OK);
    assert_int_equal(cfg.tags.n, 3);
    assert_string_equal(cfg.tags.v[2], "c");
    assert_int_equal(st_cfg_set(rows, &cfg, "verbose", "YES", &err), ST_OK);
    assert_true(cfg.verbose);

    assert_int_equal(st_cfg_set(rows, &cfg, "interval", "x", &err), ST_ECONFIG);
    assert_string_equal(err.msg,
                        "flag '--interval': bad duration 'x' (use e.g. 250ms, 10s, 5m, 2h, 7d)");
    assert_int_equal(cfg.interval_ms, 300000); /* unchanged on error */
    assert_int_equal(st_cfg_set(rows, &cfg, "workers", "100", &err), ST_ECONFIG);
    assert_string_equal(err.msg, "flag '--workers': value '100' out of range [1, 64]");
    assert_int_equal(st_cfg_set(rows, &cfg, "nope", "1", &err), ST_ECONFIG);
    assert_string_equal(err.msg, "flag '--nope': unknown flag");
    assert_int_equal(st_cfg_set(rows, &cfg, "statsd.nope", "1", &err), ST_ECONFIG);
    assert_int_equal(st_cfg_set(rows, &cfg, "statsd", "1", &err), ST_ECONFIG);
    assert_string_equal(err.msg, "flag '--statsd': cannot be set from the command line");
    st_cfg_release(rows, &cfg);
}

static void test_bad_default(void **state)
{
    static const st_cfg_map bad[] = {
        {ST_CFG_DURATION, "every", "soon", 0, "broken", NULL, 0, 0},
        {0, NULL, NULL, 0, NULL, NULL, 0, 0},
    };
    int64_t v = 99;
    st_cfg_error err = {{0}};
    (void)state;
    assert_int_equal(st_cfg_defaults(bad, &v, &err), ST_EINVAL);
    assert_string_equal(
        err.msg, "key 'every': bad default: bad duration 'soon' (use e.g. 250ms, 10s, 5m, 2h, 7d)");
}

static char usage_buf[4096];

static void usage_line(const char *line)
{
    size_t off = strlen(usage_buf);
    snprintf(usage_buf + off, sizeof(usage_buf) - off, "%s\n", line);
}

static void test_usage(void **state)
{
    (void)state;
    usage_buf[0] = '\0';
    st_cfg_usage(rows, NULL, usage_line);
    assert_non_null(strstr(usage_buf, "  interval (duration, default 1s): sampling interval\n"));
    assert_non_null(strstr(usage_buf, "  verbose (bool): chatty\n"));
    assert_non_null(strstr(usage_buf, "  statsd (section): StatsD listener\n"));
    assert_non_null(strstr(usage_buf, "  statsd.flush (duration, default 10s): flush interval\n"));
    assert_non_null(strstr(usage_buf, "  statsd.tls.cert (string): certificate file\n"));
    usage_buf[0] = '\0';
    st_cfg_usage(tls_rows, "--", usage_line);
    assert_string_equal(usage_buf, "--cert (string): certificate file\n"
                                   "--verify (bool, default true): verify peers\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_file),
        cmocka_unit_test(test_defaults_and_empty),
        cmocka_unit_test(test_partial_file_keeps_defaults),
        cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_wrong_node_type),
        cmocka_unit_test(test_nested_section_errors),
        cmocka_unit_test(test_yaml_refusals),
        cmocka_unit_test(test_syntax_error),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_set),
        cmocka_unit_test(test_bad_default),
        cmocka_unit_test(test_usage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
