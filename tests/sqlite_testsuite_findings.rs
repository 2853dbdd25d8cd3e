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
