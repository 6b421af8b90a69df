//! `switchyard operator`: the PyTorchJob and TrainJob controllers, or their CRDs.

use std::time::Duration;

use anyhow::Result;
use switchyard_kubernetes::{operator, OperatorConfig, TrainJobs};

use crate::cli::{OperatorArgs, TrainJobsArg};

pub async fn run(args: &OperatorArgs) -> Result<i32> {
    if args.print_crd {
        print!(
            "{}---\n{}",
            switchyard_kubernetes::crd::crd_yaml(),
            switchyard_kubernetes::trainjob::api::crds_yaml()
        );
        return Ok(0);
    }
    if args.print_runtimes {
        use switchyard_kubernetes::trainjob::api::{INITIALIZERS_RUNTIME_YAML, TORCH_RUNTIME_YAML};
        print!("{TORCH_RUNTIME_YAML}---\n{INITIALIZERS_RUNTIME_YAML}");
        return Ok(0);
    }
    let config = OperatorConfig {
        namespace: args.namespace.clone(),
        resync: Duration::from_secs(args.resync_seconds.max(1)),
        trainjobs: match args.trainjobs {
            TrainJobsArg::Auto => TrainJobs::Auto,
            TrainJobsArg::Always => TrainJobs::Always,
            TrainJobsArg::Never => TrainJobs::Never,
        },
        progress: match (&args.progress_listen, &args.progress_url) {
            (Some(listen), Some(url)) => {
                if !url.starts_with("https://") {
                    anyhow::bail!(
                        "--progress-url {url}: must be an https:// URL (ranks post over TLS)"
                    );
                }
                Some((*listen, url.clone()))
            }
            _ => None,
        },
    };
    tracing::info!(namespace = ?config.namespace, "operator starting");
    operator::run_on(args.kubeconfig.as_deref(), config).await?;
    Ok(0)
}
