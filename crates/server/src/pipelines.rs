//! `/apis/v2beta1/pipelines`: pipelines and their versions, created from an
//! upload, a JSON body or both at once, updated (display name and tags),
//! listed with KFP's filters (tags included) and deleted as KFP does (a
//! pipeline with versions only with `cascade=true`).

use axum::extract::{Multipart, Path, Query, State};
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_kfp_spec::ParsedPipeline;
use switchyard_store::{PipelineRecord, PipelineVersionRecord, Tags};

use crate::error::{ApiError, ApiResult};
use crate::http::{body, list_response, off_runtime, JsonBody};
use crate::list::ListQuery;
use crate::messages;
use crate::render;
use crate::{tags, AppState};

/// KFP's column sizes: longer names are refused.
const MAX_PIPELINE_NAME: usize = 128;
const MAX_VERSION_NAME: usize = 127;

/// Parses and validates an uploaded or inline pipeline; returns what is stored.
/// Runs on a blocking thread: a large spec takes seconds to parse, and the
/// runtime's workers must keep answering other requests meanwhile.
pub(crate) async fn checked_pipeline(text: String) -> ApiResult<(ParsedPipeline, Value)> {
    off_runtime(move || checked_pipeline_now(&text)).await
}

fn checked_pipeline_now(text: &str) -> ApiResult<(ParsedPipeline, Value)> {
    let parsed = switchyard_kfp_spec::parse_pipeline(text)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    check_pipeline_name(&parsed.spec.pipeline_info.name)?;
    switchyard_kfp_spec::validate(&parsed.spec).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    // The document as uploaded, as KFP stores and returns it.
    let stored = match &parsed.platform_spec {
        Some(p) => json!({"pipeline_spec": parsed.document, "platform_spec": p}),
        None => json!({ "pipeline_spec": parsed.document }),
    };
    Ok((parsed, stored))
}

/// KFP's rule for `pipelineInfo.name` (it names the run's resources).
fn check_pipeline_name(name: &str) -> ApiResult<()> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.len() <= MAX_PIPELINE_NAME;
    if ok {
        return Ok(());
    }
    Err(ApiError::BadRequest(format!(
        "pipelineInfo.name '{name}': a pipeline's name must contain only lowercase alphanumeric characters or '-', start with an alphanumeric character and have no more than {MAX_PIPELINE_NAME} characters (compile it with a name such as 'my-pipeline')"
    )))
}

fn check_length(what: &str, name: &str, max: usize) -> ApiResult<()> {
    if name.len() > max {
        return Err(ApiError::BadRequest(format!(
            "{what} length cannot exceed {max} (it is {} bytes)",
            name.len()
        )));
    }
    Ok(())
}

/// A multipart error, 413 when the body passed --max-body-bytes.
fn upload_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::body_too_large()
    } else {
        ApiError::BadRequest(format!("invalid upload: {e}"))
    }
}

/// The pipeline text of the multipart field `uploadfile`, and the file's name.
/// The whole body is read before anything is refused: an answer sent while
/// a client still streams its upload ends the connection it would reuse.
async fn read_upload(mut mp: Multipart) -> ApiResult<(String, Option<String>)> {
    let mut file = None;
    while let Some(field) = mp.next_field().await.map_err(upload_error)? {
        if field.name() == Some("uploadfile") && file.is_none() {
            let file_name = field.file_name().map(str::to_string);
            let bytes = field.bytes().await.map_err(upload_error)?;
            file = Some((file_name, bytes));
        } else {
            field.bytes().await.map_err(upload_error)?;
        }
    }
    let (file_name, bytes) =
        file.ok_or_else(|| ApiError::BadRequest("the upload has no 'uploadfile' field".into()))?;
    // Unpacking an archive takes time: not on the runtime's workers.
    let name = file_name.clone();
    let text = off_runtime(move || crate::package::pipeline_text(name.as_deref(), &bytes)).await?;
    Ok((text, file_name))
}

/// What the upload endpoints read from the query string (KFP reads nothing
/// else from the form).
#[derive(Deserialize, Default)]
pub(crate) struct UploadQuery {
    name: Option<String>,
    display_name: Option<String>,
    description: Option<String>,
    pipelineid: Option<String>,
    tags: Option<String>,
    #[allow(dead_code)]
    namespace: Option<String>,
}

fn stem(file: &Option<String>) -> Option<String> {
    file.as_deref()
        .map(|f| f.rsplit('/').next().unwrap_or(f))
        .map(|f| f.split('.').next().unwrap_or(f).to_string())
        .filter(|s| !s.is_empty())
}

fn given(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// A new version of a pipeline; its display name is its name unless given.
fn new_version(
    pipeline_id: String,
    name: String,
    display_name: Option<String>,
    description: Option<String>,
    spec: Value,
    tags: Tags,
) -> PipelineVersionRecord {
    PipelineVersionRecord {
        id: uuid::Uuid::new_v4().to_string(),
        pipeline_id,
        display_name: given(display_name).unwrap_or_else(|| name.clone()),
        name,
        description,
        spec,
        created_at: Utc::now(),
        tags,
    }
}

/// A pipeline and its first version, which shares its names and description.
fn pipeline_and_first(
    name: String,
    display_name: Option<String>,
    description: Option<String>,
    pipeline_tags: Tags,
    version_tags: Tags,
    stored: Value,
) -> (PipelineRecord, PipelineVersionRecord) {
    let display_name = given(display_name).unwrap_or_else(|| name.clone());
    let p = PipelineRecord {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.clone(),
        display_name: display_name.clone(),
        description: description.clone(),
        created_at: Utc::now(),
        tags: pipeline_tags,
    };
    let v = new_version(
        p.id.clone(),
        name,
        Some(display_name),
        description,
        stored,
        version_tags,
    );
    (p, v)
}

pub(crate) async fn upload_pipeline(
    State(s): State<AppState>,
    Query(q): Query<UploadQuery>,
    mp: Multipart,
) -> ApiResult<Json<Value>> {
    let (text, file) = read_upload(mp).await?;
    let pipeline_tags = tags::from_query(q.tags.as_deref())?;
    let (parsed, stored) = checked_pipeline(text).await?;
    let name = given(q.name)
        .or(given(q.display_name.clone()))
        .or_else(|| stem(&file))
        .unwrap_or_else(|| parsed.spec.pipeline_info.name.clone());
    check_length("Pipeline.Name", &name, MAX_PIPELINE_NAME)?;
    let (p, v) = pipeline_and_first(
        name,
        q.display_name,
        given(q.description),
        pipeline_tags,
        Tags::new(),
        stored,
    );
    s.catalog.create_pipeline(&p, Some(&v)).await?;
    Ok(Json(render::pipeline(&p)))
}

pub(crate) async fn upload_version(
    State(s): State<AppState>,
    Query(q): Query<UploadQuery>,
    mp: Multipart,
) -> ApiResult<Json<Value>> {
    let (text, file) = read_upload(mp).await?;
    let pid = given(q.pipelineid.clone())
        .ok_or_else(|| ApiError::BadRequest("pipelineid is required".into()))?;
    let version_tags = tags::from_query(q.tags.as_deref())?;
    s.catalog.get_pipeline(&pid).await?;
    let (_, stored) = checked_pipeline(text).await?;
    let name = given(q.name)
        .or(given(q.display_name.clone()))
        .or_else(|| stem(&file))
        .unwrap_or_else(|| Utc::now().to_rfc3339());
    check_length("PipelineVersion.Name", &name, MAX_VERSION_NAME)?;
    let v = new_version(
        pid,
        name,
        q.display_name,
        given(q.description),
        stored,
        version_tags,
    );
    s.catalog.create_version(&v).await?;
    Ok(Json(render::version(&v, true)))
}

/// A pipeline's name from its body: `name`, else `display_name`.
fn pipeline_name(b: &messages::Pipeline) -> ApiResult<String> {
    let name = given(b.name.clone())
        .or(given(b.display_name.clone()))
        .ok_or_else(|| ApiError::BadRequest("pipeline name is required".into()))?;
    check_length("Pipeline.Name", &name, MAX_PIPELINE_NAME)?;
    Ok(name)
}

pub(crate) async fn create_pipeline(
    State(s): State<AppState>,
    b: JsonBody<messages::Pipeline>,
) -> ApiResult<Json<Value>> {
    let b = body(b)?;
    let name = pipeline_name(&b)?;
    let tags = tags::checked(b.tags)?;
    let p = PipelineRecord {
        id: uuid::Uuid::new_v4().to_string(),
        display_name: given(b.display_name).unwrap_or_else(|| name.clone()),
        name,
        description: given(b.description),
        created_at: Utc::now(),
        tags,
    };
    s.catalog.create_pipeline(&p, None).await?;
    Ok(Json(render::pipeline(&p)))
}

/// The spec of a version created from a body: inline (`package_url` would
/// mean fetching from the network, which this server never does).
async fn inline_spec(v: &messages::PipelineVersion) -> ApiResult<Value> {
    match (&v.pipeline_spec, &v.package_url) {
        (Some(spec), _) => Ok(checked_pipeline(spec.to_string()).await?.1),
        (None, Some(url)) => Err(ApiError::BadRequest(format!(
            "package_url {}: this server fetches nothing from the network; give pipeline_spec inline, or upload the file to /apis/v2beta1/pipelines/upload",
            url.pipeline_url.as_deref().unwrap_or("(empty)")
        ))),
        (None, None) => Err(ApiError::BadRequest(
            "a pipeline version needs pipeline_spec (the compiled pipeline, inline)".into(),
        )),
    }
}

/// `POST /pipelines/create`: a pipeline and its first version in one call.
pub(crate) async fn create_pipeline_and_version(
    State(s): State<AppState>,
    b: JsonBody<messages::PipelineAndVersion>,
) -> ApiResult<Json<Value>> {
    let b = body(b)?;
    let pipeline = b
        .pipeline
        .ok_or_else(|| ApiError::BadRequest("pipeline is required".into()))?;
    let version = b
        .pipeline_version
        .ok_or_else(|| ApiError::BadRequest("pipeline_version is required".into()))?;
    let name = pipeline_name(&pipeline)?;
    let pipeline_tags = tags::checked(pipeline.tags)?;
    let version_tags = tags::checked(version.tags.clone())?;
    let stored = inline_spec(&version).await?;
    let (p, v) = pipeline_and_first(
        name,
        pipeline.display_name,
        given(pipeline.description),
        pipeline_tags,
        version_tags,
        stored,
    );
    s.catalog.create_pipeline(&p, Some(&v)).await?;
    Ok(Json(render::pipeline(&p)))
}

pub(crate) async fn list_pipelines(
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let items = s
        .catalog
        .list_pipelines()
        .await?
        .iter()
        .map(render::pipeline)
        .collect();
    list_response("pipelines", items, &q, "created_at", true)
}

pub(crate) async fn get_pipeline(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(render::pipeline(&s.catalog.get_pipeline(&id).await?)))
}

pub(crate) async fn pipeline_by_name(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let p = s
        .catalog
        .pipeline_by_name(&name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no pipeline named '{name}'")))?;
    Ok(Json(render::pipeline(&p)))
}

/// The mutable fields KFP's updates change: a non-empty display name, and the
/// whole set of tags when `tags` is given (`{}` clears them); `None`: unchanged.
fn updated(
    new_name: Option<String>,
    new_tags: Option<Tags>,
) -> ApiResult<(Option<String>, Option<Tags>)> {
    if let Some(t) = &new_tags {
        tags::validate(t)?;
    }
    Ok((given(new_name), new_tags))
}

/// `PATCH /pipelines/{id}` (KFP's UpdatePipeline): display name and tags;
/// the other fields of the body are read and left as they are.
pub(crate) async fn update_pipeline(
    State(s): State<AppState>,
    Path(id): Path<String>,
    b: JsonBody<messages::Pipeline>,
) -> ApiResult<Json<Value>> {
    let b = body(b)?;
    let (name, tags) = updated(b.display_name, b.tags)?;
    s.catalog
        .update_pipeline(&id, name.as_deref(), tags.as_ref())
        .await?;
    Ok(Json(render::pipeline(&s.catalog.get_pipeline(&id).await?)))
}

#[derive(Deserialize, Default)]
pub(crate) struct DeleteQuery {
    cascade: Option<bool>,
}

/// A pipeline with versions is deleted only with `cascade=true`, as in KFP.
pub(crate) async fn delete_pipeline(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> ApiResult<Json<Value>> {
    s.catalog.get_pipeline(&id).await?;
    if !q.cascade.unwrap_or(false) {
        let versions = s.catalog.list_versions(&id).await?;
        if let Some(v) = versions.first() {
            return Err(ApiError::BadRequest(format!(
                "pipeline {id} has {} version(s) (e.g. {}): delete them first, or pass cascade=true to delete the pipeline with its versions",
                versions.len(),
                v.id
            )));
        }
    }
    s.catalog.delete_pipeline(&id).await?;
    Ok(Json(json!({})))
}

pub(crate) async fn list_versions(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    s.catalog.get_pipeline(&id).await?;
    let versions = s.catalog.list_versions(&id).await?;
    let items = versions.iter().map(|v| render::version(v, false)).collect();
    let Json(mut page) = list_response("pipeline_versions", items, &q, "created_at", true)?;
    // Each version of the page with its spec, as KFP lists them; added after
    // paging, so a long list of large specs is not copied whole.
    let specs: std::collections::BTreeMap<&str, &Value> =
        versions.iter().map(|v| (v.id.as_str(), &v.spec)).collect();
    if let Some(list) = page
        .get_mut("pipeline_versions")
        .and_then(Value::as_array_mut)
    {
        for item in list {
            let spec = item["pipeline_version_id"]
                .as_str()
                .and_then(|id| specs.get(id));
            if let Some(spec) = spec {
                item["pipeline_spec"] = render::stored_spec(spec);
            }
        }
    }
    Ok(Json(page))
}

/// A version from an inline `pipeline_spec`.
pub(crate) async fn create_version(
    State(s): State<AppState>,
    Path(id): Path<String>,
    b: JsonBody<messages::PipelineVersion>,
) -> ApiResult<Json<Value>> {
    let b = body(b)?;
    s.catalog.get_pipeline(&id).await?;
    let tags = tags::checked(b.tags.clone())?;
    let stored = inline_spec(&b).await?;
    let name = given(b.name)
        .or(given(b.display_name.clone()))
        .unwrap_or_else(|| Utc::now().to_rfc3339());
    check_length("PipelineVersion.Name", &name, MAX_VERSION_NAME)?;
    let v = new_version(id, name, b.display_name, given(b.description), stored, tags);
    s.catalog.create_version(&v).await?;
    Ok(Json(render::version(&v, true)))
}

/// A version by its id. As in KFP, the pipeline id of the path is not
/// checked: a version id is unique on its own.
pub(crate) async fn get_version(
    State(s): State<AppState>,
    Path((_, vid)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    Ok(Json(render::version(
        &s.catalog.get_version(&vid).await?,
        true,
    )))
}

/// `PATCH /pipelines/{id}/versions/{vid}` (KFP's UpdatePipelineVersion).
pub(crate) async fn update_version(
    State(s): State<AppState>,
    Path((_, vid)): Path<(String, String)>,
    b: JsonBody<messages::PipelineVersion>,
) -> ApiResult<Json<Value>> {
    let b = body(b)?;
    let (name, tags) = updated(b.display_name, b.tags)?;
    s.catalog
        .update_version(&vid, name.as_deref(), tags.as_ref())
        .await?;
    Ok(Json(render::version(
        &s.catalog.get_version(&vid).await?,
        true,
    )))
}

pub(crate) async fn delete_version(
    State(s): State<AppState>,
    Path((_, vid)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    s.catalog.delete_version(&vid).await?;
    Ok(Json(json!({})))
}
