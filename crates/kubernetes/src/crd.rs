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

/// Pod templates are passed through as Kubernetes validates them; the CRD does
/// not repeat the whole Pod schema.
fn preserve_unknown(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
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

    /// Sets `type_` True (with reason and message) and, for the phases that
    /// exclude each other, the others False — as the training operator does.
    pub fn set(&mut self, type_: &str, reason: &str, message: &str) {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let exclusive = ["Running", "Restarting", "Succeeded", "Failed", "Suspended"];
        if exclusive.contains(&type_) {
            for c in &mut self.conditions {
                if c.type_ != type_ && exclusive.contains(&c.type_.as_str()) && c.status == "True" {
                    c.status = "False".into();
                    c.last_transition_time = Some(now.clone());
                    c.last_update_time = Some(now.clone());
                }
            }
        }
        match self.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) if c.status == "True" && c.message.as_deref() == Some(message) => {}
            Some(c) => {
                if c.status != "True" {
                    c.last_transition_time = Some(now.clone());
                }
                c.status = "True".into();
                c.reason = Some(reason.into());
                c.message = Some(message.into());
                c.last_update_time = Some(now);
            }
            None => self.conditions.push(JobCondition {
                type_: type_.into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(message.into()),
                last_update_time: Some(now.clone()),
                last_transition_time: Some(now),
            }),
        }
    }

    /// Sets `type_` False if it is there.
    pub fn clear(&mut self, type_: &str) {
        self.clear_because(type_, None);
    }

    /// Sets `type_` False, saying why (`Suspended` → `PyTorchJobResumed`).
    pub fn clear_because(&mut self, type_: &str, why: Option<(&str, &str)>) {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
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

/// The CRD as YAML, for deploy/ and `--print-crd`.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let crd = PyTorchJob::crd();
    serde_saphyr::to_string(&crd).unwrap_or_default()
}
