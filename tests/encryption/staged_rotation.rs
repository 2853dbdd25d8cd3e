//! Commits staged while the store was unreachable, when the key changes before they go
//! up: the documented rotation (`rekey` of the replica to A and B, then open with B)
//! does not reach the staging directory. The open with B uploaded them still encrypted
//! to A alone, acknowledged newer commits, and then neither key restored the newest
//! state (a keys tester, 3 of 3). Now the open drops them and a snapshot to B continues
//! the replica: B restores every row.

use super::*;
use harness::shell::LiveShell;

#[test]
fn files_staged_under_the_old_key_are_replaced_by_a_snapshot_to_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let real = dir.path().join("real");
    let link = dir.path().join("replica");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let url = format!("file://{}", link.display());
    let public = |k: &str| PrivateKey::from_hex(k).unwrap().public_key().to_hex();
    let (a, b) = (KEY, OTHER_KEY);
    let open = |key: &str| {
        format!(
            ".open file:{}?vfs=litestream&replica={url}&sync_interval=100ms&sync_timeout=1s&compaction=off&encryption_key={key}",
            db.display()
        )
    };

    let mut app = LiveShell::start(dir.path(), "a", &open(a));
    app.run("CREATE TABLE t(v INTEGER); INSERT INTO t VALUES (1);");
    assert_eq!(app.run("SELECT litestream_sync(10000) > 0;").trim(), "1");
    // The store goes away: these commits are staged, encrypted to A, and not uploaded.
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).unwrap();
    app.run("INSERT INTO t VALUES (2); INSERT INTO t VALUES (3);");
    sleep(Duration::from_millis(500));
    drop(app);
    let staged = std::fs::read_dir(dir.path().join("app.db-litestream/ltx"))
        .unwrap()
        .count();
    assert!(staged > 0, "the outage left staged files");

    // The store is back; the documented rotation: rekey to A and B, then open with B.
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let (ok, _, stderr) = cli(
        &[
            "rekey",
            "-key",
            a,
            "-encrypt-to",
            &format!("{},{}", public(a), public(b)),
            &url,
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    let mut app = LiveShell::start(dir.path(), "b", &open(b));
    app.run("INSERT INTO t VALUES (4);");
    assert_eq!(app.run("SELECT litestream_sync(10000) > 0;").trim(), "1");
    drop(app);
    let log = std::fs::read_to_string(dir.path().join("b.stderr")).unwrap();
    assert!(log.contains("the key changed while they waited"), "{log}");

    // B alone restores the newest state, every row; a `rekey` to B alone then leaves
    // nothing B cannot open.
    let restored = dir.path().join("restored.db");
    let (ok, _, stderr) = cli(&["restore", "-key", b, "-o", restored.to_str().unwrap(), &url], &[]);
    assert!(ok, "{stderr}");
    assert_eq!(
        plain_sqlite(&restored, "SELECT group_concat(v) FROM t;").trim(),
        "1,2,3,4"
    );
}
