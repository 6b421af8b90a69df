//! The operator's rules as tables: each case is a job, the pods a pass sees
//! and what the plan must do. No API server; the real-server tests
//! (tests/operator.rs) check that the shell applies plans.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};

use super::*;

const NOW: i64 = 1_800_000_000;
const RESYNC: Duration = Duration::from_secs(10);

fn now() -> Timestamp {
    Timestamp::from_second(NOW).expect("time")
}

fn at(seconds_ago: i64) -> String {
    now()
        .checked_sub(SignedDuration::from_secs(seconds_ago))
        .expect("time")
        .to_string()
}

/// A job `j` with one master and `workers` workers asking 1 CPU each.
fn job(workers: i32, policy: &str, run_policy: Value, status: Value) -> PyTorchJob {
    let template = json!({"spec": {"containers": [{
        "name": "pytorch", "image": "img", "command": ["python", "train.py"],
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
    }]}});
    serde_json::from_value(json!({
        "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
        "metadata": {"name": "j", "namespace": "ns", "uid": "u-1"},
        "spec": {
            "pytorchReplicaSpecs": {
                "Master": {"replicas": 1, "restartPolicy": policy, "template": template},
                "Worker": {"replicas": workers, "restartPolicy": policy, "template": template},
            },
            "runPolicy": run_policy,
        },
        "status": status,
    }))
    .expect("job")
}

/// A status whose last condition is `type_`, started `started_ago` seconds ago.
fn status(type_: &str, started_ago: i64, extra: Value) -> Value {
    let mut s = json!({
        "conditions": [{"type": type_, "status": "True", "reason": format!("PyTorchJob{type_}")}],
        "startTime": at(started_ago),
    });
    if let (Some(o), Some(e)) = (s.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    s
}

/// Pod `j-<rtype>-<index>` in `phase`.
fn pod(rtype: &str, index: i32, phase: &str) -> Pod {
    pod_with(rtype, index, phase, json!({}))
}

fn pod_with(rtype: &str, index: i32, phase: &str, status: Value) -> Pod {
    let mut st = json!({"phase": phase});
    if let (Some(o), Some(e)) = (st.as_object_mut(), status.as_object()) {
        o.extend(e.clone());
    }
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("j-{rtype}-{index}"), "namespace": "ns",
            "creationTimestamp": at(60),
            "labels": {
                pods::LABEL_JOB: "j", LABEL_TYPE: rtype,
                pods::LABEL_INDEX: index.to_string(),
            },
        },
        "status": st,
    }))
    .expect("pod")
}

/// A failed pod whose training container exited with `code` `ago` seconds ago.
fn exited(rtype: &str, index: i32, code: i32, ago: i64) -> Pod {
    let phase = if code == 0 { "Succeeded" } else { "Failed" };
    pod_with(
        rtype,
        index,
        phase,
        json!({"containerStatuses": [{
            "name": "pytorch", "ready": false, "restartCount": 0, "image": "img", "imageID": "",
            "state": {"terminated": {"exitCode": code, "finishedAt": at(ago)}},
        }]}),
    )
}

fn waiting(reason: &str, age: i64) -> Pod {
    let mut p = pod_with(
        "master",
        0,
        "Pending",
        json!({"containerStatuses": [{
            "name": "pytorch", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
            "state": {"waiting": {"reason": reason, "message": "not here"}},
        }]}),
    );
    p.metadata.creation_timestamp = Some(Time(
        now()
            .checked_sub(SignedDuration::from_secs(age))
            .expect("time"),
    ));
    p
}

fn node(cpu: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": "n1"},
        "status": {"allocatable": {"cpu": cpu, "memory": "64Gi"}},
    }))
    .expect("node")
}

fn plan_of(job: &PyTorchJob, pods: &[Pod], nodes: Option<&[Node]>) -> Plan {
    let services = Vec::new();
    let observed = Observed {
        job,
        pods,
        services: &services,
        cluster: nodes.map(|n| (n, &[][..])),
    };
    plan(&observed, now(), RESYNC)
}

/// The job's state as `kubectl get` shows it: the last True condition.
fn state(p: &Plan) -> (String, String) {
    p.status
        .conditions
        .iter()
        .rev()
        .find(|c| c.status == "True")
        .map(|c| (c.type_.clone(), c.reason.clone().unwrap_or_default()))
        .unwrap_or_default()
}

fn names(pods: &[Pod]) -> Vec<String> {
    pods.iter().map(|p| p.name_any()).collect()
}

struct Case {
    name: &'static str,
    job: PyTorchJob,
    pods: Vec<Pod>,
    nodes: Option<Vec<Node>>,
    /// (condition type, reason) the job ends the pass in.
    state: (&'static str, &'static str),
    creates: &'static [&'static str],
    deletes: &'static [&'static str],
    next: Next,
}

fn cases() -> Vec<Case> {
    let running = || status("Running", 30, json!({}));
    let all_running = || vec![pod("master", 0, "Running"), pod("worker", 0, "Running")];
    vec![
        Case {
            name: "a new job whose gang fits is created whole",
            job: job(1, "OnFailure", json!({}), json!(null)),
            pods: vec![],
            nodes: Some(vec![node("4")]),
            state: ("Created", "PyTorchJobCreated"),
            creates: &["j-master-0", "j-worker-0"],
            deletes: &[],
            next: Next::Requeue(RESYNC),
        },
        Case {
            name: "a gang that does not fit waits, creating nothing",
            job: job(3, "OnFailure", json!({}), json!(null)),
            pods: vec![],
            nodes: Some(vec![node("3")]),
            state: ("Created", "PyTorchJobWaitingForCapacity"),
            creates: &[],
            deletes: &[],
            next: Next::Requeue(Duration::from_secs(3)),
        },
        Case {
            name: "one missing pod of a started gang is replaced without admission",
            job: job(1, "OnFailure", json!({}), running()),
            pods: vec![pod("master", 0, "Running")],
            nodes: None,
            state: ("Created", "PyTorchJobCreated"),
            creates: &["j-worker-0"],
            deletes: &[],
            next: Next::Requeue(RESYNC),
        },
        Case {
            name: "every pod running makes the job Running",
            job: job(1, "OnFailure", json!({}), status("Created", 5, json!({}))),
            pods: all_running(),
            nodes: None,
            state: ("Running", "PyTorchJobRunning"),
            creates: &[],
            deletes: &[],
            next: Next::Requeue(RESYNC),
        },
        Case {
            name: "the master's success ends the job; cleanPodPolicy Running stops the worker",
            job: job(
                1,
                "OnFailure",
                json!({"cleanPodPolicy": "Running"}),
                running(),
            ),
            pods: vec![exited("master", 0, 0, 1), pod("worker", 0, "Running")],
            nodes: None,
            state: ("Succeeded", "PyTorchJobSucceeded"),
            creates: &[],
            deletes: &["j-worker-0"],
            next: Next::AwaitChange,
        },
        Case {
            name: "success wins over a worker failing while the master tears down",
            job: job(1, "Never", json!({}), running()),
            pods: vec![exited("master", 0, 0, 2), exited("worker", 0, 1, 1)],
            nodes: None,
            state: ("Succeeded", "PyTorchJobSucceeded"),
            creates: &[],
            deletes: &[],
            next: Next::AwaitChange,
        },
        Case {
            name: "OnFailure recreates only the failed pod (Kubeflow's per-pod restart)",
            job: job(1, "OnFailure", json!({}), running()),
            pods: vec![pod("master", 0, "Running"), exited("worker", 0, 1, 1)],
            nodes: None,
            state: ("Restarting", "PyTorchJobRestarting"),
            creates: &[],
            deletes: &["j-worker-0"],
            next: Next::Requeue(Duration::from_millis(500)),
        },
        Case {
            name: "ExitCode restarts a pod killed by a signal",
            job: job(1, "ExitCode", json!({}), running()),
            pods: vec![pod("master", 0, "Running"), exited("worker", 0, 137, 1)],
            nodes: None,
            state: ("Restarting", "PyTorchJobRestarting"),
            creates: &[],
            deletes: &["j-worker-0"],
            next: Next::Requeue(Duration::from_millis(500)),
        },
        Case {
            name: "ExitCode: a script error waits for a peer's earlier failure to show",
            job: job(1, "ExitCode", json!({}), running()),
            pods: vec![exited("master", 0, 1, 2), pod("worker", 0, "Running")],
            nodes: None,
            state: ("Running", "PyTorchJobRunning"),
            creates: &[],
            deletes: &[],
            next: Next::Requeue(Duration::from_secs(1)),
        },
        Case {
            name: "ExitCode: a script error fails the job once settled, stopping the rest",
            job: job(1, "ExitCode", json!({}), running()),
            pods: vec![exited("master", 0, 1, 30), pod("worker", 0, "Running")],
            nodes: None,
            state: ("Failed", "PyTorchJobFailed"),
            creates: &[],
            deletes: &["j-worker-0"],
            next: Next::AwaitChange,
        },
        Case {
            name: "a restart past backoffLimit fails the job",
            job: job(
                1,
                "OnFailure",
                json!({"backoffLimit": 2}),
                status("Running", 30, json!({"restartCount": 2})),
            ),
            pods: vec![pod("master", 0, "Running"), exited("worker", 0, 1, 1)],
            nodes: None,
            state: ("Failed", "BackoffLimitExceeded"),
            creates: &[],
            deletes: &["j-master-0"],
            next: Next::AwaitChange,
        },
        Case {
            name: "containers restarted in place count against backoffLimit",
            job: job(1, "OnFailure", json!({"backoffLimit": 1}), running()),
            pods: vec![
                pod("master", 0, "Running"),
                pod_with(
                    "worker",
                    0,
                    "Running",
                    json!({"containerStatuses": [{"name": "pytorch", "ready": true,
                        "restartCount": 1, "image": "img", "imageID": ""}]}),
                ),
            ],
            nodes: None,
            state: ("Failed", "BackoffLimitExceeded"),
            creates: &[],
            deletes: &["j-master-0", "j-worker-0"],
            next: Next::AwaitChange,
        },
        Case {
            name: "past activeDeadlineSeconds the job fails and its pods stop",
            job: job(
                1,
                "OnFailure",
                json!({"activeDeadlineSeconds": 20}),
                running(),
            ),
            pods: all_running(),
            nodes: None,
            state: ("Failed", "DeadlineExceeded"),
            creates: &[],
            deletes: &["j-master-0", "j-worker-0"],
            next: Next::AwaitChange,
        },
        Case {
            name: "before the deadline the next look is when it expires",
            job: job(
                1,
                "OnFailure",
                json!({"activeDeadlineSeconds": 35}),
                running(),
            ),
            pods: all_running(),
            nodes: None,
            state: ("Running", "PyTorchJobRunning"),
            creates: &[],
            deletes: &[],
            next: Next::Requeue(Duration::from_secs(5)),
        },
        Case {
            name: "a suspended job has no pods",
            job: job(1, "OnFailure", json!({"suspend": true}), running()),
            pods: all_running(),
            nodes: None,
            state: ("Suspended", "PyTorchJobSuspended"),
            creates: &[],
            deletes: &["j-master-0", "j-worker-0"],
            next: Next::AwaitChange,
        },
        Case {
            name: "an image that is never pulled fails the job at once",
            job: job(0, "OnFailure", json!({}), status("Created", 5, json!({}))),
            pods: vec![waiting("ErrImageNeverPull", 1)],
            nodes: None,
            state: ("Failed", "ImagePullFailed"),
            creates: &[],
            deletes: &["j-master-0"],
            next: Next::AwaitChange,
        },
        Case {
            name: "a job another controller manages is not touched",
            job: job(
                1,
                "OnFailure",
                json!({"managedBy": "kueue.x-k8s.io/multikueue"}),
                json!(null),
            ),
            pods: vec![],
            nodes: None,
            state: ("", ""),
            creates: &[],
            deletes: &[],
            next: Next::AwaitChange,
        },
        Case {
            name: "a finished job past its TTL is deleted with its pods",
            job: job(
                1,
                "OnFailure",
                json!({"ttlSecondsAfterFinished": 60}),
                status("Succeeded", 200, json!({"completionTime": at(100)})),
            ),
            pods: vec![exited("master", 0, 0, 100)],
            nodes: None,
            state: ("Succeeded", "PyTorchJobSucceeded"),
            creates: &[],
            deletes: &["j-master-0"],
            next: Next::AwaitChange,
        },
        Case {
            name: "a finished job before its TTL is looked at again when it expires",
            job: job(
                1,
                "OnFailure",
                json!({"ttlSecondsAfterFinished": 60}),
                status("Succeeded", 200, json!({"completionTime": at(15)})),
            ),
            pods: vec![exited("master", 0, 0, 15)],
            nodes: None,
            state: ("Succeeded", "PyTorchJobSucceeded"),
            creates: &[],
            deletes: &[],
            next: Next::Requeue(Duration::from_secs(45)),
        },
    ]
}

#[test]
fn the_operator_rules_as_a_table() {
    let mut wrong = Vec::new();
    for c in cases() {
        let p = plan_of(&c.job, &c.pods, c.nodes.as_deref());
        let (type_, reason) = state(&p);
        let got = (
            (type_.as_str(), reason.as_str()),
            names(&p.create_pods),
            p.delete_pods.clone(),
            p.next,
            p.needs_cluster,
        );
        let want = (
            c.state,
            c.creates.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            c.deletes.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            c.next,
            false,
        );
        if got != want {
            wrong.push(format!("{}:\n  got  {got:?}\n  want {want:?}", c.name));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_whole_gang_is_admitted_only_after_the_cluster_is_seen() {
    let j = job(1, "OnFailure", json!({}), json!(null));
    let first = plan_of(&j, &[], None);
    assert!(first.needs_cluster, "{first:?}");
    assert!(first.create_pods.is_empty() && first.create_services.is_empty());
    let second = plan_of(&j, &[], Some(&[node("4")]));
    assert!(!second.needs_cluster);
    assert_eq!(
        second.create_services.len(),
        2,
        "one headless Service per pod"
    );
    assert_eq!(
        second.status.start_time,
        Some(Time(now())),
        "the start time is the pass that created the gang"
    );
}

#[test]
fn a_waiting_gang_says_what_it_lacks_now() {
    let j = job(3, "OnFailure", json!({}), json!(null));
    let before = plan_of(&j, &[], Some(&[node("1")])).status;
    let mut waiting = j.clone();
    waiting.status = Some(before.clone());
    let after = plan_of(&waiting, &[], Some(&[node("3")])).status;
    let message = |s: &JobStatus| {
        let c = s.conditions.iter().find(|c| c.type_ == "Created");
        c.and_then(|c| c.message.clone()).unwrap_or_default()
    };
    assert!(
        message(&before).contains("only 1 of its pods fit"),
        "{before:?}"
    );
    assert!(
        message(&after).contains("only 3 of its pods fit"),
        "{after:?}"
    );
}

#[test]
fn a_gang_restart_recreates_every_pod_and_counts_the_restart() {
    let mut j = job(1, "OnFailure", json!({}), status("Running", 30, json!({})));
    j.metadata.annotations = Some([(pods::RESTART_SCOPE.to_string(), "gang".to_string())].into());
    let p = plan_of(
        &j,
        &[pod("master", 0, "Running"), exited("worker", 0, 137, 1)],
        None,
    );
    assert_eq!(p.delete_pods, ["j-master-0", "j-worker-0"]);
    assert_eq!(p.status.restart_count, Some(1));
    assert!(
        p.status.replica_statuses.values().all(|r| r.active == 0),
        "a restarting gang counts nothing active: {:?}",
        p.status.replica_statuses
    );
}

#[test]
fn the_earliest_failure_is_the_cause_and_a_killed_pod_wins_a_tie() {
    let j = job(2, "Never", json!({}), status("Running", 30, json!({})));
    // The master's "connection reset" (1) came after worker 1 was killed (137).
    let p = plan_of(
        &j,
        &[
            exited("master", 0, 1, 20),
            exited("worker", 0, 1, 20),
            exited("worker", 1, 137, 21),
        ],
        None,
    );
    let failed = p.status.conditions.last().expect("a condition");
    assert!(
        failed
            .message
            .as_deref()
            .unwrap_or("")
            .contains("j-worker-1 exited with code 137"),
        "{failed:?}"
    );
    // Same second: the killed pod is the cause, not its peers' errors.
    let p = plan_of(
        &j,
        &[exited("master", 0, 1, 20), exited("worker", 1, 137, 20)],
        None,
    );
    let failed = p.status.conditions.last().expect("a condition");
    assert!(
        failed
            .message
            .as_deref()
            .unwrap_or("")
            .contains("j-worker-1"),
        "{failed:?}"
    );
}

#[test]
fn a_failed_job_counts_its_pods_as_they_stood() {
    let j = job(
        2,
        "Never",
        json!({}),
        status(
            "Running",
            30,
            json!({"replicaStatuses": {"Master": {"active": 1}, "Worker": {"active": 2}}}),
        ),
    );
    let p = plan_of(
        &j,
        &[
            pod("master", 0, "Running"),
            exited("worker", 0, 1, 30),
            exited("worker", 1, 0, 30),
        ],
        None,
    );
    assert_eq!(state(&p).0, "Failed");
    let w = &p.status.replica_statuses["Worker"];
    let m = &p.status.replica_statuses["Master"];
    assert_eq!((m.active, m.failed), (1, 0));
    assert_eq!((w.active, w.failed, w.succeeded), (0, 1, 1));
    assert_eq!(p.status.completion_time, Some(Time(now())));
}

#[test]
fn resuming_a_suspended_job_starts_a_new_gang() {
    let suspended = json!({"conditions": [
        {"type": "Created", "status": "True", "reason": "PyTorchJobCreated"},
        {"type": "Suspended", "status": "True", "reason": "PyTorchJobSuspended"},
    ]});
    let j = job(1, "OnFailure", json!({"suspend": false}), suspended);
    let p = plan_of(&j, &[], Some(&[node("4")]));
    assert_eq!(names(&p.create_pods), ["j-master-0", "j-worker-0"]);
    let s = p
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Suspended")
        .expect("kept, False");
    assert_eq!(
        (s.status.as_str(), s.reason.as_deref()),
        ("False", Some("PyTorchJobResumed"))
    );
    assert_eq!(p.hpa, Hpa::Keep);
}

#[test]
fn a_job_without_replicas_fails_with_the_reason() {
    let mut j = job(0, "OnFailure", json!({}), json!(null));
    j.spec.pytorch_replica_specs.clear();
    let p = plan_of(&j, &[], None);
    assert_eq!(state(&p), ("Failed".into(), "PyTorchJobFailed".into()));
}

#[test]
fn a_pass_that_changes_nothing_leaves_the_status_as_stored() {
    let j = job(1, "OnFailure", json!({}), json!(null));
    let first = plan_of(&j, &[], Some(&[node("4")]));
    let mut stored = j.clone();
    stored.status = Some(first.status.clone());
    let pods = [pod("master", 0, "Pending"), pod("worker", 0, "Pending")];
    let again = plan_of(&stored, &pods, None);
    assert_eq!(again.status, first.status, "nothing to write");
    assert!(again.create_pods.is_empty() && again.delete_pods.is_empty());
}

#[test]
fn restart_policies() {
    assert!(retryable("ExitCode", 137));
    assert!(!retryable("ExitCode", 1));
    assert!(!retryable("Never", 137));
    assert!(retryable("OnFailure", 1));
    assert!(retryable("Always", 0));
}

#[test]
fn image_failures_end_the_wait() {
    let never = image_failure(&waiting("ErrImageNeverPull", 1), now()).expect("fatal at once");
    assert!(
        never.contains("j-master-0") && never.contains("ErrImageNeverPull: not here"),
        "{never}"
    );
    assert!(
        image_failure(&waiting("ImagePullBackOff", 10), now()).is_none(),
        "pulls are retried a while"
    );
    assert!(image_failure(&waiting("ImagePullBackOff", 301), now()).is_some());
    assert!(image_failure(&waiting("ContainerCreating", 1000), now()).is_none());
}
