//! What the engine reports while a run goes on, for progress displays and logs.

use chrono::{DateTime, Utc};
use switchyard_store::State;

/// One thing that happened in a run.
#[derive(Debug, Clone)]
pub enum Event {
    /// A task (container, DAG or loop) changed state.
    Task {
        key: String,
        name: String,
        kind: &'static str,
        state: State,
        cached: bool,
        attempt: u32,
        error: Option<String>,
        at: DateTime<Utc>,
    },
    /// One line a task printed.
    Log { key: String, line: String },
    /// Something of the pipeline that this run does not honour (said once per
    /// run), first met at task `key`.
    Notice { key: String, message: String },
}

/// Where events go; a closed receiver is fine (nobody is watching).
pub type EventSender = tokio::sync::mpsc::UnboundedSender<Event>;
