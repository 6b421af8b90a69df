//! Runs as processes: concurrent runs, kill and resume, cancel, Ctrl-C, logs.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::common::{pid_alive, pipeline, task, wait_until, Sandbox};

fn get(sb: &Sandbox, id: &str) -> Value {
    let r = sb.run(&["runs", "get", id, "--output", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.json()
}

fn only_run_id(sb: &Sandbox) -> String {
    let r = sb.run(&["runs", "list", "--output", "json"]);
    r.json()["runs"][0]["run_id"]
        .as_str()
        .map(String::from)
        .unwrap_or_default()
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn two_runs_at_once_share_the_store() {
    let sb = Sandbox::new();
    let p = pipeline("fan_out");
    let dirs: Vec<String> = (0..3).map(|i| sb.path(&format!("d{i}"))).collect();
    let children: Vec<_> = dirs
        .iter()
        .map(|d| {
            std::fs::create_dir_all(d).unwrap();
            sb.cmd()
                .args([
                    "run",
                    p.to_str().unwrap(),
                    "-q",
                    "--output",
                    "json",
                    "-p",
                    &format!("log_dir={d}"),
                    "-p",
                    "seconds=0.1",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["state"], "SUCCEEDED");
        assert_eq!(
            v["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["kind"] == "container")
                .count(),
            6
        );
    }
    assert_eq!(sb.run_count(), 3);
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn a_killed_run_resumes_without_rerunning_finished_tasks() {
    let sb = Sandbox::new();
    let (counter, flag) = (sb.path("counter"), sb.path("flag"));
    let p = pipeline("resumable");
    let mut child = sb
        .cmd()
        .args([
            "run",
            p.to_str().unwrap(),
            "-q",
            "-p",
            &format!("counter={counter}"),
            "-p",
            &format!("flag={flag}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until `stamp` finished and `wait-for` is blocked on the flag.
    wait_until("wait-for to start", Duration::from_secs(60), || {
        std::fs::read_to_string(&counter)
            .map(|s| s.contains("a\nb\n"))
            .unwrap_or(false)
    });
    let id = only_run_id(&sb);
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    let before = get(&sb, &id);
    assert_eq!(
        before["state"], "RUNNING",
        "a killed run stays RUNNING until resumed"
    );
    let listing = sb.run(&["runs", "get", &id]);
    assert!(listing.stdout.contains("runs resume"), "{}", listing.stdout);

    std::fs::write(&flag, "go").unwrap();
    let r = sb.run(&["runs", "resume", &id, "--output", "json", "-q"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let run = r.json();
    assert_eq!(run["state"], "SUCCEEDED");
    assert_eq!(run["outputs"]["Output"], "c");
    // `stamp` (a) ran once; `wait-for` (b) ran again because it had not finished.
    assert_eq!(std::fs::read_to_string(&counter).unwrap(), "a\nb\nb\nc\n");
    assert_eq!(task(&run, "stamp")["state"], "SUCCEEDED");
    // Resuming a finished run is refused.
    let again = sb.run(&["runs", "resume", &id]);
    assert_eq!(again.code, 2);
    assert!(
        again.stderr.contains("already succeeded"),
        "{}",
        again.stderr
    );
}

fn start_cancelable(sb: &Sandbox) -> (std::process::Child, String, i32) {
    start_long_run(sb, "cancelable")
}

/// Starts a pipeline whose long task writes its PID to `pid_file`, and waits
/// until that task runs.
fn start_long_run(sb: &Sandbox, name: &str) -> (std::process::Child, String, i32) {
    let pid_file = sb.path("pid");
    let p = pipeline(name);
    let child = sb
        .cmd()
        .args([
            "run",
            p.to_str().unwrap(),
            "-q",
            "--output",
            "json",
            "-p",
            &format!("pid_file={pid_file}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the task to start", Duration::from_secs(30), || {
        std::fs::read_to_string(&pid_file)
            .map(|s| s.trim().parse::<i32>().is_ok())
            .unwrap_or(false)
    });
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pid_alive(pid));
    (child, only_run_id(sb), pid)
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn cancel_stops_the_run_and_its_processes() {
    let sb = Sandbox::new();
    let (child, id, pid) = start_cancelable(&sb);
    let r = sb.run(&["runs", "cancel", &id]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "CANCELED");
    assert_eq!(task(&v, "long-sleep")["state"], "CANCELED");
    assert!(!pid_alive(pid), "the task's process {pid} is gone");
    let history: Vec<String> = get(&sb, &id)["state_history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["task"].is_null())
        .map(|h| h["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(history, vec!["PENDING", "RUNNING", "CANCELING", "CANCELED"]);
    let again = sb.run(&["runs", "cancel", &id]);
    assert_eq!(again.code, 2);
    assert!(
        again.stderr.contains("already CANCELED"),
        "{}",
        again.stderr
    );
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn ctrl_c_leaves_no_process_behind() {
    let sb = Sandbox::new();
    let (child, id, pid) = start_cancelable(&sb);
    nix_kill(child.id() as i32, 2); // SIGINT, as Ctrl-C sends
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert!(!pid_alive(pid), "the task's process {pid} is gone");
    assert_eq!(get(&sb, &id)["state"], "CANCELED");
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn a_killed_switchyard_takes_its_tasks_with_it() {
    let sb = Sandbox::new();
    let (mut child, id, pid) = start_cancelable(&sb);
    child.kill().unwrap();
    child.wait().unwrap();
    wait_until("the orphan to die", Duration::from_secs(5), || {
        !pid_alive(pid)
    });
    // Cancelling a run whose process is gone records it canceled here, with
    // the task it left running.
    let r = sb.run(&["runs", "cancel", &id]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let run = get(&sb, &id);
    assert_eq!(run["state"], "CANCELED");
    assert_eq!(task(&run, "long-sleep")["state"], "CANCELED", "{run}");
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn a_killed_switchyard_takes_its_tasks_children_too() {
    let sb = Sandbox::new();
    // The PID is the task's child (a background `sleep`), not the group's leader.
    let (mut child, _id, grandchild) = start_long_run(&sb, "cancelable_tree");
    child.kill().unwrap(); // SIGKILL: switchyard cannot clean up itself
    child.wait().unwrap();
    wait_until("the task's child to die", Duration::from_secs(5), || {
        !pid_alive(grandchild)
    });
}

fn nix_kill(pid: i32, sig: i32) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn logs_of_a_task_and_of_a_run() {
    let sb = Sandbox::new();
    let (code, run) = sb.run_pipeline("failing_chain", &[]);
    assert_eq!(code, 1);
    let id = run["run_id"].as_str().unwrap();
    let one = sb.run(&["logs", &id[..8], "explode"]);
    assert_eq!(one.code, 0, "{}", one.stderr);
    assert!(one.stdout.contains("explode says: kaboom"));
    assert!(!one.stdout.contains("[explode]"));
    let all = sb.run(&["logs", id]);
    assert!(
        all.stdout.contains("[explode] explode says: kaboom") && all.stdout.contains("[echo-str]"),
        "{}",
        all.stdout
    );
    let missing = sb.run(&["logs", id, "nope"]);
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("no task 'nope'") && missing.stderr.contains("explode"),
        "{}",
        missing.stderr
    );
    let unknown = sb.run(&["runs", "get", "zzzz"]);
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains("no run with id 'zzzz'"),
        "{}",
        unknown.stderr
    );
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn exit_handlers_run_after_a_cancel() {
    let sb = Sandbox::new();
    let (child, id, pid) = start_long_run(&sb, "exit_on_cancel");
    let r = sb.run(&["runs", "cancel", &id]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "CANCELED");
    let report = task(&v, "report");
    assert_eq!(report["state"], "SUCCEEDED", "{v:#}");
    assert_eq!(report["outputs"]["Output"], "CANCELED");
    assert!(!pid_alive(pid));
}
