"""Switchyard's operator on the same 4-node gloo job as a Kubeflow Trainer v2
TrainJob (runtime `torch-distributed`, plain `torchrun`) and as a v1
PyTorchJob, on the local test cluster (scripts/k8s-cluster start),
alternated runs.

Usage: python bench/trainjobs.py --switchyard PATH [--repeat 5]

For each run: seconds from the object's creation to all four pods Running, and
to Complete (TrainJob) / Succeeded (PyTorchJob). The upstream Trainer v2.3
controller manager (with JobSet's) is not run here yet: see docs/trainjob.md.
"""
import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from operators import KUBECONFIG, SCRIPT, job, kubectl  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
IMAGE = "switchyard.local/pytorch:dev"


def trainjob(name, ns):
    command = ["bash", "-c", f"cat > /tmp/b.py <<'EOF'\n{SCRIPT}\nEOF\ntorchrun /tmp/b.py"]
    return {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "metadata": {"name": name, "namespace": ns},
            "spec": {"runtimeRef": {"name": "torch-distributed"},
                     "trainer": {"numNodes": 4, "command": command,
                                 "resourcesPerNode": {"requests": {"cpu": "100m", "memory": "256Mi"}}}}}


def measure(kind, ns, name, timeout=300):
    doc = trainjob(name, ns) if kind == "TrainJob" else job(name, ns)
    selector = (f"jobset.sigs.k8s.io/jobset-name={name}" if kind == "TrainJob"
                else f"training.kubeflow.org/job-name={name}")
    done = "Complete" if kind == "TrainJob" else "Succeeded"
    t0 = time.monotonic()
    kubectl("apply", "-f", "-", stdin=json.dumps(doc))
    running = None
    while time.monotonic() - t0 < timeout:
        pods = json.loads(kubectl("-n", ns, "get", "pods", "-l", selector, "-o", "json"))
        phases = [p["status"].get("phase") for p in pods["items"]]
        if running is None and len(phases) == 4 and all(ph in ("Running", "Succeeded") for ph in phases):
            running = time.monotonic() - t0
        j = json.loads(kubectl("-n", ns, "get", kind.lower(), name, "-o", "json"))
        conds = {c["type"]: c["status"] for c in j.get("status", {}).get("conditions", [])}
        if conds.get(done) == "True":
            return running, time.monotonic() - t0
        if conds.get("Failed") == "True":
            raise SystemExit(f"{name} failed: {json.dumps(j['status'])}")
        time.sleep(0.1)
    raise SystemExit(f"{name} did not finish in {timeout} s")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--switchyard", required=True)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    assert KUBECONFIG.exists(), "start the test cluster first: scripts/k8s-cluster start"
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "deploy/crd-pytorchjob.yaml"),
            "-f", str(REPO / "deploy/crd-trainer.yaml"))
    runtime = json.loads(kubectl("create", "--dry-run=client", "-o", "json", "-f", str(REPO / "deploy/runtimes-torch.yaml")))
    runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"][0]["image"] = IMAGE
    kubectl("apply", "-f", "-", stdin=json.dumps(runtime))
    results = {"TrainJob": [], "PyTorchJob": []}
    logs = pathlib.Path(tempfile.mkdtemp(prefix="trainjob-bench-"))
    for i in range(args.repeat):
        for kind in ("TrainJob", "PyTorchJob") if i % 2 == 0 else ("PyTorchJob", "TrainJob"):
            ns = f"bench-tj-{uuid.uuid4().hex[:5]}"
            kubectl("create", "namespace", ns)
            with open(logs / f"{ns}.log", "wb") as log:
                op = subprocess.Popen([args.switchyard, "operator", "--namespace", ns],
                                      env={"KUBECONFIG": str(KUBECONFIG), "PATH": "/usr/bin:/bin"},
                                      stdout=log, stderr=log, stdin=subprocess.DEVNULL)
                try:
                    time.sleep(1)
                    assert op.poll() is None, "the operator exited"
                    r = measure(kind, ns, "bench")
                finally:
                    op.terminate()
                    op.wait(timeout=30)
            kubectl("delete", "namespace", ns, "--wait=true", "--timeout=120s", check=False)
            results[kind].append(r)
            print(f"{kind:10s} run {i + 1}: all Running {r[0]:.2f} s, ended {r[1]:.2f} s", flush=True)
    print(f"\nmedian of {args.repeat}, 4 nodes, Switchyard's operator (logs in {logs}):")
    print("| API | created → all Running | created → Complete/Succeeded |")
    print("|---|---|---|")
    for kind, rs in results.items():
        print(f"| {kind} | {statistics.median(r[0] for r in rs):.2f} s | {statistics.median(r[1] for r in rs):.2f} s |")


if __name__ == "__main__":
    sys.exit(main())
