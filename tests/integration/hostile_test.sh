#!/usr/bin/env bash
# A hostile network: while one good agent sends, junk hits the ingest port
# (random bytes over raw TCP, wrong SP handshakes, absurd SP lengths, idle
# half-open connections) and well-formed nng req0 requests carry bad
# envelopes (hostile.py). Every bad envelope is answered REJECTED with a
# reason and counted under a distinct reason; the collector stays up and the
# good agent keeps flowing with frames == seq.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HOSTILE="python3 $ST_LIB_DIR/hostile.py"
AGENT_FLUSH=200ms

collector_start
agent_config 1 hostile-good-1 app
agent_start 1
wait_for 30 "the good agent to appear in /v1/agents with seq >= 3" all_agents_seen 3
SEQ0=$(agent_field hostile-good-1 seq)

# The control: our req0 client speaks well enough to get a valid frame
# applied (OK) and its resend acknowledged as DUPLICATE.
$HOSTILE valid 127.0.0.1 "$INGEST_PORT" >"$T/valid.out" 2>&1 ||
    fail "hostile.py valid failed: $(cat "$T/valid.out")"
got=$(jq -r .status_name "$T/valid.out" | tr '\n' ' ')
assert_eq "OK DUPLICATE " "$got" "acks of a valid frame and its resend (control)"
assert_eq 1 "$(agent_field hostile-control frames)" "frames applied for the control agent"

# Random bytes over raw TCP connections, from bash itself.
for n in 1 2 3 4 5; do
    if exec 3<>"/dev/tcp/127.0.0.1/$INGEST_PORT"; then
        head -c 65536 /dev/urandom >&3 2>/dev/null || true
        exec 3>&-
    else
        fail "cannot connect to the ingest port 127.0.0.1:$INGEST_PORT (round $n)"
    fi
done
log "5 connections of random bytes sent"

# For ATTACK_S seconds: junk connections in the background, and three
# senders of bad envelopes, each over its own connection, round after round.
ATTACK_S=${ATTACK_S:-12}
NCASES=$($HOSTILE count)
check_envelopes() {
    local out=$1 n bad
    n=$(wc -l <"$out")
    ((n == NCASES)) || fail "hostile.py envelopes answered $n requests, expected $NCASES: $(cat "$out")"
    bad=$(jq -c 'select(.status_name != "REJECTED" or (.reason | length) == 0)' "$out")
    [[ -z "$bad" ]] || fail "bad envelopes must get REJECTED with a reason; got: $bad"
}
spawn garbage "$T/garbage.out" $HOSTILE garbage 127.0.0.1 "$INGEST_PORT" "$ATTACK_S"
GARBAGE_PID=$ST_PID
declare -a SENDER_PID=()
for s in 1 2 3; do
    spawn "sender$s" "$T/sender$s.out" bash -c '
        end=$((SECONDS + $1)); r=0
        while ((SECONDS < end)); do
            r=$((r + 1))
            '"$HOSTILE"' envelopes 127.0.0.1 $2 >"$3.$r" 2>&1 || { echo "round $r failed"; exit 1; }
        done
        echo "$r rounds"' sender "$ATTACK_S" "$INGEST_PORT" "$T/env$s"
    SENDER_PID[$s]=$ST_PID
done
SEQ_ATTACK=$(agent_field hostile-good-1 seq)
RSS_BEFORE=$(awk '/^VmRSS/ {print $2}' "/proc/$COLLECTOR_PID/status")
for s in 1 2 3; do
    reap "${SENDER_PID[$s]}" $((ATTACK_S + 60))
    assert_eq 0 "$ST_RC" "bad-envelope sender $s exit status ($(cat "$T/sender$s.out"))"
done
reap "$GARBAGE_PID" $((ATTACK_S + 60))
assert_eq 0 "$ST_RC" "hostile.py garbage exit status"
log "junk: $(tail -n 1 "$T/garbage.out")"
ROUNDS=0
for f in "$T"/env[123].*; do
    check_envelopes "$f"
    ROUNDS=$((ROUNDS + 1))
done
cat "$T"/env[123].* >"$T/envelopes.out"
log "bad envelopes: $ROUNDS rounds of $NCASES, every one answered REJECTED with a reason:"
jq -r '"  \(.case): \(.status_name) \"\(.reason)\""' "$T/env1.1"
assert_true "collector alive after the attack" proc_alive "$COLLECTOR_PID"
RSS_AFTER=$(awk '/^VmRSS/ {print $2}' "/proc/$COLLECTOR_PID/status")
log "collector RSS ${RSS_BEFORE} KiB before the attack, ${RSS_AFTER} KiB after"
# Generous: a leak per junk connection or per rejection would show as far more.
assert_ge $((RSS_BEFORE + 256 * 1024)) "$RSS_AFTER" "collector RSS (KiB) after the attack, bounded"
# The good agent kept flowing during the attack: one frame per 200 ms.
SEQ_AFTER=$(agent_field hostile-good-1 seq)
log "good agent: seq $SEQ_ATTACK -> $SEQ_AFTER during the ${ATTACK_S}s attack"
assert_ge "$SEQ_AFTER" $((SEQ_ATTACK + ATTACK_S * 5 / 2)) "good agent's seq after the attack"
# And the collector still answers a fresh connection.
$HOSTILE envelopes 127.0.0.1 "$INGEST_PORT" >"$T/envelopes.last" 2>&1 ||
    fail "hostile.py envelopes after the attack failed: $(cat "$T/envelopes.last")"
check_envelopes "$T/envelopes.last"
cat "$T/envelopes.last" >>"$T/envelopes.out"

# Each expected reason is counted under its own label.
M=$(http /metrics)
rejected() {
    awk -v k="strata_ingest_frames_rejected_total{reason=\"$1\"}" '$1 == k { print $2; f = 1 }
        END { if (!f) print 0 }' <<<"$M"
}
for reason in $(jq -r 'select(.expect != null) | .expect' "$T/envelopes.out" | sort -u); do
    want=$(jq -r --arg r "$reason" 'select(.expect == $r) | .case' "$T/envelopes.out" | wc -l)
    assert_ge "$(rejected "$reason")" "$want" "strata_ingest_frames_rejected_total{reason=\"$reason\"}"
done
distinct=$(grep -c '^strata_ingest_frames_rejected_total{reason=' <<<"$M" || true)
want=$(jq -r '.expect // empty' "$T/envelopes.last" | sort -u | wc -l)
assert_ge "$distinct" "$want" "distinct reasons in strata_ingest_frames_rejected_total"
total=$(metric strata_ingest_frames_rejected_total)
assert_ge "$total" "$(wc -l <"$T/envelopes.out")" "strata_ingest_frames_rejected_total (all reasons)"
log "rejections counted under $distinct reasons, $total in all"

# The collector is fine and the good agent kept flowing.
assert_true "collector alive" proc_alive "$COLLECTOR_PID"
assert_true "/healthz" http_ok /healthz
assert_true "/readyz" http_ok /readyz
wait_for 30 "the good agent's seq to keep rising past $((SEQ0 + 10))" agent_seq_at_least 1 $((SEQ0 + 10))
J=$(agents_json)
assert_in_flight_gap hostile-good-1 "$J"
n=$(jq '[.agents[] | select(.host == "hostile")] | length' <<<"$J")
assert_eq 0 "$n" "agents registered by rejected frames"
sent_rejected=$(series_total agent.frames.rejected hostile-good-1)
assert_eq 0 "$sent_rejected" "frames of the good agent rejected (agent.frames.rejected)"

drain_agents
assert_no_loss 1
collector_stop TERM
assert_eq 0 "$ST_RC" "collector exit status after SIGTERM"
pass
