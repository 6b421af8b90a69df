//! Cache keys: a task's result can be reused when the component it runs and the
//! values it receives are the same, as in KFP's execution cache.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use switchyard_kfp_spec::{ComponentSpec, ContainerSpec};

use crate::io::Io;

/// Sorts object keys recursively so equal values hash equally.
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), canonical(&m[k])))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// The fingerprint of one container task: component interface, container (image,
/// command, args, env), resolved input parameters, input artifacts (URI and
/// metadata) and the user's cache key if any. Outputs paths are not part of it.
pub fn fingerprint(
    component: &ComponentSpec,
    container: &ContainerSpec,
    inputs: &Io,
    cache_key: Option<&str>,
) -> String {
    let artifacts: Value = inputs
        .artifacts
        .iter()
        .map(|(k, list)| {
            (
                k.clone(),
                Value::Array(list.iter().map(|a| json!({"uri": a.uri, "metadata": a.metadata, "type": a.artifact_type})).collect()),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    let doc = json!({
        "v": 1,
        "inputDefinitions": serde_json::to_value(&component.input_definitions).unwrap_or(Value::Null),
        "outputDefinitions": serde_json::to_value(&component.output_definitions).unwrap_or(Value::Null),
        "container": {
            "image": container.image,
            "command": container.command,
            "args": container.args,
            "env": serde_json::to_value(&container.env).unwrap_or(Value::Null),
        },
        "parameters": inputs.parameters,
        "artifacts": artifacts,
        "cacheKey": cache_key,
    });
    let text = canonical(&doc).to_string();
    hex::encode(Sha256::digest(text.as_bytes()))
}
