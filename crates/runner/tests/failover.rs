//! Failover of a `backend: auto` job: a backend that has not started all
//! ranks within `maxStartSeconds`, or that had no room for the job, gives it
//! up to the next candidate; the first attempt is stopped (never left
//! running) and every attempt is recorded. Paused clock, memory store,
//! scripted backends.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use switchyard_runner::{Backends, JobRunner, NoticeSink, RunnerError};
use switchyard_store::{JobStore, MemoryStore, State};
use switchyard_training::{
    load, BackendError, BackendKind, JobEvent, JobEvents, JobState, TrainingBackend, TrainingJob,
    TrainingOutcome,
};
use tokio_util::sync::CancellationToken;

/// How a scripted backend behaves.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// Never starts the gang (pods unschedulable): waits to be stopped.
    NeverStarts,
    /// Fails before starting: no instances to give.
    NoCapacity,
    /// Starts, then fails for the job's own reason.
    FailsItself,
    /// Starts all ranks and succeeds.
    Succeeds,
    /// Starts at once and trains for two minutes.
    RunsLong,
    /// Starts, then fails saying it lost its instances.
    StartsThenNoCapacity,
    /// Never starts, and cannot be confirmed stopped (the API down).
    Unstoppable,
}

struct Scripted {
    kind: BackendKind,
    behaviour: Behaviour,
    /// What happened to each run: `canceled` or how it ended.
    log: Arc<Mutex<Vec<String>>>,
}

/// Where the scripted SageMaker keeps a checkpoint from elsewhere.
const HOME: &str = "s3://bucket/checkpoints/digits";

#[async_trait::async_trait]
impl TrainingBackend for Scripted {
    fn kind(&self) -> BackendKind {
        self.kind
    }

    fn checkpoint_home(&self, job: &TrainingJob) -> Option<String> {
        let local = job.spec.checkpoint.as_deref()?.starts_with('/');
        (self.kind == BackendKind::Sagemaker && local).then(|| HOME.to_string())
    }

    async fn take_checkpoint(&self, job: &TrainingJob) -> Result<TrainingJob, BackendError> {
        let mut moved = job.clone();
        if let Some(home) = self.checkpoint_home(job) {
            moved.spec.checkpoint = Some(home);
        }
        Ok(moved)
    }

    async fn stop(
        &self,
        _job: &TrainingJob,
        _job_id: &str,
    ) -> Result<switchyard_training::Stopped, BackendError> {
        self.log
            .lock()
            .expect("log")
            .push(format!("{}: asked to stop", self.kind.as_str()));
        match self.behaviour {
            Behaviour::Unstoppable => Err(BackendError::Retryable("the API is down".into())),
            _ => Ok(switchyard_training::Stopped::Nothing("ended".into())),
        }
    }

    async fn run(
        &self,
        job: &TrainingJob,
        _job_id: &str,
        events: JobEvents,
        cancel: CancellationToken,
    ) -> Result<TrainingOutcome, BackendError> {
        let name = self.kind.as_str();
        let say = |what: &str| {
            self.log
                .lock()
                .expect("log")
                .push(format!("{name}: {what} ({})", job.spec.backend.as_str()));
        };
        say("run");
        if let Some(c) = &job.spec.checkpoint {
            say(&format!("checkpoint {c}"));
        }
        let started = || {
            let _ = events.send(JobEvent::Started {
                attempt: 0,
                master_port: 29500,
            });
        };
        let (state, why) = match self.behaviour {
            Behaviour::NeverStarts => {
                let _ = events.send(JobEvent::Status {
                    message: "waiting for capacity".into(),
                });
                cancel.cancelled().await;
                say("stopped");
                (JobState::Canceled, Some("canceled".to_string()))
            }
            Behaviour::NoCapacity => (
                JobState::Failed,
                Some("CapacityError: Unable to provision requested ML compute capacity.".into()),
            ),
            Behaviour::FailsItself => {
                started();
                (JobState::Failed, Some("AlgorithmError: exit code 1".into()))
            }
            Behaviour::Succeeds => {
                started();
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                (JobState::Succeeded, None)
            }
            Behaviour::RunsLong => {
                started();
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(120)) => (JobState::Succeeded, None),
                    _ = cancel.cancelled() => {
                        say("stopped");
                        (JobState::Canceled, None)
                    }
                }
            }
            Behaviour::StartsThenNoCapacity => {
                started();
                (
                    JobState::Failed,
                    Some("CapacityError: the instances were reclaimed".into()),
                )
            }
            Behaviour::Unstoppable => {
                cancel.cancelled().await;
                return Err(BackendError::Retryable(
                    "DescribeTrainingJob: ServiceUnavailable (gave up)".into(),
                ));
            }
        };
        Ok(TrainingOutcome {
            state,
            restarts: 0,
            model: None,
            metrics: Default::default(),
            failure_reason: why,
        })
    }
}

struct Several(BTreeMap<&'static str, Arc<Scripted>>);

#[async_trait::async_trait]
impl Backends for Several {
    async fn backend_for(
        &self,
        job: &TrainingJob,
    ) -> Result<Arc<dyn TrainingBackend>, RunnerError> {
        let kind = job.spec.backend.as_str();
        match self.0.get(kind) {
            Some(b) => Ok(b.clone() as Arc<dyn TrainingBackend>),
            None => Err(RunnerError::Refused(format!("{kind} is not configured"))),
        }
    }
    async fn fetch_model(&self, _: &TrainingJob, _: &str, _: &Path) -> Result<(), RunnerError> {
        Ok(())
    }
}

fn auto_job(candidates: &str, max_start: u64) -> TrainingJob {
    let doc = format!(
        "apiVersion: switchyard/v1\nkind: TrainingJob\nmetadata: {{name: digits}}\nspec:\n  backend: auto\n  image: train:1\n  command: [python3]\n  checkpoint: /data/ckpt/digits\n  placement:\n    candidates: [{candidates}]\n    maxStartSeconds: {max_start}\n"
    );
    load(&doc, Path::new("."), &[], None).expect("a valid job")
}

struct World {
    runner: JobRunner,
    store: Arc<MemoryStore>,
    log: Arc<Mutex<Vec<String>>>,
}

fn world(backends: &[(BackendKind, Behaviour)]) -> World {
    let log = Arc::new(Mutex::new(Vec::new()));
    let map = backends
        .iter()
        .map(|(kind, behaviour)| {
            (
                kind.as_str(),
                Arc::new(Scripted {
                    kind: *kind,
                    behaviour: *behaviour,
                    log: log.clone(),
                }),
            )
        })
        .collect();
    let store = Arc::new(MemoryStore::new());
    let dir = std::env::temp_dir().join("switchyard-failover-test");
    World {
        runner: JobRunner::new(store.clone(), Arc::new(Several(map)), dir),
        store,
        log,
    }
}

fn quiet() -> NoticeSink {
    Arc::new(|_| {})
}

/// Places and records `job` as `job run` does, ready to follow.
async fn placed(w: &World, job: &TrainingJob) -> (switchyard_runner::Prepared, TrainingJob) {
    let (placed, decision) = w.runner.place(job).await.expect("placed");
    let mut prepared = w.runner.prepare(&placed).await.expect("prepared");
    if let Some(d) = &decision {
        w.runner.record_decision(&mut prepared, d).await;
    }
    (prepared, placed)
}

/// Places, records and follows `job` as `job run` does.
async fn run(
    w: &World,
    job: &TrainingJob,
    cancel: CancellationToken,
) -> switchyard_store::JobRecord {
    let (prepared, placed) = placed(w, job).await;
    w.runner
        .execute(prepared, &placed, cancel, quiet())
        .await
        .expect("followed to its end")
}

/// `backend outcome` of each of a record's attempts.
fn attempts(rec: &switchyard_store::JobRecord) -> Vec<String> {
    rec.placement
        .as_ref()
        .and_then(|p| p["attempts"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                a["backend"].as_str().unwrap_or(""),
                a["outcome"].as_str().unwrap_or("")
            )
        })
        .collect()
}

fn events(messages: &[switchyard_store::JobEventRecord]) -> Vec<String> {
    messages.iter().filter_map(|e| e.message.clone()).collect()
}

#[tokio::test(start_paused = true)]
async fn a_job_not_started_in_time_moves_to_the_next_candidate() {
    use BackendKind::*;
    let w = world(&[
        (Kubernetes, Behaviour::NeverStarts),
        (Sagemaker, Behaviour::Succeeds),
    ]);
    let began = tokio::time::Instant::now();
    let rec = run(
        &w,
        &auto_job("kubernetes, sagemaker", 60),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(
        (rec.state, rec.backend.as_str()),
        (State::Succeeded, "sagemaker")
    );
    // 60 s waiting on the cluster, 30 s training on SageMaker.
    assert_eq!(began.elapsed().as_secs(), 90);
    let log = w.log.lock().expect("log").clone();
    assert_eq!(
        log,
        [
            "kubernetes: run (kubernetes)",
            "kubernetes: checkpoint /data/ckpt/digits (kubernetes)",
            "kubernetes: stopped (kubernetes)",
            "kubernetes: asked to stop",
            "sagemaker: run (sagemaker)",
            "sagemaker: checkpoint s3://bucket/checkpoints/digits (sagemaker)",
        ],
        "the first attempt is stopped, and confirmed so, before the next starts; the checkpoint goes with it"
    );
    let p = rec.placement.clone().expect("placement");
    assert_eq!(p["chosen"], "sagemaker", "{p:#}");
    assert_eq!(
        attempts(&rec),
        [
            "kubernetes failed over: not all ranks running after 60 s (maxStartSeconds)",
            "sagemaker SUCCEEDED"
        ]
    );
    // The record's spec is the job as it ran last (a plain SageMaker job).
    assert_eq!(rec.spec["spec"]["backend"], "sagemaker", "{:#}", rec.spec);
    let said = events(&w.store.job_events(&rec.id).await.expect("events"));
    assert!(
        said.iter().any(|m| m.starts_with(
            "failover to sagemaker: not all ranks running after 60 s (maxStartSeconds); placed on sagemaker"
        )),
        "{said:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn no_room_before_the_start_moves_the_job_at_once() {
    use BackendKind::*;
    let w = world(&[
        (Sagemaker, Behaviour::NoCapacity),
        (Local, Behaviour::Succeeds),
    ]);
    let began = tokio::time::Instant::now();
    let rec = run(
        &w,
        &auto_job("sagemaker, local", 600),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(
        (rec.state, rec.backend.as_str()),
        (State::Succeeded, "local")
    );
    assert_eq!(began.elapsed().as_secs(), 30, "no wait for maxStartSeconds");
    assert_eq!(
        attempts(&rec),
        [
            "sagemaker failed over: CapacityError: Unable to provision requested ML compute capacity.",
            "local SUCCEEDED"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_that_fails_for_its_own_reasons_is_not_moved() {
    use BackendKind::*;
    let w = world(&[
        (Kubernetes, Behaviour::FailsItself),
        (Sagemaker, Behaviour::Succeeds),
    ]);
    let rec = run(
        &w,
        &auto_job("kubernetes, sagemaker", 60),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(
        (rec.state, rec.backend.as_str()),
        (State::Failed, "kubernetes")
    );
    assert_eq!(
        w.log.lock().expect("log").len(),
        2,
        "one run (and its checkpoint)"
    );
    assert_eq!(attempts(&rec), ["kubernetes FAILED"]);
}

#[tokio::test(start_paused = true)]
async fn with_no_other_candidate_the_job_keeps_waiting_where_it_is() {
    use BackendKind::*;
    // SageMaker is a candidate but not configured here: nowhere to go.
    let w = world(&[(Kubernetes, Behaviour::NeverStarts)]);
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(300)).await;
        stop.cancel();
    });
    let rec = run(&w, &auto_job("kubernetes, sagemaker", 60), cancel).await;
    assert_eq!(
        (rec.state, rec.backend.as_str()),
        (State::Canceled, "kubernetes")
    );
    let said = events(&w.store.job_events(&rec.id).await.expect("events"));
    assert!(
        said.iter().any(|m| m.starts_with(
            "not all ranks running after 60 s (maxStartSeconds), but it stays: spec.placement: no candidate can run this job (sagemaker: sagemaker is not configured)"
        )),
        "{said:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_that_started_in_time_is_never_moved_however_long_it_runs() {
    use BackendKind::*;
    let w = world(&[
        (Kubernetes, Behaviour::RunsLong),
        (Sagemaker, Behaviour::Succeeds),
    ]);
    let rec = run(
        &w,
        &auto_job("kubernetes, sagemaker", 10),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(
        (rec.state, rec.backend.as_str()),
        (State::Succeeded, "kubernetes")
    );
    let log = w.log.lock().expect("log").clone();
    assert_eq!(
        log,
        [
            "kubernetes: run (kubernetes)",
            "kubernetes: checkpoint /data/ckpt/digits (kubernetes)"
        ]
    );
    let said = events(&w.store.job_events(&rec.id).await.expect("events"));
    assert!(
        !said.iter().any(|m| m.contains("maxStartSeconds")),
        "{said:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn no_room_after_the_start_is_the_jobs_failure_not_a_failover() {
    use BackendKind::*;
    let w = world(&[
        (Sagemaker, Behaviour::StartsThenNoCapacity),
        (Local, Behaviour::Succeeds),
    ]);
    let rec = run(
        &w,
        &auto_job("sagemaker, local", 60),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(
        (rec.state, rec.backend.as_str()),
        (State::Failed, "sagemaker")
    );
    assert!(!w
        .log
        .lock()
        .expect("log")
        .iter()
        .any(|l| l.starts_with("local")));
}

#[tokio::test(start_paused = true)]
async fn a_first_attempt_not_confirmed_stopped_keeps_the_job_where_it_is() {
    use BackendKind::*;
    let w = world(&[
        (Kubernetes, Behaviour::Unstoppable),
        (Sagemaker, Behaviour::Succeeds),
    ]);
    let (prepared, placed) = placed(&w, &auto_job("kubernetes, sagemaker", 60)).await;
    let id = prepared.record.id.clone();
    let err = w
        .runner
        .execute(prepared, &placed, CancellationToken::new(), quiet())
        .await
        .expect_err("left for a resume");
    assert!(err.to_string().contains("may still run"), "{err}");
    // Nothing started elsewhere; the record still points at the cluster,
    // where a resume or a cancel reaches the job.
    let log = w.log.lock().expect("log").clone();
    assert!(!log.iter().any(|l| l.starts_with("sagemaker")), "{log:?}");
    let rec = w.store.get_job(&id).await.expect("job");
    assert_eq!(
        (rec.state, rec.backend.as_str()),
        (State::Pending, "kubernetes")
    );
    assert_eq!(rec.spec["spec"]["backend"], "kubernetes");
}

#[tokio::test(start_paused = true)]
async fn a_job_taken_over_after_its_follower_died_still_fails_over() {
    use BackendKind::*;
    let w = Arc::new(world(&[
        (Kubernetes, Behaviour::NeverStarts),
        (Sagemaker, Behaviour::Succeeds),
    ]));
    let (prepared, placed) = placed(&w, &auto_job("kubernetes, sagemaker", 60)).await;
    let id = prepared.record.id.clone();
    // The first follower dies while the gang waits for room.
    let first = {
        let w = w.clone();
        tokio::spawn(async move {
            let _ = w
                .runner
                .execute(prepared, &placed, CancellationToken::new(), quiet())
                .await;
        })
    };
    tokio::time::sleep(std::time::Duration::from_secs(20)).await;
    first.abort();
    let _ = first.await;
    let mut rec = w.store.get_job(&id).await.expect("job");
    for _ in 0..50 {
        if switchyard_runner::orphaned(&rec) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        rec = w.store.get_job(&id).await.expect("job");
    }
    assert!(switchyard_runner::orphaned(&rec), "{:?}", rec.lease);
    // Another process takes it over: it re-attaches, and still moves on.
    let switchyard_runner::Adopted::Mine(prepared, recorded) =
        w.runner.adopt(&rec).await.expect("adopted")
    else {
        panic!("not taken over");
    };
    let done = w
        .runner
        .execute(*prepared, &recorded, CancellationToken::new(), quiet())
        .await
        .expect("followed to its end");
    assert_eq!(
        (done.state, done.backend.as_str()),
        (State::Succeeded, "sagemaker")
    );
    assert_eq!(
        attempts(&done),
        [
            "kubernetes failed over: not all ranks running after 60 s (maxStartSeconds)",
            "sagemaker SUCCEEDED"
        ]
    );
    let log = w.log.lock().expect("log").clone();
    assert!(
        log.contains(&"kubernetes: asked to stop".to_string()),
        "{log:?}"
    );
    assert!(
        log.contains(
            &"sagemaker: checkpoint s3://bucket/checkpoints/digits (sagemaker)".to_string()
        ),
        "placed from the job as submitted: {log:?}"
    );
}
