//! At open, a keyed primary checks that its key opens every file it will need, not only
//! the newest one (`encryption.rs`).
//!
//! A rotation that skipped `rekey` (open with key A and `encrypt_to=B`, then with key B
//! alone) passed the newest-file check: the newest file was to A and B. Older files of
//! the restore plan were to A only, and B's files after them to B only, so no one key
//! restored the replica and compaction failed at every pass (found by a tester). What a
//! primary reads later is the latest restore plan (a restore, its own recovery, the
//! level-9 snapshot) and what compaction merges next; each encrypted one of them must be
//! open to its key.

use crate::ltx::crypto::{unwrap_content_key, Encryption, RECIPIENT_ENTRY_SIZE};
use crate::ltx::{Error, Header, HEADER_SIZE};
use crate::restore::Listing;
use crate::storage::{LtxObject, ReplicaStore};
use futures::StreamExt;
use std::collections::HashSet;

/// Requests in flight at once while the open checks the files.
const CONCURRENT_GETS: usize = 16;

/// Files named in the refusal; the rest are counted.
const NAMED: usize = 3;

/// The files a primary with a compaction ladder of `ladder_levels` levels (0: compaction
/// off) reads later: the latest restore plan, then for each level the files of the level
/// below that follow its last file (what compaction merges next). No file twice.
pub fn needed(listing: &Listing, ladder_levels: usize) -> Vec<LtxObject> {
    // A replica no plan reaches through is a broken chain, which the primary mends with
    // a snapshot (`compaction_turn.rs`): nothing of it is needed then.
    let mut out: Vec<LtxObject> = crate::restore::plan(listing, None).unwrap_or_default();
    let mut seen: HashSet<(u8, u64, u64)> = out.iter().map(|f| (f.level, f.min_txid, f.max_txid)).collect();
    for level in 1..=ladder_levels.min(crate::config::MAX_LEVELS) as u8 {
        let last = listing.level(level).last().map_or(0, |f| f.max_txid);
        for f in listing.level(level - 1).iter().filter(|f| f.max_txid > last) {
            if seen.insert((f.level, f.min_txid, f.max_txid)) {
                out.push(f.clone());
            }
        }
    }
    out
}

/// Reads the header and leading recipient block of each encrypted file of `files` and
/// refuses (the message names the files and the remedy) when `encryption`'s key opens
/// none of an encrypted file's entries. A file the store cannot give now, or whose
/// header does not decode, is only logged: the store's outages are tolerated at open,
/// and a corrupt file is the restore's and compaction's to report.
pub fn check_key_opens(store: &dyn ReplicaStore, files: &[LtxObject], encryption: &Encryption) -> Result<(), String> {
    // One GET per file when it has as many recipients as this primary writes to (files it
    // or its predecessor with the same settings wrote): header and block in one range.
    let guess = (HEADER_SIZE + RECIPIENT_ENTRY_SIZE * encryption.recipients().len()) as u64;
    let heads = futures::stream::iter(files)
        .map(|f| async move {
            (
                f,
                store
                    .get_range(f.level, f.min_txid, f.max_txid, 0..guess.min(f.size))
                    .await,
            )
        })
        .buffered(CONCURRENT_GETS)
        .collect::<Vec<_>>();
    let heads =
        crate::storage::while_application_waits(store, "GET", async { Ok::<_, crate::storage::Error>(heads.await) });
    let heads = match heads {
        Ok(heads) => heads,
        Err(e) => {
            tracing::warn!(
                replica = store.describe(),
                "not checked at open whether this key opens the files a restore needs: {e}"
            );
            return Ok(());
        }
    };
    let mut refused: Vec<(LtxObject, u16)> = Vec::new();
    for (f, head) in heads {
        let opened = head
            .map_err(|e| e.to_string())
            .and_then(|head| recipient_block_opens(store, f, &head, encryption));
        match opened {
            Ok(None) => {}
            Ok(Some(recipients)) => refused.push((f.clone(), recipients)),
            Err(e) => tracing::warn!(
                replica = store.describe(),
                level = f.level,
                min = f.min_txid,
                max = f.max_txid,
                "not checked at open whether this key opens the file: {e}"
            ),
        }
    }
    if refused.is_empty() {
        return Ok(());
    }
    Err(refusal(store, &refused, encryption))
}

/// `None` when `head` (the file's first bytes) is plaintext or its recipient block opens
/// with the key; else the number of recipients it is encrypted to.
fn recipient_block_opens(
    store: &dyn ReplicaStore,
    f: &LtxObject,
    head: &[u8],
    encryption: &Encryption,
) -> Result<Option<u16>, String> {
    let header = Header::decode(head).map_err(|e| e.to_string())?;
    if !header.is_encrypted() {
        return Ok(None);
    }
    let block = HEADER_SIZE as u64..header.frames_offset();
    let fetched;
    let bytes = if (head.len() as u64) < block.end {
        let read = store.get_range(f.level, f.min_txid, f.max_txid, block.clone());
        fetched = crate::storage::while_application_waits(store, "GET", read).map_err(|e| e.to_string())?;
        &fetched[..]
    } else {
        &head[block.start as usize..block.end as usize]
    };
    match unwrap_content_key(bytes, encryption.key()) {
        Ok(_) => Ok(None),
        Err(Error::NotARecipient { recipients }) => Ok(Some(recipients)),
        Err(e) => Err(e.to_string()),
    }
}

/// What the open says: which files, why that matters, and the remedy.
fn refusal(store: &dyn ReplicaStore, refused: &[(LtxObject, u16)], encryption: &Encryption) -> String {
    let mut named: Vec<String> = refused
        .iter()
        .take(NAMED)
        .map(|(f, n)| {
            format!(
                "level {} {:016x}-{:016x} (encrypted to {n} other key{})",
                f.level,
                f.min_txid,
                f.max_txid,
                if *n == 1 { "" } else { "s" }
            )
        })
        .collect();
    if refused.len() > NAMED {
        named.push(format!("and {} more", refused.len() - NAMED));
    }
    format!(
        "replica {} holds {} file(s) that a restore of its latest state or the next compaction needs \
         and that this database's key (public key {}) cannot open: {}. Continuing would write files \
         after them that only this key opens, leaving a replica no one key restores. Give those files \
         to this key first, while no primary writes to the replica: litestream-vfs rekey -key-file \
         <a key they are encrypted to> -encrypt-to {}[,<other public keys>] <replica URL> \
         (docs/encryption.md, \"Rotating keys\"); or open with a key they are encrypted to",
        store.describe(),
        refused.len(),
        encryption.key().public_key(),
        named.join(", "),
        encryption.key().public_key(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::restore::plan::tests::{f as file, listing};

    #[test]
    fn a_primary_needs_the_restore_plan_and_what_each_level_compacts_next() {
        let l = listing(&[
            file(9, 1, 10),
            file(2, 1, 20),
            file(1, 1, 10),
            file(1, 11, 20),
            file(1, 21, 30),
            file(0, 21, 25),
            file(0, 26, 30),
            file(0, 31, 31),
            file(0, 32, 32),
        ]);
        let keys: Vec<(u8, u64, u64)> = needed(&l, 2)
            .iter()
            .map(|f| (f.level, f.min_txid, f.max_txid))
            .collect();
        // The plan (snapshot, level 2, level 1, the level-0 tail), then what level 1 merges
        // next (level 0 after TXID 30: in the plan already) and level 2 (level 1's 21-30).
        assert_eq!(keys, [(9, 1, 10), (2, 1, 20), (1, 21, 30), (0, 31, 31), (0, 32, 32)]);
        // Compaction off: the plan alone.
        assert_eq!(needed(&l, 0).len(), 5);
        let l = listing(&[file(0, 1, 1), file(0, 2, 2), file(1, 1, 1)]);
        let keys: Vec<(u8, u64, u64)> = needed(&l, 1)
            .iter()
            .map(|f| (f.level, f.min_txid, f.max_txid))
            .collect();
        assert_eq!(keys, [(1, 1, 1), (0, 2, 2)]);
    }
}
