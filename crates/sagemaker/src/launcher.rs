//! Switchyard's own launcher for `contract: modeltrainer` jobs: what goes in
//! the `sm_drivers` channel, and how the container starts it.
//!
//! ModelTrainer ships its drivers as a channel and starts
//! `/bin/bash -c "chmod +x …/sm_train.sh && …/sm_train.sh"` in any image;
//! Switchyard does the same with its own `sm_train.sh` and `sy_run.py`.
//! What ModelTrainer's drivers compute on the host (its `SM_*` variables, the
//! torchrun driver's settings) Switchyard computes here, per host, with the
//! same code as every other backend ([`modeltrainer::host_env`]); the
//! launcher fills in the host's CPU and GPU counts, unpacks the code, installs
//! `requirements`, and starts the script as the drivers do.

use sha2::{Digest, Sha256};
use switchyard_training::contract::{HostLayout, Placement};
use switchyard_training::modeltrainer::{self, Launch};
use switchyard_training::shell::{self, CPUS, GPUS, JOB_NAME};
use switchyard_training::{slots, TrainingJob};

/// The container's entry point and arguments, as ModelTrainer's.
pub const ENTRYPOINT: &str = "/bin/bash";
const SM_TRAIN: &str = include_str!("launcher/sm_train.sh");

/// `ContainerArguments`: make the launcher executable and run it.
pub fn arguments() -> Vec<String> {
    let script = format!(
        "/opt/ml/input/data/{}/sm_train.sh",
        modeltrainer::DRIVERS_CHANNEL
    );
    vec!["-c".into(), format!("chmod +x {script} && {script}")]
}

/// The driver channel's files and the SHA-256 over them, which names their
/// S3 prefix (the same job content is uploaded once).
pub struct Launcher {
    pub files: Vec<(String, Vec<u8>)>,
    pub sha256: String,
}

/// Every file of the channel for `job` on `instance_type`.
pub fn launcher(job: &TrainingJob, instance_type: &str) -> Launcher {
    let layout = HostLayout::new("/opt/ml");
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("sm_train.sh".into(), SM_TRAIN.as_bytes().to_vec()),
        ("sy_run.py".into(), modeltrainer::RUN_PY.as_bytes().to_vec()),
        (
            "sy_launch.json".into(),
            modeltrainer::launch_plan(job).to_string().into_bytes(),
        ),
    ];
    for (name, text) in modeltrainer::driver_files(job) {
        files.push((name.to_string(), text));
    }
    let torchrun = matches!(modeltrainer::launch(job), Launch::Torchrun { .. });
    for node in 0..job.spec.nodes {
        let placement = Placement {
            node,
            local_rank: 0,
            master_addr: String::new(),
            master_port: 0,
            num_cpus: CPUS.number(),
            num_gpus: GPUS.number(),
            instance_type: instance_type.to_string(),
            code_dir: None,
            run_id: String::new(),
        };
        let mut vars = modeltrainer::host_env(job, &layout, &placement, true);
        if torchrun {
            vars.extend(modeltrainer::torchrun_driver_env(instance_type));
        }
        // Over the container's Environment (the job's `env`), as the
        // drivers' sourced file is.
        files.push((
            format!("sy-host-{}.env", slots::host_name(node)),
            shell::env_file(vars.into_iter(), &[CPUS, GPUS, JOB_NAME]).into_bytes(),
        ));
    }
    let mut digest = Sha256::new();
    for (name, bytes) in &files {
        digest.update(name.as_bytes());
        digest.update([0]);
        digest.update((bytes.len() as u64).to_le_bytes());
        digest.update(bytes);
    }
    Launcher {
        files,
        sha256: hex::encode(digest.finalize()),
    }
}
