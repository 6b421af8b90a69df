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

pub use crd::{PyTorchJob, PyTorchJobSpec};
pub use operator::{OperatorConfig, OperatorError};
