"""Data-parallel training of a small network on scikit-learn's digits dataset.

Reads only the runtime contract, so it runs unchanged under `switchyard job run`
(any backend), torchrun, a Kubeflow PyTorchJob or a SageMaker PyTorch container:
- torch.distributed's env:// rendezvous (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE);
- hyperparameters as command-line arguments (as the SageMaker toolkit, or
  the v3 SDK's ModelTrainer with `contract: modeltrainer`, passes them);
- SM_MODEL_DIR for the model (rank 0), the checkpoint directory for resuming,
  SM_OUTPUT_DIR/failure for a failure reason.

The --fail-* arguments inject faults for the tests.
"""
import argparse
import hashlib
import json
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn as nn
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--batch-size", "--batch_size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sleep-per-epoch", "--sleep_per_epoch", type=float, default=0.0)
    p.add_argument("--fail-at-epoch", "--fail_at_epoch", type=int, default=-1)
    p.add_argument("--fail-rank", "--fail_rank", type=int, default=1)
    p.add_argument("--fail-code", "--fail_code", type=int, default=137)
    p.add_argument("--fail-message", "--fail_message", default="")
    return p.parse_args()


def checkpoint_dir():
    # <base>/checkpoints: the toolkit names the base (SAGEMAKER_BASE_DIR);
    # ModelTrainer does not, but its SM_MODEL_DIR is <base>/model.
    base = os.environ.get("SAGEMAKER_BASE_DIR") or os.path.dirname(
        os.environ.get("SM_MODEL_DIR", "/opt/ml/model"))
    d = os.path.join(base, "checkpoints")
    os.makedirs(d, exist_ok=True)
    return d


def params_digest(model):
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def main():
    args = parse_args()
    dist.init_process_group("gloo")  # env:// rendezvous from the contract
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(args.seed)

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    train = TensorDataset(x_train, y_train)
    sampler = DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
    loader = DataLoader(train, batch_size=args.batch_size, sampler=sampler)

    model = DDP(nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    ckpt_dir = checkpoint_dir()
    ckpt = os.path.join(ckpt_dir, "checkpoint.pt")
    start = 0
    if os.path.exists(ckpt):
        state = torch.load(ckpt, weights_only=False)
        model.module.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = state["epoch"] + 1
        print(f"resumed from checkpoint at epoch {state['epoch']}")

    for epoch in range(start, args.epochs):
        sampler.set_epoch(epoch)
        model.train()
        total, count = 0.0, 0
        for xb, yb in loader:
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(xb)
            count += len(xb)
        print(f"epoch={epoch} loss={total / count:.4f}")
        if rank == 0:
            torch.save({"epoch": epoch, "model": model.module.state_dict(), "optimizer": opt.state_dict()}, ckpt + ".tmp")
            os.replace(ckpt + ".tmp", ckpt)
        dist.barrier()
        if args.sleep_per_epoch:
            time.sleep(args.sleep_per_epoch)
        marker = os.path.join(ckpt_dir, f"failed-once-{epoch}")
        if epoch == args.fail_at_epoch and rank == args.fail_rank and not os.path.exists(marker):
            open(marker, "w").close()
            if args.fail_message:
                with open(os.path.join(os.environ.get("SM_OUTPUT_DIR", "."), "failure"), "w") as f:
                    f.write(args.fail_message)
            print(f"injected failure: exiting with code {args.fail_code}", flush=True)
            os._exit(args.fail_code)

    model.eval()
    with torch.no_grad():
        acc = (model.module(x_test).argmax(1) == y_test).float().mean().item()
    digest = params_digest(model.module)
    out_dir = os.environ.get("SM_OUTPUT_DATA_DIR", ".")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"params-rank-{rank}.txt"), "w") as f:
        f.write(digest)
    print(f"test_accuracy={acc:.4f} params_sha256={digest[:16]}")
    if rank == 0:
        model_dir = os.environ.get("SM_MODEL_DIR", ".")
        os.makedirs(model_dir, exist_ok=True)
        torch.save(model.module.state_dict(), os.path.join(model_dir, "model.pt"))
        with open(os.path.join(model_dir, "metrics.json"), "w") as f:
            json.dump({"test_accuracy": acc, "world_size": world, "epochs": args.epochs}, f)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
