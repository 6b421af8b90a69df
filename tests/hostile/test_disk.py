"""A full disk: the data folder on a 20 MiB tmpfs, a task fills it. The run
must end cleanly by itself once space returns (FAILED, naming the full disk),
and the store must take writes again without a restart."""
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import requests

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "server"))
sys.path.insert(0, str(REPO / "tests" / "pipelines"))

from conftest import Server, compiled  # noqa: E402,F401  (fixtures shared with tests/server)

import hostile  # noqa: E402

FINAL = {"SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"}


def state(url, rid):
    r = requests.get(f"{url}/apis/v2beta1/runs/{rid}", timeout=10).json()
    return r["state"], (r.get("error") or {}).get("message", "")


def test_a_full_disk_fails_the_run_and_the_store_recovers_by_itself(compiled):
    assert os.geteuid() == 0, "needs root to mount a small tmpfs (scripts/test runs as root, as the cluster needs)"
    mnt = pathlib.Path(tempfile.mkdtemp(prefix="switchyard-full-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mnt)], check=True)
    server = None
    try:
        home = mnt / "home"
        home.mkdir()
        server = Server(home).start()
        url = server.url
        with open(compiled(hostile.fill_disk_pipeline), "rb") as f:
            pid = requests.post(url + "/apis/v2beta1/pipelines/upload", files={"uploadfile": ("fill.yaml", f)},
                                timeout=30).json()["pipeline_id"]

        def create(path):
            r = requests.post(url + "/apis/v2beta1/runs", json={
                "display_name": "fill", "pipeline_version_reference": {"pipeline_id": pid},
                "runtime_config": {"parameters": {"path": path}}}, timeout=30)
            assert r.status_code == 200, r.text
            return r.json()["run_id"]

        filler = mnt / "filler"
        rid = create(str(filler))
        deadline = time.time() + 60
        while not filler.exists() or filler.stat().st_size < 19 << 20:
            assert time.time() < deadline, "the task did not fill the disk"
            time.sleep(0.2)
        time.sleep(7)  # the engine hits the full disk, and the first retries to end the run fail
        assert requests.get(url + "/apis/v2beta1/healthz", timeout=10).status_code == 200
        filler.unlink()
        # Space is back. A write on any pooled connection works again at once (a
        # connection left inside the failed transaction answered 500, "database
        # is locked", until restart).
        for _ in range(4):
            r = requests.post(url + "/apis/v2beta1/experiments", json={"display_name": f"after-{time.time()}"}, timeout=10)
            assert r.status_code == 200, r.text
        # The run ends by itself, naming the full disk.
        deadline = time.time() + 30
        while (st := state(url, rid))[0] not in FINAL:
            assert time.time() < deadline, f"run stayed {st}"
            time.sleep(0.5)
        assert st[0] == "FAILED" and ("full" in st[1] or "No space" in st[1]), st
        # The store takes writes on every pooled connection again: new runs, and
        # a terminate, all without a restart.
        others = [create("none") for _ in range(6)]
        deadline = time.time() + 60
        while any(state(url, r)[0] not in FINAL for r in others):
            assert time.time() < deadline
            time.sleep(0.3)
        assert [state(url, r)[0] for r in others] == ["SUCCEEDED"] * 6
        last = create("none")
        r = requests.post(f"{url}/apis/v2beta1/runs/{last}:terminate", timeout=10)
        assert r.status_code in (200, 400), r.text  # 400 only if it had already finished
    finally:
        if server:
            server.kill()
        subprocess.run(["umount", str(mnt)], check=False)
        mnt.rmdir()
