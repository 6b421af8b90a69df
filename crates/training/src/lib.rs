//! The backend-neutral training job.
//!
//! A user writes one `TrainingJob` document ([`spec`]); [`validate`] checks it
//! and resolves it into a [`TrainingJob`]; a [`TrainingBackend`] runs it (this
//! machine, a PyTorchJob, a SageMaker training job) and every rank sees the same
//! environment and files ([`contract`]), so the script never changes. Metrics
//! are scraped from log lines the same way everywhere ([`MetricScraper`]).

pub mod contract;
pub mod job;
pub mod kpi;
pub mod modeltrainer;
pub mod placement;
pub mod python;
pub mod shell;
pub mod slots;
pub mod spec;
pub mod validate;

use std::collections::BTreeMap;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use job::{
    check_path_roots, local_paths, Channel, ChannelSource, PathOutside, TrainingJob, LABEL_RUN_ID,
    LABEL_TASK,
};
pub use spec::{
    BackendKind, Contract, KubernetesApi, KubernetesSettings, Objective, PlacementSpec,
    RestartPolicy, SageMakerSettings, TrainingJobSpec,
};
pub use validate::load;

/// The one apiVersion this version reads.
pub const API_VERSION: &str = "switchyard/v1";

/// A TrainingJob document that cannot be run; names the field and the fix.
#[derive(Debug, thiserror::Error)]
pub enum JobSpecError {
    #[error("malformed TrainingJob YAML: {0}")]
    Yaml(String),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

/// Something that happened while a job ran.
#[derive(Debug, Clone)]
pub enum JobEvent {
    /// One line from one rank.
    Log {
        host: String,
        rank: u32,
        line: String,
    },
    /// A managed platform reports the job running (SageMaker's Training phase).
    Running {
        message: String,
    },
    /// The gang (re)started: attempt 0 is the first start.
    Started {
        attempt: u32,
        master_port: u16,
    },
    /// The gang failed and will be restarted.
    Restarting {
        attempt: u32,
        reason: String,
    },
    /// Waiting for resources, or another state a person should see.
    Status {
        message: String,
    },
    Metric {
        name: String,
        value: f64,
    },
    /// Where the job runs, for people to find it: `{"kind": "local", "host": …}`,
    /// `{"kind": "sagemaker", "training_job_name": …, "console_url": …}`.
    Placement {
        details: serde_json::Value,
    },
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    Succeeded,
    Failed,
    Canceled,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainingOutcome {
    pub state: JobState,
    pub restarts: u32,
    /// Where the model is: the `output` location, or rank 0's model directory.
    pub model: Option<String>,
    /// Last value of each metric seen in the logs.
    pub metrics: BTreeMap<String, f64>,
    pub failure_reason: Option<String>,
}

/// Failures of the backend itself (not of the training script): the same
/// error type as a pipeline step's backend (retryable or permanent), one for
/// everything that runs work.
pub use switchyard_backend::BackendError;

pub type JobEvents = tokio::sync::mpsc::UnboundedSender<JobEvent>;

/// What [`TrainingBackend::stop`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// A remote job was asked to stop (names it: people look for it).
    Remote(String),
    /// Nothing ran without its follower (a local gang dies with it).
    Nothing(String),
}

/// Runs a training job somewhere. `job_id` is unique per submission and names
/// what the backend creates, so a repeated call is recognisable: calling
/// `run` again with the same id follows the job already submitted (this is
/// how a job whose follower died is re-attached) instead of starting another.
#[async_trait::async_trait]
pub trait TrainingBackend: Send + Sync {
    fn kind(&self) -> BackendKind;
    /// Refuses, before anything is recorded or started, a job this backend
    /// cannot run here (an unmapped EFS channel, a missing credential).
    fn preflight(&self, _job: &TrainingJob) -> Result<(), BackendError> {
        Ok(())
    }
    /// What this backend says of running `job` now, for `backend: auto`
    /// ([`placement`]): by default whether its preflight accepts the job,
    /// with room now and no cost counted.
    async fn assess(&self, job: &TrainingJob) -> placement::Assessment {
        match self.preflight(job) {
            Err(e) => placement::Assessment::refused(self.kind(), e.to_string()),
            Ok(()) => placement::Assessment::can_run(self.kind(), true, "", None),
        }
    }
    async fn run(
        &self,
        job: &TrainingJob,
        job_id: &str,
        events: JobEvents,
        cancel: CancellationToken,
    ) -> Result<TrainingOutcome, BackendError>;
    /// What an hour of `job` holds and costs here (placement's cost, the
    /// KPIs): by default its own requests, its cost not counted.
    fn rates(&self, job: &TrainingJob) -> kpi::Rates {
        kpi::Rates::requested(job, None)
    }

    /// Where this backend would keep `job`'s checkpoint when it cannot read
    /// it where it is (a job placed here, or failed over from a backend
    /// that kept it elsewhere): `None` when it reads it as it is.
    fn checkpoint_home(&self, _job: &TrainingJob) -> Option<String> {
        None
    }

    /// `job` as it runs here: its checkpoint copied to
    /// [`checkpoint_home`](Self::checkpoint_home) (so the script resumes from
    /// the last one saved elsewhere) and `spec.checkpoint` pointed there.
    async fn take_checkpoint(&self, job: &TrainingJob) -> Result<TrainingJob, BackendError> {
        Ok(job.clone())
    }

    /// Stops the job `job_id` with no `run` following it (its follower died):
    /// from what `job` and `job_id` name alone, so a SageMaker job or a
    /// PyTorchJob does not keep running, and billing, after a cancel.
    async fn stop(&self, _job: &TrainingJob, _job_id: &str) -> Result<Stopped, BackendError> {
        Ok(Stopped::Nothing(
            "its processes ended with the process that followed them".into(),
        ))
    }
}

/// What a channel download did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DownloadStats {
    pub downloaded: u64,
    pub cached: u64,
    pub bytes: u64,
}

/// An object store (S3) as backends need it: channels in, models and
/// checkpoints out. Implemented over the AWS SDK in `switchyard-s3`; backends
/// see only this.
#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync {
    /// Mirrors `s3://bucket/prefix` into a local cache folder (only what changed)
    /// and returns that folder. An empty prefix is an error.
    async fn download_prefix(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<(std::path::PathBuf, DownloadStats), String>;
    /// Copies every object under the prefix into `dest` (nothing if there is none).
    async fn download_into(
        &self,
        bucket: &str,
        prefix: &str,
        dest: &std::path::Path,
    ) -> Result<DownloadStats, String>;
    /// Uploads every file under `dir` (or the one file `dir`) to `s3://bucket/prefix/<relative path>`.
    async fn upload_dir(
        &self,
        dir: &std::path::Path,
        bucket: &str,
        prefix: &str,
    ) -> Result<u64, String>;
}

/// `s3://bucket/prefix` → (bucket, prefix).
pub fn parse_s3_uri(uri: &str) -> Option<(String, String)> {
    let rest = uri.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then(|| (bucket.to_string(), prefix.to_string()))
}

/// Scrapes `metrics` regexes from log lines (the same way on every backend,
/// as SageMaker's MetricDefinitions do).
#[derive(Clone)]
pub struct MetricScraper {
    defs: Vec<(String, regex::Regex)>,
}

impl MetricScraper {
    pub fn new(job: &TrainingJob) -> Self {
        MetricScraper {
            defs: job.metrics.clone(),
        }
    }

    /// Every (metric, value) the line carries.
    pub fn scrape(&self, line: &str) -> Vec<(String, f64)> {
        self.defs
            .iter()
            .filter_map(|(name, re)| {
                let caps = re.captures(line)?;
                let v: f64 = caps.get(1)?.as_str().parse().ok()?;
                Some((name.clone(), v))
            })
            .collect()
    }
}

/// One file of a job's `sourceDir`.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path relative to `sourceDir`, with `/`.
    pub rel: String,
    pub path: std::path::PathBuf,
    pub size: u64,
}

/// The files a backend ships from `sourceDir`, sorted by path; bytecode caches
/// and `.git` are left out (they differ run to run and mean nothing in another
/// image), file symlinks are followed.
pub fn source_files(dir: &std::path::Path) -> std::io::Result<Vec<SourceFile>> {
    files_except(dir, &["__pycache__", ".git"])
}

/// The files of a job's code as its contract ships them: ModelTrainer leaves
/// out more names than the toolkit ([`modeltrainer::IGNORED`]).
pub fn code_files(job: &TrainingJob, dir: &std::path::Path) -> std::io::Result<Vec<SourceFile>> {
    match job.spec.contract {
        Contract::ModelTrainer => files_except(dir, &modeltrainer::IGNORED),
        Contract::Toolkit => source_files(dir),
    }
}

/// Every file under `dir` but those under a name in `skip` (at any level).
fn files_except(dir: &std::path::Path, skip: &[&str]) -> std::io::Result<Vec<SourceFile>> {
    fn walk(
        root: &std::path::Path,
        d: &std::path::Path,
        skip: &[&str],
        out: &mut Vec<SourceFile>,
    ) -> std::io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(d)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name();
            if skip.iter().any(|s| name == *s) {
                continue;
            }
            let path = e.path();
            let ty = e.file_type()?;
            if ty.is_dir() {
                walk(root, &path, skip, out)?;
            } else if ty.is_file() || (ty.is_symlink() && path.is_file()) {
                out.push(SourceFile {
                    rel: path
                        .strip_prefix(root)
                        .unwrap_or(&path)
                        .to_string_lossy()
                        .into_owned(),
                    size: std::fs::metadata(&path)?.len(),
                    path,
                });
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, skip, &mut out)?;
    Ok(out)
}

/// The first `hex_len` hex digits of SHA-256(`text`): stable across processes
/// and Rust versions, so a name derived from a job id is the same name on
/// every resubmission (SageMaker jobs, PyTorchJobs, task pods).
pub fn short_digest(text: &str, hex_len: usize) -> String {
    let full = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()));
    full[..hex_len.min(full.len())].to_string()
}
