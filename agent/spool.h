/* The agent's durable spool. Every frame (an encoded envelope) is written
 * and fsync'd before it is sent, and removed only after the collector
 * acknowledged it (OK or DUPLICATE). It survives kill -9 and reboots, keeps
 * the agent id and seq, is bounded in bytes, drops the oldest frames first
 * when full and counts every dropped frame.
 *
 * On disk, under dir:
 *   agent.id            the agent's UUID (written once, atomically)
 *   cursor              {acked_through, next_seq floor, dropped} (atomic rename)
 *   NNNNNNNNNNNNNNNNNNNN.seg  append-only segments named by their first seq;
 *                       records [len u32][crc32c u32][seq u64][bytes]
 * A torn record at a segment's tail (crash mid-append) is cut off on open.
 * Thread-safe: the scheduler appends while the sender peeks and acks. */
#ifndef ST_SPOOL_H
#define ST_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ST_SPOOL_MAX_RECORD (4u << 20)  /* an envelope is at most 4 MiB */

typedef struct st_spool st_spool;

struct st_spool_opts {
    const char *dir;
    uint64_t max_bytes;      /* 0: 64 MiB */
    uint64_t segment_bytes;  /* 0: max_bytes / 16, at least 64 KiB */
    bool no_fsync;           /* benchmarks only */
};

struct st_spool_stats {
    uint64_t frames;         /* unacknowledged frames held */
    uint64_t bytes;          /* bytes on disk */
    uint64_t dropped;        /* frames dropped because the spool was full, ever */
    uint64_t first_seq;      /* lowest unacknowledged seq (0 when empty) */
    uint64_t next_seq;       /* seq the next append will use */
};

/* Opens (creating dir and the agent id if needed) and recovers. */
int st_spool_open(const struct st_spool_opts *opts, st_spool **out);
void st_spool_close(st_spool *sp);
void st_spool_agent_id(const st_spool *sp, uint8_t out[16]);

/* The seq the next append must carry. Seqs start at 1 and rise by one. */
uint64_t st_spool_next_seq(st_spool *sp);
/* Appends the envelope for seq (== st_spool_next_seq) durably. When the
 * spool would exceed max_bytes, the oldest segments are dropped first and
 * counted. ST_EINVAL for a wrong seq, ST_ETOOBIG, ST_ENOSPC, ST_EIO. */
int st_spool_append(st_spool *sp, uint64_t seq, const uint8_t *data, size_t len);
/* Copies the first unacknowledged record with seq > after into a malloc'd
 * buffer. ST_ENOENT when there is none. */
int st_spool_peek(st_spool *sp, uint64_t after, uint64_t *seq, uint8_t **data, size_t *len);
/* Marks seq acknowledged. Acks may come out of order; segments whose
 * records are all acknowledged are deleted. Unknown seqs are ignored. */
int st_spool_ack(st_spool *sp, uint64_t seq);
void st_spool_stats(st_spool *sp, struct st_spool_stats *out);

/* Test hook: the spool behaves as if the process died right after its
 * n-th file-system step (write, fsync, rename, unlink) from now: that
 * step completes, later ones do not happen, and the call returns ST_EIO.
 * 0 disables. */
void st_spool_fail_after(st_spool *sp, int n);

#endif
