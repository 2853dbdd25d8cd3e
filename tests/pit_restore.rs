//! Point-in-time restore over a compacted history: a "day" of writes every few
//! milliseconds with the compaction ladder shrunk (level 1 every 250 ms, level 2 every
//! second, level 3 every 4 s, a snapshot every 16 s, 32 s retention), then restores to
//! 50 random TXIDs and timestamps, each compared with the primary's state at that point,
//! by us and by the real `litestream restore` 0.5.17.

mod harness;

use harness::history::{self, table_hash, Point};
use harness::*;
use litestream_vfs::restore::{self, Listing, RestoreOptions, Target};
use litestream_vfs::storage::open_store;
use std::path::Path;
use std::sync::Arc;

const LADDER: &str = "l1_interval=250ms&l2_interval=1s&l3_interval=4s&snapshot_interval=16s&retention=32s\
                      &l0_retention=1h&sync_interval=1h";
const SECONDS: u32 = 50;

fn record_history(db: &Path, replica: &str, seconds: u32) -> Vec<Point> {
    let uri = format!("file:{}?vfs=litestream&replica={replica}&{LADDER}", db.display());
    history::record(&mut history::record_command(&uri, &seconds.to_string(), 7))
}

/// A small deterministic generator, so a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn rfc3339(ms: i64) -> String {
    litestream_vfs::storage::format_rfc3339_nano(ms)
}

#[test]
fn restores_to_random_points_of_a_compacted_day_match_the_primary_in_a_dozen_files() {
    let dir = tempfile::tempdir().unwrap();
    let replica_dir = dir.path().join("replica");
    let url = format!("file://{}", replica_dir.display());
    let db = dir.path().join("app.db");
    let history = record_history(&db, &url, SECONDS);
    assert!(history.len() > 200, "only {} sync points recorded", history.len());
    for w in history.windows(2) {
        assert!(w[1].txid > w[0].txid, "syncs return growing TXIDs");
    }

    let store = open_store(&url, &Default::default()).unwrap();
    let listing = litestream_vfs::runtime::block_on(Listing::fetch(store.as_ref())).unwrap();
    let count = |level: usize| listing.incremental[level].len();
    println!(
        "replica: {} snapshots, L3 {}, L2 {}, L1 {}, L0 {} files",
        listing.snapshots.len(),
        count(0),
        count(1),
        count(2),
        count(3)
    );
    assert!(
        listing.snapshots.len() >= 2,
        "level-9 snapshots were taken: {listing:?}"
    );
    assert!(
        count(0) >= 5 && count(1) >= 20 && count(2) >= 50,
        "every level was compacted"
    );

    // Retention ran: points older than the oldest kept snapshot are gone, with a clear error.
    let oldest_kept = listing.snapshots.iter().map(|s| s.max_txid).min().unwrap();
    let first_l1 = listing.incremental[2].first().unwrap().min_txid;
    assert!(first_l1 > 1, "retention deleted the oldest level-1 files");
    let retained: Vec<&Point> = history.iter().filter(|p| p.txid >= oldest_kept).collect();
    assert!(retained.len() > 100, "{} retained points", retained.len());
    if let Some(gone) = history
        .iter()
        .find(|p| p.txid < oldest_kept && p.txid < first_l1 && p.txid > 1)
    {
        let err = restore::plan(&listing, Some(gone.txid)).unwrap_err();
        assert!(err.contains("cannot restore") || err.contains("no snapshot"), "{err}");
    }

    let mut rng = Rng(0x9e3779b97f4a7c15);
    let mut files_read = Vec::new();
    let mut litestream_checked = 0;
    for i in 0..50 {
        let point = retained[rng.below(retained.len())];
        let by_time = i % 2 == 1;
        let target = if by_time {
            Target::Timestamp(point.ms)
        } else {
            Target::Txid(point.txid)
        };
        let out = dir.path().join(format!("restore-{i}.db"));
        let restored = restore::restore(Arc::clone(&store), &out, target, &RestoreOptions::default())
            .unwrap_or_else(|e| panic!("restore {i} to {target:?}: {e}"));
        assert_eq!(restored.position.txid, point.txid, "restore {i} to {target:?}");
        assert_eq!(
            table_hash(&out),
            point.hash,
            "restore {i} to {target:?}: contents differ"
        );
        files_read.push(restored.plan.len());

        // Every fifth point also through the real Litestream.
        if i % 5 == 0 {
            let theirs = dir.path().join(format!("litestream-{i}.db"));
            let flag = if by_time {
                // Litestream keeps files created strictly before the time, at a finer
                // resolution than milliseconds: one more millisecond is still before
                // the next write (history.py waits 2 ms after each sync).
                vec!["-timestamp".to_string(), rfc3339(point.ms + 1)]
            } else {
                vec!["-txid".to_string(), format!("{:016x}", point.txid)]
            };
            let flags: Vec<&str> = flag.iter().map(String::as_str).collect();
            litestream_restore(&url, &theirs, &flags).unwrap_or_else(|e| panic!("{flags:?}: {e}"));
            assert_eq!(table_hash(&theirs), point.hash, "litestream restore {flags:?}");
            litestream_checked += 1;
        }
        std::fs::remove_file(&out).unwrap();
    }
    let average = files_read.iter().sum::<usize>() as f64 / files_read.len() as f64;
    println!(
        "50 point-in-time restores: {average:.1} files per restore on average (max {}), {litestream_checked} \
         also restored by litestream 0.5.17",
        files_read.iter().max().unwrap()
    );
    assert!(average <= 12.0, "a restore read {average:.1} files on average");

    // A TXID inside a file is refused with the restorable TXIDs around it.
    let merged = listing
        .incremental
        .iter()
        .flatten()
        .find(|f| f.max_txid > f.min_txid + 1 && f.min_txid > oldest_kept)
        .expect("a file merging several TXIDs");
    let inside = merged.min_txid;
    if history.iter().all(|p| p.txid != inside) {
        let err = restore::restore(
            Arc::clone(&store),
            &dir.path().join("inside.db"),
            Target::Txid(inside),
            &RestoreOptions::default(),
        )
        .unwrap_err();
        assert!(err.contains("nearest restorable"), "{err}");
        assert!(!dir.path().join("inside.db").exists());
    }
}

#[test]
fn restore_refuses_to_overwrite_unless_asked_and_sql_restores_too() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("replica").display());
    let db = dir.path().join("app.db");
    let uri = format!("file:{}?vfs=litestream&replica={url}", db.display());
    let txid: u64 = sqlite(&format!(
        ".open {uri}\nCREATE TABLE t(x);\nINSERT INTO t VALUES (1),(2),(3);\nSELECT litestream_sync();"
    ))
    .trim()
    .parse()
    .unwrap();
    let out = dir.path().join("out.db");
    // Through SQL on a plain connection.
    let restored = sqlite(&format!("SELECT litestream_restore('{url}', '{}');", out.display()));
    assert_eq!(restored.trim(), txid.to_string());
    assert_eq!(dump(&out), dump(&db));
    // Again: refused, the file untouched; with 'overwrite': done.
    let err = sqlite_result(&format!("SELECT litestream_restore('{url}', '{}');", out.display())).unwrap_err();
    assert!(err.contains("already exists"), "{err}");
    let again = sqlite(&format!(
        "SELECT litestream_restore('{url}', '{}', 'latest', 'overwrite');",
        out.display()
    ));
    assert_eq!(again.trim(), txid.to_string());
    // A TXID beyond the replica is an error that says what exists.
    let err = sqlite_result(&format!(
        "SELECT litestream_restore('{url}', '{}', {});",
        dir.path().join("x.db").display(),
        txid + 100
    ))
    .unwrap_err();
    assert!(err.contains(&format!("TXID {}", txid + 100)), "{err}");
}
