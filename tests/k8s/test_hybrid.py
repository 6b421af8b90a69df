"""The hybrid pipeline (examples/hybrid) through the real kfp.Client against
`switchyard server`, with training_runtime=kubernetes: the DDP job trains in
pods of the local test cluster (scripts/k8s-cluster start), reconciled by
`switchyard operator` on the host under deploy/operator.yaml's rights, and the
report step reads the model the pods wrote to the data claim."""
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import uuid

import pytest
import requests

from kube import BIN, CACHE, REPO, apply, deploy_docs, host_volume, kubectl, require_cluster

sys.path.insert(0, str(REPO / "tests" / "server"))

import kfp  # noqa: E402
from conftest import Server  # noqa: E402


def bind(kind, role, user, ns=None):
    meta = {"name": f"{role}-test"}
    if ns:
        meta["namespace"] = ns
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind + "Binding", "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
            "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]}


@pytest.fixture
def training_namespace():
    require_cluster()
    ns = f"hybrid-{uuid.uuid4().hex[:6]}"
    data = pathlib.Path(tempfile.mkdtemp(prefix="switchyard-claim-"))
    kubectl("apply", "-f", str(REPO / "deploy/crd-pytorchjob.yaml"))
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "deploy/crd-trainer.yaml"))
    kubectl("create", "namespace", ns)
    # Kubeflow Trainer's torch runtime, in the test image, for the TrainJob variant.
    runtime = deploy_docs("runtimes-torch.yaml")[0]
    runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"][0]["image"] = "switchyard.local/pytorch:dev"
    apply(runtime)
    docs = []
    for d in deploy_docs("operator.yaml"):
        if d["kind"] == "ClusterRole":
            docs += [d, bind("ClusterRole", d["metadata"]["name"], "switchyard-operator")]
    for d in deploy_docs("server.yaml"):
        if d["kind"] == "Role":
            d["metadata"]["namespace"] = ns
            docs += [d, bind("Role", d["metadata"]["name"], "switchyard-server", ns)]
        # The run's service account (KFP's pipeline-runner), which the training
        # job its step submits runs under.
        if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "pipeline-runner":
            d["metadata"]["namespace"] = ns
            docs.append(d)
    pv = f"{ns}-data"
    docs += [
        host_volume(pv, data, ns, "switchyard-data"),
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "switchyard-data", "namespace": ns},
         "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": pv,
                  "resources": {"requests": {"storage": "10Gi"}}}},
    ]
    apply(*docs)
    kubectl("wait", "-n", ns, "--for=jsonpath={.status.phase}=Bound", "pvc/switchyard-data", "--timeout=60s")
    op_log = open(data.parent / f"{ns}-operator.log", "wb")
    operator = subprocess.Popen([BIN, "operator", "--namespace", ns, "--resync-seconds", "2"],
                                env=dict(os.environ, KUBECONFIG=str(CACHE / "kubeconfig-operator")),
                                stdout=op_log, stderr=op_log, stdin=subprocess.DEVNULL)
    try:
        yield ns, data
    finally:
        operator.terminate()
        operator.wait(timeout=30)
        op_log.close()
        kubectl("delete", "namespace", ns, "--wait=false", check=False)
        kubectl("delete", "pv", pv, "--wait=false", check=False)


@pytest.mark.parametrize("api", ["PyTorchJob", "TrainJob"])
def test_hybrid_pipeline_trains_in_pods(training_namespace, tmp_path, monkeypatch, api):
    ns, data = training_namespace
    # The server's data folder is the claim's folder: the model the pods write
    # there is where the training step reads it.
    for k, v in {"SWITCHYARD_K8S_NAMESPACE": ns, "SWITCHYARD_K8S_KUBECONFIG": str(CACHE / "kubeconfig-server"),
                 "SWITCHYARD_K8S_DATA_CLAIM": "switchyard-data", "SWITCHYARD_K8S_DATA_MOUNT": str(data)}.items():
        monkeypatch.setenv(k, v)
    server = Server(data).start()
    try:
        path = str(tmp_path / "hybrid.yaml")
        subprocess.run([sys.executable, "-W", "ignore", str(REPO / "examples/hybrid/pipeline.py"), path], check=True,
                       capture_output=True)
        c = kfp.Client(host=server.url)
        result = c.create_run_from_pipeline_package(path, arguments={
            "training_runtime": "kubernetes", "epochs": 8, "image": "switchyard.local/pytorch:dev",
            "kubernetes": {"api": api}})
        run = c.wait_for_run_completion(result.run_id, timeout=600)
        log = (data / "server.log").read_text(errors="replace")
        assert run.state == "SUCCEEDED", f"{run.error}\n{log[-4000:]}"
        print({t.display_name: t.state for t in run.run_details.task_details})
        states = {t.display_name: t.state for t in run.run_details.task_details}
        # The Elif branch's step (kfp names it training-job-2) ran; the other branches were skipped.
        assert states["training-job-2"] == "SUCCEEDED" and states["report"] == "SUCCEEDED", states
        assert states["condition-2"] == "SKIPPED" and states["condition-4"] == "SKIPPED", states
        # The job is in the server's records, with where it ran.
        jobs = requests.get(server.url + "/apis/switchyard/v1/jobs", timeout=10).json()["jobs"]
        assert [(j["backend"], j["state"]) for j in jobs] == [("kubernetes", "SUCCEEDED")], jobs
        job = requests.get(server.url + f"/apis/switchyard/v1/jobs/{jobs[0]['job_id']}", timeout=10).json()
        assert job["metrics"]["test_accuracy"] >= 0.9, job
        placement = job["placement"]
        assert placement["kind"] == "kubernetes" and placement["namespace"] == ns, placement
        assert placement["api"] == api, placement
        if api == "PyTorchJob":
            assert sorted(placement["pods"]) == [f"{placement['name']}-master-0", f"{placement['name']}-worker-0"], placement
        else:  # JobSet-style names: <job>-node-0-<index>-<suffix>
            hosts = sorted(p.rsplit("-", 1)[0] for p in placement["pods"])
            assert hosts == [f"{placement['name']}-node-0-0", f"{placement['name']}-node-0-1"], placement
        # The run page's document links the step to its job.
        detail = requests.get(server.url + f"/apis/switchyard/v1/runs/{result.run_id}", timeout=10).json()
        step = next(t for t in detail["tasks"] if t["name"] == "training-job-2")
        assert step["outputs"]["parameters"]["backend_used"] in ("kubernetes", '"kubernetes"'), step["outputs"]
        # The model the report read came from the claim.
        model = data / "switchyard-jobs" / jobs[0]["job_id"] / "model"
        assert (model / "model.pt").is_file() and json.loads((model / "metrics.json").read_text())["world_size"] == 2
    finally:
        server.kill()
