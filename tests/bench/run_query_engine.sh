#!/usr/bin/env bash
# The store-side benchmarks: query latency and store bytes per sample
# (query_bench), the rollup builder's cost on ingest (rollup_ingest_bench),
# one optimization-engine run with a concurrent writer (engine_bench) and
# store bytes per sample on a real agent's recorded frames
# (store_real_bench, on tests/bench/data/real-agent by default).
# It builds nothing and asserts nothing: it runs the programs of an existing
# build and prints their figures (human lines, then RESULT lines that
# scripts can read). BENCHMARKS.md explains every figure. The defaults take
# about 4 minutes on 2 cores; the engine's target fleet (ENGINE_HOSTS=1000)
# takes about 8 more, most of it in the engine runs themselves.
#
#   tests/bench/run_query_engine.sh [BUILD_DIR]      (default: build)
#
# Knobs (environment):
#   QE_ONLY="query rollup engine real"  which benchmarks to run
#   REAL_FRAMES=DIR        the recording "real" replays (default
#                          tests/bench/data/real-agent: 90 minutes of one
#                          agent with every sampler against real servers,
#                          BENCHMARKS.md): what ST_BENCH_SECONDS=5400
#                          ST_BENCH_FRAMES=DIR tests/bench/agent_all_bench.sh
#                          BUILD writes (its spool is DIR/spool; read, never
#                          written)
#   REAL_ARGS=""           more store_real_bench flags (e.g. --batch 500)
#   BENCH_DIR=DIR          stores (default BUILD/bench-data; keep it on a real
#                          disk: on tmpfs fsync costs nothing)
#   QE_MACHINE=1           0: skip the machine header (when run.sh prints it)
#   QUERY_HOSTS=1000 QUERY_MINUTES=130 QUERY_RUNS=200 QUERY_BUDGET=8
#                          (seconds per query case) QUERY_SIZE_HOSTS=50
#                          QUERY_SHAPES=10000x1,10000x6,1000x10
#                          QUERY_SIZE_MINUTES=1080 (the shape stores: long enough
#                          that hours and a day of 1 h rows are compacted)
#                          QUERY_STEADY_DAYS=31 QUERY_STEADY_HOSTS=4 (the measured
#                          steady state: that many days with the builder, retention
#                          and compaction every data hour; 0 days: skipped)
#   QUERY_ARGS=""          more query_bench flags (e.g. --compare-main)
#   ROLLUP_AGENTS=500 ROLLUP_SERIES=200 ROLLUP_POINTS=10 ROLLUP_ROUNDS=12
#   ROLLUP_BATCH=250 ROLLUP_RUNS=3 ROLLUP_MODES=durable,nosync
#   ENGINE_HOSTS=200 ENGINE_SERIES=200 ENGINE_RAW_MINUTES=70 ENGINE_POINTS=6
#   ENGINE_HISTORY_HOURS=24 ENGINE_RUNS=28 ENGINE_WRITER_SECONDS=15
#   ENGINE_ARGS=""         more engine_bench flags (e.g. --build-recent)
#   QE_PROFILE=0           1: perf record each program (perf report --stdio
#                          head printed after it)
set -euo pipefail

BUILD=${1:-build}
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
BUILD=$(cd "$BUILD" && pwd)
BIN=$BUILD/tests

QE_ONLY=${QE_ONLY:-query rollup engine real}
BENCH_DIR=${BENCH_DIR:-$BUILD/bench-data}
QE_MACHINE=${QE_MACHINE:-1}
QE_PROFILE=${QE_PROFILE:-0}
QUERY_HOSTS=${QUERY_HOSTS:-1000}
QUERY_MINUTES=${QUERY_MINUTES:-130}
QUERY_RUNS=${QUERY_RUNS:-200}
QUERY_BUDGET=${QUERY_BUDGET:-8}
QUERY_SIZE_HOSTS=${QUERY_SIZE_HOSTS:-50}
QUERY_SHAPES=${QUERY_SHAPES:-10000x1,10000x6,1000x10}
QUERY_SIZE_MINUTES=${QUERY_SIZE_MINUTES:-1080}
QUERY_STEADY_DAYS=${QUERY_STEADY_DAYS:-31}
QUERY_STEADY_HOSTS=${QUERY_STEADY_HOSTS:-4}
QUERY_ARGS=${QUERY_ARGS:-}
ROLLUP_AGENTS=${ROLLUP_AGENTS:-500}
ROLLUP_SERIES=${ROLLUP_SERIES:-200}
ROLLUP_POINTS=${ROLLUP_POINTS:-10}
ROLLUP_ROUNDS=${ROLLUP_ROUNDS:-12}
ROLLUP_BATCH=${ROLLUP_BATCH:-250}
ROLLUP_RUNS=${ROLLUP_RUNS:-3}
ROLLUP_MODES=${ROLLUP_MODES:-durable,nosync}
ENGINE_HOSTS=${ENGINE_HOSTS:-200}
ENGINE_SERIES=${ENGINE_SERIES:-200}
ENGINE_RAW_MINUTES=${ENGINE_RAW_MINUTES:-70}
ENGINE_POINTS=${ENGINE_POINTS:-6}
ENGINE_HISTORY_HOURS=${ENGINE_HISTORY_HOURS:-24}
ENGINE_RUNS=${ENGINE_RUNS:-28}
ENGINE_WRITER_SECONDS=${ENGINE_WRITER_SECONDS:-15}
ENGINE_ARGS=${ENGINE_ARGS:-}
REAL_FRAMES=${REAL_FRAMES:-$top/tests/bench/data/real-agent}
REAL_ARGS=${REAL_ARGS:-}

for b in query_bench rollup_ingest_bench engine_bench; do
    [ -x "$BIN/$b" ] || { echo "bench: $BIN/$b is missing; build first" >&2; exit 1; }
done
mkdir -p "$BENCH_DIR"
RUN_DIR=$(mktemp -d "$BENCH_DIR/qe.XXXXXX")
cleanup() { rm -rf "$RUN_DIR"; }
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE

say() { printf '%s\n' "$*"; }

machine() {
    local fs
    fs=$(stat -f -c %T "$BENCH_DIR")
    say "== machine"
    say "cpu:     $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(nproc) cores"
    say "memory:  $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    say "kernel:  $(uname -sr)"
    say "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    say "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
    if git -C "$top" rev-parse --short HEAD >/dev/null 2>&1; then
        say "source:  $top at $(git -C "$top" rev-parse --short HEAD)" \
            "$(git -C "$top" status --porcelain 2>/dev/null | grep -q . && echo '(work tree modified)')"
    fi
    say "build:   $BUILD ($(awk -F= '/^CMAKE_BUILD_TYPE:/ { print $2 }' "$BUILD/CMakeCache.txt" 2>/dev/null))"
    say "stores:  $BENCH_DIR ($fs)"
    if [ "$fs" = tmpfs ] || [ "$fs" = ramfs ]; then
        say "WARNING: $BENCH_DIR is $fs: fsync is free there; durable figures are not durable ones"
    fi
    say
}

# run NAME PROGRAM ARGS...: runs one program in its own store directory,
# optionally under perf, and prints its output as it comes.
run() {
    local name=$1 prog=$2 t0
    shift 2
    mkdir -p "$RUN_DIR/$name"
    t0=$(date +%s)
    if [ "$QE_PROFILE" = 1 ] && command -v perf >/dev/null; then
        perf record -g -o "$RUN_DIR/$name.perf" -- "$BIN/$prog" --dir "$RUN_DIR/$name" "$@" \
            2>"$RUN_DIR/$name.err" || { cat "$RUN_DIR/$name.err" >&2; exit 1; }
        say "-- perf profile of $prog (children, top 60 lines)"
        perf report -i "$RUN_DIR/$name.perf" --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' |
            head -60
    else
        "$BIN/$prog" --dir "$RUN_DIR/$name" "$@" 2>"$RUN_DIR/$name.err" ||
            { cat "$RUN_DIR/$name.err" >&2; exit 1; }
    fi
    # the store logs warnings on stderr (map growth, rules that failed)
    if [ -s "$RUN_DIR/$name.err" ]; then
        say "-- $prog stderr (first lines):"
        head -5 "$RUN_DIR/$name.err"
    fi
    say "-- $prog took $(($(date +%s) - t0)) s"
    rm -rf "${RUN_DIR:?}/$name"
    say
}

[ "$QE_MACHINE" = 0 ] || machine
for b in $QE_ONLY; do
    case $b in
    query)
        # shellcheck disable=SC2086
        run query query_bench --hosts "$QUERY_HOSTS" --minutes "$QUERY_MINUTES" \
            --runs "$QUERY_RUNS" --budget "$QUERY_BUDGET" --size-hosts "$QUERY_SIZE_HOSTS" \
            --size-shapes "$QUERY_SHAPES" --size-minutes "$QUERY_SIZE_MINUTES" \
            --steady-days "$QUERY_STEADY_DAYS" --steady-hosts "$QUERY_STEADY_HOSTS" $QUERY_ARGS
        ;;
    rollup)
        run rollup rollup_ingest_bench --agents "$ROLLUP_AGENTS" --series "$ROLLUP_SERIES" \
            --points "$ROLLUP_POINTS" --rounds "$ROLLUP_ROUNDS" --batch "$ROLLUP_BATCH" \
            --runs "$ROLLUP_RUNS" --modes "$ROLLUP_MODES"
        ;;
    engine)
        # shellcheck disable=SC2086
        run engine engine_bench --hosts "$ENGINE_HOSTS" --series "$ENGINE_SERIES" \
            --raw-minutes "$ENGINE_RAW_MINUTES" --points "$ENGINE_POINTS" \
            --history-hours "$ENGINE_HISTORY_HOURS" --runs "$ENGINE_RUNS" \
            --writer-seconds "$ENGINE_WRITER_SECONDS" $ENGINE_ARGS
        ;;
    real)
        if [ ! -d "$REAL_FRAMES/spool" ]; then
            echo "bench: $REAL_FRAMES/spool is missing: REAL_FRAMES=DIR names a recording of" \
                "tests/bench/agent_all_bench.sh with ST_BENCH_FRAMES=DIR" >&2
            exit 1
        fi
        [ -x "$BIN/store_real_bench" ] ||
            { echo "bench: $BIN/store_real_bench is missing; build first" >&2; exit 1; }
        # shellcheck disable=SC2086
        run real store_real_bench --frames "$REAL_FRAMES" $REAL_ARGS
        ;;
    *)
        echo "bench: unknown benchmark $b (query, rollup, engine, real)" >&2
        exit 2
        ;;
    esac
done
