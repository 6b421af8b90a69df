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
pub mod expr;
pub mod fingerprint;
pub mod io;
mod orphan;
pub mod placeholder;
pub mod resources;
pub mod retry;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use switchyard_spec::params::resolve_pipeline_parameters;
use switchyard_spec::{validate, ParsedPipeline, SpecError};
use switchyard_store::{Holder, RunRecord, RunStore, RunUpdate, State, StoreError};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use artifacts::{ArtifactStore, PipelineRoot};
pub use backend::{Accelerator, Backend, BackendError, Job, JobOutcome, LogSink, Resources};
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
    keeper: Arc<std::sync::OnceLock<()>>,
    artifacts: Option<Arc<dyn ArtifactStore>>,
}

impl Engine {
    pub fn new(store: Arc<dyn RunStore>, backend: Arc<dyn Backend>, logs_dir: PathBuf) -> Self {
        Engine {
            store,
            backend,
            logs_dir,
            keeper: Arc::new(std::sync::OnceLock::new()),
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

    /// Starts (once, on the current runtime) the task that renews the leases
    /// of every run this process holds, executing or queued: one statement
    /// per renewal period. `execute` starts it too; a server starts it before
    /// it takes runs that wait for a slot.
    pub fn keep_leases(&self) {
        self.keeper.get_or_init(|| {
            let store = self.store.clone();
            tokio::spawn(async move {
                let me = Holder::current();
                let mut tick = tokio::time::interval(switchyard_store::renew_every());
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if let Err(e) = store
                        .renew_run_leases(&me.id, switchyard_store::expiry())
                        .await
                    {
                        tracing::warn!(error = %e, "could not renew this process's run leases");
                    }
                }
            });
        });
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

    /// Drives a run to a final state. With `resume`, tasks that already
    /// succeeded in this run are kept, not run again. `cancel` (or a cancel
    /// request written to the store by another process) stops it.
    pub async fn execute(
        &self,
        run_id: &str,
        events: EventSender,
        cancel: CancellationToken,
        resume: bool,
    ) -> Result<RunRecord, EngineError> {
        let run = self.store.get_run(run_id).await?;
        // Unfinished when taken: its process died mid-run (see RunCtx::reattach).
        let reattach = resume && !run.state.is_final();
        let from: &[State] = if resume {
            &[
                State::Running,
                State::Failed,
                State::Canceled,
                State::Canceling,
                State::Pending,
            ]
        } else {
            &[State::Pending]
        };
        // Never take a run another process holds: a live owner of this host,
        // or an unexpired lease (a server elsewhere on the same database).
        if let Some(lease) = run.lease.as_ref().filter(|l| l.held() && !l.is_mine()) {
            return Err(EngineError::State {
                id: run.id.clone(),
                action: if resume { "resumed" } else { "started" },
                reason: format!(
                    "process {} on {} holds it (lease until {})",
                    lease.pid, lease.host, lease.until
                ),
            });
        }
        self.keep_leases();
        let me = Holder::current();
        // Claim the run: exactly one process executes it, even if two resume it at once.
        let started = self
            .store
            .claim_run(
                &run.id,
                from,
                run.lease.as_ref(),
                &me.lease(),
                State::Running,
                RunUpdate {
                    started_at: Some(Utc::now()),
                    reset: resume,
                    ..Default::default()
                },
            )
            .await?;
        if !started {
            return Err(EngineError::State {
                id: run.id.clone(),
                action: if resume { "resumed" } else { "started" },
                reason: format!(
                    "it is {} (or another process took it first)",
                    self.store.get_run(&run.id).await?.state
                ),
            });
        }
        // A stored spec that cannot be executed (e.g. recorded before a limit
        // existed) fails its run instead of leaving it RUNNING or crashing.
        // Off the runtime: a large spec takes a while to read back.
        let (stored, id) = (run.spec.clone(), run.id.clone());
        let read = tokio::task::spawn_blocking(move || {
            serde_json::from_str::<Value>(&stored)
                .map_err(|e| EngineError::StoredSpec {
                    id,
                    reason: e.to_string(),
                })
                .and_then(|v| Ok(switchyard_spec::parse::from_value(v)?))
                .and_then(|spec| {
                    validate(&spec)?;
                    Ok(spec)
                })
        })
        .await
        .unwrap_or_else(|e| {
            Err(EngineError::StoredSpec {
                id: run.id.clone(),
                reason: format!("reading it failed: {e}"),
            })
        });
        let spec = match read {
            Ok(spec) => spec,
            Err(e) => {
                let update = RunUpdate {
                    error: Some(format!("the run cannot be executed: {e}")),
                    finished_at: Some(Utc::now()),
                    if_owned_by: Some(me.id.clone()),
                    ..Default::default()
                };
                self.store
                    .transition_run(&run.id, &[State::Running], State::Failed, update)
                    .await?;
                return Err(e);
            }
        };
        let parallelism = run
            .options
            .get("parallelism")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .max(1) as usize;
        let cache = run
            .options
            .get("cache")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let lost = CancellationToken::new();
        let local_root = run.options["local_root"]
            .as_str()
            .unwrap_or(&run.pipeline_root);
        let run_dir = PathBuf::from(local_root)
            .join(&run.pipeline_name)
            .join(&run.id);
        let remote_base = artifacts::is_remote(&run.pipeline_root).then(|| {
            format!(
                "{}/{}/{}",
                run.pipeline_root.trim_end_matches('/'),
                run.pipeline_name,
                run.id
            )
        });
        let ctx = Arc::new(driver::RunCtx {
            run_id: run.id.clone(),
            run_dir: run_dir.clone(),
            run_values: run_values(&run, &run_dir),
            logs_dir: self.logs_dir.join(&run.id),
            spec,
            cache,
            resume,
            reattach,
            slots: Semaphore::new(parallelism),
            cancel: cancel.clone(),
            events,
            store: self.store.clone(),
            backend: self.backend.clone(),
            artifacts: self.artifacts.clone(),
            remote_base,
            lost: lost.clone(),
            owner: me.id.clone(),
            workspace_size: workspace(&run)["size"].as_str().map(str::to_string),
            notices: Mutex::new(Default::default()),
            failures: Mutex::new(Vec::new()),
            service_account: run.options["service_account"]
                .as_str()
                .filter(|a| !a.is_empty())
                .map(str::to_string),
            platform_executors: run.options["platform_spec"]["platforms"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(name, p)| (name.clone(), p["deploymentSpec"]["executors"].clone()))
                .collect(),
        });

        // Another process (`switchyard runs cancel`, the server) asks through
        // the store; a process that took the run over (this one's lease
        // expired) shows as a new owner, and this execution stops unrecorded.
        let stop = CancellationToken::new();
        let watcher = {
            let (store, id, cancel, stop, lost) = (
                self.store.clone(),
                run.id.clone(),
                cancel.clone(),
                stop.clone(),
                lost.clone(),
            );
            tokio::spawn(async move {
                let mut taken_by = None;
                loop {
                    tokio::select! {
                        biased;
                        // A fenced task write found another owner first (it
                        // may also have ended the run's tasks, hence before `stop`).
                        _ = lost.cancelled() => {
                            let owner = store.run_control(&id).await.ok().and_then(|c| c.owner);
                            taken_by = Some(owner.unwrap_or_else(|| "nobody".into()));
                            break;
                        }
                        _ = stop.cancelled() => return taken_by,
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {
                            let Ok(control) = store.run_control(&id).await else { continue };
                            if control.owner.as_deref() != Some(me.id.as_str()) {
                                let owner = control.owner.unwrap_or_else(|| "nobody".into());
                                tracing::error!(run = %id, %owner, "this process lost the run to another; stopping its execution");
                                lost.cancel();
                                cancel.cancel();
                                taken_by = Some(owner);
                                break;
                            }
                            if control.cancel_requested {
                                cancel.cancel();
                                break;
                            }
                        }
                    }
                }
                if taken_by.is_none() {
                    let _ = store
                        .transition_run(
                            &id,
                            &[State::Running],
                            State::Canceling,
                            RunUpdate {
                                if_owned_by: Some(me.id.clone()),
                                ..Default::default()
                            },
                        )
                        .await;
                }
                stop.cancelled().await;
                taken_by
            })
        };

        let params = run.parameters.as_object().cloned().unwrap_or_default();
        let outcome = driver::run_dag(
            ctx.clone(),
            driver::Scope::default(),
            "root".into(),
            Io {
                parameters: params,
                ..Default::default()
            },
        )
        .await;
        let (state, error) = if cancel.is_cancelled() {
            (State::Canceled, Some("run canceled".to_string()))
        } else {
            match outcome.state {
                State::Succeeded | State::Skipped => (State::Succeeded, None),
                s => {
                    let failures = ctx.failures.lock().map(|f| f.clone()).unwrap_or_default();
                    let msg = match failures.split_first() {
                        Some(((_, first), [])) => first.clone(),
                        Some(((_, first), rest)) => {
                            format!("{first} (and {} more failed tasks)", rest.len())
                        }
                        None => outcome.error.clone().unwrap_or_else(|| "run failed".into()),
                    };
                    (s, Some(msg))
                }
            }
        };
        stop.cancel();
        if let Ok(Some(owner)) = watcher.await {
            return Err(EngineError::LeaseLost {
                id: run.id.clone(),
                owner,
            });
        }
        // A terminate accepted while the last task finished still wins: the
        // answer it got must match how the run ends.
        let (state, error) = if state != State::Canceled
            && self.store.cancel_requested(&run.id).await.unwrap_or(false)
        {
            (State::Canceled, Some("run canceled".to_string()))
        } else {
            (state, error)
        };
        let outputs = (state == State::Succeeded).then(|| outcome.outputs.to_user_json());
        let mut finished = self
            .store
            .transition_run(
                &run.id,
                &[State::Running],
                state,
                RunUpdate {
                    outputs,
                    error,
                    finished_at: Some(Utc::now()),
                    if_owned_by: Some(me.id.clone()),
                    ..Default::default()
                },
            )
            .await?;
        if !finished {
            // CANCELING (a terminate took it there meanwhile) ends CANCELED, never SUCCEEDED.
            finished = self
                .store
                .transition_run(
                    &run.id,
                    &[State::Canceling],
                    State::Canceled,
                    RunUpdate {
                        error: Some("run canceled".into()),
                        finished_at: Some(Utc::now()),
                        if_owned_by: Some(me.id.clone()),
                        ..Default::default()
                    },
                )
                .await?;
        }
        self.store.release_run(&run.id, &me.id).await?;
        if !finished {
            // Someone moved the run while it executed (e.g. marked it canceled).
            return Err(EngineError::State {
                id: run.id.clone(),
                action: "finished",
                reason: format!(
                    "it was moved to {} by another process meanwhile",
                    self.store.get_run(&run.id).await?.state
                ),
            });
        }
        Ok(self.store.get_run(&run.id).await?)
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
