//! What a replicating primary tells: `litestream_status()`, its `error`, the engine's
//! per-store backlog, and the warnings of failures that repeat at every retry.

use super::*;

/// How often the same failure, repeated at every retry, is logged (`record_error`).
const REPEATED_WARNING_EVERY: Duration = Duration::from_secs(60);

/// How many distinct failures `warn_repeated` remembers for that.
const REMEMBERED_WARNINGS: usize = 8;

/// What `litestream_status()` and the one warning of an episode say while staging is
/// over its limit. Commits are dropped for a snapshot only while uploads fail (`stage.rs`):
/// said otherwise of a big transaction waiting for its upload, no snapshot followed (a
/// tester).
pub(super) fn staging_full_message(staged: u64, limit: u64, uploads_failing: bool) -> String {
    let then = match uploads_failing {
        true => "uploads are failing: new commits are dropped, and a snapshot follows",
        false => "commits wait in memory until uploads bring it under the limit",
    };
    format!("staging is full ({staged} bytes, limit {limit}): {then}")
}

/// How long an upload waits for the store before the status says so, beside the time
/// its bytes take at [`SLOWEST_EXPECTED`].
const SILENT_AFTER: Duration = Duration::from_secs(5);

/// Bytes per second any store in use takes an upload at (1 MiB/s).
const SLOWEST_EXPECTED: u64 = 1 << 20;

impl Primary {
    /// What is captured and not yet stored, for the engine's per-store backlog:
    /// (store endpoint, TXIDs, bytes in memory or staged).
    pub fn backlog(&self) -> (String, u64, u64) {
        let (txids, queued) = {
            let s = self.lock();
            (
                (s.next_txid - 1).saturating_sub(s.uploaded_txid),
                s.pending_bytes() as u64,
            )
        };
        let endpoint = self.store.endpoint().unwrap_or(self.store.describe());
        // Staged files wait for their upload only while TXIDs do: an idle database
        // costs no directory listing.
        let staged = if txids > 0 {
            self.staging.total_bytes().unwrap_or(0)
        } else {
            0
        };
        (endpoint.to_string(), txids, queued + staged)
    }

    pub fn status(&self) -> serde_json::Value {
        let s = self.lock();
        let staged_bytes = self.staging.total_bytes().unwrap_or(0);
        let lag_s = s
            .oldest_pending_ms
            .map(|t| (now_ms() - t) as f64 / 1000.0)
            .unwrap_or(0.0);
        json!({
            "role": "primary",
            "replicating": true,
            "pid": std::process::id(),
            "database": self.db_path.display().to_string(),
            "replica": self.store.describe(),
            "node_id": format!("{:016x}", self.node_id),
            "txid": s.next_txid - 1,
            "staged_txid": s.staged_txid,
            "uploaded_txid": s.uploaded_txid,
            "pending_commits": s.pending_commits() + s.in_stage.0,
            "pending_bytes": s.pending_bytes(),
            "staged_bytes": staged_bytes,
            "staging_full": (staged_bytes > self.config.max_staging_bytes)
                .then(|| staging_full_message(staged_bytes, self.config.max_staging_bytes, s.uploads_failing)),
            "lag_seconds": lag_s,
            "last_replication_lag_ms": s.last_lag_ms,
            "snapshot_pending": s.snapshot_needed,
            "snapshots": s.snapshots,
            "uploads": s.uploads,
            "uploaded_bytes": s.uploaded_bytes,
            "last_upload_ms": s.last_upload_ms,
            "sync_interval_ms": self.config.sync_interval.as_millis() as u64,
            "sync_mode": match self.config.sync_mode { SyncMode::Async => "async", SyncMode::Commit => "commit" },
            "sync_commit_timeouts": s.sync_commit_timeouts,
            "sync_commit_error": s.sync_commit_error,
            "error": self.error_of(&s),
            "refusing_writes": s.fatal.is_some(),
            "fencing": self.fencing.as_str(),
            "compaction": if self.config.compaction.is_some() { s.compaction.clone() } else { serde_json::Value::Null },
            "sync": self.sync_stats.json(),
            "encryption": self.encryption_status.as_ref().map_or(json!({"encrypted": false}), |e| e.json()),
        })
    }

    /// `litestream_status()`'s `error`: what keeps commits from being stored, or the
    /// replica from serving them, now.
    pub fn error(&self) -> Option<String> {
        self.error_of(&self.lock())
    }

    pub(super) fn error_of(&self, s: &Shared) -> Option<String> {
        // An upload that succeeded clears `last_error`, not a failing stage.
        s.fatal
            .clone()
            .or_else(|| s.last_error.clone())
            .or_else(|| s.staging_failure.as_ref().map(|e| format!("staging: {e}")))
            .or_else(|| s.unreadable.values().next().cloned())
            .or_else(|| s.base_not_ours.clone())
            .or_else(|| self.store_silent())
            .or_else(|| self.left_at_close_before(s))
    }

    /// Until this process stores something: why the process that replicated before it
    /// closed with commits not stored (`leader_error::at_close`).
    fn left_at_close_before(&self, s: &Shared) -> Option<String> {
        if s.uploads > 0 || s.uploaded_txid >= s.staged_txid {
            return None;
        }
        let lock_dir = crate::primary::shared_staging::lock_dir(&self.db_path);
        let left = crate::primary::leader_error::left_before(&lock_dir)?;
        Some(format!(
            "nothing stored since this process opened the database; the process that replicated it before \
             (pid {}) reported: {}",
            left.pid, left.message
        ))
    }

    /// The worker's upload waiting for the store longer than [`SILENT_AFTER`], said as an
    /// error while it waits: a store that does not answer (stopped, a network that
    /// drops packets) showed no error until the request timed out 30 s later, while one
    /// refusing connections showed within a second (an operations tester).
    /// A large upload is given time for its bytes at [`SLOWEST_EXPECTED`] first, so that
    /// a snapshot going up slowly is not called unanswered.
    fn store_silent(&self) -> Option<String> {
        let (key, waited) = crate::engine::waiting_since(*self.worker_job.get()?)?;
        let (what, bytes) = match key.split(' ').collect::<Vec<_>>()[..] {
            ["put", _, min, max, bytes] => (
                format!("the upload of TXIDs {min}-{max}, {bytes} bytes"),
                bytes.parse::<u64>().unwrap_or(0),
            ),
            _ => (key.clone(), 0),
        };
        if waited < SILENT_AFTER + Duration::from_secs(bytes / SLOWEST_EXPECTED) {
            return None;
        }
        Some(format!(
            "no answer from {} for {} s ({what}); still waiting",
            self.store.describe(),
            waited.as_secs()
        ))
    }

    pub(super) fn record_error(&self, message: String) {
        self.sync_stats.failed();
        let mut shared = self.lock();
        self.warn_repeated(&mut shared, &message);
        shared.last_error = Some(message);
        shared.failures += 1;
        drop(shared);
        self.progress.notify_all();
    }

    /// Logs `message` as a warning, or at debug level when the same one was logged less
    /// than a minute ago: then once a minute, with how often it happened in between. A
    /// stage failing in a loop wrote ~50,000 identical lines a second, and a full staging
    /// disk a "writing a WAL hand-off record" warning at every WAL restart (7 a second).
    pub(super) fn warn_repeated(&self, shared: &mut Shared, message: &str) {
        let now = Instant::now();
        let warned = &mut shared.warned;
        match warned.iter_mut().find(|(last, ..)| *last == message) {
            Some((_, at, repeated)) if now.duration_since(*at) < REPEATED_WARNING_EVERY => {
                *repeated += 1;
                tracing::debug!(db = %self.db_path.display(), "{message}");
            }
            Some((_, at, repeated)) => {
                match *repeated {
                    0 => tracing::warn!(db = %self.db_path.display(), "{message}"),
                    n => {
                        tracing::warn!(db = %self.db_path.display(), "{message} ({n} more times since it was last logged)")
                    }
                }
                (*at, *repeated) = (now, 0);
            }
            None => {
                tracing::warn!(db = %self.db_path.display(), "{message}");
                if warned.len() == REMEMBERED_WARNINGS {
                    warned.remove(0);
                }
                warned.push((message.to_string(), now, 0));
            }
        }
    }
}
