//! Issue 3 acceptance against a real S3 server (moto on loopback): a randomized
//! workload replicated by the primary restores, with `litestream restore` 0.5.17,
//! to exactly the primary's database.

mod common;
mod harness;

use common::moto::{Moto, ACCESS_KEY_ID, SECRET_ACCESS_KEY};
use harness::*;

#[test]
fn randomized_workload_replicated_to_s3_restores_equal_with_litestream() {
    let moto = Moto::start();
    moto.create_bucket("primary");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    // The nested URL's `&` become top-level URI parameters; both forms are accepted.
    let url = moto.url("primary", "app");
    let creds = [
        ("LITESTREAM_ACCESS_KEY_ID", ACCESS_KEY_ID),
        ("LITESTREAM_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
    ];
    for seed in 1..=3 {
        let mut cmd = workload_command(&db, &url, seed, 150, &["sync_interval=100ms"]);
        cmd.envs(creds);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // The sqlite3 shell on the same primary: a spilled transaction, a rollback, VACUUM.
    let shell = std::process::Command::new("sqlite3")
        .envs(creds)
        .args(["-batch", "-bail", "-cmd"])
        .arg(format!(".load {}", extension().display()))
        .arg(":memory:")
        .arg(format!(
            ".open file:{}?vfs=litestream&replica={url}&sync_interval=100ms",
            db.display()
        ))
        .arg("PRAGMA cache_size=5")
        .arg("BEGIN; UPDATE items SET name = name || '!'; INSERT INTO items(name) SELECT name FROM items; COMMIT")
        .arg("BEGIN; DELETE FROM items; ROLLBACK")
        .arg("DELETE FROM items WHERE id % 3 = 0")
        .arg("VACUUM")
        .arg("SELECT litestream_sync(30000) > 0")
        .output()
        .unwrap();
    assert!(shell.status.success(), "{}", String::from_utf8_lossy(&shell.stderr));
    assert_eq!(String::from_utf8_lossy(&shell.stdout).trim(), "1");
    let keys = moto.list_keys("primary", "app/");
    assert!(
        keys.iter().any(|k| k.starts_with("app/0000/0000000000000001-")),
        "{keys:?}"
    );
    // Level 0, and level 1 if a 30-second compaction window closed meanwhile: every key is
    // `<path>/<level as %04x>/<name>`.
    assert!(
        keys.iter()
            .all(|k| k.starts_with("app/0000/") || k.starts_with("app/0001/") || k.starts_with("app/0009/")),
        "{keys:?}"
    );
    let out = dir.path().join("restored.db");
    let restore = std::process::Command::new(litestream_bin())
        .env_remove("AWS_CA_BUNDLE")
        .envs(creds)
        .args(["restore", "-o"])
        .arg(&out)
        .arg(&url)
        .output()
        .unwrap();
    assert!(restore.status.success(), "{}", String::from_utf8_lossy(&restore.stderr));
    assert_eq!(integrity(&out), "ok");
    assert_eq!(dump(&out), dump(&db));
}
