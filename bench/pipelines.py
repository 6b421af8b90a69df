"""Benchmark pipelines (compiled by bench.py with the real kfp SDK)."""
from kfp import dsl


@dsl.component(base_image="python:3.11")
def step(x: int) -> int:
    return x + 1


def _chain(n, doc=None):
    """A pipeline of `n` steps, each taking the previous one's output."""
    @dsl.pipeline(name=f"chain{n}", description=doc)
    def chain(start: int = 0) -> int:
        t = step(x=start)
        for _ in range(n - 1):
            t = step(x=t.output)
        return t.output
    return chain


chain10 = _chain(10)
# With chain10, the cost of one more step (the one-time start cancels out).
chain40 = _chain(40)


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


@dsl.container_component
def make_items(n: int, items: dsl.OutputPath(list)):
    """The list 0..n as an output parameter (the local backend runs it on the host)."""
    return dsl.ContainerSpec(image="python:3.11", command=["python3", "-c",
                             "import json, os, sys; os.makedirs(os.path.dirname(sys.argv[2]), exist_ok=True); "
                             "open(sys.argv[2], 'w').write(json.dumps(list(range(int(sys.argv[1])))))"],
                             args=[n, items])


@dsl.pipeline(name="loop-n")
def loop_n(n: int = 1) -> None:
    """A ParallelFor over n items made by a step (a list that large does not fit a command line)."""
    made = make_items(n=n).set_caching_options(False)
    with dsl.ParallelFor(made.outputs["items"], parallelism=16):
        true_task().set_caching_options(False)


@dsl.component(base_image="python:3.11")
def parent_rss_kib() -> int:
    """The resident memory of the process that started this step (the warm
    interpreter, when the step is a fork of it)."""
    import os
    for line in open(f"/proc/{os.getppid()}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dsl.pipeline(name="rss")
def rss() -> int:
    return parent_rss_kib().output
