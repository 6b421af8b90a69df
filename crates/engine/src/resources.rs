//! A step's resource request, from the IR's `resources` into the backend
//! contract's typed [`Resources`], so no backend reads IR JSON.

use serde_json::Value;
use switchyard_backend::{Accelerator, Resources};

/// Reads the IR's `resources`: `resourceCpuLimit`/`cpuLimit`,
/// `resourceMemoryLimit`/`memoryLimit` (GB), the matching requests and
/// `accelerator` (`resourceType`/`type`, `resourceCount`/`count`). The
/// quantity strings kfp ≥ 2.5 writes win over the older numbers.
pub fn from_ir(r: Option<&Value>) -> Resources {
    let Some(r) = r else {
        return Resources::default();
    };
    let text = |k: &str| {
        r.get(k).and_then(|v| {
            v.as_str()
                .map(str::to_string)
                .or_else(|| v.as_f64().map(|f| f.to_string()))
        })
    };
    let gigabytes = |k: &str| {
        r.get(k)
            .and_then(Value::as_f64)
            .map(|gb| format!("{}", (gb * 1e9) as u64))
    };
    let accelerator = r.get("accelerator").and_then(|acc| {
        let count = acc
            .get("resourceCount")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| acc.get("count").and_then(Value::as_str).map(str::to_string))
            .or_else(|| {
                acc.get("count")
                    .and_then(Value::as_i64)
                    .map(|c| c.to_string())
            })?;
        let kind = acc
            .get("resourceType")
            .or_else(|| acc.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("accelerator")
            .to_string();
        Some(Accelerator { kind, count })
    });
    Resources {
        cpu_limit: text("resourceCpuLimit").or_else(|| text("cpuLimit")),
        cpu_request: text("resourceCpuRequest").or_else(|| text("cpuRequest")),
        memory_limit: text("resourceMemoryLimit").or_else(|| gigabytes("memoryLimit")),
        memory_request: text("resourceMemoryRequest").or_else(|| gigabytes("memoryRequest")),
        accelerator,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_newer_quantities_win_and_the_older_numbers_are_read() {
        let r = from_ir(Some(&json!({
            "cpuLimit": 2.0, "resourceCpuLimit": "1500m",
            "memoryLimit": 1.5, "cpuRequest": 0.5,
            "accelerator": {"type": "NVIDIA_TESLA_T4", "count": 2},
        })));
        assert_eq!(r.cpu_limit.as_deref(), Some("1500m"));
        assert_eq!(r.memory_limit.as_deref(), Some("1500000000"));
        assert_eq!(r.cpu_request.as_deref(), Some("0.5"));
        assert_eq!(
            r.accelerator,
            Some(Accelerator {
                kind: "NVIDIA_TESLA_T4".into(),
                count: "2".into()
            })
        );
        let r = from_ir(Some(
            &json!({"accelerator": {"resourceType": "nvidia.com/gpu", "resourceCount": "1"}}),
        ));
        assert_eq!(
            r.accelerator.map(|a| (a.kind, a.count)),
            Some(("nvidia.com/gpu".into(), "1".into()))
        );
        assert!(r.cpu_limit.is_none() && !from_ir(None).has_cpu_or_memory());
    }
}
