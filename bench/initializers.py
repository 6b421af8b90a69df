"""Fetching a dataset the way a TrainJob's initializer does: Kubeflow Trainer
v2.3's S3 dataset initializer (its pkg/initializers with OpenDAL, as its
image runs it) against `switchyard initializer dataset` (AWS SDK for Rust),
the same moto S3 on 127.0.0.1, the same objects, alternated runs.

Usage: python bench/initializers.py --switchyard PATH [--files 400] [--kib 64] [--repeat 5]

Needs Trainer's module and its initializers' Python (scripts/setup --k8s).
Prints the median seconds of each and their ratio.
"""
import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests/k8s"))
import initializer_side_by_side as sbs  # noqa: E402
from test_initializer_side_by_side import VENV, trainer_module  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--switchyard", required=True)
    ap.add_argument("--files", type=int, default=400)
    ap.add_argument("--kib", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    args = argparse.Namespace(trainer_src=trainer_module(), trainer_python=str(VENV / "bin/python"),
                              switchyard=a.switchyard)
    moto, endpoint = sbs.start_moto(REPO)
    try:
        s3 = sbs.s3_client(endpoint)
        s3.create_bucket(Bucket="bench")
        body = bytes(range(256)) * (a.kib * 4)
        for i in range(a.files):
            s3.put_object(Bucket="bench", Key=f"set/part-{i // 50}/{i:05}.bin", Body=body)
        env = sbs.env_for(endpoint, "s3://bench/set", None)
        times = {"trainer": [], "switchyard": []}
        for _ in range(a.repeat):
            for who, cmd in (("trainer", sbs.trainer_cmd), ("switchyard", sbs.switchyard_cmd)):
                with tempfile.TemporaryDirectory() as ws:
                    code, secs, err = sbs.run(cmd(args, "dataset", ws), env)
                    assert code == 0, f"{who}: {err}"
                    got = sum(1 for p in pathlib.Path(ws).rglob("*") if p.is_file())
                    assert got == a.files, f"{who}: {got} files of {a.files}"
                    times[who].append(secs)
    finally:
        moto.terminate()
        moto.wait(timeout=30)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({
        "objects": a.files, "kib_each": a.kib, "repeat": a.repeat,
        "trainer_s": round(med["trainer"], 3), "switchyard_s": round(med["switchyard"], 3),
        "trainer_over_switchyard": round(med["trainer"] / med["switchyard"], 2),
        "runs": {k: [round(x, 3) for x in v] for k, v in times.items()},
    }, indent=1))


if __name__ == "__main__":
    main()
