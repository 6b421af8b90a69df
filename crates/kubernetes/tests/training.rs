//! `backend: kubernetes` end to end against a real kube-apiserver: a
//! TrainingJob becomes a PyTorchJob, Switchyard's operator makes its pods, the
//! test plays the kubelet, and the backend reports the job done.

mod cluster;

use std::collections::BTreeMap;
use std::time::Duration;

use cluster::{eventually, set_phase, Cluster};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use switchyard_kubernetes::crd::PyTorchJob;
use switchyard_kubernetes::training::{KubernetesBackend, KubernetesConfig};
use switchyard_kubernetes::{operator, OperatorConfig};
use switchyard_training::{JobEvent, JobState, TrainingBackend};
use tokio_util::sync::CancellationToken;

fn training_job(dir: &std::path::Path, extra: &str) -> switchyard_training::TrainingJob {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/train.py"), "print('loss=0.5')\n").unwrap();
    let text = format!(
        "apiVersion: switchyard/v1\nkind: TrainingJob\nmetadata: {{name: digits}}\nspec:\n  backend: kubernetes\n  image: pytorch/pytorch:2.5.1-cpu\n  sourceDir: src\n  entryPoint: train.py\n  nodes: 2\n  resources: {{cpu: 1, memory: 1Gi}}\n  hyperparameters: {{epochs: 3}}\n  restartPolicy: ExitCode\n  channels: {{train: 's3://datasets/digits', shared: 'efs://fs-0123/digits'}}\n{extra}"
    );
    switchyard_training::load(&text, dir, &[], None).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kube-apiserver and etcd (scripts/setup --k8s)"]
async fn a_training_job_runs_as_a_pytorchjob_to_completion() {
    let c = Cluster::start().await;
    let client = c.client().await.unwrap();
    c.install_crd().await;
    c.add_node("node-a", "8", "32Gi", 0).await;
    c.namespace("training").await;
    c.grant("server.yaml", "switchyard-server", Some("training"))
        .await;
    let op = {
        let client = client.clone();
        tokio::spawn(async move {
            let _ = operator::run(
                client,
                OperatorConfig {
                    namespace: None,
                    resync: Duration::from_secs(1),
                    ..Default::default()
                },
            )
            .await;
        })
    };
    let work = tempfile::tempdir().unwrap();
    let config = KubernetesConfig {
        namespace: "training".into(),
        efs_claims: BTreeMap::from([("fs-0123".to_string(), "efs-sc-claim".to_string())]),
        s3_image: "amazon/aws-cli:2.17.0".into(),
        // The rights deploy/server.yaml gives the server in its training namespace, no more.
        kubeconfig: Some(c.kubeconfig_for("switchyard-server", cluster::SERVER_TOKEN)),
        jobs_dir: work.path().join("jobs"),
        data_claim: None,
        api: switchyard_training::KubernetesApi::PyTorchJob,
        runtime: "torch-distributed".into(),
    };
    let backend = KubernetesBackend::new(config.clone());

    // Refused before anything is created: a local channel, an unmapped file system.
    let bad = training_job(work.path(), "  output: s3://models/x\n");
    let e = backend.preflight(&bad).unwrap_err().to_string();
    assert!(e.starts_with("spec.output:"), "{e}");
    let local = training_job(work.path(), "");
    let mut local = local;
    local.channels.push(switchyard_training::Channel {
        name: "mine".into(),
        uri: "/data".into(),
        source: switchyard_training::ChannelSource::Local("/data".into()),
    });
    let e = backend.preflight(&local).unwrap_err().to_string();
    assert!(e.starts_with("spec.channels.mine:"), "{e}");
    let unmapped = KubernetesBackend::new(KubernetesConfig {
        efs_claims: BTreeMap::new(),
        ..config.clone()
    });
    let e = unmapped
        .preflight(&training_job(work.path(), ""))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("SWITCHYARD_K8S_EFS_CLAIMS=fs-0123=<claim>"),
        "{e}"
    );
    let jobs: Api<PyTorchJob> = Api::namespaced(client.clone(), "training");
    assert!(jobs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());

    // The real thing.
    let job = training_job(work.path(), "");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let run = tokio::spawn(async move {
        backend
            .run(&job, "job-1234", tx, CancellationToken::new())
            .await
    });
    let pj = eventually("the PyTorchJob", 30, || async {
        jobs.list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .next()
    })
    .await;
    let name = pj.name_any();
    assert!(name.starts_with("digits-"), "{name}");
    let specs = &pj.spec.pytorch_replica_specs;
    assert_eq!(specs["Master"].replicas, Some(1));
    assert_eq!(specs["Worker"].replicas, Some(1));
    assert_eq!(specs["Worker"].restart_policy.as_deref(), Some("ExitCode"));
    let pod_spec = specs["Master"].template.spec.clone().unwrap();
    let c0 = &pod_spec.containers[0];
    assert_eq!(c0.name, "pytorch");
    assert_eq!(c0.image.as_deref(), Some("pytorch/pytorch:2.5.1-cpu"));
    assert_eq!(
        c0.command.clone().unwrap(),
        [
            "sh",
            "/opt/ml/.switchyard/sy-start.sh",
            "python",
            "/opt/ml/code/train.py",
            "--epochs",
            "3"
        ]
    );
    let env: BTreeMap<String, String> = c0
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect();
    assert!(
        !env.contains_key("SM_HP_EPOCHS"),
        "the SageMaker half comes per host from the ConfigMap"
    );
    assert!(
        !env.contains_key("RANK"),
        "per-pod variables come from the operator"
    );
    let mounts: Vec<String> = c0
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.clone())
        .collect();
    assert!(mounts.contains(&"/opt/ml/input/data/shared".to_string()));
    let volumes = pod_spec.volumes.unwrap();
    let efs = volumes
        .iter()
        .find(|v| v.persistent_volume_claim.is_some())
        .unwrap();
    assert_eq!(
        efs.persistent_volume_claim.as_ref().unwrap().claim_name,
        "efs-sc-claim"
    );
    let init = pod_spec.init_containers.unwrap();
    assert_eq!(init[0].command.clone().unwrap()[..3], ["aws", "s3", "sync"]);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "training");
    let code = eventually("the code ConfigMap", 30, || async {
        cms.get(&format!("{name}-code")).await.ok()
    })
    .await;
    let data = code.data.unwrap();
    assert_eq!(data["f0"], "print('loss=0.5')\n");
    // Each host's SageMaker variables and config files, for the pod's prologue.
    let host2 = &data["sy-host-1.env"];
    for line in [
        "  'SM_HP_EPOCHS=3' \\\n",
        "  'SM_CHANNEL_TRAIN=/opt/ml/input/data/train' \\\n",
        "  'SM_CURRENT_HOST=algo-2' \\\n",
        "  'TRAINING_JOB_NAME=digits' \\\n",
    ] {
        assert!(host2.contains(line), "{line} in {host2}");
    }
    assert!(data["sy-host-1-resourceconfig.json"].contains("\"current_host\": \"algo-2\""));
    assert!(data.contains_key("sy-start.sh"));

    // The operator makes the pods; the test is the kubelet.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "training");
    let names = eventually("two pods", 30, || async {
        let v: Vec<String> = pods
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .iter()
            .map(|p| p.name_any())
            .collect();
        (v.len() == 2).then_some(v)
    })
    .await;
    for n in &names {
        set_phase(&pods, n, "Running", None).await;
    }
    eventually("the PyTorchJob to be Running", 30, || async {
        let j = jobs.get(&name).await.ok()?;
        j.status?.has("Running").then_some(())
    })
    .await;
    for n in &names {
        set_phase(&pods, n, "Succeeded", Some(0)).await;
    }
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the backend finished")
        .unwrap()
        .unwrap();
    assert_eq!(out.state, JobState::Succeeded, "{out:?}");
    let mut saw_running = false;
    let mut placement = None;
    while let Ok(e) = rx.try_recv() {
        match e {
            JobEvent::Running { .. } => saw_running = true,
            JobEvent::Placement { details } => placement = Some(details),
            _ => {}
        }
    }
    assert!(saw_running);
    let placement = placement.unwrap();
    assert_eq!(placement["kind"], "kubernetes");
    assert_eq!(placement["namespace"], "training");

    // Cancel deletes the PyTorchJob.
    let backend = KubernetesBackend::new(config.clone());
    let job = training_job(work.path(), "");
    let cancel = CancellationToken::new();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let run = {
        let cancel = cancel.clone();
        tokio::spawn(async move { backend.run(&job, "job-5678", tx, cancel).await })
    };
    let second = eventually("the second PyTorchJob", 30, || async {
        jobs.list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|j| j.name_any() != name)
    })
    .await;
    cancel.cancel();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("canceled in time")
        .unwrap()
        .unwrap();
    assert_eq!(out.state, JobState::Canceled);
    eventually("the PyTorchJob to be deleted", 30, || async {
        jobs.get_opt(&second.name_any())
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    op.abort();
}
