#!/usr/bin/env bash
# Agent actions end to end: a real collector, a real strata-agent, a real
# PostgreSQL 15 and a real redis-server; the actions ride on the collector's
# acks and their results come back in frames (GET /v1/actions).
#
#  1. The loop: sequential scans on orders make the engine open an ADD_INDEX
#     finding for host db-1; the collector queues postgres.create_index for
#     that agent; the agent (which allows it) runs the CREATE INDEX
#     CONCURRENTLY; the result is ok and the index exists and is valid.
#  2. Every action type and outcome: the collector only ever queues
#     postgres.create_index itself, so the other actions are put in its
#     queue the way it keeps them (pending records "action/<id>" in its
#     store, loaded at start) with mdb_load while it is stopped; from there
#     the real collector sends them and records the results. Checked on the
#     servers: redis CONFIG SET of an allowed parameter and value (and
#     refusals of others), an exec script (finding JSON on stdin, output,
#     exit status, a script not configured), CREATE INDEX statements that
#     the validator refuses, one that fails and leaves an INVALID index
#     (named in the error) and one stopped by statement_timeout behind a
#     writer that holds its lock, and an action type nobody allowed.
#  3. An action id runs once: sent again after an agent restart, the
#     recorded result is reported again and the script does not run again.
#  4. Nothing runs that is not configured: with `actions:` removed, a
#     create_index is refused and no index appears.
#
#   ST_BIN=build ST_SRC=. bash tests/integration/actions_test.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for tool in redis-server redis-cli mdb_load; do
    command -v "$tool" >/dev/null || fail "$tool is required (deploy/bootstrap.sh installs it)"
done
LOAD="$ST_LIB_DIR/scen_load.py"
PYTHON=$(python3 -c 'import sys; print(sys.executable)')
read -r PG_PORT REDIS_PORT < <(free_ports 2)

# ---- PostgreSQL ------------------------------------------------------------------------------

pg_init "$PG_PORT"
pg_up "shared_preload_libraries = 'pg_stat_statements'" "max_parallel_workers_per_gather = 0"
sql postgres "CREATE ROLE strata LOGIN" "GRANT pg_monitor TO strata" "CREATE DATABASE app"
sql app "CREATE EXTENSION pg_stat_statements" \
    "CREATE TABLE orders (id serial PRIMARY KEY, customer_id int, created_at timestamptz, total numeric)" \
    "INSERT INTO orders (customer_id, created_at, total)
         SELECT g % 1000, now() - g * interval '1 minute', (g % 9973) * 1.25
         FROM generate_series(1, 300000) g" \
    "CREATE TABLE items (n int)" "INSERT INTO items SELECT generate_series(1, 1000)" \
    "CREATE TABLE blocked (n int)" "INSERT INTO blocked SELECT generate_series(1, 1000)" \
    "VACUUM ANALYZE orders"
log "PostgreSQL up on :$PG_PORT (orders 300000 rows, items, blocked)"

# index_count TABLE COLUMN_OR_EXPR_LIKE VALID: indexes on TABLE whose definition matches.
index_count() {
    sql app "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
             WHERE i.indrelid = '$1'::regclass AND pg_get_indexdef(i.indexrelid) LIKE '%$2%'
               AND i.indisvalid = $3"
}

# ---- redis -----------------------------------------------------------------------------------

REDIS_PASSWORD=pw-$RANDOM
RDIR=$T/redis
mkdir -p "$RDIR"
printf 'bind 127.0.0.1\nport %s\ndir %s\nsave ""\nappendonly no\nrequirepass %s\n' \
    "$REDIS_PORT" "$RDIR" "$REDIS_PASSWORD" >"$RDIR/redis.conf"
spawn redis-server "$T/redis-server.out" redis-server "$RDIR/redis.conf"
rcli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" --no-auth-warning -a "$REDIS_PASSWORD" "$@"; }
redis_up() { [[ "$(rcli PING 2>/dev/null)" == PONG ]]; }
wait_for 30 "redis-server on 127.0.0.1:$REDIS_PORT" redis_up
rconfig() { rcli CONFIG GET "$1" | sed -n 2p; }
assert_eq noeviction "$(rconfig maxmemory-policy)" "redis maxmemory-policy at start"

# ---- scripts ---------------------------------------------------------------------------------

SCRIPTS=$T/scripts
mkdir -p "$SCRIPTS"
cat >"$SCRIPTS/flush-cdn" <<EOF
#!/bin/sh
cat > "$T/flush-cdn.stdin"
echo run >> "$T/flush-cdn.runs"
echo "flushed \$*"
EOF
printf '#!/bin/sh\necho "cannot reach the CDN" >&2\nexit 4\n' >"$SCRIPTS/broken"
chmod 755 "$SCRIPTS/flush-cdn" "$SCRIPTS/broken"

# ---- collector and agent ---------------------------------------------------------------------

COLLECTOR_EXTRA_YAML="engine:
  interval: 1s
  pause: 1s
  window: 30s
  baseline_window: 2m
  min_samples: 20
  max_iterations: 50
  validation_window: 30s
rules:
  database.seq_scan_index: 0.005"
collector_config
collector_start

ACTIONS_YAML="actions:
  postgres.create_index:
    dsn: \"host=127.0.0.1 port=$PG_PORT dbname=app user=postgres\"
    lock_timeout: 10s
    statement_timeout: 3s
  redis.config_set:
    address: 127.0.0.1:$REDIS_PORT
    password: $REDIS_PASSWORD
    allow:
      maxmemory-policy: [allkeys-lru, allkeys-lfu]
      maxmemory: any
  exec:
    scripts:
      flush-cdn: {path: $SCRIPTS/flush-cdn, args: [--all, \"two words\"], timeout: 10s}
      broken: {path: $SCRIPTS/broken}"

# write_agent ACTIONS_YAML: agent 1 (db-1) with the postgres sampler.
write_agent() {
    agent_config 1 db-1 db
    cat >"${AGENT_DIR[1]}/agent.yaml" <<EOF
collector: $INGEST_URL
data_dir: ${AGENT_DIR[1]}/data
interval: 1s
flush_interval: 1s
host: db-1
role: db
log_level: info
sender:
  timeout: 2s
  backoff_min: 100ms
  backoff_max: 1s
samplers:
  host:
  postgres:
    dsn: "host=127.0.0.1 port=$PG_PORT dbname=app user=strata"
$1
EOF
}

# A typo in the actions block is an error naming file, line and key.
write_agent "${ACTIONS_YAML/lock_timeout/lock_timout}"
out=$("$AGENT_BIN" --config "${AGENT_DIR[1]}/agent.yaml" --check-config 2>&1) && fail "a typo passed --check-config"
line=$(grep -n lock_timout "${AGENT_DIR[1]}/agent.yaml" | cut -d: -f1)
assert_contains "$out" "agent.yaml:$line: key 'lock_timout': unknown key" "--check-config on a typo"
write_agent "$ACTIONS_YAML"
"$AGENT_BIN" --config "${AGENT_DIR[1]}/agent.yaml" --check-config >/dev/null ||
    fail "--check-config refuses the actions block"
agent_start 1
wait_for 30 "the agent to reach the collector" all_agents_seen 2
AGENT_UUID=$(agent_field db-1 id)
[[ "$AGENT_UUID" =~ ^[0-9a-f-]{36}$ ]] || fail "no agent id for db-1 in /v1/agents: '$AGENT_UUID'"
DONE_FILE=${AGENT_DIR[1]}/data/actions.done

# action_json ID: the collector's record of action ID ("" while unknown).
action_json() { http /v1/actions | jq -c --arg id "$1" '[.actions[] | select(.id == $id)][0] // empty'; }
action_done() { [[ "$(action_json "$1" | jq -r '.state // empty')" == done ]]; }
result() { action_json "$1" | jq -r ".result.$2"; }

# ---- 1. the loop: finding -> postgres.create_index -> index ----------------------------------

spawn pg-load "$T/pg-load.out" "$PYTHON" "$LOAD" pg 10 -X -q -v ON_ERROR_STOP=1 \
    -h 127.0.0.1 -p "$PG_PORT" -U postgres -d app
PG_LOAD_PID=$ST_PID
assert_eq 0 "$(index_count orders customer_id true)" "indexes on orders.customer_id before the loop"
finding_id() {
    http /v1/findings | jq -r '[.findings[] | select(.rule == "database.seq_scan_index"
        and .labels.table == "orders")][0].id // empty'
}
has_finding() { [[ -n "$(finding_id)" ]]; }
wait_for 180 "a database.seq_scan_index finding on orders" has_finding
FID=$(finding_id)
log "finding $FID: $(http "/v1/findings/$FID" | jq -r .summary)"
loop_action() { http "/v1/actions?finding=$FID" | jq -r '.actions[0].id // empty'; }
has_loop_action() { [[ -n "$(loop_action)" ]]; }
wait_for 30 "the collector to queue postgres.create_index for db-1" has_loop_action
AID=$(loop_action)
A=$(action_json "$AID")
assert_eq postgres.create_index "$(jq -r .type <<<"$A")" "the queued action's type"
assert_eq "CREATE INDEX CONCURRENTLY ON orders (customer_id);" "$(jq -r .params.sql <<<"$A")" \
    "the queued action's sql"
wait_for 60 "the agent to run $AID and report its result" action_done "$AID"
A=$(action_json "$AID")
assert_eq ok "$(jq -r .result.status <<<"$A")" "create_index result ($A)"
assert_eq "CREATE INDEX" "$(jq -r .result.output <<<"$A")" "create_index output"
assert_eq 1 "$(index_count orders customer_id true)" "valid indexes on orders.customer_id after the action"
assert_eq 0 "$(index_count orders customer_id false)" "INVALID indexes on orders.customer_id"
grep -q "action $AID (postgres.create_index, finding $FID): ok" "${AGENT_DIR[1]}/agent.log" ||
    fail "the agent did not log the action's result"
grep -q "\"id\":\"$AID\"" "$DONE_FILE" || fail "$AID is not in $DONE_FILE"
kill -TERM "$PG_LOAD_PID"
reap "$PG_LOAD_PID" 10
log "loop: $AID created the index in $(jq -r .result.duration_ms <<<"$A") ms; finding now $(http "/v1/findings/$FID" | jq -r .status)"

# ---- 2. every type and outcome, through the collector's own queue ----------------------------

# seed ID TYPE PARAMS_JSON [FINDING_JSON]: a pending action for db-1 as the
# collector keeps it (collector/actions.c), added to its store while it is
# stopped; the collector loads it at start and sends it on the agent's acks.
# mdb_load -T reads "key line, value line"; a backslash goes in as \5c (hex),
# because its "\\" escape mangles the bytes that follow in lmdb-utils 0.9.
SEED=$T/seed.txt
: >"$SEED"
seed() {
    local fj=${4:-}
    [[ -n "$fj" ]] || fj='{}'
    jq -nc --arg id "$1" --arg agent "$AGENT_UUID" --arg type "$2" --argjson params "$3" \
        --arg fj "$fj" --argjson now "$(date +%s%3N)" \
        '{id: $id, agent_id: $agent, host: "db-1", type: $type, finding_id: "seeded",
          params: $params, state: "pending", finding_json: $fj, created_unix_ms: $now}' |
        sed 's/\\/\\5c/g' | { printf 'action/%s\n' "$1"; cat; } >>"$SEED"
}
load_seeds() {
    collector_stop
    mdb_load -T -s engine -f "$SEED" "$COLLECTOR_DATA" || fail "mdb_load could not add the actions"
    : >"$SEED"
    collector_start
}

# A writer that keeps its lock on blocked: CREATE INDEX CONCURRENTLY waits
# for it until statement_timeout (3s) cancels the build.
spawn pg-writer "$T/pg-writer.out" psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d app \
    -c "BEGIN; UPDATE blocked SET n = n WHERE n = 1; SELECT pg_sleep(600); COMMIT;"
WRITER_PID=$ST_PID
writer_waits() { [[ $(sql app "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'BEGIN; UPDATE blocked%' AND state = 'active'") == 1 ]]; }
wait_for 20 "the writer to hold its lock on blocked" writer_waits

FINDING='{"id":"seeded","rule":"cdn","summary":"hit ratio \"low\"","labels":{"host":"db-1"}}'
seed redis-ok redis.config_set '{"parameter":"maxmemory-policy","value":"allkeys-lru"}'
seed redis-any redis.config_set '{"parameter":"maxmemory","value":"64mb"}'
seed redis-value redis.config_set '{"parameter":"maxmemory-policy","value":"noeviction"}'
seed redis-param redis.config_set '{"parameter":"appendonly","value":"yes"}'
seed exec-ok exec '{"script":"flush-cdn"}' "$FINDING"
seed exec-fail exec '{"script":"broken"}'
seed exec-unknown exec '{"script":"rm-rf"}'
seed exec-path exec "{\"script\":\"$SCRIPTS/flush-cdn\"}"
seed pg-chain postgres.create_index '{"sql":"CREATE INDEX CONCURRENTLY ON items (n); DROP TABLE items","table":"items"}'
seed pg-comment postgres.create_index '{"sql":"CREATE INDEX CONCURRENTLY ON items (n) /* and more */"}'
seed pg-invalid postgres.create_index '{"sql":"CREATE INDEX CONCURRENTLY items_bad ON items ((1 / (n - 500)))"}'
seed pg-timeout postgres.create_index '{"sql":"CREATE INDEX CONCURRENTLY blocked_n ON blocked (n);"}'
seed shell-cmd shell '{"command":"rm -rf /"}'
SEEDED="redis-ok redis-any redis-value redis-param exec-ok exec-fail exec-unknown exec-path
    pg-chain pg-comment pg-invalid pg-timeout shell-cmd"
load_seeds
all_done() {
    local id
    for id in $SEEDED; do action_done "$id" || return 1; done
}
wait_for 90 "results of the $(wc -w <<<"$SEEDED") seeded actions" all_done
for id in $SEEDED; do log "  $id: $(action_json "$id" | jq -c '.result | {status, exit_status, error, output}')"; done

# expect ID STATUS ERROR_PART: the result's status and a part of its error.
expect() {
    assert_eq "$2" "$(result "$1" status)" "$1 status"
    assert_contains "$(result "$1" error)" "$3" "$1 error"
}
expect redis-ok ok ""
assert_eq "maxmemory-policy: noeviction -> allkeys-lru" "$(result redis-ok output)" "redis-ok output"
assert_eq allkeys-lru "$(rconfig maxmemory-policy)" "redis maxmemory-policy after redis-ok"
expect redis-any ok ""
assert_eq 67108864 "$(rconfig maxmemory)" "redis maxmemory after redis-any"
expect redis-value refused "value 'noeviction' for maxmemory-policy is not allowed"
expect redis-param refused "parameter 'appendonly' is not allowed by this agent's configuration"
assert_eq no "$(rconfig appendonly)" "redis appendonly after the refusal"

expect exec-ok ok ""
assert_eq "flushed --all two words" "$(result exec-ok output)" "exec-ok output (no shell: one argument with a space)"
assert_eq 0 "$(result exec-ok exit_status)" "exec-ok exit status"
assert_eq "$FINDING" "$(cat "$T/flush-cdn.stdin")" "the finding JSON on the script's stdin"
expect exec-fail failed "script broken exited with status 4"
assert_eq 4 "$(result exec-fail exit_status)" "exec-fail exit status"
assert_eq "cannot reach the CDN" "$(result exec-fail output)" "exec-fail output (stderr)"
expect exec-unknown refused "script 'rm-rf' is not configured on this agent"
expect exec-path refused "is not configured on this agent"
assert_eq 1 "$(wc -l <"$T/flush-cdn.runs")" "flush-cdn runs"

expect pg-chain refused "not a single CREATE INDEX CONCURRENTLY statement: only one statement"
expect pg-comment refused "comments are not accepted"
assert_eq 1000 "$(sql app "SELECT count(*) FROM items")" "items rows after the refused chain"
expect pg-invalid failed "division by zero"
assert_contains "$(result pg-invalid error)" "left INVALID index items_bad" "pg-invalid error"
assert_eq 1 "$(index_count items items_bad false)" "INVALID index items_bad on items"
expect pg-timeout timeout "canceling statement due to statement timeout"
assert_contains "$(result pg-timeout error)" "left INVALID index blocked_n" "pg-timeout error"
dur=$(result pg-timeout duration_ms)
((dur >= 3000 && dur < 15000)) || fail "pg-timeout took $dur ms with statement_timeout 3s"
expect shell-cmd refused "action shell is not allowed by this agent's configuration"
kill -TERM "$WRITER_PID"
reap "$WRITER_PID" 10

# ---- 3. one run per id, across an agent restart ----------------------------------------------

agent_stop 1
assert_eq 0 "$ST_RC" "agent exit status after SIGTERM"
assert_contains "$(cat "$DONE_FILE")" '"id":"exec-ok"' "actions.done"
FIRST=$(action_json exec-ok | jq -r .finished_unix_ms)
# The collector asks again (as it would had the result been lost).
seed exec-ok exec '{"script":"flush-cdn"}' "$FINDING"
load_seeds
agent_start 1
reported_again() { [[ "$(action_json exec-ok | jq -r '.state + " " + (.finished_unix_ms | tostring)')" == "done "* &&
    "$(action_json exec-ok | jq -r .finished_unix_ms)" != "$FIRST" ]]; }
wait_for 60 "the agent to report exec-ok again" reported_again
expect exec-ok ok ""
assert_eq "flushed --all two words" "$(result exec-ok output)" "exec-ok output reported again"
assert_eq 1 "$(wc -l <"$T/flush-cdn.runs")" "flush-cdn runs after the resend (once, not twice)"
grep -q "action exec-ok ran before: reporting its result again" "${AGENT_DIR[1]}/agent.log" ||
    fail "the agent did not say it reported exec-ok again"

# ---- 4. nothing runs that is not configured ----------------------------------------------------

agent_stop 1
write_agent ""
seed pg-unallowed postgres.create_index '{"sql":"CREATE INDEX CONCURRENTLY items_n ON items (n);"}'
load_seeds
agent_start 1
wait_for 60 "the result of pg-unallowed" action_done pg-unallowed
expect pg-unallowed refused "action postgres.create_index is not allowed by this agent's configuration"
assert_eq 0 "$(index_count items items_n true)" "index items_n after the refusal"
assert_eq 0 "$(index_count items items_n false)" "invalid index items_n after the refusal"
agent_stop 1
assert_eq 0 "$ST_RC" "agent exit status after SIGTERM"

pass
