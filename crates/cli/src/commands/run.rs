//! `switchyard run` and `switchyard runs resume`: execute with a live display.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use switchyard_engine::{Engine, PipelineRoot, RunOptions};
use switchyard_kfp_spec::parse_pipeline;
use switchyard_store::RunStore;
use tokio_util::sync::CancellationToken;

use crate::cli::{DisplayArgs, OutputFormat, RunArgs};
use crate::config::Paths;
use crate::progress::{self, Display};
use crate::report;

/// Parses `name=value` pairs; values stay text and are typed by the engine
/// against the pipeline's declared parameter types.
pub fn parse_params(raw: &[String]) -> Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for p in raw {
        let Some((k, v)) = p.split_once('=') else {
            bail!("invalid -p '{p}': expected NAME=VALUE");
        };
        let k = k.trim();
        if k.is_empty() {
            bail!("invalid -p '{p}': the parameter name is empty");
        }
        if out
            .insert(k.to_string(), Value::String(v.to_string()))
            .is_some()
        {
            bail!("parameter '{k}' is given twice with -p");
        }
    }
    Ok(out)
}

/// The run's pipeline root: `--pipeline-root`, else the one the pipeline was
/// compiled with (`dsl.pipeline(pipeline_root=...)`), else the data folder's
/// artifacts. With an `s3://` root, tasks still work in the local folder.
fn pipeline_root(
    args: &RunArgs,
    paths: &Paths,
    compiled: Option<&str>,
) -> Result<(PathBuf, Option<String>)> {
    let chosen = match (&args.pipeline_root, compiled) {
        (Some(root), _) => Some((root.to_string_lossy().into_owned(), "--pipeline-root")),
        (None, Some(root)) if !root.is_empty() => Some((
            root.to_string(),
            "the pipeline's defaultPipelineRoot (give --pipeline-root to choose another)",
        )),
        _ => None,
    };
    let (local, remote) = match chosen {
        None => (paths.artifacts.clone(), None),
        Some((text, source)) => PipelineRoot::parse(&text)
            .map_err(|e| anyhow::anyhow!("{source}: {e}"))?
            .into_parts(paths.artifacts.clone()),
    };
    std::fs::create_dir_all(&local)
        .with_context(|| format!("cannot create pipeline root {}", local.display()))?;
    let local = local
        .canonicalize()
        .with_context(|| format!("cannot resolve pipeline root {}", local.display()))?;
    Ok((local, remote))
}

pub async fn run(engine: &Engine, paths: &Paths, args: RunArgs) -> Result<i32> {
    let text = std::fs::read_to_string(&args.pipeline)
        .with_context(|| format!("cannot read pipeline file {}", args.pipeline.display()))?;
    let pipeline = parse_pipeline(&text).with_context(|| format!("{}", args.pipeline.display()))?;
    let params = parse_params(&args.params)?;
    let parallelism = args.parallelism.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    if parallelism == 0 {
        bail!("--parallelism must be at least 1");
    }
    let (pipeline_root, remote_root) =
        pipeline_root(&args, paths, pipeline.spec.default_pipeline_root.as_deref())?;
    let opts = RunOptions {
        service_account: None,
        parallelism,
        cache: !args.no_cache,
        pipeline_root,
        remote_root,
        display_name: args.name.clone(),
        ..Default::default()
    };
    let run = engine
        .create_run(&pipeline, &params, &opts)
        .await
        .with_context(|| format!("{}", args.pipeline.display()))?;
    execute(engine, &run.id, &args.display, false).await
}

pub async fn resume(engine: &Engine, id: &str, display: &DisplayArgs) -> Result<i32> {
    let run = engine.store().get_run(id).await?;
    if let Some(l) = run.lease.as_ref().filter(|l| l.held()) {
        bail!(
            "run {} is still being executed by process {} on {} (lease until {}); cancel it or wait for it",
            run.id,
            l.pid,
            l.host,
            l.until
        );
    }
    if run.state == switchyard_store::State::Succeeded {
        bail!(
            "run {} already succeeded; there is nothing to resume",
            run.id
        );
    }
    execute(engine, &run.id, display, true).await
}

/// Ctrl-C or SIGTERM cancels `cancel`; the flag tells whether that happened.
pub fn cancel_on_signal(cancel: CancellationToken) -> Arc<std::sync::atomic::AtomicBool> {
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = interrupted.clone();
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = cancel.cancelled() => return,
        }
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        eprintln!("interrupted: stopping…");
        cancel.cancel();
    });
    interrupted
}

async fn execute(engine: &Engine, id: &str, display: &DisplayArgs, resume: bool) -> Result<i32> {
    let json = display.output == OutputFormat::Json;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let shown = tokio::spawn(progress::show(
        rx,
        Display {
            show_logs: !display.quiet,
            silent: false,
        },
    ));
    let cancel = CancellationToken::new();
    let interrupted = cancel_on_signal(cancel.clone());
    if !json {
        eprintln!("{} run {id}", if resume { "Resuming" } else { "Starting" });
    }
    let result = engine.execute(id, tx, cancel, resume).await;
    let _ = shown.await;
    let run = result?;
    let store: &Arc<dyn RunStore> = engine.store();
    let tasks = store.list_tasks(&run.id).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report::run_json(&run, &tasks, None))?
        );
    } else {
        let took = match (run.started_at, run.finished_at) {
            (Some(a), Some(b)) => format!(" in {:.1}s", (b - a).num_milliseconds() as f64 / 1000.0),
            _ => String::new(),
        };
        eprintln!("Run {} {}{took}", run.id, run.state);
        if let Some(e) = &run.error {
            eprintln!("error: {e}");
            let failed: Vec<&str> = tasks
                .iter()
                .filter(|t| t.state == switchyard_store::State::Failed && t.kind == "container")
                .map(|t| t.task_key.as_str())
                .collect();
            if !failed.is_empty() {
                eprintln!(
                    "failed tasks: {} (see `switchyard logs {} TASK`)",
                    failed.join(", "),
                    run.id
                );
            }
        }
        print!("{}", report::outputs_text(&run));
    }
    let code = report::state_exit_code(run.state);
    Ok(if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
        130
    } else {
        code
    })
}
