//! Values flowing between tasks: parameters (native JSON) and artifacts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use switchyard_kfp_spec::ArtifactType;

/// One artifact as the executor protocol describes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Artifact {
    pub name: String,
    #[serde(rename = "type")]
    pub artifact_type: ArtifactTypeJson,
    pub uri: String,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactTypeJson {
    #[serde(default)]
    pub schema_title: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub schema_version: String,
}

impl From<&ArtifactType> for ArtifactTypeJson {
    fn from(t: &ArtifactType) -> Self {
        ArtifactTypeJson {
            schema_title: t.schema_title.clone(),
            schema_version: t.schema_version.clone(),
        }
    }
}

impl Artifact {
    /// The local path a component reads or writes, per KFP's URI mapping
    /// (`s3://b/k` is `/s3/b/k`, a local URI is its own path).
    pub fn local_path(&self) -> String {
        uri_to_path(&self.uri)
    }

    pub fn to_executor_json(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.artifact_type,
            "uri": self.uri,
            "metadata": self.metadata,
        })
    }
}

/// KFP's mapping from artifact URI to the path a component sees.
pub fn uri_to_path(uri: &str) -> String {
    for (prefix, mount) in [
        ("gs://", "/gcs/"),
        ("s3://", "/s3/"),
        ("minio://", "/minio/"),
    ] {
        if let Some(rest) = uri.strip_prefix(prefix) {
            return format!("{mount}{rest}");
        }
    }
    uri.strip_prefix("file://").unwrap_or(uri).to_string()
}

pub use switchyard_backend::files::copy_tree;

/// The inputs or outputs of a task or DAG.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Io {
    #[serde(default)]
    pub parameters: Map<String, Value>,
    #[serde(default)]
    pub artifacts: BTreeMap<String, Vec<Artifact>>,
}

impl Io {
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    pub fn from_value(v: &Value) -> Option<Io> {
        serde_json::from_value(v.clone()).ok()
    }

    /// `{name: {"artifacts": [...]}}`, the executor protocol's shape for artifacts.
    pub fn artifacts_executor_json(&self) -> Map<String, Value> {
        self.artifacts
            .iter()
            .map(|(k, l)| {
                let list: Vec<Value> = l.iter().map(Artifact::to_executor_json).collect();
                (k.clone(), json!({ "artifacts": list }))
            })
            .collect()
    }

    /// The user-facing form: parameters as they are, artifacts as `{uri, metadata}`
    /// (a single object, or a list for artifact lists).
    pub fn to_user_json(&self) -> Value {
        let mut out = self.parameters.clone();
        for (k, arts) in &self.artifacts {
            let items: Vec<Value> = arts
                .iter()
                .map(|a| json!({"uri": a.uri, "metadata": a.metadata}))
                .collect();
            let v = if items.len() == 1 {
                items.into_iter().next().unwrap_or(Value::Null)
            } else {
                Value::Array(items)
            };
            out.insert(k.clone(), v);
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::copy_tree;

    #[test]
    fn code_copies_skip_fifos_instead_of_blocking_on_them() {
        let src = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(src.path().join("pkg")).expect("mkdir");
        std::fs::write(src.path().join("pkg/train.py"), "print(1)").expect("write");
        let fifo = src.path().join("pkg/pipe");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        std::os::unix::fs::symlink("train.py", src.path().join("pkg/link.py")).expect("link");
        let dst = tempfile::tempdir().expect("tempdir");
        let mut skipped = Vec::new();
        copy_tree(src.path(), dst.path(), &mut skipped).expect("copied");
        assert_eq!(skipped, [fifo]);
        assert_eq!(
            std::fs::read_to_string(dst.path().join("pkg/train.py")).expect("copied file"),
            "print(1)"
        );
        assert!(dst
            .path()
            .join("pkg/link.py")
            .symlink_metadata()
            .expect("link")
            .file_type()
            .is_symlink());
        assert!(!dst.path().join("pkg/pipe").exists());
    }
}
