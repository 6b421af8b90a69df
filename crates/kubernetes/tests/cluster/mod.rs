//! A real Kubernetes control plane for the tests: etcd and kube-apiserver,
//! built from their Go modules by scripts/k8s-servers (cached under
//! ~/.cache/switchyard/k8s/bin), started on 127.0.0.1 with a static token —
//! the way operators are tested with envtest. No kubelet runs, so the tests
//! move pod phases themselves through the status subresource.

// Each test binary uses a different part of this shared module.
#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

pub const TOKEN: &str = "switchyard-test-token";
/// Users with no rights but what deploy/ grants them.
pub const OPERATOR_TOKEN: &str = "switchyard-operator-token";
pub const SERVER_TOKEN: &str = "switchyard-server-token";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("SWITCHYARD_K8S_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/switchyard/k8s/bin")
        });
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} not found: run scripts/k8s-servers (scripts/setup --k8s) to build etcd and kube-apiserver from their Go modules",
        p.display()
    );
    p
}

/// Children die with the test process even if it is killed.
fn spawn(cmd: &mut Command, log: &std::path::Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::other)
        });
    }
    cmd.stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"))
}

/// etcd + kube-apiserver for one test; stopped (by PID) when dropped.
pub struct Cluster {
    etcd: Child,
    apiserver: Child,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub url: String,
}

impl Cluster {
    /// Ports are picked free and released before the servers bind them, so
    /// another test's connection can take one meanwhile: then start again on
    /// new ports (three tries).
    pub async fn start() -> Cluster {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start().await {
                Ok(c) => return c,
                Err(log) => last = log,
            }
        }
        panic!("kube-apiserver exited three times; last log:\n{last}");
    }

    async fn try_start() -> Result<Cluster, String> {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (client_port, peer_port, secure_port) = (free_port(), free_port(), free_port());
        let etcd = spawn(
            Command::new(bin("etcd"))
                .arg("--name=test")
                .arg(format!("--data-dir={}", d.join("etcd").display()))
                .arg(format!(
                    "--listen-client-urls=http://127.0.0.1:{client_port}"
                ))
                .arg(format!(
                    "--advertise-client-urls=http://127.0.0.1:{client_port}"
                ))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"
                ))
                .arg(format!(
                    "--initial-cluster=test=http://127.0.0.1:{peer_port}"
                ))
                .arg("--unsafe-no-fsync"),
            &d.join("etcd.log"),
        );
        let key = d.join("sa.key");
        let st = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("2048")
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "openssl genrsa");
        std::fs::write(
            d.join("tokens.csv"),
            format!("{TOKEN},admin,admin,system:masters\n{OPERATOR_TOKEN},switchyard-operator,operator\n{SERVER_TOKEN},switchyard-server,server\n"),
        )
        .unwrap();
        let apiserver = spawn(
            Command::new(bin("kube-apiserver"))
                .arg(format!("--etcd-servers=http://127.0.0.1:{client_port}"))
                .arg(format!("--secure-port={secure_port}"))
                .arg("--bind-address=127.0.0.1")
                .arg("--advertise-address=127.0.0.1")
                .arg(format!("--cert-dir={}", d.join("certs").display()))
                .arg(format!(
                    "--token-auth-file={}",
                    d.join("tokens.csv").display()
                ))
                .arg("--authorization-mode=RBAC")
                .arg("--service-account-issuer=https://kubernetes.default.svc")
                .arg(format!("--service-account-key-file={}", key.display()))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    key.display()
                ))
                .arg("--service-cluster-ip-range=10.96.0.0/16")
                // No controller-manager creates the default ServiceAccount here.
                .arg("--disable-admission-plugins=ServiceAccount")
                .arg("--enable-priority-and-fairness=false"),
            &d.join("apiserver.log"),
        );
        let url = format!("https://127.0.0.1:{secure_port}");
        let kubeconfig = write_kubeconfig(d, &url, "admin", TOKEN);
        let mut c = Cluster {
            etcd,
            apiserver,
            dir,
            kubeconfig,
            url,
        };
        c.wait_ready().await?;
        Ok(c)
    }

    /// Err(the API server's log) when it exited before answering.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(st)) = self.apiserver.try_wait() {
                let log = std::fs::read_to_string(self.dir.path().join("apiserver.log"))
                    .unwrap_or_default();
                let tail: String = log
                    .chars()
                    .rev()
                    .take(4000)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                return Err(format!("kube-apiserver exited ({st}):\n{tail}"));
            }
            if let Ok(client) = self.client().await {
                let ns: Api<Namespace> = Api::all(client);
                if ns.get("default").await.is_ok() {
                    return Ok(());
                }
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready after 120 s"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// A kubeconfig for one of the test users.
    pub fn kubeconfig_for(&self, user: &str, token: &str) -> PathBuf {
        write_kubeconfig(self.dir.path(), &self.url, user, token)
    }

    pub async fn client(&self) -> Result<Client, String> {
        client_from(&self.kubeconfig).await
    }

    /// Creates the RBAC objects of a deploy/ manifest (ClusterRole, Role),
    /// bound to `user` instead of the manifest's service account.
    pub async fn grant(&self, manifest: &str, user: &str, namespace: Option<&str>) {
        use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
        let client = self.client().await.unwrap();
        let subject =
            json!([{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]);
        for doc in deploy_docs(manifest) {
            match doc["kind"].as_str() {
                Some("ClusterRole") => {
                    let role: ClusterRole = serde_json::from_value(doc.clone()).unwrap();
                    let name = role.metadata.name.clone().unwrap();
                    Api::<ClusterRole>::all(client.clone())
                        .create(&PostParams::default(), &role)
                        .await
                        .unwrap();
                    let binding: ClusterRoleBinding = serde_json::from_value(json!({
                        "metadata": {"name": format!("{name}-test")},
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                        "subjects": subject,
                    }))
                    .unwrap();
                    Api::<ClusterRoleBinding>::all(client.clone())
                        .create(&PostParams::default(), &binding)
                        .await
                        .unwrap();
                }
                Some("Role") => {
                    let ns = namespace.expect("a namespace for the Role");
                    let mut role: Role = serde_json::from_value(doc.clone()).unwrap();
                    role.metadata.namespace = Some(ns.to_string());
                    let name = role.metadata.name.clone().unwrap();
                    Api::<Role>::namespaced(client.clone(), ns)
                        .create(&PostParams::default(), &role)
                        .await
                        .unwrap();
                    let binding: RoleBinding = serde_json::from_value(json!({
                        "metadata": {"name": format!("{name}-test"), "namespace": ns},
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                        "subjects": subject,
                    }))
                    .unwrap();
                    Api::<RoleBinding>::namespaced(client.clone(), ns)
                        .create(&PostParams::default(), &binding)
                        .await
                        .unwrap();
                }
                _ => {}
            }
        }
    }

    /// Installs the PyTorchJob CRD generated from the Rust types and waits
    /// until the API server serves it.
    pub async fn install_crd(&self) {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        let client = self.client().await.unwrap();
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        crds.create(&PostParams::default(), &switchyard_kubernetes::crd::crd())
            .await
            .unwrap();
        eventually("the CRD to be served", 30, || async {
            let jobs: Api<switchyard_kubernetes::crd::PyTorchJob> =
                Api::namespaced(client.clone(), "default");
            jobs.list(&Default::default()).await.ok().map(|_| ())
        })
        .await;
    }

    /// Registers a node with this much allocatable capacity (no kubelet behind it).
    pub async fn add_node(&self, name: &str, cpu: &str, memory: &str, gpus: u32) {
        let nodes: Api<Node> = Api::all(self.client().await.unwrap());
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        }))
        .unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
        let status = json!({"status": {
            "capacity": {"cpu": cpu, "memory": memory, "nvidia.com/gpu": gpus.to_string(), "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": memory, "nvidia.com/gpu": gpus.to_string(), "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "Test", "message": "no kubelet"}],
        }});
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    }

    pub async fn namespace(&self, name: &str) {
        let api: Api<Namespace> = Api::all(self.client().await.unwrap());
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        api.create(&PostParams::default(), &ns).await.unwrap();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.apiserver.kill();
        let _ = self.apiserver.wait();
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
    }
}

/// Sets a pod's phase (and, when it ended, the training container's exit code),
/// as a kubelet would.
pub async fn set_phase(pods: &Api<Pod>, name: &str, phase: &str, exit: Option<i32>) {
    let mut status = json!({"phase": phase});
    if let Some(code) = exit {
        status["containerStatuses"] = json!([{
            "name": "pytorch", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
            "state": {"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" }}},
        }]);
    } else if phase == "Running" {
        status["containerStatuses"] = json!([{
            "name": "pytorch", "ready": true, "restartCount": 0, "image": "x", "imageID": "",
            "state": {"running": {}},
        }]);
    }
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": status})),
    )
    .await
    .unwrap_or_else(|e| panic!("set {name} {phase}: {e}"));
}

/// Polls `f` until it returns Some, or panics naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn write_kubeconfig(dir: &std::path::Path, url: &str, user: &str, token: &str) -> PathBuf {
    let path = dir.join(format!("kubeconfig-{user}"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    insecure-skip-tls-verify: true\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context: {{cluster: test, user: {user}, namespace: default}}\ncurrent-context: test\n"
        ),
    )
    .unwrap();
    path
}

pub async fn client_from(kubeconfig: &std::path::Path) -> Result<Client, String> {
    switchyard_kubernetes::client(Some(kubeconfig)).await
}

/// The documents of a manifest under deploy/.
pub fn deploy_docs(name: &str) -> Vec<serde_json::Value> {
    let path = PathBuf::from(manifest_dir())
        .join("../../deploy")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.split("\n---")
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .map(|d| {
            serde_saphyr::from_str::<serde_json::Value>(d).unwrap_or_else(|e| panic!("{name}: {e}"))
        })
        .collect()
}

/// This package's folder: where cargo runs the test from (the path compiled in
/// can belong to another checkout sharing the build folder).
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
