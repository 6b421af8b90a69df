//! `dsl.TaskConfig` (kfp >= 2.15): a component that declares
//! `task_config_passthroughs` receives the task's own settings (resources,
//! environment, node selector, tolerations, node affinity, volumes) as an
//! input of type `TASK_CONFIG`, in Kubernetes' JSON, so it can hand them to
//! what it launches (a training job). As KFP's driver does: a field passed
//! through without `apply_to_task` goes only to the component, not to the
//! task's own Pod; the value is added after the cache key is taken.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use switchyard_kfp_spec::{ComponentSpec, ContainerSpec, ParameterType};

use crate::backend::Job;

/// The passthrough fields, as the IR names them.
const RESOURCES: &str = "RESOURCES";
const ENV: &str = "ENV";
const AFFINITY: &str = "KUBERNETES_AFFINITY";
const TOLERATIONS: &str = "KUBERNETES_TOLERATIONS";
const NODE_SELECTOR: &str = "KUBERNETES_NODE_SELECTOR";
const VOLUMES: &str = "KUBERNETES_VOLUMES";

/// The IR enum's numbers, for a spec written with numbers.
fn field_name(v: &Value) -> Option<&'static str> {
    let by_number = [
        (1, RESOURCES),
        (2, ENV),
        (3, AFFINITY),
        (4, TOLERATIONS),
        (5, NODE_SELECTOR),
        (6, VOLUMES),
    ];
    match v {
        Value::String(s) => by_number.iter().map(|(_, n)| *n).find(|n| n == s),
        Value::Number(n) => by_number
            .iter()
            .find(|(i, _)| n.as_i64() == Some(*i))
            .map(|(_, name)| *name),
        _ => None,
    }
}

/// The component's passthroughs: field → whether it is applied to the task too.
pub(super) fn passthroughs(comp: &ComponentSpec) -> BTreeMap<&'static str, bool> {
    comp.task_config_passthroughs
        .iter()
        .filter_map(|p| {
            let apply = p
                .get("applyToTask")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            field_name(p.get("field")?).map(|f| (f, apply))
        })
        .collect()
}

/// Adds the TaskConfig value to every `TASK_CONFIG` input of the component.
pub(super) fn fill_inputs(
    comp: &ComponentSpec,
    container: &ContainerSpec,
    platform: &BTreeMap<String, Value>,
    parameters: &mut Map<String, Value>,
) {
    let names: Vec<&String> = comp
        .input_definitions
        .parameters
        .iter()
        .filter(|(_, p)| p.parameter_type == ParameterType::TaskConfig)
        .map(|(n, _)| n)
        .collect();
    if names.is_empty() {
        return;
    }
    let value = task_config(&passthroughs(comp), container, &platform_of(platform));
    for n in names {
        parameters.insert(n.clone(), value.clone());
    }
}

fn platform_of(platform: &BTreeMap<String, Value>) -> Value {
    platform.get("kubernetes").cloned().unwrap_or(Value::Null)
}

/// The TaskConfig KFP's driver builds: every key present (`null` when not
/// passed through or not set), `resources` at least `{}`, `env` at least `[]`
/// once passed through.
fn task_config(
    fields: &BTreeMap<&'static str, bool>,
    container: &ContainerSpec,
    k8s: &Value,
) -> Value {
    let on = |f: &str| fields.contains_key(f);
    let mut out = json!({
        "affinity": null, "tolerations": null, "nodeSelector": null, "env": null,
        "volumes": null, "volumeMounts": null, "resources": {},
    });
    if on(RESOURCES) {
        out["resources"] = resources(container.resources.as_ref());
    }
    if on(ENV) {
        out["env"] = Value::Array(env(container, k8s));
    }
    if on(NODE_SELECTOR) {
        if let Some(labels) = k8s["nodeSelector"]["labels"].as_object() {
            out["nodeSelector"] = Value::Object(labels.clone());
        }
    }
    if on(TOLERATIONS) {
        if let Some(ts) = k8s["tolerations"].as_array() {
            out["tolerations"] = Value::Array(ts.iter().map(toleration).collect());
        }
    }
    if on(AFFINITY) {
        out["affinity"] = affinity(k8s);
    }
    if on(VOLUMES) {
        let (volumes, mounts) = volumes(k8s);
        if !volumes.is_empty() {
            out["volumes"] = Value::Array(volumes);
            out["volumeMounts"] = Value::Array(mounts);
        }
    }
    out
}

/// `{limits, requests}` from the container's resources (the newer quantity
/// strings win over the older numbers; memory numbers are gigabytes), and the
/// accelerator as a limit under its own resource name.
fn resources(r: Option<&Value>) -> Value {
    let Some(r) = r else { return json!({}) };
    let quantity = |new: &str, old: &str, unit: &str| -> Option<String> {
        match r.get(new).and_then(Value::as_str).filter(|s| !s.is_empty()) {
            Some(s) => Some(s.to_string()),
            None => r
                .get(old)
                .and_then(Value::as_f64)
                .filter(|f| *f != 0.0)
                .map(|f| format!("{f}{unit}")),
        }
    };
    let mut limits = Map::new();
    let mut requests = Map::new();
    for (limit, new, old, key, unit) in [
        (true, "resourceCpuLimit", "cpuLimit", "cpu", ""),
        (false, "resourceCpuRequest", "cpuRequest", "cpu", ""),
        (true, "resourceMemoryLimit", "memoryLimit", "memory", "G"),
        (
            false,
            "resourceMemoryRequest",
            "memoryRequest",
            "memory",
            "G",
        ),
    ] {
        if let Some(q) = quantity(new, old, unit) {
            let map = if limit { &mut limits } else { &mut requests };
            map.insert(key.into(), Value::String(q));
        }
    }
    let acc = &r["accelerator"];
    let kind = acc["resourceType"]
        .as_str()
        .filter(|s| !s.is_empty())
        .or_else(|| acc["type"].as_str());
    let count = acc["resourceCount"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .or_else(|| match &acc["count"] {
            Value::String(s) if s != "0" && !s.is_empty() => Some(s.clone()),
            Value::Number(n) if n.as_i64().unwrap_or(0) > 0 => Some(n.to_string()),
            _ => None,
        });
    if let (Some(kind), Some(count)) = (kind.filter(|k| !k.is_empty()), count) {
        limits.insert(kind.to_string(), Value::String(count));
    }
    let mut out = Map::new();
    if !limits.is_empty() {
        out.insert("limits".into(), Value::Object(limits));
    }
    if !requests.is_empty() {
        out.insert("requests".into(), Value::Object(requests));
    }
    Value::Object(out)
}

/// The container's variables, then those from Secrets, ConfigMaps and fields.
fn env(container: &ContainerSpec, k8s: &Value) -> Vec<Value> {
    let mut out: Vec<Value> = container
        .env
        .iter()
        .map(|e| json!({"name": e.name, "value": e.value}))
        .collect();
    let list = |key: &str| k8s[key].as_array().cloned().unwrap_or_default();
    // (setting, its name field, the key field of each variable, the reference)
    for (setting, name_key, key_key, reference) in [
        ("secretAsEnv", "secretName", "secretKey", "secretKeyRef"),
        (
            "configMapAsEnv",
            "configMapName",
            "configMapKey",
            "configMapKeyRef",
        ),
    ] {
        for s in list(setting) {
            let Some(name) = setting_name(&s, name_key) else {
                continue;
            };
            for kv in s["keyToEnv"].as_array().into_iter().flatten() {
                let mut r = json!({"name": name, "key": kv[key_key]});
                if let Some(o) = s.get("optional").and_then(Value::as_bool) {
                    r["optional"] = json!(o);
                }
                out.push(json!({"name": kv["envVar"], "valueFrom": {reference: r}}));
            }
        }
    }
    for f in list("fieldPathAsEnv") {
        out.push(
            json!({"name": f["name"], "valueFrom": {"fieldRef": {"fieldPath": f["fieldPath"]}}}),
        );
    }
    out
}

/// A Secret's or ConfigMap's name: the old `<key>` field or the newer
/// `<key>Parameter.runtimeValue.constant`.
fn setting_name(s: &Value, key: &str) -> Option<String> {
    s[key]
        .as_str()
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .or_else(|| {
            s[format!("{key}Parameter")]["runtimeValue"]["constant"]
                .as_str()
                .map(str::to_string)
        })
}

fn toleration(t: &Value) -> Value {
    let mut out = Map::new();
    for k in ["key", "operator", "value", "effect", "tolerationSeconds"] {
        match &t[k] {
            Value::Null => {}
            Value::String(s) if s.is_empty() => {}
            // int64 in the IR's JSON: a string; Kubernetes writes a number.
            Value::String(s) if k == "tolerationSeconds" => {
                if let Ok(n) = s.parse::<i64>() {
                    out.insert(k.into(), json!(n));
                }
            }
            v => {
                out.insert(k.into(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// Node affinity only (KFP 2.17 passes nothing else): terms with a weight are
/// preferred, the others required.
fn affinity(k8s: &Value) -> Value {
    let mut required = Vec::new();
    let mut preferred = Vec::new();
    for a in k8s["nodeAffinity"].as_array().into_iter().flatten() {
        let mut term = Map::new();
        for k in ["matchExpressions", "matchFields"] {
            if let Some(list) = a[k].as_array().filter(|l| !l.is_empty()) {
                term.insert(k.into(), Value::Array(list.clone()));
            }
        }
        if term.is_empty() {
            continue;
        }
        match a.get("weight").and_then(Value::as_i64) {
            Some(w) => preferred.push(json!({"weight": w, "preference": term})),
            None => required.push(Value::Object(term)),
        }
    }
    if required.is_empty() && preferred.is_empty() {
        return Value::Null;
    }
    let mut node = json!({});
    // Kubernetes refuses an empty list of required terms.
    if !required.is_empty() {
        node["requiredDuringSchedulingIgnoredDuringExecution"] =
            json!({ "nodeSelectorTerms": required });
    }
    if !preferred.is_empty() {
        node["preferredDuringSchedulingIgnoredDuringExecution"] = Value::Array(preferred);
    }
    json!({"nodeAffinity": node})
}

/// Claims, then Secrets, then ConfigMaps as volumes, with their mounts.
fn volumes(k8s: &Value) -> (Vec<Value>, Vec<Value>) {
    let (mut volumes, mut mounts) = (Vec::new(), Vec::new());
    let list = |key: &str| k8s[key].as_array().cloned().unwrap_or_default();
    for m in list("pvcMount") {
        let Some(claim) = m["constant"].as_str() else {
            continue;
        };
        volumes.push(json!({"name": claim, "persistentVolumeClaim": {"claimName": claim}}));
        let mut mount = json!({"name": claim, "mountPath": m["mountPath"]});
        if let Some(sub) = m["subPath"].as_str().filter(|s| !s.is_empty()) {
            mount["subPath"] = json!(sub);
        }
        mounts.push(mount);
    }
    for s in list("secretAsVolume") {
        let Some(name) = setting_name(&s, "secretName") else {
            continue;
        };
        let optional = s["optional"].as_bool().unwrap_or(false);
        volumes.push(json!({"name": name, "secret": {"secretName": name, "optional": optional}}));
        mounts.push(json!({"name": name, "mountPath": s["mountPath"]}));
    }
    for c in list("configMapAsVolume") {
        let Some(name) = setting_name(&c, "configMapName") else {
            continue;
        };
        let optional = c["optional"].as_bool().unwrap_or(false);
        volumes.push(json!({"name": name, "configMap": {"name": name, "optional": optional}}));
        mounts.push(json!({"name": name, "mountPath": c["mountPath"]}));
    }
    (volumes, mounts)
}

/// Takes out of the task's own settings what goes only to the component (a
/// field passed through without `apply_to_task`): the Pod does not get it.
pub(super) fn withhold(comp: &ComponentSpec, container: &ContainerSpec, job: &mut Job) {
    let fields = passthroughs(comp);
    let withheld = |f: &str| fields.get(f) == Some(&false);
    if withheld(RESOURCES) {
        job.resources = Default::default();
    }
    let k8s_keys: &[(&str, &[&str])] = &[
        (ENV, &["secretAsEnv", "configMapAsEnv", "fieldPathAsEnv"]),
        (NODE_SELECTOR, &["nodeSelector"]),
        (TOLERATIONS, &["tolerations"]),
        (AFFINITY, &["nodeAffinity"]),
        (
            VOLUMES,
            &["pvcMount", "secretAsVolume", "configMapAsVolume"],
        ),
    ];
    if withheld(ENV) {
        for e in &container.env {
            job.env.remove(&e.name);
        }
    }
    if let Some(k8s) = job
        .platform
        .get_mut("kubernetes")
        .and_then(Value::as_object_mut)
    {
        for (field, keys) in k8s_keys {
            if withheld(field) {
                for k in *keys {
                    k8s.remove(*k);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_holds_what_is_passed_through_and_nulls_elsewhere() {
        let fields: BTreeMap<&'static str, bool> =
            [(RESOURCES, false), (ENV, true), (VOLUMES, false)].into();
        let container: ContainerSpec = serde_json::from_value(json!({
            "image": "python:3.11", "command": ["python3"],
            "env": [{"name": "ENV1", "value": "val1"}],
            "resources": {"cpuLimit": 0.1, "resourceCpuLimit": "100m", "memoryLimit": 0.1,
                "resourceMemoryLimit": "100Mi", "resourceCpuRequest": "100m",
                "accelerator": {"count": "1", "resourceCount": "1", "resourceType": "nvidia.com/gpu", "type": "nvidia.com/gpu"}},
        }))
        .expect("container");
        let k8s = json!({
            "pvcMount": [{"mountPath": "/data", "constant": "my-claim"}],
            "secretAsEnv": [{"secretNameParameter": {"runtimeValue": {"constant": "creds"}},
                "keyToEnv": [{"secretKey": "token", "envVar": "TOKEN"}]}],
            "nodeSelector": {"labels": {"disktype": "ssd"}},
        });
        let tc = task_config(&fields, &container, &k8s);
        assert_eq!(
            tc["resources"],
            json!({"limits": {"cpu": "100m", "memory": "100Mi", "nvidia.com/gpu": "1"}, "requests": {"cpu": "100m"}})
        );
        assert_eq!(
            tc["env"],
            json!([{"name": "ENV1", "value": "val1"},
                   {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}])
        );
        assert_eq!(
            tc["volumes"],
            json!([{"name": "my-claim", "persistentVolumeClaim": {"claimName": "my-claim"}}])
        );
        assert_eq!(
            tc["volumeMounts"],
            json!([{"name": "my-claim", "mountPath": "/data"}])
        );
        // Not passed through: null, though the task sets it.
        assert_eq!(tc["nodeSelector"], Value::Null);
        assert_eq!(tc["affinity"], Value::Null);
        // Nothing passed through: KFP's empty config.
        let empty = task_config(&BTreeMap::new(), &container, &k8s);
        assert_eq!(
            empty,
            json!({"affinity": null, "tolerations": null, "nodeSelector": null, "env": null,
                   "volumes": null, "volumeMounts": null, "resources": {}})
        );
    }

    #[test]
    fn what_is_only_passed_through_is_taken_from_the_task() {
        let comp: ComponentSpec = serde_json::from_value(json!({
            "executorLabel": "exec-launcher",
            "taskConfigPassthroughs": [{"field": "RESOURCES"}, {"field": "ENV", "applyToTask": true},
                                       {"field": "KUBERNETES_VOLUMES"}],
        }))
        .expect("component");
        let container: ContainerSpec = serde_json::from_value(json!({
            "image": "i", "env": [{"name": "ENV1", "value": "val1"}]}))
        .expect("container");
        let mut job = Job {
            id: "j".into(),
            run_id: "r".into(),
            display_name: "launcher".into(),
            image: "i".into(),
            argv: vec!["python3".into()],
            env: [("ENV1".to_string(), "val1".to_string())].into(),
            work_dir: "/tmp".into(),
            resources: crate::resources::from_ir(Some(&json!({"resourceCpuLimit": "1"}))),
            platform: [(
                "kubernetes".to_string(),
                json!({"pvcMount": [{"mountPath": "/d", "constant": "c"}], "nodeSelector": {"labels": {"a": "b"}}}),
            )]
            .into(),
            service_account: None,
        };
        withhold(&comp, &container, &mut job);
        assert!(
            !job.resources.has_cpu_or_memory(),
            "RESOURCES only handed over"
        );
        assert_eq!(job.env["ENV1"], "val1", "ENV applied to the task too");
        let k8s = &job.platform["kubernetes"];
        assert!(k8s.get("pvcMount").is_none(), "volumes only handed over");
        assert!(
            k8s.get("nodeSelector").is_some(),
            "not passed through: applied"
        );
    }

    #[test]
    fn tolerations_and_affinity_in_kubernetes_json() {
        let fields: BTreeMap<&'static str, bool> = [(TOLERATIONS, true), (AFFINITY, true)].into();
        let k8s = json!({
            "tolerations": [{"key": "example-key", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": "3600"}],
            "nodeAffinity": [{"matchExpressions": [{"key": "disktype", "operator": "In", "values": ["ssd"]}]},
                             {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}], "weight": 5}],
        });
        let tc = task_config(&fields, &ContainerSpec::default(), &k8s);
        assert_eq!(
            tc["tolerations"],
            json!([{"key": "example-key", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 3600}])
        );
        let node = &tc["affinity"]["nodeAffinity"];
        assert_eq!(
            node["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
                ["matchExpressions"][0]["key"],
            "disktype"
        );
        let k8s = json!({"nodeAffinity": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}], "weight": 5}]});
        let only_preferred = task_config(&fields, &ContainerSpec::default(), &k8s);
        assert!(
            only_preferred["affinity"]["nodeAffinity"]
                .get("requiredDuringSchedulingIgnoredDuringExecution")
                .is_none(),
            "no empty required list (Kubernetes refuses one)"
        );
        assert_eq!(
            node["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"],
            5
        );
    }
}
