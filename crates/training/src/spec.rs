//! The `TrainingJob` document (`apiVersion: switchyard/v1`), as users write it.
//!
//! Unknown fields are refused (a misspelt `procPerNode` must not silently mean
//! "1 process"); every error names the field path.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The whole document.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrainingJobDoc {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: TrainingJobSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Where a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    #[default]
    Local,
    Kubernetes,
    Sagemaker,
    /// Switchyard decides among `spec.placement.candidates` when the job is
    /// submitted ([`crate::placement`]); a job never runs as `auto`.
    Auto,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Local => "local",
            BackendKind::Kubernetes => "kubernetes",
            BackendKind::Sagemaker => "sagemaker",
            BackendKind::Auto => "auto",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "local" => Some(BackendKind::Local),
            "kubernetes" | "k8s" => Some(BackendKind::Kubernetes),
            "sagemaker" => Some(BackendKind::Sagemaker),
            "auto" => Some(BackendKind::Auto),
            _ => None,
        }
    }
}

/// Which SageMaker spelling of the runtime contract every rank sees
/// (docs/runtime-contract.md): a script is written for one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Contract {
    /// The classic `sagemaker-training` toolkit's (DLC images, the v2 SDK's
    /// `Estimator`).
    #[default]
    Toolkit,
    /// The v3 SDK's `ModelTrainer` drivers' (`sm_drivers`, any image with
    /// bash and Python).
    ModelTrainer,
}

impl Contract {
    pub fn is_toolkit(&self) -> bool {
        *self == Contract::Toolkit
    }
}

/// What placement optimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// The soonest start (a backend with room now), then the shortest run.
    #[default]
    Time,
    /// The lowest estimated cost.
    Cost,
}

/// `spec.placement` of a `backend: auto` job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlacementSpec {
    /// The backends it may go to, in order of preference for ties (default:
    /// every backend configured here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<BackendKind>,
    #[serde(default)]
    pub objective: Objective,
    /// Fail over to the next candidate when not all ranks run by then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_start_seconds: Option<u64>,
    /// Candidates estimated above it are not chosen.
    #[serde(
        default,
        rename = "maxCostUSD",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_cost_usd: Option<f64>,
}

/// When a failed gang is started again (as the PyTorchJob operator decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum RestartPolicy {
    /// A failure fails the job.
    #[default]
    Never,
    /// Any failure restarts the gang, up to `backoffLimit` times.
    OnFailure,
    /// Exit codes >= 128 (killed by a signal: preemption, OOM killer) restart;
    /// 1-127 (a bug in the script) fail the job at once.
    ExitCode,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// CPUs per host.
    #[serde(default = "one_f64")]
    pub cpu: f64,
    /// Memory per host, Kubernetes quantity (`2Gi`, `512Mi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// GPUs per host.
    #[serde(default)]
    pub gpu: u32,
}

/// A job that says nothing about resources asks for one CPU per host (as a
/// field-by-field default would), not zero.
impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpu: 1.0,
            memory: None,
            gpu: 0,
        }
    }
}

fn one_f64() -> f64 {
    1.0
}
fn one() -> u32 {
    1
}
fn three() -> u32 {
    3
}

/// A metric scraped from the logs: the first capture group of `regex`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricDefinition {
    pub name: String,
    pub regex: String,
}

/// What to train, where and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrainingJobSpec {
    #[serde(default)]
    pub backend: BackendKind,
    /// `backend: auto`: where Switchyard may place the job, and by what.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<PlacementSpec>,
    /// The contract the script is written for: `toolkit` (the default) or
    /// `modeltrainer`.
    #[serde(default, skip_serializing_if = "Contract::is_toolkit")]
    pub contract: Contract,
    /// The training image (used where containers run; recorded locally).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Directory shipped with the job; the entry point is relative to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_dir: Option<String>,
    /// A Python script in `sourceDir`, run as `python <entryPoint> --hp value ...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_point: Option<String>,
    /// Or an explicit command (no hyperparameter arguments are added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// `contract: modeltrainer`: a requirements file in `sourceDir`, installed
    /// into the job's environment before the script starts (ModelTrainer's
    /// `SourceCode.requirements`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirements: Option<String>,
    #[serde(default = "one")]
    pub nodes: u32,
    #[serde(default = "one")]
    pub procs_per_node: u32,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// In the order written: ModelTrainer passes them to the script in that
    /// order (the toolkit sorts them).
    #[serde(default)]
    pub hyperparameters: Map<String, Value>,
    /// Channel name to URI: a local path, `s3://bucket/prefix` or `efs://fs-id/path`.
    #[serde(default)]
    pub channels: BTreeMap<String, String>,
    /// Where the model goes (rank 0's model directory is copied there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Kept across restarts; SageMaker's CheckpointConfig.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    #[serde(default = "three")]
    pub backoff_limit: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_runtime_seconds: Option<u64>,
    #[serde(default)]
    pub metrics: Vec<MetricDefinition>,
    /// SageMaker: the execution role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// SageMaker: EBS volume per instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_size_gb: Option<u32>,
    /// SageMaker: managed spot training (needs `maxWaitSeconds`).
    #[serde(default)]
    pub use_spot_instances: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait_seconds: Option<u64>,
    /// SageMaker: File (default), FastFile or Pipe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_mode: Option<String>,
    /// SageMaker settings that have no meaning elsewhere.
    #[serde(default, skip_serializing_if = "SageMakerSettings::is_empty")]
    pub sagemaker: SageMakerSettings,
    /// Settings only the Kubernetes backend reads.
    #[serde(default, skip_serializing_if = "KubernetesSettings::is_empty")]
    pub kubernetes: KubernetesSettings,
    /// Kubernetes: the namespace of the PyTorchJob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Kubernetes: the ServiceAccount every pod of the job runs under. A job
    /// a pipeline step submits takes its run's KFP `service_account` when it
    /// names none; other backends do not use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// Settings only the SageMaker backend reads. Each falls back to Switchyard's
/// configuration (`SWITCHYARD_SAGEMAKER_*`), so a job file can stay portable.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SageMakerSettings {
    /// The AWS region of the training job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The bucket that receives sourcedir.tar.gz, uploaded local channels and
    /// (without `output`) the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Key prefix inside `bucket`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// VPC subnets for the training instances (needed by EFS channels).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_group_ids: Vec<String>,
    /// No outbound network from the training container.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enable_network_isolation: bool,
    /// Encrypt traffic between the training instances.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enable_inter_container_traffic_encryption: bool,
}

/// Which Kubeflow API a job is submitted as on Kubernetes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq, Eq)]
pub enum KubernetesApi {
    /// PyTorchJob where the cluster serves it, else TrainJob where it serves
    /// that (the choice is made per job, by API discovery).
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// Kubeflow's `kubeflow.org/v1` PyTorchJob (training operator v1).
    PyTorchJob,
    /// Kubeflow Trainer v2's `trainer.kubeflow.org/v1alpha1` TrainJob.
    TrainJob,
}

impl KubernetesApi {
    pub fn is_auto(&self) -> bool {
        *self == KubernetesApi::Auto
    }
}

/// Settings only the Kubernetes backend reads; each falls back to
/// Switchyard's configuration (`SWITCHYARD_K8S_API`, `SWITCHYARD_K8S_RUNTIME`).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesSettings {
    /// `auto` (default), `PyTorchJob` or `TrainJob`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<KubernetesApi>,
    /// With TrainJob: the ClusterTrainingRuntime it references (default
    /// `torch-distributed`, the runtime Kubeflow Trainer ships for PyTorch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
}

impl KubernetesSettings {
    pub fn is_empty(&self) -> bool {
        *self == KubernetesSettings::default()
    }
}

impl SageMakerSettings {
    pub fn is_empty(&self) -> bool {
        *self == SageMakerSettings::default()
    }
}
