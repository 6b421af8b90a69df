//! `backend: auto`'s document: `placement` is read with `auto` only, names
//! real backends once each, and its limits are positive.

use switchyard_training::{load, BackendKind, JobSpecError, Objective};

fn job(spec: &str) -> Result<switchyard_training::TrainingJob, JobSpecError> {
    let text = format!(
        "apiVersion: switchyard/v1\nkind: TrainingJob\nmetadata: {{name: p}}\nspec:\n  command: [python3, -c, pass]\n{spec}"
    );
    load(&text, std::path::Path::new("/"), &[], None)
}

#[test]
fn an_auto_job_reads_its_placement() {
    let j = job("  backend: auto\n  placement: {candidates: [sagemaker, kubernetes], objective: cost, maxStartSeconds: 600, maxCostUSD: 25}\n")
        .expect("valid");
    assert_eq!(j.spec.backend, BackendKind::Auto);
    let p = j.spec.placement.expect("placement");
    assert_eq!(
        p.candidates,
        [BackendKind::Sagemaker, BackendKind::Kubernetes]
    );
    assert_eq!(p.objective, Objective::Cost);
    assert_eq!(p.max_cost_usd, Some(25.0));
    // No image needed up front: each candidate that needs one says so.
    job("  backend: auto\n").expect("auto without an image");
}

#[test]
fn bad_placements_are_refused_naming_the_field() {
    for (spec, field) in [
        (
            "  backend: local\n  placement: {objective: cost}\n",
            "spec.placement",
        ),
        (
            "  backend: auto\n  placement: {candidates: [local, local]}\n",
            "spec.placement.candidates",
        ),
        (
            "  backend: auto\n  placement: {candidates: [auto]}\n",
            "spec.placement.candidates",
        ),
        (
            "  backend: auto\n  placement: {maxCostUSD: 0}\n",
            "spec.placement.maxCostUSD",
        ),
        (
            "  backend: auto\n  placement: {maxStartSeconds: 0}\n",
            "spec.placement.maxStartSeconds",
        ),
        (
            "  backend: auto\n  placement: {objective: speed}\n",
            "spec.placement.objective",
        ),
        (
            "  backend: auto\n  placement: {candidate: [local]}\n",
            "spec.placement.candidate",
        ),
    ] {
        match job(spec) {
            Err(JobSpecError::Invalid { field: f, .. }) => assert_eq!(f, field, "{spec}"),
            other => panic!("{spec}: expected a refusal, got {other:?}"),
        }
    }
}

#[test]
fn naming_a_backend_overrides_an_auto_file_and_its_placement() {
    let text = "apiVersion: switchyard/v1\nkind: TrainingJob\nmetadata: {name: p}\nspec:\n  command: [python3, -c, pass]\n  backend: auto\n  placement: {objective: cost}\n";
    let j = load(text, std::path::Path::new("/"), &[], Some("local")).expect("overridden");
    assert_eq!(j.spec.backend, BackendKind::Local);
    assert_eq!(j.spec.placement, None);
    let j = load(text, std::path::Path::new("/"), &[], Some("auto")).expect("auto");
    assert!(j.spec.placement.is_some());
}
