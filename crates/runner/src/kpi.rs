//! The KPIs of training: finished jobs' stored numbers ([`JobKpi`]) added up
//! per backend, day or name over a time range, for `GET
//! /apis/switchyard/v1/kpis` (JSON or CSV for QuickSight and Athena),
//! `/metrics`, `switchyard kpi` and the dashboard's KPI page. One function
//! adds them up for all four, so they always agree.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use switchyard_store::{JobRecord, JobStore};
use switchyard_training::kpi::{job_kpi, JobKpi, Rates};

use crate::RunnerError;

/// How many of the newest jobs the KPIs read at most.
pub const SCAN: u32 = 100_000;

/// What rows are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    Backend,
    /// The UTC day the job was submitted (`2026-12-07`).
    Day,
    Name,
}

impl GroupBy {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Backend => "backend",
            GroupBy::Day => "day",
            GroupBy::Name => "name",
        }
    }

    /// `backend`, `day`, `name`, or several joined by commas; empty is
    /// `backend`.
    pub fn parse_list(text: &str) -> Result<Vec<GroupBy>, String> {
        let mut out = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let g = match part {
                "backend" => GroupBy::Backend,
                "day" => GroupBy::Day,
                "name" => GroupBy::Name,
                other => {
                    return Err(format!(
                        "group_by: '{other}' is not a grouping; use backend, day or name (several joined by commas)"
                    ))
                }
            };
            if !out.contains(&g) {
                out.push(g);
            }
        }
        if out.is_empty() {
            out.push(GroupBy::Backend);
        }
        Ok(out)
    }
}

/// Upper bounds (seconds) of the queue-time histogram's buckets.
pub const QUEUE_BUCKETS: [f64; 8] = [5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 3600.0, f64::INFINITY];

/// One group's numbers.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct KpiRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub jobs: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub canceled: u64,
    /// Succeeded of those that ended.
    pub success_rate: f64,
    /// How many started, and their queue seconds added up.
    pub started: u64,
    pub queue_seconds_sum: f64,
    /// Of the jobs that started.
    pub queue_seconds_mean: Option<f64>,
    pub queue_seconds_p50: Option<f64>,
    pub queue_seconds_p90: Option<f64>,
    pub run_seconds: f64,
    pub instance_hours: f64,
    pub cpu_hours: f64,
    pub gpu_hours: f64,
    /// Of the jobs whose cost is counted (`jobs_not_costed` are not).
    pub est_cost_usd: f64,
    pub spot_savings_usd: f64,
    pub jobs_not_costed: u64,
}

impl KpiRow {
    /// The row's value of the grouping `g` (`None` when not grouped by it).
    pub fn key(&self, g: GroupBy) -> Option<&str> {
        match g {
            GroupBy::Backend => self.backend.as_deref(),
            GroupBy::Day => self.day.as_deref(),
            GroupBy::Name => self.name.as_deref(),
        }
    }
}

/// The numbers of every finished job in `[from, to)`, grouped.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KpiReport {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub group_by: Vec<GroupBy>,
    pub rows: Vec<KpiRow>,
    /// How many jobs waited up to each bound (`le`, seconds; the last is
    /// `+Inf`), per backend: the queue-time distribution.
    pub queue_histogram: BTreeMap<String, Vec<(String, u64)>>,
    pub totals: KpiRow,
}

/// A finished job's KPIs: as stored when it ended, else (a job that ended
/// before KPIs were stored, or was stopped by another process) from its
/// record, its requests held and its cost not counted.
pub fn kpi_of(rec: &JobRecord) -> Option<JobKpi> {
    if !rec.state.is_final() {
        return None;
    }
    if let Some(k) = rec
        .kpi
        .as_ref()
        .and_then(|v| serde_json::from_value::<JobKpi>(v.clone()).ok())
    {
        return Some(k);
    }
    let spec = &rec.spec["spec"];
    let nodes = spec["nodes"].as_u64().unwrap_or(1) as u32;
    let rates = Rates {
        cpus_per_node: spec["resources"]["cpu"].as_f64().unwrap_or(1.0),
        gpus_per_node: spec["resources"]["gpu"].as_u64().unwrap_or(0) as u32,
        ..Rates::default()
    };
    Some(job_kpi(
        &rec.backend,
        rec.state.as_str(),
        nodes,
        &rates,
        rec.created_at,
        rec.started_at,
        rec.finished_at,
    ))
}

/// The `p` quantile of `sorted`, interpolated between the two nearest
/// values (the median of an even count is the mean of the middle two).
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let at = last as f64 * p;
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    Some(sorted[lo] + (sorted[hi.min(last)] - sorted[lo]) * (at - lo as f64))
}

/// Adds `kpis` up into one row.
fn add_up(kpis: &[&JobKpi]) -> KpiRow {
    let mut row = KpiRow {
        jobs: kpis.len() as u64,
        ..KpiRow::default()
    };
    let mut queue: Vec<f64> = Vec::new();
    for k in kpis {
        match k.outcome.as_str() {
            "SUCCEEDED" => row.succeeded += 1,
            "FAILED" => row.failed += 1,
            _ => row.canceled += 1,
        }
        queue.extend(k.queue_seconds);
        row.run_seconds += k.run_seconds.unwrap_or(0.0);
        row.instance_hours += k.instance_seconds / 3600.0;
        row.cpu_hours += k.cpu_seconds / 3600.0;
        row.gpu_hours += k.gpu_seconds / 3600.0;
        match k.est_cost_usd {
            Some(c) => row.est_cost_usd += c,
            None => row.jobs_not_costed += 1,
        }
        row.spot_savings_usd += k.spot_savings_usd.unwrap_or(0.0);
    }
    let ended = row.succeeded + row.failed + row.canceled;
    row.success_rate = if ended == 0 {
        0.0
    } else {
        row.succeeded as f64 / ended as f64
    };
    queue.sort_by(f64::total_cmp);
    row.started = queue.len() as u64;
    row.queue_seconds_sum = queue.iter().sum();
    if !queue.is_empty() {
        row.queue_seconds_mean = Some(queue.iter().sum::<f64>() / queue.len() as f64);
    }
    row.queue_seconds_p50 = percentile(&queue, 0.5);
    row.queue_seconds_p90 = percentile(&queue, 0.9);
    row
}

fn bound(le: f64) -> String {
    if le.is_infinite() {
        "+Inf".into()
    } else {
        format!("{le}")
    }
}

/// The KPIs of the store's finished jobs for a request's `from`, `to` and
/// `group_by` as written (the API's query, the CLI's options): a bad one is
/// refused naming it.
pub async fn read(
    store: &dyn JobStore,
    from: Option<&str>,
    to: Option<&str>,
    group_by: &str,
) -> Result<KpiReport, RunnerError> {
    let time = |field: &str, v: Option<&str>| {
        v.map(|t| parse_time(field, t))
            .transpose()
            .map_err(RunnerError::Refused)
    };
    let (from, to) = (time("from", from)?, time("to", to)?);
    let group_by = GroupBy::parse_list(group_by).map_err(RunnerError::Refused)?;
    let records = store.list_jobs(SCAN).await?;
    Ok(report(&records, from, to, &group_by))
}

/// The KPIs of the finished jobs among `records` submitted in `[from, to)`.
pub fn report(
    records: &[JobRecord],
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    group_by: &[GroupBy],
) -> KpiReport {
    let chosen: Vec<(&JobRecord, JobKpi)> = records
        .iter()
        .filter(|r| from.is_none_or(|f| r.created_at >= f) && to.is_none_or(|t| r.created_at < t))
        .filter_map(|r| Some((r, kpi_of(r)?)))
        .collect();
    let mut groups: BTreeMap<(String, String, String), Vec<&JobKpi>> = BTreeMap::new();
    for (r, k) in &chosen {
        let key = (
            if group_by.contains(&GroupBy::Backend) {
                k.backend.clone()
            } else {
                String::new()
            },
            if group_by.contains(&GroupBy::Day) {
                r.created_at.format("%Y-%m-%d").to_string()
            } else {
                String::new()
            },
            if group_by.contains(&GroupBy::Name) {
                r.name.clone()
            } else {
                String::new()
            },
        );
        groups.entry(key).or_default().push(k);
    }
    let rows = groups
        .into_iter()
        .map(|((backend, day, name), kpis)| KpiRow {
            backend: group_by.contains(&GroupBy::Backend).then_some(backend),
            day: group_by.contains(&GroupBy::Day).then_some(day),
            name: group_by.contains(&GroupBy::Name).then_some(name),
            ..add_up(&kpis)
        })
        .collect();
    let mut queue_histogram: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    for (_, k) in &chosen {
        let counts = queue_histogram
            .entry(k.backend.clone())
            .or_insert_with(|| QUEUE_BUCKETS.iter().map(|b| (bound(*b), 0)).collect());
        if let Some(q) = k.queue_seconds {
            // Cumulative, as Prometheus' buckets are.
            for (i, b) in QUEUE_BUCKETS.iter().enumerate() {
                if q <= *b {
                    counts[i].1 += 1;
                }
            }
        }
    }
    let all: Vec<&JobKpi> = chosen.iter().map(|(_, k)| k).collect();
    KpiReport {
        from,
        to,
        group_by: group_by.to_vec(),
        rows,
        queue_histogram,
        totals: add_up(&all),
    }
}

/// The rows as CSV (a header line, then one line per group), for
/// spreadsheets, QuickSight and Athena.
pub fn to_csv(report: &KpiReport) -> String {
    let mut head: Vec<&str> = report.group_by.iter().map(|g| g.as_str()).collect();
    head.extend([
        "jobs",
        "succeeded",
        "failed",
        "canceled",
        "success_rate",
        "queue_seconds_mean",
        "queue_seconds_p50",
        "queue_seconds_p90",
        "run_seconds",
        "instance_hours",
        "cpu_hours",
        "gpu_hours",
        "est_cost_usd",
        "spot_savings_usd",
        "jobs_not_costed",
    ]);
    let mut out = head.join(",");
    out.push('\n');
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
    for r in &report.rows {
        let mut cells: Vec<String> = Vec::new();
        for g in &report.group_by {
            cells.push(csv_cell(r.key(*g).unwrap_or("")));
        }
        cells.extend([
            r.jobs.to_string(),
            r.succeeded.to_string(),
            r.failed.to_string(),
            r.canceled.to_string(),
            format!("{:.4}", r.success_rate),
            opt(r.queue_seconds_mean),
            opt(r.queue_seconds_p50),
            opt(r.queue_seconds_p90),
            format!("{:.3}", r.run_seconds),
            format!("{:.6}", r.instance_hours),
            format!("{:.6}", r.cpu_hours),
            format!("{:.6}", r.gpu_hours),
            format!("{:.6}", r.est_cost_usd),
            format!("{:.6}", r.spot_savings_usd),
            r.jobs_not_costed.to_string(),
        ]);
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// A CSV cell: quoted when it holds a comma, quote or line break.
fn csv_cell(v: &str) -> String {
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}

/// `from`/`to` as given to the API and the CLI: RFC 3339, or a day
/// (`2026-12-07`, its midnight UTC).
pub fn parse_time(field: &str, text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| {
            format!("{field}: '{text}' is not a time; give RFC 3339 (2026-12-07T10:00:00Z) or a day (2026-12-07)")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_store::State;

    fn rec(
        name: &str,
        backend: &str,
        state: State,
        queued: i64,
        ran: i64,
        cost: Option<f64>,
    ) -> JobRecord {
        let created = "2026-12-07T10:00:00Z"
            .parse::<DateTime<Utc>>()
            .unwrap_or_default();
        let mut r = crate::test_records::finished(name, backend, state, created, queued, ran);
        let rates = Rates {
            hourly_usd: cost,
            on_demand_hourly_usd: cost.map(|c| c * 2.0),
            cpus_per_node: 2.0,
            gpus_per_node: 1,
            instance_type: None,
        };
        let k = job_kpi(
            backend,
            state.as_str(),
            2,
            &rates,
            created,
            r.started_at,
            r.finished_at,
        );
        r.kpi = serde_json::to_value(k).ok();
        r
    }

    #[test]
    fn rows_add_up_per_backend_and_the_csv_says_the_same() {
        let records = vec![
            rec("a", "sagemaker", State::Succeeded, 60, 1800, Some(2.0)),
            rec("a", "sagemaker", State::Failed, 120, 1800, Some(2.0)),
            rec("b", "kubernetes", State::Succeeded, 10, 3600, None),
        ];
        let r = report(&records, None, None, &[GroupBy::Backend]);
        assert_eq!(r.rows.len(), 2);
        let k8s = &r.rows[0];
        assert_eq!(
            (k8s.backend.as_deref(), k8s.jobs, k8s.jobs_not_costed),
            (Some("kubernetes"), 1, 1)
        );
        assert_eq!(
            (k8s.instance_hours, k8s.cpu_hours, k8s.gpu_hours),
            (2.0, 4.0, 2.0)
        );
        let sm = &r.rows[1];
        assert_eq!(sm.success_rate, 0.5);
        assert_eq!(sm.est_cost_usd, 2.0);
        assert_eq!(sm.spot_savings_usd, 2.0);
        assert_eq!(
            (sm.queue_seconds_p50, sm.queue_seconds_p90),
            (Some(90.0), Some(114.0))
        );
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 0.5), Some(2.0));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(r.totals.jobs, 3);
        // Cumulative buckets: ≤60 holds the 60 s one, ≤300 both.
        let h = &r.queue_histogram["sagemaker"];
        assert_eq!(h[3], ("60".to_string(), 1));
        assert_eq!(h[4], ("300".to_string(), 2));
        assert_eq!(h[7], ("+Inf".to_string(), 2));
        let csv = to_csv(&r);
        let lines: Vec<&str> = csv.lines().collect();
        assert!(lines[0].starts_with("backend,jobs,succeeded,failed,canceled,success_rate,"));
        assert!(
            lines[2].starts_with("sagemaker,2,1,1,0,0.5000,90.000,90.000,114.000,3600.000,"),
            "{csv}"
        );
        // Outside the range: nothing.
        let later = parse_time("from", "2026-12-08").ok();
        assert_eq!(
            report(&records, later, None, &[GroupBy::Day]).totals.jobs,
            0
        );
    }

    #[test]
    fn bad_groupings_and_times_are_refused_naming_the_field() {
        assert_eq!(GroupBy::parse_list("").ok(), Some(vec![GroupBy::Backend]));
        assert_eq!(
            GroupBy::parse_list("backend, day").ok(),
            Some(vec![GroupBy::Backend, GroupBy::Day])
        );
        assert!(GroupBy::parse_list("week").is_err_and(|e| e.starts_with("group_by: 'week'")));
        assert!(parse_time("to", "yesterday").is_err_and(|e| e.starts_with("to: 'yesterday'")));
        assert!(parse_time("to", "2026-12-07T10:00:00+01:00").is_ok());
    }
}
