//! Control flow: conditions, OneOf, loops, Collected, exit handlers, nesting.

use serde_json::{json, Value};

use crate::common::{task, Sandbox};

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn if_elif_else_and_one_of() {
    let sb = Sandbox::new();
    for (side, n, expected) in [
        ("heads", "7", "took-heads"),
        ("tails", "9", "tails-big"),
        ("tails", "2", "tails-small"),
    ] {
        let (code, run) = sb.run_pipeline(
            "conditions",
            &["-p", &format!("side={side}"), "-p", &format!("n={n}")],
        );
        assert_eq!(code, 0, "{run:#}");
        assert_eq!(run["outputs"]["Output"], expected, "side={side} n={n}");
    }
    // Nested condition inside the taken branch.
    let (_, run) = sb.run_pipeline(
        "conditions",
        &["-p", "side=heads", "-p", "n=2", "--no-cache"],
    );
    let states: Vec<(String, String)> = run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["key"].as_str().unwrap().to_string(),
                t["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let find = |suffix: &str| {
        states
            .iter()
            .find(|(k, _)| k.ends_with(suffix))
            .map(|(_, s)| s.clone())
    };
    assert_eq!(find("condition-3"), Some("SKIPPED".into()), "{states:?}");
    assert_eq!(find("condition-4"), Some("SUCCEEDED".into()), "{states:?}");
    assert_eq!(
        find("condition-6"),
        Some("SKIPPED".into()),
        "elif not taken: {states:?}"
    );
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn parallel_for_over_every_source() {
    let sb = Sandbox::new();
    let (code, run) = sb.run_pipeline("loops", &[]);
    assert_eq!(code, 0, "{run:#}");
    assert_eq!(
        run["outputs"]["Output"],
        json!({"raw": 6, "param": 11, "output": 3, "struct": 10, "output_struct": 33})
    );
    // A body that reads the whole list gets it in every iteration (the engine
    // leaves the list out only of bodies that do not name it).
    assert_eq!(item_plus_whole(&run), vec![7, 8]);
    // Overrides of the loop's list parameters.
    let (code, run) = sb.run_pipeline(
        "loops",
        &[
            "-p",
            "items=[1,2,3,4]",
            "-p",
            "raw_n=5",
            "-p",
            r#"records=[{"a": 5, "b": 5}]"#,
        ],
    );
    assert_eq!(code, 0, "{run:#}");
    assert_eq!(
        run["outputs"]["Output"],
        json!({"raw": 6, "param": 10, "output": 10, "struct": 10, "output_struct": 33})
    );
    assert_eq!(item_plus_whole(&run), vec![5, 6, 7, 8]);
    // Nested loops: 2 x 2 iterations, each with its own key.
    let nested: Vec<&Value> = run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"] == "add-4" && t["kind"] == "container")
        .collect();
    assert_eq!(nested.len(), 4, "{:#}", run["tasks"]);
    let mut sums: Vec<i64> = nested
        .iter()
        .map(|t| t["outputs"]["Output"].as_i64().unwrap())
        .collect();
    sums.sort();
    assert_eq!(sums, vec![11, 12, 21, 22]);
}

/// Outputs of the loop body task that adds each item to the list's length.
fn item_plus_whole(run: &Value) -> Vec<i64> {
    let mut v: Vec<i64> = run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"] == "item-plus-whole")
        .map(|t| t["outputs"]["Output"].as_i64().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn exit_handler_runs_after_failure_with_final_status() {
    let sb = Sandbox::new();
    let (code, run) = sb.run_pipeline("exit_handler", &[]);
    assert_eq!(code, 1);
    assert_eq!(run["state"], "FAILED");
    let report = task(&run, "report");
    assert_eq!(report["state"], "SUCCEEDED");
    assert_eq!(report["outputs"]["Output"], "FAILED");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("exit-handler-1/condition-2/fail"),
        "{}",
        run["error"]
    );

    let (code, run) = sb.run_pipeline("exit_handler", &["-p", "should_fail=false"]);
    assert_eq!(code, 0, "{run:#}");
    // MLMD's name for a success, as KFP's driver sends it.
    assert_eq!(task(&run, "report")["outputs"]["Output"], "COMPLETE");
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn ignore_upstream_failure_runs_the_cleanup_only() {
    let sb = Sandbox::new();
    let (code, run) = sb.run_pipeline("ignore_upstream", &[]);
    assert_eq!(code, 1);
    assert_eq!(task(&run, "fail")["state"], "FAILED");
    assert_eq!(task(&run, "echo-str")["state"], "SUCCEEDED");
    assert_eq!(task(&run, "echo-str-2")["state"], "SKIPPED");
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn pipeline_as_component() {
    let sb = Sandbox::new();
    let (code, run) = sb.run_pipeline("outer_pipeline", &["-p", "x=5"]);
    assert_eq!(code, 0, "{run:#}");
    assert_eq!(run["outputs"]["Output"], json!(2205));
    assert_eq!(
        task(&run, "inner-pipeline-2/add-2")["outputs"]["Output"],
        json!(2205)
    );
}
