"""Pipelines whose steps run as Pods on the local test cluster
(SWITCHYARD_TASK_BACKEND=kubernetes), in the image scripts/k8s-cluster builds.
A first step reads a claim, a secret and its node placement and writes a
parameter and an artifact; a second step consumes both."""
from kfp import dsl, kubernetes
from kfp.dsl import Dataset, Input, Output, OutputPath

IMAGE = "switchyard.local/switchyard:dev"


@dsl.container_component
def produce(name: str, workspace: str, greeting: OutputPath(str), data: Output[Dataset]):
    return dsl.ContainerSpec(
        image=IMAGE,
        command=["sh", "-c",
                 'mkdir -p "$(dirname "$1")" "$(dirname "$2")" '
                 '&& echo "hello $0 ($TOKEN) $(cat /shared/seed.txt) on $(hostname)" > "$1" '
                 '&& echo "left by $(hostname)" > "$3/note" '
                 '&& python3 -c "import sys; open(sys.argv[1], \'w\').write(\'rows=\' + str(sum(range(10))))" "$2"'],
        args=[name, greeting, data.path, workspace],
    )


@dsl.container_component
def consume(greeting: str, data: Input[Dataset], workspace: str, report: OutputPath(str)):
    return dsl.ContainerSpec(
        image=IMAGE,
        command=["sh", "-c", 'mkdir -p "$(dirname "$2")" && echo "$0 / $(cat "$1") / $(cat "$3/note")" > "$2" && cat "$2"'],
        args=[greeting, data.path, report, workspace],
    )


# The workspace: one folder of the run that both pods see (on the shared claim).
@dsl.pipeline(name="k8s-real", pipeline_config=dsl.PipelineConfig(workspace=dsl.WorkspaceConfig(size="1Gi")))
def k8s_real(who: str = "cluster") -> str:
    p = produce(name=who, workspace=dsl.WORKSPACE_PATH_PLACEHOLDER)
    kubernetes.mount_pvc(p, pvc_name="shared-data", mount_path="/shared")
    kubernetes.use_secret_as_env(p, secret_name="api-token", secret_key_to_env={"token": "TOKEN"})
    kubernetes.add_node_selector(p, label_key="pool", label_value="cpu")
    kubernetes.add_toleration(p, key="dedicated", operator="Equal", value="ml", effect="NoSchedule")
    c = consume(greeting=p.outputs["greeting"], data=p.outputs["data"], workspace=dsl.WORKSPACE_PATH_PLACEHOLDER)
    # The node is tainted for this pipeline: every step must tolerate it.
    kubernetes.add_toleration(c, key="dedicated", operator="Equal", value="ml", effect="NoSchedule")
    return c.outputs["report"]


@dsl.container_component
def pod_write(data: Output[Dataset]):
    return dsl.ContainerSpec(
        image=IMAGE,
        command=["sh", "-c", 'mkdir -p "$0" && echo "from $(hostname)" > "$0/part-0" && echo "$1" > "$0/uri"'],
        args=[data.path, data.uri],
    )


@dsl.container_component
def pod_read(data: Input[Dataset], report: OutputPath(str)):
    return dsl.ContainerSpec(
        image=IMAGE,
        command=["sh", "-c", 'mkdir -p "$(dirname "$1")" && cat "$0/part-0" "$0/uri" > "$1"'],
        args=[data.path, report],
    )


# Run with an s3:// pipeline root: the pods read and write the run's staging
# folder on the claim; the engine moves the artifacts to and from S3.
@dsl.pipeline(name="k8s-s3")
def k8s_s3() -> str:
    written = pod_write()
    return pod_read(data=written.outputs["data"]).outputs["report"]


@dsl.container_component
def second_time_lucky(workspace: str, report: OutputPath(str)):
    """Fails the first time (leaving a mark in the run's workspace), then succeeds."""
    return dsl.ContainerSpec(
        image=IMAGE,
        command=["sh", "-c",
                 'if [ -e "$0/tried" ]; then mkdir -p "$(dirname "$1")" && echo "ran on $(hostname)" > "$1"; '
                 'else touch "$0/tried"; echo "first try fails"; exit 3; fi'],
        args=[workspace, report],
    )


# Run once (fails), then resumed: the resumed task must run in a new pod.
@dsl.pipeline(name="k8s-retry", pipeline_config=dsl.PipelineConfig(workspace=dsl.WorkspaceConfig(size="1Gi")))
def k8s_retry() -> str:
    return second_time_lucky(workspace=dsl.WORKSPACE_PATH_PLACEHOLDER).set_caching_options(False).outputs["report"]
