"""A pipeline for the server that deploy/server.yaml runs inside the local test
cluster, with its steps as Pods (SWITCHYARD_TASK_BACKEND=kubernetes): the server
runs the training-job step itself and makes a PyTorchJob for the operator of
deploy/operator.yaml; a Pod step reads the model the training pods wrote to the
shared claim."""
import pathlib

from kfp import components, dsl
from kfp.dsl import Input, Model, OutputPath

REPO = pathlib.Path(__file__).resolve().parents[2]
training_job = components.load_component_from_file(str(REPO / "components/training-job/component.yaml"))

READ_MODEL = """
import json, os, sys
m = json.load(open(os.path.join(sys.argv[1], "metrics.json")))
assert os.path.isfile(os.path.join(sys.argv[1], "model.pt")), os.listdir(sys.argv[1])
os.makedirs(os.path.dirname(sys.argv[2]), exist_ok=True)
open(sys.argv[2], "w").write(json.dumps(m))
print("model metrics", m)
"""


@dsl.container_component
def read_model(model: Input[Model], metrics: OutputPath(str)):
    return dsl.ContainerSpec(image="switchyard.local/switchyard:dev", command=["python3", "-c", READ_MODEL],
                             args=[model.path, metrics])


@dsl.pipeline(name="k8s-deploy")
def k8s_deploy(source_dir: str = "/data/code/ddp-digits", epochs: int = 8) -> str:
    train = training_job(
        name="digits-ddp", backend="kubernetes", image="switchyard.local/pytorch:dev", source_dir=source_dir,
        entry_point="train.py", nodes=2, hyperparameters={"epochs": epochs, "lr": 0.1}, resources={"cpu": 0.5},
        restart_policy="ExitCode", max_runtime_seconds=900,
        metrics=[{"name": "test_accuracy", "regex": "test_accuracy=([0-9.]+)"}]).set_caching_options(False)
    return read_model(model=train.outputs["model"]).outputs["metrics"]
