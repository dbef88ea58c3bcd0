/* The durable memory of the actions already run: <data_dir>/actions.done,
 * one JSON object a line, appended and fsync'd: {"id", "type",
 * "finding_id", "started_unix_ms"} before an action runs, then the same id
 * with "status", "exit_status", "duration_ms", "error", "output" and
 * "finished_unix_ms". In memory the last `max` ids are kept, each with its
 * result (none while it runs); the file is rewritten with just those when
 * it grows past three lines per id, and once at open, which also drops a
 * line torn by a crash. Used by the runner only: one writer (the runner
 * thread); lookups may come from other threads (an internal mutex). */
#ifndef ST_ACTIONS_DONE_H
#define ST_ACTIONS_DONE_H

#include <stdbool.h>
#include <stddef.h>

#include "proto/strata.pb-c.h"

#define ST_DONE_MAX_LINE 65536       /* longer lines are skipped as corrupt */
#define ST_DONE_MAX_FILE (64u << 20) /* the rest of a larger file is ignored */

typedef struct st_done st_done;

/* Called at open for each action that started but has no result (the
 * agent stopped while it ran): r is the ACTION_FAILED result recorded for
 * it now (borrowed for the call). */
typedef void (*st_done_interrupted_fn)(void *arg, const Strata__V1__ActionResult *r);

/* Loads path (a missing file is empty), rewrites it and keeps it for
 * appends. Malformed lines are skipped (logged). ST_EIO, ST_ENOMEM. */
int st_done_open(const char *path, size_t max, st_done_interrupted_fn fn, void *arg, st_done **out);
/* Whether id is known; *res (may be NULL) receives a copy of its result
 * (free with st_action_result_free), NULL while the action runs. */
bool st_done_lookup(st_done *d, const char *id, Strata__V1__ActionResult **res);
/* Records, durably before returning, that the action starts. */
int st_done_started(st_done *d, const Strata__V1__Action *a);
/* Records its result (copied), durably. */
int st_done_finished(st_done *d, const Strata__V1__ActionResult *r);
void st_done_close(st_done *d);

#endif
