//! `switchyard job run-component`: the KFP training-job component's entry
//! point as its own process (what a real KFP cluster runs). Its inputs arrive
//! typed through the executor protocol, and its outputs go to the files the
//! protocol names. Switchyard's own engine does not start that command: it
//! runs the step in-process ([`switchyard_runner::step::TrainingSteps`]);
//! both go through the same [`Step`].

use std::sync::Arc;

use anyhow::Result;
use switchyard_runner::step::{Finished, Step, StepEnv};
use switchyard_runner::{Notice, NoticeSink};
use switchyard_store::JobStore;
use tokio_util::sync::CancellationToken;

use crate::config::Paths;

/// Runs the step here, or, with `server` (`SWITCHYARD_SERVER`, set by the
/// server for steps it runs as Pods), hands its job to that server, so the
/// job is in the server's records and not in a store inside the step's
/// container.
pub async fn run(
    paths: &Paths,
    store: Arc<dyn JobStore>,
    executor_input: &str,
    server: Option<&str>,
) -> Result<i32> {
    let runner = paths.job_runner(store)?;
    let cancel = CancellationToken::new();
    let _interrupted = crate::commands::run::cancel_on_signal(cancel.clone());
    let notice: NoticeSink = Arc::new(|n: Notice<'_>| match n {
        Notice::Log { host, rank, line } => eprintln!("[{host}/rank {rank}] {line}"),
        Notice::Status(m) => eprintln!("{m}"),
    });
    let step = Step::read(executor_input, &StepEnv::from_process(), None)?;
    match server.filter(|s| !s.is_empty()) {
        Some(url) => {
            let done = super::remote::run_job(url, &step.job.to_json()).await?;
            step.finish(&runner, &Finished::from_json(&done), notice)
                .await?
        }
        None => step.run_here(&runner, cancel, notice).await?,
    }
    Ok(0)
}
