"""Small components shared by the test pipelines."""
from kfp import dsl

BASE = "python:3.11"


@dsl.component(base_image=BASE)
def echo_int(x: int) -> int:
    return x


@dsl.component(base_image=BASE)
def echo_str(s: str) -> str:
    return s
