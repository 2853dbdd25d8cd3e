//! Waiting for uploads (`litestream_sync()`, `sync=commit`) and closing.

use super::*;

/// How long a close lets a compaction turn in progress go on (at most `sync_timeout`).
const COMPACTION_GRACE: Duration = Duration::from_secs(5);

impl Primary {
    /// Blocks until every commit up to `txid` is in object storage, or `timeout`.
    pub fn sync(&self, txid: u64, timeout: Duration) -> Result<u64, String> {
        let since = {
            let shared = self.lock();
            (shared.snapshot_epoch, shared.snapshot_needed.is_some())
        };
        self.wait_stored(txid, timeout, since)
    }

    /// `litestream_snapshot()`: a full snapshot of the database at the next TXID, as
    /// after a discontinuity (every page as it is now, whatever the replica holds), and
    /// waits until it is stored; returns the TXID stored. For an operator who doubts the
    /// replica, e.g. after the 2026-12-06 advisory: restores from then on need nothing
    /// before it. So it is stored at level 9 too, as TXIDs 1..=N (`upload.rs`): restore
    /// plans, ours and Litestream's, start only from level 9 or a file starting at TXID
    /// 1, and a level-0 image at TXID N looks like any increment in a listing. Stored
    /// at level 0 alone it mended nothing: a replica emptied under the primary stayed
    /// "no snapshot to start from".
    pub fn snapshot_now(&self, timeout: Duration) -> Result<u64, String> {
        self.catch_up_foreign_commits(true);
        let since = {
            let mut shared = self.lock();
            shared.require_snapshot("asked for by litestream_snapshot()".into());
            shared.chain_start_owed = true;
            (shared.snapshot_epoch, true)
        };
        self.wake_worker();
        self.wait_stored(self.txid(), timeout, since)
    }

    /// Waits until TXID `txid` is stored, and the snapshot involved since `since` (the
    /// snapshot epoch then, and whether one was pending) with it.
    fn wait_stored(&self, txid: u64, timeout: Duration, since: (u64, bool)) -> Result<u64, String> {
        let deadline = Instant::now() + timeout;
        let mut target = txid;
        let mut shared = self.lock();
        // Commits dropped while a snapshot is pending are only stored once that
        // snapshot is: its TXID becomes part of the target.
        let (start_epoch, pending_at_start) = since;
        let mut failures_seen = None;
        loop {
            if let Some(fatal) = &shared.fatal {
                return Err(fatal.clone());
            }
            let snapshot_involved = pending_at_start || shared.snapshot_epoch != start_epoch;
            let snapshot_waiting = snapshot_involved && shared.snapshot_needed.is_some();
            if snapshot_involved && !snapshot_waiting {
                // A snapshot taken since this wait began holds every commit made before
                // it: its own TXID is the target (commits dropped for it keep theirs, so
                // it is above every one of them, `drop_pending`).
                target = shared.last_snapshot_txid;
            }
            if shared.uploaded_txid >= target && !snapshot_waiting {
                return Ok(shared.uploaded_txid);
            }
            let now = Instant::now();
            if now >= deadline {
                let why = shared
                    .last_error
                    .clone()
                    .or_else(|| shared.staging_failure.as_ref().map(|e| format!("staging: {e}")))
                    .unwrap_or_else(|| {
                        if snapshot_waiting {
                            "the snapshot is not staged yet".into()
                        } else {
                            "upload still in progress".into()
                        }
                    });
                // A snapshot not taken yet has no TXID: naming `txid` (perhaps stored
                // already, or given back with dropped commits) misled.
                let what = if snapshot_waiting {
                    "a snapshot of the database".to_string()
                } else {
                    format!("TXID {target}")
                };
                return Err(format!(
                    "timed out after {timeout:?} waiting for {what} (uploaded: {}): {why}",
                    shared.uploaded_txid
                ));
            }
            shared.sync_requested = true;
            // Woken by a failure, not by progress: the worker has scheduled its retry
            // after a backoff, and waking it now would run it at once. That made a failing
            // stage and this wait a loop: a core spun and each turn logged its failure.
            let failed = failures_seen.is_some_and(|seen| seen != shared.failures);
            failures_seen = Some(shared.failures);
            if !failed {
                self.wake_worker();
            }
            shared = self
                .progress
                .wait_timeout(shared, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Everything committed so far, then waits for it to be uploaded: other processes'
    /// commits too, read from the WAL first as far as SQLite counts them (capture meets
    /// them only at an engine turn or this process's next write lock: a sync in the
    /// replicating process returned without a follower's commit made before it).
    pub fn sync_all(&self, timeout: Duration) -> Result<u64, String> {
        self.catch_up_foreign_commits(true);
        let target = self.txid();
        self.sync(target, timeout)
    }

    /// Last connection closed: stop the engine's jobs (a turn in progress ends
    /// first), then stage what is left and try to upload it on this thread, record a
    /// clean close if SQLite checkpointed the WAL away.
    pub fn close(&self) {
        self.request_watch.lock().unwrap_or_else(|p| p.into_inner()).take();
        // A compaction turn in progress may finish for a few seconds (a connection per
        // request closes at every request: stopped at once, no turn ever finished); then
        // its request in flight ends, and so does every later one. On a store that does
        // not answer, the close waits that and its own upload (`sync_timeout`), not the
        // turn's requests one silence limit after another (100-136 s before).
        self.compaction_stop
            .stop_after(self.config.sync_timeout.min(COMPACTION_GRACE));
        if let Some(id) = self.compaction_job.get() {
            crate::engine::engine().remove(*id);
        }
        if let Some(id) = self.worker_job.get() {
            crate::engine::engine().remove(*id);
        }
        {
            let mut shared = self.lock();
            shared.closing = true;
            shared.sync_requested = true;
        }
        // The closing turn: its upload is tried whatever the backoff, taking over the
        // worker's PUT still in flight, if any (`crate::engine::last_turn`), for at most
        // `sync_timeout`: what it could not store stays staged for the next open.
        let deadline = Instant::now() + self.config.sync_timeout;
        let turn = || self.turn(&mut worker::Pace::default());
        match self.worker_job.get() {
            Some(id) => crate::engine::last_turn(*id, deadline, turn),
            None => turn(),
        };
        {
            let shared = self.lock();
            let mut left = None;
            if shared.uploaded_txid < shared.staged_txid {
                // Say what stopped the upload: a store that refused at once (an error
                // in milliseconds) is not one that ran out the timeout, and the two are
                // fixed differently.
                let timed_out = Instant::now() >= deadline;
                if let Some(fatal) = &shared.fatal {
                    // Refused for good: the next open is refused the same way, so they do
                    // not go up then either (a settings tester was promised they would).
                    tracing::error!(
                        db = %self.db_path.display(),
                        "closing with TXIDs {}-{} not stored, and they will not be: {fatal}",
                        shared.uploaded_txid + 1,
                        shared.staged_txid,
                    );
                } else {
                    let why = match (&shared.last_error, timed_out) {
                        (Some(e), true) => format!(
                            "the store did not take them within sync_timeout {:?}; its last error: {e}",
                            self.config.sync_timeout
                        ),
                        (None, true) => format!(
                            "the store did not take them within sync_timeout {:?}",
                            self.config.sync_timeout
                        ),
                        (Some(e), false) => format!("the store failed: {e}"),
                        (None, false) => "the closing upload did not finish".to_string(),
                    };
                    tracing::warn!(
                        db = %self.db_path.display(),
                        "closing with TXIDs {}-{} staged but not stored ({why}); \
                         they go up at the next open of this database",
                        shared.uploaded_txid + 1,
                        shared.staged_txid,
                    );
                    left = Some(format!(
                        "TXIDs {}-{} not stored: {why}",
                        shared.uploaded_txid + 1,
                        shared.staged_txid
                    ));
                }
            }
            crate::primary::leader_error::at_close(
                &crate::primary::shared_staging::lock_dir(&self.db_path),
                self.config.file_modes,
                left,
            );
        }
        // Everything captured is staged: save where capture stands, so the next process
        // to replicate resumes from here. A clean close is claimed when this process
        // deleted the WAL itself (its last connection checkpointed it): the WAL being
        // gone proves nothing by itself, another process may have truncated it.
        let shared = self.lock();
        let saved = if shared.snapshot_needed.is_some() {
            // No position: the next open takes the snapshot, spanning every TXID this
            // process handed out (`Shared::numbered_past`).
            Some(self.save_state(&shared, None))
        } else if shared.pending_commits() == 0 {
            let closed_clean = shared.clean_close().or_else(|| self.left_without_wal(&shared));
            Some(self.save_state(&shared, closed_clean))
        } else {
            None
        };
        if let Some(Err(e)) = saved {
            tracing::error!("saving replication state at close: {e}");
        }
    }

    /// A close that leaves no WAL generation behind, though this process did not delete
    /// the WAL: a session that never wrote leaves an empty `-wal` (SQLite deletes it only
    /// through a connection that opened it), or a follower truncated it. Capture has
    /// followed the last generation to its end and the WAL holds no header, so the
    /// database file alone holds everything staged: its identity is the position a
    /// restart checks. A generation begun since by another process is a start record
    /// this process has not consumed, which a restart follows.
    fn left_without_wal(&self, shared: &Shared) -> Option<FileIdentity> {
        if !shared.capture.ended() {
            return None;
        }
        let mut wal = WalFile::open(&self.db_path).ok()?;
        if !matches!(super::reconcile::read_wal_header(&mut wal), Ok(None)) {
            return None;
        }
        // A file changed since the WAL was left empty holds commits nobody captured (a
        // tool without the VFS that checkpointed them away): not a state to continue.
        let now = FileIdentity::pinned(&self.db_path).ok()?;
        match shared.capture.database_left() {
            Some(left) if *left != now => None,
            _ => Some(now),
        }
    }
}
