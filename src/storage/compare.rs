//! Is the file already stored under a name the one we meant to write there?
//!
//! Asked when a conditional create finds the name taken: our own earlier attempt (whose
//! answer was lost) is success, anything else is another writer's. Files can be as large
//! as the database, so a large one is not read whole: its size, then its first and last
//! MiB are compared. The last 16 bytes of an LTX file hold its file checksum, a CRC-64
//! over its header, every page (decompressed), its index and its post-apply checksum; so
//! another file of the same size, with the same header (TXIDs, timestamp to the
//! millisecond) and the same index tail, that still differs elsewhere has the same
//! checksum only by a 1-in-2^64 accident. Comparing a 5 TB snapshot byte for byte would
//! download it.

use super::error::Result;
use super::store::ReplicaStore;

/// Files up to this size are read whole and compared byte for byte.
const WHOLE: u64 = 16 << 20;

/// How much of each end of a larger file is compared.
const ENDS: u64 = 1 << 20;

/// An LTX file's trailer: post-apply checksum and file checksum.
const TRAILER: usize = 16;

/// What is stored under a name, compared with what we meant to write there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// Our bytes (for a large file: same size, same first and last MiB).
    Same,
    /// What a local file linked into place but never written back looks like after a
    /// power cut: empty, or zeros where its magic or its trailer should be. No whole LTX
    /// file does (it starts with its magic and ends with two checksums with bit 63 set).
    Torn,
    /// Another writer's file.
    Other,
}

/// Compares the stored file (`level`, `min_txid`, `max_txid`) with `data`, in at most
/// three requests and 2 MiB of memory for a large file.
pub async fn compare(store: &dyn ReplicaStore, level: u8, min_txid: u64, max_txid: u64, data: &[u8]) -> Result<Found> {
    let size = store.head(level, min_txid, max_txid).await?.size;
    if size == 0 {
        return Ok(Found::Torn);
    }
    let len = data.len() as u64;
    let (head, tail) = if size == len && size <= WHOLE {
        let whole = store.get(level, min_txid, max_txid).await?;
        (whole.clone(), whole)
    } else {
        let end = ENDS.min(size);
        let head = store.get_range(level, min_txid, max_txid, 0..end).await?;
        let tail = store.get_range(level, min_txid, max_txid, size - end..size).await?;
        (head, tail)
    };
    // Up to WHOLE, `head` is all of the stored file.
    if size == len && data.starts_with(&head) && data.ends_with(&tail) {
        return Ok(Found::Same);
    }
    let zeros = |b: &[u8]| b.iter().all(|&b| b == 0);
    if zeros(&head[..head.len().min(4)]) || zeros(&tail[tail.len().saturating_sub(TRAILER)..]) {
        return Ok(Found::Torn);
    }
    Ok(Found::Other)
}

/// Whether the stored file is `data` (see [`compare`]).
pub async fn stored_equals(
    store: &dyn ReplicaStore,
    level: u8,
    min_txid: u64,
    max_txid: u64,
    data: &[u8],
) -> Result<bool> {
    Ok(compare(store, level, min_txid, max_txid, data).await? == Found::Same)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::storage::{open_store, StoreOptions};

    fn ltx_like(len: usize, seed: u8) -> Vec<u8> {
        let mut v: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect();
        v[..4].copy_from_slice(b"LTX1");
        let n = v.len();
        v[n - 8..].fill(0x80);
        v
    }

    fn store(name: &str) -> Arc<dyn ReplicaStore> {
        open_store(&format!("memory://{name}/db"), &StoreOptions::default()).unwrap()
    }

    fn put(store: &dyn ReplicaStore, data: &[u8]) {
        crate::runtime::block_on(store.put(0, 1, 1, Bytes::copy_from_slice(data), 0)).unwrap();
    }

    fn found(store: &dyn ReplicaStore, data: &[u8]) -> Found {
        crate::runtime::block_on(compare(store, 0, 1, 1, data)).unwrap()
    }

    #[test]
    fn small_files_are_compared_byte_for_byte() {
        let s = store("compare-small");
        let ours = ltx_like(10_000, 1);
        put(&*s, &ours);
        assert_eq!(found(&*s, &ours), Found::Same);
        let mut middle = ours.clone();
        middle[5_000] ^= 1;
        assert_eq!(found(&*s, &middle), Found::Other, "one byte in the middle differs");
        assert_eq!(found(&*s, &ours[..9_000]), Found::Other, "a shorter file");
    }

    #[test]
    fn large_files_are_compared_by_size_and_ends() {
        let s = store("compare-large");
        let ours = ltx_like((WHOLE + 3 * ENDS) as usize, 2);
        put(&*s, &ours);
        assert_eq!(found(&*s, &ours), Found::Same);
        for at in [10, ours.len() - 10, ENDS as usize - 1, ours.len() - ENDS as usize] {
            let mut other = ours.clone();
            other[at] ^= 1;
            assert_eq!(found(&*s, &other), Found::Other, "a byte at {at} differs");
        }
        let mut longer = ours.clone();
        longer.insert(ours.len() / 2, 7);
        assert_eq!(found(&*s, &longer), Found::Other, "a file one byte longer");
    }

    #[test]
    fn empty_or_zeroed_ends_are_torn() {
        let s = store("compare-torn");
        let ours = ltx_like(100_000, 3);
        put(&*s, &[]);
        assert_eq!(found(&*s, &ours), Found::Torn);
        put(&*s, &vec![0; ours.len()]);
        assert_eq!(found(&*s, &ours), Found::Torn);
        let mut tail_lost = ours.clone();
        let n = tail_lost.len();
        tail_lost[n - 4096..].fill(0);
        put(&*s, &tail_lost);
        assert_eq!(found(&*s, &ours), Found::Torn);
    }
}
