#!/usr/bin/env bash
# The postgres sampler against a real PostgreSQL 15 (Debian's package) with
# pg_stat_statements: exact statement counts and labels, table and database
# counters, the missing-extension message (once) and reconnection after a
# server restart, end to end through a real collector.
#
#   ST_BIN=build ST_SRC=. bash tests/integration/postgres_test.sh

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

read -r PG_PORT < <(free_ports 1)
pg_init "$PG_PORT"

# pg_start PRELOAD: starts the server with shared_preload_libraries=PRELOAD
# (empty: nothing preloaded) and waits until it accepts connections.
pg_start() {
    pg_up "shared_preload_libraries = '$1'" "pg_stat_statements.track = all"
    log "PostgreSQL up on 127.0.0.1:$PG_PORT (shared_preload_libraries='$1')"
}

pg_stop() {
    "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PGDIR/data" -m "${1:-fast}" -w -t 60 stop >/dev/null
    log "PostgreSQL stopped (-m ${1:-fast})"
}

# agent_once NAME DSN [EXTRA_YAML]: strata-agent --once with only the postgres
# sampler; the frame lands in $T/NAME.json, the log in $T/NAME.out.
agent_once() {
    local name=$1 dsn=$2 extra=${3:-}
    cat >"$T/$name.yaml" <<EOF
data_dir: $T/$name-data
log_level: info
samplers:
  postgres:
    dsn: "$dsn"
    interval: 1s
$extra
EOF
    timeout 60 "$AGENT_BIN" --config "$T/$name.yaml" --once >"$T/$name.json" 2>"$T/$name.out" ||
        fail "strata-agent --once ($name) exited with status $?: $(tail -n 20 "$T/$name.out")"
    jq -e . "$T/$name.json" >/dev/null || fail "--once ($name) printed no JSON"
}

# value FILE NAME [JQ_CONDITION]: the sum of the points of the series NAME
# whose labels satisfy the condition (on .labels); empty when there is none.
value() {
    jq -r --arg n "$2" "[.series[] | select(.name == \$n) | select(.labels | ${3:-true})
        | .points[].value] | if length == 0 then \"\" else add | tostring end" "$1"
}

# count FILE NAME [JQ_CONDITION]: how many series NAME match.
count() {
    jq -r --arg n "$2" "[.series[] | select(.name == \$n) | select(.labels | ${3:-true})] | length" "$1"
}

# ---- a server with pg_stat_statements preloaded ------------------------------------------------

pg_start pg_stat_statements

# The agent's role has only what monitoring needs.
sql postgres "CREATE ROLE strata LOGIN" "GRANT pg_monitor TO strata" "CREATE DATABASE app" \
    "CREATE DATABASE plain" "CREATE DATABASE plain2"
sql app "CREATE EXTENSION pg_stat_statements" \
    "CREATE TABLE orders (id serial, customer_id int, total numeric)" \
    "INSERT INTO orders (customer_id, total) SELECT g % 1000, g * 1.5 FROM generate_series(1, 20000) g"
# 25 calls with different literals; pg_stat_statements folds them into one
# statement. customer_id = i % 1000 gives each customer 20 rows.
for i in $(seq 1 25); do echo "SELECT * FROM orders WHERE customer_id = $i;"; done |
    psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d app >/dev/null
# A backend reports its table counters when it exits, shortly after psql.
seq_scans() { [[ $(sql app "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'orders'") -ge 25 ]]; }
wait_for 30 "the server to count the sequential scans of orders" seq_scans
QUERYID=$(sql app "SELECT queryid FROM pg_stat_statements WHERE query = 'SELECT * FROM orders WHERE customer_id = \$1'")
[[ "$QUERYID" =~ ^-?[0-9]+$ ]] || fail "pg_stat_statements has no single row for the orders query: '$QUERYID'"

agent_once app "host=127.0.0.1 port=$PG_PORT dbname=app user=strata"
J=$T/app.json
ORDERS='(.query | contains("FROM orders WHERE customer_id = $1"))'
assert_eq 1 "$(count "$J" db.statement.calls "$ORDERS")" "db.statement.calls series of the orders query"
assert_eq 25 "$(value "$J" db.statement.calls "$ORDERS")" "db.statement.calls of the orders query"
assert_eq 500 "$(value "$J" db.statement.rows "$ORDERS")" "db.statement.rows of the orders query (25 calls x 20 rows)"
labels=$(jq -c '.series[] | select(.name == "db.statement.calls") | .labels
    | select(.query | contains("FROM orders WHERE customer_id = $1"))' "$J")
assert_eq '{"database":"app","query":"SELECT * FROM orders WHERE customer_id = $1","queryid":"'"$QUERYID"'","table":"orders"}' \
    "$labels" "labels of the orders statement"
jq -e '[.series[] | select(.name == "db.statement.time" and .labels.table == "orders"
        and (.labels.query | startswith("SELECT * FROM orders")))][0] as $t
    | [.series[] | select(.name == "db.statement.mean_time" and .labels.queryid == $t.labels.queryid)][0] as $m
    | $t.unit == "s" and $t.kind == "counter" and $t.points[0].value > 0
      and $m.kind == "gauge" and (($m.points[0].value - $t.points[0].value / 25) | fabs) < 0.00001' \
    "$J" >/dev/null || fail "db.statement.time / mean_time of the orders query are inconsistent: $(
        jq -c '[.series[] | select((.name | startswith("db.statement.")) and .labels.table == "orders")
        | {name, kind, unit, v: .points[0].value}]' "$J")"
# The server counts blocks on PostgreSQL 13 and later.
[[ -n "$(value "$J" db.statement.shared_blks_hit "$ORDERS")" ]] || fail "no db.statement.shared_blks_hit for the orders query"

seq_scan=$(value "$J" db.table.seq_scan '.table == "orders"')
assert_ge "${seq_scan%.*}" 25 "db.table.seq_scan{table=orders}"
tup_read=$(value "$J" db.table.seq_tup_read '.table == "orders"')
assert_ge "${tup_read%.*}" $((25 * 20000)) "db.table.seq_tup_read{table=orders}"
assert_eq 20000 "$(value "$J" db.table.live_tup '.table == "orders"')" "db.table.live_tup{table=orders}"
# orders has no index at all: the server reports idx_scan as NULL, so no series.
assert_eq 0 "$(count "$J" db.table.idx_scan '.table == "orders"')" "db.table.idx_scan series of orders (no index)"
# PostgreSQL 15 does not record when a table was last read.
assert_eq 0 "$(count "$J" db.table.last_read_unix)" "db.table.last_read_unix series on PostgreSQL 15"
assert_eq app "$(jq -r '.series[] | select(.name == "db.table.seq_scan" and .labels.table == "orders") | .labels.database' "$J")" \
    "database label of db.table.seq_scan"

hit=$(value "$J" db.cache.blks_hit '.database == "app"')
assert_gt "${hit%.*}" 0 "db.cache.blks_hit{database=app}"
[[ -n "$(value "$J" db.cache.blks_read '.database == "app"')" ]] || fail "no db.cache.blks_read{database=app}"
assert_ge "$(value "$J" db.connections '.database == "app"')" 1 "db.connections{database=app}"
commits=$(value "$J" db.xact.commit '.database == "app"')
assert_gt "${commits%.*}" 0 "db.xact.commit{database=app}"
assert_eq 0 "$(value "$J" db.deadlocks '.database == "app"')" "db.deadlocks{database=app}"
# databases: current (the default) reports only the dsn's database.
assert_eq 0 "$(count "$J" db.cache.blks_hit '.database != "app"')" "db.cache.blks_hit of other databases"
assert_eq 0 "$(jq '[.series[] | select((.name | startswith("db.")) and .layer != "database")] | length' "$J")" \
    "db.* series outside the database layer"
if grep -q "pg_stat_statements is not available" "$T/app.out"; then
    fail "the agent says pg_stat_statements is missing although it is loaded: $(cat "$T/app.out")"
fi
log "app: orders statement calls 25, rows 500, seq_scan $seq_scan, seq_tup_read $tup_read, blks_hit $hit"

# databases: all reports every database's pg_stat_database row.
agent_once all "host=127.0.0.1 port=$PG_PORT dbname=app user=strata" "    databases: all"
for db in app plain postgres; do
    [[ -n "$(value "$T/all.json" db.cache.blks_hit ".database == \"$db\"")" ]] ||
        fail "databases: all lacks db.cache.blks_hit{database=$db}"
done

# A database without CREATE EXTENSION: one clear message, the rest sampled.
sql plain "CREATE TABLE items (id int)" "INSERT INTO items SELECT generate_series(1, 100)" \
    "SELECT count(*) FROM items" >/dev/null
agent_once plain "host=127.0.0.1 port=$PG_PORT dbname=plain user=strata"
assert_eq 1 "$(grep -c "pg_stat_statements is not available" "$T/plain.out" || true)" \
    "missing-extension messages in two runs against a database without the extension"
assert_eq 0 "$(count "$T/plain.json" db.statement.calls)" "db.statement.calls without the extension"
[[ -n "$(value "$T/plain.json" db.table.seq_scan '.table == "items"')" ]] || fail "no db.table.seq_scan{table=items} without the extension"
[[ -n "$(value "$T/plain.json" db.cache.blks_hit '.database == "plain"')" ]] || fail "no db.cache.blks_hit without the extension"

# create_extension: true creates it (needs a role that may; here the superuser).
agent_once create "host=127.0.0.1 port=$PG_PORT dbname=plain2 user=postgres" "    create_extension: true"
assert_eq 1 "$(sql plain2 "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'")" \
    "pg_stat_statements in plain2 after create_extension: true"
assert_ge "$(count "$T/create.json" db.statement.calls '.database == "plain2"')" 1 \
    "db.statement.calls{database=plain2} after create_extension: true"
if grep -q "pg_stat_statements is not available" "$T/create.out"; then
    fail "create_extension: true still says the extension is missing: $(cat "$T/create.out")"
fi
log "no extension: one message, tables and cache still sampled; create_extension: true works"

# The agent connects with gssencmode=disable ahead of the dsn (no Kerberos
# set-up at every connect); a dsn that asks for GSS encryption still wins:
# this server has none, so the connection is refused for that reason.
agent_once gss "host=127.0.0.1 port=$PG_PORT dbname=app user=strata gssencmode=require"
grep -q "GSSAPI encryption required" "$T/gss.out" ||
    fail "a dsn's gssencmode=require was not applied: $(tail -n 5 "$T/gss.out")"

# ---- the same server without shared_preload_libraries --------------------------------------------

pg_stop fast
pg_start ""
agent_once nopreload "host=127.0.0.1 port=$PG_PORT dbname=app user=strata"
J=$T/nopreload.json
assert_eq 1 "$(grep -c "pg_stat_statements is not available" "$T/nopreload.out" || true)" \
    "missing-extension messages in two runs without shared_preload_libraries"
assert_eq 0 "$(jq '[.series[] | select(.name | startswith("db.statement."))] | length' "$J")" \
    "db.statement.* series without shared_preload_libraries"
seq_scan=$(value "$J" db.table.seq_scan '.table == "orders"')
assert_ge "${seq_scan%.*}" 25 "db.table.seq_scan{table=orders} without shared_preload_libraries"
[[ -n "$(value "$J" db.cache.blks_hit '.database == "app"')" ]] || fail "no db.cache.blks_hit without shared_preload_libraries"
log "not preloaded: $(grep "pg_stat_statements is not available" "$T/nopreload.out" | cut -c1-160)"

# ---- reconnection: a running agent outlives a server restart ------------------------------------

collector_start
mkdir -p "$T/agent1/data"
cat >"$T/agent1/agent.yaml" <<EOF
collector: $INGEST_URL
data_dir: $T/agent1/data
interval: 200ms
flush_interval: 300ms
host: pg-host
role: db
log_level: info
sender:
  timeout: 2s
  backoff_min: 100ms
  backoff_max: 1s
samplers:
  postgres:
    dsn: "host=127.0.0.1 port=$PG_PORT dbname=app user=strata"
    connect_timeout: 2s
    statement_timeout: 500ms
EOF
spawn agent1 "$T/agent1/agent.log" "$AGENT_BIN" --config "$T/agent1/agent.yaml"
AGENT1=$ST_PID

# points NAME FROM_MS: the collector holds a point of NAME at or after FROM_MS.
points_since() {
    local out
    out=$(query "$1" pg-host "$2" now) || return 1
    jq -e --argjson t "$2" 'any(.series[].points[]; .[0] >= $t)' <<<"$out" >/dev/null
}
T0=$(date +%s%3N)
wait_for 30 "db.xact.commit from the running agent" points_since db.xact.commit "$T0"
pg_stop fast
wait_for 30 "the agent to notice the server is gone" grep -q "sampler postgres failed" "$T/agent1/agent.log"
wait_for 30 "the agent to try connecting while the server is down" \
    grep -q "postgres: cannot connect to 127.0.0.1 port $PG_PORT" "$T/agent1/agent.log"
proc_alive "$AGENT1" || fail "the agent died when PostgreSQL went down"
pg_start pg_stat_statements
T1=$(date +%s%3N)
wait_for 60 "the agent to reconnect" grep -q "sampler postgres works again" "$T/agent1/agent.log"
wait_for 30 "db.xact.commit after the restart" points_since db.xact.commit "$T1"
wait_for 30 "db.statement.calls after the restart" points_since db.statement.calls "$T1"
# It connected first while nothing was preloaded; the new connection looked again.
assert_eq 1 "$(grep -c "pg_stat_statements is not available" "$T/agent1/agent.log" || true)" \
    "missing-extension messages of the running agent"
grep -q "statement statistics resume" "$T/agent1/agent.log" || fail "no message that statement statistics resume"
proc_alive "$AGENT1" || fail "the agent died while PostgreSQL was down"

# A server that stops answering mid-query: the agent's own deadline
# (statement_timeout + 1 s) drops the connection and the next run reconnects.
BACKEND=$(sql postgres "SELECT pid FROM pg_stat_activity WHERE application_name = 'strata-agent'")
[[ "$BACKEND" =~ ^[0-9]+$ ]] || fail "no single backend of the agent: '$BACKEND'"
kill -STOP "$BACKEND"
ST_CLEANUP_HOOKS=("kill -CONT $BACKEND 2>/dev/null; true" "${ST_CLEANUP_HOOKS[@]}")
wait_for 30 "the agent to give up on the stopped backend" \
    grep -q "postgres: timed out: no reply in time" "$T/agent1/agent.log"
kill -CONT "$BACKEND"
T2=$(date +%s%3N)
wait_for 30 "db.xact.commit after the hung backend" points_since db.xact.commit "$T2"
assert_ge "$(grep -c "sampler postgres works again" "$T/agent1/agent.log")" 2 \
    "recoveries of the postgres sampler (restart, hung backend)"
kill -TERM "$AGENT1"
reap "$AGENT1" 30
assert_eq 0 "$ST_RC" "agent exit status after SIGTERM"
log "reconnect: $(grep -c "cannot connect" "$T/agent1/agent.log" || true) failed connects while down, then resumed"

# libpq is loaded when the sampler starts, not linked: on a host without it
# (hidden here by a bind mount in a private mount namespace) the agent says
# so and names the sampler instead of failing to start at all.
LIBPQ=$(ldconfig -p | awk '$1 == "libpq.so.5" && !f {print $NF; f = 1}') # reads all: no SIGPIPE
[[ -n "$LIBPQ" ]] || fail "ldconfig does not know libpq.so.5"
rc=0
out=$(unshare -m bash -c 'mount --bind /dev/null "$1" && "$2" --config "$3" --check-config' _ \
    "$LIBPQ" "$AGENT_BIN" "$T/agent1/agent.yaml" 2>&1) || rc=$?
[[ $rc -ne 0 ]] || fail "--check-config passed without libpq: $out"
assert_contains "$out" "libpq unavailable" "--check-config without libpq"
assert_contains "$out" "postgres" "--check-config without libpq"
log "without libpq: $out"

pass
