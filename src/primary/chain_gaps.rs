//! Gaps in the replica found by compaction, which already lists a level and its input:
//! a level-0 file lost from the middle of a replica (deleted, a mount gone from under
//! the primary for a while), or the whole replica emptied or put back from an older copy
//! under a live primary, after which the primary went on uploading increments no
//! restore can reach. Before, compaction logged "has a gap" and merged on from past it;
//! the primary acknowledged every sync and restores stopped at the gap.
//!
//! A gap found here that no level-9 snapshot bridges has the primary take a full
//! snapshot, stored at level 9 too (`CompactionEvent::ChainBroken`): restores of the
//! latest state start from it again. A snapshot the primary stored after the TXIDs it
//! lacks bridges it (a reseed after an open that found the replica lacking TXIDs, an
//! earlier ChainBroken), so a gap is reported once, not at every window and level.
//!
//! Cost: one LIST of level 9 when a level's input does not continue it, which in a
//! healthy replica only happens after retention emptied a level; an idle database's
//! windows still make no request (`compaction_turn.rs`).

use super::compactor::{Compactor, SNAPSHOT_LEVEL};
use crate::runtime::block_on;
use crate::storage::LtxObject;

impl Compactor {
    /// Whether `next`, the first file of level `level - 1` after TXID `after` (the end of
    /// what level `level` or the chain being merged holds, 0 for an empty level), leaves
    /// TXIDs no file of the input holds, and no level-9 snapshot bridges them: why, if
    /// so. A file starting at TXID 1 (`after` 0) needs nothing before it.
    pub(super) fn unbridged_gap(&self, level: u8, after: u64, next: &LtxObject) -> Result<Option<String>, String> {
        if next.min_txid <= after + 1 {
            return Ok(None);
        }
        let snapshots = block_on(self.store.list(SNAPSHOT_LEVEL)).map_err(|e| e.to_string())?;
        // A restore of any state from `next` on can start at a snapshot reaching as far.
        if snapshots.iter().any(|s| s.max_txid + 1 >= next.min_txid) {
            return Ok(None);
        }
        let missing = if after == 0 {
            format!("holds no file before TXID {} and no snapshot reaches it", next.min_txid)
        } else {
            let missing = match (after + 1, next.min_txid - 1) {
                (first, last) if first == last => format!("TXID {first}"),
                (first, last) => format!("TXIDs {first}-{last}"),
            };
            format!("has a gap after TXID {after}: no file holds {missing} and no snapshot bridges it")
        };
        Ok(Some(format!(
            "level {} {missing} (the next file, {}, starts at TXID {}): no restore reaches the TXIDs stored after it",
            level - 1,
            crate::ltx::format_name(next.min_txid, next.max_txid),
            next.min_txid
        )))
    }
}
