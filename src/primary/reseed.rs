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
use crate::ltx::{lock_pgno, Decoder, Encoder, Encoding, Header};
use std::io::Write;

/// `bytes` (a staged LTX file, opened with `key` if encrypted) re-encoded into `out` as a
/// snapshot from TXID 1, if it holds every page of the database; `None` when it is an
/// ordinary batch (then `out` holds the start of an unfinished file, to be discarded).
/// One page is in memory at a time: the image is the size of the database.
pub fn as_snapshot<W: Write>(
    bytes: &[u8],
    encoding: &Encoding,
    key: Option<&PrivateKey>,
    out: W,
) -> Result<Option<W>, String> {
    let reading = |e: crate::ltx::Error| format!("reading the staged reseed: {e}");
    let mut decoder = Decoder::with_key(bytes, key).map_err(reading)?;
    let source = *decoder.header();
    let header = Header {
        min_txid: 1,
        pre_apply_checksum: 0,
        ..source
    };
    let mut encoder = Encoder::with_encoding(out, header, encoding).map_err(|e| e.to_string())?;
    let lock = lock_pgno(source.page_size);
    let mut page = vec![0u8; source.page_size as usize];
    // The page a full image holds next.
    let mut want = 1u32;
    while let Some(pgno) = decoder.next_page(&mut page).map_err(reading)? {
        if pgno != want {
            // A batch: still read to its end, so that a damaged file says so.
            decoder.finish().map_err(reading)?;
            return Ok(None);
        }
        encoder.write_page(pgno, &page).map_err(|e| e.to_string())?;
        want = pgno + 1;
        if want == lock {
            want += 1;
        }
    }
    let summary = decoder.finish().map_err(reading)?;
    if want <= source.commit {
        return Ok(None);
    }
    let (out, _) = encoder
        .finish(summary.trailer.post_apply_checksum)
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
        let out = as_snapshot(&file(9, 9, 3, &[1, 2, 3]), &Compression::Lz4.into(), None, Vec::new())
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
        for pages in [&[2][..], &[1, 3], &[1, 2]] {
            assert!(
                as_snapshot(&file(9, 10, 3, pages), &Compression::Lz4.into(), None, Vec::new())
                    .unwrap()
                    .is_none(),
                "pages {pages:?} of 3"
            );
        }
    }

    #[test]
    fn an_encrypted_full_image_becomes_an_encrypted_snapshot_the_key_opens() {
        use crate::ltx::crypto::{OsEntropy, PrivateKey};
        use crate::ltx::{decode_file_with, Encoding};
        let key = PrivateKey::generate(&mut OsEntropy::default()).unwrap();
        let sealed = Encoding::sealed(Compression::Lz4, &[key.public_key()]);
        let header = Header {
            min_txid: 9,
            max_txid: 9,
            ..decode_file(&file(9, 9, 3, &[1, 2, 3])).unwrap().header
        };
        let mut enc = Encoder::with_encoding(Vec::new(), header, &sealed).unwrap();
        for p in 1..=3u32 {
            enc.write_page(p, &[p as u8; 1024]).unwrap();
        }
        let staged = enc.finish(0).unwrap().0;
        let out = as_snapshot(&staged, &sealed, Some(&key), Vec::new())
            .unwrap()
            .expect("a full image");
        let snap = decode_file_with(&out, Some(&key)).unwrap();
        assert_eq!((snap.header.min_txid, snap.header.max_txid), (1, 9));
        assert_eq!(snap.pages[1].1, vec![2u8; 1024]);
        assert!(decode_file(&out).is_err(), "sealed, not readable without the key");
    }

    #[test]
    fn a_damaged_batch_is_an_error_not_a_batch() {
        let mut bytes = file(9, 10, 3, &[2]);
        let n = bytes.len();
        bytes[n - 1] ^= 1; // the file checksum
        let got = as_snapshot(&bytes, &Compression::Lz4.into(), None, Vec::new());
        assert!(got.is_err(), "{:?}", got.map(|o| o.map(|v| v.len())));
    }
}
