//! After a restore failed: which encrypted files of its plan are corrupt in the one way
//! that reads as a wrong key. A restore opens each file's leading recipient block; a
//! changed byte there failed as "the key given is not one of this file's recipients"
//! (`recipient_copies.rs`). Two ranged GETs per encrypted file, only after a failure.

use crate::ltx::recipient_copies::trailing_block_range;
use crate::ltx::{Header, HEADER_SIZE};
use crate::runtime::block_on;
use crate::storage::{LtxObject, ReplicaStore};

/// The files of `plan` whose two recipient blocks differ. A file the store does not give
/// now is skipped: this only adds to an error already reported.
pub fn recipient_copies_differ(store: &dyn ReplicaStore, plan: &[LtxObject]) -> Vec<LtxObject> {
    let get = |f: &LtxObject, range: std::ops::Range<u64>| {
        block_on(store.get_range(f.level, f.min_txid, f.max_txid, range)).ok()
    };
    plan.iter()
        .filter(|f| {
            let Some(head) = get(f, 0..HEADER_SIZE as u64) else {
                return false;
            };
            let Ok(header) = Header::decode(&head) else {
                return false;
            };
            let Some(trailing) = trailing_block_range(&header, f.size) else {
                return false;
            };
            match (get(f, HEADER_SIZE as u64..header.frames_offset()), get(f, trailing)) {
                (Some(leading), Some(trailing)) => leading != trailing,
                _ => false,
            }
        })
        .cloned()
        .collect()
}
