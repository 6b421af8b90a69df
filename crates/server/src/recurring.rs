//! `/apis/v2beta1/recurringruns`: KFP's recurring runs, and the scheduler that
//! fires them.
//!
//! A schedule stores the next slot it has not fired. Firing a slot creates its
//! run under an id derived from the schedule and the slot, then moves the next
//! slot on with a compare-and-set: a second server on the same database (or a
//! restarted one that died between the two writes) finds the run already there
//! and only moves the slot, so no slot is fired twice or lost. Slots missed
//! while no server ran are fired one by one (or only the latest, with
//! `no_catchup`), never more than `max_concurrency` unfinished runs at once.

use axum::extract::{Path, Query, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use switchyard_store::{RecurringRunRecord, RunField, RunFilter, State as RunState};

use crate::error::{ApiError, ApiResult};
use crate::http::list_response;
use crate::list::ListQuery;
use crate::lookup::experiment_of;
use crate::messages::{RuntimeConfig, VersionRef};
use crate::runs::{parse_spec, pipeline_source, run_root, start_run, NewRunOf};
use crate::trigger::{self, Trigger};
use crate::AppState;

/// The body of `POST /recurringruns`.
pub(crate) type NewRecurringRun = crate::messages::RecurringRun;

/// KFP's bounds on `max_concurrency`.
const MAX_CONCURRENCY: i64 = 10;

pub(crate) async fn create(
    State(s): State<AppState>,
    b: crate::http::JsonBody<NewRecurringRun>,
) -> ApiResult<Json<Value>> {
    let b = crate::http::body(b)?;
    let name = b
        .display_name
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| ApiError::BadRequest("Recurring run's name cannot be empty".into()))?;
    let max = trigger::int(b.max_concurrency.as_ref()).unwrap_or(0);
    if !(1..=MAX_CONCURRENCY).contains(&max) {
        let received = b
            .max_concurrency
            .as_ref()
            .map_or_else(|| "nothing".to_string(), Value::to_string);
        return Err(ApiError::BadRequest(format!(
            "Max concurrency of a recurring run must be at least 1 and at most {MAX_CONCURRENCY}. Received {received}"
        )));
    }
    let trig = trigger::parse(b.trigger.as_ref()).map_err(ApiError::BadRequest)?;
    let enabled = match b.mode.as_deref() {
        None | Some("") | Some("MODE_UNSPECIFIED") | Some("ENABLE") => true,
        Some("DISABLE") => false,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "mode '{other}': use ENABLE or DISABLE"
            )))
        }
    };
    let version = b
        .pipeline_version_reference
        .or(b.pipeline_version_id.map(|vid| VersionRef {
            pipeline_id: None,
            pipeline_version_id: Some(vid),
        }));
    // Only a pipeline named: each run takes its latest version, as in KFP.
    let follows_latest = b.pipeline_spec.is_none()
        && version
            .as_ref()
            .is_some_and(|v| v.pipeline_version_id.is_none());
    let (spec, pipeline_id, version_id) = pipeline_source(&s, b.pipeline_spec, version).await?;
    // Everything a fired run needs is checked now, not at its first slot.
    let parsed = parse_spec(&spec).await?;
    switchyard_kfp_spec::validate(&parsed.spec)
        .map_err(|e| ApiError::BadRequest(format!("pipeline_spec: {e}")))?;
    let rc = b.runtime_config.unwrap_or_default();
    switchyard_kfp_spec::params::resolve_pipeline_parameters(&parsed.spec.root, &rc.parameters)
        .map_err(|e| ApiError::BadRequest(format!("runtime_config.parameters: {e}")))?;
    run_root(&s, &rc, parsed.spec.default_pipeline_root.as_deref())?;
    let experiment_id = experiment_of(&s, b.experiment_id).await?;
    let now = Utc::now();
    let r = RecurringRunRecord {
        id: uuid::Uuid::new_v4().to_string(),
        display_name: name,
        description: b.description,
        experiment_id,
        pipeline_id,
        pipeline_version_id: version_id.filter(|_| !follows_latest),
        pipeline_spec: (!follows_latest).then_some(spec),
        runtime_config: serde_json::to_value(&rc).ok(),
        trigger: b.trigger.unwrap_or(Value::Null),
        max_concurrency: max,
        no_catchup: b.no_catchup.unwrap_or(false),
        enabled,
        next_fire: trig.first(now),
        error: None,
        created_at: now,
        updated_at: now,
        service_account: Some(
            b.service_account
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| s.config.service_account.clone()),
        ),
    };
    s.catalog.create_recurring_run(&r).await?;
    Ok(Json(render(&r)))
}

pub(crate) async fn get(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(render(&s.catalog.get_recurring_run(&id).await?)))
}

pub(crate) async fn list(
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let experiment = q.experiment_id.clone().filter(|e| !e.is_empty());
    let items = s
        .catalog
        .list_recurring_runs()
        .await?
        .iter()
        .filter(|r| experiment.as_ref().is_none_or(|e| *e == r.experiment_id))
        .map(render)
        .collect();
    // KFP's proto field name for the list is camelCase.
    list_response("recurringRuns", items, &q, "created_at", false)
}

pub(crate) async fn delete(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    // The runs it fired stay, with their recurring_run_id (as in KFP).
    s.catalog.delete_recurring_run(&id).await?;
    Ok(Json(json!({})))
}

/// `POST /recurringruns/{id}:enable` and `:disable`. Re-enabling keeps the
/// slot the schedule stopped at, so the paused time is caught up (only its
/// latest slot with `no_catchup`), as KFP does.
pub(crate) async fn action(
    State(s): State<AppState>,
    Path(id_action): Path<String>,
) -> ApiResult<Json<Value>> {
    let (id, action) = id_action.split_once(':').ok_or_else(|| {
        ApiError::NotFound(format!("no such endpoint: recurringruns/{id_action}"))
    })?;
    let enabled = match action {
        "enable" => true,
        "disable" => false,
        other => {
            return Err(ApiError::NotFound(format!(
                "unknown recurring run action '{other}' (enable or disable)"
            )))
        }
    };
    s.catalog.set_recurring_run_enabled(id, enabled).await?;
    Ok(Json(json!({})))
}

/// A schedule in KFP's shape (int64 as strings, whole-second times, false
/// and empty fields left out), plus `next_fire_time`, the next slot.
pub(crate) fn render(r: &RecurringRunRecord) -> Value {
    let trig = trigger::parse(Some(&r.trigger));
    let fmt = crate::render::ts;
    let mut v = json!({
        "recurring_run_id": r.id,
        "display_name": r.display_name,
        "description": r.description,
        "max_concurrency": r.max_concurrency.to_string(),
        "trigger": trig.as_ref().map(Trigger::render).unwrap_or_else(|_| r.trigger.clone()),
        "mode": if r.enabled { "ENABLE" } else { "DISABLE" },
        "status": if r.enabled { "ENABLED" } else { "DISABLED" },
        "created_at": fmt(&r.created_at),
        "updated_at": fmt(&r.updated_at),
        "experiment_id": r.experiment_id,
        "service_account": r.service_account,
        "next_fire_time": r.next_fire.as_ref().map(fmt),
    });
    if r.pipeline_id.is_some() {
        v["pipeline_version_reference"] =
            json!({"pipeline_id": r.pipeline_id, "pipeline_version_id": r.pipeline_version_id});
    } else {
        v["pipeline_spec"] = r.pipeline_spec.clone().unwrap_or(Value::Null);
    }
    if let Some(e) = &r.error {
        v["error"] = json!({"code": 9, "message": e});
    }
    if let Some(rc) = r.runtime_config.as_ref().filter(|rc| {
        rc.as_object()
            .is_some_and(|o| o.values().any(|x| !x.is_null() && x != &json!({})))
    }) {
        v["runtime_config"] = rc.clone();
    }
    if r.no_catchup {
        v["no_catchup"] = json!(true);
    }
    crate::render::compact(v)
}

/// Fires due slots every second, for as long as the server runs.
pub fn keep_firing(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let due = match state.catalog.due_recurring_runs(Utc::now()).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the recurring runs");
                    continue;
                }
            };
            for r in due {
                // Its own task: whatever happens to one schedule, the others
                // (and the next tick) still fire.
                let (s, id) = (state.clone(), r.id.clone());
                match tokio::spawn(async move { fire_due(&s, &r).await }).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) if permanent(&e) => {
                        tracing::error!(recurring_run = %id, error = %e, "the recurring run cannot fire; disabled");
                        let why = format!("disabled: its runs cannot start: {e}");
                        if let Err(e) = state.catalog.fail_recurring_run(&id, &why).await {
                            tracing::warn!(recurring_run = %id, error = %e, "could not record why");
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(recurring_run = %id, error = %e, "could not fire the recurring run; trying again");
                    }
                    Err(e) => {
                        tracing::error!(recurring_run = %id, error = %e, "firing the recurring run failed")
                    }
                }
            }
        }
    });
}

/// An error that firing again cannot fix (the pipeline or its version is
/// gone or invalid), as opposed to a store that is briefly unavailable.
fn permanent(e: &ApiError) -> bool {
    matches!(e, ApiError::BadRequest(_) | ApiError::NotFound(_))
}

/// Fires a schedule's due slots, oldest first, while it has room. Each slot
/// is checked against the stored schedule first, so one disabled or deleted
/// meanwhile (or moved on by another server) fires nothing more.
async fn fire_due(s: &AppState, r: &RecurringRunRecord) -> ApiResult<()> {
    let trig = trigger::parse(Some(&r.trigger)).map_err(ApiError::BadRequest)?;
    let mut due = r.next_fire;
    while let Some(d) = due.filter(|d| *d <= Utc::now()) {
        let current = match s.catalog.get_recurring_run(&r.id).await {
            Ok(c) => c,
            Err(switchyard_store::StoreError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if !current.enabled || current.next_fire != Some(d) {
            return Ok(());
        }
        if unfinished_runs(s, &r.id).await? >= r.max_concurrency.max(1) as u64 {
            // The slot waits (it is fired once a run ends).
            return Ok(());
        }
        let (slot, next) = trig.fire(d, Utc::now(), r.no_catchup);
        fire_slot(s, r, slot).await?;
        if !s.catalog.advance_recurring_run(&r.id, d, next).await? {
            // Another server moved it on, or it was disabled meanwhile.
            return Ok(());
        }
        tracing::info!(recurring_run = %r.id, slot = %slot, "fired");
        due = next;
    }
    Ok(())
}

/// Runs of this schedule that have not ended.
async fn unfinished_runs(s: &AppState, id: &str) -> ApiResult<u64> {
    let filters = [
        RunFilter {
            field: RunField::RecurringRunId,
            negate: false,
            values: vec![id.to_string()],
        },
        RunFilter {
            field: RunField::State,
            negate: false,
            values: [RunState::Pending, RunState::Running, RunState::Canceling]
                .iter()
                .map(|st| st.as_str().to_string())
                .collect(),
        },
    ];
    Ok(s.catalog.page_runs(None, &filters, false, 0, 0).await?.1)
}

/// Creates the run of one slot; a slot fired before (by another server, or by
/// this one before it died) is left as it is, its catalog entry completed.
async fn fire_slot(s: &AppState, r: &RecurringRunRecord, slot: DateTime<Utc>) -> ApiResult<()> {
    let key = format!("{}/{}", r.id, slot.timestamp_millis());
    let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, key.as_bytes()).to_string();
    // Named by its pipeline only: the latest version now.
    let (spec, version_id) = match &r.pipeline_spec {
        Some(spec) => (spec.clone(), r.pipeline_version_id.clone()),
        None => {
            let pid = r.pipeline_id.clone().unwrap_or_default();
            let (spec, _, vid) = pipeline_source(
                s,
                None,
                Some(VersionRef {
                    pipeline_id: Some(pid),
                    pipeline_version_id: None,
                }),
            )
            .await?;
            (spec, vid)
        }
    };
    let runtime_config: RuntimeConfig = r
        .runtime_config
        .clone()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| ApiError::Internal(format!("stored runtime config: {e}")))?
        .unwrap_or_default();
    let parsed = parse_spec(&spec).await?;
    let root = match run_root(
        s,
        &runtime_config,
        parsed.spec.default_pipeline_root.as_deref(),
    )? {
        (_, Some(remote)) => remote,
        (local, None) => local.to_string_lossy().into_owned(),
    };
    let new = NewRunOf {
        parsed,
        pipeline_id: r.pipeline_id.clone(),
        version_id,
        experiment_id: r.experiment_id.clone(),
        display_name: Some(format!(
            "{}-{}",
            r.display_name,
            slot.format("%Y%m%d%H%M%S")
        )),
        description: r.description.clone(),
        runtime_config,
        fired_by: Some((r.id.clone(), slot)),
        id: Some(id.clone()),
        service_account: r.service_account.clone(),
    };
    let cat = new.catalog(&id, &root);
    match start_run(s, new).await {
        Ok(_) => Ok(()),
        Err(ApiError::Conflict(_)) => {
            if s.catalog.get_run_catalog(&id).await?.is_none() {
                s.catalog.put_run_catalog(&cat).await?;
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}
