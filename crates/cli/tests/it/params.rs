//! Parameters of every type, defaults, overrides, outputs and the JSON contract.

use serde_json::{json, Value};

use crate::common::Sandbox;

fn summary(run: &Value) -> Value {
    serde_json::from_str(run["outputs"]["summary"].as_str().expect("summary string"))
        .expect("summary json")
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn defaults_of_every_type_reach_components_typed() {
    let sb = Sandbox::new();
    let (code, run) = sb.run_pipeline("params_all_types", &[]);
    assert_eq!(code, 0, "{run:#}");
    assert_eq!(run["state"], "SUCCEEDED");
    let s = summary(&run);
    assert_eq!(s["i"], json!([3, "int"]));
    assert_eq!(s["f"], json!([1.5, "float"]));
    assert_eq!(s["b"], json!([true, "bool"]));
    assert_eq!(s["s"], "hello");
    assert_eq!(s["l"][1], "two");
    assert_eq!(s["d"], json!({"k": "v"}));
    // NamedTuple outputs become named pipeline outputs.
    assert_eq!(run["outputs"]["doubled"], json!(6));
    assert_eq!(run["outputs"]["upper"], "HELLO");
    assert_eq!(run["outputs"]["ratio"], json!(0.75));
    let tens: Vec<f64> = run["outputs"]["tens"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert_eq!(tens, vec![10.0, 20.0, 30.0]);
    assert_eq!(run["outputs"]["plus"]["a"].as_f64(), Some(2.0));
    assert_eq!(
        run["parameters"],
        json!({"i": 3, "f": 1.5, "s": "hello", "b": true, "l": [1.0, "two"], "d": {"k": "v"}})
    );
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn overrides_are_parsed_by_declared_type() {
    let sb = Sandbox::new();
    let (code, run) = sb.run_pipeline(
        "params_all_types",
        &[
            "-p",
            "i=4",
            "-p",
            "f=2.25",
            "-p",
            "s=a b=c",
            "-p",
            "b=false",
            "-p",
            "l=[7, 8]",
            "-p",
            r#"d={"z": [1]}"#,
        ],
    );
    assert_eq!(code, 0, "{run:#}");
    let s = summary(&run);
    assert_eq!(s["i"], json!([4, "int"]));
    assert_eq!(s["f"], json!([2.25, "float"]));
    assert_eq!(s["s"], "a b=c");
    assert_eq!(s["b"], json!([false, "bool"]));
    assert_eq!(s["l"].as_array().map(Vec::len), Some(2));
    assert_eq!(s["d"]["z"].as_array().map(Vec::len), Some(1));
    assert_eq!(run["outputs"]["doubled"], json!(8));
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn json_output_is_exactly_one_document() {
    let sb = Sandbox::new();
    let p = crate::common::pipeline("required_param");
    // Without --quiet: log lines must still stay off stdout.
    let r = sb.run(&[
        "run",
        p.to_str().unwrap(),
        "-p",
        "epochs=5",
        "--output",
        "json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).expect("one JSON document");
    for key in ["run_id", "state", "outputs", "tasks"] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["outputs"]["Output"], json!(5));
    assert_eq!(v["tasks"][0]["name"], "echo-int");
    assert!(
        r.stderr.contains("[echo-int]"),
        "task logs are prefixed on stderr: {}",
        r.stderr
    );
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn text_mode_prints_outputs_and_progress() {
    let sb = Sandbox::new();
    let p = crate::common::pipeline("required_param");
    let r = sb.run(&["run", p.to_str().unwrap(), "-p", "epochs=9", "--quiet"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.trim(), "Output = 9");
    assert!(
        r.stderr.contains("echo-int") && r.stderr.contains("succeeded"),
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("[echo-int]"),
        "--quiet hides log lines: {}",
        r.stderr
    );
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn bad_parameters_are_refused_before_a_run_is_recorded() {
    let sb = Sandbox::new();
    let p = crate::common::pipeline("required_param");
    let p = p.to_str().unwrap();
    let cases: &[(&[&str], &[&str])] = &[
        (&[], &["missing required parameter 'epochs'", "-p epochs="]),
        (
            &["-p", "epochs=abc"],
            &["parameter 'epochs'", "expected an integer", "abc"],
        ),
        (
            &["-p", "epochs=1", "-p", "epoch=2"],
            &["unknown parameter 'epoch'", "epochs, name"],
        ),
        (&["-p", "epochs"], &["invalid -p 'epochs'", "NAME=VALUE"]),
        (&["-p", "epochs=1", "-p", "epochs=2"], &["given twice"]),
    ];
    for (args, needles) in cases {
        let mut all = vec!["run", p];
        all.extend_from_slice(args);
        let r = sb.run(&all);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        for n in *needles {
            assert!(
                r.stderr.contains(n),
                "{args:?}: expected '{n}' in: {}",
                r.stderr
            );
        }
    }
    assert_eq!(sb.run_count(), 0, "no run record for refused input");
}
