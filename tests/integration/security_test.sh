#!/usr/bin/env bash
# The collector's defences, each tried while one legitimate agent keeps
# sending over mutual TLS with signed frames: agents without a client
# certificate or with one from another CA never get a frame in; a valid
# certificate with a wrong HMAC key, unsigned frames, forged and replayed
# frames are REJECTED or DUPLICATE and counted; plain tcp:// off loopback is
# refused unless insecure: true; the API wants its tokens and scopes; a key
# revoked by SIGHUP stops its agent. Certificates and keys come from
# deploy/pki.sh. Afterwards the legitimate agent has frames == seq.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SEND="python3 $ST_LIB_DIR/sec_send.py"
PKI=$T/pki
ROGUE=$T/rogue-pki
SNI=collector.strata.test
AGENT_FLUSH=300ms

command -v openssl >/dev/null || skip "openssl is not installed"
python3 -c 'import ssl' 2>/dev/null || skip "python3 has no ssl module"

# ---- Keys and certificates ----------------------------------------------------------
bash "$ST_SRC/deploy/pki.sh" --name "$SNI" --group enrol \
    --agent legit --agent wrongkey --agent probe --agent nocert --agent rogue --agent untrusting \
    "$PKI" >"$T/pki.out" 2>&1 || fail "deploy/pki.sh failed: $(cat "$T/pki.out")"
bash "$ST_SRC/deploy/pki.sh" --name "$SNI" --ca-name "Rogue CA" --agent rogue \
    "$ROGUE" >>"$T/pki.out" 2>&1 || fail "deploy/pki.sh (rogue CA) failed: $(cat "$T/pki.out")"
# Idempotent: a second run changes nothing.
sum_before=$(cat "$PKI"/*.* "$PKI"/keys "$PKI"/agents/* | sha256sum)
bash "$ST_SRC/deploy/pki.sh" --name "$SNI" --group enrol --agent legit --agent wrongkey \
    --agent probe --agent nocert --agent rogue --agent untrusting "$PKI" >>"$T/pki.out" 2>&1 ||
    fail "deploy/pki.sh (second run) failed: $(cat "$T/pki.out")"
assert_eq "$sum_before" "$(cat "$PKI"/*.* "$PKI"/keys "$PKI"/agents/* | sha256sum)" \
    "deploy/pki.sh run twice: files unchanged"
assert_eq 6 "$(grep -c '^agent ' "$PKI/keys")" "agent lines in the keys file"
assert_eq 1 "$(grep -c '^group enrol ' "$PKI/keys")" "group lines in the keys file"
openssl verify -CAfile "$PKI/ca.crt" "$PKI/collector.crt" "$PKI/agents/legit.crt" >/dev/null ||
    fail "pki.sh certificates do not verify against its CA"
if openssl verify -CAfile "$PKI/ca.crt" "$ROGUE/agents/rogue.crt" >/dev/null 2>&1; then
    fail "the rogue CA's certificate verifies against the real CA"
fi
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$T/wrong.hmac"
id_of() { cat "$PKI/agents/$1.id"; }
cp "$PKI/keys" "$T/keys"     # the collector's keys_file; the SIGHUP check edits it

# ---- API tokens: the helpers of lib.sh read with the read-only token --------------------
RTOK=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
WTOK=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
sha() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
# curl reads $CURL_HOME/.curlrc: every curl of lib.sh (http, metric, query)
# sends the read token. The checks of unauthenticated requests use curl -q.
export CURL_HOME=$T/curl
mkdir -p "$CURL_HOME"
printf 'header = "Authorization: Bearer %s"\n' "$RTOK" >"$CURL_HOME/.curlrc"

# ---- The collector: mutual TLS, signed frames, tokens ------------------------------------
INGEST_URL=tls+tcp://127.0.0.1:$INGEST_PORT
mkdir -p "$COLLECTOR_DIR" "$COLLECTOR_DATA"
cat >"$COLLECTOR_DIR/collector.yaml" <<EOF
data_dir: $COLLECTOR_DATA
log_level: info
ingest:
  url: $INGEST_URL
  tls_cert: $PKI/collector.pem
  tls_ca: $PKI/ca.crt
  keys_file: $T/keys
http:
  addr: $HTTP_ADDR
api:
  tokens:
    - {name: reader, sha256: "$(sha "$RTOK")", scopes: [read]}
    - {name: writer, sha256: "$(sha "$WTOK")", scopes: [read, write]}
EOF
collector_start

# sec_agent I HOST NAME CERT CA KEYFILE: an agent whose data dir holds the id
# pki.sh made for NAME (so the keys file knows it), with TLS settings.
sec_agent() {
    local i=$1 host=$2 name=$3 cert=$4 ca=$5 keyf=$6
    AGENT_EXTRA_YAML="key_file: $keyf
tls:
  ca: $ca
  server_name: $SNI"
    if [[ -n "$cert" ]]; then AGENT_EXTRA_YAML+=$'\n'"  cert: $cert"; fi
    agent_config "$i" "$host" app
    mkdir -p "${AGENT_DIR[$i]}/data/spool"
    cp "$PKI/agents/$name.id" "${AGENT_DIR[$i]}/data/spool/agent.id"
}

sec_agent 0 sec-legit legit "$PKI/agents/legit.pem" "$PKI/ca.crt" "$PKI/agents/legit.hmac"
agent_start 0
wait_for 30 "the legitimate agent to reach seq >= 3 over mutual TLS" agent_seq_at_least 0 3
assert_eq "$(id_of legit)" "$(agent_id 0)" "the legitimate agent's id (pre-seeded from pki.sh)"
SEQ0=$(agent_field sec-legit seq)
log "legitimate agent flowing: seq $SEQ0"

# ---- Attackers that are real agents (a, b, c) and one that distrusts the collector ------
# a: no client certificate; b: a certificate from another CA. Both hold valid
# HMAC keys listed in the keys file, so only TLS can be what stops them.
sec_agent 1 sec-nocert nocert "" "$PKI/ca.crt" "$PKI/agents/nocert.hmac"
sec_agent 2 sec-rogue rogue "$ROGUE/agents/rogue.pem" "$PKI/ca.crt" "$PKI/agents/rogue.hmac"
# c: a valid certificate, but not its HMAC key.
sec_agent 3 sec-wrongkey wrongkey "$PKI/agents/wrongkey.pem" "$PKI/ca.crt" "$T/wrong.hmac"
# An agent that must not trust this collector: its CA is the rogue one.
sec_agent 4 sec-untrusting untrusting "$PKI/agents/untrusting.pem" "$ROGUE/ca.crt" \
    "$PKI/agents/untrusting.hmac"
HMAC0=$(metric strata_ingest_frames_rejected_total 'reason="env_hmac"')
UNSIGNED0=$(metric strata_ingest_frames_rejected_total 'reason="env_unsigned"')
for i in 1 2 3 4; do agent_start "$i"; done

# ---- d, e and more: hand-made envelopes over mutual TLS (sec_send.py) ------------------
TLS_ARGS=(--port "$INGEST_PORT" --ca "$PKI/ca.crt" --server-name "$SNI")
# send WHAT EXPECT_STATUS [EXPECT_REASON] -- sec_send.py send args: one request.
send() {
    local what=$1 status=$2 reason=$3 out
    shift 4
    out=$($SEND send "${TLS_ARGS[@]}" "$@" 2>&1) || {
        soft_fail "$what: sec_send.py failed: $out"
        return 0
    }
    if [[ "$(jq -r .status_name <<<"$out")" != "$status" ]]; then
        soft_fail "$what: expected $status${reason:+ ($reason)}, got $out"
    elif [[ -n "$reason" && "$(jq -r .reason <<<"$out")" != *"$reason"* ]]; then
        soft_fail "$what: expected the reason to name '$reason', got $out"
    else
        log "  $what: $(jq -r '"\(.status_name) \(.reason)"' <<<"$out")"
    fi
}
PROBE=(--cert "$PKI/agents/probe.pem" --frame-host sec-probe)
log "hand-made envelopes over mutual TLS:"
# The control: a correctly signed frame is applied, and its resend is a duplicate.
send "probe seq 1 signed (control)" OK "" -- "${PROBE[@]}" --agent "$(id_of probe)" --seq 1 \
    --key-file "$PKI/agents/probe.hmac"
send "probe seq 1 again (control)" DUPLICATE "" -- "${PROBE[@]}" --agent "$(id_of probe)" --seq 1 \
    --key-file "$PKI/agents/probe.hmac"
# d: unsigned, from a client with a valid certificate.
send "d: unsigned frame" REJECTED "not signed" -- "${PROBE[@]}" --agent "$(id_of probe)" --seq 2 \
    --unsigned
# c (by hand): a wrong key.
send "c: probe signed with a wrong key" REJECTED "HMAC" -- "${PROBE[@]}" \
    --agent "$(id_of probe)" --seq 2 --key-file "$T/wrong.hmac"
# e: replays of the legitimate agent's old seqs, from another client certificate.
# A seq 8 below the highest is applied (at most 4 are in flight), so that
# a replay of it must be a duplicate, never applied.
wait_for 30 "the legitimate agent to reach seq >= 12" agent_seq_at_least 0 12
CUR=$(agent_field sec-legit seq)
OLD=$((CUR - 8))
DUP0=$(metric strata_ingest_frames_duplicate_total)
send "e: replay of legit seq $OLD, validly signed" DUPLICATE "" -- "${PROBE[@]}" \
    --frame-host sec-legit --agent "$(id_of legit)" --seq "$OLD" --key-file "$PKI/agents/legit.hmac"
send "e: replay of legit seq 1, validly signed" DUPLICATE "" -- "${PROBE[@]}" \
    --frame-host sec-legit --agent "$(id_of legit)" --seq 1 --key-file "$PKI/agents/legit.hmac"
assert_ge "$(metric strata_ingest_frames_duplicate_total)" $((DUP0 + 2)) \
    "strata_ingest_frames_duplicate_total after two replays"
# Authentication comes before dedup: a forged old seq is not even a duplicate.
send "e: legit seq $OLD signed with a wrong key" REJECTED "HMAC" -- "${PROBE[@]}" \
    --agent "$(id_of legit)" --seq "$OLD" --key-file "$T/wrong.hmac"
# Forgeries that would push the legitimate agent's seq far ahead (after
# which every real frame of it would be a "duplicate" and lost).
FAR=$((CUR + 100000))
send "forged legit seq $FAR, another agent's key" REJECTED "HMAC" -- "${PROBE[@]}" \
    --agent "$(id_of legit)" --seq "$FAR" --key-file "$PKI/agents/probe.hmac"
send "forged legit seq $FAR, the group key" REJECTED "HMAC" -- "${PROBE[@]}" \
    --agent "$(id_of legit)" --seq "$FAR" --key-file "$PKI/groups/enrol.hmac"
send "forged legit seq $FAR, unsigned" REJECTED "not signed" -- "${PROBE[@]}" \
    --agent "$(id_of legit)" --seq "$FAR" --unsigned
# A valid envelope of the probe (its own key) around a Frame that claims to
# be the legitimate agent.
send "probe's signed envelope around a Frame naming legit" REJECTED "another agent" -- \
    "${PROBE[@]}" --frame-host sec-legit --agent "$(id_of legit)" \
    --envelope-agent "$(id_of probe)" --seq 50 --key-file "$PKI/agents/probe.hmac"
# Enrolment groups: an id the keys file does not list, signed with the group key.
GROUP_ID=$(python3 -c 'import uuid; print(uuid.uuid4())')
send "unlisted agent signed with the group key" OK "" -- --cert "$PKI/agents/probe.pem" \
    --frame-host sec-group --agent "$GROUP_ID" --seq 1 --key-file "$PKI/groups/enrol.hmac"
send "unlisted agent signed with an unknown key" REJECTED "" -- "${PROBE[@]}" \
    --agent "$(python3 -c 'import uuid; print(uuid.uuid4())')" --seq 1 --key-file "$T/wrong.hmac"

j=$(agents_json)
assert_eq 1 "$(agent_field sec-probe frames "$j")" "frames applied for the probe (control)"
assert_eq 1 "$(agent_field sec-group frames "$j")" "frames applied for the group-signed agent"
seq_now=$(agent_field sec-legit seq "$j")
((seq_now < FAR)) || soft_fail "a forged frame moved the legitimate agent's seq to $seq_now"
# frames <= seq (a replay applied again would show at the end as frames > seq).
assert_in_flight_gap sec-legit "$j"

# a, b by hand: TLS handshakes without a certificate or with a foreign one.
hs() {
    local what=$1 want=$2 out
    shift 2
    out=$($SEND handshake --port "$INGEST_PORT" --server-name "$SNI" "$@" 2>&1) ||
        fail "sec_send.py handshake failed: $out"
    if [[ "$(jq -r .ok <<<"$out")" != "$want" ]]; then
        soft_fail "$what: expected a usable connection: $want, got $out"
    else
        log "  $what: $(jq -c . <<<"$out")"
    fi
}
hs "a: TLS without a client certificate" false --ca "$PKI/ca.crt"
hs "b: TLS with a certificate from another CA" false --ca "$PKI/ca.crt" --cert "$ROGUE/agents/rogue.pem"
hs "TLS with a valid certificate (control)" true --ca "$PKI/ca.crt" --cert "$PKI/agents/probe.pem"
hs "plain TCP to the TLS port" false

# ---- The real attacker agents, while the legitimate one flows -----------------------------
spooled() { (($(spool_state "$1" unacked) >= $2)); }
wait_for 30 "the agent without a certificate to spool >= 5 frames" spooled 1 5
wait_for 30 "the agent with a foreign certificate to spool >= 5 frames" spooled 2 5
wait_for 30 "the agent that distrusts the collector to spool >= 5 frames" spooled 4 5
hmac_rose() { (($(metric strata_ingest_frames_rejected_total 'reason="env_hmac"') >= HMAC0 + $1)); }
# The hand-made envelopes above account for 5 env_hmac rejections.
wait_for 30 "env_hmac rejections from the wrong-key agent" hmac_rose 10
assert_ge "$(metric strata_ingest_frames_rejected_total 'reason="env_unsigned"')" $((UNSIGNED0 + 2)) \
    "strata_ingest_frames_rejected_total{reason=\"env_unsigned\"}"
SEQ1=$(agent_field sec-legit seq)
wait_for 30 "the legitimate agent to go on (seq > $SEQ1)" agent_seq_at_least 0 $((SEQ1 + 3))
j=$(agents_json)
for h in sec-nocert sec-rogue sec-untrusting; do
    [[ -z "$(agent_field "$h" seq "$j")" ]] || soft_fail "$h appears in /v1/agents: $(jq -c --arg h "$h" '.agents[] | select(.host == $h)' <<<"$j")"
done
f=$(agent_field sec-wrongkey frames "$j")
[[ -z "$f" || "$f" == 0 ]] || soft_fail "sec-wrongkey has $f frames applied"
for i in 1 2 3 4; do
    proc_alive "${AGENT_PID[$i]}" || fail "agent$i ${AGENT_HOST[$i]} exited"
done
log "attackers: nocert spools $(spool_state 1 unacked), rogue $(spool_state 2 unacked), untrusting $(spool_state 4 unacked) unacknowledged frames; env_hmac $HMAC0 -> $(metric strata_ingest_frames_rejected_total 'reason="env_hmac"')"
assert_in_flight_gap sec-legit "$j"

# ---- Key revocation by SIGHUP ------------------------------------------------------------
grep -v "^agent $(id_of probe) " "$T/keys" >"$T/keys.new"
mv "$T/keys.new" "$T/keys"
kill -HUP "$COLLECTOR_PID"
revoked() {
    local out
    out=$($SEND send "${TLS_ARGS[@]}" "${PROBE[@]}" --agent "$(id_of probe)" --seq 5 \
        --key-file "$PKI/agents/probe.hmac" 2>&1) || return 1
    [[ "$(jq -r .status_name <<<"$out")" == REJECTED ]]
}
wait_for 10 "the probe's revoked key to be refused after SIGHUP" revoked
log "  revoked key after SIGHUP: REJECTED"
# A broken keys file on SIGHUP keeps the keys in force.
cp "$T/keys" "$T/keys.good"
echo "agent not-a-uuid 00" >>"$T/keys"
kill -HUP "$COLLECTOR_PID"
SEQ2=$(agent_field sec-legit seq)
wait_for 20 "the legitimate agent to go on after a SIGHUP with a broken keys file" \
    agent_seq_at_least 0 $((SEQ2 + 3))
cp "$T/keys.good" "$T/keys"

# ---- f: plain tcp:// off loopback ----------------------------------------------------------
REMOTE_IP=$(ip -4 -o addr show 2>/dev/null | awk '{split($4, a, "/"); print a[1]}' |
    grep -v '^127\.' | head -n 1 || true)
[[ -n "$REMOTE_IP" ]] || REMOTE_IP=0.0.0.0
read -r P1 P2 P3 < <(free_ports 3)
# refused URL: the collector must exit non-zero at once, saying why.
# With a third argument any prompt refusal will do (the message may name
# the scheme instead of insecure).
refused() {
    local url=$1 d=$T/insecure-$2 any=${3:-} rc=0
    mkdir -p "$d/data"
    printf 'data_dir: %s\ningest:\n  url: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
        "$d/data" "$url" "$P2" >"$d/collector.yaml"
    timeout 5 "$COLLECTOR_BIN" --config "$d/collector.yaml" >"$d/collector.log" 2>&1 || rc=$?
    if ((rc == 0 || rc == 124)); then
        soft_fail "f: the collector started on $url without insecure: true (exit $rc)"
    elif [[ -z "$any" ]] && ! grep -q insecure "$d/collector.log"; then
        soft_fail "f: the collector refused $url (exit $rc) without naming insecure: $(tail -n 3 "$d/collector.log")"
    else
        log "  $url refused (exit $rc): $(grep -m1 -E 'insecure|error' "$d/collector.log")"
    fi
}
log "plain transports off loopback:"
refused "tcp://$REMOTE_IP:$P1" 1
refused "tcp://0.0.0.0:$P1" 2
# nng's other plain transports must not slip past the check.
refused "tcp4://$REMOTE_IP:$P1" 3 any
refused "ws://$REMOTE_IP:$P1/ingest" 4 any
# With insecure: true it starts (on its own data dir and ports).
d=$T/insecure-ok
mkdir -p "$d/data"
printf 'data_dir: %s\ningest:\n  url: tcp://%s:%s\n  insecure: true\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$d/data" "$REMOTE_IP" "$P1" "$P3" >"$d/collector.yaml"
spawn collector-insecure "$d/collector.log" "$COLLECTOR_BIN" --config "$d/collector.yaml"
IPID=$ST_PID
insecure_ready() {
    proc_alive "$IPID" || fail "the collector with insecure: true exited: $(tail -n 3 "$d/collector.log")"
    curl -q -fs --max-time 2 -o /dev/null "http://127.0.0.1:$P3/readyz"
}
wait_for 20 "the collector on tcp://$REMOTE_IP:$P1 with insecure: true to be ready" insecure_ready
log "  tcp://$REMOTE_IP:$P1 with insecure: true: started"
kill -TERM "$IPID"
reap "$IPID" 30
# The agent: plain tcp:// to another host is refused unless insecure: true.
mkdir -p "$T/agent-insecure"
printf 'collector: tcp://%s:%s\ndata_dir: %s\n' "$REMOTE_IP" "$P1" "$T/agent-insecure/data" \
    >"$T/agent-insecure/agent.yaml"
rc=0
"$AGENT_BIN" --config "$T/agent-insecure/agent.yaml" --check-config >"$T/agent-insecure.out" 2>&1 || rc=$?
if ((rc == 0)) || ! grep -q insecure "$T/agent-insecure.out"; then
    soft_fail "f: agent --check-config with collector tcp://$REMOTE_IP: exit $rc, $(cat "$T/agent-insecure.out")"
fi
printf 'collector: tcp4://%s:%s\ndata_dir: %s\n' "$REMOTE_IP" "$P1" "$T/agent-insecure/data" \
    >"$T/agent-insecure/agent4.yaml"
rc=0
"$AGENT_BIN" --config "$T/agent-insecure/agent4.yaml" --check-config >"$T/agent-insecure.out" 2>&1 || rc=$?
if ((rc == 0)); then
    soft_fail "f: agent --check-config with collector tcp4://$REMOTE_IP: exit $rc, $(cat "$T/agent-insecure.out")"
fi
echo "insecure: true" >>"$T/agent-insecure/agent.yaml"
"$AGENT_BIN" --config "$T/agent-insecure/agent.yaml" --check-config >"$T/agent-insecure.out" 2>&1 ||
    soft_fail "f: agent --check-config with insecure: true failed: $(cat "$T/agent-insecure.out")"

# ---- g: API tokens and scopes -------------------------------------------------------------
# code METHOD PATH [TOKEN]: the HTTP status, without the .curlrc token.
code() {
    local auth=()
    [[ -z "${3:-}" ]] || auth=(-H "Authorization: Bearer $3")
    curl -q -s -o /dev/null -w '%{http_code}' --max-time 5 -X "$1" "${auth[@]}" "http://$HTTP_ADDR$2"
}
api() {
    local want=$1 got what
    shift
    case ${3:-} in
    "") what="no token" ;;
    "$RTOK") what="the read token" ;;
    "$WTOK") what="the read+write token" ;;
    *) what="a wrong token" ;;
    esac
    got=$(code "$@")
    if [[ "$got" != "$want" ]]; then
        soft_fail "g: $1 $2 with $what: expected $want, got $got"
    else
        log "  $1 $2 with $what: $got"
    fi
}
log "API tokens:"
api 401 GET /v1/agents
api 401 GET /v1/agents "wrong-$RTOK"
api 200 GET /v1/agents "$RTOK"
api 200 GET /v1/agents "$WTOK"
api 401 GET /metrics
api 200 GET /metrics "$RTOK"
api 401 POST /v1/baselines/pin
api 403 POST /v1/baselines/pin "$RTOK"
api 200 POST /v1/baselines/pin "$WTOK"
api 403 POST /v1/findings/0000000000000000/dismiss "$RTOK"
api 200 GET /healthz
api 200 GET /readyz
body=$(curl -q -s --max-time 5 "http://$HTTP_ADDR/v1/agents")
jq -e '.error | length > 0' >/dev/null <<<"$body" || soft_fail "g: a 401 without {\"error\": ...}: $body"
if [[ "$body" == *"$(id_of legit)"* ]]; then soft_fail "g: a 401 leaks agent ids: $body"; fi

# ---- e, once more: a seq older than the collector's dedup window (64) ----------------------
wait_for 60 "the legitimate agent to reach seq >= 70" agent_seq_at_least 0 70
DUP0=$(metric strata_ingest_frames_duplicate_total)
send "e: replay of legit seq 2 (past the dedup window), validly signed" DUPLICATE "" -- \
    "${PROBE[@]}" --frame-host sec-legit --agent "$(id_of legit)" --seq 2 \
    --key-file "$PKI/agents/legit.hmac"
assert_ge "$(metric strata_ingest_frames_duplicate_total)" $((DUP0 + 1)) \
    "strata_ingest_frames_duplicate_total after a replay past the window"

# ---- The legitimate agent kept flowing and lost nothing -----------------------------------
SEQ_END=$(agent_field sec-legit seq)
assert_gt "$SEQ_END" $((SEQ0 + 10)) "the legitimate agent's seq while under attack (from $SEQ0)"
for i in 1 2 3 4; do
    agent_stop "$i" TERM
    unset "AGENT_HOST[$i]" "AGENT_PID[$i]"
done
drain_agents
assert_no_loss 0
j=$(agents_json)
for h in sec-nocert sec-rogue sec-untrusting; do
    [[ -z "$(agent_field "$h" seq "$j")" ]] || soft_fail "$h appears in /v1/agents at the end"
done
assert_true "collector alive at the end" proc_alive "$COLLECTOR_PID"
pass
