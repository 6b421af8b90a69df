"""Starts `switchyard server` on a free loopback port for the tests, and stops it."""
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "pipelines"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """A throw-away PostgreSQL server (initdb + pg_ctl on a free loopback port)."""

    def __init__(self):
        import glob
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        assert bins, "PostgreSQL server binaries not found (scripts/setup installs postgresql)"
        self.bin = pathlib.Path(os.environ.get("SWITCHYARD_PG_BIN", bins[-1]))
        # Directly under /tmp: the postgres user must be able to reach it.
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="switchyard-pg-"))
        self.root = os.geteuid() == 0
        if self.root:
            subprocess.run(["chown", "-R", "postgres", str(self.dir)], check=True)
        self.port = free_port()

    def run(self, prog, *args):
        cmd = [str(self.bin / prog), *args]
        if self.root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True)

    def start(self):
        data = str(self.dir / "data")
        self.run("initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
        self.run("pg_ctl", "-D", data, "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off",
                 "-l", str(self.dir / "log"), "-w", "start")
        return self

    @property
    def url(self):
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self):
        import shutil
        try:
            self.run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class Server:
    def __init__(self, home, token=None, database=None, extra=(), env=None):
        self.database = database
        self.env = dict(env or {})
        self.extra = list(extra)
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = token
        self.proc = None

    def start(self):
        binary = os.environ.get("SWITCHYARD_BIN") or str(pathlib.Path.home() / ".cache/switchyard/target/debug/switchyard")
        torch = os.environ.get("SWITCHYARD_TEST_TORCH_PYTHON", str(pathlib.Path.home() / ".cache/switchyard/torch-venv/bin/python"))
        env = dict(os.environ, SWITCHYARD_HOME=str(self.home), SWITCHYARD_TRAINING_PYTHON=torch,
                   SWITCHYARD_VENV_DIR=os.environ.get("SWITCHYARD_TEST_VENV_DIR", str(pathlib.Path.home() / ".cache/switchyard/test-venvs")),
                   **self.env)
        args = [binary, "server", "--port", str(self.port)]
        if self.token:
            args += ["--auth-token", self.token]
        elif "--generate-token" in self.extra:
            self.extra.remove("--generate-token")
        else:
            args += ["--no-auth"]
        # Jobs posted over HTTP may use the checkout and the tests' temporary folders.
        args += ["--path-root", str(REPO), "--path-root", tempfile.gettempdir()]
        if self.database:
            args += ["--database", self.database]
        args += self.extra
        self.log = open(self.home / "server.log", "ab")
        self.proc = subprocess.Popen(args, env=env, stdout=self.log, stderr=self.log, cwd=str(REPO))
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError((self.home / "server.log").read_text())
                time.sleep(0.05)
        raise RuntimeError("server did not start")

    def kill(self, sig=15):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.log.close()
        # pytest shows a test's captured output only when it fails: the
        # server's own account of what happened, for a failure in CI.
        lines = (self.home / "server.log").read_text(errors="replace").splitlines()
        print(f"--- last lines of {self.home / 'server.log'} ---", *lines[-80:], sep="\n")


@pytest.fixture
def server():
    with tempfile.TemporaryDirectory() as home:
        s = Server(pathlib.Path(home)).start()
        try:
            yield s
        finally:
            s.kill()


@pytest.fixture
def compiled(tmp_path):
    """Compiles a pipeline function from tests/pipelines with the real kfp SDK."""
    from kfp import compiler

    def compile_(fn):
        path = tmp_path / f"{fn.name}.yaml"
        compiler.Compiler().compile(fn, str(path))
        return str(path)

    return compile_


class Moto:
    """The moto server (PyPI moto[server]) as the AWS endpoint of a test, on
    127.0.0.1, through tests/sagemaker/moto_server.py (StopTrainingJob, and
    training jobs that take `training_seconds` when given)."""

    def __init__(self, training_seconds=None):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        if training_seconds:
            env["SWITCHYARD_MOTO_TRAINING_SECONDS"] = str(training_seconds)
        self.proc = subprocess.Popen([sys.executable, str(REPO / "tests/sagemaker/moto_server.py"),
                                      "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError("moto_server did not start")
        import boto3
        kw = dict(endpoint_url=self.endpoint, region_name="us-east-1",
                  aws_access_key_id="test", aws_secret_access_key="test")
        self.s3 = boto3.client("s3", **kw)
        self.sm = boto3.client("sagemaker", **kw)

    def env(self):
        """What points a server's AWS SDK at this endpoint."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "test",
                "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}

    def keys(self, bucket):
        return [o["Key"] for o in self.s3.list_objects_v2(Bucket=bucket).get("Contents", [])]

    def training_jobs(self):
        """(name, status) of every SageMaker training job, oldest first."""
        jobs = sorted(self.sm.list_training_jobs()["TrainingJobSummaries"], key=lambda j: j["CreationTime"])
        return [(j["TrainingJobName"], self.sm.describe_training_job(TrainingJobName=j["TrainingJobName"])["TrainingJobStatus"])
                for j in jobs]

    def stand_in(self, accuracy):
        """tests/sagemaker/stand_in.py: writes the logs and model a training
        instance would (moto runs none); stop it with .terminate()."""
        proc = subprocess.Popen([sys.executable, str(REPO / "tests/sagemaker/stand_in.py"), self.endpoint, str(accuracy)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "watching"
        return proc

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.fixture
def moto():
    m = Moto()
    try:
        yield m
    finally:
        m.stop()
