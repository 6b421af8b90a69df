//! The `switchyard` binary: parses the command line, builds the store, backend
//! and engine, and maps outcomes to exit codes (0 success, 1 run failed,
//! 2 bad input or other error, 130 canceled).

mod artifacts;
mod backends;
mod cli;
mod commands;
mod config;
mod progress;
mod report;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use switchyard_engine::Engine;
use switchyard_local::{LocalBackend, LocalConfig};
use switchyard_store::SqlStore;

use crate::cli::{Cli, Command, JobCommand, RunsCommand};
use crate::config::Paths;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if prints_only(&cli.command) {
        // `switchyard runs list | head` ends quietly when `head` has read
        // enough, as other command-line tools do, instead of panicking in
        // println!. Only for commands that start nothing and write to no
        // pipe but stdout: elsewhere a closed pipe must stay an error.
        // SAFETY: no other thread exists yet; SIG_DFL is a valid disposition.
        unsafe {
            let _ = nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            );
        }
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Commands that only read records and print them.
fn prints_only(command: &Command) -> bool {
    matches!(
        command,
        Command::Runs(RunsCommand::List { .. } | RunsCommand::Get { .. })
            | Command::Job(
                JobCommand::List { .. } | JobCommand::Get { .. } | JobCommand::Logs { .. }
            )
            | Command::Kpi(_)
    )
}

async fn dispatch(cli: Cli) -> Result<i32> {
    // A training-job step given a server hands its job to it (below, with the
    // rest of the step's work done here).
    let component = matches!(cli.command, Command::Job(JobCommand::RunComponent { .. }));
    if let Some(server) = cli.server.clone().filter(|_| !component) {
        return match cli.command {
            Command::Run(args) => commands::remote::run(&server, &args).await,
            Command::Runs(RunsCommand::List { limit, output }) => commands::remote::list(&server, limit, output).await,
            Command::Runs(RunsCommand::Get { id, .. }) => commands::remote::get(&server, &id).await,
            Command::Runs(RunsCommand::Cancel { id }) => commands::remote::cancel(&server, &id).await,
            _ => anyhow::bail!("--server works with `run` and `runs list|get|cancel`; run other commands on the server's machine"),
        };
    }
    if let Command::Operator(args) = &cli.command {
        return commands::operator::run(args).await;
    }
    if let Command::Initializer(args) = &cli.command {
        return commands::initializer::run(args).await;
    }
    let paths = Paths::resolve(cli.home.clone())?;
    let store = Arc::new(match &cli.database {
        Some(url) => SqlStore::connect(url)
            .await
            .context("opening the run store")?,
        None => SqlStore::open(&paths.db)
            .await
            .with_context(|| format!("opening the run store in {}", paths.home.display()))?,
    });
    // Where pipeline steps run: this machine, or Pods on the cluster.
    let backend: Arc<dyn switchyard_engine::Backend> =
        match std::env::var("SWITCHYARD_TASK_BACKEND")
            .unwrap_or_default()
            .as_str()
        {
            "" | "local" => Arc::new(LocalBackend::new(LocalConfig {
                warm_python: !cli.no_warm_python,
                ..paths.local_backend()
            })),
            "kubernetes" => {
                let config = switchyard_kubernetes::steps::TaskPodConfig::from_env(&paths.home)
                    .map_err(anyhow::Error::msg)?;
                Arc::new(switchyard_kubernetes::steps::PodTaskBackend::new(config))
            }
            other => {
                anyhow::bail!("SWITCHYARD_TASK_BACKEND: '{other}' must be local or kubernetes")
            }
        };
    // Training-job steps run in this process, on the configured training backends.
    // A server confines them to its --path-root folders, as jobs posted to it.
    let roots = match &cli.command {
        Command::Server(args) => Some(commands::server::path_roots(args)?),
        _ => None,
    };
    let backend = Arc::new(switchyard_runner::step::TrainingSteps::new(
        backend,
        paths.job_runner(store.clone())?,
        roots,
    ));
    let engine = Engine::new(store.clone(), backend, paths.logs.clone()).with_artifact_store(
        Arc::new(artifacts::S3Artifacts::new(paths.home.join("cache/s3"))),
    );
    match cli.command {
        Command::Run(args) => commands::run::run(&engine, &paths, args).await,
        Command::Runs(RunsCommand::List { limit, output }) => {
            commands::runs::list(store.as_ref(), limit, output).await
        }
        Command::Runs(RunsCommand::Get { id, output }) => {
            commands::runs::get(store.as_ref(), &id, output).await
        }
        Command::Runs(RunsCommand::Cancel { id }) => commands::runs::cancel(&engine, &id).await,
        Command::Runs(RunsCommand::Resume { id, display }) => {
            commands::run::resume(&engine, &id, &display).await
        }
        Command::Job(JobCommand::Run {
            file,
            backend,
            sets,
            display,
        }) => {
            commands::job::run(
                &paths,
                store.clone(),
                &file,
                backend.as_deref(),
                &sets,
                &display,
            )
            .await
        }
        Command::Job(JobCommand::Place { file, sets, output }) => {
            commands::job::place(&paths, store.clone(), &file, &sets, output).await
        }
        Command::Job(JobCommand::List { limit, output }) => {
            commands::job::list(store.as_ref(), limit, output).await
        }
        Command::Job(JobCommand::Get { id, output }) => {
            commands::job::get(store.as_ref(), &id, output).await
        }
        Command::Job(JobCommand::Logs { id, rank }) => {
            commands::job::logs(store.as_ref(), &id, rank).await
        }
        Command::Job(JobCommand::Cancel { id }) => {
            commands::job::cancel(&paths, store.clone(), &id).await
        }
        Command::Job(JobCommand::Resume { id, display }) => {
            commands::job::resume(&paths, store.clone(), &id, &display).await
        }
        Command::Job(JobCommand::RunComponent { executor_input }) => {
            commands::component::run(
                &paths,
                store.clone(),
                &executor_input,
                cli.server.as_deref(),
            )
            .await
        }
        Command::Operator(_) | Command::Initializer(_) => {
            unreachable!("handled before the store is opened")
        }
        Command::Server(args) => commands::server::serve(&paths, engine, store.clone(), args).await,
        Command::Logs { run, task } => {
            commands::logs::logs(store.as_ref(), &run, task.as_deref()).await
        }
        Command::Kpi(args) => commands::kpi::kpi(store.as_ref(), &args).await,
    }
}
