//! The Kubeflow Pipelines v2 intermediate representation, as Switchyard reads it.
//!
//! `kfp` compiles a Python pipeline to a `PipelineSpec` YAML document (plus an
//! optional platform-spec document). This crate turns that text into typed values
//! ([`ir`]), checks it before anything runs ([`validate`]), and converts parameter
//! values between the user's text, JSON and the IR's declared types ([`params`]).
//! It does no I/O beyond the text it is handed, so the CLI, the server and tests all
//! share one definition of "a valid pipeline".

pub mod ir;
pub mod json_text;
pub mod params;
pub mod parse;
pub mod validate;

pub use ir::*;
pub use parse::{parse_pipeline, ParsedPipeline};
pub use validate::validate;

/// Everything that can be wrong with a pipeline document or the values given to it.
/// Each message names the place (file position, component, task or parameter) and,
/// where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("malformed pipeline YAML: {0}")]
    Yaml(String),
    #[error("the pipeline document does not match the KFP PipelineSpec at `{path}`: {message}")]
    Shape { path: String, message: String },
    #[error("the file is empty; expected a PipelineSpec compiled by the kfp SDK")]
    Empty,
    #[error("unsupported schemaVersion '{found}': Switchyard reads KFP IR schemaVersion 2.0.x and 2.1.x (compile with kfp 2.x)")]
    SchemaVersion { found: String },
    #[error("{place}: {message}")]
    Invalid { place: String, message: String },
    #[error("{place}: not supported yet: {feature}")]
    Unsupported { place: String, feature: String },
    #[error("dependency cycle in {dag}: {}", .cycle.join(" -> "))]
    Cycle { dag: String, cycle: Vec<String> },
    #[error("unknown parameter '{name}' (-p {name}=...): the pipeline's parameters are: {known}")]
    UnknownParameter { name: String, known: String },
    #[error("parameter '{name}': {message}")]
    BadValue { name: String, message: String },
    #[error("missing required parameter '{name}' ({ty}): pass it with -p {name}=VALUE")]
    MissingParameter { name: String, ty: &'static str },
}
