#!/usr/bin/env bash
# k8s_test: the Kubernetes manifests in deploy/k8s hold together without a
# cluster. k8s_check.py parses every manifest listed in kustomization.yaml,
# rejects unknown fields, and checks what the daemons rely on (agent
# DaemonSet: hostPID, hostNetwork with ClusterFirstWithHostNet, a toleration
# for every taint, the node's /proc read-only at /host/proc = proc_root, a
# hostPath spool = data_dir, read-only root, ALL capabilities dropped but
# SYS_PTRACE, the collector Service's DNS name as collector; collector
# StatefulSet: volumeClaimTemplates holding data_dir, ports 9740/9741,
# readiness GET /readyz and liveness GET /healthz on 9741, a headless
# governing Service, non-root). Both ConfigMaps must then pass the daemons'
# own --check-config. Mutated copies of the manifests prove that the checker
# notices what it claims to check. With kubectl, `kubectl kustomize` must
# build the directory, and when kubectl reaches a cluster, `kubectl apply
# --dry-run=server -k` must accept it.
source "$(dirname "$0")/lib.sh"

K8S=$ST_SRC/deploy/k8s
CHECK="python3 $ST_LIB_DIR/k8s_check.py"
python3 -c 'import yaml' 2>/dev/null || fail "python3 has no yaml module: install python3-yaml (deploy/bootstrap.sh does)"

log "checking the manifests in $K8S"
if ! $CHECK "$K8S" "$T/cfg" >"$T/check.out" 2>&1; then
    cat "$T/check.out"
    fail "deploy/k8s: $(grep -c '^FAIL' "$T/check.out" || true) check(s) failed"
fi
cat "$T/check.out"

log "the ConfigMaps' files pass --check-config"
out=$("$AGENT_BIN" --config "$T/cfg/agent.yaml" --check-config 2>&1) ||
    fail "agent.yaml from the agent ConfigMap: $out"
assert_contains "$out" "configuration OK" "strata-agent --check-config on the ConfigMap's agent.yaml"
out=$("$COLLECTOR_BIN" --config "$T/cfg/collector.yaml" --check-config 2>&1) ||
    fail "collector.yaml from the collector ConfigMap: $out"
assert_contains "$out" "configuration OK" "strata-collector --check-config on the ConfigMap's collector.yaml"

# mutant NAME EXPECTED FILE PYTHON: a copy of deploy/k8s with FILE changed by
# the Python expression (s is the text) must fail the check with EXPECTED in
# its output.
mutant() {
    local name=$1 expected=$2 file=$3 expr=$4 d=$T/mutant-$1
    cp -r "$K8S" "$d"
    python3 - "$d/$file" "$expr" <<'EOF'
import sys
path, expr = sys.argv[1], sys.argv[2]
s = open(path).read()
t = eval(expr, {"s": s})
assert t != s, "mutation changed nothing"
open(path, "w").write(t)
EOF
    if $CHECK "$d" "$d/cfg" >"$d/out" 2>&1; then
        fail "mutant $name: the check passed a broken manifest"
    fi
    grep -qF -- "$expected" "$d/out" || fail "mutant $name: expected '$expected' in: $(cat "$d/out")"
}

log "mutated manifests are rejected"
mutant typo "unknown field 'readOnlyRootFileSystem'" collector-statefulset.yaml \
    's.replace("readOnlyRootFilesystem", "readOnlyRootFileSystem", 1)'
mutant toleration "toleration {operator: Exists}" agent-daemonset.yaml \
    's.replace("- operator: Exists", "- {key: gpu, operator: Exists}")'
mutant proc-rw "/proc is not mounted read-only" agent-daemonset.yaml \
    's.replace("mountPath: /host/proc\n              readOnly: true", "mountPath: /host/proc")'
mutant hostpid "hostPID is not true" agent-daemonset.yaml 's.replace("hostPID: true", "hostPID: false")'
mutant caps "capabilities added beyond SYS_PTRACE" agent-daemonset.yaml \
    's.replace("add: [\"SYS_PTRACE\"]", "add: [\"SYS_PTRACE\", \"SYS_ADMIN\"]")'
mutant readiness "readinessProbe is not GET /readyz" collector-statefulset.yaml \
    's.replace("path: /readyz", "path: /ready")'
mutant svc-port "no port http 9741" collector-statefulset.yaml \
    's.replace("port: 9741", "port: 8080", 1)'
mutant pvc "no volumeClaimTemplates" collector-statefulset.yaml \
    's[:s.index("  volumeClaimTemplates:")]'
mutant collector-url "is not the Service's ingest" agent-daemonset.yaml \
    's.replace("strata-collector.strata.svc", "collector.strata.svc")'
mutant cm-yaml "is not YAML" collector-statefulset.yaml \
    's.replace("    log_level: info\n", "    log_level: [info\n", 1)'

if command -v kubectl >/dev/null; then
    log "kubectl kustomize $K8S"
    kubectl kustomize "$K8S" >"$T/built.yaml" 2>"$T/kustomize.err" ||
        fail "kubectl kustomize: $(cat "$T/kustomize.err")"
    kinds=$(python3 -c 'import sys, yaml; print(" ".join(sorted(d["kind"] for d in yaml.safe_load_all(open(sys.argv[1])) if d)))' "$T/built.yaml")
    assert_eq "ConfigMap ConfigMap DaemonSet Namespace Service Service StatefulSet" "$kinds" "kinds built by kustomize"
    nss=$(python3 -c 'import sys, yaml; print(" ".join(sorted({d["metadata"].get("namespace", "-") for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] != "Namespace"})))' "$T/built.yaml")
    assert_eq "strata" "$nss" "namespace of every namespaced object after kustomize"
    if kubectl --request-timeout=5s version >/dev/null 2>&1; then
        log "a cluster answers: kubectl apply --dry-run=server -k"
        kubectl apply --dry-run=server -k "$K8S" >"$T/apply.out" 2>&1 ||
            fail "kubectl apply --dry-run=server: $(cat "$T/apply.out")"
    else
        log "no cluster reachable: skipped kubectl apply --dry-run (client dry-run needs an API server too)"
    fi
else
    log "kubectl is not installed (Debian 12 has no package): skipped kubectl kustomize"
fi

pass
