"""Every public method of the real kfp.Client against the server: each one
named in SURFACE is called here and must work. A new kfp release that adds a
method fails the first test until it is added (and supported, or answered
with KFP's error shape)."""
import inspect
import time

import kfp
import kfp_server_api
import pytest

import behaviour  # noqa: E402  (tests/pipelines)
import control  # noqa: E402  (tests/pipelines)

SURFACE = {
    "archive_experiment", "archive_run", "create_experiment", "create_recurring_run",
    "create_run_from_pipeline_func", "create_run_from_pipeline_package", "delete_experiment",
    "delete_job", "delete_pipeline", "delete_pipeline_version", "delete_recurring_run", "delete_run",
    "disable_job", "disable_recurring_run", "enable_job", "enable_recurring_run", "get_experiment",
    "get_kfp_healthz", "get_pipeline", "get_pipeline_id", "get_pipeline_version", "get_recurring_run",
    "get_run", "get_user_namespace", "list_experiments", "list_pipeline_versions", "list_pipelines",
    "list_recurring_runs", "list_runs", "run_pipeline", "set_user_namespace", "terminate_run",
    "unarchive_experiment", "unarchive_run", "upload_pipeline", "upload_pipeline_from_pipeline_func",
    "upload_pipeline_version", "upload_pipeline_version_from_pipeline_func", "wait_for_run_completion",
}


def test_the_surface_is_the_installed_clients():
    public = {n for n, _ in inspect.getmembers(kfp.Client, inspect.isfunction) if not n.startswith("_")}
    assert public == SURFACE, f"new: {public - SURFACE}, gone: {SURFACE - public}"


def test_every_method_works(server, compiled, tmp_path, monkeypatch):
    # The namespace context file (a path kfp fixes at import), away from ~.
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp" / "context.json"))
    c = kfp.Client(host=server.url)
    called = set()

    def call(name, *args, **kw):
        called.add(name)
        return getattr(c, name)(*args, **kw)

    assert call("get_kfp_healthz").multi_user is False
    assert call("get_user_namespace") == ""
    call("set_user_namespace", "team-a")  # kept by the client, not the server
    assert call("get_user_namespace") == "team-a"

    exp = call("create_experiment", "surface", description="every method")
    assert call("get_experiment", experiment_name="surface").experiment_id == exp.experiment_id
    assert call("get_experiment", experiment_id=exp.experiment_id).display_name == "surface"
    assert any(e.experiment_id == exp.experiment_id for e in call("list_experiments", page_size=50).experiments)
    call("archive_experiment", exp.experiment_id)
    assert c.get_experiment(experiment_id=exp.experiment_id).storage_state == "ARCHIVED"
    call("unarchive_experiment", exp.experiment_id)
    assert c.get_experiment(experiment_id=exp.experiment_id).storage_state == "AVAILABLE"

    path = compiled(control.conditions)
    p = call("upload_pipeline", path, pipeline_name="surface-pipeline")
    assert call("get_pipeline_id", "surface-pipeline") == p.pipeline_id
    assert call("get_pipeline", p.pipeline_id).display_name == "surface-pipeline"
    assert any(x.pipeline_id == p.pipeline_id for x in call("list_pipelines", page_size=50).pipelines)
    v2 = call("upload_pipeline_version", path, "v2", pipeline_id=p.pipeline_id)
    assert call("get_pipeline_version", p.pipeline_id, v2.pipeline_version_id).display_name == "v2"
    assert len(call("list_pipeline_versions", p.pipeline_id).pipeline_versions) == 2
    v3 = call("upload_pipeline_version_from_pipeline_func", control.conditions, "v3", pipeline_id=p.pipeline_id)
    p2 = call("upload_pipeline_from_pipeline_func", control.conditions, pipeline_name="surface-func")

    run = call("run_pipeline", exp.experiment_id, "by-version", params={"side": "heads", "n": 7},
               pipeline_id=p.pipeline_id, version_id=v3.pipeline_version_id)
    assert call("wait_for_run_completion", run.run_id, timeout=120, sleep_duration=1).state == "SUCCEEDED"
    assert call("get_run", run.run_id).pipeline_version_reference.pipeline_version_id == v3.pipeline_version_id
    by_func = call("create_run_from_pipeline_func", control.conditions, arguments={"side": "tails", "n": 9},
                   experiment_name="surface")
    by_package = call("create_run_from_pipeline_package", path, arguments={"side": "tails", "n": 2},
                      run_name="by-package", experiment_name="surface")
    for r in (by_func, by_package):
        assert c.wait_for_run_completion(r.run_id, timeout=120, sleep_duration=1).state == "SUCCEEDED"
    ids = {r.run_id for r in call("list_runs", experiment_id=exp.experiment_id, page_size=50).runs}
    assert {run.run_id, by_func.run_id, by_package.run_id} <= ids
    call("archive_run", run.run_id)
    assert c.get_run(run.run_id).storage_state == "ARCHIVED"
    call("unarchive_run", run.run_id)
    assert c.get_run(run.run_id).storage_state == "AVAILABLE"
    # A step that sleeps 300 s: the terminate lands while it runs, so the run
    # must end CANCELED (an accepted terminate always wins).
    slow = c.run_pipeline(exp.experiment_id, "to-stop", pipeline_package_path=compiled(behaviour.cancelable),
                          params={"pid_file": str(tmp_path / "to-stop.pid")})
    call("terminate_run", slow.run_id)
    # (kfp.Client's wait_for_run_completion does not count CANCELED as an end.)
    deadline = time.time() + 120
    while c.get_run(slow.run_id).state not in ("CANCELED", "SUCCEEDED", "FAILED") and time.time() < deadline:
        time.sleep(0.5)
    assert c.get_run(slow.run_id).state == "CANCELED"
    call("delete_run", by_package.run_id)
    with pytest.raises(kfp_server_api.ApiException) as e:
        c.get_run(by_package.run_id)
    assert e.value.status == 404

    rr = call("create_recurring_run", exp.experiment_id, "hourly", pipeline_package_path=path,
              cron_expression="0 0 * * * *", params={"side": "heads", "n": 1})
    assert call("get_recurring_run", rr.recurring_run_id).trigger.cron_schedule.cron == "0 0 * * * *"
    assert [x.recurring_run_id for x in call("list_recurring_runs", experiment_id=exp.experiment_id).recurring_runs] == [rr.recurring_run_id]
    call("disable_recurring_run", rr.recurring_run_id)
    call("enable_recurring_run", rr.recurring_run_id)
    # The deprecated v1 names are the same calls.
    call("disable_job", rr.recurring_run_id)
    assert c.get_recurring_run(rr.recurring_run_id).status == "DISABLED"
    call("enable_job", rr.recurring_run_id)
    call("delete_job", rr.recurring_run_id)
    rr2 = c.create_recurring_run(exp.experiment_id, "every-hour", pipeline_id=p.pipeline_id,
                                 version_id=v2.pipeline_version_id, interval_second=3600)
    assert c.get_recurring_run(rr2.recurring_run_id).pipeline_version_reference.pipeline_version_id == v2.pipeline_version_id
    call("delete_recurring_run", rr2.recurring_run_id)
    assert not c.list_recurring_runs(experiment_id=exp.experiment_id).recurring_runs

    call("delete_pipeline_version", p.pipeline_id, v2.pipeline_version_id)
    # As on KFP 2.17, a pipeline goes once its versions are gone (the REST
    # API's cascade=true deletes both; kfp.Client.delete_pipeline sends none).
    with pytest.raises(kfp_server_api.ApiException) as e:
        c.delete_pipeline(p2.pipeline_id)
    assert e.value.status == 400 and "cascade=true" in e.value.body
    for v in c.list_pipeline_versions(p2.pipeline_id).pipeline_versions:
        call("delete_pipeline_version", p2.pipeline_id, v.pipeline_version_id)
    call("delete_pipeline", p2.pipeline_id)
    with pytest.raises(kfp_server_api.ApiException) as e:
        c.get_pipeline(p2.pipeline_id)
    assert e.value.status == 404 and "message" in e.value.body
    other = c.create_experiment("to-delete")
    call("delete_experiment", other.experiment_id)
    assert called == SURFACE, f"not called: {SURFACE - called}"
