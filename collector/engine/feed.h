/* The engine's feed: the points of every commit, from the store's tap, for
 * its kept windows (st_query_slide_feed), so that moving a window reads
 * nothing back from the store. */
#ifndef ST_FEED_H
#define ST_FEED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "query.h"
#include "store.h"

/* Commits' points wait here between engine runs; past this the feed
 * drops them, keeps none until the engine has taken them, and says it lost
 * commits (the windows are then read again). At 1,000 hosts a run's worth
 * is a few MiB (a minute's, 66 MiB); at 6,000 agents of 200 series each
 * (1.2 M samples/s) the engine's runs take longer than 10 s and fill it. */
#define ST_FEED_MAX_BYTES (128u << 20)

typedef struct st_feed st_feed;

/* Sets the store's tap; ST_EEXIST when another reader holds it. */
int st_feed_new(st_store *st, st_feed **out);
/* Bounds what may wait (tests; ST_FEED_MAX_BYTES by default). */
void st_feed_set_max_bytes(st_feed *fd, size_t n);
/* Removes the tap and drops what waits. */
void st_feed_free(st_feed *fd);
/* Keeps the blocks of metric from now on; *idx names it in st_feed_drain.
 * Call before the first read the blocks complete: a commit the tap hands
 * over after this returns is kept. */
int st_feed_subscribe(st_feed *fd, const char *metric, int *idx);
/* Drops one subscription of metric idx; with none left, its blocks are
 * no longer kept. */
void st_feed_unsubscribe(st_feed *fd, int idx);

/* Hands every kept block to fn, commit by commit in commit order, then
 * done with the commit's txn. *lost tells whether commits were lost since
 * the last drain (out of memory, or past ST_FEED_MAX_BYTES). Engine
 * thread. */
typedef int (*st_feed_block_fn)(void *arg, int metric, uint64_t txn, const st_fed_block *b);
typedef void (*st_feed_commit_fn)(void *arg, uint64_t txn);
int st_feed_drain(st_feed *fd, bool *lost, st_feed_block_fn fn, st_feed_commit_fn done, void *arg);

struct st_feed_stats {
    uint64_t blocks;   /* kept */
    uint64_t lost;     /* times commits were lost */
    size_t bytes_peak; /* the most that waited at once */
};
void st_feed_stats(st_feed *fd, struct st_feed_stats *out);

#endif
