//! Turns the bytes SQLite writes to the WAL into committed transactions.
//!
//! The VFS calls [`Capture::on_write`] after each successful `xWrite` to the `-wal`
//! file. Frames are copied as they are written (SQLite may rewrite a frame of the
//! open transaction in place, or abandon them on rollback); the write that completes
//! a commit frame (nonzero commit size) ends a transaction, which is returned with its
//! pages. Nothing here blocks on I/O except when the WAL holds frames this process did
//! not write (another process committed, or we attached late): then the frames are
//! read back through [`WalSource`] and verified against the checksum chain.
//!
//! Here: the types and where capture stands. `pending.rs`: the frames of the open
//! transaction, their page buffers and the append fast path; `write.rs`: every other
//! write (headers, rewrites, pieces, the commit frame); `scan.rs`: reading frames back
//! from the file; `tests.rs`.

use super::page_pool::PageBuf;
use super::state::FileIdentity;
use crate::wal::{WalHeader, HEADER_SIZE};
use pending::PendingFrame;
use smallvec::SmallVec;
use std::io;

mod pending;
mod scan;
#[cfg(test)]
mod tests;
mod write;

/// Positional reads of the live WAL file.
pub trait WalSource {
    /// Fills `buf` from `offset`; `Ok(false)` if the file ends before `buf` is full.
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<bool>;

    /// Makes later reads see the WAL at its path now, when the one read so far was
    /// deleted (and perhaps created again) since it was opened; true if so. A source
    /// that cannot be replaced under it (SQLite's own handle, a record, memory) keeps
    /// reading what it reads.
    fn look_again(&mut self) -> io::Result<bool> {
        Ok(false)
    }
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

/// As the log says it: the WAL generation (its salts, as the other messages print them)
/// and the frame capture reached.
impl std::fmt::Display for WalPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WAL {:08x}{:08x} frame {}", self.salt1, self.salt2, self.next_frame)?;
        match self.ended {
            true => f.write_str(" (generation ended)"),
            false => Ok(()),
        }
    }
}

/// [`WalPosition`]'s text, or that there is none yet.
pub fn describe_position(position: Option<WalPosition>) -> String {
    position.map_or_else(|| "nothing captured yet".to_string(), |p| p.to_string())
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
    /// The generation [`Capture::end_generation`] ended last (its header), the frame it
    /// ended at and the running checksum there.
    last_ended: Option<(WalHeader, u64, (u32, u32))>,
    /// The database file as the current generation began on an empty WAL (its start
    /// record), for [`Capture::never_reached_the_file`].
    began_on_empty_wal: Option<FileIdentity>,
    /// While capture stands ended with the WAL left empty (truncated or deleted after a
    /// checkpoint, a clean close, a snapshot of a database without a WAL): the database
    /// file as that left it, for [`Capture::database_left`].
    database_left: Option<FileIdentity>,
    /// With `database_left`: SQLite's count of commits then, when known
    /// ([`Capture::left_commits`]).
    commits_left: Option<u32>,
}

impl Capture {
    pub fn new() -> Self {
        Self::default()
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

    /// Puts capture at a saved position (a restart, a takeover); what follows it is
    /// read with [`Capture::scan_live`] or from hand-offs.
    pub fn set_position(&mut self, position: &WalPosition, header: WalHeader) {
        self.drop_pending();
        self.began_on_empty_wal = None;
        self.database_left = None;
        self.commits_left = None;
        self.header = Some(header);
        self.next_frame = position.next_frame;
        self.chain = position.checksum;
        self.ended = position.ended;
    }

    /// A new generation that provably continues the last one: capture starts at its
    /// frame 0.
    pub fn begin_generation(&mut self, header: WalHeader) {
        self.drop_pending();
        self.began_on_empty_wal = None;
        self.database_left = None;
        self.commits_left = None;
        self.header = Some(header);
        self.next_frame = 0;
        self.chain = header.checksum;
        self.ended = false;
    }

    /// The current generation is gone with every commit of it captured.
    pub fn end_generation(&mut self) {
        self.drop_pending();
        self.began_on_empty_wal = None;
        self.database_left = None;
        self.commits_left = None;
        if let Some(h) = self.header.filter(|_| !self.ended) {
            self.last_ended = Some((h, self.next_frame, self.chain));
        }
        self.ended = true;
    }

    /// The generation just begun began on an empty WAL with the database file as
    /// `database` (a start record's).
    pub fn began_on_empty_wal(&mut self, database: Option<FileIdentity>) {
        self.began_on_empty_wal = database;
    }

    /// Capture stands ended and the WAL was left empty with the database file as
    /// `database` (`None`: not known). In WAL mode only a checkpoint writes the database
    /// file, so while the WAL stays empty the file must stay as it was: a file found
    /// changed, with the WAL still empty or at the start of the next generation, was
    /// written by a generation that came and went unseen (a tool without the VFS that
    /// committed and checkpointed with TRUNCATE between two looks).
    pub fn left_database(&mut self, database: Option<FileIdentity>) {
        if self.ended() {
            self.database_left = database;
            self.commits_left = None;
        }
    }

    /// With [`Capture::left_database`]: SQLite's count of commits in the wal-index as the
    /// WAL was left empty. Any commit since, with the WAL still empty and no record of
    /// it, was checkpointed away unseen: a witness that does not depend on the file's
    /// modification time, which many kernels stamp from a clock a few milliseconds
    /// coarse (a same-size update and checkpoint within that tick keeps the identity).
    pub fn left_commits(&mut self, commits: Option<u32>) {
        if self.ended() {
            self.commits_left = commits;
        }
    }

    /// The count [`Capture::left_commits`] kept, while capture stands ended.
    pub fn commits_left(&self) -> Option<u32> {
        self.commits_left.filter(|_| self.ended())
    }

    /// The database file as the WAL was left empty, while capture stands ended
    /// ([`Capture::left_database`]).
    pub fn database_left(&self) -> Option<&FileIdentity> {
        self.database_left.as_ref().filter(|_| self.ended())
    }

    /// Whether the generation capture is in began on an empty WAL and, as far as the
    /// database file (as `database_now`) and capture can tell, never reached the file:
    /// nothing of it captured, and the database as it was when it began, so no commit
    /// of it was checkpointed either. Its writer recorded the start and died before
    /// writing the header; the WAL is empty, or the next writer is beginning another.
    pub fn never_reached_the_file(&self, database_now: Option<&FileIdentity>) -> bool {
        !self.ended
            && self.next_frame == 0
            && self.began_on_empty_wal.is_some()
            && self.began_on_empty_wal.as_ref() == database_now
    }

    /// The generation ended last and the frame capture ended it at. Whoever ends a
    /// generation records it (and capture follows) before rewriting or truncating the
    /// WAL, so for a moment the file still shows it.
    pub fn last_ended(&self) -> Option<((u32, u32), u64)> {
        self.last_ended.map(|(h, at, _)| ((h.salt1, h.salt2), at))
    }

    /// Whether the generation of `header` (the same header, so the same chain) is the
    /// one capture ended last, and ended at or after frame `end`: none of its commits up
    /// to there is new to capture, and nothing was captured since (capture stands at
    /// the start of the next generation, or past the ended one). The WAL shows such a
    /// generation when the process that ended it (recorded the end, and capture
    /// followed) died before rewriting the WAL's header: the next writer then restarts
    /// the WAL from that generation.
    pub fn ended_with_nothing_since(&self, header: &WalHeader, end: u64) -> bool {
        self.holds_nothing_since_last_end() && self.last_ended.is_some_and(|(h, at, _)| h == *header && end <= at)
    }

    /// Takes up again, where it ended it, the generation capture ended last, when the
    /// WAL shows that generation (the same `header`) holding `counted` frames, at least
    /// as many as capture ended it at, and capture holds nothing since. The restart (or
    /// truncation) its record announced never reached the file: its writer died before
    /// rewriting the header, and SQLite's recovery rebuilt the wal-index from the file,
    /// so writers append to that generation again. The caller reads on from there.
    pub fn resume_ended(&mut self, header: &WalHeader, counted: u64) -> bool {
        let Ok((ended, at, chain)) = self.resumable(header, counted) else {
            return false;
        };
        self.drop_pending();
        self.header = Some(ended);
        self.next_frame = at;
        self.chain = chain;
        self.ended = false;
        self.began_on_empty_wal = None;
        self.database_left = None;
        self.commits_left = None;
        self.last_ended = None;
        true
    }

    /// Why [`Capture::resume_ended`] would not take up the generation of `header` with
    /// `counted` frames again: for the log of the snapshot that follows, since one such
    /// refusal (in `multi_process_crash`, about once in 2,000 kills) is not explained yet.
    pub fn why_not_resumed(&self, header: &WalHeader, counted: u64) -> String {
        self.resumable(header, counted)
            .err()
            .unwrap_or_else(|| "it would be resumed".into())
    }

    /// The generation capture ended last (its header, end frame and chain there) when
    /// [`Capture::resume_ended`] may take it up again, else why not.
    fn resumable(&self, header: &WalHeader, counted: u64) -> Result<(WalHeader, u64, (u32, u32)), String> {
        let Some((ended, at, chain)) = self.last_ended else {
            return Err("capture ended no generation".into());
        };
        if !self.holds_nothing_since_last_end() {
            return Err(format!(
                "capture holds frames up to {} since it ended it",
                self.next_frame
            ));
        }
        if counted < at {
            return Err(format!(
                "the WAL counts {counted} frames of it, capture ended it at {at}"
            ));
        }
        if ended != *header {
            return Err(format!(
                "the WAL's header has its salts but not the header capture ended it with: checkpoint \
                 sequence {} (ended: {}), page size {} ({}), checksum {:08x}{:08x} ({:08x}{:08x})",
                header.checkpoint_seq,
                ended.checkpoint_seq,
                header.page_size,
                ended.page_size,
                header.checksum.0,
                header.checksum.1,
                ended.checksum.0,
                ended.checksum.1
            ));
        }
        Ok((ended, at, chain))
    }

    /// Where capture ended the generation before, while it holds nothing after that
    /// (at the start of the next generation, or ended): what a saved position there
    /// needs beside it should the next generation never reach the file
    /// (`SavedState::ended_before`).
    pub fn ended_before(&self) -> Option<WalPosition> {
        if !self.holds_nothing_since_last_end() {
            return None;
        }
        self.last_ended.map(|(h, at, chain)| WalPosition {
            salt1: h.salt1,
            salt2: h.salt2,
            page_size: h.page_size,
            next_frame: at,
            checksum: chain,
            ended: false,
        })
    }

    /// Nothing captured since the last generation ended: capture stands ended, or at
    /// frame 0 of the generation after it.
    fn holds_nothing_since_last_end(&self) -> bool {
        self.ended || self.next_frame == 0
    }

    /// The header of the generation capture is in (or ended last, when it ended).
    pub fn header(&self) -> Option<WalHeader> {
        self.header
    }
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
