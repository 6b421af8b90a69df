"""A pipeline whose steps carry kfp-kubernetes platform config, for the
Kubernetes task backend: a claim mount, a secret as environment variables, a
node selector and a toleration, and an output that must come back."""
from kfp import dsl, kubernetes
from kfp.dsl import OutputPath


@dsl.container_component
def greet(name: str, greeting: OutputPath(str)):
    return dsl.ContainerSpec(image="busybox:1.36", command=["sh", "-c", 'mkdir -p "$(dirname "$1")" && echo "hello $0 ($TOKEN)" > "$1" && echo "greeted $0"'],
                             args=[name, greeting])


@dsl.container_component
def shout(text: str):
    return dsl.ContainerSpec(image="busybox:1.36", command=["sh", "-c", 'echo "$0" | tr a-z A-Z'], args=[text])


@dsl.pipeline(name="k8s-platform")
def k8s_platform(who: str = "cluster") -> None:
    g = greet(name=who)
    kubernetes.mount_pvc(g, pvc_name="shared-data", mount_path="/shared")
    kubernetes.use_secret_as_env(g, secret_name="api-token", secret_key_to_env={"token": "TOKEN"})
    kubernetes.add_node_selector(g, label_key="pool", label_value="cpu")
    kubernetes.add_toleration(g, key="dedicated", operator="Equal", value="ml", effect="NoSchedule")
    shout(text=g.outputs["greeting"])
