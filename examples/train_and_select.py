"""Example: train a small model with several learning rates, keep the best one.

Seven tasks: data generation, a split, a ParallelFor sweep of training runs,
selection over the collected models, a condition on the result, and a container
component that writes a report. Only the Python standard library is used, so the
components need no extra packages.

Compile:  python examples/train_and_select.py  (writes examples/train_and_select.yaml)
Run:      switchyard run examples/train_and_select.yaml -p epochs=30
"""
import pathlib
from typing import List, NamedTuple

from kfp import compiler, dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

BASE = "python:3.11"


@dsl.component(base_image=BASE)
def make_data(samples: int, noise: float, data: Output[Dataset]):
    """y = 3x + 2 with Gaussian noise, as CSV."""
    import random
    rng = random.Random(42)
    with open(data.path, "w") as f:
        for _ in range(samples):
            x = rng.uniform(-1, 1)
            f.write(f"{x},{3 * x + 2 + rng.gauss(0, noise)}\n")
    data.metadata["samples"] = samples


@dsl.component(base_image=BASE)
def split(data: Input[Dataset], test_fraction: float, train: Output[Dataset], test: Output[Dataset]):
    rows = open(data.path).read().splitlines()
    cut = int(len(rows) * (1 - test_fraction))
    open(train.path, "w").write("\n".join(rows[:cut]) + "\n")
    open(test.path, "w").write("\n".join(rows[cut:]) + "\n")
    train.metadata["rows"], test.metadata["rows"] = cut, len(rows) - cut


@dsl.component(base_image=BASE)
def train(train: Input[Dataset], lr: float, epochs: int, model: Output[Model], metrics: Output[Metrics]):
    """Linear regression by gradient descent."""
    import json
    pts = [tuple(map(float, line.split(","))) for line in open(train.path) if line.strip()]
    w = b = 0.0
    for epoch in range(epochs):
        gw = sum((w * x + b - y) * x for x, y in pts) * 2 / len(pts)
        gb = sum((w * x + b - y) for x, y in pts) * 2 / len(pts)
        w, b = w - lr * gw, b - lr * gb
        if epoch % 10 == 0:
            print(f"lr={lr} epoch={epoch} w={w:.3f} b={b:.3f}")
    loss = sum((w * x + b - y) ** 2 for x, y in pts) / len(pts)
    json.dump({"w": w, "b": b}, open(model.path, "w"))
    model.metadata["lr"] = lr
    metrics.log_metric("train_mse", loss)


@dsl.component(base_image=BASE)
def select_best(models: Input[List[Model]], test: Input[Dataset]) -> NamedTuple("Best", [("lr", float), ("mse", float), ("uri", str)]):
    import json
    from collections import namedtuple
    pts = [tuple(map(float, line.split(","))) for line in open(test.path) if line.strip()]
    scored = []
    for m in models:
        p = json.load(open(m.path))
        mse = sum((p["w"] * x + p["b"] - y) ** 2 for x, y in pts) / len(pts)
        print(f"lr={m.metadata['lr']} test_mse={mse:.4f}")
        scored.append((mse, m.metadata["lr"], m.uri))
    mse, lr, uri = min(scored)
    return namedtuple("Best", ["lr", "mse", "uri"])(lr, mse, uri)


@dsl.component(base_image=BASE)
def publish(uri: str, lr: float) -> str:
    print(f"publishing model {uri} (lr={lr})")
    return f"published lr={lr}"


@dsl.component(base_image=BASE)
def reject(mse: float, threshold: float) -> str:
    print(f"best test MSE {mse:.4f} is above the threshold {threshold}; not publishing")
    return "rejected"


@dsl.container_component
def write_report(lr: float, mse: float, report: Output[Markdown]):
    return dsl.ContainerSpec(
        image="alpine:3.19",
        command=["sh", "-c", 'printf "# Model selection\\n\\n| best lr | test MSE |\\n|---|---|\\n| %s | %s |\\n" "$0" "$1" > "$2"; cat "$2"'],
        args=[lr, mse, report.path],
    )


@dsl.pipeline(name="train-and-select", description="Sweep learning rates, keep the best model if it is good enough.")
def train_and_select(samples: int = 400, noise: float = 0.1, epochs: int = 60,
                     learning_rates: List[float] = [0.01, 0.05, 0.2], threshold: float = 0.05) -> str:
    data = make_data(samples=samples, noise=noise)
    parts = split(data=data.outputs["data"], test_fraction=0.25)
    with dsl.ParallelFor(learning_rates, parallelism=3) as lr:
        t = train(train=parts.outputs["train"], lr=lr, epochs=epochs)
    best = select_best(models=dsl.Collected(t.outputs["model"]), test=parts.outputs["test"])
    write_report(lr=best.outputs["lr"], mse=best.outputs["mse"])
    with dsl.If(best.outputs["mse"] < threshold):
        ok = publish(uri=best.outputs["uri"], lr=best.outputs["lr"])
    with dsl.Else():
        no = reject(mse=best.outputs["mse"], threshold=threshold)
    return dsl.OneOf(ok.output, no.output)


if __name__ == "__main__":
    import sys
    out = sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).with_suffix(".yaml")
    compiler.Compiler().compile(train_and_select, str(out))
    print(out)
