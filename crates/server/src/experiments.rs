//! KFP's experiments: create, list, get, delete, archive and unarchive.

use axum::extract::{Path, Query, State};
use axum::Json;
use chrono::Utc;
use serde_json::{json, Value};
use switchyard_store::ExperimentRecord;

use crate::error::{ApiError, ApiResult};
use crate::http::{body, list_response, JsonBody};
use crate::list::ListQuery;
use crate::{render, AppState};

pub(crate) async fn create_experiment(
    State(s): State<AppState>,
    b: JsonBody<crate::messages::Experiment>,
) -> ApiResult<Json<Value>> {
    let b = body(b)?;
    let name = b
        .display_name
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| ApiError::BadRequest("experiment display_name is required".into()))?;
    let e = ExperimentRecord {
        id: uuid::Uuid::new_v4().to_string(),
        display_name: name,
        description: b.description,
        storage_state: "AVAILABLE".into(),
        created_at: Utc::now(),
    };
    s.catalog.create_experiment(&e).await?;
    Ok(Json(render::experiment(&e)))
}

pub(crate) async fn list_experiments(
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let items = s
        .catalog
        .list_experiments()
        .await?
        .iter()
        .map(render::experiment)
        .collect();
    list_response("experiments", items, &q, "created_at", false)
}

pub(crate) async fn get_experiment(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(render::experiment(
        &s.catalog.get_experiment(&id).await?,
    )))
}

pub(crate) async fn delete_experiment(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    s.catalog.delete_experiment(&id).await?;
    Ok(Json(json!({})))
}

/// `POST /experiments/{id}:archive` and `:unarchive`.
pub(crate) async fn experiment_action(
    State(s): State<AppState>,
    Path(id_action): Path<String>,
) -> ApiResult<Json<Value>> {
    let (id, action) = id_action
        .split_once(':')
        .ok_or_else(|| ApiError::NotFound(format!("no such endpoint: experiments/{id_action}")))?;
    let state = match action {
        "archive" => "ARCHIVED",
        "unarchive" => "AVAILABLE",
        other => {
            return Err(ApiError::NotFound(format!(
                "unknown experiment action '{other}'"
            )))
        }
    };
    s.catalog.set_experiment_storage(id, state).await?;
    Ok(Json(json!({})))
}
