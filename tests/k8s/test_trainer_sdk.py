"""The Kubeflow SDK (kubeflow 0.5.0, TrainerClient) against Switchyard's
operator on the local test cluster: list_runtimes, get_runtime, train with a
CustomTrainer (its function written to a file by `bash -c`, then plain
`torchrun`) on 2 nodes and with a CustomTrainerContainer, wait_for_job_status,
get_job, get_job_logs, list_jobs, delete_job; S3DatasetInitializer and
S3ModelInitializer (moto's S3, on the cluster's bridge) before a CustomTrainer. The SDK runs in its own venv
(scripts/setup --k8s) and reports what it saw (trainer_sdk_driver.py)."""
import json
import os
import pathlib
import subprocess
import tempfile
import uuid

import pytest

import initializer_side_by_side as initializers
from kube import BIN, CACHE, REPO, apply, deploy_docs, host_volume, kubectl, node_ip, require_cluster
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
    docs = []
    for file in ("runtimes-torch.yaml", "runtimes-torch-initializers.yaml"):
        runtime = deploy_docs(file)[0]
        for rj in runtime["spec"]["template"]["spec"]["replicatedJobs"]:
            if rj["name"] == "node":
                rj["template"]["spec"]["template"]["spec"]["containers"][0]["image"] = IMAGE
        docs.append(runtime)
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


@pytest.fixture
def bridge_moto():
    """moto's S3 on the node's address (the cluster's bridge, which pods reach)."""
    server, endpoint = initializers.start_moto(REPO, node_ip())
    try:
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_sdks_s3_initializers_fill_the_workspace_before_the_trainer(trainer_namespace, bridge_moto, tmp_path):
    import boto3

    ns, log = trainer_namespace
    s3 = boto3.client("s3", endpoint_url=bridge_moto, region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    s3.create_bucket(Bucket="data")
    s3.put_object(Bucket="data", Key="digits/train.csv", Body=b"1 2 3")
    s3.create_bucket(Bucket="models")
    s3.put_object(Bucket="models", Key="m/config.json", Body=b"{}")
    # Left out by the SDK's default model ignore patterns (*.bin, *.pt, ...).
    s3.put_object(Bucket="models", Key="m/weights.bin", Body=b"0")
    name = f"s3{uuid.uuid4().hex[:6]}"
    pv = f"{ns}-initializer"
    apply(host_volume(pv, tmp_path, ns, f"initializer-{name}", size="20Gi", modes=("ReadWriteOnce",)))
    try:
        r = subprocess.run([SDK_PYTHON, str(REPO / "tests/k8s/trainer_sdk_driver.py"), ns, str(CACHE / "kubeconfig"),
                            IMAGE, "--s3", bridge_moto, name], capture_output=True, text=True, timeout=400)
    finally:
        kubectl("delete", "pv", pv, "--wait=false", check=False)
    assert r.returncode == 0, f"{r.stderr[-4000:]}\noperator log:\n{pathlib.Path(log).read_text()[-4000:]}"
    out = json.loads(r.stdout.strip().splitlines()[-1])
    print(json.dumps(out, indent=1))
    assert out["status"] == "Complete"
    assert out["steps"] == [["dataset-initializer", "Succeeded"], ["model-initializer", "Succeeded"],
                            ["node-0", "Succeeded"]]
    assert any("sdk files=dataset/train.csv,model/config.json" in line for line in out["logs"]), out["logs"]
