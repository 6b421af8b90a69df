//! The SageMaker half of the runtime contract inside a PyTorchJob's pods.
//!
//! Workers share one pod template, but the toolkit's view differs per host
//! (`SM_CURRENT_HOST`, `resourceconfig.json`, `SM_TRAINING_ENV`). So every
//! host's variables and config files are computed here, by the same code as
//! on the other backends, and shipped in the job's ConfigMap; a POSIX shell
//! prologue in the pod picks its host by node rank (`PET_NODE_RANK`, which
//! Switchyard's and Kubeflow's operators set), writes `/opt/ml/input/config`
//! and runs the command through `env NAME=VALUE…` (the toolkit's names keep a
//! channel's `-`, which `export` refuses). The one value only the node knows
//! — its CPU count, as the toolkit counts it — is filled in there. With one
//! process per pod (no torchrun) the file also gives what torchrun would
//! (`LOCAL_RANK`, `NODE_RANK`, `TORCHELASTIC_RUN_ID`, …); the operator gives
//! `RANK`, `WORLD_SIZE`, `MASTER_*`, as Kubeflow's does.

use std::collections::BTreeMap;
use std::path::PathBuf;

use switchyard_training::contract::{self, HostLayout, Placement};
use switchyard_training::modeltrainer::{self, Launch};
use switchyard_training::shell::{self, Splice, CPUS, MASTER_ADDR, MASTER_PORT};
use switchyard_training::{Contract, TrainingJob};

/// Where the ConfigMap's contract keys are mounted in every pod.
pub const CONTRACT_DIR: &str = "/opt/ml/.switchyard";
/// The ConfigMap key of the prologue.
pub const START_KEY: &str = "sy-start.sh";

/// The prologue: `sh -c START switchyard-start COMMAND...`.
pub const START: &str = r#"set -e
n="${PET_NODE_RANK:-${RANK:-0}}"
c=/opt/ml/.switchyard
[ -f "$c/sy-host-$n.env" ] || { echo "switchyard: no contract for node rank $n" >&2; exit 2; }
PY="$(command -v python3 || command -v python || echo python)"
# `sy-python` (ModelTrainer's commands): the image's python3, else python.
if [ "${1:-}" = sy-python ]; then shift; set -- "$PY" "$@"; fi
SM_NUM_CPUS="$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc --all)"
. "$c/sy-host-$n.env"
mkdir -p /opt/ml/input/config /opt/ml/model /opt/ml/output/data /opt/ml/output/intermediate
for f in hyperparameters.json resourceconfig.json inputdataconfig.json; do
  cp "$c/sy-host-$n-$f" "/opt/ml/input/config/$f"
done
if [ -f "$c/sy-drivers-sourcecode.json" ]; then
  mkdir -p /opt/ml/input/data/sm_drivers/distributed_drivers
  cp "$c/sy-drivers-sourcecode.json" /opt/ml/input/data/sm_drivers/sourcecode.json
  cp "$c/sy-drivers-distributed.json" /opt/ml/input/data/sm_drivers/distributed.json
fi
if [ -f "$c/sy-requirements" ]; then
  r="$(cat "$c/sy-requirements")"
  "$PY" -m pip --version >/dev/null 2>&1 || {
    echo "switchyard: spec.requirements: the image's python has no pip (python -m pip fails): add pip to the image, or drop requirements" >&2
    exit 2
  }
  echo "switchyard: installing $r" >&2
  # Into the image's Python, as ModelTrainer installs (the container is the job's own).
  PIP_BREAK_SYSTEM_PACKAGES=1 "$PY" -m pip install --disable-pip-version-check --no-input -r "$r" >&2
fi
exec env "$@"
"#;

/// The keys of `contract: modeltrainer`'s driver channel files and of the
/// requirements file's name.
const DRIVER_KEYS: [(&str, &str); 2] = [
    ("sy-drivers-sourcecode.json", modeltrainer::SOURCE_CODE_JSON),
    (
        "sy-drivers-distributed.json",
        modeltrainer::DISTRIBUTED_JSON,
    ),
];
const REQUIREMENTS_KEY: &str = "sy-requirements";
/// ModelTrainer's launcher and its plan: torchrun's workers in a pod run the
/// script through it, so that torchrun's option parser never sees the
/// script's arguments.
pub const RUN_KEY: &str = "sy_run.py";
const PLAN_KEY: &str = "sy_launch.json";

/// Whether a variable belongs to the SageMaker half, which pods get per host
/// from the prologue (not from the shared pod template).
pub fn is_sagemaker_var(name: &str) -> bool {
    name.starts_with("SM_") || name == "SAGEMAKER_BASE_DIR" || name == "TRAINING_JOB_NAME"
}

fn env_key(node: u32) -> String {
    format!("sy-host-{node}.env")
}

fn file_key(node: u32, name: &str) -> String {
    format!("sy-host-{node}-{name}")
}

/// The names of the keys [`files`] makes, without rendering them (the pod
/// template lists them in its volume).
pub fn keys(job: &TrainingJob) -> Vec<String> {
    let mut keys: Vec<String> = std::iter::once(START_KEY.to_string())
        .chain((0..job.spec.nodes).flat_map(|n| {
            std::iter::once(env_key(n))
                .chain(contract::CONFIG_FILES.iter().map(move |f| file_key(n, f)))
        }))
        .collect();
    if job.spec.contract == Contract::ModelTrainer {
        keys.extend(DRIVER_KEYS.iter().map(|(k, _)| k.to_string()));
        keys.extend([RUN_KEY.to_string(), PLAN_KEY.to_string()]);
        if job.spec.requirements.is_some() {
            keys.push(REQUIREMENTS_KEY.to_string());
        }
    }
    keys
}

/// The ConfigMap keys of the contract: the prologue, and per host its
/// variables (`sy-host-<n>.env`) and config files (`sy-host-<n>-<file>`).
/// Variables the job's own `env` sets are left to it (it wins everywhere).
pub fn files(
    job: &TrainingJob,
    instance_type: &str,
    code_dir: Option<&str>,
) -> std::io::Result<BTreeMap<String, String>> {
    let layout = HostLayout::new("/opt/ml");
    let mut out = BTreeMap::new();
    out.insert(START_KEY.to_string(), START.to_string());
    for node in 0..job.spec.nodes {
        let placement = Placement {
            node,
            local_rank: 0,
            master_addr: MASTER_ADDR.marker.to_string(),
            master_port: MASTER_PORT.number(),
            num_cpus: CPUS.number(),
            num_gpus: job.spec.resources.gpu,
            instance_type: instance_type.to_string(),
            code_dir: code_dir.map(PathBuf::from),
            // One run of the job (the operator names its pods after it).
            run_id: job.name.clone(),
        };
        let env = match job.spec.contract {
            Contract::Toolkit => toolkit_env(job, &layout, &placement),
            Contract::ModelTrainer => modeltrainer_env(job, &layout, &placement),
        };
        out.insert(env_key(node), env);
        for (name, text) in
            contract::host_config_files(job, node, instance_type, code_dir.unwrap_or(""))?
        {
            out.insert(
                file_key(node, name),
                String::from_utf8_lossy(&text).into_owned(),
            );
        }
    }
    if job.spec.contract == Contract::ModelTrainer {
        for ((key, _), (_, text)) in DRIVER_KEYS.iter().zip(modeltrainer::driver_files(job)) {
            out.insert(key.to_string(), String::from_utf8_lossy(&text).into_owned());
        }
        if let Some(r) = &job.spec.requirements {
            out.insert(REQUIREMENTS_KEY.to_string(), r.clone());
        }
        out.insert(RUN_KEY.to_string(), modeltrainer::RUN_PY.to_string());
        out.insert(
            PLAN_KEY.to_string(),
            modeltrainer::launch_plan(job).to_string(),
        );
    }
    Ok(out)
}

/// The toolkit's SageMaker half (the pod template has the rest), and with
/// one process per pod what torchrun would set.
fn toolkit_env(job: &TrainingJob, layout: &HostLayout, placement: &Placement) -> String {
    // One process per pod runs without torchrun, which would set these.
    let torchrun = [
        "TORCHELASTIC_RUN_ID",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "NODE_RANK",
        "GROUP_RANK",
        "GROUP_WORLD_SIZE",
        "ROLE_RANK",
        "ROLE_WORLD_SIZE",
        "ROLE_NAME",
    ];
    let single = job.spec.procs_per_node == 1;
    shell::env_file(
        contract::rank_env(job, layout, placement)
            .into_iter()
            .filter(|(k, _)| {
                (is_sagemaker_var(k) || (single && torchrun.contains(&k.as_str())))
                    && !job.spec.env.contains_key(k)
            }),
        &[CPUS],
    )
}

/// Everything ModelTrainer's drivers give a host (its master is the one the
/// operator names), the torchrun driver's settings, and with one process per
/// pod what torchrun gives a worker beyond the operator's `WORLD_SIZE` and
/// `MASTER_*`. Node ranks follow the host names sorted as text, as the
/// drivers' `--node_rank`: `RANK` with one process per pod, torchrun's
/// `PET_NODE_RANK` with more. Over the pod's environment (the job's `env`),
/// as the drivers' sourced file is.
fn modeltrainer_env(job: &TrainingJob, layout: &HostLayout, placement: &Placement) -> String {
    let mut vars = modeltrainer::host_env(job, layout, placement, false);
    if let Launch::Torchrun { .. } = modeltrainer::launch(job) {
        vars.extend(modeltrainer::torchrun_driver_env(&placement.instance_type));
        if job.spec.procs_per_node == 1 {
            let given = ["WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"];
            vars.extend(
                modeltrainer::worker_env(job, placement, "")
                    .into_iter()
                    .filter(|(k, _)| {
                        !given.contains(&k.as_str()) && k != "TORCHELASTIC_ERROR_FILE"
                    }),
            );
        } else {
            let rank = modeltrainer::host_rank(placement.node, job.spec.nodes);
            vars.push(("PET_NODE_RANK".into(), rank.to_string()));
        }
    }
    let splices: [Splice; 3] = [CPUS, MASTER_ADDR, MASTER_PORT];
    shell::env_file(vars.into_iter(), &splices)
}
