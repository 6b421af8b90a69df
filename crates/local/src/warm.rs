//! Warm interpreters: one fork server per managed environment, so a KFP
//! Python step costs a fork instead of an interpreter start plus kfp's imports.
//!
//! The server (`forkserver.py`) runs inside the environment with kfp's
//! executor imported; each step is a fork with the step's own environment,
//! working directory, output pipe (passed over the socket), process group and
//! parent-death signal, running kfp's executor as `python3 -m
//! kfp.dsl.executor_main` would. Cancel and kill work on the step's process
//! group exactly as for a plain start. A server is started on first use, one
//! per environment and per `switchyard` process (its socket lives in a private
//! folder of this process), and dies with this process. Anything that goes
//! wrong before a step was forked falls back to a plain start.

use std::collections::{BTreeMap, HashMap};
use std::io::{IoSlice, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use switchyard_backend::{BackendError, StepOutcome};
use tokio::io::AsyncBufReadExt;

use crate::process::{drain, signal_group};

const SERVER: &str = include_str!("forkserver.py");

/// The launcher script kfp's SDK compiles into every lightweight component
/// (whitespace collapsed); a component whose launcher differs starts plainly.
const KFP_LAUNCHER: &str = r#"program_path=$(mktemp -d) printf "%s" "$0" > "$program_path/ephemeral_component.py" _KFP_RUNTIME=true python3 -m kfp.dsl.executor_main --component_module_path "$program_path/ephemeral_component.py" "$@""#;

/// What a step runs in the warm interpreter: the component's source and the
/// executor's arguments after `--component_module_path`.
pub struct Step {
    source: String,
    args: Vec<String>,
}

impl Step {
    /// Recognises kfp's launcher (`sh -ec <launcher> <source> <args>...`).
    pub fn from_launcher(argv: &[String]) -> Option<Step> {
        let [sh, flag, script, source, args @ ..] = argv else {
            return None;
        };
        let collapsed = script.split_whitespace().collect::<Vec<_>>().join(" ");
        (sh == "sh" && flag == "-ec" && collapsed == KFP_LAUNCHER).then(|| Step {
            source: source.clone(),
            args: args.to_vec(),
        })
    }
}

/// Why a step did not run warm: it then runs with a plain start.
pub struct Fallback(pub String);

/// The fork servers of this process, by environment.
pub struct WarmPythons {
    servers: tokio::sync::Mutex<HashMap<PathBuf, Arc<Server>>>,
    dir: Mutex<Option<PathBuf>>,
}

struct Server {
    socket: PathBuf,
    pid: u32,
    child: tokio::sync::Mutex<tokio::process::Child>,
}

impl Default for WarmPythons {
    fn default() -> Self {
        WarmPythons {
            servers: tokio::sync::Mutex::new(HashMap::new()),
            dir: Mutex::new(None),
        }
    }
}

impl Drop for WarmPythons {
    fn drop(&mut self) {
        if let Ok(servers) = self.servers.try_lock() {
            for s in servers.values() {
                signal_group(s.pid, Signal::SIGKILL);
            }
        }
        if let Some(dir) = self.dir.lock().ok().and_then(|mut d| d.take()) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl WarmPythons {
    /// A folder only this process uses, for the servers' sockets (short: a
    /// socket path has at most 107 bytes).
    fn private_dir(&self) -> Result<PathBuf, String> {
        let mut dir = self
            .dir
            .lock()
            .map_err(|_| "the warm interpreters' state is poisoned".to_string())?;
        if let Some(d) = dir.as_ref() {
            return Ok(d.clone());
        }
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        remove_stale(&base);
        for n in 0..100u32 {
            let d = base.join(format!("switchyard-py-{}-{n}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&d) {
                Ok(()) => {
                    *dir = Some(d.clone());
                    return Ok(d);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("cannot create {}: {e}", d.display())),
            }
        }
        Err(format!(
            "cannot create a private folder in {}",
            base.display()
        ))
    }

    /// The running server of the environment `venv`, started if need be (or
    /// again, if the last one died).
    async fn server(&self, venv: &Path) -> Result<Arc<Server>, String> {
        let mut servers = self.servers.lock().await;
        if let Some(s) = servers.get(venv) {
            if s.child.lock().await.try_wait().ok().flatten().is_none() {
                return Ok(s.clone());
            }
            servers.remove(venv);
        }
        let dir = self.private_dir()?;
        let n = servers.len() + 1;
        let script = dir.join("forkserver.py");
        if !script.exists() {
            std::fs::write(&script, SERVER)
                .map_err(|e| format!("cannot write {}: {e}", script.display()))?;
        }
        let socket = dir.join(format!("{n}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        let log = std::fs::File::create(dir.join(format!("{n}.log")))
            .map_err(|e| format!("cannot create the server's log in {}: {e}", dir.display()))?;
        let mut cmd = tokio::process::Command::new(venv.join("bin/python"));
        cmd.arg("-u")
            .arg(&script)
            .arg(&socket)
            .env("VIRTUAL_ENV", venv)
            .env_remove("PYTHONPATH")
            .env_remove("PYTHONHOME")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; the server dies with this process.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", venv.join("bin/python").display()))?;
        let pid = child.id().unwrap_or(0);
        crate::guard::watch(pid);
        let stdout = child.stdout.take().ok_or("the server has no stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
        if !matches!(ready, Ok(Ok(Some(ref l))) if l == "ready") {
            signal_group(pid, Signal::SIGKILL);
            let _ = child.wait().await;
            let log = std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default();
            return Err(format!(
                "the warm interpreter did not start: {}",
                log.lines().last().unwrap_or("no output")
            ));
        }
        let server = Arc::new(Server {
            socket,
            pid,
            child: tokio::sync::Mutex::new(child),
        });
        servers.insert(venv.to_path_buf(), server.clone());
        Ok(server)
    }

    /// Runs `step` as a fork of the environment's server. `Err(Fallback)`
    /// means nothing ran: start the step plainly.
    pub async fn run(
        &self,
        venv: &Path,
        step: Step,
        env: BTreeMap<String, String>,
        work_dir: &Path,
        watch: crate::process::Watch,
    ) -> Result<Result<StepOutcome, BackendError>, Fallback> {
        let crate::process::Watch {
            logs,
            cancel,
            grace,
        } = watch;
        let server = self.server(venv).await.map_err(Fallback)?;
        // kfp's launcher writes the source to a fresh folder; so does this.
        let program = tempdir_for(&env).map_err(Fallback)?;
        let module = program.join("ephemeral_component.py");
        std::fs::write(&module, &step.source)
            .map_err(|e| Fallback(format!("cannot write {}: {e}", module.display())))?;
        let _cleanup = RemoveDir(program);
        let mut argv = vec![
            "--component_module_path".to_string(),
            module.to_string_lossy().into_owned(),
        ];
        argv.extend(step.args);
        let request = serde_json::json!({"argv": argv, "env": env, "cwd": work_dir});
        let (reader, writer) =
            std::io::pipe().map_err(|e| Fallback(format!("cannot create an output pipe: {e}")))?;
        let socket = server.socket.clone();
        let conn = tokio::task::spawn_blocking(move || send(&socket, &request, writer))
            .await
            .map_err(|e| Fallback(e.to_string()))?
            .map_err(Fallback)?;
        let output = crate::process::pump(reader, logs).map_err(|e| Fallback(e.to_string()))?;
        let conn = tokio::net::UnixStream::from_std(conn)
            .map_err(|e| Fallback(format!("cannot use the server's socket: {e}")))?;
        let mut replies = tokio::io::BufReader::new(conn).lines();
        let pid = match replies.next_line().await {
            Ok(Some(l)) => l
                .strip_prefix("pid ")
                .and_then(|p| p.parse::<u32>().ok())
                .filter(|p| *p > 0),
            _ => None,
        };
        let Some(pid) = pid else {
            drain(output).await;
            return Err(Fallback(
                "the warm interpreter did not start the step".into(),
            ));
        };
        crate::guard::watch(pid);
        let mut group = StepGroup { pid, ended: false };
        let ended = tokio::select! {
            r = replies.next_line() => Some(r),
            _ = cancel.cancelled() => None,
        };
        let outcome = match ended {
            Some(r) => status(r),
            None => {
                signal_group(pid, Signal::SIGTERM);
                if tokio::time::timeout(grace, replies.next_line())
                    .await
                    .is_err()
                {
                    signal_group(pid, Signal::SIGKILL);
                    let _ = replies.next_line().await;
                }
                Ok(StepOutcome::Canceled)
            }
        };
        // Whatever the step left in its group goes with it.
        signal_group(pid, Signal::SIGKILL);
        group.ended = true;
        drain(output).await;
        Ok(outcome)
    }
}

/// Removes the folders of `switchyard` processes that ended without
/// cleaning up (killed): `switchyard-py-<pid>-<n>` whose process is gone.
fn remove_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("switchyard-py-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Kills a started step's group if its run is dropped before it ended.
struct StepGroup {
    pid: u32,
    ended: bool,
}

impl Drop for StepGroup {
    fn drop(&mut self) {
        if !self.ended {
            signal_group(self.pid, Signal::SIGKILL);
        }
    }
}

/// How the server said the step ended.
fn status(line: std::io::Result<Option<String>>) -> Result<StepOutcome, BackendError> {
    let line = match line {
        Ok(Some(l)) => l,
        // The server died (and took the step with it: parent-death signal).
        _ => {
            return Err(BackendError::Retryable(
                "the warm interpreter running this step died".into(),
            ))
        }
    };
    let (code, message) = match line.split_once(' ') {
        Some(("exit", c)) => match c.parse::<i32>() {
            Ok(0) => return Ok(StepOutcome::Succeeded),
            Ok(c) => (c, format!("exited with code {c}")),
            Err(_) => (-1, format!("unreadable exit status '{line}'")),
        },
        Some(("signal", s)) => {
            let s = s.parse::<i32>().unwrap_or(0);
            (128 + s, format!("killed by signal {s}"))
        }
        _ => (-1, format!("unreadable exit status '{line}'")),
    };
    Ok(StepOutcome::Failed {
        exit_code: Some(code),
        message,
    })
}

/// Connects, sends the request with the pipe's write end attached, and
/// closes the sending side (the server reads to the end).
fn send(
    socket: &Path,
    request: &serde_json::Value,
    writer: std::io::PipeWriter,
) -> Result<UnixStream, String> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let mut conn = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot reach the warm interpreter at {}: {e}",
            socket.display()
        )
    })?;
    let body = request.to_string().into_bytes();
    let fds = [writer.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let first = body.len().min(4096);
    let sent = sendmsg::<()>(
        conn.as_raw_fd(),
        &[IoSlice::new(&body[..first])],
        &cmsg,
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| format!("cannot send the step to the warm interpreter: {e}"))?;
    drop(writer);
    conn.write_all(&body[sent..])
        .and_then(|_| conn.shutdown(std::net::Shutdown::Write))
        .map_err(|e| format!("cannot send the step to the warm interpreter: {e}"))?;
    conn.set_nonblocking(true)
        .map_err(|e| format!("cannot use the server's socket: {e}"))?;
    Ok(conn)
}

/// A new folder under the step's `TMPDIR` (or the system's), as `mktemp -d`.
fn tempdir_for(env: &BTreeMap<String, String>) -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    let base = env
        .get("TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let mut seed = [0u8; 8];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut seed));
    for n in 0..100u64 {
        let d = base.join(format!(
            "tmp.{:x}",
            u64::from_le_bytes(seed).wrapping_add(n)
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&d) {
            Ok(()) => return Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create a folder in {}: {e}", base.display())),
        }
    }
    Err(format!("cannot create a folder in {}", base.display()))
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kfps_own_launcher_runs_warm() {
        let launcher = "program_path=$(mktemp -d)\n\nprintf \"%s\" \"$0\" > \"$program_path/ephemeral_component.py\"\n\n_KFP_RUNTIME=true python3 -m kfp.dsl.executor_main                         --component_module_path                         \"$program_path/ephemeral_component.py\"                         \"$@\"\n";
        let argv = |script: &str| -> Vec<String> {
            [
                "sh",
                "-ec",
                script,
                "def f(): pass",
                "--executor_input",
                "{}",
            ]
            .map(String::from)
            .to_vec()
        };
        let step = Step::from_launcher(&argv(launcher)).expect("kfp's launcher");
        assert_eq!(step.source, "def f(): pass");
        assert_eq!(step.args, ["--executor_input", "{}"]);
        let changed = launcher.replace("python3 -m", "python3 -X dev -m");
        assert!(Step::from_launcher(&argv(&changed)).is_none());
        assert!(Step::from_launcher(&argv(launcher)[..3]).is_none());
    }

    #[test]
    fn exit_statuses_read_like_a_plain_start() {
        assert_eq!(
            status(Ok(Some("exit 0".into()))).unwrap(),
            StepOutcome::Succeeded
        );
        assert_eq!(
            status(Ok(Some("exit 3".into()))).unwrap(),
            StepOutcome::Failed {
                exit_code: Some(3),
                message: "exited with code 3".into()
            }
        );
        assert_eq!(
            status(Ok(Some("signal 9".into()))).unwrap(),
            StepOutcome::Failed {
                exit_code: Some(137),
                message: "killed by signal 9".into()
            }
        );
        assert!(matches!(status(Ok(None)), Err(BackendError::Retryable(_))));
    }
}
