//! Process groups: start one with its output streamed line by line, wait for
//! it, stop it. Used for single pipeline tasks and for the ranks of a gang.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use switchyard_backend::{BackendError, LogSink, StepOutcome};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// Reads the merged output pipe line by line; one pipe for stdout and stderr
/// keeps lines in the order the process wrote them (a Python traceback stays
/// after the lines that led to it). Async, so it can be abandoned (see [`drain`]).
pub(crate) fn pump(
    reader: std::io::PipeReader,
    sink: LogSink,
) -> Result<tokio::task::JoinHandle<()>, BackendError> {
    use tokio::io::AsyncBufReadExt;
    let fd: std::os::fd::OwnedFd = reader.into();
    let rx = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
        .map_err(|e| BackendError::Retryable(format!("cannot read the output pipe: {e}")))?;
    Ok(tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(rx).split(b'\n');
        loop {
            match lines.next_segment().await {
                Ok(Some(bytes)) => {
                    let text = String::from_utf8_lossy(&bytes);
                    sink(text.strip_suffix('\r').unwrap_or(&text));
                }
                Ok(None) => break,
                Err(e) => {
                    sink(&format!("[switchyard] could not read output: {e}"));
                    break;
                }
            }
        }
    }))
}

/// Waits a little for the last output lines, then stops reading: a process that
/// escaped its group (setsid) and still holds the pipe must not hang us.
pub async fn drain(mut output: tokio::task::JoinHandle<()>) {
    if tokio::time::timeout(Duration::from_secs(5), &mut output)
        .await
        .is_err()
    {
        output.abort();
    }
}

/// Sends a signal to a whole process group. After SIGKILL the group is gone
/// (or going), so the guard stops watching it.
pub fn signal_group(pid: u32, sig: Signal) {
    // pid 0 would mean our own group: never signal that.
    if pid == 0 {
        return;
    }
    let _ = killpg(Pid::from_raw(pid as i32), sig);
    if sig == Signal::SIGKILL {
        crate::guard::unwatch(pid);
    }
}

/// A started process group.
pub struct Spawned {
    pub child: Child,
    pub pid: u32,
    /// The reader of the output pipe; done when every writer has closed it.
    pub output: tokio::task::JoinHandle<()>,
}

impl Spawned {
    /// After the leader exited: kills what is left of its group and waits (a
    /// little) for the last output lines.
    pub async fn finish(self) {
        signal_group(self.pid, Signal::SIGKILL);
        drain(self.output).await;
    }
}

/// Starts `argv` as the leader of a new process group, stdout and stderr merged
/// into `logs`. The group is killed if this process dies (the leader by its
/// parent-death signal, the rest by [`crate::guard`]), so a killed
/// `switchyard` leaves no orphans.
pub fn spawn_group(
    argv: &[String],
    env: &BTreeMap<String, String>,
    remove_env: &[&str],
    work_dir: &Path,
    logs: LogSink,
) -> Result<Spawned, BackendError> {
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
    // child when this process dies.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let pipe_err =
        |e: std::io::Error| BackendError::Retryable(format!("cannot create an output pipe: {e}"));
    let (reader, writer) = std::io::pipe().map_err(pipe_err)?;
    let writer2 = writer.try_clone().map_err(pipe_err)?;
    cmd.stdout(writer).stderr(writer2);
    let spawned = cmd.spawn();
    // Our copies of the pipe's write end must close, or the reader never sees EOF.
    drop(cmd);
    let child = spawned.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            " (the local backend runs the command on this machine: install it or put it on PATH)"
        } else {
            ""
        };
        BackendError::Permanent(format!(
            "cannot start '{program}' in {}: {e}{hint}",
            work_dir.display()
        ))
    })?;
    let pid = child.id().unwrap_or(0);
    // The leader dies with us (pdeathsig); the guard takes the rest of its group.
    crate::guard::watch(pid);
    let output = match pump(reader, logs) {
        Ok(o) => o,
        Err(e) => {
            signal_group(pid, Signal::SIGKILL);
            return Err(e);
        }
    };
    Ok(Spawned { child, pid, output })
}

/// The exit code a shell would report: the code, or 128 + signal.
pub fn exit_code(status: &ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

pub fn describe_exit(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "ended abnormally".into(),
    }
}

/// Stops a group: SIGTERM, then SIGKILL if it is still there after `grace`.
pub async fn stop(child: &mut Child, pid: u32, grace: Duration) {
    signal_group(pid, Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        signal_group(pid, Signal::SIGKILL);
        let _ = child.wait().await;
    }
}

/// How a started step is watched: where its output goes, what stops it, and
/// how long it gets to stop (SIGTERM, then SIGKILL after `grace`).
#[derive(Clone)]
pub struct Watch {
    pub logs: LogSink,
    pub cancel: CancellationToken,
    pub grace: Duration,
}

/// Runs `argv` in its own process group and waits for it. On cancel the group
/// gets SIGTERM, then SIGKILL after the grace period. Whatever the group left
/// behind is killed when the leader exits, so nothing outlives the job.
pub async fn run_process(
    argv: &[String],
    env: &BTreeMap<String, String>,
    remove_env: &[&str],
    work_dir: &Path,
    watch: Watch,
) -> Result<StepOutcome, BackendError> {
    let Watch {
        logs,
        cancel,
        grace,
    } = watch;
    let mut sp = spawn_group(argv, env, remove_env, work_dir, logs)?;
    let status = tokio::select! {
        s = sp.child.wait() => Some(s),
        _ = cancel.cancelled() => None,
    };
    let outcome = match status {
        Some(Ok(status)) if status.success() => StepOutcome::Succeeded,
        Some(Ok(status)) => StepOutcome::Failed {
            exit_code: Some(exit_code(&status)),
            message: describe_exit(&status),
        },
        Some(Err(e)) => {
            let pid = sp.pid;
            sp.finish().await;
            return Err(BackendError::Retryable(format!(
                "lost track of process {pid}: {e}"
            )));
        }
        None => {
            stop(&mut sp.child, sp.pid, grace).await;
            StepOutcome::Canceled
        }
    };
    sp.finish().await;
    Ok(outcome)
}
