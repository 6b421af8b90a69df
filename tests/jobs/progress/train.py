"""Prints a falling loss and a rising accuracy, one epoch at a time, so a
dashboard has something to plot. Reads only the runtime contract."""
import argparse
import os
import time

p = argparse.ArgumentParser()
p.add_argument("--epochs", type=int, default=4)
p.add_argument("--pause", type=float, default=0.2)
args = p.parse_args()
for epoch in range(1, args.epochs + 1):
    print(f"rank {os.environ['RANK']} epoch {epoch} loss={1 / epoch:.4f} accuracy={0.5 + epoch * 0.05:.3f}", flush=True)
    time.sleep(args.pause)
with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.txt"), "w") as f:
    f.write(f"trained for {args.epochs} epochs\n")
