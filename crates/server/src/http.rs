//! What every handler shares: reading a JSON body into KFP's errors, one
//! list page in KFP's shape, and parsing off the runtime.

use axum::extract::rejection::JsonRejection;
use axum::Json;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::list::{page, ListQuery};

pub(crate) type JsonBody<T> = Result<Json<T>, JsonRejection>;

pub(crate) fn body<T>(b: JsonBody<T>) -> ApiResult<T> {
    b.map(|Json(v)| v).map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::body_too_large()
        } else {
            ApiError::BadRequest(format!("invalid request body: {}", e.body_text()))
        }
    })
}

/// `{<field>: [...], total_size, next_page_token}` for one page of `items`;
/// `taggable`: the items carry KFP tags (`tags.<key>` filters apply).
pub(crate) fn list_response(
    field: &str,
    items: Vec<Value>,
    q: &ListQuery,
    default_sort: &str,
    taggable: bool,
) -> ApiResult<Json<Value>> {
    let p = page(items, q, default_sort, taggable)?;
    // The items come rendered: only this level is compacted (a pipeline
    // spec's own empty fields are part of it).
    let mut out = serde_json::Map::new();
    if !p.items.is_empty() {
        out.insert(field.to_string(), Value::Array(p.items));
    }
    out.insert("total_size".into(), json!(p.total));
    if let Some(next) = p.next {
        out.insert("next_page_token".into(), json!(next));
    }
    Ok(Json(Value::Object(out)))
}

/// Parsing on a blocking thread: a large spec takes seconds to parse, and the
/// runtime's workers must keep answering other requests meanwhile.
pub(crate) async fn off_runtime<T: Send + 'static>(
    parse: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(parse)
        .await
        .map_err(|e| ApiError::Internal(format!("parsing the pipeline failed: {e}")))?
}
