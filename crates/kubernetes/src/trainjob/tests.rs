//! The TrainJob rules as tables: a runtime and a job resolved, passes
//! planned over pods in given states, without an API server.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde_json::json;

use super::api::{ClusterTrainingRuntime, TrainJob};
use super::plan::{self, Observed, Runtime};
use super::resolve::{resolve, Gang};
use crate::plan::Next;

fn runtime(extra: serde_json::Value) -> ClusterTrainingRuntime {
    let mut rt: ClusterTrainingRuntime =
        serde_saphyr::from_str(super::api::TORCH_RUNTIME_YAML).expect("runtime");
    if let Some(fp) = extra.get("failurePolicy") {
        rt.spec.spec.template.spec.failure_policy = serde_json::from_value(fp.clone()).ok();
    }
    if let Some(b) = extra.get("backoffLimit") {
        rt.spec.spec.template.spec.replicated_jobs[0].template["spec"]["backoffLimit"] = b.clone();
    }
    rt
}

fn job(spec: serde_json::Value) -> TrainJob {
    serde_json::from_value(json!({
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": "tj", "namespace": "ns", "uid": "u-1",
                     "creationTimestamp": "2026-12-07T10:00:00Z"},
        "spec": spec,
    }))
    .expect("TrainJob")
}

fn gang(j: &TrainJob, rt: &ClusterTrainingRuntime) -> Gang {
    resolve(
        j,
        "ClusterTrainingRuntime",
        "torch-distributed",
        &rt.spec.spec,
    )
    .expect("resolves")
}

fn at(s: &str) -> Timestamp {
    s.parse().expect("time")
}

fn env_of(pod: &Pod) -> Vec<(String, String)> {
    pod.spec.as_ref().unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| {
            let v = e.value.clone().unwrap_or_else(|| {
                e.value_from
                    .as_ref()
                    .and_then(|f| f.field_ref.as_ref())
                    .map(|f| format!("fieldRef:{}", f.field_path))
                    .unwrap_or_default()
            });
            (e.name.clone(), v)
        })
        .collect()
}

fn two_nodes() -> TrainJob {
    job(json!({
        "runtimeRef": {"name": "torch-distributed"},
        "trainer": {"image": "img:1", "command": ["torchrun", "train.py"], "numNodes": 2,
                    "env": [{"name": "EPOCHS", "value": "3"}],
                    "resourcesPerNode": {"requests": {"cpu": "1500m"}}},
    }))
}

fn node() -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": "n"},
        "status": {"allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"}},
    }))
    .expect("node")
}

/// The pods a first pass makes, with the cluster read.
fn first_pods(j: &TrainJob, g: &Gang) -> Vec<Pod> {
    let nodes = [node()];
    let obs = Observed {
        job: j,
        runtime: Runtime::Resolved(g),
        pods: &[],
        services: &[],
        cluster: Some((&nodes, &[])),
    };
    plan::plan(&obs, at("2026-12-07T10:00:01Z"), Duration::from_secs(10)).create_pods
}

fn with_phase(mut p: Pod, phase: &str, exit: Option<i32>) -> Pod {
    let mut status = json!({"phase": phase, "conditions": [{"type": "Ready", "status": if phase == "Running" {"True"} else {"False"}}]});
    if let Some(code) = exit {
        status["containerStatuses"] = json!([{"name": "node", "image": "img", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "finishedAt": "2026-12-07T10:00:30Z"}}}]);
    }
    p.status = serde_json::from_value(status).ok();
    p
}

fn pass(j: &TrainJob, g: &Gang, pods: &[Pod], now: &str) -> plan::Plan {
    let obs = Observed {
        job: j,
        runtime: Runtime::Resolved(g),
        pods,
        services: &[],
        cluster: None,
    };
    plan::plan(&obs, at(now), Duration::from_secs(10))
}

fn condition(p: &plan::Plan, t: &str) -> Option<(String, String, String)> {
    p.status
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[test]
fn the_torch_plugin_gives_each_node_trainers_variables_names_and_port() {
    let j = two_nodes();
    let g = gang(&j, &runtime(json!({})));
    let pods = first_pods(&j, &g);
    assert_eq!(pods.len(), 2);
    let p = &pods[1];
    assert!(p.name_any().starts_with("tj-node-0-1-"), "{}", p.name_any());
    let spec = p.spec.as_ref().unwrap();
    assert_eq!(spec.hostname.as_deref(), Some("tj-node-0-1"));
    assert_eq!(spec.subdomain.as_deref(), Some("tj"));
    assert_eq!(spec.restart_policy.as_deref(), Some("OnFailure"));
    let c = &spec.containers[0];
    assert_eq!(
        (c.name.as_str(), c.image.as_deref()),
        ("node", Some("img:1"))
    );
    assert_eq!(
        c.command.as_deref(),
        Some(&["torchrun".to_string(), "train.py".to_string()][..])
    );
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 29500);
    assert_eq!(
        env_of(p),
        [
            ("EPOCHS", "3"),
            ("PET_NNODES", "2"),
            // 1.5 CPUs requested, rounded up.
            ("PET_NPROC_PER_NODE", "2"),
            (
                "PET_NODE_RANK",
                "fieldRef:metadata.annotations['batch.kubernetes.io/job-completion-index']"
            ),
            ("PET_MASTER_ADDR", "tj-node-0-0.tj"),
            ("PET_MASTER_PORT", "29500"),
            (
                "JOB_COMPLETION_INDEX",
                "fieldRef:metadata.labels['batch.kubernetes.io/job-completion-index']"
            ),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let labels = p.labels();
    assert_eq!(labels["jobset.sigs.k8s.io/jobset-name"], "tj");
    assert_eq!(labels["jobset.sigs.k8s.io/replicatedjob-name"], "node");
    assert_eq!(labels["jobset.sigs.k8s.io/restart-attempt"], "0");
    assert_eq!(labels["batch.kubernetes.io/job-completion-index"], "1");
    assert_eq!(
        p.annotations()["batch.kubernetes.io/job-completion-index"],
        "1"
    );
    // The same pass again names the same pods.
    assert_eq!(first_pods(&j, &g)[1].name_any(), p.name_any());
}

#[test]
fn processes_per_node_follow_trainers_defaults() {
    let rt = runtime(json!({}));
    let nproc = |trainer: serde_json::Value| {
        let j = job(json!({"runtimeRef": {"name": "torch-distributed"}, "trainer": trainer}));
        let g = gang(&j, &rt);
        env_of(&super::pods::pod_for(&j, &g, &g.jobs[0], 0, 0, 0))
            .into_iter()
            .find(|(k, _)| k == "PET_NPROC_PER_NODE")
            .map(|(_, v)| v)
            .unwrap()
    };
    assert_eq!(nproc(json!({})), "1");
    assert_eq!(nproc(json!({"numProcPerNode": 4})), "4");
    assert_eq!(
        nproc(json!({"resourcesPerNode": {"limits": {"cpu": "3"}}})),
        "3"
    );
    assert_eq!(
        nproc(json!({"resourcesPerNode": {"limits": {"nvidia.com/gpu": "2"}}})),
        "auto"
    );
}

#[test]
fn runtime_patches_merge_into_the_node_pods() {
    let j = job(json!({
        "runtimeRef": {"name": "torch-distributed"},
        "runtimePatches": [{"manager": "example.com/me", "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [
            {"name": "node", "template": {"spec": {"template": {
                "metadata": {"labels": {"team": "a"}},
                "spec": {"nodeSelector": {"pool": "cpu"},
                         "containers": [{"name": "node", "env": [{"name": "FROM_PATCH", "value": "1"}]}]}}}}}]}}}}],
    }));
    let pods = first_pods(&j, &gang(&j, &runtime(json!({}))));
    let p = &pods[0];
    assert_eq!(p.labels()["team"], "a");
    assert_eq!(
        p.spec.as_ref().unwrap().node_selector.as_ref().unwrap()["pool"],
        "cpu"
    );
    assert!(env_of(p).iter().any(|(k, v)| k == "FROM_PATCH" && v == "1"));
}

#[test]
fn runtimes_switchyard_does_not_run_are_named_in_the_failure() {
    let j = job(json!({"runtimeRef": {"name": "deepspeed-distributed"}}));
    let mut rt = runtime(json!({}));
    rt.spec.spec.ml_policy =
        serde_json::from_value(json!({"numNodes": 1, "mpi": {"numProcPerNode": 1}})).ok();
    let why = resolve(
        &j,
        "ClusterTrainingRuntime",
        "deepspeed-distributed",
        &rt.spec.spec,
    )
    .expect_err("mpi refused")
    .0;
    assert!(
        why.contains("ClusterTrainingRuntime/deepspeed-distributed") && why.contains("mpi"),
        "{why}"
    );
    let obs = Observed {
        job: &j,
        runtime: Runtime::Unsupported(&why),
        pods: &[],
        services: &[],
        cluster: None,
    };
    let p = plan::plan(&obs, at("2026-12-07T10:00:01Z"), Duration::from_secs(10));
    assert_eq!(
        condition(&p, "Failed"),
        Some(("True".into(), "TrainingRuntimeNotSupported".into(), why))
    );
    assert!(p.create_pods.is_empty());
}

#[test]
fn a_running_job_has_no_condition_and_a_finished_one_is_complete() {
    let j = two_nodes();
    let g = gang(&j, &runtime(json!({})));
    let pods = first_pods(&j, &g);
    let running: Vec<Pod> = pods
        .iter()
        .cloned()
        .map(|p| with_phase(p, "Running", None))
        .collect();
    let p = pass(&j, &g, &running, "2026-12-07T10:00:10Z");
    assert!(p.status.conditions.is_empty(), "{:?}", p.status.conditions);
    assert!(p.create_pods.is_empty() && p.delete_pods.is_empty());
    assert_eq!(
        (
            p.status.jobs_status[0].active,
            p.status.jobs_status[0].ready
        ),
        (1, 1)
    );
    let done: Vec<Pod> = pods
        .iter()
        .cloned()
        .map(|p| with_phase(p, "Succeeded", Some(0)))
        .collect();
    let p = pass(&j, &g, &done, "2026-12-07T10:00:40Z");
    assert_eq!(
        condition(&p, "Complete"),
        Some((
            "True".into(),
            "AllJobsCompleted".into(),
            "jobset completed successfully".into()
        ))
    );
    assert_eq!(p.status.jobs_status[0].succeeded, 1);
    assert_eq!(p.status.jobs_status[0].active, 0);
    assert_eq!(p.next, Next::AwaitChange);
}

#[test]
fn a_failed_job_restarts_the_whole_gang_until_max_restarts() {
    let rt = runtime(json!({"failurePolicy": {"maxRestarts": 1}, "backoffLimit": 0}));
    let mut j = two_nodes();
    let g = gang(&j, &rt);
    let pods = first_pods(&j, &g);
    let failed = vec![
        with_phase(pods[0].clone(), "Running", None),
        with_phase(pods[1].clone(), "Failed", Some(1)),
    ];
    let p = pass(&j, &g, &failed, "2026-12-07T10:00:40Z");
    assert_eq!(p.restarts.as_ref().map(|r| r.0), Some(1));
    assert!(
        p.restarts.as_ref().unwrap().1.contains("backoff limit 0"),
        "{:?}",
        p.restarts
    );
    assert_eq!(p.delete_pods.len(), 2);
    assert!(condition(&p, "Failed").is_none());

    // The next attempt's pods carry restart-attempt 1; its failure is the last.
    j.metadata.annotations = Some([(plan::RESTARTS.to_string(), "1".to_string())].into());
    // The next attempt waits for the last one's pods to be gone (same host names).
    let p = pass(&j, &g, &failed, "2026-12-07T10:00:41Z");
    assert!(p.create_pods.is_empty() && !p.needs_cluster);
    assert_eq!(p.delete_pods.len(), 2);
    let again = first_pods(&j, &g);
    assert_eq!(again[0].labels()["jobset.sigs.k8s.io/restart-attempt"], "1");
    assert_ne!(again[0].name_any(), pods[0].name_any());
    let failed = vec![
        with_phase(again[0].clone(), "Failed", Some(1)),
        with_phase(again[1].clone(), "Running", None),
    ];
    let p = pass(&j, &g, &failed, "2026-12-07T10:01:40Z");
    assert_eq!(
        condition(&p, "Failed"),
        Some((
            "True".into(),
            "ReachedMaxRestarts".into(),
            "jobset failed due to reaching max number of restarts (first failed job: tj-node-0)"
                .into()
        ))
    );
    assert_eq!(p.delete_pods, vec![again[1].name_any()]);
    assert_eq!(p.status.jobs_status[0].failed, 1);

    // Without a failure policy, the first failed Job fails the TrainJob.
    let rt = runtime(json!({"backoffLimit": 0}));
    let j = two_nodes();
    let g = gang(&j, &rt);
    let pods = first_pods(&j, &g);
    let p = pass(
        &j,
        &g,
        &[with_phase(pods[0].clone(), "Failed", Some(1))],
        "2026-12-07T10:00:40Z",
    );
    assert_eq!(
        condition(&p, "Failed").map(|c| c.1),
        Some("FailedJobs".to_string())
    );
}

#[test]
fn in_place_restarts_count_against_the_backoff_limit() {
    let rt = runtime(json!({"backoffLimit": 2}));
    let j = two_nodes();
    let g = gang(&j, &rt);
    let pods = first_pods(&j, &g);
    let restarted = |n: i32| {
        let mut p = with_phase(pods[0].clone(), "Running", None);
        p.status.as_mut().unwrap().container_statuses = serde_json::from_value(json!([
            {"name": "node", "image": "i", "imageID": "", "ready": true, "restartCount": n}
        ]))
        .ok();
        vec![p, with_phase(pods[1].clone(), "Running", None)]
    };
    // As the Job controller: OnFailure restarts fail the Job on reaching the
    // limit (failed pods on passing it).
    assert!(condition(
        &pass(&j, &g, &restarted(1), "2026-12-07T10:00:40Z"),
        "Failed"
    )
    .is_none());
    assert_eq!(
        condition(
            &pass(&j, &g, &restarted(2), "2026-12-07T10:00:40Z"),
            "Failed"
        )
        .map(|c| c.1),
        Some("FailedJobs".to_string())
    );
}

#[test]
fn a_replacement_pod_never_takes_a_name_still_in_use() {
    // restartPolicy Never, backoffLimit 6: a failed pod is replaced; pods
    // numbered 0 and 2 remain (1 was deleted by someone): the next is 3.
    let mut rt = runtime(json!({}));
    rt.spec.spec.template.spec.replicated_jobs[0].template["spec"]["template"]["spec"]
        ["restartPolicy"] = json!("Never");
    let j = job(json!({"runtimeRef": {"name": "torch-distributed"}, "trainer": {"numNodes": 1}}));
    let g = gang(&j, &rt);
    let pod = |seq| super::pods::pod_for(&j, &g, &g.jobs[0], 0, 0, seq);
    let left = vec![
        with_phase(pod(0), "Failed", Some(1)),
        with_phase(pod(2), "Failed", Some(1)),
    ];
    let p = pass(&j, &g, &left, "2026-12-07T10:00:40Z");
    assert!(condition(&p, "Failed").is_none(), "2 failures, limit 6");
    assert_eq!(p.create_pods.len(), 1);
    assert_eq!(p.create_pods[0].name_any(), pod(3).name_any());
    assert!(![pod(0), pod(2)]
        .iter()
        .any(|q| q.name_any() == p.create_pods[0].name_any()));
}

#[test]
fn suspend_removes_the_gang_and_resume_restarts_the_deadline() {
    let mut j = job(
        json!({"runtimeRef": {"name": "torch-distributed"}, "suspend": true,
                          "activeDeadlineSeconds": 60, "trainer": {"numNodes": 2}}),
    );
    let g = gang(&j, &runtime(json!({})));
    let pods: Vec<Pod> = (0..2)
        .map(|i| {
            with_phase(
                super::pods::pod_for(&j, &g, &g.jobs[0], i, 0, 0),
                "Running",
                None,
            )
        })
        .collect();
    let p = pass(&j, &g, &pods, "2026-12-07T10:00:30Z");
    assert_eq!(
        condition(&p, "Suspended"),
        Some((
            "True".into(),
            "Suspended".into(),
            "TrainJob is suspended".into()
        ))
    );
    assert_eq!(p.delete_pods.len(), 2);
    assert_eq!(p.status.jobs_status[0].suspended, 1);

    // Resumed at 10:05: the 60 s deadline counts from then, not from creation.
    j.status = Some(p.status);
    j.spec.suspend = Some(false);
    let p = pass(&j, &g, &[], "2026-12-07T10:05:00Z");
    assert_eq!(
        condition(&p, "Suspended"),
        Some((
            "False".into(),
            "Resumed".into(),
            "TrainJob is resumed".into()
        ))
    );
    assert!(condition(&p, "Failed").is_none());
    assert!(p.needs_cluster, "the gang is admitted again");
    j.status = Some(p.status);
    let p = pass(&j, &g, &[], "2026-12-07T10:06:01Z");
    assert_eq!(
        condition(&p, "Failed"),
        Some((
            "True".into(),
            "DeadlineExceeded".into(),
            "TrainJob exceeded its active deadline".into()
        ))
    );
}

#[test]
fn a_gang_that_does_not_fit_waits_whole_and_other_controllers_jobs_are_left() {
    let j = job(json!({"runtimeRef": {"name": "torch-distributed"},
                      "trainer": {"numNodes": 3, "resourcesPerNode": {"requests": {"cpu": "3"}}}}));
    let g = gang(&j, &runtime(json!({})));
    let nodes = [node()];
    let obs = Observed {
        job: &j,
        runtime: Runtime::Resolved(&g),
        pods: &[],
        services: &[],
        cluster: Some((&nodes, &[])),
    };
    let p = plan::plan(&obs, at("2026-12-07T10:00:01Z"), Duration::from_secs(10));
    assert!(p.create_pods.is_empty(), "9 CPUs do not fit 8");
    assert!(p.status.conditions.is_empty());

    let mut k = two_nodes();
    k.spec.managed_by = Some("kueue.x-k8s.io/multikueue".into());
    let p = pass(&k, &g, &[], "2026-12-07T10:00:01Z");
    assert!(!p.needs_cluster && p.create_pods.is_empty() && p.status.conditions.is_empty());
}
