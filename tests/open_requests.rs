//! A connection per request (PHP-FPM, CGI): what each open asks of the store. The first
//! open of a process checks the replica (a LIST per level, the newest file's header);
//! the next opens of that process within a minute rely on it, unless the saved state
//! went back (a database put back from a disk backup), which is checked again and
//! snapshotted after the replica as before (`src/primary/replica_check.rs`).

mod common;
mod harness;

use common::shell::Shell;
use harness::{assert_contiguous, dump, extension, level0_ranges, litestream_restore};
use std::path::Path;

/// LISTs this process made of `file://` replicas, from `litestream_metrics()`.
fn lists(sh: &mut Shell) -> u64 {
    let metrics = sh.run("SELECT litestream_metrics();");
    metrics
        .lines()
        .find(|l| {
            l.starts_with("litestream_replica_operation_total{")
                && l.contains("replica_type=\"file\"")
                && l.contains("operation=\"LIST\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |n| n.parse().unwrap())
}

fn open(db: &Path, url: &str) -> String {
    format!(".open file:{}?vfs=litestream&replica={url}", db.display())
}

/// One request: open, one commit, wait for it to be stored, close.
fn request(sh: &mut Shell, db: &Path, url: &str, value: u32) {
    sh.run(&open(db, url));
    sh.run(&format!(
        "CREATE TABLE IF NOT EXISTS t(x); INSERT INTO t VALUES ({value});"
    ));
    assert_eq!(
        sh.run("SELECT litestream_sync(10000) > 0;").trim(),
        "1",
        "{}",
        sh.stderr()
    );
    sh.run(".open :memory:");
}

#[test]
fn opens_after_the_first_in_a_process_do_not_list_the_replica() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    // Compaction off: a level-1 window boundary passing during the requests (or one an
    // earlier request saved, run at the next open) runs a compaction turn, whose LISTs
    // would be counted here as the opens'.
    let params = format!("{url}&compaction=off");
    let mut sh = Shell::start(&extension(), &dir.path().join("a.stderr"), &[], ".open :memory:");
    request(&mut sh, &db, &params, 0);
    let first = lists(&mut sh);
    assert!(first >= 10, "the first open lists every level: {first} LISTs");
    for value in 1..=5 {
        request(&mut sh, &db, &params, value);
    }
    let after = lists(&mut sh);
    assert_eq!(after, first, "five more opens made {} LISTs", after - first);

    // Another process checks for itself.
    let mut other = Shell::start(&extension(), &dir.path().join("b.stderr"), &[], ".open :memory:");
    request(&mut other, &db, &params, 6);
    assert!(lists(&mut other) >= 10, "a new process lists at its first open");
    assert_contiguous(&level0_ranges(&replica));
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(&db));
}

#[test]
fn a_state_put_back_within_the_minute_is_checked_and_snapshotted_after_the_replica() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let staging = dir.path().join("app.db-litestream");
    let old = dir.path().join("old");
    let mut sh = Shell::start(&extension(), &dir.path().join("a.stderr"), &[], ".open :memory:");
    request(&mut sh, &db, &url, 1);
    // A disk backup of the database and its state, taken between two requests...
    std::fs::create_dir(&old).unwrap();
    std::fs::copy(&db, old.join("app.db")).unwrap();
    harness::copy_dir(&staging, &old.join("app.db-litestream"));
    request(&mut sh, &db, &url, 2);
    request(&mut sh, &db, &url, 3);
    let ahead = level0_ranges(&replica).last().unwrap().1;
    // ...put back while the process runs, and the next request.
    std::fs::remove_file(&db).unwrap();
    std::fs::remove_dir_all(&staging).unwrap();
    std::fs::rename(old.join("app.db"), &db).unwrap();
    std::fs::rename(old.join("app.db-litestream"), &staging).unwrap();
    let before = lists(&mut sh);
    request(&mut sh, &db, &url, 4);
    assert!(
        lists(&mut sh) >= before + 10,
        "the older state is checked against the replica"
    );
    let ranges = level0_ranges(&replica);
    assert!(
        ranges.last().unwrap().1 > ahead,
        "TXIDs continue after the replica's ({ahead}): {ranges:?}"
    );
    assert_contiguous(&ranges);
    assert!(!sh.stderr().contains("refuses writes"), "{}", sh.stderr());
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(&db), "the replica follows the database put back");
}

/// A request that only reads saves no state: the open resumes the clean close the last
/// request saved, and its close leaves the database as that close did (the state file
/// is replaced by a rename at every save, so its inode tells).
#[test]
fn a_request_that_only_reads_saves_no_state() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}", dir.path().join("replica").display());
    let state = dir.path().join("app.db-litestream/state.json");
    let mut sh = Shell::start(&extension(), &dir.path().join("a.stderr"), &[], ".open :memory:");
    request(&mut sh, &db, &url, 1);
    let saved = std::fs::metadata(&state).unwrap().ino();
    for _ in 0..3 {
        sh.run(&open(&db, &url));
        assert_eq!(sh.run("SELECT count(*) FROM t;").trim(), "1", "{}", sh.stderr());
        sh.run(".open :memory:");
    }
    assert_eq!(
        std::fs::metadata(&state).unwrap().ino(),
        saved,
        "a read-only request saved the state"
    );
    // The next write resumes from it as before.
    request(&mut sh, &db, &url, 2);
    assert_ne!(std::fs::metadata(&state).unwrap().ino(), saved);
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(&db));
}

/// Compaction keeps up with a connection per request. A close stopped the compaction
/// turn in progress at once (so that a store that does not answer cannot hold it for
/// minutes), and with a close at every request no turn ever finished: only the first
/// level-1 window was written, and level 0 grew by a file per commit for good (a tester:
/// 10,476 files in 5 minutes). A close now lets the turn go on for a few seconds.
#[test]
fn compaction_keeps_up_with_a_connection_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    harness::open_and_sync(
        &db,
        &url,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, who TEXT, seq INT, pad BLOB);",
    );
    let out = std::process::Command::new(harness::python())
        .arg(harness::repo_root().join("tests/scripts/connection_per_request.py"))
        .args(["--ext", &extension().display().to_string()])
        .args(["--db", &db.display().to_string()])
        .args(["--replica", &url, "--params", "sync_interval=100ms&levels=3s"])
        .args(["--tag", "w", "--seconds", "12", "--pause", "0"])
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !stderr.contains("error:"), "{stderr}");
    let level1 = std::fs::read_dir(replica.join("ltx/1")).map_or(0, |d| d.count());
    println!(
        "12 s of requests, level-1 window 3 s: {level1} level-1 files ({})",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    // Four windows (one may end as the run does); stopped at every close, one file.
    assert!(level1 >= 3, "{level1} level-1 files in four windows:\n{stderr}");
}
