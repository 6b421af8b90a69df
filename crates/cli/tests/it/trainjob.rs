//! Kubeflow Trainer v2's TrainJob on the real test cluster, reconciled by
//! `switchyard operator` on the host (deploy/operator.yaml's rights): a
//! 2-node × 2-process gloo all-reduce through the `torch-distributed`
//! runtime's plain `torchrun`, gang restarts under the runtime's failure
//! policy, suspend/resume, the deadline, Trainer's admission rules, and
//! runtimes Switchyard does not run.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::Sandbox;
use crate::k8s::{job_args, job_cmd, kube, pod_steps, run_on_pods, Kube, Ns};

const IMAGE: &str = "switchyard.local/pytorch:dev";

/// Every rank adds its global rank + 1; each prints the sum and the world.
const ALL_REDUCE: &str = r#"
import os, socket, torch, torch.distributed as dist
dist.init_process_group("gloo")
t = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(t)
print(f"host={socket.gethostname()} rank={dist.get_rank()} world={dist.get_world_size()} sum={t.item():.0f}", flush=True)
dist.destroy_process_group()
"#;

/// `bash -c` writing the script and starting plain `torchrun` (no options:
/// the runtime's `PET_*` variables are its configuration), as the Kubeflow
/// SDK's CustomTrainer does.
fn torchrun(script: &str) -> Vec<String> {
    vec![
        "bash".into(),
        "-c".into(),
        format!("cat > /tmp/train.py <<'EOF'\n{script}\nEOF\ntorchrun /tmp/train.py"),
    ]
}

/// Trainer's `torch-distributed` runtime (deploy/runtimes-torch.yaml) with
/// the test image, under `name`, and the Job/failure-policy changes given.
fn runtime(k: &Kube, name: &str, backoff: Option<i64>, max_restarts: Option<i64>) {
    let mut rt = k.deploy_docs("runtimes-torch.yaml").remove(0);
    rt["metadata"]["name"] = json!(name);
    let rj = &mut rt["spec"]["template"]["spec"]["replicatedJobs"][0]["template"];
    rj["spec"]["template"]["spec"]["containers"][0]["image"] = json!(IMAGE);
    if let Some(b) = backoff {
        rj["spec"]["backoffLimit"] = json!(b);
    }
    if let Some(m) = max_restarts {
        rt["spec"]["template"]["spec"]["failurePolicy"] = json!({"maxRestarts": m});
    }
    k.apply(&rt);
}

fn trainjob(ns: &Ns<'_>, name: &str, runtime: &str, spec: Value) -> Value {
    let mut s = json!({"runtimeRef": {"name": runtime}});
    if let (Some(o), Some(extra)) = (s.as_object_mut(), spec.as_object()) {
        o.extend(extra.clone());
    }
    json!({
        "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
        "metadata": {"name": name, "namespace": ns.name},
        "spec": s,
    })
}

fn condition(j: &Value, t: &str) -> Option<(String, String, String)> {
    j["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == t)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        })
}

/// Waits until `done` holds for the TrainJob; panics with its status, its
/// pods and the operator's log otherwise.
fn wait_for(
    ns: &Ns<'_>,
    op: &crate::k8s::Operator,
    name: &str,
    secs: u64,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let j = ns.get(&["get", "trainjob", name]);
        if done(&j) {
            return j;
        }
        if Instant::now() > deadline {
            let pods = ns.get(&["get", "pods"]);
            let phases: Vec<String> = pods["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| format!("{} {}", p["metadata"]["name"], p["status"]["phase"]))
                .collect();
            panic!(
                "TrainJob {name}: not {what} in {secs} s:\n{:#}\npods: {phases:?}\noperator log:\n{}",
                j["status"],
                op.log()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn pods_of(ns: &Ns<'_>, job: &str) -> Vec<Value> {
    ns.get(&[
        "get",
        "pods",
        "-l",
        &format!("jobset.sigs.k8s.io/jobset-name={job}"),
    ])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn env_of(pod: &Value) -> std::collections::BTreeMap<String, Value> {
    pod["spec"]["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let v = if e["value"].is_null() {
                e["valueFrom"].clone()
            } else {
                e["value"].clone()
            };
            (e["name"].as_str().unwrap_or_default().to_string(), v)
        })
        .collect()
}

#[test]
#[ignore = "needs the local Kubernetes cluster (scripts/k8s-cluster start)"]
fn a_two_node_trainjob_all_reduces_through_plain_torchrun_and_completes() {
    let k = kube();
    let ns = k.namespace("tj-ok");
    runtime(&k, "torch-distributed", None, None);
    let op = ns.operator();
    k.apply(&trainjob(
        &ns,
        "allreduce",
        "torch-distributed",
        json!({"trainer": {
            "numNodes": 2, "numProcPerNode": 2, "command": torchrun(ALL_REDUCE),
            "env": [{"name": "EPOCHS", "value": "1"}],
            "resourcesPerNode": {"requests": {"cpu": "200m", "memory": "512Mi"}},
        }}),
    ));
    let started = Instant::now();
    let j = wait_for(&ns, &op, "allreduce", 240, "Complete", |j| {
        condition(j, "Complete").is_some() || condition(j, "Failed").is_some()
    });
    assert_eq!(
        condition(&j, "Complete"),
        Some((
            "True".into(),
            "AllJobsCompleted".into(),
            "jobset completed successfully".into()
        )),
        "{:#}\n{}",
        j["status"],
        op.log()
    );
    eprintln!(
        "created → Complete: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        j["status"]["jobsStatus"],
        json!([{"name": "node", "ready": 0, "succeeded": 1, "failed": 0, "active": 0, "suspended": 0}])
    );
    let pods = pods_of(&ns, "allreduce");
    assert_eq!(pods.len(), 2, "one pod per node");
    let mut hosts: Vec<String> = Vec::new();
    for p in &pods {
        let idx = p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"]
            .as_str()
            .expect("index")
            .to_string();
        let host = format!("allreduce-node-0-{idx}");
        assert_eq!(p["spec"]["hostname"], json!(host));
        assert_eq!(p["spec"]["subdomain"], json!("allreduce"));
        assert!(p["metadata"]["name"]
            .as_str()
            .expect("name")
            .starts_with(&format!("{host}-")));
        assert_eq!(
            p["metadata"]["labels"]["jobset.sigs.k8s.io/replicatedjob-name"],
            "node"
        );
        let env = env_of(p);
        assert_eq!(env["PET_NNODES"], json!("2"));
        assert_eq!(env["PET_NPROC_PER_NODE"], json!("2"));
        assert_eq!(
            env["PET_MASTER_ADDR"],
            json!("allreduce-node-0-0.allreduce")
        );
        assert_eq!(env["PET_MASTER_PORT"], json!("29500"));
        assert_eq!(env["EPOCHS"], json!("1"));
        assert_eq!(
            env["PET_NODE_RANK"]["fieldRef"]["fieldPath"],
            json!("metadata.annotations['batch.kubernetes.io/job-completion-index']")
        );
        let log = ns.kube_logs(p["metadata"]["name"].as_str().expect("name"), "node");
        // Two processes per node print at once: count, not lines.
        assert_eq!(log.matches("host=").count(), 2, "{log}");
        assert_eq!(log.matches("world=4 sum=10").count(), 2, "{log}");
        hosts.push(host);
    }
    hosts.sort();
    assert_eq!(hosts, ["allreduce-node-0-0", "allreduce-node-0-1"]);
    let svc = ns.get(&["get", "service", "allreduce"]);
    assert_eq!(svc["spec"]["clusterIP"], "None");
    assert_eq!(svc["spec"]["publishNotReadyAddresses"], true);
    let snapshot = ns.get(&["get", "configmap", "allreduce-runtime-snapshot"]);
    assert!(snapshot["data"]["runtime"]
        .as_str()
        .expect("runtime")
        .contains("torch-distributed"));
}

#[test]
#[ignore = "needs the local Kubernetes cluster (scripts/k8s-cluster start)"]
fn a_failing_rank_restarts_the_gang_as_the_failure_policy_allows_then_fails() {
    let k = kube();
    let ns = k.namespace("tj-fail");
    runtime(&k, "torch-restart-once", Some(0), Some(1));
    runtime(&k, "torch-no-policy", Some(0), None);
    let op = ns.operator();
    let fail_rank_1 = vec![
        "bash".to_string(),
        "-c".to_string(),
        "echo node $PET_NODE_RANK; if [ \"$PET_NODE_RANK\" = 1 ]; then exit 3; fi; sleep 60"
            .to_string(),
    ];
    k.apply(&trainjob(
        &ns,
        "restarts",
        "torch-restart-once",
        json!({"trainer": {"numNodes": 2, "command": fail_rank_1}}),
    ));
    k.apply(&trainjob(
        &ns,
        "nopolicy",
        "torch-no-policy",
        json!({"trainer": {"numNodes": 2, "command": fail_rank_1}}),
    ));
    let j = wait_for(&ns, &op, "restarts", 180, "Failed", |j| {
        condition(j, "Failed").is_some()
    });
    assert_eq!(
        condition(&j, "Failed"),
        Some((
            "True".into(),
            "ReachedMaxRestarts".into(),
            "jobset failed due to reaching max number of restarts (first failed job: restarts-node-0)".into()
        ))
    );
    assert_eq!(
        j["metadata"]["annotations"]["trainer.switchyard.io/restarts"],
        "1"
    );
    assert_eq!(j["status"]["jobsStatus"][0]["failed"], 1);
    let events = ns.get(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=restarts",
    ]);
    let restarted = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["reason"] == "Restarting");
    let note = restarted
        .map(|e| e["message"].to_string())
        .unwrap_or_default();
    assert!(
        note.contains("restart 1") && note.contains("backoff limit 0"),
        "{events:#}"
    );
    // As a Job past its backoff limit, the failed gang's pods are deleted.
    wait_for(&ns, &op, "restarts", 60, "without running pods", |_| {
        pods_of(&ns, "restarts").iter().all(|p| {
            p["status"]["phase"] != "Running" || !p["metadata"]["deletionTimestamp"].is_null()
        })
    });
    let j = wait_for(&ns, &op, "nopolicy", 120, "Failed", |j| {
        condition(j, "Failed").is_some()
    });
    assert_eq!(
        condition(&j, "Failed").map(|c| c.1),
        Some("FailedJobs".to_string())
    );
    assert!(j["metadata"]["annotations"]["trainer.switchyard.io/restarts"].is_null());
}

#[test]
#[ignore = "needs the local Kubernetes cluster (scripts/k8s-cluster start)"]
fn suspend_resume_and_the_deadline_behave_as_trainers() {
    let k = kube();
    let ns = k.namespace("tj-suspend");
    runtime(&k, "torch-distributed", None, None);
    let op = ns.operator();
    let sleep = |s: u32| vec!["bash".to_string(), "-c".to_string(), format!("sleep {s}")];
    k.apply(&trainjob(
        &ns,
        "later",
        "torch-distributed",
        json!({"suspend": true, "trainer": {"numNodes": 2, "command": sleep(3)}}),
    ));
    let j = wait_for(&ns, &op, "later", 60, "Suspended", |j| {
        condition(j, "Suspended").is_some()
    });
    assert_eq!(
        condition(&j, "Suspended"),
        Some((
            "True".into(),
            "Suspended".into(),
            "TrainJob is suspended".into()
        ))
    );
    assert_eq!(j["status"]["jobsStatus"][0]["suspended"], 1);
    assert!(pods_of(&ns, "later").is_empty());
    ns.kubectl_ns(&[
        "patch",
        "trainjob",
        "later",
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":false}}"#,
    ]);
    let j = wait_for(&ns, &op, "later", 180, "Complete", |j| {
        condition(j, "Complete").is_some()
    });
    assert_eq!(
        condition(&j, "Suspended").map(|c| (c.0, c.1)),
        Some(("False".into(), "Resumed".into()))
    );

    k.apply(&trainjob(
        &ns,
        "slow",
        "torch-distributed",
        json!({"activeDeadlineSeconds": 8, "trainer": {"numNodes": 2, "command": sleep(600)}}),
    ));
    let j = wait_for(&ns, &op, "slow", 90, "Failed", |j| {
        condition(j, "Failed").is_some()
    });
    assert_eq!(
        condition(&j, "Failed"),
        Some((
            "True".into(),
            "DeadlineExceeded".into(),
            "TrainJob exceeded its active deadline".into()
        ))
    );
    wait_for(&ns, &op, "slow", 60, "without pods", |_| {
        pods_of(&ns, "slow").is_empty()
    });
}

#[test]
#[ignore = "needs the local Kubernetes cluster (scripts/k8s-cluster start)"]
fn trainers_admission_rules_refuse_bad_trainjobs_and_unsupported_runtimes_fail_with_a_reason() {
    let k = kube();
    let ns = k.namespace("tj-admit");
    let refused = |doc: Value| -> String {
        k.try_kubectl(&["apply", "-f", "-"], Some(&doc.to_string()))
            .expect_err("refused")
    };
    let env = json!({"trainer": {"env": [{"name": "PET_NNODES", "value": "9"}]}});
    assert!(refused(trainjob(&ns, "reserved", "torch-distributed", env))
        .contains("must not have reserved envs"));
    assert!(refused(trainjob(&ns, "Upper", "torch-distributed", json!({}))).contains("RFC 1035"));
    assert!(refused(trainjob(
        &ns,
        "managed",
        "torch-distributed",
        json!({"managedBy": "someone/else"})
    ))
    .contains("ManagedBy must be"));
    assert!(refused(trainjob(
        &ns,
        "deadline",
        "torch-distributed",
        json!({"activeDeadlineSeconds": 0})
    ))
    .contains("activeDeadlineSeconds"));
    // Defaults as Trainer's CRD gives them, and an immutable runtimeRef.
    k.apply(&trainjob(
        &ns,
        "kept",
        "torch-distributed",
        json!({"suspend": true}),
    ));
    let j = ns.get(&["get", "trainjob", "kept"]);
    assert_eq!(j["spec"]["runtimeRef"]["kind"], "ClusterTrainingRuntime");
    assert_eq!(j["spec"]["runtimeRef"]["apiGroup"], "trainer.kubeflow.org");
    assert_eq!(
        j["spec"]["managedBy"],
        "trainer.kubeflow.org/trainjob-controller"
    );
    assert!(
        refused(trainjob(&ns, "kept", "other", json!({"suspend": true}))).contains("immutable")
    );

    // An MPI runtime, and a runtime kind Trainer does not know.
    k.apply(&json!({
        "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainingRuntime",
        "metadata": {"name": "deepspeed-distributed", "namespace": ns.name},
        "spec": {"mlPolicy": {"numNodes": 1, "mpi": {"numProcPerNode": 1}},
                 "template": {"spec": {"replicatedJobs": [{"name": "node", "template": {
                     "metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
                     "spec": {"template": {"spec": {"containers": [{"name": "node", "image": IMAGE}]}}}}}]}}},
    }));
    let op = ns.operator();
    let mut odd = trainjob(&ns, "odd", "x", json!({}));
    odd["spec"]["runtimeRef"]["kind"] = json!("FancyRuntime");
    k.apply(&odd);
    let mut mpi = trainjob(&ns, "mpi2", "deepspeed-distributed", json!({}));
    mpi["spec"]["runtimeRef"]["kind"] = json!("TrainingRuntime");
    k.apply(&mpi);
    let j = wait_for(&ns, &op, "mpi2", 60, "Failed", |j| {
        condition(j, "Failed").is_some()
    });
    let (status, reason, message) = condition(&j, "Failed").expect("failed");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "TrainingRuntimeNotSupported")
    );
    assert!(
        message.contains("TrainingRuntime/deepspeed-distributed") && message.contains("mpi"),
        "{message}"
    );
    let j = wait_for(&ns, &op, "odd", 60, "Failed", |j| {
        condition(j, "Failed").is_some()
    });
    assert_eq!(
        condition(&j, "Failed").map(|c| c.2),
        Some("unsupported runtime: FancyRuntime.trainer.kubeflow.org".to_string())
    );
    assert!(pods_of(&ns, "mpi2").is_empty());
}

#[test]
#[ignore = "needs the local Kubernetes cluster (scripts/k8s-cluster start)"]
fn job_run_submits_a_trainjob_that_trains_ddp_digits_with_the_runtime_contract() {
    let k = kube();
    let mut ns = k.namespace("tj-job");
    let env = ns.data_claim();
    let data = ns.data.path().to_path_buf();
    runtime(&k, "torch-distributed", None, None);
    let op = ns.operator();
    let sb = Sandbox::new();
    let out = data.join("model-out");
    let out_s = format!("spec.output={}", out.display());
    let args = job_args(&[
        "--set",
        &out_s,
        "--set",
        "spec.hyperparameters.epochs=3",
        "--set",
        "spec.kubernetes.api=TrainJob",
    ]);
    let res = job_cmd(&sb, &env, &args).output().expect("job run");
    let job = succeeded(&res, &op);
    assert!(
        job["metrics"]["test_accuracy"].as_f64().unwrap_or(0.0) >= 0.8,
        "{job:#}"
    );
    assert_eq!(job["model"], json!(out.to_string_lossy()), "{job:#}");
    assert!(out.join("model.pt").is_file());
    // A TrainJob of the runtime, in Trainer's fields only; no PyTorchJob.
    let tj = &ns.get(&["get", "trainjobs"])["items"][0];
    assert_eq!(tj["spec"]["runtimeRef"]["name"], "torch-distributed");
    assert_eq!(tj["spec"]["trainer"]["numNodes"], 2);
    assert_eq!(
        tj["spec"]["runtimePatches"][0]["manager"],
        "switchyard.io/kubernetes-backend"
    );
    assert!(ns.get(&["get", "pytorchjobs"])["items"]
        .as_array()
        .is_some_and(|a| a.is_empty()));
    let id = job["job_id"].as_str().expect("id");
    // Rank 1's log, through torchrun in its pod; the toolkit's view of its host.
    let r1 = sb.run(&["job", "logs", id, "--rank", "1"]);
    assert!(
        r1.stdout.contains("test_accuracy=") || r1.stdout.contains("loss="),
        "{}",
        r1.stdout
    );
    let pods = pods_of(&ns, tj["metadata"]["name"].as_str().expect("name"));
    assert_eq!(pods.len(), 2);
    for p in &pods {
        assert_eq!(env_of(p)["PET_NNODES"], json!("2"));
        // The contract's prologue (SM_* per host), then torchrun reading PET_*.
        let cmd: Vec<&str> = p["spec"]["containers"][0]["command"]
            .as_array()
            .expect("command")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            cmd[..8],
            [
                "env",
                "-C",
                "/opt/ml/code",
                "sh",
                "/opt/ml/.switchyard/sy-start.sh",
                "python",
                "-m",
                "torch.distributed.run"
            ],
            "{cmd:?}"
        );
    }
}

/// A rank's report through Trainer's progress API: the variables, the token
/// and the CA its pod was given.
const REPORT: &str = r#"
import json, os, ssl, urllib.request, urllib.error
url = os.environ["KUBEFLOW_TRAINER_SERVER_URL"]
ctx = ssl.create_default_context(cafile=os.environ["KUBEFLOW_TRAINER_SERVER_CA_CERT"])
token = open(os.environ["KUBEFLOW_TRAINER_SERVER_TOKEN"]).read().strip()
def post(u, body, tok):
    req = urllib.request.Request(u, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": "Bearer " + tok, "Content-Type": "application/json"})
    try:
        return urllib.request.urlopen(req, context=ctx, timeout=10).status
    except urllib.error.HTTPError as e:
        return e.code
print("other", post(url.replace("/trainjobs/progress/", "/trainjobs/victim/"), {"trainerStatus": {"progressPercentage": 99}}, token), flush=True)
print("none", post(url, {"trainerStatus": {"progressPercentage": 1}}, ""), flush=True)
print("bad", post(url, {"trainerStatus": {"progressPercentage": 150}}, token), flush=True)
print("own", post(url, {"trainerStatus": {"progressPercentage": 60, "estimatedRemainingSeconds": 30,
      "metrics": [{"name": "loss", "value": "0.25"}]}}, token), flush=True)
"#;

#[test]
#[ignore = "needs the local Kubernetes cluster (scripts/k8s-cluster start)"]
fn a_rank_reports_progress_that_only_its_own_trainjob_takes() {
    let k = kube();
    let ns = k.namespace("tj-progress");
    runtime(&k, "torch-distributed", None, None);
    let (listen, url) = progress_endpoint(&k);
    let op = ns.operator_with(&["--progress-listen", &listen, "--progress-url", &url]);
    k.apply(&trainjob(
        &ns,
        "victim",
        "torch-distributed",
        json!({"suspend": true}),
    ));
    let script = vec!["python3".to_string(), "-c".to_string(), REPORT.to_string()];
    k.apply(&trainjob(
        &ns,
        "progress",
        "torch-distributed",
        json!({"trainer": {"numNodes": 1, "command": script}}),
    ));
    let j = wait_for(&ns, &op, "progress", 180, "Complete", |j| {
        condition(j, "Complete").is_some() || condition(j, "Failed").is_some()
    });
    let pod = &pods_of(&ns, "progress")[0];
    let log = ns.kube_logs(pod["metadata"]["name"].as_str().expect("name"), "node");
    assert!(
        condition(&j, "Complete").is_some(),
        "{:#}\n{log}\n{}",
        j["status"],
        op.log()
    );
    for want in ["other 403", "none 403", "bad 422", "own 200"] {
        assert!(log.lines().any(|l| l == want), "{want} in:\n{log}");
    }
    let ts = &j["status"]["trainerStatus"];
    assert_eq!(ts["progressPercentage"], 60, "{ts:#}");
    assert_eq!(ts["estimatedRemainingSeconds"], 30);
    assert_eq!(ts["metrics"], json!([{"name": "loss", "value": "0.25"}]));
    assert!(ts["lastUpdatedTime"].is_string());
    let env = env_of(pod);
    assert_eq!(
        env["KUBEFLOW_TRAINER_SERVER_URL"],
        json!(format!(
            "{url}/apis/trainer.kubeflow.org/v1alpha1/namespaces/{}/trainjobs/progress/status",
            ns.name
        ))
    );
    assert_eq!(
        env["KUBEFLOW_TRAINER_SERVER_TOKEN"],
        json!("/var/run/secrets/kubeflow/trainer/token")
    );
    assert!(ns.get(&["get", "trainjob", "victim"])["status"]["trainerStatus"].is_null());
}

/// The node's address: the cluster's bridge on this machine, which pods
/// reach (and nothing off this machine).
fn node_ip(k: &Kube) -> String {
    let node = k.json(&["get", "nodes"]);
    node["items"][0]["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .expect("node InternalIP")
        .to_string()
}

/// Where the operator's progress endpoint listens and the URL pods use:
/// the node's address (the cluster's bridge on this machine), a free port.
fn progress_endpoint(k: &Kube) -> (String, String) {
    let ip = node_ip(k);
    let port = std::net::TcpListener::bind((ip.as_str(), 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    (format!("{ip}:{port}"), format!("https://{ip}:{port}"))
}

#[test]
#[ignore = "needs the local Kubernetes cluster (scripts/k8s-cluster start)"]
fn job_run_records_the_progress_its_rank_reports_through_the_trainjob() {
    let k = kube();
    let mut ns = k.namespace("tj-jobprog");
    let env = ns.data_claim();
    runtime(&k, "torch-distributed", None, None);
    let (listen, url) = progress_endpoint(&k);
    let op = ns.operator_with(&["--progress-listen", &listen, "--progress-url", &url]);
    let sb = Sandbox::new();
    let report = r#"
import json, os, ssl, time, urllib.request
ctx = ssl.create_default_context(cafile=os.environ["KUBEFLOW_TRAINER_SERVER_CA_CERT"])
token = open(os.environ["KUBEFLOW_TRAINER_SERVER_TOKEN"]).read().strip()
body = {"trainerStatus": {"progressPercentage": 60, "estimatedRemainingSeconds": 30,
        "metrics": [{"name": "loss", "value": "0.25"}, {"name": "phase", "value": "warmup"}]}}
req = urllib.request.Request(os.environ["KUBEFLOW_TRAINER_SERVER_URL"], data=json.dumps(body).encode(),
    method="POST", headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
print("reported", urllib.request.urlopen(req, context=ctx, timeout=10).status, flush=True)
time.sleep(3)
"#;
    let job_file = sb.work.path().join("progress.yaml");
    std::fs::write(
        &job_file,
        serde_json::to_string(&json!({
            "apiVersion": "switchyard/v1", "kind": "TrainingJob",
            "metadata": {"name": "reports-progress"},
            "spec": {"backend": "kubernetes", "image": IMAGE, "command": ["python3", "-c", report],
                     "resources": {"cpu": 0.2, "memory": "256Mi"},
                     "kubernetes": {"api": "TrainJob"}},
        }))
        .expect("json"),
    )
    .expect("job file");
    let res = sb
        .cmd()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .args([
            "job",
            "run",
            job_file.to_str().expect("utf8"),
            "--output",
            "json",
        ])
        .output()
        .expect("job run");
    let job = succeeded(&res, &op);
    assert_eq!(
        job["metrics"]["trainer_progress_percentage"], 60.0,
        "{job:#}"
    );
    assert_eq!(
        job["metrics"]["trainer_estimated_remaining_seconds"], 30.0,
        "{job:#}"
    );
    assert_eq!(job["metrics"]["loss"], 0.25, "{job:#}");
    assert!(
        job["metrics"]["phase"].is_null(),
        "not a number: not a metric"
    );
}

#[test]
#[ignore = "needs the local Kubernetes cluster (scripts/k8s-cluster start)"]
fn a_pipeline_step_launches_a_trainjob_with_its_task_config() {
    let k = kube();
    let mut ns = k.namespace("tj-kfp");
    let data = ns.data.path().to_path_buf();
    ns.claim("switchyard-data", &data);
    runtime(&k, "torch-distributed", None, None);
    // What a KFP admin grants the run's service account to launch TrainJobs.
    for doc in [
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": "launch-trainjobs", "namespace": ns.name},
               "rules": [{"apiGroups": ["trainer.kubeflow.org"], "resources": ["trainjobs"], "verbs": ["create", "get"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "launch-trainjobs", "namespace": ns.name},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "launch-trainjobs"},
               "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns.name}]}),
    ] {
        k.apply(&doc);
    }
    let op = ns.operator();
    let sb = Sandbox::new();
    let cmd = pod_steps(&sb, &k, &ns.name, &data);
    let run = run_on_pods(&k, &ns.name, cmd, "k8s_trainjob", &["-p", "nodes=2"]);
    let out = run["outputs"]["Output"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        out.ends_with("Complete AllJobsCompleted"),
        "{out}\n{run:#}\n{}",
        op.log()
    );
    let name = out.split_whitespace().next().expect("name");
    let pods = pods_of(&ns, name);
    assert_eq!(pods.len(), 2);
    for p in &pods {
        // The task's TaskConfig: its env and its resources, on the TrainJob's nodes.
        assert_eq!(env_of(p)["EPOCHS"], json!("2"));
        let requests = &p["spec"]["containers"][0]["resources"]["requests"];
        assert_eq!(
            (requests["cpu"].as_str(), requests["memory"].as_str()),
            (Some("200m"), Some("300Mi")),
            "{requests}"
        );
        let log = ns.kube_logs(p["metadata"]["name"].as_str().expect("name"), "node");
        // Two processes per node print at once: count, not lines.
        assert_eq!(log.matches("world=4 sum=10 epochs=2").count(), 2, "{log}");
    }
    // The launching step's own pod: its env applied to it (apply_to_task),
    // its resources not (RESOURCES is passed through only).
    let steps: Vec<Value> = ns.get(&["get", "pods"])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["labels"]["jobset.sigs.k8s.io/jobset-name"].is_null())
        .cloned()
        .collect();
    assert_eq!(steps.len(), 1, "one step pod");
    assert_eq!(env_of(&steps[0]).get("EPOCHS"), Some(&json!("2")));
}

/// The job a `job run --output json` printed, which must have succeeded (its
/// output, errors and the operator's log otherwise).
fn succeeded(res: &std::process::Output, op: &crate::k8s::Operator) -> Value {
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(
        res.status.success(),
        "{stdout}\n{}\noperator:\n{}",
        String::from_utf8_lossy(&res.stderr),
        op.log()
    );
    let job: Value = serde_json::from_str(&stdout).expect("job JSON");
    assert_eq!(job["state"], "SUCCEEDED", "{job:#}");
    job
}

/// deploy/runtimes-torch-initializers.yaml under `name`, the trainer on the
/// test image; `once`: initializers that fail at their first error
/// (backoffLimit 0, restartPolicy Never) instead of retrying.
fn initializers_runtime(k: &Kube, name: &str, once: bool) {
    let mut rt = k.deploy_docs("runtimes-torch-initializers.yaml").remove(0);
    rt["metadata"]["name"] = json!(name);
    for rj in rt["spec"]["template"]["spec"]["replicatedJobs"]
        .as_array_mut()
        .expect("replicatedJobs")
    {
        let trainer = rj["name"] == "node";
        let t = &mut rj["template"]["spec"];
        if trainer {
            t["template"]["spec"]["containers"][0]["image"] = json!(IMAGE);
        } else if once {
            t["backoffLimit"] = json!(0);
            t["template"]["spec"]["restartPolicy"] = json!("Never");
        }
    }
    k.apply(&rt);
}

/// What each trainer node found under /workspace, and the dataset's sum.
const READ_WORKSPACE: &str = r#"
import os, pathlib
files = sorted(str(p.relative_to("/workspace")) for p in pathlib.Path("/workspace").rglob("*") if p.is_file())
total = sum(int(x) for x in open("/workspace/dataset/train.csv").read().split())
print(f"node={os.environ['PET_NODE_RANK']} files={','.join(files)} sum={total}", flush=True)
"#;

fn rjob(p: &Value) -> &str {
    p["metadata"]["labels"]["jobset.sigs.k8s.io/replicatedjob-name"]
        .as_str()
        .unwrap_or_default()
}

#[test]
#[ignore = "needs the local Kubernetes cluster (scripts/k8s-cluster start) and moto (scripts/setup)"]
fn s3_initializers_fetch_dataset_and_model_before_the_trainer_starts() {
    let k = kube();
    let mut ns = k.namespace("tj-init");
    // On the bridge: the initializers' pods fetch from it.
    let moto = crate::moto::Moto::start_on(&node_ip(&k), &[]);
    moto.put(
        "data",
        &[
            ("digits/train.csv", "1 2 3 4"),
            ("digits/sub/notes.txt", "n"),
            ("digits/weights.pt", "ignored"),
        ],
    );
    moto.put("models", &[("m/config.json", "{}")]);
    ns.kubectl_ns(&[
        "create",
        "secret",
        "generic",
        "s3-keys",
        "--from-literal=ACCESS_KEY_ID=test",
        "--from-literal=SECRET_ACCESS_KEY=test",
    ]);
    initializers_runtime(&k, "torch-distributed-with-initializers", false);
    let workspace = tempfile::tempdir().expect("tempdir");
    ns.volume_for("initializer-fetch", workspace.path());
    let op = ns.operator();
    let endpoint = json!({"name": "ENDPOINT", "value": moto.endpoint});
    k.apply(&trainjob(
        &ns,
        "fetch",
        "torch-distributed-with-initializers",
        json!({
            "initializer": {
                // As the Kubeflow SDK's S3DatasetInitializer writes it.
                "dataset": {"storageUri": "s3://data/digits", "env": [
                    endpoint, {"name": "ACCESS_KEY_ID", "value": "test"},
                    {"name": "SECRET_ACCESS_KEY", "value": "test"},
                    {"name": "IGNORE_PATTERNS", "value": "*.pt"}]},
                // The keys from a secret instead.
                "model": {"storageUri": "s3://models/m", "env": [endpoint],
                          "secretRef": {"name": "s3-keys"}},
            },
            "trainer": {"numNodes": 2, "command": ["python3", "-c", READ_WORKSPACE]},
        }),
    ));
    let j = wait_for(&ns, &op, "fetch", 240, "finished", |j| {
        condition(j, "Complete").is_some() || condition(j, "Failed").is_some()
    });
    assert_eq!(
        condition(&j, "Complete").map(|c| c.1),
        Some("AllJobsCompleted".into()),
        "{:#}\n{}",
        j["status"],
        op.log()
    );
    let one_done = |name: &str| json!({"name": name, "ready": 0, "succeeded": 1, "failed": 0, "active": 0, "suspended": 0});
    assert_eq!(
        j["status"]["jobsStatus"],
        // JobSet's order: by name, last first.
        json!([
            one_done("node"),
            one_done("model-initializer"),
            one_done("dataset-initializer")
        ])
    );
    let pods = pods_of(&ns, "fetch");
    let mut steps: Vec<&str> = pods.iter().map(rjob).collect();
    steps.sort();
    assert_eq!(
        steps,
        ["dataset-initializer", "model-initializer", "node", "node"]
    );
    // The trainer started only after both initializers had finished.
    let finished: Vec<String> = pods
        .iter()
        .filter(|p| rjob(p) != "node")
        .map(|p| {
            p["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"]
                .as_str()
                .expect("initializer finished")
                .to_string()
        })
        .collect();
    for p in pods.iter().filter(|p| rjob(p) == "node") {
        let created = p["metadata"]["creationTimestamp"]
            .as_str()
            .expect("created");
        assert!(
            finished.iter().all(|f| f.as_str() <= created),
            "trainer pod created {created} before initializers finished {finished:?}"
        );
        let name = p["metadata"]["name"].as_str().expect("name");
        let log = ns.kube_logs(name, "node");
        assert!(
            log.contains("files=dataset/sub/notes.txt,dataset/train.csv,model/config.json sum=10"),
            "{name}: {log}"
        );
    }
    let ds = pods
        .iter()
        .find(|p| rjob(p) == "dataset-initializer")
        .expect("dataset pod");
    assert!(ds["metadata"]["name"]
        .as_str()
        .expect("name")
        .starts_with("fetch-dataset-initializer-0-0-"));
    let env = env_of(ds);
    assert_eq!(env["STORAGE_URI"], json!("s3://data/digits"));
    let ms = pods
        .iter()
        .find(|p| rjob(p) == "model-initializer")
        .expect("model pod");
    assert_eq!(
        ms["spec"]["containers"][0]["envFrom"],
        json!([{"secretRef": {"name": "s3-keys"}}])
    );
    // JobSet's claim, deleted with the job (retentionPolicy Delete).
    let pvc = ns.get(&["get", "pvc", "initializer-fetch"]);
    assert_eq!(pvc["metadata"]["ownerReferences"][0]["kind"], "TrainJob");
    assert_eq!(pvc["status"]["phase"], "Bound");
}

#[test]
#[ignore = "needs the local Kubernetes cluster (scripts/k8s-cluster start) and moto (scripts/setup)"]
fn an_initializer_that_cannot_fetch_fails_the_trainjob_before_any_trainer_runs() {
    let k = kube();
    let mut ns = k.namespace("tj-initbad");
    let moto = crate::moto::Moto::start_on(&node_ip(&k), &[]);
    initializers_runtime(&k, "tj-init-once", true);
    let workspace = tempfile::tempdir().expect("tempdir");
    ns.volume_for("initializer-nobucket", workspace.path());
    let op = ns.operator();
    // Hugging Face: refused by name, nothing started.
    k.apply(&trainjob(
        &ns,
        "hf",
        "tj-init-once",
        json!({"initializer": {"dataset": {"storageUri": "hf://tatsu-lab/alpaca"}}}),
    ));
    // A bucket that does not exist: the dataset step fails, the trainer never starts.
    k.apply(&trainjob(
        &ns,
        "nobucket",
        "tj-init-once",
        json!({"initializer": {"dataset": {"storageUri": "s3://nothere/x", "env": [
            {"name": "ENDPOINT", "value": moto.endpoint},
            {"name": "ACCESS_KEY_ID", "value": "test"}, {"name": "SECRET_ACCESS_KEY", "value": "test"}]}},
               "trainer": {"command": ["python3", "-c", "print('trained')"]}}),
    ));
    let hf = wait_for(&ns, &op, "hf", 60, "Failed", |j| {
        condition(j, "Failed").is_some()
    });
    let (status, reason, message) = condition(&hf, "Failed").expect("failed");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "TrainingRuntimeNotSupported")
    );
    assert!(
        message.contains("hf://tatsu-lab/alpaca") && message.contains("s3://"),
        "{message}"
    );
    assert!(pods_of(&ns, "hf").is_empty());
    let bad = wait_for(&ns, &op, "nobucket", 120, "Failed", |j| {
        condition(j, "Failed").is_some()
    });
    assert_eq!(
        condition(&bad, "Failed"),
        Some((
            "True".into(),
            "FailedJobs".into(),
            "jobset failed due to one or more job failures (first failed job: nobucket-dataset-initializer-0)".into()
        )),
        "{}",
        op.log()
    );
    let pods = pods_of(&ns, "nobucket");
    assert!(pods.iter().all(|p| rjob(p) != "node"), "no trainer pod");
    // A claim of the name the job's would have, someone else's: refused by name.
    k.apply(&json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "initializer-taken", "namespace": ns.name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }));
    k.apply(&trainjob(
        &ns,
        "taken",
        "tj-init-once",
        json!({"initializer": {"dataset": {"storageUri": "s3://nothere/x"}}}),
    ));
    let taken = wait_for(&ns, &op, "taken", 60, "Failed", |j| {
        condition(j, "Failed").is_some()
    });
    let (_, reason, message) = condition(&taken, "Failed").expect("failed");
    assert_eq!(reason, "JobCreationFailed");
    assert!(
        message.contains("claim initializer-taken exists and is not this TrainJob's"),
        "{message}"
    );
    assert!(pods_of(&ns, "taken").is_empty());
    let ds = pods
        .iter()
        .find(|p| rjob(p) == "dataset-initializer")
        .expect("dataset pod");
    let why = ds["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("NoSuchBucket"), "termination message: {why:?}");
}
