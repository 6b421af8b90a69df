//! Artifacts between tasks, with metadata, lists and the on-disk layout.

use serde_json::Value;

use crate::common::{task, Sandbox};

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn artifacts_flow_with_metadata_and_layout() {
    let sb = Sandbox::new();
    let root = sb.path("root");
    let (code, run) = sb.run_pipeline(
        "artifact_passing",
        &["-p", "rows=4", "--pipeline-root", &root],
    );
    assert_eq!(code, 0, "{run:#}");
    assert_eq!(
        run["outputs"]["Output"],
        "model trained on 4 rows; framework=none; acc=0.9"
    );
    let id = run["run_id"].as_str().unwrap();
    let base = std::path::Path::new(&root)
        .canonicalize()
        .unwrap()
        .join("artifact-passing")
        .join(id);
    assert_eq!(
        std::fs::read_to_string(base.join("make-data/data"))
            .unwrap()
            .lines()
            .count(),
        4
    );
    assert!(base.join("train/model").is_file());
    assert!(
        base.join("train/extra/part-0").is_file(),
        "a directory artifact"
    );
    // Metadata written by components is recorded with the artifact.
    let data = &task(&run, "make-data")["outputs"]["data"];
    assert_eq!(data["metadata"]["rows"].as_f64(), Some(4.0));
    assert_eq!(
        data["uri"],
        Value::String(base.join("make-data/data").to_string_lossy().into_owned())
    );
    let model = &task(&run, "train")["outputs"]["model"];
    assert_eq!(model["metadata"]["framework"], "none");
    assert_eq!(
        task(&run, "train")["outputs"]["metrics"]["metadata"]["accuracy"].as_f64(),
        Some(0.9)
    );
    // A list of artifacts collected from a loop.
    assert_eq!(task(&run, "merge")["outputs"]["Output"], Value::from(6));
    for i in 0..3 {
        assert!(base.join(format!("for-loop-2.{i}.shard/part")).is_file());
    }
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn importer_brings_in_an_existing_file() {
    let sb = Sandbox::new();
    let f = sb.path("existing.csv");
    std::fs::write(&f, "a\nb\nc\n").unwrap();
    let (code, run) = sb.run_pipeline("import_existing", &["-p", &format!("uri={f}")]);
    assert_eq!(code, 0, "{run:#}");
    assert_eq!(run["outputs"]["Output"], "3 lab");
    assert_eq!(
        task(&run, "importer")["outputs"]["artifact"]["uri"],
        Value::String(f)
    );
}
