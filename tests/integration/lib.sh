# Shared helpers of the integration tests: each test sources this file, then
# starts a real collector and real agents on loopback with free ports, in a
# temporary directory that the exit trap removes after killing every process
# the test started. Needs ST_BIN (build dir) and ST_SRC (source dir), bash,
# curl, jq and python3.
#
#   ST_BIN=build ST_SRC=. bash tests/integration/spine_test.sh
#
# ST_KEEP_TMP=1 keeps the temporary directory (logs, configs, data) for a
# post-mortem; ST_VERBOSE=1 echoes the log tails even on success;
# ST_DEADLINE (seconds, default 540) ends a hung test with SIGTERM before
# ctest's 600 s timeout would SIGKILL it and leave processes and mounts.
#
# What a test gets (each function is described where it is defined):
#   output       log, fail, soft_fail, pass, skip, dump_logs
#   assertions   assert_eq, assert_ge, assert_gt, assert_contains, assert_true,
#                wait_for SECONDS WHAT CMD... (polls, never a fixed sleep)
#   processes    spawn, reap, proc_alive, check_alive; ST_CLEANUP_HOOKS
#   HTTP         http, http_ok, metric, query, series_total, agents_json, agent_field
#   collector    collector_config, collector_start, collector_stop (COLLECTOR_* vars)
#   agents       agent_config I HOST ROLE, agent_start I, agent_stop I [SIG],
#                all_agents_seen, agent_seq_at_least, spool_state, agent_id
#   no loss      drain_agents, assert_no_loss I, assert_in_flight_gap HOST
# Other tests source this file too: keep these names and their meaning.
# Strict mode (set -Eeuo pipefail) and nullglob are on: quote any word with
# brackets that is not an assignment, e.g. read -r "a[$i]", unset "a[$i]".

set -Eeuo pipefail
shopt -s nullglob

ST_TEST=$(basename "${BASH_SOURCE[1]:-$0}" .sh)
ST_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${ST_SRC:=$(cd "$ST_LIB_DIR/../.." && pwd)}"
if [[ -z "${ST_BIN:-}" ]]; then
    echo "FAIL: $ST_TEST: set ST_BIN to the build directory (and ST_SRC to the source tree)" >&2
    exit 1
fi
ST_BIN=$(cd "$ST_BIN" && pwd)
COLLECTOR_BIN=$ST_BIN/collector/strata-collector
AGENT_BIN=$ST_BIN/agent/strata-agent
CLI_BIN=$ST_BIN/collector/strata          # may not be built yet
export COLLECTOR_BIN AGENT_BIN CLI_BIN
STUTIL="python3 $ST_LIB_DIR/stutil.py"

for tool in curl jq python3; do
    if ! command -v "$tool" >/dev/null; then
        echo "FAIL: $ST_TEST: $tool is required" >&2
        exit 1
    fi
done
for b in "$COLLECTOR_BIN" "$AGENT_BIN"; do
    if [[ ! -x "$b" ]]; then
        echo "FAIL: $ST_TEST: $b is not built" >&2
        exit 1
    fi
done

T=$(mktemp -d "${TMPDIR:-/tmp}/strata-$ST_TEST.XXXXXX")
ST_T0=${EPOCHREALTIME//[!0-9]/}   # microseconds
ST_MAIN_PID=$BASHPID
ST_DONE=0                     # 1 once PASS or FAIL was printed
declare -A ST_PIDS=()         # pid -> name of every live process we started
ST_CLEANUP_HOOKS=()           # commands run by the exit trap before rm -rf

# ---- Output -------------------------------------------------------------------------------

elapsed() {
    local ds=$(((${EPOCHREALTIME//[!0-9]/} - ST_T0) / 100000))
    echo "$((ds / 10)).$((ds % 10))"
}

log() { printf '[%s +%ss] %s\n' "$ST_TEST" "$(elapsed)" "$*"; }

# Prints the last lines of every log the test produced.
dump_logs() {
    local f n=${1:-40}
    for f in "$T"/collector/collector.log "$T"/agent*/agent.log "$T"/*.out; do
        [[ -s "$f" ]] || continue
        echo "----- tail -n $n ${f#"$T"/} -----"
        tail -n "$n" "$f" || true
    done
    echo "-----"
}

# fail MESSAGE: prints FAIL with the message and the log tails, exits 1.
fail() {
    if [[ $BASHPID != "$ST_MAIN_PID" ]]; then
        echo "FAIL: $ST_TEST: $*" >&2
        exit 1
    fi
    echo "FAIL: $ST_TEST: $*"
    dump_logs 40
    ST_DONE=1
    echo "FAIL: $ST_TEST ($(elapsed) s)"
    exit 1
}

# soft_fail MESSAGE: records a failed check; the test goes on with its other
# checks and fails at pass.
ST_SOFT=()
soft_fail() {
    echo "FAIL (test continues): $ST_TEST: $*"
    ST_SOFT+=("$*")
}

pass() {
    if ((${#ST_SOFT[@]} > 0)); then
        local IFS=$'\n'
        fail "${#ST_SOFT[@]} check(s) failed:"$'\n'"${ST_SOFT[*]}"
    fi
    if [[ "${ST_VERBOSE:-0}" == 1 ]]; then dump_logs 20; fi
    ST_DONE=1
    echo "PASS: $ST_TEST ($(elapsed) s)"
    exit 0
}

# skip MESSAGE: the test cannot run here; says why and exits 0.
skip() {
    ST_DONE=1
    echo "SKIP: $ST_TEST: $*"
    echo "PASS: $ST_TEST (skipped: $*)"
    exit 0
}

on_err() {
    local rc=$1 line=$2 cmd=$3
    if [[ $BASHPID == "$ST_MAIN_PID" && $ST_DONE == 0 ]]; then
        fail "unexpected error (exit $rc) at line $line: $cmd"
    fi
}

cleanup() {
    local rc=$? pid hook i
    set +e
    trap - ERR
    for pid in "${!ST_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for ((i = 0; i < 50; i++)); do
        local alive=0
        for pid in "${!ST_PIDS[@]}"; do
            proc_alive "$pid" && alive=1
        done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${!ST_PIDS[@]}"; do
        if proc_alive "$pid"; then
            echo "cleanup: ${ST_PIDS[$pid]} (pid $pid) ignored SIGTERM; killing it" >&2
            kill -KILL "$pid" 2>/dev/null
        fi
        wait "$pid" 2>/dev/null
    done
    for hook in "${ST_CLEANUP_HOOKS[@]}"; do
        eval "$hook" || echo "cleanup: '$hook' failed" >&2
    done
    if [[ $rc != 0 && $ST_DONE == 0 ]]; then
        echo "FAIL: $ST_TEST: exited with status $rc${ST_WHY:+ ($ST_WHY)}"
        dump_logs 40
        echo "FAIL: $ST_TEST ($(elapsed) s)"
    fi
    if [[ "${ST_KEEP_TMP:-0}" == 1 ]]; then
        echo "kept $T"
    else
        rm -rf "$T"
    fi
    exit "$rc"
}

trap 'on_err $? $LINENO "$BASH_COMMAND"' ERR
trap cleanup EXIT
ST_WHY=
trap 'ST_WHY="SIGTERM: the ${ST_DEADLINE:-540} s deadline passed or ctest timed out"; exit 143' TERM
trap 'ST_WHY="interrupted"; exit 130' INT

# ---- Assertions ---------------------------------------------------------------------------

# assert_eq EXPECTED GOT WHAT
assert_eq() {
    [[ "$1" == "$2" ]] || fail "$3: expected '$1', got '$2'"
}

# assert_ge GOT MIN WHAT (integers)
assert_ge() {
    [[ "$1" =~ ^-?[0-9]+$ ]] || fail "$3: expected a number >= $2, got '$1'"
    (($1 >= $2)) || fail "$3: expected >= $2, got $1"
}

# assert_gt GOT MIN WHAT (integers)
assert_gt() {
    [[ "$1" =~ ^-?[0-9]+$ ]] || fail "$3: expected a number > $2, got '$1'"
    (($1 > $2)) || fail "$3: expected > $2, got $1"
}

# assert_contains HAYSTACK NEEDLE WHAT
assert_contains() {
    [[ "$1" == *"$2"* ]] || fail "$3: expected to contain '$2', got: $1"
}

# assert_true WHAT CMD...: CMD must succeed.
assert_true() {
    local what=$1
    shift
    "$@" || fail "$what: '$*' failed"
}

# wait_for SECONDS WHAT CMD...: polls CMD every 0.2 s until it succeeds; fails the
# test when the deadline passes. CMD may be a shell function.
wait_for() {
    local secs=$1 what=$2
    shift 2
    local deadline=$((SECONDS + secs))
    while true; do
        if "$@"; then
            return 0
        fi
        check_alive
        if ((SECONDS >= deadline)); then
            fail "timed out after ${secs}s waiting for: $what"
        fi
        sleep 0.2
    done
}

# ---- Processes ----------------------------------------------------------------------------

proc_alive() {
    local st
    st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n "$st" && "$st" != Z && "$st" != X ]]
}

# check_alive: fails the test when the collector or an agent it started and
# did not stop has exited (a crash, or a signal from outside the test).
check_alive() {
    local i pid
    if [[ -n "$COLLECTOR_PID" ]] && ! proc_alive "$COLLECTOR_PID"; then
        pid=$COLLECTOR_PID
        COLLECTOR_PID=
        reap "$pid" 5
        fail "the collector (pid $pid) exited unexpectedly with status $ST_RC$(exit_hint "$COLLECTOR_DIR/collector.log")"
    fi
    for i in "${!AGENT_PID[@]}"; do
        pid=${AGENT_PID[$i]}
        if [[ -n "$pid" ]] && ! proc_alive "$pid"; then
            AGENT_PID[$i]=
            reap "$pid" 5
            fail "agent$i ${AGENT_HOST[$i]} (pid $pid) exited unexpectedly with status $ST_RC$(exit_hint "${AGENT_DIR[$i]}/agent.log")"
        fi
    done
}

# exit_hint LOG: says so when the daemon logged a signal that this test did not send.
exit_hint() {
    if tail -n 5 "$1" | grep -q "signal [0-9]*: stopping"; then
        echo " after '$(tail -n 5 "$1" | grep -o "signal [0-9]*: stopping" | tail -n 1)' (a signal this test did not send: is another process killing strata daemons by name?)"
    fi
}

# diagnose_hang PID: what a process that does not exit is doing: each thread's
# state and kernel wait channel, and with gdb installed every thread's stack.
diagnose_hang() {
    local pid=$1 t
    echo "----- pid $pid: $(grep -E '^(State|Threads):' "/proc/$pid/status" 2>/dev/null | tr '\n\t' '  ')"
    for t in /proc/"$pid"/task/*; do
        echo "  thread ${t##*/} $(awk '{print $2, $3}' "$t/stat" 2>/dev/null) wchan=$(cat "$t/wchan" 2>/dev/null)"
    done
    if command -v gdb >/dev/null; then
        timeout 60 gdb -p "$pid" -batch -ex "thread apply all bt" 2>&1 |
            grep -E '^(Thread|#)' | cut -c 1-160 | head -n 300 || true
    fi
}

# reap PID SECONDS: waits for our child PID to exit; sets ST_RC to its exit status
# (128+N when killed by signal N). Fails the test if it does not exit in time.
reap() {
    local pid=$1 secs=${2:-20} name=${ST_PIDS[$1]:-pid $1}
    local deadline=$((SECONDS + secs)) timed_out=0
    # stderr off: bash would announce "Killed" for the children we kill.
    {
        while proc_alive "$pid"; do
            if ((SECONDS >= deadline)); then
                timed_out=1
                break
            fi
            sleep 0.1
        done
        ST_RC=0
        if ((timed_out == 0)); then wait "$pid" || ST_RC=$?; fi
    } 2>/dev/null
    if ((timed_out)); then
        diagnose_hang "$pid"
        fail "$name (pid $pid) did not exit within ${secs}s (thread states and stacks above)"
    fi
    unset "ST_PIDS[$pid]"
}

# spawn NAME LOGFILE CMD...: starts CMD in the background, logs appended; sets ST_PID.
spawn() {
    local name=$1 logf=$2
    shift 2
    echo "=== $(date -u +%FT%T.%3NZ) start: $*" >>"$logf"
    "$@" >>"$logf" 2>&1 &
    ST_PID=$!
    ST_PIDS[$ST_PID]=$name
}

# The deadline watchdog: one process, so that the exit trap's SIGTERM ends it.
spawn watchdog /dev/null python3 -c 'import os, signal, sys, time
time.sleep(float(sys.argv[1]))
os.kill(int(sys.argv[2]), signal.SIGTERM)' "${ST_DEADLINE:-540}" "$ST_MAIN_PID"

# ---- Network and HTTP ---------------------------------------------------------------------

# nginx_temp_paths DIR: the http-block lines that keep an nginx a test
# starts writing its temporary files under DIR (the package's defaults are
# under /var/lib/nginx, shared and root-owned).
nginx_temp_paths() {
    local k
    printf '    client_body_temp_path %s/body;\n' "$1"
    for k in proxy fastcgi uwsgi scgi; do
        printf '    %s_temp_path %s/%s;\n' "$k" "$1" "$k"
    done
}

# free_ports N: N distinct free loopback ports on one line.
free_ports() { $STUTIL ports "$1" | paste -sd ' ' -; }

# http GET PATH: body on stdout; non-zero on connection failure or a 4xx/5xx.
http() {
    curl -fsS --max-time 5 "http://$HTTP_ADDR$1"
}

http_ok() { curl -fs --max-time 2 -o /dev/null "http://$HTTP_ADDR$1"; }

# metric NAME [LABEL_FILTER]: sum of every sample of NAME in /metrics (0 when
# absent), optionally only samples whose labels contain LABEL_FILTER.
metric() {
    local name=$1 filter=${2:-}
    curl -fs --max-time 5 "http://$HTTP_ADDR/metrics" | awk -v n="$name" -v f="$filter" '
        /^#/ { next }
        { key = $1; base = key; sub(/\{.*/, "", base)
          if (base == n && (f == "" || index(key, f) > 0)) { s += $NF; found = 1 } }
        END { printf "%d\n", found ? s : 0 }'
}

# query METRIC HOST FROM TO: /v1/query JSON for one host.
query() {
    curl -fsS --max-time 10 -G "http://$HTTP_ADDR/v1/query" --data-urlencode "metric=$1" \
        --data-urlencode "match=host=$2" --data-urlencode "from=$3" --data-urlencode "to=$4"
}

# series_total METRIC HOST: the sum of every point of METRIC for HOST over the
# last 10 minutes; fails the test when there is no such series at all.
series_total() {
    local out
    out=$(query "$1" "$2" -10m now) || fail "query of $1 for host $2 failed"
    jq -e '(.series | length) > 0' >/dev/null <<<"$out" || fail "no series $1 for host $2"
    jq '[.series[].points[][1]] | add // 0' <<<"$out"
}

# ---- Collector ----------------------------------------------------------------------------

COLLECTOR_PID=
COLLECTOR_DIR=$T/collector
COLLECTOR_DATA=$COLLECTOR_DIR/data
COLLECTOR_EXTRA_YAML=""       # appended to collector.yaml (top-level keys)
read -r INGEST_PORT HTTP_PORT < <(free_ports 2)
INGEST_URL=tcp://127.0.0.1:$INGEST_PORT
HTTP_ADDR=127.0.0.1:$HTTP_PORT

collector_config() {
    mkdir -p "$COLLECTOR_DIR" "$COLLECTOR_DATA"
    {
        echo "data_dir: $COLLECTOR_DATA"
        echo "log_level: ${COLLECTOR_LOG_LEVEL:-info}"
        echo "ingest:"
        echo "  url: $INGEST_URL"
        echo "http:"
        echo "  addr: $HTTP_ADDR"
        if [[ -n "$COLLECTOR_EXTRA_YAML" ]]; then printf '%s\n' "$COLLECTOR_EXTRA_YAML"; fi
    } >"$COLLECTOR_DIR/collector.yaml"
}

collector_ready() { proc_alive "$COLLECTOR_PID" && http_ok /readyz; }

# collector_start: starts the collector on its data dir and ports, waits for /readyz.
collector_start() {
    [[ -f "$COLLECTOR_DIR/collector.yaml" ]] || collector_config
    local tries
    for ((tries = 0; tries < 3; tries++)); do
        spawn collector "$COLLECTOR_DIR/collector.log" "$COLLECTOR_BIN" \
            --config "$COLLECTOR_DIR/collector.yaml"
        COLLECTOR_PID=$ST_PID
        local deadline=$((SECONDS + 20))
        while ((SECONDS < deadline)); do
            if collector_ready; then
                log "collector up (pid $COLLECTOR_PID, ingest $INGEST_URL, http $HTTP_ADDR)"
                return 0
            fi
            proc_alive "$COLLECTOR_PID" || break
            sleep 0.1
        done
        if proc_alive "$COLLECTOR_PID"; then
            fail "collector (pid $COLLECTOR_PID) not ready on http://$HTTP_ADDR/readyz within 20s"
        fi
        reap "$COLLECTOR_PID" 5
        # A restart right after kill -9 can race the kernel releasing the port.
        if ! grep -q "Address in use" "$COLLECTOR_DIR/collector.log"; then
            fail "collector exited with status $ST_RC during startup"
        fi
        log "collector: address in use, retrying"
        sleep 1
    done
    fail "collector could not start: address in use"
}

# collector_stop [SIGNAL]: signals the collector (TERM by default), waits for it;
# ST_RC holds its exit status.
collector_stop() {
    local sig=${1:-TERM}
    [[ -n "$COLLECTOR_PID" ]] || fail "collector_stop: no collector running"
    kill "-$sig" "$COLLECTOR_PID"
    reap "$COLLECTOR_PID" 30
    log "collector stopped by SIG$sig, exit status $ST_RC"
    COLLECTOR_PID=
}

# ---- Agents -------------------------------------------------------------------------------

declare -a AGENT_PID=() AGENT_HOST=() AGENT_ROLE=() AGENT_DIR=()
AGENT_FLUSH=${AGENT_FLUSH:-300ms}
AGENT_INTERVAL=${AGENT_INTERVAL:-200ms}
AGENT_EXTRA_YAML=""           # appended to every agent.yaml (top-level keys)

# agent_config I HOST ROLE: writes agent I's config and data dir.
# Tests trim the agent's library pages (memtrim.h) after every frame rather
# than every 10 minutes: every test's exact figures then also show that no
# trim changed what the agent computes.
agent_config() {
    local i=$1 d=$T/agent$1
    AGENT_HOST[$i]=$2
    AGENT_ROLE[$i]=$3
    AGENT_DIR[$i]=$d
    AGENT_PID[$i]=
    mkdir -p "$d/data"
    cat >"$d/agent.yaml" <<EOF
collector: $INGEST_URL
data_dir: $d/data
interval: $AGENT_INTERVAL
flush_interval: $AGENT_FLUSH
host: $2
role: $3
log_level: ${AGENT_LOG_LEVEL:-info}
memory_trim: ${AGENT_MEMORY_TRIM:-1s}
labels:
  test: $ST_TEST
sender:
  timeout: 2s
  backoff_min: 100ms
  backoff_max: 1s
samplers:
  host:
  tcp:
  proc:
    match:
      - name: strata-collector
$AGENT_EXTRA_YAML
EOF
}

agent_start() {
    local i=$1
    spawn "agent$i(${AGENT_HOST[$i]})" "${AGENT_DIR[$i]}/agent.log" "$AGENT_BIN" \
        --config "${AGENT_DIR[$i]}/agent.yaml"
    AGENT_PID[$i]=$ST_PID
    log "agent$i ${AGENT_HOST[$i]} (${AGENT_ROLE[$i]}) started, pid $ST_PID"
}

# agent_stop I [SIGNAL]: ST_RC holds its exit status.
agent_stop() {
    local i=$1 sig=${2:-TERM}
    [[ -n "${AGENT_PID[$i]}" ]] || return 0
    kill "-$sig" "${AGENT_PID[$i]}"
    reap "${AGENT_PID[$i]}" 30
    log "agent$i ${AGENT_HOST[$i]} stopped by SIG$sig, exit status $ST_RC"
    AGENT_PID[$i]=
}

agent_indexes() { echo "${!AGENT_HOST[@]}"; }

# spool_state I [FIELD]: the agent's spool as read from disk (stutil.py spool).
spool_state() {
    local j
    j=$($STUTIL spool "${AGENT_DIR[$1]}/data/spool")
    if [[ -n "${2:-}" ]]; then jq -r ".$2" <<<"$j"; else echo "$j"; fi
}

agent_id() { spool_state "$1" id; }

# agents_json: the collector's /v1/agents.
agents_json() { http /v1/agents; }

# agent_field HOST FIELD [JSON]: one field of the collector's view of HOST
# (empty when the host is unknown).
agent_field() {
    local j=${3:-}
    [[ -n "$j" ]] || j=$(agents_json) || return 1
    jq -r --arg h "$1" --arg f "$2" \
        '[.agents[] | select(.host == $h)] | if length == 0 then "" else .[0][$f] end' <<<"$j"
}

# agent_seq_at_least I N: the collector applied seq >= N for agent I.
agent_seq_at_least() {
    local s
    s=$(agent_field "${AGENT_HOST[$1]}" seq) || return 1
    [[ "$s" =~ ^[0-9]+$ ]] && ((s >= $2))
}

all_agents_seen() {
    local i j s
    j=$(agents_json) || return 1
    for i in $(agent_indexes); do
        s=$(agent_field "${AGENT_HOST[$i]}" seq "$j")
        [[ "$s" =~ ^[0-9]+$ ]] && ((s >= ${1:-1})) || return 1
    done
}

# drain_agents: stops every running agent with SIGTERM (each flushes and drains
# for up to 3 s) and makes sure the collector holds everything each spool ever
# held: while some spool still has unacknowledged frames on disk, the agent is
# started again until the collector caught up with it, and stopped again.
# Afterwards LAST_SEQ[i] is the last seq agent i ever spooled.
declare -a LAST_SEQ=()
drain_agents() {
    local i round unacked last
    for i in $(agent_indexes); do
        agent_stop "$i" TERM
        assert_eq 0 "$ST_RC" "agent$i exit status after SIGTERM"
    done
    for i in $(agent_indexes); do
        for ((round = 1; ; round++)); do
            unacked=$(spool_state "$i" unacked)
            last=$(spool_state "$i" last_seq)
            LAST_SEQ[$i]=$last
            if ((unacked == 0)) && agent_seq_at_least "$i" "$last"; then
                break
            fi
            ((round <= 5)) || fail "agent$i ${AGENT_HOST[$i]} does not drain: $(spool_state "$i"), collector seq $(agent_field "${AGENT_HOST[$i]}" seq)"
            log "agent$i: $unacked frames unacknowledged on disk (last seq $last); restarting it to drain"
            agent_start "$i"
            wait_for 60 "collector to apply agent$i up to seq $last" agent_seq_at_least "$i" "$last"
            agent_stop "$i" TERM
            assert_eq 0 "$ST_RC" "agent$i exit status after SIGTERM"
        done
    done
}

# ---- PostgreSQL, for the tests that need a real server ----

# pg_init PORT: a fresh cluster in $T/pg for a server on 127.0.0.1:PORT,
# stopped at exit. PostgreSQL refuses to run as root, so its tools run as
# the postgres user, in a directory it owns inside ours. Sets PG_BIN (the
# newest installed unless set), PG_PORT, PGDIR and AS_PG.
pg_init() {
    PG_PORT=$1
    PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
    local b
    for b in initdb pg_ctl postgres; do
        [[ -x "$PG_BIN/$b" ]] || fail "$PG_BIN/$b is missing: install PostgreSQL (deploy/bootstrap.sh)"
    done
    for b in psql pg_isready; do
        command -v "$b" >/dev/null || fail "$b is required (postgresql-client)"
    done
    AS_PG=()
    if [[ $(id -u) == 0 ]]; then
        AS_PG=(runuser -u postgres --)
        chmod 711 "$T"
    fi
    PGDIR=$T/pg
    mkdir -p "$PGDIR"
    if ((${#AS_PG[@]})); then chown postgres: "$PGDIR"; fi
    ln -s "$PGDIR/postgres.log" "$T/postgres.out" # dump_logs shows it on failure
    ST_CLEANUP_HOOKS+=(pg_stop_at_exit)
    "${AS_PG[@]}" "$PG_BIN/initdb" -D "$PGDIR/data" -U postgres --auth=trust -E UTF8 \
        --locale=C.UTF-8 >"$PGDIR/initdb.log" 2>&1 ||
        fail "initdb failed: $(tail -n 20 "$PGDIR/initdb.log")"
    echo "include_if_exists = 'strata.conf'" |
        "${AS_PG[@]}" tee -a "$PGDIR/data/postgresql.conf" >/dev/null
}

# pg_up SETTING...: (re)writes the cluster's strata.conf — loopback, the
# port, the socket directory, fsync off, then each SETTING line — starts
# the server and waits until it accepts connections.
pg_up() {
    {
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $PG_PORT"
        echo "unix_socket_directories = '$PGDIR'"
        echo "fsync = off"
        printf '%s\n' "$@"
    } | "${AS_PG[@]}" tee "$PGDIR/data/strata.conf" >/dev/null
    "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/postgres.log" -W start >/dev/null
    wait_for 60 "PostgreSQL on 127.0.0.1:$PG_PORT (pg_isready)" pg_ready
}

pg_ready() { pg_isready -q -h 127.0.0.1 -p "$PG_PORT" -t 1; }

pg_stop_at_exit() {
    if [[ -f "$PGDIR/data/postmaster.pid" ]]; then
        "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PGDIR/data" -m immediate -w -t 30 stop >/dev/null 2>&1
    fi
    return 0
}

# sql DB STATEMENT...: runs statements as the superuser; rows unaligned on stdout.
sql() {
    local db=$1
    shift
    local args=() s
    for s in "$@"; do args+=(-c "$s"); done
    psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$db" "${args[@]}"
}

# assert_in_flight_gap HOST [JSON]: while frames are in flight the collector may
# have applied a later seq before an earlier one (max_in_flight is 4 and a
# batch may fail), so frames may trail seq by at most 4, never exceed it.
assert_in_flight_gap() {
    local h=$1 j=${2:-} seq frames
    [[ -n "$j" ]] || j=$(agents_json)
    seq=$(agent_field "$h" seq "$j")
    frames=$(agent_field "$h" frames "$j")
    [[ "$seq" =~ ^[0-9]+$ && "$frames" =~ ^[0-9]+$ ]] || fail "$h: no seq/frames in /v1/agents: $j"
    ((frames <= seq && seq - frames <= 4)) ||
        fail "$h: frames $frames vs seq $seq: expected seq - 4 <= frames <= seq while frames are in flight"
}

# assert_no_loss I: the collector applied every frame agent I ever spooled, once:
# frames == seq == the last seq on disk; and the agent neither dropped frames
# from a full spool nor lost any it could not spool (agent.frames.lost).
assert_no_loss() {
    local i=$1 h=${AGENT_HOST[$1]} j seq frames dropped
    j=$(agents_json)
    seq=$(agent_field "$h" seq "$j")
    frames=$(agent_field "$h" frames "$j")
    dropped=$(spool_state "$i" dropped)
    log "agent$i $h: seq $seq, frames $frames, last spooled seq ${LAST_SEQ[$i]:-?}, spool dropped $dropped"
    assert_eq 0 "$dropped" "agent$i $h: frames dropped by its spool"
    assert_eq "$seq" "$frames" "agent$i $h: frames applied == highest seq applied (frames vs seq)"
    if [[ -n "${LAST_SEQ[$i]:-}" ]]; then
        assert_eq "${LAST_SEQ[$i]}" "$seq" "agent$i $h: highest seq applied vs last seq it spooled"
    fi
    assert_eq 0 "$(series_total agent.frames.lost "$h")" "agent$i $h: frames it could not spool (agent.frames.lost)"
}
