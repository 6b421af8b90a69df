//! KFP's runs: create (from a spec or a pipeline version), list, get,
//! delete, terminate, retry, archive.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use chrono::Utc;
use serde_json::{json, Value};
use switchyard_engine::{OrphanCancel, PipelineRoot, RunOptions};
use switchyard_store::{Holder, RunCatalog, RunUpdate, State as RunState};

use crate::error::{ApiError, ApiResult};
use crate::http::{body, list_response, off_runtime, JsonBody};
use crate::list::ListQuery;
use crate::lookup::{exact_run, experiment_of};
use crate::{render, AppState};

pub(crate) use crate::messages::{RuntimeConfig, VersionRef};

/// The pipeline a run or schedule names: an inline spec, or a version (the
/// pipeline's latest when only the pipeline is named). Returns the spec and
/// the pipeline and version ids.
pub(crate) async fn pipeline_source(
    s: &AppState,
    spec: Option<Value>,
    version: Option<VersionRef>,
) -> ApiResult<(Value, Option<String>, Option<String>)> {
    match (spec, version) {
        (Some(spec), _) => Ok((spec, None, None)),
        (None, Some(r)) => {
            let v = match (&r.pipeline_version_id, &r.pipeline_id) {
                (Some(vid), _) => s.catalog.get_version(vid).await?,
                (None, Some(pid)) => {
                    s.catalog.list_versions(pid).await?.pop().ok_or_else(|| {
                        ApiError::NotFound(format!("pipeline {pid} has no versions"))
                    })?
                }
                (None, None) => {
                    return Err(ApiError::BadRequest(
                        "pipeline_version_reference needs pipeline_version_id".into(),
                    ))
                }
            };
            Ok((
                v.spec.clone(),
                Some(v.pipeline_id.clone()),
                Some(v.id.clone()),
            ))
        }
        (None, None) => Err(ApiError::BadRequest(
            "pipeline_spec or pipeline_version_reference is required".into(),
        )),
    }
}

/// The compiled pipeline of a request: a bare spec or `{pipeline_spec, platform_spec}`.
pub(crate) async fn parse_spec(spec: &Value) -> ApiResult<switchyard_kfp_spec::ParsedPipeline> {
    let text = spec.to_string();
    off_runtime(move || {
        switchyard_kfp_spec::parse_pipeline(&text)
            .map_err(|e| ApiError::BadRequest(format!("pipeline_spec: {e}")))
    })
    .await
}

/// Where a run's artifacts go, as KFP chooses: its runtime config's root,
/// else the pipeline's compiled `defaultPipelineRoot`, else the server's.
/// Returns the local folder tasks work in and the `s3://` root, if any.
pub(crate) fn run_root(
    s: &AppState,
    rc: &RuntimeConfig,
    compiled: Option<&str>,
) -> ApiResult<(std::path::PathBuf, Option<String>)> {
    let chosen = match (
        rc.pipeline_root.as_deref().filter(|r| !r.is_empty()),
        compiled,
    ) {
        (Some(r), _) => Some((r, "runtime_config.pipeline_root")),
        (None, Some(r)) if !r.is_empty() => Some((r, "the pipeline's defaultPipelineRoot")),
        _ => None,
    };
    let Some((text, source)) = chosen else {
        return Ok((s.config.pipeline_root.clone(), s.config.remote_root.clone()));
    };
    Ok(PipelineRoot::parse(text)
        .map_err(|e| ApiError::BadRequest(format!("{source}: {e}")))?
        .into_parts(s.config.pipeline_root.clone()))
}

/// Everything a new run is made of, whoever starts it (a request or a schedule).
pub(crate) struct NewRunOf {
    pub parsed: switchyard_kfp_spec::ParsedPipeline,
    pub pipeline_id: Option<String>,
    pub version_id: Option<String>,
    pub experiment_id: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub runtime_config: RuntimeConfig,
    /// The schedule and the slot that fired it.
    pub fired_by: Option<(String, chrono::DateTime<Utc>)>,
    /// The run's id when derived by the caller (a schedule's slot).
    pub id: Option<String>,
    /// Its Kubernetes service account (`None`: the server's default).
    pub service_account: Option<String>,
}

impl NewRunOf {
    /// The run's catalog entry: its experiment, pipeline and runtime config.
    pub fn catalog(&self, run_id: &str, root: &str) -> RunCatalog {
        RunCatalog {
            run_id: run_id.to_string(),
            experiment_id: self.experiment_id.clone(),
            storage_state: "AVAILABLE".into(),
            description: self.description.clone(),
            pipeline_id: self.pipeline_id.clone(),
            pipeline_version_id: self.version_id.clone(),
            runtime_config: Some(
                json!({"parameters": self.runtime_config.parameters, "pipeline_root": root}),
            ),
            recurring_run_id: self.fired_by.as_ref().map(|(id, _)| id.clone()),
            service_account: self.service_account.clone(),
        }
    }
}

/// Records a run (PENDING, owned by this server) with its catalog entry and
/// starts it. A run whose derived id exists already is an `AlreadyExists` error.
pub(crate) async fn start_run(
    s: &AppState,
    n: NewRunOf,
) -> ApiResult<(switchyard_store::RunRecord, RunCatalog)> {
    let (root, remote_root) = run_root(
        s,
        &n.runtime_config,
        n.parsed.spec.default_pipeline_root.as_deref(),
    )?;
    let opts = RunOptions {
        parallelism: s.config.parallelism,
        cache: true,
        pipeline_root: root,
        remote_root,
        display_name: n.display_name.clone(),
        id: n.id.clone(),
        schedule_time: n.fired_by.as_ref().map(|(_, t)| *t),
        service_account: n.service_account.clone(),
    };
    let run = s
        .engine
        .create_run(&n.parsed, &n.runtime_config.parameters, &opts)
        .await
        .map_err(|e| match e {
            switchyard_engine::EngineError::Spec(e) => ApiError::BadRequest(e.to_string()),
            switchyard_engine::EngineError::Store(e) => e.into(),
            switchyard_engine::EngineError::Options(e) => ApiError::BadRequest(e),
            other => ApiError::Internal(other.to_string()),
        })?;
    // Ours from the start, while it waits PENDING for a slot: another server
    // on the same data recovers only runs whose owner is gone.
    s.runs
        .set_owner(&run.id, Some(&Holder::current().lease()))
        .await?;
    let cat = n.catalog(&run.id, &run.pipeline_root);
    if let Err(e) = s.catalog.put_run_catalog(&cat).await {
        // Never leave a half-created run behind.
        let _ = s.catalog.delete_run(&run.id).await;
        return Err(e.into());
    }
    s.spawn_run(run.id.clone(), false);
    Ok((run, cat))
}

pub(crate) async fn create_run(
    State(s): State<AppState>,
    b: JsonBody<crate::messages::Run>,
) -> ApiResult<Json<Value>> {
    let b = body(b)?;
    let (spec, pipeline_id, version_id) =
        pipeline_source(&s, b.pipeline_spec, b.pipeline_version_reference).await?;
    let parsed = parse_spec(&spec).await?;
    let experiment_id = experiment_of(&s, b.experiment_id).await?;
    let (run, cat) = start_run(
        &s,
        NewRunOf {
            parsed,
            pipeline_id,
            version_id,
            experiment_id,
            display_name: b.display_name,
            description: b.description,
            runtime_config: b.runtime_config.unwrap_or_default(),
            fired_by: None,
            id: None,
            service_account: Some(
                b.service_account
                    .filter(|a| !a.is_empty())
                    .unwrap_or_else(|| s.config.service_account.clone()),
            ),
        },
    )
    .await?;
    let transitions = s.runs.transitions(&run.id).await?;
    Ok(Json(render::run(&run, Some(&cat), None, &transitions)))
}

pub(crate) async fn get_run(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let run = exact_run(&s, &id).await?;
    let cat = s.catalog.get_run_catalog(&run.id).await?;
    let tasks = s.runs.list_tasks(&run.id).await?;
    let transitions = s.runs.transitions(&run.id).await?;
    Ok(Json(render::run(
        &run,
        cat.as_ref(),
        Some(&tasks),
        &transitions,
    )))
}

pub(crate) async fn list_runs(
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let experiment = q
        .experiment_id
        .clone()
        .or(q.reference_id.clone())
        .filter(|e| !e.is_empty());
    // The common call (no filter, by creation time) is paged by the database.
    let sort = q.sort_by.as_deref().map(str::trim).unwrap_or("");
    let by_time = match sort {
        "" | "created_at desc" | "created_at DESC" => Some(true),
        "created_at" | "created_at asc" | "created_at ASC" => Some(false),
        _ => None,
    };
    // So is a list filtered on the fields the database can filter.
    if let (Some(desc), Some(filters)) = (by_time, crate::list::run_db_filters(&q)?) {
        let (offset, size) = crate::list::bounds(&q)?;
        let (offset, size) = (offset as u64, size as u64);
        let (rows, total) = s
            .catalog
            .page_runs(experiment.as_deref(), &filters, desc, offset, size)
            .await?;
        let items: Vec<Value> = rows
            .iter()
            .map(|(r, c)| render::run(r, c.as_ref(), None, &[]))
            .collect();
        let next = (offset + (items.len() as u64) < total)
            .then(|| (offset + items.len() as u64).to_string());
        return Ok(Json(render::compact(
            json!({"runs": items, "total_size": total, "next_page_token": next}),
        )));
    }
    let cats: BTreeMap<String, RunCatalog> = s
        .catalog
        .list_run_catalog()
        .await?
        .into_iter()
        .map(|c| (c.run_id.clone(), c))
        .collect();
    let mut items = Vec::new();
    for run in s.runs.list_runs(u32::MAX).await? {
        let cat = cats.get(&run.id);
        if let Some(e) = &experiment {
            if cat.map(|c| &c.experiment_id) != Some(e) {
                continue;
            }
        }
        let mut v = render::run(&run, cat, None, &[]);
        // Filterable even when empty.
        v["storage_state"] = json!(cat
            .map(|c| c.storage_state.clone())
            .unwrap_or_else(|| "AVAILABLE".into()));
        items.push(v);
    }
    list_response("runs", items, &q, "created_at desc", false)
}

/// How long a delete waits for the run it stopped to end.
const DELETE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Deletes a run in any state, as KFP does: one that has not ended is
/// stopped first (its steps and training jobs with it), then its records go.
pub(crate) async fn delete_run(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let run = exact_run(&s, &id).await?;
    if !run.state.is_final() {
        if run.state != RunState::Canceling {
            if let Err(e) = terminate(&s, &run.id).await {
                // Ending by itself meanwhile is as good.
                if !s.runs.get_run(&run.id).await?.state.is_final() {
                    return Err(e);
                }
            }
        }
        let deadline = tokio::time::Instant::now() + DELETE_WAIT;
        loop {
            let now = s.runs.get_run(&run.id).await?;
            if now.state.is_final() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::Conflict(format!(
                    "run {} is still {} after {} s of stopping; delete it again once it has ended",
                    run.id,
                    now.state,
                    DELETE_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    s.catalog.delete_run(&run.id).await?;
    Ok(Json(json!({})))
}

/// Stops a run that has not ended: one nobody executes is canceled here
/// (what its steps left running is stopped); otherwise the process that
/// executes it is asked to.
async fn terminate(s: &AppState, id: &str) -> ApiResult<()> {
    // Nobody executes it: stop what its steps left running and
    // record it canceled here. Otherwise ask the process that does.
    let orphan = match s.engine.cancel_orphan(id).await {
        Ok(done) => done,
        Err(switchyard_engine::EngineError::Store(e)) => return Err(e.into()),
        // It ended meanwhile (a CANCELED one is what was asked).
        Err(_) if s.runs.get_run(id).await?.state.is_final() => {
            finished_first(s, id).await?;
            OrphanCancel::Canceled(Vec::new())
        }
        Err(e) => return Err(ApiError::Conflict(e.to_string())),
    };
    if let OrphanCancel::Canceled(stopped) = &orphan {
        for what in stopped {
            tracing::info!(run = %id, "{what}");
        }
    } else {
        // The flag first, then CANCELING: a run that is still RUNNING
        // then ends CANCELED (the engine never ends a CANCELING run
        // otherwise); one that finished first is reported as such.
        s.runs
            .request_cancel(switchyard_store::Kind::Run, id)
            .await?;
        let moved = s
            .runs
            .transition_run(
                id,
                &[RunState::Running],
                RunState::Canceling,
                RunUpdate::default(),
            )
            .await?;
        // Queued for a slot and never started: nothing of it runs, so it ends
        // here (a first start takes only a PENDING run). A retried or
        // recovered run waits for its cancel in the engine instead: resuming
        // may take a CANCELED run.
        let never_started = !moved && s.runs.get_run(id).await?.started_at.is_none();
        let dequeued = never_started
            && s.runs
                .transition_run(
                    id,
                    &[RunState::Pending],
                    RunState::Canceled,
                    RunUpdate {
                        error: Some("run canceled before it started".into()),
                        finished_at: Some(Utc::now()),
                        ..Default::default()
                    },
                )
                .await?;
        if !moved && !dequeued {
            finished_first(s, id).await?;
        }
    }
    Ok(())
}

/// A terminate whose transition did not apply: 400 when the run ended (other
/// than canceled) before it, so the answer matches the outcome.
async fn finished_first(s: &AppState, id: &str) -> ApiResult<()> {
    let now = s.runs.get_run(id).await?;
    if now.state.is_final() && now.state != RunState::Canceled {
        return Err(ApiError::BadRequest(format!(
            "run {id} is already {}",
            now.state
        )));
    }
    Ok(())
}

/// `POST /runs/{id}:terminate | :retry | :archive | :unarchive`.
pub(crate) async fn run_action(
    State(s): State<AppState>,
    Path(id_action): Path<String>,
) -> ApiResult<Json<Value>> {
    let (id, action) = id_action
        .split_once(':')
        .ok_or_else(|| ApiError::NotFound(format!("no such endpoint: runs/{id_action}")))?;
    let run = exact_run(&s, id).await?;
    match action {
        "terminate" => {
            if run.state.is_final() {
                return Err(ApiError::BadRequest(format!(
                    "run {id} is already {}",
                    run.state
                )));
            }
            terminate(&s, id).await?;
        }
        "retry" => {
            // PENDING at once, so a client polling right after sees the retry.
            let update = RunUpdate {
                reset: true,
                ..Default::default()
            };
            let from = [RunState::Failed, RunState::Canceled];
            // Owned before it is PENDING again (see create_run).
            s.runs
                .set_owner(id, Some(&Holder::current().lease()))
                .await?;
            if !s
                .runs
                .transition_run(id, &from, RunState::Pending, update)
                .await?
            {
                return Err(ApiError::BadRequest(format!(
                    "run {id} is {}; only failed or canceled runs can be retried",
                    run.state
                )));
            }
            s.spawn_run(id.to_string(), true);
        }
        "archive" | "unarchive" => {
            let mut cat =
                s.catalog.get_run_catalog(id).await?.ok_or_else(|| {
                    ApiError::NotFound(format!("run {id} is not in any experiment"))
                })?;
            cat.storage_state = if action == "archive" {
                "ARCHIVED"
            } else {
                "AVAILABLE"
            }
            .into();
            s.catalog.put_run_catalog(&cat).await?;
        }
        other => return Err(ApiError::NotFound(format!("unknown run action '{other}'"))),
    }
    Ok(Json(json!({})))
}
