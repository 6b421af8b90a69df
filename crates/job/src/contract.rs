//! The runtime contract: what every rank of a job sees, on every backend.
//!
//! Two halves, so one script runs unchanged everywhere:
//! - torchrun / PyTorchJob variables (`MASTER_ADDR`, `RANK`, `PET_*`, ...);
//! - the SageMaker training toolkit's contract: hosts `algo-1..algo-N`, a base
//!   directory per host with `input/config/*.json`, `input/data/<channel>`,
//!   `model`, `output/data`, `checkpoints`, and the `SM_*` variables.
//!
//! Backends call [`write_host`] for each host's directory and [`rank_env`] for
//! each process; how channel data gets into `input/data` is theirs to do.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::TrainingJob;

/// SageMaker's name for host `index` (0-based): `algo-1` is the master.
pub fn host_name(index: u32) -> String {
    format!("algo-{}", index + 1)
}

pub fn host_names(nodes: u32) -> Vec<String> {
    (0..nodes).map(host_name).collect()
}

/// The per-host directory tree (`SAGEMAKER_BASE_DIR`, `/opt/ml` on SageMaker).
#[derive(Debug, Clone)]
pub struct HostLayout {
    pub base: PathBuf,
}

impl HostLayout {
    pub fn new(base: impl Into<PathBuf>) -> Self {
        HostLayout { base: base.into() }
    }
    pub fn input_dir(&self) -> PathBuf {
        self.base.join("input")
    }
    pub fn config_dir(&self) -> PathBuf {
        self.base.join("input/config")
    }
    pub fn data_dir(&self) -> PathBuf {
        self.base.join("input/data")
    }
    pub fn channel_dir(&self, channel: &str) -> PathBuf {
        self.data_dir().join(channel)
    }
    pub fn model_dir(&self) -> PathBuf {
        self.base.join("model")
    }
    pub fn output_dir(&self) -> PathBuf {
        self.base.join("output")
    }
    pub fn output_data_dir(&self) -> PathBuf {
        self.base.join("output/data")
    }
    /// Whatever a script writes here becomes the job's failure reason.
    pub fn failure_file(&self) -> PathBuf {
        self.base.join("output/failure")
    }
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.base.join("checkpoints")
    }
}

/// Where one process sits in the job.
#[derive(Debug, Clone)]
pub struct Placement {
    pub node: u32,
    pub local_rank: u32,
    pub master_addr: String,
    pub master_port: u16,
    /// CPUs and GPUs of this host as the script should see them.
    pub num_cpus: u32,
    pub num_gpus: u32,
    pub instance_type: String,
    /// The directory the code runs from (the shipped `sourceDir`).
    pub code_dir: Option<PathBuf>,
    /// A run id shared by all ranks of one attempt (TORCHELASTIC_RUN_ID).
    pub run_id: String,
}

/// Hyperparameters as SageMaker stores them: every value a JSON-encoded string.
pub fn hyperparameters_file(job: &TrainingJob) -> Value {
    Value::Object(
        job.spec
            .hyperparameters
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.to_string())))
            .collect(),
    )
}

/// Hyperparameters as the toolkit hands them to scripts (`SM_HPS`): decoded.
pub fn hyperparameters(job: &TrainingJob) -> Map<String, Value> {
    job.spec.hyperparameters.clone().into_iter().collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The command-line arguments the toolkit passes to an entry point:
/// `--name value` for each hyperparameter, in name order.
pub fn user_args(job: &TrainingJob) -> Vec<String> {
    job.spec
        .hyperparameters
        .iter()
        .flat_map(|(k, v)| [format!("--{k}"), text(v)])
        .collect()
}

fn instance_groups(job: &TrainingJob, instance_type: &str) -> Value {
    json!([{
        "instance_group_name": "homogeneousCluster",
        "instance_type": instance_type,
        "hosts": host_names(job.spec.nodes),
    }])
}

/// `resourceconfig.json` for one host.
pub fn resource_config(job: &TrainingJob, node: u32, instance_type: &str) -> Value {
    json!({
        "current_host": host_name(node),
        "current_instance_type": instance_type,
        "current_group_name": "homogeneousCluster",
        "hosts": host_names(job.spec.nodes),
        "instance_groups": instance_groups(job, instance_type),
        "network_interface_name": "eth0",
    })
}

/// `inputdataconfig.json`: one entry per channel.
pub fn input_data_config(job: &TrainingJob) -> Value {
    let mode = job.spec.input_mode.clone().unwrap_or_else(|| "File".into());
    Value::Object(
        job.channels
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    json!({"TrainingInputMode": mode, "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}),
                )
            })
            .collect(),
    )
}

fn write_json(path: &Path, v: &Value) -> io::Result<()> {
    std::fs::write(
        path,
        serde_json::to_vec_pretty(v).map_err(io::Error::other)?,
    )
}

/// Creates one host's directory tree and its three config files.
pub fn write_host(
    job: &TrainingJob,
    node: u32,
    instance_type: &str,
    layout: &HostLayout,
) -> io::Result<()> {
    for d in [
        layout.config_dir(),
        layout.data_dir(),
        layout.model_dir(),
        layout.output_data_dir(),
    ] {
        std::fs::create_dir_all(d)?;
    }
    write_json(
        &layout.config_dir().join("hyperparameters.json"),
        &hyperparameters_file(job),
    )?;
    write_json(
        &layout.config_dir().join("resourceconfig.json"),
        &resource_config(job, node, instance_type),
    )?;
    write_json(
        &layout.config_dir().join("inputdataconfig.json"),
        &input_data_config(job),
    )?;
    Ok(())
}

fn env_suffix(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

/// Every variable one process gets: the torchrun half, the SageMaker half, then
/// the job's own `env` (which wins).
pub fn rank_env(job: &TrainingJob, layout: &HostLayout, p: &Placement) -> BTreeMap<String, String> {
    let s = &job.spec;
    let world = job.world_size();
    let rank = p.node * s.procs_per_node + p.local_rank;
    let mut e = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        e.insert(k.to_string(), v);
    };
    // torchrun / PyTorchJob.
    put("MASTER_ADDR", p.master_addr.clone());
    put("MASTER_PORT", p.master_port.to_string());
    put("WORLD_SIZE", world.to_string());
    put("RANK", rank.to_string());
    put("LOCAL_RANK", p.local_rank.to_string());
    put("LOCAL_WORLD_SIZE", s.procs_per_node.to_string());
    put("GROUP_RANK", p.node.to_string());
    put("NODE_RANK", p.node.to_string());
    put("GROUP_WORLD_SIZE", s.nodes.to_string());
    put("ROLE_RANK", rank.to_string());
    put("ROLE_WORLD_SIZE", world.to_string());
    put("ROLE_NAME", "default".into());
    put("TORCHELASTIC_RUN_ID", p.run_id.clone());
    put("PET_NNODES", s.nodes.to_string());
    put("PET_NPROC_PER_NODE", s.procs_per_node.to_string());
    put("PET_NODE_RANK", p.node.to_string());
    put("PET_MASTER_ADDR", p.master_addr.clone());
    put("PET_MASTER_PORT", p.master_port.to_string());
    put("PYTHONUNBUFFERED", "1".into());
    if s.procs_per_node > 1 {
        // As torchrun does: several processes per host should not each use every core.
        put("OMP_NUM_THREADS", "1".into());
    }

    // SageMaker training toolkit.
    let hosts = host_names(s.nodes);
    let current = host_name(p.node);
    let channels: Vec<String> = job.channels.iter().map(|c| c.name.clone()).collect();
    let hps = hyperparameters(job);
    let rc = resource_config(job, p.node, &p.instance_type);
    let idc = input_data_config(job);
    let args = user_args(job);
    let path = |pb: PathBuf| pb.to_string_lossy().into_owned();
    let entry = s.entry_point.clone().unwrap_or_default();
    let module_dir = p.code_dir.clone().map(path).unwrap_or_default();
    let channel_dirs: Map<String, Value> = job
        .channels
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                Value::String(path(layout.channel_dir(&c.name))),
            )
        })
        .collect();
    put("SAGEMAKER_BASE_DIR", path(layout.base.clone()));
    put("SM_HOSTS", json!(hosts).to_string());
    put("SM_CURRENT_HOST", current.clone());
    put("SM_MASTER_ADDR", hosts[0].clone());
    put("SM_NUM_CPUS", p.num_cpus.to_string());
    put("SM_NUM_GPUS", p.num_gpus.to_string());
    put("SM_MODEL_DIR", path(layout.model_dir()));
    put("SM_INPUT_DIR", path(layout.input_dir()));
    put("SM_INPUT_CONFIG_DIR", path(layout.config_dir()));
    put("SM_OUTPUT_DIR", path(layout.output_dir()));
    put("SM_OUTPUT_DATA_DIR", path(layout.output_data_dir()));
    put("SM_CHECKPOINT_DIR", path(layout.checkpoint_dir()));
    put("SM_CHANNELS", json!(channels).to_string());
    for c in &job.channels {
        put(
            &format!("SM_CHANNEL_{}", env_suffix(&c.name)),
            path(layout.channel_dir(&c.name)),
        );
    }
    put("SM_HPS", Value::Object(hps.clone()).to_string());
    for (k, v) in &hps {
        put(&format!("SM_HP_{}", env_suffix(k)), text(v));
    }
    put("SM_RESOURCE_CONFIG", rc.to_string());
    put("SM_INPUT_DATA_CONFIG", idc.to_string());
    put("SM_CURRENT_INSTANCE_TYPE", p.instance_type.clone());
    put("SM_NETWORK_INTERFACE_NAME", "eth0".into());
    put("SM_LOG_LEVEL", "20".into());
    put("SM_USER_ENTRY_POINT", entry.clone());
    put("SM_MODULE_NAME", entry.trim_end_matches(".py").to_string());
    put("SM_MODULE_DIR", module_dir.clone());
    put("SM_USER_ARGS", json!(args).to_string());
    put("SM_FRAMEWORK_PARAMS", "{}".into());
    put("SM_IS_MASTER", (p.node == 0).to_string());
    let training_env = json!({
        "job_name": job.name,
        "hosts": hosts,
        "current_host": current,
        "master_hostname": hosts[0],
        "is_master": p.node == 0,
        "num_cpus": p.num_cpus,
        "num_gpus": p.num_gpus,
        "current_instance_type": p.instance_type,
        "network_interface_name": "eth0",
        "hyperparameters": hps,
        "channel_input_dirs": channel_dirs,
        "input_data_config": idc,
        "resource_config": rc,
        "model_dir": path(layout.model_dir()),
        "input_dir": path(layout.input_dir()),
        "input_config_dir": path(layout.config_dir()),
        "output_dir": path(layout.output_dir()),
        "output_data_dir": path(layout.output_data_dir()),
        "user_entry_point": entry,
        "module_name": entry.trim_end_matches(".py"),
        "module_dir": module_dir,
        "log_level": 20,
        "framework_module": Value::Null,
        "additional_framework_parameters": {},
    });
    put("SM_TRAINING_ENV", training_env.to_string());
    for (k, v) in &s.env {
        e.insert(k.clone(), v.clone());
    }
    e
}
