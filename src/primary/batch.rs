//! Encodes captured transactions, or a whole database, as one LTX file in the form
//! Litestream writes: NoChecksum flag, database checksums 0.

use super::capture::{CapturedTxn, WalPosition};
use super::page_pool::PageBuf;
use crate::ltx::{lock_pgno, Encoder, Encoding, Header, FLAG_NO_CHECKSUM};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Hashes a page number. Page numbers are our own small integers (no flooding to
/// defend against), and every commit inserts into the batch on the writer's thread:
/// one multiply instead of SipHash's hundred-odd instructions.
#[derive(Default)]
struct PageNumberHasher(u64);

impl Hasher for PageNumberHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u32` is used for page numbers; this keeps the trait whole.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(FIBONACCI);
        }
    }

    fn write_u32(&mut self, n: u32) {
        // Fibonacci hashing: the high bits (which hashbrown uses as tags) mix all of
        // `n`, the low bits (bucket index) stay distinct for consecutive pages.
        self.0 = (self.0 ^ n as u64).wrapping_mul(FIBONACCI);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

const FIBONACCI: u64 = 0x9E37_79B9_7F4A_7C15;

type PageMap = HashMap<u32, PageBuf, BuildHasherDefault<PageNumberHasher>>;

/// Captured commits waiting to be staged, merged page by page as they arrive, so
/// memory grows with the pages a batch touches, not with its commits. Becomes one
/// LTX file covering `min_txid..=max_txid`.
#[derive(Default)]
pub struct Batch {
    min_txid: u64,
    commits: u64,
    page_size: u32,
    /// Database size in pages after the last commit.
    commit: u32,
    pages: PageMap,
    /// WAL position after the last commit.
    position: Option<WalPosition>,
    /// The last contiguous run of WAL frames in one generation, for the header.
    wal_offset: u64,
    wal_size: u64,
    /// Capture time of the first commit, for the lag figure.
    pub first_capture_ms: i64,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.commits == 0
    }

    pub fn commits(&self) -> u64 {
        self.commits
    }

    pub fn min_txid(&self) -> u64 {
        self.min_txid
    }

    pub fn max_txid(&self) -> u64 {
        self.min_txid + self.commits - 1
    }

    pub fn position(&self) -> Option<WalPosition> {
        self.position
    }

    pub fn bytes(&self) -> usize {
        self.pages.len() * self.page_size as usize
    }

    /// Adds the commit `txid` (the next after this batch's last). Page buffers it
    /// replaces go to `spare`.
    pub fn push(&mut self, txid: u64, txn: CapturedTxn, spare: &mut dyn FnMut(PageBuf)) {
        if self.commits == 0 {
            self.min_txid = txid;
            self.first_capture_ms = now_ms();
        }
        debug_assert_eq!(txid, self.min_txid + self.commits);
        let same_run = self.position.is_some_and(|p| {
            (p.salt1, p.salt2) == (txn.position.salt1, txn.position.salt2)
                && self.wal_offset + self.wal_size == txn.wal_offset
        });
        if same_run {
            self.wal_size += txn.wal_size;
        } else {
            self.wal_offset = txn.wal_offset;
            self.wal_size = txn.wal_size;
        }
        if txn.page_size != self.page_size {
            for (_, page) in self.pages.drain() {
                spare(page);
            }
            self.page_size = txn.page_size;
        }
        if txn.commit < self.commit {
            // The database shrank (VACUUM): pages beyond its end are gone.
            let beyond: Vec<u32> = self.pages.keys().copied().filter(|p| *p > txn.commit).collect();
            for pgno in beyond {
                spare(self.pages.remove(&pgno).expect("listed"));
            }
        }
        self.commit = txn.commit;
        for (pgno, page) in txn.pages {
            if let Some(old) = self.pages.insert(pgno, page) {
                spare(old);
            }
        }
        self.position = Some(txn.position);
        self.commits += 1;
    }

    /// Puts back an older batch whose staging failed, under this newer one: its
    /// pages count only where this batch has none.
    pub fn absorb_older(&mut self, older: Batch, spare: &mut dyn FnMut(PageBuf)) {
        if older.is_empty() {
            return;
        }
        if self.is_empty() {
            *self = older;
            return;
        }
        debug_assert_eq!(older.max_txid() + 1, self.min_txid);
        for (pgno, page) in older.pages {
            if pgno <= self.commit && !self.pages.contains_key(&pgno) {
                self.pages.insert(pgno, page);
            } else {
                spare(page);
            }
        }
        self.min_txid = older.min_txid;
        self.commits += older.commits;
        self.first_capture_ms = older.first_capture_ms;
    }

    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// Database size in pages after the last commit.
    pub fn commit(&self) -> u32 {
        self.commit
    }

    /// The pages, ascending.
    pub fn sorted_pages(&self) -> Vec<(u32, &[u8])> {
        let mut pages: Vec<(u32, &[u8])> = self
            .pages
            .iter()
            .filter(|(p, _)| **p <= self.commit)
            .map(|(p, page)| (*p, &page[..]))
            .collect();
        pages.sort_unstable_by_key(|(p, _)| *p);
        pages
    }

    /// Hands every page buffer to `spare`.
    pub fn recycle_into(self, spare: &mut dyn FnMut(PageBuf)) {
        for (_, page) in self.pages {
            spare(page);
        }
    }

    /// Encodes the batch as one LTX file in the form Litestream writes, into `out` (a
    /// staging file): no second copy of the batch in memory. Encoded into a buffer, a
    /// transaction of 1 GB took 1 GB more at its stage, and where that memory was not
    /// there (a container's limit, `ulimit -v`) the allocation's failure aborted the
    /// application's process (a tester).
    pub fn encode_into<W: Write>(&self, out: W, node_id: u64, encoding: &Encoding) -> crate::ltx::Result<W> {
        let position = self.position.expect("a batch has at least one commit");
        let header = Header {
            flags: FLAG_NO_CHECKSUM,
            page_size: self.page_size,
            commit: self.commit,
            min_txid: self.min_txid,
            max_txid: self.max_txid(),
            timestamp_ms: super::header_time::header_time_ms(),
            pre_apply_checksum: 0,
            wal_offset: self.wal_offset as i64,
            wal_size: self.wal_size as i64,
            wal_salt1: position.salt1,
            wal_salt2: position.salt2,
            node_id,
            recipients: 0,
        };
        let mut pgnos: Vec<u32> = self.pages.keys().copied().filter(|p| *p <= self.commit).collect();
        pgnos.sort_unstable();
        let mut encoder = Encoder::with_encoding(out, header, encoding)?;
        for pgno in pgnos {
            encoder.write_page(pgno, &self.pages[&pgno])?;
        }
        Ok(encoder.finish(0)?.0)
    }
}

/// The header of a full-database file at TXID `max_txid`. With `min_txid` 1 it is a
/// snapshot proper; a later `min_txid` gives a full image that continues an existing TXID
/// sequence.
///
/// Its WAL range is the empty one at the WAL's start (offset 32, size 0, no salts), as
/// Litestream's own snapshots say: Litestream 0.5.17, continuing a replica whose newest
/// level-0 file is ours (docs/migration.md), reads where capture stood from that file's
/// WAL offset, and an offset of 0 made every one of its syncs fail ("prev WAL offset is
/// less than the header size") after our replica ended with a snapshot.
pub fn full_header(page_size: u32, commit: u32, min_txid: u64, max_txid: u64, node_id: u64) -> Header {
    Header {
        flags: FLAG_NO_CHECKSUM,
        page_size,
        commit,
        min_txid,
        max_txid,
        timestamp_ms: super::header_time::header_time_ms(),
        pre_apply_checksum: 0,
        wal_offset: crate::wal::HEADER_SIZE as i64,
        wal_size: 0,
        wal_salt1: 0,
        wal_salt2: 0,
        node_id,
        recipients: 0,
    }
}

/// Writes every page of a full image (`read_page` fills page `pgno`; the lock page is
/// skipped) through `encoder`, which wrote a [`full_header`], and finishes the file.
/// One page is in memory at a time: given a file, the image goes straight to it (a
/// snapshot is the size of the database, issue 15).
pub fn write_full<W: Write>(
    mut encoder: Encoder<W>,
    mut read_page: impl FnMut(u32, &mut [u8]) -> std::io::Result<()>,
) -> Result<W, String> {
    let header = *encoder.header();
    let mut page = vec![0u8; header.page_size as usize];
    let lock = lock_pgno(header.page_size);
    for pgno in 1..=header.commit {
        if pgno == lock {
            continue;
        }
        read_page(pgno, &mut page).map_err(|e| format!("reading page {pgno}: {e}"))?;
        encoder.write_page(pgno, &page).map_err(|e| e.to_string())?;
    }
    Ok(encoder.finish(0).map_err(|e| e.to_string())?.0)
}
