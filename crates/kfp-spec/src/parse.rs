//! Reading a compiled pipeline file: YAML (one or two documents) to [`PipelineSpec`].

use serde_json::Value;

use crate::{PipelineSpec, SpecError};

/// A pipeline as compiled by `kfp`: the spec plus the optional platform spec
/// (the second YAML document, Kubernetes settings that the local backend ignores).
#[derive(Debug, Clone)]
pub struct ParsedPipeline {
    pub spec: PipelineSpec,
    pub platform_spec: Option<Value>,
    /// The pipeline spec document as the file gave it (as JSON), for answers
    /// that show a stored pipeline as it was uploaded (KFP returns the
    /// document, not its reading by this parser).
    pub document: Value,
}

/// Largest pipeline file accepted (64 MiB). kfp writes about 1 KiB per step,
/// so this is tens of thousands of steps; the server's `--max-body-bytes`
/// (32 MiB by default) usually binds first.
pub const MAX_SPEC_BYTES: usize = 64 << 20;

/// The YAML parser's limits, sized for real pipelines: kfp writes about 25
/// nodes per step, so 10 million nodes are 400,000 steps; the defaults of the
/// YAML library (250,000 nodes) refused pipelines of 10,000 steps. Nesting
/// (256 levels) and aliases stay bounded, which is what stops hostile input.
fn budget() -> Option<serde_saphyr::Budget> {
    serde_saphyr::budget! {
        max_events: 40_000_000,
        max_nodes: 10_000_000,
        max_depth: 256,
        max_documents: 16,
        max_total_scalar_bytes: MAX_SPEC_BYTES,
    }
}

/// Parses and shape-checks a compiled pipeline. Accepts the two-document YAML the
/// SDK writes, a bare JSON spec, and the `{pipeline_spec, platform_spec}` wrapper
/// the REST API uses.
pub fn parse_pipeline(text: &str) -> Result<ParsedPipeline, SpecError> {
    if text.len() > MAX_SPEC_BYTES {
        return Err(SpecError::Yaml(format!(
            "the pipeline file is {} MiB; the limit is {} MiB (split the pipeline, or pass large data as artifacts, not constants)",
            text.len() >> 20,
            MAX_SPEC_BYTES >> 20
        )));
    }
    // YAML 1.2 booleans only: PyYAML (what kfp writes with) leaves `n` and `y`
    // unquoted, and they are names, not booleans.
    let options = serde_saphyr::options! { strict_booleans: true, budget: budget() };
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
    let document = spec_value.clone();
    from_value(spec_value).map(|spec| ParsedPipeline {
        spec,
        platform_spec,
        document,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A flat pipeline of `n` independent one-step tasks, as kfp writes it.
    fn wide(n: usize) -> String {
        let mut comps = String::new();
        let mut execs = String::new();
        let mut tasks = String::new();
        for i in 0..n {
            comps.push_str(&format!("  comp-t{i}:\n    executorLabel: exec-t{i}\n"));
            execs.push_str(&format!(
                "    exec-t{i}:\n      container:\n        image: alpine:3.19\n        command: [echo]\n        args: [step, '{i}']\n"
            ));
            tasks.push_str(&format!(
                "      t{i}:\n        taskInfo: {{name: t{i}}}\n        componentRef: {{name: comp-t{i}}}\n        cachingOptions: {{enableCache: false}}\n"
            ));
        }
        format!("schemaVersion: 2.1.0\nsdkVersion: kfp-2.7.0\npipelineInfo: {{name: wide}}\ncomponents:\n{comps}deploymentSpec:\n  executors:\n{execs}root:\n  dag:\n    tasks:\n{tasks}")
    }

    #[test]
    fn a_large_real_pipeline_is_within_the_limits() {
        // 16,000 steps: past the YAML library's default budget of 250,000 nodes.
        let text = wide(16_000);
        let parsed = parse_pipeline(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            parsed.spec.root.dag.as_ref().map(|d| d.tasks.len()),
            Some(16_000)
        );
    }

    #[test]
    fn a_spec_past_the_size_limit_is_refused_naming_it() {
        let text = format!("# {}\n{}", "x".repeat(MAX_SPEC_BYTES), wide(1));
        let e = parse_pipeline(&text).unwrap_err().to_string();
        assert!(e.contains("64 MiB"), "{e}");
    }
}
