#!/usr/bin/env bash
# The varnish sampler against a real varnishd (Debian's package) in a temp
# working directory, in front of a small python origin whose responses the
# VCL caches for an hour: 10 distinct URLs fetched 4 times each must show as
# exactly 10 misses and 30 hits in `strata-agent --once` (which runs
# varnishstat -n <that directory>), with storage bytes as varnishstat itself
# reports them; a varnishd that is gone must cost the sampler a run, never
# the agent.
#
#   ST_BIN=build ST_SRC=. bash tests/integration/varnish_test.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for tool in varnishd varnishstat varnishadm; do
    command -v "$tool" >/dev/null || skip "$tool is not installed (deploy/bootstrap.sh installs varnish)"
done
VARNISHSTAT=$(command -v varnishstat)
# The interpreter itself, not a version-manager shim, so that the pid we
# signal is the server's.
PY=$(python3 -c 'import sys; print(sys.executable)')

read -r VPORT OPORT < <(free_ports 2)
VDIR=$T/varnish
WWW=$T/www
mkdir -p "$VDIR" "$WWW"
for i in $(seq 1 10); do
    head -c $((1000 * i)) /dev/zero | tr '\0' a >"$WWW/page$i.html"
done

cat >"$T/test.vcl" <<EOF
vcl 4.1;
backend origin {
    .host = "127.0.0.1";
    .port = "$OPORT";
}
sub vcl_backend_response {
    # python's http.server sends no Cache-Control; cache for the test's life.
    set beresp.ttl = 1h;
    set beresp.grace = 0s;
}
EOF

# ---- helpers of this test ----

origin_up() { curl -fs --max-time 2 -o /dev/null "http://127.0.0.1:$OPORT/page1.html"; }
# Ready without sending a request through the cache (that would count).
varnish_up() {
    varnishadm -n "$VDIR" status 2>/dev/null | grep -q 'running' &&
        (exec 3<>"/dev/tcp/127.0.0.1/$VPORT") 2>/dev/null
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

# vstat JQ: a figure from varnishstat itself, whichever JSON shape it prints.
vstat() {
    varnishstat -n "$VDIR" -j | jq -r "(if .counters then .counters else . end) | $1"
}

labels() { printf '{"cache":"varnish","result":"%s"}' "$1"; }
CACHE='{"cache":"varnish"}'

# ---- origin and varnishd ----

spawn origin "$T/origin.out" "$PY" -m http.server "$OPORT" --bind 127.0.0.1 --directory "$WWW"
wait_for 30 "the python origin on 127.0.0.1:$OPORT" origin_up
spawn varnishd "$T/varnishd.out" varnishd -F -n "$VDIR" -j none -a "127.0.0.1:$VPORT" \
    -f "$T/test.vcl" -s malloc,16m -p default_grace=0
VARNISHD_PID=$ST_PID
wait_for 60 "varnishd to run its child and listen on 127.0.0.1:$VPORT" varnish_up
log "$(varnishd -V 2>&1 | head -n 1) up on 127.0.0.1:$VPORT (pid $VARNISHD_PID), origin :$OPORT"

# ---- the workload: 10 URLs, 4 fetches each, one after another ----

for i in $(seq 1 10); do
    for k in 1 2 3 4; do
        size=$(curl -fsS --max-time 10 -o /dev/null -w '%{size_download}' \
            "http://127.0.0.1:$VPORT/page$i.html") || fail "GET /page$i.html (fetch $k) through varnish failed"
        assert_eq $((1000 * i)) "$size" "bytes of /page$i.html (fetch $k)"
    done
done
# A worker adds its request to varnishd's shared counters after it has sent
# the response, so the last fetch may not be counted yet when curl returns
# (CI once read 29 hits). Wait for all 40 to be counted, then check the split.
counted() { [[ $(vstat '."MAIN.cache_hit".value + ."MAIN.cache_miss".value') -ge 40 ]]; }
wait_for 10 "varnishstat to count all 40 fetches" counted
# The server's own figures first, so a failure below is the sampler's.
assert_eq 30 "$(vstat '."MAIN.cache_hit".value')" "varnishstat MAIN.cache_hit after the workload"
assert_eq 10 "$(vstat '."MAIN.cache_miss".value')" "varnishstat MAIN.cache_miss after the workload"
STORAGE=$(vstat '[to_entries[] | select(.key | test("^(SMA|SMF)\\..+\\.g_bytes$")) | .value.value] | add')

# varnishstat through a wrapper that notes the environment the agent gives
# it: the agent turns GnuTLS's load-time initialisation off for itself
# (main.c), and its children inherit that.
printf '#!/bin/sh\nenv >"%s"\nexec "%s" "$@"\n' "$T/varnishstat.env" "$VARNISHSTAT" >"$T/varnishstat-env"
chmod +x "$T/varnishstat-env"
agent_once once "  varnish:
    varnishstat: $T/varnishstat-env
    instance: $VDIR
    timeout: 5s"
grep -qx GNUTLS_NO_IMPLICIT_INIT=1 "$T/varnishstat.env" ||
    fail "GNUTLS_NO_IMPLICIT_INIT=1 not in the agent's environment"
assert_eq 30 "$(value once cache.requests "$(labels hit)")" "cache.requests{cache=varnish,result=hit}"
assert_eq 10 "$(value once cache.requests "$(labels miss)")" "cache.requests{cache=varnish,result=miss}"
assert_eq 0 "$(value once cache.requests "$(labels pass)")" "cache.requests{cache=varnish,result=pass}"
assert_eq 0 "$(value once cache.requests "$(labels hitmiss)")" "cache.requests{cache=varnish,result=hitmiss}"
assert_eq "counter  infrastructure" "$(meta once cache.requests "$(labels hit)")" "cache.requests kind, unit, layer"
assert_eq 0 "$(value once cache.evictions "$CACHE")" "cache.evictions{cache=varnish}"
assert_eq "counter  infrastructure" "$(meta once cache.evictions "$CACHE")" "cache.evictions kind, unit, layer"
USED=$(value once cache.memory.used "$CACHE")
assert_eq "$STORAGE" "$USED" "cache.memory.used{cache=varnish} vs varnishstat's SMA/SMF g_bytes"
assert_gt "$USED" 55000 "cache.memory.used{cache=varnish} holds the 55,000 bytes of the pages"
assert_eq "gauge B infrastructure" "$(meta once cache.memory.used "$CACHE")" "cache.memory.used kind, unit, layer"
assert_eq absent "$(value once varnish.malformed '{}')" "varnish.malformed on a real varnishstat"
log "hit 30, miss 10, pass 0, hitmiss 0, evictions 0, storage $USED B"

# ---- varnishd gone: an error for the sampler, a frame from the agent ----

kill -TERM "$VARNISHD_PID"
reap "$VARNISHD_PID" 60
agent_once down "  varnish:
    varnishstat: $VARNISHSTAT
    instance: $VDIR
    timeout: 1s
  tcp:"
assert_eq absent "$(value down cache.requests "$(labels hit)")" "hits with varnishd gone"
assert_contains "$(cat "$T/down.out")" "sampler varnish failed" "agent log with varnishd gone"
[[ "$(jq '[.series[] | select(.name | startswith("tcp."))] | length' "$T/down.json")" -gt 0 ]] ||
    fail "the other samplers must still report when varnishd is gone"

pass
