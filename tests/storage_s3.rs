//! ReplicaStore against a real S3 API (moto_server), and layout interop with the real
//! `litestream` 0.5.17 binary writing to the same server.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use common::litestream::{self, LitestreamTarget};
use common::moto::{Moto, ACCESS_KEY_ID, SECRET_ACCESS_KEY};
use litestream_vfs::storage::{
    format_rfc3339_nano, open_store_with_env, Error, ReplicaStore, StoreOptions, S3_TIMESTAMP_METADATA,
};

/// Our store on `url`, with moto's credentials and nothing from the process environment
/// (which may carry AWS_CA_BUNDLE, AWS_PROFILE, ...).
fn open(url: &str) -> Arc<dyn ReplicaStore> {
    let env: HashMap<&str, &str> = HashMap::from([
        ("LITESTREAM_ACCESS_KEY_ID", ACCESS_KEY_ID),
        ("LITESTREAM_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
    ]);
    open_store_with_env(url, &StoreOptions::default(), &|k| env.get(k).map(|v| v.to_string())).unwrap()
}

fn ltx_blob(timestamp_ms: i64, fill: u8, len: usize) -> Bytes {
    let mut b = vec![fill; len.max(100)];
    b[..4].copy_from_slice(b"LTX1");
    b[32..40].copy_from_slice(&timestamp_ms.to_be_bytes());
    Bytes::from(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_operations_against_moto() {
    let moto = Moto::start();
    moto.create_bucket("ops");
    let store = open(&moto.url("ops", "app/db"));

    assert!(store.list(0).await.unwrap().is_empty());
    let ts = 1_700_000_000_120; // formats with a trimmed fraction: ...20.12Z
    store.put_new(0, 2, 3, ltx_blob(ts, b'b', 5000), ts).await.unwrap();
    store
        .put_new(0, 1, 1, ltx_blob(ts - 5, b'a', 4000), ts - 5)
        .await
        .unwrap();
    store.put_new(9, 1, 3, ltx_blob(ts, b's', 6000), ts).await.unwrap();

    // Keys are Litestream's S3 layout: <path>/<level %04x>/<name>, no "ltx/" directory.
    let mut keys = moto.list_keys("ops", "");
    keys.sort();
    assert_eq!(
        keys,
        [
            "app/db/0000/0000000000000001-0000000000000001.ltx",
            "app/db/0000/0000000000000002-0000000000000003.ltx",
            "app/db/0009/0000000000000001-0000000000000003.ltx",
        ]
    );

    // LIST: sorted, sized, per level.
    let l0 = store.list(0).await.unwrap();
    assert_eq!(
        l0.iter().map(|f| (f.min_txid, f.max_txid, f.size)).collect::<Vec<_>>(),
        [(1, 1, 4000), (2, 3, 5000)]
    );
    assert_eq!(store.list(9).await.unwrap().len(), 1);
    assert!(store.list(1).await.unwrap().is_empty());

    // GET and a real ranged GET.
    let whole = store.get(0, 2, 3).await.unwrap();
    assert_eq!(whole, ltx_blob(ts, b'b', 5000));
    assert_eq!(
        store.get_range(0, 2, 3, 4000..4100).await.unwrap(),
        whole.slice(4000..4100)
    );
    assert_eq!(store.get_range(0, 2, 3, 0..40).await.unwrap(), whole.slice(0..40));
    assert!(store.get_range(0, 2, 3, 4990..5010).await.is_err(), "past the end");
    assert!(store.get(0, 7, 7).await.unwrap_err().is_not_found());

    // The timestamp metadata is on the object, formatted as Litestream formats it.
    let head = moto.raw(
        "HEAD",
        "/ops/app/db/0000/0000000000000002-0000000000000003.ltx",
        &[],
        b"",
    );
    assert_eq!(head.status, 200);
    let meta = head
        .header(&format!("x-amz-meta-{S3_TIMESTAMP_METADATA}"))
        .expect("timestamp metadata");
    assert_eq!(meta, "2023-11-14T22:13:20.12Z");
    assert_eq!(meta, format_rfc3339_nano(ts));
    assert_eq!(store.timestamp(0, 2, 3).await.unwrap(), ts);
    assert_eq!(store.head(0, 2, 3).await.unwrap().size, 5000);

    // Conditional create: moto honours If-None-Match: *.
    let err = store.put_new(0, 2, 3, ltx_blob(ts, b'X', 5000), ts).await.unwrap_err();
    assert!(
        matches!(err, Error::AlreadyExists { .. }),
        "moto did not reject the second create: {err:?}"
    );
    assert_eq!(
        store.get(0, 2, 3).await.unwrap(),
        whole,
        "the losing writer changed nothing"
    );
    store.put_new(0, 2, 3, whole.clone(), ts).await.unwrap(); // identical bytes: our own retry
                                                              // And directly, without our identical-bytes check in the way.
    let raw = moto.raw(
        "PUT",
        "/ops/app/db/0000/0000000000000002-0000000000000003.ltx",
        &[("If-None-Match", "*")],
        b"other",
    );
    assert_eq!(
        raw.status, 412,
        "moto answered {} to If-None-Match: * on an existing key",
        raw.status
    );

    // Overwrite and delete.
    store.put(0, 2, 3, ltx_blob(ts, b'Y', 10), ts).await.unwrap();
    assert_eq!(store.get(0, 2, 3).await.unwrap(), ltx_blob(ts, b'Y', 10));
    store.delete(0, 2, 3).await.unwrap();
    store.delete(0, 2, 3).await.unwrap();
    assert!(store.get(0, 2, 3).await.unwrap_err().is_not_found());

    // Foreign objects in a level directory are skipped, never trusted.
    for junk in [
        "app/db/0000/README",
        "app/db/0000/0000000000000009-0000000000000002.ltx",
        "app/db/0000/x/y.ltx",
    ] {
        assert_eq!(moto.raw("PUT", &format!("/ops/{junk}"), &[], b"junk").status, 200);
    }
    let l0 = store.list(0).await.unwrap();
    assert_eq!(
        l0.iter().map(|f| (f.min_txid, f.max_txid)).collect::<Vec<_>>(),
        [(1, 1)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_errors_are_typed() {
    let moto = Moto::start();
    // No such bucket: a clear, non-transient error that names the store.
    let store = open(&moto.url("missing-bucket", "db"));
    let err = store.get(0, 1, 1).await.unwrap_err();
    assert!(!err.is_transient(), "{err:?}");
    let err = store.list(0).await.unwrap_err();
    assert!(err.to_string().contains("s3://missing-bucket/db"), "{err}");
    assert!(!err.to_string().contains(SECRET_ACCESS_KEY), "{err}");

    // Nothing listening: transient.
    let port = common::server::free_port();
    let url = format!("s3://b/db?endpoint=http://127.0.0.1:{port}&region=us-east-1");
    let err = open(&url).list(0).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}

/// The real `litestream` 0.5.17 replicates a database to moto; we find and read its files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_what_litestream_wrote() {
    let moto = Moto::start();
    moto.create_bucket("interop");
    let url = moto.url("interop", "app");
    let store = open(&url);
    litestream::reads_what_litestream_wrote(LitestreamTarget {
        replicate: &|cmd, db, _| {
            cmd.arg(db)
                .arg(&url)
                .env_remove("AWS_CA_BUNDLE")
                .env_remove("AWS_ACCESS_KEY_ID")
                .env_remove("AWS_SECRET_ACCESS_KEY")
                .env_remove("AWS_SESSION_TOKEN")
                .env_remove("AWS_PROFILE")
                .env_remove("AWS_ENDPOINT_URL")
                .env_remove("AWS_REGION")
                .env("LITESTREAM_ACCESS_KEY_ID", ACCESS_KEY_ID)
                .env("LITESTREAM_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY);
        },
        store: store.as_ref(),
        list_keys: &|| moto.list_keys("interop", ""),
        head: &|key| moto.raw("HEAD", &format!("/interop/{key}"), &[], b""),
        // S3 keys have no "ltx/" directory and a %04x level.
        ltx_key: |level, min, max| format!("app/{level:04x}/{min:016x}-{max:016x}.ltx"),
        key_prefix: "app/",
        meta_prefix: "x-amz-meta-",
        timestamp_header: "x-amz-meta-litestream-timestamp",
        bucket_word: "bucket",
        second_sql: "INSERT INTO t VALUES (4);",
        log_tail: &|| moto.log_tail(),
    })
    .await;
}
