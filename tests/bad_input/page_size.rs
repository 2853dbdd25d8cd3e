//! Page sizes: LTX files of two sizes inside one replica, and a database rebuilt with
//! another page size while the VFS was not looking.
//!
//! | case | input | expected |
//! |---|---|---|
//! | `page_sizes_differ_inside_the_replica` | LTX files of 4096- and 1024-byte pages | replica open refused, says page size |
//! | `page_size_changed_outside_the_vfs` | VACUUM to 1024-byte pages without the VFS | snapshot at the next TXID, also stored as a level-9 snapshot; replica and restore (ours and Litestream's) equal |

use super::*;

#[test]
fn page_sizes_differ_inside_the_replica() {
    let dir = tempfile::tempdir().unwrap();
    put_l0(dir.path(), 1, 1, &ltx(4096, 1, 1, 2, &[1, 2]));
    put_l0(dir.path(), 2, 2, &ltx(1024, 2, 2, 8, &[3]));
    let url = file_url(&dir.path().join("replica"));
    let (_, stderr) = replica_shell(dir.path(), &url, "SELECT 1;");
    assert!(stderr.contains("unable to open database"), "{stderr}");
    assert!(
        stderr.contains("page size 1024 differs from 4096"),
        "the error must name both page sizes:\n{stderr}"
    );
}

/// The database rebuilt with another page size outside the VFS: the primary reseeds at the
/// next TXID and also stores that image as a level-9 snapshot, so restore plans (ours and
/// Litestream's) start from it instead of meeting 1024-byte pages after 4096-byte ones.
/// (Before: the replica became unreadable while `litestream_sync()` reported success.)
#[test]
fn page_size_changed_outside_the_vfs() {
    page_size_changed_after(&[]);
}

/// Sessions that never touch the database leave SQLite's empty `-wal` behind (only a
/// connection that opened the WAL deletes it): each must still record the database
/// file's identity at close, or a change made outside the VFS afterwards goes unseen.
#[test]
fn page_size_changed_outside_the_vfs_after_sessions_that_never_read() {
    page_size_changed_after(&["SELECT 1;", "SELECT litestream_txid() > 0;"]);
}

fn page_size_changed_after(sessions: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    let url = replicated(dir.path(), &db);
    for sql in sessions {
        let (stdout, stderr) = shell(
            &format!(".open file:{}?vfs=litestream&replica={url}\n{sql}", db.display()),
            &[],
        );
        assert_eq!(stdout.trim(), "1", "{stderr}");
    }
    let out = Command::new("sqlite3")
        .arg(&db)
        .arg("PRAGMA journal_mode=delete; PRAGMA page_size=1024; VACUUM; PRAGMA page_size;")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().last(), Some("1024"));
    let (stdout, stderr) = shell(
        &format!(
            ".open file:{}?vfs=litestream&replica={url}&sync_interval=50ms\n\
             INSERT INTO t(v) VALUES ('after the page size change');\n\
             SELECT litestream_sync(10000) = litestream_txid();",
            db.display()
        ),
        &[("LITESTREAM_LOG_LEVEL", "info")],
    );
    assert_eq!(stdout.trim(), "1", "{stderr}");
    assert!(stderr.contains("changed while it was not open"), "{stderr}");
    assert_rows(&db, ROWS + 1);
    let (view, log) = replica_shell(dir.path(), &url, "PRAGMA page_size;\n.dump");
    assert_eq!(view, format!("1024\n{}", dump(&db)), "{log}");
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(&db));
}
