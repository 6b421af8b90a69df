//! Gang admission: a job's pods are created only when all of them fit the
//! cluster's free capacity at once (the nodes' allocatable CPU, memory and GPUs
//! minus what non-terminal pods request). Without it a half-started gang holds
//! GPUs while it waits forever for its last pods — the Kubeflow operator's
//! best-known failure without a gang scheduler.

use k8s_openapi::api::core::v1::{Node, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// CPU in millicores, memory in bytes, GPUs (`nvidia.com/gpu`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amount {
    pub cpu_milli: i64,
    pub memory: i64,
    pub gpu: i64,
}

impl Amount {
    pub fn add(&mut self, o: Amount) {
        self.cpu_milli += o.cpu_milli;
        self.memory += o.memory;
        self.gpu += o.gpu;
    }

    pub fn fits_in(&self, free: &Amount) -> bool {
        self.cpu_milli <= free.cpu_milli && self.memory <= free.memory && self.gpu <= free.gpu
    }

    fn max(self, o: Amount) -> Amount {
        Amount {
            cpu_milli: self.cpu_milli.max(o.cpu_milli),
            memory: self.memory.max(o.memory),
            gpu: self.gpu.max(o.gpu),
        }
    }
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} CPU, {:.1} GiB memory, {} GPU",
            self.cpu_milli as f64 / 1000.0,
            self.memory as f64 / (1u64 << 30) as f64,
            self.gpu
        )
    }
}

/// A Kubernetes quantity as a number (`500m` → 0.5, `2Gi` → 2147483648).
pub fn parse(q: &str) -> Option<f64> {
    let q = q.trim();
    let units: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Ti", 1024.0f64.powi(4)),
        ("Pi", 1024.0f64.powi(5)),
        ("Ei", 1024.0f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    for (suffix, mult) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|v| v * mult);
        }
    }
    q.parse::<f64>().ok()
}

fn amount(map: Option<&std::collections::BTreeMap<String, Quantity>>) -> Amount {
    let get = |k: &str| map.and_then(|m| m.get(k)).and_then(|q| parse(&q.0));
    Amount {
        cpu_milli: get("cpu").map(|v| (v * 1000.0).round() as i64).unwrap_or(0),
        memory: get("memory").map(|v| v as i64).unwrap_or(0),
        gpu: get("nvidia.com/gpu").map(|v| v as i64).unwrap_or(0),
    }
}

/// What a pod asks for: the sum of its containers' requests (limits when no
/// request is given), or its largest init container if that is more.
pub fn requests(spec: &PodSpec) -> Amount {
    let of = |c: &k8s_openapi::api::core::v1::Container| {
        let r = c.resources.as_ref();
        let req = amount(r.and_then(|r| r.requests.as_ref()));
        let lim = amount(r.and_then(|r| r.limits.as_ref()));
        Amount {
            cpu_milli: if req.cpu_milli > 0 {
                req.cpu_milli
            } else {
                lim.cpu_milli
            },
            memory: if req.memory > 0 {
                req.memory
            } else {
                lim.memory
            },
            gpu: req.gpu.max(lim.gpu),
        }
    };
    let mut total = Amount::default();
    for c in &spec.containers {
        total.add(of(c));
    }
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(of)
        .fold(Amount::default(), Amount::max);
    total.max(init)
}

/// Allocatable on schedulable nodes minus what non-terminal pods request.
pub fn free(nodes: &[Node], pods: &[Pod]) -> Amount {
    let mut free = Amount::default();
    for n in nodes {
        let unschedulable = n
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        if !unschedulable {
            free.add(amount(
                n.status.as_ref().and_then(|s| s.allocatable.as_ref()),
            ));
        }
    }
    for p in pods {
        let phase = p
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("Pending");
        if phase != "Succeeded" && phase != "Failed" {
            if let Some(spec) = &p.spec {
                let r = requests(spec);
                free.cpu_milli -= r.cpu_milli;
                free.memory -= r.memory;
                free.gpu -= r.gpu;
            }
        }
    }
    free
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse("500m"), Some(0.5));
        assert_eq!(parse("2"), Some(2.0));
        assert_eq!(parse("2Gi"), Some(2147483648.0));
        assert_eq!(parse("1k"), Some(1000.0));
        assert_eq!(parse("x"), None);
    }
}
