/* Agent actions, collector side: a finding whose optimization an agent can
 * apply (ADD_INDEX -> postgres.create_index) becomes an Action queued for
 * the agent that reported the entity; it rides on that agent's next acks
 * until the agent reports a result in a frame. Every action and result is
 * kept in the store ("action/<id>") and shown by the API; an ACTION_OK
 * result marks the finding applied, which starts its validation. The agent
 * runs nothing its own configuration does not allow. */
#ifndef ST_ACTIONS_H
#define ST_ACTIONS_H

#include <jansson.h>
#include <stdint.h>

#include "frame.h"
#include "proto/strata.pb-c.h"
#include "store.h"

#define ST_ACTIONS_MAX_PENDING 1024 /* queued actions across all agents */
#define ST_ACTIONS_PER_ACK 4
#define ST_ACTIONS_RESEND_MS 60000 /* no result yet: send again */

struct st_engine;
typedef struct st_actions st_actions;

int st_actions_new(st_store *st, st_actions **out);
/* The engine that hears about results; set once before traffic. */
void st_actions_set_engine(st_actions *a, struct st_engine *en);
void st_actions_free(st_actions *a);

/* Engine dispatcher (st_dispatch_fn): queues the action that applies this
 * finding's optimization, when there is one and its agent is known.
 * ST_ENOENT when no action applies (the finding stays with the other
 * dispatchers). */
int st_actions_dispatch(void *actions, const json_t *finding);

/* Ingest: adds the actions waiting for this agent to its ack (they stay
 * pending until a result arrives). st_actions_ack_release frees what
 * st_actions_attach added. */
void st_actions_attach(void *actions, const uint8_t agent_id[16], Strata__V1__Ack *ack);
void st_actions_ack_release(Strata__V1__Ack *ack);

/* Writer, after a frame is committed: records its action results. */
void st_actions_results(void *actions, const st_frame *f);

/* {actions: [...]} newest first, optionally for one finding. */
json_t *st_actions_list(st_actions *a, const char *finding_id);

#endif
