#!/usr/bin/env bash
# `make bench`: measures the agent's cost, the collector's ingest rate and the
# bytes on the wire per sample, against real processes on loopback. It prints
# figures (medians of several runs where it runs several); it asserts
# nothing. BENCHMARKS.md explains every figure and records measured ones.
#
#   tests/bench/run.sh [BUILD_DIR]        (default: build)
#
# Knobs (environment):
#   BENCH_ONLY="agent ingest bytes"  which benchmarks to run
#   BENCH_DIR=DIR        stores and spools (default BUILD/bench-data; keep it on
#                        a real disk: on tmpfs fsync costs nothing)
#   AGENT_SECONDS=310    agent run; the first AGENT_WARMUP=10 s are not measured (300 s:
#                        20 frames, so wire bytes include one frame of each cadence)
#   AGENT_FLUSH=15       the agents' flush_interval (s): the agent default
#   INGEST_RUNS=1        fresh collector per run; medians over runs, and over
#                        the 10 s windows of each run
#   INGEST_AGENTS=6000   simulated agents, one connection each; each sends one
#                        frame per flush period (INGEST_POINTS s) at its own
#                        phase, so the offered load is AGENTS x SERIES samples/s
#                        (6000 x 200 = 1.2 M/s, 20 % over the target)
#   INGEST_SERIES=200 INGEST_POINTS=10 INGEST_INFLIGHT=2
#   INGEST_WARMUP=20 INGEST_SECONDS=150  measured window after the warm-up;
#                        keep it past 90 s: the first minute is rolled up at
#                        about 90 s, and the rate is not steady before
#   INGEST_PACE=realtime  max: every agent sends as fast as acks return, with
#                        data a day back (a stress, not a fleet)
#   INGEST_MAX_RATE=2.5e6  --pace max: samples/s the pre-encoded frames last for
#   INGEST_LIVE=0        1: one more run encoding frames while sending
#   INGEST_SWEEP=""      e.g. "50 1000": one more run per agent count
#   INGEST_CONFIG=FILE   collector.yaml for the ingest runs (flags still set
#                        the URL, HTTP address and data dir)
#   BENCH_PROFILE=0      1: perf record the collector in the first ingest run
#   BYTES_POINTS=1,5,10,15,20,30,60
set -euo pipefail

BUILD=${1:-build}
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
BUILD=$(cd "$BUILD" && pwd)
COLLECTOR=$BUILD/collector/strata-collector
AGENT=$BUILD/agent/strata-agent
GEN=$BUILD/tests/ingest_bench

BENCH_ONLY=${BENCH_ONLY:-agent ingest bytes}
BENCH_DIR=${BENCH_DIR:-$BUILD/bench-data}
AGENT_SECONDS=${AGENT_SECONDS:-310}
AGENT_FLUSH=${AGENT_FLUSH:-15}
AGENT_WARMUP=${AGENT_WARMUP:-10}
INGEST_RUNS=${INGEST_RUNS:-1}
INGEST_AGENTS=${INGEST_AGENTS:-6000}
INGEST_SERIES=${INGEST_SERIES:-200}
INGEST_POINTS=${INGEST_POINTS:-10}
INGEST_INFLIGHT=${INGEST_INFLIGHT:-2}
INGEST_WARMUP=${INGEST_WARMUP:-20}
INGEST_SECONDS=${INGEST_SECONDS:-150}
INGEST_PACE=${INGEST_PACE:-realtime}
INGEST_MAX_RATE=${INGEST_MAX_RATE:-2.5e6}
INGEST_LIVE=${INGEST_LIVE:-0}
INGEST_SWEEP=${INGEST_SWEEP:-}
INGEST_CONFIG=${INGEST_CONFIG:-}
BENCH_PROFILE=${BENCH_PROFILE:-0}
BYTES_POINTS=${BYTES_POINTS:-1,5,10,15,20,30,60}
HZ=$(getconf CLK_TCK)

for b in "$COLLECTOR" "$AGENT" "$GEN"; do
    [ -x "$b" ] || { echo "bench: $b is missing; build first" >&2; exit 1; }
done
mkdir -p "$BENCH_DIR"
RUN_DIR=$(mktemp -d "$BENCH_DIR/run.XXXXXX")
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$RUN_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE
# one connection per simulated agent, in both processes
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

say() { printf '%s\n' "$*"; }
fmt() { awk -v x="$1" -v f="$2" 'BEGIN { printf f, x }'; }
# median of the numbers on stdin (one per line)
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "n/a";
    else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# value of key=value in a RESULT line
field() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; }

# A port nothing listens on, below the ephemeral range (outgoing
# connections take those, and a listener cannot see them).
free_port() {
    local p lo
    lo=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    for _ in $(seq 1 200); do
        p=$((10000 + RANDOM % (lo - 10000)))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# utime + stime of a whole process (exited threads included), clock ticks.
proc_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
# CPU time of the live threads, nanoseconds (finer than ticks).
proc_ns() { { cat /proc/"$1"/task/*/schedstat 2>/dev/null || true; } | awk '{ s += $1 } END { print s + 0 }'; }
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
metric() { curl -fsS "http://$1/metrics" | awk -v k="$2" '$1 == k { print $2 }'; }

# start_collector NAME [extra flags]: a collector with a fresh store on free
# ports; sets COL_PID, COL_URL, COL_HTTP.
start_collector() {
    local name=$1 ip hp
    shift
    for _ in 1 2 3 4 5; do
        ip=$(free_port) || continue
        hp=$(free_port) || continue
        [ "$ip" != "$hp" ] || continue
        rm -rf "${RUN_DIR:?}/$name"
        mkdir -p "$RUN_DIR/$name"
        COL_URL=tcp://127.0.0.1:$ip
        COL_HTTP=127.0.0.1:$hp
        "$COLLECTOR" "$@" --ingest "$COL_URL" --http "$COL_HTTP" \
            --data-dir "$RUN_DIR/$name/store" --log-level warn >"$RUN_DIR/$name/collector.log" 2>&1 &
        COL_PID=$!
        PIDS+=("$COL_PID")
        for _ in $(seq 1 100); do
            if curl -fsS "http://$COL_HTTP/readyz" >/dev/null 2>&1; then
                return 0
            fi
            kill -0 "$COL_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -TERM "$COL_PID" 2>/dev/null || true
        wait "$COL_PID" 2>/dev/null || true
    done
    echo "bench: the collector did not start; see $RUN_DIR/$name/collector.log" >&2
    cat "$RUN_DIR/$name/collector.log" >&2 || true
    exit 1
}

# SIGTERM, then SIGKILL after STOP_TIMEOUT s (a daemon that does not stop
# is reported, not waited for forever).
STOP_TIMEOUT=${STOP_TIMEOUT:-20}
stop_pid() {
    local i
    kill -TERM "$1" 2>/dev/null || return 0
    for i in $(seq 1 $((STOP_TIMEOUT * 10))); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$1" 2>/dev/null; then
        echo "    NOTE: pid $1 ($(cat "/proc/$1/comm" 2>/dev/null)) did not stop within" \
            "${STOP_TIMEOUT}s of SIGTERM; killed" >&2
        kill -KILL "$1" 2>/dev/null || true
    fi
    wait "$1" 2>/dev/null || true
}

# Load average and CPU / IO pressure (the share of the last minute in which
# some task waited for a CPU / for IO): other work on a shared machine.
machine_load() {
    local cpu io
    cpu=$(awk '/^some/ { sub("avg60=", "", $3); print $3 }' /proc/pressure/cpu 2>/dev/null)
    io=$(awk '/^some/ { sub("avg60=", "", $3); print $3 }' /proc/pressure/io 2>/dev/null)
    echo "loadavg $(cut -d' ' -f1 /proc/loadavg), cpu pressure ${cpu:-?} %, io pressure ${io:-?} %"
}

machine() {
    local fs
    fs=$(stat -f -c %T "$BENCH_DIR")
    say "== machine"
    say "cpu:     $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)," \
        "$(nproc) cores"
    say "memory:  $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    say "kernel:  $(uname -sr); $(sed -n 's/^PRETTY_NAME="\(.*\)"/\1/p' /etc/os-release 2>/dev/null)"
    say "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    local src
    src=$(awk -F= '/^CMAKE_HOME_DIRECTORY:/ { print $2 }' "$BUILD/CMakeCache.txt")
    if git -C "$src" rev-parse --short HEAD >/dev/null 2>&1; then
        say "source:  $src at $(git -C "$src" rev-parse --short HEAD)" \
            "$(git -C "$src" status --porcelain 2>/dev/null | grep -q . && echo '(work tree modified)')"
    else
        say "source:  $src $(cat "$src/COMMIT" 2>/dev/null || true)"
    fi
    say "build:   $BUILD ($(awk -F= '/^CMAKE_BUILD_TYPE:/ { print $2 }' "$BUILD/CMakeCache.txt"))"
    say "stores:  $BENCH_DIR ($fs)"
    say "load:    $(machine_load) (a shared machine: other work competes)"
    if [ "$fs" = tmpfs ] || [ "$fs" = ramfs ]; then
        say "WARNING: $BENCH_DIR is $fs: fsync is free there; ingest figures are not durable ones"
    fi
    say
}

# ---- 1. agent cost ----

# agent_start NAME SAMPLERS_YAML: a collector of its own (so that its
# /metrics counts this agent's bytes only; its pid is in DIR/collector.pid
# for the proc sampler) and an agent; sets APID, ACOL_PID, ACOL_HTTP.
agent_start() {
    local name=$1 samplers=$2 dir=$RUN_DIR/$1
    start_collector "$name-collector"
    ACOL_PID=$COL_PID
    ACOL_HTTP=$COL_HTTP
    mkdir -p "$dir/spool"
    echo "$COL_PID" >"$dir/collector.pid"
    cat >"$dir/agent.yaml" <<YAML
collector: $COL_URL
data_dir: $dir/spool
interval: 1s
flush_interval: ${AGENT_FLUSH}s
log_level: warn
samplers:
$samplers
YAML
    "$AGENT" --config "$dir/agent.yaml" >"$dir/agent.log" 2>&1 &
    APID=$!
    PIDS+=("$APID")
}

# agent_report LABEL PID COLLECTOR_HTTP NS0 NS1 TICKS0 TICKS1 SECS BYTES0 SAMPLES0 SUBS...
# BYTES0 and SAMPLES0: the collector's counts when the window began, so that
# wire bytes are those of the steady state, not of the first frames.
agent_report() {
    local label=$1 pid=$2 http=$3 ns0=$4 ns1=$5 t0=$6 t1=$7 secs=$8 b0=$9 s0=${10}
    shift 10
    local pct pct_ns us us_ns bytes samples frames bps wbps
    pct=$(awk -v a="$t0" -v b="$t1" -v hz="$HZ" -v s="$secs" 'BEGIN { printf "%.3f", (b - a) / hz / s * 100 }')
    us=$(awk -v a="$t0" -v b="$t1" -v hz="$HZ" -v s="$secs" 'BEGIN { printf "%.0f", (b - a) / hz / s * 1e6 }')
    pct_ns=$(awk -v a="$ns0" -v b="$ns1" -v s="$secs" 'BEGIN { printf "%.4f", (b - a) / 1e9 / s * 100 }')
    us_ns=$(awk -v a="$ns0" -v b="$ns1" -v s="$secs" 'BEGIN { printf "%.0f", (b - a) / 1e3 / s }')
    bytes=$(metric "$http" strata_ingest_bytes_total)
    samples=$(metric "$http" strata_ingest_samples_total)
    frames=$(metric "$http" strata_ingest_frames_applied_total)
    bps=$(awk -v b="$bytes" -v s="$samples" 'BEGIN { printf "%.3f", s ? b / s : 0 }')
    wbps=$(awk -v b="$bytes" -v s="$samples" -v b0="$b0" -v s0="$s0" \
        'BEGIN { printf "%.3f", (s > s0 ? (b - b0) / (s - s0) : 0) }')
    say "-- $label"
    say "CPU (utime+stime):   $pct % of one core, $us us per 1 s tick ($((t1 - t0)) ticks at $HZ Hz)"
    say "CPU (schedstat ns):  $pct_ns % of one core, $us_ns us per tick"
    say "CPU per ${AGENT_FLUSH} s window: $* %  (median $(printf '%s\n' "$@" | median) %)"
    say "RSS:                 VmRSS $(status_kb "$pid" VmRSS) kB (anon $(status_kb "$pid" RssAnon)," \
        "file $(status_kb "$pid" RssFile): shared libraries), VmHWM $(status_kb "$pid" VmHWM) kB," \
        "$(status_kb "$pid" Threads) threads"
    say "wire:                $frames frames, $samples samples, $bytes envelope bytes since the start:" \
        "$bps bytes/sample, $(awk -v s="$samples" -v f="$frames" 'BEGIN { printf "%.0f", f ? s / f : 0 }')" \
        "samples/frame; in the window: $((bytes - b0)) bytes, $((samples - s0)) samples: $wbps bytes/sample"
    say "RESULT agent label=$label cpu_pct=$pct cpu_pct_ns=$pct_ns us_per_tick=$us" \
        "rss_kb=$(status_kb "$pid" VmRSS) anon_kb=$(status_kb "$pid" RssAnon)" \
        "hwm_kb=$(status_kb "$pid" VmHWM) wire_bytes_per_sample=$wbps wire_bytes_per_sample_from_start=$bps"
}

bench_agent() {
    local window starts secs done_s=0 prev_t now_t k
    local -a pids=() https=() cols=() ns0=() nsp=() t0=() t1=() ns1=() subs0=() subs1=() wb0=() ws0=()
    say "== agent cost: interval 1s, flush ${AGENT_FLUSH}s, ${AGENT_SECONDS}s run, first ${AGENT_WARMUP}s" \
        "not measured; two agents side by side, each with its own collector:"
    say "   full = samplers host, tcp, proc (one process by pidfile: its collector);" \
        "base = host, tcp"
    # a pidfile, not a name: other strata-collector processes on a shared
    # machine would be summed in (and each costs a smaps_rollup read)
    agent_start agent-full "  host:
  tcp:
  proc:
    match:
      - pidfile: $RUN_DIR/agent-full/collector.pid"
    pids+=("$APID") https+=("$ACOL_HTTP") cols+=("$ACOL_PID")
    agent_start agent-base "  host:
  tcp:"
    pids+=("$APID") https+=("$ACOL_HTTP") cols+=("$ACOL_PID")
    sleep "$AGENT_WARMUP"
    for k in 0 1; do
        kill -0 "${pids[$k]}" 2>/dev/null || {
            echo "bench: an agent exited" >&2
            cat "$RUN_DIR"/agent-*/agent.log >&2
            exit 1
        }
    done
    window=$((AGENT_SECONDS - AGENT_WARMUP))
    [ "$window" -ge "$AGENT_FLUSH" ] || { echo "bench: AGENT_SECONDS must exceed AGENT_WARMUP by AGENT_FLUSH" >&2; exit 1; }
    for k in 0 1; do
        t0[k]=$(proc_ticks "${pids[$k]}")
        ns0[k]=$(proc_ns "${pids[$k]}")
        nsp[k]=${ns0[$k]}
        wb0[k]=$(metric "${https[$k]}" strata_ingest_bytes_total)
        ws0[k]=$(metric "${https[$k]}" strata_ingest_samples_total)
    done
    starts=$(date +%s.%N)
    prev_t=$starts
    # Sub-windows of one flush each give a median within the one run.
    while [ $((done_s + AGENT_FLUSH)) -le "$window" ]; do
        sleep "$(awk -v s="$prev_t" -v n="$(date +%s.%N)" -v w="$AGENT_FLUSH" 'BEGIN { d = s + w - n; print (d > 0 ? d : 0) }')"
        now_t=$(date +%s.%N)
        for k in 0 1; do
            local now_ns pct
            now_ns=$(proc_ns "${pids[$k]}")
            pct=$(awk -v a="${nsp[$k]}" -v b="$now_ns" -v s="$prev_t" -v e="$now_t" \
                'BEGIN { printf "%.4f", (b - a) / 1e9 / (e - s) * 100 }')
            if [ "$k" = 0 ]; then subs0+=("$pct"); else subs1+=("$pct"); fi
            nsp[k]=$now_ns
        done
        prev_t=$now_t
        done_s=$((done_s + AGENT_FLUSH))
    done
    for k in 0 1; do
        t1[k]=$(proc_ticks "${pids[$k]}")
        ns1[k]=$(proc_ns "${pids[$k]}")
    done
    secs=$(awk -v s="$starts" -v e="$prev_t" 'BEGIN { print e - s }')
    say "window: $(fmt "$secs" %.1f) s   [targets: <= 0.1 % of one core, RSS <= 8 MB = 8192 kB," \
        "<= 2 bytes/sample]"
    say "the process the proc sampler reads: VmRSS $(status_kb "${cols[0]}" VmRSS) kB," \
        "VmSize $(status_kb "${cols[0]}" VmSize) kB"
    agent_report "full (host, tcp, proc)" "${pids[0]}" "${https[0]}" "${ns0[0]}" "${ns1[0]}" \
        "${t0[0]}" "${t1[0]}" "$secs" "${wb0[0]}" "${ws0[0]}" "${subs0[@]}"
    agent_report "base (host, tcp)" "${pids[1]}" "${https[1]}" "${ns0[1]}" "${ns1[1]}" \
        "${t0[1]}" "${t1[1]}" "$secs" "${wb0[1]}" "${ws0[1]}" "${subs1[@]}"
    for k in 0 1; do
        stop_pid "${pids[$k]}"
        stop_pid "${cols[$k]}"
    done
    say
}

# ---- 2. collector ingest ----

# ingest_run NAME AGENTS [extra ingest_bench flags]: prints the RESULT line.
ingest_run() {
    local name=$1 agents=$2 perf_pid=""
    shift 2
    if [ -n "$INGEST_CONFIG" ]; then
        start_collector "$name" --config "$INGEST_CONFIG"
    else
        start_collector "$name"
    fi
    if [ "$BENCH_PROFILE" = 1 ] && [ "$name" = ingest1 ] && command -v perf >/dev/null; then
        (
            # after the pre-encoding (a few seconds), mid-window
            sleep $((INGEST_WARMUP + INGEST_SECONDS / 2))
            exec perf record -F 499 -g -p "$COL_PID" -o "$RUN_DIR/perf.data" -- \
                sleep $((INGEST_SECONDS > 40 ? 20 : INGEST_SECONDS / 2)) >/dev/null 2>&1
        ) &
        perf_pid=$!
    fi
    local load0
    load0=$(machine_load)
    "$GEN" --url "$COL_URL" --metrics "http://$COL_HTTP/metrics" --collector-pid "$COL_PID" \
        --agents "$agents" --series "$INGEST_SERIES" --points "$INGEST_POINTS" \
        --inflight "$INGEST_INFLIGHT" --warmup "$INGEST_WARMUP" --duration "$INGEST_SECONDS" \
        --pace "$INGEST_PACE" --max-rate "$INGEST_MAX_RATE" --progress "$@" \
        >"$RUN_DIR/$name.out" 2>"$RUN_DIR/$name.err" ||
        { cat "$RUN_DIR/$name.out" "$RUN_DIR/$name.err" >&2; exit 1; }
    [ -z "$perf_pid" ] || wait "$perf_pid" || true
    echo "    machine load before: $load0; after: $(machine_load)" >&2
    if ! kill -0 "$COL_PID" 2>/dev/null; then
        echo "    THE COLLECTOR DIED during this run; its log ends with:" >&2
        tail -5 "$RUN_DIR/$name/collector.log" | sed 's/^/      /' >&2
        dmesg 2>/dev/null | grep -E 'strata|nng|segfault' | tail -2 | sed 's/^/      /' >&2 || true
        sed -i 's/^RESULT /RESULT collector_died=1 /' "$RUN_DIR/$name.out"
    fi
    stop_pid "$COL_PID"
    grep -v '^RESULT' "$RUN_DIR/$name.out" | sed 's/^/    /' >&2
    # the acked rate and the backlog every 10 s, to show how they move
    awk '/frames\/s acked/ { s += $1; n++; if (n % 10 == 0) {
             printf " %.2fM/%d", s / 10 * sp / 1e6, $(NF); s = 0 } }
         END { print "" }' sp="$((INGEST_SERIES * INGEST_POINTS))" "$RUN_DIR/$name.err" |
        sed 's/^/    every 10 s from the start, samples\/s acked \/ frames due and not acked:/' >&2
    # the same within the measured window: median, min, max
    local w
    w=$(awk -v skip="$INGEST_WARMUP" -v sp="$((INGEST_SERIES * INGEST_POINTS))" \
        '/frames\/s acked/ { n++; if (n <= skip) next; s += $1; k++;
             if (k % 10 == 0) { print s / 10 * sp; s = 0 } }' "$RUN_DIR/$name.err")
    if [ -n "$w" ]; then
        local med lo hi
        med=$(median <<<"$w")
        lo=$(sort -g <<<"$w" | head -1)
        hi=$(sort -g <<<"$w" | tail -1)
        echo "    10 s windows in the measured window: median $(fmt "$med" %.0f), min $(fmt "$lo" %.0f)," \
            "max $(fmt "$hi" %.0f) samples/s" >&2
        sed -i "s/^RESULT /RESULT win10_median=$(fmt "$med" %.0f) win10_min=$(fmt "$lo" %.0f) /" \
            "$RUN_DIR/$name.out"
    fi
    grep -m1 'rejected:' "$RUN_DIR/$name.err" >&2 || true
    grep '^RESULT' "$RUN_DIR/$name.out"
}

# One measured run with its human lines on stderr; the RESULT line is
# collected from the .out file afterwards.
run_and_show() {
    local name=$1
    shift
    ingest_run "$name" "$@" >/dev/null 2>"$RUN_DIR/$name.show" || { cat "$RUN_DIR/$name.show"; exit 1; }
    cat "$RUN_DIR/$name.show"
    grep '^RESULT' "$RUN_DIR/$name.out"
}

summarise_ingest() {
    local -a lines
    mapfile -t lines < <(cat "$@" | grep -h '^RESULT' || true)
    [ "${#lines[@]}" -gt 0 ] || return 0
    local key
    say "median of ${#lines[@]} runs:"
    for key in offered_samples_per_s samples_per_s win10_median win10_min frames_per_s \
        backlog_start backlog_end collector_cpu_pct gen_cpu_pct collector_rss_kb \
        collector_anon_kb collector_hwm_kb disk_write_mb_per_s disk_bytes_per_sample \
        run_commits_per_s run_frames_per_commit commit_mean_ms metrics_fetch_s; do
        local vals
        vals=$(for l in "${lines[@]}"; do field "$l" "$key"; done | tr '\n' ' ')
        printf '  %-22s %-14s (runs: %s)\n' "$key" \
            "$(for v in $vals; do echo "$v"; done | median)" "$vals"
    done
    printf '  %-22s %s\n' commit_p99_le "$(for l in "${lines[@]}"; do field "$l" commit_p99_le; done |
        tr '\n' ' ') (bucket upper bounds, s)"
}

bench_ingest_all() {
    local i
    say "== collector ingest: $INGEST_AGENTS agents x $INGEST_SERIES series x $INGEST_POINTS" \
        "points per frame ($((INGEST_SERIES * INGEST_POINTS)) samples), one connection and" \
        "$INGEST_INFLIGHT requests in flight per agent, pace $INGEST_PACE, frames pre-encoded" \
        "before the timed phase; a fresh durable store per run; ${INGEST_WARMUP}s warm-up," \
        "${INGEST_SECONDS}s measured"
    for i in $(seq 1 "$INGEST_RUNS"); do
        say "-- run $i"
        run_and_show "ingest$i" "$INGEST_AGENTS"
    done
    summarise_ingest "$RUN_DIR"/ingest[0-9]*.out
    say "[target >= 1,000,000 samples/s sustained (acked = offered, backlog not growing)," \
        "commits <= 250 ms]"
    if [ -f "$RUN_DIR/perf.data" ]; then
        say "-- perf profile of the collector (run 1, 20 s of the measured window; self time)"
        say "   by thread:"
        perf report -i "$RUN_DIR/perf.data" --stdio --no-children -g none --sort comm \
            2>/dev/null | grep -E '^ +[0-9]' | head -6
        say "   by library:"
        perf report -i "$RUN_DIR/perf.data" --stdio --no-children -g none --sort dso \
            2>/dev/null | grep -E '^ +[0-9]' | head -8
        say "   by function:"
        perf report -i "$RUN_DIR/perf.data" --stdio --no-children -g none --sort dso,sym \
            --percent-limit 1 2>/dev/null | grep -E '^ +[0-9]' | head -25
    fi
    if [ "$INGEST_LIVE" = 1 ]; then
        say "-- live encoding (the generator encodes while it sends)"
        run_and_show ingest_live "$INGEST_AGENTS" --live
    fi
    for n in $INGEST_SWEEP; do
        say "-- $n agents"
        run_and_show "ingest_sweep$n" "$n"
    done
    say
}

# ---- 3. bytes on the wire ----

bench_bytes() {
    say "== wire bytes per sample: the ${INGEST_SERIES}-series mix, zstd level 6 (the agent's), by points per frame"
    say "-- codec 2 (zstd with the wire dictionary: what agents send to this collector)"
    "$GEN" --bytes "$BYTES_POINTS" --series "$INGEST_SERIES" --agents 8 | grep -v '^RESULT'
    say "-- codec 1 (zstd alone: what agents send to a collector that does not list codec 2)"
    "$GEN" --bytes "$BYTES_POINTS" --series "$INGEST_SERIES" --agents 8 --codec 1 | grep -v '^RESULT'
    say "[target <= 2 bytes/sample; points per frame = flush_interval / interval]"
    say
}

machine
for b in $BENCH_ONLY; do
    case $b in
    agent) bench_agent ;;
    ingest) bench_ingest_all ;;
    bytes) bench_bytes ;;
    *) echo "bench: unknown benchmark $b" >&2; exit 2 ;;
    esac
done
