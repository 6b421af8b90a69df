"""Pipelines that try to make the server serve or run what it must not."""
from kfp import dsl
from kfp.dsl import Artifact, Output


@dsl.container_component
def links_out(folder: Output[Artifact], passwd: Output[Artifact]):
    """A folder artifact holding links out of the pipeline root (one to /etc, one
    back to itself), and an artifact that is itself a link to /etc/passwd."""
    return dsl.ContainerSpec(
        image="alpine:3.19",
        command=["sh", "-c",
                 'mkdir -p "$0" "$(dirname "$1")" && echo hello > "$0/own.txt" && ln -s /etc "$0/etc" '
                 '&& ln -s "$0" "$0/loop" && ln -s /etc/passwd "$1"'],
        args=[folder.path, passwd.path],
    )


@dsl.pipeline(name="links-out")
def links_out_pipeline():
    links_out()


@dsl.container_component
def quick(msg: str):
    return dsl.ContainerSpec(image="alpine:3.19", command=["echo"], args=[msg])


@dsl.pipeline(name="quick")
def quick_pipeline(msg: str = "hi"):
    quick(msg=msg)


def _wrap(child, name):
    @dsl.pipeline(name=name)
    def level():
        child()
    return level


def _nested(depth, stem):
    p = quick_pipeline
    for i in range(depth):
        p = _wrap(p, f"{stem}-{i}")
    return p


# Pipelines used as components, nested: 60 levels run (task keys of ~1 KB,
# past a file name's 255 bytes); 70 are refused before anything is recorded.
nested_60 = _nested(60, "nested-60")
nested_70 = _nested(70, "nested-70")


@dsl.container_component
def nap(seconds: str):
    return dsl.ContainerSpec(image="alpine:3.19", command=["sleep"], args=[seconds])


@dsl.pipeline(name="nap")
def nap_pipeline(seconds: str = "0.5"):
    """One short task: a terminate sent near its end races the run's finish."""
    nap(seconds=seconds)


@dsl.container_component
def loud(lines: str):
    return dsl.ContainerSpec(image="alpine:3.19", command=["seq", "1"], args=[lines])


@dsl.pipeline(name="loud")
def loud_pipeline(lines: str = "3000000"):
    """One task printing millions of lines (about 7 bytes each)."""
    loud(lines=lines)


@dsl.container_component
def tally(path: str):
    return dsl.ContainerSpec(image="alpine:3.19", command=["sh", "-c", 'echo ran >> "$0"; sleep 0.5'], args=[path])


@dsl.pipeline(name="tally")
def tally_pipeline(path: str):
    """Appends a line to `path` each time its one task runs."""
    tally(path=path).set_caching_options(False)


@dsl.container_component
def huge_file(out: dsl.Output[dsl.Artifact], gib: str):
    return dsl.ContainerSpec(image="alpine:3.19", command=["sh", "-c", 'truncate -s "$1G" "$0"'], args=[out.path, gib])


@dsl.pipeline(name="huge-artifact")
def huge_artifact_pipeline(gib: str = "1"):
    """One task whose output artifact is a (sparse) file of `gib` GiB."""
    huge_file(gib=gib)


@dsl.container_component
def tally_slow(path: str, seconds: str):
    return dsl.ContainerSpec(image="alpine:3.19", command=["sh", "-c", 'echo ran >> "$0"; sleep "$1"; echo done >> "$0"'],
                             args=[path, seconds])


@dsl.pipeline(name="tally-slow")
def tally_slow_pipeline(path: str, seconds: str = "1"):
    """Appends `ran` to `path` when its one task starts and `done` when it ends."""
    tally_slow(path=path, seconds=seconds).set_caching_options(False)


@dsl.container_component
def fill_disk(path: str, mib: int):
    """Writes `mib` MiB to `path` (to fill the data folder's file system), unless path is "none"."""
    return dsl.ContainerSpec(image="alpine:3.19", command=["sh", "-c",
                             'if [ "$0" != none ]; then dd if=/dev/zero of="$0" bs=1M count="$1" 2>&1; fi; echo filled'],
                             args=[path, mib])


@dsl.pipeline(name="fill-disk")
def fill_disk_pipeline(path: str = "none", mib: int = 40):
    f = fill_disk(path=path, mib=mib).set_caching_options(False)
    quick(msg="after the fill").after(f)
