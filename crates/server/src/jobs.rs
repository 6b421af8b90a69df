//! Training jobs over HTTP (`/apis/switchyard/v1/jobs`): submit a TrainingJob,
//! follow, list, cancel, and read each rank's log.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_runner::{job_json, EarlierJob, Notice, RunnerError};
use tokio_util::sync::CancellationToken;

use crate::error::{ApiError, ApiResult};
use crate::list::{page, ListQuery};
use crate::lookup::exact_job;
use crate::AppState;

impl From<RunnerError> for ApiError {
    fn from(e: RunnerError) -> Self {
        match e {
            RunnerError::Refused(m) => ApiError::BadRequest(m),
            RunnerError::Store(s) => s.into(),
        }
    }
}

#[derive(Deserialize, Default)]
pub struct SubmitQuery {
    backend: Option<String>,
}

/// `POST /jobs`: the body is a TrainingJob document (YAML or JSON). Relative
/// paths in it are taken from the server's working directory, and every local
/// path must lie under the server's `--path-root` folders.
pub async fn submit(
    State(s): State<AppState>,
    Query(q): Query<SubmitQuery>,
    headers: HeaderMap,
    body: String,
) -> ApiResult<Json<Value>> {
    refuse_simple_content_type(&headers)?;
    let base = std::env::current_dir().map_err(|e| ApiError::Internal(e.to_string()))?;
    let job = switchyard_training::load(&body, &base, &[], q.backend.as_deref())
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    switchyard_training::check_path_roots(&job, &s.config.path_roots)
        .map_err(|e| ApiError::Forbidden(e.to_string()))?;
    if let Some(earlier) = task_job(&s, &job).await? {
        return Ok(Json(job_json(&earlier)));
    }
    // `backend: auto`: placed first (a job no candidate can run is a 400
    // with every candidate's reason).
    let (job, decision) = s.jobs.place(&job).await?;
    let mut prepared = s.jobs.prepare(&job).await?;
    if let Some(d) = &decision {
        s.jobs.record_decision(&mut prepared, d).await;
    }
    let doc = job_json(&prepared.record);
    follow_in_background(&s, prepared, job);
    Ok(Json(doc))
}

/// A browser may send `text/plain`, form and multipart bodies to any site
/// without asking first; a job that runs commands must not be one of them.
fn refuse_simple_content_type(headers: &HeaderMap) -> ApiResult<()> {
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if matches!(
        ct.as_str(),
        "text/plain" | "application/x-www-form-urlencoded" | "multipart/form-data"
    ) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "a TrainingJob is sent as application/json or application/yaml, not {ct}"
        )));
    }
    Ok(())
}

pub async fn list(State(s): State<AppState>, Query(q): Query<ListQuery>) -> ApiResult<Json<Value>> {
    let items: Vec<Value> = s
        .jobs
        .store()
        .list_jobs(u32::MAX)
        .await?
        .iter()
        .map(job_json)
        .collect();
    let p = page(items, &q, "created_at desc", false)?;
    Ok(Json(
        json!({"jobs": p.items, "total_size": p.total, "next_page_token": p.next}),
    ))
}

pub async fn get(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let j = exact_job(&s, &id).await?;
    let events = s.jobs.store().job_events(&j.id).await?;
    Ok(Json(switchyard_runner::job_detail_json(&j, &events)))
}

/// `POST /jobs/{id}:cancel`.
pub async fn action(
    State(s): State<AppState>,
    Path(id_action): Path<String>,
) -> ApiResult<Json<Value>> {
    let (id, action) = id_action
        .split_once(':')
        .ok_or_else(|| ApiError::NotFound(format!("no such endpoint: jobs/{id_action}")))?;
    if action != "cancel" {
        return Err(ApiError::NotFound(format!("unknown job action '{action}'")));
    }
    let j = exact_job(&s, id).await?;
    if j.state.is_final() {
        return Err(ApiError::BadRequest(format!(
            "job {} is already {}",
            j.id, j.state
        )));
    }
    // No process follows it: stop it where it runs, from here.
    if switchyard_runner::orphaned(&j) && s.jobs.cancel_orphan(&j).await?.is_some() {
        return Ok(Json(json!({})));
    }
    s.jobs
        .store()
        .request_cancel(switchyard_store::Kind::Job, &j.id)
        .await?;
    Ok(Json(json!({})))
}

/// The job a pipeline step submitted in an earlier attempt, when the step
/// (a Pod that hands its job to this server) runs again: one still running
/// is answered (and followed again if its follower died), one that succeeded
/// is reused; after a failure or a cancel the step's retry gets a new job.
async fn task_job(
    s: &AppState,
    job: &switchyard_training::TrainingJob,
) -> ApiResult<Option<switchyard_store::JobRecord>> {
    Ok(match s.jobs.earlier_job(job).await? {
        EarlierJob::None => None,
        EarlierJob::Succeeded(rec) | EarlierJob::FollowedElsewhere(rec) => Some(*rec),
        EarlierJob::Adopted(prepared, recorded) => {
            let id = prepared.record.id.clone();
            follow_in_background(s, *prepared, *recorded);
            Some(s.jobs.store().get_job(&id).await?)
        }
    })
}

/// Follows a recorded job to its end on this server's runtime.
pub(crate) fn follow_in_background(
    s: &AppState,
    prepared: switchyard_runner::Prepared,
    job: switchyard_training::TrainingJob,
) {
    let runner = s.jobs.clone();
    tokio::spawn(async move {
        let quiet: Arc<dyn Fn(Notice<'_>) + Send + Sync> = Arc::new(|_| {});
        if let Err(e) = runner
            .execute(prepared, &job, CancellationToken::new(), quiet)
            .await
        {
            tracing::error!(error = %e, "training job could not be finished");
        }
    });
}

#[derive(Deserialize)]
pub struct LogQuery {
    rank: Option<u32>,
    #[serde(default)]
    follow: bool,
}

/// `GET /jobs/{id}/logs[?rank=R]`: every rank's lines prefixed, or one rank's.
pub async fn logs(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Response> {
    let j = exact_job(&s, &id).await?;
    let files =
        switchyard_runner::rank_logs(&j, q.rank).map_err(|e| ApiError::NotFound(e.to_string()))?;
    if q.follow {
        let path = match (q.rank, files.first()) {
            (Some(_), Some(f)) => f.path.clone(),
            _ => return Err(ApiError::BadRequest("follow=true needs a rank".into())),
        };
        let (store, job_id) = (s.jobs.store().clone(), j.id.clone());
        let done = move || {
            let (store, job_id) = (store.clone(), job_id.clone());
            async move {
                store
                    .get_job(&job_id)
                    .await
                    .map(|j| j.state.is_final())
                    .unwrap_or(true)
            }
        };
        return Ok(crate::logs::follow_file(path, done));
    }
    let files = files
        .into_iter()
        .map(|f| {
            let prefix = match q.rank {
                Some(_) => String::new(),
                None => format!("[{}/rank {}] ", f.host, f.rank),
            };
            (f.path, prefix)
        })
        .collect();
    Ok(crate::logs::files_response(files))
}
