/* tcp: the kernel's TCP counters from <proc_root>/net/snmp (section Tcp) and
 * <proc_root>/net/netstat (section TcpExt). Both files hold pairs of lines,
 * a header of column names and a line of values with the same "Section:"
 * prefix; columns are found by name because kernels add and reorder them. */
#include "samplers.h"

#include "err.h"
#include "util.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define ST_TCP_MAX_FILE 65536 /* net/netstat is ~4 KiB; far larger is not procfs */
#define ST_TCP_MAX_LINE 16384 /* one header or value line */
#define ST_TCP_MAX_SECTION 32 /* "TcpExt", "IpExt", "MPTcpExt", ... */

typedef struct tcp_field {
    const char *section;
    const char *column;
    st_series_desc desc;
    bool gauge;
} tcp_field;

#define TCP_DESC(name)                       \
    {                                        \
        name, NULL, 0, ST_LAYER_INFRA, "", 0 \
    }

static const tcp_field fields[] = {
    {"Tcp", "RetransSegs", TCP_DESC("tcp.retrans_segs"), false},
    {"Tcp", "OutSegs", TCP_DESC("tcp.out_segs"), false},
    {"Tcp", "AttemptFails", TCP_DESC("tcp.attempt_fails"), false},
    {"Tcp", "EstabResets", TCP_DESC("tcp.estab_resets"), false},
    {"Tcp", "ActiveOpens", TCP_DESC("tcp.active_opens"), false},
    {"Tcp", "CurrEstab", TCP_DESC("tcp.curr_estab"), true},
    {"TcpExt", "ListenDrops", TCP_DESC("tcp.listen_drops"), false},
    {"TcpExt", "ListenOverflows", TCP_DESC("tcp.listen_overflows"), false},
    {"TcpExt", "TCPTimeouts", TCP_DESC("tcp.timeouts"), false},
};

#define NFIELDS ST_ARRAY_LEN(fields)

typedef struct tcp_ctx {
    char snmp_path[ST_PROCFS_PATH_MAX];
    char netstat_path[ST_PROCFS_PATH_MAX];
    uint64_t values[NFIELDS];
    bool found[NFIELDS];
    char buf[ST_TCP_MAX_FILE];
} tcp_ctx;

/* A span of text, not NUL-terminated. */
typedef struct span {
    const char *p;
    size_t n;
} span;

static bool span_eq(span s, const char *lit)
{
    return strlen(lit) == s.n && memcmp(s.p, lit, s.n) == 0;
}

/* The next line of text at *pos (without its newline); false at the end. */
static bool next_line(const char **pos, const char *end, span *line)
{
    const char *p = *pos;
    const char *nl;
    if (p >= end) {
        return false;
    }
    nl = memchr(p, '\n', (size_t)(end - p));
    line->p = p;
    line->n = (size_t)((nl != NULL ? nl : end) - p);
    *pos = nl != NULL ? nl + 1 : end;
    return true;
}

/* The next space-separated token of line at *pos; false when none is left. */
static bool next_token(span line, size_t *pos, span *tok)
{
    size_t i = *pos;
    size_t start;
    while (i < line.n && line.p[i] == ' ') {
        i++;
    }
    if (i == line.n) {
        *pos = i;
        return false;
    }
    start = i;
    while (i < line.n && line.p[i] != ' ') {
        i++;
    }
    tok->p = line.p + start;
    tok->n = i - start;
    *pos = i;
    return true;
}

/* Splits "Section: rest" into the section and the offset of rest. */
static int split_section(span line, span *section, size_t *rest)
{
    const char *colon = memchr(line.p, ':', line.n);
    if (line.n > ST_TCP_MAX_LINE || colon == NULL || colon == line.p ||
        (size_t)(colon - line.p) > ST_TCP_MAX_SECTION) {
        return ST_EPARSE;
    }
    section->p = line.p;
    section->n = (size_t)(colon - line.p);
    *rest = section->n + 1;
    return ST_OK;
}

static int parse_value(span tok, uint64_t *out)
{
    const char *p = tok.p;
    if (st_procfs_u64(&p, out) != ST_OK || p != tok.p + tok.n) {
        return ST_EPARSE;
    }
    return ST_OK;
}

/* Matches one header line against its value line column by column. */
static int parse_pair(tcp_ctx *c, span section, span head, size_t hpos, span vals, size_t vpos)
{
    span name;
    span val;
    for (;;) {
        bool have_name = next_token(head, &hpos, &name);
        bool have_val = next_token(vals, &vpos, &val);
        if (have_name != have_val) {
            return ST_EPARSE; /* as many names as values, or the file is corrupt */
        }
        if (!have_name) {
            return ST_OK;
        }
        for (size_t i = 0; i < NFIELDS; i++) {
            if (!span_eq(section, fields[i].section) || !span_eq(name, fields[i].column)) {
                continue;
            }
            if (parse_value(val, &c->values[i]) != ST_OK) {
                return ST_EPARSE;
            }
            c->found[i] = true;
        }
    }
}

static int read_and_parse(tcp_ctx *c, const char *path, const char *want)
{
    size_t len;
    const char *pos = c->buf;
    const char *end;
    bool seen = false;
    span head;
    span vals;
    int rv = st_procfs_read(path, c->buf, sizeof(c->buf), &len);
    if (rv != ST_OK) {
        return rv;
    }
    end = c->buf + len;
    while (next_line(&pos, end, &head)) {
        span hsec;
        span vsec;
        size_t hpos;
        size_t vpos;
        if (head.n == 0) {
            continue;
        }
        if (!next_line(&pos, end, &vals) || split_section(head, &hsec, &hpos) != ST_OK ||
            split_section(vals, &vsec, &vpos) != ST_OK || hsec.n != vsec.n ||
            memcmp(hsec.p, vsec.p, hsec.n) != 0) {
            return ST_EPARSE; /* every header has its value line right after it */
        }
        if ((rv = parse_pair(c, hsec, head, hpos, vals, vpos)) != ST_OK) {
            return rv;
        }
        seen = seen || span_eq(hsec, want);
    }
    return seen ? ST_OK : ST_EPARSE;
}

/* Reads one file and fills the fields it holds; want names the section
 * the file must contain. */
static int parse_file(tcp_ctx *c, const char *path, const char *want)
{
    int rv = read_and_parse(c, path, want);
    if (rv != ST_OK) {
        /* Values that came before the fault are not trusted either. */
        for (size_t i = 0; i < NFIELDS; i++) {
            c->found[i] = c->found[i] && strcmp(fields[i].section, want) != 0;
        }
    }
    return rv;
}

int st_tcp_sample(void *ctx, st_emit *e)
{
    tcp_ctx *c = ctx;
    int rv;
    int r;
    memset(c->found, 0, sizeof(c->found));
    /* A broken netstat should not hide the snmp counters: parse both,
     * emit what was found, report the first error. */
    rv = parse_file(c, c->snmp_path, "Tcp");
    r = parse_file(c, c->netstat_path, "TcpExt");
    if (rv == ST_OK) {
        rv = r;
    }
    for (size_t i = 0; i < NFIELDS; i++) {
        if (!c->found[i]) {
            continue; /* an older kernel without the column */
        }
        r = fields[i].gauge ? st_emit_gauge(e, &fields[i].desc, (double)c->values[i])
                            : st_emit_counter_total(e, &fields[i].desc, (double)c->values[i]);
        if (rv == ST_OK) {
            rv = r;
        }
    }
    return rv;
}

static const st_cfg_map tcp_rows[] = {{0}};

int st_tcp_init(const st_cfg_doc *doc, const st_cfg_node *cfg, const st_sampler_env *env,
                void **ctx, st_cfg_error *err)
{
    tcp_ctx *c;
    char none; /* tcp has no options; binding still refuses unknown keys */
    int rv = st_cfg_bind(doc, cfg, tcp_rows, &none, err);
    if (rv != ST_OK) {
        return rv;
    }
    if ((c = calloc(1, sizeof(*c))) == NULL) {
        return ST_ENOMEM;
    }
    if (st_procfs_path(c->snmp_path, sizeof(c->snmp_path), "%s/net/snmp", env->proc_root) ||
        st_procfs_path(c->netstat_path, sizeof(c->netstat_path), "%s/net/netstat",
                       env->proc_root)) {
        free(c);
        return st_cfg_fail(err, doc, cfg, "proc_root", "path too long");
    }
    *ctx = c;
    return ST_OK;
}

void st_tcp_fini(void *ctx)
{
    free(ctx);
}

const st_sampler_def st_sampler_tcp = ST_SAMPLER_ROW(tcp);
