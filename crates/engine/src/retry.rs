//! KFP retry policies: how many attempts and how long to wait between them,
//! and [`after_attempt`], the pure decision of what a container task does
//! when one attempt ends.

use std::time::Duration;

use switchyard_kfp_spec::RetryPolicy;

/// Parses a protobuf-JSON duration (`"1s"`, `"0.5s"`, `"3600s"`), also accepting
/// `ms`, `m` and `h` suffixes that people write by hand.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let secs = num.trim().parse::<f64>().ok()? * mult;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// The wait before retry number `retry` (1-based): backoff × factor^(retry-1),
/// capped by the maximum (default one hour, as in KFP).
pub fn backoff(policy: &RetryPolicy, retry: u32) -> Duration {
    let base = policy
        .backoff_duration
        .as_deref()
        .and_then(parse_duration)
        .unwrap_or(Duration::ZERO);
    let factor = policy.backoff_factor.unwrap_or(2.0).max(1.0);
    let max = policy
        .backoff_max_duration
        .as_deref()
        .and_then(parse_duration)
        .unwrap_or(Duration::from_secs(3600));
    let secs = base.as_secs_f64() * factor.powi(retry.saturating_sub(1).min(60) as i32);
    Duration::from_secs_f64(secs.min(max.as_secs_f64()))
}

/// How one attempt of a container task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptEnd {
    Succeeded,
    Canceled,
    /// The job failed; `retryable` unless the backend said trying again
    /// cannot help (a permanent backend error).
    Failed {
        message: String,
        retryable: bool,
    },
}

/// What the task does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptNext {
    /// Collect the outputs and record the success.
    Succeed,
    Cancel,
    /// Run attempt number `attempt` (`retry` of the policy's, 1-based) after `wait`.
    Retry {
        attempt: u32,
        retry: u32,
        wait: Duration,
    },
    Fail {
        message: String,
    },
}

/// The task's next step after attempt `attempt` ended as `end`. Attempt
/// numbers go on across executions of the run (a resume, a retry), so
/// `first_attempt` is where this execution started: the policy counts this
/// execution's retries, as KFP counts a run's.
pub fn after_attempt(
    policy: &RetryPolicy,
    first_attempt: u32,
    attempt: u32,
    end: AttemptEnd,
) -> AttemptNext {
    match end {
        AttemptEnd::Succeeded => AttemptNext::Succeed,
        AttemptEnd::Canceled => AttemptNext::Cancel,
        AttemptEnd::Failed { message, retryable } => {
            let retries = attempt.saturating_sub(first_attempt);
            if retryable && retries < policy.max_retry_count {
                AttemptNext::Retry {
                    attempt: attempt + 1,
                    retry: retries + 1,
                    wait: backoff(policy, retries + 1),
                }
            } else {
                AttemptNext::Fail { message }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_follows_an_attempt() {
        let policy = RetryPolicy {
            max_retry_count: 2,
            backoff_duration: Some("10s".into()),
            backoff_factor: Some(3.0),
            backoff_max_duration: None,
        };
        let failed = |retryable| AttemptEnd::Failed {
            message: "boom".into(),
            retryable,
        };
        let fail = AttemptNext::Fail {
            message: "boom".into(),
        };
        let retry = |attempt, retry, secs| AttemptNext::Retry {
            attempt,
            retry,
            wait: Duration::from_secs(secs),
        };
        // (first attempt of this execution, attempt that ended, how) → next.
        let table = [
            (0, 0, AttemptEnd::Succeeded, AttemptNext::Succeed),
            (0, 1, AttemptEnd::Canceled, AttemptNext::Cancel),
            (0, 0, failed(true), retry(1, 1, 10)),
            (0, 1, failed(true), retry(2, 2, 30)),
            (0, 2, failed(true), fail.clone()),
            (0, 0, failed(false), fail.clone()),
            // A resumed run: attempts 0 and 1 were an earlier execution's.
            (2, 2, failed(true), retry(3, 1, 10)),
            (2, 4, failed(true), fail.clone()),
        ];
        for (first, attempt, end, want) in table {
            assert_eq!(
                after_attempt(&policy, first, attempt, end.clone()),
                want,
                "first {first}, attempt {attempt}, {end:?}"
            );
        }
        let none = RetryPolicy::default();
        assert_eq!(after_attempt(&none, 0, 0, failed(true)), fail);
    }

    #[test]
    fn durations_and_backoff() {
        assert_eq!(parse_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_duration("0.5s"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("x"), None);
        let p = RetryPolicy {
            max_retry_count: 3,
            backoff_duration: Some("1s".into()),
            backoff_factor: Some(2.0),
            backoff_max_duration: Some("3s".into()),
        };
        assert_eq!(backoff(&p, 1), Duration::from_secs(1));
        assert_eq!(backoff(&p, 2), Duration::from_secs(2));
        assert_eq!(backoff(&p, 3), Duration::from_secs(3));
    }
}
