//! `spec.backend: kubernetes`: a TrainingJob becomes a PyTorchJob in a
//! configured namespace, reconciled by Switchyard's operator or Kubeflow's.
//!
//! The code travels in a ConfigMap, `efs://` channels are PersistentVolumeClaim
//! mounts (a configured map from file system to claim), `s3://` channels are
//! downloaded by an init container. The job is watched (not polled), each
//! pod's log is streamed per rank, and cancel deletes the PyTorchJob.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use switchyard_training::contract::{self, HostLayout, Placement};

use crate::contract as pod_contract;
use switchyard_training::{
    code_files, BackendError, BackendKind, ChannelSource, Contract, JobEvent, JobEvents, JobState,
    KubernetesApi, MetricScraper, SourceFile, Stopped, TrainingBackend, TrainingJob,
    TrainingOutcome,
};
use tokio_util::sync::CancellationToken;

use crate::crd::{PyTorchJob, CONTAINER};
use crate::pods::LABEL_JOB;

/// Where the code is mounted in the training container.
pub const CODE_DIR: &str = "/opt/ml/code";
/// `contract: modeltrainer`'s code channel in the pods.
pub const MODELTRAINER_CODE_DIR: &str = "/opt/ml/input/data/code";
/// The most sourceDir bytes shipped in a ConfigMap (Kubernetes allows 1 MiB per object).
pub const CODE_LIMIT: u64 = 900 * 1024;
pub(crate) const LABEL_JOB_ID: &str = "switchyard.io/job-id";

/// How TrainingJobs reach the cluster.
#[derive(Debug, Clone)]
pub struct KubernetesConfig {
    pub namespace: String,
    /// EFS file system id → PersistentVolumeClaim that mounts it (the AWS design's `efs-sc-claim`).
    pub efs_claims: BTreeMap<String, String>,
    /// The image of the init container that downloads `s3://` channels.
    pub s3_image: String,
    /// A kubeconfig file; else KUBECONFIG, ~/.kube/config or the in-cluster account.
    pub kubeconfig: Option<PathBuf>,
    /// Where per-rank log files are written (`<jobs_dir>/<job id>/logs`).
    pub jobs_dir: PathBuf,
    /// The ReadWriteMany claim that local `output` and `checkpoint` paths live on.
    pub data_claim: Option<DataClaim>,
    /// The API jobs are submitted as when they do not say (`SWITCHYARD_K8S_API`).
    pub api: KubernetesApi,
    /// The TrainJob runtime when a job names none (`SWITCHYARD_K8S_RUNTIME`,
    /// default `torch-distributed`).
    pub runtime: String,
}

/// A PersistentVolumeClaim that this process also sees as a folder: a local
/// path under `mount` is `<claim>/<relative path>` in a pod. That is how a
/// model written in a pod reaches `spec.output`, and how checkpoints outlive
/// a restarted gang.
#[derive(Debug, Clone, PartialEq)]
pub struct DataClaim {
    pub claim: String,
    pub mount: PathBuf,
}

impl DataClaim {
    /// `path`'s place on the claim (its subPath), if it is on it.
    pub fn sub_path(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&self.mount).ok()?;
        rel.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
            .then(|| rel.to_string_lossy().into_owned())
    }
}

impl KubernetesConfig {
    /// `SWITCHYARD_K8S_NAMESPACE` (default `default`), `SWITCHYARD_K8S_API`
    /// (`auto`, `PyTorchJob` or `TrainJob`), `SWITCHYARD_K8S_RUNTIME`, `SWITCHYARD_K8S_EFS_CLAIMS`
    /// (`fs-id=claim,…`), `SWITCHYARD_K8S_S3_IMAGE`, `SWITCHYARD_K8S_KUBECONFIG`,
    /// `SWITCHYARD_K8S_DATA_CLAIM` + `SWITCHYARD_K8S_DATA_MOUNT` (default: the
    /// task claim, `SWITCHYARD_K8S_TASK_CLAIM` + `SWITCHYARD_K8S_TASK_MOUNT`).
    pub fn from_env(jobs_dir: PathBuf) -> Result<Self, String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut efs_claims = BTreeMap::new();
        for item in var("SWITCHYARD_K8S_EFS_CLAIMS")
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.trim().is_empty())
        {
            let (fs, claim) = item.split_once('=').ok_or_else(|| {
                format!("SWITCHYARD_K8S_EFS_CLAIMS: '{item}' is not FS_ID=CLAIM (e.g. fs-0123=efs-sc-claim)")
            })?;
            efs_claims.insert(fs.trim().to_string(), claim.trim().to_string());
        }
        let api = match var("SWITCHYARD_K8S_API").as_deref() {
            None | Some("auto") => KubernetesApi::Auto,
            Some("PyTorchJob") => KubernetesApi::PyTorchJob,
            Some("TrainJob") => KubernetesApi::TrainJob,
            Some(other) => {
                return Err(format!(
                    "SWITCHYARD_K8S_API: '{other}' is not auto, PyTorchJob or TrainJob"
                ))
            }
        };
        Ok(KubernetesConfig {
            api,
            runtime: var("SWITCHYARD_K8S_RUNTIME").unwrap_or_else(|| "torch-distributed".into()),
            namespace: var("SWITCHYARD_K8S_NAMESPACE").unwrap_or_else(|| "default".into()),
            efs_claims,
            s3_image: var("SWITCHYARD_K8S_S3_IMAGE")
                .unwrap_or_else(|| "amazon/aws-cli:2.17.0".into()),
            kubeconfig: var("SWITCHYARD_K8S_KUBECONFIG").map(PathBuf::from),
            jobs_dir,
            data_claim: match (
                var("SWITCHYARD_K8S_DATA_CLAIM").or_else(|| var("SWITCHYARD_K8S_TASK_CLAIM")),
                var("SWITCHYARD_K8S_DATA_MOUNT").or_else(|| var("SWITCHYARD_K8S_TASK_MOUNT")),
            ) {
                (Some(claim), Some(mount)) => Some(DataClaim {
                    claim,
                    mount: PathBuf::from(mount),
                }),
                (Some(_), None) => {
                    return Err("SWITCHYARD_K8S_DATA_CLAIM needs SWITCHYARD_K8S_DATA_MOUNT: the folder where this machine mounts that claim".into())
                }
                _ => None,
            },
        })
    }
}

/// Runs TrainingJobs as PyTorchJobs.
pub struct KubernetesBackend {
    pub(crate) config: KubernetesConfig,
}

fn refuse(field: &str, message: impl std::fmt::Display) -> BackendError {
    BackendError::Permanent(format!("{field}: {message}"))
}

/// An API call that failed: a refusal of the request (4xx but 429) is
/// `Permanent`; an API server out of reach, overloaded (429) or failing
/// (5xx) is `Retryable`, since what was submitted may still run and the
/// runner re-attaches to it (`run` with the same id follows that PyTorchJob).
pub(crate) fn api_error(what: String, e: kube::Error) -> BackendError {
    let passing = match &e {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    };
    let message = format!("{what}: {e}");
    if passing {
        BackendError::Retryable(message)
    } else {
        BackendError::Permanent(message)
    }
}

fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// The PyTorchJob's name: the job name and a digest of the job id, short enough
/// for `<name>-worker-NNN` to stay a valid DNS label.
pub fn object_name(name: &str, job_id: &str) -> String {
    let stem: String = name.chars().take(36).collect();
    format!(
        "{}-{}",
        stem.trim_end_matches('-'),
        switchyard_training::short_digest(job_id, 8)
    )
}

/// `SM_CURRENT_INSTANCE_TYPE` in pods: `spec.instanceType`, else `kubernetes`.
fn instance_type(job: &TrainingJob) -> String {
    job.spec
        .instance_type
        .clone()
        .unwrap_or_else(|| "kubernetes".into())
}

/// Where the shipped code is in the pods (none without a sourceDir):
/// ModelTrainer's code channel, or the toolkit's code folder.
pub(crate) fn code_dir(job: &TrainingJob) -> Option<&'static str> {
    job.spec
        .source_dir
        .as_ref()
        .map(|_| match job.spec.contract {
            Contract::Toolkit => CODE_DIR,
            Contract::ModelTrainer => MODELTRAINER_CODE_DIR,
        })
}

/// The variables every pod of the job shares: the SageMaker-style contract
/// (hyperparameters, channels, folders) and the job's own `env`. The operator
/// adds what differs per pod (RANK, SM_CURRENT_HOST, MASTER_ADDR…).
pub(crate) fn shared_env(job: &TrainingJob) -> BTreeMap<String, String> {
    if job.spec.contract == Contract::ModelTrainer {
        // All of ModelTrainer's variables are per host (the prologue's).
        return job.spec.env.clone();
    }
    let placement = Placement {
        node: 0,
        local_rank: 0,
        master_addr: String::new(),
        master_port: 0,
        num_cpus: job.spec.resources.cpu.ceil().max(1.0) as u32,
        num_gpus: job.spec.resources.gpu,
        instance_type: instance_type(job),
        code_dir: code_dir(job).map(PathBuf::from),
        run_id: String::new(),
    };
    let per_pod = [
        "RANK",
        "LOCAL_RANK",
        "NODE_RANK",
        "GROUP_RANK",
        "ROLE_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
        "WORLD_SIZE",
        "SM_CURRENT_HOST",
        "SM_TRAINING_ENV",
        "SM_RESOURCE_CONFIG",
        "TORCHELASTIC_RUN_ID",
        "SM_HOSTS",
        "LOCAL_WORLD_SIZE",
        "GROUP_WORLD_SIZE",
        "ROLE_WORLD_SIZE",
        "ROLE_NAME",
    ];
    contract::rank_env(job, &HostLayout::new("/opt/ml"), &placement)
        .into_iter()
        .filter(|(k, _)| {
            (!pod_contract::is_sagemaker_var(k) || job.spec.env.contains_key(k))
                && !per_pod.contains(&k.as_str())
                && !k.starts_with("PET_")
        })
        .collect()
}

impl KubernetesBackend {
    pub fn new(config: KubernetesConfig) -> Self {
        KubernetesBackend { config }
    }

    /// Where the master's model folder is kept: `spec.output`, else (with a
    /// data claim) `<mount>/switchyard-jobs/<job id>/model` on the claim, as
    /// SageMaker always keeps a model; without a claim the model stays in the pod.
    pub fn model_location(&self, job: &TrainingJob, job_id: &str) -> Option<String> {
        job.spec.output.clone().or_else(|| {
            self.config.data_claim.as_ref().map(|c| {
                c.mount
                    .join("switchyard-jobs")
                    .join(job_id)
                    .join("model")
                    .to_string_lossy()
                    .into_owned()
            })
        })
    }

    pub(crate) async fn client(&self) -> Result<Client, BackendError> {
        crate::client(self.config.kubeconfig.as_deref())
            .await
            .map_err(BackendError::Permanent)
    }
}

#[async_trait::async_trait]
impl TrainingBackend for KubernetesBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Kubernetes
    }

    async fn assess(&self, job: &TrainingJob) -> switchyard_training::placement::Assessment {
        self.assess_now(job).await
    }

    fn rates(&self, job: &TrainingJob) -> switchyard_training::kpi::Rates {
        crate::assess::rates(job)
    }

    fn preflight(&self, job: &TrainingJob) -> Result<(), BackendError> {
        let s = &job.spec;
        let ns = s
            .namespace
            .clone()
            .unwrap_or_else(|| self.config.namespace.clone());
        if !dns_label(&ns) {
            return Err(refuse(
                "spec.namespace",
                format!("'{ns}' is not a Kubernetes namespace name"),
            ));
        }
        for ch in &job.channels {
            let field = format!("spec.channels.{}", ch.name);
            match &ch.source {
                ChannelSource::Efs { file_system_id, .. }
                    if !self.config.efs_claims.contains_key(file_system_id) =>
                {
                    return Err(refuse(&field, format!(
                        "no PersistentVolumeClaim is configured for {file_system_id}: set SWITCHYARD_K8S_EFS_CLAIMS={file_system_id}=<claim> (the AWS design uses efs-sc-claim)"
                    )));
                }
                ChannelSource::Local(p) => {
                    return Err(refuse(&field, format!(
                        "{} is a path on this machine, which pods cannot read: put the data in S3 or on an EFS claim",
                        p.display()
                    )));
                }
                _ => {}
            }
        }
        for (field, v) in [
            ("spec.output", &s.output),
            ("spec.checkpoint", &s.checkpoint),
        ] {
            let Some(v) = v else { continue };
            match &self.config.data_claim {
                _ if v.contains("://") => {
                    return Err(refuse(field, format!(
                        "'{v}': the kubernetes backend keeps {field} on its data claim, not in S3; give a path under SWITCHYARD_K8S_DATA_MOUNT, or have the script upload to S3 itself"
                    )))
                }
                None => {
                    return Err(refuse(field, format!(
                        "'{v}' needs a claim that pods and this machine share: set SWITCHYARD_K8S_DATA_CLAIM (a ReadWriteMany claim in the job's namespace) and SWITCHYARD_K8S_DATA_MOUNT (where it is mounted here)"
                    )))
                }
                Some(c) if c.sub_path(Path::new(v)).is_none() => {
                    return Err(refuse(field, format!(
                        "{v} is not on the data claim {} (mounted here at {}): pods could not write it",
                        c.claim,
                        c.mount.display()
                    )))
                }
                Some(_) => {}
            }
        }
        if s.kubernetes.api.unwrap_or(self.config.api) == KubernetesApi::TrainJob {
            self.trainjob_preflight(job)?;
        }
        if let Some(dir) = &s.source_dir {
            let size: u64 = code_files(job, Path::new(dir))
                .map_err(|e| refuse("spec.sourceDir", e))?
                .iter()
                .map(|f| f.size)
                .sum();
            if size > CODE_LIMIT {
                return Err(refuse("spec.sourceDir", format!(
                    "{size} bytes is more than a ConfigMap carries ({CODE_LIMIT}); put the code in the image and use command"
                )));
            }
        }
        Ok(())
    }

    async fn stop(&self, job: &TrainingJob, job_id: &str) -> Result<Stopped, BackendError> {
        let doc = self.render(job, job_id, &[]);
        let ns = doc.namespace().unwrap_or_else(|| "default".into());
        let ns = ns.as_str();
        let name = doc.name_any();
        let name = name.as_str();
        let client = self.client().await?;
        // Submitted as either API (the choice may have been automatic).
        if let Some(stopped) = self.stop_trainjob(&client, ns, name).await? {
            return Ok(stopped);
        }
        let jobs: Api<PyTorchJob> = Api::namespaced(client, ns);
        let found = jobs
            .get_opt(name)
            .await
            .map_err(|e| api_error(format!("PyTorchJob {ns}/{name}"), e))?;
        let Some(found) = found else {
            return Ok(Stopped::Nothing(format!(
                "no PyTorchJob {ns}/{name} exists"
            )));
        };
        if let Some(end) = found
            .status
            .as_ref()
            .and_then(|st| ["Succeeded", "Failed"].into_iter().find(|c| st.has(c)))
        {
            // Kept: its pods' logs and status are the record of how it ended.
            return Ok(Stopped::Nothing(format!(
                "PyTorchJob {ns}/{name} had already ended ({end})"
            )));
        }
        match jobs.delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(Stopped::Remote(format!(
                "PyTorchJob {ns}/{name} (deleted, with its pods)"
            ))),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(Stopped::Nothing(format!(
                "no PyTorchJob {ns}/{name} exists"
            ))),
            Err(e) => Err(api_error(
                format!("cannot delete PyTorchJob {ns}/{name}"),
                e,
            )),
        }
    }

    async fn run(
        &self,
        job: &TrainingJob,
        job_id: &str,
        events: JobEvents,
        cancel: CancellationToken,
    ) -> Result<TrainingOutcome, BackendError> {
        self.preflight(job)?;
        let client = self.client().await?;
        // sourceDir is listed once here and read once for the ConfigMap.
        let code = match &job.spec.source_dir {
            Some(dir) => {
                code_files(job, Path::new(dir)).map_err(|e| refuse("spec.sourceDir", e))?
            }
            None => Vec::new(),
        };
        let api = match self.submitted_as(&client, job, job_id).await? {
            Some(api) => api,
            None => self.api_for(&client, job).await?,
        };
        if api == KubernetesApi::TrainJob {
            return self
                .run_trainjob(&client, job, job_id, &code, events, cancel)
                .await;
        }
        let submitted = self.submit(&client, job, job_id, &code).await?;
        let (ns, name) = (submitted.ns.clone(), submitted.name.clone());
        let _ = events.send(JobEvent::Status {
            message: format!("created PyTorchJob {ns}/{name}"),
        });
        let jobs: Api<PyTorchJob> = Api::namespaced(client.clone(), &ns);
        let follow = self.follow(job, job_id, &client, &ns, &name, Followed::PyTorchJob);
        follow
            .watch(jobs, &events, cancel, |j, follow| {
                let st = j.status.as_ref()?;
                follow.report(st, &events);
                follow.end_of(st, || self.model_location(job, job_id))
            })
            .await
    }
}

/// Which kind of object a [`Follow`] follows: where its pods are found, which
/// container is the training one, which node a pod is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Followed {
    PyTorchJob,
    TrainJob,
}

impl Followed {
    fn selector(self, name: &str) -> String {
        match self {
            Followed::PyTorchJob => format!("{LABEL_JOB}={name}"),
            Followed::TrainJob => format!("{}={name}", crate::trainjob::pods::LABEL_JOBSET),
        }
    }

    fn container(self) -> &'static str {
        match self {
            Followed::PyTorchJob => CONTAINER,
            Followed::TrainJob => crate::trainjob::api::NODE,
        }
    }

    /// The node (host index) a pod runs: a PyTorchJob's Master is 0,
    /// Worker `i` is `i + 1`; a TrainJob's pod is its completion index.
    fn node_of(self, p: &Pod) -> u32 {
        let labels = p.labels();
        let label = |k: &str| {
            labels
                .get(k)
                .and_then(|i| i.parse::<u32>().ok())
                .unwrap_or(0)
        };
        match self {
            Followed::PyTorchJob => {
                let worker = labels
                    .get("training.kubeflow.org/replica-type")
                    .map(String::as_str)
                    == Some("worker");
                label("training.kubeflow.org/replica-index") + u32::from(worker)
            }
            Followed::TrainJob => label(crate::trainjob::pods::COMPLETION_INDEX),
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Followed::PyTorchJob => "PyTorchJob",
            Followed::TrainJob => "TrainJob",
        }
    }
}

impl KubernetesBackend {
    pub(crate) fn follow<'a>(
        &self,
        job: &'a TrainingJob,
        job_id: &str,
        client: &Client,
        ns: &str,
        name: &str,
        kind: Followed,
    ) -> Follow<'a> {
        let (lines, rx) = tokio::sync::mpsc::unbounded_channel::<JobEvent>();
        Follow {
            job,
            kind,
            pods: Api::namespaced(client.clone(), ns),
            ns: ns.to_string(),
            name: name.to_string(),
            logs_dir: self.config.jobs_dir.join(job_id).join("logs"),
            scraper: MetricScraper::new(job),
            following: Default::default(),
            placed: Default::default(),
            metrics: BTreeMap::new(),
            last_message: String::new(),
            restarts: 0,
            lines,
            rx: Some(rx),
        }
    }
}

/// A PyTorchJob as created (or found, when it was submitted before).
struct Submitted {
    ns: String,
    name: String,
}

impl KubernetesBackend {
    /// Creates the job's PyTorchJob (following one submitted before under
    /// the same job id) and the ConfigMap with its code and contract files.
    async fn submit(
        &self,
        client: &Client,
        job: &TrainingJob,
        job_id: &str,
        code: &[SourceFile],
    ) -> Result<Submitted, BackendError> {
        let pj = self.render(job, job_id, code);
        let ns = pj.namespace().unwrap_or_else(|| "default".into());
        let name = pj.name_any();
        create_with_code(client, job, code, &pj, Followed::PyTorchJob).await?;
        Ok(Submitted { ns, name })
    }
}

/// Creates `obj` (a PyTorchJob or TrainJob; one submitted before under the
/// same name, i.e. the same job id, is followed instead) and the ConfigMap
/// with the job's code and contract files, owned by it. Without its code
/// the job could only hang, so a ConfigMap that cannot be made takes the
/// object back.
pub(crate) async fn create_with_code<K>(
    client: &Client,
    job: &TrainingJob,
    code: &[SourceFile],
    obj: &K,
    kind: Followed,
) -> Result<K, BackendError>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    let ns = obj.namespace().unwrap_or_else(|| "default".into());
    let name = obj.name_any();
    let what = format!("{} {ns}/{name}", kind.kind());
    let jobs: Api<K> = Api::namespaced(client.clone(), &ns);
    let created = match jobs.create(&PostParams::default(), obj).await {
        Ok(j) => j,
        Err(kube::Error::Api(e)) if e.code == 409 => jobs
            .get(&name)
            .await
            .map_err(|e| api_error(what.clone(), e))?,
        Err(e) => return Err(api_error(format!("cannot create {what}"), e)),
    };
    let owner = json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "name": name,
        "uid": created.meta().uid, "controller": false});
    let cm = code_config_map(job, code, owner, &ns, &name)?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    match cms.create(&PostParams::default(), &cm).await {
        Ok(_) => Ok(created),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(created),
        Err(e) => {
            let _ = jobs.delete(&name, &DeleteParams::background()).await;
            Err(BackendError::Permanent(format!(
                "cannot create the code and contract ConfigMap: {e}"
            )))
        }
    }
}

/// The ConfigMap `<name>-code` of a job's PyTorchJob or TrainJob (`owner`): the runtime contract's
/// files, and `sourceDir`'s files as `f<index>` (text as data, anything else,
/// pickles or images, byte for byte as binaryData), owned by that job.
fn code_config_map(
    job: &TrainingJob,
    code: &[SourceFile],
    owner: serde_json::Value,
    ns: &str,
    name: &str,
) -> Result<ConfigMap, BackendError> {
    let mut data = pod_contract::files(job, &instance_type(job), code_dir(job))
        .map_err(|e| BackendError::Permanent(format!("the runtime contract's files: {e}")))?;
    let mut binary = BTreeMap::new();
    for (i, f) in code.iter().enumerate() {
        let b = std::fs::read(&f.path)
            .map_err(|e| refuse("spec.sourceDir", format!("{}: {e}", f.path.display())))?;
        match std::str::from_utf8(&b) {
            Ok(text) => data.insert(format!("f{i}"), text.to_string()),
            Err(_) => binary.insert(
                format!("f{i}"),
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &b),
            ),
        };
    }
    serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-code"), "namespace": ns,
            "ownerReferences": [owner]},
        "data": data,
        "binaryData": binary,
    }))
    .map_err(|e| BackendError::Permanent(e.to_string()))
}

/// What following one PyTorchJob keeps: the pods seen, their log streams,
/// the metrics and the last condition reported.
pub(crate) struct Follow<'a> {
    job: &'a TrainingJob,
    kind: Followed,
    pods: Api<Pod>,
    ns: String,
    name: String,
    logs_dir: PathBuf,
    scraper: MetricScraper,
    /// Pod uids whose log is streamed: a restarted gang has new pods under
    /// the same names, and a pod that already ended still has its log.
    following: std::collections::BTreeSet<String>,
    /// Every pod the job ran in, also those already cleaned up after the end.
    placed: std::collections::BTreeSet<String>,
    metrics: BTreeMap<String, f64>,
    last_message: String,
    restarts: u32,
    /// Where the log streams send their lines and metrics.
    lines: tokio::sync::mpsc::UnboundedSender<JobEvent>,
    rx: Option<tokio::sync::mpsc::UnboundedReceiver<JobEvent>>,
}

impl Follow<'_> {
    /// Watches the followed object (`jobs`, by name) until `ended` says how
    /// the job ended, it is deleted, or `cancel` fires (then it is deleted);
    /// the pods' logs and metrics are forwarded to `events` meanwhile.
    pub(crate) async fn watch<K>(
        mut self,
        jobs: Api<K>,
        events: &JobEvents,
        cancel: CancellationToken,
        mut ended: impl FnMut(&K, &mut Self) -> Option<TrainingOutcome>,
    ) -> Result<TrainingOutcome, BackendError>
    where
        K: kube::Resource
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + Sync
            + 'static,
    {
        let (ns, name, kind) = (self.ns.clone(), self.name.clone(), self.kind.kind());
        let mut mrx = self
            .rx
            .take()
            .ok_or_else(|| BackendError::Permanent("followed twice".into()))?;
        let fields = format!("metadata.name={name}");
        let mut stream = watcher::watcher(jobs.clone(), watcher::Config::default().fields(&fields))
            .default_backoff()
            .boxed();
        let outcome = loop {
            let ev = tokio::select! {
                _ = cancel.cancelled() => {
                    let _ = jobs.delete(&name, &DeleteParams::background()).await;
                    break self.ended(JobState::Canceled, Some(format!("canceled: {kind} {ns}/{name} deleted")));
                }
                m = mrx.recv() => {
                    if let Some(m) = m {
                        if let JobEvent::Metric { name, value } = &m {
                            self.metrics.insert(name.clone(), *value);
                        }
                        let _ = events.send(m);
                    }
                    continue;
                }
                ev = stream.try_next() => ev,
            };
            let j = match ev {
                Ok(Some(watcher::Event::Apply(j) | watcher::Event::InitApply(j))) => j,
                Ok(Some(watcher::Event::Delete(_))) => {
                    break self.ended(
                        JobState::Canceled,
                        Some(format!("{kind} {ns}/{name} was deleted")),
                    );
                }
                Ok(Some(_)) => continue,
                Ok(None) => {
                    return Err(BackendError::Permanent(format!(
                        "the watch on the {kind} ended"
                    )))
                }
                Err(e) => {
                    tracing::debug!(error = %e, "watch error; the watcher retries");
                    continue;
                }
            };
            self.pods_seen(events).await;
            if let Some(outcome) = ended(&j, &mut self) {
                break outcome;
            }
        };
        // Lines already read still arrive.
        drop(self);
        while let Ok(m) = mrx.try_recv() {
            let _ = events.send(m);
        }
        Ok(outcome)
    }

    /// The job's pods now: placement when it changed, and one log stream per
    /// rank once its pod runs.
    async fn pods_seen(&mut self, events: &JobEvents) {
        let list = self
            .pods
            .list(&ListParams::default().labels(&self.kind.selector(&self.name)))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let before = self.placed.len();
        self.placed.extend(list.iter().map(|p| p.name_any()));
        if self.placed.len() != before {
            let details = json!({"kind": "kubernetes", "api": self.kind.kind(), "namespace": self.ns, "name": self.name, "pods": self.placed});
            let _ = events.send(JobEvent::Placement { details });
        }
        for p in &list {
            let uid = p.uid().unwrap_or_else(|| p.name_any());
            let started = matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Running" | "Succeeded" | "Failed")
            );
            if !started || !self.following.insert(uid) {
                continue;
            }
            let node = self.kind.node_of(p);
            let rank = switchyard_training::slots::Slot {
                node,
                local_rank: 0,
            }
            .rank(self.job.spec.procs_per_node);
            self.stream_log(
                p.name_any(),
                rank,
                switchyard_training::slots::host_name(node),
            );
        }
    }

    /// Streams one pod's log into its rank file and the job's events.
    fn stream_log(&self, pod: String, rank: u32, host: String) {
        let container = self.kind.container();
        let (pods, dir, scraper, events) = (
            self.pods.clone(),
            self.logs_dir.clone(),
            self.scraper.clone(),
            self.lines.clone(),
        );
        tokio::spawn(async move {
            let params = LogParams {
                follow: true,
                container: Some(container.into()),
                ..Default::default()
            };
            let stream = match pods.log_stream(&pod, &params).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(pod = %pod, error = %e, "no log yet");
                    return;
                }
            };
            let _ = std::fs::create_dir_all(&dir);
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(switchyard_training::slots::rank_log(&dir, &host, rank))
                .ok();
            let mut lines = stream.lines();
            while let Ok(Some(line)) = lines.try_next().await {
                if let Some(f) = file.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                for (name, value) in scraper.scrape(&line) {
                    let _ = events.send(JobEvent::Metric { name, value });
                }
                let _ = events.send(JobEvent::Log {
                    host: host.clone(),
                    rank,
                    line,
                });
            }
        });
    }

    /// Reports the newest true condition once (running, restarting, other).
    fn report(&mut self, st: &crate::crd::JobStatus, events: &JobEvents) {
        if let Some(c) = st.conditions.iter().rev().find(|c| c.status == "True") {
            let reason = c.message.clone().unwrap_or_default();
            let msg = format!("PyTorchJob {}: {reason}", c.type_);
            if msg != self.last_message {
                self.last_message = msg.clone();
                let _ = events.send(match c.type_.as_str() {
                    "Running" => JobEvent::Running { message: msg },
                    "Restarting" => JobEvent::Restarting {
                        attempt: st.restart_count.unwrap_or(0).max(0) as u32,
                        reason,
                    },
                    _ => JobEvent::Status { message: msg },
                });
            }
        }
        self.restarts = st.restart_count.unwrap_or(0).max(0) as u32;
    }

    /// The outcome when the status says the job ended.
    fn end_of(
        &self,
        st: &crate::crd::JobStatus,
        model: impl FnOnce() -> Option<String>,
    ) -> Option<TrainingOutcome> {
        if st.has("Succeeded") {
            return Some(TrainingOutcome {
                model: model(),
                ..self.ended(JobState::Succeeded, None)
            });
        }
        if st.has("Failed") {
            let why = st
                .conditions
                .iter()
                .find(|c| c.type_ == "Failed")
                .and_then(|c| c.message.clone());
            return Some(self.ended(JobState::Failed, why));
        }
        None
    }

    /// Records that the gang has restarted `n` times; whether that is news.
    pub(crate) fn restarted(&mut self, n: u32) -> bool {
        let news = n > self.restarts;
        self.restarts = self.restarts.max(n);
        news
    }

    /// Records a metric's latest value (it ends up in the outcome).
    pub(crate) fn metric(&mut self, name: &str, value: f64) {
        self.metrics.insert(name.to_string(), value);
    }

    pub(crate) fn ended(&self, state: JobState, failure_reason: Option<String>) -> TrainingOutcome {
        TrainingOutcome {
            state,
            restarts: self.restarts,
            model: None,
            metrics: self.metrics.clone(),
            failure_reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn api_failures_that_may_pass_are_retryable() {
        let status = |code: u16| {
            let s: kube::core::Status = serde_json::from_value(json!({
                "status": "Failure", "code": code, "message": "m", "reason": "r",
            }))
            .expect("status");
            kube::Error::Api(Box::new(s))
        };
        for (code, retryable) in [
            (503, true),
            (500, true),
            (429, true),
            (422, false),
            (403, false),
            (404, false),
        ] {
            let e = api_error("cannot create PyTorchJob ns/j".into(), status(code));
            assert_eq!(
                matches!(e, BackendError::Retryable(_)),
                retryable,
                "{code}: {e}"
            );
            assert!(
                e.to_string().contains("cannot create PyTorchJob ns/j: "),
                "{e}"
            );
        }
        let bad = kube::Error::SerdeError(serde_json::from_str::<Value>("{").unwrap_err());
        assert!(matches!(
            api_error("x".into(), bad),
            BackendError::Permanent(_)
        ));
    }

    fn config(claim: Option<DataClaim>) -> KubernetesConfig {
        KubernetesConfig {
            namespace: "training".into(),
            efs_claims: BTreeMap::new(),
            s3_image: "aws-cli".into(),
            kubeconfig: None,
            jobs_dir: PathBuf::from("/tmp/jobs"),
            data_claim: claim,
            api: KubernetesApi::Auto,
            runtime: "torch-distributed".into(),
        }
    }

    fn job(extra: &str) -> TrainingJob {
        let doc = format!(
            "apiVersion: switchyard/v1\nkind: TrainingJob\nmetadata: {{name: t}}\nspec:\n  image: switchyard.local/pytorch:dev\n  command: [python, -c, pass]\n  nodes: 2\n{extra}"
        );
        switchyard_training::load(&doc, Path::new("/"), &[], Some("kubernetes")).expect("valid job")
    }

    fn mounts(replica: &Value) -> Vec<(String, String)> {
        replica["template"]["spec"]["containers"][0]["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                (
                    m["mountPath"].as_str().unwrap_or("").to_string(),
                    m["subPath"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    fn render(b: &KubernetesBackend, j: &TrainingJob, id: &str, code: &[SourceFile]) -> Value {
        serde_json::to_value(b.render(j, id, code)).expect("serializes")
    }

    #[test]
    fn every_pod_runs_under_the_jobs_service_account() {
        let b = KubernetesBackend::new(config(None));
        let doc = render(
            &b,
            &job("  serviceAccount: pipeline-runner\n"),
            "job-1",
            &[],
        );
        let replicas = &doc["spec"]["pytorchReplicaSpecs"];
        for r in ["Master", "Worker"] {
            assert_eq!(
                replicas[r]["template"]["spec"]["serviceAccountName"], "pipeline-runner",
                "{r}"
            );
        }
        let plain = render(&b, &job(""), "job-1", &[]);
        assert!(
            plain["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
                ["serviceAccountName"]
                .is_null()
        );
    }

    #[test]
    fn output_and_checkpoint_live_on_the_data_claim() {
        let claim = DataClaim {
            claim: "switchyard-data".into(),
            mount: PathBuf::from("/data"),
        };
        let b = KubernetesBackend::new(config(Some(claim.clone())));
        let j = job("  output: /data/models/m1\n  checkpoint: /data/ckpt/m1\n");
        b.preflight(&j).expect("on the claim");
        let doc = render(&b, &j, "job-1", &[]);
        let replicas = &doc["spec"]["pytorchReplicaSpecs"];
        let master = mounts(&replicas["Master"]);
        let worker = mounts(&replicas["Worker"]);
        assert!(
            master.contains(&("/opt/ml/model".into(), "models/m1".into())),
            "{master:?}"
        );
        assert!(
            !worker.iter().any(|(_, sub)| sub == "models/m1"),
            "only the master writes the model"
        );
        for m in [&master, &worker] {
            assert!(
                m.contains(&("/opt/ml/checkpoints".into(), "ckpt/m1".into())),
                "{m:?}"
            );
        }
        assert_eq!(
            b.model_location(&j, "job-1").as_deref(),
            Some("/data/models/m1")
        );
        // Without output, the model is still kept on the claim.
        let j = job("");
        assert_eq!(
            b.model_location(&j, "job-1").as_deref(),
            Some("/data/switchyard-jobs/job-1/model")
        );
        let master = mounts(&render(&b, &j, "job-1", &[])["spec"]["pytorchReplicaSpecs"]["Master"]);
        assert!(master.contains(&("/opt/ml/model".into(), "switchyard-jobs/job-1/model".into())));
    }

    #[test]
    fn output_elsewhere_is_refused_naming_the_fix() {
        let on = KubernetesBackend::new(config(Some(DataClaim {
            claim: "switchyard-data".into(),
            mount: PathBuf::from("/data"),
        })));
        let e = on
            .preflight(&job("  output: s3://bucket/m\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("spec.output:") && e.contains("SWITCHYARD_K8S_DATA_MOUNT"),
            "{e}"
        );
        let e = on
            .preflight(&job("  checkpoint: /elsewhere/c\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("spec.checkpoint:") && e.contains("not on the data claim"),
            "{e}"
        );
        let off = KubernetesBackend::new(config(None));
        let e = off
            .preflight(&job("  output: /data/m\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("SWITCHYARD_K8S_DATA_CLAIM"), "{e}");
        assert_eq!(off.model_location(&job(""), "j"), None);
    }

    #[test]
    fn the_contract_volume_lists_exactly_the_contract_files() {
        for extra in ["", "  contract: modeltrainer\n"] {
            let j = job(extra);
            let files = pod_contract::files(&j, "kubernetes", None).unwrap();
            let keys: Vec<String> = files.into_keys().collect();
            let mut listed = pod_contract::keys(&j);
            listed.sort();
            assert_eq!(listed, keys);
        }
    }

    #[test]
    fn modeltrainer_pods_get_its_variables_per_host_with_the_operators_master() {
        let j = job("  contract: modeltrainer\n  hyperparameters: {learning-rate: 0.1}\n");
        let files = pod_contract::files(&j, "kubernetes", None).unwrap();
        let host = &files["sy-host-1.env"];
        for want in [
            "'SM_MASTER_ADDR='\"$MASTER_ADDR\"",
            "'SM_MASTER_PORT='\"$MASTER_PORT\"",
            "'SM_CURRENT_HOST=algo-2'",
            "'SM_CURRENT_HOST_RANK=1'",
            "'SM_HP_LEARNING_RATE=0.1'",
            "'SM_NUM_CPUS='\"$SM_NUM_CPUS\"",
            "'TRAINING_JOB_NAME=t'",
        ] {
            assert!(host.contains(want), "{want} not in\n{host}");
        }
        assert!(files.contains_key("sy-drivers-distributed.json"));
        // Every contract variable is per host: the pod template carries none.
        let pj = render(&KubernetesBackend::new(config(None)), &j, "job-1", &[]);
        let env = &pj["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
            ["env"];
        let names: Vec<&str> = env
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["name"].as_str())
            .collect();
        assert_eq!(names, ["PYTHONUNBUFFERED"], "{env:#}");
    }
}
