//! Running a TrainingJob from start to end, for the CLI and the server alike:
//! check the job can run here, record it, follow its events into the store
//! (started, restarting, queued), honour cancel requests written to the store
//! by another process, record how it ended, and take over jobs whose follower
//! died. Which backend runs a job is [`Backends`]' choice: the binary builds
//! them (it is the only place that links the cloud SDKs), so the server and
//! this crate do not.

mod failover;
mod follow;
pub mod kpi;
mod place;
mod records;
mod recover;
pub mod step;

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use switchyard_store::{JobRecord, JobStore, Lease, State, StoreError, TaskLink};
use switchyard_training::{TrainingBackend, TrainingJob};

pub use follow::REATTACH_TRIES;
pub use place::Placed;
pub use records::{headline, job_detail_json, job_json, rank_logs, RankLog};
pub use recover::{Adopted, EarlierJob};

/// Why a job could not be started or recorded.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The job cannot run here (names the field and the fix).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The backends jobs run on, as the binary configured them.
#[async_trait::async_trait]
pub trait Backends: Send + Sync {
    /// The backend `job.spec.backend` names, ready to run it (a missing
    /// setting is `Refused`, naming it).
    async fn backend_for(&self, job: &TrainingJob)
        -> Result<Arc<dyn TrainingBackend>, RunnerError>;
    /// Puts a finished job's model into `dest`: a folder or file is copied; a
    /// SageMaker `model.tar.gz` in S3 is downloaded and unpacked (so the next
    /// pipeline step reads the same files whichever backend trained).
    async fn fetch_model(
        &self,
        job: &TrainingJob,
        model: &str,
        dest: &std::path::Path,
    ) -> Result<(), RunnerError>;
}

/// What the runner tells whoever watches (the CLI prints it).
pub enum Notice<'a> {
    Log {
        host: &'a str,
        rank: u32,
        line: &'a str,
    },
    Status(&'a str),
}

/// Where a job's progress goes (the CLI prints it; a step in-process writes it
/// to the task's log).
pub type NoticeSink = Arc<dyn Fn(Notice<'_>) + Send + Sync>;

/// Starts and follows jobs.
pub struct JobRunner {
    store: Arc<dyn JobStore>,
    backends: Arc<dyn Backends>,
    /// Where each job's folder (its logs) goes: `<jobs_dir>/<id>`.
    jobs_dir: PathBuf,
}

/// A job recorded and ready to run.
pub struct Prepared {
    pub record: JobRecord,
    backend: Arc<dyn TrainingBackend>,
    /// Taken over from a follower that died: it may still run where it was
    /// submitted, so a failure to follow it must not record it ended.
    adopted: bool,
    /// The job's lease, given back when following ends or never starts.
    hold: switchyard_store::Hold,
    /// Where a placed job may go when its backend does not start it.
    failover: Option<failover::Failover>,
    /// What it runs ([`switchyard_training::kpi::code_digest`]), kept with
    /// its KPIs: later runs of the same code find their history by it. Read
    /// once: by the placement for a placed job, else when it is followed.
    code_digest: Option<String>,
}

/// Whether an unfinished job has lost its follower (the process that
/// submitted it died): nothing records how it ends until someone adopts it.
pub fn orphaned(j: &JobRecord) -> bool {
    !j.state.is_final() && !j.lease.as_ref().is_some_and(Lease::held)
}

/// The pipeline task a job trains for, from its labels.
pub fn task_link(job: &TrainingJob) -> Option<TaskLink> {
    match (
        job.labels.get(switchyard_training::LABEL_RUN_ID),
        job.labels.get(switchyard_training::LABEL_TASK),
    ) {
        (Some(run_id), Some(task_key)) if !run_id.is_empty() && !task_key.is_empty() => {
            Some(TaskLink {
                run_id: run_id.clone(),
                task_key: task_key.clone(),
            })
        }
        _ => None,
    }
}

/// The validated job a record was made from (its spec has resolved paths).
pub fn job_of(rec: &JobRecord) -> Result<TrainingJob, RunnerError> {
    switchyard_training::load(&rec.spec.to_string(), std::path::Path::new("/"), &[], None).map_err(
        |e| {
            RunnerError::Refused(format!(
                "job {}: its recorded spec no longer loads: {e}",
                rec.id
            ))
        },
    )
}

impl JobRunner {
    pub fn new(store: Arc<dyn JobStore>, backends: Arc<dyn Backends>, jobs_dir: PathBuf) -> Self {
        JobRunner {
            store,
            backends,
            jobs_dir,
        }
    }

    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.store
    }

    async fn backend_for(
        &self,
        job: &TrainingJob,
    ) -> Result<Arc<dyn TrainingBackend>, RunnerError> {
        self.backends.backend_for(job).await
    }

    /// See [`Backends::fetch_model`].
    pub async fn fetch_model(
        &self,
        job: &TrainingJob,
        model: &str,
        dest: &std::path::Path,
    ) -> Result<(), RunnerError> {
        self.backends.fetch_model(job, model, dest).await
    }

    /// Checks the job can run here and records it PENDING; nothing is recorded
    /// when it cannot.
    pub async fn prepare(&self, job: &TrainingJob) -> Result<Prepared, RunnerError> {
        let backend = self.backend_for(job).await?;
        backend
            .preflight(job)
            .map_err(|e| RunnerError::Refused(e.to_string()))?;
        let id = uuid::Uuid::new_v4().to_string();
        let record = JobRecord {
            logs_dir: Some(
                self.jobs_dir
                    .join(&id)
                    .join("logs")
                    .to_string_lossy()
                    .into_owned(),
            ),
            id,
            name: job.name.clone(),
            backend: job.spec.backend.as_str().into(),
            state: State::Pending,
            spec: job.to_json(),
            restarts: 0,
            model: None,
            metrics: None,
            failure_reason: None,
            placement: None,
            kpi: None,
            lease: Some(switchyard_store::Holder::current().lease()),
            task: task_link(job),
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
        };
        self.store.create_job(&record).await?;
        let hold = switchyard_store::Hold::new(
            self.store.clone(),
            switchyard_store::Kind::Job,
            &record.id,
        );
        Ok(Prepared {
            record,
            backend,
            adopted: false,
            hold,
            failover: None,
            code_digest: None,
        })
    }
}

/// Job records for the unit tests.
#[cfg(test)]
pub(crate) mod test_records {
    use chrono::{DateTime, Duration, Utc};
    use switchyard_store::{JobRecord, State};

    /// A job `name` on `backend` submitted at `created`, that waited
    /// `queued` seconds and ran `ran` seconds, ending in `state`.
    pub fn finished(
        name: &str,
        backend: &str,
        state: State,
        created: DateTime<Utc>,
        queued: i64,
        ran: i64,
    ) -> JobRecord {
        let started = created + Duration::seconds(queued);
        JobRecord {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.into(),
            backend: backend.into(),
            state,
            spec: serde_json::Value::Null,
            restarts: 0,
            model: None,
            metrics: None,
            failure_reason: None,
            placement: None,
            kpi: None,
            logs_dir: None,
            lease: None,
            task: None,
            created_at: created,
            started_at: Some(started),
            finished_at: Some(started + Duration::seconds(ran)),
        }
    }
}
