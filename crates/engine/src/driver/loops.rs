//! `dsl.ParallelFor`: iterations of a DAG, bounded by the loop's parallelism.

use super::*;

/// Most iterations of a loop without `parallelismLimit` in progress at once.
const MAX_OPEN_ITERATIONS: usize = 1024;

/// One item of a loop: a parameter value or an artifact, under the name
/// the body reads it by.
enum Item {
    Param(String, Value),
    Art(String, Artifact),
}

/// `dsl.ParallelFor`: one DAG run per item, at most `parallelismLimit` at once;
/// outputs become lists (what `dsl.Collected` reads).
pub(super) async fn run_loop(
    ctx: &Arc<RunCtx>,
    at: &TaskAt<'_>,
    inputs: Io,
    mut rec: TaskRecord,
) -> Outcome {
    let (key, task) = (at.key, at.task);
    let items = match loop_items(task, &inputs) {
        Ok(i) => i,
        Err(e) => {
            let msg = format!("task '{key}': {e}");
            return ctx.fail(&mut rec, msg).await;
        }
    };
    let inputs = shared_inputs(at, inputs);
    let outcomes = run_iterations(ctx, at, &inputs, items).await;
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
        return ctx.canceled(&mut rec).await;
    }
    let outputs = collected(at.comp, &outcomes);
    ctx.finish(&mut rec, State::Succeeded, outputs, None).await
}

/// The items a loop iterates over: a raw JSON list, a list parameter (or a
/// string holding one), or a list of artifacts.
fn loop_items(task: &TaskSpec, inputs: &Io) -> Result<Vec<Item>, String> {
    if let Some(it) = &task.parameter_iterator {
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
        return list.and_then(|l| match l {
            Value::Array(a) => Ok(a
                .into_iter()
                .map(|v| Item::Param(it.item_input.clone(), v))
                .collect()),
            other => Err(format!("ParallelFor items must be a list, got {other}")),
        });
    }
    let Some(it) = &task.artifact_iterator else {
        return Ok(vec![]);
    };
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
}

/// What every iteration gets: the loop's inputs, without the list it
/// iterates over unless the body reads it (or n iterations would copy, and
/// record, n items each: quadratic in time and memory).
fn shared_inputs(at: &TaskAt<'_>, mut inputs: Io) -> Io {
    let task = at.task;
    let source = task
        .parameter_iterator
        .as_ref()
        .and_then(|it| it.items.input_parameter.clone())
        .or_else(|| {
            task.artifact_iterator
                .as_ref()
                .map(|it| it.items.input_artifact.clone())
        });
    if let Some(name) = source.filter(|n| !body_mentions(at.comp, n)) {
        inputs.parameters.remove(&name);
        inputs.artifacts.remove(&name);
    }
    inputs
}

/// Runs the iterations, in item order of their outcomes. They start as
/// earlier ones end, at most `parallelismLimit` (else MAX_OPEN_ITERATIONS)
/// at once: an iteration's inputs and state exist only while it runs, so
/// memory does not grow with the item count. (Without a limit the run's
/// task slots still bound what executes.)
async fn run_iterations(
    ctx: &Arc<RunCtx>,
    at: &TaskAt<'_>,
    inputs: &Io,
    items: Vec<Item>,
) -> Vec<Outcome> {
    let limit = at
        .task
        .iterator_policy
        .as_ref()
        .map(|p| p.parallelism_limit as usize)
        .unwrap_or(0);
    let open = if limit == 0 {
        MAX_OPEN_ITERATIONS
    } else {
        limit
    };
    let count = items.len();
    let iterations = items.into_iter().enumerate().map(|(i, item)| {
        let mut it_inputs = inputs.clone();
        match item {
            Item::Param(name, v) => {
                it_inputs.parameters.insert(name, v);
            }
            Item::Art(name, a) => {
                it_inputs.artifacts.insert(name, vec![a]);
            }
        }
        let (ctx, comp_name, scope) = (
            ctx.clone(),
            at.comp_name.to_string(),
            Scope::iteration(at.key, i),
        );
        async move { (i, run_dag(ctx, scope, comp_name, it_inputs).await) }
    });
    let mut done: Vec<Option<Outcome>> = (0..count).map(|_| None).collect();
    let mut running = futures::StreamExt::buffer_unordered(futures::stream::iter(iterations), open);
    while let Some((i, o)) = futures::StreamExt::next(&mut running).await {
        done[i] = Some(o);
    }
    drop(running);
    done.into_iter().flatten().collect()
}

/// The loop's outputs: each of its DAG's outputs as the list of every
/// iteration's value (what `dsl.Collected` reads).
fn collected(comp: &ComponentSpec, outcomes: &[Outcome]) -> Io {
    let mut outputs = Io::default();
    let Some(dag) = &comp.dag else {
        return outputs;
    };
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
    outputs
}

/// Whether the loop's body (its DAG: task inputs, conditions, nested
/// iterators) names input `name`, quoted as the IR and its conditions quote it.
fn body_mentions(comp: &ComponentSpec, name: &str) -> bool {
    let Some(dag) = &comp.dag else {
        return true;
    };
    let text = serde_json::to_string(dag).unwrap_or_default();
    text.contains(&format!("\"{name}\"")) || text.contains(&format!("'{name}'"))
}
