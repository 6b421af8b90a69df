//! Records to KFP v2beta1 JSON: snake_case, enum names as strings, RFC 3339
//! times in whole seconds (KFP stores seconds, so every answer that shows a
//! time shows the same one), empty fields omitted.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use switchyard_store::{
    ExperimentRecord, PipelineRecord, PipelineVersionRecord, RunCatalog, RunRecord, TaskRecord,
    Transition,
};

/// Drops nulls, empty strings, empty arrays and empty objects, recursively.
pub fn compact(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, compact(v)))
                .filter(|(_, v)| match v {
                    Value::Null => false,
                    Value::String(s) => !s.is_empty(),
                    Value::Array(a) => !a.is_empty(),
                    Value::Object(o) => !o.is_empty(),
                    _ => true,
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(compact).collect()),
        other => other,
    }
}

/// A time as KFP shows it: `2024-01-01T00:00:00Z`.
pub fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn status_error(message: &Option<String>) -> Value {
    match message {
        Some(m) if !m.is_empty() => json!({"code": 2, "message": m}),
        _ => Value::Null,
    }
}

pub fn experiment(e: &ExperimentRecord) -> Value {
    compact(json!({
        "experiment_id": e.id,
        "display_name": e.display_name,
        "description": e.description,
        "created_at": ts(&e.created_at),
        "storage_state": e.storage_state,
    }))
}

pub fn pipeline(p: &PipelineRecord) -> Value {
    compact(json!({
        "pipeline_id": p.id,
        "name": p.name,
        "display_name": p.display_name,
        "description": p.description,
        "created_at": ts(&p.created_at),
        "tags": p.tags,
    }))
}

pub fn version(v: &PipelineVersionRecord, with_spec: bool) -> Value {
    let mut out = compact(json!({
        "pipeline_id": v.pipeline_id,
        "pipeline_version_id": v.id,
        "name": v.name,
        "display_name": v.display_name,
        "description": v.description,
        "created_at": ts(&v.created_at),
        "tags": v.tags,
    }));
    // Not compacted: the document's own empty fields are part of it.
    if with_spec {
        out["pipeline_spec"] = stored_spec(&v.spec);
    }
    out
}

/// A stored pipeline as KFP shows it: the spec document, or
/// `{pipeline_spec, platform_spec}` when it has a platform spec; numbers as
/// protobuf's JSON writes them (`1`, not `1.0`).
pub fn stored_spec(stored: &Value) -> Value {
    let shown = match stored.get("pipeline_spec") {
        Some(spec) if stored.get("platform_spec").is_none() => spec.clone(),
        _ => stored.clone(),
    };
    protobuf_numbers(shown)
}

/// Whole floats as integers, as protobuf's JSON mapping prints doubles.
fn protobuf_numbers(v: Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => json!(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(a) => Value::Array(a.into_iter().map(protobuf_numbers).collect()),
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, protobuf_numbers(v)))
                .collect(),
        ),
        other => other,
    }
}

fn history(transitions: &[&Transition]) -> Vec<Value> {
    transitions
        .iter()
        .map(|t| json!({"update_time": ts(&t.at), "state": t.state}))
        .collect()
}

/// A run, with task details when `tasks` is given (GET) and without (lists).
pub fn run(
    r: &RunRecord,
    cat: Option<&RunCatalog>,
    tasks: Option<&[TaskRecord]>,
    transitions: &[Transition],
) -> Value {
    let run_history: Vec<&Transition> = transitions
        .iter()
        .filter(|t| t.task_key.is_none())
        .collect();
    let mut v = json!({
        "run_id": r.id,
        "display_name": r.display_name,
        "experiment_id": cat.map(|c| c.experiment_id.clone()),
        "storage_state": cat.map(|c| c.storage_state.clone()).unwrap_or_else(|| "AVAILABLE".into()),
        "description": cat.and_then(|c| c.description.clone()),
        "pipeline_version_reference": cat.and_then(|c| c.pipeline_version_id.as_ref().map(|vid| json!({"pipeline_id": c.pipeline_id, "pipeline_version_id": vid}))),
        "runtime_config": cat.and_then(|c| c.runtime_config.clone()),
        "service_account": cat.and_then(|c| c.service_account.clone()),
        "created_at": ts(&r.created_at),
        // A run a schedule fired was scheduled for its slot.
        "scheduled_at": r.options.get("schedule_time").and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map_or_else(
                || ts(&r.started_at.unwrap_or(r.created_at)),
                |t| ts(&t.with_timezone(&Utc)),
            ),
        "recurring_run_id": cat.and_then(|c| c.recurring_run_id.clone()),
        "finished_at": r.finished_at.as_ref().map(ts),
        "state": r.state,
        "error": status_error(&r.error),
        "state_history": history(&run_history),
    });
    if let Some(tasks) = tasks {
        let mut by_task: BTreeMap<&str, Vec<&Transition>> = BTreeMap::new();
        for t in transitions {
            if let Some(k) = &t.task_key {
                by_task.entry(k.as_str()).or_default().push(t);
            }
        }
        let details: Vec<Value> = tasks
            .iter()
            .map(|t| {
                let hist = by_task
                    .get(t.task_key.as_str())
                    .cloned()
                    .unwrap_or_default();
                let children: Vec<Value> = tasks
                    .iter()
                    .filter(|c| c.parent_key.as_deref() == Some(t.task_key.as_str()))
                    .map(|c| json!({"task_id": c.task_key}))
                    .collect();
                json!({
                    "run_id": r.id,
                    "task_id": t.task_key,
                    "display_name": t.name,
                    "create_time": hist.first().map(|h| h.at).or(t.started_at).as_ref().map(ts),
                    "start_time": t.started_at.as_ref().map(ts),
                    "end_time": t.finished_at.as_ref().map(ts),
                    "state": t.state,
                    "error": status_error(&t.error),
                    "parent_task_id": t.parent_key,
                    "child_tasks": children,
                    "state_history": history(&hist),
                })
            })
            .collect();
        v["run_details"] = json!({"task_details": details});
    }
    compact(v)
}
