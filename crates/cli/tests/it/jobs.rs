//! Training jobs on the local backend: the runtime contract on every rank, real
//! PyTorch DDP, restarts, failures, limits, cancel, admission, bad specs.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::common::{pid_alive, repo_file, wait_until, Sandbox};

fn contract() -> String {
    repo_file("tests/jobs/contract.yaml")
}
fn digits() -> String {
    repo_file("examples/ddp-digits/job.yaml")
}
fn sleeper() -> String {
    repo_file("tests/jobs/sleeper.yaml")
}

#[test]
#[ignore = "needs PyTorch (scripts/setup --torch)"]
fn the_contract_holds_on_every_rank() {
    let sb = Sandbox::new();
    let (code, job, stderr) = sb.job(&contract(), &[]);
    assert_eq!(code, 0, "{job:#}\n{stderr}");
    assert_eq!(job["state"], "SUCCEEDED");
    let dir = sb.job_dir(&job);
    // Every rank reached the shared checkpoint directory with a full environment.
    for rank in 0..4 {
        let seen: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("checkpoints/rank-{rank}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(seen["RANK"], rank.to_string());
        assert_eq!(seen["WORLD_SIZE"], "4");
        assert_eq!(seen["SM_CURRENT_HOST"], format!("algo-{}", rank / 2 + 1));
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("hosts/algo-1/model/model.txt")).unwrap(),
        "trained"
    );
    assert!(job["model"]
        .as_str()
        .unwrap()
        .ends_with("hosts/algo-1/model"));
    assert!(
        job["metrics"]["loss"].as_f64().is_some(),
        "metrics scraped from the logs: {job:#}"
    );
    // Logs: every rank's lines, prefixed, and one rank alone.
    let logs = sb.run(&["job", "logs", "contract-check"]);
    for r in 0..4 {
        assert!(
            logs.stdout
                .contains(&format!("/rank {r}] contract ok on rank {r} of 4")),
            "{}",
            logs.stdout
        );
    }
    let one = sb.run(&["job", "logs", "contract-check", "--rank", "2"]);
    assert_eq!(
        one.stdout.trim(),
        "contract ok on rank 2 of 4 (host algo-2) loss=0.2"
    );
    let got = sb.run(&[
        "job",
        "get",
        job["job_id"].as_str().unwrap(),
        "--output",
        "json",
    ]);
    let got = got.json();
    assert_eq!(got["state"], "SUCCEEDED");
    let states: Vec<&str> = got["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.first(), Some(&"PENDING"));
    assert_eq!(states.last(), Some(&"SUCCEEDED"));
}

#[test]
#[ignore = "needs the PyTorch venv with the SageMaker toolkit (scripts/setup --torch)"]
fn efs_channels_map_to_local_mounts() {
    let sb = Sandbox::new();
    let mount = sb.path("efs");
    std::fs::create_dir_all(format!("{mount}/datasets/train")).unwrap();
    std::fs::write(format!("{mount}/datasets/train/train.csv"), "1,2\n").unwrap();
    let set = "spec.channels.train=efs://fs-0123/datasets/train";
    // Unmapped: refused before anything starts, saying how to map it.
    let (code, _, stderr) = {
        let out = sb
            .cmd()
            .args(["job", "run", &contract(), "--set", set])
            .output()
            .unwrap();
        (
            out.status.code(),
            (),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("spec.channels.train") && stderr.contains("SWITCHYARD_EFS_MOUNTS=fs-0123="),
        "{stderr}"
    );
    assert_eq!(
        sb.run(&["job", "list", "--output", "json"]).json()["jobs"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    crate::common::success_stdout(
        sb.cmd()
            .env("SWITCHYARD_EFS_MOUNTS", format!("fs-0123={mount}"))
            .env("SWITCHYARD_TRAINING_PYTHON", crate::common::torch_python())
            .args(["job", "run", &contract(), "--set", set, "-q", "-o", "json"])
            .output()
            .unwrap(),
    );
}

#[test]
fn bad_specs_are_refused_naming_the_field() {
    let sb = Sandbox::new();
    let cases: &[(&[&str], &[&str])] = &[
        (&["--set", "spec.nodes=0"], &["spec.nodes", "at least 1"]),
        (&["--set", "spec.procsPerNode=0"], &["spec.procsPerNode"]),
        (
            &["--backend", "slurm"],
            &[
                "spec.backend",
                "unknown variant `slurm`",
                "`local`, `kubernetes`, `sagemaker`",
            ],
        ),
        (
            &["--set", "spec.entryPoint=missing.py"],
            &["spec.entryPoint", "'missing.py' does not exist"],
        ),
        (
            &["--set", "spec.entryPoint="],
            &["spec.entryPoint", "missing"],
        ),
        (
            &["--set", "spec.channels.train=./no/such/dir"],
            &["spec.channels.train", "does not exist"],
        ),
        (
            &["--set", "spec.channels.raw=ftp://x/y"],
            &["spec.channels.raw", "s3:// or efs://"],
        ),
        (
            &["--set", "spec.procPerNode=2"],
            &["spec", "unknown field `procPerNode`"],
        ),
        (
            &["--set", "spec.restartPolicy=Sometimes"],
            &["spec.restartPolicy", "`Never`, `OnFailure`, `ExitCode`"],
        ),
        (
            &["--set", "spec.metrics=[{name: loss, regex: 'loss='}]"],
            &["spec.metrics[0].regex", "capture group"],
        ),
        (
            &["--set", "metadata.name=Bad_Name"],
            &["metadata.name", "lowercase"],
        ),
        (
            &["--set", "spec.resources.cpu=64"],
            &["needs 128 CPUs", "this machine has"],
        ),
        (
            &["--backend", "kubernetes", "--set", "spec.image=x"],
            &["spec.channels.", "pods cannot read"],
        ),
        (&["--set", "spec"], &["--set", "PATH=VALUE"]),
    ];
    for (args, needles) in cases {
        let out = sb
            .cmd()
            .args(["job", "run", &contract()])
            .args(*args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        for n in *needles {
            assert!(stderr.contains(n), "{args:?}: expected '{n}' in: {stderr}");
        }
    }
    assert_eq!(
        sb.run(&["job", "list", "-o", "json"]).json()["jobs"]
            .as_array()
            .unwrap()
            .len(),
        0,
        "nothing recorded"
    );
    let r = sb.run(&["job", "run", "/no/such/job.yaml"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("cannot read TrainingJob file /no/such/job.yaml"),
        "{}",
        r.stderr
    );
}

fn params_digests(sb: &Sandbox, job: &Value) -> Vec<String> {
    let dir = sb.job_dir(job).join("hosts");
    let mut out = Vec::new();
    for host in std::fs::read_dir(&dir).unwrap() {
        let data = host.unwrap().path().join("output/data");
        for f in std::fs::read_dir(&data).unwrap() {
            out.push(std::fs::read_to_string(f.unwrap().path()).unwrap());
        }
    }
    out
}

#[test]
#[ignore = "needs PyTorch (scripts/setup --torch)"]
fn ddp_digits_two_nodes_and_two_processes() {
    let sb = Sandbox::new();
    // The same script under both SageMaker contracts.
    for (nodes, procs, contract) in [
        ("2", "1", "toolkit"),
        ("1", "2", "toolkit"),
        ("2", "1", "modeltrainer"),
    ] {
        let (code, job, stderr) = sb.job(
            &digits(),
            &[
                "--set",
                &format!("spec.nodes={nodes}"),
                "--set",
                &format!("spec.procsPerNode={procs}"),
                "--set",
                "spec.hyperparameters.epochs=8",
                "--set",
                &format!("spec.contract={contract}"),
            ],
        );
        assert_eq!(code, 0, "{nodes}x{procs}: {job:#}\n{stderr}");
        let acc = job["metrics"]["test_accuracy"].as_f64().unwrap();
        assert!(acc >= 0.9, "{nodes}x{procs}: accuracy {acc}");
        let digests = params_digests(&sb, &job);
        assert_eq!(digests.len(), 2, "{digests:?}");
        assert_eq!(
            digests[0], digests[1],
            "{nodes}x{procs}: parameters differ across ranks"
        );
        let model_dir = std::path::Path::new(job["model"].as_str().unwrap());
        assert!(model_dir.join("model.pt").is_file());
    }
}

/// `backend: auto` with no cluster and no SageMaker configured: `job place`
/// says why each candidate can or cannot run the job, `job run` goes to
/// the one that can and records why, and a job none can run is refused.
#[test]
#[ignore = "needs PyTorch (scripts/setup --torch)"]
fn an_auto_job_is_placed_where_it_can_run_and_says_why() {
    let sb = Sandbox::new();
    let no_cloud = [
        ("KUBECONFIG", "/nonexistent/kubeconfig".to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        (
            "SWITCHYARD_TRAINING_PYTHON",
            crate::common::torch_python().to_string_lossy().into_owned(),
        ),
    ];
    let out = sb.run_with(
        &no_cloud,
        &[
            "job",
            "place",
            &digits(),
            "--set",
            "spec.resources.cpu=0.5",
            "-o",
            "json",
        ],
    );
    let d = out.json();
    assert_eq!(d["chosen"], "local", "{d:#}");
    let reasons: Vec<String> = d["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}: {}",
                c["backend"].as_str().unwrap(),
                c["reason"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        reasons[0].starts_with("kubernetes: the cluster is not reachable"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].starts_with("sagemaker: spec.roleArn: missing"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].starts_with("local: can start now"),
        "{reasons:?}"
    );

    let out = sb.run_with(
        &no_cloud,
        &[
            "job",
            "run",
            &digits(),
            "--backend",
            "auto",
            "-q",
            "-o",
            "json",
            "--set",
            "spec.resources.cpu=0.5",
            "--set",
            "spec.hyperparameters.epochs=2",
        ],
    );
    let job = out.json();
    assert_eq!(
        (&job["state"], &job["backend"]),
        (&Value::from("SUCCEEDED"), &Value::from("local")),
        "{job:#}"
    );
    let got = sb
        .run(&["job", "get", job["job_id"].as_str().unwrap(), "-o", "json"])
        .json();
    assert!(
        crate::common::has_event(
            &got,
            "placement: placed on local",
            &["; kubernetes: the cluster is not reachable"]
        ),
        "{got:#}"
    );
    // The decision in the record's placement, with where the job ran.
    let p = &got["placement"];
    assert_eq!(
        (&p["chosen"], &p["objective"], &p["kind"]),
        (
            &Value::from("local"),
            &Value::from("time"),
            &Value::from("local")
        ),
        "{got:#}"
    );
    assert_eq!(p["candidates"].as_array().map(Vec::len), Some(3), "{got:#}");
    assert!(p["decided_at"].is_string(), "{got:#}");
    let text = sb
        .run(&["job", "get", job["job_id"].as_str().unwrap()])
        .stdout;
    assert!(text.contains("placed:   local (objective time)"), "{text}");
    // Recorded as a local job (what recovery reads back is a plain job).
    assert_eq!(got["spec"]["spec"]["backend"], "local");
    assert_eq!(got["spec"]["spec"]["placement"], Value::Null);
    // Its run is now its history there: the next decision estimates from it.
    let d = sb
        .run_with(
            &no_cloud,
            &[
                "job",
                "place",
                &digits(),
                "--set",
                "spec.resources.cpu=0.5",
                "-o",
                "json",
            ],
        )
        .json();
    let local = &d["candidates"][2];
    assert!(
        local["est_duration_seconds"]
            .as_f64()
            .is_some_and(|s| s > 0.0),
        "{d:#}"
    );
    assert!(
        local["reason"]
            .as_str()
            .is_some_and(|r| r.contains("its last 1 run here took")),
        "{d:#}"
    );

    // Nothing can run it: refused before anything is recorded, exit 2.
    let out = sb.run_with(
        &no_cloud,
        &[
            "job",
            "run",
            &digits(),
            "--backend",
            "auto",
            "--set",
            "spec.resources.cpu=64",
        ],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("spec.placement: no candidate can run this job (kubernetes: the cluster is not reachable"),
        "{}",
        out.stderr
    );
    let jobs = sb.run(&["job", "list", "-o", "json"]).json();
    assert_eq!(jobs["jobs"].as_array().map(Vec::len), Some(1), "{jobs:#}");
}

#[test]
#[ignore = "needs PyTorch (scripts/setup --torch)"]
fn a_killed_rank_restarts_the_gang_which_resumes_from_the_checkpoint() {
    // Under both contracts (ModelTrainer's has no SAGEMAKER_BASE_DIR: the
    // script finds <base>/checkpoints next to SM_MODEL_DIR).
    for contract in ["toolkit", "modeltrainer"] {
        killed_rank_resumes(contract);
    }
}

fn killed_rank_resumes(contract: &str) {
    let sb = Sandbox::new();
    let out = sb.path("model-out");
    let (code, job, stderr) = sb.job(
        &digits(),
        &[
            "--set",
            "spec.hyperparameters.epochs=4",
            "--set",
            "spec.hyperparameters.fail-at-epoch=1",
            "--set",
            "spec.hyperparameters.fail-code=137",
            "--set",
            &format!("spec.output={out}"),
            "--set",
            &format!("spec.contract={contract}"),
        ],
    );
    assert_eq!(code, 0, "{job:#}\n{stderr}");
    assert_eq!(job["restarts"], 1);
    assert_eq!(job["model"], Value::String(out.clone()));
    assert!(
        std::path::Path::new(&out).join("model.pt").is_file(),
        "model copied to spec.output"
    );
    let logs = sb.run(&[
        "job",
        "logs",
        job["job_id"].as_str().unwrap(),
        "--rank",
        "0",
    ]);
    assert!(
        logs.stdout.contains("resumed from checkpoint at epoch 1"),
        "{}",
        logs.stdout
    );
    let events = sb.run(&["job", "get", job["job_id"].as_str().unwrap()]);
    assert!(
        events
            .stdout
            .contains("restarting the gang (restart 1): rank 1 (algo-2) exited with code 137"),
        "{}",
        events.stdout
    );
}

#[test]
#[ignore = "needs PyTorch (scripts/setup --torch)"]
fn exit_code_one_fails_without_restart_with_the_failure_file_as_reason() {
    let sb = Sandbox::new();
    let (code, job, _) = sb.job(
        &digits(),
        &[
            "--set",
            "spec.hyperparameters.epochs=3",
            "--set",
            "spec.hyperparameters.fail-at-epoch=0",
            "--set",
            "spec.hyperparameters.fail-code=1",
            "--set",
            "spec.hyperparameters.fail-message=bad data in shard 3",
        ],
    );
    assert_eq!(code, 1);
    assert_eq!(job["state"], "FAILED");
    assert_eq!(job["restarts"], 0);
    assert!(
        job["failure_reason"]
            .as_str()
            .unwrap()
            .starts_with("bad data in shard 3"),
        "{job:#}"
    );
}

fn rank_pids(sb: &Sandbox) -> Vec<i32> {
    let jobs = sb.home.path().join("jobs");
    let mut pids = Vec::new();
    for j in std::fs::read_dir(jobs).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(j.path().join("checkpoints"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if f.file_name().to_string_lossy().starts_with("pid-") {
                if let Ok(p) = std::fs::read_to_string(f.path())
                    .unwrap_or_default()
                    .trim()
                    .parse()
                {
                    pids.push(p);
                }
            }
        }
    }
    pids
}

#[test]
fn max_runtime_stops_the_job() {
    let sb = Sandbox::new();
    let out = sb
        .cmd()
        .args([
            "job",
            "run",
            &sleeper(),
            "--set",
            "spec.maxRuntimeSeconds=2",
            "-q",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let job: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        job["failure_reason"]
            .as_str()
            .unwrap()
            .starts_with("MaxRuntimeExceeded"),
        "{job:#}"
    );
    let pids = rank_pids(&sb);
    assert_eq!(pids.len(), 2);
    for p in pids {
        assert!(!pid_alive(p), "rank process {p} left behind");
    }
}

#[test]
fn cancel_leaves_no_process_behind() {
    let sb = Sandbox::new();
    let child = sb
        .cmd()
        .args(["job", "run", &sleeper(), "-q", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("both ranks to start", Duration::from_secs(30), || {
        rank_pids(&sb).len() == 2
    });
    let pids = rank_pids(&sb);
    let r = sb.run(&["job", "cancel", "sleeper"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for p in pids {
        assert!(!pid_alive(p), "rank process {p} left behind");
    }
    assert_eq!(
        sb.run(&["job", "get", "sleeper", "-o", "json"]).json()["state"],
        "CANCELED"
    );
}

#[test]
fn ctrl_c_leaves_no_process_behind() {
    let sb = Sandbox::new();
    let child = sb
        .cmd()
        .args(["job", "run", &sleeper(), "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("both ranks to start", Duration::from_secs(30), || {
        rank_pids(&sb).len() == 2
    });
    let pids = rank_pids(&sb);
    assert!(std::process::Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    for p in pids {
        assert!(!pid_alive(p), "rank process {p} left behind");
    }
}

#[test]
fn a_job_waits_for_free_cpus_instead_of_oversubscribing() {
    let sb = Sandbox::new();
    let spawn = |name: &str| {
        sb.cmd()
            .env("SWITCHYARD_CPUS", "2")
            .args(["job", "run", &sleeper(), "-q", "-o", "json"])
            .args([
                "--set",
                &format!("metadata.name={name}"),
                "--set",
                "spec.resources.cpu=0.75",
                "--set",
                "spec.hyperparameters.seconds=1.5",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = spawn("first");
    wait_until("the first job to start", Duration::from_secs(30), || {
        rank_pids(&sb).len() == 2
    });
    let second = spawn("second");
    let a: Value = serde_json::from_slice(&first.wait_with_output().unwrap().stdout).unwrap();
    let out = second.wait_with_output().unwrap();
    let b: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(a["state"], "SUCCEEDED");
    assert_eq!(b["state"], "SUCCEEDED");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("queued: needs 1.5 CPUs"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    let waited = at(&b["started_at"]) - at(&a["started_at"]);
    assert!(
        waited >= chrono::Duration::milliseconds(1500),
        "the second job started {waited} after the first, before its ranks ended"
    );
}

pub fn compile_script(sb: &Sandbox, script: &str, out: &str) -> String {
    let path = sb.path(out);
    let st = std::process::Command::new(crate::common::python())
        .args(["-W", "ignore", &repo_file(script), &path])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    path
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn the_training_job_component_is_up_to_date() {
    let sb = Sandbox::new();
    let fresh = compile_script(
        &sb,
        "components/training-job/component.py",
        "component.yaml",
    );
    let committed =
        std::fs::read_to_string(repo_file("components/training-job/component.yaml")).unwrap();
    assert_eq!(
        std::fs::read_to_string(fresh).unwrap(),
        committed,
        "components/training-job/component.yaml is stale: run python components/training-job/component.py"
    );
}

#[test]
#[ignore = "needs PyTorch (scripts/setup --torch)"]
fn hybrid_pipeline_chooses_the_backend_at_run_time() {
    let sb = Sandbox::new();
    let pipeline = compile_script(&sb, "examples/hybrid/pipeline.py", "hybrid.yaml");
    let run = |runtime: &str, contract: &str| {
        let out = sb
            .cmd()
            .current_dir(crate::common::repo_root())
            .env("SWITCHYARD_TRAINING_PYTHON", crate::common::torch_python())
            // `auto` finds no cluster and no cloud here.
            .env("KUBECONFIG", "/nonexistent/kubeconfig")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .args([
                "run",
                &pipeline,
                "-q",
                "-o",
                "json",
                "-p",
                &format!("training_runtime={runtime}"),
                "-p",
                "epochs=6",
                "-p",
                &format!("contract={contract}"),
            ])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), v)
    };
    // The same pipeline with the script given the v3 SDK's contract.
    let (code, v) = run("local", "modeltrainer");
    assert_eq!(code, Some(0), "{v:#}");
    let t = crate::common::task(&v, "condition-branches-1/condition-2/training-job");
    let id = t["outputs"]["job_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let job = sb.run(&["job", "get", &id, "-o", "json"]).json();
    assert_eq!(job["spec"]["spec"]["contract"], "modeltrainer", "{job:#}");

    let (code, v) = run("local", "toolkit");
    assert_eq!(code, Some(0), "{v:#}");
    assert!(v["outputs"]["Output"].as_f64().unwrap() >= 0.9);
    let t = crate::common::task(&v, "condition-branches-1/condition-2/training-job");
    assert_eq!(t["outputs"]["state"], "SUCCEEDED");
    assert_eq!(t["outputs"]["backend_used"], "local");
    assert_eq!(t["outputs"]["job_name"], "digits-ddp");
    let model = t["outputs"]["model"]["uri"].as_str().unwrap();
    assert!(std::path::Path::new(model).join("model.pt").is_file());
    assert_eq!(t["outputs"]["model"]["metadata"]["backend"], "local");
    // The job is recorded in the same store as the run.
    let jobs = sb.run(&["job", "list", "-o", "json"]).json();
    assert_eq!(jobs["jobs"][0]["state"], "SUCCEEDED");

    let (code, v) = run("mainframe", "toolkit");
    assert_eq!(code, Some(1));
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("training_runtime must be local, kubernetes, sagemaker or auto"),
        "{v:#}"
    );
    // `auto` with no cluster and no SageMaker role here: placed on this machine.
    let (code, v) = run("auto", "toolkit");
    assert_eq!(code, Some(0), "{v:#}");
    let t = crate::common::task(&v, "condition-branches-1/condition-5/training-job-4");
    assert_eq!(t["outputs"]["backend_used"], "local", "{t:#}");
}

/// `switchyard server` on a free port of 127.0.0.1 with a token; killed when dropped.
struct TokenServer {
    child: std::process::Child,
    url: String,
    _home: tempfile::TempDir,
}

impl TokenServer {
    const TOKEN: &'static str = "step-token-0123456789";

    fn start(path_root: &std::path::Path) -> TokenServer {
        let home = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .env("SWITCHYARD_HOME", home.path())
            .env("SWITCHYARD_KILL_GRACE_SECONDS", "2")
            .args([
                "server",
                "--port",
                &port.to_string(),
                "--auth-token",
                Self::TOKEN,
            ])
            .arg("--path-root")
            .arg(path_root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start switchyard server");
        let s = TokenServer {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _home: home,
        };
        wait_until("the server answers", Duration::from_secs(30), || {
            ureq::get(format!("{}/apis/v2beta1/healthz", s.url))
                .call()
                .is_ok()
        });
        s
    }

    fn get(&self, path: &str) -> Value {
        ureq::get(format!("{}{path}", self.url))
            .header("Authorization", format!("Bearer {}", Self::TOKEN))
            .call()
            .expect("GET")
            .body_mut()
            .read_json()
            .expect("JSON")
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The executor input the engine gives the training-job component: a short
/// job whose rank 0 writes a model, and the files for its outputs.
fn step_input(sb: &Sandbox) -> String {
    let out = |name: &str| sb.path(&format!("outputs/{name}"));
    serde_json::json!({
        "inputs": {"parameterValues": {
            "name": "handed-over", "backend": "local", "nodes": 1.0, "procs_per_node": 1.0,
            "command": ["sh", "-c", "echo test_accuracy=0.97; mkdir -p \"$SM_MODEL_DIR\" && echo weights > \"$SM_MODEL_DIR/model.txt\""],
            "metrics": [{"name": "test_accuracy", "regex": "test_accuracy=([0-9.]+)"}],
        }},
        "outputs": {
            "parameters": {
                "job_id": {"outputFile": out("job_id")},
                "state": {"outputFile": out("state")},
                "backend_used": {"outputFile": out("backend_used")},
            },
            "artifacts": {"model": {"artifacts": [{"name": "model", "uri": sb.path("model")}]}},
            "outputFile": out("executor_output.json"),
        },
    })
    .to_string()
}

#[test]
fn a_step_given_a_server_hands_its_job_to_that_server() {
    let sb = Sandbox::new();
    let server = TokenServer::start(sb.work.path());
    let input = step_input(&sb);
    let out = sb
        .cmd()
        .env("SWITCHYARD_SERVER", &server.url)
        .env("SWITCHYARD_AUTH_TOKEN", TokenServer::TOKEN)
        .env("SWITCHYARD_RUN_ID", "run-1")
        .env("SWITCHYARD_TASK", "train")
        .current_dir(sb.work.path())
        .args(["job", "run-component", "--executor-input", &input])
        .output()
        .expect("run-component");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let job_id = std::fs::read_to_string(sb.path("outputs/job_id")).expect("job_id output");
    assert_eq!(
        std::fs::read_to_string(sb.path("outputs/state")).unwrap(),
        "SUCCEEDED"
    );
    // The rank's log reaches the step's log.
    assert!(stderr.contains("test_accuracy=0.97"), "{stderr}");
    // The job is the server's, labelled with the step's run and task ...
    let job = server.get(&format!("/apis/switchyard/v1/jobs/{job_id}"));
    assert_eq!(job["state"], "SUCCEEDED", "{job:#}");
    assert_eq!(
        job["spec"]["metadata"]["labels"]["switchyard.io/run-id"],
        "run-1"
    );
    assert_eq!(job["metrics"]["test_accuracy"], 0.97);
    // ... and not in the step's own data folder.
    let local = sb.run(&["job", "list", "--output", "json"]);
    assert_eq!(local.code, 0, "{}", local.stderr);
    assert!(!local.stdout.contains(&job_id), "{}", local.stdout);
    // The model came back to the step's artifact.
    assert_eq!(
        std::fs::read_to_string(sb.work.path().join("model/model.txt")).unwrap(),
        "weights\n"
    );
}

#[test]
fn a_step_says_why_the_server_would_not_take_its_job() {
    let sb = Sandbox::new();
    let server = TokenServer::start(sb.work.path());
    let input = step_input(&sb);
    let step = |url: &str, token: &str| {
        let out = sb
            .cmd()
            .env("SWITCHYARD_SERVER", url)
            .env("SWITCHYARD_AUTH_TOKEN", token)
            .env("SWITCHYARD_SUBMIT_PATIENCE_SECONDS", "2")
            .current_dir(sb.work.path())
            .args(["job", "run-component", "--executor-input", &input])
            .output()
            .expect("run-component");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let wrong_token = step(&server.url, "not-the-token");
    assert!(
        wrong_token.contains("refused the training job") && wrong_token.contains("401"),
        "{wrong_token}"
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    // (It keeps trying for SWITCHYARD_SUBMIT_PATIENCE_SECONDS, 2 s here, then says so.)
    let unreachable = step(&format!("http://127.0.0.1:{closed}"), "x");
    assert!(
        unreachable.contains("cannot reach the server at http://127.0.0.1"),
        "{unreachable}"
    );
    assert!(server.get("/apis/switchyard/v1/jobs")["jobs"]
        .as_array()
        .is_none_or(|j| j.is_empty()));
}
