//! `s3://` channels against a real S3 API (the moto server on 127.0.0.1).

use crate::common::{repo_file, torch_python, Sandbox};
use crate::moto::Moto;

#[test]
#[ignore = "needs moto and PyTorch from scripts/setup (--torch)"]
fn s3_channels_are_downloaded_once_into_a_cache() {
    let moto = Moto::start();
    moto.put(
        "datasets",
        &[
            ("train/train.csv", "1,2\\n"),
            ("validation/validation.csv", "3,4\\n"),
            ("validation/extra/x.txt", "x"),
        ],
    );
    let sb = Sandbox::new();
    let job = |extra: &[&str]| {
        let mut c = sb.cmd();
        moto.env(&mut c);
        c.env("SWITCHYARD_TRAINING_PYTHON", torch_python());
        c.args(["job", "run", &repo_file("tests/jobs/contract.yaml"), "-q"])
            .args([
                "--set",
                "spec.channels.train=s3://datasets/train",
                "--set",
                "spec.channels.val-data=s3://datasets/validation/",
            ])
            .args(extra);
        c.output().unwrap()
    };
    let first = job(&[]);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    assert!(
        stderr.contains("channel train: s3://datasets/train — 1 downloaded (4 bytes), 0 cached"),
        "{stderr}"
    );
    assert!(
        stderr.contains("channel val-data: s3://datasets/validation/ — 2 downloaded"),
        "{stderr}"
    );
    let second = job(&[]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert!(
        stderr.contains("channel train: s3://datasets/train — 0 downloaded (0 bytes), 1 cached"),
        "{stderr}"
    );

    // A bucket that does not exist fails the job with S3's own error.
    let mut c = sb.cmd();
    moto.env(&mut c);
    c.env("SWITCHYARD_TRAINING_PYTHON", torch_python());
    let out = c
        .args([
            "job",
            "run",
            &repo_file("tests/jobs/contract.yaml"),
            "-q",
            "-o",
            "json",
            "--set",
            "spec.channels.train=s3://nope/train",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reason = v["failure_reason"].as_str().unwrap();
    assert!(
        reason.contains("spec.channels.train") && reason.contains("NoSuchBucket"),
        "{reason}"
    );
}

#[test]
#[ignore = "needs moto and PyTorch from scripts/setup (--torch)"]
fn models_and_checkpoints_go_to_s3() {
    let moto = Moto::start();
    moto.put("models", &[]);
    moto.put("ckpt", &[]);
    let sb = Sandbox::new();
    let run = || {
        let mut c = sb.cmd();
        moto.env(&mut c);
        c.env("SWITCHYARD_TRAINING_PYTHON", torch_python());
        c.args([
            "job",
            "run",
            &repo_file("tests/jobs/contract.yaml"),
            "-q",
            "-o",
            "json",
        ])
        .args([
            "--set",
            "spec.output=s3://models/contract",
            "--set",
            "spec.checkpoint=s3://ckpt/run-1",
        ]);
        c.output().unwrap()
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(v["model"], "s3://models/contract");
    assert_eq!(moto.keys("models"), vec!["contract/model.txt"]);
    let ckpt = moto.keys("ckpt");
    for r in 0..4 {
        assert!(ckpt.contains(&format!("run-1/rank-{r}.json")), "{ckpt:?}");
    }
    // A second job with the same checkpoint location starts from what was saved.
    let second = run();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert!(
        stderr.contains("checkpoint: 4 files restored from s3://ckpt/run-1"),
        "{stderr}"
    );
}
