//! The replication lock between processes: one holder, old builds' locks counted.

use super::*;

#[test]
fn one_holder_at_a_time_and_others_can_see_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = LeaderLock::open(dir.path(), FileModes::NewDatabase).unwrap();
    let b = LeaderLock::open(dir.path(), FileModes::NewDatabase).unwrap();
    assert!(!b.held_by_another());
    assert!(a.try_acquire().unwrap());
    assert!(b.held_by_another());
    assert!(!b.try_acquire().unwrap());
    // Another descriptor of the file closing does not drop it.
    drop(File::open(dir.path().join("lock")).unwrap());
    assert!(!b.try_acquire().unwrap());
    a.release();
    assert!(b.try_acquire().unwrap());
    assert!(a.held_by_another());
    drop(b); // closing the holder's description releases it
    assert!(a.try_acquire().unwrap());
}

/// A follower's check for an old build holds the `flock` for an instant: a process
/// taking the lock then is not following an old build (it warned that one replicated
/// and told the operator to restart every process).
#[test]
fn a_flock_held_for_an_instant_is_not_an_old_build_leading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lock");
    let (ours, theirs) = (File::create(&path).unwrap(), File::open(&path).unwrap());
    theirs.try_lock().unwrap();
    let probe = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(3));
        theirs.unlock().unwrap();
        theirs
    });
    assert!(take_flock_held_for_good(&ours), "the probe lets go within milliseconds");
    ours.unlock().unwrap();
    let old_build = probe.join().unwrap();
    old_build.try_lock().unwrap();
    assert!(!take_flock_held_for_good(&ours), "an old build holds it for good");
}

#[test]
fn the_holder_is_opening_from_its_acquire_until_it_says_it_opened() {
    let dir = tempfile::tempdir().unwrap();
    let a = LeaderLock::open(dir.path(), FileModes::NewDatabase).unwrap();
    let b = LeaderLock::open(dir.path(), FileModes::NewDatabase).unwrap();
    assert!(!b.opening_by_another());
    assert!(a.try_acquire().unwrap());
    assert!(b.held_by_another() && b.opening_by_another());
    // A try that fails leaves nothing held: a's opening stays a's alone.
    assert!(!b.try_acquire().unwrap());
    a.opened();
    assert!(b.held_by_another());
    assert!(!b.opening_by_another());
    assert!(!b.try_acquire().unwrap());
    assert!(!a.opening_by_another(), "b's failed try let its opening byte go");
    a.release();
    assert!(!b.held_by_another() && !b.opening_by_another());
    assert!(b.try_acquire().unwrap());
    assert!(a.opening_by_another());
}

#[test]
fn a_lock_file_removed_under_its_holder_is_taken_again_and_seen_by_old_and_new_opens() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("app.db-litestream");
    std::fs::create_dir(&dir).unwrap();
    let leader = LeaderLock::open(&dir, FileModes::NewDatabase).unwrap();
    let follower = LeaderLock::open(&dir, FileModes::NewDatabase).unwrap();
    assert!(leader.try_acquire().unwrap());
    leader.opened();
    assert_eq!(leader.keep(), Ok(false), "nothing moved");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        follower.held_by_another(),
        "the follower still sees the removed file held"
    );
    assert!(!follower.try_acquire().unwrap());
    assert_eq!(leader.keep(), Ok(true), "the leader made the file again and took it");
    let newcomer = LeaderLock::open(&dir, FileModes::NewDatabase).unwrap();
    assert!(newcomer.held_by_another());
    assert!(!newcomer.try_acquire().unwrap());
    leader.release();
    assert!(
        follower.try_acquire().unwrap(),
        "the follower takes over on the new file"
    );
    assert!(newcomer.held_by_another());
    assert!(leader.held_by_another());
}

#[test]
fn a_leader_whose_new_lock_file_another_took_says_so_once() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("app.db-litestream");
    std::fs::create_dir(&dir).unwrap();
    let leader = LeaderLock::open(&dir, FileModes::NewDatabase).unwrap();
    assert!(leader.try_acquire().unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir(&dir).unwrap();
    let newcomer = LeaderLock::open(&dir, FileModes::NewDatabase).unwrap();
    assert!(newcomer.try_acquire().unwrap(), "it came before the leader's check");
    let said = leader.keep().unwrap_err();
    assert!(said.contains("another process took the new one"), "{said}");
    assert_eq!(leader.keep(), Ok(false), "said once");
    newcomer.release();
    assert_eq!(leader.keep(), Ok(true), "taken once free");
}

/// A process of a build before 2026-12-04 holds the file with `flock`: this one
/// neither takes the lock nor thinks it free.
#[test]
fn an_old_builds_flock_on_the_lock_file_counts_as_held() {
    let dir = tempfile::tempdir().unwrap();
    let old_build = File::open(dir.path().join("lock")).or_else(|_| {
        std::fs::write(dir.path().join("lock"), b"")?;
        File::open(dir.path().join("lock"))
    });
    let old_build = old_build.unwrap();
    old_build.try_lock().unwrap();
    let ours = LeaderLock::open(dir.path(), FileModes::NewDatabase).unwrap();
    assert!(ours.held_by_another());
    assert!(!ours.try_acquire().unwrap());
    assert!(!ours.opening_by_another(), "the failed try let its bytes go");
    drop(old_build);
    assert!(!ours.held_by_another());
    assert!(ours.try_acquire().unwrap());
    // And an old build's flock now fails: it follows.
    let old_build = File::open(dir.path().join("lock")).unwrap();
    assert!(matches!(old_build.try_lock(), Err(std::fs::TryLockError::WouldBlock)));
    ours.release();
    old_build.try_lock().unwrap();
}

/// A process of a build before 2026-12-06 with `staging=` locks `<staging>/lock`
/// (OFD; `flock` before 2026-12-04): this one, with the same setting, follows it; and
/// while this one leads, such a process finds that file held.
#[test]
fn an_old_builds_lock_in_the_staging_directory_counts_as_held() {
    let root = tempfile::tempdir().unwrap();
    let (lock_dir, staging) = (root.path().join("app.db-litestream"), root.path().join("staging"));
    std::fs::create_dir(&lock_dir).unwrap();
    std::fs::create_dir(&staging).unwrap();
    let ours = LeaderLock::open(&lock_dir, FileModes::NewDatabase).unwrap();
    ours.also_guard(&staging);
    std::fs::write(staging.join("lock"), b"").unwrap();
    for old_way in ["ofd", "flock"] {
        let old_build = File::options().write(true).open(staging.join("lock")).unwrap();
        match old_way {
            "ofd" => assert!(ofd_lock::try_write_lock(&old_build, START, LEN).unwrap()),
            _ => old_build.try_lock().unwrap(),
        }
        assert!(ours.held_by_another(), "{old_way}");
        assert!(!ours.try_acquire().unwrap(), "{old_way}");
        drop(old_build);
        assert!(!ours.held_by_another(), "{old_way}: the failed try let everything go");
    }
    assert!(ours.try_acquire().unwrap());
    let old_build = File::options().write(true).open(staging.join("lock")).unwrap();
    assert!(!ofd_lock::try_write_lock(&old_build, START, LEN).unwrap());
    assert!(matches!(old_build.try_lock(), Err(std::fs::TryLockError::WouldBlock)));
    ours.release();
    assert!(ofd_lock::try_write_lock(&old_build, START, LEN).unwrap());
    // The default staging directory is the lock's own: nothing more is opened.
    let plain = LeaderLock::open(&lock_dir, FileModes::NewDatabase).unwrap();
    plain.also_guard(&lock_dir);
    assert!(plain.files().unwrap().0.legacy_path.is_none());
    // A staging directory nobody made is made only by a process that leads.
    let (unused, made) = (root.path().join("unused"), root.path().join("made"));
    let follower = LeaderLock::open(&lock_dir, FileModes::NewDatabase).unwrap();
    follower.also_guard(&unused);
    let leader = LeaderLock::open(&lock_dir, FileModes::NewDatabase).unwrap();
    leader.also_guard(&made);
    assert!(leader.try_acquire().unwrap());
    assert!(follower.held_by_another() && !follower.try_acquire().unwrap());
    assert!(!unused.exists());
    assert!(made.join("lock").exists());
}
