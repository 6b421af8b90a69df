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
use switchyard_kfp_spec::params::{from_output_file, normalize};
use switchyard_kfp_spec::{ComponentSpec, ContainerSpec, ImporterSpec, PipelineSpec, TaskSpec};
use switchyard_store::{CacheEntry, RunStore, State, TaskRecord};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, BackendError, Job, StepOutcome};
use crate::events::{Event, EventSender};
use crate::expr::{eval_condition, eval_selector};
use crate::fingerprint::fingerprint;
use crate::io::{Artifact, ArtifactTypeJson, Io};
use crate::placeholder::{resolve_all, PlaceholderContext, RunValues};
use crate::retry::{after_attempt, AttemptEnd, AttemptNext};

mod executor;
mod inputs;
mod loops;
mod staging;
mod task_config;
mod tasklog;
mod volumes;

use executor::run_executor;
use inputs::resolve_inputs;
use loops::run_loop;

/// Everything one run's tasks share.
pub(crate) struct RunCtx {
    pub run_id: String,
    pub spec: PipelineSpec,
    /// `<pipeline_root>/<pipeline>/<run>`: where this run's artifacts go.
    pub run_dir: PathBuf,
    /// The values of KFP's run and task placeholders.
    pub run_values: RunValues,
    pub logs_dir: PathBuf,
    pub cache: bool,
    pub resume: bool,
    /// Resuming a run that was unfinished (its process died): an attempt
    /// recorded RUNNING is followed again, not started anew. A run retried
    /// after it ended starts every task it runs with a new attempt.
    pub reattach: bool,
    pub slots: Semaphore,
    pub cancel: CancellationToken,
    pub events: EventSender,
    pub store: Arc<dyn RunStore>,
    pub backend: Arc<dyn Backend>,
    /// Object storage for `s3://` artifacts.
    pub artifacts: Option<Arc<dyn crate::artifacts::ArtifactStore>>,
    /// `s3://bucket/prefix/<pipeline>/<run>` when the run's root is remote:
    /// its tasks' output artifacts go under it.
    pub remote_base: Option<String>,
    /// Set when another process took the run over (this one's lease expired):
    /// from then on nothing of this execution is written.
    pub lost: CancellationToken,
    /// This process's lease owner id: every task write is fenced by it.
    pub owner: String,
    /// The declared size of the run's workspace (`dsl.WorkspaceConfig(size=...)`).
    pub workspace_size: Option<String>,
    /// Notices already given in this run (each is said once).
    pub notices: Mutex<BTreeSet<String>>,
    /// Container tasks that failed for good: (task key, message), in order.
    pub failures: Mutex<Vec<(String, String)>>,
    /// Each platform's executor settings (`deploymentSpec.executors`) by
    /// platform name, as the pipeline's platform spec gives them.
    pub platform_executors: std::collections::BTreeMap<String, Value>,
    /// The service account the run's steps run under, if it names one.
    pub service_account: Option<String>,
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
    let name = key
        .chars()
        .map(|c| match c {
            '/' | '[' => '.',
            c if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' || c == ']' => c,
            _ => '_',
        })
        .filter(|c| *c != ']')
        .collect::<String>();
    if name.len() <= MAX_KEY_DIR {
        return name;
    }
    // Deeply nested tasks: the path's end (the task itself) and a digest of the
    // whole key, within the 255 bytes a file name may have.
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let tail = &name[name.len() - (MAX_KEY_DIR - hex.len() - 1)..];
    format!("{hex}-{}", tail.trim_start_matches('.'))
}

/// Longest task folder or log file name (before `.log`), well under the 255
/// bytes most file systems allow.
const MAX_KEY_DIR: usize = 160;

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
        if self.lost.is_cancelled() {
            return Err("another process took the run over; this one stopped".into());
        }
        let written = self
            .store
            .put_task(rec, Some(&self.owner))
            .await
            .map_err(|e| e.to_string())?;
        if !written {
            tracing::error!(run = %self.run_id, task = %rec.task_key, "another process took the run over; this one stops executing it");
            self.lost.cancel();
            self.cancel.cancel();
            return Err("another process took the run over; this one stopped".into());
        }
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

    /// Says `message` once per run: an event, a line in the task's log (so
    /// the dashboard and `switchyard logs` show it) and a line in the process's log.
    fn notice(&self, key: &str, message: String, sink: &crate::backend::LogSink) {
        let first = self
            .notices
            .lock()
            .map(|mut n| n.insert(message.clone()))
            .unwrap_or(false);
        if !first {
            return;
        }
        tracing::info!(run = %self.run_id, task = key, "{message}");
        sink(&format!("{}{message}", crate::NOTE_PREFIX));
        let _ = self.events.send(Event::Notice {
            key: key.to_string(),
            message,
        });
    }

    /// Records a task's own failure (not one inherited from upstream): the run's
    /// error message names the first of these.
    async fn fail(&self, rec: &mut TaskRecord, msg: String) -> Outcome {
        if let Ok(mut f) = self.failures.lock() {
            f.push((rec.task_key.clone(), msg.clone()));
        }
        self.finish(rec, State::Failed, Io::default(), Some(msg))
            .await
    }

    /// Records that a task was stopped because the run was canceled.
    async fn canceled(&self, rec: &mut TaskRecord) -> Outcome {
        self.finish(
            rec,
            State::Canceled,
            Io::default(),
            Some("run canceled".into()),
        )
        .await
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
        let mut running: FuturesUnordered<BoxFuture<'static, (String, Outcome)>> =
            FuturesUnordered::new();
        loop {
            // Start everything that is ready; a skip can make more tasks ready.
            let mut progressed = true;
            while progressed {
                progressed = false;
                for (name, task) in &dag.tasks {
                    if started.contains(name) {
                        continue;
                    }
                    let ups = task.upstream();
                    let now = readiness(
                        &ups,
                        &results,
                        task.runs_after_upstream_failure(),
                        ctx.cancel.is_cancelled(),
                    );
                    if now == Readiness::Wait {
                        continue;
                    }
                    started.insert(name.clone());
                    progressed = true;
                    match now {
                        Readiness::Wait => {}
                        Readiness::Skip(up) => {
                            let display = if task.task_info.name.is_empty() {
                                name
                            } else {
                                &task.task_info.name
                            };
                            let mut rec =
                                ctx.new_record(&scope.key(name), display, &scope, "skipped");
                            let msg = format!(
                                "not run: upstream task '{}' did not succeed",
                                scope.key(up)
                            );
                            // Recorded inside `running`, never awaited here: a sibling polled by
                            // this loop may hold a store transaction and must keep moving.
                            let (ctx2, name2) = (ctx.clone(), name.clone());
                            let fut: BoxFuture<'static, Outcome> = Box::pin(async move {
                                let out = ctx2
                                    .finish(&mut rec, State::Skipped, Io::default(), Some(msg))
                                    .await;
                                Outcome {
                                    state: State::Skipped,
                                    ..out
                                }
                            });
                            running.push(Box::pin(async move { (name2, fut.await) })
                                as BoxFuture<'static, (String, Outcome)>);
                        }
                        Readiness::Canceled => {
                            results.insert(
                                name.clone(),
                                Outcome::ended(State::Canceled, Some("run canceled".into())),
                            );
                        }
                        Readiness::Start => {
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
                            running.push(Box::pin(async move { (name, fut.await) }));
                        }
                    }
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

/// What a DAG task does now, decided from its upstream tasks' outcomes so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Readiness<'a> {
    /// An upstream task has not ended.
    Wait,
    /// Not run: this upstream task did not succeed (failed, canceled, or
    /// skipped for a failure) and the task does not run after failures.
    Skip(&'a str),
    /// The run was canceled: not started.
    Canceled,
    Start,
}

/// The DAG's per-task rule, pure: a task starts once every upstream task has
/// ended; one that did not succeed skips it, unless the task runs after
/// failures (exit handlers, `ignore_upstream_failure`), which also run after
/// a cancel (as on a KFP cluster) and see the body's final status.
pub(crate) fn readiness<'a>(
    upstream: &[&'a str],
    results: &BTreeMap<String, Outcome>,
    runs_after_failure: bool,
    canceled: bool,
) -> Readiness<'a> {
    if !upstream.iter().all(|u| results.contains_key(*u)) {
        return Readiness::Wait;
    }
    if !runs_after_failure {
        if let Some(up) = upstream
            .iter()
            .find(|u| results.get(**u).is_some_and(Outcome::bad))
        {
            return Readiness::Skip(up);
        }
        if canceled {
            return Readiness::Canceled;
        }
    }
    Readiness::Start
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

/// One task where it sits in the run: its key, its spec in the DAG, and its
/// component (by name and spec).
pub(crate) struct TaskAt<'a> {
    pub key: &'a str,
    pub task: &'a TaskSpec,
    pub comp_name: &'a str,
    pub comp: &'a ComponentSpec,
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
        // The display name (`.set_display_name()`) is what people see; the key stays
        // the DAG's task name so it is stable.
        let display = if task.task_info.name.is_empty() {
            name.clone()
        } else {
            task.task_info.name.clone()
        };
        let mut rec = ctx.new_record(&key, &display, &scope, kind);
        let inputs = match resolve_inputs(&ctx, &key, &task, &comp, &dag_inputs, &upstream) {
            Ok(i) => i,
            Err(e) => {
                let msg = format!("task '{key}': {e}");
                return ctx.fail(&mut rec, msg).await;
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
                    return ctx.fail(&mut rec, msg).await;
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
        let at = TaskAt {
            key: &key,
            task: &task,
            comp_name: &comp_name,
            comp: &comp,
        };
        match kind {
            "loop" => run_loop(&ctx, &at, inputs, rec).await,
            "dag" => {
                let out = run_dag(ctx.clone(), Scope::child(&key), comp_name, inputs).await;
                ctx.finish(&mut rec, out.state, out.outputs, out.error)
                    .await
            }
            _ => {
                let platform = match step_platform(&ctx, &comp, &dag_inputs, &upstream) {
                    Ok(p) => p,
                    Err(e) => return ctx.fail(&mut rec, format!("task '{key}': {e}")).await,
                };
                run_executor(&ctx, &at, inputs, rec, platform).await
            }
        }
    })
}

/// The step's executor settings of each platform the pipeline configures,
/// with what KFP's driver resolves before a step starts (the claims it mounts).
fn step_platform(
    ctx: &RunCtx,
    comp: &ComponentSpec,
    dag_inputs: &Io,
    upstream: &BTreeMap<String, Outcome>,
) -> Result<BTreeMap<String, Value>, String> {
    let label = comp.executor_label.as_deref().unwrap_or("");
    let mut out = BTreeMap::new();
    for (platform, executors) in &ctx.platform_executors {
        let mut settings = executors[label].clone();
        if settings.is_null() {
            continue;
        }
        volumes::resolve_mounts(&mut settings, dag_inputs, upstream)?;
        out.insert(platform.clone(), settings);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::key_dir;

    #[test]
    fn task_folders_stay_short_and_distinct_however_deep_the_task() {
        assert_eq!(
            key_dir("outer/for-loop-2[3]/train"),
            "outer.for-loop-2.3.train"
        );
        let deep = |leaf: &str| {
            let mut k: Vec<String> = (0..60).map(|i| format!("nested-60-{i}")).collect();
            k.push(leaf.to_string());
            k.join("/")
        };
        let (a, b) = (key_dir(&deep("quick")), key_dir(&deep("quick2")));
        assert!(a.len() <= 160 && b.len() <= 160, "{a}");
        assert_ne!(a, b);
        assert!(a.ends_with(".quick"), "{a}");
        // Same key, same folder (a resumed run finds its files).
        assert_eq!(a, key_dir(&deep("quick")));
    }
}

#[cfg(test)]
mod readiness_tests {
    use super::*;

    #[test]
    fn when_a_dag_task_starts() {
        let ended = |state, error: Option<&str>| Outcome::ended(state, error.map(str::to_string));
        let results: BTreeMap<String, Outcome> = [
            ("ok", ended(State::Succeeded, None)),
            ("bad", ended(State::Failed, Some("boom"))),
            ("stopped", ended(State::Canceled, None)),
            // A condition that was false: a skip without an error is no failure.
            ("unmet", ended(State::Skipped, None)),
            (
                "skipped-for-failure",
                ended(State::Skipped, Some("not run")),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        use Readiness::*;
        // (upstream, runs after failures, run canceled) → readiness.
        let table: &[(&[&str], bool, bool, Readiness)] = &[
            (&[], false, false, Start),
            (&["ok", "unmet"], false, false, Start),
            (&["ok", "later"], false, false, Wait),
            (&["ok", "later"], true, false, Wait),
            (&["ok", "bad"], false, false, Skip("bad")),
            (&["stopped"], false, false, Skip("stopped")),
            (
                &["skipped-for-failure"],
                false,
                false,
                Skip("skipped-for-failure"),
            ),
            (&["bad"], true, false, Start),
            (&["ok"], false, true, Canceled),
            (&["stopped"], true, true, Start),
            (&["bad"], false, true, Skip("bad")),
        ];
        for (ups, after_failure, canceled, want) in table {
            assert_eq!(
                readiness(ups, &results, *after_failure, *canceled),
                *want,
                "upstream {ups:?}, runs after failure {after_failure}, canceled {canceled}"
            );
        }
    }
}
