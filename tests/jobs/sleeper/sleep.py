"""Writes this rank's pid where the test can find it, then sleeps."""
import argparse
import os
import time

p = argparse.ArgumentParser()
p.add_argument("--seconds", type=float, default=60)
args = p.parse_args()
with open(os.path.join(os.environ["SAGEMAKER_BASE_DIR"], "checkpoints", f"pid-{os.environ['RANK']}"), "w") as f:
    f.write(str(os.getpid()))
print(f"rank {os.environ['RANK']} sleeping {args.seconds}s", flush=True)
time.sleep(args.seconds)
print("done")
