//! A database larger than 1 GiB: SQLite never stores the page at byte offset 1 GiB
//! (the lock page), so snapshots and restores must skip it and still produce the
//! same file, byte for byte.

mod harness;

use harness::*;
use std::process::Command;

fn sha256(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn a_database_over_one_gib_replicates_across_the_lock_page() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("big.db");
    let made = Command::new("sqlite3")
        .arg(&db)
        .arg(
            "PRAGMA page_size=4096; CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB);
             INSERT INTO big(b) SELECT zeroblob(1000000) FROM generate_series(1, 1100);",
        )
        .status()
        .unwrap();
    assert!(made.success());
    assert!(std::fs::metadata(&db).unwrap().len() > 1 << 30);
    let url = format!("file://{}/replica", dir.path().display());
    // Snapshot at open, then rewrite rows on both sides of the lock page.
    let out = sqlite(&format!(
        ".open file:{}?vfs=litestream&replica={url}
SELECT litestream_sync(120000) = 1;
UPDATE big SET b = randomblob(1000000) WHERE id IN (3, 1070, 1099);
DELETE FROM big WHERE id = 1100;
SELECT litestream_sync(120000) > 1;
PRAGMA wal_checkpoint(TRUNCATE);",
        db.display()
    ));
    assert!(out.starts_with("1\n1\n"), "{out}");
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(
        sha256(&restored),
        sha256(&db),
        "restored file differs from the primary's"
    );
    assert_eq!(integrity(&restored), "ok");
}
