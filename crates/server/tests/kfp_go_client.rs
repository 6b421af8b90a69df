//! Requests as KFP's Go client (and any client generated from KFP's OpenAPI
//! document) sends them: output-only fields with zero timestamps, nulls,
//! camelCase names, PATCH bodies with tags, multipart uploads with their
//! metadata in the query string. The answers are checked against KFP 2.17's
//! contract (whole-second times, tags, service accounts, cascading deletes).
//! `scripts/conformance` runs KFP's own suite against a real server.

mod common;

use std::io::Write;

use axum::body::Body;
use axum::http::{header, Method, StatusCode};
use common::*;
use serde_json::{json, Value};
use switchyard_backend::fake::Scripted;

const ZERO: &str = "0001-01-01T00:00:00.000Z";

async fn send_json(s: &Server, method: Method, uri: &str, body: &Value) -> (StatusCode, Value) {
    let req = request(method, uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    send(s, req).await
}

/// A multipart upload of `bytes` named `file` (metadata in `query`).
async fn upload(s: &Server, path_and_query: &str, file: &str, bytes: &[u8]) -> (StatusCode, Value) {
    let boundary = "switchyard-test-boundary";
    let mut body = Vec::new();
    write!(
        body,
        "--{boundary}\r\nContent-Disposition: form-data; name=\"uploadfile\"; filename=\"{file}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .expect("write");
    body.extend_from_slice(bytes);
    write!(body, "\r\n--{boundary}--\r\n").expect("write");
    let req = request(Method::POST, path_and_query)
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(body))
        .expect("request");
    send(s, req).await
}

/// A time as KFP writes it: whole seconds, `Z`.
fn assert_kfp_time(v: &Value) {
    let t = v.as_str().unwrap_or_else(|| panic!("a time: {v}"));
    assert!(
        t.len() == 20 && t.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(t).is_ok(),
        "not a whole-second time: {t}"
    );
}

async fn upload_pipeline(s: &Server, name: &str, fixture: &str) -> Value {
    let (status, p) = upload(
        s,
        &format!("/apis/v2beta1/pipelines/upload?name={name}&namespace=kubeflow"),
        &format!("{fixture}.yaml"),
        fixture_text(fixture).as_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    p
}

#[tokio::test]
async fn go_client_bodies_with_output_only_fields_are_accepted() {
    let s = server(None, 1 << 22).await;
    let (status, e) = post_json(
        &s,
        "/apis/v2beta1/experiments",
        &json!({"display_name": "exp", "namespace": "kubeflow", "created_at": ZERO, "last_run_created_at": ZERO}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{e}");
    assert_kfp_time(&e["created_at"]);
    let (status, p) = post_json(
        &s,
        "/apis/v2beta1/pipelines",
        &json!({"name": "empty", "createdAt": ZERO, "tags": null, "error": null}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    let p = upload_pipeline(&s, "dag", "fx_dag").await;
    let (_, versions) = get(
        &s,
        &format!(
            "/apis/v2beta1/pipelines/{}/versions",
            p["pipeline_id"].as_str().expect("id")
        ),
    )
    .await;
    let v = &versions["pipeline_versions"][0];
    s.backend.script("train", [Scripted::Hang]);
    let body = json!({
        "display_name": "r", "description": "d", "experiment_id": e["experiment_id"],
        "service_account": "", "pipeline_version_reference": {
            "pipeline_id": p["pipeline_id"], "pipeline_version_id": v["pipeline_version_id"]},
        "runtime_config": {"parameters": null}, "created_at": ZERO, "finished_at": ZERO,
        "scheduled_at": ZERO, "state_history": null, "storage_state": "AVAILABLE"
    });
    let (status, run) = post_json(&s, "/apis/v2beta1/runs", &body).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    // KFP's default service account, and no spec beside the version reference.
    assert_eq!(run["service_account"], "pipeline-runner", "{run}");
    assert!(run.get("pipeline_spec").is_none(), "{run}");
    let id = run["run_id"].as_str().expect("run_id");
    let (_, got) = get(&s, &format!("/apis/v2beta1/runs/{id}")).await;
    assert_eq!(got["service_account"], "pipeline-runner");
    assert_eq!(got["created_at"], run["created_at"], "one creation time");
    assert_kfp_time(&got["created_at"]);
    let mut named = body.clone();
    named["service_account"] = json!("trainer");
    named["display_name"] = json!("r2");
    let (_, run2) = post_json(&s, "/apis/v2beta1/runs", &named).await;
    assert_eq!(run2["service_account"], "trainer", "{run2}");

    // A name no KFP message has is refused, naming it.
    let (status, err) = post_json(
        &s,
        "/apis/v2beta1/runs",
        &json!({"display_name": "x", "owner": "me"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_kfp_error(&err, 3, "owner");
    let (status, err) = post_json(
        &s,
        "/apis/v2beta1/pipelines",
        &json!({"pipeline": {"name": "wrapped"}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_kfp_error(&err, 3, "pipeline");

    // A run that has not ended is stopped and deleted (KFP deletes in any state).
    let req = request(Method::DELETE, &format!("/apis/v2beta1/runs/{id}"))
        .body(Body::empty())
        .expect("request");
    let (status, body) = send(&s, req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = get(&s, &format!("/apis/v2beta1/runs/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn uploads_answer_as_get_does_and_versions_list_their_spec() {
    let s = server(None, 1 << 22).await;
    let p = upload_pipeline(&s, "training", "fx_training").await;
    let pid = p["pipeline_id"].as_str().expect("id");
    let (_, got) = get(&s, &format!("/apis/v2beta1/pipelines/{pid}")).await;
    assert_eq!(p, got, "the upload's answer is what GET shows");
    assert_kfp_time(&got["created_at"]);
    // The description comes from the caller only, not the compiled pipeline.
    assert!(got.get("description").is_none(), "{got}");
    let (_, list) = get(&s, &format!("/apis/v2beta1/pipelines/{pid}/versions")).await;
    assert_eq!(list["total_size"], 1);
    let v = &list["pipeline_versions"][0];
    assert_eq!(
        v["name"], "training",
        "the first version is named after the pipeline"
    );
    // The document as uploaded: its empty defaults kept, whole floats as integers.
    let document = fixture("fx_training");
    let spec = &v["pipeline_spec"];
    let params = &spec["components"]["comp-training-job"]["inputDefinitions"]["parameters"];
    let uploaded = &document["components"]["comp-training-job"]["inputDefinitions"]["parameters"];
    for (name, def) in uploaded.as_object().expect("parameters") {
        let (want, shown) = (&def["defaultValue"], &params[name]["defaultValue"]);
        match want.as_f64() {
            Some(f) if want.is_f64() && f.fract() == 0.0 => {
                assert_eq!(shown, &json!(f as i64), "{name}")
            }
            _ => assert_eq!(shown, want, "{name}"),
        }
    }
    assert_eq!(spec["pipelineInfo"], document["pipelineInfo"]);

    // A zip holding the pipeline is a package KFP accepts; a picture is not.
    let mut zipped = std::io::Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut zipped);
        w.start_file("dag.yaml", zip::write::SimpleFileOptions::default())
            .expect("entry");
        w.write_all(fixture_text("fx_dag").as_bytes())
            .expect("write");
        w.finish().expect("zip");
    }
    let (status, body) = upload(
        &s,
        &format!("/apis/v2beta1/pipelines/upload_version?pipelineid={pid}&name=zipped&tags=%7B%22env%22%3A%22prod%22%7D"),
        "dag.zip",
        &zipped.into_inner(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tags"], json!({"env": "prod"}));
    assert!(
        body["pipeline_spec"]["root"].is_object(),
        "the answer has the spec"
    );
    let (status, body) = upload(
        &s,
        "/apis/v2beta1/pipelines/upload?name=png",
        "x.png",
        b"\x89PNG",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_kfp_error(&body, 3, ".zip or .tar.gz");
    // An unknown pipeline, and bad tags, after the whole upload was read.
    let (status, _) = upload(
        &s,
        "/apis/v2beta1/pipelines/upload_version?pipelineid=12345",
        "a.yaml",
        fixture_text("fx_dag").as_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = upload(
        &s,
        &format!("/apis/v2beta1/pipelines/upload_version?pipelineid={pid}&name=v3&tags=not-json"),
        "a.yaml",
        fixture_text("fx_dag").as_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_kfp_error(&body, 3, "tags");
    // Names longer than KFP's columns.
    let long = "n".repeat(129);
    let (status, body) = post_json(&s, "/apis/v2beta1/pipelines", &json!({"name": long})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_kfp_error(&body, 3, "cannot exceed 128");
    let (status, _) = post_json(
        &s,
        "/apis/v2beta1/pipelines",
        &json!({"name": "n".repeat(100) + "!@#$%"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // A version by its id alone, whatever pipeline the path names.
    let vid = v["pipeline_version_id"].as_str().expect("vid");
    let (status, _) = get(&s, &format!("/apis/v2beta1/pipelines/other/versions/{vid}")).await;
    assert_eq!(status, StatusCode::OK);

    // A pipeline with versions goes only with cascade=true.
    let del = |uri: String| {
        request(Method::DELETE, &uri)
            .body(Body::empty())
            .expect("request")
    };
    let (status, body) = send(&s, del(format!("/apis/v2beta1/pipelines/{pid}"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_kfp_error(&body, 3, "cascade=true");
    let (status, _) = send(
        &s,
        del(format!("/apis/v2beta1/pipelines/{pid}?cascade=true")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = get(&s, &format!("/apis/v2beta1/pipelines/{pid}/versions/{vid}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn tags_are_set_replaced_cleared_and_filtered_on() {
    let s = server(None, 1 << 22).await;
    let (status, p) = post_json(
        &s,
        "/apis/v2beta1/pipelines",
        &json!({"name": "tagged", "tags": {"team": "ml-ops", "env": "prod"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    assert_eq!(p["tags"], json!({"team": "ml-ops", "env": "prod"}));
    let pid = p["pipeline_id"].as_str().expect("id");
    let uri = format!("/apis/v2beta1/pipelines/{pid}");
    // The whole set is replaced; an empty display name keeps the old one.
    let (status, p2) = send_json(
        &s,
        Method::PATCH,
        &uri,
        &json!({"created_at": ZERO, "display_name": "", "tags": {"team": "infra"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{p2}");
    assert_eq!(p2["tags"], json!({"team": "infra"}));
    assert_eq!(p2["display_name"], "tagged");
    assert_eq!(
        p2["created_at"], p["created_at"],
        "PATCH leaves the creation time"
    );
    let (_, p3) = send_json(
        &s,
        Method::PATCH,
        &uri,
        &json!({"display_name": "Tagged", "tags": null}),
    )
    .await;
    assert_eq!(
        (p3["display_name"].as_str(), &p3["tags"]),
        (Some("Tagged"), &json!({"team": "infra"}))
    );
    for (bad, says) in [
        (json!({"a.b": "x"}), "'.'"),
        (json!({"k": "v".repeat(64)}), "63"),
        (json!({"": "x"}), "empty"),
    ] {
        let (status, body) = send_json(&s, Method::PATCH, &uri, &json!({"tags": bad})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_kfp_error(&body, 3, says);
    }
    let filter = |f: Value| {
        format!(
            "/apis/v2beta1/pipelines?filter={}",
            urlencode(&f.to_string())
        )
    };
    let by_tag = |v: &str| json!({"predicates": [{"key": "tags.team", "operation": "EQUALS", "string_value": v}]});
    let (_, found) = get(&s, &filter(by_tag("infra"))).await;
    assert_eq!(found["total_size"], 1, "{found}");
    let (_, none) = get(&s, &filter(by_tag("nobody"))).await;
    assert_eq!(none["total_size"], 0, "{none}");
    let (status, body) = get(&s, &filter(json!({"predicates": [{"key": "tags.team", "operation": "NOT_EQUALS", "string_value": "x"}]}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_kfp_error(&body, 3, "only EQUALS");
    let (status, body) = get(&s, &filter(json!({"predicates": [{"key": "tags.team", "operation": "EQUALS", "timestamp_value": "infra"}]}))).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a tag is matched on string_value only"
    );
    assert_kfp_error(&body, 3, "must be a string");
    let (status, _) = get(
        &s,
        &format!(
            "/apis/v2beta1/runs?filter={}",
            urlencode(&by_tag("x").to_string())
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "runs have no tags");
    let (status, _) = get(
        &s,
        &filter(
            json!({"predicates": [{"key": "pipeline_id", "operation": "IN", "string_value": pid}]}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "IN takes a list");
    let (_, found) = get(&s, &filter(json!({"predicates": [{"key": "pipeline_id", "operation": "IN", "stringValues": {"values": [pid]}}]}))).await;
    assert_eq!(found["total_size"], 1, "{found}");
    // An empty description compares as empty, not as an unknown field.
    let (status, _) = get(&s, &filter(json!({"predicates": [{"key": "description", "operation": "EQUALS", "string_value": ""}]}))).await;
    assert_eq!(status, StatusCode::OK);
    // `{}` clears them.
    let (_, cleared) = send_json(&s, Method::PATCH, &uri, &json!({"tags": {}})).await;
    assert!(cleared.get("tags").is_none(), "{cleared}");
    let (status, _) = send_json(
        &s,
        Method::PATCH,
        "/apis/v2beta1/pipelines/nope",
        &json!({"tags": {}}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // CreatePipelineAndVersion, with the spec inline; a URL is not fetched.
    let spec: Value = fixture("fx_dag");
    let (status, both) = post_json(
        &s,
        "/apis/v2beta1/pipelines/create",
        &json!({"pipeline": {"name": "both", "created_at": ZERO}, "pipeline_version": {"pipeline_spec": spec, "tags": {"stage": "first"}}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{both}");
    let (_, versions) = get(
        &s,
        &format!(
            "/apis/v2beta1/pipelines/{}/versions",
            both["pipeline_id"].as_str().expect("id")
        ),
    )
    .await;
    let v = &versions["pipeline_versions"][0];
    assert_eq!(
        (v["name"].as_str(), &v["tags"]),
        (Some("both"), &json!({"stage": "first"}))
    );
    let vuri = format!(
        "/apis/v2beta1/pipelines/{}/versions/{}",
        both["pipeline_id"].as_str().expect("id"),
        v["pipeline_version_id"].as_str().expect("vid")
    );
    let (status, v2) = send_json(
        &s,
        Method::PATCH,
        &vuri,
        &json!({"display_name": "First", "tags": {"stage": "second"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v2}");
    assert_eq!(
        (v2["display_name"].as_str(), &v2["tags"]),
        (Some("First"), &json!({"stage": "second"}))
    );
    let (status, body) = post_json(
        &s,
        "/apis/v2beta1/pipelines/create",
        &json!({"pipeline": {"name": "from-url"}, "pipeline_version": {"package_url": {"pipeline_url": "https://example.com/p.yaml"}}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_kfp_error(&body, 3, "fetches nothing");
}

#[tokio::test]
async fn page_sizes_outside_int32_are_refused() {
    let s = server(None, 1 << 20).await;
    for bad in ["4294967296", "-1", "ten"] {
        let (status, body) = get(&s, &format!("/apis/v2beta1/experiments?page_size={bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_kfp_error(&body, 3, "page");
    }
    let (status, _) = get(&s, "/apis/v2beta1/experiments?page_size=100").await;
    assert_eq!(status, StatusCode::OK);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A run still queued for a slot (the server runs two at once here) ends at
/// once when terminated; a running one is stopped, then deleted.
#[tokio::test]
async fn queued_runs_end_at_once_and_running_ones_are_stopped_before_deletion() {
    let s = server(None, 1 << 22).await;
    s.backend
        .script("train", [Scripted::Hang, Scripted::Hang, Scripted::Hang]);
    let spec: Value = fixture("fx_dag");
    let mut ids = Vec::new();
    for i in 0..3 {
        let (status, run) = post_json(
            &s,
            "/apis/v2beta1/runs",
            &json!({"display_name": format!("r{i}"), "pipeline_spec": spec}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{run}");
        ids.push(run["run_id"].as_str().expect("id").to_string());
    }
    // Two hold the slots with train running; the third waits PENDING.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while s.backend.in_flight().len() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let state = |v: &Value| v["state"].as_str().unwrap_or_default().to_string();
    let mut queued = None;
    for id in &ids {
        let (_, r) = get(&s, &format!("/apis/v2beta1/runs/{id}")).await;
        if state(&r) == "PENDING" {
            queued = Some(id.clone());
        }
    }
    let queued = queued.expect("one run waits for a slot");
    let (status, body) = post_json(
        &s,
        &format!("/apis/v2beta1/runs/{queued}:terminate"),
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, r) = get(&s, &format!("/apis/v2beta1/runs/{queued}")).await;
    assert_eq!(state(&r), "CANCELED", "ended at once: {r}");
    // A running one: deleted in one call, its step stopped first.
    let running = ids.iter().find(|id| **id != queued).expect("running");
    let req = request(Method::DELETE, &format!("/apis/v2beta1/runs/{running}"))
        .body(Body::empty())
        .expect("request");
    let (status, body) = send(&s, req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = get(&s, &format!("/apis/v2beta1/runs/{running}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        !s.backend
            .in_flight()
            .iter()
            .any(|j| j.starts_with(running.as_str())),
        "its step was stopped"
    );
}
