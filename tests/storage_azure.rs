//! ReplicaStore against a real Azure Blob API (Azurite), and layout interop with the real
//! `litestream` 0.5.17 binary writing to the same server.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use common::azurite::{Azurite, ACCOUNT, ACCOUNT_KEY};
use common::litestream::{self, LitestreamTarget};
use litestream_vfs::storage::{
    format_rfc3339_nano, open_store_with_env, Error, ReplicaStore, StoreOptions, AZURE_TIMESTAMP_METADATA,
};

/// Our store on `url`, with Azurite's key and nothing from the process environment.
fn open(url: &str) -> Arc<dyn ReplicaStore> {
    open_with_key(url, ACCOUNT_KEY)
}

fn open_with_key(url: &str, key: &str) -> Arc<dyn ReplicaStore> {
    let env: HashMap<&str, String> = HashMap::from([("LITESTREAM_AZURE_ACCOUNT_KEY", key.to_string())]);
    open_store_with_env(url, &StoreOptions::default(), &|k| env.get(k).cloned()).unwrap()
}

fn ltx_blob(timestamp_ms: i64, fill: u8, len: usize) -> Bytes {
    let mut b = vec![fill; len.max(100)];
    b[..4].copy_from_slice(b"LTX1");
    b[32..40].copy_from_slice(&timestamp_ms.to_be_bytes());
    Bytes::from(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_operations_against_azurite() {
    let az = Azurite::start();
    az.create_container("ops");
    let store = open(&az.url("ops", "app/db"));
    assert_eq!(store.describe(), az.url("ops", "app/db"));

    assert!(
        store.list(0).await.unwrap().is_empty(),
        "a level that does not exist yet is empty"
    );
    let ts = 1_700_000_000_120; // formats with a trimmed fraction: ...20.12Z
    store.put_new(0, 2, 3, ltx_blob(ts, b'b', 5000), ts).await.unwrap();
    store
        .put_new(0, 1, 1, ltx_blob(ts - 5, b'a', 4000), ts - 5)
        .await
        .unwrap();
    store.put_new(9, 1, 3, ltx_blob(ts, b's', 6000), ts).await.unwrap();
    // A name that sorts after the others as text but not by TXID would come first in the
    // listing if we trusted the server's (lexical) order; TXIDs are fixed width so they agree.
    store.put_new(0, 0x10, 0x10, ltx_blob(ts, b'c', 100), ts).await.unwrap();

    // Keys are Litestream's layout for every non-S3 store: <path>/ltx/<level>/<name>.
    let mut keys = az.list_blobs("ops", "");
    keys.sort();
    assert_eq!(
        keys,
        [
            "app/db/ltx/0/0000000000000001-0000000000000001.ltx",
            "app/db/ltx/0/0000000000000002-0000000000000003.ltx",
            "app/db/ltx/0/0000000000000010-0000000000000010.ltx",
            "app/db/ltx/9/0000000000000001-0000000000000003.ltx",
        ]
    );

    // LIST: sorted, sized, per level.
    let l0 = store.list(0).await.unwrap();
    assert_eq!(
        l0.iter()
            .map(|f| (f.level, f.min_txid, f.max_txid, f.size))
            .collect::<Vec<_>>(),
        [(0, 1, 1, 4000), (0, 2, 3, 5000), (0, 0x10, 0x10, 100)]
    );
    assert!(l0.iter().all(|f| f.last_modified.is_some()));
    let l9 = store.list(9).await.unwrap();
    assert_eq!(
        l9.iter().map(|f| (f.level, f.min_txid, f.max_txid)).collect::<Vec<_>>(),
        [(9, 1, 3)]
    );
    assert!(store.list(1).await.unwrap().is_empty());
    store.delete(0, 0x10, 0x10).await.unwrap();

    // GET and real ranged GETs, exact to the byte.
    let whole = store.get(0, 2, 3).await.unwrap();
    assert_eq!(whole, ltx_blob(ts, b'b', 5000));
    assert_eq!(
        store.get_range(0, 2, 3, 4000..4100).await.unwrap(),
        whole.slice(4000..4100)
    );
    assert_eq!(store.get_range(0, 2, 3, 0..40).await.unwrap(), whole.slice(0..40));
    assert_eq!(
        store.get_range(0, 2, 3, 4999..5000).await.unwrap(),
        whole.slice(4999..5000)
    );
    assert_eq!(store.get_range(0, 2, 3, 7..7).await.unwrap(), Bytes::new());
    assert!(store.get_range(0, 2, 3, 4990..5010).await.is_err(), "past the end");
    assert!(
        store.get_range(0, 2, 3, 5000..5001).await.is_err(),
        "starting at the end"
    );
    assert!(store.get(0, 7, 7).await.unwrap_err().is_not_found());
    assert!(store.head(0, 7, 7).await.unwrap_err().is_not_found());

    // The timestamp metadata is on the blob under Litestream's abs key, formatted as
    // Litestream formats it.
    let blob = "/devstoreaccount1/ops/app/db/ltx/0/0000000000000002-0000000000000003.ltx";
    let head = az.raw("HEAD", blob, &[], b"");
    assert_eq!(head.status, 200);
    let meta = head
        .header(&format!("x-ms-meta-{AZURE_TIMESTAMP_METADATA}"))
        .unwrap_or_else(|| panic!("timestamp metadata missing: {:?}", head.headers));
    assert_eq!(AZURE_TIMESTAMP_METADATA, "litestreamtimestamp");
    assert_eq!(meta, "2023-11-14T22:13:20.12Z");
    assert_eq!(meta, format_rfc3339_nano(ts));
    assert_eq!(store.timestamp(0, 2, 3).await.unwrap(), ts);
    assert_eq!(store.timestamp(0, 1, 1).await.unwrap(), ts - 5);
    let h = store.head(0, 2, 3).await.unwrap();
    assert_eq!((h.level, h.min_txid, h.max_txid, h.size), (0, 2, 3, 5000));

    // Conditional create: Azure honours If-None-Match: * with 409 BlobAlreadyExists.
    let err = store.put_new(0, 2, 3, ltx_blob(ts, b'X', 5000), ts).await.unwrap_err();
    assert!(
        matches!(err, Error::AlreadyExists { .. }),
        "Azurite did not reject the second create: {err:?}"
    );
    assert!(err.to_string().contains("abs://devstoreaccount1@ops/app/db"), "{err}");
    assert_eq!(
        store.get(0, 2, 3).await.unwrap(),
        whole,
        "the losing writer changed nothing"
    );
    // Identical bytes: our own retry whose response was lost counts as success.
    store.put_new(0, 2, 3, whole.clone(), ts).await.unwrap();
    // And directly, without our identical-bytes check in the way.
    let raw = az.raw(
        "PUT",
        blob,
        &[("if-none-match", "*"), ("x-ms-blob-type", "BlockBlob")],
        b"other",
    );
    assert_eq!(
        raw.status,
        409,
        "Azurite answered {} to If-None-Match: * on an existing blob: {}",
        raw.status,
        raw.text()
    );

    // Overwrite (compaction outputs) keeps the metadata current.
    store
        .put(0, 2, 3, ltx_blob(ts + 1000, b'Y', 10), ts + 1000)
        .await
        .unwrap();
    assert_eq!(store.get(0, 2, 3).await.unwrap(), ltx_blob(ts + 1000, b'Y', 10));
    assert_eq!(store.timestamp(0, 2, 3).await.unwrap(), ts + 1000);
    // Delete, twice: deleting what is not there succeeds.
    store.delete(0, 2, 3).await.unwrap();
    store.delete(0, 2, 3).await.unwrap();
    assert!(store.get(0, 2, 3).await.unwrap_err().is_not_found());

    // A blob without the metadata (some other writer): the timestamp comes from the header.
    let plain = ltx_blob(ts - 77, b'p', 200);
    let r = az.raw(
        "PUT",
        "/devstoreaccount1/ops/app/db/ltx/1/0000000000000001-0000000000000001.ltx",
        &[("x-ms-blob-type", "BlockBlob")],
        &plain,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(store.timestamp(1, 1, 1).await.unwrap(), ts - 77);

    // Foreign objects in a level directory are skipped, never trusted.
    for junk in [
        "app/db/ltx/0/README",
        "app/db/ltx/0/0000000000000009-0000000000000002.ltx",
        "app/db/ltx/0/x/y.ltx",
        "app/db/ltx/00/0000000000000005-0000000000000005.ltx",
    ] {
        let r = az.raw(
            "PUT",
            &format!("/devstoreaccount1/ops/{junk}"),
            &[("x-ms-blob-type", "BlockBlob")],
            b"junk",
        );
        assert_eq!(r.status, 201, "{junk}: {}", r.text());
    }
    let l0 = store.list(0).await.unwrap();
    assert_eq!(
        l0.iter().map(|f| (f.min_txid, f.max_txid)).collect::<Vec<_>>(),
        [(1, 1)]
    );

    // Another path in the same container is another replica.
    let other = open(&az.url("ops", "app/other"));
    assert!(other.list(0).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_errors_are_typed() {
    let az = Azurite::start();
    az.create_container("present");

    // No such container: a clear, non-transient error that names the store.
    let store = open(&az.url("missing", "db"));
    let err = store.get(0, 1, 1).await.unwrap_err();
    assert!(!err.is_transient(), "{err:?}");
    let err = store.list(0).await.unwrap_err();
    assert!(!err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("abs://devstoreaccount1@missing/db"), "{err}");
    assert!(!err.to_string().contains(ACCOUNT_KEY), "{err}");

    // A wrong key (valid base64, wrong bytes): access denied, and the key is not in the message.
    let wrong = "d3Jvbmcta2V5LWZvci10aGUtZGV2LWFjY291bnQtMDEyMzQ1Njc4OWFiY2RlZg==";
    // object_store reports a failed LIST as a generic error carrying the status text (only
    // single-object requests come back as PermissionDenied), so a LIST is `Other` here.
    let err = open_with_key(&az.url("present", "db"), wrong)
        .list(0)
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("403"), "{err}");
    assert!(!err.to_string().contains(wrong), "{err}");
    let err = open_with_key(&az.url("present", "db"), wrong)
        .get(0, 1, 1)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Denied { .. }), "{err:?}");
    let err = open_with_key(&az.url("present", "db"), wrong)
        .put_new(0, 1, 1, ltx_blob(1, b'a', 100), 1)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Denied { .. }), "{err:?}");

    // Nothing listening: transient.
    let port = common::server::free_port();
    let url = format!("abs://{ACCOUNT}@c/db?endpoint=http://127.0.0.1:{port}/{ACCOUNT}");
    let err = open(&url).list(0).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");

    // No key at all: refused at open, naming what to set.
    let err = open_store_with_env(&az.url("present", "db"), &StoreOptions::default(), &|_| None).unwrap_err();
    assert!(err.to_string().contains("LITESTREAM_AZURE_ACCOUNT_KEY"), "{err}");
}

/// The real `litestream` 0.5.17 replicates a database to Azurite; we find and read its files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_what_litestream_wrote() {
    let az = Azurite::start();
    az.create_container("interop");
    let store = open(&az.url("interop", "app"));
    litestream::reads_what_litestream_wrote(LitestreamTarget {
        replicate: &|cmd, db, dir| {
            let config = litestream_config(dir, db, &az, "interop", "app");
            cmd.arg("-config")
                .arg(config)
                .env("LITESTREAM_AZURE_ACCOUNT_KEY", ACCOUNT_KEY);
        },
        store: store.as_ref(),
        list_keys: &|| az.list_blobs("interop", ""),
        head: &|key| az.raw("HEAD", &format!("/{ACCOUNT}/interop/{key}"), &[], b""),
        ltx_key: |level, min, max| format!("app/ltx/{level}/{min:016x}-{max:016x}.ltx"),
        key_prefix: "app/ltx/",
        meta_prefix: "x-ms-meta-",
        timestamp_header: "x-ms-meta-litestreamtimestamp",
        bucket_word: "container",
        second_sql: "INSERT INTO t VALUES (4);",
        log_tail: &|| az.log_tail(),
    })
    .await;
}

/// A litestream.yml replicating `db` to `container/path` on Azurite. Litestream 0.5.17 takes
/// an Azure endpoint only from the config file (`endpoint:`), not from an `abs://` URL's
/// query, so the real binary is always driven through a config file here.
pub fn litestream_config(dir: &Path, db: &Path, az: &Azurite, container: &str, path: &str) -> PathBuf {
    let config = dir.join("litestream.yml");
    std::fs::write(
        &config,
        format!(
            "dbs:\n  - path: {}\n    replica:\n      type: abs\n      account-name: {ACCOUNT}\n      \
             bucket: {container}\n      path: {path}\n      endpoint: {}\n      sync-interval: 100ms\n",
            db.display(),
            az.endpoint
        ),
    )
    .unwrap();
    config
}

/// With a 5 MiB threshold, a 12 MiB file goes up as three committed blocks (Azurite's
/// block list says so) with its timestamp metadata, reads back equal, and a second
/// conditional create of the name with other bytes is refused while the same bytes
/// (our own earlier attempt) succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_files_go_up_as_blocks() {
    let az = Azurite::start();
    az.create_container("blocks");
    let env: HashMap<&str, String> = HashMap::from([
        ("LITESTREAM_AZURE_ACCOUNT_KEY", ACCOUNT_KEY.to_string()),
        ("LITESTREAM_MULTIPART_THRESHOLD", "5MiB".to_string()),
        ("LITESTREAM_MULTIPART_PART_SIZE", "5MiB".to_string()),
    ]);
    let store = open_store_with_env(&az.url("blocks", "app"), &StoreOptions::default(), &|k| {
        env.get(k).cloned()
    })
    .unwrap();
    let ts = 1_700_000_000_250;
    let ours = ltx_blob(ts, b'x', 12 << 20);
    store.put_new(0, 1, 9, ours.clone(), ts).await.unwrap();
    assert_eq!(store.get(0, 1, 9).await.unwrap(), ours);
    assert_eq!(store.timestamp(0, 1, 9).await.unwrap(), ts, "metadata kept");

    let blob = format!("/{ACCOUNT}/blocks/app/ltx/0/0000000000000001-0000000000000009.ltx");
    let list = az.raw(
        "GET",
        &format!("{blob}?comp=blocklist&blocklisttype=committed"),
        &[],
        b"",
    );
    assert_eq!(list.status, 200, "{}", list.text());
    assert_eq!(list.text().matches("<Block>").count(), 3, "{}", list.text());

    store.put_new(0, 1, 9, ours.clone(), ts).await.unwrap();
    let err = store
        .put_new(0, 1, 9, ltx_blob(ts, b'y', 12 << 20), ts)
        .await
        .unwrap_err();
    assert!(err.is_already_exists(), "{err:?}");
    assert_eq!(store.get(0, 1, 9).await.unwrap(), ours);
}
