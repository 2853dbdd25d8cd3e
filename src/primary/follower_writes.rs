//! What this process's writers did while another process replicated the database: when
//! they last wrote the WAL (the recovery point a follower's status reports), whether the
//! write transaction ending now wrote anything, and the `sync=commit` waits that failed.
//!
//! `sync=commit` is the connection's promise that a commit returns only once stored.
//! A follower's commits are captured by the replicating process, whose own setting may
//! be `async`: before, a follower's commit returned at once and nothing said it was not
//! stored. Now its writer asks the replicating process for a sync after releasing the
//! write lock (other writers are not held up), as `litestream_sync()` does.

use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub struct FollowerWrites {
    /// When a writer of this process last wrote the WAL as a follower (ms since the
    /// epoch; 0: never).
    last_write_ms: AtomicI64,
    /// A writer wrote the WAL as a follower since the write lock was last released.
    /// Only the holder of the write lock writes the WAL, so this is its transaction's.
    wrote: AtomicBool,
    sync_commit_timeouts: AtomicU64,
    sync_commit_error: Mutex<Option<String>>,
}

impl FollowerWrites {
    /// A writer of this process wrote the WAL while another process replicates.
    #[inline]
    pub fn wrote(&self) {
        self.last_write_ms
            .store(crate::primary::batch::now_ms(), Ordering::Relaxed);
        self.wrote.store(true, Ordering::Relaxed);
    }

    pub fn last_write_ms(&self) -> Option<i64> {
        Some(self.last_write_ms.load(Ordering::Relaxed)).filter(|&ms| ms > 0)
    }

    /// Whether the write transaction releasing the lock now wrote as a follower (and
    /// forgets it for the next one).
    #[inline]
    pub fn take_transaction_wrote(&self) -> bool {
        self.wrote.swap(false, Ordering::Relaxed)
    }

    /// A `sync=commit` wait that failed: the commit stands (SQLite cannot undo it after
    /// the fact), and the status and the log say it is not known to be stored.
    pub fn sync_commit_missed(&self, error: String) {
        self.sync_commit_timeouts.fetch_add(1, Ordering::Relaxed);
        *self.sync_commit_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }

    /// Adds to a follower's `litestream_status()` the fields a replicating process's
    /// has under the same names.
    pub fn add_to_status(&self, status: &mut serde_json::Value, sync_commit: bool) {
        status["sync_mode"] = json!(if sync_commit { "commit" } else { "async" });
        status["sync_commit_timeouts"] = json!(self.sync_commit_timeouts.load(Ordering::Relaxed));
        status["sync_commit_error"] = json!(*self.sync_commit_error.lock().unwrap_or_else(|p| p.into_inner()));
    }
}
