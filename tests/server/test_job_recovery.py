"""Training jobs outlive the server that followed them: a server killed with
kill -9 mid-training is replaced, and the next one follows the same SageMaker
job (moto, through tests/sagemaker/moto_server.py whose jobs train for a
while) instead of submitting another; a job no process follows is stopped
where it runs when it is canceled over HTTP."""
import contextlib
import json
import subprocess
import sys
import time
import warnings

import requests

warnings.simplefilter("ignore")

import kfp  # noqa: E402

from conftest import REPO, Moto, Server  # noqa: E402

ROLE = "arn:aws:iam::123456789012:role/SwitchyardTraining"


def sagemaker_env(moto):
    return dict(moto.env(), SWITCHYARD_SAGEMAKER_BUCKET="sm-staging", SWITCHYARD_SAGEMAKER_POLL_SECONDS="1")


def wait(what, pred, timeout=120):
    deadline = time.time() + timeout
    while True:
        value = pred()
        if value:
            return value
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


@contextlib.contextmanager
def sagemaker(training_seconds, accuracy):
    """moto whose training jobs take `training_seconds`, a staging bucket, and
    the stand-in for the training instances; all stopped at the end."""
    moto = Moto(training_seconds=training_seconds)
    try:
        moto.s3.create_bucket(Bucket="sm-staging")
        instances = moto.stand_in(accuracy)
        try:
            yield moto
        finally:
            instances.terminate()
            instances.wait()
    finally:
        moto.stop()


def job_doc():
    return {"apiVersion": "switchyard/v1", "kind": "TrainingJob", "metadata": {"name": "held"},
            "spec": {"backend": "sagemaker", "image": "pytorch-training:2.5-cpu-py311",
                     "sourceDir": str(REPO / "examples/ddp-digits"), "entryPoint": "train.py",
                     "nodes": 1, "instanceType": "ml.c5.xlarge", "roleArn": ROLE,
                     "metrics": [{"name": "test_accuracy", "regex": "test_accuracy=([0-9.]+)"}]}}


def start_hybrid_on_sagemaker(tmp_path, moto, extra=()):
    """A server on a fresh home running the hybrid pipeline with its training
    step on SageMaker, killed with kill -9 once the step's SageMaker job
    exists (the step and its follower die with it). Returns (home, run id)."""
    home = tmp_path / "home"
    home.mkdir()
    path = str(tmp_path / "hybrid.yaml")
    subprocess.run([sys.executable, "-W", "ignore", str(REPO / "examples/hybrid/pipeline.py"), path],
                   check=True, capture_output=True)
    s = Server(home, env=sagemaker_env(moto), extra=list(extra)).start()
    try:
        c = kfp.Client(host=s.url)
        result = c.create_run_from_pipeline_package(
            path, arguments={"training_runtime": "sagemaker", "role_arn": ROLE})
        wait("the training step's SageMaker job", moto.training_jobs)
    finally:
        s.kill(sig=9)
    return home, result.run_id


def test_a_killed_servers_sagemaker_step_is_followed_by_the_next_server(tmp_path):
    with sagemaker(training_seconds=15, accuracy=0.97) as moto:
        home, run_id = start_hybrid_on_sagemaker(tmp_path, moto)
        assert [st for _, st in moto.training_jobs()] == ["InProgress"]
        s2 = Server(home, env=sagemaker_env(moto)).start()
        try:
            c = kfp.Client(host=s2.url)
            run = c.wait_for_run_completion(run_id, timeout=180)
            assert run.state == "SUCCEEDED", run.error
            # The same SageMaker job, followed to its end: none submitted again.
            assert [st for _, st in moto.training_jobs()] == ["Completed"]
            jobs = requests.get(s2.url + "/apis/switchyard/v1/jobs", timeout=10).json()["jobs"]
            assert [j["state"] for j in jobs] == ["SUCCEEDED"], jobs
            assert jobs[0]["metrics"]["test_accuracy"] == 0.97
            detail = requests.get(s2.url + f"/apis/switchyard/v1/jobs/{jobs[0]['job_id']}", timeout=10).json()
            assert any((e["message"] or "").startswith("re-attached") for e in detail["events"]), detail["events"]
        finally:
            s2.kill()


def test_terminating_a_run_whose_server_died_stops_its_sagemaker_step(tmp_path):
    """The run's server is killed mid-training and nothing resumes the run
    (recovery off): a terminate through kfp.Client on the next server stops
    the SageMaker job the step submitted, and records the job, the step and
    the run CANCELED."""
    no_recovery = ["--recover-runs", "false"]
    with sagemaker(training_seconds=60, accuracy=0.9) as moto:
        home, run_id = start_hybrid_on_sagemaker(tmp_path, moto, extra=no_recovery)
        s2 = Server(home, env=sagemaker_env(moto), extra=no_recovery).start()
        try:
            c = kfp.Client(host=s2.url)
            assert c.get_run(run_id).state == "RUNNING"
            c.terminate_run(run_id)
            run = c.get_run(run_id)
            assert run.state == "CANCELED", run
            assert [st for _, st in moto.training_jobs()] == ["Stopped"]
            jobs = requests.get(s2.url + "/apis/switchyard/v1/jobs", timeout=10).json()["jobs"]
            assert [j["state"] for j in jobs] == ["CANCELED"], jobs
            assert jobs[0]["failure_reason"].startswith("canceled: stopped SageMaker training job"), jobs
            tasks = {t.display_name: t.state for t in run.run_details.task_details}
            assert any(n.startswith("training-job") and st == "CANCELED" for n, st in tasks.items()), tasks
            assert not [n for n, st in tasks.items() if st in ("PENDING", "RUNNING")], tasks
        finally:
            s2.kill()


def test_jobs_no_server_follows_are_followed_again_or_stopped(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    with sagemaker(training_seconds=20, accuracy=0.92) as moto:
        # A job submitted over HTTP, its server killed: the next server follows it.
        s = Server(home, env=sagemaker_env(moto)).start()
        try:
            base = s.url + "/apis/switchyard/v1/jobs"
            first = requests.post(base, data=json.dumps(job_doc()), timeout=30).json()["job_id"]
            wait("the SageMaker job", moto.training_jobs)
        finally:
            s.kill(sig=9)
        s2 = Server(home, env=sagemaker_env(moto)).start()
        try:
            base = s2.url + "/apis/switchyard/v1/jobs"
            job = wait("the job to end", lambda: (lambda j: j if j["state"] in ("SUCCEEDED", "FAILED", "CANCELED") else None)(
                requests.get(f"{base}/{first}", timeout=10).json()), timeout=120)
            assert job["state"] == "SUCCEEDED", job
            assert [st for _, st in moto.training_jobs()] == ["Completed"]
        finally:
            s2.kill()
        # With recovery off, a job whose server died stays orphaned; a cancel
        # over HTTP stops its SageMaker job (StopTrainingJob).
        s3 = Server(home, env=sagemaker_env(moto), extra=["--recover-runs", "false"]).start()
        try:
            base = s3.url + "/apis/switchyard/v1/jobs"
            second = requests.post(base, data=json.dumps(job_doc()), timeout=30).json()["job_id"]
            wait("the second SageMaker job", lambda: len(moto.training_jobs()) == 2)
        finally:
            s3.kill(sig=9)
        s4 = Server(home, env=sagemaker_env(moto), extra=["--recover-runs", "false"]).start()
        try:
            base = s4.url + "/apis/switchyard/v1/jobs"
            assert requests.get(f"{base}/{second}", timeout=10).json()["state"] in ("PENDING", "RUNNING")
            r = requests.post(f"{base}/{second}:cancel", timeout=30)
            assert r.status_code == 200, r.text
            job = requests.get(f"{base}/{second}", timeout=10).json()
            assert job["state"] == "CANCELED", job
            assert job["failure_reason"].startswith("canceled: stopped SageMaker training job"), job
            assert [st for _, st in moto.training_jobs()] == ["Completed", "Stopped"]
        finally:
            s4.kill()


def test_a_steps_job_posted_again_is_its_earlier_job(server):
    """The training-job component run as its own process (on a KFP cluster, given
    SWITCHYARD_SERVER) hands its job to the server; when the
    step runs again (its run resumed), posting the same task's job gives back
    the job its earlier attempt submitted, and a retry after a failure or a
    cancel gets a new one."""
    from test_client import _job_doc, _wait_job
    base = server.url + "/apis/switchyard/v1/jobs"

    def post(name, task):
        doc = _job_doc(name)
        doc["metadata"]["labels"] = {"switchyard.io/run-id": "run-resumed", "switchyard.io/task": task}
        r = requests.post(base, data=json.dumps(doc), timeout=30)
        assert r.status_code == 200, r.text
        return r.json()["job_id"]

    running = post("sleeper.yaml", "train")
    _wait_job(base, running, states=("RUNNING",))
    assert post("sleeper.yaml", "train") == running
    assert requests.post(f"{base}/{running}:cancel", timeout=30).status_code == 200
    assert _wait_job(base, running)["state"] == "CANCELED"
    retried = post("sleeper.yaml", "train")
    assert retried != running
    assert requests.post(f"{base}/{retried}:cancel", timeout=30).status_code == 200
    assert _wait_job(base, retried)["state"] == "CANCELED"
    done = post("contract.yaml", "evaluate")
    assert _wait_job(base, done)["state"] == "SUCCEEDED"
    assert post("contract.yaml", "evaluate") == done
    assert requests.get(base, timeout=10).json()["total_size"] == 3
