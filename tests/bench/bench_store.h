/* What a store's entries cost on disk, for the benchmarks that measure bytes
 * per sample (query_bench on synthetic fleets, store_real_bench on recorded
 * agent frames): entry bytes with LMDB's node and overflow pages, the time
 * each resolution's entries cover, and the steady state of the default
 * retention. Header-only, like bench_util.h: the benchmarks are one .c file
 * each. */
#ifndef ST_BENCH_STORE_H
#define ST_BENCH_STORE_H

#include "err.h"
#include "store.h"

#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MIN_MS 60000LL
#define HOUR_MS 3600000LL
#define DAY_MS 86400000LL
#define LMDB_NODE 10       /* leaf node header (8) + its slot in the page index (2) */
#define LMDB_MAX_NODE 2040 /* larger values go to overflow pages (4 KiB pages) */
#define PAGE 4096
#define NKINDS 3         /* distribution, counter, gauge; [NKINDS] is all of them */
#define RM_RF_MAX_FDS 64 /* nftw's open directories at once */

/* Entries and their bytes per kind ([NKINDS]: all), resolution and form
 * (0 fresh, 1 compacted), as stored (st_store_walk_entries). */
struct sizes {
    uint64_t entries[NKINDS + 1][4][2];
    uint64_t payload[NKINDS + 1][4][2]; /* key + value + LMDB node, overflow pages whole */
    double covered[NKINDS + 1][4][2];   /* ms the entries cover within the data */
    int cur;                            /* the kind of the metric being walked */
    int64_t start;                      /* where the data starts */
    int64_t end[4];                     /* where each resolution's data ends */
};

static const char *const kind_names[NKINDS + 1] = {"distribution", "counter", "gauge", "all"};

/* The kind index of sizes for a Strata__V1__Kind; -1 for one it does not know. */
static inline int kind_index(int kind)
{
    switch (kind) {
    case STRATA__V1__KIND__DISTRIBUTION:
        return 0;
    case STRATA__V1__KIND__COUNTER:
        return 1;
    case STRATA__V1__KIND__GAUGE:
        return 2;
    default:
        return -1;
    }
}

/* Clears z for data in [start, raw_end): the rollups' data ends at their
 * watermarks (a 10 s row is built with its minute). */
static inline void sizes_init(struct sizes *z, int64_t start, int64_t raw_end,
                              const struct st_store_stats *stats)
{
    memset(z, 0, sizeof(*z));
    z->start = start;
    z->end[ST_RES_RAW] = raw_end;
    z->end[ST_RES_10S] = stats->wm_1m;
    z->end[ST_RES_1M] = stats->wm_1m;
    z->end[ST_RES_1H] = stats->wm_1h;
}

static inline uint64_t entry_bytes(size_t key, size_t val)
{
    if (key + val + 8 > LMDB_MAX_NODE) {
        return LMDB_NODE + key + 8 + ((val + 16 + PAGE - 1) / PAGE) * PAGE;
    }
    return LMDB_NODE + key + val;
}

/* An st_entry_fn: counts one entry under z->cur and all. */
static inline int size_entry(void *arg, enum st_res res, bool compacted, int64_t start_ms,
                             int64_t end_ms, size_t klen, size_t vlen)
{
    struct sizes *z = arg;
    uint64_t b = entry_bytes(klen, vlen);
    /* an entry of a unit the data only partly fills covers that part */
    int64_t lo = start_ms > z->start ? start_ms : z->start;
    int64_t hi = end_ms < z->end[res] ? end_ms : z->end[res];
    double span = hi > lo ? (double)(hi - lo) : 0;
    z->covered[z->cur][res][compacted] += span;
    z->covered[NKINDS][res][compacted] += span;
    z->entries[z->cur][res][compacted]++;
    z->payload[z->cur][res][compacted] += b;
    z->entries[NKINDS][res][compacted]++;
    z->payload[NKINDS][res][compacted] += b;
    return ST_OK;
}

static inline uint64_t all_payload(const struct sizes *z, int m, int r)
{
    return z->payload[m][r][0] + z->payload[m][r][1];
}

/* The LMDB overhead: live bytes (pages the databases hold) over the entry
 * bytes. One factor for raw and rollups alike: only a second store without
 * rollups could tell them apart. */
static inline double lmdb_factor(const struct sizes *z, uint64_t live_bytes)
{
    double raw = (double)all_payload(z, NKINDS, ST_RES_RAW);
    double roll = (double)(all_payload(z, NKINDS, ST_RES_10S) + all_payload(z, NKINDS, ST_RES_1M) +
                           all_payload(z, NKINDS, ST_RES_1H));
    return (double)live_bytes / (raw + roll);
}

static inline void report_entries(const struct sizes *z)
{
    static const char *const names[4] = {"raw", "10s", "1m", "1h"};
    for (int r = 0; r < 4; r++) {
        for (int c = 1; c >= 0; c--) {
            printf("    %-3s %-9s %9" PRIu64 " entries, %8.2f MiB; B/entry (key + value + node):",
                   names[r], c ? "compacted" : "fresh", z->entries[NKINDS][r][c],
                   (double)z->payload[NKINDS][r][c] / 1048576.0);
            for (int m = 0; m <= NKINDS; m++) {
                printf(" %s %.1f", kind_names[m],
                       z->entries[m][r][c]
                           ? (double)z->payload[m][r][c] / (double)z->entries[m][r][c]
                           : 0.0);
            }
            printf("\n");
        }
    }
}

/* How long data of a resolution may stay fresh before it is compacted:
 * an hour and ten minutes (the store keeps the last closed hour fresh
 * while the engine reads its newest minutes), a day of 1 h rows. */
static const int64_t fresh_window[4] = {HOUR_MS + 10 * 60000LL, HOUR_MS + 10 * 60000LL,
                                        HOUR_MS + 10 * 60000LL, DAY_MS};

/* Bytes per series per day of resolution r for kind m, compacted ([1])
 * and fresh ([0]), over the time the entries of each form cover. */
static inline void per_day(const struct sizes *z, int m, int r, double series, double out[2])
{
    for (int c = 0; c < 2; c++) {
        double covered = z->covered[m][r][c] / series;
        out[c] = covered > 0 ? (double)z->payload[m][r][c] / series / covered * DAY_MS : 0;
    }
}

/* Days each resolution keeps at the default retention (raw, 10 s, 1 m, 1 h). */
static const double keep_days[4] = {2, 2, 30, 400};

/* Runs the builder, retention and compaction to completion at now, growing
 * the map when it fills; *slices counts the st_store_maintain calls. */
static inline int build_to(st_store *st, int64_t now, int *slices)
{
    bool more = true;
    int rv = ST_OK;
    while (more && rv == ST_OK) {
        rv = st_store_maintain(st, now, 1000, &more);
        (*slices)++;
        if (rv == ST_EMAPFULL && (rv = st_store_grow(st)) == ST_OK) {
            more = true;
        }
    }
    return rv;
}

/* A projected steady state, per series. */
struct steady {
    double part[4]; /* bytes each resolution holds, LMDB overhead included */
    double total;
    double held; /* raw samples held */
};

/* The steady state of the default retention per series: each resolution
 * kept its days (raw 2, 10s 2, 1m 30, 1h 400), of which the newest hour (a
 * day of 1 h rows) is still fresh and the rest compacted at the measured
 * bytes per day (older hours merge further: 6 h of 10 s rows, a day of 1 m
 * rows; the store must hold such merged entries for this to count them);
 * a resolution with nothing compacted yet in this store counts fresh
 * throughout. Raw parts are scaled by f_raw, rollups by f_roll (the LMDB
 * overhead the caller measured on its store); divided by the raw samples a
 * series holds (held). Prints the human line; the caller prints its RESULT
 * line from out. */
static inline void project(const char *kind, double held, const double day[4][2], double f_raw,
                           double f_roll, struct steady *out)
{
    double *part = out->part;
    double total = 0;
    for (int r = 0; r < 4; r++) {
        double fw = (double)fresh_window[r] / DAY_MS;
        double per = day[r][1] > 0 ? day[r][1] * (keep_days[r] - fw) + day[r][0] * fw
                                   : day[r][0] * keep_days[r];
        part[r] = per * (r == ST_RES_RAW ? f_raw : f_roll);
        total += part[r];
    }
    out->total = total;
    out->held = held;
    printf("    %-12s raw %6.0f|%6.0f B/d = %6.0f KiB | 10s %6.0f|%6.0f B/d = %5.0f KiB | 1m "
           "%6.0f|%6.0f B/d = %5.0f KiB | 1h %5.0f|%5.0f B/d = %5.0f KiB | %6.0f KiB / %.0f "
           "samples = %6.2f B/sample (raw %.2f + rollups %.2f)\n",
           kind, day[0][1], day[0][0], part[0] / 1024, day[1][1], day[1][0], part[1] / 1024,
           day[2][1], day[2][0], part[2] / 1024, day[3][1], day[3][0], part[3] / 1024, total / 1024,
           held, total / held, part[0] / held, (total - part[0]) / held);
}

static inline int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    return (type == FTW_DP ? rmdir(path) : unlink(path)) == 0 || errno == ENOENT ? 0 : -1;
}

/* Removes dir and everything under it, without a shell; a dir that is not
 * there is already removed. */
static inline int rm_rf(const char *dir)
{
    if (nftw(dir, rm_entry, RM_RF_MAX_FDS, FTW_DEPTH | FTW_PHYS) == 0 || errno == ENOENT) {
        return ST_OK;
    }
    return ST_EIO;
}

#endif
