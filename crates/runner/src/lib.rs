//! Running a TrainingJob from start to end, for the CLI and the server alike:
//! check the job can run here, record it, follow its events into the store
//! (started, restarting, queued), honour cancel requests written to the store
//! by another process, record how it ended, and take over jobs whose follower
//! died. Which backend runs a job is [`Backends`]' choice: the binary builds
//! them (it is the only place that links the cloud SDKs), so the server and
//! this crate do not.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};
use switchyard_store::{Holder, JobRecord, JobStore, Lease, State, StoreError, TaskLink};
use switchyard_training::{
    BackendError, JobEvent, JobOutcome, JobState, Stopped, TrainingBackend, TrainingJob,
};
use tokio_util::sync::CancellationToken;

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
fn left_as_it_was(id: &str, e: &dyn std::fmt::Display) -> RunnerError {
    RunnerError::Refused(format!(
        "cannot follow job {id} again: {e}; it is left as it was (no process follows it): resume it once that is fixed, or cancel it"
    ))
}

/// Why a job the backend lost contact with is left unfinished.
fn lost_contact(id: &str, e: &dyn std::fmt::Display) -> RunnerError {
    RunnerError::Refused(format!(
        "lost contact with job {id}: {e}; it is left as it was, since it may still run (no process follows it now): `switchyard job resume {id}` follows it again, `switchyard job cancel {id}` stops it"
    ))
}

/// How often a job whose backend lost contact with it (a `Retryable` error:
/// the cloud API down or throttling for minutes) is re-attached to before it
/// is left for a later resume.
pub const REATTACH_TRIES: u32 = 5;

/// The wait before re-attach `n` (1-based): 5 s doubling, at most 60 s.
fn reattach_wait(n: u32) -> Duration {
    Duration::from_secs((5u64 << n.saturating_sub(1).min(4)).min(60))
}

fn state_of(s: JobState) -> State {
    match s {
        JobState::Succeeded => State::Succeeded,
        JobState::Failed => State::Failed,
        JobState::Canceled => State::Canceled,
    }
}

/// One rank's log file of a job.
pub struct RankLog {
    pub rank: u32,
    pub host: String,
    pub path: PathBuf,
}

/// The per-rank log files in a job's log folder (`<host>-rank-<r>.log`), by
/// rank; only `rank` when given (an error names the missing rank).
pub fn rank_logs(job: &JobRecord, rank: Option<u32>) -> Result<Vec<RankLog>, RunnerError> {
    let dir = job
        .logs_dir
        .clone()
        .ok_or_else(|| RunnerError::Refused(format!("job {} has no log folder", job.id)))?;
    let mut files = Vec::new();
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some((host, rank)) = switchyard_training::slots::parse_rank_log(&name) {
            files.push(RankLog {
                rank,
                host,
                path: e.path(),
            });
        }
    }
    files.sort_by(|a, b| (a.rank, &a.host).cmp(&(b.rank, &b.host)));
    if let Some(r) = rank {
        files.retain(|f| f.rank == r);
        if files.is_empty() {
            return Err(RunnerError::Refused(format!(
                "job {} has no log for rank {r}",
                job.id
            )));
        }
    }
    Ok(files)
}

/// The JSON document of a job, as `job run --output json` and the API show it.
pub fn job_json(j: &JobRecord) -> Value {
    let duration = match (j.started_at, j.finished_at) {
        (Some(a), Some(b)) => Some((b - a).num_milliseconds() as f64 / 1000.0),
        _ => None,
    };
    json!({
        "job_id": j.id,
        "name": j.name,
        "backend": j.backend,
        "state": j.state,
        "restarts": j.restarts,
        "model": j.model,
        "metrics": j.metrics.clone().unwrap_or_else(|| json!({})),
        "failure_reason": j.failure_reason,
        "logs": j.logs_dir,
        "placement": j.placement,
        "created_at": j.created_at,
        "started_at": j.started_at,
        "finished_at": j.finished_at,
        "duration_seconds": duration,
    })
}

/// [`job_json`] plus the submitted spec and the job's events (what `job get` shows).
pub fn job_detail_json(j: &JobRecord, events: &[switchyard_store::JobEventRecord]) -> Value {
    let mut v = job_json(j);
    v["spec"] = j.spec.clone();
    v["events"] = events
        .iter()
        .map(|e| json!({"state": e.state, "message": e.message, "at": e.at}))
        .collect::<Vec<_>>()
        .into();
    v
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
            lease: Some(switchyard_store::Holder::current().lease()),
            task: task_link(job),
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
        };
        self.store.create_job(&record).await?;
        Ok(Prepared {
            record,
            backend,
            adopted: false,
        })
    }

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
        let job = job_of(rec)?;
        let backend = match self.backend_for(&job).await {
            Ok(b) => b,
            Err(e) => {
                self.let_go(&rec.id).await;
                return Err(left_as_it_was(&rec.id, &e));
            }
        };
        let me = Holder::current();
        self.store
            .add_job_event(
                &rec.id,
                rec.state,
                &format!(
                    "re-attached: process {} on {} follows this job now (its follower had ended)",
                    me.pid, me.host
                ),
            )
            .await?;
        let record = self.store.get_job(&rec.id).await?;
        Ok(Adopted::Mine(
            Box::new(Prepared {
                record,
                backend,
                adopted: true,
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
        if !orphaned(rec) || !self.claim(rec).await? {
            return Ok(None);
        }
        let stopped = async {
            let job = job_of(rec)?;
            self.backend_for(&job)
                .await?
                .stop(&job, &rec.id)
                .await
                .map_err(|e| RunnerError::Refused(e.to_string()))
        };
        let stopped = match stopped.await {
            Ok(s) => s,
            Err(e) => {
                self.let_go(&rec.id).await;
                return Err(RunnerError::Refused(format!(
                    "cannot stop job {} ({}): {e}; it is recorded as it was, try again",
                    rec.id, rec.backend
                )));
            }
        };
        let message = match &stopped {
            Stopped::Remote(what) => format!("canceled: stopped {what}"),
            Stopped::Nothing(why) => format!("canceled: nothing to stop ({why})"),
        };
        let mut now = self.store.get_job(&rec.id).await?;
        now.state = State::Canceled;
        now.failure_reason = Some(message.clone());
        now.finished_at = Some(Utc::now());
        now.lease = None;
        self.store.update_job(&now, Some(&message)).await?;
        Ok(Some(now))
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
                    self.store.request_job_cancel(&j.id).await?;
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
        Ok(self
            .store
            .claim_job(&rec.id, rec.lease.as_ref(), &Holder::current().lease())
            .await?)
    }

    /// Gives up a claim taken for nothing (the job is orphaned again).
    async fn let_go(&self, id: &str) {
        if let Ok(mut j) = self.store.get_job(id).await {
            if j.lease.as_ref().is_some_and(Lease::is_mine) {
                j.lease = None;
                let _ = self.store.update_job(&j, None).await;
            }
        }
    }

    /// Runs a prepared job to the end and records the outcome. `cancel` (or a
    /// cancel request in the store) stops it.
    pub async fn execute(
        &self,
        prepared: Prepared,
        job: &TrainingJob,
        cancel: CancellationToken,
        notice: NoticeSink,
    ) -> Result<JobRecord, RunnerError> {
        let Prepared {
            record,
            backend,
            adopted,
        } = prepared;
        let id = record.id.clone();
        let watcher = {
            let (store, id, cancel) = (self.store.clone(), id.clone(), cancel.clone());
            tokio::spawn(async move {
                // The lease is renewed while the job is followed; a job ended
                // or taken by another process meanwhile is stopped here.
                let me = switchyard_store::Holder::current();
                let mut renewed = tokio::time::Instant::now();
                while !cancel.is_cancelled() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if store.job_cancel_requested(&id).await.unwrap_or(false) {
                        cancel.cancel();
                    }
                    if renewed.elapsed() >= switchyard_store::renew_every() {
                        renewed = tokio::time::Instant::now();
                        if let Ok(false) = store.renew_job_lease(&id, &me.lease()).await {
                            tracing::error!(job = %id, "another process ended or took this job; stopping it");
                            cancel.cancel();
                        }
                    }
                }
            })
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<JobEvent>();
        let follower = {
            let (store, mut rec, notice) = (self.store.clone(), record.clone(), notice.clone());
            tokio::spawn(async move {
                // Metric values are written in batches (a log line can carry one;
                // a busy gang prints many a second), at most half a second late.
                let mut pending: Vec<(String, f64)> = Vec::new();
                let mut tick = tokio::time::interval(Duration::from_millis(500));
                loop {
                    let ev = tokio::select! {
                        ev = rx.recv() => match ev {
                            Some(ev) => ev,
                            None => break,
                        },
                        _ = tick.tick() => {
                            if !pending.is_empty() {
                                let _ = store.add_job_metrics(&rec.id, &std::mem::take(&mut pending)).await;
                            }
                            continue;
                        }
                    };
                    match ev {
                        JobEvent::Log { host, rank, line } => notice(Notice::Log {
                            host: &host,
                            rank,
                            line: &line,
                        }),
                        JobEvent::Started {
                            attempt,
                            master_port,
                        } => {
                            rec.state = State::Running;
                            rec.restarts = attempt;
                            rec.started_at.get_or_insert_with(Utc::now);
                            let msg = format!(
                                "all ranks started (attempt {attempt}, master port {master_port})"
                            );
                            notice(Notice::Status(&msg));
                            let _ = store.update_job(&rec, Some(&msg)).await;
                        }
                        JobEvent::Running { message } => {
                            if rec.state != State::Running {
                                rec.state = State::Running;
                                rec.started_at.get_or_insert_with(Utc::now);
                                notice(Notice::Status(&message));
                                let _ = store.update_job(&rec, Some(&message)).await;
                            }
                        }
                        JobEvent::Restarting { attempt, reason } => {
                            let msg = format!(
                                "restarting the gang (restart {attempt}): {}",
                                reason.lines().next().unwrap_or("")
                            );
                            notice(Notice::Status(&msg));
                            let _ = store.add_job_event(&rec.id, State::Running, &msg).await;
                        }
                        JobEvent::Status { message } => {
                            notice(Notice::Status(&message));
                            let _ = store.add_job_event(&rec.id, rec.state, &message).await;
                        }
                        JobEvent::Metric { name, value } => pending.push((name, value)),
                        JobEvent::Placement { details } => {
                            rec.placement = Some(details);
                            let _ = store.update_job(&rec, None).await;
                        }
                    }
                }
                if !pending.is_empty() {
                    let _ = store.add_job_metrics(&rec.id, &pending).await;
                }
            })
        };
        // `run` with the same id re-attaches to what was submitted, so a
        // backend that lost contact with its job (Retryable) is asked again:
        // recording it FAILED would leave a job that may still run (and
        // bill) ended in the record, where no cancel reaches it.
        let mut tries = 0;
        let result = loop {
            let result = backend.run(job, &id, tx.clone(), cancel.clone()).await;
            match &result {
                Err(BackendError::Retryable(why))
                    if tries < REATTACH_TRIES && !cancel.is_cancelled() =>
                {
                    tries += 1;
                    let wait = reattach_wait(tries);
                    let msg = format!(
                        "lost contact with the job ({why}); re-attaching in {} s (try {tries} of {REATTACH_TRIES})",
                        wait.as_secs()
                    );
                    // The follower shows it and records it as an event.
                    let _ = tx.send(JobEvent::Status { message: msg });
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        // Canceled while waiting: stopped below, by identity.
                        _ = cancel.cancelled() => break result,
                    }
                }
                _ => break result,
            }
        };
        drop(tx);
        let canceled = cancel.is_cancelled();
        cancel.cancel();
        let _ = watcher.await;
        let _ = follower.await;
        let lost = matches!(result, Err(BackendError::Retryable(_)));
        if let (true, Err(e)) = (adopted || lost, &result) {
            // What was submitted may still run: leave the record as it was,
            // for a later resume (or a cancel, which stops it).
            self.let_go(&id).await;
            if lost && canceled {
                // Canceled meanwhile: stop it by its identity, as a cancel
                // of a job nobody follows does.
                let now = self.store.get_job(&id).await?;
                match self.cancel_orphan(&now).await {
                    Ok(Some(done)) => return Ok(done),
                    Ok(None) => {}
                    Err(stop) => {
                        tracing::warn!(job = %id, error = %stop, "canceled while out of contact, and could not be stopped");
                    }
                }
            }
            return Err(if lost {
                lost_contact(&id, e)
            } else {
                left_as_it_was(&id, e)
            });
        }
        let outcome = result.unwrap_or_else(|e| JobOutcome {
            state: JobState::Failed,
            restarts: 0,
            model: None,
            metrics: Default::default(),
            failure_reason: Some(e.to_string()),
        });
        let mut rec = self.store.get_job(&id).await?;
        rec.state = state_of(outcome.state);
        rec.restarts = outcome.restarts;
        rec.model = outcome.model;
        rec.metrics = Some(json!(outcome.metrics));
        rec.failure_reason = outcome.failure_reason;
        rec.lease = None;
        rec.finished_at = Some(Utc::now());
        self.store.update_job(&rec, None).await?;
        Ok(rec)
    }
}
