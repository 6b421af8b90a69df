"""Drives TrainJobs through the Kubeflow SDK's TrainerClient (kubeflow 0.5.0),
as a user of Kubeflow Trainer would, and prints what it saw as one JSON
object. Run by test_trainer_sdk.py with the SDK's own venv:

    trainer_sdk_driver.py NAMESPACE KUBECONFIG IMAGE
    trainer_sdk_driver.py NAMESPACE KUBECONFIG IMAGE --s3 ENDPOINT JOB_NAME

The second form trains once on the `torch-distributed-with-initializers`
runtime with the SDK's S3 dataset and model initializers.
"""
import json
import sys

from kubeflow.common.types import KubernetesBackendConfig
from kubeflow.trainer import CustomTrainer, CustomTrainerContainer, TrainerClient

ns, kubeconfig, image = sys.argv[1:4]


def all_reduce():
    """The function CustomTrainer ships: a gloo all-reduce over every rank."""
    import os
    import socket

    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    t = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(t)
    print(f"sdk host={socket.gethostname()} rank={dist.get_rank()} world={dist.get_world_size()} "
          f"sum={t.item():.0f} node_rank={os.environ['PET_NODE_RANK']}", flush=True)
    dist.destroy_process_group()


def read_workspace():
    """The function of the S3 job: what the initializers left in /workspace."""
    import pathlib

    files = sorted(str(p.relative_to("/workspace")) for p in pathlib.Path("/workspace").rglob("*") if p.is_file())
    print("sdk files=" + ",".join(files), flush=True)


client = TrainerClient(KubernetesBackendConfig(namespace=ns, config_file=kubeconfig))
if sys.argv[4:5] == ["--s3"]:
    from kubeflow.trainer import Initializer, S3DatasetInitializer, S3ModelInitializer
    from kubeflow.trainer.options import Name

    endpoint, name = sys.argv[5:7]
    keys = dict(endpoint=endpoint, access_key_id="test", secret_access_key="test")
    client.train(
        runtime=client.get_runtime("torch-distributed-with-initializers"),
        initializer=Initializer(dataset=S3DatasetInitializer(storage_uri="s3://data/digits", **keys),
                                model=S3ModelInitializer(storage_uri="s3://models/m", **keys)),
        trainer=CustomTrainer(func=read_workspace, num_nodes=1),
        options=[Name(name)])
    job = client.wait_for_job_status(name, status={"Complete", "Failed"}, timeout=240, polling_interval=1)
    print(json.dumps({"status": job.status, "steps": sorted((s.name, s.status) for s in job.steps),
                      "logs": list(client.get_job_logs(name))}))
    sys.exit(0)
out = {"runtimes": sorted(r.name for r in client.list_runtimes())}
runtime = client.get_runtime("torch-distributed")
out["runtime"] = {"name": runtime.name, "framework": runtime.trainer.framework}

name = client.train(runtime=runtime, trainer=CustomTrainer(
    func=all_reduce, num_nodes=2, resources_per_node={"cpu": 1}, env={"FROM_SDK": "yes"}))
job = client.wait_for_job_status(name, status={"Running", "Complete", "Failed"}, timeout=240, polling_interval=1)
out["seen_running"] = job.status
job = client.wait_for_job_status(name, status={"Complete"}, timeout=240, polling_interval=1)
out["job"] = {"name": job.name, "status": job.status, "num_nodes": job.num_nodes,
              "steps": sorted((s.name, s.status) for s in job.steps)}
out["logs"] = list(client.get_job_logs(name))
out["listed"] = [j.name for j in client.list_jobs()]
client.delete_job(name)

name = client.train(runtime=runtime, trainer=CustomTrainerContainer(image=image, num_nodes=1, env={"ONLY": "image"}))
job = client.wait_for_job_status(name, status={"Complete"}, timeout=240, polling_interval=1)
out["container_job"] = {"name": name, "status": job.status, "steps": [s.name for s in job.steps]}
out["deleted"] = True
print(json.dumps(out))
