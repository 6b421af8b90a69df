//! Kubeflow's PyTorchJob (`kubeflow.org/v1`, as the training operator serves it,
//! REFERENCE.md §4), as Rust types. The CRD shipped in deploy/ is generated from
//! them (`switchyard operator --print-crd`), so existing PyTorchJob YAML works
//! on a cluster that runs Switchyard's operator instead of Kubeflow's.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The port every replica's Service exposes and MASTER_PORT names.
pub const DEFAULT_PORT: i32 = 23456;
/// The container the operator configures (Kubeflow's convention).
pub const CONTAINER: &str = "pytorch";

/// Pod templates (and a TrainJob's JobSet templates) are passed through as
/// Kubernetes validates them; the CRDs do not repeat their whole schemas.
pub(crate) fn preserve_unknown_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    serde_json::from_value(serde_json::json!({
        "type": "array",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
    }))
    .unwrap_or_default()
}

pub(crate) fn preserve_unknown(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    serde_json::from_value(serde_json::json!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    }))
    .unwrap_or_default()
}

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema, Default)]
#[kube(
    group = "kubeflow.org",
    version = "v1",
    kind = "PyTorchJob",
    plural = "pytorchjobs",
    namespaced,
    status = "JobStatus",
    scale = r#"{"specReplicasPath":".spec.pytorchReplicaSpecs.Worker.replicas","statusReplicasPath":".status.replicaStatuses.Worker.active","labelSelectorPath":".status.replicaStatuses.Worker.selector"}"#,
    shortname = "pytorchjob",
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.conditions[-1:].type"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PyTorchJobSpec {
    /// `Master` and `Worker`.
    pub pytorch_replica_specs: BTreeMap<String, ReplicaSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_policy: Option<RunPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elastic_policy: Option<ElasticPolicy>,
    /// Processes per pod (`auto`, `cpu`, `gpu` or a number), as torchrun's `--nproc-per-node`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nproc_per_node: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Always, OnFailure (default), Never or ExitCode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
    #[schemars(schema_with = "preserve_unknown")]
    pub template: PodTemplateSpec,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct RunPolicy {
    /// All, Running or None (default None): which pods to delete when the job ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean_pod_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_limit: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling_policy: Option<SchedulingPolicy>,
    /// Which controller reconciles the job: absent or
    /// `kubeflow.org/training-operator` (this operator takes those), or
    /// another (e.g. `kueue.x-k8s.io/multikueue`), which this operator leaves alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
}

/// A replica's `restartPolicy`, read once from the string Kubeflow's API
/// carries (the CRD keeps it a string, as Kubeflow's does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaRestart {
    Always,
    OnFailure,
    Never,
    ExitCode,
}

impl ReplicaRestart {
    /// Absent, or a value Kubeflow does not know: OnFailure, its default.
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("Always") => Self::Always,
            Some("Never") => Self::Never,
            Some("ExitCode") => Self::ExitCode,
            _ => Self::OnFailure,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::OnFailure => "OnFailure",
            Self::Never => "Never",
            Self::ExitCode => "ExitCode",
        }
    }

    /// Whether a pod that exited with `code` is restarted: never under
    /// Never, only for a signal (≥ 128) under ExitCode, always otherwise.
    pub fn retries(self, code: i32) -> bool {
        match self {
            Self::Never => false,
            Self::ExitCode => code >= 128,
            Self::OnFailure | Self::Always => true,
        }
    }

    /// Whether the kubelet restarts the container in place (OnFailure,
    /// Always); ExitCode and Never leave restarts to the operator.
    pub fn in_place(self) -> bool {
        matches!(self, Self::OnFailure | Self::Always)
    }
}

impl From<switchyard_training::RestartPolicy> for ReplicaRestart {
    fn from(p: switchyard_training::RestartPolicy) -> Self {
        match p {
            switchyard_training::RestartPolicy::Never => Self::Never,
            switchyard_training::RestartPolicy::OnFailure => Self::OnFailure,
            switchyard_training::RestartPolicy::ExitCode => Self::ExitCode,
        }
    }
}

/// `runPolicy.cleanPodPolicy`: which pods go when the job ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanPods {
    All,
    Running,
    None,
}

impl CleanPods {
    /// Absent or unknown: None (Kubeflow's default keeps every pod).
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("All") => Self::All,
            Some("Running") => Self::Running,
            _ => Self::None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "All",
            Self::Running => "Running",
            Self::None => "None",
        }
    }

    /// Whether a pod in `phase` is deleted when the job ends.
    pub fn deletes(self, phase: &str) -> bool {
        match self {
            Self::All => true,
            Self::Running => matches!(phase, "Pending" | "Running"),
            Self::None => false,
        }
    }
}

impl ReplicaSpec {
    pub fn restart(&self) -> ReplicaRestart {
        ReplicaRestart::parse(self.restart_policy.as_deref())
    }
}

impl RunPolicy {
    pub fn clean_pods(&self) -> CleanPods {
        CleanPods::parse(self.clean_pod_policy.as_deref())
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_timeout_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_resources:
        Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ElasticPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<i32>,
    /// c10d, etcd or etcd-v2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdzv_backend: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdzv_port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdzv_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdzv_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_proc_per_node: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restarts: Option<i32>,
    /// Extra rendezvous settings, passed as `PET_RDZV_CONF=k=v,k2=v2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdzv_conf: Option<Vec<RdzvConf>>,
    /// torchrun's `--standalone` (`PET_STANDALONE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standalone: Option<bool>,
    /// HPA metric specs for elastic jobs (kept for the HPA, which scales the
    /// job through the `scale` subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_list")]
    pub metrics: Option<Vec<serde_json::Value>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct RdzvConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// The status the training operator reports.
#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    #[serde(default)]
    pub conditions: Vec<JobCondition>,
    #[serde(default)]
    pub replica_statuses: BTreeMap<String, ReplicaStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reconcile_time: Option<Time>,
    /// Gang restarts so far (Switchyard's addition; counted against backoffLimit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_count: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobCondition {
    /// Created, Running, Restarting, Succeeded, Failed or Suspended.
    #[serde(rename = "type")]
    pub type_: String,
    /// "True" or "False".
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    #[serde(default)]
    pub active: i32,
    #[serde(default)]
    pub succeeded: i32,
    #[serde(default)]
    pub failed: i32,
    /// The replica's pods as a label selector string (the `scale`
    /// subresource's `labelSelectorPath`, which an HPA reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
}

impl JobStatus {
    /// True when the condition of this type is set and True.
    pub fn has(&self, type_: &str) -> bool {
        self.conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    }

    pub fn finished(&self) -> bool {
        self.has("Succeeded") || self.has("Failed")
    }

    /// Sets `type_` True as Kubeflow's operator does (`setCondition`): nothing
    /// changes once the job failed, or when the condition already holds with
    /// the same reason; otherwise the condition moves to the end (so the
    /// last one is the job's state, as `kubectl get` shows it), `Running` and
    /// `Restarting` replace each other, and `Succeeded`/`Failed` make `Running`
    /// False.
    pub fn set(&mut self, now: &Time, type_: &str, reason: &str, message: &str) {
        if self.has("Failed") {
            return;
        }
        let current = self.conditions.iter().find(|c| c.type_ == type_).cloned();
        if let Some(c) = &current {
            if c.status == "True" && c.reason.as_deref() == Some(reason) {
                return;
            }
        }
        let transition = match &current {
            Some(c) if c.status == "True" => c.last_transition_time.clone(),
            _ => Some(now.clone()),
        };
        let replaces = |other: &str| {
            other == type_
                || (type_ == "Restarting" && other == "Running")
                || (type_ == "Running" && other == "Restarting")
        };
        self.conditions.retain(|c| !replaces(&c.type_));
        if type_ == "Succeeded" || type_ == "Failed" {
            for c in &mut self.conditions {
                if c.type_ == "Running" {
                    c.status = "False".into();
                }
            }
        }
        self.conditions.push(JobCondition {
            type_: type_.into(),
            status: "True".into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_update_time: Some(now.clone()),
            last_transition_time: transition,
        });
    }

    /// Replaces the message of a condition that holds: for Switchyard's own
    /// `PyTorchJobWaitingForCapacity`, whose shortfall changes as nodes come
    /// and go while the reason stays (`set` keeps the first message, as
    /// Kubeflow does, so `kubectl describe` would show a stale count).
    pub fn restate(&mut self, now: &Time, type_: &str, message: &str) {
        for c in &mut self.conditions {
            if c.type_ == type_ && c.status == "True" && c.message.as_deref() != Some(message) {
                c.message = Some(message.into());
                c.last_update_time = Some(now.clone());
            }
        }
    }

    /// Sets `type_` False, saying why (`Suspended` → `PyTorchJobResumed`).
    pub fn clear_because(&mut self, now: &Time, type_: &str, why: Option<(&str, &str)>) {
        for c in &mut self.conditions {
            if c.type_ == type_ && c.status == "True" {
                c.status = "False".into();
                c.last_transition_time = Some(now.clone());
                if let Some((reason, message)) = why {
                    c.reason = Some(reason.into());
                    c.message = Some(message.into());
                    c.last_update_time = Some(now.clone());
                }
            }
        }
    }
}

/// What Kubeflow's admission webhook refuses, as CEL rules the API server
/// itself checks at `kubectl apply` (no webhook server to run): (JSON path
/// under the version's schema, rule, message).
const ADMISSION: &[(&str, &str, &str)] = &[
    (
        "",
        "size(self.metadata.name) <= 63 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
        "metadata.name must be a DNS-1035 label (lower-case letters, digits and '-', starting with a letter, at most 63 characters)",
    ),
    (
        "spec.pytorchReplicaSpecs",
        "self.all(k, k == 'Master' || k == 'Worker')",
        "spec.pytorchReplicaSpecs: only Master and Worker replicas are supported",
    ),
    (
        "spec.pytorchReplicaSpecs",
        "!has(self.Master) || !has(self.Master.replicas) || self.Master.replicas == 1",
        "spec.pytorchReplicaSpecs.Master.replicas must be 1",
    ),
    (
        "spec.pytorchReplicaSpecs",
        "!has(self.Worker) || !has(self.Worker.replicas) || self.Worker.replicas >= 1",
        "spec.pytorchReplicaSpecs.Worker.replicas must be at least 1",
    ),
    (
        "spec.pytorchReplicaSpecs",
        "self.all(k, has(self[k].template.spec) && has(self[k].template.spec.containers) && self[k].template.spec.containers.exists(c, c.name == 'pytorch'))",
        "every replica's template needs a container named pytorch (spec.pytorchReplicaSpecs.<type>.template.spec.containers)",
    ),
    (
        "spec.pytorchReplicaSpecs",
        "self.all(k, !has(self[k].template.spec) || !has(self[k].template.spec.containers) || self[k].template.spec.containers.all(c, has(c.image) && size(c.image) > 0))",
        "every container of spec.pytorchReplicaSpecs.<type>.template needs an image",
    ),
    (
        "spec",
        "!has(self.elasticPolicy) || has(self.pytorchReplicaSpecs.Worker)",
        "spec.pytorchReplicaSpecs.Worker must be configured if elasticPolicy is used",
    ),
    (
        "spec",
        "!has(self.elasticPolicy) || !has(self.elasticPolicy.nProcPerNode) || !has(self.nprocPerNode)",
        "spec.elasticPolicy.nProcPerNode must not be used with spec.nprocPerNode",
    ),
];

/// The CRD: the schema derived from the types, with the admission rules and
/// just enough of the pod template typed for them (names and images of the
/// containers; everything else is kept as written).
pub fn crd() -> Crd {
    use kube::CustomResourceExt;
    let mut v = serde_json::to_value(PyTorchJob::crd()).unwrap_or_default();
    let schema = &mut v["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    // Two replica types at most; a bounded container list keeps the rules'
    // cost within what the API server accepts.
    let replicas = &mut schema["properties"]["spec"]["properties"]["pytorchReplicaSpecs"];
    replicas["maxProperties"] = serde_json::json!(2);
    replicas["additionalProperties"]["properties"]["template"] = serde_json::json!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "properties": {"spec": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true,
            "properties": {"containers": {
                "type": "array",
                "maxItems": 64,
                "items": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": true,
                    "properties": {
                        "name": {"type": "string", "maxLength": 253},
                        "image": {"type": "string", "maxLength": 4096},
                    },
                },
            }},
        }},
    });
    let crd = serde_json::from_value(v).unwrap_or_else(|_| PyTorchJob::crd());
    add_rules(crd, "", ADMISSION)
}

pub(crate) type Crd =
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// Adds CEL rules (`x-kubernetes-validations`) to a generated CRD's schema,
/// each at its dotted path under `root` (`""` is the object itself).
pub(crate) fn add_rules(crd: Crd, root: &str, rules: &[(&str, &str, &str)]) -> Crd {
    let fallback = crd.clone();
    let mut v = serde_json::to_value(crd).unwrap_or_default();
    let schema = &mut v["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    for (path, rule, message) in rules {
        let mut at = &mut *schema;
        for part in root.split('.').chain(path.split('.')) {
            if !part.is_empty() {
                at = &mut at["properties"][part];
            }
        }
        let mut list = at["x-kubernetes-validations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        list.push(serde_json::json!({"rule": rule, "message": message}));
        at["x-kubernetes-validations"] = serde_json::Value::Array(list);
    }
    serde_json::from_value(v).unwrap_or(fallback)
}

/// The CRD as YAML, for deploy/ and `--print-crd`.
pub fn crd_yaml() -> String {
    serde_saphyr::to_string(&crd()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    /// The CRD shipped in deploy/ is the one the Rust types generate: a
    /// change to the types without `switchyard operator --print-crd >
    /// deploy/crd-pytorchjob.yaml` fails here, in the fast loop.
    #[test]
    fn the_shipped_crd_is_the_generated_one() {
        let path = format!(
            "{}/../../deploy/crd-pytorchjob.yaml",
            std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
        );
        let shipped = std::fs::read_to_string(path).expect("deploy/crd-pytorchjob.yaml");
        assert!(
            shipped == super::crd_yaml(),
            "deploy/crd-pytorchjob.yaml is stale: switchyard operator --print-crd > deploy/crd-pytorchjob.yaml"
        );
    }
}
