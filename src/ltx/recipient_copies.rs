//! The two copies of an encrypted file's recipient block, compared. A streaming decode
//! (a restore, `ltx FILE`) opens the leading copy only, so a changed byte there read as
//! "the key is not a recipient" (wrong key), and an operator holding the right key was
//! told to look for another (found by a tester). The copy before the trailer tells the
//! two apart: when they differ the file is corrupt. Used after such a failure only.

use super::header::{Header, HEADER_SIZE, TRAILER_SIZE};
use std::ops::Range;

/// Where the copy of the recipient block at the end of an encrypted file of `len` bytes
/// lies (just before the trailer); `None` for a plaintext file or one too short for it.
pub fn trailing_block_range(header: &Header, len: u64) -> Option<Range<u64>> {
    let size = header.recipient_block_size() as u64;
    if size == 0 {
        return None;
    }
    let end = len.checked_sub(TRAILER_SIZE as u64)?;
    let start = end.checked_sub(size)?;
    (start >= header.frames_offset()).then_some(start..end)
}

/// Whether `file` (a whole encrypted file) holds two recipient blocks that differ.
/// False for a plaintext file, or one too short or malformed to say.
pub fn copies_differ(file: &[u8]) -> bool {
    let Ok(header) = Header::decode(file) else {
        return false;
    };
    let Some(trailing) = trailing_block_range(&header, file.len() as u64) else {
        return false;
    };
    let leading = HEADER_SIZE..header.frames_offset() as usize;
    file[leading] != file[trailing.start as usize..trailing.end as usize]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ltx::crypto::{Encryption, OsEntropy, PrivateKey};
    use crate::ltx::{Compression, Encoder, Encoding, FLAG_NO_CHECKSUM};

    fn sealed() -> Vec<u8> {
        let key = PrivateKey::generate(&mut OsEntropy::default()).unwrap();
        let encryption = Encryption::new(key, &[]);
        let header = Header {
            flags: FLAG_NO_CHECKSUM,
            page_size: 512,
            commit: 1,
            min_txid: 1,
            max_txid: 1,
            timestamp_ms: 1000,
            ..Header::default()
        };
        let mut enc =
            Encoder::with_encoding(Vec::new(), header, &Encoding::new(Compression::Lz4, Some(&encryption))).unwrap();
        enc.write_page(1, &[1u8; 512]).unwrap();
        enc.finish(0).unwrap().0
    }

    #[test]
    fn a_changed_byte_in_either_recipient_block_makes_the_copies_differ() {
        let file = sealed();
        assert!(!copies_differ(&file));
        let header = Header::decode(&file).unwrap();
        let trailing = trailing_block_range(&header, file.len() as u64).unwrap();
        for at in [HEADER_SIZE + 5, HEADER_SIZE + 79, trailing.start as usize + 40] {
            let mut bad = file.clone();
            bad[at] ^= 1;
            assert!(copies_differ(&bad), "byte {at}");
        }
        assert!(!copies_differ(&file[..50]));
    }
}
