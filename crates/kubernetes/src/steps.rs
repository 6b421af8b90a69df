//! Pipeline steps as Pods: the step backend ([`switchyard_backend::Backend`])
//! that runs each container task of a run on the cluster instead of this
//! machine (training-job steps never come here: the binary runs those
//! in-process and hands their TrainingJob to a training backend).
//!
//! The run's work folder and pipeline root lie on a claim that the server
//! mounts too (`SWITCHYARD_K8S_TASK_CLAIM` at `SWITCHYARD_K8S_TASK_MOUNT`):
//! a step writes its output parameters and artifacts there, exactly where the
//! engine reads them, so outputs return as they do locally. The step's
//! kfp-kubernetes platform config is applied (`pvcMount`, `secretAsEnv`,
//! `nodeSelector`, `tolerations`, the run's service account), and the
//! claims a pipeline's `CreatePVC`/`DeletePVC` steps ask for are made and
//! removed here.

use std::path::PathBuf;

use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use serde_json::{json, Value};
use switchyard_backend::{
    Backend, BackendError, Job, LogSink, Resources, StepOutcome, VolumeClaim,
};
use tokio_util::sync::CancellationToken;

use crate::training::api_error;

/// The run a task pod belongs to (an annotation: a run id need not be a
/// valid label value).
const RUN_ANNOTATION: &str = "switchyard.io/run-id";
/// The attempt a task pod runs (`<run>-<task>-<attempt>`).
const ATTEMPT_ANNOTATION: &str = "switchyard.io/attempt-id";

/// Where task pods run and the claim they share with the server.
#[derive(Debug, Clone)]
pub struct TaskPodConfig {
    pub namespace: String,
    /// The ReadWriteMany claim holding the server's data folder.
    pub claim: String,
    /// Where that claim is mounted, in the server and in every task pod.
    pub mount_path: PathBuf,
    pub kubeconfig: Option<PathBuf>,
    /// The server as task pods reach it (its Service URL): given to each pod
    /// as `SWITCHYARD_SERVER`, which the `switchyard` CLI and a step's own
    /// code read, so what a step asks of Switchyard (a run, a job, a list)
    /// goes to the server that runs its pipeline and lands in its records.
    pub server_url: Option<String>,
    /// The Secret (name, key) in the task namespace holding the server's
    /// token, given to each pod as `SWITCHYARD_AUTH_TOKEN`.
    pub token_secret: Option<(String, String)>,
}

impl TaskPodConfig {
    /// `SWITCHYARD_K8S_NAMESPACE`, `SWITCHYARD_K8S_TASK_CLAIM` (required),
    /// `SWITCHYARD_K8S_TASK_MOUNT` (default: the data folder `home`),
    /// `SWITCHYARD_K8S_TASK_SERVER_URL` and `SWITCHYARD_K8S_TASK_TOKEN_SECRET`
    /// (`name` or `name/key`, key `token` by default).
    pub fn from_env(home: &std::path::Path) -> Result<Self, String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let claim = var("SWITCHYARD_K8S_TASK_CLAIM").ok_or_else(|| {
            "SWITCHYARD_TASK_BACKEND=kubernetes needs SWITCHYARD_K8S_TASK_CLAIM: the claim that holds the data folder, mounted by the server and by every task pod (that is how outputs come back)".to_string()
        })?;
        Ok(TaskPodConfig {
            namespace: var("SWITCHYARD_K8S_NAMESPACE").unwrap_or_else(|| "default".into()),
            claim,
            mount_path: var("SWITCHYARD_K8S_TASK_MOUNT")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.to_path_buf()),
            kubeconfig: var("SWITCHYARD_K8S_KUBECONFIG").map(PathBuf::from),
            server_url: var("SWITCHYARD_K8S_TASK_SERVER_URL"),
            token_secret: var("SWITCHYARD_K8S_TASK_TOKEN_SECRET")
                .map(|s| parse_secret_ref(&s))
                .transpose()?,
        })
    }
}

/// `name` or `name/key` (key `token` by default).
fn parse_secret_ref(s: &str) -> Result<(String, String), String> {
    let (name, key) = s.split_once('/').unwrap_or((s, "token"));
    if name.is_empty() || key.is_empty() {
        return Err(format!(
            "SWITCHYARD_K8S_TASK_TOKEN_SECRET='{s}': expected a Secret name, or name/key"
        ));
    }
    Ok((name.to_string(), key.to_string()))
}

/// Runs container tasks as Pods.
pub struct PodTaskBackend {
    config: TaskPodConfig,
}

/// A DNS-label pod name for a task attempt id (`<run>-<task>-<attempt>`).
pub fn pod_name(job_id: &str) -> String {
    let clean: String = job_id
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    // Always a digest of the raw id: ids that differ only in case or
    // punctuation must not share a pod.
    format!(
        "task-{}-{}",
        clean.trim_matches('-'),
        switchyard_training::short_digest(job_id, 8)
    )
}

/// A string from a kfp-kubernetes field that may be a constant or a
/// `…Parameter: {runtimeValue: {constant: …}}`.
fn constant(v: &Value, field: &str) -> Option<String> {
    v.get(field)
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| {
            v.get(format!("{field}Parameter"))?
                .get("runtimeValue")?
                .get("constant")?
                .as_str()
                .map(str::to_string)
        })
}

/// A step's resources as Kubernetes requests and limits (an accelerator kind
/// that is not a Kubernetes resource name, such as `NVIDIA_TESLA_T4`, asks
/// for `nvidia.com/gpu`).
fn resources(r: &Resources) -> Value {
    let mut limits = serde_json::Map::new();
    let mut requests = serde_json::Map::new();
    let put = |to: &mut serde_json::Map<String, Value>, k: &str, v: &Option<String>| {
        if let Some(v) = v {
            to.insert(k.into(), json!(v));
        }
    };
    put(&mut limits, "cpu", &r.cpu_limit);
    put(&mut limits, "memory", &r.memory_limit);
    put(&mut requests, "cpu", &r.cpu_request);
    put(&mut requests, "memory", &r.memory_request);
    if let Some(acc) = &r.accelerator {
        let kind = if acc.kind.contains('/') {
            acc.kind.clone()
        } else {
            "nvidia.com/gpu".to_string()
        };
        limits.insert(kind, json!(acc.count));
    }
    json!({"limits": limits, "requests": requests})
}

impl PodTaskBackend {
    pub fn new(config: TaskPodConfig) -> Self {
        PodTaskBackend { config }
    }

    /// The Pod for one task attempt; refuses platform config it cannot honour.
    pub fn render(&self, job: &Job) -> Result<Value, BackendError> {
        let name = pod_name(&job.id);
        if !job.work_dir.starts_with(&self.config.mount_path) {
            return Err(BackendError::Permanent(format!(
                "task {}: its folder {} is not under the shared claim's mount {} (SWITCHYARD_K8S_TASK_MOUNT), so its outputs could not come back",
                job.display_name,
                job.work_dir.display(),
                self.config.mount_path.display()
            )));
        }
        let mount = self.config.mount_path.to_string_lossy().into_owned();
        let mut volumes = vec![
            json!({"name": "switchyard-data", "persistentVolumeClaim": {"claimName": self.config.claim}}),
        ];
        let mut mounts = vec![json!({"name": "switchyard-data", "mountPath": mount})];
        let mut env: Vec<Value> = job
            .env
            .iter()
            .map(|(k, v)| json!({"name": k, "value": v}))
            .collect();
        if let Some(url) = &self.config.server_url {
            env.push(json!({"name": "SWITCHYARD_SERVER", "value": url}));
        }
        if let Some((secret, key)) = &self.config.token_secret {
            // optional: without the Secret the step gets a 401 naming the token, not a
            // pod stuck in CreateContainerConfigError.
            env.push(json!({"name": "SWITCHYARD_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": true}}}));
        }
        let mut node_selector = json!({});
        let mut tolerations = Vec::new();
        let bad = |what: String| {
            BackendError::Permanent(format!("task {}: kfp-kubernetes {what}", job.display_name))
        };
        if let Some(k) = job.platform.get("kubernetes") {
            for (i, m) in k["pvcMount"].as_array().into_iter().flatten().enumerate() {
                let claim = constant(m, "pvcName").or_else(|| constant(m, "constant").or_else(|| m.get("constant").and_then(Value::as_str).map(str::to_string)))
                    .ok_or_else(|| bad(format!("pvcMount[{i}]: only a constant claim name is supported here (not a task output)")))?;
                let path = m["mountPath"]
                    .as_str()
                    .ok_or_else(|| bad(format!("pvcMount[{i}]: mountPath is missing")))?;
                volumes.push(json!({"name": format!("pvc-{i}"), "persistentVolumeClaim": {"claimName": claim}}));
                mounts.push(json!({"name": format!("pvc-{i}"), "mountPath": path}));
            }
            for (i, s) in k["secretAsEnv"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let secret = constant(s, "secretName")
                    .ok_or_else(|| bad(format!("secretAsEnv[{i}]: secretName is missing")))?;
                for kv in s["keyToEnv"].as_array().into_iter().flatten() {
                    env.push(json!({"name": kv["envVar"], "valueFrom": {"secretKeyRef": {"name": secret, "key": kv["secretKey"]}}}));
                }
            }
            if let Some(labels) = k["nodeSelector"]["labels"].as_object() {
                node_selector = Value::Object(labels.clone());
            }
            for t in k["tolerations"].as_array().into_iter().flatten() {
                tolerations.push(t.clone());
            }
        }
        Ok(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": self.config.namespace,
                "labels": {"app.kubernetes.io/managed-by": "switchyard", "switchyard.io/task": name},
                "annotations": {
                    "switchyard.io/task-key": job.display_name,
                    ATTEMPT_ANNOTATION: job.id,
                    RUN_ANNOTATION: job.run_id,
                },
            },
            "spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "main",
                    "image": job.image,
                    "command": job.argv,
                    "workingDir": job.work_dir,
                    "env": env,
                    "resources": resources(&job.resources),
                    "volumeMounts": mounts,
                }],
                "volumes": volumes,
                "nodeSelector": node_selector,
                "tolerations": tolerations,
                // The run's service account (KFP's `pipeline-runner` by
                // default); none: the namespace's `default`.
                "serviceAccountName": job.service_account,
            },
        }))
    }

    /// The claim every step Pod mounts holds the server's data: no pipeline
    /// creates or deletes it.
    fn not_the_data_claim(&self, name: &str) -> Result<(), BackendError> {
        if name == self.config.claim {
            return Err(BackendError::Permanent(format!(
                "PersistentVolumeClaim {}/{name} holds the server's data (SWITCHYARD_K8S_TASK_CLAIM): a pipeline cannot create or delete it",
                self.config.namespace
            )));
        }
        Ok(())
    }

    async fn client(&self) -> Result<Client, BackendError> {
        crate::client(self.config.kubeconfig.as_deref())
            .await
            .map_err(BackendError::Permanent)
    }
}

fn exit_code(p: &Pod) -> Option<i32> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == "main")?
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| t.exit_code)
}

#[async_trait::async_trait]
impl Backend for PodTaskBackend {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    async fn run(
        &self,
        job: Job,
        logs: LogSink,
        cancel: CancellationToken,
    ) -> Result<StepOutcome, BackendError> {
        let doc = self.render(&job)?;
        let pod: Pod =
            serde_json::from_value(doc).map_err(|e| BackendError::Permanent(e.to_string()))?;
        let name = pod.metadata.name.clone().unwrap_or_default();
        let client = self.client().await?;
        let pods: Api<Pod> = Api::namespaced(client, &self.config.namespace);
        self.create(&pods, &pod, &name).await?;
        logs(&format!(
            "[switchyard] pod {}/{name} created",
            self.config.namespace
        ));
        follow_pod(&pods, &name, &logs, &cancel).await
    }

    /// The claim KFP's driver creates for `CreatePVC`, in the task namespace,
    /// tagged with its run. One already there (a resumed run) is kept.
    async fn create_volume(&self, claim: &VolumeClaim) -> Result<String, BackendError> {
        self.not_the_data_claim(&claim.name)?;
        let pvc: PersistentVolumeClaim = serde_json::from_value(claim_doc(claim))
            .map_err(|e| BackendError::Permanent(format!("claim {}: {e}", claim.name)))?;
        let client = self.client().await?;
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, &self.config.namespace);
        let ns = &self.config.namespace;
        match claims.create(&PostParams::default(), &pvc).await {
            Ok(_) => Ok(format!(
                "created PersistentVolumeClaim {ns}/{} ({}, {})",
                claim.name,
                claim.size,
                claim.access_modes.join(", ")
            )),
            // This run's own claim (created before a resume) is used; any
            // other claim of that name is not the run's to take (KFP fails too).
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let existing = claims.get(&claim.name).await.map_err(|e| {
                    api_error(
                        format!("cannot read PersistentVolumeClaim {ns}/{}", claim.name),
                        e,
                    )
                })?;
                let owner = existing
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(RUN_ANNOTATION));
                if owner == Some(&claim.run_id) {
                    Ok(format!(
                        "PersistentVolumeClaim {ns}/{} was created by this run before: used as it is",
                        claim.name
                    ))
                } else {
                    Err(BackendError::Permanent(format!(
                        "PersistentVolumeClaim {ns}/{} exists already and is not this run's: give CreatePVC another pvc_name, or a pvc_name_suffix",
                        claim.name
                    )))
                }
            }
            Err(e) => Err(api_error(
                format!("cannot create PersistentVolumeClaim {ns}/{}", claim.name),
                e,
            )),
        }
    }

    async fn delete_volume(
        &self,
        _run_id: &str,
        name: &str,
        _local_dir: &std::path::Path,
    ) -> Result<String, BackendError> {
        self.not_the_data_claim(name)?;
        let client = self.client().await?;
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, &self.config.namespace);
        let ns = &self.config.namespace;
        match claims.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(format!("deleted PersistentVolumeClaim {ns}/{name}")),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(format!(
                "PersistentVolumeClaim {ns}/{name} was already gone"
            )),
            Err(e) => Err(api_error(
                format!("cannot delete PersistentVolumeClaim {ns}/{name}"),
                e,
            )),
        }
    }

    async fn stop_run(&self, run_id: &str) -> Result<Vec<String>, BackendError> {
        let client = self.client().await?;
        let pods: Api<Pod> = Api::namespaced(client, &self.config.namespace);
        let ns = &self.config.namespace;
        let listed = pods
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=switchyard"))
            .await
            .map_err(|e| api_error(format!("cannot list the task pods in {ns}"), e))?;
        let mut stopped = Vec::new();
        for p in listed.items {
            let annotations = p.metadata.annotations.as_ref();
            let of_run = match annotations.and_then(|a| a.get(RUN_ANNOTATION)) {
                Some(r) => r == run_id,
                // A pod made before the run annotation: its attempt id
                // (`<run>-<task>-<attempt>`) starts with the run.
                None => annotations
                    .and_then(|a| a.get(ATTEMPT_ANNOTATION))
                    .is_some_and(|a| a.starts_with(&format!("{run_id}-"))),
            };
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            let ended = matches!(phase, Some("Succeeded" | "Failed"));
            let Some(name) = p.metadata.name.filter(|_| of_run && !ended) else {
                continue;
            };
            match pods
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await
            {
                Ok(_) => stopped.push(format!("deleted pod {ns}/{name}")),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(api_error(format!("cannot delete pod {ns}/{name}"), e)),
            }
        }
        Ok(stopped)
    }
}

/// The PersistentVolumeClaim of a `CreatePVC` task, as KFP's driver makes it.
fn claim_doc(claim: &VolumeClaim) -> Value {
    let mut spec = json!({
        "accessModes": claim.access_modes,
        "resources": {"requests": {"storage": claim.size}},
        "storageClassName": claim.storage_class,
    });
    if let Some(v) = &claim.volume_name {
        spec["volumeName"] = json!(v);
    }
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": claim.name,
            "labels": {"app.kubernetes.io/managed-by": "switchyard"},
            "annotations": claim.annotations.iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .chain(std::iter::once((RUN_ANNOTATION.to_string(), json!(claim.run_id))))
                .collect::<serde_json::Map<String, Value>>(),
        },
        "spec": spec,
    })
}

impl PodTaskBackend {
    /// Creates the step's pod; one the same attempt submitted before (a
    /// resumed run) is followed as it is.
    async fn create(&self, pods: &Api<Pod>, pod: &Pod, name: &str) -> Result<(), BackendError> {
        match pods.create(&PostParams::default(), pod).await {
            Ok(_) => {}
            // The same attempt submitted before (a resumed run): follow that pod.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            // Over a ResourceQuota: room comes back when other tasks end.
            Err(kube::Error::Api(e)) if e.code == 403 && e.message.contains("exceeded quota") => {
                return Err(BackendError::Retryable(format!(
                    "pod {name} waits for quota: {}",
                    e.message
                )))
            }
            Err(kube::Error::Api(e)) if e.code == 400 || e.code == 422 || e.code == 403 => {
                let fix = if e.message.contains("serviceaccount") {
                    format!(
                            " (create the ServiceAccount in namespace {}, or name another as the run's service_account or the server's --service-account)",
                            self.config.namespace
                        )
                } else {
                    String::new()
                };
                return Err(BackendError::Permanent(format!(
                    "the API server refused pod {name}: {}{fix}",
                    e.message
                )));
            }
            Err(e) => {
                return Err(BackendError::Retryable(format!(
                    "cannot create pod {name}: {e}"
                )))
            }
        }
        Ok(())
    }
}

/// Follows the step's pod to its end: its log into `logs` once it runs, its
/// phase into the step's outcome; a cancel deletes it.
async fn follow_pod(
    pods: &Api<Pod>,
    name: &str,
    logs: &LogSink,
    cancel: &CancellationToken,
) -> Result<StepOutcome, BackendError> {
    let name = name.to_string();
    let fields = format!("metadata.name={name}");
    let mut stream = watcher::watcher(pods.clone(), watcher::Config::default().fields(&fields))
        .default_backoff()
        .boxed();
    let mut reader: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => {
                let _ = pods.delete(&name, &DeleteParams::default().grace_period(0)).await;
                return Ok(StepOutcome::Canceled);
            }
            ev = stream.try_next() => ev,
        };
        let p = match ev {
            Ok(Some(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => p,
            Ok(Some(watcher::Event::Delete(_))) => {
                return Ok(StepOutcome::Failed {
                    exit_code: None,
                    message: format!("pod {name} was deleted"),
                })
            }
            Ok(Some(_)) => continue,
            Ok(None) => return Err(BackendError::Retryable("the watch on the pod ended".into())),
            Err(e) => {
                tracing::debug!(error = %e, "pod watch error; retrying");
                continue;
            }
        };
        let phase = p
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        let ended = phase == "Succeeded" || phase == "Failed";
        if (phase == "Running" || ended) && reader.is_none() {
            // Follows a running pod; a pod that ended before it was seen
            // running is read once.
            let (pods, name, logs) = (pods.clone(), name.clone(), logs.clone());
            reader = Some(tokio::spawn(async move {
                let params = LogParams {
                    follow: !ended,
                    container: Some("main".into()),
                    ..Default::default()
                };
                if let Ok(s) = pods.log_stream(&name, &params).await {
                    let mut lines = s.lines();
                    while let Ok(Some(line)) = lines.try_next().await {
                        logs(&line);
                    }
                }
            }));
        }
        if ended {
            // The last lines (usually the error) belong before the outcome.
            if let Some(r) = reader.take() {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(10), r).await;
            }
        }
        match phase.as_str() {
            "Succeeded" => return Ok(StepOutcome::Succeeded),
            "Failed" => {
                let code = exit_code(&p);
                return Ok(StepOutcome::Failed {
                    exit_code: code,
                    message: format!(
                        "pod {name} failed{}",
                        code.map(|c| format!(" with exit code {c}"))
                            .unwrap_or_default()
                    ),
                });
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_what_kfps_driver_creates() {
        let claim = VolumeClaim {
            run_id: "r1".into(),
            name: "abc-my-pvc".into(),
            size: "5Gi".into(),
            access_modes: vec!["ReadWriteOnce".into()],
            storage_class: "standard".into(),
            annotations: [("team".to_string(), "ml".to_string())].into(),
            volume_name: None,
            local_dir: PathBuf::from("/unused"),
        };
        let doc = claim_doc(&claim);
        let pvc: PersistentVolumeClaim = serde_json::from_value(doc.clone()).expect("a claim");
        let spec = pvc.spec.expect("spec");
        assert_eq!(spec.storage_class_name.as_deref(), Some("standard"));
        assert_eq!(spec.access_modes, Some(vec!["ReadWriteOnce".to_string()]));
        assert_eq!(doc["metadata"]["annotations"]["team"], "ml");
        assert_eq!(doc["metadata"]["annotations"][RUN_ANNOTATION], "r1");
        assert!(doc["spec"].get("volumeName").is_none());
    }

    fn config() -> TaskPodConfig {
        TaskPodConfig {
            namespace: "steps".into(),
            claim: "switchyard-data".into(),
            mount_path: PathBuf::from("/data"),
            kubeconfig: None,
            server_url: None,
            token_secret: None,
        }
    }

    fn job() -> Job {
        Job {
            id: "run-train-1".into(),
            run_id: "run".into(),
            display_name: "train".into(),
            image: "switchyard.local/switchyard:dev".into(),
            argv: vec!["switchyard".into(), "job".into(), "run-component".into()],
            env: [("SWITCHYARD_RUN_ID".to_string(), "run".to_string())].into(),
            work_dir: PathBuf::from("/data/runs/run/train"),
            resources: Resources::default(),
            platform: Default::default(),
            service_account: None,
        }
    }

    fn env_of(pod: &Value) -> Vec<Value> {
        pod["spec"]["containers"][0]["env"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn step_pods_run_under_the_runs_service_account() {
        let mut j = job();
        j.service_account = Some("pipeline-runner".into());
        let doc = PodTaskBackend::new(config()).render(&j).unwrap();
        let pod: Pod = serde_json::from_value(doc).expect("a pod");
        let spec = pod.spec.expect("spec");
        assert_eq!(
            spec.service_account_name.as_deref(),
            Some("pipeline-runner")
        );
        let doc = PodTaskBackend::new(config()).render(&job()).unwrap();
        let pod: Pod = serde_json::from_value(doc).expect("a pod");
        assert_eq!(pod.spec.expect("spec").service_account_name, None);
    }

    #[test]
    fn pvc_mounts_resolved_by_the_engine_mount_their_claim() {
        let mut j = job();
        j.platform.insert(
            "kubernetes".into(),
            json!({"pvcMount": [{"mountPath": "/data", "constant": "abc-my-pvc",
                "pvcNameParameter": {"runtimeValue": {"constant": "abc-my-pvc"}}}]}),
        );
        let doc = PodTaskBackend::new(config()).render(&j).unwrap();
        let volumes = doc["spec"]["volumes"].as_array().expect("volumes");
        assert!(volumes
            .iter()
            .any(|v| v["persistentVolumeClaim"]["claimName"] == "abc-my-pvc"));
    }

    #[test]
    fn pods_learn_the_server_and_its_token_only_when_configured() {
        let plain = PodTaskBackend::new(config()).render(&job()).unwrap();
        assert!(!env_of(&plain)
            .iter()
            .any(|e| e["name"] == "SWITCHYARD_SERVER" || e["name"] == "SWITCHYARD_AUTH_TOKEN"));

        let mut c = config();
        c.server_url = Some("http://switchyard-server.switchyard.svc:8888".into());
        c.token_secret = Some(parse_secret_ref("switchyard-auth").unwrap());
        let pod = PodTaskBackend::new(c).render(&job()).unwrap();
        let env = env_of(&pod);
        assert!(env.contains(
            &json!({"name": "SWITCHYARD_SERVER", "value": "http://switchyard-server.switchyard.svc:8888"})
        ));
        // The token comes from the Secret, never as a value in the pod spec.
        assert!(env.contains(&json!({"name": "SWITCHYARD_AUTH_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "switchyard-auth", "key": "token", "optional": true}}})));
        assert!(env.contains(&json!({"name": "SWITCHYARD_RUN_ID", "value": "run"})));
    }

    #[test]
    fn secret_references_name_a_key_or_default_to_token() {
        assert_eq!(
            parse_secret_ref("auth/api-key").unwrap(),
            ("auth".to_string(), "api-key".to_string())
        );
        assert!(parse_secret_ref("/token")
            .unwrap_err()
            .contains("SWITCHYARD_K8S_TASK_TOKEN_SECRET"));
        assert!(parse_secret_ref("auth/").is_err());
    }
}
