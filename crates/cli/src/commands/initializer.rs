//! `switchyard initializer dataset|model`: the step a TrainJob's runtime
//! runs before its trainer, with the contract of Kubeflow Trainer's
//! initializer images, so a runtime can name Switchyard's image where
//! Trainer's cannot be pulled. A failure is also written to the container's
//! termination message, which `kubectl describe pod` shows.

use anyhow::Result;
use switchyard_s3::initializer::{fetch, Source};

use crate::cli::{InitializerArgs, InitializerKind};

pub async fn run(args: &InitializerArgs) -> Result<i32> {
    let what = match args.kind {
        InitializerKind::Dataset => "dataset",
        InitializerKind::Model => "model",
    };
    let dest = args.workspace.join(what);
    tracing::info!("starting {what} initialization");
    let outcome = async {
        match Source::from_vars(|k| std::env::var(k).ok())? {
            Some(source) => fetch(&source, &dest).await.map(Some),
            None => Ok(None),
        }
    }
    .await;
    match outcome {
        Ok(None) => {
            println!("{what}: no STORAGE_URI (the TrainJob asks for no {what}); nothing fetched");
            Ok(0)
        }
        Ok(Some(done)) => {
            println!(
                "{what}: {} files ({} bytes) in {}; {} ignored",
                done.files,
                done.bytes,
                dest.display(),
                done.ignored.len()
            );
            Ok(0)
        }
        Err(e) => {
            let message = format!("{what} initializer: {e}");
            eprintln!("error: {message}");
            // Where Kubernetes reads a container's termination message; absent off a cluster.
            let _ = std::fs::write("/dev/termination-log", &message);
            Ok(1)
        }
    }
}
