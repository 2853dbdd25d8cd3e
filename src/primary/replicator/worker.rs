//! The periodic work of one primary, as jobs of the process's engine (`crate::engine`):
//! every `sync_interval` (or sooner when asked) catch up on other processes' commits,
//! stage, upload; and the compaction ladder at its windows.

use super::super::compaction_turn::CompactionClock;
use super::*;
use crate::engine::{engine, Job};

/// What the worker remembers between its turns: retry pacing.
pub(super) struct Pace {
    backoff: Duration,
    stage_backoff: Duration,
    snapshot_busy_since: Option<Instant>,
    next_busy_warning: Duration,
    next_upload_attempt: Instant,
    /// Staging is over its limit: warned once, quiet until it is under again.
    staging_full: bool,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            backoff: Duration::from_millis(100),
            stage_backoff: Duration::ZERO,
            snapshot_busy_since: None,
            next_busy_warning: SNAPSHOT_BUSY_WARN_AFTER,
            next_upload_attempt: Instant::now(),
            staging_full: false,
        }
    }
}

/// The worker of one primary as an engine job: each turn catches up on other
/// processes' commits, stages, uploads; it is due every `sync_interval`, sooner when
/// woken (a sync requested, the queue large, a snapshot needed, closing).
pub(super) struct WorkerJob {
    pub(super) primary: Arc<Primary>,
    pub(super) pace: Mutex<Pace>,
}

impl Job for WorkerJob {
    fn run(&self) -> Option<Instant> {
        let mut pace = self.pace.lock().unwrap_or_else(|p| p.into_inner());
        self.primary.turn(&mut pace)
    }
}

impl Primary {
    /// One turn of the worker: take a snapshot if needed, stage the queue, upload
    /// staged files. Returns when the next turn is due (`None` once closing: the
    /// closing turn is the last).
    pub(super) fn turn(&self, pace: &mut Pace) -> Option<Instant> {
        let closing = {
            let mut shared = self.lock();
            shared.sync_requested = false;
            shared.closing
        };
        // Requests listed before catching up: commits made before them are then in
        // the WAL or a hand-off record (`follower.rs`).
        let requests = follower::pending_requests(&self.config.staging_dir, &self.requests_quiet);
        if follower::snapshot_asked(&requests) {
            tracing::info!(db = %self.db_path.display(), "taking a snapshot: another process asked for it (litestream_snapshot())");
            let mut shared = self.lock();
            shared.require_snapshot("asked for by litestream_snapshot() in another process".into());
            // Stored at level 9 too, as in this process (`Primary::snapshot_now`).
            shared.chain_start_owed = true;
            drop(shared);
            follower::snapshot_requests_taken(&requests);
        }
        let round = Instant::now();
        let before = self.progress_mark();
        let caught_up = self.catch_up_foreign_commits(!requests.is_empty());
        self.answer_sync_requests(&requests, caught_up);
        let staged = self.stage_pending();
        if !matches!(staged, Err(StageError::SnapshotWaiting)) {
            pace.snapshot_busy_since = None;
        }
        let full = matches!(staged, Ok(Staged::Full { .. }));
        if !full {
            pace.staging_full = false;
        }
        // A failed stage retries after its own backoff, not the interval.
        let mut retry_stage = None;
        match staged {
            Ok(Staged::Done) => pace.stage_backoff = Duration::ZERO,
            // Only uploads can help, and they have their own backoff: this turn used to
            // report success and the next came at once (a core spun for the outage).
            Ok(Staged::Full { staged, limit }) => {
                if !pace.staging_full {
                    pace.staging_full = true;
                    let failing = self.lock().uploads_failing;
                    self.record_error(staging_full_message(staged, limit, failing));
                } else {
                    tracing::debug!(db = %self.db_path.display(), staged, limit, "staging is still full");
                }
                pace.stage_backoff = (pace.stage_backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(1));
                retry_stage = Some(Instant::now() + pace.stage_backoff);
            }
            Err(e) => {
                // A pending snapshot skips the interval wait: pace the retries. One
                // that only waits for a write transaction retries within a second of
                // its end; failures back off further.
                let cap = match e {
                    StageError::SnapshotWaiting => {
                        let since = *pace.snapshot_busy_since.get_or_insert_with(|| {
                            pace.next_busy_warning = SNAPSHOT_BUSY_WARN_AFTER;
                            Instant::now()
                        });
                        let waited = since.elapsed();
                        if waited >= pace.next_busy_warning {
                            self.record_error(format!(
                                "staging: a snapshot has waited {} s for the write lock; another connection keeps a write transaction open",
                                waited.as_secs()
                            ));
                            pace.next_busy_warning = waited + SNAPSHOT_BUSY_WARN_AFTER;
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
                pace.stage_backoff = (pace.stage_backoff * 2).clamp(Duration::from_millis(100), cap);
                retry_stage = Some(Instant::now() + pace.stage_backoff);
            }
        }
        let mut more = false;
        let uploaded_before = self.lock().uploaded_txid;
        if Instant::now() >= pace.next_upload_attempt || closing {
            match self.upload_staged() {
                Ok(upload::Uploads::Done) => pace.backoff = Duration::from_millis(100),
                Ok(upload::Uploads::More) => {
                    pace.backoff = Duration::from_millis(100);
                    more = true;
                }
                // Not a failure: the PUT's end wakes this job.
                Ok(upload::Uploads::Deferred) => {}
                Err(e) => {
                    self.record_error(e);
                    // Some files went up: the store answers, this failure is one of a
                    // flaky network's, not an outage's. Backing off further would make
                    // a 30% failure rate look like a long outage (catch-up in tens of s).
                    if self.lock().uploaded_txid > uploaded_before {
                        pace.backoff = Duration::from_millis(100);
                    }
                    pace.next_upload_attempt = Instant::now() + pace.backoff;
                    // The cap is how late the end of an outage is noticed: with 30 s,
                    // catch-up after a 20 s outage took 20 s (make torture); one failed
                    // PUT every 5 s costs nothing.
                    pace.backoff = (pace.backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        if self.progress_mark() != before {
            self.sync_stats.synced(round.elapsed());
        }
        if closing {
            return None;
        }
        // Uploads went through: staging may be under its limit now, and the snapshot
        // that follows should not wait for the backoff.
        if full && self.lock().uploaded_txid > uploaded_before {
            retry_stage = None;
        }
        if let Some(at) = retry_stage {
            return Some(at);
        }
        // What used to end the worker's wait early ends it now: whatever arrived during
        // this turn is served by the next one at once.
        let shared = self.lock();
        let urgent = more
            || shared.sync_requested
            || shared.closing
            || shared.snapshot_needed.is_some()
            || shared.queued_bytes() > self.config.max_queue_bytes as usize;
        Some(if urgent {
            Instant::now()
        } else {
            Instant::now() + self.config.sync_interval
        })
    }

    /// Runs the worker's next turn now.
    pub(super) fn wake_worker(&self) {
        if let Some(id) = self.worker_job.get() {
            engine().wake(*id);
        }
    }

    /// What a turn of the worker can move: staged and uploaded TXIDs, snapshots taken.
    fn progress_mark(&self) -> (u64, u64, u64) {
        let s = self.lock();
        (s.staged_txid, s.uploaded_txid, s.snapshots)
    }
}

/// The compaction ladder of one primary as an engine job: a turn at each wall-clock
/// window boundary.
pub(super) struct CompactionJob {
    pub(super) primary: Arc<Primary>,
    pub(super) compactor: Compactor,
    pub(super) clock: Mutex<CompactionClock>,
}

impl Job for CompactionJob {
    fn background(&self) -> bool {
        true
    }

    fn run(&self) -> Option<Instant> {
        if self.primary.lock().closing {
            return None;
        }
        let mut clock = self.clock.lock().unwrap_or_else(|p| p.into_inner());
        clock.saw_uploads(self.primary.lock().uploads);
        let before = clock.saved();
        let next_ms = self.compactor.turn(&mut clock, now_ms(), self.primary.as_ref());
        if clock.saved() != before {
            let config = &self.primary.config;
            crate::primary::compaction_due::save(&config.staging_dir, config.file_modes, &clock.saved());
        }
        let wait = Duration::from_millis((next_ms - now_ms()).max(0) as u64);
        Some(Instant::now() + wait)
    }
}

impl CompactionControl for Primary {
    fn report(&self, event: CompactionEvent) {
        let mut shared = self.lock();
        if let CompactionEvent::ChainBroken(why) = &event {
            crate::primary::replica_check::doubt(&self.replica_check);
            // A snapshot owed to the chain is on its way (staged, or its level-9 copy not
            // stored yet): it is later than every TXID stored, so it mends this too.
            if shared.chain_start_owed {
                tracing::debug!(db = %self.db_path.display(), %why, "gap found while a snapshot that mends it is pending");
                return;
            }
            // The chain can only be mended from the database: a full image at the next
            // TXID, also stored at level 9 (`upload.rs`), as after an open that found
            // the replica lacking TXIDs (`reconcile.rs`).
            let reason = format!("replica {} {why}", self.store.describe());
            tracing::warn!(db = %self.db_path.display(), %reason, "taking a snapshot");
            shared.require_snapshot(reason);
            shared.chain_start_owed = true;
        }
        // Fields borrowed apart below (the status and the unreadable steps).
        let shared = &mut *shared;
        let status = &mut shared.compaction;
        let bump = |v: &mut serde_json::Value, key: &str, by: u64| {
            v[key] = json!(v[key].as_u64().unwrap_or(0) + by);
        };
        match event {
            CompactionEvent::Compacted(c) => {
                shared.unreadable.remove(&c.level);
                error_over(status, &mut shared.compaction_error_step, ErrorStep::Level(c.level));
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
            CompactionEvent::Failed { level, message } => {
                tracing::warn!(db = %self.db_path.display(), "compaction: {message}");
                status["last_error"] = json!(message);
                status["last_error_at_ms"] = json!(now_ms());
                shared.compaction_error_step = Some(level.map_or(ErrorStep::Other, ErrorStep::Level));
                bump(status, "errors", 1);
            }
            CompactionEvent::Unreadable { level, message } => {
                tracing::warn!(db = %self.db_path.display(), "compaction: {message}");
                status["last_error"] = json!(message);
                status["last_error_at_ms"] = json!(now_ms());
                shared.compaction_error_step = Some(ErrorStep::Level(level));
                bump(status, "errors", 1);
                // Status `error` too: every pass fails the same way until a rekey, and a
                // count alone went unnoticed while the replica became unrestorable.
                shared.unreadable.insert(
                    level,
                    format!(
                        "compaction cannot open the replica's files with this database's key: {message}; \
                         give them to this key with litestream-vfs rekey (docs/encryption.md, \"Rotating keys\")"
                    ),
                );
            }
            CompactionEvent::Succeeded(level) => {
                shared.unreadable.remove(&level);
                error_over(status, &mut shared.compaction_error_step, ErrorStep::Level(level));
            }
            CompactionEvent::BaseKey(None) => shared.base_not_ours = None,
            CompactionEvent::BaseKey(Some(why)) => {
                if shared.base_not_ours.is_none() {
                    tracing::error!(db = %self.db_path.display(), "{why}");
                }
                // The newest state then restores with this key, from the snapshot on.
                if !shared.chain_start_owed {
                    shared.require_snapshot(why.clone());
                    shared.chain_start_owed = true;
                }
                shared.base_not_ours = Some(why);
            }
            CompactionEvent::ChainBroken(why) => {
                status["last_error"] = json!(format!(
                    "no restore reaches the replica's newest TXID ({why}): a snapshot follows"
                ));
                status["last_error_at_ms"] = json!(now_ms());
                shared.compaction_error_step = Some(ErrorStep::Gap);
                status["last_gap"] = json!({ "why": why, "at_ms": now_ms() });
                bump(status, "gaps", 1);
            }
        }
    }
}

/// The compaction step `compaction.last_error` came from: it is cleared when that step
/// succeeds (a gap: when the snapshot that mends it is stored). Kept for ever before,
/// an alert on it stayed on long after the repair (an operations tester).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ErrorStep {
    Level(u8),
    Gap,
    /// Retention, the census, the sweep: kept (with its time) until another error.
    Other,
}

/// Clears `compaction.last_error` (in `status`) when it came from `step`.
pub(super) fn error_over(status: &mut serde_json::Value, from: &mut Option<ErrorStep>, step: ErrorStep) {
    if *from == Some(step) {
        *from = None;
        status["last_error"] = serde_json::Value::Null;
    }
}
