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
/// at are restorable points. A chain that stops at a gap before the target (before the
/// newest file, for the latest state) is an error naming the gap (see [`Gap`]): an
/// older state given for the latest one looked like a successful restore. Pure: no I/O.
pub fn plan(listing: &Listing, target: Option<u64>) -> Result<Vec<LtxObject>, String> {
    let newest = listing.max_txid();
    if let Some(t) = target.filter(|t| *t > newest && !listing.is_empty()) {
        return Err(format!(
            "cannot restore TXID {}: the newest TXID it holds is {}",
            txid_both(t),
            txid_both(newest)
        ));
    }
    let plan = plan_up_to(listing, target.unwrap_or(u64::MAX))?;
    let txid = plan.last().map_or(0, |f| f.max_txid);
    if let Some(t) = target {
        if txid != t {
            // The next TXID a plan ends at exactly: a file's end is not enough (a lone
            // level-0 file whose predecessors retention removed ends where no plan
            // does, and was named here, its own restore then naming the next).
            let mut ends: Vec<u64> = listing
                .snapshots
                .iter()
                .chain(listing.incremental.iter().flatten())
                .map(|f| f.max_txid)
                .filter(|m| *m > t)
                .collect();
            ends.sort_unstable();
            ends.dedup();
            let after = ends
                .into_iter()
                .find(|&e| chain(listing, e).is_ok_and(|p| p.last().is_some_and(|f| f.max_txid == e)));
            let after = after.map_or(String::new(), |a| format!(" or {}", txid_both(a)));
            return Err(format!(
                "cannot restore exactly TXID {}: no plan of the replica's files ends there (a file \
                 merges it with the TXIDs around it, or the files that held it were removed); the \
                 nearest restorable TXIDs are {}{after}",
                txid_both(t),
                txid_both(txid)
            ));
        }
    }
    Ok(plan)
}

/// The plan reaching the newest TXID it can without passing `limit` (see [`plan`]):
/// what a timestamp target uses, where any state at or before the bound will do. A gap
/// before `limit` is an error: the state past it exists, the plan cannot reach it.
pub fn plan_up_to(listing: &Listing, limit: u64) -> Result<Vec<LtxObject>, String> {
    let plan = chain(listing, limit)?;
    let Some(gap) = gap_before(listing, limit) else {
        return Ok(plan);
    };
    let reached = gap.reached;
    Err(if limit == u64::MAX {
        format!(
            "{gap}: the latest state cannot be restored. The state before the gap can: ask for \
             TXID {reached} explicitly (restore -txid {reached:016x}; litestream_restore(url, path, {reached}))"
        )
    } else if limit < gap.next.min_txid {
        format!(
            "cannot restore TXID {}: no file holds it: the replica {gap}; the newest TXID \
             restorable before it is {}",
            txid_both(limit),
            txid_both(reached)
        )
    } else {
        format!(
            "cannot restore TXID {}: it lies past a gap: the replica {gap}; the newest TXID \
             restorable before it is {}",
            txid_both(limit),
            txid_both(reached)
        )
    })
}

/// A TXID in a message about a target: the decimal number `litestream_txid()` and
/// `litestream_restore()` use, then the 16 hex digits Litestream, `info` and
/// `restore -txid` use ("153 (0000000000000099)"). Only the decimal was given, which
/// read as another TXID to whom had typed the hex (an operations tester, t6).
pub fn txid_both(t: u64) -> String {
    format!("{t} ({t:016x})")
}

/// The plan for a point in time whose newest state written by then is TXID `bound`
/// ([`resolve_timestamp`]): [`plan_up_to`], refused when TXIDs just past the plan's end
/// are in no file while later ones are. The time then falls in a gap: the TXIDs lost
/// may have been written before it, so the state at that time is not known, and the
/// state before the gap, restored with exit 0, would be older than asked without a word
/// (a tester deleted two level-0 files and restored to just before the next one's time:
/// every restore gave the state before them). A TXID past `bound` that a compacted file
/// holds is no gap: the restore gives the state at `bound`, as coarse as the levels kept.
pub fn plan_at_time(listing: &Listing, bound: u64) -> Result<Vec<LtxObject>, String> {
    let plan = plan_up_to(listing, bound)?;
    let reached = plan.last().map_or(0, |f| f.max_txid);
    match gap_before(listing, reached.saturating_add(1)) {
        Some(gap) if gap.reached == reached => Err(format!(
            "cannot restore that time: it falls in a gap, so the state then is not known: the replica \
             {gap}. The state before the gap can be restored: ask for TXID {reached} explicitly (restore \
             -txid {reached:016x}; litestream_restore(url, path, {reached}))"
        )),
        _ => Ok(plan),
    }
}

/// The plan reaching as far as the files allow, and the gap that stops it short of the
/// newest file, if one does: what a read replica serves (the state before the gap, its
/// status saying why it is not the newest) and what `info` shows.
pub fn plan_reachable(listing: &Listing) -> Result<(Vec<LtxObject>, Option<Gap>), String> {
    let plan = chain(listing, u64::MAX)?;
    Ok((plan, gap_before(listing, u64::MAX)))
}

/// Whether a restore of the latest state would reach the newest file: `Err` with why
/// (a gap, or nothing to start from) when it would not. An empty listing is `Ok`. A
/// sweep over the files sorted by first TXID ([`gap_before`]), not the plan's search,
/// which looks at every file at every step: an open of a primary runs it on the
/// listing it made anyway, and a replica with compaction off holds a file per
/// `sync_interval` for ever.
pub fn check_chain(listing: &Listing) -> Result<(), String> {
    if listing.is_empty() {
        return Ok(());
    }
    let starts = !listing.snapshots.is_empty() || listing.incremental.iter().flatten().any(|f| f.min_txid == 1);
    if !starts {
        return chain(listing, u64::MAX).map(|_| ());
    }
    match gap_before(listing, u64::MAX) {
        Some(gap) => Err(gap.to_string()),
        None => Ok(()),
    }
}

/// Where a chain of files stops: no file continues TXID `reached`, yet a file starts
/// further on. A level-0 file lost from the middle of a replica (deleted, a mount that
/// went away under the primary) makes one; only a snapshot after it mends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    /// The last TXID a plan reaches.
    pub reached: u64,
    /// The first file past the gap (the lowest first TXID, then the lowest level).
    pub next: LtxObject,
    /// The newest TXID any file reaches.
    pub newest: u64,
}

impl std::fmt::Display for Gap {
    /// A predicate, as the callers put "replica URL " before it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (first, last) = (self.reached + 1, self.next.min_txid - 1);
        let missing = if first == last {
            format!("TXID {first}")
        } else {
            format!("TXIDs {first}-{last}")
        };
        write!(
            f,
            "has a gap after TXID {}: no file holds {missing}; the first file past it, level {} {}, \
             starts at TXID {} (files go up to TXID {})",
            self.reached,
            self.next.level,
            crate::ltx::format_name(self.next.min_txid, self.next.max_txid),
            self.next.min_txid,
            self.newest
        )
    }
}

/// The first gap a chain from the newest snapshot at or before `limit` meets before
/// reaching `limit` (the newest file, for `u64::MAX`): TXIDs no file holds, between
/// what files reach and the next file. A file that merges TXIDs past `limit` with
/// earlier ones is no gap: the chain stops short of `limit` there because of the bound,
/// not for want of files. `None` with nothing to start a chain: that is [`plan`]'s
/// error. One sweep over the files sorted by first TXID.
pub fn gap_before(listing: &Listing, limit: u64) -> Option<Gap> {
    let mut reached = listing
        .snapshots
        .iter()
        .map(|s| s.max_txid)
        .filter(|m| *m <= limit)
        .max()
        .unwrap_or(0);
    let mut files: Vec<&LtxObject> = listing
        .incremental
        .iter()
        .flatten()
        .filter(|f| f.max_txid > reached)
        .collect();
    files.sort_by_key(|f| (f.min_txid, f.level));
    for f in files {
        if reached >= limit {
            return None;
        }
        if f.max_txid <= reached {
            continue;
        }
        if f.min_txid > reached + 1 {
            // Nothing to start from is not a gap after something.
            return (reached > 0).then(|| Gap {
                reached,
                next: f.clone(),
                newest: listing.max_txid(),
            });
        }
        if reached == 0 && f.min_txid != 1 {
            return None;
        }
        reached = f.max_txid;
    }
    None
}

/// The greedy chain of [`plan`] up to `limit`, which may stop short of it; an error
/// only when nothing starts it.
pub(super) fn chain(listing: &Listing, limit: u64) -> Result<Vec<LtxObject>, String> {
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
        // The oldest file, named: a replica emptied under a live primary holds only
        // files after the TXIDs it lost, which says what happened.
        let oldest = listing
            .incremental
            .iter()
            .flatten()
            .min_by_key(|f| (f.min_txid, f.level))
            .map_or(String::new(), |f| {
                format!(
                    " (its oldest file, level {} {}, starts at TXID {})",
                    f.level,
                    crate::ltx::format_name(f.min_txid, f.max_txid),
                    f.min_txid
                )
            });
        return Err(match limit {
            _ if listing.is_empty() => "has no LTX files".to_string(),
            u64::MAX => format!("has no snapshot to start from{oldest}"),
            t => format!("has no snapshot at or before TXID {t}{oldest}"),
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
pub(crate) mod tests {
    use super::*;

    /// A listed file (also for other modules' tests of plans).
    pub(crate) fn f(level: u8, min_txid: u64, max_txid: u64) -> LtxObject {
        LtxObject {
            level,
            min_txid,
            max_txid,
            size: 1000,
            last_modified: None,
        }
    }

    /// The listing that holds `files`, each at its level.
    pub(crate) fn listing(files: &[LtxObject]) -> Listing {
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
        assert!(
            err.contains("TXID 4 (0000000000000004)")
                && err.contains("are 2 (0000000000000002) or 5 (0000000000000005)"),
            "{err}"
        );
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

    /// A time whose newest file ends just before a gap: TXIDs lost there may have been
    /// written before that time, so it is refused, naming the state before the gap;
    /// earlier times, and TXIDs that a compacted file holds, are not.
    #[test]
    fn a_time_in_a_gap_is_refused_and_one_before_it_or_in_a_compacted_range_is_not() {
        // Level 0 of TXIDs 1 to 9, TXIDs 5 and 6 lost.
        let files: Vec<LtxObject> = [1, 2, 3, 4, 7, 8, 9].iter().map(|t| f(0, *t, *t)).collect();
        let l = listing(&files);
        let err = plan_at_time(&l, 4).unwrap_err();
        for said in ["falls in a gap", "no file holds TXIDs 5-6", "TXID 4 explicitly"] {
            assert!(err.contains(said), "{said:?} not in {err}");
        }
        assert_eq!(ranges(&plan_at_time(&l, 3).unwrap()).last(), Some(&(0, 3, 3)));
        assert!(plan_at_time(&l, 8).unwrap_err().contains("past a gap"));
        // Level 0 kept from TXID 8 on, level 1 holding 1-4 and 5-10: a time before
        // TXID 8's file restores TXID 4, as coarse as the levels kept.
        let mut files = vec![f(1, 1, 4), f(1, 5, 10)];
        files.extend([8, 9, 10].iter().map(|t| f(0, *t, *t)));
        let l = listing(&files);
        assert_eq!(ranges(&plan_at_time(&l, 4).unwrap()), vec![(1, 1, 4)]);
        // A time after the newest file is the latest state.
        assert_eq!(ranges(&plan_at_time(&l, 10).unwrap()).last(), Some(&(1, 5, 10)));
    }

    #[test]
    fn a_gap_stops_the_latest_plan_with_an_error_naming_it_and_the_state_before_it() {
        // Level 0 of TXIDs 1 to 9, the file of TXID 6 lost.
        let files: Vec<LtxObject> = [1, 2, 3, 4, 5, 7, 8, 9].iter().map(|t| f(0, *t, *t)).collect();
        let l = listing(&files);
        let err = plan(&l, None).unwrap_err();
        for said in [
            "gap after TXID 5",
            "no file holds TXID 6",
            "level 0 0000000000000007-0000000000000007.ltx",
            "files go up to TXID 9",
            "-txid 0000000000000005",
        ] {
            assert!(err.contains(said), "{said:?} not in {err}");
        }
        // The state before the gap, asked for explicitly, restores.
        assert_eq!(ranges(&plan(&l, Some(5)).unwrap()).last(), Some(&(0, 5, 5)));
        assert_eq!(plan(&l, Some(3)).unwrap().len(), 3);
        // A TXID past it: said so, not blamed on a file merging TXIDs.
        let err = plan(&l, Some(8)).unwrap_err();
        assert!(err.contains("past a gap") && err.contains("before it is 5"), "{err}");
        assert!(!err.contains("merges"), "{err}");
        let err = plan(&l, Some(6)).unwrap_err();
        assert!(
            err.contains("no file holds it") && err.contains("before it is 5"),
            "{err}"
        );
        let err = plan(&l, Some(12)).unwrap_err();
        assert!(
            err.contains("cannot restore TXID 12 (000000000000000c): the newest TXID it holds is 9 (0000000000000009)"),
            "{err}"
        );
        // A time target resolves to a bound: past the gap, an error too.
        assert!(plan_up_to(&l, 9).unwrap_err().contains("past a gap"));
        assert_eq!(ranges(&plan_up_to(&l, 5).unwrap()).last(), Some(&(0, 5, 5)));
        // A file merging TXIDs past a bound is no gap: the bound stops the chain there.
        let merged = listing(&[f(0, 1, 1), f(1, 1, 2), f(1, 3, 6), f(0, 4, 4)]);
        assert_eq!(gap_before(&merged, 4), None);
        assert!(plan(&merged, Some(4))
            .unwrap_err()
            .contains("merges it with the TXIDs around it"));
        // The sweep an open runs finds the same gap.
        assert_eq!(
            check_chain(&l).unwrap_err(),
            gap_before(&l, u64::MAX).unwrap().to_string()
        );
        // What a read replica serves: the state before the gap, and the gap.
        let (reachable, gap) = plan_reachable(&l).unwrap();
        assert_eq!(reachable.len(), 5);
        let gap = gap.expect("a gap");
        assert_eq!((gap.reached, gap.next.min_txid, gap.newest), (5, 7, 9));
        // A snapshot after the gap mends it: the latest state restores from there.
        let mended = listing(&[&files[..], &[f(0, 10, 10), f(9, 1, 10)]].concat());
        assert_eq!(ranges(&plan(&mended, None).unwrap()), [(9, 1, 10)]);
        assert_eq!(plan_reachable(&mended).unwrap().1, None);
        assert_eq!(check_chain(&mended), Ok(()));
    }

    #[test]
    fn the_chain_sweep_agrees_with_the_plan() {
        let healthy = [
            listing(&[f(0, 1, 1), f(0, 2, 2), f(1, 1, 2), f(0, 3, 5), f(9, 1, 4), f(0, 6, 6)]),
            listing(&[f(9, 1, 10), f(1, 11, 20), f(1, 21, 30), f(2, 11, 30), f(0, 31, 31)]),
            // Retention removed everything before the snapshot it keeps.
            listing(&[f(9, 1, 10), f(0, 11, 11), f(1, 11, 11)]),
            listing(&[]),
        ];
        for l in &healthy {
            assert_eq!(check_chain(l), Ok(()), "{l:?}");
        }
        // Emptied under the primary: increments only.
        let emptied = listing(&[f(0, 7, 7), f(0, 8, 8), f(1, 7, 8)]);
        let err = check_chain(&emptied).unwrap_err();
        assert!(
            err.contains("no snapshot to start from") && err.contains("starts at TXID 7"),
            "{err}"
        );
        // Put back from an older copy: a snapshot, then a gap.
        let older = listing(&[f(9, 1, 4), f(0, 5, 5), f(0, 9, 9)]);
        assert!(check_chain(&older).unwrap_err().contains("gap after TXID 5"));
    }

    #[test]
    fn empty_or_headless_replicas_are_errors() {
        assert!(plan(&listing(&[]), None).unwrap_err().contains("no LTX files"));
        let err = plan(&listing(&[f(0, 5, 6)]), None).unwrap_err();
        assert!(err.contains("no snapshot") && err.contains("starts at TXID 5"), "{err}");
        assert!(plan(&listing(&[f(9, 1, 10)]), Some(3))
            .unwrap_err()
            .contains("at or before TXID 3"));
    }

    /// A lone level-0 file whose predecessors retention removed ends where no plan does:
    /// the later TXID named is the next one a restore reaches (a tester was sent from
    /// 1207 to 1208, 1209, 1210 in turn, each refused).
    #[test]
    fn the_nearest_restorable_txids_named_are_restorable() {
        let l = listing(&[f(9, 1, 10), f(1, 11, 20), f(0, 15, 15), f(0, 21, 21)]);
        let err = plan(&l, Some(13)).unwrap_err();
        assert!(
            err.contains("nearest restorable TXIDs are 10 (000000000000000a) or 20 (0000000000000014)"),
            "{err}"
        );
        assert!(plan(&l, Some(10)).is_ok() && plan(&l, Some(20)).is_ok());
        assert!(plan(&l, Some(15)).is_err(), "15 ends a file but no plan");
    }
}
