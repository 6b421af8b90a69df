"""The dashboard in a real browser: Debian's Chromium, headless, driven by
Playwright (executable_path, so Playwright downloads no browser), against a
real `switchyard server`. Screenshots are kept in target/test-artifacts/dashboard
(or $SWITCHYARD_TEST_ARTIFACTS)."""
import os
import pathlib
import shutil
import sys
import tempfile
import textwrap
import time

import pytest
import requests
from playwright.sync_api import expect, sync_playwright

from conftest import REPO, Server

import control  # noqa: E402  (tests/pipelines, on sys.path via conftest)
import dashboard  # noqa: E402
import behaviour  # noqa: E402

CHROMIUM = os.environ.get("SWITCHYARD_CHROMIUM", "/usr/bin/chromium")
# No background traffic: this machine has no network beyond the package registries.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--metrics-recording-only"]
SHOTS = pathlib.Path(os.environ.get("SWITCHYARD_TEST_ARTIFACTS", REPO / "target" / "test-artifacts")) / "dashboard"
TOKEN = "dash-token"


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} not found: scripts/setup --browser installs Debian's chromium")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def secured():
    """A server that needs a bearer token, like a shared deployment."""
    with tempfile.TemporaryDirectory() as home:
        s = Server(pathlib.Path(home), token=TOKEN).start()
        try:
            yield s
        finally:
            s.kill()


def open_page(browser, request, width=1280, height=900):
    ctx = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
    page = ctx.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.set_default_timeout(30_000)
    request.addfinalizer(ctx.close)
    return page


def shot(page, name):
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_in(page, url):
    page.goto(url + "/")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#login-token", TOKEN)
    page.click("#login-form button[type=submit]")


def api(server, method, path, **kw):
    headers = {"Authorization": f"Bearer {server.token}"} if server.token else {}
    r = requests.request(method, server.url + path, headers=headers, timeout=30, **kw)
    r.raise_for_status()
    return r.json()


def upload_and_run(server, path, params=None, name=None):
    with open(path, "rb") as f:
        p = api(server, "POST", "/apis/v2beta1/pipelines/upload", files={"uploadfile": f})
    v = api(server, "GET", f"/apis/v2beta1/pipelines/{p['pipeline_id']}/versions")["pipeline_versions"][0]
    return api(server, "POST", "/apis/v2beta1/runs", json={
        "display_name": name or p["name"],
        "pipeline_version_reference": {"pipeline_id": p["pipeline_id"], "pipeline_version_id": v["pipeline_version_id"]},
        "runtime_config": {"parameters": params or {}},
    })


def node(page, key):
    return page.locator(f".node[data-key='{key}']")


def test_upload_start_from_the_form_and_watch_the_graph(browser, request, secured, compiled):
    page = open_page(browser, request)
    sign_in(page, secured.url)
    page.click("nav >> text=Pipelines")
    page.set_input_files("#upload-file", compiled(dashboard.dashboard_report))
    page.fill("#upload-name", "report")
    page.click("#upload-form button[type=submit]")
    page.click("text=Start a run")
    # The form comes from the pipeline's parameters: types, defaults, validation.
    expect(page.locator("#param-rows")).to_have_value("4")
    expect(page.locator("#param-pause")).to_have_value("2")
    expect(page.locator("[data-param=rows] label")).to_contain_text("integer")
    page.fill("#param-rows", "four")
    page.fill("#param-pause", "fast")
    page.click("#run-form button[type=submit]")
    expect(page.locator("#param-rows-error")).to_have_text("Enter a whole number, like 3.")
    expect(page.locator("#param-pause-error")).to_have_text("Enter a number, like 0.5.")
    shot(page, "run-form-validation")
    assert "#/new-run" in page.url
    page.fill("#param-rows", "6")
    page.fill("#param-pause", "3")
    page.click("#run-form button[type=submit]")
    # Live: the slow step is seen running, then everything succeeds.
    expect(node(page, "summarize")).to_have_attribute("data-state", "RUNNING", timeout=90_000)
    expect(node(page, "summarize")).to_contain_text("RUNNING")
    shot(page, "run-running")
    expect(page.locator("h1 .state")).to_have_text("SUCCEEDED", timeout=90_000)
    expect(node(page, "make-report")).to_have_attribute("data-state", "SUCCEEDED")
    expect(node(page, "summarize")).to_contain_text("SUCCEEDED")
    # A task's log, and its outputs.
    node(page, "summarize").click()
    expect(page.locator("#task-log")).to_contain_text("summary of 6 rows")
    expect(page.locator("#task-panel")).to_contain_text("6 rows")
    shot(page, "run-succeeded-log")
    # The artifacts: CSV as a table, HTML sandboxed, Markdown rendered, Metrics as values.
    node(page, "make-report").click()
    panel = page.locator("#task-panel")
    expect(panel.locator("[data-output=table] .preview table th").first).to_have_text("name")
    expect(panel.locator("[data-output=table] .preview table tbody tr")).to_have_count(6)
    frame = page.frame_locator("[data-output=page] iframe")
    expect(frame.locator("#report-title")).to_have_text("Quarterly report")
    assert page.title() == "Switchyard", "the HTML artifact's script must not run against the dashboard"
    expect(panel.locator("[data-output=notes] .preview h3")).to_have_text("Notes")
    expect(panel.locator("[data-output=notes] .preview strong")).to_have_text("bold")
    expect(panel.locator("[data-output=scores] table.metrics")).to_contain_text("accuracy")
    expect(panel.locator("[data-output=scores] table.metrics")).to_contain_text("0.93")
    with page.expect_download() as d:
        panel.locator("[data-output=table] button", has_text="Download").click()
    assert pathlib.Path(d.value.path()).read_text().startswith("name,value\nrow0,0\n")
    shot(page, "run-artifacts")
    assert not page.errors, page.errors


def test_conditions_loops_and_skipped_branches_are_groups(browser, request, server, compiled):
    run = upload_and_run(server, compiled(control.conditions), {"side": "heads", "n": 7})
    loops = upload_and_run(server, compiled(control.loops))
    page = open_page(browser, request)
    page.goto(f"{server.url}/#/runs/{run['run_id']}")
    expect(page.locator("h1 .state")).to_have_text("SUCCEEDED", timeout=90_000)
    taken = page.locator(".group[data-key='condition-branches-1/condition-5']")
    expect(taken).to_have_attribute("data-state", "SUCCEEDED")
    expect(taken.locator(".group-title code").first).to_contain_text("flip-Output == 'heads'")
    skipped = page.locator(".group[data-key='condition-branches-1/condition-6']")
    expect(skipped).to_have_attribute("data-state", "SKIPPED")
    expect(skipped.locator(".node").first).to_contain_text("SKIPPED")
    assert page.locator(".dag > svg.edges path").count() > 0, "edges are drawn"
    shot(page, "conditions")
    page.goto(f"{server.url}/#/runs/{loops['run_id']}")
    expect(page.locator("h1 .state")).to_have_text("SUCCEEDED", timeout=90_000)
    loop = page.locator(".group.kind-loop[data-key='for-loop-4']")
    expect(loop.locator(".iteration")).to_have_count(3)
    expect(loop.locator(".node[data-key='for-loop-4[2]/echo-int-3']")).to_contain_text("SUCCEEDED")
    shot(page, "loops")
    assert not page.errors, page.errors


def test_a_failed_run_shows_the_failing_task_and_its_error(browser, request, server, compiled):
    run = upload_and_run(server, compiled(behaviour.failing_chain))
    page = open_page(browser, request)
    page.goto(f"{server.url}/#/runs/{run['run_id']}")
    expect(page.locator("h1 .state")).to_have_text("FAILED", timeout=90_000)
    expect(page.locator("#run-error")).to_contain_text("explode")
    expect(node(page, "explode")).to_have_attribute("data-state", "FAILED")
    page.locator("#run-error .failing-task a").click()
    expect(page.locator("#task-error")).to_contain_text("exited with code 4")
    expect(page.locator("#task-log")).to_contain_text("explode says: kaboom")
    expect(node(page, "echo-str-2")).to_contain_text("SKIPPED")
    shot(page, "failed-run")
    # Retry is offered for a failed run; archive moves it out of the list.
    expect(page.locator("button", has_text="Retry")).to_be_visible()
    page.locator("button", has_text="Archive").click()
    expect(page.locator("button", has_text="Restore")).to_be_visible()
    page.goto(f"{server.url}/#/runs")
    expect(page.locator(f"tr[data-run='{run['run_id']}']")).to_have_count(0)
    page.check("text=archived")
    expect(page.locator(f"tr[data-run='{run['run_id']}']")).to_be_visible()
    assert not page.errors, page.errors


def test_terminate_a_running_run(browser, request, server, compiled):
    run = upload_and_run(server, compiled(dashboard.dashboard_report), {"pause": 120.0})
    page = open_page(browser, request)
    page.goto(f"{server.url}/#/runs/{run['run_id']}")
    expect(node(page, "summarize")).to_have_attribute("data-state", "RUNNING", timeout=90_000)
    page.locator("button", has_text="Terminate").click()
    expect(page.locator("h1 .state")).to_have_text("CANCELED", timeout=60_000)
    shot(page, "terminated")


def _job(tmp_path, seconds=0.3, epochs=6):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "train.py").write_text(textwrap.dedent(f"""
        import os, time
        for epoch in range(1, {epochs} + 1):
            print(f"rank {{os.environ['RANK']}} epoch {{epoch}} loss={{1 / epoch:.4f}} accuracy={{0.5 + epoch * 0.05:.3f}}", flush=True)
            time.sleep({seconds})
    """))
    return textwrap.dedent(f"""
        apiVersion: switchyard/v1
        kind: TrainingJob
        metadata: {{name: tiny-{epochs}}}
        spec:
          sourceDir: {src}
          entryPoint: train.py
          nodes: 2
          resources: {{cpu: 0.5}}
          metrics:
          - {{name: loss, regex: 'loss=([0-9.]+)'}}
          - {{name: accuracy, regex: 'accuracy=([0-9.]+)'}}
    """)


def test_a_training_job_page_plots_its_metrics(browser, request, server, tmp_path):
    job = requests.post(server.url + "/apis/switchyard/v1/jobs", data=_job(tmp_path), timeout=30).json()
    page = open_page(browser, request)
    page.goto(f"{server.url}/#/jobs")
    page.click(f"text={job['name']}")
    expect(page.locator("h1 .state")).to_have_text("SUCCEEDED", timeout=60_000)
    expect(page.locator("#job-backend")).to_have_text("local")
    expect(page.locator("#placement")).to_contain_text("algo-1, algo-2")
    expect(page.locator("#why")).to_contain_text("spec.backend")
    loss = page.locator("svg.chart[data-metric=loss]")
    expect(loss).to_be_visible()
    # Six epochs on each of two ranks: twelve values plotted.
    expect(loss.locator("circle.point")).to_have_count(12)
    expect(page.locator("svg.chart[data-metric=accuracy]")).to_have_attribute("aria-label", "accuracy: 12 values, last 0.8")
    expect(page.locator("#job-events")).to_contain_text("RUNNING")
    page.select_option("#rank", "1")
    expect(page.locator("#job-log")).to_contain_text("rank 1 epoch 6")
    expect(page.locator("#job-log")).not_to_contain_text("rank 0 epoch")
    shot(page, "training-job")
    assert not page.errors, page.errors


def test_a_job_page_shows_the_progress_a_rank_reported(browser, request, server, tmp_path):
    """The trainer_* metrics a TrainJob's progress reports become (Kubeflow
    Trainer's progress API; recorded by the kubernetes backend, test
    trainjob::job_run_records_the_progress…) as the job page shows them."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(textwrap.dedent("""
        for pct, left in [(20, 120), (60, 30)]:
            print(f"trainer_progress_percentage={pct} trainer_estimated_remaining_seconds={left}", flush=True)
    """))
    spec = textwrap.dedent(f"""
        apiVersion: switchyard/v1
        kind: TrainingJob
        metadata: {{name: progress}}
        spec:
          sourceDir: {src}
          entryPoint: train.py
          metrics:
          - {{name: trainer_progress_percentage, regex: 'trainer_progress_percentage=([0-9.]+)'}}
          - {{name: trainer_estimated_remaining_seconds, regex: 'trainer_estimated_remaining_seconds=([0-9.]+)'}}
    """)
    job = requests.post(server.url + "/apis/switchyard/v1/jobs", data=spec, timeout=30).json()
    page = open_page(browser, request)
    page.goto(f"{server.url}/#/jobs/{job['job_id']}")
    expect(page.locator("h1 .state")).to_have_text("SUCCEEDED", timeout=60_000)
    progress = page.locator("#job-progress")
    expect(progress.locator(".pct")).to_have_text("60 %")
    expect(progress.locator("progress")).to_have_attribute("value", "60")
    expect(progress.locator(".left")).to_contain_text("about 30.0 s left")
    assert not page.errors, page.errors


def test_an_auto_job_page_shows_why_it_was_placed_there(browser, request, server, tmp_path):
    doc = _job(tmp_path, seconds=0.05, epochs=2).replace(
        "  nodes: 2\n",
        "  nodes: 2\n  backend: auto\n  placement: {candidates: [sagemaker, local], objective: cost}\n")
    job = requests.post(server.url + "/apis/switchyard/v1/jobs", data=doc, timeout=30,
                        headers={"Content-Type": "application/yaml"}).json()
    assert job["backend"] == "local", job
    page = open_page(browser, request)
    page.goto(f"{server.url}/#/jobs/{job['job_id']}")
    expect(page.locator("h1 .state")).to_have_text("SUCCEEDED", timeout=60_000)
    expect(page.locator("#why")).to_contain_text("Placed on local by backend: auto (objective cost)")
    table = page.locator("#placement-candidates")
    expect(table.locator("tbody tr")).to_have_count(2)
    expect(table).to_contain_text("needs spec.image")
    expect(table.locator("tr.chosen")).to_contain_text("local")
    shot(page, "training-job-placed")
    assert not page.errors, page.errors


def test_the_kpi_page_charts_what_the_job_records_add_up_to(browser, request, tmp_path):
    """Two finished jobs on a server that counts a node-hour at $3.60: the
    KPIs (JSON, CSV, /metrics, the page's charts) add up the numbers each job
    stored when it ended."""
    with tempfile.TemporaryDirectory() as home:
        server = Server(pathlib.Path(home), env={"SWITCHYARD_LOCAL_COST_PER_NODE_HOUR": "3.6"}).start()
        try:
            _kpi_page(browser, request, server, tmp_path)
        finally:
            server.kill()


def _kpi_page(browser, request, server, tmp_path):
    ok = requests.post(server.url + "/apis/switchyard/v1/jobs", data=_job(tmp_path, seconds=0.5, epochs=2), timeout=30).json()
    bad = _job(tmp_path, seconds=0.1, epochs=1).replace("entryPoint: train.py", "command: [python3, -c, 'import sys; sys.exit(3)']")
    bad = requests.post(server.url + "/apis/switchyard/v1/jobs", data=bad, timeout=30).json()
    records = []
    for j in (ok, bad):
        deadline = time.time() + 60
        while True:
            r = requests.get(f"{server.url}/apis/switchyard/v1/jobs/{j['job_id']}", timeout=10).json()
            if r["state"] in ("SUCCEEDED", "FAILED", "CANCELED") and r["kpi"] and r["finished_at"]:
                records.append(r)
                break
            assert time.time() < deadline, r
            time.sleep(0.2)
    assert [r["state"] for r in records] == ["SUCCEEDED", "FAILED"]
    k = records[0]["kpi"]
    # 2 nodes × its run seconds, at $3.60 a node-hour.
    assert k["instance_seconds"] == pytest.approx(2 * k["run_seconds"])
    assert k["est_cost_usd"] == pytest.approx(k["instance_seconds"] / 3600 * 3.6)
    cost = sum(r["kpi"]["est_cost_usd"] for r in records)
    report = requests.get(server.url + "/apis/switchyard/v1/kpis?group_by=backend", timeout=10).json()
    (row,) = report["rows"]
    assert (row["backend"], row["jobs"], row["succeeded"], row["failed"]) == ("local", 2, 1, 1)
    assert row["est_cost_usd"] == pytest.approx(cost)
    assert row["instance_hours"] == pytest.approx(sum(r["kpi"]["instance_seconds"] for r in records) / 3600)
    csv = requests.get(server.url + "/apis/switchyard/v1/kpis?group_by=backend,day&format=csv", timeout=10)
    assert csv.headers["content-type"].startswith("text/csv")
    head, line = csv.text.splitlines()
    assert head.startswith("backend,day,jobs,succeeded,failed,")
    assert line.startswith(f"local,{records[0]['created_at'][:10]},2,1,1,")
    bad_query = requests.get(server.url + "/apis/switchyard/v1/kpis?group_by=week", timeout=10)
    assert bad_query.status_code == 400 and "group_by: 'week'" in bad_query.text
    metrics = requests.get(server.url + "/metrics", timeout=10).text
    line = next(l for l in metrics.splitlines() if l.startswith('switchyard_training_cost_usd{backend="local"}'))
    assert float(line.split()[-1]) == pytest.approx(cost, abs=1e-6)
    assert 'switchyard_training_queue_seconds_count{backend="local"} 2' in metrics

    page = open_page(browser, request)
    page.goto(f"{server.url}/#/kpis")
    expect(page.locator("#kpi-summary")).to_contain_text("2 finished jobs, 50% succeeded")
    bars = page.locator("#kpi-cost rect[data-series=local]")
    expect(bars).to_have_count(1)
    assert float(bars.get_attribute("data-value")) == pytest.approx(cost)
    expect(page.locator("#kpi-success rect[data-series=succeeded]")).to_have_attribute("data-value", "50")
    # Eight queue-time buckets; both jobs waited under 5 s.
    queue = page.locator("#kpi-queue rect[data-series=local]")
    expect(queue).to_have_count(8)
    expect(queue.first).to_have_attribute("data-value", "2")
    expect(page.locator("#kpi-gpu")).to_be_visible()
    cells = page.locator("#kpi-table tr[data-backend=local] td")
    expect(cells).to_have_count(10)
    assert [cells.nth(i).inner_text() for i in range(5)] == ["local", "2", "1", "1", "0"]
    with page.expect_download() as d:
        page.click("#kpi-csv")
    assert pathlib.Path(d.value.path()).read_text().splitlines()[1].startswith("local,")
    shot(page, "kpis")
    # A range with nothing in it says so.
    page.goto(f"{server.url}/#/kpis?from=2099-01-01")
    expect(page.locator("#main")).to_contain_text("No finished training jobs in this range.")
    assert not page.errors, page.errors


def test_cancel_a_training_job(browser, request, server, tmp_path):
    job = requests.post(server.url + "/apis/switchyard/v1/jobs", data=_job(tmp_path, seconds=5, epochs=50), timeout=30).json()
    page = open_page(browser, request)
    page.goto(f"{server.url}/#/jobs/{job['job_id']}")
    expect(page.locator("h1 .state")).to_have_text("RUNNING", timeout=60_000)
    page.locator("button", has_text="Cancel job").click()
    expect(page.locator("h1 .state")).to_have_text("CANCELED", timeout=60_000)


def test_a_narrow_window_keeps_everything_reachable(browser, request, server, compiled):
    run = upload_and_run(server, compiled(control.conditions), {"side": "tails", "n": 2})
    page = open_page(browser, request, width=390, height=800)
    page.goto(f"{server.url}/#/runs")
    expect(page.locator("#runs-table")).to_be_visible()
    overflow = "document.documentElement.scrollWidth - window.innerWidth"
    assert page.evaluate(overflow) <= 0, "the runs list fits a phone-sized window"
    shot(page, "narrow-runs")
    page.goto(f"{server.url}/#/runs/{run['run_id']}")
    expect(page.locator("h1 .state")).to_have_text("SUCCEEDED", timeout=90_000)
    assert page.evaluate(overflow) <= 0, "the run page fits; the graph scrolls inside its own box"
    # The panel sits under the graph, not beside it.
    graph_box = page.locator("#graph").bounding_box()
    panel_box = page.locator("#task-panel").bounding_box()
    assert panel_box["y"] > graph_box["y"] + graph_box["height"] - 1
    shot(page, "narrow-run")
    assert not page.errors, page.errors


def test_assets_are_served_from_the_binary_without_a_token_and_data_is_not(secured):
    r = requests.get(secured.url + "/", timeout=10)
    assert r.status_code == 200 and "<title>Switchyard</title>" in r.text
    assert "http://" not in r.text and "https://" not in r.text, "nothing is fetched from the internet"
    for asset in ("app.js", "graph.js", "app.css"):
        a = requests.get(f"{secured.url}/ui/{asset}", timeout=10)
        assert a.status_code == 200, asset
        assert "://" not in a.text.replace("http://www.w3.org/2000/svg", "").replace("console.aws.amazon.com", ""), asset
    assert requests.get(secured.url + "/apis/switchyard/v1/jobs", timeout=10).status_code == 401
    assert requests.get(secured.url + "/ui/nope.js", timeout=10).status_code == 404


def test_a_job_started_by_a_pipeline_says_why_it_ran_there(browser, request, server, compiled):
    run = upload_and_run(server, compiled(dashboard.dashboard_training), {"runtime": "Local", "epochs": 3})
    page = open_page(browser, request)
    page.goto(f"{server.url}/#/runs/{run['run_id']}")
    expect(page.locator("h1 .state")).to_have_text("SUCCEEDED", timeout=120_000)
    page.goto(f"{server.url}/#/jobs")
    page.click("#jobs-table >> text=progress")
    expect(page.locator("h1 .state")).to_have_text("SUCCEEDED")
    why = page.locator("#why")
    expect(why).to_contain_text("condition-1/training-job")
    expect(why.locator("code", has_text="choose-Output == 'local'")).to_be_visible()
    expect(why).to_contain_text("runtime=Local")
    expect(why.locator(f"a[href='#/runs/{run['run_id']}']")).to_be_visible()
    expect(page.locator("svg.chart[data-metric=loss] circle.point")).to_have_count(3)
    shot(page, "job-from-pipeline")
    assert not page.errors, page.errors


def test_the_links_kfp_client_prints_open_the_right_pages(browser, request, server, compiled):
    import contextlib
    import io
    import re

    import kfp

    c = kfp.Client(host=server.url)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exp = c.create_experiment("linked", description="from kfp.Client")
        p = c.upload_pipeline(compiled(control.conditions), pipeline_name="linked-pipeline")
        v = c.list_pipeline_versions(p.pipeline_id).pipeline_versions[0]
        r = c.run_pipeline(experiment_id=exp.experiment_id, job_name="linked-run",
                           params={"side": "heads", "n": 7}, pipeline_id=p.pipeline_id,
                           version_id=v.pipeline_version_id)
    links = re.findall(r"https?://\S+", printed.getvalue())
    by_kind = {kind: next(u for u in links if f"/#/{kind}/details/" in u)
               for kind in ("experiments", "pipelines", "runs")}
    page = open_page(browser, request)
    page.goto(by_kind["runs"])
    expect(page.locator("h1")).to_contain_text("linked-run")
    expect(page.locator("h1 .state")).to_have_text("SUCCEEDED", timeout=90_000)
    expect(page.locator("#graph .node").first).to_be_visible()
    page.goto(by_kind["experiments"])
    expect(page.locator("h1")).to_have_text("linked")
    expect(page.locator(f"#experiment-runs tr[data-run='{r.run_id}']")).to_contain_text("linked-run")
    page.goto(by_kind["pipelines"])
    expect(page.locator("h1")).to_have_text("linked-pipeline")
    # The version link kfp.Client prints for upload_pipeline_version.
    page.goto(f"{server.url}/#/pipelines/details/{p.pipeline_id}/version/{v.pipeline_version_id}")
    expect(page.locator(f"tr[data-version='{v.pipeline_version_id}']")).to_have_class("selected")
    shot(page, "kfp-client-links")
    assert not page.errors, page.errors


def test_experiments_are_created_archived_and_restored(browser, request, server):
    page = open_page(browser, request)
    page.goto(f"{server.url}/#/experiments")
    page.fill("#experiment-name", "tuning")
    page.fill("#experiment-description", "learning-rate sweep")
    page.click("#experiment-form button[type=submit]")
    expect(page.locator("h1")).to_have_text("tuning")
    expect(page.locator("#main")).to_contain_text("No runs in this experiment yet.")
    # An empty name is refused in the page, with a message.
    page.goto(f"{server.url}/#/experiments")
    page.fill("#experiment-name", "   ")
    page.click("#experiment-form button[type=submit]")
    expect(page.locator("#experiment-form .error")).to_contain_text("name")
    row = page.locator("#experiments-table tr", has_text="tuning")
    row.locator("button", has_text="Archive").click()
    expect(page.locator("#experiments-table tr", has_text="tuning")).to_have_count(0)
    page.click("text=Archived experiments")
    archived = page.locator("#experiments-table tr", has_text="tuning")
    expect(archived).to_have_count(1)
    exp = api(server, "GET", "/apis/v2beta1/experiments")["experiments"]
    assert [e["storage_state"] for e in exp if e["display_name"] == "tuning"] == ["ARCHIVED"]
    archived.locator("button", has_text="Restore").click()
    expect(page.locator("#experiments-table tr", has_text="tuning")).to_have_count(0)
    page.goto(f"{server.url}/#/experiments")
    expect(page.locator("#experiments-table tr", has_text="tuning")).to_have_count(1)
    shot(page, "experiments")
    assert not page.errors, page.errors


def test_schedules_are_listed_with_their_runs_and_can_be_paused(browser, request, server, compiled):
    import kfp

    c = kfp.Client(host=server.url)
    exp = c.create_experiment("scheduled")
    rr = c.create_recurring_run(experiment_id=exp.experiment_id, job_name="every-2s",
                                pipeline_package_path=compiled(control.conditions),
                                params={"side": "heads", "n": 7}, interval_second=2, max_concurrency=3)
    page = open_page(browser, request)
    page.goto(f"{server.url}/#/schedules")
    row = page.locator(f"#schedules-table tr[data-schedule='{rr.recurring_run_id}']")
    expect(row).to_contain_text("every 2 s")
    expect(row.locator(".state")).to_have_text("ENABLED")
    row.locator("a").click()
    expect(page.locator("#schedule-runs tbody tr").first).to_be_visible(timeout=30_000)
    page.locator("button", has_text="Pause").click()
    expect(page.locator("h1 .state")).to_have_text("DISABLED")
    assert c.get_recurring_run(rr.recurring_run_id).status == "DISABLED"
    page.locator("button", has_text="Resume").click()
    expect(page.locator("h1 .state")).to_have_text("ENABLED")
    # KFP's own route for a recurring run opens the same page.
    page.goto(f"{server.url}/#/recurringrun/details/{rr.recurring_run_id}")
    expect(page.locator("h1")).to_contain_text("every-2s")
    shot(page, "schedule")
    c.delete_recurring_run(rr.recurring_run_id)
    assert not page.errors, page.errors


def test_artifacts_under_an_s3_root_are_previewed_and_downloaded_from_s3(browser, request, moto, compiled):
    """A run started by kfp.Client with an s3:// pipeline_root: its artifacts are
    in S3 (moto), and the dashboard reads them from there."""
    import kfp

    moto.s3.create_bucket(Bucket="art")
    with tempfile.TemporaryDirectory() as home:
        s = Server(pathlib.Path(home), env=moto.env()).start()
        try:
            client = kfp.Client(host=s.url)
            run = client.create_run_from_pipeline_package(
                compiled(dashboard.dashboard_report), {"rows": 3, "pause": 0.1}, pipeline_root="s3://art/reports")
            done = client.wait_for_run_completion(run.run_id, timeout=300)
            assert done.state == "SUCCEEDED", done
            assert done.runtime_config.pipeline_root == "s3://art/reports"
            prefix = f"reports/dashboard-report/{run.run_id}/make-report/"
            assert {prefix + "table", prefix + "page", prefix + "notes"} <= set(moto.keys("art"))
            # The local copies are gone: what the dashboard shows comes from S3.
            for d in pathlib.Path(home, "artifacts").glob("*/*/.s3"):
                shutil.rmtree(d)
            # An artifact whose object is gone answers 404 naming it.
            moto.s3.delete_object(Bucket="art", Key=prefix + "page")
            r = requests.get(f"{s.url}/apis/switchyard/v1/runs/{run.run_id}/artifact",
                             params={"task": "make-report", "output": "page"}, timeout=30)
            assert r.status_code == 404 and f"s3://art/{prefix}page" in r.text, r.text
            page = open_page(browser, request)
            page.goto(f"{s.url}/#/runs/details/{run.run_id}")
            expect(page.locator("h1 .state")).to_have_text("SUCCEEDED")
            node(page, "make-report").click()
            panel = page.locator("#task-panel")
            expect(panel.locator("[data-output=table] .preview table tbody tr")).to_have_count(3)
            expect(panel.locator("[data-output=notes] .preview h3")).to_have_text("Notes")
            with page.expect_download() as d:
                panel.locator("[data-output=table] button", has_text="Download").click()
            assert pathlib.Path(d.value.path()).read_text() == "name,value\nrow0,0\nrow1,1\nrow2,4\n"
            shot(page, "run-artifacts-s3")
            assert not page.errors, page.errors
        finally:
            s.kill()
