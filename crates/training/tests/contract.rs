//! The TrainingJob's validation and the runtime contract, without running
//! anything: every refusal names its field, and every rank of a gang gets
//! torchrun's variables and the SageMaker toolkit's, consistently. (The
//! contract test in the pipeline suite compares these with the real
//! `sagemaker_training` in real ranks.)

use std::path::Path;

use switchyard_training::contract::{self, HostLayout, Placement};
use switchyard_training::{load, JobSpecError, TrainingJob};

fn doc(spec: &str) -> String {
    format!(
        "apiVersion: switchyard/v1\nkind: TrainingJob\nmetadata: {{name: digits}}\nspec:\n{spec}"
    )
}

fn job(dir: &Path, spec: &str) -> Result<TrainingJob, JobSpecError> {
    load(&doc(spec), dir, &[], None)
}

fn refusal(dir: &Path, spec: &str) -> (String, String) {
    match job(dir, spec) {
        Err(JobSpecError::Invalid { field, message }) => (field, message),
        other => panic!("expected a refusal of\n{spec}\ngot {other:?}"),
    }
}

#[test]
fn bad_jobs_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::create_dir_all(dir.path().join("code")).expect("code");
    std::fs::write(dir.path().join("code/train.py"), "print(1)").expect("script");
    // (spec lines, field named, words of the message)
    let table = [
        (
            "  procPerNode: 2\n  command: [python3]\n",
            "spec",
            "procPerNode",
        ),
        (
            "  nodes: 0\n  command: [python3]\n",
            "spec.nodes",
            "at least 1",
        ),
        (
            "  procsPerNode: 0\n  command: [python3]\n",
            "spec.procsPerNode",
            "at least 1",
        ),
        ("  sourceDir: code\n", "spec.entryPoint", "missing"),
        (
            "  sourceDir: code\n  entryPoint: nope.py\n",
            "spec.entryPoint",
            "does not exist",
        ),
        (
            "  sourceDir: code\n  entryPoint: ../train.py\n",
            "spec.entryPoint",
            "inside sourceDir",
        ),
        (
            "  sourceDir: nowhere\n  entryPoint: train.py\n",
            "spec.sourceDir",
            "not a directory",
        ),
        (
            "  entryPoint: train.py\n",
            "spec.sourceDir",
            "required with entryPoint",
        ),
        ("  command: []\n", "spec.command", "must not be empty"),
        (
            "  backend: sagemaker\n  command: [python3]\n",
            "spec.image",
            "required for the sagemaker backend",
        ),
        (
            "  command: [python3]\n  resources: {memory: lots}\n",
            "spec.resources.memory",
            "quantity",
        ),
        (
            "  command: [python3]\n  maxRuntimeSeconds: 0\n",
            "spec.maxRuntimeSeconds",
            "positive",
        ),
        (
            "  command: [python3]\n  useSpotInstances: true\n",
            "spec.maxWaitSeconds",
            "required",
        ),
        (
            "  command: [python3]\n  inputMode: Stream\n",
            "spec.inputMode",
            "File, FastFile or Pipe",
        ),
        (
            "  command: [python3]\n  restartPolicy: Sometimes\n",
            "spec.restartPolicy",
            "Sometimes",
        ),
        (
            "  command: [python3]\n  metrics: [{name: acc, regex: '('}]\n",
            "spec.metrics[0].regex",
            "",
        ),
        (
            "  command: [python3]\n  channels: {'bad name': /tmp}\n",
            "spec.channels.bad name",
            "letters",
        ),
    ];
    for (spec, field, words) in table {
        let (got_field, message) = refusal(dir.path(), spec);
        assert!(
            got_field.starts_with(field) && format!("{got_field}: {message}").contains(words),
            "{spec}\n→ {got_field}: {message}\n(want {field} with '{words}')"
        );
    }
    let (field, message) = match load(
        "apiVersion: switchyard/v2\nkind: TrainingJob\nmetadata: {name: x}\nspec: {command: [a]}\n",
        dir.path(),
        &[],
        None,
    ) {
        Err(JobSpecError::Invalid { field, message }) => (field, message),
        other => panic!("{other:?}"),
    };
    assert_eq!(field, "apiVersion");
    assert!(message.contains("switchyard/v1"), "{message}");
    let bad_name = load(
        "apiVersion: switchyard/v1\nkind: TrainingJob\nmetadata: {name: Digits_1}\nspec: {command: [a]}\n",
        dir.path(),
        &[],
        None,
    );
    assert!(
        matches!(&bad_name, Err(JobSpecError::Invalid { field, .. }) if field == "metadata.name"),
        "{bad_name:?}"
    );
    assert!(matches!(
        load("spec: [", dir.path(), &[], None),
        Err(JobSpecError::Yaml(_))
    ));
    // What is valid resolves paths against the file's folder.
    let ok = job(
        dir.path(),
        "  sourceDir: code\n  entryPoint: train.py\n  nodes: 2\n",
    )
    .expect("valid");
    assert_eq!(
        ok.spec.source_dir.as_deref(),
        Some(dir.path().join("code").to_string_lossy().as_ref())
    );
    assert_eq!(ok.world_size(), 2);
}

fn placement(node: u32, local_rank: u32) -> Placement {
    Placement {
        node,
        local_rank,
        master_addr: "127.0.0.1".into(),
        master_port: 29500,
        num_cpus: 4,
        num_gpus: 0,
        instance_type: "local".into(),
        code_dir: None,
        run_id: "job-0".into(),
    }
}

#[test]
fn every_rank_sees_torchrun_and_sagemaker_alike() {
    let dir = tempfile::tempdir().expect("dir");
    let j = job(
        dir.path(),
        "  command: [python3, train.py]\n  nodes: 2\n  procsPerNode: 2\n  hyperparameters: {epochs: 3, lr: 0.1}\n  env: {WORLD_SIZE: '99', EXTRA: x}\n",
    )
    .expect("valid");
    let layout = HostLayout::new(dir.path().join("hosts/algo-2"));
    let env = contract::rank_env(&j, &layout, &placement(1, 1));
    let get = |k: &str| {
        env.get(k)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{k} missing"))
    };
    // torchrun's half: rank = node × procs + local.
    assert_eq!(get("RANK"), "3");
    assert_eq!(get("LOCAL_RANK"), "1");
    assert_eq!(get("NODE_RANK"), "1");
    assert_eq!(get("GROUP_WORLD_SIZE"), "2");
    assert_eq!(get("LOCAL_WORLD_SIZE"), "2");
    assert_eq!(get("MASTER_ADDR"), "127.0.0.1");
    assert_eq!(get("MASTER_PORT"), "29500");
    assert_eq!(get("OMP_NUM_THREADS"), "1", "several processes per host");
    // The job's own env wins over the contract.
    assert_eq!(get("WORLD_SIZE"), "99");
    assert_eq!(get("EXTRA"), "x");
    // SageMaker's half, as the toolkit spells it.
    assert_eq!(get("SM_CURRENT_HOST"), "algo-2");
    assert_eq!(get("SM_HOSTS"), r#"["algo-1","algo-2"]"#);
    assert_eq!(
        get("SM_MODEL_DIR"),
        layout.model_dir().to_string_lossy().as_ref()
    );
    let hps: serde_json::Value = serde_json::from_str(get("SM_HPS")).expect("SM_HPS is JSON");
    assert_eq!(hps["epochs"], 3);
    assert_eq!(
        contract::user_args(&j),
        ["--epochs", "3", "--lr", "0.1"],
        "hyperparameters become the script's arguments"
    );
    // Every rank of the gang: distinct ranks 0..world, hosts by node.
    let ranks: Vec<(String, String)> = switchyard_training::slots::slots(2, 2)
        .map(|s| {
            let e = contract::rank_env(&j, &layout, &placement(s.node, s.local_rank));
            (e["RANK"].clone(), s.host())
        })
        .collect();
    assert_eq!(
        ranks,
        [
            ("0", "algo-1"),
            ("1", "algo-1"),
            ("2", "algo-2"),
            ("3", "algo-2")
        ]
        .map(|(r, h)| (r.to_string(), h.to_string()))
    );
}
