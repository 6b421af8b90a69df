"""How cost grows with a pipeline's size and a task's output (on demand, not in CI).

Usage: python bench/scaling.py --binary PATH [--items 1000,2000,5000,10000] [--lines 3000000]
  loops: `switchyard run` of a ParallelFor over N `true` container tasks: wall
         time, time per item and peak RSS of the switchyard process, per N
         (text output: `--output json` would add the report of every task).
  logs:  `switchyard server`, one task printing L lines (`seq`), four clients
         following its log: the server's RSS before, at its peak, and after.
The issue's baselines: 2,000 items 24.7 s / 300 MiB, 10,000 items > 6 GiB (killed);
3,000,000 lines left the server at 527 MiB, four followers took it to 1.4 GiB.
"""
import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
import warnings

import requests

warnings.simplefilter("ignore")
HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "pipelines"))

import server as bench_server  # noqa: E402


def peak_rss_of_child(cmd, env):
    """Runs cmd as a child and reads its peak RSS from wait4 (ru_maxrss, KiB)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out_chunks = []
    reader = threading.Thread(target=lambda: out_chunks.append(p.stdout.read()))
    reader.start()
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    reader.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd[:3])}\n{err.decode(errors='replace')[-3000:]}")
    return dt, usage.ru_maxrss / 1024, out_chunks[0].decode()


def loops(binary, sizes):
    from kfp import compiler
    import pipelines
    work = pathlib.Path(tempfile.mkdtemp(prefix="switchyard-scaling-"))
    spec = work / "loop.yaml"
    compiler.Compiler().compile(pipelines.loop_n, str(spec))
    print("| items | wall | per item | peak RSS |\n|---|---|---|---|")
    for n in sizes:
        env = dict(os.environ, SWITCHYARD_HOME=str(work / f"home-{n}"))
        dt, rss, out = peak_rss_of_child(
            [binary, "run", str(spec), "--quiet", "-p", f"n={n}"], env)
        state = "SUCCEEDED"  # peak_rss_of_child exits on a failed run
        print(f"| {n} | {dt:.1f} s | {dt / n * 1000:.2f} ms | {rss:.0f} MiB | {state}", flush=True)


def logs(binary, lines):
    from kfp import compiler
    import hostile
    work = pathlib.Path(tempfile.mkdtemp(prefix="switchyard-scaling-"))
    spec = work / "loud.yaml"
    compiler.Compiler().compile(hostile.loud_pipeline, str(spec))
    server, url = bench_server.start(binary, work / "home")
    rss = lambda: bench_server.rss_mib(server.pid)  # noqa: E731
    try:
        with open(spec, "rb") as f:
            pid = requests.post(url + "/apis/v2beta1/pipelines/upload", files={"uploadfile": ("loud.yaml", f)}).json()["pipeline_id"]
        base = rss()
        t0 = time.perf_counter()
        rid = requests.post(url + "/apis/v2beta1/runs", json={"display_name": "loud", "pipeline_version_reference": {"pipeline_id": pid},
                            "runtime_config": {"parameters": {"lines": str(lines)}}}).json()["run_id"]
        task = None
        while task is None:
            tasks = requests.get(f"{url}/apis/switchyard/v1/runs/{rid}").json().get("tasks", [])
            task = next((t["key"] for t in tasks if t["name"] == "loud" and t["has_log"]), None)
            time.sleep(0.05)
        peak, stop = [base], threading.Event()

        def follow():
            with requests.get(f"{url}/apis/switchyard/v1/runs/{rid}/logs", params={"task": task, "follow": "true"}, stream=True) as r:
                for _ in r.iter_content(1 << 16):
                    pass

        def sample():
            while not stop.is_set():
                peak.append(rss())
                time.sleep(0.1)
        threads = [threading.Thread(target=follow) for _ in range(4)] + [threading.Thread(target=sample)]
        for t in threads:
            t.start()
        for t in threads[:4]:
            t.join()
        while requests.get(f"{url}/apis/v2beta1/runs/{rid}").json()["state"] not in ("SUCCEEDED", "FAILED"):
            time.sleep(0.1)
        dt = time.perf_counter() - t0
        stop.set()
        threads[4].join()
        cpu = sum(int(x) for x in open(f"/proc/{server.pid}/stat").read().rsplit(")", 1)[1].split()[11:13]) / os.sysconf("SC_CLK_TCK")
        print(f"\nlogs: {lines} lines, 4 followers: {dt:.1f} s; server RSS {base:.0f} MiB before, "
              f"{max(peak):.0f} MiB peak, {rss():.0f} MiB after; server CPU {cpu:.1f} s")
    finally:
        server.terminate()
        server.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--items", default="1000,2000,5000,10000")
    ap.add_argument("--lines", type=int, default=3_000_000)
    a = ap.parse_args()
    loops(a.binary, [int(x) for x in a.items.split(",")])
    logs(a.binary, a.lines)


if __name__ == "__main__":
    main()
