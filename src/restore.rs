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

/// Every LTX file of a replica, per level: what one LIST of each level returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// The snapshot level's files.
    pub snapshots: Vec<LtxObject>,
    /// Files of levels 3, 2, 1 and 0 (in [`LEVELS`] order), each sorted by TXID.
    pub incremental: Vec<Vec<LtxObject>>,
}

impl Listing {
    /// LISTs the snapshot level and every incremental level once, concurrently.
    pub async fn fetch(store: &dyn ReplicaStore) -> crate::storage::Result<Listing> {
        let [l3, l2, l1, l0] = LEVELS;
        let (snapshots, l3, l2, l1, l0) = tokio::join!(
            store.list(SNAPSHOT_LEVEL),
            store.list(l3),
            store.list(l2),
            store.list(l1),
            store.list(l0)
        );
        Ok(Listing {
            snapshots: snapshots?,
            incremental: vec![l3?, l2?, l1?, l0?],
        })
    }

    /// The highest TXID any file reaches.
    pub fn max_txid(&self) -> u64 {
        self.snapshots
            .iter()
            .chain(self.incremental.iter().flatten())
            .map(|f| f.max_txid)
            .max()
            .unwrap_or(0)
    }

    /// True when the replica holds no file at all.
    pub fn is_empty(&self) -> bool {
        self.snapshots.is_empty() && self.incremental.iter().all(Vec::is_empty)
    }
}

/// The files to apply to reach `target` (the latest TXID when `None`): the newest
/// snapshot at or before it (level 9, or a level 0..3 file starting at TXID 1), then at
/// each step the file from the highest level that continues the chain and reaches
/// furthest without passing the target. The plan may end below the target when no file
/// ends exactly there; callers check the last file's max TXID. Pure: no I/O.
pub fn plan(listing: &Listing, target: Option<u64>) -> Result<Vec<LtxObject>, String> {
    let limit = target.unwrap_or(u64::MAX);
    let snapshot = listing
        .snapshots
        .iter()
        .filter(|f| f.max_txid <= limit)
        .max_by_key(|f| f.max_txid)
        .cloned();
    let mut plan: Vec<LtxObject> = snapshot.into_iter().collect();
    let mut txid = plan.last().map_or(0, |f| f.max_txid);
    loop {
        let next = listing
            .incremental
            .iter()
            .flatten()
            .filter(|f| f.min_txid <= txid + 1 && f.max_txid > txid && f.max_txid <= limit)
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
        return Err(match target {
            _ if listing.is_empty() => "has no LTX files".to_string(),
            Some(t) => format!("has no snapshot at or before TXID {t}"),
            None => "has no snapshot to start from".to_string(),
        });
    }
    Ok(plan)
}

/// The files to apply to reach the latest TXID (see [`plan`]).
pub fn plan_latest(store: &dyn ReplicaStore) -> Result<Vec<LtxObject>, String> {
    let listing = block_on(Listing::fetch(store)).map_err(|e| e.to_string())?;
    plan(&listing, None).map_err(|e| format!("replica {} {e}", store.describe()))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn f(level: u8, min_txid: u64, max_txid: u64) -> LtxObject {
        LtxObject {
            level,
            min_txid,
            max_txid,
            size: 1000,
            last_modified: None,
        }
    }

    fn listing(files: &[LtxObject]) -> Listing {
        let mut l = Listing {
            snapshots: files.iter().filter(|f| f.level == SNAPSHOT_LEVEL).cloned().collect(),
            incremental: vec![Vec::new(); LEVELS.len()],
        };
        for (i, level) in LEVELS.iter().enumerate() {
            l.incremental[i] = files.iter().filter(|f| f.level == *level).cloned().collect();
        }
        l
    }

    fn ranges(plan: &[LtxObject]) -> Vec<(u8, u64, u64)> {
        plan.iter().map(|f| (f.level, f.min_txid, f.max_txid)).collect()
    }

    #[test]
    fn latest_prefers_the_snapshot_then_the_highest_level() {
        let l = listing(&[
            f(0, 1, 1),
            f(0, 2, 2),
            f(0, 3, 5),
            f(0, 6, 6),
            f(0, 7, 9),
            f(1, 1, 5),
            f(1, 6, 9),
            f(9, 1, 5),
        ]);
        assert_eq!(ranges(&plan(&l, None).unwrap()), [(9, 1, 5), (1, 6, 9)]);
        assert_eq!(l.max_txid(), 9);
    }

    #[test]
    fn a_target_bounds_the_snapshot_and_the_chain() {
        let l = listing(&[
            f(0, 1, 1),
            f(0, 2, 2),
            f(0, 3, 5),
            f(0, 6, 6),
            f(0, 7, 9),
            f(1, 1, 5),
            f(1, 6, 9),
            f(9, 1, 6),
        ]);
        assert_eq!(ranges(&plan(&l, Some(5)).unwrap()), [(1, 1, 5)]);
        assert_eq!(ranges(&plan(&l, Some(6)).unwrap()), [(9, 1, 6)]);
        assert_eq!(ranges(&plan(&l, Some(2)).unwrap()), [(0, 1, 1), (0, 2, 2)]);
        // No file ends at 4: the plan stops below the target.
        assert_eq!(ranges(&plan(&l, Some(4)).unwrap()), [(0, 1, 1), (0, 2, 2)]);
    }

    #[test]
    fn empty_or_headless_replicas_are_errors() {
        assert!(plan(&listing(&[]), None).unwrap_err().contains("no LTX files"));
        assert!(plan(&listing(&[f(0, 5, 6)]), None).unwrap_err().contains("no snapshot"));
        assert!(plan(&listing(&[f(9, 1, 10)]), Some(3))
            .unwrap_err()
            .contains("at or before TXID 3"));
    }
}
