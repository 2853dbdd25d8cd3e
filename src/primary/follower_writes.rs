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
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// Write times kept for `unstored_seconds`, at most one per [`WRITE_TIME_STEP_MS`].
const WRITE_TIMES_KEPT: usize = 1024;
const WRITE_TIME_STEP_MS: i64 = 100;

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
    /// When writers wrote, oldest first, those known stored dropped at each status: the
    /// first is the oldest commit not known stored. `last_write_ms` alone made
    /// `unstored_seconds` the age of the newest one, which steady traffic keeps near
    /// zero while the replicating process is stuck (found by a tester).
    write_times: Mutex<VecDeque<i64>>,
}

impl FollowerWrites {
    /// A writer of this process wrote the WAL while another process replicates.
    #[inline]
    pub fn wrote(&self) {
        let now = crate::primary::batch::now_ms();
        self.last_write_ms.store(now, Ordering::Relaxed);
        self.wrote.store(true, Ordering::Relaxed);
        let mut times = self.write_times.lock().unwrap_or_else(|p| p.into_inner());
        let due = times.back().is_none_or(|&last| now - last >= WRITE_TIME_STEP_MS);
        if due && times.len() < WRITE_TIMES_KEPT {
            times.push_back(now);
        }
    }

    /// The oldest write not known stored, given that the replicating process last
    /// stored at `uploaded_at_ms`.
    pub fn oldest_unstored_ms(&self, uploaded_at_ms: Option<i64>) -> Option<i64> {
        let mut times = self.write_times.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(stored) = uploaded_at_ms {
            while times.front().is_some_and(|&w| w <= stored) {
                times.pop_front();
            }
        }
        // Writes past the kept ones are newer than all of them.
        let last = self.last_write_ms().filter(|&w| uploaded_at_ms.is_none_or(|u| w > u));
        times.front().copied().or(last)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_write_after_the_last_upload_is_the_one_that_has_waited() {
        let writes = FollowerWrites::default();
        assert_eq!(writes.oldest_unstored_ms(None), None);
        writes.wrote();
        let first = writes.last_write_ms().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2 * WRITE_TIME_STEP_MS as u64));
        writes.wrote();
        let second = writes.last_write_ms().unwrap();
        // Nothing stored since: the first write has waited longest (not the newest).
        assert_eq!(writes.oldest_unstored_ms(Some(first - 1)), Some(first));
        // An upload between the two: the second is the oldest not stored.
        assert_eq!(writes.oldest_unstored_ms(Some(first)), Some(second));
        // An upload after both: nothing waits.
        assert_eq!(writes.oldest_unstored_ms(Some(second)), None);
    }
}
