//! A task's log: a file under the run's log directory, the live event stream,
//! and the last lines kept for the error message when the task fails.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::{key_dir, RunCtx};
use crate::backend::LogSink;
use crate::events::Event;

/// How many trailing lines a failure message carries.
const TAIL_LINES: usize = 10;

pub(super) struct TaskLog {
    pub path: PathBuf,
    pub sink: LogSink,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl TaskLog {
    /// Opens (appending: retries add to the same file) the task's log.
    pub fn open(ctx: &RunCtx, key: &str) -> Result<TaskLog, String> {
        std::fs::create_dir_all(&ctx.logs_dir)
            .map_err(|e| format!("cannot create {}: {e}", ctx.logs_dir.display()))?;
        let path = ctx.logs_dir.join(format!("{}.log", key_dir(key)));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("cannot open log {}: {e}", path.display()))?;
        let file = Mutex::new(file);
        let tail: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let (events, key, kept) = (ctx.events.clone(), key.to_string(), tail.clone());
        let sink: LogSink = Arc::new(move |line: &str| {
            if let Ok(mut f) = file.lock() {
                let _ = writeln!(f, "{line}");
            }
            if let Ok(mut t) = kept.lock() {
                if t.len() == TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(line.to_string());
            }
            let _ = events.send(Event::Log {
                key: key.clone(),
                line: line.to_string(),
            });
        });
        Ok(TaskLog { path, sink, tail })
    }

    /// The last lines written, joined.
    pub fn tail(&self) -> String {
        self.tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }
}
