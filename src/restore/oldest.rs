//! The earliest state a restore can reach with the files a replica holds now: retention
//! removes old snapshots and levels, and `info` says how far back a restore still goes.

use super::plan::{plan, Listing};
use crate::storage::LtxObject;

/// The oldest TXID a restore reaches (`restore -txid` of it succeeds) and the file that
/// ends there whose header time is when it was written (the lowest level: a level-9
/// snapshot is encoded after the level-0 file ending at the same TXID). `None` when no
/// plan starts (no snapshot, no file from TXID 1).
pub fn oldest_restorable(listing: &Listing) -> Option<(u64, LtxObject)> {
    let files = || listing.snapshots.iter().chain(listing.incremental.iter().flatten());
    // Every plan starts with a file from TXID 1; the first such to end is the earliest
    // state. Later ends are tried only if its plan fails, which the rules of `plan` do
    // not let happen: the check keeps what is named restorable restorable.
    let mut ends: Vec<u64> = files().filter(|f| f.min_txid == 1).map(|f| f.max_txid).collect();
    ends.sort_unstable();
    ends.dedup();
    let txid = ends.into_iter().find(|&t| plan(listing, Some(t)).is_ok())?;
    let file = files().filter(|f| f.max_txid == txid).min_by_key(|f| f.level)?.clone();
    Some((txid, file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::plan::tests::{f, listing};

    #[test]
    fn the_oldest_state_is_the_first_file_from_txid_1_to_end() {
        let l = listing(&[f(0, 1, 1), f(0, 2, 2), f(1, 1, 2), f(9, 1, 2), f(0, 3, 3)]);
        assert_eq!(oldest_restorable(&l).map(|(t, f)| (t, f.level)), Some((1, 0)));
        // Retention removed level 0 up to TXID 10 and the first snapshot.
        let l = listing(&[f(9, 1, 10), f(9, 1, 20), f(1, 11, 20), f(0, 21, 21)]);
        assert_eq!(oldest_restorable(&l).map(|(t, f)| (t, f.level)), Some((10, 9)));
        // The same TXID at levels 9 and 1: the level-1 file's time is the commit's.
        let l = listing(&[f(9, 1, 10), f(1, 1, 10), f(0, 11, 11)]);
        assert_eq!(oldest_restorable(&l).map(|(t, f)| (t, f.level)), Some((10, 1)));
    }

    #[test]
    fn a_replica_with_nothing_to_start_from_has_none() {
        assert_eq!(oldest_restorable(&listing(&[f(0, 5, 6), f(0, 7, 7)])), None);
        assert_eq!(oldest_restorable(&listing(&[])), None);
    }
}
