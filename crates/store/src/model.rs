//! Records as the store keeps them. States use the KFP REST API's names so the
//! server can expose them unchanged.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A run's or task's state, named as in KFP's `V2beta1RuntimeState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    Pending,
    Running,
    Succeeded,
    Skipped,
    Failed,
    Canceling,
    Canceled,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "PENDING",
            State::Running => "RUNNING",
            State::Succeeded => "SUCCEEDED",
            State::Skipped => "SKIPPED",
            State::Failed => "FAILED",
            State::Canceling => "CANCELING",
            State::Canceled => "CANCELED",
        }
    }

    /// Final states never change again (except by an explicit resume).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            State::Succeeded | State::Skipped | State::Failed | State::Canceled
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "PENDING" => State::Pending,
            "RUNNING" => State::Running,
            "SUCCEEDED" => State::Succeeded,
            "SKIPPED" => State::Skipped,
            "FAILED" => State::Failed,
            "CANCELING" => State::Canceling,
            "CANCELED" => State::Canceled,
            other => return Err(format!("unknown state '{other}'")),
        })
    }
}

/// One pipeline run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub pipeline_name: String,
    pub display_name: String,
    pub state: State,
    /// The compiled PipelineSpec as JSON text: a resume needs exactly what ran.
    pub spec: String,
    /// Resolved pipeline parameters (defaults applied).
    pub parameters: Value,
    pub pipeline_root: String,
    /// Engine options the run was started with (caching, parallelism).
    pub options: Value,
    pub outputs: Option<Value>,
    pub error: Option<String>,
    /// The process executing the run (or holding it queued), while it does.
    #[serde(default)]
    pub lease: Option<crate::Lease>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Fields written together with a run's state change.
#[derive(Debug, Clone, Default)]
pub struct RunUpdate {
    pub outputs: Option<Value>,
    pub error: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Clear error and finish time (used by resume).
    pub reset: bool,
    /// Only if this process (lease owner id) still owns the run: a process
    /// that lost its lease must not write the end of a run another executes.
    pub if_owned_by: Option<String>,
}

/// One task execution inside a run. `task_key` is unique in the run and stable
/// across a resume: the DAG path plus loop iteration indices.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRecord {
    pub run_id: String,
    pub task_key: String,
    pub name: String,
    pub parent_key: Option<String>,
    /// `container`, `importer`, `dag`, `loop` or `iteration`.
    pub kind: String,
    pub state: State,
    pub attempt: u32,
    pub cached: bool,
    pub inputs: Option<Value>,
    pub outputs: Option<Value>,
    pub log_path: Option<String>,
    pub error: Option<String>,
    pub fingerprint: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A state change, for the run (`task_key` None) or one task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Transition {
    pub task_key: Option<String>,
    pub state: State,
    pub at: DateTime<Utc>,
}

/// A reusable result: the outputs of a successful task with this fingerprint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheEntry {
    pub fingerprint: String,
    pub outputs: Value,
    pub run_id: String,
    pub task_key: String,
    pub created_at: DateTime<Utc>,
}

/// One training job submission.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub name: String,
    pub backend: String,
    pub state: State,
    /// The validated TrainingJob document (paths resolved), JSON.
    pub spec: Value,
    pub restarts: u32,
    pub model: Option<String>,
    pub metrics: Option<Value>,
    pub failure_reason: Option<String>,
    pub logs_dir: Option<String>,
    /// Where the job runs, as its backend reports it (host, SageMaker job name
    /// and console link, cluster namespace and pods).
    #[serde(default)]
    pub placement: Option<Value>,
    /// What the job took and cost, written when it ends (queue and run
    /// seconds, instance-, CPU- and GPU-seconds, estimated cost, spot
    /// savings): what the KPIs add up.
    #[serde(default)]
    pub kpi: Option<Value>,
    /// The process following the job, while it does.
    #[serde(default)]
    pub lease: Option<crate::Lease>,
    /// The pipeline run and task this job trains for, when it is a step's.
    #[serde(default)]
    pub task: Option<TaskLink>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A training job's pipeline step: its run and task key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLink {
    pub run_id: String,
    pub task_key: String,
}

/// One value of a scraped metric, when it was seen.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobMetricPoint {
    pub name: String,
    pub value: f64,
    pub at: DateTime<Utc>,
}

/// A state change or notable moment of a job (queued, started, restarting).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobEventRecord {
    pub state: State,
    pub message: Option<String>,
    pub at: DateTime<Utc>,
}

/// A KFP experiment: a folder of runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExperimentRecord {
    pub id: String,
    pub display_name: String,
    pub description: Option<String>,
    /// `AVAILABLE` or `ARCHIVED`.
    pub storage_state: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineRecord {
    pub id: String,
    pub name: String,
    pub display_name: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    /// KFP's user-defined tags (key-value pairs, at most 20).
    #[serde(default)]
    pub tags: Tags,
}

/// KFP's tags of a pipeline or version, in key order.
pub type Tags = std::collections::BTreeMap<String, String>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineVersionRecord {
    pub id: String,
    pub pipeline_id: String,
    pub name: String,
    pub display_name: String,
    pub description: Option<String>,
    /// The uploaded pipeline as JSON (`{pipeline_spec, platform_spec}` or a bare spec).
    pub spec: Value,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub tags: Tags,
}

/// What the REST API knows about a run beyond the engine's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunCatalog {
    pub run_id: String,
    pub experiment_id: String,
    pub storage_state: String,
    pub description: Option<String>,
    pub pipeline_id: Option<String>,
    pub pipeline_version_id: Option<String>,
    pub runtime_config: Option<Value>,
    /// The recurring run that fired this run, if one did.
    pub recurring_run_id: Option<String>,
    /// The Kubernetes service account its step Pods and training jobs run
    /// under (KFP's `pipeline-runner` unless the run names one).
    #[serde(default)]
    pub service_account: Option<String>,
}

/// A KFP recurring run: a pipeline started on a schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecurringRunRecord {
    pub id: String,
    pub display_name: String,
    pub description: Option<String>,
    pub experiment_id: String,
    pub pipeline_id: Option<String>,
    pub pipeline_version_id: Option<String>,
    /// The pipeline when the schedule names a spec or a version (a copy, so a
    /// deleted version does not break it); `None` when it names only a
    /// pipeline, whose latest version each run then takes (as KFP does).
    pub pipeline_spec: Option<Value>,
    /// `{parameters, pipeline_root}` for every run it starts.
    pub runtime_config: Option<Value>,
    /// KFP's trigger: `{cron_schedule: {cron, start_time, end_time}}` or
    /// `{periodic_schedule: {interval_second, start_time, end_time}}`.
    pub trigger: Value,
    /// Most of its runs unfinished at once; a due slot waits for one to end.
    pub max_concurrency: i64,
    /// After a pause (server down, schedule disabled) fire only the latest
    /// missed slot instead of each one.
    pub no_catchup: bool,
    pub enabled: bool,
    /// The next slot not fired yet; `None` once the schedule has ended.
    pub next_fire: Option<DateTime<Utc>>,
    /// Why it stopped by itself (a pipeline that can no longer run).
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The service account of the runs it starts.
    #[serde(default)]
    pub service_account: Option<String>,
}

/// Operational numbers: how many runs, tasks and jobs are in each state, and
/// the total and count of finished durations (seconds).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub runs_by_state: Vec<(String, u64)>,
    pub tasks_by_state: Vec<(String, u64)>,
    /// (backend, state, count)
    pub jobs: Vec<(String, String, u64)>,
    pub run_seconds: (f64, u64),
    pub task_seconds: (f64, u64),
    pub job_seconds: (f64, u64),
}
