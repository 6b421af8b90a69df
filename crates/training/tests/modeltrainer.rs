//! `contract: modeltrainer` without running anything: what ModelTrainer's
//! drivers would compute, spelled as they spell it (the expected texts are
//! what CPython and `sagemaker-train` 1.27 produce for the same job; the
//! side-by-side harness in tests/modeltrainer compares whole processes), and
//! the jobs it refuses.

use std::path::Path;

use switchyard_training::contract::{self, HostLayout, Placement};
use switchyard_training::modeltrainer::{self, Launch};
use switchyard_training::{load, JobSpecError, TrainingJob};

fn job(dir: &Path, spec: &str) -> Result<TrainingJob, JobSpecError> {
    let text = format!(
        "apiVersion: switchyard/v1\nkind: TrainingJob\nmetadata: {{name: mt}}\nspec:\n  contract: modeltrainer\n{spec}"
    );
    load(&text, dir, &[], None)
}

fn code() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::create_dir_all(dir.path().join("src")).expect("src");
    for f in ["train.py", "run.sh", "requirements.txt"] {
        std::fs::write(dir.path().join("src").join(f), "").expect("file");
    }
    dir
}

const AWKWARD: &str = "  hyperparameters: {epochs: 3, e: 1, lr: 1e-05, learning-rate: 0.1, flag: 'true', n: '7', amp: true, opts: {b: 2, a: x}, layers: [64, 32], names: [a, b], nothing: null, text: hello world, version: '1.10', zero-padded: '007'}\n";

#[test]
fn hyperparameters_travel_decode_and_become_arguments_as_modeltrainer_makes_them() {
    let dir = code();
    let j = job(
        dir.path(),
        &format!("  sourceDir: src\n  entryPoint: train.py\n{AWKWARD}"),
    )
    .expect("job");
    let sent: Vec<(String, String)> = modeltrainer::encoded_hyperparameters(&j);
    let sent: Vec<(&str, &str)> = sent.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        sent,
        [
            ("epochs", "3"),
            ("e", "1"),
            ("lr", "1e-05"),
            ("learning-rate", "0.1"),
            ("flag", "true"),
            ("n", "7"),
            ("amp", "true"),
            ("opts", "{\"b\": 2, \"a\": \"x\"}"),
            ("layers", "[64, 32]"),
            ("names", "[\"a\", \"b\"]"),
            ("nothing", "null"),
            ("text", "hello world"),
            ("version", "1.10"),
            ("zero-padded", "007"),
        ]
    );
    // json.loads where it parses: "7" is 7, "true" is True, "1.10" is 1.1,
    // "007" and "hello world" stay strings.
    assert_eq!(
        contract::user_args(&j),
        [
            "--epochs",
            "3",
            "--e",
            "1",
            "--lr",
            "1e-05",
            "--learning-rate",
            "0.1",
            "--flag",
            "true",
            "--n",
            "7",
            "--amp",
            "true",
            "--opts",
            "{\"b\": 2, \"a\": \"x\"}",
            "--layers",
            "[64, 32]",
            "--names",
            "[\"a\", \"b\"]",
            "--nothing",
            "null",
            "--text",
            "hello world",
            "--version",
            "1.1",
            "--zero-padded",
            "007"
        ]
    );
    let layout = HostLayout::new("/opt/ml");
    let env = contract::rank_env(&j, &layout, &placement(0));
    assert_eq!(
        env["SM_HPS"],
        "{\"epochs\": 3, \"e\": 1, \"lr\": 1e-05, \"learning-rate\": 0.1, \"flag\": true, \"n\": 7, \"amp\": true, \"opts\": {\"b\": 2, \"a\": \"x\"}, \"layers\": [64, 32], \"names\": [\"a\", \"b\"], \"nothing\": null, \"text\": \"hello world\", \"version\": 1.1, \"zero-padded\": \"007\"}"
    );
    assert_eq!(env["SM_HP_LEARNING_RATE"], "0.1");
    assert_eq!(env["SM_HP_FLAG"], "true");
    assert_eq!(env["SM_HP_ZERO_PADDED"], "007");
    assert_eq!(env["SM_HP_NOTHING"], "null");
    assert!(!env.contains_key("SM_HP_LEARNING-RATE"));
}

fn placement(node: u32) -> Placement {
    Placement {
        node,
        local_rank: 0,
        master_addr: "127.0.0.1".into(),
        master_port: 29511,
        num_cpus: 8,
        num_gpus: 0,
        instance_type: "ml.c5.xlarge".into(),
        code_dir: None,
        run_id: "run-0".into(),
    }
}

#[test]
fn one_process_runs_as_the_basic_driver_and_more_under_torchrun() {
    let dir = code();
    let one = job(dir.path(), "  sourceDir: src\n  entryPoint: train.py\n").expect("1x1");
    assert_eq!(
        modeltrainer::launch(&one),
        Launch::Script { entry: "train.py" }
    );
    let layout = HostLayout::new("/opt/ml");
    let env = contract::rank_env(&one, &layout, &placement(0));
    for absent in [
        "RANK",
        "MASTER_ADDR",
        "SM_DISTRIBUTED_CONFIG",
        "NCCL_PROTO",
        "PET_NNODES",
    ] {
        assert!(!env.contains_key(absent), "{absent} in a 1 x 1 job");
    }
    assert_eq!(env["SM_ENTRY_SCRIPT"], "train.py");
    assert_eq!(env["SM_SOURCE_DIR"], "/opt/ml/input/data/code");
    assert_eq!(env["SM_CHANNELS"], "[\"code\", \"sm_drivers\"]");
    assert_eq!(env["TRAINING_JOB_NAME"], "mt");

    let gang = job(
        dir.path(),
        "  sourceDir: src\n  entryPoint: train.py\n  nodes: 2\n  procsPerNode: 2\n",
    )
    .expect("2x2");
    assert_eq!(
        modeltrainer::launch(&gang),
        Launch::Torchrun {
            entry: "train.py",
            procs: 2
        }
    );
    let mut p = placement(1);
    p.local_rank = 1;
    let env = contract::rank_env(&gang, &layout, &p);
    assert_eq!(env["RANK"], "3");
    assert_eq!(env["SM_CURRENT_HOST_RANK"], "1");
    assert_eq!(env["SM_HOST_COUNT"], "2");
    assert_eq!(env["TORCHELASTIC_RUN_ID"], "none");
    assert_eq!(env["SM_MASTER_ADDR"], env["MASTER_ADDR"]);
    assert_eq!(env["SM_MASTER_PORT"], env["MASTER_PORT"]);
    assert_eq!(env["NCCL_PROTO"], "simple");
    assert_eq!(
        env["SM_DISTRIBUTED_CONFIG"],
        "{\"process_count_per_node\": 2, \"smp\": null}"
    );
    assert!(!env.contains_key("TORCHELASTIC_USE_AGENT_STORE"));
    assert_eq!(
        contract::process_argv(&gang, "python3").expect("argv")[..3],
        ["python3", "-u", "train.py"]
    );
}

#[test]
fn host_ranks_follow_the_host_names_sorted_as_text() {
    // As the drivers compute SM_CURRENT_HOST_RANK: algo-10 sorts before algo-2.
    let ranks: Vec<u32> = (0..12).map(|n| modeltrainer::host_rank(n, 12)).collect();
    assert_eq!(ranks, [0, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2, 3]);
}

#[test]
fn what_modeltrainer_cannot_run_is_refused_naming_the_field() {
    let dir = code();
    let base = "  sourceDir: src\n  entryPoint: train.py\n";
    let table = [
        (
            format!("{base}  channels: {{code: /tmp}}\n"),
            "spec.channels.code",
            "keeps for itself",
        ),
        (
            format!("{base}  channels: {{val-data: /tmp}}\n"),
            "spec.channels.val-data",
            "'-'",
        ),
        (
            format!("{base}  hyperparameters: {{a.b: 1}}\n"),
            "spec.hyperparameters.a.b",
            "letters",
        ),
        (
            "  sourceDir: src\n  entryPoint: run.sh\n  nodes: 2\n".into(),
            "spec.entryPoint",
            "torchrun",
        ),
        (
            "  sourceDir: src\n  command: [python3, train.py]\n  procsPerNode: 2\n".into(),
            "spec.procsPerNode",
            "once per host",
        ),
        (
            format!("{base}  requirements: missing.txt\n"),
            "spec.requirements",
            "not a file",
        ),
        (
            format!("{base}  requirements: ../x.txt\n"),
            "spec.requirements",
            "not a file",
        ),
    ];
    for (spec, field, words) in table {
        match job(dir.path(), &spec) {
            Err(JobSpecError::Invalid { field: f, message }) => {
                assert_eq!(f, field, "{spec}");
                assert!(message.contains(words), "{spec}: {message}");
            }
            other => panic!("{spec}: expected a refusal, got {other:?}"),
        }
    }
    // `requirements` belongs to this contract only.
    let text = "apiVersion: switchyard/v1\nkind: TrainingJob\nmetadata: {name: t}\nspec:\n  sourceDir: src\n  entryPoint: train.py\n  requirements: requirements.txt\n";
    match load(text, dir.path(), &[], None) {
        Err(JobSpecError::Invalid { field, .. }) => assert_eq!(field, "spec.requirements"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // A .sh script on one process is fine, and so is a requirements file.
    job(
        dir.path(),
        "  sourceDir: src\n  entryPoint: run.sh\n  requirements: requirements.txt\n",
    )
    .expect("a shell script on one process");
}

#[test]
fn the_drivers_second_decoding_and_values_json_cannot_carry() {
    let dir = code();
    // A string holding JSON text is read again for the arguments (not for SM_HPS).
    let j = job(
        dir.path(),
        "  sourceDir: src\n  entryPoint: train.py\n  hyperparameters: {x: '\"1.50\"', z: '-0'}\n",
    )
    .expect("job");
    assert_eq!(contract::user_args(&j), ["--x", "1.5", "--z", "0"]);
    let env = contract::rank_env(&j, &HostLayout::new("/opt/ml"), &placement(0));
    assert_eq!(env["SM_HPS"], "{\"x\": \"1.50\", \"z\": 0}");
    // What json.loads reads but JSON cannot carry is refused, naming the field.
    for (value, words) in [
        ("NaN", "NaN or infinity"),
        ("'[1, Infinity]'", "NaN or infinity"),
        ("'123456789012345678901234567890'", "beyond 64 bits"),
        ("'1e999'", "infinite"),
        ("'\"NaN\"'", "NaN or infinity"),
    ] {
        let spec = format!(
            "  sourceDir: src\n  entryPoint: train.py\n  hyperparameters: {{v: {value}}}\n"
        );
        match job(dir.path(), &spec) {
            Err(JobSpecError::Invalid { field, message }) => {
                assert_eq!(field, "spec.hyperparameters.v", "{value}");
                assert!(message.contains(words), "{value}: {message}");
            }
            other => panic!("{value}: expected a refusal, got {other:?}"),
        }
    }
}

#[test]
fn the_drivers_variables_win_over_the_jobs_env_but_the_log_level_is_read_from_it() {
    let dir = code();
    let j = job(
        dir.path(),
        "  sourceDir: src\n  entryPoint: train.py\n  nodes: 2\n  env: {SM_MODEL_DIR: /elsewhere, NCCL_PROTO: LL, SM_LOG_LEVEL: '10', OWN: x}\n",
    )
    .expect("job");
    let env = contract::rank_env(&j, &HostLayout::new("/opt/ml"), &placement(0));
    assert_eq!(env["SM_MODEL_DIR"], "/opt/ml/model");
    assert_eq!(env["NCCL_PROTO"], "simple");
    assert_eq!(env["OWN"], "x");
    assert_eq!(env["SM_LOG_LEVEL"], "10");
    assert!(env["SM_TRAINING_ENV"].contains("\"log_level\": \"10\""));
}

#[test]
fn a_command_is_one_shell_line_and_the_code_leaves_out_what_modeltrainer_does() {
    let dir = code();
    let j = job(
        dir.path(),
        "  sourceDir: src\n  command: [torchrun, --nproc_per_node, $SM_NUM_GPUS, train.py]\n",
    )
    .expect("job");
    assert_eq!(
        contract::process_argv(&j, "python3").expect("argv"),
        [
            "/bin/bash",
            "-c",
            "torchrun --nproc_per_node $SM_NUM_GPUS train.py"
        ]
    );
    let env = contract::rank_env(&j, &HostLayout::new("/opt/ml"), &placement(0));
    assert_eq!(env["SM_ENTRY_SCRIPT"], "null");
    for hidden in [".env", ".cache/x", "sub/.DS_Store"] {
        let p = dir.path().join("src").join(hidden);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
        std::fs::write(p, "secret").expect("file");
    }
    let files: Vec<String> = switchyard_training::code_files(&j, &dir.path().join("src"))
        .expect("files")
        .into_iter()
        .map(|f| f.rel)
        .collect();
    assert_eq!(files, ["requirements.txt", "run.sh", "train.py"]);
}
