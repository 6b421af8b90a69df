//! `switchyard kpi`: the KPIs of finished training jobs as a table, JSON or
//! CSV, added up by the same code as the server's `/kpis`.

use anyhow::{anyhow, Result};
use switchyard_runner::kpi::{self, GroupBy, KpiRow};
use switchyard_store::JobStore;

use crate::cli::{KpiArgs, KpiFormat};

/// How many of the newest jobs are read at most (as the server does).
const KPI_SCAN: u32 = 100_000;

pub async fn kpi(store: &dyn JobStore, args: &KpiArgs) -> Result<i32> {
    let time = |field: &str, v: &Option<String>| {
        v.as_deref()
            .map(|t| kpi::parse_time(field, t))
            .transpose()
            .map_err(|e| anyhow!("--{e}"))
    };
    let (from, to) = (time("from", &args.from)?, time("to", &args.to)?);
    let group_by =
        GroupBy::parse_list(&args.group_by).map_err(|e| anyhow!("--{}", e.replace('_', "-")))?;
    let records = store.list_jobs(KPI_SCAN).await?;
    let report = kpi::report(&records, from, to, &group_by);
    match args.output {
        KpiFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        KpiFormat::Csv => print!("{}", kpi::to_csv(&report)),
        KpiFormat::Text => print!("{}", table(&report.rows, &report.totals, &group_by)),
    }
    Ok(0)
}

/// One line per group and a total: jobs, success, queue, hours, cost.
fn table(rows: &[KpiRow], totals: &KpiRow, group_by: &[GroupBy]) -> String {
    let keys = |r: &KpiRow| -> String {
        group_by
            .iter()
            .map(|g| match g {
                GroupBy::Backend => r.backend.clone(),
                GroupBy::Day => r.day.clone(),
                GroupBy::Name => r.name.clone(),
            })
            .map(|v| v.unwrap_or_default())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let head: Vec<&str> = group_by
        .iter()
        .map(|g| match g {
            GroupBy::Backend => "BACKEND",
            GroupBy::Day => "DAY",
            GroupBy::Name => "NAME",
        })
        .collect();
    let line = |key: &str, r: &KpiRow| {
        let cost = if r.jobs_not_costed == r.jobs {
            "not counted".to_string()
        } else {
            format!("${:.2}", r.est_cost_usd)
        };
        format!(
            "{key:<28} {:>5} {:>8} {:>9} {:>9} {:>9} {:>12} {:>10}\n",
            r.jobs,
            format!("{:.0}%", r.success_rate * 100.0),
            r.queue_seconds_p50
                .map_or("-".into(), |q| format!("{q:.0} s")),
            format!("{:.2}", r.instance_hours),
            format!("{:.2}", r.gpu_hours),
            cost,
            format!("${:.2}", r.spot_savings_usd),
        )
    };
    let mut out = format!(
        "{:<28} {:>5} {:>8} {:>9} {:>9} {:>9} {:>12} {:>10}\n",
        head.join(" "),
        "JOBS",
        "SUCCESS",
        "QUEUE p50",
        "NODE-H",
        "GPU-H",
        "EST. COST",
        "SPOT SAVED"
    );
    for r in rows {
        out.push_str(&line(&keys(r), r));
    }
    out.push_str(&line("total", totals));
    out
}
