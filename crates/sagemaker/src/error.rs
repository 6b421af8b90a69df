//! Sorting AWS errors into what to do about them: wait longer (throttling),
//! try again (a 5xx, a timeout, a dropped connection), or stop and report the
//! service's own error code and message (everything else).

use aws_sdk_sagemaker::config::http::HttpResponse;
use aws_sdk_sagemaker::error::{ProvideErrorMetadata, SdkError};

/// What kind of failure an API call had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Throttled,
    Transient,
    /// The named resource does not exist (yet).
    NotFound,
    Permanent,
}

/// One failed API call, ready to show.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub kind: Kind,
    /// `Code: message` from the service, or what went wrong on the way.
    pub text: String,
    pub code: Option<String>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Throttling and transient failures (those that outlasted the backoff) are
/// `Retryable`: the job may still run, and the runner re-attaches to it
/// instead of recording it ended. Anything else is the service's refusal.
impl From<ApiError> for switchyard_training::BackendError {
    fn from(e: ApiError) -> Self {
        match e.kind {
            Kind::Throttled | Kind::Transient => Self::Retryable(e.text),
            Kind::NotFound | Kind::Permanent => Self::Permanent(e.text),
        }
    }
}

const THROTTLING: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "SlowDown",
    "RequestThrottled",
];
const NOT_FOUND: &[&str] = &[
    "ResourceNotFound",
    "ResourceNotFoundException",
    "NoSuchKey",
    "NotFound",
];

/// Classifies any SDK error (SageMaker, CloudWatch Logs and S3 share the type).
pub fn classify<E>(operation: &str, err: &SdkError<E, HttpResponse>) -> ApiError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            let code = e.code().map(str::to_string);
            let message = e.message().unwrap_or("no message").to_string();
            let status_5xx = se.raw().status().as_u16() >= 500;
            let c = code.as_deref().unwrap_or("");
            // DescribeTrainingJob answers a missing job with ValidationException.
            let missing = NOT_FOUND.contains(&c)
                || (c == "ValidationException"
                    && (message.contains("not found") || message.contains("Could not find")));
            let kind = if THROTTLING.contains(&c) {
                Kind::Throttled
            } else if missing {
                Kind::NotFound
            } else if status_5xx
                || matches!(
                    c,
                    "InternalFailure"
                        | "InternalServerError"
                        | "ServiceUnavailable"
                        | "ServiceUnavailableException"
                )
            {
                Kind::Transient
            } else {
                Kind::Permanent
            };
            ApiError {
                kind,
                text: format!(
                    "{operation}: {}: {message}",
                    code.as_deref().unwrap_or("error")
                ),
                code,
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ApiError {
                kind: Kind::Transient,
                text: format!("{operation}: {}", describe_chain(err)),
                code: None,
            }
        }
        _ => ApiError {
            kind: Kind::Permanent,
            text: format!("{operation}: {}", describe_chain(err)),
            code: None,
        },
    }
}

/// The error and its causes on one line (the SDK's Display is only the top).
fn describe_chain(err: &dyn std::error::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !parts.contains(&s) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}
