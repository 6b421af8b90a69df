//! Turning run records into what the user reads: JSON documents and text.

use serde_json::{json, Value};
use switchyard_store::{RunRecord, State, TaskRecord, Transition};

fn secs(run: &RunRecord) -> Option<f64> {
    match (run.started_at, run.finished_at) {
        (Some(s), Some(f)) => Some((f - s).num_milliseconds() as f64 / 1000.0),
        _ => None,
    }
}

pub fn task_json(t: &TaskRecord) -> Value {
    json!({
        "name": t.name,
        "key": t.task_key,
        "kind": t.kind,
        "state": t.state,
        "cached": t.cached,
        "attempt": t.attempt,
        "started_at": t.started_at,
        "finished_at": t.finished_at,
        "error": t.error,
        "log": t.log_path,
        "outputs": t.outputs.as_ref().and_then(switchyard_engine::Io::from_value).map(|io| io.to_user_json()),
    })
}

/// The one document `--output json` prints for a run.
pub fn run_json(run: &RunRecord, tasks: &[TaskRecord], history: Option<&[Transition]>) -> Value {
    let mut v = json!({
        "run_id": run.id,
        "name": run.display_name,
        "pipeline": run.pipeline_name,
        "state": run.state,
        "error": run.error,
        "outputs": run.outputs.clone().unwrap_or_else(|| json!({})),
        "parameters": run.parameters,
        "pipeline_root": run.pipeline_root,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "duration_seconds": secs(run),
        "tasks": tasks.iter().map(task_json).collect::<Vec<_>>(),
    });
    if let Some(h) = history {
        v["state_history"] = h
            .iter()
            .map(|t| json!({"task": t.task_key, "state": t.state, "at": t.at}))
            .collect::<Vec<_>>()
            .into();
    }
    v
}

fn short(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.chars().count() > 120 {
        format!("{}…", s.chars().take(120).collect::<String>())
    } else {
        s
    }
}

/// The outputs block printed at the end of a successful run.
pub fn outputs_text(run: &RunRecord) -> String {
    let mut out = String::new();
    if let Some(Value::Object(m)) = &run.outputs {
        for (k, v) in m {
            out.push_str(&format!("{k} = {}\n", short(v)));
        }
    }
    out
}

pub fn run_text(run: &RunRecord, tasks: &[TaskRecord], history: &[Transition]) -> String {
    let mut s = format!(
        "Run {}  ({})\n  pipeline: {}\n  state:    {}\n  created:  {}\n",
        run.id, run.display_name, run.pipeline_name, run.state, run.created_at
    );
    if let Some(d) = secs(run) {
        s.push_str(&format!("  duration: {d:.1}s\n"));
    }
    if let Some(e) = &run.error {
        s.push_str(&format!("  error:    {}\n", e.lines().next().unwrap_or("")));
    }
    s.push_str(&format!("  parameters: {}\n", run.parameters));
    if run.outputs.is_some() {
        s.push_str("  outputs:\n");
        for line in outputs_text(run).lines() {
            s.push_str(&format!("    {line}\n"));
        }
    }
    s.push_str("  tasks:\n");
    for t in tasks {
        let took = match (t.started_at, t.finished_at) {
            (Some(a), Some(b)) => format!("{:.1}s", (b - a).num_milliseconds() as f64 / 1000.0),
            _ => String::new(),
        };
        let extra = if t.cached { " (cached)" } else { "" };
        s.push_str(&format!(
            "    {:<40} {:<10} {:<9} {took}{extra}\n",
            t.task_key,
            t.state.as_str(),
            t.kind
        ));
    }
    let run_hist: Vec<String> = history
        .iter()
        .filter(|t| t.task_key.is_none())
        .map(|t| format!("{} {}", t.state, t.at.format("%H:%M:%S%.3f")))
        .collect();
    s.push_str(&format!("  history: {}\n", run_hist.join(" -> ")));
    s
}

pub fn state_exit_code(state: State) -> i32 {
    match state {
        State::Succeeded => 0,
        State::Canceled => 130,
        _ => 1,
    }
}
