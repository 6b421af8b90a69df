//! TrainingJob → CreateTrainingJob request (REFERENCE.md §5).
//!
//! [`resolve`] decides everything that can be decided without AWS (role,
//! instance type, bucket, VPC, what must be uploaded) and refuses, naming the
//! field, whatever SageMaker would reject or the job could not use; it runs in
//! preflight, before anything is recorded or any API is called. [`render`]
//! then fills the SDK's request from the job and what staging uploaded.

use std::collections::BTreeMap;
use std::path::PathBuf;

use aws_sdk_sagemaker::operation::create_training_job::builders::CreateTrainingJobFluentBuilder;
use aws_sdk_sagemaker::types::{
    AlgorithmSpecification, Channel, CheckpointConfig, DataSource, FileSystemAccessMode,
    FileSystemDataSource, FileSystemType, MetricDefinition, OutputDataConfig, ResourceConfig,
    RetryStrategy, S3DataDistribution, S3DataSource, S3DataType, StoppingCondition, Tag,
    TrainingInputMode, TrainingInstanceType, VpcConfig,
};
use serde_json::Value;
use switchyard_training::{
    contract, modeltrainer, BackendError, ChannelSource, Contract, RestartPolicy, TrainingJob,
};

use crate::config::{LocalChannels, SageMakerConfig};
use crate::{instance, launcher};

/// Where the training container sees checkpoints (SageMaker's default).
pub const CHECKPOINT_LOCAL_PATH: &str = "/opt/ml/checkpoints";
/// Default EBS volume per instance.
pub const DEFAULT_VOLUME_GB: u32 = 30;
/// Default MaxRuntimeInSeconds (SageMaker's own default is one day).
pub const DEFAULT_MAX_RUNTIME: u64 = 86_400;
/// SageMaker's upper bound for MaxRuntimeInSeconds (28 days).
const MAX_RUNTIME_LIMIT: u64 = 28 * 86_400;
/// Tag keys that link a SageMaker job back to Switchyard.
pub const TAG_JOB_ID: &str = "switchyard:job-id";
pub const TAG_JOB_NAME: &str = "switchyard:job-name";
pub const TAG_RUN_ID: &str = "switchyard:run-id";
pub const TAG_TASK: &str = "switchyard:task";

/// Every choice made before any API call.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub role_arn: String,
    pub region: Option<String>,
    pub bucket: Option<String>,
    pub prefix: String,
    pub instance_type: String,
    pub subnets: Vec<String>,
    pub security_group_ids: Vec<String>,
    /// OutputDataConfig.S3OutputPath.
    pub output_path: String,
    /// Local channels to upload before creating the job.
    pub uploads: Vec<(String, PathBuf)>,
}

/// What staging put in S3.
#[derive(Debug, Clone, Default)]
pub struct Staged {
    /// `s3://…/sourcedir.tar.gz`, when there is an entry point.
    pub submit_directory: Option<String>,
    /// Channel name → the S3 URI a local channel was uploaded to.
    pub channel_uris: BTreeMap<String, String>,
    /// `contract: modeltrainer`: the code channel's and the launcher's S3 prefixes.
    pub code_uri: Option<String>,
    pub launcher_uri: Option<String>,
}

fn refuse(field: &str, message: impl std::fmt::Display) -> BackendError {
    BackendError::Permanent(format!("{field}: {message}"))
}

/// The SageMaker TrainingJobName of a Switchyard job: its name, then a digest of
/// its id, at most 63 characters. The same job always gets the same name, which
/// is what makes a resubmission find the job it already created.
pub fn training_job_name(name: &str, job_id: &str) -> String {
    let digest = switchyard_training::short_digest(job_id, 12);
    let keep = 63 - 1 - digest.len();
    let stem: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(keep)
        .collect();
    let stem = stem.trim_matches('-');
    if stem.is_empty() {
        format!("job-{digest}")
    } else {
        format!("{stem}-{digest}")
    }
}

fn role_ok(arn: &str) -> bool {
    let Some(rest) = arn.strip_prefix("arn:") else {
        return false;
    };
    let parts: Vec<&str> = rest.splitn(5, ':').collect();
    parts.len() == 5
        && parts[0].starts_with("aws")
        && parts[1] == "iam"
        && parts[3].len() == 12
        && parts[3].chars().all(|c| c.is_ascii_digit())
        && parts[4]
            .strip_prefix("role/")
            .is_some_and(|r| !r.is_empty())
}

/// Hyperparameters as the SageMaker Python SDK sends them for framework
/// estimators: every value JSON-encoded into a string (`"adam"` → `"\"adam\""`,
/// `3` → `"3"`), which the training toolkit decodes again.
pub fn encode_hyperparameter(v: &Value) -> String {
    v.to_string()
}

/// A hyperparameter as the job's contract sends it: JSON (the v2 SDK) or
/// ModelTrainer's `safe_serialize` (a string as it is).
fn encode_for(job: &TrainingJob, v: &Value) -> String {
    match job.spec.contract {
        Contract::Toolkit => encode_hyperparameter(v),
        Contract::ModelTrainer => modeltrainer::encode(v),
    }
}

/// Where a job placed on SageMaker keeps a local checkpoint folder (this
/// machine's, or a Kubernetes data claim mounted here): under the bucket's
/// `<prefix>/checkpoints/<digest of its path>`, so the same folder always
/// maps to the same place and a later run placed here resumes too. `None`
/// for an `s3://` checkpoint (read where it is), or without a bucket.
pub fn checkpoint_home(job: &TrainingJob, config: &SageMakerConfig) -> Option<String> {
    use sha2::Digest;
    let c = job.spec.checkpoint.as_deref()?;
    if c.starts_with("s3://") {
        return None;
    }
    let sm = &job.spec.sagemaker;
    let bucket = sm.bucket.clone().or_else(|| config.bucket.clone())?;
    let prefix = sm
        .prefix
        .clone()
        .map(|p| p.trim_matches('/').to_string())
        .unwrap_or_else(|| config.prefix.clone());
    let digest = hex::encode(sha2::Sha256::digest(c.as_bytes()));
    Some(format!(
        "s3://{bucket}/{}",
        join_key(&prefix, &format!("checkpoints/{}", &digest[..16]))
    ))
}

/// Checks the job against what SageMaker and the configuration allow.
pub fn resolve(job: &TrainingJob, config: &SageMakerConfig) -> Result<Resolved, BackendError> {
    let spec = &job.spec;
    let sm = &spec.sagemaker;
    let role_arn = role(job, config)?;
    // Only SageMaker's toolkit (an entry point) starts several processes per
    // host; a container command runs once per host.
    if spec.procs_per_node > 1 && spec.entry_point.is_none() {
        return Err(refuse(
            "spec.procsPerNode",
            format!(
                "{} processes per host need spec.entryPoint (SageMaker's PyTorch container then starts them with torchrun); with spec.command the container runs it once per host — set procsPerNode: 1 or use entryPoint",
                spec.procs_per_node
            ),
        ));
    }

    let instance_type = instance_type(job, config)?;
    let bucket = sm.bucket.clone().or_else(|| config.bucket.clone());
    let prefix = sm
        .prefix
        .clone()
        .map(|p| p.trim_matches('/').to_string())
        .unwrap_or_else(|| config.prefix.clone());
    if spec.contract == Contract::ModelTrainer && bucket.is_none() {
        return Err(no_bucket(
            "spec.contract",
            "a modeltrainer job's launcher and code are uploaded to S3 as channels",
        ));
    }
    if spec.entry_point.is_some() && bucket.is_none() {
        return Err(no_bucket(
            "spec.sourceDir",
            "sourceDir is uploaded to S3 as sourcedir.tar.gz",
        ));
    }

    let subnets = if sm.subnets.is_empty() {
        config.subnets.clone()
    } else {
        sm.subnets.clone()
    };
    let security_group_ids = if sm.security_group_ids.is_empty() {
        config.security_group_ids.clone()
    } else {
        sm.security_group_ids.clone()
    };
    if subnets.is_empty() != security_group_ids.is_empty() {
        return Err(refuse(
            "spec.sagemaker.subnets",
            "a VPC needs both subnets and securityGroupIds (or neither)",
        ));
    }

    let uploads = channel_uploads(job, config, &subnets, bucket.is_some())?;
    let output_path = output_path(job, bucket.as_deref(), &prefix)?;
    check_limits(job)?;
    Ok(Resolved {
        role_arn,
        region: sm.region.clone().or_else(|| config.region.clone()),
        bucket,
        prefix,
        instance_type,
        subnets,
        security_group_ids,
        output_path,
        uploads,
    })
}

/// The execution role: the job's, else the configured one, an IAM role ARN.
fn role(job: &TrainingJob, config: &SageMakerConfig) -> Result<String, BackendError> {
    let role_arn = job
        .spec
        .role_arn
        .clone()
        .filter(|r| !r.is_empty())
        .or_else(|| config.role_arn.clone())
        .ok_or_else(|| {
            refuse(
                "spec.roleArn",
                "missing: the execution role SageMaker assumes (arn:aws:iam::<account>:role/<name>); set it in the job or in SWITCHYARD_SAGEMAKER_ROLE_ARN",
            )
        })?;
    if !role_ok(&role_arn) {
        return Err(refuse(
            "spec.roleArn",
            format!(
                "'{role_arn}' is not an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)"
            ),
        ));
    }

    Ok(role_arn)
}

/// The instance type: named (and checked against the job's resources when
/// Switchyard's table knows it), or derived from the resources; within the
/// configured instance limit for the job's node count.
fn instance_type(job: &TrainingJob, config: &SageMakerConfig) -> Result<String, BackendError> {
    let spec = &job.spec;
    let res = &spec.resources;
    let memory_gib = res
        .memory
        .as_deref()
        .and_then(switchyard_training::validate::parse_quantity)
        .map(|b| b as f64 / (1u64 << 30) as f64)
        .unwrap_or(0.0);
    let instance_type = match spec.instance_type.as_deref().filter(|t| !t.is_empty()) {
        Some(t) => {
            if !instance::well_formed(t) {
                return Err(refuse(
                    "spec.instanceType",
                    format!("'{t}' is not a SageMaker instance type (ml.<family>.<size>, e.g. ml.g5.xlarge)"),
                ));
            }
            if let Some(known) = instance::lookup(t) {
                if res.gpu > known.gpus {
                    return Err(refuse(
                        "spec.resources.gpu",
                        format!("{} GPUs per host, but {t} has {}", res.gpu, known.gpus),
                    ));
                }
                if res.cpu > known.vcpus as f64 {
                    return Err(refuse(
                        "spec.resources.cpu",
                        format!("{} CPUs per host, but {t} has {}", res.cpu, known.vcpus),
                    ));
                }
                if memory_gib > known.memory_gib as f64 {
                    return Err(refuse(
                        "spec.resources.memory",
                        format!("{memory_gib:.1} GiB per host, but {t} has {} GiB", known.memory_gib),
                    ));
                }
                if known.gpus > 0 && spec.procs_per_node > known.gpus {
                    return Err(refuse(
                        "spec.procsPerNode",
                        format!(
                            "{} processes per host, but {t} has {} GPUs (at most one process per GPU)",
                            spec.procs_per_node, known.gpus
                        ),
                    ));
                }
            }
            t.to_string()
        }
        None => instance::derive(res.cpu, memory_gib, res.gpu)
            .map(|t| t.name.to_string())
            .ok_or_else(|| {
                refuse(
                    "spec.resources",
                    format!(
                        "no instance type in Switchyard's table has {} CPUs, {memory_gib:.1} GiB and {} GPUs per host; name one with spec.instanceType",
                        res.cpu, res.gpu
                    ),
                )
            })?,
    };
    let limit = config
        .instance_limits
        .get(&instance_type)
        .copied()
        .unwrap_or(instance::DEFAULT_LIMIT);
    if spec.nodes > limit {
        return Err(refuse(
            "spec.nodes",
            format!(
                "{} instances of {instance_type} is more than the {limit} allowed for that type (raise it with SWITCHYARD_SAGEMAKER_INSTANCE_LIMITS={instance_type}=N once the account's quota allows)",
                spec.nodes
            ),
        ));
    }

    Ok(instance_type)
}

/// Each channel checked against where it can come from; the local ones to
/// upload first (they need a bucket).
fn channel_uploads(
    job: &TrainingJob,
    config: &SageMakerConfig,
    subnets: &[String],
    has_bucket: bool,
) -> Result<Vec<(String, std::path::PathBuf)>, BackendError> {
    let mut uploads = Vec::new();
    for ch in &job.channels {
        let field = format!("spec.channels.{}", ch.name);
        match &ch.source {
            ChannelSource::S3 { .. } => {}
            ChannelSource::Efs { .. } => {
                if subnets.is_empty() {
                    return Err(refuse(
                        &field,
                        "an EFS channel needs the training instances in the file system's VPC: set spec.sagemaker.subnets and securityGroupIds (or SWITCHYARD_SAGEMAKER_SUBNETS and SWITCHYARD_SAGEMAKER_SECURITY_GROUPS)",
                    ));
                }
                // EFS channels are always read in File mode (render sets it per
                // channel); inputMode applies to the S3 channels.
            }
            ChannelSource::Local(path) => {
                if config.local_channels == LocalChannels::Refuse {
                    return Err(refuse(
                        &field,
                        format!("{} is a local path and local channels are refused here (SWITCHYARD_SAGEMAKER_LOCAL_CHANNELS=refuse); put the data in S3 or EFS", path.display()),
                    ));
                }
                if !has_bucket {
                    return Err(no_bucket(&field, "a local channel is uploaded to S3 first"));
                }
                uploads.push((ch.name.clone(), path.clone()));
            }
        }
    }

    Ok(uploads)
}

fn no_bucket(field: &str, why: &str) -> BackendError {
    refuse(
        field,
        format!("{why}, and no bucket is configured: set spec.sagemaker.bucket or SWITCHYARD_SAGEMAKER_BUCKET"),
    )
}

/// Where the model goes: `spec.output` (an `s3://` URI), else the bucket's
/// `<prefix>/output`; a local checkpoint is refused (SageMaker syncs with S3).
fn output_path(
    job: &TrainingJob,
    bucket: Option<&str>,
    prefix: &str,
) -> Result<String, BackendError> {
    let spec = &job.spec;
    let output_path = match spec.output.as_deref() {
        Some(o) if o.starts_with("s3://") => o.trim_end_matches('/').to_string(),
        Some(o) => {
            return Err(refuse(
                "spec.output",
                format!(
                    "'{o}' is a local path; SageMaker writes model.tar.gz to S3: give an s3:// URI"
                ),
            ))
        }
        None => match bucket {
            Some(b) => format!("s3://{b}/{}", join_key(prefix, "output")),
            None => return Err(no_bucket("spec.output", "the model goes to S3")),
        },
    };
    if let Some(c) = spec.checkpoint.as_deref() {
        if !c.starts_with("s3://") {
            return Err(refuse(
                "spec.checkpoint",
                format!(
                    "'{c}' is a local path; SageMaker syncs checkpoints with S3: give an s3:// URI"
                ),
            ));
        }
    }

    Ok(output_path)
}

/// SageMaker's own limits: runtime, volume, retries, hyperparameters,
/// variables and tags.
fn check_limits(job: &TrainingJob) -> Result<(), BackendError> {
    let spec = &job.spec;
    let runtime = spec.max_runtime_seconds.unwrap_or(DEFAULT_MAX_RUNTIME);
    if runtime > MAX_RUNTIME_LIMIT {
        return Err(refuse(
            "spec.maxRuntimeSeconds",
            format!("{runtime} is more than SageMaker's limit of {MAX_RUNTIME_LIMIT} (28 days)"),
        ));
    }
    if let Some(v) = spec.volume_size_gb {
        if v == 0 || v > 16_384 {
            return Err(refuse("spec.volumeSizeGb", "must be 1 to 16384"));
        }
    }
    if spec.restart_policy != RestartPolicy::Never && spec.backoff_limit > 30 {
        return Err(refuse(
            "spec.backoffLimit",
            "SageMaker retries a job at most 30 times (RetryStrategy.MaximumRetryAttempts)",
        ));
    }
    // The toolkit's jobs carry up to 6 `sagemaker_*` ones; ModelTrainer's none.
    let reserved = if spec.contract == Contract::ModelTrainer {
        0
    } else {
        6
    };
    if spec.hyperparameters.len() + reserved > 100 {
        return Err(refuse(
            "spec.hyperparameters",
            format!(
                "SageMaker takes at most 100 hyperparameters, {reserved} of which Switchyard uses"
            ),
        ));
    }
    for (k, v) in &spec.hyperparameters {
        if k.len() > 256 || encode_for(job, v).len() > 2500 {
            return Err(refuse(
                &format!("spec.hyperparameters.{k}"),
                "keys are at most 256 characters and values at most 2500",
            ));
        }
    }
    if spec.env.len() > 100 {
        return Err(refuse("spec.env", "SageMaker takes at most 100 variables"));
    }
    for (k, v) in &spec.env {
        let ok_key = k.len() <= 512
            && k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok_key || v.len() > 512 {
            return Err(refuse(
                &format!("spec.env.{k}"),
                "SageMaker needs names of letters, digits and '_' (not starting with a digit) and values of at most 512 characters",
            ));
        }
    }
    let tags = user_tags(job);
    if tags.len() + 4 > 50 {
        return Err(refuse(
            "spec.tags",
            "SageMaker takes at most 50 tags, 4 of which Switchyard uses",
        ));
    }
    for (k, v) in &tags {
        if k.is_empty() || k.len() > 128 || v.len() > 256 || k.starts_with("aws:") {
            return Err(refuse(
                &format!("spec.tags.{k}"),
                "tag keys are 1-128 characters not starting with 'aws:', values at most 256",
            ));
        }
    }

    Ok(())
}

/// `prefix/rest` without doubled or leading slashes.
pub fn join_key(prefix: &str, rest: &str) -> String {
    let p = prefix.trim_matches('/');
    if p.is_empty() {
        rest.to_string()
    } else {
        format!("{p}/{rest}")
    }
}

/// The user's own tags (`spec.tags`).
fn user_tags(job: &TrainingJob) -> BTreeMap<String, String> {
    job.spec.tags.clone()
}

/// One job as it is submitted: the job, the choices [`resolve`] made, and
/// the SageMaker name it gets.
pub struct Submission<'a> {
    pub job: &'a TrainingJob,
    pub resolved: &'a Resolved,
    pub name: String,
    pub job_id: &'a str,
}

impl<'a> Submission<'a> {
    pub fn new(job: &'a TrainingJob, resolved: &'a Resolved, job_id: &'a str) -> Self {
        Submission {
            job,
            resolved,
            name: training_job_name(&job.name, job_id),
            job_id,
        }
    }

    /// The run and task a pipeline step's job belongs to, from its labels.
    fn run(&self) -> Option<(&str, &str)> {
        let labels = &self.job.labels;
        labels.get(switchyard_training::LABEL_RUN_ID).map(|r| {
            let task = labels.get(switchyard_training::LABEL_TASK);
            (r.as_str(), task.map(String::as_str).unwrap_or(""))
        })
    }

    /// The CreateTrainingJob request, once staging put the code and local
    /// channels in S3.
    pub fn request(
        &self,
        request: CreateTrainingJobFluentBuilder,
        staged: &Staged,
    ) -> CreateTrainingJobFluentBuilder {
        let (spec, resolved) = (&self.job.spec, self.resolved);
        let mode = match spec.input_mode.as_deref() {
            Some("FastFile") => TrainingInputMode::Fastfile,
            Some("Pipe") => TrainingInputMode::Pipe,
            _ => TrainingInputMode::File,
        };
        let hps = self.hyperparameters(staged);
        let mut channels = channels(self.job, staged, &mode);
        channels.extend(modeltrainer_channels(staged));
        let mut stopping = StoppingCondition::builder()
            .max_runtime_in_seconds(spec.max_runtime_seconds.unwrap_or(DEFAULT_MAX_RUNTIME) as i32);
        if spec.use_spot_instances {
            stopping =
                stopping.set_max_wait_time_in_seconds(spec.max_wait_seconds.map(|w| w as i32));
        }
        let mut req = request
            .training_job_name(&self.name)
            .role_arn(&resolved.role_arn)
            .algorithm_specification(algorithm(self.job, mode, staged))
            .set_hyper_parameters((!hps.is_empty()).then(|| hps.into_iter().collect()))
            .set_input_data_config((!channels.is_empty()).then_some(channels))
            .output_data_config(
                OutputDataConfig::builder()
                    .s3_output_path(&resolved.output_path)
                    .build(),
            )
            .resource_config(
                ResourceConfig::builder()
                    .instance_type(TrainingInstanceType::from(resolved.instance_type.as_str()))
                    .instance_count(spec.nodes as i32)
                    .volume_size_in_gb(spec.volume_size_gb.unwrap_or(DEFAULT_VOLUME_GB) as i32)
                    .build(),
            )
            .stopping_condition(stopping.build())
            .enable_managed_spot_training(spec.use_spot_instances)
            .enable_network_isolation(spec.sagemaker.enable_network_isolation)
            .enable_inter_container_traffic_encryption(
                spec.sagemaker.enable_inter_container_traffic_encryption,
            )
            .set_environment(self.environment())
            .set_tags(Some(self.tags()));
        if let Some(c) = &spec.checkpoint {
            req = req.checkpoint_config(
                CheckpointConfig::builder()
                    .s3_uri(c)
                    .local_path(CHECKPOINT_LOCAL_PATH)
                    .build(),
            );
        }
        if !resolved.subnets.is_empty() {
            req = req.vpc_config(
                VpcConfig::builder()
                    .set_subnets(Some(resolved.subnets.clone()))
                    .set_security_group_ids(Some(resolved.security_group_ids.clone()))
                    .build(),
            );
        }
        if spec.restart_policy != RestartPolicy::Never && spec.backoff_limit > 0 {
            req = req.retry_strategy(
                RetryStrategy::builder()
                    .maximum_retry_attempts(spec.backoff_limit as i32)
                    .build(),
            );
        }
        req
    }

    /// The container's variables: the job's `env`, and for the toolkit
    /// SAGEMAKER_BASE_DIR as on every backend (the toolkit's default there).
    fn environment(&self) -> Option<std::collections::HashMap<String, String>> {
        let env = &self.job.spec.env;
        match self.job.spec.contract {
            Contract::ModelTrainer => (!env.is_empty()).then(|| env.clone().into_iter().collect()),
            Contract::Toolkit => Some(
                std::iter::once(("SAGEMAKER_BASE_DIR".to_string(), "/opt/ml".to_string()))
                    .chain(env.clone())
                    .collect(),
            ),
        }
    }

    /// The job's hyperparameters, JSON-encoded; with an entry point also
    /// the toolkit's (the same as every backend writes, procsPerNode
    /// included, with SageMaker's own job name and the region).
    fn hyperparameters(&self, staged: &Staged) -> BTreeMap<String, String> {
        let spec = &self.job.spec;
        if spec.contract == Contract::ModelTrainer {
            // As ModelTrainer sends them; its launcher adds none.
            return modeltrainer::encoded_hyperparameters(self.job)
                .into_iter()
                .collect();
        }
        let mut hps: BTreeMap<String, String> = spec
            .hyperparameters
            .iter()
            .map(|(k, v)| (k.clone(), encode_hyperparameter(v)))
            .collect();
        if let (Some(_), Some(dir)) = (&spec.entry_point, &staged.submit_directory) {
            for (k, v) in contract::sagemaker_hyperparameters(self.job, &self.name, dir) {
                hps.insert(k, encode_hyperparameter(&v));
            }
            if let Some(r) = &self.resolved.region {
                hps.insert(
                    "sagemaker_region".into(),
                    Value::String(r.clone()).to_string(),
                );
            }
        }
        hps
    }

    /// The user's tags, then Switchyard's: the job, and for a pipeline
    /// step's job its run and task.
    fn tags(&self) -> Vec<Tag> {
        let mut own = vec![
            (TAG_JOB_ID, self.job_id.to_string()),
            (TAG_JOB_NAME, self.job.name.clone()),
        ];
        if let Some((run_id, task)) = self.run() {
            own.push((TAG_RUN_ID, run_id.to_string()));
            own.push((TAG_TASK, task.chars().take(256).collect()));
        }
        user_tags(self.job)
            .into_iter()
            .chain(own.into_iter().map(|(k, v)| (k.to_string(), v)))
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect()
    }
}

/// The image, input mode and metrics; a command as the container's entry
/// point and arguments.
fn algorithm(
    job: &TrainingJob,
    mode: TrainingInputMode,
    staged: &Staged,
) -> AlgorithmSpecification {
    let spec = &job.spec;
    let metrics = spec
        .metrics
        .iter()
        .map(|m| {
            MetricDefinition::builder()
                .name(&m.name)
                .regex(&m.regex)
                .build()
        })
        .collect();
    let mut algo = AlgorithmSpecification::builder()
        .training_image(spec.image.clone().unwrap_or_default())
        .training_input_mode(mode)
        .set_metric_definitions(Some(metrics));
    if staged.launcher_uri.is_some() {
        // ModelTrainer's way: the launcher from its channel, for a script
        // and a command alike.
        algo = algo
            .container_entrypoint(launcher::ENTRYPOINT)
            .set_container_arguments(Some(launcher::arguments()));
    } else if let Some(cmd) = &spec.command {
        algo = algo
            .container_entrypoint(cmd[0].clone())
            .set_container_arguments((cmd.len() > 1).then(|| cmd[1..].to_vec()));
    }
    algo.build()
}

/// A `contract: modeltrainer` job's own two channels, after the job's: the
/// code and the launcher (always files).
fn modeltrainer_channels(staged: &Staged) -> Vec<Channel> {
    [
        (modeltrainer::CODE_CHANNEL, &staged.code_uri),
        (modeltrainer::DRIVERS_CHANNEL, &staged.launcher_uri),
    ]
    .into_iter()
    .filter_map(|(name, uri)| {
        let source = DataSource::builder()
            .s3_data_source(
                S3DataSource::builder()
                    .s3_uri(uri.clone()?)
                    .s3_data_type(S3DataType::S3Prefix)
                    .s3_data_distribution_type(S3DataDistribution::FullyReplicated)
                    .build(),
            )
            .build();
        Some(
            Channel::builder()
                .channel_name(name)
                .data_source(source)
                .input_mode(TrainingInputMode::File)
                .build(),
        )
    })
    .collect()
}

/// Each channel: EFS read in File mode; S3 (and local channels, staged to
/// S3) in the job's input mode.
fn channels(job: &TrainingJob, staged: &Staged, mode: &TrainingInputMode) -> Vec<Channel> {
    job.channels
        .iter()
        .map(|ch| {
            let source = match &ch.source {
                ChannelSource::Efs {
                    file_system_id,
                    path,
                } => DataSource::builder()
                    .file_system_data_source(
                        FileSystemDataSource::builder()
                            .file_system_id(file_system_id)
                            .file_system_type(FileSystemType::Efs)
                            .file_system_access_mode(FileSystemAccessMode::Ro)
                            .directory_path(path)
                            .build(),
                    )
                    .build(),
                ChannelSource::S3 { .. } | ChannelSource::Local(_) => {
                    let uri = staged
                        .channel_uris
                        .get(&ch.name)
                        .cloned()
                        .unwrap_or_else(|| ch.uri.clone());
                    DataSource::builder()
                        .s3_data_source(
                            S3DataSource::builder()
                                .s3_uri(uri)
                                .s3_data_type(S3DataType::S3Prefix)
                                .s3_data_distribution_type(S3DataDistribution::FullyReplicated)
                                .build(),
                        )
                        .build()
                }
            };
            Channel::builder()
                .channel_name(&ch.name)
                .data_source(source)
                .input_mode(if matches!(ch.source, ChannelSource::Efs { .. }) {
                    TrainingInputMode::File
                } else {
                    mode.clone()
                })
                .build()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_valid_and_short() {
        let a = training_job_name("digits-ddp", "3f2a");
        assert_eq!(a, training_job_name("digits-ddp", "3f2a"));
        assert_ne!(a, training_job_name("digits-ddp", "3f2b"));
        let long = training_job_name(&"x".repeat(80), "id");
        assert!(long.len() <= 63, "{long}");
        assert!(training_job_name("---", "id").starts_with("job-"));
        for n in [a, long] {
            assert!(n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
            assert!(n.starts_with(|c: char| c.is_ascii_alphanumeric()));
        }
    }

    #[test]
    fn role_arns() {
        assert!(role_ok("arn:aws:iam::123456789012:role/SageMakerRole"));
        assert!(role_ok("arn:aws-cn:iam::123456789012:role/path/R"));
        assert!(!role_ok("SageMakerRole"));
        assert!(!role_ok("arn:aws:iam::1234:role/R"));
        assert!(!role_ok("arn:aws:iam::123456789012:user/R"));
    }

    #[test]
    fn hyperparameters_are_json_encoded() {
        assert_eq!(
            encode_hyperparameter(&serde_json::json!("adam")),
            "\"adam\""
        );
        assert_eq!(encode_hyperparameter(&serde_json::json!(3)), "3");
        assert_eq!(encode_hyperparameter(&serde_json::json!(0.1)), "0.1");
        assert_eq!(encode_hyperparameter(&serde_json::json!(true)), "true");
    }
}
