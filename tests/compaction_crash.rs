//! kill -9 while the primary compacts, snapshots and enforces retention (the ladder shrunk
//! so all of it runs several times a second), restart, repeat: every acknowledged point
//! inside the retention window still restores exactly, and no file in the replica is
//! ever half-written under its final name. Cycles: `LITESTREAM_COMPACTION_CRASH_CYCLES`
//! (default 8).

mod harness;

use harness::history::{self, table_hash, Point};
use harness::*;
use litestream_vfs::restore::{self, Listing, RestoreOptions, Target};
use litestream_vfs::storage::open_store;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

const LADDER: &str = "l1_interval=100ms&l2_interval=300ms&l3_interval=900ms&snapshot_interval=2s&retention=4s\
                      &l0_retention=1h&sync_interval=1h";

/// Runs history.py until `kill_after` past its first acknowledged point, then SIGKILL;
/// returns the points it acknowledged. The clock starts at the first point, not at the
/// spawn: on a loaded machine (CI with builds beside it) starting Python and resuming
/// the primary took longer than the shortest kill delay, and a run killed before it
/// acknowledged anything proves nothing.
fn run_and_kill(uri: &str, seed: u64, kill_after: Duration) -> Vec<Point> {
    let mut child = history::record_command(uri, "3600", seed)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut points = Vec::new();
        for point in BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| history::parse_point(&line))
        {
            if points.is_empty() {
                let _ = first_tx.send(());
            }
            points.push(point);
        }
        points
    });
    let _ = first_rx.recv_timeout(Duration::from_secs(60));
    std::thread::sleep(kill_after);
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap()
}

#[test]
fn kill_9_during_compaction_and_retention_loses_no_retained_point() {
    let cycles: u64 = std::env::var("LITESTREAM_COMPACTION_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let dir = tempfile::tempdir().unwrap();
    let replica_dir = dir.path().join("replica");
    let url = format!("file://{}", replica_dir.display());
    let db = dir.path().join("app.db");
    let uri = format!("file:{}?vfs=litestream&replica={url}&{LADDER}", db.display());
    let mut points: Vec<Point> = Vec::new();
    let mut seed = 0x5eed_u64;
    for cycle in 0..cycles {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let after = Duration::from_millis(1500 + (seed >> 33) % 2500);
        let acked = run_and_kill(&uri, cycle + 1, after);
        assert!(!acked.is_empty(), "cycle {cycle} acknowledged nothing");
        if let (Some(last), Some(first)) = (points.last(), acked.first()) {
            assert!(first.txid > last.txid, "TXIDs keep growing across restarts");
        }
        points.extend(acked);
    }
    // A final run that ends cleanly: closing uploads everything.
    history::record(&mut history::record_command(&uri, "2.5", 999));

    // No half-written file under a final name: every .ltx file decodes and verifies.
    let mut ltx_files = 0;
    let mut leftovers = 0;
    for level in std::fs::read_dir(replica_dir.join("ltx")).unwrap() {
        for entry in std::fs::read_dir(level.unwrap().path()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".ltx") {
                let bytes = std::fs::read(&path).unwrap();
                litestream_vfs::ltx::decode_file(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                ltx_files += 1;
            } else {
                leftovers += 1;
            }
        }
    }

    let store = open_store(&url, &Default::default()).unwrap();
    let listing = litestream_vfs::runtime::block_on(Listing::fetch(store.as_ref())).unwrap();
    let oldest_snapshot = listing.snapshots.iter().map(|s| s.max_txid).min().unwrap_or(1);
    let first_l0 = listing.level(0).first().map_or(1, |f| f.min_txid);
    assert!(
        oldest_snapshot > 1 && first_l0 > 1,
        "retention ran and deleted old files: {listing:?}"
    );
    // Retention kept the newest snapshot older than its window and everything after it.
    let retained: Vec<&Point> = points.iter().filter(|p| p.txid >= oldest_snapshot).collect();
    assert!(!retained.is_empty());
    let started = Instant::now();
    let mut checked = 0;
    for (i, p) in retained.iter().enumerate() {
        let out = dir.path().join(format!("r{i}.db"));
        let restored = restore::restore(
            Arc::clone(&store),
            &out,
            Target::Txid(p.txid),
            &RestoreOptions::default(),
        )
        .unwrap_or_else(|e| panic!("acknowledged TXID {} (at {} ms): {e}", p.txid, p.ms));
        assert_eq!(restored.position.txid, p.txid);
        assert_eq!(table_hash(&out), p.hash, "TXID {}", p.txid);
        assert_eq!(integrity(&out), "ok");
        std::fs::remove_file(&out).unwrap();
        checked += 1;
    }
    // The latest state equals the primary's.
    let latest = dir.path().join("latest.db");
    restore::restore(Arc::clone(&store), &latest, Target::Latest, &RestoreOptions::default()).unwrap();
    assert_eq!(table_hash(&latest), table_hash(&db));
    println!(
        "{cycles} kills during compaction/retention: {} acknowledged points, {checked} retained ones restored \
         exactly in {:?}; replica holds {ltx_files} files ({} snapshots), {leftovers} temp leftovers, 0 lost",
        points.len(),
        started.elapsed(),
        listing.snapshots.len()
    );
}
