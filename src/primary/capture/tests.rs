//! Capture driven by SQLite-like writes to a WAL in memory.

use super::*;
use crate::wal::testing::WalBuilder;
use crate::wal::{FrameHeader, FRAME_HEADER_SIZE};

/// A WAL file that SQLite-like writes go to, with capture watching every write.
struct Harness {
    file: Vec<u8>,
    capture: Capture,
    page_size: u32,
    captured: Vec<CapturedTxn>,
}

impl WalSource for Vec<u8> {
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<bool> {
        let at = offset as usize;
        match self.get(at..at + buf.len()) {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

impl Harness {
    fn new(page_size: u32) -> Self {
        Harness {
            file: Vec::new(),
            capture: Capture::new(),
            page_size,
            captured: Vec::new(),
        }
    }

    /// Writes like `sqlite3OsWrite`, then tells capture; panics on discontinuity.
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.raw_write(offset, data);
        let mut file = std::mem::take(&mut self.file);
        let got = self
            .capture
            .on_write(offset, data, &mut file)
            .unwrap()
            .expect("no discontinuity");
        self.file = file;
        self.captured.extend(got);
    }

    /// A write capture does not see (another process).
    fn raw_write(&mut self, offset: u64, data: &[u8]) {
        let end = offset as usize + data.len();
        if self.file.len() < end {
            self.file.resize(end, 0);
        }
        self.file[offset as usize..end].copy_from_slice(data);
    }

    /// Writes a WAL header and a list of frames the way SQLite does: 24-byte frame
    /// header then page, one frame at a time. Returns the builder for its salts.
    fn log(&mut self, salt1: u32, frames: &[(u32, u32, u8)], start_frame: u64, seen: bool) -> WalBuilder {
        let mut wal = WalBuilder::new(self.page_size, salt1, 99, false);
        if start_frame == 0 {
            let header = wal.bytes[..HEADER_SIZE].to_vec();
            if seen {
                self.write(0, &header)
            } else {
                self.raw_write(0, &header)
            }
        }
        // Replay the frames before start_frame so the chain matches the file.
        for &(pgno, commit, fill) in frames {
            wal.frame(pgno, commit, fill);
        }
        let fs = wal.header.frame_size() as usize;
        for i in start_frame as usize..frames.len() {
            let at = HEADER_SIZE + i * fs;
            let frame = wal.bytes[at..at + fs].to_vec();
            if seen {
                self.write(at as u64, &frame[..FRAME_HEADER_SIZE]);
                self.write((at + FRAME_HEADER_SIZE) as u64, &frame[FRAME_HEADER_SIZE..]);
            } else {
                self.raw_write(at as u64, &frame);
            }
        }
        wal
    }
}

fn pgnos(txn: &CapturedTxn) -> Vec<u32> {
    txn.pages.iter().map(|p| p.0).collect()
}

#[test]
fn each_commit_frame_ends_one_transaction_with_its_latest_pages() {
    let mut h = Harness::new(512);
    h.log(1, &[(1, 0, 1), (2, 0, 2), (1, 2, 3), (2, 0, 4), (3, 3, 5)], 0, true);
    assert_eq!(h.captured.len(), 2);
    assert_eq!(pgnos(&h.captured[0]), vec![1, 2]);
    assert_eq!(h.captured[0].pages[0].1[0], 3, "later frame for page 1 wins");
    assert_eq!(h.captured[0].commit, 2);
    assert_eq!(pgnos(&h.captured[1]), vec![2, 3]);
    assert_eq!(h.captured[1].wal_offset, HEADER_SIZE as u64 + 3 * (24 + 512));
    assert_eq!(h.captured[1].position.next_frame, 5);
}

#[test]
fn rolled_back_frames_are_dropped_and_overwritten() {
    let mut h = Harness::new(512);
    let wal = h.log(1, &[(1, 1, 1)], 0, true);
    // An open transaction spills two frames, then rolls back...
    let mut spill = WalBuilder::new(512, 1, 99, false);
    spill.frame(1, 1, 1).frame(5, 0, 0xee).frame(6, 0, 0xee);
    let fs = wal.header.frame_size() as usize;
    for i in 1..3 {
        let at = HEADER_SIZE + i * fs;
        h.write(at as u64, &spill.bytes[at..at + fs]);
    }
    // ...and the next transaction reuses frame 1 only.
    h.log(1, &[(1, 1, 1), (2, 2, 7)], 1, true);
    assert_eq!(h.captured.len(), 2);
    assert_eq!(pgnos(&h.captured[1]), vec![2]);
    assert_eq!(h.captured[1].pages[0].1[0], 7);
}

#[test]
fn a_frame_for_page_zero_is_never_captured() {
    // No SQLite writes page 0; a frame that says so is not trusted unverified, and the
    // checksum-verified read-back refuses it too (wal_parse fuzz target).
    let mut h = Harness::new(512);
    h.log(1, &[(1, 0, 1), (0, 2, 2)], 0, true);
    assert!(
        h.captured.iter().all(|t| t.pages.iter().all(|p| p.0 != 0)),
        "page 0 captured"
    );
    assert!(
        h.captured.is_empty(),
        "a transaction ending in a page-0 frame was captured"
    );
}

#[test]
fn pages_above_the_commit_size_are_not_part_of_the_database() {
    let mut h = Harness::new(512);
    h.log(1, &[(4, 0, 1), (1, 2, 2)], 0, true);
    assert_eq!(pgnos(&h.captured[0]), vec![1], "page 4 is beyond a 2-page database");
}

#[test]
fn checksum_rewrite_after_commit_moves_the_chain_position() {
    let mut h = Harness::new(512);
    h.log(1, &[(1, 0, 1), (2, 2, 2)], 0, true);
    let before = h.capture.position().unwrap();
    let mut rewritten = [0u8; FRAME_HEADER_SIZE];
    rewritten[..4].copy_from_slice(&2u32.to_be_bytes());
    rewritten[16..24].copy_from_slice(&[9; 8]);
    h.write(HEADER_SIZE as u64 + 536, &rewritten);
    let after = h.capture.position().unwrap();
    assert_eq!(after.next_frame, before.next_frame);
    assert_eq!(after.checksum, (0x0909_0909, 0x0909_0909));
    assert_eq!(h.captured.len(), 1, "a late header rewrite is not a new transaction");
}

#[test]
fn a_captured_commit_written_over_by_the_next_writer_is_a_discontinuity() {
    // multi_process_crash: a writer killed after writing its commit frame but before
    // SQLite's wal-index counted it left a valid frame past the WAL's last commit;
    // capture read it back as a commit, then the next writer wrote its own commit
    // into the same slot. Taken for a checksum rewrite, that commit was lost and
    // the replica kept a row the database never had.
    let mut h = Harness::new(512);
    h.log(1, &[(1, 1, 1)], 0, true);
    h.log(1, &[(1, 1, 1), (2, 2, 0xaa)], 1, false); // the killed writer's frame
    let mut file = std::mem::take(&mut h.file);
    let orphan = h.capture.scan_live(&mut file);
    h.file = file;
    assert_eq!(orphan.len(), 1, "the orphan frame reads back as a commit");
    let mut next = WalBuilder::new(512, 1, 99, false);
    next.frame(1, 1, 1).frame(2, 2, 0xbb);
    let at = HEADER_SIZE + (24 + 512);
    let mut outcome = Vec::new();
    for (offset, data) in [(at, &next.bytes[at..at + 24]), (at + 24, &next.bytes[at + 24..])] {
        h.raw_write(offset as u64, data);
        let mut file = std::mem::take(&mut h.file);
        outcome.push(h.capture.on_write(offset as u64, data, &mut file).unwrap());
        h.file = file;
    }
    assert!(
        outcome.iter().any(|o| o.is_err()),
        "the new commit in a captured frame's place must not pass unseen: {outcome:?}"
    );
}

#[test]
fn a_scan_between_our_commit_frame_and_its_write_notice_leaves_the_transaction_to_the_write() {
    // The engine's turn reads the live WAL under the shared lock, not the write lock: it
    // may run after our writer wrote a commit frame's page to the file and before that
    // write reached capture.
    let mut h = Harness::new(512);
    h.log(1, &[(1, 1, 1)], 0, true);
    let mut wal = WalBuilder::new(512, 1, 99, false);
    wal.frame(1, 1, 1).frame(2, 0, 2).frame(3, 3, 3);
    let fs = 24 + 512;
    let at = |i: usize| HEADER_SIZE + i * fs;
    h.write(at(1) as u64, &wal.bytes[at(1)..at(1) + 24]);
    h.write((at(1) + 24) as u64, &wal.bytes[at(1) + 24..at(2)]);
    h.write(at(2) as u64, &wal.bytes[at(2)..at(2) + 24]);
    let page = wal.bytes[at(2) + 24..at(3)].to_vec();
    h.raw_write((at(2) + 24) as u64, &page); // in the file, not yet seen by capture
    let mut file = h.file.clone();
    assert!(
        h.capture.scan_live(&mut file).is_empty(),
        "the scan took our own transaction"
    );
    h.write((at(2) + 24) as u64, &page); // panics on a discontinuity
    assert_eq!(h.captured.len(), 2);
    assert_eq!(pgnos(&h.captured[1]), vec![2, 3]);
    // With nothing of ours pending, the scan reads what others committed.
    h.log(1, &[(1, 1, 1), (2, 0, 2), (3, 3, 3), (4, 4, 4)], 3, false);
    let mut file = h.file.clone();
    assert_eq!(
        h.capture.scan_live(&mut file).iter().map(pgnos).collect::<Vec<_>>(),
        vec![vec![4]]
    );
}

#[test]
fn commits_by_another_process_are_read_back_before_ours() {
    let mut h = Harness::new(512);
    h.log(1, &[(1, 1, 1)], 0, true);
    // Another process appends two transactions we never see written...
    h.log(1, &[(1, 1, 1), (2, 2, 2), (3, 3, 3)], 1, false);
    // ...then we commit after them.
    h.log(1, &[(1, 1, 1), (2, 2, 2), (3, 3, 3), (1, 3, 4)], 3, true);
    let commits: Vec<_> = h.captured.iter().map(pgnos).collect();
    assert_eq!(commits, vec![vec![1], vec![2], vec![3], vec![1]]);
}

#[test]
fn a_restart_captures_the_old_generation_tail_then_follows_the_new_one() {
    let mut h = Harness::new(512);
    h.log(1, &[(1, 1, 1)], 0, true);
    h.log(1, &[(1, 1, 1), (2, 2, 2)], 1, false); // foreign commit
    h.log(2, &[(3, 3, 3)], 0, true); // we restart the WAL
    let commits: Vec<_> = h.captured.iter().map(pgnos).collect();
    assert_eq!(commits, vec![vec![1], vec![2], vec![3]]);
    assert_eq!(h.capture.position().unwrap().salt1, 2);
}

#[test]
fn a_restart_by_another_process_is_a_discontinuity() {
    let mut h = Harness::new(512);
    h.log(1, &[(1, 1, 1)], 0, true);
    h.log(2, &[(1, 1, 5), (2, 2, 6)], 0, false);
    let mut next = WalBuilder::new(512, 2, 99, false);
    next.frame(1, 1, 5).frame(2, 2, 6).frame(3, 3, 7);
    let at = HEADER_SIZE + 2 * 536;
    h.raw_write(at as u64, &next.bytes[at..at + 24]);
    let mut file = h.file.clone();
    let result = h
        .capture
        .on_write(at as u64, &next.bytes[at..at + 24], &mut file)
        .unwrap();
    assert!(result.is_err(), "frames of a generation we never saw may be lost");
}

#[test]
fn resume_continues_from_a_saved_position_or_reports_discontinuity() {
    let mut h = Harness::new(512);
    h.log(1, &[(1, 1, 1), (2, 2, 2)], 0, true);
    let saved = h.captured[0].position;
    let mut fresh = Capture::new();
    let resumed = fresh.resume(saved, &mut h.file.clone()).unwrap().unwrap();
    assert_eq!(resumed.iter().map(pgnos).collect::<Vec<_>>(), vec![vec![2]]);
    assert_eq!(fresh.position(), h.capture.position());
    let mut other_salt = saved;
    other_salt.salt1 = 77;
    assert!(Capture::new().resume(other_salt, &mut h.file.clone()).unwrap().is_err());
    let mut bad_chain = saved;
    bad_chain.checksum.0 ^= 1;
    assert!(Capture::new().resume(bad_chain, &mut h.file.clone()).unwrap().is_err());
    assert!(Capture::new().resume(saved, &mut Vec::new()).unwrap().is_err());
}

#[test]
fn a_position_saved_before_its_checksums_were_rewritten_is_repaired_from_the_wal() {
    let mut wal = WalBuilder::new(512, 4, 5, false);
    wal.frame(1, 0, 1).frame(2, 2, 2).frame(3, 3, 3);
    let after_commit = {
        let mut probe = WalBuilder::new(512, 4, 5, false);
        probe.frame(1, 0, 1).frame(2, 2, 2);
        probe.running_checksum()
    };
    // Saved between a commit written with deferred checksums and their rewrite.
    let saved = WalPosition {
        salt1: 4,
        salt2: 5,
        page_size: 512,
        next_frame: 2,
        checksum: (0, 0),
        ended: false,
    };
    let mut c = Capture::new();
    c.set_position(&saved, wal.header);
    assert!(c.verify_position(&mut wal.bytes.clone()).unwrap());
    assert_eq!(c.position().unwrap().checksum, after_commit);
    // And the commit after it is found.
    let found = c.scan_live(&mut wal.bytes.clone());
    assert_eq!(found.iter().map(pgnos).collect::<Vec<_>>(), vec![vec![3]]);
    // A position the WAL does not hold is not "repaired".
    let beyond = WalPosition { next_frame: 9, ..saved };
    let mut c = Capture::new();
    c.set_position(&beyond, wal.header);
    assert!(!c.verify_position(&mut wal.bytes.clone()).unwrap());
}

#[test]
fn skip_to_end_positions_after_the_last_commit() {
    let mut h = Harness::new(512);
    h.log(1, &[(1, 1, 1), (2, 2, 2), (3, 0, 3)], 0, false);
    let mut c = Capture::new();
    c.skip_to_end(&mut h.file.clone()).unwrap();
    assert_eq!(c.position().unwrap().next_frame, 2);
}

#[test]
fn commits_after_the_position_are_found_from_the_position() {
    let mut wal = WalBuilder::new(512, 1, 99, false);
    wal.frame(1, 1, 1);
    let mut capture = Capture::new();
    capture.begin_generation(wal.header);
    assert_eq!(capture.scan_live(&mut wal.bytes.clone()).len(), 1);
    assert_eq!(capture.commits_after(&mut wal.bytes.clone()).unwrap(), Some(false));
    let mut later = wal.clone();
    later.frame(2, 0, 2); // an open transaction: no commit yet
    assert_eq!(capture.commits_after(&mut later.bytes.clone()).unwrap(), Some(false));
    later.frame(3, 3, 3);
    assert_eq!(capture.commits_after(&mut later.bytes.clone()).unwrap(), Some(true));
    // Another generation in the file: the position cannot say.
    let other = WalBuilder::new(512, 2, 99, false);
    assert_eq!(capture.commits_after(&mut other.bytes.clone()).unwrap(), None);
}

#[test]
fn a_frame_written_in_odd_pieces_is_still_captured() {
    let mut h = Harness::new(512);
    let mut wal = WalBuilder::new(512, 1, 99, false);
    wal.frame(1, 0, 1).frame(2, 2, 2);
    h.write(0, &wal.bytes[..32]);
    // The whole log in one write, then nothing else.
    h.write(32, &wal.bytes[32..]);
    assert_eq!(h.captured.len(), 1);
    assert_eq!(pgnos(&h.captured[0]), vec![1, 2]);
}

#[test]
fn a_pending_frame_rewritten_in_place_keeps_its_last_content() {
    let mut h = Harness::new(512);
    let mut before = WalBuilder::new(512, 1, 99, false);
    before.frame(1, 0, 1).frame(2, 0, 2);
    let mut after = WalBuilder::new(512, 1, 99, false);
    after.frame(1, 0, 9).frame(2, 0, 2).frame(3, 3, 3);
    let fs = 24 + 512;
    let frame = |wal: &WalBuilder, i: usize| {
        let at = HEADER_SIZE + i * fs;
        (
            at,
            wal.bytes[at..at + 24].to_vec(),
            wal.bytes[at + 24..at + fs].to_vec(),
        )
    };
    h.write(0, &before.bytes[..HEADER_SIZE]);
    for (wal, i) in [(&before, 0), (&before, 1), (&after, 0), (&after, 2)] {
        // Frame 0 is written twice before the commit, as SQLite does when a
        // transaction changes a page again after spilling it.
        let (at, header, page) = frame(wal, i);
        h.write(at as u64, &header);
        h.write((at + 24) as u64, &page);
    }
    assert_eq!(h.captured.len(), 1);
    assert_eq!(pgnos(&h.captured[0]), vec![1, 2, 3]);
    assert_eq!(h.captured[0].pages[0].1[0], 9, "the rewrite replaced the first content");
    assert_eq!(h.capture.position().unwrap().next_frame, 3);
}

#[test]
fn steady_commits_map_no_page_memory_and_an_idle_capture_gives_it_back() {
    // 16 KiB pages: no other test uses them, and the page pool is process-wide.
    let page_size = 16384;
    let mut h = Harness::new(page_size);
    let txn = |round: u8| (1..=20u32).map(move |p| (p, if p == 20 { 20 } else { 0 }, round));
    let mut frames: Vec<(u32, u32, u8)> = txn(1).collect();
    h.log(1, &frames, 0, true);
    let recycle = |h: &mut Harness| {
        for txn in std::mem::take(&mut h.captured) {
            txn.pages.into_iter().for_each(|(_, page)| h.capture.recycle(page));
        }
    };
    recycle(&mut h);
    let mapped = crate::primary::page_pool::mapped_bytes(page_size as usize);
    assert!(mapped >= 20 * page_size as usize);
    for round in 2..5 {
        let start = frames.len() as u64;
        frames.extend(txn(round));
        h.log(1, &frames, start, true);
        assert_eq!(h.captured[0].pages.len(), 20);
        assert!(h.captured[0].pages.iter().all(|(_, page)| page[0] == round));
        recycle(&mut h);
        assert_eq!(
            crate::primary::page_pool::mapped_bytes(page_size as usize),
            mapped,
            "a commit mapped page memory"
        );
    }
    h.capture.release_idle_buffers();
    assert_eq!(
        crate::primary::page_pool::mapped_bytes(page_size as usize),
        0,
        "an idle capture keeps page memory mapped"
    );
}

/// A WAL source that counts the reads capture makes.
struct Counted<'a>(&'a [u8], usize);

impl WalSource for Counted<'_> {
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<bool> {
        self.1 += 1;
        let at = offset as usize;
        Ok(self
            .0
            .get(at..at + buf.len())
            .map(|src| buf.copy_from_slice(src))
            .is_some())
    }
}

#[test]
fn frames_written_with_deferred_checksums_are_captured_at_the_commit_frame_without_reading_back() {
    // What SQLite writes for a transaction that spilled page 2, changed it again (an
    // overwrite in place), then wrote pages 3 and 4: frames after the overwrite carry
    // zero salts and checksums until `walRewriteChecksums` fills them in, after the
    // commit frame.
    let fs = 24 + 512;
    let at = |i: usize| HEADER_SIZE + i * fs;
    let mut first = WalBuilder::new(512, 1, 99, false);
    first.frame(1, 1, 1).frame(2, 0, 0x22);
    let mut last = WalBuilder::new(512, 1, 99, false);
    last.frame(1, 1, 1)
        .frame(2, 0, 0xa2)
        .frame(3, 0, 3)
        .frame(4, 4, 4)
        .frame(1, 4, 5);
    let mut writes: Vec<(usize, Vec<u8>)> = vec![(0, last.bytes[..HEADER_SIZE].to_vec())];
    for i in 0..2 {
        writes.push((at(i), first.bytes[at(i)..at(i) + 24].to_vec()));
        writes.push((at(i) + 24, first.bytes[at(i) + 24..at(i + 1)].to_vec()));
    }
    writes.push((at(1) + 24, last.bytes[at(1) + 24..at(2)].to_vec())); // the overwrite
    for i in 2..4 {
        let mut deferred = last.bytes[at(i)..at(i) + 24].to_vec();
        deferred[8..].fill(0);
        writes.push((at(i), deferred));
        writes.push((at(i) + 24, last.bytes[at(i) + 24..at(i + 1)].to_vec()));
    }
    let commit_write = writes.len() - 1;
    for i in 1..4 {
        writes.push((at(i), last.bytes[at(i)..at(i) + 24].to_vec())); // the rewrite
    }
    // The next transaction appends as usual.
    writes.push((at(4), last.bytes[at(4)..at(4) + 24].to_vec()));
    writes.push((at(4) + 24, last.bytes[at(4) + 24..at(5)].to_vec()));

    let mut file = vec![0u8; last.bytes.len()];
    let mut capture = Capture::new();
    let mut captured = Vec::new();
    let mut reads = 0;
    for (n, (offset, data)) in writes.iter().enumerate() {
        file[*offset..*offset + data.len()].copy_from_slice(data);
        let mut source = Counted(&file, 0);
        let got = capture
            .on_write(*offset as u64, data, &mut source)
            .unwrap()
            .expect("no discontinuity");
        reads += source.1;
        captured.extend(got);
        if n == commit_write {
            assert_eq!(captured.len(), 2, "the transaction ends at its commit frame");
        }
    }
    assert_eq!(reads, 0, "nothing was read back from the WAL");
    assert_eq!(captured.len(), 3);
    assert_eq!(pgnos(&captured[1]), vec![2, 3, 4]);
    assert_eq!(captured[1].pages[0].1[0], 0xa2, "page 2 as overwritten");
    assert_eq!(pgnos(&captured[2]), vec![1]);
    let position = capture.position().unwrap();
    assert_eq!(position.next_frame, 5);
    let expected = FrameHeader::parse(&last.bytes[at(4)..at(4) + 24].try_into().unwrap()).checksum;
    assert_eq!(position.checksum, expected, "the chain follows the rewritten checksums");
}

#[test]
fn an_ended_generation_that_cannot_be_resumed_says_why() {
    let ended = WalBuilder::new(4096, 5, 9, false).header;
    let mut capture = Capture::new();
    assert_eq!(capture.why_not_resumed(&ended, 3), "capture ended no generation");
    capture.begin_generation(ended);
    capture.next_frame = 3;
    capture.end_generation();
    assert_eq!(capture.why_not_resumed(&ended, 5), "it would be resumed");
    assert!(capture
        .why_not_resumed(&ended, 2)
        .contains("counts 2 frames of it, capture ended it at 3"));
    // The same salts under a header written again by a writer with another checkpoint
    // sequence: another chain seed, so capture cannot go on from its end.
    let rewritten = WalHeader {
        checkpoint_seq: ended.checkpoint_seq + 1,
        ..ended
    };
    let why = capture.why_not_resumed(&rewritten, 5);
    assert!(why.contains("checkpoint sequence 8 (ended: 7)"), "{why}");
    assert!(!capture.resume_ended(&rewritten, 5), "refused as it says");
}

#[test]
fn the_database_left_by_an_emptied_wal_is_kept_only_while_capture_stands_ended() {
    let identity = FileIdentity {
        dev: 1,
        ino: 2,
        size: 4096,
        mtime_ns: 5,
    };
    let g1 = WalBuilder::new(4096, 1, 1, false);
    let mut capture = Capture::new();
    // Before any header capture stands ended (what a snapshot of a WAL-less file leaves).
    capture.left_database(Some(identity.clone()));
    assert_eq!(capture.database_left(), Some(&identity));
    capture.begin_generation(g1.header);
    assert_eq!(capture.database_left(), None, "a generation began");
    capture.left_database(Some(identity.clone()));
    assert_eq!(capture.database_left(), None, "not ended: nothing to keep");
    capture.end_generation();
    assert_eq!(capture.database_left(), None, "ended, the file not said");
    capture.left_database(Some(identity.clone()));
    assert_eq!(capture.database_left(), Some(&identity));
    capture.end_generation();
    assert_eq!(capture.database_left(), None, "each end says its own file");
}
