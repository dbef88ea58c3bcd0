/* The agent's opt-in actions: the runner (module st_runner; st_actions is
 * the collector's side). The collector asks for an action on an ack; the
 * sender thread hands it to st_runner_enqueue, which only queues a copy;
 * one runner thread executes the actions one at a time; the scheduler
 * moves finished results into the next frame (st_runner_take). Nothing runs that agent.yaml's
 * `actions:` does not configure: an action of another type is reported ACTION_REFUSED without being
 * run.
 *
 * An action id runs at most once: ids are written to <data_dir>/actions.done
 * (fsync'd) before the action starts and again with its result, and the
 * last ST_RUNNER_DONE_MAX are remembered. An id the collector sends again
 * while it is queued or running is ignored; one that already ran (also
 * before an agent restart) is not run again: its recorded result is
 * reported again. An action that was running when the agent stopped is
 * reported ACTION_FAILED after the restart, never run a second time. */
#ifndef ST_RUNNER_H
#define ST_RUNNER_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "proto/strata.pb-c.h"

#define ST_RUNNER_QUEUE_MAX 64    /* actions waiting to run */
#define ST_RUNNER_DONE_MAX 1000   /* action ids remembered in actions.done */
#define ST_RUNNER_RESULTS_MAX 256 /* results waiting for a frame; the oldest go first */
#define ST_RUNNER_PER_FRAME 32    /* results moved into one frame */

typedef struct st_runner st_runner;

/* Parses agent.yaml's `actions:` (cfg may be NULL: nothing allowed): a
 * mapping of postgres.create_index, redis.config_set and exec to their
 * options. Unknown keys and bad values are ST_ECONFIG with err naming the
 * file, line and key. data_dir is copied; nothing is started or written. */
int st_runner_new(const st_cfg_doc *doc, const st_cfg_node *cfg, const char *data_dir,
                  st_runner **out, st_cfg_error *err);

/* Opens <data_dir>/actions.done (creating data_dir) and starts the runner
 * thread, when any action is configured; otherwise does nothing. Actions
 * recorded as started but never finished are reported ACTION_FAILED.
 * ST_EIO and the like when the file cannot be read or written. */
int st_runner_start(st_runner *r);

/* The sender's st_action_fn (arg is the st_runner): queues a copy of the
 * action and returns at once. Never blocks on an action; a full queue is
 * reported ACTION_FAILED (not run, so a resend may run it). */
void st_runner_enqueue(void *arg, const Strata__V1__Action *a);

/* Moves up to ST_RUNNER_PER_FRAME waiting results into f->action_results
 * (which must be empty) and returns how many. They belong to the runner
 * until st_runner_settle. r may be NULL (no results). */
size_t st_runner_take(st_runner *r, Strata__V1__Frame *f);
/* After the frame was spooled (kept true) the taken results are freed;
 * otherwise they go back to wait for the next frame. Empties
 * f->action_results either way. r may be NULL. */
void st_runner_settle(st_runner *r, Strata__V1__Frame *f, bool kept);

/* Stops the runner (a running action is told to stop: scripts are killed,
 * PostgreSQL statements cancelled), drops the queue and frees everything.
 * NULL-safe. */
void st_runner_free(st_runner *r);

#endif
