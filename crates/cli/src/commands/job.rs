//! `switchyard job run | list | get | logs | cancel`, and the entry point of the
//! KFP training-job component.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use switchyard_runner::Notice;
use switchyard_store::{JobRecord, JobStore, Lease, State};
use switchyard_training::TrainingJob;
use tokio_util::sync::CancellationToken;

use crate::cli::{DisplayArgs, OutputFormat};
use crate::config::Paths;

pub use switchyard_runner::job_json;

/// Loads and validates a TrainingJob file.
pub fn load_file(file: &Path, sets: &[String], backend: Option<&str>) -> Result<TrainingJob> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read TrainingJob file {}", file.display()))?;
    let base = file
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."))
        .canonicalize()
        .with_context(|| format!("cannot resolve the folder of {}", file.display()))?;
    switchyard_training::load(&text, &base, sets, backend)
        .with_context(|| format!("{}", file.display()))
}

/// Follows a recorded job to its end, printing its progress.
pub async fn follow(
    runner: &switchyard_runner::JobRunner,
    prepared: switchyard_runner::Prepared,
    job: &TrainingJob,
    display: &DisplayArgs,
) -> Result<JobRecord> {
    if display.output != OutputFormat::Json {
        eprintln!("{}", switchyard_runner::headline(job, &prepared.record.id));
    }
    let cancel = CancellationToken::new();
    let interrupted = crate::commands::run::cancel_on_signal(cancel.clone());
    let show_logs = !display.quiet;
    let notice = Arc::new(move |n: Notice<'_>| match n {
        Notice::Log { host, rank, line } => {
            if show_logs {
                eprintln!("[{host}/rank {rank}] {line}");
            }
        }
        Notice::Status(m) => eprintln!("{m}"),
    });
    let mut rec = runner.execute(prepared, job, cancel, notice).await?;
    if interrupted.load(std::sync::atomic::Ordering::SeqCst) && rec.state == State::Canceled {
        rec.failure_reason = Some("interrupted".into());
    }
    Ok(rec)
}

fn report(rec: &JobRecord, output: OutputFormat) -> Result<i32> {
    if output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&job_json(rec))?);
    } else {
        let took = match (rec.started_at, rec.finished_at) {
            (Some(a), Some(b)) => format!(" in {:.1}s", (b - a).num_milliseconds() as f64 / 1000.0),
            _ => String::new(),
        };
        eprintln!(
            "Job {} {}{took} (restarts: {})",
            rec.name, rec.state, rec.restarts
        );
        if let Some(r) = &rec.failure_reason {
            eprintln!("failure reason: {r}");
        }
        if let Some(m) = &rec.model {
            println!("model = {m}");
        }
        if let Some(Value::Object(m)) = &rec.metrics {
            for (k, v) in m {
                println!("{k} = {v}");
            }
        }
    }
    Ok(crate::report::state_exit_code(rec.state))
}

pub async fn run(
    paths: &Paths,
    store: Arc<dyn JobStore>,
    file: &Path,
    backend: Option<&str>,
    sets: &[String],
    display: &DisplayArgs,
) -> Result<i32> {
    let job = load_file(file, sets, backend)?;
    let runner = paths.job_runner(store)?;
    let (job, decision) = runner.place(&job).await?;
    if let (Some(d), false) = (&decision, display.output == OutputFormat::Json) {
        eprint!("{}", d.decision.explain());
    }
    let mut prepared = runner.prepare(&job).await?;
    if let Some(d) = &decision {
        runner.record_decision(&mut prepared, d).await;
    }
    let rec = follow(&runner, prepared, &job, display).await?;
    report(&rec, display.output)
}

/// `job place`: where a `backend: auto` job would go now and why, without
/// submitting anything; exit 2 when no candidate can run it.
pub async fn place(
    paths: &Paths,
    store: Arc<dyn JobStore>,
    file: &Path,
    sets: &[String],
    output: OutputFormat,
) -> Result<i32> {
    let job = load_file(file, sets, Some("auto"))?;
    let decision = paths.job_runner(store)?.decide(&job).await;
    if output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&decision)?);
    } else {
        print!("{}", decision.explain());
    }
    Ok(if decision.chosen.is_some() { 0 } else { 2 })
}

pub async fn list(store: &dyn JobStore, limit: u32, output: OutputFormat) -> Result<i32> {
    let jobs = store.list_jobs(limit).await?;
    if output == OutputFormat::Json {
        let v: Vec<Value> = jobs.iter().map(job_json).collect();
        println!("{}", serde_json::to_string_pretty(&json!({ "jobs": v }))?);
        return Ok(0);
    }
    println!(
        "{:<36}  {:<24}  {:<10}  {:<10}  {:<8}  CREATED",
        "JOB ID", "NAME", "BACKEND", "STATE", "RESTARTS"
    );
    for j in jobs {
        println!(
            "{:<36}  {:<24}  {:<10}  {:<10}  {:<8}  {}",
            j.id,
            j.name,
            j.backend,
            j.state.as_str(),
            j.restarts,
            j.created_at.format("%Y-%m-%d %H:%M:%S")
        );
    }
    Ok(0)
}

pub async fn get(store: &dyn JobStore, id: &str, output: OutputFormat) -> Result<i32> {
    let j = store.get_job(id).await?;
    let events = store.job_events(&j.id).await?;
    if output == OutputFormat::Json {
        let v = switchyard_runner::job_detail_json(&j, &events);
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    println!(
        "Job {} ({})\n  backend:  {}\n  state:    {}\n  restarts: {}",
        j.name, j.id, j.backend, j.state, j.restarts
    );
    if let Some(r) = &j.failure_reason {
        println!("  failure:  {}", r.lines().next().unwrap_or(""));
    }
    if let Some(p) = j.placement.as_ref().filter(|p| p.get("chosen").is_some()) {
        println!(
            "  placed:   {} (objective {})",
            p["chosen"].as_str().unwrap_or("none"),
            p["objective"].as_str().unwrap_or("")
        );
        for c in p["candidates"].as_array().into_iter().flatten() {
            println!(
                "            {:<10} {}",
                c["backend"].as_str().unwrap_or(""),
                c["reason"].as_str().unwrap_or("")
            );
        }
        for (i, a) in p["attempts"].as_array().into_iter().flatten().enumerate() {
            println!(
                "  attempt {}: {:<10} {}",
                i + 1,
                a["backend"].as_str().unwrap_or(""),
                a["outcome"].as_str().unwrap_or("running")
            );
        }
    }
    if let Some(k) = switchyard_runner::kpi::kpi_of(&j) {
        let cost = k
            .est_cost_usd
            .map_or("cost not counted".to_string(), |c| format!("about ${c:.4}"));
        println!(
            "  kpi:      queued {}, ran {}, {:.4} node-hours, {:.4} GPU-hours, {cost}",
            k.queue_seconds.map_or("-".into(), |q| format!("{q:.1} s")),
            k.run_seconds.map_or("-".into(), |r| format!("{r:.1} s")),
            k.instance_seconds / 3600.0,
            k.gpu_seconds / 3600.0,
        );
    }
    if let Some(m) = &j.model {
        println!("  model:    {m}");
    }
    if let Some(m) = &j.metrics {
        println!("  metrics:  {m}");
    }
    println!("  events:");
    for e in events {
        println!(
            "    {} {:<10} {}",
            e.at.format("%H:%M:%S%.3f"),
            e.state.as_str(),
            e.message.unwrap_or_default()
        );
    }
    Ok(0)
}

pub async fn logs(store: &dyn JobStore, id: &str, rank: Option<u32>) -> Result<i32> {
    let j = store.get_job(id).await?;
    for f in switchyard_runner::rank_logs(&j, rank)? {
        let text = std::fs::read_to_string(&f.path)
            .with_context(|| format!("cannot read {}", f.path.display()))?;
        for line in text.lines() {
            if rank.is_some() {
                println!("{line}");
            } else {
                println!("[{}/rank {}] {line}", f.host, f.rank);
            }
        }
    }
    Ok(0)
}

pub async fn cancel(paths: &Paths, store: Arc<dyn JobStore>, id: &str) -> Result<i32> {
    let j = store.get_job(id).await?;
    if j.state.is_final() {
        bail!("job {} is already {}; nothing to cancel", j.id, j.state);
    }
    if switchyard_runner::orphaned(&j) {
        // No process follows it: stop it where it runs, from here.
        if let Some(done) = paths.job_runner(store.clone())?.cancel_orphan(&j).await? {
            eprintln!(
                "job {} {}: {}",
                done.id,
                done.state,
                done.failure_reason.unwrap_or_default()
            );
            return Ok(0);
        }
        // Another process adopted it meanwhile: ask that one.
    }
    store
        .request_cancel(switchyard_store::Kind::Job, &j.id)
        .await?;
    eprintln!("cancel requested; waiting for job {} to stop…", j.id);
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = store.get_job(&j.id).await?;
        if now.state.is_final() {
            eprintln!("job {} {}", now.id, now.state);
            return Ok(0);
        }
    }
    bail!("job {} did not stop within 60s", j.id)
}

/// `job resume`: adopts a job whose follower died and follows it to its end.
pub async fn resume(
    paths: &Paths,
    store: Arc<dyn JobStore>,
    id: &str,
    display: &DisplayArgs,
) -> Result<i32> {
    let j = store.get_job(id).await?;
    if j.state.is_final() {
        bail!("job {} is already {}; nothing to resume", j.id, j.state);
    }
    let runner = paths.job_runner(store)?;
    match runner.adopt(&j).await? {
        switchyard_runner::Adopted::Mine(prepared, job) => {
            let rec = follow(&runner, *prepared, &job, display).await?;
            report(&rec, display.output)
        }
        switchyard_runner::Adopted::NotMine(now) => match now.lease.filter(Lease::held) {
            Some(l) if !now.state.is_final() => bail!(
                "job {} is followed by process {} on {} (lease until {}); nothing to resume",
                now.id,
                l.pid,
                l.host,
                l.until
            ),
            _ => bail!("job {} is {} now; nothing to resume", now.id, now.state),
        },
    }
}
