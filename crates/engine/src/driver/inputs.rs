//! Resolving a task's inputs from its DAG, its upstream tasks and constants.

use super::*;

/// The value a `taskFinalStatus` input receives, as KFP's driver builds it:
/// the producer's state by MLMD's names (`COMPLETE`, `FAILED`, `CANCELED` for
/// a group that was not triggered or was canceled), the run's resource name and
/// the producer's task name. KFP always sends an empty `error`; a failure's
/// message is kept here (code 2, UNKNOWN) so an exit handler can report it.
fn final_status(ctx: &RunCtx, producer_key: &str, o: &Outcome) -> Value {
    let state = match o.state {
        State::Succeeded => "COMPLETE",
        State::Failed => "FAILED",
        State::Skipped | State::Canceled | State::Canceling => "CANCELED",
        State::Pending | State::Running => "RUNNING",
    };
    let error = match (&o.error, o.state) {
        (Some(m), State::Failed) => json!({"code": 2, "message": m}),
        _ => json!({}),
    };
    json!({
        "state": state,
        "error": error,
        "pipelineJobResourceName": ctx.run_values.job_resource_name,
        "pipelineTaskName": producer_key,
    })
}

/// Replaces input placeholders inside a constant: a string that is exactly one
/// placeholder becomes the input's value (keeping its type); placeholders inside
/// longer strings are replaced by the value's text.
fn fill_placeholders(v: Value, inputs: &Map<String, Value>) -> Value {
    const OPEN: &str = "{{$.inputs.parameters['";
    const CLOSE: &str = "']}}";
    match v {
        Value::String(s) if s.contains(OPEN) => {
            if let Some(name) = s.strip_prefix(OPEN).and_then(|r| r.strip_suffix(CLOSE)) {
                if !name.contains(CLOSE) {
                    if let Some(val) = inputs.get(name) {
                        return val.clone();
                    }
                }
            }
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(start) = rest.find(OPEN) {
                let after = &rest[start + OPEN.len()..];
                let Some(end) = after.find(CLOSE) else { break };
                let name = &after[..end];
                out.push_str(&rest[..start]);
                match inputs.get(name) {
                    Some(val) => out.push_str(&switchyard_kfp_spec::params::value_to_text(val)),
                    None => out.push_str(&rest[start..start + OPEN.len() + end + CLOSE.len()]),
                }
                rest = &after[end + CLOSE.len()..];
            }
            out.push_str(rest);
            Value::String(out)
        }
        Value::Array(a) => Value::Array(
            a.into_iter()
                .map(|x| fill_placeholders(x, inputs))
                .collect(),
        ),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, x)| (k, fill_placeholders(x, inputs)))
                .collect(),
        ),
        other => other,
    }
}

/// Resolves a task's inputs from the enclosing DAG's inputs, upstream outputs and
/// constants; applies selectors, component defaults and declared types.
pub(super) fn resolve_inputs(
    ctx: &RunCtx,
    key: &str,
    task: &TaskSpec,
    comp: &ComponentSpec,
    dag_inputs: &Io,
    upstream: &BTreeMap<String, Outcome>,
) -> Result<Io, String> {
    let from = Sources {
        ctx,
        key,
        dag_inputs,
        upstream,
    };
    let raw = from.parameters(task)?;
    let mut io = Io {
        parameters: typed_parameters(task, comp, raw)?,
        ..Default::default()
    };
    // Why an artifact input has no value, for the error if it is required.
    let mut missing: BTreeMap<&str, String> = BTreeMap::new();
    for (aname, a) in &task.inputs.artifacts {
        match from.artifact(a) {
            Ok(Some(v)) => {
                io.artifacts.insert(aname.clone(), v);
            }
            Ok(None) => {}
            Err(why) => {
                missing.insert(aname, why);
            }
        }
    }
    defaults_and_required(task, comp, &mut io, &missing)?;
    Ok(io)
}

/// Where a task's inputs come from.
struct Sources<'a> {
    ctx: &'a RunCtx,
    key: &'a str,
    dag_inputs: &'a Io,
    upstream: &'a BTreeMap<String, Outcome>,
}

impl Sources<'_> {
    /// Every parameter the task gives a value, selectors applied; constants
    /// are still unfilled (they may refer to the others).
    fn parameters(&self, task: &TaskSpec) -> Result<Map<String, Value>, String> {
        let mut raw = Map::new();
        for (pname, p) in &task.inputs.parameters {
            let value = self
                .parameter(p)
                .map_err(|e| format!("input '{pname}': {e}"))?;
            let value = match (&p.parameter_expression_selector, value) {
                (Some(sel), Some(v)) => {
                    Some(eval_selector(sel, &v).map_err(|e| format!("input '{pname}': {e}"))?)
                }
                (_, v) => v,
            };
            if let Some(v) = value {
                raw.insert(pname.clone(), v);
            }
        }
        Ok(raw)
    }

    fn parameter(
        &self,
        p: &switchyard_kfp_spec::ir::InputParameterSpec,
    ) -> Result<Option<Value>, String> {
        if let Some(src) = &p.component_input_parameter {
            return Ok(self.dag_inputs.parameters.get(src).cloned());
        }
        if let Some(t) = &p.task_output_parameter {
            return match self.upstream.get(&t.producer_task) {
                Some(o) if o.state == State::Succeeded => o
                    .outputs
                    .parameters
                    .get(&t.output_parameter_key)
                    .cloned()
                    .map(Some)
                    .ok_or_else(|| {
                        format!(
                            "task '{}' did not produce output '{}'",
                            t.producer_task, t.output_parameter_key
                        )
                    }),
                _ => Ok(None),
            };
        }
        if let Some(rv) = &p.runtime_value {
            // `show(job=dsl.PIPELINE_JOB_NAME_PLACEHOLDER)`: filled by the driver.
            let filled = match &rv.constant {
                Value::String(s) => self
                    .ctx
                    .run_values
                    .fill_constant(s, super::executor::task_name(self.key), self.key)?
                    .map(Value::String),
                _ => None,
            };
            return Ok(Some(filled.unwrap_or_else(|| rv.constant.clone())));
        }
        if let Some(fs) = &p.task_final_status {
            let o = self
                .upstream
                .get(&fs.producer_task)
                .cloned()
                .unwrap_or_else(|| Outcome::ended(State::Skipped, None));
            return Ok(Some(final_status(self.ctx, &fs.producer_task, &o)));
        }
        Ok(None)
    }

    /// An artifact input's value, `Ok(None)` for one the task gives no
    /// source, or why it has none.
    fn artifact(
        &self,
        a: &switchyard_kfp_spec::ir::InputArtifactSpec,
    ) -> Result<Option<Vec<crate::io::Artifact>>, String> {
        if let Some(src) = &a.component_input_artifact {
            let whose = if self.key.contains('/') {
                "the enclosing pipeline's"
            } else {
                "the pipeline's"
            };
            return match self.dag_inputs.artifacts.get(src) {
                Some(v) => Ok(Some(v.clone())),
                None => Err(format!("{whose} input artifact '{src}' was given no value")),
            };
        }
        let Some(t) = &a.task_output_artifact else {
            return Ok(None);
        };
        match self.upstream.get(&t.producer_task) {
            Some(o) if o.state == State::Succeeded => {
                match o.outputs.artifacts.get(&t.output_artifact_key) {
                    Some(v) => Ok(Some(v.clone())),
                    None => Err(format!(
                        "task '{}' produced no artifact '{}'",
                        t.producer_task, t.output_artifact_key
                    )),
                }
            }
            _ => Err(format!(
                "its producer '{}' did not succeed",
                t.producer_task
            )),
        }
    }
}

/// Fills constants that hold `{{$.inputs.parameters['pipelinechannel--x']}}`
/// (a pipeline parameter inside a dict or list literal) from the task's other
/// inputs, as KFP does, and gives executors values of their declared type;
/// DAG components pass values through untouched, as KFP's driver does (loop
/// items of untyped lists).
fn typed_parameters(
    task: &TaskSpec,
    comp: &ComponentSpec,
    raw: Map<String, Value>,
) -> Result<Map<String, Value>, String> {
    let channels = raw.clone();
    let mut typed = Map::new();
    for (pname, v) in raw {
        let is_constant = task
            .inputs
            .parameters
            .get(&pname)
            .is_some_and(|p| p.runtime_value.is_some());
        let v = if is_constant {
            fill_placeholders(v, &channels)
        } else {
            v
        };
        let def = comp.input_definitions.parameters.get(&pname);
        if comp.executor_label.is_some() && def.is_none() && pname.starts_with("pipelinechannel--")
        {
            // Only there to fill constants; the component does not declare it.
            continue;
        }
        let v = match def {
            Some(def) if comp.executor_label.is_some() => {
                normalize(def.parameter_type, v).map_err(|e| format!("input '{pname}': {e}"))?
            }
            _ => v,
        };
        typed.insert(pname, v);
    }
    Ok(typed)
}

/// Component defaults for parameters without a value; an executor's
/// required input without one is an error saying why it has none.
fn defaults_and_required(
    task: &TaskSpec,
    comp: &ComponentSpec,
    io: &mut Io,
    missing: &BTreeMap<&str, String>,
) -> Result<(), String> {
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
    if comp.executor_label.is_none() {
        return Ok(());
    }
    for (aname, def) in &comp.input_definitions.artifacts {
        if !io.artifacts.contains_key(aname) && !def.is_optional {
            let why = missing
                .get(aname.as_str())
                .cloned()
                .unwrap_or_else(|| "the task gives it no source".into());
            return Err(format!(
                "required input artifact '{aname}' has no value: {why}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::fill_placeholders;
    use serde_json::json;

    #[test]
    fn placeholders_inside_constants() {
        let inputs = json!({"pipelinechannel--epochs": 8, "pipelinechannel--name": "x"});
        let inputs = inputs.as_object().unwrap();
        let v = json!({"epochs": "{{$.inputs.parameters['pipelinechannel--epochs']}}", "lr": 0.1,
                       "tag": "run-{{$.inputs.parameters['pipelinechannel--name']}}-v{{$.inputs.parameters['pipelinechannel--epochs']}}",
                       "list": ["{{$.inputs.parameters['pipelinechannel--name']}}"], "other": "{{$.inputs.parameters['missing']}}"});
        assert_eq!(
            fill_placeholders(v, inputs),
            json!({"epochs": 8, "lr": 0.1, "tag": "run-x-v8", "list": ["x"], "other": "{{$.inputs.parameters['missing']}}"})
        );
    }
}
