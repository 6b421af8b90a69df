//! What the operator creates for each replica of a PyTorchJob: one Pod and one
//! headless Service named `<job>-<type>-<index>`, owned by the job, with the
//! training operator's environment (MASTER_ADDR, WORLD_SIZE, RANK, PET_*) and the
//! SageMaker-style part of Switchyard's runtime contract (SM_HOSTS,
//! SM_CURRENT_HOST, …) so one script runs unchanged on every backend.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, Pod, PodSpec, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::crd::{PyTorchJob, ReplicaRestart, CONTAINER, DEFAULT_PORT};

pub const LABEL_JOB: &str = "training.kubeflow.org/job-name";
pub const LABEL_TYPE: &str = "training.kubeflow.org/replica-type";
pub const LABEL_INDEX: &str = "training.kubeflow.org/replica-index";
pub const LABEL_ROLE: &str = "training.kubeflow.org/job-role";
pub const LABEL_OPERATOR: &str = "training.kubeflow.org/operator-name";
/// A Switchyard extension, opt-in: with `gang`, a retryable failure restarts
/// the whole gang (every pod recreated; Switchyard's own TrainingJobs set it,
/// since a static collective cannot continue without the lost rank) instead
/// of Kubeflow's per-pod restarts.
pub const RESTART_SCOPE: &str = "switchyard.io/restart-scope";

/// Whether the job asked for whole-gang restarts ([`RESTART_SCOPE`]).
pub fn gang_restarts(job: &PyTorchJob) -> bool {
    job.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RESTART_SCOPE))
        .is_some_and(|v| v == "gang")
}

/// One pod slot of a job: its replica type (lowercase), index and global node rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub rtype: String,
    pub index: i32,
    pub rank: i32,
}

impl Slot {
    pub fn name(&self, job: &str) -> String {
        format!("{job}-{}-{}", self.rtype, self.index)
    }
}

/// Every slot: the Master first (rank 0), then the workers (ranks 1…).
pub fn slots(job: &PyTorchJob) -> Vec<Slot> {
    let mut out = Vec::new();
    let specs = &job.spec.pytorch_replica_specs;
    let mut rank = 0;
    for key in ["Master", "Worker"] {
        if let Some(spec) = specs.get(key) {
            for index in 0..spec.replicas.unwrap_or(1).max(0) {
                out.push(Slot {
                    rtype: key.to_lowercase(),
                    index,
                    rank,
                });
                rank += 1;
            }
        }
    }
    out
}

/// The replica spec a slot comes from.
pub fn replica_spec<'a>(job: &'a PyTorchJob, slot: &Slot) -> Option<&'a crate::crd::ReplicaSpec> {
    let key = if slot.rtype == "master" {
        "Master"
    } else {
        "Worker"
    };
    job.spec.pytorch_replica_specs.get(key)
}

fn owner(job: &PyTorchJob) -> Vec<OwnerReference> {
    job.controller_owner_ref(&()).into_iter().collect()
}

fn labels(job: &str, slot: &Slot) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        (LABEL_JOB.to_string(), job.to_string()),
        (LABEL_TYPE.to_string(), slot.rtype.clone()),
        (LABEL_INDEX.to_string(), slot.index.to_string()),
        (
            LABEL_OPERATOR.to_string(),
            "pytorchjob-controller".to_string(),
        ),
    ]);
    if slot.rank == 0 {
        l.insert(LABEL_ROLE.to_string(), "master".to_string());
    }
    l
}

/// The port named `pytorchjob-port` in the template, else 23456.
pub fn master_port(job: &PyTorchJob) -> i32 {
    job.spec
        .pytorch_replica_specs
        .values()
        .flat_map(|r| r.template.spec.iter())
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some("pytorchjob-port"))
        .map(|p| p.container_port)
        .unwrap_or(DEFAULT_PORT)
}

/// `PET_NPROC_PER_NODE` as Kubeflow sets it: `elasticPolicy.nProcPerNode`
/// when given, else `spec.nprocPerNode` verbatim (`auto`, `gpu`, `cpu` or a
/// number; `auto` when absent, Kubeflow's default).
pub fn nproc_per_node(job: &PyTorchJob) -> String {
    if let Some(n) = job
        .spec
        .elastic_policy
        .as_ref()
        .and_then(|e| e.n_proc_per_node)
    {
        return n.to_string();
    }
    job.spec
        .nproc_per_node
        .clone()
        .unwrap_or_else(|| "auto".into())
}

/// Processes per node as a number for `WORLD_SIZE`: the count when
/// `nproc_per_node` is one, else 1 (Kubeflow's `getNprocPerNodeInt`).
fn procs_per_node(job: &PyTorchJob) -> i32 {
    nproc_per_node(job).parse::<i32>().unwrap_or(1).max(1)
}

fn var(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// The environment the operator gives one slot's training container.
pub fn env_for(job: &PyTorchJob, slot: &Slot, all: &[Slot]) -> Vec<EnvVar> {
    let name = job.metadata.name.clone().unwrap_or_default();
    let nodes = all.len() as i32;
    let nproc = procs_per_node(job);
    let port = master_port(job);
    let master = all
        .first()
        .map(|s| s.name(&name))
        .unwrap_or_else(|| format!("{name}-master-0"));
    let mut env = vec![var("PYTHONUNBUFFERED", "1")];
    // As Kubeflow: the master's address, WORLD_SIZE and the ranks only when
    // there is a Master (a Worker-only elastic job meets at the rendezvous).
    if job.spec.pytorch_replica_specs.contains_key("Master") {
        env.extend([
            var("MASTER_ADDR", &master),
            var("MASTER_PORT", port.to_string()),
            var("WORLD_SIZE", (nodes * nproc).to_string()),
            var("RANK", slot.rank.to_string()),
            var("PET_MASTER_ADDR", &master),
            var("PET_MASTER_PORT", port.to_string()),
            var("PET_NODE_RANK", slot.rank.to_string()),
        ]);
    }
    env.push(var("PET_NPROC_PER_NODE", nproc_per_node(job)));
    match &job.spec.elastic_policy {
        Some(e) => {
            let workers = job
                .spec
                .pytorch_replica_specs
                .get("Worker")
                .and_then(|w| w.replicas)
                .unwrap_or(1);
            let rdzv_port = e.rdzv_port.unwrap_or(port);
            let host = e
                .rdzv_host
                .clone()
                .unwrap_or_else(|| format!("{name}-worker-0"));
            let nnodes = match (e.min_replicas, e.max_replicas) {
                (None, None) => workers.to_string(),
                (min, max) => format!("{}:{}", min.unwrap_or(workers), max.unwrap_or(workers)),
            };
            env.push(var("PET_NNODES", nnodes));
            env.push(var(
                "PET_RDZV_BACKEND",
                e.rdzv_backend.clone().unwrap_or_else(|| "c10d".into()),
            ));
            env.push(var("PET_RDZV_ENDPOINT", format!("{host}:{rdzv_port}")));
            if let Some(id) = &e.rdzv_id {
                env.push(var("PET_RDZV_ID", id));
            }
            if let Some(r) = e.max_restarts {
                env.push(var("PET_MAX_RESTARTS", r.to_string()));
            }
            if let Some(conf) = e.rdzv_conf.as_ref().filter(|c| !c.is_empty()) {
                let text: Vec<String> = conf
                    .iter()
                    .map(|c| {
                        format!(
                            "{}={}",
                            c.key.as_deref().unwrap_or(""),
                            c.value.as_deref().unwrap_or("")
                        )
                    })
                    .collect();
                env.push(var("PET_RDZV_CONF", text.join(",")));
            }
            if e.standalone == Some(true) {
                env.push(var("PET_STANDALONE", ""));
            }
        }
        None => env.push(var("PET_NNODES", nodes.to_string())),
    }
    // Nothing else: a kubeflow.org/v1 job gets Kubeflow's environment. A
    // Switchyard TrainingJob's pods get the SageMaker contract per host from
    // their ConfigMap (see contract.rs).
    env
}

/// The Pod of one slot: the replica's template, named and labelled, owned by
/// the job, with the environment added (a variable the template sets wins).
pub fn pod_for(job: &PyTorchJob, slot: &Slot, all: &[Slot]) -> Pod {
    let name = job.metadata.name.clone().unwrap_or_default();
    let template = replica_spec(job, slot)
        .map(|r| r.template.clone())
        .unwrap_or_default();
    let mut meta = template.metadata.unwrap_or_default();
    meta.name = Some(slot.name(&name));
    meta.namespace = job.metadata.namespace.clone();
    meta.labels
        .get_or_insert_with(Default::default)
        .extend(labels(&name, slot));
    meta.owner_references = Some(owner(job));
    meta.generate_name = None;
    let mut spec: PodSpec = template.spec.unwrap_or_default();
    // As Kubeflow: OnFailure and Always restart the container in place (the
    // kubelet), ExitCode and Never leave restarts to the operator. Whole-gang
    // restarts are always the operator's.
    let policy = replica_spec(job, slot).map_or(ReplicaRestart::OnFailure, |r| r.restart());
    let kubelet = if policy.in_place() && !gang_restarts(job) {
        policy.as_str()
    } else {
        "Never"
    };
    spec.restart_policy = Some(kubelet.into());
    spec.hostname.get_or_insert_with(|| slot.name(&name));
    let env = env_for(job, slot, all);
    let port = master_port(job);
    let idx = spec
        .containers
        .iter()
        .position(|c| c.name == CONTAINER)
        .unwrap_or(0);
    if spec.containers.is_empty() {
        spec.containers.push(Container {
            name: CONTAINER.into(),
            ..Default::default()
        });
    }
    // Every container gets the environment, as Kubeflow's operator gives it.
    for c in &mut spec.containers {
        let existing = c.env.get_or_insert_with(Vec::new);
        for v in &env {
            if !existing.iter().any(|e| e.name == v.name) {
                existing.push(v.clone());
            }
        }
    }
    let c = &mut spec.containers[idx];
    let ports = c.ports.get_or_insert_with(Vec::new);
    if !ports
        .iter()
        .any(|p| p.name.as_deref() == Some("pytorchjob-port"))
    {
        ports.push(ContainerPort {
            name: Some("pytorchjob-port".into()),
            container_port: port,
            ..Default::default()
        });
    }
    Pod {
        metadata: meta,
        spec: Some(spec),
        status: None,
    }
}

/// Every named port of the replica's `pytorch` container (a `metrics` port
/// stays reachable for a ServiceMonitor), with `pytorchjob-port` added when
/// the template lacks it, as Kubeflow's defaulting does; sorted by name.
fn service_ports(job: &PyTorchJob, slot: &Slot) -> Vec<ServicePort> {
    let mut ports: BTreeMap<String, i32> = replica_spec(job, slot)
        .and_then(|r| r.template.spec.as_ref())
        .and_then(|s| s.containers.iter().find(|c| c.name == CONTAINER))
        .and_then(|c| c.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p.name.clone()?, p.container_port)))
        .collect();
    ports
        .entry("pytorchjob-port".into())
        .or_insert_with(|| master_port(job));
    ports
        .into_iter()
        .map(|(name, port)| ServicePort {
            name: Some(name),
            port,
            ..Default::default()
        })
        .collect()
}

/// The headless Service that gives a slot its stable DNS name.
pub fn service_for(job: &PyTorchJob, slot: &Slot) -> Service {
    let name = job.metadata.name.clone().unwrap_or_default();
    let l = labels(&name, slot);
    let selector: BTreeMap<String, String> = l
        .iter()
        .filter(|(k, _)| k.as_str() != LABEL_ROLE)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Service {
        metadata: ObjectMeta {
            name: Some(slot.name(&name)),
            namespace: job.metadata.namespace.clone(),
            labels: Some(l),
            owner_references: Some(owner(job)),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector),
            ports: Some(service_ports(job, slot)),
            ..Default::default()
        }),
        status: None,
    }
}
