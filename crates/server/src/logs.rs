//! `GET /apis/switchyard/v1/runs/{id}/logs?task=KEY[&follow=true]`: a task's log
//! as plain text; with `follow`, streamed as it is written until the task ends.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::AppState;

#[derive(Deserialize)]
pub struct LogQuery {
    task: String,
    #[serde(default)]
    follow: bool,
}

pub async fn task_log(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Response> {
    let task = crate::routes::exact_task(&s, &id, &q.task).await?;
    let path = task.log_path.clone().ok_or_else(|| {
        ApiError::NotFound(format!(
            "task '{}' has no log (it did not run a container)",
            q.task
        ))
    })?;
    let headers = [(CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !q.follow || task.state.is_final() {
        let text = tokio::fs::read(&path).await.unwrap_or_default();
        return Ok((headers, text).into_response());
    }
    let (runs, run_id, key) = (s.runs.clone(), task.run_id.clone(), q.task.clone());
    let done = move || {
        let (runs, run_id, key) = (runs.clone(), run_id.clone(), key.clone());
        async move {
            runs.get_task(&run_id, &key)
                .await
                .ok()
                .flatten()
                .is_none_or(|t| t.state.is_final())
        }
    };
    Ok(follow_file(std::path::PathBuf::from(path), done))
}

/// Streams a growing file: what is new every 200 ms, until `done()` says the
/// writer has finished and everything has been sent.
pub fn follow_file<F, Fut>(path: std::path::PathBuf, done: F) -> Response
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let done = std::sync::Arc::new(done);
    let stream = futures::stream::unfold((0usize, false), move |(offset, finished)| {
        let (path, done) = (path.clone(), done.clone());
        async move {
            if finished {
                return None;
            }
            loop {
                let ended = done().await;
                let data = tokio::fs::read(&path).await.unwrap_or_default();
                if data.len() > offset {
                    let chunk = data[offset..].to_vec();
                    return Some((Ok::<_, std::io::Error>(chunk), (data.len(), ended)));
                }
                if ended {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    (
        [(CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(stream),
    )
        .into_response()
}
