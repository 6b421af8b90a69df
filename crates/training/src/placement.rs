//! `backend: auto`: where a job goes, decided from what each candidate backend
//! says of it now ([`Assessment`]: can it run the job at all, can the whole
//! gang start now, what an hour of it costs) and the job's objective.
//!
//! The decision is a pure function of those assessments, so it is the same
//! whether `switchyard job place` only prints it or `job run` acts on it, and
//! every candidate keeps the sentence that explains it.

use serde::Serialize;

use crate::spec::{BackendKind, Objective, PlacementSpec};

/// The backends a job may go to when it names none.
pub const ALL: [BackendKind; 3] = [
    BackendKind::Kubernetes,
    BackendKind::Sagemaker,
    BackendKind::Local,
];

/// What one backend says of running the job now.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    pub backend: BackendKind,
    /// Why it cannot run the job at all (not configured, too large for any
    /// node or instance, a channel it cannot read); `None` when it can.
    pub refusal: Option<String>,
    /// Whether the whole gang can start now (else it waits for room).
    pub starts_now: bool,
    /// What it said of its capacity or price, for people.
    pub detail: String,
    /// The estimated time to start and to finish, when known.
    pub est_start_seconds: Option<f64>,
    pub est_duration_seconds: Option<f64>,
    /// What an hour of the whole job costs there; `None`: not counted.
    pub hourly_usd: Option<f64>,
    /// It costs something there, but its price is not known (never the
    /// cheapest, then).
    pub unpriced: bool,
}

impl Assessment {
    /// A backend that cannot take the job, saying why.
    pub fn refused(backend: BackendKind, why: impl Into<String>) -> Self {
        Assessment {
            refusal: Some(why.into()),
            ..Assessment::can_run(backend, false, "", None)
        }
    }

    /// A backend that can take the job: whether now, what it said, its
    /// hourly cost (`None`: not counted); estimates unknown.
    pub fn can_run(
        backend: BackendKind,
        starts_now: bool,
        detail: impl Into<String>,
        hourly_usd: Option<f64>,
    ) -> Self {
        Assessment {
            backend,
            refusal: None,
            starts_now,
            detail: detail.into(),
            est_start_seconds: None,
            est_duration_seconds: None,
            hourly_usd,
            unpriced: false,
        }
    }

    /// Adds `note` to what it says of the job (after what it said already).
    pub fn add_detail(&mut self, note: &str) {
        if self.detail.is_empty() {
            self.detail = note.to_string();
        } else {
            self.detail = format!("{}; {note}", self.detail);
        }
    }
}

/// One candidate as the decision saw it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Candidate {
    pub backend: BackendKind,
    pub feasible: bool,
    pub reason: String,
    pub est_start_seconds: Option<f64>,
    pub est_duration_seconds: Option<f64>,
    pub est_cost_usd: Option<f64>,
}

/// Where the job goes, and why.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Decision {
    /// `None` when no candidate can run the job.
    pub chosen: Option<BackendKind>,
    pub objective: Objective,
    pub candidates: Vec<Candidate>,
}

impl Decision {
    /// One line per candidate, the chosen one marked: what `job place` prints.
    pub fn explain(&self) -> String {
        let mut out = match self.chosen {
            Some(b) => format!(
                "placed on {} ({})\n",
                b.as_str(),
                objective_words(self.objective)
            ),
            None => "no candidate can run this job\n".to_string(),
        };
        for c in &self.candidates {
            let mark = if Some(c.backend) == self.chosen {
                "*"
            } else {
                " "
            };
            out.push_str(&format!("{mark} {:<10} {}\n", c.backend.as_str(), c.reason));
        }
        out
    }

    /// The decision in one line (the job's event): where, and every
    /// candidate's reason.
    pub fn summary(&self) -> String {
        let head = match self.chosen {
            Some(b) => format!(
                "placed on {} ({})",
                b.as_str(),
                objective_words(self.objective)
            ),
            None => "no candidate can run this job".to_string(),
        };
        format!("{head}; {}", self.reasons())
    }

    /// Why no candidate can run the job, every candidate's reason in one
    /// sentence (a refusal's message).
    pub fn refusal(&self) -> String {
        format!(
            "spec.placement: no candidate can run this job ({})",
            self.reasons()
        )
    }

    /// Every candidate's reason: `backend: reason; …`.
    fn reasons(&self) -> String {
        let each: Vec<String> = self
            .candidates
            .iter()
            .map(|c| format!("{}: {}", c.backend.as_str(), c.reason))
            .collect();
        each.join("; ")
    }
}

fn objective_words(o: Objective) -> &'static str {
    match o {
        Objective::Time => "objective time: the soonest start",
        Objective::Cost => "objective cost: the lowest estimated cost",
    }
}

/// A configured cost per node-hour (`SWITCHYARD_*_COST_PER_NODE_HOUR`), if
/// one is set and a number; none means "not counted".
pub fn cost_per_node_hour(var: &str) -> Option<f64> {
    std::env::var(var)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|c| c.is_finite() && *c >= 0.0)
}

/// The error codes with which a backend says it has no room for the job:
/// SageMaker refuses a create beyond the account's quota
/// (`ResourceLimitExceeded`) and fails a job it cannot get instances for
/// (`CapacityError`, `InsufficientCapacity…`). Such a failure before any
/// rank started is one placement fails over from.
const NO_ROOM: [&str; 3] = [
    "ResourceLimitExceeded",
    "CapacityError",
    "InsufficientCapacity",
];

/// Whether `failure` (a backend's error or a job's failure reason) says the
/// backend had no room for the job, rather than that the job is wrong.
pub fn no_room(failure: &str) -> bool {
    NO_ROOM.iter().any(|code| failure.contains(code))
}

/// The candidates of a placement, in order: the spec's, else [`ALL`].
pub fn candidates(spec: Option<&PlacementSpec>) -> Vec<BackendKind> {
    match spec {
        Some(p) if !p.candidates.is_empty() => p.candidates.clone(),
        _ => ALL.to_vec(),
    }
}

/// The estimated cost: the hourly price over the estimated run, or an hour
/// of it when the run's length is unknown (said so in the reason).
fn cost(a: &Assessment) -> Option<f64> {
    a.hourly_usd
        .map(|h| h * a.est_duration_seconds.unwrap_or(3600.0) / 3600.0)
}

/// Decides among `assessments` (in the candidates' order) by `spec`'s
/// objective: feasible candidates within `maxCostUSD`; for time, one that
/// starts now before one that waits, then the shortest estimated start and
/// run; for cost, the lowest estimated cost (a backend whose cost is not
/// counted costs 0). Ties go to the earlier candidate.
pub fn decide(spec: Option<&PlacementSpec>, assessments: Vec<Assessment>) -> Decision {
    let objective = spec.map(|p| p.objective).unwrap_or_default();
    let max_cost = spec.and_then(|p| p.max_cost_usd);
    // Estimates decide only where every candidate that can run has one: an
    // unknown time is not a short one.
    let usable: Vec<&Assessment> = assessments.iter().filter(|a| a.refusal.is_none()).collect();
    let starts_known = usable.iter().all(|a| a.est_start_seconds.is_some());
    let runs_known = usable.iter().all(|a| a.est_duration_seconds.is_some());
    let mut candidates = Vec::new();
    let mut best: Option<(usize, (u8, f64, f64))> = None;
    for (i, a) in assessments.iter().enumerate() {
        let est_cost = cost(a);
        let over = match (est_cost, max_cost) {
            (Some(c), Some(m)) if c > m => {
                Some(format!("estimated at ${c:.2}, above maxCostUSD ${m:.2}"))
            }
            (None, Some(m)) if a.unpriced => Some(format!(
                "its price is unknown, so maxCostUSD ${m:.2} cannot be checked"
            )),
            _ => None,
        };
        let refusal = a.refusal.clone().or(over);
        let feasible = refusal.is_none();
        let reason = match &refusal {
            Some(r) => r.clone(),
            None => describe(a, est_cost),
        };
        if feasible {
            let key = match objective {
                Objective::Time => (
                    u8::from(!a.starts_now),
                    a.est_start_seconds.filter(|_| starts_known).unwrap_or(0.0),
                    a.est_duration_seconds.filter(|_| runs_known).unwrap_or(0.0),
                ),
                // Equal costs: the one that can start now.
                Objective::Cost => (
                    0,
                    est_cost.unwrap_or(if a.unpriced { f64::INFINITY } else { 0.0 }),
                    f64::from(u8::from(!a.starts_now)),
                ),
            };
            if best.as_ref().is_none_or(|(_, k)| key < *k) {
                best = Some((i, key));
            }
        }
        candidates.push(Candidate {
            backend: a.backend,
            feasible,
            reason,
            est_start_seconds: a.est_start_seconds,
            est_duration_seconds: a.est_duration_seconds,
            est_cost_usd: est_cost,
        });
    }
    Decision {
        chosen: best.map(|(i, _)| assessments[i].backend),
        objective,
        candidates,
    }
}

/// A feasible candidate in one sentence: its capacity, its price.
fn describe(a: &Assessment, est_cost: Option<f64>) -> String {
    let start = if a.starts_now {
        "can start now"
    } else {
        "would wait for room"
    };
    let price = match (a.hourly_usd, est_cost, a.est_duration_seconds) {
        (None, _, _) if a.unpriced => "price unknown (set SWITCHYARD_SAGEMAKER_PRICES)".to_string(),
        (None, _, _) => "cost not counted".to_string(),
        (Some(h), Some(c), Some(_)) => format!("${h:.3} an hour, about ${c:.2} for this job"),
        (Some(h), _, None) => format!("${h:.3} an hour (run length unknown)"),
        (Some(h), None, Some(_)) => format!("${h:.3} an hour"),
    };
    if a.detail.is_empty() {
        format!("{start}; {price}")
    } else {
        format!("{start}: {}; {price}", a.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(backend: BackendKind, now: bool, hourly: Option<f64>) -> Assessment {
        Assessment {
            backend,
            refusal: None,
            starts_now: now,
            detail: String::new(),
            est_start_seconds: None,
            est_duration_seconds: None,
            hourly_usd: hourly,
            unpriced: false,
        }
    }

    fn spec(objective: Objective, max_cost: Option<f64>) -> PlacementSpec {
        PlacementSpec {
            objective,
            max_cost_usd: max_cost,
            ..Default::default()
        }
    }

    #[test]
    fn cost_prefers_what_is_not_counted_and_time_what_starts_now() {
        use BackendKind::*;
        let busy_cluster = vec![ok(Kubernetes, false, None), ok(Sagemaker, true, Some(0.82))];
        let by_cost = decide(Some(&spec(Objective::Cost, None)), busy_cluster.clone());
        assert_eq!(by_cost.chosen, Some(Kubernetes));
        let by_time = decide(Some(&spec(Objective::Time, None)), busy_cluster);
        assert_eq!(by_time.chosen, Some(Sagemaker));
        assert!(by_time.candidates[0]
            .reason
            .starts_with("would wait for room"));
        // Ties go to the earlier candidate.
        let tie = decide(
            None,
            vec![ok(Kubernetes, true, None), ok(Local, true, None)],
        );
        assert_eq!(tie.chosen, Some(Kubernetes));
        // Equal costs: the one that can start now.
        let waits = decide(
            Some(&spec(Objective::Cost, None)),
            vec![ok(Kubernetes, false, None), ok(Local, true, None)],
        );
        assert_eq!(waits.chosen, Some(Local));
        // An unknown time is not a short one: a candidate without history
        // does not win on time over one with it.
        let mut known = ok(Local, true, None);
        known.est_duration_seconds = Some(60.0);
        let d = decide(None, vec![known, ok(Sagemaker, true, Some(1.0))]);
        assert_eq!(d.chosen, Some(Local));
    }

    #[test]
    fn a_full_quota_or_no_instances_is_no_room_a_bad_job_is_not() {
        assert!(no_room("CreateTrainingJob: ResourceLimitExceeded: The account-level service limit 'ml.m5.xlarge for training job usage' is 2 Instances"));
        assert!(no_room(
            "CapacityError: Unable to provision requested ML compute capacity."
        ));
        assert!(!no_room(
            "AlgorithmError: ExecuteUserScriptError: exit code 1"
        ));
        assert!(!no_room("CreateTrainingJob: ValidationException: bad role"));
    }

    #[test]
    fn refusals_and_the_cost_limit_keep_their_reasons() {
        use BackendKind::*;
        let mut sm = ok(Sagemaker, true, Some(30.0));
        sm.est_duration_seconds = Some(3600.0);
        let d = decide(
            Some(&spec(Objective::Time, Some(25.0))),
            vec![
                Assessment::refused(Kubernetes, "needs 4 CPU on each of 2 nodes"),
                sm,
            ],
        );
        assert_eq!(d.chosen, None);
        assert_eq!(
            d.candidates[1].reason,
            "estimated at $30.00, above maxCostUSD $25.00"
        );
        let mut unpriced = ok(Sagemaker, true, None);
        unpriced.unpriced = true;
        let blind = decide(Some(&spec(Objective::Time, Some(25.0))), vec![unpriced]);
        assert_eq!(blind.chosen, None);
        assert!(blind.candidates[0].reason.contains("cannot be checked"));
        assert_eq!(
            d.refusal(),
            "spec.placement: no candidate can run this job (kubernetes: needs 4 CPU on each of 2 nodes; sagemaker: estimated at $30.00, above maxCostUSD $25.00)"
        );
    }
}
