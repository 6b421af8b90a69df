//! `/metrics` in the Prometheus text format: runs, tasks and jobs by state, how
//! long they took, and how many runs wait for a slot.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

use crate::error::ApiResult;
use crate::AppState;

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub async fn metrics(State(s): State<AppState>) -> ApiResult<impl IntoResponse> {
    let st = s.catalog.stats().await?;
    let mut out = String::new();
    family(
        &mut out,
        "switchyard_runs",
        "gauge",
        "Pipeline runs by state.",
    );
    for (state, n) in &st.runs_by_state {
        out.push_str(&format!(
            "switchyard_runs{{state=\"{}\"}} {n}\n",
            escape(state)
        ));
    }
    family(
        &mut out,
        "switchyard_tasks",
        "gauge",
        "Container tasks by state.",
    );
    for (state, n) in &st.tasks_by_state {
        out.push_str(&format!(
            "switchyard_tasks{{state=\"{}\"}} {n}\n",
            escape(state)
        ));
    }
    family(
        &mut out,
        "switchyard_jobs",
        "gauge",
        "Training jobs by backend and state.",
    );
    for (backend, state, n) in &st.jobs {
        out.push_str(&format!(
            "switchyard_jobs{{backend=\"{}\",state=\"{}\"}} {n}\n",
            escape(backend),
            escape(state)
        ));
    }
    for (name, help, (sum, count)) in [
        (
            "switchyard_run_duration_seconds",
            "Wall time of finished runs.",
            st.run_seconds,
        ),
        (
            "switchyard_task_duration_seconds",
            "Wall time of finished container tasks.",
            st.task_seconds,
        ),
        (
            "switchyard_job_duration_seconds",
            "Wall time of finished training jobs.",
            st.job_seconds,
        ),
    ] {
        family(&mut out, name, "summary", help);
        out.push_str(&format!("{name}_sum {sum:.3}\n{name}_count {count}\n"));
    }
    let pending = st
        .runs_by_state
        .iter()
        .find(|(s, _)| s == "PENDING")
        .map(|(_, n)| *n)
        .unwrap_or(0);
    family(
        &mut out,
        "switchyard_queue_depth",
        "gauge",
        "Runs waiting for an execution slot.",
    );
    out.push_str(&format!("switchyard_queue_depth {pending}\n"));
    family(
        &mut out,
        "switchyard_run_slots_free",
        "gauge",
        "Execution slots free right now.",
    );
    out.push_str(&format!(
        "switchyard_run_slots_free {}\n",
        s.run_slots.available_permits()
    ));
    Ok(([(CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}
