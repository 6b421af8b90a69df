//! One reconcile pass over a TrainJob, decided as a pure function of what
//! the pass observed (the job, its resolved runtime, its pods, the cluster
//! when a gang is to be admitted) and the time — as the PyTorchJob
//! [`plan`](crate::plan) is — with the results Trainer v2.3 and JobSet show:
//!
//! - no condition while the job runs (the Kubeflow SDK reads "no condition
//!   and every pod running" as `Running`);
//! - `Suspended` (`Suspended`/`Resumed`), `Complete` (`AllJobsCompleted`),
//!   `Failed` (`FailedJobs`, `ReachedMaxRestarts`, `DeadlineExceeded`,
//!   `TrainingRuntimeNotSupported`) with Trainer's and JobSet's messages;
//! - `jobsStatus` counting Jobs per replicated job, as JobSet does;
//! - a Job fails when its failed pods plus in-place container restarts
//!   pass its `backoffLimit`; a failed Job restarts the whole gang while
//!   the runtime's `failurePolicy.maxRestarts` allows (each restart a new
//!   `restart-attempt`), else fails the TrainJob;
//! - the deadline counts from creation, or from the last resume.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::api::{JobStatus, TrainJob, TrainJobStatus, CONTROLLER};
use super::pods::{self, COMPLETION_INDEX, LABEL_RESTART, LABEL_RJOB};
use super::resolve::{Dependency, Gang, GangJob};
use crate::capacity;
use crate::plan::{image_failure, phase, Next};

pub const COMPLETE: &str = "Complete";
pub const FAILED: &str = "Failed";
pub const SUSPENDED: &str = "Suspended";
/// The annotation on the TrainJob counting its gang's restarts (JobSet keeps
/// it in its own status; without a JobSet object it lives on the TrainJob).
pub const RESTARTS: &str = "trainer.switchyard.io/restarts";

/// The runtime as the pass found it.
#[derive(Debug, Clone, Copy)]
pub enum Runtime<'a> {
    Resolved(&'a Gang),
    /// Switchyard does not run it: the job fails, naming why.
    Unsupported(&'a str),
}

#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub job: &'a TrainJob,
    pub runtime: Runtime<'a>,
    /// The job's pods (by the jobset-name label).
    pub pods: &'a [Pod],
    pub services: &'a [Service],
    /// Nodes and every pod, once a plan asked for them ([`Plan::needs_cluster`]).
    pub cluster: Option<(&'a [Node], &'a [Pod])>,
}

/// One pass's decisions, applied in this order: restarts annotation, pod
/// deletions, service creation, claim creations, pod creations, status.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// A new gang restart count to record before anything else, and why.
    pub restarts: Option<(i32, String)>,
    pub delete_pods: Vec<String>,
    pub create_service: Option<Service>,
    /// The headless Service to delete (a job past its deadline loses it with
    /// its JobSet under Trainer).
    pub delete_service: Option<String>,
    /// The shared claims, made (when missing) before the pods that mount them.
    pub create_claims: Vec<PersistentVolumeClaim>,
    pub create_pods: Vec<Pod>,
    pub status: TrainJobStatus,
    pub next: Next,
    pub needs_cluster: bool,
    /// Something the job waits on that a person may have to fix, said as a
    /// Warning Event (reason, message).
    pub warning: Option<(String, String)>,
}

impl Plan {
    fn status(status: TrainJobStatus, next: Next) -> Plan {
        Plan {
            restarts: None,
            delete_pods: Vec::new(),
            create_service: None,
            delete_service: None,
            create_claims: Vec::new(),
            create_pods: Vec::new(),
            status,
            next,
            needs_cluster: false,
            warning: None,
        }
    }

    /// Every pod still Pending or Running is deleted.
    fn stop_running(&mut self, pods: &[Pod]) {
        self.delete_pods.extend(
            pods.iter()
                .filter(|p| matches!(phase(p), "Pending" | "Running"))
                .map(|p| p.name_any()),
        );
    }
}

/// Sets a condition as Kubernetes' `meta.SetStatusCondition` does: the
/// transition time changes only when the status does.
pub fn set_condition(
    status: &mut TrainJobStatus,
    type_: &str,
    value: bool,
    reason: &str,
    message: &str,
    now: &Time,
) {
    let value = if value { "True" } else { "False" };
    match status.conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != value {
                c.last_transition_time = now.clone();
            }
            c.status = value.into();
            c.reason = reason.into();
            c.message = message.into();
        }
        None => status.conditions.push(Condition {
            type_: type_.into(),
            status: value.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: now.clone(),
            observed_generation: None,
        }),
    }
}

pub fn is_true(status: &TrainJobStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Whether the job has ended (`Complete` or `Failed`).
pub fn finished(status: &TrainJobStatus) -> bool {
    is_true(status, COMPLETE) || is_true(status, FAILED)
}

/// The gang restarts recorded on the job.
pub fn restarts(job: &TrainJob) -> i32 {
    job.annotations()
        .get(RESTARTS)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Whether another controller owns the job (`spec.managedBy`).
pub fn managed_elsewhere(job: &TrainJob) -> bool {
    job.spec
        .managed_by
        .as_deref()
        .is_some_and(|m| !m.is_empty() && m != CONTROLLER)
}

pub fn plan(obs: &Observed, now: Timestamp, resync: Duration) -> Plan {
    let job = obs.job;
    let t = Time(now);
    let mut status = job.status.clone().unwrap_or_default();
    if job.metadata.deletion_timestamp.is_some() || managed_elsewhere(job) {
        return Plan::status(status, Next::AwaitChange);
    }
    let gang = match obs.runtime {
        Runtime::Unsupported(why) => {
            set_condition(
                &mut status,
                FAILED,
                true,
                "TrainingRuntimeNotSupported",
                why,
                &t,
            );
            let mut plan = Plan::status(status, Next::AwaitChange);
            plan.stop_running(obs.pods);
            return plan;
        }
        Runtime::Resolved(g) => g,
    };
    if finished(&status) {
        let mut plan = Plan::status(status, Next::AwaitChange);
        plan.stop_running(obs.pods);
        return plan;
    }
    let attempt = restarts(job);
    let current: Vec<&Pod> = obs
        .pods
        .iter()
        .filter(|p| p.labels().get(LABEL_RESTART) == Some(&attempt.to_string()))
        .collect();
    // Pods of an earlier attempt (a restart the last pass began) go.
    let stale: Vec<String> = obs
        .pods
        .iter()
        .filter(|p| p.labels().get(LABEL_RESTART) != Some(&attempt.to_string()))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.name_any())
        .collect();
    let jobs: Vec<JobView> = gang
        .jobs
        .iter()
        .map(|gj| JobView::of(gj, &current, now))
        .collect();
    // A job waits for the jobs it depends on (JobSet's `dependsOn`: the
    // initializers before the trainer).
    let reached = |d: &Dependency| {
        jobs.iter().any(|v| {
            v.name == d.job && (v.state == JobState::Succeeded || (!d.complete && v.ready))
        })
    };
    let has_pods = |name: &str| {
        current
            .iter()
            .any(|p| p.labels().get(LABEL_RJOB).map(String::as_str) == Some(name))
    };
    if job.spec.suspend.unwrap_or(false) {
        set_condition(
            &mut status,
            SUSPENDED,
            true,
            "Suspended",
            "TrainJob is suspended",
            &t,
        );
        // As a suspended Job: its running pods go, what finished stays
        // (a resumed job runs only what had not, and keeps its failures).
        // A Job JobSet has not made yet (its dependencies unmet) counts nothing.
        status.jobs_status = jobset_order(
            jobs.iter()
                .zip(&gang.jobs)
                .map(|(v, gj)| match v.state {
                    JobState::Active => JobStatus {
                        name: v.name.clone(),
                        suspended: i32::from(
                            has_pods(&gj.name) || gj.depends_on.iter().all(reached),
                        ),
                        ..Default::default()
                    },
                    _ => v.status(),
                })
                .collect(),
        );
        let mut plan = Plan::status(status, Next::AwaitChange);
        plan.stop_running(obs.pods);
        plan.delete_pods.extend(stale);
        // A suspended JobSet keeps its Service.
        plan.create_service = missing_service(obs, job, gang);
        return plan;
    }
    if is_true(&status, SUSPENDED) {
        set_condition(
            &mut status,
            SUSPENDED,
            false,
            "Resumed",
            "TrainJob is resumed",
            &t,
        );
    }
    // The deadline: from creation, or from the last resume.
    let mut deadline_left = None;
    if let Some(ads) = job.spec.active_deadline_seconds {
        let start = status
            .conditions
            .iter()
            .find(|c| c.type_ == SUSPENDED && c.status == "False")
            .map(|c| c.last_transition_time.0)
            .or(job.metadata.creation_timestamp.as_ref().map(|c| c.0));
        if let Some(start) = start {
            let left = start.as_second() + ads - now.as_second();
            if left <= 0 {
                set_condition(
                    &mut status,
                    FAILED,
                    true,
                    "DeadlineExceeded",
                    "TrainJob exceeded its active deadline",
                    &t,
                );
                // As Trainer deletes the JobSet: its pods and its Service go.
                let mut plan = Plan::status(status, Next::AwaitChange);
                plan.delete_pods = obs.pods.iter().map(|p| p.name_any()).collect();
                plan.delete_service = obs
                    .services
                    .iter()
                    .any(|s| s.name_any() == gang.subdomain)
                    .then(|| gang.subdomain.clone());
                return plan;
            }
            deadline_left = Some(left);
        }
    }
    status.jobs_status = jobset_order(jobs.iter().map(JobView::status).collect());

    if jobs.iter().all(|j| j.state == JobState::Succeeded) {
        set_condition(
            &mut status,
            COMPLETE,
            true,
            "AllJobsCompleted",
            "jobset completed successfully",
            &t,
        );
        return Plan::status(status, Next::AwaitChange);
    }
    if let Some(failed) = jobs.iter().find(|j| matches!(j.state, JobState::Failed(_))) {
        let why = match &failed.state {
            JobState::Failed(why) => why.clone(),
            _ => String::new(),
        };
        // JobSet v0.12's messages name the first failed Job.
        let first = pods::job_name(&job.name_any(), &failed.name);
        match gang.max_restarts {
            Some(max) if attempt < max => {
                tracing::info!(job = %job.name_any(), restart = attempt + 1, %why, "restarting the gang");
                let mut plan = Plan::status(status, Next::Requeue(Duration::from_millis(500)));
                plan.restarts = Some((attempt + 1, why));
                plan.delete_pods = obs.pods.iter().map(|p| p.name_any()).collect();
                return plan;
            }
            Some(_) => set_condition(
                &mut status,
                FAILED,
                true,
                "ReachedMaxRestarts",
                &format!("jobset failed due to reaching max number of restarts (first failed job: {first})"),
                &t,
            ),
            None => set_condition(
                &mut status,
                FAILED,
                true,
                "FailedJobs",
                &format!("jobset failed due to one or more job failures (first failed job: {first})"),
                &t,
            ),
        }
        tracing::info!(job = %job.name_any(), %why, "failed");
        let mut plan = Plan::status(status, Next::AwaitChange);
        plan.stop_running(obs.pods);
        return plan;
    }

    let mut plan = Plan::status(status, Next::Requeue(resync));
    plan.create_service = missing_service(obs, job, gang);
    // Pods still terminating (a gang restart's, a suspend's) go first: their
    // host names are the new pods', and rank 0's must resolve to one pod.
    let leaving = !stale.is_empty()
        || obs
            .pods
            .iter()
            .any(|p| p.metadata.deletion_timestamp.is_some());
    plan.delete_pods = stale;
    if leaving {
        plan.warning = stuck_terminating(obs.pods, now);
        // Pods that take that long are looked at (and said) less often; their
        // going wakes the job anyway.
        let after = if plan.warning.is_some() { 5 } else { 1 };
        plan.next = Next::Requeue(Duration::from_secs(after));
        return plan;
    }
    let missing: Vec<(&GangJob, i32, u32)> = gang
        .jobs
        .iter()
        .zip(&jobs)
        .filter(|(gj, _)| gj.depends_on.iter().all(reached))
        .flat_map(|(gj, view)| view.missing.iter().map(move |(i, seq)| (gj, *i, *seq)))
        .collect();
    // Jobs starting now (none of their pods made yet) start whole, when all
    // of them fit; a replacement pod of a running job needs no admission.
    let (starting, replacing): (Vec<_>, Vec<_>) = missing
        .into_iter()
        .partition(|(gj, _, _)| !has_pods(&gj.name));
    let mut missing = replacing;
    if !starting.is_empty() {
        let Some((nodes, all_pods)) = obs.cluster else {
            let mut wait = Plan::status(plan.status, Next::AwaitChange);
            wait.needs_cluster = true;
            return wait;
        };
        let amounts: Vec<capacity::Amount> = starting
            .iter()
            .filter_map(|(gj, _, _)| gj.template.spec.as_ref())
            .map(capacity::requests)
            .collect();
        match capacity::place(nodes, all_pods, &amounts) {
            Ok(_) => missing.extend(starting),
            Err(why) => {
                tracing::debug!(job = %job.name_any(), %why, "waiting for capacity");
                plan.next = Next::Requeue(resync.min(Duration::from_secs(3)));
            }
        }
    }
    plan.create_pods = missing
        .iter()
        .map(|(gj, i, seq)| pods::pod_for(job, gang, gj, *i, attempt, *seq))
        .collect();
    // The claims with every pass that makes pods (a running pod keeps its
    // claim from going): one deleted since is made again first.
    if !plan.create_pods.is_empty() {
        plan.create_claims = gang
            .claims
            .iter()
            .map(|c| pods::claim_for(job, c))
            .collect();
    }
    if let Some(left) = deadline_left {
        let until = Duration::from_secs(left.clamp(1, resync.as_secs().max(1) as i64) as u64);
        plan.next = match plan.next {
            Next::Requeue(after) => Next::Requeue(after.min(until)),
            Next::AwaitChange => Next::Requeue(until),
        };
    }
    plan
}

#[derive(Debug, Clone, PartialEq)]
enum JobState {
    Active,
    Succeeded,
    /// Why (the pod and its exit, or the image).
    Failed(String),
}

/// One replicated job's Job, as the Job controller would see it from its pods.
struct JobView {
    name: String,
    state: JobState,
    /// Pods Pending or Running (the Job's `active`).
    active: i32,
    /// Pods Running and Ready, or Succeeded, cover every index.
    ready: bool,
    /// Indexes without a live or succeeded pod, with the pod's sequence number.
    missing: Vec<(i32, u32)>,
}

impl JobView {
    fn of(gj: &GangJob, pods: &[&Pod], now: Timestamp) -> JobView {
        let mine: Vec<&Pod> = pods
            .iter()
            .copied()
            .filter(|p| p.labels().get(LABEL_RJOB) == Some(&gj.name))
            .collect();
        let of_index = |i: i32| -> Vec<&Pod> {
            mine.iter()
                .copied()
                .filter(|p| p.labels().get(COMPLETION_INDEX) == Some(&i.to_string()))
                .collect()
        };
        let live = |p: &Pod| {
            p.metadata.deletion_timestamp.is_none() && matches!(phase(p), "Pending" | "Running")
        };
        let (mut failed_pods, mut restarts) = (0, 0);
        let mut first_failure = None;
        let (mut active, mut ready_or_done, mut succeeded) = (0, 0, 0);
        let mut missing = Vec::new();
        for i in 0..gj.parallelism {
            let ps = of_index(i);
            // A pod deleted while it ran (a suspend, a restart) is not a
            // failure of the Job, whatever phase it ends in.
            let failed: Vec<&Pod> = ps
                .iter()
                .copied()
                .filter(|p| phase(p) == "Failed" && p.metadata.deletion_timestamp.is_none())
                .collect();
            failed_pods += failed.len() as i32;
            if first_failure.is_none() {
                first_failure = failed.first().map(|p| failure_of(p, "failed"));
            }
            // In-place restarts of the active pods' containers, init
            // containers too (restartPolicy OnFailure), as the Job controller counts.
            for p in ps.iter().filter(|p| live(p)) {
                let n: i32 = p
                    .status
                    .iter()
                    .flat_map(|s| {
                        s.container_statuses
                            .iter()
                            .flatten()
                            .chain(s.init_container_statuses.iter().flatten())
                    })
                    .map(|c| c.restart_count)
                    .sum();
                if n > 0 && first_failure.is_none() {
                    first_failure = Some(failure_of(p, &format!("restarted {n} times")));
                }
                restarts += n;
            }
            if let Some(why) = ps.iter().find_map(|p| image_failure(p, now)) {
                return JobView {
                    name: gj.name.clone(),
                    state: JobState::Failed(why),
                    active: 0,
                    ready: false,
                    missing: Vec::new(),
                };
            }
            if ps.iter().any(|p| phase(p) == "Succeeded") {
                succeeded += 1;
                ready_or_done += 1;
            } else if let Some(p) = ps.iter().find(|p| live(p)) {
                active += 1;
                if phase(p) == "Running" && pod_ready(p) {
                    ready_or_done += 1;
                }
            } else {
                // After the highest sequence number of the index's pods: a
                // replacement never takes a name still in use.
                let next = ps
                    .iter()
                    .filter_map(|p| pods::seq_of(p))
                    .max()
                    .map_or(0, |m| m + 1);
                missing.push((i, next));
            }
        }
        // The Job controller's two limits: failed pods past backoffLimit, and
        // (restartPolicy OnFailure) in-place restarts reaching it (any, when it is 0).
        let on_failure = gj
            .template
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            == Some("OnFailure");
        let limit = gj.backoff_limit;
        let past_restarts = on_failure
            && if limit == 0 {
                restarts > 0
            } else {
                restarts >= limit
            };
        let state = if failed_pods > limit || past_restarts {
            JobState::Failed(format!(
                "Job {} has reached the specified backoff limit {} ({})",
                gj.name,
                gj.backoff_limit,
                first_failure.unwrap_or_default()
            ))
        } else if succeeded == gj.parallelism {
            JobState::Succeeded
        } else {
            JobState::Active
        };
        JobView {
            name: gj.name.clone(),
            active,
            ready: ready_or_done >= gj.parallelism,
            missing: if state == JobState::Active {
                missing
            } else {
                Vec::new()
            },
            state,
        }
    }

    /// JobSet's count for this replicated job (one Job).
    fn status(&self) -> JobStatus {
        let (finished_ok, finished_failed) = (
            self.state == JobState::Succeeded,
            matches!(self.state, JobState::Failed(_)),
        );
        let running = !finished_ok && !finished_failed;
        JobStatus {
            name: self.name.clone(),
            ready: i32::from(running && self.ready),
            succeeded: i32::from(finished_ok),
            failed: i32::from(finished_failed),
            active: i32::from(running && self.active > 0),
            suspended: 0,
        }
    }
}

/// How long past its grace period a deleted pod may take before the wait
/// for it is said (a lost node keeps its pods Terminating for good).
const STUCK_AFTER: i64 = 60;

/// Pods deleted long ago that still hold their names (the next gang reuses
/// them), as the warning that says what to do.
fn stuck_terminating(pods: &[Pod], now: Timestamp) -> Option<(String, String)> {
    let stuck: Vec<String> = pods
        .iter()
        .filter(|p| {
            let Some(deleted) = &p.metadata.deletion_timestamp else {
                return false;
            };
            let grace = p.metadata.deletion_grace_period_seconds.unwrap_or(30);
            now.as_second() - deleted.0.as_second() > grace + STUCK_AFTER
        })
        .map(|p| p.name_any())
        .collect();
    (!stuck.is_empty()).then(|| {
        (
            "PodsStuckTerminating".to_string(),
            format!(
                "waiting for pods {} to go (deleted over {STUCK_AFTER} s past their grace period; their node may be lost): the gang starts again once they are gone; if the node is gone for good, delete them with --force --grace-period=0",
                stuck.join(", ")
            ),
        )
    })
}

/// JobSet v0.12 keeps its replicated jobs' statuses sorted by name, last
/// first (`node`, `model-initializer`, `dataset-initializer`); Trainer
/// copies them in that order.
fn jobset_order(mut statuses: Vec<JobStatus>) -> Vec<JobStatus> {
    statuses.sort_by(|a, b| b.name.cmp(&a.name));
    statuses
}

/// "pod X <what>", with its container's termination message (an
/// initializer writes why it failed there) when it left one.
fn failure_of(p: &Pod, what: &str) -> String {
    match termination_message(p) {
        Some(m) => format!("pod {} {what}: {m}", p.name_any()),
        None => format!("pod {} {what}", p.name_any()),
    }
}

/// The termination message a container left, now or before its last
/// in-place restart.
fn termination_message(p: &Pod) -> Option<String> {
    p.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .flat_map(|c| [c.state.as_ref(), c.last_state.as_ref()])
        .filter_map(|st| st?.terminated.as_ref()?.message.clone())
        .map(|m| m.trim().to_string())
        .find(|m| !m.is_empty())
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The headless Service, when the job does not have it yet.
fn missing_service(obs: &Observed, job: &TrainJob, gang: &Gang) -> Option<Service> {
    (!obs.services.iter().any(|s| s.name_any() == gang.subdomain))
        .then(|| pods::service_for(job, gang))
}
