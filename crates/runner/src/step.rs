//! The KFP training-job component as a pipeline step: its inputs (through
//! the executor protocol) become a TrainingJob, which is run and followed,
//! and its outputs and model go where the protocol names them.
//!
//! Switchyard's engine runs such a step in-process ([`TrainingSteps`], the
//! engine's step backend with the training-job component taken out of it):
//! starting a process (or a Pod) only to submit and follow a job gains
//! nothing and costs a process that must survive as long as the training.
//! The run and task it belongs to come from the engine's job; the job is
//! recorded with that task link in this process's store, its progress goes
//! to the task's log, and a cancel of the run stops it. The component's own
//! command (`switchyard job run-component`, what a real KFP cluster runs)
//! goes through the same [`Step`].

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Map, Value};
use switchyard_backend::{Backend, BackendError, Job, LogSink, StepOutcome, VolumeClaim};
use switchyard_engine::artifacts::{path_in_task, S3_MOUNT_ENV};
use switchyard_store::{JobRecord, State};
use switchyard_training::TrainingJob;
use tokio_util::sync::CancellationToken;

use crate::{headline, EarlierJob, JobRunner, Notice, NoticeSink, RunnerError};

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
    ("contract", "contract"),
    ("requirements", "requirements"),
    ("placement", "placement"),
    ("kubernetes", "kubernetes"),
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
            s3_mount: get(S3_MOUNT_ENV),
            service_account: get(switchyard_engine::SERVICE_ACCOUNT_ENV),
        }
    }

    /// This process's environment.
    pub fn from_process() -> StepEnv {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// A step the engine hands to a backend: its run, task and service
    /// account are the job's own; where it was invoked and its S3 stand-in
    /// folder are its environment, as for any step.
    pub fn of_job(job: &Job) -> StepEnv {
        StepEnv {
            run_id: Some(job.run_id.clone()).filter(|r| !r.is_empty()),
            task: Some(job.display_name.clone()).filter(|t| !t.is_empty()),
            service_account: job.service_account.clone(),
            ..Self::from_vars(|k| job.env.get(k).cloned())
        }
    }
}

/// Builds the TrainingJob document from the component's parameter values.
pub fn job_document(params: &Map<String, Value>, env: &StepEnv) -> Value {
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
    json!({
        "apiVersion": switchyard_training::API_VERSION,
        "kind": "TrainingJob",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    })
}

fn output_file(exec: &Value, name: &str) -> Option<PathBuf> {
    exec["outputs"]["parameters"][name]["outputFile"]
        .as_str()
        .map(PathBuf::from)
}

fn write_param(exec: &Value, name: &str, value: &str) -> Result<(), RunnerError> {
    let Some(path) = output_file(exec, name) else {
        return Ok(());
    };
    let cannot = |e: std::io::Error| {
        RunnerError::Refused(format!(
            "cannot write output '{name}' to {}: {e}",
            path.display()
        ))
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(cannot)?;
    }
    std::fs::write(&path, value).map_err(cannot)
}

/// What the step needs of its finished job, wherever the job was run.
pub struct Finished {
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
    pub fn from_json(j: &Value) -> Finished {
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
    job: &TrainingJob,
    cancel: CancellationToken,
    notice: NoticeSink,
) -> Result<JobRecord, RunnerError> {
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
                say(headline(&recorded, &prepared.record.id));
                return runner.execute(*prepared, &recorded, cancel, notice).await;
            }
            // Followed by another process: wait for it to end, then look again.
            EarlierJob::FollowedElsewhere(_) => {
                tokio::select! {
                    _ = cancel.cancelled() => return Err(RunnerError::Refused("canceled while another process followed the job".into())),
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        }
    }
    let (job, decision) = runner.place(job).await?;
    let mut prepared = runner.prepare(&job).await?;
    if let Some(d) = &decision {
        runner.record_decision(&mut prepared, d).await;
        say(format!("placement: {}", d.decision.summary()));
    }
    say(headline(&job, &prepared.record.id));
    runner.execute(prepared, &job, cancel, notice).await
}

/// A training-job step read from its executor input: the protocol's
/// document and the job its inputs make.
pub struct Step {
    exec: Value,
    pub job: TrainingJob,
    env: StepEnv,
}

impl Step {
    /// Reads the step's inputs into its TrainingJob. A server gives its
    /// `--path-root` folders as `roots`: the job's local paths must lie
    /// under them, as for a job posted to it.
    pub fn read(
        executor_input: &str,
        env: &StepEnv,
        roots: Option<&[PathBuf]>,
    ) -> Result<Step, RunnerError> {
        let exec: Value = serde_json::from_str(executor_input)
            .map_err(|e| RunnerError::Refused(format!("--executor-input is not JSON: {e}")))?;
        let params = exec["inputs"]["parameterValues"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let doc = job_document(&params, env);
        let job = switchyard_training::load(&doc.to_string(), &env.invocation_dir, &[], None)
            .map_err(|e| {
                RunnerError::Refused(format!("the training-job component's inputs: {e}"))
            })?;
        if let Some(roots) = roots {
            switchyard_training::check_path_roots(&job, roots)
                .map_err(|e| RunnerError::Refused(e.to_string()))?;
        }
        Ok(Step {
            exec,
            job,
            env: env.clone(),
        })
    }

    /// Runs the step's job in this process (or follows the one an earlier
    /// attempt submitted), then [`Step::finish`]es.
    pub async fn run_here(
        &self,
        runner: &JobRunner,
        cancel: CancellationToken,
        notice: NoticeSink,
    ) -> Result<(), RunnerError> {
        let rec = run_here(runner, &self.job, cancel, notice.clone()).await?;
        let finished = Finished::from_json(&crate::job_json(&rec));
        self.finish(runner, &finished, notice).await
    }

    /// Writes the outputs the protocol names from the finished job, and
    /// fetches its model into the `model` artifact. An error says why the
    /// step failed.
    pub async fn finish(
        &self,
        runner: &JobRunner,
        rec: &Finished,
        notice: NoticeSink,
    ) -> Result<(), RunnerError> {
        let exec = &self.exec;
        write_param(exec, "job_name", &rec.name)?;
        write_param(exec, "job_id", &rec.id)?;
        write_param(exec, "state", &rec.state)?;
        write_param(exec, "backend_used", &rec.backend)?;
        if rec.state != State::Succeeded.as_str() {
            return Err(RunnerError::Refused(format!(
                "training job {} ({}) {}: {}",
                rec.name,
                rec.id,
                rec.state,
                rec.failure_reason.clone().unwrap_or_default()
            )));
        }
        if let (Some(model), Some(uri)) = (
            &rec.model,
            exec["outputs"]["artifacts"]["model"]["artifacts"][0]["uri"].as_str(),
        ) {
            let dest = PathBuf::from(path_in_task(uri, self.env.s3_mount.as_deref()));
            runner.fetch_model(&self.job, model, &dest).await?;
            let metadata = json!({"job_id": rec.id, "backend": rec.backend, "metrics": rec.metrics, "source": model});
            if let Some(out) = exec["outputs"]["outputFile"].as_str() {
                let doc = json!({"artifacts": {"model": {"artifacts": [{"name": "model", "uri": uri, "metadata": metadata}]}}});
                std::fs::write(out, doc.to_string())
                    .map_err(|e| RunnerError::Refused(format!("cannot write {out}: {e}")))?;
            }
        }
        notice(Notice::Status(&format!(
            "training job {} {} (model: {})",
            rec.id,
            rec.state,
            rec.model.clone().unwrap_or_default()
        )));
        Ok(())
    }
}

/// The executor input of a training-job step (its argv is exactly the
/// component's command with the input substituted), or `None` for any other.
pub fn executor_input(argv: &[String]) -> Option<&str> {
    match argv {
        [sw, job, rc, flag, input]
            if sw == "switchyard"
                && job == "job"
                && rc == "run-component"
                && flag == "--executor-input" =>
        {
            Some(input)
        }
        _ => None,
    }
}

/// Pipeline steps on `steps`, training-job steps here.
pub struct TrainingSteps {
    steps: Arc<dyn Backend>,
    runner: Arc<JobRunner>,
    /// A server's `--path-root` folders: a step's job may use local paths
    /// under them only, as a job posted to the server (`None` for `switchyard run`).
    roots: Option<Vec<PathBuf>>,
}

impl TrainingSteps {
    pub fn new(steps: Arc<dyn Backend>, runner: JobRunner, roots: Option<Vec<PathBuf>>) -> Self {
        TrainingSteps {
            steps,
            runner: Arc::new(runner),
            roots,
        }
    }
}

#[async_trait::async_trait]
impl Backend for TrainingSteps {
    fn name(&self) -> &'static str {
        self.steps.name()
    }

    /// The steps' own leftovers (Pods) and the training jobs the run's steps
    /// submitted (a SageMaker job, a PyTorchJob), stopped by their identity.
    async fn stop_run(&self, run_id: &str) -> Result<Vec<String>, BackendError> {
        let mut stopped = self.steps.stop_run(run_id).await?;
        let jobs = self.runner.cancel_jobs_of_run(run_id).await;
        stopped.extend(jobs.map_err(|e| BackendError::Retryable(e.to_string()))?);
        Ok(stopped)
    }

    async fn create_volume(&self, claim: &VolumeClaim) -> Result<String, BackendError> {
        self.steps.create_volume(claim).await
    }

    async fn delete_volume(
        &self,
        run_id: &str,
        name: &str,
        local_dir: &std::path::Path,
    ) -> Result<String, BackendError> {
        self.steps.delete_volume(run_id, name, local_dir).await
    }

    fn unhonoured(&self, job: &Job) -> Vec<String> {
        // The job's own backend places it; the step's Pod settings have no Pod.
        if executor_input(&job.argv).is_some() {
            return Vec::new();
        }
        self.steps.unhonoured(job)
    }

    async fn run(
        &self,
        job: Job,
        logs: LogSink,
        cancel: CancellationToken,
    ) -> Result<StepOutcome, BackendError> {
        let Some(input) = executor_input(&job.argv) else {
            return self.steps.run(job, logs, cancel).await;
        };
        let env = StepEnv::of_job(&job);
        let sink = logs.clone();
        let notice: NoticeSink = Arc::new(move |n: Notice<'_>| match n {
            Notice::Log { host, rank, line } => sink(&format!("[{host}/rank {rank}] {line}")),
            Notice::Status(m) => sink(m),
        });
        let roots = self.roots.as_deref();
        // The job gets a token of its own: the runner cancels its token when
        // the job ends (to stop its watchers), which must not read as the
        // engine's cancel of this task, nor reach the task's next attempt.
        let job_cancel = cancel.child_token();
        let ran = match Step::read(input, &env, roots) {
            Ok(step) => step.run_here(&self.runner, job_cancel, notice).await,
            Err(e) => Err(e),
        };
        match ran {
            Ok(()) => Ok(StepOutcome::Succeeded),
            Err(_) if cancel.is_cancelled() => Ok(StepOutcome::Canceled),
            Err(e) => {
                let message = e.to_string();
                logs(&format!("error: {message}"));
                Ok(StepOutcome::Failed {
                    exit_code: None,
                    message,
                })
            }
        }
    }
}

#[cfg(test)]
mod document_tests {
    use super::*;

    /// A job a pipeline step submits runs under its run's service account,
    /// unless the job names its own.
    #[test]
    fn a_steps_job_takes_its_runs_service_account() {
        let env = StepEnv::from_vars(|k| {
            (k == switchyard_engine::SERVICE_ACCOUNT_ENV).then(|| "pipeline-runner".to_string())
        });
        let params: Map<String, Value> = serde_json::from_value(json!({"name": "t"})).expect("map");
        let doc = job_document(&params, &env);
        assert_eq!(doc["spec"]["serviceAccount"], "pipeline-runner");
        let none = StepEnv::from_vars(|_| None);
        let doc = job_document(&params, &none);
        assert!(doc["spec"].get("serviceAccount").is_none());
    }
}

#[cfg(test)]
mod tests {
    use super::executor_input;

    #[test]
    fn only_the_components_exact_command_is_a_training_step() {
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let step = argv(&[
            "switchyard",
            "job",
            "run-component",
            "--executor-input",
            "{}",
        ]);
        assert_eq!(executor_input(&step), Some("{}"));
        for other in [
            argv(&["switchyard", "job", "run-component"]),
            argv(&["python3", "-c", "print(1)"]),
            argv(&["/bin/switchyard", "job", "run", "--executor-input", "{}"]),
        ] {
            assert_eq!(executor_input(&other), None, "{other:?}");
        }
    }
}

/// A pipeline with the training-job component between two steps, on the
/// engine, in this process: the step never reaches the steps' backend.
#[cfg(test)]
mod in_process {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex};

    use crate::{Backends, JobRunner, RunnerError};
    use switchyard_backend::fake::ScriptedBackend;
    use switchyard_engine::{Engine, RunOptions};
    use switchyard_store::{JobStore, RunStore, SqlStore, State};
    use switchyard_training::{
        BackendError, BackendKind, JobEvent, JobEvents, JobState, TrainingBackend, TrainingJob,
        TrainingOutcome,
    };
    use tokio_util::sync::CancellationToken;

    use super::TrainingSteps;

    /// Trains nothing: says one line and hands back a model folder.
    struct Trained {
        model: PathBuf,
        seen: Mutex<Vec<TrainingJob>>,
        /// How the job ends.
        state: JobState,
    }

    #[async_trait::async_trait]
    impl TrainingBackend for Trained {
        fn kind(&self) -> BackendKind {
            BackendKind::Local
        }

        async fn run(
            &self,
            job: &TrainingJob,
            _job_id: &str,
            events: JobEvents,
            _cancel: CancellationToken,
        ) -> Result<TrainingOutcome, BackendError> {
            if let Ok(mut seen) = self.seen.lock() {
                seen.push(job.clone());
            }
            let _ = events.send(JobEvent::Log {
                host: "algo-1".into(),
                rank: 0,
                line: "test_accuracy=0.97".into(),
            });
            let failed = self.state != JobState::Succeeded;
            Ok(TrainingOutcome {
                state: self.state,
                restarts: 0,
                model: (!failed).then(|| self.model.to_string_lossy().into_owned()),
                metrics: BTreeMap::from([("test_accuracy".to_string(), 0.97)]),
                failure_reason: failed.then(|| "loss went to NaN".to_string()),
            })
        }
    }

    struct OneBackend(Arc<Trained>);

    #[async_trait::async_trait]
    impl Backends for OneBackend {
        async fn backend_for(
            &self,
            _: &TrainingJob,
        ) -> Result<Arc<dyn TrainingBackend>, RunnerError> {
            Ok(self.0.clone())
        }

        async fn fetch_model(
            &self,
            _: &TrainingJob,
            model: &str,
            dest: &Path,
        ) -> Result<(), RunnerError> {
            switchyard_backend::files::copy_tree(Path::new(model), dest, &mut Vec::new())
                .map_err(|e| RunnerError::Refused(e.to_string()))
        }
    }

    /// The engine, a fake training backend and a store in `dir`: the
    /// training-job fixture run to its end; `roots` as a server's.
    async fn run_fixture(
        dir: &Path,
        roots: Option<Vec<PathBuf>>,
        state: JobState,
    ) -> (
        switchyard_store::RunRecord,
        Arc<SqlStore>,
        Arc<ScriptedBackend>,
        Arc<Trained>,
    ) {
        let model = dir.join("model");
        std::fs::create_dir_all(&model).expect("model dir");
        std::fs::write(model.join("model.pt"), "weights").expect("model file");
        let store = Arc::new(SqlStore::open(&dir.join("db")).await.expect("store"));
        let trained = Arc::new(Trained {
            model,
            seen: Mutex::default(),
            state,
        });
        let runner = JobRunner::new(
            store.clone(),
            Arc::new(OneBackend(trained.clone())),
            dir.join("jobs"),
        );
        let steps = Arc::new(ScriptedBackend::new());
        let backend = Arc::new(TrainingSteps::new(steps.clone(), runner, roots));
        let engine = Engine::new(store.clone(), backend, dir.join("logs"));
        let fixture = format!(
            "{}/../engine/tests/fixtures/fx_training.yaml",
            std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
        );
        let text = std::fs::read_to_string(fixture).expect("fixture");
        let pipeline = switchyard_kfp_spec::parse_pipeline(&text).expect("kfp-compiled");
        let opts = RunOptions {
            service_account: None,
            parallelism: 2,
            cache: false,
            pipeline_root: dir.join("root"),
            remote_root: None,
            display_name: None,
            id: None,
            schedule_time: None,
        };
        let run = engine
            .create_run(&pipeline, &BTreeMap::new(), &opts)
            .await
            .expect("created");
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let done = engine
            .execute(&run.id, tx, CancellationToken::new(), false)
            .await
            .expect("executed");
        (done, store, steps, trained)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_servers_step_may_not_reach_outside_its_path_roots() {
        let dir = tempfile::tempdir().expect("temp dir");
        // The fixture's job has output: /tmp/fx-out; the server allows only `dir`.
        let roots = vec![dir.path().canonicalize().expect("dir")];
        let (done, store, _, trained) =
            run_fixture(dir.path(), Some(roots), JobState::Succeeded).await;
        assert_eq!(done.state, State::Failed);
        let error = done.error.unwrap_or_default();
        assert!(
            error.contains("spec.output") && error.contains("--path-root"),
            "{error}"
        );
        assert!(trained.seen.lock().expect("seen").is_empty(), "nothing ran");
        assert!(store.list_jobs(10).await.expect("jobs").is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_training_step_runs_in_this_process_and_links_its_job() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (done, store, steps, trained) =
            run_fixture(dir.path(), None, JobState::Succeeded).await;
        let run = &done;
        assert_eq!(done.state, State::Succeeded, "{:?}", done.error);

        // The ordinary steps went to the steps' backend; the training step did not.
        assert_eq!(steps.runs_of("prepare").len(), 1);
        assert_eq!(steps.runs_of("evaluate").len(), 1);
        assert!(
            steps.runs_of("training-job").is_empty(),
            "{:?}",
            steps.ran()
        );
        let seen = trained.seen.lock().expect("seen").clone();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            seen[0].spec.nodes, 2,
            "the component's inputs became the job"
        );

        // One job, linked to its run and task, as a child process recorded it.
        let jobs = store.list_jobs(10).await.expect("jobs");
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].state, State::Succeeded);
        let link = jobs[0].task.clone().expect("task link");
        assert_eq!(
            (link.run_id.as_str(), link.task_key.as_str()),
            (run.id.as_str(), "training-job")
        );

        // The step's outputs, through the executor protocol.
        let task = store
            .get_task(&run.id, "training-job")
            .await
            .expect("task")
            .expect("recorded");
        let outputs = task.outputs.expect("outputs");
        assert_eq!(outputs["parameters"]["state"], "SUCCEEDED", "{outputs}");
        assert_eq!(outputs["parameters"]["job_id"], jobs[0].id.as_str());
        let uri = outputs["artifacts"]["model"][0]["uri"]
            .as_str()
            .expect("model uri");
        let copied = PathBuf::from(switchyard_engine::io::uri_to_path(uri)).join("model.pt");
        assert_eq!(std::fs::read_to_string(&copied).expect("model"), "weights");
        // The job's progress is in the step's log.
        let log = std::fs::read_to_string(task.log_path.expect("log")).expect("log");
        assert!(log.contains("[algo-1/rank 0] test_accuracy=0.97"), "{log}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_training_job_fails_its_step_and_the_run() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (done, store, steps, _) = run_fixture(dir.path(), None, JobState::Failed).await;
        assert_eq!(done.state, State::Failed, "{:?}", done.error);
        let error = done.error.unwrap_or_default();
        assert!(error.contains("loss went to NaN"), "{error}");
        let task = store
            .get_task(&done.id, "training-job")
            .await
            .expect("task")
            .expect("recorded");
        assert_eq!(task.state, State::Failed, "a failure, not a cancel");
        assert!(steps.runs_of("evaluate").is_empty());
    }
}
