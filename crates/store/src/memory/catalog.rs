//! [`CatalogStore`] in memory: the records behind the KFP REST API with the
//! rules SQL's constraints give them (unique names, cascading deletes, a
//! catalog entry only for a run that exists).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{Data, MemoryStore};
use crate::{
    CatalogStore, ExperimentRecord, PipelineRecord, PipelineVersionRecord, RecurringRunRecord,
    Result, RunCatalog, RunField, RunFilter, RunRecord, State, Stats, StoreError, Tags,
};

/// Sets the fields an update gives (as SQL's one-statement update does).
fn set_labels(name: &mut String, tags: &mut Tags, new_name: Option<&str>, new_tags: Option<&Tags>) {
    if let Some(n) = new_name {
        *name = n.to_string();
    }
    if let Some(t) = new_tags {
        *tags = t.clone();
    }
}

#[derive(Default)]
pub(super) struct Catalog {
    experiments: BTreeMap<String, ExperimentRecord>,
    pipelines: BTreeMap<String, PipelineRecord>,
    versions: BTreeMap<String, PipelineVersionRecord>,
    runs: BTreeMap<String, RunCatalog>,
    recurring: BTreeMap<String, RecurringRunRecord>,
}

fn exists(kind: &'static str, name: &str) -> StoreError {
    StoreError::AlreadyExists {
        kind,
        name: name.to_string(),
    }
}

/// A schedule's slot as SQL stores it: to the millisecond.
fn millis(t: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::from_timestamp_millis(t.timestamp_millis()))
}

/// Oldest first, ties by id: the order SQL's listings give.
fn by_creation<T>(mut v: Vec<T>, key: impl Fn(&T) -> (DateTime<Utc>, String)) -> Vec<T> {
    v.sort_by_key(key);
    v
}

impl Catalog {
    fn add_version(&mut self, v: &PipelineVersionRecord) -> Result<()> {
        let taken = self.versions.contains_key(&v.id)
            || self
                .versions
                .values()
                .any(|o| o.pipeline_id == v.pipeline_id && o.name == v.name);
        if taken {
            return Err(exists("pipeline version", &v.name));
        }
        if !self.pipelines.contains_key(&v.pipeline_id) {
            return Err(StoreError::not_found("pipeline", &v.pipeline_id));
        }
        self.versions.insert(v.id.clone(), v.clone());
        Ok(())
    }
}

/// Whether a run (with its catalog entry) passes one filter.
fn passes(f: &RunFilter, run: &RunRecord, cat: Option<&RunCatalog>) -> bool {
    let value = match f.field {
        RunField::Id => run.id.clone(),
        RunField::DisplayName => run.display_name.clone(),
        RunField::State => run.state.as_str().to_string(),
        RunField::StorageState => cat.map_or("AVAILABLE".into(), |c| c.storage_state.clone()),
        RunField::RecurringRunId => cat
            .and_then(|c| c.recurring_run_id.clone())
            .unwrap_or_default(),
    };
    f.values.contains(&value) != f.negate
}

/// Summed seconds and count of the spans that ended.
fn seconds<'a>(
    spans: impl Iterator<Item = (Option<&'a DateTime<Utc>>, Option<&'a DateTime<Utc>>)>,
) -> (f64, u64) {
    spans.fold((0.0, 0), |(sum, n), span| match span {
        (Some(a), Some(b)) => (
            sum + (*b - *a).num_microseconds().unwrap_or(0) as f64 / 1e6,
            n + 1,
        ),
        _ => (sum, n),
    })
}

fn count<K: Ord>(keys: impl Iterator<Item = K>) -> BTreeMap<K, u64> {
    let mut out = BTreeMap::new();
    for k in keys {
        *out.entry(k).or_insert(0) += 1;
    }
    out
}

impl Data {
    fn archive_experiment(&mut self, id: &str) {
        for c in self.catalog.runs.values_mut() {
            if c.experiment_id == id {
                c.storage_state = "ARCHIVED".into();
            }
        }
        for r in self.catalog.recurring.values_mut() {
            if r.experiment_id == id {
                r.enabled = false;
                r.updated_at = Utc::now();
            }
        }
    }
}

#[async_trait::async_trait]
impl CatalogStore for MemoryStore {
    async fn create_experiment(&self, e: &ExperimentRecord) -> Result<()> {
        let mut d = self.data();
        let c = &mut d.catalog;
        if c.experiments.contains_key(&e.id)
            || c.experiments
                .values()
                .any(|o| o.display_name == e.display_name)
        {
            return Err(exists("experiment", &e.display_name));
        }
        c.experiments.insert(e.id.clone(), e.clone());
        Ok(())
    }

    async fn get_experiment(&self, id: &str) -> Result<ExperimentRecord> {
        let d = self.data();
        d.catalog
            .experiments
            .get(id)
            .cloned()
            .ok_or_else(|| StoreError::not_found("experiment", id))
    }

    async fn experiment_by_name(&self, name: &str) -> Result<Option<ExperimentRecord>> {
        let d = self.data();
        let found = d
            .catalog
            .experiments
            .values()
            .find(|e| e.display_name == name);
        Ok(found.cloned())
    }

    async fn list_experiments(&self) -> Result<Vec<ExperimentRecord>> {
        let all = self.data().catalog.experiments.values().cloned().collect();
        Ok(by_creation(all, |e: &ExperimentRecord| {
            (e.created_at, e.id.clone())
        }))
    }

    async fn set_experiment_storage(&self, id: &str, state: &str) -> Result<()> {
        let mut d = self.data();
        let e = d
            .catalog
            .experiments
            .get_mut(id)
            .ok_or_else(|| StoreError::not_found("experiment", id))?;
        e.storage_state = state.to_string();
        if state == "ARCHIVED" {
            d.archive_experiment(id);
        }
        Ok(())
    }

    async fn delete_experiment(&self, id: &str) -> Result<()> {
        match self.data().catalog.experiments.remove(id) {
            Some(_) => Ok(()),
            None => Err(StoreError::not_found("experiment", id)),
        }
    }

    async fn create_pipeline(
        &self,
        p: &PipelineRecord,
        first_version: Option<&PipelineVersionRecord>,
    ) -> Result<()> {
        let mut d = self.data();
        let c = &mut d.catalog;
        if c.pipelines.contains_key(&p.id) || c.pipelines.values().any(|o| o.name == p.name) {
            return Err(exists("pipeline", &p.name));
        }
        c.pipelines.insert(p.id.clone(), p.clone());
        if let Some(v) = first_version {
            // One transaction in SQL: a refused version leaves no pipeline.
            if let Err(e) = c.add_version(v) {
                c.pipelines.remove(&p.id);
                return Err(e);
            }
        }
        Ok(())
    }

    async fn get_pipeline(&self, id: &str) -> Result<PipelineRecord> {
        let d = self.data();
        d.catalog
            .pipelines
            .get(id)
            .cloned()
            .ok_or_else(|| StoreError::not_found("pipeline", id))
    }

    async fn pipeline_by_name(&self, name: &str) -> Result<Option<PipelineRecord>> {
        let d = self.data();
        Ok(d.catalog
            .pipelines
            .values()
            .find(|p| p.name == name)
            .cloned())
    }

    async fn list_pipelines(&self) -> Result<Vec<PipelineRecord>> {
        let all = self.data().catalog.pipelines.values().cloned().collect();
        Ok(by_creation(all, |p: &PipelineRecord| {
            (p.created_at, p.id.clone())
        }))
    }

    async fn delete_pipeline(&self, id: &str) -> Result<()> {
        let mut d = self.data();
        let c = &mut d.catalog;
        c.pipelines
            .remove(id)
            .ok_or_else(|| StoreError::not_found("pipeline", id))?;
        c.versions.retain(|_, v| v.pipeline_id != id);
        Ok(())
    }

    async fn update_pipeline(
        &self,
        id: &str,
        display_name: Option<&str>,
        tags: Option<&Tags>,
    ) -> Result<()> {
        let mut d = self.data();
        let p = d
            .catalog
            .pipelines
            .get_mut(id)
            .ok_or_else(|| StoreError::not_found("pipeline", id))?;
        set_labels(&mut p.display_name, &mut p.tags, display_name, tags);
        Ok(())
    }

    async fn update_version(
        &self,
        id: &str,
        display_name: Option<&str>,
        tags: Option<&Tags>,
    ) -> Result<()> {
        let mut d = self.data();
        let v = d
            .catalog
            .versions
            .get_mut(id)
            .ok_or_else(|| StoreError::not_found("pipeline version", id))?;
        set_labels(&mut v.display_name, &mut v.tags, display_name, tags);
        Ok(())
    }

    async fn create_version(&self, v: &PipelineVersionRecord) -> Result<()> {
        self.data().catalog.add_version(v)
    }

    async fn get_version(&self, id: &str) -> Result<PipelineVersionRecord> {
        let d = self.data();
        d.catalog
            .versions
            .get(id)
            .cloned()
            .ok_or_else(|| StoreError::not_found("pipeline version", id))
    }

    async fn list_versions(&self, pipeline_id: &str) -> Result<Vec<PipelineVersionRecord>> {
        let d = self.data();
        let of = d.catalog.versions.values();
        let all = of
            .filter(|v| v.pipeline_id == pipeline_id)
            .cloned()
            .collect();
        Ok(by_creation(all, |v: &PipelineVersionRecord| {
            (v.created_at, v.id.clone())
        }))
    }

    async fn delete_version(&self, id: &str) -> Result<()> {
        match self.data().catalog.versions.remove(id) {
            Some(_) => Ok(()),
            None => Err(StoreError::not_found("pipeline version", id)),
        }
    }

    async fn put_run_catalog(&self, c: &RunCatalog) -> Result<()> {
        let mut d = self.data();
        if !d.runs.contains_key(&c.run_id) {
            return Err(StoreError::not_found("run", &c.run_id));
        }
        d.catalog.runs.insert(c.run_id.clone(), c.clone());
        Ok(())
    }

    async fn get_run_catalog(&self, run_id: &str) -> Result<Option<RunCatalog>> {
        Ok(self.data().catalog.runs.get(run_id).cloned())
    }

    async fn list_run_catalog(&self) -> Result<Vec<RunCatalog>> {
        Ok(self.data().catalog.runs.values().cloned().collect())
    }

    async fn page_runs(
        &self,
        experiment_id: Option<&str>,
        filters: &[RunFilter],
        desc: bool,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<(RunRecord, Option<RunCatalog>)>, u64)> {
        let d = self.data();
        let mut rows: Vec<(RunRecord, Option<RunCatalog>)> = d
            .runs
            .values()
            .map(|(run, _)| (run, d.catalog.runs.get(&run.id)))
            .filter(|(run, cat)| {
                // As SQL: an experiment given (even empty) must be the entry's.
                let in_experiment =
                    experiment_id.is_none_or(|e| cat.is_some_and(|c| c.experiment_id == e));
                in_experiment && filters.iter().all(|f| passes(f, run, *cat))
            })
            .map(|(run, cat)| {
                let listed = RunRecord {
                    spec: String::new(),
                    ..run.clone()
                };
                (listed, cat.cloned())
            })
            .collect();
        // The creation time in the asked order, then the id ascending.
        rows.sort_by(|(a, _), (b, _)| {
            let by_time = a.created_at.cmp(&b.created_at);
            let by_time = if desc { by_time.reverse() } else { by_time };
            by_time.then_with(|| a.id.cmp(&b.id))
        });
        let total = rows.len() as u64;
        let page = rows
            .into_iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .collect();
        Ok((page, total))
    }

    async fn delete_run(&self, run_id: &str) -> Result<()> {
        let mut d = self.data();
        d.runs
            .remove(run_id)
            .ok_or_else(|| StoreError::not_found("run", run_id))?;
        // What SQL deletes with it by foreign key.
        d.tasks.retain(|(run, _), _| run != run_id);
        d.transitions.retain(|(run, _)| run != run_id);
        d.catalog.runs.remove(run_id);
        Ok(())
    }

    async fn create_recurring_run(&self, r: &RecurringRunRecord) -> Result<()> {
        let mut d = self.data();
        if d.catalog.recurring.contains_key(&r.id) {
            return Err(exists("recurring run", &r.id));
        }
        let r = RecurringRunRecord {
            next_fire: millis(r.next_fire),
            ..r.clone()
        };
        d.catalog.recurring.insert(r.id.clone(), r);
        Ok(())
    }

    async fn get_recurring_run(&self, id: &str) -> Result<RecurringRunRecord> {
        let d = self.data();
        d.catalog
            .recurring
            .get(id)
            .cloned()
            .ok_or_else(|| StoreError::not_found("recurring run", id))
    }

    async fn list_recurring_runs(&self) -> Result<Vec<RecurringRunRecord>> {
        let all = self.data().catalog.recurring.values().cloned().collect();
        Ok(by_creation(all, |r: &RecurringRunRecord| {
            (r.created_at, r.id.clone())
        }))
    }

    async fn due_recurring_runs(&self, now: DateTime<Utc>) -> Result<Vec<RecurringRunRecord>> {
        let d = self.data();
        let due = |r: &&RecurringRunRecord| {
            r.enabled
                && r.next_fire
                    .is_some_and(|t| t.timestamp_millis() <= now.timestamp_millis())
        };
        let mut out: Vec<RecurringRunRecord> =
            d.catalog.recurring.values().filter(due).cloned().collect();
        out.sort_by(|a, b| (a.next_fire, &a.id).cmp(&(b.next_fire, &b.id)));
        Ok(out)
    }

    async fn set_recurring_run_enabled(&self, id: &str, enabled: bool) -> Result<()> {
        let mut d = self.data();
        let r = d
            .catalog
            .recurring
            .get_mut(id)
            .ok_or_else(|| StoreError::not_found("recurring run", id))?;
        r.enabled = enabled;
        r.error = None;
        r.updated_at = Utc::now();
        Ok(())
    }

    async fn fail_recurring_run(&self, id: &str, error: &str) -> Result<()> {
        if let Some(r) = self.data().catalog.recurring.get_mut(id) {
            r.enabled = false;
            r.error = Some(error.to_string());
            r.updated_at = Utc::now();
        }
        Ok(())
    }

    async fn advance_recurring_run(
        &self,
        id: &str,
        from: DateTime<Utc>,
        to: Option<DateTime<Utc>>,
    ) -> Result<bool> {
        let mut d = self.data();
        match d.catalog.recurring.get_mut(id) {
            Some(r) if r.enabled && r.next_fire == millis(Some(from)) => {
                r.next_fire = millis(to);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn delete_recurring_run(&self, id: &str) -> Result<()> {
        match self.data().catalog.recurring.remove(id) {
            Some(_) => Ok(()),
            None => Err(StoreError::not_found("recurring run", id)),
        }
    }

    async fn stats(&self) -> Result<Stats> {
        let d = self.data();
        let runs = d.runs.values().map(|(r, _)| r);
        let containers = || d.tasks.values().filter(|t| t.kind == "container");
        let jobs = d.jobs.values().map(|(j, _)| j);
        let state = |s: State| s.as_str().to_string();
        Ok(Stats {
            runs_by_state: count(runs.clone().map(|r| state(r.state)))
                .into_iter()
                .collect(),
            tasks_by_state: count(containers().map(|t| state(t.state)))
                .into_iter()
                .collect(),
            jobs: count(jobs.clone().map(|j| (j.backend.clone(), state(j.state))))
                .into_iter()
                .map(|((backend, state), n)| (backend, state, n))
                .collect(),
            run_seconds: seconds(runs.map(|r| (r.started_at.as_ref(), r.finished_at.as_ref()))),
            task_seconds: seconds(
                containers().map(|t| (t.started_at.as_ref(), t.finished_at.as_ref())),
            ),
            job_seconds: seconds(jobs.map(|j| (j.started_at.as_ref(), j.finished_at.as_ref()))),
        })
    }
}
