//! Opening replication for a database: reconcile the staging state with the replica
//! (restoring a missing database), and resume capture from the saved position through
//! the hand-off records and the WAL (`follow.rs`), or plan a snapshot.

use super::super::compaction_turn::CompactionClock;
use super::reconcile::{reconcile, Local, Reconciled, ReplicaSeen};
use super::*;
use crate::engine::engine;
use crate::primary::replica_check::{self, CheckKey};

impl Primary {
    /// Opens replication for `db_path`: reconciles local state with the replica
    /// (restoring the database first if it is missing), runs `prepare_db` (which puts
    /// the database in WAL mode), and starts the worker.
    pub fn open(
        db_path: &Path,
        config: Config,
        snapshotter: Box<dyn Snapshotter>,
        prepare_db: &dyn Fn(&Path) -> Result<(), String>,
        wal_index: Arc<WalIndexView>,
    ) -> Result<Arc<Primary>, String> {
        let store = open_store(&config.replica_url, &config.store_options).map_err(|e| e.to_string())?;
        let staging = Staging::open(&config.staging_dir, config.file_modes)
            .map_err(|e| format!("staging directory {}: {e}", config.staging_dir.display()))?;
        let state_file = StateFile::new(&config.staging_dir, config.file_modes);
        let level_cache = match &config.compaction {
            Some(ladder) => Some(
                LevelCache::open(&config.staging_dir, config.file_modes, ladder.levels.len())
                    .map_err(|e| format!("staging directory {}: {e}", config.staging_dir.display()))?,
            ),
            None => None,
        };
        remove_snapshot_leftovers(&config.staging_dir);
        let saved = state_file.load().map_err(|e| match e.kind() {
            // Saved with fsync and rename: damaged only by storage that lost flushed
            // writes. Said with what to do, not only the parser's complaint.
            io::ErrorKind::InvalidData => format!(
                "reading replication state: {e}. The file is damaged (storage that lost \
                     writes?): move it aside and open again; the database then continues its \
                     replica with a full snapshot if it cannot prove it holds the replica's newest \
                     state (open with takeover=1 if the open then says the replica was written by \
                     another database: this database is the one that wrote it)"
            ),
            _ => format!("reading replication state: {e}"),
        })?;
        let check_key = CheckKey::new(db_path, &config);
        let saved_at = saved.as_ref().map(|s| (s.node_id, s.txid));
        // Only a state saved for this replica and key lets a recent check stand for it,
        // and only beside its database: a missing or empty one is restored from what the
        // replica holds now. The check a new database's first open made saw the replica
        // empty, and a database deleted and made again in the same process within the
        // minute was replicated as a first one over the files, then refused as a second
        // primary at every open (a tester).
        let db_present = std::fs::metadata(db_path).is_ok_and(|m| m.len() > 0);
        let saved_for_this = saved
            .as_ref()
            .filter(|s| db_present && s.stored_for.as_ref() == Some(&check_key.fingerprint()))
            .map(|s| (s.node_id, s.txid));
        let (listed, asked, listing) = newest_for_open(store.as_ref(), &check_key, saved_for_this, db_path);
        // A replica whose files no restore chains up to its newest (a gap, or emptied
        // under the primary, which then uploaded into it before this open), as the
        // listing made now finds it: the open owes it a snapshot, also at level 9.
        let chain_broken = listing.as_ref().and_then(|l| crate::restore::check_chain(l).err());
        let checked_now = asked == Asked::Now;
        let unanswered = asked == Asked::NotWhileUnanswered;
        let listed_ok = listed.is_ok();
        // A store that does not answer is not probed now: the next open checks it.
        let fencing = match &listed {
            Ok(_) => block_on(check_fencing(
                store.as_ref(),
                &config.replica_location(),
                config.allow_unfenced,
            ))?,
            Err(_) => Fencing::Unchecked,
        };
        let replica_seen = match &listed {
            Ok(newest) if checked_now => ReplicaSeen::Listed(newest.as_ref().map(|f| f.max_txid)),
            Ok(newest) => ReplicaSeen::Remembered(newest.as_ref().map(|f| f.max_txid)),
            Err(_) => ReplicaSeen::Unknown,
        };
        let replica_newest = match listed {
            Ok(newest) => newest,
            // A restart during a store outage must not lock the application out of its
            // own database: continue from local state, upload once the store is back
            // (conditional creates still stop a second primary). So also for a store
            // that refuses (a file:// replica that says "Permission denied", a 403) when
            // this database has replicated there before: every open of a connection per
            // request failed for as long as it lasted, and no process could take over
            // (a tester). A first replication is refused: that is a setting to fix.
            Err(e) if (e.is_transient() || saved_for_this.is_some()) && saved.is_some() => {
                if unanswered {
                    tracing::debug!(db = %db_path.display(), "continuing from local state: {e}");
                } else {
                    replica_check::unanswered(check_key.clone(), Instant::now());
                    tracing::warn!(db = %db_path.display(), "replica unreachable at open, continuing from local state: {e}");
                }
                None
            }
            Err(e) => return Err(format!("listing replica {}: {e}", store.describe())),
        };
        let replica_max = replica_newest.as_ref().map(|f| f.max_txid);

        let records = HandoffDir::new(&config.staging_dir, config.file_modes);
        let local = Local {
            db_path,
            config: &config,
            store: &store,
            staging: &staging,
            state_file: &state_file,
            records: &records,
        };
        let Reconciled {
            state,
            mut next_txid,
            mut capture,
            mut handoff_consumed,
            queue,
            mut snapshot_needed,
            mut chain_start_owed,
        } = reconcile(&local, saved, replica_seen, &wal_index, snapshotter.as_ref())?;
        if let Some(why) = chain_broken {
            let reason = format!("replica {} {why}: no restore reaches its newest TXID", store.describe());
            tracing::warn!(db = %db_path.display(), %reason, "taking a snapshot, also stored at level 9");
            snapshot_needed.get_or_insert(reason);
            chain_start_owed = true;
        }
        let encryption_status = config
            .encryption
            .as_ref()
            .map(|e| Arc::new(crate::primary::encryption::EncryptionStatus::new(e.recipients().len())));
        if let Some(newest) = replica_newest.as_ref().filter(|_| checked_now) {
            use crate::primary::encryption::{check_replica, Continuation};
            if check_replica(store.as_ref(), newest, config.encryption.as_deref())?
                == Continuation::SnapshotOverPlaintext
            {
                snapshot_needed.get_or_insert_with(|| "encryption turned on over a plaintext replica".to_string());
                encryption_status.iter().for_each(|s| s.mark_plaintext_history());
            }
        }
        // The newest file opens with our key; so must every file a restore or the next
        // compaction reads (`needed_files.rs`). Checked when the store was listed now.
        // Keyed primaries only: a primary without a key is refused above by an encrypted
        // newest file, and older encrypted files under a plaintext newest one come only
        // from another writer's takeover; reading every needed header at each keyless open
        // would cost every plaintext replica a GET per file for that.
        if let (Some(encryption), Some(listing)) = (config.encryption.as_deref(), listing.as_ref()) {
            let ladder = config.compaction.as_ref().map_or(0, |c| c.levels.len());
            let needed = crate::primary::needed_files::needed(listing, ladder);
            crate::primary::needed_files::check_key_opens(store.as_ref(), &needed, encryption)?;
        }
        // What the check found, when there is nothing to act on: a replica not ahead
        // (that snapshots or fails) and encrypted as expected, or an empty one this
        // database now starts. What a snapshot is owed for is checked again.
        let passed = match saved_at {
            Some(at) => snapshot_needed.is_none().then_some(at),
            None => replica_max.is_none().then_some((state.node_id, 0)),
        };
        if let Some((node, txid)) = passed.filter(|_| checked_now && listed_ok) {
            replica_check::passed(check_key.clone(), node, txid, replica_newest.clone(), Instant::now());
        }
        prepare_db(db_path)?;
        if snapshot_needed.is_some() {
            let mut wal = WalFile::open(db_path).map_err(|e| e.to_string())?;
            capture.skip_to_end(&mut wal).map_err(|e| e.to_string())?;
            // The snapshot covers whatever the records held.
            handoff_consumed = records.last_seq().map_err(|e| e.to_string())?;
        }
        let staged_txid = next_txid - 1 - queue.commits();
        if snapshot_needed.is_some() {
            // The last process dropped commits for a snapshot and handed their TXIDs out:
            // the snapshot spans them (`Shared::drop_pending`).
            next_txid = next_txid.max(state.numbered_txid + 1);
        }
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
                held: Batch::default(),
                origin: None,
                stage_file_pending: false,
                snapshot_needed,
                last_snapshot_txid: 0,
                snapshot_epoch: 0,
                staged_txid,
                uploaded_txid: replica_max.unwrap_or(0).max(uploaded_before_open).min(staged_txid),
                fatal: None,
                last_error: None,
                failures: 0,
                warned: Vec::new(),
                sync_requested: true,
                closing: false,
                snapshots: 0,
                uploads: 0,
                uploaded_bytes: 0,
                last_upload_ms: None,
                oldest_pending_ms: None,
                last_lag_ms: None,
                // The counters and last values an alert reads, there from the open (0 and
                // null) rather than only after the first failure: README's alert table
                // names `compaction.errors` and `compaction.last_error`, and a tester's
                // check of them found no such keys on a healthy primary.
                compaction: json!({
                    "compactions": 0,
                    "errors": 0,
                    "last_error": null,
                    "gaps": 0,
                    "last_gap": null,
                }),
                unreadable: Default::default(),
                base_not_ours: None,
                compaction_error_step: None,
                replica_page_size: replica_check::page_size_through(&check_key, uploaded_before_open),
                reseed_stored: None,
                chain_start_owed,
                own_wal_deletion: None,
                fresh_header: None,
                sync_commit_timeouts: 0,
                sync_commit_error: None,
                staging_failure: None,
                uploads_failing: false,
                in_stage: (0, 0),
            }),
            config,
            store,
            fencing,
            staging,
            state_file,
            records,
            snapshotter,
            stage_lock: Mutex::new(()),
            progress: Condvar::new(),
            worker_job: OnceLock::new(),
            requests_quiet: Default::default(),
            request_watch: Mutex::new(None),
            snapshot_locking: Mutex::new(false),
            snapshot_unlocked: Condvar::new(),
            refusing: AtomicBool::new(false),
            outside_wal: AtomicBool::new(false),
            frames_pending: AtomicBool::new(false),
            level_cache,
            compaction_job: OnceLock::new(),
            compaction_stop: Arc::default(),
            sync_stats: SyncStats::default(),
            encryption_status,
            wal_index,
            took_over: AtomicBool::new(false),
            persisted: Mutex::new(None),
            replica_check: check_key,
        });
        primary
            .save_state_at_open(&state)
            .map_err(|e| format!("saving replication state: {e}"))?;
        primary.snapshot_while_opening();
        primary.start_jobs();
        Ok(primary)
    }
}

/// The largest database (file and WAL) whose first snapshot is taken during open rather
/// than on the engine: a copy of this much takes well under a second.
const OPEN_SNAPSHOT_MAX_BYTES: u64 = 16 << 20;

impl Primary {
    /// The state file names our node id from the first open on. Commits resumed from
    /// the WAL are queued, not staged: the saved position stays where they start.
    fn save_state_at_open(&self, state: &SavedState) -> io::Result<()> {
        let mut shared = self.lock();
        if resumed_a_clean_close_unchanged(state, &shared) {
            // The file already says where capture stands, durably: the clean close
            // (the database as its checkpoint left it, no WAL since). Saving the
            // "ended, nothing after" position instead is two fsyncs at every open of
            // a connection per request, and says less: it drops the database file's
            // identity, which a restart before anything is written checks.
            self.adopt_persisted(state.clone());
            Ok(())
        } else if shared.queue.is_empty() {
            let saved = self.save_state(&shared, None);
            // The state now says where capture stands: restarts may hand off batches.
            if saved.is_ok() && shared.snapshot_needed.is_none() {
                shared.origin = shared.capture.position().filter(|p| !p.ended);
            }
            saved
        } else {
            self.persist(&SavedState {
                stored_for: None, // stamped by `persist`
                numbered_txid: shared.numbered_past(shared.staged_txid),
                node_id: self.node_id,
                txid: shared.staged_txid,
                wal: state.wal.clone(),
                closed_clean: None,
                handoff_seq: state.handoff_seq,
                ended_before: state.ended_before.clone(),
                database_left: state.database_left.clone(),
            })
        }
    }

    /// Adds this primary's work to the process's engine.
    fn start_jobs(self: &Arc<Self>) {
        // No thread of its own: the work is the engine's jobs. The first worker turn
        // runs at once (a sync is requested at open).
        let worker = worker::WorkerJob {
            primary: Arc::clone(self),
            pace: Mutex::new(worker::Pace::default()),
        };
        let id = engine().add(Arc::new(worker), Instant::now());
        let _ = self.worker_job.set(id);
        *self.request_watch.lock().unwrap_or_else(|p| p.into_inner()) =
            follower::watch_requests(&self.config.staging_dir, self.config.file_modes, id);
        // The compactor shares the cache opened above rather than opening it again: an
        // open creates, settles and sweeps every level's directory (`LevelCache::open`), and
        // once per open is what a crash's leftovers need.
        if let (Some(ladder), Some(cache)) = (self.config.compaction.clone(), self.level_cache.clone()) {
            let saved = crate::primary::compaction_due::load(&self.config.staging_dir);
            let clock = CompactionClock::resumed(&ladder, now_ms(), saved.as_ref());
            if saved.as_ref() != Some(&clock.saved()) {
                crate::primary::compaction_due::save(&self.config.staging_dir, self.config.file_modes, &clock.saved());
            }
            let first = Instant::now() + Duration::from_millis((clock.next() - now_ms()).max(0) as u64);
            let compactor = Compactor {
                store: Arc::new(crate::storage::Stoppable::new(
                    Arc::clone(&self.store),
                    Arc::clone(&self.compaction_stop),
                )),
                cache,
                config: ladder,
                encoding: self.encoding(),
                encryption: self.config.encryption.clone(),
                encryption_status: self.encryption_status.clone(),
            };
            let job = worker::CompactionJob {
                primary: Arc::clone(self),
                compactor,
                clock: Mutex::new(clock),
            };
            let id = engine().add(Arc::new(job), first);
            let _ = self.compaction_job.set(id);
        }
    }

    /// Takes a needed snapshot of a small database now, before the application's
    /// connection has the file open: SQLite closes the private connection's descriptor
    /// outright then. Taken later, while the application holds its locks, SQLite must
    /// park that descriptor until the application closes (closing it would drop their
    /// locks): one descriptor more for the life of the open (`vfs/private.rs`). A larger
    /// database, or a failed attempt, is left to the worker, as before.
    fn snapshot_while_opening(&self) {
        if self.lock().snapshot_needed.is_none() {
            return;
        }
        let size = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let mut wal = self.db_path.as_os_str().to_owned();
        wal.push("-wal");
        if size(&self.db_path) + size(Path::new(&wal)) > OPEN_SNAPSHOT_MAX_BYTES {
            return;
        }
        let _staging = self.stage_lock.lock().unwrap_or_else(|p| p.into_inner());
        let taken = self.take_snapshot();
        if taken.is_err() {
            self.lock().origin = None;
        }
        match taken {
            Ok(()) => {}
            Err(StageError::SnapshotWaiting) => {
                tracing::debug!(db = %self.db_path.display(), "snapshot at open waits for a writer: left to the worker")
            }
            Err(StageError::Failed(e)) => {
                tracing::debug!(db = %self.db_path.display(), "snapshot at open left to the worker: {e}")
            }
        }
    }
}

/// Whether this open resumed a saved clean close and found nothing after it: no WAL
/// generation followed, no hand-off consumed, no snapshot owed, nothing queued.
fn resumed_a_clean_close_unchanged(saved: &SavedState, shared: &Shared) -> bool {
    saved.closed_clean.is_some()
        && saved.wal.is_none()
        && shared.queue.is_empty()
        && shared.snapshot_needed.is_none()
        && shared.capture.ended()
        && shared.staged_txid == saved.txid
        && shared.handoff_consumed == saved.handoff_seq
}

/// Whether an open asked the store for the replica's newest file.
#[derive(Debug, PartialEq, Eq)]
enum Asked {
    Now,
    /// This process checked it within the minute (`replica_check.rs`).
    Recently,
    /// It did not answer an open of this process within the minute: not asked again at
    /// each open (a connection per request would wait for it each time).
    NotWhileUnanswered,
}

/// The replica's newest file for an open with saved state `saved_at` (node, TXID): what
/// this process's recent check found (which had found the chain whole: a broken one
/// owes a snapshot, and a check that owes one is not remembered), or a listing now (then
/// also every level's files).
fn newest_for_open(
    store: &dyn ReplicaStore,
    key: &CheckKey,
    saved_at: Option<(u64, u64)>,
    db_path: &Path,
) -> (
    Result<Option<LtxObject>, crate::storage::Error>,
    Asked,
    Option<crate::restore::Listing>,
) {
    let now = Instant::now();
    let listed_now = || match replica_newest(store) {
        Ok((newest, listing)) => (Ok(newest), Asked::Now, Some(listing)),
        Err(e) => (Err(e), Asked::Now, None),
    };
    let Some((node, txid)) = saved_at else {
        return listed_now();
    };
    if let Some(newest) = replica_check::recent(key, node, txid, now) {
        tracing::debug!(db = %db_path.display(), "replica not listed at open: this process checked it within {:?}", replica_check::RECHECK_AFTER);
        return (Ok(newest), Asked::Recently, None);
    }
    if replica_check::recently_unanswered(key, now) {
        let not_asked = crate::storage::Error::Transient {
            store: store.describe().to_string(),
            op: "LIST",
            key: String::new(),
            message: format!(
                "not asked: it did not answer an open of this process within {:?}",
                replica_check::RECHECK_AFTER
            ),
        };
        return (Err(not_asked), Asked::NotWhileUnanswered, None);
    }
    listed_now()
}

/// The replica's newest file: the highest TXID, from the highest level that reaches it
/// (one LIST per level, all at once). The encryption check at open reads its header.
/// Each LIST is retried briefly: a dropped connection must not fail the application's
/// open of a database that has never been replicated from here (with saved state, a
/// store that stays down is tolerated by the caller).
fn replica_newest(
    store: &dyn ReplicaStore,
) -> Result<(Option<LtxObject>, crate::restore::Listing), crate::storage::Error> {
    let policy = crate::storage::RetryPolicy::at_open();
    let levels = crate::restore::EVERY_LEVEL.map(|level| crate::storage::retry(move || store.list(level), &policy));
    let all = futures::future::try_join_all(levels);
    let lists = crate::storage::while_application_waits(store, "LIST", all)?;
    let mut newest: Option<&LtxObject> = None;
    for f in lists.iter().flatten() {
        if newest.is_none_or(|n| f.max_txid >= n.max_txid) {
            newest = Some(f);
        }
    }
    let newest = newest.cloned();
    // The same lists as a restore's listing, for the check of the files a restore needs.
    let mut by_level = crate::restore::EVERY_LEVEL
        .into_iter()
        .zip(lists)
        .collect::<std::collections::HashMap<_, _>>();
    let listing = crate::restore::Listing {
        snapshots: by_level.remove(&crate::restore::SNAPSHOT_LEVEL).unwrap_or_default(),
        incremental: crate::restore::LEVELS
            .iter()
            .map(|l| by_level.remove(l).unwrap_or_default())
            .collect(),
    };
    Ok((newest, listing))
}
