//! Snapshots of a large database are not held in memory (issue 15). The level-9 merge
//! writes its output to a file and the PUT maps it; the primary's snapshot (at first
//! replication, after a gap or a reseed) is encoded straight into its staging file. Before,
//! the whole encoded database was a heap buffer at every snapshot (1-2 GB of RSS for a
//! 2 GiB database).
//!
//! Alone in its own test binary, so that the process's memory is the level-9 test's (the
//! primary's runs in a `sqlite3` child, whose memory is read from /proc).

mod harness;

use litestream_vfs::config::CompactionConfig;
use litestream_vfs::file_modes::FileModes;
use litestream_vfs::ltx::{compact_with, Compression, Encoder, Header, FLAG_NO_CHECKSUM};
use litestream_vfs::primary::compactor::{Compactor, LevelCache, SnapshotTurn, SNAPSHOT_LEVEL};
use litestream_vfs::runtime::block_on;
use litestream_vfs::storage::open_store;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const PAGE: u32 = 4096;
const PAGES: u32 = 24 * 1024; // 96 MiB

/// Anonymous memory resident now (heap, thread stacks), in KiB: not mapped file pages.
fn rss_anon_kib() -> u64 {
    rss_anon_kib_of("self")
}

/// [`rss_anon_kib`] of process `pid` ("self" for this one).
fn rss_anon_kib_of(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A full image of `PAGES` pages of random bytes (incompressible, like encrypted or
/// compressed rows) as TXID 1.
fn snapshot_file() -> Vec<u8> {
    let header = Header {
        flags: FLAG_NO_CHECKSUM,
        page_size: PAGE,
        commit: PAGES,
        min_txid: 1,
        max_txid: 1,
        timestamp_ms: 1_000,
        ..Header::default()
    };
    let mut enc = Encoder::new(Vec::new(), header, Compression::Lz4).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut page = vec![0u8; PAGE as usize];
    for pgno in 1..=PAGES {
        for chunk in page.chunks_mut(8) {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        enc.write_page(pgno, &page).unwrap();
    }
    enc.finish(0).unwrap().0
}

#[test]
fn a_level9_snapshot_of_a_large_database_is_not_a_heap_buffer_of_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let staging = dir.path().join("staging");
    let store = open_store(
        &format!("file://{}", dir.path().join("replica").display()),
        &Default::default(),
    )
    .unwrap();
    let config = CompactionConfig::default();
    let compactor = Compactor {
        store: Arc::clone(&store),
        cache: LevelCache::open(&staging, FileModes::NewDatabase, config.levels.len()).unwrap(),
        config,
        encoding: Compression::Lz4.into(),
        encryption: None,
        encryption_status: None,
    };
    // As the primary leaves a snapshot staged at open: stored at level 0, and a copy in
    // the level cache that the level-9 merge reads.
    let input = snapshot_file();
    let size_kib = input.len() as u64 / 1024;
    block_on(store.put(0, 1, 1, input.clone().into(), 1_000)).unwrap();
    compactor.cache.write(0, 1, 1, &input).unwrap();
    // What the snapshot must be: the same merge, in memory, here.
    let expected = compact_with(vec![&input[..]], Vec::new(), &compactor.encoding, None)
        .unwrap()
        .writer;
    drop(input);

    let baseline = rss_anon_kib();
    let peak = Arc::new(AtomicU64::new(baseline));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (Arc::clone(&peak), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_anon_kib(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let SnapshotTurn::Stored(done) = compactor.snapshot().unwrap() else {
        panic!("no snapshot stored");
    };
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let grew_kib = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    eprintln!("snapshot of {size_kib} KiB: RssAnon grew by at most {grew_kib} KiB");
    assert_eq!(
        (done.min_txid, done.max_txid, done.bytes),
        (1, 1, expected.len() as u64)
    );
    assert!(
        grew_kib < size_kib / 4,
        "a snapshot of {size_kib} KiB grew anonymous memory by {grew_kib} KiB"
    );
    let stored = block_on(store.get(SNAPSHOT_LEVEL, 1, 1)).unwrap();
    assert!(
        stored[..] == expected[..],
        "the stored snapshot is the merge of its plan"
    );
    // The merge's output file went with the PUT.
    let left: Vec<_> = walk(&staging)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
        .collect();
    assert!(left.is_empty(), "temp files left: {left:?}");
}

/// Peak of `sample` (taken every 2 ms on another thread) while `f` runs.
fn peak_during(sample: impl Fn() -> u64 + Send + 'static, f: impl FnOnce()) -> u64 {
    let peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (Arc::clone(&peak), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(sample(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    f();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    peak.load(Ordering::Relaxed)
}

#[test]
fn the_primarys_snapshot_of_a_large_database_is_not_a_heap_buffer_of_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    // 90,000 random 1,000-byte rows (~95 MiB, incompressible), written without the VFS:
    // its first replication is a snapshot, taken by the worker (too large for the open).
    harness::plain_sqlite(
        &db,
        "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);
         WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 90000)
         INSERT INTO t(v) SELECT randomblob(1000) FROM r;
         PRAGMA wal_checkpoint(TRUNCATE);",
    );
    let size_kib = std::fs::metadata(&db).unwrap().len() / 1024;
    let replica = dir.path().join("replica");
    let mut shell = harness::shell::LiveShell::start(dir.path(), "primary", "SELECT 1;");
    let pid = shell.pid().to_string();
    let baseline = rss_anon_kib_of(&pid);
    let synced = std::cell::RefCell::new(String::new());
    let peak = peak_during(
        move || rss_anon_kib_of(&pid),
        || {
            *synced.borrow_mut() = shell.run(&format!(
                ".open file:{}?vfs=litestream&replica=file://{}\nSELECT litestream_sync(60000);",
                db.display(),
                replica.display()
            ))
        },
    );
    let grew_kib = peak.saturating_sub(baseline);
    eprintln!("primary's snapshot of {size_kib} KiB: RssAnon grew by at most {grew_kib} KiB");
    assert_eq!(synced.into_inner().trim(), "1", "the snapshot is stored as TXID 1");
    let stored = std::fs::metadata(replica.join("ltx/0/0000000000000001-0000000000000001.ltx")).unwrap();
    assert!(stored.len() / 1024 > size_kib / 2, "the snapshot holds the database");
    assert!(
        grew_kib < size_kib / 4,
        "a snapshot of {size_kib} KiB grew the primary's anonymous memory by {grew_kib} KiB"
    );
    let left: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
        .collect();
    assert!(left.is_empty(), "temp files left: {left:?}");
    shell.kill();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
