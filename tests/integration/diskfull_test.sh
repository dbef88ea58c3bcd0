#!/usr/bin/env bash
# A full disk: the collector's store lives on an 8 MiB tmpfs and starts with
# a 64 KiB LMDB map. The map must grow without losing frames; when the disk
# fills, the collector keeps running and answers RETRY_LATER, also after a
# restart on the full disk; once there is room again (remount with 64 MiB)
# every agent drains: frames == seq == the last seq it spooled. Needs root
# (mount); skipped only when mount is not permitted.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

AGENT_INTERVAL=50ms
AGENT_FLUSH=150ms
LEAVE_FREE_KB=384   # room left beside the filler file: fills within seconds

MNT=$T/mnt
mkdir -p "$MNT"
if ! err=$(mount -t tmpfs -o size=8m strata-diskfull "$MNT" 2>&1); then
    if [[ $(id -u) != 0 || "$err" =~ [Pp]ermission\ denied|not\ permitted|must\ be\ superuser|[Oo]peration\ not ]]; then
        skip "cannot mount a tmpfs here ($err)"
    fi
    fail "mount -t tmpfs failed: $err"
fi
ST_CLEANUP_HOOKS+=("umount '$MNT' || umount -l '$MNT'")
log "tmpfs of 8 MiB on $MNT"

COLLECTOR_DATA=$MNT/data
COLLECTOR_EXTRA_YAML=$'store:\n  map_size: 64KiB'
collector_start
agent_config 1 full-edge-1 edge
agent_config 2 full-app-1 app
agent_config 3 full-db-1 db
for i in 1 2 3; do agent_start "$i"; done
wait_for 30 "all three agents to appear in /v1/agents" all_agents_seen 3

metric_at_least() { (($(metric "$1") >= $2)); }
wait_for 60 "the 64 KiB map to grow twice (strata_store_map_grows_total >= 2)" \
    metric_at_least strata_store_map_grows_total 2
assert_gt "$(metric strata_store_map_bytes)" 65536 "strata_store_map_bytes after the map grew"
log "map grown $(metric strata_store_map_grows_total) times, now $(metric strata_store_map_bytes) bytes (the frames are checked at the end)"

# Fill the tmpfs but for a little room, which the agents then use up: the
# store grows by only ~50 KB/s here, so filling 8 MiB with samples alone would
# take minutes.
avail_kb=$(df -k --output=avail "$MNT" | tail -n 1 | tr -d ' ')
dd if=/dev/zero of="$MNT/filler" bs=64k count=$(((avail_kb - LEAVE_FREE_KB) / 64)) status=none ||
    fail "could not write the filler file on $MNT"
log "filler written; $(df -k --output=avail "$MNT" | tail -n 1 | tr -d ' ') KiB left"
wait_for 90 "the collector to answer RETRY_LATER (strata_ingest_frames_retry_later_total > 0)" \
    metric_at_least strata_ingest_frames_retry_later_total 1
log "disk full: $(metric strata_ingest_frames_retry_later_total) frames answered RETRY_LATER; store file $(metric strata_store_file_bytes) bytes"

# While the disk is full the collector stays up and consistent, and the
# agents keep their frames on their own disks.
declare -a FULL_SEQ=()
J=$(agents_json)
for i in 1 2 3; do FULL_SEQ[$i]=$(agent_field "${AGENT_HOST[$i]}" seq "$J"); done
backlog() {
    local i
    for i in 1 2 3; do
        (($(spool_state "$i" last_seq) >= FULL_SEQ[i] + $1)) || return 1
    done
}
wait_for 60 "every agent to spool >= 30 frames beyond what the full collector applied" backlog 30
assert_true "collector alive with a full disk" proc_alive "$COLLECTOR_PID"
assert_true "/healthz with a full disk" http_ok /healthz
J=$(agents_json) || fail "/v1/agents does not answer with a full disk"
for i in 1 2 3; do assert_in_flight_gap "${AGENT_HOST[$i]}" "$J"; done
retry=$(metric strata_ingest_frames_retry_later_total)
wait_for 30 "RETRY_LATER answers to keep coming while the disk is full" \
    metric_at_least strata_ingest_frames_retry_later_total $((retry + 3))
log "still full: $(metric strata_ingest_frames_retry_later_total) RETRY_LATER answers, applied seqs $(jq -c '[.agents[] | select(.host | startswith("full-")) | .seq]' <<<"$J")"

# A restart while the disk is still full (what systemd would do): the
# collector stops cleanly, opens its store again and still answers RETRY_LATER.
collector_stop TERM
assert_eq 0 "$ST_RC" "collector exit status after SIGTERM with a full disk"
collector_start
wait_for 60 "the restarted collector to answer RETRY_LATER on the full disk" \
    metric_at_least strata_ingest_frames_retry_later_total 1
log "restarted on the full disk: $(metric strata_ingest_frames_retry_later_total) RETRY_LATER answers"

# Room again: the backlog drains.
mount -o remount,size=64m "$MNT" || fail "remount of $MNT with 64 MiB failed"
log "remounted with 64 MiB"
declare -a TARGET=()
for i in 1 2 3; do TARGET[$i]=$(spool_state "$i" last_seq); done
for i in 1 2 3; do
    wait_for 90 "agent$i to deliver its backlog up to seq ${TARGET[$i]}" \
        agent_seq_at_least "$i" "${TARGET[$i]}"
done
log "backlog delivered"

drain_agents
for i in 1 2 3; do
    assert_no_loss "$i"
    # A full disk is the collector's problem, never a reason to refuse a frame.
    assert_eq 0 "$(series_total agent.frames.rejected "${AGENT_HOST[$i]}")" \
        "frames of ${AGENT_HOST[$i]} rejected (agent.frames.rejected)"
done
assert_eq 0 "$(metric strata_ingest_frames_rejected_total)" \
    "strata_ingest_frames_rejected_total (no frame refused because the disk was full)"
assert_gt "$(metric strata_store_map_bytes)" 65536 "strata_store_map_bytes"
assert_true "collector alive after the disk was full" proc_alive "$COLLECTOR_PID"
log "map now $(metric strata_store_map_bytes) bytes; $(metric strata_store_commit_failures_total) failed commits since the restart"
collector_stop TERM
assert_eq 0 "$ST_RC" "collector exit status after SIGTERM"
pass
