//! Issue 6 acceptance on a real NATS server (Debian's `nats-server -js` on loopback):
//! 1. a workload replicated to NATS restores equal to the primary, with our restore and with
//!    `litestream restore` 0.5.17;
//! 2. a read replica on the NATS replica shows what the primary committed, and follows it;
//! 3. the server stopped and restarted under a working primary: commits go on, replication
//!    catches up, nothing is lost.

mod common;
mod harness;

use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::nats::Nats;
use harness::shell::LiveShell;
use harness::*;
use litestream_vfs::restore::restore_latest;
use litestream_vfs::runtime::block_on;
use litestream_vfs::storage::{open_store_with_env, ReplicaStore, StoreOptions};

fn store(url: &str) -> Arc<dyn ReplicaStore> {
    open_store_with_env(url, &StoreOptions::default(), &|_| None).unwrap()
}

fn level0(url: &str) -> Vec<(u64, u64)> {
    let files = block_on(store(url).list(0)).unwrap();
    files.iter().map(|f| (f.min_txid, f.max_txid)).collect()
}

/// Restores `url` with our restore into `dir/name` and checks it equals `db`.
fn assert_our_restore_equals(url: &str, db: &std::path::Path, out: &std::path::Path) {
    restore_latest(&store(url), out).unwrap();
    assert_eq!(integrity(out), "ok");
    assert_eq!(dump(out), dump(db), "our restore of {url} differs from the primary");
}

#[test]
fn a_workload_replicated_to_nats_restores_equal_with_our_restore_and_litestream() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    // No path inside the bucket: Litestream 0.5.17 reads NATS replicas only at the bucket root.
    let url = nats.url("primary");
    for seed in 1..=3 {
        python_workload(&db, &url, seed, 150, &["sync_interval=100ms"]);
    }
    // The sqlite3 shell on the same primary: a spilled transaction, a rollback, VACUUM.
    let out = sqlite(&format!(
        "\
.open file:{}?vfs=litestream&replica={url}&sync_interval=100ms
PRAGMA cache_size=5;
BEGIN; UPDATE items SET name = name || '!'; INSERT INTO items(name) SELECT name FROM items; COMMIT;
BEGIN; DELETE FROM items; ROLLBACK;
DELETE FROM items WHERE id % 3 = 0;
VACUUM;
SELECT litestream_sync(30000) > 0;",
        db.display()
    ));
    assert_eq!(out.trim(), "1");
    assert_contiguous(&level0(&url));

    assert_our_restore_equals(&url, &db, &dir.path().join("ours.db"));
    let theirs = dir.path().join("litestream.db");
    litestream_restore(&url, &theirs, &[]).unwrap();
    assert_eq!(integrity(&theirs), "ok");
    assert_eq!(
        dump(&theirs),
        dump(&db),
        "litestream's restore differs from the primary"
    );
}

#[test]
fn a_nats_replica_shows_what_the_primary_committed_and_follows_it() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = nats.url("replica/app");
    let t1 = python_workload(&db, &url, 1, 120, &["sync_interval=100ms"]);
    let view = dir.path().join("view.db");
    let mut r = LiveShell::start(
        dir.path(),
        "replica",
        &format!(
            ".open file:{}?vfs=litestream&role=replica&replica={url}&poll_interval=100ms",
            view.display()
        ),
    );
    assert_eq!(
        r.run("SELECT litestream_txid();").trim(),
        t1.to_string(),
        "{}",
        r.stderr()
    );
    assert_eq!(
        r.run(".dump"),
        dump(&db),
        "the replica differs from the primary at TXID {t1}"
    );
    let t2 = python_workload(&db, &url, 2, 120, &["sync_interval=100ms"]);
    assert_eq!(
        r.run(&format!("SELECT litestream_wait({t2}, 30000);")).trim(),
        t2.to_string(),
        "{}",
        r.stderr()
    );
    assert_eq!(
        r.run(".dump"),
        dump(&db),
        "the replica differs from the primary at TXID {t2}"
    );
    assert_eq!(r.run("PRAGMA integrity_check;").trim(), "ok");
    let status: serde_json::Value = serde_json::from_str(&r.run("SELECT litestream_status();")).unwrap();
    eprintln!("replica status: {status}");
    assert!(!view.exists(), "the replica created a local database file");
}

#[test]
fn commits_continue_while_nats_is_down_and_replication_catches_up() {
    let mut nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = nats.url("outage/db");
    let mut p = LiveShell::start(
        dir.path(),
        "primary",
        &format!(
            ".open file:{}?vfs=litestream&replica={url}&sync_interval=50ms",
            db.display()
        ),
    );
    p.run("CREATE TABLE t(x); INSERT INTO t VALUES (1);");
    assert_eq!(
        p.run("SELECT litestream_sync(10000) > 0;").trim(),
        "1",
        "{}",
        p.stderr()
    );

    nats.stop();
    let started = Instant::now();
    p.run("INSERT INTO t VALUES (2);");
    p.run("INSERT INTO t SELECT value FROM generate_series(3, 1000);");
    // Big enough to be many chunks: an upload that fails half way must not leave a torn object.
    p.run("INSERT INTO t SELECT randomblob(4000) FROM generate_series(1, 500);");
    assert_eq!(
        p.run("SELECT count(*) FROM t;").trim(),
        "1500",
        "commits work with NATS down"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "commits waited for the store: {:?}",
        started.elapsed()
    );
    assert_eq!(p.run("SELECT litestream_sync(1500);"), "", "sync cannot succeed");
    assert!(p.stderr().contains("litestream_sync: timed out"), "{}", p.stderr());
    let status: serde_json::Value = serde_json::from_str(&p.run("SELECT litestream_status();")).unwrap();
    assert!(
        status["error"].is_string(),
        "the store's failure is reported: {status}\n{}",
        p.stderr()
    );
    assert!(
        status["uploaded_txid"].as_u64().unwrap() < status["txid"].as_u64().unwrap(),
        "{status}"
    );

    nats.restart();
    p.run("INSERT INTO t SELECT value FROM generate_series(1001, 2000);");
    assert_eq!(
        p.run("SELECT litestream_sync(60000) = litestream_txid();").trim(),
        "1",
        "{}\nserver log:\n{}",
        p.stderr(),
        nats.log_tail()
    );
    drop(p);

    assert_contiguous(&level0(&url));
    assert_our_restore_equals(&url, &db, &dir.path().join("restored.db"));
}

#[test]
fn a_workload_survives_the_nats_server_restarting_under_it() {
    let mut nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = nats.url("restarts/db");
    let mut child = workload_command(&db, &url, 7, 2000, &["sync_interval=100ms"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stored = 0;
    for round in 1..=2 {
        // Stop the server once replication has stored something new (not after a fixed
        // time: a faster build once finished the whole workload before the first stop).
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let newest = level0(&url).last().map_or(0, |r| r.1);
            if newest > stored {
                stored = newest;
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "nothing new stored in round {round}"
            );
            sleep(Duration::from_millis(50));
        }
        // While the server is down the workload waits in litestream_sync, so it is still
        // running at the second round unless it is fast enough to have finished between.
        assert!(
            round > 1 || child.try_wait().unwrap().is_none(),
            "the workload finished before the server was stopped: nothing was tested"
        );
        nats.stop();
        sleep(Duration::from_secs(2));
        nats.restart();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "workload failed: {}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        nats.log_tail()
    );
    let final_txid: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let l0 = level0(&url);
    assert_contiguous(&l0);
    assert_eq!(
        l0.last().unwrap().1,
        final_txid,
        "the last synced TXID is in the replica"
    );
    assert_our_restore_equals(&url, &db, &dir.path().join("restored.db"));
}

/// Compaction, level-9 snapshots and retention run on NATS as on any store (the ladder
/// shrunk to fractions of a second), and point-in-time restores of what they left work.
#[test]
fn compaction_and_retention_on_nats_keep_restores_exact() {
    use litestream_vfs::restore::{restore, RestoreOptions, Target};
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = nats.url("compacted/app");
    let ladder = "sync_interval=50ms&l1_interval=100ms&l2_interval=300ms&l3_interval=900ms\
                  &snapshot_interval=1s&retention=3s&l0_retention=200ms";
    // One process writing for 6 s, so every window of the ladder closes while it runs.
    let out = std::process::Command::new(python())
        .arg(repo_root().join("tests/scripts/history.py"))
        .arg("record")
        .arg(extension())
        .arg(format!("file:{}?vfs=litestream&replica={url}&{ladder}", db.display()))
        .arg("6")
        .arg("5")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = store(&url);
    let count = |level: u8| block_on(s.list(level)).unwrap().len();
    let (l1, l2, l3, l9) = (count(1), count(2), count(3), count(9));
    // Level 3 may be empty again: retention drops what the kept snapshot covers.
    assert!(l1 > 0 && l2 > 0 && l9 > 0, "levels 1/2/3/9: {l1}/{l2}/{l3}/{l9}");
    let oldest_l0 = block_on(s.list(0)).unwrap().first().map_or(1, |f| f.min_txid);
    assert!(oldest_l0 > 1, "retention removed old level-0 files");
    assert_our_restore_equals(&url, &db, &dir.path().join("latest.db"));
    // Every level-1 boundary still on the store restores exactly.
    let boundaries: Vec<u64> = block_on(s.list(1)).unwrap().iter().map(|f| f.max_txid).collect();
    let target = boundaries[boundaries.len() / 2];
    let out = dir.path().join("pit.db");
    let restored = restore(Arc::clone(&s), &out, Target::Txid(target), &RestoreOptions::default()).unwrap();
    assert_eq!(restored.position.txid, target);
    assert_eq!(integrity(&out), "ok");
}

/// The bucket deleted under a running primary (or lost by a server restarted without its
/// storage): uploads got "no responders" until the database was reopened, and a bucket
/// made again held only increments, which no restore starts from. Now the next upload
/// makes the bucket again and the primary's compaction window finds the chain broken
/// and stores a snapshot: the restore equals the primary.
#[test]
fn a_bucket_deleted_under_a_running_primary_is_made_again_and_reseeded() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = nats.url("deleted");
    let mut shell = LiveShell::start(
        dir.path(),
        "primary",
        &format!(
            ".open file:{}?vfs=litestream&replica={url}&sync_interval=100ms&l1_interval=1s&sync_timeout=5s\n\
             CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);\n\
             SELECT litestream_sync(10000) > 0;",
            db.display()
        ),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = async_nats::connect(format!("127.0.0.1:{}", nats.port)).await.unwrap();
        async_nats::jetstream::new(client)
            .delete_stream("OBJ_deleted")
            .await
            .unwrap();
    });
    shell.run("INSERT INTO t VALUES (3);");
    // The first upload after finds the stream gone and makes it again; the sync waits for
    // the retry.
    let synced = shell.run("SELECT litestream_sync(20000) > 0;");
    assert_eq!(synced.trim(), "1", "{}\n{}", shell.stderr(), nats.log_tail());
    shell.run("INSERT INTO t VALUES (4);");
    let deadline = Instant::now() + Duration::from_secs(30);
    let out = dir.path().join("restored.db");
    loop {
        shell.run("SELECT litestream_sync(10000);");
        let _ = std::fs::remove_file(&out);
        if restore_latest(&store(&url), &out).is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no restorable replica 30 s after the bucket was made again: {}",
            shell.stderr()
        );
        sleep(Duration::from_millis(500));
    }
    assert_eq!(
        sqlite(&format!(".open {}\nSELECT group_concat(x) FROM t;", out.display())).trim(),
        "1,2,3,4"
    );
    assert!(shell.stderr().contains("did not exist"), "{}", shell.stderr());
}
