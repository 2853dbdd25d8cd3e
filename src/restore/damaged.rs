//! A file of a replica whose bytes do not check: naming it precisely (level, TXIDs,
//! where it is stored), and saying what a restore can still reach without it. A merge
//! of several files failing named every file it merged, which left the user to find the
//! damaged one and to guess what to restore instead.

use super::plan::{chain, plan, Listing};
use crate::ltx::format_name;
use crate::storage::{LtxObject, ReplicaStore};

/// "level 0 file 0000000000000002-0000000000000005.ltx (TXIDs 2-5)".
pub fn file_name(f: &LtxObject) -> String {
    format!(
        "level {} file {} (TXIDs {}-{})",
        f.level,
        format_name(f.min_txid, f.max_txid),
        f.min_txid,
        f.max_txid
    )
}

/// Whether `f` is one of `files`: the same level and TXIDs (a listing's size and time
/// are not part of which file it is).
fn is_one_of(f: &LtxObject, files: &[LtxObject]) -> bool {
    files
        .iter()
        .any(|d| (d.level, d.min_txid, d.max_txid) == (f.level, f.min_txid, f.max_txid))
}

/// The newest TXID at or before `limit` that `restore -txid` reaches with a plan using
/// none of `damaged`; `None` when there is none (a damaged snapshot every plan starts
/// from). The candidates are the ends of the furthest chain of the other files; each
/// is checked with the plan a restore of that TXID makes, which prefers the highest
/// level and may pick the damaged file again where other files hold the same TXIDs.
pub fn restorable_without(listing: &Listing, damaged: &[LtxObject], limit: u64) -> Option<u64> {
    let mut kept = listing.clone();
    kept.snapshots.retain(|f| !is_one_of(f, damaged));
    for level in &mut kept.incremental {
        level.retain(|f| !is_one_of(f, damaged));
    }
    let reach = chain(&kept, limit).ok()?;
    reach
        .iter()
        .rev()
        .map(|f| f.max_txid)
        .find(|&t| plan(listing, Some(t)).is_ok_and(|p| !p.iter().any(|f| is_one_of(f, damaged))))
}

/// What a restore says about the file of its plan that failed: which file, where it
/// is, why, and (when its bytes are wrong rather than unreadable) the newest TXID
/// restorable without it with the command that restores it.
pub fn failure(store: &dyn ReplicaStore, f: &LtxObject, error: &crate::ltx::Error, without: Option<u64>) -> String {
    let at = store.file_key(f.level, f.min_txid, f.max_txid);
    if !error.is_damage() {
        return format!("reading {} at {at}: {error}", file_name(f));
    }
    format!(
        "{} at {at} is damaged: {error}; {}",
        file_name(f),
        restorable_phrase(without)
    )
}

/// "the newest TXID restorable without it is N (...)" or that none is.
fn restorable_phrase(without: Option<u64>) -> String {
    match without {
        Some(t) => format!(
            "the newest TXID restorable without it is {t}: restore -txid {t:016x} \
             (litestream_restore(url, path, {t}))"
        ),
        None => "the newest TXID restorable without it: none (every restore starts from it: no \
                 other snapshot or first file is there to start from)"
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::plan::tests::{f, listing};

    #[test]
    fn a_damaged_level_0_file_leaves_the_files_before_it() {
        let l = listing(&[f(0, 1, 1), f(0, 2, 5), f(0, 6, 6)]);
        assert_eq!(restorable_without(&l, &[f(0, 2, 5)], u64::MAX), Some(1));
        assert_eq!(restorable_without(&l, &[f(0, 6, 6)], u64::MAX), Some(5));
    }

    #[test]
    fn a_damaged_only_snapshot_leaves_nothing() {
        let l = listing(&[f(0, 1, 1), f(0, 2, 5)]);
        assert_eq!(restorable_without(&l, &[f(0, 1, 1)], u64::MAX), None);
        let l = listing(&[f(9, 1, 5), f(0, 6, 6)]);
        assert_eq!(restorable_without(&l, &[f(9, 1, 5)], u64::MAX), None);
    }

    /// The level-0 files under a damaged level-1 file hold the same TXIDs, but a restore
    /// of its end TXID plans the level-1 file again: the TXID named must not.
    #[test]
    fn the_txid_named_has_a_plan_that_avoids_the_damaged_file() {
        let l = listing(&[
            f(0, 1, 1),
            f(0, 2, 2),
            f(0, 3, 3),
            f(0, 4, 4),
            f(1, 1, 4),
            f(1, 5, 8),
            f(0, 5, 5),
        ]);
        let damaged = [f(1, 5, 8)];
        assert_eq!(restorable_without(&l, &damaged, u64::MAX), Some(5));
        // The other files reach TXID 8 (level 0 to 4, then level 1's 5-8), but a restore
        // of 8 or 4 plans level 1's 1-4; one of 3 plans level 0's 1, 2 and 3.
        let damaged = [f(1, 1, 4)];
        assert_eq!(restorable_without(&l, &damaged, u64::MAX), Some(3));
    }

    /// An older snapshot restores when the newest one is damaged.
    #[test]
    fn a_damaged_snapshot_falls_back_to_an_older_one() {
        let l = listing(&[f(9, 1, 5), f(9, 1, 9), f(0, 6, 6), f(0, 7, 9)]);
        assert_eq!(restorable_without(&l, &[f(9, 1, 9)], u64::MAX), Some(6));
    }
}
