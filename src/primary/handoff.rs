//! Hand-off records: what a process leaves in the staging directory before it makes WAL
//! frames disappear, so that the replicating process (this one, another, or the next
//! one to take over) captures every commit of the WAL, whoever wrote it.
//!
//! Frames disappear in three ways, each under a lock that keeps writers out: a writer
//! restarts the WAL (writes a new header over the old one), a checkpoint truncates it,
//! the last connection deletes it. The VFS of whichever process does it writes, first,
//! a *tail* record: the generation's header and its committed frames from the position
//! the replicating process last staged (`state.json`) to the end, plus the header of the
//! generation that follows when it is known (a restart). A writer that begins a
//! generation on an empty WAL writes a *start* record with the new header. Records are
//! numbered in the order they were written (`seq`), so the replicating process can
//! prove that each generation directly follows the one it captured; where it cannot, it
//! takes a snapshot (`follow.rs`).
//!
//! Layout of a record file `<seq as %016x>.tail` or `.start`: the magic `LSHO`, a u32
//! version (1), a u32 length and that many bytes of JSON metadata, the 32-byte WAL header
//! of the generation, then (tails only) the frames `start_frame..start_frame+frames`
//! exactly as in the WAL. Records are written to a temporary name and renamed.
//!
//! The replicating process itself, restarting the WAL with every commit of the
//! generation already captured, writes a *batch* record instead of a tail
//! (`handoff/batch_record.rs`): the pages those commits changed, merged, not the frames.

use super::capture::{frame_reader, WalSource};
use super::quiet_dir::QuietDir;
use super::state::{FileIdentity, SavedWal};
use crate::file_modes::FileModes;
use crate::wal::{walk_frames, FrameHeader, WalHeader, FRAME_HEADER_SIZE, HEADER_SIZE};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

mod batch_record;
mod read;
pub use batch_record::BatchRecord;
pub use read::TailSource;
use read::{named_seq, next_header, read_record, record_kind};

const MAGIC: &[u8; 4] = b"LSHO";
const VERSION: u32 = 1;

/// The metadata of a record, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Meta {
    seq: u64,
    /// First frame held (tails).
    #[serde(default)]
    start_frame: u64,
    /// Number of frames held (tails); the last one is a commit frame.
    #[serde(default)]
    frames: u64,
    /// Header of the generation that follows (a restart), hex.
    #[serde(default)]
    next_header: Option<String>,
    /// Tails: the database file after the checkpoint that preceded a deleted WAL.
    /// Starts: the database file as the generation began (the WAL empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    closed: Option<FileIdentity>,
    /// What a batch record holds (`batch_record.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    batch: Option<batch_record::BatchMeta>,
}

/// The committed tail of a WAL generation, handed off before the generation went away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tail {
    pub seq: u64,
    pub path: PathBuf,
    pub header: WalHeader,
    pub start_frame: u64,
    pub frames: u64,
    /// The generation that follows, when the tail was written by a restart.
    pub next: Option<WalHeader>,
    /// Set when the WAL was deleted by the last connection to close: the database file
    /// as that checkpoint left it.
    pub closed: Option<FileIdentity>,
}

impl Tail {
    /// Index of the frame after the last one held.
    pub fn end_frame(&self) -> u64 {
        self.start_frame + self.frames
    }
}

/// One record, in `seq` order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Tail(Tail),
    /// A generation begun on an empty WAL (after a truncation or a deletion).
    Start {
        seq: u64,
        header: WalHeader,
        /// The database file then, when it could be read (older records have none).
        database: Option<FileIdentity>,
    },
    /// The replicating process's own commits of a generation it restarted, merged.
    Batch(BatchRecord),
}

impl Record {
    pub fn seq(&self) -> u64 {
        match self {
            Record::Tail(t) => t.seq,
            Record::Start { seq, .. } => *seq,
            Record::Batch(b) => b.seq,
        }
    }
}

/// `<staging>/handoff`.
#[derive(Clone, Debug)]
pub struct HandoffDir {
    dir: PathBuf,
    /// The database's permissions: records hold its pages.
    modes: FileModes,
    /// Whether the counter was checked against the records' names since this process
    /// opened the database (`next_seq`).
    names_checked: Arc<AtomicBool>,
    /// Idle turns do not list a directory no record arrived in.
    quiet: QuietDir,
}

impl HandoffDir {
    pub fn new(staging_dir: &Path, modes: FileModes) -> Self {
        HandoffDir {
            dir: staging_dir.join("handoff"),
            modes,
            names_checked: Arc::default(),
            quiet: QuietDir::default(),
        }
    }

    /// Every record, oldest first. Files being written (temporary names) and files
    /// that are not records are ignored.
    pub fn list(&self) -> io::Result<Vec<Record>> {
        self.list_after(0)
    }

    /// The records numbered after `seq`, oldest first: those before are not opened
    /// (this process's own batch records pile up between stages, and every restart
    /// lists the records).
    pub fn list_after(&self, seq: u64) -> io::Result<Vec<Record>> {
        self.quiet.list(&self.dir, seq, || self.list_after_now(seq))
    }

    fn list_after_now(&self, seq: u64) -> io::Result<Vec<Record>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut records = Vec::new();
        for entry in entries {
            let path = entry?.path();
            let Some(kind) = record_kind(&path) else { continue };
            if named_seq(&path) <= seq && seq > 0 {
                continue;
            }
            match read_record(&path, kind) {
                Ok(record) => records.push(record),
                // A record is renamed into place whole; a bad one is not ours to follow.
                Err(e) => tracing::warn!(file = %path.display(), "ignoring a hand-off record: {e}"),
            }
        }
        records.sort_by_key(Record::seq);
        Ok(records)
    }

    /// Bytes the records waiting in the directory hold.
    pub fn record_bytes(&self) -> io::Result<u64> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut total = 0;
        for entry in entries {
            let entry = entry?;
            if record_kind(&entry.path()).is_some() {
                total += entry.metadata().map_or(0, |m| m.len());
            }
        }
        Ok(total)
    }

    /// Hands off the committed frames of the generation in `wal` that `staged` (the
    /// replicating process's last staged position) does not cover: from there when it
    /// is in this generation and still matches the chain, else from frame 0. `next` is
    /// the header about to replace this one (a restart); `closed` the database file
    /// after the checkpoint that precedes a deletion. Returns the record's `seq`, or
    /// None when `wal` holds no valid generation (nothing to hand off).
    pub fn write_tail(
        &self,
        wal: &mut dyn WalSource,
        staged: Option<&SavedWal>,
        next: Option<&[u8]>,
        closed: Option<FileIdentity>,
    ) -> io::Result<Option<u64>> {
        let mut raw = [0u8; HEADER_SIZE];
        if !wal.read_exact_at(0, &mut raw)? {
            return Ok(None);
        }
        let Ok(header) = WalHeader::parse(&raw) else {
            return Ok(None);
        };
        let (start, seed) = match staged {
            Some(s)
                if !s.ended && (s.salt1, s.salt2) == (header.salt1, header.salt2) && continues(&header, s, wal)? =>
            {
                (s.next_frame, s.checksum)
            }
            _ => (0, header.checksum),
        };
        let next_header = next.map(|h| hex(&h[..HEADER_SIZE]));
        self.write_record("tail", |seq, file| {
            // Frames go straight from the WAL to the record, one at a time; the count
            // is known at the end, so the metadata is written last, at a fixed place.
            let frame_size = header.frame_size();
            let body = 12 + META_ROOM as u64;
            file.write_all_at(&raw, body)?;
            let mut written = 0u64;
            let mut failure = None;
            let last = walk_frames(
                &header,
                start,
                seed,
                frame_reader(&header, wal),
                |index, _, frame, _| {
                    let at = body + HEADER_SIZE as u64 + (index - start) * frame_size;
                    match file.write_all_at(frame, at) {
                        Ok(()) => {
                            written = index + 1 - start;
                            true
                        }
                        Err(e) => {
                            failure = Some(e);
                            false
                        }
                    }
                },
            );
            if let Some(e) = failure {
                return Err(e);
            }
            // Frames after the last commit belong to no transaction.
            let frames = last.map_or(0, |(frame, _)| frame + 1 - start).min(written);
            file.set_len(body + HEADER_SIZE as u64 + frames * frame_size)?;
            tracing::debug!(
                seq,
                generation = format!("{:08x}{:08x}", header.salt1, header.salt2),
                start,
                frames,
                next = next_header.as_deref().map(|h| &h[32..48]),
                "hand-off: tail"
            );
            Ok(Meta {
                seq,
                start_frame: start,
                frames,
                next_header: next_header.clone(),
                closed: closed.clone(),
                batch: None,
            })
        })
        .map(Some)
    }

    /// Records that a generation with `header` (32 bytes) begins on an empty WAL, with
    /// the database file as `database` then.
    pub fn write_start(&self, header: &[u8], database: Option<FileIdentity>) -> io::Result<u64> {
        let header = header[..HEADER_SIZE].to_vec();
        self.write_record("start", |seq, file| {
            tracing::debug!(seq, generation = hex(&header[16..24]), "hand-off: start");
            file.write_all_at(&header, 12 + META_ROOM as u64)?;
            Ok(Meta {
                seq,
                start_frame: 0,
                frames: 0,
                next_header: None,
                closed: database.clone(),
                batch: None,
            })
        })
    }

    /// Sequence number of the newest record (0 when there is none).
    pub fn last_seq(&self) -> io::Result<u64> {
        Ok(self.list()?.last().map_or(0, Record::seq))
    }

    /// Deletes the records up to `seq`: what they held is staged.
    pub fn remove_through(&self, seq: u64) {
        let Ok(records) = self.list() else { return };
        for record in records.iter().filter(|r| r.seq() <= seq) {
            let _ = fs::remove_file(self.path_of(record));
        }
    }

    /// Deletes record `seq`, whatever its kind.
    pub fn remove(&self, seq: u64) {
        for kind in ["tail", "start", "batch"] {
            let _ = fs::remove_file(self.dir.join(format!("{seq:016x}.{kind}")));
        }
    }

    /// The frames of a tail, readable like the WAL they came from.
    pub fn open_tail(&self, tail: &Tail) -> io::Result<TailSource> {
        Ok(TailSource {
            file: crate::file_modes::open_read(&tail.path)?,
            frame_size: tail.header.frame_size(),
            start_frame: tail.start_frame,
            frames: tail.frames,
        })
    }

    fn path_of(&self, record: &Record) -> PathBuf {
        match record {
            Record::Tail(t) => t.path.clone(),
            Record::Start { seq, .. } => self.dir.join(format!("{seq:016x}.start")),
            Record::Batch(b) => b.path.clone(),
        }
    }

    /// Writes one record: takes the next sequence number, lets `fill` write the body
    /// into a temporary file and return the metadata, then renames it into place.
    /// Callers hold SQLite's WAL write lock or an exclusive lock on the database, so
    /// records are written one at a time.
    fn write_record(&self, kind: &str, fill: impl FnOnce(u64, &File) -> io::Result<Meta>) -> io::Result<u64> {
        let seq = match self.next_seq() {
            // The directory is made with the first record, not checked at every one.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.modes.create_dir_all(&self.dir)?;
                self.next_seq()?
            }
            taken => taken?,
        };
        let tmp = self.dir.join(format!("{seq:016x}.{kind}.tmp"));
        let result = (|| {
            let file = match self.claim_spare(&tmp) {
                Some(file) => file,
                None => self.modes.create_file(&tmp)?,
            };
            let meta = fill(seq, &file)?;
            let json = serde_json::to_vec(&meta).expect("metadata serialises");
            if json.len() > META_ROOM {
                return Err(io::Error::other("hand-off metadata too large"));
            }
            let mut head = Vec::with_capacity(12 + META_ROOM);
            head.extend_from_slice(MAGIC);
            head.extend_from_slice(&VERSION.to_be_bytes());
            head.extend_from_slice(&(json.len() as u32).to_be_bytes());
            head.extend_from_slice(&json);
            head.resize(12 + META_ROOM, b' ');
            file.write_all_at(&head, 0)?;
            // Not fsynced: a record serves processes (a restart or a takeover after a
            // crash reads it from the page cache). After a power loss a record may be
            // missing or torn; it is then ignored, the chain has a gap, and capture takes
            // a snapshot. The fsync took 8 % of the writer's time (perf) when it
            // restarts the WAL every thousand commits.
            die_here_if_asked(&["unnamed ", kind].concat());
            fs::rename(&tmp, self.dir.join(format!("{seq:016x}.{kind}")))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        if result.is_ok() {
            die_here_if_asked(kind);
        }
        // Only now: the create holds the directory's lock for as long as it scans, and
        // the rename above needs it. Started right after the claim, it made the writer
        // spin on that lock for longer than its own create had taken (perf:
        // `rwsem_spin_on_owner`, 2 % of a single writer's samples).
        self.prepare_spare();
        result.map(|()| seq)
    }

    /// Takes the empty file [`HandoffDir::prepare_spare`] made, under the name `tmp`.
    ///
    /// Creating a file allocates an inode, and on ext4 without a journal (this project's
    /// CI and bench machines) the allocator skips every inode deleted in the last
    /// minute, reading their tables: a record's create was 2.5 % of the writers' time with
    /// four threads on one database (perf), all of it under SQLite's WAL write lock, where
    /// the other writers wait and then sleep in their busy handlers. A rename allocates
    /// nothing. Whoever renames it first has it; the others create their own.
    fn claim_spare(&self, tmp: &Path) -> Option<File> {
        fs::rename(self.dir.join(SPARE), tmp).ok()?;
        let file = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW) // `spare` may have been a planted link (`file_modes/links.rs`)
            .open(tmp)
            .ok()?;
        // Made empty and never written under that name; a stray byte there would make
        // the record longer than its metadata says, and it would be ignored.
        file.set_len(0).ok()?;
        Some(file)
    }

    /// Makes the next record's file ahead of time, on the I/O runtime's blocking pool: off
    /// the writer's thread, and once it is done with the directory (see
    /// [`HandoffDir::claim_spare`]).
    /// One spare at a time; it is an empty file, and not a record (no `.kind` in its name).
    fn prepare_spare(&self) {
        let (path, modes) = (self.dir.join(SPARE), self.modes);
        crate::runtime::runtime().spawn_blocking(move || match modes.create_new(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            // The staging directory was removed, or is full: the next record is created
            // in place as before, and fails there with the error if it is real.
            Err(e) => tracing::debug!(file = %path.display(), "preparing a hand-off record file: {e}"),
        });
    }

    /// One more than any sequence number used: kept in `seq` (never deleted, so numbers
    /// are not reused after records are removed) and checked against the records.
    ///
    /// The counter is rewritten in place, not created anew and renamed: a restart takes
    /// a number every ~1,000 frames, and the create + rename was 2 % of a small commit's
    /// writer time (perf, bench-threads). Callers hold the lock that orders records, so
    /// nobody reads it half-written; a process that dies in the write leaves either
    /// number (a 21-byte write within one page). A counter behind the records' names
    /// (lost in a power cut: neither is fsynced; or deleted) is overtaken by the names,
    /// read once per process: a power cut restarts every process, and while they run the
    /// counter only moves forward. An unreadable counter sends us to the names again.
    fn next_seq(&self) -> io::Result<u64> {
        let counter = self.modes.open_or_create(&self.dir.join("seq"))?;
        let mut text = [0u8; SEQ_WIDTH + 8];
        let read = counter.read_at(&mut text, 0)?;
        let stored = std::str::from_utf8(&text[..read])
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        let named = match stored {
            Some(_) if self.names_checked.load(Ordering::Relaxed) => 0,
            _ => self.highest_named_seq()?,
        };
        let seq = stored.unwrap_or(0).max(named) + 1;
        // Zero-padded to a fixed width, so it covers any shorter number an older version
        // wrote and the file never needs truncating; older versions parse it as well.
        counter.write_all_at(format!("{seq:0SEQ_WIDTH$}\n").as_bytes(), 0)?;
        self.names_checked.store(true, Ordering::Relaxed);
        Ok(seq)
    }
}

/// The name of the empty file kept for the next record (`claim_spare`).
const SPARE: &str = "spare";

/// Digits of the `seq` counter: any u64.
const SEQ_WIDTH: usize = 20;

impl HandoffDir {
    /// The highest sequence number any record's name carries, read from the names
    /// alone: a restart takes a number every ~1,000 frames, and opening every record
    /// to read its metadata was a tenth of what handing off a batch cost (perf).
    fn highest_named_seq(&self) -> io::Result<u64> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut highest = 0;
        for entry in entries {
            let path = entry?.path();
            if record_kind(&path).is_some() {
                highest = highest.max(named_seq(&path));
            }
        }
        Ok(highest)
    }
}

/// Room reserved for the JSON metadata, so frames can be written before it is known.
const META_ROOM: usize = 500;

/// Tests only: `LITESTREAM_TEST_DIE_AFTER_RECORD=<kind>[,<kind>…]` (`tail`, `start`,
/// `batch`) ends the process the moment one of its records of such a kind is in place, before the WAL
/// write the record precedes; `unnamed <kind>` just before such a record is renamed into
/// place (its number taken, no record). The windows a SIGKILL lands in once in thousands
/// of kills (`tests/died_between_record_and_wal.rs` makes each happen on purpose).
fn die_here_if_asked(kind: &str) {
    static KIND: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let wanted = KIND.get_or_init(|| std::env::var("LITESTREAM_TEST_DIE_AFTER_RECORD").ok());
    if wanted
        .as_deref()
        .is_some_and(|wanted| wanted.split(',').any(|k| k == kind))
    {
        std::process::abort();
    }
}

/// True when frame `saved.next_frame - 1` of `wal` is where `saved` says it is.
fn continues(header: &WalHeader, saved: &SavedWal, wal: &mut dyn WalSource) -> io::Result<bool> {
    if saved.next_frame == 0 {
        return Ok(saved.checksum == header.checksum);
    }
    let mut raw = [0u8; FRAME_HEADER_SIZE];
    if !wal.read_exact_at(header.frame_offset(saved.next_frame - 1), &mut raw)? {
        return Ok(false);
    }
    let fh = FrameHeader::parse(&raw);
    Ok((fh.salt1, fh.salt2) == (header.salt1, header.salt2) && fh.checksum == saved.checksum)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests;
