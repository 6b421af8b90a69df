"""Benchmark pipelines (compiled by bench.py with the real kfp SDK)."""
from kfp import dsl


@dsl.component(base_image="python:3.11")
def step(x: int) -> int:
    return x + 1


@dsl.pipeline(name="chain10")
def chain10(start: int = 0) -> int:
    t = step(x=start)
    for _ in range(9):
        t = step(x=t.output)
    return t.output


@dsl.pipeline(name="fanout16")
def fanout16() -> None:
    for i in range(16):
        step(x=i)


@dsl.pipeline(name="fanout16-loop")
def fanout16_loop() -> None:
    with dsl.ParallelFor(list(range(16)), parallelism=16) as i:
        step(x=i)


@dsl.container_component
def true_task():
    return dsl.ContainerSpec(image="alpine:3.19", command=["true"])


@dsl.pipeline(name="chain200")
def chain200() -> None:
    t = true_task()
    for _ in range(199):
        t = true_task().after(t)
