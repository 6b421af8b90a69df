//! kfp-kubernetes' volumes, as KFP's driver handles them: `CreatePVC` and
//! `DeletePVC` are tasks the driver performs itself (their executors have no
//! command), and the claim a step mounts (`pvcMount`) may be another task's
//! output or a pipeline input, which the driver resolves before the step
//! starts. The backend creates, deletes and mounts the claims.

use std::collections::BTreeMap;

use switchyard_kfp_spec::DriverOp;

use crate::backend::VolumeClaim;

use super::tasklog::TaskLog;
use super::*;

/// KFP's storage class when the pipeline names none.
const DEFAULT_STORAGE_CLASS: &str = "standard";

/// Runs a `CreatePVC` or `DeletePVC` task. Its log says what was done.
pub(super) async fn run_driver_op(
    ctx: &Arc<RunCtx>,
    key: &str,
    op: DriverOp,
    inputs: Io,
    mut rec: TaskRecord,
) -> Outcome {
    let kind = match op {
        DriverOp::CreatePvc => "createpvc",
        DriverOp::DeletePvc => "deletepvc",
    };
    rec.kind = kind.into();
    // A resumed run keeps the claim it created (a fresh name would be
    // another), as it keeps every task that succeeded.
    if ctx.resume {
        if let Ok(Some(old)) = ctx.store.get_task(&ctx.run_id, key).await {
            if let Some(done) = super::executor::reuse_succeeded(ctx, &old, kind) {
                return done;
            }
        }
    }
    rec.state = State::Running;
    rec.started_at = Some(Utc::now());
    if let Err(e) = ctx.save(&rec).await {
        return Outcome::ended(State::Failed, Some(e));
    }
    let log = match TaskLog::open(ctx, key) {
        Ok(l) => l,
        Err(e) => return ctx.fail(&mut rec, format!("task '{key}': {e}")).await,
    };
    let done = match op {
        DriverOp::CreatePvc => create(ctx, &inputs).await,
        DriverOp::DeletePvc => delete(ctx, &inputs).await,
    };
    match done {
        Ok((line, outputs)) => {
            (log.sink)(&line);
            ctx.finish(&mut rec, State::Succeeded, outputs, None).await
        }
        Err(e) => {
            (log.sink)(&format!("error: {e}"));
            ctx.fail(&mut rec, format!("task '{key}': {e}")).await
        }
    }
}

async fn create(ctx: &Arc<RunCtx>, inputs: &Io) -> Result<(String, Io), String> {
    let claim = claim_of(ctx, inputs, uuid::Uuid::new_v4().to_string())?;
    let line = ctx
        .backend
        .create_volume(&claim)
        .await
        .map_err(|e| format!("failed to create pvc '{}': {e}", claim.name))?;
    let mut outputs = Io::default();
    outputs
        .parameters
        .insert("name".into(), Value::String(claim.name));
    Ok((line, outputs))
}

async fn delete(ctx: &Arc<RunCtx>, inputs: &Io) -> Result<(String, Io), String> {
    let name = text(inputs, "pvc_name")
        .filter(|n| !n.is_empty())
        .ok_or("failed to delete pvc: required parameter pvc_name not provided")?;
    check_name(&name)?;
    let dir = local_dir(ctx, &name);
    let line = ctx
        .backend
        .delete_volume(&ctx.run_id, &name, &dir)
        .await
        .map_err(|e| format!("failed to delete pvc '{name}': {e}"))?;
    Ok((line, Io::default()))
}

fn text(inputs: &Io, name: &str) -> Option<String> {
    inputs
        .parameters
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn local_dir(ctx: &RunCtx, name: &str) -> std::path::PathBuf {
    ctx.run_dir.join("volumes").join(name)
}

/// The claim a `CreatePVC` task asks for, read as KFP's driver reads it:
/// `access_modes` and `size` required; at most one of `pvc_name` and
/// `pvc_name_suffix` (a suffix goes after a fresh UUID, as does nothing);
/// `storage_class_name` (`standard` when absent), `annotations`, `volume_name`.
fn claim_of(ctx: &RunCtx, inputs: &Io, fresh: String) -> Result<VolumeClaim, String> {
    let p = &inputs.parameters;
    let access_modes: Vec<String> = p
        .get("access_modes")
        .and_then(Value::as_array)
        .ok_or("failed to create pvc: parameter access_modes not provided")?
        .iter()
        .map(|m| {
            m.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("failed to create pvc: access mode {m} is not a string"))
        })
        .collect::<Result<_, _>>()?;
    let (name, suffix) = (
        text(inputs, "pvc_name").unwrap_or_default(),
        text(inputs, "pvc_name_suffix").unwrap_or_default(),
    );
    let name = match (name.is_empty(), suffix.is_empty()) {
        (false, false) => return Err(
            "failed to create pvc: at most one of pvc_name and pvc_name_suffix can be non-empty"
                .into(),
        ),
        (true, false) => format!("{fresh}{suffix}"),
        (false, true) => name,
        (true, true) => fresh,
    };
    check_name(&name)?;
    let size = text(inputs, "size")
        .filter(|s| !s.is_empty())
        .ok_or("failed to create pvc: parameter size not provided")?;
    let annotations: BTreeMap<String, String> = p
        .get("annotations")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    Ok(VolumeClaim {
        run_id: ctx.run_id.clone(),
        local_dir: local_dir(ctx, &name),
        name,
        size,
        access_modes,
        storage_class: match p.get("storage_class_name") {
            None => DEFAULT_STORAGE_CLASS.to_string(),
            Some(v) => v.as_str().unwrap_or_default().to_string(),
        },
        annotations,
        volume_name: text(inputs, "volume_name").filter(|v| !v.is_empty()),
    })
}

/// A claim's name must be a Kubernetes object name (and is a folder name here).
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "pvc name '{name}' is not a Kubernetes object name (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)"
        ))
    }
}

/// The step's `pvcMount` settings with each claim's name resolved to a
/// constant (`constant` and `pvcNameParameter.runtimeValue.constant`), as
/// KFP's driver resolves `pvcNameParameter` (or the older `constant`,
/// `componentInputParameter`, `taskOutputParameter`) before the Pod exists.
pub(super) fn resolve_mounts(
    settings: &mut Value,
    dag_inputs: &Io,
    upstream: &BTreeMap<String, Outcome>,
) -> Result<(), String> {
    let Some(mounts) = settings.get_mut("pvcMount").and_then(Value::as_array_mut) else {
        return Ok(());
    };
    for (i, m) in mounts.iter_mut().enumerate() {
        let source = m
            .get("pvcNameParameter")
            .cloned()
            .unwrap_or_else(|| m.clone());
        let name = claim_name(&source, dag_inputs, upstream)
            .or_else(|| m.get("constant").and_then(Value::as_str).map(str::to_string))
            .ok_or_else(|| {
                format!("pvcMount[{i}]: the claim's name cannot be resolved (no constant, pipeline input or output of a task that succeeded)")
            })?;
        m["constant"] = Value::String(name.clone());
        m["pvcNameParameter"] = serde_json::json!({"runtimeValue": {"constant": name}});
    }
    Ok(())
}

/// A parameter source's value: `runtimeValue.constant`,
/// `componentInputParameter` (the DAG's input) or `taskOutputParameter`.
fn claim_name(
    source: &Value,
    dag_inputs: &Io,
    upstream: &BTreeMap<String, Outcome>,
) -> Option<String> {
    if let Some(c) = source["runtimeValue"]["constant"].as_str() {
        return Some(c.to_string());
    }
    if let Some(input) = source["componentInputParameter"].as_str() {
        return dag_inputs
            .parameters
            .get(input)
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    let t = &source["taskOutputParameter"];
    let (task, key) = (
        t["producerTask"].as_str()?,
        t["outputParameterKey"].as_str()?,
    );
    upstream
        .get(task)
        .filter(|o| o.state == State::Succeeded)?
        .outputs
        .parameters
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(name: &str) -> Outcome {
        let mut o = Outcome::ended(State::Succeeded, None);
        o.outputs.parameters.insert("name".into(), json!(name));
        o
    }

    #[test]
    fn mounts_name_their_claim_from_where_kfp_reads_it() {
        let upstream = BTreeMap::from([("createpvc".to_string(), outcome("abc-my-pvc"))]);
        let mut dag = Io::default();
        dag.parameters.insert("claim".into(), json!("given"));
        // As kfp-kubernetes 2.17 compiles mount_pvc(task, pvc_name=createpvc.outputs['name']).
        let mut s = json!({"pvcMount": [
            {"mountPath": "/data", "pvcNameParameter": {"taskOutputParameter": {"outputParameterKey": "name", "producerTask": "createpvc"}},
             "taskOutputParameter": {"outputParameterKey": "name", "producerTask": "createpvc"}},
            {"mountPath": "/in", "pvcNameParameter": {"componentInputParameter": "claim"}},
            {"mountPath": "/c", "constant": "fixed"},
        ]});
        resolve_mounts(&mut s, &dag, &upstream).expect("resolved");
        let names: Vec<&str> = s["pvcMount"]
            .as_array()
            .expect("mounts")
            .iter()
            .map(|m| m["constant"].as_str().expect("constant"))
            .collect();
        assert_eq!(names, ["abc-my-pvc", "given", "fixed"]);
        assert_eq!(
            s["pvcMount"][0]["pvcNameParameter"]["runtimeValue"]["constant"],
            "abc-my-pvc"
        );
        // A producer that did not succeed leaves nothing to mount.
        let mut s = json!({"pvcMount": [{"mountPath": "/d", "pvcNameParameter": {"taskOutputParameter": {"outputParameterKey": "name", "producerTask": "gone"}}}]});
        let err = resolve_mounts(&mut s, &dag, &upstream).expect_err("unresolved");
        assert!(err.contains("pvcMount[0]"), "{err}");
    }

    #[test]
    fn claim_names_are_kubernetes_names() {
        assert!(check_name("0d1f-my-pvc").is_ok());
        for bad in ["", "../etc", "My-PVC", "-x", "a/b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
