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
    let run = s.runs.get_run(&id).await?;
    if run.id != id {
        return Err(ApiError::NotFound(format!("no run with id '{id}'")));
    }
    let task = s
        .runs
        .get_task(&run.id, &q.task)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("run {id} has no task '{}'", q.task)))?;
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
    // Follow: send what is new every 200 ms until the task is final.
    let (runs, run_id, key) = (s.runs.clone(), run.id.clone(), q.task.clone());
    let stream = futures::stream::unfold((0usize, false), move |(offset, done)| {
        let (runs, run_id, key, path) = (runs.clone(), run_id.clone(), key.clone(), path.clone());
        async move {
            if done {
                return None;
            }
            loop {
                let finished = runs
                    .get_task(&run_id, &key)
                    .await
                    .ok()
                    .flatten()
                    .is_none_or(|t| t.state.is_final());
                let data = tokio::fs::read(&path).await.unwrap_or_default();
                if data.len() > offset {
                    let chunk = data[offset..].to_vec();
                    return Some((Ok::<_, std::io::Error>(chunk), (data.len(), finished)));
                }
                if finished {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    Ok((headers, Body::from_stream(stream)).into_response())
}
