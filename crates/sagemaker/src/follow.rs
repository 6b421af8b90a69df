//! Following a training job to its end: DescribeTrainingJob on an interval
//! (longer, with jitter, while SageMaker throttles), every secondary status
//! transition shown as an event, the logs tailed between polls, StopTrainingJob
//! on cancel, and the end mapped onto Switchyard's job states.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_sagemaker::operation::describe_training_job::DescribeTrainingJobOutput;
use aws_sdk_sagemaker::types::{SecondaryStatus, TrainingJobStatus};
use aws_sdk_sagemaker::Client;
use rand::Rng;
use switchyard_training::{BackendError, JobEvent, JobEvents, JobState, TrainingOutcome};
use tokio_util::sync::CancellationToken;

use crate::error::{classify, ApiError, Kind};
use crate::logs::LogTail;

/// Consecutive transient failures after which following gives up.
const MAX_TRANSIENT: u32 = 10;

/// The wait between calls: the poll interval, doubled (up to a cap, with ±20%
/// jitter so many followers do not synchronise) while calls are throttled or
/// failing, and back to the interval after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    current: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
            current: base,
            failures: 0,
        }
    }

    pub fn success(&mut self) {
        self.current = self.base;
        self.failures = 0;
    }

    /// Records a failed call; `Err` once transient failures have gone on too long.
    pub fn failure(&mut self, e: &ApiError) -> Result<(), ApiError> {
        match e.kind {
            Kind::Throttled => {}
            Kind::Transient => {
                self.failures += 1;
                if self.failures >= MAX_TRANSIENT {
                    return Err(ApiError {
                        text: format!("{} (gave up after {MAX_TRANSIENT} attempts)", e.text),
                        ..e.clone()
                    });
                }
            }
            Kind::NotFound | Kind::Permanent => return Err(e.clone()),
        }
        self.current = (self.current * 2).min(self.max);
        tracing::debug!(wait = ?self.current, "{e}");
        Ok(())
    }

    /// The next wait, with jitter.
    pub fn next(&self) -> Duration {
        let factor = rand::rng().random_range(0.8..1.2);
        self.current.mul_f64(factor)
    }
}

/// The describe fields a follower acts on, copied out of the SDK's output.
#[derive(Debug, Clone, Default)]
struct Seen {
    transitions: usize,
    running: bool,
    restarts: u32,
}

fn transition_events(d: &DescribeTrainingJobOutput, seen: &mut Seen, events: &JobEvents) {
    let all = d.secondary_status_transitions();
    for t in all.iter().skip(seen.transitions) {
        let status = t.status().map(|s| s.as_str()).unwrap_or("?");
        if t.status() == Some(&SecondaryStatus::Restarting) {
            seen.restarts += 1;
            let _ = events.send(JobEvent::Restarting {
                attempt: seen.restarts,
                reason: t
                    .status_message()
                    .unwrap_or("SageMaker restarted the job")
                    .to_string(),
            });
        }
        let message = match t.status_message() {
            Some(m) if !m.is_empty() => format!("SageMaker: {status} — {m}"),
            _ => format!("SageMaker: {status}"),
        };
        let _ = events.send(JobEvent::Status { message });
    }
    seen.transitions = seen.transitions.max(all.len());
}

/// The outcome a terminal describe means; `None` while the job still runs.
/// Its metrics are SageMaker's FinalMetricDataList; the caller adds the
/// values scraped from the logs for names SageMaker did not report.
fn outcome(d: &DescribeTrainingJobOutput, seen: &Seen) -> Option<TrainingOutcome> {
    let mut metrics = BTreeMap::new();
    let status = d.training_job_status()?;
    let state = match status {
        TrainingJobStatus::Completed => JobState::Succeeded,
        TrainingJobStatus::Failed => JobState::Failed,
        TrainingJobStatus::Stopped => match d.secondary_status() {
            Some(SecondaryStatus::MaxRuntimeExceeded | SecondaryStatus::MaxWaitTimeExceeded) => {
                JobState::Failed
            }
            _ => JobState::Canceled,
        },
        _ => return None,
    };
    for m in d.final_metric_data_list() {
        if let (Some(name), Some(v)) = (m.metric_name(), m.value()) {
            metrics.insert(name.to_string(), v as f64);
        }
    }
    let failure_reason = match state {
        JobState::Succeeded => None,
        JobState::Failed => Some(match d.failure_reason() {
            Some(r) => r.to_string(),
            None => format!(
                "SageMaker stopped the job: {} (spec.maxRuntimeSeconds / maxWaitSeconds)",
                d.secondary_status().map(|s| s.as_str()).unwrap_or("Failed")
            ),
        }),
        JobState::Canceled => Some("the SageMaker training job was stopped".into()),
    };
    Some(TrainingOutcome {
        state,
        restarts: seen.restarts,
        model: d
            .model_artifacts()
            .and_then(|m| m.s3_model_artifacts())
            .filter(|_| state == JobState::Succeeded)
            .map(str::to_string),
        metrics,
        failure_reason,
    })
}

/// Polls `name` until it ends; stops it when `cancel` fires.
pub async fn follow(
    client: &Client,
    name: &str,
    mut logs: Option<LogTail>,
    mut backoff: Backoff,
    events: &JobEvents,
    cancel: &CancellationToken,
) -> Result<TrainingOutcome, BackendError> {
    let mut seen = Seen::default();
    let mut metrics = BTreeMap::new();
    let mut stop_sent = false;
    loop {
        let wait = backoff.next();
        if cancel.is_cancelled() {
            tokio::time::sleep(wait).await;
        } else {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => {}
            }
        }
        // Until SageMaker has taken the stop, it is asked again on every poll.
        if cancel.is_cancelled() && !stop_sent {
            stop_sent = stop(client, name, events).await;
        }
        let described = client
            .describe_training_job()
            .training_job_name(name)
            .send()
            .await;
        let d = match described {
            Ok(d) => {
                backoff.success();
                d
            }
            Err(e) => {
                let e = classify("DescribeTrainingJob", &e);
                backoff.failure(&e).map_err(BackendError::from)?;
                if e.kind == Kind::Throttled {
                    let _ = events.send(JobEvent::Status {
                        message: format!(
                            "SageMaker is throttling; next poll in {:.1} s",
                            backoff.next().as_secs_f64()
                        ),
                    });
                }
                continue;
            }
        };
        transition_events(&d, &mut seen, events);
        read_logs(&mut logs, events, &mut metrics).await;
        let training = d.secondary_status() == Some(&SecondaryStatus::Training)
            || (d.training_start_time().is_some()
                && d.training_job_status() != Some(&TrainingJobStatus::InProgress));
        if training && !seen.running {
            seen.running = true;
            let _ = events.send(JobEvent::Running {
                message: format!("SageMaker training job {name} is training"),
            });
        }
        if let Some(mut done) = outcome(&d, &seen) {
            // The last lines reach CloudWatch shortly after the job ends.
            for _ in 0..3 {
                if read_logs(&mut logs, events, &mut metrics).await == 0 {
                    break;
                }
            }
            for (k, v) in metrics {
                done.metrics.entry(k).or_insert(v);
            }
            return Ok(done);
        }
    }
}

/// Reads new log lines; a failure to read logs never fails the job, it stops
/// the tailing (permanent) or waits for the next round (transient).
async fn read_logs(
    logs: &mut Option<LogTail>,
    events: &JobEvents,
    metrics: &mut BTreeMap<String, f64>,
) -> usize {
    let Some(tail) = logs.as_mut() else { return 0 };
    match tail.poll(events, metrics).await {
        Ok(n) => n,
        Err(e) if e.kind == Kind::Permanent => {
            let _ = events.send(JobEvent::Status {
                message: format!("cannot read the job's CloudWatch logs, not following them: {e}"),
            });
            *logs = None;
            0
        }
        Err(e) => {
            tracing::debug!("logs: {e}");
            0
        }
    }
}

/// Asks SageMaker to stop the job; true once it took the request (or the job
/// cannot be stopped any more because it ended), false to try again later.
pub(crate) async fn stop(client: &Client, name: &str, events: &JobEvents) -> bool {
    let _ = events.send(JobEvent::Status {
        message: format!("stopping SageMaker training job {name} (StopTrainingJob)"),
    });
    for attempt in 0..5u32 {
        match client
            .stop_training_job()
            .training_job_name(name)
            .send()
            .await
        {
            Ok(_) => return true,
            Err(e) => {
                let e = classify("StopTrainingJob", &e);
                match e.kind {
                    Kind::Throttled | Kind::Transient if attempt < 4 => {
                        tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                    }
                    Kind::Throttled | Kind::Transient => {
                        let _ = events.send(JobEvent::Status {
                            message: format!("stop not accepted yet, asking again: {e}"),
                        });
                        return false;
                    }
                    _ => {
                        // A job that already ended cannot be stopped: the next describe says how it ended.
                        let _ = events.send(JobEvent::Status {
                            message: format!("could not stop the job: {e}"),
                        });
                        return true;
                    }
                }
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_under_throttling_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let throttled = ApiError {
            kind: Kind::Throttled,
            text: "ThrottlingException".into(),
            code: None,
        };
        for _ in 0..10 {
            b.failure(&throttled).unwrap();
        }
        assert!(b.next() <= Duration::from_secs_f64(8.0 * 1.2));
        assert!(b.next() >= Duration::from_secs_f64(8.0 * 0.8));
        b.success();
        assert!(b.next() <= Duration::from_secs_f64(1.2));
        let transient = ApiError {
            kind: Kind::Transient,
            ..throttled.clone()
        };
        let results: Vec<bool> = (0..MAX_TRANSIENT)
            .map(|_| b.failure(&transient).is_ok())
            .collect();
        assert_eq!(results.iter().filter(|ok| !**ok).count(), 1);
        let permanent = ApiError {
            kind: Kind::Permanent,
            ..throttled
        };
        assert!(Backoff::new(Duration::from_secs(1), Duration::from_secs(2))
            .failure(&permanent)
            .is_err());
    }
}
