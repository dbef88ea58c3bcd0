#!/usr/bin/env bash
# StatsD end to end: a real collector and three agents, each with a statsd
# sampler on its own UDP port. Known timer values go to each agent (A gets
# 1..1000 ms, B 1001..2000 ms, C 2001..3000 ms of app.function.duration
# {function=checkout,type=mutation}); the collector's p95 per agent and for
# the fleet (sketches merged across hosts) must be within 1 % of the exact
# order statistics. Then a burst of 500 good lines mixed with 50 malformed
# ones goes to agent A: the counter sums are exact and statsd.malformed is
# exactly 50.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---- helpers of this test ----

# udp_ports N: N distinct free loopback UDP ports on one line.
udp_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# statsd_send PORT < lines: sends stdin's lines to 127.0.0.1:PORT, packed
# into datagrams of at most 1400 bytes, paced so loopback never drops.
cat >"$T/statsd_send.py" <<'PY'
import socket, sys, time
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
buf, sent = b"", 0
def flush():
    global buf, sent
    if buf:
        s.sendto(buf, ("127.0.0.1", port))
        buf, sent = b"", sent + 1
        if sent % 50 == 0:
            time.sleep(0.005)
for line in sys.stdin.buffer.read().split(b"\n"):
    if not line:
        continue
    if buf and len(buf) + 1 + len(line) > 1400:
        flush()
    buf = buf + b"\n" + line if buf else line
flush()
PY
statsd_send() { python3 "$T/statsd_send.py" "$1"; }

# agg_query METRIC AGG [extra --data-urlencode args...]: /v1/query aggregated
# over the last 10 minutes (one bucket: sketches merged, counters summed).
agg_query() {
    local m=$1 agg=$2
    shift 2
    curl -fsS --max-time 10 -G "http://$HTTP_ADDR/v1/query" --data-urlencode "metric=$m" \
        --data-urlencode "agg=$agg" --data-urlencode "from=-10m" --data-urlencode "to=now" "$@"
}

# value_of JSON: the value of the only point of the only series ("" if not so).
value_of() {
    jq -r 'if (.series | length) == 1 and (.series[0].points | length) >= 1
           then ([.series[0].points[][1] | select(. != null)] | add) else "" end' <<<"$1"
}

host_value() {
    local out
    out=$(agg_query "$1" "$2" --data-urlencode "match=host=$3" "${@:4}") || return 1
    value_of "$out"
}

# host_value_is METRIC AGG HOST WANT [match...]: the aggregated value equals WANT.
host_value_is() {
    local v
    v=$(host_value "$1" "$2" "$3" "${@:5}") || return 1
    [[ -n "$v" ]] && awk -v a="$v" -v b="$4" 'BEGIN { exit !(a == b) }'
}

# assert_num WANT GOT WHAT: numerically equal (1 and 1.0 alike).
assert_num() {
    awk -v a="$1" -v b="$2" 'BEGIN { exit !(a == b && b != "") }' || fail "$3: expected $1, got '$2'"
}

# within_1pct GOT WANT
within_1pct() { awk -v g="$1" -v w="$2" 'BEGIN { d = g - w; if (d < 0) d = -d; exit !(d <= 0.01 * w) }'; }

statsd_agent() {
    local i=$1 host=$2 port=$3
    agent_config "$i" "$host" app
    cat >"${AGENT_DIR[$i]}/agent.yaml" <<EOF
collector: $INGEST_URL
data_dir: ${AGENT_DIR[$i]}/data
interval: 1s
flush_interval: 500ms
host: $host
role: app
log_level: info
labels:
  test: $ST_TEST
sender:
  timeout: 2s
  backoff_min: 100ms
  backoff_max: 1s
samplers:
  statsd:
    listen: 127.0.0.1:$port
    interval: 500ms
    max_series: 1000
EOF
    agent_start "$i"
}

listening() { grep -q "statsd: listening on udp 127.0.0.1:$2" "${AGENT_DIR[$1]}/agent.log"; }

# ---- the fleet ----

collector_start
read -r PORT_A PORT_B PORT_C < <(udp_ports 3)
PORTS=("" "$PORT_A" "$PORT_B" "$PORT_C")
statsd_agent 1 statsd-a "$PORT_A"
statsd_agent 2 statsd-b "$PORT_B"
statsd_agent 3 statsd-c "$PORT_C"
for i in 1 2 3; do
    wait_for 20 "agent$i's statsd listener on udp ${PORTS[$i]}" listening "$i" "${PORTS[$i]}"
done
wait_for 30 "all three agents in /v1/agents" all_agents_seen 1

# ---- known timers: A 1..1000 ms, B 1001..2000 ms, C 2001..3000 ms ----

for i in 1 2 3; do
    lo=$(((i - 1) * 1000 + 1))
    hi=$((i * 1000))
    # shuffled, so no datagram holds a neat range
    seq "$lo" "$hi" | shuf | awk '{ printf "app.function.duration:%d|ms|#function:checkout,type:mutation\n", $1 }' |
        statsd_send "${PORTS[$i]}"
done
log "sent 1000 timer lines to each agent"

for i in 1 2 3; do
    wait_for 30 "1000 timer samples of ${AGENT_HOST[$i]} at the collector" \
        host_value_is app.function.duration count "${AGENT_HOST[$i]}" 1000 \
        --data-urlencode "match=function=checkout"
done

# per agent: p95 of all of its samples within 1 % of the exact one
declare -a WANT=("" 0.950 1.950 2.950) # rank floor(0.95 * 999) of each range, in seconds
for i in 1 2 3; do
    h=${AGENT_HOST[$i]}
    out=$(agg_query app.function.duration p95 --data-urlencode "match=host=$h" \
        --data-urlencode "match=function=checkout" --data-urlencode "match=type=mutation")
    got=$(value_of "$out")
    [[ -n "$got" ]] || fail "p95 of $h: no single value in $out"
    within_1pct "$got" "${WANT[$i]}" || fail "p95 of $h: got $got, exact ${WANT[$i]} (more than 1 % off)"
    min=$(host_value app.function.duration min "$h")
    max=$(host_value app.function.duration max "$h")
    assert_num "$(awk -v x=$(((i - 1) * 1000 + 1)) 'BEGIN { print x / 1000 }')" "$min" "min of $h (s)"
    assert_num "$i" "$max" "max of $h (s)"
    log "$h: p95 $got s (exact ${WANT[$i]}), min $min, max $max"
done
out=$(agg_query app.function.duration p95 --data-urlencode "match=host=statsd-a")
assert_eq s "$(jq -r .unit <<<"$out")" "unit of app.function.duration"
assert_eq distribution "$(jq -r .kind <<<"$out")" "kind of app.function.duration"
out=$(curl -fsS --max-time 10 -G "http://$HTTP_ADDR/v1/query" \
    --data-urlencode "metric=app.function.duration" --data-urlencode "match=host=statsd-b" \
    --data-urlencode "from=-10m" --data-urlencode "to=now")
assert_eq "checkout mutation" "$(jq -r '.series[0].labels | "\(.function) \(.type)"' <<<"$out")" \
    "labels of app.function.duration"

# the fleet: the three hosts' sketches merged, p95 of all 3000 samples
out=$(agg_query app.function.duration p95 --data-urlencode "match=function=checkout" \
    --data-urlencode "match=host=~statsd-.*")
got=$(value_of "$out")
[[ -n "$got" ]] || fail "fleet p95: no single merged value in $out"
within_1pct "$got" 2.850 || fail "fleet p95: got $got, exact 2.850 (more than 1 % off)"
out=$(agg_query app.function.duration count --data-urlencode "match=function=checkout")
assert_num 3000 "$(value_of "$out")" "fleet sample count"
log "fleet p95 $got s over 3000 samples (exact 2.850)"

# ---- a burst: 500 good lines with 50 malformed ones among them, to agent A ----

{
    for d in $(seq 1 50); do
        for k in $(seq 1 5); do
            echo "app.function.errors:1|c|#function:checkout,type:mutation"
            echo "app.function.errors:3|c|@0.5|#type:mutation,function:checkout"
        done
        case $((d % 5)) in
        0) echo "app.function.errors:abc|c" ;;
        1) echo "app.function.errors:1|q|#function:checkout" ;;
        2) echo ":5|c" ;;
        3) echo "app.function.duration:nan|ms" ;;
        4) echo "app.function.errors:1|c|@0" ;;
        esac
    done
} | statsd_send "$PORT_A"
# good: 250 x 1 + 250 x 3 / 0.5 = 1750 errors counted
wait_for 30 "statsd.received of statsd-a to reach 1550 lines" \
    host_value_is statsd.received sum statsd-a 1550
wait_for 30 "app.function.errors of statsd-a to sum to 1750" \
    host_value_is app.function.errors sum statsd-a 1750 --data-urlencode "match=function=checkout"
assert_num 50 "$(host_value statsd.malformed sum statsd-a)" "statsd.malformed of statsd-a"
assert_num 0 "$(host_value statsd.dropped sum statsd-a)" "statsd.dropped of statsd-a"
assert_num 0 "$(host_value statsd.malformed sum statsd-b)" "statsd.malformed of statsd-b"
assert_num 1000 "$(host_value statsd.received sum statsd-b)" "statsd.received of statsd-b"
out=$(agg_query app.function.errors sum --data-urlencode "match=host=statsd-a" --data-urlencode "by=function")
assert_eq checkout "$(jq -r '.series[0].labels.function' <<<"$out")" \
    "app.function.errors keeps its function label"
log "burst: 500 good lines counted exactly (1750), 50 malformed counted, none dropped"

drain_agents
for i in 1 2 3; do assert_no_loss "$i"; done
collector_stop TERM
assert_eq 0 "$ST_RC" "collector exit status after SIGTERM"
pass
