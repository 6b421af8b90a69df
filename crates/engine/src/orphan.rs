//! Canceling a run whose executing process died. Its steps may still run
//! where that process started them (a Pod, a SageMaker training job, a
//! PyTorchJob); marking the run CANCELED alone would leave them running,
//! and billing, with nothing left to stop them.

use chrono::Utc;
use switchyard_store::{Holder, Lease, RunUpdate, State};

use crate::{Engine, EngineError};

/// How a cancel of a run nobody executes went.
#[derive(Debug)]
pub enum OrphanCancel {
    /// Recorded CANCELED; one line per thing stopped (none: nothing ran).
    Canceled(Vec<String>),
    /// A process holds the run (now): it stops on the cancel request.
    Held,
}

const RUN_CANCELED: &str = "run canceled";

impl Engine {
    /// Cancels run `id` when no process executes it: takes it (a
    /// compare-and-set on the lease it had, so of this cancel and a process
    /// resuming it at the same moment one wins), stops what its steps left
    /// running (the backend's `stop_run`), then records its unfinished tasks
    /// and the run CANCELED. The cancel request is written first, so a
    /// process that takes the run meanwhile stops at once. When something
    /// cannot be stopped, the run is left CANCELING and unheld and the error
    /// says so: a second cancel tries again.
    pub async fn cancel_orphan(&self, id: &str) -> Result<OrphanCancel, EngineError> {
        let run = self.store.get_run(id).await?;
        if run.state.is_final() {
            return Err(EngineError::State {
                id: run.id,
                action: "canceled",
                reason: format!("it is already {}", run.state),
            });
        }
        if run.lease.as_ref().is_some_and(Lease::held) {
            return Ok(OrphanCancel::Held);
        }
        self.store.request_cancel(&run.id).await?;
        let me = Holder::current();
        let unfinished = [State::Pending, State::Running, State::Canceling];
        let taken = self
            .store
            .claim_run(
                &run.id,
                &unfinished,
                run.lease.as_ref(),
                &me.lease(),
                State::Canceling,
                RunUpdate::default(),
            )
            .await?;
        if !taken {
            return Ok(OrphanCancel::Held);
        }
        let stopped = match self.backend.stop_run(&run.id).await {
            Ok(stopped) => stopped,
            Err(e) => {
                self.store.release_run(&run.id, &me.id).await?;
                return Err(EngineError::State {
                    id: run.id,
                    action: "canceled",
                    reason: format!(
                        "what its steps started could not be stopped ({e}); it is left CANCELING with no process: cancel it again once that is fixed"
                    ),
                });
            }
        };
        let now = Utc::now();
        for mut task in self.store.list_tasks(&run.id).await? {
            if task.state.is_final() {
                continue;
            }
            task.state = State::Canceled;
            task.error = Some(RUN_CANCELED.into());
            task.finished_at = Some(now);
            self.store.put_task(&task, Some(&me.id)).await?;
        }
        let update = RunUpdate {
            error: Some(RUN_CANCELED.into()),
            finished_at: Some(now),
            if_owned_by: Some(me.id.clone()),
            ..Default::default()
        };
        self.store
            .transition_run(&run.id, &[State::Canceling], State::Canceled, update)
            .await?;
        self.store.release_run(&run.id, &me.id).await?;
        Ok(OrphanCancel::Canceled(stopped))
    }
}
