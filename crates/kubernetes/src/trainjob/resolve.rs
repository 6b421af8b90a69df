//! A TrainJob and its runtime, resolved into the gang of pods to run, as
//! Trainer v2.3 builds its JobSet: the runtime's template, then the
//! TrainJob's `runtimePatches` in order, then its `trainer` (image, command,
//! args, env, resources, node count), then the torch plugin's `PET_*`
//! variables and port. Pure: the operator reads the runtime, this decides.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::{json, Value};

use super::api::{
    TrainJob, TrainingRuntimeSpec, ANCESTOR_TRAINER, LABEL_ANCESTOR, NODE, TORCH_PORT,
};
use super::initializer::{self, Claim};

/// One replicated job of the runtime, as its Job would be: `parallelism`
/// pods (indexes 0…), each from `template`.
#[derive(Debug, Clone, PartialEq)]
pub struct GangJob {
    /// The replicated job's name (`node`).
    pub name: String,
    pub parallelism: i32,
    /// The Job's `backoffLimit` (Kubernetes' default 6): failed pods and
    /// in-place container restarts beyond it fail the Job.
    pub backoff_limit: i32,
    /// The pod template, resolved; per-index names and labels are added
    /// when a pod is made.
    pub template: PodTemplateSpec,
    /// JobSet's `dependsOn`: the jobs this one waits for before its pods are made.
    pub depends_on: Vec<Dependency>,
    /// The trainer step (ancestor `trainer`), not an initializer.
    pub trainer: bool,
}

/// One `dependsOn` entry: `job` must be `Complete` (or only `Ready`).
#[derive(Debug, Clone, PartialEq)]
pub struct Dependency {
    pub job: String,
    pub complete: bool,
}

/// What a TrainJob runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Gang {
    pub jobs: Vec<GangJob>,
    /// JobSet's `failurePolicy.maxRestarts`; `None` without a failure policy
    /// (the first failed Job fails the TrainJob, reason `FailedJobs`).
    pub max_restarts: Option<i32>,
    /// The headless Service's name and the pods' subdomain.
    pub subdomain: String,
    /// The claims the pods share (JobSet's `volumeClaimPolicies`), made
    /// before the pods that mount them.
    pub claims: Vec<Claim>,
}

impl Gang {
    pub fn pods(&self) -> i32 {
        self.jobs.iter().map(|j| j.parallelism).sum()
    }
}

/// Why Switchyard does not run a runtime (the TrainJob gets Trainer's
/// `TrainingRuntimeNotSupported` reason with this message).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub String);

/// Resolves `job` against its runtime (`runtime_name` of `kind`).
pub fn resolve(
    job: &TrainJob,
    kind: &str,
    runtime_name: &str,
    runtime: &TrainingRuntimeSpec,
) -> Result<Gang, Unsupported> {
    let name = kind_name(kind, runtime_name);
    let policy = runtime.ml_policy.clone().unwrap_or_default();
    if let Some(fw) = policy.framework().filter(|f| *f != "torch") {
        return Err(Unsupported(format!(
            "unsupported runtime: {name} uses mlPolicy.{fw}; Switchyard's operator runs torch runtimes (and plain JobSet templates) only"
        )));
    }
    initializer::check_runtime(job, &name, runtime)?;
    let spec = &runtime.template.spec;
    if spec.replicated_jobs.is_empty() {
        return Err(Unsupported(format!(
            "unsupported runtime: {name} has no replicatedJobs in its template"
        )));
    }
    let trainer = job.spec.trainer.clone().unwrap_or_default();
    let num_nodes = trainer.num_nodes.or(policy.num_nodes).unwrap_or(1).max(1);
    let job_name = job.metadata.name.clone().unwrap_or_default();
    let claims = initializer::claims(&job_name, runtime)
        .map_err(|Unsupported(why)| Unsupported(format!("runtime {name}: {why}")))?;
    let mut jobs = Vec::new();
    for rj in &spec.replicated_jobs {
        // Typed once: a runtime is kept as written, so a template that is not
        // a Job template is refused here, by name, not met as a panic later.
        let typed: k8s_openapi::api::batch::v1::JobTemplateSpec =
            serde_json::from_value(rj.template.clone()).map_err(|e| {
                Unsupported(format!(
                    "runtime {name}: replicated job {:?}: template is not a Job template: {e}",
                    rj.name
                ))
            })?;
        let mut tmpl = serde_json::to_value(typed).unwrap_or_default();
        let ancestor = tmpl
            .pointer(&format!(
                "/metadata/labels/{}",
                LABEL_ANCESTOR.replace('/', "~1")
            ))
            .and_then(Value::as_str)
            .map(str::to_string);
        let is_trainer = ancestor.as_deref() == Some(ANCESTOR_TRAINER);
        let init_step = ancestor.as_deref().and_then(initializer::step);
        if !is_trainer && init_step.is_none() {
            return Err(Unsupported(format!(
                "unsupported runtime: {name} has replicated job {:?} ({}); Switchyard's operator runs the trainer and the dataset and model initializers (launchers are not supported)",
                rj.name,
                ancestor.map_or("no trainjob-ancestor-step label".to_string(), |a| format!("ancestor step {a}")),
            )));
        }
        // Trainer runs each initializer as one Job whatever the replicas say.
        if is_trainer && rj.replicas.unwrap_or(1) != 1 {
            return Err(Unsupported(format!(
                "unsupported runtime: {name}: replicated job {:?} has replicas {}; Trainer runs the trainer with one Job",
                rj.name,
                rj.replicas.unwrap_or(1)
            )));
        }
        for patch in &job.spec.runtime_patches {
            if let Some(p) = patch.training_runtime_spec.as_ref().and_then(|s| {
                s.pointer("/template/spec/replicatedJobs")?
                    .as_array()?
                    .iter()
                    .find(|r| r["name"] == rj.name.as_str())
                    .cloned()
            }) {
                apply_patch(&mut tmpl, &p);
            }
        }
        let backoff_limit = tmpl
            .pointer("/spec/backoffLimit")
            .and_then(Value::as_i64)
            .unwrap_or(6) as i32;
        let mut pod = tmpl.pointer("/spec/template").cloned().unwrap_or(json!({}));
        if let Some(step) = init_step {
            initializer::apply(job, step, &mut pod, &name)?;
        } else {
            apply_trainer(&mut pod, &trainer);
        }
        initializer::add_volumes(&mut pod, &claims);
        if is_trainer && policy.torch.is_some() {
            let nproc = nproc_per_node(&trainer, &pod);
            let envs = pet_env(&job_name, num_nodes, &nproc);
            let node = container(&mut pod, NODE);
            if let Some(c) = node {
                upsert_by(c, "env", "name", &envs);
                upsert_by(
                    c,
                    "ports",
                    "containerPort",
                    &[json!({"containerPort": TORCH_PORT})],
                );
            }
            for target in policy
                .torch
                .as_ref()
                .and_then(|t| t.env_injection.as_ref())
                .map(|e| e.targets.as_slice())
                .unwrap_or_default()
                .iter()
                .filter(|t| t.job_name == rj.name)
            {
                for cname in &target.container_names {
                    match container(&mut pod, cname) {
                        Some(c) => upsert_by(c, "env", "name", &envs),
                        None => {
                            return Err(Unsupported(format!(
                                "runtime {name}: envInjection target podSet {:?} container {cname:?} not found in runtime template",
                                target.job_name
                            )))
                        }
                    }
                }
            }
        }
        if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
            spec.entry("restartPolicy").or_insert(json!("OnFailure"));
        }
        let template: PodTemplateSpec = serde_json::from_value(pod).map_err(|e| {
            Unsupported(format!(
                "runtime {name}: replicated job {:?}: the pod template is not valid: {e}",
                rj.name
            ))
        })?;
        let depends_on =
            depends_on(rj.depends_on.as_deref().unwrap_or_default()).map_err(|why| {
                Unsupported(format!(
                    "runtime {name}: replicated job {:?}: {why}",
                    rj.name
                ))
            })?;
        // The trainer runs on numNodes; an initializer as its Job template says.
        let parallelism = if is_trainer {
            num_nodes
        } else {
            tmpl.pointer("/spec/parallelism")
                .and_then(Value::as_i64)
                .unwrap_or(1)
                .max(1) as i32
        };
        jobs.push(GangJob {
            name: rj.name.clone(),
            parallelism,
            backoff_limit,
            template,
            depends_on,
            trainer: is_trainer,
        });
    }
    // JobSet's rule: a job depends only on jobs before it.
    for (at, j) in jobs.iter().enumerate() {
        if let Some(d) = j
            .depends_on
            .iter()
            .find(|d| !jobs[..at].iter().any(|e| e.name == d.job))
        {
            return Err(Unsupported(format!(
                "runtime {name}: replicated job {:?} depends on {:?}, which is not a replicated job before it",
                j.name, d.job
            )));
        }
    }
    let subdomain = spec
        .network
        .as_ref()
        .and_then(|n| n.subdomain.clone())
        .unwrap_or(job_name);
    Ok(Gang {
        jobs,
        max_restarts: spec
            .failure_policy
            .as_ref()
            .map(|f| f.max_restarts.unwrap_or(0)),
        subdomain,
        claims,
    })
}

/// JobSet's `dependsOn` entries (`{name, status: Complete|Ready}`).
fn depends_on(raw: &[Value]) -> Result<Vec<Dependency>, String> {
    raw.iter()
        .map(|d| {
            let job = d["name"]
                .as_str()
                .ok_or_else(|| format!("dependsOn entry {d} has no name"))?;
            let complete = match d["status"].as_str() {
                Some("Complete") => true,
                Some("Ready") => false,
                other => {
                    return Err(format!(
                        "dependsOn {job:?} has status {other:?}; JobSet knows Complete and Ready"
                    ))
                }
            };
            Ok(Dependency {
                job: job.to_string(),
                complete,
            })
        })
        .collect()
}

/// `ClusterTrainingRuntime/torch-distributed`, as messages name a runtime.
pub fn kind_name(kind: &str, name: &str) -> String {
    format!("{kind}/{name}")
}

/// The TrainJob's `trainer` on the runtime's `node` container.
fn apply_trainer(pod: &mut Value, trainer: &super::api::Trainer) {
    let Some(c) = container(pod, NODE) else {
        return;
    };
    if let Some(image) = &trainer.image {
        c["image"] = json!(image);
    }
    if let Some(command) = &trainer.command {
        c["command"] = json!(command);
    }
    if let Some(args) = &trainer.args {
        c["args"] = json!(args);
    }
    if let Some(r) = &trainer.resources_per_node {
        c["resources"] = serde_json::to_value(r).unwrap_or_default();
    }
    let env: Vec<Value> = trainer
        .env
        .iter()
        .map(|e| serde_json::to_value(e).unwrap_or_default())
        .collect();
    upsert_by(c, "env", "name", &env);
}

/// `PET_NPROC_PER_NODE`: the TrainJob's `numProcPerNode`, else `auto` with
/// GPUs, else the node's CPUs (requests, else limits, rounded up; at least 1).
fn nproc_per_node(trainer: &super::api::Trainer, pod: &Value) -> String {
    if let Some(n) = trainer.num_proc_per_node {
        return n.to_string();
    }
    let resources = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["name"] == NODE))
        .map(|c| c["resources"].clone())
        .unwrap_or(Value::Null);
    let quantity = |kind: &str, key: &str| {
        resources[kind][key]
            .as_str()
            .map(str::to_string)
            .or_else(|| resources[kind][key].as_f64().map(|f| f.to_string()))
            .and_then(|q| switchyard_training::validate::quantity(&q))
            .filter(|v| *v > 0.0)
    };
    let gpus =
        quantity("requests", "nvidia.com/gpu").or_else(|| quantity("limits", "nvidia.com/gpu"));
    if gpus.is_some() {
        return "auto".into();
    }
    let cpus = quantity("requests", "cpu")
        .or_else(|| quantity("limits", "cpu"))
        .map(|c| c.ceil() as i64)
        .unwrap_or(0);
    cpus.max(1).to_string()
}

/// The torch plugin's variables for a job `job` of `nodes` nodes.
fn pet_env(job: &str, nodes: i32, nproc: &str) -> Vec<Value> {
    vec![
        json!({"name": "PET_NNODES", "value": nodes.to_string()}),
        json!({"name": "PET_NPROC_PER_NODE", "value": nproc}),
        json!({"name": "PET_NODE_RANK", "valueFrom": {"fieldRef": {
            "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}}),
        json!({"name": "PET_MASTER_ADDR", "value": format!("{job}-{NODE}-0-0.{job}")}),
        json!({"name": "PET_MASTER_PORT", "value": TORCH_PORT.to_string()}),
    ]
}

/// The container `name` of a pod template (JSON), if there is one.
fn container<'a>(pod: &'a mut Value, name: &str) -> Option<&'a mut Value> {
    pod.pointer_mut("/spec/containers")?
        .as_array_mut()?
        .iter_mut()
        .find(|c| c["name"] == name)
}

/// Sets each of `items` in the list `field` of `obj`, replacing the entry
/// with the same `key` (as Kubernetes' strategic merge does for env, ports,
/// volumes, containers), else appending.
pub(crate) fn upsert_by(obj: &mut Value, field: &str, key: &str, items: &[Value]) {
    if items.is_empty() {
        return;
    }
    if !obj[field].is_array() {
        obj[field] = json!([]);
    }
    if let Some(list) = obj[field].as_array_mut() {
        for item in items {
            match list.iter_mut().find(|x| x[key] == item[key]) {
                Some(x) => *x = item.clone(),
                None => list.push(item.clone()),
            }
        }
    }
}

/// One runtime patch's replicated job (`{name, template: {metadata, spec:
/// {template: {metadata, spec}}}}`) onto the runtime's Job template, as far
/// as Trainer's patch type reaches: labels and annotations merged,
/// containers matched by name (env and volume mounts merged into them,
/// securityContext set), volumes and image pull secrets by name,
/// tolerations and scheduling gates appended, node selector merged, service
/// account, security context, affinity and grace period set; any other field
/// is ignored, as Trainer's CRD prunes it.
fn apply_patch(job_template: &mut Value, patch: &Value) {
    let Some(p) = patch.get("template") else {
        return;
    };
    // The template was normalized from a typed Job template: its objects are
    // objects, so the indexing below only ever adds to them.
    if !job_template.is_object() {
        return;
    }
    merge_meta(&mut job_template["metadata"], &p["metadata"]);
    let Some(pt) = p.pointer("/spec/template") else {
        return;
    };
    let pod = &mut job_template["spec"]["template"];
    merge_meta(&mut pod["metadata"], &pt["metadata"]);
    let Some(ps) = pt.get("spec").and_then(Value::as_object) else {
        return;
    };
    for (k, v) in ps {
        match k.as_str() {
            "containers" | "initContainers" => {
                for cp in v.as_array().into_iter().flatten() {
                    let cname = cp["name"].as_str().unwrap_or_default().to_string();
                    let list = &mut pod["spec"][k.as_str()];
                    if !list.is_array() {
                        *list = json!([]);
                    }
                    let Some(arr) = list.as_array_mut() else {
                        continue;
                    };
                    let at = match arr.iter().position(|c| c["name"] == cname.as_str()) {
                        Some(i) => i,
                        None => {
                            arr.push(json!({"name": cname}));
                            arr.len() - 1
                        }
                    };
                    let c = &mut arr[at];
                    if !c.is_object() {
                        continue;
                    }
                    for (ck, cv) in cp.as_object().into_iter().flatten() {
                        match ck.as_str() {
                            "env" => upsert_by(
                                c,
                                "env",
                                "name",
                                cv.as_array().map(Vec::as_slice).unwrap_or_default(),
                            ),
                            "volumeMounts" => upsert_by(
                                c,
                                "volumeMounts",
                                "mountPath",
                                cv.as_array().map(Vec::as_slice).unwrap_or_default(),
                            ),
                            "securityContext" => c[ck.as_str()] = cv.clone(),
                            // Trainer's container patch has only these fields.
                            _ => {}
                        }
                    }
                }
            }
            "volumes" | "imagePullSecrets" => upsert_by(
                &mut pod["spec"],
                k,
                "name",
                v.as_array().map(Vec::as_slice).unwrap_or_default(),
            ),
            "tolerations" | "schedulingGates" => {
                let list = &mut pod["spec"][k.as_str()];
                if !list.is_array() {
                    *list = json!([]);
                }
                if let (Some(arr), Some(add)) = (list.as_array_mut(), v.as_array()) {
                    arr.extend(add.iter().cloned());
                }
            }
            "nodeSelector" => merge_map(&mut pod["spec"]["nodeSelector"], v),
            "serviceAccountName"
            | "securityContext"
            | "affinity"
            | "terminationGracePeriodSeconds" => pod["spec"][k.as_str()] = v.clone(),
            // Trainer's pod patch has only the fields above (its CRD prunes the rest).
            _ => {}
        }
    }
}

fn merge_meta(into: &mut Value, from: &Value) {
    for key in ["labels", "annotations"] {
        if from.get(key).is_some() {
            merge_map(&mut into[key], &from[key]);
        }
    }
}

fn merge_map(into: &mut Value, from: &Value) {
    if !into.is_object() {
        *into = json!({});
    }
    if let (Some(i), Some(f)) = (into.as_object_mut(), from.as_object()) {
        for (k, v) in f {
            i.insert(k.clone(), v.clone());
        }
    }
}
