//! `switchyard operator`: reconciles PyTorchJobs.
//!
//! Level-triggered: every pass reads the job, its pods and services and the
//! cluster's capacity from the API server and acts on what it sees, so
//! restarting the operator in the middle of a job changes nothing. Restarts
//! are counted in `status.restartCount`, not in memory.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

use crate::crd::{JobStatus, PyTorchJob};
use crate::plan::{self, Hpa, Next, Observed, Plan};
use crate::pods::LABEL_JOB;

/// Why a reconcile pass failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Invalid(String),
    /// No cluster to reconcile: the kubeconfig named, or the one inferred.
    #[error("{0}")]
    Config(String),
}

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Watch one namespace, or all.
    pub namespace: Option<String>,
    /// Re-check every job this often even without events (deadlines, capacity).
    pub resync: Duration,
    /// Whether to reconcile TrainJobs.
    pub trainjobs: TrainJobs,
    /// TrainJob progress endpoint: where it listens and the `https://` URL
    /// pods reach it at ([`crate::trainjob::progress`]); off when `None`.
    pub progress: Option<(std::net::SocketAddr, String)>,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            namespace: None,
            resync: Duration::from_secs(10),
            trainjobs: TrainJobs::Auto,
            progress: None,
        }
    }
}

/// Whether the operator reconciles TrainJobs. Two controllers acting on one
/// TrainJob would each make its pods, so with `Auto` Switchyard takes
/// TrainJobs only when the cluster's TrainJob CRD is the one Switchyard
/// installs (labelled [`CRD_OWNER`]); a cluster that runs Kubeflow Trainer
/// has Trainer's CRD, and Trainer's controller keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainJobs {
    Auto,
    Always,
    Never,
}

/// The label on the CRDs Switchyard generates (`app.kubernetes.io/managed-by: switchyard`).
pub const CRD_OWNER: (&str, &str) = ("app.kubernetes.io/managed-by", "switchyard");

struct Ctx {
    client: Client,
    config: OperatorConfig,
    /// See [`reconcile`].
    admission: Arc<tokio::sync::Mutex<()>>,
}

/// Runs the operator against the cluster of `kubeconfig`, else KUBECONFIG,
/// ~/.kube/config or the in-cluster service account, so a caller needs no
/// Kubernetes client of its own.
pub async fn run_on(
    kubeconfig: Option<&std::path::Path>,
    config: OperatorConfig,
) -> Result<(), OperatorError> {
    let client = crate::client(kubeconfig)
        .await
        .map_err(OperatorError::Config)?;
    run(client, config).await
}

/// Runs the PyTorchJob controller and, as [`TrainJobs`] says, the TrainJob
/// controller, until the process stops. Each kind needs its CRD; with
/// neither installed the operator refuses to start.
pub async fn run(client: Client, config: OperatorConfig) -> Result<(), OperatorError> {
    crate::install_crypto();
    let admission = Arc::new(tokio::sync::Mutex::new(()));
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let (pytorch_crd, trainjob_crd, ours) = match (
        crds.get_opt("pytorchjobs.kubeflow.org").await,
        crds.get_opt("trainjobs.trainer.kubeflow.org").await,
    ) {
        (Ok(p), Ok(t)) => {
            let ours = t.as_ref().is_some_and(|c| {
                c.labels().get(CRD_OWNER.0).map(String::as_str) == Some(CRD_OWNER.1)
            });
            (p.is_some(), t.is_some(), ours)
        }
        // A ClusterRole from before TrainJobs (no `get` on CRDs): PyTorchJobs
        // as before, TrainJobs only when asked for (whose CRD is unknown).
        (Err(kube::Error::Api(e)), _) | (_, Err(kube::Error::Api(e))) if e.code == 403 => {
            tracing::warn!("cannot read CRDs (deploy/operator.yaml grants get on customresourcedefinitions); reconciling PyTorchJobs, and TrainJobs only with --trainjobs always");
            (true, config.trainjobs == TrainJobs::Always, false)
        }
        (Err(e), _) | (_, Err(e)) => return Err(e.into()),
    };
    let trainjobs = match (config.trainjobs, trainjob_crd) {
        (TrainJobs::Never, _) | (_, false) => false,
        (TrainJobs::Always, true) => true,
        (TrainJobs::Auto, true) => ours,
    };
    if trainjob_crd && !trainjobs && config.trainjobs == TrainJobs::Auto {
        tracing::info!(
            "the TrainJob CRD is not Switchyard's (no {}={} label): Kubeflow Trainer's controller reconciles TrainJobs here; Switchyard leaves them (--trainjobs always overrides)",
            CRD_OWNER.0,
            CRD_OWNER.1
        );
    }
    if !pytorch_crd && !trainjobs {
        return Err(OperatorError::Invalid(
            "neither the PyTorchJob nor (Switchyard's) TrainJob CRD is installed; install them first: switchyard operator --print-crd | kubectl apply --server-side -f -".into(),
        ));
    }
    let pytorch = async {
        if pytorch_crd {
            run_pytorchjobs(client.clone(), config.clone(), admission.clone()).await
        } else {
            Ok(())
        }
    };
    let train = async {
        if trainjobs {
            tracing::info!("reconciling TrainJobs");
            crate::trainjob::operator::run(client.clone(), config.clone(), admission.clone()).await
        } else {
            Ok(())
        }
    };
    tokio::try_join!(pytorch, train).map(|_| ())
}

async fn run_pytorchjobs(
    client: Client,
    config: OperatorConfig,
    admission: Arc<tokio::sync::Mutex<()>>,
) -> Result<(), OperatorError> {
    let ns = config.namespace.clone();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        config,
        admission,
    });
    run_controller::<PyTorchJob, _, _, _>(
        &client,
        ns.as_deref(),
        LABEL_JOB,
        "switchyard operator --print-crd | kubectl apply --server-side -f -",
        reconcile,
        ctx,
    )
    .await
}

/// Runs one controller of `K` (in one namespace, or all) that owns the pods
/// and Services labelled `label`, until the process stops. Fails early,
/// saying how to install it (`install`), when `K`'s CRD is not served.
pub(crate) async fn run_controller<K, C, F, Fut>(
    client: &Client,
    namespace: Option<&str>,
    label: &str,
    install: &str,
    reconcile: F,
    ctx: Arc<C>,
) -> Result<(), OperatorError>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    C: Send + Sync + 'static,
    F: FnMut(Arc<K>, Arc<C>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Action, OperatorError>> + Send + 'static,
{
    fn api<T>(client: &Client, ns: Option<&str>) -> Api<T>
    where
        T: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let jobs: Api<K> = api(client, namespace);
    let kind = K::kind(&()).to_string();
    jobs.list(&ListParams::default().limit(1))
        .await
        .map_err(|e| {
            OperatorError::Invalid(format!(
                "cannot list {kind}s ({e}); install the CRD first: {install}"
            ))
        })?;
    let owned = watcher::Config::default().labels(label);
    Controller::new(jobs, watcher::Config::default())
        .owns(api::<Pod>(client, namespace), owned.clone())
        .owns(api::<Service>(client, namespace), owned)
        .shutdown_on_signal()
        .run(
            reconcile,
            |_job, err: &OperatorError, _ctx| {
                tracing::warn!(error = %err, "will retry");
                Action::requeue(Duration::from_secs(2))
            },
            ctx,
        )
        .for_each(|res| {
            let kind = kind.clone();
            async move {
                match res {
                    Ok((obj, _)) => tracing::debug!(%kind, job = %obj.name, "reconciled"),
                    Err(e) => tracing::warn!(%kind, error = %e, "reconcile failed"),
                }
            }
        })
        .await;
    Ok(())
}

/// Every node and every pod of the cluster, for admitting a whole gang (the
/// caller holds the admission lock from this read to its last pod created,
/// so two gangs are never admitted into the same free capacity).
pub(crate) async fn read_cluster(client: &Client) -> Result<(Vec<Node>, Vec<Pod>), OperatorError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    Ok((
        nodes.list(&ListParams::default()).await?.items,
        pods.list(&ListParams::default()).await?.items,
    ))
}

/// One pass over one job: observe, [`plan`](crate::plan::plan), apply.
async fn reconcile(job: Arc<PyTorchJob>, ctx: Arc<Ctx>) -> Result<Action, OperatorError> {
    let ns = job.namespace().unwrap_or_else(|| "default".into());
    let name = job.name_any();
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let jobs: Api<PyTorchJob> = Api::namespaced(ctx.client.clone(), &ns);
    // The watch cache may lag our own last status write; act on the stored object.
    let job = match jobs.get(&name).await {
        Ok(j) => j,
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Action::await_change()),
        Err(e) => return Err(e.into()),
    };
    let apis = Apis {
        jobs,
        pods: Api::namespaced(ctx.client.clone(), &ns),
        services: Api::namespaced(ctx.client.clone(), &ns),
        selector: ListParams::default().labels(&format!("{LABEL_JOB}={name}")),
        name,
    };
    let pods = apis.pods.list(&apis.selector).await?.items;
    let services = apis.services.list(&apis.selector).await?.items;
    let mut observed = Observed {
        job: &job,
        pods: &pods,
        services: &services,
        cluster: None,
    };
    let resync = ctx.config.resync;
    let mut decided = plan::plan(&observed, Timestamp::now(), resync);
    // Held from the capacity check to the last pod created, so two jobs
    // reconciled at once cannot both be admitted into the same free capacity.
    let _admission = if decided.needs_cluster || !decided.create_pods.is_empty() {
        Some(ctx.admission.lock().await)
    } else {
        None
    };
    let cluster;
    if decided.needs_cluster {
        cluster = read_cluster(&ctx.client).await?;
        observed.cluster = Some((&cluster.0, &cluster.1));
        decided = plan::plan(&observed, Timestamp::now(), resync);
    }
    if decided.hpa != Hpa::Leave {
        reconcile_hpa(&ctx.client, &ns, &job, decided.hpa == Hpa::Remove).await?;
    }
    let before = job.status.clone().unwrap_or_default();
    match apis.apply(&before, decided.clone()).await {
        // The API server rejects the template itself: no retry can help.
        Err(Refused::Pod(pod, message)) => {
            let pods_now = apis.pods.list(&apis.selector).await?.items;
            // The status as it stood before the creates: nothing started.
            let mut status = decided.status;
            status.start_time = before.start_time.clone();
            status.replica_statuses = before.replica_statuses.clone();
            let failed = plan::fail(
                &pods_now,
                status,
                "InvalidSpec",
                &format!("the API server refused pod {pod}: {message}"),
                Timestamp::now(),
            );
            Ok(apis.apply(&before, failed).await?)
        }
        Err(Refused::Other(e)) => Err(e),
        Ok(next) => Ok(next),
    }
}

/// The APIs one pass over one job writes to.
struct Apis {
    jobs: Api<PyTorchJob>,
    pods: Api<Pod>,
    services: Api<Service>,
    /// The job's pods and services.
    selector: ListParams,
    name: String,
}

/// Why applying a plan stopped.
enum Refused {
    /// The API server refused this pod's template (400, 422): the job fails.
    Pod(String, String),
    Other(OperatorError),
}

impl From<OperatorError> for Refused {
    fn from(e: OperatorError) -> Self {
        Refused::Other(e)
    }
}

impl From<Refused> for OperatorError {
    fn from(r: Refused) -> Self {
        match r {
            Refused::Pod(pod, message) => {
                OperatorError::Invalid(format!("the API server refused pod {pod}: {message}"))
            }
            Refused::Other(e) => e,
        }
    }
}

impl Apis {
    /// Carries out a plan in its documented order; `before` is the status as
    /// stored, written over only when the plan changes it.
    async fn apply(&self, before: &JobStatus, plan: Plan) -> Result<Action, Refused> {
        for pod in &plan.delete_pods {
            absent_is_fine(
                self.pods
                    .delete(pod, &DeleteParams::default().grace_period(0))
                    .await,
            )?;
        }
        for svc in &plan.delete_services {
            absent_is_fine(self.services.delete(svc, &DeleteParams::default()).await)?;
        }
        for svc in &plan.create_services {
            create_ignoring_conflict(&self.services, svc).await?;
        }
        for pod in &plan.create_pods {
            match create_ignoring_conflict(&self.pods, pod).await {
                Err(OperatorError::Kube(kube::Error::Api(e))) if e.code == 422 || e.code == 400 => {
                    return Err(Refused::Pod(pod.name_any(), e.message));
                }
                other => other?,
            }
        }
        write_status(&self.jobs, &self.name, &plan.status, before).await?;
        if plan.delete_job {
            absent_is_fine(
                self.jobs
                    .delete(&self.name, &DeleteParams::background())
                    .await,
            )?;
        }
        Ok(match plan.next {
            Next::AwaitChange => Action::await_change(),
            Next::Requeue(after) => Action::requeue(after),
        })
    }
}

/// A delete of something already gone succeeded.
pub(crate) fn absent_is_fine<T>(r: Result<T, kube::Error>) -> Result<(), OperatorError> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
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

pub(crate) async fn create_ignoring_conflict<K>(api: &Api<K>, obj: &K) -> Result<(), OperatorError>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Writes the status when it changed.
async fn write_status(
    jobs: &Api<PyTorchJob>,
    name: &str,
    status: &JobStatus,
    before: &JobStatus,
) -> Result<(), OperatorError> {
    if status != before {
        let mut v = serde_json::to_value(status).unwrap_or_default();
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
    Ok(())
}
