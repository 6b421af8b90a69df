//! The SageMaker backend: a Switchyard TrainingJob run as an Amazon SageMaker
//! training job, through the official AWS SDK for Rust.
//!
//! Kept in its own crate because `aws-sdk-sagemaker` takes minutes and GBs to
//! compile. [`SageMakerBackend`] checks the job without calling AWS
//! ([`render::resolve`]), stages `sourceDir` and local channels in S3
//! ([`sourcedir`]), creates the job under a name derived from the Switchyard
//! job id (so a resubmission finds it instead of creating a second one), and
//! follows it ([`follow`]) with its CloudWatch logs ([`logs`]).

pub mod config;
pub mod error;
pub mod follow;
pub mod instance;
pub mod launcher;
pub mod logs;
pub mod prices;
pub mod quota;
pub mod render;
pub mod sourcedir;

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_config::SdkConfig;
use switchyard_s3::S3Store;
use switchyard_training::{
    parse_s3_uri, BackendError, BackendKind, Contract, JobEvent, JobEvents, MetricScraper,
    ObjectStore, Stopped, TrainingBackend, TrainingJob, TrainingOutcome,
};
use tokio_util::sync::CancellationToken;

pub use config::{LocalChannels, SageMakerConfig};
use error::{classify, Kind};
use follow::Backoff;
use render::{join_key, Resolved, Staged};

/// What an hour of `job` costs and holds on its resolved instance type at
/// `price` an instance-hour: × instances (less the spot discount with
/// `useSpotInstances`; `None` for an unpriced type), its vCPUs and GPUs.
fn rates_of(
    job: &TrainingJob,
    resolved: &Resolved,
    price: Option<f64>,
) -> switchyard_training::kpi::Rates {
    let kind = &resolved.instance_type;
    let known = instance::TABLE.iter().find(|t| t.name == kind.as_str());
    let on_demand = price.map(|p| p * f64::from(job.spec.nodes));
    let spot = if job.spec.use_spot_instances {
        1.0 - prices::spot_discount()
    } else {
        1.0
    };
    switchyard_training::kpi::Rates {
        hourly_usd: on_demand.map(|p| p * spot),
        on_demand_hourly_usd: on_demand,
        cpus_per_node: known.map_or(job.spec.resources.cpu, |t| f64::from(t.vcpus)),
        gpus_per_node: known.map_or(job.spec.resources.gpu, |t| t.gpus),
        instance_type: Some(kind.clone()),
    }
}

/// Region used when neither the job, the configuration nor the AWS chain names one.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Runs TrainingJobs on SageMaker.
pub struct SageMakerBackend {
    config: SageMakerConfig,
    sdk: SdkConfig,
    /// Path-style S3 addressing (custom endpoints and emulators need it).
    s3_path_style: bool,
}

/// The three service clients of one region.
struct Clients {
    sagemaker: aws_sdk_sagemaker::Client,
    logs: aws_sdk_cloudwatchlogs::Client,
    quotas: aws_sdk_servicequotas::Client,
    s3: S3Store,
    region: String,
}

impl SageMakerBackend {
    /// Credentials, region and endpoints from the standard AWS chain
    /// (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_SAGEMAKER`, profiles, web identity…).
    pub async fn from_env(config: SageMakerConfig) -> Self {
        let sdk = aws_config::load_from_env().await;
        let s3_path_style = std::env::var_os("AWS_ENDPOINT_URL").is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
        SageMakerBackend {
            config,
            sdk,
            s3_path_style,
        }
    }

    /// Over an SDK configuration built elsewhere (tests use one whose HTTP
    /// client replays recorded responses).
    pub fn with_sdk_config(config: SageMakerConfig, sdk: SdkConfig, s3_path_style: bool) -> Self {
        SageMakerBackend {
            config,
            sdk,
            s3_path_style,
        }
    }

    fn clients(&self, region: Option<&str>) -> Clients {
        let region = region
            .map(str::to_string)
            .or_else(|| self.sdk.region().map(|r| r.to_string()))
            .unwrap_or_else(|| DEFAULT_REGION.to_string());
        let r = aws_config::Region::new(region.clone());
        let sagemaker = aws_sdk_sagemaker::Client::from_conf(
            aws_sdk_sagemaker::config::Builder::from(&self.sdk)
                .region(r.clone())
                .build(),
        );
        let logs = aws_sdk_cloudwatchlogs::Client::from_conf(
            aws_sdk_cloudwatchlogs::config::Builder::from(&self.sdk)
                .region(r.clone())
                .build(),
        );
        let quotas = aws_sdk_servicequotas::Client::from_conf(
            aws_sdk_servicequotas::config::Builder::from(&self.sdk)
                .region(r.clone())
                .build(),
        );
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&self.sdk)
                .region(r)
                .force_path_style(self.s3_path_style)
                .build(),
        );
        Clients {
            sagemaker,
            logs,
            quotas,
            s3: S3Store::new(s3, self.config.jobs_dir.join(".s3-cache")),
            region,
        }
    }

    /// A client for `region` (or the default), for callers that fetch models.
    pub fn s3(&self, region: Option<&str>) -> S3Store {
        self.clients(region).s3
    }

    /// Uploads sourceDir (once per content) and local channels.
    async fn stage(
        &self,
        c: &Clients,
        job: &TrainingJob,
        resolved: &Resolved,
        name: &str,
        events: &JobEvents,
    ) -> Result<Staged, BackendError> {
        let mut staged = Staged::default();
        let status = |message: String| {
            let _ = events.send(JobEvent::Status { message });
        };
        let modeltrainer = job.spec.contract == Contract::ModelTrainer;
        if let (Some(dir), true, Some(bucket)) = (
            &job.spec.source_dir,
            job.spec.entry_point.is_some() || modeltrainer,
            &resolved.bucket,
        ) {
            let dir = PathBuf::from(dir);
            let code_job = job.clone();
            let archive =
                tokio::task::spawn_blocking(move || sourcedir::pack_code(&code_job, &dir))
                    .await
                    .map_err(|e| BackendError::Permanent(e.to_string()))?
                    .map_err(BackendError::Permanent)?;
            let key = join_key(
                &resolved.prefix,
                &format!("sourcedir/{}/sourcedir.tar.gz", archive.sha256),
            );
            let uri = format!("s3://{bucket}/{key}");
            let (files, size) = (archive.files, archive.bytes.len());
            let uploaded =
                c.s3.put_once(bucket, &key, archive.bytes)
                    .await
                    .map_err(|e| BackendError::Permanent(format!("spec.sourceDir: {e}")))?;
            status(if uploaded {
                format!("sourceDir packed ({files} files, {size} bytes) and uploaded to {uri}")
            } else {
                format!("sourceDir unchanged; using {uri}")
            });
            if modeltrainer {
                // The code channel: the archive's own prefix (the launcher unpacks it).
                let folder = key.trim_end_matches("sourcedir.tar.gz");
                staged.code_uri = Some(format!("s3://{bucket}/{folder}"));
            } else {
                staged.submit_directory = Some(uri);
            }
        }
        if let (true, Some(bucket)) = (modeltrainer, &resolved.bucket) {
            staged.launcher_uri = Some(
                self.stage_launcher(c, job, resolved, bucket, events)
                    .await?,
            );
        }
        for (channel, path) in &resolved.uploads {
            let Some(bucket) = &resolved.bucket else {
                continue;
            };
            let key = join_key(&resolved.prefix, &format!("inputs/{name}/{channel}"));
            let n =
                c.s3.upload_dir(path, bucket, &key).await.map_err(|e| {
                    BackendError::Permanent(format!("spec.channels.{channel}: {e}"))
                })?;
            let uri = format!("s3://{bucket}/{key}/");
            status(format!(
                "channel {channel}: uploaded {n} files from {} to {uri}",
                path.display()
            ));
            staged.channel_uris.insert(channel.clone(), uri);
        }
        Ok(staged)
    }

    /// Uploads the launcher of a `contract: modeltrainer` job (once per
    /// content) and returns its channel's S3 URI.
    async fn stage_launcher(
        &self,
        c: &Clients,
        job: &TrainingJob,
        resolved: &Resolved,
        bucket: &str,
        events: &JobEvents,
    ) -> Result<String, BackendError> {
        let l = launcher::launcher(job, &resolved.instance_type);
        let folder = join_key(&resolved.prefix, &format!("sm_drivers/{}", l.sha256));
        let mut uploaded = 0;
        for (name, bytes) in l.files {
            let key = format!("{folder}/{name}");
            if c.s3.put_once(bucket, &key, bytes).await.map_err(|e| {
                BackendError::Permanent(format!(
                    "uploading the launcher to s3://{bucket}/{key}: {e}"
                ))
            })? {
                uploaded += 1;
            }
        }
        let uri = format!("s3://{bucket}/{folder}/");
        let message = if uploaded > 0 {
            format!("launcher uploaded to {uri}")
        } else {
            format!("launcher unchanged; using {uri}")
        };
        let _ = events.send(JobEvent::Status { message });
        Ok(uri)
    }

    /// Creates the job unless it exists already; true when this call created it.
    #[allow(clippy::too_many_arguments)]
    async fn submit(
        &self,
        c: &Clients,
        sub: &render::Submission<'_>,
        events: &JobEvents,
        cancel: &CancellationToken,
        create_attempted: &mut bool,
    ) -> Result<bool, BackendError> {
        let (job, resolved, name) = (sub.job, sub.resolved, sub.name.as_str());
        let mut backoff = Backoff::new(Duration::from_millis(500), self.config.max_poll_interval);
        // A job with this name is this Switchyard job submitted before.
        loop {
            match c
                .sagemaker
                .describe_training_job()
                .training_job_name(name)
                .send()
                .await
            {
                Ok(d) => {
                    let status = d.training_job_status().map(|s| s.as_str()).unwrap_or("?");
                    let _ = events.send(JobEvent::Status {
                        message: format!(
                            "SageMaker training job {name} exists already ({status}); following it"
                        ),
                    });
                    return Ok(false);
                }
                Err(e) => {
                    let e = classify("DescribeTrainingJob", &e);
                    if e.kind == Kind::NotFound {
                        break;
                    }
                    backoff.failure(&e).map_err(BackendError::from)?;
                    wait(backoff.next(), cancel).await?;
                }
            }
        }
        let staged = self.stage(c, job, resolved, name, events).await?;
        if cancel.is_cancelled() {
            return Err(BackendError::Permanent(CANCELED_BEFORE_CREATE.into()));
        }
        backoff.success();
        loop {
            let request = sub.request(c.sagemaker.create_training_job(), &staged);
            *create_attempted = true;
            match request.send().await {
                Ok(out) => {
                    let _ = events.send(JobEvent::Status {
                        message: format!(
                            "created SageMaker training job {name} in {} ({} × {}): {}",
                            c.region,
                            job.spec.nodes,
                            resolved.instance_type,
                            out.training_job_arn().unwrap_or("?")
                        ),
                    });
                    return Ok(true);
                }
                Err(e) => {
                    let e = classify("CreateTrainingJob", &e);
                    // An earlier attempt whose answer was lost created it.
                    if e.code.as_deref() == Some("ResourceInUse") {
                        return Ok(false);
                    }
                    backoff.failure(&e).map_err(BackendError::from)?;
                    wait(backoff.next(), cancel).await?;
                }
            }
        }
    }
}

const CANCELED_BEFORE_CREATE: &str = "canceled before the SageMaker training job was created";

async fn wait(d: Duration, cancel: &CancellationToken) -> Result<(), BackendError> {
    tokio::select! {
        _ = tokio::time::sleep(d) => Ok(()),
        _ = cancel.cancelled() => Err(BackendError::Permanent(CANCELED_BEFORE_CREATE.into())),
    }
}

#[async_trait::async_trait]
impl TrainingBackend for SageMakerBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Sagemaker
    }

    fn preflight(&self, job: &TrainingJob) -> Result<(), BackendError> {
        render::resolve(job, &self.config).map(|_| ())
    }

    /// Whether the job resolves here (role, bucket, instance type, limits),
    /// and its price: the instance type's hourly price × `nodes` (less the
    /// spot discount with `useSpotInstances`); refused when the account's
    /// quota for the type has no room for it now ([`quota`]).
    async fn assess(&self, job: &TrainingJob) -> switchyard_training::placement::Assessment {
        use switchyard_training::placement::Assessment;
        let kind = BackendKind::Sagemaker;
        let resolved = match render::resolve(job, &self.config) {
            Ok(r) => r,
            Err(e) => return Assessment::refused(kind, e.to_string()),
        };
        let rates = match prices::hourly(&resolved.instance_type) {
            Ok(price) => rates_of(job, &resolved, price),
            Err(e) => return Assessment::refused(kind, e),
        };
        // Room now: SageMaker refuses a job beyond the account's quota
        // rather than queueing it. A quota that cannot be read (no rights to
        // Service Quotas, no answer) does not refuse the job: it is said.
        let c = self.clients(resolved.region.as_deref());
        let checked = tokio::time::timeout(
            Duration::from_secs(10),
            quota::room(&c.quotas, &c.sagemaker, &resolved.instance_type),
        )
        .await;
        let room = match checked {
            Ok(Ok(room)) => {
                if let Some(why) = room.refusal(&resolved.instance_type, job.spec.nodes) {
                    return Assessment::refused(kind, why);
                }
                room.describe(job.spec.nodes)
            }
            Ok(Err(e)) => format!("quota not checked ({e})"),
            Err(_) => "quota not checked (no answer in 10 s)".to_string(),
        };
        let detail = format!(
            "{} × {}{}, {room}",
            job.spec.nodes,
            resolved.instance_type,
            if job.spec.use_spot_instances {
                " (spot)"
            } else {
                ""
            }
        );
        Assessment {
            unpriced: rates.hourly_usd.is_none(),
            ..Assessment::can_run(kind, true, detail, rates.hourly_usd)
        }
    }

    /// The instance type's price × instances (less the spot discount with
    /// `useSpotInstances`), its vCPUs and GPUs; a job that does not resolve
    /// or an unpriced type is not counted.
    fn rates(&self, job: &TrainingJob) -> switchyard_training::kpi::Rates {
        match render::resolve(job, &self.config) {
            Ok(resolved) => {
                let price = prices::hourly(&resolved.instance_type).ok().flatten();
                rates_of(job, &resolved, price)
            }
            Err(_) => switchyard_training::kpi::Rates::requested(job, None),
        }
    }

    /// See [`render::checkpoint_home`].
    fn checkpoint_home(&self, job: &TrainingJob) -> Option<String> {
        render::checkpoint_home(job, &self.config)
    }

    async fn take_checkpoint(&self, job: &TrainingJob) -> Result<TrainingJob, BackendError> {
        let (Some(home), Some(from)) = (self.checkpoint_home(job), &job.spec.checkpoint) else {
            return Ok(job.clone());
        };
        let from = Path::new(from);
        if from.exists() {
            let (bucket, prefix) = parse_s3_uri(&home)
                .ok_or_else(|| BackendError::Permanent(format!("bad checkpoint home {home}")))?;
            let region = job.spec.sagemaker.region.as_deref();
            self.clients(region.or(self.config.region.as_deref()))
                .s3
                .upload_dir(from, &bucket, &prefix)
                .await
                .map_err(|e| {
                    BackendError::Permanent(format!(
                        "spec.checkpoint: copying {} to {home}: {e}",
                        from.display()
                    ))
                })?;
        }
        let mut moved = job.clone();
        moved.spec.checkpoint = Some(home);
        Ok(moved)
    }

    async fn run(
        &self,
        job: &TrainingJob,
        job_id: &str,
        events: JobEvents,
        cancel: CancellationToken,
    ) -> Result<TrainingOutcome, BackendError> {
        let resolved = render::resolve(job, &self.config)?;
        let sub = render::Submission::new(job, &resolved, job_id);
        let name = sub.name.clone();
        let c = self.clients(resolved.region.as_deref());
        let mut create_attempted = false;
        match self
            .submit(&c, &sub, &events, &cancel, &mut create_attempted)
            .await
        {
            Ok(_) => {}
            Err(_) if cancel.is_cancelled() => {
                // A create whose answer was lost may have started a billed job.
                if create_attempted {
                    follow::stop(&c.sagemaker, &name, &events).await;
                }
                return Ok(TrainingOutcome {
                    state: switchyard_training::JobState::Canceled,
                    restarts: 0,
                    model: None,
                    metrics: Default::default(),
                    failure_reason: Some(CANCELED_BEFORE_CREATE.into()),
                });
            }
            Err(e) => return Err(e),
        }
        let _ = events.send(JobEvent::Placement {
            details: serde_json::json!({
                "kind": "sagemaker",
                "training_job_name": name,
                "region": c.region,
                "instance_type": resolved.instance_type,
                "instance_count": job.spec.nodes,
                "console_url": format!(
                    "https://{r}.console.aws.amazon.com/sagemaker/home?region={r}#/jobs/{name}",
                    r = c.region
                ),
                "log_group": logs::LOG_GROUP,
            }),
        });
        let logs = logs::LogTail::new(
            c.logs.clone(),
            &name,
            self.config.jobs_dir.join(job_id).join("logs"),
            job.spec.procs_per_node,
            MetricScraper::new(job),
        );
        let backoff = Backoff::new(self.config.poll_interval, self.config.max_poll_interval);
        follow::follow(&c.sagemaker, &name, Some(logs), backoff, &events, &cancel).await
    }

    async fn stop(&self, job: &TrainingJob, job_id: &str) -> Result<Stopped, BackendError> {
        use aws_sdk_sagemaker::types::TrainingJobStatus;
        let resolved = render::resolve(job, &self.config)?;
        let name = render::training_job_name(&job.name, job_id);
        let c = self.clients(resolved.region.as_deref());
        let status = match c
            .sagemaker
            .describe_training_job()
            .training_job_name(&name)
            .send()
            .await
        {
            Ok(d) => d.training_job_status().cloned(),
            Err(e) => {
                let e = classify("DescribeTrainingJob", &e);
                if e.kind == Kind::NotFound {
                    return Ok(Stopped::Nothing(format!(
                        "no SageMaker training job {name} was created in {}",
                        c.region
                    )));
                }
                return Err(e.into());
            }
        };
        match status {
            Some(
                s @ (TrainingJobStatus::Completed
                | TrainingJobStatus::Failed
                | TrainingJobStatus::Stopped),
            ) => Ok(Stopped::Nothing(format!(
                "SageMaker training job {name} had already ended ({})",
                s.as_str()
            ))),
            _ => {
                let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
                if follow::stop(&c.sagemaker, &name, &tx).await {
                    Ok(Stopped::Remote(format!(
                        "SageMaker training job {name} in {} (StopTrainingJob)",
                        c.region
                    )))
                } else {
                    Err(BackendError::Permanent(format!(
                        "SageMaker did not accept StopTrainingJob for {name}; ask again"
                    )))
                }
            }
        }
    }
}

/// Downloads SageMaker's `model.tar.gz` (an `s3://` URI) and unpacks it into
/// `dest`, for a pipeline step whose next step reads the model's files.
pub async fn fetch_model(s3: &S3Store, uri: &str, dest: &Path) -> Result<usize, String> {
    let (bucket, key) = parse_s3_uri(uri).ok_or_else(|| format!("'{uri}' is not an s3:// URI"))?;
    let bytes = s3.get(&bucket, &key).await?;
    if key.ends_with(".tar.gz") || key.ends_with(".tgz") {
        let dest = dest.to_path_buf();
        tokio::task::spawn_blocking(move || sourcedir::unpack(&bytes, &dest))
            .await
            .map_err(|e| e.to_string())?
    } else {
        let file = dest.join(key.rsplit('/').next().unwrap_or("model"));
        std::fs::create_dir_all(dest).map_err(|e| e.to_string())?;
        std::fs::write(&file, bytes)
            .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        Ok(1)
    }
}
