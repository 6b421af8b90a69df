//! Where each process of a gang sits, computed in one place so every backend
//! numbers alike: host `n` (0-based) is SageMaker's `algo-{n+1}`, the global
//! rank is `node × procsPerNode + localRank` (torchrun's), and each rank's
//! output goes to `<host>-rank-<rank>.log` in the job's log folder, which is
//! where `switchyard job logs` and the dashboard find it.

use std::path::{Path, PathBuf};

/// One process of a gang.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub node: u32,
    pub local_rank: u32,
}

impl Slot {
    /// The global rank with `procs_per_node` processes on every node.
    pub fn rank(&self, procs_per_node: u32) -> u32 {
        self.node * procs_per_node + self.local_rank
    }

    /// The slot's host (`algo-N`).
    pub fn host(&self) -> String {
        host_name(self.node)
    }
}

/// Every slot of a gang, node by node.
pub fn slots(nodes: u32, procs_per_node: u32) -> impl Iterator<Item = Slot> {
    (0..nodes)
        .flat_map(move |node| (0..procs_per_node).map(move |local_rank| Slot { node, local_rank }))
}

/// SageMaker's name for host `index` (0-based): `algo-1` is the master.
pub fn host_name(index: u32) -> String {
    format!("algo-{}", index + 1)
}

pub fn host_names(nodes: u32) -> Vec<String> {
    (0..nodes).map(host_name).collect()
}

/// The 0-based index of a host named `algo-N`.
pub fn host_index(name: &str) -> Option<u32> {
    name.strip_prefix("algo-")?
        .parse::<u32>()
        .ok()?
        .checked_sub(1)
}

/// The file rank `rank` on `host` writes its output to.
pub fn rank_log(dir: &Path, host: &str, rank: u32) -> PathBuf {
    dir.join(format!("{host}-rank-{rank}.log"))
}

/// The (host, rank) of a file name [`rank_log`] gave.
pub fn parse_rank_log(file_name: &str) -> Option<(String, u32)> {
    let (host, rank) = file_name.strip_suffix(".log")?.split_once("-rank-")?;
    Some((host.to_string(), rank.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_ranks_hosts_and_log_files_agree() {
        let all: Vec<(String, u32)> = slots(2, 3).map(|s| (s.host(), s.rank(3))).collect();
        assert_eq!(
            all,
            [
                ("algo-1", 0),
                ("algo-1", 1),
                ("algo-1", 2),
                ("algo-2", 3),
                ("algo-2", 4),
                ("algo-2", 5)
            ]
            .map(|(h, r)| (h.to_string(), r))
        );
        assert_eq!(host_index("algo-3"), Some(2));
        assert_eq!(host_index("algo-0"), None);
        assert_eq!(host_index("worker-1"), None);
        let file = rank_log(Path::new("/logs"), "algo-2", 4);
        assert_eq!(file, Path::new("/logs/algo-2-rank-4.log"));
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        assert_eq!(parse_rank_log(name), Some(("algo-2".into(), 4)));
        assert_eq!(parse_rank_log("notes.txt"), None);
    }
}
