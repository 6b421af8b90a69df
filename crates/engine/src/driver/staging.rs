//! Remote (`s3://`) artifacts around a container task: inputs downloaded into
//! the run's staging folder before it runs, outputs uploaded after it
//! succeeded, as KFP's launcher does in a task's pod.

use std::path::Path;

use super::tasklog::TaskLog;
use super::*;
use crate::artifacts::{check_remote, is_remote, ArtifactStore};

fn store<'a>(ctx: &'a RunCtx, uri: &str) -> Result<&'a Arc<dyn ArtifactStore>, String> {
    check_remote(uri)?;
    ctx.artifacts.as_ref().ok_or_else(|| {
        format!("artifact {uri} is in object storage, and this engine has none configured")
    })
}

/// True when the task touches a remote artifact: its outputs go to a remote
/// root, or one of its inputs is remote.
pub(super) fn uses_staging(ctx: &RunCtx, inputs: &Io) -> bool {
    ctx.remote_base.is_some()
        || inputs
            .artifacts
            .values()
            .flatten()
            .any(|a| is_remote(&a.uri))
}

/// Downloads every remote input artifact that is not staged yet (an output of
/// this run produced here is; another run's or an importer's is fetched once).
pub(super) async fn stage_in(ctx: &RunCtx, inputs: &Io, log: &TaskLog) -> Result<(), String> {
    for (name, list) in &inputs.artifacts {
        for a in list.iter().filter(|a| is_remote(&a.uri)) {
            stage_one_in(ctx, name, a, log).await?;
        }
    }
    Ok(())
}

async fn stage_one_in(ctx: &RunCtx, name: &str, a: &Artifact, log: &TaskLog) -> Result<(), String> {
    check_remote(&a.uri).map_err(|e| format!("input artifact '{name}': {e}"))?;
    let dest = ctx.run_values.staging.local_path(&a.uri);
    if Path::new(&dest).exists() {
        return Ok(());
    }
    (log.sink)(&format!(
        "[switchyard] downloading input artifact {}",
        a.uri
    ));
    store(ctx, &a.uri)?
        .download(&a.uri, Path::new(&dest))
        .await
        .map_err(|e| format!("input artifact '{name}': {e}"))
}

/// Uploads every remote output artifact the task wrote. One it did not write
/// is said in its log and left out, as KFP's launcher allows.
pub(super) async fn stage_out(ctx: &RunCtx, outputs: &Io, log: &TaskLog) -> Result<(), String> {
    for (name, list) in &outputs.artifacts {
        for a in list.iter().filter(|a| is_remote(&a.uri)) {
            check_remote(&a.uri).map_err(|e| format!("output artifact '{name}': {e}"))?;
            let src = ctx.run_values.staging.local_path(&a.uri);
            if !Path::new(&src).exists() {
                (log.sink)(&format!(
                    "[switchyard] output artifact '{name}' was not written ({src}); nothing was uploaded to {}",
                    a.uri
                ));
                continue;
            }
            store(ctx, &a.uri)?
                .upload(Path::new(&src), &a.uri)
                .await
                .map_err(|e| format!("output artifact '{name}': {e}"))?;
        }
    }
    Ok(())
}

/// Whether every artifact a cached result points to is still there: a local
/// file, or an object in storage.
pub(super) async fn artifacts_available(ctx: &RunCtx, io: &Io) -> bool {
    for a in io.artifacts.values().flatten() {
        let present = if is_remote(&a.uri) {
            match store(ctx, &a.uri) {
                Ok(s) => s.exists(&a.uri).await.unwrap_or_else(|e| {
                    tracing::warn!(uri = %a.uri, error = %e, "cannot check a cached artifact; running the task again");
                    false
                }),
                Err(_) => false,
            }
        } else {
            let p = a.local_path();
            !p.starts_with('/') || Path::new(&p).exists()
        };
        if !present {
            return false;
        }
    }
    true
}
