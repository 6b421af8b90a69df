//! Taking over jobs whose follower died: following them again (adopt), a
//! pipeline step finding the job its earlier attempt submitted, and canceling
//! them where they run, all through the store's one lifecycle.

use std::sync::Arc;

use chrono::Utc;
use switchyard_store::lifecycle::{self, Claim, Kind, Orphan, Request, Target};
use switchyard_store::{Hold, Holder, JobRecord, LifecycleStore, State};
use switchyard_training::{Stopped, TrainingJob};

use crate::{job_of, orphaned, task_link, JobRunner, Prepared, RunnerError};

/// What taking an orphaned job over gave.
pub enum Adopted {
    /// This process follows it now.
    Mine(Box<Prepared>, Box<TrainingJob>),
    /// Another process follows it, or it ended (the record as it is now).
    NotMine(Box<JobRecord>),
}

/// What a pipeline task's earlier attempt left of its training job, for the
/// task running again (its run resumed): so it follows that job instead of
/// submitting a second one.
pub enum EarlierJob {
    /// None, or one that failed or was canceled: a retry submits a new job.
    None,
    /// It succeeded: its result is reused.
    Succeeded(Box<JobRecord>),
    /// Its follower had died; this process follows it now.
    Adopted(Box<Prepared>, Box<TrainingJob>),
    /// Another process follows it (the record as it is now).
    FollowedElsewhere(Box<JobRecord>),
}

/// Why an orphaned job could not be followed again, and that nothing changed.
pub(crate) fn left_as_it_was(id: &str, e: &dyn std::fmt::Display) -> RunnerError {
    RunnerError::Refused(format!(
        "cannot follow job {id} again: {e}; it is left as it was (no process follows it): resume it once that is fixed, or cancel it"
    ))
}

/// Why a job the backend lost contact with is left unfinished.
pub(crate) fn lost_contact(id: &str, e: &dyn std::fmt::Display) -> RunnerError {
    RunnerError::Refused(format!(
        "lost contact with job {id}: {e}; it is left as it was, since it may still run (no process follows it now): `switchyard job resume {id}` follows it again, `switchyard job cancel {id}` stops it"
    ))
}

impl JobRunner {
    /// Takes over a job whose follower died, so that this process follows it
    /// (with [`JobRunner::execute`]): its backend's `run` with the same id
    /// re-attaches to what was submitted (a SageMaker training job, a
    /// PyTorchJob) and starts a local gang again (a local gang dies with its
    /// follower). Of two processes adopting one job, one gets it.
    pub async fn adopt(&self, rec: &JobRecord) -> Result<Adopted, RunnerError> {
        if !orphaned(rec) || !self.claim(rec).await? {
            return Ok(Adopted::NotMine(Box::new(
                self.store.get_job(&rec.id).await?,
            )));
        }
        // Given back on every way out but following it.
        let hold = Hold::new(self.store.clone(), Kind::Job, &rec.id);
        let job = job_of(rec)?;
        let backend = match self.backend_for(&job).await {
            Ok(b) => b,
            Err(e) => {
                hold.release().await;
                return Err(left_as_it_was(&rec.id, &e));
            }
        };
        let me = Holder::current();
        let said = self
            .store
            .add_job_event(
                &rec.id,
                rec.state,
                &format!(
                    "re-attached: process {} on {} follows this job now (its follower had ended)",
                    me.pid, me.host
                ),
                Some(&me.id),
            )
            .await?;
        let record = self.store.get_job(&rec.id).await?;
        if !said {
            // Taken by another process in the meantime.
            return Ok(Adopted::NotMine(Box::new(record)));
        }
        let failover = crate::failover::Failover::from_record(&record, &job);
        Ok(Adopted::Mine(
            Box::new(Prepared {
                record,
                backend,
                adopted: true,
                hold,
                failover,
                code_digest: None,
            }),
            Box::new(job),
        ))
    }

    /// The job an earlier attempt of `job`'s pipeline task submitted (see
    /// [`EarlierJob`]); `None` for a job that is not a task's.
    pub async fn earlier_job(&self, job: &TrainingJob) -> Result<EarlierJob, RunnerError> {
        let Some(link) = task_link(job) else {
            return Ok(EarlierJob::None);
        };
        let Some(earlier) = self.store.job_for_task(&link).await? else {
            return Ok(EarlierJob::None);
        };
        Ok(match earlier.state {
            State::Succeeded => EarlierJob::Succeeded(Box::new(earlier)),
            st if st.is_final() => EarlierJob::None,
            _ => match self.adopt(&earlier).await? {
                Adopted::Mine(prepared, recorded) => EarlierJob::Adopted(prepared, recorded),
                Adopted::NotMine(now) if now.state == State::Succeeded => {
                    EarlierJob::Succeeded(now)
                }
                Adopted::NotMine(now) if now.state.is_final() => EarlierJob::None,
                Adopted::NotMine(now) => EarlierJob::FollowedElsewhere(now),
            },
        })
    }

    /// Cancels a job whose follower died: stops what its backend still runs
    /// for it (by the identity the job id gives) and records it CANCELED.
    /// `Ok(None)` when another process follows it now (ask that one with a
    /// cancel request). When the backend cannot stop it, nothing is recorded
    /// and the error says so: a job that may still run is never marked ended.
    pub async fn cancel_orphan(&self, rec: &JobRecord) -> Result<Option<JobRecord>, RunnerError> {
        if !orphaned(rec) {
            return Ok(None);
        }
        let store: Arc<dyn LifecycleStore> = self.store.clone();
        let stop = || self.stop_and_record(rec);
        let target = Target {
            kind: Kind::Job,
            id: &rec.id,
            observed: rec.lease.as_ref(),
            claim: Claim::lease_only(),
            // A job that cannot be stopped is left exactly as it was.
            request: Request::Never,
        };
        match lifecycle::cancel_orphan(&store, target, stop).await? {
            Orphan::Ended(done) => Ok(Some(done)),
            Orphan::Held => Ok(None),
        }
    }

    /// The part of [`JobRunner::cancel_orphan`] done while holding the job.
    async fn stop_and_record(&self, rec: &JobRecord) -> Result<JobRecord, RunnerError> {
        let stopped = async {
            let job = job_of(rec)?;
            self.backend_for(&job)
                .await?
                .stop(&job, &rec.id)
                .await
                .map_err(|e| RunnerError::Refused(e.to_string()))
        };
        let stopped = stopped.await.map_err(|e| {
            RunnerError::Refused(format!(
                "cannot stop job {} ({}): {e}; it is recorded as it was, try again",
                rec.id, rec.backend
            ))
        })?;
        let message = match &stopped {
            Stopped::Remote(what) => format!("canceled: stopped {what}"),
            Stopped::Nothing(why) => format!("canceled: nothing to stop ({why})"),
        };
        let mut now = self.store.get_job(&rec.id).await?;
        now.state = State::Canceled;
        now.failure_reason = Some(message.clone());
        now.finished_at = Some(Utc::now());
        now.lease = None;
        let me = &Holder::current().id;
        if !self
            .store
            .update_job(&now, Some(&message), Some(me))
            .await?
        {
            return Err(RunnerError::Refused(format!(
                "job {}: another process took it over while it was being canceled",
                rec.id
            )));
        }
        Ok(now)
    }

    /// Stops the training jobs a run's steps submitted, for a run canceled
    /// after its executing process died: each job nobody follows is stopped
    /// by its identity and recorded CANCELED ([`JobRunner::cancel_orphan`]);
    /// one another process follows gets a cancel request. One line per job.
    pub async fn cancel_jobs_of_run(&self, run_id: &str) -> Result<Vec<String>, RunnerError> {
        let mut said = Vec::new();
        for j in self.store.unfinished_jobs().await? {
            if j.task.as_ref().is_none_or(|t| t.run_id != run_id) {
                continue;
            }
            match self.cancel_orphan(&j).await? {
                Some(done) => said.push(format!(
                    "job {}: {}",
                    done.id,
                    done.failure_reason.unwrap_or_default()
                )),
                None => {
                    self.store.request_cancel(Kind::Job, &j.id).await?;
                    said.push(format!(
                        "job {}: cancel requested of the process following it",
                        j.id
                    ));
                }
            }
        }
        Ok(said)
    }

    async fn claim(&self, rec: &JobRecord) -> Result<bool, RunnerError> {
        let store: Arc<dyn LifecycleStore> = self.store.clone();
        lifecycle::keep_leases(&store);
        let lease = Holder::current().lease();
        let claim = Claim::lease_only();
        Ok(store
            .claim(Kind::Job, &rec.id, rec.lease.as_ref(), &lease, claim)
            .await?)
    }

    /// Gives up a claim taken for nothing (the job is orphaned again).
    pub(crate) async fn let_go(&self, id: &str) {
        let _ = self
            .store
            .release(Kind::Job, id, &Holder::current().id)
            .await;
    }
}
