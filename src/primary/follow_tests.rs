//! Tests of following the WAL across generations (`follow.rs`).

use super::*;
use crate::file_modes::FileModes;
use crate::primary::capture::WalPosition;
use crate::primary::state::SavedWal;
use crate::wal::testing::WalBuilder;

/// [`follow`] where no database file is known; an I/O error fails the test.
pub(crate) fn follow_from(
    capture: &mut Capture,
    consumed: &mut u64,
    records: &HandoffDir,
    live: &mut dyn WalSource,
) -> Followed {
    follow(capture, consumed, records, live, &|| None).unwrap()
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
    let found = follow(&mut capture, &mut consumed, &records, &mut Vec::new(), &same)
        .unwrap()
        .unwrap();
    assert_eq!(pgnos(&found), vec![1]);
    // A later look finds the WAL still empty. A changed database may hold commits of
    // g2 checkpointed without a record; an unchanged one cannot.
    let outcome = follow(&mut capture, &mut consumed, &records, &mut Vec::new(), &changed).unwrap();
    assert!(outcome.unwrap_err().0.contains("without a hand-off"));
    assert!(follow(&mut capture, &mut consumed, &records, &mut Vec::new(), &same)
        .unwrap()
        .is_ok());
    // The next writer begins g3 on the same empty WAL and database.
    let mut g3 = WalBuilder::new(512, 21, 3, false);
    records.write_start(&g3.bytes[..32], Some(identity(512))).unwrap();
    g3.frame(2, 2, 2);
    let found = follow(&mut capture, &mut consumed, &records, &mut g3.bytes.clone(), &same)
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
    let outcome = follow(&mut capture, &mut 0, &records, &mut g3.bytes.clone(), &changed).unwrap();
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
    assert!(follow(&mut capture, &mut 0, &records, &mut Vec::new(), &same)
        .unwrap()
        .is_ok());
    let changed = || {
        Some(FileIdentity {
            size: 1024,
            ..identity.clone()
        })
    };
    let mut capture = captured_through(&g1, 0, g1.header.checksum);
    assert!(follow(&mut capture, &mut 0, &records, &mut Vec::new(), &changed)
        .unwrap()
        .is_err());
}

/// A generation that came and went between two looks, written and checkpointed away by a
/// process outside the VFS, leaves no record and an empty WAL: only the database file
/// shows it. Capture keeps the file as the last truncation left it, and neither an empty
/// WAL over a changed file nor the next writer's start record on it passes.
#[test]
fn a_generation_checkpointed_away_unrecorded_shows_in_the_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let records = HandoffDir::new(dir.path(), FileModes::NewDatabase);
    let mut g1 = WalBuilder::new(512, 10, 1, false);
    g1.frame(1, 1, 1);
    let identity = |mtime_ns| FileIdentity {
        dev: 1,
        ino: 2,
        size: 512,
        mtime_ns,
    };
    // g1 truncated by a checkpoint that left the file at mtime 3.
    records
        .write_tail(&mut g1.bytes.clone(), None, None, Some(identity(3)))
        .unwrap();
    let same = || Some(identity(3));
    let changed = || Some(identity(4)); // same size: an update in place
    let mut capture = captured_through(&g1, 0, g1.header.checksum);
    let mut consumed = 0;
    assert!(follow(&mut capture, &mut consumed, &records, &mut Vec::new(), &same)
        .unwrap()
        .is_ok());
    assert_eq!(capture.database_left(), Some(&identity(3)));
    // Later looks: still the same file, then a changed one with the WAL still empty.
    assert!(follow(&mut capture, &mut consumed, &records, &mut Vec::new(), &same)
        .unwrap()
        .is_ok());
    let outcome = follow(&mut capture, &mut consumed, &records, &mut Vec::new(), &changed).unwrap();
    assert!(outcome.unwrap_err().0.contains("changed while its WAL stayed empty"));

    // The next writer (through the VFS) begins g2 on the changed file: its start
    // record names the file it found.
    let mut g2 = WalBuilder::new(512, 11, 2, false);
    records.write_start(&g2.bytes[..32], Some(identity(4))).unwrap();
    g2.frame(2, 2, 2);
    let outcome = follow(&mut capture, &mut consumed, &records, &mut g2.bytes.clone(), &changed).unwrap();
    assert!(outcome
        .unwrap_err()
        .0
        .contains("changed since the WAL was last left empty"));

    // On the file as the truncation left it, g2 follows, and capture forgets the file.
    let dir = tempfile::tempdir().unwrap();
    let records = HandoffDir::new(dir.path(), FileModes::NewDatabase);
    records
        .write_tail(&mut g1.bytes.clone(), None, None, Some(identity(3)))
        .unwrap();
    records.write_start(&g2.bytes[..32], Some(identity(3))).unwrap();
    let mut capture = captured_through(&g1, 0, g1.header.checksum);
    let found = follow(&mut capture, &mut 0, &records, &mut g2.bytes.clone(), &changed)
        .unwrap()
        .expect("g2 began on the file g1 left");
    assert_eq!(pgnos(&found), vec![1, 2]);
    assert_eq!(capture.database_left(), None, "capture is in g2");
}

/// Another process began a generation, committed, checkpointed and deleted its WAL
/// between this listing and the look at the database file (processes opening and closing
/// one database in turn, under load): the changed file is explained by records written
/// after the listing, so capture follows them instead of calling it a discontinuity (a
/// needless snapshot before).
#[test]
fn a_generation_that_came_and_went_after_the_listing_is_followed_from_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let records = HandoffDir::new(dir.path(), FileModes::NewDatabase);
    let identity = |mtime_ns| FileIdentity {
        dev: 1,
        ino: 2,
        size: 512,
        mtime_ns,
    };
    let mut g1 = WalBuilder::new(512, 10, 1, false);
    g1.frame(1, 1, 1);
    records
        .write_tail(&mut g1.bytes.clone(), None, None, Some(identity(3)))
        .unwrap();
    let mut g2 = WalBuilder::new(512, 11, 2, false);
    g2.frame(2, 2, 2);
    let other_process_ran = std::cell::Cell::new(false);
    // The first look at the file happens after the listing: the other process runs a
    // whole generation just before it.
    let database = || {
        if !other_process_ran.replace(true) {
            records.write_start(&g2.bytes[..32], Some(identity(3))).unwrap();
            records
                .write_tail(&mut g2.bytes.clone(), None, None, Some(identity(4)))
                .unwrap();
        }
        Some(identity(4))
    };
    let mut capture = captured_through(&g1, 0, g1.header.checksum);
    let mut consumed = 0;
    let found = follow(&mut capture, &mut consumed, &records, &mut Vec::new(), &database)
        .unwrap()
        .expect("the records written after the listing explain the changed file");
    assert_eq!(pgnos(&found), vec![1, 2]);
    assert_eq!(consumed, 3);
    assert_eq!(capture.database_left(), Some(&identity(4)));
}

/// A WAL file held open that another process deleted: it shows `deleted` until looked at
/// again, then the file at the path now.
struct DeletedUnderTheReader {
    deleted: Vec<u8>,
    at_path: Vec<u8>,
    looked_again: bool,
}

impl WalSource for DeletedUnderTheReader {
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<bool> {
        match self.looked_again {
            true => self.at_path.read_exact_at(offset, buf),
            false => self.deleted.read_exact_at(offset, buf),
        }
    }

    fn look_again(&mut self) -> io::Result<bool> {
        Ok(!std::mem::replace(&mut self.looked_again, true))
    }
}

/// A takeover read the WAL's header, and before it listed the records that process and
/// the next one closed (each deleting the WAL) and a third began a generation: the records
/// carry capture to it, and the next round must read the WAL at the path, not the deleted
/// one still open (before: "no hand-off connects", a snapshot).
#[test]
fn generations_that_came_and_went_while_the_wal_was_held_open_are_followed_to_the_one_at_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let records = HandoffDir::new(dir.path(), FileModes::NewDatabase);
    let generation = |salt: u32, pgno: u32| {
        let mut g = WalBuilder::new(512, salt, salt, false);
        g.frame(pgno, pgno, pgno as u8);
        g
    };
    let (g1, g2, g3, g4) = (
        generation(10, 1),
        generation(20, 2),
        generation(30, 3),
        generation(40, 4),
    );
    let mut capture = captured_through(&g1, 1, g1.running_checksum());
    records
        .write_tail(
            &mut g1.bytes.clone(),
            Some(&saved(&capture.position().unwrap())),
            None,
            None,
        )
        .unwrap();
    for g in [&g2, &g3] {
        records.write_start(&g.bytes[..32], None).unwrap();
        records.write_tail(&mut g.bytes.clone(), None, None, None).unwrap();
    }
    records.write_start(&g4.bytes[..32], None).unwrap();
    let mut live = DeletedUnderTheReader {
        deleted: g2.bytes.clone(),
        at_path: g4.bytes.clone(),
        looked_again: false,
    };
    let mut consumed = 0;
    let found =
        follow_from(&mut capture, &mut consumed, &records, &mut live).expect("the records lead to the WAL at the path");
    assert_eq!(pgnos(&found), vec![2, 3, 4]);
    assert_eq!(capture.generation(), Some((40, 40)));
}
