//! Jobs nobody follows any more. A backend that loses contact with its job (a
//! `Retryable` error: the cloud API down or throttling) is re-attached to;
//! one that stays lost leaves the job unfinished and unfollowed (never
//! FAILED: it may still run), and a cancel meanwhile stops it by its
//! identity. A pipeline run canceled after its process died stops the jobs
//! its steps submitted. Paused clock, memory store.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};

use switchyard_runner::{Backends, JobRunner, Notice, NoticeSink, RunnerError, REATTACH_TRIES};
use switchyard_store::{Claim, JobStore, Kind, LifecycleStore, MemoryStore, State};
use switchyard_training::{
    load, BackendError, BackendKind, JobEvents, JobState, Stopped, TrainingBackend, TrainingJob,
    TrainingOutcome,
};
use tokio_util::sync::CancellationToken;

/// What one `run` answers.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Ends(JobState),
    /// Lost contact (Retryable).
    Lost,
    /// A permanent error.
    Refused,
    /// Says all ranks started, then runs until canceled.
    Hangs,
}

/// Answers each `run` with the next scripted answer (the last one repeats)
/// and records the calls to `run` and `stop`.
struct Scripted {
    answers: Mutex<VecDeque<Answer>>,
    runs: Mutex<Vec<String>>,
    stops: Mutex<Vec<String>>,
}

impl Scripted {
    fn new(answers: Vec<Answer>) -> Arc<Self> {
        Arc::new(Scripted {
            answers: Mutex::new(answers.into()),
            runs: Mutex::default(),
            stops: Mutex::default(),
        })
    }
    fn runs(&self) -> usize {
        self.runs.lock().map(|r| r.len()).unwrap_or(0)
    }
}

#[async_trait::async_trait]
impl TrainingBackend for Scripted {
    fn kind(&self) -> BackendKind {
        BackendKind::Sagemaker
    }

    async fn run(
        &self,
        _job: &TrainingJob,
        job_id: &str,
        events: JobEvents,
        cancel: CancellationToken,
    ) -> Result<TrainingOutcome, BackendError> {
        self.runs.lock().expect("runs").push(job_id.to_string());
        let answer = {
            let mut a = self.answers.lock().expect("answers");
            if a.len() > 1 {
                a.pop_front()
            } else {
                a.front().cloned()
            }
        };
        let state = match answer.expect("a scripted answer") {
            Answer::Ends(state) => state,
            Answer::Lost => return Err(BackendError::Retryable(
                "DescribeTrainingJob: ServiceUnavailable: try later (gave up after 10 attempts)"
                    .into(),
            )),
            Answer::Refused => {
                return Err(BackendError::Permanent(
                    "CreateTrainingJob: ValidationException: bad role".into(),
                ))
            }
            Answer::Hangs => {
                let _ = events.send(switchyard_training::JobEvent::Started {
                    attempt: 0,
                    master_port: 29500,
                });
                cancel.cancelled().await;
                JobState::Canceled
            }
        };
        Ok(TrainingOutcome {
            state,
            restarts: 0,
            model: None,
            metrics: Default::default(),
            failure_reason: None,
        })
    }

    async fn stop(&self, _job: &TrainingJob, job_id: &str) -> Result<Stopped, BackendError> {
        self.stops.lock().expect("stops").push(job_id.to_string());
        Ok(Stopped::Remote(format!("training job {job_id}")))
    }
}

struct One(Arc<Scripted>);

#[async_trait::async_trait]
impl Backends for One {
    async fn backend_for(&self, _: &TrainingJob) -> Result<Arc<dyn TrainingBackend>, RunnerError> {
        Ok(self.0.clone())
    }
    async fn fetch_model(&self, _: &TrainingJob, _: &str, _: &Path) -> Result<(), RunnerError> {
        Ok(())
    }
}

fn job() -> TrainingJob {
    let doc = "apiVersion: switchyard/v1\nkind: TrainingJob\nmetadata: {name: digits}\nspec:\n  backend: sagemaker\n  image: 123.dkr.ecr.us-east-1.amazonaws.com/train:1\n  command: [python3]\n";
    load(doc, Path::new("."), &[], None).expect("a valid job")
}

/// The runner, its store and what the notices said.
fn runner(backend: Arc<Scripted>) -> (JobRunner, Arc<MemoryStore>, Arc<Mutex<Vec<String>>>) {
    let store = Arc::new(MemoryStore::new());
    let dir = std::env::temp_dir().join("switchyard-reattach-test");
    let runner = JobRunner::new(store.clone(), Arc::new(One(backend)), dir);
    (runner, store, Arc::default())
}

fn sink(said: &Arc<Mutex<Vec<String>>>) -> NoticeSink {
    let said = said.clone();
    Arc::new(move |n: Notice<'_>| {
        if let Notice::Status(m) = n {
            said.lock().expect("said").push(m.to_string());
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_job_the_backend_lost_contact_with_is_re_attached_to() {
    let backend = Scripted::new(vec![
        Answer::Lost,
        Answer::Lost,
        Answer::Ends(JobState::Succeeded),
    ]);
    let (runner, store, said) = runner(backend.clone());
    let j = job();
    let prepared = runner.prepare(&j).await.expect("prepared");
    let started = tokio::time::Instant::now();
    let rec = runner
        .execute(prepared, &j, CancellationToken::new(), sink(&said))
        .await
        .expect("followed to its end");
    assert_eq!(rec.state, State::Succeeded);
    assert_eq!(backend.runs(), 3, "the same job id asked three times");
    let ids = backend.runs.lock().expect("runs").clone();
    assert!(ids.iter().all(|id| *id == rec.id), "{ids:?}");
    // 5 s, then 10 s.
    assert_eq!(started.elapsed().as_secs(), 15);
    let said = said.lock().expect("said").clone();
    assert!(
        said[0].starts_with("lost contact with the job (DescribeTrainingJob: ServiceUnavailable")
            && said[0].ends_with("re-attaching in 5 s (try 1 of 5)"),
        "{said:?}"
    );
    let events = store.job_events(&rec.id).await.expect("events");
    assert!(
        events.iter().any(|e| e
            .message
            .as_deref()
            .is_some_and(|m| m.contains("try 2 of 5"))),
        "{events:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_that_stays_lost_is_left_unfinished_not_failed() {
    let backend = Scripted::new(vec![Answer::Lost]);
    let (runner, store, said) = runner(backend.clone());
    let j = job();
    let prepared = runner.prepare(&j).await.expect("prepared");
    let id = prepared.record.id.clone();
    let err = runner
        .execute(prepared, &j, CancellationToken::new(), sink(&said))
        .await
        .expect_err("not followed to an end");
    assert_eq!(backend.runs() as u32, REATTACH_TRIES + 1);
    let text = err.to_string();
    assert!(
        text.contains(&format!("switchyard job resume {id}")) && text.contains("may still run"),
        "{text}"
    );
    let rec = store.get_job(&id).await.expect("job");
    assert_eq!(rec.state, State::Pending, "as it was");
    assert!(switchyard_runner::orphaned(&rec), "no process holds it");
    assert!(rec.finished_at.is_none());
    // A later process re-attaches to it (as `job resume` and a server do).
    *backend.answers.lock().expect("answers") = vec![Answer::Ends(JobState::Succeeded)].into();
    let switchyard_runner::Adopted::Mine(prepared, j) = runner.adopt(&rec).await.expect("adopt")
    else {
        panic!("an orphaned job is adopted");
    };
    let done = runner
        .execute(*prepared, &j, CancellationToken::new(), sink(&said))
        .await
        .expect("followed");
    assert_eq!(done.state, State::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn a_cancel_while_re_attaching_stops_the_job_by_its_identity() {
    let backend = Scripted::new(vec![Answer::Lost]);
    let (runner, store, said) = runner(backend.clone());
    let j = job();
    let prepared = runner.prepare(&j).await.expect("prepared");
    let id = prepared.record.id.clone();
    let cancel = CancellationToken::new();
    let later = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(7)).await;
        later.cancel();
    });
    let rec = runner
        .execute(prepared, &j, cancel, sink(&said))
        .await
        .expect("canceled");
    assert_eq!(rec.state, State::Canceled);
    assert_eq!(backend.runs(), 2, "no run after the cancel");
    assert_eq!(*backend.stops.lock().expect("stops"), vec![id.clone()]);
    let stored = store.get_job(&id).await.expect("job");
    assert_eq!(stored.state, State::Canceled);
    assert!(
        stored
            .failure_reason
            .as_deref()
            .is_some_and(|r| r.contains("stopped training job")),
        "{stored:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_still_fails_the_job_at_once() {
    let backend = Scripted::new(vec![Answer::Refused]);
    let (runner, _store, said) = runner(backend.clone());
    let j = job();
    let prepared = runner.prepare(&j).await.expect("prepared");
    let rec = runner
        .execute(prepared, &j, CancellationToken::new(), sink(&said))
        .await
        .expect("recorded");
    assert_eq!(rec.state, State::Failed);
    assert_eq!(backend.runs(), 1);
    assert!(rec
        .failure_reason
        .as_deref()
        .is_some_and(|r| r.contains("bad role")));
}

/// A job a step of `run` submitted, with no process following it.
async fn orphan_of(runner: &JobRunner, store: &MemoryStore, run: &str) -> String {
    let mut j = job();
    j.labels
        .insert(switchyard_training::LABEL_RUN_ID.into(), run.into());
    j.labels
        .insert(switchyard_training::LABEL_TASK.into(), "train".into());
    let prepared = runner.prepare(&j).await.expect("prepared");
    let mut rec = prepared.record.clone();
    rec.state = State::Running;
    rec.lease = None;
    store.update_job(&rec, None, None).await.expect("orphaned");
    rec.id
}

#[tokio::test(start_paused = true)]
async fn canceling_a_run_stops_the_jobs_its_steps_submitted() {
    let backend = Scripted::new(vec![Answer::Ends(JobState::Succeeded)]);
    let (runner, store, _said) = runner(backend.clone());
    let ours = orphan_of(&runner, &store, "run-1").await;
    let other = orphan_of(&runner, &store, "run-2").await;
    // One of run-1's jobs is followed by a live process: asked, not stopped.
    let followed = orphan_of(&runner, &store, "run-1").await;
    let mut rec = store.get_job(&followed).await.expect("job");
    rec.lease = Some(switchyard_store::Holder::current().lease());
    store.update_job(&rec, None, None).await.expect("followed");

    let said = runner.cancel_jobs_of_run("run-1").await.expect("stopped");
    assert_eq!(said.len(), 2, "{said:?}");
    assert_eq!(*backend.stops.lock().expect("stops"), vec![ours.clone()]);
    let stopped = store.get_job(&ours).await.expect("job");
    assert_eq!(stopped.state, State::Canceled);
    assert!(said
        .iter()
        .any(|l| l.contains(&ours) && l.contains("stopped training job")));
    assert_eq!(
        store.get_job(&other).await.expect("job").state,
        State::Running,
        "another run's job is left alone"
    );
    assert!(
        store
            .control(Kind::Job, &followed)
            .await
            .expect("flag")
            .cancel_requested
    );
    assert_eq!(
        store.get_job(&followed).await.expect("job").state,
        State::Running
    );
}

/// A job followed by a runner in its own task until it runs: the store, the
/// job's id and the follower.
async fn following(
    backend: Arc<Scripted>,
) -> (
    Arc<MemoryStore>,
    String,
    tokio::task::JoinHandle<Result<switchyard_store::JobRecord, RunnerError>>,
) {
    let (runner, store, said) = runner(backend);
    let runner = Arc::new(runner);
    let prepared = runner.prepare(&job()).await.expect("prepared");
    let id = prepared.record.id.clone();
    let notice = sink(&said);
    let follower = tokio::spawn(async move {
        runner
            .execute(prepared, &job(), CancellationToken::new(), notice)
            .await
    });
    for _ in 0..50 {
        if store.get_job(&id).await.expect("job").state == State::Running {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    (store, id, follower)
}

/// A follower whose lease expired and whose job another process took over
/// stops following it and writes nothing more: no end, no event, no lease
/// change; and what runs is left to the new follower (not stopped).
#[tokio::test(start_paused = true)]
async fn a_follower_that_lost_its_job_writes_nothing_and_leaves_it_running() {
    let backend = Scripted::new(vec![Answer::Hangs]);
    let (store, id, follower) = following(backend.clone()).await;
    let before = store.get_job(&id).await.expect("job");
    assert_eq!(before.state, State::Running);
    // Another process takes it over (as after this one's lease expired).
    let other = switchyard_store::Lease {
        owner: "elsewhere/1/1".into(),
        host: "elsewhere".into(),
        pid: 1,
        until: chrono::Utc::now() + chrono::Duration::seconds(60),
    };
    assert!(store
        .claim(
            Kind::Job,
            &id,
            before.lease.as_ref(),
            &other,
            Claim::lease_only()
        )
        .await
        .expect("claim"));
    let events = store.job_events(&id).await.expect("events").len();
    let ended = follower.await.expect("joined");
    let Err(RunnerError::Refused(why)) = ended else {
        panic!("expected a refusal, got {ended:?}");
    };
    assert!(why.contains("taken over by elsewhere/1/1"), "{why}");
    let now = store.get_job(&id).await.expect("job");
    assert_eq!(now.state, State::Running, "no end written");
    assert_eq!(now.lease.map(|l| l.owner).as_deref(), Some("elsewhere/1/1"));
    assert_eq!(store.job_events(&id).await.expect("events").len(), events);
    assert!(
        backend.stops.lock().expect("stops").is_empty(),
        "not stopped"
    );
}

/// A follower whose work is dropped midway (its step's run was taken over,
/// a request abandoned) gives the job back: the process's lease keeper must
/// not keep a job nobody follows held, so another process can adopt it.
#[tokio::test(start_paused = true)]
async fn a_follower_dropped_midway_gives_its_job_back() {
    let backend = Scripted::new(vec![Answer::Hangs]);
    let (store, id, follower) = following(backend.clone()).await;
    assert!(store.get_job(&id).await.expect("job").lease.is_some());
    follower.abort();
    let _ = follower.await;
    for _ in 0..50 {
        if store.get_job(&id).await.expect("job").lease.is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let now = store.get_job(&id).await.expect("job");
    assert!(now.lease.is_none(), "given back: {:?}", now.lease);
    assert_eq!(now.state, State::Running, "unfinished, for a resume");
    assert!(switchyard_runner::orphaned(&now));
}
