#!/usr/bin/env bash
# The loop closed, all real processes: PostgreSQL with a table missing an
# index and a client querying it in a loop; an agent that allows
# postgres.create_index; the collector finds ADD_INDEX, sends the action,
# the agent creates the index, the statement's mean time drops, the finding
# becomes resolved with before/after figures and /v1/status reaches
# PERFORMANCE_OPTIMIZED. Then the same with the action not allowed on a
# second database host: nothing is executed, the finding stays dispatched,
# reached automation through a signed webhook only.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LOAD="$ST_LIB_DIR/scen_load.py"
PYTHON=$(python3 -c 'import sys; print(sys.executable)')
read -r PG_PORT HOOK_PORT < <(free_ports 2)
SECRET=hook-$RANDOM$RANDOM
TOKEN=tok-$RANDOM$RANDOM

# ---- PostgreSQL with two databases: one whose host allows the fix, one not ----

pg_init "$PG_PORT"
pg_up "shared_preload_libraries = 'pg_stat_statements'" "max_parallel_workers_per_gather = 0"
for db in app shop; do
    sql postgres "CREATE DATABASE $db"
    sql "$db" "CREATE EXTENSION pg_stat_statements" \
        "CREATE TABLE orders (id serial PRIMARY KEY, customer_id int, total numeric)" \
        "INSERT INTO orders (customer_id, total) SELECT g % 1000, g FROM generate_series(1, 300000) g" \
        "VACUUM ANALYZE orders"
done
index_count() {
    sql "$1" "SELECT count(*) FROM pg_indexes WHERE tablename = 'orders' AND indexdef LIKE '%customer_id%'"
}

# ---- a webhook receiver (real HTTP server verifying signatures) ----

spawn hook "$T/hook.out" "$PYTHON" "$ST_LIB_DIR/webhook_receiver.py" --port "$HOOK_PORT" \
    --secret "$SECRET" --state "$T/hook.json"
hook_up() { curl -fs -o /dev/null "http://127.0.0.1:$HOOK_PORT/_stats"; }
wait_for 20 "the webhook receiver" hook_up

# ---- collector: a fast engine, tokens, the webhook; targets this machine can meet ----

COLLECTOR_EXTRA_YAML="engine:
  interval: 1s
  pause: 1s
  window: 20s
  baseline_window: 1m
  min_samples: 10
  validation_window: 15s
rules:
  database.seq_scan_index: 0.005
targets:
  throughput: off
  cpu: off
  connections: off
api:
  tokens:
    - {name: sre, sha256: \"$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)\", scopes: [read, write]}
webhooks:
  - name: automation
    url: http://127.0.0.1:$HOOK_PORT/strata
    secret: $SECRET
    filter: {optimizations: [ADD_INDEX]}"
collector_config
export CURL_HOME=$T/curlhome # lib.sh's http() reads with the token
mkdir -p "$CURL_HOME"
printf 'header = "Authorization: Bearer %s"\n' "$TOKEN" >"$CURL_HOME/.curlrc"
collector_start

# write_agent I HOST DB ALLOW: a database host's agent; ALLOW=1 lets it index.
write_agent() {
    local actions=""
    agent_config "$1" "$2" db
    [[ $4 == 1 ]] && actions="actions:
  postgres.create_index:
    dsn: \"host=127.0.0.1 port=$PG_PORT dbname=$3 user=postgres\"
    lock_timeout: 10s
    statement_timeout: 60s"
    cat >"${AGENT_DIR[$1]}/agent.yaml" <<EOF
collector: $INGEST_URL
data_dir: ${AGENT_DIR[$1]}/data
interval: 1s
flush_interval: 1s
host: $2
role: db
sender: {timeout: 2s, backoff_min: 100ms, backoff_max: 1s}
samplers:
  postgres:
    dsn: "host=127.0.0.1 port=$PG_PORT dbname=$3 user=postgres"
$actions
EOF
}
write_agent 1 db-fix app 1
write_agent 2 db-nofix shop 0
agent_start 1
agent_start 2
wait_for 30 "both agents at the collector" all_agents_seen 2

spawn load-app "$T/load-app.out" "$PYTHON" "$LOAD" pg 10 -X -q -h 127.0.0.1 -p "$PG_PORT" \
    -U postgres -d app
spawn load-shop "$T/load-shop.out" "$PYTHON" "$LOAD" pg 10 -X -q -h 127.0.0.1 -p "$PG_PORT" \
    -U postgres -d shop
LOAD_SHOP_PID=$ST_PID

finding_for() {
    http "/v1/findings" | jq -c --arg h "$1" \
        '[.findings[] | select(.rule == "database.seq_scan_index" and .labels.host == $h)][0] // empty'
}
has_finding() { [[ -n "$(finding_for "$1")" ]]; }

# ---- 1. the fix is allowed: detected -> dispatched -> applied -> resolved ----

wait_for 60 "an ADD_INDEX finding for db-fix" has_finding db-fix
F=$(finding_for db-fix)
ID=$(jq -r .id <<<"$F")
assert_eq "CREATE INDEX CONCURRENTLY ON orders (customer_id);" \
    "$(jq -r .optimization.implementation.sql <<<"$F")" "the fix"
index_made() { [[ "$(index_count app)" == 1 ]]; }
wait_for 60 "the agent to create the index" index_made
status_of() { http "/v1/findings/$1" | jq -r .status; }
resolved() { [[ "$(status_of "$ID")" == resolved ]]; }
wait_for 90 "the finding to be resolved after validation" resolved
F=$(http "/v1/findings/$ID")
before=$(jq -r .validation.before <<<"$F")
after=$(jq -r .validation.after <<<"$F")
log "validation: before $before s, after $after s ($(jq -r .validation.reason <<<"$F"))"
assert_true "mean time dropped: before $before, after $after" \
    python3 -c "import sys; b, a = float(sys.argv[1]), sys.argv[2]; sys.exit(0 if a == 'null' or float(a) < 0.8 * b else 1)" \
    "$before" "$after"
story=$(jq -r '[.history[] | .to // .event] | join(" ")' <<<"$F")
log "history: $story"
for step in open dispatched applied validating resolved; do
    assert_contains "$story" "$step" "the finding's history"
done
assert_eq ok "$(jq -r '.actions[0].result.status' <<<"$F")" "the agent action's result"
assert_eq postgres.create_index "$(jq -r '.actions[0].type' <<<"$F")" "the agent action's type"
"$ST_BIN/collector/strata" --server "http://$HTTP_ADDR" --token "$TOKEN" finding "$ID" \
    >"$T/finding.txt" || fail "strata finding $ID"
assert_contains "$(cat "$T/finding.txt")" "resolved" "strata finding shows the verdict"

# ---- 2. not allowed: nothing runs, the webhook carries it, it stays dispatched ----

wait_for 60 "an ADD_INDEX finding for db-nofix" has_finding db-nofix
NID=$(finding_for db-nofix | jq -r .id)
refused() {
    http "/v1/findings/$NID" | jq -e '.actions[0].result.status == "refused"' >/dev/null
}
wait_for 60 "the agent to refuse the action" refused
hooked() {
    http "/v1/deliveries" | jq -e --arg id "$NID" \
        '[.deliveries[] | select(.finding_id == $id and .status == "delivered")] | length > 0' \
        >/dev/null
}
wait_for 60 "the webhook to deliver the finding" hooked
stats=$(curl -fs "http://127.0.0.1:$HOOK_PORT/_stats")
assert_eq 0 "$(jq -r .bad_signatures <<<"$stats")" "webhook signatures that did not verify"
assert_ge "$(jq -r '.processed | length' <<<"$stats")" 2 "webhook deliveries processed (both findings)"
assert_eq 0 "$(index_count shop)" "indexes created on the host that does not allow it"
assert_eq dispatched "$(status_of "$NID")" "the finding without an allowed fix"
delivered=$(http "/v1/deliveries?status=delivered" | jq '.deliveries | length')
assert_ge "$delivered" 2 "deliveries recorded as delivered"

# ---- 3. with the load gone the database is healthy on db-fix; stop db-nofix's load and
# dismiss its finding (an SRE decision), then the loop has nothing left ----

kill -TERM "$LOAD_SHOP_PID"
reap "$LOAD_SHOP_PID" 20
out=$(curl -s -w '\n%{http_code}' -X POST \
    "http://$HTTP_ADDR/v1/findings/$NID/dismiss") || fail "dismiss $NID: collector unreachable"
[[ "${out##*$'\n'}" == 200 ]] || fail "dismiss $NID: $out"
optimized() { [[ "$(http /v1/status | jq -r .status)" == PERFORMANCE_OPTIMIZED ]]; }
wait_for 120 "the loop to reach PERFORMANCE_OPTIMIZED" optimized
pass "flagship: detected, dispatched, applied by the agent, measured, resolved; refused elsewhere"
