//! A level-9 snapshot of a large database is not held in memory: the merge writes its
//! output to a file and the PUT maps it (issue 15). Before, the whole encoded database was
//! a heap buffer at every snapshot (1-2 GB of RSS for a 2 GiB database).
//!
//! Alone in its own test binary, so that the process's memory is this test's.

use litestream_vfs::config::CompactionConfig;
use litestream_vfs::file_modes::FileModes;
use litestream_vfs::ltx::{compact_with, Compression, Encoder, Header, FLAG_NO_CHECKSUM};
use litestream_vfs::primary::compactor::{Compactor, LevelCache, SNAPSHOT_LEVEL};
use litestream_vfs::runtime::block_on;
use litestream_vfs::storage::open_store;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const PAGE: u32 = 4096;
const PAGES: u32 = 24 * 1024; // 96 MiB

/// Anonymous memory resident now (heap, thread stacks), in KiB: not mapped file pages.
fn rss_anon_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
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
        pre_apply_checksum: 0,
        wal_offset: 0,
        wal_size: 0,
        wal_salt1: 0,
        wal_salt2: 0,
        node_id: 0,
        recipients: 0,
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
    let done = compactor.snapshot().unwrap().unwrap();
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
