"""Kubeflow Trainer v2.3's S3 initializers (its own Python, pkg/initializers
from the trainer module, with OpenDAL as its image has it) side by side with
`switchyard initializer`, against the same moto S3 on 127.0.0.1: for each
case (prefixes with and without a trailing slash, a whole key, ignore
patterns, the SDK's model defaults, a prefix that is also the start of
another, nothing under the prefix, a missing bucket, a key with `..`, two keys on one file, fnmatch sets) both fetch into their
own workspace; the file trees (paths and bytes) and success are compared.
Prints every difference and exits 1 if any. Run by scripts/conformance-trainer:

    initializer_side_by_side.py --trainer-src DIR --trainer-python PY --switchyard BIN
"""
import argparse
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time

import boto3

# The Kubeflow SDK's default ignore patterns for models.
SDK_MODEL_IGNORE = "*.msgpack,*.h5,*.bin,*.pt,*.pth"

OBJECTS = {
    "digits/train.csv": b"1 2 3\n",
    "digits/sub/a/b.txt": b"nested",
    "digits/with space.txt": b"space",
    "digits/weights.pt": b"pt",
    "digits2/other.csv": b"another prefix",
    "single/file.bin": b"one file",
    "models/m/config.json": b"{}",
    "models/m/model.safetensors": b"tensors",
    "models/m/pytorch_model.bin": b"bin",
    "models/m/sub/tokenizer.model": b"tok",
    # Two keys that land on one file under the prefix `dup`.
    "dup/a": b"slash",
    "dupa": b"joined",
}

CASES = [
    ("dataset", "s3://data/digits", None),
    ("dataset", "s3://data/digits/", None),
    ("dataset", "s3://data/digits", "*.pt"),
    ("dataset", "s3://data/digits", "sub/*, *.csv"),
    ("dataset", "s3://data/digits", "*[0-9]*, *[!a-z].txt, {x}"),
    ("dataset", "s3://data/dup", None),
    ("dataset", "s3://data/single/file.bin", None),
    ("model", "s3://data/models/m", SDK_MODEL_IGNORE),
    ("model", "s3://data/models/m/", "*/sub/*"),
    ("dataset", "s3://data/nothing-here", None),
    ("dataset", "s3://no-such-bucket/x", None),
    ("dataset", "s3://hostile/d", None),
]


# Runs Trainer's initializer `__main__` with its workspace moved under argv[2].
TRAINER_WRAPPER = """
import sys
sys.path.insert(0, sys.argv[1])
sys.dont_write_bytecode = True
import pkg.initializers.utils.utils as utils
utils.DATASET_PATH = sys.argv[2] + "/dataset"
utils.MODEL_PATH = sys.argv[2] + "/model"
if sys.argv[3] == "dataset":
    from pkg.initializers.dataset.__main__ import main
else:
    from pkg.initializers.model.__main__ import main
main()
"""


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_moto(repo, host="127.0.0.1"):
    """moto's S3 on `host` (127.0.0.1, or the test cluster's bridge for pods)."""
    port = free_port(host)
    proc = subprocess.Popen([sys.executable, str(repo / "tests/sagemaker/moto_server.py"), "-H", host,
                             "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return proc, f"http://{host}:{port}"
        except OSError:
            if time.time() > deadline:
                proc.kill()
                raise SystemExit("moto did not start")
            time.sleep(0.2)


def s3_client(endpoint):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


def env_for(endpoint, uri, ignore):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(STORAGE_URI=uri, ENDPOINT=endpoint, ACCESS_KEY_ID="test", SECRET_ACCESS_KEY="test",
               REGION="us-east-1")
    if ignore:
        env["IGNORE_PATTERNS"] = ignore
    return env


def trainer_cmd(args, kind, workspace):
    return [args.trainer_python, "-c", TRAINER_WRAPPER, args.trainer_src, str(workspace), kind]


def switchyard_cmd(args, kind, workspace):
    return [args.switchyard, "initializer", kind, "--workspace", str(workspace)]


def run(cmd, env):
    """(exit code, seconds, stderr tail)."""
    start = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    return r.returncode, time.perf_counter() - start, (r.stderr or r.stdout)[-600:]


def tree(root):
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def compare(args, endpoint):
    differences = []
    for kind, uri, ignore in CASES:
        env = env_for(endpoint, uri, ignore)
        results = {}
        for who, cmd in (("trainer", trainer_cmd), ("switchyard", switchyard_cmd)):
            with tempfile.TemporaryDirectory() as ws:
                code, _, err = run(cmd(args, kind, ws), env)
                # The whole workspace: a file written outside the step's folder shows.
                results[who] = (code == 0, tree(pathlib.Path(ws)), err)
        t, s = results["trainer"], results["switchyard"]
        label = f"{kind} {uri} ignore={ignore!r}"
        files = sorted(t[1]) if t[0] else "failed"
        print(f"{label}: trainer {files}", flush=True)
        if t[0] != s[0]:
            differences.append(f"{label}: trainer {'succeeded' if t[0] else 'failed'}, switchyard "
                               f"{'succeeded' if s[0] else 'failed'}\n  trainer: {t[2].strip()[-300:]}\n"
                               f"  switchyard: {s[2].strip()[-300:]}")
        elif t[1] != s[1]:
            differences.append(f"{label}: trees differ\n  trainer:    {sorted(t[1])}\n"
                               f"  switchyard: {sorted(s[1])}")
    return differences


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trainer-src", required=True, help="the kubeflow/trainer v2.3.0 module (its pkg/initializers)")
    ap.add_argument("--trainer-python", required=True, help="a Python with opendal")
    ap.add_argument("--switchyard", required=True)
    args = ap.parse_args()
    repo = pathlib.Path(__file__).resolve().parents[2]
    moto, endpoint = start_moto(repo)
    try:
        s3 = s3_client(endpoint)
        s3.create_bucket(Bucket="data")
        for key, body in OBJECTS.items():
            s3.put_object(Bucket="data", Key=key, Body=body)
        s3.create_bucket(Bucket="hostile")
        s3.put_object(Bucket="hostile", Key="d/ok.txt", Body=b"ok")
        s3.put_object(Bucket="hostile", Key="d/../escape.txt", Body=b"escaped")
        differences = compare(args, endpoint)
    finally:
        moto.terminate()
        moto.wait(timeout=30)
    print(json.dumps({"cases": len(CASES), "differences": len(differences)}))
    for d in differences:
        print("DIFFERENCE", d)
    sys.exit(1 if differences else 0)


if __name__ == "__main__":
    main()
