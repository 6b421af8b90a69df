//! Substitutes KFP placeholders (`{{$...}}`, Concat, IfPresent) in a container's
//! command and args, exactly as KFP's launcher would, so a component's argv is
//! the same here as on a cluster.

use serde_json::Value;
use switchyard_kfp_spec::params::value_to_text;

use crate::artifacts::Staging;
use crate::io::Io;

/// The run-level values of KFP's pipeline placeholders (`dsl.PIPELINE_JOB_NAME_PLACEHOLDER`
/// and the rest), the same for every task of a run.
#[derive(Debug, Clone, Default)]
pub struct RunValues {
    /// `{{$.pipeline_job_name}}`: the run's display name (KFP: the run's display name).
    pub job_name: String,
    /// `{{$.pipeline_job_resource_name}}`: the run's resource name
    /// (KFP: the Argo workflow's name), also what a final status names.
    pub job_resource_name: String,
    /// `{{$.pipeline_job_uuid}}`: the run id.
    pub job_uuid: String,
    /// `{{$.pipeline_root}}`.
    pub pipeline_root: String,
    /// `{{$.pipeline_job_create_time_utc}}`: RFC 3339, seconds, `Z`.
    pub create_time_utc: String,
    /// `{{$.pipeline_job_schedule_time_utc}}`: when a schedule fired the run,
    /// else its creation time (as KFP does for a run started by hand).
    pub schedule_time_utc: String,
    /// `{{$.workspace_path}}`: the run's shared workspace folder, when the
    /// pipeline declares one (`dsl.PipelineConfig(workspace=...)`).
    pub workspace_path: Option<String>,
    /// Where the run's tasks see remote (`s3://`) artifacts.
    pub staging: Staging,
}

impl RunValues {
    /// The value of a run- or task-level placeholder (`inner` follows `{{$`),
    /// or `None` when `inner` names none of them.
    pub fn value(
        &self,
        inner: &str,
        task_name: &str,
        task_uuid: &str,
    ) -> Option<Result<String, String>> {
        let v = match inner {
            ".pipeline_job_name" => &self.job_name,
            ".pipeline_job_resource_name" => &self.job_resource_name,
            ".pipeline_job_uuid" => &self.job_uuid,
            ".pipeline_task_name" => task_name,
            ".pipeline_task_uuid" => task_uuid,
            ".pipeline_root" => &self.pipeline_root,
            ".pipeline_job_create_time_utc" => &self.create_time_utc,
            ".pipeline_job_schedule_time_utc" => &self.schedule_time_utc,
            ".workspace_path" => {
                return Some(
                    self.workspace_path
                        .clone()
                        .ok_or_else(|| NO_WORKSPACE.to_string()),
                )
            }
            _ => return None,
        };
        Some(Ok(v.to_string()))
    }

    /// A task input given as a constant string: KFP's driver replaces a
    /// string that is exactly one run or task placeholder by its value, and
    /// `{{$.workspace_path}}` wherever it occurs; anything else stays as it is.
    pub fn fill_constant(
        &self,
        s: &str,
        task_name: &str,
        task_uuid: &str,
    ) -> Result<Option<String>, String> {
        if let Some(inner) = s.strip_prefix("{{$").and_then(|r| r.strip_suffix("}}")) {
            if let Some(v) = self.value(inner, task_name, task_uuid) {
                return v.map(Some);
            }
        }
        if s.contains(WORKSPACE) {
            let path = self
                .workspace_path
                .as_deref()
                .ok_or_else(|| NO_WORKSPACE.to_string())?;
            return Ok(Some(s.replace(WORKSPACE, path)));
        }
        Ok(None)
    }
}

const WORKSPACE: &str = "{{$.workspace_path}}";

const NO_WORKSPACE: &str = "{{$.workspace_path}} (dsl.WORKSPACE_PATH_PLACEHOLDER) is used, but the pipeline declares no workspace: add pipeline_config=dsl.PipelineConfig(workspace=dsl.WorkspaceConfig(size='1Gi')) to @dsl.pipeline";

/// What placeholders can refer to.
pub struct PlaceholderContext<'a> {
    pub inputs: &'a Io,
    pub outputs: &'a Io,
    /// `outputs.parameters[name].outputFile` paths.
    pub output_files: &'a serde_json::Map<String, Value>,
    pub executor_output_file: &'a str,
    pub executor_input: &'a str,
    pub run: &'a RunValues,
    /// The task's name in its DAG (`train`, `train-2`), as KFP's driver gets it.
    pub pipeline_task_name: &'a str,
    pub pipeline_task_uuid: &'a str,
}

/// Resolves every command or args entry into zero or more argv strings.
pub fn resolve_all(items: &[String], ctx: &PlaceholderContext<'_>) -> Result<Vec<String>, String> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        out.extend(resolve_item(item, ctx)?);
    }
    Ok(out)
}

fn structured(s: &str) -> Option<Value> {
    let t = s.trim_start();
    if !t.starts_with('{') {
        return None;
    }
    match serde_json::from_str::<Value>(s) {
        Ok(v @ Value::Object(_)) if v.get("Concat").is_some() || v.get("IfPresent").is_some() => {
            Some(v)
        }
        _ => None,
    }
}

fn resolve_item(s: &str, ctx: &PlaceholderContext<'_>) -> Result<Vec<String>, String> {
    match structured(s) {
        Some(v) => resolve_structured(&v, ctx),
        None => Ok(vec![substitute(s, ctx)?]),
    }
}

fn resolve_structured(v: &Value, ctx: &PlaceholderContext<'_>) -> Result<Vec<String>, String> {
    match v {
        Value::String(s) => resolve_item(s, ctx),
        Value::Array(items) => {
            let mut out = Vec::new();
            for i in items {
                out.extend(resolve_structured(i, ctx)?);
            }
            Ok(out)
        }
        Value::Object(m) => {
            if let Some(parts) = m.get("Concat") {
                let parts = parts
                    .as_array()
                    .ok_or("Concat placeholder must hold a list")?;
                let mut joined = String::new();
                for p in parts {
                    joined.push_str(&resolve_structured(p, ctx)?.concat());
                }
                Ok(vec![joined])
            } else if let Some(ip) = m.get("IfPresent") {
                let name = ip
                    .get("InputName")
                    .and_then(Value::as_str)
                    .ok_or("IfPresent placeholder needs an InputName")?;
                let present = ctx.inputs.parameters.contains_key(name)
                    || ctx.inputs.artifacts.contains_key(name);
                let branch = if present {
                    ip.get("Then")
                } else {
                    ip.get("Else")
                };
                match branch {
                    None | Some(Value::Null) => Ok(vec![]),
                    Some(b) => resolve_structured(b, ctx),
                }
            } else {
                Err(format!("unknown structured placeholder {v}"))
            }
        }
        other => Ok(vec![value_to_text(other)]),
    }
}

/// Replaces each `{{$...}}` in a string.
fn substitute(s: &str, ctx: &PlaceholderContext<'_>) -> Result<String, String> {
    if !s.contains("{{$") {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("{{$") {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unterminated placeholder in '{s}'"))?;
        let inner = &after[3..end];
        out.push_str(&resolve_placeholder(inner, ctx)?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `inner` is what follows `{{$`, e.g. `.inputs.parameters['x']`.
fn resolve_placeholder(inner: &str, ctx: &PlaceholderContext<'_>) -> Result<String, String> {
    let full = format!("{{{{${inner}}}}}");
    match inner {
        "" => return Ok(ctx.executor_input.to_string()),
        ".outputs.output_file" => return Ok(ctx.executor_output_file.to_string()),
        _ => {}
    }
    if let Some(v) = ctx
        .run
        .value(inner, ctx.pipeline_task_name, ctx.pipeline_task_uuid)
    {
        return v;
    }
    let (section, name, tail) =
        split_named(inner).ok_or_else(|| format!("unsupported placeholder {full}"))?;
    match (section, tail) {
        (".inputs.parameters", "") => ctx
            .inputs
            .parameters
            .get(name)
            .map(value_to_text)
            .ok_or_else(|| format!("placeholder {full}: input '{name}' has no value; give it a default or wrap it in IfPresent")),
        (".outputs.parameters", ".output_file") => ctx
            .output_files
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("placeholder {full}: the component declares no output parameter '{name}'")),
        (".inputs.artifacts", attr) | (".outputs.artifacts", attr) => {
            let io = if section == ".inputs.artifacts" { ctx.inputs } else { ctx.outputs };
            let list = io
                .artifacts
                .get(name)
                .ok_or_else(|| format!("placeholder {full}: artifact '{name}' has no value"))?;
            if attr.is_empty() {
                // A whole list of artifacts, as JSON.
                return Ok(Value::Array(list.iter().map(|a| a.to_executor_json()).collect()).to_string());
            }
            let art = list.first().ok_or_else(|| format!("placeholder {full}: artifact list '{name}' is empty"))?;
            match attr {
                ".path" => Ok(ctx.run.staging.local_path(&art.uri)),
                ".uri" => Ok(art.uri.clone()),
                ".metadata" => Ok(Value::Object(art.metadata.clone()).to_string()),
                _ => match split_named(attr) {
                    Some((".metadata", key, "")) => Ok(art.metadata.get(key).map(value_to_text).unwrap_or_default()),
                    _ => Err(format!("unsupported placeholder {full} (use .path, .uri, .metadata or .metadata['key'])")),
                },
            }
        }
        _ => Err(format!("unsupported placeholder {full}")),
    }
}

/// Splits `.inputs.parameters['x'].path` into (`.inputs.parameters`, `x`, `.path`).
fn split_named(inner: &str) -> Option<(&str, &str, &str)> {
    let open = inner.find("['")?;
    let close = inner[open + 2..].find("']")? + open + 2;
    Some((&inner[..open], &inner[open + 2..close], &inner[close + 2..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{Artifact, ArtifactTypeJson};
    use serde_json::json;

    fn ctx_with<'a>(
        inputs: &'a Io,
        outputs: &'a Io,
        files: &'a serde_json::Map<String, Value>,
    ) -> PlaceholderContext<'a> {
        PlaceholderContext {
            inputs,
            outputs,
            output_files: files,
            executor_output_file: "/t/executor_output.json",
            executor_input: "{\"inputs\":{}}",
            run: &RUN,
            pipeline_task_name: "train",
            pipeline_task_uuid: "train",
        }
    }

    static RUN: std::sync::LazyLock<RunValues> = std::sync::LazyLock::new(|| RunValues {
        job_name: "demo".into(),
        job_resource_name: "run-1".into(),
        job_uuid: "run-1".into(),
        pipeline_root: "/root".into(),
        create_time_utc: "2026-01-01T00:00:00Z".into(),
        schedule_time_utc: "2026-01-01T00:00:00Z".into(),
        workspace_path: None,
        staging: crate::artifacts::Staging::new(std::path::Path::new("/run")),
    });

    #[test]
    fn constants_are_filled_only_when_whole_except_the_workspace() {
        let fill = |s: &str, run: &RunValues| run.fill_constant(s, "show-2", "k");
        assert_eq!(
            fill("{{$.pipeline_job_resource_name}}", &RUN)
                .unwrap()
                .as_deref(),
            Some("run-1")
        );
        assert_eq!(
            fill("{{$.pipeline_task_name}}", &RUN).unwrap().as_deref(),
            Some("show-2")
        );
        assert_eq!(
            fill("{{$.pipeline_job_schedule_time_utc}}", &RUN)
                .unwrap()
                .as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
        // Inside a longer string KFP's driver leaves them alone.
        assert_eq!(fill("job {{$.pipeline_job_name}}", &RUN).unwrap(), None);
        assert_eq!(fill("{{$.inputs.parameters['x']}}", &RUN).unwrap(), None);
        let err = fill("{{$.workspace_path}}/data", &RUN).unwrap_err();
        assert!(err.contains("dsl.WorkspaceConfig"), "{err}");
        let with = RunValues {
            workspace_path: Some("/w".into()),
            ..RUN.clone()
        };
        assert_eq!(
            fill("{{$.workspace_path}}/data", &with).unwrap().as_deref(),
            Some("/w/data")
        );
    }

    #[test]
    fn all_placeholders() {
        let mut inputs = Io::default();
        inputs.parameters.insert("n".into(), json!(3));
        inputs.parameters.insert("s".into(), json!("hi"));
        inputs.artifacts.insert(
            "d".into(),
            vec![Artifact {
                name: "d".into(),
                artifact_type: ArtifactTypeJson::default(),
                uri: "s3://b/k".into(),
                metadata: json!({"rows": 2}).as_object().cloned().unwrap_or_default(),
            }],
        );
        let outputs = Io::default();
        let mut files = serde_json::Map::new();
        files.insert("o".into(), json!("/t/o"));
        let c = ctx_with(&inputs, &outputs, &files);
        let argv = resolve_all(
            &[
                "{{$}}".into(),
                "--n={{$.inputs.parameters['n']}}".into(),
                "{{$.inputs.artifacts['d'].path}}".into(),
                "{{$.inputs.artifacts['d'].uri}}".into(),
                "{{$.inputs.artifacts['d'].metadata}}".into(),
                "{{$.inputs.artifacts['d'].metadata['rows']}}".into(),
                "{{$.outputs.parameters['o'].output_file}}".into(),
                r#"{"Concat": ["a-", "{{$.inputs.parameters['s']}}", "-b"]}"#.into(),
                r#"{"IfPresent": {"InputName": "missing", "Then": ["--m"], "Else": ["--no-m"]}}"#.into(),
                r#"{"IfPresent": {"InputName": "s", "Then": ["--s", "{{$.inputs.parameters['s']}}"]}}"#.into(),
                "{{$.pipeline_job_name}}/{{$.pipeline_task_name}}".into(),
            ],
            &c,
        )
        .unwrap();
        assert_eq!(
            argv,
            vec![
                "{\"inputs\":{}}",
                "--n=3",
                "/run/.s3/b/k",
                "s3://b/k",
                "{\"rows\":2}",
                "2",
                "/t/o",
                "a-hi-b",
                "--no-m",
                "--s",
                "hi",
                "demo/train"
            ]
        );
    }

    #[test]
    fn missing_input_is_an_error_naming_it() {
        let (i, o, f) = (Io::default(), Io::default(), serde_json::Map::new());
        let err = resolve_all(
            &["{{$.inputs.parameters['x']}}".into()],
            &ctx_with(&i, &o, &f),
        )
        .unwrap_err();
        assert!(err.contains("'x'"), "{err}");
        let err = resolve_all(&["{{$.bogus}}".into()], &ctx_with(&i, &o, &f)).unwrap_err();
        assert!(err.contains("unsupported placeholder"), "{err}");
    }
}
