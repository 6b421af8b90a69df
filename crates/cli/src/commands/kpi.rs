//! `switchyard kpi`: the KPIs of finished training jobs as a table, JSON or
//! CSV, added up by the same code as the server's `/kpis`.

use anyhow::{anyhow, Result};
use switchyard_runner::kpi::{self, GroupBy, KpiRow};
use switchyard_store::JobStore;

use crate::cli::{KpiArgs, KpiFormat};

pub async fn kpi(store: &dyn JobStore, args: &KpiArgs) -> Result<i32> {
    // The same reading as the server's `/kpis`; an option is named as typed.
    let report = kpi::read(
        store,
        args.from.as_deref(),
        args.to.as_deref(),
        &args.group_by,
    )
    .await
    .map_err(|e| match e {
        switchyard_runner::RunnerError::Refused(m) => {
            anyhow!("--{}", m.replacen("group_by", "group-by", 1))
        }
        other => other.into(),
    })?;
    let group_by = &report.group_by;
    match args.output {
        KpiFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        KpiFormat::Csv => print!("{}", kpi::to_csv(&report)),
        KpiFormat::Text => print!("{}", table(&report.rows, &report.totals, group_by)),
    }
    Ok(0)
}

/// One line per group and a total: jobs, success, queue, hours, cost.
fn table(rows: &[KpiRow], totals: &KpiRow, group_by: &[GroupBy]) -> String {
    let keys = |r: &KpiRow| -> String {
        let each: Vec<&str> = group_by.iter().map(|g| r.key(*g).unwrap_or("")).collect();
        each.join(" ")
    };
    let head: Vec<String> = group_by.iter().map(|g| g.as_str().to_uppercase()).collect();
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
