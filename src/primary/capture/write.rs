//! The general path of a write to the WAL: a new header (the WAL restarts), a frame
//! written in pieces or rewritten in place, checksums rewritten after a commit, frames
//! of another process found first, and the commit frame that ends a transaction.

use super::pending::PendingFrame;
use super::{read_header, Capture, CapturedTxn, Completed, Discontinuity, TxnPages, WalSource};
use crate::wal::{FrameHeader, WalHeader, FRAME_HEADER_SIZE, HEADER_SIZE};
use std::io;

impl Capture {
    /// Everything but the appending of a frame (see [`Capture::append`]).
    #[inline(never)]
    pub(super) fn on_other_write(
        &mut self,
        offset: u64,
        data: &[u8],
        wal: &mut dyn WalSource,
    ) -> io::Result<Result<Completed, Discontinuity>> {
        if offset == 0 {
            return self.on_header_write(data, wal);
        }
        if offset < HEADER_SIZE as u64 {
            return Ok(Err(Discontinuity(format!("unexpected WAL write at offset {offset}"))));
        }
        let mut found = Completed::new();
        if self.ended && self.header.is_some() {
            // Frames of a generation whose beginning nobody recorded (the primary's
            // write-lock hook follows every recorded one before a transaction writes).
            return Ok(Err(Discontinuity(
                "frames written to a WAL generation capture never saw begin".into(),
            )));
        }
        if self.header.is_none() {
            // Attached to a WAL whose header we never saw written.
            self.header = read_header(wal)?;
            let Some(header) = self.header else {
                return Ok(Err(Discontinuity("frame written to a WAL without a header".into())));
            };
            self.chain = header.checksum;
            self.next_frame = 0;
            self.drop_pending(); // its slots counted from the old position
            found.extend(self.scan_from_file(wal));
        }
        let header = self.header.expect("header known");
        let frame_size = header.frame_size();
        let first = (offset - HEADER_SIZE as u64) / frame_size;
        let at_frame_start = (offset - HEADER_SIZE as u64).is_multiple_of(frame_size);
        if at_frame_start && data.len() >= FRAME_HEADER_SIZE && foreign_salts(&header, data) {
            // A frame of another generation: someone restarted the WAL and this process
            // missed it (the write-lock hook follows every restart it can see first).
            return Ok(Err(Discontinuity(
                "a frame of another WAL generation was written over captured frames".into(),
            )));
        }
        if first > self.next_frame && self.pending_frame(self.next_frame).is_none() {
            // Frames between our position and this write were committed by someone
            // else; read them before they can be overwritten.
            found.extend(self.scan_from_file(wal));
            if first > self.next_frame {
                let salts_now = read_header(wal)?.map(|h| (h.salt1, h.salt2));
                if salts_now != Some((header.salt1, header.salt2)) {
                    return Ok(Err(Discontinuity("another process restarted the WAL".into())));
                }
            }
        }
        if writes_a_captured_page(&header, self.next_frame, offset, data.len()) {
            // SQLite rewrites only the headers of committed frames (deferred checksums).
            // New page bytes there mean a writer is putting its commit where capture read
            // one SQLite never counted: a writer killed between writing its commit frame
            // and the wal-index update leaves such a frame, and the next writer reuses the
            // slot (multi_process_crash: the replica kept that row, the database another).
            return Ok(Err(Discontinuity(format!(
                "a commit was written over frame {first}, which capture had taken for committed (its writer \
                 died before SQLite counted it)"
            ))));
        }
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let index = (at - HEADER_SIZE as u64) / frame_size;
            let within = ((at - HEADER_SIZE as u64) % frame_size) as usize;
            let n = rest.len().min(frame_size as usize - within);
            let (chunk, tail) = rest.split_at(n);
            found.extend(self.write_into_frame(&header, index, within, chunk, wal)?);
            at += n as u64;
            rest = tail;
        }
        Ok(Ok(found))
    }

    fn on_header_write(
        &mut self,
        data: &[u8],
        wal: &mut dyn WalSource,
    ) -> io::Result<Result<Completed, Discontinuity>> {
        let Ok(new_header) = WalHeader::parse(data) else {
            // A partial header write; the next frame write re-reads the file.
            self.header = None;
            return Ok(Ok(Completed::new()));
        };
        let mut found = Completed::new();
        if let Some(old) = self.header.filter(|_| !self.ended) {
            if (old.salt1, old.salt2) != (new_header.salt1, new_header.salt2) {
                // The WAL restarts. The old generation's frames are still on disk until
                // overwritten: pick up any commit this process did not write.
                found.extend(self.scan_frames_with(old, wal));
            }
        }
        // After an ended generation, this process writing the next header is what
        // proves the new generation follows it directly.
        self.begin_generation(new_header);
        Ok(Ok(found))
    }

    fn write_into_frame(
        &mut self,
        header: &WalHeader,
        index: u64,
        within: usize,
        chunk: &[u8],
        wal: &mut dyn WalSource,
    ) -> io::Result<Completed> {
        if index < self.next_frame {
            // SQLite rewrites frame checksums after the commit frame when it
            // overwrote a page in place; keep the chain position in step.
            if index + 1 == self.next_frame && within == 0 && chunk.len() >= FRAME_HEADER_SIZE {
                let mut raw = [0u8; FRAME_HEADER_SIZE];
                raw.copy_from_slice(&chunk[..FRAME_HEADER_SIZE]);
                self.chain = FrameHeader::parse(&raw).checksum;
            }
            return Ok(Completed::new());
        }
        // Frame indexes come from offsets in a file, so the slot fits in memory.
        let slot = (index - self.next_frame) as usize;
        if slot >= self.pending.len() {
            self.pending.resize_with(slot + 1, || None);
        }
        if self.pending[slot].is_none() {
            let page = self.page_buffer(header.page_size as usize);
            self.pending[slot] = Some(PendingFrame {
                header: [0u8; FRAME_HEADER_SIZE],
                page,
                header_written: false,
                page_written: false,
            });
        }
        let frame = self.pending[slot].as_mut().expect("just ensured");
        frame.write(within, chunk);
        if !frame.complete() {
            return Ok(Completed::new());
        }
        self.end_of_frame(slot, wal)
    }

    /// The commit frame `commit_index` is complete: gather its transaction.
    pub(super) fn commit_through(
        &mut self,
        header: &WalHeader,
        commit_index: u64,
        commit_frame: FrameHeader,
        wal: &mut dyn WalSource,
    ) -> io::Result<Completed> {
        let count = usize::try_from(commit_index + 1 - self.next_frame).unwrap_or(usize::MAX);
        let complete = count <= self.pending.len()
            && self.pending[..count]
                .iter()
                .all(|f| f.as_ref().is_some_and(|f| f.complete() && plausible(header, &f.header)));
        if !complete {
            // Some frame was written in pieces we could not follow: read the
            // transaction back from the file, checksums verified.
            self.drop_pending();
            // Every transaction found is returned: commits of another process may
            // come before ours in the file.
            return Ok(self.scan_from_file(wal).into_iter().collect());
        }
        let start = self.next_frame;
        let mut pages = TxnPages::with_capacity(count);
        for frame in self.pending.drain(..count).flatten() {
            pages.push((FrameHeader::parse(&frame.header).pgno, frame.page));
        }
        if !self.pending.is_empty() {
            // Frames left over belong to no transaction (an abandoned spill).
            self.drop_pending();
        }
        let pages = self.latest_pages(pages, commit_frame.commit);
        self.next_frame = commit_index + 1;
        self.chain = commit_frame.checksum;
        let mut done = Completed::new();
        done.push(CapturedTxn {
            page_size: header.page_size,
            commit: commit_frame.commit,
            pages,
            wal_offset: header.frame_offset(start),
            wal_size: (commit_index + 1 - start) * header.frame_size(),
            position: self.position().expect("header known"),
        });
        Ok(done)
    }

    /// The frames of one transaction in WAL order, reduced to what the transaction
    /// leaves: the last frame of each page, ascending, none beyond the `commit` size.
    fn latest_pages(&mut self, mut frames: TxnPages, commit: u32) -> TxnPages {
        if frames.len() == 1 && frames[0].0 <= commit {
            return frames; // the usual small commit: nothing to sort or drop
        }
        // Stable: frames of one page stay in WAL order, the last is the latest.
        frames.sort_by_key(|(pgno, _)| *pgno);
        let mut pages = TxnPages::with_capacity(frames.len());
        let mut frames = frames.into_iter().peekable();
        while let Some((pgno, page)) = frames.next() {
            let superseded = frames.peek().is_some_and(|(next, _)| *next == pgno);
            if superseded || pgno > commit {
                self.recycle(page);
            } else {
                pages.push((pgno, page));
            }
        }
        pages
    }
}

/// A frame seen written is taken without its checksum (SQLite wrote it), but never with
/// another generation's salts or page number 0, which no SQLite frame has: either sends the
/// transaction to the verified read-back (found by fuzzing: a pgno-0 page reached a captured transaction).
///
/// Salts and checksums all zero are SQLite's own: once a transaction has overwritten one of
/// its spilled frames in place, it writes every later frame that way and fills them in at
/// commit (`walRewriteChecksums`, after the commit frame). Refusing those sent every large
/// spilling transaction to the read-back, which cannot verify it before the rewrite, and
/// then to one more read-back per rewritten header: quadratic, minutes for 30 MB (found by
/// SQLite's walthread.test).
fn plausible(header: &WalHeader, frame: &[u8]) -> bool {
    let pgno = u32::from_be_bytes(frame[0..4].try_into().expect("4 bytes"));
    let salt1 = u32::from_be_bytes(frame[8..12].try_into().expect("4 bytes"));
    let salt2 = u32::from_be_bytes(frame[12..16].try_into().expect("4 bytes"));
    let checksum_deferred = frame[8..24].iter().all(|&b| b == 0);
    pgno != 0 && ((salt1, salt2) == (header.salt1, header.salt2) || checksum_deferred)
}

/// Whether a write of `len` bytes at `offset` puts page bytes (not only a frame header)
/// into a frame before `next_frame`, one capture already counted as committed.
fn writes_a_captured_page(header: &WalHeader, next_frame: u64, offset: u64, len: usize) -> bool {
    let frame_size = header.frame_size();
    let end = (offset + len as u64).min(header.frame_offset(next_frame));
    let mut at = offset;
    while at < end {
        let within = (at - HEADER_SIZE as u64) % frame_size;
        let frame_end = at - within + frame_size;
        if within + (end.min(frame_end) - at) > FRAME_HEADER_SIZE as u64 {
            return true;
        }
        at = frame_end;
    }
    false
}

/// True when a frame header carries salts, and they are not this generation's: a frame
/// of another generation. All-zero salts are a frame whose checksums come later.
pub(super) fn foreign_salts(header: &WalHeader, frame: &[u8]) -> bool {
    let salts = &frame[8..16];
    salts.iter().any(|&b| b != 0)
        && (salts[..4] != header.salt1.to_be_bytes() || salts[4..] != header.salt2.to_be_bytes())
}
