//! One recovery scan for everything a server may take over: unfinished runs
//! and training jobs that no process holds any more (their owner's lease
//! expired, or the owner was a process of this host that is gone). Each is
//! taken over the same way (a lifecycle claim) and then continued or stopped
//! as its kind needs.

use switchyard_store::{JobRecord, Kind, Lease, RunField, RunFilter, RunRecord, UNFINISHED};

use crate::error::ApiError;
use crate::AppState;

/// An unfinished record of either kind that no process holds.
enum Orphaned {
    Run(RunRecord),
    Job(JobRecord),
}

/// What recovery did with one orphaned record.
enum Recovered {
    Resumed,
    Followed,
    /// Left alone or stopped (a cancel finished, a step's job stopped).
    Other,
}

/// Takes over the unfinished runs and jobs no process holds: a run a
/// server created is resumed (one whose cancel was accepted has its cancel
/// finished instead); a job submitted on its own is followed again; a
/// step's job is left to its step (which runs again with its run) unless
/// that run has ended, when it is stopped where it runs. Returns how many
/// runs were resumed.
pub async fn recover(state: &AppState) -> Result<usize, ApiError> {
    let mut runs = 0;
    let mut jobs = 0;
    for orphan in orphans(state).await? {
        match recover_one(state, orphan).await {
            Recovered::Resumed => runs += 1,
            Recovered::Followed => jobs += 1,
            Recovered::Other => {}
        }
    }
    if jobs > 0 {
        tracing::info!(jobs, "following again jobs no process followed");
    }
    Ok(runs)
}

/// Recovers again every lease period, so runs and jobs of a server that died
/// are taken over by a live one (several servers on one PostgreSQL database,
/// or two on one data directory) once their lease expires.
pub fn keep_recovering(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(switchyard_store::lease_ttl());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match recover(&state).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(runs = n, "took over runs whose owner's lease expired"),
                Err(e) => tracing::warn!(error = %e, "recovery scan failed"),
            }
        }
    });
}

/// Both kinds' unfinished records that nobody holds, runs first. Only runs
/// a server created (they have a catalog entry) are a server's to resume:
/// `switchyard run` resumes its own. A kind whose records cannot be read is
/// said and skipped, so the other is still recovered.
async fn orphans(state: &AppState) -> Result<Vec<Orphaned>, ApiError> {
    let mut found = Vec::new();
    for kind in Kind::ALL {
        match orphans_of(state, kind).await {
            Ok(some) => found.extend(some),
            // Runs first, as before: their failure is the scan's.
            Err(e) if kind == Kind::Run => return Err(e),
            Err(e) => {
                tracing::warn!(kind = kind.noun(), error = %e, "cannot list what no process holds; skipped in this scan")
            }
        }
    }
    Ok(found)
}

async fn orphans_of(state: &AppState, kind: Kind) -> Result<Vec<Orphaned>, ApiError> {
    Ok(match kind {
        Kind::Run => {
            let unfinished = RunFilter {
                field: RunField::State,
                negate: false,
                values: UNFINISHED.iter().map(|s| s.as_str().to_string()).collect(),
            };
            let (runs, _) = state
                .catalog
                .page_runs(None, &[unfinished], false, 0, i64::MAX as u64)
                .await?;
            let ours = |id: &str| state.active.lock().is_ok_and(|a| a.contains(id));
            runs.into_iter()
                .filter(|(run, catalog)| {
                    catalog.is_some() && !held(run.lease.as_ref()) && !ours(&run.id)
                })
                .map(|(run, _)| Orphaned::Run(run))
                .collect()
        }
        Kind::Job => state
            .jobs
            .store()
            .unfinished_jobs()
            .await?
            .into_iter()
            .filter(|j| !held(j.lease.as_ref()))
            .map(Orphaned::Job)
            .collect(),
    })
}

fn held(lease: Option<&Lease>) -> bool {
    lease.is_some_and(Lease::held)
}

async fn recover_one(state: &AppState, orphan: Orphaned) -> Recovered {
    match orphan {
        Orphaned::Run(run) if run.state == switchyard_store::State::Canceling => {
            // Its cancel was accepted: finish the cancel (stop what its steps
            // left running), never resume it, which would clear the request.
            let (engine, id) = (state.engine.clone(), run.id);
            tokio::spawn(async move {
                match engine.cancel_orphan(&id).await {
                    Ok(_) => {
                        tracing::warn!(run = %id, "finished the cancel of a run no process held")
                    }
                    Err(e) => {
                        tracing::warn!(run = %id, error = %e, "cannot finish the cancel of a run no process holds")
                    }
                }
            });
            Recovered::Other
        }
        Orphaned::Run(run) => {
            tracing::warn!(run = %run.id, state = %run.state, owner = ?run.lease.as_ref().map(|l| &l.owner), "resuming a run no process holds");
            state.spawn_run(run.id, true);
            Recovered::Resumed
        }
        Orphaned::Job(job) if job.task.is_some() => {
            stop_if_run_ended(state, &job).await;
            Recovered::Other
        }
        Orphaned::Job(job) => follow_again(state, &job).await,
    }
}

/// A pipeline step's job is its resumed step's to follow; when that run has
/// ended (or is gone), nothing will: the job is stopped where it runs.
async fn stop_if_run_ended(state: &AppState, j: &JobRecord) {
    let Some(link) = &j.task else { return };
    match state.runs.get_run(&link.run_id).await {
        Ok(run) if !run.state.is_final() => return,
        Ok(_) | Err(switchyard_store::StoreError::RunNotFound(_)) => {}
        Err(e) => {
            tracing::warn!(job = %j.id, error = %e, "cannot read the run of a step's job");
            return;
        }
    }
    match state.jobs.cancel_orphan(j).await {
        Ok(Some(done)) => {
            tracing::warn!(job = %j.id, run = %link.run_id, reason = ?done.failure_reason, "stopped a step's job whose run had ended")
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(job = %j.id, error = %e, "cannot stop a step's job whose run had ended")
        }
    }
}

/// A job submitted on its own: a SageMaker job or PyTorchJob is re-attached
/// to, a local gang starts again.
async fn follow_again(state: &AppState, j: &JobRecord) -> Recovered {
    let adopted = match state.jobs.adopt(j).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(job = %j.id, error = %e, "cannot follow an orphaned job again");
            return Recovered::Other;
        }
    };
    let switchyard_runner::Adopted::Mine(prepared, job) = adopted else {
        return Recovered::Other;
    };
    tracing::warn!(job = %j.id, backend = %j.backend, "following again a job no process followed");
    crate::jobs::follow_in_background(state, *prepared, *job);
    Recovered::Followed
}
