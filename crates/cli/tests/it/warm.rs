//! KFP Python steps as forks of a warm interpreter (the default), against
//! plain starts (`--no-warm-python`): same results, nothing leaks from one
//! step to the next, cancel kills a step's children, and a fork server killed
//! mid-step fails only that attempt (retried by its policy, on a new server),
//! and two data directories never share a server.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::common::{pid_alive, pipeline, task, wait_until, Sandbox};

/// A run document without what differs between two runs of the same pipeline.
fn comparable(run: Value) -> Value {
    let id = run["run_id"].as_str().unwrap_or_default().to_string();
    let run: Value = serde_json::from_str(&run.to_string().replace(&id, "RUN")).unwrap();
    // Tasks in key order: independent tasks may finish in either order.
    let mut tasks: Vec<Value> = run["tasks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|t| serde_json::json!({"key": t["key"], "state": t["state"], "outputs": t["outputs"]}))
        .collect();
    tasks.sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
    serde_json::json!({"state": run["state"], "outputs": run["outputs"], "error": run["error"], "tasks": tasks})
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn warm_and_plain_starts_give_the_same_results() {
    let sb = Sandbox::new();
    for name in [
        "params_all_types",
        "artifact_passing",
        "failing_chain",
        "loop_numbers",
        "custom_path",
    ] {
        let warm_args = vec!["--no-cache"];
        let (warm_code, warm) = sb.run_pipeline(name, &warm_args);
        let mut plain_args = warm_args.clone();
        plain_args.push("--no-warm-python");
        let (plain_code, plain) = sb.run_pipeline(name, &plain_args);
        assert_eq!(warm_code, plain_code, "{name}: {warm:#}\n{plain:#}");
        assert_eq!(comparable(warm), comparable(plain), "{name}");
    }
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn what_a_step_changes_in_its_process_does_not_reach_the_next() {
    let sb = Sandbox::new();
    let (code, run) = sb.run_pipeline("warm_isolation", &[]);
    assert_eq!(code, 0, "{run:#}");
    let state = &run["outputs"]["Output"];
    assert_eq!(state["after"], "polluted");
    assert_eq!(state["env"], false, "environment variables");
    assert_eq!(state["module"], false, "sys.modules");
    assert_eq!(state["json"], false, "a module's attributes");
    assert_eq!(state["usr1_default"], true, "signal handlers");
    assert_eq!(
        state["runtime"], "true",
        "kfp's runtime flag, as its launcher sets"
    );
    assert_eq!(state["main"], "__main__");
    let cwd = state["cwd"].as_str().unwrap();
    assert!(cwd.ends_with("/inspect-state"), "the task's folder: {cwd}");
    // kfp's executor puts the component's folder (a fresh `mktemp -d`) first.
    let path0 = state["path0"].as_str().unwrap();
    assert!(path0.contains("/tmp."), "{path0}");
    // The same as a plain start.
    let (code, plain) = sb.run_pipeline("warm_isolation", &["--no-cache", "--no-warm-python"]);
    assert_eq!(code, 0, "{plain:#}");
    let mut expected = plain["outputs"]["Output"].clone();
    assert!(expected["path0"].as_str().unwrap().contains("/tmp."));
    expected["cwd"] = state["cwd"].clone();
    expected["path0"] = state["path0"].clone();
    assert_eq!(state, &expected);
}

/// Starts `warm_nap` and waits until its step runs; returns the CLI process
/// and the step's and its child's pids.
fn start_nap(sb: &Sandbox) -> (std::process::Child, i32, i32) {
    start_nap_for(sb, 60.0)
}

/// `start_nap` with a step that sleeps `seconds`.
fn start_nap_for(sb: &Sandbox, seconds: f64) -> (std::process::Child, i32, i32) {
    let flags = sb.work.path().join("flags");
    std::fs::create_dir_all(&flags).unwrap();
    let p = pipeline("warm_nap");
    let child = sb
        .cmd()
        .args(["run", p.to_str().unwrap(), "-q", "--output", "json"])
        .arg("-p")
        .arg(format!("flag_dir={}", flags.display()))
        .arg("-p")
        .arg(format!("seconds={seconds}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = flags.join("started");
    wait_until("the step to start", Duration::from_secs(60), || {
        started.exists()
    });
    let text = std::fs::read_to_string(&started).unwrap();
    let pids: Vec<i32> = text
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    (child, pids[0], pids[1])
}

fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command may hold spaces: fields after the closing parenthesis.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The warm interpreter that forked `step` (its parent).
fn fork_server_of(step: i32) -> i32 {
    let server = parent_of(step);
    let cmdline = std::fs::read(format!("/proc/{server}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default();
    assert!(cmdline.contains("forkserver.py"), "{cmdline}");
    server
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn cancel_kills_a_warm_step_and_its_children() {
    let sb = Sandbox::new();
    let (cli, step, grandchild) = start_nap(&sb);
    let server = fork_server_of(step);
    signal(cli.id() as i32, nix::sys::signal::Signal::SIGINT);
    let out = cli.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["state"], "CANCELED");
    wait_until(
        "the step and its child to die",
        Duration::from_secs(10),
        || !pid_alive(step) && !pid_alive(grandchild),
    );
    wait_until(
        "the fork server to end with the CLI",
        Duration::from_secs(10),
        || !pid_alive(server),
    );
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn a_killed_fork_server_fails_only_the_attempt_and_a_new_one_serves_the_retry() {
    let sb = Sandbox::new();
    let (cli, step, grandchild) = start_nap(&sb);
    let server = fork_server_of(step);
    signal(server, nix::sys::signal::Signal::SIGKILL);
    let out = cli.wait_with_output().unwrap();
    let run: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{run:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(run["outputs"]["Output"], "second attempt");
    let t = task(&run, "nap-once");
    assert_eq!(t["attempt"], 1, "{t:#}");
    assert!(!pid_alive(step) && !pid_alive(grandchild));
    let log = std::fs::read_to_string(t["log"].as_str().unwrap()).unwrap();
    assert!(
        log.contains("the warm interpreter running this step died"),
        "{log}"
    );
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn runs_in_two_data_directories_never_share_a_fork_server() {
    // Two data directories, one component environment (the same cache of
    // environments): each `switchyard` process has its own server.
    let (a, b) = (Sandbox::new(), Sandbox::new());
    let (cli_a, step_a, _) = start_nap_for(&a, 5.0);
    let (cli_b, step_b, _) = start_nap_for(&b, 5.0);
    // Both steps run at once.
    assert!(pid_alive(step_a) && pid_alive(step_b));
    let (server_a, server_b) = (fork_server_of(step_a), fork_server_of(step_b));
    assert_ne!(server_a, server_b);
    assert_eq!(parent_of(server_a), cli_a.id() as i32);
    assert_eq!(parent_of(server_b), cli_b.id() as i32);
    for cli in [cli_a, cli_b] {
        let out = cli.wait_with_output().unwrap();
        let run: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert_eq!(out.status.code(), Some(0), "{run:#}");
        assert_eq!(run["outputs"]["Output"], "slept");
    }
}
