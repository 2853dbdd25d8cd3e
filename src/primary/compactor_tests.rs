//! Tests of `compactor.rs`: merges, snapshots, retention.

use super::*;
use crate::file_modes::FileModes;
use crate::ltx::{Compression, Encoder, Header, FLAG_NO_CHECKSUM};
use crate::storage::open_store;
use std::fs;
use std::path::Path;

fn ltx(min: u64, max: u64, pages: &[(u32, u8)], commit: u32, ts: i64) -> Vec<u8> {
    ltx_sized(512, min, max, pages, commit, ts)
}

fn ltx_sized(page_size: u32, min: u64, max: u64, pages: &[(u32, u8)], commit: u32, ts: i64) -> Vec<u8> {
    let header = Header {
        flags: FLAG_NO_CHECKSUM,
        page_size,
        commit,
        min_txid: min,
        max_txid: max,
        timestamp_ms: ts,
        ..Header::default()
    };
    let mut enc = Encoder::new(Vec::new(), header, Compression::Lz4).unwrap();
    for (pgno, fill) in pages {
        enc.write_page(*pgno, &vec![*fill; page_size as usize]).unwrap();
    }
    enc.finish(0).unwrap().0
}

fn compactor(name: &str, dir: &Path, config: CompactionConfig) -> Compactor {
    Compactor {
        store: open_store(&format!("memory://{name}"), &Default::default()).unwrap(),
        cache: LevelCache::open(dir, FileModes::NewDatabase, config.levels.len()).unwrap(),
        config,
        encoding: Compression::Lz4.into(),
        encryption: None,
        encryption_status: None,
    }
}

fn put(c: &Compactor, level: u8, min: u64, max: u64, bytes: Vec<u8>) {
    block_on(c.store.put(level, min, max, bytes.into(), (max * 1000) as i64)).unwrap();
}

fn names(c: &Compactor, level: u8) -> Vec<(u64, u64)> {
    block_on(c.store.list(level))
        .unwrap()
        .iter()
        .map(|f| (f.min_txid, f.max_txid))
        .collect()
}

#[test]
fn a_level_merges_what_follows_its_last_file_and_the_result_restores_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let c = compactor("compact-level", dir.path(), CompactionConfig::default());
    put(&c, 0, 1, 1, ltx(1, 1, &[(1, 1), (2, 1)], 2, 1000));
    put(&c, 0, 2, 3, ltx(2, 3, &[(2, 2), (3, 2)], 3, 3000));
    // One input cached locally, as the primary leaves it after uploading.
    c.cache.write(0, 4, 4, &ltx(4, 4, &[(1, 4)], 2, 4000)).unwrap();
    put(&c, 0, 4, 4, ltx(4, 4, &[(1, 4)], 2, 4000));
    let out = c.compact_level(1).unwrap().unwrap();
    assert_eq!((out.min_txid, out.max_txid, out.inputs, out.local_inputs), (1, 4, 3, 1));
    assert_eq!(names(&c, 1), [(1, 4)]);
    // The merged file is a snapshot of TXID 4: page 3 is above the final commit.
    let merged = block_on(c.store.get(1, 1, 4)).unwrap();
    let decoded = crate::ltx::decode_file(&merged).unwrap();
    let pages: Vec<(u32, u8)> = decoded.pages.iter().map(|(p, d)| (*p, d[0])).collect();
    assert_eq!(pages, [(1, 4), (2, 2)]);
    assert_eq!(decoded.header.timestamp_ms, 4000);
    // Nothing new: nothing to do. A new file: only it is compacted next time.
    assert_eq!(c.compact_level(1).unwrap(), None);
    put(&c, 0, 5, 6, ltx(5, 6, &[(2, 6)], 2, 6000));
    let next = c.compact_level(1).unwrap().unwrap();
    assert_eq!((next.min_txid, next.max_txid), (5, 6));
    // Level 2 from level 1, reading its inputs from the cache this process wrote.
    let l2 = c.compact_level(2).unwrap().unwrap();
    assert_eq!((l2.min_txid, l2.max_txid, l2.local_inputs), (1, 6, 2));
    assert!(c.cache.read(1, 1, 4).is_none(), "consumed inputs leave the cache");
}

/// A level-0 file of another page size (a reseed after the database was rebuilt
/// outside the VFS) ends one level-1 file and starts the next: no file mixes sizes.
#[test]
fn a_page_size_change_splits_the_level_instead_of_failing_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = compactor("compact-page-size", dir.path(), CompactionConfig::default());
    put(&c, 0, 1, 1, ltx(1, 1, &[(1, 1), (2, 1)], 2, 1000));
    put(&c, 0, 2, 2, ltx(2, 2, &[(2, 2)], 2, 2000));
    put(&c, 0, 3, 3, ltx_sized(1024, 3, 3, &[(1, 3)], 1, 3000));
    let first = c.compact_level(1).unwrap().unwrap();
    assert_eq!((first.min_txid, first.max_txid, first.inputs), (1, 2, 2));
    let second = c.compact_level(1).unwrap().unwrap();
    assert_eq!((second.min_txid, second.max_txid, second.inputs), (3, 3, 1));
    let merged = crate::ltx::decode_file(&block_on(c.store.get(1, 3, 3)).unwrap()).unwrap();
    assert_eq!(merged.header.page_size, 1024);
}

/// A busy writer's window can hold more than memory should (1.1 GB at 64 KiB rows
/// flat out): each file merges at most `max_input_bytes` of inputs, and the whole
/// window still goes in one turn, each file the newest of its run.
#[test]
fn a_window_over_the_input_cap_is_merged_in_runs_under_it() {
    let dir = tempfile::tempdir().unwrap();
    // Every file a full image of 7 pages, page p of TXID i filled with 10 i + p.
    let image = |i: u64| -> Vec<(u32, u8)> { (1..=7).map(|p| (p, (10 * i) as u8 + p as u8)).collect() };
    let file = |i: u64| ltx(i, i, &image(i), 7, i as i64 * 1000);
    let cap = file(1).len() as u64 * 5 / 2;
    let config = CompactionConfig {
        max_input_bytes: cap,
        ..Default::default()
    };
    let c = compactor("compact-cap", dir.path(), config);
    for i in 1..=6 {
        put(&c, 0, i, i, file(i));
    }
    let out = c.compact_level(1).unwrap().unwrap();
    assert_eq!((out.min_txid, out.max_txid, out.inputs), (1, 6, 6));
    assert_eq!(names(&c, 1), [(1, 2), (3, 4), (5, 6)]);
    for f in block_on(c.store.list(1)).unwrap() {
        assert!(f.size <= cap, "a level-1 file of {} bytes, cap {cap}", f.size);
        let bytes = block_on(c.store.get(1, f.min_txid, f.max_txid)).unwrap();
        let pages: Vec<(u32, u8)> = crate::ltx::decode_file(&bytes)
            .unwrap()
            .pages
            .iter()
            .map(|(p, d)| (*p, d[0]))
            .collect();
        assert_eq!(pages, image(f.max_txid));
    }
    // One input over the cap is merged alone rather than not at all.
    let big: Vec<(u32, u8)> = (1..=40).map(|p| (p, p as u8)).collect();
    let big = ltx(7, 7, &big, 40, 7000);
    assert!(big.len() as u64 > cap);
    put(&c, 0, 7, 7, big);
    put(&c, 0, 8, 8, file(8));
    assert_eq!(c.compact_level(1).unwrap().unwrap().inputs, 2);
    assert_eq!(&names(&c, 1)[3..], [(7, 7), (8, 8)]);
}

#[test]
fn compacting_again_after_a_crash_gives_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let c = compactor("compact-again", dir.path(), CompactionConfig::default());
    put(&c, 0, 1, 2, ltx(1, 2, &[(1, 1)], 1, 2000));
    put(&c, 0, 3, 3, ltx(3, 3, &[(1, 3)], 1, 3000));
    c.compact_level(1).unwrap().unwrap();
    let first = block_on(c.store.get(1, 1, 3)).unwrap();
    // As if the process died after the upload and before anything else: the level-1
    // file is deleted and compaction runs again from the same inputs.
    block_on(c.store.delete(1, 1, 3)).unwrap();
    c.compact_level(1).unwrap().unwrap();
    assert_eq!(block_on(c.store.get(1, 1, 3)).unwrap(), first);
}

/// A merge that fails half-way (here a corrupt input) leaves no output file behind,
/// and a good merge leaves only the cache's copy.
#[test]
fn merges_leave_no_temp_file_whether_they_fail_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let c = compactor("compact-temp", dir.path(), CompactionConfig::default());
    let mut bad = ltx(1, 1, &[(1, 1), (2, 1)], 2, 1000);
    let n = bad.len();
    bad[n / 2..].fill(0xff);
    put(&c, 0, 1, 1, bad);
    assert!(c.compact_level(1).is_err());
    assert!(c.snapshot().is_err());
    let temps = || {
        fs::read_dir(dir.path().join("levels"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "tmp"))
            .count()
    };
    assert_eq!(temps(), 0);
    put(&c, 0, 1, 1, ltx(1, 1, &[(1, 1), (2, 1)], 2, 1000));
    c.compact_level(1).unwrap().unwrap();
    assert!(matches!(c.snapshot().unwrap(), SnapshotTurn::Stored(_)));
    assert_eq!(temps(), 0);
    assert!(
        c.cache.read(1, 1, 1).is_some(),
        "the level-1 output is the cache's copy"
    );
}

/// A local copy damaged on disk is not the end of its window's compaction: the merge
/// reads the store's copy instead, and the damaged one goes.
#[test]
fn a_damaged_local_copy_is_merged_from_the_stores_copy_instead() {
    let dir = tempfile::tempdir().unwrap();
    let c = compactor("compact-damaged-cache", dir.path(), CompactionConfig::default());
    let good = ltx(1, 1, &[(1, 1), (2, 1)], 2, 1000);
    put(&c, 0, 1, 1, good.clone());
    put(&c, 0, 2, 2, ltx(2, 2, &[(2, 2)], 2, 2000));
    let mut damaged = good;
    let n = damaged.len();
    damaged[n / 2] ^= 0x5a;
    c.cache.write(0, 1, 1, &damaged).unwrap();
    let out = c.compact_level(1).unwrap().unwrap();
    assert_eq!((out.min_txid, out.max_txid, out.local_inputs), (1, 2, 0));
    assert!(c.cache.read(0, 1, 1).is_none(), "the damaged copy is removed");
    let merged = crate::ltx::decode_file(&block_on(c.store.get(1, 1, 2)).unwrap()).unwrap();
    let pages: Vec<(u32, u8)> = merged.pages.iter().map(|(p, d)| (*p, d[0])).collect();
    assert_eq!(pages, [(1, 1), (2, 2)]);
}

/// A level-0 file lost from the middle of the replica, or the replica emptied under the
/// primary: the level-1 merge, which lists level 0 for its window anyway, says that no
/// restore reaches past the gap (it merged on from past it without a word but a log
/// line before), unless a level-9 snapshot bridges it.
#[test]
fn a_merge_over_a_gap_says_no_restore_reaches_past_it_unless_a_snapshot_bridges_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = compactor("merge-gap", dir.path(), CompactionConfig::default());
    put(&c, 0, 1, 1, ltx(1, 1, &[(1, 1), (2, 1)], 2, 1000));
    put(&c, 0, 2, 2, ltx(2, 2, &[(2, 2)], 2, 2000));
    let (done, broken) = c.compact_level_checked(1).unwrap();
    assert_eq!((done.unwrap().max_txid, broken), (2, None));
    // TXID 3 lost.
    put(&c, 0, 4, 4, ltx(4, 4, &[(2, 4)], 2, 4000));
    let (done, broken) = c.compact_level_checked(1).unwrap();
    assert_eq!(done.unwrap().max_txid, 4, "merged on from past the gap");
    let why = broken.expect("the gap is reported");
    assert!(
        why.contains("gap after TXID 2") && why.contains("0000000000000004-0000000000000004.ltx"),
        "{why}"
    );
    // In the middle of a window's input: found there too.
    put(&c, 0, 5, 5, ltx(5, 5, &[(2, 5)], 2, 5000));
    put(&c, 0, 7, 7, ltx(7, 7, &[(2, 7)], 2, 7000));
    let (_, broken) = c.compact_level_checked(1).unwrap();
    assert!(broken.unwrap().contains("gap after TXID 5"));

    // A snapshot past the gap (the one the report has the primary take) bridges it.
    let c = compactor("merge-gap-bridged", &dir.path().join("b"), CompactionConfig::default());
    put(&c, 0, 1, 1, ltx(1, 1, &[(1, 1), (2, 1)], 2, 1000));
    c.compact_level(1).unwrap();
    put(&c, 9, 1, 3, ltx(1, 3, &[(1, 3), (2, 3)], 2, 3000));
    put(&c, 0, 3, 3, ltx(3, 3, &[(1, 3), (2, 3)], 2, 3000));
    assert_eq!(c.compact_level_checked(1).unwrap().1, None);

    // Emptied under the primary: increments only, nothing before them.
    let c = compactor("merge-headless", &dir.path().join("h"), CompactionConfig::default());
    put(&c, 0, 7, 7, ltx(7, 7, &[(2, 7)], 2, 7000));
    let why = c.compact_level_checked(1).unwrap().1.expect("reported");
    assert!(why.contains("holds no file before TXID 7"), "{why}");
}

/// A replica emptied, or put back from an older copy, under a live primary: no plan
/// reaches its newest TXID, and the snapshot step says so instead of storing a level-9
/// snapshot of an older state (or failing every day).
#[test]
fn the_snapshot_step_reports_a_replica_no_restore_reaches_the_end_of() {
    let dir = tempfile::tempdir().unwrap();
    let c = compactor("chain-broken", dir.path(), CompactionConfig::default());
    put(&c, 0, 5, 5, ltx(5, 5, &[(1, 5)], 2, 5000));
    match c.snapshot().unwrap() {
        SnapshotTurn::ChainBroken(why) => assert!(why.contains("no snapshot to start from"), "{why}"),
        other => panic!("{other:?}"),
    }
    put(&c, 0, 1, 1, ltx(1, 1, &[(1, 1), (2, 1)], 2, 1000));
    match c.snapshot().unwrap() {
        SnapshotTurn::ChainBroken(why) => assert!(why.contains("gap after TXID 1"), "{why}"),
        other => panic!("{other:?}"),
    }
    put(&c, 0, 2, 4, ltx(2, 4, &[(2, 4)], 2, 4000));
    assert!(matches!(c.snapshot().unwrap(), SnapshotTurn::Stored(_)));
    assert!(matches!(c.snapshot().unwrap(), SnapshotTurn::Current));
}

/// Keyed (LTX v4): merged outputs written through files are sealed like any other,
/// and open with the key to the merged pages.
#[test]
fn keyed_merges_written_through_files_open_with_the_key() {
    use crate::ltx::crypto::OsEntropy;
    let dir = tempfile::tempdir().unwrap();
    let key = PrivateKey::generate(&mut OsEntropy::default()).unwrap();
    let encryption = Arc::new(Encryption::new(key, &[]));
    let mut c = compactor("compact-keyed", dir.path(), CompactionConfig::default());
    c.encoding = Encoding::new(Compression::Lz4, Some(&encryption));
    c.encryption = Some(Arc::clone(&encryption));
    put(&c, 0, 1, 1, ltx(1, 1, &[(1, 1), (2, 1)], 2, 1000));
    put(&c, 0, 2, 2, ltx(2, 2, &[(2, 2)], 2, 2000));
    c.compact_level(1).unwrap().unwrap();
    assert!(matches!(c.snapshot().unwrap(), SnapshotTurn::Stored(_)));
    for (level, max) in [(1, 2), (SNAPSHOT_LEVEL, 2)] {
        let bytes = block_on(c.store.get(level, 1, max)).unwrap();
        assert!(crate::ltx::decode_file(&bytes).is_err(), "level {level} is sealed");
        let decoded = crate::ltx::decode_file_with(&bytes, Some(encryption.key())).unwrap();
        let pages: Vec<(u32, u8)> = decoded.pages.iter().map(|(p, d)| (*p, d[0])).collect();
        assert_eq!(pages, [(1, 1), (2, 2)], "level {level}");
    }
}

/// Inputs this primary's key does not open fail as `Unreadable`, which the primary shows
/// as its status `error` (a rotation that skipped `rekey` only counted compaction errors).
#[test]
fn inputs_encrypted_to_other_keys_are_reported_as_unreadable() {
    use crate::ltx::crypto::OsEntropy;
    let dir = tempfile::tempdir().unwrap();
    let theirs = Encryption::new(PrivateKey::generate(&mut OsEntropy::default()).unwrap(), &[]);
    let ours = Arc::new(Encryption::new(
        PrivateKey::generate(&mut OsEntropy::default()).unwrap(),
        &[],
    ));
    let mut c = compactor("compact-unreadable", dir.path(), CompactionConfig::default());
    c.encoding = Encoding::new(Compression::Lz4, Some(&ours));
    c.encryption = Some(Arc::clone(&ours));
    let sealed = |min: u64, pages: &[(u32, u8)]| {
        let header = Header {
            flags: FLAG_NO_CHECKSUM,
            page_size: 512,
            commit: 2,
            min_txid: min,
            max_txid: min,
            timestamp_ms: min as i64 * 1000,
            ..Header::default()
        };
        let mut enc =
            crate::ltx::Encoder::with_encoding(Vec::new(), header, &Encoding::new(Compression::Lz4, Some(&theirs)))
                .unwrap();
        for (pgno, fill) in pages {
            enc.write_page(*pgno, &[*fill; 512]).unwrap();
        }
        enc.finish(0).unwrap().0
    };
    put(&c, 0, 1, 1, sealed(1, &[(1, 1), (2, 1)]));
    put(&c, 0, 2, 2, sealed(2, &[(2, 2)]));
    match c.compact_level(1) {
        Err(CompactError::Unreadable(why)) => assert!(why.contains("not one of this file's"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(c.snapshot(), Err(CompactError::Unreadable(_))));
}

#[test]
fn retention_keeps_the_snapshot_before_the_boundary_and_everything_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = CompactionConfig {
        retention: Duration::from_secs(10),
        l0_retention: Duration::from_secs(3600),
        ..Default::default()
    };
    let c = compactor("retention", dir.path(), config);
    // Snapshots at TXIDs 10, 20, 30 written at t = 10 s, 20 s, 30 s.
    for max in [10u64, 20, 30] {
        put(&c, 9, 1, max, ltx(1, max, &[(1, max as u8)], 1, max as i64 * 1000));
    }
    for (min, max) in [(1, 10), (11, 20), (21, 30), (31, 35)] {
        put(&c, 1, min, max, ltx(min, max, &[(1, max as u8)], 1, max as i64 * 1000));
    }
    // At t = 32 s the boundary is 22 s: snapshot 20 is the newest before it.
    let deleted = c.enforce_retention(32_000).unwrap();
    assert_eq!(names(&c, 9), [(1, 20), (1, 30)]);
    assert_eq!(names(&c, 1), [(21, 30), (31, 35)]);
    assert_eq!(deleted, Deleted { snapshots: 1, files: 2 });
    // Every point after the boundary still restores.
    let listing = block_on(crate::restore::Listing::fetch(c.store.as_ref())).unwrap();
    for txid in [20, 30, 35] {
        crate::restore::plan(&listing, Some(txid)).unwrap();
    }
}

/// A snapshot written while the clock was an hour behind carries a time older than the
/// snapshots before it. Taken alone, it was "the newest snapshot before the boundary",
/// and retention deleted every point of the window before it.
#[test]
fn retention_keeps_the_window_when_a_snapshot_was_written_with_the_clock_behind() {
    let dir = tempfile::tempdir().unwrap();
    let config = CompactionConfig {
        retention: Duration::from_secs(10),
        l0_retention: Duration::from_secs(3600),
        ..Default::default()
    };
    let c = compactor("retention-clock-behind", dir.path(), config);
    // Snapshots at TXIDs 10, 20, 30 written at t = 10 s, 20 s, 30 s; TXID 40's clock said
    // an hour earlier.
    for (max, ts) in [(10u64, 10_000), (20, 20_000), (30, 30_000), (40, 40_000 - 3_600_000)] {
        let snapshot = ltx(1, max, &[(1, max as u8)], 1, ts);
        block_on(c.store.put(9, 1, max, snapshot.into(), ts)).unwrap();
    }
    for (min, max) in [(1, 10), (11, 20), (21, 30), (31, 40)] {
        put(&c, 1, min, max, ltx(min, max, &[(1, max as u8)], 1, max as i64 * 1000));
    }
    // At t = 35 s the boundary is 25 s: snapshot 20 is the newest written before it.
    c.enforce_retention(35_000).unwrap();
    assert_eq!(names(&c, 9), [(1, 20), (1, 30), (1, 40)]);
    assert_eq!(names(&c, 1), [(21, 30), (31, 40)]);
}

#[test]
fn level0_files_go_once_covered_by_level1_and_old_enough() {
    let dir = tempfile::tempdir().unwrap();
    let config = CompactionConfig {
        l0_retention: Duration::ZERO,
        ..Default::default()
    };
    let c = compactor("l0-retention", dir.path(), config);
    put(&c, 0, 1, 1, ltx(1, 1, &[(1, 1)], 1, 1000));
    put(&c, 0, 2, 2, ltx(2, 2, &[(1, 2)], 1, 2000));
    put(&c, 1, 1, 1, ltx(1, 1, &[(1, 1)], 1, 1000));
    c.enforce_retention(now_ms()).unwrap();
    assert_eq!(names(&c, 0), [(2, 2)], "only the covered level-0 file goes");
}

#[test]
fn windows_align_to_wall_clock_multiples() {
    assert_eq!(next_boundary(61_000, Duration::from_secs(30)), 90_000);
    assert_eq!(next_boundary(90_000, Duration::from_secs(30)), 120_000);
    assert_eq!(next_boundary(0, Duration::from_secs(3600)), 3_600_000);
}

fn at_seconds(level: u8, min: u64, max: u64, secs: Option<u64>) -> LtxObject {
    LtxObject {
        level,
        min_txid: min,
        max_txid: max,
        size: 100,
        last_modified: secs.map(|s| UNIX_EPOCH + Duration::from_secs(s)),
    }
}

/// A backlog spanning windows (the primary closed before its window was compacted,
/// reopened later) merges a window at a time; the window now running goes with the one
/// just ended, as before; files without a time merge whole.
#[test]
fn a_backlog_of_several_windows_is_merged_a_window_at_a_time() {
    let window = Duration::from_secs(2);
    let files = |times: &[Option<u64>]| -> Vec<LtxObject> {
        times
            .iter()
            .enumerate()
            .map(|(i, t)| at_seconds(0, i as u64 + 1, i as u64 + 1, *t))
            .collect()
    };
    let run = |objects: &[LtxObject]| {
        windows_of(&objects.iter().collect::<Vec<_>>(), window).map_or(objects.len(), |w| window_run(&w))
    };
    // Closed at 101 s, reopened at 110 s: two runs.
    let closed = files(&[Some(100), Some(101), Some(110), Some(111)]);
    assert_eq!(run(&closed), 2);
    assert_eq!(run(&closed[2..]), 2);
    // A window and the stragglers of the next: one run, as always.
    assert_eq!(run(&files(&[Some(100), Some(101), Some(102)])), 3);
    // Ten windows of compaction=off: one run each, the newest two together.
    let off: Vec<Option<u64>> = (0..10).map(|w| Some(100 + 2 * w)).collect();
    let off = files(&off);
    let mut rest = &off[..];
    let mut runs = Vec::new();
    while !rest.is_empty() {
        let n = run(rest);
        runs.push(n);
        rest = &rest[n..];
    }
    assert_eq!(runs, [1, 1, 1, 1, 1, 1, 1, 1, 2]);
    // A store that gives no time: the old way, whole.
    assert_eq!(run(&files(&[Some(100), None, Some(200)])), 3);
    // An upload that finished a little out of order stays with its window.
    assert_eq!(run(&files(&[Some(101), Some(100), Some(120)])), 2);
}

/// The same through a compaction: each window's output ends where that window's files
/// end, so a restore to a time between them finds the state of that time.
#[test]
fn compaction_of_a_backlog_leaves_a_file_ending_at_each_window() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("replica");
    let mut c = compactor(
        "unused",
        dir.path(),
        CompactionConfig {
            levels: vec![Duration::from_secs(2)],
            ..CompactionConfig::default()
        },
    );
    c.store = open_store(&format!("file://{}", root.display()), &Default::default()).unwrap();
    put(&c, 0, 1, 1, ltx(1, 1, &[(1, 1), (2, 1)], 2, 1000));
    put(&c, 0, 2, 2, ltx(2, 2, &[(2, 2)], 2, 2000));
    put(&c, 0, 3, 3, ltx(3, 3, &[(2, 3)], 2, 3000));
    // The file store dates each file by its LTX timestamp; the first two were written an
    // hour before the third (the primary closed in between).
    let now = SystemTime::now();
    for entry in walk(&root) {
        let name = entry.file_name().unwrap().to_string_lossy().to_string();
        let at = match name.starts_with("0000000000000003-") {
            true => now,
            false => now - Duration::from_secs(3600),
        };
        fs::File::options()
            .write(true)
            .open(&entry)
            .unwrap()
            .set_modified(at)
            .unwrap();
    }
    let out = c.compact_level(1).unwrap().unwrap();
    assert_eq!(out.inputs, 3);
    assert_eq!(names(&c, 1), [(1, 2), (3, 3)]);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
