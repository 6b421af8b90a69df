"""The AWS hybrid-training design in KFP v2, runnable end to end on one machine.

A `training_runtime` parameter (local | kubernetes | sagemaker | auto) is checked by a
first step; dsl.If branches then run the same TrainingJob — the DDP digits script
in examples/ddp-digits — through Switchyard's training-job component on the
chosen backend, and a last step reads the model, whichever branch made it.

Compile:  python examples/hybrid/pipeline.py     (writes examples/hybrid/pipeline.yaml)
Run:      switchyard run examples/hybrid/pipeline.yaml -p training_runtime=local
          (add -p contract=modeltrainer to give the script the v3 SDK's ModelTrainer contract;
          -p 'kubernetes={"api": "TrainJob"}' to train on Kubernetes as a Kubeflow Trainer TrainJob)
(relative paths such as source_dir are taken from where `switchyard run` starts;
run it from the repository root, with SWITCHYARD_TRAINING_PYTHON naming a Python
that has PyTorch and scikit-learn.)
"""
import pathlib

from kfp import compiler, components, dsl
from kfp.dsl import Input, Model

HERE = pathlib.Path(__file__).resolve().parent
training_job = components.load_component_from_file(str(HERE.parent.parent / "components/training-job/component.yaml"))


@dsl.component(base_image="python:3.11")
def check_runtime(training_runtime: str) -> str:
    runtime = training_runtime.strip().lower()
    if runtime not in ("local", "kubernetes", "sagemaker", "auto"):
        raise ValueError(f"training_runtime must be local, kubernetes, sagemaker or auto, not {training_runtime!r}")
    print(f"training on {runtime}")
    return runtime


@dsl.component(base_image="python:3.11")
def report(model: Input[Model], min_accuracy: float) -> float:
    import json
    import os
    metrics = json.load(open(os.path.join(model.path, "metrics.json")))
    acc = metrics["test_accuracy"]
    print(f"model from job {model.metadata.get('job_id')} on {model.metadata.get('backend')}: test accuracy {acc:.4f}")
    if acc < min_accuracy:
        raise SystemExit(f"accuracy {acc:.4f} is below {min_accuracy}")
    return acc


@dsl.pipeline(name="hybrid-training", description="Choose where to train at run time: this machine, Kubernetes or SageMaker.")
def hybrid_training(training_runtime: str = "local", epochs: int = 8, nodes: int = 2,
                    source_dir: str = "examples/ddp-digits", image: str = "pytorch/pytorch:2.5.1-cpu",
                    role_arn: str = "", min_accuracy: float = 0.9, contract: str = "toolkit",
                    kubernetes: dict = {}) -> float:
    check = check_runtime(training_runtime=training_runtime)
    common = dict(name="digits-ddp", image=image, source_dir=source_dir, entry_point="train.py", nodes=nodes,
                  contract=contract,
                  hyperparameters={"epochs": epochs, "lr": 0.1}, resources={"cpu": 0.5},
                  restart_policy="ExitCode", max_runtime_seconds=1800,
                  metrics=[{"name": "test_accuracy", "regex": "test_accuracy=([0-9.]+)"}])
    with dsl.If(check.output == "local"):
        local = training_job(backend="local", **common).set_caching_options(False)
    with dsl.Elif(check.output == "kubernetes"):
        # kubernetes={"api": "TrainJob"}: Kubeflow Trainer's TrainJob instead of a PyTorchJob.
        k8s = training_job(backend="kubernetes", kubernetes=kubernetes, **common).set_caching_options(False)
    with dsl.Elif(check.output == "sagemaker"):
        sm = training_job(backend="sagemaker", role_arn=role_arn, instance_type="ml.c5.xlarge", **common).set_caching_options(False)
    with dsl.Else():
        # Switchyard decides: the backend that can start it soonest.
        auto = training_job(backend="auto", role_arn=role_arn, instance_type="ml.c5.xlarge", **common).set_caching_options(False)
    model = dsl.OneOf(local.outputs["model"], k8s.outputs["model"], sm.outputs["model"], auto.outputs["model"])
    return report(model=model, min_accuracy=min_accuracy).output


if __name__ == "__main__":
    import sys
    out = sys.argv[1] if len(sys.argv) > 1 else HERE / "pipeline.yaml"
    compiler.Compiler().compile(hybrid_training, str(out))
    print(out)
