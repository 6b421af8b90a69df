//! One error type for every endpoint, rendered in KFP's error shape
//! (`{"error", "code", "message", "details"}`, a google.rpc.Status with the
//! older `error` field beside it). Internal details are logged, not sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use switchyard_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The answer to a body over `--max-body-bytes`, however it was noticed.
    pub fn body_too_large() -> Self {
        ApiError::TooLarge(
            "the request body is larger than the server accepts (--max-body-bytes)".into(),
        )
    }

    fn status(&self) -> (StatusCode, i32) {
        // The second number is the google.rpc.Code KFP puts in `code`.
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, 3),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, 5),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, 6),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, 16),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, 7),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, 8),
            ApiError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, 3),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, 13),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::RunNotFound(_)
            | StoreError::NotFound { .. }
            | StoreError::JobNotFound(_) => ApiError::NotFound(e.to_string()),
            StoreError::AlreadyExists { .. } => ApiError::Conflict(e.to_string()),
            StoreError::Ambiguous(_) | StoreError::AmbiguousJob(_) => {
                ApiError::BadRequest(e.to_string())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status();
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "request failed");
                "internal error; see the server log".to_string()
            }
            other => other.to_string(),
        };
        kfp_error(status, code, &message)
    }
}

/// KFP's error document with this status.
pub fn kfp_error(status: StatusCode, code: i32, message: &str) -> Response {
    (
        status,
        Json(json!({"error": message, "code": code, "message": message, "details": []})),
    )
        .into_response()
}

/// The google.rpc.Code KFP would put in `code` for an HTTP status.
pub fn rpc_code(status: StatusCode) -> i32 {
    match status.as_u16() {
        400 | 415 | 422 => 3,
        401 => 16,
        403 => 7,
        404 => 5,
        405 => 12,
        409 => 6,
        413 => 8,
        _ => 2,
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
