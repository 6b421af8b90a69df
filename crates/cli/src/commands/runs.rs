//! `switchyard runs list | get | cancel`.

use std::time::Duration;

use anyhow::{bail, Result};
use switchyard_engine::{Engine, OrphanCancel};
use switchyard_store::{Lease, RunStore, State};

use crate::cli::OutputFormat;
use crate::report;

pub async fn list(store: &dyn RunStore, limit: u32, output: OutputFormat) -> Result<i32> {
    let runs = store.list_runs(limit).await?;
    if output == OutputFormat::Json {
        let v: Vec<_> = runs
            .iter()
            .map(|r| report::run_json(r, &[], None))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"runs": v}))?
        );
        return Ok(0);
    }
    println!(
        "{:<36}  {:<10}  {:<24}  {:<20}  NAME",
        "RUN ID", "STATE", "PIPELINE", "CREATED"
    );
    for r in runs {
        let stale = matches!(r.state, State::Running | State::Canceling)
            && !r.lease.as_ref().is_some_and(Lease::held);
        let state = if stale {
            format!("{}*", r.state)
        } else {
            r.state.to_string()
        };
        println!(
            "{:<36}  {:<10}  {:<24}  {:<20}  {}",
            r.id,
            state,
            r.pipeline_name,
            r.created_at.format("%Y-%m-%d %H:%M:%S"),
            r.display_name
        );
    }
    Ok(0)
}

pub async fn get(store: &dyn RunStore, id: &str, output: OutputFormat) -> Result<i32> {
    let run = store.get_run(id).await?;
    let tasks = store.list_tasks(&run.id).await?;
    let history = store.transitions(&run.id).await?;
    if output == OutputFormat::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report::run_json(&run, &tasks, Some(&history)))?
        );
    } else {
        print!("{}", report::run_text(&run, &tasks, &history));
        if matches!(run.state, State::Running | State::Canceling)
            && !run.lease.as_ref().is_some_and(Lease::held)
        {
            println!("  note: no process is executing this run any more; `switchyard runs resume {}` finishes it", run.id);
        }
    }
    Ok(0)
}

pub async fn cancel(engine: &Engine, id: &str) -> Result<i32> {
    let store = engine.store();
    let run = store.get_run(id).await?;
    if run.state.is_final() {
        bail!("run {} is already {}; nothing to cancel", run.id, run.state);
    }
    // Nobody executes it: stop what its steps left running and record it
    // canceled here. Otherwise ask the process that executes it.
    if let OrphanCancel::Canceled(stopped) = engine.cancel_orphan(&run.id).await? {
        for what in &stopped {
            eprintln!("{what}");
        }
        eprintln!("run {} canceled", run.id);
        return Ok(0);
    }
    store
        .request_cancel(switchyard_store::Kind::Run, &run.id)
        .await?;
    eprintln!("cancel requested; waiting for run {} to stop…", run.id);
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = store.get_run(&run.id).await?;
        if now.state.is_final() {
            eprintln!("run {} {}", now.id, now.state);
            return Ok(0);
        }
    }
    bail!(
        "run {} did not stop within 60s; its process is {}",
        run.id,
        run.lease
            .as_ref()
            .map(|l| format!("{} on {}", l.pid, l.host))
            .unwrap_or_else(|| "unknown".into())
    )
}
