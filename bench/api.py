"""The REST API under load: runs per second, get/list latency, memory.

Usage: python bench/api.py --binary PATH [--runs 500]
Also samples get_run, list_runs and a filtered list_runs while the runs execute.
Starts `switchyard server` on a loopback port with a fresh data directory,
uploads a three-task container pipeline, creates N runs through the API (16
client threads), waits until all are done, then measures get_run and list_runs
latency (200 calls each) with the N runs stored, and the server's resident
memory idle (before) and after the load.
"""
import argparse
import json
import os
import random
import pathlib
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import requests
from kfp import compiler, dsl

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import server as bench_server  # noqa: E402
from server import rss_mib  # noqa: E402


@dsl.container_component
def step(msg: str):
    return dsl.ContainerSpec(image="alpine:3.19", command=["sh", "-c", 'echo "$0" > /dev/null'], args=[msg])


@dsl.pipeline(name="three-steps")
def three_steps(msg: str = "x") -> None:
    a = step(msg=msg).set_caching_options(False)
    b = step(msg=msg).set_caching_options(False).after(a)
    step(msg=msg).set_caching_options(False).after(b)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--runs", type=int, default=500)
    args = ap.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="switchyard-apibench-"))
    spec = work / "three.yaml"
    compiler.Compiler().compile(three_steps, str(spec))
    server, url = bench_server.start(args.binary, work / "home")
    base = url + "/apis/v2beta1"
    try:
        time.sleep(1)
        idle = rss_mib(server.pid)
        with open(spec, "rb") as f:
            pid = requests.post(base + "/pipelines/upload", params={"name": "three"}, files={"uploadfile": f}).json()["pipeline_id"]
        vid = requests.get(f"{base}/pipelines/{pid}/versions").json()["pipeline_versions"][0]["pipeline_version_id"]
        body = lambda i: {"display_name": f"r{i}", "pipeline_version_reference": {"pipeline_id": pid, "pipeline_version_id": vid}}
        session = requests.Session()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            ids = list(pool.map(lambda i: requests.post(base + "/runs", json=body(i)).json()["run_id"], range(args.runs)))
        created = time.perf_counter() - t0
        peak = 0.0
        # Reads while the runs execute (what a dashboard does under load).
        load_gets, load_lists, load_filtered = [], [], []
        flt = json.dumps({"predicates": [{"key": "display_name", "operation": "EQUALS", "string_value": "r1"}]})
        while True:
            for series, call in ((load_gets, lambda: session.get(f"{base}/runs/{random.choice(ids)}")),
                                 (load_lists, lambda: session.get(base + "/runs", params={"page_size": 20})),
                                 (load_filtered, lambda: session.get(base + "/runs", params={"page_size": 20, "filter": flt}))):
                t = time.perf_counter()
                call().raise_for_status()
                series.append((time.perf_counter() - t) * 1000)
            done = session.get(base.replace("/apis/v2beta1", "") + "/metrics").text
            succeeded = next((int(l.split()[-1]) for l in done.splitlines() if l.startswith('switchyard_runs{state="SUCCEEDED"}')), 0)
            peak = max(peak, rss_mib(server.pid))
            if succeeded >= args.runs:
                break
            if time.perf_counter() - t0 > 1800:
                sys.exit("runs did not finish in 30 minutes")
            time.sleep(0.05)
        total = time.perf_counter() - t0
        gets, lists = [], []
        for i in range(200):
            t = time.perf_counter()
            session.get(f"{base}/runs/{ids[i % len(ids)]}").raise_for_status()
            gets.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            session.get(base + "/runs", params={"page_size": 20}).raise_for_status()
            lists.append((time.perf_counter() - t) * 1000)
        after = rss_mib(server.pid)
        print(f"{args.runs} runs of a 3-task pipeline: created in {created:.1f}s, all succeeded after {total:.1f}s "
              f"({args.runs / total:.1f} runs/s, {3 * args.runs / total:.1f} tasks/s)")
        print(f"get_run p50 {statistics.median(gets):.1f} ms, p99 {pct(gets, 99):.1f} ms; "
              f"list_runs (page 20 of {args.runs}) p50 {statistics.median(lists):.1f} ms, p99 {pct(lists, 99):.1f} ms")
        print(f"under load ({len(load_gets)} samples each): get_run p50 {statistics.median(load_gets):.1f} ms, "
              f"p99 {pct(load_gets, 99):.1f} ms; list_runs p50 {statistics.median(load_lists):.1f} ms, "
              f"p99 {pct(load_lists, 99):.1f} ms; filtered list_runs p50 {statistics.median(load_filtered):.1f} ms, "
              f"p99 {pct(load_filtered, 99):.1f} ms")
        print(f"server RSS: idle {idle:.0f} MiB, peak under load {peak:.0f} MiB, after {after:.0f} MiB")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
