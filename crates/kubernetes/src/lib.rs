//! Switchyard on Kubernetes, with kube-rs.
//!
//! [`operator`] reconciles Kubeflow's PyTorchJob ([`crd`]) into one Pod and one
//! headless Service per replica ([`pods`]), admitting a gang only when all of it
//! fits ([`capacity`]), so existing PyTorchJob YAML runs on a cluster with
//! Switchyard instead of Kubeflow's training operator. [`backend`] turns a
//! Switchyard TrainingJob into such a PyTorchJob and follows it.

pub mod backend;
pub mod capacity;
pub mod crd;
pub mod operator;
pub mod pods;
pub mod tasks;

pub use crd::{PyTorchJob, PyTorchJobSpec};
pub use operator::{OperatorConfig, OperatorError};

/// Chooses rustls's crypto provider for the process. The workspace links both
/// `ring` (kube) and `aws-lc-rs` (the AWS SDK), and rustls refuses to guess
/// between them; call this before building a Kubernetes client.
pub fn install_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
