"""Switchyard vs kfp's local runner on the same compiled pipelines, in one run.

Usage: python bench/bench.py --binary PATH [--repeat N]
Measures wall time from command start to finish (median of N), Switchyard with
its warm interpreters (the default) and with a plain interpreter start per step
(--no-warm-python), for:
  chain10       10 Python tasks in a chain
  fanout16      16 independent Python tasks
  fanout16-loop a ParallelFor over 16 items
  chain40       40 Python tasks in a chain (with chain10: the cost of one more step)
and the engine's per-task overhead on a chain of 200 `true` container tasks
(kfp's SubprocessRunner cannot run container components, so that one is ours alone).
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

warnings.simplefilter("ignore")
HERE = pathlib.Path(__file__).resolve().parent


def wall(cmd, env=None):
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"command failed: {' '.join(map(str, cmd))}\n{out.stderr[-3000:]}")
    return dt, out.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    sys.path.insert(0, str(HERE))
    from kfp import compiler
    import pipelines

    work = pathlib.Path(tempfile.mkdtemp(prefix="switchyard-bench-"))
    compiled = {}
    for name, fn in [("chain10", pipelines.chain10), ("chain40", pipelines.chain40), ("fanout16", pipelines.fanout16),
                     ("fanout16-loop", pipelines.fanout16_loop), ("chain200", pipelines.chain200),
                     ("rss", pipelines.rss)]:
        compiled[name] = work / f"{name}.yaml"
        compiler.Compiler().compile(fn, str(compiled[name]))

    env = dict(os.environ)
    env["SWITCHYARD_HOME"] = str(work / "home")
    env.setdefault("SWITCHYARD_VENV_DIR", str(pathlib.Path.home() / ".cache/switchyard/bench-venvs"))
    sy = lambda name: [args.binary, "run", str(compiled[name]), "--no-cache", "--quiet", "--output", "json"]
    wall(sy("chain10"), env)  # warm-up: builds the component environment once

    results = {}
    for name in ["chain10", "fanout16", "fanout16-loop"]:
        ours, plain, theirs, theirs_inproc = [], [], [], []
        for _ in range(args.repeat):
            ours.append(wall(sy(name), env)[0])
            plain.append(wall(sy(name) + ["--no-warm-python"], env)[0])
            root = tempfile.mkdtemp(dir=work)
            dt, out = wall([sys.executable, str(HERE / "kfp_local.py"), name, root], dict(os.environ, PYTHONPATH=str(HERE)))
            theirs.append(dt)
            theirs_inproc.append(float(out.strip().splitlines()[-1]))
        results[name] = (statistics.median(ours), statistics.median(plain),
                         statistics.median(theirs), statistics.median(theirs_inproc))

    chain40 = [statistics.median(wall(sy("chain40") + extra, env)[0] for _ in range(args.repeat))
               for extra in ([], ["--no-warm-python"])]
    chain200 = statistics.median(wall(sy("chain200"), env)[0] for _ in range(args.repeat))
    spawn = statistics.median(
        wall(["sh", "-c", "for i in $(seq 200); do /bin/true; done"])[0] for _ in range(args.repeat))

    print(f"machine: {os.cpu_count()} CPUs; repeat={args.repeat}; median wall times\n")
    print("| pipeline | switchyard | switchyard, plain starts | kfp local (process) | kfp local (in-process) | speed-up vs process | vs in-process | warm vs plain |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (o, p, t, ti) in results.items():
        print(f"| {name} | {o:.2f}s | {p:.2f}s | {t:.2f}s | {ti:.2f}s | {t / o:.2f}x | {ti / o:.2f}x | {p / o:.2f}x |")
    # Per Python step, engine and interpreter together: the chain's time over
    # its 10 steps (the first step includes the server's start, and the
    # command's own start and end), and the cost of one more step in a chain
    # (chain40 less chain10, over 30): what a step costs once things run.
    print(f"\nchain10 per Python step: {results['chain10'][0] / 10 * 1000:.1f} ms warm, "
          f"{results['chain10'][1] / 10 * 1000:.1f} ms plain")
    print(f"one more Python step ((chain40 - chain10) / 30): "
          f"{(chain40[0] - results['chain10'][0]) / 30 * 1000:.1f} ms warm, "
          f"{(chain40[1] - results['chain10'][1]) / 30 * 1000:.1f} ms plain "
          f"(chain40: {chain40[0]:.2f}s warm, {chain40[1]:.2f}s plain)")
    _, out = wall(sy("rss"), env)
    print(f"fork server RSS (VmRSS, shared pages included): {json.loads(out)['outputs']['Output'] / 1024:.1f} MiB")
    per_task = chain200 / 200 * 1000
    print(f"\nchain200 (`true` containers): {chain200:.2f}s total, {per_task:.2f} ms/task; "
          f"spawning /bin/true alone: {spawn / 200 * 1000:.2f} ms; engine overhead ≈ {per_task - spawn / 200 * 1000:.2f} ms/task")
    print(json.dumps({"results": results, "chain40_s": chain40, "chain200_s": chain200, "spawn200_s": spawn}))


if __name__ == "__main__":
    main()
