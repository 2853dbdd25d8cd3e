//! Following the WAL across generations: the replicating process brings capture up to
//! date with every commit in the WAL, including generations other processes restarted,
//! truncated or deleted, from the hand-off records they left (`handoff.rs`).
//!
//! The rule: capture moves from one generation to the next only when a record proves
//! the next one directly follows — a tail of the current generation read to its end
//! (whose `next` header names the following generation when it was a restart), then a
//! start record for a generation begun on an empty WAL. Anything else (a generation
//! nobody recorded, a record that does not continue the captured chain) is a
//! [`Discontinuity`]: the caller takes a snapshot.

use super::capture::{describe_position, Capture, CapturedTxn, Discontinuity, WalSource};
use super::handoff::{HandoffDir, Record};
use super::state::FileIdentity;
use crate::wal::{WalHeader, HEADER_SIZE};
use std::io;

/// What one call of [`follow`] found.
pub type Followed = Result<Vec<CapturedTxn>, Discontinuity>;

/// Brings `capture` up to date: the records after `consumed` (which it advances), then
/// the live WAL. `database` gives the database file's identity now: while capture stands
/// ended and no WAL followed, it must be the file the WAL was left empty with
/// ([`Capture::database_left`]).
pub fn follow(
    capture: &mut Capture,
    consumed: &mut u64,
    records: &HandoffDir,
    live: &mut dyn WalSource,
    database: &dyn Fn() -> Option<FileIdentity>,
) -> io::Result<Followed> {
    let mut found = Vec::new();
    // The current generation was begun by a start record read now: its header may not
    // be in the file yet (its writer records the start first).
    let mut just_started = false;
    for round in 1..=ROUNDS {
        // Another round reads the WAL at its path now: the one read before may have been
        // deleted since (`WalSource::look_again`).
        if round > 1 {
            live.look_again()?;
        }
        // The live header first: whatever destroyed a generation after this read left its
        // record before doing so, and the listing below sees it.
        let live_header = read_header(live)?;
        let from = *consumed;
        if let Some(broken) = follow_records(capture, consumed, records, &mut just_started, &mut found)? {
            return Ok(Err(broken));
        }
        // A generation ended between the header read and the listing: its record moved
        // capture past the header read first. Read the header again and go on from there;
        // without records to move it, capture and the WAL are apart for good.
        let moved = *consumed != from;
        let in_current = live_header.is_some_and(|h| capture.generation() == Some((h.salt1, h.salt2)));
        let ended = match &live_header {
            Some(h) if !in_current => ended_generation_in_the_wal(capture, h, live)?,
            _ => EndedGeneration::NotShown,
        };
        let apart = match live_header {
            Some(_) if in_current || ended == EndedGeneration::Resumed => {
                found.extend(capture.scan_live(live));
                return Ok(Ok(found));
            }
            Some(_) if ended == EndedGeneration::NothingAfter => return Ok(Ok(found)),
            Some(_) | None if moved && round < ROUNDS && !settled(capture, live_header.as_ref(), just_started) => {
                continue
            }
            Some(h) => {
                // The generations named, for whoever reads the log after the fact.
                let last = capture
                    .last_ended()
                    .map(|((s1, s2), at)| format!("{s1:08x}{s2:08x} at frame {at}"));
                Discontinuity(format!(
                    "the WAL is at a generation no hand-off record connects to the captured one (a process \
                     outside the VFS restarted or truncated it, or a record could not be written: a full \
                     disk, an unwritable staging directory; WAL {:08x}{:08x}, capture at {}, ended last {}, \
                     {ended:?})",
                    h.salt1,
                    h.salt2,
                    describe_position(capture.position()),
                    last.as_deref().unwrap_or("none"),
                ))
            }
            None if just_started => return Ok(Ok(found)),
            // Its writer recorded the start and died before the header: the WAL is as
            // empty as the generation, and the database as it was.
            None if capture.never_reached_the_file(database().as_ref()) => return Ok(Ok(found)),
            None if capture.ended() => match capture.database_left() {
                Some(left) if database().as_ref() != Some(left) => Discontinuity(
                    "the database file changed while its WAL stayed empty after a checkpoint truncated or \
                     deleted it (a process outside the VFS committed and checkpointed between two looks)"
                        .into(),
                ),
                _ => return Ok(Ok(found)),
            },
            None => Discontinuity(
                "the WAL was truncated or deleted without a hand-off record (a process outside the VFS, or a \
                     record that could not be written: a full disk, an unwritable staging directory)"
                    .into(),
            ),
        };
        // What was compared can be newer than the listing: between the listing and the
        // look at the database file, another process may have begun a generation, committed,
        // checkpointed and deleted its WAL (records for all of it written after the
        // listing). Seen under load with processes opening and closing in turn: a needless
        // snapshot. Records after the listing are another round; without any, capture
        // and the WAL are apart for good.
        if round < ROUNDS && !unconsumed(records, *consumed)?.is_empty() {
            continue;
        }
        return Ok(Err(apart));
    }
    unreachable!("the last round returns")
}

/// Rounds of header read + listing before a WAL that stays apart from capture is a
/// discontinuity: each round after the first needs a record that moved capture, so
/// only a WAL restarting faster than a listing can be read exhausts them.
const ROUNDS: usize = 8;

/// What the WAL shows of the generation capture ended last, when its header is that one.
#[derive(Debug, PartialEq, Eq)]
enum EndedGeneration {
    /// Another generation (or none can be read).
    NotShown,
    /// No commit after where capture ended it: its restart or truncation has not reached
    /// the file yet. (Seen with two threads writing two databases: this process's writer
    /// records the end of a generation, capture follows, and the worker reads the WAL
    /// before the writer rewrites its header.)
    NothingAfter,
    /// Commits after where capture ended it, and capture took it up again there
    /// (`Capture::resume_ended`): the process that ended it died before rewriting the
    /// header, and after SQLite's recovery another writer appended to it.
    Resumed,
    /// Commits after where capture ended it, which capture cannot take up: why
    /// (`Capture::why_not_resumed`), for the snapshot's log.
    NotResumed(String),
}

/// Reads the frame headers of the live WAL, only when its header is that of the
/// generation capture ended last, to tell which [`EndedGeneration`] it is.
fn ended_generation_in_the_wal(
    capture: &mut Capture,
    live_header: &WalHeader,
    live: &mut dyn WalSource,
) -> io::Result<EndedGeneration> {
    let Some((generation, end)) = capture.last_ended() else {
        return Ok(EndedGeneration::NotShown);
    };
    if generation != (live_header.salt1, live_header.salt2) {
        return Ok(EndedGeneration::NotShown);
    }
    let mut probe = Capture::new();
    probe.skip_to_end(live)?;
    let (Some(header), Some(at)) = (probe.header(), probe.position()) else {
        return Ok(EndedGeneration::NotShown);
    };
    Ok(if (at.salt1, at.salt2) != generation {
        EndedGeneration::NotShown
    } else if at.next_frame <= end {
        EndedGeneration::NothingAfter
    } else if capture.resume_ended(&header, at.next_frame) {
        EndedGeneration::Resumed
    } else {
        EndedGeneration::NotResumed(capture.why_not_resumed(&header, at.next_frame))
    })
}

/// Whether capture and the header read agree without another round: an empty WAL after
/// a generation that ended or just began.
fn settled(capture: &Capture, live_header: Option<&WalHeader>, just_started: bool) -> bool {
    live_header.is_none() && (just_started || capture.ended())
}

/// Follows the records after `consumed`; `Some` when one does not continue the chain.
fn follow_records(
    capture: &mut Capture,
    consumed: &mut u64,
    records: &HandoffDir,
    just_started: &mut bool,
    found: &mut Vec<CapturedTxn>,
) -> io::Result<Option<Discontinuity>> {
    let from = *consumed;
    for record in unconsumed(records, from)? {
        tracing::debug!(
            seq = record.seq(),
            capture = ?capture.position(),
            "following {}",
            match &record {
                Record::Tail(t) => format!(
                    "tail of {:08x}{:08x} frames {}..{}",
                    t.header.salt1,
                    t.header.salt2,
                    t.start_frame,
                    t.end_frame()
                ),
                Record::Start { header, .. } => format!("start of {:08x}{:08x}", header.salt1, header.salt2),
                Record::Batch(b) => format!(
                    "batch of {:08x}{:08x} frames {}..{}, {} commits",
                    b.header.salt1, b.header.salt2, b.from.next_frame, b.to.next_frame, b.commits
                ),
            }
        );
        match &record {
            Record::Tail(tail) if capture.ended_with_nothing_since(&tail.header, tail.end_frame()) => {
                // A writer restarted a WAL that still showed a generation capture had
                // already followed to its end: the process that ended it died between
                // its record and the new header. Nothing in this tail is new, and the
                // generation that record began never reached the file.
                capture.end_generation();
                *just_started = false;
                capture.left_database(tail.closed.clone());
                if let Some(next) = tail.next {
                    capture.begin_generation(next);
                }
            }
            Record::Tail(tail) => {
                if capture.generation() != Some((tail.header.salt1, tail.header.salt2)) {
                    // The same, with commits after where capture ended it: a writer went
                    // on in that generation (`Capture::resume_ended`) before this tail.
                    capture.resume_ended(&tail.header, tail.end_frame());
                }
                if capture.generation() != Some((tail.header.salt1, tail.header.salt2)) {
                    return Ok(Some(Discontinuity(format!(
                        "hand-off {} is of another WAL generation than the one captured",
                        tail.seq
                    ))));
                }
                if tail.start_frame > capture.next_frame() {
                    return Ok(Some(Discontinuity(format!(
                        "hand-off {} starts at frame {}, after the captured frame {}",
                        tail.seq,
                        tail.start_frame,
                        capture.next_frame()
                    ))));
                }
                let mut source = records.open_tail(tail)?;
                found.extend(capture.scan_live(&mut source));
                if capture.next_frame() < tail.end_frame() {
                    return Ok(Some(Discontinuity(format!(
                        "hand-off {}'s frames do not continue the captured chain",
                        tail.seq
                    ))));
                }
                capture.end_generation();
                *just_started = false;
                capture.left_database(tail.closed.clone());
                if let Some(next) = tail.next {
                    capture.begin_generation(next);
                }
            }
            Record::Batch(batch) => {
                // Merged pages carry no chain to verify frame by frame: the batch must
                // begin exactly where capture stands (same generation, frame and running
                // checksum, so the same history), and it ends where it says.
                let here = capture.position().filter(|p| !p.ended);
                if here != Some(batch.from) {
                    return Ok(Some(Discontinuity(format!(
                        "hand-off {} (a batch) begins at frame {} of {:08x}{:08x}, not where capture stands ({})",
                        batch.seq,
                        batch.from.next_frame,
                        batch.header.salt1,
                        batch.header.salt2,
                        describe_position(here)
                    ))));
                }
                found.extend(records.batch_txns(batch)?);
                capture.set_position(&batch.to, batch.header);
                capture.end_generation();
                *just_started = false;
                if let Some(next) = batch.next {
                    capture.begin_generation(next);
                }
            }
            // The generation it begins is the one capture is in (the same header):
            // capture began it from this process's own header write after the one
            // before ended (`Capture::on_write`), and the record was written by a
            // connection of this process before it replicated: a transaction that wrote
            // the header as a follower's and rolled back, a takeover, and the next
            // transaction writing the same header again (SQLite keeps the salts of an
            // empty WAL). Found under load when a takeover could also land inside a
            // transaction (`Database::install` waits for its end now). Nothing to do.
            Record::Start { header, .. } if !capture.ended() && capture.header() == Some(*header) => {}
            Record::Start { seq, header, database } => {
                // A generation that began on an empty WAL and never reached it (its
                // writer died between the record and the header) gives way to the next.
                if !capture.ended() && !capture.never_reached_the_file(database.as_ref()) {
                    return Ok(Some(Discontinuity(format!(
                        "hand-off {seq} begins a WAL generation while the captured one had not ended"
                    ))));
                }
                // The database file its writer found must be the one the WAL was left
                // empty with: else a generation nobody recorded came and went in between.
                if let (Some(left), Some(found)) = (capture.database_left(), database.as_ref()) {
                    if left != found {
                        return Ok(Some(Discontinuity(format!(
                            "hand-off {seq} begins a WAL generation on a database file that changed since the WAL \
                             was last left empty (a process outside the VFS committed and checkpointed in between)"
                        ))));
                    }
                }
                capture.begin_generation(*header);
                capture.began_on_empty_wal(database.clone());
                *just_started = true;
            }
        }
        *consumed = record.seq();
    }
    Ok(None)
}

/// The records after `from`, in order. A directory listing made while records are
/// added may show a record and miss the one before it (entries come in hash order, not
/// creation order), so a listing with a hole is made again: the missing record was in
/// place before the later one was even begun, so a listing begun after the first ended
/// sees it. A hole that remains is a number a process took and died before using; the
/// WAL it would have described was never touched.
fn unconsumed(records: &HandoffDir, from: u64) -> io::Result<Vec<Record>> {
    let complete = |list: &[Record]| list.iter().enumerate().all(|(i, r)| r.seq() == from + 1 + i as u64);
    let after = || -> io::Result<Vec<Record>> {
        Ok(records
            .list_after(from)?
            .into_iter()
            .filter(|r| r.seq() > from)
            .collect())
    };
    let mut list = after()?;
    if !complete(&list) {
        list = after()?;
    }
    Ok(list)
}

pub(crate) fn read_header(wal: &mut dyn WalSource) -> io::Result<Option<WalHeader>> {
    let mut raw = [0u8; HEADER_SIZE];
    if !wal.read_exact_at(0, &mut raw)? {
        return Ok(None);
    }
    Ok(WalHeader::parse(&raw).ok())
}

#[cfg(test)]
#[path = "follow_tests.rs"]
pub(crate) mod tests;
