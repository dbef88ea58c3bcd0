#!/usr/bin/env bash
# The HTTP API against a real collector fed by one real agent: every bad
# request to /v1/query (unknown agg, bad regex, inverted or oversized range,
# too many buckets, unknown parameter, non-UTF-8, bad percent-encoding, an
# over-long query string), a wrong method and an unknown path is a 4xx with
# a JSON {"error": "..."} that names what is wrong, and the server keeps
# serving after each; /metrics passes `promtool check metrics`; aggregated
# answers (max, min, count, sum, avg, rate, by host, step, top) equal the
# same aggregation computed here from the raw points.
#
# An unknown metric is not an error: it is a metric nobody has sent yet,
# so the answer is 200 with an empty "series" list (raw and aggregated).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HOST=api-host-1
PROMTOOL=${PROMTOOL:-promtool}

# ---- a collector started with flags, and one agent ----------------------------------------

mkdir -p "$COLLECTOR_DATA"
spawn collector "$COLLECTOR_DIR/collector.log" "$COLLECTOR_BIN" --ingest "$INGEST_URL" \
    --http "$HTTP_ADDR" --data-dir "$COLLECTOR_DATA"
COLLECTOR_PID=$ST_PID
wait_for 20 "collector ready on http://$HTTP_ADDR/readyz" collector_ready
log "collector up (pid $COLLECTOR_PID, ingest $INGEST_URL, http $HTTP_ADDR)"

AGENT_DIR1=$T/agent1
mkdir -p "$AGENT_DIR1/data"
cat >"$AGENT_DIR1/agent.yaml" <<EOF
collector: $INGEST_URL
data_dir: $AGENT_DIR1/data
flush_interval: 300ms
host: $HOST
role: app
samplers:
  host:
  tcp:
EOF
spawn agent1 "$AGENT_DIR1/agent.log" "$AGENT_BIN" --config "$AGENT_DIR1/agent.yaml"
AGENT1_PID=$ST_PID

has_points() {
    local out
    out=$(curl -fsS --max-time 5 "http://$HTTP_ADDR/v1/query?metric=$1&from=-1m") || return 1
    jq -e '(.series | length) > 0 and ([.series[].points | length] | add) >= '"$2" \
        <<<"$out" >/dev/null
}
wait_for 30 "host.mem.total with 5 points in /v1/query" has_points host.mem.total 5
wait_for 30 "tcp.out_segs with 5 points in /v1/query" has_points tcp.out_segs 5
log "agent $HOST is shipping host and tcp series"

# ---- errors -----------------------------------------------------------------------------

# Disagreements that do not stop the test: all are reported at the end.
SOFT_FAILS=()
soft_fail() {
    log "FAILED CHECK: $*"
    SOFT_FAILS+=("$*")
}

healthy() {
    local out
    out=$(curl -fsS --max-time 5 "http://$HTTP_ADDR/healthz") || return 1
    [[ $(jq -r .status <<<"$out") == ok ]]
}

# request METHOD URL: sets CODE, BODY and HEADERS (raw URL: no globbing, no
# path normalisation, so escapes reach the server as written).
request() {
    CODE=$(curl -sS -g --path-as-is --max-time 10 -X "$1" -o "$T/body.out" -D "$T/headers.out" \
        -w '%{http_code}' "http://$HTTP_ADDR$2" 2>"$T/curl.out") || CODE=000
    BODY=$(cat "$T/body.out" 2>/dev/null || true)
    HEADERS=$(tr -d '\r' <"$T/headers.out" 2>/dev/null || true)
}

# expect_error STATUS NAME METHOD URL: STATUS with a JSON {"error": "..."}
# (only that key) whose message contains NAME; /healthz still answers.
expect_error() {
    local want=$1 name=$2 method=$3 url=$4 msg short=${4:0:100}
    request "$method" "$url"
    [[ $CODE == "$want" ]] ||
        fail "$method $short: status $CODE, want $want: ${BODY:0:300} $(cat "$T/curl.out")"
    grep -qi '^content-type: application/json' <<<"$HEADERS" ||
        fail "$method $short: error answer is not application/json: $HEADERS"
    jq -e 'keys == ["error"] and (.error | type) == "string" and (.error | length) > 0' \
        <<<"$BODY" >/dev/null || fail "$method $short: body is not {\"error\": \"...\"}: ${BODY:0:300}"
    msg=$(jq -r .error <<<"$BODY")
    [[ $msg == *"$name"* ]] || fail "$method $short: error does not name $name: $msg"
    healthy || fail "/healthz does not answer after $method $short"
    log "$want for $method $short: $msg"
}

Q='/v1/query?metric=host.mem.total'
LONG=$(printf 'a%.0s' {1..5000})

expect_error 400 "'agg'" GET "$Q&agg=median"
expect_error 400 "'agg'" GET "$Q&agg="
expect_error 400 "'match'" GET "$Q&match=host%3D~%28a"
expect_error 400 "'match'" GET "$Q&match=host=~[a-"
expect_error 400 "'match'" GET "$Q&match=host"
expect_error 400 "'from'" GET "$Q&from=-1h&to=-2h"
expect_error 400 "'from'" GET "$Q&from=2024-04-05T12:00:00Z&to=2024-04-05T11:00:00Z"
expect_error 400 "'from'" GET "$Q&from=-401d"
expect_error 400 "'step'" GET "$Q&from=-3d&step=1s"
expect_error 400 "'step'" GET "$Q&step=100ms"
expect_error 400 "'top'" GET "$Q&agg=max&by=host&top=0"
expect_error 400 "'from'" GET "$Q&from=yesterday"
expect_error 400 "'to'" GET "$Q&to=2024-13-01T00:00:00Z"
expect_error 400 "'metric'" GET "/v1/query?agg=max"
expect_error 400 "'metric'" GET "/v1/query?metric="
expect_error 400 "'foo'" GET "$Q&foo=1"
expect_error 400 "'metric'" GET "/v1/query?metric=%ff"
expect_error 400 "'match'" GET "$Q&match=host%3D%c3%28"
expect_error 400 "'metric'" GET "/v1/query?metric=abc%zz"
expect_error 400 "'metric'" GET "/v1/query?metric=abc%"
expect_error 400 "'metric'" GET "/v1/query?metric=abc%4"
expect_error 400 "query string" GET "$Q&match=route%3D$LONG"
expect_error 405 "/v1/query" POST "$Q"
grep -qiE '^allow:.*\bGET\b' <<<"$HEADERS" ||
    soft_fail "405 for POST /v1/query has no Allow header naming GET (RFC 9110 15.5.6 requires one): $(tr '\n' ' ' <<<"$HEADERS")"
expect_error 405 "/healthz" POST "/healthz"
expect_error 405 "/v1/agents" DELETE "/v1/agents"
expect_error 404 "/v1/nope" GET "/v1/nope"
expect_error 404 "/v1/query/x" GET "/v1/query/x?metric=a"
expect_error 400 "'x'" GET "/healthz?x=1"
expect_error 414 "path" GET "/$(printf 'p%.0s' {1..600})"

# Past nng's own request-line limit (about 8 KiB) the server closes the
# connection without an answer; it must keep serving others.
request GET "$Q&match=route%3D$(printf 'a%.0s' {1..20000})"
log "a 20 KB query string: status $CODE (000: connection closed without an answer)"
[[ $CODE == 000 || $CODE == 4* ]] || fail "a 20 KB query string: status $CODE, want a 4xx or none"
healthy || fail "/healthz does not answer after a 20 KB query string"

# An unknown metric: 200 and no series, raw and aggregated.
for url in "/v1/query?metric=no.such.metric" "/v1/query?metric=no.such.metric&agg=max&step=1m&by=host"; do
    request GET "$url"
    assert_eq 200 "$CODE" "status of GET $url"
    assert_eq 0 "$(jq '.series | length' <<<"$BODY")" "series of GET $url"
done
log "an unknown metric: 200 with an empty series list"
assert_true "collector alive after the bad requests" proc_alive "$COLLECTOR_PID"

# ---- /metrics -----------------------------------------------------------------------------

if command -v "$PROMTOOL" >/dev/null; then
    curl -fsS --max-time 5 "http://$HTTP_ADDR/metrics" >"$T/metrics.out" || fail "GET /metrics"
    rc=0
    "$PROMTOOL" check metrics <"$T/metrics.out" >"$T/promtool.out" 2>&1 || rc=$?
    [[ $rc == 0 ]] || fail "promtool check metrics exited $rc: $(cat "$T/promtool.out")"
    log "promtool check metrics: ok ($(grep -vc '^#' "$T/metrics.out") samples)"
else
    log "NOTE: promtool not found; /metrics lint skipped"
fi
applied=$(metric strata_ingest_frames_applied_total)
assert_gt "$applied" 0 "strata_ingest_frames_applied_total"
# The engine's runs: counted, timed, and the last one's time by rule.
engine_ran() { (($(metric strata_engine_runs_total) >= 1)); }
wait_for 60 "an engine run on /metrics" engine_ran
assert_eq "$(metric strata_engine_runs_total)" "$(metric strata_engine_run_seconds_count)" \
    "engine runs counted and timed"
steps=$(metric strata_engine_step_runs_total)
assert_gt "$steps" 0 "strata_engine_step_runs_total"
(($(metric strata_engine_runs_total) >= steps)) || fail "more step runs ($steps) than runs"
ends=$(metric strata_engine_windows_end_seconds)
(($(printf '%.0f' "$ends") > $(date +%s) - 600)) ||
    fail "strata_engine_windows_end_seconds $ends is not within the last 10 minutes"
# The kept windows take the agent's points from the commits (the store's
# tap) rather than reading them back.
engine_fed() { (($(metric strata_engine_feed_blocks_total) >= 1)); }
wait_for 60 "the engine's kept windows fed by commits" engine_fed
curl -fsS --max-time 5 "http://$HTTP_ADDR/metrics" >"$T/metrics2.out"
for phase in database.seq_scan_index function.memory_leak regressions targets commit; do
    grep -q "^strata_engine_phase_seconds{phase=\"$phase\"} [0-9.]*$" "$T/metrics2.out" ||
        fail "no strata_engine_phase_seconds for $phase"
done
if command -v "$PROMTOOL" >/dev/null; then
    "$PROMTOOL" check metrics <"$T/metrics2.out" >"$T/promtool2.out" 2>&1 ||
        fail "promtool check metrics with the engine's phases: $(cat "$T/promtool2.out")"
fi
log "engine on /metrics: $(metric strata_engine_runs_total) runs"

# ---- aggregated answers against the raw points ---------------------------------------------

# A window of 20 s that ended 2 s ago, once the agent has shipped past it.
wait_for 60 "25 points of host.mem.total" has_points host.mem.total 25
TO=$(($(date +%s%3N) - 2000))
FROM=$((TO - 20000))
seen_past() {
    local s
    s=$(agent_field "$HOST" last_seen_unix_ms) || return 1
    [[ $s =~ ^[0-9]+$ ]] && ((s > TO + 2000))
}
wait_for 20 "the agent to ship past the window" seen_past

get() { curl -fsS --max-time 10 "http://$HTTP_ADDR/v1/query?$1&from=$FROM&to=$TO"; }

# compare RAW AGG AGG_NAME STEP_MS: the aggregation of RAW's points per
# bucket (buckets from FROM aligned down to the step) must equal AGG's.
compare() {
    python3 - "$1" "$2" "$3" "$4" "$FROM" "$TO" <<'EOF'
import json, sys
raw, agg, name, step, frm, to = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], \
    int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
width = step if step > 0 else to - frm
base = frm - frm % step if step > 0 else frm
buckets = {}
for s in raw["series"]:
    for t, v in s["points"]:
        if frm <= t < to:
            buckets.setdefault(base + (t - base) // width * width, []).append(v)
def value(vs):
    return {"max": max(vs), "min": min(vs), "count": len(vs), "sum": sum(vs),
            "avg": sum(vs) / len(vs), "rate": sum(vs) / (width / 1000.0)}[name]
want = {t: value(vs) for t, vs in buckets.items()}
series = agg["series"]
if len(series) != 1 or series[0]["labels"] != {"host": raw["series"][0]["labels"]["host"]}:
    sys.exit("want one series labelled by host, got %s" % json.dumps(series)[:300])
got = {t: v for t, v in series[0]["points"]}
if sorted(got) != sorted(want):
    sys.exit("buckets %s, want %s" % (sorted(got), sorted(want)))
for t in want:
    if abs(got[t] - want[t]) > 1e-9 * max(abs(want[t]), 1.0):
        sys.exit("bucket %d: %r, want %r" % (t, got[t], want[t]))
print("%d buckets, %d points" % (len(want), sum(len(v) for v in buckets.values())))
EOF
}

for m in host.mem.total host.mem.available tcp.out_segs; do
    raw=$(get "metric=$m&match=host=$HOST")
    n=$(jq '[.series[].points[]] | length' <<<"$raw")
    assert_ge "$n" 15 "raw points of $m in the 20 s window"
    case $m in
    host.mem.total) aggs="max min count avg" ;;
    host.mem.available) aggs="count avg sum" ;;
    *) aggs="sum count max min rate" ;;
    esac
    for a in $aggs; do
        for step in 0 10000; do
            s=""
            ((step > 0)) && s="&step=10s"
            agg=$(get "metric=$m&match=host=$HOST&agg=$a&by=host$s")
            out=$(compare "$raw" "$agg" "$a" "$step") ||
                fail "$m agg=$a by=host${s}: $out"
            log "$m agg=$a by=host${s:-} equals the raw points: $out"
        done
    done
done

# top=1 by host keeps the one host, with its value over the window.
raw=$(get "metric=tcp.out_segs&match=host=$HOST")
top=$(get "metric=tcp.out_segs&agg=sum&by=host&top=1")
assert_eq 1 "$(jq '.series | length' <<<"$top")" "series of top=1"
want=$(jq '[.series[].points[][1]] | add' <<<"$raw")
got=$(jq '.series[0].value' <<<"$top")
python3 -c "import sys; g, w = float(sys.argv[1]), float(sys.argv[2]); sys.exit(abs(g - w) > 1e-9 * max(w, 1))" \
    "$got" "$want" || fail "top=1 value $got, want the raw sum $want"
log "tcp.out_segs agg=sum by=host top=1: value $got equals the raw sum"

# ---- shutdown -----------------------------------------------------------------------------

kill -TERM "$AGENT1_PID"
reap "$AGENT1_PID" 30
assert_eq 0 "$ST_RC" "agent exit status after SIGTERM"
collector_stop TERM
assert_eq 0 "$ST_RC" "collector exit status after SIGTERM"
if ((${#SOFT_FAILS[@]} > 0)); then
    fail "${#SOFT_FAILS[@]} check(s) failed: $(printf '[%s] ' "${SOFT_FAILS[@]}")"
fi
pass
