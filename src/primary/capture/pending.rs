//! The frames of the open transaction, the page buffers they are copied into, and the
//! fast path of a write: SQLite appending a frame, header then page, right after the
//! frames pending. Everything else a write can be goes to `write.rs`.

use super::write::foreign_salts;
use super::{Capture, Completed, Discontinuity, PageBuf, WalSource};
use crate::wal::{FrameHeader, FRAME_HEADER_SIZE, HEADER_SIZE};
use std::io;
use std::mem;

/// A frame of the open transaction as written so far.
pub(super) struct PendingFrame {
    pub(super) header: [u8; FRAME_HEADER_SIZE],
    pub(super) page: PageBuf,
    pub(super) header_written: bool,
    pub(super) page_written: bool,
}

impl PendingFrame {
    pub(super) fn complete(&self) -> bool {
        self.header_written && self.page_written
    }

    /// Copies `chunk`, which starts `within` bytes into the frame.
    pub(super) fn write(&mut self, within: usize, chunk: &[u8]) {
        let end = within + chunk.len();
        if within == 0 {
            // SQLite writes a frame as header then page: a new header means any page
            // bytes held for this slot belong to an abandoned frame.
            self.page_written = false;
        }
        if within < FRAME_HEADER_SIZE {
            let n = end.min(FRAME_HEADER_SIZE) - within;
            self.header[within..within + n].copy_from_slice(&chunk[..n]);
        }
        if end > FRAME_HEADER_SIZE {
            let from = within.max(FRAME_HEADER_SIZE);
            let skip = from - within;
            self.page[from - FRAME_HEADER_SIZE..end - FRAME_HEADER_SIZE].copy_from_slice(&chunk[skip..]);
        }
        self.header_written |= within == 0 && end >= FRAME_HEADER_SIZE;
        self.page_written |= within <= FRAME_HEADER_SIZE && end == FRAME_HEADER_SIZE + self.page.len();
    }
}

/// What [`Capture::append`] made of a write.
enum Appended {
    /// The header of the next frame.
    Header,
    /// The page of the frame pending in `slot`, whose header was written before.
    Page { slot: usize },
    /// Something else: the general path handles it.
    No,
}

/// Page buffers kept for reuse: steady-state capture allocates nothing.
const MAX_SPARE_PAGES: usize = 1024;

impl Capture {
    /// Returns a page buffer for reuse by later frames.
    pub fn recycle(&mut self, page: PageBuf) {
        if self.spare.len() < MAX_SPARE_PAGES {
            self.spare.push(page);
        }
    }

    /// Frees the buffers kept for reuse (spare pages, the pending-frame slots) when no
    /// transaction is open: a database idle for a whole sync interval should cost
    /// nothing of ours but its bookkeeping. The next burst allocates them again.
    pub fn release_idle_buffers(&mut self) {
        self.spare = Vec::new();
        if !self.has_pending() {
            self.pending = Vec::new();
        }
    }

    /// A page buffer of `size` bytes. Its contents are irrelevant: a page counts as
    /// written only once one write covered all of it.
    pub(super) fn page_buffer(&mut self, size: usize) -> PageBuf {
        while let Some(page) = self.spare.pop() {
            if page.len() == size {
                return page;
            }
        }
        PageBuf::new(size)
    }

    /// The pending frame `index`, if any part of it was written.
    pub(super) fn pending_frame(&self, index: u64) -> Option<&PendingFrame> {
        let slot = usize::try_from(index.checked_sub(self.next_frame)?).ok()?;
        self.pending.get(slot)?.as_ref()
    }

    /// True while frames of an uncommitted transaction are held.
    pub fn has_pending(&self) -> bool {
        // Called after every WAL write: slot 0 answers at once for a transaction's frames.
        self.pending.first().is_some_and(Option::is_some) || self.pending.iter().any(Option::is_some)
    }

    /// The write transaction ended without committing what is pending (a rollback that
    /// spilled frames): those frames will never commit, and another process may write
    /// other frames at their offsets before we write again.
    pub fn discard_pending(&mut self) {
        self.drop_pending();
    }

    /// Forgets the open transaction's frames, keeping their buffers.
    pub(super) fn drop_pending(&mut self) {
        let frames = mem::take(&mut self.pending);
        self.recycle_frames(frames);
    }

    fn recycle_frames(&mut self, mut frames: Vec<Option<PendingFrame>>) {
        for frame in frames.drain(..).flatten() {
            self.recycle(frame.page);
        }
        if self.pending.capacity() < frames.capacity() {
            self.pending = frames; // keep the larger allocation for the next transaction
        }
    }

    /// `next_frame` moved from `old_next` to its current value: frames before it are
    /// no longer pending, and the remaining slots shift down.
    pub(super) fn rebase_pending(&mut self, old_next: u64) {
        let moved = usize::try_from(self.next_frame.saturating_sub(old_next)).unwrap_or(usize::MAX);
        let gone: Vec<_> = self.pending.drain(..moved.min(self.pending.len())).flatten().collect();
        for frame in gone {
            self.recycle(frame.page);
        }
    }

    /// Records a successful `xWrite` of `data` at `offset` in the WAL. Returns the
    /// transactions this write completed (usually none or one; more when frames of
    /// another process were found first), or a [`Discontinuity`].
    #[inline]
    pub fn on_write(
        &mut self,
        offset: u64,
        data: &[u8],
        wal: &mut dyn WalSource,
    ) -> io::Result<Result<Completed, Discontinuity>> {
        match self.append(offset, data) {
            Appended::Header => Ok(Ok(Completed::new())),
            // Returned as it is: extending an empty `Completed` with it moved each
            // transaction again (~200 instructions of every commit).
            Appended::Page { slot } => self.end_of_frame(slot, wal).map(Ok),
            Appended::No => self.on_other_write(offset, data, wal),
        }
    }

    /// The two writes SQLite appends a frame with: its header right after the frames
    /// pending, then its page. Does exactly what the general path of
    /// [`Capture::on_write`] would for them, without its bookkeeping: they are all
    /// the writes of a small commit. Anything else (a new WAL header, rewrites in
    /// place, frames in odd pieces, gaps left by another process) returns `No`.
    #[inline]
    fn append(&mut self, offset: u64, data: &[u8]) -> Appended {
        let Some(header) = self.header.filter(|_| !self.ended) else {
            return Appended::No;
        };
        let Some(relative) = offset.checked_sub(HEADER_SIZE as u64) else {
            return Appended::No;
        };
        let frame_size = header.frame_size();
        let (index, within) = (relative / frame_size, relative % frame_size);
        let Some(slot) = index.checked_sub(self.next_frame).map(|s| s as usize) else {
            return Appended::No;
        };
        // Frames missing before this one send the general path to the file.
        if slot > 0 && self.pending.first().is_none_or(|f| f.is_none()) {
            return Appended::No;
        }
        if within == 0 && data.len() == FRAME_HEADER_SIZE && slot == self.pending.len() && !foreign_salts(&header, data)
        {
            let page = self.page_buffer(header.page_size as usize);
            let mut frame = PendingFrame {
                header: [0u8; FRAME_HEADER_SIZE],
                page,
                header_written: true,
                page_written: false,
            };
            frame.header.copy_from_slice(data);
            self.pending.push(Some(frame));
            return Appended::Header;
        }
        if within == FRAME_HEADER_SIZE as u64 && data.len() == header.page_size as usize {
            if let Some(Some(frame)) = self.pending.get_mut(slot) {
                if frame.header_written {
                    frame.page.copy_from_slice(data);
                    frame.page_written = true;
                    return Appended::Page { slot };
                }
            }
        }
        Appended::No
    }

    /// The frame in `slot` was just completed: if it is a commit frame, its
    /// transaction ends.
    pub(super) fn end_of_frame(&mut self, slot: usize, wal: &mut dyn WalSource) -> io::Result<Completed> {
        let header = self.header.expect("a frame was written");
        let frame = self.pending[slot].as_ref().expect("just written");
        let fh = FrameHeader::parse(&frame.header);
        if !fh.is_commit() {
            return Ok(Completed::new());
        }
        self.commit_through(&header, self.next_frame + slot as u64, fh, wal)
    }
}
