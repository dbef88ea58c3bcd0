#!/usr/bin/env bash
# The nginx sampler against a real nginx: a caching proxy (proxy_cache) in
# front of an origin server block, stub_status, and an access log in the
# `strata` log_format.
#  1. --once: 20 URLs requested 5 times each through the cache give exactly
#     80 hits and 20 misses, per-route request counts, errors (5xx only),
#     duration counts, one malformed line, and stub_status figures that match
#     the requests made.
#  2. The agent daemon sending to a real collector while requests continue:
#     a rename rotation (+ nginx reopen via SIGUSR1), a copytruncate, and an
#     agent restart (SIGTERM, requests while it is down, start again). The
#     collector's sum of http.server.requests deltas must equal the number of
#     requests made exactly: no line lost, none counted twice.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NGINX_BIN=$(command -v nginx || true)
[[ -n "$NGINX_BIN" ]] || NGINX_BIN=/usr/sbin/nginx
[[ -x "$NGINX_BIN" ]] || fail "nginx is not installed (deploy/bootstrap.sh installs nginx-light)"

# ---- nginx ----------------------------------------------------------------------------------

NG=$T/nginx
LOG=$NG/logs/access.log
read -r FRONT_PORT ORIGIN_PORT < <(free_ports 2)
FRONT=http://127.0.0.1:$FRONT_PORT
STATUS_URL=$FRONT/nginx_status
NGINX_PID=

nginx_config() {
    local user=""
    mkdir -p "$NG"/{logs,www/items,cache,tmp}
    for i in $(seq 1 20); do echo "item $i" >"$NG/www/items/$i"; done
    # As root, workers would switch to nobody and lose the temp dir.
    [[ $(id -u) != 0 ]] || user="user root;"
    cat >"$NG/nginx.conf" <<EOF
$user
worker_processes 1;
error_log $NG/logs/error.log info;
events { worker_connections 256; }
http {
    default_type text/plain;
    access_log off;
$(nginx_temp_paths "$NG/tmp")
    log_format strata '\$msec \$request_time \$status \$upstream_cache_status '
                      '\$body_bytes_sent "\$request_method" "\$uri"';
    proxy_cache_path $NG/cache keys_zone=strata:1m;

    server {                                   # the origin
        listen 127.0.0.1:$ORIGIN_PORT;
        root $NG/www;
        location /api/ { return 200 "api\n"; }
    }
    server {                                   # the edge: cache in front of the origin
        listen 127.0.0.1:$FRONT_PORT;
        access_log $LOG strata;
        location = /nginx_status { stub_status; access_log off; }
        location = /boom { return 503; }
        location /api/ { proxy_pass http://127.0.0.1:$ORIGIN_PORT; }
        location / {
            proxy_pass http://127.0.0.1:$ORIGIN_PORT;
            proxy_cache strata;
            proxy_cache_valid 200 10m;
        }
    }
}
EOF
}

nginx_ready() { curl -fs --max-time 2 -o /dev/null "$STATUS_URL"; }

nginx_start() {
    nginx_config
    "$NGINX_BIN" -t -c "$NG/nginx.conf" -p "$NG" >"$T/nginx-t.out" 2>&1 ||
        fail "nginx -t rejects the test config: $(cat "$T/nginx-t.out")"
    spawn nginx "$T/nginx.out" "$NGINX_BIN" -c "$NG/nginx.conf" -p "$NG" \
        -g "daemon off; pid $NG/nginx.pid;"
    NGINX_PID=$ST_PID
    wait_for 20 "nginx to answer on $STATUS_URL" nginx_ready
    log "nginx $("$NGINX_BIN" -v 2>&1 | sed 's/.*\///') up (pid $NGINX_PID, edge :$FRONT_PORT, origin :$ORIGIN_PORT)"
}

# status_counters: "accepts handled requests" from one stub_status request.
status_counters() { curl -fsS --max-time 5 "$STATUS_URL" | awk 'NR == 3 { print $1, $2, $3 }'; }

# req PATH [CODE]: one request through the edge; fails the test on another status.
req() {
    local code
    code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 "$FRONT$1") || code=000
    [[ "$code" == "${2:-200}" ]] || fail "GET $1: HTTP $code, want ${2:-200}"
}

# ---- --once --------------------------------------------------------------------------------

nginx_start
read -r A0 _ R0 < <(status_counters) # this status request included
[[ "$R0" =~ ^[0-9]+$ ]] || fail "stub_status did not answer with counters"

# 20 URLs x 5, sequential: the first request of each misses, the other 4 hit.
for round in 1 2 3 4 5; do
    for i in $(seq 1 20); do req "/items/$i"; done
done
for i in $(seq 1 7); do req "/api/users/$((1000 + i))?page=$i"; done
for i in 1 2 3; do req /boom 503; done
echo 'this is not a strata log line' >>"$LOG" # between requests: a whole line of its own

cat >"$T/once.yaml" <<EOF
host: nginx-once
samplers:
  nginx:
    interval: 1s
    status_url: $STATUS_URL
    access_log: $LOG
    routes:
      - {prefix: /api/, name: /api}
EOF
timeout 60 "$AGENT_BIN" --config "$T/once.yaml" --data-dir "$T/once-data" --once \
    --once-wait 300ms >"$T/once.json" 2>"$T/once.err.out" ||
    fail "strata-agent --once exited with status $?: $(tail -5 "$T/once.err.out")"
jq -e . "$T/once.json" >/dev/null || fail "--once printed no JSON: $(head -c 300 "$T/once.json")"
if compgen -G "$T/once-data/nginx-*" >/dev/null; then
    fail "--once left a checkpoint behind: $(ls "$T/once-data")"
fi

# one NAME LABELS_JSON FIELD: the sum of FIELD over the points of the one series
# with exactly these labels ("value" for counters and gauges, "count" for
# distributions); "missing" when there is no such series.
one() {
    jq -r --arg n "$1" --argjson l "$2" --arg f "$3" '
        [.series[] | select(.name == $n and .labels == $l)] as $s
        | if ($s | length) != 1 then "missing(\($s | length))"
          else [$s[0].points[][$f]] | add end' "$T/once.json"
}
# total NAME: the sum of "value" over every series of NAME.
total() { jq -r --arg n "$1" '[.series[] | select(.name == $n) | .points[].value] | add // 0' "$T/once.json"; }

assert_eq 80 "$(one cache.requests '{"cache":"nginx","result":"hit","route":"/items/:id"}' value)" \
    "cache.requests hit"
assert_eq 20 "$(one cache.requests '{"cache":"nginx","result":"miss","route":"/items/:id"}' value)" \
    "cache.requests miss"
assert_eq 100 "$(total cache.requests)" "cache.requests over all results (no '-' lines)"
assert_eq 100 "$(one http.server.requests '{"route":"/items/:id","status_class":"2xx"}' value)" \
    "http.server.requests /items/:id 2xx"
assert_eq 7 "$(one http.server.requests '{"route":"/api","status_class":"2xx"}' value)" \
    "http.server.requests /api 2xx (configured route)"
assert_eq 3 "$(one http.server.requests '{"route":"/boom","status_class":"5xx"}' value)" \
    "http.server.requests /boom 5xx"
assert_eq 110 "$(total http.server.requests)" "http.server.requests over all routes"
assert_eq 3 "$(one http.server.errors '{"route":"/boom","status_class":"5xx"}' value)" \
    "http.server.errors /boom 5xx"
assert_eq 3 "$(total http.server.errors)" "http.server.errors over all routes (5xx only)"
assert_eq 80 "$(one http.server.duration '{"route":"/items/:id","status_class":"2xx","cache_status":"hit"}' count)" \
    "http.server.duration count /items/:id hit"
assert_eq 20 "$(one http.server.duration '{"route":"/items/:id","status_class":"2xx","cache_status":"miss"}' count)" \
    "http.server.duration count /items/:id miss"
assert_eq 7 "$(one http.server.duration '{"route":"/api","status_class":"2xx","cache_status":"none"}' count)" \
    "http.server.duration count /api (no cache)"
assert_eq 3 "$(one http.server.duration '{"route":"/boom","status_class":"5xx","cache_status":"none"}' count)" \
    "http.server.duration count /boom"
assert_eq 111 "$(one nginx.log.lines '{}' value)" "nginx.log.lines"
assert_eq 1 "$(one nginx.log.malformed '{"reason":"format"}' value)" "nginx.log.malformed format"
assert_eq 0 "$(one nginx.log.malformed '{"reason":"too_long"}' value)" "nginx.log.malformed too_long"
assert_eq '["infrastructure"]' "$(jq -c '[.series[] | select(.name | test("^(http|cache|nginx)\\.")) | .layer] | unique' "$T/once.json")" \
    "layer of every nginx series"
assert_eq s "$(jq -r '[.series[] | select(.name == "http.server.duration") | .unit] | unique | join(",")' "$T/once.json")" \
    "unit of http.server.duration"

# stub_status: totals from zero in --once. Every request the instance served
# since R0: 110 at the edge, 27 at the origin (20 misses, 7 API), and the
# agent's two status requests.
assert_eq $((R0 + 110 + 27 + 2)) "$(one nginx.requests '{}' value)" "nginx.requests (stub_status)"
accepted=$(one nginx.connections.accepted '{}' value)
assert_ge "$accepted" $((A0 + 110 + 27)) "nginx.connections.accepted"
assert_eq "$accepted" "$(one nginx.connections.handled '{}' value)" "nginx.connections.handled == accepted"
assert_ge "$(jq -r '[.series[] | select(.name == "nginx.connections.active") | .points[-1].value][0]' "$T/once.json")" \
    1 "nginx.connections.active (the status request itself)"
for g in reading writing waiting; do
    v=$(jq -r --arg n "nginx.connections.$g" '[.series[] | select(.name == $n) | .kind][0]' "$T/once.json")
    assert_eq gauge "$v" "kind of nginx.connections.$g"
done
log "--once: hit 80, miss 20, requests 110 (items 100, api 7, boom 3), errors 3, nginx.requests $((R0 + 139)), accepted $accepted"

# ---- daemon, rotations, restart --------------------------------------------------------------

collector_start
agent_config 1 nginx-tail edge
AD=${AGENT_DIR[1]}
cat >"$AD/agent.yaml" <<EOF
collector: $INGEST_URL
data_dir: $AD/data
interval: 200ms
flush_interval: 300ms
host: nginx-tail
role: edge
log_level: ${AGENT_LOG_LEVEL:-info}
sender:
  timeout: 2s
  backoff_min: 100ms
  backoff_max: 1s
samplers:
  nginx:
    status_url: $STATUS_URL
    access_log: $LOG
    routes:
      - {prefix: /api/, name: /api}
EOF

REQS=0  # requests made at the edge while the agent tails (all of them logged)
ITEMS=0 # of those, cached items (all hits: cached during the --once part)

# burst N: N requests, alternating cached items and API calls.
burst() {
    local i
    for ((i = 0; i < $1; i++)); do
        if ((i % 2 == 0)); then
            req "/items/$((i % 20 + 1))"
            ITEMS=$((ITEMS + 1))
        else
            req "/api/orders/$((RANDOM + 100000))"
        fi
        REQS=$((REQS + 1))
    done
}

# Requests that go on in the background while the log rotates.
BG_PID=
bg_loop() {
    local n=0 code
    while [[ ! -e "$T/bg.stop" ]]; do
        code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 "$FRONT/items/$((n % 20 + 1))") || code=000
        [[ $code == 200 ]] || { echo "background request: HTTP $code" >&2; exit 1; }
        n=$((n + 1))
    done
    echo "$n" >"$T/bg.count"
}
bg_start() {
    rm -f "$T/bg.stop" "$T/bg.count"
    bg_loop &
    BG_PID=$!
    ST_PIDS[$BG_PID]=background-requests
}
bg_stop() {
    local n
    touch "$T/bg.stop"
    reap "$BG_PID" 30
    assert_eq 0 "$ST_RC" "background request loop exit status"
    n=$(cat "$T/bg.count")
    REQS=$((REQS + n))
    ITEMS=$((ITEMS + n))
    log "background loop made $n requests"
}

# ckpt_file: the agent's checkpoint of the log (lib.sh sets nullglob: no ls on a glob).
ckpt_file() {
    local f
    for f in "$AD"/data/nginx-*.ckpt; do
        [[ -e "$f" ]] && echo "$f" && return 0
    done
    return 1
}
ckpt_exists() { ckpt_file >/dev/null; }
# caught_up: the agent's checkpoint is at the end of the current log.
caught_up() {
    local f cur size ino
    f=$(ckpt_file) || return 1
    cur=$(awk '$1 == "cur" { print $3, $4 }' "$f")
    size=$(stat -c %s "$LOG") ino=$(stat -c %i "$LOG")
    [[ "$cur" == "$ino $size" ]]
}

# csum METRIC [MATCH]: the sum of every delta the collector holds for our host.
csum() {
    local args=(--data-urlencode "metric=$1" --data-urlencode "match=host=nginx-tail"
        --data-urlencode "from=-10m" --data-urlencode "to=now")
    [[ -z "${2:-}" ]] || args+=(--data-urlencode "match=$2")
    curl -fsS --max-time 10 -G "http://$HTTP_ADDR/v1/query" "${args[@]}" |
        jq '[.series[].points[][1]] | add // 0'
}
collector_has() { [[ "$(csum "$1" "${3:-}")" == "$2" ]]; }

agent_start 1
# stub_status is read with libcurl, loaded by the sampler on first use.
wait_for 30 "libcurl in the nginx agent's mappings" grep -q /libcurl "/proc/${AGENT_PID[1]}/maps"
# Without a checkpoint the agent starts at the end: the --once part's 111 lines are not counted.
wait_for 30 "the agent's first checkpoint" ckpt_exists

burst 30

# Rename rotation while requests continue: nginx writes to the renamed file
# until it reopens its logs, then to a new file at the path.
bg_start
burst 10
mv "$LOG" "$LOG.1"
burst 10
kill -USR1 "$NGINX_PID"
wait_for 20 "nginx to reopen $LOG" test -e "$LOG"
burst 10
bg_stop
log "rename rotation done: $REQS requests so far"

# copytruncate: lines written between the copy and the truncation are lost by
# design, so the test waits until the agent has read everything first.
wait_for 30 "the agent to catch up with $LOG" caught_up
cp "$LOG" "$LOG.2"
: >"$LOG"
burst 12
log "copytruncate done: $REQS requests so far"

# Restart: SIGTERM (the agent spools what it folded), requests while it is
# down, start again from the checkpoint.
agent_stop 1 TERM
assert_eq 0 "$ST_RC" "agent exit status after SIGTERM"
burst 8
agent_start 1
burst 9
log "restart done: $REQS requests in all ($ITEMS cached items)"

wait_for 90 "the collector to hold http.server.requests == $REQS" collector_has http.server.requests "$REQS"
drain_agents
assert_no_loss 1
assert_eq "$REQS" "$(csum http.server.requests)" "sum of http.server.requests deltas after the agent stopped"
assert_eq "$ITEMS" "$(csum cache.requests result=hit)" "sum of cache.requests{result=hit}"
assert_eq 0 "$(csum cache.requests result=miss)" "sum of cache.requests{result=miss}"
assert_eq 0 "$(csum http.server.errors)" "sum of http.server.errors"
assert_eq 0 "$(csum nginx.log.malformed)" "sum of nginx.log.malformed (no torn lines)"
assert_eq 1 "$(csum nginx.log.rotations kind=rename)" "rename rotations seen"
assert_eq 1 "$(csum nginx.log.rotations kind=truncate)" "truncations seen"
assert_ge "$(csum nginx.requests)" "$REQS" "nginx.requests from stub_status"
log "collector: http.server.requests $REQS, hits $ITEMS, across rename, copytruncate and restart"

collector_stop TERM
assert_eq 0 "$ST_RC" "collector exit status after SIGTERM"
pass
