//! `contract: modeltrainer`'s `requirements` on this machine: installed into
//! an environment of the job's own (a virtual environment over the configured
//! interpreter, so what it has, PyTorch included, stays visible), never into
//! the interpreter Switchyard was given, as ModelTrainer installs into the
//! training container rather than the user's machine.

use std::path::{Path, PathBuf};

use switchyard_training::{BackendError, JobEvent, JobEvents};
use tokio::process::Command;

/// Creates `<job>/venv` over `python` and installs `requirements` (a file in
/// `code`) with pip, from `code` (a requirement may name a wheel there).
/// Returns the environment's interpreter.
pub async fn install(
    python: &str,
    job_dir: &Path,
    code: &Path,
    requirements: &str,
    events: &JobEvents,
) -> Result<PathBuf, BackendError> {
    let venv = job_dir.join("venv");
    let say = |message: String| {
        let _ = events.send(JobEvent::Status { message });
    };
    say(format!(
        "installing {requirements} into the job's environment"
    ));
    run(
        Command::new(python)
            .args(["-m", "venv", "--system-site-packages"])
            .arg(&venv),
        "cannot create the job's environment",
    )
    .await?;
    let env_python = venv.join("bin/python");
    run(
        Command::new(&env_python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "-r",
                requirements,
            ])
            .current_dir(code),
        &format!("spec.requirements: pip install -r {requirements} failed"),
    )
    .await?;
    say(format!("installed {requirements}"));
    Ok(env_python)
}

/// Runs `cmd`; a failure is the job's (its output tail in the message).
async fn run(cmd: &mut Command, what: &str) -> Result<(), BackendError> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| BackendError::Permanent(format!("{what}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = text.lines().rev().take(8).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(BackendError::Permanent(format!(
        "{what} ({}):\n{}",
        out.status,
        tail.join("\n")
    )))
}
