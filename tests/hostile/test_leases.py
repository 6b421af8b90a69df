"""Run ownership is a lease (issue 16, item 11): servers sharing one
PostgreSQL database never execute a run another one holds, take over the runs
of a server that died once its lease expires, and a server that lost a run
(its lease taken over) stops executing it without writing anything more.

Two "hosts" are played on this machine with SWITCHYARD_HOST_ID, so only the
lease (not a process-id check) keeps the servers apart."""
import pathlib
import sqlite3
import sys
import time

import requests

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "server"))
sys.path.insert(0, str(REPO / "tests" / "pipelines"))

from conftest import Postgres, Server, compiled  # noqa: E402,F401  (fixtures shared with tests/server)

import hostile  # noqa: E402

FINAL = {"SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"}
LEASE = "3"


def upload(server, path):
    with open(path, "rb") as f:
        return requests.post(server.url + "/apis/v2beta1/pipelines/upload",
                             files={"uploadfile": ("p.yaml", f)}, timeout=30).json()["pipeline_id"]


def start_run(server, pid, **params):
    return requests.post(server.url + "/apis/v2beta1/runs", json={
        "display_name": "leased", "pipeline_version_reference": {"pipeline_id": pid},
        "runtime_config": {"parameters": params}}, timeout=30).json()["run_id"]


def state(server, rid):
    return requests.get(f"{server.url}/apis/v2beta1/runs/{rid}", timeout=10).json()["state"]


def wait_final(server, runs, seconds):
    deadline = time.time() + seconds
    while (states := [state(server, r) for r in runs]) and any(s not in FINAL for s in states):
        assert time.time() < deadline, f"runs did not finish: {states}"
        time.sleep(0.2)
    return states


def test_servers_on_one_postgres_respect_leases_and_take_over_a_dead_ones_runs(tmp_path, compiled):
    pg = Postgres().start()
    a = b = None
    try:
        homes = [tmp_path / "a", tmp_path / "b"]
        for h in homes:
            h.mkdir()
        extra = ["--max-concurrent-runs", "1"]
        a = Server(homes[0], database=pg.url, extra=extra,
                   env={"SWITCHYARD_HOST_ID": "host-a", "SWITCHYARD_LEASE_SECONDS": LEASE}).start()
        b = Server(homes[1], database=pg.url, extra=extra,
                   env={"SWITCHYARD_HOST_ID": "host-b", "SWITCHYARD_LEASE_SECONDS": LEASE}).start()
        pid = upload(a, compiled(hostile.tally_slow_pipeline))

        # Both alive: A's runs (one executing, the rest queued PENDING) span several
        # lease periods and several of B's recovery scans; B takes none of them.
        tallies = [tmp_path / f"live-{i}" for i in range(3)]
        runs = [start_run(a, pid, path=str(t), seconds="1.5") for t in tallies]
        assert wait_final(a, runs, 90) == ["SUCCEEDED"] * 3
        assert [t.read_text() for t in tallies] == ["ran\ndone\n"] * 3
        b_log = (homes[1] / "server.log").read_text(errors="replace")
        assert "resuming a run no process holds" not in b_log, b_log[-3000:]

        # A dies (kill -9) with one run executing and two queued: B takes all three
        # over, but only once A's lease has expired.
        tallies = [tmp_path / f"orphan-{i}" for i in range(3)]
        runs = [start_run(a, pid, path=str(t), seconds="3") for t in tallies]
        deadline = time.time() + 60
        while not tallies[0].exists():
            assert time.time() < deadline, "the first run never started"
            time.sleep(0.05)
        a.kill(9)
        killed = time.time()
        a = None
        while tallies[0].read_text().count("ran") < 2:
            assert time.time() < killed + 60, "B never took the executing run over"
            time.sleep(0.05)
        taken_after = time.time() - killed
        # The lease was renewed at most a third of its period before the kill.
        assert taken_after >= float(LEASE) * 2 / 3 - 0.2, taken_after
        assert wait_final(b, runs, 120) == ["SUCCEEDED"] * 3
        # The interrupted task ran again; the queued ones ran exactly once.
        assert tallies[0].read_text() == "ran\nran\ndone\n"
        assert [t.read_text() for t in tallies[1:]] == ["ran\ndone\n"] * 2
        b_log = (homes[1] / "server.log").read_text(errors="replace")
        assert b_log.count("resuming a run no process holds") == 3, b_log[-3000:]
        print(f"take-over {taken_after:.1f} s after kill -9 (lease {LEASE} s)")
    finally:
        for s in (a, b):
            if s:
                s.kill()
        pg.stop()


def test_a_server_that_lost_its_lease_stops_the_run_and_writes_nothing(tmp_path, compiled):
    home = tmp_path / "home"
    home.mkdir()
    s = Server(home, env={"SWITCHYARD_LEASE_SECONDS": LEASE}).start()
    try:
        pid = upload(s, compiled(hostile.tally_slow_pipeline))
        tally = tmp_path / "tally"
        rid = start_run(s, pid, path=str(tally), seconds="5")
        deadline = time.time() + 60
        while not tally.exists():
            assert time.time() < deadline, "the run never started"
            time.sleep(0.05)
        # Another process takes the run over (as after this server's lease had
        # expired): written straight into the database, as that process would.
        until = int((time.time() + 600) * 1000)
        with sqlite3.connect(home / "switchyard.db", timeout=30) as db:
            db.execute("UPDATE runs SET owner_id = 'host-z/1/1', owner_host = 'host-z', owner_pid = 1, "
                       "lease_until = ? WHERE id = ?", (until, rid))
        log = home / "server.log"
        while "lost the run to another" not in log.read_text(errors="replace"):
            assert time.time() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.1)
        time.sleep(6)  # past the task's natural end
        # The task was stopped (never printed "done"), the run is still the new
        # owner's (RUNNING, its lease untouched), and no task record moved to a final state.
        assert tally.read_text() == "ran\n"
        with sqlite3.connect(home / "switchyard.db", timeout=30) as db:
            run = db.execute("SELECT state, owner_id, lease_until FROM runs WHERE id = ?", (rid,)).fetchone()
            tasks = db.execute("SELECT state FROM tasks WHERE run_id = ? AND kind = 'container'", (rid,)).fetchall()
        assert run == ("RUNNING", "host-z/1/1", until), run
        assert tasks == [("RUNNING",)], tasks
        assert "run left to the process that took it over" in log.read_text(errors="replace")
    finally:
        s.kill()
