"""`contract: modeltrainer` in Kubernetes pods side by side with ModelTrainer
(harness.py): a 2-host job, one process per pod, run by `switchyard job run
--backend kubernetes` on the local test cluster and by ModelTrainer's drivers.

Run by crates/cli/tests/it/k8s.rs, which makes the namespace, the operator and
an EFS-style claim holding the dataset, and passes what `switchyard job run`
needs in the environment.

Usage: pods.py WORKDIR EFS_CHANNEL   (e.g. efs://fs-mt/digits)
Exits 0 when every difference is listed for `kubernetes` in
docs/runtime-contract.md; prints the differences either way.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (UNDER_TORCHRUN, check, differences, job_yaml, modeltrainer,  # noqa: E402
                     moto, source)

JOB = {"nodes": 2, "procs": 1, "hyperparameters": UNDER_TORCHRUN}


def switchyard_pods(name, src, channel, tmp):
    path = tmp / "job-pods.yaml"
    path.write_text(job_yaml(name, src, JOB, None, backend="kubernetes", channel=channel))
    binary = os.environ["SWITCHYARD_BIN"]
    out = subprocess.run([binary, "job", "run", str(path), "--output", "json"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    job_id = json.loads(out.stdout)["job_id"]
    dumps = {}
    for rank in range(JOB["nodes"] * JOB["procs"]):
        logs = subprocess.run([binary, "job", "logs", job_id, "--rank", str(rank)],
                              capture_output=True, text=True, check=True).stdout
        for line in logs.splitlines():
            at = line.find("SY-DUMP ")
            if at >= 0:
                d = json.loads(line[at + len("SY-DUMP "):])
                dumps[d["name"]] = d["dump"]
    return dumps


def main():
    tmp, channel = Path(sys.argv[1]), sys.argv[2]
    tmp.mkdir(parents=True, exist_ok=True)
    src = source(tmp / "src", wheel=False)
    with moto(tmp / "moto") as endpoint:
        request, ref_env, ref = modeltrainer("mt-pods", src, JOB, endpoint, tmp)
    got = switchyard_pods("sy-pods", src, channel, tmp)
    world = JOB["nodes"] * JOB["procs"]
    assert {d.get("rank_sum") for d in got.values()} == {world * (world - 1) / 2}, got.keys()
    check(differences(ref, ref_env, request["TrainingJobName"], got, None, "sy-pods"),
          "kubernetes")


if __name__ == "__main__":
    main()
