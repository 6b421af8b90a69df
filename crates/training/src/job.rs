//! A checked TrainingJob, as every backend receives it, and the local paths
//! a server checks before it runs one it was sent.

use std::path::{Path, PathBuf};

use regex::Regex;
use serde_json::Value;

use crate::spec::TrainingJobSpec;

/// The label naming the pipeline run that submitted a job.
pub const LABEL_RUN_ID: &str = "switchyard.io/run-id";
/// The label naming the pipeline task (its key in the run) that submitted a job.
pub const LABEL_TASK: &str = "switchyard.io/task";

/// Where a channel's data comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelSource {
    Local(PathBuf),
    S3 {
        bucket: String,
        prefix: String,
    },
    Efs {
        file_system_id: String,
        path: String,
    },
}

#[derive(Debug, Clone)]
pub struct Channel {
    pub name: String,
    pub uri: String,
    pub source: ChannelSource,
}

/// A validated job: paths absolute, channels classified, metric regexes compiled.
#[derive(Debug, Clone)]
pub struct TrainingJob {
    pub name: String,
    /// `metadata.labels`; a pipeline step adds [`LABEL_RUN_ID`] and [`LABEL_TASK`].
    pub labels: std::collections::BTreeMap<String, String>,
    pub spec: TrainingJobSpec,
    pub channels: Vec<Channel>,
    pub metrics: Vec<(String, Regex)>,
}

impl TrainingJob {
    pub fn world_size(&self) -> u32 {
        self.spec.nodes * self.spec.procs_per_node
    }

    /// The document as it will be recorded (paths resolved).
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "apiVersion": crate::API_VERSION,
            "kind": "TrainingJob",
            "metadata": if self.labels.is_empty() {
                serde_json::json!({"name": self.name})
            } else {
                serde_json::json!({"name": self.name, "labels": self.labels})
            },
            "spec": self.spec,
        })
    }
}

/// Every local path the job reads or writes, with the field that names it:
/// what a server checks before running a job someone posted over HTTP.
pub fn local_paths(job: &TrainingJob) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    if let Some(dir) = &job.spec.source_dir {
        out.push(("spec.sourceDir".to_string(), PathBuf::from(dir)));
    }
    for ch in &job.channels {
        if let ChannelSource::Local(p) = &ch.source {
            out.push((format!("spec.channels.{}", ch.name), p.clone()));
        }
    }
    for (field, value) in [
        ("spec.output", &job.spec.output),
        ("spec.checkpoint", &job.spec.checkpoint),
    ] {
        if let Some(v) = value.as_deref().filter(|v| !v.contains("://")) {
            out.push((field.to_string(), PathBuf::from(v)));
        }
    }
    out
}

/// A local path of a job outside the folders a server may use for it.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {} is outside the folders this server may use for the jobs it is sent (posted, or a step of a pipeline it runs) ({}); start the server with --path-root to allow another", path.display(), roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", "))]
pub struct PathOutside {
    pub field: String,
    pub path: PathBuf,
    pub roots: Vec<PathBuf>,
}

/// Every local path of the job must lie under one of `roots` once links are
/// resolved: a job a server is sent reads and writes with the server's rights.
pub fn check_path_roots(job: &TrainingJob, roots: &[PathBuf]) -> Result<(), PathOutside> {
    match local_paths(job).into_iter().find(|(_, path)| {
        let resolved = resolve_existing(path);
        !roots.iter().any(|r| resolved.starts_with(r))
    }) {
        None => Ok(()),
        Some((field, path)) => Err(PathOutside {
            field,
            path,
            roots: roots.to_vec(),
        }),
    }
}

/// `path` with links resolved as far as it exists (an output folder may not exist yet).
fn resolve_existing(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut cur = path.to_path_buf();
    loop {
        if let Ok(c) = cur.canonicalize() {
            return rest
                .iter()
                .rev()
                .fold(c, |acc: PathBuf, part| acc.join(part));
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                cur = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}
