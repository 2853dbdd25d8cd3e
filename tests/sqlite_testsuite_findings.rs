//! Behaviours of the VFS that SQLite's own test suite (`tools/testfixture.sh`, see
//! docs/reliability.md "SQLite's own tests") showed to be wrong, each pinned here with the
//! sqlite3 shell so it cannot come back.

mod harness;

use harness::*;

/// wal6.test: `PRAGMA journal_mode=MEMORY` (or OFF) needs no `-journal` file, so the
/// VFS never saw the database leave WAL mode; the next commits went straight into the
/// database file, unreplicated, and `litestream_sync()` still reported success. Every
/// change away from WAL must now fail with a message, the database stays in WAL mode
/// and the next commit is replicated.
#[test]
fn leaving_wal_mode_is_refused_so_no_commit_escapes_replication() {
    for mode in ["off", "memory", "delete", "truncate", "persist", "OFF"] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let url = format!("file://{}", dir.path().join("replica").display());
        let (_, stdout, stderr) = sqlite_output(&format!(
            ".open file:{}?vfs=litestream&replica={url}&sync_interval=50ms\n\
             PRAGMA journal_mode={mode};\n\
             PRAGMA journal_mode;\n\
             CREATE TABLE t(x);\n\
             INSERT INTO t VALUES (1), (2);\n\
             SELECT litestream_sync(10000) = litestream_txid();",
            db.display()
        ));
        assert!(
            stderr.contains("must stay in WAL mode") && stderr.contains(&format!("journal_mode={mode}")),
            "journal_mode={mode} was not refused: stdout {stdout:?} stderr {stderr:?}"
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            lines.first(),
            Some(&"wal"),
            "journal_mode={mode}: {stdout:?} {stderr:?}"
        );
        assert_eq!(lines.get(1), Some(&"1"), "journal_mode={mode}: {stdout:?} {stderr:?}");
        let restored = dir.path().join("restored.db");
        litestream_restore(&url, &restored, &[]).unwrap();
        assert_eq!(dump(&restored), dump(&db), "journal_mode={mode}");
        assert_eq!(plain_sqlite(&restored, "SELECT count(*) FROM t").trim(), "2");
    }
}

/// `PRAGMA journal_mode=WAL` in any spelling and a plain query keep working.
#[test]
fn asking_for_wal_mode_or_reading_the_mode_is_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}", dir.path().join("replica").display());
    let out = sqlite(&format!(
        ".open file:{}?vfs=litestream&replica={url}\n\
         PRAGMA journal_mode;\nPRAGMA journal_mode=WAL;\nPRAGMA main.journal_mode='wal';",
        db.display()
    ));
    assert_eq!(out.lines().collect::<Vec<_>>(), ["wal", "wal", "wal"]);
}

/// walsetlk.test: while the VFS's snapshot connection was only *waiting* for the WAL write
/// lock (held by another process), an application writer that got SQLITE_BUSY waited for
/// "the snapshot's lock" in rounds of 10 s instead of returning BUSY to SQLite, so its own
/// busy timeout was ignored: it blocked until the other process committed. Only a lock
/// the snapshot actually holds may be waited for.
#[test]
fn a_busy_timeout_holds_while_a_snapshot_waits_for_another_process() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    plain_sqlite(
        &db,
        "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);",
    );
    // Another process (plain SQLite) holds the write lock for 4 s.
    let locked = dir.path().join("locked");
    let mut holder = Command::new("sqlite3")
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = holder.stdin.take().unwrap();
        writeln!(
            stdin,
            "BEGIN IMMEDIATE;\nINSERT INTO t VALUES (2);\n.shell touch {}\n.shell sleep 4\nCOMMIT;",
            locked.display()
        )
        .unwrap();
    }
    let start = Instant::now();
    while !locked.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the holder never took the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Our first open of this database snapshots it: the snapshot waits for the lock too.
    let url = format!("file://{}", dir.path().join("replica").display());
    let (_, stdout, stderr) = sqlite_output(&format!(
        ".open file:{}?vfs=litestream&replica={url}\n\
         SELECT count(*) FROM t;\n\
         .shell sleep 0.5\n\
         PRAGMA busy_timeout=200;\n\
         BEGIN IMMEDIATE;",
        db.display()
    ));
    let _ = holder.wait();
    assert!(
        stderr.contains("database is locked"),
        "the writer did not get SQLITE_BUSY within its busy timeout: stdout {stdout:?} stderr {stderr:?}"
    );
}

/// An unqualified `PRAGMA journal_mode` applies to every attached database, but SQLite
/// asks only the main database's file, so for an attached primary it cannot be refused:
/// with MEMORY or OFF the database leaves WAL mode and its commits go straight into the
/// file, unseen by capture. The VFS sees page 1 rewritten with file format 1 and
/// replicates each such commit with a snapshot (and says so) until the database is back
/// in WAL mode, where capture takes over again.
#[test]
fn an_attached_primary_that_leaves_wal_mode_is_still_replicated() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}", dir.path().join("replica").display());
    // First replicated as a main database, so that the replica's first snapshot is
    // done: leaving WAL mode needs the only open connection to the database.
    sqlite(&format!(
        ".open file:{}?vfs=litestream&replica={url}\n\
         CREATE TABLE t(x);\n\
         INSERT INTO t VALUES (1);\n\
         SELECT litestream_sync(10000);",
        db.display()
    ));
    // Outside WAL mode a snapshot's read holds a shared lock while it copies, as any
    // rollback-journal reader: a writer needs a busy timeout (README, Limits). Without one
    // the INSERT below failed with "database is locked" whenever the snapshot of the
    // journal_mode change overlapped it (3 of 16 runs under load).
    let (ok, stdout, stderr) = sqlite_output(&format!(
        ".open {}\n\
         .timeout 10000\n\
         ATTACH 'file:{}?vfs=litestream&replica={url}&sync_interval=50ms' AS p;\n\
         PRAGMA journal_mode=MEMORY;\n\
         PRAGMA p.journal_mode;\n\
         INSERT INTO p.t VALUES (2), (3);\n\
         SELECT litestream_sync(10000, 'p') >= litestream_txid('p');\n\
         PRAGMA journal_mode=WAL;\n\
         PRAGMA p.journal_mode;\n\
         INSERT INTO p.t VALUES (4);\n\
         SELECT count(*) FROM p.t;",
        dir.path().join("main.db").display(),
        db.display()
    ));
    assert!(ok, "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, ["memory", "memory", "1", "wal", "wal", "4"], "{stderr}");
    assert!(stderr.contains("left WAL mode"), "{stderr}");
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(
        plain_sqlite(&restored, "SELECT group_concat(x) FROM t").trim(),
        "1,2,3,4"
    );
    assert_eq!(dump(&restored), dump(&db));
}

/// `sync=commit` outside WAL mode: each commit returns once the snapshot that carries it
/// is stored. Before, the wait hung on the WAL write lock, which a rollback-journal
/// commit never takes, and commits returned at once (a tester's restores right after
/// them lacked 1 to 3 of 6 rows).
#[test]
fn an_attached_primary_outside_wal_mode_with_sync_commit_returns_once_stored() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}", dir.path().join("replica").display());
    let mut shell = harness::shell::LiveShell::start(
        dir.path(),
        "attached",
        &format!(
            ".open {}\n.timeout 10000\n\
             ATTACH 'file:{}?vfs=litestream&replica={url}&sync=commit&sync_interval=1h' AS p;\n\
             CREATE TABLE p.t(x);\n\
             SELECT litestream_sync(10000, 'p');\n\
             PRAGMA journal_mode=MEMORY;",
            dir.path().join("main.db").display(),
            db.display()
        ),
    );
    for row in 1..=3 {
        let pending = shell.run(&format!(
            "INSERT INTO p.t VALUES ({row}); SELECT litestream_status('p') ->> '$.snapshot_pending' IS NULL;"
        ));
        assert_eq!(
            pending.trim(),
            "1",
            "row {row}: its snapshot is still pending: {}",
            shell.stderr()
        );
        let restored = dir.path().join(format!("restored-{row}.db"));
        litestream_restore(&url, &restored, &[]).unwrap_or_else(|e| panic!("{e}{}", shell.stderr()));
        assert_eq!(
            plain_sqlite(&restored, "SELECT count(*) FROM t").trim(),
            row.to_string(),
            "the commit of row {row} returned before it was stored: {}",
            shell.stderr()
        );
    }
}
