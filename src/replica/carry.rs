//! Which cached pages stay valid when a new plan replaces the current state.
//!
//! Cached pages (and hydration slots) are keyed by the stored file their frame came from.
//! When compaction replaces level-0 files by a level-1 file, a re-plan names the new file
//! for every page, so every key misses and every page would be fetched again, although
//! most of them did not change. This module decides, page by page, when the version the
//! current state serves may be filed under the new plan's file instead.
//!
//! The rule. Let `old` be at TXID `T_old` and `new` at `T_new >= T_old`, both plans of
//! one history. For page P:
//! - `old` resolves P to file G, so content(P, T_old) = P's frame in G;
//! - `new` resolves P to file F with `F.max_txid <= T_old`.
//!
//! `new` resolving P to F means F is the last file of its plan holding P and no later
//! file shrank the database below P (a state forgets pages above each file's commit), so
//! P keeps F's frame for every TXID in `[F.max_txid, T_new]`: content(P, T_new) =
//! content(P, F.max_txid) = content(P, T_old), the last because `T_old` lies in that
//! range. Hence G's frame equals F's and the page G gave us may be filed under F. A page
//! of the cache keyed by any file other than G (an older version of P) proves nothing and
//! is left alone; nor when `F.max_txid > T_old` (F may hold a write after `T_old`), nor
//! for pages above the new database size.
//!
//! "One history" is what a re-plan of the same store gives, but a store rewritten from
//! scratch could reuse TXIDs. Files of the two plans starting at the same TXID carry the
//! database checksum before them (`pre_apply_checksum`): when any such pair disagrees,
//! the plans are of different histories and nothing is carried.

use super::cache::PageKey;
use super::state::{FileKey, State};
use std::collections::HashMap;

/// The carry-over from one state to the state replacing it.
pub struct Carry<'a> {
    old: &'a State,
    new: &'a State,
}

impl<'a> Carry<'a> {
    /// `None` when no page of `old` can be carried to `new`: older TXID, other page size,
    /// or plans of different histories.
    pub fn between(old: &'a State, new: &'a State) -> Option<Carry<'a>> {
        if new.txid < old.txid || new.page_size != old.page_size {
            return None;
        }
        // Checksums before each non-snapshot file of the new plan (0 = not recorded).
        let before: HashMap<u64, u64> = new
            .files()
            .iter()
            .map(|f| &f.header)
            .filter(|h| h.min_txid > 1 && h.pre_apply_checksum != 0)
            .map(|h| (h.min_txid, h.pre_apply_checksum))
            .collect();
        let other_history =
            old.files().iter().map(|f| &f.header).any(|h| {
                h.pre_apply_checksum != 0 && before.get(&h.min_txid).is_some_and(|&c| c != h.pre_apply_checksum)
            });
        (!other_history).then_some(Carry { old, new })
    }

    /// Page size of both states.
    pub fn page_size(&self) -> u32 {
        self.new.page_size
    }

    /// Highest page number worth looking at: pages of both states.
    pub fn max_pgno(&self) -> u32 {
        self.old.commit.min(self.new.commit)
    }

    /// For page `pgno`: the file `old` serves it from and the file `new` does, when the two
    /// hold the same bytes by the rule above.
    pub fn page(&self, pgno: u32) -> Option<(FileKey, FileKey)> {
        if pgno == 0 || pgno > self.new.commit {
            return None;
        }
        let from = self.old.locate(pgno)?.file;
        let to = self.new.locate(pgno)?.file;
        (to.object.max_txid <= self.old.txid).then(|| (from.key(), to.key()))
    }

    /// The key the cached page `key` may also be filed under in `new`, if any.
    pub fn key(&self, key: &PageKey) -> Option<PageKey> {
        match self.page(key.pgno)? {
            (from, to) if from == key.file && to != from => Some(PageKey {
                file: to,
                pgno: key.pgno,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::state::PlanFile;
    use std::sync::Arc;

    fn file(level: u8, min: u64, max: u64, commit: u32, pages: &[u32]) -> Arc<PlanFile> {
        crate::replica::state::test_file(level, min, max, commit, pages)
    }

    fn key(f: &Arc<PlanFile>, pgno: u32) -> PageKey {
        PageKey { file: f.key(), pgno }
    }

    /// Level 0: a snapshot of pages 1-4 at TXID 1, page 2 rewritten at 2, page 3 at 3.
    fn level0() -> (Vec<Arc<PlanFile>>, State) {
        let files = vec![
            file(0, 1, 1, 4, &[1, 2, 3, 4]),
            file(0, 2, 2, 4, &[2]),
            file(0, 3, 3, 4, &[3]),
        ];
        let state = State::build(files.clone()).unwrap();
        (files, state)
    }

    #[test]
    fn pages_the_current_state_serves_move_to_a_compacted_file_that_ends_by_its_txid() {
        let (l0, old) = level0();
        let l1 = file(1, 1, 3, 4, &[1, 2, 3, 4]);
        let new = State::build(vec![Arc::clone(&l1)]).unwrap();
        let carry = Carry::between(&old, &new).unwrap();
        assert_eq!(carry.key(&key(&l0[0], 1)), Some(key(&l1, 1)));
        assert_eq!(carry.key(&key(&l0[1], 2)), Some(key(&l1, 2)));
        assert_eq!(carry.key(&key(&l0[2], 3)), Some(key(&l1, 3)));
        assert_eq!(carry.page(4), Some((l0[0].key(), l1.key())));
    }

    #[test]
    fn an_older_version_of_a_page_is_not_carried() {
        let (l0, old) = level0();
        let l1 = file(1, 1, 3, 4, &[1, 2, 3, 4]);
        let new = State::build(vec![Arc::clone(&l1)]).unwrap();
        let carry = Carry::between(&old, &new).unwrap();
        // Page 2 as of TXID 1: the current state serves TXID 2's version instead.
        assert_eq!(carry.key(&key(&l0[0], 2)), None);
        // A key of a file the current state does not use for that page at all.
        assert_eq!(carry.key(&key(&l0[2], 1)), None);
    }

    #[test]
    fn a_file_ending_after_the_current_txid_may_hold_a_later_write_and_is_not_trusted() {
        let (l0, old) = level0();
        // Level 1 merged TXIDs 1-4; TXID 4 rewrote page 4 (and may have rewritten any).
        let l1 = file(1, 1, 4, 4, &[1, 2, 3, 4]);
        let new = State::build(vec![Arc::clone(&l1)]).unwrap();
        let carry = Carry::between(&old, &new).unwrap();
        for pgno in 1..=4 {
            assert_eq!(carry.page(pgno), None, "page {pgno}");
        }
        // Split at the current TXID: 1-3 carries, what TXID 4 wrote does not.
        let a = file(1, 1, 3, 4, &[1, 2, 3, 4]);
        let b = file(1, 4, 4, 4, &[4]);
        let new = State::build(vec![Arc::clone(&a), Arc::clone(&b)]).unwrap();
        let carry = Carry::between(&old, &new).unwrap();
        assert_eq!(carry.key(&key(&l0[1], 2)), Some(key(&a, 2)));
        assert_eq!(carry.key(&key(&l0[0], 4)), None);
    }

    #[test]
    fn pages_beyond_the_new_database_size_are_not_carried() {
        let (l0, old) = level0();
        // TXID 4 shrank the database to 2 pages; the compacted file ends there.
        let l1 = file(1, 1, 3, 4, &[1, 2, 3, 4]);
        let shrink = file(0, 4, 4, 2, &[1]);
        let new = State::build(vec![Arc::clone(&l1), shrink]).unwrap();
        let carry = Carry::between(&old, &new).unwrap();
        assert_eq!(carry.max_pgno(), 2);
        assert_eq!(carry.key(&key(&l0[1], 2)), Some(key(&l1, 2)));
        assert_eq!(carry.key(&key(&l0[2], 3)), None);
        assert_eq!(carry.key(&key(&l0[0], 4)), None);
    }

    #[test]
    fn the_same_file_in_both_plans_needs_no_carry_and_the_lock_page_none() {
        let (l0, old) = level0();
        let l1 = file(1, 2, 3, 4, &[2, 3]);
        let new = State::build(vec![Arc::clone(&l0[0]), Arc::clone(&l1)]).unwrap();
        let carry = Carry::between(&old, &new).unwrap();
        assert_eq!(carry.key(&key(&l0[0], 1)), None, "same key already");
        assert_eq!(carry.key(&key(&l0[1], 2)), Some(key(&l1, 2)));
        assert_eq!(carry.page(0), None);
    }

    #[test]
    fn nothing_carries_to_an_older_state_another_page_size_or_another_history() {
        let (_, old) = level0();
        let older = State::build(vec![file(1, 1, 2, 4, &[1, 2, 3, 4])]).unwrap();
        assert!(Carry::between(&old, &older).is_none());
        let mut other = file(1, 1, 3, 4, &[1, 2, 3, 4]);
        Arc::get_mut(&mut other).unwrap().header.page_size = 1024;
        assert!(Carry::between(&old, &State::build(vec![other]).unwrap()).is_none());
        // Same TXIDs, but the file after TXID 1 starts from another database.
        let mut forked = file(1, 2, 3, 4, &[2, 3]);
        Arc::get_mut(&mut forked).unwrap().header.pre_apply_checksum = 0xdead;
        let new = State::build(vec![file(0, 1, 1, 4, &[1, 2, 3, 4]), forked]).unwrap();
        assert!(Carry::between(&old, &new).is_none());
    }

    #[test]
    fn cache_and_hydration_slots_follow_the_carry() {
        use crate::replica::cache::PageCache;
        use crate::replica::hydrate::Hydration;
        let (l0, old) = level0();
        let a = file(1, 1, 3, 4, &[1, 2, 3, 4]);
        let b = file(1, 4, 4, 4, &[4]);
        let new = State::build(vec![Arc::clone(&a), Arc::clone(&b)]).unwrap();
        let carry = Carry::between(&old, &new).unwrap();
        let page = |n: u8| vec![n; 4096];

        let cache = PageCache::new(1 << 20);
        cache.insert(key(&l0[0], 1), page(1).into());
        cache.insert(key(&l0[0], 2), page(9).into()); // stale: TXID 1's page 2
        cache.insert(key(&l0[1], 2), page(2).into());
        cache.insert(key(&l0[0], 4), page(4).into()); // rewritten at TXID 4
        assert_eq!(cache.carry(|k| carry.key(k)), 2);
        assert_eq!(&cache.get(&key(&a, 1)).unwrap()[..], &page(1)[..]);
        assert_eq!(&cache.get(&key(&a, 2)).unwrap()[..], &page(2)[..]);
        assert!(cache.get(&key(&b, 4)).is_none());
        assert!(cache.get(&key(&l0[0], 1)).is_some(), "the old key stays");

        let dir = tempfile::tempdir().unwrap();
        let h = Hydration::create(&dir.path().join("h"), "test").unwrap();
        for (f, pgno) in [(&l0[0], 1), (&l0[0], 2), (&l0[2], 3), (&l0[0], 4)] {
            h.write(&key(f, pgno), &page(pgno as u8), &mut |_, _| {}).unwrap();
        }
        // Slot 2 holds TXID 1's version, older than the one the state serves.
        assert_eq!(h.carry(&carry), 2);
        let mut out = vec![0u8; 4096];
        assert!(h.read(&key(&a, 1), &mut out).unwrap());
        assert_eq!(out, page(1));
        assert!(h.read(&key(&a, 3), &mut out).unwrap());
        assert!(!h.read(&key(&a, 2), &mut out).unwrap());
        assert!(!h.read(&key(&b, 4), &mut out).unwrap());
        assert!(
            !h.read(&key(&l0[0], 1), &mut out).unwrap(),
            "relabelled, not duplicated"
        );
    }
}
