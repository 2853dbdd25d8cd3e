//! Reconciling at open: the saved state, the replica's newest TXID, the hand-off records
//! and the live WAL decide where capture goes on, which TXID comes next, and whether a
//! snapshot is owed (`Primary::open` runs it before anything of the primary exists).

use super::*;
use crate::provenance::ReplicaNote;

mod resume;
pub(super) use resume::read_wal_header;
use resume::{counted_at_open, resume_capture};

/// What an open works with, read-only.
pub(super) struct Local<'a> {
    pub db_path: &'a Path,
    pub config: &'a Config,
    pub store: &'a Arc<dyn ReplicaStore>,
    pub staging: &'a Staging,
    pub state_file: &'a StateFile,
    pub records: &'a HandoffDir,
}

/// Where an open goes on from.
pub(super) struct Reconciled {
    /// The state resumed (or the first one, with this primary's node id).
    pub state: SavedState,
    pub next_txid: u64,
    pub capture: Capture,
    pub handoff_consumed: u64,
    /// Commits read from the WAL and the records after the saved state, not staged.
    pub queue: Batch,
    pub snapshot_needed: Option<String>,
    /// The replica lacks TXIDs the saved state counts as replicated: the snapshot also
    /// goes to level 9, where restores can start from it.
    pub chain_start_owed: bool,
}

/// What the open learned of the replica's newest TXID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReplicaSeen {
    /// Listed now: its newest TXID, if any.
    Listed(Option<u64>),
    /// What this process found within the last minute (`replica_check.rs`): enough to
    /// see a replica ahead, but perhaps behind what other processes stored since.
    Remembered(Option<u64>),
    /// The store did not answer: the open goes on from the saved state.
    Unknown,
}

impl ReplicaSeen {
    fn max(self) -> Option<u64> {
        match self {
            ReplicaSeen::Listed(max) | ReplicaSeen::Remembered(max) => max,
            ReplicaSeen::Unknown => None,
        }
    }
}

/// The first replication, a database restored from its replica, a takeover of another
/// writer's replica (`takeover=1`), a refusal, or a restart from saved state.
pub(super) fn reconcile(
    local: &Local,
    saved: Option<SavedState>,
    replica: ReplicaSeen,
    wal_index: &WalIndexView,
    snapshotter: &dyn Snapshotter,
) -> Result<Reconciled, String> {
    let db_exists = fs::metadata(local.db_path).map(|m| m.len() > 0).unwrap_or(false);
    // A new node id and nothing to resume: a snapshot first.
    let fresh = |txid: u64, reason: String| Reconciled {
        state: SavedState {
            node_id: new_node_id(),
            txid,
            ..Default::default()
        },
        next_txid: txid + 1,
        capture: Capture::new(),
        handoff_consumed: 0,
        queue: Batch::default(),
        snapshot_needed: Some(reason),
        chain_start_owed: false,
    };
    match (saved, replica.max()) {
        (None, None) => Ok(fresh(0, "first replication of this database".into())),
        (None, Some(max)) if !db_exists => restore_from_replica(local, max, false),
        (None, Some(max)) if local.config.takeover => {
            tracing::warn!(db = %local.db_path.display(), txid = max, "takeover: continuing a replica another writer made");
            Ok(fresh(max, format!("takeover of a replica at TXID {max}")))
        }
        (None, Some(max)) => {
            let note = ReplicaNote::read(local.db_path);
            let why = match &note {
                Some(note) => note.mismatch(local.db_path, local.store.describe(), max),
                None => Some("nothing shows this database is that replica's".into()),
            };
            let Some(why) = why else {
                return continue_noted(local, max, replica, wal_index, snapshotter);
            };
            // Removing the database is no advice while another process has it open: it
            // may replicate it from a `-litestream` directory removed under it (which it
            // makes again within seconds: `LeaderLock::keep`).
            if let Some(pid) = crate::restore::open_elsewhere(local.db_path) {
                return Err(format!(
                    "replica {} already holds TXIDs up to {max}, and this process has no replication state \
                     for the database ({why}), while process {} has it open: if its {} directory was just \
                     removed, the process replicating the database makes it again within seconds; open again \
                     then. Do not remove or replace the database while it is open",
                    local.store.describe(),
                    if pid > 0 {
                        pid.to_string()
                    } else {
                        "another".to_string()
                    },
                    crate::primary::shared_staging::lock_dir(local.db_path).display()
                ));
            }
            if let Some(moved) = state_left_in_the_default_staging(local, max) {
                return Err(moved);
            }
            Err(format!(
                "replica {} already holds TXIDs up to {max} written by another database: {why}. If \
                 this database is the one that wrote it (its {} directory was lost, say after a \
                 crash), open with takeover=1: the database as it is continues the replica with a full \
                 snapshot at TXID {}, and keeps commits the replica may lack. Otherwise use another \
                 replica path, or move the local database aside to restore it from this replica \
                 (commits only the local database holds are then not in it)",
                local.store.describe(),
                crate::primary::shared_staging::lock_dir(local.db_path).display(),
                max + 1
            ))
        }
        (Some(saved), _) if !db_exists => {
            forget_a_missing_database(local, &saved, replica)?;
            reconcile(local, None, replica, wal_index, snapshotter)
        }
        (Some(saved), _) => restart_from_saved(local, saved, replica, wal_index, snapshotter),
    }
}

/// The database is missing or empty but its staging state is still there: it was
/// deleted (`rm app.db*` leaves the `app.db-litestream` directory) or lost. The saved
/// state describes a file that no longer exists; resuming from it made the new, empty
/// database the replica's next TXID, so that the latest restore was empty (found by hand
/// 2026-12-06). The state is dropped and the open goes on as without one: the replica is
/// restored, or a first replication begins when it holds nothing. Staged files the
/// replica does not hold are the deleted database's unstored commits, which exist
/// nowhere else: they are moved aside, not deleted.
fn forget_a_missing_database(local: &Local, saved: &SavedState, replica: ReplicaSeen) -> Result<(), String> {
    if replica == ReplicaSeen::Unknown {
        return Err(format!(
            "the database {} is missing or empty and its replica {} did not answer: an empty database is \
             not made over a replica that may hold it; open it again once the store answers",
            local.db_path.display(),
            local.store.describe()
        ));
    }
    let stored = replica.max().unwrap_or(0);
    let staged = local.staging.list().map_err(|e| e.to_string())?;
    let (unstored, stored_files): (Vec<_>, Vec<_>) = staged.into_iter().partition(|f| f.max_txid > stored);
    let aside = match unstored.first().and_then(|f| f.path.parent()) {
        Some(dir) => {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let aside = dir.join(format!("unstored-{secs}"));
            local
                .config
                .file_modes
                .create_dir_all(&aside)
                .map_err(|e| format!("{}: {e}", aside.display()))?;
            for file in &unstored {
                let to = aside.join(file.path.file_name().unwrap_or_default());
                fs::rename(&file.path, &to).map_err(|e| format!("moving {} aside: {e}", file.path.display()))?;
            }
            Some(aside)
        }
        None => None,
    };
    for file in &stored_files {
        local.staging.remove(file).map_err(|e| e.to_string())?;
    }
    tracing::warn!(
        db = %local.db_path.display(),
        "the database is missing or empty, but its staging state (TXID {}) is still there: it was deleted; \
         going on as for a new machine (restored from the replica when the replica holds it){}",
        saved.txid,
        match (&aside, unstored.first(), unstored.last()) {
            (Some(aside), Some(first), Some(last)) => format!(
                "; TXIDs {}-{} of the deleted database never reached the replica and are kept in {}",
                first.min_txid,
                last.max_txid,
                aside.display()
            ),
            _ => String::new(),
        }
    );
    Ok(())
}

/// No staging state, and a database noted as the replica's newest state (restored from
/// it, or closed cleanly beside it, and unchanged since: `provenance.rs`): it continues
/// the replica as after a clean close of its own. A WAL written since without us is the
/// discontinuity a clean close's restart already finds, and takes a snapshot.
fn continue_noted(
    local: &Local,
    max: u64,
    replica: ReplicaSeen,
    wal_index: &WalIndexView,
    snapshotter: &dyn Snapshotter,
) -> Result<Reconciled, String> {
    tracing::info!(
        db = %local.db_path.display(),
        txid = max,
        "no staging state, and the database is the replica's newest state (noted when it was restored or closed): continuing the replica"
    );
    let saved = SavedState {
        stored_for: None, // stamped by `persist`
        numbered_txid: 0,
        node_id: new_node_id(),
        txid: max,
        wal: None,
        closed_clean: FileIdentity::pinned(local.db_path).ok(),
        // Records left without their state are not this database's next commits.
        handoff_seq: local.records.last_seq().map_err(|e| e.to_string())?,
        ended_before: None,
        database_left: None,
    };
    restart_from_saved(local, saved, replica, wal_index, snapshotter)
}

/// No database, a replica: the database is restored from it and continues it. With
/// `replace`, over the database and WAL found, which lost commits the replica holds
/// (`lost_commits.rs`, which kept a copy of them).
pub(super) fn restore_from_replica(local: &Local, max: u64, replace: bool) -> Result<Reconciled, String> {
    // A warning, with the absolute path: a relative path opened from another working
    // directory silently makes a second copy here, which then replicates.
    if !replace {
        tracing::warn!(
        db = %local.db_path.display(),
        txid = max,
        "the database {} is missing or empty: restoring it from its replica {} (TXID {max}), then replicating it there",
        std::path::absolute(local.db_path).unwrap_or_else(|_| local.db_path.to_path_buf()).display(),
            local.store.describe()
        );
    }
    // An empty file holds nothing to keep: what `sqlite3 app.db .tables` leaves on a new
    // machine, or a `touch` in an entry point. The restore replaces it (and refuses if a
    // connection holds it open); a WAL beside it with frames is not ours to drop.
    let empty_file = fs::metadata(local.db_path).is_ok_and(|m| m.len() == 0);
    let mut wal = local.db_path.as_os_str().to_owned();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    let wal_bytes = fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    if empty_file && wal_bytes > 0 && !replace {
        return Err(format!(
            "{} is empty but {} holds {wal_bytes} bytes; the replica is not restored over them (move \
             both aside to restore the database from the replica)",
            local.db_path.display(),
            wal.display(),
        ));
    }
    let options = crate::restore::RestoreOptions {
        key: local.config.encryption.as_ref().map(|e| Arc::new(e.key().clone())),
        overwrite: empty_file || replace,
        ..Default::default()
    };
    let pos = crate::restore::restore(
        Arc::clone(local.store),
        local.db_path,
        crate::restore::Target::Latest,
        &options,
    )
    .map(|r| r.position)
    .map_err(|e| {
        format!(
            "restoring {} from {}: {e}",
            local.db_path.display(),
            local.store.describe()
        )
    })?;
    // Records left beside a database that no longer exists belong to it.
    let handoff_consumed = local.records.last_seq().map_err(|e| e.to_string())?;
    let state = SavedState {
        stored_for: None, // stamped by `persist`
        numbered_txid: 0,
        node_id: new_node_id(),
        txid: pos.txid,
        wal: None,
        closed_clean: FileIdentity::pinned(local.db_path).ok(),
        handoff_seq: handoff_consumed,
        ended_before: None,
        database_left: None,
    };
    local
        .state_file
        .save(&state)
        .map_err(|e| format!("saving replication state: {e}"))?;
    // The restored file is what the WAL was left empty with, as after a clean close.
    let mut capture = Capture::new();
    capture.left_database(state.closed_clean.clone());
    Ok(Reconciled {
        state,
        next_txid: pos.txid + 1,
        capture,
        handoff_consumed,
        queue: Batch::default(),
        snapshot_needed: None,
        chain_start_owed: false,
    })
}

/// A restart (or a takeover by a process of this machine) from saved state: refused when
/// another primary wrote the replica past it, a snapshot when the replica is ahead
/// anyway or misses TXIDs the saved state counts as replicated, else capture resumes
/// through the records and the WAL.
fn restart_from_saved(
    local: &Local,
    saved: SavedState,
    replica: ReplicaSeen,
    wal_index: &WalIndexView,
    snapshotter: &dyn Snapshotter,
) -> Result<Reconciled, String> {
    let saved = unfinished_stage::finished_by_its_staged_files(saved, local.records, local.staging, local.db_path);
    let replica_max = replica.max();
    let ahead = replica_max.filter(|max| *max > saved.txid);
    if let Some(max) = ahead {
        let writer = latest_node_id(local.store.as_ref(), max);
        if writer != Some(saved.node_id) && !local.config.takeover {
            return Err(format!(
                "replica {} is at TXID {max}, ahead of this database's TXID {}, and was written by \
                 another primary; refusing to write to it (two primaries on one replica; if that \
                 primary is gone for good, open with takeover=1)",
                local.store.describe(),
                saved.txid
            ));
        }
    }
    let mut staged = Vec::new();
    for file in local.staging.list().map_err(|e| e.to_string())? {
        if file.max_txid > saved.txid {
            local.staging.remove(&file).map_err(|e| e.to_string())?;
        } else {
            staged.push(file);
        }
    }
    let missing = match replica {
        ReplicaSeen::Listed(max) if ahead.is_none() => missing_txids(max.unwrap_or(0), &staged, saved.txid),
        _ => None,
    };
    let mut reconciled = Reconciled {
        next_txid: saved.txid + 1,
        state: saved,
        capture: Capture::new(),
        handoff_consumed: 0,
        queue: Batch::default(),
        snapshot_needed: None,
        chain_start_owed: false,
    };
    if let Some(max) = ahead {
        reconciled.snapshot_needed = Some(format!(
            "local state (TXID {}) is older than the replica ({max})",
            reconciled.state.txid
        ));
        // The replica holds every TXID these files are numbered with, written by whoever
        // took it past this state: uploaded, they put a second history under the same
        // TXIDs (a settings tester: staging= moved away with files not yet uploaded, a
        // takeover, then the old staging again: `-txid` restores gave states out of
        // order, Litestream's failed to decode). The snapshot holds what they did.
        if !staged.is_empty() {
            tracing::warn!(
                db = %local.db_path.display(),
                files = staged.len(),
                "dropping staged files of TXIDs the replica already holds from another history (TXID {max} now)"
            );
        }
        for file in &staged {
            local.staging.remove(file).map_err(|e| e.to_string())?;
        }
        reconciled.next_txid = max + 1;
        return Ok(reconciled);
    }
    if let Some(reason) = staged_over_another_history(local, reconciled.state.node_id, &staged, replica_max) {
        return restart_chain(local, &staged, reconciled, reason);
    }
    let encryption = local.config.encryption.as_deref();
    if let Some(reason) = crate::primary::encryption::staged_to_another_key(&staged, encryption) {
        return restart_chain(local, &staged, reconciled, reason);
    }
    if let Some((from, to)) = missing {
        // The next file would start a chain no restore can follow: this database was
        // replicated elsewhere (another replica= now, or a process naming another one
        // took over), or the replica was emptied or put back from an older copy. The
        // staged files cannot connect either; the snapshot holds what they did.
        let reason = format!(
            "replica {} lacks TXIDs {from}-{to} this database already replicated (replica= changed, \
             or the replica was emptied or put back from an older copy)",
            local.store.describe()
        );
        return restart_chain(local, &staged, reconciled, reason);
    }
    let Reconciled {
        state: saved,
        capture,
        handoff_consumed,
        queue,
        next_txid,
        snapshot_needed,
        ..
    } = &mut reconciled;
    let mut file = WalFile::open(local.db_path).map_err(|e| e.to_string())?;
    let counted = counted_at_open(wal_index, snapshotter, local.db_path, saved, &mut file);
    let mut wal = CountedWal::cut(&mut file, counted);
    let resumed = resume_capture(capture, handoff_consumed, saved, local.db_path, &mut wal, local.records)
        .map_err(|e| e.to_string())?;
    match resumed {
        Ok(txns) => {
            for txn in txns {
                queue.push(*next_txid, txn, &mut drop);
                *next_txid += 1;
            }
        }
        Err(Discontinuity(reason)) if reason == super::lost_commits::LOST_FRAMES && !local.config.takeover => {
            let saved_txid = saved.txid;
            // The WAL's descriptor is closed before the restore replaces the files
            // (`wal`, borrowing it, is not used past this point).
            drop(file);
            if super::lost_commits::bring_forward(local, saved_txid, replica, &staged)? {
                return restore_from_replica(local, saved_txid, true);
            }
            *snapshot_needed = Some(reason);
        }
        Err(Discontinuity(reason)) if reason == SNAPSHOT_OWED => {
            // Expected after an outage, and said with a warning when the commits were
            // dropped: at every open of a connection per request it was noise.
            tracing::info!(db = %local.db_path.display(), "{reason}; taking it");
            *snapshot_needed = Some(reason);
        }
        Err(Discontinuity(reason)) => {
            // Not the first replication: something the saved state and the records
            // cannot connect, worth a warning like any other.
            tracing::warn!(db = %local.db_path.display(), %reason, "resuming from the saved state failed; taking a snapshot");
            *snapshot_needed = Some(reason);
        }
    }
    Ok(reconciled)
}

/// Why a restart takes a snapshot when the state it resumes from was saved while one was
/// owed: the last process dropped commits (staging full or failing) or met a break in the
/// WAL, and said so with a warning then.
const SNAPSHOT_OWED: &str = "the last process owed a snapshot of the database and had not stored it";

/// The first run of TXIDs up to `txid` that neither the replica (holding up to
/// `replica_max`) nor the staged files (in TXID order) hold, if any.
fn missing_txids(replica_max: u64, staged: &[StagedFile], txid: u64) -> Option<(u64, u64)> {
    let mut reached = replica_max;
    for file in staged {
        if file.min_txid > reached + 1 {
            return Some((reached + 1, file.min_txid - 1));
        }
        reached = reached.max(file.max_txid);
    }
    (reached < txid).then_some((reached + 1, txid))
}

/// The staged files cannot connect to what the replica holds: dropped, and a snapshot
/// (also at level 9) starts a chain restores can follow, for `reason`.
fn restart_chain(
    local: &Local,
    staged: &[StagedFile],
    mut reconciled: Reconciled,
    reason: String,
) -> Result<Reconciled, String> {
    tracing::warn!(db = %local.db_path.display(), %reason, "taking a snapshot");
    for file in staged {
        local.staging.remove(file).map_err(|e| e.to_string())?;
    }
    reconciled.snapshot_needed = Some(reason);
    reconciled.chain_start_owed = true;
    Ok(reconciled)
}

/// With `staging=` naming another directory than the default `<db>-litestream/`, and
/// the default one holding the database's replication state: the staging was moved while
/// it held what the replica lacks. Said as such, with what to do; before, the open blamed
/// "another database" and advised `takeover=1`, which renumbers the history (a settings
/// tester), where one open with the old staging uploads everything.
fn state_left_in_the_default_staging(local: &Local, replica_max: u64) -> Option<String> {
    let default = crate::config::default_staging_dir(local.db_path);
    if std::path::absolute(&default).ok()? == std::path::absolute(&local.config.staging_dir).ok()? {
        return None;
    }
    let left = StateFile::new(&default, local.config.file_modes).load().ok()??;
    Some(format!(
        "replica {} holds TXIDs up to {replica_max}, and this database's replication state is in {} \
         (TXID {}), not in the staging directory given ({}): it was moved while it held what the replica \
         may lack. Open once with the staging it was written with (without staging=, or staging={}) so that \
         it goes up; move staging= only once litestream_status() shows staged_bytes 0 and the database is \
         closed",
        local.store.describe(),
        default.display(),
        left.txid,
        local.config.staging_dir.display(),
        default.display(),
    ))
}

/// Why the staged files must not go up, when some are numbered with TXIDs the replica
/// already holds and its newest file is not this node's: normally a staged file at or
/// below the replica's newest TXID is one uploaded just before a crash removed it (the
/// same file, this node's). Another node's there means the replica went on under
/// another history meanwhile (a settings tester: `staging=` moved away with files not
/// yet uploaded, a `takeover=1` that renumbered from a snapshot, then the old staging
/// again: uploaded, its files put a second history under the same TXIDs; `-txid`
/// restores gave states out of order and Litestream's failed to decode a page).
fn staged_over_another_history(
    local: &Local,
    node_id: u64,
    staged: &[StagedFile],
    replica_max: Option<u64>,
) -> Option<String> {
    let max = replica_max?;
    let first = staged.iter().map(|f| f.min_txid).min().filter(|min| *min <= max)?;
    let writer = latest_node_id(local.store.as_ref(), max);
    if writer == Some(node_id) {
        return None;
    }
    let last = staged.iter().map(|f| f.max_txid).max().unwrap_or(first);
    Some(format!(
        "staged TXIDs {first}-{last} are not stored, and replica {} holds TXIDs up to {max} from another \
         primary (node {}): they are dropped, and a snapshot of the database as it is continues the replica",
        local.store.describe(),
        writer.map_or("unknown".to_string(), |n| format!("{n:016x}")),
    ))
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
