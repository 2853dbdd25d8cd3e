//! Restores through the whole pipeline (downloads, decoding threads, the pool that opens
//! sealed pages, the merge, the writer writing from the decoded batches) of small
//! replicas held in memory: the database written, and the database checksum the merge
//! adds up from the checksums the decoding threads computed.

use super::{restore, RestoreOptions, Target};
use crate::ltx::crypto::{OsEntropy, PrivateKey};
use crate::ltx::{Compression, DbChecksum, Encoder, Encoding, Header};
use crate::runtime::block_on;
use crate::storage::{open_store, ReplicaStore};
use bytes::Bytes;
use std::sync::Arc;

const PS: usize = 512;
/// More pages than a batch holds (256 of 512 bytes), so that the snapshot comes in
/// several batches and the writer writes from several buffers.
const COMMIT: u32 = 700;
/// More files than get threads of their own (16): the smallest decode in line.
const FILES: u64 = 20;

fn page(pgno: u32, txid: u64) -> Vec<u8> {
    (0..PS)
        .map(|i| (i as u64 * 7 + pgno as u64 * 13 + txid * 31) as u8)
        .collect()
}

/// The pages TXID `txid` writes: all of them for the snapshot (TXID 1), else a few.
fn changed(txid: u64) -> Vec<u32> {
    if txid == 1 {
        return (1..=COMMIT).collect();
    }
    (1..=COMMIT)
        .filter(|&p| (p as u64 + txid).is_multiple_of(37) || p as u64 == txid * 30)
        .collect()
}

/// A replica of a snapshot and `FILES - 1` later files (sealed to `key`, if any), and
/// the database it restores to. `lie` gives the last file a post-apply checksum that
/// its pages do not add up to (its file checksum made to match).
fn replica(name: &str, key: Option<&PrivateKey>, lie: bool) -> (Arc<dyn ReplicaStore>, Vec<u8>) {
    let store = open_store(&format!("memory://{name}"), &Default::default()).unwrap();
    let encoding = match key {
        Some(k) => Encoding::sealed(Compression::Lz4, &[k.public_key()]),
        None => Encoding::plain(Compression::Lz4),
    };
    let mut db = vec![0u8; COMMIT as usize * PS];
    let mut sum = DbChecksum::new();
    for txid in 1..=FILES {
        let header = Header {
            page_size: PS as u32,
            commit: COMMIT,
            min_txid: txid,
            max_txid: txid,
            timestamp_ms: 1_700_000_000_000 + txid as i64,
            pre_apply_checksum: if txid == 1 { 0 } else { sum.value() },
            ..Default::default()
        };
        let mut enc = Encoder::with_encoding(Vec::new(), header, &encoding).unwrap();
        for p in changed(txid) {
            let at = (p as usize - 1) * PS;
            if txid > 1 {
                sum.toggle_page(p, &db[at..at + PS]);
            }
            let new = page(p, txid);
            sum.toggle_page(p, &new);
            enc.write_page(p, &new).unwrap();
            db[at..at + PS].copy_from_slice(&new);
        }
        let post = if lie && txid == FILES {
            sum.value() ^ 2
        } else {
            sum.value()
        };
        let bytes = enc.finish(post).unwrap().0;
        block_on(store.put(0, txid, txid, Bytes::from(bytes), header.timestamp_ms)).unwrap();
    }
    (store, db)
}

fn restored(store: Arc<dyn ReplicaStore>, key: Option<&PrivateKey>) -> Result<Vec<u8>, String> {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("restored.db");
    let options = RestoreOptions {
        key: key.cloned().map(Arc::new),
        ..RestoreOptions::default()
    };
    restore(store, &dest, Target::Latest, &options)?;
    Ok(std::fs::read(&dest).unwrap())
}

#[test]
fn plaintext_and_encrypted_replicas_restore_to_the_same_pages() {
    let key = PrivateKey::generate(&mut OsEntropy::default()).unwrap();
    let (plain, want) = replica("restore-tests-plain", None, false);
    let (sealed, same) = replica("restore-tests-sealed", Some(&key), false);
    assert!(same == want);
    assert!(restored(plain, None).unwrap() == want, "plaintext");
    assert!(restored(sealed, Some(&key)).unwrap() == want, "encrypted");
}

#[test]
fn a_last_file_whose_checksum_the_pages_miss_fails_the_restore() {
    let key = PrivateKey::generate(&mut OsEntropy::default()).unwrap();
    for (name, key) in [
        ("restore-tests-lie-plain", None),
        ("restore-tests-lie-sealed", Some(&key)),
    ] {
        let (store, _) = replica(name, key, true);
        let err = restored(store, key).unwrap_err();
        assert!(err.contains("database checksum after merging"), "{name}: {err}");
    }
}

#[test]
fn a_restore_into_a_missing_directory_names_the_directory_not_the_temp_file() {
    let (store, _) = replica("restore-tests-nodir", None, false);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nodir");
    let dest = missing.join("x.db");
    let err = restore(store.clone(), &dest, Target::Latest, &RestoreOptions::default()).unwrap_err();
    assert_eq!(
        err,
        format!(
            "cannot restore to {}: the directory {} does not exist (create it first)",
            dest.display(),
            missing.display()
        )
    );
    assert!(!err.contains(".litestream-restore.tmp"));
    // A file where the directory should be.
    std::fs::write(&missing, b"").unwrap();
    let err = restore(store, &dest, Target::Latest, &RestoreOptions::default()).unwrap_err();
    assert!(
        err.ends_with(&format!("{} is not a directory", missing.display())),
        "{err}"
    );
}

/// Flips one byte in the middle of the level-0 file of `txid`.
fn damage(store: &Arc<dyn ReplicaStore>, txid: u64) {
    let mut bytes = block_on(store.get(0, txid, txid)).unwrap().to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    block_on(store.put(0, txid, txid, Bytes::from(bytes), 0)).unwrap();
}

/// A restore through a damaged file names that file (level, TXIDs, where it is) and
/// the newest TXID restorable without it, which then restores; not every file merged.
#[test]
fn a_damaged_file_is_named_with_the_newest_txid_restorable_without_it() {
    let (store, _) = replica("restore-tests-damaged", None, false);
    damage(&store, 7);
    let err = restored(store.clone(), None).unwrap_err();
    for said in [
        "level 0 file 0000000000000007-0000000000000007.ltx (TXIDs 7-7)",
        "ltx/0/0000000000000007-0000000000000007.ltx is damaged: ltx:",
        "the newest TXID restorable without it is 6: restore -txid 0000000000000006",
    ] {
        assert!(err.contains(said), "{said:?} not in {err}");
    }
    assert!(!err.contains("merging"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let at = restore(
        store,
        &dir.path().join("6.db"),
        Target::Txid(6),
        &RestoreOptions::default(),
    )
    .unwrap();
    assert_eq!(at.position.txid, 6);
}

/// The snapshot every plan starts from, damaged: nothing restores without it.
#[test]
fn a_damaged_snapshot_leaves_no_txid_restorable() {
    let (store, _) = replica("restore-tests-damaged-snapshot", None, false);
    damage(&store, 1);
    let err = restored(store, None).unwrap_err();
    assert!(
        err.contains("0000000000000001-0000000000000001.ltx (TXIDs 1-1)")
            && err.contains("is damaged")
            && err.contains("restorable without it: none"),
        "{err}"
    );
}
