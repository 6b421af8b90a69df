//! The CLI against a `switchyard server` (`--server URL`): the same commands,
//! through the KFP REST API, so scripts can target a shared server.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::cli::{OutputFormat, RunArgs};

/// A `switchyard server`: its KFP v2beta1 API and its training-job API.
pub struct Remote {
    /// `http://host:port`, without a trailing slash.
    root: String,
    token: Option<String>,
    agent: ureq::Agent,
}

fn message(v: &Value) -> String {
    match v {
        Value::String(text) => text.chars().take(500).collect(),
        v => v
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    }
}

impl Remote {
    pub fn new(url: &str) -> Remote {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Remote {
            root: url.trim_end_matches('/').to_string(),
            token: std::env::var("SWITCHYARD_AUTH_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
            agent,
        }
    }

    /// `path` starts with `/apis/…`; a path without it is a KFP v2beta1 one.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let url = if path.starts_with("/apis/") {
            format!("{}{path}", self.root)
        } else {
            format!("{}/apis/v2beta1{path}", self.root)
        };
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let resp = match (method, body) {
            ("GET", _) => {
                let mut r = self.agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            (_, b) => {
                let mut r = self.agent.post(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.send_json(b.cloned().unwrap_or_else(|| json!({})))
            }
        };
        let mut resp = resp.with_context(|| format!("cannot reach the server at {url}"))?;
        let status = resp.status();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            bail!("server answered {status}: {}", message(&v));
        }
        Ok(v)
    }

    pub async fn request(
        &self,
        method: &'static str,
        path: String,
        body: Option<Value>,
    ) -> Result<Value> {
        let this = Remote {
            root: self.root.clone(),
            token: self.token.clone(),
            agent: self.agent.clone(),
        };
        tokio::task::spawn_blocking(move || this.call(method, &path, body.as_ref())).await?
    }
}

fn final_state(s: &str) -> bool {
    matches!(s, "SUCCEEDED" | "FAILED" | "CANCELED" | "SKIPPED")
}

fn exit_code(state: &str) -> i32 {
    match state {
        "SUCCEEDED" => 0,
        "CANCELED" => 130,
        _ => 1,
    }
}

/// `switchyard run FILE --server URL`: submit, follow, report.
pub async fn run(server: &str, args: &RunArgs) -> Result<i32> {
    let text = std::fs::read_to_string(&args.pipeline)
        .with_context(|| format!("cannot read pipeline file {}", args.pipeline.display()))?;
    // Parsed here too, so a broken file is reported before anything is sent.
    let parsed = switchyard_kfp_spec::parse_pipeline(&text)
        .with_context(|| format!("{}", args.pipeline.display()))?;
    let params = crate::commands::run::parse_params(&args.params)?;
    let mut spec = json!({ "pipeline_spec": parsed.spec });
    if let Some(p) = parsed.platform_spec {
        spec["platform_spec"] = p;
    }
    let mut body = json!({
        "display_name": args.name.clone().unwrap_or_else(|| parsed_name(&spec)),
        "pipeline_spec": spec,
        "runtime_config": {"parameters": params.into_iter().collect::<BTreeMap<_, _>>()},
    });
    if let Some(root) = &args.pipeline_root {
        body["runtime_config"]["pipeline_root"] = json!(root);
    }
    let remote = Remote::new(server);
    let run = remote.request("POST", "/runs".into(), Some(body)).await?;
    let id = run["run_id"].as_str().unwrap_or_default().to_string();
    let json_out = args.display.output == OutputFormat::Json;
    if !json_out {
        eprintln!("Submitted run {id} to {server}");
    }
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let t0 = std::time::Instant::now();
    loop {
        let run = remote.request("GET", format!("/runs/{id}"), None).await?;
        let tasks = run["run_details"]["task_details"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for t in tasks {
            let key = t["task_id"].as_str().unwrap_or("").to_string();
            let state = t["state"].as_str().unwrap_or("").to_string();
            if seen.get(&key) != Some(&state) && !json_out {
                eprintln!("{:>7.1}s  {key}  {state}", t0.elapsed().as_secs_f64());
            }
            seen.insert(key, state);
        }
        let state = run["state"].as_str().unwrap_or("").to_string();
        if final_state(&state) {
            if json_out {
                println!("{}", serde_json::to_string_pretty(&run)?);
            } else {
                eprintln!("Run {id} {state}");
                if let Some(e) = run["error"]["message"].as_str() {
                    eprintln!("error: {e}");
                }
            }
            return Ok(exit_code(&state));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn parsed_name(spec: &Value) -> String {
    spec["pipeline_spec"]["pipelineInfo"]["name"]
        .as_str()
        .unwrap_or("run")
        .to_string()
}

pub async fn list(server: &str, limit: u32, output: OutputFormat) -> Result<i32> {
    let v = Remote::new(server)
        .request(
            "GET",
            format!("/runs?page_size={limit}&sort_by=created_at%20desc"),
            None,
        )
        .await?;
    if output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    println!("{:<36}  {:<10}  {:<20}  NAME", "RUN ID", "STATE", "CREATED");
    for r in v["runs"].as_array().cloned().unwrap_or_default() {
        println!(
            "{:<36}  {:<10}  {:<20}  {}",
            r["run_id"].as_str().unwrap_or(""),
            r["state"].as_str().unwrap_or(""),
            r["created_at"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(19)
                .collect::<String>(),
            r["display_name"].as_str().unwrap_or("")
        );
    }
    Ok(0)
}

pub async fn get(server: &str, id: &str) -> Result<i32> {
    let v = Remote::new(server)
        .request("GET", format!("/runs/{id}"), None)
        .await?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(0)
}

pub async fn cancel(server: &str, id: &str) -> Result<i32> {
    Remote::new(server)
        .request("POST", format!("/runs/{id}:terminate"), None)
        .await?;
    eprintln!("terminate requested for run {id}");
    Ok(0)
}

/// The server's training-job API.
const JOBS: &str = "/apis/switchyard/v1/jobs";

/// How long a step keeps trying to submit its job to a server that refuses
/// connections: 60 s, or `SWITCHYARD_SUBMIT_PATIENCE_SECONDS`.
fn submit_patience() -> Duration {
    std::env::var("SWITCHYARD_SUBMIT_PATIENCE_SECONDS")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(60), Duration::from_secs)
}

/// Whether a request failed before the server could have seen it (no
/// connection, no such host): only then may a POST be sent again.
fn never_reached(e: &anyhow::Error) -> bool {
    e.chain().any(|c| match c.downcast_ref::<ureq::Error>() {
        Some(ureq::Error::ConnectionFailed | ureq::Error::HostNotFound) => true,
        Some(ureq::Error::Io(io)) => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
        ),
        _ => false,
    })
}

/// How long a step keeps trying to read its job from an unreachable server.
const FOLLOW_PATIENCE: Duration = Duration::from_secs(120);

/// Runs `job` on the server (`POST /apis/switchyard/v1/jobs`) and follows it to
/// its end: a pipeline step inside a cluster hands its training job to the
/// server that runs the pipeline, so the job is recorded, shown and counted
/// there. Ctrl-C or SIGTERM (the step's pod deleted) cancels the job. Returns
/// the job as the server shows it, then prints every rank's log.
pub async fn run_job(server: &str, job: &Value) -> Result<Value> {
    let remote = Remote::new(server);
    // A server that is starting (or a Service whose endpoints are not
    // programmed yet) refuses connections for a moment; the job cannot have
    // reached it then, so the submission is tried again for a while.
    let started = std::time::Instant::now();
    let patience = submit_patience();
    let submitted = loop {
        match remote.request("POST", JOBS.into(), Some(job.clone())).await {
            Err(e) if never_reached(&e) && started.elapsed() < patience => {
                eprintln!("cannot reach {server} yet (retrying): {e:#}");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            other => break other.context("the server refused the training job")?,
        }
    };
    let id = submitted["job_id"]
        .as_str()
        .filter(|id| !id.is_empty())
        .with_context(|| format!("the server answered without a job id: {submitted}"))?
        .to_string();
    eprintln!("Job {id} submitted to {server}");
    let cancel = tokio_util::sync::CancellationToken::new();
    let interrupted = crate::commands::run::cancel_on_signal(cancel.clone());
    let mut shown_events = 0;
    let mut cancel_sent = false;
    let mut failing_since: Option<std::time::Instant> = None;
    let done = loop {
        // A lookup or connection can fail for a moment (a busy cluster DNS); the
        // job goes on regardless, so keep following it for a while.
        let j = match remote.request("GET", format!("{JOBS}/{id}"), None).await {
            Ok(j) => {
                failing_since = None;
                j
            }
            Err(e) if failing_since.is_none_or(|t| t.elapsed() < FOLLOW_PATIENCE) => {
                failing_since.get_or_insert_with(std::time::Instant::now);
                eprintln!("cannot read job {id} (retrying): {e:#}");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            Err(e) => {
                return Err(e.context(format!(
                    "lost job {id} on {server} for {} s",
                    FOLLOW_PATIENCE.as_secs()
                )))
            }
        };
        let events = j["events"].as_array().cloned().unwrap_or_default();
        for e in events.iter().skip(shown_events) {
            eprintln!(
                "{} {}",
                e["state"].as_str().unwrap_or(""),
                e["message"].as_str().unwrap_or("")
            );
        }
        shown_events = shown_events.max(events.len());
        if final_state(j["state"].as_str().unwrap_or("")) {
            break j;
        }
        if interrupted.load(std::sync::atomic::Ordering::SeqCst) && !cancel_sent {
            cancel_sent = true;
            if let Err(e) = remote
                .request("POST", format!("{JOBS}/{id}:cancel"), None)
                .await
            {
                eprintln!("cannot cancel job {id}: {e:#}");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = cancel.cancelled(), if !cancel_sent => {}
        }
    };
    cancel.cancel(); // ends the signal watcher
    match remote
        .request("GET", format!("{JOBS}/{id}/logs"), None)
        .await
    {
        Ok(Value::String(log)) => eprint!("{log}"),
        Ok(other) => eprintln!("{other}"),
        Err(e) => eprintln!("cannot read job {id}'s logs: {e:#}"),
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_was_never_reached_and_an_answer_was() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = Remote::new(&format!("http://127.0.0.1:{port}"))
            .request("POST", JOBS.into(), Some(json!({})))
            .await
            .unwrap_err();
        assert!(never_reached(&e), "{e:#}");
        let answered = anyhow::anyhow!("server answered 500: boom");
        assert!(!never_reached(&answered));
    }
}
