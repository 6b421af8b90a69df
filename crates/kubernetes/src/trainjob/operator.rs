//! The TrainJob controller: reads a TrainJob, its runtime (from the
//! `<job>-runtime-snapshot` ConfigMap once the job has started, as Trainer
//! keeps it, so editing a runtime does not change running jobs), its pods,
//! and the cluster when a gang is to be admitted; asks
//! [`plan`](super::plan::plan); applies the answer. Level-triggered like the
//! PyTorchJob controller: nothing is kept between passes.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use serde::{Deserialize, Serialize};

use super::api::{
    ClusterTrainingRuntime, TrainJob, TrainJobStatus, TrainingRuntime, TrainingRuntimeSpec,
    CLUSTER_RUNTIME, GROUP, RUNTIME,
};
use super::plan::{self, Observed, Plan, Runtime, RESTARTS};
use super::pods::LABEL_JOBSET;
use super::progress;
use super::resolve::{self, Unsupported};
use crate::operator::{
    absent_is_fine, create_ignoring_conflict, run_controller, OperatorConfig, OperatorError,
};
use crate::plan::Next;

struct Ctx {
    client: Client,
    config: OperatorConfig,
    admission: Arc<tokio::sync::Mutex<()>>,
    recorder: Recorder,
    progress: Option<progress::Progress>,
}

/// Runs the TrainJob controller until the process stops. `admission` is
/// shared with the PyTorchJob controller so two gangs are never admitted
/// into the same free capacity.
pub async fn run(
    client: Client,
    config: OperatorConfig,
    admission: Arc<tokio::sync::Mutex<()>>,
) -> Result<(), OperatorError> {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "switchyard-trainjob-controller".into(),
            instance: std::env::var("HOSTNAME").ok(),
        },
    );
    let progress = match &config.progress {
        Some((listen, url)) => Some(
            progress::start(client.clone(), *listen, url)
                .await
                .map_err(|e| OperatorError::Config(e.to_string()))?,
        ),
        None => None,
    };
    let ctx = Arc::new(Ctx {
        client,
        config,
        admission,
        recorder,
        progress,
    });
    let ns = ctx.config.namespace.clone();
    run_controller::<TrainJob, _, _, _>(
        &ctx.client.clone(),
        ns.as_deref(),
        LABEL_JOBSET,
        "switchyard operator --print-crd | kubectl apply --server-side -f -",
        reconcile,
        ctx,
    )
    .await
}

/// What the snapshot ConfigMap holds (key `runtime`): the runtime object.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuntimeObject {
    api_version: String,
    kind: String,
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    spec: TrainingRuntimeSpec,
}

const SNAPSHOT_SUFFIX: &str = "-runtime-snapshot";

/// Why a runtime could not be had this pass.
enum Lookup {
    Found(Box<RuntimeObject>),
    Unsupported(String),
    /// Not (yet) there: an event says so and the pass is retried.
    Missing(String),
}

async fn runtime_of(client: &Client, job: &TrainJob, ns: &str) -> Result<Lookup, OperatorError> {
    let r = &job.spec.runtime_ref;
    if r.group() != GROUP || !matches!(r.kind(), CLUSTER_RUNTIME | RUNTIME) {
        return Ok(Lookup::Unsupported(format!(
            "unsupported runtime: {}.{}",
            r.kind(),
            r.group()
        )));
    }
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let snapshot_name = format!("{}{SNAPSHOT_SUFFIX}", job.name_any());
    if let Some(cm) = maps.get_opt(&snapshot_name).await? {
        let owned = cm
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && Some(&o.uid) == job.metadata.uid.as_ref());
        if !owned {
            // An earlier job of this name's snapshot, not yet collected: wait.
            return Ok(Lookup::Missing(format!(
                "ConfigMap {snapshot_name} belongs to another object (an earlier TrainJob of this name?); waiting for it to go"
            )));
        }
        let text = cm
            .data
            .as_ref()
            .and_then(|d| d.get("runtime"))
            .cloned()
            .unwrap_or_default();
        return match serde_saphyr::from_str::<RuntimeObject>(&text) {
            Ok(obj) if obj.kind == r.kind() && obj.metadata.name.as_deref() == Some(&r.name) => {
                Ok(Lookup::Found(Box::new(obj)))
            }
            Ok(obj) => Ok(Lookup::Unsupported(format!(
                "invalid runtime snapshot: ConfigMap {snapshot_name} holds {}/{} but the job refers to {}/{}",
                obj.kind,
                obj.metadata.name.unwrap_or_default(),
                r.kind(),
                r.name
            ))),
            Err(e) => Ok(Lookup::Unsupported(format!(
                "invalid runtime snapshot: ConfigMap {snapshot_name}: {e}"
            ))),
        };
    }
    let unreadable = |e: kube::Error| -> Result<Lookup, OperatorError> {
        match e {
            // Kept as written by the API server, but not a runtime Switchyard can read.
            kube::Error::SerdeError(e) => Ok(Lookup::Unsupported(format!(
                "runtime {}/{} cannot be read: {e}",
                r.kind(),
                r.name
            ))),
            other => Err(other.into()),
        }
    };
    let found = if r.kind() == CLUSTER_RUNTIME {
        let api: Api<ClusterTrainingRuntime> = Api::all(client.clone());
        let got = match api.get_opt(&r.name).await {
            Ok(got) => got,
            Err(e) => return unreadable(e),
        };
        got.map(|rt| RuntimeObject {
            api_version: format!("{GROUP}/v1alpha1"),
            kind: CLUSTER_RUNTIME.into(),
            metadata: rt.metadata,
            spec: rt.spec.spec,
        })
    } else {
        let api: Api<TrainingRuntime> = Api::namespaced(client.clone(), ns);
        let got = match api.get_opt(&r.name).await {
            Ok(got) => got,
            Err(e) => return unreadable(e),
        };
        got.map(|rt| RuntimeObject {
            api_version: format!("{GROUP}/v1alpha1"),
            kind: RUNTIME.into(),
            metadata: rt.metadata,
            spec: rt.spec.spec,
        })
    };
    let Some(mut obj) = found else {
        let where_ = if r.kind() == RUNTIME {
            format!(" in namespace {ns}")
        } else {
            String::new()
        };
        return Ok(Lookup::Missing(format!(
            "{} {:?} not found{where_}: create it (switchyard operator --print-runtimes shows the torch runtime) or fix spec.runtimeRef",
            r.kind(),
            r.name
        )));
    };
    obj.metadata.managed_fields = None;
    let snapshot = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(snapshot_name),
            namespace: Some(ns.to_string()),
            owner_references: job.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        data: Some(
            [(
                "runtime".to_string(),
                serde_saphyr::to_string(&obj).unwrap_or_default(),
            )]
            .into(),
        ),
        ..Default::default()
    };
    create_ignoring_conflict(&maps, &snapshot).await?;
    Ok(Lookup::Found(Box::new(obj)))
}

async fn reconcile(job: Arc<TrainJob>, ctx: Arc<Ctx>) -> Result<Action, OperatorError> {
    let ns = job.namespace().unwrap_or_else(|| "default".into());
    let name = job.name_any();
    let jobs: Api<TrainJob> = Api::namespaced(ctx.client.clone(), &ns);
    let job = match jobs.get_opt(&name).await? {
        Some(j) if j.metadata.deletion_timestamp.is_none() && !plan::managed_elsewhere(&j) => j,
        _ => return Ok(Action::await_change()),
    };
    let before = job.status.clone().unwrap_or_default();
    // A finished job needs no runtime: only its leftovers are stopped.
    let lookup = if plan::finished(&before) {
        None
    } else {
        Some(runtime_of(&ctx.client, &job, &ns).await?)
    };
    let resolved = match &lookup {
        Some(Lookup::Found(obj)) => Some(
            resolve::resolve(
                &job,
                &obj.kind,
                obj.metadata.name.as_deref().unwrap_or_default(),
                &obj.spec,
            )
            .map(|mut gang| {
                if let Some(p) = &ctx.progress {
                    progress::inject(&mut gang, &ns, &name, p);
                }
                gang
            })
            .map_err(|Unsupported(why)| why),
        ),
        Some(Lookup::Unsupported(why)) => Some(Err(why.clone())),
        Some(Lookup::Missing(why)) => {
            publish(
                &ctx.recorder,
                &job,
                EventType::Warning,
                "TrainJobResourcesCreationFailed",
                why,
            )
            .await;
            tracing::warn!(trainjob = %name, "{why}");
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
        None => None,
    };
    let empty_gang = resolve::Gang {
        jobs: Vec::new(),
        max_restarts: None,
        subdomain: name.clone(),
        claims: Vec::new(),
    };
    let runtime = match &resolved {
        Some(Ok(gang)) => Runtime::Resolved(gang),
        Some(Err(why)) => Runtime::Unsupported(why),
        None => Runtime::Resolved(&empty_gang),
    };
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let svcs: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = ListParams::default().labels(&format!("{LABEL_JOBSET}={name}"));
    // Only what this job (this uid) owns: a job deleted and made again under
    // the same name, or a JobSet of that name, has pods with the same labels.
    let pods: Vec<Pod> = owned_by(pods_api.list(&selector).await?.items, &job);
    let services: Vec<Service> = owned_by(svcs.list(&selector).await?.items, &job);
    let mut observed = Observed {
        job: &job,
        runtime,
        pods: &pods,
        services: &services,
        cluster: None,
    };
    let resync = ctx.config.resync;
    let mut decided = plan::plan(&observed, Timestamp::now(), resync);
    let _admission = if decided.needs_cluster || !decided.create_pods.is_empty() {
        Some(ctx.admission.lock().await)
    } else {
        None
    };
    let cluster;
    if decided.needs_cluster {
        cluster = crate::operator::read_cluster(&ctx.client).await?;
        observed.cluster = Some((&cluster.0, &cluster.1));
        decided = plan::plan(&observed, Timestamp::now(), resync);
    }
    if let (Some(p), false) = (&ctx.progress, plan::finished(&decided.status)) {
        ensure_ca(&Api::namespaced(ctx.client.clone(), &ns), &job, p).await?;
    }
    if let Some((reason, message)) = &decided.warning {
        publish(&ctx.recorder, &job, EventType::Warning, reason, message).await;
    }
    if let Some((n, why)) = &decided.restarts {
        publish(
            &ctx.recorder,
            &job,
            EventType::Normal,
            "Restarting",
            &format!("restarting the gang (restart {n}): {why}"),
        )
        .await;
    }
    apply(&jobs, &pods_api, &svcs, &job, &before, decided).await
}

/// Records an event on the TrainJob (`kubectl describe trainjob` shows it);
/// a failure to record is logged, not fatal.
async fn publish(recorder: &Recorder, job: &TrainJob, type_: EventType, reason: &str, note: &str) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconciling".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &job.object_ref(&())).await {
        tracing::warn!(error = %e, "cannot record an event");
    }
}

/// Carries out a plan in its documented order.
async fn apply(
    jobs: &Api<TrainJob>,
    pods: &Api<Pod>,
    svcs: &Api<Service>,
    job: &TrainJob,
    before: &TrainJobStatus,
    mut plan: Plan,
) -> Result<Action, OperatorError> {
    let name = job.name_any();
    // A pass that ends the job records that before it deletes pods: their
    // restarts and exit codes are what showed the failure, and a pass that
    // stopped in between must not find a job without them and no end.
    let written = plan::finished(&plan.status) && !plan::finished(before);
    if written {
        write_status(jobs, &name, &plan.status, before).await?;
    }
    if let Some((n, _)) = &plan.restarts {
        let patch = serde_json::json!({"metadata": {"annotations": {RESTARTS: n.to_string()}}});
        jobs.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    // With the pods' own grace period, as the Job controller deletes them:
    // ranks get SIGTERM and time to save a checkpoint.
    for pod in &plan.delete_pods {
        absent_is_fine(pods.delete(pod, &DeleteParams::default()).await)?;
    }
    if let Some(svc) = &plan.delete_service {
        absent_is_fine(svcs.delete(svc, &DeleteParams::default()).await)?;
    }
    if let Some(svc) = &plan.create_service {
        create_ignoring_conflict(svcs, svc).await?;
    }
    // The claims, then the pods that mount them; an object the API server
    // refuses (a template no retry can fix) fails the job, naming it.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(
        pods.clone().into_client(),
        &job.namespace().unwrap_or_default(),
    );
    let mut refused = None;
    let mut claims_ready = true;
    for claim in &plan.create_claims {
        match ensure_claim(&claims, claim, job).await? {
            ClaimState::Ready => {}
            ClaimState::Leaving => claims_ready = false,
            ClaimState::Refused(why) => {
                refused = Some(why);
                break;
            }
        }
    }
    if !claims_ready && refused.is_none() {
        // A claim of the same name is still being deleted (the job was made
        // again): its pods would wait on it forever; make them once it is gone.
        plan.create_pods.clear();
        plan.next = Next::Requeue(Duration::from_secs(1));
    }
    if refused.is_none() {
        for pod in &plan.create_pods {
            refused = refused_by_server(create_ignoring_conflict(pods, pod).await, "pod", pod)?;
            if refused.is_some() {
                break;
            }
        }
    }
    if let Some(message) = refused {
        plan::set_condition(
            &mut plan.status,
            plan::FAILED,
            true,
            "JobCreationFailed",
            &message,
            &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
        );
        plan.next = Next::Requeue(Duration::from_secs(1));
    }
    if !written {
        write_status(jobs, &name, &plan.status, before).await?;
    }
    Ok(match plan.next {
        Next::AwaitChange => Action::await_change(),
        Next::Requeue(after) => Action::requeue(after),
    })
}

enum ClaimState {
    Ready,
    /// A claim of that name is being deleted.
    Leaving,
    /// The job fails with this message.
    Refused(String),
}

/// The claim exists and is this job's to use: made when missing; one being
/// deleted is waited for; one the job should own but another object does
/// (a user's claim of that name) is refused, naming it, as JobSet's webhook
/// refuses it.
async fn ensure_claim(
    api: &Api<PersistentVolumeClaim>,
    claim: &PersistentVolumeClaim,
    job: &TrainJob,
) -> Result<ClaimState, OperatorError> {
    let name = claim.name_any();
    let Some(found) = api.get_opt(&name).await? else {
        return Ok(
            match refused_by_server(create_ignoring_conflict(api, claim).await, "claim", claim)? {
                Some(why) => ClaimState::Refused(why),
                None => ClaimState::Ready,
            },
        );
    };
    if found.metadata.deletion_timestamp.is_some() {
        return Ok(ClaimState::Leaving);
    }
    let wants_owner = claim.metadata.owner_references.is_some();
    let uid = job.metadata.uid.as_deref();
    let ours = found
        .owner_references()
        .iter()
        .any(|o| Some(o.uid.as_str()) == uid);
    if wants_owner && !ours {
        return Ok(ClaimState::Refused(format!(
            "claim {name} exists and is not this TrainJob's (the runtime's volumeClaimPolicies make it, deleted with the job): delete it or rename the job"
        )));
    }
    Ok(ClaimState::Ready)
}

/// A creation the API server refused as invalid (422, 400), as the message
/// the job fails with; other errors are the pass's (retried).
fn refused_by_server<K: ResourceExt>(
    created: Result<(), OperatorError>,
    what: &str,
    obj: &K,
) -> Result<Option<String>, OperatorError> {
    match created {
        Err(OperatorError::Kube(kube::Error::Api(e))) if e.code == 422 || e.code == 400 => {
            Ok(Some(format!(
                "the API server refused {what} {}: {}",
                obj.name_any(),
                e.message
            )))
        }
        other => other.map(|()| None),
    }
}

/// The job's `<job>-tls-config` holds this operator's CA: made when missing,
/// replaced when it holds another (the operator made a new CA when it
/// started; pods' projected volumes follow the change) or belongs to an
/// earlier job of the same name.
async fn ensure_ca(
    maps: &Api<ConfigMap>,
    job: &TrainJob,
    p: &progress::Progress,
) -> Result<(), OperatorError> {
    let want = progress::ca_config_map(job, p);
    let name = want.name_any();
    match maps.get_opt(&name).await? {
        None => create_ignoring_conflict(maps, &want).await,
        Some(have) if have.data == want.data && owned_by(vec![have.clone()], job).len() == 1 => {
            Ok(())
        }
        Some(have) => {
            let mut next = want;
            next.metadata.resource_version = have.metadata.resource_version;
            maps.replace(&name, &kube::api::PostParams::default(), &next)
                .await?;
            Ok(())
        }
    }
}

/// Writes the status when it changed: a merge patch that names every field
/// but trainerStatus, which only the ranks write (a pass must not put back
/// the value it read).
async fn write_status(
    jobs: &Api<TrainJob>,
    name: &str,
    status: &TrainJobStatus,
    before: &TrainJobStatus,
) -> Result<(), OperatorError> {
    if status == before {
        return Ok(());
    }
    let mut v = serde_json::to_value(status).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("trainerStatus");
        for k in ["conditions", "jobsStatus"] {
            o.entry(k).or_insert(serde_json::Value::Null);
        }
    }
    jobs.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&serde_json::json!({"status": v})),
    )
    .await?;
    Ok(())
}

/// The objects whose controller is `job` (by uid).
fn owned_by<K: Resource>(items: Vec<K>, job: &TrainJob) -> Vec<K> {
    let uid = job.metadata.uid.as_deref();
    items
        .into_iter()
        .filter(|o| {
            o.meta()
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.controller == Some(true) && Some(r.uid.as_str()) == uid)
        })
        .collect()
}
