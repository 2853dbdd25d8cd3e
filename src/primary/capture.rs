//! Turns the bytes SQLite writes to the WAL into committed transactions.
//!
//! The VFS calls [`Capture::on_write`] after each successful `xWrite` to the `-wal`
//! file. Frames are copied as they are written (SQLite may rewrite a frame of the
//! open transaction in place, or abandon them on rollback); the write that completes
//! a commit frame (nonzero commit size) ends a transaction, which is returned with its
//! pages. Nothing here blocks on I/O except when the WAL holds frames this process did
//! not write (another process committed, or we attached late): then the frames are
//! read back through [`WalSource`] and verified against the checksum chain.

use super::page_pool::PageBuf;
use crate::wal::{scan_committed, walk_frames, FrameHeader, WalHeader, FRAME_HEADER_SIZE, HEADER_SIZE};
use smallvec::SmallVec;
use std::collections::BTreeMap;
use std::io;
use std::mem;

/// Positional reads of the live WAL file.
pub trait WalSource {
    /// Fills `buf` from `offset`; `Ok(false)` if the file ends before `buf` is full.
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<bool>;
}

/// Where capture stands in the WAL: everything up to frame `next_frame - 1` of the
/// generation named by the salts has been captured. Persisted so that a restart can
/// resume from the WAL instead of taking a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalPosition {
    pub salt1: u32,
    pub salt2: u32,
    pub page_size: u32,
    pub next_frame: u64,
    /// Running checksum after frame `next_frame - 1` (the header's when 0).
    pub checksum: (u32, u32),
    /// The generation ended at `next_frame` (restarted, truncated or deleted, every
    /// commit of it captured): the next one starts from frame 0 once proven to follow
    /// directly (`src/primary/follow.rs`).
    pub ended: bool,
}

/// Pages of one transaction, inline for the usual small commit: capture runs inside
/// the application's `xWrite`, and a heap allocation there is a measurable share of
/// a one-row commit (bench/callgrind_primary.sh). The buffers themselves come from
/// [`PageBuf`]'s own mappings, which go back to the system once a database is idle.
pub type TxnPages = SmallVec<[(u32, PageBuf); 2]>;

/// The transactions one write completed: usually none or one.
pub type Completed = SmallVec<[CapturedTxn; 1]>;

/// One committed SQLite transaction.
#[derive(Debug)]
pub struct CapturedTxn {
    pub page_size: u32,
    /// Database size in pages after the commit.
    pub commit: u32,
    /// Changed pages, ascending and unique, none above `commit`.
    pub pages: TxnPages,
    /// WAL offset of the first frame of the transaction and the bytes it spans.
    pub wal_offset: u64,
    pub wal_size: u64,
    /// Position right after this commit.
    pub position: WalPosition,
}

/// Capture lost track of the WAL: frames may have been committed that it never saw.
/// The only safe continuation is a full snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discontinuity(pub String);

/// A frame of the open transaction as written so far.
struct PendingFrame {
    header: [u8; FRAME_HEADER_SIZE],
    page: PageBuf,
    header_written: bool,
    page_written: bool,
}

impl PendingFrame {
    fn complete(&self) -> bool {
        self.header_written && self.page_written
    }

    /// Copies `chunk`, which starts `within` bytes into the frame.
    fn write(&mut self, within: usize, chunk: &[u8]) {
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

#[derive(Default)]
pub struct Capture {
    header: Option<WalHeader>,
    next_frame: u64,
    chain: (u32, u32),
    /// `header`'s generation ended with everything in it captured; the next one is
    /// not known yet (see [`WalPosition::ended`]).
    ended: bool,
    /// Frames of the open transaction: slot `i` holds frame `next_frame + i`. SQLite
    /// appends frames in order, so this stays dense, and a `Vec` reused from commit to
    /// commit costs no allocation on the commit path (this runs inside every `xWrite`).
    pending: Vec<Option<PendingFrame>>,
    spare: Vec<PageBuf>,
    /// The generation [`Capture::end_generation`] ended last and the frame it ended at.
    last_ended: Option<((u32, u32), u64)>,
}

impl Capture {
    pub fn new() -> Self {
        Self::default()
    }

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
    fn page_buffer(&mut self, size: usize) -> PageBuf {
        while let Some(page) = self.spare.pop() {
            if page.len() == size {
                return page;
            }
        }
        PageBuf::new(size)
    }

    /// The pending frame `index`, if any part of it was written.
    fn pending_frame(&self, index: u64) -> Option<&PendingFrame> {
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
    fn drop_pending(&mut self) {
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
    fn rebase_pending(&mut self, old_next: u64) {
        let moved = usize::try_from(self.next_frame.saturating_sub(old_next)).unwrap_or(usize::MAX);
        let gone: Vec<_> = self.pending.drain(..moved.min(self.pending.len())).flatten().collect();
        for frame in gone {
            self.recycle(frame.page);
        }
    }

    /// The position after the last captured commit, if a WAL header is known.
    pub fn position(&self) -> Option<WalPosition> {
        self.header.map(|h| WalPosition {
            salt1: h.salt1,
            salt2: h.salt2,
            page_size: h.page_size,
            next_frame: self.next_frame,
            checksum: self.chain,
            ended: self.ended,
        })
    }

    /// The salts of the generation capture is in, unless it ended.
    pub fn generation(&self) -> Option<(u32, u32)> {
        self.header.filter(|_| !self.ended).map(|h| (h.salt1, h.salt2))
    }

    /// True when the last generation ended and the next is not known yet.
    pub fn ended(&self) -> bool {
        self.ended || self.header.is_none()
    }

    /// Next frame to capture in the current generation.
    pub fn next_frame(&self) -> u64 {
        self.next_frame
    }

    /// Positions capture after the last valid commit in the WAL without returning the
    /// transactions: used when a snapshot already contains them. With no WAL (or no
    /// valid header) the generation counts as ended: whatever comes next must be proven
    /// to start afresh (`follow.rs`). Reads one frame at a time, never the WAL whole.
    pub fn skip_to_end(&mut self, wal: &mut dyn WalSource) -> io::Result<()> {
        self.drop_pending();
        let header = read_header(wal)?;
        self.next_frame = 0;
        self.ended = header.is_none();
        self.header = header;
        if let Some(header) = header {
            self.chain = header.checksum;
            let last = walk_frames(&header, 0, header.checksum, frame_reader(&header, wal), |_, _, _, _| {
                true
            });
            if let Some((frame, sum)) = last {
                self.next_frame = frame + 1;
                self.chain = sum;
            }
        }
        Ok(())
    }

    /// Puts capture at a saved position (a restart, a takeover); what follows it is
    /// read with [`Capture::scan_live`] or from hand-offs.
    pub fn set_position(&mut self, position: &WalPosition, header: WalHeader) {
        self.drop_pending();
        self.header = Some(header);
        self.next_frame = position.next_frame;
        self.chain = position.checksum;
        self.ended = position.ended;
    }

    /// True when the live WAL still holds our position: frame `next_frame - 1` is in
    /// our generation and its running checksum is ours. A chain of zeros (a position
    /// taken between a commit written with deferred checksums and their rewrite) is
    /// first repaired from the file.
    pub fn verify_position(&mut self, wal: &mut dyn WalSource) -> io::Result<bool> {
        let Some(header) = self.header.filter(|_| !self.ended) else {
            return Ok(false);
        };
        if self.next_frame == 0 {
            return Ok(self.chain == header.checksum);
        }
        if self.chain == (0, 0) {
            let target = self.next_frame - 1;
            let mut at_target = None;
            walk_frames(
                &header,
                0,
                header.checksum,
                frame_reader(&header, wal),
                |index, fh, _, sum| {
                    if index == target && fh.is_commit() {
                        at_target = Some(sum);
                    }
                    index < target
                },
            );
            match at_target {
                Some(sum) => self.chain = sum,
                None => return Ok(false),
            }
        }
        self.frame_ends_chain(self.next_frame - 1, self.chain, wal)
    }

    /// Whether the live WAL holds a commit after capture's position: `None` when the
    /// position cannot answer (another generation in the file, its last frame gone, a
    /// chain not known yet) and the caller must walk the WAL from its start. Reads from
    /// the position on: usually one frame, where walking from the start reads them all.
    pub fn commits_after(&self, live: &mut dyn WalSource) -> io::Result<Option<bool>> {
        let Some(header) = self.header.filter(|_| !self.ended && self.chain != (0, 0)) else {
            return Ok(None);
        };
        if read_header(live)? != Some(header) {
            return Ok(None);
        }
        if self.next_frame > 0 && !self.frame_ends_chain(self.next_frame - 1, self.chain, live)? {
            return Ok(None);
        }
        let last = walk_frames(
            &header,
            self.next_frame,
            self.chain,
            frame_reader(&header, live),
            |_, _, _, _| true,
        );
        Ok(Some(last.is_some()))
    }

    /// A new generation that provably continues the last one: capture starts at its
    /// frame 0.
    pub fn begin_generation(&mut self, header: WalHeader) {
        self.drop_pending();
        self.header = Some(header);
        self.next_frame = 0;
        self.chain = header.checksum;
        self.ended = false;
    }

    /// The current generation is gone with every commit of it captured.
    pub fn end_generation(&mut self) {
        self.drop_pending();
        if let Some(h) = self.header.filter(|_| !self.ended) {
            self.last_ended = Some(((h.salt1, h.salt2), self.next_frame));
        }
        self.ended = true;
    }

    /// The generation ended last and the frame capture ended it at. Whoever ends a
    /// generation records it (and capture follows) before rewriting or truncating the
    /// WAL, so for a moment the file still shows it.
    pub fn last_ended(&self) -> Option<((u32, u32), u64)> {
        self.last_ended
    }

    /// Reads the commits after our position from `wal`, a source holding the current
    /// generation's frames (the live WAL or a hand-off), verified against the chain.
    /// Whether the source was read to its end shows in [`Capture::next_frame`].
    pub fn scan_live(&mut self, wal: &mut dyn WalSource) -> Vec<CapturedTxn> {
        if self.ended {
            return Vec::new();
        }
        self.scan_from_file(wal)
    }

    /// Resumes from a persisted position: returns the transactions committed in the
    /// WAL since then, or a [`Discontinuity`] when the WAL no longer continues it.
    pub fn resume(
        &mut self,
        from: WalPosition,
        wal: &mut dyn WalSource,
    ) -> io::Result<Result<Vec<CapturedTxn>, Discontinuity>> {
        self.drop_pending();
        let header = read_header(wal)?;
        let Some(header) = header else {
            self.header = None;
            self.next_frame = 0;
            self.ended = true;
            return Ok(Err(Discontinuity("the WAL is gone or empty".into())));
        };
        if (header.salt1, header.salt2, header.page_size) != (from.salt1, from.salt2, from.page_size) {
            self.header = Some(header);
            self.next_frame = 0;
            self.chain = header.checksum;
            self.ended = false;
            return Ok(Err(Discontinuity(
                "the WAL was restarted since the last capture".into(),
            )));
        }
        self.header = Some(header);
        self.next_frame = from.next_frame;
        self.chain = from.checksum;
        self.ended = false;
        if from.next_frame > 0 && !self.frame_ends_chain(from.next_frame - 1, from.checksum, wal)? {
            return Ok(Err(Discontinuity(
                "the WAL no longer holds the last captured frame".into(),
            )));
        }
        Ok(Ok(self.scan_from_file(wal)))
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
            Appended::Page { slot } => {
                let mut found = Completed::new();
                found.extend(self.end_of_frame(slot, wal)?);
                Ok(Ok(found))
            }
            Appended::No => self.on_other_write(offset, data, wal),
        }
    }

    /// Everything but the appending of a frame (see [`Capture::append`]).
    #[inline(never)]
    fn on_other_write(
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
    fn end_of_frame(&mut self, slot: usize, wal: &mut dyn WalSource) -> io::Result<Completed> {
        let header = self.header.expect("a frame was written");
        let frame = self.pending[slot].as_ref().expect("just written");
        let fh = FrameHeader::parse(&frame.header);
        if !fh.is_commit() {
            return Ok(Completed::new());
        }
        self.commit_through(&header, self.next_frame + slot as u64, fh, wal)
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
    fn commit_through(
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

    fn scan_from_file(&mut self, wal: &mut dyn WalSource) -> Vec<CapturedTxn> {
        match self.header {
            Some(header) => self.scan_frames_with(header, wal),
            None => Vec::new(),
        }
    }

    /// Reads committed transactions after our position from the file.
    fn scan_frames_with(&mut self, header: WalHeader, wal: &mut dyn WalSource) -> Vec<CapturedTxn> {
        let start = self.next_frame;
        let commits = scan_committed(&header, start, self.chain, frame_reader(&header, wal));
        let mut out = Vec::with_capacity(commits.len());
        let mut first = start;
        for commit in commits {
            let mut latest: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
            for (pgno, page) in commit.pages {
                latest.insert(pgno, page);
            }
            self.next_frame = commit.commit_frame + 1;
            self.chain = commit.checksum;
            out.push(CapturedTxn {
                page_size: header.page_size,
                commit: commit.commit,
                pages: latest
                    .into_iter()
                    .filter(|(pgno, _)| *pgno <= commit.commit)
                    .map(|(pgno, page)| (pgno, PageBuf::copy_of(&page)))
                    .collect(),
                wal_offset: header.frame_offset(first),
                wal_size: (commit.commit_frame + 1 - first) * header.frame_size(),
                position: WalPosition {
                    salt1: header.salt1,
                    salt2: header.salt2,
                    page_size: header.page_size,
                    next_frame: self.next_frame,
                    checksum: self.chain,
                    ended: false,
                },
            });
            first = self.next_frame;
        }
        self.rebase_pending(start);
        out
    }

    /// True when frame `index` in the file is valid and its running checksum is `sum`.
    fn frame_ends_chain(&self, index: u64, sum: (u32, u32), wal: &mut dyn WalSource) -> io::Result<bool> {
        let header = self.header.expect("header known");
        let mut raw = [0u8; FRAME_HEADER_SIZE];
        if !wal.read_exact_at(header.frame_offset(index), &mut raw)? {
            return Ok(false);
        }
        let fh = FrameHeader::parse(&raw);
        Ok(fh.salt1 == header.salt1 && fh.salt2 == header.salt2 && fh.checksum == sum)
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
fn foreign_salts(header: &WalHeader, frame: &[u8]) -> bool {
    let salts = &frame[8..16];
    salts.iter().any(|&b| b != 0)
        && (salts[..4] != header.salt1.to_be_bytes() || salts[4..] != header.salt2.to_be_bytes())
}

fn read_header(wal: &mut dyn WalSource) -> io::Result<Option<WalHeader>> {
    let mut raw = [0u8; HEADER_SIZE];
    if !wal.read_exact_at(0, &mut raw)? {
        return Ok(None);
    }
    Ok(WalHeader::parse(&raw).ok())
}

/// Reads frame `index` of `header`'s generation from `wal`; false past its end or on an
/// error (the walk stops there, as at any frame that does not continue the chain).
pub(super) fn frame_reader<'a>(
    header: &WalHeader,
    wal: &'a mut dyn WalSource,
) -> impl FnMut(u64, &mut [u8]) -> bool + 'a {
    let header = *header;
    move |index, buf| wal.read_exact_at(header.frame_offset(index), buf).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::testing::WalBuilder;

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
}
