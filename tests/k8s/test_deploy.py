"""deploy/ as written, on the local test cluster (scripts/k8s-cluster start):
the operator and the server run as Deployments from switchyard.local/switchyard:dev,
talk to the API server from their pods (in-cluster config, their ServiceAccounts'
RBAC), and a pipeline sent with the real kfp.Client through `kubectl port-forward`
runs its steps as Pods, except the training-job step, which the server runs in
its own process (it submits and follows the DDP job, so the job is in the
server's records); the in-cluster operator runs it as a PyTorchJob in real pods."""
import json
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import pathlib

import pytest
import requests

from kube import REPO, apply, host_volume, kubectl, kubectl_cmd, require_cluster

sys.path.insert(0, str(REPO / "tests" / "pipelines"))

import kfp  # noqa: E402
from kfp import compiler  # noqa: E402

NAMESPACES = ["switchyard", "switchyard-training", "switchyard-system"]
VOLUMES = ["deploy-test-server-data", "deploy-test-training-data"]


def remove_deployment():
    # Waits: the operator pod must be gone before another test runs its own operator.
    kubectl("delete", "--ignore-not-found", "--wait=true", "--timeout=120s", "-f", str(REPO / "deploy/server.yaml"),
            "-f", str(REPO / "deploy/operator.yaml"), check=False)
    kubectl("delete", "namespace", "--ignore-not-found", "--wait=true", "--timeout=120s", *NAMESPACES, check=False)
    kubectl("delete", "pv", "--ignore-not-found", "--wait=false", *VOLUMES, check=False)


def diagnostics():
    out = []
    for args in (["get", "pods", "-A", "-o", "wide"], ["-n", "switchyard", "logs", "deploy/switchyard-server", "--tail=80"],
                 ["-n", "switchyard-system", "logs", "deploy/switchyard-operator", "--tail=40"],
                 ["-n", "switchyard-training", "get", "events", "--sort-by=.lastTimestamp"]):
        r = kubectl(*args, check=False)
        out.append(f"$ kubectl {' '.join(args)}\n{r.stdout}{r.stderr}")
    return "\n".join(out)


@pytest.fixture
def deployed():
    require_cluster()
    remove_deployment()  # a killed earlier run
    data = pathlib.Path(tempfile.mkdtemp(prefix="switchyard-deploy-"))
    shutil.copytree(REPO / "examples/ddp-digits", data / "code/ddp-digits")
    token = secrets.token_hex(24)
    try:
        # What docs/kubernetes.md asks of a user before applying deploy/: the token in
        # both namespaces, and (EFS there, a folder here) one file system behind both claims.
        for ns in NAMESPACES[:2]:
            kubectl("create", "namespace", ns)
            kubectl("-n", ns, "create", "secret", "generic", "switchyard-auth", f"--from-literal=token={token}")
        apply(host_volume(VOLUMES[0], data, "switchyard", "switchyard-data"),
              host_volume(VOLUMES[1], data, "switchyard-training", "switchyard-data"))
        kubectl("apply", "-f", str(REPO / "deploy/crd-pytorchjob.yaml"), "-f", str(REPO / "deploy/operator.yaml"),
                "-f", str(REPO / "deploy/server.yaml"))
        # The documented switch: pipeline steps as Pods.
        kubectl("-n", "switchyard", "set", "env", "deployment/switchyard-server", "SWITCHYARD_TASK_BACKEND=kubernetes")
        for ns, name in (("switchyard-system", "switchyard-operator"), ("switchyard", "switchyard-server")):
            r = kubectl("-n", ns, "rollout", "status", f"deployment/{name}", "--timeout=180s", check=False)
            assert r.returncode == 0, f"{name} did not become available: {r.stderr}\n{diagnostics()}"
        yield data, token
    finally:
        remove_deployment()
        shutil.rmtree(data, ignore_errors=True)


def port_forward():
    """`kubectl port-forward` to the server's Service; returns (process, url)."""
    p = subprocess.Popen(kubectl_cmd("-n", "switchyard", "port-forward", "svc/switchyard-server", ":8888"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    m = re.search(r"127\.0\.0\.1:(\d+)", line)
    if not m:
        p.kill()
        raise AssertionError(f"port-forward said {line!r}: {p.stderr.read()}")
    return p, f"http://127.0.0.1:{m.group(1)}"


def test_deploy_runs_in_the_cluster_and_its_steps_report_their_job(deployed, tmp_path):
    data, token = deployed
    forward, url = port_forward()
    try:
        auth = {"Authorization": f"Bearer {token}"}
        # The server in its pod answers only with its token.
        assert requests.get(url + "/apis/v2beta1/runs", timeout=10).status_code == 401
        import k8s_deploy
        path = str(tmp_path / "k8s_deploy.yaml")
        compiler.Compiler().compile(k8s_deploy.k8s_deploy, path)
        c = kfp.Client(host=url, existing_token=token)
        result = c.create_run_from_pipeline_package(path, arguments={"epochs": 8})
        run = c.wait_for_run_completion(result.run_id, timeout=900)
        assert run.state == "SUCCEEDED", f"{run.error}\n{diagnostics()}"
        detail = requests.get(url + f"/apis/switchyard/v1/runs/{result.run_id}", headers=auth, timeout=10).json()
        metrics = json.loads(detail["outputs"]["Output"])
        assert metrics["world_size"] == 2 and metrics["test_accuracy"] >= 0.9, metrics

        # The ordinary step was a Pod in the training namespace, placed by the scheduler; the
        # training step ran in the server (no Pod waits out the training).
        steps = json.loads(kubectl("-n", "switchyard-training", "get", "pods", "-l",
                                   "app.kubernetes.io/managed-by=switchyard", "-o", "json"))["items"]
        assert [p["metadata"]["annotations"]["switchyard.io/task-key"] for p in steps] == ["read-model"], \
            [p["metadata"] for p in steps]
        assert all(p["status"]["phase"] == "Succeeded" and p["spec"]["nodeName"] == "node-1"
                   for p in steps), [p["status"] for p in steps]

        # The step's job is in the server's records, linked to the run and task.
        jobs = requests.get(url + "/apis/switchyard/v1/jobs", headers=auth, timeout=10).json()["jobs"]
        assert [(j["backend"], j["state"]) for j in jobs] == [("kubernetes", "SUCCEEDED")], jobs
        job = requests.get(url + f"/apis/switchyard/v1/jobs/{jobs[0]['job_id']}", headers=auth, timeout=10).json()
        labels = job["spec"]["metadata"]["labels"]
        assert labels["switchyard.io/run-id"] == result.run_id and labels["switchyard.io/task"] == "training-job", labels
        assert job["metrics"]["test_accuracy"] >= 0.9, job
        placement = job["placement"]
        assert placement["kind"] == "kubernetes" and placement["namespace"] == "switchyard-training", placement
        assert sorted(placement["pods"]) == [f"{placement['name']}-master-0", f"{placement['name']}-worker-0"]
        step = next(t for t in detail["tasks"] if t["name"] == "training-job")
        assert step["outputs"]["parameters"]["job_id"] in (job["job_id"], json.dumps(job["job_id"])), step["outputs"]
        metrics_text = requests.get(url + "/metrics", headers=auth, timeout=10).text
        assert 'switchyard_jobs{backend="kubernetes",state="SUCCEEDED"} 1' in metrics_text, metrics_text

        # The in-cluster operator ran the PyTorchJob (no other operator runs during this test).
        pj = json.loads(kubectl("-n", "switchyard-training", "get", "pytorchjobs", "-o", "json"))["items"]
        assert len(pj) == 1 and any(c["type"] == "Succeeded" and c["status"] == "True"
                                    for c in pj[0]["status"]["conditions"]), pj
        operator = json.loads(kubectl("-n", "switchyard-system", "get", "pods", "-o", "json"))["items"]
        assert [p["status"]["phase"] for p in operator] == ["Running"], operator
        # The model the training pods wrote is on the shared file system.
        assert (data / "switchyard-jobs" / job["job_id"] / "model" / "model.pt").is_file()
    finally:
        forward.kill()
        forward.wait(timeout=10)
