//! Opening replication for a database: reconcile the staging state with the replica
//! (restoring a missing database), and resume capture from the saved position through
//! the hand-off records and the WAL (`follow.rs`), or plan a snapshot.

use super::super::compaction_turn::CompactionClock;
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
        let saved = state_file
            .load()
            .map_err(|e| format!("reading replication state: {e}"))?;
        let check_key = CheckKey::new(db_path, &config);
        let saved_at = saved.as_ref().map(|s| (s.node_id, s.txid));
        let (listed, asked) = newest_for_open(store.as_ref(), &check_key, saved_at, db_path);
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
        let replica_newest = match listed {
            Ok(newest) => newest,
            // A restart during a store outage must not lock the application out of its
            // own database: continue from local state, upload once the store is back
            // (conditional creates still stop a second primary).
            Err(e) if e.is_transient() && saved.is_some() => {
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
                let key = config.encryption.as_ref().map(|e| e.key());
                let pos = crate::restore::restore_latest_with_key(&store, db_path, key)
                    .map_err(|e| format!("restoring {} from {}: {e}", db_path.display(), store.describe()))?;
                // Records left beside a database that no longer exists belong to it.
                handoff_consumed = records.last_seq().map_err(|e| e.to_string())?;
                let state = SavedState {
                    node_id: new_node_id(),
                    txid: pos.txid,
                    wal: None,
                    closed_clean: FileIdentity::of(db_path).ok(),
                    handoff_seq: handoff_consumed,
                    ended_before: None,
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
                let saved = unfinished_stage::finished_by_its_staged_files(saved, &records, &staging, db_path);
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
                    let mut file = WalFile::open(db_path).map_err(|e| e.to_string())?;
                    let counted = counted_at_open(&wal_index, snapshotter.as_ref(), db_path, &saved, &mut file);
                    let mut wal = CountedWal::cut(&mut file, counted);
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
                        Err(Discontinuity(reason)) => {
                            // Not the first replication: something the saved state and the
                            // records cannot connect, worth a warning like any other.
                            tracing::warn!(db = %db_path.display(), %reason, "resuming from the saved state failed; taking a snapshot");
                            snapshot_needed = Some(reason);
                        }
                    }
                }
                (saved, next)
            }
        };
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
                sync_requested: true,
                closing: false,
                snapshots: 0,
                uploads: 0,
                uploaded_bytes: 0,
                last_upload_ms: None,
                oldest_pending_ms: None,
                last_lag_ms: None,
                compaction: json!({}),
                replica_page_size: replica_check::page_size_through(&check_key, uploaded_before_open),
                reseed_stored: None,
                own_wal_deletion: None,
                fresh_header: None,
                sync_commit_timeouts: 0,
                sync_commit_error: None,
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
            snapshot_locking: Mutex::new(false),
            snapshot_unlocked: Condvar::new(),
            refusing: AtomicBool::new(false),
            outside_wal: AtomicBool::new(false),
            frames_pending: AtomicBool::new(false),
            level_cache,
            compaction_job: OnceLock::new(),
            sync_stats: SyncStats::default(),
            encryption_status,
            wal_index,
            took_over: AtomicBool::new(false),
            persisted: Mutex::new(None),
            replica_check: check_key,
        });
        // The state file names our node id from the first open on. Commits resumed from
        // the WAL are queued, not staged: the saved position stays where they start.
        {
            let mut shared = primary.lock();
            if resumed_a_clean_close_unchanged(&state, &shared) {
                // The file already says where capture stands, durably: the clean close
                // (the database as its checkpoint left it, no WAL since). Saving the
                // "ended, nothing after" position instead is two fsyncs at every open of
                // a connection per request, and says less: it drops the database file's
                // identity, which a restart before anything is written checks.
                primary.adopt_persisted(state.clone());
                Ok(())
            } else if shared.queue.is_empty() {
                let saved = primary.save_state(&shared, None);
                // The state now says where capture stands: restarts may hand off batches.
                if saved.is_ok() && shared.snapshot_needed.is_none() {
                    shared.origin = shared.capture.position().filter(|p| !p.ended);
                }
                saved
            } else {
                primary.persist(&SavedState {
                    node_id: primary.node_id,
                    txid: shared.staged_txid,
                    wal: state.wal.clone(),
                    closed_clean: None,
                    handoff_seq: state.handoff_seq,
                    ended_before: state.ended_before.clone(),
                })
            }
        }
        .map_err(|e| format!("saving replication state: {e}"))?;
        primary.snapshot_while_opening();
        // No thread of its own: the work is the engine's jobs. The first worker turn
        // runs at once (a sync is requested at open).
        let worker = worker::WorkerJob {
            primary: Arc::clone(&primary),
            pace: Mutex::new(worker::Pace::default()),
        };
        let id = engine().add(Arc::new(worker), Instant::now());
        let _ = primary.worker_job.set(id);
        // The compactor shares the cache opened above rather than opening it again: an
        // open creates, settles and sweeps every level's directory (`LevelCache::open`), and
        // once per open is what a crash's leftovers need.
        if let (Some(ladder), Some(cache)) = (primary.config.compaction.clone(), primary.level_cache.clone()) {
            let clock = CompactionClock::new(&ladder, now_ms());
            let first = Instant::now() + Duration::from_millis((clock.next() - now_ms()).max(0) as u64);
            let compactor = Compactor {
                store: Arc::clone(&primary.store),
                cache,
                config: ladder,
                encoding: primary.encoding(),
                encryption: primary.config.encryption.clone(),
                encryption_status: primary.encryption_status.clone(),
            };
            let job = worker::CompactionJob {
                primary: Arc::clone(&primary),
                compactor,
                clock: Mutex::new(clock),
            };
            let id = engine().add(Arc::new(job), first);
            let _ = primary.compaction_job.set(id);
        }
        Ok(primary)
    }
}

/// The largest database (file and WAL) whose first snapshot is taken during open rather
/// than on the engine: a copy of this much takes well under a second.
const OPEN_SNAPSHOT_MAX_BYTES: u64 = 16 << 20;

impl Primary {
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

/// Where capture ended the generation the WAL still shows, when the saved position is
/// the one a hand-off record moved capture to and that record's writer died before the
/// WAL write it announced (`SavedState::ended_before`): the live header is that
/// generation's and its frame before that end carries the same running checksum.
fn went_on_before(
    saved: &SavedState,
    position: &WalPosition,
    live: Option<&WalHeader>,
    wal: &mut CountedWal,
) -> io::Result<Option<WalPosition>> {
    let (Some(before), Some(live)) = (saved.ended_before.as_ref(), live) else {
        return Ok(None);
    };
    let before: WalPosition = before.into();
    let moved_by_a_record = position.ended || position.next_frame == 0;
    if !moved_by_a_record || (live.salt1, live.salt2) != (before.salt1, before.salt2) {
        return Ok(None);
    }
    if !position.ended && (live.salt1, live.salt2) == (position.salt1, position.salt2) {
        return Ok(None); // the next generation did reach the file
    }
    let mut probe = Capture::new();
    probe.set_position(&before, *live);
    Ok(probe.verify_position(wal)?.then_some(before))
}

/// Decides how capture continues from saved state at open (a restart or a takeover):
/// from the saved position through the hand-off records and the live WAL, or a
/// [`Discontinuity`] when that cannot be proven to miss nothing.
fn resume_capture(
    capture: &mut Capture,
    consumed: &mut u64,
    saved: &SavedState,
    db_path: &Path,
    wal: &mut CountedWal,
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
    if let Some(before) = went_on_before(saved, &position, live.as_ref(), wal)? {
        // The saved position is where a record moved capture (the start of the next
        // generation, or past a truncation), and the WAL still shows the generation
        // before, as capture had ended it or longer: the record's writer died before the
        // WAL write it announced. Capture goes on in that generation from its end.
        capture.set_position(&before, live.expect("went_on_before reads the live header"));
    } else if position.ended {
        capture.set_position(&position, placeholder_header(&position));
    } else {
        let header = match live.filter(|h| (h.salt1, h.salt2) == salts) {
            Some(h) => Some(h),
            None => recorded_header(records, *consumed, salts)?,
        };
        let Some(header) = header else {
            capture.skip_to_end(wal)?;
            return Ok(Err(Discontinuity(
                "the WAL no longer continues the last captured position".into(),
            )));
        };
        capture.set_position(&position, header);
        // With the wal-index already naming the next generation (a restart whose writer
        // died before the header, under a process that kept the wal-index alive), the
        // cut hides every frame: the saved frame is checked in the file itself.
        let holds = |capture: &mut Capture, wal: &mut CountedWal| -> io::Result<bool> {
            Ok(capture.verify_position(wal)?
                || (wal.counts_another_generation() && capture.verify_position(wal.uncut())?))
        };
        if live.is_some_and(|h| (h.salt1, h.salt2) == salts) && !holds(capture, wal)? {
            // The same salts are not always the same generation: a writer that rewrites
            // the header of a WAL none of whose frames were committed (its last writer
            // died inside a transaction) keeps the salts and may change the checksum
            // seed. Its record, after the saved state, has the generation as it was; the
            // records then carry capture into the live one (multi_process_crash, a
            // takeover right after following such a record).
            let Some(recorded) = recorded_header(records, *consumed, salts)?.filter(|h| Some(*h) != live) else {
                capture.skip_to_end(wal)?;
                return Ok(Err(Discontinuity(
                    "the WAL no longer holds the last captured frame".into(),
                )));
            };
            capture.set_position(&position, recorded);
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

/// The header of generation `salts` as the first record after `consumed` that is a
/// tail or a batch of it holds it.
fn recorded_header(records: &HandoffDir, consumed: u64, salts: (u32, u32)) -> io::Result<Option<WalHeader>> {
    Ok(records.list_after(consumed)?.into_iter().find_map(|r| match r {
        Record::Tail(t) if (t.header.salt1, t.header.salt2) == salts => Some(t.header),
        Record::Batch(b) if (b.header.salt1, b.header.salt2) == salts => Some(b.header),
        _ => None,
    }))
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

/// What capture may take for committed in the live WAL at open: what SQLite's wal-index
/// counts, read through a connection of this process that maps it (a takeover), else
/// through one of our own (the application's connection is still in its open: nothing of
/// ours competes with it), else only up to the saved position. Frames past the count can be
/// a commit whose writer died before SQLite counted it (the next writer reuses the slot).
///
/// A WAL without a header (none, or empty: what a clean close leaves) has nothing to count,
/// and our own connection is not opened for it: that connection is a third of what an open
/// after a clean close costs (a connection per request opens so every time). A header
/// written after this look is a generation neither count names, so `CountedWal::cut`
/// reads none of it either way; the next engine turn reads it with SQLite's count.
fn counted_at_open(
    wal_index: &WalIndexView,
    snapshotter: &dyn Snapshotter,
    db_path: &Path,
    saved: &SavedState,
    live: &mut dyn WalSource,
) -> Option<ShmWal> {
    let counted = wal_index.counted().0.or_else(|| {
        // A failed read is not proof of an empty WAL: ask SQLite as before.
        let has_header = live
            .read_exact_at(0, &mut [0u8; crate::wal::HEADER_SIZE])
            .unwrap_or(true);
        has_header.then(|| snapshotter.wal_index(db_path)).flatten()
    });
    if let Some(counted) = counted {
        return Some(counted);
    }
    saved.wal.as_ref().map(|p| {
        let p: WalPosition = p.into();
        ShmWal {
            salt1: p.salt1,
            salt2: p.salt2,
            max_frame: u32::try_from(p.next_frame).unwrap_or(u32::MAX),
        }
    })
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

pub(super) fn read_wal_header(wal: &mut dyn WalSource) -> io::Result<Option<crate::wal::WalHeader>> {
    let mut raw = [0u8; crate::wal::HEADER_SIZE];
    if !wal.read_exact_at(0, &mut raw)? {
        return Ok(None);
    }
    Ok(crate::wal::WalHeader::parse(&raw).ok())
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
/// this process's recent check found, or a listing now.
fn newest_for_open(
    store: &dyn ReplicaStore,
    key: &CheckKey,
    saved_at: Option<(u64, u64)>,
    db_path: &Path,
) -> (Result<Option<LtxObject>, crate::storage::Error>, Asked) {
    let now = Instant::now();
    let Some((node, txid)) = saved_at else {
        return (replica_newest(store), Asked::Now);
    };
    if let Some(newest) = replica_check::recent(key, node, txid, now) {
        tracing::debug!(db = %db_path.display(), "replica not listed at open: this process checked it within {:?}", replica_check::RECHECK_AFTER);
        return (Ok(newest), Asked::Recently);
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
        return (Err(not_asked), Asked::NotWhileUnanswered);
    }
    (replica_newest(store), Asked::Now)
}

/// The replica's newest file: the highest TXID, from the highest level that reaches it
/// (one LIST per level, all at once). The encryption check at open reads its header.
/// Each LIST is retried briefly: a dropped connection must not fail the application's
/// open of a database that has never been replicated from here (with saved state, a
/// store that stays down is tolerated by the caller).
fn replica_newest(store: &dyn ReplicaStore) -> Result<Option<LtxObject>, crate::storage::Error> {
    let policy = crate::storage::RetryPolicy {
        initial: Duration::from_millis(50),
        max_delay: Duration::from_secs(1),
        max_attempts: Some(5),
        deadline: Some(Duration::from_secs(5)),
    };
    let levels = crate::restore::EVERY_LEVEL.map(|level| crate::storage::retry(move || store.list(level), &policy));
    let all = futures::future::try_join_all(levels);
    let lists = crate::storage::while_application_waits(store, "LIST", all)?;
    let mut newest: Option<LtxObject> = None;
    for f in lists.into_iter().flatten() {
        if newest.as_ref().is_none_or(|n| f.max_txid >= n.max_txid) {
            newest = Some(f);
        }
    }
    Ok(newest)
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
