"""Switchyard's PyTorchJob operator vs the Kubeflow training operator, on the
local test cluster (scripts/k8s-cluster start), same job, alternated runs.

Usage: python bench/operators.py --switchyard PATH --kubeflow PATH [--repeat 5]

The job is 1 Master + 3 Workers of the pytorch image: each rank joins a gloo
process group, meets the others at a barrier and leaves. For each run it
measures, from the PyTorchJob's creation: all four pods Running, and the job
Succeeded. Both operators reconcile the Kubeflow CRD (manifests of
training-operator v1.9.3, as a Kubeflow user has it installed); each runs on
the host with the admin kubeconfig, one at a time. The Kubeflow operator's
webhook certificates are managed by its own cert rotator, which needs its
namespace, Secret and a ValidatingWebhookConfiguration; the configuration made
here matches no request, so no admission call is ever made.
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

CACHE = pathlib.Path(os.environ.get("SWITCHYARD_K8S_CACHE", pathlib.Path.home() / ".cache/switchyard/k8s"))
KUBECONFIG = CACHE / "kubeconfig"
GOMODCACHE = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True).stdout.strip()
KUBEFLOW_CRD = pathlib.Path(GOMODCACHE) / "github.com/kubeflow/training-operator@v1.9.3/manifests/base/crds/kubeflow.org_pytorchjobs.yaml"

SCRIPT = ("import torch.distributed as dist; dist.init_process_group('gloo'); dist.barrier(); "
          "print('rank', dist.get_rank(), 'of', dist.get_world_size(), flush=True); dist.destroy_process_group()")


def kubectl(*args, stdin=None, check=True):
    r = subprocess.run([str(CACHE / "bin/kubectl"), "--kubeconfig", str(KUBECONFIG), *args],
                       input=stdin, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)}: {r.stderr}")
    return r.stdout


def job(name, ns):
    template = {"spec": {"containers": [{
        "name": "pytorch", "image": "switchyard.local/pytorch:dev", "imagePullPolicy": "Never",
        "command": ["python3", "-c", SCRIPT], "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}}}]}}
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": name, "namespace": ns},
            "spec": {"pytorchReplicaSpecs": {
                "Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": template},
                "Worker": {"replicas": 3, "restartPolicy": "OnFailure", "template": template}}}}


def measure(ns, name, timeout=300):
    """Seconds from creation to all pods Running and to Succeeded."""
    t0 = time.monotonic()
    kubectl("apply", "-f", "-", stdin=json.dumps(job(name, ns)))
    running = None
    while time.monotonic() - t0 < timeout:
        pods = json.loads(kubectl("-n", ns, "get", "pods", "-l", f"training.kubeflow.org/job-name={name}", "-o", "json"))
        phases = [p["status"].get("phase") for p in pods["items"]]
        if running is None and len(phases) == 4 and all(ph in ("Running", "Succeeded") for ph in phases):
            running = time.monotonic() - t0
        j = json.loads(kubectl("-n", ns, "get", "pytorchjob", name, "-o", "json"))
        conds = {c["type"]: c["status"] for c in j.get("status", {}).get("conditions", [])}
        if conds.get("Succeeded") == "True":
            return running, time.monotonic() - t0
        if conds.get("Failed") == "True":
            raise SystemExit(f"{name} failed: {json.dumps(j['status'])}")
        time.sleep(0.1)
    raise SystemExit(f"{name} did not finish in {timeout} s")


# The Kubeflow operator's init container for workers, as its default template has
# it (retry every 2 s until the master's name resolves), with python3 instead of
# nslookup: the test cluster has no alpine image and no registry.
INIT_TEMPLATE = """- name: init-pytorch
  image: switchyard.local/switchyard:dev
  imagePullPolicy: IfNotPresent
  resources:
    limits: {cpu: 100m, memory: 64Mi}
    requests: {cpu: 50m, memory: 10Mi}
  command:
  - python3
  - -c
  - |
    import socket, sys, time
    for i in range({{.MaxTries}}):
        try:
            socket.gethostbyname("{{.MasterAddr}}"); sys.exit(0)
        except OSError:
            print("waiting for master", flush=True); time.sleep(2)
    sys.exit(1)
"""


def start(kind, args, ns, log):
    env = dict(os.environ, KUBECONFIG=str(KUBECONFIG), MY_POD_NAMESPACE="kubeflow")
    if kind == "switchyard":
        cmd = [args.switchyard, "operator", "--namespace", ns]
    else:
        template = pathlib.Path(log.name).with_suffix(".init.yaml")
        template.write_text(INIT_TEMPLATE)
        cmd = [args.kubeflow, "--enable-scheme=pytorchjob", f"--namespace={ns}", "--metrics-bind-address=0",
               f"--pytorch-init-container-template-file={template}",
               "--health-probe-bind-address=127.0.0.1:18081", "--webhook-server-port=19443"]
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)


def ready(kind, op, timeout=60):
    """Waits until the operator can reconcile: the Kubeflow operator's readyz
    answers once its webhook certificates exist; then one more second for both."""
    t0 = time.monotonic()
    if kind == "kubeflow":
        import base64
        import urllib.request
        certs = pathlib.Path("/tmp/k8s-webhook-server/serving-certs")
        while time.monotonic() - t0 < timeout:
            assert op.poll() is None, "the Kubeflow operator exited"
            # In a pod the Secret is mounted at its certificate folder; here we copy it there.
            secret = json.loads(kubectl("-n", "kubeflow", "get", "secret", "training-operator-webhook-cert", "-o", "json"))
            data = secret.get("data") or {}
            if "tls.crt" in data and not (certs / "tls.crt").exists():
                certs.mkdir(parents=True, exist_ok=True)
                for k, v in data.items():
                    (certs / k).write_bytes(base64.b64decode(v))
            try:
                if urllib.request.urlopen("http://127.0.0.1:18081/readyz", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise SystemExit("the Kubeflow operator did not become ready")
    time.sleep(1)
    assert op.poll() is None, f"the {kind} operator exited"


def prepare_kubeflow():
    """Kubeflow's CRD, and what its operator's cert rotator needs: its namespace,
    Secret and a ValidatingWebhookConfiguration that matches no request."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(KUBEFLOW_CRD))
    # A namespace left terminating by an earlier run must be gone before it is made again.
    kubectl("wait", "--for=delete", "namespace/kubeflow", "--timeout=180s", check=False)
    kubectl("create", "namespace", "kubeflow", check=False)
    kubectl("-n", "kubeflow", "create", "secret", "generic", "training-operator-webhook-cert", check=False)
    kubectl("apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "validator.training-operator.kubeflow.org"},
        "webhooks": [{"name": "validate.bench.kubeflow.org", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                      "failurePolicy": "Ignore",
                      "clientConfig": {"service": {"name": "training-operator", "namespace": "kubeflow", "path": "/none"}},
                      "rules": [{"apiGroups": ["bench.invalid"], "apiVersions": ["v1"], "operations": ["CREATE"],
                                 "resources": ["nothing"]}]}]}))


def unprepare_kubeflow():
    import shutil
    shutil.rmtree("/tmp/k8s-webhook-server", ignore_errors=True)
    kubectl("delete", "validatingwebhookconfiguration", "validator.training-operator.kubeflow.org", check=False)
    kubectl("delete", "namespace", "kubeflow", "--wait=false", check=False)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--switchyard", required=True)
    p.add_argument("--kubeflow", required=True)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    assert KUBECONFIG.exists(), "start the test cluster first: scripts/k8s-cluster start"
    prepare_kubeflow()
    results = {"switchyard": [], "kubeflow": []}
    logs = pathlib.Path(tempfile.mkdtemp(prefix="operator-bench-"))
    try:
        for i in range(args.repeat):
            for kind in ("switchyard", "kubeflow") if i % 2 == 0 else ("kubeflow", "switchyard"):
                ns = f"bench-{kind[:2]}-{uuid.uuid4().hex[:5]}"
                kubectl("create", "namespace", ns)
                with open(logs / f"{ns}.log", "wb") as log:
                    op = start(kind, args, ns, log)
                    try:
                        ready(kind, op)
                        r = measure(ns, "bench")
                    finally:
                        op.terminate()
                        op.wait(timeout=30)
                kubectl("delete", "namespace", ns, "--wait=true", "--timeout=120s", check=False)
                results[kind].append(r)
                print(f"{kind:10s} run {i + 1}: all Running {r[0]:.2f} s, Succeeded {r[1]:.2f} s", flush=True)
    finally:
        unprepare_kubeflow()
    print(f"\nmedian of {args.repeat}, 1 Master + 3 Workers (logs in {logs}):")
    print("| operator | created → all Running | created → Succeeded |")
    print("|---|---|---|")
    med = {}
    for kind, rs in results.items():
        med[kind] = (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
        print(f"| {kind} | {med[kind][0]:.2f} s | {med[kind][1]:.2f} s |")
    print(f"ratio switchyard/kubeflow: Running {med['switchyard'][0] / med['kubeflow'][0]:.2f}x, "
          f"Succeeded {med['switchyard'][1] / med['kubeflow'][1]:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
