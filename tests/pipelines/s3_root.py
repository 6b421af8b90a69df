"""Artifacts under an s3:// pipeline root: files and folders, Python and
container components, set_path, and an importer of an object already in S3."""
from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from common import BASE


@dsl.component(base_image=BASE)
def make_data(rows: int, data: Output[Dataset], folder: Output[Artifact]):
    import os
    with open(data.path, "w") as f:
        f.write("".join(f"{i}\n" for i in range(rows)))
    os.makedirs(folder.path)
    for name in ("a.txt", "b.txt"):
        with open(os.path.join(folder.path, name), "w") as f:
            f.write(name)
    data.metadata["rows"] = rows


@dsl.component(base_image=BASE)
def train(data: Input[Dataset], folder: Input[Artifact], tag: str, model: Output[Model]) -> str:
    import os
    rows = open(data.path).read().split()
    files = sorted(os.listdir(folder.path))
    with open(model.path, "w") as f:
        f.write(f"{tag}:{len(rows)}")
    # The component sees S3 URIs, as on a KFP cluster; only the paths are local.
    return "|".join([data.uri, model.uri, ",".join(files), str(data.metadata.get("rows"))])


@dsl.container_component
def copy(src: Input[Model], dst: Output[Model]):
    return dsl.ContainerSpec(
        image=BASE,
        command=["sh", "-c", 'mkdir -p "$(dirname "$1")" && cp "$0" "$1" && echo "$2" >> "$1"'],
        args=[src.path, dst.path, dst.uri],
    )


@dsl.component(base_image=BASE)
def read(model: Input[Model]) -> str:
    return open(model.path).read()


@dsl.component(base_image=BASE)
def elsewhere(out: Output[Model]):
    # Written at a path of its own choosing; its URI follows the path.
    path = out.path + "-custom"
    with open(path, "w") as f:
        f.write("moved")
    out.path = path


@dsl.pipeline(name="s3-root")
def s3_root(rows: int = 3, tag: str = "v1") -> str:
    made = make_data(rows=rows)
    trained = train(data=made.outputs["data"], folder=made.outputs["folder"], tag=tag)
    copied = copy(src=trained.outputs["model"])
    moved = elsewhere()
    read(model=moved.outputs["out"]).set_caching_options(False)
    return read(model=copied.outputs["dst"]).output


@dsl.pipeline(name="s3-import")
def s3_import(uri: str = "s3://inputs/raw/data.txt") -> str:
    imported = dsl.importer(artifact_uri=uri, artifact_class=Model, reimport=False)
    return read(model=imported.output).output


@dsl.pipeline(name="s3-compiled-root", pipeline_root="s3://art/compiled")
def s3_compiled_root() -> str:
    return read(model=elsewhere().outputs["out"]).output
