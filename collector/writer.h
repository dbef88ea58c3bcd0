/* The single writer thread: takes validated frames from ingest, commits
 * them in batches (one LMDB transaction per batch, fsync on commit: group
 * commit), and only then reports each frame's outcome so ingest can
 * acknowledge it. Map full: abort, grow with no transaction open, retry.
 * Disk full: every frame of the batch is answered "retry later" and nothing
 * is lost, because the agent keeps it spooled. */
#ifndef ST_WRITER_H
#define ST_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "frame.h"
#include "metrics.h"
#include "store.h"

enum st_write_result {
    ST_WRITE_APPLIED = 0,
    ST_WRITE_DUPLICATE,
    ST_WRITE_RETRY,  /* disk full or store trouble: send again later */
    ST_WRITE_FAILED, /* this frame cannot be stored (reason logged) */
};

typedef struct st_write_req st_write_req;
struct st_write_req {
    st_frame *frame; /* borrowed until done is called */
    enum st_write_result result;
    void (*done)(st_write_req *r); /* called on the writer thread after commit */
    st_write_req *next;
};

struct st_writer_opts {
    size_t max_batch; /* frames per transaction; 0: 2048 */
    size_t max_queue; /* queued frames before submit says ST_EAGAIN; 0: 8192 */
    /* Called after commit for each applied frame that carries action
     * results. Optional. */
    void (*on_results)(void *arg, const st_frame *f);
    void *results_arg;
};

typedef struct st_writer st_writer;

int st_writer_start(st_store *st, const struct st_writer_opts *opts, st_metrics *m,
                    st_writer **out);
/* Queues a frame; ST_EAGAIN when the queue is full, ST_ECLOSED when stopping. */
int st_writer_submit(st_writer *w, st_write_req *r);
/* True when (agent, seq) is known to be applied already, from committed
 * state kept in memory: lets ingest answer DUPLICATE before decompressing.
 * False means "not known", and the store decides. */
bool st_writer_seen(st_writer *w, const uint8_t agent_id[16], uint64_t seq);
/* Commits everything queued, reports it, and joins the thread. */
void st_writer_stop(st_writer *w);
/* Frames queued and not yet committed. */
size_t st_writer_backlog(st_writer *w);

#endif
