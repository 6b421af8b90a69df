//! The HTTP surface: every path and method, and the handler that answers it.

use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::{experiments, pipelines, runs, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(crate::ui::index))
        .route("/ui/{name}", get(crate::ui::asset))
        .route("/favicon.ico", get(crate::ui::favicon))
        .route(
            "/apis/switchyard/v1/runs/{id}",
            get(crate::dashboard::run_detail),
        )
        .route(
            "/apis/switchyard/v1/runs/{id}/artifact",
            get(crate::dashboard::artifact),
        )
        .route(
            "/apis/switchyard/v1/jobs/{id}/metrics",
            get(crate::dashboard::job_metrics),
        )
        .route("/apis/v2beta1/healthz", get(healthz))
        .route("/metrics", get(crate::metrics::metrics))
        .route(
            "/apis/switchyard/v1/openapi.json",
            get(|| async { Json(crate::openapi::document()) }),
        )
        .route(
            "/apis/switchyard/v1/runs/{id}/logs",
            get(crate::logs::task_log),
        )
        .route(
            "/apis/switchyard/v1/jobs",
            post(crate::jobs::submit).get(crate::jobs::list),
        )
        .route(
            "/apis/switchyard/v1/jobs/{id}",
            get(crate::jobs::get).post(crate::jobs::action),
        )
        .route("/apis/switchyard/v1/jobs/{id}/logs", get(crate::jobs::logs))
        .route("/apis/switchyard/v1/kpis", get(crate::kpis::kpis))
        .route(
            "/apis/v2beta1/experiments",
            post(experiments::create_experiment).get(experiments::list_experiments),
        )
        .route(
            "/apis/v2beta1/experiments/{id}",
            get(experiments::get_experiment)
                .delete(experiments::delete_experiment)
                .post(experiments::experiment_action),
        )
        .route(
            "/apis/v2beta1/pipelines",
            post(pipelines::create_pipeline).get(pipelines::list_pipelines),
        )
        .route(
            "/apis/v2beta1/pipelines/create",
            post(pipelines::create_pipeline_and_version),
        )
        .route(
            "/apis/v2beta1/pipelines/upload",
            post(pipelines::upload_pipeline),
        )
        .route(
            "/apis/v2beta1/pipelines/upload_version",
            post(pipelines::upload_version),
        )
        .route(
            "/apis/v2beta1/pipelines/names/{name}",
            get(pipelines::pipeline_by_name),
        )
        .route(
            "/apis/v2beta1/pipelines/{id}",
            get(pipelines::get_pipeline)
                .delete(pipelines::delete_pipeline)
                .patch(pipelines::update_pipeline),
        )
        .route(
            "/apis/v2beta1/pipelines/{id}/versions",
            get(pipelines::list_versions).post(pipelines::create_version),
        )
        .route(
            "/apis/v2beta1/pipelines/{id}/versions/{vid}",
            get(pipelines::get_version)
                .delete(pipelines::delete_version)
                .patch(pipelines::update_version),
        )
        .route(
            "/apis/v2beta1/runs",
            post(runs::create_run).get(runs::list_runs),
        )
        .route(
            "/apis/v2beta1/runs/{id}",
            get(runs::get_run)
                .delete(runs::delete_run)
                .post(runs::run_action),
        )
        .route(
            "/apis/v2beta1/recurringruns",
            post(crate::recurring::create).get(crate::recurring::list),
        )
        .route(
            "/apis/v2beta1/recurringruns/{id}",
            get(crate::recurring::get)
                .delete(crate::recurring::delete)
                .post(crate::recurring::action),
        )
        // KFP's error shape for unknown paths too, not an empty 404.
        .fallback(|uri: axum::http::Uri| async move {
            ApiError::NotFound(format!("no such endpoint: {}", uri.path()))
        })
}

async fn healthz() -> Json<Value> {
    Json(json!({"multi_user": false, "pipeline_store": "database"}))
}
