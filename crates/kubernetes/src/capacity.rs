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

fn amount(map: Option<&std::collections::BTreeMap<String, Quantity>>) -> Amount {
    let get = |k: &str| {
        map.and_then(|m| m.get(k))
            .and_then(|q| switchyard_training::validate::quantity(&q.0))
    };
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

fn terminal(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Whether every pod of a gang can be placed at once: each node's free
/// capacity is its allocatable minus the requests of the non-terminal pods
/// bound to it; pods not bound yet are placed first (first fit, they are
/// waiting for the same room), then the gang, pod by pod. Capacity is per node:
/// eight nodes with one free GPU each do not fit a pod that needs four.
pub fn place(nodes: &[Node], pods: &[Pod], gang: &[Amount]) -> Result<(), String> {
    let mut free: Vec<(String, Amount)> = nodes
        .iter()
        .filter(|n| {
            !n.spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false)
        })
        .map(|n| {
            let name = n.metadata.name.clone().unwrap_or_default();
            (
                name,
                amount(n.status.as_ref().and_then(|s| s.allocatable.as_ref())),
            )
        })
        .collect();
    let take = |slot: &mut Amount, r: &Amount| {
        slot.cpu_milli -= r.cpu_milli;
        slot.memory -= r.memory;
        slot.gpu -= r.gpu;
    };
    let mut unbound = Vec::new();
    for p in pods.iter().filter(|p| !terminal(p)) {
        let Some(spec) = &p.spec else { continue };
        let r = requests(spec);
        match spec.node_name.as_deref() {
            Some(n) => {
                if let Some((_, f)) = free.iter_mut().find(|(name, _)| name == n) {
                    take(f, &r);
                }
            }
            None => unbound.push(r),
        }
    }
    // Pods that need no GPU are assumed to land on nodes without GPUs when
    // they can, as a scheduler spreading by scarcity would.
    for r in &unbound {
        let no_gpu_node = free
            .iter()
            .position(|(_, f)| r.gpu == 0 && f.gpu <= 0 && r.fits_in(f));
        let slot = no_gpu_node.or_else(|| free.iter().position(|(_, f)| r.fits_in(f)));
        if let Some(i) = slot {
            take(&mut free[i].1, r);
        }
    }
    let mut total = Amount::default();
    for r in gang {
        total.add(*r);
    }
    let mut placed = 0;
    for r in gang {
        match free.iter_mut().find(|(_, f)| r.fits_in(f)) {
            Some((_, f)) => {
                take(f, r);
                placed += 1;
            }
            None => {
                return Err(format!(
                    "the gang of {} pods needs {total} in all; only {placed} of its pods fit on the free capacity of the {} schedulable nodes",
                    gang.len(),
                    free.len()
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cpu: &str, gpu: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": {"allocatable": {"cpu": cpu, "memory": "64Gi", "nvidia.com/gpu": gpu}},
        }))
        .unwrap()
    }

    #[test]
    fn gangs_are_placed_per_node() {
        let gpu4 = Amount {
            cpu_milli: 1000,
            memory: 0,
            gpu: 4,
        };
        // Eight nodes with one GPU each: no pod needing four fits.
        let nodes: Vec<Node> = (0..8).map(|i| node(&format!("n{i}"), "8", "1")).collect();
        let e = place(&nodes, &[], &[gpu4, gpu4]).unwrap_err();
        assert!(
            e.contains("needs 2 CPU") && e.contains("only 0 of its pods fit"),
            "{e}"
        );
        // Two nodes with four each: both fit.
        let nodes = vec![node("a", "8", "4"), node("b", "8", "4")];
        assert!(place(&nodes, &[], &[gpu4, gpu4]).is_ok());
        assert!(place(&nodes, &[], &[gpu4, gpu4, gpu4]).is_err());
        // A waiting CPU-only pod is assumed on the CPU node, not in the GPU nodes' way.
        let cpu_pod: Pod = serde_json::from_value(serde_json::json!({
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "6"}}}]},
        }))
        .unwrap();
        let gpu1 = Amount {
            cpu_milli: 4000,
            memory: 0,
            gpu: 1,
        };
        let nodes = vec![
            node("gpu-a", "8", "2"),
            node("gpu-b", "8", "2"),
            node("cpu", "8", "0"),
        ];
        assert!(place(&nodes, &[cpu_pod], &[gpu1, gpu1, gpu1, gpu1]).is_ok());
    }
}
