//! `switchyard server`: the KFP REST API over this data directory.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use switchyard_engine::{Engine, PipelineRoot};
use switchyard_server::{
    app, keep_firing, keep_recovering, recover, state, HostPolicy, ServerConfig,
};
use switchyard_store::SqlStore;

use crate::cli::ServerArgs;
use crate::config::Paths;

/// Where a generated token is kept for local clients.
const TOKEN_FILE: &str = "server.token";

/// A fresh random token (244 random bits), written where only this user can read it.
fn generated_token(paths: &Paths) -> Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let file = paths.home.join(TOKEN_FILE);
    let _ = std::fs::remove_file(&file);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&file)
        .and_then(|mut f| f.write_all(token.as_bytes()))
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(token)
}

pub async fn serve(
    paths: &Paths,
    engine: Engine,
    store: Arc<SqlStore>,
    args: ServerArgs,
) -> Result<i32> {
    let (pipeline_root, remote_root) = match args.pipeline_root.as_deref() {
        None => (paths.artifacts.clone(), None),
        Some(root) => PipelineRoot::parse(&root.to_string_lossy())
            .map_err(|e| anyhow::anyhow!("--pipeline-root: {e}"))?
            .into_parts(paths.artifacts.clone()),
    };
    std::fs::create_dir_all(&pipeline_root)
        .with_context(|| format!("cannot create {}", pipeline_root.display()))?;
    let token = match (&args.auth_token, args.no_auth) {
        (Some(t), _) if !t.is_empty() => Some(t.clone()),
        (_, true) => None,
        _ => Some(generated_token(paths)?),
    };
    let path_roots = path_roots(&args)?;
    let config = ServerConfig {
        pipeline_root: pipeline_root.canonicalize()?,
        remote_root,
        artifact_cache: paths.home.join("cache/artifacts"),
        parallelism: args
            .parallelism
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            })
            .max(1),
        auth_token: token.clone(),
        hosts: HostPolicy {
            bound: args.host.parse().ok(),
            allowed: args
                .allowed_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_ascii_lowercase()),
        },
        path_roots,
        max_body_bytes: args.max_body_bytes,
        max_concurrent_runs: args.max_concurrent_runs.unwrap_or_else(|| {
            2 * std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        }),
        service_account: args.service_account.clone(),
    };
    let jobs = paths.job_runner(store.clone())?;
    let state = state(engine, store.clone(), store, jobs, config);
    let resumed = if args.recover_runs.unwrap_or(true) {
        let n = recover(&state)
            .await
            .map_err(|e| anyhow::anyhow!("recovering unfinished runs: {e}"))?;
        keep_recovering(state.clone());
        n
    } else {
        0
    };
    // Recurring runs fire from every server; a slot is fired once however
    // many share the database.
    keep_firing(state.clone());
    let addr = format!("{}:{}", args.host, args.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    eprintln!("switchyard server listening on http://{local} (data: {}; {resumed} unfinished runs resumed)", paths.home.display());
    match &token {
        Some(t) if args.auth_token.is_none() => eprintln!(
            "token: {t} (also in {}); dashboard: http://{local}/#token={t}",
            paths.home.join(TOKEN_FILE).display()
        ),
        Some(_) => {}
        None => eprintln!("no token (--no-auth): any program on this machine can use the API"),
    }
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

/// The folders local paths of the server's jobs must lie under: `--path-root`
/// (resolved), else the server's working directory.
pub fn path_roots(args: &ServerArgs) -> Result<Vec<PathBuf>> {
    if args.path_roots.is_empty() {
        return Ok(vec![
            std::env::current_dir().context("the server's working directory")?
        ]);
    }
    args.path_roots
        .iter()
        .map(|p| {
            p.canonicalize()
                .with_context(|| format!("--path-root {}", p.display()))
        })
        .collect()
}
