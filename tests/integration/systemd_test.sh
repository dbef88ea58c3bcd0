#!/usr/bin/env bash
# systemd_test: the units in deploy/systemd. `systemd-analyze verify` must
# accept both without a single warning (on copies whose ExecStart names the
# binaries just built, since verify checks that the binary exists);
# `systemd-analyze security --offline=yes` must rate their exposure below
# fixed ceilings (collector < 1.5, agent < 2.5; the agent keeps
# CAP_SYS_PTRACE and the host network, the collector nothing); the contract
# the packages and docs rely on must hold (user, state directory, config
# path, capabilities, reload and restart policy); and since ExecReload=
# sends SIGHUP, each daemon must survive SIGHUP.
source "$(dirname "$0")/lib.sh"

UNITS=$ST_SRC/deploy/systemd
COLLECTOR_MAX=1.5
AGENT_MAX=2.5

command -v systemd-analyze >/dev/null ||
    fail "systemd-analyze is missing: install systemd (deploy/bootstrap.sh does)"

# unit_value UNIT KEY: the values of KEY in UNIT, one per line.
unit_value() { sed -n "s/^$2=//p" "$UNITS/$1"; }

log "systemd-analyze verify"
mkdir -p "$T/units"
for u in agent collector; do
    unit=strata-$u.service
    [[ -f "$UNITS/$unit" ]] || fail "$UNITS/$unit is missing"
    bin=$AGENT_BIN
    [[ $u == collector ]] && bin=$COLLECTOR_BIN
    sed "s#^ExecStart=/usr/bin/strata-$u #ExecStart=$bin #" "$UNITS/$unit" >"$T/units/$unit"
    grep -q "^ExecStart=$bin " "$T/units/$unit" || fail "$unit: ExecStart is not /usr/bin/strata-$u"
    out=$(systemd-analyze verify "$T/units/$unit" 2>&1) || fail "verify $unit: $out"
    [[ -z "$out" ]] || fail "verify $unit warns: $out"
done

log "systemd-analyze security --offline=yes"
for u in agent collector; do
    unit=strata-$u.service
    max=$AGENT_MAX
    [[ $u == collector ]] && max=$COLLECTOR_MAX
    systemd-analyze security --offline=yes "$T/units/$unit" >"$T/security-$u.txt" 2>&1 || true
    score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' "$T/security-$u.txt")
    [[ "$score" =~ ^[0-9]+\.[0-9]+$ ]] || fail "no exposure level for $unit: $(cat "$T/security-$u.txt")"
    log "$unit: exposure $score (ceiling $max)"
    if ! python3 -c "import sys; sys.exit(0 if float('$score') < float('$max') else 1)"; then
        grep '✗' "$T/security-$u.txt" || true
        fail "$unit: exposure $score is not below $max"
    fi
done

log "the units' contract"
for u in agent collector; do
    unit=strata-$u.service
    state=strata
    [[ $u == agent ]] && state=strata-agent
    assert_eq "/usr/bin/strata-$u --config /etc/strata/$u.yaml" "$(unit_value "$unit" ExecStart)" "$unit ExecStart"
    assert_eq "strata" "$(unit_value "$unit" User)" "$unit User"
    assert_eq "$state" "$(unit_value "$unit" StateDirectory)" "$unit StateDirectory"
    assert_eq "/var/lib/$state" "$(unit_value "$unit" WorkingDirectory)" "$unit WorkingDirectory"
    assert_eq "0077" "$(unit_value "$unit" UMask)" "$unit UMask"
    assert_eq "on-failure" "$(unit_value "$unit" Restart)" "$unit Restart"
    assert_eq "/bin/kill -HUP \$MAINPID" "$(unit_value "$unit" ExecReload)" "$unit ExecReload"
    [[ -n "$(unit_value "$unit" TimeoutStopSec)" ]] || fail "$unit: no TimeoutStopSec"
    for key in NoNewPrivileges ProtectHome PrivateTmp PrivateDevices ProtectKernelTunables \
        ProtectKernelModules ProtectKernelLogs ProtectControlGroups RestrictNamespaces \
        LockPersonality MemoryDenyWriteExecute RestrictRealtime RestrictSUIDSGID; do
        assert_eq "yes" "$(unit_value "$unit" $key)" "$unit $key"
    done
    assert_eq "strict" "$(unit_value "$unit" ProtectSystem)" "$unit ProtectSystem"
    assert_eq "native" "$(unit_value "$unit" SystemCallArchitectures)" "$unit SystemCallArchitectures"
    assert_eq "AF_UNIX AF_INET AF_INET6" "$(unit_value "$unit" RestrictAddressFamilies)" "$unit RestrictAddressFamilies"
    assert_contains "$(unit_value "$unit" SystemCallFilter)" "@system-service" "$unit SystemCallFilter"
done
assert_eq "" "$(unit_value strata-collector.service CapabilityBoundingSet)" "collector CapabilityBoundingSet (none)"
assert_eq "" "$(unit_value strata-collector.service AmbientCapabilities)" "collector AmbientCapabilities (none)"
assert_eq "CAP_SYS_PTRACE" "$(unit_value strata-agent.service CapabilityBoundingSet)" "agent CapabilityBoundingSet"
assert_eq "CAP_SYS_PTRACE" "$(unit_value strata-agent.service AmbientCapabilities)" "agent AmbientCapabilities"
# CAP_SYS_PTRACE is for reading /proc only: ptrace(2) is outside
# @system-service, process_vm_* are filtered, /proc is read-only.
agent_filter=$(unit_value strata-agent.service SystemCallFilter)
assert_contains "$agent_filter" "process_vm_writev" "agent SystemCallFilter"
assert_contains "$agent_filter" "process_vm_readv" "agent SystemCallFilter"
assert_eq "/proc" "$(unit_value strata-agent.service ReadOnlyPaths)" "agent ReadOnlyPaths"
# grep reads the whole list (no -q): systemd-analyze would otherwise die of
# SIGPIPE, and pipefail would make the answer "no".
if systemd-analyze syscall-filter @system-service 2>/dev/null | grep -w ptrace >/dev/null; then
    assert_contains "$agent_filter" "ptrace" "agent SystemCallFilter (this systemd's @system-service allows ptrace)"
fi

log "ExecReload sends SIGHUP: each daemon must survive it"
collector_start
kill -HUP "$COLLECTOR_PID"
sleep 1
proc_alive "$COLLECTOR_PID" || { reap "$COLLECTOR_PID" 5; fail "strata-collector exited on SIGHUP (status $ST_RC), which ExecReload= sends"; }
http_ok /readyz || fail "collector not ready after SIGHUP"
agent_config 0 systemd-host app
agent_start 0
wait_for 30 "agent to deliver a frame" agent_seq_at_least 0 1
kill -HUP "${AGENT_PID[0]}"
sleep 1
if ! proc_alive "${AGENT_PID[0]}"; then
    pid=${AGENT_PID[0]}
    AGENT_PID[0]=
    reap "$pid" 5
    fail "strata-agent exited on SIGHUP (status $ST_RC): its unit's ExecReload= would stop it for good (Restart=on-failure does not restart after SIGHUP); agent/main.c must handle or ignore SIGHUP"
fi
agent_stop 0
assert_eq 0 "$ST_RC" "agent exit status after SIGTERM"
collector_stop
assert_eq 0 "$ST_RC" "collector exit status after SIGTERM"

pass
