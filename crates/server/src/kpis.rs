//! `GET /apis/switchyard/v1/kpis`: what training took and cost, added up per
//! backend, day or name over a time range ([`switchyard_runner::kpi`]), as
//! JSON or, with `format=csv`, as CSV for QuickSight, Athena or a spreadsheet.

use axum::extract::{Query, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use switchyard_runner::kpi::{self, KpiReport};

use crate::error::{ApiError, ApiResult};
use crate::AppState;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct KpiQuery {
    from: Option<String>,
    to: Option<String>,
    group_by: Option<String>,
    format: Option<String>,
}

/// The report the query asks for (a bad field is a 400 naming it).
pub async fn report_for(
    s: &AppState,
    from: Option<&str>,
    to: Option<&str>,
    group_by: Option<&str>,
) -> ApiResult<KpiReport> {
    Ok(kpi::read(&**s.jobs.store(), from, to, group_by.unwrap_or("")).await?)
}

pub async fn kpis(State(s): State<AppState>, Query(q): Query<KpiQuery>) -> ApiResult<Response> {
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "format: '{other}' is not a format; use json or csv"
            )))
        }
    };
    let report = report_for(
        &s,
        q.from.as_deref(),
        q.to.as_deref(),
        q.group_by.as_deref(),
    )
    .await?;
    Ok(if csv {
        (
            [
                (CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    CONTENT_DISPOSITION,
                    "attachment; filename=\"switchyard-kpis.csv\"",
                ),
            ],
            kpi::to_csv(&report),
        )
            .into_response()
    } else {
        Json(report).into_response()
    })
}
