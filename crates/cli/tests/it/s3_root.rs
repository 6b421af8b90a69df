//! `s3://` pipeline roots against a real S3 API (the moto server on
//! 127.0.0.1): artifacts go to S3 in KFP's layout, components see `s3://`
//! URIs with local paths, a task on a machine without the producer's files
//! reads them from S3, and caching checks S3, not the local disk.

use std::process::Command;

use serde_json::Value;

use crate::common::{pipeline, task, Sandbox};
use crate::moto::Moto;

fn run(sb: &Sandbox, moto: &Moto, name: &str, args: &[&str]) -> (i32, Value, String) {
    let mut c: Command = sb.cmd();
    moto.env(&mut c);
    let p = pipeline(name);
    c.args(["run", p.to_str().unwrap(), "--output", "json", "--quiet"])
        .args(args);
    let out = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let doc = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), doc, stderr)
}

#[test]
#[ignore = "needs the kfp SDK venv with moto (scripts/setup)"]
fn artifacts_of_an_s3_root_live_in_s3_and_are_staged_around_each_task() {
    let moto = Moto::start();
    moto.put("art", &[]);
    let sb = Sandbox::new();
    let root = ["--pipeline-root", "s3://art/root/"];

    let (code, first, err) = run(&sb, &moto, "s3_root", &root);
    assert_eq!(code, 0, "{first:#}\n{err}");
    let id = first["run_id"].as_str().unwrap().to_string();
    assert_eq!(first["pipeline_root"], "s3://art/root");
    let base = format!("s3://art/root/s3-root/{id}");
    assert_eq!(
        first["outputs"]["Output"],
        format!("v1:3{base}/copy/dst\n"),
        "the container component's .path and .uri placeholders"
    );
    assert_eq!(
        task(&first, "train")["outputs"]["Output"],
        format!("{base}/make-data/data|{base}/train/model|a.txt,b.txt|3"),
        "components see S3 URIs and read staged files and folders"
    );
    let reads: Vec<&Value> = ["read", "read-2"]
        .iter()
        .map(|k| &task(&first, k)["outputs"]["Output"])
        .collect();
    assert!(reads.contains(&&Value::from("moved")), "{reads:?}");
    let keys = moto.keys("art");
    for key in [
        "make-data/data",
        "make-data/folder/a.txt",
        "make-data/folder/b.txt",
        "train/model",
        "copy/dst",
        "elsewhere/out-custom",
    ] {
        let full = format!("root/s3-root/{id}/{key}");
        assert!(keys.contains(&full), "{full} not in {keys:?}");
    }

    // A root compiled into the pipeline is used when none is given, and
    // --pipeline-root overrides it.
    let (code, compiled, err) = run(&sb, &moto, "s3_compiled_root", &["--no-cache"]);
    assert_eq!(code, 0, "{compiled:#}\n{err}");
    assert_eq!(compiled["pipeline_root"], "s3://art/compiled");
    assert_eq!(compiled["outputs"]["Output"], "moved");
    let cid = compiled["run_id"].as_str().unwrap();
    assert!(moto.keys("art").contains(&format!(
        "compiled/s3-compiled-root/{cid}/elsewhere/out-custom"
    )));
    let local = sb.path("local-root");
    let (code, overridden, err) = run(
        &sb,
        &moto,
        "s3_compiled_root",
        &["--pipeline-root", &local, "--no-cache"],
    );
    assert_eq!(code, 0, "{overridden:#}\n{err}");
    assert_eq!(overridden["outputs"]["Output"], "moved");
    assert!(overridden["pipeline_root"]
        .as_str()
        .unwrap()
        .ends_with("local-root"));

    // Another machine: nothing of the first run on disk. The producer's
    // result is reused from the cache (its artifacts are in S3), and the
    // consumer reads them from there.
    std::fs::remove_dir_all(sb.home.path().join("artifacts")).unwrap();
    let (code, second, err) = run(
        &sb,
        &moto,
        "s3_root",
        &[&root[..], &["-p", "tag=v2"]].concat(),
    );
    assert_eq!(code, 0, "{second:#}\n{err}");
    assert_eq!(task(&second, "make-data")["cached"], true);
    assert_eq!(task(&second, "train")["cached"], false);
    let id2 = second["run_id"].as_str().unwrap();
    assert_eq!(
        second["outputs"]["Output"],
        format!("v2:3s3://art/root/s3-root/{id2}/copy/dst\n")
    );

    // A cached result whose objects are gone from S3 is not reused.
    moto.boto3(&format!(
        "for o in s3.list_objects_v2(Bucket='art', Prefix='root/s3-root/{id}/make-data/')['Contents']: s3.delete_object(Bucket='art', Key=o['Key'])\n"
    ));
    let (code, third, err) = run(
        &sb,
        &moto,
        "s3_root",
        &[&root[..], &["-p", "tag=v3"]].concat(),
    );
    assert_eq!(code, 0, "{third:#}\n{err}");
    assert_eq!(task(&third, "make-data")["cached"], false);
    assert_eq!(
        task(&third, "train")["outputs"]["Output"]
            .as_str()
            .unwrap()
            .split('|')
            .nth(3),
        Some("3")
    );
}

#[test]
#[ignore = "needs the kfp SDK venv with moto (scripts/setup)"]
fn s3_artifacts_are_read_in_a_local_root_run_and_bad_roots_are_refused() {
    let moto = Moto::start();
    moto.put("inputs", &[("raw/data.txt", "raw rows")]);
    let sb = Sandbox::new();
    let (code, run_doc, err) = run(&sb, &moto, "s3_import", &[]);
    assert_eq!(code, 0, "{run_doc:#}\n{err}");
    assert_eq!(run_doc["outputs"]["Output"], "raw rows");

    // An object that is not there fails the consumer, naming it.
    let (code, run_doc, _) = run(
        &sb,
        &moto,
        "s3_import",
        &["-p", "uri=s3://inputs/raw/missing.txt"],
    );
    assert_eq!(code, 1, "{run_doc:#}");
    let error = run_doc["error"].as_str().unwrap();
    assert!(
        error.contains("input artifact 'model'")
            && error.contains("nothing is stored at s3://inputs/raw/missing.txt"),
        "{error}"
    );

    // A bucket that does not exist: the producer fails with S3's own error.
    let (code, run_doc, _) = run(
        &sb,
        &moto,
        "s3_root",
        &["--pipeline-root", "s3://no-such-bucket/x"],
    );
    assert_eq!(code, 1, "{run_doc:#}");
    let error = run_doc["error"].as_str().unwrap();
    assert!(
        error.contains("s3://no-such-bucket/x/s3-root/") && error.contains("NoSuchBucket"),
        "{error}"
    );

    for (root, says) in [
        (
            "gs://b/p",
            "gs:// is not supported; use a local folder or s3://bucket/prefix",
        ),
        ("s3://", "name a bucket"),
    ] {
        let (code, _, err) = run(&sb, &moto, "s3_import", &["--pipeline-root", root]);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains("--pipeline-root") && err.contains(says),
            "{err}"
        );
    }
}
