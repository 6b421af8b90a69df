"""The security probes of the hostile-input issue, each against a real
`switchyard server` on 127.0.0.1: cross-site requests from a web page, DNS
rebinding, the token, links out of an artifact, id prefixes, paths in jobs."""
import json
import pathlib
import sys
import textwrap
import time

import pytest
import requests

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "server"))
sys.path.insert(0, str(REPO / "tests" / "pipelines"))

import kfp  # noqa: E402
from conftest import Server, compiled, server  # noqa: E402,F401  (fixtures shared with tests/server)

import hostile  # noqa: E402

EVIL = "https://evil.example"


def job_doc(src, marker):
    (src / "train.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    return textwrap.dedent(f"""
        apiVersion: switchyard/v1
        kind: TrainingJob
        metadata: {{name: csrf}}
        spec:
          sourceDir: {src}
          entryPoint: train.py
    """)


def jobs(server):
    return requests.get(server.url + "/apis/switchyard/v1/jobs", timeout=10).json().get("jobs", [])


def test_a_web_page_cannot_drive_the_server(server, tmp_path):
    marker = tmp_path / "ran"
    src = tmp_path / "src"
    src.mkdir()
    doc = job_doc(src, marker)
    url = server.url + "/apis/switchyard/v1/jobs"
    # What a <form> or fetch(no-cors) from another site sends: a simple request.
    r = requests.post(url, data=doc, headers={"Content-Type": "text/plain", "Origin": EVIL,
                                              "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}, timeout=10)
    assert r.status_code == 403 and "cross-site" in r.json()["message"], r.text
    r = requests.post(url, data=doc, headers={"Content-Type": "text/plain", "Origin": EVIL}, timeout=10)
    assert r.status_code == 403 and "Origin" in r.json()["message"], r.text
    # Even without Origin, a simple content type is not taken for a job.
    r = requests.post(url, data=doc, headers={"Content-Type": "text/plain"}, timeout=10)
    assert r.status_code == 415, r.text
    # A multipart upload followed by a run, from another site.
    spec = (REPO / "examples" / "hybrid" / "pipeline.yaml").read_bytes()
    r = requests.post(server.url + "/apis/v2beta1/pipelines/upload", files={"uploadfile": ("p.yaml", spec)},
                      headers={"Origin": EVIL}, timeout=10)
    assert r.status_code == 403, r.text
    r = requests.post(server.url + "/apis/v2beta1/runs", data=json.dumps({"display_name": "x"}),
                      headers={"Content-Type": "text/plain", "Origin": "null"}, timeout=10)
    assert r.status_code == 403, r.text
    # DNS rebinding: the attacker's name resolves to 127.0.0.1, the page is "same origin".
    r = requests.post(url, data=doc, headers={"Host": "rebind.evil.example", "Origin": "http://rebind.evil.example",
                                              "Content-Type": "application/yaml"}, timeout=10)
    assert r.status_code == 403 and "--allowed-host" in r.json()["message"], r.text
    r = requests.get(server.url + "/apis/v2beta1/runs", headers={"Host": "rebind.evil.example"}, timeout=10)
    assert r.status_code == 403
    time.sleep(1)
    assert not marker.exists() and jobs(server) == []
    # The dashboard's own requests and programs still work.
    r = requests.post(url, data=doc, headers={"Content-Type": "application/yaml", "Origin": server.url,
                                              "Sec-Fetch-Site": "same-origin"}, timeout=10)
    assert r.status_code == 200, r.text
    deadline = time.time() + 60
    while not marker.exists():
        assert time.time() < deadline, jobs(server)
        time.sleep(0.2)
    assert requests.get(server.url + "/", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"},
                        timeout=10).status_code == 200


def test_a_token_is_generated_by_default(tmp_path):
    s = Server(tmp_path, extra=["--generate-token"]).start()
    try:
        token_file = tmp_path / "server.token"
        deadline = time.time() + 10
        while not token_file.exists():
            assert time.time() < deadline
            time.sleep(0.05)
        token = token_file.read_text()
        assert len(token) == 64 and (token_file.stat().st_mode & 0o777) == 0o600
        base = s.url + "/apis/v2beta1"
        assert requests.get(base + "/healthz", timeout=10).status_code == 200
        assert requests.get(base + "/runs", timeout=10).status_code == 401
        assert requests.get(base + "/runs", headers={"Authorization": "Bearer " + token[:-1]}, timeout=10).status_code == 401
        # RFC 7235: the scheme is case-insensitive.
        assert requests.get(base + "/runs", headers={"Authorization": "bearer " + token}, timeout=10).status_code == 200
        assert kfp.Client(host=s.url, existing_token=token).list_runs().total_size in (0, None)
        log = (tmp_path / "server.log").read_text()
        assert f"#token={token}" in log, log
    finally:
        s.kill()


def test_artifacts_never_follow_links_out(server, compiled):
    c = kfp.Client(host=server.url)
    run = c.create_run_from_pipeline_package(compiled(hostile.links_out_pipeline), arguments={})
    assert c.wait_for_run_completion(run.run_id, timeout=120).state == "SUCCEEDED"
    art = f"{server.url}/apis/switchyard/v1/runs/{run.run_id}/artifact"
    listing = requests.get(art, params={"task": "links-out", "output": "folder"}, timeout=10).json()
    assert listing["directory"] is True
    by_path = {f["path"]: f for f in listing["files"]}
    assert set(by_path) == {"etc", "loop", "own.txt"}, listing
    assert by_path["etc"].get("link") is True and by_path["own.txt"]["size"] == 6
    assert requests.get(art, params={"task": "links-out", "output": "folder", "file": "own.txt"}, timeout=10).text == "hello\n"
    for file in ["etc/passwd", "loop/own.txt", "etc"]:
        r = requests.get(art, params={"task": "links-out", "output": "folder", "file": file, "preview": "true"}, timeout=10)
        assert r.status_code == 403 and "root:" not in r.text, (file, r.text)
    r = requests.get(art, params={"task": "links-out", "output": "passwd", "preview": "true"}, timeout=10)
    assert r.status_code == 403 and "root:" not in r.text, r.text


def rss_kib(pid, field):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def test_previews_and_downloads_of_a_huge_artifact_read_only_what_they_send(server, compiled):
    c = kfp.Client(host=server.url)
    run = c.create_run_from_pipeline_package(compiled(hostile.huge_artifact_pipeline), arguments={})
    assert c.wait_for_run_completion(run.run_id, timeout=120).state == "SUCCEEDED"
    art = f"{server.url}/apis/switchyard/v1/runs/{run.run_id}/artifact"
    params = {"task": "huge-file", "output": "out"}
    before = rss_kib(server.proc.pid, "VmRSS")
    # Three previews at once, then a whole download read as a stream.
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        previews = list(pool.map(lambda _: requests.get(art, params={**params, "preview": "true"}, timeout=60), range(3)))
    for r in previews:
        assert r.status_code == 200 and len(r.content) <= 64 * 1024 + 1, (r.status_code, len(r.content))
    got = 0
    with requests.get(art, params=params, stream=True, timeout=120) as r:
        assert r.status_code == 200 and int(r.headers["content-length"]) == 1 << 30
        for chunk in r.iter_content(1 << 20):
            got += len(chunk)
    assert got == 1 << 30
    peak = rss_kib(server.proc.pid, "VmHWM")
    # Was +1 GiB per preview (the whole file read to show 64 KiB).
    assert peak - before < 64 * 1024, f"RSS {before} KiB before, peak {peak} KiB"


def test_ids_are_exact(server, compiled):
    c = kfp.Client(host=server.url)
    run = c.create_run_from_pipeline_package(compiled(hostile.quick_pipeline), arguments={})
    assert c.wait_for_run_completion(run.run_id, timeout=120).state == "SUCCEEDED"
    base = server.url + "/apis/v2beta1/runs/"
    for other in [run.run_id[:8], run.run_id[:8].upper(), run.run_id.upper()]:
        assert requests.delete(base + other, timeout=10).status_code == 404
        assert requests.post(base + other + ":archive", timeout=10).status_code == 404
        assert requests.get(base + other, timeout=10).status_code == 404
    assert requests.get(base + run.run_id, timeout=10).json()["state"] == "SUCCEEDED"


def test_jobs_over_http_use_only_allowed_folders(server, tmp_path):
    url = server.url + "/apis/switchyard/v1/jobs"
    for field, value in [("sourceDir", "/etc"), ("output", "/root/.ssh/stolen"), ("sourceDir", str(tmp_path / "to-etc"))]:
        (tmp_path / "to-etc").is_symlink() or (tmp_path / "to-etc").symlink_to("/etc")
        spec = {"sourceDir": str(REPO / "tests" / "jobs" / "contract"), "entryPoint": "check.py", field: value}
        if field == "sourceDir":
            spec["entryPoint"] = "hostname"  # a file that is there: only the folder check can refuse it
        doc = {"apiVersion": "switchyard/v1", "kind": "TrainingJob", "metadata": {"name": "paths"}, "spec": spec}
        r = requests.post(url, json=doc, timeout=10)
        assert r.status_code == 403 and f"spec.{field}" in r.json()["message"] and "--path-root" in r.json()["message"], r.text
    assert jobs(server) == []


def test_error_shapes(server, compiled):
    c = kfp.Client(host=server.url)
    run = c.create_run_from_pipeline_package(compiled(hostile.quick_pipeline), arguments={})
    assert c.wait_for_run_completion(run.run_id, timeout=120).state == "SUCCEEDED"
    r = requests.get(server.url + "/apis/v2beta1/nothing-here", timeout=10)
    assert r.status_code == 404 and r.json()["code"] == 5 and "/apis/v2beta1/nothing-here" in r.json()["message"], r.text
    for bad in ["bogus", "created_at sideways"]:
        r = requests.get(server.url + "/apis/v2beta1/runs", params={"sort_by": bad}, timeout=10)
        assert r.status_code == 400 and "sort_by" in r.json()["message"], (bad, r.text)
    r = requests.get(server.url + "/apis/v2beta1/runs", params={"sort_by": "created_at asc"}, timeout=10)
    assert r.status_code == 200 and r.json()["total_size"] == 1


def test_absurdly_deep_pipelines_are_refused(server, compiled):
    c = kfp.Client(host=server.url)
    with open(compiled(hostile.nested_70)) as f:
        spec = f.read()
    import yaml
    r = requests.post(server.url + "/apis/v2beta1/runs", json={"display_name": "deep", "pipeline_spec": yaml.safe_load(spec)},
                      timeout=60)
    assert r.status_code == 400 and "more than 64 levels" in r.json()["message"], r.text
    assert requests.get(server.url + "/apis/v2beta1/runs", timeout=10).json().get("runs") is None
    run = c.create_run_from_pipeline_package(compiled(hostile.nested_60), arguments={})
    assert c.wait_for_run_completion(run.run_id, timeout=300).state == "SUCCEEDED"
    assert requests.get(server.url + "/apis/v2beta1/healthz", timeout=10).status_code == 200


def test_rejections_answer_in_kfps_shape(tmp_path):
    s = Server(tmp_path, extra=["--max-body-bytes", "4096"]).start()
    try:
        base = s.url + "/apis/v2beta1"
        cases = [
            (requests.get(base + "/runs", params={"page_size": "many"}, timeout=10), 400),
            (requests.post(base + "/pipelines/upload", files={"uploadfile": ("p.yaml", b"x" * 20000)}, timeout=10), 413),
            (requests.post(base + "/runs", data=b"x" * 20000, headers={"Content-Type": "application/json"}, timeout=10), 413),
            (requests.post(base + "/experiments", data=b"\xff\xfe{", headers={"Content-Type": "application/json"}, timeout=10), 400),
            (requests.put(base + "/runs", timeout=10), 405),
        ]
        for r, status in cases:
            assert r.status_code == status, (r.request.method, r.request.url, r.status_code, r.text)
            doc = r.json()
            assert doc["message"] and doc["code"] and doc["error"] == doc["message"], r.text
    finally:
        s.kill()
