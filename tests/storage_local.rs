//! ReplicaStore behaviour on the in-process backends: `memory://` and `file://`.

use std::sync::Arc;

use bytes::Bytes;
use litestream_vfs::storage::{format_name, open_store, Error, ReplicaStore, StoreOptions};

/// Bytes that look like an LTX file as far as storage cares: magic, and the header
/// timestamp (i64 BE at offset 32), padded to `len`.
fn ltx_blob(timestamp_ms: i64, fill: u8, len: usize) -> Bytes {
    let mut b = vec![fill; len.max(100)];
    b[..4].copy_from_slice(b"LTX1");
    b[32..40].copy_from_slice(&timestamp_ms.to_be_bytes());
    Bytes::from(b)
}

fn memory(name: &str) -> Arc<dyn ReplicaStore> {
    open_store(&format!("memory://{name}/db"), &StoreOptions::default()).unwrap()
}

fn file(dir: &std::path::Path) -> Arc<dyn ReplicaStore> {
    open_store(&format!("file://{}", dir.display()), &StoreOptions::default()).unwrap()
}

/// The behaviour every backend must have.
async fn exercise(store: &dyn ReplicaStore) {
    assert!(store.list(0).await.unwrap().is_empty(), "a fresh level is empty");

    // Out of order on purpose: list sorts by TXID.
    for (min, max, fill) in [(5, 9, b'c'), (1, 1, b'a'), (2, 4, b'b')] {
        store
            .put_new(
                0,
                min,
                max,
                ltx_blob(1_000 * min as i64, fill, 300 + min as usize),
                1_000 * min as i64,
            )
            .await
            .unwrap();
    }
    let files = store.list(0).await.unwrap();
    let ids: Vec<(u64, u64)> = files.iter().map(|f| (f.min_txid, f.max_txid)).collect();
    assert_eq!(ids, [(1, 1), (2, 4), (5, 9)]);
    assert!(files.iter().all(|f| f.level == 0 && f.size == 300 + f.min_txid));
    assert!(files.iter().all(|f| f.last_modified.is_some()));
    assert!(store.list(1).await.unwrap().is_empty(), "levels are separate");

    // Whole and ranged reads.
    let whole = store.get(0, 2, 4).await.unwrap();
    assert_eq!(whole, ltx_blob(2_000, b'b', 302));
    assert_eq!(store.get_range(0, 2, 4, 30..45).await.unwrap(), whole.slice(30..45));
    assert_eq!(store.get_range(0, 2, 4, 0..302).await.unwrap(), whole);
    assert!(store.get_range(0, 2, 4, 7..7).await.unwrap().is_empty());
    assert!(
        store.get_range(0, 2, 4, 300..400).await.is_err(),
        "a range past the end is an error"
    );
    let head = store.head(0, 2, 4).await.unwrap();
    assert_eq!((head.level, head.min_txid, head.max_txid, head.size), (0, 2, 4, 302));

    // The header timestamp comes back (from metadata or from the header itself).
    assert_eq!(store.timestamp(0, 5, 9).await.unwrap(), 5_000);

    // Conditional create: a different object at the same name is another writer...
    let err = store.put_new(0, 1, 1, ltx_blob(1, b'z', 300), 1).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
    assert!(err.to_string().contains(&format_name(1, 1)), "{err}");
    assert_eq!(
        store.get(0, 1, 1).await.unwrap(),
        ltx_blob(1_000, b'a', 301),
        "the loser changed nothing"
    );
    // ...while our own identical bytes (a retry after a lost response) are success.
    store.put_new(0, 1, 1, ltx_blob(1_000, b'a', 301), 1_000).await.unwrap();

    // Plain put overwrites (compaction outputs).
    store.put(1, 1, 9, ltx_blob(9, b'x', 500), 9).await.unwrap();
    store.put(1, 1, 9, ltx_blob(9, b'y', 400), 9).await.unwrap();
    assert_eq!(store.get(1, 1, 9).await.unwrap(), ltx_blob(9, b'y', 400));
    assert_eq!(store.list(1).await.unwrap().len(), 1);

    // Delete, and delete again.
    store.delete(0, 2, 4).await.unwrap();
    store.delete(0, 2, 4).await.unwrap();
    assert!(store.get(0, 2, 4).await.unwrap_err().is_not_found());
    assert!(store.get_range(0, 2, 4, 0..1).await.unwrap_err().is_not_found());
    assert!(store.head(0, 2, 4).await.unwrap_err().is_not_found());
    assert_eq!(store.list(0).await.unwrap().len(), 2);

    // Snapshot level and a high level use their own directories.
    store.put_new(9, 1, 9, ltx_blob(9, b's', 200), 9).await.unwrap();
    assert_eq!(store.list(9).await.unwrap()[0].max_txid, 9);
}

/// Many writers race to create one name: exactly one wins and its bytes are what is stored.
async fn race(store: Arc<dyn ReplicaStore>) {
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let s = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            // Fill bytes from 1: a file ending in zeros is what a power cut leaves, and
            // the local store replaces it (see `a_torn_local_file_is_replaced_not_a_conflict`).
            (
                i,
                s.put_new(0, 100, 100, ltx_blob(i as i64, i + 1, 4096), i as i64).await,
            )
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (i, r) = t.await.unwrap();
        match r {
            Ok(()) => winners.push(i),
            Err(e) => assert!(e.is_already_exists(), "{e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let w = winners[0];
    assert_eq!(store.get(0, 100, 100).await.unwrap(), ltx_blob(w as i64, w + 1, 4096));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_behaves() {
    exercise(memory("behaves").as_ref()).await;
    race(memory("race")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_store_behaves() {
    let dir = tempfile::tempdir().unwrap();
    exercise(file(dir.path()).as_ref()).await;
    let dir = tempfile::tempdir().unwrap();
    race(file(dir.path())).await;
}

/// A power cut between object_store linking a file into place and our fsync leaves a
/// torn file under the final name that nobody acknowledged: the next conditional create
/// of that name replaces it instead of taking it for another writer's. A whole file of
/// another writer stays a conflict.
#[tokio::test]
async fn a_torn_local_file_is_replaced_not_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let store = file(dir.path());
    let level0 = dir.path().join("ltx/0");
    std::fs::create_dir_all(&level0).unwrap();
    let ours = ltx_blob(7, b'o', 600);
    for (name, torn) in [
        ((1, 1), vec![]),
        ((2, 2), vec![0u8; 4096]),
        ((3, 3), {
            let mut b = ltx_blob(3, b'h', 4096).to_vec();
            b[1024..].fill(0); // written back up to a page boundary only
            b
        }),
    ] {
        std::fs::write(level0.join(format_name(name.0, name.1)), &torn).unwrap();
        store.put_new(0, name.0, name.1, ours.clone(), 7).await.unwrap();
        assert_eq!(store.get(0, name.0, name.1).await.unwrap(), ours, "{name:?}");
    }
    std::fs::write(level0.join(format_name(4, 4)), ltx_blob(4, b'w', 600)).unwrap();
    let err = store.put_new(0, 4, 4, ours.clone(), 7).await.unwrap_err();
    assert!(err.is_already_exists(), "{err:?}");
}

#[tokio::test]
async fn memory_stores_are_shared_by_name() {
    let primary = memory("shared");
    let replica = memory("shared");
    let other = memory("not-shared");
    primary.put_new(0, 1, 1, ltx_blob(1, 1, 100), 1).await.unwrap();
    assert_eq!(replica.list(0).await.unwrap().len(), 1);
    assert!(other.list(0).await.unwrap().is_empty());
}

#[tokio::test]
async fn file_layout_is_litestreams() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("replica");
    let store = file(&root);
    store.put_new(0, 1, 2, ltx_blob(1, 1, 100), 1).await.unwrap();
    store.put_new(9, 1, 2, ltx_blob(1, 1, 100), 1).await.unwrap();
    store.put(10, 3, 3, ltx_blob(1, 1, 100), 1).await.unwrap();
    for rel in [
        "ltx/0/0000000000000001-0000000000000002.ltx",
        "ltx/9/0000000000000001-0000000000000002.ltx",
        "ltx/10/0000000000000003-0000000000000003.ltx",
    ] {
        assert!(root.join(rel).is_file(), "{rel} missing");
    }
    // Nothing else: no staging files left behind, no metadata side files.
    let mut all = Vec::new();
    walk(&root, &mut all);
    assert_eq!(all.len(), 3, "{all:?}");
}

#[tokio::test]
async fn file_listing_skips_foreign_names() {
    let dir = tempfile::tempdir().unwrap();
    let store = file(dir.path());
    store.put_new(0, 1, 1, ltx_blob(1, 1, 100), 1).await.unwrap();
    let level = dir.path().join("ltx/0");
    for junk in [
        "0000000000000001-00000000000000FF.ltx", // uppercase hex
        "0000000000000009-0000000000000002.ltx", // min > max
        "000000000000001-0000000000000002.ltx",  // short
        "0000000000000001-0000000000000002.ltx.tmp",
        "0000000000000003-0000000000000003.ltx#1", // a staging file
        "README",
    ] {
        std::fs::write(level.join(junk), b"junk").unwrap();
    }
    std::fs::create_dir(level.join("0000000000000004-0000000000000004.ltx")).unwrap(); // a directory
    let files = store.list(0).await.unwrap();
    assert_eq!(
        files.iter().map(|f| (f.min_txid, f.max_txid)).collect::<Vec<_>>(),
        [(1, 1)]
    );
}

#[tokio::test]
async fn file_timestamp_comes_from_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let store = file(dir.path());
    // The argument timestamp is only metadata; the file has none, so the header decides.
    store.put_new(0, 1, 1, ltx_blob(1_234_567, 1, 100), 42).await.unwrap();
    assert_eq!(store.timestamp(0, 1, 1).await.unwrap(), 1_234_567);
    std::fs::write(
        dir.path().join("ltx/0/0000000000000002-0000000000000002.ltx"),
        vec![0u8; 64],
    )
    .unwrap();
    let err = store.timestamp(0, 2, 2).await.unwrap_err();
    assert!(matches!(err, Error::InvalidData { .. }), "{err:?}");
}

fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}
