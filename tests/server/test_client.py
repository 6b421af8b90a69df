"""The real kfp.Client against `switchyard server`."""
import json
import os
import sys
import time
import warnings

import pytest

warnings.simplefilter("ignore")

import kfp  # noqa: E402
from kfp import dsl  # noqa: E402

import behaviour  # noqa: E402
import control  # noqa: E402
import params  # noqa: E402


def client(server):
    return kfp.Client(host=server.url)


def test_upload_then_run_from_package(server, compiled):
    c = client(server)
    path = compiled(params.params_all_types)
    p = c.upload_pipeline(path, pipeline_name="all-types", description="every parameter type")
    assert p.pipeline_id and p.display_name == "all-types"
    assert c.get_pipeline_id("all-types") == p.pipeline_id
    with pytest.raises(Exception):
        c.upload_pipeline(path, pipeline_name="all-types")  # names are unique
    result = c.create_run_from_pipeline_package(path, arguments={"i": 5, "s": "abc"}, run_name="typed")
    run = c.wait_for_run_completion(result.run_id, timeout=120)
    assert run.state == "SUCCEEDED", run
    assert run.display_name == "typed"
    names = {t.display_name: t for t in run.run_details.task_details}
    assert names["split"].state == "SUCCEEDED" and names["split"].end_time >= names["split"].start_time
    assert [h.state for h in run.state_history] == ["PENDING", "RUNNING", "SUCCEEDED"]
    exps = c.list_experiments().experiments
    assert [e.display_name for e in exps] == ["Default"]
    assert run.experiment_id == exps[0].experiment_id


def test_run_a_version_and_list_with_paging_and_filters(server, compiled):
    c = client(server)
    path = compiled(control.outer_pipeline)
    p = c.upload_pipeline(path, pipeline_name="outer")
    versions = c.list_pipeline_versions(p.pipeline_id).pipeline_versions
    assert len(versions) == 1
    exp = c.create_experiment("nightly")
    assert c.create_experiment("nightly").experiment_id == exp.experiment_id  # found by name
    ids = []
    for i in range(3):
        r = c.run_pipeline(experiment_id=exp.experiment_id, job_name=f"outer-{i}", params={"x": i},
                           pipeline_id=p.pipeline_id, version_id=versions[0].pipeline_version_id)
        ids.append(r.run_id)
    for rid in ids:
        assert c.wait_for_run_completion(rid, timeout=120).state == "SUCCEEDED"
    page1 = c.list_runs(experiment_id=exp.experiment_id, page_size=2, sort_by="created_at desc")
    assert page1.total_size == 3 and len(page1.runs) == 2 and page1.next_page_token
    page2 = c.list_runs(experiment_id=exp.experiment_id, page_size=2, page_token=page1.next_page_token)
    assert len(page2.runs) == 1
    only = c.list_runs(filter=json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "string_value": "outer-1"}]}))
    assert [r.display_name for r in only.runs] == ["outer-1"]
    c.archive_run(ids[0])
    assert c.get_run(ids[0]).storage_state == "ARCHIVED"


def test_run_from_pipeline_func(server):
    c = client(server)
    result = c.create_run_from_pipeline_func(control.conditions, arguments={"side": "tails", "n": 9}, experiment_name="funcs")
    run = c.wait_for_run_completion(result.run_id, timeout=120)
    assert run.state == "SUCCEEDED"
    skipped = [t.display_name for t in run.run_details.task_details if t.state == "SKIPPED"]
    assert "condition-5" in skipped
    parents = {t.task_id: t.parent_task_id for t in run.run_details.task_details}
    assert any(p == "condition-branches-1" for p in parents.values())


def test_terminate_a_long_run(server, compiled, tmp_path):
    c = client(server)
    pid_file = tmp_path / "pid"
    result = c.create_run_from_pipeline_package(compiled(behaviour.cancelable), arguments={"pid_file": str(pid_file)})
    deadline = time.time() + 60
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.time() < deadline
        time.sleep(0.1)
    pid = int(pid_file.read_text())
    c.terminate_run(result.run_id)
    run = c.wait_for_run_completion(result.run_id, timeout=60) if False else None
    deadline = time.time() + 60
    while True:
        run = c.get_run(result.run_id)
        if run.state == "CANCELED":
            break
        assert time.time() < deadline, run.state
        time.sleep(0.2)
    assert "CANCELING" in [h.state for h in run.state_history]
    time.sleep(0.5)
    assert not os.path.exists(f"/proc/{pid}"), "the task's process is gone"


def test_retry_a_failed_run_after_fixing_its_input(server, compiled, tmp_path):
    c = client(server)
    counter = tmp_path / "counter"
    # fail_times=1 with no retry policy hit twice: fails once, then a retry succeeds.
    path = compiled(behaviour.retry)
    result = c.create_run_from_pipeline_package(path, arguments={"counter": str(counter), "fail_times": 3})
    run = c.wait_for_run_completion(result.run_id, timeout=120)
    assert run.state == "FAILED"
    assert "attempt 3 fails on purpose" in run.error.message
    counter.write_text("10")  # the fix: the next attempt is past fail_times
    c._run_api.run_service_retry_run(run_id=result.run_id)
    run = c.wait_for_run_completion(result.run_id, timeout=120)
    assert run.state == "SUCCEEDED", run.error


def test_bad_input_gets_kfp_errors(server, compiled):
    import requests
    base = server.url + "/apis/v2beta1"
    r = requests.post(base + "/runs", data="{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "invalid request body" in r.json()["message"]
    r = requests.post(base + "/runs", json={"display_name": "x", "bogus": 1})
    assert r.status_code == 400 and "bogus" in r.json()["message"]
    r = requests.post(base + "/runs", json={"display_name": "x", "pipeline_spec": {"schemaVersion": "9.0.0", "root": {}}})
    assert r.status_code == 400 and "schemaVersion" in r.json()["message"]
    with open(compiled(params.required_param)) as f:
        spec = f.read()
    import yaml
    r = requests.post(base + "/runs", json={"display_name": "x", "pipeline_spec": yaml.safe_load(spec)})
    assert r.status_code == 400 and "missing required parameter 'epochs'" in r.json()["message"]
    r = requests.get(base + "/runs/does-not-exist")
    assert r.status_code == 404 and r.json()["code"] == 5
    r = requests.post(base + "/pipelines/upload", files={"uploadfile": ("p.yaml", b"components: [")})
    assert r.status_code == 400 and "malformed" in r.json()["message"]
    r = requests.get(base + "/runs", params={"filter": "nope"})
    assert r.status_code == 400
    assert requests.get(base + "/runs").json().get("runs") is None  # nothing half-created


def test_auth_token(tmp_path):
    import requests
    from conftest import Server
    s = Server(tmp_path, token="s3cret").start()
    try:
        base = s.url + "/apis/v2beta1"
        assert requests.get(base + "/healthz").status_code == 200
        assert requests.get(base + "/runs").status_code == 401
        assert requests.get(base + "/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert requests.get(base + "/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        c = kfp.Client(host=s.url, existing_token="s3cret")
        # A fresh server has no experiments, and says so.
        listed = c.list_experiments()
        assert listed.total_size == 0 and not listed.experiments
    finally:
        s.kill()


def test_a_killed_server_resumes_its_runs(tmp_path, compiled):
    from conftest import Server
    counter, flag = tmp_path / "counter", tmp_path / "flag"
    home = tmp_path / "home"
    home.mkdir()
    s = Server(home).start()
    try:
        c = kfp.Client(host=s.url)
        result = c.create_run_from_pipeline_package(compiled(behaviour.resumable),
                                                    arguments={"counter": str(counter), "flag": str(flag)})
        deadline = time.time() + 60
        while not (counter.exists() and counter.read_text() == "a\nb\n"):
            assert time.time() < deadline
            time.sleep(0.1)
    finally:
        s.kill(sig=9)  # no chance to clean up
    flag.write_text("go")
    s2 = Server(home).start()
    try:
        c = kfp.Client(host=s2.url)
        run = c.wait_for_run_completion(result.run_id, timeout=120)
        assert run.state == "SUCCEEDED", run.error
        # `stamp` (a) ran once; the interrupted `wait-for` (b) ran again.
        assert counter.read_text() == "a\nb\nb\nc\n"
    finally:
        s2.kill()


def test_200_runs_created_concurrently_each_complete_once(server, compiled, tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    import requests
    log = tmp_path / "runs.log"
    c = client(server)
    p = c.upload_pipeline(compiled(behaviour.record_run_pipeline), pipeline_name="record")
    version = c.list_pipeline_versions(p.pipeline_id).pipeline_versions[0].pipeline_version_id
    exp = c.create_experiment("load").experiment_id

    def create(i):
        body = {"display_name": f"load-{i}", "experiment_id": exp,
                "pipeline_version_reference": {"pipeline_id": p.pipeline_id, "pipeline_version_id": version},
                "runtime_config": {"parameters": {"path": str(log)}}}
        r = requests.post(server.url + "/apis/v2beta1/runs", json=body, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()["run_id"]

    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(create, range(200)))
    assert len(set(ids)) == 200
    deadline = time.time() + 300
    while True:
        runs = c.list_runs(experiment_id=exp, page_size=1000).runs or []
        states = [r.state for r in runs]
        if len(runs) == 200 and all(s in ("SUCCEEDED", "FAILED") for s in states):
            break
        assert time.time() < deadline, f"{states.count('SUCCEEDED')} succeeded so far"
        time.sleep(0.5)
    assert states.count("SUCCEEDED") == 200
    lines = log.read_text().split()
    assert sorted(lines) == sorted(ids), "every run executed its task exactly once"
    metrics = requests.get(server.url + "/metrics").text
    assert 'switchyard_runs{state="SUCCEEDED"} 200' in metrics, metrics
    assert "switchyard_queue_depth 0" in metrics
    assert "switchyard_task_duration_seconds_count 200" in metrics


def test_postgres_keeps_everything_across_servers(tmp_path, compiled):
    from conftest import Postgres, Server
    pg = Postgres().start()
    try:
        first_home, second_home = tmp_path / "a", tmp_path / "b"
        first_home.mkdir()
        second_home.mkdir()
        s = Server(first_home, database=pg.url).start()
        try:
            c = kfp.Client(host=s.url)
            c.upload_pipeline(compiled(control.outer_pipeline), pipeline_name="outer-pg")
            run = c.create_run_from_pipeline_package(compiled(control.outer_pipeline), arguments={"x": 2},
                                                     experiment_name="pg")
            assert c.wait_for_run_completion(run.run_id, timeout=120).state == "SUCCEEDED"
        finally:
            s.kill()
        # Another server (another data directory) on the same database sees it all.
        s2 = Server(second_home, database=pg.url).start()
        try:
            c = kfp.Client(host=s2.url)
            got = c.get_run(run.run_id)
            assert got.state == "SUCCEEDED"
            assert len(got.run_details.task_details) >= 4
            assert c.get_pipeline_id("outer-pg")
            assert [e.display_name for e in c.list_experiments().experiments] == ["pg"]
            exp_id = c.list_experiments().experiments[0].experiment_id
            assert [r.run_id for r in c.list_runs().runs] == [run.run_id]
            assert [r.run_id for r in c.list_runs(experiment_id=exp_id, sort_by="created_at").runs] == [run.run_id]
            assert c.list_runs(filter=json.dumps({"predicates": [{"operation": "EQUALS", "key": "state", "string_value": "SUCCEEDED"}]})).total_size == 1
        finally:
            s2.kill()
    finally:
        pg.stop()


def test_cli_against_the_server(server, compiled):
    binary = os.environ.get("SWITCHYARD_BIN")
    import subprocess
    env = dict(os.environ, SWITCHYARD_SERVER=server.url, SWITCHYARD_HOME=str(server.home / "client"))
    out = subprocess.run([binary, "run", compiled(control.outer_pipeline), "-p", "x=7", "--output", "json"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    run = json.loads(out.stdout)
    assert run["state"] == "SUCCEEDED"
    listed = subprocess.run([binary, "runs", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert run["run_id"] in listed.stdout
    bad = subprocess.run([binary, "run", compiled(control.outer_pipeline), "-p", "x=seven"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "parameter 'x'" in bad.stderr, bad.stderr


def test_schemathesis_finds_no_server_error(server):
    """Property-based requests from the served OpenAPI document: never a 5xx."""
    import subprocess
    st = os.path.join(os.path.dirname(sys.executable), "schemathesis")
    out = subprocess.run([st, "run", server.url + "/apis/switchyard/v1/openapi.json", "--checks", "not_a_server_error",
                          "--max-examples", "25", "--seed", "1"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout


def test_task_logs_endpoint(server, compiled):
    import requests
    c = client(server)
    result = c.create_run_from_pipeline_package(compiled(behaviour.failing_chain))
    run = c.wait_for_run_completion(result.run_id, timeout=120)
    assert run.state == "FAILED"
    base = f"{server.url}/apis/switchyard/v1/runs/{result.run_id}/logs"
    r = requests.get(base, params={"task": "explode"})
    assert r.status_code == 200 and "explode says: kaboom" in r.text
    assert "explode says: kaboom" in requests.get(base, params={"task": "explode", "follow": "true"}).text
    assert requests.get(base, params={"task": "nope"}).status_code == 404


def _job_doc(name):
    import yaml
    jobs = os.path.join(os.path.dirname(__file__), "..", "jobs")
    doc = yaml.safe_load(open(os.path.join(jobs, name)))
    spec = doc["spec"]
    spec["sourceDir"] = os.path.abspath(os.path.join(jobs, spec["sourceDir"]))
    for k, v in spec.get("channels", {}).items():
        spec["channels"][k] = os.path.abspath(os.path.join(jobs, v))
    return doc


def _wait_job(base, job_id, states=("SUCCEEDED", "FAILED", "CANCELED")):
    import requests
    deadline = time.time() + 120
    while True:
        j = requests.get(f"{base}/{job_id}").json()
        if j["state"] in states:
            return j
        assert time.time() < deadline, j
        time.sleep(0.2)


def test_training_jobs_over_http(server):
    import requests
    base = server.url + "/apis/switchyard/v1/jobs"
    r = requests.post(base, data=json.dumps(_job_doc("contract.yaml")))
    assert r.status_code == 200, r.text
    job = _wait_job(base, r.json()["job_id"])
    assert job["state"] == "SUCCEEDED", job
    assert job["events"][0]["state"] == "PENDING"
    logs = requests.get(f"{base}/{job['job_id']}/logs", params={"rank": 2}).text
    assert logs.strip() == "contract ok on rank 2 of 4 (host algo-2) loss=0.2"
    assert "[algo-1/rank 0]" in requests.get(f"{base}/{job['job_id']}/logs").text
    assert requests.get(base).json()["total_size"] == 1
    # A bad spec is refused, naming the field, and nothing is recorded.
    bad = _job_doc("contract.yaml")
    bad["spec"]["nodes"] = 0
    r = requests.post(base, data=json.dumps(bad))
    assert r.status_code == 400 and "spec.nodes" in r.json()["message"]
    assert requests.get(base).json()["total_size"] == 1
    # Cancel a running job.
    r = requests.post(base, data=json.dumps(_job_doc("sleeper.yaml")))
    jid = r.json()["job_id"]
    _wait_job(base, jid, states=("RUNNING",))
    # Follow rank 0's log while it runs; the stream ends when the job does.
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(1) as pool:
        followed = pool.submit(lambda: requests.get(f"{base}/{jid}/logs", params={"rank": 0, "follow": "true"}, timeout=120).text)
        time.sleep(1.5)
        assert requests.post(f"{base}/{jid}:cancel").status_code == 200
        assert "rank 0 sleeping" in followed.result()
    assert _wait_job(base, jid)["state"] == "CANCELED"


def _hybrid_package(tmp_path):
    """examples/hybrid/pipeline.py compiled by the real kfp SDK; its path."""
    import subprocess
    repo = os.path.join(os.path.dirname(__file__), "..", "..")
    path = str(tmp_path / "hybrid.yaml")
    subprocess.run([sys.executable, "-W", "ignore", os.path.join(repo, "examples/hybrid/pipeline.py"), path], check=True,
                   capture_output=True)
    return path


def test_hybrid_example_through_the_client(server, tmp_path):
    path = _hybrid_package(tmp_path)
    c = client(server)
    result = c.create_run_from_pipeline_package(path, arguments={"training_runtime": "local", "epochs": 5})
    run = c.wait_for_run_completion(result.run_id, timeout=600)
    assert run.state == "SUCCEEDED", run.error
    states = {t.display_name: t.state for t in run.run_details.task_details}
    assert states["training-job"] == "SUCCEEDED" and states["report"] == "SUCCEEDED"
    assert states["condition-3"] == "SKIPPED" and states["condition-4"] == "SKIPPED"
    import requests
    jobs = requests.get(server.url + "/apis/switchyard/v1/jobs").json()["jobs"]
    assert [j["state"] for j in jobs] == ["SUCCEEDED"], jobs


def test_hybrid_example_with_auto_placement_through_the_client(server, tmp_path):
    """training_runtime=auto: the training step asks Switchyard where to run;
    with no cluster and no SageMaker role configured for this server, the
    decision (recorded with the job, every candidate's reason) is this machine."""
    import requests
    path = _hybrid_package(tmp_path)
    c = client(server)
    result = c.create_run_from_pipeline_package(path, arguments={"training_runtime": "auto", "epochs": 5})
    run = c.wait_for_run_completion(result.run_id, timeout=600)
    assert run.state == "SUCCEEDED", run.error
    states = {t.display_name: t.state for t in run.run_details.task_details}
    assert states["condition-5"] == "SUCCEEDED" and states["report"] == "SUCCEEDED", states
    assert states["condition-3"] == "SKIPPED" and states["condition-4"] == "SKIPPED", states
    (job,) = requests.get(server.url + "/apis/switchyard/v1/jobs").json()["jobs"]
    detail = requests.get(server.url + "/apis/switchyard/v1/jobs/" + job["job_id"]).json()
    p = detail["placement"]
    assert (detail["state"], detail["backend"], p["chosen"]) == ("SUCCEEDED", "local", "local"), detail
    reasons = {c["backend"]: c["reason"] for c in p["candidates"]}
    assert reasons["sagemaker"].startswith("spec.roleArn"), reasons
    assert [(a["backend"], a["outcome"]) for a in p["attempts"]] == [("local", "SUCCEEDED")], p
    assert detail["kpi"]["outcome"] == "SUCCEEDED" and detail["kpi"]["run_seconds"] > 0, detail["kpi"]


def test_oversize_bodies_and_inline_versions(tmp_path, compiled):
    import requests
    import yaml
    from conftest import Server
    s = Server(tmp_path, extra=["--max-body-bytes", "4096"]).start()
    try:
        base = s.url + "/apis/v2beta1"
        big = compiled(params.params_all_types)  # larger than 4 KiB
        with open(big, "rb") as f:
            r = requests.post(base + "/pipelines/upload", files={"uploadfile": ("p.yaml", f.read())})
        assert r.status_code in (400, 413) and r.json()["message"], r.text
        small = compiled(params.required_param)
        with open(small, "rb") as f:
            p = requests.post(base + "/pipelines/upload", params={"name": "small"}, files={"uploadfile": ("p.yaml", f.read())})
        assert p.status_code == 200, p.text
        pid = p.json()["pipeline_id"]
        spec = yaml.safe_load(open(small))
        v = requests.post(f"{base}/pipelines/{pid}/versions", json={"name": "v2", "pipeline_spec": spec})
        assert v.status_code == 200, v.text
        assert requests.post(f"{base}/pipelines/{pid}/versions", json={"name": "v3", "package_url": {"pipeline_url": "http://x"}}).status_code == 400
        assert len(requests.get(f"{base}/pipelines/{pid}/versions").json()["pipeline_versions"]) == 2
    finally:
        s.kill()
