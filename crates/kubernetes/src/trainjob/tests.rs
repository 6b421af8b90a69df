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

fn initializers_runtime() -> ClusterTrainingRuntime {
    serde_saphyr::from_str(super::api::INITIALIZERS_RUNTIME_YAML).expect("runtime")
}

fn with_dataset(dataset: serde_json::Value) -> TrainJob {
    job(json!({
        "runtimeRef": {"name": "torch-distributed-with-initializers"},
        "trainer": {"image": "img:1", "numNodes": 2},
        "initializer": {"dataset": dataset},
    }))
}

fn container_json(p: &Pod) -> serde_json::Value {
    serde_json::to_value(&p.spec.as_ref().unwrap().containers[0]).unwrap()
}

#[test]
fn the_trainjobs_initializer_reaches_its_step_and_the_claim_every_pod() {
    let j = with_dataset(json!({
        "storageUri": "s3://data/digits",
        "env": [{"name": "ENDPOINT", "value": "http://minio:9000"}, {"name": "IGNORE_PATTERNS", "value": "*.pt"}],
        "secretRef": {"name": "s3-keys"},
    }));
    let g = gang(&j, &initializers_runtime());
    let names: Vec<&str> = g.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["dataset-initializer", "model-initializer", "node"]);
    // Trainer's rules: the trainer waits for both; each initializer is one pod.
    let node = &g.jobs[2];
    assert_eq!(
        node.depends_on
            .iter()
            .map(|d| (d.job.as_str(), d.complete))
            .collect::<Vec<_>>(),
        [("dataset-initializer", true), ("model-initializer", true)]
    );
    assert_eq!((g.jobs[0].parallelism, node.parallelism), (1, 2));
    let ds = container_json(&super::pods::pod_for(&j, &g, &g.jobs[0], 0, 0, 0));
    let env: Vec<(&str, &str)> = ds["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["value"].is_string())
        .map(|e| (e["name"].as_str().unwrap(), e["value"].as_str().unwrap()))
        .collect();
    assert_eq!(
        env,
        [
            ("STORAGE_URI", "s3://data/digits"),
            ("ENDPOINT", "http://minio:9000"),
            ("IGNORE_PATTERNS", "*.pt")
        ]
    );
    assert_eq!(ds["envFrom"], json!([{"secretRef": {"name": "s3-keys"}}]));
    // Only the trainer gets the torch plugin's variables.
    assert!(!ds.to_string().contains("PET_"));
    // The model step gets nothing of the dataset's.
    let ms = container_json(&super::pods::pod_for(&j, &g, &g.jobs[1], 0, 0, 0));
    assert!(!ms.to_string().contains("STORAGE_URI"), "{ms}");
    // JobSet's claim: `initializer-<job>`, owned (whenDeleted: Delete), on every pod.
    assert_eq!(g.claims.len(), 1);
    let claim = super::pods::claim_for(&j, &g.claims[0]);
    assert_eq!(claim.metadata.name.as_deref(), Some("initializer-tj"));
    assert_eq!(claim.metadata.namespace.as_deref(), Some("ns"));
    assert_eq!(
        claim.metadata.owner_references.as_ref().map(Vec::len),
        Some(1)
    );
    assert_eq!(
        claim.metadata.labels.as_ref().unwrap()["jobset.sigs.k8s.io/jobset-name"],
        "tj"
    );
    for gj in &g.jobs {
        let vols = serde_json::to_value(&gj.template.spec.as_ref().unwrap().volumes).unwrap();
        assert_eq!(
            vols,
            json!([{"name": "initializer", "persistentVolumeClaim": {"claimName": "initializer-tj"}}]),
            "{}",
            gj.name
        );
    }
}

#[test]
fn a_trainjob_asking_for_what_the_runtime_lacks_is_refused_as_trainer_does() {
    let j = job(json!({
        "runtimeRef": {"name": "torch-distributed"},
        "initializer": {"model": {"storageUri": "s3://models/m"}},
    }));
    let why = resolve(
        &j,
        "ClusterTrainingRuntime",
        "torch-distributed",
        &runtime(json!({})).spec.spec,
    )
    .unwrap_err()
    .0;
    assert!(
        why.contains(
            "must have model-initializer job when trainJob is configured with input modelConfig"
        ),
        "{why}"
    );
    let mut rt = initializers_runtime();
    rt.spec.spec.template.spec.replicated_jobs[0].template["spec"]["template"]["spec"]
        ["containers"][0]["volumeMounts"] = json!([]);
    let why = resolve(
        &with_dataset(json!({"storageUri": "s3://b/p"})),
        "ClusterTrainingRuntime",
        "x",
        &rt.spec.spec,
    )
    .unwrap_err()
    .0;
    assert!(
        why.contains(
            "must have volumeMount with name - initializer in container dataset-initializer"
        ),
        "{why}"
    );
}

#[test]
fn hugging_face_is_refused_by_name_for_switchyards_initializer() {
    let why = resolve(
        &with_dataset(json!({"storageUri": "hf://tatsu-lab/alpaca"})),
        "ClusterTrainingRuntime",
        "torch-distributed-with-initializers",
        &initializers_runtime().spec.spec,
    )
    .unwrap_err()
    .0;
    assert!(why.contains("hf://tatsu-lab/alpaca"), "{why}");
    assert!(why.contains("spec.initializer.dataset.storageUri"), "{why}");
    // Another image (Trainer's own initializer) is left to fetch it.
    let mut rt = initializers_runtime();
    rt.spec.spec.template.spec.replicated_jobs[0].template["spec"]["template"]["spec"]
        ["containers"][0]["command"] = json!(["python", "-m", "pkg.initializers.dataset"]);
    assert!(resolve(
        &with_dataset(json!({"storageUri": "hf://tatsu-lab/alpaca"})),
        "ClusterTrainingRuntime",
        "x",
        &rt.spec.spec
    )
    .is_ok());
}

#[test]
fn the_trainer_starts_once_the_initializers_complete_and_their_failure_fails_the_job() {
    let j = with_dataset(json!({"storageUri": "s3://data/digits"}));
    let g = gang(&j, &initializers_runtime());
    let first = first_pods(&j, &g);
    let made: Vec<String> = first
        .iter()
        .map(|p| p.labels()["jobset.sigs.k8s.io/replicatedjob-name"].clone())
        .collect();
    assert_eq!(made, ["dataset-initializer", "model-initializer"]);
    // One initializer done, the other running: still no trainer.
    let mixed = vec![
        with_phase(first[0].clone(), "Succeeded", Some(0)),
        with_phase(first[1].clone(), "Running", None),
    ];
    let p = pass(&j, &g, &mixed, "2026-12-07T10:00:10Z");
    assert!(p.create_pods.is_empty(), "{:?}", p.create_pods);
    assert!(p.status.conditions.is_empty());
    let counts: Vec<(i32, i32)> = p
        .status
        .jobs_status
        .iter()
        .map(|s| (s.succeeded, s.active))
        .collect();
    // In JobSet's order: node, model-initializer, dataset-initializer.
    assert_eq!(counts, [(0, 0), (0, 1), (1, 0)]);
    // Both done: the trainer's two nodes, as a new gang (capacity read first).
    let done = vec![
        with_phase(first[0].clone(), "Succeeded", Some(0)),
        with_phase(first[1].clone(), "Succeeded", Some(0)),
    ];
    let p = pass(&j, &g, &done, "2026-12-07T10:00:20Z");
    assert!(p.needs_cluster);
    let nodes = [node()];
    let obs = Observed {
        job: &j,
        runtime: Runtime::Resolved(&g),
        pods: &done,
        services: &[],
        cluster: Some((&nodes, &done)),
    };
    let p = plan::plan(&obs, at("2026-12-07T10:00:20Z"), Duration::from_secs(10));
    let trainer: Vec<String> = p.create_pods.iter().map(|p| p.name_any()).collect();
    assert_eq!(trainer.len(), 2);
    assert!(
        trainer.iter().all(|n| n.starts_with("tj-node-0-")),
        "{trainer:?}"
    );
    assert_eq!(
        p.create_claims.len(),
        1,
        "the claim is made (again, idempotently) with pods"
    );
    // An initializer that fails (backoffLimit 0 here) fails the job as JobSet names it.
    let mut rt = initializers_runtime();
    rt.spec.spec.template.spec.replicated_jobs[0].template["spec"]["backoffLimit"] = json!(0);
    let g = gang(&j, &rt);
    let failed = vec![
        with_phase(first[0].clone(), "Failed", Some(1)),
        with_phase(first[1].clone(), "Succeeded", Some(0)),
    ];
    let p = pass(&j, &g, &failed, "2026-12-07T10:00:20Z");
    assert_eq!(
        condition(&p, "Failed"),
        Some((
            "True".into(),
            "FailedJobs".into(),
            "jobset failed due to one or more job failures (first failed job: tj-dataset-initializer-0)".into()
        ))
    );
    assert!(p.create_pods.is_empty());
}

#[test]
fn dependencies_must_name_an_earlier_job() {
    let refused = |depends_on: serde_json::Value| {
        let mut rt = initializers_runtime();
        rt.spec.spec.template.spec.replicated_jobs[2].depends_on = Some(vec![depends_on]);
        let j = with_dataset(json!({}));
        resolve(&j, "ClusterTrainingRuntime", "x", &rt.spec.spec)
            .unwrap_err()
            .0
    };
    let why = refused(json!({"name": "nope", "status": "Complete"}));
    assert!(why.contains("depends on \"nope\""), "{why}");
    let why = refused(json!({"name": "dataset-initializer", "status": "Done"}));
    assert!(why.contains("Complete and Ready"), "{why}");
}

#[test]
fn a_suspend_keeps_what_finished_and_the_resume_runs_only_the_rest() {
    let mut j = with_dataset(json!({"storageUri": "s3://data/digits"}));
    let g = gang(&j, &initializers_runtime());
    let inits = first_pods(&j, &g);
    let trainer_pod = |i| super::pods::pod_for(&j, &g, &g.jobs[2], i, 0, 0);
    let pods = vec![
        with_phase(inits[0].clone(), "Succeeded", Some(0)),
        with_phase(inits[1].clone(), "Succeeded", Some(0)),
        with_phase(trainer_pod(0), "Running", None),
        with_phase(trainer_pod(1), "Running", None),
    ];
    j.spec.suspend = Some(true);
    let p = pass(&j, &g, &pods, "2026-12-07T10:01:00Z");
    assert_eq!(
        condition(&p, "Suspended").map(|c| c.1),
        Some("Suspended".into())
    );
    let mut deleted = p.delete_pods.clone();
    deleted.sort();
    let mut running: Vec<String> = pods[2..].iter().map(|p| p.name_any()).collect();
    running.sort();
    assert_eq!(deleted, running, "only the trainer's running pods go");
    let counts: Vec<(&str, i32, i32)> = p
        .status
        .jobs_status
        .iter()
        .map(|s| (s.name.as_str(), s.succeeded, s.suspended))
        .collect();
    assert_eq!(
        counts,
        [
            ("node", 0, 1),
            ("model-initializer", 1, 0),
            ("dataset-initializer", 1, 0)
        ]
    );
    // Resumed: the initializers stay done; only the trainer's pods are made.
    j.status = Some(p.status);
    j.spec.suspend = Some(false);
    let nodes = [node()];
    let obs = Observed {
        job: &j,
        runtime: Runtime::Resolved(&g),
        pods: &pods[..2],
        services: &[],
        cluster: Some((&nodes, &pods[..2])),
    };
    let p = plan::plan(&obs, at("2026-12-07T10:02:00Z"), Duration::from_secs(10));
    let made: Vec<String> = p
        .create_pods
        .iter()
        .map(|p| p.labels()["jobset.sigs.k8s.io/replicatedjob-name"].clone())
        .collect();
    assert_eq!(made, ["node", "node"]);
}

#[test]
fn claims_are_deleted_with_the_job_unless_the_policy_says_retain() {
    let policy = |p: serde_json::Value| {
        let mut rt = initializers_runtime();
        let mut policy = json!({"templates": [{"metadata": {"name": "initializer"},
                                               "spec": {"accessModes": ["ReadWriteOnce"]}}]});
        if !p.is_null() {
            policy["retentionPolicy"] = p;
        }
        rt.spec
            .spec
            .template
            .spec
            .other
            .insert("volumeClaimPolicies".into(), json!([policy]));
        gang(&with_dataset(json!({"storageUri": "s3://b/p"})), &rt).claims[0].owned
    };
    // JobSet's default (its webhook, Trainer's CRD) is Delete.
    assert!(policy(serde_json::Value::Null));
    assert!(policy(json!({})));
    assert!(policy(json!({"whenDeleted": "Delete"})));
    assert!(!policy(json!({"whenDeleted": "Retain"})));
}

#[test]
fn a_suspended_job_counts_a_trainer_not_started_yet_as_nothing() {
    let mut j = with_dataset(json!({"storageUri": "s3://data/digits"}));
    j.spec.suspend = Some(true);
    let g = gang(&j, &initializers_runtime());
    let p = pass(&j, &g, &[], "2026-12-07T10:00:05Z");
    let counts: Vec<(&str, i32)> = p
        .status
        .jobs_status
        .iter()
        .map(|s| (s.name.as_str(), s.suspended))
        .collect();
    assert_eq!(
        counts,
        [
            ("node", 0),
            ("model-initializer", 1),
            ("dataset-initializer", 1)
        ]
    );
}

#[test]
fn a_pod_deleted_while_it_ran_is_not_a_failure() {
    let rt = runtime(json!({"backoffLimit": 0}));
    let j = two_nodes();
    let g = gang(&j, &rt);
    let pods = first_pods(&j, &g);
    let mut leaving = with_phase(pods[0].clone(), "Failed", Some(143));
    leaving.metadata.deletion_timestamp =
        serde_json::from_value(json!("2026-12-07T10:00:20Z")).ok();
    let p = pass(
        &j,
        &g,
        &[leaving, with_phase(pods[1].clone(), "Running", None)],
        "2026-12-07T10:00:21Z",
    );
    assert!(
        condition(&p, "Failed").is_none(),
        "{:?}",
        p.status.conditions
    );
}

#[test]
fn pods_stuck_terminating_are_said_with_what_to_do() {
    let j = two_nodes();
    let g = gang(&j, &runtime(json!({})));
    let pods = first_pods(&j, &g);
    let deleted_at = |t: &str| {
        let mut p = with_phase(pods[0].clone(), "Running", None);
        p.metadata.deletion_timestamp = serde_json::from_value(json!(t)).ok();
        p.metadata.deletion_grace_period_seconds = Some(30);
        vec![p, with_phase(pods[1].clone(), "Running", None)]
    };
    // Within its grace period and a minute more: waited for quietly.
    let p = pass(
        &j,
        &g,
        &deleted_at("2026-12-07T10:00:00Z"),
        "2026-12-07T10:01:20Z",
    );
    assert_eq!(p.warning, None);
    assert!(p.create_pods.is_empty());
    let p = pass(
        &j,
        &g,
        &deleted_at("2026-12-07T10:00:00Z"),
        "2026-12-07T10:01:31Z",
    );
    let (reason, message) = p.warning.expect("said");
    assert_eq!(reason, "PodsStuckTerminating");
    assert!(
        message.contains(&pods[0].name_any()) && message.contains("--force"),
        "{message}"
    );
}
