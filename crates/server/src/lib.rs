//! `switchyard server`: the Kubeflow Pipelines v2beta1 REST API, so the real
//! `kfp.Client` drives Switchyard unmodified.
//!
//! [`app`] builds the router over an [`AppState`] (engine + stores); runs are
//! executed inside the server by the same engine as `switchyard run`. On start
//! [`recover`] resumes runs that a previous server process left unfinished
//! (killed mid-run), without re-running tasks that had succeeded.

mod dashboard;
mod error;
mod experiments;
mod guard;
mod http;
mod jobs;
mod kpis;
mod list;
mod logs;
mod lookup;
mod messages;
mod metrics;
mod openapi;
mod package;
mod pipelines;
mod recover;
mod recurring;
mod render;
mod routes;
mod runs;
mod tags;
mod trigger;
mod ui;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use switchyard_engine::Engine;
use switchyard_store::{CatalogStore, RunStore, State as RunState};
use tokio_util::sync::CancellationToken;

pub use error::ApiError;
pub use guard::HostPolicy;
pub use recover::{keep_recovering, recover};
pub use recurring::keep_firing;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Artifacts go here unless a run names its own `pipeline_root`; runs
    /// whose root is in S3 work here too (their tasks' folders and staging).
    pub pipeline_root: PathBuf,
    /// `s3://bucket/prefix`: the default root of runs that name none.
    pub remote_root: Option<String>,
    /// Where the dashboard keeps copies of S3 artifacts it served.
    pub artifact_cache: PathBuf,
    /// Most container tasks running at once, per run.
    pub parallelism: usize,
    /// When set, every endpoint but healthz needs `Authorization: Bearer <token>`.
    pub auth_token: Option<String>,
    /// The `Host` names the server answers (DNS rebinding protection).
    pub hosts: HostPolicy,
    /// Local paths in a TrainingJob posted over HTTP (sourceDir, channels,
    /// output, checkpoint) must lie under one of these.
    pub path_roots: Vec<PathBuf>,
    /// Largest accepted request body (uploads included), in bytes.
    pub max_body_bytes: usize,
    /// Runs executing at once; more wait PENDING (the queue `/metrics` reports).
    pub max_concurrent_runs: usize,
    /// The service account of runs and recurring runs that name none (KFP's
    /// `pipeline-runner`).
    pub service_account: String,
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub runs: Arc<dyn RunStore>,
    pub catalog: Arc<dyn CatalogStore>,
    pub config: Arc<ServerConfig>,
    /// One permit per executing run.
    pub run_slots: Arc<tokio::sync::Semaphore>,
    /// Training jobs (`/apis/switchyard/v1/jobs`).
    pub jobs: Arc<switchyard_runner::JobRunner>,
    /// Runs this server has a task for (queued or executing): recovery
    /// never starts a second one.
    active: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl AppState {
    /// Executes a run in the background; `resume` keeps tasks that succeeded.
    pub fn spawn_run(&self, run_id: String, resume: bool) {
        let (engine, slots) = (self.engine.clone(), self.run_slots.clone());
        let active = self.active.clone();
        if let Ok(mut a) = active.lock() {
            a.insert(run_id.clone());
        }
        self.engine.keep_leases();
        tokio::spawn(async move {
            let _active = ActiveRun(active, run_id.clone());
            // Waits PENDING until a slot is free; a run terminated meanwhile is
            // no longer claimable and is left as it is.
            let Ok(_permit) = slots.acquire_owned().await else {
                return;
            };
            // Canceled (or deleted) while it waited: nothing to execute.
            match engine.store().get_run(&run_id).await {
                Ok(r) if r.state.is_final() => return,
                Err(switchyard_store::StoreError::RunNotFound(_)) => return,
                _ => {}
            }
            // Nobody reads the live events here (logs are served from their
            // files): without a receiver every line would pile up in the
            // channel until the run ends.
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            drop(rx);
            match engine
                .execute(&run_id, tx, CancellationToken::new(), resume)
                .await
            {
                Ok(_) => {}
                // The store failed under the run (a full disk): end the run as
                // soon as the store takes writes again, never leave it RUNNING.
                // Deleted while it ended (a delete stops a run, then removes it).
                Err(switchyard_engine::EngineError::Store(_))
                    if matches!(
                        engine.store().get_run(&run_id).await,
                        Err(switchyard_store::StoreError::RunNotFound(_))
                    ) =>
                {
                    tracing::info!(run = %run_id, "run deleted while it ended");
                }
                Err(e @ switchyard_engine::EngineError::Store(_)) => {
                    tracing::error!(run = %run_id, error = %e, "run stopped: its records could not be written");
                    end_when_store_allows(engine.store().clone(), run_id.clone(), e.to_string())
                        .await;
                }
                Err(e @ switchyard_engine::EngineError::LeaseLost { .. }) => {
                    tracing::error!(run = %run_id, error = %e, "run left to the process that took it over");
                }
                Err(e) => {
                    tracing::error!(run = %run_id, error = %e, "run could not be executed");
                }
            }
        });
    }
}

/// Removes a run from the server's active set when its task ends, however it ends.
struct ActiveRun(
    Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    String,
);

impl Drop for ActiveRun {
    fn drop(&mut self) {
        if let Ok(mut a) = self.0.lock() {
            a.remove(&self.1);
        }
    }
}

/// Ends a run whose execution stopped on a store error: FAILED with the error
/// (CANCELED if a terminate had been accepted), retried every few seconds for
/// an hour while the store still refuses writes (a full disk being cleared).
async fn end_when_store_allows(store: Arc<dyn RunStore>, run_id: String, error: String) {
    for attempt in 0..720u32 {
        let canceling = matches!(
            store.get_run(&run_id).await.map(|r| r.state),
            Ok(RunState::Canceling)
        );
        let (to, message) = if canceling {
            (RunState::Canceled, "run canceled".to_string())
        } else {
            (
                RunState::Failed,
                format!("the run's records could not be written: {error}"),
            )
        };
        let update = switchyard_store::RunUpdate {
            error: Some(message),
            finished_at: Some(chrono::Utc::now()),
            ..Default::default()
        };
        let from = [RunState::Pending, RunState::Running, RunState::Canceling];
        match store.transition_run(&run_id, &from, to, update).await {
            Ok(_) => {
                let me = &switchyard_store::Holder::current().id;
                let _ = store
                    .release(switchyard_store::Kind::Run, &run_id, me)
                    .await;
                tracing::info!(run = %run_id, state = %to, attempt, "run ended after a store failure");
                return;
            }
            Err(e) => {
                tracing::warn!(run = %run_id, error = %e, "the store still refuses the run's end; retrying in 5 s");
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
        }
    }
}

/// Creates the shared state.
pub fn state(
    engine: Engine,
    runs: Arc<dyn RunStore>,
    catalog: Arc<dyn CatalogStore>,
    jobs: switchyard_runner::JobRunner,
    config: ServerConfig,
) -> AppState {
    let slots = Arc::new(tokio::sync::Semaphore::new(
        config.max_concurrent_runs.max(1),
    ));
    AppState {
        engine,
        runs,
        catalog,
        config: Arc::new(config),
        run_slots: slots,
        jobs: Arc::new(jobs),
        active: Default::default(),
    }
}

/// Every client error in KFP's shape: what axum's extractors answer themselves
/// (query strings, JSON and UTF-8 bodies, multipart, oversize bodies, wrong
/// methods) is plain text, so it is wrapped here with its status kept.
async fn kfp_errors(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    let json = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !status.is_client_error() || json {
        return res;
    }
    if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        use axum::response::IntoResponse;
        return ApiError::body_too_large().into_response();
    }
    let body = axum::body::to_bytes(res.into_body(), 16 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_string();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("bad request")
    } else {
        &text
    };
    error::kfp_error(status, error::rpc_code(status), message)
}

/// The whole HTTP API.
pub fn app(state: AppState) -> Router {
    routes::router()
        .layer(axum::middleware::from_fn(kfp_errors))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::check,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(
            state.config.max_body_bytes,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
