//! The background loop of one primary: every `sync_interval` (or sooner when asked)
//! catch up on other processes' commits, stage, upload; and the compaction control.

use super::*;

impl Primary {
    /// The worker: every `sync_interval` (or sooner when asked) take a snapshot if
    /// needed, stage the queue, upload staged files.
    pub(super) fn run(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        let mut stage_backoff = Duration::ZERO;
        let mut snapshot_busy_since: Option<Instant> = None;
        let mut next_busy_warning = SNAPSHOT_BUSY_WARN_AFTER;
        let mut next_upload_attempt = Instant::now();
        loop {
            let closing = {
                let mut shared = self.lock();
                if !shared.sync_requested && !shared.closing && shared.snapshot_needed.is_none() {
                    let limit = self.config.max_queue_bytes as usize;
                    let (guard, _) = self
                        .wake
                        .wait_timeout_while(shared, self.config.sync_interval, |s| {
                            !s.sync_requested && !s.closing && s.queue.bytes() <= limit
                        })
                        .unwrap_or_else(|p| p.into_inner());
                    shared = guard;
                }
                shared.sync_requested = false;
                shared.closing
            };
            // Requests listed before catching up: commits made before them are then in
            // the WAL or a hand-off record (`follower.rs`).
            let requests = follower::pending_requests(&self.config.staging_dir);
            let round = Instant::now();
            let before = self.progress_mark();
            self.catch_up_foreign_commits();
            self.answer_sync_requests(&requests);
            let staged = self.stage_pending();
            if !matches!(staged, Err(StageError::SnapshotWaiting)) {
                snapshot_busy_since = None;
            }
            match staged {
                Ok(()) => stage_backoff = Duration::ZERO,
                Err(e) => {
                    // A pending snapshot skips the interval wait: pace the retries. One
                    // that only waits for a write transaction retries within a second of
                    // its end; failures back off further.
                    let cap = match e {
                        StageError::SnapshotWaiting => {
                            let since = *snapshot_busy_since.get_or_insert_with(|| {
                                next_busy_warning = SNAPSHOT_BUSY_WARN_AFTER;
                                Instant::now()
                            });
                            let waited = since.elapsed();
                            if waited >= next_busy_warning {
                                self.record_error(format!(
                                    "staging: a snapshot has waited {} s for the write lock; another connection keeps a write transaction open",
                                    waited.as_secs()
                                ));
                                next_busy_warning = waited + SNAPSHOT_BUSY_WARN_AFTER;
                            } else {
                                tracing::debug!(db = %self.db_path.display(), "snapshot waits for a write transaction to end");
                            }
                            Duration::from_secs(1)
                        }
                        StageError::Failed(e) => {
                            self.record_error(format!("staging: {e}"));
                            Duration::from_secs(10)
                        }
                    };
                    stage_backoff = (stage_backoff * 2).clamp(Duration::from_millis(100), cap);
                    let shared = self.lock();
                    if !shared.closing {
                        let _ = self.wake.wait_timeout(shared, stage_backoff);
                    }
                }
            }
            if Instant::now() >= next_upload_attempt || closing {
                let uploaded_before = self.lock().uploaded_txid;
                match self.upload_staged() {
                    Ok(()) => backoff = Duration::from_millis(100),
                    Err(e) => {
                        self.record_error(e);
                        // Some files went up: the store answers, this failure is one of a
                        // flaky network's, not an outage's. Backing off further would make
                        // a 30% failure rate look like a long outage (catch-up in tens of s).
                        if self.lock().uploaded_txid > uploaded_before {
                            backoff = Duration::from_millis(100);
                        }
                        next_upload_attempt = Instant::now() + backoff;
                        // The cap is how late the end of an outage is noticed: with 30 s,
                        // catch-up after a 20 s outage took 20 s (make torture); one failed
                        // PUT every 5 s costs nothing.
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
            if self.progress_mark() != before {
                self.sync_stats.synced(round.elapsed());
            }
            if closing {
                break;
            }
        }
    }

    /// What a round of the worker can move: staged and uploaded TXIDs, snapshots taken.
    fn progress_mark(&self) -> (u64, u64, u64) {
        let s = self.lock();
        (s.staged_txid, s.uploaded_txid, s.snapshots)
    }
}

impl CompactionControl for Primary {
    fn sleep_until(&self, deadline_ms: i64) -> bool {
        let mut shared = self.lock();
        loop {
            if shared.closing {
                return true;
            }
            let left = deadline_ms - now_ms();
            if left <= 0 {
                return false;
            }
            shared = self
                .compaction_wake
                .wait_timeout(shared, Duration::from_millis(left as u64))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn report(&self, event: CompactionEvent) {
        let mut shared = self.lock();
        let status = &mut shared.compaction;
        let bump = |v: &mut serde_json::Value, key: &str, by: u64| {
            v[key] = json!(v[key].as_u64().unwrap_or(0) + by);
        };
        match event {
            CompactionEvent::Compacted(c) => {
                tracing::debug!(db = %self.db_path.display(), level = c.level, min = c.min_txid, max = c.max_txid, inputs = c.inputs, "compacted");
                status[format!("level{}", c.level)] = json!({
                    "min_txid": c.min_txid,
                    "max_txid": c.max_txid,
                    "inputs": c.inputs,
                    "local_inputs": c.local_inputs,
                    "bytes": c.bytes,
                    "at_ms": now_ms(),
                });
                bump(status, "compactions", 1);
            }
            CompactionEvent::Retention(d) => {
                tracing::info!(db = %self.db_path.display(), snapshots = d.snapshots, files = d.files, "retention deleted old files");
                bump(status, "deleted_snapshots", d.snapshots as u64);
                bump(status, "deleted_files", d.files as u64);
            }
            CompactionEvent::Failed(e) => {
                tracing::warn!(db = %self.db_path.display(), "compaction: {e}");
                status["last_error"] = json!(e);
                bump(status, "errors", 1);
            }
        }
    }
}
