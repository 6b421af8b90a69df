"""The Kubeflow SDK (kubeflow 0.5.0, TrainerClient) against Switchyard's
operator on the local test cluster: list_runtimes, get_runtime, train with a
CustomTrainer (its function written to a file by `bash -c`, then plain
`torchrun`) on 2 nodes and with a CustomTrainerContainer, wait_for_job_status,
get_job, get_job_logs, list_jobs, delete_job. The SDK runs in its own venv
(scripts/setup --k8s) and reports what it saw (trainer_sdk_driver.py)."""
import json
import os
import pathlib
import subprocess
import tempfile
import uuid

import pytest

from kube import BIN, CACHE, REPO, apply, deploy_docs, kubectl, require_cluster
from test_hybrid import bind

IMAGE = "switchyard.local/pytorch:dev"
SDK_PYTHON = os.environ.get("SWITCHYARD_KUBEFLOW_PYTHON",
                            str(pathlib.Path.home() / ".cache/switchyard/kubeflow-venv/bin/python"))


@pytest.fixture
def trainer_namespace():
    require_cluster()
    assert pathlib.Path(SDK_PYTHON).exists(), f"no Kubeflow SDK venv at {SDK_PYTHON}: run scripts/setup --k8s"
    ns = f"sdk-{uuid.uuid4().hex[:6]}"
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "deploy/crd-trainer.yaml"))
    kubectl("create", "namespace", ns)
    runtime = deploy_docs("runtimes-torch.yaml")[0]
    runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"][0]["image"] = IMAGE
    docs = [runtime]
    for d in deploy_docs("operator.yaml"):
        if d["kind"] == "ClusterRole":
            docs += [d, bind("ClusterRole", d["metadata"]["name"], "switchyard-operator")]
    apply(*docs)
    log = tempfile.NamedTemporaryFile(prefix=f"{ns}-operator-", suffix=".log", delete=False)
    operator = subprocess.Popen([BIN, "operator", "--namespace", ns, "--resync-seconds", "2"],
                                env=dict(os.environ, KUBECONFIG=str(CACHE / "kubeconfig-operator")),
                                stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        yield ns, log.name
    finally:
        operator.terminate()
        operator.wait(timeout=30)
        log.close()
        kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_the_kubeflow_sdk_trains_and_follows_trainjobs(trainer_namespace):
    ns, log = trainer_namespace
    r = subprocess.run([SDK_PYTHON, str(REPO / "tests/k8s/trainer_sdk_driver.py"), ns,
                        str(CACHE / "kubeconfig"), IMAGE], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{r.stderr[-4000:]}\noperator log:\n{pathlib.Path(log).read_text()[-4000:]}"
    out = json.loads(r.stdout.strip().splitlines()[-1])
    print(json.dumps(out, indent=1))
    assert "torch-distributed" in out["runtimes"]
    assert out["runtime"] == {"name": "torch-distributed", "framework": "torch"}
    # The SDK says Running only while no condition is set and both pods run.
    assert out["seen_running"] in ("Running", "Complete")
    job = out["job"]
    assert job["status"] == "Complete" and job["num_nodes"] == 2
    assert job["steps"] == [["node-0", "Succeeded"], ["node-1", "Succeeded"]]
    ranks = [line for line in out["logs"] if "sdk host=" in line]
    # Node 0's log: its torchrun started one process (1 CPU per node).
    assert ranks and all(line.endswith("node_rank=0") and "world=2 sum=3" in line for line in ranks), out["logs"]
    assert job["name"] in out["listed"]
    assert out["container_job"]["status"] == "Complete"
    assert out["container_job"]["steps"] == ["node-0"]
    assert kubectl("get", "trainjob", "-n", ns, job["name"], check=False).returncode != 0, "deleted"
