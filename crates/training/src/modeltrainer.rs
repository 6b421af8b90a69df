//! The SageMaker Python SDK v3's contract: what `ModelTrainer`'s drivers
//! (`sm_drivers`: `sm_train.sh`, `scripts/environment.py`, the basic and
//! torchrun drivers of `sagemaker-train` 1.27) give a script.
//!
//! Computed here once for every backend, as the drivers compute it on
//! SageMaker from the host's config files:
//! - hyperparameters travel as strings (a string as it is, anything else as
//!   `json.dumps`), each decoded again with `json.loads` where it parses;
//!   arguments are `--name value` in the order written;
//! - `code` and `sm_drivers` are channels; the script runs in the code channel;
//! - `SM_*` variables as `environment.py` writes them (an `export` file the
//!   launcher sources: every value a string), `SM_MASTER_ADDR`/`SM_MASTER_PORT`,
//!   `SM_HOST_COUNT`, `SM_CURRENT_HOST_RANK` (the host's index in the
//!   *lexicographically* sorted host list, as the drivers compute it);
//! - a job of more than one process runs under torchrun (the `Torchrun`
//!   driver, `process_count_per_node` = `procsPerNode`), with the NCCL
//!   settings that driver makes; a 1 × 1 job runs as the basic script driver
//!   runs it (no torchrun variables).
//!
//! Where a backend cannot give SageMaker's value it gives its own equivalent
//! (docs/runtime-contract.md lists each, with the reason).

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use serde_json::{json, Map, Value};

use crate::contract::{HostLayout, Placement};
use crate::python::json_dumps_default;
use crate::shell;
use crate::slots::{host_name, host_names};
use crate::TrainingJob;

/// The channel the code is in (`/opt/ml/input/data/code` on SageMaker).
pub const CODE_CHANNEL: &str = "code";
/// The channel of the launcher and its two JSON files.
pub const DRIVERS_CHANNEL: &str = "sm_drivers";
/// Where the launcher says the master is on SageMaker.
pub const SAGEMAKER_MASTER_ADDR: &str = "algo-1";
pub const SAGEMAKER_MASTER_PORT: u32 = 7777;
/// `SM_LOG_LEVEL` when the environment names none.
const LOG_LEVEL: u32 = 20;
/// The files the drivers read from their channel.
pub const SOURCE_CODE_JSON: &str = "sourcecode.json";
pub const DISTRIBUTED_JSON: &str = "distributed.json";
/// Instance types where the torchrun driver turns on EFA (`FI_PROVIDER=efa`),
/// and those where also its RDMA.
const EFA_INSTANCES: [&str; 9] = [
    "ml.g4dn.8xlarge",
    "ml.g4dn.12xlarge",
    "ml.g5.48xlarge",
    "ml.p3dn.24xlarge",
    "ml.p4d.24xlarge",
    "ml.p4de.24xlarge",
    "ml.p5.48xlarge",
    "ml.p5e.48xlarge",
    "ml.trn1.32xlarge",
];
const EFA_RDMA_INSTANCES: [&str; 5] = [
    "ml.p4d.24xlarge",
    "ml.p4de.24xlarge",
    "ml.p5.48xlarge",
    "ml.p5e.48xlarge",
    "ml.trn1.32xlarge",
];

/// How the drivers start the script on each host.
#[derive(Debug, Clone, PartialEq)]
pub enum Launch<'a> {
    /// The basic script driver: `python entry args` (or a `.sh` through
    /// `/bin/sh`), once per host.
    Script { entry: &'a str },
    /// The torchrun driver: `procs` processes per host.
    Torchrun { entry: &'a str, procs: u32 },
    /// `SourceCode.command`: run once per host, no arguments added.
    Command(&'a [String]),
}

/// How this job's script starts: torchrun when it has more than one process.
pub fn launch(job: &TrainingJob) -> Launch<'_> {
    let s = &job.spec;
    match (&s.entry_point, &s.command) {
        (Some(entry), _) if job.world_size() > 1 => Launch::Torchrun {
            entry,
            procs: s.procs_per_node,
        },
        (Some(entry), _) => Launch::Script { entry },
        (None, Some(cmd)) => Launch::Command(cmd),
        // Validation requires one of them.
        (None, None) => Launch::Command(&[]),
    }
}

/// `safe_serialize`: a string as it is, anything else as `json.dumps`.
pub fn encode(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => json_dumps_default(other),
    }
}

/// `safe_deserialize` of a string: what `json.loads` gives, or the string.
pub fn decode(text: &str) -> Value {
    match serde_json::from_str(text) {
        // Python's integer minus zero is zero.
        Ok(Value::Number(n)) if n.as_f64() == Some(0.0) && !text.contains(['.', 'e', 'E']) => {
            Value::from(0)
        }
        Ok(v) => v,
        Err(_) => Value::String(text.to_string()),
    }
}

/// The hyperparameters as ModelTrainer sends them (CreateTrainingJob's
/// `HyperParameters`, `hyperparameters.json`), in the order written.
pub fn encoded_hyperparameters(job: &TrainingJob) -> Vec<(String, String)> {
    job.spec
        .hyperparameters
        .iter()
        .map(|(k, v)| (k.clone(), encode(v)))
        .collect()
}

/// The hyperparameters as the drivers hand them to the script (`SM_HPS`).
pub fn hyperparameters(job: &TrainingJob) -> Map<String, Value> {
    encoded_hyperparameters(job)
        .into_iter()
        .map(|(k, v)| (k, decode(&v)))
        .collect()
}

/// The script's arguments: `--name value` for each hyperparameter in order
/// (one-letter names too), every value as `encode` spells it. The drivers
/// decode each value of `SM_HPS` once more first, so a string that holds
/// JSON text (`'"1.50"'`) is read again (`1.5`).
pub fn cli_args(job: &TrainingJob) -> Vec<String> {
    hyperparameters(job)
        .iter()
        .flat_map(|(k, v)| {
            let again = match v {
                Value::String(s) => decode(s),
                other => other.clone(),
            };
            [format!("--{k}"), encode(&again)]
        })
        .collect()
}

/// Why a hyperparameter cannot travel as ModelTrainer's drivers would read
/// it: text `json.loads` reads as a value JSON cannot carry (`NaN`,
/// `Infinity`, a number beyond a 64-bit float or integer), at either of the
/// drivers' two decodings. `None` when it can.
pub fn unrepresentable(v: &Value) -> Option<String> {
    let first = encode(v);
    let mut texts = vec![first.clone()];
    if let Value::String(s) = decode(&first) {
        texts.push(s);
    }
    texts.into_iter().find_map(|t| {
        let reason = python_only(&t)?;
        Some(format!("'{t}' is read by ModelTrainer's drivers as {reason}, which Switchyard cannot pass on unchanged; give another value"))
    })
}

/// What Python's `json.loads` reads from `text` that serde_json does not
/// read the same way.
fn python_only(text: &str) -> Option<&'static str> {
    let t = text.trim_matches([' ', '\t', '\n', '\r']);
    if t.contains("NaN") || t.contains("Infinity") {
        // json.loads takes the bare words where a value may be.
        let replaced = t
            .replace("-Infinity", "0")
            .replace("Infinity", "0")
            .replace("NaN", "0");
        if serde_json::from_str::<Value>(t).is_err()
            && serde_json::from_str::<Value>(&replaced).is_ok()
        {
            return Some("a float NaN or infinity");
        }
    }
    let number = t.strip_prefix('-').unwrap_or(t);
    let is_number = !number.is_empty()
        && number
            .chars()
            .all(|c| c.is_ascii_digit() || ".eE+-".contains(c))
        && number.starts_with(|c: char| c.is_ascii_digit());
    if is_number {
        match serde_json::from_str::<Value>(t) {
            Err(_) if t.parse::<f64>().is_ok_and(f64::is_infinite) => {
                return Some("an infinite float")
            }
            Ok(_)
                if number.chars().all(|c| c.is_ascii_digit())
                    && (number.parse::<u64>().is_err()
                        || (t.starts_with('-') && number.parse::<i64>().is_err())) =>
            {
                return Some("an integer beyond 64 bits")
            }
            _ => {}
        }
    }
    None
}

/// The argv of one process of an entry-point job on a backend that starts
/// the processes itself, as the driver (or torchrun, for each worker) starts
/// it; `None` for a command job.
pub fn entry_argv(job: &TrainingJob, python: &str) -> Option<Vec<String>> {
    let entry = match launch(job) {
        Launch::Script { entry } | Launch::Torchrun { entry, .. } => entry,
        Launch::Command(_) => return None,
    };
    if entry.ends_with(".sh") {
        let quoted: Vec<String> = cli_args(job).iter().map(|a| shell_quote(a)).collect();
        return Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            format!("chmod +x {entry} && ./{entry} {}", quoted.join(" ")),
        ]);
    }
    // Unbuffered, as torchrun starts its workers, so that every line is seen
    // (and its metrics scraped) when it is printed; `sys.argv` is unchanged.
    let mut argv = vec![python.to_string(), "-u".into(), entry.to_string()];
    argv.extend(cli_args(job));
    Some(argv)
}

/// Python's `shlex.quote`.
pub fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c);
    if s.is_empty() {
        "''".into()
    } else if s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\"'\"'"))
    }
}

/// The channels in `inputdataconfig.json` order: the job's, then `code`
/// (when there is a `sourceDir`), then `sm_drivers`.
pub fn channel_names(job: &TrainingJob) -> Vec<String> {
    let mut names: Vec<String> = job.channels.iter().map(|c| c.name.clone()).collect();
    if job.spec.source_dir.is_some() {
        names.push(CODE_CHANNEL.into());
    }
    names.push(DRIVERS_CHANNEL.into());
    names
}

/// `inputdataconfig.json`.
pub fn input_data_config(job: &TrainingJob) -> Value {
    let mode = job.spec.input_mode.clone().unwrap_or_else(|| "File".into());
    Value::Object(
        channel_names(job)
            .into_iter()
            .map(|name| {
                let mode = if job.channels.iter().any(|c| c.name == name) {
                    mode.clone()
                } else {
                    // The code and the launcher are always files.
                    "File".to_string()
                };
                (
                    name,
                    json!({"TrainingInputMode": mode, "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}),
                )
            })
            .collect(),
    )
}

/// `sourcecode.json`: ModelTrainer's `SourceCode` as it dumps it.
pub fn source_code_json(job: &TrainingJob) -> Value {
    let s = &job.spec;
    json!({
        "source_dir": s.source_dir,
        "requirements": s.requirements,
        "entry_script": s.entry_point,
        "command": command_line(job),
        "args": Value::Null,
        "ignore_patterns": IGNORED,
    })
}

/// What ModelTrainer leaves out of the code it uploads (its `SourceCode`'s
/// default `ignore_patterns`, names matched at every level).
pub const IGNORED: [&str; 6] = [
    ".env",
    ".git",
    "__pycache__",
    ".DS_Store",
    ".cache",
    ".ipynb_checkpoints",
];

/// A command job's one shell line: its words joined with spaces, as
/// ModelTrainer joins `command.split()` before its launcher `eval`s it.
pub fn command_line(job: &TrainingJob) -> Option<String> {
    job.spec.command.as_ref().map(|c| c.join(" "))
}

/// A command job's argv: the line run by bash, so that variables expand
/// and `&&` or a pipe work as under the drivers' `eval`.
pub fn command_argv(job: &TrainingJob) -> Option<Vec<String>> {
    command_line(job).map(|line| vec!["/bin/bash".into(), "-c".into(), line])
}

/// The launcher that starts the script where no one else does (SageMaker,
/// and torchrun's workers in pods): `sy_run.py`, reading [`launch_plan`].
pub const RUN_PY: &str = include_str!("launcher/sy_run.py");

/// How `sy_run.py` starts the script (`sy_launch.json`).
pub fn launch_plan(job: &TrainingJob) -> Value {
    let s = &job.spec;
    let (launch, procs) = match launch(job) {
        Launch::Script { .. } => ("script", 1),
        Launch::Torchrun { procs, .. } => ("torchrun", procs),
        Launch::Command(_) => ("command", 1),
    };
    json!({
        "launch": launch,
        "entry": s.entry_point,
        "args": cli_args(job),
        "command": command_line(job),
        "procs": procs,
        "requirements": s.requirements,
    })
}

/// `distributed.json`: the `Torchrun` config of a job of more than one
/// process, empty otherwise.
pub fn distributed_json(job: &TrainingJob) -> Value {
    if job.world_size() > 1 {
        json!({"process_count_per_node": job.spec.procs_per_node, "smp": Value::Null})
    } else {
        json!({})
    }
}

/// The driver channel's JSON files, as text.
pub fn driver_files(job: &TrainingJob) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            SOURCE_CODE_JSON,
            json_dumps_default(&source_code_json(job)).into_bytes(),
        ),
        (
            DISTRIBUTED_JSON,
            json_dumps_default(&distributed_json(job)).into_bytes(),
        ),
    ]
}

/// One host's config files (`hyperparameters.json`, `resourceconfig.json`,
/// `inputdataconfig.json`), as SageMaker writes them for this request.
pub fn host_config_files(
    job: &TrainingJob,
    node: u32,
    instance_type: &str,
) -> io::Result<Vec<(&'static str, Vec<u8>)>> {
    let pretty = |v: &Value| serde_json::to_vec_pretty(v).map_err(io::Error::other);
    let hps: Map<String, Value> = encoded_hyperparameters(job)
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let [h, r, i] = crate::contract::CONFIG_FILES;
    Ok(vec![
        (h, pretty(&Value::Object(hps))?),
        (
            r,
            pretty(&crate::contract::resource_config(job, node, instance_type))?,
        ),
        (i, pretty(&input_data_config(job))?),
    ])
}

/// Creates one host's tree, its config files and the driver channel's files
/// (the code channel is the backend's to fill).
pub fn write_host(
    job: &TrainingJob,
    node: u32,
    instance_type: &str,
    layout: &HostLayout,
) -> io::Result<()> {
    let drivers = layout.channel_dir(DRIVERS_CHANNEL);
    for d in [
        layout.config_dir(),
        layout.model_dir(),
        layout.output_data_dir(),
        drivers.join("distributed_drivers"),
    ] {
        std::fs::create_dir_all(d)?;
    }
    for (name, text) in host_config_files(job, node, instance_type)? {
        std::fs::write(layout.config_dir().join(name), text)?;
    }
    for (name, text) in driver_files(job) {
        std::fs::write(drivers.join(name), text)?;
    }
    Ok(())
}

/// The host's index in the host names sorted as text (`algo-10` before
/// `algo-2`), which the drivers use as torchrun's node rank.
pub fn host_rank(node: u32, nodes: u32) -> u32 {
    let mut hosts = host_names(nodes);
    hosts.sort();
    let me = host_name(node);
    hosts.iter().position(|h| *h == me).unwrap_or(0) as u32
}

/// Where SM_MASTER_ADDR / SM_MASTER_PORT point: SageMaker's `algo-1:7777`
/// there; elsewhere the placement's master, which the backend makes
/// reachable (`algo-1` resolves only inside SageMaker's network).
fn master(p: &Placement, on_sagemaker: bool) -> (String, u32) {
    if on_sagemaker {
        (SAGEMAKER_MASTER_ADDR.into(), SAGEMAKER_MASTER_PORT)
    } else {
        (p.master_addr.clone(), p.master_port)
    }
}

/// What `environment.py` exports on a host (every value the text the shell
/// reads back), then the platform's `TRAINING_JOB_NAME`. On SageMaker the
/// platform sets that name (not Switchyard's): it is left out, and the job's
/// name in `SM_TRAINING_ENV` is the launcher's [`shell::JOB_NAME`] splice.
pub fn host_env(
    job: &TrainingJob,
    layout: &HostLayout,
    p: &Placement,
    on_sagemaker: bool,
) -> Vec<(String, String)> {
    let s = &job.spec;
    let path = |pb: PathBuf| pb.to_string_lossy().into_owned();
    let (master_addr, master_port) = master(p, on_sagemaker);
    let mut hosts = host_names(s.nodes);
    hosts.sort();
    let current = host_name(p.node);
    let hps = hyperparameters(job);
    let channels = channel_names(job);
    let channel_dirs: Map<String, Value> = channels
        .iter()
        .map(|c| (c.clone(), json!(path(layout.channel_dir(c)))))
        .collect();
    let resource_config = crate::contract::resource_config(job, p.node, &p.instance_type);
    let input_data_config = input_data_config(job);
    // `environment.py` reads SM_LOG_LEVEL from the container's environment
    // (a string then), 20 without one.
    let log_level = s
        .env
        .get("SM_LOG_LEVEL")
        .map_or(json!(LOG_LEVEL), |l| json!(l));
    let mut env: Vec<(String, Value)> = vec![
        ("SM_MODEL_DIR".into(), json!(path(layout.model_dir()))),
        ("SM_INPUT_DIR".into(), json!(path(layout.input_dir()))),
        ("SM_INPUT_DATA_DIR".into(), json!(path(layout.data_dir()))),
        (
            "SM_INPUT_CONFIG_DIR".into(),
            json!(path(layout.config_dir())),
        ),
        ("SM_OUTPUT_DIR".into(), json!(path(layout.output_dir()))),
        (
            "SM_OUTPUT_FAILURE".into(),
            json!(path(layout.failure_file())),
        ),
        (
            "SM_OUTPUT_DATA_DIR".into(),
            json!(path(layout.output_data_dir())),
        ),
        ("SM_LOG_LEVEL".into(), log_level.clone()),
        ("SM_MASTER_ADDR".into(), json!(master_addr)),
        ("SM_MASTER_PORT".into(), json!(master_port)),
        (
            "SM_SOURCE_DIR".into(),
            json!(path(layout.channel_dir(CODE_CHANNEL))),
        ),
        // `null` for a command job, as the drivers read a missing script.
        ("SM_ENTRY_SCRIPT".into(), json!(s.entry_point)),
    ];
    let distributed = distributed_json(job);
    if distributed.as_object().is_some_and(|d| !d.is_empty()) {
        env.push((
            "SM_DISTRIBUTED_DRIVER_DIR".into(),
            json!(path(
                layout
                    .channel_dir(DRIVERS_CHANNEL)
                    .join("distributed_drivers")
            )),
        ));
        env.push(("SM_DISTRIBUTED_CONFIG".into(), distributed));
    }
    for (name, dir) in &channel_dirs {
        env.push((format!("SM_CHANNEL_{}", name.to_uppercase()), dir.clone()));
    }
    env.push(("SM_CHANNELS".into(), json!(channels)));
    for (k, v) in &hps {
        env.push((
            format!("SM_HP_{}", k.replace('-', "_").to_uppercase()),
            v.clone(),
        ));
    }
    env.push(("SM_HPS".into(), Value::Object(hps.clone())));
    let host_rank = host_rank(p.node, s.nodes);
    for (k, v) in [
        ("SM_CURRENT_HOST", json!(current)),
        ("SM_CURRENT_INSTANCE_TYPE", json!(p.instance_type)),
        ("SM_HOSTS", json!(hosts)),
        ("SM_NETWORK_INTERFACE_NAME", json!("eth0")),
        ("SM_HOST_COUNT", json!(s.nodes)),
        ("SM_CURRENT_HOST_RANK", json!(host_rank)),
        ("SM_NUM_CPUS", json!(p.num_cpus)),
        ("SM_NUM_GPUS", json!(p.num_gpus)),
        ("SM_NUM_NEURONS", json!(0)),
        ("SM_RESOURCE_CONFIG", resource_config.clone()),
        ("SM_INPUT_DATA_CONFIG", input_data_config.clone()),
    ] {
        env.push((k.into(), v));
    }
    let training_env = json!({
        "channel_input_dirs": channel_dirs,
        "current_host": current,
        "current_instance_type": p.instance_type,
        "hosts": hosts,
        "master_addr": master_addr,
        "master_port": master_port,
        "hyperparameters": hps,
        "input_data_config": input_data_config,
        "input_config_dir": path(layout.config_dir()),
        "input_data_dir": path(layout.data_dir()),
        "input_dir": path(layout.input_dir()),
        "job_name": if on_sagemaker { shell::JOB_NAME.marker } else { job.name.as_str() },
        "log_level": log_level,
        "model_dir": path(layout.model_dir()),
        "network_interface_name": "eth0",
        "num_cpus": p.num_cpus,
        "num_gpus": p.num_gpus,
        "num_neurons": 0,
        "output_data_dir": path(layout.output_data_dir()),
        "resource_config": resource_config,
    });
    env.push(("SM_TRAINING_ENV".into(), training_env));
    let mut out: Vec<(String, String)> = env.into_iter().map(|(k, v)| (k, encode(&v))).collect();
    if !on_sagemaker {
        out.push(("TRAINING_JOB_NAME".into(), job.name.clone()));
    }
    out
}

/// What the torchrun driver sets for the launcher (its NCCL and EFA settings).
pub fn torchrun_driver_env(instance_type: &str) -> Vec<(String, String)> {
    let mut env = Vec::new();
    if EFA_INSTANCES.contains(&instance_type) {
        env.push(("FI_PROVIDER".into(), "efa".into()));
    }
    if EFA_RDMA_INSTANCES.contains(&instance_type) {
        env.push(("FI_EFA_USE_DEVICE_RDMA".into(), "1".into()));
        env.push(("RDMAV_FORK_SAFE".into(), "1".into()));
    }
    env.push(("NCCL_SOCKET_IFNAME".into(), "eth0".into()));
    env.push(("NCCL_PROTO".into(), "simple".into()));
    env
}

/// The variables torchrun gives each worker, for backends that start the
/// workers themselves (locally: no torchrun agent runs, so the ranks host
/// their own rendezvous store and `TORCHELASTIC_USE_AGENT_STORE` is not
/// set). `error_file` is torchrun's per-worker `TORCHELASTIC_ERROR_FILE`.
pub fn worker_env(job: &TrainingJob, p: &Placement, error_file: &str) -> Vec<(String, String)> {
    let s = &job.spec;
    let world = job.world_size();
    let node_rank = host_rank(p.node, s.nodes);
    let rank = node_rank * s.procs_per_node + p.local_rank;
    // With one host torchrun names its own master (`localhost`).
    let addr = if s.nodes == 1 {
        "localhost".to_string()
    } else {
        p.master_addr.clone()
    };
    let mut env: Vec<(String, String)> = [
        ("GROUP_RANK", node_rank.to_string()),
        ("GROUP_WORLD_SIZE", s.nodes.to_string()),
        ("LOCAL_RANK", p.local_rank.to_string()),
        ("LOCAL_WORLD_SIZE", s.procs_per_node.to_string()),
        ("MASTER_ADDR", addr),
        ("MASTER_PORT", p.master_port.to_string()),
        ("RANK", rank.to_string()),
        ("ROLE_NAME", "default".into()),
        ("ROLE_RANK", rank.to_string()),
        ("ROLE_WORLD_SIZE", world.to_string()),
        ("TORCHELASTIC_ERROR_FILE", error_file.to_string()),
        ("TORCHELASTIC_MAX_RESTARTS", "0".into()),
        ("TORCHELASTIC_RESTART_COUNT", "0".into()),
        // torchrun's static rendezvous (a master address given) calls its run
        // `none`; alone on one host it names one itself.
        (
            "TORCHELASTIC_RUN_ID",
            if s.nodes > 1 {
                "none".to_string()
            } else {
                p.run_id.clone()
            },
        ),
        (
            "TORCHELASTIC_SIGNALS_TO_HANDLE",
            "SIGTERM,SIGINT,SIGHUP,SIGQUIT".into(),
        ),
        ("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1".into()),
        ("WORLD_SIZE", world.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if s.procs_per_node > 1 {
        env.push(("OMP_NUM_THREADS".into(), "1".into()));
    }
    env
}

/// The worker's `TORCHELASTIC_ERROR_FILE` on a backend that starts workers
/// itself: one per attempt and process under the host's folder.
pub fn error_file(layout: &HostLayout, p: &Placement) -> PathBuf {
    layout
        .base
        .join(".torchelastic")
        .join(&p.run_id)
        .join(p.local_rank.to_string())
        .join("error.json")
}

/// Every variable one process gets on a backend that starts the processes
/// itself (local): the job's own `env`, then over it (as the drivers'
/// sourced file, their settings and torchrun override the container's
/// environment) the host's, and the torchrun driver's and torchrun's for a
/// torchrun launch.
pub fn rank_env(job: &TrainingJob, layout: &HostLayout, p: &Placement) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = job.spec.env.clone();
    env.extend(host_env(job, layout, p, false));
    if let Launch::Torchrun { .. } = launch(job) {
        env.extend(torchrun_driver_env(&p.instance_type));
        let error_file = error_file(layout, p);
        env.extend(worker_env(job, p, &error_file.to_string_lossy()));
    }
    env
}
