/* The agent's schedule and frame building. See agent.h. */
#include "agent.h"

#include "actions/runner.h"
#include "emit.h"
#include "envelope.h"
#include "err.h"
#include "fold.h"
#include "frame.h"
#include "log.h"
#include "memtrim.h"
#include "discover.h"
#include "sampler.h"
#include "sender.h"
#include "spool.h"
#include "timeutil.h"
#include "util.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* How long the schedule sleeps at most: without a wake fd (to notice
 * *stop), and with one (a bound for anything the schedule did not plan). */
#define TICK_MAX_MS 100
#define SLEEP_MAX_MS 1000
#define STOP_DRAIN_MS 3000
#define MAX_AGENT_LABELS 16
#define ST_AGENT_SELF_FRAMES 4  /* the agent's own series in one frame of this many */
#define ST_AGENT_INFO_FRAMES 20 /* version and boot_id in one frame of this many */

struct inst {
    const st_sampler_def *def;
    void *ctx;
    st_sampler_env env;
    int64_t next_due;
    int64_t backoff_ms;
    unsigned failures;
};

struct st_agent {
    const st_agent_settings *s;
    st_cfg_doc *found_docs[ST_DISCOVER_MAX];
    char found_keys[ST_DISCOVER_MAX][160];
    size_t nfound;
    int64_t next_discovery;
    int64_t next_trim; /* monotonic ms; 0: after the next frame */
    struct inst inst[ST_AGENT_MAX_SAMPLERS];
    size_t ninst;
    st_fold *fold;
    st_zctx *z;
    st_spool *spool;
    st_sender *sender;
    st_runner *actions; /* opt-in actions that ride on acks */
    uint8_t id[16];
    uint8_t key[ST_ENV_KEY_MAX];
    size_t key_len;
    char host[256];
    char boot_id[64];
    Strata__V1__Agent info;
    Strata__V1__Label labels[MAX_AGENT_LABELS];
    Strata__V1__Label *labelp[MAX_AGENT_LABELS];
    uint64_t frames_lost;  /* frames that could not be spooled */
    uint64_t frames_built; /* by this process */
    st_buf enc;
    st_buf env;
};

static int parse_role(const char *r, Strata__V1__Role *out)
{
    static const char *names[] = {"", "edge", "cdn", "app", "db"};
    for (size_t i = 1; i < ST_ARRAY_LEN(names); i++) {
        if (r != NULL && strcmp(r, names[i]) == 0) {
            *out = (Strata__V1__Role)i;
            return ST_OK;
        }
    }
    return ST_EINVAL;
}

static int init_labels(st_agent *a, const st_cfg_doc *doc, st_cfg_error *err)
{
    const st_cfg_node *m = a->s->labels;
    size_t n = st_cfg_map_len(m);
    if (m == NULL) {
        return ST_OK;
    }
    if (st_cfg_node_type(m) != ST_CFG_NODE_MAP || n > MAX_AGENT_LABELS) {
        return st_cfg_fail(err, doc, m, "labels", "a mapping of at most %d labels",
                           MAX_AGENT_LABELS);
    }
    for (size_t i = 0; i < n; i++) {
        const char *v = st_cfg_scalar(st_cfg_map_value(m, i));
        if (v == NULL) {
            return st_cfg_fail(err, doc, st_cfg_map_value(m, i), st_cfg_map_key(m, i),
                               "label values are strings");
        }
        strata__v1__label__init(&a->labels[i]);
        a->labels[i].key = (char *)st_cfg_map_key(m, i);
        a->labels[i].value = (char *)v;
        a->labelp[i] = &a->labels[i];
    }
    a->info.labels = a->labelp;
    a->info.n_labels = n;
    return ST_OK;
}

static int init_identity(st_agent *a, const st_cfg_doc *doc, st_cfg_error *err)
{
    char path[4200];
    char *boot = NULL;
    strata__v1__agent__init(&a->info);
    if (a->s->host != NULL) {
        snprintf(a->host, sizeof(a->host), "%s", a->s->host);
    } else if (gethostname(a->host, sizeof(a->host) - 1) != 0) {
        snprintf(a->host, sizeof(a->host), "unknown");
    }
    if (parse_role(a->s->role, &a->info.role) != ST_OK) {
        return st_cfg_fail(err, doc, doc != NULL ? st_cfg_get(st_cfg_root(doc), "role") : NULL,
                           "role", "'%s' is not edge, cdn, app or db",
                           a->s->role ? a->s->role : "");
    }
    snprintf(path, sizeof(path), "%s/sys/kernel/random/boot_id", a->s->proc_root);
    if (st_file_read(path, 63, &boot, NULL) == ST_OK) {
        snprintf(a->boot_id, sizeof(a->boot_id), "%.*s", (int)strcspn(boot, "\n"), boot);
        free(boot);
    }
    a->info.host = a->host;
    a->info.version = (char *)ST_VERSION;
    a->info.boot_id = a->boot_id;
    return init_labels(a, doc, err);
}

static int load_key(st_agent *a, st_cfg_error *err)
{
    char *text = NULL;
    size_t len = 0;
    int rv;
    if (a->s->key_file == NULL) {
        return ST_OK;
    }
    if ((rv = st_file_read(a->s->key_file, 1024, &text, &len)) != ST_OK) {
        return st_cfg_fail(err, NULL, NULL, "key_file", "cannot read %s: %s", a->s->key_file,
                           st_strerror(rv));
    }
    len = strcspn(text, "\r\n");
    text[len] = '\0';
    if (len % 2 != 0 || len / 2 > ST_ENV_KEY_MAX || len < 32 ||
        st_hex_decode(text, a->key, len / 2) != ST_OK) {
        free(text);
        return st_cfg_fail(err, NULL, NULL, "key_file", "%s must hold 16 to %d bytes as hex",
                           a->s->key_file, ST_ENV_KEY_MAX);
    }
    a->key_len = len / 2;
    free(text);
    return ST_OK;
}

/* Sampler options may carry "interval"; the rest belongs to the sampler. */
static int add_sampler(st_agent *a, const st_cfg_doc *doc, const char *name,
                       const st_cfg_node *opts, st_cfg_error *err)
{
    const st_sampler_def *def = st_sampler_find(name);
    struct inst *in = &a->inst[a->ninst];
    const st_cfg_node *iv = opts != NULL ? st_cfg_get(opts, "interval") : NULL;
    int rv;
    if (def == NULL) {
        return st_cfg_fail(err, doc, opts, name, "no such sampler");
    }
    if (a->ninst >= ST_AGENT_MAX_SAMPLERS) {
        return st_cfg_fail(err, doc, opts, name, "more than %d samplers", ST_AGENT_MAX_SAMPLERS);
    }
    in->env.interval_ms = a->s->interval_ms;
    if (iv != NULL && (st_cfg_scalar(iv) == NULL ||
                       st_duration_parse(st_cfg_scalar(iv), &in->env.interval_ms) != ST_OK ||
                       in->env.interval_ms < 10)) {
        return st_cfg_fail(err, doc, iv, "interval", "bad duration");
    }
    in->env.proc_root = a->s->proc_root;
    in->env.sys_root = a->s->sys_root;
    in->env.data_dir = a->s->data_dir;
    in->env.once = a->s->once;
    if ((rv =
             def->init(doc, opts != NULL && st_cfg_node_type(opts) == ST_CFG_NODE_MAP ? opts : NULL,
                       &in->env, &in->ctx, err)) != ST_OK) {
        return rv;
    }
    in->def = def;
    a->ninst++;
    return ST_OK;
}

static int init_samplers(st_agent *a, const st_cfg_doc *doc, st_cfg_error *err)
{
    const st_cfg_node *m = a->s->samplers;
    int rv;
    if (m == NULL) {
        if ((rv = add_sampler(a, doc, "host", NULL, err)) != ST_OK) {
            return rv;
        }
        return add_sampler(a, doc, "tcp", NULL, err);
    }
    if (st_cfg_node_type(m) != ST_CFG_NODE_MAP) {
        return st_cfg_fail(err, doc, m, "samplers", "a mapping of sampler names to options");
    }
    for (size_t i = 0; i < st_cfg_map_len(m); i++) {
        if ((rv = add_sampler(a, doc, st_cfg_map_key(m, i), st_cfg_map_value(m, i), err)) !=
            ST_OK) {
            return rv;
        }
    }
    return ST_OK;
}

static bool configured(const st_agent *a, const char *sampler)
{
    return a->s->samplers != NULL && st_cfg_get(a->s->samplers, sampler) != NULL;
}

static const char *const *list_or_null(const st_cfg_strlist *l)
{
    return l->n > 0 ? (const char *const *)l->v : NULL;
}

/* Adds a sampler for every service found that is neither configured by
 * hand nor already running. */
static void discover(st_agent *a)
{
    struct st_discover_lists l = {
        list_or_null(&a->s->disc_nginx), list_or_null(&a->s->disc_varnish),
        list_or_null(&a->s->disc_redis), list_or_null(&a->s->disc_memcached),
        list_or_null(&a->s->disc_postgres)};
    struct st_found found[ST_DISCOVER_MAX];
    size_t n = 0;
    st_discover(&l, found, ST_DISCOVER_MAX, &n);
    for (size_t i = 0; i < n && a->nfound < ST_DISCOVER_MAX; i++) {
        st_cfg_doc *doc = NULL;
        st_cfg_error err;
        bool seen = configured(a, found[i].sampler);
        char name[64];
        for (size_t k = 0; k < a->nfound && !seen; k++) {
            seen = strcmp(a->found_keys[k], found[i].key) == 0;
        }
        if (seen) {
            continue;
        }
        snprintf(name, sizeof(name), "discovered %s", found[i].sampler);
        if (st_cfg_load_string(name, found[i].yaml, strlen(found[i].yaml), &doc, &err) != ST_OK ||
            add_sampler(a, doc, found[i].sampler, st_cfg_root(doc), &err) != ST_OK) {
            ST_WARN("agent", "discovered %s but could not sample it: %s", found[i].key, err.msg);
            st_cfg_doc_free(doc);
            continue;
        }
        a->inst[a->ninst - 1].next_due = 0;
        a->found_docs[a->nfound] = doc;
        snprintf(a->found_keys[a->nfound++], sizeof(a->found_keys[0]), "%s", found[i].key);
        ST_INFO("agent", "discovered %s: sampling it", found[i].key);
    }
}

int st_agent_new(const st_agent_settings *s, const st_cfg_doc *doc, st_agent **out,
                 st_cfg_error *err)
{
    st_agent *a = calloc(1, sizeof(*a));
    int rv;
    if (a == NULL) {
        return ST_ENOMEM;
    }
    a->s = s;
    st_memtrim_set_auto(s->memory_trim_ms > 0); /* before samplers load libcurl or libpq */
    st_buf_init(&a->enc, ST_ENV_MAX_PAYLOAD);
    st_buf_init(&a->env, ST_ENV_MAX_LEN);
    if ((rv = st_fold_new(&a->fold)) != ST_OK || (rv = st_zctx_new(&a->z)) != ST_OK ||
        (rv = init_identity(a, doc, err)) != ST_OK || (rv = load_key(a, err)) != ST_OK ||
        (rv = init_samplers(a, doc, err)) != ST_OK ||
        (rv = st_runner_new(doc, s->actions, s->data_dir, &a->actions, err)) != ST_OK) {
        st_agent_free(a);
        return rv;
    }
    if (s->discover) {
        discover(a);
        a->next_discovery = st_time_mono_ms() + s->discover_interval_ms;
    }
    *out = a;
    return ST_OK;
}

void st_agent_free(st_agent *a)
{
    if (a == NULL) {
        return;
    }
    for (size_t i = 0; i < a->ninst; i++) {
        a->inst[i].def->fini(a->inst[i].ctx);
    }
    for (size_t i = 0; i < a->nfound; i++) {
        st_cfg_doc_free(a->found_docs[i]);
    }
    st_runner_free(a->actions);
    st_fold_free(a->fold);
    st_zctx_free(a->z);
    st_buf_free(&a->enc);
    st_buf_free(&a->env);
    free(a);
}

/* ---- schedule ---- */

static void run_sampler(st_agent *a, struct inst *in, int64_t now)
{
    st_emit *e = st_fold_begin(a->fold, now, in->env.interval_ms);
    int rv = in->def->sample(in->ctx, e);
    if (rv == ST_OK) {
        if (in->failures > 0) {
            ST_INFO("agent", "sampler %s works again after %u failures", in->def->name,
                    in->failures);
        }
        in->failures = 0;
        in->backoff_ms = 0;
        in->next_due = now - now % in->env.interval_ms + in->env.interval_ms;
        return;
    }
    /* Back off (doubling up to 5 minutes) and keep trying: a server that is
     * down now may be back later. */
    in->failures++;
    in->backoff_ms = in->backoff_ms == 0 ? in->env.interval_ms * 2 : in->backoff_ms * 2;
    if (in->backoff_ms > ST_SAMPLER_MAX_BACKOFF_MS) {
        in->backoff_ms = ST_SAMPLER_MAX_BACKOFF_MS;
    }
    in->next_due = now + in->backoff_ms;
    ST_WARN("agent", "sampler %s failed (%s); retrying in %llds", in->def->name, st_strerror(rv),
            (long long)(in->backoff_ms / 1000));
}

static void free_series(Strata__V1__Frame *f)
{
    for (size_t i = 0; i < f->n_series; i++) {
        strata__v1__series__free_unpacked(f->series[i], NULL);
    }
    free(f->series);
    f->series = NULL;
    f->n_series = 0;
}

/* The agent reports on itself through the same fold as every sampler, at
 * every flush into a point of ST_AGENT_SELF_FRAMES flush intervals: the fold
 * closes it, and the frame carries the agent's own series, once in that
 * many frames (a small agent's frames are otherwise a third self-report). */
static void emit_self(st_agent *a, int64_t now, const struct st_sender_stats *ns)
{
    st_emit *e = st_fold_begin(a->fold, now, a->s->flush_ms * ST_AGENT_SELF_FRAMES);
    struct st_spool_stats ss;
    st_series_desc d = {NULL, NULL, 0, ST_LAYER_INFRA, "", 0};
    st_spool_stats(a->spool, &ss);
    d.name = "agent.spool.frames";
    st_emit_gauge(e, &d, (double)ss.frames);
    d.name = "agent.spool.dropped";
    st_emit_gauge(e, &d, (double)ss.dropped);
    d.unit = "B";
    d.name = "agent.spool.bytes";
    st_emit_gauge(e, &d, (double)ss.bytes);
    d.unit = "";
    d.name = "agent.frames.sent";
    st_emit_counter_total(e, &d, (double)ns->sent);
    d.name = "agent.frames.rejected";
    st_emit_counter_total(e, &d, (double)ns->rejected);
    d.name = "agent.frames.lost";
    st_emit_counter_total(e, &d, (double)a->frames_lost);
    d.name = "agent.series.dropped";
    st_emit_counter_total(e, &d, (double)st_fold_dropped(a->fold));
}

/* Builds the frame for everything closed by now_ms, seals it and spools
 * it. */
static int flush(st_agent *a, int64_t now_ms, int64_t take_until)
{
    Strata__V1__Frame f = STRATA__V1__FRAME__INIT;
    Strata__V1__Agent info = a->info;
    struct st_sender_stats ns = {0};
    int codec = ST_CODEC_ZSTD;
    uint64_t seq;
    int rv;
    if (a->spool != NULL && a->sender != NULL) {
        st_sender_stats(a->sender, &ns);
        emit_self(a, now_ms, &ns);
    }
    /* The wire dictionary only once the collector's acks list it. */
    if (ns.codecs & (1u << ST_CODEC_ZSTD_DICT)) {
        codec = ST_CODEC_ZSTD_DICT;
    }
    /* version and boot_id change only with a new process or a reboot, and
     * the collector keeps the last ones it was told: they ride on the first
     * frame of a process and on every ST_AGENT_INFO_FRAMES-th after it (a
     * collector that lost its store learns them again within minutes).
     * host, role and labels name the series: every frame has them. */
    if (a->frames_built % ST_AGENT_INFO_FRAMES != 0) {
        info.version = (char *)protobuf_c_empty_string;
        info.boot_id = (char *)protobuf_c_empty_string;
    }
    if ((rv = st_fold_take(a->fold, take_until, &f)) != ST_OK || f.n_series == 0) {
        free_series(&f);
        return rv;
    }
    st_runner_take(a->actions, &f);
    seq = st_spool_next_seq(a->spool);
    f.agent_id.data = a->id;
    f.agent_id.len = 16;
    f.seq = seq;
    f.sent_unix_ms = now_ms;
    f.agent = &info;
    a->frames_built++;
    if ((rv = st_frame_encode(&f, &a->enc)) == ST_OK &&
        (rv = st_envelope_encode(a->z, a->id, seq, codec, (int)a->s->zstd_level, a->enc.data,
                                 a->enc.len, a->key_len ? a->key : NULL, a->key_len, &a->env)) ==
            ST_OK) {
        rv = st_spool_append(a->spool, seq, a->env.data, a->env.len);
    }
    /* One frame per flush: the next one builds its workspace again (tens
     * of µs) rather than this one staying resident for the whole interval. */
    st_zctx_release(a->z);
    if (rv != ST_OK) {
        a->frames_lost++;
        ST_ERROR("agent", "frame seq %llu with %zu series could not be spooled: %s",
                 (unsigned long long)seq, f.n_series, st_strerror(rv));
    }
    free_series(&f);
    st_runner_settle(a->actions, &f, rv == ST_OK); /* unspooled results wait for the next */
    if (rv == ST_OK) {
        st_sender_kick(a->sender);
    }
    return rv;
}

static int start_io(st_agent *a)
{
    char dir[4200];
    struct st_spool_opts so = {dir, a->s->spool_max_bytes, 0, false};
    struct st_sender_opts no = {a->s->collector,      (int)a->s->in_flight, a->s->timeout_ms,
                                a->s->backoff_min_ms, a->s->backoff_max_ms, a->s->tls_ca,
                                a->s->tls_cert,       a->s->tls_key,        a->s->tls_server_name};
    char idtext[37];
    int rv;
    snprintf(dir, sizeof(dir), "%s/spool", a->s->data_dir);
    if ((rv = st_spool_open(&so, &a->spool)) != ST_OK) {
        ST_ERROR("agent", "cannot open the spool in %s: %s", dir, st_strerror(rv));
        return rv;
    }
    st_spool_agent_id(a->spool, a->id);
    st_uuid_format(a->id, idtext);
    ST_INFO("agent", "agent %s (%s) sending to %s", idtext, a->host, a->s->collector);
    if ((rv = st_runner_start(a->actions)) != ST_OK) {
        return rv;
    }
    if ((rv = st_sender_start(&no, a->spool, st_runner_enqueue, a->actions, &a->sender)) != ST_OK) {
        ST_ERROR("agent", "cannot start the sender for %s: %s", a->s->collector, st_strerror(rv));
    }
    return rv;
}

static int64_t next_wake(const st_agent *a, int64_t next_flush)
{
    int64_t t = next_flush;
    for (size_t i = 0; i < a->ninst; i++) {
        t = ST_MIN(t, a->inst[i].next_due);
    }
    return t;
}

/* Sleeps up to ms, or until wake_fd is readable (then drained). An agent
 * with nothing due sleeps the whole interval: 14 idle wake-ups a second
 * were 40 % of a host-only agent's CPU. */
static void sleep_or_wake(int wake_fd, int64_t ms)
{
    struct pollfd p = {.fd = wake_fd, .events = POLLIN};
    char drain[64];
    if (wake_fd < 0) {
        st_time_sleep_ms(ST_MIN(TICK_MAX_MS, ms));
        return;
    }
    if (poll(&p, 1, (int)ST_MIN(ms, SLEEP_MAX_MS)) > 0 && (p.revents & POLLIN) != 0) {
        while (read(wake_fd, drain, sizeof(drain)) > 0) {
        }
    }
}

/* Start-up's library pages (memtrim.h) go once the first frame is out,
 * when every sampler has run and the sender is connected, and then every
 * memory_trim, for what rare paths (discovery, a reconnect) touched. */
static void trim(st_agent *a)
{
    int64_t t = st_time_mono_ms();
    size_t released;
    if (a->s->memory_trim_ms <= 0 || (a->next_trim != 0 && t < a->next_trim)) {
        return;
    }
    released = st_memtrim();
    ST_DEBUG("agent", "memory trim: %zu kB of library pages released", released / 1024);
    a->next_trim = t + a->s->memory_trim_ms;
}

int st_agent_run(st_agent *a, atomic_int *stop, int wake_fd)
{
    int64_t now = st_time_wall_ms();
    int64_t next_flush = now - now % a->s->flush_ms + a->s->flush_ms;
    int rv = start_io(a);
    if (rv != ST_OK) {
        st_sender_stop(a->sender, 0);
        st_spool_close(a->spool);
        return rv;
    }
    for (size_t i = 0; i < a->ninst; i++) {
        a->inst[i].next_due = now;
    }
    while (!atomic_load(stop)) {
        now = st_time_wall_ms();
        /* Due times are on the wall clock's grid: a clock stepped back
         * would otherwise pause sampling for the size of the step. */
        if (next_flush - now > a->s->flush_ms) {
            next_flush = now - now % a->s->flush_ms + a->s->flush_ms;
        }
        for (size_t i = 0; i < a->ninst; i++) {
            if (a->inst[i].next_due - now >
                ST_MAX(a->inst[i].env.interval_ms, a->inst[i].backoff_ms)) {
                a->inst[i].next_due = now;
            }
            if (now >= a->inst[i].next_due) {
                run_sampler(a, &a->inst[i], now);
            }
        }
        if (a->s->discover && st_time_mono_ms() >= a->next_discovery) {
            discover(a);
            a->next_discovery = st_time_mono_ms() + a->s->discover_interval_ms;
        }
        if (now >= next_flush) {
            flush(a, now, now);
            next_flush = now - now % a->s->flush_ms + a->s->flush_ms;
            trim(a);
        }
        if (!atomic_load(stop)) {
            sleep_or_wake(wake_fd, ST_MAX(1, next_wake(a, next_flush) - now));
        }
    }
    /* Every sampler reports once more (listeners hand over what they
     * aggregated since their last run), and everything folded goes to the
     * spool before we stop. */
    now = st_time_wall_ms();
    for (size_t i = 0; i < a->ninst; i++) {
        run_sampler(a, &a->inst[i], now);
    }
    flush(a, now, INT64_MAX);
    st_sender_stop(a->sender, STOP_DRAIN_MS);
    st_spool_close(a->spool);
    a->sender = NULL;
    a->spool = NULL;
    return ST_OK;
}

int st_agent_once(st_agent *a, int64_t wait_ms, char **out)
{
    Strata__V1__Frame f = STRATA__V1__FRAME__INIT;
    int64_t t0 = st_time_wall_ms();
    json_t *j = NULL;
    int rv;
    st_fold_totals_from_zero(a->fold, true);
    for (int round = 0; round < 2; round++) {
        for (size_t i = 0; i < a->ninst; i++) {
            st_emit *e = st_fold_begin_at(a->fold, t0, wait_ms + 1, st_time_wall_ms());
            if ((rv = a->inst[i].def->sample(a->inst[i].ctx, e)) != ST_OK) {
                ST_WARN("agent", "sampler %s failed: %s", a->inst[i].def->name, st_strerror(rv));
            }
        }
        if (round == 0) {
            st_time_sleep_ms(wait_ms);
        }
    }
    if ((rv = st_fold_take(a->fold, INT64_MAX, &f)) == ST_OK) {
        f.agent = &a->info;
        f.sent_unix_ms = st_time_wall_ms();
        rv = st_frame_to_json(&f, &j);
    }
    free_series(&f);
    if (rv != ST_OK) {
        return rv;
    }
    *out = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(j);
    return *out != NULL ? ST_OK : ST_ENOMEM;
}
