//! The 100-byte LTX header and the 16-byte trailer.
//!
//! Two magics: `LTX1` (v3, plaintext: what Litestream 0.5 writes) and `LTX4` (v4, which
//! adds per-page encryption in bytes 80..88; see `docs/encryption.md`). We write `LTX4`
//! only for encrypted files, as the proposal's encoder does.

use super::checksum::{lock_pgno, CHECKSUM_FLAG};
use super::crypto::{AEAD_CHACHA20_POLY1305, KDF_HKDF_SHA256, KEM_X25519_HKDF_SHA256, RECIPIENT_ENTRY_SIZE};
use super::error::{Error, Result};

/// First four bytes of a plaintext (v3) file.
pub const MAGIC: [u8; 4] = *b"LTX1";
/// First four bytes of a v4 file (in practice: an encrypted one).
pub const MAGIC_V4: [u8; 4] = *b"LTX4";
/// Size of the encoded header.
pub const HEADER_SIZE: usize = 100;
/// Size of the encoded trailer.
pub const TRAILER_SIZE: usize = 16;
/// Header flag: the file does not track database checksums (pre/post-apply are 0).
/// Litestream sets it on every file it writes.
pub const FLAG_NO_CHECKSUM: u32 = 0x0000_0002;
/// Header flag (v4 only): pages are sealed, a recipient block follows the header.
pub const FLAG_ENCRYPTED: u32 = 0x0000_0004;
/// Every header flag this implementation understands.
pub const HEADER_FLAGS_MASK: u32 = FLAG_NO_CHECKSUM | FLAG_ENCRYPTED;
/// Smallest SQLite page size.
pub const MIN_PAGE_SIZE: u32 = 512;
/// Largest SQLite page size.
pub const MAX_PAGE_SIZE: u32 = 65536;

/// True for the page sizes SQLite supports: powers of two in 512..=65536.
pub const fn is_valid_page_size(page_size: u32) -> bool {
    page_size.is_power_of_two() && page_size >= MIN_PAGE_SIZE && page_size <= MAX_PAGE_SIZE
}

/// Decoded LTX header. All integers are big-endian on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Header {
    /// Header flags: [`FLAG_NO_CHECKSUM`], [`FLAG_ENCRYPTED`].
    pub flags: u32,
    /// Database page size in bytes.
    pub page_size: u32,
    /// Database size in pages after this file is applied (0 = empty database).
    pub commit: u32,
    /// First TXID covered (1 = the file is a snapshot).
    pub min_txid: u64,
    /// Last TXID covered.
    pub max_txid: u64,
    /// Creation time, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Database checksum before the file is applied (0 for snapshots / NoChecksum files).
    pub pre_apply_checksum: u64,
    /// Offset in the source WAL of the first frame this file covers (0 = not from a WAL).
    pub wal_offset: i64,
    /// Number of WAL bytes this file covers.
    pub wal_size: i64,
    /// Salt-1 of the source WAL header.
    pub wal_salt1: u32,
    /// Salt-2 of the source WAL header.
    pub wal_salt2: u32,
    /// Id of the node that wrote the file (0 = unset).
    pub node_id: u64,
    /// Number of recipients the content key is wrapped to: nonzero exactly when
    /// [`FLAG_ENCRYPTED`] is set (v4 bytes 80..82).
    pub recipients: u16,
}

fn be_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

impl Header {
    /// True if the file holds the whole database (it starts at TXID 1).
    pub fn is_snapshot(&self) -> bool {
        self.min_txid == 1
    }

    /// True if the NoChecksum flag is set.
    pub fn no_checksum(&self) -> bool {
        self.flags & FLAG_NO_CHECKSUM != 0
    }

    /// True if the pages are sealed (an LTX v4 encrypted file).
    pub fn is_encrypted(&self) -> bool {
        self.flags & FLAG_ENCRYPTED != 0
    }

    /// Size of each of the two recipient blocks (0 for a plaintext file).
    pub fn recipient_block_size(&self) -> usize {
        if self.is_encrypted() {
            self.recipients as usize * RECIPIENT_ENTRY_SIZE
        } else {
            0
        }
    }

    /// Offset of the first page frame: after the header and the recipient block.
    pub fn frames_offset(&self) -> u64 {
        (HEADER_SIZE + self.recipient_block_size()) as u64
    }

    /// The header of the same file written in plaintext (v3): encryption cleared.
    pub fn plaintext(mut self) -> Header {
        self.flags &= !FLAG_ENCRYPTED;
        self.recipients = 0;
        self
    }

    /// Lock page number for this file's page size.
    pub fn lock_pgno(&self) -> u32 {
        lock_pgno(self.page_size)
    }

    /// Encodes the header: `LTX1` with 20 zero reserved bytes, or for an encrypted file
    /// `LTX4` with the recipient count and the HPKE suite ids in bytes 80..88.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(if self.is_encrypted() { &MAGIC_V4 } else { &MAGIC });
        b[4..8].copy_from_slice(&self.flags.to_be_bytes());
        b[8..12].copy_from_slice(&self.page_size.to_be_bytes());
        b[12..16].copy_from_slice(&self.commit.to_be_bytes());
        b[16..24].copy_from_slice(&self.min_txid.to_be_bytes());
        b[24..32].copy_from_slice(&self.max_txid.to_be_bytes());
        b[32..40].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        b[40..48].copy_from_slice(&self.pre_apply_checksum.to_be_bytes());
        b[48..56].copy_from_slice(&self.wal_offset.to_be_bytes());
        b[56..64].copy_from_slice(&self.wal_size.to_be_bytes());
        b[64..68].copy_from_slice(&self.wal_salt1.to_be_bytes());
        b[68..72].copy_from_slice(&self.wal_salt2.to_be_bytes());
        b[72..80].copy_from_slice(&self.node_id.to_be_bytes());
        if self.is_encrypted() {
            b[80..82].copy_from_slice(&self.recipients.to_be_bytes());
            b[82..84].copy_from_slice(&KEM_X25519_HKDF_SHA256.to_be_bytes());
            b[84..86].copy_from_slice(&KDF_HKDF_SHA256.to_be_bytes());
            b[86..88].copy_from_slice(&AEAD_CHACHA20_POLY1305.to_be_bytes());
        }
        b
    }

    /// Decodes and validates a header from the first 100 bytes of `b` (extra bytes are
    /// ignored). The reserved bytes are not checked, as the format says; in a v4 file the
    /// encryption fields are, and only when the file says it is encrypted.
    pub fn decode(b: &[u8]) -> Result<Header> {
        if b.len() < HEADER_SIZE {
            return Err(Error::Truncated("header"));
        }
        let v4 = match [b[0], b[1], b[2], b[3]] {
            MAGIC => false,
            MAGIC_V4 => true,
            other => return Err(Error::BadMagic(other)),
        };
        let flags = be_u32(b, 4);
        if !v4 && flags & FLAG_ENCRYPTED != 0 {
            return Err(Error::header("flags", "the encrypted flag needs an LTX4 (v4) file"));
        }
        let encrypted = v4 && flags & FLAG_ENCRYPTED != 0;
        if encrypted {
            let suite = [be_u16(b, 82), be_u16(b, 84), be_u16(b, 86)];
            let want = [KEM_X25519_HKDF_SHA256, KDF_HKDF_SHA256, AEAD_CHACHA20_POLY1305];
            if suite != want {
                return Err(Error::header(
                    "encryption",
                    format!(
                        "unsupported HPKE suite KEM {:#06x} KDF {:#06x} AEAD {:#06x} (only X25519 / HKDF-SHA256 / ChaCha20-Poly1305)",
                        suite[0], suite[1], suite[2]
                    ),
                ));
            }
        }
        let h = Header {
            flags: be_u32(b, 4),
            page_size: be_u32(b, 8),
            commit: be_u32(b, 12),
            min_txid: be_u64(b, 16),
            max_txid: be_u64(b, 24),
            timestamp_ms: be_u64(b, 32) as i64,
            pre_apply_checksum: be_u64(b, 40),
            wal_offset: be_u64(b, 48) as i64,
            wal_size: be_u64(b, 56) as i64,
            wal_salt1: be_u32(b, 64),
            wal_salt2: be_u32(b, 68),
            node_id: be_u64(b, 72),
            recipients: if encrypted { be_u16(b, 80) } else { 0 },
        };
        h.validate()?;
        Ok(h)
    }

    /// Checks every rule the format puts on header fields.
    pub fn validate(&self) -> Result<()> {
        if self.flags & !HEADER_FLAGS_MASK != 0 {
            return Err(Error::UnknownHeaderFlags(self.flags));
        }
        if self.is_encrypted() != (self.recipients != 0) {
            return Err(Error::header(
                "recipients",
                format!(
                    "{} recipient(s) with the encrypted flag {}",
                    self.recipients,
                    if self.is_encrypted() { "set" } else { "clear" }
                ),
            ));
        }
        if !is_valid_page_size(self.page_size) {
            return Err(Error::header(
                "page_size",
                format!("{} is not a power of two in 512..=65536", self.page_size),
            ));
        }
        if self.min_txid == 0 {
            return Err(Error::header("min_txid", "must be at least 1"));
        }
        if self.max_txid < self.min_txid {
            return Err(Error::header(
                "max_txid",
                format!("{} is below min_txid {}", self.max_txid, self.min_txid),
            ));
        }
        if self.is_snapshot() {
            if self.pre_apply_checksum != 0 {
                return Err(Error::header("pre_apply_checksum", "must be 0 on a snapshot"));
            }
        } else if self.no_checksum() {
            if self.pre_apply_checksum != 0 {
                return Err(Error::header(
                    "pre_apply_checksum",
                    "must be 0 when the NoChecksum flag is set",
                ));
            }
        } else if self.pre_apply_checksum & CHECKSUM_FLAG == 0 {
            return Err(Error::header(
                "pre_apply_checksum",
                format!("{:#018x} lacks bit 63", self.pre_apply_checksum),
            ));
        }
        if self.wal_offset < 0 {
            return Err(Error::header("wal_offset", "negative"));
        }
        if self.wal_size < 0 {
            return Err(Error::header("wal_size", "negative"));
        }
        if self.wal_offset == 0 && (self.wal_size != 0 || self.wal_salt1 != 0 || self.wal_salt2 != 0) {
            return Err(Error::header(
                "wal_offset",
                "must be nonzero when WAL size or salts are set",
            ));
        }
        Ok(())
    }
}

/// The last 16 bytes of a file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Trailer {
    /// Database checksum after the file is applied (0 when NoChecksum is set).
    pub post_apply_checksum: u64,
    /// CRC-64 of the file (see the format notes), bit 63 set.
    pub file_checksum: u64,
}

impl Trailer {
    /// Encodes the trailer.
    pub fn encode(&self) -> [u8; TRAILER_SIZE] {
        let mut b = [0u8; TRAILER_SIZE];
        b[0..8].copy_from_slice(&self.post_apply_checksum.to_be_bytes());
        b[8..16].copy_from_slice(&self.file_checksum.to_be_bytes());
        b
    }

    /// Decodes the trailer from the first 16 bytes of `b` without validating it.
    pub fn decode(b: &[u8]) -> Result<Trailer> {
        if b.len() < TRAILER_SIZE {
            return Err(Error::Truncated("trailer"));
        }
        Ok(Trailer {
            post_apply_checksum: be_u64(b, 0),
            file_checksum: be_u64(b, 8),
        })
    }

    /// Checks the post-apply checksum against the header's checksum mode and that the
    /// file checksum is well formed.
    pub fn validate(&self, header: &Header) -> Result<()> {
        if header.no_checksum() {
            if self.post_apply_checksum != 0 {
                return Err(Error::InvalidTrailer(format!(
                    "post-apply checksum {:#018x} must be 0 when NoChecksum is set",
                    self.post_apply_checksum
                )));
            }
        } else if self.post_apply_checksum & CHECKSUM_FLAG == 0 {
            return Err(Error::InvalidTrailer(format!(
                "post-apply checksum {:#018x} lacks bit 63",
                self.post_apply_checksum
            )));
        }
        self.validate_file_checksum()
    }

    /// Checks that the file checksum has bit 63 set (which also makes it nonzero).
    pub fn validate_file_checksum(&self) -> Result<()> {
        if self.file_checksum & CHECKSUM_FLAG == 0 {
            return Err(Error::InvalidTrailer(format!(
                "file checksum {:#018x} lacks bit 63",
                self.file_checksum
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            flags: FLAG_NO_CHECKSUM,
            page_size: 4096,
            commit: 7,
            min_txid: 5,
            max_txid: 9,
            timestamp_ms: 1_700_000_000_123,
            pre_apply_checksum: 0,
            wal_offset: 32,
            wal_size: 4152,
            wal_salt1: 0xdead_beef,
            wal_salt2: 0x0102_0304,
            node_id: 42,
            recipients: 0,
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let h = sample();
        let b = h.encode();
        assert_eq!(&b[0..4], b"LTX1");
        assert_eq!(&b[8..12], &4096u32.to_be_bytes());
        assert!(b[80..].iter().all(|&x| x == 0));
        assert_eq!(Header::decode(&b).unwrap(), h);
        // Reserved bytes are ignored on read.
        let mut r = b;
        r[90] = 0xff;
        assert_eq!(Header::decode(&r).unwrap(), h);
    }

    #[test]
    fn rejects_each_rule() {
        let bad = |f: &dyn Fn(&mut Header)| {
            let mut h = sample();
            f(&mut h);
            Header::decode(&h.encode()).unwrap_err()
        };
        assert!(matches!(bad(&|h| h.flags = 1), Error::UnknownHeaderFlags(1)));
        assert!(matches!(bad(&|h| h.flags = 0x8000_0002), Error::UnknownHeaderFlags(_)));
        for ps in [0, 256, 1000, 131072, 4097] {
            let e = bad(&|h| h.page_size = ps);
            assert!(matches!(e, Error::InvalidHeader { field: "page_size", .. }), "{ps}");
        }
        assert!(matches!(
            bad(&|h| h.min_txid = 0),
            Error::InvalidHeader { field: "min_txid", .. }
        ));
        assert!(matches!(
            bad(&|h| h.max_txid = 4),
            Error::InvalidHeader { field: "max_txid", .. }
        ));
        assert!(matches!(
            bad(&|h| h.pre_apply_checksum = CHECKSUM_FLAG),
            Error::InvalidHeader {
                field: "pre_apply_checksum",
                ..
            }
        ));
        assert!(matches!(
            bad(&|h| {
                h.flags = 0;
                h.pre_apply_checksum = 5;
            }),
            Error::InvalidHeader {
                field: "pre_apply_checksum",
                ..
            }
        ));
        assert!(matches!(
            bad(&|h| {
                h.min_txid = 1;
                h.flags = 0;
                h.pre_apply_checksum = CHECKSUM_FLAG | 5;
            }),
            Error::InvalidHeader {
                field: "pre_apply_checksum",
                ..
            }
        ));
        assert!(matches!(
            bad(&|h| h.wal_offset = -1),
            Error::InvalidHeader {
                field: "wal_offset",
                ..
            }
        ));
        assert!(matches!(
            bad(&|h| h.wal_size = -1),
            Error::InvalidHeader { field: "wal_size", .. }
        ));
        assert!(matches!(
            bad(&|h| h.wal_offset = 0),
            Error::InvalidHeader {
                field: "wal_offset",
                ..
            }
        ));
        // Checksummed incremental with a proper pre-apply checksum is fine.
        let mut ok = sample();
        ok.flags = 0;
        ok.pre_apply_checksum = CHECKSUM_FLAG | 77;
        Header::decode(&ok.encode()).unwrap();
    }

    #[test]
    fn bad_magic_and_short() {
        let mut b = sample().encode();
        b[3] = b'2';
        assert!(matches!(Header::decode(&b), Err(Error::BadMagic(m)) if &m == b"LTX2"));
        assert!(matches!(Header::decode(&b[..99]), Err(Error::Truncated("header"))));
    }

    #[test]
    fn trailer_rules() {
        let mut h = sample();
        let t = Trailer {
            post_apply_checksum: 0,
            file_checksum: CHECKSUM_FLAG | 1,
        };
        assert_eq!(Trailer::decode(&t.encode()).unwrap(), t);
        t.validate(&h).unwrap();
        let bad_post = Trailer {
            post_apply_checksum: CHECKSUM_FLAG,
            ..t
        };
        assert!(bad_post.validate(&h).is_err());
        h.flags = 0;
        bad_post.validate(&h).unwrap();
        assert!(t.validate(&h).is_err());
        let bad_file = Trailer {
            post_apply_checksum: CHECKSUM_FLAG,
            file_checksum: 0,
        };
        assert!(bad_file.validate(&h).is_err());
    }
}
