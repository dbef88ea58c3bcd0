#!/usr/bin/env bash
# RUM beacons end to end: an agent with the rum sampler on a free port,
# shipping to a real collector. Good beacons (application/json and
# text/plain, single objects and arrays) answer 204; an oversize body 413,
# bad JSON and a missing field 400 with a JSON error naming the problem; a
# preflight from a disallowed origin gets no Access-Control-Allow-Origin, an
# allowed one does. Then a concurrent burst of good and bad beacons: the
# collector holds exactly every LCP sample and browser cache hit and miss of
# the good ones, and every rejection counted by reason.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ORIGIN=https://shop.example.com

# ---- helpers of this test ----

# beacon CONTENT_TYPE BODY [curl args...]: POSTs BODY; prints the status,
# the response headers go to $T/last.headers and the body to $T/last.body.
beacon() {
    local ct=$1 body=$2
    shift 2
    curl -sS --max-time 10 -o "$T/last.body" -D "$T/last.headers" -w '%{http_code}' \
        -H 'Expect:' -H "Content-Type: $ct" --data-binary "$body" "$@" "$RUM_URL"
}

agg_query() {
    local m=$1 agg=$2
    shift 2
    curl -fsS --max-time 10 -G "http://$HTTP_ADDR/v1/query" --data-urlencode "metric=$m" \
        --data-urlencode "agg=$agg" --data-urlencode "from=-10m" --data-urlencode "to=now" \
        --data-urlencode "match=host=rum-1" "$@"
}

# value METRIC AGG [match...]: the one aggregated value ("" when there is none).
value() {
    local out
    out=$(agg_query "$@") || return 1
    jq -r 'if (.series | length) == 1 then ([.series[0].points[][1] | select(. != null)] | add)
           else "" end' <<<"$out"
}

# value_is WANT METRIC AGG [match...]
value_is() {
    local want=$1 v
    shift
    v=$(value "$@") || return 1
    [[ -n "$v" && "$v" != null ]] && awk -v a="$v" -v b="$want" 'BEGIN { exit !(a == b) }'
}

listening() { grep -q "rum: listening on http://127.0.0.1:$RUM_PORT/rum" "${AGENT_DIR[1]}/agent.log"; }

# ---- start ----

collector_start
read -r RUM_PORT < <(free_ports 1)
RUM_URL=http://127.0.0.1:$RUM_PORT/rum
agent_config 1 rum-1 edge
cat >"${AGENT_DIR[1]}/agent.yaml" <<EOF
collector: $INGEST_URL
data_dir: ${AGENT_DIR[1]}/data
interval: 500ms
flush_interval: 500ms
host: rum-1
role: edge
log_level: info
sender:
  timeout: 2s
  backoff_min: 100ms
  backoff_max: 1s
samplers:
  rum:
    listen: 127.0.0.1:$RUM_PORT
    allowed_origins: [$ORIGIN, https://www.example.com]
EOF
agent_start 1
wait_for 20 "the rum endpoint on $RUM_URL" listening

# ---- good beacons ----

st=$(beacon application/json '{"name":"LCP","value":2100,"id":"v3-1","page":"/product/123?ref=mail"}')
assert_eq 204 "$st" "single LCP beacon as application/json"
st=$(beacon 'text/plain;charset=UTF-8' '[{"name":"LCP","value":1800,"id":"v3-2","page":"/product/456"},
  {"name":"FCP","value":900,"id":"v3-3","page":"/"},{"name":"CLS","value":0.05,"id":"v3-4","page":"/"},
  {"type":"resource","name":"https://cdn.example.com/app.js","transferSize":0,"encodedBodySize":52000},
  {"type":"resource","name":"https://cdn.example.com/app.css","transferSize":12000,"encodedBodySize":11500}]')
assert_eq 204 "$st" "array beacon as text/plain (sendBeacon's default)"
st=$(beacon application/json '[{"name":"LCP","value":3000,"page":"https://shop.example.com/"}]' \
    -H "Origin: $ORIGIN")
assert_eq 204 "$st" "beacon from an allowed origin"
assert_contains "$(cat "$T/last.headers")" "Access-Control-Allow-Origin: $ORIGIN" \
    "ACAO on a POST from an allowed origin"

# ---- rejected beacons ----

head -c 70000 /dev/zero | tr '\0' ' ' >"$T/big.json"
st=$(curl -sS --max-time 10 -o "$T/last.body" -w '%{http_code}' -H 'Expect:' \
    -H 'Content-Type: application/json' --data-binary "@$T/big.json" "$RUM_URL")
assert_eq 413 "$st" "a 70000-byte body (max_body 64 KiB)"
assert_contains "$(cat "$T/last.body")" '"error"' "413 body"
st=$(beacon application/json '{"name":"LCP","value":')
assert_eq 400 "$st" "bad JSON"
assert_eq "bad JSON" "$(jq -r '.error[0:8]' "$T/last.body")" "error of a bad JSON beacon"
st=$(beacon application/json '{"name":"LCP","page":"/"}')
assert_eq 400 "$st" "a beacon without value"
assert_eq "missing 'value'" "$(jq -r .error "$T/last.body")" "error of a beacon without value"
st=$(beacon application/json '{"name":"LCP","value":1,"page":"/"}' -H 'Origin: https://evil.example')
assert_eq 403 "$st" "a POST from a disallowed origin"

# ---- CORS preflights ----

curl -sS --max-time 10 -o /dev/null -D "$T/pre.bad" -X OPTIONS -H 'Origin: https://evil.example' \
    -H 'Access-Control-Request-Method: POST' -H 'Access-Control-Request-Headers: content-type' "$RUM_URL"
if grep -qi '^access-control-allow-origin' "$T/pre.bad"; then
    fail "preflight from a disallowed origin got an ACAO header: $(cat "$T/pre.bad")"
fi
curl -sS --max-time 10 -o /dev/null -D "$T/pre.good" -X OPTIONS -H "Origin: $ORIGIN" \
    -H 'Access-Control-Request-Method: POST' -H 'Access-Control-Request-Headers: content-type' "$RUM_URL"
pre=$(tr -d '\r' <"$T/pre.good")
assert_contains "$pre" "HTTP/1.1 204" "preflight status for an allowed origin"
assert_contains "$pre" "Access-Control-Allow-Origin: $ORIGIN" "preflight ACAO"
assert_contains "$pre" "Access-Control-Allow-Methods: POST" "preflight methods"
assert_contains "$pre" "Access-Control-Allow-Headers: Content-Type" "preflight headers"
log "single and array beacons 204; 413, 400 (bad JSON, missing value), 403; CORS preflights"

# ---- a concurrent burst: 60 good beacons, 30 bad ones ----

mkdir -p "$T/burst"
for i in $(seq 1 60); do
    printf '[{"name":"LCP","value":%d,"page":"/burst/%d"},
{"type":"resource","name":"https://cdn.example.com/%d.js","transferSize":0,"decodedBodySize":900},
{"type":"resource","name":"https://cdn.example.com/%d.png","transferSize":4000,"encodedBodySize":3800},
{"type":"resource","name":"https://cdn.example.com/%d.css","transferSize":0,"encodedBodySize":100}]' \
        $((1000 + i)) "$i" "$i" "$i" "$i" >"$T/burst/good$i.json"
done
for i in $(seq 1 10); do
    echo '{"name":"LCP","value":1,"page":' >"$T/burst/bad-json$i.json"
    echo '[{"name":"LCP","value":1,"page":"/"},{"name":"LCP","value":-5,"page":"/"}]' \
        >"$T/burst/bad-field$i.json"
    cp "$T/big.json" "$T/burst/bad-big$i.json"
done
find "$T/burst" -name '*.json' | shuf | xargs -P 8 -I{} curl -sS --max-time 20 -o /dev/null \
    -w '{} %{http_code}\n' -H 'Expect:' -H 'Content-Type: text/plain' --data-binary @{} "$RUM_URL" \
    >"$T/burst.out"
good=$(grep -c '/good[0-9]*.json 204$' "$T/burst.out" || true)
assert_eq 60 "$good" "good burst beacons answered 204"
assert_eq 10 "$(grep -c '/bad-json[0-9]*.json 400$' "$T/burst.out" || true)" "bad JSON answered 400"
assert_eq 10 "$(grep -c '/bad-field[0-9]*.json 400$' "$T/burst.out" || true)" "bad field answered 400"
assert_eq 10 "$(grep -c '/bad-big[0-9]*.json 413$' "$T/burst.out" || true)" "oversize answered 413"
log "burst: 60 good and 30 bad beacons sent, 8 at a time"

# Every accepted sample arrives, exactly: LCP 3 + 60; browser cache hits
# 1 + 120, misses 1 + 60; beacons 3 + 60.
wait_for 30 "63 LCP samples at the collector" value_is 63 web.vitals.lcp count
wait_for 30 "121 browser cache hits" value_is 121 cache.requests sum \
    --data-urlencode "match=cache=browser" --data-urlencode "match=result=hit"
wait_for 30 "61 browser cache misses" value_is 61 cache.requests sum \
    --data-urlencode "match=cache=browser" --data-urlencode "match=result=miss"
wait_for 30 "63 accepted beacons" value_is 63 rum.beacons sum
wait_for 30 "11 bad JSON rejections" value_is 11 rum.rejected sum --data-urlencode "match=reason=json"
wait_for 30 "11 invalid rejections" value_is 11 rum.rejected sum --data-urlencode "match=reason=invalid"
wait_for 30 "11 oversize rejections" value_is 11 rum.rejected sum \
    --data-urlencode "match=reason=too_large"
wait_for 30 "1 origin rejection" value_is 1 rum.rejected sum --data-urlencode "match=reason=origin"
assert_true "60 LCP samples on page /burst/:id" value_is 60 web.vitals.lcp count \
    --data-urlencode "match=page=/burst/:id"
assert_true "2 LCP samples on page /product/:id" value_is 2 web.vitals.lcp count \
    --data-urlencode "match=page=/product/:id"
assert_true "FCP of / is 0.9 s" value_is 0.9 web.vitals.fcp max --data-urlencode "match=page=/"
assert_true "CLS of / is 0.05" value_is 0.05 web.vitals.cls max --data-urlencode "match=page=/"
assert_true "the worst burst LCP is 1.06 s" value_is 1.06 web.vitals.lcp max \
    --data-urlencode "match=page=/burst/:id"
out=$(agg_query web.vitals.lcp count)
assert_eq s "$(jq -r .unit <<<"$out")" "unit of web.vitals.lcp"
assert_eq distribution "$(jq -r .kind <<<"$out")" "kind of web.vitals.lcp"
log "collector: 63 LCP samples, 121 hits / 61 misses, 63 beacons, rejections by reason — exact"

drain_agents
assert_no_loss 1
collector_stop TERM
assert_eq 0 "$ST_RC" "collector exit status after SIGTERM"
pass
