//! Live display of a run: a spinner per running task on a terminal, plain
//! timestamped lines otherwise; task log lines prefixed with the task key.
//! Everything goes to stderr so stdout stays for results.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use switchyard_engine::Event;
use switchyard_store::State;
use tokio::sync::mpsc::UnboundedReceiver;

/// Options of the display.
#[derive(Debug, Clone, Copy)]
pub struct Display {
    pub show_logs: bool,
    /// Nothing at all (JSON mode with --quiet).
    pub silent: bool,
}

fn mark(state: State, cached: bool) -> &'static str {
    match (state, cached) {
        (State::Succeeded, true) => "✔ cached",
        (State::Succeeded, false) => "✔ succeeded",
        (State::Failed, _) => "✘ FAILED",
        (State::Skipped, _) => "- skipped",
        (State::Canceled, _) => "✘ canceled",
        (State::Running, _) => "running",
        (State::Pending, _) => "pending",
        (State::Canceling, _) => "canceling",
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Consumes events until the sender is dropped.
pub async fn show(mut rx: UnboundedReceiver<Event>, display: Display) {
    let tty = std::io::stderr().is_terminal();
    let multi = MultiProgress::with_draw_target(if tty && !display.silent {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let style = ProgressStyle::with_template("{spinner:.cyan} {prefix:.bold} {msg} [{elapsed}]")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let mut bars: HashMap<String, ProgressBar> = HashMap::new();
    let mut started: HashMap<String, Instant> = HashMap::new();
    let t0 = Instant::now();
    let print = |line: String| {
        if display.silent {
            return;
        }
        if tty {
            let _ = multi.println(line);
        } else {
            eprintln!("{line}");
        }
    };
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Log { key, line } => {
                // A notice is in the task's log too; it is printed once, below.
                if display.show_logs && !line.starts_with(switchyard_engine::NOTE_PREFIX) {
                    print(format!("[{key}] {line}"));
                }
            }
            Event::Notice { key, message } => print(format!("note ({key}): {message}")),
            Event::Task {
                key,
                kind,
                state,
                cached,
                attempt,
                error,
                ..
            } => {
                let elapsed = started.get(&key).map(|s| s.elapsed());
                if state == State::Running {
                    started.entry(key.clone()).or_insert_with(Instant::now);
                    if kind == "container" {
                        if tty {
                            let bar = bars.entry(key.clone()).or_insert_with(|| {
                                let b = multi.add(ProgressBar::new_spinner());
                                b.set_style(style.clone());
                                b.set_prefix(key.clone());
                                b.enable_steady_tick(Duration::from_millis(120));
                                b
                            });
                            bar.set_message(if attempt > 0 {
                                format!("running (retry {attempt})")
                            } else {
                                "running".into()
                            });
                        } else {
                            let retry = if attempt > 0 {
                                format!(" (retry {attempt})")
                            } else {
                                String::new()
                            };
                            print(format!(
                                "{:>7.1}s  {key}  RUNNING{retry}",
                                t0.elapsed().as_secs_f64()
                            ));
                        }
                    }
                    continue;
                }
                let took = elapsed
                    .map(|d| format!(" in {:.1}s", d.as_secs_f64()))
                    .unwrap_or_default();
                let why = error
                    .as_deref()
                    .map(|e| format!(": {}", first_line(e)))
                    .unwrap_or_default();
                if let Some(bar) = bars.remove(&key) {
                    bar.finish_and_clear();
                    multi.remove(&bar);
                }
                if state == State::Skipped && kind != "container" && error.is_none() {
                    print(format!(
                        "{:>7.1}s  {key}  condition false, skipped",
                        t0.elapsed().as_secs_f64()
                    ));
                } else if kind == "container" || state != State::Succeeded {
                    print(format!(
                        "{:>7.1}s  {key}  {}{took}{why}",
                        t0.elapsed().as_secs_f64(),
                        mark(state, cached)
                    ));
                }
            }
        }
    }
    for (_, bar) in bars.drain() {
        bar.finish_and_clear();
    }
}
