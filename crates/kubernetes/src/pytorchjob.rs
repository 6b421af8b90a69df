//! The PyTorchJob a TrainingJob becomes, built from typed Kubernetes objects:
//! one pod template shared by the Master and the Workers (the Master also
//! keeps the model on the data claim), the SageMaker half of the runtime
//! contract mounted from the job's ConfigMap and run before the command,
//! channels as claims or init-container downloads, and the job's restart,
//! backoff and deadline as Kubeflow's run policy.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar, KeyToPath,
    PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, ResourceRequirements, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use switchyard_training::{
    contract, modeltrainer, ChannelSource, Contract, SourceFile, TrainingJob,
};

use crate::contract as pod_contract;
use crate::crd::CONTAINER;
use crate::crd::{CleanPods, PyTorchJob, PyTorchJobSpec, ReplicaRestart, ReplicaSpec, RunPolicy};
use crate::training::{
    code_dir, object_name, shared_env, KubernetesBackend, CODE_DIR, LABEL_JOB_ID,
};

/// The volumes and mounts of the training container.
#[derive(Default)]
struct Storage {
    volumes: Vec<Volume>,
    mounts: Vec<VolumeMount>,
    init: Vec<Container>,
}

impl Storage {
    fn add(&mut self, volume: Volume, mount: VolumeMount) {
        self.volumes.push(volume);
        self.mounts.push(mount);
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

fn claim(name: &str, claim: &str, read_only: bool) -> Volume {
    Volume {
        name: name.into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim.into(),
            read_only: read_only.then_some(true),
        }),
        ..Default::default()
    }
}

fn config_map(name: &str, map: &str, items: Vec<KeyToPath>) -> Volume {
    Volume {
        name: name.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: map.into(),
            items: Some(items),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}

/// Whether the file at `path` is executable by its owner.
fn executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o100 != 0)
}

/// Whether `rel` is the `.sh` entry point of a ModelTrainer-style job.
fn is_shell_entry(job: &TrainingJob, rel: &str) -> bool {
    job.spec.contract == Contract::ModelTrainer
        && job.spec.entry_point.as_deref() == Some(rel)
        && rel.ends_with(".sh")
}

fn key(key: String, path: String) -> KeyToPath {
    KeyToPath {
        key,
        path,
        ..Default::default()
    }
}

impl KubernetesBackend {
    /// The PyTorchJob for a TrainingJob. `code` is the listing of
    /// `sourceDir` (the ConfigMap's keys are `f<index>`).
    pub fn render(&self, job: &TrainingJob, job_id: &str, code: &[SourceFile]) -> PyTorchJob {
        let s = &job.spec;
        let name = object_name(&job.name, job_id);
        let storage = self.storage(job, &name, code);
        let template = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([(LABEL_JOB_ID.into(), job_id.into())])),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                init_containers: Some(storage.init),
                containers: vec![Container {
                    name: CONTAINER.into(),
                    image: Some(s.image.clone().unwrap_or_default()),
                    command: Some(command_through(job, false)),
                    working_dir: Some(code_dir(job).unwrap_or("/").into()),
                    env: Some(env(job)),
                    resources: Some(resources(job)),
                    volume_mounts: Some(storage.mounts),
                    ..Default::default()
                }],
                volumes: Some(storage.volumes),
                // Absent: the namespace's `default` account.
                service_account_name: s.service_account.clone(),
                ..Default::default()
            }),
        };
        let master = self.master_template(job, job_id, template.clone());
        let restart = ReplicaRestart::from(s.restart_policy).as_str().to_string();
        let replica = |replicas: u32, template: PodTemplateSpec| ReplicaSpec {
            replicas: Some(replicas as i32),
            restart_policy: Some(restart.clone()),
            template,
        };
        let mut replicas = BTreeMap::from([("Master".to_string(), replica(1, master))]);
        if s.nodes > 1 {
            replicas.insert("Worker".into(), replica(s.nodes - 1, template));
        }
        let mut pj = PyTorchJob::new(
            &name,
            PyTorchJobSpec {
                pytorch_replica_specs: replicas,
                run_policy: Some(RunPolicy {
                    backoff_limit: Some(s.backoff_limit as i32),
                    clean_pod_policy: Some(CleanPods::Running.as_str().into()),
                    active_deadline_seconds: s.max_runtime_seconds.map(|t| t as i64),
                    ..Default::default()
                }),
                elastic_policy: None,
                nproc_per_node: Some(s.procs_per_node.to_string()),
            },
        );
        pj.metadata.namespace = Some(
            s.namespace
                .clone()
                .unwrap_or_else(|| self.config.namespace.clone()),
        );
        pj.metadata.labels = Some(BTreeMap::from([
            (LABEL_JOB_ID.into(), job_id.into()),
            ("switchyard.io/job-name".into(), job.name.clone()),
        ]));
        // A static gang cannot continue without a lost rank: restart it whole.
        pj.metadata.annotations = Some(BTreeMap::from([(
            crate::pods::RESTART_SCOPE.into(),
            "gang".into(),
        )]));
        pj
    }

    /// The Master's template: the shared one, with its model folder on the
    /// data claim when the model is kept there.
    fn master_template(
        &self,
        job: &TrainingJob,
        job_id: &str,
        mut template: PodTemplateSpec,
    ) -> PodTemplateSpec {
        let Some((claim_name, sub)) = self.on_claim(self.model_location(job, job_id).as_deref())
        else {
            return template;
        };
        let Some(spec) = template.spec.as_mut() else {
            return template;
        };
        let volumes = spec.volumes.get_or_insert_with(Vec::new);
        if !volumes.iter().any(|v| v.name == "data") {
            volumes.push(claim("data", &claim_name, false));
        }
        if let Some(mounts) = spec.containers[0].volume_mounts.as_mut() {
            mounts.retain(|m| m.name != "model");
            mounts.push(VolumeMount {
                sub_path: Some(sub),
                ..mount("data", "/opt/ml/model")
            });
        }
        template
    }

    /// The data claim and the sub-path on it of `path`, when the backend has
    /// a data claim and `path` lies on it.
    fn on_claim(&self, path: Option<&str>) -> Option<(String, String)> {
        let c = self.config.data_claim.as_ref()?;
        Some((c.claim.clone(), c.sub_path(Path::new(path?))?))
    }

    /// The container's volumes: model and output folders, the checkpoint
    /// folder (on the data claim, shared by every pod and outliving a
    /// restarted gang, when `spec.checkpoint` lies on it), the contract and
    /// code from the job's ConfigMap, and each channel.
    fn storage(&self, job: &TrainingJob, name: &str, code: &[SourceFile]) -> Storage {
        let mut st = Storage::default();
        st.add(empty_dir("model"), mount("model", "/opt/ml/model"));
        st.add(empty_dir("output"), mount("output", "/opt/ml/output"));
        match self.on_claim(job.spec.checkpoint.as_deref()) {
            Some((claim_name, sub)) => st.add(
                claim("data", &claim_name, false),
                VolumeMount {
                    sub_path: Some(sub),
                    ..mount("data", "/opt/ml/checkpoints")
                },
            ),
            None => st.add(
                empty_dir("checkpoints"),
                mount("checkpoints", "/opt/ml/checkpoints"),
            ),
        }
        let map = format!("{name}-code");
        let contract_items = pod_contract::keys(job)
            .into_iter()
            .map(|k| key(k.to_string(), k.to_string()))
            .collect();
        st.add(
            config_map("contract", &map, contract_items),
            VolumeMount {
                read_only: Some(true),
                ..mount("contract", pod_contract::CONTRACT_DIR)
            },
        );
        st.add(
            empty_dir("input-config"),
            mount("input-config", "/opt/ml/input/config"),
        );
        if job.spec.source_dir.is_some() {
            let items = code
                .iter()
                .enumerate()
                .map(|(i, f)| KeyToPath {
                    // Executable as in sourceDir, and a ModelTrainer `.sh`
                    // entry point always (its driver makes it so).
                    mode: (executable(&f.path) || is_shell_entry(job, &f.rel)).then_some(0o755),
                    ..key(format!("f{i}"), f.rel.clone())
                })
                .collect();
            let at = code_dir(job).unwrap_or(CODE_DIR);
            st.add(config_map("code", &map, items), mount("code", at));
        }
        for ch in &job.channels {
            self.channel(&mut st, &ch.name, &ch.source);
        }
        st
    }

    /// A channel at `/opt/ml/input/data/<name>`: an `efs://` one is its
    /// file system's claim, read-only; an `s3://` one is downloaded by an
    /// init container.
    fn channel(&self, st: &mut Storage, name: &str, source: &ChannelSource) {
        let path = format!("/opt/ml/input/data/{name}");
        let vol = format!("ch-{}", name.to_lowercase().replace('_', "-"));
        match source {
            ChannelSource::Efs {
                file_system_id,
                path: sub,
            } => {
                let claim_name = self
                    .config
                    .efs_claims
                    .get(file_system_id)
                    .cloned()
                    .unwrap_or_default();
                st.add(
                    claim(&vol, &claim_name, true),
                    VolumeMount {
                        sub_path: Some(sub.trim_start_matches('/').into()),
                        read_only: Some(true),
                        ..mount(&vol, &path)
                    },
                );
            }
            ChannelSource::S3 { bucket, prefix } => {
                st.add(empty_dir(&vol), mount(&vol, &path));
                st.init.push(Container {
                    name: format!("download-{vol}"),
                    image: Some(self.config.s3_image.clone()),
                    command: Some(vec![
                        "aws".into(),
                        "s3".into(),
                        "sync".into(),
                        format!("s3://{bucket}/{prefix}"),
                        path.clone(),
                    ]),
                    volume_mounts: Some(vec![mount(&vol, &path)]),
                    ..Default::default()
                });
            }
            ChannelSource::Local(_) => {}
        }
    }
}

/// The container's command: the contract's start script, then the job's
/// command, or its entry point (through torchrun, which reads the
/// operator's `PET_*` as its arguments, when several processes share a pod
/// or `torchrun` asks for it: a TrainJob's runtime gives only `PET_*`).
pub(crate) fn command_through(job: &TrainingJob, torchrun: bool) -> Vec<String> {
    let s = &job.spec;
    let user: Vec<String> = match (&s.command, &s.entry_point, s.contract) {
        (Some(_), _, Contract::ModelTrainer) => modeltrainer::command_argv(job).unwrap_or_default(),
        (Some(cmd), _, Contract::Toolkit) => cmd.clone(),
        (None, Some(ep), Contract::Toolkit) => {
            let mut c: Vec<String> = if s.procs_per_node > 1 || torchrun {
                vec!["python".into(), "-m".into(), "torch.distributed.run".into()]
            } else {
                vec!["python".into()]
            };
            c.push(format!("{CODE_DIR}/{ep}"));
            c.extend(contract::user_args(job));
            c
        }
        (None, Some(ep), Contract::ModelTrainer) => modeltrainer_command(job, ep),
        (None, None, _) => Vec::new(),
    };
    // The SageMaker half of the contract, per host, set up before the command.
    let start = format!("{}/{}", pod_contract::CONTRACT_DIR, pod_contract::START_KEY);
    ["sh".to_string(), start].into_iter().chain(user).collect()
}

/// A `contract: modeltrainer` entry point as the drivers start it, from the
/// code channel with the image's Python (`sy-python`, which the prologue
/// resolves): one process runs the script (a `.sh` as `./ENTRY`, its
/// ConfigMap item executable); more run under torchrun, whose workers
/// start the script through `sy_run.py` so that torchrun never parses its
/// arguments.
fn modeltrainer_command(job: &TrainingJob, ep: &str) -> Vec<String> {
    let args = contract::user_args(job);
    if job.spec.procs_per_node > 1 {
        let run = format!("{}/{}", pod_contract::CONTRACT_DIR, pod_contract::RUN_KEY);
        return ["sy-python", "-m", "torch.distributed.run", &run, "worker"]
            .map(String::from)
            .to_vec();
    }
    if ep.ends_with(".sh") {
        let quoted: Vec<String> = args.iter().map(|a| modeltrainer::shell_quote(a)).collect();
        return vec![
            "/bin/sh".into(),
            "-c".into(),
            format!("./{ep} {}", quoted.join(" ")),
        ];
    }
    let mut c = vec!["sy-python".to_string(), ep.to_string()];
    c.extend(args);
    c
}

fn env(job: &TrainingJob) -> Vec<EnvVar> {
    let mut vars = shared_env(job);
    vars.entry("PYTHONUNBUFFERED".to_string())
        .or_insert_with(|| "1".to_string());
    vars.into_iter()
        .map(|(name, value)| EnvVar {
            name,
            value: Some(value),
            value_from: None,
        })
        .collect()
}

pub(crate) fn resources(job: &TrainingJob) -> ResourceRequirements {
    let r = &job.spec.resources;
    let mut requests = BTreeMap::from([("cpu".to_string(), Quantity(r.cpu.to_string()))]);
    if let Some(m) = &r.memory {
        requests.insert("memory".into(), Quantity(m.clone()));
    }
    let limits = (r.gpu > 0)
        .then(|| BTreeMap::from([("nvidia.com/gpu".to_string(), Quantity(r.gpu.to_string()))]));
    ResourceRequirements {
        requests: Some(requests),
        limits,
        ..Default::default()
    }
}
