//! Training-job steps run in-process: the engine's backend for pipeline steps,
//! with the training-job component (`switchyard job run-component`) taken out
//! of it. Such a step submits and follows a TrainingJob; starting a process
//! (or a Pod) only to do that from there gains nothing and costs a process
//! that must survive as long as the training, so the binary, which builds
//! every backend, runs the step itself through the same code the command
//! runs ([`run_step`]): the job is recorded with its task link and placement
//! in this process's store, its progress goes to the task's log, and a
//! cancel of the run stops it.

use std::path::PathBuf;
use std::sync::Arc;

use switchyard_backend::{Backend, BackendError, Job, LogSink, StepOutcome, VolumeClaim};
use switchyard_runner::{JobRunner, Notice, NoticeSink};
use tokio_util::sync::CancellationToken;

use crate::commands::component::{run_step, StepEnv};

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
        let env = StepEnv::from_vars(|k| job.env.get(k).cloned());
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
        match run_step(&self.runner, input, &env, None, roots, job_cancel, notice).await {
            Ok(()) => Ok(StepOutcome::Succeeded),
            Err(_) if cancel.is_cancelled() => Ok(StepOutcome::Canceled),
            Err(e) => {
                let message = format!("{e:#}");
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

    use switchyard_backend::fake::ScriptedBackend;
    use switchyard_engine::{Engine, RunOptions};
    use switchyard_runner::{Backends, JobRunner, RunnerError};
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
        let fixture = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../engine/tests/fixtures/fx_training.yaml"
        );
        let text = std::fs::read_to_string(fixture).expect("fixture");
        let pipeline = switchyard_spec::parse_pipeline(&text).expect("kfp-compiled");
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
