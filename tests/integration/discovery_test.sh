#!/usr/bin/env bash
# Discovery against the real servers: nginx (stub_status), varnishd, redis,
# memcached and PostgreSQL are started on free loopback ports; an agent whose
# only sampler configuration is `discover: true` (plus where to look, since
# the test cannot take the servers' usual ports) finds every one of them and
# their cache-hit, request and database series reach the collector.
source "$(dirname "$0")/lib.sh"

for tool in nginx varnishd redis-server memcached pg_isready; do
    command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] || fail "$tool is not installed"
done
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
read -r NG_PORT VA_PORT OR_PORT RE_PORT MC_PORT PG_PORT < <(free_ports 6)

# ---- servers ----

mkdir -p "$T/ng/logs" "$T/www" "$T/va"
echo hello >"$T/www/index.html"
cat >"$T/ng/nginx.conf" <<EOF
daemon off;
user root;
pid $T/ng/nginx.pid;
error_log $T/ng/error.log;
events { worker_connections 64; }
http {
    access_log off;
$(nginx_temp_paths "$T/ng")
    server {
        listen 127.0.0.1:$NG_PORT;
        location = /nginx_status { stub_status; }
        location / { root $T/www; }
    }
    server {
        listen 127.0.0.1:$OR_PORT;
        location / { root $T/www; add_header Cache-Control "max-age=600"; }
    }
}
EOF
spawn nginx "$T/nginx.out" "$(command -v nginx || echo /usr/sbin/nginx)" -c "$T/ng/nginx.conf" \
    -p "$T/ng"
spawn varnishd "$T/varnishd.out" varnishd -F -n "$T/va" -j none -a "127.0.0.1:$VA_PORT" \
    -b "127.0.0.1:$OR_PORT" -s malloc,16m
spawn redis "$T/redis.out" redis-server --port "$RE_PORT" --bind 127.0.0.1 --save "" \
    --appendonly no --dir "$T"
spawn memcached "$T/memcached.out" memcached -l 127.0.0.1 -p "$MC_PORT" -U 0 -u root -m 16

chmod 711 "$T" # the postgres user must reach its data directory
mkdir -p "$T/pg"
chown postgres "$T/pg"
runuser -u postgres -- "$PG_BIN/initdb" -D "$T/pg/data" -U postgres --auth=trust \
    >"$T/initdb.log" 2>&1 || fail "initdb failed: $(tail -n 5 "$T/initdb.log")"
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$T/pg/data" -l "$T/pg/pg.log" \
    -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$T/pg -c fsync=off" \
    -W start >/dev/null
pg_stop() { runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$T/pg/data" -m immediate -w stop >/dev/null 2>&1 || true; }
ST_CLEANUP_HOOKS+=(pg_stop)

wait_for 30 "nginx stub_status" curl -fs -o /dev/null "http://127.0.0.1:$NG_PORT/nginx_status"
wait_for 60 "varnishd" curl -fs -o /dev/null "http://127.0.0.1:$VA_PORT/"
wait_for 30 "redis" redis-cli -p "$RE_PORT" ping
wait_for 30 "memcached" bash -c "exec 3<>/dev/tcp/127.0.0.1/$MC_PORT"
wait_for 60 "PostgreSQL" pg_isready -q -h 127.0.0.1 -p "$PG_PORT"

# A little traffic, so every cache has hits and misses to report.
for _ in 1 2 3; do curl -fs -o /dev/null "http://127.0.0.1:$VA_PORT/index.html"; done
redis-cli -p "$RE_PORT" set k v >/dev/null
for _ in 1 2 3; do redis-cli -p "$RE_PORT" get k >/dev/null; done
redis-cli -p "$RE_PORT" get missing >/dev/null
printf 'set k 0 0 1\r\nv\r\nget k\r\nget nope\r\nquit\r\n' >/dev/tcp/127.0.0.1/"$MC_PORT" || true

# ---- collector and the discovering agent ----

collector_start
agent_config 1 disco app
# Nothing but discovery: the agent's own samplers are replaced.
sed -i '/^samplers:/,$d' "$T/agent1/agent.yaml"
cat >>"$T/agent1/agent.yaml" <<EOF
samplers:
  host:
discover: true
discovery:
  nginx: [http://127.0.0.1:$NG_PORT/nginx_status]
  varnish: [$T/va]
  redis: [127.0.0.1:$RE_PORT]
  memcached: [127.0.0.1:$MC_PORT]
  postgres: [127.0.0.1:$PG_PORT]
EOF
"$AGENT_BIN" --config "$T/agent1/agent.yaml" --check-config >/dev/null ||
    fail "the discovery config does not check"
PGUSER=postgres agent_start 1

for s in nginx varnish redis memcached postgres; do
    wait_for 30 "discovery of $s" grep -q "discovered $s" "$T/agent1/agent.log"
done

has_series() {
    local out
    out=$(curl -fsS --max-time 5 -G "http://$HTTP_ADDR/v1/query" --data-urlencode "metric=$1" \
        --data-urlencode "match=host=disco" --data-urlencode "from=-5m" \
        ${2:+--data-urlencode "match=$2"}) || return 1
    jq -e '[.series[].points[]] | length > 0' >/dev/null <<<"$out"
}
wait_for 60 "redis cache hits at the collector" has_series cache.requests cache=redis
wait_for 60 "memcached cache hits at the collector" has_series cache.requests cache=memcached
wait_for 60 "varnish cache hits at the collector" has_series cache.requests cache=varnish
wait_for 60 "nginx request counts at the collector" has_series nginx.connections.active
wait_for 60 "postgres buffer hits at the collector" has_series db.cache.blks_hit
wait_for 60 "redis memory at the collector" has_series cache.memory.used cache=redis

# Counters count what happens once the agent watches: hits made now must
# arrive, exactly as many as made (the sampler's base was set before).
redis_hits() {
    curl -fsS -G "http://$HTTP_ADDR/v1/query" --data-urlencode "metric=cache.requests" \
        --data-urlencode "match=host=disco" --data-urlencode "match=cache=redis" \
        --data-urlencode "match=result=hit" --data-urlencode "agg=sum" --data-urlencode "from=-5m" |
        jq '[.series[].points[][1]] | add // 0 | floor'
}
before=$(redis_hits)
for _ in $(seq 1 7); do redis-cli -p "$RE_PORT" get k >/dev/null; done
wait_for 30 "7 more redis hits at the collector" bash -c "(( \$($(declare -f redis_hits); \
    HTTP_ADDR=$HTTP_ADDR redis_hits) >= $before + 7 ))"
assert_eq $((before + 7)) "$(redis_hits)" "redis hits reported through discovery"

# Discovery runs again without adding the same service twice.
assert_eq 1 "$(grep -c "discovered redis" "$T/agent1/agent.log")" "redis discovered once"
pass "discovery found nginx, varnish, redis, memcached and postgres and their series arrived"
