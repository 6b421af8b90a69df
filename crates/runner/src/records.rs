//! A job's record as users see it: its JSON documents and its rank logs.

use std::path::PathBuf;

use serde_json::{json, Value};
use switchyard_store::JobRecord;
use switchyard_training::TrainingJob;

use crate::RunnerError;

/// One rank's log file of a job.
pub struct RankLog {
    pub rank: u32,
    pub host: String,
    pub path: PathBuf,
}

/// The per-rank log files in a job's log folder (`<host>-rank-<r>.log`), by
/// rank; only `rank` when given (an error names the missing rank).
pub fn rank_logs(job: &JobRecord, rank: Option<u32>) -> Result<Vec<RankLog>, RunnerError> {
    let dir = job
        .logs_dir
        .clone()
        .ok_or_else(|| RunnerError::Refused(format!("job {} has no log folder", job.id)))?;
    let mut files = Vec::new();
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some((host, rank)) = switchyard_training::slots::parse_rank_log(&name) {
            files.push(RankLog {
                rank,
                host,
                path: e.path(),
            });
        }
    }
    files.sort_by(|a, b| (a.rank, &a.host).cmp(&(b.rank, &b.host)));
    if let Some(r) = rank {
        files.retain(|f| f.rank == r);
        if files.is_empty() {
            return Err(RunnerError::Refused(format!(
                "job {} has no log for rank {r}",
                job.id
            )));
        }
    }
    Ok(files)
}

/// The JSON document of a job, as `job run --output json` and the API show it.
pub fn job_json(j: &JobRecord) -> Value {
    let duration = match (j.started_at, j.finished_at) {
        (Some(a), Some(b)) => Some((b - a).num_milliseconds() as f64 / 1000.0),
        _ => None,
    };
    json!({
        "job_id": j.id,
        "name": j.name,
        "backend": j.backend,
        "state": j.state,
        "restarts": j.restarts,
        "model": j.model,
        "metrics": j.metrics.clone().unwrap_or_else(|| json!({})),
        "failure_reason": j.failure_reason,
        "logs": j.logs_dir,
        "placement": j.placement,
        "kpi": crate::kpi::kpi_of(j),
        "created_at": j.created_at,
        "started_at": j.started_at,
        "finished_at": j.finished_at,
        "duration_seconds": duration,
    })
}

/// [`job_json`] plus the submitted spec and the job's events (what `job get` shows).
pub fn job_detail_json(j: &JobRecord, events: &[switchyard_store::JobEventRecord]) -> Value {
    let mut v = job_json(j);
    v["spec"] = j.spec.clone();
    v["events"] = events
        .iter()
        .map(|e| json!({"state": e.state, "message": e.message, "at": e.at}))
        .collect::<Vec<_>>()
        .into();
    v
}

/// The line that introduces a job when it starts: its name, id, gang and backend.
pub fn headline(job: &TrainingJob, id: &str) -> String {
    format!(
        "Job {} ({id}): {} × {} on {}",
        job.name,
        job.spec.nodes,
        job.spec.procs_per_node,
        job.spec.backend.as_str()
    )
}
