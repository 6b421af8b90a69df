//! The operator's decisions, apart from the API calls that carry them out.
//!
//! [`plan`] is a pure function of what one reconcile pass observed (the job,
//! its pods and services, the cluster when a gang is to be admitted) and the
//! time: it says which pods and services to create or delete, the status the
//! job should have and when to look again. The operator's shell reads, calls
//! it and applies the [`Plan`]; so every rule (restart policies, backoff,
//! deadlines, suspension, TTL, gang admission, Kubeflow's counting) is tested
//! as a table, without an API server, and restarting the operator changes
//! nothing because nothing is kept between passes.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStateTerminated, Node, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::capacity;
use crate::crd::{CleanPods, JobStatus, PyTorchJob, ReplicaRestart, ReplicaStatus, CONTAINER};
use crate::pods::{self, Slot, LABEL_TYPE};

/// How long a non-retryable failure waits for a peer's earlier failure to be
/// reported before it fails the job.
pub const FAILURE_SETTLE_SECONDS: i64 = 10;

/// How long a pod may retry pulling its image before the job fails.
pub const IMAGE_PULL_GRACE_SECONDS: i64 = 300;

/// What one pass saw.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The job as stored (not the watch cache's copy, which may lag our own
    /// last status write).
    pub job: &'a PyTorchJob,
    /// The job's pods and services (by the job-name label).
    pub pods: &'a [Pod],
    pub services: &'a [Service],
    /// The cluster's nodes and every pod in it, for admitting a whole gang.
    /// `None` until a plan asks for it ([`Plan::needs_cluster`]): listing a
    /// cluster is not free, and most passes do not need it.
    pub cluster: Option<(&'a [Node], &'a [Pod])>,
}

/// When to look at the job again without an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    AwaitChange,
    Requeue(Duration),
}

/// What to do with the job's HorizontalPodAutoscaler (elastic jobs with
/// metrics only; the shell ignores it for others).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hpa {
    /// A finished job's autoscaler is left as it is.
    Leave,
    /// Created or updated to match the elastic policy.
    Keep,
    /// Deleted (the job is suspended).
    Remove,
}

/// One pass's decisions, applied in this order: autoscaler, pod deletions,
/// service deletions, service creations, pod creations, status, job deletion.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub hpa: Hpa,
    /// Pod names, deleted at once (grace period 0); an absent one is fine.
    pub delete_pods: Vec<String>,
    /// Service names; an absent one is fine.
    pub delete_services: Vec<String>,
    pub create_services: Vec<Service>,
    pub create_pods: Vec<Pod>,
    /// The status the job should have; written only when it differs from the
    /// stored one.
    pub status: JobStatus,
    /// The job's TTL after finishing has passed: delete it.
    pub delete_job: bool,
    pub next: Next,
    /// A whole gang is to be admitted and [`Observed::cluster`] was `None`:
    /// observe the cluster and plan again (nothing else in this plan is to be
    /// applied).
    pub needs_cluster: bool,
}

impl Plan {
    /// Only a status (possibly unchanged) and when to look again.
    fn status(status: JobStatus, next: Next) -> Plan {
        Plan {
            hpa: Hpa::Leave,
            delete_pods: Vec::new(),
            delete_services: Vec::new(),
            create_services: Vec::new(),
            create_pods: Vec::new(),
            status,
            delete_job: false,
            next,
            needs_cluster: false,
        }
    }

    /// Deletes pods, and their Services (a pod and its Service share the
    /// name), as cleanPodPolicy says once a job has ended: `None` (Kubeflow's
    /// default) nothing, `Running` the pods still Pending or Running, `All`
    /// every pod.
    fn clean_up(&mut self, pods: &[Pod], policy: CleanPods) {
        for p in pods {
            if policy.deletes(phase(p)) {
                self.delete_pods.push(p.name_any());
                self.delete_services.push(p.name_any());
            }
        }
    }
}

pub fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// How the training container (named `pytorch`, else the first) of a pod ended.
fn terminated(p: &Pod) -> Option<&ContainerStateTerminated> {
    let all = p.status.as_ref()?.container_statuses.as_ref()?;
    let c = all
        .iter()
        .find(|c| c.name == CONTAINER)
        .or_else(|| all.first())?;
    c.state.as_ref()?.terminated.as_ref()
}

/// The training container's exit code of a finished pod.
fn exit_code(p: &Pod) -> i32 {
    terminated(p).map(|t| t.exit_code).unwrap_or(1)
}

/// When the training container of a finished pod ended (seconds), if known.
fn finished_at(p: &Pod) -> Option<i64> {
    terminated(p)?.finished_at.as_ref().map(|f| f.0.as_second())
}

/// Whether a failed pod may be restarted under its replica's restartPolicy.
pub fn retryable(policy: &str, code: i32) -> bool {
    ReplicaRestart::parse(Some(policy)).retries(code)
}

/// Why a pending pod will not start because of its image, if that is so:
/// at once for an image that is never pulled or is not a valid name, after
/// [`IMAGE_PULL_GRACE_SECONDS`] of pull retries otherwise.
pub fn image_failure(p: &Pod, now: Timestamp) -> Option<String> {
    let st = p.status.as_ref()?;
    if st.phase.as_deref() != Some("Pending") {
        return None;
    }
    let age = p
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| now.as_second() - t.0.as_second())
        .unwrap_or(0);
    st.init_container_statuses
        .iter()
        .flatten()
        .chain(st.container_statuses.iter().flatten())
        .find_map(|c| {
            let w = c.state.as_ref()?.waiting.as_ref()?;
            let reason = w.reason.as_deref()?;
            let fatal = match reason {
                "ErrImageNeverPull" | "InvalidImageName" => true,
                "ErrImagePull" | "ImagePullBackOff" => age >= IMAGE_PULL_GRACE_SECONDS,
                _ => false,
            };
            fatal.then(|| {
                format!(
                    "pod {} cannot start container {}: {reason}: {}",
                    p.name_any(),
                    c.name,
                    w.message.clone().unwrap_or_default()
                )
            })
        })
}

/// Fails the job: counts the pods as they stood, stops the running ones
/// (they cannot finish the job any more), sets `Failed` with `reason` and
/// `message`. Also the shell's answer when the API server refuses a pod.
pub fn fail(
    pods: &[Pod],
    mut status: JobStatus,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> Plan {
    for (key, st) in status.replica_statuses.iter_mut() {
        let rtype = key.to_lowercase();
        (st.active, st.succeeded, st.failed) = (0, 0, 0);
        for p in pods
            .iter()
            .filter(|p| p.labels().get(LABEL_TYPE) == Some(&rtype))
        {
            count(st, p);
        }
    }
    let t = Time(now);
    status.set(&t, "Failed", reason, message);
    status.completion_time = Some(t);
    let mut plan = Plan::status(status, Next::AwaitChange);
    plan.delete_pods = pods
        .iter()
        .filter(|p| matches!(phase(p), "Pending" | "Running"))
        .map(|p| p.name_any())
        .collect();
    plan
}

/// Decides one pass over one job. `resync` bounds how long a job waits
/// between passes while it runs (deadlines, capacity).
pub fn plan(obs: &Observed, now: Timestamp, resync: Duration) -> Plan {
    let job = obs.job;
    let pods = obs.pods;
    let name = job.name_any();
    let t = Time(now);
    let since = |at: i64| now.as_second() - at;
    let before = job.status.clone().unwrap_or_default();
    if job.metadata.deletion_timestamp.is_some() {
        return Plan::status(before, Next::AwaitChange);
    }
    let run_policy = job.spec.run_policy.clone().unwrap_or_default();
    // Another controller's job (e.g. Kueue's MultiKueue): not ours to touch.
    if run_policy
        .managed_by
        .as_deref()
        .is_some_and(|m| !m.is_empty() && m != "kubeflow.org/training-operator")
    {
        return Plan::status(before, Next::AwaitChange);
    }
    let mut status = before.clone();
    let slots = pods::slots(job);
    if slots.is_empty() {
        status.set(
            &t,
            "Failed",
            "PyTorchJobFailed",
            "pytorchReplicaSpecs has no Master or Worker replicas",
        );
        return Plan::status(status, Next::AwaitChange);
    }
    if status.conditions.is_empty() {
        status.set(
            &t,
            "Created",
            "PyTorchJobCreated",
            &format!("PyTorchJob {name} is created."),
        );
    }

    // Finished: clean up as the policy says, then expire after the TTL.
    if status.finished() {
        let mut plan = Plan::status(status, Next::AwaitChange);
        plan.clean_up(pods, run_policy.clean_pods());
        if let (Some(ttl), Some(done)) = (
            run_policy.ttl_seconds_after_finished,
            plan.status.completion_time.clone(),
        ) {
            let age = since(done.0.as_second());
            if age >= ttl as i64 {
                plan.delete_pods = pods.iter().map(|p| p.name_any()).collect();
                plan.delete_services = obs.services.iter().map(|s| s.name_any()).collect();
                plan.delete_job = true;
            } else {
                plan.next = Next::Requeue(Duration::from_secs((ttl as i64 - age).max(1) as u64));
            }
        }
        return plan;
    }

    // Suspended: no pods; resuming starts the gang again with a new start time.
    if run_policy.suspend.unwrap_or(false) {
        let message = format!("PyTorchJob {name} is suspended.");
        status.clear_because(&t, "Running", Some(("PyTorchJobSuspended", &message)));
        status.set(&t, "Suspended", "PyTorchJobSuspended", &message);
        status.replica_statuses.clear();
        status.start_time = None;
        let mut plan = Plan::status(status, Next::AwaitChange);
        plan.hpa = Hpa::Remove;
        plan.delete_pods = pods.iter().map(|p| p.name_any()).collect();
        return plan;
    }
    let decided = decide_running(obs, &name, &slots, status, now, resync);
    Plan {
        hpa: Hpa::Keep,
        ..decided
    }
}

/// The rules of a job that has not finished and is not suspended, in
/// order: each either decides the plan or passes the status on.
fn decide_running(
    obs: &Observed,
    name: &str,
    slots: &[Slot],
    mut status: JobStatus,
    now: Timestamp,
    resync: Duration,
) -> Plan {
    let rules = Running {
        obs,
        name,
        slots,
        now,
        resync,
        run_policy: obs.job.spec.run_policy.clone().unwrap_or_default(),
    };
    if status.has("Suspended") {
        let message = format!("PyTorchJob {name} is resumed.");
        status.clear_because(
            &Time(now),
            "Suspended",
            Some(("PyTorchJobResumed", &message)),
        );
    }
    match rules.decide(status) {
        ControlFlow::Break(plan) | ControlFlow::Continue(plan) => plan,
    }
}

/// What the rules of a running job read.
struct Running<'a> {
    obs: &'a Observed<'a>,
    name: &'a str,
    slots: &'a [Slot],
    now: Timestamp,
    resync: Duration,
    run_policy: crate::crd::RunPolicy,
}

/// A rule's answer: the plan (`Break`), or the status for the next rule.
type Rule = ControlFlow<Plan, JobStatus>;

impl Running<'_> {
    fn decide(&self, status: JobStatus) -> ControlFlow<Plan, Plan> {
        let status = self.deadline(status)?;
        let status = self.restarts_in_place(status)?;
        let status = self.finished_pods(status)?;
        let status = self.image_failure(status)?;
        ControlFlow::Continue(self.start_missing(status))
    }

    fn pod_of(&self, slot: &Slot) -> Option<&Pod> {
        self.obs
            .pods
            .iter()
            .find(|p| p.name_any() == slot.name(self.name))
    }

    fn since(&self, at: i64) -> i64 {
        self.now.as_second() - at
    }

    /// Past `activeDeadlineSeconds`: the job fails.
    fn deadline(&self, status: JobStatus) -> Rule {
        let (Some(deadline), Some(start)) = (
            self.run_policy.active_deadline_seconds,
            status.start_time.clone(),
        ) else {
            return ControlFlow::Continue(status);
        };
        let age = self.since(start.0.as_second());
        if age < deadline {
            return ControlFlow::Continue(status);
        }
        let message = format!(
            "PyTorchJob {} has run for {age}s, past activeDeadlineSeconds {deadline}",
            self.name
        );
        ControlFlow::Break(fail(
            self.obs.pods,
            status,
            "DeadlineExceeded",
            &message,
            self.now,
        ))
    }

    /// Containers the kubelet restarted in place (OnFailure, Always) count
    /// against backoffLimit, as Kubeflow counts them.
    fn restarts_in_place(&self, status: JobStatus) -> Rule {
        let Some(limit) = self.run_policy.backoff_limit else {
            return ControlFlow::Continue(status);
        };
        let in_place: i32 = self
            .obs
            .pods
            .iter()
            .filter(|p| phase(p) == "Running")
            .flat_map(|p| p.status.iter())
            .flat_map(|st| {
                st.container_statuses
                    .iter()
                    .flatten()
                    .chain(st.init_container_statuses.iter().flatten())
            })
            .map(|c| c.restart_count)
            .sum();
        if in_place == 0 || (in_place < limit && limit != 0) {
            return ControlFlow::Continue(status);
        }
        let message =
            format!("containers restarted {in_place} times in place; backoffLimit {limit} reached");
        ControlFlow::Break(fail(
            self.obs.pods,
            status,
            "BackoffLimitExceeded",
            &message,
            self.now,
        ))
    }

    /// Finished pods decide the job. Success first: a worker that fails
    /// while the finished master tears down the process group must not
    /// restart a job that is done.
    fn finished_pods(&self, status: JobStatus) -> Rule {
        let has_master = self
            .obs
            .job
            .spec
            .pytorch_replica_specs
            .contains_key("Master");
        let succeeded = if has_master {
            self.slots
                .first()
                .and_then(|s| self.pod_of(s))
                .is_some_and(|p| phase(p) == "Succeeded")
        } else {
            self.slots
                .iter()
                .all(|s| self.pod_of(s).is_some_and(|p| phase(p) == "Succeeded"))
        };
        if succeeded {
            return ControlFlow::Break(self.succeed(status));
        }
        // The first rank to fail is the cause; the others usually fail because it
        // left the collective (a peer killed with 137 makes the master exit 1 with
        // "connection reset"), so the earliest failure decides, as in the local backend.
        let mut failed: Vec<(&Slot, &Pod)> = self
            .slots
            .iter()
            .filter_map(|s| self.pod_of(s).map(|p| (s, p)))
            .filter(|(_, p)| phase(p) == "Failed")
            .collect();
        // Times have one-second resolution: within the same second a killed pod
        // (exit code ≥ 128) is taken as the cause rather than its peers' errors.
        failed.sort_by_key(|(_, p)| (finished_at(p).unwrap_or(i64::MAX), exit_code(p) < 128));
        match failed.first().copied() {
            Some((slot, p)) => ControlFlow::Break(self.decide_failure(status, slot, p)),
            None => ControlFlow::Continue(status),
        }
    }

    /// The earliest failed pod decides: restart (as its replica's restartPolicy
    /// and the backoff limit allow) or fail the job.
    fn decide_failure(&self, mut status: JobStatus, slot: &Slot, p: &Pod) -> Plan {
        let (job, pods, name, slots, now) =
            (self.obs.job, self.obs.pods, self.name, self.slots, self.now);
        let run_policy = &self.run_policy;
        let code = exit_code(p);
        let policy =
            pods::replica_spec(job, slot).map_or(ReplicaRestart::OnFailure, |r| r.restart());
        let pod_name = p.name_any();
        if !policy.retries(code) {
            // Peers report their end separately: while others still run, give a
            // killed peer a few seconds to show up as the earlier failure.
            let others_running = pods
                .iter()
                .any(|o| o.name_any() != pod_name && matches!(phase(o), "Pending" | "Running"));
            let age = finished_at(p).map(|at| now.as_second() - at);
            if others_running && age.is_some_and(|a| a < FAILURE_SETTLE_SECONDS) {
                return Plan::status(status, Next::Requeue(Duration::from_secs(1)));
            }
            let message = format!(
                "pod {pod_name} exited with code {code} (restartPolicy {}: not retried)",
                policy.as_str()
            );
            return fail(pods, status, "PyTorchJobFailed", &message, now);
        }
        let restarts = status.restart_count.unwrap_or(0) + 1;
        if let Some(limit) = run_policy.backoff_limit {
            if restarts > limit {
                let message =
                    format!("pod {pod_name} exited with code {code}; backoffLimit {limit} reached");
                return fail(pods, status, "BackoffLimitExceeded", &message, now);
            }
        }
        status.restart_count = Some(restarts);
        status.set(
            &Time(now),
            "Restarting",
            "PyTorchJobRestarting",
            &format!("pod {pod_name} exited with code {code}; restarting (restart {restarts})"),
        );
        status.replica_statuses = replica_statuses(name, slots, &[]);
        let mut plan = Plan::status(status, Next::Requeue(Duration::from_millis(500)));
        // As Kubeflow, only the failed pod is recreated; a job that asked for
        // whole-gang restarts (Switchyard's own) restarts every pod.
        plan.delete_pods = if pods::gang_restarts(job) {
            pods.iter().map(|p| p.name_any()).collect()
        } else {
            vec![pod_name]
        };
        plan
    }

    /// The job succeeded. Workers still running after the master finished
    /// are left to cleanPodPolicy (None keeps them, as Kubeflow does;
    /// Switchyard's own TrainingJobs ask for Running).
    fn succeed(&self, mut status: JobStatus) -> Plan {
        let t = Time(self.now);
        status.replica_statuses = replica_statuses(self.name, self.slots, self.obs.pods);
        // As Kubeflow: once the job succeeded, replicas still active count as succeeded.
        for r in status.replica_statuses.values_mut() {
            r.succeeded += r.active;
            r.active = 0;
        }
        let message = format!("PyTorchJob {} is successfully completed.", self.name);
        status.set(&t, "Succeeded", "PyTorchJobSucceeded", &message);
        status.completion_time = Some(t);
        let next = match self.run_policy.ttl_seconds_after_finished {
            Some(ttl) => Next::Requeue(Duration::from_secs(ttl.max(0) as u64)),
            None => Next::AwaitChange,
        };
        let mut plan = Plan::status(status, next);
        plan.clean_up(self.obs.pods, self.run_policy.clean_pods());
        plan
    }

    /// A pod whose image cannot be had never starts: say why instead of
    /// waiting forever.
    fn image_failure(&self, status: JobStatus) -> Rule {
        match self
            .obs
            .pods
            .iter()
            .find_map(|p| image_failure(p, self.now))
        {
            Some(why) => ControlFlow::Break(fail(
                self.obs.pods,
                status,
                "ImagePullFailed",
                &why,
                self.now,
            )),
            None => ControlFlow::Continue(status),
        }
    }

    /// Missing pods: the whole gang only when it fits; single replacements
    /// directly. Then the replica counts, `Running` once every pod runs, and
    /// the next look (before the deadline, at the latest after `resync`).
    fn start_missing(&self, mut status: JobStatus) -> Plan {
        let (job, slots, t) = (self.obs.job, self.slots, Time(self.now));
        let missing: Vec<&Slot> = slots.iter().filter(|s| self.pod_of(s).is_none()).collect();
        let mut plan = Plan::status(JobStatus::default(), Next::AwaitChange);
        if !missing.is_empty() {
            if missing.len() == slots.len() {
                if let Some(wait) = self.admit_gang(&mut status) {
                    return wait;
                }
            }
            plan.create_services = slots
                .iter()
                .filter(|s| {
                    !self
                        .obs
                        .services
                        .iter()
                        .any(|x| x.name_any() == s.name(self.name))
                })
                .map(|s| pods::service_for(job, s))
                .collect();
            plan.create_pods = missing
                .iter()
                .map(|s| pods::pod_for(job, s, slots))
                .collect();
            if status.start_time.is_none() {
                status.start_time = Some(t.clone());
            }
            if !status.has("Restarting") {
                let message = format!("PyTorchJob {} is created.", self.name);
                status.set(&t, "Created", "PyTorchJobCreated", &message);
            }
        }
        status.replica_statuses = replica_statuses(self.name, slots, self.obs.pods);
        let all_running = missing.is_empty()
            && slots
                .iter()
                .all(|s| self.pod_of(s).is_some_and(|p| phase(p) == "Running"));
        if all_running {
            let message = format!("PyTorchJob {} is running.", self.name);
            status.set(&t, "Running", "PyTorchJobRunning", &message);
        }
        plan.next = match (
            self.run_policy.active_deadline_seconds,
            status.start_time.clone(),
        ) {
            (Some(d), Some(start)) => {
                let left = d - self.since(start.0.as_second());
                Next::Requeue(Duration::from_secs(
                    left.clamp(1, self.resync.as_secs().max(1) as i64) as u64,
                ))
            }
            _ => Next::Requeue(self.resync),
        };
        plan.status = status;
        plan
    }

    /// Gang admission: the plan to wait with when the whole gang does not
    /// fit the cluster now (or the cluster is still to be read).
    fn admit_gang(&self, status: &mut JobStatus) -> Option<Plan> {
        let Some((nodes, all_pods)) = self.obs.cluster else {
            let mut plan = Plan::status(status.clone(), Next::AwaitChange);
            plan.needs_cluster = true;
            return Some(plan);
        };
        let gang: Vec<capacity::Amount> = self
            .slots
            .iter()
            .filter_map(|s| pods::pod_for(self.obs.job, s, self.slots).spec)
            .map(|spec| capacity::requests(&spec))
            .collect();
        let why = capacity::place(nodes, all_pods, &gang).err()?;
        let t = Time(self.now);
        let msg = format!("waiting for capacity: {why}");
        status.set(&t, "Created", "PyTorchJobWaitingForCapacity", &msg);
        status.restate(&t, "Created", &msg);
        Some(Plan::status(
            status.clone(),
            Next::Requeue(self.resync.min(Duration::from_secs(3))),
        ))
    }
}

/// `replicaStatuses` as Kubeflow counts them: a Running pod is active (one
/// being deleted counts as failed), Succeeded and Failed pods as such, a
/// Pending pod not at all; each with its label selector (what the `scale`
/// subresource hands an HPA).
fn replica_statuses(name: &str, slots: &[Slot], pods: &[Pod]) -> BTreeMap<String, ReplicaStatus> {
    let mut out = BTreeMap::new();
    for s in slots {
        let key = if s.rtype == "master" {
            "Master"
        } else {
            "Worker"
        };
        let entry: &mut ReplicaStatus = out.entry(key.to_string()).or_insert_with(|| {
            let labels = BTreeMap::from([
                (pods::LABEL_JOB.to_string(), name.to_string()),
                (
                    pods::LABEL_OPERATOR.to_string(),
                    "pytorchjob-controller".to_string(),
                ),
                (LABEL_TYPE.to_string(), s.rtype.clone()),
            ]);
            ReplicaStatus {
                selector: Some(
                    labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                label_selector: Some(
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                        match_labels: Some(labels),
                        ..Default::default()
                    },
                ),
                ..Default::default()
            }
        });
        if let Some(pod) = pods.iter().find(|p| {
            p.labels().get(LABEL_TYPE) == Some(&s.rtype)
                && p.labels().get(pods::LABEL_INDEX) == Some(&s.index.to_string())
        }) {
            count(entry, pod);
        }
    }
    out
}

/// Counts one pod as Kubeflow does: Running active (failed while being
/// deleted), Succeeded and Failed as such, Pending not at all.
fn count(entry: &mut ReplicaStatus, pod: &Pod) {
    match (phase(pod), pod.metadata.deletion_timestamp.is_some()) {
        ("Running", false) => entry.active += 1,
        ("Running", true) | ("Failed", _) => entry.failed += 1,
        ("Succeeded", _) => entry.succeeded += 1,
        _ => {}
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
