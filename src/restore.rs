//! Restoring a replica to a local database file: newest snapshot, then the
//! contiguous files after it, applied into a temp file that is verified, fsynced and
//! renamed into place. (The full restore plan across compaction levels, and point in
//! time targets, build on this.)

use crate::ltx::{Applier, Position};
use crate::runtime::block_on;
use crate::storage::{LtxObject, ReplicaStore};
use std::fs;
use std::path::Path;

/// Snapshot level and the incremental levels, highest first.
pub const SNAPSHOT_LEVEL: u8 = 9;
pub const LEVELS: [u8; 4] = [3, 2, 1, 0];

/// The files to apply to reach the latest TXID: a snapshot (level 9, or a level 0..3
/// file starting at TXID 1), then at each step the file from the highest level that
/// continues the chain and reaches furthest.
pub fn plan_latest(store: &dyn ReplicaStore) -> Result<Vec<LtxObject>, String> {
    let mut by_level = Vec::new();
    for level in std::iter::once(SNAPSHOT_LEVEL).chain(LEVELS) {
        by_level.push(block_on(store.list(level)).map_err(|e| e.to_string())?);
    }
    let snapshot = by_level[0].iter().max_by_key(|f| f.max_txid).cloned();
    let mut plan: Vec<LtxObject> = snapshot.into_iter().collect();
    let mut txid = plan.last().map_or(0, |f| f.max_txid);
    loop {
        let next = by_level[1..]
            .iter()
            .flatten()
            .filter(|f| f.min_txid <= txid + 1 && f.max_txid > txid)
            // Files overlapping what we have are only safe when they start at the
            // snapshot point of a level (compaction keeps whole windows).
            .filter(|f| f.min_txid == txid + 1 || (txid == 0 && f.min_txid == 1))
            .max_by_key(|f| (f.max_txid, f.level));
        match next {
            Some(f) => {
                txid = f.max_txid;
                plan.push(f.clone());
            }
            None => break,
        }
    }
    if plan.is_empty() {
        return Err(format!("replica {} has no LTX files", store.describe()));
    }
    Ok(plan)
}

/// Restores the latest state of `store` into `dest` (which must not exist).
/// Returns the position restored.
pub fn restore_latest(store: &dyn ReplicaStore, dest: &Path) -> Result<Position, String> {
    let plan = plan_latest(store)?;
    let tmp = dest.with_extension("litestream-restore.tmp");
    let file = fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let mut applier = Applier::new(file);
    let result = (|| {
        for f in &plan {
            let bytes = block_on(store.get(f.level, f.min_txid, f.max_txid)).map_err(|e| e.to_string())?;
            applier
                .apply(&bytes[..])
                .map_err(|e| format!("level {} file {}-{}: {e}", f.level, f.min_txid, f.max_txid))?;
        }
        let pos = applier.position().ok_or("nothing was applied")?;
        applier.sink().sync_all().map_err(|e| e.to_string())?;
        Ok(pos)
    })();
    match result {
        Ok(pos) => {
            fs::rename(&tmp, dest).map_err(|e| format!("{}: {e}", dest.display()))?;
            if let Some(dir) = dest.parent() {
                let _ = crate::primary::state::sync_dir(if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                });
            }
            Ok(pos)
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}
