//! What the dashboard needs beyond the KFP API: a run with everything about its
//! tasks (inputs, outputs, artifacts, logs) and its compiled pipeline, so the
//! page can draw the graph; a task's artifact files, whole or as a preview; a
//! job's metric series. All under `/apis/switchyard/v1`, with the API's auth.

use std::path::{Component, Path as FsPath, PathBuf};

use axum::extract::{Path, Query, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::{render, AppState};

/// Largest preview returned inline.
const PREVIEW_BYTES: usize = 64 * 1024;

/// `GET /runs/{id}`: the KFP run document plus `pipeline_spec`, `parameters`
/// and every task with its inputs, outputs and whether it has a log.
pub async fn run_detail(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let run = crate::lookup::exact_run(&s, &id).await?;
    let cat = s.catalog.get_run_catalog(&run.id).await?;
    let tasks = s.runs.list_tasks(&run.id).await?;
    let transitions = s.runs.transitions(&run.id).await?;
    let mut doc = render::run(&run, cat.as_ref(), None, &transitions);
    doc["pipeline_spec"] = serde_json::from_str(&run.spec).unwrap_or(Value::Null);
    doc["parameters"] = run.parameters.clone();
    doc["outputs"] = run.outputs.clone().unwrap_or(Value::Null);
    doc["tasks"] = tasks
        .iter()
        .map(|t| {
            json!({
                "key": t.task_key,
                "name": t.name,
                "kind": t.kind,
                "state": t.state,
                "attempt": t.attempt,
                "cached": t.cached,
                "inputs": t.inputs,
                "outputs": t.outputs,
                "error": t.error,
                "has_log": t.log_path.is_some(),
                "started_at": t.started_at,
                "finished_at": t.finished_at,
            })
        })
        .collect::<Vec<_>>()
        .into();
    Ok(Json(doc))
}

#[derive(Deserialize)]
pub struct ArtifactQuery {
    task: String,
    output: String,
    /// Which artifact of a list output.
    #[serde(default)]
    index: usize,
    /// A file inside a directory artifact.
    file: Option<String>,
    #[serde(default)]
    preview: bool,
}

/// The artifact URIs of one output (a single artifact or a list).
fn artifact_uri(outputs: &Value, output: &str, index: usize) -> Option<String> {
    // Container tasks keep the executor's shape ({parameters, artifacts}); DAG
    // tasks keep their outputs by name.
    let v = outputs
        .get("artifacts")
        .and_then(|a| a.get(output))
        .or_else(|| outputs.get(output))?;
    let one = match v {
        Value::Array(items) => items.get(index)?,
        other => other,
    };
    one.get("uri")?.as_str().map(str::to_string)
}

/// `rel` under `dir`, refusing anything that climbs out.
fn inside(dir: &FsPath, rel: &str) -> Option<PathBuf> {
    let rel = FsPath::new(rel);
    rel.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| dir.join(rel))
}

/// Most entries a directory listing walks, and how deep.
const LIST_MAX_ENTRIES: usize = 10_000;
const LIST_MAX_DEPTH: usize = 32;

/// The regular files under `root`, without following links (a link is listed
/// as such, never entered or read) and bounded in depth and count.
fn list_dir(root: &FsPath) -> (Vec<Value>, bool) {
    let mut out = Vec::new();
    let mut truncated = false;
    let mut pending = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        // Sorted once at the end.
        for e in entries.flatten() {
            if out.len() >= LIST_MAX_ENTRIES {
                truncated = true;
                break;
            }
            let p = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let rel = p
                .strip_prefix(root)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            let kind = meta.file_type();
            if kind.is_dir() {
                if depth + 1 < LIST_MAX_DEPTH {
                    pending.push((p, depth + 1));
                } else {
                    truncated = true;
                }
            } else if kind.is_file() {
                out.push(json!({"path": rel, "size": meta.len()}));
            } else if kind.is_symlink() {
                out.push(json!({"path": rel, "link": true}));
            }
        }
    }
    out.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    (out, truncated)
}

/// Refuses `path` unless it is `base` or below it with no symbolic link on
/// the way (base included): an artifact is served from its own files only.
fn no_links(base: &FsPath, path: &FsPath) -> ApiResult<std::fs::Metadata> {
    let step = |p: &FsPath| match std::fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_symlink() => Err(ApiError::Forbidden(format!(
            "{} is a symbolic link; artifacts are served from their own files only",
            p.display()
        ))),
        Ok(m) => Ok(m),
        Err(e) => Err(ApiError::NotFound(format!(
            "{} cannot be read here: {e}",
            p.display()
        ))),
    };
    let mut cur = base.to_path_buf();
    let mut meta = step(&cur)?;
    for c in path
        .strip_prefix(base)
        .unwrap_or(FsPath::new(""))
        .components()
    {
        cur.push(c);
        meta = step(&cur)?;
    }
    Ok(meta)
}

/// The file's bytes as a stream of 64 KiB chunks (never all in memory).
fn file_body(file: tokio::fs::File) -> axum::body::Body {
    use tokio::io::AsyncReadExt;
    let stream = futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(buf), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    axum::body::Body::from_stream(stream)
}

fn content_type(path: &FsPath) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" | "htm" => "text/html; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "md" | "markdown" => "text/markdown; charset=utf-8",
        "json" => "application/json",
        "txt" | "log" | "py" | "yaml" | "yml" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// `GET /runs/{id}/artifact?task=K&output=NAME[&index=I][&file=REL][&preview=true]`:
/// an artifact a task produced (only URIs recorded in its outputs are served).
/// A directory answers with its file list; `preview` returns at most 64 KiB
/// and says `X-Switchyard-Truncated: true` when there was more.
pub async fn artifact(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ArtifactQuery>,
) -> ApiResult<Response> {
    let task = crate::lookup::exact_task(&s, &id, &q.task).await?;
    let uri = task
        .outputs
        .as_ref()
        .and_then(|o| artifact_uri(o, &q.output, q.index))
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "task '{}' has no artifact output '{}'",
                q.task, q.output
            ))
        })?;
    let base = if switchyard_engine::artifacts::is_remote(&uri) {
        local_copy(&s, &uri).await?
    } else {
        PathBuf::from(switchyard_engine::io::uri_to_path(&uri))
    };
    let path = match &q.file {
        Some(f) => inside(&base, f).ok_or_else(|| {
            ApiError::BadRequest(format!("file '{f}' is not inside the artifact"))
        })?,
        None => base.clone(),
    };
    let meta = {
        let (base, path) = (base.clone(), path.clone());
        tokio::task::spawn_blocking(move || no_links(&base, &path))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??
    };
    if meta.is_dir() {
        let (files, truncated) = tokio::task::spawn_blocking(move || list_dir(&path))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        return Ok(Json(
            json!({"uri": uri, "directory": true, "files": files, "truncated": truncated}),
        )
        .into_response());
    }
    if !meta.is_file() {
        return Err(ApiError::Forbidden(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::NotFound(format!("artifact {uri} cannot be read here: {e}")))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| q.output.clone());
    if q.preview {
        use tokio::io::AsyncReadExt;
        let mut data = Vec::with_capacity(PREVIEW_BYTES.min(meta.len() as usize) + 1);
        (&mut file)
            .take(PREVIEW_BYTES as u64 + 1)
            .read_to_end(&mut data)
            .await
            .map_err(|e| ApiError::NotFound(format!("artifact {uri} cannot be read: {e}")))?;
        let truncated = data.len() > PREVIEW_BYTES;
        data.truncate(PREVIEW_BYTES);
        return Ok((
            [
                (CONTENT_TYPE, content_type(&path).to_string()),
                (
                    axum::http::HeaderName::from_static("x-switchyard-truncated"),
                    truncated.to_string(),
                ),
            ],
            data,
        )
            .into_response());
    }
    let disposition = format!(
        "attachment; filename=\"{}\"",
        name.replace(['"', '\\', '\r', '\n'], "_")
    );
    Ok((
        [
            (CONTENT_TYPE, content_type(&path).to_string()),
            (CONTENT_DISPOSITION, disposition),
            (axum::http::header::CONTENT_LENGTH, meta.len().to_string()),
        ],
        file_body(file),
    )
        .into_response())
}

/// A copy of a remote artifact in the server's cache, fetched the first time
/// it is asked for (an artifact's URI is written once per task attempt).
async fn local_copy(s: &AppState, uri: &str) -> ApiResult<PathBuf> {
    use sha2::Digest;
    switchyard_engine::artifacts::check_remote(uri).map_err(ApiError::BadRequest)?;
    let store = s.engine.artifact_store().ok_or_else(|| {
        ApiError::NotFound(format!(
            "artifact {uri} is in object storage, and this server has none configured"
        ))
    })?;
    let digest: String = sha2::Sha256::digest(uri.as_bytes())[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let name = uri
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("artifact");
    let dest = s.config.artifact_cache.join(digest).join(name);
    if !dest.exists() {
        store.download(uri, &dest).await.map_err(|e| {
            ApiError::NotFound(format!(
                "artifact {uri} cannot be read from object storage: {e}"
            ))
        })?;
    }
    Ok(dest)
}

/// `GET /jobs/{id}/metrics`: `{series: {name: [{at, value}]}}`, oldest first.
pub async fn job_metrics(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let j = crate::lookup::exact_job(&s, &id).await?;
    let points = s.jobs.store().job_metrics(&j.id).await?;
    let mut series = serde_json::Map::new();
    for p in points {
        let entry = series.entry(p.name).or_insert_with(|| json!([]));
        if let Value::Array(a) = entry {
            a.push(json!({"at": p.at, "value": p.value}));
        }
    }
    Ok(Json(json!({"job_id": j.id, "series": series})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_outside_the_artifact_are_refused() {
        let d = FsPath::new("/art/x");
        assert_eq!(inside(d, "a/b.txt"), Some(PathBuf::from("/art/x/a/b.txt")));
        assert_eq!(inside(d, "../y"), None);
        assert_eq!(inside(d, "/etc/passwd"), None);
        assert_eq!(inside(d, "a/../../y"), None);
    }

    #[test]
    fn links_are_listed_never_followed_or_served() {
        let dir = std::env::temp_dir().join(format!("sy-links-{}", std::process::id()));
        let art = dir.join("art");
        std::fs::create_dir_all(art.join("sub")).expect("mkdir");
        std::fs::write(art.join("sub/a.txt"), "a").expect("write");
        std::os::unix::fs::symlink("/etc", art.join("etc")).expect("link");
        std::os::unix::fs::symlink(&art, art.join("sub/loop")).expect("link");
        let (files, truncated) = list_dir(&art);
        assert!(!truncated);
        let paths: Vec<_> = files
            .iter()
            .map(|f| f["path"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(paths, ["etc", "sub/a.txt", "sub/loop"]);
        assert_eq!(files[0]["link"], true);
        assert!(no_links(&art, &art.join("sub/a.txt")).is_ok());
        assert!(matches!(
            no_links(&art, &art.join("etc/passwd")),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            no_links(&art.join("etc"), &art.join("etc")),
            Err(ApiError::Forbidden(_))
        ));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn artifact_uris_of_single_and_list_outputs() {
        let o = json!({"m": {"uri": "/a"}, "parts": [{"uri": "/p0"}, {"uri": "/p1"}], "n": 3});
        assert_eq!(artifact_uri(&o, "m", 0).as_deref(), Some("/a"));
        assert_eq!(artifact_uri(&o, "parts", 1).as_deref(), Some("/p1"));
        assert_eq!(artifact_uri(&o, "parts", 2), None);
        assert_eq!(artifact_uri(&o, "n", 0), None);
        let executor =
            json!({"parameters": {}, "artifacts": {"model": [{"name": "model", "uri": "/m"}]}});
        assert_eq!(artifact_uri(&executor, "model", 0).as_deref(), Some("/m"));
    }
}
