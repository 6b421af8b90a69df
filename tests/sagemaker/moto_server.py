"""The moto server, with what moto's SageMaker lacks for following a job
across a dead follower (training jobs that run for a while, StopTrainingJob)
and for placing one (the account's training quotas, a type out of capacity).

moto creates every training job Completed at once and does not implement
StopTrainingJob. Here (only when SWITCHYARD_MOTO_TRAINING_SECONDS=N is set) a
new job is InProgress/Training for N seconds, then Completed, as SageMaker
reports a job that trains for N seconds; StopTrainingJob (always) moves an
InProgress job to Stopped/Stopped and refuses one that ended, as SageMaker
does (ValidationException).

SWITCHYARD_MOTO_SAGEMAKER_QUOTAS='{"ml.m5.xlarge": 2}' emulates the account's
Service Quotas for SageMaker: ListServiceQuotas / ListAWSDefaultServiceQuotas
(ServiceCode sagemaker) answer "<type> for training job usage" with that value
(moto knows only VPC quotas), and CreateTrainingJob refuses a job whose
instances, with those of the jobs in progress, exceed it with
ResourceLimitExceeded, as SageMaker does. SWITCHYARD_MOTO_NO_CAPACITY=type,…
makes jobs on those types fail as SageMaker's do when AWS has no instances to
give (FailureReason "CapacityError: …"); SWITCHYARD_MOTO_SLOW_START=type,…
keeps jobs on those types InProgress/Starting (no instances yet) until
stopped. Everything else is moto's.

Usage: moto_server.py -H 127.0.0.1 -p PORT   (moto_server's own arguments)
"""
import json
import os
import sys
import time

from moto.sagemaker import models, responses
from moto.sagemaker.exceptions import SagemakerClientError, ValidationError
from moto.server import main
from moto.servicequotas import models as sq_models
from moto.servicequotas import responses as sq_responses

SECONDS = float(os.environ.get("SWITCHYARD_MOTO_TRAINING_SECONDS", "0") or 0)
QUOTAS = json.loads(os.environ.get("SWITCHYARD_MOTO_SAGEMAKER_QUOTAS", "{}") or "{}")
NO_CAPACITY = {t for t in os.environ.get("SWITCHYARD_MOTO_NO_CAPACITY", "").split(",") if t}
SLOW_START = {t for t in os.environ.get("SWITCHYARD_MOTO_SLOW_START", "").split(",") if t}
CAPACITY_ERROR = ("CapacityError: Unable to provision requested ML compute capacity. "
                  "Please retry using a different ML instance type.")
_init = models.FakeTrainingJob.__init__


class ResourceLimitExceeded(SagemakerClientError):
    code = "ResourceLimitExceeded"


def _init_running(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self.ends_at = time.time() + SECONDS
    if self.resource_config.get("InstanceType") in NO_CAPACITY:
        self.training_job_status = "Failed"
        self.secondary_status = "Failed"
        self.failure_reason = CAPACITY_ERROR
        # It never reached its instances: no training start, no metrics.
        self.training_start_time = None
        self.final_metric_data_list = []
        self.secondary_status_transitions.append({
            "Status": "Failed", "StartTime": self.creation_time, "EndTime": self.creation_time,
            "StatusMessage": CAPACITY_ERROR})
    elif self.resource_config.get("InstanceType") in SLOW_START:
        # Waiting for instances, as long as it takes (until stopped).
        self.ends_at = float("inf")
        self.training_job_status = "InProgress"
        self.secondary_status = "Starting"
        self.training_start_time = None
        self.training_end_time = None
        self.final_metric_data_list = []
    elif SECONDS > 0:
        self.training_job_status = "InProgress"
        self.secondary_status = "Training"
        self.training_end_time = None


def _advance(job):
    if job.training_job_status == "InProgress" and time.time() >= job.ends_at:
        job.training_job_status = "Completed"
        job.secondary_status = "Completed"
        job.training_end_time = models.utcnow()


_describe = models.SageMakerModelBackend.describe_training_job


def describe_training_job(self, training_job_name):
    job = self.training_jobs.get(training_job_name)
    if job is not None:
        _advance(job)
    return _describe(self, training_job_name)


def stop_training_job(self, training_job_name):
    job = self.training_jobs.get(training_job_name)
    if job is None:
        raise ValidationError(message=f"Requested resource not found: training job {training_job_name}")
    _advance(job)
    if job.training_job_status != "InProgress":
        raise ValidationError(
            message=f"The request was rejected because the training job is in status {job.training_job_status}.")
    job.training_job_status = "Stopped"
    job.secondary_status = "Stopped"
    job.training_end_time = models.utcnow()


def stop_training_job_response(self):
    self.sagemaker_backend.stop_training_job(self._get_param("TrainingJobName"))
    return "{}"


def _quota_list(service_code):
    if service_code != "sagemaker":
        return None
    return [{
        "ServiceCode": "sagemaker", "ServiceName": "Amazon SageMaker",
        "QuotaCode": f"L-SY{i:04d}", "QuotaName": f"{t} for training job usage",
        "QuotaArn": f"arn:aws:servicequotas:us-east-1:123456789012:sagemaker/L-SY{i:04d}",
        "Value": float(v), "Unit": "None", "Adjustable": True, "GlobalQuota": False,
    } for i, (t, v) in enumerate(sorted(QUOTAS.items()))]


_defaults = sq_models.ServiceQuotasBackend.list_aws_default_service_quotas


def list_aws_default_service_quotas(self, service_code):
    quotas = _quota_list(service_code)
    return _defaults(self, service_code) if quotas is None else quotas


def list_service_quotas_response(self):
    code = str(json.loads(self.body).get("ServiceCode"))
    return json.dumps({"Quotas": _quota_list(code) or []})


_create = models.SageMakerModelBackend.create_training_job


def create_training_job(self, training_job_name, *args, **kwargs):
    rc = kwargs["resource_config"]
    kind, count = rc.get("InstanceType"), int(rc.get("InstanceCount", 1))
    if kind in QUOTAS:
        for job in self.training_jobs.values():
            _advance(job)
        used = sum(int(j.resource_config.get("InstanceCount", 1)) for j in self.training_jobs.values()
                   if j.training_job_status == "InProgress" and j.resource_config.get("InstanceType") == kind)
        if used + count > QUOTAS[kind]:
            raise ResourceLimitExceeded(
                f"The account-level service limit '{kind} for training job usage' is {QUOTAS[kind]} "
                f"Instances, with current utilization of {used} Instances and a request delta of "
                f"{count} Instances. Please use AWS Service Quotas to request an increase for this quota.")
    return _create(self, training_job_name, *args, **kwargs)


models.FakeTrainingJob.__init__ = _init_running
models.SageMakerModelBackend.create_training_job = create_training_job
sq_models.ServiceQuotasBackend.list_aws_default_service_quotas = list_aws_default_service_quotas
sq_responses.ServiceQuotasResponse.list_service_quotas = list_service_quotas_response
models.SageMakerModelBackend.describe_training_job = describe_training_job
models.SageMakerModelBackend.stop_training_job = stop_training_job
responses.SageMakerResponse.stop_training_job = stop_training_job_response

if __name__ == "__main__":
    sys.exit(main())
