"""A SageMaker training host, as far as a container sees it: `/opt/ml` laid out
from a CreateTrainingJob request as SageMaker lays it out (config files, every
S3 channel downloaded into input/data/<channel>), and the request's container
entry point run in a private mount namespace where that folder is `/opt/ml`
and `algo-1..N` resolve to this machine.

Used for ModelTrainer's own drivers and for Switchyard's launcher alike, so
both are run the same way. Needs root (unshare -m, bind mounts).
"""
import json
import os
import subprocess
from pathlib import Path

GROUP = "homogeneousCluster"


def s3_download(s3, uri, dest):
    """Every object under an s3://bucket/prefix into dest (as File mode does)."""
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    dest.mkdir(parents=True, exist_ok=True)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    n = 0
    for page in pages:
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(prefix):].lstrip("/")
            if not rel:
                rel = os.path.basename(obj["Key"])
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(target))
            n += 1
    return n


def lay_out(request, index, root, s3):
    """The /opt/ml of host algo-<index+1> under root; returns its folder."""
    count = request["ResourceConfig"]["InstanceCount"]
    itype = request["ResourceConfig"]["InstanceType"]
    hosts = [f"algo-{i + 1}" for i in range(count)]
    base = Path(root) / hosts[index]
    config = base / "input" / "config"
    for d in (config, base / "input" / "data", base / "model", base / "output" / "data"):
        d.mkdir(parents=True, exist_ok=True)
    if request.get("CheckpointConfig"):
        (base / "checkpoints").mkdir(exist_ok=True)
    (config / "hyperparameters.json").write_text(json.dumps(request.get("HyperParameters", {})))
    (config / "resourceconfig.json").write_text(json.dumps({
        "current_host": hosts[index],
        "current_instance_type": itype,
        "current_group_name": GROUP,
        "hosts": hosts,
        "instance_groups": [{"instance_group_name": GROUP, "instance_type": itype, "hosts": hosts}],
        "network_interface_name": "eth0",
    }))
    mode = request["AlgorithmSpecification"].get("TrainingInputMode", "File")
    inputs = {}
    for ch in request.get("InputDataConfig", []):
        src = ch["DataSource"]["S3DataSource"]
        inputs[ch["ChannelName"]] = {
            "TrainingInputMode": ch.get("InputMode", mode),
            "S3DistributionType": src.get("S3DataDistributionType", "FullyReplicated"),
            "RecordWrapperType": ch.get("RecordWrapperType", "None"),
        }
        s3_download(s3, src["S3Uri"], base / "input" / "data" / ch["ChannelName"])
    (config / "inputdataconfig.json").write_text(json.dumps(inputs))
    return base


def hosts_file(root, count):
    """An /etc/hosts where every algo-N is this machine."""
    Path(root).mkdir(parents=True, exist_ok=True)
    path = Path(root) / "hosts"
    names = " ".join(f"algo-{i + 1}" for i in range(count))
    path.write_text(f"127.0.0.1 localhost {names}\n::1 localhost\n")
    return path


def start(request, base, hosts, env, log):
    """Starts the request's container command for one host; returns the process."""
    algo = request["AlgorithmSpecification"]
    argv = list(algo["ContainerEntrypoint"]) + list(algo.get("ContainerArguments", []))
    Path("/opt/ml").mkdir(parents=True, exist_ok=True)  # the mount point only
    wrapper = 'mount --bind "$1" /opt/ml && mount --bind "$2" /etc/hosts && shift 2 && cd / && exec "$@"'
    return subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", wrapper, "sh",
         str(base), str(hosts), *argv],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )


def run(request, root, s3, env, timeout=300):
    """Runs every host of the request at once; returns each host's exit code and log."""
    count = request["ResourceConfig"]["InstanceCount"]
    hosts = hosts_file(root, count)
    platform = dict(env)
    platform["TRAINING_JOB_NAME"] = request["TrainingJobName"]
    platform.update(request.get("Environment") or {})
    procs = []
    for i in range(count):
        base = lay_out(request, i, root, s3)
        log = open(Path(root) / f"algo-{i + 1}.log", "wb")
        procs.append((start(request, base, hosts, platform, log), log, base))
    results = []
    for p, log, base in procs:
        try:
            code = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            code = p.wait()
        log.close()
        results.append((code, Path(log.name).read_text(errors="replace"), base))
    return results
