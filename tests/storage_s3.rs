//! ReplicaStore against a real S3 API (moto_server), and layout interop with the real
//! `litestream` 0.5.17 binary writing to the same server.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::moto::{Moto, ACCESS_KEY_ID, SECRET_ACCESS_KEY};
use litestream_vfs::storage::{
    format_rfc3339_nano, open_store_with_env, parse_rfc3339_ms, Error, ReplicaStore, StoreOptions,
    S3_TIMESTAMP_METADATA,
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
    let port = common::moto::free_port();
    let url = format!("s3://b/db?endpoint=http://127.0.0.1:{port}&region=us-east-1");
    let err = open(&url).list(0).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}

/// The real `litestream` 0.5.17 replicates a database to moto; we find and read its files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_what_litestream_wrote() {
    let litestream = litestream_path();
    let moto = Moto::start();
    moto.create_bucket("interop");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    sqlite(
        &db,
        "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3);",
    );

    let url = moto.url("interop", "app");
    let mut child = Command::new(&litestream)
        .args(["replicate", db.to_str().unwrap(), &url])
        .env_remove("AWS_CA_BUNDLE")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_REGION")
        .env("LITESTREAM_ACCESS_KEY_ID", ACCESS_KEY_ID)
        .env("LITESTREAM_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start litestream");

    // Wait for its first sync, then one more transaction and its sync.
    let store = open(&url);
    let found = wait_for(|| async { store.list(0).await.map(|l| !l.is_empty()).unwrap_or(false) }).await;
    if found {
        sqlite(&db, "INSERT INTO t VALUES (4);");
        wait_for(|| async { store.list(0).await.map(|l| l.len() >= 2).unwrap_or(false) }).await;
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let out = wait_output(&mut child, Duration::from_secs(20));
    assert!(
        found,
        "litestream wrote nothing to level 0 within the time limit; its output:\n{out}"
    );

    // Every key it wrote, and the timestamp metadata on each.
    let keys = moto.list_keys("interop", "");
    eprintln!("litestream wrote {} keys:", keys.len());
    for k in &keys {
        let head = moto.raw("HEAD", &format!("/interop/{k}"), &[], b"");
        let meta: Vec<String> = head
            .headers
            .iter()
            .filter(|(n, _)| n.starts_with("x-amz-meta-"))
            .map(|(n, v)| format!("{n}: {v}"))
            .collect();
        eprintln!("  {k}  size={:?}  {}", head.header("content-length"), meta.join(", "));
        assert!(k.starts_with("app/"), "unexpected key {k}");
    }

    // Each level litestream used is listed by us, and each file reads back whole.
    let mut total = 0;
    for level in 0..=9u8 {
        for f in store.list(level).await.unwrap() {
            total += 1;
            let key = format!("app/{level:04x}/{:016x}-{:016x}.ltx", f.min_txid, f.max_txid);
            assert!(keys.contains(&key), "{key} listed by us but not in the bucket");
            let body = store.get(level, f.min_txid, f.max_txid).await.unwrap();
            assert_eq!(body.len() as u64, f.size);
            assert_eq!(&body[..4], b"LTX1", "{key}");
            // The metadata litestream wrote parses to the header timestamp.
            let header_ts = i64::from_be_bytes(body[32..40].try_into().unwrap());
            assert_eq!(
                store.timestamp(level, f.min_txid, f.max_txid).await.unwrap(),
                header_ts,
                "{key}"
            );
            let head = moto.raw("HEAD", &format!("/interop/{key}"), &[], b"");
            let meta = head
                .header("x-amz-meta-litestream-timestamp")
                .expect("litestream-timestamp metadata");
            assert_eq!(parse_rfc3339_ms(meta), Some(header_ts), "{key}: {meta}");
            assert_eq!(
                meta,
                format_rfc3339_nano(header_ts),
                "{key}: our formatting differs from Litestream's"
            );
        }
    }
    let ltx_keys = keys.iter().filter(|k| k.ends_with(".ltx")).count();
    assert_eq!(
        total, ltx_keys,
        "we listed {total} LTX files, the bucket has {ltx_keys}: {keys:?}"
    );
}

fn litestream_path() -> PathBuf {
    let p = std::env::var_os("LITESTREAM_BIN")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/litestream"));
    assert!(
        p.is_file(),
        "litestream not found at {} (set LITESTREAM_BIN or run make setup)",
        p.display()
    );
    p
}

fn sqlite(db: &Path, sql: &str) {
    let out = Command::new("/usr/bin/sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("run /usr/bin/sqlite3");
    assert!(
        out.status.success(),
        "sqlite3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `cond` every 200 ms for up to 30 s.
async fn wait_for<F, Fut>(mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Waits for the child to exit (killing it after `limit`) and returns its output.
fn wait_output(child: &mut std::process::Child, limit: Duration) -> String {
    let start = Instant::now();
    while child.try_wait().ok().flatten().is_none() && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let mut text = String::new();
    for pipe in [
        child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read>),
        child.stderr.take().map(|p| Box::new(p) as Box<dyn std::io::Read>),
    ]
    .into_iter()
    .flatten()
    {
        let mut p = pipe;
        let _ = p.read_to_string(&mut text);
    }
    text
}
