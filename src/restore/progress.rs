//! Restores running in this process, for `litestream_status()` and the CLI's progress bar.

use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
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

static RUNNING: Mutex<Vec<Weak<RestoreProgress>>> = Mutex::new(Vec::new());

/// Registers a restore; it disappears from [`progress_json`] when the `Arc` is dropped.
pub(super) fn register(progress: &Arc<RestoreProgress>) {
    let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
    running.retain(|w| w.strong_count() > 0);
    running.push(Arc::downgrade(progress));
}

/// The restores running in this process, as JSON (for `litestream_status()`).
pub fn progress_json() -> serde_json::Value {
    let running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
    running.iter().filter_map(Weak::upgrade).map(|p| p.json()).collect()
}
