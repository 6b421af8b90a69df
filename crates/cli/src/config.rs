//! Where Switchyard keeps its files, from flags and the environment.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use std::sync::Arc;

use switchyard_runner::JobRunner;

use crate::backends::{BackendConfig, ConfiguredBackends};
use switchyard_local::training::LocalTrainingConfig;
use switchyard_local::LocalConfig;
use switchyard_store::JobStore;

/// Resolved locations.
#[derive(Debug, Clone)]
pub struct Paths {
    pub home: PathBuf,
    pub db: PathBuf,
    pub logs: PathBuf,
    pub artifacts: PathBuf,
    pub venvs: PathBuf,
    pub jobs: PathBuf,
}

impl Paths {
    /// `--home`, else `$SWITCHYARD_HOME`, else `~/.switchyard`.
    pub fn resolve(home: Option<PathBuf>) -> Result<Paths> {
        let home = match home {
            Some(h) => h,
            None => {
                let user = std::env::var_os("HOME")
                    .context("neither --home, SWITCHYARD_HOME nor HOME is set")?;
                PathBuf::from(user).join(".switchyard")
            }
        };
        std::fs::create_dir_all(&home)
            .with_context(|| format!("cannot create data directory {}", home.display()))?;
        let home = home
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", home.display()))?;
        let venvs = std::env::var_os("SWITCHYARD_VENV_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join("venvs"));
        Ok(Paths {
            db: home.join("switchyard.db"),
            logs: home.join("logs"),
            artifacts: home.join("artifacts"),
            venvs,
            jobs: home.join("jobs"),
            home,
        })
    }

    fn kill_grace() -> Duration {
        Duration::from_secs(
            std::env::var("SWITCHYARD_KILL_GRACE_SECONDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(10),
        )
    }

    /// The job runner: jobs under `<home>/jobs`, the admission ledger beside
    /// them, scripts run by `SWITCHYARD_TRAINING_PYTHON` (default python3), EFS
    /// mounts from `SWITCHYARD_EFS_MOUNTS`, S3 downloads cached in `<home>/cache/s3`.
    pub fn job_runner(&self, store: Arc<dyn JobStore>) -> Result<JobRunner> {
        let efs = std::env::var("SWITCHYARD_EFS_MOUNTS").unwrap_or_default();
        let config = BackendConfig {
            jobs_dir: self.jobs.clone(),
            admission_file: self.home.join("admission.json"),
            python: std::env::var("SWITCHYARD_TRAINING_PYTHON")
                .unwrap_or_else(|_| "python3".into()),
            efs_mounts: LocalTrainingConfig::parse_efs_mounts(&efs).map_err(anyhow::Error::msg)?,
            kill_grace: Self::kill_grace(),
            s3_cache: self.home.join("cache/s3"),
        };
        Ok(JobRunner::new(
            store,
            Arc::new(ConfiguredBackends { config }),
            self.jobs.clone(),
        ))
    }

    /// `SWITCHYARD_UV` (a path, or `off`), else `uv` on PATH.
    fn uv() -> Option<PathBuf> {
        match std::env::var("SWITCHYARD_UV") {
            Ok(v) if v == "off" || v.is_empty() => None,
            Ok(v) => Some(PathBuf::from(v)),
            Err(_) => std::env::var_os("PATH").and_then(|path| {
                std::env::split_paths(&path)
                    .map(|d| d.join("uv"))
                    .find(|p| p.is_file())
            }),
        }
    }

    pub fn local_backend(&self) -> LocalConfig {
        LocalConfig {
            venv_dir: self.venvs.clone(),
            python: std::env::var("SWITCHYARD_PYTHON").unwrap_or_else(|_| "python3".into()),
            uv: Self::uv(),
            kill_grace: Self::kill_grace(),
            warm_python: true,
            tool_dir: std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(PathBuf::from)),
            extra_env: [
                (
                    "SWITCHYARD_HOME".to_string(),
                    self.home.to_string_lossy().into_owned(),
                ),
                (
                    "SWITCHYARD_INVOCATION_DIR".to_string(),
                    std::env::current_dir()
                        .map(|d| d.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                ),
            ]
            .into_iter()
            .collect(),
        }
    }
}
