//! `backend: auto` on Kubernetes: can the job's gang start on the cluster now
//! (the operator's own admission rule, on the Ready schedulable nodes), only
//! later, or never (no node is large enough for one of its pods)?

use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec};
use kube::api::ListParams;
use kube::Api;
use switchyard_training::placement::{self, Assessment};
use switchyard_training::{BackendKind, TrainingBackend, TrainingJob};

use crate::capacity::{self, Amount};
use crate::training::KubernetesBackend;

/// What one pod of the job asks for (its container's requests).
fn pod_amount(job: &TrainingJob) -> Amount {
    capacity::requests(&PodSpec {
        containers: vec![Container {
            resources: Some(crate::pytorchjob::resources(job)),
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// An hour of the job on the cluster: its pods' requests, and
/// `SWITCHYARD_K8S_COST_PER_NODE_HOUR` × nodes (not counted without it).
pub fn rates(job: &TrainingJob) -> switchyard_training::kpi::Rates {
    switchyard_training::kpi::Rates::requested(
        job,
        placement::cost_per_node_hour("SWITCHYARD_K8S_COST_PER_NODE_HOUR"),
    )
}

/// Whether a node reports Ready.
fn ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

impl KubernetesBackend {
    /// The assessment: the preflight's refusals, the cluster unreachable,
    /// the gang's fit now or on an empty cluster; cost per node-hour from
    /// `SWITCHYARD_K8S_COST_PER_NODE_HOUR` (not counted without it).
    pub(crate) async fn assess_now(&self, job: &TrainingJob) -> Assessment {
        let kind = BackendKind::Kubernetes;
        if let Err(e) = self.preflight(job) {
            return Assessment::refused(kind, e.to_string());
        }
        let client = match self.client().await {
            Ok(c) => c,
            Err(e) => {
                return Assessment::refused(kind, format!("the cluster is not reachable: {e}"))
            }
        };
        // A cluster that does not answer soon is not one to place a job on.
        let within = std::time::Duration::from_secs(10);
        let lp = ListParams::default();
        let nodes = match tokio::time::timeout(within, Api::<Node>::all(client.clone()).list(&lp))
            .await
        {
            Ok(Ok(n)) => n.items,
            // Without cluster-wide read rights the job may still run here;
            // only its room now is unknown.
            Ok(Err(kube::Error::Api(e))) if e.code == 403 => {
                return Assessment::can_run(
                    kind,
                    false,
                    format!(
                        "room now unknown: cannot read the cluster's nodes ({})",
                        e.message
                    ),
                    rates(job).hourly_usd,
                )
            }
            Ok(Err(e)) => {
                return Assessment::refused(kind, format!("cannot read the cluster's nodes: {e}"))
            }
            Err(_) => return Assessment::refused(kind, "the cluster did not answer within 10 s"),
        };
        let pods = match tokio::time::timeout(within, Api::<Pod>::all(client).list(&lp)).await {
            Ok(Ok(p)) => p.items,
            Ok(Err(e)) => {
                return Assessment::refused(kind, format!("cannot read the cluster's pods: {e}"))
            }
            Err(_) => return Assessment::refused(kind, "the cluster did not answer within 10 s"),
        };
        let nodes: Vec<Node> = nodes.into_iter().filter(ready).collect();
        let one = pod_amount(job);
        let gang = vec![one; job.spec.nodes as usize];
        let each = format!("{} pods of {one}", gang.len());
        let (starts_now, detail) = match capacity::place(&nodes, &pods, &gang) {
            Ok(()) => (true, format!("{each} fit the free capacity now")),
            Err(why) => match capacity::place(&nodes, &[], &gang) {
                Ok(()) => (false, why),
                Err(never) => {
                    return Assessment::refused(
                        kind,
                        format!("{each} do not fit even an idle cluster: {never}"),
                    )
                }
            },
        };
        Assessment::can_run(kind, starts_now, detail, rates(job).hourly_usd)
    }
}
