//! Retries, caching, failures and concurrency.

use serde_json::{json, Value};

use crate::common::{task, Sandbox};

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn retry_policy_retries_until_success() {
    let sb = Sandbox::new();
    let counter = sb.path("counter");
    let (code, run) = sb.run_pipeline(
        "retry",
        &["-p", &format!("counter={counter}"), "-p", "fail_times=2"],
    );
    assert_eq!(code, 0, "{run:#}");
    assert_eq!(run["outputs"]["Output"], json!(3));
    assert_eq!(task(&run, "flaky")["attempt"], json!(2));
    let id = run["run_id"].as_str().unwrap();
    let logs = sb.run(&["logs", id, "flaky"]);
    assert!(
        logs.stdout.contains("attempt 1 fails on purpose") && logs.stdout.contains("retry 2/2"),
        "{}",
        logs.stdout
    );
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn retry_policy_gives_up_after_max_retries() {
    let sb = Sandbox::new();
    let counter = sb.path("counter");
    let (code, run) = sb.run_pipeline(
        "retry",
        &["-p", &format!("counter={counter}"), "-p", "fail_times=5"],
    );
    assert_eq!(code, 1);
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap(),
        "3",
        "1 try + 2 retries"
    );
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("attempt 3 fails on purpose"),
        "{}",
        run["error"]
    );
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn caching_reuses_results_unless_disabled() {
    let sb = Sandbox::new();
    let path = sb.path("stamps");
    let p = format!("path={path}");
    let (code, first) = sb.run_pipeline("caching", &["-p", &p]);
    assert_eq!(code, 0, "{first:#}");
    assert_eq!(task(&first, "stamp")["cached"], json!(false));
    let (_, second) = sb.run_pipeline("caching", &["-p", &p]);
    assert_eq!(task(&second, "stamp")["cached"], json!(true));
    assert_eq!(
        task(&second, "stamp-2")["cached"],
        json!(false),
        "set_caching_options(False)"
    );
    assert_eq!(second["outputs"]["Output"], "a");
    // A different input is a different fingerprint.
    let (_, third) = sb.run_pipeline("caching", &["-p", &p, "-p", "tag=b"]);
    assert_eq!(task(&third, "stamp")["cached"], json!(false));
    // --no-cache runs everything.
    let (_, fourth) = sb.run_pipeline("caching", &["-p", &p, "--no-cache"]);
    assert_eq!(task(&fourth, "stamp")["cached"], json!(false));
    let lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(
        lines,
        vec![
            "a",
            "uncached-x",
            "uncached-x",
            "b",
            "uncached-x",
            "a",
            "uncached-x"
        ]
    );
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn a_failure_names_the_task_and_stops_its_dependents_only() {
    let sb = Sandbox::new();
    let p = crate::common::pipeline("failing_chain");
    let r = sb.run(&["run", p.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("FAILED"), "{}", r.stderr);
    assert!(
        r.stderr.contains("task 'explode'") && r.stderr.contains("exited with code 4"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("explode says: kaboom"),
        "the error carries the task's last output: {}",
        r.stderr
    );
    let (_, run) = sb.run_pipeline("failing_chain", &[]);
    assert_eq!(task(&run, "explode")["state"], "FAILED");
    assert_eq!(task(&run, "echo-str-2")["state"], "SKIPPED");
    assert_eq!(
        task(&run, "echo-str-3")["state"],
        "SUCCEEDED",
        "independent work still runs"
    );
}

fn max_overlap(dir: &str) -> usize {
    let mut spans = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        let v: Vec<f64> = text
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        spans.push((v[0], v[1]));
    }
    assert_eq!(spans.len(), 6);
    spans
        .iter()
        .map(|(s, _)| spans.iter().filter(|(a, b)| a <= s && s < b).count())
        .max()
        .unwrap_or(0)
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn parallelism_bounds_concurrent_tasks() {
    let sb = Sandbox::new();
    let two = sb.path("two");
    std::fs::create_dir_all(&two).unwrap();
    let (code, run) = sb.run_pipeline(
        "fan_out",
        &[
            "-p",
            &format!("log_dir={two}"),
            "-p",
            "seconds=0.6",
            "--parallelism",
            "2",
        ],
    );
    assert_eq!(code, 0, "{run:#}");
    assert_eq!(max_overlap(&two), 2);

    let six = sb.path("six");
    std::fs::create_dir_all(&six).unwrap();
    let (code, _) = sb.run_pipeline(
        "fan_out",
        &[
            "-p",
            &format!("log_dir={six}"),
            "-p",
            "seconds=1.5",
            "--parallelism",
            "6",
        ],
    );
    assert_eq!(code, 0);
    assert!(max_overlap(&six) >= 3, "independent tasks run concurrently");
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn loop_parallelism_limit_is_honoured() {
    let sb = Sandbox::new();
    let dir = sb.path("limited");
    std::fs::create_dir_all(&dir).unwrap();
    let (code, run) = sb.run_pipeline(
        "limited_fan_out",
        &[
            "-p",
            &format!("log_dir={dir}"),
            "-p",
            "seconds=0.6",
            "--parallelism",
            "6",
        ],
    );
    assert_eq!(code, 0, "{run:#}");
    assert_eq!(max_overlap(&dir), 2);
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn python_components_run_in_managed_environments_without_network() {
    let sb = Sandbox::new();
    let (code, run) = sb.run_pipeline("environments", &[]);
    assert_eq!(code, 0, "{run:#}");
    let plain = task(&run, "where-am-i")["outputs"]["Output"]
        .as_str()
        .unwrap()
        .to_string();
    let with_pkg = task(&run, "with-package")["outputs"]["Output"]
        .as_str()
        .unwrap()
        .to_string();
    let venvs = crate::common::venv_dir().canonicalize().unwrap();
    assert!(
        plain.starts_with(venvs.to_str().unwrap()),
        "not the user's interpreter: {plain}"
    );
    let (version, exe) = with_pkg.split_once(' ').unwrap();
    assert_eq!(version, "1.16.0");
    assert!(exe.starts_with(venvs.to_str().unwrap()));
    assert_ne!(
        std::path::Path::new(exe).parent(),
        std::path::Path::new(&plain).parent(),
        "packages_to_install gets its own environment"
    );
    // Once the environments exist, a run makes no network call: a dead index must not matter.
    let p = crate::common::pipeline("environments");
    crate::common::success_stdout(
        sb.cmd()
            .args(["run", p.to_str().unwrap(), "-q", "--output", "json"])
            .env("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
            .env("PIP_NO_INDEX", "1")
            .output()
            .unwrap(),
    );
}

#[test]
#[ignore = "needs the kfp SDK venv with uv (scripts/setup)"]
fn environments_build_with_uv_or_pip_alike_and_fall_back_to_pip() {
    let uv = crate::common::python().parent().unwrap().join("uv");
    assert!(
        uv.exists(),
        "{} (tests/requirements.txt installs uv)",
        uv.display()
    );
    let run_with = |venvs: &std::path::Path, uv_setting: &str, extra: &[&str]| {
        let sb = Sandbox::new();
        let p = crate::common::pipeline("environments");
        let out = sb
            .cmd()
            .env("SWITCHYARD_VENV_DIR", venvs)
            .env("SWITCHYARD_UV", uv_setting)
            .args([
                "run",
                p.to_str().unwrap(),
                "-q",
                "--output",
                "json",
                "--no-cache",
            ])
            .args(extra)
            .output()
            .unwrap();
        let run: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert!(out.status.success(), "{run:#}");
        let t = task(&run, "with-package");
        let log = std::fs::read_to_string(t["log"].as_str().unwrap()).unwrap();
        (t["outputs"]["Output"].as_str().unwrap().to_string(), log)
    };
    let with_uv = tempfile::tempdir().unwrap();
    let (out_uv, log) = run_with(with_uv.path(), uv.to_str().unwrap(), &[]);
    assert!(
        log.contains("[switchyard] uv pip install six==1.16.0"),
        "{log}"
    );
    let with_pip = tempfile::tempdir().unwrap();
    let (out_pip, log) = run_with(with_pip.path(), "off", &[]);
    assert!(
        log.contains("[switchyard] pip install six==1.16.0"),
        "{log}"
    );
    // The same environment either way, under the same key.
    let strip = |out: &str, dir: &std::path::Path| {
        out.replace(dir.canonicalize().unwrap().to_str().unwrap(), "VENVS")
    };
    assert_eq!(
        strip(&out_uv, with_uv.path()),
        strip(&out_pip, with_pip.path())
    );
    assert!(out_uv.starts_with("1.16.0 "));
    // Built once: the next run builds nothing and needs no index.
    let (_, log) = run_with(with_uv.path(), uv.to_str().unwrap(), &[]);
    assert!(!log.contains("creating Python environment"), "{log}");
    // A uv that fails: pip builds the environment, and the log says why.
    let broken = tempfile::tempdir().unwrap();
    let (out, log) = run_with(broken.path(), "/bin/false", &[]);
    assert!(out.starts_with("1.16.0 "));
    assert!(
        log.contains("uv could not build it") && log.contains("building it with pip"),
        "{log}"
    );
}
