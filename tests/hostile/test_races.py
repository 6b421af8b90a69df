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

from conftest import compiled, server  # noqa: E402,F401  (fixtures shared with tests/server)

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
