//! Pipeline steps as Pods: a kfp-compiled pipeline (with kfp-kubernetes
//! platform config) run by the real engine with the Pod task backend against a
//! real kube-apiserver. No kubelet runs here, so the test plays one: it runs
//! each pod's command on this machine (the image is not pulled) with the pod's
//! environment and working folder, and writes the pod's status.

mod cluster;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cluster::{set_phase, Cluster};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use switchyard_engine::{Engine, RunOptions};
use switchyard_kubernetes::steps::{PodTaskBackend, TaskPodConfig};
use switchyard_store::{RunStore, SqlStore, State};
use tokio_util::sync::CancellationToken;

fn repo() -> PathBuf {
    PathBuf::from(manifest_dir()).join("../..")
}

/// Compiles tests/pipelines/k8s_platform.py with the real kfp + kfp-kubernetes.
fn compile(out: &std::path::Path) -> String {
    let py = repo().join(".venv/bin/python");
    let st = std::process::Command::new(&py)
        .arg(repo().join("tests/pipelines/compile.py"))
        .arg(out)
        .output()
        .expect("run .venv/bin/python (scripts/setup creates it)");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    std::fs::read_to_string(out.join("k8s_platform.yaml")).unwrap()
}

/// Plays the kubelet for every pod in `ns`: runs its command here, then marks
/// it Succeeded or Failed with the exit code. Returns the pods it saw.
fn kubelet(pods: Api<Pod>, seen: Arc<std::sync::Mutex<Vec<Pod>>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut started = std::collections::BTreeSet::new();
        let mut stream = watcher::watcher(pods.clone(), watcher::Config::default()).boxed();
        while let Ok(Some(ev)) = stream.try_next().await {
            let p = match ev {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => p,
                _ => continue,
            };
            if !started.insert(p.name_any()) {
                continue;
            }
            seen.lock().unwrap().push(p.clone());
            let c = &p.spec.as_ref().unwrap().containers[0];
            let argv = c.command.clone().unwrap();
            let mut cmd = std::process::Command::new(&argv[0]);
            cmd.args(&argv[1..])
                .current_dir(c.working_dir.clone().unwrap());
            for e in c.env.iter().flatten() {
                match (&e.value, &e.value_from) {
                    (Some(v), _) => {
                        cmd.env(&e.name, v);
                    }
                    // The secret's value, as the kubelet would resolve it.
                    (None, Some(_)) => {
                        cmd.env(&e.name, "s3cr3t");
                    }
                    _ => {}
                }
            }
            set_phase(&pods, &p.name_any(), "Running", None).await;
            let status = tokio::task::spawn_blocking(move || cmd.status())
                .await
                .unwrap()
                .unwrap();
            let code = status.code().unwrap_or(1);
            set_phase(
                &pods,
                &p.name_any(),
                if code == 0 { "Succeeded" } else { "Failed" },
                Some(code),
            )
            .await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the kfp SDK venv and kube-apiserver + etcd (scripts/setup --k8s)"]
async fn pipeline_steps_run_as_pods_with_their_platform_config() {
    let c = Cluster::start().await;
    let client = c.client().await.unwrap();
    c.namespace("pipelines").await;
    // The server's rights from deploy/server.yaml, in the namespace of the task pods.
    c.grant("server.yaml", "switchyard-server", Some("pipelines"))
        .await;
    let work = tempfile::tempdir().unwrap();
    let text = compile(&work.path().join("compiled"));
    let pipeline = switchyard_kfp_spec::parse_pipeline(&text).unwrap();

    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let store = Arc::new(SqlStore::open(&home.join("switchyard.db")).await.unwrap());
    let backend = PodTaskBackend::new(TaskPodConfig {
        namespace: "pipelines".into(),
        claim: "switchyard-data".into(),
        mount_path: home.clone(),
        kubeconfig: Some(c.kubeconfig_for("switchyard-server", cluster::SERVER_TOKEN)),
        server_url: None,
        token_secret: None,
    });
    let engine = Engine::new(store.clone(), Arc::new(backend), home.join("logs"));
    let pods: Api<Pod> = Api::namespaced(client.clone(), "pipelines");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kl = kubelet(pods.clone(), seen.clone());

    let opts = RunOptions {
        service_account: None,
        parallelism: 2,
        cache: false,
        pipeline_root: home.join("artifacts"),
        display_name: None,
        ..Default::default()
    };
    let params = BTreeMap::from([("who".to_string(), serde_json::json!("kube"))]);
    let run = engine.create_run(&pipeline, &params, &opts).await.unwrap();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let done = tokio::time::timeout(
        Duration::from_secs(120),
        engine.execute(&run.id, tx, CancellationToken::new(), false),
    )
    .await
    .expect("the run finished")
    .unwrap();
    assert_eq!(done.state, State::Succeeded, "{:?}", done.error);

    // The first step's output came back to the engine and fed the second step.
    let tasks = store.list_tasks(&run.id).await.unwrap();
    let greet = tasks.iter().find(|t| t.task_key == "greet").unwrap();
    let out = greet.outputs.as_ref().unwrap().to_string();
    assert!(out.contains("hello kube (s3cr3t)"), "{out}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "one pod per step");
    let g = seen
        .iter()
        .find(|p| {
            p.annotations()
                .get("switchyard.io/task-key")
                .map(String::as_str)
                == Some("greet")
        })
        .unwrap();
    let spec = g.spec.clone().unwrap();
    let c0 = &spec.containers[0];
    assert_eq!(c0.image.as_deref(), Some("busybox:1.36"));
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(spec.node_selector.clone().unwrap()["pool"], "cpu");
    let tol = &spec.tolerations.clone().unwrap()[0];
    assert_eq!(
        (
            tol.key.as_deref(),
            tol.value.as_deref(),
            tol.effect.as_deref()
        ),
        (Some("dedicated"), Some("ml"), Some("NoSchedule"))
    );
    let secret_env = c0.env.iter().flatten().find(|e| e.name == "TOKEN").unwrap();
    let key = secret_env
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (key.name.as_str(), key.key.as_str()),
        ("api-token", "token")
    );
    let claims: Vec<String> = spec
        .volumes
        .unwrap()
        .iter()
        .filter_map(|v| {
            v.persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.clone())
        })
        .collect();
    assert_eq!(claims, ["switchyard-data", "shared-data"]);
    let mounts: Vec<String> = c0
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.clone())
        .collect();
    assert!(mounts.contains(&"/shared".to_string()));
    assert!(mounts.contains(&home.to_string_lossy().into_owned()));
    // The second step has no platform config: none applied.
    let s = seen.iter().find(|p| p.name_any() != g.name_any()).unwrap();
    assert!(s
        .spec
        .as_ref()
        .unwrap()
        .node_selector
        .as_ref()
        .is_none_or(|n| n.is_empty()));
    kl.abort();
}

/// A run's executing process died with its step Pods running: `stop_run`
/// (what canceling that run calls) deletes the run's unfinished Pods, with
/// the server's rights, and leaves other runs' Pods alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kube-apiserver + etcd (scripts/setup --k8s)"]
async fn the_pods_a_dead_run_left_are_stopped_by_its_run_id() {
    use switchyard_backend::{Backend, Job};
    let work = tempfile::tempdir().unwrap();
    let (c, backend) = pod_backend(work.path()).await;
    let client = c.client().await.unwrap();
    let backend = Arc::new(backend);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "pipelines");
    // No kubelet: each pod stays Pending, as a long step would stay Running.
    for (run, task) in [("run-a", "train"), ("run-b", "train")] {
        let job = Job {
            id: format!("{run}-{task}-0"),
            run_id: run.into(),
            display_name: task.into(),
            image: "busybox:1.36".into(),
            argv: vec!["sleep".into(), "3600".into()],
            env: BTreeMap::new(),
            work_dir: work.path().join(run),
            resources: Default::default(),
            platform: Default::default(),
            service_account: None,
        };
        let (b, sink) = (
            backend.clone(),
            Arc::new(|_: &str| {}) as switchyard_backend::LogSink,
        );
        let following =
            tokio::spawn(async move { b.run(job, sink, CancellationToken::new()).await });
        let name = format!("{run}-{task}-0");
        cluster::eventually(&format!("pod of {run}"), 30, || async {
            pods.list(&Default::default())
                .await
                .ok()?
                .items
                .iter()
                .any(|p| p.annotations().get("switchyard.io/attempt-id") == Some(&name))
                .then_some(())
        })
        .await;
        // The follower dies; the pod does not.
        following.abort();
    }
    let stopped = backend.stop_run("run-a").await.expect("stopped");
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    assert!(
        stopped[0].starts_with("deleted pod pipelines/"),
        "{stopped:?}"
    );
    let left = cluster::eventually("run-a's pod gone", 30, || async {
        let items = pods.list(&Default::default()).await.ok()?.items;
        let runs: Vec<String> = items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.annotations().get("switchyard.io/run-id").cloned())
            .collect();
        (!runs.contains(&"run-a".to_string())).then_some(runs)
    })
    .await;
    assert_eq!(left, ["run-b"], "another run's pod is left alone");
    assert!(backend.stop_run("run-a").await.expect("again").is_empty());
}

/// A cluster with the `pipelines` namespace, the server's Role there (from
/// deploy/server.yaml) and the Pod task backend acting as the server.
async fn pod_backend(work: &std::path::Path) -> (Cluster, PodTaskBackend) {
    let c = Cluster::start().await;
    c.namespace("pipelines").await;
    c.grant("server.yaml", "switchyard-server", Some("pipelines"))
        .await;
    let backend = PodTaskBackend::new(TaskPodConfig {
        namespace: "pipelines".into(),
        claim: "switchyard-data".into(),
        mount_path: work.to_path_buf(),
        kubeconfig: Some(c.kubeconfig_for("switchyard-server", cluster::SERVER_TOKEN)),
        server_url: None,
        token_secret: None,
    });
    (c, backend)
}

/// A `CreatePVC` step's claim is created (as KFP's driver makes it) and deleted
/// by the Pod backend under exactly deploy/server.yaml's Role.
#[tokio::test]
#[ignore = "needs kube-apiserver + etcd (scripts/setup --k8s)"]
async fn claims_of_volume_steps_are_created_and_deleted_under_the_servers_role() {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    use switchyard_backend::{Backend, VolumeClaim};
    let work = tempfile::tempdir().unwrap();
    let (c, backend) = pod_backend(work.path()).await;
    let client = c.client().await.unwrap();
    let claim = VolumeClaim {
        run_id: "run-v".into(),
        name: "0d1f-my-pvc".into(),
        size: "5Gi".into(),
        access_modes: vec!["ReadWriteOnce".into()],
        storage_class: "standard".into(),
        annotations: [("team".to_string(), "ml".to_string())].into(),
        volume_name: None,
        local_dir: work.path().join("unused"),
    };
    let said = backend.create_volume(&claim).await.expect("created");
    assert!(
        said.starts_with("created PersistentVolumeClaim pipelines/0d1f-my-pvc"),
        "{said}"
    );
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client, "pipelines");
    let got = pvcs.get("0d1f-my-pvc").await.expect("the claim");
    let spec = got.spec.clone().expect("spec");
    assert_eq!(spec.storage_class_name.as_deref(), Some("standard"));
    assert_eq!(
        spec.resources
            .and_then(|r| r.requests)
            .map(|r| r["storage"].0.clone()),
        Some("5Gi".to_string())
    );
    assert_eq!(
        got.annotations().get("team").map(String::as_str),
        Some("ml")
    );
    assert_eq!(
        got.annotations()
            .get("switchyard.io/run-id")
            .map(String::as_str),
        Some("run-v")
    );
    // A resumed run creating it again uses it; another run may not take it.
    let again = backend.create_volume(&claim).await.expect("again");
    assert!(again.contains("created by this run before"), "{again}");
    let other = VolumeClaim {
        run_id: "run-w".into(),
        ..claim.clone()
    };
    let err = backend
        .create_volume(&other)
        .await
        .expect_err("not run-w's");
    assert!(err.to_string().contains("is not this run's"), "{err}");
    // Nor is the claim of the server's data a pipeline's to create or delete.
    let data = VolumeClaim {
        name: "switchyard-data".into(),
        ..claim.clone()
    };
    assert!(backend.create_volume(&data).await.is_err());
    assert!(backend
        .delete_volume("run-v", "switchyard-data", work.path())
        .await
        .is_err());
    let said = backend
        .delete_volume("run-v", "0d1f-my-pvc", work.path())
        .await
        .expect("deleted");
    assert!(said.starts_with("deleted PersistentVolumeClaim"), "{said}");
    // No controller manager here removes the protection finalizer: deleting is
    // what the API server records.
    cluster::eventually("the claim deleted", 30, || async {
        match pvcs.get_opt("0d1f-my-pvc").await.ok()? {
            None => Some(()),
            Some(p) => p.metadata.deletion_timestamp.map(|_| ()),
        }
    })
    .await;
}

/// This package's folder: where cargo runs the test from (the path compiled in
/// can belong to another checkout sharing the build folder).
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
