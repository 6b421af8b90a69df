//! Kubeflow Trainer v2's API (`trainer.kubeflow.org/v1alpha1`, as Trainer
//! v2.3 serves it): `TrainJob`, `TrainingRuntime`, `ClusterTrainingRuntime`.
//! The CRDs in deploy/ are generated from these types with Trainer's
//! admission rules as CEL, so a TrainJob written for Kubeflow is accepted
//! (and refused) here as it is there.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, LocalObjectReference, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::crd::{add_rules, preserve_unknown, preserve_unknown_list, Crd};

pub const GROUP: &str = "trainer.kubeflow.org";
/// `spec.managedBy` of the TrainJobs Trainer's own controller (and this one) reconciles.
pub const CONTROLLER: &str = "trainer.kubeflow.org/trainjob-controller";
/// The other value Trainer accepts: Kueue's MultiKueue dispatches the job elsewhere.
pub const MULTIKUEUE: &str = "kueue.x-k8s.io/multikueue";
pub const CLUSTER_RUNTIME: &str = "ClusterTrainingRuntime";
pub const RUNTIME: &str = "TrainingRuntime";
/// The replicated job and container Trainer's torch plugin configures.
pub const NODE: &str = "node";
/// Label of a runtime's replicated job: which TrainJob part it runs.
pub const LABEL_ANCESTOR: &str = "trainer.kubeflow.org/trainjob-ancestor-step";
pub const ANCESTOR_TRAINER: &str = "trainer";
/// Label of a runtime: its framework (the SDK lists only labelled runtimes).
pub const LABEL_FRAMEWORK: &str = "trainer.kubeflow.org/framework";
/// torchrun's rendezvous port on rank 0's node.
pub const TORCH_PORT: i32 = 29500;
/// The variables the torch plugin sets; a TrainJob may not set them itself.
pub const RESERVED_ENV: [&str; 5] = [
    "PET_NNODES",
    "PET_NPROC_PER_NODE",
    "PET_NODE_RANK",
    "PET_MASTER_ADDR",
    "PET_MASTER_PORT",
];

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema, Default)]
#[kube(
    group = "trainer.kubeflow.org",
    version = "v1alpha1",
    kind = "TrainJob",
    plural = "trainjobs",
    namespaced,
    status = "TrainJobStatus",
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.conditions[-1:].type"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TrainJobSpec {
    pub runtime_ref: RuntimeRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initializer: Option<Initializer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trainer: Option<Trainer>,
    /// Changes to the runtime's JobSet template, one entry per manager
    /// (Kueue, the SDK, a user), applied in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtime_patches: Vec<RuntimePatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Seconds from creation (or the last resume) before the job fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeRef {
    pub name: String,
    /// Default `trainer.kubeflow.org`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    /// Default `ClusterTrainingRuntime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

impl RuntimeRef {
    pub fn group(&self) -> &str {
        self.api_group.as_deref().unwrap_or(GROUP)
    }
    pub fn kind(&self) -> &str {
        self.kind.as_deref().unwrap_or(CLUSTER_RUNTIME)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Initializer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<StorageInitializer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<StorageInitializer>,
}

/// What a dataset or model initializer fetches (`s3://…`, `hf://…`).
#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageInitializer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
}

/// The TrainJob's part of the trainer's pods; what it leaves out comes from
/// the runtime.
#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Trainer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_nodes: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources_per_node: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_proc_per_node: Option<i32>,
}

/// One manager's changes to the runtime's template, in Trainer's shape
/// (`trainingRuntimeSpec.template.spec.replicatedJobs[].template.spec.template…`).
#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RuntimePatch {
    pub manager: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub training_runtime_spec: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrainJobStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs_status: Vec<JobStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trainer_status: Option<TrainerStatus>,
}

/// One replicated job's Jobs, counted as JobSet counts them.
#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    pub name: String,
    pub ready: i32,
    pub succeeded: i32,
    pub failed: i32,
    pub active: i32,
    pub suspended: i32,
}

/// Progress a rank reports (Trainer v2.2+'s progress API).
#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrainerStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_percentage: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_remaining_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metric>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_time: Option<Time>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, Default, PartialEq)]
pub struct Metric {
    pub name: String,
    pub value: String,
}

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema, Default)]
#[kube(
    group = "trainer.kubeflow.org",
    version = "v1alpha1",
    kind = "ClusterTrainingRuntime",
    plural = "clustertrainingruntimes",
    derive = "Default"
)]
#[kube(printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#)]
pub struct ClusterTrainingRuntimeSpec {
    #[serde(flatten)]
    pub spec: TrainingRuntimeSpec,
}

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema, Default)]
#[kube(
    group = "trainer.kubeflow.org",
    version = "v1alpha1",
    kind = "TrainingRuntime",
    plural = "trainingruntimes",
    namespaced,
    derive = "Default"
)]
#[kube(printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#)]
pub struct TrainingRuntimeSpecNs {
    #[serde(flatten)]
    pub spec: TrainingRuntimeSpec,
}

/// What both runtime kinds hold: the ML policy and the JobSet template.
#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrainingRuntimeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ml_policy: Option<MlPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub pod_group_policy: Option<serde_json::Value>,
    #[serde(default)]
    pub template: JobSetTemplate,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MlPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_nodes: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch: Option<TorchPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub mpi: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub flux: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub jax: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub xgboost: Option<serde_json::Value>,
}

impl MlPolicy {
    /// The framework the policy names (`torch`, `mpi`, …), if any.
    pub fn framework(&self) -> Option<&'static str> {
        [
            ("torch", self.torch.is_some()),
            ("mpi", self.mpi.is_some()),
            ("flux", self.flux.is_some()),
            ("jax", self.jax.is_some()),
            ("xgboost", self.xgboost.is_some()),
        ]
        .into_iter()
        .find_map(|(name, set)| set.then_some(name))
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TorchPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_injection: Option<EnvInjection>,
}

/// Other containers that also get the `PET_*` variables.
#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvInjection {
    #[serde(default)]
    pub targets: Vec<EnvInjectionTarget>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvInjectionTarget {
    pub job_name: String,
    #[serde(default)]
    pub container_names: Vec<String>,
}

/// The runtime's JobSet: its replicated jobs typed as far as Switchyard reads
/// them, everything else kept as written.
#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobSetTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ObjectMeta>,
    #[serde(default)]
    #[schemars(schema_with = "preserve_unknown")]
    pub spec: JobSetSpec,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobSetSpec {
    #[serde(default)]
    pub replicated_jobs: Vec<ReplicatedJob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<FailurePolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    /// successPolicy, startupPolicy, coordinator, … as written.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicatedJob {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_list")]
    pub depends_on: Option<Vec<serde_json::Value>>,
    /// A batch/v1 JobTemplateSpec.
    #[serde(default)]
    #[schemars(schema_with = "preserve_unknown")]
    pub template: serde_json::Value,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailurePolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restarts: Option<i32>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdomain: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

const IMMUTABLE: (&str, &str) = ("self == oldSelf", "field is immutable");

/// Trainer's admission rules on TrainJob: (path under `spec`, rule, message).
/// The reserved-variable rule is Trainer's webhook check, as CEL.
const TRAINJOB_RULES: &[(&str, &str, &str)] = &[
    ("runtimeRef", IMMUTABLE.0, IMMUTABLE.1),
    ("initializer", IMMUTABLE.0, IMMUTABLE.1),
    ("trainer", IMMUTABLE.0, IMMUTABLE.1),
    ("activeDeadlineSeconds", IMMUTABLE.0, IMMUTABLE.1),
    ("activeDeadlineSeconds", "self >= 1", "activeDeadlineSeconds must be at least 1"),
    ("managedBy", IMMUTABLE.0, IMMUTABLE.1),
    (
        "managedBy",
        "self in ['trainer.kubeflow.org/trainjob-controller', 'kueue.x-k8s.io/multikueue']",
        "ManagedBy must be trainer.kubeflow.org/trainjob-controller or kueue.x-k8s.io/multikueue if set",
    ),
    (
        "trainer.env",
        "!self.exists(e, e.name in ['PET_NNODES', 'PET_NPROC_PER_NODE', 'PET_NODE_RANK', 'PET_MASTER_ADDR', 'PET_MASTER_PORT'])",
        "must not have reserved envs PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK, PET_MASTER_ADDR, PET_MASTER_PORT: the torch runtime sets them",
    ),
    ("trainer.numNodes", "self >= 1", "numNodes must be at least 1"),
    ("trainer.numProcPerNode", "self >= 1", "numProcPerNode must be at least 1"),
    (
        "initializer.dataset.storageUri",
        "self == '' || self.matches('^[A-Za-z][A-Za-z0-9+.-]*://.+$')",
        "storageUri may be empty, or it must be a valid URI (scheme://...)",
    ),
    (
        "initializer.model.storageUri",
        "self == '' || self.matches('^[A-Za-z][A-Za-z0-9+.-]*://.+$')",
        "storageUri may be empty, or it must be a valid URI (scheme://...)",
    ),
];

/// The three CRDs, with Trainer's defaults and rules.
pub fn crds() -> Vec<Crd> {
    use kube::CustomResourceExt;
    let mut trainjob = add_rules(TrainJob::crd(), "spec", TRAINJOB_RULES);
    trainjob = add_rules(
        trainjob,
        "",
        &[
            (
                "",
                "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
                "metadata.name must match RFC 1035 DNS label format",
            ),
            (
                "",
                "size(self.metadata.name) <= 63",
                "metadata.name must be no more than 63 characters",
            ),
        ],
    );
    let mut v = serde_json::to_value(&trainjob).unwrap_or_default();
    let spec = &mut v["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    spec["properties"]["managedBy"]["default"] = CONTROLLER.into();
    spec["properties"]["managedBy"]["maxLength"] = 253.into();
    spec["properties"]["suspend"]["default"] = false.into();
    let rr = &mut spec["properties"]["runtimeRef"]["properties"];
    rr["apiGroup"]["default"] = GROUP.into();
    rr["kind"]["default"] = CLUSTER_RUNTIME.into();
    rr["name"]["minLength"] = 1.into();
    spec["properties"]["runtimePatches"]["x-kubernetes-list-type"] = "map".into();
    spec["properties"]["runtimePatches"]["x-kubernetes-list-map-keys"] =
        serde_json::json!(["manager"]);
    spec["properties"]["runtimePatches"]["maxItems"] = 16.into();
    // Bounded lists, as Trainer's: the API server refuses CEL rules whose
    // cost it cannot bound.
    let trainer = &mut spec["properties"]["trainer"]["properties"];
    for list in ["env", "command", "args"] {
        trainer[list]["maxItems"] = 128.into();
    }
    trainer["env"]["x-kubernetes-list-type"] = "map".into();
    trainer["env"]["x-kubernetes-list-map-keys"] = serde_json::json!(["name"]);
    for part in ["dataset", "model"] {
        let env = &mut spec["properties"]["initializer"]["properties"][part]["properties"]["env"];
        env["maxItems"] = 128.into();
        env["x-kubernetes-list-type"] = "map".into();
        env["x-kubernetes-list-map-keys"] = serde_json::json!(["name"]);
    }
    let ts = &mut v["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        ["properties"]["trainerStatus"]["properties"];
    ts["progressPercentage"]["minimum"] = 0.into();
    ts["progressPercentage"]["maximum"] = 100.into();
    ts["estimatedRemainingSeconds"]["minimum"] = 0.into();
    ts["metrics"]["maxItems"] = 256.into();
    for field in ["name", "value"] {
        ts["metrics"]["items"]["properties"][field]["minLength"] = 1.into();
        ts["metrics"]["items"]["properties"][field]["maxLength"] = 64.into();
    }
    let trainjob = serde_json::from_value(v).unwrap_or(trainjob);
    let one_policy = [(
        "mlPolicy",
        "[has(self.torch), has(self.mpi), has(self.jax), has(self.xgboost), has(self.flux)].filter(x, x).size() <= 1",
        "Only one of the policy can be configured",
    )];
    let mut all = vec![
        trainjob,
        add_rules(TrainingRuntime::crd(), "spec", &one_policy),
        add_rules(ClusterTrainingRuntime::crd(), "spec", &one_policy),
    ];
    let (k, v) = crate::operator::CRD_OWNER;
    for crd in &mut all {
        crd.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(k.to_string(), v.to_string());
    }
    all
}

/// Trainer v2.3's `torch-distributed` ClusterTrainingRuntime (deploy/runtimes-torch.yaml).
pub const TORCH_RUNTIME_YAML: &str = include_str!("../../../../deploy/runtimes-torch.yaml");
/// A torch runtime whose dataset and model initializers are Switchyard's
/// (deploy/runtimes-torch-initializers.yaml).
pub const INITIALIZERS_RUNTIME_YAML: &str =
    include_str!("../../../../deploy/runtimes-torch-initializers.yaml");

/// The CRDs as one YAML stream, for deploy/ and `--print-crd`.
pub fn crds_yaml() -> String {
    crds()
        .iter()
        .map(|c| serde_saphyr::to_string(c).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("---\n")
}

#[cfg(test)]
mod tests {
    /// deploy/crd-trainer.yaml is what the types generate.
    #[test]
    fn the_shipped_crds_are_the_generated_ones() {
        let path = format!(
            "{}/../../deploy/crd-trainer.yaml",
            std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
        );
        let shipped = std::fs::read_to_string(path).expect("deploy/crd-trainer.yaml");
        assert!(
            shipped == super::crds_yaml(),
            "deploy/crd-trainer.yaml is stale: switchyard operator --print-crd, all but the first document"
        );
    }

    /// The shipped runtime parses as a ClusterTrainingRuntime of the torch framework.
    #[test]
    fn the_shipped_runtime_is_trainers_torch_distributed() {
        let rt: super::ClusterTrainingRuntime =
            serde_saphyr::from_str(super::TORCH_RUNTIME_YAML).expect("runtime parses");
        assert_eq!(rt.metadata.name.as_deref(), Some("torch-distributed"));
        assert_eq!(
            rt.spec.spec.ml_policy.and_then(|p| p.framework()),
            Some("torch")
        );
        assert_eq!(rt.spec.spec.template.spec.replicated_jobs[0].name, "node");
    }

    /// The initializers runtime resolves: two initializers, then the trainer
    /// on the shared claim.
    #[test]
    fn the_shipped_initializers_runtime_resolves() {
        let rt: super::ClusterTrainingRuntime =
            serde_saphyr::from_str(super::INITIALIZERS_RUNTIME_YAML).expect("runtime parses");
        let job: super::TrainJob = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "j"},
            "spec": {"runtimeRef": {"name": "torch-distributed-with-initializers"},
                     "initializer": {"dataset": {"storageUri": "s3://b/p"}}},
        }))
        .expect("job");
        let gang =
            crate::trainjob::resolve::resolve(&job, "ClusterTrainingRuntime", "x", &rt.spec.spec)
                .expect("resolves");
        let names: Vec<&str> = gang.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["dataset-initializer", "model-initializer", "node"]);
        assert_eq!(gang.claims.len(), 1);
    }
}
