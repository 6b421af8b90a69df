//! `switchyard logs RUN [TASK]`.

use std::io::Write;

use anyhow::{bail, Context, Result};
use switchyard_store::RunStore;

pub async fn logs(store: &dyn RunStore, run: &str, task: Option<&str>) -> Result<i32> {
    let run = store.get_run(run).await?;
    let tasks = store.list_tasks(&run.id).await?;
    let with_logs: Vec<_> = tasks.iter().filter(|t| t.log_path.is_some()).collect();
    let chosen: Vec<_> = match task {
        None => with_logs.clone(),
        Some(name) => {
            let by_key: Vec<_> = with_logs
                .iter()
                .copied()
                .filter(|t| t.task_key == name)
                .collect();
            if !by_key.is_empty() {
                by_key
            } else {
                let by_name: Vec<_> = with_logs
                    .iter()
                    .copied()
                    .filter(|t| t.name == name)
                    .collect();
                if by_name.is_empty() {
                    let known: Vec<&str> = with_logs.iter().map(|t| t.task_key.as_str()).collect();
                    bail!(
                        "run {} has no task '{name}' with logs; tasks with logs: {}",
                        run.id,
                        known.join(", ")
                    );
                }
                by_name
            }
        }
    };
    let prefix = chosen.len() > 1;
    let mut out = std::io::stdout().lock();
    for t in chosen {
        let path = t.log_path.as_deref().unwrap_or_default();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read log of task '{}' at {path}", t.task_key))?;
        for line in text.lines() {
            if prefix {
                writeln!(out, "[{}] {line}", t.task_key)?;
            } else {
                writeln!(out, "{line}")?;
            }
        }
    }
    Ok(0)
}
