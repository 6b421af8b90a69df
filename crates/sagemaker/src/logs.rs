//! CloudWatch Logs → per-host log files and live log events, the way local
//! ranks' output is shown. SageMaker writes one stream per instance
//! (`<job>/algo-<n>-<epoch>`) in `/aws/sagemaker/TrainingJobs`; streams appear
//! only once an instance starts, so a missing group or stream means "not yet".

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use aws_sdk_cloudwatchlogs::Client;
use switchyard_training::{JobEvent, JobEvents, MetricScraper};

use crate::error::{classify, ApiError, Kind};

/// SageMaker's log group for training jobs.
pub const LOG_GROUP: &str = "/aws/sagemaker/TrainingJobs";

struct Stream {
    host: String,
    rank: u32,
    token: Option<String>,
    file: Option<std::fs::File>,
}

/// Follows every stream of one training job.
pub struct LogTail {
    client: Client,
    prefix: String,
    dir: PathBuf,
    procs_per_node: u32,
    scraper: MetricScraper,
    streams: BTreeMap<String, Stream>,
}

/// `<job>/algo-2-1700000000` → (`algo-2`, 1).
fn host_of(stream: &str) -> (String, u32) {
    let tail = stream.rsplit('/').next().unwrap_or(stream);
    let host = match tail.rsplit_once('-') {
        Some((h, epoch)) if epoch.chars().all(|c| c.is_ascii_digit()) && h.starts_with("algo-") => {
            h
        }
        _ => tail,
    };
    (
        host.to_string(),
        switchyard_training::slots::host_index(host).unwrap_or(0),
    )
}

impl LogTail {
    pub fn new(
        client: Client,
        job_name: &str,
        dir: PathBuf,
        procs_per_node: u32,
        scraper: MetricScraper,
    ) -> Self {
        LogTail {
            client,
            prefix: format!("{job_name}/"),
            dir,
            procs_per_node,
            scraper,
            streams: BTreeMap::new(),
        }
    }

    /// Reads what is new in every stream; returns the number of lines. Lines go
    /// to `<dir>/<host>-rank-<first rank of the host>.log` and to `events`;
    /// metric values found in them into `metrics`.
    pub async fn poll(
        &mut self,
        events: &JobEvents,
        metrics: &mut BTreeMap<String, f64>,
    ) -> Result<usize, ApiError> {
        let mut pages = self
            .client
            .describe_log_streams()
            .log_group_name(LOG_GROUP)
            .log_stream_name_prefix(&self.prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    let e = classify("DescribeLogStreams", &e);
                    return if e.kind == Kind::NotFound {
                        Ok(0)
                    } else {
                        Err(e)
                    };
                }
            };
            for s in page.log_streams() {
                if let Some(name) = s.log_stream_name() {
                    if !self.streams.contains_key(name) {
                        let (host, index) = host_of(name);
                        self.streams.insert(
                            name.to_string(),
                            Stream {
                                host,
                                rank: switchyard_training::slots::Slot {
                                    node: index,
                                    local_rank: 0,
                                }
                                .rank(self.procs_per_node),
                                token: None,
                                file: None,
                            },
                        );
                    }
                }
            }
        }
        let mut lines = 0;
        let names: Vec<String> = self.streams.keys().cloned().collect();
        for name in names {
            lines += self.read_stream(&name, events, metrics).await?;
        }
        Ok(lines)
    }

    async fn read_stream(
        &mut self,
        name: &str,
        events: &JobEvents,
        metrics: &mut BTreeMap<String, f64>,
    ) -> Result<usize, ApiError> {
        let mut lines = 0;
        loop {
            let Some(stream) = self.streams.get_mut(name) else {
                return Ok(lines);
            };
            let out = self
                .client
                .get_log_events()
                .log_group_name(LOG_GROUP)
                .log_stream_name(name)
                .start_from_head(true)
                .set_next_token(stream.token.clone())
                .send()
                .await;
            let out = match out {
                Ok(o) => o,
                Err(e) => {
                    let e = classify("GetLogEvents", &e);
                    return if e.kind == Kind::NotFound {
                        Ok(lines)
                    } else {
                        Err(e)
                    };
                }
            };
            let batch = out.events();
            if stream.file.is_none() && !batch.is_empty() {
                std::fs::create_dir_all(&self.dir).ok();
                let path =
                    switchyard_training::slots::rank_log(&self.dir, &stream.host, stream.rank);
                stream.file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| tracing::warn!("cannot write {}: {e}", path.display()))
                    .ok();
            }
            for ev in batch {
                let text = ev.message().unwrap_or_default();
                for line in text.lines() {
                    if let Some(f) = stream.file.as_mut() {
                        let _ = writeln!(f, "{line}");
                    }
                    for (m, v) in self.scraper.scrape(line) {
                        metrics.insert(m.clone(), v);
                        let _ = events.send(JobEvent::Metric { name: m, value: v });
                    }
                    let _ = events.send(JobEvent::Log {
                        host: stream.host.clone(),
                        rank: stream.rank,
                        line: line.to_string(),
                    });
                    lines += 1;
                }
            }
            let next = out.next_forward_token().map(str::to_string);
            let done = batch.is_empty() || next.is_none() || next == stream.token;
            stream.token = next.or(stream.token.take());
            if done {
                return Ok(lines);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn hosts_from_stream_names() {
        assert_eq!(host_of("job-1/algo-1-1700000000"), ("algo-1".into(), 0));
        assert_eq!(host_of("job-1/algo-3-1700000000"), ("algo-3".into(), 2));
        assert_eq!(host_of("job-1/odd"), ("odd".into(), 0));
    }
}
