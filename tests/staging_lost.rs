//! A staging directory that goes away under a live primary (a temp cleaner, an operator's
//! `rm -rf`): the primary makes it again, says so once, and replicates on; what was
//! staged and not uploaded with it is covered by a full snapshot, never a gap. A stage
//! that cannot succeed retries with a backoff: a sync waiting for it does not spin, and
//! the log does not fill with the same warning.

mod harness;

use harness::shell::LiveShell;
use harness::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A primary on `file://<dir>/replica`, a table with a row, synced: (db, replica, url, shell).
fn live_primary(dir: &Path) -> (PathBuf, PathBuf, String, LiveShell) {
    let db = dir.join("app.db");
    let replica = dir.join("replica");
    let url = format!("file://{}", replica.display());
    let mut shell = LiveShell::start(
        dir,
        "app",
        &format!(
            ".open file:{}?vfs=litestream&replica={url}&sync_interval=100ms",
            db.display()
        ),
    );
    let out = shell.run("CREATE TABLE t(n); INSERT INTO t VALUES (0); SELECT litestream_sync(10000);");
    assert!(out.trim().parse::<u64>().is_ok(), "{out}\n{}", shell.stderr());
    (db, replica, url, shell)
}

/// Commits `n` rows one by one, then `litestream_sync(timeout_ms)`: its answer (the TXID or
/// the error) and how long it took.
fn commit_and_sync(shell: &mut LiveShell, from: u32, n: u32, timeout_ms: u64) -> (String, Duration) {
    for i in from..from + n {
        shell.run(&format!("INSERT INTO t VALUES ({i});"));
    }
    let started = Instant::now();
    let out = shell.run(&format!("SELECT litestream_sync({timeout_ms});"));
    (out.trim().to_string(), started.elapsed())
}

fn assert_restores_to(url: &str, dir: &Path, db: &Path) {
    let restored = dir.join("restored.db");
    let _ = fs::remove_file(&restored);
    litestream_restore(url, &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(db), "the replica restores to the database");
}

/// Removes the directory `path` of a live primary, whose worker may make `ltx/` again
/// between the removal of a directory's entries and of the directory itself.
fn remove_under_the_worker(path: &Path) {
    let removed = (0..100).any(|_| fs::remove_dir_all(path).is_ok());
    assert!(removed, "{} could not be removed", path.display());
}

/// User time plus system time of process `pid`, in clock ticks (`/proc/<pid>/stat`).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    // After the command name: state is field 3, utime 14 and stime 15 (1-based).
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn a_staging_directory_removed_under_a_live_primary_is_made_again_and_replication_goes_on() {
    for removed in ["app.db-litestream/ltx", "app.db-litestream"] {
        let dir = tempfile::tempdir().unwrap();
        let (db, _replica, url, mut shell) = live_primary(dir.path());
        remove_under_the_worker(&dir.path().join(removed));
        let (synced, took) = commit_and_sync(&mut shell, 1, 5, 10_000);
        let stderr = shell.stderr();
        assert!(
            synced.parse::<u64>().is_ok(),
            "{removed}: sync failed: {synced}\n{stderr}"
        );
        assert!(took < Duration::from_secs(5), "{removed}: sync took {took:?}");
        assert!(
            dir.path().join("app.db-litestream/ltx").is_dir(),
            "{removed}: not made again"
        );
        // Only the staging directory's line: removing all of app.db-litestream also takes
        // the lock file, which the leadership turn may find first and say so too.
        let made_again = stderr
            .lines()
            .filter(|l| l.contains("the staging directory") && l.contains("was removed"))
            .count();
        assert_eq!(made_again, 1, "{removed}: said once:\n{stderr}");
        assert!(
            stderr.lines().count() < 10,
            "{removed}: log of {} lines:\n{stderr}",
            stderr.lines().count()
        );
        assert_restores_to(&url, dir.path(), &db);
        drop(shell);
    }
}

#[test]
fn staged_commits_lost_with_the_staging_directory_are_covered_by_a_snapshot_not_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let (db, replica, url, mut shell) = live_primary(dir.path());
    // The store refuses level-0 files for a while (a file where its directory should
    // be), so the next commits stay staged; then the staging directory goes with them.
    let level0 = replica.join("ltx/0");
    let aside = replica.join("ltx/0.aside");
    fs::rename(&level0, &aside).unwrap();
    fs::write(&level0, b"in the way").unwrap();
    let (refused, _) = commit_and_sync(&mut shell, 1, 3, 500);
    assert!(refused.parse::<u64>().is_err(), "the store was to refuse: {refused}");
    let staged = fs::read_dir(dir.path().join("app.db-litestream/ltx")).unwrap().count();
    assert!(staged > 0, "nothing staged to lose");
    remove_under_the_worker(&dir.path().join("app.db-litestream/ltx"));
    fs::remove_file(&level0).unwrap();
    fs::rename(&aside, &level0).unwrap();
    let (synced, _) = commit_and_sync(&mut shell, 4, 2, 10_000);
    let stderr = shell.stderr();
    assert!(synced.parse::<u64>().is_ok(), "sync failed: {synced}\n{stderr}");
    assert!(
        stderr.contains("staged and not uploaded"),
        "the loss is said:\n{stderr}"
    );
    // The lost TXIDs are missing from level 0, the one gap; a full image follows it
    // (after the commits captured before the snapshot took its TXID, if any), which
    // restores start from.
    let ranges = level0_ranges(&replica);
    let gaps: Vec<_> = ranges.windows(2).filter(|w| w[1].0 != w[0].1 + 1).collect();
    assert_eq!(gaps.len(), 1, "{ranges:?}");
    let after_gap = gaps[0][1].0;
    let snapshot = ranges
        .iter()
        .filter(|r| r.0 >= after_gap)
        .any(|r| is_full_snapshot(&replica, r.0));
    assert!(snapshot, "no full image after the gap: {ranges:?}");
    assert_restores_to(&url, dir.path(), &db);
    drop(shell);
}

#[test]
fn a_stage_that_keeps_failing_backs_off_and_a_waiting_sync_does_not_spin() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, _replica, _url, mut shell) = live_primary(dir.path());
    // A file where the staging directory's `ltx/` should be: every stage fails, and it
    // cannot be made again.
    let ltx = dir.path().join("app.db-litestream/ltx");
    // The worker makes the directory again as soon as it sees it gone, maybe in between.
    let blocked = (0..100).any(|_| {
        let _ = fs::remove_dir_all(&ltx);
        fs::write(&ltx, b"in the way").is_ok()
    });
    assert!(blocked, "{} could not be replaced by a file", ltx.display());
    let before = cpu_ticks(shell.pid());
    let (refused, took) = commit_and_sync(&mut shell, 1, 3, 3000);
    let used = cpu_ticks(shell.pid()) - before;
    let stderr = shell.stderr();
    assert!(refused.parse::<u64>().is_err(), "{refused}");
    assert!(took < Duration::from_secs(5), "the sync's timeout is kept: {took:?}");
    // Before: ~2.8 CPU-seconds in a 3 s wait (280 ticks at 100 Hz), ~50,000 lines a second.
    assert!(used < 50, "{used} ticks of CPU in a 3 s wait");
    assert!(
        stderr.lines().count() < 20,
        "log of {} lines:\n{stderr}",
        stderr.lines().count()
    );
    fs::remove_file(&ltx).unwrap();
    drop(shell);
}
