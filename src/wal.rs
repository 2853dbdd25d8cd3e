//! SQLite WAL file format: the 32-byte header, 24-byte frame headers, and the
//! cumulative checksum chain that tells a valid frame from a stale one.
//!
//! Pure parsing, no I/O: capture feeds it bytes it saw written or read back.

use thiserror::Error;

pub const HEADER_SIZE: usize = 32;
pub const FRAME_HEADER_SIZE: usize = 24;
const MAGIC_LE: u32 = 0x377f_0682;
const MAGIC_BE: u32 = 0x377f_0683;
const VERSION: u32 = 3_007_000;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WalError {
    #[error("WAL header is {0} bytes, need 32")]
    ShortHeader(usize),
    #[error("WAL magic {0:#010x} is not SQLite's")]
    BadMagic(u32),
    #[error("WAL format version {0} is not 3007000")]
    BadVersion(u32),
    #[error("WAL page size {0} is not a power of two in 512..=65536")]
    BadPageSize(u32),
    #[error("WAL header checksum does not match")]
    BadHeaderChecksum,
}

/// The WAL file header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalHeader {
    /// Checksums are computed on big-endian words (magic low bit set).
    pub big_endian: bool,
    pub page_size: u32,
    pub checkpoint_seq: u32,
    pub salt1: u32,
    pub salt2: u32,
    /// Checksum of the first 24 header bytes: the seed of the frame chain.
    pub checksum: (u32, u32),
}

impl WalHeader {
    pub fn parse(bytes: &[u8]) -> Result<WalHeader, WalError> {
        if bytes.len() < HEADER_SIZE {
            return Err(WalError::ShortHeader(bytes.len()));
        }
        let magic = be32(bytes, 0);
        let big_endian = match magic {
            MAGIC_LE => false,
            MAGIC_BE => true,
            other => return Err(WalError::BadMagic(other)),
        };
        let version = be32(bytes, 4);
        if version != VERSION {
            return Err(WalError::BadVersion(version));
        }
        // A stored 1 means 65536: the field is 32 bits but SQLite keeps it in 16.
        let page_size = match be32(bytes, 8) {
            1 => 65536,
            n => n,
        };
        if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(WalError::BadPageSize(page_size));
        }
        let checksum = (be32(bytes, 24), be32(bytes, 28));
        if checksum_update((0, 0), &bytes[..24], big_endian) != checksum {
            return Err(WalError::BadHeaderChecksum);
        }
        Ok(WalHeader {
            big_endian,
            page_size,
            checkpoint_seq: be32(bytes, 12),
            salt1: be32(bytes, 16),
            salt2: be32(bytes, 20),
            checksum,
        })
    }

    pub fn frame_size(&self) -> u64 {
        FRAME_HEADER_SIZE as u64 + self.page_size as u64
    }

    /// Byte offset of frame `index` (0-based) in the WAL file.
    pub fn frame_offset(&self, index: u64) -> u64 {
        HEADER_SIZE as u64 + index * self.frame_size()
    }
}

/// A frame header as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub pgno: u32,
    /// Database size in pages after this commit; 0 for a non-commit frame.
    pub commit: u32,
    pub salt1: u32,
    pub salt2: u32,
    pub checksum: (u32, u32),
}

impl FrameHeader {
    pub fn parse(bytes: &[u8; FRAME_HEADER_SIZE]) -> FrameHeader {
        FrameHeader {
            pgno: be32(bytes, 0),
            commit: be32(bytes, 4),
            salt1: be32(bytes, 8),
            salt2: be32(bytes, 12),
            checksum: (be32(bytes, 16), be32(bytes, 20)),
        }
    }

    pub fn is_commit(&self) -> bool {
        self.commit != 0
    }

    /// Checks this frame against the header's salts and the running checksum `prev`
    /// (the header's checksum for frame 0, else the previous frame's). Returns the
    /// new running checksum when the frame is valid.
    pub fn verify(&self, header: &WalHeader, prev: (u32, u32), frame_header: &[u8], page: &[u8]) -> Option<(u32, u32)> {
        if self.pgno == 0 || self.salt1 != header.salt1 || self.salt2 != header.salt2 {
            return None;
        }
        if page.len() != header.page_size as usize || frame_header.len() < 8 {
            return None;
        }
        let sum = checksum_update(prev, &frame_header[..8], header.big_endian);
        let sum = checksum_update(sum, page, header.big_endian);
        (sum == self.checksum).then_some(sum)
    }
}

/// SQLite's WAL checksum: Fibonacci-weighted sums over pairs of 32-bit words in the
/// byte order the magic number names. `data.len()` must be a multiple of 8.
pub fn checksum_update(seed: (u32, u32), data: &[u8], big_endian: bool) -> (u32, u32) {
    let (mut s1, mut s2) = seed;
    let read: fn([u8; 4]) -> u32 = if big_endian {
        u32::from_be_bytes
    } else {
        u32::from_le_bytes
    };
    for pair in data.chunks_exact(8) {
        let x0 = read([pair[0], pair[1], pair[2], pair[3]]);
        let x1 = read([pair[4], pair[5], pair[6], pair[7]]);
        s1 = s1.wrapping_add(x0).wrapping_add(s2);
        s2 = s2.wrapping_add(x1).wrapping_add(s1);
    }
    (s1, s2)
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// One committed transaction found by [`scan_committed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScannedCommit {
    /// Index of the commit frame.
    pub commit_frame: u64,
    /// Database size in pages after the commit.
    pub commit: u32,
    /// Running checksum after the commit frame: the chain position to resume from.
    pub checksum: (u32, u32),
    /// (pgno, page bytes) in frame order; a later frame for the same page wins.
    pub pages: Vec<(u32, Vec<u8>)>,
}

/// Walks the valid frames of a WAL image from frame `start_frame` (running checksum
/// `seed` before it), one frame in memory at a time: `visit` gets each frame that
/// continues the chain (its index, header, whole bytes and the running checksum after
/// it) and returns false to stop. Returns the last commit frame seen, with the running
/// checksum after it. Memory stays one frame however long the WAL (a multi-GB WAL is
/// what starved checkpoints leave).
pub fn walk_frames(
    header: &WalHeader,
    start_frame: u64,
    seed: (u32, u32),
    mut read_frame: impl FnMut(u64, &mut [u8]) -> bool,
    mut visit: impl FnMut(u64, &FrameHeader, &[u8], (u32, u32)) -> bool,
) -> Option<(u64, (u32, u32))> {
    let mut buf = vec![0u8; header.frame_size() as usize];
    let mut sum = seed;
    let mut index = start_frame;
    let mut last_commit = None;
    while read_frame(index, &mut buf) {
        let mut fh_bytes = [0u8; FRAME_HEADER_SIZE];
        fh_bytes.copy_from_slice(&buf[..FRAME_HEADER_SIZE]);
        let fh = FrameHeader::parse(&fh_bytes);
        let Some(next) = fh.verify(header, sum, &fh_bytes, &buf[FRAME_HEADER_SIZE..]) else {
            break;
        };
        sum = next;
        if fh.is_commit() {
            last_commit = Some((index, sum));
        }
        if !visit(index, &fh, &buf, sum) {
            break;
        }
        index += 1;
    }
    last_commit
}

/// Reads committed transactions from a WAL image, starting after frame
/// `start_frame - 1` whose running checksum is `seed` (the header checksum when
/// `start_frame` is 0). Stops at the first frame that does not continue the chain;
/// frames after the last commit frame (an open or rolled-back transaction) are ignored.
pub fn scan_committed(
    header: &WalHeader,
    start_frame: u64,
    seed: (u32, u32),
    read_frame: impl FnMut(u64, &mut [u8]) -> bool,
) -> Vec<ScannedCommit> {
    let mut out = Vec::new();
    let mut pending: Vec<(u32, Vec<u8>)> = Vec::new();
    walk_frames(header, start_frame, seed, read_frame, |index, fh, frame, sum| {
        pending.push((fh.pgno, frame[FRAME_HEADER_SIZE..].to_vec()));
        if fh.is_commit() {
            out.push(ScannedCommit {
                commit_frame: index,
                commit: fh.commit,
                checksum: sum,
                pages: std::mem::take(&mut pending),
            });
        }
        true
    });
    out
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Builds a WAL image the way SQLite lays it out, for tests.
    #[derive(Clone)]
    pub(crate) struct WalBuilder {
        pub bytes: Vec<u8>,
        pub header: WalHeader,
        sum: (u32, u32),
    }

    impl WalBuilder {
        pub fn new(page_size: u32, salt1: u32, salt2: u32, big_endian: bool) -> Self {
            let mut bytes = vec![0u8; HEADER_SIZE];
            bytes[0..4].copy_from_slice(&(if big_endian { MAGIC_BE } else { MAGIC_LE }).to_be_bytes());
            bytes[4..8].copy_from_slice(&VERSION.to_be_bytes());
            bytes[8..12].copy_from_slice(&page_size.to_be_bytes());
            bytes[12..16].copy_from_slice(&7u32.to_be_bytes());
            bytes[16..20].copy_from_slice(&salt1.to_be_bytes());
            bytes[20..24].copy_from_slice(&salt2.to_be_bytes());
            let sum = checksum_update((0, 0), &bytes[..24], big_endian);
            bytes[24..28].copy_from_slice(&sum.0.to_be_bytes());
            bytes[28..32].copy_from_slice(&sum.1.to_be_bytes());
            let header = WalHeader::parse(&bytes).unwrap();
            WalBuilder { bytes, header, sum }
        }

        pub fn frame(&mut self, pgno: u32, commit: u32, fill: u8) -> &mut Self {
            let mut fh = [0u8; FRAME_HEADER_SIZE];
            fh[0..4].copy_from_slice(&pgno.to_be_bytes());
            fh[4..8].copy_from_slice(&commit.to_be_bytes());
            fh[8..12].copy_from_slice(&self.header.salt1.to_be_bytes());
            fh[12..16].copy_from_slice(&self.header.salt2.to_be_bytes());
            let page = vec![fill; self.header.page_size as usize];
            let sum = checksum_update(self.sum, &fh[..8], self.header.big_endian);
            self.sum = checksum_update(sum, &page, self.header.big_endian);
            fh[16..20].copy_from_slice(&self.sum.0.to_be_bytes());
            fh[20..24].copy_from_slice(&self.sum.1.to_be_bytes());
            self.bytes.extend_from_slice(&fh);
            self.bytes.extend_from_slice(&page);
            self
        }

        /// The running checksum after the last frame added.
        pub fn running_checksum(&self) -> (u32, u32) {
            self.sum
        }

        pub fn read_frame(&self) -> impl FnMut(u64, &mut [u8]) -> bool + '_ {
            move |index, buf| {
                let at = self.header.frame_offset(index) as usize;
                match self.bytes.get(at..at + buf.len()) {
                    Some(src) => {
                        buf.copy_from_slice(src);
                        true
                    }
                    None => false,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::WalBuilder;
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_damage() {
        for big_endian in [false, true] {
            let wal = WalBuilder::new(4096, 11, 22, big_endian);
            let h = WalHeader::parse(&wal.bytes).unwrap();
            assert_eq!(
                (h.page_size, h.salt1, h.salt2, h.big_endian),
                (4096, 11, 22, big_endian)
            );
            let mut bad = wal.bytes.clone();
            bad[17] ^= 1;
            assert_eq!(WalHeader::parse(&bad), Err(WalError::BadHeaderChecksum));
            bad = wal.bytes.clone();
            bad[0] = 0;
            assert!(matches!(WalHeader::parse(&bad), Err(WalError::BadMagic(_))));
            assert_eq!(WalHeader::parse(&wal.bytes[..31]), Err(WalError::ShortHeader(31)));
        }
    }

    #[test]
    fn scan_returns_only_committed_transactions() {
        let mut wal = WalBuilder::new(512, 1, 2, false);
        wal.frame(1, 0, 0xa1).frame(2, 3, 0xa2); // txn 1: pages 1,2; db = 3 pages
        wal.frame(3, 0, 0xb3).frame(3, 0, 0xb4).frame(1, 3, 0xb1); // txn 2: page 3 twice
        wal.frame(2, 0, 0xcc); // an open transaction: no commit frame
        let commits = scan_committed(&wal.header, 0, wal.header.checksum, wal.read_frame());
        assert_eq!(commits.len(), 2);
        assert_eq!(commits[0].commit_frame, 1);
        assert_eq!(commits[0].pages.iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(commits[1].commit_frame, 4);
        assert_eq!(commits[1].pages.len(), 3);
        assert_eq!(commits[1].pages[1].1[0], 0xb4);
        // Resuming from the first commit's position finds only the second.
        let resumed = scan_committed(&wal.header, 2, commits[0].checksum, wal.read_frame());
        assert_eq!(resumed, commits[1..].to_vec());
    }

    #[test]
    fn scan_stops_at_a_broken_chain_or_stale_salt() {
        let mut wal = WalBuilder::new(512, 1, 2, true);
        wal.frame(1, 1, 1).frame(1, 1, 2).frame(1, 1, 3);
        let frame_size = wal.header.frame_size() as usize;
        let mut damaged = WalBuilder::new(512, 1, 2, true);
        damaged.bytes = wal.bytes.clone();
        damaged.bytes[HEADER_SIZE + frame_size + 100] ^= 0xff; // page of frame 1
        let commits = scan_committed(&damaged.header, 0, damaged.header.checksum, damaged.read_frame());
        assert_eq!(commits.len(), 1, "a damaged frame ends the valid log");
        let mut stale = WalBuilder::new(512, 1, 2, true);
        stale.bytes = wal.bytes.clone();
        stale.bytes[HEADER_SIZE + 2 * frame_size + 8] ^= 1; // salt1 of frame 2
        assert_eq!(
            scan_committed(&stale.header, 0, stale.header.checksum, stale.read_frame()).len(),
            2
        );
    }
}
