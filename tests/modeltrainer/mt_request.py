"""ModelTrainer's own request: what the SageMaker Python SDK v3 (sagemaker-train)
sends to CreateTrainingJob for a job, with the code and its drivers uploaded
to the S3 endpoint given (moto). Run with the interpreter that has
sagemaker-train installed; prints the request as JSON.

Usage: mt_request.py JOB.json ENDPOINT_URL
JOB.json: {"name", "source_dir", "entry_script", "requirements", "nodes",
"procs", "instance_type", "hyperparameters" (in order), "channels" {name: s3
uri}, "environment", "bucket", "role"}
"""
import json
import os
import sys

import boto3
from sagemaker.core.helper.session_helper import Session
from sagemaker.train import ModelTrainer
from sagemaker.train.configs import Compute, InputData, SourceCode
from sagemaker.train.distributed import Torchrun


def main():
    job = json.load(open(sys.argv[1]))
    endpoint = sys.argv[2]
    # Every AWS call goes to the emulator; the role is not checked in IAM.
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    os.environ["SAGEMAKER_VALIDATE_ROLE"] = "false"
    boto = boto3.Session(region_name="us-east-1", aws_access_key_id="testing",
                         aws_secret_access_key="testing")
    session = Session(
        boto_session=boto,
        sagemaker_client=boto.client("sagemaker", endpoint_url=endpoint),
        default_bucket=job["bucket"],
    )
    session.s3_client = boto.client("s3", endpoint_url=endpoint)
    session.s3_resource = boto.resource("s3", endpoint_url=endpoint)
    world = job["nodes"] * job["procs"]
    trainer = ModelTrainer(
        training_image="123456789012.dkr.ecr.us-east-1.amazonaws.com/any:latest",
        source_code=SourceCode(
            source_dir=job["source_dir"],
            entry_script=job.get("entry_script"),
            command=job.get("command"),
            requirements=job.get("requirements"),
        ),
        compute=Compute(instance_type=job["instance_type"], instance_count=job["nodes"]),
        distributed=Torchrun(process_count_per_node=job["procs"]) if world > 1 else None,
        hyperparameters=job["hyperparameters"],
        input_data_config=[InputData(channel_name=n, data_source=u)
                           for n, u in job["channels"].items()],
        environment=job.get("environment") or None,
        role=job["role"],
        sagemaker_session=session,
        base_job_name=job["name"],
    )
    request = trainer._create_training_job_args(boto3=True)
    print(json.dumps(request, default=str))


if __name__ == "__main__":
    main()
