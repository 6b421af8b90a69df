//! One lifecycle for everything a process holds while it works on it: runs
//! and training jobs (and whatever long-running kind comes next). Each is
//! claimed with a compare-and-set on its lease, kept by one renewal per
//! process, asked to stop through one cancel flag, watched by one loop, and
//! given back the same way, so a rule about holding is written once.
//!
//! The rules themselves (who may take a record, when a lease is expired) are
//! in [`crate::lease`]; this module is how the store applies them to a row.

use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::{Holder, Lease, Result, State};

/// Which kind of held record: the table a lifecycle operation works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Run,
    Job,
}

impl Kind {
    /// Every kind, for the lease keeper and recovery scans.
    pub const ALL: [Kind; 2] = [Kind::Run, Kind::Job];

    /// The word for it in messages.
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Run => "run",
            Kind::Job => "job",
        }
    }

    /// The error for a record of this kind that does not exist.
    pub(crate) fn not_found(self, id: &str) -> crate::StoreError {
        match self {
            Kind::Run => crate::StoreError::RunNotFound(id.to_string()),
            Kind::Job => crate::StoreError::JobNotFound(id.to_string()),
        }
    }
}

/// The states in which a record is still held, renewed and recoverable.
pub const UNFINISHED: [State; 3] = [State::Pending, State::Running, State::Canceling];

/// What a claim changes besides the owner, in the same statement.
#[derive(Debug, Clone, Copy, Default)]
pub struct Claim<'a> {
    /// The states the record must be in (empty: any unfinished state).
    pub from: &'a [State],
    /// The state it moves to, recorded in its history; `None` keeps it.
    pub to: Option<State>,
    /// Set when given.
    pub started_at: Option<DateTime<Utc>>,
    /// Clears the error, the end time and the cancel request (a resume).
    pub reset: bool,
}

impl Claim<'_> {
    /// A claim that only takes the lease, of a record in any unfinished state.
    pub fn lease_only() -> Self {
        Claim::default()
    }

    pub(crate) fn states(&self) -> &[State] {
        if self.from.is_empty() {
            &UNFINISHED
        } else {
            self.from
        }
    }
}

/// What a working process polls about what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    pub state: State,
    pub cancel_requested: bool,
    /// The lease owner id recorded now.
    pub owner: Option<String>,
}

/// Holding, renewing, canceling and releasing runs and jobs. Every
/// implementation makes each call one atomic step, safe between processes.
#[async_trait::async_trait]
pub trait LifecycleStore: Send + Sync {
    /// Takes record `id` for `lease`'s owner, only if its lease is still
    /// exactly `observed` (what the caller saw and judged expired or absent)
    /// and its state is one of `claim.from`. Of two processes racing for one
    /// record exactly one gets true. A lease the caller itself holds matches
    /// by owner alone: its own renewal between the look and the take must
    /// not make the take fail.
    async fn claim(
        &self,
        kind: Kind,
        id: &str,
        observed: Option<&Lease>,
        lease: &Lease,
        claim: Claim<'_>,
    ) -> Result<bool>;
    /// Gives the record up, only if `owner` still holds it.
    async fn release(&self, kind: Kind, id: &str, owner: &str) -> Result<bool>;
    /// Extends to `until` the lease of every unfinished record, of every
    /// kind, that `owner` holds; returns how many.
    async fn renew_leases(&self, owner: &str, until: DateTime<Utc>) -> Result<u64>;
    /// The record's state, cancel request and owner now.
    async fn control(&self, kind: Kind, id: &str) -> Result<Control>;
    /// Asks whoever works on the record to stop (nothing when it is gone).
    async fn request_cancel(&self, kind: Kind, id: &str) -> Result<()>;
}

type Keepers = Vec<(Weak<dyn LifecycleStore>, tokio::task::JoinHandle<()>)>;

/// Starts, once per store and process, the task that renews every lease this
/// process holds in `store`: one renewal per [`crate::renew_every`], whoever
/// (engine, job runner, server) took the records. It ends with the store.
pub fn keep_leases(store: &Arc<dyn LifecycleStore>) {
    static KEEPERS: Mutex<Keepers> = Mutex::new(Vec::new());
    let mut keepers = KEEPERS.lock().unwrap_or_else(|e| e.into_inner());
    // A keeper whose store is gone, or whose runtime ended (a test's), is dropped.
    keepers.retain(|(weak, task)| weak.strong_count() > 0 && !task.is_finished());
    let this = Arc::as_ptr(store) as *const ();
    if keepers
        .iter()
        .any(|(weak, _)| weak.as_ptr() as *const () == this)
    {
        return;
    }
    let weak = Arc::downgrade(store);
    let task = tokio::spawn({
        let weak = weak.clone();
        async move {
            let me = Holder::current();
            let mut tick = tokio::time::interval(crate::renew_every());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(store) = weak.upgrade() else { return };
                if let Err(e) = store.renew_leases(&me.id, crate::expiry()).await {
                    tracing::warn!(error = %e, "could not renew this process's leases");
                }
            }
        }
    });
    keepers.push((weak, task));
}

/// How the work on a held record ended, as its watcher saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watched {
    /// The work finished (`done` fired) with nothing else seen.
    Done,
    /// Stopped by `cancel` or by a cancel request in the store.
    Canceled,
    /// Another process (named) holds the record now, or `lost` fired; this
    /// process must stop without writing anything more.
    Lost { owner: String },
}

/// How often a working process looks at its record.
const WATCH_EVERY: Duration = Duration::from_millis(200);

/// Watches record `id` while this process works on it: a cancel request in
/// the store fires `cancel`; another owner (this process's lease expired and
/// it was taken over) or `lost` (a fenced write found another owner) fires
/// both `lost` and `cancel`. Returns at the first of these, or when `done`
/// fires.
pub async fn watch(
    store: &dyn LifecycleStore,
    kind: Kind,
    id: &str,
    cancel: &CancellationToken,
    lost: &CancellationToken,
    done: &CancellationToken,
) -> Watched {
    let me = &Holder::current().id;
    let named = |owner: Option<String>| owner.unwrap_or_else(|| "nobody".into());
    loop {
        tokio::select! {
            biased;
            // Before `done`: a fenced write that failed may also have ended the work.
            _ = lost.cancelled() => {
                cancel.cancel();
                let owner = store.control(kind, id).await.ok().and_then(|c| c.owner);
                return Watched::Lost { owner: named(owner) };
            }
            _ = done.cancelled() => return Watched::Done,
            _ = cancel.cancelled() => return Watched::Canceled,
            _ = tokio::time::sleep(WATCH_EVERY) => {
                let Ok(control) = store.control(kind, id).await else { continue };
                if control.owner.as_deref() != Some(me.as_str()) {
                    let owner = named(control.owner);
                    tracing::error!(%id, %owner, "this process lost the {} to another; stopping its work", kind.noun());
                    lost.cancel();
                    cancel.cancel();
                    return Watched::Lost { owner };
                }
                if control.cancel_requested {
                    cancel.cancel();
                    return Watched::Canceled;
                }
            }
        }
    }
}

/// How a cancel of a record nobody works on went.
#[derive(Debug)]
pub enum Orphan<T> {
    /// Taken, stopped and recorded ended: what `stop` said.
    Ended(T),
    /// A process holds it (now): it stops on the cancel request.
    Held,
}

/// A record this process holds, given back when the holding ends however
/// it ends: [`Hold::release`] at the end of the work, or, when the work's
/// future is dropped midway (a follower detached, a request abandoned), a
/// release spawned from `drop`. Without it the one lease keeper would renew
/// the record for as long as the process lives and nobody could take it over.
/// Releasing is fenced by the owner: a record another process took, or one
/// whose end already cleared its lease, is left as it is.
pub struct Hold {
    store: Arc<dyn LifecycleStore>,
    kind: Kind,
    id: String,
    armed: bool,
}

impl Hold {
    pub fn new(store: Arc<dyn LifecycleStore>, kind: Kind, id: &str) -> Self {
        Hold {
            store,
            kind,
            id: id.to_string(),
            armed: true,
        }
    }

    /// Gives the record back now (if this process still holds it).
    pub async fn release(mut self) {
        self.armed = false;
        let me = &Holder::current().id;
        if let Err(e) = self.store.release(self.kind, &self.id, me).await {
            tracing::warn!(kind = self.kind.noun(), id = %self.id, error = %e, "could not give the record back; its lease expires instead");
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (store, kind, id) = (self.store.clone(), self.kind, std::mem::take(&mut self.id));
        runtime.spawn(async move {
            let _ = store.release(kind, &id, &Holder::current().id).await;
        });
    }
}

/// Whether [`cancel_orphan`] writes the cancel request before it claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// First, and kept when the stop fails: a process that takes the record
    /// meanwhile (or later) stops at once; a run's cancel was accepted and
    /// stays accepted.
    First,
    /// Not at all: when the stop fails the record is left exactly as it was
    /// (a training job: a later resume follows it again).
    Never,
}

/// The record [`cancel_orphan`] is to cancel, as the caller saw it.
pub struct Target<'a> {
    pub kind: Kind,
    pub id: &'a str,
    /// Its lease when the caller looked (judged expired or absent).
    pub observed: Option<&'a Lease>,
    /// What taking it changes besides the owner.
    pub claim: Claim<'a>,
    pub request: Request,
}

/// Cancels a record when no process works on it: takes it by a
/// compare-and-set on the lease it had (of this cancel and a process
/// resuming it, one wins), then runs `stop`, which stops what the backend
/// still runs for it and records its end. When `stop` fails (or this future
/// is dropped) the record is released again, so a second cancel or a
/// recovery retries.
pub async fn cancel_orphan<T, E, F, Fut>(
    store: &Arc<dyn LifecycleStore>,
    target: Target<'_>,
    stop: F,
) -> std::result::Result<Orphan<T>, E>
where
    E: From<crate::StoreError>,
    F: FnOnce() -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
{
    let Target {
        kind,
        id,
        observed,
        claim,
        request,
    } = target;
    if observed.is_some_and(Lease::held) {
        return Ok(Orphan::Held);
    }
    if request == Request::First {
        store.request_cancel(kind, id).await?;
    }
    keep_leases(store);
    let me = Holder::current();
    if !store.claim(kind, id, observed, &me.lease(), claim).await? {
        return Ok(Orphan::Held);
    }
    let hold = Hold::new(store.clone(), kind, id);
    let stopped = stop().await;
    // Stopped: its end cleared the lease, so this gives back nothing.
    hold.release().await;
    stopped.map(Orphan::Ended)
}
