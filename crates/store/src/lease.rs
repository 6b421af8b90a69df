//! Who executes a run or follows a job: a lease, so that exactly one process
//! works on it, on one host or on several sharing a PostgreSQL database.
//!
//! The owner writes its identity and an expiry with the record and renews the
//! expiry while it works. Another process may take the record over only once
//! the lease has expired, or at once when the owner is a process of its own
//! host that no longer exists (a `kill -9` is recovered without waiting). A
//! take-over is a compare-and-set on the lease the taker saw, so of two
//! processes racing for one record exactly one wins, and the old owner learns
//! at its next renewal that it lost the record and stops.

use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A claim on a run or job by one process, valid until `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Unique per process: host, pid and start time (a reused pid differs).
    pub owner: String,
    pub host: String,
    pub pid: u32,
    pub until: DateTime<Utc>,
}

impl Lease {
    /// Whether the owner may still be working on the record: this process, or
    /// an unexpired lease whose owner (when it lives on this host) still exists.
    pub fn held(&self) -> bool {
        let me = Holder::current();
        if self.owner == me.id {
            return true;
        }
        if self.until <= Utc::now() {
            return false;
        }
        self.host != me.host || process_alive(self.pid)
    }

    /// Whether this process holds it.
    pub fn is_mine(&self) -> bool {
        self.owner == Holder::current().id
    }

    /// Milliseconds since the epoch, as stored.
    pub fn until_ms(&self) -> i64 {
        self.until.timestamp_millis()
    }
}

/// This process as a lease owner.
#[derive(Debug)]
pub struct Holder {
    pub id: String,
    pub host: String,
    pub pid: u32,
}

impl Holder {
    /// The identity of this process (computed once).
    pub fn current() -> &'static Holder {
        static ME: OnceLock<Holder> = OnceLock::new();
        ME.get_or_init(|| {
            let host = host_id();
            let pid = std::process::id();
            let started = Utc::now().timestamp_micros();
            Holder {
                id: format!("{host}/{pid}/{started}"),
                host,
                pid,
            }
        })
    }

    /// A fresh lease of this process, valid for [`lease_ttl`] from now.
    pub fn lease(&self) -> Lease {
        Lease {
            owner: self.id.clone(),
            host: self.host.clone(),
            pid: self.pid,
            until: expiry(),
        }
    }
}

/// When a lease taken or renewed now expires.
pub fn expiry() -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(lease_ttl()).unwrap_or(chrono::Duration::seconds(30))
}

/// How long a lease holds without renewal: `SWITCHYARD_LEASE_SECONDS`
/// (default 30). Owners renew three times per period, so a take-over waits at
/// most this long after the owner stopped (or lost its database).
pub fn lease_ttl() -> Duration {
    let secs = std::env::var("SWITCHYARD_LEASE_SECONDS")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 1.0)
        .unwrap_or(30.0);
    Duration::from_secs_f64(secs)
}

/// How often an owner renews its leases.
pub fn renew_every() -> Duration {
    lease_ttl() / 3
}

/// The name of this host in leases: `SWITCHYARD_HOST_ID` when set (two
/// containers sharing a hostname, or tests playing two hosts), else the
/// kernel's hostname.
fn host_id() -> String {
    std::env::var("SWITCHYARD_HOST_ID")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// True when another process with this pid exists on this host (signal 0
/// probes without sending); never this process itself.
pub fn process_alive(pid: u32) -> bool {
    if pid == 0 || pid == std::process::id() {
        return false;
    }
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn other(host: &str, pid: u32, until: DateTime<Utc>) -> Lease {
        Lease {
            owner: format!("{host}/{pid}/1"),
            host: host.into(),
            pid,
            until,
        }
    }

    #[test]
    fn a_lease_holds_until_it_expires_or_its_local_owner_dies() {
        let later = Utc::now() + chrono::Duration::seconds(60);
        let earlier = Utc::now() - chrono::Duration::seconds(1);
        let me = Holder::current();
        assert!(me.lease().held() && me.lease().is_mine());
        // Another host: only the expiry counts.
        assert!(other("elsewhere-host", 1, later).held());
        assert!(!other("elsewhere-host", 1, earlier).held());
        // This host: a process that does not exist releases at once.
        assert!(!other(&me.host, u32::MAX - 1, later).held());
        // pid 1 exists on this host, but an expired lease is gone (pid reuse).
        assert!(other(&me.host, 1, later).held());
        assert!(!other(&me.host, 1, earlier).held());
    }
}
