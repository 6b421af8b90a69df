"""The training-job component: a pipeline step that runs a Switchyard TrainingJob.

Compile (writes component.yaml beside this file; CI checks it is up to date):
    python components/training-job/component.py
Use in a pipeline:
    training_job = kfp.components.load_component_from_file("components/training-job/component.yaml")
    t = training_job(name="digits", backend=runtime, source_dir="examples/ddp-digits", entry_point="train.py", nodes=2)
    t.outputs["model"], t.outputs["job_name"], t.outputs["state"], t.outputs["backend_used"]

`backend="auto"` lets Switchyard place the job (by `placement`: candidates,
objective, maxCostUSD; see docs/training-jobs.md); `backend_used` says where.

`kubernetes` holds what only the kubernetes backend reads: {"api": "TrainJob"}
submits a Kubeflow Trainer v2 TrainJob (runtime {"runtime": "torch-distributed"}
by default) instead of a PyTorchJob; "auto" (default) asks the cluster.

`contract` is the SageMaker contract the script is written for: "toolkit" (the
classic training toolkit's) or "modeltrainer" (the v3 SDK's ModelTrainer; then
`requirements` may name a requirements file in source_dir).

The step runs `switchyard job run-component`, which reads the inputs below through
the KFP executor protocol, submits the job to `backend`, follows it, and copies the
model (rank 0's SM_MODEL_DIR) into the `model` artifact.
"""
import pathlib

from kfp import compiler, dsl
from kfp.dsl import Model, Output, OutputPath

IMAGE = "switchyard.local/switchyard:dev"


@dsl.container_component
def training_job(
    name: str,
    model: Output[Model],
    job_name: OutputPath(str),
    job_id: OutputPath(str),
    state: OutputPath(str),
    backend_used: OutputPath(str),
    backend: str = "local",
    image: str = "",
    source_dir: str = "",
    entry_point: str = "",
    command: list = [],
    nodes: int = 1,
    procs_per_node: int = 1,
    resources: dict = {},
    instance_type: str = "",
    hyperparameters: dict = {},
    channels: dict = {},
    env: dict = {},
    output: str = "",
    checkpoint: str = "",
    restart_policy: str = "Never",
    backoff_limit: int = 3,
    max_runtime_seconds: int = 0,
    metrics: list = [],
    role_arn: str = "",
    contract: str = "toolkit",
    requirements: str = "",
    placement: dict = {},
    kubernetes: dict = {},
):
    return dsl.ContainerSpec(
        image=IMAGE,
        command=["switchyard", "job", "run-component"],
        args=["--executor-input", dsl.PIPELINE_TASK_EXECUTOR_INPUT_PLACEHOLDER],
    )


if __name__ == "__main__":
    import sys
    out = sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).with_name("component.yaml")
    compiler.Compiler().compile(training_job, str(out))
    print(out)
