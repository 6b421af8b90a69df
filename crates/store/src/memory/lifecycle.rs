//! [`LifecycleStore`] in memory, with SQL's semantics: the same columns of a
//! run and a job, reached through one view of either.

use chrono::{DateTime, Utc};

use super::{stored, takes, Data, MemoryStore};
use crate::lifecycle::{Claim, Control, Kind, LifecycleStore, UNFINISHED};
use crate::{Lease, Result, State};

/// The lifecycle fields of one run or job.
struct Lived<'a> {
    state: &'a mut State,
    lease: &'a mut Option<Lease>,
    started_at: &'a mut Option<DateTime<Utc>>,
    finished_at: &'a mut Option<DateTime<Utc>>,
    error: &'a mut Option<String>,
    cancel: &'a mut bool,
}

impl Data {
    fn lived(&mut self, kind: Kind, id: &str) -> Option<Lived<'_>> {
        Some(match kind {
            Kind::Run => {
                let (r, cancel) = self.runs.get_mut(id)?;
                Lived {
                    state: &mut r.state,
                    lease: &mut r.lease,
                    started_at: &mut r.started_at,
                    finished_at: &mut r.finished_at,
                    error: &mut r.error,
                    cancel,
                }
            }
            Kind::Job => {
                let (j, cancel) = self.jobs.get_mut(id)?;
                Lived {
                    state: &mut j.state,
                    lease: &mut j.lease,
                    started_at: &mut j.started_at,
                    finished_at: &mut j.finished_at,
                    error: &mut j.failure_reason,
                    cancel,
                }
            }
        })
    }

    /// The history row a state change adds for the kind.
    fn record_state(&mut self, kind: Kind, id: &str, state: State) {
        match kind {
            Kind::Run => self.transition(id, None, state),
            Kind::Job => self.job_event(id, state, None),
        }
    }
}

#[async_trait::async_trait]
impl LifecycleStore for MemoryStore {
    async fn claim(
        &self,
        kind: Kind,
        id: &str,
        observed: Option<&Lease>,
        lease: &Lease,
        claim: Claim<'_>,
    ) -> Result<bool> {
        let mut d = self.data();
        let Some(l) = d.lived(kind, id) else {
            return Ok(false);
        };
        if !claim.states().contains(l.state) || !takes(l.lease.as_ref(), observed, lease) {
            return Ok(false);
        }
        *l.lease = Some(stored(lease));
        if let Some(to) = claim.to {
            *l.state = to;
        }
        if claim.started_at.is_some() {
            *l.started_at = claim.started_at;
        }
        if claim.reset {
            *l.error = None;
            *l.finished_at = None;
            *l.cancel = false;
        }
        if let Some(to) = claim.to {
            d.record_state(kind, id, to);
        }
        Ok(true)
    }

    async fn release(&self, kind: Kind, id: &str, owner: &str) -> Result<bool> {
        let mut d = self.data();
        match d.lived(kind, id) {
            Some(l) if l.lease.as_ref().is_some_and(|l| l.owner == owner) => {
                *l.lease = None;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn renew_leases(&self, owner: &str, until: DateTime<Utc>) -> Result<u64> {
        let until = DateTime::from_timestamp_millis(until.timestamp_millis()).unwrap_or(until);
        let mut d = self.data();
        let ids: Vec<(Kind, String)> = d
            .runs
            .keys()
            .map(|id| (Kind::Run, id.clone()))
            .chain(d.jobs.keys().map(|id| (Kind::Job, id.clone())))
            .collect();
        let mut renewed = 0;
        for (kind, id) in ids {
            let Some(l) = d.lived(kind, &id) else {
                continue;
            };
            if !UNFINISHED.contains(l.state) {
                continue;
            }
            if let Some(lease) = l.lease.as_mut().filter(|l| l.owner == owner) {
                lease.until = until;
                renewed += 1;
            }
        }
        Ok(renewed)
    }

    async fn control(&self, kind: Kind, id: &str) -> Result<Control> {
        let mut d = self.data();
        let l = d.lived(kind, id).ok_or_else(|| kind.not_found(id))?;
        Ok(Control {
            state: *l.state,
            cancel_requested: *l.cancel,
            owner: l.lease.as_ref().map(|l| l.owner.clone()),
        })
    }

    async fn request_cancel(&self, kind: Kind, id: &str) -> Result<()> {
        if let Some(l) = self.data().lived(kind, id) {
            *l.cancel = true;
        }
        Ok(())
    }
}
