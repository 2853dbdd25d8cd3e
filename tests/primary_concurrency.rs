//! Several connections and threads in one process, and a second process writing the
//! same database through the VFS: every commit reaches the replica.

mod harness;

use harness::*;
use std::process::Command;

fn run_concurrent(db: &std::path::Path, url: &str, threads: u32, rows: u32, tag: &str) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(repo_root().join("tests/scripts/concurrent.py"))
        .arg(extension())
        .arg(db)
        .arg(url)
        .arg(threads.to_string())
        .arg(rows.to_string())
        .arg(tag);
    cmd
}

fn count(db: &std::path::Path) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg("SELECT count(*), count(DISTINCT writer) FROM log")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn threads_with_their_own_connections_share_one_capture_stream() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}/replica", dir.path().display());
    let out = run_concurrent(&db, &url, 4, 300, "t").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(count(&db), "1200|4");
    assert_contiguous(&level0_ranges(&dir.path().join("replica")));
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(count(&restored), "1200|4");
    assert_eq!(dump(&restored), dump(&db));
}

#[test]
fn a_second_process_writing_the_same_database_is_replicated_too() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}/replica", dir.path().display());
    // Create the database first so both processes find it.
    let out = run_concurrent(&db, &url, 1, 1, "setup").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The first process leads; the second, started once the first holds the staging
    // lock, follows: its sync waits until the leader has uploaded its commits.
    let ready = dir.path().join("leader-ready");
    let go = dir.path().join("leader-go");
    let leader = run_concurrent(&db, &url, 2, 1500, "a")
        .env("READY_FILE", &ready)
        .env("GO_FILE", &go)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ready.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the leader never opened the database"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let follower = run_concurrent(&db, &url, 2, 100, "b").output().unwrap();
    std::fs::write(&go, b"").unwrap();
    let leader = leader.wait_with_output().unwrap();
    let (f, l) = (
        String::from_utf8_lossy(&follower.stdout),
        String::from_utf8_lossy(&leader.stdout),
    );
    assert!(
        follower.status.success(),
        "{f}{}",
        String::from_utf8_lossy(&follower.stderr)
    );
    assert!(
        leader.status.success(),
        "{l}{}",
        String::from_utf8_lossy(&leader.stderr)
    );
    assert!(f.starts_with("follower "), "the second process follows: {f}");
    assert!(l.starts_with("primary "), "the first process leads: {l}");
    // A last writer picks up anything still only in the WAL and syncs it.
    let out = run_concurrent(&db, &url, 1, 1, "last").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(count(&db), "3202|6");
    assert_eq!(integrity(&db), "ok");
    assert_contiguous(&level0_ranges(&dir.path().join("replica")));
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(&db));
}
