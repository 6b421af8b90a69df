//! The engine's DAG rules on a scripted backend and the in-memory store,
//! under tokio's paused clock: skip propagation, ignore_upstream_failure,
//! retries with backoff, a cancel during a backoff, resume keeping
//! successes, exit handlers, a run lost to another process. The pipelines
//! are compiled by the real kfp SDK (tests/pipelines/engine_fixtures.py →
//! tests/fixtures, `scripts/compile-fixtures`); nothing here needs Python.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use switchyard_backend::fake::{Scripted, ScriptedBackend};
use switchyard_backend::{Backend, BackendError, Job, LogSink, StepOutcome};
use switchyard_engine::{Engine, EngineError, OrphanCancel, RunOptions};
use switchyard_kfp_spec::parse_pipeline;
use switchyard_store::{Kind, Lease, LifecycleStore, MemoryStore, RunRecord, RunStore, State};
use tokio_util::sync::CancellationToken;

struct Fixture {
    engine: Engine,
    store: Arc<MemoryStore>,
    backend: Arc<ScriptedBackend>,
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(MemoryStore::new());
        let backend = Arc::new(ScriptedBackend::new());
        let engine = Engine::new(store.clone(), backend.clone(), dir.path().join("logs"));
        Fixture {
            engine,
            store,
            backend,
            root: dir.path().join("root"),
            _dir: dir,
        }
    }

    async fn create(&self, fixture: &str) -> RunRecord {
        self.create_with(fixture, &[]).await
    }

    async fn create_with(&self, fixture: &str, params: &[(&str, &str)]) -> RunRecord {
        let path = format!(
            "{}/tests/fixtures/{fixture}.yaml",
            // At run time: a binary built by another checkout sharing the
            // target folder must read this checkout's fixtures.
            std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
        );
        let text = std::fs::read_to_string(&path).expect("fixture (scripts/compile-fixtures)");
        let pipeline = parse_pipeline(&text).expect("a kfp-compiled pipeline");
        let opts = RunOptions {
            service_account: None,
            parallelism: 4,
            cache: false,
            pipeline_root: self.root.clone(),
            remote_root: None,
            display_name: None,
            id: None,
            schedule_time: None,
        };
        self.engine
            .create_run(
                &pipeline,
                &params
                    .iter()
                    .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
                    .collect(),
                &opts,
            )
            .await
            .expect("run created")
    }

    async fn execute(&self, id: &str, resume: bool) -> Result<RunRecord, EngineError> {
        self.execute_until(id, resume, CancellationToken::new())
            .await
    }

    async fn execute_until(
        &self,
        id: &str,
        resume: bool,
        cancel: CancellationToken,
    ) -> Result<RunRecord, EngineError> {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        self.engine.execute(id, tx, cancel, resume).await
    }

    /// Each task's state and attempt, by task key.
    async fn tasks(&self, run: &str) -> BTreeMap<String, (State, u32)> {
        self.store
            .list_tasks(run)
            .await
            .expect("tasks")
            .into_iter()
            .map(|t| (t.task_key, (t.state, t.attempt)))
            .collect()
    }
}

fn fail(message: &str) -> Scripted {
    Scripted::Fail(message.to_string())
}

#[tokio::test(start_paused = true)]
async fn a_failure_skips_its_dependents_only_and_ignore_upstream_failure_still_runs() {
    let f = Fixture::new();
    f.backend.script("train", [fail("diverged")]);
    let run = f.create("fx_dag").await;
    let done = f.execute(&run.id, false).await.expect("executed");
    assert_eq!(done.state, State::Failed);
    assert!(
        done.error.as_deref().unwrap_or("").contains("diverged"),
        "the run's error names the failure: {:?}",
        done.error
    );
    let tasks = f.tasks(&run.id).await;
    assert_eq!(tasks["prepare"].0, State::Succeeded);
    assert_eq!(tasks["train"].0, State::Failed);
    assert_eq!(tasks["report"].0, State::Succeeded, "independent of train");
    assert_eq!(
        tasks["cleanup"].0,
        State::Succeeded,
        "ignore_upstream_failure runs after a failed upstream"
    );
    assert_ne!(tasks.get("evaluate").map(|t| t.0), Some(State::Succeeded));
    assert!(
        f.backend.runs_of("evaluate").is_empty(),
        "a dependent of a failed task never runs"
    );
}

#[tokio::test(start_paused = true)]
async fn retries_wait_their_backoff_and_number_their_attempts() {
    let f = Fixture::new();
    f.backend.script("train", [fail("flaky"), fail("flaky")]);
    let run = f.create("fx_retry").await;
    let started = tokio::time::Instant::now();
    let done = f.execute(&run.id, false).await.expect("executed");
    let waited = started.elapsed();
    assert_eq!(done.state, State::Succeeded, "{:?}", done.error);
    let attempts = f.backend.runs_of("train");
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    assert!(
        attempts
            .iter()
            .zip(["-0", "-1", "-2"])
            .all(|(id, n)| id.ends_with(n)),
        "one job id per attempt: {attempts:?}"
    );
    assert_eq!(f.tasks(&run.id).await["train"], (State::Succeeded, 2));
    // 60 s then 120 s (backoffFactor 2), on the paused clock.
    assert!(
        waited >= Duration::from_secs(180) && waited < Duration::from_secs(240),
        "waited {waited:?}"
    );
    assert_eq!(f.backend.runs_of("evaluate").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn retries_stop_at_max_retry_count() {
    let f = Fixture::new();
    f.backend.script("train", (0..10).map(|_| fail("always")));
    let run = f.create("fx_retry").await;
    let done = f.execute(&run.id, false).await.expect("executed");
    assert_eq!(done.state, State::Failed);
    assert_eq!(f.backend.runs_of("train").len(), 4, "1 + maxRetryCount 3");
    assert!(f.backend.runs_of("evaluate").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_cancel_during_a_backoff_ends_the_run_without_another_attempt() {
    let f = Fixture::new();
    f.backend.script("train", (0..10).map(|_| fail("always")));
    let run = f.create("fx_retry").await;
    let cancel = CancellationToken::new();
    let stopper = cancel.clone();
    tokio::spawn(async move {
        // The first attempt fails at once; the first backoff is 60 s.
        tokio::time::sleep(Duration::from_secs(30)).await;
        stopper.cancel();
    });
    let started = tokio::time::Instant::now();
    let done = f
        .execute_until(&run.id, false, cancel)
        .await
        .expect("executed");
    assert_eq!(done.state, State::Canceled);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the backoff was not waited out: {:?}",
        started.elapsed()
    );
    assert_eq!(f.backend.runs_of("train").len(), 1);
    assert!(f.backend.runs_of("evaluate").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_resumed_run_keeps_its_successes_and_continues_the_attempt_numbers() {
    let f = Fixture::new();
    f.backend.script("train", [fail("first time")]);
    let run = f.create("fx_dag").await;
    assert_eq!(
        f.execute(&run.id, false).await.expect("executed").state,
        State::Failed
    );
    let done = f.execute(&run.id, true).await.expect("resumed");
    assert_eq!(done.state, State::Succeeded, "{:?}", done.error);
    assert_eq!(
        f.backend.runs_of("prepare").len(),
        1,
        "prepare succeeded before; a resume keeps it"
    );
    let train = f.backend.runs_of("train");
    assert_eq!(train.len(), 2);
    assert!(
        train[1].ends_with("-1"),
        "attempt numbers go on across a resume (a new job name): {train:?}"
    );
    assert_eq!(f.tasks(&run.id).await["train"], (State::Succeeded, 1));
    assert_eq!(f.backend.runs_of("evaluate").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_exit_handler_runs_after_its_body_fails() {
    let f = Fixture::new();
    // Tasks are named by their path in the run.
    f.backend.script("exit-handler-1/train", [fail("boom")]);
    let run = f.create("fx_exit").await;
    let done = f.execute(&run.id, false).await.expect("executed");
    assert_eq!(done.state, State::Failed, "the body's failure is the run's");
    assert_eq!(f.backend.runs_of("exit-handler-1/prepare").len(), 1);
    assert_eq!(f.backend.runs_of("cleanup").len(), 1);
    let order: Vec<String> = f
        .backend
        .ran()
        .into_iter()
        .map(|j| j.display_name)
        .collect();
    assert_eq!(
        order.last().map(String::as_str),
        Some("cleanup"),
        "{order:?}"
    );
    assert_eq!(f.tasks(&run.id).await["cleanup"].0, State::Succeeded);
}

/// Takes the run over for another process the moment `train` ends: the
/// engine's next write (train's success) comes before any lease check could
/// notice, so only the store's owner fence stops it.
struct TakenOverWhenTrainEnds {
    inner: Arc<ScriptedBackend>,
    store: Arc<MemoryStore>,
}

#[async_trait::async_trait]
impl Backend for TakenOverWhenTrainEnds {
    fn name(&self) -> &'static str {
        "taken-over"
    }

    async fn run(
        &self,
        job: Job,
        logs: LogSink,
        cancel: CancellationToken,
    ) -> Result<StepOutcome, BackendError> {
        let (task, run) = (
            job.display_name.clone(),
            job.env["SWITCHYARD_RUN_ID"].clone(),
        );
        let outcome = self.inner.run(job, logs, cancel).await;
        if task == "train" {
            let other = elsewhere();
            self.store
                .set_owner(&run, Some(&other))
                .await
                .expect("owner");
        }
        outcome
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_taken_over_by_another_process_is_written_no_more() {
    let mut f = Fixture::new();
    let backend = Arc::new(TakenOverWhenTrainEnds {
        inner: f.backend.clone(),
        store: f.store.clone(),
    });
    f.engine = Engine::new(f.store.clone(), backend, f.root.join("logs"));
    let run = f.create("fx_dag").await;
    match f.execute(&run.id, false).await {
        Err(EngineError::LeaseLost { owner, .. }) => assert_eq!(owner, "elsewhere/1/1"),
        other => panic!("expected the lease to be lost, got {other:?}"),
    }
    let tasks = f.tasks(&run.id).await;
    assert_eq!(
        tasks["train"].0,
        State::Running,
        "the lost process wrote nothing after the take-over"
    );
    assert!(f.backend.runs_of("evaluate").is_empty());
    assert_eq!(
        f.store.get_run(&run.id).await.expect("run").state,
        State::Running,
        "the run is the new owner's to end"
    );
}

/// The shard tasks the backend ran (one per loop iteration).
fn shards(f: &Fixture) -> Vec<String> {
    f.backend
        .ran()
        .into_iter()
        .map(|j| j.display_name)
        .filter(|k| k.ends_with("/shard"))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_condition_on_a_parameter_runs_one_branch() {
    let f = Fixture::new();
    let run = f.create_with("fx_control", &[("mode", "full")]).await;
    let done = f.execute(&run.id, false).await.expect("executed");
    assert_eq!(done.state, State::Succeeded, "{:?}", done.error);
    assert_eq!(shards(&f).len(), 4, "{:?}", f.backend.ran());
    assert!(f
        .backend
        .ran()
        .iter()
        .all(|j| !j.display_name.ends_with("/report")));

    let f = Fixture::new();
    let run = f.create_with("fx_control", &[("mode", "quick")]).await;
    let done = f.execute(&run.id, false).await.expect("executed");
    assert_eq!(done.state, State::Succeeded, "{:?}", done.error);
    assert!(shards(&f).is_empty());
    let names: Vec<String> = f
        .backend
        .ran()
        .into_iter()
        .map(|j| j.display_name)
        .collect();
    assert!(
        names.len() == 1 && names[0].ends_with("/report"),
        "the else branch alone: {names:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_loop_runs_at_most_its_parallelism_at_once() {
    let f = Fixture::new();
    let run = f.create_with("fx_control", &[("mode", "full")]).await;
    // Learn the iterations' task keys from a first run, then script them.
    f.execute(&run.id, false).await.expect("executed");
    let keys = shards(&f);
    assert_eq!(keys.len(), 4);
    let f2 = Fixture::new();
    for key in &keys {
        f2.backend.script(
            key,
            [Scripted::After(
                Duration::from_secs(10),
                Box::new(Scripted::Succeed),
            )],
        );
    }
    let run = f2.create_with("fx_control", &[("mode", "full")]).await;
    let started = tokio::time::Instant::now();
    let done = f2.execute(&run.id, false).await.expect("executed");
    let took = started.elapsed();
    assert_eq!(done.state, State::Succeeded, "{:?}", done.error);
    // 4 shards of 10 s, 2 at a time (the run would allow 4).
    assert!(
        took >= Duration::from_secs(20) && took < Duration::from_secs(30),
        "took {took:?}"
    );
    let items: Vec<String> = f2
        .backend
        .ran()
        .into_iter()
        .filter(|j| j.display_name.ends_with("/shard"))
        .map(|j| j.argv.last().cloned().unwrap_or_default())
        .collect();
    let mut sorted = items.clone();
    sorted.sort();
    assert_eq!(sorted, ["1", "2", "3", "4"], "each item once: {items:?}");
}

/// A lease of another, live process.
fn elsewhere() -> Lease {
    Lease {
        owner: "elsewhere/1/1".into(),
        host: "elsewhere".into(),
        pid: 1,
        until: chrono::Utc::now() + chrono::Duration::seconds(60),
    }
}

/// Executes `run` in the background until `task`'s job is in flight;
/// returns the execution and that job's id.
async fn executing_until(
    f: &Fixture,
    run: &str,
    task: &str,
) -> (
    tokio::task::JoinHandle<Result<RunRecord, EngineError>>,
    String,
) {
    let (engine, id) = (f.engine.clone(), run.to_string());
    let execution = tokio::spawn(async move {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        engine
            .execute(&id, tx, CancellationToken::new(), false)
            .await
    });
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Some(job) = f.backend.runs_of(task).pop() {
            return (execution, job);
        }
    }
}

/// Executes `run` in the background until `task`'s job is in flight, then
/// drops the execution as a killed process would: the job stays in flight
/// (a Pod keeps running) and nobody holds the run.
async fn die_while_running(f: &Fixture, run: &str, task: &str) -> String {
    let (execution, job) = executing_until(f, run, task).await;
    execution.abort();
    let _ = execution.await;
    f.store
        .set_owner(run, None)
        .await
        .expect("the lease gone with the process");
    assert_eq!(f.backend.in_flight(), vec![job.clone()]);
    job
}

#[tokio::test(start_paused = true)]
async fn a_resumed_run_follows_the_attempt_its_dead_process_left_running() {
    let f = Fixture::new();
    f.backend
        .script("train", [Scripted::Hang, Scripted::Succeed]);
    let run = f.create("fx_dag").await;
    let job = die_while_running(&f, &run.id, "train").await;
    assert_eq!(f.tasks(&run.id).await["train"], (State::Running, 0));
    let done = f.execute(&run.id, true).await.expect("resumed");
    assert_eq!(done.state, State::Succeeded, "{:?}", done.error);
    assert_eq!(
        f.backend.runs_of("train"),
        vec![job.clone(), job],
        "the same attempt is followed again, not a second one started beside it"
    );
    assert_eq!(f.tasks(&run.id).await["train"], (State::Succeeded, 0));
}

#[tokio::test(start_paused = true)]
async fn canceling_a_run_whose_process_died_stops_what_its_steps_left_running() {
    let f = Fixture::new();
    f.backend.script("train", [Scripted::Hang]);
    let run = f.create("fx_dag").await;
    let job = die_while_running(&f, &run.id, "train").await;
    match f.engine.cancel_orphan(&run.id).await.expect("canceled") {
        OrphanCancel::Canceled(stopped) => {
            assert_eq!(stopped, vec![format!("stopped scripted job {job}")])
        }
        other => panic!("expected the run canceled here, got {other:?}"),
    }
    assert_eq!(f.backend.stopped(), vec![job]);
    assert!(f.backend.in_flight().is_empty());
    let rec = f.store.get_run(&run.id).await.expect("run");
    assert_eq!(rec.state, State::Canceled);
    assert!(rec.lease.is_none() && rec.finished_at.is_some());
    let tasks = f.tasks(&run.id).await;
    assert_eq!(tasks["prepare"].0, State::Succeeded, "what ended stays");
    assert_eq!(tasks["train"].0, State::Canceled);
    // Canceled already: said so.
    let again = f.engine.cancel_orphan(&run.id).await;
    assert!(
        matches!(&again, Err(EngineError::State { reason, .. }) if reason.contains("already CANCELED")),
        "{again:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_run_another_process_holds_is_only_asked_to_cancel() {
    let f = Fixture::new();
    let run = f.create("fx_dag").await;
    let other = elsewhere();
    f.store
        .set_owner(&run.id, Some(&other))
        .await
        .expect("owner");
    let held = f.engine.cancel_orphan(&run.id).await.expect("asked");
    assert!(matches!(held, OrphanCancel::Held), "{held:?}");
    assert_eq!(
        f.store.get_run(&run.id).await.expect("run").state,
        State::Pending,
        "the holder ends it"
    );
    assert!(f.backend.stopped().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_run_retried_after_it_ended_starts_a_new_attempt_of_a_task_left_running() {
    let f = Fixture::new();
    f.backend
        .script("train", [Scripted::Hang, Scripted::Succeed]);
    let run = f.create("fx_dag").await;
    let first = die_while_running(&f, &run.id, "train").await;
    // Ended without its tasks (a store failure ends a run so): `train` is
    // still recorded RUNNING, and what its attempt left may have ended failed.
    let update = switchyard_store::RunUpdate {
        error: Some("the run's records could not be written".into()),
        ..Default::default()
    };
    assert!(f
        .store
        .transition_run(&run.id, &[State::Running], State::Failed, update)
        .await
        .expect("ended"));
    let done = f.execute(&run.id, true).await.expect("retried");
    assert_eq!(done.state, State::Succeeded, "{:?}", done.error);
    let train = f.backend.runs_of("train");
    assert_eq!(train.len(), 2);
    assert_ne!(train[1], first, "a new attempt, not the old one's result");
    assert!(train[1].ends_with("-1"), "{train:?}");
}

/// A backend of another name (where the run's steps were placed).
struct Named(&'static str, Arc<ScriptedBackend>);

#[async_trait::async_trait]
impl Backend for Named {
    fn name(&self) -> &'static str {
        self.0
    }
    async fn run(
        &self,
        job: Job,
        logs: LogSink,
        cancel: CancellationToken,
    ) -> Result<StepOutcome, BackendError> {
        self.1.run(job, logs, cancel).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_process_placing_steps_elsewhere_refuses_to_cancel_a_dead_run() {
    let mut f = Fixture::new();
    let kube = Engine::new(
        f.store.clone(),
        Arc::new(Named("kubernetes", f.backend.clone())),
        f.root.join("logs"),
    );
    let here = std::mem::replace(&mut f.engine, kube);
    let run = f.create("fx_dag").await;
    let got = here.cancel_orphan(&run.id).await;
    match &got {
        Err(EngineError::State { reason, .. }) => assert!(
            reason.contains("run on the kubernetes backend")
                && reason.contains("SWITCHYARD_TASK_BACKEND=kubernetes"),
            "{reason}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let rec = f.store.get_run(&run.id).await.expect("run");
    assert_eq!(rec.state, State::Pending, "nothing changed");
    assert!(
        !f.store
            .control(Kind::Run, &run.id)
            .await
            .expect("flag")
            .cancel_requested
    );
}

#[tokio::test(start_paused = true)]
async fn a_process_that_lost_its_run_stops_following_and_leaves_the_step_running() {
    let f = Fixture::new();
    f.backend.script("train", [Scripted::Hang]);
    let run = f.create("fx_dag").await;
    let (execution, job) = executing_until(&f, &run.id, "train").await;
    let other = elsewhere();
    f.store
        .set_owner(&run.id, Some(&other))
        .await
        .expect("taken");
    match execution.await.expect("joined") {
        Err(EngineError::LeaseLost { owner, .. }) => assert_eq!(owner, "elsewhere/1/1"),
        other => panic!("expected the lease to be lost, got {other:?}"),
    }
    assert_eq!(
        f.backend.in_flight(),
        vec![job],
        "not canceled: the new owner follows this same attempt"
    );
}

/// kfp-kubernetes' CreatePVC and DeletePVC are the driver's own tasks: the
/// backend creates the claim (named by a fresh UUID and the suffix), the step
/// that mounts it gets the name resolved, and DeletePVC deletes it after.
#[tokio::test(start_paused = true)]
async fn volumes_are_created_mounted_by_name_and_deleted() {
    let f = Fixture::new();
    let run = f.create("fx_volume").await;
    let done = f.execute(&run.id, false).await.expect("executed");
    assert_eq!(done.state, State::Succeeded, "{:?}", done.error);
    let tasks = f.store.list_tasks(&run.id).await.expect("tasks");
    let created = tasks
        .iter()
        .find(|t| t.task_key == "createpvc")
        .expect("createpvc");
    assert_eq!(created.kind, "createpvc");
    let name = created.outputs.as_ref().expect("outputs")["parameters"]["name"]
        .as_str()
        .expect("the claim's name")
        .to_string();
    assert!(name.ends_with("-my-pvc") && name.len() == 36 + 7, "{name}");
    // The step ran with the claim named; no container ran for the driver's tasks.
    let ran = f.backend.ran();
    assert_eq!(ran.len(), 1, "only train is a container");
    let mount = &ran[0].platform["kubernetes"]["pvcMount"][0];
    assert_eq!(mount["constant"], name.as_str());
    assert_eq!(mount["mountPath"], "/data");
    assert_eq!(
        tasks
            .iter()
            .find(|t| t.task_key == "deletepvc")
            .map(|t| t.state),
        Some(State::Succeeded)
    );
    assert!(f.backend.volumes().is_empty(), "deleted after the step");
}

/// A backend that cannot create volumes fails the task, saying why.
#[tokio::test(start_paused = true)]
async fn a_claim_the_backend_cannot_create_fails_its_task() {
    // A backend with only the trait's own volume methods.
    let f = Fixture::new();
    let engine = Engine::new(
        f.store.clone(),
        Arc::new(Named("novolumes", f.backend.clone())),
        f.root.join("logs"),
    );
    let run = f.create("fx_volume").await;
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let done = engine
        .execute(&run.id, tx, CancellationToken::new(), false)
        .await
        .expect("executed");
    assert_eq!(done.state, State::Failed);
    let error = done.error.unwrap_or_default();
    assert!(error.contains("cannot create the volume"), "{error}");
}
