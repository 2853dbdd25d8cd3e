//! Our restore on a replica that the real `litestream replicate` 0.5.17 built and
//! compacted (levels 1 and 2, snapshots, shrunk to seconds) gives the same database as
//! `litestream restore`, at the latest TXID and at earlier ones.

mod harness;

use harness::*;
use litestream_vfs::restore::{self, Listing, RestoreOptions, Target};
use litestream_vfs::storage::open_store;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn plain_sql(db: &Path, sql: &str) {
    let out = Command::new("/usr/bin/sqlite3").arg(db).arg(sql).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn our_restore_of_a_litestream_compacted_replica_matches_litestream_restore() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    plain_sql(
        &db,
        "PRAGMA journal_mode=wal; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, n INT);",
    );
    let config = dir.path().join("litestream.yml");
    std::fs::write(
        &config,
        format!(
            "snapshot:\n  interval: 6s\n  retention: 1h\nlevels:\n  - interval: 1s\n  - interval: 3s\n\
             dbs:\n  - path: {}\n    replicas:\n      - url: {url}\n",
            db.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("litestream.log")).unwrap();
    let mut child = Command::new(litestream_bin())
        .env_remove("AWS_CA_BUNDLE")
        .args(["replicate", "-config"])
        .arg(&config)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut round = 0;
    while start.elapsed() < Duration::from_secs(14) {
        round += 1;
        plain_sql(
            &db,
            &format!(
                "INSERT INTO t(v, n) SELECT hex(randomblob(40)), value FROM generate_series(1, 50);
                 UPDATE t SET n = n + {round} WHERE id % 7 = {};
                 DELETE FROM t WHERE id % 11 = {};",
                round % 7,
                round % 11
            ),
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(4));
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();

    let store = open_store(&url, &Default::default()).unwrap();
    let listing = litestream_vfs::runtime::block_on(Listing::fetch(store.as_ref())).unwrap();
    let [l3, l2, l1, l0] = [3, 2, 1, 0].map(|level| listing.level(level).len());
    println!(
        "litestream built: {} snapshots, L3 {l3}, L2 {l2}, L1 {l1}, L0 {l0}",
        listing.snapshots.len()
    );
    assert!(l1 > 0 && l2 > 0, "litestream compacted into levels 1 and 2");

    // Latest, and every fourth TXID that ends a file: ours and theirs agree.
    let mut targets: Vec<u64> = listing
        .snapshots
        .iter()
        .chain(listing.incremental.iter().flatten())
        .map(|f| f.max_txid)
        .collect();
    targets.sort();
    targets.dedup();
    let latest = *targets.last().unwrap();
    let mut checked = 0;
    for (i, txid) in targets.iter().enumerate() {
        if i % 4 != 0 && *txid != latest {
            continue;
        }
        let ours = dir.path().join(format!("ours-{txid}.db"));
        let theirs = dir.path().join(format!("theirs-{txid}.db"));
        let restored = restore::restore(
            Arc::clone(&store),
            &ours,
            Target::Txid(*txid),
            &RestoreOptions::default(),
        )
        .unwrap_or_else(|e| panic!("our restore to {txid}: {e}"));
        assert_eq!(restored.position.txid, *txid);
        litestream_restore(&url, &theirs, &["-txid", &format!("{txid:016x}")]).unwrap();
        assert_eq!(dump(&ours), dump(&theirs), "TXID {txid}");
        assert_eq!(integrity(&ours), "ok");
        checked += 1;
    }
    let ours = dir.path().join("ours-latest.db");
    restore::restore(Arc::clone(&store), &ours, Target::Latest, &RestoreOptions::default()).unwrap();
    assert_eq!(dump(&ours), dump(&db), "latest equals the source database");
    println!("{checked} TXIDs restored identically by both tools");
}
