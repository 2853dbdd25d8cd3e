//! A reseed whose page size differs from the replica's.
//!
//! SQLite cannot change the page size of a database in WAL mode, so a different page size
//! means the database was rebuilt outside the VFS (`PRAGMA page_size` + `VACUUM` in
//! rollback mode). The primary then reseeds with a full image at the next TXID, as for any
//! discontinuity. But a chain of files must keep one page size: restore plans (ours and
//! Litestream's) would otherwise meet a 1024-byte file after 4096-byte ones and give up,
//! leaving a replica nobody can read. So the full image is also stored as a level-9
//! snapshot covering TXIDs 1..=N: every plan for a point at or after N starts there.

use crate::ltx::crypto::PrivateKey;
use crate::ltx::{decode_file_with, lock_pgno, Encoder, Encoding, Header};

/// `bytes` (a staged LTX file, opened with `key` if encrypted) re-encoded as a snapshot
/// from TXID 1, if it holds every page of the database; `None` when it is an ordinary
/// batch.
pub fn as_snapshot(bytes: &[u8], encoding: &Encoding, key: Option<&PrivateKey>) -> Result<Option<Vec<u8>>, String> {
    let file = decode_file_with(bytes, key).map_err(|e| format!("reading the staged reseed: {e}"))?;
    let commit = file.header.commit;
    let lock = lock_pgno(file.header.page_size);
    let expected = commit as usize - usize::from(lock <= commit);
    if file.pages.len() != expected {
        return Ok(None);
    }
    let header = Header {
        min_txid: 1,
        pre_apply_checksum: 0,
        ..file.header
    };
    let mut encoder =
        Encoder::with_encoding(Vec::with_capacity(bytes.len()), header, encoding).map_err(|e| e.to_string())?;
    for (pgno, page) in &file.pages {
        encoder.write_page(*pgno, page).map_err(|e| e.to_string())?;
    }
    let (out, _) = encoder
        .finish(file.trailer.post_apply_checksum)
        .map_err(|e| e.to_string())?;
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ltx::{decode_file, Compression, FLAG_NO_CHECKSUM};

    fn file(min: u64, max: u64, commit: u32, pages: &[u32]) -> Vec<u8> {
        let header = Header {
            flags: FLAG_NO_CHECKSUM,
            page_size: 1024,
            commit,
            min_txid: min,
            max_txid: max,
            timestamp_ms: 1_700_000_000_000,
            pre_apply_checksum: 0,
            wal_offset: 0,
            wal_size: 0,
            wal_salt1: 0,
            wal_salt2: 0,
            node_id: 7,
            recipients: 0,
        };
        let mut enc = Encoder::new(Vec::new(), header, Compression::Lz4).unwrap();
        for p in pages {
            enc.write_page(*p, &[*p as u8; 1024]).unwrap();
        }
        enc.finish(0).unwrap().0
    }

    #[test]
    fn a_full_image_becomes_a_snapshot_from_txid_1_with_the_same_pages() {
        let out = as_snapshot(&file(9, 9, 3, &[1, 2, 3]), &Compression::Lz4.into(), None)
            .unwrap()
            .expect("a full image");
        let snap = decode_file(&out).unwrap();
        assert_eq!((snap.header.min_txid, snap.header.max_txid), (1, 9));
        assert_eq!(snap.header.timestamp_ms, 1_700_000_000_000);
        assert_eq!(snap.header.node_id, 7);
        let pgnos: Vec<u32> = snap.pages.iter().map(|(p, _)| *p).collect();
        assert_eq!(pgnos, [1, 2, 3]);
        assert_eq!(snap.pages[2].1, vec![3u8; 1024]);
    }

    #[test]
    fn an_ordinary_batch_is_not_a_snapshot() {
        assert!(as_snapshot(&file(9, 10, 3, &[2]), &Compression::Lz4.into(), None)
            .unwrap()
            .is_none());
    }
}
