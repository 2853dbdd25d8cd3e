//! A read replica without a key follows a plaintext replica whose primary then turns
//! encryption on. It cannot read what follows; its status said `latest_txid` as before
//! and no error, and it logged the same warning at every poll (found by a tester). Now
//! status `error` says why, `store_txid` shows how far the store is, and the warning
//! comes once a minute.

use super::*;
use harness::shell::LiveShell;

fn commit(db: &Path, url: &str, params: &str, rows: u32) {
    let (_, out, stderr) = sqlite_output_env(
        &format!(
            ".open file:{}?vfs=litestream&replica={url}&sync_interval=50ms{params}\n\
             CREATE TABLE IF NOT EXISTS t(v TEXT);\n\
             INSERT INTO t SELECT hex(randomblob(20)) FROM generate_series(1, {rows});\n\
             SELECT litestream_sync(10000) > 0;",
            db.display()
        ),
        &[],
    );
    assert_eq!(out.trim(), "1", "{stderr}");
}

#[test]
fn a_keyless_replica_says_in_status_that_the_replica_turned_encrypted() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}", dir.path().join("replica").display());
    commit(&db, &url, "", 10);
    let mut replica = LiveShell::start_with(
        dir.path(),
        "replica",
        &[("LITESTREAM_LOG_LEVEL", "warn")],
        None,
        &format!(
            ".open file:{}?vfs=litestream&role=replica&replica={url}&poll_interval=100ms",
            dir.path().join("view.db").display()
        ),
    );
    assert_eq!(replica.run("SELECT count(*) FROM t;").trim(), "10");
    commit(&db, &url, &format!("&encryption_key={KEY}"), 5);

    let status = |shell: &mut LiveShell| -> serde_json::Value {
        serde_json::from_str(shell.run("SELECT litestream_status();").trim()).unwrap()
    };
    let mut waited = 0;
    let s = loop {
        let s = status(&mut replica);
        if !s["error"].is_null() {
            break s;
        }
        waited += 1;
        assert!(waited < 200, "no error in status: {s}\n{}", replica.stderr());
        sleep(Duration::from_millis(50));
    };
    let error = s["error"].as_str().unwrap();
    assert!(
        error.contains("is encrypted") && error.contains("no encryption key"),
        "{s}"
    );
    assert!(
        s["store_txid"].as_u64().unwrap() > s["latest_txid"].as_u64().unwrap(),
        "status does not show the replica is behind: {s}"
    );
    // About 15 failing polls: one warning.
    sleep(Duration::from_millis(1500));
    let s = status(&mut replica);
    assert!(s["poll_errors"].as_u64().unwrap() >= 5, "{s}");
    let warned = replica.stderr().matches("replica poll failed").count();
    assert_eq!(warned, 1, "{}", replica.stderr());
}
