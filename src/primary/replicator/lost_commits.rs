//! A database that lost commits it had made: after a power loss (SQLite's
//! `synchronous=NORMAL` does not sync the WAL at each commit) or storage that does not
//! keep what it said it flushed, the WAL still has the generation capture saved, but no
//! longer the frames capture had read, staged and uploaded. Those commits are in the
//! replica and the staging directory, and nowhere else.
//!
//! Before, the open took a snapshot of the database as it was found: its older state
//! became the replica's newest TXID (a tester's: empty, after 100 commits each
//! acknowledged by `litestream_sync()`), and compaction then merged the lost TXIDs with
//! it, so within minutes no restore reached them. Now the open brings the database
//! forward instead: the staged files go up first (so the replica holds every commit
//! captured), the database and its WAL are copied aside, and the database is restored
//! from the replica over them. Only the process opening the database first does this:
//! with another process holding it open, the file cannot be replaced under it, and the
//! open takes the snapshot as before, with an error naming the TXIDs to restore.

use super::reconcile::{Local, ReplicaSeen};
use super::*;

/// What resuming says when the WAL's generation is the saved one but the frame capture
/// last read is gone from it (`reconcile/resume.rs`).
pub(super) const LOST_FRAMES: &str = "the WAL no longer holds the last captured frame";

/// Why the database at `local.db_path` is behind the commits captured up to
/// `saved_txid`, for logs and errors.
fn what_happened(local: &Local, saved_txid: u64) -> String {
    format!(
        "the database {} lost commits it had made: its WAL no longer holds frames that were \
         captured up to TXID {saved_txid} (a power loss with PRAGMA synchronous=NORMAL, or storage \
         that did not keep flushed writes)",
        local.db_path.display()
    )
}

/// Makes the replica hold every captured commit, then restores the database from it over
/// the file found, which is copied aside first. `Ok(false)` when another process has the
/// database open (the caller snapshots as before, saying what was lost).
pub(super) fn bring_forward(
    local: &Local,
    saved_txid: u64,
    replica: ReplicaSeen,
    staged: &[StagedFile],
) -> Result<bool, String> {
    let what = what_happened(local, saved_txid);
    if let Some(pid) = crate::restore::open_elsewhere(local.db_path) {
        tracing::error!(
            db = %local.db_path.display(),
            pid,
            "{what}; another process has it open, so it cannot be restored in place: taking a snapshot of it \
             as found. The lost state stays restorable as TXID {saved_txid} (restore -txid {saved_txid:016x}) \
             until compaction and retention remove it"
        );
        return Ok(false);
    }
    // What this process listed within the last minute does as well as a listing now:
    // the uploads below are conditional creates, and identical bytes count as stored.
    let (ReplicaSeen::Listed(stored) | ReplicaSeen::Remembered(stored)) = replica else {
        return Err(format!(
            "{what}; its replica {} did not answer, and the database is restored from it only once it \
             does: open again then",
            local.store.describe()
        ));
    };
    if let Some(damage) = first_damaged(staged, stored.unwrap_or(0)) {
        tracing::error!(
            db = %local.db_path.display(),
            "{what}; {damage}, so the replica cannot bring it forward to TXID {saved_txid}: taking a snapshot \
             of it as found. The states before the damaged file stay restorable until compaction and \
             retention remove them"
        );
        return Ok(false);
    }
    upload_staged(local, stored.unwrap_or(0), staged).map_err(|e| format!("{what}; {e}"))?;
    let aside = copy_aside(local).map_err(|e| format!("{what}; keeping a copy of it: {e}"))?;
    tracing::warn!(
        db = %local.db_path.display(),
        "{what}: restoring it from its replica {} (TXID {saved_txid}); the database as found is kept in {}",
        local.store.describe(),
        aside.display()
    );
    Ok(true)
}

/// The first staged file the replica does not hold yet whose bytes do not check, said
/// as an error: a restore through it would fail (`upload::drop_damaged`).
fn first_damaged(staged: &[StagedFile], stored: u64) -> Option<String> {
    staged.iter().filter(|f| f.max_txid > stored).find_map(|file| {
        let damage = match crate::file_modes::read(&file.path) {
            Ok(bytes) => crate::ltx::verify(&bytes[..]).err()?.to_string(),
            Err(e) => e.to_string(),
        };
        Some(format!(
            "its staged file {} (TXIDs {}-{}) is damaged: {damage}",
            file.path.display(),
            file.min_txid,
            file.max_txid
        ))
    })
}

/// Stores the staged files the replica does not hold yet, in TXID order: they are
/// captured commits, and the restore that follows must reach them.
fn upload_staged(local: &Local, stored: u64, staged: &[StagedFile]) -> Result<(), String> {
    let mut reached = stored;
    for file in staged.iter().filter(|f| f.max_txid > stored) {
        if file.min_txid > reached + 1 {
            return Err(format!(
                "TXIDs {}-{} are neither in the replica nor staged: restore what the replica holds by hand",
                reached + 1,
                file.min_txid - 1
            ));
        }
        let body = bytes::Bytes::from(
            crate::file_modes::read(&file.path).map_err(|e| format!("{}: {e}", file.path.display()))?,
        );
        let timestamp = crate::ltx::Header::decode(&body[..body.len().min(100)]).map_or(0, |h| h.timestamp_ms);
        let put = block_on(
            local
                .store
                .put_new(0, file.min_txid, file.max_txid, body.clone(), timestamp),
        );
        if let Err(e) = put {
            let same = e.is_already_exists()
                && block_on(crate::storage::stored_equals(
                    local.store.as_ref(),
                    0,
                    file.min_txid,
                    file.max_txid,
                    &body,
                ))
                .unwrap_or(false);
            if !same {
                return Err(format!(
                    "storing its staged TXIDs {}-{} first failed: {e}; open again once the store takes them",
                    file.min_txid, file.max_txid
                ));
            }
        }
        local.staging.remove(file).map_err(|e| e.to_string())?;
        reached = reached.max(file.max_txid);
    }
    Ok(())
}

/// Copies the database and its WAL, as found, into `lost-commits-<seconds>/` in the
/// staging directory: what the restore replaces may hold something nobody expected.
fn copy_aside(local: &Local) -> io::Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let aside = local.config.staging_dir.join(format!("lost-commits-{secs}"));
    local.config.file_modes.create_dir_all(&aside)?;
    for suffix in ["", "-wal"] {
        let mut from = local.db_path.as_os_str().to_owned();
        from.push(suffix);
        let from = PathBuf::from(from);
        if from.exists() {
            // With the database's owner and bits (the application's user must be able to
            // read its own copy after a recovery run as root), and no link followed.
            let name = from.file_name().unwrap_or_default();
            let mut copy = local.config.file_modes.create_new(&aside.join(name))?;
            io::copy(&mut crate::file_modes::open_read(&from)?, &mut copy)?;
            copy.sync_all()?;
        }
    }
    Ok(aside)
}
