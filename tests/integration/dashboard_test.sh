#!/usr/bin/env bash
# The dashboard in a real browser: a collector with an API token, one agent
# (host, tcp, proc, statsd and probe samplers, flushing every 500 ms) and a
# StatsD feed of slow requests and missing API-cache lookups, so the engine
# reports unmet targets and real findings (infrastructure.api_cache,
# realtime.stability). The embedded files are served without a token, with
# their Content-Type and cache headers, and unknown assets are 404. Then
# dashboard_test.mjs drives headless Chromium through playwright-core: the
# page asks for the token, takes it, and shows the agent, the loop status
# and every target, the ranked findings with their evidence, and four uPlot
# charts that follow the range selector. The screenshot is kept as
# $ST_BIN/dashboard.png.
#
# Needs chromium (deploy/bootstrap.sh installs it), Node.js and npm; the
# first run installs playwright-core (pinned below) under
# $ST_BIN/dashboard-test, later runs reuse it. Never `npx playwright install`:
# the browser is Debian's.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PLAYWRIGHT_VERSION=1.65.1
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
HOST=dash-app-1
PW_DIR=$ST_BIN/dashboard-test

[[ -x "$CHROMIUM" ]] || skip "chromium is not installed (deploy/bootstrap.sh installs it)"
for tool in node npm openssl; do
    command -v "$tool" >/dev/null || fail "$tool is required"
done

# ---- playwright-core, cached under the build directory ----

pw_installed() {
    [[ -f "$PW_DIR/node_modules/playwright-core/package.json" ]] &&
        [[ $(jq -r .version "$PW_DIR/node_modules/playwright-core/package.json") == "$PLAYWRIGHT_VERSION" ]]
}
if ! pw_installed; then
    log "installing playwright-core $PLAYWRIGHT_VERSION into $PW_DIR"
    mkdir -p "$PW_DIR"
    [[ -f "$PW_DIR/package.json" ]] || echo '{"private": true}' >"$PW_DIR/package.json"
    # playwright-core has no install script and downloads no browser.
    (cd "$PW_DIR" && npm install --no-audit --no-fund --ignore-scripts --save-exact \
        "playwright-core@$PLAYWRIGHT_VERSION") >"$T/npm.out" 2>&1 ||
        fail "npm could not install playwright-core $PLAYWRIGHT_VERSION (is the npm registry reachable?): $(tail -n 5 "$T/npm.out")"
fi

# ---- a collector that needs a token, with an engine that decides quickly ----

TOKEN=$(openssl rand -hex 24)
TOKEN_SHA=$(printf '%s' "$TOKEN" | sha256sum | cut -d' ' -f1)
read -r STATSD_PORT CLOSED_PORT < <(free_ports 2)
COLLECTOR_EXTRA_YAML="api:
  tokens:
    - {name: dashboard, sha256: \"$TOKEN_SHA\", scopes: [read]}
engine:
  interval: 1s
  pause: 500ms
  window: 2m
  min_samples: 10
targets:
  response_time_p95: 300ms"
collector_start

# auth_get PATH: the API with the token.
auth_get() {
    curl -fsS --max-time 5 -H "Authorization: Bearer $TOKEN" "http://$HTTP_ADDR$1"
}

# ---- one agent: host, tcp and proc samplers, and statsd and probe ----

AGENT_FLUSH=500ms
agent_config 0 "$HOST" app
# Continues the agent's samplers: mapping.
cat >>"${AGENT_DIR[0]}/agent.yaml" <<EOF
  statsd:
    listen: 127.0.0.1:$STATSD_PORT
  probe:
    timeout: 300ms
    targets:
      - {name: collector-http, address: $HTTP_ADDR}
      - {name: closed-port, address: 127.0.0.1:$CLOSED_PORT}
EOF
agent_start 0

# A StatsD feed: request latencies of 50..950 ms (p95 over the 300 ms
# target) and API-cache lookups that hit one time in five (under 0.5).
cat >"$T/feed.py" <<'PY'
import random, socket, sys, time
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
rng = random.Random(7)
routes = ["/api/cart", "/api/products", "/api/search"]
while True:
    lines = []
    for _ in range(20):
        route = rng.choice(routes)
        lines.append("http.server.duration:%d|ms|#route:%s,status_class:2xx" % (rng.randint(50, 950), route))
        result = "hit" if rng.random() < 0.2 else "miss"
        lines.append("cache.requests:1|c|#cache:api,result:%s,route:%s" % (result, route))
    s.sendto("\n".join(lines).encode(), ("127.0.0.1", port))
    time.sleep(0.2)
PY
spawn statsd-feed "$T/feed.out" python3 "$T/feed.py" "$STATSD_PORT"

agent_seen() {
    local s
    s=$(auth_get /v1/agents | jq -r --arg h "$HOST" '.agents[] | select(.host == $h) | .seq') &&
        [[ "$s" =~ ^[0-9]+$ ]] && ((s >= 2))
}
wait_for 30 "agent $HOST in /v1/agents" agent_seen

# Three 10 s buckets of every charted series, so the 15m chart draws lines.
has_points() {
    auth_get "/v1/query?metric=$1&agg=$2&from=-15m&step=10s" |
        jq -e '[.series[].points[] | select(.[1] != null) | .[0]] | unique | length >= 3' >/dev/null
}
for m in "http.server.duration p95" "cache.requests sum" "mem.rss max" "net.probe.connects sum"; do
    read -r metric agg <<<"$m"
    wait_for 60 "three 10 s buckets of $metric in /v1/query" has_points "$metric" "$agg"
done

has_finding() {
    auth_get "/v1/findings" | jq -e --arg r "$1" 'any(.findings[]; .rule == $r)' >/dev/null
}
wait_for 60 "an infrastructure.api_cache finding" has_finding infrastructure.api_cache
wait_for 60 "a realtime.stability finding" has_finding realtime.stability
log "findings: $(auth_get /v1/findings | jq -c '[.findings[] | {rule, entity, priority}]')"

# ---- the embedded files over plain HTTP, without a token ----

# header NAME: a header of the last fetch (NAME in lower case).
header() { tr -d '\r' <"$T/http-headers" | awk -F': ' -v h="$1" 'tolower($1) == h { print $2 }'; }

# fetch PATH [CURL_ARGS...]: sets CODE, TYPE, CACHE, ETAG and BODY.
fetch() {
    local p=$1
    shift
    CODE=$(curl -sS --path-as-is --max-time 5 -o "$T/http-body" -D "$T/http-headers" \
        -w '%{http_code}' "$@" "http://$HTTP_ADDR$p") || CODE=000
    TYPE=$(header content-type)
    CACHE=$(header cache-control)
    ETAG=$(header etag)
    BODY=$(cat "$T/http-body")
}

fetch /
assert_eq 200 "$CODE" "GET / without a token"
assert_contains "$TYPE" "text/html" "GET / Content-Type"
assert_contains "$BODY" "<title>Strata" "GET / body"
JS=$(grep -o '/assets/app-[A-Z0-9]*\.js' "$T/http-body" | head -n 1)
CSS=$(grep -o '/assets/style-[A-Z0-9]*\.css' "$T/http-body" | head -n 1)
[[ -n "$JS" && -n "$CSS" ]] || fail "index.html does not name content-hashed bundles: $BODY"
fetch "$JS"
assert_eq 200 "$CODE" "GET $JS"
assert_contains "$TYPE" "text/javascript" "$JS Content-Type"
assert_contains "$BODY" "uPlot" "$JS bundles uPlot"
fetch "$CSS"
assert_eq 200 "$CODE" "GET $CSS"
assert_contains "$TYPE" "text/css" "$CSS Content-Type"
assert_contains "$BODY" ".uplot" "$CSS bundles uPlot's styles"
# Bundles have content-hashed names: cacheable for good; index.html is
# revalidated. Until collector/api/http.c passes a handler's Cache-Control
# and ETag on (it answers no-store to everything), that is only reported.
fetch "$JS"
if [[ "$CACHE" == no-store ]]; then
    log "NOTE: the HTTP layer sends Cache-Control: no-store for the bundles too"
else
    assert_contains "$CACHE" "immutable" "$JS Cache-Control"
    [[ -n "$ETAG" ]] || fail "$JS has no ETag"
    fetch "$JS" -H "If-None-Match: $ETAG"
    assert_eq 304 "$CODE" "GET $JS with If-None-Match: $ETAG"
    fetch /
    assert_eq no-cache "$CACHE" "index.html Cache-Control"
    log "Cache-Control: bundles immutable, index.html no-cache; ETag $ETAG answers 304"
fi
for p in /assets/nope.js /assets/ /assets "/assets/app.js" "/assets/../index.html"; do
    fetch "$p"
    assert_eq 404 "$CODE" "GET $p"
done
fetch /v1/status
assert_eq 401 "$CODE" "GET /v1/status without a token"

# ---- the browser ----

log "driving chromium $("$CHROMIUM" --version 2>/dev/null | awk '{print $2}') with playwright-core $PLAYWRIGHT_VERSION"
DASH_URL="http://$HTTP_ADDR/" DASH_TOKEN=$TOKEN DASH_HOST=$HOST CHROMIUM=$CHROMIUM \
    DASH_FINDINGS="infrastructure.api_cache,realtime.stability" \
    DASH_SCREENSHOT=$ST_BIN/dashboard.png DASH_PROFILE=$T/chromium-profile PW_DIR=$PW_DIR \
    node "$ST_LIB_DIR/dashboard_test.mjs" >"$T/browser.out" 2>&1 || {
    cat "$T/browser.out"
    fail "the dashboard check in chromium failed"
}
sed 's/^/    /' "$T/browser.out"
check_alive
pass
