//! The `kubernetes` backend's TrainJob half: a TrainingJob submitted as a
//! Kubeflow Trainer v2 TrainJob referencing a ClusterTrainingRuntime
//! (`torch-distributed` by default), reconciled by Switchyard's operator or
//! by Kubeflow Trainer's controller alike.
//!
//! The pod is the one the PyTorchJob would have (same image, contract
//! prologue, env, resources, volumes), carried in Trainer's own fields:
//! `trainer` (image, command, env, numNodes, numProcPerNode,
//! resourcesPerNode) and a `runtimePatches` entry of Switchyard's (volumes,
//! mounts, service account) — only fields Trainer's CRD accepts. The runtime
//! gives torchrun's `PET_*` variables, so the entry point always starts
//! through torchrun (which gives each process RANK, WORLD_SIZE, MASTER_*).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;
use kube::api::DeleteParams;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use switchyard_training::{
    BackendError, ChannelSource, Contract, JobEvent, JobEvents, JobState, KubernetesApi,
    SourceFile, Stopped, TrainingJob, TrainingOutcome,
};
use tokio_util::sync::CancellationToken;

use crate::training::{api_error, create_with_code, Followed, KubernetesBackend};
use crate::trainjob::api::{TrainJob, NODE};
use crate::trainjob::plan::{is_true, COMPLETE, FAILED};

/// The `runtimePatches` manager of what Switchyard adds to the runtime.
pub const PATCH_MANAGER: &str = "switchyard.io/kubernetes-backend";

impl KubernetesBackend {
    /// The API a job is submitted as: its `spec.kubernetes.api`, else the
    /// configured one; `auto` asks the cluster (API discovery, which every
    /// user may read): PyTorchJob where it is served, else TrainJob where
    /// that is, else PyTorchJob (whose creation then says the CRD is missing).
    pub(crate) async fn api_for(
        &self,
        client: &Client,
        job: &TrainingJob,
    ) -> Result<KubernetesApi, BackendError> {
        let chosen = job.spec.kubernetes.api.unwrap_or(self.config.api);
        if chosen != KubernetesApi::Auto {
            return Ok(chosen);
        }
        let served = |gv: &'static str, plural: &'static str| {
            let client = client.clone();
            async move {
                match client.list_api_group_resources(gv).await {
                    Ok(l) => Ok(l.resources.iter().any(|r| r.name == plural)),
                    // The group is not served at all.
                    Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
                    // Not knowing must not choose the other kind.
                    Err(e) => Err(api_error(format!("API discovery of {gv}"), e)),
                }
            }
        };
        Ok(if served("kubeflow.org/v1", "pytorchjobs").await? {
            KubernetesApi::PyTorchJob
        } else if served("trainer.kubeflow.org/v1alpha1", "trainjobs").await? {
            KubernetesApi::TrainJob
        } else {
            KubernetesApi::PyTorchJob
        })
    }

    /// The kind an earlier run of this job id already submitted, if any: a
    /// resumed or retried job follows what exists, whatever `auto` would
    /// choose now (a second gang of the other kind would train beside it).
    pub(crate) async fn submitted_as(
        &self,
        client: &Client,
        job: &TrainingJob,
        job_id: &str,
    ) -> Result<Option<KubernetesApi>, BackendError> {
        let doc = self.render(job, job_id, &[]);
        let ns = doc.namespace().unwrap_or_else(|| "default".into());
        let name = doc.name_any();
        let absent =
            |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 404 || s.code == 403);
        let tjs: Api<TrainJob> = Api::namespaced(client.clone(), &ns);
        match tjs.get_opt(&name).await {
            Ok(Some(_)) => return Ok(Some(KubernetesApi::TrainJob)),
            Ok(None) => {}
            Err(e) if absent(&e) => {}
            Err(e) => return Err(api_error(format!("TrainJob {ns}/{name}"), e)),
        }
        let pjs: Api<crate::crd::PyTorchJob> = Api::namespaced(client.clone(), &ns);
        match pjs.get_opt(&name).await {
            Ok(Some(_)) => Ok(Some(KubernetesApi::PyTorchJob)),
            Ok(None) => Ok(None),
            Err(e) if absent(&e) => Ok(None),
            Err(e) => Err(api_error(format!("PyTorchJob {ns}/{name}"), e)),
        }
    }

    /// What a TrainJob cannot carry, refused before anything is created.
    pub(crate) fn trainjob_preflight(&self, job: &TrainingJob) -> Result<(), BackendError> {
        if !job.name.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(BackendError::Permanent(format!(
                "metadata.name: '{}' must start with a lower-case letter to be a TrainJob's name (Trainer requires an RFC 1035 label): rename the job, or use api: PyTorchJob",
                job.name
            )));
        }
        if job.spec.contract == Contract::ModelTrainer {
            return Err(BackendError::Permanent(
                "spec.kubernetes.api: TrainJob runs contract: toolkit jobs; contract: modeltrainer needs api: PyTorchJob".into(),
            ));
        }
        if let Some(ch) = job
            .channels
            .iter()
            .find(|c| matches!(c.source, ChannelSource::S3 { .. }))
        {
            return Err(BackendError::Permanent(format!(
                "spec.channels.{}: s3:// channels are downloaded by an init container, which a TrainJob's runtimePatches cannot add: use api: PyTorchJob, or an efs:// channel",
                ch.name
            )));
        }
        Ok(())
    }

    /// The TrainJob for a TrainingJob: the PyTorchJob's pod (the Master's,
    /// whose model folder is on the data claim), in Trainer's fields.
    pub fn render_trainjob(
        &self,
        job: &TrainingJob,
        job_id: &str,
        code: &[SourceFile],
    ) -> TrainJob {
        let pj = self.render(job, job_id, code);
        let s = &job.spec;
        let template = pj
            .spec
            .pytorch_replica_specs
            .get("Master")
            .map(|r| r.template.clone())
            .unwrap_or_default();
        let master = template.spec.clone().unwrap_or_default();
        let c = master.containers.first().cloned().unwrap_or_default();
        // Trainer's container patch has no workingDir: the command changes
        // into it (coreutils' env -C).
        let mut command = match c.working_dir.as_deref() {
            Some(dir) if dir != "/" => vec!["env".to_string(), "-C".into(), dir.into()],
            _ => Vec::new(),
        };
        command.extend(crate::pytorchjob::command_through(job, true));
        let env: Vec<serde_json::Value> = c
            .env
            .iter()
            .flatten()
            .map(|e| serde_json::to_value(e).unwrap_or_default())
            .collect();
        let patch = runtime_patch(
            template.metadata.and_then(|m| m.labels),
            &master,
            &c.volume_mounts.clone().unwrap_or_default(),
        );
        let doc = json!({
            "apiVersion": "trainer.kubeflow.org/v1alpha1",
            "kind": "TrainJob",
            "metadata": {
                "name": pj.name_any(),
                "namespace": pj.namespace(),
                "labels": pj.metadata.labels,
            },
            "spec": {
                "runtimeRef": {
                    "name": s.kubernetes.runtime.clone().unwrap_or_else(|| self.config.runtime.clone()),
                    "apiGroup": "trainer.kubeflow.org",
                    "kind": "ClusterTrainingRuntime",
                },
                "trainer": {
                    "image": c.image,
                    "command": command,
                    "env": env,
                    "numNodes": s.nodes,
                    "numProcPerNode": s.procs_per_node,
                    "resourcesPerNode": c.resources,
                },
                "runtimePatches": [{"manager": PATCH_MANAGER, "trainingRuntimeSpec": patch}],
                "activeDeadlineSeconds": s.max_runtime_seconds,
            },
        });
        let mut tj: TrainJob = serde_json::from_value(strip_nulls(doc)).unwrap_or_else(|e| {
            tracing::error!(error = %e, "rendering the TrainJob");
            TrainJob::new(&pj.name_any(), Default::default())
        });
        tj.metadata.namespace = pj.namespace();
        tj
    }

    pub(crate) async fn run_trainjob(
        &self,
        client: &Client,
        job: &TrainingJob,
        job_id: &str,
        code: &[SourceFile],
        events: JobEvents,
        cancel: CancellationToken,
    ) -> Result<TrainingOutcome, BackendError> {
        self.trainjob_preflight(job)?;
        let tj = self.render_trainjob(job, job_id, code);
        let ns = tj.namespace().unwrap_or_else(|| "default".into());
        let name = tj.name_any();
        let created = create_with_code(client, job, code, &tj, Followed::TrainJob).await?;
        let jobs: Api<TrainJob> = Api::namespaced(client.clone(), &ns);
        let _ = events.send(JobEvent::Status {
            message: format!(
                "created TrainJob {ns}/{name} (runtime {})",
                created.spec.runtime_ref.name
            ),
        });
        let follow = self.follow(job, job_id, client, &ns, &name, Followed::TrainJob);
        let nodes = job.spec.nodes;
        let mut running = false;
        let mut reported = None;
        follow
            .watch(jobs, &events, cancel, |j: &TrainJob, follow| {
                let st = j.status.clone().unwrap_or_default();
                let restarts = crate::trainjob::plan::restarts(j).max(0) as u32;
                if follow.restarted(restarts) {
                    let _ = events.send(JobEvent::Restarting {
                        attempt: restarts,
                        reason: format!(
                            "TrainJob {}: the gang failed; restarted by the runtime's failure policy (restart {restarts})",
                            j.name_any()
                        ),
                    });
                }
                if let Some(ts) = st
                    .trainer_status
                    .as_ref()
                    .filter(|ts| Some(&ts.last_updated_time) != reported.as_ref())
                {
                    reported = Some(ts.last_updated_time.clone());
                    for (name, value) in progress_metrics(ts) {
                        follow.metric(&name, value);
                        let _ = events.send(JobEvent::Metric { name, value });
                    }
                }
                if is_true(&st, COMPLETE) {
                    return Some(TrainingOutcome {
                        model: self.model_location(job, job_id),
                        ..follow.ended(JobState::Succeeded, None)
                    });
                }
                if let Some(c) = st
                    .conditions
                    .iter()
                    .find(|c| c.type_ == FAILED && c.status == "True")
                {
                    return Some(follow.ended(
                        JobState::Failed,
                        Some(format!("TrainJob {}: {}: {}", FAILED, c.reason, c.message)),
                    ));
                }
                // Trainer sets no condition while a job runs: it runs when
                // every node's pod does (as the Kubeflow SDK reads it).
                let now_running = !st.jobs_status.is_empty()
                    && st.jobs_status.iter().all(|s| s.ready > 0 && s.active > 0);
                if now_running && !running {
                    let _ = events.send(JobEvent::Running {
                        message: format!("TrainJob {ns}/{name}: all {nodes} nodes running"),
                    });
                }
                running = now_running;
                None
            })
            .await
    }

    /// Deletes the job's TrainJob, if it has one that has not ended.
    pub(crate) async fn stop_trainjob(
        &self,
        client: &Client,
        ns: &str,
        name: &str,
    ) -> Result<Option<Stopped>, BackendError> {
        let jobs: Api<TrainJob> = Api::namespaced(client.clone(), ns);
        let found = match jobs.get_opt(name).await {
            Ok(f) => f,
            // No TrainJob API on this cluster (404), or no right to it (a Role
            // from before TrainJobs, 403): nothing of this kind to stop here.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 403 => None,
            Err(e) => return Err(api_error(format!("TrainJob {ns}/{name}"), e)),
        };
        let Some(found) = found else {
            return Ok(None);
        };
        let st = found.status.unwrap_or_default();
        if let Some(end) = [COMPLETE, FAILED].into_iter().find(|c| is_true(&st, c)) {
            return Ok(Some(Stopped::Nothing(format!(
                "TrainJob {ns}/{name} had already ended ({end})"
            ))));
        }
        match jobs.delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(Some(Stopped::Remote(format!(
                "TrainJob {ns}/{name} (deleted, with its pods)"
            )))),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
            Err(e) => Err(api_error(format!("cannot delete TrainJob {ns}/{name}"), e)),
        }
    }
}

/// Switchyard's `runtimePatches` entry: the pod's labels (the job id) and
/// volumes, the `node` container's mounts and the service account.
fn runtime_patch(
    labels: Option<BTreeMap<String, String>>,
    pod: &PodSpec,
    mounts: &[k8s_openapi::api::core::v1::VolumeMount],
) -> serde_json::Value {
    let mut spec = serde_json::Map::new();
    spec.insert(
        "volumes".into(),
        json!(pod.volumes.clone().unwrap_or_default()),
    );
    spec.insert(
        "containers".into(),
        json!([{"name": NODE, "volumeMounts": mounts}]),
    );
    if let Some(sa) = &pod.service_account_name {
        spec.insert("serviceAccountName".into(), json!(sa));
    }
    json!({"template": {"spec": {"replicatedJobs": [{
        "name": NODE,
        "template": {"spec": {"template": {
            "metadata": {"labels": labels.unwrap_or_default()},
            "spec": spec,
        }}},
    }]}}})
}

/// Drops `null` members (absent optional fields) so the document parses as
/// the API server would store it.
fn strip_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => serde_json::Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect::<serde_json::Map<_, _>>(),
        ),
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.into_iter().map(strip_nulls).collect())
        }
        other => other,
    }
}

/// The metric names a rank's progress report is recorded under.
pub const PROGRESS_PERCENTAGE: &str = "trainer_progress_percentage";
pub const REMAINING_SECONDS: &str = "trainer_estimated_remaining_seconds";

/// A progress report as the job's metrics: the percentage, the time left,
/// and each reported metric whose value is a number (under its own name).
pub fn progress_metrics(ts: &crate::trainjob::api::TrainerStatus) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    if let Some(p) = ts.progress_percentage {
        out.push((PROGRESS_PERCENTAGE.to_string(), p as f64));
    }
    if let Some(r) = ts.estimated_remaining_seconds {
        out.push((REMAINING_SECONDS.to_string(), r as f64));
    }
    for m in &ts.metrics {
        if let Ok(v) = m.value.trim().parse::<f64>() {
            if v.is_finite() {
                out.push((m.name.clone(), v));
            }
        }
    }
    out
}
