//! Finding what a request names: a run, task or job by its exact id (the
//! store also accepts prefixes and names; the API does not), and the
//! experiment a run goes to.

use chrono::Utc;
use switchyard_store::ExperimentRecord;

use crate::error::{ApiError, ApiResult};
use crate::AppState;

pub(crate) async fn default_experiment(s: &AppState) -> ApiResult<String> {
    if let Some(e) = s.catalog.experiment_by_name("Default").await? {
        return Ok(e.id);
    }
    let e = ExperimentRecord {
        id: uuid::Uuid::new_v4().to_string(),
        display_name: "Default".into(),
        description: Some("All runs created without specifying an experiment.".into()),
        storage_state: "AVAILABLE".into(),
        created_at: Utc::now(),
    };
    match s.catalog.create_experiment(&e).await {
        Ok(()) => Ok(e.id),
        // Created by a concurrent request in between: use that one.
        Err(switchyard_store::StoreError::AlreadyExists { .. }) => s
            .catalog
            .experiment_by_name("Default")
            .await?
            .map(|e| e.id)
            .ok_or_else(|| ApiError::Internal("default experiment vanished".into())),
        Err(e) => Err(e.into()),
    }
}

/// The experiment a run or schedule goes to: the named one, or `Default`.
pub(crate) async fn experiment_of(s: &AppState, id: Option<String>) -> ApiResult<String> {
    match id.filter(|e| !e.is_empty()) {
        Some(id) => Ok(s.catalog.get_experiment(&id).await?.id),
        None => default_experiment(s).await,
    }
}

/// The run with exactly this id (the store also accepts prefixes; the API does not).
pub(crate) async fn exact_run(s: &AppState, id: &str) -> ApiResult<switchyard_store::RunRecord> {
    let run = s.runs.get_run(id).await?;
    if run.id != id {
        return Err(ApiError::NotFound(format!("no run with id '{id}'")));
    }
    Ok(run)
}

/// One task of a run with exactly this id.
pub(crate) async fn exact_task(
    s: &AppState,
    id: &str,
    key: &str,
) -> ApiResult<switchyard_store::TaskRecord> {
    let run = exact_run(s, id).await?;
    s.runs
        .get_task(&run.id, key)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("run {id} has no task '{key}'")))
}

/// A job with exactly this id (never a prefix or a name, as the CLI allows).
pub(crate) async fn exact_job(s: &AppState, id: &str) -> ApiResult<switchyard_store::JobRecord> {
    let j = s.jobs.store().get_job(id).await?;
    if j.id != id {
        return Err(ApiError::NotFound(format!("no job with id '{id}'")));
    }
    Ok(j)
}
