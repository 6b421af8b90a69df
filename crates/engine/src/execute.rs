//! Driving one run from its claim to its recorded end: take it (the store's
//! lifecycle claim), read its spec, build what its tasks share, walk its DAG
//! while the lifecycle watcher looks for a cancel request or a take-over,
//! decide how it ended, and record that fenced by this process's lease.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use serde_json::Value;
use switchyard_kfp_spec::{validate, PipelineSpec};
use switchyard_store::lifecycle::{self, Claim, Kind, Watched};
use switchyard_store::{Holder, RunRecord, RunUpdate, State};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::driver::{self, Outcome, RunCtx};
use crate::events::EventSender;
use crate::io::Io;
use crate::{artifacts, run_values, workspace, Engine, EngineError};

/// The error of a run (and its unfinished tasks) that ended canceled.
pub(crate) const RUN_CANCELED: &str = "run canceled";

/// The states a run is taken from: a fresh run only when PENDING; a resume
/// from any state but SUCCEEDED.
fn resumable(resume: bool) -> &'static [State] {
    if resume {
        &[
            State::Running,
            State::Failed,
            State::Canceled,
            State::Canceling,
            State::Pending,
        ]
    } else {
        &[State::Pending]
    }
}

/// How a run ends, from how its DAG ended: canceled when `canceled` (the
/// token fired, or a terminate was accepted meanwhile); SUCCEEDED for a root
/// DAG that succeeded or was skipped; else its state with the first failed
/// task's message (and how many more failed).
pub(crate) fn ending(
    canceled: bool,
    outcome: &Outcome,
    failures: &[(String, String)],
) -> (State, Option<String>) {
    if canceled {
        return (State::Canceled, Some(RUN_CANCELED.to_string()));
    }
    match outcome.state {
        State::Succeeded | State::Skipped => (State::Succeeded, None),
        s => {
            let msg = match failures.split_first() {
                Some(((_, first), [])) => first.clone(),
                Some(((_, first), rest)) => {
                    format!("{first} (and {} more failed tasks)", rest.len())
                }
                None => outcome.error.clone().unwrap_or_else(|| "run failed".into()),
            };
            (s, Some(msg))
        }
    }
}

impl Engine {
    /// Drives a run to a final state. With `resume`, tasks that already
    /// succeeded in this run are kept, not run again. `cancel` (or a cancel
    /// request written to the store by another process) stops it.
    pub async fn execute(
        &self,
        run_id: &str,
        events: EventSender,
        cancel: CancellationToken,
        resume: bool,
    ) -> Result<RunRecord, EngineError> {
        let run = self.store.get_run(run_id).await?;
        // Unfinished when taken: its process died mid-run (see RunCtx::reattach).
        let reattach = resume && !run.state.is_final();
        self.take(&run, resume).await?;
        let spec = match read_spec(&run).await {
            Ok(spec) => spec,
            Err(e) => {
                // A stored spec that cannot be executed (e.g. recorded before
                // a limit existed) fails its run instead of leaving it RUNNING.
                let error = format!("the run cannot be executed: {e}");
                self.record_end(&run.id, &[State::Running], State::Failed, None, Some(error))
                    .await?;
                return Err(e);
            }
        };
        let ctx = Arc::new(self.context(&run, spec, events, cancel.clone(), resume, reattach));
        let done = CancellationToken::new();
        let watcher = self.watcher(&run.id, &ctx, &done);

        let params = run.parameters.as_object().cloned().unwrap_or_default();
        let root = Io {
            parameters: params,
            ..Default::default()
        };
        let outcome =
            driver::run_dag(ctx.clone(), driver::Scope::default(), "root".into(), root).await;
        let failures = ctx.failures.lock().map(|f| f.clone()).unwrap_or_default();
        let (state, error) = ending(cancel.is_cancelled(), &outcome, &failures);
        done.cancel();
        if let Ok(Some(owner)) = watcher.await {
            return Err(EngineError::LeaseLost { id: run.id, owner });
        }
        // A terminate accepted while the last task finished still wins: the
        // answer it got must match how the run ends.
        let late_cancel = state != State::Canceled
            && self
                .store
                .control(Kind::Run, &run.id)
                .await
                .is_ok_and(|c| c.cancel_requested);
        let (state, error) = if late_cancel {
            (State::Canceled, Some(RUN_CANCELED.to_string()))
        } else {
            (state, error)
        };
        let outputs = (state == State::Succeeded).then(|| outcome.outputs.to_user_json());
        self.finish(&run.id, state, error, outputs).await
    }

    /// Claims the run for this process: exactly one process executes it,
    /// even if two resume it at once; never one another process holds (a
    /// live owner of this host, or an unexpired lease elsewhere).
    async fn take(&self, run: &RunRecord, resume: bool) -> Result<(), EngineError> {
        let action = if resume { "resumed" } else { "started" };
        if let Some(lease) = run.lease.as_ref().filter(|l| l.held() && !l.is_mine()) {
            return Err(EngineError::State {
                id: run.id.clone(),
                action,
                reason: format!(
                    "process {} on {} holds it (lease until {})",
                    lease.pid, lease.host, lease.until
                ),
            });
        }
        self.keep_leases();
        let claim = Claim {
            from: resumable(resume),
            to: Some(State::Running),
            started_at: Some(Utc::now()),
            reset: resume,
        };
        let me = Holder::current();
        let taken = self
            .store
            .claim(Kind::Run, &run.id, run.lease.as_ref(), &me.lease(), claim)
            .await?;
        if taken {
            return Ok(());
        }
        Err(EngineError::State {
            id: run.id.clone(),
            action,
            reason: format!(
                "it is {} (or another process took it first)",
                self.store.get_run(&run.id).await?.state
            ),
        })
    }

    /// What the run's tasks share while it executes.
    fn context(
        &self,
        run: &RunRecord,
        spec: PipelineSpec,
        events: EventSender,
        cancel: CancellationToken,
        resume: bool,
        reattach: bool,
    ) -> RunCtx {
        let options = &run.options;
        let parallelism = options["parallelism"].as_u64().unwrap_or(1).max(1) as usize;
        let local_root = options["local_root"].as_str().unwrap_or(&run.pipeline_root);
        let run_dir = PathBuf::from(local_root)
            .join(&run.pipeline_name)
            .join(&run.id);
        let remote_base = artifacts::is_remote(&run.pipeline_root).then(|| {
            format!(
                "{}/{}/{}",
                run.pipeline_root.trim_end_matches('/'),
                run.pipeline_name,
                run.id
            )
        });
        RunCtx {
            run_id: run.id.clone(),
            run_values: run_values(run, &run_dir),
            run_dir,
            logs_dir: self.logs_dir.join(&run.id),
            spec,
            cache: options["cache"].as_bool().unwrap_or(true),
            resume,
            reattach,
            slots: Semaphore::new(parallelism),
            cancel,
            events,
            store: self.store.clone(),
            backend: self.backend.clone(),
            artifacts: self.artifacts.clone(),
            remote_base,
            lost: CancellationToken::new(),
            owner: Holder::current().id.clone(),
            workspace_size: workspace(run)["size"].as_str().map(str::to_string),
            notices: Mutex::new(Default::default()),
            failures: Mutex::new(Vec::new()),
            service_account: options["service_account"]
                .as_str()
                .filter(|a| !a.is_empty())
                .map(str::to_string),
            platform_executors: options["platform_spec"]["platforms"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(name, p)| (name.clone(), p["deploymentSpec"]["executors"].clone()))
                .collect(),
        }
    }

    /// The store's lifecycle watcher for the run, until `done`: a cancel
    /// moves the run to CANCELING; a take-over (another owner, or a fenced
    /// task write that found one) ends with that owner, and this execution
    /// then stops unrecorded.
    fn watcher(
        &self,
        id: &str,
        ctx: &RunCtx,
        done: &CancellationToken,
    ) -> tokio::task::JoinHandle<Option<String>> {
        let store = self.store.clone();
        let (id, cancel, lost, done) = (
            id.to_string(),
            ctx.cancel.clone(),
            ctx.lost.clone(),
            done.clone(),
        );
        tokio::spawn(async move {
            match lifecycle::watch(&*store, Kind::Run, &id, &cancel, &lost, &done).await {
                Watched::Lost { owner } => Some(owner),
                Watched::Done => None,
                Watched::Canceled => {
                    let update = RunUpdate {
                        if_owned_by: Some(Holder::current().id.clone()),
                        ..Default::default()
                    };
                    let _ = store
                        .transition_run(&id, &[State::Running], State::Canceling, update)
                        .await;
                    done.cancelled().await;
                    None
                }
            }
        })
    }

    /// Records the run's end, fenced by this process's lease, and lets it go.
    async fn finish(
        &self,
        id: &str,
        state: State,
        error: Option<String>,
        outputs: Option<Value>,
    ) -> Result<RunRecord, EngineError> {
        let mut finished = self
            .record_end(id, &[State::Running], state, outputs, error)
            .await?;
        if !finished {
            // CANCELING (a terminate took it there meanwhile) ends CANCELED, never SUCCEEDED.
            let canceled = Some(RUN_CANCELED.to_string());
            finished = self
                .record_end(id, &[State::Canceling], State::Canceled, None, canceled)
                .await?;
        }
        let me = &Holder::current().id;
        self.store.release(Kind::Run, id, me).await?;
        if !finished {
            // Someone moved the run while it executed (e.g. marked it canceled).
            return Err(EngineError::State {
                id: id.to_string(),
                action: "finished",
                reason: format!(
                    "it was moved to {} by another process meanwhile",
                    self.store.get_run(id).await?.state
                ),
            });
        }
        Ok(self.store.get_run(id).await?)
    }

    /// Moves the run from `from` to the final `to` with its outputs or
    /// error, fenced by this process's lease; false when it was not in
    /// `from` or not ours.
    pub(crate) async fn record_end(
        &self,
        id: &str,
        from: &[State],
        to: State,
        outputs: Option<Value>,
        error: Option<String>,
    ) -> Result<bool, EngineError> {
        let update = RunUpdate {
            outputs,
            error,
            finished_at: Some(Utc::now()),
            if_owned_by: Some(Holder::current().id.clone()),
            ..Default::default()
        };
        Ok(self.store.transition_run(id, from, to, update).await?)
    }
}

/// The run's stored spec, parsed and validated off the runtime (a large spec
/// takes a while to read back).
async fn read_spec(run: &RunRecord) -> Result<PipelineSpec, EngineError> {
    let (stored, id) = (run.spec.clone(), run.id.clone());
    let stored_spec = |reason: String| EngineError::StoredSpec {
        id: run.id.clone(),
        reason,
    };
    tokio::task::spawn_blocking(move || {
        let value =
            serde_json::from_str::<Value>(&stored).map_err(|e| EngineError::StoredSpec {
                id,
                reason: e.to_string(),
            })?;
        let spec = switchyard_kfp_spec::parse::from_value(value)?;
        validate(&spec)?;
        Ok(spec)
    })
    .await
    .unwrap_or_else(|e| Err(stored_spec(format!("reading it failed: {e}"))))
}
