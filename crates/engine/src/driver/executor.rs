//! Container and importer tasks: caching, the executor protocol, retries, outputs.

use super::tasklog::TaskLog;
use super::*;

/// A container or importer task.
pub(super) async fn run_executor(
    ctx: &Arc<RunCtx>,
    at: &TaskAt<'_>,
    inputs: Io,
    mut rec: TaskRecord,
    platform: BTreeMap<String, Value>,
) -> Outcome {
    let (key, task, comp) = (at.key, at.task, at.comp);
    let label = comp.executor_label.clone().unwrap_or_default();
    let Some(exec) = ctx.spec.deployment_spec.executors.get(&label).cloned() else {
        let msg = format!("task '{key}': executor '{label}' not found");
        return ctx.fail(&mut rec, msg).await;
    };
    if let Some(imp) = &exec.importer {
        rec.kind = "importer".into();
        return run_importer(ctx, key, imp, &inputs, rec).await;
    }
    let Some(container) = exec.container else {
        let msg = format!("task '{key}': executor '{label}' has no container");
        return ctx.fail(&mut rec, msg).await;
    };
    if let Some(op) = container.driver_op() {
        return super::volumes::run_driver_op(ctx, key, op, inputs, rec).await;
    }
    let step = Step {
        task,
        comp,
        container: &container,
        platform,
    };
    match run_container(ctx, key, &step, inputs, &mut rec).await {
        Ok(o) => o,
        Err(msg) => {
            let msg = format!("task '{key}': {msg}");
            ctx.fail(&mut rec, msg).await
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
        return ctx.fail(&mut rec, msg).await;
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

/// What a container task runs: its place in the DAG, its component and
/// container, and its platform settings as the driver resolved them.
struct Step<'a> {
    task: &'a TaskSpec,
    comp: &'a ComponentSpec,
    container: &'a ContainerSpec,
    platform: BTreeMap<String, Value>,
}

async fn run_container(
    ctx: &Arc<RunCtx>,
    key: &str,
    step: &Step<'_>,
    mut inputs: Io,
    rec: &mut TaskRecord,
) -> Result<Outcome, String> {
    // What an earlier execution of this run recorded for the task (a run
    // executes again only as a resume, or a retry, which resumes).
    let earlier = if ctx.resume {
        ctx.store.get_task(&ctx.run_id, key).await.ok().flatten()
    } else {
        None
    };
    // A resumed run keeps what already succeeded.
    if let Some(done) = earlier
        .as_ref()
        .and_then(|old| reuse_succeeded(ctx, old, "container"))
    {
        return Ok(done);
    }
    let cache = Cache::of(ctx, step, &inputs);
    rec.fingerprint = Some(cache.fingerprint.clone());
    // After the cache key, as KFP's driver adds it.
    super::task_config::fill_inputs(
        step.comp,
        step.container,
        &step.platform,
        &mut inputs.parameters,
    );
    if let Some(hit) = cache.hit(ctx).await {
        rec.cached = true;
        rec.started_at = Some(Utc::now());
        return Ok(ctx.finish(rec, State::Succeeded, hit, None).await);
    }
    let mut prepared = prepare(ctx, key, step, &inputs)?;
    let log = TaskLog::open(ctx, key)?;
    rec.log_path = Some(log.path.to_string_lossy().into_owned());
    if staging::uses_staging(ctx, &inputs) {
        let hook = ctx
            .run_values
            .staging
            .python_env(prepared.env.get("PYTHONPATH").map(String::as_str))?;
        prepared.env.extend(hook);
        staging::stage_in(ctx, &inputs, &log).await?;
    }
    // Attempt numbers of ended attempts are never reused within a run: a
    // task run again (a resumed run, a retried one) goes on from its last
    // recorded attempt, so what a backend made for an ended attempt (a Pod
    // named after it) is never taken for this one's. An attempt whose end
    // was never recorded (its process died) is followed again instead.
    let first = next_attempt(earlier.as_ref(), ctx.reattach);
    let attempts = Attempts {
        ctx,
        key,
        step,
        prepared: &prepared,
        log: &log,
    };
    attempts.run(rec, first, &cache).await
}

/// Whether a task's result is cached, and under which key.
struct Cache {
    enabled: bool,
    fingerprint: String,
}

impl Cache {
    fn of(ctx: &RunCtx, step: &Step<'_>, inputs: &Io) -> Cache {
        let options = step.task.caching_options.as_ref();
        Cache {
            enabled: ctx.cache && options.is_some_and(|c| c.enable_cache),
            fingerprint: fingerprint(
                step.comp,
                step.container,
                inputs,
                options.and_then(|c| c.cache_key.as_deref()),
            ),
        }
    }

    /// The outputs of an earlier execution with the same key, when caching is
    /// on and its artifacts are still there.
    async fn hit(&self, ctx: &RunCtx) -> Option<Io> {
        if !self.enabled {
            return None;
        }
        let hit = ctx.store.get_cache(&self.fingerprint).await.ok()??;
        let io = Io::from_value(&hit.outputs)?;
        staging::artifacts_available(ctx, &io).await.then_some(io)
    }

    /// Publishes a task's outputs under its key (when caching is on and the
    /// run is still this process's).
    async fn publish(&self, ctx: &RunCtx, key: &str, outputs: &Io) {
        if !self.enabled || ctx.lost.is_cancelled() {
            return;
        }
        let entry = CacheEntry {
            fingerprint: self.fingerprint.clone(),
            outputs: outputs.to_value(),
            run_id: ctx.run_id.clone(),
            task_key: key.to_string(),
            created_at: Utc::now(),
        };
        if let Err(e) = ctx.store.put_cache(&entry).await {
            tracing::warn!(task = key, error = %e, "could not write cache entry");
        }
    }
}

/// A container task made ready to run: its folder, where its outputs go, and
/// its resolved command line and environment.
struct Prepared {
    task_dir: std::path::PathBuf,
    exec_output: String,
    outputs: Io,
    output_files: Map<String, Value>,
    argv: Vec<String>,
    env: BTreeMap<String, String>,
}

/// Creates the task's folders, names its output artifacts and parameter
/// files, and resolves its command line with KFP's placeholders.
fn prepare(ctx: &RunCtx, key: &str, step: &Step<'_>, inputs: &Io) -> Result<Prepared, String> {
    let (comp, container) = (step.comp, step.container);
    let task_dir = ctx.run_dir.join(key_dir(key));
    let param_dir = task_dir.join(".params");
    std::fs::create_dir_all(&param_dir)
        .map_err(|e| format!("cannot create {}: {e}", param_dir.display()))?;
    let mut outputs = Io::default();
    for (name, def) in &comp.output_definitions.artifacts {
        outputs.artifacts.insert(
            name.clone(),
            vec![Artifact {
                name: name.clone(),
                artifact_type: ArtifactTypeJson::from(&def.artifact_type),
                uri: output_uri(ctx, key, &task_dir, name)?,
                metadata: Map::new(),
            }],
        );
    }
    let output_files: Map<String, Value> = comp
        .output_definitions
        .parameters
        .keys()
        .map(|name| {
            let file = param_dir.join(name).to_string_lossy().into_owned();
            (name.clone(), Value::String(file))
        })
        .collect();
    let exec_output = task_dir
        .join("executor_output.json")
        .to_string_lossy()
        .into_owned();
    let executor_input = executor_input_json(inputs, &outputs, &output_files, &exec_output);
    let executor_input_text = executor_input.to_string();
    if let Some(ws) = &ctx.run_values.workspace_path {
        std::fs::create_dir_all(ws)
            .map_err(|e| format!("cannot create the run's workspace {ws}: {e}"))?;
    }
    let pctx = PlaceholderContext {
        inputs,
        outputs: &outputs,
        output_files: &output_files,
        executor_output_file: &exec_output,
        executor_input: &executor_input_text,
        run: &ctx.run_values,
        pipeline_task_name: task_name(key),
        pipeline_task_uuid: key,
    };
    let mut argv = resolve_all(&container.command, &pctx)?;
    argv.extend(resolve_all(&container.args, &pctx)?);
    if argv.is_empty() {
        return Err("the container has no command".into());
    }
    let env = container
        .env
        .iter()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect();
    Ok(Prepared {
        task_dir,
        exec_output,
        outputs,
        output_files,
        argv,
        env,
    })
}

/// Where output artifact `name` goes: KFP's layout under a remote root
/// (`<root>/<pipeline>/<run>/<task>/<output>`, staged locally), else the
/// task's folder.
fn output_uri(
    ctx: &RunCtx,
    key: &str,
    task_dir: &std::path::Path,
    name: &str,
) -> Result<String, String> {
    let Some(base) = &ctx.remote_base else {
        return Ok(task_dir.join(name).to_string_lossy().into_owned());
    };
    let uri = format!("{base}/{}/{name}", key_dir(key));
    let local = ctx.run_values.staging.local_path(&uri);
    if let Some(parent) = std::path::Path::new(&local).parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    Ok(uri)
}

/// A prepared container task's attempts, retried by its retry policy.
struct Attempts<'a> {
    ctx: &'a Arc<RunCtx>,
    key: &'a str,
    step: &'a Step<'a>,
    prepared: &'a Prepared,
    log: &'a TaskLog,
}

impl Attempts<'_> {
    async fn run(
        &self,
        rec: &mut TaskRecord,
        first: u32,
        cache: &Cache,
    ) -> Result<Outcome, String> {
        let ctx = self.ctx;
        // Exit handlers (ALL_UPSTREAM_TASKS_COMPLETED) run even after the run was
        // canceled: their job gets its own token, not the run's.
        let finalizer = self.step.task.runs_after_upstream_failure();
        let job_cancel = if finalizer {
            CancellationToken::new()
        } else {
            ctx.cancel.child_token()
        };
        let retry = self.step.task.retry_policy.clone().unwrap_or_default();
        let mut attempt = first;
        loop {
            if ctx.cancel.is_cancelled() && !finalizer {
                return Ok(ctx.canceled(rec).await);
            }
            self.clear_outputs();
            let permit = tokio::select! {
                p = ctx.slots.acquire() => p.map_err(|e| e.to_string())?,
                _ = ctx.cancel.cancelled(), if !finalizer => {
                    return Ok(ctx.canceled(rec).await);
                }
            };
            rec.state = State::Running;
            rec.attempt = attempt;
            rec.started_at = Some(Utc::now());
            ctx.save(rec).await?;
            let job = self.job(attempt, attempt == first);
            // Taken over by another process: stop following, and leave what the
            // backend started running. The new owner follows the same attempt;
            // a cancel here would delete the Pod under it.
            let result = tokio::select! {
                biased;
                _ = ctx.lost.cancelled() => {
                    return Err("another process took the run over; this one stopped following the task".into());
                }
                r = ctx.backend.run(job, self.log.sink.clone(), job_cancel.clone()) => r,
            };
            drop(permit);
            let end = self.end_of(result);
            let first_line = match &end {
                AttemptEnd::Failed { message, .. } => message.lines().next().unwrap_or_default(),
                _ => "",
            }
            .to_string();
            match after_attempt(&retry, first, attempt, end) {
                AttemptNext::Succeed => return self.succeed(rec, cache).await,
                AttemptNext::Cancel => return Ok(ctx.canceled(rec).await),
                AttemptNext::Fail { message } => return Err(message),
                AttemptNext::Retry {
                    attempt: next,
                    retry: n,
                    wait,
                } => {
                    (self.log.sink)(&format!(
                        "[switchyard] attempt {next} failed ({first_line}); retry {n}/{} in {:.1}s",
                        retry.max_retry_count,
                        wait.as_secs_f64()
                    ));
                    attempt = next;
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = ctx.cancel.cancelled() => {}
                    }
                }
            }
        }
    }

    /// Leftovers of an earlier attempt must not be read as this one's outputs.
    fn clear_outputs(&self) {
        let _ = std::fs::remove_file(&self.prepared.exec_output);
        for f in self
            .prepared
            .output_files
            .values()
            .filter_map(Value::as_str)
        {
            let _ = std::fs::remove_file(f);
        }
    }

    /// The backend's job for one attempt; the first also says what the
    /// backend cannot honour of it.
    fn job(&self, attempt: u32, first: bool) -> Job {
        let (ctx, key, step) = (self.ctx, self.key, self.step);
        // Lets a step (the training-job component) tag what it creates with
        // the run and task it belongs to, and run a training job it submits
        // to Kubernetes under the run's service account.
        let mut env = self.prepared.env.clone();
        env.insert("SWITCHYARD_RUN_ID".into(), ctx.run_id.to_string());
        env.insert("SWITCHYARD_TASK".into(), key.to_string());
        if let Some(account) = &ctx.service_account {
            env.insert(crate::SERVICE_ACCOUNT_ENV.into(), account.clone());
        }
        let mut job = Job {
            id: format!("{}-{}-{}", ctx.run_id, key_dir(key), attempt),
            run_id: ctx.run_id.clone(),
            display_name: key.to_string(),
            image: step.container.image.clone(),
            argv: self.prepared.argv.clone(),
            env,
            work_dir: self.prepared.task_dir.clone(),
            resources: crate::resources::from_ir(step.container.resources.as_ref()),
            platform: step.platform.clone(),
            service_account: ctx.service_account.clone(),
        };
        super::task_config::withhold(step.comp, step.container, &mut job);
        if first {
            let sink = &self.log.sink;
            for message in ctx.backend.unhonoured(&job) {
                ctx.notice(key, message, sink);
            }
            if let (Some(ws), Some(size)) = (&ctx.run_values.workspace_path, &ctx.workspace_size) {
                ctx.notice(key, format!("the workspace's size ({size}) is not enforced: the run's workspace is the folder {ws}"), sink);
            }
        }
        job
    }

    /// How an attempt ended; a failure's message ends with the task's last output.
    fn end_of(&self, result: Result<StepOutcome, BackendError>) -> AttemptEnd {
        let failed = |message: String, retryable| {
            let tail_text = self.log.tail();
            let message = if tail_text.is_empty() {
                message
            } else {
                format!("{message}; last output:\n{tail_text}")
            };
            AttemptEnd::Failed { message, retryable }
        };
        match result {
            Ok(StepOutcome::Succeeded) => AttemptEnd::Succeeded,
            Ok(StepOutcome::Canceled) => AttemptEnd::Canceled,
            Ok(StepOutcome::Failed { message, .. }) => failed(message, true),
            Err(BackendError::Retryable(message)) => failed(message, true),
            Err(BackendError::Permanent(message)) => failed(message, false),
        }
    }

    /// Collects and stages out the outputs, records the task SUCCEEDED, and
    /// publishes its cache entry.
    async fn succeed(&self, rec: &mut TaskRecord, cache: &Cache) -> Result<Outcome, String> {
        let (ctx, p) = (self.ctx, self.prepared);
        let outs = collect_outputs(
            self.step.comp,
            p.outputs.clone(),
            &p.output_files,
            &p.exec_output,
            &ctx.run_values.staging,
        )?;
        staging::stage_out(ctx, &outs, self.log).await?;
        let out = ctx.finish(rec, State::Succeeded, outs.clone(), None).await;
        if out.state == State::Succeeded {
            cache.publish(ctx, self.key, &outs).await;
        }
        Ok(out)
    }
}

/// A task's name in its DAG (`train-2`), from its key (`outer/for-loop-2[0]/train-2`).
pub(super) fn task_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// Copies an output artifact written at its `custom_path` to the artifact's
/// own path.
fn take_custom_path(name: &str, custom: &str, own: &str) -> Result<(), String> {
    let (from, to) = (std::path::Path::new(custom), std::path::Path::new(own));
    if from == to {
        return Ok(());
    }
    if !from.exists() {
        return Err(format!(
            "output artifact '{name}': the component set its path to {custom} (Artifact.set_path), but nothing is there where Switchyard collects outputs; with the Pod task backend, write under the task's folder"
        ));
    }
    let _ = std::fs::remove_dir_all(to).or_else(|_| std::fs::remove_file(to));
    let mut skipped = Vec::new();
    crate::io::copy_tree(from, to, &mut skipped).map_err(|e| {
        format!("output artifact '{name}': cannot copy it from {custom} (Artifact.set_path) to {own}: {e}")
    })?;
    if !skipped.is_empty() {
        tracing::warn!(
            artifact = name,
            ?skipped,
            "special files under a custom artifact path were not copied"
        );
    }
    Ok(())
}

/// The number of this task's next attempt: 0 the first time, else one past
/// the last attempt an earlier execution recorded.
fn next_attempt(earlier: Option<&TaskRecord>, reattach: bool) -> u32 {
    match earlier {
        // Running when its process died (its end never recorded): the same
        // attempt, so the backend follows what it started (a Pod still
        // running) instead of running the step a second time beside it.
        Some(old) if reattach && old.state == State::Running => old.attempt,
        Some(old) if old.started_at.is_some() => old.attempt + 1,
        _ => 0,
    }
}

/// On resume: the outputs of this task if it already succeeded in this run.
pub(super) fn reuse_succeeded(
    ctx: &RunCtx,
    old: &TaskRecord,
    kind: &'static str,
) -> Option<Outcome> {
    if old.state != State::Succeeded {
        return None;
    }
    let outputs = old.outputs.as_ref().and_then(Io::from_value)?;
    let _ = ctx.events.send(Event::Task {
        key: old.task_key.clone(),
        name: old.name.clone(),
        kind,
        state: State::Succeeded,
        cached: old.cached,
        attempt: old.attempt,
        error: None,
        at: Utc::now(),
    });
    Some(Outcome {
        state: State::Succeeded,
        outputs,
        error: None,
    })
}

/// The executor input document (`{{$}}`), as KFP's launcher builds it.
fn executor_input_json(
    inputs: &Io,
    outputs: &Io,
    output_files: &Map<String, Value>,
    exec_output: &str,
) -> Value {
    let in_arts = inputs.artifacts_executor_json();
    let out_arts = outputs.artifacts_executor_json();
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
    staging: &crate::artifacts::Staging,
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
                    // `Artifact.set_path()`: the component wrote elsewhere; as KFP's
                    // launcher uploads from there to the artifact's URI, the file
                    // is copied to where consumers read it.
                    if let Some(custom) = first
                        .get("custom_path")
                        .and_then(Value::as_str)
                        .filter(|p| !p.is_empty())
                    {
                        take_custom_path(name, custom, &staging.local_path(&a.uri))?;
                    }
                }
            }
        }
    }
    Ok(outputs)
}
