#!/usr/bin/env bash
# `make run`: a collector with its LMDB store under ./var/collector and one
# agent sampling this host, until Ctrl-C stops both cleanly.
set -euo pipefail
BUILD=${1:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
mkdir -p var
[ -f var/agent.yaml ] || cp deploy/examples/agent-local.yaml var/agent.yaml
# A bearer token for the API (writes always need one): kept in var/api-token,
# only its SHA-256 goes into the collector's configuration.
if [ ! -f var/api-token ]; then
    (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > var/api-token)
fi
if [ ! -f var/collector.yaml ]; then
    sha=$(printf '%s' "$(cat var/api-token)" | sha256sum | cut -d' ' -f1)
    sed "s/@TOKEN_SHA256@/$sha/" deploy/examples/collector-local.yaml > var/collector.yaml
fi
export STRATA_TOKEN=$(cat var/api-token)

"$BUILD/collector/strata-collector" --config var/collector.yaml &
collector=$!
for _ in $(seq 1 100); do
    curl -fsS http://127.0.0.1:9741/readyz >/dev/null 2>&1 && break
    kill -0 $collector 2>/dev/null || { echo "run: the collector did not start" >&2; exit 1; }
    sleep 0.1
done
"$BUILD/agent/strata-agent" --config var/agent.yaml &
agent=$!

stop() {
    trap - INT TERM
    echo
    echo "run: stopping (the agent flushes to its spool, the collector commits)"
    kill -TERM $agent 2>/dev/null || true
    wait $agent 2>/dev/null || true
    kill -TERM $collector 2>/dev/null || true
    wait $collector 2>/dev/null || true
    exit 0
}
trap stop INT TERM

cat <<MSG

Strata is running.
  collector  ingest tcp://127.0.0.1:9740, API http://127.0.0.1:9741, store ./var/collector
  agent      ./var/agent (spool), config ./var/agent.yaml, a frame every 10s

Look at it (from another terminal, in $top):
  export STRATA_TOKEN=\$(cat var/api-token)
  $BUILD/collector/strata agents
  $BUILD/collector/strata status
  $BUILD/collector/strata findings
  $BUILD/collector/strata query mem.rss --since 5m
  $BUILD/collector/strata query tcp.curr_estab --since 5m
  $BUILD/collector/strata query host.cpu.utilization --since 5m
  curl -H "Authorization: Bearer \$STRATA_TOKEN" http://127.0.0.1:9741/metrics

Ctrl-C stops both.
MSG
wait
