"""Runs one benchmark pipeline with kfp's own local runner (the peer).

Usage: python kfp_local.py PIPELINE_NAME ROOT
Prints the in-process wall time of the pipeline call on stdout.
"""
import sys
import time
import warnings

warnings.simplefilter("ignore")

from kfp import local  # noqa: E402

import pipelines  # noqa: E402

name, root = sys.argv[1], sys.argv[2]
local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=root, raise_on_error=True)
fn = {"chain10": pipelines.chain10, "fanout16": pipelines.fanout16, "fanout16-loop": pipelines.fanout16_loop}[name]
t0 = time.perf_counter()
fn()
print(f"{time.perf_counter() - t0:.4f}")
