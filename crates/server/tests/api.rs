//! The HTTP API in-process (`app(state).oneshot(request)`), with the store in a
//! temporary SQLite file and a scripted backend: KFP's error shape for every
//! kind of refusal, the guards (host, cross-site, token, body size), and a
//! run created from a kfp-compiled pipeline carried to its end. No port, no
//! Python; `tests/server` drives a real server with the real `kfp.Client`.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::*;
use serde_json::json;
use switchyard_backend::fake::Scripted;
use switchyard_store::LifecycleStore as _;

#[tokio::test]
async fn lookups_of_what_does_not_exist_are_404_in_kfps_shape() {
    let s = server(None, 1 << 20).await;
    let (status, body) = get(&s, "/apis/v2beta1/runs/no-such-run").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_kfp_error(&body, 5, "no-such-run");
    let (status, body) = get(&s, "/apis/v2beta1/experiments/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_kfp_error(&body, 5, "nope");
    let (status, body) = get(&s, "/apis/switchyard/v1/jobs/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_kfp_error(&body, 5, "nope");
}

#[tokio::test]
async fn malformed_requests_are_400_naming_the_problem() {
    let s = server(None, 1 << 20).await;
    let req = request(Method::POST, "/apis/v2beta1/runs")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{not json"))
        .expect("request");
    let (status, body) = send(&s, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_kfp_error(&body, 3, "JSON");
    // A pipeline that is not one.
    let (status, body) = post_json(
        &s,
        "/apis/v2beta1/runs",
        &json!({"display_name": "x", "pipeline_spec": {"root": 5}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], 3, "{body}");
    // A parameter the pipeline does not declare.
    let (status, body) = post_json(
        &s,
        "/apis/v2beta1/runs",
        &json!({"pipeline_spec": fixture("fx_dag"), "runtime_config": {"parameters": {"nope": 1}}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_kfp_error(&body, 3, "nope");
    // A training job that is not a TrainingJob document.
    let req = request(Method::POST, "/apis/switchyard/v1/jobs")
        .header(header::CONTENT_TYPE, "application/yaml")
        .body(Body::from("apiVersion: switchyard/v1\nkind: TrainingJob\nmetadata: {name: j}\nspec: {procPerNode: 2}\n"))
        .expect("request");
    let (status, body) = send(&s, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_kfp_error(&body, 3, "procPerNode");
    // A method the path does not take.
    let req = request(Method::DELETE, "/apis/v2beta1/healthz")
        .body(Body::empty())
        .expect("request");
    let (status, body) = send(&s, req).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["code"], 12, "{body}");
}

#[tokio::test]
async fn an_oversized_body_is_413_in_kfps_shape() {
    let s = server(None, 4096).await;
    let big = json!({"display_name": "x".repeat(10_000)});
    let (status, body) = post_json(&s, "/apis/v2beta1/experiments", &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["code"], 8, "{body}");
}

#[tokio::test]
async fn foreign_hosts_and_cross_site_requests_are_refused() {
    let s = server(None, 1 << 20).await;
    // DNS rebinding: a page served from the attacker's name.
    let req = Request::builder()
        .uri("/apis/v2beta1/runs")
        .header(header::HOST, "attacker.example:8888")
        .body(Body::empty())
        .expect("request");
    let (status, body) = send(&s, req).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_kfp_error(&body, 7, "attacker.example");
    // A web page posting to the API from another origin.
    let req = request(Method::POST, "/apis/v2beta1/experiments")
        .header(header::ORIGIN, "https://evil.example")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({"display_name": "e"}).to_string()))
        .expect("request");
    let (status, body) = send(&s, req).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], 7);
    let (status, _) = get(&s, "/apis/v2beta1/experiments").await;
    assert_eq!(status, StatusCode::OK, "programs (no Origin) pass");
}

#[tokio::test]
async fn a_token_guards_everything_but_health() {
    let s = server(Some("s3cret"), 1 << 20).await;
    let (status, body) = get(&s, "/apis/v2beta1/runs").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_kfp_error(&body, 16, "bearer token");
    let wrong = request(Method::GET, "/apis/v2beta1/runs")
        .header(header::AUTHORIZATION, "Bearer nope")
        .body(Body::empty())
        .expect("request");
    assert_eq!(send(&s, wrong).await.0, StatusCode::UNAUTHORIZED);
    let right = request(Method::GET, "/apis/v2beta1/runs")
        .header(header::AUTHORIZATION, "Bearer s3cret")
        .body(Body::empty())
        .expect("request");
    assert_eq!(send(&s, right).await.0, StatusCode::OK);
    assert_eq!(get(&s, "/apis/v2beta1/healthz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_run_created_over_http_executes_to_its_end() {
    let s = server(None, 1 << 20).await;
    s.backend
        .script("train", [Scripted::Fail("diverged".into())]);
    let (status, run) = post_json(
        &s,
        "/apis/v2beta1/runs",
        &json!({"display_name": "fast", "pipeline_spec": fixture("fx_dag")}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    let id = run["run_id"].as_str().expect("run_id").to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let run = loop {
        let (_, run) = get(&s, &format!("/apis/v2beta1/runs/{id}")).await;
        if run["state"] == "FAILED" || tokio::time::Instant::now() > deadline {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(run["state"], "FAILED", "{run}");
    assert!(
        run["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("diverged"),
        "{run}"
    );
    assert!(s.backend.runs_of("evaluate").is_empty());
    assert_eq!(s.backend.runs_of("cleanup").len(), 1);
}

/// A run of the `fx_dag` fixture whose executing process died while its
/// `train` step ran: the step is still in flight on the backend (a Pod).
/// Returns the run and the step's job id.
async fn died_while_running(s: &Server) -> (switchyard_store::RunRecord, Vec<String>) {
    use switchyard_store::RunStore;
    let run = s
        .engine
        .create_run(&fx_dag(), &Default::default(), &options(s))
        .await
        .expect("created");
    let (engine, id) = (s.engine.clone(), run.id.clone());
    let execution = tokio::spawn(async move {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let cancel = tokio_util::sync::CancellationToken::new();
        engine.execute(&id, tx, cancel, false).await
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while s.backend.in_flight().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let step = s.backend.in_flight();
    assert_eq!(step.len(), 1, "train runs");
    // The process dies: its execution stops, its lease goes, the step runs on.
    execution.abort();
    let _ = execution.await;
    s.store.set_owner(&run.id, None).await.expect("no owner");
    (run, step)
}

fn fx_dag() -> switchyard_kfp_spec::ParsedPipeline {
    let text = serde_json::to_string(&fixture("fx_dag")).expect("json");
    switchyard_kfp_spec::parse_pipeline(&text).expect("pipeline")
}

fn options(s: &Server) -> switchyard_engine::RunOptions {
    switchyard_engine::RunOptions {
        service_account: None,
        parallelism: 2,
        pipeline_root: s._dir.path().join("root"),
        ..Default::default()
    }
}

/// A run whose executing process died while its `train` step ran: terminating it over the API
/// stops that step and records the run and the step CANCELED.
#[tokio::test]
async fn terminating_a_run_whose_process_died_stops_its_running_step() {
    use switchyard_store::{RunStore, State};
    let s = server(None, 1 << 20).await;
    s.backend.script("train", [Scripted::Hang]);
    let (run, step) = died_while_running(&s).await;
    let (status, body) = post_json(
        &s,
        &format!("/apis/v2beta1/runs/{}:terminate", run.id),
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        s.backend.stopped(),
        step,
        "the step left running was stopped"
    );
    let (_, got) = get(&s, &format!("/apis/v2beta1/runs/{}", run.id)).await;
    assert_eq!(got["state"], "CANCELED", "{got}");
    let train = s
        .store
        .get_task(&run.id, "train")
        .await
        .expect("read")
        .expect("train");
    assert_eq!(train.state, State::Canceled);
    // Terminating it again: it is already over.
    let (status, _) = post_json(
        &s,
        &format!("/apis/v2beta1/runs/{}:terminate", run.id),
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// A server died after accepting a terminate (the run CANCELING, unheld);
/// another run whose step submitted a training job ended while no process
/// followed that job. The next recovery finishes the cancel (stopping the
/// step left running) instead of resuming the run, and stops the job.
#[tokio::test]
async fn recovery_finishes_an_accepted_cancel_and_stops_jobs_of_ended_runs() {
    use switchyard_store::{JobStore, RunStore, RunUpdate, State};
    let s = server(None, 1 << 20).await;
    s.backend.script("train", [Scripted::Hang]);
    let (run, step) = died_while_running(&s).await;
    // A server's run (recovery takes only those: they have a catalog entry).
    let entry = switchyard_store::RunCatalog {
        run_id: run.id.clone(),
        experiment_id: "default".into(),
        storage_state: "AVAILABLE".into(),
        description: None,
        pipeline_id: None,
        pipeline_version_id: None,
        runtime_config: None,
        recurring_run_id: None,
        service_account: None,
    };
    switchyard_store::CatalogStore::put_run_catalog(s.store.as_ref(), &entry)
        .await
        .expect("catalog");
    s.store
        .request_cancel(switchyard_store::Kind::Run, &run.id)
        .await
        .expect("flag");
    assert!(s
        .store
        .transition_run(
            &run.id,
            &[State::Running],
            State::Canceling,
            RunUpdate::default()
        )
        .await
        .expect("canceling"));

    let ended = s
        .engine
        .create_run(&fx_dag(), &Default::default(), &options(&s))
        .await
        .expect("created");
    assert!(s
        .store
        .transition_run(
            &ended.id,
            &[State::Pending],
            State::Failed,
            RunUpdate::default()
        )
        .await
        .expect("failed"));
    let doc = format!(
        "apiVersion: switchyard/v1\nkind: TrainingJob\nmetadata:\n  name: digits\n  labels: {{switchyard.io/run-id: {}, switchyard.io/task: train}}\nspec:\n  backend: sagemaker\n  image: train:1\n  command: [python3]\n",
        ended.id
    );
    let job = switchyard_training::load(&doc, std::path::Path::new("."), &[], None).expect("job");
    let prepared = s.state.jobs.prepare(&job).await.expect("recorded");
    let mut rec = prepared.record.clone();
    rec.state = State::Running;
    rec.lease = None;
    s.store
        .update_job(&rec, None, None)
        .await
        .expect("orphaned");

    let resumed = switchyard_server::recover(&s.state)
        .await
        .expect("recovered");
    assert_eq!(resumed, 0, "a run whose cancel was accepted is not resumed");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while s.store.get_run(&run.id).await.expect("run").state != State::Canceled
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        s.store.get_run(&run.id).await.expect("run").state,
        State::Canceled
    );
    assert_eq!(s.backend.stopped(), step);
    assert_eq!(
        *s.training.stops.lock().expect("stops"),
        vec![rec.id.clone()]
    );
    assert_eq!(
        s.store.get_job(&rec.id).await.expect("job").state,
        State::Canceled
    );
}

/// `backend: auto` through the API: placed before it is recorded (the record
/// and the answer name the chosen backend, its first event says why), and a
/// job no candidate can run is a 400 with every candidate's reason.
#[tokio::test]
async fn an_auto_job_is_placed_before_it_is_recorded() {
    let s = server(None, 1 << 20).await;
    let post = |body: &'static str| {
        request(Method::POST, "/apis/switchyard/v1/jobs")
            .header(header::CONTENT_TYPE, "application/yaml")
            .body(Body::from(body))
            .expect("request")
    };
    let (status, body) = send(
        &s,
        post("apiVersion: switchyard/v1\nkind: TrainingJob\nmetadata: {name: j}\nspec:\n  backend: auto\n  image: img\n  command: [python3, -c, pass]\n  placement: {candidates: [kubernetes, local], objective: cost}\n"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["backend"], "kubernetes", "{body}");
    assert_eq!(body["placement"]["chosen"], "kubernetes", "{body}");
    assert_eq!(body["placement"]["objective"], "cost", "{body}");
    let id = body["job_id"].as_str().expect("id").to_string();
    let (_, got) = get(&s, &format!("/apis/switchyard/v1/jobs/{id}")).await;
    assert!(
        got["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("placement: placed on kubernetes")))),
        "{got}"
    );
    let (status, body) = send(
        &s,
        post("apiVersion: switchyard/v1\nkind: TrainingJob\nmetadata: {name: j}\nspec:\n  backend: auto\n  command: [python3, -c, pass]\n  placement: {candidates: [sagemaker]}\n"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_kfp_error(&body, 3, "sagemaker: needs spec.image");
}
