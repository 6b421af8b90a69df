//! `backend: auto`: each candidate backend assesses the job, the decision
//! ([`switchyard_training::placement::decide`]) picks one, and the job goes on
//! as if it had named that backend.

use switchyard_training::placement::{self, Assessment, Decision};
use switchyard_training::{BackendKind, TrainingJob};

use crate::{JobRunner, RunnerError};

impl JobRunner {
    /// What every candidate says of `job` now, and the decision. A backend
    /// that is not configured here is a candidate that cannot take the job,
    /// with the setting it misses as its reason.
    pub async fn decide(&self, job: &TrainingJob) -> Decision {
        let spec = job.spec.placement.as_ref();
        let mut assessments = Vec::new();
        for kind in placement::candidates(spec) {
            let mut there = job.clone();
            there.spec.backend = kind;
            let image = there.spec.image.as_deref().unwrap_or("");
            let a = if kind != BackendKind::Local && image.is_empty() {
                Assessment::refused(
                    kind,
                    "needs spec.image (the training image its containers run)",
                )
            } else {
                match self.backend_for(&there).await {
                    Err(e) => Assessment::refused(kind, e.to_string()),
                    Ok(backend) => Assessment {
                        backend: kind,
                        ..backend.assess(&there).await
                    },
                }
            };
            assessments.push(a);
        }
        placement::decide(spec, assessments)
    }

    /// The job as it will run: a `backend: auto` job placed (its backend the
    /// chosen one, its `placement` dropped, and the decision), any other as
    /// it is. A job no candidate
    /// can run is refused with every candidate's reason.
    pub async fn place(
        &self,
        job: &TrainingJob,
    ) -> Result<(TrainingJob, Option<Decision>), RunnerError> {
        if job.spec.backend != BackendKind::Auto {
            return Ok((job.clone(), None));
        }
        let decision = self.decide(job).await;
        let Some(chosen) = decision.chosen else {
            return Err(RunnerError::Refused(decision.refusal()));
        };
        // Recorded as a job of that backend (its first event says why), so
        // that reading the record back (recovery, resume) is a plain job.
        let mut placed = job.clone();
        placed.spec.backend = chosen;
        placed.spec.placement = None;
        Ok((placed, Some(decision)))
    }
}

impl JobRunner {
    /// Records where a placed job went and why, as its first event.
    pub async fn record_decision(
        &self,
        prepared: &crate::Prepared,
        decision: &Decision,
    ) -> Result<(), RunnerError> {
        let owner = prepared.record.lease.as_ref().map(|l| l.owner.clone());
        let message = format!("placement: {}", decision.summary());
        self.store
            .add_job_event(
                &prepared.record.id,
                switchyard_store::State::Pending,
                &message,
                owner.as_deref(),
            )
            .await?;
        Ok(())
    }
}
