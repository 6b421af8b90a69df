//! The PyTorchJob operator against a real kube-apiserver + etcd (see
//! cluster/mod.rs). One control plane for all scenarios, one namespace each.

mod cluster;

use std::time::Duration;

use cluster::{eventually, set_phase, Cluster};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt, ResourceExt};
use serde_json::json;
use switchyard_kubernetes::crd::PyTorchJob;
use switchyard_kubernetes::{operator, OperatorConfig};

fn job(name: &str, workers: i32, policy: &str, run_policy: serde_json::Value) -> PyTorchJob {
    let template = json!({"spec": {"containers": [{
        "name": "pytorch", "image": "pytorch/pytorch:2.5.1-cpu",
        "command": ["python", "train.py"],
        "env": [{"name": "SM_MODEL_DIR", "value": "/models"}],
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
    }]}});
    serde_json::from_value(json!({
        "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
        "metadata": {"name": name},
        "spec": {
            "pytorchReplicaSpecs": {
                "Master": {"replicas": 1, "restartPolicy": policy, "template": template},
                "Worker": {"replicas": workers, "restartPolicy": policy, "template": template},
            },
            "runPolicy": run_policy,
        },
    }))
    .unwrap()
}

fn env_of(p: &Pod) -> std::collections::BTreeMap<String, String> {
    p.spec.as_ref().unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

fn condition(j: &PyTorchJob) -> Option<String> {
    let s = j.status.as_ref()?;
    [
        "Failed",
        "Succeeded",
        "Suspended",
        "Restarting",
        "Running",
        "Created",
    ]
    .iter()
    .find(|t| s.has(t))
    .map(|t| t.to_string())
}

/// The job's Failed condition (it must have one).
fn failed_condition(j: &PyTorchJob) -> switchyard_kubernetes::crd::JobCondition {
    j.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Failed"))
        .cloned()
        .expect("a Failed condition")
}

async fn wait_condition(jobs: &Api<PyTorchJob>, name: &str, want: &str) -> PyTorchJob {
    eventually(&format!("{name} to be {want}"), 30, || async {
        let j = jobs.get(name).await.ok()?;
        (condition(&j).as_deref() == Some(want)).then_some(j)
    })
    .await
}

async fn pods_of(pods: &Api<Pod>, job: &str) -> Vec<Pod> {
    let mut v = pods
        .list(&ListParams::default().labels(&format!("training.kubeflow.org/job-name={job}")))
        .await
        .unwrap()
        .items;
    v.sort_by_key(|p| p.name_any());
    v
}

async fn wait_pods(pods: &Api<Pod>, job: &str, n: usize) -> Vec<Pod> {
    eventually(&format!("{n} pods of {job}"), 30, || async {
        let v = pods_of(pods, job).await;
        (v.len() == n && v.iter().all(|p| p.metadata.deletion_timestamp.is_none())).then_some(v)
    })
    .await
}

struct Scenario {
    jobs: Api<PyTorchJob>,
    pods: Api<Pod>,
    svcs: Api<Service>,
}

async fn scenario(c: &Cluster, client: &Client, ns: &str) -> Scenario {
    c.namespace(ns).await;
    Scenario {
        jobs: Api::namespaced(client.clone(), ns),
        pods: Api::namespaced(client.clone(), ns),
        svcs: Api::namespaced(client.clone(), ns),
    }
}

fn spawn_operator(client: Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let config = OperatorConfig {
            namespace: None,
            resync: Duration::from_secs(1),
        };
        if let Err(e) = operator::run(client, config).await {
            panic!("operator: {e}");
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_reconciles_pytorchjobs_on_a_real_api_server() {
    let c = Cluster::start().await;
    let client = c.client().await.unwrap();
    // The CRD generated from the Rust types installs and is served.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &PyTorchJob::crd())
        .await
        .unwrap();
    eventually("the CRD to be established", 30, || async {
        let crd = crds.get("pytorchjobs.kubeflow.org").await.ok()?;
        let ok = crd
            .status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        ok.then_some(())
    })
    .await;
    c.add_node("node-a", "8", "32Gi", 0).await;
    // The operator runs with exactly the rights deploy/operator.yaml grants it.
    c.grant("operator.yaml", "switchyard-operator", None).await;
    let op_client =
        cluster::client_from(&c.kubeconfig_for("switchyard-operator", cluster::OPERATOR_TOKEN))
            .await
            .unwrap();
    let mut op = spawn_operator(op_client.clone());

    // 1. Master + 2 workers: 3 pods, 3 services, the environment; master succeeds → job succeeds, workers stopped.
    let s = scenario(&c, &client, "basic").await;
    s.jobs
        .create(
            &PostParams::default(),
            &job("ddp", 2, "OnFailure", json!({})),
        )
        .await
        .unwrap();
    let pods = wait_pods(&s.pods, "ddp", 3).await;
    let names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
    assert_eq!(names, ["ddp-master-0", "ddp-worker-0", "ddp-worker-1"]);
    let svcs = s.svcs.list(&ListParams::default()).await.unwrap().items;
    let mut svc_names: Vec<String> = svcs.iter().map(|x| x.name_any()).collect();
    svc_names.sort();
    assert_eq!(svc_names, names);
    assert_eq!(
        svcs[0].spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some("None")
    );
    for (rank, p) in pods.iter().enumerate() {
        let env = env_of(p);
        assert_eq!(env["MASTER_ADDR"], "ddp-master-0");
        assert_eq!(env["MASTER_PORT"], "23456");
        assert_eq!(env["WORLD_SIZE"], "3");
        assert_eq!(env["RANK"], rank.to_string());
        assert_eq!(env["PET_NODE_RANK"], rank.to_string());
        assert_eq!(env["PET_NNODES"], "3");
        assert_eq!(env["SM_HOSTS"], r#"["algo-1","algo-2","algo-3"]"#);
        assert_eq!(env["SM_CURRENT_HOST"], format!("algo-{}", rank + 1));
        assert_eq!(
            env["SM_MODEL_DIR"], "/models",
            "the template's own value wins"
        );
        assert_eq!(p.owner_references()[0].kind, "PyTorchJob");
    }
    for p in &names {
        set_phase(&s.pods, p, "Running", None).await;
    }
    let j = wait_condition(&s.jobs, "ddp", "Running").await;
    assert_eq!(j.status.unwrap().replica_statuses["Worker"].active, 2);
    set_phase(&s.pods, "ddp-master-0", "Succeeded", Some(0)).await;
    let j = wait_condition(&s.jobs, "ddp", "Succeeded").await;
    let st = j.status.unwrap();
    assert!(st.completion_time.is_some() && st.start_time.is_some());
    assert!(st
        .conditions
        .iter()
        .any(|c| c.type_ == "Running" && c.status == "False"));
    // Workers still running when the master finished are stopped.
    let left = wait_pods(&s.pods, "ddp", 1).await;
    assert_eq!(
        left[0].name_any(),
        "ddp-master-0",
        "cleanPodPolicy None keeps the finished master"
    );

    // 2. ExitCode: 137 restarts the gang (Restarting), 1 fails the job.
    let s = scenario(&c, &client, "exitcode").await;
    s.jobs
        .create(
            &PostParams::default(),
            &job("ec", 1, "ExitCode", json!({"backoffLimit": 3})),
        )
        .await
        .unwrap();
    let first = wait_pods(&s.pods, "ec", 2).await;
    let old_uid = first[1].uid();
    set_phase(&s.pods, "ec-worker-0", "Failed", Some(137)).await;
    let j = wait_condition(&s.jobs, "ec", "Restarting").await;
    assert_eq!(j.status.as_ref().unwrap().restart_count, Some(1));
    assert!(j.status.unwrap().conditions.iter().any(|c| c
        .message
        .as_deref()
        .unwrap_or("")
        .contains("exited with code 137")));
    let again = eventually("ec-worker-0 recreated", 30, || async {
        let v = pods_of(&s.pods, "ec").await;
        (v.len() == 2 && v[1].uid() != old_uid && v[1].metadata.deletion_timestamp.is_none())
            .then_some(v)
    })
    .await;
    assert_eq!(env_of(&again[1])["RANK"], "1");
    set_phase(&s.pods, "ec-worker-0", "Failed", Some(1)).await;
    let j = wait_condition(&s.jobs, "ec", "Failed").await;
    let failed = failed_condition(&j);
    assert!(failed.message.unwrap().contains("exited with code 1"));

    // 3. backoffLimit exhausted → Failed.
    let s = scenario(&c, &client, "backoff").await;
    s.jobs
        .create(
            &PostParams::default(),
            &job("bo", 1, "OnFailure", json!({"backoffLimit": 1})),
        )
        .await
        .unwrap();
    wait_pods(&s.pods, "bo", 2).await;
    set_phase(&s.pods, "bo-worker-0", "Failed", Some(2)).await;
    wait_condition(&s.jobs, "bo", "Restarting").await;
    let uid = eventually("bo-worker-0 recreated", 30, || async {
        let v = pods_of(&s.pods, "bo").await;
        let p = v.iter().find(|p| p.name_any() == "bo-worker-0")?;
        (p.status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("Pending")
            == "Pending")
            .then(|| p.uid())
    })
    .await;
    assert!(uid.is_some());
    set_phase(&s.pods, "bo-worker-0", "Failed", Some(2)).await;
    let j = wait_condition(&s.jobs, "bo", "Failed").await;
    let reason = failed_condition(&j).reason;
    assert_eq!(reason.as_deref(), Some("BackoffLimitExceeded"));

    // 4. activeDeadlineSeconds → Failed, pods stopped.
    let s = scenario(&c, &client, "deadline").await;
    s.jobs
        .create(
            &PostParams::default(),
            &job("dl", 1, "OnFailure", json!({"activeDeadlineSeconds": 2})),
        )
        .await
        .unwrap();
    wait_pods(&s.pods, "dl", 2).await;
    let j = wait_condition(&s.jobs, "dl", "Failed").await;
    let reason = failed_condition(&j).reason;
    assert_eq!(reason.as_deref(), Some("DeadlineExceeded"));
    wait_pods(&s.pods, "dl", 0).await;

    // 5. suspend deletes the pods; resume recreates them.
    let s = scenario(&c, &client, "suspend").await;
    s.jobs
        .create(
            &PostParams::default(),
            &job("sp", 1, "OnFailure", json!({})),
        )
        .await
        .unwrap();
    wait_pods(&s.pods, "sp", 2).await;
    let patch = |v: bool| json!({"spec": {"runPolicy": {"suspend": v}}});
    s.jobs
        .patch("sp", &PatchParams::default(), &Patch::Merge(&patch(true)))
        .await
        .unwrap();
    wait_condition(&s.jobs, "sp", "Suspended").await;
    wait_pods(&s.pods, "sp", 0).await;
    s.jobs
        .patch("sp", &PatchParams::default(), &Patch::Merge(&patch(false)))
        .await
        .unwrap();
    wait_pods(&s.pods, "sp", 2).await;
    let j = s.jobs.get("sp").await.unwrap();
    assert!(!j.status.unwrap().has("Suspended"));

    // 6. cleanPodPolicy All removes every pod once the job ends.
    let s = scenario(&c, &client, "clean").await;
    s.jobs
        .create(
            &PostParams::default(),
            &job("cl", 1, "OnFailure", json!({"cleanPodPolicy": "All"})),
        )
        .await
        .unwrap();
    wait_pods(&s.pods, "cl", 2).await;
    set_phase(&s.pods, "cl-worker-0", "Succeeded", Some(0)).await;
    set_phase(&s.pods, "cl-master-0", "Succeeded", Some(0)).await;
    wait_condition(&s.jobs, "cl", "Succeeded").await;
    wait_pods(&s.pods, "cl", 0).await;

    // 7. A gang that does not fit creates no pod until capacity appears.
    let s = scenario(&c, &client, "gang").await;
    let mut big = job("big", 3, "OnFailure", json!({}));
    for r in big.spec.pytorch_replica_specs.values_mut() {
        let c0 = &mut r.template.spec.as_mut().unwrap().containers[0];
        c0.resources = Some(serde_json::from_value(json!({"requests": {"cpu": "4", "nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}})).unwrap());
    }
    s.jobs.create(&PostParams::default(), &big).await.unwrap();
    let j = eventually("big to wait for capacity", 30, || async {
        let j = s.jobs.get("big").await.ok()?;
        let c = j
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Created")?
            .clone();
        (c.reason.as_deref() == Some("PyTorchJobWaitingForCapacity")).then_some(c)
    })
    .await;
    assert!(j.message.unwrap().contains("needs 16 CPU"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(pods_of(&s.pods, "big").await.is_empty(), "no partial gang");
    c.add_node("gpu-a", "8", "64Gi", 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        pods_of(&s.pods, "big").await.is_empty(),
        "2 GPUs are not enough for 4"
    );
    c.add_node("gpu-b", "8", "64Gi", 2).await;
    wait_pods(&s.pods, "big", 4).await;

    // 7b. Elastic: the rendezvous environment, and only the failed pod is recreated.
    let s = scenario(&c, &client, "elastic").await;
    let mut el = job("el", 2, "OnFailure", json!({}));
    el.spec.elastic_policy = Some(serde_json::from_value(json!({
        "minReplicas": 1, "maxReplicas": 3, "rdzvBackend": "c10d", "maxRestarts": 2, "nProcPerNode": 2,
    })).unwrap());
    s.jobs.create(&PostParams::default(), &el).await.unwrap();
    let pods = wait_pods(&s.pods, "el", 3).await;
    let env = env_of(&pods[2]);
    assert_eq!(env["PET_NNODES"], "1:3");
    assert_eq!(env["PET_RDZV_BACKEND"], "c10d");
    assert_eq!(env["PET_RDZV_ENDPOINT"], "el-master-0:23456");
    assert_eq!(env["PET_MAX_RESTARTS"], "2");
    assert_eq!(env["PET_NPROC_PER_NODE"], "2");
    assert_eq!(env["WORLD_SIZE"], "6");
    let uids: Vec<_> = pods.iter().map(|p| p.uid()).collect();
    set_phase(&s.pods, "el-worker-1", "Failed", Some(137)).await;
    let again = eventually("el-worker-1 alone recreated", 30, || async {
        let v = pods_of(&s.pods, "el").await;
        (v.len() == 3 && v[2].uid() != uids[2] && v[2].metadata.deletion_timestamp.is_none())
            .then_some(v)
    })
    .await;
    assert_eq!(again[0].uid(), uids[0], "the master was not restarted");
    assert_eq!(
        again[1].uid(),
        uids[1],
        "the healthy worker was not restarted"
    );

    // 7c. ttlSecondsAfterFinished deletes the finished job.
    let s = scenario(&c, &client, "ttl").await;
    s.jobs
        .create(
            &PostParams::default(),
            &job("tt", 0, "OnFailure", json!({"ttlSecondsAfterFinished": 1})),
        )
        .await
        .unwrap();
    wait_pods(&s.pods, "tt", 1).await;
    set_phase(&s.pods, "tt-master-0", "Succeeded", Some(0)).await;
    eventually("tt to be deleted after its TTL", 30, || async {
        s.jobs.get_opt("tt").await.ok()?.is_none().then_some(())
    })
    .await;
    wait_pods(&s.pods, "tt", 0).await;

    // 8. Restarting the operator mid-job changes nothing and loses nothing.
    let s = scenario(&c, &client, "restart").await;
    s.jobs
        .create(
            &PostParams::default(),
            &job("rs", 1, "ExitCode", json!({"backoffLimit": 5})),
        )
        .await
        .unwrap();
    let before = wait_pods(&s.pods, "rs", 2).await;
    set_phase(&s.pods, "rs-worker-0", "Failed", Some(143)).await;
    wait_condition(&s.jobs, "rs", "Restarting").await;
    let before = wait_pods(&s.pods, "rs", 2)
        .await
        .iter()
        .map(|p| p.uid())
        .collect::<Vec<_>>()
        .len()
        + before.len();
    op.abort();
    let _ = op.await;
    for p in ["rs-master-0", "rs-worker-0"] {
        set_phase(&s.pods, p, "Running", None).await;
    }
    let uids: Vec<_> = pods_of(&s.pods, "rs")
        .await
        .iter()
        .map(|p| p.uid())
        .collect();
    op = spawn_operator(op_client.clone());
    let j = wait_condition(&s.jobs, "rs", "Running").await;
    assert_eq!(
        j.status.unwrap().restart_count,
        Some(1),
        "the restart count survives the operator"
    );
    let after: Vec<_> = pods_of(&s.pods, "rs")
        .await
        .iter()
        .map(|p| p.uid())
        .collect();
    assert_eq!(uids, after, "no pod was recreated by the new operator");
    assert_eq!(before, 4);
    set_phase(&s.pods, "rs-master-0", "Succeeded", Some(0)).await;
    wait_condition(&s.jobs, "rs", "Succeeded").await;
    op.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_template_the_api_server_refuses_fails_the_job_with_its_message() {
    let c = Cluster::start().await;
    let client = c.client().await.unwrap();
    c.install_crd().await;
    c.add_node("node-a", "8", "32Gi", 4).await;
    let op = spawn_operator(client.clone());
    let jobs: Api<PyTorchJob> = Api::namespaced(client.clone(), "default");
    let mut bad = job("bad", 0, "OnFailure", json!({}));
    // A GPU request without a limit is invalid in Kubernetes.
    let c0 = &mut bad
        .spec
        .pytorch_replica_specs
        .get_mut("Master")
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0];
    c0.resources =
        Some(serde_json::from_value(json!({"requests": {"nvidia.com/gpu": "1"}})).unwrap());
    jobs.create(&PostParams::default(), &bad).await.unwrap();
    let j = wait_condition(&jobs, "bad", "Failed").await;
    let failed = failed_condition(&j);
    assert_eq!(failed.reason.as_deref(), Some("InvalidSpec"));
    assert!(failed.message.unwrap().contains("bad-master-0"));
    op.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deploy_manifests_are_accepted_by_the_api_server() {
    use kube::core::{DynamicObject, GroupVersionKind};
    use kube::discovery::pinned_kind;
    // The shipped CRD is the one the Rust types generate.
    let shipped = std::fs::read_to_string(format!(
        "{}/../../deploy/crd-pytorchjob.yaml",
        manifest_dir()
    ))
    .unwrap();
    assert_eq!(shipped, switchyard_kubernetes::crd::crd_yaml(), "deploy/crd-pytorchjob.yaml is stale: switchyard operator --print-crd > deploy/crd-pytorchjob.yaml");
    let c = Cluster::start().await;
    let client = c.client().await.unwrap();
    for file in ["crd-pytorchjob.yaml", "operator.yaml", "server.yaml"] {
        for doc in cluster::deploy_docs(file) {
            let (group, version) = match doc["apiVersion"].as_str().unwrap().split_once('/') {
                Some((g, v)) => (g.to_string(), v.to_string()),
                None => (
                    String::new(),
                    doc["apiVersion"].as_str().unwrap().to_string(),
                ),
            };
            let kind = doc["kind"].as_str().unwrap();
            let (ar, caps) = pinned_kind(&client, &GroupVersionKind::gvk(&group, &version, kind))
                .await
                .unwrap();
            let obj: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
            let api: Api<DynamicObject> = match (caps.scope, obj.metadata.namespace.as_deref()) {
                (kube::discovery::Scope::Namespaced, Some(ns)) => {
                    Api::namespaced_with(client.clone(), ns, &ar)
                }
                _ => Api::all_with(client.clone(), &ar),
            };
            // Namespaces and the CRD for real (later documents need them); the rest dry-run.
            let real = kind == "Namespace" || kind == "CustomResourceDefinition";
            let pp = PostParams {
                dry_run: !real,
                ..Default::default()
            };
            api.create(&pp, &obj)
                .await
                .unwrap_or_else(|e| panic!("{file}: {kind} refused: {e}"));
        }
    }
}

/// This package's folder: where cargo runs the test from (the path compiled in
/// can belong to another checkout sharing the build folder).
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
