//! Admission: a job waits until the CPUs and GPUs it asks for are free on this
//! machine, instead of oversubscribing it.
//!
//! The ledger is a small JSON file shared by every `switchyard` process of a
//! data directory, changed only under an exclusive file lock. Entries of
//! processes that died are dropped, so a crash never leaks capacity.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// What this machine offers.
#[derive(Debug, Clone)]
pub struct Capacity {
    pub cpus: f64,
    pub gpus: u32,
    /// The device ids behind GPU indices 0..gpus (from the inherited
    /// `CUDA_VISIBLE_DEVICES`, so a job never escapes the user's selection).
    pub gpu_ids: Vec<String>,
}

impl Capacity {
    /// CPUs from `SWITCHYARD_CPUS` or the machine; GPUs from `SWITCHYARD_GPUS`,
    /// else `CUDA_VISIBLE_DEVICES`, else none.
    pub fn detect() -> Capacity {
        let cpus = std::env::var("SWITCHYARD_CPUS")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get() as f64)
                    .unwrap_or(1.0)
            });
        let visible: Option<Vec<String>> = std::env::var("CUDA_VISIBLE_DEVICES").ok().map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        });
        let gpus = std::env::var("SWITCHYARD_GPUS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| visible.as_ref().map(|v| v.len() as u32).unwrap_or(0));
        let gpu_ids = (0..gpus)
            .map(|i| {
                visible
                    .as_ref()
                    .and_then(|v| v.get(i as usize).cloned())
                    .unwrap_or_else(|| i.to_string())
            })
            .collect();
        Capacity {
            cpus,
            gpus,
            gpu_ids,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    job: String,
    pid: u32,
    cpus: f64,
    gpus: Vec<u32>,
}

/// The shared ledger.
#[derive(Debug, Clone)]
pub struct Admission {
    path: PathBuf,
    capacity: Capacity,
}

/// Held while a job runs; gives the resources back when dropped.
pub struct Grant {
    path: PathBuf,
    job: String,
    /// The GPU indices assigned to the job (for CUDA_VISIBLE_DEVICES).
    pub gpus: Vec<u32>,
}

fn alive(pid: u32) -> bool {
    pid == std::process::id()
        || nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

fn with_ledger<T>(path: &PathBuf, f: impl FnOnce(&mut Vec<Entry>) -> T) -> Result<T, String> {
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    file.lock()
        .map_err(|e| format!("cannot lock {}: {e}", path.display()))?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut entries: Vec<Entry> = serde_json::from_str(&text).unwrap_or_default();
    entries.retain(|e| alive(e.pid));
    let out = f(&mut entries);
    let data = serde_json::to_vec(&entries).unwrap_or_else(|_| b"[]".to_vec());
    file.set_len(0)
        .and_then(|_| file.rewind())
        .and_then(|_| file.write_all(&data))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(out)
}

impl Admission {
    pub fn new(path: PathBuf, capacity: Capacity) -> Self {
        Admission { path, capacity }
    }

    /// The device ids (for CUDA_VISIBLE_DEVICES) of granted GPU indices.
    pub fn device_ids(&self, indices: &[u32]) -> Vec<String> {
        indices
            .iter()
            .filter_map(|i| self.capacity.gpu_ids.get(*i as usize).cloned())
            .collect()
    }

    /// The CPUs and GPUs no running job holds now (and the machine's own).
    pub fn free_now(&self) -> Result<(f64, u32), String> {
        let cap = self.capacity.clone();
        with_ledger(&self.path, |entries| {
            let cpus: f64 = entries.iter().map(|e| e.cpus).sum();
            let gpus: usize = entries.iter().map(|e| e.gpus.len()).sum();
            (
                (cap.cpus - cpus).max(0.0),
                cap.gpus.saturating_sub(gpus as u32),
            )
        })
    }

    /// The machine's CPUs and GPUs in all.
    pub fn total(&self) -> (f64, u32) {
        (self.capacity.cpus, self.capacity.gpus)
    }

    /// Refuses a request larger than the whole machine (it could never start).
    pub fn check_fits(&self, cpus: f64, gpus: u32) -> Result<(), String> {
        if cpus > self.capacity.cpus + 1e-9 || gpus > self.capacity.gpus {
            return Err(format!(
                "spec.resources: the job needs {cpus} CPUs and {gpus} GPUs, but this machine has {} CPUs and {} GPUs in all \
                 (lower spec.resources or spec.nodes)",
                self.capacity.cpus, self.capacity.gpus
            ));
        }
        Ok(())
    }

    /// Waits until `cpus` and `gpus` are free, then records them for `job`.
    /// Asking for more than the machine has at all is an error, not a wait.
    pub async fn acquire(
        &self,
        job: &str,
        cpus: f64,
        gpus: u32,
        cancel: &CancellationToken,
        mut waiting: impl FnMut(String),
    ) -> Result<Option<Grant>, String> {
        self.check_fits(cpus, gpus)?;
        let mut told = false;
        loop {
            let cap = self.capacity.clone();
            let granted = with_ledger(&self.path, |entries| {
                let used_cpu: f64 = entries.iter().map(|e| e.cpus).sum();
                let used_gpu: Vec<u32> = entries.iter().flat_map(|e| e.gpus.clone()).collect();
                let free_gpus: Vec<u32> = (0..cap.gpus).filter(|g| !used_gpu.contains(g)).collect();
                if used_cpu + cpus <= cap.cpus + 1e-9 && free_gpus.len() >= gpus as usize {
                    let take: Vec<u32> = free_gpus.into_iter().take(gpus as usize).collect();
                    entries.push(Entry {
                        job: job.to_string(),
                        pid: std::process::id(),
                        cpus,
                        gpus: take.clone(),
                    });
                    Ok(take)
                } else {
                    Err((cap.cpus - used_cpu, free_gpus.len()))
                }
            })?;
            match granted {
                Ok(gpus) => {
                    return Ok(Some(Grant {
                        path: self.path.clone(),
                        job: job.to_string(),
                        gpus,
                    }))
                }
                Err((free_cpu, free_gpu)) => {
                    if !told {
                        waiting(format!(
                            "queued: needs {cpus} CPUs and {gpus} GPUs; {free_cpu:.1} CPUs and {free_gpu} GPUs are free"
                        ));
                        told = true;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                _ = cancel.cancelled() => return Ok(None),
            }
        }
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        let job = self.job.clone();
        let _ = with_ledger(&self.path, |entries| {
            entries.retain(|e| !(e.job == job && e.pid == std::process::id()))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_capacity_and_gives_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let a = Admission::new(
            dir.path().join("ledger.json"),
            Capacity {
                cpus: 2.0,
                gpus: 2,
                gpu_ids: vec!["4".into(), "7".into()],
            },
        );
        let cancel = CancellationToken::new();
        let g1 = a
            .acquire("j1", 1.5, 1, &cancel, |_| {})
            .await
            .unwrap()
            .unwrap();
        assert_eq!(g1.gpus, vec![0]);
        assert_eq!(
            a.device_ids(&g1.gpus),
            vec!["4".to_string()],
            "indices map to the visible devices"
        );
        assert_eq!(
            a.device_ids(&g1.gpus),
            vec!["4".to_string()],
            "indices map to the visible devices"
        );
        assert!(
            a.acquire("big", 3.0, 0, &cancel, |_| {}).await.is_err(),
            "more than the machine has"
        );
        // j2 must wait until j1 is released.
        let a2 = a.clone();
        let c2 = cancel.clone();
        let waiter = tokio::spawn(async move {
            let mut msgs = Vec::new();
            let g = a2
                .acquire("j2", 1.0, 1, &c2, |m| msgs.push(m))
                .await
                .unwrap()
                .unwrap();
            (g.gpus.clone(), msgs)
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!waiter.is_finished());
        drop(g1);
        let (gpus, msgs) = waiter.await.unwrap();
        assert_eq!(gpus, vec![0]);
        assert!(msgs[0].contains("queued"), "{msgs:?}");
    }
}
