//! The restore plan: which files, from which levels, reach a target TXID. Pure: the
//! listing comes in, the plan goes out; the callers do the I/O.

use crate::runtime::block_on;
use crate::storage::{LtxObject, ReplicaStore};

/// Snapshot level and the incremental levels, highest first: every level a ladder may
/// use (`config::MAX_LEVELS`), as Litestream's restore looks in levels 0 to 8 too, so a
/// replica written with any ladder (or another one before) restores.
pub const SNAPSHOT_LEVEL: u8 = 9;
pub const LEVELS: [u8; 9] = [8, 7, 6, 5, 4, 3, 2, 1, 0];
/// Every level a replica can hold files in, level 0 (the most files, the newest) first.
pub const EVERY_LEVEL: [u8; 10] = [0, 1, 2, 3, 4, 5, 6, 7, 8, SNAPSHOT_LEVEL];

/// Every LTX file of a replica, per level: what one LIST of each level returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// The snapshot level's files.
    pub snapshots: Vec<LtxObject>,
    /// Files of levels 8 to 0 (in [`LEVELS`] order), each sorted by TXID.
    pub incremental: Vec<Vec<LtxObject>>,
}

impl Listing {
    /// LISTs the snapshot level and every incremental level once, concurrently: one
    /// round trip.
    pub async fn fetch(store: &dyn ReplicaStore) -> crate::storage::Result<Listing> {
        let (snapshots, incremental) = tokio::join!(
            store.list(SNAPSHOT_LEVEL),
            futures::future::join_all(LEVELS.map(|level| store.list(level)))
        );
        Ok(Listing {
            snapshots: snapshots?,
            incremental: incremental.into_iter().collect::<Result<_, _>>()?,
        })
    }

    /// The files of one incremental level (empty for a level out of range).
    pub fn level(&self, level: u8) -> &[LtxObject] {
        LEVELS
            .iter()
            .position(|l| *l == level)
            .and_then(|i| self.incremental.get(i))
            .map_or(&[], Vec::as_slice)
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
/// snapshot at or before it (level 9, or a file of any level starting at TXID 1), then
/// at each step the file that continues the chain (starts at most one past it) and
/// reaches furthest without passing the target; on a tie the one starting earliest,
/// then the highest level. Reaching furthest at every step gives the fewest files.
///
/// With a target the plan ends exactly there, or it is an error naming the nearest
/// TXIDs that can be restored: a file merges several TXIDs, so only the TXIDs files end
/// at are restorable points. Pure: no I/O.
pub fn plan(listing: &Listing, target: Option<u64>) -> Result<Vec<LtxObject>, String> {
    let plan = plan_up_to(listing, target.unwrap_or(u64::MAX))?;
    let txid = plan.last().map_or(0, |f| f.max_txid);
    if let Some(t) = target {
        if txid != t {
            let after = listing
                .snapshots
                .iter()
                .chain(listing.incremental.iter().flatten())
                .map(|f| f.max_txid)
                .filter(|m| *m > t)
                .min();
            let after = after.map_or(String::new(), |a| format!(" or {a}"));
            return Err(format!(
                "cannot restore exactly TXID {t}: it lies inside a file that merges several TXIDs; \
                 the nearest restorable TXIDs are {txid}{after}"
            ));
        }
    }
    Ok(plan)
}

/// The plan reaching the newest TXID it can without passing `limit` (see [`plan`]):
/// what a timestamp target uses, where any state at or before the bound will do.
pub fn plan_up_to(listing: &Listing, limit: u64) -> Result<Vec<LtxObject>, String> {
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
            // A file overlapping what we have is still correct to apply: it holds the
            // newest version of every page changed in its range (Litestream's rule too).
            .filter(|f| f.min_txid <= txid + 1 && f.max_txid > txid && f.max_txid <= limit)
            .filter(|f| txid > 0 || f.min_txid == 1)
            .max_by_key(|f| (f.max_txid, std::cmp::Reverse(f.min_txid), f.level));
        match next {
            Some(f) => {
                txid = f.max_txid;
                plan.push(f.clone());
            }
            None => break,
        }
    }
    if plan.is_empty() {
        return Err(match limit {
            _ if listing.is_empty() => "has no LTX files".to_string(),
            u64::MAX => "has no snapshot to start from".to_string(),
            t => format!("has no snapshot at or before TXID {t}"),
        });
    }
    Ok(plan)
}

/// The files to apply to reach the latest TXID (see [`plan`]).
pub fn plan_latest(store: &dyn ReplicaStore) -> Result<Vec<LtxObject>, String> {
    let listing = block_on(Listing::fetch(store)).map_err(|e| e.to_string())?;
    plan(&listing, None).map_err(|e| format!("replica {} {e}", store.describe()))
}

/// The newest TXID whose file was written at or before `target_ms`, by header timestamp:
/// a binary search over the files of every level ordered by max TXID (a file's timestamp
/// is its max TXID's, so both grow together), about log2(files) calls of `timestamp`.
/// `Ok(None)` when every file is newer than the target.
pub fn resolve_timestamp<E>(
    listing: &Listing,
    target_ms: i64,
    mut timestamp: impl FnMut(&LtxObject) -> Result<i64, E>,
) -> Result<Option<u64>, E> {
    let mut files: Vec<&LtxObject> = listing
        .snapshots
        .iter()
        .chain(listing.incremental.iter().flatten())
        .collect();
    // Per TXID keep the lowest level: its timestamp is the original one (a level-9
    // snapshot is encoded a little after the level-0 file ending at the same TXID).
    files.sort_by_key(|f| (f.max_txid, f.level));
    files.dedup_by_key(|f| f.max_txid);
    let (mut lo, mut hi) = (0usize, files.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if timestamp(files[mid])? <= target_ms {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo.checked_sub(1).map(|i| files[i].max_txid))
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
        // No file ends at 4: an error naming the restorable TXIDs around it.
        let err = plan(&l, Some(4)).unwrap_err();
        assert!(err.contains("TXID 4") && err.contains("are 2 or 5"), "{err}");
    }

    #[test]
    fn overlapping_compactions_are_chained_with_the_fewest_files() {
        // A level-2 file overlapping the level-1 chain reaches furthest: it is taken.
        let l = listing(&[f(9, 1, 10), f(1, 11, 20), f(1, 21, 30), f(2, 11, 30), f(0, 31, 31)]);
        assert_eq!(ranges(&plan(&l, None).unwrap()), [(9, 1, 10), (2, 11, 30), (0, 31, 31)]);
        let l = listing(&[f(0, 1, 5), f(1, 1, 8), f(0, 6, 8), f(0, 9, 9), f(2, 4, 9)]);
        assert_eq!(ranges(&plan(&l, None).unwrap()), [(1, 1, 8), (2, 4, 9)]);
    }

    #[test]
    fn timestamps_resolve_to_the_newest_txid_written_by_then() {
        let l = listing(&[f(9, 1, 10), f(1, 11, 20), f(0, 11, 15), f(0, 16, 20), f(0, 21, 25)]);
        // Header timestamp = 100 * max TXID.
        let ts = |f: &LtxObject| Ok::<i64, ()>(f.max_txid as i64 * 100);
        assert_eq!(resolve_timestamp(&l, 999, ts), Ok(None));
        assert_eq!(resolve_timestamp(&l, 1000, ts), Ok(Some(10)));
        assert_eq!(resolve_timestamp(&l, 1999, ts), Ok(Some(15)));
        assert_eq!(resolve_timestamp(&l, 2000, ts), Ok(Some(20)));
        assert_eq!(resolve_timestamp(&l, i64::MAX, ts), Ok(Some(25)));
        let mut calls = 0;
        let _ = resolve_timestamp(&l, 1700, |f| {
            calls += 1;
            ts(f)
        });
        assert!(calls <= 3, "binary search made {calls} timestamp requests");
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
