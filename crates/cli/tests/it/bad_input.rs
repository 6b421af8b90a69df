//! Bad pipelines are refused with an error that names the place, before any
//! run record is written.

use switchyard_kfp_spec::{parse_pipeline, InputParameterSpec, PipelineSpec};

use crate::common::{pipeline, Sandbox};

fn compiled(name: &str) -> PipelineSpec {
    parse_pipeline(&std::fs::read_to_string(pipeline(name)).unwrap())
        .unwrap()
        .spec
}

/// Writes a (mutated) compiled spec as JSON and runs it; expects exit code 2.
fn refuse(sb: &Sandbox, file: &str, text: &str, needles: &[&str]) {
    let f = sb.path(file);
    std::fs::write(&f, text).unwrap();
    let r = sb.run(&["run", &f]);
    assert_eq!(r.code, 2, "{file}: {}", r.stderr);
    for n in needles {
        assert!(
            r.stderr.contains(n),
            "{file}: expected '{n}' in: {}",
            r.stderr
        );
    }
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

fn refuse_spec(sb: &Sandbox, file: &str, spec: &PipelineSpec, needles: &[&str]) {
    refuse(sb, file, &serde_json::to_string(spec).unwrap(), needles);
}

#[test]
fn malformed_and_foreign_documents() {
    let sb = Sandbox::new();
    refuse(
        &sb,
        "bad.yaml",
        "components: [\n  - a\n b: }",
        &["malformed pipeline YAML", "line"],
    );
    refuse(&sb, "empty.yaml", "", &["empty"]);
    refuse(
        &sb,
        "other.yaml",
        "apiVersion: v1\nkind: Pod\n",
        &["PipelineSpec", "root"],
    );
    refuse(&sb, "list.yaml", "- 1\n- 2\n", &["expected a mapping"]);
    let r = sb.run(&["run", "/nonexistent/pipeline.yaml"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("cannot read pipeline file /nonexistent/pipeline.yaml"),
        "{}",
        r.stderr
    );
    assert_eq!(sb.run_count(), 0);
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn unknown_schema_version() {
    let sb = Sandbox::new();
    let text = std::fs::read_to_string(pipeline("failing_chain"))
        .unwrap()
        .replace("schemaVersion: 2.1.0", "schemaVersion: 3.0.0");
    refuse(
        &sb,
        "v3.yaml",
        &text,
        &["unsupported schemaVersion '3.0.0'", "kfp 2.x"],
    );
    assert_eq!(sb.run_count(), 0);
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn broken_references_and_cycles_name_the_task() {
    let sb = Sandbox::new();

    let mut spec = compiled("failing_chain");
    spec.root
        .dag
        .as_mut()
        .unwrap()
        .tasks
        .get_mut("explode")
        .unwrap()
        .component_ref
        .name = "comp-gone".into();
    refuse_spec(
        &sb,
        "ref.json",
        &spec,
        &["task 'explode'", "componentRef 'comp-gone'"],
    );

    let mut spec = compiled("failing_chain");
    spec.components
        .get_mut("comp-explode")
        .unwrap()
        .executor_label = Some("exec-gone".into());
    refuse_spec(
        &sb,
        "exec.json",
        &spec,
        &["component 'comp-explode'", "executorLabel 'exec-gone'"],
    );

    let mut spec = compiled("failing_chain");
    let tasks = &mut spec.root.dag.as_mut().unwrap().tasks;
    tasks
        .get_mut("echo-str")
        .unwrap()
        .dependent_tasks
        .push("echo-str-2".into());
    refuse_spec(
        &sb,
        "cycle.json",
        &spec,
        &["dependency cycle in root DAG", "echo-str", "explode"],
    );

    let mut spec = compiled("failing_chain");
    spec.root
        .dag
        .as_mut()
        .unwrap()
        .tasks
        .get_mut("explode")
        .unwrap()
        .dependent_tasks
        .push("ghost".into());
    refuse_spec(
        &sb,
        "ghost.json",
        &spec,
        &["task 'explode'", "depends on task 'ghost'"],
    );

    let mut spec = compiled("required_param");
    let t = spec
        .root
        .dag
        .as_mut()
        .unwrap()
        .tasks
        .get_mut("echo-int")
        .unwrap();
    t.inputs.parameters.insert(
        "x".into(),
        InputParameterSpec {
            component_input_parameter: Some("nope".into()),
            ..Default::default()
        },
    );
    refuse_spec(
        &sb,
        "input.json",
        &spec,
        &["task 'echo-int', input 'x'", "component input 'nope'"],
    );
    assert_eq!(sb.run_count(), 0);
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn unsupported_features_say_which() {
    let sb = Sandbox::new();
    let mut spec = compiled("failing_chain");
    let exec = spec
        .deployment_spec
        .executors
        .get_mut("exec-explode")
        .unwrap();
    exec.container = None;
    exec.resolver = Some(serde_json::json!({"outputArtifactQueries": {}}));
    refuse_spec(
        &sb,
        "resolver.json",
        &spec,
        &["not supported yet", "resolver"],
    );

    let p = pipeline("failing_chain");
    let r = sb.run(&[
        "run",
        p.to_str().unwrap(),
        "--pipeline-root",
        "gs://bucket/root",
    ]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("gs:// is not supported") && r.stderr.contains("gs://bucket/root"),
        "{}",
        r.stderr
    );
    assert_eq!(sb.run_count(), 0);
}

#[test]
#[ignore = "needs the kfp SDK venv and managed component environments (scripts/setup)"]
fn names_cannot_escape_the_run_folder() {
    let sb = Sandbox::new();
    let mut spec = compiled("failing_chain");
    let tasks = &mut spec.root.dag.as_mut().unwrap().tasks;
    let t = tasks.remove("echo-str-3").unwrap();
    tasks.insert("..".into(), t);
    refuse_spec(&sb, "dots.json", &spec, &["task '..'", "cannot be used"]);

    let mut spec = compiled("container_placeholders");
    let comp = spec.components.get_mut("comp-write-dataset").unwrap();
    let art = comp.output_definitions.artifacts.remove("data").unwrap();
    comp.output_definitions
        .artifacts
        .insert("../../escape".into(), art);
    refuse_spec(
        &sb,
        "escape.json",
        &spec,
        &["output '../../escape'", "cannot be used"],
    );

    let mut spec = compiled("failing_chain");
    spec.pipeline_info.name = "/etc".into();
    refuse_spec(
        &sb,
        "abs.json",
        &spec,
        &["pipelineInfo.name", "cannot be used"],
    );
    assert_eq!(sb.run_count(), 0);
}

#[test]
fn listing_into_a_closed_pipe_ends_quietly() {
    let sb = Sandbox::new();
    for args in [["runs", "list"], ["job", "list"]] {
        let mut child = sb
            .cmd()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader (`head`, say) is gone before anything is written.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
