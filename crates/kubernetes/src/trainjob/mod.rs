//! Kubeflow Trainer v2's `TrainJob` on Switchyard's operator.
//!
//! [`api`] has the types and CRDs; [`resolve`] turns a TrainJob and its
//! runtime into the gang to run, as Trainer builds its JobSet; [`pods`]
//! names and labels the pods as JobSet's Jobs would; [`plan`] decides a
//! pass; [`operator`] reads and applies. Pods are made directly, not through
//! JobSet and Job objects, so the gang is admitted whole by the same
//! capacity check as PyTorchJobs (docs/kubernetes.md says why).

pub mod api;
pub mod initializer;
pub mod operator;
pub mod plan;
pub mod pods;
pub mod progress;
pub mod resolve;

pub use api::{ClusterTrainingRuntime, TrainJob, TrainJobSpec, TrainingRuntime};

#[cfg(test)]
mod tests;
