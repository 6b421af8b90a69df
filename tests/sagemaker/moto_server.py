"""The moto server, with what moto's SageMaker lacks for following a job
across a dead follower: training jobs that run for a while, and StopTrainingJob.

moto creates every training job Completed at once and does not implement
StopTrainingJob. Here (only when SWITCHYARD_MOTO_TRAINING_SECONDS=N is set) a
new job is InProgress/Training for N seconds, then Completed, as SageMaker
reports a job that trains for N seconds; StopTrainingJob (always) moves an
InProgress job to Stopped/Stopped and refuses one that ended, as SageMaker
does (ValidationException). Everything else is moto's.

Usage: moto_server.py -H 127.0.0.1 -p PORT   (moto_server's own arguments)
"""
import os
import sys
import time

from moto.sagemaker import models, responses
from moto.sagemaker.exceptions import ValidationError
from moto.server import main

SECONDS = float(os.environ.get("SWITCHYARD_MOTO_TRAINING_SECONDS", "0") or 0)
_init = models.FakeTrainingJob.__init__


def _init_running(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self.ends_at = time.time() + SECONDS
    if SECONDS > 0:
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


models.FakeTrainingJob.__init__ = _init_running
models.SageMakerModelBackend.describe_training_job = describe_training_job
models.SageMakerModelBackend.stop_training_job = stop_training_job
responses.SageMakerResponse.stop_training_job = stop_training_job_response

if __name__ == "__main__":
    sys.exit(main())
