//! Errors of the LTX codec.
//!
//! Every malformed input maps to a typed variant so callers (the VFS, the replica) can
//! turn it into `SQLITE_CORRUPT` with a precise message; nothing in the codec panics on
//! bad bytes.

use std::io;

/// Result alias used throughout the codec.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while reading, writing, compacting or applying LTX files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input ended in the middle of the named structure.
    #[error("ltx: truncated input while reading {0}")]
    Truncated(&'static str),

    /// The first four bytes are neither `LTX1` (v3) nor `LTX4` (v4, encrypted).
    #[error("ltx: bad magic {0:02x?}, expected \"LTX1\" or \"LTX4\"")]
    BadMagic([u8; 4]),

    /// The header sets a flag bit this implementation does not know.
    #[error("ltx: unknown header flags 0x{0:08x}")]
    UnknownHeaderFlags(u32),

    /// A header field breaks a rule of the format.
    #[error("ltx: invalid header field {field}: {reason}")]
    InvalidHeader {
        /// Name of the offending field.
        field: &'static str,
        /// Which rule it breaks.
        reason: String,
    },

    /// A trailer field breaks a rule of the format.
    #[error("ltx: invalid trailer: {0}")]
    InvalidTrailer(String),

    /// A page frame sets flag bits we do not understand.
    #[error("ltx: page frame for page {pgno} has unknown flags 0x{flags:04x}")]
    UnknownFrameFlags {
        /// Page number in the frame header.
        pgno: u32,
        /// The raw flags.
        flags: u16,
    },

    /// A page frame with page number 0 that is not the end marker.
    #[error("ltx: page frame with page number 0 (flags 0x{flags:04x})")]
    ZeroPgno {
        /// The flags of the frame.
        flags: u16,
    },

    /// Page numbers must be strictly ascending within a file.
    #[error("ltx: page {pgno} out of order after page {prev}")]
    PageOutOfOrder {
        /// The previous page number.
        prev: u32,
        /// The offending page number.
        pgno: u32,
    },

    /// A page above the database size recorded in the header.
    #[error("ltx: page {pgno} above commit {commit}")]
    PageAboveCommit {
        /// The offending page number.
        pgno: u32,
        /// Database size in pages.
        commit: u32,
    },

    /// The lock page (the page holding SQLite's PENDING_BYTE) is never stored.
    #[error("ltx: page {pgno} is the lock page and cannot be stored")]
    LockPage {
        /// The lock page number.
        pgno: u32,
    },

    /// A snapshot must hold every page 1..=commit except the lock page.
    #[error("ltx: snapshot is missing page {missing} (next page seen: {next})")]
    SnapshotIncomplete {
        /// First page number that is absent.
        missing: u32,
        /// The page that came instead (0 = end of the page frames).
        next: u32,
    },

    /// A buffer handed to the codec has the wrong length for the page size.
    #[error("ltx: page buffer is {actual} bytes, page size is {expected}")]
    PageSizeMismatch {
        /// The page size of the file.
        expected: u32,
        /// The length of the buffer given.
        actual: usize,
    },

    /// A frame claims more compressed bytes than any valid encoding of a page needs.
    #[error("ltx: page {pgno} claims {len} compressed bytes, more than the bound {max}")]
    FrameTooLarge {
        /// Page number of the frame.
        pgno: u32,
        /// Claimed compressed length.
        len: u64,
        /// Largest length a page of this size can compress to.
        max: u64,
    },

    /// The compressed payload of a page could not be decoded.
    #[error("ltx: page {pgno}: decompression failed: {reason}")]
    Decompress {
        /// Page number of the frame.
        pgno: u32,
        /// What the decompressor reported.
        reason: String,
    },

    /// The payload decompressed, but not to exactly one page.
    #[error("ltx: page {pgno} decompressed to {actual} bytes, expected {expected}")]
    DecompressedSize {
        /// Page number of the frame.
        pgno: u32,
        /// The page size.
        expected: usize,
        /// What we got (a lower bound if the output overflowed).
        actual: usize,
    },

    /// Compressing a page failed (only possible with zstd).
    #[error("ltx: compression failed: {0}")]
    Compress(String),

    /// The CRC-64 of the file does not match the trailer.
    #[error("ltx: file checksum mismatch: trailer says {expected:#018x}, computed {actual:#018x}")]
    ChecksumMismatch {
        /// Value stored in the trailer.
        expected: u64,
        /// Value computed over the file.
        actual: u64,
    },

    /// A snapshot's post-apply checksum does not match the pages it holds.
    #[error("ltx: snapshot post-apply checksum mismatch: trailer says {expected:#018x}, pages give {actual:#018x}")]
    PostApplyChecksumMismatch {
        /// Value stored in the trailer.
        expected: u64,
        /// Database checksum of the pages.
        actual: u64,
    },

    /// The page index is malformed or disagrees with the page frames.
    #[error("ltx: bad page index: {0}")]
    BadIndex(String),

    /// Bytes follow the trailer.
    #[error("ltx: trailing data after the trailer")]
    TrailingData,

    /// A file name or storage key is not of the form `%016x-%016x.ltx`.
    #[error("ltx: bad file name {0:?}")]
    BadFileName(String),

    /// Files handed to compaction or apply do not follow each other.
    #[error("ltx: TXIDs not contiguous: {prev_max:016x} then {min:016x}-{max:016x}")]
    NotContiguous {
        /// Max TXID of the previous file (or current database position).
        prev_max: u64,
        /// Min TXID of the next file.
        min: u64,
        /// Max TXID of the next file.
        max: u64,
    },

    /// Files handed to compaction or apply disagree on the page size.
    #[error("ltx: page size {actual} differs from {expected}")]
    PageSizeChanged {
        /// The page size established so far.
        expected: u32,
        /// The page size of the new file.
        actual: u32,
    },

    /// The file is encrypted (LTX v4) and no private key was given to read it.
    #[error("ltx: the file is encrypted (LTX v4, {recipients} recipient(s)) and no encryption key was given")]
    KeyRequired {
        /// Number of recipients the file's content key is wrapped to.
        recipients: u16,
    },

    /// The private key given opens none of the file's recipient entries.
    #[error("ltx: the encryption key given is not one of this file's {recipients} recipient(s) (wrong key)")]
    NotARecipient {
        /// Number of recipients the file's content key is wrapped to.
        recipients: u16,
    },

    /// A sealed page failed authentication: changed bytes, or a frame from another file
    /// or another page number.
    #[error("ltx: page {pgno} failed authentication (tampered, or not from this file)")]
    PageAuth {
        /// Page number in the frame header.
        pgno: u32,
    },

    /// The page index of an encrypted file does not match its authentication tag.
    #[error("ltx: page index authentication failed (tampered index, or a recipient block from another file)")]
    IndexAuth,

    /// The two copies of an encrypted file's recipient block differ.
    #[error("ltx: the recipient blocks at the start and the end of the file differ")]
    RecipientBlocksDiffer,

    /// A cryptographic operation failed for a reason other than bad input (randomness,
    /// a recipient public key the key exchange refuses).
    #[error("ltx: encryption: {0}")]
    Crypto(String),

    /// The API was used in a way the format cannot express (documented on each call).
    #[error("ltx: {0}")]
    Usage(&'static str),

    /// An I/O error from the underlying reader or writer.
    #[error("ltx: i/o: {0}")]
    Io(#[from] io::Error),
}

impl Error {
    /// Whether the error says the file's bytes are wrong (changed in storage or cut
    /// short), rather than that reading them failed or that the key does not open them:
    /// what a restore and `verify` call a damaged file.
    pub fn is_damage(&self) -> bool {
        !matches!(
            self,
            Error::Io(_)
                | Error::KeyRequired { .. }
                | Error::NotARecipient { .. }
                | Error::Crypto(_)
                | Error::Usage(_)
                | Error::Compress(_)
                | Error::PageSizeMismatch { .. }
        )
    }

    pub(crate) fn header(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidHeader {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn index(reason: impl Into<String>) -> Self {
        Error::BadIndex(reason.into())
    }
}

/// `read_exact` that reports a short read as [`Error::Truncated`] naming `what`, so a
/// cut-off file is distinguishable from a failing disk.
pub(crate) fn read_full<R: io::Read + ?Sized>(r: &mut R, buf: &mut [u8], what: &'static str) -> Result<()> {
    match r.read_exact(buf) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(Error::Truncated(what)),
        Err(e) => Err(Error::Io(e)),
    }
}
