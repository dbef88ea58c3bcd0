/* Turns the collector's JSON answers into the text the strata CLI shows:
 * tables for lists, one block per query series, an indented outline for one
 * finding. Kept apart from main so tests can check the output. */
#ifndef ST_CLI_RENDER_H
#define ST_CLI_RENDER_H

#include "buf.h"

#include <jansson.h>
#include <stdint.h>

/* Each renderer appends to out and returns ST_OK, ST_EPARSE when the
 * document does not have the shape DESIGN.md gives (a missing list, a list
 * element that is not an object), or ST_ENOMEM/ST_ETOOBIG from out. Missing
 * or null fields show as "-". All text from the server is sanitized. */

/* GET /v1/status: status, "iteration N of M", then a TARGET GOAL VALUE MET
 * table (a target's "unit", when given, formats goal and value). */
int st_render_status(const json_t *doc, st_buf *out);

/* GET /v1/agents: HOST ROLE VERSION LAST SEEN SEQ FRAMES LOST ID, with
 * LOST = seq - frames; SPOOL, DROPPED and SAMPLES columns are added when any
 * agent reports spool_frames, spool_dropped or samples. */
int st_render_agents(const json_t *doc, int64_t now_ms, st_buf *out);

/* GET /v1/query: per series a line of its labels, then TIME VALUE rows;
 * values in the series' "unit" (or the response's) when there is one. */
int st_render_query(const json_t *doc, st_buf *out);
/* A top answer: RANK, the grouping labels, VALUE in the metric's unit. */
int st_render_top(const json_t *doc, st_buf *out);

/* GET /v1/findings: ID PRIO SEVERITY LAYER RULE STATUS ENTITY SUMMARY. */
int st_render_findings(const json_t *doc, st_buf *out);

/* GET /v1/findings/ID: every field as "key: value", nested evidence,
 * optimization, history and actions indented below; *_unix_ms fields as
 * UTC time and age; multi-line strings (an implementation's SQL) as
 * indented blocks. */
int st_render_finding(const json_t *doc, int64_t now_ms, st_buf *out);

/* The document as indented JSON and a newline (--json). */
int st_render_json(const json_t *doc, st_buf *out);

#endif
