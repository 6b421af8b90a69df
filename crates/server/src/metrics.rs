//! `/metrics` in the Prometheus text format: runs, tasks and jobs by state, how
//! long they took, how many runs wait for a slot, and the training KPIs per
//! backend (cost, spot savings, instance- and GPU-hours, queue time).

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
    training_kpis(
        &mut out,
        &crate::kpis::report_for(&s, None, None, Some("backend")).await?,
    );
    Ok(([(CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}

/// The training KPIs of every finished job on record, per backend (the
/// same numbers as `/apis/switchyard/v1/kpis?group_by=backend`).
fn training_kpis(out: &mut String, report: &switchyard_runner::kpi::KpiReport) {
    type Pick = fn(&switchyard_runner::kpi::KpiRow) -> f64;
    let counters: [(&str, &str, Pick); 4] = [
        (
            "switchyard_training_cost_usd",
            "Estimated cost of finished training jobs (USD; backends whose cost is not counted add 0).",
            |r| r.est_cost_usd,
        ),
        (
            "switchyard_training_spot_savings_usd",
            "What managed spot training saved against on-demand (USD).",
            |r| r.spot_savings_usd,
        ),
        (
            "switchyard_training_instance_hours",
            "Nodes (instances, pods, local hosts) x hours of finished training jobs.",
            |r| r.instance_hours,
        ),
        (
            "switchyard_training_gpu_hours",
            "GPU-hours held by finished training jobs.",
            |r| r.gpu_hours,
        ),
    ];
    for (name, help, pick) in counters {
        // Gauges, not counters: recomputed from the job records on each
        // scrape, they would drop if records went away.
        family(out, name, "gauge", help);
        for r in &report.rows {
            out.push_str(&format!(
                "{name}{{backend=\"{}\"}} {:.6}\n",
                escape(r.backend.as_deref().unwrap_or("")),
                pick(r)
            ));
        }
    }
    let name = "switchyard_training_queue_seconds";
    family(
        out,
        name,
        "histogram",
        "Seconds from submission to all ranks running, of finished training jobs.",
    );
    for r in &report.rows {
        let backend = escape(r.backend.as_deref().unwrap_or(""));
        let buckets = report
            .queue_histogram
            .get(r.backend.as_deref().unwrap_or(""));
        for (le, n) in buckets.into_iter().flatten() {
            out.push_str(&format!(
                "{name}_bucket{{backend=\"{backend}\",le=\"{le}\"}} {n}\n"
            ));
        }
        out.push_str(&format!(
            "{name}_sum{{backend=\"{backend}\"}} {:.3}\n{name}_count{{backend=\"{backend}\"}} {}\n",
            r.queue_seconds_sum, r.started
        ));
    }
}
