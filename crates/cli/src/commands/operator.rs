//! `switchyard operator`: the PyTorchJob controller, or its CRD.

use std::time::Duration;

use anyhow::Result;
use switchyard_kubernetes::{operator, OperatorConfig};

use crate::cli::OperatorArgs;

pub async fn run(args: &OperatorArgs) -> Result<i32> {
    if args.print_crd {
        print!("{}", switchyard_kubernetes::crd::crd_yaml());
        return Ok(0);
    }
    let config = OperatorConfig {
        namespace: args.namespace.clone(),
        resync: Duration::from_secs(args.resync_seconds.max(1)),
    };
    tracing::info!(namespace = ?config.namespace, "reconciling PyTorchJobs");
    operator::run_on(args.kubeconfig.as_deref(), config).await?;
    Ok(0)
}
