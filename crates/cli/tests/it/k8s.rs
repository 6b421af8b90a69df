//! Switchyard on a real single-node Kubernetes cluster: a kubelet that runs
//! pods through containerd and runc, the scheduler, the controller manager and
//! CoreDNS (`scripts/k8s-cluster start`, which also loads the images
//! `switchyard.local/pytorch:dev` and `switchyard.local/switchyard:dev`).
//!
//! The operator runs on the host as `switchyard operator`, with exactly the
//! rights deploy/operator.yaml grants; `switchyard job run` and pipeline steps
//! use the rights deploy/server.yaml grants in their namespace. Each test has
//! its own namespace; the tests take turns (the node has two CPUs).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{repo_file, repo_root, torch_python, wait_until, Sandbox};

fn cache() -> PathBuf {
    std::env::var_os("SWITCHYARD_K8S_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/switchyard/k8s")
        })
}

/// The running test cluster, its users' kubeconfigs and kubectl.
pub(crate) struct Kube {
    pub(crate) admin: PathBuf,
    operator: PathBuf,
    server: PathBuf,
    kubectl: PathBuf,
    _turn: MutexGuard<'static, ()>,
}

pub(crate) fn kube() -> Kube {
    static TURN: Mutex<()> = Mutex::new(());
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let c = cache();
    let k = Kube {
        admin: c.join("kubeconfig"),
        operator: c.join("kubeconfig-operator"),
        server: c.join("kubeconfig-server"),
        kubectl: c.join("bin/kubectl"),
        _turn: turn,
    };
    assert!(
        k.admin.is_file() && k.kubectl.is_file(),
        "no test cluster is running ({} missing): start one with scripts/k8s-cluster start",
        k.admin.display()
    );
    let ready = k.try_kubectl(&["get", "--raw", "/readyz"], None);
    assert!(
        ready.is_ok(),
        "the test cluster does not answer ({}): restart it with scripts/k8s-cluster start",
        ready.unwrap_err()
    );
    k.base();
    k
}

impl Kube {
    pub(crate) fn try_kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        let mut child = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.admin)
            .arg("--request-timeout=30s")
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("kubectl: {e}"))?;
        if let Some(input) = stdin {
            use std::io::Write;
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(input.as_bytes())
                .map_err(|e| e.to_string())?;
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    pub(crate) fn kubectl(&self, args: &[&str]) -> String {
        self.try_kubectl(args, None)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub(crate) fn apply(&self, doc: &Value) {
        self.try_kubectl(&["apply", "-f", "-"], Some(&doc.to_string()))
            .unwrap_or_else(|e| panic!("{e}\n{doc:#}"));
    }

    pub(crate) fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl(&all)).expect("kubectl JSON")
    }

    /// The documents of a deploy/ manifest, as the API server reads them.
    pub(crate) fn deploy_docs(&self, name: &str) -> Vec<Value> {
        let path = repo_root().join("deploy").join(name);
        let out = self.kubectl(&[
            "create",
            "--dry-run=client",
            "-o",
            "json",
            "-f",
            path.to_str().expect("utf8"),
        ]);
        // One JSON document per object, one after the other (or one List).
        serde_json::Deserializer::from_str(&out)
            .into_iter::<Value>()
            .map(|v| v.expect("JSON"))
            .flat_map(|v| match v["kind"].as_str() {
                Some("List") => v["items"].as_array().cloned().unwrap_or_default(),
                _ => vec![v],
            })
            .collect()
    }

    /// The CRD, the operator's ClusterRole bound to the operator's user and
    /// the server's (placement's read of capacity) to the server's.
    fn base(&self) {
        for crd in ["deploy/crd-pytorchjob.yaml", "deploy/crd-trainer.yaml"] {
            self.kubectl(&[
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                repo_root().join(crd).to_str().expect("utf8"),
            ]);
        }
        for (file, user) in [
            ("operator.yaml", "switchyard-operator"),
            ("server.yaml", "switchyard-server"),
        ] {
            for doc in self.deploy_docs(file) {
                if doc["kind"] == "ClusterRole" {
                    let name = doc["metadata"]["name"].as_str().expect("name").to_string();
                    self.apply(&doc);
                    self.apply(&json!({
                        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                        "metadata": {"name": format!("{name}-test")},
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                        "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
                    }));
                }
            }
        }
        wait_until(
            "the PyTorchJob CRD to be served",
            Duration::from_secs(30),
            || {
                self.try_kubectl(&["get", "pytorchjobs", "-A"], None)
                    .is_ok()
            },
        );
    }

    /// A namespace for one test, with deploy/server.yaml's Role bound to the
    /// server's user and a ReadWriteMany claim `switchyard-data` backed by a
    /// folder of this machine (returned): the data claim the backends use.
    pub(crate) fn namespace(&self, prefix: &str) -> Ns<'_> {
        let name = format!("{prefix}-{}", &uuid_like()[..6]);
        self.kubectl(&["create", "namespace", &name]);
        for doc in self.deploy_docs("server.yaml") {
            if doc["kind"] == "Role" {
                let mut role = doc.clone();
                role["metadata"]["namespace"] = json!(name);
                let role_name = role["metadata"]["name"].as_str().expect("name").to_string();
                self.apply(&role);
                self.apply(&json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": {"name": format!("{role_name}-test"), "namespace": name},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role_name},
                    "subjects": [{"kind": "User", "name": "switchyard-server", "apiGroup": "rbac.authorization.k8s.io"}],
                }));
            }
        }
        let data = tempfile::tempdir().expect("tempdir");
        Ns {
            kube: self,
            name,
            data,
            volumes: Vec::new(),
        }
    }
}

fn uuid_like() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    )
    .chars()
    .rev()
    .collect()
}

/// One test's namespace; deleted (with its volumes) when dropped.
pub(crate) struct Ns<'a> {
    kube: &'a Kube,
    pub(crate) name: String,
    /// The folder behind the `switchyard-data` claim.
    pub(crate) data: tempfile::TempDir,
    volumes: Vec<String>,
}

impl Ns<'_> {
    /// A claim named `claim` in this namespace, bound to a hostPath volume on `dir`.
    pub(crate) fn claim(&mut self, claim: &str, dir: &Path) {
        let pv = self.volume_for(claim, dir);
        self.kube.apply(&json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": self.name},
            "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": pv,
                     "resources": {"requests": {"storage": "1Gi"}}},
        }));
        let ns = self.name.clone();
        wait_until(
            &format!("claim {claim} bound"),
            Duration::from_secs(60),
            || {
                self.kube
                    .try_kubectl(
                        &[
                            "-n",
                            &ns,
                            "get",
                            "pvc",
                            claim,
                            "-o",
                            "jsonpath={.status.phase}",
                        ],
                        None,
                    )
                    .is_ok_and(|p| p == "Bound")
            },
        );
    }

    /// A hostPath volume on `dir` reserved for the claim `claim` of this
    /// namespace (made by someone else: an operator from a claim template),
    /// as a cluster without a volume provisioner needs; returns its name.
    pub(crate) fn volume_for(&mut self, claim: &str, dir: &Path) -> String {
        let pv = format!("{}-{claim}", self.name);
        self.kube.apply(&json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": pv},
            "spec": {"capacity": {"storage": "50Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                     "hostPath": {"path": dir.to_str().expect("utf8"), "type": "DirectoryOrCreate"},
                     "claimRef": {"namespace": self.name, "name": claim}},
        }));
        self.volumes.push(pv.clone());
        pv
    }

    /// The data claim, as the backends' environment names it.
    pub(crate) fn data_claim(&mut self) -> Vec<(&'static str, String)> {
        let dir = self.data.path().to_path_buf();
        self.claim("switchyard-data", &dir);
        vec![
            ("SWITCHYARD_K8S_NAMESPACE", self.name.clone()),
            ("SWITCHYARD_K8S_KUBECONFIG", path_str(&self.kube.server)),
            ("SWITCHYARD_K8S_DATA_CLAIM", "switchyard-data".into()),
            ("SWITCHYARD_K8S_DATA_MOUNT", path_str(&dir)),
        ]
    }

    /// kubectl in this namespace, as the cluster's admin.
    pub(crate) fn kubectl_ns(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        self.kube.kubectl(&all)
    }

    /// A container's log.
    pub(crate) fn kube_logs(&self, pod: &str, container: &str) -> String {
        self.kubectl_ns(&["logs", pod, "-c", container])
    }

    pub(crate) fn get(&self, args: &[&str]) -> Value {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        self.kube.json(&all)
    }

    /// `switchyard operator` for this namespace, as the operator's user.
    pub(crate) fn operator(&self) -> Operator {
        self.operator_with(&[])
    }

    /// The operator with more options.
    pub(crate) fn operator_with(&self, extra: &[&str]) -> Operator {
        let log = tempfile::NamedTempFile::new().expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args([
                "operator",
                "--namespace",
                &self.name,
                "--resync-seconds",
                "2",
            ])
            .args(extra)
            .env("KUBECONFIG", &self.kube.operator)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("log"))
            .spawn()
            .expect("start switchyard operator");
        Operator { child, log }
    }

    /// Waits for the PyTorchJob to end; its status and a diagnosis on timeout.
    fn wait_job(&self, name: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let j = self.get(&["get", "pytorchjob", name]);
            let done = j["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter().any(|c| {
                    (c["type"] == "Succeeded" || c["type"] == "Failed") && c["status"] == "True"
                })
            });
            if done {
                return j;
            }
            if Instant::now() > deadline {
                let pods = self
                    .kube
                    .kubectl(&["-n", &self.name, "get", "pods", "-o", "wide"]);
                panic!(
                    "PyTorchJob {name} did not end in {secs} s:\n{:#}\n{pods}",
                    j["status"]
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Ns<'_> {
    fn drop(&mut self) {
        let _ = self
            .kube
            .try_kubectl(&["delete", "namespace", &self.name, "--wait=false"], None);
        for pv in &self.volumes {
            let _ = self
                .kube
                .try_kubectl(&["delete", "pv", pv, "--wait=false"], None);
        }
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// A running `switchyard operator`, stopped (by its PID) when dropped.
pub(crate) struct Operator {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Operator {
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Follows a pod's log through `pods/log` until the pod ends or is deleted.
fn follow_log(k: &Kube, ns: &str, pod: &str) -> std::thread::JoinHandle<String> {
    let (kubectl, kc) = (k.kubectl.clone(), k.admin.clone());
    let (ns, pod) = (ns.to_string(), pod.to_string());
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut text = String::new();
        while Instant::now() < deadline {
            let out = Command::new(&kubectl)
                .arg("--kubeconfig")
                .arg(&kc)
                .args(["-n", &ns, "logs", "-f", &pod, "-c", "pytorch"])
                .stderr(Stdio::null())
                .output();
            if let Ok(out) = out {
                let got = String::from_utf8_lossy(&out.stdout).into_owned();
                if got.len() >= text.len() {
                    text = got;
                }
                if out.status.success() && text.contains("test_accuracy=") {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        text
    })
}

fn digest_and_accuracy(log: &str) -> (String, f64) {
    let line = log
        .lines()
        .find(|l| l.contains("test_accuracy="))
        .unwrap_or_else(|| panic!("no result line in:\n{log}"));
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .unwrap_or_else(|| panic!("{k} in {line}"))
            .to_string()
    };
    (
        field("params_sha256="),
        field("test_accuracy=").parse().expect("accuracy"),
    )
}

fn pod_env(pod: &Value) -> std::collections::BTreeMap<String, String> {
    pod["spec"]["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or("").to_string(),
                e["value"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
#[ignore = "needs the local Kubernetes cluster (scripts/k8s-cluster start)"]
fn the_operator_trains_ddp_digits_in_real_pods() {
    let k = kube();
    let ns = k.namespace("ddp");
    let op = ns.operator();
    let train = repo_root().join("examples/ddp-digits/train.py");
    k.kubectl(&[
        "-n",
        &ns.name,
        "create",
        "configmap",
        "digits-code",
        &format!("--from-file=train.py={}", train.display()),
    ]);
    // A PyTorchJob as a Kubeflow user writes it: 1 Master + 1 Worker, gloo on CPU.
    let template = json!({"spec": {
        "containers": [{"name": "pytorch", "image": "switchyard.local/pytorch:dev", "imagePullPolicy": "Never",
            "command": ["python3", "/code/train.py", "--epochs", "10"],
            "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}},
            "volumeMounts": [{"name": "code", "mountPath": "/code"}]}],
        "volumes": [{"name": "code", "configMap": {"name": "digits-code"}}]}});
    k.apply(&json!({
        "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
        "metadata": {"name": "digits", "namespace": ns.name},
        "spec": {"pytorchReplicaSpecs": {
            "Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": template},
            "Worker": {"replicas": 1, "restartPolicy": "OnFailure", "template": template}}},
    }));
    let mut logs = Vec::new();
    for pod in ["digits-master-0", "digits-worker-0"] {
        wait_until(&format!("pod {pod}"), Duration::from_secs(60), || {
            k.try_kubectl(&["-n", &ns.name, "get", "pod", pod], None)
                .is_ok()
        });
        logs.push(follow_log(&k, &ns.name, pod));
    }
    let pods = ns.get(&["get", "pods", "-l", "training.kubeflow.org/job-name=digits"]);
    let pods = pods["items"].as_array().cloned().unwrap_or_default();
    let j = ns.wait_job("digits", 300);
    let conditions = &j["status"]["conditions"];
    assert!(
        conditions.as_array().is_some_and(|c| c
            .iter()
            .any(|c| c["type"] == "Succeeded" && c["status"] == "True")),
        "{:#}\noperator log:\n{}",
        j["status"],
        op.log()
    );
    let logs: Vec<String> = logs.into_iter().map(|h| h.join().expect("log")).collect();
    let (d0, a0) = digest_and_accuracy(&logs[0]);
    let (d1, a1) = digest_and_accuracy(&logs[1]);
    assert!(a0 >= 0.9 && a1 >= 0.9, "accuracy {a0} {a1}");
    assert_eq!(
        d0, d1,
        "the ranks' parameters differ:\n{}\n{}",
        logs[0], logs[1]
    );

    // Named, addressed and configured as the Kubeflow training operator does it
    // (read while both ran: a worker still running when the master ends is deleted).
    let mut names: Vec<String> = pods
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["digits-master-0", "digits-worker-0"]);
    for p in &pods {
        let env = pod_env(p);
        let name = p["metadata"]["name"].as_str().unwrap_or("");
        let rank = if name.contains("master") { "0" } else { "1" };
        assert_eq!(env["MASTER_ADDR"], "digits-master-0");
        assert_eq!(env["MASTER_PORT"], "23456");
        assert_eq!(env["WORLD_SIZE"], "2");
        assert_eq!(env["RANK"], rank);
        assert_eq!(env["PET_NNODES"], "2");
        assert_eq!(env["PET_NODE_RANK"], rank);
        assert_eq!(env["PYTHONUNBUFFERED"], "1");
        assert_eq!(
            p["metadata"]["labels"]["training.kubeflow.org/replica-type"],
            if rank == "0" { "master" } else { "worker" }
        );
    }
    let svcs = ns.get(&["get", "services"]);
    let mut svc: Vec<(String, String)> = svcs["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["metadata"]["name"].as_str().unwrap_or("").to_string(),
                s["spec"]["clusterIP"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    svc.sort();
    assert_eq!(
        svc,
        [
            ("digits-master-0".to_string(), "None".to_string()),
            ("digits-worker-0".to_string(), "None".to_string())
        ]
    );
}

#[test]
#[ignore = "needs the local Kubernetes cluster (scripts/k8s-cluster start)"]
fn the_operator_explains_jobs_that_cannot_start() {
    let k = kube();
    let ns = k.namespace("nostart");
    let op = ns.operator();
    let template = |image: &str, cpu: &str| {
        json!({"spec": {"containers": [{"name": "pytorch", "image": image, "imagePullPolicy": "Never",
            "command": ["python3", "-c", "print('hi')"], "resources": {"requests": {"cpu": cpu}}}]}})
    };
    // An image the node does not have: the job fails with the pod's reason.
    k.apply(&json!({
        "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
        "metadata": {"name": "noimage", "namespace": ns.name},
        "spec": {"pytorchReplicaSpecs": {"Master": {"replicas": 1, "restartPolicy": "Never",
            "template": template("switchyard.local/not-built:dev", "100m")}}},
    }));
    let j = ns.wait_job("noimage", 120);
    let failed = j["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Failed").cloned())
        .unwrap_or_else(|| panic!("{:#}\n{}", j["status"], op.log()));
    assert_eq!(failed["reason"], "ImagePullFailed", "{failed:#}");
    assert!(
        failed["message"]
            .as_str()
            .unwrap_or("")
            .contains("ErrImageNeverPull"),
        "{failed:#}"
    );
    // A gang bigger than the node: nothing is created, the job says why it waits.
    k.apply(&json!({
        "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
        "metadata": {"name": "toobig", "namespace": ns.name},
        "spec": {"pytorchReplicaSpecs": {
            "Master": {"replicas": 1, "restartPolicy": "Never", "template": template("switchyard.local/pytorch:dev", "1")},
            "Worker": {"replicas": 3, "restartPolicy": "Never", "template": template("switchyard.local/pytorch:dev", "1")}}},
    }));
    wait_until(
        "toobig to wait for capacity",
        Duration::from_secs(60),
        || {
            let j = ns.get(&["get", "pytorchjob", "toobig"]);
            j["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter().any(|c| {
                    c["reason"] == "PyTorchJobWaitingForCapacity"
                        && c["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("needs 4 CPU"))
                })
            })
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    let pods = ns.get(&["get", "pods", "-l", "training.kubeflow.org/job-name=toobig"]);
    assert_eq!(pods["items"].as_array().map(Vec::len), Some(0), "{pods:#}");
}

/// tests/jobs/contract.yaml on the kubernetes backend: every rank of a 2-node
/// job in real pods passes the contract check, which builds the SageMaker
/// toolkit's own `Environment()` (the image carries sagemaker-training, as
/// SageMaker's PyTorch containers do) and compares it with the rank's
/// variables and argv. The channels are EFS-style claims on tests/jobs/data.
#[test]
#[ignore = "needs the local Kubernetes cluster (scripts/k8s-cluster start)"]
fn the_runtime_contract_holds_in_pods_as_the_toolkit_sees_it() {
    let k = kube();
    let mut ns = k.namespace("contract");
    let mut env = ns.data_claim();
    ns.claim("contract-data", &repo_root().join("tests/jobs/data"));
    env.push((
        "SWITCHYARD_K8S_EFS_CLAIMS",
        "fs-contract=contract-data".into(),
    ));
    let op = ns.operator();
    let sb = Sandbox::new();
    let res = sb
        .cmd()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .args(["job", "run"])
        .arg(repo_root().join("tests/jobs/contract.yaml"))
        .args(job_args(&[
            // One process per pod: the image's torchrun (Debian's torch 1.13) is not
            // what this checks.
            "--set",
            "spec.procsPerNode=1",
            "--set",
            "spec.channels.train=efs://fs-contract/train",
            "--set",
            "spec.channels.val-data=efs://fs-contract/validation",
        ]))
        .args(["--output", "json"])
        .output()
        .expect("job run");
    let stdout = String::from_utf8_lossy(&res.stdout);
    let stderr = String::from_utf8_lossy(&res.stderr);
    let job: Value = serde_json::from_str(&stdout).expect("job JSON");
    let id = job["job_id"].as_str().expect("id");
    let logs = sb.run(&["job", "logs", id]).stdout;
    assert!(
        res.status.success() && job["state"] == "SUCCEEDED",
        "{job:#}\n{logs}\n{stderr}\noperator:\n{}",
        op.log()
    );
    for r in 0..2 {
        assert!(
            logs.contains(&format!(
                "contract ok on rank {r} of 2 (host algo-{})",
                r + 1
            )),
            "{logs}"
        );
    }
}

/// A pod `holder` requesting 1.5 of the node's 2 CPUs, bound before this
/// returns: a gang of 1-CPU pods waits for room.
fn hold_cpus(k: &Kube, ns: &Ns<'_>) {
    k.apply(&json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "holder", "namespace": ns.name},
        "spec": {"containers": [{"name": "hold", "image": "switchyard.local/pause:1",
            "imagePullPolicy": "Never", "resources": {"requests": {"cpu": "1500m"}}}]},
    }));
    wait_until("the holder to be bound", Duration::from_secs(60), || {
        ns.get(&["get", "pod", "holder"])["spec"]["nodeName"].is_string()
    });
}

/// `backend: auto` against the real cluster: the decision reads the nodes'
/// free capacity as the operator's admission does, explains every
/// candidate, and `job run` follows it.
#[test]
#[ignore = "needs the local Kubernetes cluster (scripts/k8s-cluster start)"]
fn placement_reads_the_clusters_capacity_and_explains_every_candidate() {
    let k = kube();
    let mut ns = k.namespace("place");
    let env = ns.data_claim();
    let sb = Sandbox::new();
    let small = [
        "--set",
        "spec.image=switchyard.local/pytorch:dev",
        "--set",
        "spec.resources.cpu=0.5",
        "--set",
        "spec.resources.memory=512Mi",
    ];
    let place = |extra: &[&str]| -> (Option<i32>, Value) {
        let out = sb
            .cmd()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .args(["job", "place"])
            .arg(repo_root().join("examples/ddp-digits/job.yaml"))
            .args(small)
            .args(extra)
            .args(["-o", "json"])
            .output()
            .expect("job place");
        let v = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), v)
    };
    let reason = crate::common::candidate_reason;
    // The gang fits now; no candidate's cost is counted, SageMaker has no
    // role here: cost goes to the first candidate that can run it.
    let (code, d) = place(&["--set", "spec.placement.objective=cost"]);
    assert_eq!(
        (code, &d["chosen"]),
        (Some(0), &json!("kubernetes")),
        "{d:#}"
    );
    assert!(
        reason(&d, "kubernetes").contains("fit the free capacity now"),
        "{d:#}"
    );
    assert!(reason(&d, "sagemaker").contains("spec.roleArn"), "{d:#}");

    // A pod holding most of the node's CPUs: the gang would wait there, so
    // time goes to this machine, which has room now; and so does cost (both
    // cost nothing counted: the one with room now).
    hold_cpus(&k, &ns);
    let (code, d) = place(&["--set", "spec.placement.objective=time"]);
    assert_eq!((code, &d["chosen"]), (Some(0), &json!("local")), "{d:#}");
    assert!(
        reason(&d, "kubernetes").starts_with("would wait for room"),
        "{d:#}"
    );
    let (_, d) = place(&["--set", "spec.placement.objective=cost"]);
    assert_eq!(d["chosen"], "local", "{d:#}");
    k.kubectl(&["-n", &ns.name, "delete", "pod", "holder", "--wait=true"]);

    // Too large for any node and for this machine: refused, every reason given.
    let (code, d) = place(&["--set", "spec.resources.cpu=64"]);
    assert_eq!((code, &d["chosen"]), (Some(2), &Value::Null), "{d:#}");
    assert!(
        reason(&d, "kubernetes").contains("do not fit even an idle cluster"),
        "{d:#}"
    );
    assert!(reason(&d, "local").contains("this machine has"), "{d:#}");

    // `job run --backend auto` goes where `job place` says, and records why.
    let op = ns.operator();
    let mut args: Vec<&str> = vec!["--backend", "auto"];
    args.extend(small);
    args.extend([
        "--set",
        "spec.placement.objective=cost",
        "--set",
        "spec.hyperparameters.epochs=2",
    ]);
    let res = job_cmd(&sb, &env, &args).output().expect("job run");
    let job: Value = serde_json::from_slice(&res.stdout).unwrap_or(Value::Null);
    assert_eq!(
        (&job["state"], &job["backend"]),
        (&json!("SUCCEEDED"), &json!("kubernetes")),
        "{job:#}\n{}\noperator:\n{}",
        String::from_utf8_lossy(&res.stderr),
        op.log()
    );
    let id = job["job_id"].as_str().unwrap_or_default();
    let got = sb.run(&["job", "get", id, "-o", "json"]).json();
    assert!(
        crate::common::has_event(&got, "placement: placed on kubernetes", &[]),
        "{got:#}"
    );
    assert_eq!(got["placement"]["chosen"], "kubernetes", "{got:#}");
    assert_eq!(got["placement"]["objective"], "cost", "{got:#}");
}

/// Placement with SageMaker configured (moto) and the cluster busy: time
/// goes to SageMaker, and so does a gang too large for any node. Failover:
/// a `backend: auto` job placed on the cluster (objective cost:
/// the cluster's cost is not counted) whose gang cannot start there (a pod
/// holds the node's CPUs) is stopped after `maxStartSeconds` and placed on
/// SageMaker (moto, with tests/sagemaker/stand_in.py playing the
/// instances), its checkpoint on the data claim copied to S3 first; the
/// PyTorchJob is gone, and the record keeps both attempts.
#[test]
#[ignore = "needs the local Kubernetes cluster (scripts/k8s-cluster start) and moto (scripts/setup)"]
fn a_job_the_cluster_cannot_start_fails_over_to_sagemaker_with_its_checkpoint() {
    let k = kube();
    let mut ns = k.namespace("failover");
    let env = ns.data_claim();
    let ckpt = ns.data.path().join("ckpt/digits");
    std::fs::create_dir_all(&ckpt).expect("checkpoint dir");
    std::fs::write(ckpt.join("state.txt"), "step=7\n").expect("checkpoint");
    let moto = crate::moto::Moto::start();
    moto.put("sm-staging", &[]);
    let _instances = moto.sagemaker_stand_in(0.94);
    let op = ns.operator();
    hold_cpus(&k, &ns);
    let sb = Sandbox::new();
    let sagemaker = |c: &mut Command| {
        moto.env(c);
        c.env(
            "SWITCHYARD_SAGEMAKER_ROLE_ARN",
            "arn:aws:iam::123456789012:role/SwitchyardTraining",
        )
        .env("SWITCHYARD_SAGEMAKER_BUCKET", "sm-staging")
        .env("SWITCHYARD_SAGEMAKER_POLL_SECONDS", "1")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    };
    // `job place` first, with the cluster busy: time goes to SageMaker (it
    // can start now), and a gang too large for any node goes there too.
    let place = |extra: &[&str]| -> Value {
        let mut c = sb.cmd();
        c.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        sagemaker(&mut c);
        let out = c
            .args(["job", "place"])
            .arg(repo_root().join("examples/ddp-digits/job.yaml"))
            .args([
                "--set",
                "spec.image=switchyard.local/pytorch:dev",
                "--set",
                "spec.placement.candidates=[kubernetes, sagemaker]",
            ])
            .args(extra)
            .args(["-o", "json"])
            .output()
            .expect("job place");
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)))
    };
    let d = place(&["--set", "spec.placement.objective=time"]);
    assert_eq!(d["chosen"], "sagemaker", "{d:#}");
    assert!(
        d["candidates"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("would wait for room")),
        "{d:#}"
    );
    let d = place(&["--set", "spec.resources.cpu=3"]);
    assert_eq!(d["chosen"], "sagemaker", "{d:#}");
    assert!(
        d["candidates"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("do not fit even an idle cluster")),
        "{d:#}"
    );
    let checkpoint = format!("spec.checkpoint={}", ckpt.display());
    let mut c = job_cmd(
        &sb,
        &env,
        &[
            "--backend",
            "auto",
            "--set",
            "spec.image=switchyard.local/pytorch:dev",
            "--set",
            "spec.resources.memory=512Mi",
            "--set",
            &checkpoint,
            "--set",
            "spec.placement.candidates=[kubernetes, sagemaker]",
            "--set",
            "spec.placement.objective=cost",
            "--set",
            "spec.placement.maxStartSeconds=20",
        ],
    );
    sagemaker(&mut c);
    let res = c.output().expect("job run");
    let job: Value = serde_json::from_slice(&res.stdout).unwrap_or(Value::Null);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert_eq!(
        (&job["state"], &job["backend"]),
        (&json!("SUCCEEDED"), &json!("sagemaker")),
        "{job:#}\n{stderr}\noperator:\n{}",
        op.log()
    );
    let id = job["job_id"].as_str().unwrap_or_default();
    let got = sb.run(&["job", "get", id, "-o", "json"]).json();
    let p = &got["placement"];
    let attempts = p["attempts"].as_array().cloned().unwrap_or_default();
    assert_eq!(attempts.len(), 2, "{got:#}");
    assert_eq!(
        (&attempts[0]["backend"], &attempts[0]["outcome"]),
        (
            &json!("kubernetes"),
            &json!("failed over: not all ranks running after 20 s (maxStartSeconds)")
        ),
        "{got:#}"
    );
    assert_eq!(
        (&attempts[1]["backend"], &attempts[1]["outcome"]),
        (&json!("sagemaker"), &json!("SUCCEEDED")),
        "{got:#}"
    );
    assert!(
        crate::common::has_event(&got, "placement: placed on kubernetes", &[]),
        "{got:#}"
    );
    assert!(
        crate::common::has_event(
            &got,
            "failover to sagemaker: not all ranks running after 20 s",
            &[]
        ),
        "{got:#}"
    );
    // The checkpoint went with it: copied to S3, named in CheckpointConfig,
    // restored where the script looks (what the stand-in read there).
    let home = got["spec"]["spec"]["checkpoint"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        home.starts_with("s3://sm-staging/switchyard/checkpoints/"),
        "{got:#}"
    );
    let uri = moto.boto3("j = sm.list_training_jobs()['TrainingJobSummaries'][0]['TrainingJobName']\nprint(sm.describe_training_job(TrainingJobName=j)['CheckpointConfig']['S3Uri'])");
    assert_eq!(uri.trim(), home);
    let logs = sb.run(&["job", "logs", id]).stdout;
    assert!(logs.contains("checkpoint state.txt=step=7"), "{logs}");
    // Nothing left on the cluster.
    let jobs = ns.get(&["get", "pytorchjobs"]);
    assert_eq!(jobs["items"].as_array().map(Vec::len), Some(0), "{jobs:#}");
    // Its KPIs: SageMaker's price for the instances it held.
    assert_eq!(got["kpi"]["backend"], "sagemaker", "{got:#}");
    assert!(got["kpi"]["est_cost_usd"].as_f64().is_some(), "{got:#}");
    k.kubectl(&["-n", &ns.name, "delete", "pod", "holder", "--wait=true"]);
}

/// `contract: modeltrainer` in pods, side by side with ModelTrainer's own
/// drivers (tests/modeltrainer/pods.py): every difference must be one that
/// docs/runtime-contract.md lists for Kubernetes.
#[test]
#[ignore = "needs the local Kubernetes cluster (scripts/k8s-cluster start), moto and sagemaker-train (scripts/setup --modeltrainer)"]
fn the_modeltrainer_contract_in_pods_is_what_modeltrainer_gives() {
    let k = kube();
    let mut ns = k.namespace("mtpods");
    let mut env = ns.data_claim();
    // The dataset the harness also puts in moto's S3 for ModelTrainer.
    let data = tempfile::tempdir().expect("data");
    for (rel, text) in [
        ("digits/train.csv", "x,y\n1,2\n"),
        ("digits/more/part-1.csv", "x,y\n3,4\n"),
    ] {
        let p = data.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
        std::fs::write(p, text).expect("file");
    }
    ns.claim("mt-data", data.path());
    env.push(("SWITCHYARD_K8S_EFS_CLAIMS", "fs-mt=mt-data".into()));
    let op = ns.operator();
    let sb = Sandbox::new();
    let out = Command::new(crate::common::python())
        .arg(repo_file("tests/modeltrainer/pods.py"))
        .arg(sb.path("harness"))
        .arg("efs://fs-mt/digits")
        .envs(sb.cmd().get_envs().filter_map(|(k, v)| Some((k, v?))))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("SWITCHYARD_BIN", env!("CARGO_BIN_EXE_switchyard"))
        .env("SWITCHYARD_TEST_TORCH_PYTHON", torch_python())
        .output()
        .expect("pods.py");
    assert!(
        out.status.success(),
        "{}\n{}\noperator:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        op.log()
    );
    println!("{}", String::from_utf8_lossy(&out.stdout));

    // The digits example trains under this contract in pods too.
    let model = ns.data.path().join("mt-model");
    let out_s = format!("spec.output={}", model.display());
    let args = job_args(&[
        "--set",
        "spec.contract=modeltrainer",
        "--set",
        "spec.hyperparameters.epochs=6",
        "--set",
        &out_s,
    ]);
    let res = job_cmd(&sb, &env, &args).output().expect("job run");
    let job: Value = serde_json::from_slice(&res.stdout).unwrap_or(Value::Null);
    assert_eq!(
        job["state"],
        "SUCCEEDED",
        "{job:#}\n{}\noperator:\n{}",
        String::from_utf8_lossy(&res.stderr),
        op.log()
    );
    assert!(
        job["metrics"]["test_accuracy"].as_f64().unwrap_or(0.0) >= 0.9,
        "{job:#}"
    );
    assert!(model.join("model.pt").is_file(), "{job:#}");

    // `requirements` in an image whose Python has no pip (this test image has
    // none): the job fails saying so, rather than at the script's import.
    let src = tempfile::tempdir().expect("src");
    std::fs::write(src.path().join("train.py"), "print('ran')\n").expect("script");
    std::fs::write(src.path().join("requirements.txt"), "tinyreq\n").expect("requirements");
    let spec = src.path().join("job.yaml");
    std::fs::write(
        &spec,
        "apiVersion: switchyard/v1\nkind: TrainingJob\nmetadata: {name: mt-req}\nspec:\n  contract: modeltrainer\n  sourceDir: .\n  entryPoint: train.py\n  requirements: requirements.txt\n",
    )
    .expect("job");
    let res = sb
        .cmd()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .args(["job", "run"])
        .arg(&spec)
        .args(job_args(&["--output", "json"]))
        .output()
        .expect("job run");
    let job: Value = serde_json::from_slice(&res.stdout).unwrap_or(Value::Null);
    assert_eq!(job["state"], "FAILED", "{job:#}");
    let id = job["job_id"].as_str().unwrap_or_default();
    let logs = sb.run(&["job", "logs", id]).stdout;
    assert!(
        format!("{job}{logs}").contains("the image's python has no pip"),
        "{job:#}\n{logs}"
    );
}

/// `switchyard job run examples/ddp-digits/job.yaml --backend kubernetes`, with
/// the output and the checkpoint on the data claim.
pub(crate) fn job_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--backend",
        "kubernetes",
        "--set",
        "spec.image=switchyard.local/pytorch:dev",
        "--set",
        "spec.resources.cpu=0.5",
        "--set",
        "spec.resources.memory=512Mi",
    ];
    args.extend_from_slice(extra);
    args
}

pub(crate) fn job_cmd(sb: &Sandbox, env: &[(&'static str, String)], args: &[&str]) -> Command {
    let mut c = sb.cmd();
    c.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    c.args(["job", "run"])
        .arg(repo_root().join("examples/ddp-digits/job.yaml"))
        .args(args)
        .args(["--output", "json"]);
    c
}

#[test]
#[ignore = "needs the local Kubernetes cluster (scripts/k8s-cluster start)"]
fn job_run_on_kubernetes_restarts_from_its_checkpoint_and_keeps_the_model() {
    let k = kube();
    let mut ns = k.namespace("jobrun");
    let env = ns.data_claim();
    let data = ns.data.path().to_path_buf();
    let op = ns.operator();
    let sb = Sandbox::new();
    let (out, ckpt) = (data.join("model-out"), data.join("ckpt"));
    let (out_s, ckpt_s) = (
        format!("spec.output={}", out.display()),
        format!("spec.checkpoint={}", ckpt.display()),
    );
    // Rank 1 is killed (exit 137) after epoch 2: ExitCode restarts the gang,
    // which resumes from the checkpoint on the claim.
    let args = job_args(&[
        "--set",
        &out_s,
        "--set",
        &ckpt_s,
        "--set",
        "spec.hyperparameters.epochs=6",
        "--set",
        "spec.hyperparameters.fail-at-epoch=2",
    ]);
    let res = job_cmd(&sb, &env, &args).output().expect("job run");
    let stdout = String::from_utf8_lossy(&res.stdout);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(
        res.status.success(),
        "{stdout}\n{stderr}\noperator:\n{}",
        op.log()
    );
    let job: Value = serde_json::from_str(&stdout).expect("job JSON");
    assert_eq!(job["state"], "SUCCEEDED", "{job:#}");
    assert_eq!(job["restarts"], 1, "{job:#}");
    assert!(
        job["metrics"]["test_accuracy"].as_f64().unwrap_or(0.0) >= 0.9,
        "{job:#}"
    );
    assert_eq!(job["model"], json!(out.to_string_lossy()), "{job:#}");
    assert!(out.join("model.pt").is_file() && out.join("metrics.json").is_file());
    assert!(ckpt.join("checkpoint.pt").is_file());
    let id = job["job_id"].as_str().expect("id");
    let r1 = sb.run(&["job", "logs", id, "--rank", "1"]);
    assert!(r1.stdout.contains("injected failure"), "{}", r1.stdout);
    assert!(
        r1.stdout.contains("resumed from checkpoint at epoch 2"),
        "{}",
        r1.stdout
    );
    let pj = ns.get(&["get", "pytorchjobs"]);
    let spec = &pj["items"][0]["spec"]["pytorchReplicaSpecs"];
    assert!(
        spec["Master"]["template"]["spec"]["containers"][0]["volumeMounts"]
            .as_array()
            .is_some_and(|m| m
                .iter()
                .any(|m| m["mountPath"] == "/opt/ml/model" && m["subPath"] == "model-out")),
        "{spec:#}"
    );

    // backoffLimit 0: the first kill fails the job, with the reason.
    let fresh = format!("spec.checkpoint={}", data.join("ckpt2").display());
    let args = job_args(&[
        "--set",
        &fresh,
        "--set",
        "spec.hyperparameters.epochs=4",
        "--set",
        "spec.hyperparameters.fail-at-epoch=1",
        "--set",
        "spec.backoffLimit=0",
    ]);
    let res = job_cmd(&sb, &env, &args).output().expect("job run");
    let job: Value = serde_json::from_slice(&res.stdout).expect("job JSON");
    assert_eq!(job["state"], "FAILED", "{job:#}");
    assert!(
        job["failure_reason"]
            .as_str()
            .unwrap_or("")
            .contains("backoffLimit 0"),
        "{job:#}"
    );
}

/// Starts `job run` and waits until rank 1's pod
/// has logged its second epoch; returns the CLI process and the job id.
fn start_job_in_pods(
    sb: &Sandbox,
    env: &[(&'static str, String)],
    args: &[&str],
) -> (std::process::Child, String) {
    let ids = || -> Vec<String> {
        let r = sb.run(&["job", "list", "--output", "json"]);
        serde_json::from_str::<Value>(&r.stdout)
            .ok()
            .and_then(|v| v["jobs"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|j| j["job_id"].as_str().map(str::to_string))
            .collect()
    };
    let known = ids();
    let child = job_cmd(sb, env, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("job run");
    let mut id = String::new();
    wait_until("the job to be recorded", Duration::from_secs(30), || {
        ids()
            .into_iter()
            .find(|i| !known.contains(i))
            .map(|i| id = i)
            .is_some()
    });
    // Lines from rank 1's pod arrive while the job runs.
    wait_until("rank 1's log lines", Duration::from_secs(180), || {
        sb.run(&["job", "logs", &id, "--rank", "1"])
            .stdout
            .contains("epoch=2 ")
    });
    (child, id)
}

#[test]
#[ignore = "needs the local Kubernetes cluster (scripts/k8s-cluster start)"]
fn a_job_whose_follower_died_is_resumed_or_stopped_in_the_cluster() {
    let k = kube();
    let mut ns = k.namespace("orphan");
    let env = ns.data_claim();
    let _op = ns.operator();
    let sb = Sandbox::new();
    let names = |ns: &Ns<'_>| -> Vec<String> {
        ns.get(&["get", "pytorchjobs"])["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|j| j["metadata"]["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };

    // The follower is killed mid-job; `job resume` re-attaches to the same
    // PyTorchJob (no second one) and records how it ended.
    // A job of `epochs` one-second epochs whose follower is killed (SIGKILL)
    // once its pods train; returns its id.
    let orphan = |epochs: u32| {
        let epochs = format!("spec.hyperparameters.epochs={epochs}");
        let args = job_args(&[
            "--set",
            &epochs,
            "--set",
            "spec.hyperparameters.sleep-per-epoch=1",
        ]);
        let (mut child, id) = start_job_in_pods(&sb, &env, &args);
        child.kill().unwrap();
        child.wait().unwrap();
        id
    };
    let id = orphan(6);
    let before = names(&ns);
    assert_eq!(before.len(), 1, "{before:?}");
    let r = sb.run(&["job", "get", &id, "--output", "json"]);
    assert_eq!(r.json()["state"], "RUNNING", "{}", r.stdout);
    // Resumed where the cluster cannot be reached: an error, and the job is
    // left RUNNING and orphaned (it still runs there), not recorded FAILED.
    let r = sb.run(&["job", "resume", &id]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("it is left as it was"), "{}", r.stderr);
    let left = sb.run(&["job", "get", &id, "--output", "json"]).json();
    assert_eq!(left["state"], "RUNNING", "{left:#}");
    let r = sb.run_with(&env, &["job", "resume", &id, "--output", "json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let job = r.json();
    assert_eq!(job["state"], "SUCCEEDED", "{job:#}");
    assert!(
        job["metrics"]["test_accuracy"].as_f64().is_some(),
        "{job:#}"
    );
    assert_eq!(names(&ns), before, "the same PyTorchJob, followed again");
    let detail = sb.run(&["job", "get", &id, "--output", "json"]).json();
    assert!(
        detail["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("re-attached"))),
        "{detail:#}"
    );
    // A job that ended is not resumed again.
    let r = sb.run_with(&env, &["job", "resume", &id]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("nothing to resume"), "{}", r.stderr);

    // The follower of a second job is killed; `job cancel` deletes its
    // PyTorchJob and pods (before, it only marked the record CANCELED).
    let id = orphan(200);
    let now = names(&ns);
    let second: Vec<String> = now
        .iter()
        .filter(|n| !before.contains(n))
        .cloned()
        .collect();
    assert_eq!(second.len(), 1, "{before:?} then {now:?}");
    let r = sb.run_with(&env, &["job", "cancel", &id]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("stopped PyTorchJob"), "{}", r.stderr);
    wait_until(
        "the orphan's PyTorchJob and its pods to be deleted",
        Duration::from_secs(60),
        || {
            let pods = ns.get(&["get", "pods"]);
            names(&ns) == before
                && pods["items"].as_array().is_some_and(|p| {
                    p.iter().all(|p| {
                        !p["metadata"]["name"]
                            .as_str()
                            .unwrap_or("")
                            .starts_with(&second[0])
                    })
                })
        },
    );
    let r = sb.run(&["job", "get", &id, "--output", "json"]);
    let job = r.json();
    assert_eq!(job["state"], "CANCELED", "{}", r.stdout);
    assert!(
        job["failure_reason"]
            .as_str()
            .is_some_and(|f| f.starts_with("canceled: stopped PyTorchJob")),
        "{job:#}"
    );
}

#[test]
#[ignore = "needs the local Kubernetes cluster (scripts/k8s-cluster start)"]
fn job_logs_stream_live_from_pods_and_cancel_deletes_the_pytorchjob() {
    let k = kube();
    let mut ns = k.namespace("cancel");
    let env = ns.data_claim();
    let _op = ns.operator();
    let sb = Sandbox::new();
    let args = job_args(&[
        "--set",
        "spec.hyperparameters.epochs=200",
        "--set",
        "spec.hyperparameters.sleep-per-epoch=1",
    ]);
    let (mut child, id) = start_job_in_pods(&sb, &env, &args);
    let r = sb.run(&["job", "get", &id, "--output", "json"]);
    assert_eq!(r.json()["state"], "RUNNING", "{}", r.stdout);
    let r = sb.run(&["job", "cancel", &id]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let status = child.wait().expect("job run ends");
    assert!(!status.success());
    wait_until(
        "the PyTorchJob and its pods to be deleted",
        Duration::from_secs(60),
        || {
            let jobs = ns.get(&["get", "pytorchjobs"]);
            let pods = ns.get(&["get", "pods"]);
            jobs["items"].as_array().is_some_and(Vec::is_empty)
                && pods["items"].as_array().is_some_and(Vec::is_empty)
        },
    );
    let r = sb.run(&["job", "get", &id, "--output", "json"]);
    assert_eq!(r.json()["state"], "CANCELED", "{}", r.stdout);
}

/// `switchyard` with pipeline steps as Pods in `ns`; the data folder is the
/// claim's folder, so outputs come back through it.
pub(crate) fn pod_steps(sb: &Sandbox, k: &Kube, ns: &str, data: &Path) -> Command {
    let mut c = sb.cmd();
    c.env("SWITCHYARD_HOME", data)
        .env("SWITCHYARD_TASK_BACKEND", "kubernetes")
        .env("SWITCHYARD_K8S_NAMESPACE", ns)
        .env("SWITCHYARD_K8S_KUBECONFIG", &k.server)
        .env("SWITCHYARD_K8S_TASK_CLAIM", "switchyard-data")
        .env("SWITCHYARD_K8S_TASK_MOUNT", data);
    c
}

/// Runs a test pipeline with `cmd` (see [`pod_steps`]); fails showing the
/// namespace's pods unless the run succeeded; returns the run document.
pub(crate) fn run_on_pods(
    k: &Kube,
    ns: &str,
    mut cmd: Command,
    pipeline: &str,
    args: &[&str],
) -> Value {
    let p = crate::common::pipeline(pipeline);
    let out = cmd
        .args([
            "run",
            p.to_str().expect("utf8"),
            "--output",
            "json",
            "--quiet",
        ])
        .args(args)
        .output()
        .expect("switchyard run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{stdout}\n{stderr}\n{}",
        k.kubectl(&["-n", ns, "get", "pods", "-o", "wide"])
    );
    serde_json::from_str(&stdout).expect("run JSON")
}

#[test]
#[ignore = "needs the local Kubernetes cluster (scripts/k8s-cluster start)"]
fn a_task_run_again_gets_a_new_pod_not_its_failed_one() {
    let k = kube();
    let mut ns = k.namespace("retry");
    let data = ns.data.path().to_path_buf();
    ns.claim("switchyard-data", &data);
    let sb = Sandbox::new();
    let p = crate::common::pipeline("k8s_retry");
    let out = pod_steps(&sb, &k, &ns.name, &data)
        .args([
            "run",
            p.to_str().expect("utf8"),
            "--output",
            "json",
            "--quiet",
        ])
        .output()
        .expect("switchyard run");
    let first: Value = serde_json::from_slice(&out.stdout).expect("run JSON");
    assert_eq!(first["state"], "FAILED", "{first:#}");
    let id = first["run_id"].as_str().expect("run id");
    // Run again: attempt 1 in a pod of its own. (Before, the attempt number
    // started at 0 again: the pod name existed (409), the old failed pod was
    // followed and its failure reported without anything running.)
    let out = pod_steps(&sb, &k, &ns.name, &data)
        .args(["runs", "resume", id, "--output", "json", "--quiet"])
        .output()
        .expect("switchyard runs resume");
    let again: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(
        again["state"],
        "SUCCEEDED",
        "{again:#}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        k.kubectl(&["-n", &ns.name, "get", "pods", "-o", "wide"])
    );
    assert!(
        again["outputs"]["Output"]
            .as_str()
            .is_some_and(|o| o.starts_with("ran on task-")),
        "{again:#}"
    );
    let t = crate::common::task(&again, "second-time-lucky");
    assert_eq!(t["attempt"], 1, "{t:#}");
    let pods = ns.get(&["get", "pods"]);
    let mut phases: Vec<(String, String)> = pods["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            (
                p["metadata"]["annotations"]["switchyard.io/attempt-id"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                p["status"]["phase"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    phases.sort();
    assert_eq!(phases.len(), 2, "{phases:?}");
    assert!(
        phases[0].0.ends_with("-0") && phases[0].1 == "Failed",
        "{phases:?}"
    );
    assert!(
        phases[1].0.ends_with("-1") && phases[1].1 == "Succeeded",
        "{phases:?}"
    );
}

/// Removes a node taint when the test ends, however it ends.
struct Taint<'a>(&'a Kube, &'static str);

impl Drop for Taint<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .try_kubectl(&["taint", "nodes", "node-1", &format!("{}-", self.1)], None);
    }
}

#[test]
#[ignore = "needs the local Kubernetes cluster (scripts/k8s-cluster start)"]
fn pipeline_steps_run_as_pods_and_pass_parameters_and_artifacts() {
    let k = kube();
    let mut ns = k.namespace("steps");
    let data = ns.data.path().to_path_buf();
    ns.claim("switchyard-data", &data);
    let shared = tempfile::tempdir().expect("tempdir");
    std::fs::write(shared.path().join("seed.txt"), "seed-42").expect("seed");
    ns.claim("shared-data", shared.path());
    k.kubectl(&[
        "-n",
        &ns.name,
        "create",
        "secret",
        "generic",
        "api-token",
        "--from-literal=token=s3cret",
    ]);
    k.kubectl(&["label", "nodes", "node-1", "pool=cpu", "--overwrite"]);
    // Only a pod that tolerates this taint may start here now.
    k.kubectl(&[
        "taint",
        "nodes",
        "node-1",
        "dedicated=ml:NoSchedule",
        "--overwrite",
    ]);
    let _untaint = Taint(&k, "dedicated=ml:NoSchedule");

    let sb = Sandbox::new();
    let cmd = pod_steps(&sb, &k, &ns.name, &data);
    let run = run_on_pods(&k, &ns.name, cmd, "k8s_real", &["-p", "who=pods"]);
    assert_eq!(run["state"], "SUCCEEDED", "{run:#}");
    let report = run["outputs"]["Output"]
        .as_str()
        .unwrap_or_else(|| panic!("{run:#}"));
    assert!(
        report.starts_with("hello pods (s3cret) seed-42 on task-")
            && report.contains("/ rows=45 / left by task-"),
        "{report}"
    );
    // One pod per step, each really placed by the scheduler on the labelled, tainted node.
    let pods = ns.get(&["get", "pods"]);
    let pods = pods["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(pods.len(), 2, "{pods:#?}");
    for p in &pods {
        assert_eq!(p["spec"]["nodeName"], "node-1");
        assert_eq!(p["status"]["phase"], "Succeeded");
        assert_eq!(
            p["spec"]["containers"][0]["image"],
            "switchyard.local/switchyard:dev"
        );
    }
    let producer = pods
        .iter()
        .find(|p| p["spec"]["nodeSelector"]["pool"] == "cpu")
        .expect("the producing pod has the node selector");
    assert!(producer["spec"]["tolerations"].as_array().is_some_and(|t| t
        .iter()
        .any(|t| t["key"] == "dedicated" && t["value"] == "ml")));
}

#[test]
#[ignore = "needs the local Kubernetes cluster (scripts/k8s-cluster start) and moto (scripts/setup)"]
fn pod_steps_of_an_s3_root_run_put_their_artifacts_in_s3() {
    let moto = crate::moto::Moto::start();
    moto.put("art", &[]);
    let k = kube();
    let mut ns = k.namespace("s3root");
    let data = ns.data.path().to_path_buf();
    ns.claim("switchyard-data", &data);
    let sb = Sandbox::new();
    let mut cmd = pod_steps(&sb, &k, &ns.name, &data);
    moto.env(&mut cmd);
    let run = run_on_pods(
        &k,
        &ns.name,
        cmd,
        "k8s_s3",
        &["--pipeline-root", "s3://art/k8s"],
    );
    let id = run["run_id"].as_str().expect("run id");
    let uri = format!("s3://art/k8s/k8s-s3/{id}/pod-write/data");
    let report = run["outputs"]["Output"].as_str().unwrap_or_default();
    assert!(report.starts_with("from "), "{report}");
    assert!(report.ends_with(&format!("\n{uri}\n")), "{report}");
    let keys = moto.keys("art");
    for key in ["part-0", "uri"] {
        let full = format!("k8s/k8s-s3/{id}/pod-write/data/{key}");
        assert!(keys.contains(&full), "{full} not in {keys:?}");
    }
    let pods = ns.get(&["get", "pods"]);
    assert_eq!(pods["items"].as_array().map(Vec::len), Some(2), "{pods:#}");
}
