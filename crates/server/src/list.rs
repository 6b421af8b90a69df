//! KFP list semantics shared by every list endpoint: `filter` (JSON predicates),
//! `sort_by` (`"created_at desc"`), `page_size` and `page_token`.

use serde::Deserialize;
use serde_json::{Map, Value};
use switchyard_store::{RunField, RunFilter};

use crate::error::{ApiError, ApiResult};

/// The query parameters of a list call.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    pub page_token: Option<String>,
    /// KFP's int32, read as text so that a bad value gets KFP's answer.
    pub page_size: Option<String>,
    pub sort_by: Option<String>,
    pub filter: Option<String>,
    pub experiment_id: Option<String>,
    #[serde(rename = "resource_reference_key.id")]
    pub reference_id: Option<String>,
    /// Single-user server: accepted and ignored.
    #[allow(dead_code)]
    pub namespace: Option<String>,
}

#[derive(Debug)]
struct Predicate {
    op: String,
    key: String,
    value: Value,
}

fn op_name(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.to_ascii_uppercase()),
        Value::Number(n) => Some(
            match n.as_i64()? {
                1 => "EQUALS",
                2 => "NOT_EQUALS",
                3 => "GREATER_THAN",
                5 => "GREATER_THAN_EQUALS",
                6 => "LESS_THAN",
                7 => "LESS_THAN_EQUALS",
                8 => "IN",
                9 => "IS_SUBSTRING",
                _ => return None,
            }
            .to_string(),
        ),
        _ => None,
    }
}

fn parse_filter(text: &str) -> ApiResult<Vec<Predicate>> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| ApiError::BadRequest(format!("filter is not JSON: {e}")))?;
    let preds = v
        .get("predicates")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    preds
        .iter()
        .map(|p| {
            let op = p.get("operation").and_then(op_name).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "filter predicate {p}: unknown or missing operation"
                ))
            })?;
            let key = p.get("key").and_then(Value::as_str).ok_or_else(|| {
                ApiError::BadRequest(format!("filter predicate {p}: missing key"))
            })?;
            let scalar = [
                "string_value",
                "stringValue",
                "int_value",
                "intValue",
                "long_value",
                "longValue",
                "bool_value",
                "boolValue",
                "timestamp_value",
                "timestampValue",
            ]
            .iter()
            .find_map(|k| p.get(*k).cloned());
            let string_given = p.get("string_value").or_else(|| p.get("stringValue")).is_some();
            let list = [
                "string_values",
                "stringValues",
                "int_values",
                "intValues",
                "long_values",
                "longValues",
            ]
            .iter()
            .find_map(|k| p.get(*k))
            .map(|v| v.get("values").cloned().unwrap_or(Value::Array(Vec::new())));
            // KFP's rule: IN takes a list, every other operation one value.
            let value = match (op.as_str(), scalar, list) {
                ("IN", None, Some(list)) => list,
                ("IN", Some(_), _) => {
                    return Err(ApiError::BadRequest(format!(
                        "filter predicate on '{key}': cannot use IN operator with a single value (give string_values)"
                    )))
                }
                (_, Some(v), None) => v,
                (_, None, Some(_)) => {
                    return Err(ApiError::BadRequest(format!(
                        "filter predicate on '{key}': cannot use scalar operator {op} on a list of values"
                    )))
                }
                _ => {
                    return Err(ApiError::BadRequest(format!(
                        "filter predicate {p}: missing value"
                    )))
                }
            };
            if key.starts_with(TAG_PREFIX) {
                if op != "EQUALS" {
                    return Err(ApiError::BadRequest(format!(
                        "only EQUALS operation is supported for tag filtering, got {op} for key \"{key}\""
                    )));
                }
                if !value.is_string() || !string_given {
                    return Err(ApiError::BadRequest(format!(
                        "tag filter value must be a string for key \"{key}\""
                    )));
                }
            }
            Ok(Predicate {
                op,
                key: key.to_string(),
                value,
            })
        })
        .collect()
}

/// The fields KFP's lists filter on (of experiments, pipelines, versions,
/// runs, recurring runs), and the job fields of Switchyard's own list.
const FILTERABLE: &[&str] = &[
    "id",
    "name",
    "display_name",
    "description",
    "created_at",
    "updated_at",
    "finished_at",
    "scheduled_at",
    "last_run_created_at",
    "namespace",
    "storage_state",
    "state",
    "status",
    "experiment_id",
    "pipeline_id",
    "pipeline_version_id",
    "recurring_run_id",
    "run_id",
    "service_account",
];

/// Filter keys on tags: `tags.<key>` (pipelines and versions only).
const TAG_PREFIX: &str = "tags.";

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether `item` passes `p` (a tag predicate only reaches here for items
/// that carry tags: [`page`] refuses it for the others).
fn matches(item: &Map<String, Value>, p: &Predicate) -> ApiResult<bool> {
    if let Some(tag) = p.key.strip_prefix(TAG_PREFIX) {
        let has = item.get("tags").and_then(|t| t.get(tag));
        return Ok(has.is_some_and(|v| text(v) == text(&p.value)));
    }
    let key = if p.key == "name" && !item.contains_key("name") {
        "display_name"
    } else {
        p.key.as_str()
    };
    let empty = Value::String(String::new());
    let field = match item.get(key) {
        Some(field) => field,
        // Rendered items leave empty fields out: those compare as empty.
        None if FILTERABLE.contains(&key) => &empty,
        None => {
            return Err(ApiError::BadRequest(format!(
                "no support for filtering on unrecognized field \"{}\"",
                p.key
            )))
        }
    };
    let (a, b) = (text(field), text(&p.value));
    Ok(match p.op.as_str() {
        "EQUALS" => a == b,
        "NOT_EQUALS" => a != b,
        "IS_SUBSTRING" => a.contains(&b),
        "GREATER_THAN" => a > b,
        "GREATER_THAN_EQUALS" => a >= b,
        "LESS_THAN" => a < b,
        "LESS_THAN_EQUALS" => a <= b,
        "IN" => p
            .value
            .as_array()
            .is_some_and(|vs| vs.iter().any(|v| text(v) == a)),
        other => {
            return Err(ApiError::BadRequest(format!(
                "filter operation {other} is not supported"
            )))
        }
    })
}

fn untaggable(key: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "no support for filtering on unrecognized field \"{key}\" (only pipelines and pipeline versions have tags)"
    ))
}

/// The list's filter as conditions the database applies to runs, when every
/// predicate is one it can (`EQUALS`, `NOT_EQUALS`, `IN` on `run_id`,
/// `display_name`/`name`, `state`, `storage_state`, `recurring_run_id`): such a list is paged by
/// the database. `None`: some predicate needs the in-memory filter.
pub fn run_db_filters(q: &ListQuery) -> ApiResult<Option<Vec<RunFilter>>> {
    let Some(text_filter) = q.filter.as_deref().filter(|f| !f.is_empty()) else {
        return Ok(Some(Vec::new()));
    };
    let mut out = Vec::new();
    for p in parse_filter(text_filter)? {
        let field = match p.key.as_str() {
            "run_id" => RunField::Id,
            "display_name" | "name" => RunField::DisplayName,
            "state" => RunField::State,
            "storage_state" => RunField::StorageState,
            "recurring_run_id" => RunField::RecurringRunId,
            k if k.starts_with(TAG_PREFIX) => return Err(untaggable(k)),
            _ => return Ok(None),
        };
        let (negate, values) = match (p.op.as_str(), p.value.as_array()) {
            ("EQUALS", _) => (false, vec![text(&p.value)]),
            ("NOT_EQUALS", _) => (true, vec![text(&p.value)]),
            ("IN", Some(vs)) => (false, vs.iter().map(text).collect()),
            _ => return Ok(None),
        };
        out.push(RunFilter {
            field,
            negate,
            values,
        });
    }
    Ok(Some(out))
}

/// The `(offset, size)` a list call asks for: `page_size` (default 20, at most
/// 1000) and `page_token` (an offset this server handed out).
pub fn bounds(q: &ListQuery) -> ApiResult<(usize, usize)> {
    let asked = match q.page_size.as_deref().map(str::trim) {
        None | Some("") => 0,
        Some(t) => t.parse::<i32>().map_err(|e| {
            ApiError::BadRequest(format!(
                "parsing field \"page_size\": '{t}' is not a 32-bit integer ({e})"
            ))
        })?,
    };
    let size = match asked {
        0 => 20,
        n if n < 0 => {
            return Err(ApiError::BadRequest(format!(
                "The page size should be greater than 0. Got {n}"
            )))
        }
        n => (n as usize).min(1000),
    };
    let offset: usize = match q.page_token.as_deref().filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => t
            .parse()
            .map_err(|_| ApiError::BadRequest(format!("invalid page_token '{t}'")))?,
    };
    Ok((offset, size))
}

/// One page of items, with the total and the token of the next page.
pub struct Page {
    pub items: Vec<Value>,
    pub total: usize,
    pub next: Option<String>,
}

/// Filters, sorts and pages JSON items (objects). `default_sort` is used when
/// the caller gives none.
/// `taggable`: the items have KFP tags (`tags.<key>` filters apply).
pub fn page(
    mut items: Vec<Value>,
    q: &ListQuery,
    default_sort: &str,
    taggable: bool,
) -> ApiResult<Page> {
    if let Some(f) = q.filter.as_deref().filter(|f| !f.is_empty()) {
        let preds = parse_filter(f)?;
        if let Some(p) = preds
            .iter()
            .find(|p| !taggable && p.key.starts_with(TAG_PREFIX))
        {
            return Err(untaggable(&p.key));
        }
        let mut kept = Vec::new();
        for item in items {
            let obj = item.as_object().cloned().unwrap_or_default();
            let mut ok = true;
            for p in &preds {
                ok &= matches(&obj, p)?;
            }
            if ok {
                kept.push(item);
            }
        }
        items = kept;
    }
    let sort = q
        .sort_by
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or(default_sort);
    let mut parts = sort.split_whitespace();
    let field = parts.next().unwrap_or("created_at").to_string();
    let field = if field == "name" {
        "display_name".to_string()
    } else {
        field
    };
    let desc = match parts.next() {
        None => false,
        Some(d) if d.eq_ignore_ascii_case("asc") => false,
        Some(d) if d.eq_ignore_ascii_case("desc") => true,
        Some(d) => {
            return Err(ApiError::BadRequest(format!(
                "sort_by '{sort}': the direction is asc or desc, not '{d}'"
            )))
        }
    };
    if !items.is_empty() && !items.iter().any(|i| i.get(&field).is_some()) {
        return Err(ApiError::BadRequest(format!(
            "sort_by '{sort}': these items have no field '{field}'"
        )));
    }
    // Names compare as KFP's lists order them, without regard to case.
    items.sort_by(|a, b| {
        let (x, y) = (
            a.get(&field).map(text).unwrap_or_default().to_lowercase(),
            b.get(&field).map(text).unwrap_or_default().to_lowercase(),
        );
        if desc {
            y.cmp(&x)
        } else {
            x.cmp(&y)
        }
    });
    let total = items.len();
    let (offset, size) = bounds(q)?;
    let items: Vec<Value> = items.into_iter().skip(offset).take(size).collect();
    let next = (offset + items.len() < total).then(|| (offset + items.len()).to_string());
    Ok(Page { items, total, next })
}
