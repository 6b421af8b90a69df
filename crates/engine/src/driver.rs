//! The run driver: walks a pipeline's DAGs, starts each task when its upstream
//! tasks are done, and records every state change in the store.
//!
//! Containers are handed to the [`Backend`]; DAG components (conditions, loops,
//! exit-handler bodies, pipelines used as components) recurse into `run_dag`.
//! Task keys are stable paths (`for-loop-2[1]/train`), so a resumed run finds the
//! tasks that already succeeded and does not run them again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::{json, Map, Value};
use switchyard_spec::params::{from_output_file, normalize};
use switchyard_spec::{ComponentSpec, ContainerSpec, ImporterSpec, PipelineSpec, TaskSpec};
use switchyard_store::{CacheEntry, RunStore, State, TaskRecord};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, BackendError, Job, JobOutcome, LogSink};
use crate::events::{Event, EventSender};
use crate::expr::{eval_condition, eval_selector};
use crate::fingerprint::fingerprint;
use crate::io::{Artifact, ArtifactTypeJson, Io};
use crate::placeholder::{resolve_all, PlaceholderContext};
use crate::retry::backoff;

/// Everything one run's tasks share.
pub(crate) struct RunCtx {
    pub run_id: String,
    pub pipeline_name: String,
    pub spec: PipelineSpec,
    /// `<pipeline_root>/<pipeline>/<run>`: where this run's artifacts go.
    pub run_dir: PathBuf,
    pub pipeline_root: String,
    /// The run's creation time, RFC 3339.
    pub created_at: String,
    pub logs_dir: PathBuf,
    pub cache: bool,
    pub resume: bool,
    pub slots: Semaphore,
    pub cancel: CancellationToken,
    pub events: EventSender,
    pub store: Arc<dyn RunStore>,
    pub backend: Arc<dyn Backend>,
    /// Container tasks that failed for good: (task key, message), in order.
    pub failures: Mutex<Vec<(String, String)>>,
}

/// How a task or DAG ended, with what it produced.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub state: State,
    pub outputs: Io,
    pub error: Option<String>,
}

impl Outcome {
    fn ended(state: State, error: Option<String>) -> Self {
        Outcome {
            state,
            outputs: Io::default(),
            error,
        }
    }
    /// Failed, canceled, or skipped because something upstream did not succeed:
    /// downstream tasks do not run (unless they ask to run after failures).
    fn bad(&self) -> bool {
        matches!(self.state, State::Failed | State::Canceled)
            || (self.state == State::Skipped && self.error.is_some())
    }
}

/// Where a DAG sits in the run: the key prefix of its tasks and its owner's key.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scope {
    prefix: String,
    parent: Option<String>,
}

impl Scope {
    fn key(&self, task: &str) -> String {
        format!("{}{}", self.prefix, task)
    }
    fn child(key: &str) -> Scope {
        Scope {
            prefix: format!("{key}/"),
            parent: Some(key.to_string()),
        }
    }
    fn iteration(key: &str, i: usize) -> Scope {
        Scope {
            prefix: format!("{key}[{i}]/"),
            parent: Some(key.to_string()),
        }
    }
}

/// A file-system-safe name for a task key.
pub(crate) fn key_dir(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '/' | '[' => '.',
            c if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' || c == ']' => c,
            _ => '_',
        })
        .filter(|c| *c != ']')
        .collect::<String>()
}

impl RunCtx {
    fn component(&self, name: &str) -> Option<&ComponentSpec> {
        if name == "root" {
            Some(&self.spec.root)
        } else {
            self.spec.components.get(name)
        }
    }

    fn new_record(&self, key: &str, name: &str, scope: &Scope, kind: &str) -> TaskRecord {
        TaskRecord {
            run_id: self.run_id.clone(),
            task_key: key.to_string(),
            name: name.to_string(),
            parent_key: scope.parent.clone(),
            kind: kind.to_string(),
            state: State::Pending,
            attempt: 0,
            cached: false,
            inputs: None,
            outputs: None,
            log_path: None,
            error: None,
            fingerprint: None,
            started_at: None,
            finished_at: None,
        }
    }

    /// Writes the record and tells watchers. A store failure is returned so the
    /// task fails visibly instead of running on with an unrecorded state.
    async fn save(&self, rec: &TaskRecord) -> Result<(), String> {
        self.store.put_task(rec).await.map_err(|e| e.to_string())?;
        let kind = match rec.kind.as_str() {
            "container" => "container",
            "importer" => "importer",
            "loop" => "loop",
            _ => "dag",
        };
        let _ = self.events.send(Event::Task {
            key: rec.task_key.clone(),
            name: rec.name.clone(),
            kind,
            state: rec.state,
            cached: rec.cached,
            attempt: rec.attempt,
            error: rec.error.clone(),
            at: Utc::now(),
        });
        Ok(())
    }

    /// Records a final state for a task and returns the matching outcome.
    async fn finish(
        &self,
        rec: &mut TaskRecord,
        state: State,
        outputs: Io,
        error: Option<String>,
    ) -> Outcome {
        rec.state = state;
        rec.error = error.clone();
        rec.finished_at = Some(Utc::now());
        if state == State::Succeeded {
            rec.outputs = Some(outputs.to_value());
        }
        if let Err(e) = self.save(rec).await {
            return Outcome::ended(
                State::Failed,
                Some(format!("could not record task '{}': {e}", rec.task_key)),
            );
        }
        Outcome {
            state,
            outputs,
            error,
        }
    }
}

/// Runs one DAG component to the end and returns its outputs.
pub(crate) fn run_dag(
    ctx: Arc<RunCtx>,
    scope: Scope,
    comp_name: String,
    inputs: Io,
) -> BoxFuture<'static, Outcome> {
    Box::pin(async move {
        let Some(dag) = ctx.component(&comp_name).and_then(|c| c.dag.as_ref()) else {
            return Outcome::ended(
                State::Failed,
                Some(format!("component '{comp_name}' has no DAG")),
            );
        };
        let inputs = Arc::new(inputs);
        let mut results: BTreeMap<String, Outcome> = BTreeMap::new();
        let mut started: BTreeSet<String> = BTreeSet::new();
        let mut running = FuturesUnordered::new();
        loop {
            // Start everything that is ready; a skip can make more tasks ready.
            let mut progressed = true;
            while progressed {
                progressed = false;
                for (name, task) in &dag.tasks {
                    let ups = task.upstream();
                    if started.contains(name) || !ups.iter().all(|u| results.contains_key(*u)) {
                        continue;
                    }
                    started.insert(name.clone());
                    progressed = true;
                    let failed_up = ups
                        .iter()
                        .find(|u| results.get(**u).is_some_and(Outcome::bad));
                    if let (Some(up), false) = (failed_up, task.runs_after_upstream_failure()) {
                        let mut rec = ctx.new_record(&scope.key(name), name, &scope, "skipped");
                        let msg =
                            format!("not run: upstream task '{}' did not succeed", scope.key(up));
                        let out = ctx
                            .finish(&mut rec, State::Skipped, Io::default(), Some(msg))
                            .await;
                        results.insert(
                            name.clone(),
                            Outcome {
                                state: State::Skipped,
                                ..out
                            },
                        );
                        continue;
                    }
                    if ctx.cancel.is_cancelled() && !task.runs_after_upstream_failure() {
                        results.insert(
                            name.clone(),
                            Outcome::ended(State::Canceled, Some("run canceled".into())),
                        );
                        continue;
                    }
                    let upstream: BTreeMap<String, Outcome> = ups
                        .iter()
                        .filter_map(|u| results.get(*u).map(|o| (u.to_string(), o.clone())))
                        .collect();
                    let fut = run_task(
                        ctx.clone(),
                        scope.clone(),
                        inputs.clone(),
                        comp_name.clone(),
                        name.clone(),
                        upstream,
                    );
                    let name = name.clone();
                    running.push(async move { (name, fut.await) });
                }
            }
            match running.next().await {
                Some((name, outcome)) => {
                    results.insert(name, outcome);
                }
                None => break,
            }
        }
        dag_outcome(&ctx, &comp_name, &results)
    })
}

/// A DAG's state and outputs from its tasks' outcomes.
fn dag_outcome(ctx: &RunCtx, comp_name: &str, results: &BTreeMap<String, Outcome>) -> Outcome {
    let bad = results.iter().find(|(_, o)| o.state == State::Failed);
    let canceled =
        results.values().any(|o| o.state == State::Canceled) || ctx.cancel.is_cancelled();
    let dag = ctx.component(comp_name).and_then(|c| c.dag.as_ref());
    if let Some((name, o)) = bad {
        // Leaf errors already name their full task key; pass them up unchanged.
        let msg = o
            .error
            .clone()
            .unwrap_or_else(|| format!("task '{name}' failed"));
        return Outcome::ended(State::Failed, Some(msg));
    }
    if canceled {
        return Outcome::ended(State::Canceled, Some("run canceled".into()));
    }
    let mut outputs = Io::default();
    if let Some(dag) = dag {
        for (name, sel) in &dag.outputs.parameters {
            let selectors: Vec<(&str, &str)> =
                match (&sel.value_from_parameter, &sel.value_from_oneof) {
                    (Some(p), _) => {
                        vec![(p.producer_subtask.as_str(), p.output_parameter_key.as_str())]
                    }
                    (None, Some(o)) => o
                        .parameter_selectors
                        .iter()
                        .map(|s| (s.producer_subtask.as_str(), s.output_parameter_key.as_str()))
                        .collect(),
                    _ => vec![],
                };
            let value = selectors.iter().find_map(|(task, key)| {
                results
                    .get(*task)
                    .filter(|o| o.state == State::Succeeded)
                    .and_then(|o| o.outputs.parameters.get(*key).cloned())
            });
            if let Some(v) = value {
                outputs.parameters.insert(name.clone(), v);
            }
        }
        for (name, sel) in &dag.outputs.artifacts {
            let value = sel.artifact_selectors.iter().find_map(|s| {
                results
                    .get(&s.producer_subtask)
                    .filter(|o| o.state == State::Succeeded)
                    .and_then(|o| o.outputs.artifacts.get(&s.output_artifact_key).cloned())
            });
            if let Some(v) = value {
                outputs.artifacts.insert(name.clone(), v);
            }
        }
    }
    Outcome {
        state: State::Succeeded,
        outputs,
        error: None,
    }
}

/// Runs one task of a DAG: resolves its inputs, checks its condition, then
/// dispatches to a loop, a sub-DAG or an executor.
fn run_task(
    ctx: Arc<RunCtx>,
    scope: Scope,
    dag_inputs: Arc<Io>,
    dag_comp: String,
    name: String,
    upstream: BTreeMap<String, Outcome>,
) -> BoxFuture<'static, Outcome> {
    Box::pin(async move {
        let key = scope.key(&name);
        let Some(task) = ctx
            .component(&dag_comp)
            .and_then(|c| c.dag.as_ref())
            .and_then(|d| d.tasks.get(&name))
            .cloned()
        else {
            return Outcome::ended(State::Failed, Some(format!("task '{key}' not found")));
        };
        let comp_name = task.component_ref.name.clone();
        let Some(comp) = ctx.component(&comp_name).cloned() else {
            return Outcome::ended(
                State::Failed,
                Some(format!("task '{key}': component '{comp_name}' not found")),
            );
        };
        let kind = if task.parameter_iterator.is_some() || task.artifact_iterator.is_some() {
            "loop"
        } else if comp.dag.is_some() {
            "dag"
        } else {
            "container"
        };
        let mut rec = ctx.new_record(&key, &name, &scope, kind);
        let inputs = match resolve_inputs(&ctx, &task, &comp, &dag_inputs, &upstream) {
            Ok(i) => i,
            Err(e) => {
                let msg = format!("task '{key}': {e}");
                ctx.failures
                    .lock()
                    .map(|mut f| f.push((key.clone(), msg.clone())))
                    .ok();
                return ctx
                    .finish(&mut rec, State::Failed, Io::default(), Some(msg))
                    .await;
            }
        };
        rec.inputs = Some(inputs.to_value());
        if let Some(cond) = task
            .trigger_policy
            .as_ref()
            .and_then(|t| t.condition.as_deref())
            .filter(|c| !c.is_empty())
        {
            match eval_condition(cond, &inputs.parameters) {
                Ok(true) => {}
                Ok(false) => {
                    return ctx
                        .finish(&mut rec, State::Skipped, Io::default(), None)
                        .await
                }
                Err(e) => {
                    let msg = format!("task '{key}': {e}");
                    ctx.failures
                        .lock()
                        .map(|mut f| f.push((key.clone(), msg.clone())))
                        .ok();
                    return ctx
                        .finish(&mut rec, State::Failed, Io::default(), Some(msg))
                        .await;
                }
            }
        }
        rec.state = State::Running;
        rec.started_at = Some(Utc::now());
        if kind != "container" {
            if let Err(e) = ctx.save(&rec).await {
                return Outcome::ended(State::Failed, Some(e));
            }
        }
        match kind {
            "loop" => run_loop(&ctx, &key, &task, &comp_name, &comp, inputs, rec).await,
            "dag" => {
                let out = run_dag(ctx.clone(), Scope::child(&key), comp_name, inputs).await;
                ctx.finish(&mut rec, out.state, out.outputs, out.error)
                    .await
            }
            _ => run_executor(&ctx, &key, &task, &comp, inputs, rec).await,
        }
    })
}

/// The value a `taskFinalStatus` input receives.
fn final_status(ctx: &RunCtx, producer_key: &str, o: &Outcome) -> Value {
    let failed = o.state != State::Succeeded && o.state != State::Skipped;
    json!({
        "state": o.state.as_str(),
        "error": {"code": if failed { 1 } else { 0 }, "message": o.error.clone().unwrap_or_default()},
        "pipelineJobResourceName": format!("{}/{}", ctx.pipeline_name, ctx.run_id),
        "pipelineTaskName": producer_key,
    })
}

/// Resolves a task's inputs from the enclosing DAG's inputs, upstream outputs and
/// constants; applies selectors, component defaults and declared types.
fn resolve_inputs(
    ctx: &RunCtx,
    task: &TaskSpec,
    comp: &ComponentSpec,
    dag_inputs: &Io,
    upstream: &BTreeMap<String, Outcome>,
) -> Result<Io, String> {
    let mut io = Io::default();
    for (pname, p) in &task.inputs.parameters {
        let mut value: Option<Value> = if let Some(src) = &p.component_input_parameter {
            dag_inputs.parameters.get(src).cloned()
        } else if let Some(t) = &p.task_output_parameter {
            let o = upstream.get(&t.producer_task);
            match o {
                Some(o) if o.state == State::Succeeded => Some(
                    o.outputs
                        .parameters
                        .get(&t.output_parameter_key)
                        .cloned()
                        .ok_or_else(|| {
                            format!(
                                "input '{pname}': task '{}' did not produce output '{}'",
                                t.producer_task, t.output_parameter_key
                            )
                        })?,
                ),
                _ => None,
            }
        } else if let Some(rv) = &p.runtime_value {
            Some(rv.constant.clone())
        } else if let Some(fs) = &p.task_final_status {
            let o = upstream
                .get(&fs.producer_task)
                .cloned()
                .unwrap_or_else(|| Outcome::ended(State::Skipped, None));
            Some(final_status(ctx, &fs.producer_task, &o))
        } else {
            None
        };
        if let (Some(sel), Some(v)) = (&p.parameter_expression_selector, &value) {
            value = Some(eval_selector(sel, v).map_err(|e| format!("input '{pname}': {e}"))?);
        }
        if let Some(v) = value {
            // Executors get values of their declared type; DAG components pass values
            // through untouched, as KFP's driver does (loop items of untyped lists).
            let v = match comp.input_definitions.parameters.get(pname) {
                Some(def) if comp.executor_label.is_some() => {
                    normalize(def.parameter_type, v).map_err(|e| format!("input '{pname}': {e}"))?
                }
                _ => v,
            };
            io.parameters.insert(pname.clone(), v);
        }
    }
    for (aname, a) in &task.inputs.artifacts {
        let value = if let Some(src) = &a.component_input_artifact {
            dag_inputs.artifacts.get(src).cloned()
        } else if let Some(t) = &a.task_output_artifact {
            match upstream.get(&t.producer_task) {
                Some(o) if o.state == State::Succeeded => {
                    o.outputs.artifacts.get(&t.output_artifact_key).cloned()
                }
                _ => None,
            }
        } else {
            None
        };
        if let Some(v) = value {
            io.artifacts.insert(aname.clone(), v);
        }
    }
    for (pname, def) in &comp.input_definitions.parameters {
        if io.parameters.contains_key(pname) {
            continue;
        }
        if let Some(d) = &def.default_value {
            let v = normalize(def.parameter_type, d.clone())
                .map_err(|e| format!("default of input '{pname}': {e}"))?;
            io.parameters.insert(pname.clone(), v);
        } else if comp.executor_label.is_some()
            && !def.is_optional
            && task.parameter_iterator.is_none()
        {
            return Err(format!(
                "required input '{pname}' has no value (its producer was skipped or produced nothing)"
            ));
        }
    }
    if comp.executor_label.is_some() {
        for (aname, def) in &comp.input_definitions.artifacts {
            if !io.artifacts.contains_key(aname) && !def.is_optional {
                return Err(format!(
                    "required input artifact '{aname}' has no value (its producer was skipped)"
                ));
            }
        }
    }
    Ok(io)
}

/// `dsl.ParallelFor`: one DAG run per item, at most `parallelismLimit` at once;
/// outputs become lists (what `dsl.Collected` reads).
async fn run_loop(
    ctx: &Arc<RunCtx>,
    key: &str,
    task: &TaskSpec,
    comp_name: &str,
    comp: &ComponentSpec,
    inputs: Io,
    mut rec: TaskRecord,
) -> Outcome {
    enum Item {
        Param(String, Value),
        Art(String, Artifact),
    }
    let items: Result<Vec<Item>, String> = if let Some(it) = &task.parameter_iterator {
        let list = if let Some(raw) = &it.items.raw {
            serde_json::from_str::<Value>(raw).map_err(|e| format!("loop items are not JSON: {e}"))
        } else {
            let name = it.items.input_parameter.clone().unwrap_or_default();
            match inputs.parameters.get(&name) {
                Some(Value::String(s)) => serde_json::from_str::<Value>(s).map_err(|_| {
                    format!("loop input '{name}' is a string that is not a JSON list: {s}")
                }),
                Some(v) => Ok(v.clone()),
                None => Err(format!("loop input '{name}' has no value")),
            }
        };
        list.and_then(|l| match l {
            Value::Array(a) => Ok(a
                .into_iter()
                .map(|v| Item::Param(it.item_input.clone(), v))
                .collect()),
            other => Err(format!("ParallelFor items must be a list, got {other}")),
        })
    } else if let Some(it) = &task.artifact_iterator {
        inputs
            .artifacts
            .get(&it.items.input_artifact)
            .map(|l| {
                l.iter()
                    .map(|a| Item::Art(it.item_input.clone(), a.clone()))
                    .collect()
            })
            .ok_or_else(|| {
                format!(
                    "loop input artifact '{}' has no value",
                    it.items.input_artifact
                )
            })
    } else {
        Ok(vec![])
    };
    let items = match items {
        Ok(i) => i,
        Err(e) => {
            let msg = format!("task '{key}': {e}");
            ctx.failures
                .lock()
                .map(|mut f| f.push((key.to_string(), msg.clone())))
                .ok();
            return ctx
                .finish(&mut rec, State::Failed, Io::default(), Some(msg))
                .await;
        }
    };
    let limit = task
        .iterator_policy
        .as_ref()
        .map(|p| p.parallelism_limit as usize)
        .unwrap_or(0);
    let gate = Arc::new(Semaphore::new(if limit == 0 {
        Semaphore::MAX_PERMITS
    } else {
        limit
    }));
    let mut iterations = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let mut it_inputs = inputs.clone();
        match item {
            Item::Param(name, v) => {
                it_inputs.parameters.insert(name, v);
            }
            Item::Art(name, a) => {
                it_inputs.artifacts.insert(name, vec![a]);
            }
        }
        let (ctx, gate, comp_name, scope) = (
            ctx.clone(),
            gate.clone(),
            comp_name.to_string(),
            Scope::iteration(key, i),
        );
        iterations.push(async move {
            let _permit = gate.acquire_owned().await;
            run_dag(ctx, scope, comp_name, it_inputs).await
        });
    }
    let outcomes = futures::future::join_all(iterations).await;
    if let Some((i, o)) = outcomes
        .iter()
        .enumerate()
        .find(|(_, o)| o.state == State::Failed)
    {
        let msg = o
            .error
            .clone()
            .unwrap_or_else(|| format!("iteration {i} failed"));
        return ctx
            .finish(&mut rec, State::Failed, Io::default(), Some(msg))
            .await;
    }
    if outcomes.iter().any(|o| o.state == State::Canceled) || ctx.cancel.is_cancelled() {
        return ctx
            .finish(
                &mut rec,
                State::Canceled,
                Io::default(),
                Some("run canceled".into()),
            )
            .await;
    }
    let mut outputs = Io::default();
    if let Some(dag) = &comp.dag {
        for name in dag.outputs.parameters.keys() {
            let list: Vec<Value> = outcomes
                .iter()
                .filter_map(|o| o.outputs.parameters.get(name).cloned())
                .collect();
            outputs.parameters.insert(name.clone(), Value::Array(list));
        }
        for name in dag.outputs.artifacts.keys() {
            let list: Vec<Artifact> = outcomes
                .iter()
                .filter_map(|o| o.outputs.artifacts.get(name))
                .flatten()
                .cloned()
                .collect();
            outputs.artifacts.insert(name.clone(), list);
        }
    }
    ctx.finish(&mut rec, State::Succeeded, outputs, None).await
}

/// A container or importer task.
async fn run_executor(
    ctx: &Arc<RunCtx>,
    key: &str,
    task: &TaskSpec,
    comp: &ComponentSpec,
    inputs: Io,
    mut rec: TaskRecord,
) -> Outcome {
    let label = comp.executor_label.clone().unwrap_or_default();
    let Some(exec) = ctx.spec.deployment_spec.executors.get(&label).cloned() else {
        let msg = format!("task '{key}': executor '{label}' not found");
        return ctx
            .finish(&mut rec, State::Failed, Io::default(), Some(msg))
            .await;
    };
    if let Some(imp) = &exec.importer {
        rec.kind = "importer".into();
        return run_importer(ctx, key, imp, &inputs, rec).await;
    }
    let Some(container) = exec.container else {
        let msg = format!("task '{key}': executor '{label}' has no container");
        return ctx
            .finish(&mut rec, State::Failed, Io::default(), Some(msg))
            .await;
    };
    match run_container(ctx, key, task, comp, &container, inputs, &mut rec).await {
        Ok(o) => o,
        Err(msg) => {
            let msg = format!("task '{key}': {msg}");
            ctx.failures
                .lock()
                .map(|mut f| f.push((key.to_string(), msg.clone())))
                .ok();
            ctx.finish(&mut rec, State::Failed, Io::default(), Some(msg))
                .await
        }
    }
}

async fn run_importer(
    ctx: &Arc<RunCtx>,
    key: &str,
    imp: &ImporterSpec,
    inputs: &Io,
    mut rec: TaskRecord,
) -> Outcome {
    let uri = if let Some(c) = imp.artifact_uri.get("constant") {
        c.as_str().map(str::to_string)
    } else if let Some(p) = imp
        .artifact_uri
        .get("runtimeParameter")
        .and_then(Value::as_str)
    {
        inputs
            .parameters
            .get(p)
            .and_then(Value::as_str)
            .map(str::to_string)
    } else {
        None
    };
    let Some(uri) = uri else {
        let msg = format!("task '{key}': importer has no artifact URI");
        return ctx
            .finish(&mut rec, State::Failed, Io::default(), Some(msg))
            .await;
    };
    let mut outputs = Io::default();
    outputs.artifacts.insert(
        "artifact".into(),
        vec![Artifact {
            name: "artifact".into(),
            artifact_type: ArtifactTypeJson::from(&imp.type_schema),
            uri,
            metadata: imp.metadata.clone().unwrap_or_default(),
        }],
    );
    rec.started_at = Some(Utc::now());
    ctx.finish(&mut rec, State::Succeeded, outputs, None).await
}

/// True when every local artifact file a cached result points to still exists.
fn artifacts_exist(io: &Io) -> bool {
    io.artifacts.values().flatten().all(|a| {
        let p = a.local_path();
        !p.starts_with('/') || std::path::Path::new(&p).exists()
    })
}

async fn run_container(
    ctx: &Arc<RunCtx>,
    key: &str,
    task: &TaskSpec,
    comp: &ComponentSpec,
    container: &ContainerSpec,
    inputs: Io,
    rec: &mut TaskRecord,
) -> Result<Outcome, String> {
    // A resumed run keeps what already succeeded.
    if ctx.resume {
        if let Ok(Some(old)) = ctx.store.get_task(&ctx.run_id, key).await {
            if old.state == State::Succeeded {
                if let Some(io) = old.outputs.as_ref().and_then(Io::from_value) {
                    let _ = ctx.events.send(Event::Task {
                        key: key.to_string(),
                        name: old.name.clone(),
                        kind: "container",
                        state: State::Succeeded,
                        cached: old.cached,
                        attempt: old.attempt,
                        error: None,
                        at: Utc::now(),
                    });
                    return Ok(Outcome {
                        state: State::Succeeded,
                        outputs: io,
                        error: None,
                    });
                }
            }
        }
    }
    let caching = ctx.cache
        && task
            .caching_options
            .as_ref()
            .is_some_and(|c| c.enable_cache);
    let fp = fingerprint(
        comp,
        container,
        &inputs,
        task.caching_options
            .as_ref()
            .and_then(|c| c.cache_key.as_deref()),
    );
    rec.fingerprint = Some(fp.clone());
    if caching {
        if let Ok(Some(hit)) = ctx.store.get_cache(&fp).await {
            if let Some(io) = Io::from_value(&hit.outputs).filter(artifacts_exist) {
                rec.cached = true;
                rec.started_at = Some(Utc::now());
                return Ok(ctx.finish(rec, State::Succeeded, io, None).await);
            }
        }
    }

    let task_dir = ctx.run_dir.join(key_dir(key));
    let param_dir = task_dir.join(".params");
    std::fs::create_dir_all(&param_dir)
        .map_err(|e| format!("cannot create {}: {e}", param_dir.display()))?;
    let mut outputs = Io::default();
    for (name, def) in &comp.output_definitions.artifacts {
        let uri = task_dir.join(name).to_string_lossy().into_owned();
        outputs.artifacts.insert(
            name.clone(),
            vec![Artifact {
                name: name.clone(),
                artifact_type: ArtifactTypeJson::from(&def.artifact_type),
                uri,
                metadata: Map::new(),
            }],
        );
    }
    let mut output_files = Map::new();
    for name in comp.output_definitions.parameters.keys() {
        output_files.insert(
            name.clone(),
            Value::String(param_dir.join(name).to_string_lossy().into_owned()),
        );
    }
    let exec_output = task_dir
        .join("executor_output.json")
        .to_string_lossy()
        .into_owned();
    let executor_input = executor_input_json(&inputs, &outputs, &output_files, &exec_output);
    let executor_input_text = executor_input.to_string();
    let job_name = format!("{}/{}", ctx.pipeline_name, ctx.run_id);
    let pctx = PlaceholderContext {
        inputs: &inputs,
        outputs: &outputs,
        output_files: &output_files,
        executor_output_file: &exec_output,
        executor_input: &executor_input_text,
        pipeline_job_name: &job_name,
        pipeline_job_uuid: &ctx.run_id,
        pipeline_task_name: &rec.name,
        pipeline_task_uuid: key,
        pipeline_root: &ctx.pipeline_root,
        pipeline_job_create_time_utc: &ctx.created_at,
    };
    let mut argv = resolve_all(&container.command, &pctx)?;
    argv.extend(resolve_all(&container.args, &pctx)?);
    if argv.is_empty() {
        return Err("the container has no command".into());
    }
    let env: BTreeMap<String, String> = container
        .env
        .iter()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect();

    std::fs::create_dir_all(&ctx.logs_dir)
        .map_err(|e| format!("cannot create {}: {e}", ctx.logs_dir.display()))?;
    let log_path = ctx.logs_dir.join(format!("{}.log", key_dir(key)));
    rec.log_path = Some(log_path.to_string_lossy().into_owned());
    let log_file = Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot open log {}: {e}", log_path.display()))?,
    ));
    let tail: Arc<Mutex<std::collections::VecDeque<String>>> = Arc::default();
    let sink: LogSink = {
        let (events, key, tail, log_file) = (
            ctx.events.clone(),
            key.to_string(),
            tail.clone(),
            log_file.clone(),
        );
        Arc::new(move |line: &str| {
            use std::io::Write;
            if let Ok(mut f) = log_file.lock() {
                let _ = writeln!(f, "{line}");
            }
            if let Ok(mut t) = tail.lock() {
                if t.len() == 10 {
                    t.pop_front();
                }
                t.push_back(line.to_string());
            }
            let _ = events.send(Event::Log {
                key: key.clone(),
                line: line.to_string(),
            });
        })
    };

    let retry = task.retry_policy.clone().unwrap_or_default();
    let mut attempt: u32 = 0;
    loop {
        if ctx.cancel.is_cancelled() {
            return Ok(ctx
                .finish(
                    rec,
                    State::Canceled,
                    Io::default(),
                    Some("run canceled".into()),
                )
                .await);
        }
        // Leftovers of an earlier attempt must not be read as this one's outputs.
        let _ = std::fs::remove_file(&exec_output);
        for f in output_files.values().filter_map(Value::as_str) {
            let _ = std::fs::remove_file(f);
        }
        let permit = tokio::select! {
            p = ctx.slots.acquire() => p.map_err(|e| e.to_string())?,
            _ = ctx.cancel.cancelled() => {
                return Ok(ctx.finish(rec, State::Canceled, Io::default(), Some("run canceled".into())).await);
            }
        };
        rec.state = State::Running;
        rec.attempt = attempt;
        rec.started_at = Some(Utc::now());
        ctx.save(rec).await?;
        let job = Job {
            id: format!("{}-{}-{}", ctx.run_id, key_dir(key), attempt),
            display_name: key.to_string(),
            image: container.image.clone(),
            argv: argv.clone(),
            env: env.clone(),
            work_dir: task_dir.clone(),
            resources: container.resources.clone(),
        };
        let result = ctx
            .backend
            .run(job, sink.clone(), ctx.cancel.child_token())
            .await;
        drop(permit);
        let (message, retryable) = match result {
            Ok(JobOutcome::Succeeded) => {
                let outs = collect_outputs(comp, outputs.clone(), &output_files, &exec_output)?;
                let out = ctx.finish(rec, State::Succeeded, outs.clone(), None).await;
                if caching && out.state == State::Succeeded {
                    let entry = CacheEntry {
                        fingerprint: fp.clone(),
                        outputs: outs.to_value(),
                        run_id: ctx.run_id.clone(),
                        task_key: key.to_string(),
                        created_at: Utc::now(),
                    };
                    if let Err(e) = ctx.store.put_cache(&entry).await {
                        tracing::warn!(task = key, error = %e, "could not write cache entry");
                    }
                }
                return Ok(out);
            }
            Ok(JobOutcome::Canceled) => {
                return Ok(ctx
                    .finish(
                        rec,
                        State::Canceled,
                        Io::default(),
                        Some("run canceled".into()),
                    )
                    .await);
            }
            Ok(JobOutcome::Failed { message, .. }) => (message, true),
            Err(BackendError::Retryable(m)) => (m, true),
            Err(BackendError::Permanent(m)) => (m, false),
        };
        let tail_text = tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default();
        let full = if tail_text.is_empty() {
            message
        } else {
            format!("{message}; last output:\n{tail_text}")
        };
        if retryable && attempt < retry.max_retry_count {
            attempt += 1;
            let wait = backoff(&retry, attempt);
            sink(&format!(
                "[switchyard] attempt {} failed ({}); retry {attempt}/{} in {:.1}s",
                attempt,
                full.lines().next().unwrap_or_default(),
                retry.max_retry_count,
                wait.as_secs_f64()
            ));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = ctx.cancel.cancelled() => {}
            }
            continue;
        }
        return Err(full);
    }
}

/// The executor input document (`{{$}}`), as KFP's launcher builds it.
fn executor_input_json(
    inputs: &Io,
    outputs: &Io,
    output_files: &Map<String, Value>,
    exec_output: &str,
) -> Value {
    let in_arts: Map<String, Value> = inputs
        .artifacts
        .iter()
        .map(|(k, l)| {
            (
                k.clone(),
                json!({"artifacts": l.iter().map(Artifact::to_executor_json).collect::<Vec<_>>()}),
            )
        })
        .collect();
    let out_arts: Map<String, Value> = outputs
        .artifacts
        .iter()
        .map(|(k, l)| {
            (
                k.clone(),
                json!({"artifacts": l.iter().map(Artifact::to_executor_json).collect::<Vec<_>>()}),
            )
        })
        .collect();
    let out_params: Map<String, Value> = output_files
        .iter()
        .map(|(k, f)| (k.clone(), json!({"outputFile": f})))
        .collect();
    json!({
        "inputs": {"parameterValues": inputs.parameters, "artifacts": in_arts},
        "outputs": {"parameters": out_params, "artifacts": out_arts, "outputFile": exec_output},
    })
}

/// Reads what a finished container produced: the executor output file wins, then
/// each parameter's own output file, converted by declared type.
fn collect_outputs(
    comp: &ComponentSpec,
    mut outputs: Io,
    output_files: &Map<String, Value>,
    exec_output: &str,
) -> Result<Io, String> {
    let exec: Option<Value> = match std::fs::read_to_string(exec_output) {
        Ok(text) if !text.trim().is_empty() => Some(
            serde_json::from_str(&text)
                .map_err(|e| format!("executor output {exec_output} is not JSON: {e}"))?,
        ),
        _ => None,
    };
    for (name, def) in &comp.output_definitions.parameters {
        let from_exec = exec
            .as_ref()
            .and_then(|e| e.get("parameterValues"))
            .and_then(|p| p.get(name))
            .cloned();
        let value = match from_exec {
            Some(v) => Some(
                normalize(def.parameter_type, v).map_err(|e| format!("output '{name}': {e}"))?,
            ),
            None => match output_files
                .get(name)
                .and_then(Value::as_str)
                .map(std::fs::read_to_string)
            {
                Some(Ok(text)) => Some(
                    from_output_file(def.parameter_type, &text)
                        .map_err(|e| format!("output '{name}': {e}"))?,
                ),
                _ => None,
            },
        };
        if let Some(v) = value {
            outputs.parameters.insert(name.clone(), v);
        }
    }
    if let Some(arts) = exec
        .as_ref()
        .and_then(|e| e.get("artifacts"))
        .and_then(Value::as_object)
    {
        for (name, v) in arts {
            let Some(first) = v
                .get("artifacts")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
            else {
                continue;
            };
            if let Some(list) = outputs.artifacts.get_mut(name) {
                if let Some(a) = list.first_mut() {
                    if let Some(uri) = first
                        .get("uri")
                        .and_then(Value::as_str)
                        .filter(|u| !u.is_empty())
                    {
                        a.uri = uri.to_string();
                    }
                    if let Some(m) = first.get("metadata").and_then(Value::as_object) {
                        a.metadata.extend(m.clone());
                    }
                }
            }
        }
    }
    Ok(outputs)
}
