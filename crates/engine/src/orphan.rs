//! Canceling a run whose executing process died. Its steps may still run
//! where that process started them (a Pod, a SageMaker training job, a
//! PyTorchJob); marking the run CANCELED alone would leave them running,
//! and billing, with nothing left to stop them.

use std::sync::Arc;

use chrono::Utc;
use switchyard_store::lifecycle::{self, Claim, Kind, Orphan, Request, Target};
use switchyard_store::{Holder, Lease, LifecycleStore, RunRecord, State};

use crate::execute::RUN_CANCELED;
use crate::{Engine, EngineError};

/// How a cancel of a run nobody executes went.
#[derive(Debug)]
pub enum OrphanCancel {
    /// Recorded CANCELED; one line per thing stopped (none: nothing ran).
    Canceled(Vec<String>),
    /// A process holds the run (now): it stops on the cancel request.
    Held,
}

fn refused(run: &RunRecord, reason: String) -> EngineError {
    EngineError::State {
        id: run.id.clone(),
        action: "canceled",
        reason,
    }
}

impl Engine {
    /// Cancels run `id` when no process executes it: takes it (a
    /// compare-and-set on the lease it had, so of this cancel and a process
    /// resuming it at the same moment one wins), stops what its steps left
    /// running (the backend's `stop_run`), then records its unfinished tasks
    /// and the run CANCELED. The cancel request is written first, so a
    /// process that takes the run meanwhile stops at once. When something
    /// cannot be stopped, the run is left CANCELING and unheld and the error
    /// says so: a second cancel (or a server's recovery) tries again.
    pub async fn cancel_orphan(&self, id: &str) -> Result<OrphanCancel, EngineError> {
        let run = self.store.get_run(id).await?;
        if run.state.is_final() {
            return Err(refused(&run, format!("it is already {}", run.state)));
        }
        if run.lease.as_ref().is_some_and(Lease::held) {
            return Ok(OrphanCancel::Held);
        }
        // Steps placed by another kind of backend cannot be stopped from here.
        let placed = run.options["step_backend"].as_str().unwrap_or_default();
        let here = self.backend.name();
        if !placed.is_empty() && placed != here {
            return Err(refused(
                &run,
                format!(
                    "its steps run on the {placed} backend and this process places steps on {here}, so it could not stop them: cancel it through the server that ran it, or where SWITCHYARD_TASK_BACKEND={placed}"
                ),
            ));
        }
        let store: Arc<dyn LifecycleStore> = self.store.clone();
        let claim = Claim {
            to: Some(State::Canceling),
            ..Claim::lease_only()
        };
        let me = &Holder::current().id;
        let stop = || self.stop_and_record(&run, me);
        let target = Target {
            kind: Kind::Run,
            id: &run.id,
            observed: run.lease.as_ref(),
            claim,
            // A cancel accepted stays accepted: the run stays CANCELING
            // with its request when what it left running cannot be stopped.
            request: Request::First,
        };
        Ok(
            match lifecycle::cancel_orphan(&store, target, stop).await? {
                Orphan::Ended(stopped) => OrphanCancel::Canceled(stopped),
                Orphan::Held => OrphanCancel::Held,
            },
        )
    }

    /// The part of [`Engine::cancel_orphan`] done while holding the run.
    async fn stop_and_record(&self, run: &RunRecord, me: &str) -> Result<Vec<String>, EngineError> {
        let stopped = self.backend.stop_run(&run.id).await.map_err(|e| {
            refused(
                run,
                format!(
                    "what its steps started could not be stopped ({e}); it is left CANCELING with no process: cancel it again once that is fixed"
                ),
            )
        })?;
        let taken = || refused(run, "another process took it over meanwhile".into());
        let now = Utc::now();
        for mut task in self.store.list_tasks(&run.id).await? {
            if task.state.is_final() {
                continue;
            }
            task.state = State::Canceled;
            task.error = Some(RUN_CANCELED.into());
            task.finished_at = Some(now);
            if !self.store.put_task(&task, Some(me)).await? {
                return Err(taken());
            }
        }
        let canceled = Some(RUN_CANCELED.to_string());
        let moved = self
            .record_end(
                &run.id,
                &[State::Canceling],
                State::Canceled,
                None,
                canceled,
            )
            .await?;
        if !moved {
            return Err(taken());
        }
        self.store.release(Kind::Run, &run.id, me).await?;
        Ok(stopped)
    }
}
