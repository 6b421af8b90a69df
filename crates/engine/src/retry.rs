//! KFP retry policies: how many attempts and how long to wait between them.

use std::time::Duration;

use switchyard_spec::RetryPolicy;

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

#[cfg(test)]
mod tests {
    use super::*;

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
