//! Positioning capture at the end of a huge WAL (what starved checkpoints leave: readers
//! that never let a checkpoint finish) keeps one frame in memory, not the WAL: it runs
//! under the WAL write lock while application writers wait (issue 14, item 9).
//!
//! Alone in its own test binary, so that the process's peak memory is this test's.

use litestream_vfs::primary::capture::{Capture, WalSource};
use litestream_vfs::wal::{checksum_update, FRAME_HEADER_SIZE, HEADER_SIZE};
use std::io;

const PAGE: usize = 4096;
const FRAMES: u64 = 40_000; // 160 MiB of frames

/// A valid WAL generated frame by frame as it is read (reads come in order).
struct SyntheticWal {
    header: [u8; HEADER_SIZE],
    /// Running checksum after frame `next - 1`.
    sum: (u32, u32),
    next: u64,
}

impl SyntheticWal {
    fn new() -> Self {
        let mut header = [0u8; HEADER_SIZE];
        header[0..4].copy_from_slice(&0x377f_0682u32.to_be_bytes());
        header[4..8].copy_from_slice(&3_007_000u32.to_be_bytes());
        header[8..12].copy_from_slice(&(PAGE as u32).to_be_bytes());
        header[16..20].copy_from_slice(&7u32.to_be_bytes());
        header[20..24].copy_from_slice(&9u32.to_be_bytes());
        let sum = checksum_update((0, 0), &header[..24], false);
        header[24..28].copy_from_slice(&sum.0.to_be_bytes());
        header[28..32].copy_from_slice(&sum.1.to_be_bytes());
        SyntheticWal { header, sum, next: 0 }
    }

    fn frame(&mut self, index: u64, out: &mut [u8]) {
        assert_eq!(index, self.next, "frames are read in order");
        let commit = if index % 10 == 9 { 100 } else { 0 };
        out[..4].copy_from_slice(&((index % 100) as u32 + 1).to_be_bytes());
        out[4..8].copy_from_slice(&(commit as u32).to_be_bytes());
        out[8..16].copy_from_slice(&self.header[16..24]);
        out[FRAME_HEADER_SIZE..].fill(index as u8);
        let sum = checksum_update(self.sum, &out[..8], false);
        let sum = checksum_update(sum, &out[FRAME_HEADER_SIZE..], false);
        out[16..20].copy_from_slice(&sum.0.to_be_bytes());
        out[20..24].copy_from_slice(&sum.1.to_be_bytes());
        self.sum = sum;
        self.next += 1;
    }
}

impl WalSource for SyntheticWal {
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<bool> {
        if offset == 0 {
            buf.copy_from_slice(&self.header[..buf.len()]);
            return Ok(true);
        }
        let frame_size = (FRAME_HEADER_SIZE + PAGE) as u64;
        let index = (offset - HEADER_SIZE as u64) / frame_size;
        if index >= FRAMES {
            return Ok(false);
        }
        self.frame(index, buf);
        Ok(true)
    }
}

/// The process's peak resident memory so far, in KiB.
fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn positioning_at_the_end_of_a_huge_wal_keeps_one_frame_in_memory() {
    let before = peak_kib();
    let mut capture = Capture::new();
    capture.skip_to_end(&mut SyntheticWal::new()).unwrap();
    let grew_mib = (peak_kib() - before) / 1024;
    assert_eq!(capture.next_frame(), FRAMES, "positioned after the last commit");
    assert!(
        grew_mib < 16,
        "skip_to_end over {} MiB of WAL raised peak memory by {grew_mib} MiB",
        (FRAMES * PAGE as u64) >> 20
    );
}
