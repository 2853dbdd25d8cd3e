//! How often the worker synced a database, how long that took and how often it failed:
//! the figures behind Litestream's `litestream_sync_count`, `litestream_sync_seconds`
//! and `litestream_sync_error_count`, shown under `sync` in `litestream_status()`.
//!
//! A sync is one round of the worker that staged or uploaded something (idle wake-ups
//! are not counted); an error is each failure the worker recorded (staging, upload, a
//! snapshot kept waiting).

use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct SyncStats {
    count: AtomicU64,
    errors: AtomicU64,
    nanos: AtomicU64,
}

impl SyncStats {
    /// One round that moved something, and how long it took.
    pub fn synced(&self, took: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.nanos
            .fetch_add(took.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    pub fn failed(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn json(&self) -> serde_json::Value {
        json!({
            "count": self.count.load(Ordering::Relaxed),
            "errors": self.errors.load(Ordering::Relaxed),
            "seconds": self.nanos.load(Ordering::Relaxed) as f64 / 1e9,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_time_and_failures_add_up() {
        let s = SyncStats::default();
        s.synced(Duration::from_millis(250));
        s.synced(Duration::from_millis(500));
        s.failed();
        assert_eq!(s.json(), json!({"count": 2, "errors": 1, "seconds": 0.75}));
    }
}
