/* strata: the SRE command line, a client of the collector's HTTP API.
 * Parses the arguments, calls the API through client.c and prints what
 * render.c makes of the answer; the only file of the CLI that prints or
 * exits. Exit status: 0 ok, 1 failed (HTTP error, unreachable), 2 usage. */
#include "client.h"
#include "err.h"
#include "format.h"
#include "render.h"
#include "timeutil.h"
#include "util.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXIT_USAGE 2
/* Rendered text can outgrow the 64 MiB body it came from (padding). */
#define ST_CLI_OUTPUT_MAX ((size_t)512 << 20)
#define DEFAULT_TIMEOUT_MS 10000

enum {
    OPT_TIMEOUT = 256,
    OPT_AGG,
    OPT_MATCH,
    OPT_BY,
    OPT_SINCE,
    OPT_FROM,
    OPT_TO,
    OPT_STEP,
    OPT_LAYER,
    OPT_STATUS,
    OPT_LIMIT,
    OPT_TOP,
};

/* Global settings, from the environment and then the flags. */
struct cli {
    const char *server;
    const char *token;
    int64_t timeout_ms;
    bool json;
    bool help;
    bool version;
    const char *command; /* for "Try 'strata COMMAND --help'" */
};

struct command {
    const char *name;
    const char *synopsis;
    const char *summary; /* one line */
    const char *details; /* more for --help, or NULL */
    const char *options; /* the command's own flags, for --help */
    const struct option *longopts;
    int (*run)(struct cli *c, int argc, char **argv);
};

/* The global flags, first in every command's option table. */
// clang-format off
#define GLOBAL_LONGOPTS                                                 \
    {"server", required_argument, NULL, 's'},                           \
    {"token", required_argument, NULL, 't'},                            \
    {"json", no_argument, NULL, 'j'},                                   \
    {"timeout", required_argument, NULL, OPT_TIMEOUT},                  \
    {"help", no_argument, NULL, 'h'},                                   \
    {"version", no_argument, NULL, 'V'}
// clang-format on
#define GLOBAL_SHORTOPTS ":s:t:jhV"

static const char global_help[] =
    "Global options (before or after the command):\n"
    "  -s, --server URL    collector API (env STRATA_SERVER; default " ST_CLIENT_DEFAULT_SERVER
    ")\n"
    "  -t, --token TOKEN   bearer token (env STRATA_TOKEN; the environment keeps it out of ps)\n"
    "  -j, --json          print the server's JSON instead of tables\n"
    "      --timeout DUR   whole request, e.g. 5s, 500ms (default 10s)\n"
    "  -h, --help          show help; after a command, help for that command\n"
    "  -V, --version       print the version\n";

static void usage_error(const struct cli *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void usage_error(const struct cli *c, const char *fmt, ...)
{
    va_list ap;
    fputs("strata: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (c->command != NULL) {
        fprintf(stderr, "\nTry 'strata %s --help'.\n", c->command);
    } else {
        fputs("\nTry 'strata --help'.\n", stderr);
    }
}

/* Writes all of b to stdout; 1 when stdout fails (a closed pipe, a full
 * disk), so scripts do not take a cut answer for a whole one. */
static int emit(st_buf *b)
{
    int rc = EXIT_SUCCESS;
    if (b->len > 0 && fwrite(b->data, 1, b->len, stdout) != b->len) {
        rc = EXIT_FAILURE;
    }
    if (fflush(stdout) != 0) {
        rc = EXIT_FAILURE;
    }
    if (rc != EXIT_SUCCESS) {
        fputs("strata: cannot write the output\n", stderr);
    }
    return rc;
}

static void report_failure(const struct cli *c, const st_client *cl, int rv, const st_response *r)
{
    const char *server = cl != NULL ? st_client_server(cl) : c->server;
    switch (rv) {
    case ST_ENET:
        fprintf(stderr,
                "strata: cannot connect to the collector at %s: %s\n"
                "Is strata-collector running there? Choose another with --server or "
                "STRATA_SERVER.\n",
                server, r->error);
        break;
    case ST_ETIMEOUT:
        fprintf(stderr, "strata: the collector at %s did not answer in time: %s\n", server,
                r->error);
        break;
    case ST_EPARSE:
        fprintf(stderr, "strata: the collector at %s sent something that is not JSON: %s\n", server,
                r->error);
        break;
    default:
        fprintf(stderr, "strata: request to %s failed: %s (%s)\n", server,
                r->error[0] != '\0' ? r->error : st_strerror(rv), st_strerror(rv));
    }
}

static void report_http_error(const st_client *cl, const st_response *r)
{
    fprintf(stderr, "strata: %s (HTTP %ld from %s)\n", r->error, r->status, st_client_server(cl));
    if (r->status == 401 || r->status == 403) {
        fputs("The collector wants a valid bearer token: set --token or STRATA_TOKEN.\n", stderr);
    }
}

static bool has_control(const char *s)
{
    for (; s != NULL && *s != '\0'; s++) {
        if ((unsigned char)*s < 0x20 || *s == 0x7f) {
            return true;
        }
    }
    return false;
}

/* One API call. On success *resp holds the JSON (free it); otherwise the
 * reason is printed and the exit status returned. */
static int request(const struct cli *c, bool post, const char *path, st_response *resp)
{
    st_client_opts opts = {.server = c->server, .token = c->token, .timeout_ms = c->timeout_ms};
    st_client *cl = NULL;
    int rv = st_client_open(&opts, &cl);

    memset(resp, 0, sizeof(*resp));
    if (rv == ST_EINVAL && has_control(c->token)) {
        usage_error(c, "the token holds control characters");
        return EXIT_USAGE;
    }
    if (rv == ST_EINVAL) {
        usage_error(c, "bad --server '%s' (an http:// or https:// URL)", c->server);
        return EXIT_USAGE;
    }
    if (rv != ST_OK) {
        fprintf(stderr, "strata: %s\n", st_strerror(rv));
        return EXIT_FAILURE;
    }
    rv = post ? st_client_post(cl, path, NULL, resp) : st_client_get(cl, path, resp);
    if (rv != ST_OK) {
        report_failure(c, cl, rv, resp);
        st_response_free(resp);
        st_client_close(cl);
        return EXIT_FAILURE;
    }
    if (resp->status < 200 || resp->status >= 300) {
        report_http_error(cl, resp);
        st_response_free(resp);
        st_client_close(cl);
        return EXIT_FAILURE;
    }
    st_client_close(cl);
    return EXIT_SUCCESS;
}

typedef int (*render_fn)(const json_t *doc, int64_t now_ms, st_buf *out);

/* GETs path and prints the answer through render (or as JSON). */
static int show(const struct cli *c, const char *path, render_fn render)
{
    st_response resp;
    st_buf out;
    int rc = request(c, false, path, &resp);
    int rv;

    if (rc != EXIT_SUCCESS) {
        return rc;
    }
    st_buf_init(&out, ST_CLI_OUTPUT_MAX);
    rv = c->json ? st_render_json(resp.json, &out) : render(resp.json, st_time_wall_ms(), &out);
    if (rv == ST_EPARSE) {
        fprintf(stderr, "strata: unexpected answer from %s (see it with --json)\n", c->server);
        rc = EXIT_FAILURE;
    } else if (rv != ST_OK) {
        fprintf(stderr, "strata: cannot format the answer: %s\n", st_strerror(rv));
        rc = EXIT_FAILURE;
    } else {
        rc = emit(&out);
    }
    st_buf_free(&out);
    st_response_free(&resp);
    return rc;
}

static int render_status(const json_t *doc, int64_t now_ms, st_buf *out)
{
    (void)now_ms;
    return st_render_status(doc, out);
}

static int render_query(const json_t *doc, int64_t now_ms, st_buf *out)
{
    (void)now_ms;
    return st_render_query(doc, out);
}

static int render_findings(const json_t *doc, int64_t now_ms, st_buf *out)
{
    (void)now_ms;
    return st_render_findings(doc, out);
}

/* Handles a global flag; 0 done, 1 not a global flag, -1 usage error. */
static int global_opt(struct cli *c, int opt, const char *arg)
{
    switch (opt) {
    case 's':
        c->server = arg;
        return 0;
    case 't':
        c->token = arg;
        return 0;
    case 'j':
        c->json = true;
        return 0;
    case 'h':
        c->help = true;
        return 0;
    case 'V':
        c->version = true;
        return 0;
    case OPT_TIMEOUT:
        if (st_duration_parse(arg, &c->timeout_ms) != ST_OK || c->timeout_ms <= 0) {
            usage_error(c, "bad --timeout '%s' (a duration such as 5s or 500ms)", arg);
            return -1;
        }
        return 0;
    default:
        return 1;
    }
}

/* The getopt error for the option at argv[optind - 1]. */
static void option_error(const struct cli *c, int opt, char **argv)
{
    const char *bad = optind > 0 ? argv[optind - 1] : "?";
    if (opt == ':') {
        usage_error(c, "option '%s' needs a value", bad);
    } else if (optopt != 0) {
        usage_error(c, "unknown option '-%c'", optopt);
    } else {
        usage_error(c, "unknown option '%s'", bad);
    }
}

/* Parses a command's flags (its own and the global ones) from argv, where
 * argv[0] is the command name. Calls own() for the command's flags; sets
 * *first to the index of the first positional argument (getopt moves them
 * to the end). Returns 0, or the exit status for a usage error. */
static int parse_flags(struct cli *c, const struct command *cmd, int argc, char **argv,
                       int (*own)(struct cli *, void *, int, const char *), void *ctx, int *first)
{
    int opt;
    optind = 0; /* glibc: restart the scan from scratch for this argv */
    opterr = 0;
    while ((opt = getopt_long(argc, argv, GLOBAL_SHORTOPTS, cmd->longopts, NULL)) != -1) {
        int g;
        if (opt == '?' || opt == ':') {
            option_error(c, opt, argv);
            return EXIT_USAGE;
        }
        g = global_opt(c, opt, optarg);
        if (g < 0 || (g > 0 && (own == NULL || own(c, ctx, opt, optarg) != 0))) {
            return EXIT_USAGE;
        }
    }
    *first = optind;
    return 0;
}

static void command_help(const struct command *cmd)
{
    printf("Usage: strata [global options] %s%s%s\n\n%s\n%s%s", cmd->name,
           cmd->synopsis[0] != '\0' ? " " : "", cmd->synopsis, cmd->summary,
           cmd->details != NULL ? "\n" : "", cmd->details != NULL ? cmd->details : "");
    if (cmd->options != NULL) {
        printf("\nOptions:\n%s", cmd->options);
    }
    printf("\n%s", global_help);
}

/* Parses flags and checks the positional count; -1 means "go on". */
static int prepare(struct cli *c, const struct command *cmd, int argc, char **argv,
                   int (*own)(struct cli *, void *, int, const char *), void *ctx, int npos,
                   int *first)
{
    int rc = parse_flags(c, cmd, argc, argv, own, ctx, first);
    if (rc != 0) {
        return rc;
    }
    if (c->help) {
        command_help(cmd);
        return EXIT_SUCCESS;
    }
    if (c->version) {
        printf("strata %s\n", ST_VERSION);
        return EXIT_SUCCESS;
    }
    if (argc - *first != npos) {
        if (npos == 0) {
            usage_error(c, "'%s' takes no arguments, got '%s'", cmd->name, argv[*first]);
        } else if (argc - *first < npos) {
            usage_error(c, "'%s' needs %s", cmd->name, cmd->synopsis);
        } else {
            usage_error(c, "'%s' takes one argument, got also '%s'", cmd->name, argv[*first + 1]);
        }
        return EXIT_USAGE;
    }
    return -1;
}

static const struct command commands[];

static const struct command *find_command(const char *name);

static int cmd_status(struct cli *c, int argc, char **argv)
{
    int first;
    int rc = prepare(c, find_command("status"), argc, argv, NULL, NULL, 0, &first);
    return rc >= 0 ? rc : show(c, "/v1/status", render_status);
}

static int cmd_agents(struct cli *c, int argc, char **argv)
{
    int first;
    int rc = prepare(c, find_command("agents"), argc, argv, NULL, NULL, 0, &first);
    return rc >= 0 ? rc : show(c, "/v1/agents", st_render_agents);
}

struct query_flags {
    st_query_params q;
    char top[16];
    bool since;
    bool from_flag;
    char from[32];
    char to[32];
};

static int time_flag(struct cli *c, const char *name, const char *arg, char *out, size_t len)
{
    if (st_client_time_param(arg, st_time_wall_ms(), out, len) != ST_OK) {
        usage_error(c,
                    "bad %s '%s' (a duration such as 1h, -30m, unix ms, "
                    "2026-11-27T06:00:00Z or now)",
                    name, arg);
        return -1;
    }
    return 0;
}

static int check_match(struct cli *c, struct query_flags *f, const char *arg)
{
    const char *eq = strchr(arg, '=');
    if (eq == NULL || eq == arg) {
        usage_error(c, "bad --match '%s' (label=value)", arg);
        return -1;
    }
    if (f->q.n_match >= ST_CLIENT_MAX_MATCH) {
        usage_error(c, "at most %d --match flags", ST_CLIENT_MAX_MATCH);
        return -1;
    }
    f->q.match[f->q.n_match++] = arg;
    return 0;
}

static int query_opt(struct cli *c, void *ctx, int opt, const char *arg)
{
    struct query_flags *f = ctx;
    int64_t ms;
    switch (opt) {
    case OPT_AGG:
        if (!st_client_agg_valid(arg)) {
            usage_error(c,
                        "unknown --agg '%s' (p50 p90 p95 p99 avg min max sum count rate "
                        "ratio delta)",
                        arg);
            return -1;
        }
        f->q.agg = arg;
        return 0;
    case OPT_MATCH:
        return check_match(c, f, arg);
    case OPT_BY:
        f->q.by = arg;
        if (arg[0] == '\0') {
            usage_error(c, "empty --by");
            return -1;
        }
        return 0;
    case OPT_SINCE:
        f->since = true;
        if (time_flag(c, "--since", arg, f->from, sizeof(f->from)) != 0) {
            return -1;
        }
        if (f->from[0] != '-') {
            usage_error(c, "--since takes a duration such as 1h, got '%s'", arg);
            return -1;
        }
        return 0;
    case OPT_FROM:
        f->from_flag = true;
        return time_flag(c, "--from", arg, f->from, sizeof(f->from));
    case OPT_TO:
        return time_flag(c, "--to", arg, f->to, sizeof(f->to));
    case OPT_TOP:
        if (st_parse_i64(arg, &ms) != ST_OK || ms < 1 || ms > 1000) {
            usage_error(c, "bad -n '%s' (1 to 1000)", arg);
            return -1;
        }
        snprintf(f->top, sizeof(f->top), "%s", arg);
        f->q.top = f->top;
        return 0;
    case OPT_STEP:
        f->q.step = arg;
        if (st_duration_parse(arg, &ms) != ST_OK || ms <= 0) {
            usage_error(c, "bad --step '%s' (a duration such as 10s)", arg);
            return -1;
        }
        return 0;
    default:
        return -1;
    }
}

static int render_top(const json_t *doc, int64_t now_ms, st_buf *out)
{
    (void)now_ms;
    return st_render_top(doc, out);
}

static int run_query(struct cli *c, const char *name, bool top, int argc, char **argv)
{
    struct query_flags f;
    st_buf path;
    int first;
    int rc;

    memset(&f, 0, sizeof(f));
    if (top) {
        /* The worst hosts over the last hour unless told otherwise. */
        f.q.by = "host";
        f.q.top = "10";
        snprintf(f.from, sizeof(f.from), "-1h");
    }
    rc = prepare(c, find_command(name), argc, argv, query_opt, &f, 1, &first);
    if (rc >= 0) {
        return rc;
    }
    if (f.since && (f.from_flag || f.to[0] != '\0')) {
        usage_error(c, "--since goes with neither --from nor --to");
        return EXIT_USAGE;
    }
    f.q.metric = argv[first];
    f.q.from = f.from[0] != '\0' ? f.from : NULL;
    f.q.to = f.to[0] != '\0' ? f.to : NULL;
    st_buf_init(&path, ST_CLIENT_URL_MAX);
    if (st_client_query_path(&f.q, &path) != ST_OK || st_buf_append(&path, "", 1) != ST_OK) {
        st_buf_free(&path);
        usage_error(c, "the query does not fit in a URL");
        return EXIT_USAGE;
    }
    rc = show(c, (const char *)path.data, top ? render_top : render_query);
    st_buf_free(&path);
    return rc;
}

static int cmd_query(struct cli *c, int argc, char **argv)
{
    return run_query(c, "query", false, argc, argv);
}

static int cmd_top(struct cli *c, int argc, char **argv)
{
    return run_query(c, "top", true, argc, argv);
}

struct findings_flags {
    const char *layer;
    const char *status;
    int64_t limit;
};

static bool one_of(const char *s, const char *const *list)
{
    for (; *list != NULL; list++) {
        if (strcmp(s, *list) == 0) {
            return true;
        }
    }
    return false;
}

static int findings_opt(struct cli *c, void *ctx, int opt, const char *arg)
{
    static const char *const layers[] = {"database", "function",       "frontend",
                                         "realtime", "infrastructure", NULL};
    static const char *const states[] = {"open",     "dispatched",  "applied",   "validating",
                                         "resolved", "ineffective", "dismissed", NULL};
    struct findings_flags *f = ctx;
    switch (opt) {
    case OPT_LAYER:
        f->layer = arg;
        if (!one_of(arg, layers)) {
            usage_error(c,
                        "unknown --layer '%s' (database function frontend realtime "
                        "infrastructure)",
                        arg);
            return -1;
        }
        return 0;
    case OPT_STATUS:
        f->status = arg;
        if (!one_of(arg, states)) {
            usage_error(c,
                        "unknown --status '%s' (open dispatched applied validating "
                        "resolved ineffective dismissed)",
                        arg);
            return -1;
        }
        return 0;
    case OPT_LIMIT:
        if (st_parse_i64(arg, &f->limit) != ST_OK || f->limit <= 0) {
            usage_error(c, "bad --limit '%s' (a positive number)", arg);
            return -1;
        }
        return 0;
    default:
        return -1;
    }
}

static int cmd_findings(struct cli *c, int argc, char **argv)
{
    struct findings_flags f = {NULL, NULL, 0};
    st_buf path;
    int first;
    int rc = prepare(c, find_command("findings"), argc, argv, findings_opt, &f, 0, &first);

    if (rc >= 0) {
        return rc;
    }
    st_buf_init(&path, ST_CLIENT_URL_MAX);
    if (st_client_findings_path(f.layer, f.status, f.limit, &path) != ST_OK ||
        st_buf_append(&path, "", 1) != ST_OK) {
        st_buf_free(&path);
        fputs("strata: out of memory\n", stderr);
        return EXIT_FAILURE;
    }
    rc = show(c, (const char *)path.data, render_findings);
    st_buf_free(&path);
    return rc;
}

/* "/v1/findings/ID[/action]" into path (NUL-terminated); usage error when
 * the id cannot be one. */
static int finding_path(struct cli *c, const char *id, const char *action, st_buf *path)
{
    st_buf_init(path, ST_CLIENT_URL_MAX);
    if (st_client_finding_path(id, action, path) != ST_OK || st_buf_append(path, "", 1) != ST_OK) {
        st_buf_free(path);
        usage_error(c, "bad finding id '%s'", id);
        return EXIT_USAGE;
    }
    return -1;
}

static int cmd_finding(struct cli *c, int argc, char **argv)
{
    st_buf path;
    int first;
    int rc = prepare(c, find_command("finding"), argc, argv, NULL, NULL, 1, &first);

    if (rc >= 0 || (rc = finding_path(c, argv[first], NULL, &path)) >= 0) {
        return rc;
    }
    rc = show(c, (const char *)path.data, st_render_finding);
    st_buf_free(&path);
    return rc;
}

/* ack, dismiss, applied: POST /v1/findings/ID/ACTION. */
static int post_action(struct cli *c, const char *action, const char *done, int argc, char **argv)
{
    st_response resp;
    st_buf path;
    st_buf out;
    int first;
    int rc = prepare(c, find_command(action), argc, argv, NULL, NULL, 1, &first);

    if (rc >= 0 || (rc = finding_path(c, argv[first], action, &path)) >= 0) {
        return rc;
    }
    rc = request(c, true, (const char *)path.data, &resp);
    if (rc == EXIT_SUCCESS) {
        const char *status = json_string_value(json_object_get(resp.json, "status"));
        int rv;
        st_buf_init(&out, ST_CLI_OUTPUT_MAX);
        if (c->json) {
            rv = st_render_json(resp.json, &out);
        } else {
            rv = st_buf_printf(&out, "finding %s %s", argv[first], done);
        }
        if (rv == ST_OK && !c->json && status != NULL) {
            rv = st_buf_append_str(&out, " (now ");
            rv = rv == ST_OK ? st_fmt_sanitize(status, false, &out) : rv;
            rv = rv == ST_OK ? st_buf_append_str(&out, ")") : rv;
        }
        if (rv == ST_OK && !c->json) {
            rv = st_buf_append_str(&out, "\n");
        }
        rc = rv == ST_OK ? emit(&out) : EXIT_FAILURE;
        st_buf_free(&out);
        st_response_free(&resp);
    }
    st_buf_free(&path);
    return rc;
}

static int cmd_baseline(struct cli *c, int argc, char **argv)
{
    st_response resp;
    st_buf out;
    int first;
    int rc = prepare(c, find_command("baseline"), argc, argv, NULL, NULL, 1, &first);
    if (rc >= 0) {
        return rc;
    }
    if (strcmp(argv[first], "pin") != 0) {
        usage_error(c, "unknown baseline action '%s' (pin)", argv[first]);
        return EXIT_USAGE;
    }
    rc = request(c, true, "/v1/baselines/pin", &resp);
    if (rc == EXIT_SUCCESS) {
        int rv;
        st_buf_init(&out, ST_CLI_OUTPUT_MAX);
        rv = c->json ? st_render_json(resp.json, &out)
                     : st_buf_printf(
                           &out, "pinned %lld baselines\n",
                           (long long)json_integer_value(json_object_get(resp.json, "pinned")));
        rc = rv == ST_OK ? emit(&out) : EXIT_FAILURE;
        st_buf_free(&out);
        st_response_free(&resp);
    }
    return rc;
}

static int cmd_ack(struct cli *c, int argc, char **argv)
{
    return post_action(c, "ack", "acknowledged", argc, argv);
}

static int cmd_dismiss(struct cli *c, int argc, char **argv)
{
    return post_action(c, "dismiss", "dismissed", argc, argv);
}

static int cmd_applied(struct cli *c, int argc, char **argv)
{
    return post_action(c, "applied", "marked applied", argc, argv);
}

static const struct option plain_opts[] = {GLOBAL_LONGOPTS, {NULL, 0, NULL, 0}};

/* The flags query and top share. */
#define SELECT_LONGOPTS                                                                         \
    {"agg", required_argument, NULL, OPT_AGG}, {"match", required_argument, NULL, OPT_MATCH},   \
        {"by", required_argument, NULL, OPT_BY}, {"since", required_argument, NULL, OPT_SINCE}, \
        {"from", required_argument, NULL, OPT_FROM},                                            \
    {                                                                                           \
        "to", required_argument, NULL, OPT_TO                                                   \
    }

static const struct option query_opts[] = {GLOBAL_LONGOPTS,
                                           SELECT_LONGOPTS,
                                           {"step", required_argument, NULL, OPT_STEP},
                                           {NULL, 0, NULL, 0}};

static const struct option top_opts[] = {
    GLOBAL_LONGOPTS, SELECT_LONGOPTS, {"n", required_argument, NULL, OPT_TOP}, {NULL, 0, NULL, 0}};

static const struct option findings_opts[] = {GLOBAL_LONGOPTS,
                                              {"layer", required_argument, NULL, OPT_LAYER},
                                              {"status", required_argument, NULL, OPT_STATUS},
                                              {"limit", required_argument, NULL, OPT_LIMIT},
                                              {NULL, 0, NULL, 0}};

static const struct command commands[] = {
    {"status", "", "Shows the optimization loop: its state, iteration and targets.", NULL, NULL,
     plain_opts, cmd_status},
    {"agents", "", "Lists the agents that reported.",
     "LAST SEEN is the time since the agent's last frame; SEQ the highest seq applied,\n"
     "FRAMES how many frames were applied, LOST = SEQ - FRAMES (0 when none was lost).\n",
     NULL, plain_opts, cmd_agents},
    {"query", "METRIC", "Queries one metric over time.",
     "Prints one block per series: its labels, then TIME VALUE rows in the series' unit.\n",
     "  --agg A          p50 p90 p95 p99 avg min max sum count rate ratio delta\n"
     "  --match K=V      keep series whose label K is V (repeatable)\n"
     "  --by L1,L2       group by these labels\n"
     "  --since DUR      the last DUR (1h, 30m); or:\n"
     "  --from T --to T  T: -1h (relative), unix ms, 2026-11-27T06:00:00Z or now\n"
     "  --step DUR       resolution, e.g. 10s\n",
     query_opts, cmd_query},
    {"top", "METRIC", "Ranks the worst entities of a metric.",
     "One value per group over the range, highest first (default: by host, last hour).\n"
     "Example: strata top mem.rss --agg delta --since 24h   (hosts whose RSS grew most)\n",
     "  --agg A          p50 p90 p95 p99 avg min max sum count rate ratio delta\n"
     "  --match K=V      keep series whose label K is V (repeatable)\n"
     "  --by L1,L2       group by these labels (default host)\n"
     "  --since DUR      the last DUR (default 1h); or --from T --to T\n"
     "  --n N            how many (default 10)\n",
     top_opts, cmd_top},
    {"findings", "", "Lists findings, highest priority first.", NULL,
     "  --layer L        database function frontend realtime infrastructure\n"
     "  --status S       open dispatched applied validating resolved ineffective dismissed\n"
     "  --limit N        at most N findings\n",
     findings_opts, cmd_findings},
    {"finding", "ID", "Shows one finding with its evidence, optimization and history.", NULL, NULL,
     plain_opts, cmd_finding},
    {"ack", "ID", "Acknowledges a finding.", NULL, NULL, plain_opts, cmd_ack},
    {"baseline", "pin", "Pins the current baselines before a change.",
     "Regressions are then judged against the pinned values until the next pin.\n", NULL,
     plain_opts, cmd_baseline},
    {"dismiss", "ID", "Dismisses a finding.", NULL, NULL, plain_opts, cmd_dismiss},
    {"applied", "ID", "Reports a finding's optimization as applied (starts validation).", NULL,
     NULL, plain_opts, cmd_applied},
};

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < ST_ARRAY_LEN(commands); i++) {
        if (strcmp(commands[i].name, name) == 0) {
            return &commands[i];
        }
    }
    return NULL;
}

static void main_help(void)
{
    printf("Usage: strata [global options] COMMAND [options] [ARG]\n\n"
           "The command line of Strata: asks the collector's HTTP API.\n\nCommands:\n");
    for (size_t i = 0; i < ST_ARRAY_LEN(commands); i++) {
        char head[32];
        snprintf(head, sizeof(head), "%s %s", commands[i].name, commands[i].synopsis);
        printf("  %-14s %s\n", head, commands[i].summary);
    }
    printf("\n%s\nExit status: 0 ok, 1 the request failed, 2 usage error.\n"
           "Run 'strata COMMAND --help' for a command's options.\n",
           global_help);
}

/* Global flags before the command; returns the command's index in argv,
 * 0 when there is none, or -EXIT_USAGE. */
static int parse_global(struct cli *c, int argc, char **argv)
{
    int opt;
    opterr = 0;
    /* "+": stop at the command; its own flags are parsed by the command. */
    while ((opt = getopt_long(argc, argv, "+" GLOBAL_SHORTOPTS, plain_opts, NULL)) != -1) {
        if (opt == '?' || opt == ':') {
            option_error(c, opt, argv);
            return -EXIT_USAGE;
        }
        if (global_opt(c, opt, optarg) != 0) {
            return -EXIT_USAGE;
        }
    }
    return optind < argc ? optind : 0;
}

int main(int argc, char **argv)
{
    struct cli c = {.server = getenv("STRATA_SERVER"),
                    .token = getenv("STRATA_TOKEN"),
                    .timeout_ms = DEFAULT_TIMEOUT_MS};
    const struct command *cmd;
    int at;
    int rc;

    if (c.server == NULL || c.server[0] == '\0') {
        c.server = ST_CLIENT_DEFAULT_SERVER;
    }
    at = parse_global(&c, argc, argv);
    if (at < 0) {
        return -at;
    }
    if (c.version) {
        printf("strata %s\n", ST_VERSION);
        return EXIT_SUCCESS;
    }
    if (at == 0 && !c.help) {
        usage_error(&c, "no command given");
        return EXIT_USAGE;
    }
    if (at > 0 && strcmp(argv[at], "help") == 0 && at + 1 < argc) {
        /* "strata help query" is "strata query --help". */
        at++;
        c.help = true;
    } else if (at == 0 || strcmp(argv[at], "help") == 0) {
        main_help();
        return EXIT_SUCCESS;
    }
    if ((cmd = find_command(argv[at])) == NULL) {
        usage_error(&c, "unknown command '%s'", argv[at]);
        return EXIT_USAGE;
    }
    c.command = cmd->name;
    if (st_client_global_init() != ST_OK) {
        fputs("strata: cannot initialize libcurl\n", stderr);
        return EXIT_FAILURE;
    }
    rc = cmd->run(&c, argc - at, argv + at);
    st_client_global_cleanup();
    return rc;
}
