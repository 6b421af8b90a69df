"""Recurring runs driven by the real kfp.Client: create (cron and periodic),
get, list, disable/enable, delete; what the runs a schedule fires carry; and
firing exactly once per slot across a kill -9 and across two servers sharing
one PostgreSQL database. Short intervals stand in for a fake clock."""
import datetime
import pathlib
import signal
import tempfile
import time

import kfp
import kfp_server_api
import pytest
import requests

from conftest import Postgres, Server

import params  # noqa: E402  (tests/pipelines)
import kfp_semantics  # noqa: E402


def client(server):
    return kfp.Client(host=server.url)


def fired(c, rr_id):
    """The runs a schedule fired, by their schedule time."""
    f = '{"predicates": [{"key": "recurring_run_id", "operation": "EQUALS", "string_value": "%s"}]}' % rr_id
    runs = c.list_runs(page_size=1000, filter=f).runs or []
    return sorted(runs, key=lambda r: r.scheduled_at)


def wait_for(what, f, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = f()
        if v:
            return v
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def seconds_between(runs):
    return [int((b.scheduled_at - a.scheduled_at).total_seconds()) for a, b in zip(runs, runs[1:])]


def test_a_periodic_schedule_fires_runs_that_carry_it(server, compiled):
    c = client(server)
    exp = c.create_experiment("nightly")
    rr = c.create_recurring_run(experiment_id=exp.experiment_id, job_name="every-2s",
                                pipeline_package_path=compiled(kfp_semantics.placeholder_values),
                                interval_second=2, max_concurrency=2)
    assert rr.status == "ENABLED" and rr.trigger.periodic_schedule.interval_second == "2"
    assert rr.max_concurrency == "2"
    runs = wait_for("three fired runs", lambda: (r := fired(c, rr.recurring_run_id)) and len(r) >= 3 and r)
    assert seconds_between(runs[:3]) == [2, 2], [r.scheduled_at for r in runs]
    first = c.wait_for_run_completion(runs[0].run_id, timeout=60)
    assert first.state == "SUCCEEDED"
    assert first.recurring_run_id == rr.recurring_run_id
    assert first.experiment_id == exp.experiment_id
    out = c.get_run(runs[0].run_id)
    # {{$.pipeline_job_schedule_time_utc}} is the slot, not the creation time.
    detail = __import__("requests").get(f"{server.url}/apis/switchyard/v1/runs/{runs[0].run_id}", timeout=10).json()
    scheduled = detail["outputs"]["Output"]["scheduled"]
    assert scheduled == out.scheduled_at.strftime("%Y-%m-%dT%H:%M:%SZ"), (scheduled, out.scheduled_at)
    assert runs[0].display_name.startswith("every-2s-")

    # get / list (by experiment, paged) / disable / enable / delete.
    got = c.get_recurring_run(rr.recurring_run_id)
    assert got.display_name == "every-2s" and got.experiment_id == exp.experiment_id
    listed = c.list_recurring_runs(experiment_id=exp.experiment_id, page_size=10)
    assert [r.recurring_run_id for r in listed.recurring_runs] == [rr.recurring_run_id]
    assert listed.total_size == 1
    other = c.create_experiment("other")
    assert not c.list_recurring_runs(experiment_id=other.experiment_id).recurring_runs
    c.disable_recurring_run(rr.recurring_run_id)
    assert c.get_recurring_run(rr.recurring_run_id).status == "DISABLED"
    time.sleep(1.5)
    n = len(fired(c, rr.recurring_run_id))
    time.sleep(4)
    assert len(fired(c, rr.recurring_run_id)) == n, "a disabled schedule fires nothing"
    c.enable_recurring_run(rr.recurring_run_id)
    assert c.get_recurring_run(rr.recurring_run_id).status == "ENABLED"
    # The paused time is caught up: the slots stay two seconds apart, none lost.
    wait_for("the paused slots", lambda: len(fired(c, rr.recurring_run_id)) >= n + 3)
    runs = fired(c, rr.recurring_run_id)
    assert set(seconds_between(runs)) == {2}, [r.scheduled_at for r in runs]
    c.delete_recurring_run(rr.recurring_run_id)
    with pytest.raises(kfp_server_api.ApiException) as e:
        c.get_recurring_run(rr.recurring_run_id)
    assert e.value.status == 404
    time.sleep(2.5)
    left = fired(c, rr.recurring_run_id)
    assert len(left) >= len(runs), "its runs stay, as in KFP"


def test_cron_schedules_follow_kfps_seconds_first_format(server, compiled):
    c = client(server)
    exp = c.create_experiment("cron")
    path = compiled(params.params_all_types)
    rr = c.create_recurring_run(experiment_id=exp.experiment_id, job_name="even-seconds",
                                pipeline_package_path=path, cron_expression="*/2 * * * * *",
                                max_concurrency=10, params={"i": 4})
    runs = wait_for("two fired runs", lambda: (r := fired(c, rr.recurring_run_id)) and len(r) >= 2 and r)
    assert all(r.scheduled_at.second % 2 == 0 for r in runs), [r.scheduled_at for r in runs]
    assert c.wait_for_run_completion(runs[0].run_id, timeout=60).state == "SUCCEEDED"
    assert c.get_run(runs[0].run_id).runtime_config.parameters["i"] == 4
    c.delete_recurring_run(rr.recurring_run_id)

    # A start time in the future: nothing before it; an end time: nothing after.
    start = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    later = c.create_recurring_run(experiment_id=exp.experiment_id, job_name="later", pipeline_package_path=path,
                                   cron_expression="@every 1s", start_time=start)
    assert c.get_recurring_run(later.recurring_run_id).trigger.cron_schedule.start_time.strftime("%Y-%m-%dT%H:%M:%SZ") == start
    end = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    ending = c.create_recurring_run(experiment_id=exp.experiment_id, job_name="ending", pipeline_package_path=path,
                                    interval_second=1, end_time=end, max_concurrency=10)
    time.sleep(6)
    assert not fired(c, later.recurring_run_id)
    ended = fired(c, ending.recurring_run_id)
    assert 1 <= len(ended) <= 4 and all(r.scheduled_at.strftime("%Y-%m-%dT%H:%M:%SZ") <= end for r in ended)


@pytest.mark.parametrize("body,expected", [
    ({"cron_expression": "* * * *"}, "Schedule cron is not a supported format"),
    ({"interval_second": 5, "max_concurrency": 11}, "at least 1 and at most 10"),
    ({"interval_second": 5, "max_concurrency": 0}, "at least 1 and at most 10"),
    ({"interval_second": 5, "start_time": "tomorrow"}, "RFC 3339"),
    ({"interval_second": 5, "params": {"nope": 1}}, "nope"),
])
def test_bad_schedules_are_refused_with_the_reason(server, compiled, body, expected):
    c = client(server)
    exp = c.create_experiment("bad")
    with pytest.raises(kfp_server_api.ApiException) as e:
        c.create_recurring_run(experiment_id=exp.experiment_id, job_name="bad",
                               pipeline_package_path=compiled(params.params_all_types), **body)
    assert e.value.status == 400 and expected in e.value.body, e.value.body
    assert not c.list_recurring_runs().recurring_runs, "nothing half-created"


def schedule_via(server, compiled, **kw):
    c = client(server)
    exp = c.create_experiment("restart")
    return c, c.create_recurring_run(experiment_id=exp.experiment_id, job_name="restart",
                                     pipeline_package_path=compiled(params.params_all_types), **kw)


@pytest.mark.parametrize("no_catchup", [False, True])
def test_a_kill_9_loses_no_slot_and_fires_none_twice(compiled, no_catchup):
    with tempfile.TemporaryDirectory() as home:
        home = pathlib.Path(home)
        s = Server(home).start()
        try:
            c, rr = schedule_via(s, compiled, interval_second=1, max_concurrency=10, no_catchup=no_catchup)
            wait_for("a first run", lambda: fired(c, rr.recurring_run_id))
            s.kill(signal.SIGKILL)
            down = time.time()
            time.sleep(5)
            s = Server(home).start()
            c = client(s)
            time.sleep(3)
            runs = fired(c, rr.recurring_run_id)
            slots = [r.scheduled_at for r in runs]
            assert len(set(slots)) == len(slots), f"a slot fired twice: {slots}"
            gaps = seconds_between(runs)
            if no_catchup:
                # The time down is skipped in one jump (with catch-up every gap
                # would be one second); a busy machine may skip more later.
                assert max(gaps) >= 4, slots
                assert len(runs) < int(time.time() - down) + 3, slots
            else:
                assert set(gaps) == {1}, f"every missed slot fired once, in order: {slots}"
                assert len(runs) >= int(time.time() - down) + 1
            for r in runs[:3]:
                assert c.wait_for_run_completion(r.run_id, timeout=60).state == "SUCCEEDED"
        finally:
            s.kill()


def test_two_servers_on_one_database_fire_each_slot_once(compiled):
    pg = Postgres().start()
    try:
        with tempfile.TemporaryDirectory() as h1, tempfile.TemporaryDirectory() as h2:
            # Two hosts (SWITCHYARD_HOST_ID), one database.
            a = Server(pathlib.Path(h1), database=pg.url, env={"SWITCHYARD_HOST_ID": "host-a"}).start()
            b = Server(pathlib.Path(h2), database=pg.url, env={"SWITCHYARD_HOST_ID": "host-b"}).start()
            try:
                c, rr = schedule_via(a, compiled, interval_second=1, max_concurrency=10)
                time.sleep(8)
                a.kill()
                b.kill()
                b = Server(pathlib.Path(h2), database=pg.url, extra=["--recover-runs", "false"],
                           env={"SWITCHYARD_HOST_ID": "host-b"})
                c = client(b.start())
                c.disable_recurring_run(rr.recurring_run_id)
                runs = fired(c, rr.recurring_run_id)
                slots = [r.scheduled_at for r in runs]
                assert len(runs) >= 6, slots
                assert len(set(slots)) == len(slots), f"a slot fired twice: {slots}"
                assert set(seconds_between(runs)) == {1}, slots
            finally:
                a.kill()
                b.kill()
    finally:
        pg.stop()


def test_a_schedule_whose_pipeline_is_gone_stops_with_the_reason(server, compiled):
    c = client(server)
    exp = c.create_experiment("orphan")
    p = c.upload_pipeline(compiled(params.params_all_types), pipeline_name="short-lived")
    # Named by its pipeline only, each run takes the latest version (kfp.Client
    # always sends a version, so the request is made directly).
    body = {"display_name": "orphan", "experiment_id": exp.experiment_id, "max_concurrency": "10",
            "pipeline_version_reference": {"pipeline_id": p.pipeline_id},
            "trigger": {"periodic_schedule": {"interval_second": "1"}}}
    r = requests.post(f"{server.url}/apis/v2beta1/recurringruns", json=body, timeout=10)
    assert r.status_code == 200, r.text
    rr = c.get_recurring_run(r.json()["recurring_run_id"])
    assert rr.pipeline_version_reference.pipeline_id == p.pipeline_id
    wait_for("a first run", lambda: fired(c, rr.recurring_run_id))
    # With its versions (kfp.Client.delete_pipeline sends no cascade).
    r = requests.delete(f"{server.url}/apis/v2beta1/pipelines/{p.pipeline_id}", params={"cascade": "true"}, timeout=10)
    assert r.status_code == 200, r.text
    stopped = wait_for("the schedule to stop", lambda: (g := c.get_recurring_run(rr.recurring_run_id)).status == "DISABLED" and g)
    assert "cannot start" in stopped.error.message and p.pipeline_id in stopped.error.message, stopped.error
    n = len(fired(c, rr.recurring_run_id))
    time.sleep(2.5)
    assert len(fired(c, rr.recurring_run_id)) == n
    # The dashboard says why.
    from playwright.sync_api import expect, sync_playwright
    from test_dashboard import CHROMIUM, FLAGS
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = b.new_page()
            page.goto(f"{server.url}/#/schedules/{rr.recurring_run_id}")
            expect(page.locator(".error-box")).to_contain_text("cannot start")
        finally:
            b.close()
