//! The KFP training-job component's entry point: a pipeline step that submits a
//! TrainingJob, waits for it, and hands back the model and what happened.
//!
//! The component runs `switchyard job run-component --executor-input {{$}}`, so
//! its inputs arrive typed, through the same executor protocol as Python
//! components, and its outputs go to the files the protocol names. Switchyard's
//! own engine does not start that command: it runs the step in-process
//! ([`crate::training_step`], no child process); the command is what a real
//! KFP cluster runs, and both go through [`run_step`].

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};
use switchyard_runner::{EarlierJob, JobRunner, Notice};
use switchyard_store::{JobStore, State};
use tokio_util::sync::CancellationToken;

use crate::config::Paths;

/// Component input name → TrainingJob spec field.
const FIELDS: &[(&str, &str)] = &[
    ("backend", "backend"),
    ("image", "image"),
    ("source_dir", "sourceDir"),
    ("entry_point", "entryPoint"),
    ("command", "command"),
    ("nodes", "nodes"),
    ("procs_per_node", "procsPerNode"),
    ("resources", "resources"),
    ("instance_type", "instanceType"),
    ("hyperparameters", "hyperparameters"),
    ("channels", "channels"),
    ("output", "output"),
    ("checkpoint", "checkpoint"),
    ("env", "env"),
    ("restart_policy", "restartPolicy"),
    ("backoff_limit", "backoffLimit"),
    ("max_runtime_seconds", "maxRuntimeSeconds"),
    ("metrics", "metrics"),
    ("role_arn", "roleArn"),
];

/// Empty strings, lists and maps, and zero runtimes mean "not set".
fn is_unset(field: &str, v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(n) => field == "maxRuntimeSeconds" && n.as_f64() == Some(0.0),
        _ => false,
    }
}

/// What a training-job step knows besides its inputs: from its process's
/// environment (the `run-component` command) or from the engine's job (the
/// step in-process).
#[derive(Debug, Clone, Default)]
pub struct StepEnv {
    /// The run and task the step belongs to (the engine sets them for every task).
    pub run_id: Option<String>,
    pub task: Option<String>,
    /// Relative paths are taken from where `switchyard run` was started.
    pub invocation_dir: PathBuf,
    /// The folder standing in for `/s3/` when the run's root is in S3.
    pub s3_mount: Option<String>,
    /// The run's Kubernetes service account: the job's when it names none.
    pub service_account: Option<String>,
}

impl StepEnv {
    /// From variables as the engine and the local backend set them (`get`
    /// reads one, empty counts as unset); relative paths fall back to this
    /// process's folder.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> StepEnv {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        StepEnv {
            run_id: get("SWITCHYARD_RUN_ID"),
            task: get("SWITCHYARD_TASK"),
            invocation_dir: get("SWITCHYARD_INVOCATION_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))),
            s3_mount: get(switchyard_engine::artifacts::S3_MOUNT_ENV),
            service_account: get(switchyard_engine::SERVICE_ACCOUNT_ENV),
        }
    }

    /// This process's environment.
    pub fn from_process() -> StepEnv {
        Self::from_vars(|k| std::env::var(k).ok())
    }
}

/// Builds the TrainingJob document from the component's parameter values.
pub fn job_document(params: &Map<String, Value>, env: &StepEnv) -> Result<Value> {
    let name = params
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut spec = Map::new();
    for (input, field) in FIELDS {
        if let Some(v) = params.get(*input).filter(|v| !is_unset(field, v)) {
            // The IR carries integers as doubles; the job spec wants integers.
            let v = match v {
                Value::Number(n)
                    if n.as_f64().is_some_and(|f| f.fract() == 0.0) && n.as_i64().is_none() =>
                {
                    json!(n.as_f64().unwrap_or(0.0) as i64)
                }
                other => other.clone(),
            };
            spec.insert(field.to_string(), v);
        }
    }
    if let Some(account) = env
        .service_account
        .as_ref()
        .filter(|_| !spec.contains_key("serviceAccount"))
    {
        spec.insert("serviceAccount".into(), Value::String(account.clone()));
    }
    // The run and task this step belongs to (set by the engine for every task),
    // so the job links back to them (dashboard, SageMaker tags).
    let mut labels = Map::new();
    for (value, label) in [
        (&env.run_id, switchyard_training::LABEL_RUN_ID),
        (&env.task, switchyard_training::LABEL_TASK),
    ] {
        if let Some(v) = value {
            labels.insert(label.to_string(), Value::String(v.clone()));
        }
    }
    Ok(json!({
        "apiVersion": switchyard_training::API_VERSION,
        "kind": "TrainingJob",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    }))
}

fn output_file(exec: &Value, name: &str) -> Option<PathBuf> {
    exec["outputs"]["parameters"][name]["outputFile"]
        .as_str()
        .map(PathBuf::from)
}

fn write_param(exec: &Value, name: &str, value: &str) -> Result<()> {
    if let Some(path) = output_file(exec, name) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, value)
            .with_context(|| format!("cannot write output '{name}' to {}", path.display()))?;
    }
    Ok(())
}

/// What the step needs of its finished job, wherever the job was run.
struct Finished {
    id: String,
    name: String,
    state: String,
    backend: String,
    model: Option<String>,
    metrics: Value,
    failure_reason: Option<String>,
}

impl Finished {
    /// The job as `job_json` shows it (the server's `/apis/switchyard/v1/jobs/{id}`).
    fn from_json(j: &Value) -> Finished {
        let s = |k: &str| j[k].as_str().unwrap_or("").to_string();
        Finished {
            id: s("job_id"),
            name: s("name"),
            state: s("state"),
            backend: s("backend"),
            model: j["model"].as_str().map(str::to_string),
            metrics: j["metrics"].clone(),
            failure_reason: j["failure_reason"].as_str().map(str::to_string),
        }
    }
}

/// Runs the step's job here, or follows the one an earlier attempt of this
/// task submitted: a task that runs again because its process died (a killed
/// server or `switchyard run`, then resumed) re-attaches to its SageMaker
/// training job or PyTorchJob instead of submitting a second one, and reuses
/// one that succeeded. A job that failed or was canceled is a retry's to
/// replace. Progress goes to `notice`; `cancel` stops the job.
async fn run_here(
    runner: &JobRunner,
    job: &switchyard_training::TrainingJob,
    cancel: CancellationToken,
    notice: switchyard_runner::NoticeSink,
) -> Result<switchyard_store::JobRecord> {
    let say = |m: String| notice(Notice::Status(&m));
    loop {
        match runner.earlier_job(job).await? {
            EarlierJob::None => break,
            EarlierJob::Succeeded(earlier) => {
                say(format!(
                    "training job {} of this task succeeded in an earlier attempt; using its result",
                    earlier.id
                ));
                return Ok(*earlier);
            }
            EarlierJob::Adopted(prepared, recorded) => {
                say(format!(
                    "following training job {} that an earlier attempt of this task submitted",
                    prepared.record.id
                ));
                say(super::job::headline(&recorded, &prepared.record.id));
                return Ok(runner.execute(*prepared, &recorded, cancel, notice).await?);
            }
            // Followed by another process: wait for it to end, then look again.
            EarlierJob::FollowedElsewhere(_) => {
                tokio::select! {
                    _ = cancel.cancelled() => bail!("canceled while another process followed the job"),
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        }
    }
    let prepared = runner.prepare(job).await?;
    say(super::job::headline(job, &prepared.record.id));
    Ok(runner.execute(prepared, job, cancel, notice).await?)
}

/// The training-job step, wherever it runs: reads its inputs from the
/// executor input, runs its job here (or, with `server`, on that server),
/// writes the outputs the protocol names and fetches the model into the
/// `model` artifact. An error says why the step failed. A server gives its
/// `--path-root` folders as `roots`: the job's local paths must lie under
/// them, as for a job posted to it.
pub async fn run_step(
    runner: &JobRunner,
    executor_input: &str,
    env: &StepEnv,
    server: Option<&str>,
    roots: Option<&[PathBuf]>,
    cancel: CancellationToken,
    notice: switchyard_runner::NoticeSink,
) -> Result<()> {
    let exec: Value =
        serde_json::from_str(executor_input).context("--executor-input is not JSON")?;
    let params = exec["inputs"]["parameterValues"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let doc = job_document(&params, env)?;
    let job = switchyard_training::load(&doc.to_string(), &env.invocation_dir, &[], None)
        .context("the training-job component's inputs")?;
    if let Some(roots) = roots {
        switchyard_training::check_path_roots(&job, roots)?;
    }
    let rec = match server.filter(|s| !s.is_empty()) {
        Some(url) => Finished::from_json(&super::remote::run_job(url, &job.to_json()).await?),
        None => {
            let rec = run_here(runner, &job, cancel, notice.clone()).await?;
            Finished::from_json(&switchyard_runner::job_json(&rec))
        }
    };
    write_param(&exec, "job_name", &rec.name)?;
    write_param(&exec, "job_id", &rec.id)?;
    write_param(&exec, "state", &rec.state)?;
    write_param(&exec, "backend_used", &rec.backend)?;
    if rec.state != State::Succeeded.as_str() {
        bail!(
            "training job {} ({}) {}: {}",
            rec.name,
            rec.id,
            rec.state,
            rec.failure_reason.clone().unwrap_or_default()
        );
    }
    if let (Some(model), Some(uri)) = (
        &rec.model,
        exec["outputs"]["artifacts"]["model"]["artifacts"][0]["uri"].as_str(),
    ) {
        let dest = PathBuf::from(switchyard_engine::artifacts::path_in_task(
            uri,
            env.s3_mount.as_deref(),
        ));
        runner.fetch_model(&job, model, &dest).await?;
        let metadata = json!({"job_id": rec.id, "backend": rec.backend, "metrics": rec.metrics, "source": model});
        if let Some(out) = exec["outputs"]["outputFile"].as_str() {
            let doc = json!({"artifacts": {"model": {"artifacts": [{"name": "model", "uri": uri, "metadata": metadata}]}}});
            std::fs::write(out, doc.to_string()).with_context(|| format!("cannot write {out}"))?;
        }
    }
    notice(Notice::Status(&format!(
        "training job {} {} (model: {})",
        rec.id,
        rec.state,
        rec.model.unwrap_or_default()
    )));
    Ok(())
}

/// `switchyard job run-component`: the step as its own process (on a real
/// KFP cluster), or, with `server` (`SWITCHYARD_SERVER`, set by the server for
/// steps it runs as Pods), handing its job to that server, so the job is in
/// the server's records and not in a store inside the step's container.
pub async fn run(
    paths: &Paths,
    store: Arc<dyn JobStore>,
    executor_input: &str,
    server: Option<&str>,
) -> Result<i32> {
    let runner = paths.job_runner(store)?;
    let cancel = CancellationToken::new();
    let _interrupted = crate::commands::run::cancel_on_signal(cancel.clone());
    let notice: switchyard_runner::NoticeSink = Arc::new(|n: Notice<'_>| match n {
        Notice::Log { host, rank, line } => eprintln!("[{host}/rank {rank}] {line}"),
        Notice::Status(m) => eprintln!("{m}"),
    });
    run_step(
        &runner,
        executor_input,
        &StepEnv::from_process(),
        server,
        None,
        cancel,
        notice,
    )
    .await?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job a pipeline step submits runs under its run's service account,
    /// unless the job names its own.
    #[test]
    fn a_steps_job_takes_its_runs_service_account() {
        let env = StepEnv::from_vars(|k| {
            (k == switchyard_engine::SERVICE_ACCOUNT_ENV).then(|| "pipeline-runner".to_string())
        });
        let params: Map<String, Value> = serde_json::from_value(json!({"name": "t"})).expect("map");
        let doc = job_document(&params, &env).expect("document");
        assert_eq!(doc["spec"]["serviceAccount"], "pipeline-runner");
        let none = StepEnv::from_vars(|_| None);
        let doc = job_document(&params, &none).expect("document");
        assert!(doc["spec"].get("serviceAccount").is_none());
    }
}
