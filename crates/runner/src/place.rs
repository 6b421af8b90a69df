//! `backend: auto`: each candidate backend assesses the job, the decision
//! ([`switchyard_training::placement::decide`]) picks one, and the job goes on
//! as if it had named that backend.

use switchyard_store::{JobRecord, State};
use switchyard_training::placement::{self, Assessment, Decision};
use switchyard_training::{BackendKind, TrainingJob};

use crate::{JobRunner, RunnerError};

/// How many recent job records are read for a job's history.
const HISTORY_SCAN: u32 = 1000;
/// How many of its latest successful runs on a backend make an estimate.
const HISTORY_RUNS: usize = 5;

/// The median of `v` (not empty).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Whether `r` is an earlier run of the job: the same name, or the same
/// code ([`switchyard_training::kpi::code_digest`]) under another name.
fn same_job(r: &JobRecord, name: &str, digest: Option<&str>) -> bool {
    r.name == name
        || digest.is_some_and(|d| r.kpi.as_ref().and_then(|k| k["code_digest"].as_str()) == Some(d))
}

/// When a job was submitted to the backend it ran on: its last attempt's
/// start (a job that failed over waited elsewhere first), else its
/// submission.
fn submitted_here(r: &JobRecord) -> chrono::DateTime<chrono::Utc> {
    r.placement
        .as_ref()
        .and_then(|p| {
            p["attempts"].as_array()?.last()?["started_at"]
                .as_str()?
                .parse()
                .ok()
        })
        .unwrap_or(r.created_at)
}

/// `a` with estimates from the job's own history on its backend: the
/// median time from submission to start, and from start to end, of its
/// latest successful runs there, by name or code (unknown without one).
fn with_history(
    mut a: Assessment,
    earlier: &[JobRecord],
    name: &str,
    digest: Option<&str>,
) -> Assessment {
    if a.refusal.is_some() {
        return a;
    }
    let runs: Vec<(f64, f64)> = earlier
        .iter()
        .filter(|r| same_job(r, name, digest) && r.backend == a.backend.as_str())
        .filter(|r| r.state == State::Succeeded)
        .filter_map(|r| {
            let (start, end) = (r.started_at?, r.finished_at?);
            let secs = |d: chrono::TimeDelta| d.num_milliseconds() as f64 / 1000.0;
            Some((
                secs(start - submitted_here(r)).max(0.0),
                secs(end - start).max(0.0),
            ))
        })
        .take(HISTORY_RUNS)
        .collect();
    if runs.is_empty() {
        return a;
    }
    let start = median(runs.iter().map(|r| r.0).collect());
    let run = median(runs.iter().map(|r| r.1).collect());
    a.est_start_seconds = a.est_start_seconds.or(Some(start));
    a.est_duration_seconds = a.est_duration_seconds.or(Some(run));
    let n = runs.len();
    let note = format!(
        "its last {n} run{} here took {run:.0} s, {start:.0} s to start (median)",
        if n == 1 { "" } else { "s" }
    );
    a.add_detail(&note);
    a
}

impl JobRunner {
    /// What every candidate says of `job` now, and the decision. A backend
    /// that is not configured here is a candidate that cannot take the job,
    /// with the setting it misses as its reason.
    pub async fn decide(&self, job: &TrainingJob) -> Decision {
        self.decide_with(job, switchyard_training::kpi::code_digest(job).as_deref())
            .await
    }

    /// [`decide`](Self::decide) for a job whose code digest is known.
    async fn decide_with(&self, job: &TrainingJob, digest: Option<&str>) -> Decision {
        let spec = job.spec.placement.as_ref();
        // The job's own history: its earlier runs of the same name or code
        // (a store that cannot be read gives none, and estimates stay
        // unknown).
        let earlier = self.store.list_jobs(HISTORY_SCAN).await.unwrap_or_default();
        let mut assessments = Vec::new();
        for kind in placement::candidates(spec) {
            let mut there = job.clone();
            there.spec.backend = kind;
            let image = there.spec.image.as_deref().unwrap_or("");
            let a = if kind != BackendKind::Local && image.is_empty() {
                Assessment::refused(
                    kind,
                    "needs spec.image (the training image its containers run)",
                )
            } else {
                match self.backend_for(&there).await {
                    Err(e) => Assessment::refused(kind, e.to_string()),
                    Ok(backend) => {
                        // A checkpoint it cannot read where it is goes
                        // with the job (copied when it is placed there).
                        let home = backend.checkpoint_home(&there);
                        if let Some(h) = &home {
                            there.spec.checkpoint = Some(h.clone());
                        }
                        let mut a = Assessment {
                            backend: kind,
                            ..backend.assess(&there).await
                        };
                        if let (Some(h), None) = (&home, &a.refusal) {
                            a.add_detail(&format!("the checkpoint would be copied to {h}"));
                        }
                        a
                    }
                }
            };
            assessments.push(with_history(a, &earlier, &job.name, digest));
        }
        placement::decide(spec, assessments)
    }

    /// The job as it will run: a `backend: auto` job placed (its backend the
    /// chosen one, its `placement` dropped, and the decision), any other as
    /// it is. A job no candidate
    /// can run is refused with every candidate's reason.
    pub async fn place(
        &self,
        job: &TrainingJob,
    ) -> Result<(TrainingJob, Option<Placed>), RunnerError> {
        if job.spec.backend != BackendKind::Auto {
            return Ok((job.clone(), None));
        }
        let code_digest = switchyard_training::kpi::code_digest(job);
        let decision = self.decide_with(job, code_digest.as_deref()).await;
        let Some(chosen) = decision.chosen else {
            return Err(RunnerError::Refused(decision.refusal()));
        };
        // Recorded as a job of that backend (its first event says why), so
        // that reading the record back (recovery, resume) is a plain job.
        let (placed, _) = self.placed_on(job, chosen).await?;
        Ok((
            placed,
            Some(Placed {
                decision,
                submitted: job.clone(),
                code_digest,
            }),
        ))
    }
}

/// Where a `backend: auto` job was placed and why, with the job as
/// submitted (a failover places it again from there).
pub struct Placed {
    pub decision: Decision,
    pub(crate) submitted: TrainingJob,
    /// Its code digest, read once for the decision's history.
    code_digest: Option<String>,
}

impl JobRunner {
    /// Records where a placed job went and why: in its record's
    /// `placement` (`chosen`, `objective`, `decided_at`, `candidates`, its
    /// first `attempts` entry; the backend adds where it runs) and as its
    /// first event; the job may fail over from then on. The job is
    /// recorded already and goes on either way: a write that fails is logged,
    /// not made the job's failure (which would leave it recorded, unfollowed).
    pub async fn record_decision(&self, prepared: &mut crate::Prepared, placed: &Placed) {
        let decision = &placed.decision;
        let owner = prepared.record.lease.as_ref().map(|l| l.owner.clone());
        let mut doc = match serde_json::to_value(decision) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(job = %prepared.record.id, "placement decision not recorded: {e}");
                return;
            }
        };
        doc["decided_at"] = serde_json::json!(chrono::Utc::now());
        // What it asked for, for whoever fails it over (this process, or
        // one that takes it over after this one died).
        doc[crate::failover::ASKED] =
            serde_json::to_value(&placed.submitted.spec.placement).unwrap_or_default();
        doc[crate::failover::SUBMITTED_CHECKPOINT] =
            serde_json::json!(placed.submitted.spec.checkpoint);
        prepared.record.placement = Some(doc);
        if let Some(chosen) = decision.chosen {
            crate::failover::open_attempt(&mut prepared.record.placement, chosen);
        }
        prepared.failover = crate::failover::Failover::new(placed);
        prepared.code_digest = placed.code_digest.clone();
        let message = format!("placement: {}", decision.summary());
        match self
            .store
            .update_job(&prepared.record, Some(&message), owner.as_deref())
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(job = %prepared.record.id, "placement decision not recorded: the job was taken over")
            }
            Err(e) => {
                tracing::warn!(job = %prepared.record.id, "placement decision not recorded: {e}")
            }
        }
    }
}

/// The decision's fields of a job's `placement`, kept when its backend
/// reports where it runs.
pub const DECISION_FIELDS: [&str; 7] = [
    "chosen",
    "objective",
    "decided_at",
    "candidates",
    "attempts",
    crate::failover::ASKED,
    crate::failover::SUBMITTED_CHECKPOINT,
];

/// Where the job runs (`details`, from its backend), with the placement
/// decision `earlier` held, if any.
pub fn merge_placement(
    earlier: Option<&serde_json::Value>,
    mut details: serde_json::Value,
) -> serde_json::Value {
    if let (Some(serde_json::Value::Object(old)), serde_json::Value::Object(new)) =
        (earlier, &mut details)
    {
        for k in DECISION_FIELDS {
            if let Some(v) = old.get(k) {
                new.insert(k.to_string(), v.clone());
            }
        }
    }
    details
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, Utc};

    fn record(name: &str, backend: &str, state: State, queued: i64, ran: i64) -> JobRecord {
        let created = Utc::now() - Duration::seconds(1000);
        crate::test_records::finished(name, backend, state, created, queued, ran)
    }

    #[test]
    fn where_a_job_runs_keeps_why_it_was_placed_there() {
        let decided = serde_json::json!({"chosen": "local", "objective": "time", "decided_at": "t", "candidates": [], "kind": "old"});
        let merged = merge_placement(
            Some(&decided),
            serde_json::json!({"kind": "local", "host": "h"}),
        );
        assert_eq!(
            merged,
            serde_json::json!({"kind": "local", "host": "h", "chosen": "local", "objective": "time", "decided_at": "t", "candidates": []})
        );
        // A job that was not placed keeps only where it runs.
        assert_eq!(
            merge_placement(
                Some(&serde_json::json!({"kind": "x"})),
                serde_json::json!({"kind": "y"})
            ),
            serde_json::json!({"kind": "y"})
        );
    }

    #[test]
    fn estimates_come_from_the_jobs_own_successful_runs_on_that_backend() {
        let earlier = vec![
            record("digits", "local", State::Succeeded, 2, 40),
            record("digits", "local", State::Succeeded, 4, 60),
            record("digits", "local", State::Failed, 1, 1),
            record("digits", "kubernetes", State::Succeeded, 30, 90),
            record("other", "local", State::Succeeded, 1, 1),
        ];
        let ok = Assessment::can_run(BackendKind::Local, true, "", None);
        let a = with_history(ok.clone(), &earlier, "digits", None);
        assert_eq!(a.est_start_seconds, Some(3.0));
        assert_eq!(a.est_duration_seconds, Some(50.0));
        assert_eq!(
            a.detail,
            "its last 2 runs here took 50 s, 3 s to start (median)"
        );
        let none = with_history(ok.clone(), &earlier, "new-job", Some("abc"));
        assert_eq!(none.est_duration_seconds, None);
        // The same code under another name shares its history.
        let mut renamed = record("digits-v2", "local", State::Succeeded, 1, 30);
        renamed.kpi = Some(serde_json::json!({"code_digest": "abc"}));
        let by_code = with_history(ok, &[renamed], "new-job", Some("abc"));
        assert_eq!(by_code.est_duration_seconds, Some(30.0));
    }
}
