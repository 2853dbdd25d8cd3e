//! Restores running in this process, for `litestream_status()` and the CLI's progress bar.

use crate::vfs::sys::fork::ProcessMutex;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

/// Progress of one restore: bytes downloaded out of the plan's total.
#[derive(Debug)]
pub struct RestoreProgress {
    pub replica: String,
    pub dest: String,
    pub target_txid: u64,
    pub files: usize,
    pub total_bytes: u64,
    pub downloaded: Arc<AtomicU64>,
    pub started: Instant,
}

impl RestoreProgress {
    pub fn json(&self) -> serde_json::Value {
        json!({
            "replica": self.replica,
            "path": self.dest,
            "target_txid": self.target_txid,
            "files": self.files,
            "bytes_total": self.total_bytes,
            "bytes_downloaded": self.downloaded.load(Ordering::Relaxed),
            "elapsed_ms": self.started.elapsed().as_millis() as u64,
        })
    }
}

/// Per process (`vfs::sys::fork`): a child's restores are its own.
static RUNNING: ProcessMutex<Vec<Weak<RestoreProgress>>> = ProcessMutex::new();

/// Registers a restore; it disappears from [`progress_json`] when the `Arc` is dropped.
pub(super) fn register(progress: &Arc<RestoreProgress>) {
    let mut running = RUNNING.lock();
    running.retain(|w| w.strong_count() > 0);
    running.push(Arc::downgrade(progress));
}

/// The restores running in this process, as JSON (for `litestream_status()`).
pub fn progress_json() -> serde_json::Value {
    let running = RUNNING.lock();
    running.iter().filter_map(Weak::upgrade).map(|p| p.json()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_restore_is_listed_until_it_ends() {
        let progress = Arc::new(RestoreProgress {
            replica: "memory://progress-test".into(),
            dest: "/tmp/progress-test.db".into(),
            target_txid: 42,
            files: 3,
            total_bytes: 1000,
            downloaded: Arc::new(AtomicU64::new(250)),
            started: Instant::now(),
        });
        register(&progress);
        let listed = progress_json();
        let mine = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["replica"] == "memory://progress-test")
            .cloned()
            .expect("listed while running");
        assert_eq!(mine["bytes_downloaded"], 250);
        assert_eq!(mine["target_txid"], 42);
        drop(progress);
        let listed = progress_json();
        assert!(!listed
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["replica"] == "memory://progress-test"));
    }
}
