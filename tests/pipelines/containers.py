"""Container components: placeholders, Concat, IfPresent, output files, artifacts."""
from kfp import dsl
from kfp.dsl import Dataset, Input, Output


@dsl.container_component
def show_args(msg: str, n: int, out: dsl.OutputPath(str), opt: str = None):
    return dsl.ContainerSpec(
        image="alpine:3.19",
        command=["sh", "-c", 'printf "%s|" "$@" > "$0"; echo wrote "$0"'],
        args=[
            out,
            dsl.ConcatPlaceholder(["msg=", msg, ",n=", n]),
            dsl.IfPresentPlaceholder(input_name="opt", then=["--opt", opt], else_=["--no-opt"]),
            dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
            dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            dsl.PIPELINE_ROOT_PLACEHOLDER,
        ],
    )


@dsl.container_component
def write_dataset(text: str, data: Output[Dataset]):
    return dsl.ContainerSpec(
        image="alpine:3.19",
        command=["sh", "-c", 'mkdir -p "$(dirname "$1")" && printf "%s" "$0" > "$1"'],
        args=[text, data.path],
    )


@dsl.container_component
def read_dataset(data: Input[Dataset], size: dsl.OutputPath(int), uri: dsl.OutputPath(str)):
    return dsl.ContainerSpec(
        image="alpine:3.19",
        command=["sh", "-c", 'wc -c < "$0" | tr -d " " > "$1"; printf "%s" "$2" > "$3"'],
        args=[data.path, size, data.uri, uri],
    )


@dsl.container_component
def executor_input(x: int, out: dsl.OutputPath(str)):
    return dsl.ContainerSpec(
        image="alpine:3.19",
        command=["sh", "-c", 'printf "%s" "$0" > "$1"'],
        args=[dsl.PIPELINE_TASK_EXECUTOR_INPUT_PLACEHOLDER, out],
    )


@dsl.pipeline(name="container-placeholders")
def container_placeholders(msg: str = "hi", n: int = 7) -> str:
    with_opt = show_args(msg=msg, n=n, opt="given").set_caching_options(False)
    without = show_args(msg=msg, n=n).set_caching_options(False)
    ds = write_dataset(text="abcdef")
    rd = read_dataset(data=ds.outputs["data"])
    ei = executor_input(x=n)
    return without.outputs["out"]
