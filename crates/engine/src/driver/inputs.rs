//! Resolving a task's inputs from its DAG, its upstream tasks and constants.

use super::*;

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
pub(super) fn resolve_inputs(
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
