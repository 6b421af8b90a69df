"""What the tests on the local test cluster share: kubectl with the admin
kubeconfig of scripts/k8s-cluster, deploy/ documents, and the binary."""
import json
import os
import pathlib
import subprocess

REPO = pathlib.Path(__file__).resolve().parents[2]
CACHE = pathlib.Path(os.environ.get("SWITCHYARD_K8S_CACHE", pathlib.Path.home() / ".cache/switchyard/k8s"))
BIN = os.environ.get("SWITCHYARD_BIN") or str(pathlib.Path.home() / ".cache/switchyard/target/debug/switchyard")


def kubectl_cmd(*args):
    return [str(CACHE / "bin/kubectl"), "--kubeconfig", str(CACHE / "kubeconfig"), *args]


def kubectl(*args, stdin=None, check=True):
    r = subprocess.run(kubectl_cmd("--request-timeout=30s", *args), input=stdin, capture_output=True, text=True)
    if check:
        assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stderr}"
    return r.stdout if check else r


def require_cluster():
    assert (CACHE / "kubeconfig").exists(), "no test cluster is running: start one with scripts/k8s-cluster start"
    kubectl("get", "--raw", "/readyz")


def node_ip():
    """The node's address: the cluster's bridge on this machine, which pods reach."""
    nodes = json.loads(kubectl("get", "nodes", "-o", "json"))
    return next(a["address"] for a in nodes["items"][0]["status"]["addresses"] if a["type"] == "InternalIP")


def deploy_docs(name):
    return docs_of(REPO / "deploy" / name)


def docs_of(path):
    """Every object of a YAML file, as kubectl reads it."""
    out = kubectl("create", "--dry-run=client", "-o", "json", "-f", str(path))
    docs, dec, i = [], json.JSONDecoder(), 0
    while i < len(out):  # one JSON document per object, one after the other (or one List)
        if out[i].isspace():
            i += 1
            continue
        v, i = dec.raw_decode(out, i)
        docs += v["items"] if v.get("kind") == "List" else [v]
    return docs


def apply(*docs):
    kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(docs)}))


def host_volume(name, folder, namespace, claim, size="10Gi", modes=("ReadWriteMany",)):
    """A PersistentVolume on a folder of this machine, reserved for one claim."""
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
            "spec": {"capacity": {"storage": size}, "accessModes": list(modes), "storageClassName": "",
                     "persistentVolumeReclaimPolicy": "Retain",
                     "hostPath": {"path": str(folder), "type": "DirectoryOrCreate"},
                     "claimRef": {"namespace": namespace, "name": claim}}}
