"""`switchyard job run` vs torchrun launching the same script, in one run.

Usage: python bench/jobs.py --binary PATH --torch-python PATH [--repeat N]
For 1x2, 2x2 and 4x1 (nodes x processes per node) it measures, from the moment
the launcher is started: all ranks started (the latest rank's first line of
Python), rendezvous complete (the latest rank past init_process_group), and the
launcher's total wall time. torchrun runs one launcher per node with a static
rendezvous on 127.0.0.1, as it would on N hosts.
"""
import argparse
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def collect(out, t0, n):
    data = [json.load(open(out / f"{r}.json")) for r in range(n)]
    return max(d["started"] for d in data) - t0, max(d["rendezvous"] for d in data) - t0


def run_switchyard(binary, torch_python, nodes, procs, work):
    out = pathlib.Path(tempfile.mkdtemp(dir=work))
    spec = work / f"job-{nodes}x{procs}.yaml"
    spec.write_text(
        "apiVersion: switchyard/v1\nkind: TrainingJob\nmetadata: {name: probe}\nspec:\n"
        f"  sourceDir: {HERE / 'rendezvous'}\n  entryPoint: probe.py\n  nodes: {nodes}\n  procsPerNode: {procs}\n"
        "  resources: {cpu: 0.5}\n")
    env = dict(os.environ, PROBE_OUT=str(out), SWITCHYARD_HOME=str(work / "home"), SWITCHYARD_TRAINING_PYTHON=torch_python)
    t0 = time.time()
    r = subprocess.run([binary, "job", "run", str(spec), "-q", "-o", "json"], env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if r.returncode != 0:
        sys.exit(f"switchyard failed: {r.stderr[-2000:]}")
    return (*collect(out, t0, nodes * procs), wall)


def run_torchrun(torch_python, nodes, procs, work):
    out = pathlib.Path(tempfile.mkdtemp(dir=work))
    torchrun = str(pathlib.Path(torch_python).parent / "torchrun")
    port = free_port()
    env = dict(os.environ, PROBE_OUT=str(out))
    t0 = time.time()
    launchers = [
        subprocess.Popen([torchrun, f"--nnodes={nodes}", f"--nproc-per-node={procs}", f"--node-rank={n}",
                          "--master-addr=127.0.0.1", f"--master-port={port}", str(HERE / "rendezvous/probe.py")],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for n in range(nodes)
    ]
    for p in launchers:
        _, err = p.communicate()
        if p.returncode != 0:
            sys.exit(f"torchrun failed: {err[-2000:]}")
    wall = time.time() - t0
    return (*collect(out, t0, nodes * procs), wall)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--torch-python", required=True)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="switchyard-jobbench-"))
    rows = []
    for nodes, procs in [(1, 2), (2, 2), (4, 1)]:
        run_switchyard(args.binary, args.torch_python, nodes, procs, work)  # warm the page cache
        sy = [run_switchyard(args.binary, args.torch_python, nodes, procs, work) for _ in range(args.repeat)]
        tr = [run_torchrun(args.torch_python, nodes, procs, work) for _ in range(args.repeat)]
        med = lambda runs, i: statistics.median(r[i] for r in runs)
        rows.append((f"{nodes}x{procs}", [med(sy, i) for i in range(3)], [med(tr, i) for i in range(3)]))
    print(f"machine: {os.cpu_count()} CPUs; repeat={args.repeat}; median seconds from launch\n")
    print("| job | ranks started: switchyard / torchrun | rendezvous done: switchyard / torchrun | total: switchyard / torchrun | ratio (total) |")
    print("|---|---|---|---|---|")
    for name, s, t in rows:
        print(f"| {name} | {s[0]:.2f} / {t[0]:.2f} | {s[1]:.2f} / {t[1]:.2f} | {s[2]:.2f} / {t[2]:.2f} | {s[2] / t[2]:.2f}x |")
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
