"""Shapes where the answer is what a KFP cluster gives: placeholders passed as
parameter values, numbers from loop items into string inputs, workspaces,
artifacts written at a custom path, pipeline inputs left without a value,
dsl.TaskConfig passthroughs and a final status's resource name."""
from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from common import BASE


@dsl.component(base_image=BASE)
def show(job_name: str, resource: str, job_id: str, task: str, task_id: str, root: str,
         created: str, scheduled: str, inside: str) -> dict:
    return {"job_name": job_name, "resource": resource, "job_id": job_id, "task": task,
            "task_id": task_id, "root": root, "created": created, "scheduled": scheduled,
            "inside": inside}


@dsl.pipeline(name="placeholder-values")
def placeholder_values() -> dict:
    return show(
        job_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        resource=dsl.PIPELINE_JOB_RESOURCE_NAME_PLACEHOLDER,
        job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        task=dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
        task_id=dsl.PIPELINE_TASK_ID_PLACEHOLDER,
        root=dsl.PIPELINE_ROOT_PLACEHOLDER,
        created=dsl.PIPELINE_JOB_CREATE_TIME_UTC_PLACEHOLDER,
        scheduled=dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER,
        # Inside a longer string KFP's driver leaves a run placeholder as it is.
        inside=f"job {dsl.PIPELINE_JOB_NAME_PLACEHOLDER}",
    ).output


@dsl.component(base_image=BASE)
def cat(a: str, b: str) -> str:
    return a + b


@dsl.component(base_image=BASE)
def join(parts: List[str]) -> str:
    return "|".join(parts)


@dsl.pipeline(name="loop-numbers")
def loop_numbers(records: list = [{"a": 1, "b": 10}, {"a": 2.5, "b": {"z": 1, "k": [1.0, "<"]}}]) -> str:
    with dsl.ParallelFor(records, parallelism=1) as rec:
        c = cat(a=rec.a, b=rec.b)
    return join(parts=dsl.Collected(c.output)).output


@dsl.component(base_image=BASE)
def write_shared(workspace: str, text: str) -> str:
    import os
    path = os.path.join(workspace, "shared", "note.txt")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


@dsl.component(base_image=BASE)
def read_shared(workspace: str, written: str) -> str:
    import os
    with open(os.path.join(workspace, "shared", "note.txt")) as f:
        return f.read() + ("" if written.startswith(workspace) else " (written elsewhere)")


@dsl.pipeline(name="workspace", pipeline_config=dsl.PipelineConfig(workspace=dsl.WorkspaceConfig(size="1Gi")))
def workspace_pipeline(text: str = "hello") -> str:
    w = write_shared(workspace=dsl.WORKSPACE_PATH_PLACEHOLDER, text=text)
    return read_shared(workspace=dsl.WORKSPACE_PATH_PLACEHOLDER, written=w.output).output


@dsl.component(base_image=BASE)
def produce_elsewhere(text: str, data: Output[Dataset]):
    import os
    import tempfile
    data.set_path(os.path.join(tempfile.mkdtemp(prefix="custom-path-"), "data.txt"))
    with open(data.path, "w") as f:
        f.write(text)


@dsl.component(base_image=BASE)
def consume(data: Input[Dataset]) -> str:
    with open(data.path) as f:
        return f.read()


@dsl.pipeline(name="custom-path")
def custom_path(text: str = "written at a custom path") -> str:
    p = produce_elsewhere(text=text)
    return consume(data=p.outputs["data"]).output


@dsl.pipeline(name="input-artifact")
def input_artifact(data: Input[Dataset]) -> str:
    return consume(data=data).output


@dsl.component(base_image=BASE)
def square(x: int) -> int:
    return x * x


@dsl.pipeline(name="unhonoured")
def unhonoured() -> None:
    """Asks for what the local backend cannot give: each is said once."""
    from kfp import kubernetes
    with dsl.ParallelFor([1, 2, 3]) as x:
        t = square(x=x).set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1).set_cpu_limit("1").set_memory_limit("1G")
        kubernetes.add_node_selector(t, label_key="pool", label_value="gpu")


@dsl.component(base_image=BASE, task_config_passthroughs=[
    dsl.TaskConfigField.RESOURCES,
    dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.ENV, apply_to_task=True),
])
def launcher(task_config: dsl.TaskConfig) -> dict:
    import os
    return {"resources": task_config.resources, "env": task_config.env,
            "node_selector": task_config.node_selector, "volumes": task_config.volumes,
            "own_env": os.environ.get("ENV1", "")}


@dsl.pipeline(name="task-config")
def task_config_pipeline() -> dict:
    """What a step that launches a training job is handed: its own resources
    (passed through only) and environment (passed through and applied)."""
    t = launcher()
    t.set_cpu_limit("500m").set_memory_limit("1536M").set_cpu_request("100m")
    t.set_env_variable("ENV1", "val1")
    return t.output


@dsl.component(base_image=BASE)
def fails():
    raise SystemExit(1)


@dsl.component(base_image=BASE)
def final_status(status: dsl.PipelineTaskFinalStatus) -> str:
    return status.pipeline_job_resource_name


@dsl.pipeline(name="resource-name")
def resource_name():
    """The exit task reads the run's resource name (KFP: the workflow name)."""
    handler = final_status()
    with dsl.ExitHandler(handler):
        fails()
