//! The one interface between the engine and the places work runs.
//!
//! A backend turns a [`Job`] into something running (a process group, a Pod, a
//! SageMaker training job), streams its log lines and reports how it ended. The
//! engine never asks which backend it talks to; new backends are new
//! implementations of [`Backend`], with no engine change.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// One unit of work for a backend: a container command, already resolved.
#[derive(Debug, Clone)]
pub struct Job {
    /// Unique per attempt (`<run>-<task>-<attempt>`), so a repeated submit after a
    /// crash is recognisable as the same job.
    pub id: String,
    /// What people see: the task's path in the run.
    pub display_name: String,
    /// The container image; the local backend records it and runs on the host.
    pub image: String,
    /// The full argv (command then args) with every placeholder substituted.
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// A private directory for this task's outputs; the process's working directory.
    pub work_dir: PathBuf,
    /// The executor's resource request as the IR wrote it.
    pub resources: Option<Value>,
    /// The executor's kfp-kubernetes platform config (pvcMount, secretAsEnv,
    /// nodeSelector, tolerations), for backends that run tasks as Pods.
    pub kubernetes: Option<Value>,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    Succeeded,
    /// The job ran and failed; `message` is what to show the user.
    Failed {
        exit_code: Option<i32>,
        message: String,
    },
    Canceled,
}

/// Errors a backend raises before or around the job (not the job's own failure).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Worth trying again (a transient API error, a busy machine).
    #[error("{0}")]
    Retryable(String),
    /// Trying again will not help (a bad command, a missing interpreter).
    #[error("{0}")]
    Permanent(String),
}

/// Receives a job's output one line at a time, as it is produced.
pub type LogSink = Arc<dyn Fn(&str) + Send + Sync>;

/// Runs jobs somewhere. Implementations must honour `cancel` promptly and leave
/// nothing running after returning.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// Short name recorded with each task (`local`, `kubernetes`, `sagemaker`).
    fn name(&self) -> &'static str;
    /// What the job asks for that this backend cannot honour and runs without
    /// (kfp-kubernetes settings on the local backend, an accelerator), each as
    /// one sentence: the engine says each once per run instead of ignoring it
    /// silently. Requests a backend refuses are errors of `run` instead.
    fn unhonoured(&self, _job: &Job) -> Vec<String> {
        Vec::new()
    }
    async fn run(
        &self,
        job: Job,
        logs: LogSink,
        cancel: CancellationToken,
    ) -> Result<JobOutcome, BackendError>;
}
