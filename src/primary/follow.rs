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

use super::capture::{Capture, CapturedTxn, Discontinuity, WalSource};
use super::handoff::{HandoffDir, Record};
use super::state::FileIdentity;
use crate::wal::{WalHeader, HEADER_SIZE};
use std::io;

/// What one call of [`follow`] found.
pub type Followed = Result<Vec<CapturedTxn>, Discontinuity>;

/// Brings `capture` up to date: the records after `consumed` (which it advances), then
/// the live WAL. `closed` is the database file as the checkpoint before a deleted WAL
/// left it, when capture's generation ended that way (a clean close); `database` gives
/// the file's identity now: they must match when no WAL followed.
pub fn follow(
    capture: &mut Capture,
    consumed: &mut u64,
    records: &HandoffDir,
    live: &mut dyn WalSource,
    mut closed: Option<FileIdentity>,
    database: &dyn Fn() -> Option<FileIdentity>,
) -> io::Result<Followed> {
    let mut found = Vec::new();
    // The current generation was begun by a start record read now: its header may not
    // be in the file yet (its writer records the start first).
    let mut just_started = false;
    for round in 1..=ROUNDS {
        // The live header first: whatever destroyed a generation after this read left its
        // record before doing so, and the listing below sees it.
        let live_header = read_header(live)?;
        let from = *consumed;
        if let Some(broken) = follow_records(capture, consumed, records, &mut closed, &mut just_started, &mut found)? {
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
        match live_header {
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
                return Ok(Err(Discontinuity(format!(
                    "the WAL is at a generation no hand-off connects to the captured one (a process outside the \
                     VFS restarted or truncated it; WAL {:08x}{:08x}, capture {:?}, ended last {last:?}, {ended:?})",
                    h.salt1,
                    h.salt2,
                    capture.position(),
                ))));
            }
            None if just_started => return Ok(Ok(found)),
            // Its writer recorded the start and died before the header: the WAL is as
            // empty as the generation, and the database as it was.
            None if capture.never_reached_the_file(database().as_ref()) => return Ok(Ok(found)),
            None if capture.ended() => {
                if let Some(closed) = &closed {
                    if database().as_ref() != Some(closed) {
                        return Ok(Err(Discontinuity(
                            "the database changed after its WAL was checkpointed and deleted".into(),
                        )));
                    }
                }
                return Ok(Ok(found));
            }
            None => {
                return Ok(Err(Discontinuity(
                    "the WAL was truncated or deleted without a hand-off (a process outside the VFS?)".into(),
                )))
            }
        }
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
        EndedGeneration::NotShown
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
    closed: &mut Option<FileIdentity>,
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
                *closed = tail.closed.clone();
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
                *closed = tail.closed.clone();
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
                        "hand-off {} (a batch) begins at frame {} of {:08x}{:08x}, not where capture stands ({:?})",
                        batch.seq, batch.from.next_frame, batch.header.salt1, batch.header.salt2, here
                    ))));
                }
                found.extend(records.batch_txns(batch)?);
                capture.set_position(&batch.to, batch.header);
                capture.end_generation();
                *just_started = false;
                *closed = None;
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
                capture.begin_generation(*header);
                capture.began_on_empty_wal(database.clone());
                *just_started = true;
                *closed = None;
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
pub(crate) mod tests {
    use super::*;
    use crate::file_modes::FileModes;
    use crate::primary::capture::WalPosition;
    use crate::primary::state::SavedWal;
    use crate::wal::testing::WalBuilder;

    /// [`follow`] where no clean close stands behind capture and no database file is
    /// known; an I/O error fails the test.
    pub(crate) fn follow_from(
        capture: &mut Capture,
        consumed: &mut u64,
        records: &HandoffDir,
        live: &mut dyn WalSource,
    ) -> Followed {
        follow(capture, consumed, records, live, None, &|| None).unwrap()
    }

    /// A capture positioned after the first `frames` frames of `wal`.
    pub(crate) fn captured_through(wal: &WalBuilder, frames: u64, sum: (u32, u32)) -> Capture {
        let mut capture = Capture::new();
        let position = WalPosition {
            salt1: wal.header.salt1,
            salt2: wal.header.salt2,
            page_size: wal.header.page_size,
            next_frame: frames,
            checksum: sum,
            ended: false,
        };
        capture.set_position(&position, wal.header);
        capture
    }

    fn saved(p: &WalPosition) -> SavedWal {
        (*p).into()
    }

    fn pgnos(txns: &[CapturedTxn]) -> Vec<u32> {
        txns.iter().flat_map(|t| t.pages.iter().map(|(p, _)| *p)).collect()
    }

    #[test]
    fn a_restart_by_another_process_is_followed_through_its_tail_into_the_next_generation() {
        let dir = tempfile::tempdir().unwrap();
        let records = HandoffDir::new(dir.path(), FileModes::NewDatabase);
        let mut g1 = WalBuilder::new(512, 10, 1, false);
        g1.frame(1, 1, 1);
        let mut capture = captured_through(&g1, 1, g1.running_checksum());
        let staged = capture.position().unwrap();
        g1.frame(2, 2, 2); // another process commits, then restarts the WAL
        let mut g2 = WalBuilder::new(512, 11, 77, false);
        records
            .write_tail(
                &mut g1.bytes.clone(),
                Some(&saved(&staged)),
                Some(&g2.bytes[..32]),
                None,
            )
            .unwrap();
        g2.frame(3, 3, 3);
        let mut consumed = 0;
        let found = follow_from(&mut capture, &mut consumed, &records, &mut g2.bytes.clone()).unwrap();
        assert_eq!(pgnos(&found), vec![2, 3], "the old tail, then the new generation");
        assert_eq!(consumed, 1);
        assert_eq!(capture.generation(), Some((11, 77)));
        // Nothing more the second time.
        let again = follow_from(&mut capture, &mut consumed, &records, &mut g2.bytes.clone()).unwrap();
        assert!(again.is_empty());
    }

    /// A WAL whose first header read shows `before`; every read after it sees `after`.
    struct RestartedAfterTheHeaderRead {
        before: Vec<u8>,
        after: Vec<u8>,
        header_read: bool,
    }

    impl WalSource for RestartedAfterTheHeaderRead {
        fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<bool> {
            if std::mem::replace(&mut self.header_read, true) {
                self.after.read_exact_at(offset, buf)
            } else {
                self.before.read_exact_at(offset, buf)
            }
        }
    }

    #[test]
    fn a_restart_between_the_header_read_and_the_listing_is_followed_not_snapshotted() {
        // Seen with two threads writing two databases: the WAL restarted (and its tail was
        // recorded) after capture read the live header and before it listed the records,
        // so the records carried capture one generation past the header it had read.
        let dir = tempfile::tempdir().unwrap();
        let records = HandoffDir::new(dir.path(), FileModes::NewDatabase);
        let mut g1 = WalBuilder::new(512, 10, 1, false);
        g1.frame(1, 1, 1);
        let mut capture = captured_through(&g1, 1, g1.running_checksum());
        let staged = capture.position().unwrap();
        g1.frame(2, 2, 2);
        let mut g2 = WalBuilder::new(512, 11, 77, false);
        records
            .write_tail(
                &mut g1.bytes.clone(),
                Some(&saved(&staged)),
                Some(&g2.bytes[..32]),
                None,
            )
            .unwrap();
        g2.frame(3, 3, 3);
        let mut live = RestartedAfterTheHeaderRead {
            before: g1.bytes.clone(),
            after: g2.bytes.clone(),
            header_read: false,
        };
        let mut consumed = 0;
        let found = follow_from(&mut capture, &mut consumed, &records, &mut live)
            .expect("the record connects the generations: no discontinuity");
        assert_eq!(pgnos(&found), vec![2, 3]);
        assert_eq!(capture.generation(), Some((11, 77)));
    }

    #[test]
    fn a_wal_that_still_shows_the_generation_just_ended_is_no_discontinuity_and_if_it_grew_capture_goes_on() {
        // This process's writer ended g1 (its record written, capture moved to g2) and has
        // not rewritten the header yet when the worker follows the WAL.
        let dir = tempfile::tempdir().unwrap();
        let records = HandoffDir::new(dir.path(), FileModes::NewDatabase);
        let mut g1 = WalBuilder::new(512, 10, 1, false);
        g1.frame(1, 1, 1);
        g1.frame(2, 2, 2);
        let g2 = WalBuilder::new(512, 11, 77, false);
        let ended_at_two = || {
            let mut capture = captured_through(&g1, 2, g1.running_checksum());
            capture.end_generation();
            capture.begin_generation(g2.header);
            capture
        };
        let mut capture = ended_at_two();
        let found = follow_from(&mut capture, &mut 0, &records, &mut g1.bytes.clone());
        assert!(found.expect("nothing lost: g1 ended where capture ended it").is_empty());
        // The same header with a commit after the end: the writer that ended it died
        // before rewriting the header, and another appended to it. Capture goes on there.
        let mut grown = g1.clone();
        grown.frame(3, 3, 3);
        let mut capture = ended_at_two();
        let found = follow_from(&mut capture, &mut 0, &records, &mut grown.bytes);
        assert_eq!(pgnos(&found.expect("g1 goes on")), vec![3]);
        assert_eq!(capture.generation(), Some((10, 1)));
    }

    #[test]
    fn a_truncation_then_a_fresh_generation_is_followed_through_the_start_record() {
        let dir = tempfile::tempdir().unwrap();
        let records = HandoffDir::new(dir.path(), FileModes::NewDatabase);
        let mut g1 = WalBuilder::new(512, 10, 1, false);
        g1.frame(1, 1, 1);
        let mut capture = captured_through(&g1, 0, g1.header.checksum);
        records.write_tail(&mut g1.bytes.clone(), None, None, None).unwrap();
        let mut g2 = WalBuilder::new(512, 99, 5, false);
        records.write_start(&g2.bytes[..32], None).unwrap();
        g2.frame(2, 2, 2);
        let mut consumed = 0;
        let found = follow_from(&mut capture, &mut consumed, &records, &mut g2.bytes.clone()).unwrap();
        assert_eq!(pgnos(&found), vec![1, 2]);
        // Truncated and not begun again yet: nothing lost, nothing to do.
        let mut capture = captured_through(&g1, 0, g1.header.checksum);
        let mut consumed = 0;
        let dir2 = tempfile::tempdir().unwrap();
        let records2 = HandoffDir::new(dir2.path(), FileModes::NewDatabase);
        records2.write_tail(&mut g1.bytes.clone(), None, None, None).unwrap();
        let found = follow_from(&mut capture, &mut consumed, &records2, &mut Vec::new()).unwrap();
        assert_eq!(pgnos(&found), vec![1]);
        assert!(capture.ended());
    }

    #[test]
    fn a_start_record_of_the_generation_capture_already_began_is_followed_as_nothing_new() {
        let dir = tempfile::tempdir().unwrap();
        let records = HandoffDir::new(dir.path(), FileModes::NewDatabase);
        let mut g1 = WalBuilder::new(512, 10, 1, false);
        g1.frame(1, 1, 1);
        let mut g2 = WalBuilder::new(512, 11, 5, false);
        records.write_start(&g2.bytes[..32], None).unwrap();
        g2.frame(2, 2, 2);
        // Capture ended g1 and began g2 from its header write, one commit in.
        let mut capture = captured_through(&g2, 1, g2.running_checksum());
        let mut consumed = 0;
        let found = follow_from(&mut capture, &mut consumed, &records, &mut g2.bytes.clone());
        assert!(found.expect("no discontinuity").is_empty());
        assert_eq!((consumed, capture.next_frame()), (1, 1));
        // A start record of another header, with capture in a generation, still is one.
        let other = WalBuilder::new(512, 12, 6, false);
        records.write_start(&other.bytes[..32], None).unwrap();
        let found = follow_from(&mut capture, &mut consumed, &records, &mut g2.bytes.clone());
        assert!(found.is_err());
    }

    #[test]
    fn a_generation_whose_writer_died_between_its_start_record_and_its_header_gives_way_to_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let records = HandoffDir::new(dir.path(), FileModes::NewDatabase);
        let mut g1 = WalBuilder::new(512, 10, 1, false);
        g1.frame(1, 1, 1);
        let mut capture = captured_through(&g1, 0, g1.header.checksum);
        records.write_tail(&mut g1.bytes.clone(), None, None, None).unwrap(); // truncated
        let identity = |size| FileIdentity {
            dev: 1,
            ino: 2,
            size,
            mtime_ns: 3,
        };
        let g2 = WalBuilder::new(512, 20, 2, false);
        records.write_start(&g2.bytes[..32], Some(identity(512))).unwrap(); // its writer dies
        let same = || Some(identity(512));
        let changed = || Some(identity(1024));
        let mut consumed = 0;
        let found = follow(&mut capture, &mut consumed, &records, &mut Vec::new(), None, &same)
            .unwrap()
            .unwrap();
        assert_eq!(pgnos(&found), vec![1]);
        // A later look finds the WAL still empty. A changed database may hold commits of
        // g2 checkpointed without a record; an unchanged one cannot.
        let outcome = follow(&mut capture, &mut consumed, &records, &mut Vec::new(), None, &changed).unwrap();
        assert!(outcome.unwrap_err().0.contains("without a hand-off"));
        assert!(
            follow(&mut capture, &mut consumed, &records, &mut Vec::new(), None, &same)
                .unwrap()
                .is_ok()
        );
        // The next writer begins g3 on the same empty WAL and database.
        let mut g3 = WalBuilder::new(512, 21, 3, false);
        records.write_start(&g3.bytes[..32], Some(identity(512))).unwrap();
        g3.frame(2, 2, 2);
        let found = follow(
            &mut capture,
            &mut consumed,
            &records,
            &mut g3.bytes.clone(),
            None,
            &same,
        )
        .unwrap()
        .expect("g2 never reached the file: g3 follows");
        assert_eq!(pgnos(&found), vec![2]);
        assert_eq!(capture.generation(), Some((21, 3)));
        // Had the database changed between the two starts, g2 may have had commits.
        let dir = tempfile::tempdir().unwrap();
        let records = HandoffDir::new(dir.path(), FileModes::NewDatabase);
        let mut capture = captured_through(&g1, 0, g1.header.checksum);
        records.write_tail(&mut g1.bytes.clone(), None, None, None).unwrap();
        records.write_start(&g2.bytes[..32], Some(identity(512))).unwrap();
        records.write_start(&g3.bytes[..32], Some(identity(1024))).unwrap();
        let outcome = follow(&mut capture, &mut 0, &records, &mut g3.bytes.clone(), None, &changed).unwrap();
        assert!(outcome.unwrap_err().0.contains("had not ended"));
    }

    #[test]
    fn a_generation_its_restarting_writer_died_in_goes_on_where_capture_ended_it() {
        // Process A records the end of g1 (two commits) and names g2, and dies before
        // writing g2's header. SQLite's recovery rebuilds the wal-index from the file, so
        // the next writer appends a third commit to g1.
        let dir = tempfile::tempdir().unwrap();
        let records = HandoffDir::new(dir.path(), FileModes::NewDatabase);
        let mut g1 = WalBuilder::new(512, 10, 1, false);
        g1.frame(1, 1, 1).frame(2, 2, 2);
        let g2 = WalBuilder::new(512, 11, 77, false);
        records
            .write_tail(&mut g1.bytes.clone(), None, Some(&g2.bytes[..32]), None)
            .unwrap();
        let mut capture = captured_through(&g1, 0, g1.header.checksum);
        let mut consumed = 0;
        let found = follow_from(&mut capture, &mut consumed, &records, &mut g1.bytes.clone()).unwrap();
        assert_eq!(pgnos(&found), vec![1, 2]);
        assert_eq!(capture.generation(), Some((11, 77)));
        g1.frame(3, 3, 3);
        let found = follow_from(&mut capture, &mut consumed, &records, &mut g1.bytes.clone())
            .expect("g1 goes on: not a discontinuity");
        assert_eq!(pgnos(&found), vec![3]);
        assert_eq!(capture.generation(), Some((10, 1)));
        assert_eq!(capture.next_frame(), 3);

        // A restart that follows both records: the second tail holds g1 past the first's
        // end (its writer restarted g1 in the end, with g3).
        let g3 = WalBuilder::new(512, 12, 5, false);
        records
            .write_tail(&mut g1.bytes.clone(), None, Some(&g3.bytes[..32]), None)
            .unwrap();
        let mut capture = captured_through(&g1, 0, g1.header.checksum);
        let found =
            follow_from(&mut capture, &mut 0, &records, &mut g3.bytes.clone()).expect("the second tail continues g1");
        assert_eq!(pgnos(&found), vec![1, 2, 3]);
        assert_eq!(capture.generation(), Some((12, 5)));

        // Another chain under g1's salts is not g1 going on.
        let dir = tempfile::tempdir().unwrap();
        let records = HandoffDir::new(dir.path(), FileModes::NewDatabase);
        let mut short = WalBuilder::new(512, 10, 1, false);
        short.frame(1, 1, 1).frame(2, 2, 2);
        records
            .write_tail(&mut short.bytes.clone(), None, Some(&g2.bytes[..32]), None)
            .unwrap();
        let mut other = WalBuilder::new(1024, 10, 1, false);
        other.frame(1, 1, 1).frame(2, 2, 2).frame(3, 3, 3);
        let mut capture = captured_through(&short, 0, short.header.checksum);
        let outcome = follow_from(&mut capture, &mut 0, &records, &mut other.bytes.clone());
        assert!(outcome.is_err(), "{outcome:?}");
    }

    #[test]
    fn generations_nobody_recorded_are_discontinuities() {
        let dir = tempfile::tempdir().unwrap();
        let records = HandoffDir::new(dir.path(), FileModes::NewDatabase);
        let mut g1 = WalBuilder::new(512, 10, 1, false);
        g1.frame(1, 1, 1);
        let mut g2 = WalBuilder::new(512, 11, 2, false);
        g2.frame(2, 2, 2);
        // Restarted without a tail.
        let mut capture = captured_through(&g1, 0, g1.header.checksum);
        assert!(follow_from(&mut capture, &mut 0, &records, &mut g2.bytes.clone()).is_err());
        // Truncated without a tail.
        let mut capture = captured_through(&g1, 0, g1.header.checksum);
        assert!(follow_from(&mut capture, &mut 0, &records, &mut Vec::new()).is_err());
        // Ended, then a generation begun with no start record.
        records.write_tail(&mut g1.bytes.clone(), None, None, None).unwrap();
        let mut capture = captured_through(&g1, 0, g1.header.checksum);
        assert!(follow_from(&mut capture, &mut 0, &records, &mut g2.bytes.clone()).is_err());
    }

    #[test]
    fn a_tail_of_a_generation_already_followed_to_its_end_begins_its_next_header() {
        // Process A restarts the WAL: its tail ends g1 and names g2, and A dies before
        // writing g2's header. Process B's writer finds the WAL still showing g1 and
        // restarts it again, with g3: its tail holds g1's frames a second time.
        let dir = tempfile::tempdir().unwrap();
        let records = HandoffDir::new(dir.path(), FileModes::NewDatabase);
        let mut g1 = WalBuilder::new(512, 10, 1, false);
        g1.frame(1, 1, 1).frame(2, 2, 2);
        let g2 = WalBuilder::new(512, 11, 77, false);
        let mut g3 = WalBuilder::new(512, 11, 78, false);
        records
            .write_tail(&mut g1.bytes.clone(), None, Some(&g2.bytes[..32]), None)
            .unwrap();
        records
            .write_tail(&mut g1.bytes.clone(), None, Some(&g3.bytes[..32]), None)
            .unwrap();
        g3.frame(3, 3, 3);
        let mut capture = captured_through(&g1, 0, g1.header.checksum);
        let mut consumed = 0;
        let found = follow_from(&mut capture, &mut consumed, &records, &mut g3.bytes.clone())
            .expect("no discontinuity: the second tail holds nothing new");
        assert_eq!(pgnos(&found), vec![1, 2, 3], "g1's commits once, then g3's");
        assert_eq!(consumed, 2);
        assert_eq!(capture.generation(), Some((11, 78)));

        // A second tail with a commit the first did not have: g1 went on after the first
        // (`a_generation_its_restarting_writer_died_in_goes_on_where_capture_ended_it`).
        let dir = tempfile::tempdir().unwrap();
        let records = HandoffDir::new(dir.path(), FileModes::NewDatabase);
        let mut g1_short = WalBuilder::new(512, 10, 1, false);
        g1_short.frame(1, 1, 1);
        records
            .write_tail(&mut g1_short.bytes.clone(), None, Some(&g2.bytes[..32]), None)
            .unwrap();
        records
            .write_tail(&mut g1.bytes.clone(), None, Some(&g3.bytes[..32]), None)
            .unwrap();
        let mut capture = captured_through(&g1, 0, g1.header.checksum);
        let found = follow_from(&mut capture, &mut 0, &records, &mut g3.bytes.clone());
        assert_eq!(pgnos(&found.expect("the commit is not skipped")), vec![1, 2, 3]);
    }

    #[test]
    fn a_tail_that_starts_after_the_captured_position_is_a_discontinuity() {
        let dir = tempfile::tempdir().unwrap();
        let records = HandoffDir::new(dir.path(), FileModes::NewDatabase);
        let mut g1 = WalBuilder::new(512, 10, 1, false);
        g1.frame(1, 1, 1);
        let after = g1.running_checksum();
        g1.frame(2, 2, 2);
        let staged = WalPosition {
            salt1: 10,
            salt2: 1,
            page_size: 512,
            next_frame: 1,
            checksum: after,
            ended: false,
        };
        records
            .write_tail(&mut g1.bytes.clone(), Some(&saved(&staged)), None, None)
            .unwrap();
        let mut capture = captured_through(&g1, 0, g1.header.checksum);
        let outcome = follow_from(&mut capture, &mut 0, &records, &mut Vec::new());
        assert!(outcome.unwrap_err().0.contains("starts at frame 1"));
    }

    #[test]
    fn a_deleted_wal_continues_only_if_the_database_is_as_its_checkpoint_left_it() {
        let dir = tempfile::tempdir().unwrap();
        let records = HandoffDir::new(dir.path(), FileModes::NewDatabase);
        let mut g1 = WalBuilder::new(512, 10, 1, false);
        g1.frame(1, 1, 1);
        let identity = FileIdentity {
            dev: 1,
            ino: 2,
            size: 512,
            mtime_ns: 3,
        };
        records
            .write_tail(&mut g1.bytes.clone(), None, None, Some(identity.clone()))
            .unwrap();
        let same = || Some(identity.clone());
        let mut capture = captured_through(&g1, 0, g1.header.checksum);
        assert!(follow(&mut capture, &mut 0, &records, &mut Vec::new(), None, &same)
            .unwrap()
            .is_ok());
        let changed = || {
            Some(FileIdentity {
                size: 1024,
                ..identity.clone()
            })
        };
        let mut capture = captured_through(&g1, 0, g1.header.checksum);
        assert!(follow(&mut capture, &mut 0, &records, &mut Vec::new(), None, &changed)
            .unwrap()
            .is_err());
    }
}
