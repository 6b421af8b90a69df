//! Test support: compiles the Python test pipelines with the real kfp SDK once
//! per test binary, and runs the `switchyard` binary in a private data directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn repo_root() -> PathBuf {
    Path::new(&manifest_dir())
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// The interpreter that has the pinned kfp SDK (`.ci/setup` creates it).
pub fn python() -> PathBuf {
    let p = std::env::var_os("SWITCHYARD_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/python"));
    assert!(
        p.exists(),
        "{} not found: run `bash .ci/setup` first (it creates .venv with the pinned kfp SDK)",
        p.display()
    );
    p
}

/// Compiled pipeline YAML for a test pipeline defined in tests/pipelines/*.py.
pub fn pipeline(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("switchyard-compiled-{}", std::process::id()));
        let out = Command::new(python())
            .arg(repo_root().join("tests/pipelines/compile.py"))
            .arg(&dir)
            .output()
            .expect("run compile.py");
        assert!(
            out.status.success(),
            "compiling test pipelines failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    });
    let p = dir.join(format!("{name}.yaml"));
    assert!(p.exists(), "no compiled pipeline {name}");
    p
}

/// Shared cache of component environments, so tests build each once.
pub fn venv_dir() -> PathBuf {
    std::env::var_os("SWITCHYARD_TEST_VENV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir);
            home.join(".cache/switchyard/test-venvs")
        })
}

/// A private data directory plus a scratch directory for one test.
pub struct Sandbox {
    pub home: tempfile::TempDir,
    pub work: tempfile::TempDir,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox {
            home: tempfile::tempdir().expect("tempdir"),
            work: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, name: &str) -> String {
        self.work.path().join(name).to_string_lossy().into_owned()
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        c.env("SWITCHYARD_HOME", self.home.path())
            .env("SWITCHYARD_VENV_DIR", venv_dir())
            .env("SWITCHYARD_KILL_GRACE_SECONDS", "2")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(&[], args)
    }

    /// `run` with extra environment variables (a cluster's, AWS's).
    pub fn run_with(&self, env: &[(&'static str, String)], args: &[&str]) -> Run {
        let out: Output = self
            .cmd()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .args(args)
            .output()
            .expect("run switchyard");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `switchyard run <pipeline> --output json <args>`; returns the run document.
    pub fn run_pipeline(&self, name: &str, args: &[&str]) -> (i32, Value) {
        let p = pipeline(name);
        let mut all = vec![
            "run",
            p.to_str().expect("utf8 path"),
            "--output",
            "json",
            "--quiet",
        ];
        all.extend_from_slice(args);
        let r = self.run(&all);
        (r.code, r.json())
    }

    pub fn run_count(&self) -> usize {
        let r = self.run(&["runs", "list", "--output", "json"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        r.json()["runs"].as_array().map(Vec::len).unwrap_or(0)
    }
}

/// The task with this key in a run document.
pub fn task<'a>(run: &'a Value, key: &str) -> &'a Value {
    run["tasks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["key"] == key))
        .unwrap_or_else(|| panic!("no task {key} in {run:#}"))
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn pid_alive(pid: i32) -> bool {
    // A zombie still answers signal 0; look at /proc state too.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.split_whitespace().nth(2).is_none_or(|st| st != "Z"),
        Err(_) => false,
    }
}

/// The interpreter with PyTorch and scikit-learn (`scripts/setup` installs it).
pub fn torch_python() -> PathBuf {
    let p = std::env::var_os("SWITCHYARD_TEST_TORCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir);
            home.join(".cache/switchyard/torch-venv/bin/python")
        });
    assert!(
        p.exists(),
        "{} not found: run `scripts/setup` first (it installs PyTorch once)",
        p.display()
    );
    p
}

impl Sandbox {
    /// `switchyard job run FILE --output json -q ARGS...` with the PyTorch interpreter.
    pub fn job(&self, file: &str, args: &[&str]) -> (i32, Value, String) {
        let mut c = self.cmd();
        c.env("SWITCHYARD_TRAINING_PYTHON", torch_python());
        c.args(["job", "run", file, "--output", "json", "-q"])
            .args(args);
        let out = c.output().expect("run switchyard job");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "job stdout is not JSON ({e}): {}\n{stderr}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        (out.status.code().unwrap_or(-1), v, stderr)
    }

    /// The folder of a job's files (code, hosts, logs).
    pub fn job_dir(&self, job: &Value) -> PathBuf {
        self.home
            .path()
            .join("jobs")
            .join(job["job_id"].as_str().expect("job_id"))
    }
}

pub fn repo_file(rel: &str) -> String {
    repo_root().join(rel).to_string_lossy().into_owned()
}

/// stdout of a finished command that must have succeeded (stderr in the panic).
pub fn success_stdout(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// This package's folder: where cargo runs the test from (the path compiled in
/// can belong to another checkout sharing the build folder).
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}

/// Whether `job get -o json`'s events hold one whose message starts with
/// `prefix` and contains every one of `parts`.
pub fn has_event(job: &Value, prefix: &str, parts: &[&str]) -> bool {
    job["events"].as_array().is_some_and(|e| {
        e.iter().any(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(prefix) && parts.iter().all(|p| m.contains(p)))
        })
    })
}

/// The reason a placement decision (`job place -o json`) gives for `backend`.
pub fn candidate_reason(decision: &Value, backend: &str) -> String {
    decision["candidates"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["backend"] == backend))
        .map(|c| c["reason"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}
