"""The first run of a pipeline whose component needs pandas and scikit-learn:
Switchyard builds its managed environment (with uv, and with pip) against kfp's
local runner installing the same packages, on the same machine, in one run.

Usage: python bench/envbuild.py --binary PATH [--uv PATH] [--cold]
Each measurement starts from a new environment folder; "warm cache" means the
package caches (uv's, pip's) already hold the wheels (one untimed run fills
them), "--cold" adds runs with empty caches (wheels downloaded from PyPI).
kfp's local runner is measured two ways: use_venv=True (a new venv per task,
as Switchyard's) and use_venv=False (installing into a fresh interpreter
that already has kfp, kfp.local's default).
"""
import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

warnings.simplefilter("ignore")
HERE = pathlib.Path(__file__).resolve().parent

PIPELINE = '''
from kfp import dsl

@dsl.component(base_image="python:3.11", packages_to_install=["pandas", "scikit-learn"])
def fit() -> float:
    import pandas as pd
    from sklearn.linear_model import LinearRegression
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [2.0, 4.0, 6.0]})
    return float(LinearRegression().fit(df[["x"]], df["y"]).coef_[0])

@dsl.pipeline(name="envbuild")
def envbuild() -> float:
    return fit().output
'''

KFP_LOCAL = '''
import sys, time, warnings
warnings.simplefilter("ignore")
from kfp import local
sys.path.insert(0, sys.argv[3])
import envbuild_pipeline as p
local.init(runner=local.SubprocessRunner(use_venv=sys.argv[1] == "venv"), pipeline_root=sys.argv[2], raise_on_error=True)
t0 = time.perf_counter()
p.envbuild()
print(f"{time.perf_counter() - t0:.3f}")
'''


def timed(cmd, env):
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--uv", default=str(pathlib.Path(sys.executable).parent / "uv"))
    ap.add_argument("--cold", action="store_true")
    args = ap.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="switchyard-envbench-"))
    (work / "envbuild_pipeline.py").write_text(PIPELINE)
    (work / "kfp_local_env.py").write_text(KFP_LOCAL)
    sys.path.insert(0, str(work))
    from kfp import compiler
    import envbuild_pipeline
    spec = work / "envbuild.yaml"
    compiler.Compiler().compile(envbuild_pipeline.envbuild, str(spec))
    caches = {"pip": pathlib.Path.home() / ".cache/pip", "uv": pathlib.Path.home() / ".cache/uv"}

    def switchyard(tool, cache_dirs):
        env = dict(os.environ, SWITCHYARD_HOME=str(work / f"home-{time.time_ns()}"),
                   SWITCHYARD_VENV_DIR=str(work / f"venvs-{time.time_ns()}"),
                   SWITCHYARD_UV=args.uv if tool == "uv" else "off",
                   PIP_CACHE_DIR=str(cache_dirs["pip"]), UV_CACHE_DIR=str(cache_dirs["uv"]))
        return timed([args.binary, "run", str(spec), "--quiet", "--output", "json"], env)

    def kfp_local(mode, cache_dirs):
        # A fresh interpreter with kfp (as a user's), so nothing is installed already.
        venv = work / f"user-{time.time_ns()}"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        env = dict(os.environ, PIP_CACHE_DIR=str(cache_dirs["pip"]))
        subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q", "kfp==2.17.3"], check=True, env=env)
        t = timed([str(venv / "bin/python"), str(work / "kfp_local_env.py"), mode, str(work / f"root-{time.time_ns()}"), str(work)], env)
        shutil.rmtree(venv, ignore_errors=True)
        return t

    rows = []
    # Fill the warm caches once (untimed).
    switchyard("uv", caches)
    switchyard("pip", caches)
    rows.append(("warm cache", {
        "switchyard + uv": switchyard("uv", caches),
        "switchyard + pip": switchyard("pip", caches),
        "kfp.local use_venv=True": kfp_local("venv", caches),
        "kfp.local use_venv=False": kfp_local("novenv", caches),
    }))
    if args.cold:
        def cold():
            d = pathlib.Path(tempfile.mkdtemp(dir=work))
            return {"pip": d / "pip", "uv": d / "uv"}
        rows.append(("cold cache", {
            "switchyard + uv": switchyard("uv", cold()),
            "switchyard + pip": switchyard("pip", cold()),
            "kfp.local use_venv=True": kfp_local("venv", cold()),
            "kfp.local use_venv=False": kfp_local("novenv", cold()),
        }))
    names = list(rows[0][1])
    print(f"machine: {os.cpu_count()} CPUs; first run of a pipeline with pandas + scikit-learn (wall seconds)\n")
    print("| cache | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for label, r in rows:
        print(f"| {label} | " + " | ".join(f"{r[n]:.1f}s" for n in names) + " |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
