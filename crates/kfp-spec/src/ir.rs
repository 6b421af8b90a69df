//! Serde types for the KFP v2 `PipelineSpec` (protobuf-JSON camelCase names).
//!
//! Only the fields Switchyard acts on are typed; everything else is tolerated and
//! ignored so that a newer SDK's additions do not break parsing. Fields the engine
//! cannot honour are caught by `validate`, which names them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A whole compiled pipeline: the first YAML document of a `kfp` compile.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PipelineSpec {
    #[serde(default)]
    pub components: BTreeMap<String, ComponentSpec>,
    #[serde(default)]
    pub deployment_spec: DeploymentSpec,
    #[serde(default)]
    pub pipeline_info: PipelineInfo,
    pub root: ComponentSpec,
    #[serde(default)]
    pub schema_version: String,
    #[serde(default)]
    pub sdk_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_pipeline_root: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PipelineInfo {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSpec {
    #[serde(default)]
    pub executors: BTreeMap<String, ExecutorSpec>,
}

/// One executor: exactly one of `container`, `importer` or `resolver` is set.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ExecutorSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub importer: Option<ImporterSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolver: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSpec {
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Value>,
}

/// The operations KFP's driver performs itself instead of starting a
/// container: kfp-kubernetes' `CreatePVC` and `DeletePVC` compile to
/// executors whose image names the operation and that have no command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverOp {
    CreatePvc,
    DeletePvc,
}

impl ContainerSpec {
    /// The driver operation this executor stands for, if it is one.
    pub fn driver_op(&self) -> Option<DriverOp> {
        match self.image.as_str() {
            "argostub/createpvc" => Some(DriverOp::CreatePvc),
            "argostub/deletepvc" => Some(DriverOp::DeletePvc),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct EnvVar {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ImporterSpec {
    /// `{constant: "..."}` or `{runtimeParameter: "name"}`.
    #[serde(default)]
    pub artifact_uri: Value,
    #[serde(default)]
    pub type_schema: ArtifactType,
    #[serde(default)]
    pub metadata: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    pub reimport: bool,
}

/// A component: its interface plus either a DAG body or an executor label.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ComponentSpec {
    #[serde(default)]
    pub input_definitions: InterfaceDefinitions,
    #[serde(default)]
    pub output_definitions: InterfaceDefinitions,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dag: Option<DagSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_label: Option<String>,
    /// `dsl.TaskConfig` passthroughs (kfp >= 2.15): `{field, applyToTask}`,
    /// the fields the component receives in its `TASK_CONFIG` input.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub task_config_passthroughs: Vec<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceDefinitions {
    #[serde(default)]
    pub parameters: BTreeMap<String, ParameterSpec>,
    #[serde(default)]
    pub artifacts: BTreeMap<String, ArtifactSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParameterSpec {
    pub parameter_type: ParameterType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<Value>,
    #[serde(default)]
    pub is_optional: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The IR's parameter types. Unknown names are kept so validation can name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ParameterType {
    NumberDouble,
    NumberInteger,
    String,
    Boolean,
    List,
    Struct,
    TaskFinalStatus,
    TaskConfig,
    #[serde(other)]
    ParameterTypeEnumUnspecified,
}

impl ParameterType {
    /// The Python-ish name users see in KFP's docs (`int`, `float`, ...).
    pub fn user_name(self) -> &'static str {
        match self {
            ParameterType::NumberDouble => "float",
            ParameterType::NumberInteger => "integer",
            ParameterType::String => "string",
            ParameterType::Boolean => "boolean",
            ParameterType::List => "list (JSON array)",
            ParameterType::Struct => "struct (JSON object)",
            ParameterType::TaskFinalStatus => "task final status",
            ParameterType::TaskConfig => "task config",
            ParameterType::ParameterTypeEnumUnspecified => "unspecified",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactSpec {
    #[serde(default)]
    pub artifact_type: ArtifactType,
    #[serde(default)]
    pub is_artifact_list: bool,
    #[serde(default)]
    pub is_optional: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactType {
    #[serde(default)]
    pub schema_title: String,
    #[serde(default)]
    pub schema_version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DagSpec {
    #[serde(default)]
    pub tasks: BTreeMap<String, TaskSpec>,
    #[serde(default)]
    pub outputs: DagOutputs,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DagOutputs {
    #[serde(default)]
    pub parameters: BTreeMap<String, DagOutputParameter>,
    #[serde(default)]
    pub artifacts: BTreeMap<String, DagOutputArtifact>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DagOutputParameter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from_parameter: Option<OutputSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from_oneof: Option<OneOfSelectors>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct OneOfSelectors {
    #[serde(default)]
    pub parameter_selectors: Vec<OutputSelector>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct OutputSelector {
    pub producer_subtask: String,
    pub output_parameter_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DagOutputArtifact {
    #[serde(default)]
    pub artifact_selectors: Vec<ArtifactSelector>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactSelector {
    pub producer_subtask: String,
    pub output_artifact_key: String,
}

/// One task of a DAG.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TaskSpec {
    #[serde(default)]
    pub task_info: TaskInfo,
    #[serde(default)]
    pub component_ref: ComponentRef,
    #[serde(default)]
    pub dependent_tasks: Vec<String>,
    #[serde(default)]
    pub inputs: TaskInputs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caching_options: Option<CachingOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_policy: Option<TriggerPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<RetryPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter_iterator: Option<ParameterIterator>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_iterator: Option<ArtifactIterator>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterator_policy: Option<IteratorPolicy>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TaskInfo {
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ComponentRef {
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TaskInputs {
    #[serde(default)]
    pub parameters: BTreeMap<String, InputParameterSpec>,
    #[serde(default)]
    pub artifacts: BTreeMap<String, InputArtifactSpec>,
}

/// Where one input parameter of a task comes from.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct InputParameterSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_input_parameter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_output_parameter: Option<TaskOutputParameter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_value: Option<RuntimeValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_final_status: Option<TaskFinalStatusRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter_expression_selector: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TaskOutputParameter {
    pub producer_task: String,
    pub output_parameter_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeValue {
    #[serde(default)]
    pub constant: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TaskFinalStatusRef {
    pub producer_task: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct InputArtifactSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_output_artifact: Option<TaskOutputArtifact>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_input_artifact: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TaskOutputArtifact {
    pub producer_task: String,
    pub output_artifact_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CachingOptions {
    #[serde(default)]
    pub enable_cache: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TriggerPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    #[serde(default)]
    pub max_retry_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_max_duration: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ParameterIterator {
    pub item_input: String,
    pub items: IteratorItems,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct IteratorItems {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_parameter: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactIterator {
    pub item_input: String,
    pub items: ArtifactIteratorItems,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactIteratorItems {
    #[serde(default)]
    pub input_artifact: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct IteratorPolicy {
    #[serde(default)]
    pub parallelism_limit: u32,
}

impl TaskSpec {
    /// The `ALL_UPSTREAM_TASKS_COMPLETED` strategy: run even when upstream failed
    /// (exit handlers, `ignore_upstream_failure`).
    pub fn runs_after_upstream_failure(&self) -> bool {
        self.trigger_policy
            .as_ref()
            .and_then(|t| t.strategy.as_deref())
            .is_some_and(|s| s == "ALL_UPSTREAM_TASKS_COMPLETED")
    }

    /// Every task this one must wait for: `dependentTasks` plus the producers its
    /// inputs name (the compiler lists them, but a hand-edited spec may not).
    pub fn upstream(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.dependent_tasks.iter().map(String::as_str).collect();
        for p in self.inputs.parameters.values() {
            if let Some(t) = &p.task_output_parameter {
                out.push(&t.producer_task);
            }
            if let Some(t) = &p.task_final_status {
                out.push(&t.producer_task);
            }
        }
        for a in self.inputs.artifacts.values() {
            if let Some(t) = &a.task_output_artifact {
                out.push(&t.producer_task);
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}
