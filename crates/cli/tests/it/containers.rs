//! Container components: every placeholder, Concat, IfPresent, output files.

use serde_json::Value;

use crate::common::{task, Sandbox};

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn placeholders_resolve_like_kfp() {
    let sb = Sandbox::new();
    let (code, run) = sb.run_pipeline(
        "container_placeholders",
        &["-p", "msg=hey you", "-p", "n=3"],
    );
    assert_eq!(code, 0, "{run:#}");
    let id = run["run_id"].as_str().unwrap();
    let root = run["pipeline_root"].as_str().unwrap();
    // IfPresent without the optional input takes the Else branch.
    // The job name is the run's display name (by default the pipeline's name
    // and the id's first eight characters).
    let expected = format!(
        "msg=hey you,n=3|--no-opt|container-placeholders-{}|show-args-2|{id}|{root}|",
        &id[..8]
    );
    assert_eq!(run["outputs"]["Output"], Value::String(expected));
    // ...and with it, the Then branch.
    let with_opt = task(&run, "show-args")["outputs"]["out"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        with_opt.starts_with("msg=hey you,n=3|--opt|given|"),
        "{with_opt}"
    );

    // Artifacts: the output path is <root>/<pipeline>/<run>/<task>/<output>.
    let data_path = format!("{root}/container-placeholders/{id}/write-dataset/data");
    assert_eq!(std::fs::read_to_string(&data_path).unwrap(), "abcdef");
    let rd = &task(&run, "read-dataset")["outputs"];
    assert_eq!(rd["size"], Value::from(6));
    assert_eq!(rd["uri"], Value::String(data_path));

    // {{$}} is the executor input document.
    let ei: Value = serde_json::from_str(
        task(&run, "executor-input")["outputs"]["out"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(ei["inputs"]["parameterValues"]["x"], Value::from(3));
    assert!(ei["outputs"]["parameters"]["out"]["outputFile"]
        .as_str()
        .unwrap()
        .ends_with("/out"));
    assert!(ei["outputs"]["outputFile"]
        .as_str()
        .unwrap()
        .ends_with("executor_output.json"));
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn missing_command_fails_the_task_with_a_hint() {
    // A container whose command is not installed here: the error says so.
    let sb = Sandbox::new();
    let mut parsed = switchyard_kfp_spec::parse_pipeline(
        &std::fs::read_to_string(crate::common::pipeline("container_placeholders")).unwrap(),
    )
    .unwrap()
    .spec;
    let exec = parsed
        .deployment_spec
        .executors
        .get_mut("exec-write-dataset")
        .unwrap();
    exec.container.as_mut().unwrap().command = vec!["no-such-program-xyz".into()];
    let f = sb.path("p.json");
    std::fs::write(&f, serde_json::to_string(&parsed).unwrap()).unwrap();
    let r = sb.run(&["run", &f, "--output", "json", "--quiet"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let run = r.json();
    assert_eq!(run["state"], "FAILED");
    let err = run["error"].as_str().unwrap();
    assert!(
        err.contains("write-dataset")
            && err.contains("no-such-program-xyz")
            && err.contains("PATH"),
        "{err}"
    );
    assert_eq!(task(&run, "read-dataset")["state"], "SKIPPED");
}
