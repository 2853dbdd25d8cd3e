//! Tests of the hand-off records (`handoff.rs`).

use super::*;
use crate::wal::testing::WalBuilder;

fn staged_at(wal: &WalBuilder, next_frame: u64, checksum: (u32, u32)) -> SavedWal {
    SavedWal {
        salt1: wal.header.salt1,
        salt2: wal.header.salt2,
        page_size: wal.header.page_size,
        next_frame,
        checksum,
        ended: false,
    }
}

#[test]
fn a_tail_holds_the_committed_frames_after_the_staged_position() {
    let dir = tempfile::tempdir().unwrap();
    let handoff = HandoffDir::new(dir.path(), FileModes::NewDatabase);
    let mut wal = WalBuilder::new(512, 7, 9, false);
    wal.frame(1, 2, 0xa).frame(2, 2, 0xb); // commit at frame 1
    let after_first = wal.running_checksum();
    wal.frame(3, 3, 0xc).frame(2, 0, 0xd); // commit at frame 2, then an open frame
    let mut bytes = wal.bytes.clone();
    let staged = staged_at(&wal, 2, after_first);
    let seq = handoff
        .write_tail(&mut bytes, Some(&staged), None, None)
        .unwrap()
        .unwrap();
    let records = handoff.list().unwrap();
    let [Record::Tail(tail)] = records.as_slice() else {
        panic!("one tail: {records:?}")
    };
    assert_eq!((tail.seq, tail.start_frame, tail.frames), (seq, 2, 1));
    // Read back at WAL offsets: frame 2 is there, frames 0-1 and 3 are not.
    let mut source = handoff.open_tail(tail).unwrap();
    let fs = wal.header.frame_size() as usize;
    let mut frame = vec![0u8; fs];
    assert!(source.read_exact_at(wal.header.frame_offset(2), &mut frame).unwrap());
    let at = HEADER_SIZE + 2 * fs;
    assert_eq!(frame, wal.bytes[at..at + fs]);
    assert!(!source.read_exact_at(wal.header.frame_offset(1), &mut frame).unwrap());
    assert!(!source.read_exact_at(wal.header.frame_offset(3), &mut frame).unwrap());
    let mut head = [0u8; HEADER_SIZE];
    assert!(source.read_exact_at(0, &mut head).unwrap());
    assert_eq!(head[..], wal.bytes[..HEADER_SIZE]);
}

#[test]
fn a_staged_position_that_does_not_match_the_wal_hands_off_the_whole_generation() {
    let dir = tempfile::tempdir().unwrap();
    let handoff = HandoffDir::new(dir.path(), FileModes::NewDatabase);
    let mut wal = WalBuilder::new(512, 7, 9, false);
    wal.frame(1, 1, 0xa).frame(1, 1, 0xb);
    let mut bytes = wal.bytes.clone();
    let stale = staged_at(&wal, 1, (1, 2));
    handoff.write_tail(&mut bytes, Some(&stale), None, None).unwrap();
    let other = SavedWal {
        salt1: 8,
        ..staged_at(&wal, 1, (1, 2))
    };
    handoff.write_tail(&mut bytes, Some(&other), None, None).unwrap();
    for record in handoff.list().unwrap() {
        let Record::Tail(tail) = record else { panic!() };
        assert_eq!((tail.start_frame, tail.frames), (0, 2));
    }
}

#[test]
fn records_are_numbered_in_order_and_numbers_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let handoff = HandoffDir::new(dir.path(), FileModes::NewDatabase);
    let mut wal = WalBuilder::new(512, 7, 9, false);
    wal.frame(1, 1, 0xa);
    let next = WalBuilder::new(512, 8, 3, false);
    let a = handoff
        .write_tail(&mut wal.bytes.clone(), None, Some(&next.bytes[..HEADER_SIZE]), None)
        .unwrap()
        .unwrap();
    let b = handoff.write_start(&next.bytes[..HEADER_SIZE], None).unwrap();
    assert_eq!((a, b), (1, 2));
    let records = handoff.list().unwrap();
    assert!(matches!(&records[0], Record::Tail(t) if t.next == Some(next.header)));
    assert!(matches!(&records[1], Record::Start { header, .. } if *header == next.header));
    handoff.remove_through(2);
    assert!(handoff.list().unwrap().is_empty());
    assert_eq!(handoff.write_start(&next.bytes[..HEADER_SIZE], None).unwrap(), 3);
}

#[test]
fn the_counter_continues_from_what_an_older_version_wrote_and_from_the_names() {
    let dir = tempfile::tempdir().unwrap();
    let handoff = HandoffDir::new(dir.path(), FileModes::NewDatabase);
    let header = WalBuilder::new(512, 8, 3, false).bytes[..HEADER_SIZE].to_vec();
    fs::create_dir_all(dir.path().join("handoff")).unwrap();
    // Older versions wrote the bare number through a renamed temporary file.
    fs::write(dir.path().join("handoff/seq"), "7").unwrap();
    assert_eq!(handoff.write_start(&header, None).unwrap(), 8);
    assert_eq!(handoff.write_start(&header, None).unwrap(), 9);
    let text = fs::read_to_string(dir.path().join("handoff/seq")).unwrap();
    assert_eq!(
        text.trim().parse::<u64>().unwrap(),
        9,
        "an older version reads it back: {text:?}"
    );
    // A counter that went back (lost in a power cut, so seen by a process that
    // starts after it) is overtaken by the names; so is one that cannot be read.
    fs::write(dir.path().join("handoff/seq"), "2").unwrap();
    let after_restart = HandoffDir::new(dir.path(), FileModes::NewDatabase);
    assert_eq!(after_restart.write_start(&header, None).unwrap(), 10);
    fs::write(dir.path().join("handoff/seq"), "garbage").unwrap();
    assert_eq!(handoff.write_start(&header, None).unwrap(), 11);
    // A longer number is overwritten whole by a shorter one's padding.
    fs::write(dir.path().join("handoff/seq"), "123456789").unwrap();
    handoff.remove_through(11);
    assert_eq!(handoff.write_start(&header, None).unwrap(), 123456790);
    assert!(!dir.path().join("handoff/seq.tmp").exists());
}

#[test]
fn records_are_no_more_open_than_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let handoff = HandoffDir::new(dir.path(), FileModes::bits(0o600));
    let mut wal = WalBuilder::new(512, 7, 9, false);
    wal.frame(1, 1, 0xa);
    handoff
        .write_tail(&mut wal.bytes.clone(), None, None, None)
        .unwrap()
        .unwrap();
    let mode = |p: PathBuf| crate::file_modes::permission_bits(&p).unwrap();
    assert_eq!(mode(dir.path().join("handoff")), 0o700);
    assert_eq!(mode(dir.path().join("handoff/seq")), 0o600);
    for record in handoff.list().unwrap() {
        assert_eq!(mode(handoff.path_of(&record)), 0o600, "a record holds pages");
    }
}

#[test]
fn the_next_record_takes_the_file_made_ahead_of_time() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let handoff = HandoffDir::new(dir.path(), FileModes::bits(0o600));
    let header = WalBuilder::new(512, 8, 3, false).bytes[..HEADER_SIZE].to_vec();
    handoff.write_start(&header, None).unwrap();
    let spare = dir.path().join("handoff").join(SPARE);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !spare.exists() {
        assert!(std::time::Instant::now() < deadline, "no spare was made after a record");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // Held open, so its inode number cannot go to a newly created file.
    let held = File::open(&spare).unwrap();
    let made = held.metadata().unwrap();
    assert_eq!(
        (made.len(), made.mode() & 0o777),
        (0, 0o600),
        "empty, no more open than the database"
    );
    assert_eq!(handoff.list().unwrap().len(), 1, "the spare is not a record");
    let seq = handoff.write_start(&header, None).unwrap();
    let record = dir.path().join(format!("handoff/{seq:016x}.start"));
    assert_eq!(
        fs::metadata(record).unwrap().ino(),
        made.ino(),
        "the record was written into the spare, not a newly created file"
    );
    assert_eq!(handoff.list().unwrap().len(), 2);
}

#[test]
fn no_valid_wal_means_nothing_to_hand_off() {
    let dir = tempfile::tempdir().unwrap();
    let handoff = HandoffDir::new(dir.path(), FileModes::NewDatabase);
    assert_eq!(handoff.write_tail(&mut Vec::new(), None, None, None).unwrap(), None);
    assert_eq!(handoff.write_tail(&mut vec![7u8; 64], None, None, None).unwrap(), None);
    assert!(handoff.list().unwrap().is_empty());
}
