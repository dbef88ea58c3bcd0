#!/usr/bin/env bash
# The memcached sampler against a real memcached (Debian's package) on a
# free loopback port: a known workload over bash's /dev/tcp (10 sets, 30
# gets of existing keys, 12 of missing ones) must show as exactly 30 hits
# and 12 misses in `strata-agent --once`, with the server's own byte count;
# a 2 MiB memcached filled with 10 MB must show the server's own evictions;
# a stopped server must cost the sampler a run, never the agent.
#
#   ST_BIN=build ST_SRC=. bash tests/integration/memcached_test.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v memcached >/dev/null || skip "memcached is not installed (deploy/bootstrap.sh installs it)"

# memcached refuses to run as root unless told which user to become.
AS_USER=()
if [[ $(id -u) == 0 ]]; then AS_USER=(-u root); fi

# ---- helpers of this test ----

# mc PORT: sends stdin to memcached on PORT, then "quit"; the replies on stdout.
mc() {
    local fd
    exec {fd}<>"/dev/tcp/127.0.0.1/$1" || return 1
    { cat; printf 'quit\r\n'; } >&"$fd"
    tr -d '\r' <&"$fd"
    exec {fd}>&-
}

# mc_stat PORT NAME: one figure of the server's own `stats`.
mc_stat() { printf 'stats\r\n' | mc "$1" | awk -v k="$2" '$1 == "STAT" && $2 == k { print $3 }'; }

mc_up() { [[ -n "$(mc_stat "$1" pid 2>/dev/null)" ]]; }

# start_memcached PORT ARGS...: starts memcached on 127.0.0.1:PORT, waits until it answers.
start_memcached() {
    local port=$1
    shift
    spawn "memcached:$port" "$T/memcached-$port.out" memcached -l 127.0.0.1 -p "$port" -U 0 \
        "${AS_USER[@]}" "$@"
    MC_PID=$ST_PID
    wait_for 30 "memcached to answer stats on 127.0.0.1:$port" mc_up "$port"
}

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

HIT='{"cache":"memcached","result":"hit"}'
MISS='{"cache":"memcached","result":"miss"}'
CACHE='{"cache":"memcached"}'

read -r PORT PORT_SMALL < <(free_ports 2)
start_memcached "$PORT" -m 64
log "memcached $(mc_stat "$PORT" version) up on 127.0.0.1:$PORT (pid $MC_PID)"

# ---- the workload: 10 sets, 30 hits, 12 misses, over one connection ----

{
    for i in $(seq 1 10); do printf 'set key:%d 0 0 8\r\nvalue-%02d\r\n' "$i" "$i"; done
    for round in 1 2 3; do
        for i in $(seq 1 10); do printf 'get key:%d\r\n' "$i"; done
    done
    for i in $(seq 1 12); do printf 'get missing:%d\r\n' "$i"; done
} | mc "$PORT" >"$T/workload.txt"
assert_eq 10 "$(grep -c '^STORED$' "$T/workload.txt")" "set replies"
assert_eq 30 "$(grep -c '^VALUE key:' "$T/workload.txt")" "gets that found their key"
assert_eq 42 "$(grep -c '^END$' "$T/workload.txt")" "get replies"
# The server's own figures first, so a failure below is the sampler's.
assert_eq 30 "$(mc_stat "$PORT" get_hits)" "memcached get_hits after the workload"
assert_eq 12 "$(mc_stat "$PORT" get_misses)" "memcached get_misses after the workload"
BYTES=$(mc_stat "$PORT" bytes)

agent_once tcp "  memcached:
    address: 127.0.0.1:$PORT
    timeout: 2s"
assert_eq 30 "$(value tcp cache.requests "$HIT")" "cache.requests{cache=memcached,result=hit}"
assert_eq 12 "$(value tcp cache.requests "$MISS")" "cache.requests{cache=memcached,result=miss}"
assert_eq "counter  infrastructure" "$(meta tcp cache.requests "$MISS")" "cache.requests kind, unit, layer"
assert_eq 0 "$(value tcp cache.evictions "$CACHE")" "cache.evictions{cache=memcached}"
assert_eq "counter  infrastructure" "$(meta tcp cache.evictions "$CACHE")" "cache.evictions kind, unit, layer"
assert_eq "$BYTES" "$(value tcp cache.memory.used "$CACHE")" "cache.memory.used{cache=memcached} vs the server's bytes"
assert_eq "gauge B infrastructure" "$(meta tcp cache.memory.used "$CACHE")" "cache.memory.used kind, unit, layer"
CONNS=$(value tcp memcached.connections.current '{}')
assert_ge "$CONNS" 1 "memcached.connections.current (the sampler's own connection counts)"
assert_eq "gauge  infrastructure" "$(meta tcp memcached.connections.current '{}')" "memcached.connections.current kind"
assert_eq absent "$(value tcp memcached.malformed '{}')" "memcached.malformed on a real server"
log "tcp: hit 30, miss 12, evictions 0, memory $BYTES B, connections $CONNS"

# ---- evictions: 100 values of 100 kB into a 2 MiB memcached ----

start_memcached "$PORT_SMALL" -m 2
SMALL_PID=$MC_PID
VAL=$(head -c 100000 /dev/zero | tr '\0' x)
for i in $(seq 1 100); do printf 'set big:%d 0 0 100000\r\n%s\r\n' "$i" "$VAL"; done |
    mc "$PORT_SMALL" >"$T/fill.txt"
assert_eq 100 "$(grep -c '^STORED$' "$T/fill.txt")" "sets of 100 kB values"
EVICTED=$(mc_stat "$PORT_SMALL" evictions)
assert_gt "$EVICTED" 0 "memcached evictions after 10 MB into 2 MiB"
agent_once evict "  memcached:
    address: 127.0.0.1:$PORT_SMALL"
assert_eq "$EVICTED" "$(value evict cache.evictions "$CACHE")" "cache.evictions{cache=memcached} vs the server's evictions"
assert_eq "$(mc_stat "$PORT_SMALL" bytes)" "$(value evict cache.memory.used "$CACHE")" "cache.memory.used{cache=memcached} vs the server's bytes"
log "evictions: $EVICTED"

# ---- the server stops: an error for the sampler, a frame from the agent ----

kill -TERM "$SMALL_PID"
reap "$SMALL_PID" 30
agent_once down "  memcached:
    address: 127.0.0.1:$PORT_SMALL
  tcp:"
assert_eq absent "$(value down cache.requests "$HIT")" "hits with the server down"
assert_contains "$(cat "$T/down.out")" "Connection refused" "agent log with the server down"
[[ "$(jq '[.series[] | select(.name | startswith("tcp."))] | length' "$T/down.json")" -gt 0 ]] ||
    fail "the other samplers must still report when memcached is down"

pass
