//! The WAL parser over arbitrary bytes, both ways the primary meets a WAL:
//!
//! - read back from the file (`Capture::catch_up`, i.e. `scan_committed` with the
//!   checksum chain verified), as at startup or when another process committed;
//! - watched as it is written (`Capture::on_write`), in the write sizes SQLite uses
//!   (a 32-byte header, then each frame as a 24-byte header and a page, or whole frames)
//!   or, for half of the inputs, in arbitrary pieces.
//!
//! Every transaction either path returns must be well formed (pages ascending, unique,
//! within the commit size, of the page size; WAL span inside the file). When the file is
//! a valid WAL through its last frame, the two paths must agree transaction for transaction:
//! capture may not see something different from what a later reader of the file would.
//!
//! Random bytes almost never carry a valid checksum chain, so the first input byte can ask
//! the target to repair it (magic, version, page size, salts and checksums recomputed):
//! that lets the fuzzer explore valid WALs with arbitrary page contents and commit sizes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use litestream_vfs::primary::capture::{Capture, CapturedTxn, WalSource};
use litestream_vfs::wal::{checksum_update, WalHeader, FRAME_HEADER_SIZE, HEADER_SIZE};

/// A WAL file in memory; reads past the end report a short file, as the real one does.
struct MemWal(Vec<u8>);

impl WalSource for MemWal {
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<bool> {
        let Ok(at) = usize::try_from(offset) else {
            return Ok(false);
        };
        match at.checked_add(buf.len()).and_then(|end| self.0.get(at..end)) {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Rewrites `wal` into a valid WAL of the page size `sel` picks: SQLite's magic and
/// version, a header checksum, and every whole frame carrying the header's salts and
/// the running checksum. Page numbers and commit sizes stay as the fuzzer made them.
fn repair(wal: &mut [u8], sel: u8) {
    if wal.len() < HEADER_SIZE {
        return;
    }
    let big_endian = sel & 2 != 0;
    let page_size: u32 = 512 << ((sel >> 2) % 8); // 512..=65536
    let magic: u32 = if big_endian { 0x377f_0683 } else { 0x377f_0682 };
    wal[0..4].copy_from_slice(&magic.to_be_bytes());
    wal[4..8].copy_from_slice(&3_007_000u32.to_be_bytes());
    let stored = if page_size == 65536 { 1 } else { page_size };
    wal[8..12].copy_from_slice(&stored.to_be_bytes());
    let mut sum = checksum_update((0, 0), &wal[..24], big_endian);
    wal[24..28].copy_from_slice(&sum.0.to_be_bytes());
    wal[28..32].copy_from_slice(&sum.1.to_be_bytes());
    let salts: [u8; 8] = wal[16..24].try_into().expect("8 bytes");
    let frame_size = FRAME_HEADER_SIZE + page_size as usize;
    let mut at = HEADER_SIZE;
    while at + frame_size <= wal.len() {
        let frame = &mut wal[at..at + frame_size];
        frame[8..16].copy_from_slice(&salts);
        sum = checksum_update(sum, &frame[..8], big_endian);
        sum = checksum_update(sum, &frame[FRAME_HEADER_SIZE..], big_endian);
        frame[16..20].copy_from_slice(&sum.0.to_be_bytes());
        frame[20..24].copy_from_slice(&sum.1.to_be_bytes());
        at += frame_size;
    }
}

/// The invariants every captured transaction must hold, whatever the input.
fn check_well_formed(txns: &[CapturedTxn], file_len: usize) {
    for t in txns {
        assert!(t.page_size.is_power_of_two() && (512..=65536).contains(&t.page_size));
        let mut last = 0u32;
        for (pgno, page) in &t.pages {
            assert!(*pgno > last, "pages not ascending and unique: {last} then {pgno}");
            assert!(*pgno <= t.commit, "page {pgno} above the commit size {}", t.commit);
            assert_eq!(page.len(), t.page_size as usize, "page of the wrong size");
            last = *pgno;
        }
        assert!(t.wal_size > 0);
        assert!(
            t.wal_offset + t.wal_size <= file_len as u64,
            "transaction spans past the end of the WAL"
        );
        assert_eq!(t.position.page_size, t.page_size);
    }
}

/// What two paths must agree on: commit size, page numbers and contents, WAL span.
fn summary(txns: &[CapturedTxn]) -> Vec<(u32, Vec<(u32, &[u8])>, u64, u64)> {
    txns.iter()
        .map(|t| {
            let pages = t.pages.iter().map(|(p, b)| (*p, &b[..])).collect();
            (t.commit, pages, t.wal_offset, t.wal_size)
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let mut wal = rest.to_vec();
    if sel & 1 != 0 {
        repair(&mut wal, sel);
    }
    let header = WalHeader::parse(&wal);

    // Read back: learn the header (as a header write does), then scan the whole file.
    let mut full = MemWal(wal.clone());
    let mut read_back = Capture::new();
    let mut from_file = Vec::new();
    if wal.len() >= HEADER_SIZE {
        let first = read_back
            .on_write(0, &wal[..HEADER_SIZE], &mut full)
            .expect("memory reads cannot fail");
        from_file.extend(first.expect("a header write on a fresh capture is no discontinuity"));
        from_file.extend(read_back.scan_live(&mut full));
    }
    check_well_formed(&from_file, wal.len());

    // As written: the file grows write by write and capture sees each one.
    let arbitrary_pieces = sel & 0x80 != 0;
    let mut written = MemWal(Vec::with_capacity(wal.len()));
    let mut watcher = Capture::new();
    let mut as_written = Vec::new();
    let mut broken = false;
    let mut at = 0usize;
    let mut piece = 0usize;
    while at < wal.len() {
        let len = if at == 0 {
            HEADER_SIZE.min(wal.len())
        } else if arbitrary_pieces {
            // Piece sizes cycle through the input's own bytes: 1..=256, then whole frames.
            let b = wal[piece % wal.len()] as usize;
            piece += 1;
            (b + 1).min(wal.len() - at)
        } else {
            let Ok(h) = &header else { break };
            let within = (at - HEADER_SIZE) % h.frame_size() as usize;
            let next = if within == 0 && piece % 3 != 2 {
                FRAME_HEADER_SIZE
            } else {
                h.frame_size() as usize - within
            };
            piece += 1;
            next.min(wal.len() - at)
        };
        let chunk = &wal[at..at + len];
        written.0.extend_from_slice(chunk);
        match watcher
            .on_write(at as u64, chunk, &mut written)
            .expect("memory reads cannot fail")
        {
            Ok(txns) => as_written.extend(txns),
            Err(_) => broken = true,
        }
        at += len;
    }
    check_well_formed(&as_written, wal.len());

    // Valid through the last whole frame (the read-back consumed every frame, so each one
    // verified and the last one commits): both paths must have seen the same commits.
    if let (Ok(h), false, false) = (&header, broken, arbitrary_pieces) {
        let frames = (wal.len() - HEADER_SIZE) as u64 / h.frame_size();
        let consumed = read_back.position().map_or(0, |p| p.next_frame);
        if frames > 0 && consumed == frames {
            assert_eq!(
                summary(&from_file),
                summary(&as_written),
                "capture while writing disagrees with reading the file back"
            );
        }
    }
});
