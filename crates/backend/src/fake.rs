//! [`ScriptedBackend`]: a backend that runs nothing and ends each job as a
//! test scripted it, so what sits on the contract (the engine's DAG rules,
//! retries, cancellation, resume) is tested in-process, without a machine,
//! and under tokio's paused clock.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{Backend, BackendError, Job, LogSink, StepOutcome, VolumeClaim};

/// How one job ends.
#[derive(Debug, Clone)]
pub enum Scripted {
    Succeed,
    /// Exits 1 with this message.
    Fail(String),
    /// The backend itself fails (`BackendError::Retryable` or `Permanent`).
    Error {
        retryable: bool,
        message: String,
    },
    /// Runs until canceled.
    Hang,
    /// Runs this long (on tokio's clock), then ends as the inner script says;
    /// a cancel on the way ends it canceled.
    After(Duration, Box<Scripted>),
}

/// Ends each job as scripted for its task (`Job::display_name`, the task's
/// path in the run: `exit-handler-1/train`), one entry
/// per run of that task in order; a task without (more) entries succeeds.
/// Records every job it was given. A job whose `run` was dropped before it
/// ended (its follower died) stays in flight, as a Pod would keep running,
/// until [`Backend::stop_run`] stops it.
#[derive(Default)]
pub struct ScriptedBackend {
    script: Mutex<BTreeMap<String, VecDeque<Scripted>>>,
    ran: Mutex<Vec<Job>>,
    in_flight: Mutex<Vec<Job>>,
    stopped: Mutex<Vec<String>>,
    volumes: Mutex<BTreeMap<String, VolumeClaim>>,
}

impl ScriptedBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next runs of `task` end as `outcomes` say, in order.
    pub fn script(&self, task: &str, outcomes: impl IntoIterator<Item = Scripted>) {
        self.lock_script()
            .entry(task.to_string())
            .or_default()
            .extend(outcomes);
    }

    /// The volumes created and not deleted, by name.
    pub fn volumes(&self) -> BTreeMap<String, VolumeClaim> {
        self.volumes.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Every job run so far, in the order they started.
    pub fn ran(&self) -> Vec<Job> {
        self.ran.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The ids of the jobs run for `task` (one per attempt).
    pub fn runs_of(&self, task: &str) -> Vec<String> {
        self.ran()
            .into_iter()
            .filter(|j| j.display_name == task)
            .map(|j| j.id)
            .collect()
    }

    /// The ids of the jobs `stop_run` stopped, in order.
    pub fn stopped(&self) -> Vec<String> {
        self.stopped.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The ids of the jobs started and not ended (nor stopped).
    pub fn in_flight(&self) -> Vec<String> {
        let jobs = self.in_flight.lock().map(|j| j.clone()).unwrap_or_default();
        jobs.into_iter().map(|j| j.id).collect()
    }

    fn lock_script(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, VecDeque<Scripted>>> {
        self.script.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl Backend for ScriptedBackend {
    fn name(&self) -> &'static str {
        "scripted"
    }

    async fn run(
        &self,
        job: Job,
        logs: LogSink,
        cancel: CancellationToken,
    ) -> Result<StepOutcome, BackendError> {
        let next = self
            .lock_script()
            .get_mut(&job.display_name)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Scripted::Succeed);
        logs(&format!("scripted {}: {next:?}", job.id));
        if let Ok(mut ran) = self.ran.lock() {
            ran.push(job.clone());
        }
        if let Ok(mut f) = self.in_flight.lock() {
            f.push(job.clone());
        }
        let ended = ends(next, &cancel).await;
        if let Ok(mut f) = self.in_flight.lock() {
            f.retain(|j| j.id != job.id);
        }
        ended
    }

    /// Volumes live in the set of claims; a claim of the same name again is
    /// taken as created (as the real backends take a resumed run's).
    async fn create_volume(&self, claim: &VolumeClaim) -> Result<String, BackendError> {
        let mut v = self.volumes.lock().unwrap_or_else(|e| e.into_inner());
        v.insert(claim.name.clone(), claim.clone());
        Ok(format!("created scripted volume {}", claim.name))
    }

    async fn delete_volume(
        &self,
        _run_id: &str,
        name: &str,
        _local_dir: &std::path::Path,
    ) -> Result<String, BackendError> {
        let mut v = self.volumes.lock().unwrap_or_else(|e| e.into_inner());
        match v.remove(name) {
            Some(_) => Ok(format!("deleted scripted volume {name}")),
            None => Ok(format!("scripted volume {name} was already gone")),
        }
    }

    async fn stop_run(&self, run_id: &str) -> Result<Vec<String>, BackendError> {
        let mut f = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let (of_run, others): (Vec<Job>, Vec<Job>) = f.drain(..).partition(|j| j.run_id == run_id);
        *f = others;
        let ids: Vec<String> = of_run.into_iter().map(|j| j.id).collect();
        if let Ok(mut s) = self.stopped.lock() {
            s.extend(ids.iter().cloned());
        }
        Ok(ids
            .into_iter()
            .map(|id| format!("stopped scripted job {id}"))
            .collect())
    }
}

/// Ends one job as `next` says.
async fn ends(mut next: Scripted, cancel: &CancellationToken) -> Result<StepOutcome, BackendError> {
    loop {
        return match next {
            Scripted::Succeed => Ok(StepOutcome::Succeeded),
            Scripted::Fail(message) => Ok(StepOutcome::Failed {
                exit_code: Some(1),
                message,
            }),
            Scripted::Error { retryable, message } => Err(if retryable {
                BackendError::Retryable(message)
            } else {
                BackendError::Permanent(message)
            }),
            Scripted::Hang => {
                cancel.cancelled().await;
                Ok(StepOutcome::Canceled)
            }
            Scripted::After(wait, then) => {
                tokio::select! {
                    _ = cancel.cancelled() => Ok(StepOutcome::Canceled),
                    _ = tokio::time::sleep(wait) => {
                        next = *then;
                        continue;
                    }
                }
            }
        };
    }
}
