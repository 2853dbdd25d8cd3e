//! The replica through its library API, on synthetic LTX files in a `memory://` store:
//! what it serves equals what applying the same files to a database image gives (shrinks,
//! growth, newest page wins), it follows new files, survives compaction removing the
//! files it planned with, reads large page indexes, and reports corrupt files as corrupt.

use bytes::Bytes;
use litestream_vfs::ltx::{compact, Applier, Compression, Encoder, Header, FLAG_NO_CHECKSUM};
use litestream_vfs::replica::{ReadError, Replica, ReplicaConfig};
use litestream_vfs::runtime::block_on;
use litestream_vfs::storage::{open_store, ReplicaStore, StoreOptions};
use std::sync::Arc;
use std::time::Duration;

const PS: u32 = 512;

fn page(pgno: u32, version: u64) -> Vec<u8> {
    let mut p = vec![(pgno as u64 * 31 + version) as u8; PS as usize];
    p[..4].copy_from_slice(&pgno.to_be_bytes());
    p[4..12].copy_from_slice(&version.to_be_bytes());
    p
}

fn encode(min: u64, max: u64, commit: u32, pages: &[u32]) -> Bytes {
    let header = Header {
        flags: FLAG_NO_CHECKSUM,
        page_size: PS,
        commit,
        min_txid: min,
        max_txid: max,
        timestamp_ms: 1_700_000_000_000 + max as i64,
        ..Default::default()
    };
    let mut enc = Encoder::new(Vec::new(), header, Compression::Lz4).unwrap();
    let mut sorted = pages.to_vec();
    sorted.sort();
    sorted.dedup();
    for pgno in sorted {
        enc.write_page(pgno, &page(pgno, max)).unwrap();
    }
    Bytes::from(enc.finish(0).unwrap().0)
}

fn memory_store(name: &str) -> (String, Arc<dyn ReplicaStore>) {
    let url = format!("memory://{name}/db");
    let store = open_store(&url, &StoreOptions::default()).unwrap();
    (url, store)
}

fn put(store: &dyn ReplicaStore, level: u8, min: u64, max: u64, bytes: Bytes) {
    block_on(store.put(level, min, max, bytes, 0)).unwrap();
}

fn open(url: &str) -> Arc<Replica> {
    Replica::open(&ReplicaConfig {
        url: url.to_string(),
        store_options: StoreOptions::default(),
        poll_interval: Duration::from_millis(20),
        cache_bytes: 64 << 10,
        hydrate: None,
        key: None,
    })
    .unwrap()
}

/// The whole database as the replica serves it now, page 1's header bytes as stored.
fn image(replica: &Replica) -> Vec<u8> {
    let state = replica.current();
    let mut buf = vec![0u8; state.db_size() as usize];
    assert!(replica.read(&state, 0, &mut buf).unwrap());
    // Beyond the end: zeros and a short read.
    let mut past = [1u8; 10];
    assert!(!replica.read(&state, state.db_size(), &mut past).unwrap());
    assert_eq!(past, [0; 10]);
    buf
}

/// Undoes what the replica changes in page 1 (journal mode, change counter, size).
fn unpatch(served: &mut [u8], expected: &[u8]) {
    if served.len() >= 100 && expected.len() >= 100 {
        for range in [18..20, 24..32, 92..96] {
            served[range.clone()].copy_from_slice(&expected[range]);
        }
    }
}

/// A deterministic pseudo-random generator (xorshift), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn serves_what_applying_the_files_gives_and_follows_new_ones() {
    let (url, store) = memory_store("plan-random");
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let mut applier = Applier::new(Vec::<u8>::new());
    let mut files = Vec::new();
    let mut commit = 40u32;
    let first = encode(1, 1, commit, &(1..=commit).collect::<Vec<_>>());
    files.push((1u64, first));
    for txid in 2..=40u64 {
        commit = match rng.below(4) {
            0 => commit.saturating_sub(rng.below(10) as u32).max(2),
            1 => commit + rng.below(12) as u32,
            _ => commit,
        };
        let n = rng.below(6) + 1;
        let mut pages: Vec<u32> = (0..n).map(|_| rng.below(commit as u64) as u32 + 1).collect();
        pages.push(1);
        files.push((txid, encode(txid, txid, commit, &pages)));
    }
    // The first half is there at open.
    for (txid, bytes) in &files[..20] {
        put(store.as_ref(), 0, *txid, *txid, bytes.clone());
        applier.apply(&bytes[..]).unwrap();
    }
    let replica = open(&url);
    assert_eq!(replica.current().txid, 20);
    let mut served = image(&replica);
    unpatch(&mut served, applier.sink());
    assert_eq!(&served, applier.sink(), "at TXID 20");
    let pinned = replica.current();

    // The rest arrives a few files at a time; the replica follows.
    for chunk in files[20..].chunks(7) {
        for (txid, bytes) in chunk {
            put(store.as_ref(), 0, *txid, *txid, bytes.clone());
            applier.apply(&bytes[..]).unwrap();
        }
        let last = chunk.last().unwrap().0;
        assert_eq!(replica.wait(last, Duration::from_secs(10)).unwrap(), last);
        let mut served = image(&replica);
        unpatch(&mut served, applier.sink());
        assert_eq!(&served, applier.sink(), "at TXID {last}");
        assert!(replica.lag().is_some());
    }
    // A state pinned earlier still reads as it was.
    assert_eq!(pinned.txid, 20);
    let mut p2 = vec![0u8; PS as usize];
    replica.read(&pinned, PS as u64, &mut p2).unwrap();
    assert_eq!(u32::from_be_bytes(p2[..4].try_into().unwrap()), 2);
    let status = replica.status(40);
    assert_eq!(status["latest_txid"], 40);
    assert!(status["cache"]["bytes"].as_u64().unwrap() <= 64 << 10);
    replica.stop();
}

/// A store that lost a file from the middle (a gap): the replica serves the state before
/// it, and says so. Its status showed `lag: -1` and no error, as if merely never caught
/// up (found by a tester). Now `error` names the gap, `lag` is the age of the state it
/// serves, and a snapshot stored past the gap (as the primary's compaction takes one)
/// mends it.
#[test]
fn a_gap_in_the_store_is_reported_and_a_snapshot_past_it_mends_it() {
    let (url, store) = memory_store("plan-gap");
    for txid in [1u64, 2, 3, 5, 6] {
        put(store.as_ref(), 0, txid, txid, encode(txid, txid, 4, &[1, 2, 3, 4]));
    }
    let replica = open(&url);
    assert_eq!(replica.current().txid, 3, "the state before the gap");
    let status = replica.status(3);
    let error = status["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("gap after TXID 3") && error.contains("serving TXID 3"),
        "{status}"
    );
    assert_eq!(status["gap"]["next_min_txid"], 5, "{status}");
    assert!(status["lag"].as_f64().unwrap() > 0.0, "{status}");
    assert!(replica.lag().is_some());
    // Polls go on without finding anything new: still said.
    std::thread::sleep(Duration::from_millis(200));
    assert!(replica.status(3)["error"].as_str().is_some());

    // A snapshot past the gap mends it.
    put(store.as_ref(), 0, 7, 7, encode(7, 7, 4, &[1, 2, 3, 4]));
    put(store.as_ref(), 9, 1, 7, encode(1, 7, 4, &[1, 2, 3, 4]));
    assert_eq!(replica.wait(7, Duration::from_secs(30)).unwrap(), 7);
    let status = replica.status(7);
    assert!(status["error"].is_null() && status["gap"].is_null(), "{status}");
    replica.stop();
}

#[test]
fn compaction_removing_planned_files_is_followed_by_a_new_plan() {
    let (url, store) = memory_store("plan-compaction");
    let l0: Vec<Bytes> = vec![
        encode(1, 1, 8, &[1, 2, 3, 4, 5, 6, 7, 8]),
        encode(2, 2, 8, &[2, 5]),
        encode(3, 3, 10, &[1, 9, 10]),
    ];
    for (i, b) in l0.iter().enumerate() {
        put(store.as_ref(), 0, i as u64 + 1, i as u64 + 1, b.clone());
    }
    let replica = open(&url);
    let before = image(&replica);
    let old = replica.current();
    assert_eq!(old.files().len(), 3);

    // Compact 1..=3 into level 1, delete the level-0 files, add TXID 4 at level 0.
    let compacted = compact(l0.iter().map(|b| &b[..]).collect(), Vec::new(), Compression::Lz4).unwrap();
    put(store.as_ref(), 1, 1, 3, Bytes::from(compacted.writer));
    for txid in 1..=3 {
        block_on(store.delete(0, txid, txid)).unwrap();
    }
    put(store.as_ref(), 0, 4, 4, encode(4, 4, 10, &[7]));
    assert_eq!(replica.wait(4, Duration::from_secs(10)).unwrap(), 4);
    let now = replica.current();
    let plan: Vec<(u8, u64, u64)> = now
        .files()
        .iter()
        .map(|f| (f.object.level, f.object.min_txid, f.object.max_txid))
        .collect();
    assert_eq!(plan, [(1, 1, 3), (0, 4, 4)]);
    let after = image(&replica);
    let pg = |img: &[u8], n: u32| img[(n as usize - 1) * PS as usize..n as usize * PS as usize].to_vec();
    for n in 2..=10 {
        if n == 7 {
            assert_eq!(pg(&after, 7), page(7, 4));
        } else {
            assert_eq!(pg(&after, n), pg(&before, n), "page {n}");
        }
    }
    // The old state (a transaction that started before) still reads its TXID.
    assert_eq!(old.txid, 3);
    let mut buf = vec![0u8; PS as usize];
    replica.read(&old, 6 * PS as u64, &mut buf).unwrap();
    assert_eq!(buf, page(7, 1));
    replica.stop();
}

#[test]
fn a_read_transaction_survives_its_files_being_compacted_away() {
    let (url, store) = memory_store("plan-compacted-under-reader");
    let l0: Vec<Bytes> = vec![encode(1, 1, 8, &[1, 2, 3, 4, 5, 6, 7, 8]), encode(2, 2, 8, &[2, 5])];
    for (i, b) in l0.iter().enumerate() {
        put(store.as_ref(), 0, i as u64 + 1, i as u64 + 1, b.clone());
    }
    let replica = open(&url);
    // A read transaction pinned at TXID 2 that has not read page 6 yet.
    let pinned = replica.current();
    assert_eq!(pinned.txid, 2);
    let compacted = compact(l0.iter().map(|b| &b[..]).collect(), Vec::new(), Compression::Lz4).unwrap();
    put(store.as_ref(), 1, 1, 2, Bytes::from(compacted.writer));
    for txid in 1..=2 {
        block_on(store.delete(0, txid, txid)).unwrap();
    }
    // Its files are gone; the page comes from a fresh plan of the same TXID.
    let mut buf = vec![0u8; PS as usize];
    replica.read(&pinned, 5 * PS as u64, &mut buf).unwrap();
    assert_eq!(buf, page(6, 1));
    replica.read(&pinned, PS as u64, &mut buf).unwrap();
    assert_eq!(buf, page(2, 2));
    replica.stop();
}

#[test]
fn a_page_index_larger_than_the_first_guess_is_read() {
    let (url, store) = memory_store("plan-large-index");
    let commit = 20_000u32;
    let bytes = encode(1, 1, commit, &(1..=commit).collect::<Vec<_>>());
    assert!(bytes.len() > 100_000);
    put(store.as_ref(), 0, 1, 1, bytes);
    let replica = open(&url);
    let state = replica.current();
    assert_eq!((state.commit, state.txid), (commit, 1));
    let mut buf = vec![0u8; PS as usize];
    replica.read(&state, (commit as u64 - 1) * PS as u64, &mut buf).unwrap();
    assert_eq!(buf, page(commit, 1));
    // Index and header, not the file: well under its size.
    let fetched = replica.status(1)["bytes_fetched"].as_u64().unwrap();
    assert!(fetched < 200_000, "{fetched}");
    replica.stop();
}

#[test]
fn corrupt_files_are_reported_as_corrupt() {
    // A bad page frame: open works (the index is fine), reading that page is CORRUPT.
    let (url, store) = memory_store("plan-corrupt-frame");
    let good = encode(1, 1, 3, &[1, 2, 3]);
    let mut bad = good.to_vec();
    // Page 2's frame starts after page 1's; smash its compressed payload.
    let frame2 = 100 + (bad[100 + 6..100 + 10].try_into().map(u32::from_be_bytes).unwrap() as usize + 10);
    for b in &mut bad[frame2 + 10..frame2 + 20] {
        *b = 0xff;
    }
    put(store.as_ref(), 0, 1, 1, Bytes::from(bad));
    let replica = open(&url);
    let state = replica.current();
    let mut buf = vec![0u8; PS as usize];
    replica.read(&state, 0, &mut buf).unwrap();
    let err = replica.read(&state, PS as u64, &mut buf).unwrap_err();
    assert!(matches!(err, ReadError::Corrupt(_)), "{err:?}");
    replica.stop();

    // A bad magic: the open fails and says why.
    let (url, store) = memory_store("plan-corrupt-magic");
    let mut bad = good.to_vec();
    bad[0] = b'X';
    put(store.as_ref(), 0, 1, 1, Bytes::from(bad));
    let err = Replica::open(&ReplicaConfig {
        url,
        store_options: StoreOptions::default(),
        poll_interval: Duration::from_secs(1),
        cache_bytes: 1 << 20,
        hydrate: None,
        key: None,
    })
    .unwrap_err();
    assert!(err.contains("corrupt replica") && err.contains("magic"), "{err}");

    // A truncated file.
    let (url, store) = memory_store("plan-corrupt-short");
    put(store.as_ref(), 0, 1, 1, good.slice(..good.len() - 7));
    let err = Replica::open(&ReplicaConfig {
        url,
        store_options: StoreOptions::default(),
        poll_interval: Duration::from_secs(1),
        cache_bytes: 1 << 20,
        hydrate: None,
        key: None,
    })
    .unwrap_err();
    assert!(err.contains("corrupt replica"), "{err}");
}
