//! A runtime's dataset and model initializers, as Trainer v2.3 runs them:
//! the replicated jobs labelled `trainjob-ancestor-step: dataset-initializer`
//! / `model-initializer` get the TrainJob's `spec.initializer` (its
//! `storageUri` as `STORAGE_URI`, its env, its secret as `envFrom`) on the
//! container of the same name, and write into the shared `initializer`
//! volume (a claim made from the runtime's JobSet `volumeClaimPolicies`)
//! that the trainer mounts at `/workspace` once they are done (`dependsOn`).
//!
//! Switchyard's own initializer (`switchyard initializer dataset|model`, in
//! Switchyard's image) fetches `s3://` only: a runtime that points it at
//! `hf://` is refused here, by name, instead of failing in the pod.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{StorageInitializer, TrainJob, TrainingRuntimeSpec};
use super::resolve::Unsupported;

pub const DATASET: &str = "dataset-initializer";
pub const MODEL: &str = "model-initializer";
/// The volume (and claim template) initializers and trainer share.
pub const VOLUME: &str = "initializer";
/// The variable an initializer reads its source from.
pub const STORAGE_URI: &str = "STORAGE_URI";

/// One of the two initializer steps, if `ancestor` names one.
pub fn step(ancestor: &str) -> Option<&'static str> {
    [DATASET, MODEL].into_iter().find(|s| *s == ancestor)
}

/// The TrainJob's part for `step`.
fn wanted<'a>(job: &'a TrainJob, step: &str) -> Option<&'a StorageInitializer> {
    let init = job.spec.initializer.as_ref()?;
    if step == DATASET {
        init.dataset.as_ref()
    } else {
        init.model.as_ref()
    }
}

/// Trainer's admission check: a TrainJob that asks for a dataset (model)
/// needs a runtime with a `dataset-initializer` job whose container of that
/// name mounts the `initializer` volume.
pub fn check_runtime(
    job: &TrainJob,
    runtime_name: &str,
    runtime: &TrainingRuntimeSpec,
) -> Result<(), Unsupported> {
    for (step, input) in [(DATASET, "datasetConfig"), (MODEL, "modelConfig")] {
        if wanted(job, step).is_none() {
            continue;
        }
        let invalid =
            |why: String| Unsupported(format!("spec.runtimeRef: runtime {runtime_name} {why}"));
        let Some(rj) = runtime
            .template
            .spec
            .replicated_jobs
            .iter()
            .find(|r| r.name == step)
        else {
            return Err(invalid(format!(
                "must have {step} job when trainJob is configured with input {input}"
            )));
        };
        let Some(c) = rj
            .template
            .pointer("/spec/template/spec/containers")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["name"] == step))
        else {
            return Err(invalid(format!(
                "must have container with name - {step} in the {step} job"
            )));
        };
        let mounts = c["volumeMounts"].as_array().into_iter().flatten();
        if !mounts.into_iter().any(|m| m["name"] == VOLUME) {
            return Err(invalid(format!(
                "must have volumeMount with name - {VOLUME} in container {step} of the {step} job"
            )));
        }
    }
    Ok(())
}

/// The TrainJob's `spec.initializer` part for `step` onto the pod template
/// (JSON) of that step's job, then Switchyard's own initializer's check.
pub fn apply(
    job: &TrainJob,
    step: &str,
    pod: &mut Value,
    runtime_name: &str,
) -> Result<(), Unsupported> {
    let Some(containers) = pod
        .pointer_mut("/spec/containers")
        .and_then(Value::as_array_mut)
    else {
        return Ok(());
    };
    for c in containers.iter_mut().filter(|c| c["name"] == step) {
        if let Some(part) = wanted(job, step) {
            let mut env = Vec::new();
            if let Some(uri) = &part.storage_uri {
                env.push(json!({"name": STORAGE_URI, "value": uri}));
            }
            env.extend(
                part.env
                    .iter()
                    .map(|e| serde_json::to_value(e).unwrap_or_default()),
            );
            super::resolve::upsert_by(c, "env", "name", &env);
            if let Some(secret) = &part.secret_ref {
                if !c["envFrom"].is_array() {
                    c["envFrom"] = json!([]);
                }
                if let Some(list) = c["envFrom"].as_array_mut() {
                    list.push(json!({"secretRef": {"name": secret.name}}));
                }
            }
        }
        if runs_switchyard_initializer(c) {
            check_source(c, step, runtime_name)?;
        }
    }
    Ok(())
}

/// Whether a container runs `switchyard initializer …` (Switchyard's image).
fn runs_switchyard_initializer(c: &Value) -> bool {
    let words: Vec<&str> = ["command", "args"]
        .iter()
        .flat_map(|k| c[*k].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    words
        .first()
        .is_some_and(|w| w.rsplit('/').next() == Some("switchyard"))
        && words.contains(&"initializer")
}

/// What Switchyard's initializer can fetch: `s3://` (a literal
/// `STORAGE_URI`; one from a secret or field is checked in the pod).
fn check_source(c: &Value, step: &str, runtime_name: &str) -> Result<(), Unsupported> {
    let Some(uri) = c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == STORAGE_URI)
        .and_then(|e| e["value"].as_str())
    else {
        return Ok(());
    };
    match uri.split_once("://").map(|(s, _)| s) {
        Some("s3") => Ok(()),
        Some("hf") => Err(Unsupported(format!(
            "unsupported initializer: {step} of {runtime_name} fetches {uri}: Switchyard's initializer fetches s3:// only (no Hugging Face client; clusters it serves often have no route to Hugging Face); copy the files to S3 and give spec.initializer.{} s3://bucket/prefix, or use a runtime whose initializer image can reach huggingface.co",
            if step == DATASET { "dataset.storageUri" } else { "model.storageUri" }
        ))),
        _ => Err(Unsupported(format!(
            "unsupported initializer: {step} of {runtime_name}: STORAGE_URI {uri:?} is not s3://bucket/prefix, the one source Switchyard's initializer fetches"
        ))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClaimPolicy {
    #[serde(default)]
    templates: Vec<PersistentVolumeClaim>,
    #[serde(default)]
    retention_policy: Option<Retention>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Retention {
    when_deleted: Option<String>,
}

/// A claim the job's pods share, as JobSet makes it from its template.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// `<template>-<job>`, with the template's labels, annotations and spec.
    pub claim: PersistentVolumeClaim,
    /// The template's name: the volume pods mount it as.
    pub volume: String,
    /// Deleted with the job: `retentionPolicy.whenDeleted` Delete, JobSet's
    /// default (its webhook and Trainer's CRD fill it in); `Retain` keeps it.
    pub owned: bool,
}

/// The claims of the runtime's `volumeClaimPolicies`, named for `job`.
pub fn claims(job_name: &str, runtime: &TrainingRuntimeSpec) -> Result<Vec<Claim>, Unsupported> {
    let Some(raw) = runtime.template.spec.other.get("volumeClaimPolicies") else {
        return Ok(Vec::new());
    };
    let policies: Vec<ClaimPolicy> = serde_json::from_value(raw.clone()).map_err(|e| {
        Unsupported(format!(
            "runtime template's volumeClaimPolicies are not valid: {e}"
        ))
    })?;
    let mut out = Vec::new();
    for p in policies {
        let owned = p
            .retention_policy
            .as_ref()
            .and_then(|r| r.when_deleted.as_deref())
            != Some("Retain");
        for t in p.templates {
            let volume = t.metadata.name.clone().unwrap_or_default();
            if volume.is_empty() {
                return Err(Unsupported(
                    "runtime template: a volumeClaimPolicies template has no metadata.name".into(),
                ));
            }
            let mut labels = t.metadata.labels.clone().unwrap_or_default();
            labels.insert(super::pods::LABEL_JOBSET.into(), job_name.into());
            out.push(Claim {
                claim: PersistentVolumeClaim {
                    metadata: ObjectMeta {
                        name: Some(format!("{volume}-{job_name}")),
                        labels: Some(labels),
                        annotations: t.metadata.annotations.clone(),
                        ..Default::default()
                    },
                    spec: t.spec.clone(),
                    status: None,
                },
                volume,
                owned,
            });
        }
    }
    Ok(out)
}

/// JobSet's volumes: a pod template whose containers mount a claim
/// template's volume gets that claim as the volume (unless it has one).
pub fn add_volumes(pod: &mut Value, claims: &[Claim]) {
    for claim in claims {
        let mounts = ["containers", "initContainers"].iter().any(|k| {
            pod["spec"][*k].as_array().into_iter().flatten().any(|c| {
                c["volumeMounts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|m| m["name"] == claim.volume.as_str())
            })
        });
        let has = pod["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v["name"] == claim.volume.as_str());
        if mounts && !has {
            let name = claim.claim.metadata.name.clone().unwrap_or_default();
            super::resolve::upsert_by(
                &mut pod["spec"],
                "volumes",
                "name",
                &[json!({"name": claim.volume, "persistentVolumeClaim": {"claimName": name}})],
            );
        }
    }
}
