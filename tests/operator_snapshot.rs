//! `litestream_snapshot()`: an operator who doubts the replica (the 2026-12-06 advisory:
//! commits a tool without the extension checkpointed away were missing from it) asks for
//! a full snapshot at the next TXID, from the replicating process or from any other
//! process that has the database open through the VFS (a `sqlite3` shell beside a web
//! server's workers), and gets its TXID once it is stored.
//!
//! | test | what | expected |
//! |---|---|---|
//! | `a_snapshot_asked_in_the_replicating_process_is_stored_and_later_commits_are_increments` | the primary's own connection asks | the file at the returned TXID holds every page; restore equal; the next commit is an increment |
//! | `a_snapshot_asked_by_another_process_is_taken_by_the_replicating_one` | a follower shell asks while a live shell replicates | the same, taken by the replicating process |
//! | `a_snapshot_needs_a_replicated_database` | asked on `:memory:` | refused, saying how to open it |

mod harness;

use harness::*;

/// A replicated table in a temporary directory: (dir, db, replica dir, url).
fn replicated_table() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf, String) {
    let (dir, db, url) = replicated_with(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v); INSERT INTO t(v) SELECT value FROM generate_series(1, 200);",
    );
    let replica = dir.path().join("replica");
    (dir, db, replica, url)
}

fn txid(text: &str) -> u64 {
    text.trim()
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a TXID: {text:?}"))
}

#[test]
fn a_snapshot_asked_in_the_replicating_process_is_stored_and_later_commits_are_increments() {
    let (dir, db, replica, url) = replicated_table();
    let mut app = shell::LiveShell::start(
        dir.path(),
        "app",
        &format!(".open file:{}?vfs=litestream&replica={url}", db.display()),
    );
    let before = txid(&app.run("INSERT INTO t(v) VALUES ('before'); SELECT litestream_sync(30000);"));
    let snapshot = txid(&app.run("SELECT litestream_snapshot(60000);"));
    assert!(snapshot > before, "the snapshot comes after TXID {before}: {snapshot}");
    assert!(is_full_snapshot(&replica, snapshot), "TXID {snapshot} holds every page");
    let after = txid(&app.run("INSERT INTO t(v) VALUES ('after'); SELECT litestream_sync(30000);"));
    assert!(!is_full_snapshot(&replica, after), "the next commit is an increment");
    drop(app);
    assert_contiguous(&level0_ranges(&replica));
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(&db));
}

#[test]
fn a_snapshot_asked_by_another_process_is_taken_by_the_replicating_one() {
    let (dir, db, replica, url) = replicated_table();
    let open = format!(".open file:{}?vfs=litestream&replica={url}", db.display());
    let mut app = shell::LiveShell::start_with(dir.path(), "app", &[("LITESTREAM_LOG_LEVEL", "info")], None, &open);
    let before = txid(&app.run("INSERT INTO t(v) VALUES ('before'); SELECT litestream_sync(30000);"));
    // An operator's shell beside it: a follower (the app replicates).
    let mut operator = shell::LiveShell::start(dir.path(), "operator", &open);
    let status = operator.run("SELECT json_extract(litestream_status(), '$.role');");
    assert_eq!(status.trim(), "follower", "the operator's shell does not replicate");
    let snapshot = txid(&operator.run("SELECT litestream_snapshot(60000);"));
    assert!(snapshot > before, "the snapshot comes after TXID {before}: {snapshot}");
    assert!(is_full_snapshot(&replica, snapshot), "TXID {snapshot} holds every page");
    drop(operator);
    let after = txid(&app.run("INSERT INTO t(v) VALUES ('after'); SELECT litestream_sync(30000);"));
    assert!(!is_full_snapshot(&replica, after), "the next commit is an increment");
    let log = app.stderr();
    drop(app);
    assert!(
        log.contains("another process asked for it"),
        "the replicating process says why:\n{log}"
    );
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(&db));
}

/// The README's advice for a replica you doubt, on one emptied under the live primary
/// (compaction off, so nothing else mends it): `litestream_snapshot()` stored the image at
/// level 0 only, where no restore plan, ours or Litestream's, starts, and every restore
/// kept failing "has no snapshot to start from" (found by a tester). It is stored at
/// level 9 too: restores from its TXID on need nothing older.
#[test]
fn a_snapshot_makes_a_replica_emptied_under_the_primary_restorable_again() {
    let (dir, db, replica, url) = replicated_table();
    let mut app = shell::LiveShell::start(
        dir.path(),
        "app",
        &format!(
            ".open file:{}?vfs=litestream&replica={url}&compaction=off",
            db.display()
        ),
    );
    txid(&app.run("INSERT INTO t(v) VALUES ('before'); SELECT litestream_sync(30000);"));
    std::fs::remove_dir_all(&replica).unwrap();
    txid(&app.run("INSERT INTO t(v) VALUES ('after'); SELECT litestream_sync(30000);"));
    let snapshot = txid(&app.run("SELECT litestream_snapshot(60000);"));
    let at_level9 = replica
        .join("ltx/9")
        .join(litestream_vfs::ltx::format_name(1, snapshot));
    assert!(at_level9.exists(), "no level-9 snapshot at TXID {snapshot}");
    txid(&app.run("INSERT INTO t(v) VALUES ('later'); SELECT litestream_sync(30000);"));
    drop(app);
    let ours = dir.path().join("ours.db");
    sql_restore(&url, &ours, &[]);
    assert_eq!(dump(&ours), dump(&db));
    let theirs = dir.path().join("theirs.db");
    litestream_restore(&url, &theirs, &[]).unwrap();
    assert_eq!(dump(&theirs), dump(&db));
}

#[test]
fn a_snapshot_needs_a_replicated_database() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = sqlite_output(&format!(
        ".open {}
SELECT litestream_snapshot();",
        dir.path().join("plain.db").display()
    ));
    assert!(!ok, "refused");
    assert!(stderr.contains("not replicated by the litestream VFS"), "{stderr}");
}

/// `replica=` on an in-memory database is never seen (SQLite opens no file for it), so
/// the open succeeds and nothing replicates: the functions say why, rather than telling
/// the user to add the `replica=` they gave (found by a tester, 2026-12-07).
#[test]
fn an_in_memory_database_with_a_replica_parameter_is_said_to_be_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("replica").display());
    for open in [
        format!(".open file::memory:?vfs=litestream&replica={url}"),
        format!(".open file:mem.db?mode=memory&vfs=litestream&replica={url}"),
    ] {
        let (ok, _, stderr) = sqlite_output(&format!(
            "{open}
SELECT litestream_sync(1000);"
        ));
        assert!(!ok, "{open}: refused");
        assert!(stderr.contains("is in memory or temporary"), "{open}: {stderr}");
    }
    let (_, _, stderr) = sqlite_output("SELECT litestream_sync(1000, 'temp');");
    assert!(
        stderr.contains("temp database of a connection is never replicated"),
        "{stderr}"
    );
    assert!(!dir.path().join("replica").exists());
}
