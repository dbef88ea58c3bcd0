/* store_real_bench: the store's bytes per sample on real agent data. It
 * replays the frames a strata-agent left in its spool (recorded by
 * agent_all_bench.sh with ST_BENCH_FRAMES) into a fresh store as the
 * collector would (envelope, decompress, decode, validate, apply in seq
 * order), runs the builder to completion and measures every resolution the
 * way query_bench does (bench_store.h). It prints figures; it asserts
 * nothing. The recording is never written to: the spool is read from a copy.
 *
 *   store_real_bench --frames DIR [--dir STOREDIR] [--batch 200] */
#include "envelope.h"
#include "err.h"
#include "frame.h"
#include "spool.h"
#include "store.h"
#include "store_codec.h"
#include "store_internal.h"
#include "timeutil.h"
#include "util.h"
#include "bench_store.h"
#include "bench_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_BATCH 10000             /* frames per transaction */
#define MAX_METRICS 65536           /* distinct metric names the replay keeps */
#define MAX_SKIP_SHOWN 10           /* skipped records reported one by one */
#define MAX_GROWS 8                 /* map doublings for one batch */
#define FUTURE_MS (5 * 60 * 1000)   /* ingest's default skew ahead, */
#define AGE_MS (48LL * 3600 * 1000) /* and back, of the frame's sent time */
#define COPY_CHUNK 65536
/* The builder's clock at the end: past the last point by the ten minutes
 * the store keeps a closed hour fresh, so that every closed hour is
 * compacted, as it is at steady state (the projection charges the longer
 * fresh window itself). */
#define AFTER_END_MS (10 * 60000 + 5000)

/* ---- metric names seen in the frames ---- */

struct metric {
    char *name;
    int kind;   /* of its first series */
    bool mixed; /* a later series had another kind */
};

/* Open addressing over a power-of-two table, grown at half full. */
struct names {
    struct metric *slot;
    size_t cap;
    size_t n;
};

static void names_free(struct names *t)
{
    for (size_t i = 0; i < t->cap; i++) {
        free(t->slot[i].name);
    }
    free(t->slot);
    memset(t, 0, sizeof(*t));
}

static struct metric *names_slot(struct metric *slot, size_t cap, const char *name)
{
    size_t i = (size_t)st_fnv1a(ST_FNV_SEED, name, strlen(name)) & (cap - 1);
    while (slot[i].name != NULL && strcmp(slot[i].name, name) != 0) {
        i = (i + 1) & (cap - 1);
    }
    return &slot[i];
}

static int names_grow(struct names *t)
{
    size_t cap = t->cap ? t->cap * 2 : 256;
    struct metric *slot = calloc(cap, sizeof(*slot));
    if (slot == NULL) {
        return ST_ENOMEM;
    }
    for (size_t i = 0; i < t->cap; i++) {
        if (t->slot[i].name != NULL) {
            *names_slot(slot, cap, t->slot[i].name) = t->slot[i];
        }
    }
    free(t->slot);
    t->slot = slot;
    t->cap = cap;
    return ST_OK;
}

/* Adds name with kind when new; *mixed tells when a known name is first
 * seen with another kind. ST_ETOOBIG past MAX_METRICS. */
static int names_add(struct names *t, const char *name, int kind, bool *mixed)
{
    struct metric *m = t->cap ? names_slot(t->slot, t->cap, name) : NULL;
    int rv;
    *mixed = false;
    if (m != NULL && m->name != NULL) {
        *mixed = m->kind != kind && !m->mixed;
        m->mixed |= *mixed;
        return ST_OK;
    }
    if (t->n >= MAX_METRICS) {
        return ST_ETOOBIG;
    }
    if ((t->n + 1) * 2 > t->cap) {
        if ((rv = names_grow(t)) != ST_OK) {
            return rv;
        }
        m = names_slot(t->slot, t->cap, name);
    }
    if ((m->name = strdup(name)) == NULL) {
        return ST_ENOMEM;
    }
    m->kind = kind;
    t->n++;
    return ST_OK;
}

/* ---- the replay ---- */

struct replay {
    st_store *st;
    st_zctx *z;
    st_buf raw; /* a decompressed payload */
    struct names names;
    st_frame **batch; /* decoded, waiting for their transaction */
    int nbatch;
    int batch_max;
    uint64_t records;
    uint64_t first_seq;
    uint64_t last_seq;
    uint64_t frames;     /* applied */
    uint64_t skipped;    /* records that did not decode or validate */
    uint64_t duplicates; /* frames the store had already */
    uint64_t mixed;      /* metrics with series of more than one kind */
    uint64_t samples[NKINDS + 1];
    int64_t first_ms; /* the first point's start */
    int64_t last_ms;  /* the last point's end */
    double load_s;
    double build_s;
    int slices;
    struct st_store_stats stats;
};

/* Opens, decompresses, decodes and validates one spool record as the
 * collector's ingest does, with the frame's sent time for its clock. The
 * spool is the agent's own: there is no key to check a signature with. */
static int decode_record(struct replay *rp, uint64_t seq, const uint8_t *data, size_t len,
                         st_frame **out, const char **detail)
{
    st_envelope env;
    st_frame_limits lim;
    st_frame *f = NULL;
    int rv;
    *detail = NULL;
    if ((rv = st_envelope_open(data, len, &env)) != ST_OK) {
        return rv;
    }
    if (env.seq != seq) {
        *detail = "the envelope's seq is not the spool record's";
        return ST_ECORRUPT;
    }
    if ((rv = st_envelope_decompress(rp->z, &env, &rp->raw)) != ST_OK ||
        (rv = st_frame_decode(rp->raw.data, rp->raw.len, &f)) != ST_OK) {
        return rv;
    }
    lim.now_ms = f->sent_unix_ms;
    lim.max_future_ms = FUTURE_MS;
    lim.max_age_ms = AGE_MS;
    if ((rv = st_frame_validate(f, &env, &lim, detail)) != ST_OK) {
        st_frame_free(f);
        return rv;
    }
    for (size_t i = 0; i < f->n_series; i++) {
        if (kind_index(f->series[i]->kind) < 0) {
            *detail = "a series of a kind this benchmark does not measure";
            st_frame_free(f);
            return ST_EUNSUPPORTED;
        }
    }
    *out = f;
    return ST_OK;
}

/* Counts a decoded frame's samples (a distribution point is one, as on the
 * wire), metric names and time span. */
static int note_frame(struct replay *rp, const st_frame *f)
{
    for (size_t i = 0; i < f->n_series; i++) {
        const Strata__V1__Series *s = f->series[i];
        uint64_t n = st_series_npoints(s);
        int64_t end = s->start_unix_ms + (int64_t)s->interval_ms * (int64_t)n;
        bool mixed = false;
        int rv = names_add(&rp->names, s->name, s->kind, &mixed);
        if (rv != ST_OK) {
            fprintf(stderr, "store_real_bench: metric %s: %s (at most %d metrics)\n", s->name,
                    st_strerror(rv), MAX_METRICS);
            return rv;
        }
        rp->mixed += mixed;
        rp->samples[kind_index(s->kind)] += n;
        rp->samples[NKINDS] += n;
        if (n > 0) {
            rp->first_ms = ST_MIN(rp->first_ms, s->start_unix_ms);
            rp->last_ms = ST_MAX(rp->last_ms, end);
        }
    }
    return ST_OK;
}

/* One transaction for the batch, each frame at its sent time. */
static int apply_batch(struct replay *rp, uint64_t *dups)
{
    st_store_txn *t = NULL;
    int rv = st_store_begin(rp->st, &t);
    *dups = 0;
    for (int i = 0; i < rp->nbatch && rv == ST_OK; i++) {
        bool dup = false;
        rv = st_store_apply(t, rp->batch[i], rp->batch[i]->sent_unix_ms, &dup);
        *dups += dup;
    }
    if (t != NULL) {
        rv = rv == ST_OK ? st_store_commit(t) : (st_store_abort(t), rv);
    }
    return rv;
}

/* Applies and frees the batch; a full map is grown and the batch applied
 * again. */
static int flush_batch(struct replay *rp)
{
    uint64_t dups = 0;
    int rv = ST_OK;
    for (int grows = 0; rp->nbatch > 0; grows++) {
        rv = apply_batch(rp, &dups);
        if (rv != ST_EMAPFULL || grows >= MAX_GROWS || (rv = st_store_grow(rp->st)) != ST_OK) {
            break;
        }
    }
    if (rv == ST_OK) {
        rp->frames += (uint64_t)rp->nbatch - dups;
        rp->duplicates += dups;
    } else {
        fprintf(stderr, "store_real_bench: applying frames up to seq %" PRIu64 ": %s\n",
                rp->nbatch > 0 ? rp->batch[rp->nbatch - 1]->seq : 0, st_strerror(rv));
    }
    for (int i = 0; i < rp->nbatch; i++) {
        st_frame_free(rp->batch[i]);
    }
    rp->nbatch = 0;
    return rv;
}

/* Takes one record: a frame joins the batch, anything else is skipped
 * and counted (the first few named). */
static int take_record(struct replay *rp, uint64_t seq, const uint8_t *data, size_t len)
{
    st_frame *f = NULL;
    const char *detail = NULL;
    int rv = decode_record(rp, seq, data, len, &f, &detail);
    rp->records++;
    rp->first_seq = rp->first_seq ? rp->first_seq : seq;
    rp->last_seq = seq;
    if (rv != ST_OK) {
        if (rp->skipped++ < MAX_SKIP_SHOWN) {
            fprintf(stderr,
                    "store_real_bench: skipping spool record seq %" PRIu64 " (%zu bytes): %s%s%s\n",
                    seq, len, st_strerror(rv), detail ? ": " : "", detail ? detail : "");
        }
        return ST_OK;
    }
    if ((rv = note_frame(rp, f)) != ST_OK) {
        st_frame_free(f);
        return rv;
    }
    rp->batch[rp->nbatch++] = f;
    return rp->nbatch >= rp->batch_max ? flush_batch(rp) : ST_OK;
}

/* Walks every record of the spool in seq order; acknowledges nothing. */
static int replay_spool(struct replay *rp, st_spool *sp)
{
    uint64_t after = 0;
    int rv = ST_OK;
    for (;;) {
        uint64_t seq = 0;
        uint8_t *data = NULL;
        size_t len = 0;
        if ((rv = st_spool_peek(sp, after, &seq, &data, &len)) != ST_OK) {
            break;
        }
        rv = take_record(rp, seq, data, len);
        free(data);
        if (rv != ST_OK) {
            return rv;
        }
        after = seq;
    }
    if (rv != ST_ENOENT) {
        fprintf(stderr, "store_real_bench: reading the spool after seq %" PRIu64 ": %s\n", after,
                st_strerror(rv));
        return rv;
    }
    if (rp->skipped > MAX_SKIP_SHOWN) {
        fprintf(stderr, "store_real_bench: ... and %" PRIu64 " more records skipped\n",
                rp->skipped - MAX_SKIP_SHOWN);
    }
    return flush_batch(rp);
}

/* Runs the builder to completion a little past the last point, so closed
 * hours are compacted as on a live collector and the last minute is open. */
static int build_rollups(struct replay *rp)
{
    int rv = build_to(rp->st, rp->last_ms + AFTER_END_MS, &rp->slices);
    if (rv != ST_OK) {
        fprintf(stderr, "store_real_bench: building rollups: %s\n", st_strerror(rv));
    }
    return rv;
}

/* ---- the spool's copy ---- */

static int copy_file(int sfd, int dfd, const char *name)
{
    char buf[COPY_CHUNK];
    int in = openat(sfd, name, O_RDONLY | O_CLOEXEC);
    int out = in >= 0 ? openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600) : -1;
    int rv = in >= 0 && out >= 0 ? ST_OK : ST_EIO;
    ssize_t n = 0;
    while (rv == ST_OK && (n = read(in, buf, sizeof(buf))) > 0) {
        for (ssize_t off = 0; off < n && rv == ST_OK;) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));
            rv = w > 0 ? ST_OK : ST_EIO;
            off += w > 0 ? w : 0;
        }
    }
    if (n < 0 || rv != ST_OK) {
        fprintf(stderr, "store_real_bench: copying %s: %s\n", name, strerror(errno));
        rv = ST_EIO;
    }
    if (out >= 0 && close(out) != 0 && rv == ST_OK) {
        fprintf(stderr, "store_real_bench: copying %s: %s\n", name, strerror(errno));
        rv = ST_EIO;
    }
    if (in >= 0) {
        close(in);
    }
    return rv;
}

/* Copies the regular files of src (agent.id, cursor, segments) into a new
 * dst: opening a spool may write (its lock, a cut torn tail, the cursor). */
static int copy_spool(const char *src, const char *dst)
{
    DIR *d = opendir(src);
    int dfd = -1;
    int rv = ST_OK;
    struct dirent *e;
    if (d == NULL) {
        fprintf(stderr, "store_real_bench: %s: %s\n", src, strerror(errno));
        return ST_EIO;
    }
    if (mkdir(dst, 0700) != 0 || (dfd = open(dst, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        fprintf(stderr, "store_real_bench: %s: %s\n", dst, strerror(errno));
        rv = ST_EIO;
    }
    while (rv == ST_OK && (errno = 0, e = readdir(d)) != NULL) {
        struct stat sb;
        if (fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0) {
            fprintf(stderr, "store_real_bench: %s/%s: %s\n", src, e->d_name, strerror(errno));
            rv = ST_EIO;
        } else if (S_ISREG(sb.st_mode)) {
            rv = copy_file(dirfd(d), dfd, e->d_name);
        }
    }
    if (rv == ST_OK && errno != 0) {
        fprintf(stderr, "store_real_bench: reading %s: %s\n", src, strerror(errno));
        rv = ST_EIO;
    }
    if (dfd >= 0) {
        close(dfd);
    }
    closedir(d);
    return rv;
}

/* A spool directory holds the agent's id: without it st_spool_open would
 * make a new, empty spool rather than say the path is wrong. */
static int check_spool(const char *dir)
{
    char id[PATH_MAX];
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr,
                "store_real_bench: %s is not a directory: give --frames the directory that "
                "agent_all_bench.sh ST_BENCH_FRAMES=DIR wrote (its spool is DIR/spool)\n",
                dir);
        return ST_ENOENT;
    }
    if (snprintf(id, sizeof(id), "%s/agent.id", dir) >= (int)sizeof(id) || stat(id, &sb) != 0) {
        fprintf(stderr, "store_real_bench: %s holds no agent.id: not an agent's spool\n", dir);
        return ST_ENOENT;
    }
    return ST_OK;
}

/* Opens the copy of the spool and replays it into the store. */
static int replay_copy(struct replay *rp, const char *copy)
{
    struct st_spool_opts so = {.dir = copy, .no_fsync = true};
    struct st_spool_stats ss;
    st_spool *sp = NULL;
    int64_t t0 = st_time_mono_ns();
    int rv = st_spool_open(&so, &sp);
    if (rv != ST_OK) {
        fprintf(stderr, "store_real_bench: opening the spool (copy in %s): %s\n", copy,
                st_strerror(rv));
        return rv;
    }
    st_spool_stats(sp, &ss);
    printf("  spool: %" PRIu64 " frames held (%.1f MiB) up to seq %" PRIu64 "; %" PRIu64
           " lost (dropped by the agent when its spool was full, or found damaged)\n",
           ss.frames, (double)ss.bytes / 1048576.0, ss.next_seq - 1, ss.dropped);
    if (ss.frames == 0) {
        fprintf(stderr, "store_real_bench: the spool holds no frames\n");
        rv = ST_ENOENT;
    }
    rv = rv == ST_OK ? replay_spool(rp, sp) : rv;
    rp->load_s = (double)(st_time_mono_ns() - t0) / 1e9;
    st_spool_close(sp);
    return rv;
}

/* ---- measuring ---- */

static int count_series(void *arg, const st_scan_series *s)
{
    uint64_t *series = arg;
    int k = kind_index(s->rec->kind);
    if (k >= 0) { /* the frames were checked: nothing else was stored */
        series[k]++;
        series[NKINDS]++;
    }
    return 0; /* the series alone, not its blocks */
}

/* Walks every metric's entries under its kind (the store's, which is that
 * of its first series) and counts the series of each kind. */
static int measure(struct replay *rp, struct sizes *z, uint64_t series[NKINDS + 1])
{
    st_scan_cb cb = {.series = count_series, .arg = series};
    int rv = ST_OK;
    sizes_init(z, rp->first_ms, rp->last_ms, &rp->stats);
    memset(series, 0, sizeof(uint64_t) * (NKINDS + 1));
    for (size_t i = 0; i < rp->names.cap && rv == ST_OK; i++) {
        const struct metric *m = &rp->names.slot[i];
        int kind = 0;
        if (m->name == NULL) {
            continue;
        }
        if ((rv = st_store_metric_kind(rp->st, m->name, &kind)) != ST_OK ||
            (z->cur = kind_index(kind)) < 0) {
            fprintf(stderr, "store_real_bench: metric %s: %s\n", m->name,
                    rv != ST_OK ? st_strerror(rv) : "stored with a kind of no measure");
            return rv != ST_OK ? rv : ST_ECORRUPT;
        }
        if ((rv = st_store_walk_entries(rp->st, m->name, size_entry, z)) != ST_OK ||
            (rv = st_store_scan(rp->st, m->name, NULL, 0, 0, INT64_MAX, &cb)) != ST_OK) {
            fprintf(stderr, "store_real_bench: measuring %s: %s\n", m->name, st_strerror(rv));
        }
    }
    return rv;
}

/* ---- reporting ---- */

/* Samples per series per day of its presence: the kind's samples over the
 * time its raw blocks cover, the same time per_day divides bytes by. Over
 * the data's span instead, a series that starts late, comes and goes, or
 * has 60 s points whose minute starts before the recording would dilute
 * the rate and inflate the bytes per sample. */
static double series_rate(const struct replay *rp, const struct sizes *z, int k)
{
    double ms = z->covered[k][ST_RES_RAW][0] + z->covered[k][ST_RES_RAW][1];
    return ms > 0 ? (double)rp->samples[k] / ms * DAY_MS : 0;
}

/* A kind's samples per day with all its series present; [NKINDS]: all. */
static double kind_rate(const struct replay *rp, const struct sizes *z,
                        const uint64_t series[NKINDS + 1], int k)
{
    double sum = 0;
    if (k < NKINDS) {
        return series_rate(rp, z, k) * (double)series[k];
    }
    for (int i = 0; i < NKINDS; i++) {
        sum += series_rate(rp, z, i) * (double)series[i];
    }
    return sum;
}

static void report_data(const struct replay *rp, const struct sizes *z,
                        const uint64_t series[NKINDS + 1])
{
    char from[40];
    char to[40];
    double span_s = (double)(rp->last_ms - rp->first_ms) / 1000.0;
    st_time_format_utc(rp->first_ms, from, sizeof(from));
    st_time_format_utc(rp->last_ms, to, sizeof(to));
    printf("  records: %" PRIu64 " (seq %" PRIu64 "..%" PRIu64 "): %" PRIu64 " frames applied, "
           "%" PRIu64 " duplicates, %" PRIu64 " skipped; %zu metrics, %" PRIu64
           " of them with series of two kinds (counted under the first)\n",
           rp->records, rp->first_seq, rp->last_seq, rp->frames, rp->duplicates, rp->skipped,
           rp->names.n, rp->mixed);
    printf("  data: %s .. %s (%.0f s = %.2f h), first point to last point's end\n", from, to,
           span_s, span_s / 3600.0);
    for (int k = 0; k <= NKINDS; k++) {
        double cov = z->covered[k][ST_RES_RAW][0] + z->covered[k][ST_RES_RAW][1];
        double want = (double)series[k] * (double)(rp->last_ms - rp->first_ms);
        printf("    %-12s %6" PRIu64 " series, %10" PRIu64 " samples; present %5.1f%% of the span "
               "(raw blocks' time); %.1f samples per series-minute present, %.0f per day (%.0f "
               "over the span)\n",
               kind_names[k], series[k], rp->samples[k], want > 0 ? 100.0 * cov / want : 0.0,
               k < NKINDS ? series_rate(rp, z, k) / 1440.0
                          : kind_rate(rp, z, series, k) / (double)series[k] / 1440.0,
               kind_rate(rp, z, series, k), (double)rp->samples[k] / span_s * 86400.0);
    }
    printf("  replayed in %.2f s (%.0f samples/s); builder %.2f s in %d slices; %" PRIu64
           " series, %" PRIu64 " point blocks, %" PRIu64 " rollup entries; used %.1f MiB, live "
           "%.1f MiB, file %.1f MiB\n",
           rp->load_s, (double)rp->samples[NKINDS] / rp->load_s, rp->build_s, rp->slices,
           rp->stats.series, rp->stats.point_blocks, rp->stats.rollup_entries,
           (double)rp->stats.used_bytes / 1048576.0, (double)rp->stats.live_bytes / 1048576.0,
           (double)rp->stats.file_bytes / 1048576.0);
    printf("RESULT real_data frames=%" PRIu64 " skipped=%" PRIu64 " duplicates=%" PRIu64
           " samples=%" PRIu64 " span_s=%.0f start_ms=%" PRId64 " end_ms=%" PRId64
           " metrics=%zu series=%" PRIu64 " series_distribution=%" PRIu64 " series_counter=%" PRIu64
           " series_gauge=%" PRIu64 "\n",
           rp->frames, rp->skipped, rp->duplicates, rp->samples[NKINDS], span_s, rp->first_ms,
           rp->last_ms, rp->names.n, series[NKINDS], series[0], series[1], series[2]);
}

/* One kind's projection: a series holds two days of its samples. */
static void print_steady(const char *kind, const double day[4][2], double f, uint64_t series,
                         double samples_per_day)
{
    struct steady p;
    project(kind, 2.0 * samples_per_day / (double)series, day, f, f, &p);
    printf("RESULT steady label=real kind=%s bytes_per_sample=%.3f raw_part=%.3f "
           "rollup_part=%.3f kib_per_series=%.1f series=%" PRIu64 " samples_per_day=%.0f\n",
           kind, p.total / p.held, p.part[0] / p.held, (p.total - p.part[0]) / p.held,
           p.total / 1024, series, samples_per_day);
}

/* Per kind, and for all series: the kinds' bytes per day weighted by their
 * series, over all their samples (kinds differ in series, samples and the
 * resolutions they store). */
static void report_steady(const struct replay *rp, const struct sizes *z,
                          const uint64_t series[NKINDS + 1], double f)
{
    double all[4][2] = {{0}};
    printf("    steady state with the default retention, per series (B/d compacted|fresh):\n");
    for (int k = 0; k < NKINDS; k++) {
        double day[4][2];
        if (series[k] == 0 || rp->samples[k] == 0) {
            printf("    %-12s no series with samples\n", kind_names[k]);
            continue;
        }
        for (int r = 0; r < 4; r++) {
            per_day(z, k, r, (double)series[k], day[r]);
            for (int c = 0; c < 2; c++) {
                all[r][c] += day[r][c] * (double)series[k] / (double)series[NKINDS];
            }
        }
        print_steady(kind_names[k], day, f, series[k], kind_rate(rp, z, series, k));
    }
    print_steady(kind_names[NKINDS], all, f, series[NKINDS], kind_rate(rp, z, series, NKINDS));
}

/* What a short recording leaves out of the projection. */
static void report_caveats(const struct sizes *z)
{
    static const char *const names[4] = {"raw", "10 s", "1 m", "1 h"};
    static const char *const closes[4] = {"", "minute", "minute", "hour"}; /* for rows to come */
    static const char *const unit[4] = {"hour", "hour", "hour", "day"};    /* to be compacted */
    static const char *const a_unit[4] = {"an hour", "an hour", "an hour", "a day"};
    for (int r = 0; r < 4; r++) {
        if (r != ST_RES_RAW && r != ST_RES_10S && all_payload(z, NKINDS, r) == 0) {
            printf("    NOTE: no %s rows: the data closes no %s, so the projection leaves them "
                   "out\n",
                   names[r], closes[r]);
        } else if (z->payload[NKINDS][r][1] == 0 && all_payload(z, NKINDS, r) > 0) {
            printf("    NOTE: nothing compacted at %s: it counts fresh throughout (compacted per "
                   "closed %s: record past %s boundary to measure that)\n",
                   names[r], unit[r], a_unit[r]);
        }
    }
}

/* Sizes are the pages the databases hold (live bytes), as in query_bench. */
static void report_sizes(const struct replay *rp, const struct sizes *z,
                         const uint64_t series[NKINDS + 1])
{
    double f = lmdb_factor(z, rp->stats.live_bytes);
    double n = (double)rp->samples[NKINDS];
    char wm1m[40] = "none";
    char wm1h[40] = "none";
    if (rp->stats.wm_1m > 0) {
        st_time_format_utc(rp->stats.wm_1m, wm1m, sizeof(wm1m));
    }
    if (rp->stats.wm_1h > 0) {
        st_time_format_utc(rp->stats.wm_1h, wm1h, sizeof(wm1h));
    }
    printf("  entries (rollups complete: 10 s and 1 m up to %s, 1 h up to %s):\n", wm1m, wm1h);
    report_entries(z);
    printf("    LMDB overhead over the entry bytes (live bytes / entry bytes): x%.2f\n", f);
    printf("RESULT store label=real samples=%.0f live_per_sample=%.3f used_per_sample=%.3f "
           "file_per_sample=%.3f\n",
           n, (double)rp->stats.live_bytes / n, (double)rp->stats.used_bytes / n,
           (double)rp->stats.file_bytes / n);
    report_steady(rp, z, series, f);
    report_caveats(z);
}

/* ---- steady state from merged entries ----
 * A recording of an hour or two compacts hours only; at steady state the
 * store holds 6-hour raw entries, days of 1 m rows and 30 days of 1 h
 * rows, where an entry's fixed cost (key, header, zstd's frame and tables)
 * is spread over many more points: on a quiet series that cost is most
 * of its bytes. Each series' recording is encoded here as one entry per
 * resolution and merge unit (cut where the store's units are cut), as a
 * merge writes it: for a recording shorter than a unit, an upper bound on
 * the merged rate, since a longer entry only spreads the fixed cost
 * further. A recording holds too few 1 h rows to measure them: they are
 * charged at HOUR_ROW_FACTOR times a 1 m row's cost (1.3 to 2.0 times on
 * query_bench's 31-day white noise; smoother data compresses its 1 m rows
 * better, so the factor is taken high). LMDB's overhead over the merged
 * entries is measured in a scratch LMDB (measure_lmdb_factor); the fresh
 * and not yet merged entries, small ones that ingest and compaction keep
 * inserting and deleting, are charged at this store's own overhead. */

#define HOUR_ROW_FACTOR 4.0

struct scratch_unit {
    enum st_res res;
    int64_t unit_ms;
    int count; /* entries a series holds */
};

/* Each resolution's merge unit at steady state, and how many a series holds. */
static const struct scratch_unit units[] = {{ST_RES_RAW, 6 * HOUR_MS, 8},
                                            {ST_RES_10S, 6 * HOUR_MS, 8},
                                            {ST_RES_1M, DAY_MS, 30},
                                            {ST_RES_1H, 30 * DAY_MS, 14}};

static int scratch_put(MDB_txn *txn, MDB_dbi dbi, const uint8_t *key, size_t klen, size_t vlen,
                       uint8_t *zeros)
{
    MDB_val k = {klen, (void *)key};
    MDB_val v = {vlen, zeros};
    int rc = mdb_put(txn, dbi, &k, &v, 0);
    if (rc != 0) {
        fprintf(stderr, "store_real_bench: scratch put: %s\n", mdb_strerror(rc));
    }
    return rc == 0 ? ST_OK : ST_EIO;
}

struct merged {
    st_zctx *z;
    st_buf out;
    int kind; /* index of the series being collected; -1: none */
    Strata__V1__Series **blk;
    size_t nblk;
    size_t capblk;
    Strata__V1__RollupBlock **rb;
    size_t nrb;
    size_t caprb;
    enum st_res res;     /* the resolution being scanned */
    struct mseries *ser; /* each series' merged bytes per ms of data, for the LMDB factor */
    size_t nser;
    size_t capser;
    uint32_t cur;        /* the series being collected */
    size_t metric_first; /* ser[metric_first..]: the metric being merged */
    int rv;
};

struct mseries {
    uint32_t id;
    int kind;
    double bytes[4]; /* value bytes of its entries at each resolution */
    double ms[4];    /* and the time they cover */
};

static void merged_clear(struct merged *mg)
{
    for (size_t i = 0; i < mg->nblk; i++) {
        strata__v1__series__free_unpacked(mg->blk[i], NULL);
    }
    for (size_t i = 0; i < mg->nrb; i++) {
        strata__v1__rollup_block__free_unpacked(mg->rb[i], NULL);
    }
    mg->nblk = 0;
    mg->nrb = 0;
}

static int64_t block_end(const Strata__V1__Series *b)
{
    return b->start_unix_ms + (int64_t)b->interval_ms * (int64_t)st_series_npoints(b);
}

/* The current series' value bytes per ms of data at res. */
static int note_series(struct merged *mg, enum st_res res, double bytes, double ms)
{
    struct mseries *m = NULL;
    /* a metric's series come again for each resolution: look among its own */
    for (size_t i = mg->metric_first; i < mg->nser && m == NULL; i++) {
        m = mg->ser[i].id == mg->cur ? &mg->ser[i] : NULL;
    }
    if (m == NULL) {
        if (mg->nser == mg->capser) {
            size_t cap = mg->capser ? 2 * mg->capser : 256;
            struct mseries *n = realloc(mg->ser, cap * sizeof(*n));
            if (n == NULL) {
                return ST_ENOMEM;
            }
            mg->ser = n;
            mg->capser = cap;
        }
        m = &mg->ser[mg->nser++];
        memset(m, 0, sizeof(*m));
        m->id = mg->cur;
        m->kind = mg->kind;
    }
    m->bytes[res] += bytes;
    m->ms[res] += ms;
    return ST_OK;
}

/* The series' raw blocks, one entry per merge unit they fall in. */
static int encode_raw_series(struct merged *mg)
{
    int64_t unit = units[ST_RES_RAW].unit_ms;
    int rv = ST_OK;
    for (size_t first = 0, next; first < mg->nblk && rv == ST_OK; first = next) {
        int64_t at = mg->blk[first]->start_unix_ms / unit;
        double ms;
        for (next = first; next < mg->nblk && mg->blk[next]->start_unix_ms / unit == at; next++) {
        }
        rv = next - first > ST_CODEC_MAX_BLOCKS
                 ? ST_ETOOBIG
                 : st_codec_encode_raw(mg->z, (const Strata__V1__Series *const *)mg->blk + first,
                                       next - first, &mg->out);
        if (rv != ST_OK) {
            fprintf(stderr, "store_real_bench: series %u: raw entry of %zu blocks: %s\n", mg->cur,
                    next - first, st_strerror(rv));
            break;
        }
        ms = (double)(block_end(mg->blk[next - 1]) - mg->blk[first]->start_unix_ms);
        rv = note_series(mg, ST_RES_RAW, (double)mg->out.len, ms);
    }
    return rv;
}

/* The series' rows of res, in time order with empty rows between, one
 * entry per merge unit (1 h rows: a day's, as hour entries hold them; only
 * their count is used). */
static int encode_rollup_series(struct merged *mg, enum st_res res)
{
    static Strata__V1__RollupRow empty = STRATA__V1__ROLLUP_ROW__INIT;
    int64_t bucket = st_res_ms(res);
    int64_t start = INT64_MAX;
    int64_t end = INT64_MIN;
    Strata__V1__RollupRow **rows;
    size_t n;
    int rv = ST_OK;
    if (mg->nrb == 0) {
        return ST_OK;
    }
    for (size_t i = 0; i < mg->nrb; i++) {
        start = ST_MIN(start, mg->rb[i]->start_unix_ms);
        end = ST_MAX(end, mg->rb[i]->start_unix_ms + (int64_t)mg->rb[i]->n_rows * bucket);
    }
    n = (size_t)((end - start) / bucket);
    if ((rows = malloc(n * sizeof(*rows))) == NULL) {
        return ST_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        rows[i] = &empty;
    }
    for (size_t i = 0; i < mg->nrb; i++) {
        const Strata__V1__RollupBlock *b = mg->rb[i];
        for (size_t k = 0; k < b->n_rows; k++) {
            rows[(size_t)((b->start_unix_ms - start) / bucket) + k] = b->rows[k];
        }
    }
    for (size_t at = 0, piece; at < n && rv == ST_OK; at += piece) {
        Strata__V1__RollupBlock blk = STRATA__V1__ROLLUP_BLOCK__INIT;
        int64_t unit = res == ST_RES_1H ? DAY_MS : units[res].unit_ms;
        int64_t t = start + (int64_t)at * bucket;
        /* up to the end of t's unit */
        piece = (size_t)((t / unit * unit + unit - t) / bucket);
        piece = ST_MIN(ST_MIN(piece, n - at), (size_t)ST_CODEC_MAX_ROWS);
        blk.start_unix_ms = t;
        blk.bucket_ms = (uint32_t)bucket;
        blk.rows = rows + at;
        blk.n_rows = piece;
        rv = st_codec_encode_rollup(mg->z, &blk, mg->kind == kind_index(STRATA__V1__KIND__COUNTER),
                                    &mg->out);
        if (rv == ST_OK) {
            double ms = (double)blk.n_rows * (double)bucket;
            rv = note_series(mg, res, (double)mg->out.len, ms);
        }
    }
    free(rows);
    return rv;
}

static int merged_flush(struct merged *mg, enum st_res res)
{
    int rv = ST_OK;
    if (mg->kind >= 0) {
        rv = res == ST_RES_RAW ? encode_raw_series(mg) : encode_rollup_series(mg, res);
    }
    merged_clear(mg);
    return rv;
}

static int on_merged_series(void *arg, const st_scan_series *s, enum st_res res)
{
    struct merged *mg = arg;
    if ((mg->rv = merged_flush(mg, res)) != ST_OK) {
        return -1;
    }
    mg->kind = kind_index(s->rec->kind);
    mg->cur = s->id;
    return mg->kind >= 0 ? 1 : 0;
}

static int on_merged_raw_series(void *arg, const st_scan_series *s)
{
    return on_merged_series(arg, s, ST_RES_RAW);
}

static int on_merged_rollup_series(void *arg, const st_scan_series *s)
{
    return on_merged_series(arg, s, ((struct merged *)arg)->res);
}

/* Blocks are the store's until the callback returns: a copy (packed and
 * unpacked again) goes at the end of *arr; -1 (mg->rv set) when out of
 * memory. */
static int keep_copy(struct merged *mg, void ***arr, size_t *n, size_t *cap,
                     const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf;
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 64;
        void **grown = realloc(*arr, ncap * sizeof(*grown));
        if (grown == NULL) {
            mg->rv = ST_ENOMEM;
            return -1;
        }
        *arr = grown;
        *cap = ncap;
    }
    if ((buf = malloc(len ? len : 1)) == NULL) {
        mg->rv = ST_ENOMEM;
        return -1;
    }
    protobuf_c_message_pack(m, buf);
    (*arr)[*n] = protobuf_c_message_unpack(m->descriptor, NULL, len, buf);
    free(buf);
    if ((*arr)[*n] == NULL) {
        mg->rv = ST_ENOMEM;
        return -1;
    }
    (*n)++;
    return 0;
}

static int on_merged_block(void *arg, const st_scan_series *s, const Strata__V1__Series *b)
{
    struct merged *mg = arg;
    (void)s;
    return keep_copy(mg, (void ***)&mg->blk, &mg->nblk, &mg->capblk, &b->base);
}

static int on_merged_rollup(void *arg, const st_scan_series *s, const Strata__V1__RollupBlock *b)
{
    struct merged *mg = arg;
    (void)s;
    return keep_copy(mg, (void ***)&mg->rb, &mg->nrb, &mg->caprb, &b->base);
}

/* Encodes every series of every metric, an entry per resolution and unit. */
static int merge_all(struct replay *rp, struct merged *mg)
{
    static const enum st_res rollups[] = {ST_RES_10S, ST_RES_1M, ST_RES_1H};
    st_scan_cb raw = {.series = on_merged_raw_series, .block = on_merged_block, .arg = mg};
    st_scan_cb roll = {.series = on_merged_rollup_series, .rollup = on_merged_rollup, .arg = mg};
    int rv = ST_OK;
    for (size_t i = 0; i < rp->names.cap && rv == ST_OK; i++) {
        const char *name = rp->names.slot[i].name;
        if (name == NULL) {
            continue;
        }
        mg->kind = -1;
        mg->metric_first = mg->nser;
        rv = st_store_scan(rp->st, name, NULL, 0, 0, INT64_MAX, &raw);
        rv = rv == ST_OK ? merged_flush(mg, ST_RES_RAW) : rv;
        for (size_t r = 0; r < ST_ARRAY_LEN(rollups) && rv == ST_OK; r++) {
            mg->kind = -1;
            mg->res = rollups[r];
            rv = st_store_scan_rollups(rp->st, name, NULL, 0, rollups[r], 0, INT64_MAX, &roll);
            rv = rv == ST_OK ? merged_flush(mg, rollups[r]) : rv;
        }
        if (rv != ST_OK) {
            rv = mg->rv != ST_OK ? mg->rv : rv;
            fprintf(stderr, "store_real_bench: merging %s: %s\n", name, st_strerror(rv));
        }
    }
    merged_clear(mg);
    return rv;
}

/* LMDB's pages over the entries at steady state, measured: every series'
 * entries of the default retention at their merged sizes (6-hour raw and
 * 10 s entries for 2 days, day entries of 1 m rows for 30, 30-day entries
 * of 1 h rows for 400), written time unit by time unit across the series
 * as the compaction writes them, into a scratch LMDB with the store's keys;
 * its live pages over the entries' bytes (entry_bytes) is the factor. */
#define SCRATCH_MAP (4ULL << 30)

/* Value bytes of a series' entry of unit_ms at res: 1 h rows at
 * HOUR_ROW_FACTOR times its 1 m rows; 0 where the store keeps none. */
static size_t unit_bytes(const struct sizes *z, const struct mseries *m, enum st_res res,
                         int64_t unit_ms)
{
    enum st_res from = res == ST_RES_1H ? ST_RES_1M : res;
    double per_ms = m->ms[from] > 0 ? m->bytes[from] / m->ms[from] : 0;
    if (res == ST_RES_1H) {
        per_ms *= HOUR_ROW_FACTOR / 60.0; /* a 1 h row per 60 minutes */
    }
    if (all_payload(z, m->kind, res) == 0 && res != ST_RES_1H) {
        return 0;
    }
    return (size_t)(per_ms * (double)unit_ms);
}

static int measure_lmdb_factor(const struct merged *mg, const struct sizes *z, const char *dir,
                               double *out)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi[2];
    MDB_stat st;
    double entries = 0;
    double live = 0;
    uint8_t *zeros = NULL;
    size_t maxv = 0;
    int rc = 0;
    int rv = ST_OK;
    for (size_t i = 0; i < mg->nser; i++) {
        for (size_t u = 0; u < ST_ARRAY_LEN(units); u++) {
            maxv = ST_MAX(maxv, unit_bytes(z, &mg->ser[i], units[u].res, units[u].unit_ms));
        }
    }
    if ((zeros = calloc(1, maxv + 1)) == NULL) {
        return ST_ENOMEM;
    }
    if (rm_rf(dir) != ST_OK || st_mkdir_p(dir) != ST_OK) {
        rv = ST_EIO;
        goto out;
    }
    if ((rc = mdb_env_create(&env)) != 0 || (rc = mdb_env_set_maxdbs(env, 2)) != 0 ||
        (rc = mdb_env_set_mapsize(env, SCRATCH_MAP)) != 0 ||
        (rc = mdb_env_open(env, dir, MDB_NOSYNC, 0600)) != 0 ||
        (rc = mdb_txn_begin(env, NULL, 0, &txn)) != 0 ||
        (rc = mdb_dbi_open(txn, "points", MDB_CREATE, &dbi[0])) != 0 ||
        (rc = mdb_dbi_open(txn, "rollups", MDB_CREATE, &dbi[1])) != 0) {
        fprintf(stderr, "store_real_bench: scratch LMDB: %s\n", mdb_strerror(rc));
        rv = ST_EIO;
        goto out;
    }
    /* unit by unit, the oldest first, every series' entries of it */
    for (int n = 0; n < units[ST_RES_1M].count && rv == ST_OK; n++) {
        for (size_t u = 0; u < ST_ARRAY_LEN(units) && rv == ST_OK; u++) {
            for (size_t i = 0; i < mg->nser && rv == ST_OK && n < units[u].count; i++) {
                const struct mseries *m = &mg->ser[i];
                size_t vlen = unit_bytes(z, m, units[u].res, units[u].unit_ms);
                int64_t start = (int64_t)n * units[u].unit_ms;
                uint8_t key[ST_POINT_KEY_LEN] = {0};
                if (vlen == 0) {
                    continue;
                }
                if (units[u].res == ST_RES_RAW) {
                    st_put_be32(key, m->id);
                    st_put_be64(key + 4, (uint64_t)start);
                    rv = scratch_put(txn, dbi[0], key, ST_POINT_KEY_LEN, vlen, zeros);
                    entries += (double)entry_bytes(ST_POINT_KEY_LEN, vlen);
                } else {
                    key[0] = (uint8_t)units[u].res;
                    st_put_be32(key + 1, m->id);
                    st_put_be64(key + 5, (uint64_t)start);
                    rv = scratch_put(txn, dbi[1], key, ST_ROLLUP_KEY_LEN, vlen, zeros);
                    entries += (double)entry_bytes(ST_ROLLUP_KEY_LEN, vlen);
                }
            }
        }
    }
    for (int d = 0; d < 2 && rv == ST_OK; d++) {
        if ((rc = mdb_stat(txn, dbi[d], &st)) != 0) {
            fprintf(stderr, "store_real_bench: scratch stat: %s\n", mdb_strerror(rc));
            rv = ST_EIO;
            break;
        }
        live +=
            (double)(st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages) * st.ms_psize;
    }
    *out = rv == ST_OK && entries > 0 ? live / entries : 0;
out:
    if (txn != NULL) {
        mdb_txn_abort(txn);
    }
    if (env != NULL) {
        mdb_env_close(env);
    }
    free(zeros);
    rm_rf(dir);
    return rv;
}

/* The share of each resolution's retention that waits for its merge unit
 * to close, in entries a unit smaller: on average 3 closed hours of the
 * current 6-hour unit of raw and 10 s entries (of 2 days), 12 hours of the
 * current day of 1 m rows (of 30 days), 15 days of the current 30 days of
 * 1 h rows (of 400). A quiet series' bytes there are mostly the entries'
 * fixed costs, so they are charged at the store's compacted hour entries;
 * a day entry of 1 h rows (24 rows of several 1 m rows' worth each) at
 * what an hour entry of 1 m rows (60 rows) costs. */
static const double unmerged_share[4] = {3.0 / 48, 3.0 / 48, 12.0 / 720, 15.0 / 400};

/* A kind's bytes per series and day at each resolution: in merged entries
 * (charged as stored at their merge unit's size: whole overflow pages of a
 * 6-hour entry, not of the recording's), in the store's compacted hour
 * entries (for 1 h rows, a day entry costing what an hour entry of 1 m
 * rows does), and fresh. */
struct rates {
    double merged[4];
    double hour[4];
    double fresh[4];
};

static void kind_rates(const struct merged *mg, const struct sizes *z,
                       const uint64_t series[NKINDS + 1], int k, struct rates *out)
{
    for (int r = 0; r < 4; r++) {
        double rates[2];
        double sum = 0;
        size_t klen = r == ST_RES_RAW ? ST_POINT_KEY_LEN : ST_ROLLUP_KEY_LEN;
        per_day(z, k, r, (double)series[k], rates);
        for (size_t i = 0; i < mg->nser; i++) {
            size_t v = mg->ser[i].kind == k
                           ? unit_bytes(z, &mg->ser[i], units[r].res, units[r].unit_ms)
                           : 0;
            sum += v > 0 ? (double)entry_bytes(klen, v) / (double)units[r].unit_ms * DAY_MS : 0;
        }
        out->fresh[r] = rates[0];
        out->hour[r] = rates[1];
        out->merged[r] = sum / (double)series[k];
        if (all_payload(z, k, r) == 0 && r != ST_RES_1H) {
            /* not stored: counters' and gauges' 10 s rows are folded from
             * raw points when read, and the scan gave those */
            out->fresh[r] = out->hour[r] = out->merged[r] = 0;
        }
    }
    out->hour[ST_RES_1H] = out->hour[ST_RES_1M] / 24.0; /* one entry a day */
}

/* Bytes a series holds at steady state, per resolution: each retention's
 * newest hour (day of 1 h rows) fresh and its share awaiting a merge in
 * hour entries, both at this store's LMDB overhead fs, the rest merged at
 * the scratch LMDB's f. */
static double steady_parts(const struct rates *rt, double f, double fs, double part[4])
{
    double total = 0;
    for (int r = 0; r < 4; r++) {
        double fw = (double)fresh_window[r] / DAY_MS;
        double un = rt->hour[r] > 0 ? unmerged_share[r] * keep_days[r] : 0;
        part[r] = rt->merged[r] * (keep_days[r] - fw - un) * f +
                  (rt->hour[r] * un + rt->fresh[r] * fw) * fs;
        total += part[r];
    }
    return total;
}

static void report_merged(const struct replay *rp, const struct sizes *z,
                          const uint64_t series[NKINDS + 1], const struct merged *mg, double f,
                          double fs)
{
    struct rates all;
    memset(&all, 0, sizeof(all));
    printf("  steady state from merged entries (each series' recording as one entry per "
           "resolution and merge unit, the share awaiting its merge in hour entries; 1 h rows at "
           "%.1f times a 1 m row; LMDB x%.2f over merged entries, measured, and x%.2f over fresh "
           "and hour entries, this store's), KiB per series:\n",
           HOUR_ROW_FACTOR, f, fs);
    for (int k = 0; k <= NKINDS; k++) {
        struct rates rt;
        double part[4];
        double total;
        double held;
        if (series[k] == 0 || rp->samples[k] == 0) {
            continue;
        }
        if (k < NKINDS) {
            double w = (double)series[k] / (double)series[NKINDS];
            kind_rates(mg, z, series, k, &rt);
            for (int r = 0; r < 4; r++) {
                all.merged[r] += rt.merged[r] * w;
                all.hour[r] += rt.hour[r] * w;
                all.fresh[r] += rt.fresh[r] * w;
            }
        } else {
            rt = all;
        }
        total = steady_parts(&rt, f, fs, part);
        held = 2.0 * kind_rate(rp, z, series, k) / (double)series[k];
        printf("    %-12s raw %7.1f | 10s %7.1f | 1m %7.1f | 1h %7.1f | %7.1f KiB / %.0f samples "
               "= %6.2f B/sample (raw %.2f + rollups %.2f)\n",
               kind_names[k], part[0] / 1024, part[1] / 1024, part[2] / 1024, part[3] / 1024,
               total / 1024, held, total / held, part[0] / held, (total - part[0]) / held);
        printf("RESULT steady_merged label=real kind=%s bytes_per_sample=%.3f raw_part=%.3f "
               "rollup_part=%.3f series=%" PRIu64 "\n",
               kind_names[k], total / held, part[0] / held, (total - part[0]) / held, series[k]);
    }
}

/* ---- main ---- */

/* After the replay: the builder, then the measures. */
static int build_and_report(struct replay *rp, const char *work)
{
    struct sizes z;
    uint64_t series[NKINDS + 1];
    int64_t t0 = st_time_mono_ns();
    int rv = build_rollups(rp);
    rp->build_s = (double)(st_time_mono_ns() - t0) / 1e9;
    if (rv != ST_OK) {
        return rv;
    }
    if ((rv = st_store_stats(rp->st, &rp->stats)) != ST_OK) {
        fprintf(stderr, "store_real_bench: store stats: %s\n", st_strerror(rv));
        return rv;
    }
    if ((rv = measure(rp, &z, series)) != ST_OK) {
        return rv;
    }
    report_data(rp, &z, series);
    report_sizes(rp, &z, series);
    {
        struct merged mg = {.z = rp->z, .kind = -1};
        char scratch[PATH_MAX];
        double f = 0;
        st_buf_init(&mg.out, ST_CODEC_MAX_BODY + 4096);
        snprintf(scratch, sizeof(scratch), "%s/real-scratch", work);
        if ((rv = merge_all(rp, &mg)) == ST_OK &&
            (rv = measure_lmdb_factor(&mg, &z, scratch, &f)) != ST_OK) {
            fprintf(stderr, "store_real_bench: scratch LMDB in %s: %s\n", scratch, st_strerror(rv));
        }
        if (rv == ST_OK) {
            report_merged(rp, &z, series, &mg, f, lmdb_factor(&z, rp->stats.live_bytes));
        }
        st_buf_free(&mg.out);
        free(mg.blk);
        free(mg.rb);
        free(mg.ser);
    }
    printf("[target: <= 2 bytes per sample at steady state]\n");
    return rv;
}

struct opts {
    const char *frames;
    const char *dir;
    int batch;
};

/* Replays DIR/spool (copied to work/real-spool) into a fresh store in
 * work/real-store and reports; removes both at the end. */
static int run(const struct opts *o, const char *work)
{
    char src[PATH_MAX];
    char copy[PATH_MAX];
    char store[PATH_MAX];
    struct st_store_opts so = {
        .map_size = 64ULL << 30, .max_map_size = 1ULL << 40, .no_sync = true};
    struct replay rp = {.first_ms = INT64_MAX, .last_ms = INT64_MIN, .batch_max = o->batch};
    int rv;
    if (snprintf(src, sizeof(src), "%s/spool", o->frames) >= (int)sizeof(src) ||
        snprintf(copy, sizeof(copy), "%s/real-spool", work) >= (int)sizeof(copy) ||
        snprintf(store, sizeof(store), "%s/real-store", work) >= (int)sizeof(store)) {
        fprintf(stderr, "store_real_bench: path too long\n");
        return ST_ETOOBIG;
    }
    if ((rv = check_spool(src)) != ST_OK) {
        return rv;
    }
    so.dir = store;
    if (rm_rf(copy) != ST_OK || rm_rf(store) != ST_OK) { /* the store must start empty */
        fprintf(stderr, "store_real_bench: cannot clear %s and %s\n", copy, store);
        return ST_EIO;
    }
    printf("== store bytes per sample on real agent data: the frames in %s, replayed in seq order "
           "(%d frames per transaction, no_sync), builder run to completion at the end\n",
           src, o->batch);
    st_buf_init(&rp.raw, ST_ENV_MAX_PAYLOAD);
    if ((rp.batch = calloc((size_t)o->batch, sizeof(*rp.batch))) == NULL) {
        fprintf(stderr, "store_real_bench: out of memory\n");
        rv = ST_ENOMEM;
        goto out;
    }
    if ((rv = copy_spool(src, copy)) != ST_OK || (rv = st_zctx_new(&rp.z)) != ST_OK ||
        (rv = st_store_open(&so, &rp.st)) != ST_OK) {
        fprintf(stderr, "store_real_bench: preparing %s: %s\n", work, st_strerror(rv));
        goto out;
    }
    if ((rv = replay_copy(&rp, copy)) != ST_OK) {
        goto out;
    }
    if (rp.frames == 0 || rp.last_ms <= rp.first_ms) {
        fprintf(stderr, "store_real_bench: no frame with points was applied\n");
        rv = ST_ENOENT;
        goto out;
    }
    rv = build_and_report(&rp, work);
out:
    st_store_close(rp.st);
    st_zctx_free(rp.z);
    st_buf_free(&rp.raw);
    free(rp.batch);
    names_free(&rp.names);
    rm_rf(store);
    rm_rf(copy);
    return rv;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: store_real_bench --frames DIR [--dir STOREDIR] [--batch 200]\n"
            "  DIR: what agent_all_bench.sh ST_BENCH_FRAMES=DIR recorded (DIR/spool is read,\n"
            "       never written); STOREDIR: where the spool's copy and the store go\n"
            "       (default: a temporary directory); batch: frames per transaction\n");
}

static int parse_args(int argc, char **argv, struct opts *o)
{
    static const struct option lo[] = {
        {"frames", 1, 0, 'f'}, {"dir", 1, 0, 'd'}, {"batch", 1, 0, 'b'}, {0, 0, 0, 0}};
    int c;
    int rv = ST_OK;
    while (rv == ST_OK && (c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'f':
            o->frames = optarg;
            break;
        case 'd':
            o->dir = optarg;
            break;
        case 'b':
            rv = int_arg(optarg, 1, MAX_BATCH, &o->batch);
            break;
        default:
            rv = ST_EINVAL;
        }
    }
    return rv == ST_OK && optind == argc && o->frames != NULL ? ST_OK : ST_EINVAL;
}

int main(int argc, char **argv)
{
    struct opts o = {.frames = NULL, .dir = NULL, .batch = 200};
    char tmp[] = "/tmp/store_real_bench.XXXXXX";
    const char *work;
    int rv;
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress as it comes, when piped */
    if (parse_args(argc, argv, &o) != ST_OK) {
        usage();
        return 2;
    }
    if (o.dir != NULL && st_mkdir_p(o.dir) != ST_OK) {
        fprintf(stderr, "store_real_bench: cannot create %s\n", o.dir);
        return 1;
    }
    if ((work = o.dir != NULL ? o.dir : mkdtemp(tmp)) == NULL) {
        perror("store_real_bench: mkdtemp");
        return 1;
    }
    rv = run(&o, work);
    if (o.dir == NULL) {
        rmdir(tmp);
    }
    return rv == ST_OK ? 0 : 1;
}
