"""Parameters of every type, defaults, overrides and pipeline outputs."""
from typing import Dict, List, NamedTuple

from kfp import dsl

from common import BASE, echo_int


@dsl.component(base_image=BASE)
def describe(i: int, f: float, s: str, b: bool, l: list, d: dict) -> str:
    import json
    return json.dumps({"i": [i, type(i).__name__], "f": [f, type(f).__name__], "s": s,
                       "b": [b, type(b).__name__], "l": l, "d": d}, sort_keys=True)


@dsl.component(base_image=BASE)
def split(i: int, s: str) -> NamedTuple("Outputs", [("doubled", int), ("upper", str), ("ratio", float)]):
    from collections import namedtuple
    return namedtuple("Outputs", ["doubled", "upper", "ratio"])(i * 2, s.upper(), i / 4)


@dsl.component(base_image=BASE)
def typed_list(items: List[int]) -> List[int]:
    return [x * 10 for x in items]


@dsl.component(base_image=BASE)
def typed_dict(d: Dict[str, int]) -> Dict[str, int]:
    return {k: v + 1 for k, v in d.items()}


@dsl.pipeline(name="params-all-types")
def params_all_types(
    i: int = 3,
    f: float = 1.5,
    s: str = "hello",
    b: bool = True,
    l: list = [1, "two"],
    d: dict = {"k": "v"},
) -> NamedTuple("Out", [("summary", str), ("doubled", int), ("upper", str), ("ratio", float), ("tens", List[int]), ("plus", Dict[str, int])]):
    t = describe(i=i, f=f, s=s, b=b, l=l, d=d)
    n = split(i=i, s=s)
    tl = typed_list(items=[1, 2, 3])
    td = typed_dict(d={"a": 1})
    Out = NamedTuple("Out", [("summary", str), ("doubled", int), ("upper", str), ("ratio", float), ("tens", List[int]), ("plus", Dict[str, int])])
    return Out(summary=t.output, doubled=n.outputs["doubled"], upper=n.outputs["upper"], ratio=n.outputs["ratio"],
               tens=tl.output, plus=td.output)


@dsl.pipeline(name="required-param")
def required_param(epochs: int, name: str = "x") -> int:
    return echo_int(x=epochs).output
