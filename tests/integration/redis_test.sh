#!/usr/bin/env bash
# The redis sampler against a real redis-server (Debian's package) on a free
# loopback port and a unix socket, with a password: a known workload (10
# SETs, 30 GETs of existing keys, 12 of missing ones) must show as exactly
# 30 hits and 12 misses in `strata-agent --once`; a maxmemory/allkeys-lru
# phase must show the server's own eviction count; a wrong password and a
# stopped server must cost the sampler a run, never the agent.
#
#   ST_BIN=build ST_SRC=. bash tests/integration/redis_test.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for tool in redis-server redis-cli; do
    command -v "$tool" >/dev/null || skip "$tool is not installed (deploy/bootstrap.sh installs redis-server)"
done

PASSWORD=s3cret-$RANDOM
read -r PORT < <(free_ports 1)
RDIR=$T/redis
SOCK=$RDIR/redis.sock
mkdir -p "$RDIR"
cat >"$RDIR/redis.conf" <<EOF
bind 127.0.0.1
port $PORT
unixsocket $SOCK
unixsocketperm 700
dir $RDIR
save ""
appendonly no
daemonize no
logfile ""
requirepass $PASSWORD
EOF

rcli() { redis-cli -h 127.0.0.1 -p "$PORT" --no-auth-warning -a "$PASSWORD" "$@"; }
redis_up() { [[ "$(rcli PING 2>/dev/null)" == PONG ]]; }
# info_field NAME: one field of the server's own INFO.
info_field() { rcli INFO | tr -d '\r' | awk -F: -v k="$1" '$1 == k { print $2 }'; }

spawn redis-server "$T/redis-server.out" redis-server "$RDIR/redis.conf"
REDIS_PID=$ST_PID
wait_for 30 "redis-server to answer PING on 127.0.0.1:$PORT" redis_up
log "redis-server $(rcli INFO server | tr -d '\r' | awk -F: '$1 == "redis_version" { print $2 }') up on 127.0.0.1:$PORT (pid $REDIS_PID)"

# ---- helpers of this test ----

# agent_once NAME YAML: runs strata-agent --once with the sampler options
# YAML (indented under samplers:); the frame lands in $T/NAME.json, the log
# in $T/NAME.out.
agent_once() {
    local name=$1 yaml=$2 rc=0
    mkdir -p "$T/$name-data"
    printf 'data_dir: %s\nlog_level: info\nsamplers:\n%s\n' "$T/$name-data" "$yaml" >"$T/$name.yaml"
    timeout 60 "$AGENT_BIN" --config "$T/$name.yaml" --once --once-wait 200ms \
        >"$T/$name.json" 2>"$T/$name.out" || rc=$?
    assert_eq 0 "$rc" "strata-agent --once ($name) exit status; log: $(tail -n 5 "$T/$name.out")"
    jq -e . "$T/$name.json" >/dev/null || fail "--once ($name) did not print JSON"
}

# value NAME SERIES LABELS_JSON: the sum of the series' points ("absent"
# when the frame has no such series).
value() {
    jq -r --arg n "$2" --argjson l "$3" \
        '[.series[] | select(.name == $n and .labels == $l) | .points[].value]
         | if length == 0 then "absent" else add end' "$T/$1.json"
}

# meta NAME SERIES LABELS_JSON: "kind unit layer" of the series.
meta() {
    jq -r --arg n "$2" --argjson l "$3" \
        '[.series[] | select(.name == $n and .labels == $l)][0] | "\(.kind) \(.unit) \(.layer)"' \
        "$T/$1.json"
}

HIT='{"cache":"redis","result":"hit"}'
MISS='{"cache":"redis","result":"miss"}'
CACHE='{"cache":"redis"}'

# ---- the workload: 10 SETs, 30 hits, 12 misses ----

{
    for i in $(seq 1 10); do echo "SET key:$i value-$i"; done
} | rcli >"$T/set.out"
assert_eq 10 "$(grep -c '^OK$' "$T/set.out")" "SET replies"
{
    for round in 1 2 3; do
        for i in $(seq 1 10); do echo "GET key:$i"; done
    done
    for i in $(seq 1 12); do echo "GET missing:$i"; done
} | rcli >"$T/get.out"
assert_eq 30 "$(grep -c '^value-' "$T/get.out")" "GETs that found their key"
# The server's own figures first, so a failure below is the sampler's.
assert_eq 30 "$(info_field keyspace_hits)" "redis INFO keyspace_hits after the workload"
assert_eq 12 "$(info_field keyspace_misses)" "redis INFO keyspace_misses after the workload"

# ---- over TCP ----

agent_once tcp "  redis:
    address: 127.0.0.1:$PORT
    password: $PASSWORD
    timeout: 2s"
assert_eq 30 "$(value tcp cache.requests "$HIT")" "cache.requests{cache=redis,result=hit}"
assert_eq 12 "$(value tcp cache.requests "$MISS")" "cache.requests{cache=redis,result=miss}"
assert_eq "counter  infrastructure" "$(meta tcp cache.requests "$HIT")" "cache.requests kind, unit, layer"
assert_eq 0 "$(value tcp cache.evictions "$CACHE")" "cache.evictions{cache=redis} without maxmemory"
assert_eq "counter  infrastructure" "$(meta tcp cache.evictions "$CACHE")" "cache.evictions kind, unit, layer"
assert_eq "gauge B infrastructure" "$(meta tcp cache.memory.used "$CACHE")" "cache.memory.used kind, unit, layer"
USED=$(value tcp cache.memory.used "$CACHE")
assert_gt "$USED" 100000 "cache.memory.used{cache=redis} (bytes)"
CLIENTS=$(value tcp redis.clients.connected '{}')
assert_eq "gauge  infrastructure" "$(meta tcp redis.clients.connected '{}')" "redis.clients.connected kind"
assert_ge "$CLIENTS" 1 "redis.clients.connected (the sampler's own connection counts)"
assert_eq 0 "$(value tcp redis.connections.rejected '{}')" "redis.connections.rejected"
assert_eq absent "$(value tcp redis.malformed '{}')" "redis.malformed on a real server"
log "tcp: hit 30, miss 12, evictions 0, memory $USED B, clients $CLIENTS"

# ---- over the unix socket: the same totals (INFO itself is no hit) ----

agent_once unix "  redis:
    socket: $SOCK
    password: $PASSWORD"
assert_eq 30 "$(value unix cache.requests "$HIT")" "hits over the unix socket"
assert_eq 12 "$(value unix cache.requests "$MISS")" "misses over the unix socket"

# ---- a wrong password and a missing one: the run fails, the agent does not ----

agent_once badpass "  redis:
    address: 127.0.0.1:$PORT
    password: wrong
  tcp:"
assert_eq absent "$(value badpass cache.requests "$HIT")" "hits with a wrong password"
assert_contains "$(cat "$T/badpass.out")" "AUTH" "agent log with a wrong password"
assert_contains "$(cat "$T/badpass.out")" "sampler redis failed" "agent log with a wrong password"
[[ "$(jq '[.series[] | select(.name | startswith("tcp."))] | length' "$T/badpass.json")" -gt 0 ]] ||
    fail "the other samplers must still report when redis refuses us"
agent_once nopass "  redis:
    address: 127.0.0.1:$PORT"
assert_contains "$(cat "$T/nopass.out")" "NOAUTH" "agent log without a password"

# ---- evictions: maxmemory with allkeys-lru, then more data than fits ----

rcli CONFIG SET maxmemory 2mb >/dev/null
rcli CONFIG SET maxmemory-policy allkeys-lru >/dev/null
VAL=$(head -c 1024 /dev/zero | tr '\0' x)
for i in $(seq 1 4000); do echo "SET big:$i $VAL"; done | rcli >"$T/fill.out"
EVICTED=$(info_field evicted_keys)
assert_gt "$EVICTED" 0 "redis INFO evicted_keys after filling past maxmemory"
agent_once evict "  redis:
    address: 127.0.0.1:$PORT
    password: $PASSWORD"
# Redis may evict a few more keys when any command (INFO too) finds it over
# maxmemory, so the sampler's figure lies between the server's before and after.
EVICTED_AFTER=$(info_field evicted_keys)
GOT=$(value evict cache.evictions "$CACHE")
assert_gt "$GOT" 0 "cache.evictions{cache=redis} after filling past maxmemory"
assert_ge "$GOT" "$EVICTED" "cache.evictions{cache=redis} vs the server's evicted_keys before"
assert_ge "$EVICTED_AFTER" "$GOT" "the server's evicted_keys after vs cache.evictions{cache=redis}"
USED=$(value evict cache.memory.used "$CACHE")
assert_ge $((2 * 1024 * 1024 + 256 * 1024)) "$USED" "cache.memory.used{cache=redis} under maxmemory 2mb"
assert_gt "$USED" $((1024 * 1024)) "cache.memory.used{cache=redis} after the fill"
log "evictions: $GOT keys evicted (server: $EVICTED before, $EVICTED_AFTER after), memory $USED B under maxmemory 2mb"

# ---- the server stops: an error for the sampler, a frame from the agent ----

kill -TERM "$REDIS_PID"
reap "$REDIS_PID" 30
agent_once down "  redis:
    address: 127.0.0.1:$PORT
  tcp:"
assert_eq absent "$(value down cache.requests "$HIT")" "hits with the server down"
assert_contains "$(cat "$T/down.out")" "Connection refused" "agent log with the server down"

pass
