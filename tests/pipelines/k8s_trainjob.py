"""A KFP 2.17 pipeline whose step launches a Kubeflow Trainer TrainJob
in-cluster, as KFP documents it: the component declares
task_config_passthroughs, receives its task's resources and env as a
dsl.TaskConfig, creates the TrainJob (runtime `torch-distributed`) through
the API server with its pod's service account, and waits for it to end.
Runs as a Pod (SWITCHYARD_TASK_BACKEND=kubernetes) in the step image, which
carries the KFP SDK (install_kfp_package=False: pods have no package index)."""
from kfp import dsl

IMAGE = "switchyard.local/switchyard:dev"


@dsl.component(
    base_image=IMAGE,
    install_kfp_package=False,
    task_config_passthroughs=[
        dsl.TaskConfigField.RESOURCES,
        dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.ENV, apply_to_task=True),
    ],
)
def launch_trainjob(num_nodes: int, task_config: dsl.TaskConfig) -> str:
    import json
    import os
    import ssl
    import time
    import urllib.request

    sa = "/var/run/secrets/kubernetes.io/serviceaccount"
    ns = open(f"{sa}/namespace").read().strip()
    token = open(f"{sa}/token").read().strip()
    ctx = ssl.create_default_context(cafile=f"{sa}/ca.crt")
    host = f"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ['KUBERNETES_SERVICE_PORT']}"
    base = f"{host}/apis/trainer.kubeflow.org/v1alpha1/namespaces/{ns}/trainjobs"

    def call(method, url, body=None):
        req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            return json.load(r)

    script = (
        "import os, torch, torch.distributed as dist\n"
        "dist.init_process_group('gloo')\n"
        "t = torch.tensor([float(dist.get_rank() + 1)])\n"
        "dist.all_reduce(t)\n"
        "print(f\"rank={dist.get_rank()} world={dist.get_world_size()} sum={t.item():.0f} epochs={os.environ.get('EPOCHS')}\", flush=True)\n"
        # Without it a rank may abort at exit (gloo's threads), and the gang waits.
        "dist.destroy_process_group()\n"
    )
    name = f"from-pipeline-{int(time.time())}"
    call("POST", base, {
        "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "runtimeRef": {"name": "torch-distributed"},
            "trainer": {
                "numNodes": num_nodes,
                "numProcPerNode": 2,
                "resourcesPerNode": task_config.resources,
                "env": task_config.env,
                "command": ["bash", "-c", f"cat > /tmp/t.py <<'EOF'\n{script}EOF\ntorchrun /tmp/t.py"],
            },
        },
    })
    deadline = time.time() + 300
    while time.time() < deadline:
        conditions = call("GET", f"{base}/{name}").get("status", {}).get("conditions", [])
        ended = [c for c in conditions if c["type"] in ("Complete", "Failed") and c["status"] == "True"]
        if ended:
            return f"{name} {ended[0]['type']} {ended[0]['reason']}"
        time.sleep(1)
    raise RuntimeError(f"TrainJob {name} did not end in 300 s")


@dsl.pipeline(name="k8s-trainjob")
def k8s_trainjob(nodes: int = 2) -> str:
    t = launch_trainjob(num_nodes=nodes)
    t.set_cpu_request("200m").set_memory_request("300Mi").set_env_variable("EPOCHS", "2")
    return t.output
