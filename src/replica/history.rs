//! Whether the store still holds the history a replica serves. A replica's state, its
//! cached pages (keyed by file name and size), its hydrated pages and the carry-over of
//! pages to a new plan all assume that a stored file never changes and that the files of
//! later plans continue the same commits. Both fail when the database at the replica's
//! URL is deleted with its replica and another one started there: before, replicas kept
//! serving the deleted database while the new TXIDs were lower, then appended the new
//! database's files to it and carried the old pages over (a tester's: 29 wrong rows and
//! a hydrated file failing `integrity_check`, with no error). The poll (`poll.rs`) asks
//! here, and on another history drops everything of the old one.

use super::cache::PageKey;
use super::carry::Carry;
use super::fetch::{decode_frame, Fetcher};
use super::state::State;
use super::Replica;
use crate::restore::{Listing, SNAPSHOT_LEVEL};

/// What a full listing holds of the files a state was planned from.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Listed {
    /// Some of them, as they were planned: the same history.
    Some,
    /// One of them under its name with other bytes (another size; at level 0, which is
    /// never rewritten, another time): another history.
    Rewritten(String),
    /// None of them: another history, or a replica that slept through the compaction
    /// and retention of every file it read (`Replica::same_history` tells).
    Nothing,
}

/// What `listing` holds of `cur`'s files.
pub(super) fn listed(cur: &State, listing: &Listing) -> Listed {
    let mut any = false;
    for file in cur.files() {
        let planned = &file.object;
        let level = match planned.level {
            SNAPSHOT_LEVEL => &listing.snapshots[..],
            level => listing.level(level),
        };
        let Some(found) = level
            .iter()
            .find(|o| (o.min_txid, o.max_txid) == (planned.min_txid, planned.max_txid))
        else {
            continue;
        };
        any = true;
        if found.size != planned.size || (planned.level == 0 && found.last_modified != planned.last_modified) {
            return Listed::Rewritten(format!("{} is stored again with other bytes", file.key()));
        }
    }
    match any || cur.files().is_empty() {
        true => Listed::Some,
        false => Listed::Nothing,
    }
}

/// The reason given when none of `cur`'s files are left.
pub(super) fn nothing_left(cur: &State) -> String {
    format!("none of the files of its TXID {} are in the store any more", cur.txid)
}

impl Replica {
    /// Whether `next`, planned from files none of which `cur` was planned from, continues
    /// `cur`'s history. Two files ending at the same TXID carry that commit's time in
    /// their headers (a compacted file keeps its last input's): equal times say yes,
    /// others no. Without such a pair, one page of `cur`'s that the carry-over from
    /// `base` (`cur`, or `cur` extended by level-0 files of the listing) would take as
    /// unchanged is fetched from `next` and compared with the copy held (one ranged GET).
    /// Nothing to compare and nothing of `cur`'s to carry: yes, as nothing of `cur` would
    /// serve `next`.
    pub(super) async fn same_history(&self, fetcher: &Fetcher, cur: &State, base: &State, next: &State) -> bool {
        for new in next.files().iter().filter(|f| f.object.max_txid <= cur.txid) {
            if let Some(old) = cur.files().iter().find(|f| f.object.max_txid == new.object.max_txid) {
                return old.header.timestamp_ms == new.header.timestamp_ms;
            }
        }
        let Some(carry) = Carry::between(base, next) else {
            return true;
        };
        let ours: std::collections::HashSet<_> = cur.files().iter().map(|f| f.key()).collect();
        for pgno in 1..=carry.max_pgno() {
            let Some((from, _)) = carry.page(pgno).filter(|(from, _)| ours.contains(from)) else {
                continue;
            };
            let Some(held) = self.held_page(&PageKey { file: from, pgno }, cur.page_size) else {
                continue;
            };
            let Some(loc) = next.locate(pgno) else {
                continue;
            };
            let range = loc.offset..loc.offset + loc.size as u64;
            let Ok(bytes) = fetcher.get_range(&loc.file.object, range).await else {
                // Unknown: treated as another history, which costs only fetches.
                return false;
            };
            let mut page = vec![0u8; next.page_size as usize];
            let frame = (pgno, loc.offset, loc.size);
            return decode_frame(loc.file, next.page_size, &bytes, loc.offset, frame, &mut page).is_ok()
                && page[..] == held[..];
        }
        true
    }

    /// The page `key` as this replica holds it: cached, or in the hydration file.
    fn held_page(&self, key: &PageKey, page_size: u32) -> Option<Vec<u8>> {
        if let Some(page) = self.cache.get(key) {
            return Some(page.to_vec());
        }
        let hydration = self.hydration.as_ref()?;
        let mut page = vec![0u8; page_size as usize];
        hydration.read(key, &mut page).ok()?.then_some(page)
    }
}
