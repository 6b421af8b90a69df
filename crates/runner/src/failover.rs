//! Failing over: a placed job that its backend has not started within
//! `maxStartSeconds`, or that the backend had no room for before any rank
//! started, is stopped there and placed again among the candidates not tried
//! yet, its checkpoint taken along. Every attempt is kept in the record's
//! `placement.attempts`.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};
use switchyard_store::JobRecord;
use switchyard_training::placement::{self, Decision};
use switchyard_training::{
    BackendError, BackendKind, JobState, PlacementSpec, TrainingBackend, TrainingJob,
    TrainingOutcome,
};

use crate::{JobRunner, RunnerError};

/// What a placed job may still fall back on: the job as submitted (each
/// move places it again from there, so its checkpoint is the one it was
/// submitted with, wherever an earlier attempt was to keep it), and the
/// backends tried.
#[derive(Debug, Clone)]
pub struct Failover {
    submitted: TrainingJob,
    tried: Vec<BackendKind>,
    /// How long the current attempt has waited already (an attempt taken
    /// over from a follower that died), counted against `maxStartSeconds`.
    waited: Duration,
}

/// The record's `placement` fields that keep what the job asked for, so
/// that a process taking the job over can still fail it over.
pub(crate) const ASKED: &str = "asked";
pub(crate) const SUBMITTED_CHECKPOINT: &str = "submitted_checkpoint";

impl Failover {
    /// For a job `placed` on a backend (none when nothing was chosen).
    pub(crate) fn new(placed: &crate::Placed) -> Option<Self> {
        Some(Failover {
            submitted: placed.submitted.clone(),
            tried: vec![placed.decision.chosen?],
            waited: Duration::ZERO,
        })
    }

    /// For a placed job taken over from a follower that died (`job` is its
    /// recorded spec): what it asked for, from its record, the backends its
    /// attempts tried, and how long the current one has waited. `None` for
    /// a job that was not placed, or whose ranks had started.
    pub(crate) fn from_record(rec: &JobRecord, job: &TrainingJob) -> Option<Self> {
        let p = rec.placement.as_ref()?;
        if rec.state != switchyard_store::State::Pending {
            return None;
        }
        let asked: PlacementSpec = serde_json::from_value(p.get(ASKED)?.clone()).ok()?;
        let attempts = p["attempts"].as_array()?;
        let tried: Vec<BackendKind> = attempts
            .iter()
            .filter_map(|a| serde_json::from_value(a["backend"].clone()).ok())
            .collect();
        let since = attempts.last()?["started_at"]
            .as_str()?
            .parse::<chrono::DateTime<Utc>>()
            .ok()?;
        let mut submitted = job.clone();
        submitted.spec.backend = BackendKind::Auto;
        submitted.spec.placement = Some(asked);
        submitted.spec.checkpoint = p[SUBMITTED_CHECKPOINT].as_str().map(str::to_string);
        Some(Failover {
            submitted,
            tried,
            waited: (Utc::now() - since).to_std().unwrap_or_default(),
        })
    }

    fn asked(&self) -> PlacementSpec {
        self.submitted.spec.placement.clone().unwrap_or_default()
    }

    /// `maxStartSeconds` as the job asked for it.
    pub(crate) fn max_start_seconds(&self) -> Option<u64> {
        self.asked().max_start_seconds
    }

    /// How long the current attempt may still take to have all its ranks
    /// running.
    pub(crate) fn start_limit(&self) -> Option<Duration> {
        self.asked()
            .max_start_seconds
            .map(|s| Duration::from_secs(s).saturating_sub(self.waited))
    }

    /// The job as submitted, among the candidates not tried (`None`: every
    /// one was).
    fn remaining(&self) -> Option<TrainingJob> {
        let asked = self.asked();
        let left: Vec<BackendKind> = placement::candidates(Some(&asked))
            .into_iter()
            .filter(|c| !self.tried.contains(c))
            .collect();
        if left.is_empty() {
            return None;
        }
        let mut auto = self.submitted.clone();
        auto.spec.placement = Some(PlacementSpec {
            candidates: left,
            ..asked
        });
        Some(auto)
    }
}

/// Why an attempt that ended before any rank started moves on (`None`: its
/// end stands): the backend said it had no room for the job
/// ([`placement::no_room`]). A job that fails for its own reasons fails
/// wherever it runs, so it is not tried elsewhere.
pub(crate) fn no_room_in(
    result: &Result<TrainingOutcome, BackendError>,
    started: bool,
) -> Option<String> {
    if started {
        return None;
    }
    let why = match result {
        Err(e) => e.to_string(),
        Ok(o) if o.state == JobState::Failed => o.failure_reason.clone().unwrap_or_default(),
        Ok(_) => return None,
    };
    placement::no_room(&why).then(|| first_line(&why))
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

/// Opens an attempt on `backend` in a record's `placement.attempts`.
pub(crate) fn open_attempt(placement: &mut Option<Value>, backend: BackendKind) {
    let doc = placement.get_or_insert_with(|| json!({}));
    if !doc.is_object() {
        *doc = json!({});
    }
    let attempts = doc
        .as_object_mut()
        .map(|o| o.entry("attempts").or_insert_with(|| json!([])));
    if let Some(Value::Array(a)) = attempts {
        a.push(json!({
            "backend": backend.as_str(),
            "started_at": Utc::now(),
            "ended_at": null,
            "outcome": null,
        }));
    }
}

/// Closes the open attempt (the last one, not ended) with `outcome`.
pub(crate) fn close_attempt(placement: &mut Option<Value>, outcome: &str) {
    let Some(Value::Array(a)) = placement.as_mut().and_then(|p| p.get_mut("attempts")) else {
        return;
    };
    if let Some(last) = a.last_mut().filter(|l| l["ended_at"].is_null()) {
        last["ended_at"] = json!(Utc::now());
        last["outcome"] = json!(outcome);
    }
}

impl JobRunner {
    /// `job` (a `backend: auto` one) as it runs on `chosen`: that backend
    /// named, its placement dropped, its checkpoint where that backend reads
    /// it ([`TrainingBackend::take_checkpoint`]).
    pub(crate) async fn placed_on(
        &self,
        job: &TrainingJob,
        chosen: BackendKind,
    ) -> Result<(TrainingJob, Arc<dyn TrainingBackend>), RunnerError> {
        let mut placed = job.clone();
        placed.spec.backend = chosen;
        placed.spec.placement = None;
        let backend = self.backend_for(&placed).await?;
        let placed = backend
            .take_checkpoint(&placed)
            .await
            .map_err(|e| RunnerError::Refused(e.to_string()))?;
        Ok((placed, backend))
    }

    /// Where the job goes next: placed again among the candidates not tried
    /// yet, as the first decision was (`Err`: why none can take it).
    pub(crate) async fn next_placement(
        &self,
        f: &Failover,
    ) -> Result<(Decision, TrainingJob, Arc<dyn TrainingBackend>), String> {
        let Some(auto) = f.remaining() else {
            return Err("no other candidate is left".into());
        };
        let decision = self.decide(&auto).await;
        let Some(chosen) = decision.chosen else {
            return Err(decision.refusal());
        };
        let (placed, backend) = self
            .placed_on(&auto, chosen)
            .await
            .map_err(|e| e.to_string())?;
        backend.preflight(&placed).map_err(|e| e.to_string())?;
        Ok((decision, placed, backend))
    }

    /// Records the move to the next attempt: the one that did not start
    /// closed (`failed over: why`), the new decision, the new backend and
    /// spec, an event. Fenced by this process's lease.
    pub(crate) async fn record_failover(
        &self,
        rec: &mut JobRecord,
        f: &mut Failover,
        decision: &Decision,
        job: &TrainingJob,
        why: &str,
    ) -> Result<bool, RunnerError> {
        let Some(chosen) = decision.chosen else {
            return Ok(true);
        };
        close_attempt(&mut rec.placement, &format!("failed over: {why}"));
        let mut doc = serde_json::to_value(decision).unwrap_or_else(|_| json!({}));
        doc["decided_at"] = json!(Utc::now());
        if let (Value::Object(new), Some(Value::Object(old))) = (&mut doc, rec.placement.as_ref()) {
            for k in ["attempts", ASKED, SUBMITTED_CHECKPOINT] {
                if let Some(v) = old.get(k) {
                    new.insert(k.into(), v.clone());
                }
            }
        }
        rec.placement = Some(doc);
        open_attempt(&mut rec.placement, chosen);
        rec.backend = chosen.as_str().into();
        rec.spec = job.to_json();
        f.tried.push(chosen);
        f.waited = Duration::ZERO;
        let message = format!(
            "failover to {}: {why}; {}",
            chosen.as_str(),
            decision.summary()
        );
        Ok(self
            .store
            .update_job(rec, Some(&message), Some(crate::follow::me()))
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_open_and_close_in_the_placement() {
        let mut p = Some(json!({"chosen": "kubernetes"}));
        open_attempt(&mut p, BackendKind::Kubernetes);
        close_attempt(&mut p, "failed over: not all ranks running after 60 s");
        open_attempt(&mut p, BackendKind::Sagemaker);
        close_attempt(&mut p, "SUCCEEDED");
        // Closing again changes nothing: no attempt is open.
        close_attempt(&mut p, "FAILED");
        let a = p.as_ref().and_then(|p| p["attempts"].as_array().cloned());
        let a = a.unwrap_or_default();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0]["backend"], "kubernetes");
        assert_eq!(
            a[0]["outcome"],
            "failed over: not all ranks running after 60 s"
        );
        assert_eq!(
            (&a[1]["backend"], &a[1]["outcome"]),
            (&json!("sagemaker"), &json!("SUCCEEDED"))
        );
        assert!(a[1]["ended_at"].is_string());
    }

    #[test]
    fn only_no_room_before_the_start_moves_a_job() {
        let failed = |why: &str| {
            Ok(TrainingOutcome {
                state: JobState::Failed,
                restarts: 0,
                model: None,
                metrics: Default::default(),
                failure_reason: Some(why.into()),
            })
        };
        let capacity = failed("CapacityError: Unable to provision requested ML compute capacity.");
        assert!(no_room_in(&capacity, false).is_some());
        assert_eq!(no_room_in(&capacity, true), None);
        assert_eq!(no_room_in(&failed("AlgorithmError: exit 1"), false), None);
        let refused = Err(BackendError::Permanent(
            "CreateTrainingJob: ResourceLimitExceeded: limit is 2".into(),
        ));
        assert!(no_room_in(&refused, false).is_some());
    }

    #[test]
    fn the_next_placement_is_among_the_candidates_not_tried() {
        let job = switchyard_training::load(
            "apiVersion: switchyard/v1\nkind: TrainingJob\nmetadata: {name: j}\nspec:\n  backend: auto\n  command: [\"true\"]\n  checkpoint: /data/ckpt\n  placement: {candidates: [kubernetes, sagemaker], maxStartSeconds: 60}\n",
            std::path::Path::new("/"),
            &[],
            None,
        )
        .expect("job");
        let f = Failover {
            submitted: job,
            tried: vec![BackendKind::Kubernetes],
            waited: Duration::ZERO,
        };
        assert_eq!(f.start_limit(), Some(Duration::from_secs(60)));
        let auto = f.remaining().expect("one left");
        assert_eq!(auto.spec.backend, BackendKind::Auto);
        // Placed again from the job as submitted: its own checkpoint.
        assert_eq!(auto.spec.checkpoint.as_deref(), Some("/data/ckpt"));
        let p = auto.spec.placement.expect("placement");
        assert_eq!(p.candidates, vec![BackendKind::Sagemaker]);
        assert_eq!(p.max_start_seconds, Some(60));
        let done = Failover {
            tried: vec![BackendKind::Kubernetes, BackendKind::Sagemaker],
            ..f
        };
        assert!(done.remaining().is_none());
    }
}

#[cfg(test)]
mod taken_over {
    use super::*;

    #[test]
    fn a_job_taken_over_keeps_what_it_asked_for_and_the_time_it_waited() {
        let placed = switchyard_training::load(
            "apiVersion: switchyard/v1\nkind: TrainingJob\nmetadata: {name: j}\nspec:\n  backend: sagemaker\n  image: i\n  command: [\"true\"]\n  checkpoint: s3://b/checkpoints/abc\n",
            std::path::Path::new("/"),
            &[],
            None,
        )
        .expect("job");
        let started = Utc::now() - chrono::Duration::seconds(45);
        let mut rec = crate::test_records::finished(
            "j",
            "sagemaker",
            switchyard_store::State::Pending,
            started,
            0,
            0,
        );
        (rec.spec, rec.started_at, rec.finished_at) = (placed.to_json(), None, None);
        rec.placement = Some(json!({
            "chosen": "sagemaker",
            ASKED: {"candidates": ["kubernetes", "sagemaker", "local"], "maxStartSeconds": 60},
            SUBMITTED_CHECKPOINT: "/data/ckpt",
            "attempts": [
                {"backend": "kubernetes", "started_at": started - chrono::Duration::seconds(60), "ended_at": started, "outcome": "failed over: …"},
                {"backend": "sagemaker", "started_at": started, "ended_at": null, "outcome": null},
            ],
        }));
        let f = Failover::from_record(&rec, &placed).expect("placed");
        assert_eq!(f.tried, [BackendKind::Kubernetes, BackendKind::Sagemaker]);
        let left = f.start_limit().expect("limit");
        assert!(
            left <= Duration::from_secs(15) && left >= Duration::from_secs(13),
            "{left:?}"
        );
        let next = f.remaining().expect("local is left");
        assert_eq!(next.spec.checkpoint.as_deref(), Some("/data/ckpt"));
        assert_eq!(next.spec.backend, BackendKind::Auto);
        assert_eq!(
            next.spec.placement.map(|p| p.candidates),
            Some(vec![BackendKind::Local])
        );
        // Its ranks had started: nothing to fail over from.
        rec.state = switchyard_store::State::Running;
        assert!(Failover::from_record(&rec, &placed).is_none());
    }
}
