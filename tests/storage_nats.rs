//! ReplicaStore against a real NATS server with JetStream (Debian's nats-server), checked
//! with async-nats' own object store implementation, which knows nothing of our code.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::jetstream::object_store::{ObjectMetadata, ObjectStore};
use bytes::Bytes;
use common::nats::{patterned, Nats};
use litestream_vfs::storage::{
    format_rfc3339_nano, open_store_with_env, Error, ReplicaStore, StoreOptions, NATS_TIMESTAMP_HEADER,
};
use tokio::io::AsyncReadExt;

/// Our store on `url`, with nothing from the process environment.
fn open(url: &str) -> Arc<dyn ReplicaStore> {
    open_with(url, &[])
}

fn open_with(url: &str, env: &[(&str, &str)]) -> Arc<dyn ReplicaStore> {
    let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    open_store_with_env(url, &StoreOptions::default(), &|k| env.get(k).cloned()).unwrap()
}

/// The bucket as async-nats' object store sees it.
async fn bucket(nats: &Nats, name: &str) -> ObjectStore {
    let client = async_nats::connect(format!("127.0.0.1:{}", nats.port)).await.unwrap();
    async_nats::jetstream::new(client).get_object_store(name).await.unwrap()
}

async fn names(b: &ObjectStore) -> Vec<String> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    let mut list = b.list().await.unwrap();
    while let Some(info) = list.next().await {
        out.push(info.unwrap().name);
    }
    out.sort();
    out
}

async fn read(b: &ObjectStore, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    b.get(name).await.unwrap().read_to_end(&mut out).await.unwrap();
    out
}

fn ltx_blob(timestamp_ms: i64, fill: u8, len: usize) -> Bytes {
    let mut b = vec![fill; len.max(100)];
    b[..4].copy_from_slice(b"LTX1");
    b[32..40].copy_from_slice(&timestamp_ms.to_be_bytes());
    Bytes::from(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_operations_against_a_real_server() {
    let nats = Nats::start();
    let store = open(&nats.url("ops/app/db"));

    // The bucket does not exist yet: the first request creates it, and it is empty.
    assert!(store.list(0).await.unwrap().is_empty());
    let ts = 1_700_000_000_120;
    store.put_new(0, 2, 3, ltx_blob(ts, b'b', 5000), ts).await.unwrap();
    store
        .put_new(0, 1, 1, ltx_blob(ts - 5, b'a', 4000), ts - 5)
        .await
        .unwrap();
    store.put_new(9, 1, 3, ltx_blob(ts, b's', 300_000), ts).await.unwrap();

    // Object names are Litestream's `<path>/ltx/<level>/<name>`.
    let b = bucket(&nats, "ops").await;
    assert_eq!(
        names(&b).await,
        [
            "app/db/ltx/0/0000000000000001-0000000000000001.ltx",
            "app/db/ltx/0/0000000000000002-0000000000000003.ltx",
            "app/db/ltx/9/0000000000000001-0000000000000003.ltx",
        ]
    );
    // Another implementation reads our objects (chunks, size and digest agree), and sees the
    // timestamp header as Litestream writes it.
    let name = "app/db/ltx/0/0000000000000002-0000000000000003.ltx";
    assert_eq!(read(&b, name).await, ltx_blob(ts, b'b', 5000));
    let snapshot = "app/db/ltx/9/0000000000000001-0000000000000003.ltx";
    assert_eq!(read(&b, snapshot).await, ltx_blob(ts, b's', 300_000));
    let info = b.info(name).await.unwrap();
    let header = info
        .headers
        .as_ref()
        .and_then(|h| h.get(NATS_TIMESTAMP_HEADER))
        .map(|v| v.to_string());
    assert_eq!(header.as_deref(), Some("2023-11-14T22:13:20.12Z"));
    assert_eq!(header.unwrap(), format_rfc3339_nano(ts));
    assert_eq!(store.timestamp(0, 2, 3).await.unwrap(), ts);
    assert_eq!(store.head(0, 2, 3).await.unwrap().size, 5000);
    assert_eq!(store.head(9, 1, 3).await.unwrap().size, 300_000);

    // LIST: sorted, sized, per level.
    let l0 = store.list(0).await.unwrap();
    assert_eq!(
        l0.iter().map(|f| (f.min_txid, f.max_txid, f.size)).collect::<Vec<_>>(),
        [(1, 1, 4000), (2, 3, 5000)]
    );
    assert!(l0.iter().all(|f| f.last_modified.is_some()));
    assert_eq!(store.list(9).await.unwrap().len(), 1);
    assert!(store.list(1).await.unwrap().is_empty());

    // GET and ranged GETs, within one chunk and across the 128 KiB chunk boundaries.
    let whole = store.get(0, 2, 3).await.unwrap();
    assert_eq!(whole, ltx_blob(ts, b'b', 5000));
    assert_eq!(
        store.get_range(0, 2, 3, 4000..4100).await.unwrap(),
        whole.slice(4000..4100)
    );
    let snap = ltx_blob(ts, b's', 300_000);
    for r in [0..40, 131_000..132_000, 100..299_999, 262_100..300_000] {
        assert_eq!(
            store.get_range(9, 1, 3, r.clone()).await.unwrap(),
            snap.slice(r.start as usize..r.end as usize)
        );
    }
    assert!(store.get_range(0, 2, 3, 4990..5010).await.is_err(), "past the end");
    assert!(
        store.get_range(9, 1, 3, 299_990..300_010).await.is_err(),
        "past the end"
    );
    assert!(store.get(0, 7, 7).await.unwrap_err().is_not_found());
    assert!(store.get_range(0, 7, 7, 0..10).await.unwrap_err().is_not_found());

    // Conditional create: a different object loses and changes nothing; identical bytes
    // (our own retry after a lost answer) succeed.
    let err = store.put_new(0, 2, 3, ltx_blob(ts, b'X', 5000), ts).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
    assert_eq!(
        store.get(0, 2, 3).await.unwrap(),
        whole,
        "the losing writer changed nothing"
    );
    store.put_new(0, 2, 3, whole.clone(), ts).await.unwrap();
    assert_eq!(names(&b).await.len(), 3);

    // Overwrite (with a cached chunk map in place), delete, create again over the deletion.
    store.get_range(9, 1, 3, 0..10).await.unwrap();
    store.put(9, 1, 3, ltx_blob(ts, b'Y', 200_000), ts).await.unwrap();
    assert_eq!(
        store.get_range(9, 1, 3, 150_000..150_010).await.unwrap(),
        ltx_blob(ts, b'Y', 200_000).slice(150_000..150_010)
    );
    store.delete(9, 1, 3).await.unwrap();
    store.delete(9, 1, 3).await.unwrap();
    assert!(store.get(9, 1, 3).await.unwrap_err().is_not_found());
    assert!(store.get_range(9, 1, 3, 0..10).await.unwrap_err().is_not_found());
    assert!(store.list(9).await.unwrap().is_empty());
    store.put_new(9, 1, 3, ltx_blob(ts, b'Z', 1000), ts).await.unwrap();
    assert_eq!(store.get(9, 1, 3).await.unwrap(), ltx_blob(ts, b'Z', 1000));

    // Only the replaced and deleted versions' chunks are gone: the stream holds the chunks of
    // the live objects and one metadata message per name, nothing orphaned.
    let js = async_nats::jetstream::new(async_nats::connect(format!("127.0.0.1:{}", nats.port)).await.unwrap());
    let mut stream = js.get_stream("OBJ_ops").await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    assert_eq!(
        state.messages,
        3 + 3,
        "3 one-chunk objects and 3 metadata messages: {state:?}"
    );

    // Foreign objects in a level directory are skipped, never trusted.
    for junk in [
        "app/db/ltx/0/README",
        "app/db/ltx/0/0000000000000009-0000000000000002.ltx",
        "app/db/ltx/0/x/y.ltx",
    ] {
        b.put(junk, &mut &b"junk"[..]).await.unwrap();
    }
    let l0 = store.list(0).await.unwrap();
    assert_eq!(
        l0.iter().map(|f| (f.min_txid, f.max_txid)).collect::<Vec<_>>(),
        [(1, 1), (2, 3)]
    );
}

/// Objects written by another client, with chunks of another size, read back whole and by
/// range; without a path in the URL the layout is Litestream's bucket-root `ltx/...`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_objects_chunked_by_another_client() {
    let nats = Nats::start();
    let store = open(&nats.url("foreign"));
    assert!(store.list(0).await.unwrap().is_empty()); // creates the bucket
    let b = bucket(&nats, "foreign").await;
    let data = patterned(100_000, 7);
    b.put(
        ObjectMetadata {
            name: "ltx/0/0000000000000001-0000000000000004.ltx".into(),
            chunk_size: Some(3_000),
            ..Default::default()
        },
        &mut &data[..],
    )
    .await
    .unwrap();
    let l0 = store.list(0).await.unwrap();
    assert_eq!(l0.len(), 1);
    assert_eq!((l0[0].min_txid, l0[0].max_txid, l0[0].size), (1, 4, 100_000));
    assert_eq!(store.get(0, 1, 4).await.unwrap(), data);
    for r in [0..1u64, 2_999..3_001, 5_000..17_000, 99_999..100_000, 0..100_000] {
        assert_eq!(
            store.get_range(0, 1, 4, r.clone()).await.unwrap(),
            data.slice(r.start as usize..r.end as usize),
            "{r:?}"
        );
    }
    // No timestamp header: the LTX header is read instead (this one is not LTX).
    assert!(matches!(store.timestamp(0, 1, 4).await, Err(Error::InvalidData { .. })));
}

/// A ranged read moves the chunks that hold the range, not the object: measured by the
/// server's own byte counters for our connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ranged_read_transfers_only_the_chunks_it_needs() {
    let nats = Nats::start();
    let store = open(&nats.url("ranges/db"));
    let data = patterned(4 << 20, 3); // 32 chunks of 128 KiB
    store.put_new(0, 1, 1, data.clone(), 0).await.unwrap();
    let sent = || nats.bytes_sent_to("litestream-vfs");

    let before = sent();
    assert_eq!(
        store.get_range(0, 1, 1, 1_000_000..1_004_096).await.unwrap(),
        data.slice(1_000_000..1_004_096)
    );
    let first = sent() - before;
    let before = sent();
    assert_eq!(
        store.get_range(0, 1, 1, 3_000_000..3_004_096).await.unwrap(),
        data.slice(3_000_000..3_004_096)
    );
    let second = sent() - before;
    let before = sent();
    assert_eq!(store.get(0, 1, 1).await.unwrap(), data);
    let whole = sent() - before;
    eprintln!("4 KiB range of a 4 MiB object: first {first} bytes (with the chunk map), then {second}; whole {whole}");
    assert!(whole >= 4 << 20, "{whole}");
    assert!(first < 200_000, "the first ranged read moved {first} bytes");
    assert!(
        (128 * 1024..160_000).contains(&second),
        "a ranged read within one chunk moved {second} bytes"
    );

    // A primary that serves replicas may write smaller chunks: reads move less.
    let small = open(&nats.url("ranges/small?nats_chunk_size=16k"));
    small.put_new(0, 1, 1, data.clone(), 0).await.unwrap();
    small.get_range(0, 1, 1, 0..1).await.unwrap(); // the chunk map
    let before = sent();
    assert_eq!(
        small.get_range(0, 1, 1, 1_000_000..1_004_096).await.unwrap(),
        data.slice(1_000_000..1_004_096)
    );
    let moved = sent() - before;
    assert!(
        (4096..2 * 16 * 1024 + 2000).contains(&moved),
        "16 KiB chunks: a 4 KiB read moved {moved} bytes"
    );
    let info = bucket(&nats, "ranges")
        .await
        .info("small/ltx/0/0000000000000001-0000000000000001.ltx")
        .await
        .unwrap();
    assert_eq!((info.chunks, info.size), (256, 4 << 20), "written in 16 KiB chunks");
}

/// Two primaries creating the same names at once: for each name exactly one wins, the other
/// is told so, and the stored object is the winner's. A check-then-write would let both win.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_creates_race_with_exactly_one_winner() {
    let nats = Nats::start();
    let a = open(&nats.url("race/db"));
    let b = open(&nats.url("race/db"));
    a.list(0).await.unwrap();
    b.list(0).await.unwrap();
    for txid in 1..=20u64 {
        let (da, db) = (patterned(2000, 1), patterned(2000, 2));
        let (ra, rb) = tokio::join!(
            a.put_new(0, txid, txid, da.clone(), 0),
            b.put_new(0, txid, txid, db.clone(), 0)
        );
        let stored = a.get(0, txid, txid).await.unwrap();
        match (ra, rb) {
            (Ok(()), Err(Error::AlreadyExists { .. })) => assert_eq!(stored, da),
            (Err(Error::AlreadyExists { .. }), Ok(())) => assert_eq!(stored, db),
            other => panic!("TXID {txid}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_errors_are_typed_and_carry_no_secrets() {
    let nats = Nats::start_with(&["--auth", "s3cr3t-token-value"]);
    // The right token, in the URL or from the environment, works.
    let url = format!("nats://s3cr3t-token-value@127.0.0.1:{}/authed", nats.port);
    let store = open(&url);
    assert!(!store.describe().contains("s3cr3t"), "{}", store.describe());
    store.put_new(0, 1, 1, ltx_blob(1, b'a', 200), 1).await.unwrap();
    let env_store = open_with(&nats.url("authed"), &[("NATS_TOKEN", "s3cr3t-token-value")]);
    assert_eq!(env_store.list(0).await.unwrap().len(), 1);
    // A wrong one is "denied", not retried, and the message names the store but not the token.
    let bad = open(&format!("nats://wrong-token-value@127.0.0.1:{}/authed", nats.port));
    let err = bad.list(0).await.unwrap_err();
    assert!(matches!(err, Error::Denied { .. }), "{err:?}");
    assert!(!err.to_string().contains("wrong-token-value"), "{err}");
    assert!(err.to_string().contains("authed"), "{err}");
    // Nothing listening: transient.
    let port = common::server::free_port();
    let err = open(&format!("nats://127.0.0.1:{port}/b")).list(0).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    // A bad bucket name is a configuration error at open.
    let err = open_store_with_env(&nats.url("not.a.bucket"), &StoreOptions::default(), &|_| None).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
}

/// A bucket whose server would delete files by itself (a TTL, or discarding the oldest
/// messages at a limit) is refused: it expired the snapshot every restore starts from
/// while syncs went on succeeding. A bucket deleted under a running store is made again
/// (publishes to a missing stream only ever get "no responders").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_that_deletes_files_is_refused_and_a_deleted_one_is_made_again() {
    use async_nats::jetstream::object_store::Config;
    use async_nats::jetstream::stream::DiscardPolicy;
    let nats = Nats::start();
    let client = async_nats::connect(format!("127.0.0.1:{}", nats.port)).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.create_object_store(Config {
        bucket: "ttl".into(),
        max_age: std::time::Duration::from_secs(3600),
        ..Default::default()
    })
    .await
    .unwrap();
    let err = open(&nats.url("ttl")).list(0).await.unwrap_err();
    assert!(
        matches!(err, Error::Config(_)) && err.to_string().contains("TTL"),
        "{err}"
    );
    js.create_object_store(Config {
        bucket: "capped".into(),
        max_bytes: 1 << 20,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut capped = js.get_stream("OBJ_capped").await.unwrap().cached_info().config.clone();
    capped.discard = DiscardPolicy::Old;
    js.update_stream(capped).await.unwrap();
    let err = open(&nats.url("capped")).list(0).await.unwrap_err();
    assert!(err.to_string().contains("discard old"), "{err}");

    let store = open(&nats.url("gone"));
    store.put_new(0, 1, 1, ltx_blob(1, b'a', 200), 1).await.unwrap();
    js.delete_stream("OBJ_gone").await.unwrap();
    let err = store.put_new(0, 2, 2, ltx_blob(2, b'b', 200), 2).await.unwrap_err();
    assert!(err.is_transient() && err.to_string().contains("did not exist"), "{err}");
    store.put_new(0, 2, 2, ltx_blob(2, b'b', 200), 2).await.unwrap();
    let files: Vec<u64> = store.list(0).await.unwrap().iter().map(|f| f.min_txid).collect();
    assert_eq!(files, vec![2], "the bucket made again holds only what came after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_password_and_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A CA and a server certificate for 127.0.0.1 signed by it.
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(d.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
    let (cert, key) = (d.join("server.pem"), d.join("server.key"));
    let nats = Nats::start_with(&[
        "--user",
        "alice",
        "--pass",
        "pa55-word-secret",
        "--tls",
        "--tlscert",
        cert.to_str().unwrap(),
        "--tlskey",
        key.to_str().unwrap(),
    ]);
    let ca = d.join("ca.pem");
    let url = format!(
        "nats://alice:pa55-word-secret@127.0.0.1:{}/tls/db?nats_tls_ca={}",
        nats.port,
        ca.display()
    );
    let store = open(&url);
    assert!(!store.describe().contains("pa55-word-secret"), "{}", store.describe());
    store.put_new(0, 1, 1, ltx_blob(5, b'a', 200_000), 5).await.unwrap();
    assert_eq!(store.get_range(0, 1, 1, 150_000..150_004).await.unwrap().len(), 4);
    // The same with the password from the environment.
    let env_store = open_with(
        &format!("nats://127.0.0.1:{}/tls/db?nats_tls_ca={}", nats.port, ca.display()),
        &[("NATS_USER", "alice"), ("NATS_PASSWORD", "pa55-word-secret")],
    );
    assert_eq!(env_store.list(0).await.unwrap().len(), 1);
    // Without the CA the server's certificate is not trusted: an error, and not a secret in it.
    let err = open(&format!("nats://alice:pa55-word-secret@127.0.0.1:{}/tls/db", nats.port))
        .list(0)
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err:?}");
    assert!(!err.to_string().contains("pa55-word-secret"), "{err}");
}

/// Runs `f` (blocking work of the interop helper) from inside the async test.
fn blocking<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// The real `litestream` 0.5.17 replicates to the bucket; we list, read and date its files.
/// Its config says `path: app`, which 0.5.17's NATS client ignores: its files land at the
/// bucket root (`ltx/<level>/<name>`), where a path-less `nats://host/bucket` URL reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_what_litestream_wrote() {
    let nats = Nats::start();
    let store = open(&nats.url("interop"));
    store.list(0).await.unwrap(); // creates the bucket: litestream requires it to exist
    let b = bucket(&nats, "interop").await;
    let port = nats.port;
    common::litestream::reads_what_litestream_wrote(common::litestream::LitestreamTarget {
        replicate: &|cmd, db, dir| {
            let config = dir.join("litestream.yml");
            std::fs::write(
                &config,
                format!(
                    "dbs:\n  - path: {}\n    replica:\n      type: nats\n      url: nats://127.0.0.1:{port}/interop\n      path: app\n      sync-interval: 100ms\n",
                    db.display()
                ),
            )
            .unwrap();
            cmd.arg("-config").arg(config);
        },
        store: store.as_ref(),
        list_keys: &|| blocking(names(&b)),
        head: &|key| {
            let info = blocking(b.info(key)).unwrap();
            let headers = info
                .headers
                .iter()
                .flat_map(|h| h.iter())
                .map(|(k, v)| (k.to_string().to_ascii_lowercase(), v[0].to_string()))
                .collect();
            common::http::Response { status: 200, headers, body: Vec::new() }
        },
        ltx_key: |level, min, max| format!("ltx/{level}/{min:016x}-{max:016x}.ltx"),
        key_prefix: "ltx/",
        meta_prefix: "",
        timestamp_header: "litestream-timestamp",
        bucket_word: "bucket",
        second_sql: "INSERT INTO t VALUES (4);",
        log_tail: &|| nats.log_tail(),
    })
    .await;
}

/// While the server is down every request fails at once with a transient error (nothing
/// waits for a timeout); once it is back, the same store reconnects by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_fails_fast_and_the_store_reconnects() {
    let mut nats = Nats::start();
    let store = open(&nats.url("outage/db"));
    store.put_new(0, 1, 1, ltx_blob(1, b'a', 200), 1).await.unwrap();
    nats.stop();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let err = store.put_new(0, 2, 2, ltx_blob(2, b'b', 200), 2).await.unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert!(store.list(0).await.unwrap_err().is_transient());
    }
    nats.restart();
    let started = std::time::Instant::now();
    while let Err(e) = store.put_new(0, 2, 2, ltx_blob(2, b'b', 200), 2).await {
        assert!(e.is_transient(), "{e:?}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "no reconnect: {e}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        store.list(0).await.unwrap().len(),
        2,
        "what was stored before the restart is still there"
    );
}
