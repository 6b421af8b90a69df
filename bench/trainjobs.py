"""The same 4-node gloo job as a Kubeflow Trainer v2 TrainJob (runtime
`torch-distributed`, plain `torchrun`) under Switchyard's operator and under
Kubeflow Trainer v2.3 with JobSet v0.12 (as scripts/conformance-trainer runs
them), and as a v1 PyTorchJob under Switchyard's operator, on the local test
cluster (scripts/k8s-cluster start).

Usage: python bench/trainjobs.py --switchyard PATH [--trainer PATH --jobset PATH] [--repeat 5]

For each run: seconds from the object's creation to all four pods Running, and
to Complete (TrainJob) / Succeeded (PyTorchJob). Switchyard's two runs
alternate; Trainer's (its CRDs replace Switchyard's while they run) come after.
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
sys.path.insert(1, str(pathlib.Path(__file__).resolve().parents[1] / "tests/k8s"))
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
    p.add_argument("--trainer")
    p.add_argument("--jobset")
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
    if args.trainer and args.jobset:
        import trainer_side_by_side as sbs
        work = pathlib.Path(tempfile.mkdtemp(prefix="trainjob-bench-upstream-"))
        ca = sbs.certs(work / "certs")
        procs, hooks = sbs.start_upstream(args, work, ca)
        results["TrainJob (Kubeflow Trainer v2.3)"] = []
        try:
            kubectl("apply", "-f", "-", stdin=json.dumps(runtime))
            for i in range(args.repeat):
                ns = f"bench-up-{uuid.uuid4().hex[:5]}"
                kubectl("create", "namespace", ns)
                r = measure("TrainJob", ns, "bench")
                kubectl("delete", "namespace", ns, "--wait=true", "--timeout=120s", check=False)
                results["TrainJob (Kubeflow Trainer v2.3)"].append(r)
                print(f"Trainer    run {i + 1}: all Running {r[0]:.2f} s, ended {r[1]:.2f} s", flush=True)
        finally:
            sbs.stop(procs)
            for h in hooks:
                kubectl("delete", h["kind"].lower(), h["metadata"]["name"], check=False)
            kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "deploy/crd-trainer.yaml"))
    print(f"\nmedian of {args.repeat}, 4 nodes (logs in {logs}):")
    print("| API, controller | created → all Running | created → Complete/Succeeded |")
    print("|---|---|---|")
    names = {"TrainJob": "TrainJob, Switchyard", "PyTorchJob": "PyTorchJob, Switchyard"}
    for kind, rs in results.items():
        print(f"| {names.get(kind, kind)} | {statistics.median(r[0] for r in rs):.2f} s | "
              f"{statistics.median(r[1] for r in rs):.2f} s |")


if __name__ == "__main__":
    sys.exit(main())
