//! The OpenAPI 3 document of the served API (`GET /apis/switchyard/v1/openapi.json`),
//! built from one table of the routes so it cannot list an endpoint that does
//! not exist. Schemathesis checks the server against it (tests/server).

use serde_json::{json, Map, Value};

fn error_response() -> Value {
    json!({"description": "KFP error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}}})
}

fn ok(schema: &str) -> Value {
    json!({"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
}

fn list_params() -> Vec<Value> {
    ["page_token", "sort_by", "filter", "experiment_id", "namespace"]
        .iter()
        .map(|n| json!({"name": n, "in": "query", "schema": {"type": "string"}}))
        .chain(std::iter::once(json!({"name": "page_size", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 1000}})))
        .collect()
}

fn op(summary: &str, params: Vec<Value>, body: Option<Value>, response: &str) -> Value {
    let mut o = json!({
        "summary": summary,
        "parameters": params,
        "responses": {"200": ok(response), "400": error_response(), "401": error_response(), "404": error_response(), "409": error_response()},
    });
    if let Some(b) = body {
        o["requestBody"] = b;
    }
    o
}

fn json_body(schema: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn upload_body() -> Value {
    json!({"required": true, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["uploadfile"],
        "properties": {"uploadfile": {"type": "string", "format": "binary"}}}}}})
}

fn upload_params(extra: &[&str]) -> Vec<Value> {
    ["name", "display_name", "description", "tags"]
        .iter()
        .chain(extra.iter())
        .map(|n| json!({"name": n, "in": "query", "schema": {"type": "string"}}))
        .collect()
}

fn schemas() -> Value {
    let obj = json!({"type": "object"});
    let s = |props: Value| json!({"type": "object", "properties": props, "additionalProperties": false});
    let tags =
        json!({"type": "object", "additionalProperties": {"type": "string"}, "maxProperties": 20});
    json!({
        "Status": {"type": "object", "properties": {"code": {"type": "integer"}, "message": {"type": "string"}, "error": {"type": "string"}, "details": {"type": "array"}}},
        "Empty": obj,
        "Healthz": {"type": "object", "properties": {"multi_user": {"type": "boolean"}, "pipeline_store": {"type": "string"}}},
        "Experiment": obj, "ExperimentList": obj,
        "Pipeline": obj, "PipelineList": obj, "PipelineVersion": obj, "PipelineVersionList": obj,
        "Run": obj, "RunList": obj, "Job": obj, "JobList": obj,
        "RecurringRun": obj, "RecurringRunList": obj,
        "NewRecurringRun": s(json!({
            "display_name": {"type": "string"}, "description": {"type": "string"}, "experiment_id": {"type": "string"},
            "pipeline_spec": {"type": "object"}, "pipeline_version_id": {"type": "string"},
            "pipeline_version_reference": {"type": "object", "properties": {"pipeline_id": {"type": "string"}, "pipeline_version_id": {"type": "string"}}, "additionalProperties": false},
            "runtime_config": {"type": "object", "properties": {"parameters": {"type": "object"}, "pipeline_root": {"type": "string"}}, "additionalProperties": false},
            "service_account": {"type": "string"}, "namespace": {"type": "string"},
            "max_concurrency": {"type": ["integer", "string"]}, "no_catchup": {"type": "boolean"},
            "mode": {"type": "string", "enum": ["MODE_UNSPECIFIED", "ENABLE", "DISABLE"]},
            "trigger": {"type": "object", "properties": {
                "cron_schedule": {"type": "object", "properties": {"cron": {"type": "string"}, "start_time": {"type": "string"}, "end_time": {"type": "string"}}},
                "periodic_schedule": {"type": "object", "properties": {"interval_second": {"type": ["integer", "string"]}, "start_time": {"type": "string"}, "end_time": {"type": "string"}}},
            }},
        })),
        "NewExperiment": s(json!({"display_name": {"type": "string"}, "description": {"type": "string"}, "namespace": {"type": "string"}})),
        "NewPipeline": s(json!({"name": {"type": "string"}, "display_name": {"type": "string"}, "description": {"type": "string"}, "namespace": {"type": "string"}, "tags": tags.clone()})),
        "PipelineUpdate": s(json!({"display_name": {"type": "string"}, "tags": tags.clone()})),
        "NewPipelineAndVersion": s(json!({
            "pipeline": {"type": "object", "properties": {"name": {"type": "string"}, "display_name": {"type": "string"}, "description": {"type": "string"}, "tags": tags.clone()}, "additionalProperties": false},
            "pipeline_version": {"type": "object", "properties": {"pipeline_spec": {"type": "object"}, "tags": tags.clone()}, "additionalProperties": false},
        })),
        "NewRun": s(json!({
            "experiment_id": {"type": "string"}, "display_name": {"type": "string"}, "description": {"type": "string"},
            "pipeline_spec": {"type": "object"},
            "pipeline_version_reference": {"type": "object", "properties": {"pipeline_id": {"type": "string"}, "pipeline_version_id": {"type": "string"}}, "additionalProperties": false},
            "runtime_config": {"type": "object", "properties": {"parameters": {"type": "object"}, "pipeline_root": {"type": "string"}}, "additionalProperties": false},
            "service_account": {"type": "string"},
        })),
    })
}

/// The KFP API's prefix.
const V2: &str = "/apis/v2beta1";

/// The document's paths, each with its methods' operations.
#[derive(Default)]
struct Paths(Map<String, Value>);

impl Paths {
    fn add(&mut self, path: String, method: &str, o: Value) {
        let entry = self.0.entry(path).or_insert_with(|| json!({}));
        entry[method] = o;
    }
}

/// The document.
pub fn document() -> Value {
    let mut paths = Paths::default();
    experiments(&mut paths);
    pipelines(&mut paths);
    runs(&mut paths);
    recurring_runs(&mut paths);
    switchyard(&mut paths);
    let paths = paths.0;
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Switchyard (Kubeflow Pipelines v2beta1 API)", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": schemas(), "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    })
}

/// Health, and KFP's experiments.
fn experiments(paths: &mut Paths) {
    let v = V2;
    paths.add(
        format!("{v}/healthz"),
        "get",
        op("Health", vec![], None, "Healthz"),
    );
    paths.add(
        format!("{v}/experiments"),
        "post",
        op(
            "Create an experiment",
            vec![],
            Some(json_body("NewExperiment")),
            "Experiment",
        ),
    );
    paths.add(
        format!("{v}/experiments"),
        "get",
        op("List experiments", list_params(), None, "ExperimentList"),
    );
    paths.add(
        format!("{v}/experiments/{{id}}"),
        "get",
        op(
            "Get an experiment",
            vec![path_param("id")],
            None,
            "Experiment",
        ),
    );
    paths.add(
        format!("{v}/experiments/{{id}}"),
        "delete",
        op(
            "Delete an experiment",
            vec![path_param("id")],
            None,
            "Empty",
        ),
    );
    for action in ["archive", "unarchive"] {
        paths.add(
            format!("{v}/experiments/{{id}}:{action}"),
            "post",
            op(
                &format!("{action} an experiment"),
                vec![path_param("id")],
                None,
                "Empty",
            ),
        );
    }
}

/// KFP's pipelines and their versions.
fn pipelines(paths: &mut Paths) {
    let v = V2;
    paths.add(
        format!("{v}/pipelines"),
        "post",
        op(
            "Create a pipeline",
            vec![],
            Some(json_body("NewPipeline")),
            "Pipeline",
        ),
    );
    paths.add(
        format!("{v}/pipelines"),
        "get",
        op("List pipelines", list_params(), None, "PipelineList"),
    );
    paths.add(
        format!("{v}/pipelines/upload"),
        "post",
        op(
            "Upload a pipeline",
            upload_params(&[]),
            Some(upload_body()),
            "Pipeline",
        ),
    );
    paths.add(
        format!("{v}/pipelines/upload_version"),
        "post",
        op(
            "Upload a pipeline version",
            upload_params(&["pipelineid"]),
            Some(upload_body()),
            "PipelineVersion",
        ),
    );
    paths.add(
        format!("{v}/pipelines/names/{{name}}"),
        "get",
        op(
            "Get a pipeline by name",
            vec![path_param("name")],
            None,
            "Pipeline",
        ),
    );
    paths.add(
        format!("{v}/pipelines/{{id}}"),
        "get",
        op("Get a pipeline", vec![path_param("id")], None, "Pipeline"),
    );
    paths.add(
        format!("{v}/pipelines/{{id}}"),
        "delete",
        op(
            "Delete a pipeline (with its versions only with cascade=true)",
            vec![
                path_param("id"),
                json!({"name": "cascade", "in": "query", "schema": {"type": "boolean"}}),
            ],
            None,
            "Empty",
        ),
    );
    paths.add(
        format!("{v}/pipelines/{{id}}"),
        "patch",
        op(
            "Update a pipeline's display name and tags",
            vec![path_param("id")],
            Some(json_body("PipelineUpdate")),
            "Pipeline",
        ),
    );
    paths.add(
        format!("{v}/pipelines/create"),
        "post",
        op(
            "Create a pipeline and its first version",
            vec![],
            Some(json_body("NewPipelineAndVersion")),
            "Pipeline",
        ),
    );
    let mut vp = list_params();
    vp.push(path_param("id"));
    paths.add(
        format!("{v}/pipelines/{{id}}/versions"),
        "get",
        op("List versions", vp, None, "PipelineVersionList"),
    );
    let ids = || vec![path_param("id"), path_param("vid")];
    paths.add(
        format!("{v}/pipelines/{{id}}/versions/{{vid}}"),
        "get",
        op("Get a version", ids(), None, "PipelineVersion"),
    );
    paths.add(
        format!("{v}/pipelines/{{id}}/versions/{{vid}}"),
        "delete",
        op("Delete a version", ids(), None, "Empty"),
    );
    paths.add(
        format!("{v}/pipelines/{{id}}/versions/{{vid}}"),
        "patch",
        op(
            "Update a version's display name and tags",
            ids(),
            Some(json_body("PipelineUpdate")),
            "PipelineVersion",
        ),
    );
}

/// KFP's runs.
fn runs(paths: &mut Paths) {
    let v = V2;
    paths.add(
        format!("{v}/runs"),
        "post",
        op("Create a run", vec![], Some(json_body("NewRun")), "Run"),
    );
    paths.add(
        format!("{v}/runs"),
        "get",
        op("List runs", list_params(), None, "RunList"),
    );
    paths.add(
        format!("{v}/runs/{{id}}"),
        "get",
        op("Get a run", vec![path_param("id")], None, "Run"),
    );
    paths.add(
        format!("{v}/runs/{{id}}"),
        "delete",
        op("Delete a run", vec![path_param("id")], None, "Empty"),
    );
    for action in ["terminate", "retry", "archive", "unarchive"] {
        paths.add(
            format!("{v}/runs/{{id}}:{action}"),
            "post",
            op(
                &format!("{action} a run"),
                vec![path_param("id")],
                None,
                "Empty",
            ),
        );
    }
}

/// KFP's recurring runs.
fn recurring_runs(paths: &mut Paths) {
    let v = V2;
    paths.add(
        format!("{v}/recurringruns"),
        "post",
        op(
            "Create a recurring run",
            vec![],
            Some(json_body("NewRecurringRun")),
            "RecurringRun",
        ),
    );
    paths.add(
        format!("{v}/recurringruns"),
        "get",
        op(
            "List recurring runs",
            list_params(),
            None,
            "RecurringRunList",
        ),
    );
    paths.add(
        format!("{v}/recurringruns/{{id}}"),
        "get",
        op(
            "Get a recurring run",
            vec![path_param("id")],
            None,
            "RecurringRun",
        ),
    );
    paths.add(
        format!("{v}/recurringruns/{{id}}"),
        "delete",
        op(
            "Delete a recurring run (its runs stay)",
            vec![path_param("id")],
            None,
            "Empty",
        ),
    );
    for action in ["enable", "disable"] {
        paths.add(
            format!("{v}/recurringruns/{{id}}:{action}"),
            "post",
            op(
                &format!("{action} a recurring run"),
                vec![path_param("id")],
                None,
                "Empty",
            ),
        );
    }
}

/// Switchyard's own endpoints: task logs, run details, artifacts, job metrics.
fn switchyard(paths: &mut Paths) {
    let mut lp = vec![
        path_param("id"),
        json!({"name": "task", "in": "query", "required": true, "schema": {"type": "string"}}),
    ];
    lp.push(json!({"name": "follow", "in": "query", "schema": {"type": "boolean"}}));
    let mut log_op = op(
        "A task's log (plain text; follow=true streams it)",
        lp,
        None,
        "Empty",
    );
    log_op["responses"]["200"] = json!({"description": "the log", "content": {"text/plain": {"schema": {"type": "string"}}}});
    paths.add(
        "/apis/switchyard/v1/runs/{id}/logs".to_string(),
        "get",
        log_op,
    );
    paths.add(
        "/apis/switchyard/v1/runs/{id}".to_string(),
        "get",
        op(
            "A run with its pipeline spec and every task's inputs and outputs (the dashboard's view)",
            vec![path_param("id")],
            None,
            "Empty",
        ),
    );
    let q = |name: &str, required: bool, ty: &str| json!({"name": name, "in": "query", "required": required, "schema": {"type": ty}});
    let mut art_op = op(
        "An artifact a task produced: the file, a folder's listing, or a 64 KiB preview",
        vec![
            path_param("id"),
            q("task", true, "string"),
            q("output", true, "string"),
            json!({"name": "index", "in": "query", "schema": {"type": "integer", "minimum": 0}}),
            q("file", false, "string"),
            q("preview", false, "boolean"),
        ],
        None,
        "Empty",
    );
    art_op["responses"]["200"] = json!({"description": "the artifact", "content": {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "application/json": {"schema": {"type": "object"}}}});
    paths.add(
        "/apis/switchyard/v1/runs/{id}/artifact".to_string(),
        "get",
        art_op,
    );
    paths.add(
        "/apis/switchyard/v1/jobs/{id}/metrics".to_string(),
        "get",
        op(
            "A training job's scraped metric values over time",
            vec![path_param("id")],
            None,
            "Empty",
        ),
    );
}
