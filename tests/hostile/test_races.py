"""Races a heavy user hits: a terminate sent while the last task finishes must
get an answer that matches how the run ends (200 → CANCELED; otherwise an
error naming the final state, and the run keeps it)."""
import pathlib
import sys
import time

import requests

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "server"))
sys.path.insert(0, str(REPO / "tests" / "pipelines"))

from conftest import Server, compiled, server  # noqa: E402,F401  (fixtures shared with tests/server)

import hostile  # noqa: E402

FINAL = {"SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"}


def test_terminate_racing_the_last_task_answers_what_happens(server, compiled):
    path = compiled(hostile.nap_pipeline)
    with open(path, "rb") as f:
        pid = requests.post(server.url + "/apis/v2beta1/pipelines/upload", files={"uploadfile": ("nap.yaml", f)},
                            timeout=30).json()["pipeline_id"]
    outcomes = []
    # Terminates spread from well before to just after the task's end (0.5 s).
    for i, delay in enumerate([0.1, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 1.0, 1.5]):
        run = requests.post(server.url + "/apis/v2beta1/runs", json={
            "display_name": f"race-{i}", "pipeline_version_reference": {"pipeline_id": pid},
            "runtime_config": {"parameters": {"seconds": "0.5"}}}, timeout=30).json()
        rid = run["run_id"]
        deadline = time.time() + 30
        while requests.get(f"{server.url}/apis/v2beta1/runs/{rid}", timeout=10).json()["state"] == "PENDING":
            assert time.time() < deadline, "run never started"
            time.sleep(0.02)
        time.sleep(delay)
        answer = requests.post(f"{server.url}/apis/v2beta1/runs/{rid}:terminate", timeout=10)
        while (state := requests.get(f"{server.url}/apis/v2beta1/runs/{rid}", timeout=10).json()["state"]) not in FINAL:
            assert time.time() < deadline, f"run {rid} did not end: {state}"
            time.sleep(0.05)
        outcomes.append((delay, answer.status_code, state))
        if answer.status_code == 200:
            assert state == "CANCELED", outcomes
        else:
            assert answer.status_code == 400 and state in answer.json()["message"], (outcomes, answer.text)
            assert state == "SUCCEEDED", outcomes
    # Both sides of the race were exercised.
    codes = {c for _, c, _ in outcomes}
    assert codes == {200, 400}, outcomes


def test_a_second_server_on_the_same_data_leaves_the_live_ones_queued_runs_alone(tmp_path, compiled):
    home = tmp_path / "home"
    home.mkdir()
    a = Server(home, extra=["--max-concurrent-runs", "1"]).start()
    b = None
    try:
        path = compiled(hostile.tally_pipeline)
        with open(path, "rb") as f:
            pid = requests.post(a.url + "/apis/v2beta1/pipelines/upload", files={"uploadfile": ("tally.yaml", f)},
                                timeout=30).json()["pipeline_id"]
        tallies = [tmp_path / f"tally-{i}" for i in range(6)]
        runs = [requests.post(a.url + "/apis/v2beta1/runs", json={
            "display_name": f"queued-{i}", "pipeline_version_reference": {"pipeline_id": pid},
            "runtime_config": {"parameters": {"path": str(t)}}}, timeout=30).json()["run_id"] for i, t in enumerate(tallies)]
        # One runs, five wait for a slot of server A when server B starts on the same
        # data; B also runs one at a time, so what it found PENDING at its start it
        # reaches only later, when A may be running it.
        b = Server(home, extra=["--max-concurrent-runs", "1"]).start()
        deadline = time.time() + 60
        while any(requests.get(f"{a.url}/apis/v2beta1/runs/{r}", timeout=10).json()["state"] not in FINAL for r in runs):
            assert time.time() < deadline, "runs did not finish"
            time.sleep(0.2)
        time.sleep(1)  # a task B had taken would still be writing
        assert [t.read_text() for t in tallies] == ["ran\n"] * 6, [t.read_text() if t.exists() else None for t in tallies]
        # B took none of them over, and A ran every one (none was refused to it).
        log = (home / "server.log").read_text(errors="replace")
        assert f"127.0.0.1:{b.port} (data: {home}; 0 unfinished runs resumed)" in log, log[-3000:]
        assert "could not be executed" not in log, log[-3000:]
    finally:
        a.kill()
        if b:
            b.kill()
