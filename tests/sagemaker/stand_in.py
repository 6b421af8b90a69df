"""Plays SageMaker's training instances next to the moto server.

moto records CreateTrainingJob and answers DescribeTrainingJob (every job is
Completed at once) but runs no container, so nothing writes the job's logs or
its model. This script does what the instances would, for every new job: one
CloudWatch Logs stream per instance in /aws/sagemaker/TrainingJobs with the
lines a training script prints (first the files SageMaker would restore into
/opt/ml/checkpoints from CheckpointConfig.S3Uri), and model.tar.gz
(metrics.json + model.pt) at the job's ModelArtifacts.S3ModelArtifacts.

Usage: stand_in.py ENDPOINT ACCURACY   (prints "watching" once ready; stopped by PID)
"""
import io
import json
import sys
import tarfile
import time

import boto3

endpoint, accuracy = sys.argv[1], float(sys.argv[2])
kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
sm, s3, logs = (boto3.client(s, **kw) for s in ("sagemaker", "s3", "logs"))
GROUP = "/aws/sagemaker/TrainingJobs"
try:
    logs.create_log_group(logGroupName=GROUP)
except logs.exceptions.ResourceAlreadyExistsException:
    pass


def tar_gz(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def checkpoint(d):
    """(relative key, text) of every object under the job's CheckpointConfig.S3Uri."""
    uri = (d.get("CheckpointConfig") or {}).get("S3Uri")
    if not uri:
        return []
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    prefix = prefix.rstrip("/") + "/"
    out = []
    for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
        body = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read().decode(errors="replace").strip()
        out.append((o["Key"][len(prefix):], body))
    return out


def play(name):
    d = sm.describe_training_job(TrainingJobName=name)
    now = int(time.time() * 1000)
    for host in range(1, d["ResourceConfig"]["InstanceCount"] + 1):
        stream = f"{name}/algo-{host}-{now // 1000}"
        logs.create_log_stream(logGroupName=GROUP, logStreamName=stream)
        # SageMaker copies CheckpointConfig.S3Uri into /opt/ml/checkpoints
        # before the script starts: say what a script would find there.
        lines = [f"algo-{host}: checkpoint {k}={v}" for k, v in checkpoint(d)]
        lines += [f"algo-{host}: epoch 1 loss=0.40", f"algo-{host}: epoch 2 loss=0.20"]
        if host == 1:
            lines.append(f"test_accuracy={accuracy}")
        logs.put_log_events(logGroupName=GROUP, logStreamName=stream,
                            logEvents=[{"timestamp": now + i, "message": m} for i, m in enumerate(lines)])
    uri = d["ModelArtifacts"]["S3ModelArtifacts"]
    bucket, key = uri[len("s3://"):].split("/", 1)
    body = tar_gz({"metrics.json": json.dumps({"test_accuracy": accuracy}).encode(), "model.pt": b"weights"})
    s3.put_object(Bucket=bucket, Key=key, Body=body)


seen = set()
print("watching", flush=True)
while True:
    for job in sm.list_training_jobs(MaxResults=100)["TrainingJobSummaries"]:
        name = job["TrainingJobName"]
        if name not in seen:
            seen.add(name)
            play(name)
    time.sleep(0.05)
