//! The one interface between the engine and the places a pipeline step runs.
//!
//! A backend turns a [`Job`] into something running (a process group, a Pod),
//! streams its log lines and reports how it ended. The engine never asks which
//! backend it talks to, and backends depend on this small crate instead of the
//! engine: new backends are new implementations of [`Backend`], with no engine
//! change and no engine to build.

pub mod fake;
pub mod files;

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
    /// The run the step belongs to: a backend tags what it creates with it,
    /// so that [`Backend::stop_run`] finds what a run left running.
    pub run_id: String,
    /// What people see: the task's path in the run.
    pub display_name: String,
    /// The container image; the local backend records it and runs on the host.
    pub image: String,
    /// The full argv (command then args) with every placeholder substituted.
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// A private directory for this task's outputs; the process's working directory.
    pub work_dir: PathBuf,
    /// What the step asks of the machine.
    pub resources: Resources,
    /// The step's executor settings of each platform the pipeline configures,
    /// by platform name as KFP writes them (kfp-kubernetes: `kubernetes`,
    /// with pvcMount, secretAsEnv, nodeSelector, tolerations). The engine
    /// passes every platform's settings and interprets none: a backend reads
    /// the platform it places tasks on and says what it cannot honour.
    pub platform: BTreeMap<String, Value>,
    /// The Kubernetes service account the step runs under (the run's KFP
    /// `service_account`); `None`: the backend's own default.
    pub service_account: Option<String>,
}

/// What a step asks of the machine, read once from the pipeline (KFP writes
/// both its older numeric fields and the newer quantity strings; the newer
/// win). Quantities are Kubernetes quantities (`500m`, `2`, `1G`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_limit: Option<String>,
    pub cpu_request: Option<String>,
    pub memory_limit: Option<String>,
    pub memory_request: Option<String>,
    pub accelerator: Option<Accelerator>,
}

impl Resources {
    /// Whether any CPU or memory request or limit is given.
    pub fn has_cpu_or_memory(&self) -> bool {
        [
            &self.cpu_limit,
            &self.cpu_request,
            &self.memory_limit,
            &self.memory_request,
        ]
        .iter()
        .any(|v| v.is_some())
    }
}

/// An accelerator request: `kind` as the pipeline names it (`nvidia.com/gpu`,
/// `NVIDIA_TESLA_T4`…), `count` as a quantity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accelerator {
    pub kind: String,
    pub count: String,
}

/// A PersistentVolumeClaim a pipeline creates (kfp-kubernetes `CreatePVC`),
/// with the fields KFP's driver reads from the task's inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeClaim {
    /// The run that creates it: a backend tags the claim with it.
    pub run_id: String,
    pub name: String,
    /// A Kubernetes quantity (`5Gi`).
    pub size: String,
    /// `ReadWriteOnce`, `ReadWriteMany`, `ReadOnlyMany`, `ReadWriteOncePod`.
    pub access_modes: Vec<String>,
    /// KFP's `standard` when the pipeline names none; empty: no class (a
    /// pre-bound volume).
    pub storage_class: String,
    pub annotations: BTreeMap<String, String>,
    /// A PersistentVolume to bind to, if the pipeline names one.
    pub volume_name: Option<String>,
    /// Where a backend without volumes keeps the claim's data: a folder of
    /// the run (the local backend).
    pub local_dir: PathBuf,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
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
    /// Short name recorded with each task (`local`, `kubernetes`).
    fn name(&self) -> &'static str;
    /// What the job asks for that this backend cannot honour and runs without
    /// (kfp-kubernetes settings on the local backend, an accelerator), each as
    /// one sentence: the engine says each once per run instead of ignoring it
    /// silently. Requests a backend refuses are errors of `run` instead.
    fn unhonoured(&self, _job: &Job) -> Vec<String> {
        Vec::new()
    }
    /// Runs the job to its end. The same `job.id` submitted again (the
    /// process that followed it died, and the run resumed) follows what the
    /// first submit started where that still exists, instead of starting it twice.
    async fn run(
        &self,
        job: Job,
        logs: LogSink,
        cancel: CancellationToken,
    ) -> Result<StepOutcome, BackendError>;
    /// Stops everything this backend still runs for `run_id` with no process
    /// following it (the run's executing process died and the run is
    /// canceled): a step's Pod, a training job. One line per thing stopped.
    /// A local step's processes die with the process that ran them: nothing.
    async fn stop_run(&self, _run_id: &str) -> Result<Vec<String>, BackendError> {
        Ok(Vec::new())
    }
    /// Creates a claim (KFP's driver does this for `CreatePVC`); a claim of
    /// that name already there (a resumed run) is taken as created. Returns
    /// one line saying what was done.
    async fn create_volume(&self, claim: &VolumeClaim) -> Result<String, BackendError> {
        Err(BackendError::Permanent(format!(
            "the {} backend cannot create the volume '{}'",
            self.name(),
            claim.name
        )))
    }
    /// Deletes a claim (`DeletePVC`); one already gone is taken as deleted.
    /// `local_dir` is where a backend without volumes kept its data.
    async fn delete_volume(
        &self,
        _run_id: &str,
        name: &str,
        _local_dir: &std::path::Path,
    ) -> Result<String, BackendError> {
        Err(BackendError::Permanent(format!(
            "the {} backend cannot delete the volume '{name}'",
            self.name()
        )))
    }
}
