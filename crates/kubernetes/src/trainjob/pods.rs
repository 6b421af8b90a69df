//! The objects a TrainJob's gang is made of, named and labelled as JobSet's
//! and Kubernetes' Job controllers name and label theirs, so what selects
//! them (the Kubeflow SDK, `kubectl -l jobset.sigs.k8s.io/jobset-name=…`,
//! DNS names in `PET_MASTER_ADDR`) finds the same things: pods
//! `<job>-<rjob>-0-<index>-<suffix>` with host names `<job>-<rjob>-0-<index>`
//! in the headless Service `<job>`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EnvVar, EnvVarSource, ObjectFieldSelector, PersistentVolumeClaim, Pod, Service, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use super::api::TrainJob;
use super::initializer::Claim;
use super::resolve::{Gang, GangJob};

pub const LABEL_JOBSET: &str = "jobset.sigs.k8s.io/jobset-name";
pub const LABEL_RJOB: &str = "jobset.sigs.k8s.io/replicatedjob-name";
pub const LABEL_RJOB_REPLICAS: &str = "jobset.sigs.k8s.io/replicatedjob-replicas";
pub const LABEL_JOB_INDEX: &str = "jobset.sigs.k8s.io/job-index";
pub const LABEL_JOB_GLOBAL_INDEX: &str = "jobset.sigs.k8s.io/job-global-index";
/// Which restart of the whole gang a pod belongs to (JobSet's counter).
pub const LABEL_RESTART: &str = "jobset.sigs.k8s.io/restart-attempt";
/// Which pod of its index (in its restart attempt) a pod is: 0 for the first,
/// then one more for each replacement (restartPolicy Never).
pub const LABEL_SEQ: &str = "trainer.switchyard.io/pod-seq";

/// A pod's [`LABEL_SEQ`].
pub fn seq_of(p: &Pod) -> Option<u32> {
    p.labels().get(LABEL_SEQ)?.parse().ok()
}

/// A pod's index in its Job; also an annotation, which `PET_NODE_RANK` reads.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
pub const LABEL_JOB_NAME: &str = "batch.kubernetes.io/job-name";

/// The Job a replicated job's pods would belong to: `<job>-<rjob>-0`.
pub fn job_name(job: &str, rjob: &str) -> String {
    format!("{job}-{rjob}-0")
}

/// A pod's host name: `<job>-<rjob>-0-<index>`.
pub fn host_name(job: &str, rjob: &str, index: i32) -> String {
    format!("{}-{index}", job_name(job, rjob))
}

/// Pod `index` of `gj`, the `seq`-th made for that index in restart
/// `attempt` (a Job replaces a failed pod under restartPolicy Never). The
/// name's suffix is derived, not random, so a pass that is repeated (the
/// operator restarted) makes the same name and the API server refuses the
/// duplicate.
pub fn pod_for(
    job: &TrainJob,
    gang: &Gang,
    gj: &GangJob,
    index: i32,
    attempt: i32,
    seq: u32,
) -> Pod {
    let name = job.name_any();
    let host = host_name(&name, &gj.name, index);
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let suffix = suffix(&format!("{uid}/{host}/{attempt}/{seq}"));
    let mut template = gj.template.clone();
    let meta = template.metadata.take().unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    let job_set_labels = [
        (LABEL_JOBSET, name.clone()),
        (LABEL_RJOB, gj.name.clone()),
        (LABEL_RJOB_REPLICAS, "1".to_string()),
        (LABEL_JOB_INDEX, "0".to_string()),
        (LABEL_JOB_GLOBAL_INDEX, global_index(gang, gj).to_string()),
        (LABEL_RESTART, attempt.to_string()),
        (COMPLETION_INDEX, index.to_string()),
        (LABEL_JOB_NAME, job_name(&name, &gj.name)),
        ("job-name", job_name(&name, &gj.name)),
        (LABEL_SEQ, seq.to_string()),
    ];
    for (k, v) in job_set_labels.iter() {
        labels.insert(k.to_string(), v.clone());
    }
    let mut annotations = meta.annotations.unwrap_or_default();
    for k in [
        LABEL_JOBSET,
        LABEL_RJOB,
        LABEL_RJOB_REPLICAS,
        LABEL_JOB_INDEX,
        LABEL_JOB_GLOBAL_INDEX,
        LABEL_RESTART,
    ] {
        if let Some(v) = labels.get(k) {
            annotations.insert(k.to_string(), v.clone());
        }
    }
    annotations.insert(COMPLETION_INDEX.to_string(), index.to_string());
    let mut spec = template.spec.unwrap_or_default();
    // What the Job controller gives every container of an Indexed Job's pod.
    for c in spec
        .init_containers
        .iter_mut()
        .flatten()
        .chain(spec.containers.iter_mut())
    {
        let env = c.env.get_or_insert_with(Vec::new);
        if !env.iter().any(|e| e.name == "JOB_COMPLETION_INDEX") {
            env.push(EnvVar {
                name: "JOB_COMPLETION_INDEX".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: Some("v1".into()),
                        field_path: format!("metadata.labels['{COMPLETION_INDEX}']"),
                    }),
                    ..Default::default()
                }),
            });
        }
    }
    spec.hostname = Some(host.clone());
    spec.subdomain = Some(gang.subdomain.clone());
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("{host}-{suffix}")),
            namespace: job.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: job.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The headless Service every pod's host name resolves in (JobSet's
/// `network.enableDNSHostnames`), ready or not so rank 0's address
/// resolves before it passes a readiness probe.
pub fn service_for(job: &TrainJob, gang: &Gang) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(gang.subdomain.clone()),
            namespace: job.namespace(),
            labels: Some(BTreeMap::from([(LABEL_JOBSET.to_string(), job.name_any())])),
            owner_references: job.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(BTreeMap::from([(LABEL_JOBSET.to_string(), job.name_any())])),
            publish_not_ready_addresses: Some(true),
            ..Default::default()
        }),
        status: None,
    }
}

/// A shared claim in the job's namespace; owned by the job (deleted with
/// it) unless its policy says `whenDeleted: Retain`, as JobSet does.
pub fn claim_for(job: &TrainJob, claim: &Claim) -> PersistentVolumeClaim {
    let mut pvc = claim.claim.clone();
    pvc.metadata.namespace = job.namespace();
    if claim.owned {
        pvc.metadata.owner_references = job.controller_owner_ref(&()).map(|o| vec![o]);
    }
    pvc
}

fn global_index(gang: &Gang, gj: &GangJob) -> usize {
    gang.jobs
        .iter()
        .position(|j| j.name == gj.name)
        .unwrap_or(0)
}

/// Five lower-case letters and digits from `seed` (FNV-1a), as Kubernetes'
/// generated names look.
fn suffix(seed: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h: u64 = 0xcbf29ce484222325;
    for b in seed.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    (0..5)
        .map(|_| {
            let c = ALPHABET[(h % ALPHABET.len() as u64) as usize] as char;
            h /= ALPHABET.len() as u64;
            c
        })
        .collect()
}
