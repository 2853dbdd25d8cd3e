//! The real `litestream` 0.5.17 against the storage fixtures: running it, and checking that
//! what it replicated reads back through our store exactly as the server holds it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use litestream_vfs::storage::{format_rfc3339_nano, parse_rfc3339_ms, ReplicaStore};

use super::http::Response;
pub use super::tools::litestream_path;

/// Runs `sql` on `db` with `/usr/bin/sqlite3` (no extension); panics if it fails.
pub fn sqlite(db: &Path, sql: &str) {
    sqlite_out(db, sql);
}

/// Like [`sqlite`], returning stdout.
pub fn sqlite_out(db: &Path, sql: &str) -> String {
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
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `cond` every 200 ms for up to 30 s.
pub async fn wait_for<F, Fut>(mut cond: F) -> bool
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
pub fn wait_output(child: &mut Child, limit: Duration) -> String {
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

/// One store's side of [`reads_what_litestream_wrote`]: how the real litestream is pointed at
/// it, and how the test sees the server's contents without our code in the way. Litestream
/// replicates to path `app` of the bucket.
pub struct LitestreamTarget<'a> {
    /// Adds the replica destination and environment to `litestream replicate`, given the
    /// database and the temporary directory it is in.
    pub replicate: &'a dyn Fn(&mut Command, &Path, &Path),
    /// Our store on that replica.
    pub store: &'a dyn ReplicaStore,
    /// Every key in the bucket, as the server lists it.
    pub list_keys: &'a dyn Fn() -> Vec<String>,
    /// The server's answer to a HEAD of one key.
    pub head: &'a dyn Fn(&str) -> Response,
    /// Litestream's key for LTX file `(level, min_txid, max_txid)`.
    pub ltx_key: fn(u8, u64, u64) -> String,
    /// The prefix every key litestream writes starts with.
    pub key_prefix: &'a str,
    /// The prefix of custom-metadata response headers (`x-amz-meta-`, ...).
    pub meta_prefix: &'a str,
    /// The response header with Litestream's timestamp metadata.
    pub timestamp_header: &'a str,
    /// What messages call the bucket ("bucket", "container").
    pub bucket_word: &'a str,
    /// The transaction written once litestream has synced the first.
    pub second_sql: &'a str,
    /// The end of the server's log, for failure messages.
    pub log_tail: &'a dyn Fn() -> String,
}

/// The database the real litestream replicated (kept for later checks).
pub struct Replicated {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
}

/// The real `litestream` replicates a new database to `t`'s store, then one more transaction;
/// then every key it wrote is accounted for: each LTX file is listed by our store at its
/// level, reads back whole and starts like LTX, and its timestamp (ours, and the metadata
/// Litestream wrote, parsed and formatted our way) is the one in its header.
pub async fn reads_what_litestream_wrote(t: LitestreamTarget<'_>) -> Replicated {
    let litestream = litestream_path();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    sqlite(
        &db,
        "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3);",
    );

    let mut cmd = Command::new(&litestream);
    cmd.arg("replicate");
    (t.replicate)(&mut cmd, &db, dir.path());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start litestream");

    // Wait for its first sync, then one more transaction and its sync.
    let store = t.store;
    let found = wait_for(|| async { store.list(0).await.map(|l| !l.is_empty()).unwrap_or(false) }).await;
    if found {
        sqlite(&db, t.second_sql);
        wait_for(|| async { store.list(0).await.map(|l| l.len() >= 2).unwrap_or(false) }).await;
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let out = wait_output(&mut child, Duration::from_secs(20));
    assert!(
        found,
        "litestream wrote nothing to level 0 within the time limit; its output:\n{out}\nserver log:\n{}",
        (t.log_tail)()
    );

    // Every key it wrote, and the metadata on each.
    let keys = (t.list_keys)();
    eprintln!("litestream wrote {} keys:", keys.len());
    for k in &keys {
        let head = (t.head)(k);
        let meta: Vec<String> = head
            .headers
            .iter()
            .filter(|(n, _)| n.starts_with(t.meta_prefix))
            .map(|(n, v)| format!("{n}: {v}"))
            .collect();
        eprintln!("  {k}  size={:?}  {}", head.header("content-length"), meta.join(", "));
        assert!(k.starts_with(t.key_prefix), "unexpected key {k}");
    }

    // Each level litestream used is listed by us, and each file reads back whole.
    let mut total = 0;
    for level in 0..=9u8 {
        for f in store.list(level).await.unwrap() {
            total += 1;
            let key = (t.ltx_key)(level, f.min_txid, f.max_txid);
            assert!(
                keys.contains(&key),
                "{key} listed by us but not in the {}",
                t.bucket_word
            );
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
            let head = (t.head)(&key);
            let meta = head
                .header(t.timestamp_header)
                .unwrap_or_else(|| panic!("{key}: no {} metadata: {:?}", t.timestamp_header, head.headers));
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
        "we listed {total} LTX files, the {} has {ltx_keys}: {keys:?}",
        t.bucket_word
    );
    Replicated { dir, db }
}
