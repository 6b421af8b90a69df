"""Artifacts between tasks: Dataset, Model, Metrics, Artifact, lists, metadata."""
from typing import List

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from common import BASE


@dsl.component(base_image=BASE)
def make_data(rows: int, data: Output[Dataset]):
    with open(data.path, "w") as f:
        for i in range(rows):
            f.write(f"{i},{i * i}\n")
    data.metadata["rows"] = rows


@dsl.component(base_image=BASE)
def train(data: Input[Dataset], model: Output[Model], metrics: Output[Metrics], extra: Output[Artifact]):
    lines = open(data.path).read().splitlines()
    with open(model.path, "w") as f:
        f.write(f"model trained on {len(lines)} rows")
    model.metadata["framework"] = "none"
    model.metadata["source_rows"] = data.metadata["rows"]
    metrics.log_metric("accuracy", 0.9)
    import os
    os.makedirs(extra.path, exist_ok=True)
    with open(os.path.join(extra.path, "part-0"), "w") as f:
        f.write("x")


@dsl.component(base_image=BASE)
def evaluate(model: Input[Model], metrics: Input[Metrics]) -> str:
    text = open(model.path).read()
    return f"{text}; framework={model.metadata['framework']}; acc={metrics.metadata['accuracy']}"


@dsl.component(base_image=BASE)
def shard(i: int, part: Output[Dataset]):
    with open(part.path, "w") as f:
        f.write("y" * (i + 1))
    part.metadata["i"] = i


@dsl.component(base_image=BASE)
def merge(parts: Input[List[Dataset]]) -> int:
    return sum(len(open(p.path).read()) for p in parts)


@dsl.pipeline(name="artifact-passing")
def artifact_passing(rows: int = 5) -> str:
    d = make_data(rows=rows)
    t = train(data=d.outputs["data"])
    e = evaluate(model=t.outputs["model"], metrics=t.outputs["metrics"])
    with dsl.ParallelFor([0, 1, 2]) as i:
        s = shard(i=i)
    merge(parts=dsl.Collected(s.outputs["part"]))
    return e.output


@dsl.component(base_image=BASE)
def count_lines(data: Input[Dataset]) -> str:
    return f"{len(open(data.path).read().splitlines())} {data.metadata.get('origin')}"


@dsl.pipeline(name="import-existing")
def import_existing(uri: str) -> str:
    imported = dsl.importer(artifact_uri=uri, artifact_class=Dataset, reimport=False, metadata={"origin": "lab"})
    return count_lines(data=imported.output).output
