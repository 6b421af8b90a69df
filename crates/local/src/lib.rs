//! The local backend: a job becomes a process group on this machine.
//!
//! The container image is recorded, not pulled: the command runs on the host.
//! KFP Python components are recognised by the pip preamble the SDK puts in
//! front of them; instead of letting that preamble install packages into the
//! user's interpreter, [`venv`] builds (once, cached by package set) a virtual
//! environment and the component runs there with no network call.

pub mod admission;
mod guard;
mod process;
mod requirements;
pub mod training;
pub mod venv;
mod warm;

use std::path::PathBuf;
use std::time::Duration;

use switchyard_backend::{Backend, BackendError, Job, LogSink, StepOutcome, VolumeClaim};
use tokio_util::sync::CancellationToken;

/// Settings of the local backend.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Where managed virtual environments live (shared by all runs).
    pub venv_dir: PathBuf,
    /// The interpreter used to create them.
    pub python: String,
    /// `uv`, when available: environments are built with it (same recipe,
    /// same cache key), with pip as the fallback.
    pub uv: Option<PathBuf>,
    /// How long a cancelled job gets between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Put first on every task's PATH (the folder of the `switchyard` binary, so
    /// components such as training-job can call it).
    pub tool_dir: Option<PathBuf>,
    /// Set for every task (`SWITCHYARD_HOME`, `SWITCHYARD_INVOCATION_DIR`).
    pub extra_env: std::collections::BTreeMap<String, String>,
    /// Run KFP Python steps as forks of a warm interpreter per environment
    /// (see [`warm`]); off, each starts a fresh interpreter.
    pub warm_python: bool,
}

/// Runs jobs as local process groups.
pub struct LocalBackend {
    config: LocalConfig,
    warm: warm::WarmPythons,
    /// Set once a warm start failed and the step started plainly (said once).
    warm_failed: std::sync::atomic::AtomicBool,
}

impl LocalBackend {
    pub fn new(config: LocalConfig) -> Self {
        LocalBackend {
            config,
            warm: warm::WarmPythons::default(),
            warm_failed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// How a step started here is watched: its log, its cancel, the grace
    /// period before SIGKILL.
    fn watch(&self, logs: &LogSink, cancel: &CancellationToken) -> process::Watch {
        process::Watch {
            logs: logs.clone(),
            cancel: cancel.clone(),
            grace: self.config.kill_grace,
        }
    }
}

#[async_trait::async_trait]
impl Backend for LocalBackend {
    fn name(&self) -> &'static str {
        "local"
    }

    fn unhonoured(&self, job: &Job) -> Vec<String> {
        unhonoured(job)
    }

    /// A claim is a folder of the run here: its size, access modes and
    /// storage class have no meaning on one machine, and steps that mount it
    /// on Kubernetes do not see it mounted (they are processes).
    async fn create_volume(&self, claim: &VolumeClaim) -> Result<String, BackendError> {
        std::fs::create_dir_all(&claim.local_dir).map_err(|e| {
            BackendError::Permanent(format!(
                "cannot create the folder {} for the volume '{}': {e}",
                claim.local_dir.display(),
                claim.name
            ))
        })?;
        Ok(format!(
            "the volume '{}' ({} requested) is the folder {} on this machine: steps that mount it on Kubernetes do not see it mounted here",
            claim.name,
            claim.size,
            claim.local_dir.display()
        ))
    }

    async fn delete_volume(
        &self,
        _run_id: &str,
        name: &str,
        local_dir: &std::path::Path,
    ) -> Result<String, BackendError> {
        match std::fs::remove_dir_all(local_dir) {
            Ok(()) => Ok(format!(
                "deleted the volume '{name}' (the folder {})",
                local_dir.display()
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(format!("the volume '{name}' was already gone"))
            }
            Err(e) => Err(BackendError::Permanent(format!(
                "cannot delete the folder {} of the volume '{name}': {e}",
                local_dir.display()
            ))),
        }
    }

    async fn run(
        &self,
        job: Job,
        logs: LogSink,
        cancel: CancellationToken,
    ) -> Result<StepOutcome, BackendError> {
        let mut argv = job.argv.clone();
        let mut env = job.env.clone();
        for (k, v) in &self.config.extra_env {
            env.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let base_path = std::env::var("PATH").unwrap_or_default();
        let base_path = match &self.config.tool_dir {
            Some(dir) => format!("{}:{base_path}", dir.display()),
            None => base_path,
        };
        env.entry("PATH".into()).or_insert(base_path);
        let mut remove_env: Vec<&str> = Vec::new();
        if let Some(plan) = venv::KfpPythonComponent::detect(&argv) {
            let bin = tokio::select! {
                r = venv::ensure(&self.config, &plan, logs.clone()) => r.map_err(BackendError::Permanent)?,
                _ = cancel.cancelled() => return Ok(StepOutcome::Canceled),
            };
            argv = plan.program_argv;
            let path = env.get("PATH").cloned().unwrap_or_default();
            env.insert("PATH".into(), format!("{}:{path}", bin.display()));
            env.insert(
                "VIRTUAL_ENV".into(),
                bin.parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            );
            env.entry("PYTHONUNBUFFERED".into())
                .or_insert_with(|| "1".into());
            // This machine's own settings would leak into the managed
            // environment; the step's own (the container's env, the engine's
            // artifact hook) are kept.
            remove_env.extend(
                ["PYTHONPATH", "PYTHONHOME"]
                    .into_iter()
                    .filter(|k| !job.env.contains_key(*k)),
            );
            let step = self
                .config
                .warm_python
                .then(|| warm::Step::from_launcher(&argv))
                .flatten();
            if let (Some(step), Some(venv)) = (step, bin.parent()) {
                // The environment a plain start would give the step.
                let mut full: std::collections::BTreeMap<String, String> =
                    std::env::vars().collect();
                full.extend(env.clone());
                for k in &remove_env {
                    full.remove(*k);
                }
                full.insert("_KFP_RUNTIME".into(), "true".into());
                let ran = self
                    .warm
                    .run(venv, step, full, &job.work_dir, self.watch(&logs, &cancel))
                    .await;
                match ran {
                    Ok(outcome) => return outcome,
                    Err(warm::Fallback(why)) => {
                        let first = !self
                            .warm_failed
                            .swap(true, std::sync::atomic::Ordering::SeqCst);
                        if first {
                            tracing::warn!(reason = %why, "a Python step starts without its warm interpreter");
                        }
                        logs(&format!(
                            "[switchyard] note: this step starts a fresh interpreter: {why}"
                        ));
                    }
                }
            }
        }
        let watch = self.watch(&logs, &cancel);
        process::run_process(&argv, &env, &remove_env, &job.work_dir, watch).await
    }
}

/// What a step asks for that a process on this machine does not get: its
/// kfp-kubernetes settings, an accelerator, CPU and memory requests or limits.
fn unhonoured(job: &Job) -> Vec<String> {
    let mut out = Vec::new();
    let given = |v: &serde_json::Value| match v {
        serde_json::Value::Null => false,
        serde_json::Value::Object(m) => !m.is_empty(),
        serde_json::Value::Array(a) => !a.is_empty(),
        _ => true,
    };
    for (platform, settings) in &job.platform {
        let keys: Vec<&str> = settings
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| given(v))
            .map(|(k, _)| k.as_str())
            .collect();
        if keys.is_empty() {
            continue;
        }
        out.push(if platform == "kubernetes" {
            format!(
                "kfp-kubernetes settings ({}) are ignored: the local backend runs steps as processes on this machine (SWITCHYARD_TASK_BACKEND=kubernetes runs them as Pods)",
                keys.join(", ")
            )
        } else {
            format!(
                "{platform} platform settings ({}) are ignored: the local backend runs steps as processes on this machine",
                keys.join(", ")
            )
        });
    }
    if let Some(account) = &job.service_account {
        out.push(format!(
            "the service account '{account}' is not used: the local backend runs steps as this machine's user"
        ));
    }
    let r = &job.resources;
    if let Some(acc) = r.accelerator.as_ref().filter(|a| a.count != "0") {
        out.push(format!(
            "the request for {} {} is not honoured: the local backend runs steps on this machine as it is",
            acc.count, acc.kind
        ));
    }
    if r.has_cpu_or_memory() {
        out.push(
            "CPU and memory requests and limits are not enforced by the local backend".to_string(),
        );
    }
    out
}
