"""Retries, caching, failures, concurrency, resume and cancel."""
from kfp import dsl

from common import BASE, echo_str


@dsl.component(base_image=BASE)
def flaky(counter: str, fail_times: int) -> int:
    import os
    n = int(open(counter).read()) if os.path.exists(counter) else 0
    n += 1
    with open(counter, "w") as f:
        f.write(str(n))
    if n <= fail_times:
        raise RuntimeError(f"attempt {n} fails on purpose")
    return n


@dsl.pipeline(name="retry")
def retry(counter: str, fail_times: int = 2) -> int:
    return flaky(counter=counter, fail_times=fail_times).set_retry(num_retries=2, backoff_duration="0s").set_caching_options(False).output


@dsl.component(base_image=BASE)
def stamp(path: str, tag: str) -> str:
    with open(path, "a") as f:
        f.write(tag + "\n")
    return tag


@dsl.pipeline(name="caching")
def caching(path: str, tag: str = "a") -> str:
    cached = stamp(path=path, tag=tag)
    stamp(path=path, tag="uncached-" + "x").set_caching_options(False).after(cached)
    return cached.output


@dsl.component(base_image=BASE)
def explode(msg: str):
    with open("/dev/stderr", "w") as f:
        f.write("explode says: " + msg + "\n")
    raise SystemExit(4)


@dsl.pipeline(name="failing-chain")
def failing_chain() -> None:
    first = echo_str(s="first")
    bad = explode(msg="kaboom").after(first)
    echo_str(s="after-bad").after(bad)
    echo_str(s="independent")


@dsl.component(base_image=BASE)
def sleeper(i: int, log_dir: str, seconds: float) -> int:
    import os
    import time
    start = time.time()
    time.sleep(seconds)
    with open(os.path.join(log_dir, f"{i}.txt"), "w") as f:
        f.write(f"{start} {time.time()}")
    return i


@dsl.pipeline(name="fan-out")
def fan_out(log_dir: str, seconds: float = 0.5) -> None:
    with dsl.ParallelFor([0, 1, 2, 3, 4, 5]) as i:
        sleeper(i=i, log_dir=log_dir, seconds=seconds).set_caching_options(False)


@dsl.component(base_image=BASE)
def wait_for(flag: str, counter: str) -> str:
    import os
    import time
    with open(counter, "a") as f:
        f.write("b\n")
    deadline = time.time() + 120
    while not os.path.exists(flag):
        if time.time() > deadline:
            raise SystemExit("flag never appeared")
        time.sleep(0.1)
    return "released"


@dsl.pipeline(name="resumable")
def resumable(counter: str, flag: str) -> str:
    a = stamp(path=counter, tag="a").set_caching_options(False)
    b = wait_for(flag=flag, counter=counter).after(a).set_caching_options(False)
    c = stamp(path=counter, tag="c").after(b).set_caching_options(False)
    return c.output


@dsl.container_component
def long_sleep(pid_file: str):
    return dsl.ContainerSpec(image="alpine:3.19", command=["sh", "-c", 'echo $$ > "$0"; exec sleep 300'], args=[pid_file])


@dsl.pipeline(name="cancelable")
def cancelable(pid_file: str) -> None:
    long_sleep(pid_file=pid_file).set_caching_options(False)


@dsl.pipeline(name="limited-fan-out")
def limited_fan_out(log_dir: str, seconds: float = 0.5) -> None:
    with dsl.ParallelFor([0, 1, 2, 3, 4, 5], parallelism=2) as i:
        sleeper(i=i, log_dir=log_dir, seconds=seconds).set_caching_options(False)


@dsl.component(base_image=BASE)
def where_am_i() -> str:
    import sys
    return sys.executable


@dsl.component(base_image=BASE, packages_to_install=["six==1.16.0"])
def with_package() -> str:
    import sys

    import six
    return f"{six.__version__} {sys.executable}"


@dsl.pipeline(name="environments")
def environments() -> None:
    where_am_i().set_caching_options(False)
    with_package().set_caching_options(False)


@dsl.container_component
def record_run(path: str):
    return dsl.ContainerSpec(image="alpine:3.19", command=["sh", "-c", 'echo "$1" >> "$0"'],
                             args=[path, dsl.PIPELINE_JOB_ID_PLACEHOLDER])


@dsl.pipeline(name="record-run")
def record_run_pipeline(path: str) -> None:
    record_run(path=path).set_caching_options(False)


@dsl.container_component
def long_tree(pid_file: str):
    """A task whose work runs in a child of its shell: the grandchild's PID goes to pid_file."""
    return dsl.ContainerSpec(image="alpine:3.19", command=["sh", "-c", 'sleep 300 & echo $! > "$0"; wait'],
                             args=[pid_file])


@dsl.pipeline(name="cancelable-tree")
def cancelable_tree(pid_file: str) -> None:
    long_tree(pid_file=pid_file).set_caching_options(False)
