"""Control flow: conditions, OneOf, loops, Collected, exit handlers, nesting."""
from typing import Dict, List

from kfp import dsl
from kfp.dsl import PipelineTaskFinalStatus

from behaviour import long_sleep
from common import BASE, echo_int, echo_str


@dsl.component(base_image=BASE)
def flip(side: str) -> str:
    return side


@dsl.component(base_image=BASE)
def number(n: int) -> int:
    return n


@dsl.component(base_image=BASE)
def make_list(n: int) -> List[int]:
    return list(range(n))


@dsl.component(base_image=BASE)
def make_records() -> List[Dict[str, int]]:
    return [{"a": 1, "b": 10}, {"a": 2, "b": 20}]


@dsl.component(base_image=BASE)
def add(a: int, b: int) -> int:
    return a + b


@dsl.component(base_image=BASE)
def total(values: List[int]) -> int:
    return sum(values)


@dsl.component(base_image=BASE)
def count(values: list) -> int:
    return len(values)


@dsl.component(base_image=BASE)
def fail(msg: str):
    import sys
    print("about to fail:", msg)
    sys.exit(3)


@dsl.component(base_image=BASE)
def report(status: PipelineTaskFinalStatus) -> str:
    print("final state", status.state, "task", status.pipeline_task_name, "error", status.error_message)
    return status.state


@dsl.component(base_image=BASE)
def make_summary(a: int, b: int, c: int, d: int, e: int) -> Dict[str, int]:
    return {"raw": a, "param": b, "output": c, "struct": d, "output_struct": e}


@dsl.pipeline(name="conditions")
def conditions(side: str = "heads", n: int = 7) -> str:
    f = flip(side=side)
    num = number(n=n)
    with dsl.If(f.output == "heads"):
        a = echo_str(s="took-heads")
        with dsl.If(num.output > 5):
            echo_str(s="nested-big")
        with dsl.Else():
            echo_str(s="nested-small")
    with dsl.Elif(num.output > 5):
        b = echo_str(s="tails-big")
    with dsl.Else():
        c = echo_str(s="tails-small")
    return dsl.OneOf(a.output, b.output, c.output)


@dsl.pipeline(name="loops")
def loops(raw_n: int = 3, items: list = [5, 6], records: List[Dict[str, int]] = [{"a": 1, "b": 2}, {"a": 3, "b": 4}]) -> Dict[str, int]:
    with dsl.ParallelFor([1, 2, 3], parallelism=2) as x:
        r1 = echo_int(x=x)
    raw_total = total(values=dsl.Collected(r1.output))

    with dsl.ParallelFor(items) as it:
        r2 = echo_int(x=it)
    param_total = total(values=dsl.Collected(r2.output)).set_display_name("param-total")

    ml = make_list(n=raw_n)
    with dsl.ParallelFor(ml.output) as it2:
        r3 = echo_int(x=it2)
    out_total = total(values=dsl.Collected(r3.output))

    with dsl.ParallelFor(records) as rec:
        r4 = add(a=rec.a, b=rec.b)
    struct_total = total(values=dsl.Collected(r4.output))

    mr = make_records()
    with dsl.ParallelFor(mr.output) as rec2:
        r5 = add(a=rec2.a, b=rec2.b)
    out_struct_total = total(values=dsl.Collected(r5.output))

    # A body that reads the whole list too (it is then passed to each iteration).
    with dsl.ParallelFor(items) as it3:
        whole = count(values=items).set_display_name("whole-list")
        add(a=it3, b=whole.output).set_display_name("item-plus-whole")

    with dsl.ParallelFor([10, 20]) as outer:
        with dsl.ParallelFor([1, 2]) as inner:
            add(a=outer, b=inner)

    return make_summary(a=raw_total.output, b=param_total.output, c=out_total.output,
                        d=struct_total.output, e=out_struct_total.output).output


@dsl.pipeline(name="exit-handler")
def exit_handler(should_fail: bool = True) -> None:
    final = report()
    with dsl.ExitHandler(final):
        first = echo_str(s="body")
        with dsl.If(should_fail == True):
            fail(msg="boom").after(first)


@dsl.pipeline(name="ignore-upstream")
def ignore_upstream() -> None:
    bad = fail(msg="upstream")
    echo_str(s="cleanup").after(bad).ignore_upstream_failure()
    echo_str(s="never").after(bad)


@dsl.pipeline(name="inner-pipeline")
def inner_pipeline(x: int = 1) -> int:
    a = add(a=x, b=100)
    return add(a=a.output, b=1000).output


@dsl.pipeline(name="outer-pipeline")
def outer_pipeline(x: int = 5) -> int:
    first = inner_pipeline(x=x)
    second = inner_pipeline(x=first.output)
    return second.output


@dsl.pipeline(name="exit-on-cancel")
def exit_on_cancel(pid_file: str) -> None:
    final = report()
    with dsl.ExitHandler(final):
        long_sleep(pid_file=pid_file).set_caching_options(False)
