//! `switchyard operator`: reconciles PyTorchJobs.
//!
//! Level-triggered: every pass reads the job, its pods and services and the
//! cluster's capacity from the API server and acts on what it sees, so
//! restarting the operator in the middle of a job changes nothing. Restarts
//! are counted in `status.restartCount`, not in memory.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Node, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

use crate::capacity;
use crate::crd::{JobStatus, PyTorchJob, ReplicaStatus, CONTAINER};
use crate::pods::{self, Slot, LABEL_JOB, LABEL_TYPE};

/// Why a reconcile pass failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Invalid(String),
}

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Watch one namespace, or all.
    pub namespace: Option<String>,
    /// Re-check every job this often even without events (deadlines, capacity).
    pub resync: Duration,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            namespace: None,
            resync: Duration::from_secs(10),
        }
    }
}

struct Ctx {
    client: Client,
    config: OperatorConfig,
    /// Held from the capacity check to the last pod created, so two jobs
    /// reconciled at once cannot both be admitted into the same free capacity.
    admission: tokio::sync::Mutex<()>,
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// How the training container (named `pytorch`, else the first) of a pod ended.
fn terminated(p: &Pod) -> Option<&ContainerStateTerminated> {
    let all = p.status.as_ref()?.container_statuses.as_ref()?;
    let c = all
        .iter()
        .find(|c| c.name == CONTAINER)
        .or_else(|| all.first())?;
    c.state.as_ref()?.terminated.as_ref()
}

/// The training container's exit code of a finished pod.
fn exit_code(p: &Pod) -> i32 {
    terminated(p).map(|t| t.exit_code).unwrap_or(1)
}

/// When the training container of a finished pod ended (seconds), if known.
fn finished_at(p: &Pod) -> Option<i64> {
    terminated(p)?.finished_at.as_ref().map(|f| f.0.as_second())
}

/// Seconds since `t` (seconds since the epoch).
fn seconds_since(t: i64) -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second() - t
}

/// Whether a failed pod may be restarted under its replica's restartPolicy.
pub fn retryable(policy: &str, code: i32) -> bool {
    match policy {
        "Never" => false,
        "ExitCode" => code >= 128,
        _ => true, // OnFailure (the default) and Always
    }
}

/// Runs the controller until the process stops.
pub async fn run(client: Client, config: OperatorConfig) -> Result<(), OperatorError> {
    crate::install_crypto();
    let (jobs, pods_api, svcs): (Api<PyTorchJob>, Api<Pod>, Api<Service>) = match &config.namespace
    {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    // Fails early, with a clear message, when the CRD is not installed.
    jobs.list(&ListParams::default().limit(1)).await.map_err(|e| {
        OperatorError::Invalid(format!(
            "cannot list PyTorchJobs ({e}); install the CRD first: switchyard operator --print-crd | kubectl apply -f -"
        ))
    })?;
    let ctx = Arc::new(Ctx {
        client,
        config,
        admission: tokio::sync::Mutex::new(()),
    });
    let owned = watcher::Config::default().labels(LABEL_JOB);
    Controller::new(jobs, watcher::Config::default())
        .owns(pods_api, owned.clone())
        .owns(svcs, owned)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(job = %obj.name, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
    Ok(())
}

fn error_policy(_job: Arc<PyTorchJob>, err: &OperatorError, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(error = %err, "will retry");
    Action::requeue(Duration::from_secs(2))
}

async fn delete_pod(api: &Api<Pod>, name: &str) -> Result<(), OperatorError> {
    match api
        .delete(name, &DeleteParams::default().grace_period(0))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// One pass over one job.
async fn reconcile(job: Arc<PyTorchJob>, ctx: Arc<Ctx>) -> Result<Action, OperatorError> {
    let ns = job.namespace().unwrap_or_else(|| "default".into());
    let name = job.name_any();
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let jobs: Api<PyTorchJob> = Api::namespaced(ctx.client.clone(), &ns);
    // The watch cache may lag our own last status write; act on the stored object.
    let job = match jobs.get(&name).await {
        Ok(j) => Arc::new(j),
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Action::await_change()),
        Err(e) => return Err(e.into()),
    };
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let svc_api: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = ListParams::default().labels(&format!("{LABEL_JOB}={name}"));
    let pods = pods_api.list(&selector).await?.items;
    let services = svc_api.list(&selector).await?.items;
    let mut status = job.status.clone().unwrap_or_default();
    let before = status.clone();
    let ends = Ends {
        jobs: &jobs,
        pods_api: &pods_api,
        name: &name,
        before: &before,
    };
    let run_policy = job.spec.run_policy.clone().unwrap_or_default();
    // Another controller's job (e.g. Kueue's MultiKueue): not ours to touch.
    if let Some(other) = run_policy
        .managed_by
        .as_deref()
        .filter(|m| !m.is_empty() && *m != "kubeflow.org/training-operator")
    {
        tracing::debug!(job = %name, managed_by = other, "left to its controller");
        return Ok(Action::await_change());
    }
    let slots = pods::slots(&job);
    if slots.is_empty() {
        status.set(
            "Failed",
            "PyTorchJobFailed",
            "pytorchReplicaSpecs has no Master or Worker replicas",
        );
        return finish(&jobs, &name, status, &before, Action::await_change()).await;
    }
    if status.conditions.is_empty() {
        status.set(
            "Created",
            "PyTorchJobCreated",
            &format!("PyTorchJob {name} is created."),
        );
    }
    let pod_of = |slot: &Slot| pods.iter().find(|p| p.name_any() == slot.name(&name));

    // Finished: clean up as the policy says, then expire after the TTL.
    if status.finished() {
        cleanup(
            &pods_api,
            &svc_api,
            &pods,
            run_policy.clean_pod_policy.as_deref(),
        )
        .await?;
        if let (Some(ttl), Some(done)) = (
            run_policy.ttl_seconds_after_finished,
            status.completion_time.clone(),
        ) {
            let age = seconds_since(done.0.as_second());
            if age >= ttl as i64 {
                for p in &pods {
                    delete_pod(&pods_api, &p.name_any()).await?;
                }
                for s in &services {
                    let _ = svc_api
                        .delete(&s.name_any(), &DeleteParams::default())
                        .await;
                }
                let _ = jobs.delete(&name, &DeleteParams::background()).await;
                return Ok(Action::await_change());
            }
            return finish(
                &jobs,
                &name,
                status,
                &before,
                Action::requeue(Duration::from_secs((ttl as i64 - age).max(1) as u64)),
            )
            .await;
        }
        return finish(&jobs, &name, status, &before, Action::await_change()).await;
    }

    reconcile_hpa(&ctx.client, &ns, &job, run_policy.suspend.unwrap_or(false)).await?;

    // Suspended: no pods; resuming starts the gang again with a new start time.
    if run_policy.suspend.unwrap_or(false) {
        for p in &pods {
            delete_pod(&pods_api, &p.name_any()).await?;
        }
        let message = format!("PyTorchJob {name} is suspended.");
        status.clear_because("Running", Some(("PyTorchJobSuspended", &message)));
        status.set("Suspended", "PyTorchJobSuspended", &message);
        status.replica_statuses.clear();
        status.start_time = None;
        return finish(&jobs, &name, status, &before, Action::await_change()).await;
    }
    if status.has("Suspended") {
        let message = format!("PyTorchJob {name} is resumed.");
        status.clear_because("Suspended", Some(("PyTorchJobResumed", &message)));
    }

    // Deadline.
    if let (Some(deadline), Some(start)) = (
        run_policy.active_deadline_seconds,
        status.start_time.clone(),
    ) {
        let age = seconds_since(start.0.as_second());
        if age >= deadline {
            return ends
                .fail(
                    &pods,
                    status,
                    "DeadlineExceeded",
                    &format!(
                    "PyTorchJob {name} has run for {age}s, past activeDeadlineSeconds {deadline}"
                ),
                )
                .await;
        }
    }

    // Containers the kubelet restarted in place (OnFailure, Always) count
    // against backoffLimit, as Kubeflow counts them.
    if let Some(limit) = run_policy.backoff_limit {
        let in_place: i32 = pods
            .iter()
            .filter(|p| phase(p) == "Running")
            .flat_map(|p| p.status.iter())
            .flat_map(|st| {
                st.container_statuses
                    .iter()
                    .flatten()
                    .chain(st.init_container_statuses.iter().flatten())
            })
            .map(|c| c.restart_count)
            .sum();
        if in_place > 0 && (in_place >= limit || limit == 0) {
            return ends
                .fail(
                    &pods,
                    status,
                    "BackoffLimitExceeded",
                    &format!(
                    "containers restarted {in_place} times in place; backoffLimit {limit} reached"
                ),
                )
                .await;
        }
    }

    // Finished pods decide the job.
    let master_slot = slots.first().cloned();
    let has_master = job.spec.pytorch_replica_specs.contains_key("Master");
    // Success first: a worker that fails while the finished master tears down
    // the process group must not restart a job that is done.
    let succeeded = if has_master {
        master_slot
            .as_ref()
            .and_then(&pod_of)
            .is_some_and(|p| phase(p) == "Succeeded")
    } else {
        slots
            .iter()
            .all(|s| pod_of(s).is_some_and(|p| phase(p) == "Succeeded"))
    };
    // The first rank to fail is the cause; the others usually fail because it
    // left the collective (a peer killed with 137 makes the master exit 1 with
    // "connection reset"), so the earliest failure decides, as in the local backend.
    let mut failed: Vec<(&Slot, &Pod)> = slots
        .iter()
        .filter(|_| !succeeded)
        .filter_map(|s| pod_of(s).map(|p| (s, p)))
        .filter(|(_, p)| phase(p) == "Failed")
        .collect();
    // Times have one-second resolution: within the same second a killed pod
    // (exit code ≥ 128) is taken as the cause rather than its peers' errors.
    failed.sort_by_key(|(_, p)| (finished_at(p).unwrap_or(i64::MAX), exit_code(p) < 128));
    if let Some((slot, p)) = failed.first().copied() {
        let code = exit_code(p);
        let policy = pods::replica_spec(&job, slot)
            .and_then(|r| r.restart_policy.clone())
            .unwrap_or_else(|| "OnFailure".into());
        let pod_name = p.name_any();
        if !retryable(&policy, code) {
            // Peers report their end separately: while others still run, give a
            // killed peer a few seconds to show up as the earlier failure.
            let others_running = pods
                .iter()
                .any(|o| o.name_any() != pod_name && matches!(phase(o), "Pending" | "Running"));
            let age = finished_at(p).map(seconds_since);
            if others_running && age.is_some_and(|a| a < FAILURE_SETTLE_SECONDS) {
                return finish(
                    &jobs,
                    &name,
                    status,
                    &before,
                    Action::requeue(Duration::from_secs(1)),
                )
                .await;
            }
            return ends
                .fail(
                    &pods,
                    status,
                    "PyTorchJobFailed",
                    &format!(
                    "pod {pod_name} exited with code {code} (restartPolicy {policy}: not retried)"
                ),
                )
                .await;
        }
        let restarts = status.restart_count.unwrap_or(0) + 1;
        if let Some(limit) = run_policy.backoff_limit {
            if restarts > limit {
                return ends
                    .fail(
                        &pods,
                        status,
                        "BackoffLimitExceeded",
                        &format!(
                            "pod {pod_name} exited with code {code}; backoffLimit {limit} reached"
                        ),
                    )
                    .await;
            }
        }
        // As Kubeflow, only the failed pod is recreated; a job that asked for
        // whole-gang restarts (Switchyard's own) restarts every pod.
        if pods::gang_restarts(&job) {
            for p in &pods {
                delete_pod(&pods_api, &p.name_any()).await?;
            }
        } else {
            delete_pod(&pods_api, &pod_name).await?;
        }
        status.restart_count = Some(restarts);
        status.set(
            "Restarting",
            "PyTorchJobRestarting",
            &format!("pod {pod_name} exited with code {code}; restarting (restart {restarts})"),
        );
        status.replica_statuses = replica_statuses(&name, &slots, &[]);
        return finish(
            &jobs,
            &name,
            status,
            &before,
            Action::requeue(Duration::from_millis(500)),
        )
        .await;
    }
    if succeeded {
        // Workers still running after the master finished are left to
        // cleanPodPolicy (None keeps them, as Kubeflow does; Switchyard's own
        // TrainingJobs ask for Running).
        status.replica_statuses = replica_statuses(&name, &slots, &pods);
        // As Kubeflow: once the job succeeded, replicas still active count as succeeded.
        for r in status.replica_statuses.values_mut() {
            r.succeeded += r.active;
            r.active = 0;
        }
        status.set(
            "Succeeded",
            "PyTorchJobSucceeded",
            &format!("PyTorchJob {name} is successfully completed."),
        );
        status.completion_time = Some(now());
        cleanup(
            &pods_api,
            &svc_api,
            &pods,
            run_policy.clean_pod_policy.as_deref(),
        )
        .await?;
        let next = match run_policy.ttl_seconds_after_finished {
            Some(ttl) => Action::requeue(Duration::from_secs(ttl.max(0) as u64)),
            None => Action::await_change(),
        };
        return finish(&jobs, &name, status, &before, next).await;
    }

    // A pod whose image cannot be had never starts: say why instead of waiting forever.
    if let Some(why) = pods.iter().find_map(image_failure) {
        return ends.fail(&pods, status, "ImagePullFailed", &why).await;
    }

    // Missing pods: the whole gang only when it fits; single replacements directly.
    let missing: Vec<&Slot> = slots.iter().filter(|s| pod_of(s).is_none()).collect();
    if !missing.is_empty() {
        let _admission = ctx.admission.lock().await;
        if missing.len() == slots.len() {
            let gang: Vec<capacity::Amount> = slots
                .iter()
                .filter_map(|s| pods::pod_for(&job, s, &slots).spec)
                .map(|spec| capacity::requests(&spec))
                .collect();
            let nodes: Api<Node> = Api::all(ctx.client.clone());
            let nodes = nodes.list(&ListParams::default()).await?.items;
            let all_pods: Api<Pod> = Api::all(ctx.client.clone());
            let all_pods = all_pods.list(&ListParams::default()).await?.items;
            if let Err(why) = capacity::place(&nodes, &all_pods, &gang) {
                let msg = format!("waiting for capacity: {why}");
                status.set("Created", "PyTorchJobWaitingForCapacity", &msg);
                return finish(
                    &jobs,
                    &name,
                    status,
                    &before,
                    Action::requeue(ctx.config.resync.min(Duration::from_secs(3))),
                )
                .await;
            }
        }
        for s in &slots {
            if !services.iter().any(|x| x.name_any() == s.name(&name)) {
                create_ignoring_conflict(&svc_api, &pods::service_for(&job, s)).await?;
            }
        }
        for s in &missing {
            match create_ignoring_conflict(&pods_api, &pods::pod_for(&job, s, &slots)).await {
                // The API server rejects the template itself: no retry can help.
                Err(OperatorError::Kube(kube::Error::Api(e))) if e.code == 422 || e.code == 400 => {
                    let pods_now = pods_api.list(&selector).await?.items;
                    return ends
                        .fail(
                            &pods_now,
                            status,
                            "InvalidSpec",
                            &format!(
                                "the API server refused pod {}: {}",
                                s.name(&name),
                                e.message
                            ),
                        )
                        .await;
                }
                other => other?,
            }
        }
        if status.start_time.is_none() {
            status.start_time = Some(now());
        }
        if !status.has("Restarting") {
            status.set(
                "Created",
                "PyTorchJobCreated",
                &format!("PyTorchJob {name} is created."),
            );
        }
    }

    status.replica_statuses = replica_statuses(&name, &slots, &pods);
    let all_running = missing.is_empty()
        && slots
            .iter()
            .all(|s| pod_of(s).is_some_and(|p| phase(p) == "Running"));
    if all_running {
        status.set(
            "Running",
            "PyTorchJobRunning",
            &format!("PyTorchJob {name} is running."),
        );
    }
    let next = match (
        run_policy.active_deadline_seconds,
        status.start_time.clone(),
    ) {
        (Some(d), Some(start)) => {
            let left = d - (seconds_since(start.0.as_second()));
            Action::requeue(Duration::from_secs(
                left.clamp(1, ctx.config.resync.as_secs().max(1) as i64) as u64,
            ))
        }
        _ => Action::requeue(ctx.config.resync),
    };
    finish(&jobs, &name, status, &before, next).await
}

/// The HorizontalPodAutoscaler of an elastic job with `elasticPolicy.metrics`,
/// as Kubeflow keeps it: named after the job, scaling it through its `scale`
/// subresource between min and max replicas; deleted while the job is
/// suspended, updated when the policy changes.
async fn reconcile_hpa(
    client: &Client,
    ns: &str,
    job: &PyTorchJob,
    suspended: bool,
) -> Result<(), OperatorError> {
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    let Some(e) = job
        .spec
        .elastic_policy
        .as_ref()
        .filter(|e| e.metrics.is_some())
    else {
        return Ok(());
    };
    let name = job.name_any();
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), ns);
    let current = api.get_opt(&name).await?;
    if suspended {
        if current.is_some() {
            api.delete(&name, &DeleteParams::default()).await?;
        }
        return Ok(());
    }
    let mut want: HorizontalPodAutoscaler = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": ns, "ownerReferences": [kube::Resource::controller_owner_ref(job, &())]},
        "spec": {
            "scaleTargetRef": {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": name},
            "minReplicas": e.min_replicas,
            "maxReplicas": e.max_replicas.unwrap_or(1),
            "metrics": e.metrics,
        },
    }))
    .map_err(|err| OperatorError::Invalid(format!("elasticPolicy.metrics: {err}")))?;
    match current {
        None => create_ignoring_conflict(&api, &want).await,
        Some(cur) if cur.spec != want.spec => {
            want.metadata.resource_version = cur.metadata.resource_version;
            api.replace(&name, &PostParams::default(), &want).await?;
            Ok(())
        }
        Some(_) => Ok(()),
    }
}

/// How long a non-retryable failure waits for a peer's earlier failure to be
/// reported before it fails the job.
const FAILURE_SETTLE_SECONDS: i64 = 10;

/// How long a pod may retry pulling its image before the job fails.
const IMAGE_PULL_GRACE_SECONDS: i64 = 300;

/// Why a pending pod will not start because of its image, if that is so:
/// at once for an image that is never pulled or is not a valid name, after
/// [`IMAGE_PULL_GRACE_SECONDS`] of pull retries otherwise.
pub fn image_failure(p: &Pod) -> Option<String> {
    let st = p.status.as_ref()?;
    if st.phase.as_deref() != Some("Pending") {
        return None;
    }
    let age = p
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| seconds_since(t.0.as_second()))
        .unwrap_or(0);
    st.init_container_statuses
        .iter()
        .flatten()
        .chain(st.container_statuses.iter().flatten())
        .find_map(|c| {
            let w = c.state.as_ref()?.waiting.as_ref()?;
            let reason = w.reason.as_deref()?;
            let fatal = match reason {
                "ErrImageNeverPull" | "InvalidImageName" => true,
                "ErrImagePull" | "ImagePullBackOff" => age >= IMAGE_PULL_GRACE_SECONDS,
                _ => false,
            };
            fatal.then(|| {
                format!(
                    "pod {} cannot start container {}: {reason}: {}",
                    p.name_any(),
                    c.name,
                    w.message.clone().unwrap_or_default()
                )
            })
        })
}

/// `replicaStatuses` as Kubeflow counts them: a Running pod is active (one
/// being deleted counts as failed), Succeeded and Failed pods as such, a
/// Pending pod not at all; each with its label selector (what the `scale`
/// subresource hands an HPA).
fn replica_statuses(
    name: &str,
    slots: &[Slot],
    pods: &[Pod],
) -> std::collections::BTreeMap<String, ReplicaStatus> {
    let mut out = std::collections::BTreeMap::new();
    for s in slots {
        let key = if s.rtype == "master" {
            "Master"
        } else {
            "Worker"
        };
        let entry: &mut ReplicaStatus = out.entry(key.to_string()).or_insert_with(|| {
            let labels = std::collections::BTreeMap::from([
                (pods::LABEL_JOB.to_string(), name.to_string()),
                (
                    pods::LABEL_OPERATOR.to_string(),
                    "pytorchjob-controller".to_string(),
                ),
                (LABEL_TYPE.to_string(), s.rtype.clone()),
            ]);
            ReplicaStatus {
                selector: Some(
                    labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                label_selector: Some(
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                        match_labels: Some(labels),
                        ..Default::default()
                    },
                ),
                ..Default::default()
            }
        });
        if let Some(pod) = pods.iter().find(|p| {
            p.labels().get(LABEL_TYPE) == Some(&s.rtype)
                && p.labels().get(pods::LABEL_INDEX) == Some(&s.index.to_string())
        }) {
            count(entry, pod);
        }
    }
    out
}

/// Counts one pod as Kubeflow does: Running active (failed while being
/// deleted), Succeeded and Failed as such, Pending not at all.
fn count(entry: &mut ReplicaStatus, pod: &Pod) {
    match (phase(pod), pod.metadata.deletion_timestamp.is_some()) {
        ("Running", false) => entry.active += 1,
        ("Running", true) | ("Failed", _) => entry.failed += 1,
        ("Succeeded", _) => entry.succeeded += 1,
        _ => {}
    }
}

async fn create_ignoring_conflict<K>(api: &Api<K>, obj: &K) -> Result<(), OperatorError>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes pods, and their Services, as cleanPodPolicy says once a job has
/// ended: `None` (Kubeflow's default) nothing, `Running` the pods still
/// Pending or Running, `All` every pod.
async fn cleanup(
    api: &Api<Pod>,
    svc_api: &Api<Service>,
    pods: &[Pod],
    policy: Option<&str>,
) -> Result<(), OperatorError> {
    for p in pods {
        let delete = match policy.unwrap_or("None") {
            "All" => true,
            "Running" => matches!(phase(p), "Pending" | "Running"),
            _ => false,
        };
        if delete {
            delete_pod(api, &p.name_any()).await?;
            // A pod and its Service share the name.
            match svc_api
                .delete(&p.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// What ending a job needs from one reconcile pass.
struct Ends<'a> {
    jobs: &'a Api<PyTorchJob>,
    pods_api: &'a Api<Pod>,
    name: &'a str,
    before: &'a JobStatus,
}

impl Ends<'_> {
    /// Fails the job: counts the pods as they stood, stops the running ones,
    /// writes `Failed` with `reason` and `message`.
    async fn fail(
        &self,
        pods: &[Pod],
        mut status: JobStatus,
        reason: &str,
        message: &str,
    ) -> Result<Action, OperatorError> {
        // The counts as the pods stood when the job failed.
        for (key, st) in status.replica_statuses.iter_mut() {
            let rtype = key.to_lowercase();
            (st.active, st.succeeded, st.failed) = (0, 0, 0);
            for p in pods
                .iter()
                .filter(|p| p.labels().get(LABEL_TYPE) == Some(&rtype))
            {
                count(st, p);
            }
        }
        // A failed job's running pods stop (they cannot finish the job any more).
        for p in pods
            .iter()
            .filter(|p| matches!(phase(p), "Pending" | "Running"))
        {
            delete_pod(self.pods_api, &p.name_any()).await?;
        }
        status.set("Failed", reason, message);
        status.completion_time = Some(now());
        finish(
            self.jobs,
            self.name,
            status,
            self.before,
            Action::await_change(),
        )
        .await
    }
}

/// Writes the status when it changed.
async fn finish(
    jobs: &Api<PyTorchJob>,
    name: &str,
    status: JobStatus,
    before: &JobStatus,
    next: Action,
) -> Result<Action, OperatorError> {
    if &status != before {
        let mut v = serde_json::to_value(&status).unwrap_or_default();
        // A merge patch keeps fields it does not mention: clear the unset ones.
        if let Some(o) = v.as_object_mut() {
            for k in ["startTime", "completionTime", "restartCount"] {
                o.entry(k).or_insert(serde_json::Value::Null);
            }
            if status.replica_statuses.is_empty() {
                o.insert("replicaStatuses".into(), serde_json::Value::Null);
            }
        }
        let patch = serde_json::json!({"status": v});
        jobs.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::{image_failure, retryable};

    #[test]
    fn restart_policies() {
        assert!(retryable("ExitCode", 137));
        assert!(!retryable("ExitCode", 1));
        assert!(!retryable("Never", 137));
        assert!(retryable("OnFailure", 1));
        assert!(retryable("Always", 0));
    }

    fn waiting(reason: &str, age_seconds: i64) -> k8s_openapi::api::core::v1::Pod {
        let created = k8s_openapi::jiff::Timestamp::now()
            .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(age_seconds))
            .expect("time");
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "j-master-0", "creationTimestamp": created.to_string()},
            "status": {"phase": "Pending", "containerStatuses": [{
                "name": "pytorch", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
                "state": {"waiting": {"reason": reason, "message": "not here"}}}]},
        }))
        .expect("pod")
    }

    #[test]
    fn image_failures_end_the_wait() {
        let never = image_failure(&waiting("ErrImageNeverPull", 1)).expect("fatal at once");
        assert!(
            never.contains("j-master-0") && never.contains("ErrImageNeverPull: not here"),
            "{never}"
        );
        assert!(
            image_failure(&waiting("ImagePullBackOff", 10)).is_none(),
            "pulls are retried a while"
        );
        assert!(image_failure(&waiting("ImagePullBackOff", 301)).is_some());
        assert!(image_failure(&waiting("ContainerCreating", 1000)).is_none());
    }
}
