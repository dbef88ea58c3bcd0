#!/usr/bin/env bash
# A collector outage: the collector stops (SIGTERM) for 30 s while three
# agents keep sampling; their spools grow on disk; after the restart every
# spooled frame is delivered: frames == seq == the last seq each agent
# spooled, and the stored points cover the outage window without gaps. A
# fourth agent starts during the outage: its first contact is its backlog.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

AGENT_INTERVAL=250ms
AGENT_FLUSH=500ms
INTERVAL_MS=250
OUTAGE_S=${OUTAGE_S:-30}

collector_start
agent_config 1 outage-edge-1 edge
agent_config 2 outage-app-1 app
agent_config 3 outage-db-1 db
for i in 1 2 3; do agent_start "$i"; done
wait_for 30 "all three agents to appear in /v1/agents with seq >= 3" all_agents_seen 3

# The collector goes away; what it had applied per agent is SEQ0.
declare -a SEQ0=() MID=()
J=$(agents_json)
for i in 1 2 3; do SEQ0[$i]=$(agent_field "${AGENT_HOST[$i]}" seq "$J"); done
T_STOP=$(date +%s%3N)
collector_stop TERM
assert_eq 0 "$ST_RC" "collector exit status after SIGTERM"
log "outage begins; applied seqs were ${SEQ0[*]}"
agent_config 4 outage-late-1 cdn
agent_start 4
SEQ0[4]=0

# pending I: frames on agent I's disk that the collector never saw.
pending() {
    local last
    last=$(spool_state "$1" last_seq)
    echo $((last - SEQ0[$1]))
}
spools_hold() {
    local i
    for i in 1 2 3 4; do (($(pending "$i") >= $1)) || return 1; done
}
wait_for 20 "every agent to spool >= 10 frames while the collector is down" spools_hold 10
for i in 1 2 3 4; do MID[$i]=$(pending "$i"); done
# The rest of the outage is the experiment's length, not a wait for a condition.
left_ms=$((OUTAGE_S * 1000 - ($(date +%s%3N) - T_STOP)))
if ((left_ms > 0)); then sleep "$((left_ms / 1000)).$(printf '%03d' $((left_ms % 1000)))"; fi
declare -a TARGET=() RECORDS=()
for i in 1 2 3 4; do
    read -r "TARGET[$i]" "RECORDS[$i]" < <(spool_state "$i" | jq -r '"\(.last_seq) \(.records)"')
done
T_START=$(date +%s%3N)
collector_start
log "outage over after $(((T_START - T_STOP) / 1000)) s"
for i in 1 2 3 4; do
    p=$((TARGET[i] - SEQ0[i]))
    log "agent$i ${AGENT_HOST[$i]}: $p frames pending at the end of the outage (${MID[$i]} earlier), ${RECORDS[$i]} records on disk"
    assert_gt "$p" "${MID[$i]}" "agent$i spool growth during the outage (pending frames)"
    # One frame per flush (500 ms): at least a third of the outage's worth.
    assert_ge "$p" $((OUTAGE_S * 1000 / 500 / 3)) "agent$i frames spooled during the outage"
    assert_ge "${RECORDS[$i]}" "$p" "agent$i records in its spool segments"
done

for i in 1 2 3 4; do
    wait_for 60 "agent$i to deliver its spooled frames up to seq ${TARGET[$i]}" \
        agent_seq_at_least "$i" "${TARGET[$i]}"
done
log "backlog delivered"

# The agents reported their backlog themselves, in agent.spool.frames.
spool_peak() {
    local out
    out=$(query agent.spool.frames "$1" "$T_STOP" "$(date +%s%3N)") || return 1
    jq '[.series[].points[][1]] | max // 0 | floor' <<<"$out"
}
peak_at_least() { (($(spool_peak "$1") >= $2)); }
assert_eq cdn "$(agent_field outage-late-1 role)" "role of the agent that started during the outage"
assert_eq "$(agent_id 4)" "$(agent_field outage-late-1 id)" "id of the agent that started during the outage"
for i in 1 2 3 4; do
    wait_for 20 "agent.spool.frames of ${AGENT_HOST[$i]} to show the backlog" \
        peak_at_least "${AGENT_HOST[$i]}" "${MID[$i]}"
done

# The points cover the outage: no hole longer than a few intervals.
# coverage METRIC HOST: "count max_gap_ms first_ms last_ms" inside (T_STOP, T_START).
coverage() {
    query "$1" "$2" "$((T_STOP - 5000))" "$((T_START + 5000))" |
        jq -r --argjson a "$T_STOP" --argjson b "$T_START" '
            [.series[].points[][0]] | unique | map(select(. > $a and . < $b)) as $p
            | [$p | length,
               ([range(1; $p | length) as $k | $p[$k] - $p[$k - 1]] | max // 0),
               ($p[0] // 0), ($p[-1] // 0)] | map(tostring) | join(" ")'
}
WINDOW_MS=$((T_START - T_STOP))
for i in 1 2 3; do
    for m in host.cpu.utilization tcp.curr_estab; do
        read -r n gap first last < <(coverage "$m" "${AGENT_HOST[$i]}")
        log "$m ${AGENT_HOST[$i]}: $n points in the ${WINDOW_MS} ms outage, largest gap $gap ms"
        assert_ge "$n" $((WINDOW_MS * 7 / 10 / INTERVAL_MS)) "$m points of ${AGENT_HOST[$i]} inside the outage"
        # Frames lost in transport are caught exactly by frames == seq below;
        # this looks for a whole stretch missing, and tolerates a sampler that
        # a loaded machine starved for a second.
        (( gap <= 8 * INTERVAL_MS )) || fail "$m of ${AGENT_HOST[$i]}: a hole of $gap ms inside the outage"
        (( first - T_STOP <= 3 * INTERVAL_MS && T_START - last <= 3 * INTERVAL_MS )) ||
            fail "$m of ${AGENT_HOST[$i]}: points span only $first..$last of $T_STOP..$T_START"
    done
done

drain_agents
for i in 1 2 3 4; do assert_no_loss "$i"; done
collector_stop TERM
assert_eq 0 "$ST_RC" "collector exit status after SIGTERM"
pass
