//! Training jobs on this machine: `nodes × procsPerNode` processes started as one
//! gang, each rank in its own process group, with the runtime contract of
//! [`switchyard_training::contract`]. Hosts `algo-1..N` are directories under the
//! job's folder; all ranks reach the master on 127.0.0.1.
//!
//! Any rank failing stops the whole gang (SIGTERM, then SIGKILL after the grace
//! period); the restart policy then decides between restarting every rank (the
//! checkpoint directory is kept, so a script that checkpoints resumes) and
//! failing the job with the script's own failure text.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use switchyard_backend::LogSink;
use switchyard_training::contract::{self, HostLayout, Placement};
use switchyard_training::slots::{self, Slot};
use switchyard_training::{
    modeltrainer, parse_s3_uri, placement, BackendError, BackendKind, ChannelSource, Contract,
    JobEvent, JobEvents, JobState, MetricScraper, ObjectStore, RestartPolicy, TrainingBackend,
    TrainingJob, TrainingOutcome,
};
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::process::{describe_exit, drain, exit_code, signal_group, spawn_group, stop, Spawned};

/// Settings of local training.
#[derive(Debug, Clone)]
pub struct LocalTrainingConfig {
    /// One folder per job: code, hosts, logs.
    pub jobs_dir: PathBuf,
    /// The interpreter that runs `entryPoint` scripts (has PyTorch for DDP jobs).
    pub python: String,
    /// `fs-id` to local mount path, for `efs://` channels.
    pub efs_mounts: BTreeMap<String, PathBuf>,
    pub kill_grace: Duration,
}

impl LocalTrainingConfig {
    /// Parses `fs-0123=/mnt/efs,fs-0456=/data` (SWITCHYARD_EFS_MOUNTS).
    pub fn parse_efs_mounts(text: &str) -> Result<BTreeMap<String, PathBuf>, String> {
        let mut out = BTreeMap::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (fs, path) = item.split_once('=').ok_or_else(|| {
                format!("SWITCHYARD_EFS_MOUNTS: '{item}' is not fs-ID=/local/path")
            })?;
            out.insert(fs.trim().to_string(), PathBuf::from(path.trim()));
        }
        Ok(out)
    }
}

/// The local [`TrainingBackend`].
pub struct LocalTraining {
    config: LocalTrainingConfig,
    admission: Admission,
    /// Fetches `s3://` channels into a local cache.
    s3: Option<Arc<dyn ObjectStore>>,
}

impl LocalTraining {
    pub fn new(config: LocalTrainingConfig, admission: Admission) -> Self {
        LocalTraining {
            config,
            admission,
            s3: None,
        }
    }

    /// Enables `s3://` channels.
    pub fn with_s3(mut self, s3: Arc<dyn ObjectStore>) -> Self {
        self.s3 = Some(s3);
        self
    }

    pub fn job_dir(&self, job_id: &str) -> PathBuf {
        self.config.jobs_dir.join(job_id)
    }

    /// Refuses, before anything starts, channels that cannot be had here.
    fn check_channels(&self, job: &TrainingJob) -> Result<(), BackendError> {
        for c in &job.channels {
            match &c.source {
                ChannelSource::Local(_) => {}
                ChannelSource::Efs {
                    file_system_id,
                    path,
                } => {
                    let mount = self.config.efs_mounts.get(file_system_id).ok_or_else(|| {
                        BackendError::Permanent(format!(
                            "spec.channels.{}: {} is on EFS file system {file_system_id}, which has no local mount; \
                             set SWITCHYARD_EFS_MOUNTS={file_system_id}=/path/where/it/is/mounted",
                            c.name, c.uri
                        ))
                    })?;
                    let p = mount.join(path.trim_start_matches('/'));
                    if !p.exists() {
                        return Err(BackendError::Permanent(format!(
                            "spec.channels.{}: {} maps to {}, which does not exist",
                            c.name,
                            c.uri,
                            p.display()
                        )));
                    }
                }
                ChannelSource::S3 { .. } if self.s3.is_none() => {
                    return Err(BackendError::Permanent(format!(
                        "spec.channels.{}: {}: S3 access is not configured",
                        c.name, c.uri
                    )))
                }
                ChannelSource::S3 { .. } => {}
            }
        }
        for (field, v) in [
            ("spec.output", &job.spec.output),
            ("spec.checkpoint", &job.spec.checkpoint),
        ] {
            if let Some(v) = v.as_deref().filter(|v| v.contains("://")) {
                if parse_s3_uri(v).is_none() || self.s3.is_none() {
                    return Err(BackendError::Permanent(format!(
                        "{field}: {v}: S3 access is not configured"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Where each channel's data is on this machine: local paths as they are, EFS
    /// through its mount, S3 downloaded into the cache (only what changed).
    async fn channel_paths(
        &self,
        job: &TrainingJob,
        events: &JobEvents,
    ) -> Result<BTreeMap<String, PathBuf>, BackendError> {
        self.check_channels(job)?;
        let mut out = BTreeMap::new();
        for c in &job.channels {
            let path = match &c.source {
                ChannelSource::Local(p) => p.clone(),
                ChannelSource::Efs {
                    file_system_id,
                    path,
                } => {
                    let mount = self
                        .config
                        .efs_mounts
                        .get(file_system_id)
                        .cloned()
                        .unwrap_or_default();
                    mount.join(path.trim_start_matches('/'))
                }
                ChannelSource::S3 { bucket, prefix } => {
                    let s3 = self.s3.as_ref().ok_or_else(|| {
                        BackendError::Permanent("S3 access is not configured".into())
                    })?;
                    let (dir, stats) = s3.download_prefix(bucket, prefix).await.map_err(|e| {
                        BackendError::Permanent(format!("spec.channels.{}: {e}", c.name))
                    })?;
                    let _ = events.send(JobEvent::Status {
                        message: format!(
                            "channel {}: {} — {} downloaded ({} bytes), {} cached",
                            c.name, c.uri, stats.downloaded, stats.bytes, stats.cached
                        ),
                    });
                    dir
                }
            };
            out.insert(c.name.clone(), path);
        }
        Ok(out)
    }
}

fn setup(e: impl std::fmt::Display, what: &str) -> BackendError {
    BackendError::Permanent(format!("{what}: {e}"))
}

fn replace_symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    if link.symlink_metadata().is_ok() {
        if link.is_dir() && !link.symlink_metadata()?.file_type().is_symlink() {
            std::fs::remove_dir_all(link)?;
        } else {
            std::fs::remove_file(link)?;
        }
    }
    std::os::unix::fs::symlink(target, link)
}

fn free_port() -> Result<u16, BackendError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| setup(e, "cannot find a free port"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| setup(e, "cannot find a free port"))
}

/// One rank as it will be started.
struct RankPlan {
    rank: u32,
    host: String,
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    cwd: PathBuf,
    sink: LogSink,
}

/// One rank of a running gang.
struct Rank {
    rank: u32,
    host: String,
    spawned: Spawned,
}

/// Why an attempt ended.
enum Ending {
    AllSucceeded,
    /// First rank to fail, with its exit code and description.
    RankFailed {
        rank: u32,
        host: String,
        code: i32,
        what: String,
    },
    TimedOut,
    Canceled,
}

/// Per-rank logs: a file each, the live stream, a tail for failure messages.
struct RankLogs {
    dir: PathBuf,
    events: JobEvents,
    tails: Arc<Mutex<HashMap<u32, Vec<String>>>>,
    metrics: Arc<Mutex<BTreeMap<String, f64>>>,
}

impl RankLogs {
    fn sink(&self, job: &TrainingJob, host: &str, rank: u32) -> Result<LogSink, BackendError> {
        let path = slots::rank_log(&self.dir, host, rank);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| setup(e, &format!("cannot open {}", path.display())))?;
        let file = Mutex::new(file);
        let (events, tails, metrics, host) = (
            self.events.clone(),
            self.tails.clone(),
            self.metrics.clone(),
            host.to_string(),
        );
        let scraper = MetricScraper::new(job);
        Ok(Arc::new(move |line: &str| {
            use std::io::Write;
            if let Ok(mut f) = file.lock() {
                let _ = writeln!(f, "{line}");
            }
            if let Ok(mut t) = tails.lock() {
                let tail = t.entry(rank).or_default();
                if tail.len() == 10 {
                    tail.remove(0);
                }
                tail.push(line.to_string());
            }
            for (name, value) in scraper.scrape(line) {
                if let Ok(mut m) = metrics.lock() {
                    m.insert(name.clone(), value);
                }
                let _ = events.send(JobEvent::Metric { name, value });
            }
            let _ = events.send(JobEvent::Log {
                host: host.clone(),
                rank,
                line: line.to_string(),
            });
        }))
    }

    fn tail(&self, rank: u32) -> String {
        self.tails
            .lock()
            .ok()
            .and_then(|t| t.get(&rank).map(|l| l.join("\n")))
            .unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl TrainingBackend for LocalTraining {
    fn kind(&self) -> BackendKind {
        BackendKind::Local
    }

    fn preflight(&self, job: &TrainingJob) -> Result<(), BackendError> {
        let (cpus, gpus) = demand(job);
        self.admission
            .check_fits(cpus, gpus)
            .map_err(BackendError::Permanent)?;
        self.check_channels(job)
    }

    /// Room now is what admission has free; cost per node-hour from
    /// `SWITCHYARD_LOCAL_COST_PER_NODE_HOUR` (not counted without it).
    async fn assess(&self, job: &TrainingJob) -> placement::Assessment {
        if let Err(e) = self.preflight(job) {
            return placement::Assessment::refused(BackendKind::Local, e.to_string());
        }
        let (cpus, gpus) = demand(job);
        let (free_cpus, free_gpus) = self.admission.free_now().unwrap_or((0.0, 0));
        let (all_cpus, all_gpus) = self.admission.total();
        let starts_now = cpus <= free_cpus + 1e-9 && gpus <= free_gpus;
        placement::Assessment::can_run(
            BackendKind::Local,
            starts_now,
            format!(
                "needs {cpus} CPUs and {gpus} GPUs; this machine has {free_cpus} CPUs and {free_gpus} GPUs free of {all_cpus} and {all_gpus}"
            ),
            self.rates(job).hourly_usd,
        )
    }

    /// The job's requests; `SWITCHYARD_LOCAL_COST_PER_NODE_HOUR` × nodes
    /// (not counted without it).
    fn rates(&self, job: &TrainingJob) -> switchyard_training::kpi::Rates {
        switchyard_training::kpi::Rates::requested(
            job,
            placement::cost_per_node_hour("SWITCHYARD_LOCAL_COST_PER_NODE_HOUR"),
        )
    }

    async fn run(
        &self,
        job: &TrainingJob,
        job_id: &str,
        events: JobEvents,
        cancel: CancellationToken,
    ) -> Result<TrainingOutcome, BackendError> {
        let channels = self.channel_paths(job, &events).await?;
        let dir = self.job_dir(job_id);
        announce_placement(job, &dir, &events);
        let logs_dir = dir.join("logs");
        std::fs::create_dir_all(&logs_dir)
            .map_err(|e| setup(e, &format!("cannot create {}", logs_dir.display())))?;
        let code_dir = ship_code(job, &dir, &events).await?;
        let checkpoint = self.restore_checkpoint(job, &dir, &events).await?;
        let layouts = write_hosts(job, &dir, code_dir.as_deref(), &channels, &checkpoint.dir)?;
        let python = self
            .job_python(job, &dir, code_dir.as_deref(), &events)
            .await?;

        // Admission: wait for the CPUs and GPUs the whole gang needs.
        let (cpus, gpus) = demand(job);
        let ev = events.clone();
        let grant = self
            .admission
            .acquire(job_id, cpus, gpus, &cancel, |m| {
                let _ = ev.send(JobEvent::Status { message: m });
            })
            .await
            .map_err(BackendError::Permanent)?;
        let Some(grant) = grant else {
            return Ok(TrainingOutcome {
                state: JobState::Canceled,
                restarts: 0,
                model: None,
                metrics: BTreeMap::new(),
                failure_reason: Some("canceled while queued".into()),
            });
        };
        let gang = Gang {
            job,
            job_id,
            layouts,
            code_dir,
            python,
            gpus: grant.gpus.clone(),
            logs: RankLogs {
                dir: logs_dir,
                events: events.clone(),
                tails: Arc::default(),
                metrics: Arc::default(),
            },
            deadline: job
                .spec
                .max_runtime_seconds
                .map(|s| Instant::now() + Duration::from_secs(s)),
            cancel: &cancel,
        };
        let (state, failure_reason, restarts) = self.attempts(&gang, &checkpoint, &events).await?;
        drop(grant);
        let model = match state {
            JobState::Succeeded => Some(self.deliver_model(job, &gang.layouts[0], &events).await?),
            _ => None,
        };
        let metrics = gang
            .logs
            .metrics
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        Ok(TrainingOutcome {
            state,
            restarts,
            model,
            metrics,
            failure_reason,
        })
    }
}

/// The checkpoint folder the ranks see, and the `s3://` location it is
/// synced with (as SageMaker's CheckpointConfig), if any.
struct Checkpoint {
    dir: PathBuf,
    s3: Option<(String, String)>,
}

/// Tells where the job runs (this host, its hosts' folders).
fn announce_placement(job: &TrainingJob, dir: &Path, events: &JobEvents) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let _ = events.send(JobEvent::Placement {
        details: serde_json::json!({
            "kind": "local",
            "host": host,
            "hosts": slots::host_names(job.spec.nodes),
            "procs_per_node": job.spec.procs_per_node,
            "job_dir": dir,
        }),
    });
}

/// Ships the code: a private copy, so editing the source during a run
/// changes nothing. Copied off the async runtime: a large or slow folder
/// must not stall other work.
async fn ship_code(
    job: &TrainingJob,
    dir: &Path,
    events: &JobEvents,
) -> Result<Option<PathBuf>, BackendError> {
    let Some(src) = &job.spec.source_dir else {
        return Ok(None);
    };
    let code = dir.join("code");
    let (from, to) = (PathBuf::from(src), code.clone());
    let skipped = tokio::task::spawn_blocking(move || {
        let mut skipped = Vec::new();
        switchyard_backend::files::copy_tree(&from, &to, &mut skipped).map(|_| skipped)
    })
    .await
    .map_err(|e| BackendError::Permanent(format!("copying sourceDir {src}: {e}")))?
    .map_err(|e| setup(e, &format!("cannot copy sourceDir {src}")))?;
    for p in skipped {
        let message = format!(
            "sourceDir: skipped {} (not a regular file, folder or link)",
            p.display()
        );
        let _ = events.send(JobEvent::Status { message });
    }
    Ok(Some(code))
}

/// Each host's folder with the runtime contract's files, its channels and
/// the checkpoint folder linked in.
fn write_hosts(
    job: &TrainingJob,
    dir: &Path,
    code_dir: Option<&Path>,
    channels: &BTreeMap<String, PathBuf>,
    checkpoint: &Path,
) -> Result<Vec<HostLayout>, BackendError> {
    let instance_type = job
        .spec
        .instance_type
        .clone()
        .unwrap_or_else(|| "local".into());
    let submit = code_dir
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_default();
    let layouts: Vec<HostLayout> = (0..job.spec.nodes)
        .map(|n| HostLayout::new(dir.join("hosts").join(contract::host_name(n))))
        .collect();
    for (n, layout) in layouts.iter().enumerate() {
        contract::write_host(job, n as u32, &instance_type, &submit, layout)
            .map_err(|e| setup(e, "cannot write the host files"))?;
        for (name, path) in channels {
            replace_symlink(path, &layout.channel_dir(name))
                .map_err(|e| setup(e, "cannot link a channel"))?;
        }
        replace_symlink(checkpoint, &layout.checkpoint_dir())
            .map_err(|e| setup(e, "cannot link the checkpoint directory"))?;
        if let (Contract::ModelTrainer, Some(code)) = (job.spec.contract, code_dir) {
            // A copy, not a link: the script's working directory must be the
            // channel's own path (a link resolves to the shared copy). What
            // ModelTrainer leaves out of its upload is left out here too.
            let dest = layout.channel_dir(modeltrainer::CODE_CHANNEL);
            let what = |e| setup(e, &format!("cannot copy the code into {}", dest.display()));
            for f in switchyard_training::code_files(job, code).map_err(what)? {
                let to = dest.join(&f.rel);
                if let Some(parent) = to.parent() {
                    std::fs::create_dir_all(parent).map_err(what)?;
                }
                std::fs::copy(&f.path, &to).map_err(what)?;
            }
        }
    }
    Ok(layouts)
}

/// Where a rank of `job` starts on `layout`'s host: ModelTrainer's code
/// channel, or the shipped `sourceDir` (the host's folder without one).
fn working_dir(job: &TrainingJob, layout: &HostLayout, code_dir: Option<&Path>) -> PathBuf {
    match (job.spec.contract, code_dir) {
        (Contract::ModelTrainer, Some(_)) => layout.channel_dir(modeltrainer::CODE_CHANNEL),
        (_, Some(code)) => code.to_path_buf(),
        (_, None) => layout.base.clone(),
    }
}

impl LocalTraining {
    /// The interpreter of the job's entry point: the configured one, or, for
    /// a job with `requirements`, its own environment with them installed.
    async fn job_python(
        &self,
        job: &TrainingJob,
        dir: &Path,
        code_dir: Option<&Path>,
        events: &JobEvents,
    ) -> Result<String, BackendError> {
        match (&job.spec.requirements, code_dir) {
            (Some(req), Some(code)) => {
                let python =
                    crate::requirements::install(&self.config.python, dir, code, req, events)
                        .await?;
                Ok(python.to_string_lossy().into_owned())
            }
            _ => Ok(self.config.python.clone()),
        }
    }
}

/// What the restart policy makes of a failed attempt.
enum AfterFailure {
    Restart,
    Fail(String),
}

/// The restart policy's decision after attempt `restarts` failed with exit
/// `code` for `reason`: restart the gang while the policy allows it and the
/// backoff limit is not reached, else fail saying why no restart was made.
fn after_failure(
    spec: &switchyard_training::TrainingJobSpec,
    restarts: u32,
    code: i32,
    reason: String,
) -> AfterFailure {
    let retryable = match spec.restart_policy {
        RestartPolicy::Never => false,
        RestartPolicy::OnFailure => true,
        RestartPolicy::ExitCode => code >= 128,
    };
    if retryable && restarts < spec.backoff_limit {
        return AfterFailure::Restart;
    }
    AfterFailure::Fail(if retryable {
        format!(
            "{reason} (gave up after {restarts} restarts: backoffLimit {})",
            spec.backoff_limit
        )
    } else if spec.restart_policy == RestartPolicy::ExitCode && restarts < spec.backoff_limit {
        format!("{reason} (exit code {code} is not retryable under restartPolicy ExitCode)")
    } else {
        reason
    })
}

impl LocalTraining {
    /// A local checkpoint folder; an `s3://` checkpoint is synced into it
    /// before the first attempt and back after each one.
    async fn restore_checkpoint(
        &self,
        job: &TrainingJob,
        dir: &Path,
        events: &JobEvents,
    ) -> Result<Checkpoint, BackendError> {
        let s3 = job.spec.checkpoint.as_deref().and_then(parse_s3_uri);
        let local = match (&job.spec.checkpoint, &s3) {
            (Some(c), None) => PathBuf::from(c),
            _ => dir.join("checkpoints"),
        };
        std::fs::create_dir_all(&local)
            .map_err(|e| setup(e, &format!("cannot create {}", local.display())))?;
        if let (Some((bucket, prefix)), Some(store)) = (&s3, &self.s3) {
            let stats = store
                .download_into(bucket, prefix, &local)
                .await
                .map_err(|e| BackendError::Permanent(format!("spec.checkpoint: {e}")))?;
            let message = format!(
                "checkpoint: {} files restored from s3://{bucket}/{prefix}",
                stats.downloaded
            );
            let _ = events.send(JobEvent::Status { message });
        }
        Ok(Checkpoint { dir: local, s3 })
    }

    /// Saves the checkpoint folder back to S3 after an attempt.
    async fn save_checkpoint(&self, checkpoint: &Checkpoint, events: &JobEvents) {
        let (Some((bucket, prefix)), Some(s3)) = (&checkpoint.s3, &self.s3) else {
            return;
        };
        let message = match s3.upload_dir(&checkpoint.dir, bucket, prefix).await {
            Ok(n) => format!("checkpoint: {n} files saved to s3://{bucket}/{prefix}"),
            Err(e) => format!("checkpoint upload failed: {e}"),
        };
        let _ = events.send(JobEvent::Status { message });
    }

    /// Runs the gang's attempts until one succeeds, the job is canceled or
    /// times out, or the restart policy gives up. Returns the job's state,
    /// its failure reason and how often the gang restarted.
    async fn attempts(
        &self,
        gang: &Gang<'_>,
        checkpoint: &Checkpoint,
        events: &JobEvents,
    ) -> Result<(JobState, Option<String>, u32), BackendError> {
        let spec = &gang.job.spec;
        let mut restarts = 0u32;
        loop {
            for l in &gang.layouts {
                let _ = std::fs::remove_file(l.failure_file());
            }
            let port = free_port()?;
            let _ = events.send(JobEvent::Started {
                attempt: restarts,
                master_port: port,
            });
            let ending = self.attempt(gang, restarts, port).await?;
            self.save_checkpoint(checkpoint, events).await;
            let (code, reason) = match ending {
                Ending::AllSucceeded => return Ok((JobState::Succeeded, None, restarts)),
                Ending::Canceled => {
                    return Ok((JobState::Canceled, Some("canceled".into()), restarts))
                }
                Ending::TimedOut => {
                    let s = spec.max_runtime_seconds.unwrap_or(0);
                    let why = format!("MaxRuntimeExceeded: the job ran longer than maxRuntimeSeconds ({s}s) and was stopped");
                    return Ok((JobState::Failed, Some(why), restarts));
                }
                Ending::RankFailed {
                    rank,
                    host,
                    code,
                    what,
                } => {
                    let reason = failure_text(&gang.layouts).unwrap_or_else(|| {
                        let tail = gang.logs.tail(rank);
                        if tail.is_empty() {
                            format!("rank {rank} ({host}) {what}")
                        } else {
                            format!("rank {rank} ({host}) {what}; last output:\n{tail}")
                        }
                    });
                    (code, reason)
                }
            };
            match after_failure(spec, restarts, code, reason.clone()) {
                AfterFailure::Restart => {
                    restarts += 1;
                    let _ = events.send(JobEvent::Restarting {
                        attempt: restarts,
                        reason,
                    });
                }
                AfterFailure::Fail(why) => return Ok((JobState::Failed, Some(why), restarts)),
            }
        }
    }

    /// Puts rank 0's model where `spec.output` says (a folder, or `s3://`),
    /// and returns where it is.
    async fn deliver_model(
        &self,
        job: &TrainingJob,
        rank0: &HostLayout,
        events: &JobEvents,
    ) -> Result<String, BackendError> {
        let rank0_model = rank0.model_dir();
        let output = &job.spec.output;
        Ok(
            match (output, output.as_deref().and_then(parse_s3_uri), &self.s3) {
                (Some(out), Some((bucket, prefix)), Some(s3)) => {
                    let n = s3
                        .upload_dir(&rank0_model, &bucket, &prefix)
                        .await
                        .map_err(|e| BackendError::Permanent(format!("spec.output: {e}")))?;
                    let _ = events.send(JobEvent::Status {
                        message: format!("model: {n} files uploaded to {out}"),
                    });
                    out.clone()
                }
                (Some(out), _, _) => {
                    switchyard_backend::files::copy_tree(
                        &rank0_model,
                        Path::new(out),
                        &mut Vec::new(),
                    )
                    .map_err(|e| setup(e, &format!("cannot copy the model to {out}")))?;
                    out.clone()
                }
                (None, _, _) => rank0_model.to_string_lossy().into_owned(),
            },
        )
    }
}

/// One job's gang, made ready once for all its attempts.
struct Gang<'a> {
    job: &'a TrainingJob,
    job_id: &'a str,
    layouts: Vec<HostLayout>,
    code_dir: Option<PathBuf>,
    /// The interpreter that runs an entry point (the job's own environment
    /// when it has `requirements`).
    python: String,
    /// The GPUs admission granted the whole gang, node by node.
    gpus: Vec<u32>,
    logs: RankLogs,
    deadline: Option<Instant>,
    cancel: &'a CancellationToken,
}

/// CPUs and GPUs the whole gang needs.
fn demand(job: &TrainingJob) -> (f64, u32) {
    (
        job.spec.resources.cpu * f64::from(job.spec.nodes),
        job.spec.resources.gpu * job.spec.nodes,
    )
}

/// The first non-empty `output/failure` a rank wrote.
fn failure_text(layouts: &[HostLayout]) -> Option<String> {
    layouts
        .iter()
        .filter_map(|l| std::fs::read_to_string(l.failure_file()).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
}

impl LocalTraining {
    /// Starts every rank and waits for the gang to end.
    async fn attempt(
        &self,
        gang: &Gang<'_>,
        attempt: u32,
        port: u16,
    ) -> Result<Ending, BackendError> {
        let plans = self.plan_ranks(gang, attempt, port)?;
        let ranks = self.spawn_ranks(plans).await?;
        Ok(self.wait_gang(ranks, gang.deadline, gang.cancel).await)
    }

    /// Every rank's command line, environment, folder and log, prepared
    /// before the first rank starts (everything that can fail fails here).
    fn plan_ranks(
        &self,
        gang: &Gang<'_>,
        attempt: u32,
        port: u16,
    ) -> Result<Vec<RankPlan>, BackendError> {
        let (job, spec) = (gang.job, &gang.job.spec);
        let code_dir = gang.code_dir.as_deref();
        let gpus_per_node = spec.resources.gpu as usize;
        let mut plans = Vec::new();
        for (node, layout) in gang.layouts.iter().enumerate() {
            let node = node as u32;
            let host = contract::host_name(node);
            for local_rank in 0..spec.procs_per_node {
                let placement = Placement {
                    node,
                    local_rank,
                    master_addr: "127.0.0.1".into(),
                    master_port: port.into(),
                    num_cpus: contract::host_cpus(),
                    num_gpus: spec.resources.gpu,
                    instance_type: spec.instance_type.clone().unwrap_or_else(|| "local".into()),
                    code_dir: code_dir.map(Path::to_path_buf),
                    run_id: format!("{}-{attempt}", gang.job_id),
                };
                let mut env = contract::rank_env(job, layout, &placement);
                let mine = gang
                    .gpus
                    .iter()
                    .skip(node as usize * gpus_per_node)
                    .take(gpus_per_node);
                env.insert(
                    "CUDA_VISIBLE_DEVICES".into(),
                    mine.map(u32::to_string).collect::<Vec<_>>().join(","),
                );
                if let Some(file) = env.get("TORCHELASTIC_ERROR_FILE") {
                    // torchrun makes the folder of each worker's error file.
                    if let Some(parent) = Path::new(file).parent() {
                        std::fs::create_dir_all(parent).map_err(|e| {
                            setup(e, &format!("cannot create {}", parent.display()))
                        })?;
                    }
                }
                let argv = contract::process_argv(job, &gang.python)
                    .ok_or_else(|| BackendError::Permanent("spec.entryPoint: missing".into()))?;
                let cwd = working_dir(job, layout, code_dir);
                // The rank the process is told (ModelTrainer's follows the
                // host names sorted as text), else its slot's.
                let rank = env
                    .get("RANK")
                    .and_then(|r| r.parse().ok())
                    .unwrap_or_else(|| Slot { node, local_rank }.rank(spec.procs_per_node));
                let sink = gang.logs.sink(job, &host, rank)?;
                plans.push(RankPlan {
                    rank,
                    host: host.clone(),
                    argv,
                    env,
                    cwd,
                    sink,
                });
            }
        }
        Ok(plans)
    }

    /// Starts every planned rank; when one cannot start, those started are
    /// stopped again.
    async fn spawn_ranks(&self, plans: Vec<RankPlan>) -> Result<Vec<Rank>, BackendError> {
        let mut ranks: Vec<Rank> = Vec::new();
        for RankPlan {
            rank,
            host,
            argv,
            env,
            cwd,
            sink,
        } in plans
        {
            match spawn_group(&argv, &env, &[], &cwd, sink) {
                Ok(spawned) => ranks.push(Rank {
                    rank,
                    host,
                    spawned,
                }),
                Err(e) => {
                    for mut r in ranks {
                        stop(&mut r.spawned.child, r.spawned.pid, self.config.kill_grace).await;
                        r.spawned.finish().await;
                    }
                    return Err(BackendError::Permanent(format!("rank {rank}: {e}")));
                }
            }
        }
        Ok(ranks)
    }

    /// Waits for every rank; the first failure, a timeout or a cancel stops
    /// the rest (SIGTERM, then SIGKILL after the grace period).
    async fn wait_gang(
        &self,
        ranks: Vec<Rank>,
        deadline: Option<Instant>,
        cancel: &CancellationToken,
    ) -> Ending {
        let mut pending = futures::stream::FuturesUnordered::new();
        let mut running: HashMap<u32, (String, u32, tokio::task::JoinHandle<()>)> = HashMap::new();
        for r in ranks {
            let Spawned {
                mut child,
                pid,
                output,
            } = r.spawned;
            let rank = r.rank;
            pending.push(async move { (rank, child.wait().await) });
            running.insert(rank, (r.host, pid, output));
        }
        let mut ending = None;
        let mut kill_at: Option<Instant> = None;
        let at = |d: Option<Instant>| async move {
            match d {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending::<()>().await,
            }
        };
        while !pending.is_empty() {
            let mut stop_reason = None;
            tokio::select! {
                next = futures::StreamExt::next(&mut pending) => {
                    let Some((rank, status)) = next else { break };
                    let Some((host, pid, output)) = running.remove(&rank) else { continue };
                    // The rank's leftovers go with it; its last lines are read.
                    signal_group(pid, Signal::SIGKILL);
                    drain(output).await;
                    let failed = match &status {
                        Ok(s) if s.success() => None,
                        Ok(s) => Some((exit_code(s), describe_exit(s))),
                        Err(e) => Some((-1, format!("could not be waited for: {e}"))),
                    };
                    if let (Some((code, what)), None) = (failed, &ending) {
                        stop_reason = Some(Ending::RankFailed { rank, host, code, what });
                    }
                }
                _ = at(deadline), if ending.is_none() => stop_reason = Some(Ending::TimedOut),
                _ = cancel.cancelled(), if ending.is_none() => stop_reason = Some(Ending::Canceled),
                _ = at(kill_at), if kill_at.is_some() => {
                    for (_, pid, _) in running.values() {
                        signal_group(*pid, Signal::SIGKILL);
                    }
                    kill_at = None;
                }
            }
            if let Some(reason) = stop_reason {
                ending = Some(reason);
                for (_, pid, _) in running.values() {
                    signal_group(*pid, Signal::SIGTERM);
                }
                kill_at = Some(Instant::now() + self.config.kill_grace);
            }
        }
        ending.unwrap_or(Ending::AllSucceeded)
    }
}
