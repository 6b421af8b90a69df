//! The PyTorchJob operator against a real kube-apiserver + etcd (see
//! cluster/mod.rs). One control plane for all scenarios, one namespace each.

mod cluster;

use std::time::Duration;

use cluster::{eventually, set_phase, Cluster};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
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

/// Kubeflow's PyTorchJob examples, from the training-operator module (the Go
/// module proxy serves it; `scripts/setup --k8s` downloads it once).
fn kubeflow_examples() -> Vec<std::path::PathBuf> {
    let out = std::process::Command::new("go")
        .args([
            "mod",
            "download",
            "-json",
            "github.com/kubeflow/training-operator@v1.9.3",
        ])
        .current_dir(std::env::temp_dir())
        .output()
        .expect("go (scripts/setup --k8s installs the Go toolchain's modules)");
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "go mod download: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let dir = std::path::PathBuf::from(info["Dir"].as_str().expect("Dir")).join("examples/pytorch");
    let mut files = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                files.push(p);
            }
        }
    }
    files
}

/// The job without its Worker replicas (Kubeflow refuses `replicas: 0`).
fn master_only(mut j: PyTorchJob) -> PyTorchJob {
    j.spec.pytorch_replica_specs.remove("Worker");
    j
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
            ..Default::default()
        };
        if let Err(e) = operator::run(client, config).await {
            panic!("operator: {e}");
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kube-apiserver and etcd (scripts/setup --k8s)"]
async fn the_operator_reconciles_pytorchjobs_on_a_real_api_server() {
    let c = Cluster::start().await;
    let client = c.client().await.unwrap();
    // The CRD generated from the Rust types installs and is served.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &switchyard_kubernetes::crd::crd())
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
        // Kubeflow's environment only: nothing SageMaker-style is added, and the
        // template's own variables stay.
        assert!(!env.contains_key("SM_HOSTS") && !env.contains_key("TORCHELASTIC_RUN_ID"));
        assert_eq!(env["SM_MODEL_DIR"], "/models");
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
    let master = &st.replica_statuses["Master"];
    assert_eq!((master.active, master.succeeded), (0, 1));
    assert_eq!(
        st.replica_statuses["Worker"].selector.as_deref(),
        Some("training.kubeflow.org/job-name=ddp,training.kubeflow.org/operator-name=pytorchjob-controller,training.kubeflow.org/replica-type=worker")
    );
    assert!(st.completion_time.is_some() && st.start_time.is_some());
    assert!(st
        .conditions
        .iter()
        .any(|c| c.type_ == "Running" && c.status == "False"));
    // cleanPodPolicy None (Kubeflow's default): the workers still running when
    // the master finished are left running, as Kubeflow leaves them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(pods_of(&s.pods, "ddp").await.len(), 3);
    // (They finish by themselves; here the test ends them, freeing the node.)
    for p in ["ddp-worker-0", "ddp-worker-1"] {
        set_phase(&s.pods, p, "Succeeded", Some(0)).await;
    }
    assert_eq!(
        st.conditions.last().map(|c| c.type_.as_str()),
        Some("Succeeded"),
        "the last condition is the state kubectl shows"
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
    let master_uid = first[0].uid();
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
    assert_eq!(
        again[0].uid(),
        master_uid,
        "as Kubeflow: only the failed pod is recreated"
    );
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
    let first = wait_pods(&s.pods, "bo", 2).await;
    let failed_uid = first[1].uid();
    set_phase(&s.pods, "bo-worker-0", "Failed", Some(2)).await;
    wait_condition(&s.jobs, "bo", "Restarting").await;
    // A new pod under the same name (the failed one is not reused).
    eventually("bo-worker-0 recreated", 30, || async {
        let v = pods_of(&s.pods, "bo").await;
        let p = v.iter().find(|p| p.name_any() == "bo-worker-0")?;
        (p.uid() != failed_uid
            && p.status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .unwrap_or("Pending")
                == "Pending")
            .then_some(())
    })
    .await;
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
    let first = j.message.unwrap_or_default();
    assert!(
        first.contains("needs 16 CPU") && first.contains("only 0 of its pods fit"),
        "{first}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(pods_of(&s.pods, "big").await.is_empty(), "no partial gang");
    c.add_node("gpu-a", "8", "64Gi", 2).await;
    // The operator has seen the new node (its message counts it) and still
    // creates nothing: a sleep alone would pass before any re-evaluation.
    let msg = eventually("big re-evaluated with gpu-a", 30, || async {
        let j = s.jobs.get("big").await.ok()?;
        let c = j
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Created")?;
        c.message
            .filter(|m| m.contains("of the 2 schedulable nodes"))
    })
    .await;
    assert!(msg.contains("only 2 of its pods fit"), "{msg}");
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
    // Kubeflow's default rendezvous host is the first worker.
    assert_eq!(env["PET_RDZV_ENDPOINT"], "el-worker-0:23456");
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
            &master_only(job(
                "tt",
                1,
                "OnFailure",
                json!({"ttlSecondsAfterFinished": 1}),
            )),
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
    let first: Vec<_> = wait_pods(&s.pods, "rs", 2)
        .await
        .iter()
        .map(|p| p.uid())
        .collect();
    set_phase(&s.pods, "rs-worker-0", "Failed", Some(143)).await;
    wait_condition(&s.jobs, "rs", "Restarting").await;
    // As Kubeflow: the failed worker alone was recreated before the restart.
    let restarted: Vec<_> = eventually("rs-worker-0 recreated", 30, || async {
        let v = pods_of(&s.pods, "rs").await;
        (v.len() == 2 && v[1].uid() != first[1] && v[1].metadata.deletion_timestamp.is_none())
            .then_some(v)
    })
    .await
    .iter()
    .map(|p| p.uid())
    .collect();
    assert_eq!(restarted[0], first[0], "the master was not recreated");
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
    let types: Vec<&str> = j
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .map(|c| c.type_.as_str())
        .collect();
    // As Kubeflow: Running replaces Restarting and comes last (kubectl's State).
    assert_eq!(types, ["Created", "Running"], "{types:?}");
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
    assert_eq!(after, restarted);
    set_phase(&s.pods, "rs-master-0", "Succeeded", Some(0)).await;
    wait_condition(&s.jobs, "rs", "Succeeded").await;
    op.abort();
}

/// Kubeflow's semantics where Switchyard's operator used to differ (issue 12):
/// admission, nprocPerNode, Service ports, cleanPodPolicy, rendezvous
/// settings, the scale subresource and managedBy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kube-apiserver, etcd and Kubeflow's training-operator module (scripts/setup --k8s)"]
async fn the_operator_follows_kubeflows_semantics() {
    let c = Cluster::start().await;
    let client = c.client().await.unwrap();
    c.install_crd().await;
    c.add_node("node-a", "32", "64Gi", 0).await;
    let op = spawn_operator(client.clone());
    let s = scenario(&c, &client, "kubeflow").await;

    // Admission: what Kubeflow's webhook refuses, the API server refuses.
    let refused = |j: PyTorchJob| {
        let jobs = s.jobs.clone();
        async move {
            match jobs.create(&PostParams::default(), &j).await {
                Err(kube::Error::Api(e)) => e.message,
                other => panic!("accepted: {other:?}"),
            }
        }
    };
    let mut two_masters = job("twomasters", 1, "OnFailure", json!({}));
    two_masters
        .spec
        .pytorch_replica_specs
        .get_mut("Master")
        .unwrap()
        .replicas = Some(2);
    assert!(refused(two_masters)
        .await
        .contains("Master.replicas must be 1"));
    let mut chief = job("chief", 1, "OnFailure", json!({}));
    let w = chief.spec.pytorch_replica_specs.remove("Worker").unwrap();
    chief.spec.pytorch_replica_specs.insert("Chief".into(), w);
    assert!(refused(chief).await.contains("only Master and Worker"));
    let mut unnamed = job("unnamed", 1, "OnFailure", json!({}));
    for r in unnamed.spec.pytorch_replica_specs.values_mut() {
        r.template.spec.as_mut().unwrap().containers[0].name = "trainer".into();
    }
    assert!(refused(unnamed).await.contains("container named pytorch"));
    let mut no_workers = job("noworkers", 1, "OnFailure", json!({}));
    no_workers
        .spec
        .pytorch_replica_specs
        .get_mut("Worker")
        .unwrap()
        .replicas = Some(0);
    assert!(refused(no_workers)
        .await
        .contains("Worker.replicas must be at least 1"));
    assert!(refused(job("Bad-Name", 1, "OnFailure", json!({})))
        .await
        .contains("DNS-1035"));

    // nprocPerNode verbatim; WORLD_SIZE multiplies only a number.
    for (name, nproc, want, world) in [
        ("np-default", None, "auto", "2"),
        ("np-gpu", Some("gpu"), "gpu", "2"),
        ("np-two", Some("2"), "2", "4"),
    ] {
        let mut j = job(name, 1, "OnFailure", json!({}));
        j.spec.nproc_per_node = nproc.map(String::from);
        s.jobs.create(&PostParams::default(), &j).await.unwrap();
        let pods = wait_pods(&s.pods, name, 2).await;
        let env = env_of(&pods[1]);
        assert_eq!(env["PET_NPROC_PER_NODE"], want, "{name}");
        assert_eq!(env["WORLD_SIZE"], world, "{name}");
    }

    // Every named port of the pytorch container is on the replica's Service.
    let mut ported = job(
        "ported",
        1,
        "OnFailure",
        json!({"cleanPodPolicy": "Running"}),
    );
    for r in ported.spec.pytorch_replica_specs.values_mut() {
        r.template.spec.as_mut().unwrap().containers[0].ports = Some(vec![serde_json::from_value(
            json!({"name": "metrics", "containerPort": 9090}),
        )
        .unwrap()]);
    }
    s.jobs
        .create(&PostParams::default(), &ported)
        .await
        .unwrap();
    wait_pods(&s.pods, "ported", 2).await;
    let svc = eventually("ported's services", 30, || async {
        s.svcs.get("ported-worker-0").await.ok()
    })
    .await;
    let ports: Vec<(String, i32)> = svc
        .spec
        .unwrap()
        .ports
        .unwrap()
        .into_iter()
        .map(|p| (p.name.unwrap_or_default(), p.port))
        .collect();
    assert_eq!(
        ports,
        [
            ("metrics".to_string(), 9090),
            ("pytorchjob-port".to_string(), 23456)
        ]
    );

    // cleanPodPolicy Running: the running worker and its Service go when the
    // master succeeds; the master and its Service stay.
    for p in ["ported-master-0", "ported-worker-0"] {
        set_phase(&s.pods, p, "Running", None).await;
    }
    wait_condition(&s.jobs, "ported", "Running").await;
    set_phase(&s.pods, "ported-master-0", "Succeeded", Some(0)).await;
    wait_condition(&s.jobs, "ported", "Succeeded").await;
    let left = wait_pods(&s.pods, "ported", 1).await;
    assert_eq!(left[0].name_any(), "ported-master-0");
    eventually("the worker's Service deleted", 30, || async {
        s.svcs
            .get_opt("ported-worker-0")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert!(s.svcs.get_opt("ported-master-0").await.unwrap().is_some());

    // Elastic: rdzvConf, standalone and HPA metrics are accepted and passed on;
    // `kubectl scale` (the scale subresource) changes the Worker replicas.
    let mut el = job("elastic", 1, "OnFailure", json!({}));
    el.spec.elastic_policy = Some(serde_json::from_value(json!({
        "minReplicas": 1, "maxReplicas": 4, "rdzvConf": [{"key": "join_timeout", "value": "300"}, {"key": "read_timeout", "value": "60"}],
        "standalone": true,
        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}],
    })).unwrap());
    s.jobs.create(&PostParams::default(), &el).await.unwrap();
    let pods = wait_pods(&s.pods, "elastic", 2).await;
    let env = env_of(&pods[1]);
    assert_eq!(env["PET_RDZV_CONF"], "join_timeout=300,read_timeout=60");
    assert_eq!(env["PET_STANDALONE"], "");
    let stored = s.jobs.get("elastic").await.unwrap();
    assert_eq!(
        stored.spec.elastic_policy.unwrap().metrics.unwrap().len(),
        1
    );
    // With metrics, an HPA scales the job through its scale subresource (as Kubeflow).
    let hpas: Api<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler> =
        Api::namespaced(client.clone(), "kubeflow");
    let hpa = eventually("the elastic job's HPA", 30, || async {
        hpas.get_opt("elastic").await.ok()?
    })
    .await;
    let spec = hpa.spec;
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(1), 4));
    assert_eq!(spec.scale_target_ref.kind, "PyTorchJob");
    s.jobs
        .patch_scale(
            "elastic",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    wait_pods(&s.pods, "elastic", 4).await;
    let scale = s.jobs.get_scale("elastic").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(3));

    // Restarts: OnFailure pods restart in place (the kubelet), their restarts
    // count against backoffLimit; whole-gang restarts are opt-in.
    s.jobs
        .create(
            &PostParams::default(),
            &job("inplace", 1, "OnFailure", json!({"backoffLimit": 2})),
        )
        .await
        .unwrap();
    let pods = wait_pods(&s.pods, "inplace", 2).await;
    for p in &pods {
        assert_eq!(
            p.spec.as_ref().unwrap().restart_policy.as_deref(),
            Some("OnFailure")
        );
    }
    for p in ["inplace-master-0", "inplace-worker-0"] {
        set_phase(&s.pods, p, "Running", None).await;
    }
    wait_condition(&s.jobs, "inplace", "Running").await;
    s.pods
        .patch_status("inplace-worker-0", &PatchParams::default(), &Patch::Merge(&json!({"status": {"containerStatuses": [{
            "name": "pytorch", "ready": true, "restartCount": 2, "image": "x", "imageID": "", "state": {"running": {}},
        }]}})))
        .await
        .unwrap();
    let j = wait_condition(&s.jobs, "inplace", "Failed").await;
    assert_eq!(
        failed_condition(&j).reason.as_deref(),
        Some("BackoffLimitExceeded")
    );
    let mut gang = job("gang", 1, "ExitCode", json!({"backoffLimit": 3}));
    gang.metadata.annotations = Some(
        [(
            "switchyard.io/restart-scope".to_string(),
            "gang".to_string(),
        )]
        .into(),
    );
    s.jobs.create(&PostParams::default(), &gang).await.unwrap();
    let before = wait_pods(&s.pods, "gang", 2).await;
    assert!(before
        .iter()
        .all(|p| p.spec.as_ref().unwrap().restart_policy.as_deref() == Some("Never")));
    set_phase(&s.pods, "gang-worker-0", "Failed", Some(137)).await;
    eventually("the whole gang recreated", 30, || async {
        let v = pods_of(&s.pods, "gang").await;
        (v.len() == 2
            && v.iter()
                .zip(&before)
                .all(|(a, b)| a.uid() != b.uid() && a.metadata.deletion_timestamp.is_none()))
        .then_some(())
    })
    .await;

    // Every PyTorchJob among Kubeflow's own examples (examples/pytorch of the
    // training-operator v1.9.3 module) passes admission with nothing pruned:
    // the stored spec is the spec sent.
    let examples = kubeflow_examples();
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        "kubeflow",
        &kube::api::ApiResource::erase::<PyTorchJob>(&()),
    );
    let mut seen = Vec::new();
    for file in &examples {
        let text = std::fs::read_to_string(file).unwrap();
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
        for mut doc in docs.into_iter().filter(|d| d["kind"] == "PyTorchJob") {
            doc["metadata"]["namespace"] = json!("kubeflow");
            let obj: kube::api::DynamicObject = serde_json::from_value(doc.clone()).unwrap();
            let dry = PostParams {
                dry_run: true,
                ..Default::default()
            };
            let stored = api
                .create(&dry, &obj)
                .await
                .unwrap_or_else(|e| panic!("{} refused: {e}", file.display()));
            assert_eq!(
                stored.data["spec"],
                doc["spec"],
                "{} was pruned",
                file.display()
            );
            seen.push(file.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    seen.sort();
    assert!(seen.contains(&"imagenet.yaml".to_string()), "{seen:?}");
    assert!(seen.len() >= 5, "{seen:?}");

    // managedBy another controller: left alone.
    let mut kueue = job(
        "kueue",
        1,
        "OnFailure",
        json!({"managedBy": "kueue.x-k8s.io/multikueue"}),
    );
    kueue.metadata.name = Some("kueue".into());
    s.jobs.create(&PostParams::default(), &kueue).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(pods_of(&s.pods, "kueue").await.is_empty());
    assert!(s.jobs.get("kueue").await.unwrap().status.is_none());
    op.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kube-apiserver and etcd (scripts/setup --k8s)"]
async fn a_pod_template_the_api_server_refuses_fails_the_job_with_its_message() {
    let c = Cluster::start().await;
    let client = c.client().await.unwrap();
    c.install_crd().await;
    c.add_node("node-a", "8", "32Gi", 4).await;
    let op = spawn_operator(client.clone());
    let jobs: Api<PyTorchJob> = Api::namespaced(client.clone(), "default");
    let mut bad = master_only(job("bad", 1, "OnFailure", json!({})));
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
#[ignore = "needs kube-apiserver and etcd (scripts/setup --k8s)"]
async fn the_deploy_manifests_are_accepted_by_the_api_server() {
    use kube::core::{DynamicObject, GroupVersionKind};
    use kube::discovery::pinned_kind;
    // (That the shipped CRD is the one the Rust types generate is checked
    // in the fast loop: crd.rs's tests.)
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
