//! Switchyard's engine: runs a compiled KFP v2 pipeline to the end.
//!
//! [`Engine::create_run`] validates a pipeline and its parameters and writes the
//! run record (nothing is written when validation fails); [`Engine::execute`]
//! drives the run: DAG order, CEL trigger conditions, loops, retries, caching,
//! exit handlers and placeholders, recording each transition in a
//! [`switchyard_store::RunStore`]. Work is handed to a [`Backend`], so the same
//! engine drives local processes, Kubernetes or SageMaker; the engine itself
//! never learns which.

pub mod artifacts;
pub mod backend;
mod driver;
pub mod events;
mod execute;
pub mod expr;
pub mod fingerprint;
pub mod io;
mod orphan;
pub mod placeholder;
pub mod resources;
pub mod retry;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use switchyard_kfp_spec::params::resolve_pipeline_parameters;
use switchyard_kfp_spec::{validate, ParsedPipeline, SpecError};
use switchyard_store::{LifecycleStore, RunRecord, RunStore, State, StoreError};

pub use artifacts::{ArtifactStore, PipelineRoot};
pub use backend::{Accelerator, Backend, BackendError, Job, LogSink, Resources, StepOutcome};
pub use events::{Event, EventSender};
pub use io::{Artifact, Io};
pub use orphan::OrphanCancel;

/// Engine failures that stop a run from starting or finishing.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("run {id} cannot be {action}: {reason}")]
    State {
        id: String,
        action: &'static str,
        reason: String,
    },
    /// A run option that cannot be honoured (an `s3://` root without object storage).
    #[error("{0}")]
    Options(String),
    #[error("the stored pipeline of run {id} cannot be read: {reason}")]
    StoredSpec { id: String, reason: String },
    /// This process's lease on the run expired and another process took it
    /// over; this execution stopped without writing the run's end.
    #[error("run {id} was taken over by {owner} (this process's lease expired); it stopped executing it")]
    LeaseLost { id: String, owner: String },
}

/// Per-run choices.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Most container tasks running at once.
    pub parallelism: usize,
    /// Reuse cached results of tasks whose caching is on (KFP's default).
    pub cache: bool,
    /// The local folder under which the run's tasks work (their folders,
    /// logs and parameters), and its artifacts go unless `remote_root` is set.
    pub pipeline_root: PathBuf,
    /// `s3://bucket/prefix`: the run's artifacts go there (the run's
    /// `pipeline_root`), staged in `pipeline_root` around each task.
    pub remote_root: Option<String>,
    pub display_name: Option<String>,
    /// The run's id when the caller derives it (a schedule's slot, so a slot
    /// fired twice is one run); a fresh UUID otherwise.
    pub id: Option<String>,
    /// When a schedule fired the run (`{{$.pipeline_job_schedule_time_utc}}`).
    pub schedule_time: Option<DateTime<Utc>>,
    /// The Kubernetes service account its steps run under (a KFP run's
    /// `service_account`); a backend that cannot honour it says so.
    pub service_account: Option<String>,
}

/// The engine: a store to record into, a backend to run on, a place for logs.
#[derive(Clone)]
pub struct Engine {
    store: Arc<dyn RunStore>,
    backend: Arc<dyn Backend>,
    logs_dir: PathBuf,
    artifacts: Option<Arc<dyn ArtifactStore>>,
}

impl Engine {
    pub fn new(store: Arc<dyn RunStore>, backend: Arc<dyn Backend>, logs_dir: PathBuf) -> Self {
        Engine {
            store,
            backend,
            logs_dir,
            artifacts: None,
        }
    }

    /// Object storage for `s3://` pipeline roots and `s3://` artifacts
    /// (importers, cached results of other runs). Without it such runs are
    /// refused when created.
    pub fn with_artifact_store(mut self, store: Arc<dyn ArtifactStore>) -> Self {
        self.artifacts = Some(store);
        self
    }

    pub fn artifact_store(&self) -> Option<&Arc<dyn ArtifactStore>> {
        self.artifacts.as_ref()
    }

    /// Starts (once per store and process) the renewal of every lease
    /// this process holds (see [`switchyard_store::lifecycle::keep_leases`]).
    /// `execute` starts it too; a server starts it before it takes runs that
    /// wait for a slot.
    pub fn keep_leases(&self) {
        let store: Arc<dyn LifecycleStore> = self.store.clone();
        switchyard_store::lifecycle::keep_leases(&store);
    }

    pub fn store(&self) -> &Arc<dyn RunStore> {
        &self.store
    }

    /// Validates the pipeline and parameters, then writes a PENDING run record.
    /// On any error nothing is written.
    pub async fn create_run(
        &self,
        pipeline: &ParsedPipeline,
        params: &BTreeMap<String, Value>,
        opts: &RunOptions,
    ) -> Result<RunRecord, EngineError> {
        validate(&pipeline.spec)?;
        if let Some(root) = &opts.remote_root {
            if self.artifacts.is_none() {
                return Err(EngineError::Options(format!(
                    "pipeline root {root}: this engine has no object storage configured"
                )));
            }
        }
        let parameters = resolve_pipeline_parameters(&pipeline.spec.root, params)?;
        let name = if pipeline.spec.pipeline_info.name.is_empty() {
            "pipeline".to_string()
        } else {
            pipeline.spec.pipeline_info.name.clone()
        };
        let id = opts
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let spec_text =
            serde_json::to_string(&pipeline.spec).map_err(|e| EngineError::StoredSpec {
                id: id.clone(),
                reason: e.to_string(),
            })?;
        let run = RunRecord {
            display_name: opts
                .display_name
                .clone()
                .unwrap_or_else(|| format!("{name}-{}", &id[..8])),
            pipeline_name: name,
            state: State::Pending,
            spec: spec_text,
            parameters: Value::Object(parameters),
            pipeline_root: opts
                .remote_root
                .clone()
                .unwrap_or_else(|| opts.pipeline_root.to_string_lossy().into_owned()),
            // The platform spec (kfp-kubernetes: pvcMount, secretAsEnv, nodeSelector,
            // tolerations) travels with the run, for backends that place tasks.
            options: json!({
                "parallelism": opts.parallelism,
                "cache": opts.cache,
                "platform_spec": pipeline.platform_spec,
                "schedule_time": opts.schedule_time.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                // Where tasks work when the artifacts go to object storage.
                "local_root": opts.remote_root.is_some().then(|| opts.pipeline_root.to_string_lossy().into_owned()),
                // Where its steps run: a cancel from a process placing steps
                // elsewhere could not stop them (see `cancel_orphan`).
                "step_backend": self.backend.name(),
                "service_account": opts.service_account,
            }),
            outputs: None,
            error: None,
            lease: None,
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            id,
        };
        self.store.create_run(&run).await?;
        Ok(run)
    }
}

/// The run's values for KFP's pipeline placeholders. The workspace, when the
/// pipeline declares one (`platforms.kubernetes.pipelineConfig.workspace`), is
/// a folder of the run shared by all its tasks (on the Pod task backend it lies
/// on the shared claim with the rest of the run).
fn run_values(run: &RunRecord, run_dir: &std::path::Path) -> placeholder::RunValues {
    let created = run
        .created_at
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    placeholder::RunValues {
        job_name: run.display_name.clone(),
        job_resource_name: resource_name(run),
        job_uuid: run.id.clone(),
        pipeline_root: run.pipeline_root.clone(),
        schedule_time_utc: run
            .options
            .get("schedule_time")
            .and_then(Value::as_str)
            .map_or_else(|| created.clone(), str::to_string),
        create_time_utc: created,
        workspace_path: workspace(run)
            .is_object()
            .then(|| run_dir.join(WORKSPACE_DIR).to_string_lossy().into_owned()),
        staging: artifacts::Staging::new(run_dir),
    }
}

/// The run's resource name, as KFP names a run's workflow:
/// `<pipeline name>-<5 characters>` (Argo's generated suffix there; here
/// derived from the run's id, so it stays the same across resume and retry).
pub fn resource_name(run: &RunRecord) -> String {
    // Five base-36 characters, as Argo's suffix, from a digest of the id.
    let digest = <sha2::Sha256 as sha2::Digest>::digest(run.id.as_bytes());
    let mut n = digest
        .iter()
        .take(8)
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    let alphabet = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let suffix: String = (0..5)
        .map(|_| {
            let c = char::from(alphabet[(n % 36) as usize]);
            n /= 36;
            c
        })
        .collect();
    // Kubernetes names end at 63 characters.
    let prefix: String = run.pipeline_name.chars().take(57).collect();
    format!("{}-{suffix}", prefix.trim_end_matches('-'))
}

/// The pipeline's workspace declaration (`dsl.PipelineConfig(workspace=...)`),
/// `Null` when it has none.
fn workspace(run: &RunRecord) -> &Value {
    &run.options["platform_spec"]["platforms"]["kubernetes"]["pipelineConfig"]["workspace"]
}

/// How a notice (see [`Backend::unhonoured`]) starts in a task's log.
pub const NOTE_PREFIX: &str = "[switchyard] note: ";

/// The variable that gives a step its run's Kubernetes service account.
pub const SERVICE_ACCOUNT_ENV: &str = "SWITCHYARD_SERVICE_ACCOUNT";

/// The workspace's folder inside the run's folder (a task's folder never
/// starts with a dot).
pub const WORKSPACE_DIR: &str = ".workspace";
