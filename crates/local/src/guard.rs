//! A guard that outlives this process: when `switchyard` dies, even by
//! SIGKILL, every process group it started is killed whole.
//!
//! The parent-death signal set on each group's leader reaches only the leader;
//! a task's own children (a shell's background job, a launcher's workers)
//! would live on. So the first group started also starts one small shell, in
//! its own process group and deaf to terminal signals, that reads "+PGID" and
//! "-PGID" lines from a pipe only this process holds. When the pipe closes
//! (this process ended, however), it SIGKILLs every group still listed.
//! A process that leaves its group on purpose (`setsid`) is not followed.

use std::io::Write;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// The guard's loop: POSIX sh, so it runs wherever the tasks' shells run.
const SCRIPT: &str = r#"trap '' INT TERM HUP QUIT
groups=" "
while read -r op pg; do
  case "$op" in
    +) groups="$groups$pg " ;;
    -) kept=" "; for g in $groups; do [ "$g" = "$pg" ] || kept="$kept$g "; done; groups=$kept ;;
  esac
done
for g in $groups; do kill -KILL "-$g" 2>/dev/null; done
"#;

fn pipe() -> &'static Mutex<Option<ChildStdin>> {
    static GUARD: OnceLock<Mutex<Option<ChildStdin>>> = OnceLock::new();
    GUARD.get_or_init(|| Mutex::new(start()))
}

fn start() -> Option<ChildStdin> {
    use std::os::unix::process::CommandExt;
    let spawned = Command::new("sh")
        .arg("-c")
        .arg(SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own group: a Ctrl-C or a kill of our group must not reach it first.
        .process_group(0)
        .spawn();
    match spawned {
        // Not waited for: it ends when we do; a zombie until then is the price
        // of not holding a thread for it.
        Ok(mut child) => child.stdin.take(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the process guard (sh): a killed switchyard may leave task subprocesses behind");
            None
        }
    }
}

fn send(line: String) {
    if let Ok(mut guard) = pipe().lock() {
        if let Some(stdin) = guard.as_mut() {
            if stdin.write_all(line.as_bytes()).is_err() {
                *guard = None;
            }
        }
    }
}

/// From now on, group `pgid` dies with this process.
pub fn watch(pgid: u32) {
    if pgid != 0 {
        send(format!("+ {pgid}\n"));
    }
}

/// Group `pgid` is gone (its id may be reused): stop watching it.
pub fn unwatch(pgid: u32) {
    if pgid != 0 {
        send(format!("- {pgid}\n"));
    }
}
