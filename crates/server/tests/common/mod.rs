//! What the HTTP API tests share: a server in-process (`app(state)`) over a
//! temporary SQLite store, a scripted step backend and no training backend,
//! and the requests and assertions they make.
#![allow(dead_code)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::Value;
use switchyard_backend::fake::ScriptedBackend;
use switchyard_engine::Engine;
use switchyard_runner::{Backends, JobRunner, RunnerError};
use switchyard_server::{app, state, HostPolicy, ServerConfig};
use switchyard_store::SqlStore;
use switchyard_training::{TrainingBackend, TrainingJob};
use tower::ServiceExt;

/// No training backend is configured: every job is refused, saying so.
/// Stopping a job by its identity works, and is recorded.
#[derive(Default)]
pub struct NoTraining {
    pub stops: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl TrainingBackend for NoTraining {
    fn kind(&self) -> switchyard_training::BackendKind {
        switchyard_training::BackendKind::Sagemaker
    }
    async fn run(
        &self,
        _: &TrainingJob,
        _: &str,
        _: switchyard_training::JobEvents,
        _: tokio_util::sync::CancellationToken,
    ) -> Result<switchyard_training::TrainingOutcome, switchyard_training::BackendError> {
        Err(switchyard_training::BackendError::Permanent(
            "no training backend in this test".into(),
        ))
    }
    async fn stop(
        &self,
        _: &TrainingJob,
        id: &str,
    ) -> Result<switchyard_training::Stopped, switchyard_training::BackendError> {
        self.stops.lock().expect("stops").push(id.to_string());
        Ok(switchyard_training::Stopped::Remote(format!(
            "training job {id}"
        )))
    }
}

/// Jobs that are only ever stopped (see [`NoTraining`]).
pub struct StopsOnly(Arc<NoTraining>);

#[async_trait::async_trait]
impl Backends for StopsOnly {
    async fn backend_for(&self, _: &TrainingJob) -> Result<Arc<dyn TrainingBackend>, RunnerError> {
        Ok(self.0.clone())
    }

    async fn fetch_model(
        &self,
        _: &TrainingJob,
        _: &str,
        _: &std::path::Path,
    ) -> Result<(), RunnerError> {
        Err(RunnerError::Refused(
            "no training backend in this test".into(),
        ))
    }
}

pub struct Server {
    pub router: axum::Router,
    pub backend: Arc<ScriptedBackend>,
    /// The server's engine and store, for a run executed "elsewhere".
    pub engine: Engine,
    pub store: Arc<SqlStore>,
    pub state: switchyard_server::AppState,
    pub training: Arc<NoTraining>,
    pub _dir: tempfile::TempDir,
}

pub async fn server(token: Option<&str>, max_body_bytes: usize) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(SqlStore::open(&dir.path().join("db")).await.expect("store"));
    let backend = Arc::new(ScriptedBackend::new());
    let engine = Engine::new(store.clone(), backend.clone(), dir.path().join("logs"));
    let training = Arc::new(NoTraining::default());
    let jobs = JobRunner::new(
        store.clone(),
        Arc::new(StopsOnly(training.clone())),
        dir.path().join("jobs"),
    );
    let config = ServerConfig {
        pipeline_root: dir.path().join("root"),
        remote_root: None,
        artifact_cache: dir.path().join("cache"),
        parallelism: 2,
        auth_token: token.map(str::to_string),
        hosts: HostPolicy {
            bound: "127.0.0.1".parse().ok(),
            ..Default::default()
        },
        path_roots: vec![dir.path().to_path_buf()],
        max_body_bytes,
        max_concurrent_runs: 2,
        service_account: "pipeline-runner".into(),
    };
    let state = state(engine.clone(), store.clone(), store.clone(), jobs, config);
    Server {
        router: app(state.clone()),
        backend,
        engine,
        store,
        state,
        training,
        _dir: dir,
    }
}

pub fn request(method: Method, uri: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "127.0.0.1:8888")
}

pub async fn send(s: &Server, req: Request<Body>) -> (StatusCode, Value) {
    let res = s.router.clone().oneshot(req).await.expect("answered");
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 24)
        .await
        .expect("body");
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, body)
}

pub async fn get(s: &Server, uri: &str) -> (StatusCode, Value) {
    send(
        s,
        request(Method::GET, uri)
            .body(Body::empty())
            .expect("request"),
    )
    .await
}

pub async fn post_json(s: &Server, uri: &str, body: &Value) -> (StatusCode, Value) {
    let req = request(Method::POST, uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    send(s, req).await
}

/// KFP's error body: `error` and `message` alike, google.rpc `code`, `details`.
pub fn assert_kfp_error(body: &Value, code: i64, needle: &str) {
    assert_eq!(body["code"], code, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert_eq!(body["error"].as_str(), Some(message), "{body}");
    assert!(body["details"].is_array(), "{body}");
    assert!(
        message.contains(needle),
        "expected '{needle}' in: {message}"
    );
}

/// A kfp-compiled engine fixture, as its YAML text.
pub fn fixture_text(name: &str) -> String {
    // At run time: a test binary built by another checkout sharing the
    // target folder must read this checkout's files.
    let path = format!(
        "{}/../engine/tests/fixtures/{name}.yaml",
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
    );
    std::fs::read_to_string(path).expect("fixture")
}

/// A kfp-compiled engine fixture, as JSON.
pub fn fixture(name: &str) -> Value {
    serde_saphyr::from_str(&fixture_text(name)).expect("kfp-compiled YAML")
}
