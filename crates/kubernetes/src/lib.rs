//! Switchyard on Kubernetes, with kube-rs.
//!
//! [`operator`] reconciles Kubeflow's PyTorchJob ([`crd`]) into one Pod and one
//! headless Service per replica ([`pods`]), admitting a gang only when all of it
//! fits ([`capacity`]), so existing PyTorchJob YAML runs on a cluster with
//! Switchyard instead of Kubeflow's training operator. [`training`] turns a
//! Switchyard TrainingJob into such a PyTorchJob and follows it; [`steps`]
//! runs a pipeline's steps as Pods. [`trainjob`] does the same for Kubeflow
//! Trainer v2's TrainJob.

mod assess;
pub mod capacity;
pub mod contract;
pub mod crd;
pub mod operator;
pub mod plan;
pub mod pods;
mod pytorchjob;
pub mod steps;
pub mod training;
mod training_trainjob;
pub mod trainjob;

pub use crd::{PyTorchJob, PyTorchJobSpec};
pub use operator::{OperatorConfig, OperatorError, TrainJobs};

/// Chooses rustls's crypto provider for the process. The workspace links both
/// `ring` (kube) and `aws-lc-rs` (the AWS SDK), and rustls refuses to guess
/// between them; call this before building a Kubernetes client.
pub fn install_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A client for the cluster of `kubeconfig`, else KUBECONFIG, ~/.kube/config
/// or the in-cluster service account; the error says which was tried.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client, String> {
    install_crypto();
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("cannot read kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            format!(
                "no Kubernetes cluster configured (KUBECONFIG, ~/.kube/config or in-cluster): {e}"
            )
        })?,
    };
    kube::Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))
}
