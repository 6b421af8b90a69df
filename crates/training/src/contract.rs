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
//!
//! The SageMaker half is what the toolkit itself (`sagemaker_training`
//! 5.1) computes from the config files: [`training_env`] is its
//! `Environment()` as a mapping and the `SM_*` variables are its
//! `to_env_vars()`, spelled as it spells them ([`crate::python`]); the
//! contract test builds the real `Environment()` in every rank and compares.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use serde_json::{json, Map, Value};

use crate::{modeltrainer, Contract, TrainingJob};

pub use crate::slots::{host_name, host_names};

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
    pub fn output_intermediate_dir(&self) -> PathBuf {
        self.base.join("output/intermediate")
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
    pub master_port: u32,
    /// CPUs and GPUs of this host as the toolkit counts them (all the
    /// host's online CPUs: [`host_cpus`]).
    pub num_cpus: u32,
    pub num_gpus: u32,
    pub instance_type: String,
    /// The directory the code runs from (the shipped `sourceDir`).
    pub code_dir: Option<PathBuf>,
    /// A run id shared by all ranks of one attempt (TORCHELASTIC_RUN_ID).
    pub run_id: String,
}

/// The CPUs the toolkit reports for this host (`multiprocessing.cpu_count()`:
/// every online CPU, whatever the process's affinity or quota).
pub fn host_cpus() -> u32 {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| {
            s.trim().split(',').try_fold(0u32, |n, range| {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                let (a, b) = (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?);
                Some(n + b.checked_sub(a)? + 1)
            })
        })
        .filter(|n| *n > 0)
        .or_else(|| {
            std::thread::available_parallelism()
                .ok()
                .map(|n| n.get() as u32)
        })
        .unwrap_or(1)
}

/// What SageMaker's Python SDK adds to the hyperparameters of a framework job
/// (the toolkit reads the entry point, code folder and log level from them,
/// and passes the others to the framework as `additional_framework_parameters`).
/// Written on every backend, so every rank's toolkit view is the same.
/// `submit_directory` is where the code is (an `s3://…/sourcedir.tar.gz` on
/// SageMaker, the shipped folder elsewhere).
pub fn sagemaker_hyperparameters(
    job: &TrainingJob,
    job_name: &str,
    submit_directory: &str,
) -> Map<String, Value> {
    let s = &job.spec;
    let mut m = Map::new();
    if let Some(ep) = &s.entry_point {
        m.insert("sagemaker_program".into(), json!(ep));
        m.insert("sagemaker_submit_directory".into(), json!(submit_directory));
    }
    m.insert("sagemaker_container_log_level".into(), json!(20));
    m.insert("sagemaker_job_name".into(), json!(job_name));
    if job.world_size() > 1 {
        // The PyTorch container's entry runs torchrun with this many
        // processes per host (without it: one per GPU, or one on a CPU host).
        m.insert("sagemaker_torch_distributed_enabled".into(), json!(true));
        m.insert(
            "sagemaker_mpi_num_of_processes_per_host".into(),
            json!(s.procs_per_node),
        );
    }
    m
}

/// Whether the job's script is written for ModelTrainer's drivers.
fn modeltrainer(job: &TrainingJob) -> bool {
    job.spec.contract == Contract::ModelTrainer
}

/// `hyperparameters.json`: the job's hyperparameters and the SDK's
/// `sagemaker_*` ones, every value a JSON-encoded string (as SageMaker stores them).
pub fn hyperparameters_file(job: &TrainingJob, submit_directory: &str) -> Value {
    let mut all: Map<String, Value> = job
        .spec
        .hyperparameters
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.to_string())))
        .collect();
    for (k, v) in sagemaker_hyperparameters(job, &job.name, submit_directory) {
        all.insert(k, Value::String(v.to_string()));
    }
    Value::Object(all)
}

/// The names the toolkit keeps for itself (`params.SAGEMAKER_HYPERPARAMETERS`);
/// other `sagemaker_*` names are framework parameters.
const TOOLKIT_HYPERPARAMETERS: [&str; 9] = [
    "sagemaker_program",
    "sagemaker_submit_directory",
    "sagemaker_enable_cloudwatch_metrics",
    "sagemaker_region",
    "sagemaker_container_log_level",
    "sagemaker_job_name",
    "sagemaker_default_module_name",
    "sagemaker_tuning_objective_metric",
    "sagemaker_s3_output",
];

/// Hyperparameters as the toolkit hands them to scripts (`SM_HPS`): decoded,
/// without the `sagemaker_*` ones.
pub fn hyperparameters(job: &TrainingJob) -> Map<String, Value> {
    job.spec
        .hyperparameters
        .iter()
        .filter(|(k, _)| !k.starts_with("sagemaker_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The command-line arguments the entry point gets: the toolkit's
/// `to_cmd_args` (`--name value` in name order, spelled as Python's `str()`),
/// or ModelTrainer's ([`modeltrainer::cli_args`]).
pub fn user_args(job: &TrainingJob) -> Vec<String> {
    if modeltrainer(job) {
        return modeltrainer::cli_args(job);
    }
    crate::python::to_cmd_args(&hyperparameters(job))
}

/// The argv of one process started with `python`, as the toolkit or
/// ModelTrainer's drivers start it: an entry point with its arguments, or
/// the job's command (for ModelTrainer one line run by bash).
pub fn process_argv(job: &TrainingJob, python: &str) -> Option<Vec<String>> {
    if modeltrainer(job) {
        return modeltrainer::entry_argv(job, python).or_else(|| modeltrainer::command_argv(job));
    }
    let Some(entry) = &job.spec.entry_point else {
        return job.spec.command.clone();
    };
    let mut argv = vec![python.to_string(), entry.clone()];
    argv.extend(user_args(job));
    Some(argv)
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

/// The names of a host's config files under `input/config`.
pub const CONFIG_FILES: [&str; 3] = [
    "hyperparameters.json",
    "resourceconfig.json",
    "inputdataconfig.json",
];

/// One host's three config files ([`CONFIG_FILES`], in that order), as text.
pub fn host_config_files(
    job: &TrainingJob,
    node: u32,
    instance_type: &str,
    submit_directory: &str,
) -> io::Result<Vec<(&'static str, Vec<u8>)>> {
    if modeltrainer(job) {
        return modeltrainer::host_config_files(job, node, instance_type);
    }
    let pretty = |v: &Value| serde_json::to_vec_pretty(v).map_err(io::Error::other);
    let [hyperparameters, resources, inputs] = CONFIG_FILES;
    Ok(vec![
        (
            hyperparameters,
            pretty(&hyperparameters_file(job, submit_directory))?,
        ),
        (
            resources,
            pretty(&resource_config(job, node, instance_type))?,
        ),
        (inputs, pretty(&input_data_config(job))?),
    ])
}

/// Creates one host's directory tree and its three config files.
pub fn write_host(
    job: &TrainingJob,
    node: u32,
    instance_type: &str,
    submit_directory: &str,
    layout: &HostLayout,
) -> io::Result<()> {
    if modeltrainer(job) {
        return modeltrainer::write_host(job, node, instance_type, layout);
    }
    for d in [
        layout.config_dir(),
        layout.data_dir(),
        layout.model_dir(),
        layout.output_data_dir(),
        layout.output_intermediate_dir(),
    ] {
        std::fs::create_dir_all(d)?;
    }
    for (name, text) in host_config_files(job, node, instance_type, submit_directory)? {
        std::fs::write(layout.config_dir().join(name), text)?;
    }
    Ok(())
}

/// The toolkit's `Environment()` as a mapping (`dict(env)`): every property,
/// as it computes them from the config files this module writes.
pub fn training_env(job: &TrainingJob, layout: &HostLayout, p: &Placement) -> Map<String, Value> {
    let s = &job.spec;
    let path = |pb: PathBuf| Value::String(pb.to_string_lossy().into_owned());
    let hosts = host_names(s.nodes);
    let submit = p
        .code_dir
        .as_ref()
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_default();
    let framework: Map<String, Value> = sagemaker_hyperparameters(job, &job.name, &submit)
        .into_iter()
        .filter(|(k, _)| !TOOLKIT_HYPERPARAMETERS.contains(&k.as_str()))
        .collect();
    let channel_dirs: Map<String, Value> = job
        .channels
        .iter()
        .map(|c| (c.name.clone(), path(layout.channel_dir(&c.name))))
        .collect();
    let entry = s.entry_point.clone();
    let group = "homogeneousCluster";
    // Distribution is on (for the one group) when the framework parameters ask
    // for it, as the toolkit decides it.
    let distributed = [
        "sagemaker_mpi_enabled",
        "sagemaker_parameter_server_enabled",
        "sagemaker_distributed_dataparallel_enabled",
        "sagemaker_pytorch_ddp_enabled",
        "sagemaker_pytorch_xla_multi_worker_enabled",
        "sagemaker_multi_worker_mirrored_strategy_enabled",
        "sagemaker_torch_distributed_enabled",
    ]
    .iter()
    .any(|k| framework.get(*k).is_some_and(truthy));
    let (dist_groups, dist_hosts) = if distributed {
        (json!([group]), json!(hosts))
    } else {
        (json!([]), json!([]))
    };
    let module_dir = if entry.is_some() {
        json!(submit)
    } else {
        path(layout.base.join("code"))
    };
    let mut e = Map::new();
    for (k, v) in [
        ("additional_framework_parameters", Value::Object(framework)),
        ("channel_input_dirs", Value::Object(channel_dirs)),
        ("current_host", json!(host_name(p.node))),
        ("current_instance_group", json!(group)),
        ("current_instance_group_hosts", json!(hosts)),
        ("current_instance_type", json!(p.instance_type)),
        ("distribution_hosts", dist_hosts),
        ("distribution_instance_groups", dist_groups),
        ("framework_module", Value::Null),
        ("hosts", json!(hosts)),
        ("hyperparameters", Value::Object(hyperparameters(job))),
        ("input_config_dir", path(layout.config_dir())),
        ("input_data_config", input_data_config(job)),
        ("input_dir", path(layout.input_dir())),
        ("instance_groups", json!([group])),
        (
            "instance_groups_dict",
            json!({group: {"hosts": hosts, "instance_group_name": group, "instance_type": p.instance_type}}),
        ),
        ("is_hetero", json!(false)),
        ("is_master", json!(p.node == 0)),
        ("is_modelparallel_enabled", Value::Null),
        ("is_smddpmprun_installed", json!(false)),
        ("is_smddprun_installed", json!(false)),
        ("job_name", json!(job.name)),
        ("log_level", json!(20)),
        ("master_hostname", json!(hosts[0])),
        ("model_dir", path(layout.model_dir())),
        ("module_dir", module_dir),
        // `str(sagemaker_program)` without `.py` ("None" without a program).
        (
            "module_name",
            json!(entry
                .as_deref()
                .map_or("None", |e| e.strip_suffix(".py").unwrap_or(e))),
        ),
        ("network_interface_name", json!("eth0")),
        ("num_cpus", json!(p.num_cpus)),
        ("num_gpus", json!(p.num_gpus)),
        ("num_neurons", json!(0)),
        ("output_data_dir", path(layout.output_data_dir())),
        ("output_dir", path(layout.output_dir())),
        (
            "output_intermediate_dir",
            path(layout.output_intermediate_dir()),
        ),
        (
            "resource_config",
            resource_config(job, p.node, &p.instance_type),
        ),
        ("topology", json!([])),
        ("user_entry_point", json!(entry)),
    ] {
        e.insert(k.to_string(), v);
    }
    e
}

/// Python's truth of a decoded value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// The toolkit's `to_env_vars()` of an environment: `SM_<NAME>` (upper-cased,
/// nothing else replaced: `SM_CHANNEL_VAL-DATA`), strings as they are, `None`
/// empty, anything else as sorted compact JSON.
pub fn sm_env(job: &TrainingJob, env: &Map<String, Value>) -> BTreeMap<String, String> {
    let get = |k: &str| env.get(k).cloned().unwrap_or(Value::Null);
    let mut vars: Vec<(String, Value)> = [
        ("hosts", "hosts"),
        ("network_interface_name", "network_interface_name"),
        ("hps", "hyperparameters"),
        ("user_entry_point", "user_entry_point"),
        ("framework_params", "additional_framework_parameters"),
        ("resource_config", "resource_config"),
        ("input_data_config", "input_data_config"),
        ("output_data_dir", "output_data_dir"),
        ("current_host", "current_host"),
        ("current_instance_type", "current_instance_type"),
        ("current_instance_group", "current_instance_group"),
        (
            "current_instance_group_hosts",
            "current_instance_group_hosts",
        ),
        ("instance_groups", "instance_groups"),
        ("instance_groups_dict", "instance_groups_dict"),
        (
            "distribution_instance_groups",
            "distribution_instance_groups",
        ),
        ("is_hetero", "is_hetero"),
        ("module_name", "module_name"),
        ("log_level", "log_level"),
        ("framework_module", "framework_module"),
        ("input_dir", "input_dir"),
        ("input_config_dir", "input_config_dir"),
        ("output_dir", "output_dir"),
        ("num_cpus", "num_cpus"),
        ("num_gpus", "num_gpus"),
        ("num_neurons", "num_neurons"),
        ("model_dir", "model_dir"),
        ("module_dir", "module_dir"),
        ("output_intermediate_dir", "output_intermediate_dir"),
    ]
    .into_iter()
    .map(|(name, key)| (name.to_string(), get(key)))
    .collect();
    let mut channels: Vec<&String> = job.channels.iter().map(|c| &c.name).collect();
    channels.sort();
    vars.push(("channels".into(), json!(channels)));
    vars.push(("training_env".into(), Value::Object(env.clone())));
    vars.push(("user_args".into(), json!(user_args(job))));
    if let Some(Value::Object(dirs)) = env.get("channel_input_dirs") {
        for (name, dir) in dirs {
            vars.push((format!("channel_{name}"), dir.clone()));
        }
    }
    for (k, v) in hyperparameters(job) {
        vars.push((format!("hp_{k}"), v));
    }
    vars.into_iter()
        .map(|(name, v)| {
            let text = match v {
                Value::Null => String::new(),
                Value::String(s) => s,
                other => crate::python::json_dumps(&other),
            };
            (format!("SM_{}", name.to_uppercase()), text)
        })
        .collect()
}

/// Every variable one process gets: the torchrun half, the SageMaker half, then
/// the job's own `env` (which wins); for `contract: modeltrainer` what
/// ModelTrainer's drivers give ([`modeltrainer::rank_env`]).
pub fn rank_env(job: &TrainingJob, layout: &HostLayout, p: &Placement) -> BTreeMap<String, String> {
    if modeltrainer(job) {
        return modeltrainer::rank_env(job, layout, p);
    }
    let s = &job.spec;
    let world = job.world_size();
    let rank = crate::slots::Slot {
        node: p.node,
        local_rank: p.local_rank,
    }
    .rank(s.procs_per_node);
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

    // SageMaker training toolkit: its Environment(), then its variables.
    put(
        "SAGEMAKER_BASE_DIR",
        layout.base.to_string_lossy().into_owned(),
    );
    put("TRAINING_JOB_NAME", job.name.clone());
    for (k, v) in sm_env(job, &training_env(job, layout, p)) {
        put(&k, v);
    }
    for (k, v) in &s.env {
        e.insert(k.clone(), v.clone());
    }
    e
}
