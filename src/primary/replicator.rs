//! One [`Primary`] per database file per process, shared by every connection that
//! opened it through the VFS. Commit capture runs inline on the writer's thread
//! (memory copies only); a worker thread stages batches as LTX files every
//! `sync_interval` and uploads them with conditional creates.

use super::batch::{encode_full, now_ms, Batch};
use super::capture::{Capture, CapturedTxn, Discontinuity, WalPosition, WalSource};
use super::compactor::{CompactionControl, CompactionEvent, Compactor, LevelCache, SNAPSHOT_LEVEL};
use super::follow::follow;
use super::follower::{self, Uploaded};
use super::handoff::{HandoffDir, Record};
use super::staging::{remove_with_companions, StagedFile, Staging};
use super::state::{FileIdentity, SavedState, StateFile};
use super::wal_file::WalFile;
use crate::config::{Config, SyncMode};
use crate::ltx::Compression;
use crate::runtime::block_on;
use crate::storage::{open_store, ReplicaStore};
use serde_json::json;
use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Takes a consistent copy of a live database: implemented over SQLite itself in the
/// VFS layer (private connections and the backup API).
pub trait Snapshotter: Send + Sync {
    /// Copies the database at `db` into `dest`. `at_lock` runs while writers are
    /// excluded, right before the copy's read transaction starts, so the copy holds
    /// exactly the commits captured up to that call; `released` runs as soon as
    /// writers may proceed again.
    fn snapshot(
        &self,
        db: &Path,
        dest: &Path,
        at_lock: &mut dyn FnMut(),
        released: &dyn Fn(),
    ) -> Result<(), SnapshotError>;
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

/// Why staging did not finish this round.
enum StageError {
    /// A pending snapshot waits for the application's write transaction to end.
    SnapshotWaiting,
    Failed(String),
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

/// Levels a replica can hold files in.
const ALL_LEVELS: [u8; 5] = [0, 1, 2, 3, 9];

impl Shared {
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
    /// Captured, not yet staged, merged page by page.
    queue: Batch,
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
    /// Page size of the replica's newest file, once known (see `reseed.rs`).
    replica_page_size: Option<u32>,
}

pub struct Primary {
    pub db_path: PathBuf,
    config: Config,
    store: Arc<dyn ReplicaStore>,
    staging: Staging,
    state_file: StateFile,
    /// Hand-off records other processes (and this one) leave before WAL frames go away.
    records: HandoffDir,
    node_id: u64,
    snapshotter: Box<dyn Snapshotter>,
    shared: Mutex<Shared>,
    /// Wakes the worker early (sync requested, queue large, closing).
    wake: Condvar,
    /// Signals staging/upload progress to waiters.
    progress: Condvar,
    worker: Mutex<Option<JoinHandle<()>>>,
    /// True while our snapshot connection holds the WAL write lock: the application's
    /// writers wait for it instead of seeing SQLITE_BUSY.
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
    compactor: Mutex<Option<JoinHandle<()>>>,
    /// Wakes the compaction thread when closing.
    compaction_wake: Condvar,
}

impl Primary {
    /// Opens replication for `db_path`: reconciles local state with the replica
    /// (restoring the database first if it is missing), runs `prepare_db` (which puts
    /// the database in WAL mode), and starts the worker.
    pub fn open(
        db_path: &Path,
        config: Config,
        snapshotter: Box<dyn Snapshotter>,
        prepare_db: &dyn Fn(&Path) -> Result<(), String>,
    ) -> Result<Arc<Primary>, String> {
        let store = open_store(&config.replica_url, &config.store_options).map_err(|e| e.to_string())?;
        let staging = Staging::open(&config.staging_dir, config.file_modes)
            .map_err(|e| format!("staging directory {}: {e}", config.staging_dir.display()))?;
        let state_file = StateFile::new(&config.staging_dir, config.file_modes);
        let level_cache = match &config.compaction {
            Some(_) => Some(
                LevelCache::open(&config.staging_dir, config.file_modes)
                    .map_err(|e| format!("staging directory {}: {e}", config.staging_dir.display()))?,
            ),
            None => None,
        };
        remove_snapshot_leftovers(&config.staging_dir);
        let saved = state_file
            .load()
            .map_err(|e| format!("reading replication state: {e}"))?;
        let replica_max = match replica_max_txid(store.as_ref()) {
            Ok(max) => max,
            // A restart during a store outage must not lock the application out of its
            // own database: continue from local state, upload once the store is back
            // (conditional creates still stop a second primary).
            Err(e) if e.is_transient() && saved.is_some() => {
                tracing::warn!(db = %db_path.display(), "replica unreachable at open, continuing from local state: {e}");
                None
            }
            Err(e) => return Err(format!("listing replica {}: {e}", store.describe())),
        };
        let db_exists = fs::metadata(db_path).map(|m| m.len() > 0).unwrap_or(false);

        let mut capture = Capture::new();
        let records = HandoffDir::new(&config.staging_dir, config.file_modes);
        let mut handoff_consumed = 0;
        let mut queue = Batch::default();
        let mut snapshot_needed = None;
        let (state, mut next_txid) = match (saved, replica_max) {
            (None, None) => {
                snapshot_needed = Some("first replication of this database".to_string());
                (
                    SavedState {
                        node_id: new_node_id(),
                        ..Default::default()
                    },
                    1,
                )
            }
            (None, Some(max)) if !db_exists => {
                tracing::info!(db = %db_path.display(), txid = max, "restoring the database from its replica");
                let pos = crate::restore::restore_latest(&store, db_path)
                    .map_err(|e| format!("restoring {} from {}: {e}", db_path.display(), store.describe()))?;
                // Records left beside a database that no longer exists belong to it.
                handoff_consumed = records.last_seq().map_err(|e| e.to_string())?;
                let state = SavedState {
                    node_id: new_node_id(),
                    txid: pos.txid,
                    wal: None,
                    closed_clean: FileIdentity::of(db_path).ok(),
                    handoff_seq: handoff_consumed,
                };
                state_file
                    .save(&state)
                    .map_err(|e| format!("saving replication state: {e}"))?;
                (state, pos.txid + 1)
            }
            (None, Some(max)) if config.takeover => {
                tracing::warn!(db = %db_path.display(), txid = max, "takeover: continuing a replica another writer made");
                snapshot_needed = Some(format!("takeover of a replica at TXID {max}"));
                (
                    SavedState {
                        node_id: new_node_id(),
                        txid: max,
                        ..Default::default()
                    },
                    max + 1,
                )
            }
            (None, Some(max)) => {
                return Err(format!(
                    "replica {} already holds TXIDs up to {max} written by another database; use another \
                     replica path, remove the local database to restore it from this replica, or open with \
                     takeover=1 to continue the replica from this database (a full snapshot at TXID {})",
                    store.describe(),
                    max + 1
                ))
            }
            (Some(saved), replica_max) => {
                if let Some(max) = replica_max.filter(|max| *max > saved.txid) {
                    let writer = latest_node_id(store.as_ref(), max);
                    if writer != Some(saved.node_id) && !config.takeover {
                        return Err(format!(
                            "replica {} is at TXID {max}, ahead of this database's TXID {}, and was written by \
                             another primary; refusing to write to it (two primaries on one replica; if that \
                             primary is gone for good, open with takeover=1)",
                            store.describe(),
                            saved.txid
                        ));
                    }
                }
                for file in staging.list().map_err(|e| e.to_string())? {
                    if file.max_txid > saved.txid {
                        staging.remove(&file).map_err(|e| e.to_string())?;
                    }
                }
                let mut next = saved.txid + 1;
                if let Some(max) = replica_max.filter(|max| *max > saved.txid) {
                    snapshot_needed = Some(format!(
                        "local state (TXID {}) is older than the replica ({max})",
                        saved.txid
                    ));
                    next = max + 1;
                } else {
                    let mut wal = WalFile::open(db_path).map_err(|e| e.to_string())?;
                    let resumed =
                        resume_capture(&mut capture, &mut handoff_consumed, &saved, db_path, &mut wal, &records)
                            .map_err(|e| e.to_string())?;
                    match resumed {
                        Ok(txns) => {
                            for txn in txns {
                                queue.push(next, txn, &mut drop);
                                next += 1;
                            }
                        }
                        Err(Discontinuity(reason)) => snapshot_needed = Some(reason),
                    }
                }
                (saved, next)
            }
        };
        prepare_db(db_path)?;
        if snapshot_needed.is_some() {
            let mut wal = WalFile::open(db_path).map_err(|e| e.to_string())?;
            capture.skip_to_end(&mut wal).map_err(|e| e.to_string())?;
            // The snapshot covers whatever the records held.
            handoff_consumed = records.last_seq().map_err(|e| e.to_string())?;
        }
        let staged_txid = next_txid - 1 - queue.commits();
        if let Some(reason) = &snapshot_needed {
            tracing::info!(db = %db_path.display(), %reason, txid = next_txid, "a snapshot will be taken");
        }
        next_txid = next_txid.max(1);
        // A staged file is removed only once it is stored, so every staged TXID below the
        // oldest file still staged is in the replica, even when listing it failed just now
        // (a sync must not wait for uploads that already happened).
        let oldest_staged = staging.list().map_err(|e| e.to_string())?.first().map(|f| f.min_txid);
        let uploaded_before_open = oldest_staged.map_or(staged_txid, |min| min - 1).min(staged_txid);
        let primary = Arc::new(Primary {
            db_path: db_path.to_path_buf(),
            node_id: state.node_id,
            shared: Mutex::new(Shared {
                capture,
                handoff_consumed,
                next_txid,
                queue,
                snapshot_needed,
                last_snapshot_txid: 0,
                snapshot_epoch: 0,
                staged_txid,
                uploaded_txid: replica_max.unwrap_or(0).max(uploaded_before_open).min(staged_txid),
                fatal: None,
                last_error: None,
                sync_requested: true,
                closing: false,
                snapshots: 0,
                uploads: 0,
                uploaded_bytes: 0,
                last_upload_ms: None,
                oldest_pending_ms: None,
                last_lag_ms: None,
                compaction: json!({}),
                replica_page_size: None,
            }),
            config,
            store,
            staging,
            state_file,
            records,
            snapshotter,
            wake: Condvar::new(),
            progress: Condvar::new(),
            worker: Mutex::new(None),
            snapshot_locking: Mutex::new(false),
            snapshot_unlocked: Condvar::new(),
            refusing: AtomicBool::new(false),
            outside_wal: AtomicBool::new(false),
            frames_pending: AtomicBool::new(false),
            level_cache,
            compactor: Mutex::new(None),
            compaction_wake: Condvar::new(),
        });
        // The state file names our node id from the first open on. Commits resumed from
        // the WAL are queued, not staged: the saved position stays where they start.
        {
            let shared = primary.lock();
            if shared.queue.is_empty() {
                primary.save_state(&shared, None)
            } else {
                primary.persist(&SavedState {
                    node_id: primary.node_id,
                    txid: shared.staged_txid,
                    wal: state.wal.clone(),
                    closed_clean: None,
                    handoff_seq: state.handoff_seq,
                })
            }
        }
        .map_err(|e| format!("saving replication state: {e}"))?;
        let worker = Arc::clone(&primary);
        let handle = std::thread::Builder::new()
            .name("litestream-primary".into())
            .spawn(move || worker.run())
            .map_err(|e| format!("cannot start the replication thread: {e}"))?;
        *primary.worker.lock().expect("worker lock") = Some(handle);
        if let Some(ladder) = primary.config.compaction.clone() {
            let compactor = Compactor {
                store: Arc::clone(&primary.store),
                cache: LevelCache::open(&primary.config.staging_dir, primary.config.file_modes)
                    .map_err(|e| format!("staging directory {}: {e}", primary.config.staging_dir.display()))?,
                config: ladder,
                compression: primary.compression(),
            };
            let control = Arc::clone(&primary);
            let handle = std::thread::Builder::new()
                .name("litestream-compact".into())
                .spawn(move || compactor.run(control.as_ref()))
                .map_err(|e| format!("cannot start the compaction thread: {e}"))?;
            *primary.compactor.lock().expect("compactor lock") = Some(handle);
        }
        Ok(primary)
    }

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

    /// Called after every successful write to the WAL (on the writer's thread).
    pub fn on_wal_write(&self, offset: u64, data: &[u8], wal: &mut dyn WalSource) {
        let mut shared = self.lock();
        let found = shared.capture.on_write(offset, data, wal).unwrap_or_else(|e| {
            // The write itself succeeded; only our read-back failed.
            Err(Discontinuity(format!("reading the WAL back: {e}")))
        });
        self.frames_pending
            .store(shared.capture.has_pending(), Ordering::Relaxed);
        match found {
            Ok(txns) if txns.is_empty() => {}
            Ok(txns) => {
                if shared.snapshot_needed.is_some() {
                    return; // the coming snapshot includes them
                }
                shared.oldest_pending_ms.get_or_insert_with(now_ms);
                shared.enqueue(txns);
                if shared.queue.bytes() as u64 > self.config.max_queue_bytes {
                    self.wake.notify_all();
                }
            }
            Err(Discontinuity(reason)) => {
                tracing::warn!(db = %self.db_path.display(), %reason, "capture lost track of the WAL; taking a snapshot");
                shared.require_snapshot(reason);
                self.wake.notify_all();
            }
        }
    }

    /// Called when SQLite releases the WAL write lock: the write transaction is over.
    /// Frames still pending belong to one that rolled back after spilling; they are
    /// dropped (another process may reuse their offsets). With `sync=commit`, the
    /// commit returns only once its TXID is in object storage.
    pub fn write_lock_released(&self) {
        if self.frames_pending.swap(false, Ordering::Relaxed) {
            self.lock().capture.discard_pending();
        }
        self.after_commit();
    }

    /// Called before a write to the database file itself (not its WAL). In WAL mode only
    /// checkpoints write there, copying pages whose commits capture already has. A
    /// database that leaves WAL mode (an unqualified `PRAGMA journal_mode=MEMORY|OFF` on a
    /// connection where it is attached: SQLite asks only the main database, so the
    /// pragma cannot be refused for it) says so by writing page 1 with file format
    /// version 1 (bytes 18-19); from then on its commits are written straight into the
    /// file, unseen by capture. Each write then requires a snapshot, so every such commit
    /// is still replicated, if expensively, until page 1 says WAL (2) again.
    pub fn on_db_write(&self, offset: u64, data: &[u8]) {
        if offset == 0 && data.len() > 19 {
            let leaving = data[18] == 1 && data[19] == 1;
            let was = self.outside_wal.swap(leaving, Ordering::Relaxed);
            if leaving && !was {
                tracing::warn!(
                    db = %self.db_path.display(),
                    "the database left WAL mode (journal_mode changed on a connection it is attached to); each commit is now replicated by a full snapshot until PRAGMA journal_mode=WAL"
                );
            } else if was && !leaving {
                tracing::info!(db = %self.db_path.display(), "the database is back in WAL mode");
            }
        }
        if self.outside_wal.load(Ordering::Relaxed) {
            let mut shared = self.lock();
            shared.require_snapshot("the database was written outside WAL mode".into());
            self.wake.notify_all();
        }
    }

    fn after_commit(&self) {
        if self.config.sync_mode != SyncMode::Commit {
            return;
        }
        let target = self.lock().next_txid - 1;
        if let Err(e) = self.sync(target, self.config.sync_timeout) {
            tracing::error!(db = %self.db_path.display(), "sync=commit: {e}");
        }
    }

    /// When the application's attempt at the WAL write lock failed with BUSY: if our
    /// own snapshot holds the lock, waits (bounded) for its release and returns true
    /// so the caller retries.
    pub fn wait_for_snapshot_lock(&self) -> bool {
        let locking = self.snapshot_locking.lock().unwrap_or_else(|p| p.into_inner());
        if !*locking {
            return false;
        }
        let (locking, _) = self
            .snapshot_unlocked
            .wait_timeout_while(locking, Duration::from_secs(10), |held| *held)
            .unwrap_or_else(|p| p.into_inner());
        !*locking
    }

    fn set_snapshot_locking(&self, held: bool) {
        *self.snapshot_locking.lock().unwrap_or_else(|p| p.into_inner()) = held;
        if !held {
            self.snapshot_unlocked.notify_all();
        }
    }

    /// TXID of the last commit captured.
    pub fn txid(&self) -> u64 {
        self.lock().next_txid - 1
    }

    /// Blocks until every commit up to `txid` is in object storage, or `timeout`.
    pub fn sync(&self, txid: u64, timeout: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + timeout;
        let mut target = txid;
        let mut shared = self.lock();
        // Commits dropped while a snapshot is pending are only stored once that
        // snapshot is: its TXID becomes part of the target.
        let start_epoch = shared.snapshot_epoch;
        let pending_at_start = shared.snapshot_needed.is_some();
        loop {
            if let Some(fatal) = &shared.fatal {
                return Err(fatal.clone());
            }
            let snapshot_involved = pending_at_start || shared.snapshot_epoch != start_epoch;
            if snapshot_involved && shared.snapshot_needed.is_none() {
                target = target.max(shared.last_snapshot_txid);
            }
            if shared.uploaded_txid >= target && !(snapshot_involved && shared.snapshot_needed.is_some()) {
                return Ok(shared.uploaded_txid);
            }
            let now = Instant::now();
            if now >= deadline {
                let why = shared
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "upload still in progress".into());
                return Err(format!(
                    "timed out after {timeout:?} waiting for TXID {target} (uploaded: {}): {why}",
                    shared.uploaded_txid
                ));
            }
            shared.sync_requested = true;
            self.wake.notify_all();
            shared = self
                .progress
                .wait_timeout(shared, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Everything captured so far, then waits for it to be uploaded.
    pub fn sync_all(&self, timeout: Duration) -> Result<u64, String> {
        let target = self.txid();
        self.sync(target, timeout)
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
            "database": self.db_path.display().to_string(),
            "replica": self.store.describe(),
            "node_id": format!("{:016x}", self.node_id),
            "txid": s.next_txid - 1,
            "staged_txid": s.staged_txid,
            "uploaded_txid": s.uploaded_txid,
            "pending_commits": s.queue.commits(),
            "pending_bytes": s.queue.bytes(),
            "staged_bytes": staged_bytes,
            "lag_seconds": lag_s,
            "last_replication_lag_ms": s.last_lag_ms,
            "snapshot_pending": s.snapshot_needed,
            "snapshots": s.snapshots,
            "uploads": s.uploads,
            "uploaded_bytes": s.uploaded_bytes,
            "last_upload_ms": s.last_upload_ms,
            "sync_interval_ms": self.config.sync_interval.as_millis() as u64,
            "sync_mode": match self.config.sync_mode { SyncMode::Async => "async", SyncMode::Commit => "commit" },
            "error": s.fatal.clone().or_else(|| s.last_error.clone()),
            "refusing_writes": s.fatal.is_some(),
            "compaction": if self.config.compaction.is_some() { s.compaction.clone() } else { serde_json::Value::Null },
        })
    }

    /// Last connection closed: stage what is left, try to upload it, record a clean
    /// close if SQLite checkpointed the WAL away, stop the worker.
    pub fn close(&self) {
        {
            let mut shared = self.lock();
            shared.closing = true;
            shared.sync_requested = true;
            self.wake.notify_all();
        }
        self.compaction_wake.notify_all();
        if let Some(handle) = self.compactor.lock().expect("compactor lock").take() {
            let _ = handle.join();
        }
        if let Some(handle) = self.worker.lock().expect("worker lock").take() {
            let _ = handle.join();
        }
        let shared = self.lock();
        let wal_gone = WalFile::open(&self.db_path).map(|mut w| {
            let mut b = [0u8; 32];
            !w.read_exact_at(0, &mut b).unwrap_or(false)
        });
        if shared.queue.is_empty() && shared.snapshot_needed.is_none() && wal_gone.unwrap_or(false) {
            let identity = FileIdentity::of(&self.db_path).ok();
            if let Err(e) = self.save_state(&shared, identity) {
                tracing::error!("saving replication state at close: {e}");
            }
        }
    }

    fn save_state(&self, shared: &Shared, closed_clean: Option<FileIdentity>) -> io::Result<()> {
        // While a snapshot is pending, capture sits at the end of the WAL only because the
        // snapshot will cover what it skipped. Saving that position would let a restart
        // (after a kill before the snapshot was staged) resume from it and never replicate
        // the skipped commits: a silent gap (found by crash_everywhere).
        let wal = if closed_clean.is_some() || shared.snapshot_needed.is_some() {
            None
        } else {
            shared.capture.position().map(Into::into)
        };
        self.persist(&SavedState {
            node_id: self.node_id,
            txid: shared.staged_txid,
            wal,
            closed_clean,
            handoff_seq: shared.handoff_consumed,
        })
    }

    fn compression(&self) -> Compression {
        self.config.zstd_level.map_or(Compression::Lz4, Compression::Zstd)
    }

    /// The worker: every `sync_interval` (or sooner when asked) take a snapshot if
    /// needed, stage the queue, upload staged files.
    fn run(self: Arc<Self>) {
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
            if closing {
                break;
            }
        }
    }

    /// Commits written by other processes (followers) reach us only through the WAL
    /// and the hand-off records of the generations they ended.
    fn catch_up_foreign_commits(&self) {
        let Ok(mut wal) = WalFile::open(&self.db_path) else {
            return;
        };
        let mut shared = self.lock();
        self.follow_locked(&mut shared, &mut wal);
    }

    /// Follows the WAL and the records under the shared lock; captured commits are
    /// queued, a discontinuity asks for a snapshot.
    fn follow_locked(&self, shared: &mut Shared, wal: &mut dyn WalSource) {
        if shared.snapshot_needed.is_some() {
            return; // the coming snapshot covers everything; it repositions capture
        }
        let identity = || FileIdentity::of(&self.db_path).ok();
        let followed = {
            let Shared {
                capture,
                handoff_consumed,
                ..
            } = &mut *shared;
            follow(capture, handoff_consumed, &self.records, wal, None, &identity)
        };
        match followed {
            Ok(Ok(txns)) => {
                if !txns.is_empty() {
                    shared.oldest_pending_ms.get_or_insert_with(now_ms);
                    shared.enqueue(txns);
                }
            }
            Ok(Err(Discontinuity(reason))) => {
                tracing::warn!(db = %self.db_path.display(), %reason, "taking a snapshot");
                shared.require_snapshot(reason);
                self.wake.notify_all();
            }
            Err(e) => tracing::warn!(db = %self.db_path.display(), "reading the WAL: {e}"),
        }
    }

    /// Answers followers' `litestream_sync()` requests with the TXID that covers every
    /// commit made before them: the last captured, or the snapshot still to come.
    fn answer_sync_requests(&self, requests: &[PathBuf]) {
        if requests.is_empty() {
            return;
        }
        let mut shared = self.lock();
        if shared.snapshot_needed.is_some() {
            return; // answered once the snapshot has its TXID
        }
        let txid = shared.next_txid - 1;
        for request in requests {
            follower::answer(request, self.config.file_modes, txid, self.node_id);
        }
        shared.sync_requested = true;
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    fn record_error(&self, message: String) {
        tracing::warn!(db = %self.db_path.display(), "{message}");
        self.lock().last_error = Some(message);
        self.progress.notify_all();
    }

    /// Takes the pending snapshot if any, then stages the queue as one LTX file.
    fn stage_pending(&self) -> Result<(), StageError> {
        if self.lock().snapshot_needed.is_some() {
            // A snapshot staged while the store is down and staging is over its
            // limit would be followed by another and another: wait for uploads first.
            let staged = self.staging.total_bytes().map_err(|e| e.to_string())?;
            if staged > self.config.max_staging_bytes {
                return Ok(());
            }
            self.take_snapshot()?;
        }
        let batch = {
            let mut shared = self.lock();
            if shared.queue.is_empty() {
                return Ok(());
            }
            let staged = self.staging.total_bytes().map_err(|e| e.to_string())?;
            if staged > self.config.max_staging_bytes {
                // The store has been unreachable for long: stop keeping history, and
                // re-seed the replica with a snapshot once it is back.
                let dropped = std::mem::take(&mut shared.queue);
                let count = dropped.commits();
                shared.recycle(dropped);
                shared.next_txid = shared.staged_txid + 1;
                let reason = format!(
                    "staging is full ({staged} bytes, limit {}); {count} commits will be covered by a snapshot",
                    self.config.max_staging_bytes
                );
                shared.require_snapshot(reason.clone());
                return Err(reason.into());
            }
            // The whole queue goes: capture's position now is right after its last
            // commit, including generations it ended or began since (`follow.rs`).
            let at_cut = (shared.capture.position(), shared.handoff_consumed);
            (std::mem::take(&mut shared.queue), at_cut)
        };
        let (batch, (position_at_cut, consumed_at_cut)) = batch;
        let staged = batch
            .encode(self.node_id, self.compression())
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                self.staging
                    .stage(batch.min_txid(), batch.max_txid(), &bytes)
                    .map_err(|e| format!("writing {}: {e}", self.config.staging_dir.display()))
            });
        let mut shared = self.lock();
        match staged {
            Ok(_) => {
                shared.staged_txid = batch.max_txid();
                let state = SavedState {
                    node_id: self.node_id,
                    txid: batch.max_txid(),
                    wal: if shared.snapshot_needed.is_some() {
                        None
                    } else {
                        position_at_cut.map(Into::into)
                    },
                    closed_clean: None,
                    handoff_seq: consumed_at_cut,
                };
                shared.recycle(batch);
                self.persist(&state).map_err(|e| format!("saving state: {e}"))?;
                self.progress.notify_all();
                Ok(())
            }
            Err(e) => {
                // Keep the commits in memory and try again next round.
                let Shared { queue, capture, .. } = &mut *shared;
                queue.absorb_older(batch, &mut |page| capture.recycle(page));
                Err(e.into())
            }
        }
    }

    /// A full image of the database as the next TXID, staged like any batch.
    fn take_snapshot(&self) -> Result<(), StageError> {
        let tmp = self.config.staging_dir.join(SNAPSHOT_TMP);
        remove_snapshot_leftovers(&self.config.staging_dir);
        let mut assigned: Option<(u64, Batch)> = None;
        let mut snapshot_position: Option<WalPosition> = None;
        let mut snapshot_consumed = 0;
        let mut at_lock = || {
            let mut shared = self.lock();
            let before = std::mem::take(&mut shared.queue);
            let txid = shared.next_txid;
            shared.next_txid += 1;
            shared.snapshot_needed = None;
            shared.last_snapshot_txid = txid;
            if let Ok(mut wal) = WalFile::open(&self.db_path) {
                if let Err(e) = shared.capture.skip_to_end(&mut wal) {
                    tracing::warn!("reading the WAL for a snapshot: {e}");
                }
            }
            // Every record so far is older than the state the snapshot copies.
            shared.handoff_consumed = self.records.last_seq().unwrap_or(shared.handoff_consumed);
            snapshot_position = shared.capture.position();
            snapshot_consumed = shared.handoff_consumed;
            assigned = Some((txid, before));
        };
        self.set_snapshot_locking(true);
        let released = || self.set_snapshot_locking(false);
        let result = self.snapshotter.snapshot(&self.db_path, &tmp, &mut at_lock, &released);
        self.set_snapshot_locking(false);
        let Some((txid, before)) = assigned else {
            return Err(match result {
                Err(SnapshotError::WriterBusy) => StageError::SnapshotWaiting,
                Err(SnapshotError::Failed(e)) => StageError::Failed(format!("snapshot failed before it started: {e}")),
                Ok(()) => StageError::Failed("snapshot failed before it started".into()),
            });
        };
        let result = result.map_err(|e| match e {
            SnapshotError::WriterBusy => "the write lock was lost during the snapshot".to_string(),
            SnapshotError::Failed(e) => e,
        });
        let min_txid = if txid == 1 { 1 } else { txid };
        let encoded = result.and_then(|()| self.encode_copy(&tmp, min_txid, txid));
        remove_snapshot_leftovers(&self.config.staging_dir);
        // Commits captured before the snapshot point are staged first, in order.
        if !before.is_empty() {
            let bytes = before
                .encode(self.node_id, self.compression())
                .map_err(|e| e.to_string())?;
            self.staging
                .stage(before.min_txid(), before.max_txid(), &bytes)
                .map_err(|e| e.to_string())?;
            self.lock().recycle(before);
        }
        let bytes = match encoded {
            Ok(b) => b,
            Err(e) => {
                let mut shared = self.lock();
                shared.require_snapshot(format!("previous snapshot attempt failed: {e}"));
                shared.next_txid = txid; // nothing took this TXID
                shared.staged_txid = txid - 1;
                return Err(format!("snapshot: {e}").into());
            }
        };
        self.staging
            .stage(if txid == 1 { 1 } else { txid }, txid, &bytes)
            .map_err(|e| format!("staging snapshot: {e}"))?;
        let mut shared = self.lock();
        shared.staged_txid = txid;
        shared.snapshots += 1;
        self.save_staged(&shared, txid, snapshot_position, snapshot_consumed)?;
        tracing::info!(db = %self.db_path.display(), txid, bytes = bytes.len(), "snapshot staged");
        Ok(())
    }

    /// Records that everything up to `txid` is staged, with the WAL position right after
    /// it. Not the capture's current position: commits captured since (queued, not
    /// staged) would be skipped by a restart that resumed from there.
    fn save_staged(
        &self,
        shared: &Shared,
        txid: u64,
        position: Option<WalPosition>,
        handoff_seq: u64,
    ) -> Result<(), String> {
        let state = SavedState {
            node_id: self.node_id,
            txid,
            wal: if shared.snapshot_needed.is_some() {
                None
            } else {
                position.map(Into::into)
            },
            closed_clean: None,
            handoff_seq,
        };
        self.persist(&state).map_err(|e| format!("saving state: {e}"))
    }

    /// Saves the state durably, then deletes the hand-off records it reflects.
    fn persist(&self, state: &SavedState) -> io::Result<()> {
        self.state_file.save(state)?;
        self.records.remove_through(state.handoff_seq);
        Ok(())
    }

    /// Encodes the snapshot copy at `tmp` as one LTX file holding every page.
    fn encode_copy(&self, tmp: &Path, min_txid: u64, max_txid: u64) -> Result<Vec<u8>, String> {
        let file = fs::File::open(tmp).map_err(|e| e.to_string())?;
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        let mut header = [0u8; 100];
        let page_size = if len >= 100 {
            file.read_exact_at(&mut header, 0).map_err(|e| e.to_string())?;
            match u16::from_be_bytes([header[16], header[17]]) {
                1 => 65536,
                n => n as u32,
            }
        } else {
            4096
        };
        let commit = (len / page_size as u64) as u32;
        encode_full(
            page_size,
            commit,
            min_txid,
            max_txid,
            self.node_id,
            self.compression(),
            |pgno, buf| file.read_exact_at(buf, (pgno as u64 - 1) * page_size as u64),
        )
    }

    /// Uploads staged files in TXID order, removing each once stored.
    fn upload_staged(&self) -> Result<(), String> {
        for file in self.staging.list().map_err(|e| e.to_string())? {
            if self.lock().fatal.is_some() {
                return Ok(());
            }
            self.upload_one(&file)?;
        }
        Ok(())
    }

    fn upload_one(&self, file: &StagedFile) -> Result<(), String> {
        let bytes = fs::read(&file.path).map_err(|e| format!("{}: {e}", file.path.display()))?;
        let header = crate::ltx::Header::decode(&bytes[..bytes.len().min(100)]).ok();
        let timestamp = header.map_or(0, |h| h.timestamp_ms);
        if let Some(header) = &header {
            self.snapshot_if_page_size_changed(file, header, &bytes)?;
        }
        let body = bytes::Bytes::from(bytes);
        let put = block_on(
            self.store
                .put_new(0, file.min_txid, file.max_txid, body.clone(), timestamp),
        );
        match put {
            Ok(()) => {}
            Err(e) if e.is_already_exists() => {
                // The store already accepts identical bytes as our own earlier write;
                // this also reports a conflict it could not confirm (its read-back
                // failed). Only bytes seen to differ mean another primary: a failed read
                // here is retried, not fatal.
                let existing = block_on(self.store.get(0, file.min_txid, file.max_txid)).map_err(|e| e.to_string())?;
                if existing != body {
                    let reason = format!(
                        "another primary wrote TXID {}-{} to {} first; this database stops replicating and \
                         refuses writes (two primaries on one replica)",
                        file.min_txid,
                        file.max_txid,
                        self.store.describe()
                    );
                    tracing::error!(db = %self.db_path.display(), "{reason}");
                    let mut shared = self.lock();
                    shared.fatal = Some(reason.clone());
                    self.refusing.store(true, Ordering::Relaxed);
                    self.progress.notify_all();
                    return Err(reason);
                }
            }
            Err(e) => return Err(format!("uploading TXID {}-{}: {e}", file.min_txid, file.max_txid)),
        }
        let cached = self
            .level_cache
            .as_ref()
            .is_some_and(|cache| cache.adopt(0, file.min_txid, file.max_txid, &file.path).is_ok());
        if !cached {
            self.staging.remove(file).map_err(|e| e.to_string())?;
        }
        let mut shared = self.lock();
        shared.uploaded_txid = shared.uploaded_txid.max(file.max_txid);
        if let Some(header) = &header {
            shared.replica_page_size = Some(header.page_size);
        }
        follower::publish_uploaded(
            &self.config.staging_dir,
            self.config.file_modes,
            Uploaded {
                txid: shared.uploaded_txid,
                node_id: self.node_id,
            },
        );
        shared.uploads += 1;
        shared.uploaded_bytes += body.len() as u64;
        let now = now_ms();
        shared.last_upload_ms = Some(now);
        if let Some(oldest) = shared.oldest_pending_ms.take() {
            shared.last_lag_ms = Some(now - oldest);
        }
        if shared.uploaded_txid >= shared.next_txid - 1 {
            shared.oldest_pending_ms = None;
        } else {
            shared.oldest_pending_ms = Some(now);
        }
        shared.last_error = None;
        self.progress.notify_all();
        Ok(())
    }
}

impl Primary {
    /// Before the first file of a new page size goes up, stores it as a level-9 snapshot
    /// too, so that restore plans start from it instead of mixing page sizes (`reseed.rs`).
    /// Done before the level-0 upload: a kill in between leaves a snapshot whose level-0
    /// twin is uploaded on restart, never the reverse.
    fn snapshot_if_page_size_changed(
        &self,
        file: &StagedFile,
        header: &crate::ltx::Header,
        bytes: &[u8],
    ) -> Result<(), String> {
        if file.min_txid <= 1 {
            return Ok(());
        }
        let known = self.lock().replica_page_size;
        let previous = match known {
            Some(p) => Some(p),
            None => self.page_size_before(file.min_txid)?,
        };
        let Some(previous) = previous.filter(|p| *p != header.page_size) else {
            return Ok(());
        };
        let Some(snapshot) = super::reseed::as_snapshot(bytes, self.compression())? else {
            tracing::error!(
                db = %self.db_path.display(),
                "TXID {}-{} has page size {} after files of {previous} and is not a full image; \
                 restores past it will fail",
                file.min_txid,
                file.max_txid,
                header.page_size
            );
            return Ok(());
        };
        tracing::warn!(
            db = %self.db_path.display(),
            txid = file.max_txid,
            "the page size changed from {previous} to {} outside the VFS: storing the reseed as a \
             level-9 snapshot so that restores start from it",
            header.page_size
        );
        block_on(
            self.store
                .put(SNAPSHOT_LEVEL, 1, file.max_txid, snapshot.into(), header.timestamp_ms),
        )
        .map_err(|e| format!("uploading the snapshot at TXID {}: {e}", file.max_txid))
    }

    /// Page size of the stored file holding TXID `txid - 1` (level 0 first: it is almost
    /// always there), `None` if no file holds it.
    fn page_size_before(&self, txid: u64) -> Result<Option<u32>, String> {
        let want = txid - 1;
        for level in ALL_LEVELS {
            let files = block_on(self.store.list(level)).map_err(|e| e.to_string())?;
            let Some(f) = files.iter().find(|f| f.min_txid <= want && want <= f.max_txid) else {
                continue;
            };
            let head =
                block_on(self.store.get_range(level, f.min_txid, f.max_txid, 0..100)).map_err(|e| e.to_string())?;
            let header = crate::ltx::Header::decode(&head).map_err(|e| e.to_string())?;
            return Ok(Some(header.page_size));
        }
        Ok(None)
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

/// Decides how capture continues from saved state at open (a restart or a takeover):
/// from the saved position through the hand-off records and the live WAL, or a
/// [`Discontinuity`] when that cannot be proven to miss nothing.
fn resume_capture(
    capture: &mut Capture,
    consumed: &mut u64,
    saved: &SavedState,
    db_path: &Path,
    wal: &mut WalFile,
    records: &HandoffDir,
) -> io::Result<Result<Vec<CapturedTxn>, Discontinuity>> {
    *consumed = saved.handoff_seq;
    let position: WalPosition = match (&saved.wal, &saved.closed_clean) {
        (Some(position), _) => position.into(),
        // A clean close: the WAL was checkpointed and deleted with everything staged.
        (None, Some(_)) => WalPosition {
            salt1: 0,
            salt2: 0,
            page_size: 0,
            next_frame: 0,
            checksum: (0, 0),
            ended: true,
        },
        (None, None) => {
            capture.skip_to_end(wal)?;
            return Ok(Err(Discontinuity(
                "no WAL position was saved with the last staged TXID".into(),
            )));
        }
    };
    let live = read_wal_header(wal)?;
    let salts = (position.salt1, position.salt2);
    if position.ended {
        capture.set_position(&position, placeholder_header(&position));
    } else {
        let header = match live.filter(|h| (h.salt1, h.salt2) == salts) {
            Some(h) => Some(h),
            None => records.list()?.into_iter().find_map(|r| match r {
                Record::Tail(t) if t.seq > *consumed && (t.header.salt1, t.header.salt2) == salts => Some(t.header),
                _ => None,
            }),
        };
        let Some(header) = header else {
            capture.skip_to_end(wal)?;
            return Ok(Err(Discontinuity(
                "the WAL no longer continues the last captured position".into(),
            )));
        };
        capture.set_position(&position, header);
        if live.is_some_and(|h| (h.salt1, h.salt2) == salts) && !capture.verify_position(wal)? {
            capture.skip_to_end(wal)?;
            return Ok(Err(Discontinuity(
                "the WAL no longer holds the last captured frame".into(),
            )));
        }
    }
    let identity = || FileIdentity::of(db_path).ok();
    let followed = follow(capture, consumed, records, wal, saved.closed_clean.clone(), &identity)?;
    if let Err(Discontinuity(reason)) = &followed {
        capture.skip_to_end(wal)?;
        if saved.closed_clean.is_some() && saved.wal.is_none() {
            return Ok(Err(Discontinuity(format!(
                "the database changed while it was not open through the litestream VFS ({reason})"
            ))));
        }
    }
    Ok(followed)
}

/// A header standing for a generation that ended: only its salts are ever looked at.
fn placeholder_header(position: &WalPosition) -> crate::wal::WalHeader {
    crate::wal::WalHeader {
        big_endian: false,
        page_size: position.page_size.max(512),
        checkpoint_seq: 0,
        salt1: position.salt1,
        salt2: position.salt2,
        checksum: (0, 0),
    }
}

fn read_wal_header(wal: &mut dyn WalSource) -> io::Result<Option<crate::wal::WalHeader>> {
    let mut raw = [0u8; crate::wal::HEADER_SIZE];
    if !wal.read_exact_at(0, &mut raw)? {
        return Ok(None);
    }
    Ok(crate::wal::WalHeader::parse(&raw).ok())
}

fn replica_max_txid(store: &dyn ReplicaStore) -> Result<Option<u64>, crate::storage::Error> {
    let mut max = None;
    for level in ALL_LEVELS {
        let files = block_on(store.list(level))?;
        max = max.max(files.iter().map(|f| f.max_txid).max());
    }
    Ok(max)
}

/// Node id in the header of the level-0 file ending at `max`.
fn latest_node_id(store: &dyn ReplicaStore, max: u64) -> Option<u64> {
    let files = block_on(store.list(0)).ok()?;
    let file = files.iter().find(|f| f.max_txid == max)?;
    let head = block_on(store.get_range(0, file.min_txid, file.max_txid, 0..100)).ok()?;
    crate::ltx::Header::decode(&head).ok().map(|h| h.node_id)
}

fn new_node_id() -> u64 {
    let mut bytes = [0u8; 8];
    if fs::File::open("/dev/urandom")
        .and_then(|mut f| io::Read::read_exact(&mut f, &mut bytes))
        .is_err()
    {
        bytes = (now_ms() as u64 ^ std::process::id() as u64).to_le_bytes();
    }
    u64::from_le_bytes(bytes) | 1
}

/// The WAL as SQLite's wal-index header (`-shm`) describes it when a writer takes the
/// write lock: read from shared memory, no system call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShmWal {
    /// Salts of the current generation, as the WAL header stores them.
    pub salt1: u32,
    pub salt2: u32,
    /// Frames in the WAL's last commit (0: none yet in this generation).
    pub max_frame: u32,
}

/// Guards: what the replicating process does before WAL frames go away, and when a
/// writer of this process takes the write lock.
impl Primary {
    /// This process is about to restart (`next` is the new header), truncate or delete
    /// (`closed`: the database after the checkpoint) the WAL: capture every commit still
    /// in it, and leave a tail record, so that a restart or a takeover after a crash can
    /// follow the generation too.
    pub fn before_wal_destroyed(&self, live: &mut dyn WalSource, next: Option<&[u8]>, closed: Option<FileIdentity>) {
        let mut shared = self.lock();
        self.follow_locked(&mut shared, live);
        let staged = match self.state_file.load() {
            Ok(state) => state.and_then(|s| s.wal),
            Err(_) => None,
        };
        match self.records.write_tail(live, staged.as_ref(), next, closed) {
            Ok(Some(seq)) => {
                if shared.handoff_consumed == seq - 1 || shared.snapshot_needed.is_some() {
                    shared.handoff_consumed = seq; // what it holds is captured already
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(db = %self.db_path.display(), "writing a WAL hand-off record: {e}"),
        }
        if next.is_none() && shared.snapshot_needed.is_none() {
            shared.capture.end_generation();
        }
    }

    /// A writer of this process begins a generation on an empty WAL (`header`).
    pub fn before_fresh_header(&self, live: &mut dyn WalSource, header: &[u8]) {
        let mut shared = self.lock();
        self.follow_locked(&mut shared, live);
        match self.records.write_start(header) {
            Ok(seq) => {
                if shared.handoff_consumed == seq - 1 || shared.snapshot_needed.is_some() {
                    shared.handoff_consumed = seq;
                }
            }
            Err(e) => tracing::warn!(db = %self.db_path.display(), "writing a WAL hand-off record: {e}"),
        }
    }

    /// A writer of this process holds the WAL write lock: before it writes, capture
    /// everything others committed since our position (their frames, the generations
    /// they ended), so the writer's frames continue what capture has. `shm` is the
    /// wal-index header when it could be read; it costs nothing to compare.
    pub fn after_write_lock(&self, shm: Option<ShmWal>) {
        let mut shared = self.lock();
        if let Some(shm) = shm {
            let in_step = shared.capture.generation() == Some((shm.salt1, shm.salt2))
                && shared.capture.next_frame() == shm.max_frame as u64;
            if in_step || shared.snapshot_needed.is_some() {
                return;
            }
        }
        match WalFile::open(&self.db_path) {
            Ok(mut wal) => self.follow_locked(&mut shared, &mut wal),
            Err(e) => tracing::warn!(db = %self.db_path.display(), "reading the WAL: {e}"),
        }
    }
}
