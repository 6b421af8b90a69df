//! Integration tests: real kfp-compiled pipelines run by the real binary.

mod artifacts;
mod bad_input;
mod behaviour;
mod common;
mod containers;
mod control;
mod jobs;
mod k8s;
mod lifecycle;
mod moto;
mod params;
mod s3;
mod s3_root;
mod sagemaker;
mod semantics;
mod trainjob;
mod warm;
