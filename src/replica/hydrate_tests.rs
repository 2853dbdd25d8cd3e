//! Tests of `hydrate.rs`.

use super::*;

fn key(max_txid: u64, pgno: u32) -> PageKey {
    PageKey {
        file: FileKey {
            level: 0,
            min_txid: max_txid,
            max_txid,
            size: 100,
        },
        pgno,
    }
}

fn read(h: &Hydration, k: &PageKey) -> Option<Vec<u8>> {
    let mut out = vec![0u8; 16];
    h.read(k, &mut out).unwrap().then_some(out)
}

#[test]
fn an_older_version_never_replaces_a_newer_one_and_a_replaced_one_is_handed_on() {
    let dir = tempfile::tempdir().unwrap();
    let h = Hydration::create(&dir.path().join("h"), "test").unwrap();
    let mut displaced = Vec::new();
    h.write(&key(5, 2), &[5; 16], &mut |k, b| displaced.push((k, b)))
        .unwrap();
    assert!(displaced.is_empty(), "an empty slot displaces nothing");
    // A reader pinned at TXID 3 fetched page 2 from an older file: the slot keeps 5.
    h.write(&key(3, 2), &[3; 16], &mut |k, b| displaced.push((k, b)))
        .unwrap();
    assert_eq!(read(&h, &key(5, 2)), Some(vec![5; 16]));
    assert_eq!(read(&h, &key(3, 2)), None);
    // Hydration moves on to TXID 9: version 5 goes to whoever still wants it.
    h.write(&key(9, 2), &[9; 16], &mut |k, b| displaced.push((k, b)))
        .unwrap();
    assert_eq!(read(&h, &key(9, 2)), Some(vec![9; 16]));
    assert_eq!(displaced, vec![(key(5, 2), vec![5; 16])]);
}

#[test]
fn a_second_user_of_one_file_waits_for_it_and_never_writes_into_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h");
    let first = Hydration::create(&path, "test").unwrap();
    first.write(&key(5, 1), &[5; 16], &mut |_, _| {}).unwrap();
    // A second replica (here in-process: flock locks are per open file, so another
    // process is refused the same way).
    let second = Hydration::create(&path, "test").unwrap();
    assert!(!second.take(), "the file is held");
    second.write(&key(9, 1), &[9; 16], &mut |_, _| {}).unwrap();
    assert_eq!(read(&second, &key(9, 1)), None, "the second user keeps no slots");
    assert_eq!(
        read(&first, &key(5, 1)),
        Some(vec![5; 16]),
        "nor overwrites the first's"
    );
    drop(first);
    assert!(second.take(), "free once the first lets go");
    second.write(&key(9, 1), &[9; 16], &mut |_, _| {}).unwrap();
    assert_eq!(read(&second, &key(9, 1)), Some(vec![9; 16]));
}

fn mode(path: &Path) -> u32 {
    crate::file_modes::permission_bits(path).unwrap()
}

fn set_mode(path: &Path, bits: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(bits)).unwrap();
}

#[test]
fn the_hydration_file_is_readable_by_its_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h");
    let h = Hydration::create(&path, "test").unwrap();
    assert!(h.take());
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn a_file_hydration_did_not_make_is_left_as_it_is_and_named_as_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h");
    std::fs::write(&path, b"someone's database").unwrap();
    set_mode(&path, 0o644);
    let h = Hydration::create(&path, "test").unwrap();
    assert!(!h.take(), "refused");
    h.write(&key(5, 1), &[5; 16], &mut |_, _| {}).unwrap();
    assert_eq!(read(&h, &key(5, 1)), None, "nothing stored");
    assert_eq!(std::fs::read(&path).unwrap(), b"someone's database");
    assert_eq!(mode(&path), 0o644, "no chmod of a file we did not make");
    let e = h.last_error().unwrap();
    assert!(e.contains("not a hydration file") && e.contains("remove it"), "{e}");
    assert!(!marker_path(&path).exists(), "not claimed");
    // Removed by the user: made afresh at the next round.
    std::fs::remove_file(&path).unwrap();
    assert!(h.take());
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn a_file_hydration_made_is_taken_again_by_a_later_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h");
    let first = Hydration::create(&path, "test").unwrap();
    first.write(&key(5, 1), &[5; 16], &mut |_, _| {}).unwrap();
    drop(first);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 16);
    let again = Hydration::create(&path, "test").unwrap();
    assert!(again.take(), "{:?}", again.last_error());
    assert_eq!(again.last_error(), None);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "emptied once taken");
}

#[test]
fn an_empty_file_is_taken_with_its_permissions_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h");
    std::fs::write(&path, b"").unwrap();
    set_mode(&path, 0o640);
    let h = Hydration::create(&path, "test").unwrap();
    assert!(h.take(), "{:?}", h.last_error());
    assert_eq!(mode(&path), 0o640);
}

#[test]
fn a_file_put_where_a_hydration_file_was_is_not_ours() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h");
    let h = Hydration::create(&path, "test").unwrap();
    h.write(&key(5, 1), &[5; 16], &mut |_, _| {}).unwrap();
    drop(h);
    // The marker stays behind; ext4 may give the new file the same inode number.
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"a database made here later").unwrap();
    let h = Hydration::create(&path, "test").unwrap();
    assert!(!h.take());
    assert_eq!(std::fs::read(&path).unwrap(), b"a database made here later");
}

#[test]
fn a_hydration_file_in_use_as_a_database_is_refused_though_marked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h");
    let h = Hydration::create(&path, "test").unwrap();
    h.write(&key(5, 1), &[5; 16], &mut |_, _| {}).unwrap();
    drop(h);
    // Promoted: opened as a database (its WAL beside it).
    std::fs::write(dir.path().join("h-wal"), b"").unwrap();
    let h = Hydration::create(&path, "test").unwrap();
    assert!(!h.take());
    assert_eq!(std::fs::read(&path).unwrap(), vec![5; 16]);
    let e = h.last_error().unwrap();
    assert!(e.contains("h-wal") && e.contains("refusing"), "{e}");
}

#[test]
fn a_marker_path_holding_something_else_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h");
    std::fs::write(marker_path(&path), b"notes").unwrap();
    let h = Hydration::create(&path, "test").unwrap();
    assert!(!h.take());
    assert_eq!(std::fs::read(marker_path(&path)).unwrap(), b"notes");
}

#[test]
fn pages_of_another_page_size_never_share_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let h = Hydration::create(&dir.path().join("h"), "test").unwrap();
    let mut displaced = Vec::new();
    for pgno in 1..=4 {
        h.write(&key(5, pgno), &[pgno as u8; 16], &mut |k, b| displaced.push((k, b)))
            .unwrap();
    }
    // A page of the next page size, fetched by a reader of the new state before
    // hydration moved to it: written at 32-byte slots it would land on pages 3 and 4.
    h.write(&key(9, 2), &[9; 32], &mut |k, b| displaced.push((k, b)))
        .unwrap();
    assert_eq!(read(&h, &key(5, 3)), Some(vec![3; 16]), "not overwritten");
    assert_eq!(read(&h, &key(5, 4)), Some(vec![4; 16]), "not overwritten");
    let mut big = vec![0u8; 32];
    assert!(!h.read(&key(9, 2), &mut big).unwrap());
    assert!(
        !h.read(&key(5, 1), &mut big).unwrap(),
        "a 16-byte slot is no 32-byte page"
    );
    // Hydration follows the new page size: the file starts again empty, and the old
    // layout serves no one, its readers going to the store.
    assert!(h.relayout(32).unwrap());
    assert_eq!(read(&h, &key(5, 3)), None);
    h.write(&key(9, 2), &[9; 32], &mut |k, b| displaced.push((k, b)))
        .unwrap();
    h.write(&key(5, 1), &[1; 16], &mut |k, b| displaced.push((k, b)))
        .unwrap();
    assert!(h.read(&key(9, 2), &mut big).unwrap());
    assert_eq!(big, vec![9; 32]);
    assert_eq!(read(&h, &key(5, 1)), None, "an old-size page is not stored");
    assert!(
        displaced.is_empty(),
        "nothing was read back at the wrong size: {displaced:?}"
    );
    assert_eq!(h.progress().page_size_changes, 1);
}

#[test]
fn slots_past_a_shrunk_file_lose_their_labels() {
    let dir = tempfile::tempdir().unwrap();
    let h = Hydration::create(&dir.path().join("h"), "test").unwrap();
    for pgno in 1..=4 {
        h.write(&key(7, pgno), &[pgno as u8; 16], &mut |_, _| {}).unwrap();
    }
    h.fit(2, 32);
    // The file grows again (a page further out); pages 3 and 4 now read as zeros on
    // disk and must not be served as version 7.
    h.write(&key(8, 6), &[6; 16], &mut |_, _| {}).unwrap();
    assert_eq!(read(&h, &key(7, 2)), Some(vec![2; 16]));
    assert_eq!(read(&h, &key(7, 3)), None);
    assert_eq!(read(&h, &key(7, 4)), None);
}
