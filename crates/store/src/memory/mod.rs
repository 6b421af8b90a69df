//! [`MemoryStore`]: the run store in this process's memory.
//!
//! For tests of what sits on a store (the engine's DAG semantics, retries,
//! resume), so they need no database file and run under tokio's paused clock:
//! SQLite works on its own threads, and a paused clock would advance while
//! the runtime waits for them, firing timeouts that never happen for real.
//! It keeps the same contract as [`SqlStore`](crate::SqlStore) for runs and
//! training jobs (the conformance suite runs on both): guarded transitions,
//! compare-and-set claims, owner-fenced task writes, one transition per state
//! change, job leases that a stale record never shortens; and for the catalog
//! (experiments, pipelines, schedules, run pages) unique names, the deletes
//! SQL cascades, archiving an experiment with its runs, schedule slots moved
//! by compare-and-set. Nothing survives the process.

mod catalog;
mod lifecycle;

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::{
    CacheEntry, JobEventRecord, JobMetricPoint, JobRecord, JobStore, Lease, Result, RunRecord,
    RunStore, RunUpdate, State, StoreError, TaskLink, TaskRecord, Transition,
};

#[derive(Default)]
struct Data {
    runs: BTreeMap<String, (RunRecord, bool)>,
    tasks: BTreeMap<(String, String), TaskRecord>,
    transitions: Vec<(String, Transition)>,
    cache: BTreeMap<String, CacheEntry>,
    /// Each job with its cancel request.
    jobs: BTreeMap<String, (JobRecord, bool)>,
    job_events: Vec<(String, JobEventRecord)>,
    job_metrics: Vec<(String, JobMetricPoint)>,
    catalog: catalog::Catalog,
}

impl Data {
    fn transition(&mut self, run_id: &str, task_key: Option<&str>, state: State) {
        self.transitions.push((
            run_id.to_string(),
            Transition {
                task_key: task_key.map(str::to_string),
                state,
                at: Utc::now(),
            },
        ));
    }

    /// A job by id, the latest of that name, or an unambiguous id prefix.
    fn resolve_job(&self, id: &str) -> Result<String> {
        if self.jobs.contains_key(id) {
            return Ok(id.to_string());
        }
        if let Some((job, _)) = self
            .jobs
            .values()
            .filter(|(j, _)| j.name == id)
            .max_by_key(|(j, _)| j.created_at)
        {
            return Ok(job.id.clone());
        }
        if id.is_empty() || id.contains(['%', '_']) {
            return Err(StoreError::JobNotFound(id.to_string()));
        }
        match by_prefix(self.jobs.keys(), id) {
            Ok(Some(one)) => Ok(one),
            Ok(None) => Err(StoreError::JobNotFound(id.to_string())),
            Err(()) => Err(StoreError::AmbiguousJob(id.to_string())),
        }
    }

    /// The fence of job writes: no owner given, or `owner` holds the job.
    fn job_owned_by(&self, id: &str, owner: Option<&str>) -> bool {
        owner.is_none_or(|owner| {
            self.jobs
                .get(id)
                .and_then(|(j, _)| j.lease.as_ref())
                .is_some_and(|l| l.owner == owner)
        })
    }

    fn job_event(&mut self, id: &str, state: State, message: Option<&str>) {
        self.job_events.push((
            id.to_string(),
            JobEventRecord {
                state,
                message: message.map(str::to_string),
                at: Utc::now(),
            },
        ));
    }

    fn resolve(&self, id: &str) -> Result<String> {
        if self.runs.contains_key(id) {
            return Ok(id.to_string());
        }
        // As SQL: no prefix search for an empty id or LIKE's wildcards.
        if id.is_empty() || id.contains(['%', '_']) {
            return Err(StoreError::RunNotFound(id.to_string()));
        }
        match by_prefix(self.runs.keys(), id) {
            Ok(Some(one)) => Ok(one),
            Ok(None) => Err(StoreError::RunNotFound(id.to_string())),
            Err(()) => Err(StoreError::Ambiguous(id.to_string())),
        }
    }
}

/// Runs, tasks, transitions, cache entries, jobs and the catalog in memory.
#[derive(Default)]
pub struct MemoryStore {
    data: Mutex<Data>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn data(&self) -> std::sync::MutexGuard<'_, Data> {
        // A panic while the lock was held leaves consistent data (every
        // change is made after its checks): keep going.
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A lease as SQL stores it: `until` to the millisecond.
fn stored(lease: &Lease) -> Lease {
    Lease {
        until: DateTime::from_timestamp_millis(lease.until_ms()).unwrap_or(lease.until),
        ..lease.clone()
    }
}

/// The claims' compare-and-set, as SQL writes it: the lease held now is the
/// one the taker observed (owner and expiry), or already the taker's own.
fn takes(current: Option<&Lease>, observed: Option<&Lease>, taker: &Lease) -> bool {
    let owner = |l: Option<&Lease>| l.map(|l| l.owner.clone()).unwrap_or_default();
    let until = |l: Option<&Lease>| l.map(Lease::until_ms).unwrap_or(-1);
    owner(current) == owner(observed)
        && (until(current) == until(observed) || owner(current) == taker.owner)
}

/// The one key starting with `prefix`: `Ok(None)` for none, `Err(())` for several.
fn by_prefix<'a>(
    mut keys: impl Iterator<Item = &'a String>,
    prefix: &str,
) -> std::result::Result<Option<String>, ()> {
    let mut matches = keys.by_ref().filter(|k| k.starts_with(prefix));
    match (matches.next(), matches.next()) {
        (None, _) => Ok(None),
        (Some(one), None) => Ok(Some(one.clone())),
        _ => Err(()),
    }
}

fn unfinished(state: State) -> bool {
    matches!(state, State::Pending | State::Running | State::Canceling)
}

fn in_states(state: State, from: &[State]) -> bool {
    from.is_empty() || from.contains(&state)
}

#[async_trait::async_trait]
impl RunStore for MemoryStore {
    async fn create_run(&self, run: &RunRecord) -> Result<()> {
        let mut d = self.data();
        if d.runs.contains_key(&run.id) {
            return Err(StoreError::AlreadyExists {
                kind: "run",
                name: run.id.clone(),
            });
        }
        let mut run = run.clone();
        run.lease = run.lease.as_ref().map(stored);
        d.runs.insert(run.id.clone(), (run.clone(), false));
        d.transition(&run.id, None, run.state);
        Ok(())
    }

    async fn get_run(&self, id: &str) -> Result<RunRecord> {
        let d = self.data();
        let id = d.resolve(id)?;
        Ok(d.runs[&id].0.clone())
    }

    async fn list_runs(&self, limit: u32) -> Result<Vec<RunRecord>> {
        let d = self.data();
        let mut runs: Vec<RunRecord> = d
            .runs
            .values()
            .map(|(r, _)| RunRecord {
                spec: String::new(),
                ..r.clone()
            })
            .collect();
        runs.sort_by_key(|r| std::cmp::Reverse(r.created_at));
        runs.truncate(limit as usize);
        Ok(runs)
    }

    async fn transition_run(
        &self,
        id: &str,
        from: &[State],
        to: State,
        update: RunUpdate,
    ) -> Result<bool> {
        let mut d = self.data();
        let Some((run, cancel)) = d.runs.get_mut(id) else {
            return Ok(false);
        };
        let owner_ok = match (&update.if_owned_by, &run.lease) {
            (Some(want), Some(lease)) => &lease.owner == want,
            (Some(want), None) => want.is_empty(),
            (None, _) => true,
        };
        if !owner_ok || !in_states(run.state, from) {
            return Ok(false);
        }
        run.state = to;
        if update.reset {
            run.outputs = None;
            run.error = None;
            run.finished_at = None;
            *cancel = false;
        }
        if update.outputs.is_some() {
            run.outputs = update.outputs;
        }
        if update.error.is_some() {
            run.error = update.error;
        }
        if update.started_at.is_some() {
            run.started_at = update.started_at;
        }
        if update.finished_at.is_some() {
            run.finished_at = update.finished_at;
        }
        d.transition(id, None, to);
        Ok(true)
    }

    async fn set_owner(&self, id: &str, lease: Option<&Lease>) -> Result<()> {
        if let Some((run, _)) = self.data().runs.get_mut(id) {
            run.lease = lease.map(stored);
        }
        Ok(())
    }

    async fn put_task(&self, task: &TaskRecord, owner: Option<&str>) -> Result<bool> {
        let mut d = self.data();
        if let Some(owner) = owner {
            let ours = d
                .runs
                .get(&task.run_id)
                .and_then(|(r, _)| r.lease.as_ref())
                .is_some_and(|l| l.owner == owner);
            if !ours {
                return Ok(false);
            }
        }
        let last = d
            .transitions
            .iter()
            .rev()
            .find(|(run, t)| *run == task.run_id && t.task_key.as_deref() == Some(&task.task_key))
            .map(|(_, t)| t.state);
        d.tasks
            .insert((task.run_id.clone(), task.task_key.clone()), task.clone());
        if last != Some(task.state) {
            d.transition(&task.run_id, Some(&task.task_key), task.state);
        }
        Ok(true)
    }

    async fn get_task(&self, run_id: &str, task_key: &str) -> Result<Option<TaskRecord>> {
        Ok(self
            .data()
            .tasks
            .get(&(run_id.to_string(), task_key.to_string()))
            .cloned())
    }

    async fn list_tasks(&self, run_id: &str) -> Result<Vec<TaskRecord>> {
        let mut tasks: Vec<TaskRecord> = self
            .data()
            .tasks
            .values()
            .filter(|t| t.run_id == run_id)
            .cloned()
            .collect();
        tasks.sort_by(|a, b| {
            (a.started_at.or(a.finished_at), &a.task_key)
                .cmp(&(b.started_at.or(b.finished_at), &b.task_key))
        });
        Ok(tasks)
    }

    async fn transitions(&self, run_id: &str) -> Result<Vec<Transition>> {
        Ok(self
            .data()
            .transitions
            .iter()
            .filter(|(run, _)| run == run_id)
            .map(|(_, t)| t.clone())
            .collect())
    }

    async fn get_cache(&self, fingerprint: &str) -> Result<Option<CacheEntry>> {
        Ok(self.data().cache.get(fingerprint).cloned())
    }

    async fn put_cache(&self, entry: &CacheEntry) -> Result<()> {
        self.data()
            .cache
            .insert(entry.fingerprint.clone(), entry.clone());
        Ok(())
    }
}

#[async_trait::async_trait]
impl JobStore for MemoryStore {
    async fn create_job(&self, job: &JobRecord) -> Result<()> {
        let mut d = self.data();
        if d.jobs.contains_key(&job.id) {
            return Err(StoreError::AlreadyExists {
                kind: "job",
                name: job.id.clone(),
            });
        }
        let mut job = job.clone();
        job.lease = job.lease.as_ref().map(stored);
        d.job_event(&job.id, job.state, None);
        d.jobs.insert(job.id.clone(), (job, false));
        Ok(())
    }

    async fn get_job(&self, id: &str) -> Result<JobRecord> {
        let d = self.data();
        let id = d.resolve_job(id)?;
        Ok(d.jobs[&id].0.clone())
    }

    async fn list_jobs(&self, limit: u32) -> Result<Vec<JobRecord>> {
        let mut jobs: Vec<JobRecord> = self.data().jobs.values().map(|(j, _)| j.clone()).collect();
        jobs.sort_by_key(|j| std::cmp::Reverse(j.created_at));
        jobs.truncate(limit as usize);
        Ok(jobs)
    }

    async fn update_job(
        &self,
        job: &JobRecord,
        message: Option<&str>,
        owner: Option<&str>,
    ) -> Result<bool> {
        let mut d = self.data();
        if !d.job_owned_by(&job.id, owner) {
            return Ok(false);
        }
        let last = d
            .job_events
            .iter()
            .rev()
            .find(|(id, _)| *id == job.id)
            .map(|(_, e)| e.state);
        let Some((stored_job, _)) = d.jobs.get_mut(&job.id) else {
            return Ok(false);
        };
        // A record read before the last renewal never shortens the lease.
        let lease = job.lease.as_ref().map(|new| {
            let mut new = stored(new);
            if let Some(old) = stored_job.lease.as_ref() {
                if old.owner == new.owner && old.until_ms() > new.until_ms() {
                    new.until = old.until;
                }
            }
            new
        });
        *stored_job = JobRecord {
            id: stored_job.id.clone(),
            name: stored_job.name.clone(),
            task: stored_job.task.clone(),
            created_at: stored_job.created_at,
            lease,
            ..job.clone()
        };
        if last != Some(job.state) || message.is_some() {
            d.job_event(&job.id, job.state, message);
        }
        Ok(true)
    }

    async fn add_job_event(
        &self,
        id: &str,
        state: State,
        message: &str,
        owner: Option<&str>,
    ) -> Result<bool> {
        let mut d = self.data();
        if !d.job_owned_by(id, owner) {
            return Ok(false);
        }
        d.job_event(id, state, Some(message));
        Ok(true)
    }

    async fn job_events(&self, id: &str) -> Result<Vec<JobEventRecord>> {
        Ok(self
            .data()
            .job_events
            .iter()
            .filter(|(job, _)| job == id)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn unfinished_jobs(&self) -> Result<Vec<JobRecord>> {
        let mut jobs: Vec<JobRecord> = self
            .data()
            .jobs
            .values()
            .map(|(j, _)| j)
            .filter(|j| unfinished(j.state))
            .cloned()
            .collect();
        jobs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(jobs)
    }

    async fn job_for_task(&self, link: &TaskLink) -> Result<Option<JobRecord>> {
        Ok(self
            .data()
            .jobs
            .values()
            .map(|(j, _)| j)
            .filter(|j| j.task.as_ref() == Some(link))
            .max_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)))
            .cloned())
    }

    async fn add_job_metrics(
        &self,
        id: &str,
        points: &[(String, f64)],
        owner: Option<&str>,
    ) -> Result<bool> {
        if points.is_empty() {
            return Ok(true);
        }
        let at = Utc::now();
        let mut d = self.data();
        if !d.job_owned_by(id, owner) {
            return Ok(false);
        }
        for (name, value) in points {
            d.job_metrics.push((
                id.to_string(),
                JobMetricPoint {
                    name: name.clone(),
                    value: *value,
                    at,
                },
            ));
        }
        Ok(true)
    }

    async fn job_metrics(&self, id: &str) -> Result<Vec<JobMetricPoint>> {
        Ok(self
            .data()
            .job_metrics
            .iter()
            .filter(|(job, _)| job == id)
            .map(|(_, m)| m.clone())
            .collect())
    }
}
