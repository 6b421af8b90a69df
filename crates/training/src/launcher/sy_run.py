"""Switchyard's launcher for `contract: modeltrainer` jobs: runs the job's
script as ModelTrainer's drivers run it (sy_launch.json says how), with every
variable already set (by sm_train.sh on SageMaker, the prologue in a pod).

- `requirements`: pip-installed into this interpreter first;
- `script`: `python ENTRY ARGS` (a `.sh` through /bin/sh), once per host;
- `torchrun`: torch.distributed.run with `--nnodes`, `--nproc_per_node` and,
  on several hosts, `SM_MASTER_ADDR:SM_MASTER_PORT` and this host's rank;
  each worker is this file again (`worker`), which runs ENTRY with ARGS, so
  torchrun's own option parser never sees the script's arguments;
- `command`: the command's one line through bash (as the drivers `eval` it),
  no arguments added.

A failure is written to /opt/ml/output/failure (unless the script wrote one).
"""
import json
import os
import runpy
import shlex
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FAILURE = "/opt/ml/output/failure"


def plan():
    with open(os.path.join(HERE, "sy_launch.json")) as f:
        return json.load(f)


def fail(message, code):
    """Writes the failure file (unless the script wrote one) and exits with
    `code` (a signal's negative code as Python exits with it, 256 + code)."""
    try:
        os.makedirs(os.path.dirname(FAILURE), exist_ok=True)
        if not (os.path.exists(FAILURE) and os.path.getsize(FAILURE) > 0):
            with open(FAILURE, "a") as f:
                f.write(message + "\n")
    except OSError as e:
        print(f"switchyard: cannot write {FAILURE}: {e}", file=sys.stderr)
    print(f"switchyard: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def run(argv, what):
    print(f"switchyard: {' '.join(shlex.quote(a) for a in argv)}", flush=True)
    code = subprocess.call(argv)
    if code != 0:
        fail(f"{what} exited with status {code}: {' '.join(argv)}", code)


def worker(p):
    """One torchrun worker: the entry point as `python ENTRY ARGS` would run it."""
    entry = p["entry"]
    sys.argv = [entry] + p["args"]
    sys.path[0] = os.path.dirname(os.path.abspath(entry))
    runpy.run_path(entry, run_name="__main__")


def main():
    p = plan()
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        return worker(p)
    if p.get("requirements"):
        if subprocess.call([sys.executable, "-m", "pip", "--version"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) != 0:
            fail("spec.requirements: the image's python has no pip (python -m pip fails): "
                 "add pip to the image, or drop requirements", 2)
        # Into the image's Python, as ModelTrainer installs (the container is the job's own).
        os.environ["PIP_BREAK_SYSTEM_PACKAGES"] = "1"
        run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
             "--no-input", "-r", p["requirements"]], "installing the requirements")
        del os.environ["PIP_BREAK_SYSTEM_PACKAGES"]
    launch = p["launch"]
    if launch == "command":
        # One shell line, as ModelTrainer's launcher evals it.
        run(["/bin/bash", "-c", p["command"]], "the command")
    elif launch == "script" and p["entry"].endswith(".sh"):
        args = " ".join(shlex.quote(a) for a in p["args"])
        run(["/bin/sh", "-c", f"chmod +x {p['entry']} && ./{p['entry']} {args}"], "the script")
    elif launch == "script":
        run([sys.executable, p["entry"]] + p["args"], "the script")
    else:
        nodes = int(os.environ["SM_HOST_COUNT"])
        argv = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}",
                f"--nproc_per_node={p['procs']}"]
        if nodes > 1:
            argv += [f"--master_addr={os.environ['SM_MASTER_ADDR']}",
                     f"--master_port={os.environ['SM_MASTER_PORT']}",
                     f"--node_rank={os.environ['SM_CURRENT_HOST_RANK']}"]
        run(argv + [os.path.abspath(__file__), "worker"], "torchrun")


if __name__ == "__main__":
    main()
