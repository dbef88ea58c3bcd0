#!/usr/bin/env python3
"""Checks deploy/k8s without a cluster: every manifest parses, the fields the
agent and collector depend on are there and agree with each other, and no
key is misspelt (a small allowlist of the Kubernetes fields these manifests
use stands in for the API server's schema). Used by k8s_test.sh.

    python3 k8s_check.py DEPLOY_K8S_DIR OUT_DIR

Writes the two ConfigMaps' files to OUT_DIR (agent.yaml, collector.yaml) so
the caller can run the daemons' --check-config on them, prints one line per
failed check and exits 1 when any failed."""
import os
import sys

try:
    import yaml
except ImportError:
    print("python3 has no yaml module (Debian: python3-yaml)")
    sys.exit(2)

FAILS = []


def check(cond, what):
    if not cond:
        FAILS.append(what)
    return bool(cond)


# ---- a schema of the fields these manifests use -------------------------------------------
# Each entry: allowed keys -> the schema of the value (a dict: nested
# object; [x]: list of x; None: any scalar or free-form value).

LABELS = None
META = {"name": None, "namespace": None, "labels": LABELS, "annotations": None}
RESOURCES = {"requests": None, "limits": None}
HTTPGET = {"path": None, "port": None, "scheme": None, "httpHeaders": None}
PROBE = {"httpGet": HTTPGET, "tcpSocket": {"port": None}, "exec": {"command": None},
         "initialDelaySeconds": None, "periodSeconds": None, "timeoutSeconds": None,
         "failureThreshold": None, "successThreshold": None}
CAPS = {"add": None, "drop": None}
SECCOMP = {"type": None, "localhostProfile": None}
CSEC = {"allowPrivilegeEscalation": None, "readOnlyRootFilesystem": None, "privileged": None,
        "runAsUser": None, "runAsGroup": None, "runAsNonRoot": None, "capabilities": CAPS,
        "seccompProfile": SECCOMP, "procMount": None}
PSEC = {"runAsUser": None, "runAsGroup": None, "runAsNonRoot": None, "fsGroup": None,
        "fsGroupChangePolicy": None, "seccompProfile": SECCOMP, "supplementalGroups": None}
CONTAINER = {"name": None, "image": None, "imagePullPolicy": None, "command": None,
             "args": None, "env": None, "ports": [{"name": None, "containerPort": None,
                                                   "protocol": None, "hostPort": None}],
             "readinessProbe": PROBE, "livenessProbe": PROBE, "startupProbe": PROBE,
             "resources": RESOURCES, "securityContext": CSEC,
             "volumeMounts": [{"name": None, "mountPath": None, "readOnly": None,
                               "subPath": None, "mountPropagation": None}]}
VOLUME = {"name": None, "configMap": {"name": None, "items": None, "defaultMode": None},
          "hostPath": {"path": None, "type": None}, "emptyDir": {"medium": None, "sizeLimit": None},
          "secret": {"secretName": None, "items": None, "defaultMode": None},
          "persistentVolumeClaim": {"claimName": None, "readOnly": None}}
TOLERATION = {"key": None, "operator": None, "value": None, "effect": None,
              "tolerationSeconds": None}
PODSPEC = {"hostPID": None, "hostNetwork": None, "dnsPolicy": None,
           "automountServiceAccountToken": None, "enableServiceLinks": None,
           "serviceAccountName": None, "terminationGracePeriodSeconds": None,
           "priorityClassName": None, "tolerations": [TOLERATION], "nodeSelector": None,
           "securityContext": PSEC, "containers": [CONTAINER], "initContainers": [CONTAINER],
           "volumes": [VOLUME]}
TEMPLATE = {"metadata": META, "spec": PODSPEC}
SELECTOR = {"matchLabels": LABELS}
PVC = {"metadata": META, "spec": {"accessModes": None, "storageClassName": None,
                                  "resources": {"requests": None}}}
KINDS = {
    ("v1", "Namespace"): {"metadata": META},
    ("v1", "ConfigMap"): {"metadata": META, "data": None},
    ("v1", "Service"): {"metadata": META, "spec": {
        "type": None, "clusterIP": None, "selector": LABELS, "publishNotReadyAddresses": None,
        "ports": [{"name": None, "port": None, "targetPort": None, "protocol": None}]}},
    ("apps/v1", "StatefulSet"): {"metadata": META, "spec": {
        "serviceName": None, "replicas": None, "selector": SELECTOR, "template": TEMPLATE,
        "volumeClaimTemplates": [PVC], "podManagementPolicy": None, "updateStrategy": None}},
    ("apps/v1", "DaemonSet"): {"metadata": META, "spec": {
        "selector": SELECTOR, "template": TEMPLATE, "updateStrategy": {
            "type": None, "rollingUpdate": {"maxUnavailable": None, "maxSurge": None}}}},
}


def walk(value, schema, where):
    if schema is None:
        return
    if isinstance(schema, list):
        if check(isinstance(value, list), f"{where}: expected a list"):
            for i, item in enumerate(value):
                walk(item, schema[0], f"{where}[{i}]")
        return
    if not check(isinstance(value, dict), f"{where}: expected a mapping"):
        return
    for k, v in value.items():
        if check(k in schema, f"{where}: unknown field '{k}'"):
            walk(v, schema[k], f"{where}.{k}")


# ---- loading ------------------------------------------------------------------------------

def load(kdir):
    kpath = os.path.join(kdir, "kustomization.yaml")
    with open(kpath) as f:
        kust = yaml.safe_load(f)
    check(kust.get("kind") == "Kustomization", "kustomization.yaml: kind is not Kustomization")
    docs = []
    listed = set(kust.get("resources", []))
    for name in sorted(os.listdir(kdir)):
        if name.endswith(".yaml") and name != "kustomization.yaml":
            check(name in listed, f"{name} is not listed in kustomization.yaml resources")
    for res in kust.get("resources", []):
        path = os.path.join(kdir, res)
        if not check(os.path.isfile(path), f"kustomization resource {res} does not exist"):
            continue
        with open(path) as f:
            for i, d in enumerate(yaml.safe_load_all(f)):
                if d is not None:
                    docs.append((f"{res}#{i}", d))
    return kust, docs


def one(objs, kind, what):
    found = [o for o in objs if o["kind"] == kind]
    check(len(found) == 1, f"expected one {kind} ({what}), found {len(found)}")
    return found[0] if found else None


def container_of(workload):
    cs = workload["spec"]["template"]["spec"].get("containers", [])
    check(len(cs) == 1, f"{workload['kind']}: expected one container, found {len(cs)}")
    return cs[0] if cs else {}


def named_port(container, port):
    """The number a probe's or Service's port (number or name) refers to."""
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p.get("containerPort")
    return None


def mounts(container, pod):
    """mountPath -> (volume, readOnly) for each of the container's mounts."""
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    out = {}
    for m in container.get("volumeMounts", []):
        check(m["name"] in vols or m["name"] in pod.get("_claims", ()),
              f"volumeMount {m['name']} has no volume")
        out[m["mountPath"]] = (vols.get(m["name"], {"name": m["name"]}), bool(m.get("readOnly")))
    return out


def labels_match(selector, labels, what):
    for k, v in (selector or {}).items():
        check(labels.get(k) == v, f"{what}: selector {k}={v} does not match the pod labels")


def check_workload_common(w):
    spec = w["spec"]
    labels_match(spec["selector"].get("matchLabels"), spec["template"]["metadata"].get("labels", {}),
                 f"{w['kind']} {w['metadata']['name']}")
    c = container_of(w)
    sc = c.get("securityContext", {})
    name = f"{w['kind']} container {c.get('name')}"
    check(sc.get("readOnlyRootFilesystem") is True, f"{name}: readOnlyRootFilesystem is not true")
    check(sc.get("allowPrivilegeEscalation") is False, f"{name}: allowPrivilegeEscalation is not false")
    check(sc.get("privileged") is not True, f"{name}: privileged")
    check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{name}: capabilities do not drop ALL")
    res = c.get("resources", {})
    check("cpu" in res.get("requests", {}) and "memory" in res.get("requests", {}),
          f"{name}: no cpu and memory requests")
    check("memory" in res.get("limits", {}), f"{name}: no memory limit")
    check(c.get("image", "").split(":")[0] != "", f"{name}: no image")
    return c


def config_of(objs, pod, container, mount_path, key):
    """The parsed config file the container reads at mount_path/key."""
    m = mounts(container, pod).get(mount_path)
    if not check(m is not None and "configMap" in m[0], f"no ConfigMap mounted at {mount_path}"):
        return None, None
    cm_name = m[0]["configMap"]["name"]
    cms = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == cm_name]
    if not check(len(cms) == 1, f"ConfigMap {cm_name} is missing"):
        return None, None
    text = cms[0].get("data", {}).get(key)
    if not check(isinstance(text, str), f"ConfigMap {cm_name} has no {key}"):
        return None, None
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as e:
        check(False, f"ConfigMap {cm_name} {key} is not YAML: {e}")
        return None, None
    check(isinstance(cfg, dict), f"ConfigMap {cm_name} {key} is not a mapping")
    args = container.get("command", []) + container.get("args", [])
    check(f"{mount_path}/{key}" in args, f"{container.get('name')} does not run with --config {mount_path}/{key}")
    return cfg, text


def check_agent(objs, ds, collector_svc, ns):
    pod = ds["spec"]["template"]["spec"]
    c = check_workload_common(ds)
    check(pod.get("hostPID") is True, "DaemonSet: hostPID is not true")
    check(pod.get("hostNetwork") is True, "DaemonSet: hostNetwork is not true (host TCP counters)")
    check(pod.get("dnsPolicy") == "ClusterFirstWithHostNet",
          "DaemonSet: dnsPolicy must be ClusterFirstWithHostNet to resolve the collector Service")
    tol = pod.get("tolerations", [])
    check(any(t.get("operator") == "Exists" and not t.get("key") and not t.get("effect") for t in tol),
          "DaemonSet: no toleration {operator: Exists} (every taint of every node)")
    adds = c.get("securityContext", {}).get("capabilities", {}).get("add", [])
    check(set(adds) <= {"SYS_PTRACE"}, f"DaemonSet: capabilities added beyond SYS_PTRACE: {adds}")
    m = mounts(c, pod)
    proc = m.get("/host/proc")
    check(proc is not None and proc[0].get("hostPath", {}).get("path") == "/proc" and proc[1],
          "DaemonSet: the node's /proc is not mounted read-only at /host/proc")
    cfg, text = config_of(objs, pod, c, "/etc/strata", "agent.yaml")
    if cfg is None:
        return None
    check(cfg.get("proc_root") == "/host/proc", "agent.yaml: proc_root is not /host/proc")
    sys_root = cfg.get("sys_root")
    if sys_root is not None:
        s = m.get(sys_root)
        check(s is not None and s[1] and s[0].get("hostPath", {}).get("path") == "/sys",
              f"agent.yaml: sys_root {sys_root} is not the node's /sys mounted read-only")
    spool = m.get(cfg.get("data_dir"))
    check(spool is not None and not spool[1] and "hostPath" in spool[0],
          f"agent.yaml: data_dir {cfg.get('data_dir')} is not a writable hostPath mount")
    url = str(cfg.get("collector", ""))
    if collector_svc is not None:
        svc = collector_svc["metadata"]["name"]
        ingest = [p["port"] for p in collector_svc["spec"]["ports"] if p.get("name") == "ingest"]
        want = [f"tcp://{svc}.{ns}.svc.cluster.local:{ingest[0] if ingest else 9740}",
                f"tls+tcp://{svc}.{ns}.svc.cluster.local:{ingest[0] if ingest else 9740}"]
        check(url in want, f"agent.yaml: collector {url} is not the Service's ingest ({want[0]})")
    return text


def check_collector(objs, sts):
    pod = sts["spec"]["template"]["spec"]
    c = check_workload_common(sts)
    check(sts["spec"].get("replicas", 1) == 1, "StatefulSet: one replica (one LMDB writer)")
    sc = c.get("securityContext", {})
    check(not sc.get("capabilities", {}).get("add"), "StatefulSet: the collector adds capabilities")
    check(pod.get("securityContext", {}).get("runAsNonRoot") is True or sc.get("runAsNonRoot") is True,
          "StatefulSet: runAsNonRoot is not true")
    check(not pod.get("hostNetwork") and not pod.get("hostPID"), "StatefulSet: uses host namespaces")
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
    check(ports.get("ingest") == 9740 and ports.get("http") == 9741,
          f"StatefulSet: container ports are not ingest 9740 and http 9741: {ports}")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        g = c.get(probe, {}).get("httpGet", {})
        check(g.get("path") == path and named_port(c, g.get("port")) == 9741,
              f"StatefulSet: {probe} is not GET {path} on 9741")
    claims = [t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])]
    check(claims, "StatefulSet: no volumeClaimTemplates")
    for t in sts["spec"].get("volumeClaimTemplates", []):
        check("storage" in t["spec"].get("resources", {}).get("requests", {}),
              f"volumeClaimTemplate {t['metadata']['name']}: no storage request")
        check(t["spec"].get("accessModes") == ["ReadWriteOnce"],
              f"volumeClaimTemplate {t['metadata']['name']}: accessModes is not [ReadWriteOnce]")
    pod["_claims"] = claims
    cfg, text = config_of(objs, pod, c, "/etc/strata", "collector.yaml")
    if cfg is None:
        return None
    data = cfg.get("data_dir")
    check(data in {mp for mp, (v, ro) in mounts(c, pod).items() if v["name"] in claims and not ro},
          f"collector.yaml: data_dir {data} is not on the volumeClaimTemplate")
    check(cfg.get("http", {}).get("addr") == "0.0.0.0:9741", "collector.yaml: http.addr is not 0.0.0.0:9741")
    check(str(cfg.get("ingest", {}).get("url", "")).endswith("://0.0.0.0:9740"),
          "collector.yaml: ingest.url does not listen on 0.0.0.0:9740")
    headless = [o for o in objs if o["kind"] == "Service"
                and o["metadata"]["name"] == sts["spec"].get("serviceName")]
    check(headless and headless[0]["spec"].get("clusterIP") == "None",
          f"StatefulSet: serviceName {sts['spec'].get('serviceName')} is not a headless Service")
    return text


def check_services(objs, sts):
    c = container_of(sts)
    pod_labels = sts["spec"]["template"]["metadata"].get("labels", {})
    main = None
    for svc in (o for o in objs if o["kind"] == "Service"):
        name = svc["metadata"]["name"]
        labels_match(svc["spec"].get("selector"), pod_labels, f"Service {name}")
        ports = {p.get("name"): p for p in svc["spec"].get("ports", [])}
        check(ports.get("ingest", {}).get("port") == 9740, f"Service {name}: no port ingest 9740")
        check(ports.get("http", {}).get("port") == 9741, f"Service {name}: no port http 9741")
        for p in ports.values():
            tp = p.get("targetPort", p.get("port"))
            check(named_port(c, tp) == p.get("port"),
                  f"Service {name}: port {p.get('name')} targets {tp}, not the container's {p.get('port')}")
        if svc["spec"].get("clusterIP") != "None":
            main = svc
    check(main is not None, "no ClusterIP Service for the collector")
    return main


def main():
    kdir, out = sys.argv[1], sys.argv[2]
    kust, docs = load(kdir)
    objs = []
    for where, d in docs:
        key = (d.get("apiVersion"), d.get("kind"))
        if check(key in KINDS, f"{where}: unexpected apiVersion/kind {key}"):
            walk({k: v for k, v in d.items() if k not in ("apiVersion", "kind")}, KINDS[key],
                 f"{where} {d['kind']}")
            check(d.get("metadata", {}).get("name"), f"{where}: no metadata.name")
            objs.append(d)
    ns_obj = one(objs, "Namespace", "namespace.yaml")
    ns = kust.get("namespace")
    check(ns and ns_obj and ns_obj["metadata"]["name"] == ns,
          f"kustomization namespace {ns} is not the Namespace object")
    for o in objs:
        check(o["metadata"].get("namespace") in (None, ns),
              f"{o['kind']} {o['metadata']['name']}: namespace {o['metadata'].get('namespace')}")
    names = {i.get("name") for i in kust.get("images", [])}
    ds = one(objs, "DaemonSet", "agent")
    sts = one(objs, "StatefulSet", "collector")
    for w in (ds, sts):
        if w is not None:
            for ctr in w["spec"]["template"]["spec"].get("containers", []):
                check(ctr.get("image", "").split(":")[0] in names,
                      f"{w['kind']}: image {ctr.get('image')} is not in kustomization images")
    svc = check_services(objs, sts) if sts is not None else None
    agent_text = check_agent(objs, ds, svc, ns) if ds is not None else None
    coll_text = check_collector(objs, sts) if sts is not None else None
    os.makedirs(out, exist_ok=True)
    for name, text in (("agent.yaml", agent_text), ("collector.yaml", coll_text)):
        if text is not None:
            with open(os.path.join(out, name), "w") as f:
                f.write(text)
    kinds = sorted(o["kind"] for o in objs)
    print(f"checked {len(objs)} objects: {', '.join(kinds)}")
    for f in FAILS:
        print(f"FAIL: {f}")
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
