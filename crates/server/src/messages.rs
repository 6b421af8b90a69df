//! KFP v2beta1's request messages as JSON bodies, field for field.
//!
//! KFP's gateway decodes bodies with protojson: every field its proto declares
//! is accepted under the proto name or the lowerCamel JSON name (`created_at`
//! or `createdAt`), `null` reads as unset, and output-only fields (ids,
//! timestamps, states) are read and ignored, which is why KFP's own Go client
//! can send `created_at: "0001-01-01T00:00:00.000Z"` and `state_history: null`
//! on every create. A name the proto does not declare is refused with 400.
//! These types mirror that: each lists exactly the fields of its message.

// Output-only and single-user fields are declared to be accepted, never read.
#![allow(dead_code)]

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A field KFP sets itself: accepted in a request body and ignored.
pub(crate) type OutputOnly = Option<IgnoredAny>;

/// KFP's `Experiment`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Experiment {
    #[serde(alias = "displayName")]
    pub display_name: Option<String>,
    pub description: Option<String>,
    /// Single-user server: accepted and ignored, as KFP does outside multi-user mode.
    pub namespace: Option<IgnoredAny>,
    #[serde(alias = "experimentId")]
    pub experiment_id: OutputOnly,
    #[serde(alias = "createdAt")]
    pub created_at: OutputOnly,
    #[serde(alias = "storageState")]
    pub storage_state: OutputOnly,
    #[serde(alias = "lastRunCreatedAt")]
    pub last_run_created_at: OutputOnly,
}

/// KFP's `Pipeline` (create and update).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Pipeline {
    #[serde(alias = "pipelineId")]
    pub pipeline_id: Option<String>,
    #[serde(alias = "displayName")]
    pub display_name: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub namespace: Option<IgnoredAny>,
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(alias = "createdAt")]
    pub created_at: OutputOnly,
    pub error: OutputOnly,
}

/// KFP's `Url` (a version's `package_url`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Url {
    #[serde(alias = "pipelineUrl")]
    pub pipeline_url: Option<String>,
}

/// KFP's `PipelineVersion` (create and update). `pipeline_spec` is
/// output-only in KFP (it downloads the spec from `package_url`); this server
/// takes it inline instead, as it fetches nothing from the network.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct PipelineVersion {
    #[serde(alias = "pipelineId")]
    pub pipeline_id: Option<String>,
    #[serde(alias = "pipelineVersionId")]
    pub pipeline_version_id: Option<String>,
    #[serde(alias = "displayName")]
    pub display_name: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    #[serde(alias = "packageUrl")]
    pub package_url: Option<Url>,
    #[serde(alias = "codeSourceUrl")]
    pub code_source_url: Option<IgnoredAny>,
    #[serde(alias = "pipelineSpec")]
    pub pipeline_spec: Option<Value>,
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(alias = "createdAt")]
    pub created_at: OutputOnly,
    pub error: OutputOnly,
}

/// KFP's `CreatePipelineAndVersionRequest` (`POST /pipelines/create`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PipelineAndVersion {
    pub pipeline: Option<Pipeline>,
    #[serde(alias = "pipelineVersion")]
    pub pipeline_version: Option<PipelineVersion>,
}

/// A run's parameters and artifact root, as KFP's `RuntimeConfig`.
#[derive(Deserialize, Serialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuntimeConfig {
    #[serde(default, deserialize_with = "null_as_default")]
    pub parameters: BTreeMap<String, Value>,
    #[serde(alias = "pipelineRoot")]
    pub pipeline_root: Option<String>,
}

/// KFP's `PipelineVersionReference`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VersionRef {
    #[serde(alias = "pipelineId")]
    pub pipeline_id: Option<String>,
    #[serde(alias = "pipelineVersionId")]
    pub pipeline_version_id: Option<String>,
}

/// KFP's `Run`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Run {
    #[serde(alias = "experimentId")]
    pub experiment_id: Option<String>,
    #[serde(alias = "displayName")]
    pub display_name: Option<String>,
    pub description: Option<String>,
    #[serde(alias = "pipelineSpec")]
    pub pipeline_spec: Option<Value>,
    #[serde(alias = "pipelineVersionReference")]
    pub pipeline_version_reference: Option<VersionRef>,
    #[serde(alias = "runtimeConfig")]
    pub runtime_config: Option<RuntimeConfig>,
    #[serde(alias = "serviceAccount")]
    pub service_account: Option<String>,
    /// Deprecated by KFP, which ignores it on create.
    #[serde(alias = "pipelineVersionId")]
    pub pipeline_version_id: OutputOnly,
    #[serde(alias = "runId")]
    pub run_id: OutputOnly,
    #[serde(alias = "storageState")]
    pub storage_state: OutputOnly,
    #[serde(alias = "createdAt")]
    pub created_at: OutputOnly,
    #[serde(alias = "scheduledAt")]
    pub scheduled_at: OutputOnly,
    #[serde(alias = "finishedAt")]
    pub finished_at: OutputOnly,
    pub state: OutputOnly,
    pub error: OutputOnly,
    #[serde(alias = "runDetails")]
    pub run_details: OutputOnly,
    #[serde(alias = "recurringRunId")]
    pub recurring_run_id: OutputOnly,
    #[serde(alias = "stateHistory")]
    pub state_history: OutputOnly,
    #[serde(alias = "pluginsInput")]
    pub plugins_input: OutputOnly,
    #[serde(alias = "pluginsOutput")]
    pub plugins_output: OutputOnly,
}

/// KFP's `RecurringRun`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecurringRun {
    #[serde(alias = "displayName")]
    pub display_name: Option<String>,
    pub description: Option<String>,
    /// Deprecated by KFP in favour of `pipeline_version_reference`.
    #[serde(alias = "pipelineVersionId")]
    pub pipeline_version_id: Option<String>,
    #[serde(alias = "pipelineSpec")]
    pub pipeline_spec: Option<Value>,
    #[serde(alias = "pipelineVersionReference")]
    pub pipeline_version_reference: Option<VersionRef>,
    #[serde(alias = "runtimeConfig")]
    pub runtime_config: Option<RuntimeConfig>,
    #[serde(alias = "serviceAccount")]
    pub service_account: Option<String>,
    #[serde(alias = "maxConcurrency")]
    pub max_concurrency: Option<Value>,
    pub trigger: Option<Value>,
    pub mode: Option<String>,
    #[serde(alias = "noCatchup")]
    pub no_catchup: Option<bool>,
    pub namespace: Option<IgnoredAny>,
    #[serde(alias = "experimentId")]
    pub experiment_id: Option<String>,
    #[serde(alias = "recurringRunId")]
    pub recurring_run_id: OutputOnly,
    #[serde(alias = "createdAt")]
    pub created_at: OutputOnly,
    #[serde(alias = "updatedAt")]
    pub updated_at: OutputOnly,
    pub status: OutputOnly,
    pub error: OutputOnly,
    #[serde(alias = "pluginsInput")]
    pub plugins_input: OutputOnly,
}

/// `null` where a map is expected reads as the empty map (protojson's rule).
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What KFP's Go client sends on every create: zero timestamps and nulls.
    #[test]
    fn go_client_bodies_are_read() {
        let run: Run = serde_json::from_value(serde_json::json!({
            "display_name": "r", "experiment_id": "e", "service_account": "pipeline-runner",
            "created_at": "0001-01-01T00:00:00.000Z", "finished_at": "0001-01-01T00:00:00.000Z",
            "scheduled_at": "0001-01-01T00:00:00.000Z", "state_history": null,
            "pipeline_version_reference": {"pipeline_id": "p", "pipeline_version_id": "v"},
            "runtime_config": {"parameters": null}
        }))
        .expect("run");
        assert_eq!(run.service_account.as_deref(), Some("pipeline-runner"));
        let e: Experiment = serde_json::from_value(serde_json::json!({
            "displayName": "x", "createdAt": "0001-01-01T00:00:00.000Z",
            "last_run_created_at": "0001-01-01T00:00:00.000Z", "namespace": "kubeflow"
        }))
        .expect("experiment in camelCase");
        assert_eq!(e.display_name.as_deref(), Some("x"));
    }

    #[test]
    fn names_outside_the_message_are_refused() {
        let err =
            serde_json::from_value::<Pipeline>(serde_json::json!({"name": "p", "owner": "me"}))
                .err()
                .expect("refused");
        assert!(err.to_string().contains("unknown field `owner`"), "{err}");
        // The wrapper of another route's body is not a field of the message.
        assert!(serde_json::from_value::<Pipeline>(serde_json::json!({"pipeline": {}})).is_err());
    }
}
