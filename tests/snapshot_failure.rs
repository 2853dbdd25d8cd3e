//! A snapshot that cannot be staged (a full disk, an unwritable staging directory) is
//! taken again later, and nothing committed meanwhile is numbered twice or lost. The
//! snapshot takes its TXID at the lock; commits captured while it copies the database
//! get the TXIDs after it. When its file cannot be written, those commits must not be
//! staged under numbers the next snapshot's numbering repeats.

mod harness;

use harness::shell::LiveShell;
use harness::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const INTERVAL_MS: u64 = 100;

fn status(shell: &mut LiveShell) -> Value {
    let text = shell.run("SELECT litestream_status();");
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("status {text:?}: {e}"))
}

#[test]
fn a_snapshot_that_cannot_be_staged_is_retried_and_commits_made_meanwhile_keep_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    // A few MiB, so the snapshot's copy takes long enough for commits to land during it.
    plain_sqlite(
        &db,
        "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); \
         WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 6000) \
         INSERT INTO t(v) SELECT hex(randomblob(600)) FROM s;",
    );
    // A directory where the snapshot's copy goes makes every attempt fail after it took
    // its TXID, as a full disk would.
    let blocker = db.with_file_name("app.db-litestream/snapshot.db.tmp");
    std::fs::create_dir_all(blocker.join("in-the-way")).unwrap();
    let mut shell = LiveShell::start(
        dir.path(),
        "primary",
        &format!(
            ".open file:{}?vfs=litestream&replica={url}&sync_interval={INTERVAL_MS}ms",
            db.display()
        ),
    );
    let mut row = 0;
    let mut commit_for = |shell: &mut LiveShell, how_long: Duration| {
        let until = Instant::now() + how_long;
        while Instant::now() < until {
            let batch: String = (0..20)
                .map(|_| {
                    row += 1;
                    format!("INSERT INTO t(v) VALUES ('row {row}');")
                })
                .collect();
            shell.run(&batch);
        }
    };
    // Several failed attempts, each with commits landing during its copy.
    commit_for(&mut shell, Duration::from_millis(12 * INTERVAL_MS));
    let failing = status(&mut shell);
    // Before the first snapshot is staged nothing may be: commits captured during a
    // failed attempt hold TXIDs after its own, and staging them would put them in the
    // replica ahead of the snapshot and under numbers the next attempt hands out again.
    assert_eq!(failing["staged_txid"], 0, "nothing can be staged yet: {failing}");
    assert_eq!(failing["uploaded_txid"], 0, "nothing can be uploaded yet: {failing}");
    let pending = failing["snapshot_pending"].as_str().unwrap_or_default().to_string();
    assert!(
        pending.contains("snapshot attempt failed"),
        "the failure is reported: {failing}"
    );
    std::fs::remove_dir_all(&blocker).unwrap();
    commit_for(&mut shell, Duration::from_millis(6 * INTERVAL_MS));
    let synced = shell.run("SELECT litestream_sync(20000);");
    assert!(
        synced.trim().parse::<u64>().is_ok(),
        "sync: {synced:?}\n{}",
        shell.stderr()
    );
    let after = status(&mut shell);
    assert_eq!(after["refusing_writes"], false, "replication stopped: {after}");
    drop(shell);
    assert_contiguous(&level0_ranges(&replica));
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(&db));
}
