//! One process group: start, stream output line by line, wait, stop.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use switchyard_engine::{BackendError, JobOutcome, LogSink};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// Reads the merged output pipe line by line on a blocking thread; one pipe for
/// stdout and stderr keeps lines in the order the process wrote them (a Python
/// traceback stays after the lines that led to it).
fn pump(reader: std::io::PipeReader, sink: LogSink) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(reader).split(b'\n') {
            match line {
                Ok(bytes) => {
                    let text = String::from_utf8_lossy(&bytes);
                    sink(text.strip_suffix('\r').unwrap_or(&text));
                }
                Err(e) => {
                    sink(&format!("[switchyard] could not read output: {e}"));
                    break;
                }
            }
        }
    })
}

fn signal_group(pid: u32, sig: Signal) {
    // pid 0 would mean our own group: never signal that.
    if pid == 0 {
        return;
    }
    let _ = killpg(Pid::from_raw(pid as i32), sig);
}

/// Runs `argv` in its own process group and waits for it. On cancel the group
/// gets SIGTERM, then SIGKILL after `grace`. Whatever the group left behind is
/// killed when the leader exits, so nothing outlives the job.
pub async fn run_process(
    argv: &[String],
    env: &BTreeMap<String, String>,
    remove_env: &[&str],
    work_dir: &Path,
    logs: LogSink,
    cancel: CancellationToken,
    grace: Duration,
) -> Result<JobOutcome, BackendError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(BackendError::Permanent("empty command".into()));
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(env)
        .current_dir(work_dir)
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    for k in remove_env {
        cmd.env_remove(k);
    }
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the
    // child if this process dies, so a killed `switchyard run` leaves no orphans.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let (reader, writer) = std::io::pipe()
        .map_err(|e| BackendError::Retryable(format!("cannot create an output pipe: {e}")))?;
    let writer2 = writer
        .try_clone()
        .map_err(|e| BackendError::Retryable(format!("cannot create an output pipe: {e}")))?;
    cmd.stdout(writer).stderr(writer2);
    let spawned = cmd.spawn();
    // Our copies of the pipe's write end must close, or the reader never sees EOF.
    drop(cmd);
    let mut child = spawned.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            " (the local backend runs the container's command on this machine: install it or put it on PATH)"
        } else {
            ""
        };
        BackendError::Permanent(format!("cannot start '{program}': {e}{hint}"))
    })?;
    let pid = child.id().unwrap_or(0);
    let output = pump(reader, logs.clone());

    let status = tokio::select! {
        s = child.wait() => Some(s),
        _ = cancel.cancelled() => None,
    };
    let outcome = match status {
        Some(Ok(status)) => {
            if status.success() {
                JobOutcome::Succeeded
            } else {
                use std::os::unix::process::ExitStatusExt;
                match (status.code(), status.signal()) {
                    (Some(code), _) => JobOutcome::Failed {
                        exit_code: Some(code),
                        message: format!("exited with code {code}"),
                    },
                    (None, Some(sig)) => JobOutcome::Failed {
                        exit_code: Some(128 + sig),
                        message: format!("killed by signal {sig}"),
                    },
                    _ => JobOutcome::Failed {
                        exit_code: None,
                        message: "ended abnormally".into(),
                    },
                }
            }
        }
        Some(Err(e)) => {
            return Err(BackendError::Retryable(format!(
                "lost track of process {pid}: {e}"
            )))
        }
        None => {
            signal_group(pid, Signal::SIGTERM);
            if tokio::time::timeout(grace, child.wait()).await.is_err() {
                signal_group(pid, Signal::SIGKILL);
                let _ = child.wait().await;
            }
            JobOutcome::Canceled
        }
    };
    // Stragglers that inherited the group (background children) go too.
    signal_group(pid, Signal::SIGKILL);
    let _ = tokio::time::timeout(Duration::from_secs(5), output).await;
    Ok(outcome)
}
