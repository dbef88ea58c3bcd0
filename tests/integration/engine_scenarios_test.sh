#!/usr/bin/env bash
# The engine end to end on real problems: real servers with real load, real
# agents, a real collector with short engine windows, and what it reports in
# `strata findings --json`, GET /v1/findings and GET /v1/status.
#
#  1. database.seq_scan_index: PostgreSQL 15 with pg_stat_statements, a
#     300k-row orders table without an index on customer_id, queried in a
#     loop with varying customer ids -> ADD_INDEX whose sql is exactly
#     `CREATE INDEX CONCURRENTLY ON orders (customer_id);`, with evidence of
#     the mean time (checked against pg_stat_statements) and the sequential
#     scans. Then the loop itself: the test runs that sql, reports the
#     finding applied, the engine validates it (resolved), the index is
#     dropped again, and the finding must open again ("detected again").
#  2. infrastructure.cdn_cache: nginx proxy_cache in front of an origin,
#     four routes: /assets/:id (cached 10 min: hits), /home (cached 1 s:
#     mostly hits), /news (origin sends Cache-Control: no-cache: misses),
#     /api/products/:id (a new URL per request: misses), about 40 % hits
#     in all (scen_load.py http) -> CDN_OPTIMIZATION for cache=nginx with
#     the hit ratio of the access log, the two always-missing routes named
#     first (cache.requests{cache=nginx, result, route}), and a
#     proxy_cache_valid / proxy_cache_key configuration; the same per-route
#     picture in http.server.duration{route, cache_status}.
#  3. function.memory_leak: a python3 process named strata-leaky grows its
#     RSS by 2 MiB/s, sampled by the proc sampler. The leak rule fits
#     mem.rss over engine.leak_window (40 s here: 30 points 1 s apart), so the
#     finding comes within about a minute; the test checks the data it reads
#     (mem.rss{process=strata-leaky} rising at the process' rate), the
#     memory_peak target failing with its measured value, and the finding's
#     slope, ETA and steps (ST_SCEN_LEAK_WAIT=0 skips the finding).
#  Everywhere: every finding has evidence (series, values, threshold) and a
#  concrete implementation, findings are ordered by priority (score.total),
#  the CLI's --json equals the API, and /v1/status lists targets with
#  measured values.
#
#   ST_BIN=build ST_SRC=. bash tests/integration/engine_scenarios_test.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LOAD="$ST_LIB_DIR/scen_load.py"
LEAK_WAIT=${ST_SCEN_LEAK_WAIT:-1}
MiB=1048576
if [[ $LEAK_WAIT == 1 ]]; then
    LEAK_RATE=$((MiB * 2)) # engine.leak_window 40s: 30 points 1 s apart
    PEAK_MIB=32            # the memory_peak target, passed within a minute
else
    LEAK_RATE=$((4 * MiB))
    PEAK_MIB=64
fi
LEAK_CAP=$((768 * MiB))
# The leaking process' name, this run's own: the agent's proc sampler
# matches by name, and another run of this test on the host (a second
# checkout) must not add its process' RSS to this one's (comm: 15 bytes).
LEAKY="strata-leaky$((RANDOM % 1000))"
SEQ_THRESHOLD=0.005 # s: database.seq_scan_index (default 0.2)

NGINX_BIN=$(command -v nginx || true)
[[ -n "$NGINX_BIN" ]] || NGINX_BIN=/usr/sbin/nginx
[[ -x "$NGINX_BIN" ]] || fail "nginx is not installed (deploy/bootstrap.sh installs nginx-light)"
[[ -x "$CLI_BIN" ]] || fail "$CLI_BIN is not built"
# The interpreter itself (not a pyenv shim), so that exec -a names the process.
PYTHON=$(python3 -c 'import sys; print(sys.executable)')

read -r PG_PORT FRONT_PORT ORIGIN_PORT < <(free_ports 3)

# ---- PostgreSQL: orders without an index on customer_id -----------------------------------

pg_init "$PG_PORT"
# One plain sequential scan per statement: seq_scan counts the statements.
pg_up "shared_preload_libraries = 'pg_stat_statements'" "max_parallel_workers_per_gather = 0"
sql postgres "CREATE ROLE strata LOGIN" "GRANT pg_monitor TO strata" "CREATE DATABASE app"
sql app "CREATE EXTENSION pg_stat_statements" \
    "CREATE TABLE orders (id serial PRIMARY KEY, customer_id int, created_at timestamptz, total numeric)" \
    "INSERT INTO orders (customer_id, created_at, total)
         SELECT g % 1000, now() - g * interval '1 minute', (g % 9973) * 1.25
         FROM generate_series(1, 300000) g" \
    "VACUUM ANALYZE orders"
one_scan_ms=$(sql app "EXPLAIN (ANALYZE, FORMAT JSON) SELECT * FROM orders WHERE customer_id = 7" |
    jq '.[0]["Execution Time"]')
log "PostgreSQL up on :$PG_PORT; orders has 300000 rows; one sequential scan takes ${one_scan_ms} ms"

# ---- nginx: a caching edge in front of an origin ------------------------------------------

NG=$T/nginx
NGLOG=$NG/logs/access.log
mkdir -p "$NG"/{logs,www/assets,cache,tmp}
for i in $(seq 1 8); do echo "asset $i" >"$NG/www/assets/$i"; done
ng_user=""
[[ $(id -u) != 0 ]] || ng_user="user root;" # as root, workers would lose the temp dir
cat >"$NG/nginx.conf" <<EOF
$ng_user
worker_processes 1;
error_log $NG/logs/error.log info;
events { worker_connections 256; }
http {
    default_type text/plain;
    access_log off;
$(nginx_temp_paths "$NG/tmp")
    log_format strata '\$msec \$request_time \$status \$upstream_cache_status '
                      '\$body_bytes_sent "\$request_method" "\$uri"';
    proxy_cache_path $NG/cache keys_zone=edge:2m;

    server {                                   # the origin
        listen 127.0.0.1:$ORIGIN_PORT;
        root $NG/www;
        location = /home { return 200 "home\n"; }
        location = /news { add_header Cache-Control "no-cache" always; return 200 "news\n"; }
        location /api/products/ { return 200 "product\n"; }
    }
    server {                                   # the edge
        listen 127.0.0.1:$FRONT_PORT;
        access_log $NGLOG strata;
        add_header X-Cache-Status \$upstream_cache_status always;
        location = /nginx_status { stub_status; access_log off; }
        location = /home {
            proxy_pass http://127.0.0.1:$ORIGIN_PORT;
            proxy_cache edge;
            proxy_cache_valid 200 1s;
        }
        location / {
            proxy_pass http://127.0.0.1:$ORIGIN_PORT;
            proxy_cache edge;
            proxy_cache_valid 200 10m;
        }
    }
}
EOF
"$NGINX_BIN" -t -c "$NG/nginx.conf" -p "$NG" >"$T/nginx-t.out" 2>&1 ||
    fail "nginx -t rejects the test config: $(cat "$T/nginx-t.out")"
spawn nginx "$T/nginx.out" "$NGINX_BIN" -c "$NG/nginx.conf" -p "$NG" -g "daemon off; pid $NG/nginx.pid;"
nginx_ready() { curl -fs --max-time 2 -o /dev/null "http://127.0.0.1:$FRONT_PORT/nginx_status"; }
wait_for 20 "nginx on :$FRONT_PORT" nginx_ready
log "nginx up (edge :$FRONT_PORT, origin :$ORIGIN_PORT)"

# ---- the leaking process -------------------------------------------------------------------

spawn "$LEAKY" "$T/leaky.out" bash -c 'exec -a "$0" "$@"' "$LEAKY" "$PYTHON" "$LOAD" \
    leak "$LEAK_RATE" "$LEAK_CAP" 1500 "$LEAKY"
LEAKY_PID=$ST_PID
leaky_named() { [[ "$(tr '\0' ' ' <"/proc/$LEAKY_PID/cmdline" 2>/dev/null)" == "$LEAKY"* ]]; }
wait_for 10 "the leaking process to run as $LEAKY" leaky_named
log "$LEAKY (pid $LEAKY_PID) grows its RSS by $((LEAK_RATE / 1024)) KiB/s up to $((LEAK_CAP / MiB)) MiB"

# ---- collector and agents ------------------------------------------------------------------

# Writes (strata applied) need a token, and with one configured so do reads.
TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
export STRATA_TOKEN=$TOKEN
http() { curl -fsS --max-time 5 -H "Authorization: Bearer $TOKEN" "http://$HTTP_ADDR$1"; }
COLLECTOR_EXTRA_YAML="api:
  tokens:
    - {name: scenarios, sha256: \"$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)\", scopes: [read, write]}
engine:
  interval: 1s
  pause: 1s
  window: 30s
  baseline_window: 2m
  min_samples: 20
  max_iterations: 50
  validation_window: 30s
  improvement_margin: 0.2
  leak_window: 40s
targets:
  memory_peak: ${PEAK_MIB}MiB
rules:
  database.seq_scan_index: $SEQ_THRESHOLD"
collector_config
collector_start

# write_agent I HOST ROLE SAMPLERS_YAML: agent I with only these samplers.
write_agent() {
    agent_config "$1" "$2" "$3"
    cat >"${AGENT_DIR[$1]}/agent.yaml" <<EOF
collector: $INGEST_URL
data_dir: ${AGENT_DIR[$1]}/data
interval: 1s
flush_interval: 1s
host: $2
role: $3
log_level: info
sender:
  timeout: 2s
  backoff_min: 100ms
  backoff_max: 1s
samplers:
  host:
$4
EOF
}
write_agent 1 db-1 db "  postgres:
    dsn: \"host=127.0.0.1 port=$PG_PORT dbname=app user=strata\""
write_agent 2 edge-1 edge "  nginx:
    status_url: http://127.0.0.1:$FRONT_PORT/nginx_status
    access_log: $NGLOG"
write_agent 3 app-1 app "  proc:
    match:
      - name: $LEAKY"
for i in 1 2 3; do agent_start "$i"; done
wait_for 30 "all three agents to reach the collector" all_agents_seen 2

# ---- load ------------------------------------------------------------------------------------

spawn pg-load "$T/pg-load.out" "$PYTHON" "$LOAD" pg 10 -X -q -v ON_ERROR_STOP=1 \
    -h 127.0.0.1 -p "$PG_PORT" -U postgres -d app
PG_LOAD_PID=$ST_PID
HTTP_COUNTS=$T/http-counts.json
spawn http-load "$T/http-load.out" "$PYTHON" "$LOAD" http "http://127.0.0.1:$FRONT_PORT" 40 "$HTTP_COUNTS"
HTTP_LOAD_PID=$ST_PID
log "load running: 10 statements/s on orders, 40 requests/s through the edge"

# ---- helpers ---------------------------------------------------------------------------------

API=http://$HTTP_ADDR
cli() { "$CLI_BIN" --server "$API" "$@"; }
findings() { http /v1/findings; }
# finding_of RULE JQ_COND: the first finding of RULE whose fields satisfy JQ_COND.
finding_of() {
    findings | jq -ce --arg r "$1" "[.findings[] | select(.rule == \$r) | select($2)][0] // empty"
}
has_finding() { finding_of "$1" "$2" >/dev/null; }
# check WHAT JQ_FILTER JSON: soft-fails unless the filter is true on JSON.
check() {
    jq -e "$2" <<<"$3" >/dev/null || soft_fail "$1: not so in $(head -c 1200 <<<"$3")"
}

# ---- 1. seq scan on orders -> ADD_INDEX ------------------------------------------------------

T_LOAD=$SECONDS
wait_for 120 "a database.seq_scan_index finding on orders" \
    has_finding database.seq_scan_index '.labels.table == "orders"'
F=$(finding_of database.seq_scan_index '.labels.table == "orders"')
DB_ID=$(jq -r .id <<<"$F")
log "seq_scan_index after $((SECONDS - T_LOAD)) s of load: $(jq -r .summary <<<"$F")"
assert_eq "CREATE INDEX CONCURRENTLY ON orders (customer_id);" \
    "$(jq -r .optimization.implementation.sql <<<"$F")" "ADD_INDEX sql"
# HIGH by the rule table, one step up (CRITICAL) past twice the threshold.
check "ADD_INDEX finding fields" '.layer == "database" and .optimization.type == "ADD_INDEX"
    and .severity == (if .value > 2 * .threshold then "CRITICAL" else "HIGH" end) and .labels.table == "orders" and .labels.database == "app"
    and .labels.host == "db-1" and (.entity | contains("table=orders"))' "$F"
check "ADD_INDEX implementation" '.optimization.implementation
    | .table == "orders" and .columns == ["customer_id"] and .database == "app"
      and .statement == "SELECT * FROM orders WHERE customer_id = $1"' "$F"
check "ADD_INDEX evidence: mean time past the threshold, sequential scans" '.evidence as $e | $e.values as $v
    | $e.threshold == '"$SEQ_THRESHOLD"' and $v.mean_time_s > '"$SEQ_THRESHOLD"'
      and $v.calls > 0 and $v.seq_scan_per_s > 0 and $v.seq_tup_read_per_s > 0
      and $v.seq_scan_share == 1 and $v.idx_scan_per_s == 0
      and ($e.series | index("db.table.seq_scan") != null)
      and ($e.series | index("db.statement.time") != null)
      and $e.hosts == ["db-1"] and ($e.window | type) != "null"' "$F"
# The window's mean against the server's own (over every call so far), and
# each call is one sequential scan reading the whole table.
pg_mean=$(sql app "SELECT mean_exec_time / 1000 FROM pg_stat_statements
    WHERE query = 'SELECT * FROM orders WHERE customer_id = \$1'")
check "mean_time_s within 2x of pg_stat_statements' mean ($pg_mean s)" \
    '.evidence.values.mean_time_s as $m | $m > '"$pg_mean"' / 2 and $m < '"$pg_mean"' * 2' "$F"
check "sequential scans per statement call (~1) and rows read per scan (~300000)" \
    '.evidence.values as $v | ($v.seq_scan_per_s / ($v.calls_per_s)) as $r
    | $r > 0.7 and $r < 1.4 and ($v.seq_tup_read_per_s / $v.seq_scan_per_s) > 250000
      and ($v.seq_tup_read_per_s / $v.seq_scan_per_s) < 350000' "$F"
log "ADD_INDEX: mean $(jq .evidence.values.mean_time_s <<<"$F") s (pg_stat_statements $pg_mean s), $(jq .evidence.values.seq_scan_per_s <<<"$F") seq scans/s"

# The human view shows the statement to run.
out=$(cli finding "$DB_ID") || fail "strata finding $DB_ID failed"
assert_contains "$out" "CREATE INDEX CONCURRENTLY ON orders (customer_id);" "strata finding $DB_ID"

# ---- 2. nginx edge cache -> CDN_OPTIMIZATION -------------------------------------------------

# Past the first requests, which miss on every route (an empty cache).
NGX='.labels.cache == "nginx" and .evidence.values.requests >= 300'
wait_for 90 "an infrastructure.cdn_cache finding on nginx over 300 requests" \
    has_finding infrastructure.cdn_cache "$NGX"
F=$(finding_of infrastructure.cdn_cache "$NGX")
log "cdn_cache: $(jq -r .summary <<<"$F")"
# The hit ratio of the access log so far (every line the edge served with a cache status).
log_ratio=$(awk '$4 != "-" { n++; if ($4 == "HIT") h++ } END { printf "%.4f", n ? h / n : 0 }' "$NGLOG")
check "CDN_OPTIMIZATION finding fields" '.layer == "infrastructure" and .optimization.type == "CDN_OPTIMIZATION"
    and .severity == (if .value < .threshold / 2 then "HIGH" else "MEDIUM" end) and .labels.cache == "nginx" and .entity == "cache=nginx"' "$F"
check "cdn_cache evidence: hit ratio near the access log's ($log_ratio) and below 0.9" \
    '.evidence as $e | $e.values.hit_ratio < 0.9 and $e.threshold == 0.9
    and ($e.values.hit_ratio - '"$log_ratio"' | fabs) < 0.12 and $e.values.requests >= 20
    and $e.hosts == ["edge-1"] and ($e.series | index("cache.requests") != null)
    and (.value - $e.values.hit_ratio | fabs) < 1e-9' "$F"
check "cdn_cache implementation: nginx proxy_cache_valid and proxy_cache_key" \
    '.optimization.implementation | .cache == "nginx"
    and (.config | test("proxy_cache_valid [0-9 ]+[0-9]+[smhd];"))
    and (.config | test("proxy_cache_key [^;]+;"))' "$F"
# The worst routes: the two that always miss, then the cached ones.
check "worst routes: /api/products/:id and /news first (0 % hit), /assets/:id and /home after" \
    '.optimization.implementation.routes as $r
    | ([$r[:2][].route] | sort) == ["/api/products/:id", "/news"]
      and all($r[:2][]; .hit_ratio == 0 and .requests > 0 and .traffic_share > 0.2)
      and ([$r[2:][].route] | sort) == ["/assets/:id", "/home"]
      and all($r[2:][]; .hit_ratio > 0.4)
      and ($r == .evidence.values.routes) and (.summary | contains("worst routes: "))' "$F"
# The per-route cache figures the collector does hold (http.server.duration
# {route, cache_status}): what a rule could rank routes by.
by_route=$(curl -fsS --max-time 10 -H "Authorization: Bearer $TOKEN" -G "$API/v1/query" --data-urlencode metric=http.server.duration \
    --data-urlencode agg=count --data-urlencode by=route,cache_status \
    --data-urlencode match=host=edge-1 --data-urlencode from=-1m --data-urlencode to=now |
    jq -c '[.series[] | {route: .labels.route, cache: .labels.cache_status, n: .points[0][1]}]')
check "http.server.duration by route and cache_status: /assets/:id hit, /news and /api/products/:id only miss" \
    '(map(select(.route == "/assets/:id" and .cache == "hit")) | .[0].n > 0)
    and (map(select(.route == "/news" or .route == "/api/products/:id")) | length > 0
         and all(.cache == "miss"))
    and (map(select(.route == "/home" and .cache == "hit")) | .[0].n > 0)' "$by_route"
log "per route (last minute): $by_route"

# ---- 3. leaking process -> data for function.memory_leak ------------------------------------

# slope_of JSON: least-squares slope (bytes/s) of the points of its first series.
slope_of() {
    python3 -c 'import json, sys
pts = json.load(sys.stdin)["series"][0]["points"]
t = [p[0] / 1000 for p in pts]; v = [p[1] for p in pts]; n = len(t)
mt = sum(t) / n; mv = sum(v) / n
sxx = sum((x - mt) ** 2 for x in t)
print("%.0f %d %.0f" % (sum((x - mt) * (y - mv) for x, y in zip(t, v)) / sxx if sxx else 0, n, v[-1]))' <<<"$1"
}
rss_points() {
    curl -fsS --max-time 10 -H "Authorization: Bearer $TOKEN" -G "$API/v1/query" --data-urlencode metric=mem.rss \
        --data-urlencode match=host=app-1 --data-urlencode match=process=$LEAKY \
        --data-urlencode from=-40s --data-urlencode to=now
}
enough_rss() { rss_points | jq -e '.series[0].points | length >= 15' >/dev/null; }
wait_for 60 "15 points of mem.rss{process=$LEAKY}" enough_rss
read -r rss_slope rss_n rss_last < <(slope_of "$(rss_points)")
log "mem.rss{process=$LEAKY}: $rss_n points, slope $((rss_slope / 1024)) KiB/s, now $((rss_last / MiB)) MiB"
((rss_slope > LEAK_RATE / 2 && rss_slope < LEAK_RATE * 3 / 2)) ||
    soft_fail "mem.rss slope of $LEAKY: $rss_slope B/s, the process grows by $LEAK_RATE B/s"

# ---- status and targets ---------------------------------------------------------------------

has_peak_value() {
    http /v1/status | jq -e '.targets[] | select(.name == "memory_peak" and .scope == "fleet")
        | .value > '"$PEAK_MIB"' * 1048576' >/dev/null
}
wait_for 60 "the memory_peak target to measure $LEAKY past $PEAK_MIB MiB" has_peak_value
S=$(http /v1/status)
check "/v1/status: loop state" '(.status | IN("OPTIMIZING", "MAX_ITERATIONS_REACHED"))
    and (.iteration | type) == "number" and .max_iterations == 50' "$S"
check "/v1/status: memory_peak measured and missed" \
    '.targets[] | select(.name == "memory_peak" and .scope == "fleet")
    | .target == '"$PEAK_MIB"' * 1048576 and .value > .target and .met == false and .unit == "B"' "$S"
check "/v1/status: response_time_p95, throughput and cpu measured" \
    '[.targets[] | select(.scope == "fleet" and (.name | IN("response_time_p95", "throughput", "cpu"))
      and (.value | type) == "number")] | length == 3' "$S"
check "/v1/status: throughput below 1000 rps is not met; role=edge measured" \
    '(.targets[] | select(.name == "throughput" and .scope == "fleet") | .met == false and .value > 10)
    and ([.targets[] | select(.scope == "role=edge" and .name == "response_time_p95")] | length == 1)' "$S"
check "/v1/status: every target row has name, target, value, met" \
    '(.targets | length) >= 8 and all(.targets[]; has("name") and has("target") and has("value")
      and (.met | type) == "boolean")' "$S"
# window 30s: step 6 s, settle 3 s; the last run ended a second or two ago
NOW_MS=$(($(date +%s%3N)))
check "/v1/status: windows end on a 6 s step, 3-9 s behind the last run" \
    '.windows_end_unix_ms % 6000 == 0 and .windows_end_unix_ms <= '"$NOW_MS"' - 3000
    and .windows_end_unix_ms >= '"$NOW_MS"' - 9000 - 10000' "$S"
cli_text=$(cli status) || fail "strata status failed"
assert_contains "$cli_text" "data to:" "strata status names the end of the judged windows"
cli_status=$(cli --json status) || fail "strata --json status failed"
check "strata --json status carries the same targets" \
    '[.targets[].name] | length >= 8' "$cli_status"
log "status: $(jq -c '{status, iteration, targets: [.targets[] | select(.value != null) | "\(.name)[\(.scope)]=\(.value) met=\(.met)"]}' <<<"$S")"

# ---- every finding: evidence, implementation, order ----------------------------------------

FJ=$(cli --json findings) || fail "strata --json findings failed"
AJ=$(findings)
check "strata --json findings lists what GET /v1/findings does" \
    '[.findings[].id] | sort == '"$(jq -c '[.findings[].id] | sort' <<<"$AJ")" "$FJ"
check "every finding has evidence (series, values, threshold) and a concrete implementation" \
    'all(.findings[]; (.evidence.series | length) > 0 and (.evidence.values | type) == "object"
      and (.evidence | has("threshold")) and (.optimization.type | length) > 0
      and (.optimization.implementation | type) == "object"
      and ([.optimization.implementation[] | strings | select(length > 0)] | length) > 0
      and (.summary | length) > 0 and (.priority | type) == "number"
      and .score.total == .priority)' "$FJ"
check "findings ordered by priority, highest first" \
    '[.findings[].priority] as $p | $p == ($p | sort | reverse)' "$FJ"
for id in $(jq -r '.findings[] | select(.rule | IN("database.seq_scan_index", "infrastructure.cdn_cache")) | .id' <<<"$AJ"); do
    check "finding $id handed on by the loop (no automation configured): open -> dispatched" \
        '.status == "dispatched" and ([.history[].to] | .[0:2] == ["open", "dispatched"])' \
        "$(http "/v1/findings/$id")"
done
human=$(cli findings) || fail "strata findings failed"
assert_contains "$human" "database.seq_scan_index" "strata findings (table)"
assert_contains "$human" "infrastructure.cdn_cache" "strata findings (table)"
log "findings: $(jq -c '[.findings[] | "\(.rule) \(.entity) p=\(.priority) \(.status)"]' <<<"$FJ")"

# ---- 1b. the loop: apply the fix, validate, roll it back --------------------------------------

FIX=$(finding_of database.seq_scan_index ".id == \"$DB_ID\"" | jq -r .optimization.implementation.sql)
sql app "$FIX"
assert_eq 1 "$(sql app "SELECT count(*) FROM pg_indexes WHERE tablename = 'orders' AND indexdef LIKE '%(customer_id)'")" \
    "indexes on orders (customer_id) after running the finding's sql"
plan=$(sql app "EXPLAIN SELECT * FROM orders WHERE customer_id = 7")
assert_contains "$plan" "orders_customer_id_idx" "plan of the statement after the fix"
out=$(cli applied "$DB_ID") || fail "strata applied $DB_ID failed: $out"
status_is() { [[ "$(http "/v1/findings/$1" | jq -r .status)" == "$2" ]]; }
verdict_in() { http "/v1/findings/$1" | jq -e '.status | IN("resolved", "ineffective")' >/dev/null; }
wait_for 20 "$DB_ID to be validating" status_is "$DB_ID" validating
T_APPLIED=$SECONDS
wait_for 90 "the verdict on $DB_ID" verdict_in "$DB_ID"
F=$(http "/v1/findings/$DB_ID")
log "verdict after $((SECONDS - T_APPLIED)) s: $(jq -c .validation <<<"$F")"
check "the index fixed the statement: resolved" '.status == "resolved"
    and .validation.verdict == "resolved" and .validation.before > '"$SEQ_THRESHOLD"'
    and (.validation.after == null or .validation.after < .validation.before * 0.8)
    and ([.history[].to] | index("applied") != null and index("validating") != null)' "$F"
# Mean time per call now: index scans.
fast() { [[ $(sql app "SELECT idx_scan > 100 FROM pg_stat_user_tables WHERE relname = 'orders'") == t ]]; }
wait_for 30 "index scans on orders" fast

# Rolling the fix back brings the problem back, and the engine must see it.
sql app "DROP INDEX CONCURRENTLY orders_customer_id_idx"
log "index dropped again: the statement scans sequentially once more"
reopened() {
    http "/v1/findings/$DB_ID" | jq -e '.status | IN("open", "dispatched")' >/dev/null
}
deadline=$((SECONDS + 60))
until reopened; do
    check_alive
    if ((SECONDS >= deadline)); then
        soft_fail "$DB_ID was not detected again within 60 s of dropping the index (status $(http "/v1/findings/$DB_ID" | jq -r .status)). The validation (measure_again in collector/engine/engine.c) resets the rule's threshold to its default (st_eng_set(..., r->threshold)) instead of the configured rules: value $SEQ_THRESHOLD; the ~$(jq -n "$pg_mean * 1000 | round") ms statement is under the default 0.2 s"
        break
    fi
    sleep 0.5
done
if reopened; then
    check "the finding history says detected again" \
        '[.history[] | select(.to == "open")] | .[-1].note == "detected again"' "$(http "/v1/findings/$DB_ID")"
    log "$DB_ID detected again after the rollback"
fi

# ---- 3b. (ST_SCEN_LEAK_WAIT=1) the memory_leak finding itself ----------------------------------

if [[ $LEAK_WAIT == 1 ]]; then
    kill -TERM "$PG_LOAD_PID" "$HTTP_LOAD_PID"
    reap "$PG_LOAD_PID" 20
    reap "$HTTP_LOAD_PID" 20
    log "waiting for function.memory_leak (engine.leak_window 40s of mem.rss are needed)"
    wait_for 120 "a function.memory_leak finding on $LEAKY" \
        has_finding function.memory_leak '.labels.process == "'"$LEAKY"'"'
    F=$(finding_of function.memory_leak '.labels.process == "'"$LEAKY"'"')
    log "memory_leak: $(jq -r .summary <<<"$F")"
    per_h=$((LEAK_RATE * 3600))
    check "memory_leak finding: MEMORY_LEAK_FIX naming $LEAKY on app-1" \
        '.layer == "function" and .optimization.type == "MEMORY_LEAK_FIX"
        and .labels.host == "app-1" and (.summary | contains("'"$LEAKY"'"))' "$F"
    check "memory_leak implementation: slope near $per_h B/h, ETA, steps" \
        '.optimization.implementation | .process == "'"$LEAKY"'" and .host == "app-1"
        and .slope_bytes_per_hour > '"$per_h"' * 0.6 and .slope_bytes_per_hour < '"$per_h"' * 1.4
        and (.eta_hours | type) == "number" and (.steps | length) >= 2
        and (.steps[0] | contains("pidof '"$LEAKY"'")) and (.mitigation | contains("MemoryMax"))' "$F"
    check "memory_leak evidence: R² and the RSS past the $PEAK_MIB MiB peak (ETA 0, CRITICAL)" \
        '.evidence.values | .r2 > 0.9 and .rss_bytes > '"$PEAK_MIB"' * 1048576 and .eta_hours == 0
        and .memory_peak_bytes == '"$PEAK_MIB"' * 1048576' "$F"
    check "memory_leak severity" '.severity == "CRITICAL"' "$F"
else
    if has_finding function.memory_leak '.labels.process == "'"$LEAKY"'"'; then
        log "function.memory_leak appeared already: $(finding_of function.memory_leak '.labels.process == "'"$LEAKY"'"' | jq -r .summary)"
    else
        log "NOTE: no function.memory_leak yet, as expected: the rule needs 10 points of 60 s (LEAK_STEP_MS, ST_LEAK_MIN_POINTS) over leak_window_ms, which collector.yaml cannot set; ST_SCEN_LEAK_WAIT=1 waits for it"
    fi
fi

# ---- the load clients ran cleanly -----------------------------------------------------------

if [[ -n "${ST_PIDS[$HTTP_LOAD_PID]:-}" ]]; then
    kill -TERM "$PG_LOAD_PID" "$HTTP_LOAD_PID"
    reap "$PG_LOAD_PID" 20
    assert_eq 0 "$ST_RC" "pg load client exit status (psql errors: $(tail -n 3 "$T/pg-load.out"))"
    reap "$HTTP_LOAD_PID" 20
fi
log "edge requests by route and X-Cache-Status: $(jq -c . "$HTTP_COUNTS")"
check "the edge answered every request" '[.[] | keys[] | select(startswith("error") or startswith("HTTP"))] | length == 0' \
    "$(cat "$HTTP_COUNTS")"
pass
