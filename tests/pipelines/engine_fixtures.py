"""Pipelines the engine's fast tests (crates/engine/tests/dag.rs) run on a
scripted backend. Compiled by the real kfp SDK into crates/engine/tests/fixtures
(`scripts/compile-fixtures`); the pipeline suite checks they are up to date.
Container components without outputs: the scripted backend runs nothing."""
from kfp import dsl
from kfp import kubernetes

IMAGE = "debian:bookworm-slim"


@dsl.container_component
def prepare():
    return dsl.ContainerSpec(image=IMAGE, command=["echo", "prepare"])


@dsl.container_component
def train():
    return dsl.ContainerSpec(image=IMAGE, command=["echo", "train"])


@dsl.container_component
def evaluate():
    return dsl.ContainerSpec(image=IMAGE, command=["echo", "evaluate"])


@dsl.container_component
def report():
    return dsl.ContainerSpec(image=IMAGE, command=["echo", "report"])


@dsl.container_component
def cleanup():
    return dsl.ContainerSpec(image=IMAGE, command=["echo", "cleanup"])


@dsl.pipeline(name="fx-dag")
def fx_dag() -> None:
    """prepare -> train -> evaluate; report on its own; cleanup after train
    even when it fails."""
    p = prepare()
    t = train().after(p)
    evaluate().after(t)
    report()
    cleanup().after(t).ignore_upstream_failure()


@dsl.pipeline(name="fx-retry")
def fx_retry() -> None:
    """train retried 3 times, 60 s then 120 s then 240 s apart; evaluate after it."""
    t = train().set_retry(num_retries=3, backoff_duration="60s", backoff_factor=2.0,
                          backoff_max_duration="3600s")
    evaluate().after(t)


@dsl.pipeline(name="fx-exit")
def fx_exit() -> None:
    """cleanup is the exit handler of prepare -> train."""
    final = cleanup()
    with dsl.ExitHandler(final):
        p = prepare()
        train().after(p)


_training_job = None


def _component():
    global _training_job
    if _training_job is None:
        import pathlib
        from kfp import components
        repo = pathlib.Path(__file__).resolve().parents[2]
        _training_job = components.load_component_from_file(str(repo / "components/training-job/component.yaml"))
    return _training_job


@dsl.pipeline(name="fx-training")
def fx_training() -> None:
    """The training-job component between two ordinary steps."""
    p = prepare()
    t = _component()(name="fx", backend="local", command=["python3", "train.py"], nodes=2,
                     output="/tmp/fx-training-out")
    t.after(p)
    evaluate().after(t)


@dsl.container_component
def shard(i: int):
    return dsl.ContainerSpec(image=IMAGE, command=["echo", "shard"], args=[i])


@dsl.pipeline(name="fx-control")
def fx_control(mode: str = "full") -> None:
    """A condition on a pipeline parameter and a loop of 4 shards, 2 at a time."""
    with dsl.If(mode == "full"):
        with dsl.ParallelFor([1, 2, 3, 4], parallelism=2) as i:
            shard(i=i)
    with dsl.Else():
        report()


@dsl.pipeline(name="fx-volume")
def fx_volume() -> None:
    """kfp-kubernetes' CreatePVC, a step mounting the claim by its output, and
    DeletePVC after it: the driver's own tasks."""
    pvc = kubernetes.CreatePVC(pvc_name_suffix="-my-pvc", access_modes=["ReadWriteOnce"],
                               size="5Gi", storage_class_name="standard")
    t = train()
    kubernetes.mount_pvc(t, pvc_name=pvc.outputs["name"], mount_path="/data")
    kubernetes.DeletePVC(pvc_name=pvc.outputs["name"]).after(t)
