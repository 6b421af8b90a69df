"""The same TrainJobs under Kubeflow Trainer v2.3 (its controller manager and
JobSet v0.12's, built from their Go modules, run on the host with their
webhooks served to the API server at 127.0.0.1) and under Switchyard's
operator, on the local test cluster; prints what each showed and every
difference. Run by scripts/conformance-trainer (on demand, like bench/).

    trainer_side_by_side.py --switchyard BIN --trainer BIN --jobset BIN
"""
import argparse
import base64
import json
import re
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from kube import CACHE, REPO, apply, deploy_docs, docs_of, host_volume, kubectl, node_ip  # noqa: E402
import initializer_side_by_side as initializers  # noqa: E402

GOMOD = pathlib.Path(subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True).stdout.strip())
TRAINER_MOD = GOMOD / "github.com/kubeflow/trainer/v2@v2.3.0"
JOBSET_MOD = GOMOD / "sigs.k8s.io/jobset@v0.12.0"
IMAGE = "switchyard.local/pytorch:dev"
PORTS = {"trainer": 19543, "jobset": 19544}

ALL_REDUCE = ("import socket, torch, torch.distributed as dist\n"
              "dist.init_process_group('gloo')\n"
              "t = torch.tensor([float(dist.get_rank() + 1)])\n"
              "dist.all_reduce(t)\n"
              "print(f'host={socket.gethostname()} rank={dist.get_rank()} world={dist.get_world_size()} sum={t.item():.0f}', flush=True)\n"
              # Without it a rank may abort at exit (gloo's threads), and the gang waits.
              "dist.destroy_process_group()\n")


def torchrun(script):
    return ["bash", "-c", f"cat > /tmp/t.py <<'EOF'\n{script}EOF\ntorchrun /tmp/t.py"]


def runtime(name, backoff=None, max_restarts=None):
    rt = deploy_docs("runtimes-torch.yaml")[0]
    rt["metadata"]["name"] = name
    rj = rt["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]
    rj["spec"]["template"]["spec"]["containers"][0]["image"] = IMAGE
    if backoff is not None:
        rj["spec"]["backoffLimit"] = backoff
    if max_restarts is not None:
        rt["spec"]["template"]["spec"]["failurePolicy"] = {"maxRestarts": max_restarts}
    return rt


def initializers_runtime(name):
    """deploy/runtimes-torch-initializers.yaml: Switchyard's image fetches for both controllers."""
    rt = deploy_docs("runtimes-torch-initializers.yaml")[0]
    rt["metadata"]["name"] = name
    for rj in rt["spec"]["template"]["spec"]["replicatedJobs"]:
        if rj["name"] == "node":
            rj["template"]["spec"]["template"]["spec"]["containers"][0]["image"] = IMAGE
    return rt


READ_WORKSPACE = ("import os, pathlib\n"
                  "files = sorted(str(p.relative_to('/workspace')) for p in pathlib.Path('/workspace').rglob('*') if p.is_file())\n"
                  "print('files=' + ','.join(files) + ' rank=' + os.environ['PET_NODE_RANK'], flush=True)\n")

# Set by main(): moto's S3 on the cluster's bridge.
S3 = {"endpoint": None}


def initializer_spec():
    endpoint = {"name": "ENDPOINT", "value": S3["endpoint"]}
    return {"initializer": {
        "dataset": {"storageUri": "s3://data/digits", "env": [
            endpoint, {"name": "ACCESS_KEY_ID", "value": "test"}, {"name": "SECRET_ACCESS_KEY", "value": "test"},
            {"name": "IGNORE_PATTERNS", "value": "*.pt"}]},
        "model": {"storageUri": "s3://data/models/m", "env": [endpoint], "secretRef": {"name": "sbs-keys"}}},
        "trainer": {"numNodes": 2, "command": ["python3", "-c", READ_WORKSPACE]}}


# name → (runtime, spec, what to wait for)
JOBS = {
    "allreduce": ("sbs-torch", {"trainer": {"numNodes": 2, "numProcPerNode": 2, "command": torchrun(ALL_REDUCE),
                                            "env": [{"name": "EPOCHS", "value": "1"}],
                                            "resourcesPerNode": {"requests": {"cpu": "100m", "memory": "256Mi"}}}}, "end"),
    "cpudefault": ("sbs-torch", {"trainer": {"numNodes": 1, "command": ["bash", "-c", "env | grep ^PET_ | sort"],
                                             "resourcesPerNode": {"requests": {"cpu": "1500m"}}}}, "end"),
    "restarts": ("sbs-restart-once", {"trainer": {"numNodes": 2, "command": ["bash", "-c", 'if [ "$PET_NODE_RANK" = 1 ]; then exit 3; fi; sleep 30']}}, "end"),
    "nopolicy": ("sbs-no-policy", {"trainer": {"numNodes": 2, "command": ["bash", "-c", 'if [ "$PET_NODE_RANK" = 1 ]; then exit 3; fi; sleep 30']}}, "end"),
    "deadline": ("sbs-torch", {"activeDeadlineSeconds": 8, "trainer": {"numNodes": 2, "command": ["sleep", "600"]}}, "end"),
    "suspended": ("sbs-torch", {"suspend": True, "trainer": {"numNodes": 2, "command": ["sleep", "1"]}}, "suspended"),
    # The spec is made once moto runs (initializer_spec).
    "initializers": ("sbs-init", None, "end"),
}


def conditions(j):
    return sorted((c["type"], c["status"], c.get("reason", ""), c.get("message", ""))
                  for c in j.get("status", {}).get("conditions", []))


def observe(ns, name, what, timeout=240):
    t0 = time.monotonic()
    running = None
    while time.monotonic() - t0 < timeout:
        j = json.loads(kubectl("-n", ns, "get", "trainjob", name, "-o", "json"))
        pods = json.loads(kubectl("-n", ns, "get", "pods", "-l", f"jobset.sigs.k8s.io/jobset-name={name}", "-o", "json"))["items"]
        if running is None and pods and all(p["status"].get("phase") in ("Running", "Succeeded") for p in pods) \
                and len(pods) >= j["spec"].get("trainer", {}).get("numNodes", 1):
            running = time.monotonic() - t0
        conds = {c["type"]: c["status"] for c in j.get("status", {}).get("conditions", [])}
        ended = conds.get("Complete") == "True" or conds.get("Failed") == "True"
        if (what == "end" and ended) or (what == "suspended" and conds.get("Suspended") == "True"):
            # Let the controllers settle what they do after the end: pods still
            # terminating (their grace period) are compared once gone.
            settle = time.monotonic() + 60
            while time.monotonic() < settle and any(
                    p.get("metadata", {}).get("deletionTimestamp") for p in json.loads(kubectl(
                        "-n", ns, "get", "pods", "-l", f"jobset.sigs.k8s.io/jobset-name={name}", "-o", "json"))["items"]):
                time.sleep(0.5)
            time.sleep(2)
            j = json.loads(kubectl("-n", ns, "get", "trainjob", name, "-o", "json"))
            pods = json.loads(kubectl("-n", ns, "get", "pods", "-l", f"jobset.sigs.k8s.io/jobset-name={name}", "-o", "json"))["items"]
            return j, pods, running, time.monotonic() - t0
        time.sleep(0.2)
    raise SystemExit(f"{ns}/{name}: not {what} in {timeout} s: {json.dumps(j.get('status'))}")


def pod_view(p):
    c = p["spec"]["containers"][0]
    env = {e["name"]: e.get("value", json.dumps(e.get("valueFrom", {}), sort_keys=True)) for e in c.get("env", [])}
    labels = p["metadata"].get("labels", {})
    keep = ("jobset.sigs.k8s.io/jobset-name", "jobset.sigs.k8s.io/replicatedjob-name", "jobset.sigs.k8s.io/job-index",
            "jobset.sigs.k8s.io/replicatedjob-replicas", "jobset.sigs.k8s.io/restart-attempt",
            "batch.kubernetes.io/job-completion-index", "batch.kubernetes.io/job-name")
    volumes = sorted((v["name"], v.get("persistentVolumeClaim", {}).get("claimName"))
                     for v in p["spec"].get("volumes", []) if "persistentVolumeClaim" in v)
    return {
        "container": c["name"], "envFrom": c.get("envFrom"), "claims": volumes,
        "mounts": sorted((m["name"], m["mountPath"]) for m in c.get("volumeMounts", [])
                         if not m["mountPath"].startswith("/var/run/secrets")),
        "host": p["spec"].get("hostname"), "subdomain": p["spec"].get("subdomain"),
        "name_prefix": p["metadata"]["name"].rsplit("-", 1)[0],
        "restartPolicy": p["spec"].get("restartPolicy"),
        "env": env, "ports": [x.get("containerPort") for x in c.get("ports", [])],
        "labels": {k: labels.get(k) for k in keep},
        "resources": c.get("resources", {}),
    }


def summary(ns, name, what):
    j, pods, _, _ = observe(ns, name, what)
    logs = {}
    for p in pods:
        container = p["spec"]["containers"][0]["name"]
        r = kubectl("-n", ns, "logs", p["metadata"]["name"], "-c", container, check=False)
        # Two processes of a node may print at once: the records, not the lines.
        text = r.stdout if hasattr(r, "stdout") else r
        logs[p["spec"].get("hostname")] = sorted(re.findall(
            r"host=\S+ rank=\d+ world=\d+ sum=\d+|PET_\w+=\S*|files=\S* rank=\d+", text))
    claims = json.loads(kubectl("-n", ns, "get", "pvc", "-o", "json"))["items"]
    svc = kubectl("-n", ns, "get", "service", name, "-o", "json", check=False)
    svc = json.loads(svc.stdout) if hasattr(svc, "stdout") and svc.returncode == 0 else {}
    return {
        "conditions": conditions(j),
        "jobsStatus": j.get("status", {}).get("jobsStatus"),
        "pods": sorted((pod_view(p) for p in pods), key=lambda v: v["host"] or ""),
        "logs": logs,
        "service": {"clusterIP": svc.get("spec", {}).get("clusterIP"),
                    "publishNotReadyAddresses": svc.get("spec", {}).get("publishNotReadyAddresses"),
                    "selector": svc.get("spec", {}).get("selector")} if svc else None,
        "snapshot": kubectl("-n", ns, "get", "configmap", f"{name}-runtime-snapshot", check=False).returncode == 0,
        "claims": sorted((c["metadata"]["name"], c["metadata"].get("labels", {}).get("jobset.sigs.k8s.io/jobset-name"),
                          c["spec"].get("accessModes"), c["spec"].get("resources"), c["status"].get("phase"))
                         for c in claims if c["metadata"]["name"].endswith(f"-{name}")),
        "seconds": times(j, pods),
    }


def times(j, pods):
    """From the TrainJob's creation or resume (1 s resolution, as the API stores times):
    the last node's container started, and the condition that ended the wait."""
    from datetime import datetime
    at = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()  # noqa: E731
    t0 = at(j["metadata"]["creationTimestamp"])
    # A resumed job counts from its resume.
    t0 = max([t0] + [at(c["lastTransitionTime"]) for c in j.get("status", {}).get("conditions", [])
                     if c["type"] == "Suspended" and c["status"] == "False"])
    starts = []
    for p in pods:
        for c in p.get("status", {}).get("containerStatuses", []):
            st = c.get("state", {})
            s = (st.get("running") or st.get("terminated") or {}).get("startedAt")
            if s:
                starts.append(at(s))
    ends = [at(c["lastTransitionTime"]) for c in j.get("status", {}).get("conditions", [])
            if c["status"] == "True" and c["type"] in ("Complete", "Failed", "Suspended")]
    return {"running": max(starts) - t0 if starts else None, "ended": min(ends) - t0 if ends else None}


def pods_of(ns, name):
    return json.loads(kubectl("-n", ns, "get", "pods", "-l", f"jobset.sigs.k8s.io/jobset-name={name}",
                              "-o", "json"))["items"]


def wait(what, ok, timeout=180):
    t0 = time.monotonic()
    while not ok():
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"not {what} in {timeout} s")
        time.sleep(0.5)


def suspend_midway(ns):
    """A job on the initializers runtime suspended once its trainer runs, then
    resumed: what stays (the finished initializers), what goes, the end."""
    name = "midway"
    spec = initializer_spec()
    spec["trainer"]["command"] = ["bash", "-c", "sleep 10; python3 -c \"$0\"", READ_WORKSPACE]
    apply({"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
           "metadata": {"name": name, "namespace": ns}, "spec": {"runtimeRef": {"name": "sbs-init"}, **spec}})
    running = lambda: sum(1 for p in pods_of(ns, name)  # noqa: E731
                          if p["metadata"]["labels"].get("jobset.sigs.k8s.io/replicatedjob-name") == "node"
                          and p["status"].get("phase") == "Running") == 2
    wait("trainer running", running)
    kubectl("-n", ns, "patch", "trainjob", name, "--type=merge", "-p", '{"spec":{"suspend":true}}')

    def settled():
        j = json.loads(kubectl("-n", ns, "get", "trainjob", name, "-o", "json"))
        suspended = any(c["type"] == "Suspended" and c["status"] == "True" for c in j.get("status", {}).get("conditions", []))
        nodes = [p for p in pods_of(ns, name) if p["metadata"]["labels"].get("jobset.sigs.k8s.io/replicatedjob-name") == "node"]
        js = j.get("status", {}).get("jobsStatus") or []
        return suspended and not nodes and any(s["name"] == "node" and s.get("suspended") for s in js)
    wait("suspended, the trainer's pods gone", settled)
    time.sleep(3)
    j = json.loads(kubectl("-n", ns, "get", "trainjob", name, "-o", "json"))
    while_suspended = {
        "jobsStatus": j["status"].get("jobsStatus"),
        "pods": sorted((p["metadata"]["labels"].get("jobset.sigs.k8s.io/replicatedjob-name"), p["status"].get("phase"))
                       for p in pods_of(ns, name)),
    }
    kubectl("-n", ns, "patch", "trainjob", name, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    return {"while_suspended": while_suspended, "resumed": summary(ns, name, "end")}


def run_all(kind, ns):
    kubectl("create", "namespace", ns)
    kubectl("-n", ns, "create", "secret", "generic", "sbs-keys", "--from-literal=ACCESS_KEY_ID=test",
            "--from-literal=SECRET_ACCESS_KEY=test")
    # The initializers' claim, on a folder of this machine (no volume provisioner here).
    folder = pathlib.Path(tempfile.mkdtemp(prefix=f"{ns}-initializer-"))
    for job in ("initializers", "midway"):
        apply(host_volume(f"{ns}-{job}", folder / job, ns, f"initializer-{job}", size="20Gi",
                          modes=("ReadWriteOnce",)))
    for name, (rt, spec, _) in JOBS.items():
        spec = spec if spec is not None else initializer_spec()
        apply({"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
               "metadata": {"name": name, "namespace": ns},
               "spec": {"runtimeRef": {"name": rt}, **spec}})
    out = {}
    for name, (_, _, what) in JOBS.items():
        out[name] = summary(ns, name, what)
        print(f"{kind:10s} {name:11s} {out[name]['conditions']}", flush=True)
    # Resume the suspended one and see it finish.
    kubectl("-n", ns, "patch", "trainjob", "suspended", "--type=merge", "-p", '{"spec":{"suspend":false}}')
    out["resumed"] = summary(ns, "suspended", "end")
    print(f"{kind:10s} {'resumed':11s} {out['resumed']['conditions']}", flush=True)
    midway = suspend_midway(ns)
    out["midway-suspended"] = midway["while_suspended"]
    out["midway-resumed"] = midway["resumed"]
    print(f"{kind:10s} {'midway':11s} {midway['while_suspended']} {midway['resumed']['conditions']}", flush=True)
    return out


def certs(folder):
    """A CA and a 127.0.0.1 serving certificate (openssl) for both webhook servers."""
    folder.mkdir(parents=True, exist_ok=True)
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=side-by-side-ca",
        "-keyout", str(folder / "ca.key"), "-out", str(folder / "ca.crt"))
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", str(folder / "tls.key"), "-out", str(folder / "tls.csr"))
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", str(folder / "tls.csr"), "-CA", str(folder / "ca.crt"), "-CAkey",
        str(folder / "ca.key"), "-CAcreateserial", "-days", "1", "-extfile", str(folder / "san.ext"),
        "-out", str(folder / "tls.crt"))
    return base64.b64encode((folder / "ca.crt").read_bytes()).decode()


def webhooks(manifest, port, ca, prefix):
    """A module's webhook configurations, pointed at 127.0.0.1:port (the API
    server runs on this machine), under names of our own."""
    out = []
    for d in docs_of(manifest):
        d["metadata"] = {"name": f"{prefix}-{d['metadata']['name']}"}
        for w in d.get("webhooks", []):
            path = w["clientConfig"]["service"]["path"]
            w["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": ca}
        out.append(d)
    return out


def install_crds(path):
    """Applies CRDs and waits until the API server serves them."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(path))


def start_upstream(args, work, ca):
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(JOBSET_MOD / "config/components/crd/bases"))
    for crd in sorted((TRAINER_MOD / "manifests/base/crds").glob("trainer.kubeflow.org_*.yaml")):
        install_crds(crd)
    hooks = webhooks(JOBSET_MOD / "config/components/webhook/manifests.yaml", PORTS["jobset"], ca, "sbs-jobset") + \
        webhooks(TRAINER_MOD / "manifests/base/webhook/manifests.yaml", PORTS["trainer"], ca, "sbs-trainer")
    env = dict(os.environ, KUBECONFIG=str(CACHE / "kubeconfig"), POD_NAMESPACE="kubeflow-system")
    js_cfg = work / "jobset.yaml"
    js_cfg.write_text(json.dumps({
        "apiVersion": "config.jobset.x-k8s.io/v1alpha1", "kind": "Configuration",
        "internalCertManagement": {"enable": False}, "leaderElection": {"leaderElect": False},
        "webhook": {"port": PORTS["jobset"], "certDir": str(work / "certs")},
        "metrics": {"bindAddress": "0"}, "health": {"healthProbeBindAddress": "127.0.0.1:18091"}}))
    tr_cfg = work / "trainer.yaml"
    tr_cfg.write_text(json.dumps({
        "apiVersion": "config.trainer.kubeflow.org/v1alpha1", "kind": "Configuration",
        "certManagement": {"enable": False}, "leaderElection": {"leaderElect": False},
        "webhook": {"port": PORTS["trainer"], "host": "127.0.0.1"},
        "metrics": {"bindAddress": "0"}, "health": {"healthProbeBindAddress": "127.0.0.1:18092"}}))
    # controller-runtime's default certificate folder (Trainer's configuration has none).
    default = pathlib.Path(tempfile.gettempdir()) / "k8s-webhook-server/serving-certs"
    default.mkdir(parents=True, exist_ok=True)
    for f in ("tls.crt", "tls.key"):
        (default / f).write_bytes((work / "certs" / f).read_bytes())
    procs = [
        subprocess.Popen([args.jobset, f"--config={js_cfg}", "--zap-log-level=info"], env=env,
                         stdout=open(work / "jobset.log", "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL),
        subprocess.Popen([args.trainer, f"--config={tr_cfg}", "--zap-log-level=info"], env=env,
                         stdout=open(work / "trainer.log", "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL),
    ]
    time.sleep(5)
    for p in procs:
        assert p.poll() is None, f"an upstream controller exited; logs in {work}"
    apply(*hooks)
    return procs, hooks


def stop(procs):
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


def diff(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            yield from diff(a.get(k), b.get(k), f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            yield from diff(x, y, f"{path}[{i}]")
    elif a != b:
        yield path, a, b


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--switchyard", required=True)
    p.add_argument("--trainer", required=True)
    p.add_argument("--jobset", required=True)
    args = p.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="trainer-sbs-"))
    ca = certs(work / "certs")
    # A fresh cluster has no Trainer CRDs yet: Switchyard's, until Trainer's replace them.
    install_crds(REPO / "deploy/crd-trainer.yaml")
    runtimes = [runtime("sbs-torch"), runtime("sbs-restart-once", backoff=0, max_restarts=1),
                runtime("sbs-no-policy", backoff=0), initializers_runtime("sbs-init")]
    apply(*runtimes)
    moto, S3["endpoint"] = initializers.start_moto(REPO, node_ip())
    namespaces = []
    try:
        s3 = initializers.s3_client(S3["endpoint"])
        s3.create_bucket(Bucket="data")
        for key, body in initializers.OBJECTS.items():
            s3.put_object(Bucket="data", Key=key, Body=body)
        results = {}
        procs, hooks = start_upstream(args, work, ca)
        try:
            namespaces.append(f"sbs-up-{uuid.uuid4().hex[:5]}")
            results["trainer"] = run_all("trainer", namespaces[-1])
        finally:
            stop(procs)
            for h in hooks:
                kubectl("delete", h["kind"].lower(), h["metadata"]["name"], check=False)
        run_switchyard_and_compare(args, work, runtimes, results, namespaces)
    finally:
        moto.terminate()
        moto.wait(timeout=30)
        for ns in namespaces:
            for job in ("initializers", "midway"):
                kubectl("delete", "pv", f"{ns}-{job}", "--wait=false", check=False)


def run_switchyard_and_compare(args, work, runtimes, results, namespaces):
    # Switchyard's CRDs back (the CRD Trainer installed is replaced), then its operator.
    install_crds(REPO / "deploy/crd-trainer.yaml")
    apply(*runtimes)
    ns = f"sbs-sy-{uuid.uuid4().hex[:5]}"
    namespaces.append(ns)
    op = subprocess.Popen([args.switchyard, "operator", "--namespace", ns, "--resync-seconds", "2"],
                          env=dict(os.environ, KUBECONFIG=str(CACHE / "kubeconfig")),
                          stdout=open(work / "switchyard.log", "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        time.sleep(1)
        results["switchyard"] = run_all("switchyard", ns)
    finally:
        stop([op])
    (work / "results.json").write_text(json.dumps(results, indent=1))
    differences = 0
    print(f"\ndifferences (Trainer v2.3 + JobSet v0.12 | Switchyard), all in {work}/results.json:")
    for name in results["trainer"]:
        a, b = dict(results["trainer"][name]), dict(results["switchyard"][name])
        for key in ("seconds",):
            a.pop(key, None), b.pop(key, None)
        for path, x, y in diff(a, b):
            differences += 1
            print(f"  {name}{path}: {json.dumps(x)} | {json.dumps(y)}")
    print("\n| job | Trainer: created → last container started | → ended | Switchyard: → last started | → ended |")
    print("|---|---|---|---|---|")
    fmt = lambda v: "—" if v is None else f"{v:.1f} s"  # noqa: E731
    for name in (n for n in results["trainer"] if "seconds" in results["trainer"][n]):
        t, s = results["trainer"][name]["seconds"], results["switchyard"][name]["seconds"]
        print(f"| {name} | {fmt(t['running'])} | {fmt(t['ended'])} | {fmt(s['running'])} | {fmt(s['ended'])} |")
    print(f"\n{differences} differences")


if __name__ == "__main__":
    sys.exit(main())
