//! What a job took and cost, the numbers the KPIs add up: how long it waited
//! and ran, the instance-, CPU- and GPU-seconds it held, what that cost by
//! the backend's rates, and what spot saved. Computed once when a job ends
//! and stored with it, so a later change of prices does not rewrite history.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::TrainingJob;

/// What an hour of a job holds and costs on a backend, as the backend
/// prices it (SageMaker's instance prices, a configured cost per node-hour).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rates {
    /// An hour of the whole job; `None`: not counted there.
    pub hourly_usd: Option<f64>,
    /// The same hour without spot's discount (equal when not spot).
    pub on_demand_hourly_usd: Option<f64>,
    /// What each node holds.
    pub cpus_per_node: f64,
    pub gpus_per_node: u32,
    /// The instance type it runs on, where there is one (SageMaker).
    pub instance_type: Option<String>,
}

impl Rates {
    /// The job's own requests per node, its cost not counted (`hourly`
    /// per node when a cost per node-hour is configured).
    pub fn requested(job: &TrainingJob, per_node_hour: Option<f64>) -> Self {
        let hourly = per_node_hour.map(|c| c * f64::from(job.spec.nodes));
        Rates {
            hourly_usd: hourly,
            on_demand_hourly_usd: hourly,
            cpus_per_node: job.spec.resources.cpu,
            gpus_per_node: job.spec.resources.gpu,
            instance_type: None,
        }
    }
}

/// What the job runs, as one digest: the files it ships from `sourceDir`
/// (paths and contents), its entry point, command and image. Runs of the
/// same code under another name share their history (placement's
/// estimates); `None` when `sourceDir` cannot be read.
pub fn code_digest(job: &TrainingJob) -> Option<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let s = &job.spec;
    for part in [s.image.as_deref(), s.entry_point.as_deref()] {
        h.update(part.unwrap_or("").as_bytes());
        h.update([0]);
    }
    for arg in s.command.iter().flatten() {
        h.update(arg.as_bytes());
        h.update([0]);
    }
    if let Some(dir) = &s.source_dir {
        for f in crate::code_files(job, std::path::Path::new(dir)).ok()? {
            h.update(f.rel.as_bytes());
            h.update([0]);
            h.update(std::fs::read(&f.path).ok()?);
            h.update([0]);
        }
    }
    Some(hex::encode(h.finalize()))
}

/// One finished job's KPIs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobKpi {
    pub backend: String,
    /// [`code_digest`] of what it ran, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_digest: Option<String>,
    /// How it ended: `SUCCEEDED`, `FAILED`, `CANCELED`.
    pub outcome: String,
    /// From submission to all ranks running (`None`: it never started).
    pub queue_seconds: Option<f64>,
    /// From all ranks running to the end.
    pub run_seconds: Option<f64>,
    pub nodes: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// Nodes (instances, pods, local hosts) × run seconds.
    pub instance_seconds: f64,
    pub cpu_seconds: f64,
    pub gpu_seconds: f64,
    /// By the backend's rates; `None`: not counted there.
    pub est_cost_usd: Option<f64>,
    /// What on-demand would have cost more (spot), else 0 where counted.
    pub spot_savings_usd: Option<f64>,
}

/// The KPIs of a job that ran `nodes` nodes from `started` to `finished`
/// after being submitted at `created`.
pub fn job_kpi(
    backend: &str,
    outcome: &str,
    nodes: u32,
    rates: &Rates,
    created: DateTime<Utc>,
    started: Option<DateTime<Utc>>,
    finished: Option<DateTime<Utc>>,
) -> JobKpi {
    let secs =
        |a: DateTime<Utc>, b: DateTime<Utc>| ((b - a).num_milliseconds() as f64 / 1000.0).max(0.0);
    let queue = started.map(|s| secs(created, s));
    let run = match (started, finished) {
        (Some(s), Some(f)) => Some(secs(s, f)),
        _ => None,
    };
    let ran = run.unwrap_or(0.0);
    let instance_seconds = ran * f64::from(nodes);
    let hours = ran / 3600.0;
    let cost = rates.hourly_usd.map(|h| h * hours);
    let savings = match (rates.on_demand_hourly_usd, cost) {
        (Some(full), Some(c)) => Some((full * hours - c).max(0.0)),
        _ => None,
    };
    JobKpi {
        backend: backend.to_string(),
        code_digest: None,
        outcome: outcome.to_string(),
        queue_seconds: queue,
        run_seconds: run,
        nodes,
        instance_type: rates.instance_type.clone(),
        instance_seconds,
        cpu_seconds: instance_seconds * rates.cpus_per_node,
        gpu_seconds: instance_seconds * f64::from(rates.gpus_per_node),
        est_cost_usd: cost,
        spot_savings_usd: savings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn a_spot_job_costs_its_hours_at_the_discounted_rate_and_saves_the_rest() {
        let created = Utc::now();
        let started = created + Duration::seconds(90);
        let finished = started + Duration::seconds(1800);
        let rates = Rates {
            hourly_usd: Some(0.3 * 2.0),
            on_demand_hourly_usd: Some(1.0 * 2.0),
            cpus_per_node: 4.0,
            gpus_per_node: 1,
            instance_type: Some("ml.g5.xlarge".into()),
        };
        let k = job_kpi(
            "sagemaker",
            "SUCCEEDED",
            2,
            &rates,
            created,
            Some(started),
            Some(finished),
        );
        assert_eq!(k.queue_seconds, Some(90.0));
        assert_eq!(k.run_seconds, Some(1800.0));
        assert_eq!(k.instance_seconds, 3600.0);
        assert_eq!(k.cpu_seconds, 14400.0);
        assert_eq!(k.gpu_seconds, 3600.0);
        assert!((k.est_cost_usd.unwrap_or_default() - 0.3).abs() < 1e-9);
        assert!((k.spot_savings_usd.unwrap_or_default() - 0.7).abs() < 1e-9);
        // Never started: no queue time, nothing held, nothing spent.
        let k = job_kpi(
            "kubernetes",
            "CANCELED",
            2,
            &Rates::default(),
            created,
            None,
            Some(finished),
        );
        assert_eq!(
            (k.queue_seconds, k.run_seconds, k.instance_seconds),
            (None, None, 0.0)
        );
        assert_eq!(k.est_cost_usd, None);
    }
}
