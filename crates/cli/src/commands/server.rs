//! `switchyard server`: the KFP REST API over this data directory.

use std::sync::Arc;

use anyhow::{Context, Result};
use switchyard_engine::Engine;
use switchyard_server::{app, recover, state, ServerConfig};
use switchyard_store::{Dialect, SqlStore};

use crate::cli::ServerArgs;
use crate::config::Paths;

pub async fn serve(
    paths: &Paths,
    engine: Engine,
    store: Arc<SqlStore>,
    args: ServerArgs,
) -> Result<i32> {
    let pipeline_root = args
        .pipeline_root
        .clone()
        .unwrap_or_else(|| paths.artifacts.clone());
    std::fs::create_dir_all(&pipeline_root)
        .with_context(|| format!("cannot create {}", pipeline_root.display()))?;
    let config = ServerConfig {
        pipeline_root: pipeline_root.canonicalize()?,
        parallelism: args
            .parallelism
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            })
            .max(1),
        auth_token: args.auth_token.clone().filter(|t| !t.is_empty()),
        max_body_bytes: args.max_body_bytes,
        max_concurrent_runs: args.max_concurrent_runs.unwrap_or_else(|| {
            2 * std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        }),
    };
    let dialect = store.dialect();
    let jobs = paths.job_runner(store.clone())?;
    let state = state(engine, store.clone(), store, jobs, config);
    let recover_runs = args.recover_runs.unwrap_or(dialect == Dialect::Sqlite);
    let resumed = if recover_runs {
        recover(&state)
            .await
            .map_err(|e| anyhow::anyhow!("recovering unfinished runs: {e}"))?
    } else {
        0
    };
    let addr = format!("{}:{}", args.host, args.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    eprintln!("switchyard server listening on http://{local} (data: {}; {resumed} unfinished runs resumed)", paths.home.display());
    axum::serve(listener, app(state))
        .with_graceful_shutdown(async {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(_) => return std::future::pending().await,
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        })
        .await
        .context("server")?;
    Ok(0)
}
