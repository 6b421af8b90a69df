//! The durable record of runs: what ran, with which inputs, in which state, when.
//!
//! [`RunStore`] is the small trait the engine and the CLI talk to; [`SqlStore`]
//! implements it on an SQLite file in the data directory (the default; WAL mode, so
//! several `switchyard` processes can share it) or on PostgreSQL (shared by
//! several servers). Every state change of a
//! run or task is written together with a row in `transitions`, in one
//! transaction, so the history is never out of step with the current state.

mod catalog;
mod jobs;
mod lease;
pub mod lifecycle;
mod memory;
mod model;
mod sql;
mod sql_lifecycle;

pub use lease::{expiry, lease_ttl, process_alive, renew_every, Holder, Lease};
pub use lifecycle::{Claim, Control, Hold, Kind, LifecycleStore, Orphan, Watched, UNFINISHED};
pub use memory::MemoryStore;
pub use model::*;
pub use sql::{Dialect, SqlStore};

/// Store failures. The message names the operation and the record.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to open the store at {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("store operation '{op}' failed: {source}")]
    Query {
        op: &'static str,
        source: sqlx::Error,
    },
    #[error("stored record is corrupt ({what}): {message}")]
    Corrupt { what: String, message: String },
    #[error("no run with id '{0}'")]
    RunNotFound(String),
    #[error("run id prefix '{0}' matches more than one run; give more characters")]
    Ambiguous(String),
    #[error("no {kind} with id '{id}'")]
    NotFound { kind: &'static str, id: String },
    #[error("{kind} '{name}' already exists")]
    AlreadyExists { kind: &'static str, name: String },
    #[error("no job with id or name '{0}'")]
    JobNotFound(String),
    #[error("'{0}' matches more than one job; give more of the id")]
    AmbiguousJob(String),
}

impl StoreError {
    /// No `kind` record (experiment, pipeline, …) with this id.
    pub(crate) fn not_found(kind: &'static str, id: &str) -> Self {
        StoreError::NotFound {
            kind,
            id: id.to_string(),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

use chrono::{DateTime, Utc};

/// A field of a run that the database filters listings on (what KFP's list
/// filters name most), so a filtered list is paged by the database instead of
/// rendering every run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunField {
    Id,
    DisplayName,
    State,
    /// The catalog's storage state; `AVAILABLE` for a run without an entry.
    StorageState,
    /// The recurring run that fired it.
    RecurringRunId,
}

/// `field` is one of `values` (or, with `negate`, none of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFilter {
    pub field: RunField,
    pub negate: bool,
    pub values: Vec<String>,
}

/// The operations the engine and the CLI need from a store. Implementations must
/// make each call atomic, and must be safe to share between processes.
#[async_trait::async_trait]
pub trait RunStore: LifecycleStore {
    async fn create_run(&self, run: &RunRecord) -> Result<()>;
    /// Finds a run by its id or by an unambiguous id prefix.
    async fn get_run(&self, id: &str) -> Result<RunRecord>;
    /// The newest runs, without their `spec` (empty here; `get_run` has it).
    async fn list_runs(&self, limit: u32) -> Result<Vec<RunRecord>>;
    /// Moves a run to `to` only if it is in one of `from` (empty = any state);
    /// returns false when the guard did not match (somebody else moved it first).
    async fn transition_run(
        &self,
        id: &str,
        from: &[State],
        to: State,
        update: RunUpdate,
    ) -> Result<bool>;
    /// Records `lease` as the run's owner (or none), unconditionally: for a run
    /// its creator has just written.
    async fn set_owner(&self, id: &str, lease: Option<&Lease>) -> Result<()>;
    /// Writes the task's current record; records a transition when its state
    /// changed. With `owner`, the write is fenced: it happens only while
    /// `owner` still holds the task's run, in the same statement, and false
    /// (nothing written) says another process took the run over. A check
    /// before the write could not close that gap.
    async fn put_task(&self, task: &TaskRecord, owner: Option<&str>) -> Result<bool>;
    async fn get_task(&self, run_id: &str, task_key: &str) -> Result<Option<TaskRecord>>;
    async fn list_tasks(&self, run_id: &str) -> Result<Vec<TaskRecord>>;
    async fn transitions(&self, run_id: &str) -> Result<Vec<Transition>>;
    async fn get_cache(&self, fingerprint: &str) -> Result<Option<CacheEntry>>;
    async fn put_cache(&self, entry: &CacheEntry) -> Result<()>;
}

/// The record of training jobs, in the same database as runs.
#[async_trait::async_trait]
pub trait JobStore: LifecycleStore {
    async fn create_job(&self, job: &JobRecord) -> Result<()>;
    /// By id, unambiguous id prefix, or the name of the latest job with that name.
    async fn get_job(&self, id: &str) -> Result<JobRecord>;
    async fn list_jobs(&self, limit: u32) -> Result<Vec<JobRecord>>;
    /// Writes the job's mutable fields (its backend and spec too: a placed
    /// job that fails over runs elsewhere from then on); a state change adds an event. With
    /// `owner`, the write is fenced as task writes are: it happens only while
    /// `owner` still holds the job, in the same statement, and false (nothing
    /// written) says another process took it over.
    async fn update_job(
        &self,
        job: &JobRecord,
        message: Option<&str>,
        owner: Option<&str>,
    ) -> Result<bool>;
    /// Adds an event without changing the state (e.g. "restarting"); fenced
    /// by `owner` as [`JobStore::update_job`].
    async fn add_job_event(
        &self,
        id: &str,
        state: State,
        message: &str,
        owner: Option<&str>,
    ) -> Result<bool>;
    async fn job_events(&self, id: &str) -> Result<Vec<JobEventRecord>>;
    /// Every job not ended (PENDING, RUNNING, CANCELING), oldest first: what
    /// recovery looks at.
    async fn unfinished_jobs(&self) -> Result<Vec<JobRecord>>;
    /// The latest job recorded for a pipeline task, if any.
    async fn job_for_task(&self, link: &TaskLink) -> Result<Option<JobRecord>>;
    /// Records metric values seen now (the series the dashboard plots);
    /// fenced by `owner` as [`JobStore::update_job`].
    async fn add_job_metrics(
        &self,
        id: &str,
        points: &[(String, f64)],
        owner: Option<&str>,
    ) -> Result<bool>;
    /// Every recorded value, oldest first.
    async fn job_metrics(&self, id: &str) -> Result<Vec<JobMetricPoint>>;
}

/// Experiments, pipelines and their versions, and what ties a run to them: the
/// records behind the KFP REST API.
#[async_trait::async_trait]
pub trait CatalogStore: Send + Sync {
    async fn create_experiment(&self, e: &ExperimentRecord) -> Result<()>;
    async fn get_experiment(&self, id: &str) -> Result<ExperimentRecord>;
    async fn experiment_by_name(&self, name: &str) -> Result<Option<ExperimentRecord>>;
    async fn list_experiments(&self) -> Result<Vec<ExperimentRecord>>;
    /// `AVAILABLE` or `ARCHIVED`; archiving also archives the experiment's
    /// runs and disables its recurring runs (KFP's semantics).
    async fn set_experiment_storage(&self, id: &str, state: &str) -> Result<()>;
    async fn delete_experiment(&self, id: &str) -> Result<()>;

    async fn create_pipeline(
        &self,
        p: &PipelineRecord,
        first_version: Option<&PipelineVersionRecord>,
    ) -> Result<()>;
    async fn get_pipeline(&self, id: &str) -> Result<PipelineRecord>;
    async fn pipeline_by_name(&self, name: &str) -> Result<Option<PipelineRecord>>;
    async fn list_pipelines(&self) -> Result<Vec<PipelineRecord>>;
    async fn delete_pipeline(&self, id: &str) -> Result<()>;
    /// Sets a pipeline's mutable fields (KFP's UpdatePipeline): its display
    /// name and its whole set of tags.
    /// Only the fields given change (`Some`), so concurrent updates of
    /// different fields both land.
    async fn update_pipeline(
        &self,
        id: &str,
        display_name: Option<&str>,
        tags: Option<&Tags>,
    ) -> Result<()>;
    /// Sets a version's display name and tags (KFP's UpdatePipelineVersion).
    async fn update_version(
        &self,
        id: &str,
        display_name: Option<&str>,
        tags: Option<&Tags>,
    ) -> Result<()>;
    async fn create_version(&self, v: &PipelineVersionRecord) -> Result<()>;
    async fn get_version(&self, id: &str) -> Result<PipelineVersionRecord>;
    async fn list_versions(&self, pipeline_id: &str) -> Result<Vec<PipelineVersionRecord>>;
    async fn delete_version(&self, id: &str) -> Result<()>;

    async fn put_run_catalog(&self, c: &RunCatalog) -> Result<()>;
    async fn get_run_catalog(&self, run_id: &str) -> Result<Option<RunCatalog>>;
    async fn list_run_catalog(&self) -> Result<Vec<RunCatalog>>;
    /// One page of runs by creation time (newest first when `desc`), with their
    /// catalog entries, optionally of one experiment and matching every one of
    /// `filters`; and the total count of matching runs. Runs come without
    /// their `spec`, as from `list_runs`.
    async fn page_runs(
        &self,
        experiment_id: Option<&str>,
        filters: &[RunFilter],
        desc: bool,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<(RunRecord, Option<RunCatalog>)>, u64)>;
    async fn delete_run(&self, run_id: &str) -> Result<()>;

    async fn create_recurring_run(&self, r: &RecurringRunRecord) -> Result<()>;
    async fn get_recurring_run(&self, id: &str) -> Result<RecurringRunRecord>;
    async fn list_recurring_runs(&self) -> Result<Vec<RecurringRunRecord>>;
    /// The enabled schedules with a slot due at `now`.
    async fn due_recurring_runs(&self, now: DateTime<Utc>) -> Result<Vec<RecurringRunRecord>>;
    /// Enables or disables a schedule; its next slot stays (re-enabling
    /// catches up the paused time) and a stored error is cleared.
    async fn set_recurring_run_enabled(&self, id: &str, enabled: bool) -> Result<()>;
    /// Disables a schedule that cannot fire any more, with the reason.
    async fn fail_recurring_run(&self, id: &str, error: &str) -> Result<()>;
    /// Moves a schedule's next slot from `from` to `to`, only if it is still
    /// `from` and the schedule is enabled: false when another process (or a
    /// disable) moved it first.
    async fn advance_recurring_run(
        &self,
        id: &str,
        from: DateTime<Utc>,
        to: Option<DateTime<Utc>>,
    ) -> Result<bool>;
    async fn delete_recurring_run(&self, id: &str) -> Result<()>;
    /// Counts and durations for `/metrics`, computed by the database.
    async fn stats(&self) -> Result<Stats>;
}
