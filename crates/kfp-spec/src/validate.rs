//! Static checks run before a run record is written, so a bad pipeline never
//! leaves a half-made run behind. Every error names the component and task.

use std::collections::BTreeMap;

use crate::{ComponentSpec, DagSpec, PipelineSpec, SpecError};

/// How deep DAGs may nest (conditions, loops, exit handlers and pipelines used
/// as components each add a level; real pipelines use a handful). Deeper specs
/// are refused before anything runs: executing them would exhaust the stack.
pub const MAX_DAG_DEPTH: usize = 64;

/// Checks references, executors, dependency cycles, nesting depth and
/// unsupported features in every DAG reachable from the root.
pub fn validate(spec: &PipelineSpec) -> Result<(), SpecError> {
    check_path_name("pipelineInfo.name", &spec.pipeline_info.name, true)?;
    let mut visiting = Vec::new();
    let mut done = BTreeMap::new();
    check_component(spec, "root", &spec.root, &mut visiting, &mut done).map(|_| ())
}

fn too_deep(path: &[String], name: &str) -> SpecError {
    SpecError::Invalid {
        place: format!("component '{name}'"),
        message: format!(
            "DAGs nest more than {MAX_DAG_DEPTH} levels deep (through {} …); flatten the pipeline",
            path.iter()
                .take(4)
                .cloned()
                .collect::<Vec<_>>()
                .join(" -> ")
        ),
    }
}

/// Checks one component; returns its height (how many DAG levels it holds).
/// `done` keeps each checked component's height, so a shared component is
/// walked once and still counts at every depth it is used.
fn check_component(
    spec: &PipelineSpec,
    name: &str,
    comp: &ComponentSpec,
    visiting: &mut Vec<String>,
    done: &mut BTreeMap<String, usize>,
) -> Result<usize, SpecError> {
    if let Some(&height) = done.get(name) {
        if visiting.len() + height > MAX_DAG_DEPTH {
            return Err(too_deep(visiting, name));
        }
        return Ok(height);
    }
    if visiting.len() >= MAX_DAG_DEPTH {
        return Err(too_deep(visiting, name));
    }
    if visiting.iter().any(|v| v == name) {
        let mut cycle = visiting.clone();
        cycle.push(name.to_string());
        return Err(SpecError::Invalid {
            place: format!("component '{name}'"),
            message: format!("component uses itself: {}", cycle.join(" -> ")),
        });
    }
    visiting.push(name.to_string());
    for out in comp
        .output_definitions
        .parameters
        .keys()
        .chain(comp.output_definitions.artifacts.keys())
    {
        check_path_name(&format!("component '{name}', output '{out}'"), out, false)?;
    }
    let height = match (&comp.dag, &comp.executor_label) {
        (Some(dag), _) => 1 + check_dag(spec, name, comp, dag, visiting, done)?,
        (None, Some(label)) => {
            check_executor(spec, name, label)?;
            0
        }
        (None, None) => {
            return Err(SpecError::Invalid {
                place: format!("component '{name}'"),
                message: "has neither a `dag` nor an `executorLabel`".into(),
            })
        }
    };
    visiting.pop();
    done.insert(name.to_string(), height);
    Ok(height)
}

fn check_executor(spec: &PipelineSpec, comp: &str, label: &str) -> Result<(), SpecError> {
    let place = format!("component '{comp}'");
    let exec = spec
        .deployment_spec
        .executors
        .get(label)
        .ok_or_else(|| SpecError::Invalid {
            place: place.clone(),
            message: format!("executorLabel '{label}' is not defined in deploymentSpec.executors"),
        })?;
    if exec.resolver.is_some() {
        return Err(SpecError::Unsupported {
            place: format!("executor '{label}'"),
            feature: "resolver executors (dsl.importer with a resolver / metadata queries)".into(),
        });
    }
    if exec.container.is_none() && exec.importer.is_none() {
        return Err(SpecError::Invalid {
            place: format!("executor '{label}'"),
            message: "has neither `container` nor `importer`".into(),
        });
    }
    if let Some(c) = &exec.container {
        if c.command.is_empty() && c.args.is_empty() && c.driver_op().is_none() {
            return Err(SpecError::Invalid {
                place: format!("executor '{label}'"),
                message: "container has no command and no args; a local run needs a command".into(),
            });
        }
    }
    Ok(())
}

fn check_dag(
    spec: &PipelineSpec,
    comp_name: &str,
    comp: &ComponentSpec,
    dag: &DagSpec,
    visiting: &mut Vec<String>,
    done: &mut BTreeMap<String, usize>,
) -> Result<usize, SpecError> {
    let check = DagCheck {
        spec,
        comp_name,
        comp,
        dag,
        dag_place: if comp_name == "root" {
            "root DAG".to_string()
        } else {
            format!("DAG of '{comp_name}'")
        },
    };
    let mut height = 0;
    for (key, task) in &dag.tasks {
        let child = check.task(key, task)?;
        height = height.max(check_component(
            spec,
            &task.component_ref.name,
            child,
            visiting,
            done,
        )?);
    }
    check.outputs()?;
    if let Some(cycle) = find_cycle(dag) {
        return Err(SpecError::Cycle {
            dag: check.dag_place,
            cycle,
        });
    }
    Ok(height)
}

/// One DAG being checked, and how errors name it.
struct DagCheck<'a> {
    spec: &'a PipelineSpec,
    comp_name: &'a str,
    comp: &'a ComponentSpec,
    dag: &'a DagSpec,
    dag_place: String,
}

impl<'a> DagCheck<'a> {
    /// A task of the DAG: its name, component, upstream tasks, the
    /// component inputs it reads and its iterator. Returns its component.
    fn task(&self, key: &str, task: &crate::TaskSpec) -> Result<&'a ComponentSpec, SpecError> {
        let (spec, comp_name, comp, dag, dag_place) = (
            self.spec,
            self.comp_name,
            self.comp,
            self.dag,
            &self.dag_place,
        );
        let place = format!("{dag_place}, task '{key}'");
        check_path_name(&place, key, false)?;
        let child = spec
            .components
            .get(&task.component_ref.name)
            .ok_or_else(|| SpecError::Invalid {
                place: place.clone(),
                message: format!(
                    "componentRef '{}' is not defined in `components`",
                    task.component_ref.name
                ),
            })?;
        for up in task.upstream() {
            if !dag.tasks.contains_key(up) {
                return Err(SpecError::Invalid {
                    place: place.clone(),
                    message: format!("depends on task '{up}', which is not in the same DAG"),
                });
            }
        }
        for (pname, p) in &task.inputs.parameters {
            if let Some(src) = &p.component_input_parameter {
                if !comp.input_definitions.parameters.contains_key(src) {
                    return Err(SpecError::Invalid {
                        place: format!("{place}, input '{pname}'"),
                        message: format!(
                            "reads component input '{src}', which '{comp_name}' does not declare"
                        ),
                    });
                }
            }
        }
        for (aname, a) in &task.inputs.artifacts {
            if let Some(src) = &a.component_input_artifact {
                if !comp.input_definitions.artifacts.contains_key(src) {
                    return Err(SpecError::Invalid {
                    place: format!("{place}, input artifact '{aname}'"),
                    message: format!("reads component input artifact '{src}', which '{comp_name}' does not declare"),
                });
                }
            }
        }
        if let Some(it) = &task.parameter_iterator {
            if it.items.raw.is_none() && it.items.input_parameter.is_none() {
                return Err(SpecError::Invalid {
                    place,
                    message: "parameterIterator has neither `items.raw` nor `items.inputParameter`"
                        .into(),
                });
            }
            if let Some(raw) = &it.items.raw {
                if !matches!(
                    serde_json::from_str::<serde_json::Value>(raw),
                    Ok(serde_json::Value::Array(_))
                ) {
                    return Err(SpecError::Invalid {
                        place,
                        message: format!("parameterIterator items.raw is not a JSON list: {raw}"),
                    });
                }
            }
        }
        Ok(child)
    }

    /// The DAG's outputs select from tasks it has.
    fn outputs(&self) -> Result<(), SpecError> {
        let (dag, dag_place) = (self.dag, &self.dag_place);
        for (out, sel) in &dag.outputs.parameters {
            let producers: Vec<&str> = match (&sel.value_from_parameter, &sel.value_from_oneof) {
                (Some(p), _) => vec![p.producer_subtask.as_str()],
                (None, Some(o)) => o
                    .parameter_selectors
                    .iter()
                    .map(|s| s.producer_subtask.as_str())
                    .collect(),
                (None, None) => vec![],
            };
            for p in producers {
                if !dag.tasks.contains_key(p) {
                    return Err(SpecError::Invalid {
                        place: format!("{dag_place}, output '{out}'"),
                        message: format!("selects from task '{p}', which is not in the DAG"),
                    });
                }
            }
        }
        for (out, sel) in &dag.outputs.artifacts {
            for s in &sel.artifact_selectors {
                if !dag.tasks.contains_key(&s.producer_subtask) {
                    return Err(SpecError::Invalid {
                        place: format!("{dag_place}, output artifact '{out}'"),
                        message: format!(
                            "selects from task '{}', which is not in the DAG",
                            s.producer_subtask
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Returns one cycle (as a closed path of task names) if the DAG has any.
pub fn find_cycle(dag: &DagSpec) -> Option<Vec<String>> {
    // 0 = unvisited, 1 = on stack, 2 = finished
    let mut mark: BTreeMap<&str, u8> = dag.tasks.keys().map(|k| (k.as_str(), 0)).collect();
    let mut stack: Vec<&str> = Vec::new();
    fn visit<'a>(
        dag: &'a DagSpec,
        node: &'a str,
        mark: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match mark.get(node).copied() {
            Some(2) | None => return None,
            Some(1) => {
                let start = stack.iter().position(|n| *n == node).unwrap_or(0);
                let mut cycle: Vec<String> = stack[start..].iter().map(|s| s.to_string()).collect();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        mark.insert(node, 1);
        stack.push(node);
        if let Some(task) = dag.tasks.get(node) {
            for up in task.upstream() {
                if let Some(c) = visit(dag, up, mark, stack) {
                    return Some(c);
                }
            }
        }
        stack.pop();
        mark.insert(node, 2);
        None
    }
    let keys: Vec<&str> = dag.tasks.keys().map(String::as_str).collect();
    for k in keys {
        if let Some(c) = visit(dag, k, &mut mark, &mut stack) {
            return Some(c);
        }
    }
    None
}

/// Names that become file names (pipeline, task, output) must stay inside the
/// run's folder: no separators, no `.`/`..`, nothing absolute.
fn check_path_name(place: &str, name: &str, allow_empty: bool) -> Result<(), SpecError> {
    let bad = (!allow_empty && name.is_empty())
        || name == "."
        || name == ".."
        || name.contains(['/', '\\', '\0']);
    if bad {
        return Err(SpecError::Invalid {
            place: place.to_string(),
            message: format!("the name '{name}' cannot be used: names become file names, so they may not be empty, '.', '..' or contain '/'"),
        });
    }
    Ok(())
}
