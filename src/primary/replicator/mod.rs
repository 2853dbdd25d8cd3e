//! One [`Primary`] per database file per process, shared by every connection that
//! opened it through the VFS. Commit capture runs inline on the writer's thread
//! (memory copies only); a job of the process's engine stages batches as LTX files
//! every `sync_interval` and uploads them with conditional creates (`worker.rs`).

mod generation_end;
mod hooks;
mod lost_commits;
mod open;
mod pressure;
mod reconcile;
mod stage;
mod status;
use status::staging_full_message;
mod sync;
mod unfinished_stage;
mod upload;
mod worker;

use super::batch::{now_ms, Batch};
use super::capture::{Capture, CapturedTxn, Discontinuity, WalPosition, WalSource};
use super::compaction_turn::{CompactionControl, CompactionEvent};
use super::compactor::{Compactor, LevelCache, SNAPSHOT_LEVEL};
use super::follow::follow;
use super::follower::{self, Uploaded};
use super::handoff::{HandoffDir, Record};
use super::quiet_dir::QuietDir;
use super::staging::{remove_with_companions, StagedFile, Staging};
use super::state::{FileIdentity, SavedState, StateFile};
use super::sync_stats::SyncStats;
use super::wal_file::WalFile;
use super::wal_index::{CountedWal, ShmWal, WalIndexView};
use crate::config::{Config, SyncMode};
use crate::engine::JobId;
use crate::ltx::crypto::PrivateKey;
use crate::ltx::{Compression, Encoding};
use crate::runtime::block_on;
use crate::storage::{check_fencing, open_store, Fencing, LtxObject, ReplicaStore};
use crate::wal::WalHeader;
use serde_json::json;
use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Takes a consistent copy of a live database: implemented over SQLite itself in the
/// VFS layer (private connections and the backup API).
pub trait Snapshotter: Send + Sync {
    /// Copies the database at `db` into `dest`. `at_lock` runs while writers are
    /// excluded, right before the copy's read transaction starts, so the copy holds
    /// exactly the commits captured up to that call; it is given the wal-index header
    /// then (the copy holds exactly the frames it counts), when it could be read.
    /// `released` runs as soon as writers may proceed again.
    fn snapshot(
        &self,
        db: &Path,
        dest: &Path,
        at_lock: &mut dyn FnMut(Option<ShmWal>),
        released: &dyn Fn(),
    ) -> Result<(), SnapshotError>;

    /// The wal-index header of `db` read through a connection of our own, for when no
    /// connection of the application maps it (a takeover by a process that has not
    /// read the database yet). None when it cannot be read.
    fn wal_index(&self, _db: &Path) -> Option<ShmWal> {
        None
    }
}

/// Why a snapshot did not happen.
#[derive(Debug)]
pub enum SnapshotError {
    /// Another connection held the write lock (a long transaction): nothing is wrong,
    /// the worker tries again shortly.
    WriterBusy,
    Failed(String),
}

impl From<String> for SnapshotError {
    fn from(message: String) -> Self {
        SnapshotError::Failed(message)
    }
}

/// How long a snapshot may keep finding the write lock taken before that is worth a
/// warning: a bulk load holds it for seconds, a stuck writer for ever.
const SNAPSHOT_BUSY_WARN_AFTER: Duration = Duration::from_secs(30);

/// The longest a WAL restart waits, under SQLite's write lock, for a stage in progress
/// to put its LTX file in place (`generation_end.rs`, `wait_for_staged_file`). A stage of one
/// `sync_interval` of commits is encoded, written and fsynced in a few milliseconds;
/// past this the restart writes a tail instead, which is correct and costs a copy.
const STAGED_FILE_WAIT: Duration = Duration::from_millis(50);

/// Why staging did not finish this round.
enum StageError {
    /// A pending snapshot waits for the application's write transaction to end.
    SnapshotWaiting,
    Failed(String),
}

/// What a round of staging did.
#[derive(Debug, PartialEq, Eq)]
enum Staged {
    /// Staged whatever there was (perhaps nothing).
    Done,
    /// Staging holds more than `max_staging_bytes` (the store has been unreachable for
    /// long): nothing is staged until uploads bring it under, then a snapshot is.
    Full { staged: u64, limit: u64 },
}

impl From<String> for StageError {
    fn from(message: String) -> Self {
        StageError::Failed(message)
    }
}

/// The consistent copy a snapshot is encoded from, in the staging directory. Only the
/// process holding the staging lock snapshots, so one name is enough.
const SNAPSHOT_TMP: &str = "snapshot.db.tmp";

/// Removes the snapshot copy and whatever SQLite left beside it (a process that died
/// mid-copy leaves a `-journal`).
fn remove_snapshot_leftovers(staging_dir: &Path) {
    remove_with_companions(&staging_dir.join(SNAPSHOT_TMP));
}

impl Shared {
    /// The snapshot that starts the chain again is stored: a gap compaction reported
    /// is mended.
    fn chain_mended(&mut self) {
        worker::error_over(
            &mut self.compaction,
            &mut self.compaction_error_step,
            worker::ErrorStep::Gap,
        );
    }
}

impl Shared {
    /// The clean close this process may claim: its last connection deleted the WAL
    /// (`own_wal_deletion`) and capture still stands where that left it, the generation
    /// ended with that database file. Between the deletion and the closing turn another
    /// process may begin a generation on the empty WAL: capture follows its start record
    /// (and its commits). Claimed then, the saved state put capture back at the deletion
    /// while counting that record as followed, and the next process to replicate found
    /// that generation's later record or frames connected to nothing: a full snapshot
    /// at nearly every hand-over between short-lived leaders (a tester: 41-49 a minute,
    /// two processes each opening, committing and closing one database). The position
    /// capture stands at is saved instead, as for any close that leaves a WAL.
    fn clean_close(&self) -> Option<FileIdentity> {
        self.own_wal_deletion
            .clone()
            .filter(|own| self.capture.database_left() == Some(own))
    }

    /// Gives the next TXIDs to captured commits and merges them into the queue.
    fn enqueue(&mut self, txns: impl IntoIterator<Item = CapturedTxn>) {
        let Shared {
            queue,
            capture,
            next_txid,
            ..
        } = self;
        for txn in txns {
            queue.push(*next_txid, txn, &mut |page| capture.recycle(page));
            *next_txid += 1;
        }
    }

    /// Everything captured and not staged (the held batch and the queue after it),
    /// leaving both empty.
    fn take_pending(&mut self) -> Batch {
        let mut pending = std::mem::take(&mut self.queue);
        let held = std::mem::take(&mut self.held);
        let capture = &mut self.capture;
        pending.absorb_older(held, &mut |page| capture.recycle(page));
        pending
    }

    /// Commits captured and not staged, outside a stage in progress.
    fn pending_commits(&self) -> u64 {
        self.held.commits() + self.queue.commits()
    }

    /// Memory held by the commits waiting for the next stage's cut: what `max_queue`
    /// bounds (the writers' back-pressure, the worker's early stage).
    fn queued_bytes(&self) -> usize {
        self.held.bytes() + self.queue.bytes()
    }

    /// Memory held by commits captured and not staged: the queue, and the batch a stage
    /// in progress is writing. The status said only the queue's, which a stage failing
    /// on a full disk empties at every attempt: it read ~2 MB while anonymous memory
    /// grew by 290 MB.
    fn pending_bytes(&self) -> usize {
        self.queued_bytes() + self.in_stage.1
    }

    /// Drops every commit captured and not staged: staging cannot take them (full, or
    /// failing), and keeping them let memory grow for as long as that lasted. The WAL and
    /// the database still hold them, so a full snapshot, taken once staging works again,
    /// covers them (`reason` says why, in `snapshot_pending`). Their TXIDs are not taken
    /// again: `litestream_txid()` has handed them out, and numbering the commits after
    /// from the last staged one made a TXID name two states (a `-txid` restore gave
    /// rows committed minutes later; a tester). The snapshot spans them instead
    /// (`take_snapshot`): no restore stops inside it. Only under the stage lock.
    /// Returns how many commits went.
    fn drop_pending(&mut self, reason: impl FnOnce(u64) -> String) -> u64 {
        let dropped = self.take_pending();
        let count = dropped.commits();
        self.recycle(dropped);
        // The spare page buffers of the backlog too: nothing is queued until the
        // snapshot (`on_wal_write`), so they would only pin its memory.
        self.capture.release_idle_buffers();
        self.origin = None;
        self.require_snapshot(reason(count));
        count
    }

    /// For a state saved at `txid`: the last TXID handed out, when commits after it were
    /// dropped for a snapshot (saved, so that the next open's snapshot spans them too).
    fn numbered_past(&self, txid: u64) -> u64 {
        let numbered = self.next_txid - 1;
        match self.snapshot_needed.is_some() && numbered > txid {
            true => numbered,
            false => 0,
        }
    }

    /// Empties the queue, returning its page buffers to capture.
    fn recycle(&mut self, batch: Batch) {
        let capture = &mut self.capture;
        batch.recycle_into(&mut |page| capture.recycle(page));
    }

    /// Capture can no longer prove continuity: commits are dropped until a snapshot
    /// at the next TXID covers them.
    fn require_snapshot(&mut self, reason: String) {
        if self.snapshot_needed.is_none() {
            self.snapshot_needed = Some(reason);
            self.snapshot_epoch += 1;
        }
    }
}

struct Shared {
    capture: Capture,
    /// Hand-off records up to this sequence number are followed (`follow.rs`).
    handoff_consumed: u64,
    /// TXID the next captured commit gets.
    next_txid: u64,
    /// Captured, not yet staged, merged page by page, since `origin`.
    queue: Batch,
    /// Captured, not yet staged, older than `queue`, and handed off in batch records
    /// (`generation_end.rs`); staged with the queue, as one file.
    held: Batch,
    /// Where the queue begins when that is the end of everything staged or handed off
    /// (the saved state's position, the position a stage in progress will save, or the
    /// end of this process's last batch record): a restart may then hand the queue off
    /// as a batch record from there. None when a tail or another process's record holds
    /// commits the queue also has, or a stage failed (set in the same lock as the failed
    /// batch goes back to the queue): restarts write tails until the next stage.
    origin: Option<WalPosition>,
    /// A stage cut the queue and its LTX file is not in the staging directory yet: the
    /// cut's commits are only in memory (`hand_off_batch`).
    stage_file_pending: bool,
    /// Capture lost track; commits are dropped until a snapshot covers them.
    snapshot_needed: Option<String>,
    /// TXID given to the last snapshot: a sync that saw a pending snapshot waits for it.
    last_snapshot_txid: u64,
    /// Counts snapshot requests, so a sync notices one that came and went between
    /// two of its wake-ups.
    snapshot_epoch: u64,
    staged_txid: u64,
    uploaded_txid: u64,
    /// The replica belongs to another writer: commits are refused.
    fatal: Option<String>,
    last_error: Option<String>,
    /// Failures recorded (`record_error`): a waiting sync tells a wake-up for a failure
    /// from one for progress by it.
    failures: u64,
    /// The last few failures logged, when, and how many identical ones were not logged
    /// since (a failing stage and a failing upload alternate).
    warned: Vec<(String, Instant, u64)>,
    sync_requested: bool,
    closing: bool,
    snapshots: u64,
    uploads: u64,
    uploaded_bytes: u64,
    last_upload_ms: Option<i64>,
    /// Capture time of the oldest commit not yet uploaded, for the lag figure.
    oldest_pending_ms: Option<i64>,
    last_lag_ms: Option<i64>,
    compaction: serde_json::Value,
    /// Compaction steps (by level, 9: the snapshot) failing because this key does not
    /// open an input, and why: status `error` while no other error is shown.
    unreadable: std::collections::BTreeMap<u8, String>,
    /// Why this key does not open the file the newest state's restore starts from, as
    /// the last census found (`encryption.rs`, `BaseCheck`): status `error` until not.
    base_not_ours: Option<String>,
    /// Where `compaction.last_error` came from (`worker::ErrorStep`).
    compaction_error_step: Option<worker::ErrorStep>,
    /// Page size of the replica's newest file, once known (see `reseed.rs`).
    replica_page_size: Option<u32>,
    /// The staged file (its last TXID) whose level-9 twin is stored: its level-0 upload
    /// may take several turns (`upload.rs`).
    reseed_stored: Option<u64>,
    /// The next full image uploaded also goes to level 9 as 1..=N: the open found the
    /// replica lacking TXIDs this database had replicated (`reconcile.rs`), compaction
    /// found a gap (`chain_gaps.rs`), or `litestream_snapshot()` asked for it.
    chain_start_owed: bool,
    /// The database file right after this process's last connection checkpointed and
    /// deleted the WAL: what a clean close records.
    own_wal_deletion: Option<FileIdentity>,
    /// The generation a writer of this process began and is writing the header of
    /// (`before_fresh_header`, or a restart), until that write lands: meanwhile the WAL
    /// has no header or the previous generation's, and nobody else changed it.
    fresh_header: Option<(u32, u32)>,
    /// `sync=commit`: commits that returned before their TXID was stored.
    sync_commit_timeouts: u64,
    sync_commit_error: Option<String>,
    /// Why the last round of staging failed (a full disk, a read-only or unwritable
    /// staging directory), until one succeeds: the status and a timed-out sync say it
    /// even after an upload cleared `last_error`. Commits over `max_queue` are dropped
    /// for a snapshot at such a failure (`stage.rs`).
    staging_failure: Option<String>,
    /// The last upload failed (cleared by one that succeeds): only then does staging over
    /// `max_staging` drop commits (`stage.rs`).
    uploads_failing: bool,
    /// (commits, bytes) of the batch a stage cut from the queue and is writing.
    in_stage: (u64, usize),
}

pub struct Primary {
    pub db_path: PathBuf,
    config: Config,
    store: Arc<dyn ReplicaStore>,
    /// Whether the store stops a second primary (`storage::check_fencing`).
    fencing: Fencing,
    staging: Staging,
    state_file: StateFile,
    /// Hand-off records other processes (and this one) leave before WAL frames go away.
    records: HandoffDir,
    node_id: u64,
    snapshotter: Box<dyn Snapshotter>,
    shared: Mutex<Shared>,
    /// Held by a stage from its cut of the queue to its saved state: one stage at a
    /// time (the worker's, a close's, an open's snapshot).
    stage_lock: Mutex<()>,
    /// Signals staging/upload progress to waiters.
    progress: Condvar,
    /// The worker's job in the process's engine (`worker.rs`).
    worker_job: OnceLock<JobId>,
    /// Wakes the worker when a follower asks for a sync (`follower::watch_requests`);
    /// dropped at close.
    request_watch: Mutex<Option<crate::engine::DirWatch>>,
    /// Idle turns do not list an empty request directory (`follower::pending_requests`).
    requests_quiet: QuietDir,
    /// True while a connection of ours may hold the WAL write lock (a snapshot's, or a
    /// wal-index probe's recovery): the application's writers wait for it instead of
    /// seeing SQLITE_BUSY.
    snapshot_locking: Mutex<bool>,
    snapshot_unlocked: Condvar,
    /// Mirrors `Shared::fatal.is_some()` for the per-write check.
    refusing: AtomicBool,
    /// The database file said it left WAL mode (see [`Primary::on_db_write`]): its
    /// commits bypass the WAL, so each one is replicated by a snapshot.
    outside_wal: AtomicBool,
    /// Capture holds frames of an uncommitted transaction (set on every WAL write), so
    /// releasing the write lock needs the mutex only after a spilled rollback.
    frames_pending: AtomicBool,
    /// Uploaded level-0 files kept for compaction (when compaction is on).
    level_cache: Option<LevelCache>,
    /// The compaction ladder's job in the engine, when compaction is on.
    compaction_job: OnceLock<JobId>,
    /// Ends the compaction job's store requests at close (`storage::Stoppable`): a turn
    /// in progress on a silent store held the close for each request's silence limit.
    compaction_stop: Arc<crate::storage::Stop>,
    /// Rounds of the worker, their time and failures (`litestream_sync_*` metrics).
    sync_stats: SyncStats,
    /// Encryption at rest, when keyed: `litestream_status()`'s `encryption`.
    encryption_status: Option<Arc<super::encryption::EncryptionStatus>>,
    /// SQLite's count of committed frames, through this process's mappings of the
    /// wal-index (shared with the database's other roles): capture never reads past it.
    wal_index: Arc<WalIndexView>,
    /// Opened by a takeover (not by the application's open): see
    /// `catch_up_foreign_commits`.
    took_over: AtomicBool,
    /// The state this process last saved (durably: `persist`), or found saved at open.
    /// Only the process holding the replication lock writes the state file, so while it
    /// does the file says exactly this.
    persisted: Mutex<Option<SavedState>>,
    /// Names this database's check of the replica at open (`replica_check.rs`), which
    /// learns here the TXIDs this process saves.
    replica_check: crate::primary::replica_check::CheckKey,
}

impl Primary {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checked before a write reaches the WAL: a primary that lost its replica to
    /// another writer refuses new commits. Lock-free on the normal path.
    #[inline]
    pub fn check_writable(&self) -> Result<(), String> {
        if !self.refusing.load(Ordering::Relaxed) {
            return Ok(());
        }
        match &self.lock().fatal {
            Some(reason) => Err(reason.clone()),
            None => Ok(()),
        }
    }

    /// TXID of the last commit captured. While a snapshot is owed, commits are not
    /// captured one by one: the TXID the snapshot will take, which holds them (the last
    /// one captured, said before, names a state without them: a `-txid` restore of the
    /// TXID an application was given after its commit lacked the commit).
    pub fn txid(&self) -> u64 {
        let shared = self.lock();
        match shared.snapshot_needed {
            Some(_) => shared.next_txid,
            None => shared.next_txid - 1,
        }
    }

    fn save_state(&self, shared: &Shared, closed_clean: Option<FileIdentity>) -> io::Result<()> {
        // While a snapshot is pending, capture sits at the end of the WAL only because the
        // snapshot will cover what it skipped. Saving that position would let a restart
        // (after a kill before the snapshot was staged) resume from it and never replicate
        // the skipped commits: a silent gap (found by crash_everywhere).
        let wal: Option<crate::primary::state::SavedWal> = if closed_clean.is_some() || shared.snapshot_needed.is_some()
        {
            None
        } else {
            shared.capture.position().map(Into::into)
        };
        // Only beside a position: a clean close's state compared unequal at every close
        // of a request that only read, and was saved again (open_requests).
        let ended_before = shared.capture.ended_before().filter(|_| wal.is_some()).map(Into::into);
        let database_left = crate::primary::state::database_left_to_save(
            shared.capture.database_left().cloned(),
            wal.as_ref(),
            shared.snapshot_needed.is_some(),
            closed_clean.is_some(),
        );
        self.persist(&SavedState {
            stored_for: None, // stamped by `persist`
            numbered_txid: shared.numbered_past(shared.staged_txid),
            node_id: self.node_id,
            txid: shared.staged_txid,
            wal,
            closed_clean,
            handoff_seq: shared.handoff_consumed,
            ended_before,
            database_left,
        })
    }

    fn compression(&self) -> Compression {
        self.config.zstd_level.map_or(Compression::Lz4, Compression::Zstd)
    }

    /// How new files are written: compressed, and encrypted when keyed.
    fn encoding(&self) -> Encoding {
        Encoding::new(self.compression(), self.config.encryption.as_deref())
    }

    fn key(&self) -> Option<&PrivateKey> {
        self.config.encryption.as_ref().map(|e| e.key())
    }

    /// The database's encryption key, for `litestream_restore()` on its connections.
    pub fn encryption_key(&self) -> Option<PrivateKey> {
        self.key().cloned()
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Takes `state`, read from the state file, as what this process last saved: the
    /// next save of the same state is skipped, and any other is written (`persist`).
    fn adopt_persisted(&self, state: SavedState) {
        *self.persisted.lock().unwrap_or_else(|p| p.into_inner()) = Some(state);
    }

    /// Saves the state durably, then deletes the hand-off records it reflects.
    fn persist(&self, state: &SavedState) -> io::Result<()> {
        let state = &SavedState {
            stored_for: Some(self.replica_check.fingerprint()),
            ..state.clone()
        };
        let mut persisted = self.persisted.lock().unwrap_or_else(|p| p.into_inner());
        // The file already says this, durably, and the records it reflects are gone:
        // saving it again is two fsyncs for nothing (a close after its closing stage
        // saved the clean close, `stage.rs`).
        if persisted.as_ref() == Some(state) {
            return Ok(());
        }
        *persisted = None; // a failed save leaves the file unknown
        self.state_file.save(state)?;
        if let Some(clean) = &state.closed_clean {
            // The file alone holds everything staged: noted on it, a later open whose
            // staging directory is gone can still prove it continues this replica.
            crate::provenance::ReplicaNote {
                replica: self.store.describe().to_string(),
                txid: state.txid,
                size: clean.size,
                mtime_ns: clean.mtime_ns,
            }
            .save(&self.db_path);
        }
        tracing::debug!(txid = state.txid, handoff_seq = state.handoff_seq, wal = ?state.wal, clean = state.closed_clean.is_some(), "state saved");
        self.records.remove_through(state.handoff_seq);
        crate::primary::replica_check::saved(&self.replica_check, state.txid);
        *persisted = Some(state.clone());
        Ok(())
    }
}
