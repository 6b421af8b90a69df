"""`contract: modeltrainer` side by side with the SageMaker Python SDK v3
(tests/modeltrainer/harness.py): the local backend, and Switchyard's SageMaker
launcher run in SageMaker-like hosts from the request Switchyard sent to moto.
The Kubernetes side is crates/cli/tests/it/k8s.rs (pods.py)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (JOBS, check, differences, modeltrainer, moto as start_moto,  # noqa: E402
                     source as make_source, switchyard_local, switchyard_sagemaker)


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    with start_moto(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_source(tmp_path_factory.mktemp("src"))


@pytest.mark.parametrize("kind", sorted(JOBS))
def test_local_backend_gives_what_modeltrainer_gives(kind, moto, source, tmp_path):
    job = JOBS[kind]
    request, ref_env, ref = modeltrainer(f"mt-{kind}", source, job, moto, tmp_path)
    sy_env, got = switchyard_local(f"sy-{kind}", source, job, moto, tmp_path)
    assert len(ref) == job["nodes"] * job["procs"]
    if job["nodes"] * job["procs"] > 1:
        world = job["nodes"] * job["procs"]
        assert {d["rank_sum"] for d in got.values()} == {world * (world - 1) / 2}
    if job.get("requirements"):
        assert {d["requirement"] for d in got.values()} == {"installed"}
    check(differences(ref, ref_env, request["TrainingJobName"], got, sy_env, f"sy-{kind}"),
          "local")


@pytest.mark.parametrize("kind", sorted(JOBS))
def test_sagemaker_launcher_gives_what_modeltrainer_gives(kind, moto, source, tmp_path):
    job = JOBS[kind]
    request, ref_env, ref = modeltrainer(f"mt-{kind}", source, job, moto, tmp_path)
    sy_request, sy_env, got = switchyard_sagemaker(f"sy-{kind}", source, job, moto, tmp_path)
    # ModelTrainer's request shape: the same container command, the code and
    # the launcher as channels after the job's own, hyperparameters as strings.
    algo = sy_request["AlgorithmSpecification"]
    assert algo.get("ContainerEntrypoint") == request["AlgorithmSpecification"]["ContainerEntrypoint"]
    assert algo.get("ContainerArguments") == request["AlgorithmSpecification"]["ContainerArguments"]
    assert [c["ChannelName"] for c in sy_request["InputDataConfig"]] == \
        [c["ChannelName"] for c in request["InputDataConfig"]]
    assert sy_request["HyperParameters"] == request["HyperParameters"]
    check(differences(ref, ref_env, request["TrainingJobName"], got, sy_env,
                      sy_request["TrainingJobName"]), "sagemaker")


def test_a_failed_script_leaves_a_failure_file_as_modeltrainer_does(moto, source, tmp_path):
    """A script that fails without writing /opt/ml/output/failure: ModelTrainer's
    drivers write one (SageMaker's FailureReason), and so does Switchyard's
    launcher; the local backend's job fails with the exit code in its reason."""
    job = {"nodes": 1, "procs": 1, "hyperparameters": {"epochs": 1}, "fail": 3}
    modeltrainer("mt-fail", source, job, moto, tmp_path)
    switchyard_sagemaker("sy-fail", source, job, moto, tmp_path)
    texts = {}
    for side in ("modeltrainer-hosts", "switchyard-hosts"):
        failure = tmp_path / side / "algo-1" / "output" / "failure"
        assert failure.is_file() and failure.read_text().strip(), side
        texts[side] = failure.read_text()
    assert "exit code 3" in texts["modeltrainer-hosts"] or "status 3" in texts["modeltrainer-hosts"], texts
    assert "exited with status 3" in texts["switchyard-hosts"], texts
    _, out = switchyard_local("sy-fail", source, job, moto, tmp_path)
    assert "exited with code 3" in out.stdout + out.stderr, out.stdout + out.stderr
