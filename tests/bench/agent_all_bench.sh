#!/usr/bin/env bash
# Agent cost with every sampler enabled at 1 s against real servers (nginx
# with an access log, varnish, redis, memcached, PostgreSQL with
# pg_stat_statements, StatsD and RUM listeners, a bundle directory, probes):
# CPU as % of one core and per tick, and RSS, over a steady window.
#   tests/bench/agent_all_bench.sh BUILD_DIR   (ST_BENCH_SECONDS, default 60)
#   ST_BENCH_SKIP="nginx postgres": leave those samplers out, to see what
#   each costs (RSS moves by ±0.2 MB between runs: compare several).
#   ST_BENCH_FRAMES=DIR: record the agent's frames instead of sending them
#   (the collector is stopped, so they stay in the spool) and copy its
#   spool to DIR at the end: real data for store_real_bench.
set -Eeuo pipefail
ST_BIN=$(cd "${1:-build}" && pwd)
ST_SRC=$(cd "$(dirname "$0")/../.." && pwd)
export ST_BIN ST_SRC ST_DEADLINE=$((${ST_BENCH_SECONDS:-60} + 240))
source "$ST_SRC/tests/integration/lib.sh"
SECS=${ST_BENCH_SECONDS:-60}
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
read -r NG_PORT VA_PORT OR_PORT RE_PORT MC_PORT PG_PORT SD_PORT RUM_PORT < <(free_ports 8)

mkdir -p "$T/ng" "$T/www" "$T/va" "$T/dist/assets"
echo hello >"$T/www/index.html"
head -c 300000 /dev/urandom | base64 >"$T/dist/assets/index-abc.js"
head -c 90000 /dev/urandom | base64 >"$T/dist/assets/chunk-def.js"
cat >"$T/ng/nginx.conf" <<NGX
daemon off;
user root;
pid $T/ng/nginx.pid;
error_log $T/ng/error.log;
events { worker_connections 64; }
http {
    log_format strata '\$msec \$request_time \$status \$upstream_cache_status \$body_bytes_sent "\$request_method" "\$uri"';
    access_log $T/ng/access.log strata;
$(nginx_temp_paths "$T/ng")
    server { listen 127.0.0.1:$NG_PORT; location = /nginx_status { stub_status; }
             location / { root $T/www; } }
    server { listen 127.0.0.1:$OR_PORT; location / { root $T/www; } }
}
NGX
spawn nginx "$T/nginx.out" "$(command -v nginx || echo /usr/sbin/nginx)" -c "$T/ng/nginx.conf" -p "$T/ng"
spawn varnishd "$T/varnishd.out" varnishd -F -n "$T/va" -j none -a "127.0.0.1:$VA_PORT" \
    -b "127.0.0.1:$OR_PORT" -s malloc,16m
spawn redis "$T/redis.out" redis-server --port "$RE_PORT" --bind 127.0.0.1 --save "" --dir "$T"
spawn memcached "$T/memcached.out" memcached -l 127.0.0.1 -p "$MC_PORT" -U 0 -u root -m 16
chmod 711 "$T"
mkdir -p "$T/pg" && chown postgres "$T/pg"
runuser -u postgres -- "$PG_BIN/initdb" -D "$T/pg/data" -U postgres --auth=trust >/dev/null
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$T/pg/data" -l "$T/pg/pg.log" -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$T/pg -c shared_preload_libraries=pg_stat_statements -c fsync=off" -W start >/dev/null
pg_stop() { runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$T/pg/data" -m immediate -w stop >/dev/null 2>&1 || true; }
ST_CLEANUP_HOOKS+=(pg_stop)
wait_for 60 "PostgreSQL" pg_isready -q -h 127.0.0.1 -p "$PG_PORT"
psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -c "CREATE EXTENSION pg_stat_statements" postgres
wait_for 60 "varnishd" curl -fs -o /dev/null "http://127.0.0.1:$VA_PORT/"

collector_start
AGENT_MEMORY_TRIM=10m agent_config 1 bench app # the default
sed -i '/^samplers:/,$d; s/^interval: .*/interval: 1s/; s/^flush_interval: .*/flush_interval: 15s/' \
    "$T/agent1/agent.yaml"
cat >>"$T/agent1/agent.yaml" <<YAML
samplers:
  host:
  tcp:
  proc: {match: [{name: nginx}, {name: redis-server}, {name: memcached}]}
  probe: {targets: [{name: pg, address: "127.0.0.1:$PG_PORT"}, {name: redis, address: "127.0.0.1:$RE_PORT"}]}
  nginx: {status_url: "http://127.0.0.1:$NG_PORT/nginx_status", access_log: "$T/ng/access.log"}
  varnish: {instance: "$T/va"}
  redis: {address: "127.0.0.1:$RE_PORT"}
  memcached: {address: "127.0.0.1:$MC_PORT"}
  postgres: {dsn: "host=127.0.0.1 port=$PG_PORT dbname=postgres user=postgres"}
  statsd: {listen: "127.0.0.1:$SD_PORT"}
  rum: {listen: "127.0.0.1:$RUM_PORT"}
  bundle: {dir: "$T/dist", interval: 60s}
YAML
for skip in ${ST_BENCH_SKIP:-}; do
    grep -q "^  $skip:" "$T/agent1/agent.yaml" || fail "ST_BENCH_SKIP: no sampler '$skip'"
    sed -i "/^  $skip:/d" "$T/agent1/agent.yaml"
done
if [[ -n ${ST_BENCH_FRAMES:-} ]]; then
    collector_stop
    sed -i 's/^memory_trim: .*/memory_trim: 10m\nspool:\n  max_bytes: 1GiB/' "$T/agent1/agent.yaml"
fi
agent_start 1
# A light steady workload, so every sampler has something to read.
spawn load "$T/load.out" bash -c "while :; do
    curl -fs -o /dev/null http://127.0.0.1:$NG_PORT/index.html
    curl -fs -o /dev/null http://127.0.0.1:$VA_PORT/index.html
    redis-cli -p $RE_PORT get k >/dev/null
    printf 'app.function.duration:12|ms|#function:f\n' >/dev/udp/127.0.0.1/$SD_PORT
    sleep 0.2; done"
sleep 15 # warm-up: first runs, connections, the bundle's first scan
pid=${AGENT_PID[1]}
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
t0=$(ticks); s0=$(date +%s.%N)
sleep "$SECS"
t1=$(ticks); s1=$(date +%s.%N)
hz=$(getconf CLK_TCK)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
if [[ -n ${ST_BENCH_KEEP:-} ]]; then # raw material for a closer look
    mkdir -p "$ST_BENCH_KEEP"
    cat "/proc/$pid/smaps" >"$ST_BENCH_KEEP/smaps"
    cat "/proc/$pid/status" >"$ST_BENCH_KEEP/status"
    for t in /proc/$pid/task/*; do echo "$(cat "$t/comm")"; done >"$ST_BENCH_KEEP/threads"
fi
python3 - "$t0" "$t1" "$s0" "$s1" "$hz" "$rss" "$hwm" "${ST_BENCH_SKIP:-}" <<'PY'
import sys
t0, t1, s0, s1, hz, rss, hwm = map(float, sys.argv[1:8])
skip = sys.argv[8].split()
cpu = (t1 - t0) / hz
wall = s1 - s0
which = "all 12 samplers" if not skip else f"12 samplers less {', '.join(skip)}"
print(f"agent, {which} at 1 s: CPU {cpu / wall * 100:.3f} % of one core "
      f"({cpu / wall * 1e6:.0f} us per 1 s tick), RSS {rss / 1024:.1f} MiB = {rss:.0f} kB "
      f"(peak {hwm / 1024:.1f} MiB) over {wall:.0f} s")
PY
# Where the resident memory is: anonymous (heap, stacks) against the pages
# of each shared library, the largest first.
python3 - "$pid" <<'PY'
import collections, re, sys
rss = collections.Counter()
name = None
for line in open(f"/proc/{sys.argv[1]}/smaps"):
    if re.match(r"^[0-9a-f]+-", line):
        f = line.split()
        name = f[5] if len(f) > 5 and f[5].startswith("/") else "[anonymous]"
    elif line.startswith("Rss:"):
        rss[name] += int(line.split()[1])
print("RSS by mapping, kB: " + ", ".join(f"{k.rsplit('/', 1)[-1]} {v}" for k, v in rss.most_common(12)))
PY
# Only now: the lines above read the running agent's /proc files.
if [[ -n ${ST_BENCH_FRAMES:-} ]]; then
    agent_stop 1
    rm -rf "$ST_BENCH_FRAMES" && cp -a "$T/agent1/data" "$ST_BENCH_FRAMES"
    log "frames of ${SECS}s recorded in $ST_BENCH_FRAMES"
fi
pass "agent_all_bench"
