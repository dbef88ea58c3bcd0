#!/usr/bin/env bash
# Crash safety: while three agents send fast, the collector is killed with
# SIGKILL several times and restarted on the same data dir and port, and two
# agents are killed with SIGKILL and restarted (one while the collector is up,
# one while it is down). Once everything drained, every
# agent's frames were applied exactly once: frames == seq == the last seq it
# spooled, and the killed agents kept their ids.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

AGENT_FLUSH=150ms
AGENT_INTERVAL=100ms
KILLS=${KILLS:-6}
MIN_SEQ=60

collector_start
agent_config 1 kill-edge-1 edge
agent_config 2 kill-app-1 app
agent_config 3 kill-db-1 db
for i in 1 2 3; do agent_start "$i"; done
wait_for 30 "all three agents to appear in /v1/agents" all_agents_seen 3
declare -a IDS=()
for i in 1 2 3; do
    IDS[$i]=$(agent_field "${AGENT_HOST[$i]}" id)
    assert_eq "$(agent_id "$i")" "${IDS[$i]}" "id of ${AGENT_HOST[$i]} (vs its spool's agent.id)"
done

# all_advanced_past: every agent's applied seq is above what SEQ0 recorded.
declare -a SEQ0=()
record_seqs() {
    local i j
    j=$(agents_json)
    for i in 1 2 3; do SEQ0[$i]=$(agent_field "${AGENT_HOST[$i]}" seq "$j"); done
}
all_advanced_past() {
    local i
    for i in 1 2 3; do agent_seq_at_least "$i" $((SEQ0[i] + 2)) || return 1; done
}

dup_total=0
for ((k = 1; k <= KILLS; k++)); do
    # Let the agents send for a random 1-3 s so the kill lands anywhere in
    # the receive / commit / acknowledge cycle; this is the experiment's
    # schedule, not a wait for a condition.
    sleep "$((1 + RANDOM % 3)).$((RANDOM % 10))"
    if ((k == 2)); then
        # An agent dies mid-run while the collector takes its frames.
        agent_stop 2 KILL
        assert_eq 137 "$ST_RC" "agent2 exit status after SIGKILL"
        agent_start 2
    fi
    dup_total=$((dup_total + $(metric strata_ingest_frames_duplicate_total)))
    kill -KILL "$COLLECTOR_PID"
    reap "$COLLECTOR_PID" 10
    assert_eq 137 "$ST_RC" "collector exit status after SIGKILL"
    COLLECTOR_PID=
    log "kill $k/$KILLS: collector killed with SIGKILL"
    if ((k == 4)); then
        # Another agent dies while the collector is down and frames pile up.
        agent_stop 3 KILL
        assert_eq 137 "$ST_RC" "agent3 exit status after SIGKILL"
        agent_start 3
    fi
    if ((k % 2 == 0)); then
        sleep 0.$((RANDOM % 10)) # sometimes stay down a little while agents retry
    fi
    collector_start
    record_seqs
    wait_for 60 "every agent to get frames applied again after restart $k (${SEQ0[*]})" \
        all_advanced_past
done
dup_total=$((dup_total + $(metric strata_ingest_frames_duplicate_total)))

# The killed agents kept their ids and their collector entries.
J=$(agents_json)
for i in 2 3; do
    h=${AGENT_HOST[$i]}
    assert_eq 1 "$(jq --arg h "$h" '[.agents[] | select(.host == $h)] | length' <<<"$J")" \
        "entries for $h in /v1/agents after its kill -9 and restart"
    assert_eq "${IDS[$i]}" "$(agent_field "$h" id "$J")" "id of $h after kill -9 and restart"
    assert_eq "${IDS[$i]}" "$(agent_id "$i")" "agent.id of $h on disk after kill -9 and restart"
done
assert_eq 3 "$(jq '[.agents[] | select(.host | startswith("kill-"))] | length' <<<"$J")" \
    "agents in /v1/agents"

drain_agents
for i in 1 2 3; do
    assert_no_loss "$i"
    assert_ge "$(agent_field "${AGENT_HOST[$i]}" seq)" "$MIN_SEQ" "seq of ${AGENT_HOST[$i]}"
    assert_eq "${IDS[$i]}" "$(agent_field "${AGENT_HOST[$i]}" id)" "id of ${AGENT_HOST[$i]}"
done
log "duplicates acknowledged over all collector lives: $dup_total (allowed)"

collector_stop TERM
assert_eq 0 "$ST_RC" "collector exit status after SIGTERM"
pass
