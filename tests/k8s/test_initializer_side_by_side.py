"""Kubeflow Trainer v2.3's own S3 initializers beside `switchyard initializer`
(initializer_side_by_side.py): the same files, or the same failure, in every
case. Needs Trainer's Go module and its initializers' Python (scripts/setup --k8s);
no cluster."""
import os
import pathlib
import subprocess
import sys

from kube import BIN, REPO

VENV = pathlib.Path(os.environ.get("SWITCHYARD_TRAINER_INIT_VENV",
                                   pathlib.Path.home() / ".cache/switchyard/trainer-initializer-venv"))


def trainer_module():
    r = subprocess.run(["go", "list", "-m", "-json", "github.com/kubeflow/trainer/v2@v2.3.0"], cwd="/tmp",
                       capture_output=True, text=True)
    assert r.returncode == 0, f"Trainer's module is not here: scripts/setup --k8s ({r.stderr})"
    import json
    return json.loads(r.stdout)["Dir"]


def test_trainers_s3_initializers_and_switchyards_fetch_the_same_files():
    assert (VENV / "bin/python").exists(), f"no {VENV}: run scripts/setup --k8s"
    r = subprocess.run([sys.executable, str(REPO / "tests/k8s/initializer_side_by_side.py"),
                        "--trainer-src", trainer_module(), "--trainer-python", str(VENV / "bin/python"),
                        "--switchyard", BIN], capture_output=True, text=True, timeout=600)
    print(r.stdout)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert '"differences": 0' in r.stdout
