#!/usr/bin/env bash
# SIGHUP on the agent (systemctl reload): the new file takes effect — a
# label added, a sampler added — in the same process, without losing or
# duplicating a frame (the collector applied every seq once, nothing
# dropped). A file that does not load keeps the running configuration and
# the agent keeps sending. SIGTERM still stops it cleanly afterwards.
# SIGHUP on the collector while the agent sends: a target and webhooks
# change, a broken webhook keeps the running ones.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COLLECTOR_EXTRA_YAML=$'engine:\n  interval: 1s\ntargets:\n  cpu: 70%'
collector_start
agent_config 0 reload-host app
agent_start 0
PID=${AGENT_PID[0]}
wait_for 30 "the agent to deliver frames" agent_seq_at_least 0 3

# probe_series: net.probe.connects of the probe target the reload adds.
probe_series() {
    curl -fsS --max-time 5 -G "http://$HTTP_ADDR/v1/query" \
        --data-urlencode metric=net.probe.connects --data-urlencode match=host=reload-host \
        --data-urlencode match=target=collector-http --data-urlencode from=-5m \
        --data-urlencode to=now | jq -e '(.series | length) > 0' >/dev/null
}
labelled() {
    agents_json | jq -e '.agents[] | select(.host == "reload-host") | .labels.rev == "2"' \
        >/dev/null
}
probe_series && fail "a probe series exists before the reload"

CFG=${AGENT_DIR[0]}/agent.yaml
cp "$CFG" "$T/agent.yaml.orig"
sed -i "s/^  test: $ST_TEST\$/  test: $ST_TEST\n  rev: \"2\"/" "$CFG"
sed -i "s/^  tcp:\$/  tcp:\n  probe:\n    targets:\n      - {name: collector-http, address: $HTTP_ADDR}/" "$CFG"
grep -q 'rev: "2"' "$CFG" && grep -q collector-http "$CFG" || fail "could not edit $CFG"
kill -HUP "$PID"
wait_for 30 "the probe sampler the reload added to report" probe_series
wait_for 30 "the label the reload added" labelled
proc_alive "$PID" || fail "the agent exited on SIGHUP"
grep -q "SIGHUP: configuration reloaded" "${AGENT_DIR[0]}/agent.log" ||
    fail "no reload line in the agent's log"

# A file that does not load: the agent keeps running with what it has.
printf 'samplers: [\n' >"$CFG"
kill -HUP "$PID"
sleep 1
proc_alive "$PID" || fail "the agent exited on a SIGHUP with a broken file"
grep -q "keeping the running one" "${AGENT_DIR[0]}/agent.log" ||
    fail "the agent did not say it kept its configuration"
seq_now=$(agent_field reload-host seq)
wait_for 30 "frames after the failed reload" agent_seq_at_least 0 $((seq_now + 3))
probe_series || fail "the probe series is gone after the failed reload"

# The collector: a target and a webhook change while the agent sends.
cpu_target() {
    http /v1/status | jq -e --argjson v "$1" \
        '[.targets[] | select(.name == "cpu")] | length > 0 and all(.target == $v)' >/dev/null
}
wait_for 30 "the cpu target at 70 %" cpu_target 0.7
CC=$COLLECTOR_DIR/collector.yaml
cp "$CC" "$T/collector.yaml.orig"
sed -i 's/^  cpu: 70%$/  cpu: 55%/' "$CC"
printf 'webhooks:\n  - {name: ops, url: "http://127.0.0.1:9/hook", secret: s3cret}\n' >>"$CC"
kill -HUP "$COLLECTOR_PID"
wait_for 30 "the cpu target at 55 % after SIGHUP" cpu_target 0.55
grep -q "webhooks: 1 endpoint" "$COLLECTOR_DIR/collector.log" ||
    fail "the collector did not take the webhook on SIGHUP"
printf '  - {name: ops, url: "ftp://127.0.0.1/x", secret: s}\n' >>"$CC"
kill -HUP "$COLLECTOR_PID"
wait_for 10 "the broken webhook to be refused" \
    grep -q "keeping the running webhooks" "$COLLECTOR_DIR/collector.log"
proc_alive "$COLLECTOR_PID" || fail "the collector exited on SIGHUP"
cp "$T/collector.yaml.orig" "$CC"

# A second agent on the same data_dir (a unit and a hand-started agent) is
# refused, saying why: it would append to the same spool and hand out the
# same seqs. The running agent goes on; the no-loss check below covers it.
# Also while the agent reloads, when its spool is closed for a moment: it
# holds its data_dir throughout.
cp "$T/agent.yaml.orig" "$CFG"
for i in 1 2 3 4; do
    ((i == 1)) || kill -HUP "$PID"
    spawn agent-twin "$T/twin$i.log" "$AGENT_BIN" --config "$CFG"
    reap "$ST_PID" 30
    ((ST_RC != 0)) || fail "a second agent started on the same data_dir (try $i)"
    grep -q "in use by another strata-agent" "$T/twin$i.log" ||
        fail "the second agent did not say why it stopped: $(tail -n 3 "$T/twin$i.log")"
    proc_alive "$PID" || fail "the agent exited when a second one tried its data_dir (try $i)"
done

# Several reloads in a row while frames are in flight, then a clean stop:
# every frame the agent spooled was applied once.
for _ in 1 2 3; do
    kill -HUP "$PID"
    sleep 0.3
done
seq_now=$(agent_field reload-host seq)
wait_for 30 "frames after three reloads" agent_seq_at_least 0 $((seq_now + 3))
proc_alive "$PID" || fail "the agent exited during repeated reloads"
drain_agents
assert_no_loss 0
collector_stop
pass "SIGHUP reloads the agent's samplers and labels in place; a broken file changes nothing; a second agent on the data_dir is refused; no frame lost or doubled"
