"""The side-by-side harness of `contract: modeltrainer` against the SageMaker
Python SDK v3 (tests/modeltrainer/test_side_by_side.py, pods.py).

The reference is ModelTrainer itself: its own request builder (sagemaker-train,
in its own venv) makes the CreateTrainingJob request and uploads the code and
its drivers to the S3 emulator (moto); each host's /opt/ml is laid out from
that request as SageMaker lays it out, and ModelTrainer's real `sm_train.sh`
and drivers run there (with the real torchrun). Every process dumps what it
sees (src/train.py); any difference from ModelTrainer is a failure unless
docs/runtime-contract.md lists it, for that backend, in "Where Switchyard
differs from ModelTrainer".
"""
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import boto3

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
import sagemaker_host  # noqa: E402

CACHE = Path.home() / ".cache" / "switchyard"
MT_PYTHON = os.environ.get("SWITCHYARD_MT_PYTHON", str(CACHE / "mt-venv" / "bin" / "python"))
TORCH_PYTHON = os.environ.get("SWITCHYARD_TEST_TORCH_PYTHON",
                              str(CACHE / "torch-venv" / "bin" / "python"))
BUCKET = "datasets"
ROLE = "arn:aws:iam::123456789012:role/SwitchyardTraining"
# Awkward on purpose: one-letter and dashed names, strings that look like
# numbers, booleans or floats, lists, dicts, null, 1e-05; in this order.
HYPERPARAMETERS = {
    "epochs": 3,
    "e": 1,
    "lr": 1e-05,
    "learning-rate": 0.1,
    "flag": "true",
    "n": "7",
    "amp": True,
    "opts": {"b": 2, "a": "x"},
    "layers": [64, 32],
    "names": ["a", "b"],
    "nothing": None,
    "text": "hello world",
    "version": "1.10",
    "zero-padded": "007",
}
# ModelTrainer's torchrun driver passes the arguments through torchrun's own
# parser, which takes `--e` and `--n` for abbreviations of its options and
# fails the job; the gang job's one-letter names are ones it leaves alone.
UNDER_TORCHRUN = {{"e": "x", "n": "k"}.get(k, k): v for k, v in HYPERPARAMETERS.items()}
JOBS = {
    "single": {"nodes": 1, "procs": 1, "requirements": "requirements.txt",
               "hyperparameters": HYPERPARAMETERS},
    "gang": {"nodes": 2, "procs": 2, "hyperparameters": UNDER_TORCHRUN},
}
# Set by the shell that runs the drivers, not by anyone's contract.
SHELL_VARS = {"PWD", "OLDPWD", "SHLVL", "_"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto(folder):
    """The moto server on a free port with the dataset in it; yields its URL."""
    assert Path(MT_PYTHON).exists(), \
        f"{MT_PYTHON} is missing: scripts/setup --modeltrainer installs sagemaker-train"
    port = free_port()
    Path(folder).mkdir(parents=True, exist_ok=True)
    log = open(Path(folder) / "moto.log", "wb")
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests/sagemaker/moto_server.py"),
                             "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        s3 = client("s3", endpoint)
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="digits/train.csv", Body=b"x,y\n1,2\n")
        s3.put_object(Bucket=BUCKET, Key="digits/more/part-1.csv", Body=b"x,y\n3,4\n")
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def aws_env(endpoint):
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }


def client(service, endpoint):
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def tiny_wheel(folder):
    """A wheel with one module, so a requirement installs without a network."""
    path = folder / "tinyreq-1.0-py3-none-any.whl"
    files = {
        "tinyreq.py": "VALUE = 'installed'\n",
        "tinyreq-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: tinyreq\nVersion: 1.0\n",
        "tinyreq-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
        z.writestr("tinyreq-1.0.dist-info/RECORD",
                   "".join(f"{n},,\n" for n in files) + "tinyreq-1.0.dist-info/RECORD,,\n")
    return path


def source(src, wheel=True):
    """The job's code: the dumping script, a wheel and a requirements file."""
    src = Path(src)
    src.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "src" / "train.py", src / "train.py")
    if wheel:
        made = tiny_wheel(src)
        (src / "requirements.txt").write_text(f"./{made.name}\n")
    return src


def spec_of(name, source, job):
    """The job as ModelTrainer's builder takes it (mt_request.py)."""
    return {
        "name": name, "source_dir": str(source), "entry_script": "train.py",
        "requirements": job.get("requirements"), "nodes": job["nodes"], "procs": job["procs"],
        "instance_type": "ml.c5.xlarge", "hyperparameters": job["hyperparameters"],
        "channels": {"train": f"s3://{BUCKET}/digits"}, "bucket": BUCKET, "role": ROLE,
        "environment": {"FAIL_CODE": str(job["fail"])} if job.get("fail") else {},
    }


def read_dumps(folder):
    return {p.stem: json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))}


def host_env(python_bin):
    return {"PATH": f"{python_bin}:/usr/local/bin:/usr/bin:/bin", "HOME": str(Path.home()),
            "LANG": "C.UTF-8"}


def python_env_for(root, job):
    """The `python3` a SageMaker image would have: PyTorch's, and for a job
    with requirements a throw-away environment over it (they install there)."""
    torch_bin = str(Path(TORCH_PYTHON).parent)
    if not job.get("requirements"):
        return torch_bin
    env = Path(root) / "image-python"
    subprocess.run([TORCH_PYTHON, "-m", "venv", "--system-site-packages", str(env)], check=True)
    return f"{env / 'bin'}:{torch_bin}"


def run_in_hosts(request, root, endpoint, job, dump):
    request = dict(request)
    request["Environment"] = {**(request.get("Environment") or {}), "DUMP_DIR": str(dump)}
    env = host_env(python_env_for(root, job))
    results = sagemaker_host.run(request, root, client("s3", endpoint), env)
    for code, log, _ in results:
        if job.get("fail"):
            assert code != 0, log[-6000:]
        else:
            assert code == 0, log[-6000:]
    return env, results


def modeltrainer(name, source, job, endpoint, tmp):
    spec = tmp / "modeltrainer-job.json"
    spec.write_text(json.dumps(spec_of(name, source, job)))
    out = subprocess.run([MT_PYTHON, str(HERE / "mt_request.py"), str(spec), endpoint],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-4000:]
    request = json.loads(out.stdout)
    dump = tmp / "dump-modeltrainer"
    dump.mkdir()
    env, _ = run_in_hosts(request, tmp / "modeltrainer-hosts", endpoint, job, dump)
    return request, env, read_dumps(dump)


def job_yaml(name, source, job, dump, backend="local", channel=None):
    spec = {
        "backend": backend, "contract": "modeltrainer", "sourceDir": str(source),
        "entryPoint": "train.py", "nodes": job["nodes"], "procsPerNode": job["procs"],
        "instanceType": "ml.c5.xlarge", "hyperparameters": job["hyperparameters"],
        "channels": {"train": f"s3://{BUCKET}/digits"}, "env": {"DUMP_DIR": str(dump)},
    }
    if job.get("fail"):
        spec["env"]["FAIL_CODE"] = str(job["fail"])
    if job.get("requirements"):
        spec["requirements"] = job["requirements"]
    if backend == "kubernetes":
        spec["image"] = "switchyard.local/pytorch:dev"
        spec["resources"] = {"cpu": 0.5, "memory": "512Mi"}
        spec["channels"] = {"train": channel}
        del spec["env"]  # the processes print what they see
    if backend == "sagemaker":
        spec["image"] = "123456789012.dkr.ecr.us-east-1.amazonaws.com/any:latest"
        spec["roleArn"] = ROLE
        spec["sagemaker"] = {"bucket": BUCKET, "region": "us-east-1"}
    doc = {"apiVersion": "switchyard/v1", "kind": "TrainingJob", "metadata": {"name": name},
           "spec": spec}
    return json.dumps(doc)  # JSON is YAML, and keeps the hyperparameters' order


def switchyard_env(endpoint, home):
    env = dict(os.environ)
    env.update(aws_env(endpoint))
    env["SWITCHYARD_HOME"] = str(home)
    env["SWITCHYARD_TRAINING_PYTHON"] = TORCH_PYTHON
    return env


def switchyard_local(name, source, job, endpoint, tmp):
    dump = tmp / "dump-local"
    dump.mkdir()
    path = tmp / "job-local.yaml"
    path.write_text(job_yaml(name, source, job, dump))
    env = switchyard_env(endpoint, tmp / "home")
    out = subprocess.run([os.environ["SWITCHYARD_BIN"], "job", "run", str(path), "-q"],
                         env=env, capture_output=True, text=True, timeout=600)
    if job.get("fail"):
        assert out.returncode != 0, out.stdout[-3000:] + out.stderr[-6000:]
        return env, out
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    return env, read_dumps(dump)


def switchyard_sagemaker(name, source, job, endpoint, tmp):
    """Switchyard's request to moto (the job completes there at once), then
    that request run in SageMaker hosts with Switchyard's own launcher."""
    path = tmp / "job-sagemaker.yaml"
    path.write_text(job_yaml(name, source, job, tmp / "unused", backend="sagemaker"))
    env = switchyard_env(endpoint, tmp / "home-sm")
    out = subprocess.run([os.environ["SWITCHYARD_BIN"], "job", "run", str(path), "-q",
                          "--output", "json"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    sm = client("sagemaker", endpoint)
    names = [j["TrainingJobName"] for j in sm.list_training_jobs()["TrainingJobSummaries"]
             if j["TrainingJobName"].startswith(name)]
    assert len(names) == 1, names
    request = sm.describe_training_job(TrainingJobName=names[0])
    # moto keeps no Environment; the request had the job's env there (the
    # replay test in crates/sagemaker checks the request itself).
    request["Environment"] = json.loads(path.read_text())["spec"]["env"]
    dump = tmp / "dump-sagemaker"
    dump.mkdir()
    host, _ = run_in_hosts(request, tmp / "switchyard-hosts", endpoint, job, dump)
    return request, host, read_dumps(dump)


def allowed_differences(backend):
    """Items docs/runtime-contract.md lists as differing on `backend`."""
    text = (ROOT / "docs" / "runtime-contract.md").read_text()
    section = text.split("### Where Switchyard differs from ModelTrainer", 1)[1].split("\n## ", 1)[0]
    allowed = set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        backends = {b.strip() for b in cells[1].split(",")}
        if backend in backends:
            allowed.update(re.findall(r"`([^`]+)`", cells[0]))
    return allowed


def normalize(value, dump, job_name):
    text = json.dumps(value)
    base = dump["base"]
    if base != "/opt/ml":
        text = text.replace(base, "/opt/ml")
    return json.loads(text.replace(job_name, "<job>"))


# In a pod only these names are anyone's contract; the rest of its variables
# are the image's and Kubernetes' own (PATH, HOSTNAME, KUBERNETES_*, services).
CONTRACT_NAMES = re.compile(
    r"^(SM_|PET_|TORCH|NCCL_|FI_|RDMAV_|MASTER_|LOCAL_|GROUP_|ROLE_|SAGEMAKER_)"
    r"|^(RANK|WORLD_SIZE|OMP_NUM_THREADS|TRAINING_JOB_NAME|PYTHONUNBUFFERED|CUDA_VISIBLE_DEVICES)$")


def contract_env(dump, ambient):
    """The variables someone's contract set: without those the process was
    started with (`ambient`: a mapping, or None for a pod, where only
    CONTRACT_NAMES count)."""
    return {k: v for k, v in dump["env"].items()
            if k not in SHELL_VARS and k != "DUMP_DIR"
            and (CONTRACT_NAMES.match(k) if ambient is None else ambient.get(k) != v)}


def differences(ref, ref_ambient, ref_name, got, got_ambient, got_name):
    """Every item that differs, per process: {item: (reference, got)}."""
    assert sorted(ref) == sorted(got), f"processes differ: {sorted(ref)} vs {sorted(got)}"
    out = {}
    for proc in ref:
        a = normalize(ref[proc], ref[proc], ref_name)
        b = normalize(got[proc], got[proc], got_name)
        ea = contract_env(a, ref_ambient if got_ambient is not None else None)
        eb = contract_env(b, got_ambient)
        for k in sorted(set(ea) | set(eb)):
            if ea.get(k) == eb.get(k):
                continue
            if k == "SM_TRAINING_ENV" and k in ea and k in eb:
                # Field by field, so that each is listed on its own.
                ta, tb = json.loads(ea[k]), json.loads(eb[k])
                if list(ta) != list(tb):
                    out.setdefault(k, []).append((proc, list(ta), list(tb)))
                for f in ta:
                    if ta[f] != tb.get(f):
                        out.setdefault(f"{k}.{f}", []).append((proc, ta[f], tb.get(f)))
                continue
            out.setdefault(k, []).append((proc, ea.get(k), eb.get(k)))
        for item in ("argv", "cwd", "code", "train", "requirement", "rank_sum"):
            if a.get(item) != b.get(item):
                out.setdefault(item, []).append((proc, a.get(item), b.get(item)))
        for group in ("files", "drivers"):
            for name in a[group]:
                pa, pb = parse(a[group][name]), parse(b[group][name])
                if pa != pb:
                    out.setdefault(name, []).append((proc, pa, pb))
    return out


def parse(text):
    try:
        return list(json.loads(text).items())
    except (ValueError, AttributeError):
        return text


def check(diffs, backend):
    allowed = allowed_differences(backend)
    report = "\n".join(f"{k}: {v[0][0]}: modeltrainer={v[0][1]!r} switchyard={v[0][2]!r}"
                       for k, v in sorted(diffs.items()))
    print(f"\n{backend}: {len(diffs)} items differ, all listed in docs/runtime-contract.md:\n{report}")
    unlisted = sorted(set(diffs) - allowed)
    assert not unlisted, (
        f"{backend}: differences from ModelTrainer that docs/runtime-contract.md does not list: "
        f"{unlisted}\n{report}")


