//! The dashboard's files, built into the binary: one HTML page, its script and
//! its stylesheet, plain browser JavaScript with no build step and nothing
//! fetched from the internet. They hold no data, so they are served without
//! the API token; the page asks for the token and sends it with every call.

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

const INDEX: &str = include_str!("../ui/index.html");
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/app.js"),
    ),
    (
        "graph.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/graph.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../ui/app.css"),
    ),
];

/// True for paths that serve the dashboard's files.
pub fn is_asset_path(path: &str) -> bool {
    path == "/" || path == "/favicon.ico" || path.starts_with("/ui/")
}

pub async fn index() -> Response {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-cache"),
        ],
        INDEX,
    )
        .into_response()
}

pub async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    let (_, ty, body) = ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or_else(|| ApiError::NotFound(format!("no dashboard file '{name}'")))?;
    Ok(([(CONTENT_TYPE, *ty), (CACHE_CONTROL, "no-cache")], *body).into_response())
}

/// No icon: an empty answer instead of a 404 in every browser console.
pub async fn favicon() -> axum::http::StatusCode {
    axum::http::StatusCode::NO_CONTENT
}
