//! Reading a compiled pipeline file: YAML (one or two documents) to [`PipelineSpec`].

use serde_json::Value;

use crate::{PipelineSpec, SpecError};

/// A pipeline as compiled by `kfp`: the spec plus the optional platform spec
/// (the second YAML document, Kubernetes settings that the local backend ignores).
#[derive(Debug, Clone)]
pub struct ParsedPipeline {
    pub spec: PipelineSpec,
    pub platform_spec: Option<Value>,
}

/// Parses and shape-checks a compiled pipeline. Accepts the two-document YAML the
/// SDK writes, a bare JSON spec, and the `{pipeline_spec, platform_spec}` wrapper
/// the REST API uses.
pub fn parse_pipeline(text: &str) -> Result<ParsedPipeline, SpecError> {
    // YAML 1.2 booleans only: PyYAML (what kfp writes with) leaves `n` and `y`
    // unquoted, and they are names, not booleans.
    let options = serde_saphyr::options! { strict_booleans: true };
    let docs: Vec<Value> = serde_saphyr::from_multiple_with_options(text, options)
        .map_err(|e| SpecError::Yaml(e.to_string()))?;
    let mut docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    if docs.is_empty() {
        return Err(SpecError::Empty);
    }
    let first = docs.remove(0);
    let (spec_value, platform_spec) = match first {
        Value::Object(mut m)
            if m.contains_key("pipeline_spec") || m.contains_key("pipelineSpec") =>
        {
            let spec = m
                .remove("pipeline_spec")
                .or_else(|| m.remove("pipelineSpec"))
                .unwrap_or(Value::Null);
            let platform = m
                .remove("platform_spec")
                .or_else(|| m.remove("platformSpec"));
            (spec, platform)
        }
        other => (other, docs.into_iter().next()),
    };
    from_value(spec_value).map(|spec| ParsedPipeline {
        spec,
        platform_spec,
    })
}

/// Converts an already-parsed JSON value into a spec, naming the field that is off.
pub fn from_value(value: Value) -> Result<PipelineSpec, SpecError> {
    if !value.is_object() {
        return Err(SpecError::Shape {
            path: ".".into(),
            message:
                "expected a mapping with `components`, `deploymentSpec`, `root` and `schemaVersion`"
                    .into(),
        });
    }
    let spec: PipelineSpec =
        serde_path_to_error::deserialize(value).map_err(|e| SpecError::Shape {
            path: e.path().to_string(),
            message: e.inner().to_string(),
        })?;
    check_schema_version(&spec.schema_version)?;
    Ok(spec)
}

fn check_schema_version(v: &str) -> Result<(), SpecError> {
    if v.starts_with("2.0.") || v.starts_with("2.1.") || v == "2.0" || v == "2.1" {
        Ok(())
    } else {
        Err(SpecError::SchemaVersion {
            found: v.to_string(),
        })
    }
}
