//! Tools without the extension (a migration, a script, a library opening the file
//! without `vfs=litestream`) committing beside an open primary and checkpointing their
//! commits away before the replicating process reads them: the WAL is as empty as before,
//! and only the database file and SQLite's commit count show it. Each case must end in a
//! snapshot at the next TXID (docs/reliability.md, "commits a tool without the VFS
//! checkpointed away"); before 2026-12-06 the commits were missing from the replica.

mod harness;

use harness::*;

/// The tool: 20 rows committed without the VFS, then checkpointed away.
const TOOL: &str =
    "INSERT INTO t(v) SELECT randomblob(1000) FROM generate_series(1, 20); PRAGMA wal_checkpoint(TRUNCATE);";

/// A database with table `t` replicated to a `file://` replica and closed: its
/// directory, path and replica URL.
fn replicated_table() -> (tempfile::TempDir, std::path::PathBuf, String) {
    replicated_with("CREATE TABLE t(id INTEGER PRIMARY KEY, v); INSERT INTO t(v) VALUES (1);")
}

/// A live shell holding `db` open through the VFS (the replicating process when first).
fn open_primary(dir: &tempfile::TempDir, db: &std::path::Path, url: &str, label: &str) -> shell::LiveShell {
    shell::LiveShell::start(
        dir.path(),
        label,
        &format!(".open file:{}?vfs=litestream&replica={url}", db.display()),
    )
}

/// A tool without the extension writes beside an open primary and checkpoints its
/// commits away with `wal_checkpoint(TRUNCATE)` before the replicating process reads
/// them: the WAL is empty again when the primary next looks, as after a generation it
/// saw end. Only the database file shows the change. Before, the next commit through the
/// VFS began a new generation as if nothing had happened: the replica lacked the tool's
/// rows and restored without them (found by hand; `litestream restore` even failed on
/// it). The database file's identity, kept since the WAL was last left empty, now
/// shows the change: a snapshot at the next TXID.
#[test]
fn commits_checkpointed_away_by_a_tool_without_the_vfs_are_snapshotted() {
    // The primary's session begins after a clean close (the identity its saved state
    // holds), and after its own TRUNCATE checkpoint (the identity its record of the
    // truncation holds).
    for own_truncate_first in [false, true] {
        let (dir, db, url) = replicated_table();
        let mut app = open_primary(&dir, &db, &url, "app");
        if own_truncate_first {
            app.run("INSERT INTO t(v) VALUES (2); PRAGMA wal_checkpoint(TRUNCATE); SELECT litestream_sync(30000);");
        }
        assert!(!app.run("SELECT count(*) FROM t;").is_empty());
        plain_sqlite(&db, TOOL);
        app.run("INSERT INTO t(v) VALUES (3); SELECT litestream_sync(30000);");
        drop(app);
        let restored = dir.path().join("restored.db");
        litestream_restore(&url, &restored, &[]).unwrap();
        assert_eq!(
            dump(&restored),
            dump(&db),
            "own truncation first: {own_truncate_first}; the tool's 20 rows are in the replica"
        );
    }
}

/// A tool as above, and then the primary closes without writing: the close must not take
/// the changed file for the state it leaves staged (a clean close's identity), or the
/// next open would continue the replica without the tool's rows.
#[test]
fn a_close_after_a_tool_checkpointed_commits_away_does_not_claim_them() {
    let (dir, db, url) = replicated_table();
    let mut app = open_primary(&dir, &db, &url, "app");
    assert!(!app.run("SELECT count(*) FROM t;").is_empty());
    plain_sqlite(&db, TOOL);
    drop(app);
    open_and_sync(&db, &url, "INSERT INTO t(v) VALUES (3);");
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(&db), "the tool's 20 rows are in the replica");
}

/// The tool's generation came and went, and the next one is a follower's (another
/// process through the VFS), whose start record the replicating process follows: the
/// record's database identity shows the change.
#[test]
fn a_followers_generation_after_one_a_tool_checkpointed_away_is_not_taken_as_continuous() {
    let (dir, db, url) = replicated_table();
    let mut leader = open_primary(&dir, &db, &url, "leader");
    assert!(!leader.run("SELECT count(*) FROM t;").is_empty());
    plain_sqlite(&db, TOOL);
    // A follower: the leader holds the replication role.
    open_and_sync(&db, &url, "INSERT INTO t(v) VALUES (3);");
    drop(leader);
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(&db), "the tool's 20 rows are in the replica");
}

/// Where the database file alone cannot tell: a same-size update checkpointed
/// away within the clock tick of the primary's own truncation keeps the file's size and
/// modification time (many kernels stamp files from a clock a few milliseconds coarse;
/// here the time is put back by hand, which is what such a tick gives). SQLite's commit
/// count in the wal-index shows the commit: a snapshot at the next TXID.
#[test]
fn a_same_size_update_checkpointed_away_within_the_truncations_clock_tick_is_snapshotted() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}", dir.path().join("replica").display());
    let mut app = shell::LiveShell::start(
        dir.path(),
        "app",
        &format!(
            ".open file:{}?vfs=litestream&replica={url}&sync_interval=5s",
            db.display()
        ),
    );
    app.run(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
         INSERT INTO t(v) SELECT printf('row-%06d', value) FROM generate_series(1, 1000);
         SELECT litestream_sync(30000);
         PRAGMA wal_checkpoint(TRUNCATE);",
    );
    let before = std::fs::metadata(&db).unwrap();
    plain_sqlite(
        &db,
        "UPDATE t SET v = 'row-PLAIN!' WHERE id = 5; PRAGMA wal_checkpoint(TRUNCATE);",
    );
    let after = std::fs::metadata(&db).unwrap();
    assert_eq!(before.len(), after.len(), "an update in place");
    std::fs::File::open(&db)
        .unwrap()
        .set_modified(before.modified().unwrap())
        .unwrap();
    app.run("INSERT INTO t(v) VALUES ('after'); SELECT litestream_sync(30000);");
    drop(app);
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(&db), "the plain update is in the replica");
}
