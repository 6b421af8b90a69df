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
use switchyard_training::TrainingJob;

/// Where the ConfigMap's contract keys are mounted in every pod.
pub const CONTRACT_DIR: &str = "/opt/ml/.switchyard";
/// The ConfigMap key of the prologue.
pub const START_KEY: &str = "sy-start.sh";

/// Stands for the node's CPU count until the pod knows it (never a real count).
const CPUS: u32 = 4_000_000_007;

/// The prologue: `sh -c START switchyard-start COMMAND...`.
pub const START: &str = r#"set -e
n="${PET_NODE_RANK:-${RANK:-0}}"
c=/opt/ml/.switchyard
[ -f "$c/sy-host-$n.env" ] || { echo "switchyard: no contract for node rank $n" >&2; exit 2; }
SM_NUM_CPUS="$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc --all)"
. "$c/sy-host-$n.env"
mkdir -p /opt/ml/input/config /opt/ml/model /opt/ml/output/data /opt/ml/output/intermediate
for f in hyperparameters.json resourceconfig.json inputdataconfig.json; do
  cp "$c/sy-host-$n-$f" "/opt/ml/input/config/$f"
done
exec env "$@"
"#;

/// `'…'` for the shell, with `'` spelled `'\''`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// One `NAME=VALUE` word for `env`; where the value holds the CPU stand-in
/// (as `SM_NUM_CPUS` and the `num_cpus` of `SM_TRAINING_ENV` do), the node's
/// count is spliced in.
fn assignment(name: &str, value: &str) -> String {
    let marker = CPUS.to_string();
    let text = format!("{name}={value}");
    let spliced = |needle: &str, with: &str| {
        text.split(needle)
            .map(quote)
            .collect::<Vec<_>>()
            .join(&format!("{}\"$SM_NUM_CPUS\"", quote(with)))
    };
    match name {
        "SM_NUM_CPUS" if value == marker => spliced(&marker, ""),
        "SM_TRAINING_ENV" => spliced(&format!("\"num_cpus\":{marker}"), "\"num_cpus\":"),
        _ => quote(&text),
    }
}

/// A host's variables as the file the prologue sources: `set --` puts them
/// before the command, for `exec env "$@"`.
fn env_file(vars: impl Iterator<Item = (String, String)>) -> String {
    let mut out = String::from("set --");
    for (k, v) in vars {
        out.push_str(" \\\n  ");
        out.push_str(&assignment(&k, &v));
    }
    out.push_str(" \\\n  \"$@\"\n");
    out
}

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
    std::iter::once(START_KEY.to_string())
        .chain((0..job.spec.nodes).flat_map(|n| {
            std::iter::once(env_key(n))
                .chain(contract::CONFIG_FILES.iter().map(move |f| file_key(n, f)))
        }))
        .collect()
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
            master_addr: String::new(),
            master_port: 0,
            num_cpus: CPUS,
            num_gpus: job.spec.resources.gpu,
            instance_type: instance_type.to_string(),
            code_dir: code_dir.map(PathBuf::from),
            // One run of the job (the operator names its pods after it).
            run_id: job.name.clone(),
        };
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
        let env = env_file(
            contract::rank_env(job, &layout, &placement)
                .into_iter()
                .filter(|(k, _)| {
                    (is_sagemaker_var(k) || (single && torchrun.contains(&k.as_str())))
                        && !job.spec.env.contains_key(k)
                }),
        );
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
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variables_reach_the_command_with_the_cpu_count_spliced_in() {
        let training = format!("{{\"a\":\"it's\",\"num_cpus\":{CPUS},\"z\":1}}");
        let file = env_file(
            [
                ("SM_TRAINING_ENV".to_string(), training),
                ("SM_NUM_CPUS".to_string(), CPUS.to_string()),
                (
                    "SM_CHANNEL_VAL-DATA".to_string(),
                    "/opt/ml/input/data/val-data".to_string(),
                ),
            ]
            .into_iter(),
        );
        // Through a real shell, as the prologue runs it.
        let script = format!("SM_NUM_CPUS=7\n{file}exec env \"$@\"",);
        let out = std::process::Command::new("sh")
            .args(["-c", &script, "sh", "env"])
            .output()
            .unwrap();
        let mut seen: Vec<&str> = std::str::from_utf8(&out.stdout)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("SM_"))
            .collect();
        seen.sort();
        assert_eq!(
            seen.join("\n") + "\n",
            "SM_CHANNEL_VAL-DATA=/opt/ml/input/data/val-data\nSM_NUM_CPUS=7\nSM_TRAINING_ENV={\"a\":\"it's\",\"num_cpus\":7,\"z\":1}\n",
            "{file}"
        );
    }
}
