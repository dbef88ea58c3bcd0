/* The agent's durable spool. Every frame (an encoded envelope) is written
 * and fsync'd before it is sent, and removed only after the collector
 * acknowledged it (OK or DUPLICATE). It survives kill -9 and reboots, keeps
 * the agent id and seq, is bounded in bytes, drops the oldest frames first
 * when full and counts every dropped frame.
 *
 * On disk, under dir:
 *   agent.id            the agent's UUID as 36-char text (written once, atomically)
 *   cursor              {acked_through, next_seq floor, dropped} as text lines
 *                       (temporary file, fsync, rename); written before any
 *                       segment is deleted, when dropping, and on close
 *   NNNNNNNNNNNNNNNNNNNN.seg  append-only segments named by their first seq;
 *                       records [len u32][crc32c u32][seq u64][bytes], little-
 *                       endian, the CRC over seq and bytes
 * A torn record at the last segment's tail (crash mid-append) is cut off on
 * open. Other damage found on open also ends its segment there (the file is
 * cut); the frames lost with it count as dropped and their seqs are never
 * reused. A record that fails its CRC when peeked is dropped and counted too:
 * nothing corrupt is ever returned.
 * An acknowledged frame whose segment still exists may come back after a
 * crash (the collector deduplicates); an unacknowledged one never goes
 * missing unless counted as dropped, and a seq is never used twice.
 * Thread-safe: the scheduler appends while the sender peeks and acks. */
#ifndef ST_SPOOL_H
#define ST_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ST_SPOOL_MAX_RECORD (4u << 20) /* an envelope is at most 4 MiB */

typedef struct st_spool st_spool;

struct st_spool_opts {
    const char *dir;
    uint64_t max_bytes;     /* 0: 64 MiB */
    uint64_t segment_bytes; /* 0: max_bytes / 16, at least 64 KiB; never above
                               max_bytes. A larger record gets a segment alone */
    bool no_fsync;          /* benchmarks only */
};

struct st_spool_stats {
    uint64_t frames;    /* unacknowledged frames held */
    uint64_t bytes;     /* bytes on disk */
    uint64_t dropped;   /* frames dropped because the spool was full (or
                           found damaged on disk), ever */
    uint64_t first_seq; /* lowest unacknowledged seq (0 when empty) */
    uint64_t next_seq;  /* seq the next append will use */
};

/* Opens (creating dir and the agent id if needed) and recovers. ST_ECORRUPT
 * when agent.id or the cursor cannot be read back (guessing could reuse
 * seqs), ST_EIO, ST_ENOMEM. */
int st_spool_open(const struct st_spool_opts *opts, st_spool **out);
/* Locks the directory dirfd names for this open file, without waiting:
 * the lock goes when the descriptor closes, also when the process dies
 * however it dies. ST_EEXIST (logged under mod, naming dir) when another
 * strata-agent holds it; on a file system without locks, a warning and
 * ST_OK. */
int st_spool_lock_dir(int dirfd, const char *dir, const char *mod);
/* Saves how far contiguous acks got (so a restart resends nothing) and frees.
 * NULL-safe. */
void st_spool_close(st_spool *sp);
void st_spool_agent_id(const st_spool *sp, uint8_t out[16]);

/* The seq the next append must carry. Seqs start at 1 and rise by one. */
uint64_t st_spool_next_seq(st_spool *sp);
/* Appends the envelope for seq (== st_spool_next_seq) durably. When the
 * spool would exceed max_bytes, the oldest segments are dropped first and
 * counted. ST_EINVAL for a wrong seq, ST_ETOOBIG, ST_ENOSPC, ST_EIO. */
int st_spool_append(st_spool *sp, uint64_t seq, const uint8_t *data, size_t len);
/* Copies the first unacknowledged record with seq > after into a malloc'd
 * buffer (the caller frees it). ST_ENOENT when there is none, ST_EIO. */
int st_spool_peek(st_spool *sp, uint64_t after, uint64_t *seq, uint8_t **data, size_t *len);
/* Marks seq acknowledged. Acks may come out of order; segments whose
 * records are all acknowledged are deleted (the last one only once a new
 * one takes over). Unknown seqs are ignored. ST_EIO when a deletion failed:
 * the ack still counts and the deletion is retried on the next ack. */
int st_spool_ack(st_spool *sp, uint64_t seq);
void st_spool_stats(st_spool *sp, struct st_spool_stats *out);

/* Test hook: the spool behaves as if the process died right after its
 * n-th file-system step (create, write, fsync, rename, unlink, truncate)
 * from now: that step completes, later ones do not happen, and the call
 * returns ST_EIO, as does every later call; close then writes nothing.
 * A record write counts as two steps, its halves, so a crash can tear it.
 * 0 disables. */
void st_spool_fail_after(st_spool *sp, int n);

#endif
