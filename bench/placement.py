"""How long `backend: auto`'s decision takes: `switchyard job place` on the
digits job, (a) with no cluster and no SageMaker configured (the candidates
refuse at once; local admission decides), (b) against the local test cluster
(scripts/k8s-cluster start: the nodes and every pod listed, the gang placed by
the operator's admission rule), with SageMaker configured (role, bucket,
region: its resolution and price) against the moto server on 127.0.0.1
(tests/sagemaker/moto_server.py, with a training quota: ListServiceQuotas and
the jobs in progress are read on every decision). Wall time of the whole
command, process start included; median and max of N runs.

Usage: python bench/placement.py --binary PATH [--repeat 10]
"""
import argparse
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
CACHE = pathlib.Path(os.environ.get("SWITCHYARD_K8S_CACHE", pathlib.Path.home() / ".cache/switchyard/k8s"))


def timed(binary, env, repeat):
    args = [binary, "job", "place", str(REPO / "examples/ddp-digits/job.yaml"),
            "--set", "spec.image=switchyard.local/pytorch:dev", "--set", "spec.resources.cpu=0.5",
            "--set", "spec.resources.memory=512Mi", "-o", "json"]
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = subprocess.run(args, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        assert out.returncode == 0, out.stderr
    return statistics.median(times), max(times), out.stdout


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", required=True)
    p.add_argument("--repeat", type=int, default=10)
    a = p.parse_args()
    home = tempfile.mkdtemp(prefix="switchyard-bench-place-")
    base = dict(os.environ, SWITCHYARD_HOME=home, AWS_EC2_METADATA_DISABLED="true",
                KUBECONFIG="/nonexistent/kubeconfig")
    for k in list(base):
        if k.startswith(("SWITCHYARD_K8S_", "SWITCHYARD_SAGEMAKER_")):
            del base[k]
    med, top, _ = timed(a.binary, base, a.repeat)
    print(f"no cluster, no SageMaker:          median {med * 1000:.0f} ms, max {top * 1000:.0f} ms ({a.repeat} runs)")
    kubeconfig = CACHE / "kubeconfig"
    if not kubeconfig.exists():
        print("no test cluster running (scripts/k8s-cluster start): the cluster case is skipped")
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    moto = subprocess.Popen([sys.executable, str(REPO / "tests/sagemaker/moto_server.py"), "-H", "127.0.0.1", "-p", str(port)],
                            env=dict(os.environ, SWITCHYARD_MOTO_SAGEMAKER_QUOTAS='{"ml.c5.xlarge": 4}'),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.time() < deadline, "moto did not start"
                time.sleep(0.1)
        env = dict(base, SWITCHYARD_K8S_KUBECONFIG=str(kubeconfig),
                   SWITCHYARD_SAGEMAKER_ROLE_ARN="arn:aws:iam::123456789012:role/SwitchyardTraining",
                   SWITCHYARD_SAGEMAKER_BUCKET="bench-bucket", AWS_REGION="us-east-1",
                   AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")
        med, top, out = timed(a.binary, env, a.repeat)
        print(f"test cluster + SageMaker (moto, quota read): median {med * 1000:.0f} ms, max {top * 1000:.0f} ms ({a.repeat} runs)")
        print(out)
    finally:
        moto.terminate()
        moto.wait(timeout=30)


if __name__ == "__main__":
    main()
