//! Following a job to its end: the backend runs it while the store's
//! lifecycle watcher looks for a cancel request or a take-over, its events go
//! into the record (every write fenced by this process's lease), and how it
//! ended is recorded, unless another process took it over meanwhile.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use switchyard_store::lifecycle::{self, Kind};
use switchyard_store::{Holder, JobRecord, JobStore, LifecycleStore, State};
use switchyard_training::{
    BackendError, JobEvent, JobState, TrainingBackend, TrainingJob, TrainingOutcome,
};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio_util::sync::CancellationToken;

use crate::failover::{close_attempt, no_room_in, Failover};
use crate::{JobRunner, Notice, NoticeSink, Prepared, RunnerError};
use switchyard_training::placement::Decision;

/// How often a job whose backend lost contact with it (a `Retryable` error:
/// the cloud API down or throttling for minutes) is re-attached to before it
/// is left for a later resume.
pub const REATTACH_TRIES: u32 = 5;

/// The wait before re-attach `n` (1-based): 5 s doubling, at most 60 s.
fn reattach_wait(n: u32) -> Duration {
    Duration::from_secs((5u64 << n.saturating_sub(1).min(4)).min(60))
}

fn state_of(s: JobState) -> State {
    match s {
        JobState::Succeeded => State::Succeeded,
        JobState::Failed => State::Failed,
        JobState::Canceled => State::Canceled,
    }
}

/// What one attempt came to.
struct Attempt {
    /// The record as its events left it.
    rec: JobRecord,
    /// How it ended; `None`: taken over by another process.
    result: Option<Result<TrainingOutcome, BackendError>>,
    /// Whether all its ranks started.
    started: bool,
    /// Stopped to fail over: why, and where it goes.
    moving: Option<(String, Next)>,
}

/// Where a job fails over to: the decision, the job as it runs there, and
/// the backend.
type Next = (Decision, TrainingJob, Arc<dyn TrainingBackend>);

/// This process's lease owner id: every write of a followed job is fenced by it.
pub(crate) fn me() -> &'static str {
    &Holder::current().id
}

impl JobRunner {
    /// Runs a prepared job to the end and records the outcome. `cancel` (or a
    /// cancel request in the store) stops it. A job another process took over
    /// meanwhile (this one's lease expired) is left to it: followed no more,
    /// and nothing more written.
    pub async fn execute(
        &self,
        prepared: Prepared,
        job: &TrainingJob,
        cancel: CancellationToken,
        notice: NoticeSink,
    ) -> Result<JobRecord, RunnerError> {
        // However following ends (or if this future is dropped), this
        // process holds the job no more: the lease keeper must not renew a
        // job nobody follows, which would never count as orphaned. Its end,
        // when recorded, already cleared the lease; another's is left alone.
        let Prepared {
            record,
            backend,
            adopted,
            hold,
            failover,
            code_digest,
        } = prepared;
        let code_digest = code_digest.or_else(|| switchyard_training::kpi::code_digest(job));
        let followed = self
            .follow(
                record,
                backend,
                adopted,
                job,
                cancel,
                notice,
                failover,
                code_digest,
            )
            .await;
        hold.release().await;
        followed
    }

    #[allow(clippy::too_many_arguments)]
    async fn follow(
        &self,
        record: JobRecord,
        backend: Arc<dyn TrainingBackend>,
        mut adopted: bool,
        job: &TrainingJob,
        cancel: CancellationToken,
        notice: NoticeSink,
        mut failover: Option<Failover>,
        code_digest: Option<String>,
    ) -> Result<JobRecord, RunnerError> {
        let id = record.id.clone();
        let (lost, done) = (CancellationToken::new(), CancellationToken::new());
        let watcher = self.watcher(&id, &cancel, &lost, &done);
        let (mut rec, mut backend, mut job) = (record, backend, job.clone());
        // One attempt per backend the job is placed on; a placed job moves
        // on when it does not start (`failover`).
        let result = loop {
            let attempt = self
                .attempt(
                    &rec,
                    &*backend,
                    &job,
                    &cancel,
                    &lost,
                    &notice,
                    failover.as_ref(),
                )
                .await;
            rec = attempt.rec;
            let Some(result) = attempt.result.filter(|_| !lost.is_cancelled()) else {
                break None;
            };
            let (Some(f), false) = (failover.as_mut(), cancel.is_cancelled()) else {
                break Some(result);
            };
            let (why, next) = match (attempt.moving, no_room_in(&result, attempt.started)) {
                (Some((why, next)), _) => (why, Ok(next)),
                (None, Some(why)) => {
                    let next = self.next_placement(f).await;
                    (why, next)
                }
                (None, None) => break Some(result),
            };
            match next {
                // Canceled while the next place was decided: it ends here.
                Ok(_) if cancel.is_cancelled() => break Some(result),
                Ok((decision, placed, next_backend)) => {
                    notice(Notice::Status(&format!(
                        "failover to {}: {why}",
                        decision.chosen.map_or("", |c| c.as_str())
                    )));
                    if !self
                        .record_failover(&mut rec, f, &decision, &placed, &why)
                        .await?
                    {
                        break None;
                    }
                    // Submitted by this process from here on.
                    (backend, job, adopted) = (next_backend, placed, false);
                }
                Err(none) => {
                    let _ = self
                        .store
                        .add_job_event(
                            &id,
                            rec.state,
                            &format!("no failover ({why}): {none}"),
                            Some(me()),
                        )
                        .await;
                    break Some(result);
                }
            }
        };
        let canceled = cancel.is_cancelled();
        done.cancel();
        let _ = watcher.await;
        let Some(result) = result.filter(|_| !lost.is_cancelled()) else {
            return Err(taken_over(&id, &self.store.get_job(&id).await?));
        };
        let lost_contact = matches!(result, Err(BackendError::Retryable(_)));
        if let (true, Err(e)) = (adopted || lost_contact, &result) {
            return self.left_running(&id, e, lost_contact, canceled).await;
        }
        let outcome = result.unwrap_or_else(|e| TrainingOutcome {
            state: JobState::Failed,
            restarts: 0,
            model: None,
            metrics: Default::default(),
            failure_reason: Some(e.to_string()),
        });
        let mut rec = self.store.get_job(&id).await?;
        rec.state = state_of(outcome.state);
        rec.restarts = outcome.restarts;
        rec.model = outcome.model;
        rec.metrics = Some(json!(outcome.metrics));
        rec.failure_reason = outcome.failure_reason;
        rec.lease = None;
        rec.finished_at = Some(Utc::now());
        close_attempt(&mut rec.placement, rec.state.as_str());
        let mut kpi = switchyard_training::kpi::job_kpi(
            &rec.backend,
            rec.state.as_str(),
            job.spec.nodes,
            &backend.rates(&job),
            rec.created_at,
            rec.started_at,
            rec.finished_at,
        );
        kpi.code_digest = code_digest;
        rec.kpi = serde_json::to_value(kpi).ok();
        if !self.store.update_job(&rec, None, Some(me())).await? {
            return Err(taken_over(&id, &self.store.get_job(&id).await?));
        }
        Ok(rec)
    }

    /// One attempt: `job` run on `backend` with its events recorded, until it
    /// ends, the job is taken over (`result` `None`), or, for a placed job
    /// not started within `maxStartSeconds` with another candidate that can
    /// take it, stopped there (`moving` says why, `next` is where).
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        rec: &JobRecord,
        backend: &dyn TrainingBackend,
        job: &TrainingJob,
        cancel: &CancellationToken,
        lost: &CancellationToken,
        notice: &NoticeSink,
        failover: Option<&Failover>,
    ) -> Attempt {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<JobEvent>();
        let follower = tokio::spawn(record_events(
            self.store.clone(),
            rec.clone(),
            notice.clone(),
            rx,
            lost.clone(),
        ));
        // The backend's events pass through here first: a start is seen as
        // soon as it is sent, not after the writes queued before it.
        let (btx, mut brx) = tokio::sync::mpsc::unbounded_channel::<JobEvent>();
        let started = CancellationToken::new();
        let forwarder = {
            let (started, tx) = (started.clone(), tx.clone());
            tokio::spawn(async move {
                while let Some(ev) = brx.recv().await {
                    if matches!(ev, JobEvent::Started { .. } | JobEvent::Running { .. }) {
                        started.cancel();
                    }
                    let _ = tx.send(ev);
                }
            })
        };
        let stop = cancel.child_token();
        let limit = failover.and_then(Failover::start_limit);
        let mut deadline = limit.map(|d| tokio::time::Instant::now() + d);
        let mut moving = None;
        let mut run = Box::pin(run_reattaching(backend, job, &rec.id, &btx, &stop));
        let result = loop {
            // Fires only while not all ranks run.
            let not_started = async {
                match deadline {
                    Some(t) => tokio::select! {
                        _ = tokio::time::sleep_until(t) => {}
                        _ = started.cancelled() => std::future::pending().await,
                    },
                    None => std::future::pending().await,
                }
            };
            // Taken over: what runs is the new follower's; detach from it
            // (the watcher fires `cancel` too, so `lost` must be seen first).
            tokio::select! {
                biased;
                _ = lost.cancelled() => break None,
                r = &mut run => break Some(r),
                _ = not_started => {
                    deadline = None;
                    let Some(f) = failover else { continue };
                    let secs = f.max_start_seconds().unwrap_or(0);
                    let why = format!("not all ranks running after {secs} s (maxStartSeconds)");
                    let next = self.next_placement(f).await;
                    // Started, or canceled, while the next place was decided:
                    // it stays.
                    if started.is_cancelled() || stop.is_cancelled() {
                        continue;
                    }
                    match next {
                        Ok(n) => {
                            let _ = tx.send(JobEvent::Status {
                                message: format!("{why}: stopping it here to place it elsewhere"),
                            });
                            stop.cancel();
                            moving = Some((why, n));
                        }
                        Err(none) => {
                            let _ = tx.send(JobEvent::Status {
                                message: format!("{why}, but it stays: {none}"),
                            });
                        }
                    }
                }
            }
        };
        drop(run);
        drop(btx);
        drop(tx);
        let _ = forwarder.await;
        let rec = match follower.await {
            Ok(r) => r,
            Err(_) => self
                .store
                .get_job(&rec.id)
                .await
                .unwrap_or_else(|_| rec.clone()),
        };
        // Moved on only once what ran here is known to be stopped: the
        // backend is asked by the job's identity (idempotent). Not
        // confirmed, the job stays here and its own result stands (a lost
        // contact is left for a resume, which reaches it).
        if moving.is_some() && !cancel.is_cancelled() {
            if let Err(e) = backend.stop(job, &rec.id).await {
                tracing::warn!(job = %rec.id, error = %e, "not failed over: the first attempt could not be confirmed stopped");
                moving = None;
            }
        }
        Attempt {
            rec,
            result,
            started: started.is_cancelled(),
            moving,
        }
    }

    /// The store's lifecycle watcher for job `id`, until `done`; the leases
    /// it looks at are renewed by the process's one keeper.
    fn watcher(
        &self,
        id: &str,
        cancel: &CancellationToken,
        lost: &CancellationToken,
        done: &CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let store: Arc<dyn LifecycleStore> = self.store.clone();
        lifecycle::keep_leases(&store);
        let (id, cancel, lost, done) = (id.to_string(), cancel.clone(), lost.clone(), done.clone());
        tokio::spawn(async move {
            lifecycle::watch(&*store, Kind::Job, &id, &cancel, &lost, &done).await;
        })
    }

    /// A job whose run ended in an error while what was submitted may still
    /// run (an adopted job, or one the backend lost contact with): the record
    /// is left as it was (`execute` gives it back), for a later resume or a
    /// cancel, which stops it.
    async fn left_running(
        &self,
        id: &str,
        e: &BackendError,
        lost_contact: bool,
        canceled: bool,
    ) -> Result<JobRecord, RunnerError> {
        if lost_contact && canceled {
            // Canceled meanwhile: stop it by its identity, as a cancel of a
            // job nobody follows does (given back first, so it is one).
            self.let_go(id).await;
            let now = self.store.get_job(id).await?;
            match self.cancel_orphan(&now).await {
                Ok(Some(done)) => return Ok(done),
                Ok(None) => {}
                Err(stop) => {
                    tracing::warn!(job = %id, error = %stop, "canceled while out of contact, and could not be stopped");
                }
            }
        }
        Err(if lost_contact {
            crate::recover::lost_contact(id, e)
        } else {
            crate::recover::left_as_it_was(id, e)
        })
    }
}

/// A job another process follows now: this one stopped following it.
fn taken_over(id: &str, now: &JobRecord) -> RunnerError {
    let owner = now.lease.as_ref().map_or("nobody", |l| l.owner.as_str());
    RunnerError::Refused(format!(
        "job {id} was taken over by {owner} (this process's lease expired); this process stopped following it and wrote nothing more"
    ))
}

/// `run` with the same id re-attaches to what was submitted, so a backend
/// that lost contact with its job (Retryable) is asked again: recording it
/// FAILED would leave a job that may still run (and bill) ended in the
/// record, where no cancel reaches it.
async fn run_reattaching(
    backend: &dyn TrainingBackend,
    job: &TrainingJob,
    id: &str,
    tx: &UnboundedSender<JobEvent>,
    cancel: &CancellationToken,
) -> Result<TrainingOutcome, BackendError> {
    let mut tries = 0;
    loop {
        let result = backend.run(job, id, tx.clone(), cancel.clone()).await;
        let Err(BackendError::Retryable(why)) = &result else {
            return result;
        };
        if tries >= REATTACH_TRIES || cancel.is_cancelled() {
            return result;
        }
        tries += 1;
        let wait = reattach_wait(tries);
        let message = format!(
            "lost contact with the job ({why}); re-attaching in {} s (try {tries} of {REATTACH_TRIES})",
            wait.as_secs()
        );
        // The follower shows it and records it as an event.
        let _ = tx.send(JobEvent::Status { message });
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            // Canceled while waiting: stopped by the caller, by identity.
            _ = cancel.cancelled() => return result,
        }
    }
}

/// Writes a followed job's events into its record and shows them; a write
/// the fence refuses (another process holds the job now) fires `lost`.
/// Metric values are written in batches (a log line can carry one; a busy
/// gang prints many a second), at most half a second late.
async fn record_events(
    store: Arc<dyn JobStore>,
    mut rec: JobRecord,
    notice: NoticeSink,
    mut rx: UnboundedReceiver<JobEvent>,
    lost: CancellationToken,
) -> JobRecord {
    let mut pending: Vec<(String, f64)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let written = |ok: Result<bool, switchyard_store::StoreError>| {
        if let Ok(false) = ok {
            lost.cancel();
        }
    };
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => ev,
                None => break,
            },
            _ = tick.tick() => {
                if !pending.is_empty() {
                    written(store.add_job_metrics(&rec.id, &std::mem::take(&mut pending), Some(me())).await);
                }
                continue;
            }
        };
        if let JobEvent::Metric { name, value } = ev {
            pending.push((name, value));
            continue;
        }
        if let Some(ok) = record_event(&*store, &mut rec, &notice, ev).await {
            written(ok);
        }
    }
    if !pending.is_empty() {
        written(store.add_job_metrics(&rec.id, &pending, Some(me())).await);
    }
    rec
}

/// Shows one event and writes what it changes (`None`: nothing to write).
async fn record_event(
    store: &dyn JobStore,
    rec: &mut JobRecord,
    notice: &NoticeSink,
    ev: JobEvent,
) -> Option<Result<bool, switchyard_store::StoreError>> {
    let owner = Some(me());
    Some(match ev {
        JobEvent::Log { host, rank, line } => {
            notice(Notice::Log {
                host: &host,
                rank,
                line: &line,
            });
            return None;
        }
        JobEvent::Started {
            attempt,
            master_port,
        } => {
            rec.state = State::Running;
            rec.restarts = attempt;
            rec.started_at.get_or_insert_with(Utc::now);
            let msg = format!("all ranks started (attempt {attempt}, master port {master_port})");
            notice(Notice::Status(&msg));
            store.update_job(rec, Some(&msg), owner).await
        }
        JobEvent::Running { message } => {
            if rec.state == State::Running {
                return None;
            }
            rec.state = State::Running;
            rec.started_at.get_or_insert_with(Utc::now);
            notice(Notice::Status(&message));
            store.update_job(rec, Some(&message), owner).await
        }
        JobEvent::Restarting { attempt, reason } => {
            let msg = format!(
                "restarting the gang (restart {attempt}): {}",
                reason.lines().next().unwrap_or("")
            );
            notice(Notice::Status(&msg));
            store
                .add_job_event(&rec.id, State::Running, &msg, owner)
                .await
        }
        JobEvent::Status { message } => {
            notice(Notice::Status(&message));
            store
                .add_job_event(&rec.id, rec.state, &message, owner)
                .await
        }
        JobEvent::Metric { name, value } => {
            store
                .add_job_metrics(&rec.id, &[(name, value)], owner)
                .await
        }
        JobEvent::Placement { details } => {
            rec.placement = Some(crate::place::merge_placement(
                rec.placement.as_ref(),
                details,
            ));
            store.update_job(rec, None, owner).await
        }
    })
}
